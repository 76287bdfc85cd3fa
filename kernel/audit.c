/* aosd's audit emitter: each routed syscall becomes an aos.audit.Event, packed at once; one
 * flusher thread sends them to aos-audit in batches (audit.emit) and tells the waiters. */
#include "audit.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <sodium.h>

#include "aos/log.h"
#include "audit.pb-c.h"
#include "link.h"
#include "supervise.h"

#define KAUD_BATCH 1024u            /* events per audit.emit (EmitRequest's cap) */
#define KAUD_BATCH_BYTES (2u << 20) /* and bytes: the emit must fit the link */
#define KAUD_INFLIGHT 4u            /* emits in flight: a few commits overlap */
#define KAUD_WHY_MAX 240u           /* bytes of a refusal's reason kept in its record */
#define KAUD_LINGER_MS 5u           /* fire-and-forget events wait this long for company */
#define KAUD_QUEUE_MAX 65536u       /* events held; beyond, fire-and-forget ones are lost
                                     * (counted, declared as a gap) and waiters refused */
#define KAUD_FORGET_MS 60000u       /* an unwaited emit's deadline at the link */

/* One packed event in the queue. */
typedef struct kev {
    struct kev *next;
    kaud_done_fn done;              /* NULL: nobody waits */
    void *arg;
    uint64_t deadline;              /* monotonic ms; waiters only */
    size_t len;
    uint8_t buf[];                  /* the packed aos.audit.Event */
} kev;

typedef struct batch {
    kev *head;
    size_t n;
} batch;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thr;
    int started, stopping, fail_open;
    kev *head, *tail;
    size_t queued;
    unsigned waiters;               /* queued events somebody waits for */
    unsigned inflight;
    uint64_t oldest;                /* monotonic ms the head was queued */
    uint64_t lost_since_gap;        /* fire-and-forget events dropped since the last gap */
    uint64_t gap_from_ns;
    kaud_stats st;
} K = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int kaud_fail_open(void) { return K.fail_open; }

int kaud_records(const char *method)
{
    if (!strncmp(method, "audit.", 6) || !strncmp(method, "kernel.stream.", 14) ||
        !strcmp(method, "kernel.status") || !strcmp(method, "kernel.sched") ||
        !strcmp(method, "kernel.metrics"))
        return 0;
    const char *dot = strrchr(method, '.');
    return !(dot && (!strcmp(dot, ".ping") || !strcmp(dot, ".stats")));
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {.len = n, .data = (uint8_t *)p};
    return b;
}

static void send_batch(batch *b, uint64_t deadline);

/* Queue one packed event; NULL on no memory or a full queue (then a waiter is answered).
 * A waited event alone in the queue, with a commit slot free, is sent from the caller's
 * thread at once: waking the flusher for it would add a thread hop to every effectful
 * syscall's path. Events that come meanwhile gather for the flusher, as before. */
static void enqueue(kev *e)
{
    batch *direct = e->done ? calloc(1, sizeof *direct) : NULL;
    pthread_mutex_lock(&K.mu);
    if (K.stopping || K.queued >= KAUD_QUEUE_MAX) {
        int stopping = K.stopping;
        if (!e->done) {
            if (!K.lost_since_gap++)
                K.gap_from_ns = unix_ns();
            K.st.lost++;
        }
        pthread_mutex_unlock(&K.mu);
        free(direct);
        if (e->done)
            e->done(e->arg, AOS_ERR_UNAVAILABLE, stopping ? "aosd is stopping"
                    : "the audit queue is full: aos-audit is not keeping up");
        free(e);
        return;
    }
    if (direct && !K.head && K.inflight < KAUD_INFLIGHT && !K.lost_since_gap) {
        e->next = NULL;
        direct->head = e;
        direct->n = 1;
        K.st.events++;
        K.inflight++;
        uint64_t deadline = mono_ms() + KAUD_FORGET_MS;
        if (e->deadline < deadline)
            deadline = e->deadline;
        pthread_mutex_unlock(&K.mu);
        send_batch(direct, deadline);
        return;
    }
    free(direct);
    if (!K.head)
        K.oldest = mono_ms();
    e->next = NULL;
    if (K.tail)
        K.tail->next = e;
    else
        K.head = e;
    K.tail = e;
    K.queued++;
    K.st.events++;
    if (e->done)
        K.waiters++;
    pthread_cond_signal(&K.cv);
    pthread_mutex_unlock(&K.mu);
}

/* One event of req's ids (agent, run, step, trace, method) into the queue. */
static void put_event(const aos_env *req, const uint8_t *parent_span, const char *kind,
                      const char *key, int status, uint64_t latency_us, const char *body,
                      uint64_t deadline_mono, kaud_done_fn done, void *arg)
{
    Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT;
    ev.kind = bin(kind, strlen(kind));
    ev.agent = bin(req->agent_id, strlen(req->agent_id));
    ev.run = bin(req->run_id, strlen(req->run_id));
    ev.step = req->step;
    if (req->has_trace) {
        ev.trace_id = bin(req->trace_id, AOS_ID_LEN);
        ev.span_id = bin(req->span_id, AOS_SPAN_LEN);
        if (parent_span)
            ev.parent_span_id = bin(parent_span, AOS_SPAN_LEN);
    }
    ev.method = bin(req->method, strlen(req->method));
    ev.status = status;
    ev.latency_us = latency_us;
    ev.time_ns = unix_ns();
    ev.body = bin(body, strlen(body));
    ev.key = bin(key, 32);
    size_t n = aos__audit__event__get_packed_size(&ev);
    kev *e = malloc(sizeof *e + n);
    if (!e) {
        pthread_mutex_lock(&K.mu);
        if (!K.lost_since_gap++)
            K.gap_from_ns = unix_ns();
        K.st.lost++;
        pthread_mutex_unlock(&K.mu);
        if (done)
            done(arg, AOS_ERR_NOMEM, "aosd has no memory for the audit record");
        return;
    }
    e->done = done;
    e->arg = arg;
    e->deadline = deadline_mono;
    e->len = aos__audit__event__pack(&ev, e->buf);
    enqueue(e);
}

static void event_why(const aos_env *req, const uint8_t *parent_span, kaud_phase phase,
                      int status, uint64_t latency_us, uint64_t deadline_mono,
                      kaud_done_fn done, void *arg, const char *why);

/* {"status":..,"why":..} into body; 0 when it does not fit. The reason may quote what an
 * agent sent (a tool's name): its bytes outside printable ASCII become '?', so the body
 * is valid JSON and one line whatever they were. */
static int why_body(int status, const char *why, char *body, size_t cap)
{
    char clean[KAUD_WHY_MAX + 1];
    size_t n = 0;
    for (; why[n] && n < KAUD_WHY_MAX; n++)
        clean[n] = why[n] >= 0x20 && why[n] < 0x7f ? why[n] : '?';
    clean[n] = 0;
    json_t *o = json_pack("{s:s,s:s}", "status", aos_err_name(status), "why", clean);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    int ok = t && strlen(t) < cap;
    if (ok)
        memcpy(body, t, strlen(t) + 1);
    free(t);
    return ok;
}

void kaud_event(const aos_env *req, const uint8_t *parent_span, kaud_phase phase,
                int status, uint64_t latency_us, uint64_t deadline_mono, kaud_done_fn done,
                void *arg)
{
    event_why(req, parent_span, phase, status, latency_us, deadline_mono, done, arg, NULL);
}

void kaud_refusal(const aos_env *req, const uint8_t *parent_span, int status,
                  uint64_t latency_us, uint64_t deadline_mono, kaud_done_fn done, void *arg,
                  const char *why)
{
    event_why(req, parent_span, KAUD_END, status, latency_us, deadline_mono, done, arg, why);
}

static void event_why(const aos_env *req, const uint8_t *parent_span, kaud_phase phase,
                      int status, uint64_t latency_us, uint64_t deadline_mono,
                      kaud_done_fn done, void *arg, const char *why)
{
    /* the key makes a re-sent emit harmless: the agent, the request id and the phase name
     * one event, and a client's retry of the same request is the same syscall */
    uint8_t kh[16];
    char key[33];
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, sizeof kh);
    crypto_generichash_update(&hs, (const uint8_t *)req->agent_id, strlen(req->agent_id) + 1);
    crypto_generichash_update(&hs, req->request_id, AOS_ID_LEN);
    uint8_t ph = (uint8_t)phase;
    crypto_generichash_update(&hs, &ph, 1);
    crypto_generichash_final(&hs, kh, sizeof kh);
    aos_hex(kh, sizeof kh, key);

    /* the details: for BEGIN what was asked (the arguments' digest: contents stay with
     * the server that keeps them), for END how it went */
    char body[256 + KAUD_WHY_MAX * 6];
    if (phase == KAUD_BEGIN) {
        uint8_t d[32];
        char dh[65];
        crypto_generichash(d, sizeof d, req->payload, req->payload_len, NULL, 0);
        aos_hex(d, sizeof d, dh);
        snprintf(body, sizeof body, "{\"args_blake2b\":\"%s\",\"args_len\":%zu}", dh,
                 req->payload_len);
    } else if (why && why[0] && why_body(status, why, body, sizeof body)) {
        /* the reason is in body */
    } else {
        snprintf(body, sizeof body, "{\"status\":\"%s\"}", aos_err_name(status));
    }

    put_event(req, parent_span, phase == KAUD_BEGIN ? "syscall.begin" : "syscall", key,
              status, latency_us, body, deadline_mono, done, arg);
}

void kaud_detail(const aos_env *req, const char *kind, const char *body)
{
    uint8_t kh[16];
    char key[33];
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, sizeof kh);
    crypto_generichash_update(&hs, (const uint8_t *)req->agent_id, strlen(req->agent_id) + 1);
    crypto_generichash_update(&hs, req->request_id, AOS_ID_LEN);
    crypto_generichash_update(&hs, (const uint8_t *)kind, strlen(kind));
    crypto_generichash_final(&hs, kh, sizeof kh);
    aos_hex(kh, sizeof kh, key);
    put_event(req, NULL, kind, key, 0, 0, body, 0, NULL, NULL);
}

/* A "gap" event declaring what was lost, ahead of the next batch (K.mu held). */
static kev *gap_event(void)
{
    char body[160];
    snprintf(body, sizeof body, "{\"lost\":%llu,\"from_ns\":%llu,\"to_ns\":%llu}",
             (unsigned long long)K.lost_since_gap, (unsigned long long)K.gap_from_ns,
             (unsigned long long)unix_ns());
    Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT;
    ev.kind = bin("gap", 3);
    ev.method = bin("audit.emit", 10);
    ev.status = AOS_ERR_UNAVAILABLE;
    ev.time_ns = unix_ns();
    ev.body = bin(body, strlen(body));
    size_t n = aos__audit__event__get_packed_size(&ev);
    kev *e = calloc(1, sizeof *e + n);
    if (e)
        e->len = aos__audit__event__pack(&ev, e->buf);
    return e;
}

static void on_emitted(void *arg, nng_msg *reply, int status, const char *err)
{
    batch *b = arg;
    if (reply)
        nng_msg_free(reply);
    char why[AOS_ERRMSG_MAX];
    if (status != AOS_OK)
        snprintf(why, sizeof why, "the audit record could not be made durable (%s: %s); the "
                 "syscall was not run (fail-closed)", aos_err_name(status), err ? err : "");
    pthread_mutex_lock(&K.mu);
    K.inflight--;
    size_t lost = 0;
    for (kev *e = b->head; e; e = e->next)
        if (!e->done && status != AOS_OK)
            lost++;
    if (lost) {
        if (!K.lost_since_gap)
            K.gap_from_ns = unix_ns();
        K.lost_since_gap += lost;
        K.st.lost += lost;
    }
    pthread_cond_signal(&K.cv);
    pthread_mutex_unlock(&K.mu);
    for (kev *e = b->head, *n; e; e = n) {
        n = e->next;
        if (e->done) {
            pthread_mutex_lock(&K.mu);
            if (status == AOS_OK)
                K.st.durable_waits++;
            else
                K.st.failed_waits++;
            pthread_mutex_unlock(&K.mu);
            e->done(e->arg, status == AOS_OK ? AOS_OK : AOS_ERR_UNAVAILABLE,
                    status == AOS_OK ? NULL : why);
        }
        free(e);
    }
    free(b);
}

/* Send b as one audit.emit (K.mu not held; the flusher counted it in flight). */
static void send_batch(batch *b, uint64_t deadline)
{
    size_t total = 0;
    for (kev *e = b->head; e; e = e->next)
        total += 1 + 5 + e->len; /* tag, length varint, the packed event */
    uint8_t *buf = malloc(total ? total : 1);
    char why[256];
    int failed = 0;
    klink *l = buf ? sup_link("audit", &failed, why, sizeof why) : NULL;
    aos_err rc = !buf ? AOS_ERR_NOMEM : !l ? AOS_ERR_NOT_FOUND : failed ? failed : AOS_OK;
    if (rc == AOS_OK) {
        /* EmitRequest is one repeated field (1, length-delimited): the packed events,
         * each behind its tag and length, are the message */
        size_t off = 0;
        for (kev *e = b->head; e; e = e->next) {
            buf[off++] = 0x0a;
            size_t v = e->len;
            do {
                uint8_t c = v & 0x7f;
                v >>= 7;
                buf[off++] = v ? (uint8_t)(c | 0x80) : c;
            } while (v);
            memcpy(buf + off, e->buf, e->len);
            off += e->len;
        }
        aos_env req;
        aos_env_init(&req, AOS_KIND_REQUEST);
        if (getrandom(req.request_id, AOS_ID_LEN, 0) != AOS_ID_LEN)
            randombytes_buf(req.request_id, AOS_ID_LEN);
        req.has_request_id = 1;
        snprintf(req.method, sizeof req.method, "audit.emit");
        uint64_t now = mono_ms();
        req.deadline_ms = aos_now_ms() + (deadline > now ? deadline - now : 1);
        req.payload = buf;
        req.payload_len = off;
        link_fwd f = {.deadline = deadline, .done = on_emitted, .arg = b};
        rc = link_forward(l, &req, &f, NULL);
        if (rc == AOS_OK) {
            free(buf);
            pthread_mutex_lock(&K.mu);
            K.st.emits++;
            pthread_mutex_unlock(&K.mu);
            return;
        }
        snprintf(why, sizeof why, "cannot reach aos-audit's link");
    }
    free(buf);
    on_emitted(b, NULL, rc, why); /* gives back the flusher's in-flight count */
}

static void *flusher(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&K.mu);
    for (;;) {
        uint64_t now = mono_ms();
        /* expired waiters are answered now, not when the emit that holds them returns */
        for (kev **pp = &K.head, *e; (e = *pp);) {
            if (e->done && e->deadline <= now) {
                *pp = e->next;
                if (K.tail == e) {
                    K.tail = NULL;
                    for (kev *t = K.head; t; t = t->next)
                        K.tail = t;
                }
                K.queued--;
                K.waiters--;
                K.st.failed_waits++;
                pthread_mutex_unlock(&K.mu);
                e->done(e->arg, AOS_ERR_UNAVAILABLE, "aos-audit did not record this syscall "
                        "before its deadline; it was not run (fail-closed)");
                free(e);
                pthread_mutex_lock(&K.mu);
                continue;
            }
            pp = &e->next;
        }
        int due = K.head && K.inflight < KAUD_INFLIGHT &&
                  (K.waiters || K.queued >= 256 || now - K.oldest >= KAUD_LINGER_MS ||
                   K.stopping);
        if (K.stopping && !K.head)
            break;
        if (!due) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += (long)KAUD_LINGER_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&K.cv, &K.mu, &ts);
            continue;
        }
        batch *b = calloc(1, sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&K.mu);
            nng_msleep(1);
            pthread_mutex_lock(&K.mu);
            continue;
        }
        kev **tail = &b->head;
        if (K.lost_since_gap && !K.stopping) {
            kev *g = gap_event();
            if (g) {
                *tail = g;
                tail = &g->next;
                b->n++;
                K.lost_since_gap = 0;
                K.st.gaps++;
            }
        }
        size_t bytes = 0;
        uint64_t deadline = now + KAUD_FORGET_MS;
        while (K.head && b->n < KAUD_BATCH && bytes + K.head->len + 6 <= KAUD_BATCH_BYTES) {
            kev *e = K.head;
            K.head = e->next;
            if (!K.head)
                K.tail = NULL;
            K.queued--;
            if (e->done) {
                K.waiters--;
                if (e->deadline < deadline)
                    deadline = e->deadline;
            }
            e->next = NULL;
            *tail = e;
            tail = &e->next;
            b->n++;
            bytes += e->len + 6;
        }
        if (K.head)
            K.oldest = now;
        K.inflight++;
        int stopping = K.stopping;
        pthread_mutex_unlock(&K.mu);
        if (stopping)
            on_emitted(b, NULL, AOS_ERR_UNAVAILABLE, "aosd is stopping");
        else
            send_batch(b, deadline);
        pthread_mutex_lock(&K.mu);
    }
    pthread_mutex_unlock(&K.mu);
    return NULL;
}

aos_err kaud_open(int fail_open, char *why, size_t whylen)
{
    if (sodium_init() < 0) {
        snprintf(why, whylen, "libsodium would not initialise");
        return AOS_ERR_FAILED;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&K.cv, &ca);
    pthread_condattr_destroy(&ca);
    K.fail_open = fail_open;
    int e = pthread_create(&K.thr, NULL, flusher, NULL);
    if (e) {
        snprintf(why, whylen, "the audit flusher thread: %s", strerror(e));
        return AOS_ERR_NOMEM;
    }
    K.started = 1;
    return AOS_OK;
}

void kaud_close(void)
{
    if (!K.started)
        return;
    pthread_mutex_lock(&K.mu);
    K.stopping = 1;
    pthread_cond_signal(&K.cv);
    pthread_mutex_unlock(&K.mu);
    pthread_join(K.thr, NULL);
    K.started = 0;
}

void kaud_get_stats(kaud_stats *st)
{
    pthread_mutex_lock(&K.mu);
    *st = K.st;
    st->queued = K.queued;
    uint64_t now = mono_ms();
    st->oldest_ms = K.head && K.oldest && now > K.oldest ? now - K.oldest : 0;
    pthread_mutex_unlock(&K.mu);
}
