/* Agents as processes: the table of applied agents, each spawned confined (bubblewrap,
 * seccomp, rlimits, a uid no server has), supervised, identified by its link, and governed. */
#ifndef AOS_AGENTS_H
#define AOS_AGENTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "config.h"
#include "datadir.h"
#include "methods.h"

/* A kernel method that answers later (a storage write first, a wake): the router gives
 * it a handle, the module calls kreply_send exactly once (any thread). */
typedef struct kreply kreply;
/* payload (len bytes) is copied; why may be NULL. Frees k. */
void kreply_send(kreply *k, aos_err status, const char *why, const uint8_t *payload,
                 size_t len);
/* The monotonic deadline of the request k answers. */
uint64_t kreply_deadline(const kreply *k);

/* Once, after sup_init and before the router opens: DATA/workspaces (shared with aos-tool;
 * an older DATA/agents/NAME is moved there) and
 * DATA/run/agent/ (the agents' socket, the only thing of DATA an agent sees), the
 * agents' account, the seccomp program. url gets the agent socket's nng address. */
aos_err agents_init(const kcfg *c, const datadir *d, char *url, size_t urlcap, char *why,
                    size_t whylen);
/* After the router made the agent socket: it becomes the agents' uid's. */
aos_err agents_socket_made(char *why, size_t whylen);
/* Ask aos-storage for the applied agents (once, at start: the request waits on the link
 * until storage is ready); they are started as they come back. */
void agents_load(void);
/* Timers: wakes, backoff restarts, stop escalation, wall-time budgets. Main loop. */
uint64_t agents_tick(uint64_t now_mono);
/* A child exited that the supervisor does not know: 1 when it was an agent's (handled). */
int agents_reaped(pid_t pid, int wait_status);
/* 1 when pid is a process aosd spawned for an agent (the orphan sweep leaves it). */
int agents_own_pid(pid_t pid);
/* aosd stops: every agent is asked to stop, then killed; agents_stopped() when all are. */
void agents_shutdown(void);
int agents_stopped(void);
/* Agents with a process still; agents_kill_all SIGKILLs them (a shutdown's timeout). */
unsigned agents_running(void);
void agents_kill_all(void);

/* ---- identity: the agent socket's pipes ---------------------------------------------- */

/* ADD_PRE of a pipe on the agent socket whose peer is pid: admitted (0) only when pid is
 * an agent's process (the one aosd spawned or a descendant of it); the pipe is then that
 * agent's. Else -1 with why. */
int agents_admit(uint32_t pipe, pid_t pid, char *why, size_t whylen);
void agents_pipe_gone(uint32_t pipe);
/* 1 when pid is an agent's process or a descendant of one. */
int agents_pid_is_agent(pid_t pid);
/* The agent a pipe belongs to, into name (AOS_AGENT_ID_MAX + 1): 1, or 0 for none. */
int agents_of_pipe(uint32_t pipe, char *name, size_t cap);

/* ---- rights: before the router forwards an agent's syscall ----------------------------- */

/* Checks req (its agent id already the pipe's) against the agent's manifest. AOS_OK: go
 * on; *payload and *len may then point to a rewritten payload (malloc'd, the caller frees it
 * and forwards that instead; NULL: as it came). REFUSED (why says which right) or
 * another error. */
aos_err agents_check(const char *agent, const kmethod *km, const aos_env *req,
                     uint8_t **payload, size_t *len, char *why, size_t whylen);
/* An agent's call of class cls began / ended (what ps shows it waiting on). */
void agents_call(const char *agent, km_class cls, int begin);
/* A call of the agent was refused outside agents_check (the scheduler: a budget, a cap):
 * counted with its other refusals. */
void agents_refused(const char *agent);

/* 1 when an agent of that name is applied (not removed). */
int agents_applied(const char *name);
/* ---- retention's questions (retain.c) -------------------------------------------------- */

/* 1 when an agent of that name is in the table (applied, or removed and not reaped yet),
 * and also while the deployment is not read back (nothing is known to be unused then). */
int agents_in_use(const char *name);
/* The names under DATA/workspaces that are agent names: *out (n of them, each and the
 * array malloc'd, the caller frees both; NULL when none). */
aos_err agents_ws_names(char ***out, size_t *n, char *why, size_t whylen);
/* Remove DATA/workspaces/NAME with everything in it, and its log DATA/agent-logs/NAME,
 * unless agents_in_use(name): then CONFLICT. A missing one is AOS_OK. */
aos_err agents_ws_remove(const char *name, char *why, size_t whylen);
/* Its workspace's last change (the directory's mtime, wall ms): 0, or -1 with none. */
int agents_ws_mtime(const char *name, uint64_t *ms);

/* ---- mail: msg.c's questions and the wake it triggers ---------------------------------- */

/* May agent from ("" : the operator, who may mail anyone) send mail to agent to? AOS_OK;
 * NOT_FOUND (no such agent applied) or REFUSED (to is not in from's talks_to; counted as
 * a refusal of from's), why says which. */
aos_err agents_may_mail(const char *from, const char *to, char *why, size_t whylen);
/* The applied agents whose manifest subscribes to topic: *out (n names, malloc'd, each
 * and the array freed by the caller). NOT_FOUND when topic is not the deployment's. */
aos_err agents_subscribers(const char *topic, char ***out, size_t *n, char *why,
                           size_t whylen);
/* Mail is durable in agent's inbox or replies: its count moves and its receive waiting in
 * kernel.agent.wait (mail) wakes with "message"; one not waiting yet returns at once. */
void agents_mail_arrived(const char *agent);
/* aosd's own request to aos-storage acting as agent (its namespace), with request_id (16
 * bytes; NULL: a fresh one) as the idempotency key; it waits on the link until storage is
 * ready and is re-sent to a restarted one within timeout_ms. done runs exactly once, no
 * lock held; payload is the reply's (valid during done). */
typedef void (*agents_storage_fn)(void *arg, int status, const uint8_t *payload, size_t len,
                                  const char *err);
void agents_storage(const char *method, const char *agent, const uint8_t *request_id,
                    uint32_t timeout_ms, const ProtobufCMessage *msg, agents_storage_fn done,
                    void *arg);

/* ---- methods (methods.c lists them) ----------------------------------------------------- */

/* admin: kernel.agent.apply (answers once the changes are durable in aos-storage) */
void agents_m_apply(const aos_env *req, const char *caller, kreply *k);
/* admin: kernel.agent.list, kernel.agent.ctl, kernel.agent.logs */
void agents_m_list(const aos_env *req, const char *caller, kreply *k);
void agents_m_ctl(const aos_env *req, const char *caller, kreply *k);
void agents_m_logs(const aos_env *req, const char *caller, kreply *k);
/* agent: kernel.agent.self, kernel.agent.step, kernel.agent.wait (caller: the pipe's) */
void agents_m_self(const aos_env *req, const char *caller, kreply *k);
void agents_m_step(const aos_env *req, const char *caller, kreply *k);
void agents_m_wait(const aos_env *req, const char *caller, kreply *k);

#endif
