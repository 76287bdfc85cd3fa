/* aosctl sched: the LLM scheduler in aosd — each provider's capacity and state, each
 * agent's weight, share, tokens and queue wait — and the admin's weights and budgets. */
#include "aosctl.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos.pb-c.h"
#include "aos/envelope.h"
#include "aos/err.h"

static void lim(uint64_t v, char *out, size_t cap)
{
    if (v)
        snprintf(out, cap, "%" PRIu64, v);
    else
        snprintf(out, cap, "-");
}

static json_t *provider_json(const Aos__SchedProvider *p)
{
    return json_pack(
        "{s:s, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s:f, s:f, s:f, s:I, s:{s:I, s:I}, s:I, s:I, s:I,"
        " s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
        "name", p->name, "capacity", "max_concurrency", (json_int_t)p->max_concurrency,
        "requests_per_min", (json_int_t)p->requests_per_min, "tokens_per_min",
        (json_int_t)p->tokens_per_min, "input_tokens_per_min",
        (json_int_t)p->input_tokens_per_min, "output_tokens_per_min",
        (json_int_t)p->output_tokens_per_min, "daily_spend_micro_usd",
        (json_int_t)p->daily_spend_micro_usd, "eff_concurrency", p->eff_concurrency,
        "rate_factor", p->rate_factor, "pipeline", p->pipeline, "in_flight", (json_int_t)p->in_flight, "queued",
        "interactive", (json_int_t)p->queued_interactive, "batch",
        (json_int_t)p->queued_batch, "admitted", (json_int_t)p->admitted, "completed",
        (json_int_t)p->completed, "rate_limited", (json_int_t)p->rate_limited, "expired",
        (json_int_t)p->expired, "refused", (json_int_t)p->refused, "resent",
        (json_int_t)p->resent, "held_ms", (json_int_t)p->held_ms, "window_requests",
        (json_int_t)p->window_requests, "window_tokens", (json_int_t)p->window_tokens,
        "spent_today_micro_usd", (json_int_t)p->spent_today_micro_usd);
}

static json_t *agent_json(const Aos__SchedAgent *a)
{
    return json_pack("{s:s, s:f, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                     "agent", a->agent, "weight", a->weight, "priority", a->priority,
                     "token_budget", (json_int_t)a->token_budget, "cost_budget_micro_usd",
                     (json_int_t)a->cost_budget_micro_usd, "tokens", (json_int_t)a->tokens,
                     "cost_micro_usd", (json_int_t)a->cost_micro_usd, "requests",
                     (json_int_t)a->requests, "refused", (json_int_t)a->refused, "queued",
                     (json_int_t)a->queued, "in_flight", (json_int_t)a->in_flight,
                     "wait_p50_us", (json_int_t)a->wait_p50_us, "wait_p99_us",
                     (json_int_t)a->wait_p99_us, "share", a->share);
}

/* The reply's text came from aosd: checked like any wire input before it is printed. */
static int reply_ok(const Aos__SchedReply *r)
{
    if (!aos_pb_strings_valid(&r->base))
        return 0;
    for (size_t i = 0; i < r->n_providers; i++)
        if (!r->providers[i])
            return 0;
    for (size_t i = 0; i < r->n_agents; i++)
        if (!r->agents[i])
            return 0;
    return 1;
}

static void ms(uint64_t us, char *out, size_t cap)
{
    if (us < 10000)
        snprintf(out, cap, "%.1fms", us / 1000.0);
    else
        snprintf(out, cap, "%.0fms", us / 1000.0);
}

static int cmd_sched(ctl_ctx *c, const ctl_vals *v)
{
    (void)v;
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.sched", NULL, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__SchedReply *s = aos__sched_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s || !reply_ok(s)) {
        if (s)
            aos__sched_reply__free_unpacked(s, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.sched: aosd sent a malformed SchedReply");
    }
    if (c->json) {
        json_t *pa = json_array(), *aa = json_array();
        int bad = !pa || !aa;
        for (size_t i = 0; !bad && i < s->n_providers; i++)
            bad = json_array_append_new(pa, provider_json(s->providers[i])) != 0;
        for (size_t i = 0; !bad && i < s->n_agents; i++)
            bad = json_array_append_new(aa, agent_json(s->agents[i])) != 0;
        aos__sched_reply__free_unpacked(s, NULL);
        if (bad) {
            json_decref(pa);
            json_decref(aa);
            return ctl_fail(c, AOS_ERR_NOMEM, "out of memory building the JSON");
        }
        return ctl_print_json(c, json_pack("{s:o, s:o}", "providers", pa, "agents", aa));
    }
    printf("%-16s %-22s %-10s %8s %8s %8s %6s %6s %s\n", "PROVIDER", "CAPACITY C/RPM/TPM",
           "EFFECTIVE", "INFLIGHT", "QUEUED", "ADMITTED", "429S", "EXPIRD", "SPENT TODAY");
    for (size_t i = 0; i < s->n_providers; i++) {
        const Aos__SchedProvider *p = s->providers[i];
        char name[64], l[3][16], cap[48], eff[24], spent[48];
        ctl_clean(name, sizeof name, (const uint8_t *)p->name, strlen(p->name), 16, NULL);
        lim(p->max_concurrency, l[0], sizeof l[0]);
        lim(p->requests_per_min, l[1], sizeof l[1]);
        lim(p->tokens_per_min, l[2], sizeof l[2]);
        snprintf(cap, sizeof cap, "%s/%s/%s", l[0], l[1], l[2]);
        if (p->eff_concurrency > 0)
            snprintf(eff, sizeof eff, "%.1f x%.2f", p->eff_concurrency, p->rate_factor);
        else
            snprintf(eff, sizeof eff, "- x%.2f", p->rate_factor);
        if (p->daily_spend_micro_usd)
            snprintf(spent, sizeof spent, "$%.4f of $%.2f", p->spent_today_micro_usd / 1e6,
                     p->daily_spend_micro_usd / 1e6);
        else
            snprintf(spent, sizeof spent, "$%.4f", p->spent_today_micro_usd / 1e6);
        printf("%-16s %-22s %-10s %8u %4u+%-3u %8" PRIu64 " %6" PRIu64 " %6" PRIu64 " %s%s\n",
               name, cap, eff, p->in_flight, p->queued_interactive, p->queued_batch,
               p->admitted, p->rate_limited, p->expired, spent,
               p->held_ms ? " (held by a Retry-After)" : "");
    }
    if (s->n_agents) {
        printf("\n%-24s %7s %-11s %6s %12s %9s %9s %9s %s\n", "AGENT", "WEIGHT", "PRIORITY",
               "SHARE", "TOKENS", "REQUESTS", "WAIT-P50", "WAIT-P99", "BUDGET");
        for (size_t i = 0; i < s->n_agents; i++) {
            const Aos__SchedAgent *a = s->agents[i];
            char name[80], p50[16], p99[16], bud[64] = "-";
            ctl_clean(name, sizeof name, (const uint8_t *)a->agent, strlen(a->agent), 24,
                      NULL);
            ms(a->wait_p50_us, p50, sizeof p50);
            ms(a->wait_p99_us, p99, sizeof p99);
            if (a->token_budget && a->cost_budget_micro_usd)
                snprintf(bud, sizeof bud, "%" PRIu64 " tok, $%.2f", a->token_budget,
                         a->cost_budget_micro_usd / 1e6);
            else if (a->token_budget)
                snprintf(bud, sizeof bud, "%" PRIu64 " tok", a->token_budget);
            else if (a->cost_budget_micro_usd)
                snprintf(bud, sizeof bud, "$%.2f", a->cost_budget_micro_usd / 1e6);
            printf("%-24s %7.2f %-11s %5.1f%% %12" PRIu64 " %9" PRIu64 " %9s %9s %s\n",
                   name[0] ? name : "(none)", a->weight, a->priority, a->share * 100,
                   a->tokens, a->requests, p50, p99, bud);
        }
    }
    aos__sched_reply__free_unpacked(s, NULL);
    return 0;
}

static int check_weight(const char *val, char *why, size_t whylen)
{
    char *end;
    double w = strtod(val, &end);
    if (*val && !*end && isfinite(w) && w >= 0.01 && w <= 10000)
        return 0;
    snprintf(why, whylen, "--weight wants a number from 0.01 to 10000, not \"%.40s\"", val);
    return -1;
}

static int check_usd(const char *val, char *why, size_t whylen)
{
    char *end;
    double d = strtod(val, &end);
    if (*val && !*end && isfinite(d) && d >= 0 && d <= 1e9)
        return 0;
    snprintf(why, whylen, "--cost-budget wants US dollars from 0 to 1e9, not \"%.40s\"", val);
    return -1;
}

static int cmd_set(ctl_ctx *c, const ctl_vals *v)
{
    Aos__SchedSetRequest q = AOS__SCHED_SET_REQUEST__INIT;
    q.agent = (char *)ctl_str(v, "AGENT");
    if ((q.has_weight = ctl_given(v, "--weight")))
        q.weight = strtod(ctl_str(v, "--weight"), NULL);
    q.priority = ctl_given(v, "--priority") ? (char *)ctl_str(v, "--priority") : "";
    if ((q.has_token_budget = ctl_given(v, "--token-budget")))
        q.token_budget = (uint64_t)ctl_int(v, "--token-budget");
    if ((q.has_cost_budget = ctl_given(v, "--cost-budget")))
        q.cost_budget_micro_usd = (uint64_t)llround(strtod(ctl_str(v, "--cost-budget"), NULL)
                                                    * 1e6);
    q.reset_usage = ctl_given(v, "--reset-usage");
    if (!q.has_weight && !q.priority[0] && !q.has_token_budget && !q.has_cost_budget &&
        !q.reset_usage)
        return ctl_fail(c, AOS_ERR_USAGE, "sched set: nothing to set (give --weight, "
                        "--priority, --token-budget, --cost-budget or --reset-usage)");
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.sched.set", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    aos_reply_clear(&r);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s, s:b}", "agent", q.agent, "ok", 1));
    printf("agent %s: set\n", q.agent);
    return 0;
}

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define NUM "{\"type\":\"number\",\"minimum\":0}"

static const char sched_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"providers\",\"agents\"],\"properties\":{"
    "\"providers\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"name\","
    "\"capacity\",\"eff_concurrency\",\"rate_factor\",\"pipeline\",\"in_flight\",\"queued\",\"admitted\","
    "\"completed\",\"rate_limited\",\"expired\",\"refused\",\"resent\",\"held_ms\","
    "\"window_requests\",\"window_tokens\",\"spent_today_micro_usd\"],\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"capacity\":{\"type\":\"object\",\"description\":\"aos.yaml's limits; 0: none\","
    "\"properties\":{\"max_concurrency\":" INT0 ",\"requests_per_min\":" INT0 ","
    "\"tokens_per_min\":" INT0 ",\"input_tokens_per_min\":" INT0 ",\"output_tokens_per_min\":"
    INT0 ",\"daily_spend_micro_usd\":" INT0 "}},"
    "\"eff_concurrency\":{\"type\":\"number\",\"description\":\"the concurrency admitted now, "
    "after 429s (AIMD); 0: unlimited\"},"
    "\"rate_factor\":{\"type\":\"number\",\"description\":\"the scale of the per-minute "
    "limits now, 0 to 1\"},"
    "\"pipeline\":{\"type\":\"number\",\"minimum\":1,\"description\":\"calls aosd keeps in "
    "flight per provider slot, so the hops and aos-llm's books do not idle the provider\"},"
    "\"in_flight\":" INT0 ","
    "\"queued\":{\"type\":\"object\",\"properties\":{\"interactive\":" INT0 ",\"batch\":" INT0
    "}},\"admitted\":" INT0 ",\"completed\":" INT0 ","
    "\"rate_limited\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"429s the provider "
    "still sent; each call went back to its place in the queue\"},"
    "\"expired\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"calls whose deadline "
    "came in the queue (TIMEOUT)\"},\"refused\":" INT0 ","
    "\"resent\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"calls aos-llm sent to the "
    "provider again after a restart\"},"
    "\"held_ms\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"Retry-After left\"},"
    "\"window_requests\":" INT0 ",\"window_tokens\":" INT0 ",\"spent_today_micro_usd\":" INT0
    "}}},"
    "\"agents\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"agent\","
    "\"weight\",\"priority\",\"token_budget\",\"cost_budget_micro_usd\",\"tokens\","
    "\"cost_micro_usd\",\"requests\",\"refused\",\"queued\",\"in_flight\",\"wait_p50_us\","
    "\"wait_p99_us\",\"share\"],\"properties\":{\"agent\":{\"type\":\"string\","
    "\"description\":\"empty: calls on no agent's behalf\"},\"weight\":" NUM ","
    "\"priority\":{\"type\":\"string\",\"enum\":[\"interactive\",\"batch\"]},"
    "\"token_budget\":" INT0 ",\"cost_budget_micro_usd\":" INT0 ",\"tokens\":" INT0 ","
    "\"cost_micro_usd\":" INT0 ",\"requests\":" INT0 ",\"refused\":" INT0 ",\"queued\":" INT0
    ",\"in_flight\":" INT0 ",\"wait_p50_us\":" INT0 ",\"wait_p99_us\":" INT0 ","
    "\"share\":{\"type\":\"number\",\"minimum\":0,\"maximum\":1,\"description\":\"its part of "
    "the tokens used by all agents\"}}}}}}";

static const char set_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"ok\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"ok\":{\"type\":\"boolean\"}}}";

static const char *const prio[] = {"interactive", "batch", NULL};

static const ctl_arg set_args[] = {
    {.name = "AGENT", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "the agent"},
    {.name = "--weight", .value = "W", .pattern = "^[0-9]+(\\.[0-9]+)?$",
     .check = check_weight, .summary = "its share of each provider beside the others' (1)"},
    {.name = "--priority", .value = "CLASS", .choices = prio,
     .summary = "interactive goes before batch; batch that waited 2 s goes first"},
    {.name = "--token-budget", .type = CTL_INTEGER, .value = "N", .min = 0,
     .max = INT64_MAX, .summary = "tokens it may use in all (0: no budget)"},
    {.name = "--cost-budget", .value = "USD", .pattern = "^[0-9]+(\\.[0-9]+)?$",
     .check = check_usd, .summary = "US dollars it may spend in all (0: no budget)"},
    {.name = "--reset-usage", .type = CTL_BOOL,
     .summary = "count its use from 0 again"},
};

static const ctl_cmd sched_cmds[] = {
    {"sched", "the LLM scheduler: each provider's capacity, limit after 429s, calls in "
     "flight and queued; each agent's weight, share, tokens and queue wait",
     NULL, 0, sched_out, cmd_sched},
    {"sched set", "an agent's weight, priority and budgets (the admin's; never the agent's)",
     CTL_ARGS(set_args), set_out, cmd_set},
};

const ctl_group ctl_group_sched = {sched_cmds, sizeof sched_cmds / sizeof sched_cmds[0]};
