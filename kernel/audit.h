/* aosd's side of the black box: one audit event per routed syscall, batched into audit.emit
 * requests on aos-audit's link, and the "durable before it takes effect" wait the router needs. */
#ifndef AOS_KAUDIT_H
#define AOS_KAUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "aos/envelope.h"
#include "aos/err.h"

/* Called once the event is durable (AOS_OK) or will not be (UNAVAILABLE, FAILED, with
 * err): on an nng thread or the flusher, never under a lock of the caller's; must not block. */
typedef void (*kaud_done_fn)(void *arg, aos_err status, const char *err);

/* The phase of a syscall an event records. BEGIN: before it is forwarded (the request, its
 * argument digest); END: its outcome (status, latency). */
typedef enum { KAUD_BEGIN, KAUD_END } kaud_phase;

/* Start the flusher thread. fail_open: effectful syscalls do not wait for their records
 * (the router reads kaud_fail_open); lost events are then declared by a "gap" event. */
aos_err kaud_open(int fail_open, char *why, size_t whylen);
/* Stop the flusher; whatever still waits is answered UNAVAILABLE. */
void kaud_close(void);
int kaud_fail_open(void);

/* 1 when method's calls are recorded: not the audit's own methods, nor the transport's
 * and the monitors' (stream pulls, pings, stats, kernel.status): they change nothing and
 * a watcher polling them would bury the agents' records. */
int kaud_records(const char *method);

/* Record a phase of req (its ids, agent, run and step, method; the payload's digest for
 * BEGIN). parent_span: the span (AOS_SPAN_LEN bytes) of the call req works for, or NULL. done NULL: fire and forget. Otherwise done runs exactly once: AOS_OK when the
 * record is committed, else UNAVAILABLE no later than deadline_mono (monotonic ms). */
void kaud_event(const aos_env *req, const uint8_t *parent_span, kaud_phase phase,
                int status, uint64_t latency_us, uint64_t deadline_mono, kaud_done_fn done,
                void *arg);

/* The END record of a call the kernel itself refused or failed (a right the manifest lacks,
 * a budget, the scheduler's deadline), with the kernel's reason in it. Only aosd's own words
 * go here, never a server's or a provider's error text (which may quote a key). done as
 * for kaud_event. */
void kaud_refusal(const aos_env *req, const uint8_t *parent_span, int status,
                  uint64_t latency_us, uint64_t deadline_mono, kaud_done_fn done, void *arg,
                  const char *why);

/* A decision detail of aosd's own about req (kind "front.tool_results", body a JSON text
 * of at most a few KiB, contents as digests), under req's ids; fire and forget. */
void kaud_detail(const aos_env *req, const char *kind, const char *body);

/* Figures for kernel.status / tests. */
typedef struct kaud_stats {
    uint64_t events, emits, durable_waits, failed_waits, lost, gaps;
    uint64_t queued;       /* events not yet handed to aos-audit (kaud_get_stats fills it) */
    uint64_t oldest_ms;    /* how long the oldest of them has waited, ms: the audit lag */
} kaud_stats;
void kaud_get_stats(kaud_stats *st);

#endif
