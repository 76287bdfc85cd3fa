/* The integration harness: starts a real aosd (with its real servers and embedded
 * PostgreSQL) on a fresh data dir, talks to it, and checks nothing is left behind. */
#ifndef AOS_HARNESS_H
#define AOS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aos/aos.h"

typedef struct h_aosd h_aosd;

/* Path of build/bin/<name> (from $AOS_BIN_DIR, set by ctest). Static storage per call site
 * is not needed: the result is valid until the next h_bin call on this thread. */
const char *h_bin(const char *name);

/* Start aosd on a new data dir under /tmp with extra_args (NULL-terminated, may be NULL)
 * and wait until every server and postgres is running (60 s). Fails the test (cmocka
 * fail_msg) when it cannot. Caller owns the result: h_stop. */
h_aosd *h_start(const char *const *extra_args);
/* SIGTERM aosd, wait for exit 0, check that no process it started is left, remove the
 * data dir. */
void h_stop(h_aosd *h);
/* kill -9 aosd and check that no process it started outlives it (10 s). */
void h_kill9(h_aosd *h);

const char *h_data_dir(const h_aosd *h);
pid_t h_aosd_pid(const h_aosd *h);
/* The harness's own connection to the control socket (owned by the harness). */
aos_conn *h_conn(h_aosd *h);

/* The pid of child `name` ("storage", "postgres") as kernel.status reports it, 0 if
 * none; state (if not NULL, cap 32) receives its state. */
pid_t h_child(h_aosd *h, const char *name, char *state);
/* Wait until `name` is running with a pid other than not_pid (0: any). Returns the pid,
 * 0 on timeout. */
pid_t h_wait_running(h_aosd *h, const char *name, pid_t not_pid, uint32_t timeout_ms);
/* Wait until `name` is in state (e.g. "failed"); 1 when it got there. */
int h_wait_state(h_aosd *h, const char *name, const char *state, uint32_t timeout_ms);

/* Print the end of aosd's log (and PostgreSQL's) to stderr: for a test's failure path. */
void h_dump_log(const h_aosd *h);

/* Run build/bin/aosctl --data-dir DIR ARGS... (argv NULL-terminated); stdout goes into out
 * (cap bytes, NUL-terminated, may be NULL). Returns aosctl's exit code. */
int h_aosctl(h_aosd *h, char *out, size_t cap, const char *const *argv);

#endif
