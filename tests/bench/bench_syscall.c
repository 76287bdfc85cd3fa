/* B1: syscall round trip. A raw nng REQ/REP hop (echo server in its own process) against
 * the routed path agent -> aosd -> aos-tool -> agent, in the same run: 1 and 64 clients. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "aos.pb-c.h"
#include "harness.h"

#define CLIENTS 64
#define SERVER_CTX 128

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

/* ---- the raw echo server: a REP socket with contexts, as aosd's router has ---------- */

typedef struct {
    nng_ctx ctx;
    nng_aio *aio;
    int sending;
} ectx;

static void echo_cb(void *arg)
{
    ectx *c = arg;
    if (nng_aio_result(c->aio) != 0) {
        if (c->sending)
            nng_msg_free(nng_aio_get_msg(c->aio));
        c->sending = 0;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (c->sending) {
        c->sending = 0;
        nng_ctx_recv(c->ctx, c->aio);
    } else {
        c->sending = 1;
        nng_ctx_send(c->ctx, c->aio); /* the same message straight back */
    }
}

static int raw_server(const char *url)
{
    nng_socket s;
    static ectx cs[SERVER_CTX];
    if (nng_rep0_open(&s) || nng_listen(s, url, NULL, 0))
        return 1;
    for (int i = 0; i < SERVER_CTX; i++) {
        nng_ctx_open(&cs[i].ctx, s);
        nng_aio_alloc(&cs[i].aio, echo_cb, &cs[i]);
        nng_ctx_recv(cs[i].ctx, cs[i].aio);
    }
    for (;;)
        pause();
}

/* ---- clients -------------------------------------------------------------------------- */

typedef struct {
    int routed;
    const char *url;
    uint64_t deadline_ns;
    uint64_t *lat;       /* per-call latencies (1-client mode) */
    size_t nlat, cap;
    long calls, errors;
} client;

static uint8_t ping_buf[64];
static size_t ping_len;

static int raw_call(nng_socket s)
{
    aos_env e;
    nng_msg *m;
    aos_env_init(&e, AOS_KIND_REQUEST);
    aos_id_random(e.request_id);
    e.has_request_id = 1;
    snprintf(e.method, sizeof e.method, "tool.ping");
    e.payload = ping_buf;
    e.payload_len = ping_len;
    if (aos_env_encode(&e, &m) != AOS_OK)
        return -1;
    if (nng_sendmsg(s, m, 0) != 0) {
        nng_msg_free(m);
        return -1;
    }
    if (nng_recvmsg(s, &m, 0) != 0)
        return -1;
    nng_msg_free(m);
    return 0;
}

static void *client_main(void *arg)
{
    client *c = arg;
    nng_socket s = NNG_SOCKET_INITIALIZER;
    aos_conn *conn = NULL;
    char why[256];
    if (c->routed) {
        if (aos_connect(c->url, &conn, why, sizeof why) != AOS_OK) {
            fprintf(stderr, "connect: %s\n", why);
            c->errors++;
            return NULL;
        }
    } else if (nng_req0_open(&s) || nng_dial(s, c->url, NULL, 0)) {
        c->errors++;
        return NULL;
    }
    while (now_ns() < c->deadline_ns) {
        uint64_t t0 = now_ns();
        int bad;
        if (c->routed) {
            aos_reply r;
            bad = aos_call(conn, NULL, "tool.ping", ping_buf, ping_len, &r) != AOS_OK;
            aos_reply_clear(&r);
        } else {
            bad = raw_call(s) != 0;
        }
        uint64_t dt = now_ns() - t0;
        c->calls++;
        c->errors += bad;
        if (c->lat && c->nlat < c->cap)
            c->lat[c->nlat++] = dt;
    }
    if (conn)
        aos_close(conn);
    /* the raw socket is left to the exit: nng 1.5.2's nng_close can hang for good after a
     * peer cut a send, and a benchmark must never wait on it */
    (void)s;
    return NULL;
}

/* Run n clients for secs; returns calls per second; fills p50/p99 (us) when n == 1. */
static double run(int routed, const char *url, int n, double secs, double *p50, double *p99,
                  long *errors)
{
    client c[CLIENTS];
    pthread_t t[CLIENTS];
    uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9);
    for (int i = 0; i < n; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].routed = routed;
        c[i].url = url;
        c[i].deadline_ns = end;
        if (n == 1) {
            c[i].cap = 2000000;
            c[i].lat = malloc(c[i].cap * sizeof *c[i].lat);
        }
        pthread_create(&t[i], NULL, client_main, &c[i]);
    }
    long calls = 0;
    *errors = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        calls += c[i].calls;
        *errors += c[i].errors;
    }
    double el = (double)(now_ns() - start) / 1e9;
    if (n == 1 && c[0].nlat) {
        qsort(c[0].lat, c[0].nlat, sizeof *c[0].lat, cmp_u64);
        *p50 = (double)c[0].lat[c[0].nlat / 2] / 1000.0;
        *p99 = (double)c[0].lat[c[0].nlat * 99 / 100] / 1000.0;
    }
    if (n == 1)
        free(c[0].lat);
    return (double)calls / el;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--raw-server"))
        return raw_server(argv[2]);
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    if (secs <= 0)
        secs = 3.0;
    Aos__PingRequest pr = AOS__PING_REQUEST__INIT;
    pr.data.data = (uint8_t *)"bench-ping-payload";
    pr.data.len = 18;
    ping_len = aos__ping_request__pack(&pr, ping_buf);

    /* the raw echo server, a separate process like a real server */
    char dir[] = "/tmp/aos-bench-XXXXXX", url[256];
    if (!mkdtemp(dir))
        return 1;
    snprintf(url, sizeof url, "ipc://%s/raw.sock", dir);
    pid_t srv = fork();
    if (srv == 0) {
        execl("/proc/self/exe", argv[0], "--raw-server", url, (char *)NULL);
        _exit(127);
    }
    usleep(200 * 1000);

    const char *args[] = {"--restart-intensity", "100/60", NULL};
    h_aosd *h = h_start(args);
    char curl[256];
    aos_control_url(h_data_dir(h), curl, sizeof curl);

    double rp50 = 0, rp99 = 0, ap50 = 0, ap99 = 0;
    long e1, e2, e3, e4;
    run(0, url, 1, 0.5, &rp50, &rp99, &e1); /* warm up both paths */
    run(1, curl, 1, 0.5, &ap50, &ap99, &e1);
    double raw1 = run(0, url, 1, secs, &rp50, &rp99, &e1);
    double rt1 = run(1, curl, 1, secs, &ap50, &ap99, &e2);
    double unused;
    double raw64 = run(0, url, CLIENTS, secs, &unused, &unused, &e3);
    double rt64 = run(1, curl, CLIENTS, secs, &unused, &unused, &e4);
    printf("raw_1client_p50_us: %.1f\n", rp50);
    printf("raw_1client_p99_us: %.1f\n", rp99);
    printf("raw_1client_rps: %.0f\n", raw1);
    printf("routed_1client_p50_us: %.1f\n", ap50);
    printf("routed_1client_p99_us: %.1f\n", ap99);
    printf("routed_1client_rps: %.0f\n", rt1);
    printf("raw_64clients_rps: %.0f\n", raw64);
    printf("routed_64clients_rps: %.0f\n", rt64);
    printf("errors: %ld\n", e1 + e2 + e3 + e4);
    printf("rtt_ratio: %.2f\n", ap50 / rp50);
    printf("throughput_ratio: %.1f\n", 100.0 * rt64 / raw64);
    h_stop(h);
    kill(srv, SIGKILL);
    waitpid(srv, NULL, 0);
    char sock[300];
    snprintf(sock, sizeof sock, "%s/raw.sock", dir);
    unlink(sock);
    rmdir(dir);
    return 0;
}
