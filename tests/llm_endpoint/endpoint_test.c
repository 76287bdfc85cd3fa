/* unit_llm_endpoint: starts aos-test-llm-endpoint and drives it over plain sockets — both
 * wire formats, retries, cuts, keep-alive, the log, hostile HTTP, provider limits (429 with
 * Retry-After over them, admitted under them, the counts) and 500 concurrent streams. */
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
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#define BODY_CAP (4u << 20)

typedef struct {
    pid_t pid;
    int port;
    char dir[64];
    char log[96];
} proc;

static proc P;

/* The endpoint with --port 0 --log --max-s 300 and extra (NULL-terminated, may be NULL;
 * at most 16 arguments). */
static int start_with(proc *p, const char *const *extra)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/aos-llm-ep-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    snprintf(p->log, sizeof p->log, "%s/log.jsonl", p->dir);
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    p->pid = fork();
    if (p->pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        const char *argv[24] = {AOS_LLM_ENDPOINT_BIN, "--port", "0", "--log", p->log,
                                "--max-s", "300"};
        size_t n = 7;
        for (size_t i = 0; extra && extra[i] && n < 23; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        execv(AOS_LLM_ENDPOINT_BIN, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    char line[64] = "";
    size_t n = 0;
    while (n < sizeof line - 1 && !strchr(line, '\n')) {
        struct pollfd pf = {pfd[0], POLLIN, 0};
        if (poll(&pf, 1, 30000) <= 0)
            break;
        ssize_t r = read(pfd[0], line + n, sizeof line - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        line[n] = '\0';
    }
    close(pfd[0]);
    if (sscanf(line, "port %d", &p->port) != 1 || p->port <= 0)
        return -1;
    return 0;
}

static int start(proc *p, const char *key)
{
    const char *extra[] = {"--expect-key", key, NULL};
    return start_with(p, key ? extra : NULL);
}

/* SIGTERM, then the exit status (0 expected: under ASan a leak makes it nonzero). */
static int stop(proc *p)
{
    int st = -1;
    kill(p->pid, SIGTERM);
    if (waitpid(p->pid, &st, 0) != p->pid)
        return -1;
    unlink(p->log);
    rmdir(p->dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int setup(void **state)
{
    (void)state;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    return start(&P, NULL);
}

static int teardown(void **state)
{
    (void)state;
    return stop(&P) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------- a tiny HTTP client */

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} client;

typedef struct {
    int status;
    char head[8192];
    char *body;
    size_t len;
    int chunked;
    int complete;   /* the framing said the body ended */
    int closed;     /* the peer closed */
} resp;

static client *cl_open(int port)
{
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {30, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return c;
}

static void cl_close(client *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the server may close early on purpose (413, 431) */
        s += w;
        n -= (size_t)w;
    }
}

/* A request with Host and Content-Length; extra is "Name: value\r\n" lines or "". */
static char *req_text(const char *method, const char *path, const char *extra,
                      const char *body, size_t *len)
{
    size_t bl = body ? strlen(body) : 0;
    size_t cap = strlen(path) + strlen(extra) + bl + 256;
    char *s = malloc(cap);
    assert_non_null(s);
    int n = snprintf(s, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n",
                     method, path, extra, bl);
    memcpy(s + n, body ? body : "", bl);
    *len = (size_t)n + bl;
    return s;
}

static void cl_send(client *c, const char *method, const char *path, const char *extra,
                    const char *body)
{
    size_t n;
    char *s = req_text(method, path, extra, body, &n);
    send_all(c->fd, s, n);
    free(s);
}

static const char *hdr(const resp *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = strstr(r->head, "\r\n");
    while (p && p[2]) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

/* Parses a response at b[0..n): 1 complete (*used bytes), 0 not yet; the body decoded
 * so far is in r either way. -1: broken framing. */
static int parse_resp(const char *b, size_t n, resp *r, size_t *used)
{
    size_t off = 0;
    for (;;) {
        const char *e = memmem(b + off, n - off, "\r\n\r\n", 4);
        if (!e)
            return 0;
        size_t hl = (size_t)(e - (b + off)) + 4;
        if (sscanf(b + off, "HTTP/1.%*d %d", &r->status) != 1)
            return -1;
        if (r->status >= 100 && r->status < 200) {
            off += hl;
            continue;
        }
        size_t cp = hl < sizeof r->head ? hl : sizeof r->head - 1;
        memcpy(r->head, b + off, cp);
        r->head[cp] = '\0';
        off += hl;
        break;
    }
    char v[64];
    long long clen = hdr(r, "Content-Length", v, sizeof v) ? atoll(v) : -1;
    r->chunked = hdr(r, "Transfer-Encoding", v, sizeof v) && strstr(v, "chunked");
    free(r->body);
    r->body = malloc(n - off + 1);
    assert_non_null(r->body);
    r->len = 0;
    if (r->chunked) {
        size_t p = off;
        for (;;) {
            const char *le = memmem(b + p, n - p, "\r\n", 2);
            if (!le)
                break;
            unsigned long sz = strtoul(b + p, NULL, 16);
            size_t data = (size_t)(le - b) + 2;
            if (sz == 0) {
                if (n >= data + 2 && memcmp(b + data, "\r\n", 2) == 0) {
                    r->complete = 1;
                    *used = data + 2;
                }
                break;
            }
            if (n < data + sz + 2)
                break;
            memcpy(r->body + r->len, b + data, sz);
            r->len += sz;
            p = data + sz + 2;
        }
    } else {
        size_t have = n - off;
        if (clen >= 0 && have >= (size_t)clen) {
            have = (size_t)clen;
            r->complete = 1;
            *used = off + have;
        }
        memcpy(r->body, b + off, have);
        r->len = have;
    }
    r->body[r->len] = '\0';
    return r->complete;
}

/* Reads one response; a body without framing ends at EOF. */
static void cl_read(client *c, resp *r)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        size_t used = 0;
        if (c->len && parse_resp(c->buf, c->len, r, &used) == 1) {
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            return;
        }
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            assert_true(c->cap <= 2 * BODY_CAP);
            c->buf = realloc(c->buf, c->cap);
            assert_non_null(c->buf);
        }
        ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            r->closed = 1;
            if (c->len)
                parse_resp(c->buf, c->len, r, &used);
            return;
        }
        c->len += (size_t)k;
    }
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* One request on a fresh connection. */
static void exchange(int port, const char *method, const char *path, const char *extra,
                     const char *body, resp *r)
{
    client *c = cl_open(port);
    cl_send(c, method, path, extra, body);
    cl_read(c, r);
    cl_close(c);
}

/* ---------------------------------------------------------------- SSE */

typedef struct {
    char event[64];
    char *data;
} sse_ev;

/* Splits an event stream into events (LF or CRLF lines; comments skipped). */
static size_t sse_parse(const char *b, size_t n, sse_ev *out, size_t max)
{
    size_t k = 0, i = 0;
    sse_ev cur = {"", NULL};
    while (i < n) {
        const char *nl = memchr(b + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - b) : n;
        size_t l = e - i;
        if (l && b[i + l - 1] == '\r')
            l--;
        if (l == 0) {
            if ((cur.data || cur.event[0]) && k < max)
                out[k++] = cur;
            else
                free(cur.data);
            cur = (sse_ev){"", NULL};
        } else if (l > 7 && memcmp(b + i, "event: ", 7) == 0) {
            size_t m = l - 7 < sizeof cur.event - 1 ? l - 7 : sizeof cur.event - 1;
            memcpy(cur.event, b + i + 7, m);
            cur.event[m] = '\0';
        } else if (l >= 6 && memcmp(b + i, "data: ", 6) == 0) {
            free(cur.data);
            cur.data = strndup(b + i + 6, l - 6);
        }
        i = e + 1;
    }
    free(cur.data);
    return k;
}

static void sse_free(sse_ev *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].data);
}

static char *oa_body(const char *text, int stream)
{
    json_t *j = json_pack("{s:s,s:b,s:{s:b},s:[{s:s,s:s},{s:s,s:s}]}", "model", "gpt-test",
                          "stream", stream, "stream_options", "include_usage", 1, "messages",
                          "role", "system", "content", "be brief", "role", "user", "content",
                          text);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(s);
    return s;
}

static char *an_body(const char *text, int stream)
{
    json_t *j = json_pack("{s:s,s:i,s:b,s:s,s:[{s:s,s:[{s:s,s:s}]}]}", "model", "claude-test",
                          "max_tokens", 100, "stream", stream, "system", "be brief",
                          "messages", "role", "user", "content", "type", "text", "text", text);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_non_null(s);
    return s;
}

#define AN_HDRS "anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
#define OA_HDRS "Content-Type: application/json\r\n"

/* What an OpenAI stream said: text, tool arguments per index, finish, usage, [DONE]. */
typedef struct {
    char text[4096];
    char args[4][256];
    char finish[32];
    int text_deltas;
    long long prompt, completion, cached;
    int done;
    int errors;
    int broken;
} oa_sum;

static void oa_summarise(const resp *r, oa_sum *s)
{
    memset(s, 0, sizeof *s);
    s->prompt = s->completion = s->cached = -1;
    sse_ev *ev = calloc(20000, sizeof *ev);
    assert_non_null(ev);
    size_t n = sse_parse(r->body, r->len, ev, 20000);
    for (size_t i = 0; i < n; i++) {
        if (!ev[i].data)
            continue;
        if (strcmp(ev[i].data, "[DONE]") == 0) {
            s->done++;
            continue;
        }
        json_t *j = json_loads(ev[i].data, 0, NULL);
        if (!j) {
            s->broken++;
            continue;
        }
        if (json_object_get(j, "error"))
            s->errors++;
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u)) {
            s->prompt = json_integer_value(json_object_get(u, "prompt_tokens"));
            s->completion = json_integer_value(json_object_get(u, "completion_tokens"));
            s->cached = json_integer_value(
                json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
            assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
        }
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
        json_t *d = json_object_get(ch, "delta");
        const char *c = json_string_value(json_object_get(d, "content"));
        if (c && *c) {
            strncat(s->text, c, sizeof s->text - strlen(s->text) - 1);
            s->text_deltas++;
        }
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(d, "tool_calls"), k, tc) {
            json_int_t idx = json_integer_value(json_object_get(tc, "index"));
            const char *a = json_string_value(
                json_object_get(json_object_get(tc, "function"), "arguments"));
            if (idx >= 0 && idx < 4 && a)
                strncat(s->args[idx], a, sizeof s->args[idx] - strlen(s->args[idx]) - 1);
        }
        const char *f = json_string_value(json_object_get(ch, "finish_reason"));
        if (f)
            snprintf(s->finish, sizeof s->finish, "%s", f);
        json_decref(j);
    }
    sse_free(ev, n);
    free(ev);
}

/* One request to the endpoint's chat path of the dialect, built by oa_body / an_body. */
static void oa_chat(const char *text, int stream, resp *r)
{
    char *b = oa_body(text, stream);
    exchange(P.port, "POST", "/v1/chat/completions", OA_HDRS, b, r);
    free(b);
}

static void an_chat(const char *text, int stream, resp *r)
{
    char *b = an_body(text, stream);
    exchange(P.port, "POST", "/v1/messages", AN_HDRS, b, r);
    free(b);
}

/* ---------------------------------------------------------------- tests */

static void test_openai_stream(void **state)
{
    (void)state;
    resp r;
    oa_chat("hello wide world", 1, &r);
    char v[128];
    assert_int_equal(r.status, 200);
    assert_true(r.chunked && r.complete);
    assert_non_null(hdr(&r, "Content-Type", v, sizeof v));
    assert_non_null(strstr(v, "text/event-stream"));
    oa_sum s;
    oa_summarise(&r, &s);
    assert_string_equal(s.text, "echo: hello wide world");
    assert_int_equal(s.text_deltas, 4);
    assert_string_equal(s.finish, "stop");
    assert_int_equal(s.done, 1);
    assert_int_equal(s.prompt, 5); /* "be brief" + "hello wide world" */
    assert_int_equal(s.completion, 4);
    assert_int_equal(s.cached, 0);
    resp_free(&r);
}

static void test_openai_nonstream(void **state)
{
    (void)state;
    resp r;
    oa_chat("[[chunks=3 text=ab cached=7]] x", 0, &r);
    assert_int_equal(r.status, 200);
    assert_false(r.chunked);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_non_null(j);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ch, "message"),
                                                          "content")), "ab ab ab");
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 6 + 7); /* 2 system + 4 user words, 7 cached */
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(
                         u, "prompt_tokens_details"), "cached_tokens")), 7);
    json_decref(j);
    resp_free(&r);
}

static void test_anthropic_stream(void **state)
{
    (void)state;
    char *b = an_body("[[chunks=3 cached=5 cache_write=2 ping=1]] go", 1);
    resp r;
    exchange(P.port, "POST", "/v1/messages", AN_HDRS, b, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    sse_ev ev[64];
    size_t n = sse_parse(r.body, r.len, ev, 64);
    const char *want[] = {"message_start", "content_block_start", "content_block_delta",
                          "ping", "content_block_delta", "ping", "content_block_delta",
                          "content_block_stop", "message_delta", "message_stop"};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    char text[256] = "";
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(ev[i].event, want[i]);
        json_t *j = json_loads(ev[i].data, 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "type")), want[i]);
        if (i == 0) {
            json_t *u = json_object_get(json_object_get(j, "message"), "usage");
            assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 7);
            assert_int_equal(json_integer_value(json_object_get(u, "cache_read_input_tokens")),
                             5);
            assert_int_equal(
                json_integer_value(json_object_get(u, "cache_creation_input_tokens")), 2);
        }
        const char *t = json_string_value(
            json_object_get(json_object_get(j, "delta"), "text"));
        if (t)
            strncat(text, t, sizeof text - strlen(text) - 1);
        if (strcmp(want[i], "message_delta") == 0) {
            assert_string_equal(json_string_value(json_object_get(
                                    json_object_get(j, "delta"), "stop_reason")), "end_turn");
            assert_int_equal(json_integer_value(json_object_get(
                                 json_object_get(j, "usage"), "output_tokens")), 3);
        }
        json_decref(j);
    }
    assert_string_equal(text, "tok tok tok");
    sse_free(ev, n);
    resp_free(&r);

    /* Without anthropic-version: 400 in Anthropic's error shape. */
    exchange(P.port, "POST", "/v1/messages", OA_HDRS, b, &r);
    free(b);
    assert_int_equal(r.status, 400);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "error");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
                        "invalid_request_error");
    json_decref(j);
    resp_free(&r);
}

static void test_status_then_success(void **state)
{
    (void)state;
    char *b = oa_body("[[status=429 count=1 retry_after=2]] hi", 0);
    const char *h = OA_HDRS "X-Aos-Request-Id: retry-1\r\nX-Aos-Attempt: 1\r\n";
    resp r;
    char v[64];
    exchange(P.port, "POST", "/v1/chat/completions", h, b, &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(hdr(&r, "Retry-After", v, sizeof v), "2");
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                        "rate_limit_exceeded");
    json_decref(j);
    resp_free(&r);
    exchange(P.port, "POST", "/v1/chat/completions",
             OA_HDRS "X-Aos-Request-Id: retry-1\r\nX-Aos-Attempt: 2\r\n", b, &r);
    free(b);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* Anthropic, keyed by the body's hash: two 529s, then success. */
    b = an_body("[[status=529 count=2]] again", 0);
    for (int i = 0; i < 3; i++) {
        exchange(P.port, "POST", "/v1/messages", AN_HDRS, b, &r);
        assert_int_equal(r.status, i < 2 ? 529 : 200);
        j = json_loadb(r.body, r.len, 0, NULL);
        if (i < 2)
            assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"),
                                                                  "type")), "overloaded_error");
        else
            assert_string_equal(json_string_value(json_object_get(j, "stop_reason")),
                                "end_turn");
        json_decref(j);
        resp_free(&r);
    }
    free(b);
}

static void test_cut(void **state)
{
    (void)state;
    resp r;
    oa_chat("[[chunks=5 gap_ms=5 cut=2]] x", 1, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.closed);
    assert_false(r.complete);
    oa_sum s;
    oa_summarise(&r, &s);
    assert_int_equal(s.text_deltas, 2);
    assert_int_equal(s.done, 0);
    assert_string_equal(s.finish, "");
    resp_free(&r);
}

static void test_keepalive(void **state)
{
    (void)state;
    client *c = cl_open(P.port);
    char *b1 = oa_body("first one", 1), *b2 = an_body("second", 0);
    resp r;
    cl_send(c, "POST", "/v1/chat/completions", OA_HDRS, b1);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete && !r.closed);
    oa_sum s;
    oa_summarise(&r, &s);
    assert_string_equal(s.text, "echo: first one");
    resp_free(&r);
    cl_send(c, "POST", "/v1/messages", AN_HDRS, b2);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(
                            j, "content"), 0), "text")), "echo: second");
    json_decref(j);
    resp_free(&r);
    /* Two requests in one write (pipelined), answered in order. */
    size_t n1, n2;
    char *t1 = req_text("GET", "/v1/models", "", NULL, &n1);
    char *t2 = req_text("POST", "/v1/chat/completions", OA_HDRS, b1, &n2);
    char *both = malloc(n1 + n2);
    memcpy(both, t1, n1);
    memcpy(both + n1, t2, n2);
    send_all(c->fd, both, n1 + n2);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"object\":\"list\""));
    resp_free(&r);
    cl_read(c, &r);
    assert_int_equal(r.status, 200);
    oa_summarise(&r, &s);
    assert_string_equal(s.text, "echo: first one");
    resp_free(&r);
    free(both);
    free(t1);
    free(t2);
    free(b1);
    free(b2);
    cl_close(c);
}

/* The log has one line per request, written before the answer. */
static void test_log_line(void **state)
{
    (void)state;
    char *b = oa_body("[[chunks=2]] logged", 1);
    resp r;
    exchange(P.port, "POST", "/v1/chat/completions",
             OA_HDRS "X-Aos-Request-Id: log-1\r\nX-Aos-Attempt: 3\r\n", b, &r);
    free(b);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    FILE *f = fopen(P.log, "r");
    assert_non_null(f);
    char line[8192];
    int found = 0, lines = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        assert_non_null(json_object_get(j, "t_ms"));
        const char *id = json_string_value(json_object_get(j, "request_id"));
        if (id && strcmp(id, "log-1") == 0) {
            found++;
            assert_string_equal(json_string_value(json_object_get(j, "path")),
                                "/v1/chat/completions");
            assert_string_equal(json_string_value(json_object_get(j, "model")), "gpt-test");
            assert_true(json_is_true(json_object_get(j, "stream")));
            assert_string_equal(json_string_value(json_object_get(j, "attempt")), "3");
            assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
            assert_true(json_is_null(json_object_get(j, "key_ok")));
            assert_string_equal(json_string_value(json_object_get(j, "directive")), "chunks=2");
            json_t *u = json_object_get(j, "usage");
            assert_int_equal(json_integer_value(json_object_get(u, "input_tokens")), 4);
            assert_int_equal(json_integer_value(json_object_get(u, "output_tokens")), 2);
        }
        if (id && strcmp(id, "retry-1") == 0) {
            const char *at = json_string_value(json_object_get(j, "attempt"));
            assert_int_equal(json_integer_value(json_object_get(j, "status")),
                             strcmp(at, "1") == 0 ? 429 : 200);
        }
        json_decref(j);
    }
    fclose(f);
    assert_int_equal(found, 1);
    assert_true(lines > 5);
}

/* Tool calls cut into 1-byte argument deltas, with byte-wise and mid-line writes. */
static void test_tools_and_splits(void **state)
{
    (void)state;
    resp r;
    oa_chat("[[tools=2 split=mid crlf=1]] call", 1, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_non_null(strstr(r.body, "\r\n\r\n"));
    oa_sum s;
    oa_summarise(&r, &s);
    assert_string_equal(s.args[0], "{\"i\":0,\"s\":\"tool_0\"}");
    assert_string_equal(s.args[1], "{\"i\":1,\"s\":\"tool_1\"}");
    assert_string_equal(s.finish, "tool_calls");
    assert_int_equal(s.completion, 2 * (long long)strlen(s.args[0]));
    resp_free(&r);

    /* One byte per write and per HTTP chunk (1 ms apart), CRLF lines, a 3-byte character. */
    oa_chat("[[chunks=2 split=byte crlf=1]] call", 1, &r);
    assert_true(r.complete);
    oa_summarise(&r, &s);
    assert_string_equal(s.text, "tok\xe2\x82\xac tok\xe2\x82\xac");
    assert_int_equal(s.done, 1);
    resp_free(&r);

    an_chat("[[tools=1 chunks=2 split=mid crlf=1]] call", 1, &r);
    assert_true(r.complete);
    sse_ev ev[128];
    size_t n = sse_parse(r.body, r.len, ev, 128);
    char text[64] = "", json[256] = "", stop[32] = "";
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(ev[i].data, 0, NULL);
        assert_non_null(j);
        json_t *d = json_object_get(j, "delta");
        const char *t = json_string_value(json_object_get(d, "text"));
        const char *pj = json_string_value(json_object_get(d, "partial_json"));
        const char *sr = json_string_value(json_object_get(d, "stop_reason"));
        if (t)
            strncat(text, t, sizeof text - strlen(text) - 1);
        if (pj)
            strncat(json, pj, sizeof json - strlen(json) - 1);
        if (sr)
            snprintf(stop, sizeof stop, "%s", sr);
        json_decref(j);
    }
    sse_free(ev, n);
    assert_string_equal(text, "tok\xe2\x82\xac tok\xe2\x82\xac");
    assert_string_equal(json, "{\"i\":0,\"s\":\"tool_0\"}");
    assert_string_equal(stop, "tool_use");
    resp_free(&r);
}

static void test_misbehaviours(void **state)
{
    (void)state;
    resp r;
    char *b = oa_body("[[malformed=1]] x", 0);
    exchange(P.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    free(b);
    assert_int_equal(r.status, 200);
    assert_null(json_loadb(r.body, r.len, 0, NULL));
    resp_free(&r);

    oa_chat("[[malformed=1 chunks=2]] x", 1, &r);
    oa_sum s;
    oa_summarise(&r, &s);
    assert_int_equal(s.broken, 1);
    assert_int_equal(s.done, 1);
    resp_free(&r);

    oa_chat("[[badutf8=1 chunks=1]] x", 0, &r);
    assert_non_null(memchr(r.body, 0xff, r.len));
    assert_null(json_loadb(r.body, r.len, 0, NULL));
    resp_free(&r);

    oa_chat("[[big=300000]] x", 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 300000);
    assert_memory_equal(r.body, "{\"id\":", 6);
    resp_free(&r);

    an_chat("[[big=200000]] x", 1, &r);
    assert_true(r.complete);
    assert_true(r.len > 200000);
    resp_free(&r);

    an_chat("[[chunks=3 error_mid=1]] x", 1, &r);
    assert_true(r.complete);
    assert_non_null(strstr(r.body, "event: error\ndata: {\"type\":\"error\",\"error\":"
                                   "{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"));
    assert_null(strstr(r.body, "message_stop"));
    resp_free(&r);

    /* hang=1: the request is read, nothing ever comes back. */
    b = oa_body("[[hang=1]] x", 1);
    client *c = cl_open(P.port);
    struct timeval tv = {0, 300000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cl_send(c, "POST", "/v1/chat/completions", OA_HDRS, b);
    char x;
    assert_int_equal(recv(c->fd, &x, 1, 0), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    cl_close(c);
    free(b);
}

static void raw_exchange(const char *bytes, size_t n, resp *r)
{
    client *c = cl_open(P.port);
    send_all(c->fd, bytes, n);
    cl_read(c, r);
    cl_close(c);
}

static void test_hostile_http(void **state)
{
    (void)state;
    resp r;
    raw_exchange("GARBAGE\r\n\r\n", 11, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    raw_exchange("GET /v1/models HTTP/1.1\r\n\r\n", 27, &r); /* no Host */
    assert_int_equal(r.status, 400);
    resp_free(&r);

    size_t big = 20000;
    char *h = malloc(big + 64);
    int k = snprintf(h, 64, "GET /v1/models HTTP/1.1\r\nX-Pad: ");
    memset(h + k, 'a', big);
    raw_exchange(h, (size_t)k + big, &r);
    assert_int_equal(r.status, 431);
    resp_free(&r);
    free(h);

    const char *tl = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 9437184\r\n\r\n{";
    raw_exchange(tl, strlen(tl), &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);

    const char *both = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    raw_exchange(both, strlen(both), &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);

    /* A chunked request body, split oddly, with an extension and a trailer. */
    char *body = oa_body("chunky", 0);
    size_t bl = strlen(body);
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\n%.3s\r\n%zx\r\n%s\r\n"
                     "0\r\nX-Trailer: y\r\n\r\n", body, bl - 3, body + 3);
    raw_exchange(req, (size_t)n, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "echo: chunky"));
    resp_free(&r);
    free(body);

    exchange(P.port, "GET", "/nowhere", "", NULL, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    exchange(P.port, "GET", "/v1/chat/completions", "", NULL, &r);
    assert_int_equal(r.status, 405);
    resp_free(&r);
    exchange(P.port, "POST", "/v1/chat/completions", OA_HDRS, "{not json", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    body = oa_body("[[chunks=x]] y", 0);
    exchange(P.port, "POST", "/v1/chat/completions", OA_HDRS, body, &r);
    free(body);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "chunks"));
    resp_free(&r);
    /* Anthropic wants max_tokens. */
    exchange(P.port, "POST", "/v1/messages", AN_HDRS,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    /* Binary garbage after a good request: the first is answered, then 400. */
    raw_exchange("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n\x01\x02\xff\r\n\r\n", 42, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_auth(void **state)
{
    (void)state;
    proc k;
    assert_int_equal(start(&k, "sekret"), 0);
    char *b = oa_body("hi", 0);
    resp r;
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "\"code\":\"invalid_api_key\""));
    resp_free(&r);
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS "Authorization: Bearer sekret\r\n",
             b, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(b);
    b = an_body("hi", 0);
    exchange(k.port, "POST", "/v1/messages", AN_HDRS "x-api-key: wrong\r\n", b, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "authentication_error"));
    resp_free(&r);
    exchange(k.port, "POST", "/v1/messages", AN_HDRS "x-api-key: sekret\r\n", b, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(b);
    FILE *f = fopen(k.log, "r");
    assert_non_null(f);
    char line[4096];
    int t = 0, fl = 0;
    while (fgets(line, sizeof line, f)) {
        assert_null(strstr(line, "sekret"));
        t += strstr(line, "\"key_ok\":true") != NULL;
        fl += strstr(line, "\"key_ok\":false") != NULL;
    }
    fclose(f);
    assert_int_equal(t, 2);
    assert_int_equal(fl, 2);
    assert_int_equal(stop(&k), 0);
}

static void test_embeddings_models(void **state)
{
    (void)state;
    resp r1, r2;
    const char *b = "{\"model\":\"emb\",\"input\":[\"alpha beta\",\"gamma\"],\"dimensions\":4}";
    exchange(P.port, "POST", "/v1/embeddings", OA_HDRS, b, &r1);
    exchange(P.port, "POST", "/v1/embeddings", OA_HDRS, b, &r2);
    assert_int_equal(r1.status, 200);
    assert_int_equal(r1.len, r2.len);
    assert_memory_equal(r1.body, r2.body, r1.len);
    json_t *j = json_loadb(r1.body, r1.len, 0, NULL);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 2);
    json_t *v = json_object_get(json_array_get(data, 1), "embedding");
    assert_int_equal(json_array_size(v), 4);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
                                                        "prompt_tokens")), 3);
    json_decref(j);
    resp_free(&r1);
    resp_free(&r2);
    exchange(P.port, "GET", "/v1/models", "anthropic-version: 2023-06-01\r\n", NULL, &r1);
    assert_int_equal(r1.status, 200);
    assert_non_null(strstr(r1.body, "\"has_more\":false"));
    resp_free(&r1);
}

/* GET /v1/stats of k, decoded (the caller frees it). */
static json_t *ep_stats(const proc *k, const char *path)
{
    resp r;
    exchange(k->port, strcmp(path, "/v1/stats") ? "POST" : "GET", path, "", NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    assert_non_null(j);
    resp_free(&r);
    return j;
}

static long long jint(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    assert_non_null(v);
    return json_is_real(v) ? (long long)json_real_value(v) : (long long)json_integer_value(v);
}

/* A 429 of the limits mode: Retry-After in whole seconds, rounded up from retry-after-ms
 * (OpenAI's two headers), the provider's body naming the limit. */
static long long check_429(const resp *r, const char *type, const char *limit_words)
{
    char v[64];
    assert_int_equal(r->status, 429);
    assert_non_null(hdr(r, "Retry-After", v, sizeof v));
    long long secs = atoll(v);
    assert_non_null(hdr(r, "retry-after-ms", v, sizeof v));
    long long ms = atoll(v);
    assert_true(ms > 0 && ms <= 60000);
    assert_int_equal(secs, (ms + 999) / 1000);
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "rate_limit_exceeded");
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), limit_words));
    json_decref(j);
    return ms;
}

/* Provider-limits mode: 2 at once, 4 requests/min, 400 ms to the first delta. Two
 * streams in flight are admitted and a third is refused for concurrency (retry in 1 s);
 * under the limits every chat passes; the fifth in the minute is refused for RPM with the
 * wait until the window's oldest second slides out; Anthropic's dialect gets its own 429;
 * the counts say so. A second endpoint refuses for tokens per minute. */
static void test_limits(void **state)
{
    (void)state;
    proc k;
    /* 5 a minute: two admitted, one refused for concurrency (it counts, as OpenAI counts
     * unsuccessful requests), two more admitted, the sixth refused for RPM */
    const char *args[] = {"--max-concurrency", "2", "--rpm", "5", "--latency-ms", "400", NULL};
    assert_int_equal(start_with(&k, args), 0);
    char *b = oa_body("two words", 1);
    client *c1 = cl_open(k.port), *c2 = cl_open(k.port);
    cl_send(c1, "POST", "/v1/chat/completions", OA_HDRS, b);
    cl_send(c2, "POST", "/v1/chat/completions", OA_HDRS, b);
    json_t *st = NULL;
    for (int i = 0; i < 500; i++) { /* both admitted (in flight) before the third comes */
        json_decref(st);
        st = ep_stats(&k, "/v1/stats");
        if (jint(st, "in_flight") == 2)
            break;
        usleep(10000);
    }
    assert_int_equal(jint(st, "in_flight"), 2);
    json_decref(st);
    resp r, r1, r2;
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    assert_int_equal(check_429(&r, "requests", "concurrent requests"), 1000);
    resp_free(&r);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cl_read(c1, &r1);
    cl_read(c2, &r2);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(r1.status, 200);
    assert_int_equal(r2.status, 200);
    oa_sum sum;
    oa_summarise(&r1, &sum);
    assert_int_equal(sum.done, 1);
    assert_int_equal(sum.prompt, 4); /* 2 system + 2 user words */
    assert_int_equal(sum.completion, 3);
    resp_free(&r1);
    resp_free(&r2);
    cl_close(c1);
    cl_close(c2);
    /* under the limits: one at a time, each after its 400 ms */
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(b);
    char *ab = an_body("hi", 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    exchange(k.port, "POST", "/v1/messages", AN_HDRS, ab, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(r.status, 200);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms >= 399.0);
    resp_free(&r);
    /* the sixth in the minute: RPM, in both dialects */
    b = oa_body("[[chunks=2]] x", 0);
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    long long wait = check_429(&r, "requests", "requests per min (RPM): Limit 5, Used 5");
    assert_true(wait > 50000); /* the window's first second slides out in about a minute */
    resp_free(&r);
    free(b);
    exchange(k.port, "POST", "/v1/messages", AN_HDRS, ab, &r);
    assert_int_equal(r.status, 429);
    char v[64];
    assert_non_null(hdr(&r, "Retry-After", v, sizeof v));
    assert_true(atoll(v) > 50 && atoll(v) <= 60);
    assert_null(hdr(&r, "retry-after-ms", v, sizeof v));
    assert_non_null(strstr(r.body, "\"type\":\"rate_limit_error\""));
    resp_free(&r);
    free(ab);
    st = ep_stats(&k, "/v1/stats");
    assert_int_equal(jint(st, "admitted"), 4);
    assert_int_equal(jint(st, "refused"), 3);
    assert_int_equal(jint(st, "refused_concurrency"), 1);
    assert_int_equal(jint(st, "refused_requests"), 2);
    assert_int_equal(jint(st, "in_flight"), 0);
    assert_int_equal(jint(st, "peak_in_flight"), 2);
    assert_int_equal(jint(st, "window_requests"), 7); /* 4 admitted, 3 refused */
    /* four requests of 400 ms or more each held a slot */
    assert_true(jint(st, "busy_slot_ms") >= 1590);
    json_decref(st);
    st = ep_stats(&k, "/v1/stats/reset");
    assert_int_equal(jint(st, "admitted"), 0);
    assert_int_equal(jint(st, "refused"), 0);
    assert_int_equal(jint(st, "peak_in_flight"), 0);
    json_decref(st);
    assert_int_equal(stop(&k), 0);

    /* tokens per minute: 9 tokens (5 in, 4 out) pass, the next 9 would pass 12 */
    const char *targs[] = {"--tpm", "12", NULL};
    assert_int_equal(start_with(&k, targs), 0);
    b = oa_body("a b c", 0);
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    exchange(k.port, "POST", "/v1/chat/completions", OA_HDRS, b, &r);
    check_429(&r, "tokens", "tokens per min (TPM): Limit 12, Used 9, Requested 9");
    resp_free(&r);
    free(b);
    st = ep_stats(&k, "/v1/stats");
    assert_int_equal(jint(st, "tokens"), 9);
    assert_int_equal(jint(st, "refused_tokens"), 1);
    json_decref(st);
    assert_int_equal(stop(&k), 0);
}

/* 500 streams of 20 chunks spread over 2 s, all at once. */
static void test_concurrent_500(void **state)
{
    (void)state;
    enum { N = 500 };
    char *b = oa_body("[[chunks=20 spread_ms=2000]] load", 1);
    size_t rl;
    char *req = req_text("POST", "/v1/chat/completions", OA_HDRS, b, &rl);
    free(b);
    int fds[N];
    char *buf[N];
    size_t len[N];
    int done[N];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        client *c = cl_open(P.port);
        fds[i] = c->fd;
        free(c);
        send_all(fds[i], req, rl);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        buf[i] = malloc(65536);
        len[i] = 0;
        done[i] = 0;
    }
    free(req);
    struct pollfd pf[N];
    int left = N;
    while (left) {
        int m = 0;
        int idx[N];
        for (int i = 0; i < N; i++)
            if (!done[i]) {
                pf[m] = (struct pollfd){fds[i], POLLIN, 0};
                idx[m++] = i;
            }
        int pr = poll(pf, (nfds_t)m, 30000);
        assert_true(pr > 0);
        for (int k = 0; k < m; k++) {
            if (!pf[k].revents)
                continue;
            int i = idx[k];
            ssize_t got = recv(fds[i], buf[i] + len[i], 65535 - len[i], 0);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            assert_true(got > 0);
            len[i] += (size_t)got;
            if (len[i] >= 7 && memcmp(buf[i] + len[i] - 7, "\r\n0\r\n\r\n", 7) == 0) {
                done[i] = 1;
                left--;
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("500 streams x 20 chunks over 2 s: done in %.2f s\n", s);
    for (int i = 0; i < N; i++) {
        resp r = {0};
        size_t used = 0;
        assert_int_equal(parse_resp(buf[i], len[i], &r, &used), 1);
        oa_sum sum;
        oa_summarise(&r, &sum);
        assert_int_equal(sum.text_deltas, 20);
        assert_int_equal(sum.done, 1);
        resp_free(&r);
        free(buf[i]);
        close(fds[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_stream),
        cmocka_unit_test(test_openai_nonstream),
        cmocka_unit_test(test_anthropic_stream),
        cmocka_unit_test(test_status_then_success),
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_log_line),
        cmocka_unit_test(test_tools_and_splits),
        cmocka_unit_test(test_misbehaviours),
        cmocka_unit_test(test_hostile_http),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_embeddings_models),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_concurrent_500),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
