/* aosctl agent runs: an agent's durable runs (libaos aos/step.h's records in its kv) with
 * their state and steps, and --prune: finished runs past aos.yaml's retention removed. */
#include "aosctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/envelope.h"
#include "aos/step.h"
#include "aos/storage.h"
#include "conf.h"

#define RUNS_MAX 10000u        /* records read; more is said, not shown */

typedef struct run_row {
    char run[AOS_RUN_ID_MAX + 1];
    char state[16];
    char reason[AOS_RUN_REASON_MAX + 1];
    uint64_t started_ms, ended_ms, steps;
    int current, pruned;
} run_row;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > AOS_RUN_ID_MAX || strncmp(s, "r-", 2))
        return 0;
    return strspn(s + 2, "0123456789abcdef") == n - 2;
}

/* One record (JSON that libaos wrote, but read as untrusted input) into row; -1 if it is
 * not one. */
static int parse_row(const uint8_t *v, size_t n, run_row *row)
{
    json_error_t je;
    json_t *o = json_loadb((const char *)v, n, JSON_REJECT_DUPLICATES, &je);
    const char *run = NULL, *state = NULL, *reason = "";
    json_int_t st = 0, en = 0, steps = 0;
    int bad = !o || json_unpack(o, "{s:s, s:s, s:I, s:I, s:I, s?s}", "run", &run, "state",
                                &state, "started_ms", &st, "ended_ms", &en, "steps", &steps,
                                "reason", &reason) ||
              !id_ok(run) || aos_run_state_parse(state) < 0 || st < 0 || en < 0 || steps < 0;
    if (!bad) {
        memset(row, 0, sizeof *row);
        snprintf(row->run, sizeof row->run, "%s", run);
        snprintf(row->state, sizeof row->state, "%s", state);
        ctl_clean(row->reason, sizeof row->reason, (const uint8_t *)reason, strlen(reason), 0,
                  NULL);
        row->started_ms = (uint64_t)st;
        row->ended_ms = (uint64_t)en;
        row->steps = (uint64_t)steps;
    }
    json_decref(o);
    return bad ? -1 : 0;
}

static int by_start(const void *a, const void *b)
{
    const run_row *x = a, *y = b;
    return x->started_ms < y->started_ms ? -1 : x->started_ms > y->started_ms ? 1
                                                                             : strcmp(x->run, y->run);
}

static uint64_t retention_s(ctl_ctx *c)
{
    char dir[AOS_PATH_MAX * 4], path[AOS_PATH_MAX * 4 + 16], why[512];
    conf *cf = NULL;
    uint64_t r = CONF_RETENTION_DEFAULT_S;
    if (aos_data_dir(c->data_dir, dir, sizeof dir) == AOS_OK &&
        conf_default_path(dir, path, sizeof path) == AOS_OK &&
        conf_load(path, 0, &cf, why, sizeof why) == AOS_OK) {
        const conf_kernel *k = conf_kernel_settings(cf);
        if (k->has_run_retention_s)
            r = k->run_retention_s;
    }
    conf_free(cf);
    return r;
}

static void fmt_time(char *out, size_t cap, uint64_t ms)
{
    if (!ms) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M:%S", &tm);
}

static int cmd_runs(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    int prune = ctl_given(v, "--prune");
    aos_reply cr;
    memset(&cr, 0, sizeof cr);
    if (ctl_connect(c, &cr) != AOS_OK)
        return ctl_fail_reply(c, &cr);
    aos_reply_clear(&cr);
    aos_call_opts o = {.agent_id = name, .timeout_ms = c->timeout_ms};
    char why[AOS_ERRMSG_MAX + 1] = "";
    run_row *rows = NULL;
    size_t n = 0, cap = 0, unreadable = 0;
    int more = 0, rc = 0;
    char *after = NULL;
    aos_err e;
    for (;;) {
        aos_kv_page *pg = NULL;
        if ((e = aos_kv_list(c->conn, &o, AOS_RUN_KEY_PREFIX, after, AOS_LIST_MAX, 1, &pg, why,
                             sizeof why))) {
            free(after);
            free(rows);
            return ctl_fail(c, e, "storage.kv.list: %s", why);
        }
        for (size_t i = 0; i < pg->n; i++) {
            if (n >= RUNS_MAX) {
                more = 1;
                break;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                run_row *nr = realloc(rows, cap * sizeof *nr);
                if (!nr) {
                    aos_kv_page_free(pg);
                    free(after);
                    free(rows);
                    return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
                }
                rows = nr;
            }
            if (parse_row(pg->entries[i].value, pg->entries[i].value_len, &rows[n]))
                unreadable++;
            else
                n++;
        }
        free(after);
        after = pg->next && !more ? strdup(pg->next) : NULL;
        aos_kv_page_free(pg);
        if (!after)
            break;
    }
    uint8_t *cur = NULL;
    size_t curn = 0;
    e = aos_kv_get(c->conn, &o, AOS_RUN_KEY_CURRENT, &cur, &curn, NULL, why, sizeof why);
    if (e && e != AOS_ERR_NOT_FOUND) {
        free(rows);
        return ctl_fail(c, e, "storage.kv.get: %s", why);
    }
    uint64_t keep_s = retention_s(c), now = now_ms();
    size_t pruned = 0;
    for (size_t i = 0; i < n; i++) {
        run_row *r = &rows[i];
        r->current = cur && curn == strlen(r->run) && !memcmp(cur, r->run, curn);
        if (!strcmp(r->state, "running")) {
            /* a live run's record counts no steps yet: its log does */
            aos_step_page *sp = NULL;
            if (aos_step_read(c->conn, &o, r->run, INT64_MAX, 1, &sp, why, sizeof why) ==
                AOS_OK)
                r->steps = sp->last_step;
            aos_step_page_free(sp);
        }
        /* never one in use: the current run stays (a restart of the agent reads it), and
         * a run not finished is not pruned whatever its age */
        if (prune && !r->current && strcmp(r->state, "running") && r->ended_ms &&
            r->ended_ms + keep_s * 1000u <= now) {
            char key[AOS_KEY_MAX + 1];
            snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%s", r->run);
            if ((e = aos_step_drop(c->conn, &o, r->run, NULL, why, sizeof why)) ||
                ((e = aos_kv_delete(c->conn, &o, key, NULL, why, sizeof why)) &&
                 e != AOS_ERR_NOT_FOUND)) {
                free(cur);
                free(rows);
                return ctl_fail(c, e, "pruning run %s: %s", r->run, why);
            }
            r->pruned = 1;
            pruned++;
        }
    }
    free(cur);
    if (n)
        qsort(rows, n, sizeof *rows, by_start);
    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++)
            json_array_append_new(
                a, json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:s, s:b}", "run", rows[i].run,
                             "state", rows[i].state, "current", rows[i].current, "steps",
                             (json_int_t)rows[i].steps, "started_ms",
                             (json_int_t)rows[i].started_ms, "ended_ms",
                             (json_int_t)rows[i].ended_ms, "reason", rows[i].reason, "pruned",
                             rows[i].pruned));
        free(rows);
        return ctl_print_json(c, json_pack("{s:s, s:o, s:I, s:I, s:I, s:b}", "agent", name,
                                           "runs", a, "pruned", (json_int_t)pruned,
                                           "retention_s", (json_int_t)keep_s, "unreadable",
                                           (json_int_t)unreadable, "truncated", more));
    }
    if (!n)
        printf("%s has no runs\n", name);
    else
        printf("%-35s %-11s %6s  %-19s  %-19s  %s\n", "RUN", "STATE", "STEPS", "STARTED (UTC)",
               "ENDED (UTC)", "REASON");
    for (size_t i = 0; i < n; i++) {
        char s[32], en[32];
        fmt_time(s, sizeof s, rows[i].started_ms);
        fmt_time(en, sizeof en, rows[i].ended_ms);
        printf("%-35s %-11s %6" PRIu64 "  %-19s  %-19s  %s%s%.80s\n", rows[i].run, rows[i].state,
               rows[i].steps, s, en, rows[i].current ? "(current) " : "",
               rows[i].pruned ? "(pruned) " : "", rows[i].reason);
    }
    if (prune)
        printf("%zu finished run%s older than %" PRIu64 " s pruned (run_retention_s)\n", pruned,
               pruned == 1 ? "" : "s", keep_s);
    if (unreadable)
        fprintf(stderr, "aosctl: %zu run records could not be read\n", unreadable);
    if (more)
        fprintf(stderr, "aosctl: only the first %u runs are shown\n", RUNS_MAX);
    free(rows);
    return rc;
}

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define STR "{\"type\":\"string\"}"
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"

static const char runs_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"runs\",\"pruned\",\"retention_s\","
    "\"unreadable\",\"truncated\"],\"properties\":{\"agent\":" STR ",\"runs\":{\"type\":"
    "\"array\",\"description\":\"oldest first\",\"items\":{\"type\":\"object\",\"required\":["
    "\"run\",\"state\",\"current\",\"steps\",\"started_ms\",\"ended_ms\",\"reason\","
    "\"pruned\"],\"properties\":{\"run\":" STR ",\"state\":{\"type\":\"string\",\"enum\":["
    "\"running\",\"done\",\"failed\",\"interrupted\"]},\"current\":{\"type\":\"boolean\","
    "\"description\":\"the run a restart of the agent resumes (never pruned)\"},\"steps\":"
    "{\"type\":\"integer\",\"minimum\":0,\"description\":\"step log entries (a tool step "
    "takes two: start and end)\"},\"started_ms\":" INT0 ",\"ended_ms\":{\"type\":\"integer\","
    "\"minimum\":0,\"description\":\"0: not finished\"},\"reason\":" STR ",\"pruned\":{"
    "\"type\":\"boolean\",\"description\":\"removed now by --prune\"}}}},\"pruned\":" INT0
    ",\"retention_s\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"aos.yaml's "
    "run_retention_s\"},\"unreadable\":{\"type\":\"integer\",\"minimum\":0,\"description\":"
    "\"records that are not runs\"},\"truncated\":{\"type\":\"boolean\"}}}";

static const ctl_arg runs_args[] = {
    {.name = "NAME", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "the agent (aosctl ps lists them)"},
    {.name = "--prune", .type = CTL_BOOL,
     .summary = "remove finished runs (their steps and records) that ended longer than "
                "aos.yaml's run_retention_s ago (a week by default); the current run never"},
};

static const ctl_cmd runs_cmds[] = {
    {"agent runs", "an agent's durable runs: state (running, done, failed, interrupted), "
     "steps, start and end; --prune removes old finished ones",
     CTL_ARGS(runs_args), runs_out, cmd_runs},
};

const ctl_group ctl_group_runs = {runs_cmds, sizeof runs_cmds / sizeof runs_cmds[0]};
