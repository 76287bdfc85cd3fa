/* The LLM queue: the router's side of the scheduler. Every llm.* call of the LLM class
 * is described (provider, estimated tokens, price) and queued here; admitted calls go on
 * to aos-llm, their replies correct the estimates, a 429 puts them back in the queue. */
#ifndef AOS_LLMQ_H
#define AOS_LLMQ_H

#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "llm.pb-c.h"

typedef struct sched_item llmq_ticket;   /* one queued or admitted call */

/* What the router gets back: go(call) when a queued call may be forwarded now, fail(call,
 * status, why) when it must be answered without (its deadline came in the queue). Called
 * with no lock of the queue held, on the thread that made room (a submit, a reply) or on
 * the queue's timer thread. */
typedef struct llmq_hooks {
    void (*go)(void *call);
    void (*fail)(void *call, aos_err status, const char *why);
} llmq_hooks;

/* Once, before the router opens: the providers and their limits from aos.yaml (cfg is
 * borrowed for the process's life), the data dir (fd, kept) where the admin's settings
 * and the usage so far are kept across restarts (DATA/sched.state). Starts the timer. */
aos_err llmq_open(const Aos__Llm__Config *cfg, int data_dir_fd, const llmq_hooks *hooks,
                  char *why, size_t whylen);
/* Writes the state file a last time; calls still queued are left to the exit. */
void llmq_close(void);

/* The router keeps each call's ticket in a slot (NULL until queued); these functions
 * read and write it under the queue's lock only, so the router never reads it itself. */

/* Queue a call (method llm.chat or llm.embed, its payload undecoded) for agent, to start
 * by deadline (monotonic ms). AOS_OK with *queued 1: queued, go or fail will follow (maybe
 * before this returns, on this thread); AOS_OK with *queued 0: not scheduled (a model no
 * provider lists, a payload that is not a request: aos-llm answers why), forward it now. Any other status: refused (a budget, a cap, a deadline that cannot be met), why
 * says so; nothing was queued. */
aos_err llmq_submit(void *call, const char *method, const char *agent, const uint8_t *payload,
                    size_t len, uint64_t deadline_ms, llmq_ticket **slot, int *queued,
                    char *why, size_t whylen);

/* The final answer to a call, whoever wrote it (reply: the server's REPLY; NULL when aosd
 * answers itself, fail's TIMEOUT included; streamed: parts were passed on). Returns 1 when
 * the call went back in the queue (a 429 before any part): go will run again and this
 * answer is to be dropped. Else 0, and the slot is NULL again. Nothing when it is NULL. */
int llmq_done(llmq_ticket **slot, nng_msg *reply, int status, int streamed);
/* The call's caller is gone. 1: it was still queued and now is not (answer it CANCELLED;
 * the slot is NULL); 0: it is admitted (its answer still comes to llmq_done) or has none. */
int llmq_cancel(llmq_ticket **slot);

/* kernel.sched: SchedReply into *out (malloc'd, the caller frees). */
aos_err llmq_status(uint8_t **out, size_t *len, char *why, size_t whylen);
/* kernel.sched.set: payload is a SchedSetRequest. */
aos_err llmq_set(const uint8_t *payload, size_t len, char *why, size_t whylen);

/* An agent's settings from its manifest (weight, class, budgets: sched_set_agent's). */
aos_err llmq_agent_set(const char *agent, double weight, int batch, uint64_t token_budget,
                       uint64_t cost_budget_micro_usd, char *why, size_t whylen);
/* What the agent has used and waited (see sched_agent_used): 1, or 0 when unknown. */
int llmq_agent_used(const char *agent, uint64_t *tokens, uint64_t *cost_micro_usd,
                    uint64_t *wait_total_us);

#endif
