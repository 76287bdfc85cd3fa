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

/* ---- the restart policy: pure, so it is unit-tested on its own ---------------------- */

typedef struct sup_policy {
    int permanent;            /* 1: always restarted; 0 (transient): only after a failure */
    unsigned intensity;       /* more than this many restarts ... */
    uint64_t period_ms;       /* ... within this window: failed */
    uint64_t stable_ms;       /* up at least this long: the next restart is immediate */
    uint64_t backoff_min_ms;  /* then backoff doubles from here ... */
    uint64_t backoff_max_ms;  /* ... up to here */
} sup_policy;

#define SUP_HIST 128
typedef struct sup_track {
    uint64_t at[SUP_HIST];    /* exit times (monotonic ms), a ring */
    unsigned n;               /* exits recorded (ring holds the last SUP_HIST) */
    unsigned streak;          /* quick exits in a row */
} sup_track;

typedef enum { SUP_ACT_RESTART, SUP_ACT_FAIL, SUP_ACT_DONE } sup_action;

/* A child exited (clean: exit 0) after running ran_ms. Decide, record it in t, and give
 * the delay before the restart or the reason it is failed. */
sup_action sup_decide(sup_track *t, const sup_policy *p, int clean, uint64_t ran_ms,
                      uint64_t now_ms, uint64_t *delay_ms, char *reason, size_t reason_len);

/* ---- the children ------------------------------------------------------------------ */

/* Resolve each child's own account (when root: aos-pg, aos-storage, ...; refused with
 * the fix when one is missing). First, before the data dir is made. */
aos_err sup_users(char *why, size_t whylen);
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
