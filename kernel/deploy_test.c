/* Unit tests of the deployment file: a full file into dep_agent values, the canonical JSON
 * and back, diff, and every class of refusal with its line, column and field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deploy.h"

/* What the tests' aosd knows: two tools, one model, one MCP tool; every question logged. */
static char asked[1024];

static int known(void *arg, const char *kind, const char *name)
{
    (void)arg;
    size_t n = strlen(asked);
    snprintf(asked + n, sizeof asked - n, "%s:%s ", kind, name);
    static const char *const have[] = {"model:sim/sim-small", "model:gpt-4o", "tool:cat",
                                       "tool:grep", "mcp_tool:fs/read_file", NULL};
    char k[256];
    snprintf(k, sizeof k, "%s:%s", kind, name);
    for (size_t i = 0; have[i]; i++)
        if (!strcmp(have[i], k))
            return 1;
    return 0;
}

static const char full[] =
    "# a full deployment\n"
    "agents:\n"
    "  - name: researcher\n"
    "    program: aos-agent\n"
    "    args: [\"--verbose\", \"\", \"two words\"]\n"
    "    model: sim/sim-small\n"
    "    tools: [grep, cat]\n"
    "    mcp_tools: [fs/read_file]\n"
    "    network: true\n"
    "    budgets:\n"
    "      tokens: 100000\n"
    "      cost_usd: 1.50\n"
    "      context_tokens: 32000\n"
    "      wall_s: 3600\n"
    "      steps: 100\n"
    "    weight: 2.5\n"
    "    priority: batch\n"
    "    restart:\n"
    "      policy: always\n"
    "      intensity: 3/60\n"
    "      backoff_min_ms: 200\n"
    "      backoff_max_ms: 10000\n"
    "    stop_timeout_ms: 2000\n"
    "    wake:\n"
    "      cron: \"*/5 * * * *\"\n"
    "    collections: [notes]\n"
    "    env: {LOG_LEVEL: debug, A1: 1, A: \"x=y\"}\n"
    "    talks_to: [watcher, idle-1]\n"
    "    subscribes: [alerts]\n"
    "  - name: watcher\n"
    "    program: /usr/local/bin/watch\n"
    "    wake: {every: 30s}\n"
    "  - {name: idle-1, program: idle, model: gpt-4o, wake: ~, budgets: {cost_usd: 0.1}}\n"
    "collections: [notes, logs]\n"
    "topics: [alerts]\n";

static const char watcher_json[] =
    "{\"args\":[],\"budgets\":{\"context_tokens\":0,\"cost_usd\":0.0,\"steps\":0,\"tokens\":0,"
    "\"wall_s\":0},\"collections\":[],\"env\":{},\"mcp_tools\":[],\"model\":\"\","
    "\"name\":\"watcher\",\"network\":false,\"priority\":\"interactive\","
    "\"program\":\"/usr/local/bin/watch\",\"restart\":{\"backoff_max_ms\":30000,"
    "\"backoff_min_ms\":100,\"intensity\":\"5/30\",\"policy\":\"on-failure\"},"
    "\"stop_timeout_ms\":5000,\"subscribes\":[],\"talks_to\":[],\"tools\":[],"
    "\"wake\":{\"every\":\"30s\"},\"weight\":1.0}";

static dep *parse_ok(const char *text)
{
    dep *d = NULL;
    char why[1024] = "";
    aos_err rc = dep_parse(text, strlen(text), "d.yaml", known, NULL, &d, why, sizeof why);
    if (rc != AOS_OK)
        fail_msg("refused (%d): %s", rc, why);
    return d;
}

/* The agent through its JSON and back: the same agent, the same bytes. */
static void round_trips(const dep_agent *a)
{
    char why[512] = "";
    char *j = dep_agent_json(a);
    assert_non_null(j);
    dep_agent *b = NULL;
    if (dep_agent_from_json(j, strlen(j), &b, why, sizeof why) != AOS_OK)
        fail_msg("its own JSON refused: %s\n%s", why, j);
    const char *f[16];
    size_t n = dep_agent_diff(a, b, f, 16);
    if (n)
        fail_msg("round trip changed %zu fields, first %s:\n%s", n, f[0], j);
    assert_int_equal(b->line, 0);
    char *j2 = dep_agent_json(b);
    assert_string_equal(j2, j);
    dep_agent *c = dep_agent_dup(b);
    assert_non_null(c);
    assert_int_equal(dep_agent_diff(a, c, f, 16), 0);
    assert_ptr_not_equal(c->program, b->program);
    dep_agent_free(c);
    dep_agent_free(b);
    free(j2);
    free(j);
}

static void a_full_file_reads_and_round_trips(void **st)
{
    (void)st;
    asked[0] = 0;
    dep *d = parse_ok(full);
    assert_string_equal(asked, "model:sim/sim-small tool:grep tool:cat mcp_tool:fs/read_file "
                               "model:gpt-4o ");
    assert_int_equal(dep_nagents(d), 3);
    assert_int_equal(dep_ncollections(d), 2);
    assert_string_equal(dep_collection_at(d, 0), "notes");
    assert_string_equal(dep_collection_at(d, 1), "logs");
    assert_int_equal(dep_ntopics(d), 1);
    assert_string_equal(dep_topic_at(d, 0), "alerts");
    assert_null(dep_agent_at(d, 3));

    const dep_agent *a = dep_agent_at(d, 0);
    assert_string_equal(a->name, "researcher");
    assert_int_equal(a->line, 3);
    assert_string_equal(a->program, "aos-agent");
    assert_int_equal(a->nargs, 3);
    assert_string_equal(a->args[0], "--verbose");
    assert_string_equal(a->args[1], "");
    assert_string_equal(a->args[2], "two words");
    assert_string_equal(a->model, "sim/sim-small");
    assert_int_equal(a->ntools, 2);
    assert_string_equal(a->tools[0], "cat"); /* sorted */
    assert_string_equal(a->tools[1], "grep");
    assert_int_equal(a->nmcp_tools, 1);
    assert_string_equal(a->mcp_tools[0], "fs/read_file");
    assert_int_equal(a->network, 1);
    assert_int_equal(a->budget_tokens, 100000);
    assert_true(a->budget_cost_usd == 1.5);
    assert_int_equal(a->budget_context_tokens, 32000);
    assert_int_equal(a->budget_wall_s, 3600);
    assert_int_equal(a->budget_steps, 100);
    assert_true(a->weight == 2.5);
    assert_int_equal(a->batch, 1);
    assert_int_equal(a->restart, DEP_RESTART_ALWAYS);
    assert_int_equal(a->intensity, 3);
    assert_int_equal(a->period_ms, 60000);
    assert_int_equal(a->backoff_min_ms, 200);
    assert_int_equal(a->backoff_max_ms, 10000);
    assert_int_equal(a->stop_timeout_ms, 2000);
    assert_int_equal(a->every_ms, 0);
    assert_string_equal(a->cron, "*/5 * * * *");
    assert_true(a->cron_parsed.minute == 0x84210842108421ull); /* 0, 5, ... 55 */
    assert_int_equal(cron_next(&a->cron_parsed, 1704067350), 1704067500);
    assert_int_equal(a->ncollections, 1);
    assert_string_equal(a->collections[0], "notes");
    assert_int_equal(a->nenv, 3); /* by name: A, A1, LOG_LEVEL */
    assert_string_equal(a->env[0], "A=x=y");
    assert_string_equal(a->env[1], "A1=1");
    assert_string_equal(a->env[2], "LOG_LEVEL=debug");
    assert_int_equal(a->ntalks_to, 2); /* sorted */
    assert_string_equal(a->talks_to[0], "idle-1");
    assert_string_equal(a->talks_to[1], "watcher");
    assert_int_equal(a->nsubscribes, 1);
    assert_string_equal(a->subscribes[0], "alerts");

    const dep_agent *w = dep_agent_at(d, 1);
    assert_string_equal(w->name, "watcher");
    assert_int_equal(w->line, 30);
    assert_string_equal(w->program, "/usr/local/bin/watch");
    assert_int_equal(w->every_ms, 30000);
    assert_null(w->cron);
    assert_string_equal(w->model, "");
    char *j = dep_agent_json(w);
    assert_string_equal(j, watcher_json);
    free(j);

    const dep_agent *i = dep_agent_at(d, 2);
    assert_int_equal(i->line, 33);
    assert_true(i->budget_cost_usd == 0.1);
    assert_int_equal(i->every_ms, 0);
    assert_null(i->cron);
    j = dep_agent_json(i);
    assert_non_null(strstr(j, "\"cost_usd\":0.1,"));
    assert_non_null(strstr(j, "\"wake\":null"));
    free(j);

    j = dep_agent_json(a);
    assert_non_null(strstr(j, "\"env\":{\"A\":\"x=y\",\"A1\":\"1\",\"LOG_LEVEL\":\"debug\"}"));
    assert_non_null(strstr(j, "\"restart\":{\"backoff_max_ms\":10000,\"backoff_min_ms\":200,"
                              "\"intensity\":\"3/60\",\"policy\":\"always\"}"));
    assert_non_null(strstr(j, "\"wake\":{\"cron\":\"*/5 * * * *\"}"));
    assert_non_null(strstr(j, "\"budgets\":{\"context_tokens\":32000,\"cost_usd\":1.5,"
                              "\"steps\":100,\"tokens\":100000,\"wall_s\":3600}"));
    assert_non_null(strstr(j, "\"weight\":2.5}"));
    free(j);

    for (size_t k = 0; k < dep_nagents(d); k++)
        round_trips(dep_agent_at(d, k));
    dep_free(d);
}

static void defaults_and_empty_files(void **st)
{
    (void)st;
    dep *d = parse_ok("agents:\n  - {name: a, program: p}\n");
    const dep_agent *a = dep_agent_at(d, 0);
    assert_int_equal(a->nargs + a->ntools + a->nmcp_tools + a->ncollections + a->nenv, 0);
    assert_string_equal(a->model, "");
    assert_int_equal(a->network, 0);
    assert_int_equal(a->budget_tokens + a->budget_context_tokens + a->budget_wall_s +
                         a->budget_steps, 0);
    assert_true(a->budget_cost_usd == 0 && a->weight == 1.0);
    assert_int_equal(a->batch, 0);
    assert_int_equal(a->restart, DEP_RESTART_ON_FAILURE);
    assert_int_equal(a->intensity, 5);
    assert_int_equal(a->period_ms, 30000);
    assert_int_equal(a->backoff_min_ms, 100);
    assert_int_equal(a->backoff_max_ms, 30000);
    assert_int_equal(a->stop_timeout_ms, 5000);
    assert_int_equal(a->every_ms, 0);
    assert_null(a->cron);
    round_trips(a);
    dep_free(d);

    static const char *const empty[] = {"", "# nothing\n", "~\n", "agents: []\n",
                                        "collections: [a, b-2]\n", "agents:\ntopics:\n"};
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        d = parse_ok(empty[i]);
        assert_int_equal(dep_nagents(d), 0);
        dep_free(d);
    }
    /* without known(), nothing is looked up */
    char why[256];
    const char *t = "agents: [{name: a, program: p, model: x/y, tools: [zz]}]\n";
    assert_int_equal(dep_parse(t, strlen(t), NULL, NULL, NULL, &d, why, sizeof why), AOS_OK);
    assert_string_equal(dep_agent_at(d, 0)->model, "x/y");
    dep_free(d);
    dep_free(NULL);
    dep_agent_free(NULL);
}

static void diff_names_the_changed_fields(void **st)
{
    (void)st;
    dep *d = parse_ok(full);
    dep_agent *a = dep_agent_dup(dep_agent_at(d, 0));
    const dep_agent *orig = dep_agent_at(d, 0);
    const char *f[4];
    assert_int_equal(dep_agent_diff(orig, a, f, 4), 0);

    free(a->model);
    a->model = strdup("gpt-4o");
    a->budget_steps = 7;
    free(a->cron);
    a->cron = NULL;
    a->every_ms = 60000;
    assert_int_equal(dep_agent_diff(orig, a, f, 4), 3);
    assert_string_equal(f[0], "budgets");
    assert_string_equal(f[1], "model");
    assert_string_equal(f[2], "wake");
    /* more than cap: the count is whole, out holds cap */
    a->weight = 3;
    a->network = 0;
    assert_int_equal(dep_agent_diff(orig, a, f, 2), 5);
    assert_string_equal(f[1], "model");

    /* and through a file: the second file changes tools, env, restart, priority */
    const dep_agent *w = dep_agent_at(d, 1);
    dep *e = parse_ok("agents:\n  - name: watcher\n    program: /usr/local/bin/watch\n"
                      "    wake: {every: 30}\n    tools: [cat]\n    env: {X: y}\n"
                      "    restart: {policy: never}\n    priority: batch\n"
                      "    args: []\n    collections: []\n");
    const char *g[16];
    size_t n = dep_agent_diff(w, dep_agent_at(e, 0), g, 16);
    assert_int_equal(n, 4);
    assert_string_equal(g[0], "env");
    assert_string_equal(g[1], "priority");
    assert_string_equal(g[2], "restart");
    assert_string_equal(g[3], "tools");
    dep_free(e);
    /* the same agent written another way: no difference */
    e = parse_ok("agents:\n- program: /usr/local/bin/watch\n  name: watcher\n"
                 "  wake: {every: 30000ms}\n  restart: {intensity: 5/30}\n  weight: 1\n"
                 "  budgets: {tokens: 0, cost_usd: 0}\n  model: \"\"\n");
    assert_int_equal(dep_agent_diff(w, dep_agent_at(e, 0), g, 16), 0);
    dep_free(e);
    dep_agent_free(a);
    dep_free(d);
}

/* text must be refused with code and a message that starts with want. */
static void refused(const char *text, aos_err code, const char *want)
{
    dep *d = (dep *)1;
    char why[1024] = "";
    aos_err rc = dep_parse(text, strlen(text), "d.yaml", known, NULL, &d, why, sizeof why);
    if (rc != code || strncmp(why, want, strlen(want)))
        fail_msg("got %d '%s'\n wanted %d '%s'\n for: %s", rc, why, code, want, text);
    assert_null(d);
}

#define A0 "agents:\n  - name: a\n    program: p\n"

static void every_refusal_names_its_line_and_field(void **st)
{
    (void)st;
    /* bad YAML: the line and column from libyaml */
    refused("agents:\n  - name: a\n    program: [p\n", AOS_ERR_USAGE,
            "d.yaml:4:1: not valid YAML: did not find expected ',' or ']'");
    refused("agents:\n  - name: a\n   bad: indent\n", AOS_ERR_USAGE, "d.yaml:3:");
    refused("a: &x 1\nb: *x\n", AOS_ERR_USAGE, "d.yaml:1:4: YAML anchors");
    refused("---\na: 1\n---\nb: 2\n", AOS_ERR_USAGE, "d.yaml:3:1: a second YAML document");
    /* unknown keys, at every level */
    refused(A0 "    modle: x\n", AOS_ERR_USAGE,
            "d.yaml:4:5: agents[0]: unknown key 'modle' (expected one of: name, program,");
    refused("agent: []\n", AOS_ERR_USAGE,
            "d.yaml:1:1: unknown key 'agent' (expected one of: agents, collections, topics)");
    refused(A0 "    budgets: {token: 5}\n", AOS_ERR_USAGE,
            "d.yaml:4:15: agents[0].budgets: unknown key 'token'");
    refused(A0 "    restart:\n      polcy: never\n", AOS_ERR_USAGE,
            "d.yaml:5:7: agents[0].restart: unknown key 'polcy'");
    refused(A0 "    wake: {every: 1s, at: 2}\n", AOS_ERR_USAGE,
            "d.yaml:4:23: agents[0].wake: unknown key 'at'");
    refused(A0 "    \"name\\0x\": b\n", AOS_ERR_USAGE,
            "d.yaml:4:5: agents[0]: unknown key 'name?x'");
    refused(A0 "    name: b\n", AOS_ERR_USAGE,
            "d.yaml:4:5: agents[0]: key 'name' given twice (first on line 2)");
    /* unknown model, tool, MCP tool, by known() */
    refused(A0 "    model: sim/nope\n", AOS_ERR_USAGE,
            "d.yaml:4:12: agents[0].model: no model 'sim/nope' is known");
    refused(A0 "    tools:\n      - cat\n      - nosuch\n", AOS_ERR_USAGE,
            "d.yaml:6:9: agents[0].tools[1]: no tool 'nosuch' is known");
    refused(A0 "    mcp_tools: [fs/write_file]\n", AOS_ERR_USAGE,
            "d.yaml:4:17: agents[0].mcp_tools[0]: no mcp_tool 'fs/write_file' is known");
    /* budgets */
    refused(A0 "    budgets:\n      tokens: -5\n", AOS_ERR_USAGE,
            "d.yaml:5:15: agents[0].budgets.tokens: must be a non-negative number");
    refused(A0 "    budgets: {cost_usd: -0.5}\n", AOS_ERR_USAGE,
            "d.yaml:4:25: agents[0].budgets.cost_usd: must be a non-negative number");
    refused(A0 "    budgets: {cost_usd: .inf}\n", AOS_ERR_USAGE,
            "d.yaml:4:25: agents[0].budgets.cost_usd: must be a non-negative number, not "
            "'.inf'");
    refused(A0 "    budgets: {wall_s: 1e400}\n", AOS_ERR_USAGE,
            "d.yaml:4:23: agents[0].budgets.wall_s: must be a non-negative number, not '1e400'");
    refused(A0 "    budgets: {context_tokens: 255}\n", AOS_ERR_USAGE,
            "d.yaml:4:31: agents[0].budgets.context_tokens: must be 0 (none) or 256 to 2000000 "
            "tokens");
    refused(A0 "    budgets: {context_tokens: 2000001}\n", AOS_ERR_USAGE,
            "d.yaml:4:31: agents[0].budgets.context_tokens: must be 0 (none) or 256 to 2000000 "
            "tokens");
    refused(A0 "    budgets: {steps: \"5\"}\n", AOS_ERR_USAGE,
            "d.yaml:4:22: agents[0].budgets.steps: must be a non-negative number, not '5'");
    refused(A0 "    budgets: {steps: 2.5}\n", AOS_ERR_USAGE,
            "d.yaml:4:22: agents[0].budgets.steps: must be a whole number");
    refused(A0 "    budgets: {tokens: 9007199254740993}\n", AOS_ERR_USAGE,
            "d.yaml:4:23: agents[0].budgets.tokens: is more than 9007199254740992");
    /* weight */
    refused(A0 "    weight: 0.001\n", AOS_ERR_USAGE,
            "d.yaml:4:13: agents[0].weight: 0.001 is out of range (0.01 to 10000)");
    refused(A0 "    weight: 10001\n", AOS_ERR_USAGE,
            "d.yaml:4:13: agents[0].weight: 10001 is out of range (0.01 to 10000)");
    refused(A0 "    weight: heavy\n", AOS_ERR_USAGE,
            "d.yaml:4:13: agents[0].weight: must be a number from 0.01 to 10000, not 'heavy'");
    /* duplicate names */
    refused(A0 "  - name: b\n    program: p\n  - name: a\n    program: q\n", AOS_ERR_USAGE,
            "d.yaml:6:11: agents[2].name: agent 'a' is declared twice (first on line 2)");
    refused("collections: [x, y, x]\n", AOS_ERR_USAGE,
            "d.yaml:1:21: collections[2]: 'x' is listed twice");
    refused("topics: [t, t]\n", AOS_ERR_USAGE, "d.yaml:1:13: topics[1]: 't' is listed twice");
    refused(A0 "    tools: [cat, cat]\n", AOS_ERR_USAGE,
            "d.yaml:4:18: agents[0].tools[1]: 'cat' is listed twice");
    /* cron */
    refused(A0 "    wake: {cron: \"61 * * * *\"}\n", AOS_ERR_USAGE,
            "d.yaml:4:18: agents[0].wake.cron: minute: 61 is out of range 0-59");
    refused(A0 "    wake: {cron: \"* * *\"}\n", AOS_ERR_USAGE,
            "d.yaml:4:18: agents[0].wake.cron: has 3 fields; a schedule has 5");
    refused(A0 "    wake:\n      cron: \"*/0 * * * *\"\n", AOS_ERR_USAGE,
            "d.yaml:5:13: agents[0].wake.cron: minute: the step in */0 must be a number");
    /* wake: one of them, long enough */
    refused(A0 "    wake:\n      every: 30s\n      cron: \"* * * * *\"\n", AOS_ERR_USAGE,
            "d.yaml:5:7: agents[0].wake: give one of every or cron, not both");
    refused(A0 "    wake: {}\n", AOS_ERR_USAGE,
            "d.yaml:4:11: agents[0].wake: needs every (an interval) or cron");
    refused(A0 "    wake: {every: 50ms}\n", AOS_ERR_USAGE,
            "d.yaml:4:19: agents[0].wake.every: 50ms is shorter than 100ms");
    refused(A0 "    wake: {every: 5 s}\n", AOS_ERR_USAGE,
            "d.yaml:4:19: agents[0].wake.every: '5 s': the unit is ms, s, m, h or d");
    /* collections must be the file's */
    refused(A0 "    collections: [notes, other]\ncollections: [notes]\n", AOS_ERR_USAGE,
            "d.yaml:4:26: agents[0].collections[1]: collection 'other' is not in the file's "
            "collections list");
    /* talks_to: agents of the file, also those declared after; subscribes: its topics */
    refused(A0 "    talks_to: [b, nobody]\n  - name: b\n    program: p\n", AOS_ERR_USAGE,
            "d.yaml:4:19: agents[0].talks_to[1]: agent 'nobody' is not an agent of this file");
    refused(A0 "    talks_to: [B]\n", AOS_ERR_USAGE, "d.yaml:4:16: agents[0].talks_to[0]: 'B'");
    refused(A0 "    talks_to: [b, b]\n", AOS_ERR_USAGE,
            "d.yaml:4:19: agents[0].talks_to[1]: 'b' is listed twice");
    refused(A0 "    subscribes: [alerts, news]\ntopics: [alerts]\n", AOS_ERR_USAGE,
            "d.yaml:4:26: agents[0].subscribes[1]: topic 'news' is not in the file's topics "
            "list");
    /* env */
    refused(A0 "    env:\n      AOS_X: 1\n", AOS_ERR_USAGE,
            "d.yaml:5:7: agents[0].env.AOS_X: names starting AOS_ are aosd's own");
    refused(A0 "    env: {lower: 1}\n", AOS_ERR_USAGE,
            "d.yaml:4:11: agents[0].env.lower: 'lower' is not a variable's name");
    refused(A0 "    env: {X: [1]}\n", AOS_ERR_USAGE,
            "d.yaml:4:14: agents[0].env.X: expects a string, not a sequence");
    /* the rest of the fields' rules */
    refused("agents:\n  - program: p\n", AOS_ERR_USAGE,
            "d.yaml:2:5: agents[0]: an agent needs a name");
    refused("agents:\n  - name: a\n", AOS_ERR_USAGE,
            "d.yaml:2:5: agents[0]: an agent needs a program");
    refused("agents:\n  - name: A\n    program: p\n", AOS_ERR_USAGE,
            "d.yaml:2:11: agents[0].name: 'A' is not an agent's name");
    refused("agents:\n  - name: a\n    program: ../p\n", AOS_ERR_USAGE,
            "d.yaml:3:14: agents[0].program: '../p' is neither an absolute path");
    refused(A0 "    model: \"a b\"\n", AOS_ERR_USAGE,
            "d.yaml:4:12: agents[0].model: 'a b' is not provider/model");
    refused(A0 "    tools: cat\n", AOS_ERR_USAGE,
            "d.yaml:4:12: agents[0].tools: expects a sequence of names");
    refused(A0 "    tools: [\"c t\"]\n", AOS_ERR_USAGE,
            "d.yaml:4:13: agents[0].tools[0]: 'c t' is not a tool's name");
    refused(A0 "    mcp_tools: [read_file]\n", AOS_ERR_USAGE,
            "d.yaml:4:17: agents[0].mcp_tools[0]: 'read_file' is not an MCP tool");
    refused(A0 "    network: yes\n", AOS_ERR_USAGE,
            "d.yaml:4:14: agents[0].network: expects true or false, not 'yes'");
    refused(A0 "    priority: urgent\n", AOS_ERR_USAGE,
            "d.yaml:4:15: agents[0].priority: expects interactive or batch, not 'urgent'");
    refused(A0 "    restart: {policy: sometimes}\n", AOS_ERR_USAGE,
            "d.yaml:4:23: agents[0].restart.policy: expects never, on-failure or always");
    refused(A0 "    restart: {intensity: 5/0}\n", AOS_ERR_USAGE,
            "d.yaml:4:26: agents[0].restart.intensity: wants R/T");
    refused(A0 "    restart: {backoff_min_ms: 40000}\n", AOS_ERR_USAGE,
            "d.yaml:4:31: agents[0].restart.backoff_min_ms: backoff_max_ms (30000) is less "
            "than backoff_min_ms (40000)");
    refused(A0 "    stop_timeout_ms: -1\n", AOS_ERR_USAGE,
            "d.yaml:4:22: agents[0].stop_timeout_ms: -1 is out of range (0 to 86400000)");
    refused(A0 "    args: [\"a\\0b\"]\n", AOS_ERR_USAGE,
            "d.yaml:4:12: agents[0].args[0]: holds a NUL byte");
    refused("agents: {a: 1}\n", AOS_ERR_USAGE,
            "d.yaml:1:9: agents: expects a sequence of agents, not a mapping");
    refused("- a\n", AOS_ERR_USAGE, "d.yaml:1:1: expects a mapping of keys (agents ...)");
    refused("agents: [x]\n", AOS_ERR_USAGE, "d.yaml:1:10: agents[0]: expects a mapping of keys");
}

static void caps_are_too_big(void **st)
{
    (void)st;
    /* more than 32 arguments; an argument past 1024 bytes; past 4096 agents; past 4 MiB */
    char *t = malloc(DEP_FILE_MAX + 64);
    assert_non_null(t);
    strcpy(t, A0 "    args: [");
    for (int i = 0; i < 33; i++)
        strcat(t, i ? ",x" : "x");
    strcat(t, "]\n");
    refused(t, AOS_ERR_TOO_BIG, "d.yaml:4:11: agents[0].args: 33 arguments, more than 32");

    strcpy(t, A0 "    args: [");
    size_t n = strlen(t);
    memset(t + n, 'x', 1025);
    strcpy(t + n + 1025, "]\n");
    refused(t, AOS_ERR_TOO_BIG, "d.yaml:4:12: agents[0].args[0]: is 1025 bytes, more than 1024");

    strcpy(t, "agents:\n");
    n = strlen(t);
    for (int i = 0; i <= (int)DEP_AGENTS_MAX; i++)
        n += (size_t)sprintf(t + n, "- {name: a%d, program: p}\n", i);
    refused(t, AOS_ERR_TOO_BIG, "d.yaml:2:1: agents: 4097 agents, more than 4096");

    memset(t, '#', DEP_FILE_MAX + 1);
    t[DEP_FILE_MAX + 1] = 0;
    refused(t, AOS_ERR_TOO_BIG, "d.yaml: is 4194305 bytes, more than the cap of 4194304");

    strcpy(t, "agents: ");
    for (int i = 0; i < 40; i++)
        strcat(t, "[");
    refused(t, AOS_ERR_TOO_BIG, "d.yaml:1:40: nested more than 32 levels deep");
    free(t);
}

static void json_is_checked_like_the_file(void **st)
{
    (void)st;
    dep_agent *a = (dep_agent *)1;
    char why[512];
    const char *j = "{\"name\":\"a\",\"program\":\"p\"}";
    assert_int_equal(dep_agent_from_json(j, strlen(j), &a, why, sizeof why), AOS_OK);
    assert_string_equal(a->name, "a");
    assert_int_equal(a->stop_timeout_ms, 5000);
    assert_int_equal(a->line, 0);
    dep_agent_free(a);

    struct {
        const char *json, *want;
    } bad[] = {
        {"{\"name\":\"a\",", "not valid JSON: "},
        {"[1]", "expects a mapping of keys (name ...), not a sequence"},
        {"{\"name\":\"a\",\"program\":\"p\",\"budgets\":{\"tokens\":-1}}",
         "budgets.tokens: must be a non-negative number"},
        {"{\"name\":\"a\",\"program\":\"p\",\"modle\":\"x\"}", "unknown key 'modle'"},
        {"{\"name\":\"a\",\"program\":\"p\",\"weight\":0}",
         "weight: 0 is out of range (0.01 to 10000)"},
        {"{\"name\":\"a\",\"program\":\"p\",\"env\":{\"AOS_X\":\"1\"}}",
         "env.AOS_X: names starting AOS_ are aosd's own"},
        {"{\"name\":\"a\",\"program\":\"p\",\"env\":{\"X\":1}}", "env.X: expects a string"},
        {"{\"name\":\"a\",\"program\":\"p\",\"wake\":{\"every\":\"1s\",\"cron\":\"* * * * *\"}}",
         "wake: give one of every or cron, not both"},
        {"{\"name\":\"a\",\"program\":\"p\",\"wake\":{\"cron\":\"*/0 * * * *\"}}",
         "wake.cron: minute: the step in */0"},
        {"{\"name\":\"a\",\"program\":1}", "program: expects a string"},
        {"{\"name\":\"a\",\"name\":\"b\",\"program\":\"p\"}", "not valid JSON: "},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = (dep_agent *)1;
        why[0] = 0;
        assert_int_equal(dep_agent_from_json(bad[i].json, strlen(bad[i].json), &a, why,
                                             sizeof why),
                         AOS_ERR_USAGE);
        if (strncmp(why, bad[i].want, strlen(bad[i].want)))
            fail_msg("%s: '%s', wanted '%s'", bad[i].json, why, bad[i].want);
        assert_null(a);
    }
    /* whole seconds as a number, as in the file */
    j = "{\"name\":\"a\",\"program\":\"p\",\"wake\":{\"every\":90}}";
    assert_int_equal(dep_agent_from_json(j, strlen(j), &a, why, sizeof why), AOS_OK);
    assert_int_equal(a->every_ms, 90000);
    char *s = dep_agent_json(a);
    assert_non_null(strstr(s, "\"wake\":{\"every\":\"90s\"}"));
    free(s);
    dep_agent_free(a);
}

static void durations(void **st)
{
    (void)st;
    struct {
        const char *text;
        uint64_t ms;
    } ok[] = {{"30s", 30000},  {"500ms", 500},     {"2m", 120000}, {"1h", 3600000},
              {"1d", 86400000}, {"45", 45000},     {"0", 0},       {"3650d", 315360000000ull}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t ms = 1;
        char why[128];
        assert_int_equal(dep_duration_ms(ok[i].text, &ms, why, sizeof why), AOS_OK);
        assert_int_equal(ms, ok[i].ms);
    }
    static const char *const bad[] = {"", "s", "1.5s", "-1s", "30 s", "30S", "1w", "3651d",
                                      "99999999999999999999999ms", " 30s", "30s "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 7;
        char why[128] = "";
        assert_int_equal(dep_duration_ms(bad[i], &ms, why, sizeof why), AOS_ERR_USAGE);
        assert_int_equal(ms, 7);
        assert_true(why[0]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_full_file_reads_and_round_trips),
        cmocka_unit_test(defaults_and_empty_files),
        cmocka_unit_test(diff_names_the_changed_fields),
        cmocka_unit_test(every_refusal_names_its_line_and_field),
        cmocka_unit_test(caps_are_too_big),
        cmocka_unit_test(json_is_checked_like_the_file),
        cmocka_unit_test(durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
