/* The supervisor: one static table of children (postgres and the five servers), their
 * restart policy after Erlang/OTP and MINIX 3, spawning by fork+exec, and stopping. */
#ifndef AOS_SUPERVISE_H
#define AOS_SUPERVISE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aos/err.h"
#include "config.h"
#include "datadir.h"
#include "link.h"

/* ---- the restart policy: pure, so it is unit-tested on its own ----------------------
 *
 * The intensity limit (more than R restarts in T seconds: failed) exists to stop a child
 * that keeps failing by itself: a crash loop. What aosd counts against it ("charged")
 * depends on who ended the child, as far as the wait status tells:
 * - the child itself: an exit status (exit 1, exec failed, a permanent child's exit 0) or
 *   a fault signal (SIGSEGV, SIGABRT, SIGSYS from seccomp, SIGBUS, ...), and a kill by aosd
 *   for a hang (no heartbeat answer). Always charged, however long it ran;
 * - maybe someone else: any other signal (SIGKILL, SIGTERM, ...), which an operator, a
 *   chaos campaign or the OOM killer may send at any moment. Charged only when it lands
 *   before READY or within loop_ms of it, where a child that cannot get going dies;
 *   later it is not, so kill -9s at any rate never make a child failed. A request that
 *   kills every incarnation it reaches is the link's to stop (answered FAILED after two
 *   deaths the server caused itself), not this count's;
 * - a dependency: an exit at a moment when the database the child needs was not running
 *   or had come back less than SUP_DEP_GRACE_MS ago is not charged (a hang excepted):
 *   the outage is the database's, counted once, against postgres.
 * After an uncharged exit of a child that ran stable_ms, what was charged before is
 * forgotten: it got going, so whatever looked like a loop is over.
 * Backoff is apart from charging: exits within stable_ms of READY, in a row, double the
 * delay from backoff_min_ms up to backoff_max_ms (excused ones too, so a dependent is never
 * restarted in a tight loop), and after a stable run the restart is immediate. So a child
 * killed now and then is back within backoff_max_ms plus its start, and kernel.status
 * shows its restarts and last exit. */

typedef struct sup_policy {
    int permanent;            /* 1: always restarted; 0 (transient): only after a failure */
    unsigned intensity;       /* more than this many charged exits ... */
    uint64_t period_ms;       /* ... within this window: failed */
    uint64_t loop_ms;         /* an exit this soon after READY is charged */
    uint64_t stable_ms;       /* up this long: the charged ones forgotten, restart at once */
    uint64_t backoff_min_ms;  /* then backoff doubles from here ... */
    uint64_t backoff_max_ms;  /* ... up to here */
} sup_policy;

/* After the database is back, this long before a dependent's exit is its own again: the
 * dependent may still be finding out that its sessions died with the old postmaster. */
#define SUP_DEP_GRACE_MS 3000u
/* loop_ms unless --stable-ms is shorter: a server's start-up threads and its first
 * requests (those re-sent at READY) are under way by then. */
#define SUP_LOOP_MS 250u

#define SUP_HIST 128
typedef struct sup_track {
    uint64_t at[SUP_HIST];    /* charged exits (monotonic ms), a ring */
    unsigned n;               /* charged exits since the last stable run */
    unsigned streak;          /* exits within stable_ms in a row (the backoff step) */
    uint64_t not_charged;     /* exits forgiven (stable run or a dependency), ever */
} sup_track;

/* How a child ended, as far as aosd knows. */
typedef struct sup_exit {
    int clean;                /* exit 0 */
    int own;                  /* it ended itself: an exit status or a fault signal */
    uint64_t ran_ms;          /* time since its READY; 0: it never got there */
    int hung;                 /* aosd killed it for not answering heartbeats */
    int excused;              /* a dependency was away (see SUP_DEP_GRACE_MS) */
} sup_exit;

/* Whether a wait status is the child's own end (see above): exited, or a fault signal. */
int sup_own_end(int wait_status);

typedef enum { SUP_ACT_RESTART, SUP_ACT_FAIL, SUP_ACT_DONE } sup_action;

/* A child exited as x says. Decide, record it in t, and give the delay before the restart.
 * reason gets why it is failed, or with a restart whether the exit counted ("counted: 2 of
 * 5 in 30 s", "not counted: it ran 1200 ms"). */
sup_action sup_decide(sup_track *t, const sup_policy *p, const sup_exit *x, uint64_t now_ms,
                      uint64_t *delay_ms, char *reason, size_t reason_len);

/* ---- the children ------------------------------------------------------------------ */

/* Resolve each child's own account (when root: aos-pg, aos-storage, ...; refused with
 * the fix when one is missing). First, before the data dir is made. The children are
 * postgres and the servers of aos/servers.h, in that order. */
aos_err sup_users(char *why, size_t whylen);
/* The account of the server that keeps DATA/workspaces, aos-tool (after sup_users); *gid
 * the directory's group, the agents' (aos-agent's when root). */
uid_t sup_ws_uid(gid_t *gid);
/* The agents' account when aosd is root; aos-tool keeps its group as a supplementary one. */
#define AOS_AGENT_USER "aos-agent"
/* PostgreSQL's account (after sup_users). */
uid_t sup_pg_uid(gid_t *gid);
/* d: the data dir, opened by dd_open; both live until sup_fini. */
aos_err sup_init(const kcfg *c, const datadir *d, char *why, size_t whylen);
void sup_fini(void);
/* What aosd's cgroup set-up achieved, for kernel.status. */
void sup_set_cgroup(const char *why);
/* Timers: start what is due, heartbeats, stop escalation, readiness, deadlines. Returns
 * the monotonic time it wants to be called again by. */
uint64_t sup_tick(uint64_t now_mono);
/* SIGCHLD: reap and apply the policy. */
void sup_reap(void);
/* Begin the orderly stop of everything; sup_stopped() says when all have exited. */
void sup_shutdown(void);
int sup_stopped(void);
/* Every enabled child (postgres too) is running: aosd is ready (systemd's READY=1). */
int sup_all_running(void);
/* kernel.shutdown (any thread): the loop stops agents, then servers, then postgres, within
 * timeout_ms for the agents (0: the default). The loop takes the request once. */
void sup_request_stop(uint64_t timeout_ms);
int sup_stop_requested(uint64_t *timeout_ms);
/* What the loop is stopping now ("agents: 3 left", "servers"), for kernel.status. */
void sup_set_phase(const char *phase);

/* For the router. The link of a server by bare name, NULL if unknown. *failed: 0, or the
 * status to answer with (AOS_ERR_FAILED: marked failed, an operator must act;
 * AOS_ERR_UNAVAILABLE: aosd is stopping), why the message. */
klink *sup_link(const char *server, int *failed, char *why, size_t whylen);
/* kernel.status: a packed StatusReply, malloc'd into *out (caller frees). */
aos_err sup_status(uint64_t bad_messages, uint64_t routed, uint8_t **out, size_t *len);
/* kernel.server.kill / restart; names are bare ("storage", "postgres"). */
aos_err sup_kill(const char *name, char *why, size_t whylen);
aos_err sup_restart(const char *name, char *why, size_t whylen);

#endif
