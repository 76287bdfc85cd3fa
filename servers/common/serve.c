/* The serve loop of every aos server: link to aosd, migrate, open, sandbox, READY, then
 * serve calls (inline, on workers, or async), stream their parts and batch the link. */
#include "serve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>

#include "aos.pb-c.h"
#include "aos/batch.h"
#include "aos/log.h"
#include "aos/servers.h"
#include "hooks.h"
#include "idem.h"
#include "monotime.h"
#include "outbox.h"
#include "sandbox.h"

#define WORKERS_MAX 64
#define RECEIVERS 4          /* receive aios: messages decoded in parallel on nng's threads */
#define QUEUE_MAX 4096       /* requests waiting for a worker; beyond: unavailable */
#define CALLS_MAX 8192       /* calls in hand (queued, running, async); beyond: unavailable */
#define CALL_LINKS 5         /* a request's own link and up to 4 retries waiting on its run */
#define CALL_BUCKETS 8192    /* hash buckets by link id and by request id */
#define EARLY_CANCELS 256    /* CANCELs that overtook their request on another receiver */
#define STOP_DRAIN_MS 10000  /* on STOP, wait this long for requests in hand to finish */
#define STOP_FLUSH_MS 2000   /* then this long for the outbox to empty */
#define TICK_MS 50           /* the deadline tick: cancels overdue calls, fails overdue
                              * outbound requests */
#define IDEM_SLOTS 4096
#define IDEM_PAYLOAD_CAP (16u << 10)
/* A final reply's payload: the envelope around it (ids, method, 1 KiB of error text) must
 * still fit a message. */
#define FINAL_MAX (AOS_MSG_MAX - 4096u)
#define OUTREQ_MAX 1024      /* outbound requests waiting for their reply */
#define OUTREQ_BUCKETS 256
#define OUTREQ_DEFAULT_MS 30000u

/* ---- calls ---------------------------------------------------------------------------
 * Lifetime of a srv_call, the one rule every path follows:
 *  - The receive thread creates it with one reference, the owner's: whoever must answer
 *    (the workers' queue, then a worker; the inline runner; an async handler). The owner
 *    gives it back in call_finish (srv_call_done), after the final reply.
 *  - Everyone else (CANCEL by link id, the deadline tick, a retry of its request id)
 *    finds it only under s->cmu, in the tables, and takes a reference before letting go
 *    of cmu; call_finish takes it out of the tables under cmu, after which nobody new can
 *    find it. The last reference frees it.
 *  - c->mu decides between cancel and finish: the cancel fn is taken (and cleared) under
 *    it, finished is set under it, and a finish waits while a cancel fn runs on another
 *    thread. So the fn runs at most once and never after srv_call_done returned, and no
 *    cancel fn is started once finished is set.
 * Lock order: s->cmu and c->mu are never held together; c->mu may be held while pushing
 * into the outbox (a part goes in in seq order), and the outbox calls nothing of ours. */

typedef struct call_link {
    uint64_t id;              /* aosd's link id */
    int used;
    uint64_t deadline_ms;     /* that request's deadline (wall clock), 0: none */
    srv_call *c;
    struct call_link *hnext;  /* the link-id hash chain */
} call_link;

struct srv_call {
    srv *s;
    const srv_method *m;
    aos_env env;              /* owns the decoded request */
    atomic_int refs;
    atomic_int cancelled;
    _Atomic uint64_t retry_after_ms; /* the error reply's hint (srv_call_retry_after) */
    _Atomic uint64_t target;  /* the link parts and the final go to: links[primary].id */

    pthread_mutex_t mu;
    pthread_cond_t cv;        /* a cancel fn returned */
    int finished;
    uint32_t nparts;
    void (*cancel_fn)(srv_call *, void *);
    void *cancel_arg;
    int cancel_running;       /* cancel fns running now (each on a thread whose
                               * tls_cancel_of is this call) */

    /* under s->cmu */
    call_link links[CALL_LINKS];
    int nlinks, primary;
    srv_call *rnext;          /* the request-id hash chain */
    srv_call *prev, *next;    /* every call in hand, for the tick */
    /* under s->mu */
    srv_call *qnext;          /* the workers' queue */
};

/* A request this server sent through aosd, waiting for its reply. */
typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    aos_reply *out;
    /* copied from the outreq before it is registered: the reply may complete (and free)
     * it before outreq_send even returns */
    uint8_t id[AOS_ID_LEN];
    uint64_t deadline_ms;
} sync_wait;

typedef struct outreq {
    uint8_t id[AOS_ID_LEN];
    uint64_t deadline_ms;     /* wall clock */
    char method[AOS_METHOD_MAX + 1];
    void (*done)(void *, const aos_reply *);
    void (*part)(void *, uint32_t, const uint8_t *, size_t); /* streamed parts, or NULL */
    void *arg;
    uint8_t key_hash[AOS_KEY_HASH_LEN];
    int has_key_hash;         /* aos-api's: the call runs as the key's agent */
    uint32_t parts_seen;      /* parts handed to part (under rmu) */
    uint8_t *id_out;          /* srv_request_front's caller wants the request id here */
    aos_reply *final;         /* a final reply that came before its last parts (receivers
                               * pass each other): held until they are in */
    sync_wait *w;             /* srv_request: the reply is handed over, not copied */
    struct outreq *next;
} outreq;

typedef struct receiver {
    srv *s;
    nng_aio *aio;
} receiver;

struct srv_stats {
    Aos__Stat **items;
    size_t n, cap;
};

struct srv {
    const srv_def *def;
    nng_socket sock;
    void *state;
    idem *idem;
    int test_hooks;
    const char *own_dir;       /* --dir: NULL when aosd gave none */
    const char *workspaces;    /* --workspaces: NULL when aosd gave none */
    uint64_t started_ms;
    const char *pg_dsn;
    const uint8_t *config;    /* what aosd handed on --config-fd (NULL: nothing) */
    size_t config_len;

    atomic_int stopping;
    unsigned nworkers;
    pthread_t workers[WORKERS_MAX];
    receiver rx[RECEIVERS];

    pthread_mutex_t mu;      /* the queue to the workers, and the stop request */
    pthread_cond_t cv, stop_cv;
    srv_call *head, *tail;
    size_t queued;
    int stop_asked;
    int sandboxed;           /* sbx_apply is done: workers may connect to the database */

    /* calls in hand: see "Lifetime of a srv_call" */
    pthread_mutex_t cmu;
    call_link *by_link[CALL_BUCKETS];
    srv_call *by_rid[CALL_BUCKETS];
    srv_call *calls;
    size_t ncalls;
    uint64_t early[EARLY_CANCELS];
    unsigned early_next;

    outbox *ob;              /* to aosd: see outbox.h */

    /* outbound requests */
    pthread_mutex_t rmu;
    outreq *out_by_id[OUTREQ_BUCKETS];
    size_t nout;

    srv_pg *dbs[WORKERS_MAX];     /* each worker's connection, for the stats */
    atomic_int ndbs;
    atomic_ullong requests, errors, bad_messages, replays, refused, cancels, retries_joined;
    atomic_ullong frames_in, parts_out;
    atomic_ullong out_requests, out_timeouts, late_replies;
    atomic_int in_flight;
};

static __thread srv_pg *tls_db;
/* The call whose cancel fn this thread is running, so that a fn that finishes its own call
 * does not wait for itself. */
static __thread srv_call *tls_cancel_of;

void *srv_state(srv *s) { return s->state; }
void srv_set_state(srv *s, void *state) { s->state = state; }
const char *srv_name(srv *s) { return s->def->name; }
const char *srv_pg_dsn(srv *s) { return s->pg_dsn; }
const char *srv_dir(srv *s) { return s->own_dir; }
const char *srv_workspaces(srv *s) { return s->workspaces; }
int srv_test_hooks(srv *s) { return s->test_hooks; }
const uint8_t *srv_config(srv *s, size_t *len)
{
    *len = s->config_len;
    return s->config;
}
srv_pg *srv_db(srv *s) { (void)s; return tls_db; }

aos_err srv_reply_pb(srv_reply *rep, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > FINAL_MAX)
        return srv_fail(rep, AOS_ERR_TOO_BIG, "reply of %zu bytes is over the message cap", n);
    free(rep->payload);
    rep->payload = malloc(n ? n : 1);
    if (!rep->payload)
        return srv_fail(rep, AOS_ERR_NOMEM, "no memory for a %zu byte reply", n);
    rep->len = protobuf_c_message_pack(m, rep->payload);
    return AOS_OK;
}

aos_err srv_fail(srv_reply *rep, aos_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->error, sizeof rep->error, fmt, ap);
    va_end(ap);
    return code;
}

void srv_stat(srv_stats *st, const char *name, int64_t value, const char *text)
{
    if (st->n == st->cap) {
        size_t nc = st->cap ? st->cap * 2 : 16;
        Aos__Stat **ni = realloc(st->items, nc * sizeof *ni);
        if (!ni)
            return;
        st->items = ni;
        st->cap = nc;
    }
    Aos__Stat *x = malloc(sizeof *x);
    if (!x)
        return;
    aos__stat__init(x);
    x->name = strdup(name);
    x->value = value;
    x->text = strdup(text ? text : "");
    if (!x->name || !x->text) {
        free(x->name);
        free(x->text);
        free(x);
        return;
    }
    st->items[st->n++] = x;
}

static void stats_free(srv_stats *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->items[i]->name);
        free(st->items[i]->text);
        free(st->items[i]);
    }
    free(st->items);
}

/* ---- sending ------------------------------------------------------------------------ */

static void send_env(srv *s, const aos_env *e, int mode)
{
    nng_msg *m;
    if (aos_env_encode(e, &m) != AOS_OK) {
        aos_error("cannot encode a message for %s", e->method);
        return;
    }
    ob_push(s->ob, m, mode);
}

/* A reply that is no call's (refusals, replays): to req's own link. */
static void reply_env(srv *s, const aos_env *req, int status, const char *err,
                      const uint8_t *payload, size_t len, uint32_t seq)
{
    aos_env r;
    aos_env_reply_to(&r, req, status, err && *err ? "%s" : NULL, err);
    r.payload = payload;
    r.payload_len = len;
    r.seq = seq;
    send_env(s, &r, OB_DROPPABLE);
}

/* ---- the calls' tables (under s->cmu) ----------------------------------------------- */

static size_t link_bucket(uint64_t id) { return (size_t)(id * 0x9E3779B97F4A7C15ull >> 51); }

static size_t rid_bucket(const uint8_t *id)
{
    uint64_t h;
    memcpy(&h, id, sizeof h); /* random ids: their first bytes are a good hash */
    return (size_t)(h % CALL_BUCKETS);
}
_Static_assert(CALL_BUCKETS == 1u << 13, "link_bucket keeps the top 13 bits");

static call_link *link_find(srv *s, uint64_t id)
{
    for (call_link *l = s->by_link[link_bucket(id)]; l; l = l->hnext)
        if (l->id == id && l->used)
            return l;
    return NULL;
}

static srv_call *rid_find(srv *s, const uint8_t *id)
{
    for (srv_call *c = s->by_rid[rid_bucket(id)]; c; c = c->rnext)
        if (!memcmp(c->env.request_id, id, AOS_ID_LEN))
            return c;
    return NULL;
}

static int link_add(srv *s, srv_call *c, uint64_t id, uint64_t deadline_ms)
{
    for (int i = 0; i < CALL_LINKS; i++)
        if (c->links[i].used && c->links[i].id == id)
            return 1; /* the same link again: nothing more to answer */
    for (int i = 0; i < CALL_LINKS; i++) {
        call_link *l = &c->links[i];
        if (l->used)
            continue;
        l->used = 1;
        l->id = id;
        l->deadline_ms = deadline_ms;
        l->c = c;
        size_t b = link_bucket(id);
        l->hnext = s->by_link[b];
        s->by_link[b] = l;
        if (c->nlinks++ == 0) {
            c->primary = i;
            atomic_store(&c->target, id);
        }
        return 1;
    }
    return 0;
}

/* Drop one link of c; if it was the one parts go to, another takes its place. */
static void link_drop(srv *s, srv_call *c, int i)
{
    call_link *l = &c->links[i];
    call_link **pp = &s->by_link[link_bucket(l->id)];
    while (*pp != l)
        pp = &(*pp)->hnext;
    *pp = l->hnext;
    l->used = 0;
    l->id = 0;
    l->hnext = NULL;
    c->nlinks--;
    if (i == c->primary && c->nlinks > 0)
        for (int j = 0; j < CALL_LINKS; j++)
            if (c->links[j].used) {
                c->primary = j;
                atomic_store(&c->target, c->links[j].id);
                break;
            }
}

static void call_insert(srv *s, srv_call *c)
{
    link_add(s, c, c->env.link_id, c->env.deadline_ms);
    size_t b = rid_bucket(c->env.request_id);
    c->rnext = s->by_rid[b];
    s->by_rid[b] = c;
    c->next = s->calls;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
    s->ncalls++;
}

/* Out of every table; the link ids it was answering go to out (primary first). */
static int call_remove(srv *s, srv_call *c, uint64_t out[CALL_LINKS])
{
    int n = 0;
    if (c->nlinks)
        out[n++] = c->links[c->primary].id;
    for (int i = 0; i < CALL_LINKS; i++)
        if (c->links[i].used && i != c->primary)
            out[n++] = c->links[i].id;
    for (int i = 0; i < CALL_LINKS; i++)
        if (c->links[i].used)
            link_drop(s, c, i);
    srv_call **pp = &s->by_rid[rid_bucket(c->env.request_id)];
    while (*pp && *pp != c)
        pp = &(*pp)->rnext;
    if (*pp)
        *pp = c->rnext;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->ncalls--;
    return n;
}

static int early_cancelled(srv *s, uint64_t link_id)
{
    for (unsigned i = 0; i < EARLY_CANCELS; i++)
        if (s->early[i] == link_id) {
            s->early[i] = 0;
            return 1;
        }
    return 0;
}

/* ---- calls -------------------------------------------------------------------------- */

/* Takes over the decoded request e (e is left empty). */
static srv_call *call_new(srv *s, const srv_method *m, aos_env *e)
{
    srv_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->m = m;
    c->env = *e;
    e->pb_ = NULL; /* moved: the payload now belongs to c->env */
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

static void call_ref(srv_call *c) { atomic_fetch_add(&c->refs, 1); }

static void call_unref(srv_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    aos_env_clear(&c->env);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Run a cancel fn taken from c under c->mu (which counted it in cancel_running); the
 * caller holds a reference, since fn may finish c. */
static void cancel_run(srv_call *c, void (*fn)(srv_call *, void *), void *arg)
{
    srv_call *outer = tls_cancel_of;
    tls_cancel_of = c;
    fn(c, arg);
    tls_cancel_of = outer;
    pthread_mutex_lock(&c->mu);
    c->cancel_running--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Cancel c (the caller holds a reference): set the flag, wake a producer waiting for room
 * in the outbox, run the cancel fn once. Nothing is sent: the handler answers. */
static void call_cancel(srv_call *c)
{
    srv *s = c->s;
    pthread_mutex_lock(&c->mu);
    if (c->finished || atomic_load(&c->cancelled)) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    atomic_store(&c->cancelled, 1);
    void (*fn)(srv_call *, void *) = c->cancel_fn;
    void *arg = c->cancel_arg;
    c->cancel_fn = NULL;
    if (fn)
        c->cancel_running++;
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&s->cancels, 1);
    ob_wake(s->ob); /* a part's producer waiting for room returns CANCELLED */
    if (fn)
        cancel_run(c, fn, arg);
}

/* The final reply of c to every link waiting on it, recorded for retries; gives back the
 * owner's reference. */
static void call_finish(srv_call *c, int status, const char *err, const void *payload,
                        size_t len)
{
    srv *s = c->s;
    pthread_mutex_lock(&c->mu);
    /* no cancel fn may run after this returns, but one may finish its own call */
    while (c->cancel_running > (tls_cancel_of == c))
        pthread_cond_wait(&c->cv, &c->mu);
    int again = c->finished;
    c->finished = 1;
    c->cancel_fn = NULL;
    uint32_t nparts = c->nparts;
    pthread_mutex_unlock(&c->mu);
    if (again) { /* a handler bug; the reference it gave back already is not ours */
        aos_error("%s: a second final reply for one call, dropped", c->env.method);
        return;
    }
    char buf[160];
    if (!aos_err_valid(status)) {
        snprintf(buf, sizeof buf, "%s answered with status %d, which is no aos_err",
                 c->env.method, status);
        status = AOS_ERR_INTERNAL;
        err = buf;
        payload = NULL;
        len = 0;
    } else if (len > FINAL_MAX) {
        snprintf(buf, sizeof buf, "%s: reply of %zu bytes is over the message cap",
                 c->env.method, len);
        status = AOS_ERR_TOO_BIG;
        err = buf;
        payload = NULL;
        len = 0;
    }
    if (status != AOS_OK) { /* an error carries its text, not a half-built payload */
        atomic_fetch_add(&s->errors, 1);
        if (!err || !*err)
            err = aos_strerror(status);
        payload = NULL;
        len = 0;
    }
    aos_env r;
    aos_env_reply_to(&r, &c->env, status, err && *err ? "%s" : NULL, err);
    r.seq = nparts;
    r.retry_after_ms = status != AOS_OK ? atomic_load(&c->retry_after_ms) : 0;
    r.payload = payload;
    r.payload_len = len;
    uint64_t links[CALL_LINKS];
    pthread_mutex_lock(&s->cmu);
    idem_end(s->idem, c->env.request_id, status, r.error, payload, len, nparts);
    int n = call_remove(s, c, links);
    pthread_mutex_unlock(&s->cmu);
    for (int i = 0; i < n; i++) {
        r.link_id = links[i];
        send_env(s, &r, OB_DROPPABLE);
    }
    atomic_fetch_sub(&s->in_flight, 1);
    call_unref(c);
}

const aos_env *srv_call_env(const srv_call *c) { return &c->env; }
srv *srv_call_srv(const srv_call *c) { return c->s; }
int srv_call_cancelled(const srv_call *c) { return atomic_load(&c->cancelled); }
void srv_call_retry_after(srv_call *c, uint64_t ms)
{
    if (c)
        atomic_store(&c->retry_after_ms, ms);
}

void srv_call_done(srv_call *c, aos_err status, const char *err, const void *payload,
                   size_t len)
{
    if (c)
        call_finish(c, status, err, payload, len);
}

void srv_call_on_cancel(srv_call *c, void (*fn)(srv_call *, void *), void *arg)
{
    pthread_mutex_lock(&c->mu);
    if (!atomic_load(&c->cancelled) || c->finished || !fn) {
        c->cancel_fn = fn;
        c->cancel_arg = arg;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->cancel_running++; /* already cancelled: now, on this thread */
    call_ref(c);
    pthread_mutex_unlock(&c->mu);
    cancel_run(c, fn, arg);
    call_unref(c);
}

aos_err srv_call_part(srv_call *c, const void *data, size_t len)
{
    if (!c)
        return AOS_ERR_USAGE;
    if (len > AOS_PART_MAX)
        return AOS_ERR_TOO_BIG;
    srv *s = c->s;
    aos_err rc = ob_wait_room(s->ob, &c->cancelled, c->env.deadline_ms);
    if (rc)
        return rc;
    aos_env p;
    aos_env_reply_to(&p, &c->env, AOS_OK, NULL);
    p.kind = AOS_KIND_REPLY_PART;
    p.payload = data;
    p.payload_len = len;
    nng_msg *m;
    /* under c->mu from the index to the queue, so parts leave in index order */
    pthread_mutex_lock(&c->mu);
    if (c->finished)
        rc = AOS_ERR_USAGE;
    else if (atomic_load(&c->cancelled))
        rc = AOS_ERR_CANCELLED;
    if (!rc) {
        p.seq = c->nparts;
        p.link_id = atomic_load(&c->target);
        rc = aos_env_encode(&p, &m);
    }
    if (!rc) {
        ob_push(s->ob, m, OB_KEEP);
        c->nparts++;
    }
    pthread_mutex_unlock(&c->mu);
    if (!rc)
        atomic_fetch_add(&s->parts_out, 1);
    return rc;
}

/* ---- outbound requests -------------------------------------------------------------- */

static size_t out_bucket(const uint8_t *id)
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return (size_t)(h % OUTREQ_BUCKETS);
}

/* Take the request with id out of the table (NULL: not there: answered or timed out). */
static outreq *outreq_take(srv *s, const uint8_t *id)
{
    pthread_mutex_lock(&s->rmu);
    outreq **pp = &s->out_by_id[out_bucket(id)];
    while (*pp && memcmp((*pp)->id, id, AOS_ID_LEN))
        pp = &(*pp)->next;
    outreq *o = *pp;
    if (o) {
        *pp = o->next;
        s->nout--;
    }
    pthread_mutex_unlock(&s->rmu);
    return o;
}

/* Hand r (owned: its payload moves to a srv_request caller, else is freed) to o's waiter,
 * then free o. */
static void outreq_complete(outreq *o, aos_reply *r)
{
    if (o->final) { /* held for parts that never came: the tick's TIMEOUT wins */
        aos_reply_clear(o->final);
        free(o->final);
        o->final = NULL;
    }
    if (o->w) {
        sync_wait *w = o->w;
        pthread_mutex_lock(&w->mu);
        *w->out = *r;
        r->payload = NULL;
        w->done = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu); /* w is the waiter's again: not touched after this */
    } else {
        o->done(o->arg, r);
        aos_reply_clear(r);
    }
    free(o);
}

static void outreq_fail(outreq *o, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void outreq_fail(outreq *o, int status, const char *fmt, ...)
{
    aos_reply r;
    memset(&r, 0, sizeof r);
    r.status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.error, sizeof r.error, fmt, ap);
    va_end(ap);
    outreq_complete(o, &r);
}

/* A REPLY from aosd to one of our requests (on a receive thread). */
static void on_reply(srv *s, const aos_env *e)
{
    if (e->has_request_id && e->seq) {
        /* a streamed call's final may overtake its last parts on another receiver: it
         * waits in the request until they are delivered (on_reply_part completes it) */
        pthread_mutex_lock(&s->rmu);
        outreq *w = s->out_by_id[out_bucket(e->request_id)];
        while (w && memcmp(w->id, e->request_id, AOS_ID_LEN))
            w = w->next;
        if (w && w->part && w->parts_seen < e->seq && !w->final &&
            (w->final = calloc(1, sizeof *w->final))) {
            w->final->status = e->status;
            w->final->parts_total = e->seq;
            w->final->retry_after_ms = e->retry_after_ms;
            snprintf(w->final->error, sizeof w->final->error, "%s", e->error);
            if (e->payload_len && (w->final->payload = malloc(e->payload_len))) {
                memcpy(w->final->payload, e->payload, e->payload_len);
                w->final->payload_len = e->payload_len;
            } else if (e->payload_len) {
                w->final->status = AOS_ERR_NOMEM;
            }
            pthread_mutex_unlock(&s->rmu);
            return;
        }
        pthread_mutex_unlock(&s->rmu);
    }
    outreq *o = e->has_request_id ? outreq_take(s, e->request_id) : NULL;
    if (!o) { /* after its deadline, or to nothing we asked: nobody waits for it */
        atomic_fetch_add(&s->late_replies, 1);
        return;
    }
    aos_reply r;
    memset(&r, 0, sizeof r);
    r.status = e->status;
    r.parts_total = e->seq;
    r.parts = o->parts_seen;
    r.retry_after_ms = e->retry_after_ms;
    snprintf(r.error, sizeof r.error, "%s", e->error);
    if (e->payload_len) {
        r.payload = malloc(e->payload_len);
        if (r.payload) {
            memcpy(r.payload, e->payload, e->payload_len);
            r.payload_len = e->payload_len;
        } else {
            r.status = AOS_ERR_NOMEM;
            snprintf(r.error, sizeof r.error, "no memory for a %zu byte reply from %s",
                     e->payload_len, o->method);
        }
    }
    outreq_complete(o, &r);
}

/* Build, register and send one outbound request; o is filled in by the caller but for
 * its id and deadline. */
static aos_err outreq_send(srv *s, const srv_call *parent, const char *method,
                           const void *payload, size_t len, uint32_t timeout_ms, outreq *o,
                           char *why, size_t whylen)
{
    if (!method || !aos_method_valid(method, strlen(method))) {
        snprintf(why, whylen, "invalid method name for an outbound request");
        return AOS_ERR_USAGE;
    }
    if (len > FINAL_MAX || (len && !payload)) {
        snprintf(why, whylen, "%s: a payload of %zu bytes is over the message cap", method,
                 len);
        return len > FINAL_MAX ? AOS_ERR_TOO_BIG : AOS_ERR_USAGE;
    }
    uint64_t now = aos_now_ms(), pdl = parent ? parent->env.deadline_ms : 0;
    if (pdl && pdl <= now) {
        snprintf(why, whylen, "%s: the deadline of %s has passed", method, parent->env.method);
        return AOS_ERR_TIMEOUT;
    }
    uint64_t dl = timeout_ms ? now + timeout_ms : pdl ? pdl : now + OUTREQ_DEFAULT_MS;
    if (pdl && dl > pdl)
        dl = pdl;
    aos_env e;
    aos_env_init(&e, AOS_KIND_REQUEST);
    aos_id_random(e.request_id);
    e.has_request_id = 1;
    snprintf(e.method, sizeof e.method, "%s", method);
    e.deadline_ms = dl;
    e.payload = payload;
    e.payload_len = len;
    if (o->has_key_hash) {
        e.has_key_hash = 1;
        memcpy(e.key_hash, o->key_hash, AOS_KEY_HASH_LEN);
    }
    if (parent) {
        e.link_id = atomic_load(&parent->target);
        /* the work is the parent's: its audit records belong to the same run and step */
        memcpy(e.run_id, parent->env.run_id, sizeof e.run_id);
        e.step = parent->env.step;
        if (parent->env.has_trace) {
            e.has_trace = 1;
            memcpy(e.trace_id, parent->env.trace_id, AOS_ID_LEN);
            memcpy(e.span_id, parent->env.span_id, AOS_SPAN_LEN);
        }
    }
    nng_msg *m;
    aos_err rc = aos_env_encode(&e, &m);
    if (rc) {
        snprintf(why, whylen, "%s: cannot encode the request", method);
        return rc;
    }
    memcpy(o->id, e.request_id, AOS_ID_LEN);
    if (o->id_out) /* before the push: the reply may complete (and free) o at once */
        memcpy(o->id_out, o->id, AOS_ID_LEN);
    o->deadline_ms = dl;
    snprintf(o->method, sizeof o->method, "%s", method);
    if (o->w) {
        memcpy(o->w->id, o->id, AOS_ID_LEN);
        o->w->deadline_ms = dl;
    }
    pthread_mutex_lock(&s->rmu);
    if (s->nout >= OUTREQ_MAX) {
        pthread_mutex_unlock(&s->rmu);
        nng_msg_free(m);
        snprintf(why, whylen, "%s: %u outbound requests already wait for replies", method,
                 OUTREQ_MAX);
        return AOS_ERR_UNAVAILABLE;
    }
    size_t b = out_bucket(o->id);
    o->next = s->out_by_id[b];
    s->out_by_id[b] = o;
    s->nout++;
    pthread_mutex_unlock(&s->rmu);
    atomic_fetch_add(&s->out_requests, 1);
    /* registered first: the reply may come back before out_push returns */
    ob_push(s->ob, m, OB_KEEP);
    return AOS_OK;
}

aos_err srv_request_async(srv *s, const srv_call *parent, const char *method,
                          const void *payload, size_t len, uint32_t timeout_ms,
                          void (*done)(void *arg, const aos_reply *r), void *arg)
{
    char why[160];
    if (!done)
        return AOS_ERR_USAGE;
    outreq *o = calloc(1, sizeof *o);
    if (!o)
        return AOS_ERR_NOMEM;
    o->done = done;
    o->arg = arg;
    aos_err rc = outreq_send(s, parent, method, payload, len, timeout_ms, o, why, sizeof why);
    if (rc) {
        aos_debug("outbound request refused: %s", why);
        free(o);
    }
    return rc;
}

aos_err srv_request_front(srv *s, const uint8_t key_hash[AOS_KEY_HASH_LEN],
                          const char *method, const void *payload, size_t len,
                          uint32_t timeout_ms,
                          void (*part)(void *arg, uint32_t seq, const uint8_t *data,
                                       size_t len),
                          void (*done)(void *arg, const aos_reply *r), void *arg,
                          uint8_t id_out[AOS_ID_LEN])
{
    char why[160];
    if (!done || !key_hash)
        return AOS_ERR_USAGE;
    outreq *o = calloc(1, sizeof *o);
    if (!o)
        return AOS_ERR_NOMEM;
    o->done = done;
    o->part = part;
    o->arg = arg;
    o->has_key_hash = 1;
    memcpy(o->key_hash, key_hash, AOS_KEY_HASH_LEN);
    o->id_out = id_out;
    aos_err rc = outreq_send(s, NULL, method, payload, len, timeout_ms, o, why, sizeof why);
    if (rc) {
        aos_debug("outbound request refused: %s", why);
        free(o);
    }
    return rc;
}

void srv_request_cancel(srv *s, const uint8_t id[AOS_ID_LEN])
{
    aos_env e;
    aos_env_init(&e, AOS_KIND_CANCEL);
    memcpy(e.request_id, id, AOS_ID_LEN);
    e.has_request_id = 1;
    nng_msg *m;
    if (aos_env_encode(&e, &m) == AOS_OK)
        ob_push(s->ob, m, OB_DROPPABLE);
}

/* A REPLY_PART of one of our requests: to its part function, under rmu so that the final
 * reply (outreq_take takes rmu) cannot free the request while the part is handed over. */
static void on_reply_part(srv *s, const aos_env *e)
{
    outreq *ready = NULL;
    pthread_mutex_lock(&s->rmu);
    outreq **pp = &s->out_by_id[out_bucket(e->request_id)];
    while (*pp && memcmp((*pp)->id, e->request_id, AOS_ID_LEN))
        pp = &(*pp)->next;
    outreq *o = *pp;
    if (o && o->part) {
        o->part(o->arg, e->seq, e->payload, e->payload_len);
        o->parts_seen++;
        if (o->final && o->parts_seen >= o->final->parts_total) { /* the last one: done */
            *pp = o->next;
            s->nout--;
            ready = o;
        }
    }
    pthread_mutex_unlock(&s->rmu);
    if (ready) {
        aos_reply r = *ready->final;
        r.parts = ready->parts_seen;
        free(ready->final);
        ready->final = NULL;
        outreq_complete(ready, &r);
    }
}

aos_err srv_request(srv *s, const srv_call *parent, const char *method, const void *payload,
                    size_t len, uint32_t timeout_ms, aos_reply *out)
{
    memset(out, 0, sizeof *out);
    outreq *o = calloc(1, sizeof *o);
    if (!o) {
        out->status = AOS_ERR_NOMEM;
        snprintf(out->error, sizeof out->error, "no memory for an outbound request");
        return AOS_ERR_NOMEM;
    }
    sync_wait w = {.out = out};
    pthread_mutex_init(&w.mu, NULL);
    mt_cond_init(&w.cv);
    o->w = &w;
    aos_err rc = outreq_send(s, parent, method, payload, len, timeout_ms, o, out->error,
                             sizeof out->error);
    if (rc) {
        free(o);
        out->status = rc;
        goto out;
    }
    /* o belongs to whoever completes it now: not touched again here */
    uint64_t dl = w.deadline_ms, now = aos_now_ms();
    /* the tick fails it at its deadline; the margin only guards against a stuck tick */
    struct timespec ts = mt_in_us(((dl > now ? dl - now : 0) + 2000u) * 1000u);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        if (pthread_cond_timedwait(&w.cv, &w.mu, &ts) == ETIMEDOUT)
            break;
    int done = w.done;
    pthread_mutex_unlock(&w.mu);
    if (!done) {
        outreq *mine = outreq_take(s, w.id);
        if (mine) {
            atomic_fetch_add(&s->out_timeouts, 1);
            outreq_fail(mine, AOS_ERR_TIMEOUT, "no reply from %s by its deadline", method);
        }
        /* else someone is completing it right now: wait for that */
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    rc = out->status;
out:
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

/* ---- the deadline tick (the main thread, every TICK_MS) ----------------------------- */

static void tick(srv *s)
{
    static srv_call *due[CALLS_MAX]; /* only the main thread ticks */
    size_t n = 0;
    uint64_t now = aos_now_ms();
    pthread_mutex_lock(&s->cmu);
    for (srv_call *c = s->calls; c; c = c->next) {
        if (atomic_load(&c->cancelled))
            continue;
        for (int i = 0; i < CALL_LINKS; i++) {
            call_link *l = &c->links[i];
            if (!l->used || !l->deadline_ms || now <= l->deadline_ms)
                continue;
            if (c->nlinks > 1) { /* a retry still waits: aosd answered this one itself */
                link_drop(s, c, i);
                continue;
            }
            if (n < CALLS_MAX) {
                call_ref(c);
                due[n++] = c;
            }
            break;
        }
    }
    pthread_mutex_unlock(&s->cmu);
    for (size_t i = 0; i < n; i++) {
        call_cancel(due[i]);
        call_unref(due[i]);
    }

    outreq *late = NULL;
    pthread_mutex_lock(&s->rmu);
    for (size_t b = 0; b < OUTREQ_BUCKETS; b++)
        for (outreq **pp = &s->out_by_id[b]; *pp;) {
            outreq *o = *pp;
            if (now < o->deadline_ms) {
                pp = &o->next;
                continue;
            }
            *pp = o->next;
            s->nout--;
            o->next = late;
            late = o;
        }
    pthread_mutex_unlock(&s->rmu);
    while (late) {
        outreq *o = late;
        late = o->next;
        atomic_fetch_add(&s->out_timeouts, 1);
        outreq_fail(o, AOS_ERR_TIMEOUT, "no reply from %s by its deadline", o->method);
    }
}

/* ---- built-in methods --------------------------------------------------------------- */

static aos_err do_ping(srv *s, const aos_env *req, srv_reply *rep)
{
    Aos__PingRequest *in = aos__ping_request__unpack(NULL, req->payload_len, req->payload);
    if (!in)
        return srv_fail(rep, AOS_ERR_PROTO, "ping: payload is not a PingRequest");
    if (in->data.len > 65536) {
        aos__ping_request__free_unpacked(in, NULL);
        return srv_fail(rep, AOS_ERR_TOO_BIG, "ping: data over 64 KiB");
    }
    Aos__PingReply out = AOS__PING_REPLY__INIT;
    out.data = in->data;
    out.pid = (int32_t)getpid();
    aos_err rc = srv_reply_pb(rep, &out.base);
    aos__ping_request__free_unpacked(in, NULL);
    (void)s;
    return rc;
}

static aos_err do_stats(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)req;
    srv_stats st = {0};
    srv_stat(&st, "pid", getpid(), NULL);
    srv_stat(&st, "uptime_ms", (int64_t)(aos_mono_ms() - s->started_ms), NULL);
    srv_stat(&st, "requests", (int64_t)s->requests, NULL);
    srv_stat(&st, "errors", (int64_t)s->errors, NULL);
    srv_stat(&st, "bad_messages", (int64_t)s->bad_messages, NULL);
    srv_stat(&st, "replays", (int64_t)s->replays, NULL);
    srv_stat(&st, "retries_joined", (int64_t)s->retries_joined,
             "retries that waited for the run in hand");
    srv_stat(&st, "refused", (int64_t)s->refused, "stopping or queue full");
    srv_stat(&st, "cancels", (int64_t)s->cancels, "calls cancelled (CANCEL or deadline)");
    srv_stat(&st, "in_flight", s->in_flight, NULL);
    srv_stat(&st, "workers", s->nworkers, NULL);
    srv_stat(&st, "parts_sent", (int64_t)s->parts_out, NULL);
    srv_stat(&st, "frames_in", (int64_t)s->frames_in, "batch frames received");
    ob_stats os;
    ob_get_stats(s->ob, &os);
    srv_stat(&st, "frames_out", (int64_t)os.frames, "batch frames sent");
    srv_stat(&st, "messages_out", (int64_t)os.msgs, "nng messages sent");
    srv_stat(&st, "outbox_bytes", (int64_t)os.bytes, NULL);
    srv_stat(&st, "outbox_peak_bytes", (int64_t)os.peak, NULL);
    srv_stat(&st, "outbox_waits", (int64_t)os.waits, "parts that waited for room");
    srv_stat(&st, "outbox_dropped", (int64_t)os.dropped, "replies over the hard cap");
    srv_stat(&st, "out_requests", (int64_t)s->out_requests, "requests to other servers");
    srv_stat(&st, "out_timeouts", (int64_t)s->out_timeouts, NULL);
    srv_stat(&st, "late_replies", (int64_t)s->late_replies, NULL);
    if (s->test_hooks)
        hooks_stats(&st);
    if (s->def->schema) {
        char why[256] = "";
        PGconn *c = tls_db ? srv_pg_conn(tls_db, why, sizeof why) : NULL;
        /* a real round trip: libpq may not notice a dead peer until it is used */
        if (c) {
            PGresult *r = PQexec(c, "SELECT 1");
            int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
            if (!ok) {
                srv_pg_check(tls_db);
                c = srv_pg_conn(tls_db, why, sizeof why);
            }
        }
        srv_stat(&st, "pg_connected", c != NULL, c ? "connected" : why);
        /* connections made by all workers, first ones included: a reconnect after a
         * PostgreSQL restart shows as growth here */
        int64_t connects = 0;
        for (int i = 0; i < atomic_load(&s->ndbs) && i < WORKERS_MAX; i++)
            connects += srv_pg_connects(s->dbs[i]);
        srv_stat(&st, "pg_connects", connects, NULL);
        srv_stat(&st, "pg_role", 0, s->def->schema->role);
    }
    if (s->def->add_stats)
        s->def->add_stats(s, &st);
    Aos__StatsReply out = AOS__STATS_REPLY__INIT;
    out.stats = st.items;
    out.n_stats = st.n;
    aos_err rc = srv_reply_pb(rep, &out.base);
    stats_free(&st);
    return rc;
}

/* The built-in methods every server answers, before its own. */
static const srv_method builtins[] = {
    {"ping", do_ping, SRV_INLINE, NULL},
    {"stats", do_stats, 0, NULL}, /* probes the database */
};
static const srv_method *find_in(const srv_method *t, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(op, t[i].op))
            return &t[i];
    return NULL;
}

/* The handler of a request, looked up once: NULL when this server has no such method. */
static const srv_method *lookup(srv *s, const char *method)
{
    size_t nl = strlen(s->def->name);
    if (strncmp(method, s->def->name, nl) || method[nl] != '.')
        return NULL;
    const char *op = method + nl + 1;
    const srv_method *m = find_in(builtins, sizeof builtins / sizeof builtins[0], op);
    if (!m && s->test_hooks) {
        size_t n;
        const srv_method *t = hooks_methods(&n);
        m = find_in(t, n, op);
    }
    return m ? m : find_in(s->def->methods, s->def->n_methods, op);
}

/* ---- running calls ------------------------------------------------------------------ */

/* A srv_fn's call, on a worker or inline: run it (unless already cancelled or late) and
 * send what it returned. */
static void run_sync(srv_call *c)
{
    srv *s = c->s;
    srv_reply rep = {.call = c};
    int status;
    if (atomic_load(&c->cancelled))
        status = srv_fail(&rep, AOS_ERR_CANCELLED, "%s was cancelled before it ran",
                          c->env.method);
    else if (c->env.deadline_ms && aos_now_ms() > c->env.deadline_ms)
        status = srv_fail(&rep, AOS_ERR_TIMEOUT, "deadline passed before %s ran",
                          c->env.method);
    else
        status = c->m->fn(s, &c->env, &rep);
    call_finish(c, status, rep.error, rep.payload, rep.len);
    free(rep.payload);
}

/* Hand a call to the workers (the owner's reference goes with it). */
static void enqueue(srv *s, srv_call *c)
{
    pthread_mutex_lock(&s->mu);
    if (s->queued >= QUEUE_MAX) {
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->refused, 1);
        call_finish(c, AOS_ERR_UNAVAILABLE, "server busy: too many requests queued", NULL, 0);
        return;
    }
    c->qnext = NULL;
    if (s->tail)
        s->tail->qnext = c;
    else
        s->head = c;
    s->tail = c;
    s->queued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* A REQUEST (on a receive thread: never blocks). A retry of a request id in hand waits
 * for that run; one already answered gets the recorded answer; otherwise a new call. */
static void on_request(srv *s, aos_env *e)
{
    atomic_fetch_add(&s->requests, 1);
    if (atomic_load(&s->stopping)) {
        atomic_fetch_add(&s->refused, 1);
        reply_env(s, e, AOS_ERR_UNAVAILABLE, "server is stopping", NULL, 0, 0);
        return;
    }
    const srv_method *m = lookup(s, e->method);
    int status = 0;
    char err[AOS_ERRMSG_MAX + 1];
    uint8_t *pl = NULL;
    size_t pll = 0;
    uint32_t parts = 0;
    const char *refuse = NULL;

    pthread_mutex_lock(&s->cmu);
    srv_call *run = rid_find(s, e->request_id);
    if (run) {
        int ok = link_add(s, run, e->link_id, e->deadline_ms);
        pthread_mutex_unlock(&s->cmu);
        if (ok)
            atomic_fetch_add(&s->retries_joined, 1);
        else
            reply_env(s, e, AOS_ERR_UNAVAILABLE, "too many retries wait for this request "
                      "in hand", NULL, 0, 0);
        return;
    }
    if (s->ncalls >= CALLS_MAX) {
        pthread_mutex_unlock(&s->cmu);
        atomic_fetch_add(&s->refused, 1);
        reply_env(s, e, AOS_ERR_UNAVAILABLE, "server busy: too many requests in hand",
                  NULL, 0, 0);
        return;
    }
    int seen = idem_begin(s->idem, e->request_id, &status, err, sizeof err, &pl, &pll, &parts);
    srv_call *c = NULL;
    int early = 0;
    if (seen == IDEM_NEW) {
        c = call_new(s, m, e);
        if (c) {
            call_insert(s, c);
            atomic_fetch_add(&s->in_flight, 1);
            early = c->env.link_id && early_cancelled(s, c->env.link_id);
        } else {
            idem_end(s->idem, e->request_id, AOS_ERR_UNAVAILABLE, NULL, NULL, 0, 0);
            refuse = "server out of memory";
        }
    } else if (seen == IDEM_RUNNING) {
        refuse = "request in hand but not found"; /* cannot be: both change under cmu */
    }
    pthread_mutex_unlock(&s->cmu);

    if (seen == IDEM_DONE) {
        atomic_fetch_add(&s->replays, 1);
        reply_env(s, e, status, err, pl, pll, parts);
        free(pl);
        return;
    }
    if (refuse) {
        reply_env(s, e, AOS_ERR_UNAVAILABLE, refuse, NULL, 0, 0);
        return;
    }
    if (early) /* its CANCEL came first, on another receiver */
        atomic_store(&c->cancelled, 1);
    if (!m) { /* answered here: nothing to wait for */
        char why[160];
        snprintf(why, sizeof why, "method %s is not served by %s", c->env.method,
                 s->def->name);
        call_finish(c, AOS_ERR_NOT_FOUND, why, NULL, 0);
    } else if (m->afn) {
        if (c->env.deadline_ms && aos_now_ms() > c->env.deadline_ms)
            call_finish(c, AOS_ERR_TIMEOUT, "deadline passed before it ran", NULL, 0);
        else if (atomic_load(&c->cancelled))
            call_finish(c, AOS_ERR_CANCELLED, "cancelled before it ran", NULL, 0);
        else
            m->afn(s, c);
    } else if (m->flags & SRV_INLINE) {
        run_sync(c);
    } else {
        enqueue(s, c);
    }
}

/* A CANCEL: stop the call on that link, or, when a retry waits on the same run, only stop
 * answering this link. One that overtook its request is remembered for it. */
static void on_cancel(srv *s, uint64_t link_id)
{
    if (!link_id)
        return;
    pthread_mutex_lock(&s->cmu);
    call_link *l = link_find(s, link_id);
    srv_call *c = l ? l->c : NULL;
    if (!c) {
        s->early[s->early_next++ % EARLY_CANCELS] = link_id;
    } else if (c->nlinks > 1) {
        link_drop(s, c, (int)(l - c->links));
        c = NULL;
    } else {
        call_ref(c);
    }
    pthread_mutex_unlock(&s->cmu);
    if (c) {
        call_cancel(c);
        call_unref(c);
    }
}

/* STOP: refuse new work, let requests in hand finish (async ones too, with the tick still
 * cancelling the overdue), flush the outbox, then leave. aosd re-sends anything
 * unanswered to the next incarnation. */
static void stop_now(srv *s)
{
    uint64_t t0 = aos_mono_ms(), last = t0;
    while (atomic_load(&s->in_flight) > 0 && aos_mono_ms() - t0 < STOP_DRAIN_MS) {
        nng_msleep(1);
        if (aos_mono_ms() - last >= TICK_MS) {
            tick(s);
            last = aos_mono_ms();
        }
    }
    for (uint64_t t1 = aos_mono_ms(); aos_mono_ms() - t1 < STOP_FLUSH_MS;) {
        if (ob_idle(s->ob))
            break;
        nng_msleep(1);
    }
    if (s->def->close)
        s->def->close(s);
    nng_msleep(20); /* nng has no linger: give the last message a moment on the wire */
    aos_debug("stopped");
    _exit(0);
}

static void on_env(srv *s, aos_env *e)
{
    switch (e->kind) {
    case AOS_KIND_HEARTBEAT:
        send_env(s, e, OB_DROPPABLE); /* echoed as is: proves the receive path is alive */
        break;
    case AOS_KIND_STOP:
        atomic_store(&s->stopping, 1);
        pthread_mutex_lock(&s->mu);
        s->stop_asked = 1;
        pthread_cond_signal(&s->stop_cv);
        pthread_mutex_unlock(&s->mu);
        break;
    case AOS_KIND_CANCEL:
        on_cancel(s, e->link_id);
        break;
    case AOS_KIND_REQUEST:
        on_request(s, e);
        break;
    case AOS_KIND_REPLY:
        on_reply(s, e);
        break;
    case AOS_KIND_REPLY_PART:
        if (e->has_request_id) /* only aos-api's front calls ask for parts */
            on_reply_part(s, e);
        break;
    default:
        atomic_fetch_add(&s->bad_messages, 1);
        aos_warn("unexpected envelope kind %d from aosd", e->kind);
        break;
    }
}

static void take_one(srv *s, const uint8_t *buf, size_t len)
{
    aos_env e;
    char why[160];
    if (aos_env_decode(buf, len, &e, why, sizeof why) != AOS_OK) {
        /* aosd validates before forwarding, so this is a broken peer: count and drop */
        atomic_fetch_add(&s->bad_messages, 1);
        aos_warn("malformed envelope from aosd: %s", why);
        return;
    }
    on_env(s, &e);
    aos_env_clear(&e);
}

/* One message off the link, on an nng thread: never block here. A batch frame is checked
 * whole before any of it is served, so a malformed one is dropped whole. */
static void handle(srv *s, nng_msg *msg)
{
    const uint8_t *buf = nng_msg_body(msg);
    size_t len = nng_msg_len(msg);
    if (!aos_batch_is(buf, len)) {
        take_one(s, buf, len);
        nng_msg_free(msg);
        return;
    }
    size_t off = 0, rl, n = 0;
    const uint8_t *rec;
    char why[128] = "";
    aos_err rc;
    while ((rc = aos_batch_next(buf, len, &off, &rec, &rl, why, sizeof why)) == AOS_OK)
        if (++n > AOS_BATCH_MAX) {
            snprintf(why, sizeof why, "over %u records", AOS_BATCH_MAX);
            rc = AOS_ERR_PROTO;
            break;
        }
    if (rc != AOS_ERR_NOT_FOUND) {
        atomic_fetch_add(&s->bad_messages, 1);
        aos_warn("malformed batch frame from aosd (%s): dropped", why);
        nng_msg_free(msg);
        return;
    }
    atomic_fetch_add(&s->frames_in, 1);
    off = 0;
    while (aos_batch_next(buf, len, &off, &rec, &rl, NULL, 0) == AOS_OK)
        take_one(s, rec, rl);
    nng_msg_free(msg);
}

static void on_receive(void *arg)
{
    receiver *r = arg;
    int rv = nng_aio_result(r->aio);
    if (rv == NNG_ECLOSED)
        _exit(0);
    if (rv == 0)
        handle(r->s, nng_aio_get_msg(r->aio));
    nng_recv_aio(r->s->sock, r->aio);
}

static void open_db(srv *s)
{
    char why[256];
    if (!s->def->schema)
        return;
    if (srv_pg_open(s->pg_dsn, &tls_db, why, sizeof why) != AOS_OK) {
        aos_error("database: %s", why);
        return;
    }
    int i = atomic_fetch_add(&s->ndbs, 1);
    if (i < WORKERS_MAX)
        s->dbs[i] = tls_db;
    if (!srv_pg_conn(tls_db, why, sizeof why))
        aos_warn("database not reachable yet: %s", why);
}

static void *worker_main(void *arg)
{
    srv *s = arg;
    /* no database connection before the privilege drop: as root we would be refused (peer
     * authentication maps root to no server's role), and should be */
    pthread_mutex_lock(&s->mu);
    while (!s->sandboxed)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    open_db(s);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head)
            pthread_cond_wait(&s->cv, &s->mu);
        srv_call *c = s->head;
        s->head = c->qnext;
        if (!s->head)
            s->tail = NULL;
        s->queued--;
        pthread_mutex_unlock(&s->mu);
        run_sync(c);
    }
    return NULL;
}

/* ---- start-up ----------------------------------------------------------------------- */

#define DSN_MAX 4096
#define EX_TEMPFAIL 75 /* a migrator that could not reach the database: aosd tries again */

/* The link's peer must be aosd itself: the pid that started us, as root or as aosd's own
 * uid. Checked before a single byte of ours goes out; anything else is an impostor on a
 * swapped socket, and we leave rather than talk to it. */
static pid_t link_parent;
static uid_t link_uid;

static void on_link_add(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)ev; (void)arg;
    uint64_t uid = UINT64_MAX, pid = 0;
    int r1 = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid);
    int r2 = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid);
    if (r1 || r2 || (uid != 0 && uid != link_uid) || pid != (uint64_t)link_parent) {
        aos_error("the link's peer is not aosd (uid %llu pid %llu; expected uid 0 or %u, "
                  "pid %d): refusing to talk to it", (unsigned long long)uid,
                  (unsigned long long)pid, (unsigned)link_uid, (int)link_parent);
        _exit(1);
    }
}

static void on_link_gone(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p; (void)ev; (void)arg;
    /* aosd went away (or closed the link to get rid of us): no server outlives it */
    _exit(0);
}

/* Every directory from / down to the socket must belong to root or aosd's uid and be
 * writable by no one else (a sticky /tmp is fine: nobody can replace our entries there),
 * so nobody else can have put a socket of theirs where aosd's should be. */
static aos_err check_link_path(const char *url, char *why, size_t whylen)
{
    if (strncmp(url, "ipc://", 6) || url[6] != '/') {
        snprintf(why, whylen, "link %s refused: only ipc:// links to an absolute path "
                 "(a network link needs an authenticated transport, which aos has not yet)",
                 url);
        return AOS_ERR_REFUSED;
    }
    char path[AOS_PATH_MAX];
    if (snprintf(path, sizeof path, "%s", url + 6) >= (int)sizeof path) {
        snprintf(why, whylen, "link path too long");
        return AOS_ERR_USAGE;
    }
    for (char *c = path + 1;; c++) {
        int last = *c == 0;
        if (*c != '/' && !last)
            continue;
        *c = 0;
        struct stat st;
        if (lstat(path, &st) != 0) {
            snprintf(why, whylen, "link path %s: %s", path, strerror(errno));
            return AOS_ERR_UNAVAILABLE;
        }
        int ok_owner = st.st_uid == 0 || st.st_uid == link_uid;
        int ok_type = last ? S_ISSOCK(st.st_mode) : S_ISDIR(st.st_mode);
        int ok_mode = last || !(st.st_mode & 022) || (st.st_mode & S_ISVTX);
        if (!ok_owner || !ok_type || !ok_mode) {
            snprintf(why, whylen, "link path %s is unsafe (uid %u, mode %o): it must be a %s "
                     "owned by root or uid %u that nobody else can write", path,
                     (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                     last ? "socket" : "directory", (unsigned)link_uid);
            return AOS_ERR_REFUSED;
        }
        if (last)
            return AOS_OK;
        *c = '/';
    }
}

/* Read a secret handed over on an inherited fd (a memfd aosd wrote), then close it: the
 * environment would leave it readable in /proc/<pid>/environ for the process's life. */
/* Everything on an inherited fd (a memfd aosd filled: the DSN, the configuration), into a
 * malloc'd buffer the caller owns, NUL-terminated for text; over cap bytes is refused.
 * The fd is closed either way: a secret stays in no fd the server keeps. */
static aos_err read_fd_all(int fd, const char *what, size_t cap, uint8_t **out, size_t *len,
                           char *why, size_t whylen)
{
    size_t n = 0, have = 4096;
    uint8_t *buf = malloc(have);
    aos_err rc = AOS_OK;
    if (!buf) {
        rc = AOS_ERR_NOMEM;
        snprintf(why, whylen, "no memory for the %s", what);
        goto out;
    }
    for (;;) {
        if (n + 1 == have) {
            if (have > cap) {
                rc = AOS_ERR_TOO_BIG;
                snprintf(why, whylen, "the %s on fd %d is over %zu bytes", what, fd, cap);
                goto out;
            }
            uint8_t *b = realloc(buf, have * 2);
            if (!b) {
                rc = AOS_ERR_NOMEM;
                snprintf(why, whylen, "no memory for the %s", what);
                goto out;
            }
            buf = b;
            have *= 2;
        }
        ssize_t r = read(fd, buf + n, have - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = AOS_ERR_IO;
            snprintf(why, whylen, "reading the %s from fd %d: %s", what, fd, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > cap) {
        rc = AOS_ERR_TOO_BIG;
        snprintf(why, whylen, "the %s on fd %d is over %zu bytes", what, fd, cap);
    }
out:
    close(fd);
    if (rc != AOS_OK) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return AOS_OK;
}

/* Where the database is, from the server's DSN: the socket directories to keep visible in
 * its minimal root, and whether it is reached over Unix sockets alone (then the server gets
 * no network at all). libpq's default with no host is Debian's socket directory. */
static void dsn_places(const char *dsn, sbx_opts *so, int *nkeep)
{
    static char dirs[SBX_KEEP_MAX][AOS_PATH_MAX];
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(dsn, &err);
    PQfreemem(err);
    if (!o)
        return; /* libpq will say what is wrong with it when it connects */
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *p = o; p->keyword; p++) {
        if (!strcmp(p->keyword, "host"))
            host = p->val;
        else if (!strcmp(p->keyword, "hostaddr"))
            hostaddr = p->val;
    }
    int local = !(hostaddr && *hostaddr);
    const char *h = host && *host ? host : "/var/run/postgresql";
    while (*h) {
        size_t n = strcspn(h, ",");
        if (h[0] == '/' && n < AOS_PATH_MAX && *nkeep < SBX_KEEP_MAX - 1) {
            memcpy(dirs[*nkeep], h, n);
            dirs[*nkeep][n] = 0;
            so->keep[*nkeep] = dirs[*nkeep];
            (*nkeep)++;
        } else if (h[0] != '/') {
            local = 0;
        }
        h += n + (h[n] == ',');
    }
    so->pg_local = so->pg_local || local;
    PQconninfoFree(o);
}

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s --link URL --name NAME [--user USER] [--group-of USER] [--dsn-fd N] "
                    "[--config-fd N] [--pg-local] [--keep PATH]... [--dir PATH] [--test-hooks]\n"
                    "       %s --migrate --name NAME --dsn-fd N [--user USER]\n"
                    "(servers are started by aosd, not by hand)\n", prog, prog);
    return 2;
}

/* One-shot: apply the schema's migrations with the admin DSN, then exit. aosd runs this
 * as PostgreSQL's own uid before the server's first start; servers never migrate. */
static int migrate_main(const srv_def *def, const char *dsn, const char *user, int why_fd)
{
    char why[512] = "";
    if (user && geteuid() == 0 && sbx_drop_to(user, why, sizeof why) != AOS_OK) {
        aos_error("migrator: %s", why);
        return 1;
    }
    if (!def->schema) {
        aos_info("no schema to migrate");
        return 0;
    }
    aos_err e = srv_pg_migrate(dsn, def->schema, why, sizeof why);
    if (e == AOS_OK)
        return 0;
    aos_error("migrations of schema %s: %s", def->schema->schema, why);
    if (e == AOS_ERR_REFUSED) {
        /* aosd shows it in its status and does not start this server again */
        if (why_fd > 2 && write(why_fd, why, strlen(why)) < 0)
            aos_warn("cannot tell aosd why: %s", strerror(errno));
        return AOS_SRV_EXIT_REFUSED;
    }
    return e == AOS_ERR_UNAVAILABLE ? EX_TEMPFAIL : 1;
}

static void send_ready(srv *s, const sbx_report *r)
{
    Aos__SandboxReport m = AOS__SANDBOX_REPORT__INIT;
    m.root = (char *)r->root;
    m.mount_ns = r->mount_ns;
    m.net_ns = r->net_ns;
    m.user_ns = r->user_ns;
    m.proc = r->proc;
    m.inet = r->inet;
    m.rlimit_as = r->rlimit_as;
    m.rlimit_nproc = r->rlimit_nproc;
    m.rlimit_memlock = r->rlimit_memlock;
    m.notes = (char *)r->notes;
    uint8_t buf[1024];
    aos_env ready;
    aos_env_init(&ready, AOS_KIND_READY);
    snprintf(ready.method, sizeof ready.method, "%s.ready", s->def->name);
    if (aos__sandbox_report__get_packed_size(&m) <= sizeof buf) {
        ready.payload = buf;
        ready.payload_len = aos__sandbox_report__pack(&m, buf);
    }
    send_env(s, &ready, OB_KEEP);
}

int srv_main(const srv_def *def, int argc, char **argv)
{
    static char prog[64];
    snprintf(prog, sizeof prog, "aos-%s", def->name);
    aos_log_init(prog);
    /* a pipe write to a dead peer must be an error, not a silent death */
    signal(SIGPIPE, SIG_IGN);
    /* glibc loads the time zone on the first gmtime_r (aos_log's): do it now, while files
     * may be read. After the sandbox a sanitized build may open /etc/localtime but not
     * lseek it, and the first warning a server logs killed it with SIGSYS. */
    tzset();

    const char *link = NULL, *name = NULL, *own_dir = NULL, *workspaces = NULL;
    int test_hooks = 0, migrate = 0, dsn_fd = -1, config_fd = -1, nkeep = 0, why_fd = -1;
    sbx_opts so = {.name = def->name};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--link") && i + 1 < argc)
            link = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else if (!strcmp(argv[i], "--user") && i + 1 < argc)
            so.user = argv[++i];
        else if (!strcmp(argv[i], "--group-of") && i + 1 < argc)
            so.group_of = argv[++i];
        else if (!strcmp(argv[i], "--dsn-fd") && i + 1 < argc)
            dsn_fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--why-fd") && i + 1 < argc)
            why_fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--config-fd") && i + 1 < argc)
            config_fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc && nkeep < SBX_KEEP_MAX - 1)
            so.keep[nkeep++] = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc && nkeep < SBX_KEEP_MAX - 1 &&
                 argv[i + 1][0] == '/')
            so.keep[nkeep++] = own_dir = argv[++i]; /* stays writable in the sandbox */
        else if (!strcmp(argv[i], "--workspaces") && i + 1 < argc &&
                 nkeep < SBX_KEEP_MAX - 1 && argv[i + 1][0] == '/')
            so.keep[nkeep++] = workspaces = argv[++i];
        else if (!strcmp(argv[i], "--pg-local"))
            so.pg_local = 1;
        else if (!strcmp(argv[i], "--migrate"))
            migrate = 1;
        else if (!strcmp(argv[i], "--test-hooks"))
            test_hooks = 1;
        else
            return usage(argv[0]);
    }
    if (!name || strcmp(name, def->name) || (!migrate && !link) || (migrate && dsn_fd < 0) ||
        (dsn_fd >= 0 && dsn_fd <= 2) || (config_fd >= 0 && config_fd <= 2))
        return usage(argv[0]);

    char why[512] = "";
    static char dsn[DSN_MAX];
    if (dsn_fd > 0) {
        uint8_t *d = NULL;
        size_t dlen = 0;
        if (read_fd_all(dsn_fd, "DSN", sizeof dsn - 1, &d, &dlen, why, sizeof why) != AOS_OK) {
            aos_error("%s", why);
            return 1;
        }
        memcpy(dsn, d, dlen + 1);
        explicit_bzero(d, dlen);
        free(d);
    }
    uint8_t *config = NULL;
    size_t config_len = 0;
    if (config_fd > 0 && read_fd_all(config_fd, "configuration", SRV_CONFIG_MAX, &config,
                                     &config_len, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        return 1;
    }
    if (migrate)
        return migrate_main(def, dsn, so.user, why_fd);

    for (size_t i = 0; i < def->n_methods; i++)
        if (!def->methods[i].fn == !def->methods[i].afn) {
            aos_error("method %s.%s needs exactly one of fn and afn", def->name,
                      def->methods[i].op);
            return 1;
        }
    static srv S;
    srv *s = &S;
    s->def = def;
    s->test_hooks = test_hooks;
    s->own_dir = own_dir;
    s->workspaces = workspaces;
    s->config = config;
    s->config_len = config_len;
    s->started_ms = aos_mono_ms();
    s->idem = idem_new(IDEM_SLOTS, IDEM_PAYLOAD_CAP);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    mt_cond_init(&s->stop_cv);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    if (!s->idem) {
        aos_error("no memory for the replay table");
        return 1;
    }
    if (def->schema) {
        if (!dsn[0]) {
            aos_error("no DSN on --dsn-fd: %s needs a database", prog);
            return 1;
        }
        s->pg_dsn = dsn;
        dsn_places(dsn, &so, &nkeep);
    }
    link_parent = so.parent = getppid();
    link_uid = getuid();
    int rv;

    /* 1. the link's path, then the namespaces and the minimal root while we are still
     * one thread (nng starts its threads on the first socket) */
    if (check_link_path(link, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        return 1;
    }
    sbx_report rep = {0};
    const char *profile = def->sandbox_profile ? def->sandbox_profile(s) : NULL;
    if (profile)
        so.name = profile;
    if (sbx_enter(&so, &rep, why, sizeof why) != AOS_OK) {
        aos_error("sandbox: %s", why);
        return 1;
    }

    /* 2. the link to aosd: early, so a dead link ends us whatever happens next */
    if ((rv = nng_pair1_open(&s->sock)) != 0 ||
        (rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0 ||
        /* 0: a send completes when the pipe takes the message (see the outbox) */
        (rv = nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, 0)) != 0 ||
        (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_PRE, on_link_add, s)) != 0 ||
        (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, on_link_gone, s)) != 0 ||
        (rv = nng_dial(s->sock, link, NULL, 0)) != 0) {
        aos_error("cannot link to aosd at %s: %s", link, nng_strerror(rv));
        return 1;
    }
    if (ob_new(s->sock, &s->ob) != AOS_OK) {
        aos_error("no memory for the outbox");
        return 1;
    }

    /* 3. the server's own resources */
    if (def->open && def->open(s, why, sizeof why) != AOS_OK) {
        aos_error("open: %s", why);
        return 1;
    }

    /* 4. threads (before the sandbox: clone is not in the allow-lists once it is on):
     * workers, which take requests only once the receivers start, after the sandbox; the
     * test hooks' pacer; nng's own, started with the socket. The main thread becomes the
     * deadline tick. def->open started the server's own. */
    s->nworkers = def->workers ? def->workers : 4;
    const char *w = getenv("AOS_WORKERS");
    if (w && atoi(w) > 0)
        s->nworkers = (unsigned)atoi(w);
    if (s->nworkers > WORKERS_MAX)
        s->nworkers = WORKERS_MAX;
    for (unsigned i = 0; i < s->nworkers; i++)
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            aos_error("cannot start worker %u", i);
            return 1;
        }
    if (s->test_hooks && hooks_start(why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        return 1;
    }

    /* 5. privileges, rlimits, no_new_privs, seccomp */
    if (sbx_apply(&so, &rep, why, sizeof why) != AOS_OK) {
        aos_error("sandbox: %s", why);
        return 1;
    }

    pthread_mutex_lock(&s->mu);
    s->sandboxed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);

    /* 6. READY: aosd marks us running and re-sends what was in flight */
    send_ready(s, &rep);
    aos_debug("ready");

    /* 7. serve: receivers on nng's threads; this thread ticks until STOP */
    for (int i = 0; i < RECEIVERS; i++) {
        s->rx[i].s = s;
        if ((rv = nng_aio_alloc(&s->rx[i].aio, on_receive, &s->rx[i])) != 0) {
            aos_error("receive: %s", nng_strerror(rv));
            _exit(1);
        }
        nng_recv_aio(s->sock, s->rx[i].aio);
    }
    for (;;) {
        pthread_mutex_lock(&s->mu);
        if (!s->stop_asked) {
            struct timespec ts = mt_in_us(TICK_MS * 1000u);
            pthread_cond_timedwait(&s->stop_cv, &s->mu, &ts);
        }
        int stop = s->stop_asked;
        pthread_mutex_unlock(&s->mu);
        tick(s);
        if (stop)
            break;
    }
    stop_now(s);
    return 0;
}
