/* aosd's side of a server link: PAIR1 with a peer-pid check, an aio receive loop, and
 * the in-flight table that outlives server crashes (re-sent when the next one is READY). */
#include "link.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "aos/log.h"
#include "listen.h"

#define LINK_PENDING_MAX 8192  /* requests kept per server; beyond: unavailable */
#define LINK_BUCKETS 1024
#define LINK_SENDBUF 1024      /* messages nng buffers towards the server */
/* A request in hand when its server died this many times is a poison pill: answered
 * with an error instead of being re-sent to crash the next incarnation too. */
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
    link_done_fn done;
    void *arg;
    int sent;                  /* handed to the current incarnation */
    int deaths;                /* incarnations that died with it in hand */
    struct pending *prev, *next, *hnext;
} pending;

struct klink {
    char name[16];
    int idx;
    nng_socket sock;
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
    size_t n;
    atomic_ullong bad;
    link_ready_fn on_ready;
    void *arg;
};

static atomic_ullong next_link_id = 1;

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
}

static pending *lookup(klink *l, uint64_t id)
{
    for (pending *p = l->buckets[id % LINK_BUCKETS]; p; p = p->hnext)
        if (p->id == id)
            return p;
    return NULL;
}

/* Non-blocking: nothing in aosd ever waits on a slow server. A message that does not fit
 * now stays unsent and the tick tries again. */
static int try_send(klink *l, nng_msg *m)
{
    nng_msg *d;
    if (nng_msg_dup(&d, m) != 0)
        return -1;
    if (nng_sendmsg(l->sock, d, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(d);
        return -1;
    }
    return 0;
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
    if (nng_sendmsg(l->sock, m, NNG_FLAG_NONBLOCK) != 0)
        nng_msg_free(m);
}

static void answer_all(pending *list, int status, const char *err);

static void resend_unsent(klink *l)
{
    for (pending *p = l->head; p; p = p->next)
        if (!p->sent && try_send(l, p->msg) == 0)
            p->sent = 1;
}

/* A peer that sends something impossible is broken: drop its pipe, which ends it (a
 * server exits when its link closes) and the supervisor restarts it. */
static void broken(klink *l, nng_msg *m, const char *why)
{
    l->bad++;
    aos_warn("%s sent an invalid message (%s): closing its link", l->name, why);
    nng_pipe p = nng_msg_get_pipe(m);
    nng_msg_free(m);
    nng_pipe_close(p);
}

static void on_recv(void *arg)
{
    receiver *rx = arg;
    klink *l = rx->l;
    if (nng_aio_result(rx->aio) != 0)
        return; /* closed or stopped */
    nng_msg *m = nng_aio_get_msg(rx->aio);
    aos_env e;
    char why[160];
    if (aos_env_decode(nng_msg_body(m), nng_msg_len(m), &e, why, sizeof why) != AOS_OK) {
        broken(l, m, why);
        goto next;
    }
    switch (e.kind) {
    case AOS_KIND_REPLY: {
        pthread_mutex_lock(&l->mu);
        pending *p = lookup(l, e.link_id);
        if (p)
            unhook(l, p);
        pthread_mutex_unlock(&l->mu);
        if (p) { /* else a late duplicate (re-sent request answered twice): dropped */
            p->done(p->arg, m, e.status, NULL);
            m = NULL;
            nng_msg_free(p->msg);
            free(p);
        }
        break;
    }
    case AOS_KIND_REPLY_PART:
        /* streamed replies: forwarded once clients have a streaming link (agents) */
        break;
    case AOS_KIND_HEARTBEAT:
        pthread_mutex_lock(&l->mu);
        l->last_ack = aos_mono_ms();
        pthread_mutex_unlock(&l->mu);
        break;
    case AOS_KIND_READY: {
        nng_pipe from = nng_msg_get_pipe(m);
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
        broken(l, m, "a kind a server never sends");
        goto next;
    }
    aos_env_clear(&e);
    if (m)
        nng_msg_free(m);
next:
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

aos_err link_open(klink **out, const char *name, const char *url, int idx,
                  link_ready_fn on_ready, void *arg, char *why, size_t whylen)
{
    klink *l = calloc(1, sizeof *l);
    if (!l)
        return AOS_ERR_NOMEM;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->idx = idx;
    l->on_ready = on_ready;
    l->arg = arg;
    l->pipe = (nng_pipe)NNG_PIPE_INITIALIZER;
    l->attached = (nng_pipe)NNG_PIPE_INITIALIZER;
    pthread_mutex_init(&l->mu, NULL);
    int rv;
    if ((rv = nng_pair1_open(&l->sock)) != 0) {
        snprintf(why, whylen, "link %s at %s: %s", name, url, nng_strerror(rv));
        pthread_mutex_destroy(&l->mu);
        free(l);
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
    if ((rv = nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0 ||
        (rv = nng_socket_set_int(l->sock, NNG_OPT_SENDBUF, LINK_SENDBUF)) != 0 ||
        (rv = nng_socket_set_int(l->sock, NNG_OPT_RECVBUF, LINK_SENDBUF)) != 0) {
        snprintf(why, whylen, "link %s at %s: %s", name, url, nng_strerror(rv));
        rc = AOS_ERR_IO;
    } else {
        rc = lsn_open(&l->lst, l->sock, url, &lo, why, whylen);
    }
    if (rc != AOS_OK) {
        nng_close(l->sock); /* never had a pipe: this close cannot hang */
        pthread_mutex_destroy(&l->mu);
        free(l);
        return rc;
    }
    for (int i = 0; i < LINK_RECEIVERS; i++) {
        l->rx[i].l = l;
        if ((rv = nng_aio_alloc(&l->rx[i].aio, on_recv, &l->rx[i])) != 0) {
            snprintf(why, whylen, "link %s: %s", name, nng_strerror(rv));
            return AOS_ERR_NOMEM;
        }
        nng_recv_aio(l->sock, l->rx[i].aio);
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
    link_fail_all(l, AOS_ERR_UNAVAILABLE, "aosd is shutting down");
}

void link_expect(klink *l, pid_t pid)
{
    pthread_mutex_lock(&l->mu);
    l->expect = pid;
    l->ready = 0;
    pthread_mutex_unlock(&l->mu);
}

void link_down(klink *l)
{
    pending *poison = NULL, **tail = &poison;
    pthread_mutex_lock(&l->mu);
    l->ready = 0;
    l->expect = 0;
    nng_pipe p = l->pipe;
    for (pending *q = l->head, *n; q; q = n) {
        n = q->next;
        if (q->sent && ++q->deaths >= LINK_MAX_DEATHS) {
            unhook(l, q);
            q->next = NULL;
            *tail = q;
            tail = &q->next;
        }
        q->sent = 0;
    }
    pthread_mutex_unlock(&l->mu);
    if (nng_pipe_id(p) > 0)
        nng_pipe_close(p);
    char err[128];
    snprintf(err, sizeof err, "%s died %d times while handling this request: not re-sent",
             l->name, LINK_MAX_DEATHS);
    answer_all(poison, AOS_ERR_FAILED, err);
}

int link_busy(klink *l, int force)
{
    pthread_mutex_lock(&l->mu);
    nng_pipe p = l->attached;
    pthread_mutex_unlock(&l->mu);
    if (nng_pipe_id(p) <= 0)
        return 0;
    if (force)
        nng_pipe_close(p);
    return 1;
}

aos_err link_forward(klink *l, const aos_env *req, uint64_t deadline_mono, link_done_fn done,
                     void *arg)
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
    p->deadline = deadline_mono;
    p->done = done;
    p->arg = arg;
    pthread_mutex_lock(&l->mu);
    if (l->n >= LINK_PENDING_MAX) {
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
    /* sent outside the lock: the request may be answered (and freed) before the send
     * returns, so only a copy and the id are used past this point */
    nng_msg *copy = NULL;
    uint64_t id = p->id;
    if (l->ready && nng_msg_dup(&copy, p->msg) == 0)
        p->sent = 1;
    pthread_mutex_unlock(&l->mu);
    if (copy && nng_sendmsg(l->sock, copy, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(copy);
        pthread_mutex_lock(&l->mu);
        pending *q = lookup(l, id);
        if (q)
            q->sent = 0; /* the tick tries again */
        pthread_mutex_unlock(&l->mu);
    }
    return AOS_OK;
}

static void answer_all(pending *list, int status, const char *err)
{
    while (list) {
        pending *n = list->next;
        list->done(list->arg, NULL, status, err);
        nng_msg_free(list->msg);
        free(list);
        list = n;
    }
}

void link_expire(klink *l, uint64_t now)
{
    pending *gone = NULL, **tail = &gone;
    uint64_t cancel[64];
    size_t nc = 0;
    pthread_mutex_lock(&l->mu);
    for (pending *p = l->head, *n; p; p = n) {
        n = p->next;
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
