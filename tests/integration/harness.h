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

/* text into path (created or truncated); fails the test when it cannot. */
void h_write_file(const char *path, const char *text);
/* yaml as dir's aos.yaml, then h_start_on(dir) with 120 s to get ready; fails the test
 * (naming dir and why) when aosd does not come up. Caller owns the result: h_stop. */
h_aosd *h_start_yaml(const char *dir, const char *yaml);
/* kernel.agent.apply of a deployment's yaml (named file in errors), with prune, within 30 s:
 * the reply's status; a failure's message is printed. */
int h_apply(h_aosd *h, const char *yaml, size_t len, const char *file, int prune);

/* Run build/bin/aosctl --data-dir DIR ARGS... (argv NULL-terminated); stdout goes into out
 * (cap bytes, NUL-terminated, may be NULL). Returns aosctl's exit code. */
int h_aosctl(h_aosd *h, char *out, size_t cap, const char *const *argv);

/* ---- privilege separation (privsep_test) -------------------------------------------- */

struct Aos__StatusReply;

/* 0 when the per-server uids can be tested (root, and the users of tools/deps.sh exist);
 * else 1 with why filled in, for cmocka's skip(). */
int h_privsep_skip_reason(char *why, size_t cap);
/* uid and gid of a user; 0 when there is no such user. */
int h_user(const char *user, uid_t *uid, gid_t *gid);
/* aosd's log (its stdout and stderr, which carry the servers' lines too). */
const char *h_log_path(const h_aosd *h);
/* h_stop, but the data dir is kept: its path goes into dir (cap bytes). */
void h_stop_keep(h_aosd *h, char *dir, size_t cap);
/* Start aosd on an existing data dir and wait up to timeout_ms until everything runs.
 * NULL when aosd exited or never got ready: why says which, the dir (and the log in it)
 * is kept and nothing aosd started is left running. */
h_aosd *h_start_on(const char *dir, const char *const *extra_args, uint32_t timeout_ms,
                   char *why, size_t whylen);
/* tests/llm_endpoint's aos-test-llm-endpoint on a free port of 127.0.0.1, with --stdin-eof
 * (it ends when its stdin, ours, closes: also when we die), --max-s 3600 and no --log (a
 * line per request would be part of what a benchmark measures), plus extra_args
 * (NULL-terminated, may be NULL). 0, or -1 with the reason on stderr. */
typedef struct h_endpoint {
    pid_t pid;
    int port;
    int stdin_w;
} h_endpoint;
int h_endpoint_start(h_endpoint *ep, const char *const *extra_args);
/* Closes its stdin, waits up to 2 s, then SIGKILL. */
void h_endpoint_stop(h_endpoint *ep);

/* The OpenAI text deltas ("delta":{"content":) in a streamed body fed as it comes in
 * pieces, a pattern cut by a read boundary counted too. Zero it to start a body. */
#define H_DELTA_PAT "\"delta\":{\"content\":"
typedef struct h_deltas {
    unsigned n;
    char carry[sizeof H_DELTA_PAT];
    size_t carry_len;
} h_deltas;
void h_deltas_feed(h_deltas *d, const char *data, size_t len);

/* aosd exits by itself (aosctl shutdown): wait up to timeout_ms, want exit 0 and nothing it
 * started left running; h is freed, the data dir kept (its path into dir). */
void h_wait_gone(h_aosd *h, uint32_t timeout_ms, char *dir, size_t cap);
/* h_kill9, but the data dir is kept: its path goes into dir (cap bytes). */
void h_kill9_keep(h_aosd *h, char *dir, size_t cap);
/* Remove a data dir kept by h_stop_keep or h_start_on (symlinks removed, not followed). */
void h_remove_dir(const char *dir);
/* kernel.status decoded (free with aos__status_reply__free_unpacked); NULL with why. */
struct Aos__StatusReply *h_status(h_aosd *h, char *why, size_t whylen);
/* Run argv (argv[0] an absolute path) as user (setpriv --reuid --regid --clear-groups;
 * NULL: as we are) with a minimal environment; stdout and stderr into out (cap bytes,
 * NUL-terminated, may be NULL). Returns the exit code, 128+signal, -1 after timeout_ms
 * (the process is killed). */
int h_run_as(const char *user, const char *const *argv, char *out, size_t cap,
             uint32_t timeout_ms);
/* fork, become user (groups cleared), return fn(arg)'s result (0..254) as the exit code.
 * fn runs in a child of a possibly threaded process: system calls only, no malloc. */
int h_as_user(const char *user, int (*fn)(void *arg), void *arg);

#endif

/* Appended for the listener limits (issue 13, finding 6; issue 14, section 0). */
#include <nng/nng.h>
/* nng_close(s) on a detached thread, waiting at most ms: nng 1.5.2's close can wait for
 * ever after the peer cut a connection mid-send. 1 when it returned in time; else the
 * socket is left to the process exit (a line on stderr says so). */
int h_nng_close(nng_socket s, unsigned ms);
/* Open fds of pid (from /proc/<pid>/fd), -1 when it cannot be read. */
int h_fd_count(pid_t pid);
/* Lines of aosd's log that contain needle, -1 when the log cannot be read. */
int h_log_count(const h_aosd *h, const char *needle);
/* The latency of the disk under dir: n writes of 4 KiB each followed by fdatasync, gap_us
 * apart, in us; p50, p99 and the worst (any may be NULL). A durable commit cannot be
 * faster than this, nor its tail shorter. -1 when dir cannot be written. */
int h_fsync_lat(const char *dir, unsigned n, unsigned gap_us, uint64_t *p50, uint64_t *p99,
                uint64_t *max);
