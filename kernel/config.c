/* aosd's flags, environment and optional JSON config file (jansson), resolved once.
 * Precedence: flag > environment > config file > default. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
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
            "the log to DIR/aosd.log (opened safely by aosd itself) instead of stderr.\n");
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

/* The JSON file holds the same settings as the flags, by the same names. */
static int load_file(kcfg *c, const char *path)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fprintf(stderr, "aosd: config %s:%d: %s\n", path, je.line, je.text);
        return 2;
    }
    int rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "pg_dsn") && json_is_string(v))
            rc = set_str(c->pg_dsn, sizeof c->pg_dsn, json_string_value(v), "pg_dsn");
        else if (!strcmp(key, "restart_intensity") && json_is_string(v))
            rc = set_intensity(c, json_string_value(v));
        else if (!strcmp(key, "heartbeat_ms") && json_is_integer(v) && json_integer_value(v) > 0)
            c->heartbeat_ms = (uint64_t)json_integer_value(v);
        else if (!strcmp(key, "heartbeat_timeout_ms") && json_is_integer(v) &&
                 json_integer_value(v) > 0)
            c->heartbeat_timeout_ms = (uint64_t)json_integer_value(v);
        else {
            fprintf(stderr, "aosd: config %s: unknown or mistyped key '%s'\n", path, key);
            rc = 2;
        }
        if (rc)
            break;
    }
    json_decref(root);
    return rc;
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
    const char *dir = NULL, *file = NULL;
    int rc = 0;

    /* the config file first, so flags override it */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--config"))
            file = argv[i + 1];
    if (file && (rc = load_file(c, file)))
        return rc;
    const char *env = getenv("AOS_PG_DSN");
    if (env && *env && (rc = set_str(c->pg_dsn, sizeof c->pg_dsn, env, "AOS_PG_DSN")))
        return rc;

    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout);
        if (!strcmp(a, "--version")) {
            printf("aosd %s\n", AOS_VERSION);
            return -1;
        }
        if (!strcmp(a, "--test-hooks")) {
            c->test_hooks = 1;
            continue;
        }
        if (!strcmp(a, "--log")) {
            c->log_to_file = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "aosd: unknown option or missing value: %s\n", a);
            return usage(stderr);
        }
        i++;
        if (!strcmp(a, "--data-dir"))
            dir = v;
        else if (!strcmp(a, "--config"))
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
        } else {
            fprintf(stderr, "aosd: unknown option: %s\n", a);
            return usage(stderr);
        }
    }
    if (rc)
        return rc;
    if (c->heartbeat_ms == 0 || c->heartbeat_timeout_ms <= c->heartbeat_ms) {
        fprintf(stderr, "aosd: the heartbeat timeout must be longer than its interval\n");
        return 2;
    }

    if (aos_data_dir(dir, c->data_dir, sizeof c->data_dir) != AOS_OK) {
        fprintf(stderr, "aosd: cannot determine the data dir (too long, or no $HOME); "
                        "give --data-dir\n");
        return 2;
    }
    /* absolute: aosd works from / (no hold on whoever's directory started it), and the
     * servers' sandboxes keep paths by their absolute names */
    if (c->data_dir[0] != '/') {
        char cwd[AOS_PATH_MAX], abs[AOS_PATH_MAX];
        if (!getcwd(cwd, sizeof cwd) ||
            snprintf(abs, sizeof abs, "%s/%s", cwd, c->data_dir) >= (int)sizeof abs) {
            fprintf(stderr, "aosd: cannot make the data dir %s absolute\n", c->data_dir);
            return 2;
        }
        snprintf(c->data_dir, sizeof c->data_dir, "%s", abs);
    }
    /* unix socket paths are short: check the longest one we will create */
    if (strlen(c->data_dir) + sizeof "/run/storage.sock" > AOS_PATH_MAX - 8) {
        fprintf(stderr, "aosd: data dir path %s is too long for Unix sockets (max ~%d)\n",
                c->data_dir, AOS_PATH_MAX - 30);
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
    const char *pgb = getenv("AOS_PG_BINDIR");
    snprintf(c->pg_bin_dir, sizeof c->pg_bin_dir, "%s",
             pgb && *pgb ? pgb : "/usr/lib/postgresql/15/bin");

    return 0;
}
