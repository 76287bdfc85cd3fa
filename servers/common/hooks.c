/* The test hooks: breakage on demand (test.forbidden, test.exit), and test.stream,
 * test.async and test.call, which exercise streaming, async answers and outbound calls. */
#include "hooks.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "aos.pb-c.h"
#include "monotime.h"

#define PACE_MAX 4096        /* test streams and async answers the pacer holds */

/* One test.stream or test.async in the pacer's hands. */
enum { PACE_STREAM, PACE_ASYNC };
typedef struct pace_item {
    srv_call *c;
    int kind;
    uint32_t parts, size, pace_us, sent;
    int final_status;
    uint64_t due_us;          /* monotonic */
    Aos__TestAsyncRequest *areq;
    struct pace_item *next;
} pace_item;

/* The pacer: one thread (started before the sandbox) emitting the parts of every
 * test.stream and the late answers of every test.async. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* an item came, or one was cancelled */
    pace_item *items;
    size_t n;
    pthread_t thread;
    uint8_t *buf;             /* one part's bytes, the pacer's own */
    atomic_ullong streams_started, streams_cancelled, parts_sent;
} H = {.mu = PTHREAD_MUTEX_INITIALIZER};

static aos_err do_test_forbidden(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)s; (void)req;
    /* not in any allow-list: the kernel kills us with SIGSYS before this returns; aos-tool's
     * deny-list (its children inherit it, so it cannot kill) refuses it with EPERM */
    errno = 0;
    long r = syscall(SYS_ptrace, 0L, 0L, 0L, 0L);
    if (r == -1 && errno == EPERM)
        return srv_fail(rep, AOS_ERR_REFUSED, "ptrace refused with EPERM by the deny-list");
    return srv_fail(rep, AOS_ERR_INTERNAL, "ptrace returned %ld: the sandbox is not on", r);
}

static aos_err do_test_exit(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)s; (void)req; (void)rep;
    _exit(3);
}

/* test.call: the request's own outbound call, answered with what came back */
static aos_err do_test_call(srv *s, const aos_env *req, srv_reply *rep)
{
    Aos__TestCallRequest *in =
        aos__test_call_request__unpack(NULL, req->payload_len, req->payload);
    if (!in || !aos_pb_strings_valid(&in->base)) {
        if (in)
            aos__test_call_request__free_unpacked(in, NULL);
        return srv_fail(rep, AOS_ERR_PROTO, "test.call: payload is not a TestCallRequest");
    }
    aos_reply r;
    aos_err rc = srv_request(s, rep->call, in->method ? in->method : "", in->payload.data,
                             in->payload.len, in->timeout_ms, &r);
    aos__test_call_request__free_unpacked(in, NULL);
    snprintf(rep->error, sizeof rep->error, "%s", r.error);
    rep->payload = r.payload; /* handed over: the loop frees it */
    rep->len = r.payload_len;
    return rc;
}

/* The pacer thread. Items leave the list while being worked on, so the lock is never held
 * around srv_call_part (which may wait for room) or srv_call_done (which may wait for an
 * on_cancel fn, pace_wake, that takes this lock). */
static void pace_wake(srv_call *c, void *arg)
{
    (void)c;
    (void)arg;
    pthread_mutex_lock(&H.mu);
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
}

static int pacer_add(pace_item *it)
{
    pthread_mutex_lock(&H.mu);
    int ok = H.n < PACE_MAX;
    if (ok) {
        it->next = H.items;
        H.items = it;
        H.n++;
        pthread_cond_broadcast(&H.cv);
    }
    pthread_mutex_unlock(&H.mu);
    return ok;
}

static void pace_free(pace_item *it)
{
    if (it->areq)
        aos__test_async_request__free_unpacked(it->areq, NULL);
    free(it);
}

/* One step of it: a part, or the end. 1: keep it (due again at it->due_us). */
static int pace_step(pace_item *it)
{
    srv_call *c = it->c;
    if (srv_call_cancelled(c)) {
        if (it->kind == PACE_STREAM)
            atomic_fetch_add(&H.streams_cancelled, 1);
        srv_call_done(c, AOS_ERR_CANCELLED, "cancelled", NULL, 0);
        return 0;
    }
    if (it->kind == PACE_ASYNC) {
        Aos__PingReply out = AOS__PING_REPLY__INIT;
        out.data = it->areq->data;
        out.pid = (int32_t)getpid();
        size_t n = aos__ping_reply__get_packed_size(&out);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf) {
            srv_call_done(c, AOS_ERR_NOMEM, "test.async: no memory for the reply", NULL, 0);
            return 0;
        }
        aos__ping_reply__pack(&out, buf);
        srv_call_done(c, AOS_OK, NULL, buf, n);
        free(buf);
        return 0;
    }
    if (it->sent == it->parts) {
        srv_call_done(c, it->final_status, NULL, NULL, 0);
        return 0;
    }
    if (it->size <= AOS_PART_MAX) /* else srv_call_part refuses it unread */
        memset(H.buf, (int)(it->sent & 0xff), it->size);
    aos_err rc = srv_call_part(c, H.buf, it->size);
    if (rc == AOS_ERR_CANCELLED || rc == AOS_ERR_TIMEOUT) {
        atomic_fetch_add(&H.streams_cancelled, 1);
        srv_call_done(c, rc, NULL, NULL, 0);
        return 0;
    }
    if (rc) {
        char why[160];
        snprintf(why, sizeof why, "test.stream: part %u of %u bytes refused: %s (parts are at "
                 "most %u bytes)", (unsigned)it->sent, (unsigned)it->size, aos_strerror(rc),
                 AOS_PART_MAX);
        srv_call_done(c, rc, why, NULL, 0);
        return 0;
    }
    it->sent++;
    atomic_fetch_add(&H.parts_sent, 1);
    it->due_us = mt_now_us() + it->pace_us;
    return 1;
}

static void *pacer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&H.mu);
    for (;;) {
        uint64_t now = mt_now_us();
        pace_item **best = NULL;
        for (pace_item **pp = &H.items; *pp; pp = &(*pp)->next) {
            pace_item *it = *pp;
            if (srv_call_cancelled(it->c)) { /* cancelled: now, whatever its pace */
                best = pp;
                break;
            }
            if (!best || it->due_us < (*best)->due_us)
                best = pp;
        }
        if (!best) {
            pthread_cond_wait(&H.cv, &H.mu);
            continue;
        }
        pace_item *it = *best;
        if (!srv_call_cancelled(it->c) && it->due_us > now) {
            uint64_t wait = it->due_us - now;
            struct timespec ts = mt_in_us(wait < 100000u ? wait : 100000u);
            pthread_cond_timedwait(&H.cv, &H.mu, &ts);
            continue;
        }
        *best = it->next;
        H.n--;
        pthread_mutex_unlock(&H.mu);
        int keep = pace_step(it);
        pthread_mutex_lock(&H.mu);
        if (keep) {
            it->next = H.items;
            H.items = it;
            H.n++;
        } else {
            pace_free(it);
        }
    }
    return NULL;
}

/* test.stream: parts paced by the pacer thread, then the final with its status */
static void do_test_stream(srv *s, srv_call *c)
{
    (void)s;
    const aos_env *e = srv_call_env(c);
    Aos__TestStreamRequest *in =
        aos__test_stream_request__unpack(NULL, e->payload_len, e->payload);
    if (!in) {
        srv_call_done(c, AOS_ERR_PROTO, "test.stream: payload is not a TestStreamRequest",
                      NULL, 0);
        return;
    }
    pace_item *it = calloc(1, sizeof *it);
    if (!it) {
        aos__test_stream_request__free_unpacked(in, NULL);
        srv_call_done(c, AOS_ERR_NOMEM, "test.stream: no memory", NULL, 0);
        return;
    }
    it->c = c;
    it->kind = PACE_STREAM;
    it->parts = in->parts;
    it->size = in->size;
    it->pace_us = in->pace_us;
    it->final_status = aos_err_valid(in->final_status) ? in->final_status : AOS_ERR_INTERNAL;
    it->due_us = mt_now_us();
    aos__test_stream_request__free_unpacked(in, NULL);
    atomic_fetch_add(&H.streams_started, 1);
    srv_call_on_cancel(c, pace_wake, NULL);
    if (!pacer_add(it)) {
        free(it);
        srv_call_done(c, AOS_ERR_UNAVAILABLE, "test.stream: the pacer is full", NULL, 0);
    }
    /* c may be finished by the pacer already: not touched after this */
}

/* test.async: a PingReply from the pacer thread after delay_ms */
static void do_test_async(srv *s, srv_call *c)
{
    (void)s;
    const aos_env *e = srv_call_env(c);
    Aos__TestAsyncRequest *in =
        aos__test_async_request__unpack(NULL, e->payload_len, e->payload);
    if (!in || in->data.len > 65536) {
        if (in)
            aos__test_async_request__free_unpacked(in, NULL);
        srv_call_done(c, in ? AOS_ERR_TOO_BIG : AOS_ERR_PROTO,
                      "test.async: payload is not a TestAsyncRequest (data up to 64 KiB)",
                      NULL, 0);
        return;
    }
    pace_item *it = calloc(1, sizeof *it);
    if (!it) {
        aos__test_async_request__free_unpacked(in, NULL);
        srv_call_done(c, AOS_ERR_NOMEM, "test.async: no memory", NULL, 0);
        return;
    }
    it->c = c;
    it->kind = PACE_ASYNC;
    it->areq = in;
    it->due_us = mt_now_us() + (uint64_t)in->delay_ms * 1000u;
    srv_call_on_cancel(c, pace_wake, NULL);
    if (!pacer_add(it)) {
        pace_free(it);
        srv_call_done(c, AOS_ERR_UNAVAILABLE, "test.async: the pacer is full", NULL, 0);
    }
}

static const srv_method hook_methods[] = {
    {"test.forbidden", do_test_forbidden, 0, NULL},
    {"test.exit", do_test_exit, 0, NULL},
    {"test.stream", NULL, 0, do_test_stream},
    {"test.async", NULL, 0, do_test_async},
    {"test.call", do_test_call, 0, NULL}, /* waits for the reply: a worker */
};

const srv_method *hooks_methods(size_t *n)
{
    *n = sizeof hook_methods / sizeof hook_methods[0];
    return hook_methods;
}

aos_err hooks_start(char *why, size_t whylen)
{
    mt_cond_init(&H.cv);
    if (!(H.buf = malloc(AOS_PART_MAX))) {
        snprintf(why, whylen, "no memory for the test hooks' pacer");
        return AOS_ERR_NOMEM;
    }
    if (pthread_create(&H.thread, NULL, pacer_main, NULL) != 0) {
        snprintf(why, whylen, "cannot start the test hooks' pacer");
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
}

void hooks_stats(srv_stats *st)
{
    srv_stat(st, "test_streams_started", (int64_t)H.streams_started, NULL);
    srv_stat(st, "test_streams_cancelled", (int64_t)H.streams_cancelled, NULL);
    srv_stat(st, "test_parts_sent", (int64_t)H.parts_sent, NULL);
}
