/* An agent's state record: what a restarted aosd must know of it (done or failed, why, its
 * restarts, the steps of its current run), one small JSON value per agent in aosd's storage namespace. Pure: no I/O. */
#ifndef AOS_AGSTATE_H
#define AOS_AGSTATE_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define AGST_REASON_MAX 256u     /* bytes of reason and of stopped, with the NUL */
#define AGST_RECORD_MAX 4096u    /* bytes of a record: a longer value is not one of ours */
#define AGST_RESTARTS_MAX 1000000000u
#define AGST_RUN_MAX 65u         /* bytes of run, with the NUL: libaos AOS_RUN_ID_MAX + 1 */

typedef enum { AGST_LIVE, AGST_DONE, AGST_FAILED } agst_state;

typedef struct agst {
    agst_state state;            /* LIVE: start it again; DONE/FAILED: it stays so */
    char reason[AGST_REASON_MAX];  /* as ps showed it: the last exit and why */
    char stopped[AGST_REASON_MAX]; /* who stopped it ("stopped by the admin"), "" if none */
    unsigned restarts;
    int64_t at_ms;               /* wall clock when written */
    char run[AGST_RUN_MAX];      /* the run its last step belonged to ("" none); optional */
    uint64_t run_steps;          /* its steps in that run (budgets.steps counts them) */
} agst;

/* The record's JSON (keys sorted, compact). A reason that is not UTF-8 (a message cut inside
 * a character) is cut back to a whole one, else its non-ASCII bytes become '?'. malloc'd, the
 * caller frees; NULL when out of memory. */
char *agst_encode(const agst *s);
/* A stored value back, checked whole (it is read from storage, so untrusted): AOS_OK with
 * *out filled, else AOS_ERR_USAGE with why naming the field; *out is then zeroed. */
aos_err agst_decode(const uint8_t *buf, size_t len, agst *out, char *why, size_t whylen);

/* 1 when s (n bytes, not NUL-terminated) is a run id a record may hold, else 0. */
int agst_run_ok(const char *s, size_t n);

/* A durable run's record, as libaos (aos/step.h) writes it under AOS_RUN_KEY_PREFIX in the
 * agent's own namespace. The agent may write there too, so it is read as untrusted. */
#define AGST_RUNREC_REASON_MAX 401u /* bytes of reason, with the NUL: AOS_RUN_REASON_MAX + 1 */
typedef struct agst_runrec {
    char run[AGST_RUN_MAX];      /* "r-" and hex digits */
    int state;                   /* an aos_run_state */
    uint64_t started_ms, ended_ms, steps;
    char reason[AGST_RUNREC_REASON_MAX]; /* UTF-8 (JSON's), cut at AOS_RUN_REASON_MAX bytes */
} agst_runrec;
/* AOS_OK with *out filled, else AOS_ERR_USAGE with why naming the field (*out zeroed). */
aos_err agst_runrec_decode(const uint8_t *buf, size_t len, agst_runrec *out, char *why,
                           size_t whylen);
/* May retention remove this run now (wall ms)? Only a finished one that ended at least
 * keep_s ago; never one still running, whatever its age. */
int agst_runrec_expired(const agst_runrec *r, uint64_t now_ms, uint64_t keep_s);

#endif
