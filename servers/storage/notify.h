/* Queue wake-ups: one LISTEN connection, owned by a thread of its own, wakes the workers
 * that wait in queue.recv when a NOTIFY for their queue arrives, so nobody polls. */
#ifndef STG_NOTIFY_H
#define STG_NOTIFY_H

#include <stdint.h>

#include "stg.h"

#define STG_NOTIFY_CHANNEL "aos_storage_queue"

typedef struct notify_waiter {
    const char *agent;
    const char *queue;
    int fired;
    struct notify_waiter *next;
} notify_waiter;

/* dsn: the server role's conninfo; the listener thread starts now and connects on its
 * own, reconnecting with backoff. Caller owns the result; NULL on failure (receivers then
 * look again every 250 ms). */
/* after_drop: the process is root now and drops to its own user later (a server under
 * aosd): the listener connects only after that, as peer authentication wants. */
stg_notify *notify_new(const char *dsn, int after_drop);
/* Stop the listener and release every waiter (they see notify_wait return -1). The
 * structure stays valid for workers still inside it; the process is about to exit. */
void notify_stop(stg_notify *n);
/* Stop and free: only when no worker can be inside. */
void notify_free(stg_notify *n);

/* Arm before looking at the queue, so that a message sent after the look wakes us. */
void notify_arm(stg_notify *n, notify_waiter *w, const char *agent, const char *queue);
/* Sleep until the waiter fires or until_mono_ms (aos_mono_ms clock). While the listener is
 * not connected, sleeps at most 250 ms (it may have missed notifications). Re-arms.
 * Returns 0, or -1 once the listener was stopped (the server is going away). */
int notify_wait(stg_notify *n, notify_waiter *w, uint64_t until_mono_ms);
void notify_disarm(stg_notify *n, notify_waiter *w);
/* Notifications received so far, and whether LISTEN is up (for stats). */
uint64_t notify_count(stg_notify *n);
int notify_listening(stg_notify *n);

#endif
