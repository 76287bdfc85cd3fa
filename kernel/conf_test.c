/* Unit tests of aos.yaml's parser and aosd's use of it: a good file into the protobuf, each
 * refusal with its line:column, the sim script, the defaults, the API keys kept secret. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "conf.h"
#include "config.h"

#define KEY "sk-planted-Zq8xV1uE4tK0pL7mN3bC"
#define KEYVAR "AOS_CONF_TEST_KEY"

/* bytes fields unpacked from the wire carry no NUL */
#define assert_bytes(b, s)                                                                 \
    do {                                                                                   \
        assert_int_equal((b).len, strlen(s));                                              \
        assert_memory_equal((b).data, (s), strlen(s));                                     \
    } while (0)

static char dir[256];

/* DIR/name with text in it; the path into out. */
static void put(const char *name, const char *text, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", dir, name);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static aos_err load_text(const char *text, conf **c, char *why, size_t whylen)
{
    char path[512];
    put("aos.yaml", text, path, sizeof path);
    return conf_load(path, 1, c, why, whylen);
}

static const char good[] =
    "# the kernel's keys\n"
    "restart_intensity: 7/60\n"
    "heartbeat_ms: 500\n"
    "heartbeat_timeout_ms: 4000\n"
    "stop_timeout_ms: 3000\n"
    "workers: 3\n"
    "pg_dsn: \"host=/tmp dbname=aos\"\n"
    "bin_dir: bin\n"
    "llm:\n"
    "  default_model: openai/gpt-4o-mini\n"
    "  honour_retry_after: true\n"
    "  max_body_bytes: 16777216\n"
    "  ca_bundle: ca.pem\n"
    "  providers:\n"
    "    - name: openai\n"
    "      kind: openai\n"
    "      base_url: https://api.openai.com/v1\n"
    "      api_key_env: " KEYVAR "\n"
    "      timeout_ms: 60000\n"
    "      max_retries: 2\n"
    "      limits: {max_concurrency: 64, requests_per_min: 500, tokens_per_min: 200000}\n"
    "      models:\n"
    "        - name: gpt-4o-mini\n"
    "          price: {input: 0.15, output: 0.60, cache_read: 0.075, cache_write: 0}\n"
    "          context_length: 128000\n"
    "        - {name: text-embedding-3-small, embedding: true, price: {input: 0.02}}\n"
    "    - name: claude\n"
    "      kind: anthropic\n"
    "      base_url: http://127.0.0.1:8080\n"
    "      anthropic_version: \"2023-06-01\"\n"
    "      models: [{name: claude-3-5-haiku}]\n"
    "    - name: sim\n"
    "      kind: sim\n"
    "      sim:\n"
    "        latency_ms: 5\n"
    "        tokens_per_s: 100\n"
    "        embed_dim: 64\n"
    "        synonyms: [\"car automobile vehicle\", \"buy purchase\"]\n"
    "        script: script.yaml\n"
    "      models: [{name: sim-1}, {name: sim-embed, embedding: true}]\n";

static const char script[] =
    "turns:\n"
    "  - text: \"Let me look that up.\"\n"
    "    tool_calls:\n"
    "      - {id: call_1, name: search, arguments: {q: weather, n: 3, hot: true, x: ~}}\n"
    "      - {name: noargs}\n"
    "  - text: \"It is sunny.\"\n"
    "    expect: \"sunny\"\n";

static void a_good_file_round_trips_into_the_protobuf(void **st)
{
    (void)st;
    char path[512], why[1024] = "";
    put("script.yaml", script, path, sizeof path);
    put("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", path,
        sizeof path);
    setenv(KEYVAR, KEY, 1);
    conf *c;
    assert_int_equal(load_text(good, &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_from_file(c), 1);
    assert_int_equal(conf_nwarnings(c), 0);

    const conf_kernel *k = conf_kernel_settings(c);
    assert_true(k->has_restart_intensity && k->intensity == 7 && k->period_ms == 60000);
    assert_true(k->has_heartbeat_ms && k->heartbeat_ms == 500);
    assert_true(k->has_heartbeat_timeout_ms && k->heartbeat_timeout_ms == 4000);
    assert_true(k->has_stop_timeout_ms && k->stop_timeout_ms == 3000);
    assert_true(k->has_workers && k->workers == 3);
    assert_false(k->has_stable_ms);
    assert_false(k->has_pg_bin_dir);
    assert_string_equal(k->pg_dsn, "host=/tmp dbname=aos");
    char want[512];
    snprintf(want, sizeof want, "%s/bin", dir); /* relative: from the file's directory */
    assert_string_equal(k->bin_dir, want);

    const Aos__Llm__Config *l = conf_llm(c);
    /* through the wire, as aos-llm gets it */
    size_t n = aos__llm__config__get_packed_size(l);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    aos__llm__config__pack(l, buf);
    Aos__Llm__Config *u = aos__llm__config__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(u);
    assert_bytes(u->default_model, "openai/gpt-4o-mini");
    assert_true(u->honour_retry_after);
    assert_int_equal(u->max_body_bytes, 16777216);
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    assert_bytes(u->ca_bundle, ca);
    assert_true(u->ca_pem.len > 27 && !memcmp(u->ca_pem.data, "-----BEGIN CERTIFICATE-----", 27));
    assert_int_equal(u->n_providers, 3);

    const Aos__Llm__Provider *p = u->providers[0];
    assert_bytes(p->name, "openai");
    assert_bytes(p->kind, "openai");
    assert_bytes(p->base_url, "https://api.openai.com/v1");
    assert_bytes(p->api_key_env, KEYVAR);
    assert_int_equal(p->api_key.len, strlen(KEY));
    assert_memory_equal(p->api_key.data, KEY, strlen(KEY));
    assert_int_equal(p->timeout_ms, 60000);
    assert_int_equal(p->max_retries, 2);
    assert_int_equal(p->limits->max_concurrency, 64);
    assert_int_equal(p->limits->requests_per_min, 500);
    assert_int_equal(p->limits->tokens_per_min, 200000);
    assert_null(p->sim);
    assert_int_equal(p->n_models, 2);
    assert_bytes(p->models[0]->name, "gpt-4o-mini");
    assert_true(p->models[0]->price_input == 0.15 && p->models[0]->price_output == 0.60);
    assert_true(p->models[0]->price_cache_read == 0.075 && p->models[0]->price_cache_write == 0);
    assert_int_equal(p->models[0]->context_length, 128000);
    assert_false(p->models[0]->embedding);
    assert_true(p->models[1]->embedding);
    assert_true(p->models[1]->price_input == 0.02);

    p = u->providers[1];
    assert_bytes(p->kind, "anthropic");
    assert_bytes(p->anthropic_version, "2023-06-01");
    assert_int_equal(p->api_key.len, 0);

    p = u->providers[2];
    assert_bytes(p->kind, "sim");
    assert_int_equal(p->base_url.len, 0);
    assert_non_null(p->sim);
    assert_int_equal(p->sim->latency_ms, 5);
    assert_int_equal(p->sim->tokens_per_s, 100);
    assert_int_equal(p->sim->embed_dim, 64);
    assert_int_equal(p->sim->n_synonyms, 2);
    assert_memory_equal(p->sim->synonyms[1].data, "buy purchase", 12);
    snprintf(want, sizeof want, "%s/script.yaml", dir);
    assert_bytes(p->sim->script_path, want);
    assert_int_equal(p->sim->n_script, 2);
    const Aos__Llm__SimTurn *t = p->sim->script[0];
    assert_bytes(t->text, "Let me look that up.");
    assert_int_equal(t->n_tool_calls, 2);
    assert_bytes(t->tool_calls[0]->id, "call_1");
    assert_bytes(t->tool_calls[0]->name, "search");
    assert_bytes(t->tool_calls[0]->arguments,
                        "{\"q\":\"weather\",\"n\":3,\"hot\":true,\"x\":null}");
    assert_int_equal(t->tool_calls[1]->id.len, 0);
    assert_int_equal(t->tool_calls[1]->arguments.len, 0);
    assert_int_equal(t->expect.len, 0);
    assert_bytes(p->sim->script[1]->expect, "sunny");
    aos__llm__config__free_unpacked(u, NULL);
    conf_free(c);
    unsetenv(KEYVAR);
}

/* ---- refusals ------------------------------------------------------------------------- */

/* A valid first provider (whose key is read) so that later errors come after a key. */
#define PRE                                                                                \
    "llm:\n"                                                                               \
    "  providers:\n"                                                                       \
    "    - name: first\n"                                                                  \
    "      kind: openai\n"                                                                 \
    "      base_url: https://api.example.com/v1\n"                                         \
    "      api_key_env: " KEYVAR "\n"                                                      \
    "      models: [{name: m1}, {name: e1, embedding: true}]\n"
/* PRE is 7 lines: what follows starts on line 8 */

static const struct bad {
    const char *text;
    aos_err rc;
    const char *want; /* in why, after the file name */
} bads[] = {
    {PRE "    - name: sim\n      kinds: sim\n      models: [{name: s}]\n", AOS_ERR_USAGE,
     ":9:7: llm.providers[1]: unknown key 'kinds' (expected one of: name, kind, base_url, "
     "api_key_env, timeout_ms, max_retries, anthropic_version, limits, models, sim)"},
    {"workerz: 3\n", AOS_ERR_USAGE, ":1:1: unknown key 'workerz' (expected one of: pg_dsn,"},
    {PRE "    - {name: x, kind: openai, base_url: http://h, timeout_ms: soon, models: [{name: a}]}\n",
     AOS_ERR_USAGE, ":8:63: llm.providers[1].timeout_ms: expects a whole number from 0 to "
     "3600000, not 'soon'"},
    {PRE "    - {name: x, kind: openai, base_url: http://h, max_retries: 11, models: [{name: a}]}\n",
     AOS_ERR_USAGE, ":8:64: llm.providers[1].max_retries: 11 is out of range (0 to 10)"},
    {"workers: 65\n", AOS_ERR_USAGE, ":1:10: workers: 65 is out of range (1 to 64)"},
    {"heartbeat_ms: \"100\"\n", AOS_ERR_USAGE, ":1:15: heartbeat_ms: expects a whole number"},
    {PRE "  honour_retry_after: yes please\n", AOS_ERR_USAGE,
     ":8:23: llm.honour_retry_after: expects true or false, not 'yes please'"},
    {PRE "    - name: x\n      kind: sim\n      models:\n        - name: a\n"
         "          price: {input: -1}\n", AOS_ERR_USAGE,
     ":12:26: llm.providers[1].models[0].price.input: -1 is out of range (0 to 1000000)"},
    {PRE "    - name: x\n      kind: sim\n      models:\n        - {name: a, price: {output: .nan}}\n",
     AOS_ERR_USAGE, ":11:37: llm.providers[1].models[0].price.output: expects a number"},
    {PRE "    - name: x\n      kind: sim\n      models:\n        - {name: a, price: {output: 1e999}}\n",
     AOS_ERR_USAGE, ":11:37: llm.providers[1].models[0].price.output: expects a number"},
    {PRE "    - {name: first, kind: sim, models: [{name: a}]}\n", AOS_ERR_USAGE,
     ":8:14: llm.providers[1].name: provider 'first' is defined twice"},
    {PRE "    - {name: x, kind: sim, models: [{name: a}, {name: a}]}\n", AOS_ERR_USAGE,
     ":8:55: llm.providers[1].models[1].name: model 'a' is listed twice in this provider"},
    {PRE "  default_model: nobody/m1\n", AOS_ERR_USAGE,
     ":8:18: llm.default_model: no provider 'nobody' (providers: first)"},
    {PRE "  default_model: first/m2\n", AOS_ERR_USAGE,
     ":8:18: llm.default_model: provider first has no model 'm2' (its models: m1, e1)"},
    {PRE "  default_model: first/e1\n", AOS_ERR_USAGE,
     ":8:18: llm.default_model: first/e1 is an embedding model"},
    {PRE "  default_model: m1\n", AOS_ERR_USAGE,
     ":8:18: llm.default_model: expects provider/model"},
    {PRE "    - {name: x, kind: openai, base_url: ftp://h/, models: [{name: a}]}\n",
     AOS_ERR_USAGE, ":8:41: llm.providers[1].base_url: base_url must start with http:// or "
     "https://"},
    {PRE "    - {name: x, kind: openai, base_url: \"https://u:pw@h/\", models: [{name: a}]}\n",
     AOS_ERR_USAGE, ":8:41: llm.providers[1].base_url: base_url holds credentials"},
    {PRE "    - {name: x, kind: anthropic, models: [{name: a}]}\n", AOS_ERR_USAGE,
     ":8:7: llm.providers[1]: provider x (kind anthropic) needs a base_url"},
    {PRE "    - {name: x, kind: gemini, models: [{name: a}]}\n", AOS_ERR_USAGE,
     ":8:23: llm.providers[1].kind: unknown kind 'gemini' (expected one of: openai, "
     "anthropic, sim)"},
    {PRE "    - {name: Bad!, kind: sim, models: [{name: a}]}\n", AOS_ERR_USAGE,
     ":8:14: llm.providers[1].name: a provider's name is [a-z0-9_-]{1,32}"},
    {PRE "    - {name: x, kind: openai, base_url: http://h, anthropic_version: v1, "
         "models: [{name: a}]}\n", AOS_ERR_USAGE,
     ":8:70: llm.providers[1].anthropic_version: is for kind anthropic only"},
    {PRE "    - {name: x, kind: openai, base_url: http://h, sim: {}, models: [{name: a}]}\n",
     AOS_ERR_USAGE, ":8:56: llm.providers[1].sim: is for kind sim only"},
    {PRE "    - {name: x, kind: sim, sim: {embed_dim: 0}, models: [{name: a}]}\n",
     AOS_ERR_USAGE, ":8:45: llm.providers[1].sim.embed_dim: 0 is out of range (1 to 4096)"},
    {PRE "    - {name: x, kind: sim, models: []}\n", AOS_ERR_USAGE,
     ":8:36: llm.providers[1].models: expects a sequence of at least one model"},
    {PRE "    - {name: x, kind: openai, base_url: http://h, api_key_env: " KEY ", "
         "models: [{name: a}]}\n", AOS_ERR_USAGE,
     ":8:64: llm.providers[1].api_key_env: expects the name of an environment variable"},
    {"llm:\n  providers: []\n", AOS_ERR_USAGE,
     ":2:14: llm.providers: expects a sequence of at least one provider"},
    {"llm: {default_model: sim/sim-1}\n", AOS_ERR_USAGE, ":1:6: llm: needs providers:"},
    {"heartbeat_ms: 5000\nheartbeat_timeout_ms: 5000\n", AOS_ERR_USAGE,
     ":2:23: heartbeat_timeout_ms: must be longer than heartbeat_ms (5000)"},
    {"restart_intensity: 5\n", AOS_ERR_USAGE,
     ":1:20: restart_intensity: wants R/T (R restarts in T seconds, like 5/30), not '5'"},
    {"workers: 2\nworkers: 3\n", AOS_ERR_USAGE,
     ":2:1: key 'workers' given twice (first on line 1)"},
    {"base: &b {x: 1}\n", AOS_ERR_USAGE, ":1:7: YAML anchors (&name) are not accepted"},
    {"a: [1]\nb: *a\n", AOS_ERR_USAGE, ":2:4: YAML aliases (*name) are not accepted"},
    {"workers: 2\n---\nworkers: 3\n", AOS_ERR_USAGE, ":2:1: a second YAML document"},
    {"- workers\n", AOS_ERR_USAGE, ":1:1: expects a mapping of keys"},
    {"workers: [3\n", AOS_ERR_USAGE, "not valid YAML"},
    {"llm:\n  providers:\n    - name: x\n\tkind: sim\n", AOS_ERR_USAGE,
     ":4:1: not valid YAML: found a tab character that violates indentation"},
    {"a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     AOS_ERR_TOO_BIG, "nested more than 32 levels deep"},
    {"api: {listen: 0.0.0.0}\n", AOS_ERR_USAGE,
     ":1:15: api.listen: 0.0.0.0 is off loopback: the front door serves it only over TLS"},
    {"api: {listen: localhost}\n", AOS_ERR_USAGE, ":1:15: api.listen: expects an IPv4 address"},
    {"api: {tls_key: /nonexistent/k.pem}\n", AOS_ERR_USAGE,
     ":1:16: api.tls_key: needs api.tls_cert too"},
    {"api: {tls_cert: /nonexistent/c.pem, tls_key: /nonexistent/k.pem}\n", AOS_ERR_USAGE,
     ":1:17: api.tls_cert: cannot open /nonexistent/c.pem"},
    {"api: {tls_cert: /proc/self/stat, tls_key: /proc/self/stat}\n", AOS_ERR_USAGE,
     ":1:17: api.tls_cert: /proc/self/stat holds no PEM certificate"},
    {"api: {metrics_token_env: \"tok en\"}\n", AOS_ERR_USAGE,
     ":1:26: api.metrics_token_env: expects the name of an environment variable"},
};

static void every_bad_file_is_refused_with_its_line_and_column(void **st)
{
    (void)st;
    setenv(KEYVAR, KEY, 1);
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        char why[1024] = "";
        conf *c = (conf *)1;
        aos_err rc = load_text(bads[i].text, &c, why, sizeof why);
        print_message("case %zu: %s\n", i, why);
        assert_int_equal(rc, bads[i].rc);
        assert_null(c);
        if (!strstr(why, bads[i].want))
            fail_msg("case %zu: wanted \"%s\" in \"%s\"", i, bads[i].want, why);
        assert_true(strncmp(why, dir, strlen(dir)) == 0); /* the file is named first */
        if (strstr(why, KEY) || strstr(why, "Zq8xV1uE"))
            fail_msg("case %zu: the API key is in the message: %s", i, why);
    }
    unsetenv(KEYVAR);
}

/* head, then n copies of line with each '@' replaced by the copy's index. */
static char *repeat(const char *head, const char *line, size_t n)
{
    size_t cap = strlen(head) + n * (strlen(line) * 8 + 1) + 1, used = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    used += (size_t)snprintf(s, cap, "%s", head);
    for (size_t i = 0; i < n; i++)
        for (const char *p = line; *p; p++)
            if (*p == '@')
                used += (size_t)snprintf(s + used, cap - used, "%zu", i);
            else
                s[used++] = *p;
    s[used] = 0;
    return s;
}

static void the_caps_are_enforced(void **st)
{
    (void)st;
    char why[1024], path[512];
    conf *c;
    char *t = repeat("llm:\n  providers:\n", "    - {name: p@, kind: sim, models: [{name: m}]}\n",
                     CONF_PROVIDERS_MAX);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_llm(c)->n_providers, CONF_PROVIDERS_MAX);
    conf_free(c);
    free(t);
    t = repeat("llm:\n  providers:\n", "    - {name: p@, kind: sim, models: [{name: m}]}\n",
               CONF_PROVIDERS_MAX + 1);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, ":3:5: llm.providers: 65 providers, more than 64"));
    free(t);

    t = repeat("llm:\n  providers:\n    - name: p\n      kind: sim\n      models:\n",
               "        - {name: m@}\n", CONF_MODELS_MAX + 1);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, ":6:9: llm.providers[0].models: 257 models, more than 256"));
    free(t);

    t = repeat("turns:\n", "  - text: t@\n", CONF_TURNS_MAX + 1);
    put("long.yaml", t, path, sizeof path);
    free(t);
    assert_int_equal(load_text("llm:\n  providers:\n    - {name: s, kind: sim, sim: {script: "
                               "long.yaml}, models: [{name: m}]}\n", &c, why, sizeof why),
                     AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "long.yaml:2:3: turns: 1001 turns, more than 1000"));

    /* five providers of one 1 MB script: more than aos-llm reads off its fd */
    char line[1100] = "  - text: ";
    memset(line + strlen(line), 'w', 1000);
    strcpy(line + 1010, "\n");
    t = repeat("turns:\n", line, CONF_TURNS_MAX);
    put("big.yaml", t, path, sizeof path);
    free(t);
    t = repeat("llm:\n  providers:\n", "    - {name: p@, kind: sim, sim: {script: big.yaml}, "
               "models: [{name: m}]}\n", 5);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "packed, more than aos-llm takes (4194304)"));
    free(t);

    /* a file past 1 MiB is refused before it is parsed */
    t = malloc(CONF_FILE_MAX + 2);
    assert_non_null(t);
    memset(t, '#', CONF_FILE_MAX + 1);
    t[CONF_FILE_MAX + 1] = 0;
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "more than the cap of 1048576"));
    free(t);
}

/* The billion laughs: nine lines whose walk would be 10^9 nodes are refused at the first &. */
static void the_billion_laughs_are_refused(void **st)
{
    (void)st;
    char *t = repeat("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
                     "b@: [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n", 9);
    char why[1024];
    conf *c;
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, ":1:4: YAML anchors"));
    free(t);
}

static void the_old_json_file_is_refused_naming_the_new_keys(void **st)
{
    (void)st;
    char path[512], why[1024];
    conf *c;
    put("config.json", "workers: 2\n", path, sizeof path); /* by its name, whatever it holds */
    assert_int_equal(conf_load(path, 1, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "config.json is the old JSON configuration; aos now reads "
                                "aos.yaml: move its keys there (restart_intensity, "
                                "heartbeat_ms, heartbeat_timeout_ms, pg_dsn"));
    assert_int_equal(load_text("  \n{\"restart_intensity\": \"5/30\", \"heartbeat_ms\": 100}\n", &c,
                               why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "aos.yaml is the old JSON configuration"));
}

static void the_sim_script_loads_relative_to_the_file_with_its_own_errors(void **st)
{
    (void)st;
    char path[512], why[1024], want[600];
    conf *c;
    assert_int_equal(mkdir(strcat(strcpy(path, dir), "/scripts"), 0700), 0);
    put("scripts/s.yaml", "turns:\n  - text: hi\n    tool_calls: [{name: t, arguments: "
                          "'{\"a\": [1, 2]}'}]\n", path, sizeof path);
    static const char cfg[] = "llm:\n  providers:\n    - name: s\n      kind: sim\n"
                              "      sim: {script: scripts/s.yaml}\n"
                              "      models: [{name: m}]\n";
    /* from another working directory: the path is the file's, not the cwd's */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir("/"), 0);
    assert_int_equal(load_text(cfg, &c, why, sizeof why), AOS_OK);
    const Aos__Llm__SimSettings *s = conf_llm(c)->providers[0]->sim;
    snprintf(want, sizeof want, "%s/scripts/s.yaml", dir);
    assert_string_equal((char *)s->script_path.data, want);
    assert_int_equal(s->n_script, 1);
    assert_string_equal((char *)s->script[0]->tool_calls[0]->arguments.data, "{\"a\":[1,2]}");
    assert_string_equal((char *)conf_llm(c)->default_model.data, "s/m");
    conf_free(c);

    /* a bad script line: the script's own file, line and column */
    put("scripts/s.yaml", "turns:\n  - text: hi\n  - txt: oops\n", path, sizeof path);
    assert_int_equal(load_text(cfg, &c, why, sizeof why), AOS_ERR_USAGE);
    snprintf(want, sizeof want, "%s/scripts/s.yaml:3:5: turns[1]: unknown key 'txt' "
             "(expected one of: text, tool_calls, expect)", dir);
    assert_string_equal(why, want);
    put("scripts/s.yaml", "turns:\n  - tool_calls: [{name: t, arguments: [1]}]\n", path,
        sizeof path);
    assert_int_equal(load_text(cfg, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "s.yaml:2:39: turns[0].tool_calls[0].arguments: expects a "
                                "mapping"));
    put("scripts/s.yaml", "turns:\n  - text: [unclosed\n", path, sizeof path);
    assert_int_equal(load_text(cfg, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "s.yaml:3:1: not valid YAML"));
    /* a missing script: the config's line that names it */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(load_text(cfg, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "aos.yaml:5:21: llm.providers[0].sim.script: cannot read "));
    assert_non_null(strstr(why, "No such file or directory"));
    assert_int_equal(chdir(cwd), 0);
}

static void check_builtin(const conf *c)
{
    const Aos__Llm__Config *l = conf_llm(c);
    assert_int_equal(l->n_providers, 1);
    assert_string_equal((char *)l->providers[0]->name.data, "sim");
    assert_string_equal((char *)l->providers[0]->kind.data, "sim");
    assert_non_null(l->providers[0]->sim);
    assert_int_equal(l->providers[0]->n_models, 2);
    assert_string_equal((char *)l->providers[0]->models[0]->name.data, "sim-1");
    assert_false(l->providers[0]->models[0]->embedding);
    assert_string_equal((char *)l->providers[0]->models[1]->name.data, "sim-embed");
    assert_true(l->providers[0]->models[1]->embedding);
    assert_string_equal((char *)l->default_model.data, "sim/sim-1");
}

static void an_absent_default_file_is_the_sim_provider_only(void **st)
{
    (void)st;
    char path[512], why[1024];
    conf *c;
    snprintf(path, sizeof path, "%s/absent.yaml", dir);
    assert_int_equal(conf_load(path, 0, &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_from_file(c), 0);
    assert_string_equal(conf_path(c), path);
    assert_false(conf_kernel_settings(c)->has_workers);
    check_builtin(c);
    conf_free(c);
    /* named on the line, it must be there */
    assert_int_equal(conf_load(path, 1, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "absent.yaml: No such file or directory"));
    /* a file of comments, or without llm:, is the defaults too */
    assert_int_equal(load_text("# nothing yet\n", &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_from_file(c), 1);
    check_builtin(c);
    conf_free(c);
    assert_int_equal(load_text("workers: 2\n", &c, why, sizeof why), AOS_OK);
    check_builtin(c);
    conf_free(c);
}

static void the_api_key_comes_from_the_environment_or_a_warning(void **st)
{
    (void)st;
    char why[1024];
    conf *c;
    static const char t[] = "llm:\n  providers:\n    - name: o\n      kind: openai\n"
                            "      base_url: https://h/v1\n      api_key_env: " KEYVAR "\n"
                            "      models: [{name: m}]\n";
    setenv(KEYVAR, KEY, 1);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_OK);
    assert_memory_equal(conf_llm(c)->providers[0]->api_key.data, KEY, strlen(KEY));
    assert_int_equal(conf_nwarnings(c), 0);
    conf_free(c);

    unsetenv(KEYVAR);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_llm(c)->providers[0]->api_key.len, 0);
    assert_int_equal(conf_nwarnings(c), 1);
    assert_string_equal(conf_warning(c, 0), "$" KEYVAR " is not set: provider o has no API key");
    assert_null(conf_warning(c, 1));
    conf_free(c);

    /* a key an HTTP header cannot carry is refused, without the key in the message */
    setenv(KEYVAR, KEY "\r\nX-Injected: 1", 1);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, ":6:20: llm.providers[0].api_key_env: the value of $" KEYVAR
                                " holds a space, a control character"));
    assert_null(strstr(why, "Zq8xV1uE"));
    unsetenv(KEYVAR);
}

/* audit.otlp: the endpoint and numbers as given, a header's value from the environment (a
 * warning when unset, never in a message), and each bad value refused with its place. */
static void the_audit_section_configures_the_otlp_export(void **st)
{
    (void)st;
    char why[1024];
    conf *c;
    static const char t[] = "audit:\n  otlp:\n    endpoint: http://127.0.0.1:4318/v1/traces\n"
                            "    headers: [{name: authorization, value_env: AOS_TEST_OTLP_H}]\n"
                            "    batch_size: 100\n    max_queue_spans: 1000\n"
                            "    flush_ms: 50\n    retry_max_ms: 2000\n";
    setenv("AOS_TEST_OTLP_H", "Bearer Zq8xV1uE-otlp", 1);
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_OK);
    const Aos__Audit__Config *a = conf_audit(c);
    assert_non_null(a);
    assert_memory_equal(a->otlp_endpoint.data, "http://127.0.0.1:4318/v1/traces", 31);
    assert_int_equal(a->batch_size, 100);
    assert_int_equal(a->max_queue_spans, 1000);
    assert_int_equal(a->flush_ms, 50);
    assert_int_equal(a->retry_max_ms, 2000);
    assert_int_equal(a->timeout_ms, 0); /* absent: the exporter's default */
    assert_int_equal(a->n_otlp_headers, 1);
    assert_memory_equal(a->otlp_headers[0]->value.data, "Bearer Zq8xV1uE-otlp", 20);
    conf_free(c);
    unsetenv("AOS_TEST_OTLP_H");
    assert_int_equal(load_text(t, &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_audit(c)->n_otlp_headers, 0);
    assert_int_equal(conf_nwarnings(c), 1);
    conf_free(c);
    assert_int_equal(load_text("workers: 2\n", &c, why, sizeof why), AOS_OK);
    assert_null(conf_audit(c)); /* no section: no export, no network for aos-audit */
    conf_free(c);
    static const struct {
        const char *text, *want;
    } abads[] = {
        {"audit:\n  otlp:\n    endpoint: ftp://h/v1/traces\n",
         "audit.otlp.endpoint: must start with http:// or https://"},
        {"audit:\n  otlp:\n    endpoint: http://u:p@h/v1/traces\n", "credentials"},
        {"audit:\n  otlp: {batch_size: 10}\n", "audit.otlp: needs endpoint:"},
        {"audit:\n  otlp: {endpoint: http://h/, batch_size: 0}\n", "audit.otlp.batch_size"},
        {"audit:\n  otlp: {endpoint: http://h/, batch_size: 100, max_queue_spans: 10}\n",
         "more than max_queue_spans"},
        {"audit:\n  otlp: {endpoint: http://h/, max_queue_spans: 100000}\n",
         "audit.otlp.max_queue_spans"},
        {"audit:\n  otlp: {endpoint: http://h/, headerz: []}\n", "headerz"},
        {"audit:\n  otlp: {endpoint: http://h/, headers: [{name: a, value_env: "
         "\"Bearer Zq8xV1uE\"}]}\n", "not the value itself"},
        {"audit:\n  otlp: {endpoint: http://h/, headers: [{name: \"a b\", value_env: X}]}\n",
         "HTTP header name"},
        {"audit:\n  exporter: {}\n", "exporter"},
    };
    for (size_t i = 0; i < sizeof abads / sizeof abads[0]; i++) {
        assert_int_not_equal(load_text(abads[i].text, &c, why, sizeof why), AOS_OK);
        if (!strstr(why, abads[i].want))
            fail_msg("%s: wanted %s in: %s", abads[i].text, abads[i].want, why);
        assert_null(strstr(why, "Zq8xV1uE"));
    }
}

/* The key read from the environment never reaches a message, whatever goes wrong after. */
static void a_planted_key_never_appears_in_any_message(void **st)
{
    (void)st;
    setenv(KEYVAR, KEY, 1);
    /* every refusal of the table, now with the key read first (PRE) or not at all */
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        char why[4096];
        conf *c;
        memset(why, 0, sizeof why);
        assert_int_not_equal(load_text(bads[i].text, &c, why, sizeof why), AOS_OK);
        assert_null(strstr(why, "Zq8xV1uE"));
    }
    /* and the successful load's warnings (the key of one provider, none for the other) */
    char why[1024];
    conf *c;
    assert_int_equal(load_text(PRE "    - {name: x, kind: openai, base_url: http://h, "
                               "api_key_env: AOS_CONF_TEST_UNSET, models: [{name: a}]}\n",
                               &c, why, sizeof why), AOS_OK);
    assert_int_equal(conf_nwarnings(c), 1);
    for (size_t i = 0; i < conf_nwarnings(c); i++)
        assert_null(strstr(conf_warning(c, i), "Zq8xV1uE"));
    conf_free(c);
    unsetenv(KEYVAR);
}

/* The commented example of tools/ is a good file, and says what the defaults are. */
static void the_example_file_is_a_good_file(void **st)
{
    (void)st;
    char why[1024] = "";
    conf *c;
    unsetenv("OPENAI_API_KEY");
    setenv("ANTHROPIC_API_KEY", KEY, 1);
    assert_int_equal(conf_load(AOS_EXAMPLE_YAML, 1, &c, why, sizeof why), AOS_OK);
    const Aos__Llm__Config *l = conf_llm(c);
    assert_int_equal(l->n_providers, 4);
    assert_string_equal((char *)l->default_model.data, "sim/sim-1");
    assert_int_equal(l->providers[1]->api_key.len, strlen(KEY));
    assert_int_equal(conf_nwarnings(c), 1);
    assert_string_equal(conf_warning(c, 0),
                        "$OPENAI_API_KEY is not set: provider openai has no API key");
    assert_false(conf_kernel_settings(c)->has_workers);
    conf_free(c);
    unsetenv("ANTHROPIC_API_KEY");
}

/* aosd: flag > environment > file > default, and the refusals stop the start. */
static void aosd_takes_flag_over_environment_over_file_over_default(void **st)
{
    (void)st;
    char path[512], ddir[512];
    snprintf(ddir, sizeof ddir, "%s/data", dir);
    assert_int_equal(mkdir(ddir, 0700), 0);
    put("data/aos.yaml", "pg_dsn: from-file\nworkers: 3\nheartbeat_ms: 700\n"
                         "stable_ms: 1500\npg_bin_dir: /opt/pg\n", path, sizeof path);
    unsetenv("AOS_PG_DSN");
    unsetenv("AOS_PG_BINDIR");
    kcfg k;
    char *argv1[] = {"aosd", "--data-dir", ddir, NULL};
    assert_int_equal(kcfg_load(&k, 3, argv1), 0);
    assert_string_equal(k.pg_dsn, "from-file");
    assert_string_equal(k.pg_bin_dir, "/opt/pg");
    assert_int_equal(k.workers, 3);
    assert_int_equal(k.heartbeat_ms, 700);
    assert_int_equal(k.heartbeat_timeout_ms, 5000); /* the default */
    assert_int_equal(k.stable_ms, 1500);
    assert_non_null(k.cf);
    assert_int_equal(conf_from_file(k.cf), 1);

    setenv("AOS_PG_DSN", "from-env", 1);
    setenv("AOS_PG_BINDIR", "/env/pg", 1);
    char *argv2[] = {"aosd", "--workers", "5", "--data-dir", ddir, "--stable-ms", "900", NULL};
    assert_int_equal(kcfg_load(&k, 7, argv2), 0);
    assert_string_equal(k.pg_dsn, "from-env");
    assert_string_equal(k.pg_bin_dir, "/env/pg");
    assert_int_equal(k.workers, 5);
    assert_int_equal(k.stable_ms, 900);
    char *argv3[] = {"aosd", "--pg-dsn", "from-flag", "--data-dir", ddir, NULL};
    assert_int_equal(kcfg_load(&k, 5, argv3), 0);
    assert_string_equal(k.pg_dsn, "from-flag");
    unsetenv("AOS_PG_DSN");
    unsetenv("AOS_PG_BINDIR");

    /* --config names another file; a bad one or an old JSON one stops aosd (usage) */
    put("other.yaml", "workers: 9\n", path, sizeof path);
    char *argv4[] = {"aosd", "--data-dir", ddir, "--config", path, NULL};
    assert_int_equal(kcfg_load(&k, 5, argv4), 0);
    assert_int_equal(k.workers, 9);
    put("old.json", "{\"heartbeat_ms\": 100}\n", path, sizeof path);
    assert_int_equal(kcfg_load(&k, 5, argv4), 2);
    snprintf(path, sizeof path, "%s/missing.yaml", dir);
    assert_int_equal(kcfg_load(&k, 5, argv4), 2);
    put("data/aos.yaml", "workers: 0\n", path, sizeof path);
    assert_int_equal(kcfg_load(&k, 3, argv1), 2);
    /* --help needs no good file */
    char *argv5[] = {"aosd", "--data-dir", ddir, "--help", NULL};
    assert_int_equal(kcfg_load(&k, 4, argv5), -1);
    char *argv6[] = {"aosd", "--data-dir", NULL};
    assert_int_equal(kcfg_load(&k, 2, argv6), 2);
}

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/aos-conf-test-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* tools: MCP servers and secrets (the value from aosd's environment, never in a message) */
static void test_tools_section(void **state)
{
    (void)state;
    conf *c = NULL;
    char why[1024];
    setenv("AOS_TEST_TOOL_SECRET", "s3cr3t-value", 1);
    const char *tgood = "tools:\n"
                       "  mcp:\n"
                       "    - {name: ev, command: /usr/bin/node, args: [a.js, stdio],\n"
                       "       env: [\"A=1\"], paths: [/opt/x], time_ms: 5000}\n"
                       "  secrets:\n"
                       "    - {name: GH_TOKEN, env: AOS_TEST_TOOL_SECRET, agents: [alice],\n"
                       "       tools: [sh, mcp.ev]}\n"
                       "    - {name: UNSET, env: AOS_TEST_TOOL_UNSET, agents: [bob], tools: [sh]}\n";
    unsetenv("AOS_TEST_TOOL_UNSET");
    assert_int_equal(load_text(tgood, &c, why, sizeof why), AOS_OK);
    const Aos__Tool__Config *t = conf_tool(c);
    assert_non_null(t);
    assert_int_equal(t->n_mcp, 1);
    assert_string_equal((const char *)t->mcp[0]->name.data, "ev");
    assert_int_equal(t->mcp[0]->n_args, 2);
    assert_int_equal(t->mcp[0]->time_ms, 5000);
    assert_int_equal(t->n_secrets, 2);
    assert_string_equal((const char *)t->secrets[0]->value.data, "s3cr3t-value");
    assert_int_equal(t->secrets[1]->value.len, 0);
    assert_int_equal(conf_nwarnings(c), 1);
    assert_null(strstr(conf_warning(c, 0), "s3cr3t"));
    /* neither variable may travel in a child's environment */
    assert_true(conf_env_is_secret(c, "AOS_TEST_TOOL_SECRET", 20));
    assert_true(conf_env_is_secret(c, "AOS_TEST_TOOL_UNSET", 19));
    assert_false(conf_env_is_secret(c, "AOS_TEST_TOOL", 13));
    size_t len = 0;
    uint8_t *p = conf_tool_packed(c, &len);
    assert_non_null(p);
    Aos__Tool__Config *u = aos__tool__config__unpack(NULL, len, p);
    assert_non_null(u);
    assert_int_equal(u->n_secrets, 2);
    aos__tool__config__free_unpacked(u, NULL);
    free(p);
    conf_free(c);
    static const char *const tbads[] = {
        "tools: {mcp: [{name: Bad, command: /x}]}\n",
        "tools: {mcp: [{name: a, command: /x}, {name: a, command: /y}]}\n",
        "tools: {mcp: [{name: a}]}\n",
        "tools: {mcp: [{name: a, command: /x, env: [NOEQUALS]}]}\n",
        "tools: {mcp: [{name: a, command: /x, paths: [relative]}]}\n",
        "tools: {secrets: [{name: lower, env: X, agents: [a], tools: [sh]}]}\n",
        "tools: {secrets: [{name: X, env: X, agents: [\"a/b\"], tools: [sh]}]}\n",
        "tools: {secrets: [{name: X, env: X, agents: [a]}]}\n",
        "tools: {mcpp: []}\n",
    };
    for (size_t i = 0; i < sizeof tbads / sizeof tbads[0]; i++) {
        c = NULL;
        if (load_text(tbads[i], &c, why, sizeof why) == AOS_OK)
            fail_msg("accepted: %s", tbads[i]);
        assert_null(strstr(why, "s3cr3t"));
    }
    /* the example's tools: section parses as it is */
    assert_int_equal(load_text("tools: {mcp: [], secrets: []}\n", &c, why, sizeof why), AOS_OK);
    assert_non_null(conf_tool(c));
    conf_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tools_section),
        cmocka_unit_test(a_good_file_round_trips_into_the_protobuf),
        cmocka_unit_test(every_bad_file_is_refused_with_its_line_and_column),
        cmocka_unit_test(the_caps_are_enforced),
        cmocka_unit_test(the_billion_laughs_are_refused),
        cmocka_unit_test(the_old_json_file_is_refused_naming_the_new_keys),
        cmocka_unit_test(the_sim_script_loads_relative_to_the_file_with_its_own_errors),
        cmocka_unit_test(an_absent_default_file_is_the_sim_provider_only),
        cmocka_unit_test(the_api_key_comes_from_the_environment_or_a_warning),
        cmocka_unit_test(the_audit_section_configures_the_otlp_export),
        cmocka_unit_test(a_planted_key_never_appears_in_any_message),
        cmocka_unit_test(the_example_file_is_a_good_file),
        cmocka_unit_test(aosd_takes_flag_over_environment_over_file_over_default),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
