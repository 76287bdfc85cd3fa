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
#include "agent.pb-c.h"
#include "agstate.h"
#include "conf.h"

#define RUNS_MAX 10000u        /* records read; more is said, not shown */

typedef struct run_row {
    char run[AOS_RUN_ID_MAX + 1];
    char state[16];
    char reason[AOS_RUN_REASON_MAX + 1];
    uint64_t started_ms, ended_ms, steps;
    int current, pruned;
} run_row;

/* One record (JSON that libaos wrote, but read as untrusted input: the agent may write its
 * own namespace) into row; -1 if it is not one. */
static int parse_row(const uint8_t *v, size_t n, run_row *row)
{
    agst_runrec rr;
    char why[256];
    if (agst_runrec_decode(v, n, &rr, why, sizeof why))
        return -1;
    memset(row, 0, sizeof *row);
    snprintf(row->run, sizeof row->run, "%s", rr.run);
    snprintf(row->state, sizeof row->state, "%s", aos_run_state_name((aos_run_state)rr.state));
    ctl_clean(row->reason, sizeof row->reason, (const uint8_t *)rr.reason, strlen(rr.reason), 0,
              NULL);
    row->started_ms = rr.started_ms;
    row->ended_ms = rr.ended_ms;
    row->steps = rr.steps;
    return 0;
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
    uint64_t keep_s = retention_s(c);
    size_t pruned = 0;
    Aos__Agent__PruneReply *pr = NULL;
    if (prune) {
        /* aosd decides and removes (as it does every run_prune_interval_s): one rule */
        Aos__Agent__PruneRequest q = AOS__AGENT__PRUNE_REQUEST__INIT;
        q.agent = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
        aos_reply r;
        if (ctl_call(c, NULL, "kernel.agent.prune", &q.base, &r) != AOS_OK) {
            free(cur);
            free(rows);
            return ctl_fail_reply(c, &r);
        }
        pr = aos__agent__prune_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        if (!pr) {
            free(cur);
            free(rows);
            return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.prune: aosd sent a malformed "
                            "PruneReply");
        }
        keep_s = pr->retention_s;
        pruned = pr->runs_total;
    }
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
        for (size_t k = 0; pr && k < pr->n_runs; k++)
            if (pr->runs[k].len == strlen(r->run) &&
                !memcmp(pr->runs[k].data, r->run, pr->runs[k].len))
                r->pruned = 1;
    }
    free(cur);
    int ws_removed = 0;
    json_t *errs = json_array();
    for (size_t k = 0; pr && k < pr->n_workspaces; k++)
        ws_removed |= pr->workspaces[k].len == strlen(name) &&
                      !memcmp(pr->workspaces[k].data, name, pr->workspaces[k].len);
    for (size_t k = 0; pr && k < pr->n_errors; k++) {
        char line[AOS_ERRMSG_MAX + 80];
        ctl_clean(line, sizeof line, pr->errors[k].data, pr->errors[k].len, 0, NULL);
        json_array_append_new(errs, json_string(line));
        if (!c->json)
            fprintf(stderr, "aosctl: retention: %s\n", line);
        rc = 1;
    }
    if (pr)
        aos__agent__prune_reply__free_unpacked(pr, NULL);
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
        int jr = ctl_print_json(
            c, json_pack("{s:s, s:o, s:I, s:I, s:I, s:b, s:b, s:o}", "agent", name, "runs", a,
                         "pruned", (json_int_t)pruned, "retention_s", (json_int_t)keep_s,
                         "unreadable", (json_int_t)unreadable, "truncated", more,
                         "workspace_removed", ws_removed, "errors", errs));
        return jr ? jr : rc;
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
        printf("%zu finished run%s older than %" PRIu64 " s pruned (run_retention_s)%s\n",
               pruned, pruned == 1 ? "" : "s", keep_s,
               ws_removed ? "; its workspace removed (no longer applied)" : "");
    json_decref(errs);
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
    "\"unreadable\",\"truncated\",\"workspace_removed\",\"errors\"],\"properties\":{\"agent\":" STR ",\"runs\":{\"type\":"
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
    "\"records that are not runs\"},\"truncated\":{\"type\":\"boolean\"},"
    "\"workspace_removed\":{\"type\":\"boolean\",\"description\":\"by --prune: the agent is "
    "no longer applied and nothing of it is in use\"},\"errors\":{\"type\":\"array\","
    "\"items\":" STR ",\"description\":\"what --prune could not do\"}}}";

static const ctl_arg runs_args[] = {
    {.name = "NAME", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "the agent (aosctl ps lists them)"},
    {.name = "--prune", .type = CTL_BOOL,
     .summary = "have aosd remove now what it removes every run_prune_interval_s: finished "
                "runs (their steps and records) that ended longer than aos.yaml's "
                "run_retention_s ago (a week by default), never the current run; and, of an "
                "agent no longer applied with nothing unfinished, its workspace"},
};

static const ctl_cmd runs_cmds[] = {
    {"agent runs", "an agent's durable runs: state (running, done, failed, interrupted), "
     "steps, start and end; --prune removes old finished ones",
     CTL_ARGS(runs_args), runs_out, cmd_runs},
};

const ctl_group ctl_group_runs = {runs_cmds, sizeof runs_cmds / sizeof runs_cmds[0]};
