/* The outbox: "when more than one envelope is waiting for the link, send them as one
 * message; never wait to fill a batch", with a byte cap and waits for room. */
#include "outbox.h"

#include <pthread.h>
#include <stdlib.h>

#include "aos/batch.h"
#include "aos/envelope.h"
#include "aos/log.h"
#include "monotime.h"

/* A frame must pass aosd's receive cap of AOS_MSG_MAX, which counts PAIR1's 4-byte hop
 * header too. */
#define OB_FRAME_CAP (AOS_MSG_MAX - 64u)

/* Encoded envelopes waiting for the send in flight, in one frame being built. */
typedef struct oframe {
    struct oframe *next;
    aos_batch b;
    nng_msg *raw;             /* or one envelope too big for any frame, sent alone */
    size_t bytes;
} oframe;

/* Why this batches at all: with SENDBUF 0, PAIR1's send aio completes when the pipe takes
 * the message (nng 1.5.2: pair1_sock_send hands it straight to an idle pipe, else parks
 * the aio until pair1_pipe_send_cb frees the pipe). So one message is on the wire, the
 * next is in the aio, and whatever is produced meanwhile piles up here and leaves as one
 * frame when the aio completes. An idle link sends an envelope at once, unframed. */
struct outbox {
    nng_socket sock;
    nng_aio *tx;
    pthread_mutex_t mu;
    pthread_cond_t room;      /* bytes went down, or a waiter's call was cancelled */
    int busy;                 /* tx is in flight; nothing is queued while it is not */
    oframe *head, *tail;
    size_t bytes, peak;
    atomic_ullong msgs, frames, waits, dropped;
};

static void tx_start(outbox *o, nng_msg *m)
{
    atomic_fetch_add(&o->msgs, 1);
    nng_aio_set_msg(o->tx, m);
    nng_send_aio(o->sock, o->tx);
}

/* The next message to send (NULL: the queue is empty, and the outbox idle again). */
static nng_msg *take_next(outbox *o)
{
    for (;;) {
        pthread_mutex_lock(&o->mu);
        oframe *f = o->head;
        if (!f) {
            o->busy = 0;
            pthread_cond_broadcast(&o->room);
            pthread_mutex_unlock(&o->mu);
            return NULL;
        }
        o->head = f->next;
        if (!o->head)
            o->tail = NULL;
        o->bytes -= f->bytes;
        pthread_cond_broadcast(&o->room);
        pthread_mutex_unlock(&o->mu);
        nng_msg *m = f->raw;
        if (!m) {
            unsigned n = f->b.n;
            m = aos_batch_take(&f->b); /* NULL: a frame whose only add failed */
            if (m && n == 1) /* a lone envelope goes as itself: strip both headers */
                nng_msg_trim(m, AOS_BATCH_HDR + AOS_BATCH_REC_HDR);
            else if (m)
                atomic_fetch_add(&o->frames, 1);
        }
        free(f);
        if (m)
            return m;
    }
}

static void on_sent(void *arg)
{
    outbox *o = arg;
    int rv = nng_aio_result(o->tx);
    if (rv != 0) {
        /* the link is closing (the server exits when it goes) or refused the message */
        nng_msg_free(nng_aio_get_msg(o->tx));
        nng_aio_set_msg(o->tx, NULL);
        if (rv != NNG_ECLOSED)
            aos_warn("send to aosd failed: %s", nng_strerror(rv));
    }
    nng_msg *m = take_next(o);
    if (m)
        tx_start(o, m);
}

aos_err ob_new(nng_socket sock, outbox **out)
{
    outbox *o = calloc(1, sizeof *o);
    if (!o)
        return AOS_ERR_NOMEM;
    o->sock = sock;
    if (nng_aio_alloc(&o->tx, on_sent, o) != 0) {
        free(o);
        return AOS_ERR_NOMEM;
    }
    pthread_mutex_init(&o->mu, NULL);
    mt_cond_init(&o->room);
    *out = o;
    return AOS_OK;
}

void ob_push(outbox *o, nng_msg *m, int mode)
{
    size_t len = nng_msg_len(m);
    pthread_mutex_lock(&o->mu);
    if (!o->busy) { /* idle (so nothing queued): off at once, alone */
        o->busy = 1;
        pthread_mutex_unlock(&o->mu);
        tx_start(o, m);
        return;
    }
    if (mode == OB_DROPPABLE && o->bytes + len > OB_HARD_CAP)
        goto drop;
    oframe *f = o->tail;
    if (!f || f->raw || !aos_batch_fits(&f->b, len)) {
        if (!(f = calloc(1, sizeof *f)))
            goto drop;
        aos_batch_init(&f->b, OB_FRAME_CAP);
        if (!aos_batch_fits(&f->b, len)) {
            f->raw = m;
            m = NULL;
        }
        if (o->tail)
            o->tail->next = f;
        else
            o->head = f;
        o->tail = f;
    }
    if (m) {
        /* grow the frame geometrically: nng would reallocate to the exact size each time */
        if (f->b.msg) {
            size_t need = nng_msg_len(f->b.msg) + AOS_BATCH_REC_HDR + len;
            size_t cap = nng_msg_capacity(f->b.msg);
            if (cap < need) {
                size_t want = cap * 2 > need ? cap * 2 : need;
                (void)nng_msg_reserve(f->b.msg, want < OB_FRAME_CAP ? want : OB_FRAME_CAP);
            }
        }
        if (aos_batch_add(&f->b, nng_msg_body(m), len) != AOS_OK)
            goto drop; /* no memory: the frame keeps what it had */
        nng_msg_free(m);
    }
    f->bytes += len;
    o->bytes += len;
    if (o->bytes > o->peak)
        o->peak = o->bytes;
    pthread_mutex_unlock(&o->mu);
    return;
drop:
    pthread_mutex_unlock(&o->mu);
    nng_msg_free(m);
    if (atomic_fetch_add(&o->dropped, 1) % 1000 == 0)
        aos_warn("outbox over %u MiB (aosd is not reading): dropped a reply",
                 OB_HARD_CAP >> 20);
}

aos_err ob_wait_room(outbox *o, const atomic_int *cancelled, uint64_t deadline_ms)
{
    aos_err rc = AOS_OK;
    int waited = 0;
    pthread_mutex_lock(&o->mu);
    while (o->bytes > OB_SOFT_CAP) {
        if (atomic_load(cancelled)) {
            rc = AOS_ERR_CANCELLED;
            break;
        }
        uint64_t now = aos_now_ms();
        if (deadline_ms && now >= deadline_ms) {
            rc = AOS_ERR_TIMEOUT;
            break;
        }
        if (!waited++)
            atomic_fetch_add(&o->waits, 1);
        /* bounded, so the wall-clock deadline is seen without a wake-up */
        uint64_t ms = deadline_ms && deadline_ms - now < 100 ? deadline_ms - now : 100;
        struct timespec ts = mt_in_us(ms * 1000u);
        pthread_cond_timedwait(&o->room, &o->mu, &ts);
    }
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void ob_wake(outbox *o)
{
    pthread_mutex_lock(&o->mu);
    pthread_cond_broadcast(&o->room);
    pthread_mutex_unlock(&o->mu);
}

int ob_idle(outbox *o)
{
    pthread_mutex_lock(&o->mu);
    int idle = !o->busy;
    pthread_mutex_unlock(&o->mu);
    return idle;
}

void ob_get_stats(outbox *o, ob_stats *st)
{
    pthread_mutex_lock(&o->mu);
    st->bytes = o->bytes;
    st->peak = o->peak;
    pthread_mutex_unlock(&o->mu);
    st->msgs = atomic_load(&o->msgs);
    st->frames = atomic_load(&o->frames);
    st->waits = atomic_load(&o->waits);
    st->dropped = atomic_load(&o->dropped);
}
