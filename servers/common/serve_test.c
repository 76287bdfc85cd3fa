/* serve_test: plays aosd to a real server process running the serve loop (streams,
 * cancels, async answers, retries, outbound calls, batch frames both ways, STOP drain). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>

#include "aos.pb-c.h"
#include "aos/batch.h"
#include "aos/envelope.h"
#include "aos/err.h"

#define LINKS_MAX 65536
#define OUTQ_MAX 64
#define WAIT_MS 20000 /* generous: ASan on two loaded cores */

static const char *server_bin;

/* What arrived for one link id (the test hands out link ids like aosd does). */
typedef struct lrec {
    uint32_t parts;           /* parts that arrived, in order */
    int disorder;             /* parts with a wrong index or content */
    int check;                /* parts must be filled with their index's low byte */
    size_t part_bytes;
    int finals;
    int status;
    uint32_t final_seq;
    uint8_t *payload;
    size_t len;
    char error[AOS_ERRMSG_MAX + 1];
} lrec;

/* A REQUEST the server sent us (an outbound call). */
typedef struct outq {
    aos_env e;                /* decoded; payload copied below */
    uint8_t payload[256];
    size_t len;
} outq;

typedef struct T {
    char dir[64], sockpath[128], url[160];
    nng_socket sock;
    pid_t pid;
    pthread_t rx;
    atomic_int stop_rx, paused, autoreply;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lrec *recs;
    uint64_t next_link;
    outq out[OUTQ_MAX];
    int nout;
    int ready, heartbeats, frames, msgs, bad;
} T;

static T *T0; /* the shared server of most tests */

static uint64_t now_ms(void) { return aos_mono_ms(); }

static void take_env(T *t, const uint8_t *buf, size_t len)
{
    aos_env e;
    if (aos_env_decode(buf, len, &e, NULL, 0) != AOS_OK) {
        t->bad++;
        return;
    }
    lrec *r = e.link_id < LINKS_MAX ? &t->recs[e.link_id] : NULL;
    switch (e.kind) {
    case AOS_KIND_REPLY_PART:
        if (!r) {
            t->bad++;
            break;
        }
        if (e.seq != r->parts)
            r->disorder++;
        if (r->check)
            for (size_t i = 0; i < e.payload_len; i++)
                if (e.payload[i] != (uint8_t)e.seq) {
                    r->disorder++;
                    break;
                }
        r->parts++;
        r->part_bytes += e.payload_len;
        break;
    case AOS_KIND_REPLY:
        if (!r) {
            t->bad++;
            break;
        }
        if (r->finals++ == 0) {
            r->status = e.status;
            r->final_seq = e.seq;
            snprintf(r->error, sizeof r->error, "%s", e.error);
            if (e.payload_len) {
                r->payload = malloc(e.payload_len);
                assert_non_null(r->payload);
                memcpy(r->payload, e.payload, e.payload_len);
                r->len = e.payload_len;
            }
        }
        break;
    case AOS_KIND_HEARTBEAT:
        t->heartbeats++;
        break;
    case AOS_KIND_READY:
        t->ready = 1;
        break;
    case AOS_KIND_REQUEST:
        if (atomic_load(&t->autoreply)) { /* at once, from the receive thread */
            aos_env a;
            aos_env_reply_to(&a, &e, AOS_ERR_NOT_FOUND, "no method %s", e.method);
            a.link_id = 0;
            nng_msg *m;
            if (aos_env_encode(&a, &m) == AOS_OK && nng_sendmsg(t->sock, m, 0) != 0)
                nng_msg_free(m);
            break;
        }
        if (t->nout < OUTQ_MAX && e.payload_len <= sizeof t->out[0].payload) {
            outq *o = &t->out[t->nout++];
            o->e = e;
            o->e.pb_ = NULL;
            memcpy(o->payload, e.payload, e.payload_len);
            o->len = e.payload_len;
            o->e.payload = NULL;
        }
        break;
    default:
        t->bad++;
        break;
    }
    aos_env_clear(&e);
}

static void *rx_main(void *arg)
{
    T *t = arg;
    while (!atomic_load(&t->stop_rx)) {
        if (atomic_load(&t->paused)) {
            nng_msleep(5);
            continue;
        }
        nng_msg *m;
        int rv = nng_recvmsg(t->sock, &m, 0);
        if (rv == NNG_ETIMEDOUT)
            continue;
        if (rv != 0)
            break;
        const uint8_t *buf = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        pthread_mutex_lock(&t->mu);
        t->msgs++;
        if (aos_batch_is(buf, len)) {
            size_t off = 0, rl;
            const uint8_t *rec;
            aos_err rc;
            t->frames++;
            while ((rc = aos_batch_next(buf, len, &off, &rec, &rl, NULL, 0)) == AOS_OK)
                take_env(t, rec, rl);
            if (rc != AOS_ERR_NOT_FOUND)
                t->bad++;
        } else {
            take_env(t, buf, len);
        }
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        nng_msg_free(m);
    }
    return NULL;
}

/* ---- sending ------------------------------------------------------------------------ */

static void send_msg(T *t, nng_msg *m)
{
    assert_int_equal(nng_sendmsg(t->sock, m, 0), 0);
}

static nng_msg *encode(const aos_env *e)
{
    nng_msg *m;
    assert_int_equal(aos_env_encode(e, &m), AOS_OK);
    return m;
}

static uint64_t new_link(T *t, int check)
{
    pthread_mutex_lock(&t->mu);
    uint64_t l = t->next_link++;
    assert_true(l < LINKS_MAX);
    t->recs[l].check = check;
    pthread_mutex_unlock(&t->mu);
    return l;
}

/* A request envelope for "llm.<op>" on a fresh link (or the given rid), deadline in ms. */
static void make_req(T *t, aos_env *e, const char *op, const ProtobufCMessage *pm,
                     uint8_t *buf, size_t cap, const uint8_t *rid, uint32_t deadline_in_ms,
                     int check)
{
    aos_env_init(e, AOS_KIND_REQUEST);
    if (rid)
        memcpy(e->request_id, rid, AOS_ID_LEN);
    else
        aos_id_random(e->request_id);
    e->has_request_id = 1;
    snprintf(e->method, sizeof e->method, "llm.%s", op);
    e->deadline_ms = aos_now_ms() + deadline_in_ms;
    e->link_id = new_link(t, check);
    if (pm) {
        size_t n = protobuf_c_message_get_packed_size(pm);
        assert_true(n <= cap);
        e->payload = buf;
        e->payload_len = protobuf_c_message_pack(pm, buf);
    }
}

/* Send one request; returns its link id. rid: NULL for a fresh one, else that id. */
static uint64_t req(T *t, const char *op, const ProtobufCMessage *pm, const uint8_t *rid,
                    uint32_t deadline_in_ms, int check)
{
    aos_env e;
    uint8_t buf[1024];
    make_req(t, &e, op, pm, buf, sizeof buf, rid, deadline_in_ms, check);
    send_msg(t, encode(&e));
    return e.link_id;
}

static void send_kind(T *t, int kind, uint64_t link)
{
    aos_env e;
    aos_env_init(&e, kind);
    e.link_id = link;
    send_msg(t, encode(&e));
}

static uint64_t stream(T *t, uint32_t parts, uint32_t size, uint32_t pace_us,
                       uint32_t deadline_in_ms, const uint8_t *rid)
{
    Aos__TestStreamRequest r = AOS__TEST_STREAM_REQUEST__INIT;
    r.parts = parts;
    r.size = size;
    r.pace_us = pace_us;
    return req(t, "test.stream", &r.base, rid, deadline_in_ms, 1);
}

static uint64_t async_req(T *t, uint32_t delay_ms, const char *data, const uint8_t *rid)
{
    Aos__TestAsyncRequest r = AOS__TEST_ASYNC_REQUEST__INIT;
    r.delay_ms = delay_ms;
    r.data.data = (uint8_t *)data;
    r.data.len = strlen(data);
    return req(t, "test.async", &r.base, rid, 30000, 0);
}

/* ---- waiting ------------------------------------------------------------------------ */

/* Wait until link has a final reply (1) or ms pass (0). */
static int wait_final(T *t, uint64_t link, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    pthread_mutex_lock(&t->mu);
    while (!t->recs[link].finals && now_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    int got = t->recs[link].finals > 0;
    pthread_mutex_unlock(&t->mu);
    return got;
}

static lrec snap(T *t, uint64_t link)
{
    pthread_mutex_lock(&t->mu);
    lrec r = t->recs[link];
    pthread_mutex_unlock(&t->mu);
    return r;
}

static int64_t stat_of(T *t, const char *name)
{
    uint64_t l = req(t, "stats", NULL, NULL, 30000, 0);
    assert_true(wait_final(t, l, WAIT_MS));
    lrec r = snap(t, l);
    assert_int_equal(r.status, AOS_OK);
    Aos__StatsReply *st = aos__stats_reply__unpack(NULL, r.len, r.payload);
    assert_non_null(st);
    int64_t v = -1;
    for (size_t i = 0; i < st->n_stats; i++)
        if (!strcmp(st->stats[i]->name, name))
            v = st->stats[i]->value;
    aos__stats_reply__free_unpacked(st, NULL);
    if (v < 0)
        fail_msg("no stat %s", name);
    return v;
}

static void ping_ok(T *t)
{
    Aos__PingRequest p = AOS__PING_REQUEST__INIT;
    uint64_t l = req(t, "ping", &p.base, NULL, 30000, 0);
    assert_true(wait_final(t, l, WAIT_MS));
    assert_int_equal(snap(t, l).status, AOS_OK);
}

/* ---- the server --------------------------------------------------------------------- */

static T *start_server(void)
{
    T *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->recs = calloc(LINKS_MAX, sizeof *t->recs);
    assert_non_null(t->recs);
    t->next_link = 1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    /* a directory only we can write: the server refuses a link path others could swap */
    snprintf(t->dir, sizeof t->dir, "/tmp/aos-serve-test-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->sockpath, sizeof t->sockpath, "%s/link.sock", t->dir);
    snprintf(t->url, sizeof t->url, "ipc://%s", t->sockpath);
    assert_int_equal(nng_pair1_open(&t->sock), 0);
    /* aosd's caps: a server frame over AOS_MSG_MAX (PAIR1's header counted) breaks here */
    assert_int_equal(nng_socket_set_size(t->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX), 0);
    assert_int_equal(nng_socket_set_int(t->sock, NNG_OPT_SENDBUF, 1024), 0);
    assert_int_equal(nng_socket_set_ms(t->sock, NNG_OPT_RECVTIMEO, 50), 0);
    assert_int_equal(nng_listen(t->sock, t->url, NULL, 0), 0);
    assert_int_equal(pthread_create(&t->rx, NULL, rx_main, t), 0);
    t->pid = fork();
    assert_true(t->pid >= 0);
    if (t->pid == 0) {
        /* the server checks that its link's peer is its parent: us */
        execl(server_bin, server_bin, "--link", t->url, "--name", "llm", "--keep", t->dir,
              "--test-hooks", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", server_bin, strerror(errno));
        _exit(127);
    }
    uint64_t end = now_ms() + WAIT_MS;
    pthread_mutex_lock(&t->mu);
    while (!t->ready && now_ms() < end) {
        pthread_mutex_unlock(&t->mu);
        nng_msleep(10);
        pthread_mutex_lock(&t->mu);
    }
    int ready = t->ready;
    pthread_mutex_unlock(&t->mu);
    if (!ready)
        fail_msg("the server did not report READY");
    return t;
}

/* Wait for the server to exit; its exit status, or -1 if it had to be killed. */
static int reap(pid_t pid, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    int st;
    while (now_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        nng_msleep(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static void stop_server(T *t, int expect_clean)
{
    send_kind(t, AOS_KIND_STOP, 0);
    int rc = reap(t->pid, WAIT_MS);
    atomic_store(&t->stop_rx, 1);
    pthread_join(t->rx, NULL);
    nng_close(t->sock);
    unlink(t->sockpath);
    rmdir(t->dir);
    for (size_t i = 0; i < LINKS_MAX; i++)
        free(t->recs[i].payload);
    free(t->recs);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    if (expect_clean)
        assert_int_equal(rc, 0);
}

static int group_setup(void **state)
{
    (void)state;
    T0 = start_server();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    assert_int_equal(T0->bad, 0);
    stop_server(T0, 1);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------- */

static void check_stream(T *t, uint64_t l, uint32_t parts, size_t size)
{
    assert_true(wait_final(t, l, WAIT_MS));
    lrec r = snap(t, l);
    assert_int_equal(r.status, AOS_OK);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.parts, parts);
    assert_int_equal(r.final_seq, parts);
    assert_int_equal(r.disorder, 0);
    assert_int_equal(r.part_bytes, (size_t)parts * size);
}

static void test_stream_counts(void **state)
{
    (void)state;
    T *t = T0;
    uint32_t counts[] = {1, 100, 10000};
    for (size_t i = 0; i < 3; i++) {
        uint64_t l = stream(t, counts[i], 16, 0, 60000, NULL);
        check_stream(t, l, counts[i], 16);
    }
    /* three at once share the link; each stays in order */
    uint64_t a = stream(t, 3000, 8, 0, 60000, NULL), b = stream(t, 3000, 100, 0, 60000, NULL),
             c = stream(t, 0, 8, 0, 60000, NULL);
    check_stream(t, a, 3000, 8);
    check_stream(t, b, 3000, 100);
    check_stream(t, c, 0, 8);
}

static void test_stream_sizes(void **state)
{
    (void)state;
    T *t = T0;
    uint64_t l = stream(t, 5, 0, 0, 30000, NULL);
    check_stream(t, l, 5, 0);
    l = stream(t, 6, AOS_PART_MAX, 0, 60000, NULL);
    check_stream(t, l, 6, AOS_PART_MAX);
    /* one byte over: refused, nothing sent, said in the final */
    l = stream(t, 2, AOS_PART_MAX + 1, 0, 30000, NULL);
    assert_true(wait_final(t, l, WAIT_MS));
    lrec r = snap(t, l);
    assert_int_equal(r.status, AOS_ERR_TOO_BIG);
    assert_int_equal(r.parts, 0);
    assert_int_equal(r.final_seq, 0);
    /* a worker's srv_fn streams too, through rep->call */
    Aos__TestStreamRequest sr = AOS__TEST_STREAM_REQUEST__INIT;
    sr.parts = 500;
    sr.size = 64;
    l = req(t, "sync.stream", &sr.base, NULL, 30000, 1);
    check_stream(t, l, 500, 64);
}

static void test_stream_cancel(void **state)
{
    (void)state;
    T *t = T0;
    int64_t cancelled0 = stat_of(t, "test_streams_cancelled");
    uint64_t l = stream(t, 1000000, 10, 2000, 60000, NULL);
    uint64_t end = now_ms() + WAIT_MS;
    while (snap(t, l).parts < 5 && now_ms() < end)
        nng_msleep(5);
    assert_true(snap(t, l).parts >= 5);
    send_kind(t, AOS_KIND_CANCEL, l);
    assert_true(wait_final(t, l, 2000)); /* stopped at once, answered CANCELLED */
    lrec r = snap(t, l);
    assert_int_equal(r.status, AOS_ERR_CANCELLED);
    assert_int_equal(r.final_seq, r.parts);
    nng_msleep(300);
    lrec r2 = snap(t, l);
    assert_int_equal(r2.parts, r.parts);
    assert_int_equal(r2.finals, 1);
    assert_int_equal(stat_of(t, "test_streams_cancelled"), cancelled0 + 1);
    int64_t sent = stat_of(t, "test_parts_sent");
    nng_msleep(200);
    assert_int_equal(stat_of(t, "test_parts_sent"), sent); /* the work stopped */

    /* the deadline tick cancels a stream past its deadline */
    l = stream(t, 1000000, 10, 2000, 300, NULL);
    assert_true(wait_final(t, l, 3000));
    r = snap(t, l);
    assert_true(r.status == AOS_ERR_CANCELLED || r.status == AOS_ERR_TIMEOUT);
    assert_int_equal(stat_of(t, "test_streams_cancelled"), cancelled0 + 2);
}

static void test_async(void **state)
{
    (void)state;
    T *t = T0;
    uint64_t t0 = now_ms();
    uint64_t l = async_req(t, 100, "hello", NULL);
    assert_true(wait_final(t, l, WAIT_MS));
    assert_true(now_ms() - t0 >= 100);
    lrec r = snap(t, l);
    assert_int_equal(r.status, AOS_OK);
    assert_int_equal(r.final_seq, 0);
    Aos__PingReply *p = aos__ping_reply__unpack(NULL, r.len, r.payload);
    assert_non_null(p);
    assert_int_equal(p->data.len, 5);
    assert_memory_equal(p->data.data, "hello", 5);
    assert_int_equal(p->pid, t->pid);
    aos__ping_reply__free_unpacked(p, NULL);
    /* a CANCEL ends a long wait at once */
    l = async_req(t, 60000, "x", NULL);
    nng_msleep(50);
    send_kind(t, AOS_KIND_CANCEL, l);
    assert_true(wait_final(t, l, 2000));
    assert_int_equal(snap(t, l).status, AOS_ERR_CANCELLED);
}

/* A CANCEL racing the answer: exactly one final reply per request, whichever wins. */
static void test_cancel_race(void **state)
{
    (void)state;
    T *t = T0;
    enum { N = 200 };
    uint64_t links[N];
    for (int i = 0; i < N; i++) {
        if (i % 2)
            links[i] = async_req(t, (uint32_t)(i % 3), "r", NULL);
        else
            links[i] = stream(t, 3, 4, 300, 30000, NULL);
        if (i % 4 == 1)
            nng_msleep(1);
        send_kind(t, AOS_KIND_CANCEL, links[i]);
        /* a CANCEL for a link that is already answered, or never was, changes nothing */
        send_kind(t, AOS_KIND_CANCEL, links[i]);
    }
    int ok = 0, cancelled = 0;
    for (int i = 0; i < N; i++) {
        assert_true(wait_final(t, links[i], WAIT_MS));
    }
    nng_msleep(200);
    for (int i = 0; i < N; i++) {
        lrec r = snap(t, links[i]);
        assert_int_equal(r.finals, 1);
        assert_int_equal(r.final_seq, r.parts);
        assert_int_equal(r.disorder, 0);
        if (r.status == AOS_OK)
            ok++;
        else if (r.status == AOS_ERR_CANCELLED)
            cancelled++;
        else
            fail_msg("request %d answered %s", i, aos_err_name(r.status));
    }
    print_message("cancel race: %d answered, %d cancelled\n", ok, cancelled);
    assert_true(cancelled > 0);
    ping_ok(t);
}

static void test_retry(void **state)
{
    (void)state;
    T *t = T0;
    int64_t replays0 = stat_of(t, "replays"), joined0 = stat_of(t, "retries_joined");
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    /* a retry (new link) while the first still runs waits for the same run */
    uint64_t a = async_req(t, 300, "same", rid);
    nng_msleep(50);
    uint64_t b = async_req(t, 300, "same", rid);
    assert_true(wait_final(t, a, WAIT_MS));
    assert_true(wait_final(t, b, WAIT_MS));
    lrec ra = snap(t, a), rb = snap(t, b);
    assert_int_equal(ra.status, AOS_OK);
    assert_int_equal(rb.status, AOS_OK);
    assert_int_equal(ra.len, rb.len);
    assert_memory_equal(ra.payload, rb.payload, ra.len);
    assert_int_equal(stat_of(t, "retries_joined"), joined0 + 1);
    /* after it is done: the recorded answer */
    uint64_t c = async_req(t, 300, "same", rid);
    assert_true(wait_final(t, c, 1000));
    lrec rc = snap(t, c);
    assert_int_equal(rc.status, AOS_OK);
    assert_memory_equal(rc.payload, ra.payload, ra.len);
    assert_int_equal(stat_of(t, "replays"), replays0 + 1);

    /* a streamed call's replay is its final alone, which still counts the parts */
    aos_id_random(rid);
    uint64_t d = stream(t, 5, 3, 1000, 30000, rid);
    check_stream(t, d, 5, 3);
    uint64_t e = stream(t, 5, 3, 1000, 30000, rid);
    assert_true(wait_final(t, e, WAIT_MS));
    lrec re = snap(t, e);
    assert_int_equal(re.status, AOS_OK);
    assert_int_equal(re.parts, 0);
    assert_int_equal(re.final_seq, 5);

    /* the first caller goes away (CANCEL) while a retry waits: the run goes on for it */
    aos_id_random(rid);
    uint64_t f = async_req(t, 300, "kept", rid);
    nng_msleep(30);
    uint64_t g = async_req(t, 300, "kept", rid);
    nng_msleep(30);
    send_kind(t, AOS_KIND_CANCEL, f);
    assert_true(wait_final(t, g, WAIT_MS));
    assert_int_equal(snap(t, g).status, AOS_OK);
    nng_msleep(50);
    assert_int_equal(snap(t, f).finals, 0); /* its link was let go: aosd answered it */
}

static void test_batch_in(void **state)
{
    (void)state;
    T *t = T0;
    int64_t frames0 = stat_of(t, "frames_in");
    aos_batch b;
    aos_batch_init(&b, AOS_MSG_MAX);
    uint64_t links[50];
    Aos__PingRequest p = AOS__PING_REQUEST__INIT;
    for (int i = 0; i < 50; i++) {
        aos_env e;
        uint8_t buf[64];
        make_req(t, &e, "ping", &p.base, buf, sizeof buf, NULL, 30000, 0);
        links[i] = e.link_id;
        nng_msg *m = encode(&e);
        assert_int_equal(aos_batch_add(&b, nng_msg_body(m), nng_msg_len(m)), AOS_OK);
        nng_msg_free(m);
    }
    send_msg(t, aos_batch_take(&b));
    for (int i = 0; i < 50; i++) {
        assert_true(wait_final(t, links[i], WAIT_MS));
        assert_int_equal(snap(t, links[i]).status, AOS_OK);
    }
    assert_int_equal(stat_of(t, "frames_in"), frames0 + 1);
}

static void test_batch_out(void **state)
{
    (void)state;
    T *t = T0;
    pthread_mutex_lock(&t->mu);
    int frames0 = t->frames;
    pthread_mutex_unlock(&t->mu);
    /* while we do not read, the server's replies pile up behind the send in flight */
    atomic_store(&t->paused, 1);
    uint64_t s1 = stream(t, 40, 256 << 10, 0, 60000, NULL);
    uint64_t pings[200];
    Aos__PingRequest p = AOS__PING_REQUEST__INIT;
    for (int i = 0; i < 200; i++)
        pings[i] = req(t, "ping", &p.base, NULL, 60000, 0);
    nng_msleep(300);
    atomic_store(&t->paused, 0);
    check_stream(t, s1, 40, 256 << 10);
    for (int i = 0; i < 200; i++) {
        assert_true(wait_final(t, pings[i], WAIT_MS));
        assert_int_equal(snap(t, pings[i]).status, AOS_OK);
    }
    pthread_mutex_lock(&t->mu);
    int frames = t->frames - frames0;
    pthread_mutex_unlock(&t->mu);
    print_message("batch out: %d frames for 200 replies and 41 stream envelopes\n", frames);
    assert_true(frames > 0);
    assert_true(stat_of(t, "frames_out") >= frames);

    /* back-pressure: a stream far larger than the outbox's cap waits for the link */
    atomic_store(&t->paused, 1);
    uint64_t s2 = stream(t, 64, AOS_PART_MAX, 0, 60000, NULL);
    nng_msleep(1000);
    atomic_store(&t->paused, 0);
    check_stream(t, s2, 64, AOS_PART_MAX);
    int64_t peak = stat_of(t, "outbox_peak_bytes");
    print_message("outbox peak %lld bytes\n", (long long)peak);
    assert_true(peak <= (int64_t)(16u << 20) + 2 * (int64_t)AOS_PART_MAX + (64 << 10));
    assert_true(stat_of(t, "outbox_waits") >= 1);
}

static void test_bad_frames(void **state)
{
    (void)state;
    T *t = T0;
    int64_t bad0 = stat_of(t, "bad_messages");
    /* a record header promising more than the frame holds */
    nng_msg *m;
    uint8_t cut[] = {AOS_BATCH_MAGIC0, AOS_BATCH_MAGIC1, 0, 0, 0, 9, 1, 2};
    assert_int_equal(nng_msg_alloc(&m, 0), 0);
    assert_int_equal(nng_msg_append(m, cut, sizeof cut), 0);
    send_msg(t, m);
    /* a good ping then a broken tail: the frame is dropped whole */
    Aos__PingRequest p = AOS__PING_REQUEST__INIT;
    aos_env e;
    uint8_t buf[64];
    make_req(t, &e, "ping", &p.base, buf, sizeof buf, NULL, 30000, 0);
    uint64_t dropped = e.link_id;
    nng_msg *em = encode(&e);
    aos_batch b;
    aos_batch_init(&b, AOS_MSG_MAX);
    assert_int_equal(aos_batch_add(&b, nng_msg_body(em), nng_msg_len(em)), AOS_OK);
    nng_msg_free(em);
    m = aos_batch_take(&b);
    uint8_t tail[] = {0, 0, 0};
    assert_int_equal(nng_msg_append(m, tail, sizeof tail), 0);
    send_msg(t, m);
    /* well framed, but one record is no envelope: that record alone is dropped */
    make_req(t, &e, "ping", &p.base, buf, sizeof buf, NULL, 30000, 0);
    uint64_t kept = e.link_id;
    em = encode(&e);
    uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_equal(aos_batch_add(&b, junk, sizeof junk), AOS_OK);
    assert_int_equal(aos_batch_add(&b, nng_msg_body(em), nng_msg_len(em)), AOS_OK);
    nng_msg_free(em);
    send_msg(t, aos_batch_take(&b));
    /* and a plain message that is no envelope */
    assert_int_equal(nng_msg_alloc(&m, 0), 0);
    assert_int_equal(nng_msg_append(m, junk, sizeof junk), 0);
    send_msg(t, m);

    assert_true(wait_final(t, kept, WAIT_MS));
    assert_int_equal(snap(t, kept).status, AOS_OK);
    ping_ok(t);
    assert_int_equal(stat_of(t, "bad_messages"), bad0 + 4);
    assert_int_equal(snap(t, dropped).finals, 0);
}

static void test_heartbeat(void **state)
{
    (void)state;
    T *t = T0;
    pthread_mutex_lock(&t->mu);
    int h0 = t->heartbeats;
    pthread_mutex_unlock(&t->mu);
    send_kind(t, AOS_KIND_HEARTBEAT, 0);
    uint64_t end = now_ms() + WAIT_MS;
    int h = h0;
    while (h == h0 && now_ms() < end) {
        nng_msleep(5);
        pthread_mutex_lock(&t->mu);
        h = t->heartbeats;
        pthread_mutex_unlock(&t->mu);
    }
    assert_int_equal(h, h0 + 1);
    /* an idle link sends a lone reply at once, as itself: one client pays nothing */
    pthread_mutex_lock(&t->mu);
    int f0 = t->frames, m0 = t->msgs;
    pthread_mutex_unlock(&t->mu);
    ping_ok(t);
    pthread_mutex_lock(&t->mu);
    int f = t->frames, m = t->msgs;
    pthread_mutex_unlock(&t->mu);
    assert_int_equal(f, f0);
    assert_int_equal(m, m0 + 1);
}

/* Take the next outbound REQUEST the server sent. */
static int next_out(T *t, outq *o, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        if (t->nout) {
            *o = t->out[0];
            memmove(&t->out[0], &t->out[1], (size_t)(t->nout - 1) * sizeof t->out[0]);
            t->nout--;
            pthread_mutex_unlock(&t->mu);
            return 1;
        }
        pthread_mutex_unlock(&t->mu);
        if (now_ms() >= end)
            return 0;
        nng_msleep(5);
    }
}

static void test_call(void **state)
{
    (void)state;
    T *t = T0;
    Aos__TestCallRequest c = AOS__TEST_CALL_REQUEST__INIT;
    c.method = "storage.kv.get";
    c.payload.data = (uint8_t *)"abc";
    c.payload.len = 3;
    uint64_t before = aos_now_ms();
    uint64_t l = req(t, "test.call", &c.base, NULL, 5000, 0);
    outq o;
    assert_true(next_out(t, &o, WAIT_MS));
    assert_string_equal(o.e.method, "storage.kv.get");
    assert_int_equal(o.e.link_id, l); /* the request it works for */
    assert_true(o.e.has_request_id);
    assert_true(o.e.deadline_ms > before && o.e.deadline_ms <= before + 5000 + 50);
    assert_int_equal(o.len, 3);
    assert_memory_equal(o.payload, "abc", 3);
    /* answer it as aosd would: a REPLY with its request id, link id 0 */
    aos_env r;
    aos_env_init(&r, AOS_KIND_REPLY);
    memcpy(r.request_id, o.e.request_id, AOS_ID_LEN);
    r.has_request_id = 1;
    r.status = AOS_ERR_CONFLICT;
    snprintf(r.error, sizeof r.error, "version moved");
    send_msg(t, encode(&r));
    assert_true(wait_final(t, l, WAIT_MS));
    lrec rl = snap(t, l);
    assert_int_equal(rl.status, AOS_ERR_CONFLICT);
    assert_string_equal(rl.error, "version moved");

    /* a payload comes back as it is */
    l = req(t, "test.call", &c.base, NULL, 5000, 0);
    assert_true(next_out(t, &o, WAIT_MS));
    aos_env_init(&r, AOS_KIND_REPLY);
    memcpy(r.request_id, o.e.request_id, AOS_ID_LEN);
    r.has_request_id = 1;
    r.payload = (const uint8_t *)"xyz!";
    r.payload_len = 4;
    send_msg(t, encode(&r));
    assert_true(wait_final(t, l, WAIT_MS));
    rl = snap(t, l);
    assert_int_equal(rl.status, AOS_OK);
    assert_int_equal(rl.len, 4);
    assert_memory_equal(rl.payload, "xyz!", 4);

    /* nobody answers: the tick fails it at its own timeout, within the parent's */
    c.timeout_ms = 200;
    uint64_t t0 = now_ms();
    l = req(t, "test.call", &c.base, NULL, 10000, 0);
    assert_true(next_out(t, &o, WAIT_MS));
    assert_true(o.e.deadline_ms <= aos_now_ms() + 200);
    assert_true(wait_final(t, l, WAIT_MS));
    assert_int_equal(snap(t, l).status, AOS_ERR_TIMEOUT);
    assert_true(now_ms() - t0 < 3000);
    int64_t late0 = stat_of(t, "late_replies");
    aos_env_init(&r, AOS_KIND_REPLY); /* too late: dropped */
    memcpy(r.request_id, o.e.request_id, AOS_ID_LEN);
    r.has_request_id = 1;
    send_msg(t, encode(&r));
    ping_ok(t);
    assert_int_equal(stat_of(t, "late_replies"), late0 + 1);

    /* replies as fast as they can come: the reply may beat srv_request to its own wait */
    atomic_store(&t->autoreply, 1);
    c.timeout_ms = 0;
    enum { N = 200 };
    uint64_t links[N];
    for (int i = 0; i < N; i++)
        links[i] = req(t, "test.call", &c.base, NULL, 30000, 0);
    for (int i = 0; i < N; i++) {
        assert_true(wait_final(t, links[i], WAIT_MS));
        assert_int_equal(snap(t, links[i]).status, AOS_ERR_NOT_FOUND);
    }
    atomic_store(&t->autoreply, 0);
}

/* STOP waits for an async call in hand, then the server exits 0. */
static void test_stop_drain(void **state)
{
    (void)state;
    T *t = start_server();
    uint64_t l = async_req(t, 300, "last", NULL);
    uint64_t s = stream(t, 20, 10, 5000, 30000, NULL);
    nng_msleep(20);
    send_kind(t, AOS_KIND_STOP, 0);
    assert_true(wait_final(t, l, WAIT_MS));
    assert_int_equal(snap(t, l).status, AOS_OK);
    check_stream(t, s, 20, 10);
    /* refused once stopping */
    Aos__PingRequest p = AOS__PING_REQUEST__INIT;
    uint64_t late = req(t, "ping", &p.base, NULL, 30000, 0);
    (void)late;
    assert_int_equal(reap(t->pid, WAIT_MS), 0);
    t->pid = 0;
    atomic_store(&t->stop_rx, 1);
    pthread_join(t->rx, NULL);
    nng_close(t->sock);
    unlink(t->sockpath);
    rmdir(t->dir);
    for (size_t i = 0; i < LINKS_MAX; i++)
        free(t->recs[i].payload);
    free(t->recs);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

int main(int argc, char **argv)
{
    server_bin = argc > 1 ? argv[1] : getenv("AOS_SERVE_TEST_SERVER");
    if (!server_bin) {
        fprintf(stderr, "usage: %s PATH-TO-test_serve_server\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_stream_counts),
        cmocka_unit_test(test_stream_sizes),
        cmocka_unit_test(test_stream_cancel),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_cancel_race),
        cmocka_unit_test(test_retry),
        cmocka_unit_test(test_batch_in),
        cmocka_unit_test(test_batch_out),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_call),
    };
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(test_stop_drain),
    };
    int rc = cmocka_run_group_tests_name("serve", shared, group_setup, group_teardown);
    rc |= cmocka_run_group_tests_name("serve_stop", alone, NULL, NULL);
    return rc;
}
