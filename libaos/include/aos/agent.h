/* libaos for an agent program: the identity aosd gave the process (its environment and
 * kernel.agent.self), step boundaries the kernel can stop or suspend at, and idle waits. */
#ifndef AOS_AGENT_H
#define AOS_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "aos/aos.h"

/* What aosd puts in an agent's environment when it spawns it. */
#define AOS_AGENT_URL_ENV "AOS_AGENT_URL"   /* its link, e.g. ipc:///run/aos/agent.sock */
#define AOS_AGENT_NAME_ENV "AOS_AGENT_NAME"

typedef struct aos_agent aos_agent; /* opaque; one per process, used from one thread */

/* Connect with the identity the kernel gave this process (its environment) and learn its
 * name and manifest (kernel.agent.self). On AOS_OK the caller owns *out (aos_agent_close).
 * AOS_ERR_NOT_FOUND, with why, when the process was not started by aosd (no
 * AOS_AGENT_URL); the connection's or the call's error otherwise. why may be NULL. */
aos_err aos_agent_open(aos_agent **out, char *why, size_t whylen);
/* Closes the connection and frees a. NULL is fine. */
void aos_agent_close(aos_agent *a);

/* The connection, for aos_call and the storage/memory wrappers: owned by a, valid until
 * aos_agent_close. The kernel knows who is on it: an agent id in the call options is not
 * needed, and is never trusted. */
aos_conn *aos_agent_conn(aos_agent *a);
/* The name the kernel says this agent has (kernel.agent.self, not the environment). Owned
 * by a. */
const char *aos_agent_name(const aos_agent *a);
/* Its manifest as JSON text ("" when the kernel sent none). Owned by a. */
const char *aos_agent_manifest(const aos_agent *a);
/* 1 for the first process of this agent, +1 per restart (kernel.agent.self). */
uint64_t aos_agent_incarnation(const aos_agent *a);
/* The steps aos_agent_step has reported so far. */
uint64_t aos_agent_steps(const aos_agent *a);

/* A step boundary: tells aosd (kernel.agent.step with the step count, this one included)
 * and sets *action to what to do now: AOS_AGENT_CONTINUE, or AOS_AGENT_STOP (finish up
 * and exit 0). A suspend is handled inside: the kernel holds the call and freezes the
 * process in it, so it returns CONTINUE once resumed (STOP if stopped meanwhile), however
 * long that took: a call whose deadline passed while frozen is asked again with the same
 * request id, which the kernel counts once. A failed call does not count the step (call
 * again to report it). why (may be NULL) gets the reason of a failure. */
typedef enum { AOS_AGENT_CONTINUE, AOS_AGENT_STOP } aos_agent_action;
aos_err aos_agent_step(aos_agent *a, aos_agent_action *action, char *why, size_t whylen);
/* The run (aos_run_id of libaos aos/step.h) the next steps belong to: the kernel counts the
 * manifest's budgets.steps per run, so a new run starts at 0 and the same run resumed after a
 * restart (the agent's or aosd's) goes on from its count; past it aos_agent_step is
 * AOS_ERR_REFUSED with the kernel's reason. A step replayed from the log is not a step
 * boundary (nothing runs): an agent does not report it. "" for none (all such steps share
 * one count). AOS_ERR_USAGE for a NULL or an id past AOS_RUN_ID_MAX. */
aos_err aos_agent_set_run(aos_agent *a, const char *run_id);

/* Idle until the next wake: kernel.agent.wait with a long deadline, issued again when the
 * deadline passes without a wake. *why_woken (cap bytes) gets the kernel's reason: "timer"
 * or "stop" (then finish up and exit 0). err (may be NULL) gets the reason of a failure. */
aos_err aos_agent_wait(aos_agent *a, char *why_woken, size_t cap, char *err, size_t errlen);

#endif
