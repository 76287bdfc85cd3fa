/* libFuzzer target for aos-tool's MCP client: the bytes as one message for mcp_decode, as a
 * stream for the line splitter (whole and in chunks, which must agree), and as a server's
 * stdout after a valid initialize answer, with one tools/call waiting. */
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos/log.h"
#include "mcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_mcp: %s\n", what);
    abort();
}

static void check_why(const char *why, size_t cap)
{
    if (!memchr(why, 0, cap))
        broken("message not NUL-terminated");
}

static void fuzz_decode(const char *p, size_t n)
{
    mcp_msg m;
    char why[256];
    aos_err rc = mcp_decode(p, n, &m, why, sizeof why);
    check_why(why, sizeof why);
    if (rc != AOS_OK) {
        if (rc != AOS_ERR_USAGE || m.root)
            broken("a refusal that is not USAGE or that left a root");
        return;
    }
    switch (m.kind) {
    case MCP_MSG_REQUEST:
        if (!m.id || !m.method || !*m.method)
            broken("a request without id or method");
        break;
    case MCP_MSG_NOTIFICATION:
        if (m.id || !m.method)
            broken("a notification with an id or without a method");
        break;
    case MCP_MSG_RESPONSE:
        if (!m.result || !(json_is_integer(m.id) || json_is_string(m.id)))
            broken("a response without result or a good id");
        break;
    case MCP_MSG_ERROR:
        if (!m.err_message || !m.id)
            broken("an error without message or id");
        break;
    }
    json_decref(m.root);
}

static aos_err count(void *arg, const mcp_msg *msg, char *why, size_t whylen)
{
    (*(size_t *)arg)++;
    return AOS_OK;
}

/* Whole and chunked feeds see the same messages and end the same way. */
static void fuzz_reader(const char *p, size_t n)
{
    size_t chunk = n ? (unsigned char)p[0] % 17 + 1 : 1;
    char why[256];
    size_t c1 = 0, c2 = 0;
    mcp_reader *a = mcp_reader_new(4096), *b = mcp_reader_new(4096);
    if (!a || !b)
        broken("no memory");
    aos_err r1 = mcp_reader_feed(a, p, n, count, &c1, why, sizeof why);
    check_why(why, sizeof why);
    aos_err r2 = AOS_OK;
    for (size_t off = 0; off < n && r2 == AOS_OK; off += chunk)
        r2 = mcp_reader_feed(b, p + off, n - off < chunk ? n - off : chunk, count, &c2, why,
                             sizeof why);
    if (r1 != r2 || c1 != c2)
        broken("whole and chunked feeds disagree");
    if (r1 == AOS_OK && mcp_reader_pending(a) != mcp_reader_pending(b))
        broken("whole and chunked feeds hold different leftovers");
    mcp_reader_free(a);
    mcp_reader_free(b);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
} once;

static void done(void *arg, aos_err st, const json_t *result, const char *why)
{
    once *o = arg;
    if ((st == AOS_OK) != (result != NULL))
        broken("a result with an error, or none with OK");
    pthread_mutex_lock(&o->mu);
    if (++o->n != 1)
        broken("done ran twice");
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static void on_changed(void *arg) { (void)arg; }

/* The fake server's side: answers the first line (initialize) with a valid result, then
 * reads the client's writes to EOF so it never blocks on a full pipe. */
typedef struct {
    int from_client, to_client;
} server;

static void *serve(void *arg)
{
    static const char init[] =
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\","
        "\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"fz\",\"version\":\"1\"}}}\n";
    server *s = arg;
    char buf[4096];
    int answered = 0;
    ssize_t r;
    while ((r = read(s->from_client, buf, sizeof buf)) != 0) {
        if (r < 0)
            continue; /* EINTR */
        if (!answered && memchr(buf, '\n', (size_t)r)) {
            /* the reply comes after the request, as from a real server */
            if (write(s->to_client, init, sizeof init - 1) != (ssize_t)(sizeof init - 1))
                broken("init write");
            answered = 1;
        }
    }
    return NULL;
}

static void fuzz_session(const char *p, size_t n)
{
    int down[2], up[2]; /* down: client -> server, up: server -> client */
    if (pipe2(down, O_CLOEXEC) || pipe2(up, O_CLOEXEC))
        broken("pipe");
    fcntl(up[1], F_SETPIPE_SZ, 1 << 20);
    server srv = {down[0], up[1]};
    pthread_t th;
    if (pthread_create(&th, NULL, serve, &srv))
        broken("pthread_create");
    mcp_opts o = {.name = "fz", .to_fd = down[1], .from_fd = up[0], .line_max = 8192,
                  .init_timeout_ms = 10000, .on_list_changed = on_changed};
    mcp *m = NULL;
    char why[256];
    if (mcp_open(&o, &m, why, sizeof why) != AOS_OK)
        broken(why);
    once c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    json_t *args = json_pack("{s:s}", "q", "x");
    uint64_t id = mcp_call(m, "t", args, 10000, done, &c, why, sizeof why);
    json_decref(args);
    if (id != 2)
        broken("the first call is not id 2");
    /* what does not fit the pipe is dropped: the input is capped well below it anyway */
    fcntl(up[1], F_SETFL, O_NONBLOCK);
    ssize_t w = write(up[1], p, n);
    (void)w;
    close(up[1]); /* EOF after the bytes: the session dies unless it already did */
    pthread_mutex_lock(&c.mu);
    while (!c.n)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    mcp_cancel(m, id, "late"); /* finished: a no-op */
    mcp_free(m);               /* closes down[1]: the server thread sees EOF */
    pthread_join(th, NULL);
    close(down[0]);
    if (c.n != 1)
        broken("done did not run exactly once");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int logs;
    if (!logs) {
        setenv("AOS_LOG_LEVEL", "error", 0); /* a dead session per input: keep quiet */
        aos_log_init("fuzz_mcp");
        logs = 1;
    }
    const char *p = (const char *)data;
    const char *nl = memchr(p, '\n', size);
    fuzz_decode(p, nl ? (size_t)(nl - p) : size);
    fuzz_reader(p, size);
    fuzz_session(p, size);
    return 0;
}
