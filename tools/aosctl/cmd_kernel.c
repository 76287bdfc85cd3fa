/* aosctl's kernel commands: status, server kill|restart|stats NAME, ping SERVER [-n N].
 * Each decodes and checks the reply before printing it for people or as one JSON doc. */
#include "aosctl.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos.pb-c.h"
#include "aos/servers.h"

#define PING_MAX 1000000u
#define PING_PROGRESS_MIN 10000u

/* Text from aosd goes to a terminal: control characters could move the cursor. */
static void clean(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    dst[i] = 0;
}

/* 850ms, 12s, 3m12s, 2h03m, 4d07h. */
static void human_ms(uint64_t ms, char *out, size_t cap)
{
    uint64_t s = ms / 1000;
    if (ms < 1000)
        snprintf(out, cap, "%" PRIu64 "ms", ms);
    else if (s < 60)
        snprintf(out, cap, "%" PRIu64 "s", s);
    else if (s < 3600)
        snprintf(out, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(out, cap, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s / 3600 % 24);
}

/* ---- status --------------------------------------------------------------------- */

#define STATUS_COLS 8

/* Appends word to the blank-separated list in out (cap); what does not fit is dropped. */
static void add_word(char *out, size_t cap, const char *word)
{
    size_t used = strlen(out), n = strlen(word) + (used ? 1 : 0);
    if (used + n + 1 > cap)
        return;
    if (used)
        out[used++] = ' ';
    memcpy(out + used, word, strlen(word) + 1);
}

/* "uid 998 nnp seccomp capbnd=0 mnt net root=minimal": the layers that are on, as aosd
 * measured them (and the root the server says it pivoted into); "-" when not known. */
static void layers(const Aos__ChildStatus *ch, char *out, size_t cap)
{
    char w[64];
    out[0] = 0;
    if (ch->pid > 0) {
        snprintf(w, sizeof w, "uid %u", ch->uid);
        add_word(out, cap, w);
    }
    const Aos__SandboxStatus *sb = ch->sandbox;
    if (sb) {
        const Aos__SandboxReport *r = sb->report;
        if (sb->no_new_privs)
            add_word(out, cap, "nnp");
        if (sb->seccomp)
            add_word(out, cap, sb->seccomp == 2 ? "seccomp" : "seccomp=strict");
        if (sb->cap_bnd_empty)
            add_word(out, cap, "capbnd=0");
        else if (sb->cap_eff_empty)
            add_word(out, cap, "capeff=0");
        if (sb->user_ns)
            add_word(out, cap, "user");
        if (sb->mount_ns)
            add_word(out, cap, "mnt");
        if (sb->net_ns)
            add_word(out, cap, "net");
        if (r && r->root && r->root[0]) {
            char root[32];
            clean(root, sizeof root, r->root);
            snprintf(w, sizeof w, "root=%s", root);
            add_word(out, cap, w);
        }
    }
    if (!out[0])
        snprintf(out, cap, "-");
}

static void print_status(const Aos__StatusReply *s)
{
    static const char *const head[STATUS_COLS] = {"NAME",      "STATE",   "PID",
                                                  "RESTARTS",  "UPTIME",  "LAST-EXIT",
                                                  "SANDBOX",   "REASON"};
    char up[32], v[64], dd[512], pg[32];
    human_ms(s->aosd_uptime_ms, up, sizeof up);
    clean(v, sizeof v, s->version);
    clean(dd, sizeof dd, s->data_dir);
    clean(pg, sizeof pg, s->pg_mode);
    printf("aosd pid %d, up %s, version %s, pg %s, data dir %s\n", s->aosd_pid, up,
           v[0] ? v : "?", pg[0] ? pg : "?", dd[0] ? dd : "?");
    printf("routed %" PRIu64 " requests, refused %" PRIu64 " malformed messages\n",
           s->routed, s->bad_messages);
    if (s->stopping[0]) {
        char ph[128];
        clean(ph, sizeof ph, s->stopping);
        printf("STOPPING: %s\n", ph);
    }
    if (s->disk_low)
        printf("DISK NEARLY FULL: %" PRIu64 " MiB free, below %" PRIu64 " MiB: writes, tool "
               "runs and LLM calls are refused until space is freed\n", s->disk_free_mb,
               s->disk_min_free_mb);
    else if (s->disk_min_free_mb)
        printf("disk: %" PRIu64 " MiB free (writes refused below %" PRIu64 " MiB)\n",
               s->disk_free_mb, s->disk_min_free_mb);
    printf("\n");

    size_t n = s->n_children;
    char (*cells)[STATUS_COLS][256] = calloc(n ? n : 1, sizeof *cells);
    if (!cells) {
        printf("(%zu children; no memory to print them)\n", n);
        return;
    }
    size_t w[STATUS_COLS];
    for (int k = 0; k < STATUS_COLS; k++)
        w[k] = strlen(head[k]);
    for (size_t i = 0; i < n; i++) {
        const Aos__ChildStatus *ch = s->children[i];
        char (*row)[256] = cells[i];
        clean(row[0], sizeof row[0], ch->name);
        clean(row[1], sizeof row[1], ch->state);
        if (ch->pid > 0)
            snprintf(row[2], sizeof row[2], "%d", ch->pid);
        else
            snprintf(row[2], sizeof row[2], "-");
        snprintf(row[3], sizeof row[3], "%u", ch->restarts);
        if (ch->pid > 0)
            human_ms(ch->uptime_ms, row[4], sizeof row[4]);
        else
            snprintf(row[4], sizeof row[4], "-");
        clean(row[5], sizeof row[5], ch->last_exit && *ch->last_exit ? ch->last_exit : "-");
        layers(ch, row[6], sizeof row[6]);
        /* health only when it says something: "ok" on every line would hide the one that
         * is not */
        char reason[256], health[200];
        int has_reason = ch->reason && *ch->reason;
        int sick = ch->health && *ch->health && strcmp(ch->health, "ok") != 0;
        clean(reason, sizeof reason, has_reason ? ch->reason : "-");
        clean(health, sizeof health, sick ? ch->health : "");
        if (sick && has_reason)
            snprintf(row[7], sizeof row[7], "%.120s; health: %.120s", reason, health);
        else if (sick)
            snprintf(row[7], sizeof row[7], "health: %.200s", health);
        else
            snprintf(row[7], sizeof row[7], "%s", reason);
        for (int k = 0; k < STATUS_COLS; k++)
            if (strlen(row[k]) > w[k])
                w[k] = strlen(row[k]);
    }
    /* the last column is not padded, so lines carry no trailing blanks */
    for (int k = 0; k < STATUS_COLS; k++) {
        int last = k + 1 == STATUS_COLS;
        printf("%-*s%s", last ? 0 : (int)w[k], head[k], last ? "\n" : "  ");
    }
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < STATUS_COLS; k++) {
            int last = k + 1 == STATUS_COLS;
            printf("%-*s%s", last ? 0 : (int)w[k], cells[i][k], last ? "\n" : "  ");
        }
    }
    free(cells);
}

/* A uint64 as JSON: null past int64 (an rlimit of RLIM_INFINITY), which JSON readers
 * would otherwise see wrapped to a negative number. */
static json_t *u64_json(uint64_t v)
{
    return v > INT64_MAX ? json_null() : json_integer((json_int_t)v);
}

static json_t *sandbox_json(const Aos__SandboxStatus *sb)
{
    if (!sb)
        return json_null();
    const Aos__SandboxReport *r = sb->report;
    json_t *rep = !r ? json_null()
                     : json_pack("{s:s,s:b,s:b,s:b,s:b,s:o,s:o,s:o,s:s,s:b}", "root", r->root,
                                 "mount_ns", r->mount_ns, "net_ns", r->net_ns, "user_ns",
                                 r->user_ns, "proc", r->proc, "rlimit_as",
                                 u64_json(r->rlimit_as), "rlimit_nproc",
                                 u64_json(r->rlimit_nproc), "rlimit_memlock",
                                 u64_json(r->rlimit_memlock), "notes", r->notes, "inet",
                                 r->inet);
    return json_pack("{s:b,s:i,s:b,s:b,s:b,s:b,s:b,s:s,s:o}", "no_new_privs",
                     sb->no_new_privs, "seccomp", (int)sb->seccomp, "cap_bnd_empty",
                     sb->cap_bnd_empty, "cap_eff_empty", sb->cap_eff_empty, "mount_ns",
                     sb->mount_ns, "net_ns", sb->net_ns, "user_ns", sb->user_ns, "cwd",
                     sb->cwd, "report", rep);
}

static json_t *status_json(const Aos__StatusReply *s)
{
    json_t *kids = json_array();
    for (size_t i = 0; kids && i < s->n_children; i++) {
        const Aos__ChildStatus *ch = s->children[i];
        if (json_array_append_new(kids, json_pack(
                "{s:s,s:s,s:i,s:I,s:I,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:o}", "name", ch->name,
                "state",
                ch->state, "pid", (int)ch->pid, "restarts", (json_int_t)ch->restarts,
                "uptime_ms", (json_int_t)ch->uptime_ms, "last_exit", ch->last_exit, "reason",
                ch->reason, "next_start_ms", (json_int_t)ch->next_start_ms, "uid",
                (json_int_t)ch->uid, "health", ch->health, "cgroup", ch->cgroup, "cgroup_now",
                ch->cgroup_now, "sandbox",
                sandbox_json(ch->sandbox))) != 0) {
            json_decref(kids);
            return NULL;
        }
    }
    if (!kids)
        return NULL;
    return json_pack("{s:{s:i,s:I,s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:{s:I,s:I,s:b}},s:o}", "aosd",
                     "pid", (int)s->aosd_pid, "uptime_ms", (json_int_t)s->aosd_uptime_ms,
                     "version", s->version, "data_dir", s->data_dir, "pg_mode", s->pg_mode,
                     "bad_messages", (json_int_t)s->bad_messages, "routed",
                     (json_int_t)s->routed, "cgroup", s->cgroup, "stopping", s->stopping,
                     "disk", "free_mb",
                     (json_int_t)s->disk_free_mb, "min_free_mb",
                     (json_int_t)s->disk_min_free_mb, "low", s->disk_low, "children", kids);
}

static int cmd_status(ctl_ctx *c, const ctl_vals *v)
{
    (void)v;
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.status", NULL, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__StatusReply *s = aos__status_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s)
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.status: aosd sent a malformed StatusReply");
    /* uint32 restarts and uint64 counters must fit a JSON integer (int64) */
    int ok = aos_pb_strings_valid(&s->base) && s->aosd_uptime_ms <= INT64_MAX &&
             s->bad_messages <= INT64_MAX && s->routed <= INT64_MAX &&
             s->disk_free_mb <= INT64_MAX && s->disk_min_free_mb <= INT64_MAX;
    for (size_t i = 0; ok && i < s->n_children; i++)
        ok = s->children[i]->uptime_ms <= INT64_MAX &&
             s->children[i]->next_start_ms <= INT64_MAX;
    if (!ok) {
        aos__status_reply__free_unpacked(s, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.status: aosd sent a StatusReply with "
                        "invalid text or out-of-range counters");
    }
    int rc = 0;
    if (c->json)
        rc = ctl_print_json(c, status_json(s));
    else
        print_status(s);
    aos__status_reply__free_unpacked(s, NULL);
    return rc;
}

/* ---- server kill | restart ------------------------------------------------------ */

static int server_op(ctl_ctx *c, const ctl_vals *v, const char *op, int allow_pg)
{
    const char *name = ctl_server_name(ctl_str(v, "NAME"), allow_pg);
    char method[AOS_METHOD_MAX + 1];
    snprintf(method, sizeof method, "kernel.server.%s", op);
    Aos__ServerRequest req = AOS__SERVER_REQUEST__INIT;
    req.name = (char *)name;
    aos_reply r;
    if (ctl_call(c, NULL, method, &req.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    aos_reply_clear(&r);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:b}", "server", name, "action", op,
                                           "ok", 1));
    printf("%s: %s requested\n", name, op);
    return 0;
}

static int cmd_kill(ctl_ctx *c, const ctl_vals *v)
{
    return server_op(c, v, "kill", 1);
}

static int cmd_restart(ctl_ctx *c, const ctl_vals *v)
{
    return server_op(c, v, "restart", 1);
}

/* ---- server stats ---------------------------------------------------------------- */

static int cmd_stats(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_server_name(ctl_str(v, "NAME"), 0);
    char method[AOS_METHOD_MAX + 1];
    snprintf(method, sizeof method, "%s.stats", name);
    aos_reply r;
    if (ctl_call(c, NULL, method, NULL, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s || !aos_pb_strings_valid(&s->base)) {
        if (s)
            aos__stats_reply__free_unpacked(s, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "%s: the server sent a malformed StatsReply", method);
    }
    int rc = 0;
    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < s->n_stats; i++) {
            const Aos__Stat *st = s->stats[i];
            json_t *o = json_pack("{s:s,s:I}", "name", st->name, "value", (json_int_t)st->value);
            if (o && st->text && st->text[0])
                json_object_set_new(o, "text", json_string(st->text));
            json_array_append_new(a, o);
        }
        rc = ctl_print_json(c, json_pack("{s:s,s:o}", "server", name, "stats", a));
    } else {
        for (size_t i = 0; i < s->n_stats; i++) {
            const Aos__Stat *st = s->stats[i];
            printf("%-36s %14lld%s%s\n", st->name, (long long)st->value,
                   st->text && st->text[0] ? "  " : "", st->text ? st->text : "");
        }
    }
    aos__stats_reply__free_unpacked(s, NULL);
    return rc;
}

/* ---- ping ----------------------------------------------------------------------- */

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), n > 0. */
static uint64_t pct(const uint64_t *v, size_t n, unsigned p)
{
    size_t rank = (n * p + 99) / 100;
    return v[rank ? rank - 1 : 0];
}

/* One ping: sends data, checks the echo. r holds the outcome (status and message). */
static aos_err ping_once(ctl_ctx *c, const char *method, uint8_t data[16], uint32_t seq,
                         aos_reply *r)
{
    Aos__PingRequest req = AOS__PING_REQUEST__INIT;
    memcpy(data + 12, &seq, sizeof seq);
    req.data.data = data;
    req.data.len = 16;
    if (ctl_call(c, NULL, method, &req.base, r) != AOS_OK)
        return r->status;
    Aos__PingReply *rep = aos__ping_reply__unpack(NULL, r->payload_len, r->payload);
    aos_err err = AOS_OK;
    if (!rep) {
        err = AOS_ERR_PROTO;
        snprintf(r->error, sizeof r->error, "%s: malformed PingReply", method);
    } else if (rep->data.len != 16 || memcmp(rep->data.data, data, 16) != 0) {
        err = AOS_ERR_PROTO;
        snprintf(r->error, sizeof r->error, "%s: the reply does not echo the ping's data",
                 method);
    }
    if (rep)
        aos__ping_reply__free_unpacked(rep, NULL);
    r->status = err;
    return err;
}

static int cmd_ping(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_server_name(ctl_str(v, "SERVER"), 0);
    uint32_t n = (uint32_t)ctl_int(v, "--count");

    aos_reply r;
    memset(&r, 0, sizeof r);
    /* connect first, so the first ping's time is a round trip and not a dial */
    if (ctl_connect(c, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    uint64_t *lat = malloc((size_t)n * sizeof *lat);
    if (!lat)
        return ctl_fail(c, AOS_ERR_NOMEM, "no memory for %u latencies", n);

    char method[AOS_METHOD_MAX + 1], last[AOS_ERRMSG_MAX + 1] = "";
    snprintf(method, sizeof method, "%s.ping", name);
    uint8_t data[16];
    aos_id_random(data); /* random bytes tell this run's echoes from any other's */
    int progress = n >= PING_PROGRESS_MIN && isatty(STDERR_FILENO);
    uint32_t errors = 0, ok = 0, step = n / 100 ? n / 100 : 1;
    aos_err last_err = AOS_OK;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t t0 = mono_us();
        aos_err err = ping_once(c, method, data, i, &r);
        uint64_t dt = mono_us() - t0;
        if (err == AOS_OK) {
            lat[ok++] = dt;
        } else {
            errors++;
            last_err = err;
            snprintf(last, sizeof last, "%s", r.error);
        }
        aos_reply_clear(&r);
        if (progress && (i + 1) % step == 0)
            fprintf(stderr, "\rping %s: %u/%u, %u errors", name, i + 1, n, errors);
    }
    if (progress)
        fputs("\r\033[K", stderr);

    qsort(lat, ok, sizeof *lat, cmp_u64);
    uint64_t p50 = ok ? pct(lat, ok, 50) : 0, p99 = ok ? pct(lat, ok, 99) : 0,
             mx = ok ? lat[ok - 1] : 0;
    free(lat);
    int rc = errors ? aos_err_exit_code(last_err) : 0;
    if (c->json) {
        json_t *doc = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I}", "server", name, "count",
                                (json_int_t)n, "errors", (json_int_t)errors, "p50_us",
                                (json_int_t)p50, "p99_us", (json_int_t)p99, "max_us",
                                (json_int_t)mx);
        if (doc && errors)
            json_object_set_new(doc, "last_error",
                                json_pack("{s:i,s:s,s:s}", "code", last_err, "name",
                                          aos_err_name(last_err), "message", last));
        int prc = ctl_print_json(c, doc);
        return prc ? prc : rc;
    }
    if (ok)
        printf("%s: %u pings, %u errors, latency p50 %" PRIu64 "us p99 %" PRIu64
               "us max %" PRIu64 "us\n", name, n, errors, p50, p99, mx);
    else
        printf("%s: %u pings, all failed\n", name, n);
    if (errors) {
        fflush(stdout); /* the summary first, then why, also when both go to one tty */
        fprintf(stderr, "aosctl: last error: %s\n", last);
    }
    return rc;
}

/* ---- shutdown ----------------------------------------------------------------------- */

/* Gone, or a zombie its parent has not reaped yet (a test harness, a slow supervisor). */
static int pid_gone(pid_t pid)
{
    if (kill(pid, 0) != 0)
        return errno == ESRCH;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Asks aosd to stop, then follows kernel.status until aosd is gone, saying what it stops. */
static int cmd_shutdown(ctl_ctx *c, const ctl_vals *v)
{
    uint32_t t = (uint32_t)ctl_int(v, "--timeout");
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.status", NULL, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__StatusReply *s = aos__status_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s)
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.status: aosd sent a malformed StatusReply");
    pid_t pid = s->aosd_pid;
    aos__status_reply__free_unpacked(s, NULL);
    Aos__ShutdownRequest q = AOS__SHUTDOWN_REQUEST__INIT;
    q.timeout_s = t;
    if (ctl_call(c, NULL, "kernel.shutdown", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    aos_reply_clear(&r);
    uint64_t t0 = now_ms(), limit = t0 + (uint64_t)t * 1000u + 120000u;
    char last[128] = "";
    c->timeout_ms = 1000; /* a status poll: aosd may go at any moment */
    while (now_ms() < limit) {
        if (pid > 0 && pid_gone(pid))
            break;
        if (ctl_call(c, NULL, "kernel.status", NULL, &r) == AOS_OK &&
            (s = aos__status_reply__unpack(NULL, r.payload_len, r.payload))) {
            char ph[128];
            ctl_clean(ph, sizeof ph, (const uint8_t *)s->stopping, strlen(s->stopping), 100,
                      NULL);
            if (ph[0] && strcmp(ph, last)) {
                if (!c->json)
                    fprintf(stderr, "aosctl: %.1f s: stopping %s\n", (now_ms() - t0) / 1000.0,
                            ph);
                snprintf(last, sizeof last, "%s", ph);
            }
            aos__status_reply__free_unpacked(s, NULL);
        }
        aos_reply_clear(&r);
        struct timespec ts = {0, 200000000L};
        nanosleep(&ts, NULL);
    }
    int gone = pid > 0 && pid_gone(pid);
    double secs = (now_ms() - t0) / 1000.0;
    if (!gone)
        return ctl_fail(c, AOS_ERR_TIMEOUT, "aosd (pid %d) is still running %.0f s after the "
                        "shutdown request; see aosctl logs", (int)pid, secs);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:b,s:i,s:f}", "stopped", 1, "pid", (int)pid,
                                           "seconds", secs));
    printf("aosd (pid %d) stopped in %.1f s\n", (int)pid, secs);
    return 0;
}

/* ---- the table ------------------------------------------------------------------ */

static const char status_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"aosd\",\"children\"],\"properties\":{"
    "\"aosd\":{\"type\":\"object\",\"required\":[\"pid\",\"uptime_ms\",\"version\","
    "\"data_dir\",\"pg_mode\",\"bad_messages\",\"routed\"],\"properties\":{"
    "\"pid\":{\"type\":\"integer\"},\"uptime_ms\":{\"type\":\"integer\",\"minimum\":0},"
    "\"version\":{\"type\":\"string\"},\"data_dir\":{\"type\":\"string\"},"
    "\"pg_mode\":{\"type\":\"string\",\"description\":\"embedded or external\"},"
    "\"bad_messages\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"envelopes aosd "
    "refused as malformed\"},\"routed\":{\"type\":\"integer\",\"minimum\":0,"
    "\"description\":\"requests routed to servers\"},\"cgroup\":{\"type\":\"string\","
    "\"description\":\"what aosd's cgroup v2 set-up achieved, or why not\"},"
    "\"stopping\":{\"type\":\"string\",\"description\":\"empty while running; during a "
    "shutdown, what is being stopped\"},"
    "\"disk\":{\"type\":\"object\",\"required\":[\"free_mb\",\"min_free_mb\",\"low\"],"
    "\"description\":\"the data dir's file system: below min_free_mb (aos.yaml's "
    "disk_min_free_mb) effectful syscalls are refused\",\"properties\":{"
    "\"free_mb\":{\"type\":\"integer\",\"minimum\":0},\"min_free_mb\":{\"type\":"
    "\"integer\",\"minimum\":0},\"low\":{\"type\":\"boolean\"}}}}},"
    "\"children\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"name\","
    "\"state\",\"pid\",\"restarts\",\"uptime_ms\",\"last_exit\",\"reason\",\"next_start_ms\","
    "\"uid\",\"health\",\"sandbox\"],\"properties\":{"
    "\"name\":{\"type\":\"string\"},\"state\":{\"type\":\"string\",\"enum\":[\"stopped\","
    "\"starting\",\"running\",\"backoff\",\"stopping\",\"failed\",\"done\","
    "\"migrating\"]},"
    "\"pid\":{\"type\":\"integer\",\"description\":\"0 when not running\"},"
    "\"restarts\":{\"type\":\"integer\",\"minimum\":0},"
    "\"uptime_ms\":{\"type\":\"integer\",\"minimum\":0},"
    "\"last_exit\":{\"type\":\"string\",\"description\":\"e.g. exit 3, signal 9 (Killed), "
    "heartbeat timeout; empty if none\"},"
    "\"reason\":{\"type\":\"string\",\"description\":\"why it is failed or in backoff\"},"
    "\"next_start_ms\":{\"type\":\"integer\",\"minimum\":0},"
    "\"uid\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the uid it runs as, "
    "measured by aosd from /proc\"},"
    "\"health\":{\"type\":\"string\",\"description\":\"ok, or why a running child is not "
    "answering; empty when aosd has not probed it\"},"
    "\"cgroup\":{\"type\":\"string\",\"description\":\"the cgroup subtree delegated to "
    "it, or why none; empty when it gets none\"},"
    "\"cgroup_now\":{\"type\":\"string\",\"description\":\"its cgroup v2 path, measured "
    "from /proc\"},"
    "\"sandbox\":{\"type\":[\"object\",\"null\"],\"description\":\"its confinement, measured "
    "by aosd from /proc; null when none (postgres)\",\"required\":[\"no_new_privs\","
    "\"seccomp\",\"cap_bnd_empty\",\"cap_eff_empty\",\"mount_ns\",\"net_ns\",\"user_ns\","
    "\"cwd\",\"report\"],\"properties\":{"
    "\"no_new_privs\":{\"type\":\"boolean\"},"
    "\"seccomp\":{\"type\":\"integer\",\"enum\":[0,1,2],\"description\":\"0 off, 1 strict, "
    "2 filter\"},"
    "\"cap_bnd_empty\":{\"type\":\"boolean\"},\"cap_eff_empty\":{\"type\":\"boolean\"},"
    "\"mount_ns\":{\"type\":\"boolean\",\"description\":\"its mount namespace differs from "
    "aosd's\"},\"net_ns\":{\"type\":\"boolean\"},\"user_ns\":{\"type\":\"boolean\"},"
    "\"cwd\":{\"type\":\"string\"},"
    "\"report\":{\"type\":[\"object\",\"null\"],\"description\":\"what the server says it "
    "applied (its READY message): a description, not a measurement\",\"required\":[\"root\","
    "\"mount_ns\",\"net_ns\",\"user_ns\",\"proc\",\"rlimit_as\",\"rlimit_nproc\","
    "\"rlimit_memlock\",\"notes\",\"inet\"],\"properties\":{"
    "\"root\":{\"type\":\"string\",\"description\":\"minimal, readonly or host\"},"
    "\"mount_ns\":{\"type\":\"boolean\"},\"net_ns\":{\"type\":\"boolean\"},"
    "\"user_ns\":{\"type\":\"boolean\"},\"proc\":{\"type\":\"boolean\"},"
    "\"rlimit_as\":{\"type\":[\"integer\",\"null\"],\"minimum\":0,\"description\":\"bytes; "
    "0 not set, null unlimited\"},"
    "\"rlimit_nproc\":{\"type\":[\"integer\",\"null\"],\"minimum\":0},"
    "\"rlimit_memlock\":{\"type\":[\"integer\",\"null\"],\"minimum\":0},"
    "\"notes\":{\"type\":\"string\",\"description\":\"why a layer is off\"},"
    "\"inet\":{\"type\":\"boolean\",\"description\":\"its seccomp list allows AF_INET "
    "sockets\"}}}}}}}}}}";

static const char server_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"server\",\"action\",\"ok\"],\"properties\":{"
    "\"server\":{\"type\":\"string\"},\"action\":{\"type\":\"string\",\"enum\":[\"kill\","
    "\"restart\"]},\"ok\":{\"const\":true}}}";

static const char ping_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"server\",\"count\",\"errors\",\"p50_us\",\"p99_us\",\"max_us\"],"
    "\"properties\":{\"server\":{\"type\":\"string\"},"
    "\"count\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"pings sent\"},"
    "\"errors\":{\"type\":\"integer\",\"minimum\":0},"
    "\"p50_us\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"median round trip of "
    "the successful pings, microseconds (0 when none succeeded)\"},"
    "\"p99_us\":{\"type\":\"integer\",\"minimum\":0},"
    "\"max_us\":{\"type\":\"integer\",\"minimum\":0},"
    "\"last_error\":{\"type\":\"object\",\"description\":\"present when errors > 0\","
    "\"properties\":{\"code\":{\"type\":\"integer\"},\"name\":{\"type\":\"string\"},"
    "\"message\":{\"type\":\"string\"}}}}}";

static const char stats_out[] =
    "{\"type\":\"object\",\"required\":[\"server\",\"stats\"],\"properties\":{"
    "\"server\":{\"type\":\"string\"},"
    "\"stats\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
    "\"required\":[\"name\",\"value\"],\"properties\":{\"name\":{\"type\":\"string\"},"
    "\"value\":{\"type\":\"integer\"},\"text\":{\"type\":\"string\","
    "\"description\":\"what the figure counts, when the server says\"}}}}}}";

/* The checks name the valid values, so a typo's message says what would have worked. */
static int check_server(const char *val, char *why, size_t whylen)
{
    if (ctl_server_name(val, 0))
        return 0;
    snprintf(why, whylen, "unknown server \"%s\"; valid names: %s", val, AOS_SRV_NAMES_TEXT);
    return -1;
}

static int check_server_pg(const char *val, char *why, size_t whylen)
{
    if (ctl_server_name(val, 1))
        return 0;
    snprintf(why, whylen, "unknown server \"%s\"; valid names: %s, " AOS_CHILD_PG, val,
             AOS_SRV_NAMES_TEXT);
    return -1;
}

static const char *const servers[] = {AOS_SRV_NAMES NULL};
static const char *const servers_pg[] = {AOS_SRV_NAMES AOS_CHILD_PG, NULL};
_Static_assert(sizeof servers_pg / sizeof servers_pg[0] == AOS_SRV_COUNT + 2,
               "every server, postgres and the NULL");

static const ctl_arg kill_args[] = {
    {.name = "NAME", .required = 1, .choices = servers_pg, .check = check_server_pg,
     .summary = "the server; the aos- prefix is accepted (aos-storage)"},
};
static const ctl_arg restart_args[] = {
    {.name = "NAME", .required = 1, .choices = servers_pg, .check = check_server_pg,
     .summary = "the server; the aos- prefix is accepted (aos-storage)"},
};
static const ctl_arg stats_args[] = {
    {.name = "NAME", .required = 1, .choices = servers, .check = check_server,
     .summary = "the server; the aos- prefix is accepted"},
};
static const ctl_arg ping_args[] = {
    {.name = "SERVER", .required = 1, .choices = servers, .check = check_server,
     .summary = "the server; the aos- prefix is accepted"},
    {.name = "--count", .short_name = 'n', .type = CTL_INTEGER, .value = "N", .min = 1,
     .max = PING_MAX, .def = "1", .summary = "number of pings"},
};

static const ctl_arg shutdown_args[] = {
    {.name = "--timeout", .type = CTL_INTEGER, .value = "S", .min = 1, .max = 86400,
     .def = "30", .summary = "seconds the agents get to reach a step boundary"},
};
static const char shutdown_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"stopped\",\"pid\",\"seconds\"],\"properties\":{\"stopped\":{"
    "\"type\":\"boolean\"},\"pid\":{\"type\":\"integer\",\"description\":\"aosd's, now "
    "gone\"},\"seconds\":{\"type\":\"number\",\"minimum\":0}}}";

static const ctl_cmd kernel_cmds[] = {
    {"status", "show aosd and every server it supervises, with its sandbox layers", NULL, 0,
     status_out, cmd_status},
    {"server kill", "kill a server at once; aosd restarts it under its restart policy",
     CTL_ARGS(kill_args), server_out, cmd_kill},
    {"server restart", "stop a server gracefully and start it again", CTL_ARGS(restart_args),
     server_out, cmd_restart},
    {"server stats", "a server's own figures (calls, errors, what its work counts)",
     CTL_ARGS(stats_args), stats_out, cmd_stats},
    {"ping", "ping a server through aosd N times, one at a time; report latency",
     CTL_ARGS(ping_args), ping_out, cmd_ping},
    {"shutdown", "stop aos gracefully: the agents at their step boundaries (killed after "
     "--timeout), then the servers, then postgres; waits until aosd is gone",
     CTL_ARGS(shutdown_args), shutdown_out, cmd_shutdown},
};

const ctl_group ctl_group_kernel = {kernel_cmds, sizeof kernel_cmds / sizeof kernel_cmds[0]};
