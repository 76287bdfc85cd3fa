/* libaos durable steps: an agent's run (an id recorded durably, found again after a crash)
 * and its steps (LLM calls, tool runs) recorded in aos-storage's step log and replayed.
 *
 * A run is the agent's one unit of work. Its id is chosen when it starts and kept in the
 * agent's own key/value namespace ("aos.run.current" holds the id of the unfinished run,
 * "aos.run/<id>" its record as JSON: state, started_ms, ended_ms, steps, reason), so an
 * agent restarted by aosd (after its own crash, or aosd's) opens the same run again, and
 * `aosctl agent runs NAME` reads the same records. Why kv rather than the kernel's agent
 * record: it lives in PostgreSQL next to the step log, needs no new kernel method, only
 * the agent (and an admin) can see it, and every write of it is an audited effectful call.
 *
 * "aos.run.current" is written before the new run's record, so a crash between the two
 * leaves the run findable (its record is written when it is opened again).
 *
 * Each step looks up its place in the run's step log first:
 * - recorded: the recorded reply is returned, nothing is executed again;
 * - an LLM step not recorded: llm.chat is called, then its reply recorded. The request id
 *   is derived from (run, step), and aos-llm keeps each reply by request id in llm.calls:
 *   an agent killed between the reply and its record asks again with the same id and gets
 *   the kept reply, not a second paid call. Only when aos-llm itself died mid-call (before
 *   it kept the reply) is the call paid again, at most once per crash;
 * - a tool step not recorded: a `tool.start` record first, then tool.run, then the
 *   `tool.end` record. A start found without its end (a crash in between) sends tool.run
 *   again with the same derived request id, which aos-tool never runs twice: the result
 *   it kept, or CONFLICT ("started already": it ran, or was running, in an aos-tool that
 *   died) which becomes AOS_ERR_INTERRUPTED, recorded as the step's outcome; a request
 *   that never reached aos-tool runs now, for the first time. A tool run cancelled because
 *   its caller died (aosd cancels a call whose caller went away) is INTERRUPTED as well;
 *   an LLM call cancelled so is asked again under a new id (it may have been paid in part).
 * An agent must be deterministic in the steps it asks for: a tool step whose request
 * differs from the recorded one is CONFLICT (the run diverged), as is a step of another
 * kind than the recorded one.
 *
 * Ownership: an aos_run is the caller's (aos_run_close); replies are aos_reply as for
 * aos_call (aos_reply_clear). One run is used from one thread. */
#ifndef AOS_STEP_H
#define AOS_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "aos/aos.h"

#define AOS_RUN_KEY_CURRENT "aos.run.current"
#define AOS_RUN_KEY_PREFIX "aos.run/"
/* a run id is "r-" and 32 hex digits, within the envelope's AOS_RUN_ID_MAX */
#define AOS_RUN_REASON_MAX 400       /* bytes of a finished run's reason */

typedef struct aos_run aos_run;

typedef enum {
    AOS_RUN_RUNNING,
    AOS_RUN_DONE,
    AOS_RUN_FAILED,
    AOS_RUN_INTERRUPTED,   /* ended on a tool step whose outcome is unknown */
} aos_run_state;
/* "running", "done", "failed", "interrupted"; NULL for a value out of range. */
const char *aos_run_state_name(aos_run_state s);
/* -1 when name is none of them. */
int aos_run_state_parse(const char *name);

/* Open the agent's run: the one "aos.run.current" names if it is unfinished (*resumed =
 * 1: its recorded steps will replay), else a new one. A current run that finished is
 * handed back finished (*resumed = 1, aos_run_state_of says how, its steps refuse) unless
 * fresh is set, which starts a new run after it: a restart after a crash must not begin
 * the agent's work again, a wake for new work must (fresh). agent_id: NULL on an agent's
 * own connection; the agent's name on the control socket. On AOS_OK the caller owns *out.
 * why (may be NULL) gets a failure's reason. */
aos_err aos_run_open(aos_conn *c, const char *agent_id, int fresh, aos_run **out, int *resumed,
                     char *why, size_t whylen);
/* RUNNING until the run finished (here, or before a crash). */
aos_run_state aos_run_state_of(const aos_run *r);
/* The run's id, owned by r. */
const char *aos_run_id(const aos_run *r);
/* Steps of the log taken so far (a tool step takes two: its start and its end). */
uint64_t aos_run_position(const aos_run *r);
/* 1 while the next step will come from the log (a replay), 0 once the run is live. */
int aos_run_replaying(aos_run *r);
/* Record the end: state (not RUNNING) and a reason (may be NULL), with the steps taken.
 * It stays the agent's current run until aos_run_open(fresh) starts the next. Idempotent. */
aos_err aos_run_finish(aos_run *r, aos_run_state state, const char *reason, char *why,
                       size_t whylen);
/* NULL is fine. */
void aos_run_close(aos_run *r);

/* An LLM step: build(arg, &buf, &len) packs the ChatRequest (malloc'd, handed over) and is
 * called only when the step is live (a replay needs no request: the agent's context may
 * well be further on than it was then). reply: as aos_call's, status included; a
 * recorded reply comes back the same way. Transport failures (UNAVAILABLE, TIMEOUT,
 * RATE_LIMITED) are retried with the same request id until timeout_ms, then returned
 * unrecorded; any other outcome is recorded. */
typedef aos_err (*aos_step_build_fn)(void *arg, uint8_t **buf, size_t *len);
aos_err aos_step_llm(aos_run *r, aos_step_build_fn build, void *arg, uint32_t timeout_ms,
                     aos_reply *reply);
/* A tool step: req is the packed tool.RunRequest. reply as for aos_step_llm; its status
 * AOS_ERR_INTERRUPTED (with a message) when the tool started and its outcome is lost:
 * the agent decides what to do, nothing is run again. */
aos_err aos_step_tool(aos_run *r, const void *req, size_t len, uint32_t timeout_ms,
                      aos_reply *reply);

typedef enum {
    AOS_STEP_AFTER,     /* record after the reply: the server dedups by request id */
    AOS_STEP_STARTED,   /* record a start before: a lost outcome comes back INTERRUPTED */
} aos_step_policy;
/* Any call as a step of kind (a name: [A-Za-z0-9_.:-]). aos_step_llm is kind "llm",
 * AOS_STEP_AFTER; aos_step_tool is "tool", AOS_STEP_STARTED (log kinds "tool.start",
 * "tool.end"). req may be NULL when build is given (then build packs it lazily). */
aos_err aos_step_call(aos_run *r, const char *kind, const char *method, aos_step_policy pol,
                      const void *req, size_t len, aos_step_build_fn build, void *arg,
                      uint32_t timeout_ms, aos_reply *reply);

/* A step whose outcome a function makes (not one call: a receive that waits for mail, a
 * read of several calls) as a step of kind (AOS_STEP_AFTER's rules): found in the log, the
 * recorded outcome comes back and fn is not called; else fn(arg, reply) fills reply (its
 * status, error and payload: the outcome) and returns AOS_OK to have it recorded before
 * this returns (the outcome's status is returned), or an error: a failure to make the
 * outcome, returned unrecorded (the next try is the same step). A crash between fn and the
 * record calls fn again: what it does must be safe to do twice (a receive whose message
 * stays in the inbox until it is acked after the record is). */
typedef aos_err (*aos_step_fn)(void *arg, aos_reply *reply);
aos_err aos_step_do(aos_run *r, const char *kind, aos_step_fn fn, void *arg, aos_reply *reply);

/* The request id of step `position` (1, 2, ...) of run: derived, so a retry after a crash
 * sends the same one. For other idempotent writes an agent makes in that step, salt
 * tells them apart (0 is the step's own call). */
void aos_step_request_id(const char *run, uint64_t position, uint32_t salt,
                         uint8_t id[AOS_ID_LEN]);

#endif
