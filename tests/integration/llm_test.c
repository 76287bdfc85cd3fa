/* aos-llm end to end: llm.chat through a real aosd against the local test endpoint in both
 * wire formats (and the sim's script mode), asserting content, usage, retries and errors. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "harness.h"
#include "llm.pb-c.h"

/* Distinctive, so a leak into a log or a message is found by a plain search. */
#define KEY "sk-test-SECRET-4f1c9e27b0d34a58-do-not-log"
#define TEXT_CAP (1u << 20)
#define CALLS_MAX 16
#define KILL_THREADS 50

static h_aosd *H;
static char URL[AOS_PATH_MAX + 16];
static char EP_DIR[64], DATA_DIR[64], EP_LOG[128];
static pid_t EP_PID;
static int EP_STDIN = -1;     /* the endpoint exits when this pipe closes */
static int EP_PORT, DEAD_PORT;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- what one llm.chat brought back ---------------------------------------------------- */

typedef struct {
    char id[128], name[128];
    char *args;
    size_t args_len;
} call_acc;

typedef struct {
    uint8_t rid[AOS_ID_LEN];
    char rid_hex[2 * AOS_ID_LEN + 1];
    aos_err rc;
    char error[AOS_ERRMSG_MAX + 1];
    uint64_t retry_after_ms;
    uint64_t elapsed_ms;
    uint32_t parts;
    int bad_parts;               /* a part that is not a ChatDelta */
    char *text;                  /* the text of the parts, assembled (NUL-terminated) */
    size_t text_len;
    call_acc calls[CALLS_MAX];   /* tool-call deltas, assembled by index */
    unsigned ncalls;
    Aos__Llm__ChatReply *reply;  /* the final reply when rc is OK */
} chat_res;

static void res_clear(chat_res *r)
{
    free(r->text);
    for (unsigned i = 0; i < CALLS_MAX; i++)
        free(r->calls[i].args);
    if (r->reply)
        aos__llm__chat_reply__free_unpacked(r->reply, NULL);
    memset(r, 0, sizeof *r);
}

static void append(char **buf, size_t *len, const uint8_t *p, size_t n)
{
    if (*len + n + 1 > TEXT_CAP)
        return;
    char *b = realloc(*buf, *len + n + 1);
    if (!b)
        return;
    if (n)
        memcpy(b + *len, p, n);
    *len += n;
    b[*len] = 0;
    *buf = b;
}

static void copy_field(char *dst, size_t cap, ProtobufCBinaryData b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n)
        memcpy(dst, b.data, n);
    dst[n] = 0;
}

static int on_part(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    (void)seq;
    chat_res *r = arg;
    Aos__Llm__ChatDelta *d = aos__llm__chat_delta__unpack(NULL, len, data);
    if (!d) {
        r->bad_parts++;
        return 0;
    }
    append(&r->text, &r->text_len, d->text.data, d->text.len);
    for (size_t i = 0; i < d->n_tool_calls; i++) {
        const Aos__Llm__ToolCallDelta *t = d->tool_calls[i];
        if (t->index >= CALLS_MAX) {
            r->bad_parts++;
            continue;
        }
        call_acc *c = &r->calls[t->index];
        if (t->id.len)
            copy_field(c->id, sizeof c->id, t->id);
        if (t->name.len)
            copy_field(c->name, sizeof c->name, t->name);
        append(&c->args, &c->args_len, t->arguments.data, t->arguments.len);
        if (t->index + 1 > r->ncalls)
            r->ncalls = t->index + 1;
    }
    aos__llm__chat_delta__free_unpacked(d, NULL);
    return 0;
}

/* ---- building requests: every message is held unpacked (one owner, one free) ---------- */

typedef struct {
    Aos__Llm__Message *m[64];
    size_t n;
} conv;

static Aos__Llm__Message *dup_msg(const Aos__Llm__Message *m)
{
    size_t n = aos__llm__message__get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    aos__llm__message__pack(m, b);
    Aos__Llm__Message *c = aos__llm__message__unpack(NULL, n, b);
    free(b);
    assert_non_null(c);
    return c;
}

static void conv_add(conv *c, Aos__Llm__Role role, const char *text, const char *tool_call_id)
{
    assert_true(c->n < sizeof c->m / sizeof c->m[0]);
    Aos__Llm__Message m = AOS__LLM__MESSAGE__INIT;
    Aos__Llm__ContentPart p = AOS__LLM__CONTENT_PART__INIT, *pp = &p;
    m.role = role;
    p.kind = AOS__LLM__PART_KIND__TEXT;
    p.text = (ProtobufCBinaryData){strlen(text), (uint8_t *)text};
    m.content = &pp;
    m.n_content = 1;
    if (tool_call_id)
        m.tool_call_id = (ProtobufCBinaryData){strlen(tool_call_id), (uint8_t *)tool_call_id};
    c->m[c->n++] = dup_msg(&m);
}

static void conv_add_msg(conv *c, const Aos__Llm__Message *m)
{
    assert_true(c->n < sizeof c->m / sizeof c->m[0]);
    c->m[c->n++] = dup_msg(m);
}

static void conv_free(conv *c)
{
    for (size_t i = 0; i < c->n; i++)
        aos__llm__message__free_unpacked(c->m[i], NULL);
    c->n = 0;
}

static ProtobufCBinaryData bs(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* One llm.chat of the conversation on connection cn (NULL: the harness's) with the caller's
 * request id when rid is not NULL. Every error message is checked for the API key here. */
static void chat_conv(aos_conn *cn, const char *model, conv *cv, uint32_t timeout_ms,
                      const uint8_t *rid, chat_res *r)
{
    memset(r, 0, sizeof *r);
    if (rid)
        memcpy(r->rid, rid, AOS_ID_LEN);
    else
        aos_id_random(r->rid);
    aos_hex(r->rid, AOS_ID_LEN, r->rid_hex);
    static const char *const names[] = {"tool_0", "tool_1", "tool_2", "tool_3", "search",
                                        "fetch", "calc", "done"};
    Aos__Llm__Tool tools[8], *tp[8];
    for (int i = 0; i < 8; i++) {
        aos__llm__tool__init(&tools[i]);
        tools[i].name = bs(names[i]);
        tools[i].description = bs("a tool of the test");
        tools[i].input_schema = bs("{\"type\":\"object\"}");
        tp[i] = &tools[i];
    }
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = bs(model);
    q.messages = cv->m;
    q.n_messages = cv->n;
    q.tools = tp;
    q.n_tools = 8;
    size_t len = aos__llm__chat_request__get_packed_size(&q);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    aos__llm__chat_request__pack(&q, buf);
    aos_call_opts o = {.request_id = r->rid, .timeout_ms = timeout_ms};
    aos_reply rep;
    uint64_t t0 = aos_mono_ms();
    r->rc = aos_call_stream(cn ? cn : h_conn(H), &o, "llm.chat", buf, len, on_part, r, &rep);
    r->elapsed_ms = aos_mono_ms() - t0;
    free(buf);
    snprintf(r->error, sizeof r->error, "%s", rep.error);
    r->retry_after_ms = rep.retry_after_ms;
    r->parts = rep.parts;
    if (r->rc == AOS_OK) {
        r->reply = aos__llm__chat_reply__unpack(NULL, rep.payload_len, rep.payload);
        if (!r->reply)
            r->bad_parts++;
    }
    aos_reply_clear(&rep);
    if (!r->text)
        append(&r->text, &r->text_len, (const uint8_t *)"", 0);
    if (strstr(r->error, KEY))
        fail_msg("llm.chat's error message holds the API key: %s", r->error);
}

/* One user message holding text (a directive) to model. */
static void chat1(const char *model, const char *text, uint32_t timeout_ms, const uint8_t *rid,
                  chat_res *r)
{
    conv c = {0};
    conv_add(&c, AOS__LLM__ROLE__SYSTEM, "You are a test.", NULL);
    conv_add(&c, AOS__LLM__ROLE__USER, text, NULL);
    chat_conv(NULL, model, &c, timeout_ms, rid, r);
    conv_free(&c);
}

static int bin_eq(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0);
}

static void reply_text(const Aos__Llm__ChatReply *r, char *out, size_t cap)
{
    out[0] = 0;
    size_t used = 0;
    for (size_t i = 0; r->message && i < r->message->n_content; i++) {
        const ProtobufCBinaryData *t = &r->message->content[i]->text;
        size_t n = t->len < cap - 1 - used ? t->len : cap - 1 - used;
        memcpy(out + used, t->data, n);
        used += n;
    }
    out[used] = 0;
}

#define EXPECT_OK(r)                                                                      \
    do {                                                                                  \
        if ((r)->rc != AOS_OK || !(r)->reply || (r)->bad_parts) {                         \
            h_dump_log(H);                                                                \
            fail_msg("llm.chat: %s: %s (bad parts %d)", aos_err_name((r)->rc), (r)->error, \
                     (r)->bad_parts);                                                     \
        }                                                                                 \
    } while (0)

/* ---- the endpoint's log ------------------------------------------------------------------ */

/* The chat requests the endpoint logged for request id hex (all of them when NULL), in
 * order. Caller owns the array (json_decref). */
static json_t *ep_requests(const char *hex)
{
    json_t *out = json_array();
    FILE *f = fopen(EP_LOG, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j)
            continue;
        const char *id = json_string_value(json_object_get(j, "request_id"));
        const char *path = json_string_value(json_object_get(j, "path"));
        int chat = path && (!strcmp(path, "/v1/chat/completions") ||
                            !strcmp(path, "/v1/messages"));
        if (chat && (!hex || (id && !strcmp(id, hex))))
            json_array_append_new(out, j);
        else
            json_decref(j);
    }
    free(line);
    fclose(f);
    return out;
}

static uint64_t jnum(json_t *o, const char *k)
{
    return (uint64_t)json_integer_value(json_object_get(o, k));
}

/* The endpoint answered request r once, with the key, and the reply's usage is its own
 * (OpenAI has no word for cache writes). */
static void expect_usage_of_endpoint(const chat_res *r, int openai)
{
    json_t *reqs = ep_requests(r->rid_hex);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *q = json_array_get(reqs, 0);
    assert_true(json_is_true(json_object_get(q, "key_ok")));
    json_t *u = json_object_get(q, "usage");
    assert_non_null(r->reply->usage);
    assert_int_equal(r->reply->usage->input_tokens, jnum(u, "input_tokens"));
    assert_int_equal(r->reply->usage->output_tokens, jnum(u, "output_tokens"));
    assert_int_equal(r->reply->usage->cache_read_tokens, jnum(u, "cache_read_tokens"));
    assert_int_equal(r->reply->usage->cache_write_tokens,
                     openai ? 0 : jnum(u, "cache_write_tokens"));
    assert_true(r->reply->usage->input_tokens > 0);
    /* the prices of aos.yaml: 1, 2, 0.5 and 4 USD per million tokens */
    const Aos__Llm__Usage *x = r->reply->usage;
    uint64_t cost = x->input_tokens + 2 * x->output_tokens + x->cache_read_tokens / 2 +
                    4 * x->cache_write_tokens;
    assert_int_equal(r->reply->cost_micro_usd, cost);
    json_decref(reqs);
}

/* ---- the group: one endpoint, one aosd ------------------------------------------------------ */

static void start_endpoint(void)
{
    snprintf(EP_DIR, sizeof EP_DIR, "/tmp/it-llm-ep-XXXXXX");
    assert_non_null(mkdtemp(EP_DIR));
    snprintf(EP_LOG, sizeof EP_LOG, "%s/requests.jsonl", EP_DIR);
    int out[2], in[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    const char *exe = h_bin("aos-test-llm-endpoint");
    char path[4096];
    snprintf(path, sizeof path, "%s", exe);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
            _exit(127);
        execl(path, path, "--port", "0", "--log", EP_LOG, "--expect-key", KEY, "--stdin-eof",
              "--max-s", "3600", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(in[0]);
    EP_PID = pid;
    EP_STDIN = in[1];
    char line[64] = "";
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t r = read(out[0], line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    close(out[0]);
    if (sscanf(line, "port %d", &EP_PORT) != 1)
        fail_msg("the endpoint said \"%s\", not \"port N\"", line);
}

/* A port nobody listens on: bound and released (nothing else here takes ports at random). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* Five scripted turns: text and tool calls (two in parallel in turn 2), expects that see
 * the tool results come back. */
static const char SCRIPT[] =
    "turns:\n"
    "  - text: \"Let me look that up.\"\n"
    "    tool_calls:\n"
    "      - {id: call_s1, name: search, arguments: {q: weather}}\n"
    "  - text: \"Two lookups at once.\"\n"
    "    expect: \"result-1\"\n"
    "    tool_calls:\n"
    "      - {id: call_s2a, name: search, arguments: {q: paris}}\n"
    "      - {id: call_s2b, name: fetch, arguments: {url: \"http://x.test/y\", n: 3}}\n"
    "  - text: \"Checking the sum.\"\n"
    "    expect: \"result-2\"\n"
    "    tool_calls:\n"
    "      - {id: call_s3, name: calc, arguments: {expr: \"2+2\", exact: true}}\n"
    "  - tool_calls:\n"
    "      - {id: call_s4, name: done, arguments: {}}\n"
    "  - text: \"All done: it is sunny in Paris.\"\n"
    "    expect: \"result-4\"\n";

static int setup(void **st)
{
    (void)st;
    start_endpoint();
    DEAD_PORT = free_port();
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-llm-d-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char path[256], yaml[4096];
    snprintf(path, sizeof path, "%s/script.yaml", EP_DIR);
    write_file(path, SCRIPT);
    snprintf(yaml, sizeof yaml,
             "restart_intensity: 100/60\n"
             "llm:\n"
             "  default_model: oa/m1\n"
             "  providers:\n"
             "    - name: oa\n"
             "      kind: openai\n"
             "      base_url: http://127.0.0.1:%d/v1\n"
             "      api_key_env: AOS_TEST_OA_KEY\n"
             "      max_retries: 2\n"
             "      models:\n"
             "        - {name: m1, price: {input: 1, output: 2, cache_read: 0.5, "
             "cache_write: 4}}\n"
             "        - {name: mk, price: {input: 1, output: 2}}\n"
             "        - {name: e1, embedding: true, price: {input: 1}}\n"
             "    - name: an\n"
             "      kind: anthropic\n"
             "      base_url: http://127.0.0.1:%d\n"
             "      api_key_env: AOS_TEST_AN_KEY\n"
             "      max_retries: 2\n"
             "      models:\n"
             "        - {name: a1, price: {input: 1, output: 2, cache_read: 0.5, "
             "cache_write: 4}}\n"
             "        - {name: ak, price: {input: 1, output: 2}}\n"
             "    - name: dead\n"
             "      kind: openai\n"
             "      base_url: http://127.0.0.1:%d/v1\n"
             "      max_retries: 2\n"
             "      models: [{name: d1}]\n"
             "    - name: sim\n"
             "      kind: sim\n"
             "      sim: {script: %s, synonyms: [\"car automobile vehicle\"]}\n"
             "      models: [{name: sim-1}, {name: sim-embed, embedding: true}]\n",
             EP_PORT, EP_PORT, DEAD_PORT, path);
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    write_file(path, yaml);
    setenv("AOS_TEST_OA_KEY", KEY, 1);
    setenv("AOS_TEST_AN_KEY", KEY, 1);
    /* Under ASan a freed block stays in the quarantine (256 MiB by default): aos-llm's RSS
     * would count a refused body long after it was dropped. */
    static char asan[512];
    const char *cur = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%squarantine_size_mb=8", cur ? cur : "",
             cur && *cur ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    char why[1024];
    H = h_start_on(DATA_DIR, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd on %s: %s", DATA_DIR, why);
    aos_control_url(DATA_DIR, URL, sizeof URL);
    return 0;
}

static int rm_tree(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
    return system(cmd);
}

static int teardown(void **st)
{
    (void)st;
    if (H && getenv("AOS_TEST_KEEP")) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "cp -- '%s' '%s/aosd.log'", h_log_path(H), EP_DIR);
        if (system(cmd) != 0)
            fprintf(stderr, "could not keep aosd.log\n");
    }
    if (H)
        h_stop(H);
    H = NULL;
    if (EP_STDIN >= 0)
        close(EP_STDIN);
    if (EP_PID > 0) {
        kill(EP_PID, SIGTERM);
        waitpid(EP_PID, NULL, 0);
    }
    if (getenv("AOS_TEST_KEEP"))
        fprintf(stderr, "kept %s\n", EP_DIR);
    else
        rm_tree(EP_DIR);
    return 0;
}

/* ---- the cases ---------------------------------------------------------------------------- */

static const char *const MODELS[2] = {"oa/m1", "an/a1"};

static void plain_reply_equals_what_the_endpoint_sent(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "say it [[text=word chunks=7 gap_ms=5]]", 20000, NULL, &r);
        EXPECT_OK(&r);
        char text[4096];
        reply_text(r.reply, text, sizeof text);
        assert_string_equal(r.text, "word word word word word word word");
        assert_string_equal(text, r.text);
        assert_true(r.parts >= 1);
        assert_true(bin_eq(r.reply->provider, k ? "an" : "oa"));
        assert_true(bin_eq(r.reply->model, k ? "a1" : "m1"));
        assert_int_equal(r.reply->stop_reason, AOS__LLM__STOP_REASON__END_TURN);
        assert_int_equal(r.reply->attempts, 1);
        assert_false(r.reply->resent);
        assert_int_equal(r.reply->message->role, AOS__LLM__ROLE__ASSISTANT);
        assert_int_equal(r.reply->message->n_tool_calls, 0);
        expect_usage_of_endpoint(&r, k == 0);
        res_clear(&r);

        /* no directive: the endpoint echoes, one delta per word, every byte kept */
        chat1(MODELS[k], "hello  there, world", 20000, NULL, &r);
        EXPECT_OK(&r);
        reply_text(r.reply, text, sizeof text);
        assert_string_equal(r.text, "echo: hello  there, world");
        assert_string_equal(text, r.text);
        expect_usage_of_endpoint(&r, k == 0);
        res_clear(&r);
    }
}

/* The tool calls the endpoint makes for tools=n: tool_k with {"i":k,"s":"tool_k"}; the
 * parts assembled and the final reply both say so. */
static void expect_calls(const chat_res *r, int anthropic, unsigned n)
{
    assert_int_equal(r->reply->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
    assert_int_equal(r->reply->message->n_tool_calls, n);
    assert_int_equal(r->ncalls, n);
    for (unsigned k = 0; k < n; k++) {
        char want[64], name[16], idsuf[16];
        snprintf(name, sizeof name, "tool_%u", k);
        snprintf(want, sizeof want, "{\"i\":%u,\"s\":\"tool_%u\"}", k, k);
        snprintf(idsuf, sizeof idsuf, "_%u", k);
        const call_acc *c = &r->calls[k];
        const Aos__Llm__ToolCall *t = r->reply->message->tool_calls[k];
        assert_string_equal(c->name, name);
        assert_non_null(c->args);
        assert_string_equal(c->args, want);
        assert_true(bin_eq(t->name, name));
        assert_true(bin_eq(t->arguments, want));
        assert_true(bin_eq(t->id, c->id));
        assert_true(strncmp(c->id, anthropic ? "toolu_aos" : "call_aos", anthropic ? 9 : 8) ==
                    0);
        assert_string_equal(c->id + strlen(c->id) - strlen(idsuf), idsuf);
    }
}

static void tool_calls_single_and_parallel_assemble_whole(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "use a tool [[tools=1]]", 20000, NULL, &r);
        EXPECT_OK(&r);
        expect_calls(&r, k, 1);
        expect_usage_of_endpoint(&r, k == 0);
        res_clear(&r);

        chat1(MODELS[k], "use three [[tools=3 text=first chunks=2]]", 20000, NULL, &r);
        EXPECT_OK(&r);
        expect_calls(&r, k, 3);
        assert_string_equal(r.text, "first first");
        char text[256];
        reply_text(r.reply, text, sizeof text);
        assert_string_equal(text, "first first");
        expect_usage_of_endpoint(&r, k == 0);
        res_clear(&r);
    }
}

static void a_stream_split_at_every_byte_or_mid_line_with_crlf_is_the_same(void **st)
{
    (void)st;
    /* split=byte writes every byte at least 1 ms apart: a short reply keeps it to seconds */
    static const char *const dirs[] = {
        "split [[tools=2 chunks=3 split=mid crlf=1]]",
        "split [[tools=2 chunks=1 split=byte]]",
    };
    static const char *const texts[] = {
        "tok\xe2\x82\xac tok\xe2\x82\xac tok\xe2\x82\xac",
        "tok\xe2\x82\xac",
    };
    for (int k = 0; k < 2; k++)
        for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
            chat_res r;
            chat1(MODELS[k], dirs[d], 30000, NULL, &r);
            EXPECT_OK(&r);
            expect_calls(&r, k, 2);
            /* chunks= without text= repeats a word with a multi-byte character in it */
            assert_string_equal(r.text, texts[d]);
            char text[256];
            reply_text(r.reply, text, sizeof text);
            assert_string_equal(text, r.text);
            expect_usage_of_endpoint(&r, k == 0);
            res_clear(&r);
        }
}

static void cached_tokens_show_in_usage(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "cache me [[text=c chunks=2 cached=40 cache_write=60]]", 20000, NULL,
              &r);
        EXPECT_OK(&r);
        assert_int_equal(r.reply->usage->cache_read_tokens, 40);
        assert_int_equal(r.reply->usage->cache_write_tokens, k ? 60 : 0);
        expect_usage_of_endpoint(&r, k == 0);
        res_clear(&r);
    }
}

static void anthropic_pings_are_skipped(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "ping [[text=p chunks=4 ping=1 tools=1]]", 20000, NULL, &r);
        EXPECT_OK(&r);
        assert_string_equal(r.text, "p p p p");
        expect_calls(&r, k, 1);
        expect_usage_of_endpoint(&r, k == 0);
        res_clear(&r);
    }
}

static void an_error_event_mid_stream_is_a_clear_error_after_the_parts(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "err [[text=before chunks=5 error_mid=1]]", 20000, NULL, &r);
        if (r.rc == AOS_OK)
            fail_msg("%s: an error event mid-stream was answered OK", MODELS[k]);
        print_message("%s error_mid: %s: %s\n", MODELS[k], aos_err_name(r.rc), r.error);
        assert_string_equal(r.text, "before");
        assert_true(r.parts >= 1);
        assert_non_null(strstr(r.error, "Overloaded"));
        json_t *reqs = ep_requests(r.rid_hex);
        assert_int_equal(json_array_size(reqs), 1);  /* parts went out: never retried */
        json_decref(reqs);
        res_clear(&r);
    }
}

/* A 429 reaches aosd's scheduler, not the caller: the call goes back to its place in the
 * queue, the provider is held for its Retry-After, and the caller gets the answer. */
static void rate_limited_with_retry_after_then_success(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        uint8_t rid[AOS_ID_LEN];
        aos_id_random(rid);
        const char *d = "slow down [[status=429 count=1 retry_after=2 text=ok]]";
        chat_res r;
        chat1(MODELS[k], d, 20000, rid, &r);
        print_message("%s 429 then ok: %s in %llu ms\n", MODELS[k], aos_err_name(r.rc),
                      (unsigned long long)r.elapsed_ms);
        EXPECT_OK(&r);
        assert_string_equal(r.text, "ok");
        assert_true(r.elapsed_ms >= 1900); /* the Retry-After was waited out */
        /* the 429 was refused, not served: the retry is the first paid call */
        assert_false(r.reply->resent);
        json_t *reqs = ep_requests(r.rid_hex);
        assert_int_equal(json_array_size(reqs), 2);
        assert_int_equal(jnum(json_array_get(reqs, 0), "status"), 429);
        assert_int_equal(jnum(json_array_get(reqs, 1), "status"), 200);
        json_decref(reqs);
        res_clear(&r);
    }
}

static void a_500_is_retried_with_the_same_request_id(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "flaky [[status=500 count=1 text=again chunks=2]]", 20000, NULL, &r);
        EXPECT_OK(&r);
        assert_string_equal(r.text, "again again");
        assert_int_equal(r.reply->attempts, 2);
        json_t *reqs = ep_requests(r.rid_hex);
        assert_int_equal(json_array_size(reqs), 2);
        json_t *a = json_array_get(reqs, 0), *b = json_array_get(reqs, 1);
        assert_int_equal(jnum(a, "status"), 500);
        assert_string_equal(json_string_value(json_object_get(a, "attempt")), "1");
        assert_int_equal(jnum(b, "status"), 200);
        assert_string_equal(json_string_value(json_object_get(b, "attempt")), "2");
        json_decref(reqs);
        res_clear(&r);
    }
}

static void a_stream_cut_half_way_is_an_error_and_not_retried(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "cut [[text=w chunks=10 gap_ms=20 cut=4]]", 20000, NULL, &r);
        print_message("%s cut: %s: %s\n", MODELS[k], aos_err_name(r.rc), r.error);
        assert_true(r.rc == AOS_ERR_UNAVAILABLE || r.rc == AOS_ERR_PROTO);
        assert_string_equal(r.text, "w w w w");
        assert_true(r.parts >= 1);
        json_t *reqs = ep_requests(r.rid_hex);
        assert_int_equal(json_array_size(reqs), 1);
        json_decref(reqs);
        res_clear(&r);
    }
}

static void a_hanging_provider_times_out_at_the_deadline(void **st)
{
    (void)st;
    for (int k = 0; k < 2; k++) {
        chat_res r;
        chat1(MODELS[k], "hang [[hang=1]]", 2000, NULL, &r);
        print_message("%s hang: %s: %s after %llu ms\n", MODELS[k], aos_err_name(r.rc), r.error,
                      (unsigned long long)r.elapsed_ms);
        assert_int_equal(r.rc, AOS_ERR_TIMEOUT);
        assert_true(r.elapsed_ms >= 1500 && r.elapsed_ms <= 3500);
        assert_int_equal(r.parts, 0);
        res_clear(&r);
    }
}

static void connection_refused_is_unavailable_after_the_retries(void **st)
{
    (void)st;
    chat_res r;
    chat1("dead/d1", "anyone?", 20000, NULL, &r);
    print_message("refused: %s: %s\n", aos_err_name(r.rc), r.error);
    assert_int_equal(r.rc, AOS_ERR_UNAVAILABLE);
    char port[16];
    snprintf(port, sizeof port, ":%d", DEAD_PORT);
    assert_non_null(strstr(r.error, "dead"));
    assert_non_null(strstr(r.error, port));
    assert_non_null(strstr(r.error, "3 attempts"));
    res_clear(&r);
}

static void malformed_json_and_invalid_utf8_are_proto(void **st)
{
    (void)st;
    static const char *const dirs[] = {"bad [[text=a chunks=3 malformed=1]]",
                                       "bad [[text=a chunks=3 badutf8=1]]"};
    for (int k = 0; k < 2; k++)
        for (int d = 0; d < 2; d++) {
            chat_res r;
            chat1(MODELS[k], dirs[d], 20000, NULL, &r);
            print_message("%s %s: %s: %s\n", MODELS[k], dirs[d], aos_err_name(r.rc), r.error);
            assert_int_equal(r.rc, AOS_ERR_PROTO);
            json_t *reqs = ep_requests(r.rid_hex);
            assert_int_equal(json_array_size(reqs), 1);
            json_decref(reqs);
            res_clear(&r);
        }
}

/* VmRSS of pid in KiB, -1 when it cannot be read. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

typedef struct {
    pid_t pid;
    atomic_int stop;
    long max_kib;
} rss_watch;

static void *watch_rss(void *arg)
{
    rss_watch *w = arg;
    while (!atomic_load(&w->stop)) {
        long k = rss_kib(w->pid);
        if (k > w->max_kib)
            w->max_kib = k;
        nap_ms(5);
    }
    return NULL;
}

static void a_100_MB_body_is_too_big_and_aos_llm_stays_small(void **st)
{
    (void)st;
    pid_t pid = h_child(H, "llm", NULL);
    assert_true(pid > 0);
    for (int k = 0; k < 2; k++) {
        long before = rss_kib(pid);
        assert_true(before > 0);
        rss_watch w = {.pid = pid, .max_kib = before};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, watch_rss, &w), 0);
        chat_res r;
        chat1(MODELS[k], "flood [[big=100000000]]", 60000, NULL, &r);
        atomic_store(&w.stop, 1);
        pthread_join(t, NULL);
        print_message("%s big: %s: %s; VmRSS %ld -> max %ld KiB\n", MODELS[k],
                      aos_err_name(r.rc), r.error, before, w.max_kib);
        assert_int_equal(r.rc, AOS_ERR_TOO_BIG);
        assert_true(w.max_kib - before < 64 * 1024);
        assert_int_equal(h_child(H, "llm", NULL), pid);
        res_clear(&r);
    }
}

/* ---- kill -9 of aos-llm under 50 streams --------------------------------------------------- */

typedef struct {
    aos_conn *cn;
    int i;
    chat_res r;
} killer_arg;

static atomic_int STARTED;

static void *kill_caller(void *arg)
{
    killer_arg *a = arg;
    /* even: parts flow when aos-llm dies; odd: nothing yet (the kernel re-sends those) */
    const char *model = a->i % 4 < 2 ? "oa/mk" : "an/ak";
    const char *text = a->i % 2 ? "late [[text=late chunks=3 first_ms=4000]]"
                                : "flow [[text=f chunks=30 spread_ms=3000]]";
    conv c = {0};
    conv_add(&c, AOS__LLM__ROLE__USER, text, NULL);
    atomic_fetch_add(&STARTED, 1);
    chat_conv(a->cn, model, &c, 30000, NULL, &a->r);
    conv_free(&c);
    return NULL;
}

static json_t *llm_usage(uint64_t since_ms)
{
    Aos__Llm__UsageRequest q = AOS__LLM__USAGE_REQUEST__INIT;
    q.since_ms = since_ms;
    uint8_t buf[64];
    size_t len = aos__llm__usage_request__pack(&q, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 10000};
    aos_err rc = AOS_ERR_UNAVAILABLE;
    /* the restarted aos-llm connects to its database in the background */
    for (int tries = 0; tries < 100; tries++) {
        rc = aos_call(h_conn(H), &o, "llm.usage", buf, len, &rep);
        if (rc != AOS_ERR_UNAVAILABLE)
            break;
        aos_reply_clear(&rep);
        nap_ms(200);
    }
    if (rc != AOS_OK)
        fail_msg("llm.usage: %s: %s", aos_err_name(rc), rep.error);
    Aos__Llm__UsageReply *u = aos__llm__usage_reply__unpack(NULL, rep.payload_len, rep.payload);
    assert_non_null(u);
    json_t *rows = json_array();
    for (size_t i = 0; i < u->n_rows; i++) {
        const Aos__Llm__UsageRow *w = u->rows[i];
        json_array_append_new(rows, json_pack("{s:s%,s:s%,s:I,s:I,s:I}", "provider",
                                              (const char *)w->provider.data, w->provider.len,
                                              "model", (const char *)w->model.data,
                                              w->model.len, "calls", (json_int_t)w->calls,
                                              "failed", (json_int_t)w->failed, "resent",
                                              (json_int_t)w->resent));
    }
    aos__llm__usage_reply__free_unpacked(u, NULL);
    aos_reply_clear(&rep);
    return rows;
}

static void kill9_of_aos_llm_under_50_streams_every_caller_answered_books_match(void **st)
{
    (void)st;
    pid_t old = h_child(H, "llm", NULL);
    assert_true(old > 0);
    aos_conn *cn = NULL;
    char why[256];
    assert_int_equal(aos_connect(URL, &cn, why, sizeof why), AOS_OK);
    static killer_arg args[KILL_THREADS];
    pthread_t th[KILL_THREADS];
    memset(args, 0, sizeof args);
    atomic_store(&STARTED, 0);
    for (int i = 0; i < KILL_THREADS; i++) {
        args[i].cn = cn;
        args[i].i = i;
        assert_int_equal(pthread_create(&th[i], NULL, kill_caller, &args[i]), 0);
    }
    /* kill once the endpoint has every request and the flowing ones have parts */
    uint64_t end = aos_mono_ms() + 20000;
    size_t seen = 0;
    while (aos_mono_ms() < end) {
        seen = 0;
        json_t *all = ep_requests(NULL);
        size_t i;
        json_t *q;
        json_array_foreach(all, i, q) {
            const char *m = json_string_value(json_object_get(q, "model"));
            if (m && (!strcmp(m, "mk") || !strcmp(m, "ak")))
                seen++;
        }
        json_decref(all);
        if (seen >= KILL_THREADS)
            break;
        nap_ms(50);
    }
    assert_int_equal(seen, KILL_THREADS);
    nap_ms(500);
    assert_int_equal(kill(old, SIGKILL), 0);
    for (int i = 0; i < KILL_THREADS; i++)
        pthread_join(th[i], NULL);
    aos_close(cn);
    assert_true(h_wait_running(H, "llm", old, 30000) > 0);

    unsigned ok = 0, unavailable = 0, resent_ok = 0;
    for (int i = 0; i < KILL_THREADS; i++) {
        chat_res *r = &args[i].r;
        if (r->rc == AOS_OK) {
            ok++;
            resent_ok += r->reply && r->reply->resent;
            assert_string_equal(r->text, i % 2 ? "late late late" : "f f f f f f f f f f f f f "
                                                                    "f f f f f f f f f f f f f "
                                                                    "f f f f");
        } else if (r->rc == AOS_ERR_UNAVAILABLE) {
            unavailable++;
            assert_true(r->error[0] != 0);
        } else {
            fail_msg("caller %d: %s: %s", i, aos_err_name(r->rc), r->error);
        }
        assert_true(r->elapsed_ms <= 30000 + 1000);
    }
    print_message("kill -9 of aos-llm: %u answered, %u unavailable, %u answered as resent\n",
                  ok, unavailable, resent_ok);

    /* the books against the endpoint's log: a row per request it got, resent ones flagged */
    size_t reqs = 0, again = 0;
    json_t *ids = json_object();
    json_t *all = ep_requests(NULL);
    size_t i;
    json_t *q;
    json_array_foreach(all, i, q) {
        const char *m = json_string_value(json_object_get(q, "model"));
        const char *id = json_string_value(json_object_get(q, "request_id"));
        if (!m || !id || (strcmp(m, "mk") && strcmp(m, "ak")))
            continue;
        reqs++;
        if (json_object_get(ids, id))
            again++;
        json_object_set_new(ids, id, json_true());
    }
    json_decref(all);
    json_decref(ids);
    uint64_t calls = 0, resent = 0;
    /* mk and ak are this case's models alone: every row of theirs is from here */
    json_t *rows = llm_usage(0);
    json_array_foreach(rows, i, q) {
        const char *m = json_string_value(json_object_get(q, "model"));
        if (m && (!strcmp(m, "mk") || !strcmp(m, "ak"))) {
            calls += jnum(q, "calls");
            resent += jnum(q, "resent");
        }
    }
    json_decref(rows);
    print_message("endpoint: %zu requests, %zu of them again; llm.usage: %llu calls, %llu "
                  "resent\n", reqs, again, (unsigned long long)calls,
                  (unsigned long long)resent);
    assert_int_equal(calls, reqs);
    assert_int_equal(resent, again);
    assert_int_equal(resent_ok, again);
    assert_true(again > 0);
}

static void llm_usage_since_ms_filters_by_start_time(void **st)
{
    (void)st;
    uint64_t now = wall_ms();
    json_t *rows = llm_usage(now - 3600u * 1000u);
    size_t i;
    json_t *q;
    uint64_t m1 = 0;
    json_array_foreach(rows, i, q) {
        const char *p = json_string_value(json_object_get(q, "provider"));
        const char *m = json_string_value(json_object_get(q, "model"));
        if (p && m && !strcmp(p, "oa") && !strcmp(m, "m1"))
            m1 = jnum(q, "calls");
    }
    json_decref(rows);
    assert_true(m1 > 0);
    rows = llm_usage(now + 3600u * 1000u);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
}

/* ---- the sim's script mode --------------------------------------------------------------- */

typedef struct {
    const char *text;
    struct { const char *id, *name, *args; } calls[2];
    unsigned ncalls;
} turn_want;

static void sim_script_drives_five_turns(void **st)
{
    (void)st;
    static const turn_want want[5] = {
        {"Let me look that up.", {{"call_s1", "search", "{\"q\":\"weather\"}"}}, 1},
        {"Two lookups at once.",
         {{"call_s2a", "search", "{\"q\":\"paris\"}"},
          {"call_s2b", "fetch", "{\"url\":\"http://x.test/y\",\"n\":3}"}},
         2},
        {"Checking the sum.", {{"call_s3", "calc", "{\"expr\":\"2+2\",\"exact\":true}"}}, 1},
        {"", {{"call_s4", "done", "{}"}}, 1},
        {"All done: it is sunny in Paris.", {{0}}, 0},
    };
    conv c = {0};
    conv_add(&c, AOS__LLM__ROLE__USER, "What is the weather in Paris?", NULL);
    for (int t = 0; t < 5; t++) {
        chat_res r;
        chat_conv(NULL, "sim/sim-1", &c, 20000, NULL, &r);
        if (r.rc != AOS_OK)
            fail_msg("turn %d: %s: %s", t + 1, aos_err_name(r.rc), r.error);
        EXPECT_OK(&r);
        char text[512];
        reply_text(r.reply, text, sizeof text);
        assert_string_equal(text, want[t].text);
        assert_string_equal(r.text, want[t].text);
        assert_true(bin_eq(r.reply->provider, "sim"));
        assert_int_equal(r.reply->message->n_tool_calls, want[t].ncalls);
        assert_int_equal(r.ncalls, want[t].ncalls);
        assert_int_equal(r.reply->stop_reason, want[t].ncalls ? AOS__LLM__STOP_REASON__TOOL_USE
                                                              : AOS__LLM__STOP_REASON__END_TURN);
        for (unsigned k = 0; k < want[t].ncalls; k++) {
            const Aos__Llm__ToolCall *tc = r.reply->message->tool_calls[k];
            assert_true(bin_eq(tc->id, want[t].calls[k].id));
            assert_true(bin_eq(tc->name, want[t].calls[k].name));
            assert_string_equal(r.calls[k].id, want[t].calls[k].id);
            assert_string_equal(r.calls[k].name, want[t].calls[k].name);
            json_t *a = json_loadb((const char *)tc->arguments.data, tc->arguments.len, 0, NULL);
            json_t *b = json_loads(r.calls[k].args ? r.calls[k].args : "", 0, NULL);
            json_t *w = json_loads(want[t].calls[k].args, 0, NULL);
            assert_non_null(a);
            assert_non_null(b);
            assert_true(json_equal(a, w));
            assert_true(json_equal(b, w));
            json_decref(a);
            json_decref(b);
            json_decref(w);
        }
        conv_add_msg(&c, r.reply->message);
        for (unsigned k = 0; k < want[t].ncalls; k++) {
            char res[64];
            snprintf(res, sizeof res, "result-%d-%u", t + 1, k + 1);
            conv_add(&c, AOS__LLM__ROLE__TOOL, res, want[t].calls[k].id);
        }
        res_clear(&r);
    }
    /* a sixth turn is past the script: a clear error, not an invented answer */
    conv_add(&c, AOS__LLM__ROLE__USER, "and tomorrow?", NULL);
    chat_res r;
    chat_conv(NULL, "sim/sim-1", &c, 20000, NULL, &r);
    assert_int_equal(r.rc, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(r.error, "5 turns"));
    res_clear(&r);
    conv_free(&c);
}

/* ---- the keys ------------------------------------------------------------------------------- */

/* ---- llm.embed ------------------------------------------------------------------------ */

/* One llm.embed call; the reply decoded (the caller frees it), NULL with rc on error. */
static Aos__Llm__EmbedReply *embed(const char *model, const char *const *in, size_t n,
                                   aos_err *rc, char *err, size_t errcap)
{
    Aos__Llm__EmbedRequest q = AOS__LLM__EMBED_REQUEST__INIT;
    ProtobufCBinaryData b[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        b[i] = (ProtobufCBinaryData){strlen(in[i]), (uint8_t *)in[i]};
    q.model = (ProtobufCBinaryData){strlen(model), (uint8_t *)model};
    q.inputs = b;
    q.n_inputs = n;
    uint8_t buf[1024];
    assert_true(aos__llm__embed_request__get_packed_size(&q) <= sizeof buf);
    size_t len = aos__llm__embed_request__pack(&q, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 10000};
    *rc = aos_call(h_conn(H), &o, "llm.embed", buf, len, &rep);
    snprintf(err, errcap, "%s", rep.error);
    Aos__Llm__EmbedReply *r = NULL;
    if (*rc == AOS_OK) {
        r = aos__llm__embed_reply__unpack(NULL, rep.payload_len, rep.payload);
        assert_non_null(r);
    }
    aos_reply_clear(&rep);
    return r;
}

static double cosine(const Aos__Llm__Embedding *a, const Aos__Llm__Embedding *b)
{
    assert_int_equal(a->n_values, b->n_values);
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < a->n_values; i++) {
        ab += (double)a->values[i] * b->values[i];
        aa += (double)a->values[i] * a->values[i];
        bb += (double)b->values[i] * b->values[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

static void embeddings_over_openai_and_the_sim(void **st)
{
    (void)st;
    char err[AOS_ERRMSG_MAX + 1];
    aos_err rc;
    /* the OpenAI wire: one vector per input, in order, the same text the same vector */
    const char *in[] = {"the cat sat", "a dog ran", "the cat sat"};
    Aos__Llm__EmbedReply *r = embed("oa/e1", in, 3, &rc, err, sizeof err);
    if (!r)
        fail_msg("llm.embed oa/e1: %s: %s", aos_err_name(rc), err);
    assert_int_equal(r->n_vectors, 3);
    assert_true(r->dim > 0);
    assert_int_equal(r->vectors[0]->n_values, r->dim);
    assert_true(cosine(r->vectors[0], r->vectors[2]) > 0.9999);
    assert_true(cosine(r->vectors[0], r->vectors[1]) < 0.9999);
    assert_non_null(r->usage);
    assert_true(r->usage->input_tokens > 0);
    assert_memory_equal(r->provider.data, "oa", 2);
    aos__llm__embed_reply__free_unpacked(r, NULL);

    /* the sim, offline: a synonym matches with no word in common, an unrelated text less */
    const char *sin[] = {"buy a car", "purchase an automobile", "bake bread at home"};
    r = embed("sim/sim-embed", sin, 3, &rc, err, sizeof err);
    if (!r)
        fail_msg("llm.embed sim/sim-embed: %s: %s", aos_err_name(rc), err);
    assert_int_equal(r->n_vectors, 3);
    double syn = cosine(r->vectors[0], r->vectors[1]);
    double other = cosine(r->vectors[0], r->vectors[2]);
    print_message("sim embeddings: synonym cosine %.3f, unrelated %.3f\n", syn, other);
    assert_true(syn > other);
    aos__llm__embed_reply__free_unpacked(r, NULL);

    /* a chat model is not an embedding model; an anthropic provider has none */
    assert_null(embed("oa/m1", in, 1, &rc, err, sizeof err));
    assert_int_equal(rc, AOS_ERR_NOT_FOUND);
    assert_null(embed("an/ak", in, 1, &rc, err, sizeof err));
    assert_true(rc == AOS_ERR_NOT_FOUND || rc == AOS_ERR_USAGE);
    const char *empty[] = {""};
    assert_null(embed("oa/e1", empty, 1, &rc, err, sizeof err));
    assert_int_equal(rc, AOS_ERR_USAGE);
}

static void the_api_keys_never_show(void **st)
{
    (void)st;
    /* llm.providers: has_key, never the key */
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 10000};
    aos_err rc = aos_call(h_conn(H), &o, "llm.providers", NULL, 0, &rep);
    if (rc != AOS_OK)
        fail_msg("llm.providers: %s: %s", aos_err_name(rc), rep.error);
    assert_null(memmem(rep.payload, rep.payload_len, KEY, strlen(KEY)));
    Aos__Llm__ProvidersReply *p =
        aos__llm__providers_reply__unpack(NULL, rep.payload_len, rep.payload);
    assert_non_null(p);
    int seen = 0;
    for (size_t i = 0; i < p->n_providers; i++) {
        const Aos__Llm__ProviderInfo *pi = p->providers[i];
        if (bin_eq(pi->name, "oa") || bin_eq(pi->name, "an")) {
            seen++;
            assert_true(pi->has_key);
            assert_true(pi->reachable);
        }
        if (bin_eq(pi->name, "dead")) {
            assert_false(pi->has_key);
            assert_false(pi->reachable);
        }
    }
    assert_int_equal(seen, 2);
    aos__llm__providers_reply__free_unpacked(p, NULL);
    aos_reply_clear(&rep);

    /* aosctl llm providers --json, when aosctl has it */
    static char out[1 << 16];
    const char *argv[] = {"llm", "providers", "--json", NULL};
    int ex = h_aosctl(H, out, sizeof out, argv);
    if (ex == 0) {
        assert_null(strstr(out, KEY));
        assert_non_null(strstr(out, "\"oa\""));
    } else {
        print_message("aosctl llm providers --json exits %d: not checked\n", ex);
    }
    const char *argv2[] = {"config", "check", "--json", NULL};
    h_aosctl(H, out, sizeof out, argv2);
    assert_null(strstr(out, KEY));

    /* the whole of aosd's log (the servers' lines are in it), after every case above */
    FILE *f = fopen(h_log_path(H), "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0, lines = 0;
    while (getline(&line, &cap, f) > 0) {
        lines++;
        if (strstr(line, KEY))
            fail_msg("aosd.log holds the API key: %s", line);
        if (strstr(line, "SECRET"))
            fail_msg("aosd.log holds part of the API key: %s", line);
    }
    free(line);
    fclose(f);
    assert_true(lines > 0);
    assert_true(h_log_count(H, "aos-llm") > 0 || h_log_count(H, "llm") > 0);
}

int main(void)
{
    /* one case alone while debugging it: AOS_LLM_TEST_ONLY=pattern (cmocka's filter) */
    if (getenv("AOS_LLM_TEST_ONLY"))
        cmocka_set_test_filter(getenv("AOS_LLM_TEST_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_reply_equals_what_the_endpoint_sent),
        cmocka_unit_test(tool_calls_single_and_parallel_assemble_whole),
        cmocka_unit_test(a_stream_split_at_every_byte_or_mid_line_with_crlf_is_the_same),
        cmocka_unit_test(cached_tokens_show_in_usage),
        cmocka_unit_test(anthropic_pings_are_skipped),
        cmocka_unit_test(an_error_event_mid_stream_is_a_clear_error_after_the_parts),
        cmocka_unit_test(rate_limited_with_retry_after_then_success),
        cmocka_unit_test(a_500_is_retried_with_the_same_request_id),
        cmocka_unit_test(a_stream_cut_half_way_is_an_error_and_not_retried),
        cmocka_unit_test(a_hanging_provider_times_out_at_the_deadline),
        cmocka_unit_test(connection_refused_is_unavailable_after_the_retries),
        cmocka_unit_test(malformed_json_and_invalid_utf8_are_proto),
        cmocka_unit_test(a_100_MB_body_is_too_big_and_aos_llm_stays_small),
        cmocka_unit_test(sim_script_drives_five_turns),
        cmocka_unit_test(kill9_of_aos_llm_under_50_streams_every_caller_answered_books_match),
        cmocka_unit_test(llm_usage_since_ms_filters_by_start_time),
        cmocka_unit_test(embeddings_over_openai_and_the_sim),
        cmocka_unit_test(the_api_keys_never_show), /* last: the log holds everything above */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
