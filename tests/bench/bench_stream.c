/* B4: streamed replies. Parts per second pulled through aosd from storage.test.stream against
 * one raw nng PAIR1 hop in the same run, and the time to the first part that aosd adds. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "aos.pb-c.h"
#include "harness.h"

#define PART_SIZE 1024u
#define TTFP_RUNS 200
#define RTT_RUNS 2000
#define RAW_QUEUE 1024 /* messages queued on each end of the raw hop */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    return n ? (double)v[n / 2] / 1000.0 : 0.0;
}

/* ---- the raw hop: PAIR1 over ipc://, one part per message ------------------------------- */

typedef struct raw_pair {
    nng_socket tx, rx;
    unsigned parts;
    long errors;
} raw_pair;

static void *raw_sender(void *arg)
{
    raw_pair *p = arg;
    static uint8_t part[PART_SIZE];
    for (unsigned i = 0; i < p->parts; i++) {
        nng_msg *m;
        memset(part, (int)(i & 0xff), sizeof part);
        if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, part, sizeof part) != 0) {
            p->errors++;
            return NULL;
        }
        if (nng_sendmsg(p->tx, m, 0) != 0) {
            nng_msg_free(m);
            p->errors++;
            return NULL;
        }
    }
    return NULL;
}

/* Parts per second over one PAIR1 hop (0 on failure). */
static double raw_parts_per_s(const char *dir, unsigned parts, long *errors)
{
    char url[256];
    raw_pair p = {.parts = parts};
    snprintf(url, sizeof url, "ipc://%s/pair.sock", dir);
    if (nng_pair1_open(&p.rx) || nng_pair1_open(&p.tx) ||
        nng_socket_set_size(p.rx, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX) ||
        nng_listen(p.rx, url, NULL, 0) || nng_dial(p.tx, url, NULL, 0)) {
        (*errors)++;
        return 0;
    }
    /* queues on both ends, so the hop is not one message per wake-up: aosd's own path
     * batches, and an unbuffered raw hop would flatter it */
    nng_socket_set_int(p.tx, NNG_OPT_SENDBUF, RAW_QUEUE);
    nng_socket_set_int(p.rx, NNG_OPT_RECVBUF, RAW_QUEUE);
    nng_socket_set_ms(p.rx, NNG_OPT_RECVTIMEO, 10000);
    pthread_t t;
    uint64_t t0 = now_ns();
    pthread_create(&t, NULL, raw_sender, &p);
    unsigned got = 0;
    while (got < parts) {
        nng_msg *m;
        if (nng_recvmsg(p.rx, &m, 0) != 0) {
            (*errors)++;
            break;
        }
        if (nng_msg_len(m) != PART_SIZE || ((uint8_t *)nng_msg_body(m))[0] != (got & 0xff))
            (*errors)++;
        nng_msg_free(m);
        got++;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    pthread_join(t, NULL);
    *errors += p.errors;
    /* left to the exit: nng 1.5.2's close can hang after a peer cut a send (bench_syscall) */
    return got ? (double)got / secs : 0;
}

/* ---- the raw round trip: REQ/REP over ipc://, an echo thread ---------------------------- */

static void *echo_main(void *arg)
{
    nng_socket *s = arg;
    for (;;) {
        nng_msg *m;
        if (nng_recvmsg(*s, &m, 0) != 0)
            return NULL;
        if (nng_sendmsg(*s, m, 0) != 0)
            nng_msg_free(m);
    }
}

/* The median round trip (us) of one small envelope over one REQ/REP hop. */
static double raw_rtt_us(const char *dir, long *errors)
{
    char url[256];
    static nng_socket rep;
    nng_socket req;
    snprintf(url, sizeof url, "ipc://%s/rtt.sock", dir);
    if (nng_rep0_open(&rep) || nng_listen(rep, url, NULL, 0) || nng_req0_open(&req) ||
        nng_dial(req, url, NULL, 0)) {
        (*errors)++;
        return 0;
    }
    pthread_t t;
    pthread_create(&t, NULL, echo_main, &rep);
    pthread_detach(t);
    static uint64_t lat[RTT_RUNS];
    size_t n = 0;
    for (int i = 0; i < RTT_RUNS + 100; i++) {
        aos_env e;
        nng_msg *m;
        aos_env_init(&e, AOS_KIND_REQUEST);
        aos_id_random(e.request_id);
        e.has_request_id = 1;
        snprintf(e.method, sizeof e.method, "storage.test.stream");
        uint64_t t0 = now_ns();
        if (aos_env_encode(&e, &m) != AOS_OK || nng_sendmsg(req, m, 0) != 0 ||
            nng_recvmsg(req, &m, 0) != 0) {
            (*errors)++;
            continue;
        }
        nng_msg_free(m);
        if (i >= 100) /* after a warm-up */
            lat[n++] = now_ns() - t0;
    }
    return median_us(lat, n);
}

/* ---- through aosd ------------------------------------------------------------------------- */

typedef struct counter {
    unsigned n;
    uint64_t first_ns;
    long bad;
} counter;

static int count_part(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    counter *c = arg;
    if (c->n == 0)
        c->first_ns = now_ns();
    if (seq != c->n || (len && data[0] != (uint8_t)(seq & 0xff)))
        c->bad++;
    c->n++;
    return 0;
}

static size_t stream_req(uint8_t *buf, uint32_t parts, uint32_t size)
{
    Aos__TestStreamRequest rq = AOS__TEST_STREAM_REQUEST__INIT;
    rq.parts = parts;
    rq.size = size;
    return aos__test_stream_request__pack(&rq, buf);
}

/* Parts per second of one stream of `parts` parts (0 on failure). */
static double stream_parts_per_s(aos_conn *c, uint32_t parts, long *errors)
{
    uint8_t buf[64];
    size_t len = stream_req(buf, parts, PART_SIZE);
    counter k = {0};
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 120000};
    uint64_t t0 = now_ns();
    aos_err e = aos_call_stream(c, &o, "storage.test.stream", buf, len, count_part, &k, &r);
    double secs = (double)(now_ns() - t0) / 1e9;
    if (e != AOS_OK || k.n != parts || k.bad) {
        fprintf(stderr, "stream of %u parts: %s: %s (%u parts, %ld bad)\n", parts,
                aos_err_name(e), r.error, k.n, k.bad);
        (*errors)++;
    }
    aos_reply_clear(&r);
    return k.n ? (double)k.n / secs : 0;
}

/* The median time (us) from the call to its first part, over short streams. */
static double ttfp_us(aos_conn *c, long *errors)
{
    uint8_t buf[64];
    size_t len = stream_req(buf, 2, 16);
    static uint64_t lat[TTFP_RUNS];
    size_t n = 0;
    for (int i = 0; i < TTFP_RUNS + 20; i++) {
        counter k = {0};
        aos_reply r;
        aos_call_opts o = {.timeout_ms = 10000};
        uint64_t t0 = now_ns();
        aos_err e = aos_call_stream(c, &o, "storage.test.stream", buf, len, count_part, &k,
                                    &r);
        if (e != AOS_OK || k.n != 2) {
            (*errors)++;
            fprintf(stderr, "short stream %d: %s: %s (%u parts came)\n", i, aos_err_name(e),
                    r.error, k.n);
        } else if (i >= 20) { /* after a warm-up */
            lat[n++] = k.first_ns - t0;
        }
        aos_reply_clear(&r);
    }
    return median_us(lat, n);
}

int main(int argc, char **argv)
{
    unsigned parts = argc > 1 ? (unsigned)atoi(argv[1]) : 20000;
    if (parts == 0)
        parts = 20000;
    char dir[] = "/tmp/aos-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    long errors = 0;

    const char *args[] = {"--test-hooks", NULL};
    h_aosd *h = h_start(args);
    char curl[256], why[256];
    aos_control_url(h_data_dir(h), curl, sizeof curl);
    aos_conn *c;
    if (aos_connect(curl, &c, why, sizeof why) != AOS_OK) {
        fprintf(stderr, "connect: %s\n", why);
        h_stop(h);
        return 1;
    }
    /* warm up both paths, then the best of three of each (a stream is one long call) */
    raw_parts_per_s(dir, 1000, &errors);
    stream_parts_per_s(c, 1000, &errors);
    double raw = 0, st = 0;
    for (int i = 0; i < 3; i++) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s/%d", dir, i);
        mkdir(sub, 0700);
        double r1 = raw_parts_per_s(sub, parts, &errors);
        double s1 = stream_parts_per_s(c, parts, &errors);
        if (r1 > raw)
            raw = r1;
        if (s1 > st)
            st = s1;
    }
    double ttfp = ttfp_us(c, &errors);
    double rtt = raw_rtt_us(dir, &errors);
    printf("parts: %u\n", parts);
    printf("part_bytes: %u\n", PART_SIZE);
    printf("stream_parts_per_s: %.0f\n", st);
    printf("raw_parts_per_s: %.0f\n", raw);
    printf("stream_ratio: %.1f\n", raw > 0 ? 100.0 * st / raw : 0.0);
    printf("ttfp_us_p50: %.1f\n", ttfp);
    printf("raw_rtt_us_p50: %.1f\n", rtt);
    printf("ttfp_added_us_p50: %.1f\n", ttfp - rtt);
    printf("errors: %ld\n", errors);
    aos_close(c);
    h_stop(h);
    /* the raw sockets' files; the sockets themselves are left to the exit */
    char path[400];
    for (int i = -1; i < 3; i++) {
        if (i < 0)
            snprintf(path, sizeof path, "%s/pair.sock", dir);
        else
            snprintf(path, sizeof path, "%s/%d/pair.sock", dir, i);
        unlink(path);
        if (i >= 0) {
            snprintf(path, sizeof path, "%s/%d", dir, i);
            rmdir(path);
        }
    }
    snprintf(path, sizeof path, "%s/rtt.sock", dir);
    unlink(path);
    rmdir(dir);
    return errors ? 1 : 0;
}
