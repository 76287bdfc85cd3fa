/* The front door through a real aosd and the sim provider: OpenAI and Anthropic calls (plain,
 * streamed, tool calls), embeddings, keys and refusals, hostile HTTP, and kill -9 of aos-api. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "harness.h"

static h_aosd *H;
static char DATA_DIR[128];
static char KEY_A1[128], KEY_A2[128], KEY_POOR[128], KEY_SLOW[128];
static int PORT;

#define CAP_CONNS 16
#define IDLE_S 2

/* ---- files, aosctl ------------------------------------------------------------------- */

static json_t *ctl_json(const char *const *argv)
{
    static char out[1 << 20];
    int rc = h_aosctl(H, out, sizeof out, argv);
    json_t *o = json_loads(out, 0, NULL);
    if (rc != 0 || !o)
        fail_msg("aosctl %s %s: exit %d: %s", argv[0], argv[1] ? argv[1] : "", rc, out);
    return o;
}

static void new_key(const char *agent, char *out, size_t cap, char *id, size_t idcap)
{
    json_t *o = ctl_json((const char *const[]){"--json", "agent", "key", "create", agent, NULL});
    const char *k = json_string_value(json_object_get(o, "key"));
    assert_non_null(k);
    assert_int_equal(strncmp(k, "aos-", 4), 0);
    snprintf(out, cap, "%s", k);
    if (id)
        snprintf(id, idcap, "%s", json_string_value(json_object_get(o, "id")));
    json_decref(o);
}

static int read_port(void)
{
    char path[256], txt[16] = "";
    snprintf(path, sizeof path, "%s/api/port", DATA_DIR);
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(txt, 1, sizeof txt - 1, f);
            fclose(f);
            txt[n] = 0;
            if (atoi(txt) > 0)
                return atoi(txt);
        }
        usleep(50000);
    }
    fail_msg("no port in %s", path);
    return 0;
}

/* ---- HTTP with libcurl ------------------------------------------------------------------ */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char hdrs[8192];
    size_t hlen;
    CURLcode cc;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
    resp *r = u;
    char *nb = realloc(r->body, r->len + sz * n + 1);
    if (!nb)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, p, sz * n);
    r->len += sz * n;
    r->body[r->len] = 0;
    return sz * n;
}

static size_t on_hdr(char *p, size_t sz, size_t n, void *u)
{
    resp *r = u;
    size_t k = sz * n;
    if (r->hlen + k < sizeof r->hdrs) {
        memcpy(r->hdrs + r->hlen, p, k);
        r->hlen += k;
        r->hdrs[r->hlen] = 0;
    }
    return k;
}

static void resp_free(resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* method path with the given headers (NULL-terminated) and body (NULL: none; len -1:
 * strlen). chunked: sent with Transfer-Encoding: chunked (no Content-Length). */
static void http(const char *method, const char *path, const char *const *headers,
                 const char *body, long len, int chunked, resp *r)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", PORT, path);
    struct curl_slist *hl = NULL;
    for (size_t i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    hl = curl_slist_append(hl, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    if (chunked)
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_hdr);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (!chunked)
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, len < 0 ? (long)strlen(body) : len);
    }
    r->cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
}

static const char *const *bearer(const char *key)
{
    static char h[2][200];
    static const char *v[2];
    snprintf(h[0], sizeof h[0], "Authorization: Bearer %s", key);
    v[0] = h[0];
    v[1] = NULL;
    return v;
}

static const char *const *xkey(const char *key)
{
    static char h[2][200];
    static const char *v[3];
    snprintf(h[0], sizeof h[0], "x-api-key: %s", key);
    snprintf(h[1], sizeof h[1], "anthropic-version: 2023-06-01");
    v[0] = h[0];
    v[1] = h[1];
    v[2] = NULL;
    return v;
}

static json_t *body_json(const resp *r)
{
    json_t *o = r->body ? json_loads(r->body, 0, NULL) : NULL;
    if (!o)
        fail_msg("HTTP %ld: not JSON: %s", r->status, r->body ? r->body : "(none)");
    return o;
}

/* The status and the error object's field (OpenAI: error.code or error.type; Anthropic:
 * error.type) of a refusal. */
static void expect_error(const resp *r, long status, const char *field, const char *want)
{
    if (r->status != status)
        fail_msg("want HTTP %ld, got %ld: %s", status, r->status, r->body ? r->body : "");
    json_t *o = body_json(r);
    const char *got = json_string_value(json_object_get(json_object_get(o, "error"), field));
    if (!got || strcmp(got, want))
        fail_msg("want error.%s %s, got %s", field, want, r->body);
    json_decref(o);
}

#define CHAT(model, text)                                                                   \
    "{\"model\":\"" model "\",\"messages\":[{\"role\":\"user\",\"content\":\"" text "\"}]}"

static char *plain_text(const char *key, const char *body)
{
    resp r;
    http("POST", "/v1/chat/completions", bearer(key), body, -1, 0, &r);
    if (r.status != 200)
        fail_msg("chat: HTTP %ld: %s", r.status, r.body ? r.body : "");
    json_t *o = body_json(&r);
    json_t *m = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    char *t = strdup(json_string_value(json_object_get(m, "content")));
    json_decref(o);
    resp_free(&r);
    return t;
}

/* ---- the fixture ------------------------------------------------------------------------- */

static const char SCRIPT[] = "turns:\n"
                             "  - text: \"Let me look.\"\n"
                             "    tool_calls:\n"
                             "      - {id: call_w1, name: get_weather, arguments: {city: Paris}}\n"
                             "  - text: \"It is sunny in Paris.\"\n"
                             "    expect: \"sunny\"\n";

static int setup(void **st)
{
    (void)st;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-api-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char path[256], yaml[2048];
    snprintf(path, sizeof path, "%s/script.yaml", DATA_DIR);
    h_write_file(path, SCRIPT);
    snprintf(yaml, sizeof yaml,
             "restart_intensity: 100/60\n"
             "api: {max_connections: %d, max_body_bytes: 1048576, idle_timeout_s: %d}\n"
             "llm:\n"
             "  default_model: sim/sim-1\n"
             "  providers:\n"
             "    - name: sim\n"
             "      kind: sim\n"
             "      models: [{name: sim-1, price: {input: 1, output: 2}}, "
             "{name: sim-embed, embedding: true}]\n"
             "    - name: tsim\n"
             "      kind: sim\n"
             "      sim: {script: %s}\n"
             "      models: [{name: t1}]\n"
             "    - name: slow\n"
             "      kind: sim\n"
             "      sim: {tokens_per_s: 4}\n"
             "      models: [{name: s1}]\n",
             CAP_CONNS, IDLE_S, path);
    H = h_start_yaml(DATA_DIR, yaml);
    snprintf(path, sizeof path, "%s/deploy.yaml", DATA_DIR);
    h_write_file(path, "agents:\n"
                     "  - name: a1\n    program: aos-test-agent\n    args: [idle]\n"
                     "    model: sim/sim-1\n"
                     "  - name: a2\n    program: aos-test-agent\n    args: [idle]\n"
                     "    model: tsim/t1\n"
                     "  - name: poor\n    program: aos-test-agent\n    args: [idle]\n"
                     "    model: sim/sim-1\n    budgets: {tokens: 5}\n"
                     "  - name: a3\n    program: aos-test-agent\n    args: [idle]\n"
                     "    model: slow/s1\n");
    json_t *o = ctl_json((const char *const[]){"--json", "apply", "-f", path, NULL});
    json_decref(o);
    new_key("a1", KEY_A1, sizeof KEY_A1, NULL, 0);
    new_key("a2", KEY_A2, sizeof KEY_A2, NULL, 0);
    new_key("poor", KEY_POOR, sizeof KEY_POOR, NULL, 0);
    new_key("a3", KEY_SLOW, sizeof KEY_SLOW, NULL, 0);
    PORT = read_port();
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    curl_global_cleanup();
    return 0;
}

/* ---- OpenAI ------------------------------------------------------------------------------ */

static void chat_plain(void **st)
{
    (void)st;
    resp r;
    http("POST", "/v1/chat/completions", bearer(KEY_A1), CHAT("sim/sim-1", "hello front door"),
         -1, 0, &r);
    assert_int_equal(r.status, 200);
    json_t *o = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "chat.completion");
    assert_int_equal(strncmp(json_string_value(json_object_get(o, "id")), "chatcmpl-", 9), 0);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    const char *text =
        json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
    assert_non_null(text);
    assert_non_null(strstr(text, "hello front door"));
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    json_t *u = json_object_get(o, "usage");
    assert_true(json_integer_value(json_object_get(u, "completion_tokens")) > 0);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")),
                     json_integer_value(json_object_get(u, "prompt_tokens")) +
                         json_integer_value(json_object_get(u, "completion_tokens")));
    json_decref(o);
    resp_free(&r);
}

/* Each "data: " line of an SSE body in order (the JSON events; "[DONE]" as a string). */
static json_t *sse_events(const char *body, int *done, int anthropic)
{
    json_t *arr = json_array();
    *done = 0;
    const char *p = body;
    char last_event[64] = "";
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n > 7 && !strncmp(p, "event: ", 7))
            snprintf(last_event, sizeof last_event, "%.*s", (int)(n - 7), p + 7);
        if (n > 6 && !strncmp(p, "data: ", 6)) {
            if (n == 12 && !strncmp(p + 6, "[DONE]", 6)) {
                *done = 1;
            } else {
                json_t *o = json_loadb(p + 6, n - 6, 0, NULL);
                if (!o)
                    fail_msg("an SSE data line is not JSON: %.*s", (int)n, p);
                if (anthropic) /* the event name and the data's type agree */
                    assert_string_equal(json_string_value(json_object_get(o, "type")),
                                        last_event);
                json_array_append_new(arr, o);
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    return arr;
}

/* aos-api's stage figures (aosctl server stats api): name -> value, -1 when absent */
static int64_t api_stat(json_t *stats, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(stats, "stats"), i, e)
        if (!strcmp(json_string_value(json_object_get(e, "name")), name))
            return (int64_t)json_integer_value(json_object_get(e, "value"));
    return -1;
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void chat_stream(void **st)
{
    (void)st;
    char *want = plain_text(KEY_A1, CHAT("sim/sim-1", "stream me please"));
    resp r;
    static const char *const stats_argv[] = {"--json", "server", "stats", "api", NULL};
    json_t *s0 = ctl_json(stats_argv);
    uint64_t t0 = wall_us();
    http("POST", "/v1/chat/completions", bearer(KEY_A1),
         "{\"model\":\"sim/sim-1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"stream me please\"}]}",
         -1, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.hdrs, "text/event-stream"));
    int done = 0;
    json_t *ev = sse_events(r.body, &done, 0);
    assert_true(done);
    char text[4096] = "";
    size_t i;
    json_t *e;
    int chunks = 0, usage = 0;
    const char *finish = NULL;
    json_array_foreach(ev, i, e) {
        assert_string_equal(json_string_value(json_object_get(e, "object")),
                            "chat.completion.chunk");
        json_t *ch = json_array_get(json_object_get(e, "choices"), 0);
        const char *c = json_string_value(json_object_get(json_object_get(ch, "delta"),
                                                          "content"));
        if (c) {
            strncat(text, c, sizeof text - strlen(text) - 1);
            chunks++;
        }
        if (json_string_value(json_object_get(ch, "finish_reason")))
            finish = json_string_value(json_object_get(ch, "finish_reason"));
        if (json_object_get(e, "usage"))
            usage = (int)json_integer_value(json_object_get(json_object_get(e, "usage"),
                                                            "total_tokens"));
    }
    assert_true(chunks > 1); /* streamed in pieces, in order */
    assert_string_equal(text, want);
    assert_string_equal(finish, "stop");
    assert_true(usage > 0);
    /* the call shows in aos-api's stages: one more of each whole-call stage, a relay per
     * part at most, and the stages of one call add up to less than the client's wait */
    uint64_t waited = wall_us() - t0;
    json_t *s1 = ctl_json(stats_argv);
    static const char *const whole[] = {"stage_in", "stage_first", "stage_rest", "stage_out"};
    int64_t sum = 0;
    for (size_t k = 0; k < 4; k++) {
        char n[48], u[48];
        snprintf(n, sizeof n, "%s_n", whole[k]);
        snprintf(u, sizeof u, "%s_sum_us", whole[k]);
        assert_true(api_stat(s0, n) >= 0);
        assert_int_equal(api_stat(s1, n) - api_stat(s0, n), 1);
        sum += api_stat(s1, u) - api_stat(s0, u);
    }
    assert_true(sum > 0);
    assert_true(sum <= (int64_t)waited);
    int64_t relays = api_stat(s1, "stage_relay_n") - api_stat(s0, "stage_relay_n");
    assert_true(relays >= 1 && relays <= (int64_t)json_array_size(ev)); /* each took bytes */
    json_decref(s0);
    json_decref(s1);
    json_decref(ev);
    free(want);
    resp_free(&r);
}

static void chat_tool_round_trip(void **st)
{
    (void)st;
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":"
                        "{\"type\":\"string\"}}}}}]";
    char body[2048];
    snprintf(body, sizeof body,
             "{\"model\":\"tsim/t1\",%s,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"weather in Paris?\"}]}",
             tools);
    resp r;
    http("POST", "/v1/chat/completions", bearer(KEY_A2), body, -1, 0, &r);
    assert_int_equal(r.status, 200);
    json_t *o = body_json(&r);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    json_t *tc = json_array_get(json_object_get(json_object_get(ch, "message"), "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "id")), "call_w1");
    json_t *fn = json_object_get(tc, "function");
    assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_weather");
    json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(args, "city")), "Paris");
    json_decref(args);
    json_decref(o);
    resp_free(&r);
    /* the agent ran the tool itself; its result goes back with the conversation */
    snprintf(body, sizeof body,
             "{\"model\":\"tsim/t1\",%s,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"weather in Paris?\"},{\"role\":\"assistant\",\"content\":\"Let me look.\","
             "\"tool_calls\":[{\"id\":\"call_w1\",\"type\":\"function\",\"function\":{\"name\":"
             "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},{\"role\":"
             "\"tool\",\"tool_call_id\":\"call_w1\",\"content\":\"sunny, 21C\"}]}",
             tools);
    http("POST", "/v1/chat/completions", bearer(KEY_A2), body, -1, 0, &r);
    assert_int_equal(r.status, 200);
    o = body_json(&r);
    ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(ch, "message"), "content")),
        "It is sunny in Paris.");
    json_decref(o);
    resp_free(&r);
    /* the tool result the client sent back is in the audit log, marked untrusted */
    int found = 0;
    for (int tries = 0; tries < 50 && !found; tries++) {
        json_t *t = ctl_json((const char *const[]){"--json", "audit", "tail", "--agent", "a2",
                                                   "--limit", "100", NULL});
        size_t i;
        json_t *e;
        json_array_foreach(t, i, e) {
            const char *kind = json_string_value(json_object_get(e, "kind"));
            const char *b = json_string_value(json_object_get(e, "body"));
            if (kind && !strcmp(kind, "front.tool_results") && b &&
                strstr(b, "\"untrusted\":true") && strstr(b, "\"tool_call_id\":\"call_w1\""))
                found = 1;
        }
        json_decref(t);
        if (!found)
            usleep(100000);
    }
    assert_true(found);
}

static void embeddings(void **st)
{
    (void)st;
    resp r;
    http("POST", "/v1/embeddings", bearer(KEY_A1),
         "{\"model\":\"sim/sim-embed\",\"input\":[\"the cat sat\",\"a dog ran\"]}", -1, 0, &r);
    assert_int_equal(r.status, 200);
    json_t *o = body_json(&r);
    json_t *data = json_object_get(o, "data");
    assert_int_equal(json_array_size(data), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *d = json_array_get(data, i);
        assert_int_equal(json_integer_value(json_object_get(d, "index")), (json_int_t)i);
        json_t *v = json_object_get(d, "embedding");
        assert_true(json_array_size(v) >= 8);
        double norm = 0;
        size_t j;
        json_t *x;
        json_array_foreach(v, j, x) norm += json_number_value(x) * json_number_value(x);
        assert_true(norm > 0.01);
    }
    json_decref(o);
    resp_free(&r);
}

static void models(void **st)
{
    (void)st;
    const char *keys[] = {KEY_A1, KEY_A2}, *want[] = {"sim/sim-1", "tsim/t1"};
    for (int i = 0; i < 2; i++) {
        resp r;
        http("GET", "/v1/models", bearer(keys[i]), NULL, 0, 0, &r);
        assert_int_equal(r.status, 200);
        json_t *o = body_json(&r);
        assert_string_equal(json_string_value(json_object_get(o, "object")), "list");
        json_t *data = json_object_get(o, "data");
        assert_int_equal(json_array_size(data), 1); /* what this key's agent may use */
        assert_string_equal(json_string_value(json_object_get(json_array_get(data, 0), "id")),
                            want[i]);
        json_decref(o);
        resp_free(&r);
    }
    resp r;
    http("GET", "/v1/models", NULL, NULL, 0, 0, &r);
    expect_error(&r, 401, "code", "invalid_api_key");
    resp_free(&r);
}

/* ---- the official openai npm client ------------------------------------------------------- */

/* tools/openai-client.sh installs it into the build tree (npm-openai/); when npm cannot
 * reach its registry the case says so and skips: it never fakes the client. */
static void openai_npm_client(void **st)
{
    (void)st;
    const char *src = getenv("AOS_SOURCE_DIR");
    const char *bin = getenv("AOS_BIN_DIR");
    assert_non_null(src);
    assert_non_null(bin);
    char cmd[2048], out[8192] = "";
    snprintf(cmd, sizeof cmd, "'%s/tools/openai-client.sh' '%s/../npm-openai' 2>&1", src, bin);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st_ = pclose(p);
    int code = WIFEXITED(st_) ? WEXITSTATUS(st_) : -1;
    if (code == 77) {
        print_message("openai npm client: SKIPPED, npm cannot install it here: %s\n", out);
        skip();
    }
    if (code != 0)
        fail_msg("tools/openai-client.sh exit %d: %s", code, out);
    char pkg[1024];
    snprintf(pkg, sizeof pkg, "%s", out);
    pkg[strcspn(pkg, "\n")] = 0;
    snprintf(cmd, sizeof cmd,
             "node '%s/tests/integration/openai_client.js' '%s' 'http://127.0.0.1:%d/v1' "
             "'%s' '%s' 2>&1",
             src, pkg, PORT, KEY_A1, KEY_A2);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    st_ = pclose(p);
    if (!WIFEXITED(st_) || WEXITSTATUS(st_) != 0)
        fail_msg("the openai client against the front door: %s", out);
    print_message("openai npm client: %s", out);
    json_t *o = json_loads(out, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "tool")), "It is sunny in Paris.");
    assert_true(json_integer_value(json_object_get(o, "stream_chunks")) > 1);
    json_decref(o);
}

/* ---- /metrics: Prometheus text, checked by a small parser ------------------------------- */

static int metric_name_ok(const char *s, size_t n)
{
    if (!n || !(s[0] == '_' || s[0] == ':' || ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z')))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(s[i] == '_' || s[i] == ':' || ((s[i] | 32) >= 'a' && (s[i] | 32) <= 'z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* Parses the text exposition format line by line: # HELP / # TYPE, then samples
 * name{l="v",...} value, each family's TYPE before its samples. Returns the samples parsed;
 * fails the test on any malformed line. find (may be NULL): a sample's "name{labels}" text
 * whose value goes to *found. */
static int prom_parse(const char *text, const char *find, double *found)
{
    char typed[64][96];
    int ntyped = 0, samples = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            fail_msg("the last line has no newline");
        size_t n = (size_t)(nl - p);
        char line[1024];
        assert_true(n < sizeof line);
        memcpy(line, p, n);
        line[n] = 0;
        p = nl + 1;
        if (!n)
            continue;
        if (line[0] == '#') {
            char kw[8], name[96], type[32];
            if (sscanf(line, "# %7s %95s %31s", kw, name, type) < 2)
                fail_msg("bad comment line: %s", line);
            if (!strcmp(kw, "TYPE")) {
                assert_true(metric_name_ok(name, strlen(name)));
                if (strcmp(type, "counter") && strcmp(type, "gauge") &&
                    strcmp(type, "summary") && strcmp(type, "histogram") &&
                    strcmp(type, "untyped"))
                    fail_msg("bad type: %s", line);
                assert_true(ntyped < 64);
                snprintf(typed[ntyped++], sizeof typed[0], "%s", name);
            } else if (strcmp(kw, "HELP")) {
                fail_msg("bad comment keyword: %s", line);
            }
            continue;
        }
        size_t nm = strcspn(line, "{ ");
        if (!metric_name_ok(line, nm))
            fail_msg("bad metric name: %s", line);
        int known = 0;
        for (int i = 0; i < ntyped; i++)
            known |= strlen(typed[i]) == nm && !strncmp(typed[i], line, nm);
        if (!known)
            fail_msg("a sample before its TYPE: %s", line);
        const char *q = line + nm;
        if (*q == '{') { /* label="value" pairs, comma-separated */
            q++;
            while (*q != '}') {
                size_t ln = strcspn(q, "=");
                if (!metric_name_ok(q, ln) || q[ln] != '=' || q[ln + 1] != '"')
                    fail_msg("bad label: %s", line);
                q += ln + 2;
                while (*q && *q != '"')
                    q += *q == '\\' ? 2 : 1;
                if (*q != '"')
                    fail_msg("unterminated label value: %s", line);
                q++;
                if (*q == ',')
                    q++;
                else if (*q != '}')
                    fail_msg("bad label list: %s", line);
            }
            q++;
        }
        if (*q != ' ')
            fail_msg("no value: %s", line);
        char *end;
        double v = strtod(q + 1, &end);
        if (end == q + 1 || *end)
            fail_msg("bad value: %s", line);
        if (find && (size_t)(q - line) == strlen(find) && !strncmp(line, find, strlen(find)))
            *found = v;
        samples++;
    }
    return samples;
}

static void metrics(void **st)
{
    (void)st;
    resp r;
    http("GET", "/metrics", NULL, NULL, 0, 0, &r); /* loopback: no key */
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.hdrs, "text/plain"));
    double up = -1, tokens = -1, llm = -1;
    assert_true(prom_parse(r.body, "aos_child_up{child=\"api\",state=\"running\"}", &up) > 10);
    assert_true(up == 1);
    prom_parse(r.body, "aos_llm_tokens_total{agent=\"a1\"}", &tokens);
    assert_true(tokens > 0); /* a1's calls through the front door were booked to a1 */
    prom_parse(r.body, "aos_routed_requests_total{class=\"llm\"}", &llm);
    assert_true(llm > 0);
    assert_non_null(strstr(r.body, "aos_audit_lag_seconds "));
    assert_non_null(strstr(r.body, "aos_llm_queue_depth{provider="));
    resp_free(&r);
}

/* ---- Anthropic ---------------------------------------------------------------------------- */

static void messages_plain_and_stream(void **st)
{
    (void)st;
#define MSG_BODY(extra)                                                                     \
    "{\"model\":\"sim/sim-1\",\"max_tokens\":200,\"system\":\"be brief\",\"messages\":[{"        \
    "\"role\":\"user\",\"content\":\"hello anthropic\"}]" extra "}"
    char body[512];
    snprintf(body, sizeof body, "%s", MSG_BODY(""));
    resp r;
    http("POST", "/v1/messages", xkey(KEY_A1), body, -1, 0, &r);
    assert_int_equal(r.status, 200);
    json_t *o = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "message");
    assert_string_equal(json_string_value(json_object_get(o, "stop_reason")), "end_turn");
    json_t *c0 = json_array_get(json_object_get(o, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "type")), "text");
    char want[4096];
    snprintf(want, sizeof want, "%s", json_string_value(json_object_get(c0, "text")));
    assert_non_null(strstr(want, "hello anthropic"));
    assert_true(json_integer_value(json_object_get(json_object_get(o, "usage"),
                                                   "output_tokens")) > 0);
    json_decref(o);
    resp_free(&r);

    snprintf(body, sizeof body, "%s", MSG_BODY(",\"stream\":true"));
    http("POST", "/v1/messages", xkey(KEY_A1), body, -1, 0, &r);
    assert_int_equal(r.status, 200);
    int done;
    json_t *ev = sse_events(r.body, &done, 1);
    const char *order[] = {"message_start", "content_block_start", "content_block_delta",
                           "content_block_stop", "message_delta", "message_stop"};
    size_t k = 0, i;
    json_t *e;
    char text[4096] = "";
    json_array_foreach(ev, i, e) {
        const char *t = json_string_value(json_object_get(e, "type"));
        if (k < 6 && !strcmp(t, order[k]))
            k++;
        else if (k > 0 && !strcmp(t, order[k - 1]))
            ; /* more deltas */
        else
            fail_msg("event %s out of order (after %s)", t, k ? order[k - 1] : "start");
        if (!strcmp(t, "content_block_delta"))
            strncat(text,
                    json_string_value(json_object_get(json_object_get(e, "delta"), "text")),
                    sizeof text - strlen(text) - 1);
    }
    assert_int_equal(k, 6);
    assert_string_equal(text, want);
    json_decref(ev);
    resp_free(&r);
}

static void messages_tool_use(void **st)
{
    (void)st;
    const char *tools = "\"tools\":[{\"name\":\"get_weather\",\"description\":\"weather\","
                        "\"input_schema\":{\"type\":\"object\"}}]";
    char body[2048];
    snprintf(body, sizeof body,
             "{\"model\":\"tsim/t1\",\"max_tokens\":100,\"stream\":true,%s,\"messages\":"
             "[{\"role\":\"user\",\"content\":\"weather?\"}]}",
             tools);
    resp r;
    http("POST", "/v1/messages", xkey(KEY_A2), body, -1, 0, &r);
    assert_int_equal(r.status, 200);
    int done;
    json_t *ev = sse_events(r.body, &done, 1);
    size_t i;
    json_t *e;
    int saw_tool = 0;
    char args[512] = "";
    const char *stop = NULL;
    json_array_foreach(ev, i, e) {
        const char *t = json_string_value(json_object_get(e, "type"));
        json_t *cb = json_object_get(e, "content_block");
        if (!strcmp(t, "content_block_start") &&
            !strcmp(json_string_value(json_object_get(cb, "type")), "tool_use")) {
            assert_string_equal(json_string_value(json_object_get(cb, "name")), "get_weather");
            assert_string_equal(json_string_value(json_object_get(cb, "id")), "call_w1");
            saw_tool = 1;
        }
        json_t *d = json_object_get(e, "delta");
        if (!strcmp(t, "content_block_delta") &&
            !strcmp(json_string_value(json_object_get(d, "type")), "input_json_delta"))
            strncat(args, json_string_value(json_object_get(d, "partial_json")),
                    sizeof args - strlen(args) - 1);
        if (!strcmp(t, "message_delta"))
            stop = json_string_value(json_object_get(d, "stop_reason"));
    }
    assert_true(saw_tool);
    assert_string_equal(stop, "tool_use");
    json_t *a = json_loads(args, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(a, "city")), "Paris");
    json_decref(a);
    json_decref(ev);
    resp_free(&r);
    /* the tool_result back, plain this time */
    snprintf(body, sizeof body,
             "{\"model\":\"tsim/t1\",\"max_tokens\":100,%s,\"messages\":["
             "{\"role\":\"user\",\"content\":\"weather?\"},"
             "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Let me look.\"},"
             "{\"type\":\"tool_use\",\"id\":\"call_w1\",\"name\":\"get_weather\",\"input\":"
             "{\"city\":\"Paris\"}}]},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":"
             "\"call_w1\",\"content\":\"sunny, 21C\"}]}]}",
             tools);
    http("POST", "/v1/messages", xkey(KEY_A2), body, -1, 0, &r);
    assert_int_equal(r.status, 200);
    json_t *o = body_json(&r);
    json_t *c0 = json_array_get(json_object_get(o, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "text")), "It is sunny in Paris.");
    json_decref(o);
    resp_free(&r);
}

/* ---- keys and refusals --------------------------------------------------------------------- */

/* The audit log has a refused llm.chat of agent with status name want. */
static int audit_has(const char *agent, const char *want)
{
    for (int tries = 0; tries < 50; tries++) {
        json_t *o = ctl_json((const char *const[]){"--json", "audit", "tail", "--agent", agent,
                                                   "--limit", "200", NULL});
        json_t *recs = o; /* one array of records, oldest first */
        size_t i;
        json_t *e;
        int found = 0;
        json_array_foreach(recs, i, e) {
            const char *m = json_string_value(json_object_get(e, "method"));
            const char *s = json_string_value(json_object_get(e, "status_name"));
            if (m && s && !strcmp(m, "llm.chat") && !strcmp(s, want))
                found = 1;
        }
        json_decref(o);
        if (found)
            return 1;
        usleep(100000);
    }
    return 0;
}

static void auth_refusals(void **st)
{
    (void)st;
    resp r;
    http("POST", "/v1/chat/completions", NULL, CHAT("sim/sim-1", "x"), -1, 0, &r);
    expect_error(&r, 401, "code", "invalid_api_key");
    resp_free(&r);
    http("POST", "/v1/messages", NULL,
         "{\"model\":\"sim/sim-1\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         -1, 0, &r);
    expect_error(&r, 401, "type", "authentication_error");
    resp_free(&r);
    http("POST", "/v1/chat/completions", bearer("aos-not-a-key-of-anyone"),
         CHAT("sim/sim-1", "x"), -1, 0, &r);
    expect_error(&r, 401, "code", "invalid_api_key");
    resp_free(&r);
    assert_true(audit_has("aos:api", "UNAUTHENTICATED"));
    /* a revoked key: its next call is refused, the agent's other keys still work */
    char k2[128], id[32];
    new_key("a1", k2, sizeof k2, id, sizeof id);
    free(plain_text(k2, CHAT("sim/sim-1", "before revoke")));
    json_t *o = ctl_json((const char *const[]){"--json", "agent", "key", "revoke", "a1", "--id",
                                               id, NULL});
    assert_int_equal(json_integer_value(json_object_get(o, "revoked")), 1);
    json_decref(o);
    http("POST", "/v1/chat/completions", bearer(k2), CHAT("sim/sim-1", "x"), -1, 0, &r);
    expect_error(&r, 401, "code", "invalid_api_key");
    assert_non_null(strstr(r.body, "revoked"));
    resp_free(&r);
    free(plain_text(KEY_A1, CHAT("sim/sim-1", "still mine")));
    assert_true(audit_has("a1", "UNAUTHENTICATED"));
    /* another agent's model: the manifest decides */
    http("POST", "/v1/chat/completions", bearer(KEY_A1), CHAT("tsim/t1", "x"), -1, 0, &r);
    expect_error(&r, 403, "type", "permission_error");
    resp_free(&r);
    http("POST", "/v1/messages", xkey(KEY_A1),
         "{\"model\":\"tsim/t1\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         -1, 0, &r);
    expect_error(&r, 403, "type", "permission_error");
    resp_free(&r);
    assert_true(audit_has("a1", "REFUSED"));
    /* a budget used up: the scheduler's refusal is 429 insufficient_quota */
    long last = 0;
    for (int i = 0; i < 5 && last != 429; i++) {
        http("POST", "/v1/chat/completions", bearer(KEY_POOR),
             CHAT("sim/sim-1", "spend my tokens please"), -1, 0, &r);
        last = r.status;
        if (last == 429)
            expect_error(&r, 429, "code", "insufficient_quota");
        else
            assert_int_equal(last, 200);
        resp_free(&r);
    }
    assert_int_equal(last, 429);
    http("POST", "/v1/messages", xkey(KEY_POOR),
         "{\"model\":\"sim/sim-1\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         -1, 0, &r);
    expect_error(&r, 429, "type", "rate_limit_error");
    resp_free(&r);
    assert_true(audit_has("poor", "REFUSED")); /* the scheduler's word; 429 is the client's */
}

/* ---- hostile HTTP --------------------------------------------------------------------------- */

static void still_serves(void)
{
    free(plain_text(KEY_A1, CHAT("sim/sim-1", "still serving")));
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)PORT)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* What the server sends on fd until it closes or ms pass; returns the bytes read, -1 if the
 * connection is still open at the end. */
static ssize_t drain(int fd, char *buf, size_t cap, int ms)
{
    size_t n = 0;
    uint64_t end = aos_mono_ms() + (uint64_t)ms;
    for (;;) {
        int left = (int)(end - aos_mono_ms());
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            return -1;
        ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k <= 0) {
            buf[n] = 0;
            return (ssize_t)n;
        }
        n += (size_t)k;
        if (n >= cap - 1) {
            buf[n] = 0;
            return (ssize_t)n;
        }
    }
}

static void hostile_http(void **st)
{
    (void)st;
    resp r;
    /* invalid JSON and invalid UTF-8: 400 in each API's shape */
    http("POST", "/v1/chat/completions", bearer(KEY_A1), "{\"model\":", -1, 0, &r);
    expect_error(&r, 400, "type", "invalid_request_error");
    resp_free(&r);
    http("POST", "/v1/chat/completions", bearer(KEY_A1),
         "{\"model\":\"sim/sim-1\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}",
         -1, 0, &r);
    expect_error(&r, 400, "type", "invalid_request_error");
    resp_free(&r);
    http("POST", "/v1/messages", xkey(KEY_A1), "[1,2]", -1, 0, &r);
    expect_error(&r, 400, "type", "invalid_request_error");
    resp_free(&r);
    /* a body past the cap (1 MiB here), announced and chunked */
    size_t big = (2u << 20);
    char *b = malloc(big + 1);
    memset(b, 'a', big);
    b[big] = 0;
    http("POST", "/v1/chat/completions", bearer(KEY_A1), b, (long)big, 0, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    http("POST", "/v1/chat/completions", bearer(KEY_A1), b, (long)big, 1, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    /* a terabyte announced: answered at once, never read */
    {
        int fd = tcp_connect();
        const char *rq = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: 1099511627776\r\n\r\n";
        assert_true(send(fd, rq, strlen(rq), MSG_NOSIGNAL) > 0);
        char buf[4096];
        assert_true(drain(fd, buf, sizeof buf, 5000) > 0);
        assert_non_null(strstr(buf, "HTTP/1.1 413 "));
        close(fd);
    }
    /* a header past the cap: refused (431) or cut */
    char *hdr = malloc(64 * 1024 + 32);
    snprintf(hdr, 32, "X-Big: ");
    memset(hdr + 7, 'h', 64 * 1024);
    hdr[7 + 64 * 1024] = 0;
    const char *hs[] = {hdr, NULL};
    http("POST", "/v1/chat/completions", hs, CHAT("sim/sim-1", "x"), -1, 0, &r);
    assert_int_equal(r.status, 431); /* libmicrohttpd's own answer past its header pool */
    resp_free(&r);
    free(hdr);
    free(b);
    still_serves();
    /* chunked encoding abuse: a chunk size that is no number, then one past 2^64 */
    const char *bad_chunks[] = {
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "zz\r\nhello\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad_chunks / sizeof bad_chunks[0]; i++) {
        int fd = tcp_connect();
        assert_true(send(fd, bad_chunks[i], strlen(bad_chunks[i]), MSG_NOSIGNAL) > 0);
        char buf[4096];
        ssize_t n = drain(fd, buf, sizeof buf, 5000);
        /* answered with an error status (never a 200), or just closed; never left hanging */
        assert_true(n >= 0);
        assert_null(strstr(buf, " 200 "));
        if (i == 0) /* no chunk size: a bad request */
            assert_non_null(strstr(buf, "HTTP/1.1 400 "));
        if (i == 1) /* a chunk of 2^80 bytes: past the body cap */
            assert_non_null(strstr(buf, "HTTP/1.1 413 "));
        close(fd);
    }
    still_serves();
    /* slow loris: half a request line, then silence; closed by the idle timeout */
    int fd = tcp_connect();
    assert_true(send(fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", 46,
                     MSG_NOSIGNAL) > 0);
    uint64_t t0 = aos_mono_ms();
    char buf[512];
    assert_true(drain(fd, buf, sizeof buf, (IDLE_S + 5) * 1000) >= 0);
    uint64_t held = aos_mono_ms() - t0;
    print_message("slow loris: connection closed after %llu ms (idle_timeout_s %d)\n",
                  (unsigned long long)held, IDLE_S);
    assert_true(held <= (uint64_t)(IDLE_S + 3) * 1000);
    close(fd);
    still_serves();
}

/* A streaming client that goes away mid-answer: aos-api cancels the call, aosd stops
 * aos-llm, and the syscall's record says CANCELLED (no more tokens paid for). */
static void client_gone_cancels(void **st)
{
    (void)st;
    char rq[1024];
    const char *body = "{\"model\":\"slow/s1\",\"stream\":true,\"messages\":[{\"role\":"
                       "\"user\",\"content\":\"tell me a long story about the sea\"}]}";
    int n = snprintf(rq, sizeof rq,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     "%s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     KEY_SLOW, strlen(body), body);
    int fd = tcp_connect();
    assert_true(send(fd, rq, (size_t)n, MSG_NOSIGNAL) == n);
    char buf[4096];
    size_t got = 0;
    uint64_t end = aos_mono_ms() + 10000;
    while (!memmem(buf, got, "data: ", 6) && aos_mono_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 500) <= 0)
            continue;
        ssize_t k = recv(fd, buf + got, sizeof buf - got, 0);
        assert_true(k > 0);
        got += (size_t)k;
    }
    assert_non_null(memmem(buf, got, " 200 ", 5));
    close(fd); /* gone after the first event, some 4 s before the answer's end */
    assert_true(audit_has("a3", "CANCELLED"));
    still_serves();
}

static void connection_cap(void **st)
{
    (void)st;
    /* the cap's worth of idle connections (accepted, counted, nothing sent) */
    int fds[CAP_CONNS];
    for (int i = 0; i < CAP_CONNS; i++)
        fds[i] = tcp_connect();
    usleep(200000);
    resp r;
    http("POST", "/v1/chat/completions", bearer(KEY_A1), CHAT("sim/sim-1", "x"), -1, 0, &r);
    expect_error(&r, 503, "type", "server_error");
    assert_non_null(strcasestr(r.hdrs, "Retry-After:"));
    resp_free(&r);
    for (int i = 0; i < CAP_CONNS; i++)
        close(fds[i]);
    usleep(300000);
    still_serves();
    /* a flood of 10,000 connections: refused or bounded, never a crash */
    pid_t before = h_child(H, "api", NULL);
    int opened = 0, refused = 0;
    for (int round = 0; round < 10; round++) {
        int fl[1000];
        int n = 0;
        for (int i = 0; i < 1000; i++) {
            int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (f < 0)
                break;
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)PORT)};
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            int rc = connect(f, (struct sockaddr *)&sa, sizeof sa);
            if (rc == 0 || errno == EINPROGRESS)
                opened++;
            else
                refused++;
            fl[n++] = f;
        }
        for (int i = 0; i < n; i++) /* a request line on each that connected */
            (void)send(fl[i], "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 37, MSG_NOSIGNAL);
        usleep(50000);
        for (int i = 0; i < n; i++)
            close(fl[i]);
    }
    print_message("flood: %d connections opened, %d refused at connect\n", opened, refused);
    usleep(IDLE_S * 1000000 + 500000); /* the idle ones time out */
    still_serves();
    assert_int_equal(h_child(H, "api", NULL), before);
}

static void kill9_serves_again(void **st)
{
    (void)st;
    pid_t old = h_child(H, "api", NULL);
    assert_true(old > 0);
    assert_int_equal(kill(old, SIGKILL), 0);
    pid_t now = h_wait_running(H, "api", old, 30000);
    assert_true(now > 0 && now != old);
    assert_int_equal(read_port(), PORT); /* the same port again: clients keep their URL */
    still_serves();
}

/* GET url over HTTPS trusting only the test certificate, with an optional bearer token:
 * the status (0: no HTTP answer). */
static long https_get(const char *url, const char *token, resp *r)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    assert_non_null(c);
    struct curl_slist *hl = NULL;
    char h[256];
    if (token) {
        snprintf(h, sizeof h, "Authorization: Bearer %s", token);
        hl = curl_slist_append(hl, h);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_CAINFO, AOS_TLS_DATA "/cert.pem");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    r->cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return r->status;
}

/* api.tls_cert/tls_key: the front door serves HTTPS only (a plain request gets no answer),
 * inside aos-api's sandbox; api.metrics_token_env: /metrics wants the token; the private
 * key is in no log. A second aosd on its own data dir. */
static void tls_and_the_scrape_token(void **st)
{
    (void)st;
    char dir[64], path[128], why[1024];
    snprintf(dir, sizeof dir, "/tmp/it-apitls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("api:\n  port: 0\n  listen: 127.0.0.1\n"
          "  tls_cert: " AOS_TLS_DATA "/cert.pem\n"
          "  tls_key: " AOS_TLS_DATA "/key.pem\n"
          "  metrics_token_env: AOS_TEST_SCRAPE_TOKEN\n", f);
    fclose(f);
    setenv("AOS_TEST_SCRAPE_TOKEN", "scrape-0f3c9e1d", 1);
    h_aosd *t = h_start_on(dir, NULL, 120000, why, sizeof why);
    unsetenv("AOS_TEST_SCRAPE_TOKEN");
    if (!t)
        fail_msg("aosd on %s: %s", dir, why);
    snprintf(path, sizeof path, "%s/api/port", dir);
    int port = 0;
    for (int i = 0; i < 200 && port <= 0; i++) {
        FILE *pf = fopen(path, "r");
        if (pf) {
            if (fscanf(pf, "%d", &port) != 1)
                port = 0;
            fclose(pf);
        }
        if (port <= 0)
            usleep(50000);
    }
    assert_true(port > 0);
    char url[128];
    resp r;
    snprintf(url, sizeof url, "https://127.0.0.1:%d/metrics", port);
    assert_int_equal(https_get(url, "scrape-0f3c9e1d", &r), 200);
    assert_non_null(r.body);
    assert_non_null(strstr(r.body, "aos_child_up"));
    resp_free(&r);
    assert_int_equal(https_get(url, NULL, &r), 401);
    resp_free(&r);
    assert_int_equal(https_get(url, "a-wrong-token", &r), 401);
    resp_free(&r);
    /* a key's call over TLS is refused for the key, not for the transport */
    snprintf(url, sizeof url, "https://127.0.0.1:%d/v1/models", port);
    assert_int_equal(https_get(url, "sk-nope", &r), 401);
    resp_free(&r);
    /* plain HTTP on the TLS port: no HTTP answer at all */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    memset(&r, 0, sizeof r);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(c);
    assert_int_equal(r.status, 0);
    resp_free(&r);
    /* neither the key nor the token is in aosd's log */
    char *key = NULL, *log = NULL;
    FILE *kf = fopen(AOS_TLS_DATA "/key.pem", "r");
    assert_non_null(kf);
    key = calloc(1, 4096);
    assert_true(fread(key, 1, 4095, kf) > 64);
    fclose(kf);
    char *body = strstr(key, "-----\n");
    assert_non_null(body);
    body[6 + 40] = 0; /* the first 40 characters of the key's base64 */
    FILE *lf = fopen(h_log_path(t), "r");
    if (lf) {
        log = calloc(1, 1 << 22);
        size_t got = fread(log, 1, (1 << 22) - 1, lf);
        log[got] = 0;
        fclose(lf);
        assert_null(strstr(log, body + 6));
        assert_null(strstr(log, "scrape-0f3c9e1d"));
        free(log);
    }
    free(key);
    h_stop(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_plain),
        cmocka_unit_test(chat_stream),
        cmocka_unit_test(chat_tool_round_trip),
        cmocka_unit_test(embeddings),
        cmocka_unit_test(models),
        cmocka_unit_test(openai_npm_client),
        cmocka_unit_test(messages_plain_and_stream),
        cmocka_unit_test(messages_tool_use),
        cmocka_unit_test(auth_refusals),
        cmocka_unit_test(metrics),
        cmocka_unit_test(hostile_http),
        cmocka_unit_test(client_gone_cancels),
        cmocka_unit_test(connection_cap),
        cmocka_unit_test(kill9_serves_again),
        cmocka_unit_test(tls_and_the_scrape_token),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
