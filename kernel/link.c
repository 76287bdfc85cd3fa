/* aosd's side of a server link: PAIR1 with a peer-pid check, an aio receive loop, the
 * in-flight table that outlives server crashes, streamed parts, and a batching outbox. */
#include "link.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "aos/batch.h"
#include "aos/log.h"
#include "listen.h"

#define LINK_PENDING_MAX 8192  /* requests kept per server; beyond: unavailable */
#define LINK_BUCKETS 1024
#define LINK_RECVBUF 64        /* messages nng buffers from the server for our receivers */
#define LINK_PENDING_BYTES (256u << 20) /* encoded requests kept per server; beyond: unavailable */
#define LINK_OUTQ 4096         /* envelopes waiting in the outbox for the send in flight */
#define LINK_FRAME_CAP (AOS_MSG_MAX - 16u) /* the server's receive cap counts PAIR1's header */
/* A final reply that names more parts than arrived waits this long for them (they may be
 * on another receiver) before it completes anyway: a replayed reply, whose parts are not
 * kept, or a server that miscounts must not leave the caller waiting to its deadline. */
#define LINK_FINAL_WAIT_MS 200
/* A request in hand when its server ended itself this many times is a poison pill:
 * answered with an error instead of being re-sent to crash the next incarnation too. */
#define LINK_MAX_DEATHS 2
/* PAIR1 holds one peer; a few more may be in ADD_PRE or being reaped (a dead
 * incarnation's pipe, an intruder being refused). Beyond: refused before the pid check. */
#define LINK_MAX_PIPES 8u
#define LINK_PAIR1_HDR 4u      /* nng's pair1 prepends a 32-bit hop count to each message */
#define LINK_RECEIVERS 4       /* replies decoded in parallel on nng's threads (so streamed
                                  * parts will need a sequence number to stay in order) */

typedef struct receiver {
    klink *l;
    nng_aio *aio;
} receiver;

typedef struct pending {
    uint64_t id;
    nng_msg *msg;              /* the encoded request, kept until answered */
    uint64_t deadline;
    uint32_t chain;
    link_done_fn done;
    link_part_fn part;
    void *arg;
    int sent;                  /* handed to the current incarnation */
    int deaths;                /* incarnations that died with it in hand */
    uint32_t parts;            /* parts passed on */
    nng_msg *final;            /* a final reply waiting for parts still on their way */
    uint32_t final_parts;      /* the count it announced */
    int final_status;
    uint64_t final_at;
    char agent[AOS_AGENT_ID_MAX + 1];
    struct pending *prev, *next, *hnext;
} pending;

struct klink {
    char name[16];
    int idx;
    char url[256];
    nng_socket sock;           /* replaced by link_renew; the old one is abandoned */
    lsn *lst;
    receiver rx[LINK_RECEIVERS];
    pthread_mutex_t mu;
    pid_t expect;              /* only this pid may connect */
    nng_pipe pipe;             /* its pipe, once connected */
    nng_pipe attached;         /* the pipe PAIR1 holds (ADD_POST .. REM_POST), any pid */
    int ready;
    uint64_t last_ack;
    pending *head, *tail;      /* in link-id order: resent oldest first */
    pending *buckets[LINK_BUCKETS];
    size_t n, bytes;
    /* the outbox: one send in flight (SENDBUF 0: it completes when the pipe takes the
     * message), the rest wait here and leave together as one batch frame */
    nng_aio *tx;
    int tx_busy;
    nng_msg *outq[LINK_OUTQ];
    size_t outq_head, outq_n;
    atomic_ullong bad, tx_msgs, tx_frames, rx_msgs, rx_frames;
    link_ready_fn on_ready;
    void *arg;
};

static atomic_ullong next_link_id = 1;
static link_request_fn on_request;
static void *on_request_arg;

void link_set_request_handler(link_request_fn fn, void *arg)
{
    on_request = fn;
    on_request_arg = arg;
}

static link_cancel_fn on_cancel_req;

void link_set_cancel_handler(link_cancel_fn fn) { on_cancel_req = fn; }

int link_idx(const klink *l) { return l->idx; }
const char *link_name(const klink *l) { return l->name; }

static void unhook(klink *l, pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    pending **pp = &l->buckets[p->id % LINK_BUCKETS];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    l->n--;
    l->bytes -= nng_msg_len(p->msg);
}

static pending *lookup(klink *l, uint64_t id)
{
    for (pending *p = l->buckets[id % LINK_BUCKETS]; p; p = p->hnext)
        if (p->id == id)
            return p;
    return NULL;
}

/* ---- the outbox ------------------------------------------------------------------
 * Nothing in aosd waits on a slow server: xmit queues, and the send callback drains. The
 * first message goes out alone at once (one client pays nothing for batching); what piles
 * up behind a send in flight leaves as one batch frame, so a busy link pays nng's per-
 * message thread hand-offs once per frame. Called with l->mu held. Takes m. Returns -1
 * when m was dropped (no server connected, or the outbox is full): the request stays
 * unsent and READY or the tick sends it again. */
static int xmit(klink *l, nng_msg *m)
{
    if (!l->ready && nng_pipe_id(l->pipe) <= 0) {
        nng_msg_free(m);
        return -1;
    }
    if (!l->tx_busy) {
        l->tx_busy = 1;
        l->tx_msgs++;
        nng_aio_set_msg(l->tx, m);
        nng_send_aio(l->sock, l->tx);
        return 0;
    }
    if (l->outq_n == LINK_OUTQ) {
        nng_msg_free(m);
        return -1;
    }
    l->outq[(l->outq_head + l->outq_n++) % LINK_OUTQ] = m;
    return 0;
}

static nng_msg *outq_pop(klink *l)
{
    nng_msg *m = l->outq[l->outq_head];
    l->outq_head = (l->outq_head + 1) % LINK_OUTQ;
    l->outq_n--;
    return m;
}

/* The next message of the outbox (not empty): the head alone when nothing can join it,
 * else a frame of as many as fit. */
static nng_msg *outq_next(klink *l)
{
    nng_msg *first = l->outq[l->outq_head];
    nng_msg *second = l->outq_n > 1 ? l->outq[(l->outq_head + 1) % LINK_OUTQ] : NULL;
    if (!second || AOS_BATCH_HDR + 2 * AOS_BATCH_REC_HDR + nng_msg_len(first) +
                           nng_msg_len(second) > LINK_FRAME_CAP)
        return outq_pop(l);
    aos_batch b;
    aos_batch_init(&b, LINK_FRAME_CAP);
    while (l->outq_n) {
        nng_msg *m = l->outq[l->outq_head];
        if (aos_batch_add(&b, nng_msg_body(m), nng_msg_len(m)) != AOS_OK)
            break; /* full (or no memory): the rest go in the next frame */
        nng_msg_free(outq_pop(l));
    }
    if (b.n == 0) /* no memory for a frame: the head alone */
        return outq_pop(l);
    l->tx_frames++;
    return aos_batch_take(&b);
}

static void on_sent(void *arg)
{
    klink *l = arg;
    if (nng_aio_result(l->tx) != 0) { /* cancelled by link_down, or the socket closed */
        nng_msg_free(nng_aio_get_msg(l->tx));
        nng_aio_set_msg(l->tx, NULL);
    }
    pthread_mutex_lock(&l->mu);
    if (l->outq_n) {
        l->tx_msgs++;
        nng_aio_set_msg(l->tx, outq_next(l));
        nng_send_aio(l->sock, l->tx);
    } else {
        l->tx_busy = 0;
    }
    pthread_mutex_unlock(&l->mu);
}

static int try_send(klink *l, nng_msg *m)
{
    nng_msg *d;
    if (nng_msg_dup(&d, m) != 0)
        return -1;
    return xmit(l, d);
}

static void send_kind(klink *l, int kind, uint64_t link_id, const char *method)
{
    aos_env e;
    nng_msg *m;
    aos_env_init(&e, kind);
    e.link_id = link_id;
    if (method)
        snprintf(e.method, sizeof e.method, "%s", method);
    if (aos_env_encode(&e, &m) != AOS_OK)
        return;
    (void)xmit(l, m);
}

void link_send(klink *l, nng_msg *m)
{
    pthread_mutex_lock(&l->mu);
    if (l->ready)
        (void)xmit(l, m);
    else
        nng_msg_free(m);
    pthread_mutex_unlock(&l->mu);
}

static void answer_all(pending *list, int status, const char *err);
static void complete(pending *p, nng_msg *m, int status, const char *err);

static void resend_unsent(klink *l)
{
    for (pending *p = l->head; p; p = p->next)
        if (!p->sent && try_send(l, p->msg) == 0)
            p->sent = 1;
}

/* Completes p (unhooked already) with the reply m (owned, may be NULL for status/err). */
static void complete(pending *p, nng_msg *m, int status, const char *err)
{
    p->done(p->arg, m, status, err);
    if (p->final)
        nng_msg_free(p->final);
    nng_msg_free(p->msg);
    free(p);
}

/* m as a message of its own: the frame's record copied out, or m itself. */
static nng_msg *own_msg(nng_msg *frame, const uint8_t *rec, size_t len)
{
    nng_msg *m;
    if (!frame || nng_msg_alloc(&m, len) != 0)
        return NULL;
    memcpy(nng_msg_body(m), rec, len);
    return m;
}

/* A server's request: validated here as far as the link can (a request id, a method),
 * its parent looked up; the router does the rest. */
static void server_request(klink *l, aos_env *e)
{
    uint64_t deadline = 0;
    uint32_t chain = 0;
    char agent[AOS_AGENT_ID_MAX + 1] = "";
    if (e->link_id) {
        pthread_mutex_lock(&l->mu);
        pending *p = lookup(l, e->link_id);
        if (p) {
            deadline = p->deadline;
            chain = p->chain;
            memcpy(agent, p->agent, sizeof agent);
        }
        pthread_mutex_unlock(&l->mu);
    }
    chain |= 1u << l->idx;
    if (on_request)
        on_request(on_request_arg, l, e, deadline, chain, agent);
}

/* One envelope from the server: rec[0..len) inside frame (a batch) or the whole of whole
 * (a plain message, whose ownership passes here). Returns 0, or -1 for a broken peer. */
static int take_one(klink *l, nng_msg *whole, nng_msg *frame, const uint8_t *rec, size_t len,
                    nng_pipe from)
{
    aos_env e;
    char why[160];
    if (aos_env_decode(rec, len, &e, why, sizeof why) != AOS_OK) {
        if (whole)
            nng_msg_free(whole);
        l->bad++;
        aos_warn("%s sent an invalid message (%s): closing its link", l->name, why);
        return -1;
    }
    l->rx_msgs++;
    switch (e.kind) {
    case AOS_KIND_REPLY: {
        nng_msg *m = whole ? whole : own_msg(frame, rec, len);
        whole = NULL;
        pthread_mutex_lock(&l->mu);
        pending *p = lookup(l, e.link_id);
        int now = p && (e.seq <= p->parts || !p->part);
        if (p && now)
            unhook(l, p);
        else if (p && !p->final) { /* parts announced are still on another receiver */
            p->final = m;
            p->final_parts = e.seq;
            p->final_status = e.status;
            p->final_at = aos_mono_ms();
            m = NULL;
        }
        pthread_mutex_unlock(&l->mu);
        if (p && now) /* else a late duplicate (re-sent request answered twice): dropped */
            complete(p, m, e.status, m ? NULL : "no memory for the reply");
        else if (m)
            nng_msg_free(m);
        break;
    }
    case AOS_KIND_REPLY_PART: {
        pending *done = NULL;
        aos_err st = AOS_OK;
        char err[AOS_ERRMSG_MAX] = "";
        pthread_mutex_lock(&l->mu);
        pending *p = lookup(l, e.link_id);
        if (p && !p->part) {
            st = AOS_ERR_PROTO;
            snprintf(err, sizeof err, "%s sent a streamed reply to a caller that cannot take "
                     "one", l->name);
        } else if (p) {
            /* receivers may pass each other: the router puts parts in order by seq, here
             * they are only counted */
            st = p->part(p->arg, e.seq, e.payload, e.payload_len, err, sizeof err);
        }
        if (p && st == AOS_OK) {
            p->parts++;
            if (p->final && p->parts >= p->final_parts) {
                unhook(l, p);
                done = p;
            }
        } else if (p) {
            if (p->sent)
                send_kind(l, AOS_KIND_CANCEL, p->id, NULL);
            unhook(l, p);
        }
        pthread_mutex_unlock(&l->mu);
        if (done) {
            nng_msg *f = done->final;
            done->final = NULL;
            complete(done, f, done->final_status, NULL);
        } else if (p && st != AOS_OK) {
            complete(p, NULL, st, err);
        }
        break;
    }
    case AOS_KIND_REQUEST:
        server_request(l, &e);
        break;
    case AOS_KIND_CANCEL: /* of a request the server made: its caller went away */
        if (e.has_request_id && on_cancel_req)
            on_cancel_req(on_request_arg, l, &e);
        break;
    case AOS_KIND_HEARTBEAT:
        pthread_mutex_lock(&l->mu);
        l->last_ack = aos_mono_ms();
        pthread_mutex_unlock(&l->mu);
        break;
    case AOS_KIND_READY: {
        pid_t pid = 0;
        pthread_mutex_lock(&l->mu);
        if (nng_pipe_id(from) == nng_pipe_id(l->pipe) && !l->ready) {
            l->ready = 1;
            l->last_ack = aos_mono_ms();
            pid = l->expect;
            for (pending *p = l->head; p; p = p->next)
                p->sent = 0;
            resend_unsent(l);
        }
        pthread_mutex_unlock(&l->mu);
        if (pid)
            l->on_ready(l->arg, l->idx, pid, e.payload, e.payload_len);
        break;
    }
    default:
        aos_env_clear(&e);
        if (whole)
            nng_msg_free(whole);
        l->bad++;
        aos_warn("%s sent a kind a server never sends: closing its link", l->name);
        return -1;
    }
    aos_env_clear(&e);
    if (whole)
        nng_msg_free(whole);
    return 0;
}

/* A peer that sends something impossible is broken: drop its pipe, which ends it (a
 * server exits when its link closes) and the supervisor restarts it. */
static void on_recv(void *arg)
{
    receiver *rx = arg;
    klink *l = rx->l;
    if (nng_aio_result(rx->aio) != 0)
        return; /* closed or stopped */
    nng_msg *m = nng_aio_get_msg(rx->aio);
    nng_pipe from = nng_msg_get_pipe(m);
    const uint8_t *buf = nng_msg_body(m);
    size_t len = nng_msg_len(m);
    int bad = 0;
    if (aos_batch_is(buf, len)) {
        size_t off = 0, rl;
        const uint8_t *rec;
        char why[128];
        aos_err rc;
        l->rx_frames++;
        while (!bad && (rc = aos_batch_next(buf, len, &off, &rec, &rl, why, sizeof why)) ==
                           AOS_OK)
            bad = take_one(l, NULL, m, rec, rl, from) != 0;
        if (!bad && rc != AOS_ERR_NOT_FOUND) {
            l->bad++;
            aos_warn("%s sent a malformed batch frame (%s): closing its link", l->name, why);
            bad = 1;
        }
        nng_msg_free(m);
    } else {
        bad = take_one(l, m, NULL, buf, len, from) != 0;
    }
    if (bad)
        nng_pipe_close(from);
    nng_recv_aio(l->sock, rx->aio);
}

/* ADD_PRE, through the bounded listener: only the incarnation aosd started may join. The
 * refusal line is the listener's (rate-limited: a refused intruder re-dials at once). */
static int admit(void *arg, nng_pipe p, char *why, size_t whylen)
{
    klink *l = arg;
    uint64_t pid = 0;
    int ok;
    pthread_mutex_lock(&l->mu);
    ok = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid) == 0 && l->expect > 0 &&
         pid == (uint64_t)l->expect;
    if (ok)
        l->pipe = p;
    else
        snprintf(why, whylen, "refused a connection from pid %llu (expected %d)",
                 (unsigned long long)pid, (int)l->expect);
    pthread_mutex_unlock(&l->mu);
    return ok ? 0 : -1;
}

static void on_pipe(void *arg, nng_pipe p, nng_pipe_ev ev)
{
    klink *l = arg;
    pthread_mutex_lock(&l->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        l->attached = p;
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        if (nng_pipe_id(p) == nng_pipe_id(l->attached))
            l->attached = (nng_pipe)NNG_PIPE_INITIALIZER;
        if (nng_pipe_id(p) == nng_pipe_id(l->pipe)) {
            l->ready = 0;
            l->pipe = (nng_pipe)NNG_PIPE_INITIALIZER;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

/* A fresh socket for l at l->url: options, the bounded listener, a send aio and the
 * receivers armed. On failure everything made is undone (no pipe ever existed, so that
 * close cannot hang). */
static aos_err open_socket(klink *l, char *why, size_t whylen)
{
    int rv;
    if ((rv = nng_pair1_open(&l->sock)) != 0) {
        snprintf(why, whylen, "link %s at %s: %s", l->name, l->url, nng_strerror(rv));
        return AOS_ERR_IO;
    }
    char what[40];
    snprintf(what, sizeof what, "%s link", l->name);
    /* no first-message deadline here: admit lets in only the expected pid, which may take
     * long to say READY (a database to wait for); an impostor is refused at ADD_PRE and
     * before that is bounded by nng's own 10 s negotiation timer (listen.h) */
    lsn_opts lo = {.what = what, .max_pipes = LINK_MAX_PIPES, .mode = 0600, .admit = admit,
                   .on_event = on_pipe, .arg = l};
    aos_err rc = AOS_OK;
    l->tx = NULL;
    memset(l->rx, 0, sizeof l->rx);
    if ((rv = nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0 ||
        /* no send buffer: the outbox's send completes when the pipe takes the message,
         * which is what lets the next ones pile up into a frame */
        (rv = nng_socket_set_int(l->sock, NNG_OPT_SENDBUF, 0)) != 0 ||
        (rv = nng_socket_set_int(l->sock, NNG_OPT_RECVBUF, LINK_RECVBUF)) != 0 ||
        (rv = nng_aio_alloc(&l->tx, on_sent, l)) != 0) {
        snprintf(why, whylen, "link %s at %s: %s", l->name, l->url, nng_strerror(rv));
        rc = AOS_ERR_IO;
    }
    for (int i = 0; rc == AOS_OK && i < LINK_RECEIVERS; i++) {
        l->rx[i].l = l;
        if ((rv = nng_aio_alloc(&l->rx[i].aio, on_recv, &l->rx[i])) != 0) {
            snprintf(why, whylen, "link %s: %s", l->name, nng_strerror(rv));
            rc = AOS_ERR_NOMEM;
        }
    }
    if (rc == AOS_OK)
        rc = lsn_open(&l->lst, l->sock, l->url, &lo, why, whylen);
    if (rc != AOS_OK) {
        for (int i = 0; i < LINK_RECEIVERS; i++)
            if (l->rx[i].aio)
                nng_aio_free(l->rx[i].aio);
        if (l->tx)
            nng_aio_free(l->tx);
        nng_close(l->sock);
        return rc;
    }
    for (int i = 0; i < LINK_RECEIVERS; i++)
        nng_recv_aio(l->sock, l->rx[i].aio);
    return AOS_OK;
}

aos_err link_open(klink **out, const char *name, const char *url, int idx,
                  link_ready_fn on_ready, void *arg, char *why, size_t whylen)
{
    klink *l = calloc(1, sizeof *l);
    if (!l)
        return AOS_ERR_NOMEM;
    snprintf(l->name, sizeof l->name, "%s", name);
    if (snprintf(l->url, sizeof l->url, "%s", url) >= (int)sizeof l->url) {
        snprintf(why, whylen, "link %s: the url %s is too long", name, url);
        free(l);
        return AOS_ERR_USAGE;
    }
    l->idx = idx;
    l->on_ready = on_ready;
    l->arg = arg;
    l->pipe = (nng_pipe)NNG_PIPE_INITIALIZER;
    l->attached = (nng_pipe)NNG_PIPE_INITIALIZER;
    pthread_mutex_init(&l->mu, NULL);
    aos_err rc = open_socket(l, why, whylen);
    if (rc != AOS_OK) {
        pthread_mutex_destroy(&l->mu);
        free(l);
        return rc;
    }
    *out = l;
    return AOS_OK;
}

/* At exit: no new connections, receivers stopped, every waiting caller answered. The
 * socket is left to the process exit: nng 1.5.2's nng_close can wait forever for a
 * reference after heavy use (seen on REP and PAIR1 alike), and aosd is leaving anyway. */
void link_close(klink *l)
{
    lsn_close(l->lst);
    for (int i = 0; i < LINK_RECEIVERS; i++)
        nng_aio_stop(l->rx[i].aio); /* waits for running callbacks; none re-arms */
    pthread_mutex_lock(&l->mu);
    l->ready = 0;
    l->pipe = (nng_pipe)NNG_PIPE_INITIALIZER;
    while (l->outq_n)
        nng_msg_free(outq_pop(l));
    pthread_mutex_unlock(&l->mu);
    nng_aio_cancel(l->tx);
    link_fail_all(l, AOS_ERR_UNAVAILABLE, "aosd is shutting down");
}

void link_expect(klink *l, pid_t pid)
{
    pthread_mutex_lock(&l->mu);
    l->expect = pid;
    l->ready = 0;
    pthread_mutex_unlock(&l->mu);
}

void link_down(klink *l, int own)
{
    pending *poison = NULL, **tail = &poison, *cut = NULL, **ctail = &cut;
    pthread_mutex_lock(&l->mu);
    l->ready = 0;
    l->expect = 0;
    nng_pipe p = l->pipe;
    for (pending *q = l->head, *n; q; q = n) {
        n = q->next;
        if (q->final) /* answered; its last parts are still with our receivers */
            continue;
        if (q->parts) { /* a stream is never restarted: its parts would repeat */
            unhook(l, q);
            q->next = NULL;
            *ctail = q;
            ctail = &q->next;
            continue;
        }
        if (q->sent && own && ++q->deaths >= LINK_MAX_DEATHS) {
            unhook(l, q);
            q->next = NULL;
            *tail = q;
            tail = &q->next;
        }
        q->sent = 0;
    }
    /* what waits in the outbox was for the dead incarnation: READY re-sends the requests */
    while (l->outq_n)
        nng_msg_free(outq_pop(l));
    pthread_mutex_unlock(&l->mu);
    nng_aio_cancel(l->tx);
    if (nng_pipe_id(p) > 0)
        nng_pipe_close(p);
    char err[160];
    while (cut) {
        pending *n = cut->next;
        snprintf(err, sizeof err, "aos-%s died mid-stream after %u parts; not re-sent (its "
                 "parts would repeat)", l->name, cut->parts);
        complete(cut, NULL, AOS_ERR_UNAVAILABLE, err);
        cut = n;
    }
    snprintf(err, sizeof err, "%s died %d times while handling this request: not re-sent",
             l->name, LINK_MAX_DEATHS);
    answer_all(poison, AOS_ERR_FAILED, err);
}

int link_busy(klink *l)
{
    pthread_mutex_lock(&l->mu);
    nng_pipe p = l->attached;
    pthread_mutex_unlock(&l->mu);
    return nng_pipe_id(p) > 0;
}

/* nng 1.5.2 at times never lets go of a dead peer's pipe (its REM_POST does not come, and
 * closing it again changes nothing), and PAIR1 turns every new peer away while it holds
 * one. So the link moves to a fresh socket at the same path. The old socket is abandoned,
 * not closed: its close would wait on that very pipe, forever. Its listener is closed
 * (no one can reach it) and its aios are stopped, which never waits on a pipe: they are
 * socket-level operations, and PAIR1 cancels those at once. */
aos_err link_renew(klink *l, char *why, size_t whylen)
{
    pthread_mutex_lock(&l->mu);
    l->ready = 0;
    l->pipe = (nng_pipe)NNG_PIPE_INITIALIZER; /* xmit sends nothing more to the old socket */
    while (l->outq_n)
        nng_msg_free(outq_pop(l));
    pthread_mutex_unlock(&l->mu);
    nng_aio_stop(l->tx); /* on_sent finds the outbox empty and leaves tx idle */
    for (int i = 0; i < LINK_RECEIVERS; i++)
        nng_aio_stop(l->rx[i].aio); /* on_recv sees the error and re-arms nothing */
    lsn_close(l->lst);
    nng_aio *old_tx = l->tx;
    nng_aio *old_rx[LINK_RECEIVERS];
    for (int i = 0; i < LINK_RECEIVERS; i++)
        old_rx[i] = l->rx[i].aio;
    nng_socket old = l->sock;
    pthread_mutex_lock(&l->mu);
    l->tx_busy = 0;
    aos_err rc = open_socket(l, why, whylen);
    if (rc != AOS_OK) {
        /* no new socket: the old one stays, listening no more; the next start tries again */
        l->sock = old;
        l->tx = old_tx;
        for (int i = 0; i < LINK_RECEIVERS; i++)
            l->rx[i].aio = old_rx[i];
        pthread_mutex_unlock(&l->mu);
        return rc;
    }
    l->attached = (nng_pipe)NNG_PIPE_INITIALIZER;
    pthread_mutex_unlock(&l->mu);
    nng_aio_free(old_tx);
    for (int i = 0; i < LINK_RECEIVERS; i++)
        nng_aio_free(old_rx[i]);
    return AOS_OK;
}

aos_err link_forward(klink *l, const aos_env *req, const link_fwd *f, uint64_t *link_id)
{
    aos_env e = *req;
    e.pb_ = NULL;
    e.link_id = atomic_fetch_add(&next_link_id, 1);
    pending *p = calloc(1, sizeof *p);
    if (!p)
        return AOS_ERR_NOMEM;
    aos_err rc = aos_env_encode(&e, &p->msg);
    if (rc != AOS_OK) {
        free(p);
        return rc;
    }
    /* the server's NNG_OPT_RECVMAXSZ counts PAIR1's 4-byte hop count too: one byte over
     * and its transport cuts the link, the server dies holding the request, and twice
     * makes it a poison pill. Refused here instead. */
    if (nng_msg_len(p->msg) + LINK_PAIR1_HDR > AOS_MSG_MAX) {
        nng_msg_free(p->msg);
        free(p);
        return AOS_ERR_TOO_BIG;
    }
    p->id = e.link_id;
    p->deadline = f->deadline;
    p->chain = f->chain;
    p->done = f->done;
    p->part = f->part;
    p->arg = f->arg;
    memcpy(p->agent, req->agent_id, sizeof p->agent);
    if (link_id)
        *link_id = p->id;
    pthread_mutex_lock(&l->mu);
    if (l->n >= LINK_PENDING_MAX || l->bytes + nng_msg_len(p->msg) > LINK_PENDING_BYTES) {
        pthread_mutex_unlock(&l->mu);
        nng_msg_free(p->msg);
        free(p);
        return AOS_ERR_UNAVAILABLE;
    }
    p->prev = l->tail;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    p->hnext = l->buckets[p->id % LINK_BUCKETS];
    l->buckets[p->id % LINK_BUCKETS] = p;
    l->n++;
    l->bytes += nng_msg_len(p->msg);
    if (l->ready && try_send(l, p->msg) == 0)
        p->sent = 1;
    pthread_mutex_unlock(&l->mu);
    return AOS_OK;
}

void link_cancel(klink *l, uint64_t link_id, int status, const char *err)
{
    pthread_mutex_lock(&l->mu);
    pending *p = lookup(l, link_id);
    if (p) {
        if (p->sent && l->ready)
            send_kind(l, AOS_KIND_CANCEL, p->id, NULL);
        unhook(l, p);
    }
    pthread_mutex_unlock(&l->mu);
    if (p)
        complete(p, NULL, status, err);
}

static void answer_all(pending *list, int status, const char *err)
{
    while (list) {
        pending *n = list->next;
        complete(list, NULL, status, err);
        list = n;
    }
}

void link_expire(klink *l, uint64_t now)
{
    pending *gone = NULL, **tail = &gone, *finals = NULL, **ftail = &finals;
    uint64_t cancel[64];
    size_t nc = 0;
    pthread_mutex_lock(&l->mu);
    for (pending *p = l->head, *n; p; p = n) {
        n = p->next;
        /* now was read before the tick: a receiver may have stamped final_at after it */
        if (p->final && now > p->final_at && now - p->final_at >= LINK_FINAL_WAIT_MS) {
            unhook(l, p);
            p->next = NULL;
            *ftail = p;
            ftail = &p->next;
            continue;
        }
        if (p->deadline > now)
            continue;
        if (p->sent && nc < 64)
            cancel[nc++] = p->id;
        unhook(l, p);
        p->next = NULL;
        *tail = p;
        tail = &p->next;
    }
    if (l->ready) {
        resend_unsent(l);
        for (size_t i = 0; i < nc; i++)
            send_kind(l, AOS_KIND_CANCEL, cancel[i], NULL);
    }
    pthread_mutex_unlock(&l->mu);
    while (finals) {
        pending *n = finals->next;
        nng_msg *f = finals->final;
        finals->final = NULL;
        complete(finals, f, finals->final_status, NULL);
        finals = n;
    }
    char err[96];
    snprintf(err, sizeof err, "deadline passed waiting for %s", l->name);
    answer_all(gone, AOS_ERR_TIMEOUT, err);
}

void link_fail_all(klink *l, int status, const char *err)
{
    pthread_mutex_lock(&l->mu);
    pending *all = l->head;
    l->head = l->tail = NULL;
    memset(l->buckets, 0, sizeof l->buckets);
    l->n = 0;
    l->bytes = 0;
    pthread_mutex_unlock(&l->mu);
    answer_all(all, status, err);
}

void link_heartbeat(klink *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->ready)
        send_kind(l, AOS_KIND_HEARTBEAT, 0, NULL);
    pthread_mutex_unlock(&l->mu);
}

uint64_t link_last_ack(klink *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t t = l->last_ack;
    pthread_mutex_unlock(&l->mu);
    return t;
}

void link_stop(klink *l)
{
    pthread_mutex_lock(&l->mu);
    send_kind(l, AOS_KIND_STOP, 0, NULL);
    pthread_mutex_unlock(&l->mu);
}

size_t link_in_flight(klink *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

uint64_t link_bad_messages(klink *l)
{
    return l->bad;
}

void link_counts(klink *l, uint64_t *tx_msgs, uint64_t *tx_frames, uint64_t *rx_msgs,
                 uint64_t *rx_frames)
{
    *tx_msgs = l->tx_msgs;
    *tx_frames = l->tx_frames;
    *rx_msgs = l->rx_msgs;
    *rx_frames = l->rx_frames;
}
