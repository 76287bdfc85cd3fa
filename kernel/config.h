/* aosd's configuration: flags, environment and <data-dir>/aos.yaml, resolved once at start
 * into one read-only struct that every kernel module reads. */
#ifndef AOS_KCONFIG_H
#define AOS_KCONFIG_H

#include <stdint.h>
#include <sys/types.h>

#include "aos/aos.h"
#include "conf.h"

typedef struct kcfg {
    char data_dir[AOS_PATH_MAX];
    char bin_dir[4096];          /* where aos-<server> live: next to aosd by default */
    char pg_bin_dir[4096];       /* initdb and postgres */
    char pg_dsn[1024];           /* external PostgreSQL (admin conninfo); empty: embedded */
    int log_to_file;             /* --log: stderr goes to DATA/aosd.log once DATA is safe */
    int test_hooks;
    unsigned intensity;          /* at most this many restarts ... */
    uint64_t period_ms;          /* ... in this window, else failed */
    uint64_t stable_ms;          /* a child up this long restarts at once when it dies */
    uint64_t backoff_max_ms;
    uint64_t heartbeat_ms;       /* interval */
    uint64_t heartbeat_timeout_ms;
    uint64_t stop_timeout_ms;    /* STOP -> SIGTERM -> SIGKILL steps */
    unsigned workers;            /* passed to servers (0: their default) */
    unsigned log_max_mb, log_keep; /* aos.yaml's log rotation (see logs.h) */
    unsigned disk_min_free_mb;   /* aos.yaml's disk guard (see diskguard.h) */
    uint64_t run_retention_s;    /* aos.yaml's retention of finished runs (see retain.h) */
    uint64_t run_prune_interval_s;
    unsigned agent_memory_mb;    /* each agent's cgroup: memory.max in MiB ... */
    unsigned agent_pids_max;     /* ... and pids.max */
    int audit_fail_open;         /* effectful syscalls go on without their audit record
                                  * when aos-audit is away (the gap is recorded later) */
    const conf *cf;              /* aos.yaml as loaded (or the built-in defaults): the LLM
                                  * gateway's part is handed to aos-llm; kept to the exit */
} kcfg;

/* Parse argv, the environment and the configuration file (--config FILE, else
 * <data-dir>/aos.yaml if it is there); precedence flag > environment > file > default. On
 * error prints why and returns 2 (usage) or 1. Returns 0 and fills c, or -1 when
 * --help/--version was handled (exit 0). c->cf is owned by this module and lives until the
 * process exits (a second kcfg_load frees the first one's). */
int kcfg_load(kcfg *c, int argc, char **argv);

#endif
