/* Retention: aosd itself removes finished agent runs (their steps and records) and the
 * workspaces of agents no longer applied once they are run_retention_s old; never one in use. */
#ifndef AOS_KERNEL_RETAIN_H
#define AOS_KERNEL_RETAIN_H

#include "agents.h"
#include "aos/envelope.h"

/* After agents_init: starts the thread that prunes every interval_s (0: only when asked),
 * the first time min(interval_s, 60) s from now. keep_s: run_retention_s. */
aos_err retain_start(uint64_t keep_s, uint64_t interval_s, char *why, size_t whylen);
/* From aosd's stop: no storage call begins after it and the thread ends at its next call
 * boundary. Waits for that at most wait_ms; 0 only tells it (a later call waits), else a
 * thread still in a call to a dying server is left to the exit. Idempotent. */
void retain_stop(uint64_t wait_ms);

/* admin: kernel.agent.prune (PruneRequest -> PruneReply), answered when the pass is done */
void retain_m_prune(const aos_env *req, const char *caller, kreply *k);

#endif
