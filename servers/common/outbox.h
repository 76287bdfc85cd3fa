/* A server's outbox to aosd: one send in flight on the link, everything produced meanwhile
 * queued and sent as batch frames when it completes; capped in bytes, with back-pressure. */
#ifndef AOS_OUTBOX_H
#define AOS_OUTBOX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>

#include "aos/err.h"

/* Producers of parts wait for room above OB_SOFT_CAP (the back-pressure a streaming
 * handler feels); replies and heartbeat echoes never wait (a receive callback must not
 * block) and are dropped only above OB_HARD_CAP, when aosd has stopped reading for long:
 * the caller times out, and a retry gets the recorded answer. */
#define OB_SOFT_CAP (16u << 20)
#define OB_HARD_CAP (64u << 20)

typedef struct outbox outbox;

/* An outbox on sock, a PAIR1 socket whose NNG_OPT_SENDBUF is 0 (then a send completes
 * when the pipe takes the message, which is what lets the queue build up). The caller
 * owns *out; it lives as long as the process (servers _exit). */
aos_err ob_new(nng_socket sock, outbox **out);

enum { OB_KEEP, OB_DROPPABLE };

/* Queue one encoded envelope, taken over whatever happens. Never blocks. An idle link
 * sends it at once, alone; else it waits for the send in flight and leaves in a frame
 * with whatever else is queued by then. OB_DROPPABLE: dropped above OB_HARD_CAP. */
void ob_push(outbox *o, nng_msg *m, int mode);

/* Wait while the queue is over OB_SOFT_CAP: AOS_OK once there is room, CANCELLED as soon
 * as *cancelled is set (ob_wake wakes the wait), TIMEOUT at deadline_ms (wall clock; 0:
 * none). */
aos_err ob_wait_room(outbox *o, const atomic_int *cancelled, uint64_t deadline_ms);
/* Wake every ob_wait_room, so that one whose *cancelled was set returns. */
void ob_wake(outbox *o);

/* 1 when nothing is queued and no send is in flight. */
int ob_idle(outbox *o);

typedef struct ob_stats {
    size_t bytes, peak;        /* queued now; the most ever queued */
    uint64_t msgs, frames;     /* nng messages sent; of them, batch frames */
    uint64_t waits, dropped;   /* producers that waited for room; envelopes dropped */
} ob_stats;
void ob_get_stats(outbox *o, ob_stats *st);

#endif
