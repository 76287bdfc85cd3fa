/* Routing: the control socket's pool of REP contexts, and requests servers make on their
 * links; each is looked up in the method table, answered by the kernel or forwarded. */
#include "route.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <jansson.h>
#include <sodium.h>

#include "agents.h"
#include "aos.pb-c.h"
#include "aos/envelope.h"
#include "aos/log.h"
#include "audit.h"
#include "diskguard.h"
#include "keys.h"
#include "link.h"
#include "listen.h"
#include "llm.pb-c.h"
#include "llmq.h"
#include "methods.h"
#include "supervise.h"

#define ROUTE_CTX 1024                  /* requests in flight on the control socket: a stream
                                         * waiting for its next part holds one (500 agents
                                         * streaming from the LLM at once) */
#define ROUTE_AGENT_CTX 2048            /* on the agent socket: an idle agent holds one
                                         * (its kernel.agent.wait), 1,000 agents and their
                                         * calls */
#define DEFAULT_DEADLINE_MS 30000u
#define MAX_DEADLINE_MS (10u * 60u * 1000u)
/* Bounds of the control socket (see listen.h for what nng 1.5.2 bounds by itself). Only
 * root or aosd's own uid gets past ADD_PRE, so the caps are against a runaway admin client,
 * not against other users: room for the benchmarks' 64 clients many times over. */
#define ROUTE_MAX_PIPES 1024u
#define ROUTE_MAX_SILENT 128u           /* connected, nothing sent yet */
#define ROUTE_SILENT_MS 10000u          /* a pipe's first request must come within this:
                                         * libaos's REQ dialer redials a pipe closed for
                                         * idling, so an idle client only reconnects */
/* Streamed replies wait in aosd until their reader pulls them (README, "Streamed
 * replies"). A reader that lags past these caps fails its request and the server is told
 * to stop: aosd never buffers without bound for a slow reader. */
#define HOLD_PER_CALL (8u << 20)
#define HOLD_PER_CONN (32u << 20)
#define HOLD_ALL (256u << 20)
#define CHUNK_MAX (AOS_MSG_MAX - (64u << 10)) /* parts in one answer to a pull */
#define STREAM_IDLE_MS 30000u           /* a finished stream nobody pulls any more */
#define STREAM_BUCKETS 1024u

typedef struct rctx {
    route *r;
    nng_ctx ctx;
    nng_aio *aio;
    int sending;
    int agent;               /* a context of the agent socket */
} rctx;

typedef struct part {
    struct part *next;
    uint32_t seq;
    size_t len;
    uint8_t data[];
} part;

/* A connection's share of what aosd holds for its streams. */
typedef struct pconn {
    uint32_t pipe;
    size_t held;
    unsigned calls;
    struct pconn *next;
} pconn;

/* One forwarded request, from the control socket or from a server's link. Lives from the
 * forward until its final answer was handed on (or it was cancelled): the link calls
 * on_part/on_done until done, then never again; everything else is under r->mu. */
typedef struct rcall {
    route *r;
    rctx *waiter;            /* the context that answers this call next; NULL: none waits */
    aos_env hdr;             /* its ids, for answers aosd writes (no payload) */
    uint32_t pipe;           /* the client's connection (0: a server's call) */
    pconn *conn;
    klink *l;                /* where it went */
    uint64_t link_id;
    klink *caller;           /* a server's call: the link its answer goes back on */
    int streaming;           /* a part came: in the stream table, found by pulls */
    int finished;            /* the link's done came; the final answer is below */
    int cancelled;
    int final_status;
    char final_err[AOS_ERRMSG_MAX + 1];
    nng_msg *final_msg;      /* the server's REPLY as it came, or NULL */
    part *parts;             /* held, in seq order */
    uint32_t next_out;       /* the index of the next part for the reader */
    size_t held;
    uint64_t touched;        /* monotonic ms of the last pull */
    /* the audit: a recorded call's BEGIN may have to be durable before it is forwarded
     * (then the request waits here, payload copied), its END before the final answer */
    int audited, ended, end_wait, has_parent;
    int own_err; /* the error is aosd's own word (the scheduler's): it goes in the record */
    uint8_t parent_span[AOS_SPAN_LEN]; /* a server's call: the span of the call it serves */
    uint64_t t0_us;
    link_fwd f;
    uint8_t *payload;        /* the request's payload while it waits for its record, and
                              * an LLM call's for its life (a 429 sends it again) */
    size_t payload_len;
    int llm;                 /* the LLM class: the scheduler admits it */
    llmq_ticket *si;         /* its place in the scheduler: llmq's to read and write */
    int from_agent;          /* an agent's syscall: agents_call is told when it ends */
    int detached;            /* its agent's connection closed while it ran: a durable step's
                              * LLM call runs on so the reply is kept for the step's replay
                              * (aos-llm answers the re-issued request id with it); its parts
                              * are dropped, nobody reads them */
    km_class cls;
    nng_msg *pend_reply;     /* the final answer while its END record is written */
    int pend_status;
    char pend_err[AOS_ERRMSG_MAX + 1];
    struct rcall *prev, *next, *hnext;
} rcall;

/* A kernel method's pending answer: the context it goes out on, the request's ids. */
struct kreply {
    rctx *w;                 /* the context the answer goes out on, or NULL: */
    klink *link;             /* a server's link (aos-api's front calls) */
    aos_env hdr;
    uint64_t deadline;
};

struct route {
    nng_socket sock;
    lsn *lst;
    rctx ctxs[ROUTE_CTX];
    nng_socket asock;        /* the agents' socket (route_open_agents) */
    lsn *alst;
    rctx *actxs;             /* ROUTE_AGENT_CTX of them, or NULL */
    atomic_ullong bad, routed;
    atomic_int closing;
    pthread_mutex_t mu;
    rcall *calls;            /* every call in flight */
    rcall *streams[STREAM_BUCKETS];
    pconn *conns;
    size_t held;
};

/* Requests routed, by method class (kernel.metrics). */
static atomic_ullong routed_by_class[5];

void route_class_counts(uint64_t out[5])
{
    for (int i = 0; i < 5; i++)
        out[i] = atomic_load(&routed_by_class[i]);
}

/* ---- answering on a context ---------------------------------------------------------- */

static void arm_recv(rctx *c)
{
    c->sending = 0;
    nng_ctx_recv(c->ctx, c->aio);
}

/* Non-blocking (the aio completes on an nng thread), so it may run under r->mu. */
static void send_msg(rctx *c, nng_msg *m)
{
    c->sending = 1;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

static void answer(rctx *c, const aos_env *req, int kind, int status, const char *err,
                   uint32_t seq, const uint8_t *payload, size_t len)
{
    aos_env rep;
    nng_msg *m;
    if (req)
        aos_env_reply_to(&rep, req, status, err ? "%s" : NULL, err);
    else { /* nothing usable came in: an anonymous error reply */
        aos_env_init(&rep, AOS_KIND_REPLY);
        rep.status = status;
        snprintf(rep.error, sizeof rep.error, "%s", err ? err : "");
    }
    rep.kind = kind;
    rep.seq = seq;
    rep.link_id = 0;
    rep.payload = payload;
    rep.payload_len = len;
    if (aos_env_encode(&rep, &m) != AOS_OK) {
        arm_recv(c);
        return;
    }
    send_msg(c, m);
}

/* ---- calls and streams (r->mu held) ---------------------------------------------------- */

static unsigned bucket(const uint8_t id[AOS_ID_LEN])
{
    unsigned h;
    memcpy(&h, id, sizeof h); /* a random id: any four bytes hash it */
    return h % STREAM_BUCKETS;
}

static rcall *stream_find(route *r, const uint8_t id[AOS_ID_LEN], uint32_t pipe)
{
    rcall *any = NULL;
    for (rcall *c = r->streams[bucket(id)]; c; c = c->hnext)
        if (!memcmp(c->hdr.request_id, id, AOS_ID_LEN)) {
            if (c->pipe == pipe)
                return c;
            any = c;
        }
    return any;
}

static pconn *conn_of(route *r, uint32_t pipe)
{
    for (pconn *p = r->conns; p; p = p->next)
        if (p->pipe == pipe)
            return p;
    pconn *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pipe = pipe;
    p->next = r->conns;
    r->conns = p;
    return p;
}

static void conn_put(route *r, pconn *p)
{
    if (!p || --p->calls)
        return;
    for (pconn **pp = &r->conns; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            free(p);
            return;
        }
}

static void drop_parts(route *r, rcall *c)
{
    for (part *p = c->parts, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    c->parts = NULL;
    r->held -= c->held;
    if (c->conn)
        c->conn->held -= c->held;
    c->held = 0;
}

/* The call leaves the router. The link is done with it (finished), or never had it. */
static void call_free(route *r, rcall *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->streaming)
        for (rcall **pp = &r->streams[bucket(c->hdr.request_id)]; *pp; pp = &(*pp)->hnext)
            if (*pp == c) {
                *pp = c->hnext;
                break;
            }
    drop_parts(r, c);
    conn_put(r, c->conn);
    if (c->final_msg)
        nng_msg_free(c->final_msg);
    free(c->payload);
    free(c);
}

/* The next answer for the context waiting on c, if there is one to give: parts in order
 * from next_out, else the final answer (then c is freed). */
static void flush(route *r, rcall *c)
{
    rctx *w = c->waiter;
    if (!w)
        return;
    size_t bytes = 0, n = 0;
    for (part *p = c->parts; p && p->seq == c->next_out + n; p = p->next) {
        if (n && bytes + p->len + 16 > CHUNK_MAX)
            break;
        bytes += p->len + 16;
        n++;
    }
    if (n) {
        ProtobufCBinaryData *bins = calloc(n, sizeof *bins);
        if (!bins)
            return; /* tried again at the next part or the final */
        part *p = c->parts;
        for (size_t i = 0; i < n; i++, p = p->next)
            bins[i] = (ProtobufCBinaryData){.len = p->len, .data = p->data};
        Aos__StreamChunk ch = AOS__STREAM_CHUNK__INIT;
        ch.first_seq = c->next_out;
        ch.n_parts = n;
        ch.parts = bins;
        size_t plen = aos__stream_chunk__get_packed_size(&ch);
        uint8_t *pl = malloc(plen ? plen : 1);
        if (!pl) {
            free(bins);
            return;
        }
        aos__stream_chunk__pack(&ch, pl);
        free(bins);
        c->waiter = NULL;
        answer(w, &c->hdr, AOS_KIND_REPLY_PART, AOS_OK, NULL, c->next_out, pl, plen);
        free(pl);
        for (size_t i = 0; i < n; i++) {
            part *q = c->parts;
            c->parts = q->next;
            c->held -= q->len;
            r->held -= q->len;
            if (c->conn)
                c->conn->held -= q->len;
            free(q);
        }
        c->next_out += (uint32_t)n;
        return;
    }
    if (!c->finished)
        return;
    /* parts that never came (a gap) are not waited for: the final's seq tells the reader */
    c->waiter = NULL;
    if (c->final_msg) { /* the server's bytes as they are: validated by the link already */
        send_msg(w, c->final_msg);
        c->final_msg = NULL;
    } else {
        answer(w, &c->hdr, AOS_KIND_REPLY, c->final_status,
               c->final_err[0] ? c->final_err : NULL, c->next_out, NULL, 0);
    }
    call_free(r, c);
}

/* ---- the link's callbacks ---------------------------------------------------------- */

static aos_err on_part(void *arg, uint32_t seq, const uint8_t *data, size_t len, char *why,
                       size_t whylen)
{
    rcall *c = arg;
    route *r = c->r;
    aos_err rc = AOS_OK;
    pthread_mutex_lock(&r->mu);
    if (!c->streaming && !c->conn && c->pipe) {
        /* the connection's share is counted from its first part on: most calls never
         * stream, and the routed path should not pay for a lookup it does not need */
        c->conn = conn_of(r, c->pipe);
        if (c->conn)
            c->conn->calls++;
    }
    if (c->cancelled) {
        snprintf(why, whylen, "cancelled");
        rc = AOS_ERR_CANCELLED;
    } else if (c->detached) {
        /* nobody reads them: only the final reply matters (kept by aos-llm) */
    } else if (seq < c->next_out) {
        snprintf(why, whylen, "part %u came twice", seq);
        rc = AOS_ERR_PROTO;
    } else if (c->held + len > HOLD_PER_CALL || (c->conn && c->conn->held + len >
                                                  HOLD_PER_CONN) || r->held + len > HOLD_ALL) {
        snprintf(why, whylen, "the reader fell behind: %u parts (%zu bytes) of this stream "
                 "waited in aosd, over its cap (%u MiB per request, %u MiB per connection, "
                 "%u MiB in all); the server was told to stop", seq - c->next_out, c->held,
                 HOLD_PER_CALL >> 20, HOLD_PER_CONN >> 20, HOLD_ALL >> 20);
        drop_parts(r, c);
        rc = AOS_ERR_QUOTA;
    } else {
        part *p = malloc(sizeof *p + len);
        if (!p) {
            snprintf(why, whylen, "aosd has no memory for a part of %zu bytes", len);
            rc = AOS_ERR_NOMEM;
        } else {
            p->seq = seq;
            p->len = len;
            if (len)
                memcpy(p->data, data, len);
            part **pp = &c->parts; /* in order: receivers may pass each other */
            while (*pp && (*pp)->seq < seq)
                pp = &(*pp)->next;
            if (*pp && (*pp)->seq == seq) {
                free(p);
                snprintf(why, whylen, "part %u came twice", seq);
                rc = AOS_ERR_PROTO;
            } else {
                p->next = *pp;
                *pp = p;
                c->held += len;
                r->held += len;
                if (c->conn)
                    c->conn->held += len;
                if (!c->streaming) {
                    c->streaming = 1;
                    c->touched = aos_mono_ms();
                    unsigned b = bucket(c->hdr.request_id);
                    c->hnext = r->streams[b];
                    r->streams[b] = c;
                }
                flush(r, c);
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* A part of the answer to aos-api's front-door call: on to aos-api at once, which streams
 * it to its HTTP client. The link's outbox bounds what waits for a slow aos-api. */
static aos_err on_part_front(void *arg, uint32_t seq, const uint8_t *data, size_t len,
                             char *why, size_t whylen)
{
    rcall *c = arg;
    pthread_mutex_lock(&c->r->mu);
    int cancelled = c->cancelled;
    c->streaming = 1; /* a 429 after this is the caller's: nothing is sent twice */
    pthread_mutex_unlock(&c->r->mu);
    if (cancelled) {
        snprintf(why, whylen, "cancelled");
        return AOS_ERR_CANCELLED;
    }
    aos_env p;
    aos_env_reply_to(&p, &c->hdr, AOS_OK, NULL);
    p.kind = AOS_KIND_REPLY_PART;
    p.seq = seq;
    p.link_id = 0;
    p.payload = data;
    p.payload_len = len;
    nng_msg *m;
    aos_err rc = aos_env_encode(&p, &m);
    if (rc != AOS_OK) {
        snprintf(why, whylen, "cannot encode a part for aos-api");
        return rc;
    }
    link_send(c->caller, m);
    return AOS_OK;
}

/* A server's call: its answer goes back on its link, as it came or written here. */
static void answer_server(rcall *c, nng_msg *reply, int status, const char *err)
{
    if (!reply) {
        aos_env rep;
        aos_env_reply_to(&rep, &c->hdr, status, err ? "%s" : NULL, err);
        rep.link_id = 0;
        if (aos_env_encode(&rep, &reply) != AOS_OK)
            return;
    }
    link_send(c->caller, reply);
}

/* The final answer goes on to the caller. */
static void finish(rcall *c, nng_msg *reply, int status, const char *err)
{
    route *r = c->r;
    if (c->from_agent)
        agents_call(c->hdr.agent_id, c->cls, 0);
    if (c->from_agent && c->own_err && status == AOS_ERR_REFUSED)
        agents_refused(c->hdr.agent_id);
    if (c->caller) {
        answer_server(c, reply, status, err);
        pthread_mutex_lock(&r->mu);
        call_free(r, c);
        pthread_mutex_unlock(&r->mu);
        return;
    }
    pthread_mutex_lock(&r->mu);
    c->finished = 1;
    c->final_status = status;
    c->final_msg = reply;
    snprintf(c->final_err, sizeof c->final_err, "%s", err ? err : "");
    if (c->cancelled) {
        if (c->waiter) { /* its connection is gone: this answer only frees the context */
            rctx *w = c->waiter;
            c->waiter = NULL;
            answer(w, &c->hdr, AOS_KIND_REPLY, AOS_ERR_CANCELLED, "cancelled", c->next_out,
                   NULL, 0);
        }
        call_free(r, c);
    } else {
        flush(r, c);
    }
    pthread_mutex_unlock(&r->mu);
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* How long a call waits for its record: a little less than its deadline, so that the
 * UNAVAILABLE reaches the caller before its own clock runs out and it sees only TIMEOUT. */
static uint64_t audit_deadline(uint64_t deadline)
{
    uint64_t now = aos_mono_ms();
    if (deadline <= now)
        return deadline;
    uint64_t margin = (deadline - now) / 10;
    return deadline - (margin > 200 ? 200 : margin);
}

/* The END record of an LLM call is durable: now its final answer may go. */
static void ended(void *arg, aos_err st, const char *err)
{
    rcall *c = arg;
    if (st == AOS_OK) {
        finish(c, c->pend_reply, c->pend_status, c->pend_err[0] ? c->pend_err : NULL);
        return;
    }
    if (c->pend_reply)
        nng_msg_free(c->pend_reply);
    finish(c, NULL, AOS_ERR_UNAVAILABLE, err);
}

static void on_done(void *arg, nng_msg *reply, int status, const char *err)
{
    rcall *c = arg;
    if (c->llm) {
        pthread_mutex_lock(&c->r->mu);
        int streamed = c->streaming;
        pthread_mutex_unlock(&c->r->mu);
        if (llmq_done(&c->si, reply, status, streamed)) {
            if (reply) /* a 429: back in the queue, forwarded again by llm_go */
                nng_msg_free(reply);
            return;
        }
    }
    if (c->audited && !c->ended) {
        c->ended = 1;
        uint64_t lat = mono_us() - c->t0_us;
        if (c->end_wait) {
            c->pend_reply = reply;
            c->pend_status = status;
            snprintf(c->pend_err, sizeof c->pend_err, "%s", err ? err : "");
            kaud_refusal(&c->hdr, c->has_parent ? c->parent_span : NULL, status, lat,
                         audit_deadline(c->f.deadline), ended, c, c->own_err ? err : NULL);
            return;
        }
        kaud_refusal(&c->hdr, c->has_parent ? c->parent_span : NULL, status, lat, 0, NULL,
                     NULL, c->own_err ? err : NULL);
    }
    finish(c, reply, status, err);
}

/* ---- the LLM class: the scheduler admits it ------------------------------------------ */

/* Admitted: forward it (again, after a 429), unless its caller went away meanwhile. */
static void llm_go(void *arg)
{
    rcall *c = arg;
    route *r = c->r;
    pthread_mutex_lock(&r->mu);
    int cancelled = c->cancelled;
    pthread_mutex_unlock(&r->mu);
    if (cancelled) {
        on_done(c, NULL, AOS_ERR_CANCELLED, "cancelled");
        return;
    }
    c->hdr.payload = c->payload;
    c->hdr.payload_len = c->payload_len;
    aos_err rc = link_forward(c->l, &c->hdr, &c->f, &c->link_id);
    if (rc == AOS_OK) {
        r->routed++;
        return;
    }
    on_done(c, NULL, rc, "cannot forward to aos-llm");
}

static void llm_fail(void *arg, aos_err st, const char *why)
{
    ((rcall *)arg)->own_err = 1;
    on_done(arg, NULL, st, why);
}

/* Into the scheduler's queue; llm_go forwards it when it is admitted. Refused (a budget, a
 * cap, a deadline it cannot meet): answered here, with the scheduler's reason. */
static void schedule(rcall *c)
{
    char why[AOS_ERRMSG_MAX] = "";
    int queued = 0;
    aos_err rc = llmq_submit(c, c->hdr.method, c->hdr.agent_id, c->payload, c->payload_len,
                             c->f.deadline, &c->si, &queued, why, sizeof why);
    if (rc != AOS_OK) {
        c->end_wait = 0; /* an answer without a run has no reply to hold back */
        c->own_err = 1;
        on_done(c, NULL, rc, why);
        return;
    }
    /* queued: llm_go or llm_fail comes (maybe it did already, and c is gone); else not the
     * scheduler's to judge (no provider lists the model): aos-llm answers why */
    if (!queued)
        llm_go(c);
}

/* The BEGIN record is durable (or will not be): forward the request, or answer why not. */
static void begun(void *arg, aos_err st, const char *err)
{
    rcall *c = arg;
    route *r = c->r;
    pthread_mutex_lock(&r->mu);
    int cancelled = c->cancelled;
    pthread_mutex_unlock(&r->mu);
    if (st == AOS_OK && !cancelled && c->llm) {
        schedule(c);
        return;
    }
    if (st == AOS_OK && !cancelled) {
        /* once forwarded, c may be answered and freed on another thread at any moment:
         * nothing of it is touched after a successful link_forward */
        uint8_t *payload = c->payload;
        c->payload = NULL;
        aos_err rc = link_forward(c->l, &c->hdr, &c->f, &c->link_id);
        free(payload); /* link_forward encoded its own copy */
        if (rc == AOS_OK) {
            r->routed++;
            return;
        }
        c->hdr.payload = NULL;
        c->hdr.payload_len = 0;
        st = rc;
        err = "cannot forward to the server";
    }
    c->end_wait = 0; /* it never ran: nothing to wait for but the answer */
    on_done(c, NULL, cancelled ? AOS_ERR_CANCELLED : st, cancelled ? "cancelled" : err);
}

/* Forward c (in r->calls, c->f set) or, for an effectful call under fail-closed, first
 * write its BEGIN record and forward once it is durable. AOS_OK: on_done will run; any
 * other code: nothing was started, the caller answers and frees c. */
static aos_err launch(rcall *c, const kmethod *km, const aos_env *req)
{
    if ((unsigned)km->cls < 5)
        atomic_fetch_add(&routed_by_class[km->cls], 1);
    c->t0_us = mono_us();
    c->audited = kaud_records(req->method);
    c->llm = km->cls == KM_LLM;
    int effect = km->cls == KM_WRITE || km->cls == KM_EFFECT || km->cls == KM_LLM;
    int wait = c->audited && effect && !kaud_fail_open();
    if (wait || c->llm) { /* the payload waits in aosd: for its record, or its turn */
        c->payload = malloc(req->payload_len ? req->payload_len : 1);
        if (!c->payload)
            return AOS_ERR_NOMEM;
        if (req->payload_len)
            memcpy(c->payload, req->payload, req->payload_len);
        c->payload_len = req->payload_len;
        c->hdr.payload = c->payload;
        c->hdr.payload_len = req->payload_len;
    }
    if (wait) {
        c->end_wait = c->llm;
        kaud_event(&c->hdr, c->has_parent ? c->parent_span : NULL, KAUD_BEGIN, 0, 0,
                   audit_deadline(c->f.deadline), begun, c);
        return AOS_OK;
    }
    if (c->audited && effect)
        kaud_event(req, c->has_parent ? c->parent_span : NULL, KAUD_BEGIN, 0, 0, 0, NULL,
                   NULL);
    if (c->llm) {
        schedule(c);
        return AOS_OK;
    }
    route *r = c->r; /* c may be gone as soon as it is forwarded */
    aos_err rc = link_forward(c->l, req, &c->f, &c->link_id);
    if (rc == AOS_OK)
        r->routed++;
    return rc;
}

/* ---- requests ------------------------------------------------------------------------ */

/* The monotonic deadline of an absolute wall-clock one (already clamped). */
static uint64_t mono_deadline(uint64_t deadline_ms)
{
    uint64_t now = aos_now_ms();
    return aos_mono_ms() + (deadline_ms > now ? deadline_ms - now : 0);
}

static void forward(rctx *w, route *r, const kmethod *km, aos_env *req, uint32_t pipe)
{
    int from_agent = w->agent;
    char why[AOS_ERRMSG_MAX];
    int failed = 0;
    klink *l = sup_link(km->server, &failed, why, sizeof why);
    if (!l) {
        answer(w, req, AOS_KIND_REPLY, AOS_ERR_NOT_FOUND, "no server for this method", 0, NULL,
               0);
        return;
    }
    if (failed) { /* the status sup_link chose: FAILED (an operator must act) */
        answer(w, req, AOS_KIND_REPLY, failed, why, 0, NULL, 0);
        return;
    }
    /* a full disk: what would write is refused before it starts, reads go on (an LLM call
     * writes aos-llm's books, a tool run its record) */
    if ((km->cls == KM_WRITE || km->cls == KM_EFFECT || km->cls == KM_LLM) &&
        dg_low(why, sizeof why)) {
        answer(w, req, AOS_KIND_REPLY, AOS_ERR_UNAVAILABLE, why, 0, NULL, 0);
        return;
    }
    rcall *c = calloc(1, sizeof *c);
    if (!c) {
        answer(w, req, AOS_KIND_REPLY, AOS_ERR_NOMEM, "aosd is out of memory", 0, NULL, 0);
        return;
    }
    c->r = r;
    c->waiter = w;
    c->hdr = *req;
    c->hdr.pb_ = NULL;
    c->hdr.payload = NULL;
    c->hdr.payload_len = 0;
    c->pipe = pipe;
    c->l = l;
    c->from_agent = from_agent;
    c->cls = km->cls;
    if (from_agent)
        agents_call(req->agent_id, km->cls, 1);
    pthread_mutex_lock(&r->mu);
    c->next = r->calls;
    if (r->calls)
        r->calls->prev = c;
    r->calls = c;
    pthread_mutex_unlock(&r->mu);
    c->f = (link_fwd){.deadline = mono_deadline(req->deadline_ms), .done = on_done,
                      .part = on_part, .arg = c};
    aos_err rc = launch(c, km, req);
    if (rc != AOS_OK) {
        if (from_agent)
            agents_call(req->agent_id, km->cls, 0);
        pthread_mutex_lock(&r->mu);
        call_free(r, c);
        pthread_mutex_unlock(&r->mu);
        answer(w, req, AOS_KIND_REPLY, rc,
               rc == AOS_ERR_UNAVAILABLE ? "too many requests waiting for this server; retry "
                                           "later"
               : rc == AOS_ERR_TOO_BIG   ? "the request does not fit the server link's message "
                                           "cap once aosd adds its link id"
                                         : "cannot forward",
               0, NULL, 0);
        return;
    }
}

/* kernel.stream.next: the reader took every part below next_seq and wants more. */
static void pull(rctx *w, route *r, const aos_env *req, uint32_t pipe)
{
    Aos__StreamNext *sn = aos__stream_next__unpack(NULL, req->payload_len, req->payload);
    if (!sn) {
        answer(w, req, AOS_KIND_REPLY, AOS_ERR_PROTO, "kernel.stream.next: payload is not a "
               "StreamNext", 0, NULL, 0);
        return;
    }
    uint32_t next = sn->next_seq;
    aos__stream_next__free_unpacked(sn, NULL);
    char why[160] = "";
    int st = AOS_OK;
    pthread_mutex_lock(&r->mu);
    rcall *c = stream_find(r, req->request_id, pipe);
    if (!c) {
        st = AOS_ERR_NOT_FOUND;
        snprintf(why, sizeof why, "no stream for this request id (it finished, was cancelled, "
                 "or never streamed)");
    } else if (c->pipe != pipe) {
        st = AOS_ERR_REFUSED;
        snprintf(why, sizeof why, "this stream belongs to another connection");
    } else if (c->waiter) {
        st = AOS_ERR_PROTO;
        snprintf(why, sizeof why, "a pull for this stream is already waiting");
    } else if (next != c->next_out) {
        st = AOS_ERR_PROTO;
        snprintf(why, sizeof why, "the reader says it has %u parts; aosd handed out %u", next,
                 c->next_out);
    } else {
        c->waiter = w;
        c->touched = aos_mono_ms();
        flush(r, c);
    }
    pthread_mutex_unlock(&r->mu);
    if (st != AOS_OK)
        answer(w, req, AOS_KIND_REPLY, st, why, 0, NULL, 0);
}

/* Marks c cancelled; returns 1 when the link still has it (the caller cancels it there,
 * outside r->mu), 0 when c was freed here. r->mu held. */
static int cancel_locked(route *r, rcall *c)
{
    c->cancelled = 1;
    if (!c->finished)
        return 1;
    if (c->waiter) {
        rctx *w = c->waiter;
        c->waiter = NULL;
        answer(w, &c->hdr, AOS_KIND_REPLY, AOS_ERR_CANCELLED, "cancelled", c->next_out, NULL,
               0);
    }
    call_free(r, c);
    return 0;
}

/* kernel.stream.cancel: the reader gives up; the server is told to stop. */
static void stop_stream(rctx *w, route *r, const aos_env *req, uint32_t pipe)
{
    klink *l = NULL;
    uint64_t id = 0;
    int st = AOS_OK;
    pthread_mutex_lock(&r->mu);
    rcall *c = stream_find(r, req->request_id, pipe);
    if (!c)
        st = AOS_ERR_NOT_FOUND;
    else if (c->pipe != pipe)
        st = AOS_ERR_REFUSED;
    else if (cancel_locked(r, c)) {
        l = c->l;
        id = c->link_id;
    }
    pthread_mutex_unlock(&r->mu);
    if (l)
        link_cancel(l, id, AOS_ERR_CANCELLED, "cancelled by the caller");
    answer(w, req, AOS_KIND_REPLY, st,
           st == AOS_ERR_NOT_FOUND ? "no stream for this request id"
           : st == AOS_ERR_REFUSED ? "this stream belongs to another connection"
                                   : NULL,
           0, NULL, 0);
}

/* A client's connection is gone: whatever it still had in flight is cancelled, so an LLM
 * call stops paying for tokens and a tool run is killed. Except a durable step's LLM call
 * that a provider already has: an agent that died mid-call comes back and asks for the same
 * step again (the same request id), and cancelling would make it pay for the call twice;
 * run to its end, its reply is what aos-llm answers the re-issued request with (its replay
 * table waits for a run still going). One still queued in the scheduler costs nothing yet:
 * it leaves the queue. */
static void pipe_gone(route *r, uint32_t pipe)
{
    for (;;) {
        klink *l = NULL;
        rcall *queued = NULL;
        uint64_t id = 0;
        pthread_mutex_lock(&r->mu);
        for (rcall *c = r->calls, *n; c; c = n) {
            n = c->next;
            if (c->pipe != pipe || c->cancelled || c->caller || c->detached)
                continue;
            if (c->llm && c->from_agent && c->hdr.run_id[0] && !c->finished) {
                if (!llmq_cancel(&c->si)) {
                    c->detached = 1;
                    drop_parts(r, c);
                    continue;
                }
                c->cancelled = 1; /* it left the queue: answered CANCELLED below */
                queued = c;
                break;
            }
            if (cancel_locked(r, c)) {
                /* an LLM call still in the scheduler's queue leaves it: no server has it */
                if (c->llm && llmq_cancel(&c->si))
                    queued = c;
                else
                    l = c->l, id = c->link_id;
                break;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if (queued)
            on_done(queued, NULL, AOS_ERR_CANCELLED, "the caller's connection closed");
        else if (l)
            link_cancel(l, id, AOS_ERR_CANCELLED, "the caller's connection closed");
        else
            return;
    }
}

static void handle(rctx *w, nng_msg *m)
{
    route *r = w->r;
    aos_env req;
    char why[AOS_ERRMSG_MAX];
    nng_pipe p = nng_msg_get_pipe(m);
    uint32_t pipe = (uint32_t)nng_pipe_id(p);
    lsn_heard(w->agent ? r->alst : r->lst, p);
    aos_err rc = aos_env_decode(nng_msg_body(m), nng_msg_len(m), &req, why, sizeof why);
    nng_msg_free(m);
    if (rc != AOS_OK) {
        r->bad++;
        answer(w, NULL, AOS_KIND_REPLY, rc, why, 0, NULL, 0);
        return;
    }
    if (req.kind != AOS_KIND_REQUEST) {
        r->bad++;
        answer(w, &req, AOS_KIND_REPLY, AOS_ERR_PROTO, "only requests are accepted here", 0,
               NULL, 0);
        goto out;
    }
    /* a syscall without a trace starts one: its records, its server's calls and their
     * spans hang together under that id */
    if (!req.has_trace) {
        aos_id_random(req.trace_id);
        uint8_t sp[AOS_ID_LEN];
        aos_id_random(sp);
        memcpy(req.span_id, sp, AOS_SPAN_LEN);
        req.has_trace = 1;
    }
    /* deadlines: absolute on the wire; aosd applies a default and a ceiling */
    uint64_t now = aos_now_ms();
    if (!req.deadline_ms)
        req.deadline_ms = now + DEFAULT_DEADLINE_MS;
    if (req.deadline_ms > now + MAX_DEADLINE_MS)
        req.deadline_ms = now + MAX_DEADLINE_MS;
    if (req.deadline_ms <= now) {
        answer(w, &req, AOS_KIND_REPLY, AOS_ERR_TIMEOUT, "deadline already passed", 0, NULL, 0);
        goto out;
    }
    /* the control socket is the admin's: the agent id it names is honoured. On the agent
     * socket the id is the one the pipe was admitted for (the process aosd spawned),
     * whatever the envelope says */
    char caller[AOS_AGENT_ID_MAX + 1] = "";
    if (w->agent) {
        if (!agents_of_pipe(pipe, caller, sizeof caller)) {
            answer(w, &req, AOS_KIND_REPLY, AOS_ERR_REFUSED, "this connection is no agent's "
                   "(its agent is gone)", 0, NULL, 0);
            goto out;
        }
        snprintf(req.agent_id, sizeof req.agent_id, "%s", caller);
    }
    const kmethod *km = km_find(req.method);
    if (!km) {
        snprintf(why, sizeof why, "no method %s in aos", req.method);
        answer(w, &req, AOS_KIND_REPLY, AOS_ERR_NOT_FOUND, why, 0, NULL, 0);
        goto out;
    }
    if (!km_allowed(km, w->agent ? KM_AGENT : KM_ADMIN)) {
        snprintf(why, sizeof why, "%s may not be called %s", req.method,
                 w->agent ? "by an agent" : "from the control socket");
        answer(w, &req, AOS_KIND_REPLY, AOS_ERR_REFUSED, why, 0, NULL, 0);
        goto out;
    }
    if (req.payload_len > km->payload_max) {
        snprintf(why, sizeof why, "%s takes at most %u bytes of payload, not %zu", req.method,
                 km->payload_max, req.payload_len);
        answer(w, &req, AOS_KIND_REPLY, AOS_ERR_TOO_BIG, why, 0, NULL, 0);
        goto out;
    }
    uint8_t *rewritten = NULL;
    if (w->agent && km->kind == KM_FORWARD) {
        /* the manifest's rights, before anything is queued or recorded as begun */
        size_t nlen = 0;
        why[0] = 0;
        rc = agents_check(caller, km, &req, &rewritten, &nlen, why, sizeof why);
        if (rc != AOS_OK) {
            if (kaud_records(req.method)) /* a refusal is a decision: it is in the log */
                kaud_refusal(&req, NULL, rc, 0, 0, NULL, NULL, why);
            answer(w, &req, AOS_KIND_REPLY, rc, why, 0, NULL, 0);
            goto out;
        }
        if (rewritten) {
            req.payload = rewritten;
            req.payload_len = nlen;
        }
    }
    switch (km->kind) {
    case KM_ASYNC: {
        kreply *k = calloc(1, sizeof *k);
        if (!k) {
            answer(w, &req, AOS_KIND_REPLY, AOS_ERR_NOMEM, "aosd is out of memory", 0, NULL, 0);
            break;
        }
        k->w = w;
        k->hdr = req;
        k->hdr.pb_ = NULL;
        k->hdr.payload = NULL;
        k->hdr.payload_len = 0;
        k->deadline = mono_deadline(req.deadline_ms);
        km->afn(&req, caller, k);
        break;
    }
    case KM_KERNEL: {
        uint8_t *out = NULL;
        size_t len = 0;
        km_env k = {.bad_messages = r->bad, .routed = r->routed};
        why[0] = 0;
        uint64_t t0 = mono_us();
        rc = km->fn(&req, &k, &out, &len, why, sizeof why);
        if (kaud_records(req.method)) /* a server killed or restarted by an admin */
            kaud_event(&req, NULL, KAUD_END, rc, mono_us() - t0, 0, NULL, NULL);
        answer(w, &req, AOS_KIND_REPLY, rc, why[0] ? why : NULL, 0, out, len);
        free(out);
        break;
    }
    case KM_PULL:
        pull(w, r, &req, pipe);
        break;
    case KM_STOP_STREAM:
        stop_stream(w, r, &req, pipe);
        break;
    case KM_FORWARD:
        forward(w, r, km, &req, pipe);
        break;
    }
    free(rewritten);
out:
    aos_env_clear(&req);
}

/* ---- kernel methods that answer later -------------------------------------------------- */

void kreply_send(kreply *k, aos_err status, const char *why, const uint8_t *payload,
                 size_t len)
{
    if (k->link) {
        aos_env rep;
        nng_msg *m;
        aos_env_reply_to(&rep, &k->hdr, status, why && why[0] ? "%s" : NULL, why);
        rep.link_id = 0;
        rep.payload = status == AOS_OK ? payload : NULL;
        rep.payload_len = status == AOS_OK ? len : 0;
        if (aos_env_encode(&rep, &m) == AOS_OK)
            link_send(k->link, m);
        free(k);
        return;
    }
    answer(k->w, &k->hdr, AOS_KIND_REPLY, status, why && why[0] ? why : NULL, 0,
           status == AOS_OK ? payload : NULL, status == AOS_OK ? len : 0);
    free(k);
}

uint64_t kreply_deadline(const kreply *k) { return k->deadline; }

/* ---- servers calling servers ----------------------------------------------------------- */

static void server_answer(klink *to, const aos_env *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void server_answer(klink *to, const aos_env *req, int status, const char *fmt, ...)
{
    char err[AOS_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, sizeof err, fmt, ap);
    va_end(ap);
    aos_env rep;
    nng_msg *m;
    aos_env_reply_to(&rep, req, status, "%s", err);
    rep.link_id = 0;
    if (aos_env_encode(&rep, &m) == AOS_OK)
        link_send(to, m);
}

/* The tool results an HTTP client sends back in a front-door chat: the agent ran those tools
 * itself, outside aos's sandbox, so the log marks them untrusted (digests, not contents). */
static void front_tool_results(const aos_env *req)
{
    Aos__Llm__ChatRequest *c = aos__llm__chat_request__unpack(NULL, req->payload_len,
                                                              req->payload);
    if (!c)
        return;
    json_t *arr = json_array();
    size_t n = 0;
    for (size_t i = 0; arr && i < c->n_messages; i++) {
        const Aos__Llm__Message *m = c->messages[i];
        if (m->role != AOS__LLM__ROLE__TOOL)
            continue;
        if (++n > 32)
            continue; /* the count says how many; the first 32 are listed */
        crypto_generichash_state hs;
        uint8_t d[32];
        char dh[65];
        size_t bytes = 0;
        crypto_generichash_init(&hs, NULL, 0, sizeof d);
        for (size_t j = 0; j < m->n_content; j++) {
            crypto_generichash_update(&hs, m->content[j]->text.data, m->content[j]->text.len);
            bytes += m->content[j]->text.len;
        }
        crypto_generichash_final(&hs, d, sizeof d);
        aos_hex(d, sizeof d, dh);
        json_t *id = json_stringn((const char *)m->tool_call_id.data,
                                  m->tool_call_id.len > 128 ? 128 : m->tool_call_id.len);
        json_array_append_new(arr, json_pack("{s:o, s:s, s:I, s:b}", "tool_call_id",
                                             id ? id : json_string("?"), "content_blake2b",
                                             dh, "content_len", (json_int_t)bytes, "is_error",
                                             m->is_error));
    }
    if (n && arr) {
        json_t *o = json_pack("{s:b, s:s, s:I, s:o}", "untrusted", 1, "source",
                              "the front door's HTTP client ran these tools itself", "count",
                              (json_int_t)n, "results", arr);
        char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (body)
            kaud_detail(req, "front.tool_results", body);
        free(body);
        json_decref(o);
    } else {
        json_decref(arr);
    }
    aos__llm__chat_request__free_unpacked(c, NULL);
}

/* A request a server sent on its link. The caller is that server (the link says so, not
 * the message); it inherits the deadline and call path of the request it works for. */
static void on_server_request(void *arg, klink *from, const aos_env *in,
                              uint64_t parent_deadline, uint32_t chain,
                              const char *parent_agent)
{
    route *r = arg;
    aos_env req = *in;
    req.pb_ = NULL;
    const kmethod *km = km_find(req.method);
    if (km && km->kind == KM_KERNEL && !strcmp(req.method, "kernel.metrics") &&
        km_allowed(km, KM_SERVER)) {
        /* read-only figures, answered here (aos-api's /metrics) */
        uint8_t *out = NULL;
        size_t len = 0;
        char why[AOS_ERRMSG_MAX] = "";
        km_env k = {.bad_messages = r->bad, .routed = r->routed};
        aos_err rc = km->fn(&req, &k, &out, &len, why, sizeof why);
        aos_env rep;
        nng_msg *m;
        aos_env_reply_to(&rep, &req, rc, why[0] ? "%s" : NULL, why);
        rep.link_id = 0;
        rep.payload = rc == AOS_OK ? out : NULL;
        rep.payload_len = rc == AOS_OK ? len : 0;
        if (aos_env_encode(&rep, &m) == AOS_OK)
            link_send(from, m);
        free(out);
        return;
    }
    /* of the kernel's own methods, the front door asks only who its key's agent is (the
     * model /v1/models lists): step and wait are the agent process's, never its clients' */
    int front_kernel = km && km->kind == KM_ASYNC && !strcmp(req.method, "kernel.agent.self") &&
                       !strcmp(link_name(from), "api");
    if (!km || (km->kind != KM_FORWARD && !front_kernel)) {
        server_answer(from, &req, AOS_ERR_NOT_FOUND, "no method %s for servers", req.method);
        return;
    }
    if (!front_kernel && !km_allowed(km, KM_SERVER)) {
        server_answer(from, &req, AOS_ERR_REFUSED, "%s may not be called by a server",
                      req.method);
        return;
    }
    if (req.payload_len > km->payload_max) {
        server_answer(from, &req, AOS_ERR_TOO_BIG, "%s takes at most %u bytes of payload",
                      req.method, km->payload_max);
        return;
    }
    char why[AOS_ERRMSG_MAX];
    /* The front door: aos-api acts for nobody itself. Every call it makes carries the hash
     * of the API key its HTTP client showed, and runs as that key's agent's own syscall
     * (the manifest's rights, the scheduler, budgets, audit), as if from its agent link */
    int front = !strcmp(link_name(from), "api");
    char fagent[AOS_AGENT_ID_MAX + 1] = "";
    uint8_t *rewritten = NULL;
    int front_traced = 0; /* the trace was made here for a front call, not sent by aos-api */
    if (req.has_key_hash && !front) {
        server_answer(from, &req, AOS_ERR_REFUSED, "only aos-api's calls carry an API key");
        return;
    }
    if (front) {
        if (!req.has_key_hash) { /* kernel.metrics was answered above */
            server_answer(from, &req, AOS_ERR_REFUSED, "aos-api calls only as an API key's "
                          "agent: this call has no key hash");
            return;
        }
        aos_err krc = keys_agent_of(req.key_hash, fagent, sizeof fagent, why, sizeof why);
        req.has_key_hash = 0; /* no further: the servers see the agent, never the key */
        if (krc == AOS_OK && !km_allowed(km, KM_AGENT)) {
            krc = AOS_ERR_REFUSED;
            snprintf(why, sizeof why, "%s may not be called by an agent", req.method);
        }
        if (krc == AOS_OK && front_kernel) {
            /* a kernel method an agent may call (kernel.agent.self: what /v1/models lists),
             * answered on aos-api's link as the key's agent */
            kreply *k = calloc(1, sizeof *k);
            if (!k) {
                server_answer(from, &req, AOS_ERR_NOMEM, "aosd is out of memory");
                return;
            }
            snprintf(req.agent_id, sizeof req.agent_id, "%s", fagent);
            k->link = from;
            k->hdr = req;
            k->hdr.pb_ = NULL;
            k->hdr.payload = NULL;
            k->hdr.payload_len = 0;
            k->deadline = mono_deadline(req.deadline_ms ? req.deadline_ms
                                                        : aos_now_ms() + DEFAULT_DEADLINE_MS);
            km->afn(&req, fagent, k);
            return;
        }
        if (krc == AOS_OK) {
            size_t nlen = 0;
            why[0] = 0;
            snprintf(req.agent_id, sizeof req.agent_id, "%s", fagent);
            krc = agents_check(fagent, km, &req, &rewritten, &nlen, why, sizeof why);
            if (krc == AOS_OK && rewritten) {
                req.payload = rewritten;
                req.payload_len = nlen;
            }
            if (krc == AOS_OK && !strcmp(req.method, "llm.chat") && kaud_records(req.method)) {
                /* its own trace first: the detail and the syscall's records share it */
                if (!req.has_trace) {
                    aos_id_random(req.trace_id);
                    uint8_t sp[AOS_ID_LEN];
                    aos_id_random(sp);
                    memcpy(req.span_id, sp, AOS_SPAN_LEN);
                    req.has_trace = 1;
                    front_traced = 1;
                }
                front_tool_results(&req);
            }
        }
        if (krc != AOS_OK) {
            /* a refusal is a decision: in the log, under the key's agent when it has one */
            snprintf(req.agent_id, sizeof req.agent_id, "%s", fagent[0] ? fagent : "aos:api");
            if (kaud_records(req.method))
                kaud_refusal(&req, NULL, krc, 0, 0, NULL, NULL, why);
            server_answer(from, &req, krc, "%s", why);
            return;
        }
    }
    int failed = 0;
    klink *to = sup_link(km->server, &failed, why, sizeof why);
    if (!to || failed) {
        server_answer(from, &req, to ? failed : AOS_ERR_NOT_FOUND, "%s",
                      to ? why : "no server for this method");
        free(rewritten);
        return;
    }
    if (chain & (1u << link_idx(to))) {
        server_answer(from, &req, AOS_ERR_REFUSED, "call cycle: %s calls %s, which is already "
                      "in this request's path", link_name(from), req.method);
        free(rewritten);
        return;
    }
    uint64_t now = aos_now_ms();
    if (!req.deadline_ms || req.deadline_ms > now + MAX_DEADLINE_MS)
        req.deadline_ms = now + (req.deadline_ms ? MAX_DEADLINE_MS : DEFAULT_DEADLINE_MS);
    uint64_t dl = mono_deadline(req.deadline_ms);
    if (parent_deadline && parent_deadline < dl)
        dl = parent_deadline;
    if (dl <= aos_mono_ms()) {
        server_answer(from, &req, AOS_ERR_TIMEOUT, "deadline already passed");
        free(rewritten);
        return;
    }
    if (!front)
        snprintf(req.agent_id, sizeof req.agent_id, "%s", parent_agent);
    rcall *c = calloc(1, sizeof *c);
    if (!c) {
        server_answer(from, &req, AOS_ERR_NOMEM, "aosd is out of memory");
        free(rewritten);
        return;
    }
    c->r = r;
    c->hdr = req;
    c->hdr.payload = NULL;
    c->hdr.payload_len = 0;
    c->caller = from;
    if (front_traced) { /* made above: this call's own trace, no parent */
        memcpy(c->hdr.trace_id, req.trace_id, AOS_ID_LEN);
        memcpy(c->hdr.span_id, req.span_id, AOS_SPAN_LEN);
        c->hdr.has_trace = 1;
    } else if (req.has_trace) { /* a span of its own under the parent's, which the server sent */
        memcpy(c->parent_span, req.span_id, AOS_SPAN_LEN);
        c->has_parent = 1;
        uint8_t sp[AOS_ID_LEN];
        aos_id_random(sp);
        memcpy(req.span_id, sp, AOS_SPAN_LEN);
        memcpy(c->hdr.span_id, sp, AOS_SPAN_LEN);
    } else if (front) { /* an HTTP request starts a trace of its own, as a syscall does */
        aos_id_random(req.trace_id);
        uint8_t sp[AOS_ID_LEN];
        aos_id_random(sp);
        memcpy(req.span_id, sp, AOS_SPAN_LEN);
        req.has_trace = 1;
        memcpy(c->hdr.trace_id, req.trace_id, AOS_ID_LEN);
        memcpy(c->hdr.span_id, sp, AOS_SPAN_LEN);
        c->hdr.has_trace = 1;
    }
    c->l = to;
    c->from_agent = front;
    c->cls = km->cls;
    if (front)
        agents_call(fagent, km->cls, 1);
    pthread_mutex_lock(&r->mu);
    c->next = r->calls;
    if (r->calls)
        r->calls->prev = c;
    r->calls = c;
    pthread_mutex_unlock(&r->mu);
    /* a server's call gets its final answer only; aos-api's gets the parts too (its HTTP
     * client streams) */
    c->f = (link_fwd){.deadline = dl, .chain = chain, .done = on_done,
                      .part = front ? on_part_front : NULL, .arg = c};
    aos_err rc = launch(c, km, &req);
    free(rewritten);
    if (rc != AOS_OK) {
        if (front)
            agents_call(fagent, km->cls, 0);
        pthread_mutex_lock(&r->mu);
        call_free(r, c);
        pthread_mutex_unlock(&r->mu);
        server_answer(from, &req, rc, "cannot forward to %s", km->server);
        return;
    }
}

/* A server cancels a request of its own (aos-api: the HTTP client went away): as when a
 * client's connection closes, an LLM call still queued leaves the scheduler, one at a
 * server is told to stop, so no more tokens are paid for an answer nobody reads. */
static void on_server_cancel(void *arg, klink *from, const aos_env *e)
{
    route *r = arg;
    klink *l = NULL;
    rcall *queued = NULL;
    uint64_t id = 0;
    pthread_mutex_lock(&r->mu);
    for (rcall *c = r->calls; c; c = c->next)
        if (c->caller == from && !c->cancelled &&
            !memcmp(c->hdr.request_id, e->request_id, AOS_ID_LEN)) {
            if (cancel_locked(r, c)) {
                if (c->llm && llmq_cancel(&c->si))
                    queued = c;
                else
                    l = c->l, id = c->link_id;
            }
            break;
        }
    pthread_mutex_unlock(&r->mu);
    if (queued)
        on_done(queued, NULL, AOS_ERR_CANCELLED, "the caller went away");
    else if (l)
        link_cancel(l, id, AOS_ERR_CANCELLED, "the caller went away");
}

/* ---- the socket ---------------------------------------------------------------------- */

static void on_aio(void *arg)
{
    rctx *c = arg;
    int rv = nng_aio_result(c->aio);
    if (atomic_load(&c->r->closing)) {
        if (c->sending && rv != 0)
            nng_msg_free(nng_aio_get_msg(c->aio));
        return;
    }
    if (c->sending) {
        if (rv != 0) /* the client went away: the reply is dropped */
            nng_msg_free(nng_aio_get_msg(c->aio));
        arm_recv(c);
        return;
    }
    if (rv == NNG_ECLOSED)
        return;
    if (rv != 0) {
        arm_recv(c);
        return;
    }
    handle(c, nng_aio_get_msg(c->aio));
}

/* Only our own user (or root) may use the control socket: the file mode says so, and
 * the peer's credentials are checked as well. */
static int admit(void *arg, nng_pipe p, char *why, size_t whylen)
{
    (void)arg;
    uint64_t uid = 0, pid = 0;
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) != 0 ||
        (uid != (uint64_t)geteuid() && uid != 0)) {
        snprintf(why, whylen, "refused a client with uid %llu", (unsigned long long)uid);
        return -1;
    }
    /* agents never see this socket (it is not in their mount namespace); should one
     * reach it anyway (aosd not root: agents share its uid), it is still no admin */
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid) != 0 ||
        agents_pid_is_agent((pid_t)pid)) {
        snprintf(why, whylen, "refused pid %llu: an agent's process, not an admin",
                 (unsigned long long)pid);
        return -1;
    }
    return 0;
}

/* The agent socket: a pipe is admitted only for a process aosd spawned as an agent (the
 * peer's pid, from the kernel, not from anything the peer sends). */
static int admit_agent(void *arg, nng_pipe p, char *why, size_t whylen)
{
    (void)arg;
    uint64_t pid = 0;
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid) != 0 || pid == 0) {
        snprintf(why, whylen, "refused a peer whose pid is unknown");
        return -1;
    }
    return agents_admit((uint32_t)nng_pipe_id(p), (pid_t)pid, why, whylen);
}

static void on_agent_pipe(void *arg, nng_pipe p, nng_pipe_ev ev)
{
    if (ev == NNG_PIPE_EV_REM_POST) {
        pipe_gone(arg, (uint32_t)nng_pipe_id(p));
        agents_pipe_gone((uint32_t)nng_pipe_id(p));
    }
}

static void on_pipe(void *arg, nng_pipe p, nng_pipe_ev ev)
{
    if (ev == NNG_PIPE_EV_REM_POST)
        pipe_gone(arg, (uint32_t)nng_pipe_id(p));
}

/* Stops what was started of r; nothing had connected yet (the listener starts last), so
 * closing the socket here cannot meet nng 1.5.2's hang on a pipe torn down mid-send. */
static void route_undo(route *r)
{
    atomic_store(&r->closing, 1); /* on_aio re-arms nothing from here on */
    for (int i = 0; i < ROUTE_CTX; i++) {
        if (r->ctxs[i].aio) {
            nng_aio_stop(r->ctxs[i].aio);
            nng_aio_free(r->ctxs[i].aio);
        }
        if (nng_ctx_id(r->ctxs[i].ctx) > 0)
            nng_ctx_close(r->ctxs[i].ctx);
    }
    nng_close(r->sock);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

aos_err route_open(route **out, const char *url, char *why, size_t whylen)
{
    route *r = calloc(1, sizeof *r);
    if (!r)
        return AOS_ERR_NOMEM;
    pthread_mutex_init(&r->mu, NULL);
    int rv;
    if ((rv = nng_rep0_open(&r->sock)) != 0) {
        snprintf(why, whylen, "control socket %s: %s", url, nng_strerror(rv));
        pthread_mutex_destroy(&r->mu);
        free(r);
        return AOS_ERR_IO;
    }
    if ((rv = nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0) {
        snprintf(why, whylen, "control socket %s: %s", url, nng_strerror(rv));
        route_undo(r);
        return AOS_ERR_IO;
    }
    /* the contexts before the listener: a client that connects finds them receiving */
    for (int i = 0; i < ROUTE_CTX; i++) {
        rctx *c = &r->ctxs[i];
        c->r = r;
        if ((rv = nng_ctx_open(&c->ctx, r->sock)) != 0 ||
            (rv = nng_aio_alloc(&c->aio, on_aio, c)) != 0) {
            snprintf(why, whylen, "control socket contexts: %s", nng_strerror(rv));
            route_undo(r);
            return rv == NNG_ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_INTERNAL;
        }
    }
    link_set_request_handler(on_server_request, r);
    link_set_cancel_handler(on_server_cancel);
    /* armed only now: route_undo stops each aio, so none can run on a freed route */
    for (int i = 0; i < ROUTE_CTX; i++)
        arm_recv(&r->ctxs[i]);
    lsn_opts lo = {.what = "control socket", .max_pipes = ROUTE_MAX_PIPES,
                   .max_silent = ROUTE_MAX_SILENT, .silent_ms = ROUTE_SILENT_MS,
                   .mode = 0600, .admit = admit, .on_event = on_pipe, .arg = r};
    aos_err rc = lsn_open(&r->lst, r->sock, url, &lo, why, whylen);
    if (rc != AOS_OK) {
        route_undo(r);
        return rc;
    }
    *out = r;
    return AOS_OK;
}

aos_err route_open_agents(route *r, const char *url, char *why, size_t whylen)
{
    int rv;
    if ((rv = nng_rep0_open(&r->asock)) != 0 ||
        (rv = nng_socket_set_size(r->asock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0) {
        snprintf(why, whylen, "agent socket %s: %s", url, nng_strerror(rv));
        return AOS_ERR_IO;
    }
    r->actxs = calloc(ROUTE_AGENT_CTX, sizeof *r->actxs);
    if (!r->actxs)
        return AOS_ERR_NOMEM;
    for (int i = 0; i < ROUTE_AGENT_CTX; i++) {
        rctx *c = &r->actxs[i];
        c->r = r;
        c->agent = 1;
        if ((rv = nng_ctx_open(&c->ctx, r->asock)) != 0 ||
            (rv = nng_aio_alloc(&c->aio, on_aio, c)) != 0) {
            snprintf(why, whylen, "agent socket contexts: %s", nng_strerror(rv));
            return rv == NNG_ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_INTERNAL;
        }
    }
    for (int i = 0; i < ROUTE_AGENT_CTX; i++)
        arm_recv(&r->actxs[i]);
    /* any local user may connect (the file is 0666; agents run as their own uid), and
     * admission is by pid: only what aosd spawned gets past ADD_PRE */
    lsn_opts lo = {.what = "agent socket", .max_pipes = 4096, .max_silent = 1024,
                   .silent_ms = ROUTE_SILENT_MS, .mode = 0666, .admit = admit_agent,
                   .on_event = on_agent_pipe, .arg = r};
    return lsn_open(&r->alst, r->asock, url, &lo, why, whylen);
}

/* A finished stream whose reader does not come back for its last parts is dropped. */
void route_tick(route *r, uint64_t now)
{
    pthread_mutex_lock(&r->mu);
    for (rcall *c = r->calls, *n; c; c = n) {
        n = c->next;
        /* now was read before the tick: a pull may have stamped touched after it */
        if (c->streaming && c->finished && !c->waiter && now > c->touched &&
            now - c->touched > STREAM_IDLE_MS)
            call_free(r, c);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Called once, at exit. New connections stop first; every context's aio is stopped
 * (waiting for running callbacks; none re-arms). The socket itself is left to the exit:
 * nng 1.5.2's nng_close on a REP socket whose contexts have cycled under load can wait
 * forever for a context reference, and nothing here needs it closed before exit. */
void route_close(route *r)
{
    atomic_store(&r->closing, 1);
    lsn_close(r->lst);
    if (r->alst)
        lsn_close(r->alst);
    for (int i = 0; i < ROUTE_CTX; i++)
        if (r->ctxs[i].aio)
            nng_aio_stop(r->ctxs[i].aio);
    for (int i = 0; r->actxs && i < ROUTE_AGENT_CTX; i++)
        if (r->actxs[i].aio)
            nng_aio_stop(r->actxs[i].aio);
}

const llmq_hooks *route_llm_hooks(void)
{
    static const llmq_hooks h = {.go = llm_go, .fail = llm_fail};
    return &h;
}

uint64_t route_bad_messages(const route *r) { return r->bad; }
uint64_t route_routed(const route *r) { return r->routed; }
