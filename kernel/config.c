/* aosd's flags, environment and aos.yaml (read by conf.c), resolved once.
 * Precedence: flag > environment > configuration file > default. */
#include "config.h"

#include "diskguard.h"
#include "logs.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(FILE *f)
{
    fprintf(f,
            "usage: aosd [--data-dir DIR] [--config FILE] [--pg-dsn DSN]\n"
            "            [--restart-intensity R/T] [--stable-ms MS] [--heartbeat-ms MS]\n"
            "            [--heartbeat-timeout-ms MS] [--stop-timeout-ms MS] [--workers N]\n"
            "            [--bin-dir DIR] [--log] [--test-hooks]\n"
            "Runs the aos kernel in the foreground: supervises PostgreSQL (embedded unless\n"
            "--pg-dsn or AOS_PG_DSN is given) and the servers, and routes requests from\n"
            "DIR/control.sock. DIR: --data-dir, $AOS_DATA_DIR, /var/lib/aos for root, else\n"
            "$XDG_DATA_HOME/aos or ~/.local/share/aos. R/T: R restarts in T seconds, then\n"
            "the child is marked failed (default 5/30). --log: after start-up checks, write\n"
            "the log to DIR/aosd.log (opened safely by aosd itself) instead of stderr.\n"
            "--config FILE: the YAML configuration (default DIR/aos.yaml; without it, the\n"
            "built-in defaults: the sim LLM provider only); its keys are the flags' names\n"
            "with _ (restart_intensity: 5/30) and llm: (see tools/aos.example.yaml).\n"
            "Precedence: flag > environment > file > default.\n");
    return f == stdout ? -1 : 2;
}

static int set_str(char *dst, size_t cap, const char *v, const char *what)
{
    if (strlen(v) >= cap) {
        fprintf(stderr, "aosd: %s is too long (max %zu bytes)\n", what, cap - 1);
        return 2;
    }
    snprintf(dst, cap, "%s", v);
    return 0;
}

static int set_u64(uint64_t *dst, const char *v, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || !*v || *end || x > 86400000ull) {
        fprintf(stderr, "aosd: %s: '%s' is not a number of milliseconds\n", what, v);
        return 2;
    }
    *dst = x;
    return 0;
}

static int set_intensity(kcfg *c, const char *v)
{
    unsigned r, t;
    char extra;
    if (sscanf(v, "%u/%u%c", &r, &t, &extra) != 2 || r == 0 || t == 0 || r > 100000 ||
        t > 86400) {
        fprintf(stderr, "aosd: --restart-intensity wants R/T (restarts/seconds), got '%s'\n",
                v);
        return 2;
    }
    c->intensity = r;
    c->period_ms = (uint64_t)t * 1000u;
    return 0;
}

/* The options that take a value: the first pass over argv needs to know them. */
static const char *const value_opts[] = {
    "--data-dir", "--config", "--pg-dsn", "--bin-dir", "--restart-intensity", "--stable-ms",
    "--heartbeat-ms", "--heartbeat-timeout-ms", "--stop-timeout-ms", "--workers", NULL};

static int takes_value(const char *a)
{
    for (int i = 0; value_opts[i]; i++)
        if (!strcmp(a, value_opts[i]))
            return 1;
    return 0;
}

/* Reachable from here until the exit (kcfg holds a const view of it). */
static conf *loaded;

/* The file's settings, under the environment's and the flags' that are applied after. */
static int load_file(kcfg *c, const char *file)
{
    char path[AOS_PATH_MAX + 16], why[1024];
    if (!file && conf_default_path(c->data_dir, path, sizeof path) != AOS_OK) {
        fprintf(stderr, "aosd: data dir path %s is too long\n", c->data_dir);
        return 2;
    }
    conf *cf;
    aos_err err = conf_load(file ? file : path, file != NULL, &cf, why, sizeof why);
    if (err != AOS_OK) {
        fprintf(stderr, "aosd: %s\n", why);
        return err == AOS_ERR_USAGE || err == AOS_ERR_TOO_BIG ? 2 : 1;
    }
    for (size_t i = 0; i < conf_nwarnings(cf); i++)
        fprintf(stderr, "aosd: warning: %s: %s\n", conf_path(cf), conf_warning(cf, i));
    /* The keys are in the llm configuration now, which only aos-llm gets (on a sealed
     * memfd); out of the environment they go, so that no child (postgres, initdb, a
     * server, and later a tool) can inherit one, whatever its variable is called. Done
     * here, while aosd is still one thread. */
    const Aos__Llm__Config *lc = conf_llm(cf);
    for (size_t i = 0; lc && i < lc->n_providers; i++) {
        const ProtobufCBinaryData *v = &lc->providers[i]->api_key_env;
        char name[256];
        if (v->len && v->len < sizeof name) {
            memcpy(name, v->data, v->len);
            name[v->len] = 0;
            unsetenv(name);
        }
    }
    const conf_kernel *k = conf_kernel_settings(cf);
    _Static_assert(sizeof c->pg_dsn == sizeof k->pg_dsn && sizeof c->bin_dir == sizeof
                   k->bin_dir && sizeof c->pg_bin_dir == sizeof k->pg_bin_dir, "same caps");
    if (k->has_pg_dsn)
        snprintf(c->pg_dsn, sizeof c->pg_dsn, "%s", k->pg_dsn);
    if (k->has_bin_dir)
        snprintf(c->bin_dir, sizeof c->bin_dir, "%s", k->bin_dir);
    if (k->has_pg_bin_dir)
        snprintf(c->pg_bin_dir, sizeof c->pg_bin_dir, "%s", k->pg_bin_dir);
    if (k->has_restart_intensity) {
        c->intensity = k->intensity;
        c->period_ms = k->period_ms;
    }
    if (k->has_stable_ms)
        c->stable_ms = k->stable_ms;
    if (k->has_heartbeat_ms)
        c->heartbeat_ms = k->heartbeat_ms;
    if (k->has_heartbeat_timeout_ms)
        c->heartbeat_timeout_ms = k->heartbeat_timeout_ms;
    if (k->has_stop_timeout_ms)
        c->stop_timeout_ms = k->stop_timeout_ms;
    if (k->has_workers)
        c->workers = k->workers;
    if (k->has_log)
        c->log_to_file = k->log;
    if (k->has_audit_fail_open)
        c->audit_fail_open = k->audit_fail_open;
    if (k->has_log_max_mb)
        c->log_max_mb = k->log_max_mb;
    if (k->has_log_keep)
        c->log_keep = k->log_keep;
    if (k->has_disk_min_free_mb)
        c->disk_min_free_mb = k->disk_min_free_mb;
    if (k->has_run_retention_s)
        c->run_retention_s = k->run_retention_s;
    if (k->has_run_prune_interval_s)
        c->run_prune_interval_s = k->run_prune_interval_s;
    if (k->has_agent_memory_mb)
        c->agent_memory_mb = k->agent_memory_mb;
    if (k->has_agent_pids_max)
        c->agent_pids_max = k->agent_pids_max;
    conf_free(loaded);
    loaded = cf;
    c->cf = cf;
    return 0;
}

/* Absolute (aosd works from /, and the servers' sandboxes keep paths by their absolute
 * names) and short enough for the Unix sockets made in it. */
static int resolve_data_dir(kcfg *c, const char *dir)
{
    if (aos_data_dir(dir, c->data_dir, sizeof c->data_dir) != AOS_OK) {
        fprintf(stderr, "aosd: cannot determine the data dir (too long, or no $HOME); "
                        "give --data-dir\n");
        return 2;
    }
    if (c->data_dir[0] != '/') {
        char cwd[AOS_PATH_MAX], abs[AOS_PATH_MAX];
        if (!getcwd(cwd, sizeof cwd) ||
            snprintf(abs, sizeof abs, "%s/%s", cwd, c->data_dir) >= (int)sizeof abs) {
            fprintf(stderr, "aosd: cannot make the data dir %s absolute\n", c->data_dir);
            return 2;
        }
        snprintf(c->data_dir, sizeof c->data_dir, "%s", abs);
    }
    if (strlen(c->data_dir) + sizeof "/run/storage.sock" > AOS_PATH_MAX - 8) {
        fprintf(stderr, "aosd: data dir path %s is too long for Unix sockets (max ~%d)\n",
                c->data_dir, AOS_PATH_MAX - 30);
        return 2;
    }
    return 0;
}

int kcfg_load(kcfg *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->intensity = 5;
    c->period_ms = 30000;
    c->stable_ms = 1000;
    c->backoff_max_ms = 1000; /* the long tail of recovery is this cap: keep it short */
    c->heartbeat_ms = 1000;
    c->heartbeat_timeout_ms = 5000;
    c->stop_timeout_ms = 5000;
    c->log_max_mb = LOGS_MAX_MB_DEFAULT;
    c->log_keep = LOGS_KEEP_DEFAULT;
    c->disk_min_free_mb = DISKGUARD_MIN_FREE_MB_DEFAULT;
    c->run_retention_s = CONF_RETENTION_DEFAULT_S;
    c->run_prune_interval_s = CONF_PRUNE_INTERVAL_DEFAULT_S;
    c->agent_memory_mb = 1024; /* a program that thinks through syscalls needs little */
    c->agent_pids_max = 512;   /* its threads: nng's and its own */
    snprintf(c->pg_bin_dir, sizeof c->pg_bin_dir, "/usr/lib/postgresql/15/bin");
    const char *dir = NULL, *file = NULL;
    int rc = 0;

    /* first the line's shape, --help and the two flags that find the file: --help works
     * whatever the file says, and the data dir names the default file */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout);
        if (!strcmp(a, "--version")) {
            printf("aosd %s\n", AOS_VERSION);
            return -1;
        }
        if (!strcmp(a, "--test-hooks") || !strcmp(a, "--log"))
            continue;
        if (!takes_value(a)) {
            fprintf(stderr, "aosd: unknown option: %s\n", a);
            return usage(stderr);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "aosd: %s needs a value\n", a);
            return usage(stderr);
        }
        if (!strcmp(a, "--data-dir"))
            dir = argv[i + 1];
        else if (!strcmp(a, "--config"))
            file = argv[i + 1];
        i++;
    }
    if ((rc = resolve_data_dir(c, dir)) || (rc = load_file(c, file)))
        return rc;

    const char *env = getenv("AOS_PG_DSN");
    if (env && *env && (rc = set_str(c->pg_dsn, sizeof c->pg_dsn, env, "AOS_PG_DSN")))
        return rc;
    const char *pgb = getenv("AOS_PG_BINDIR");
    if (pgb && *pgb && (rc = set_str(c->pg_bin_dir, sizeof c->pg_bin_dir, pgb,
                                     "AOS_PG_BINDIR")))
        return rc;

    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--test-hooks")) {
            c->test_hooks = 1;
            continue;
        }
        if (!strcmp(a, "--log")) {
            c->log_to_file = 1;
            continue;
        }
        const char *v = argv[++i]; /* the first pass saw that every option has its value */
        if (!strcmp(a, "--data-dir") || !strcmp(a, "--config"))
            ;
        else if (!strcmp(a, "--pg-dsn"))
            rc = set_str(c->pg_dsn, sizeof c->pg_dsn, v, "--pg-dsn");
        else if (!strcmp(a, "--bin-dir"))
            rc = set_str(c->bin_dir, sizeof c->bin_dir, v, "--bin-dir");
        else if (!strcmp(a, "--restart-intensity"))
            rc = set_intensity(c, v);
        else if (!strcmp(a, "--stable-ms"))
            rc = set_u64(&c->stable_ms, v, a);
        else if (!strcmp(a, "--heartbeat-ms"))
            rc = set_u64(&c->heartbeat_ms, v, a);
        else if (!strcmp(a, "--heartbeat-timeout-ms"))
            rc = set_u64(&c->heartbeat_timeout_ms, v, a);
        else if (!strcmp(a, "--stop-timeout-ms"))
            rc = set_u64(&c->stop_timeout_ms, v, a);
        else if (!strcmp(a, "--workers")) {
            uint64_t w;
            rc = set_u64(&w, v, a);
            if (!rc && (w == 0 || w > 64)) {
                fprintf(stderr, "aosd: --workers must be 1..64\n");
                rc = 2;
            }
            c->workers = (unsigned)w;
        }
    }
    if (rc)
        return rc;
    if (c->heartbeat_ms == 0 || c->heartbeat_timeout_ms <= c->heartbeat_ms) {
        fprintf(stderr, "aosd: the heartbeat timeout must be longer than its interval\n");
        return 2;
    }
    if (c->bin_dir[0] && c->bin_dir[0] != '/') {
        char abs[PATH_MAX];
        if (!realpath(c->bin_dir, abs) || strlen(abs) >= sizeof c->bin_dir) {
            fprintf(stderr, "aosd: --bin-dir %s: %s\n", c->bin_dir, strerror(errno));
            return 2;
        }
        snprintf(c->bin_dir, sizeof c->bin_dir, "%s", abs);
    }
    if (!c->bin_dir[0]) {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            fprintf(stderr, "aosd: cannot find my own executable; give --bin-dir\n");
            return 1;
        }
        self[n] = 0;
        char *slash = strrchr(self, '/');
        *slash = 0;
        snprintf(c->bin_dir, sizeof c->bin_dir, "%s", self);
    }
    return 0;
}
