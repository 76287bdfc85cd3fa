/* Unit tests for the MCP client: the decoder and line splitter on their own, then sessions
 * with mcp_fake (argv[1]) as a real child process behaving well and badly. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mcp.h"

static const char *fake_path;

/* ---- helpers ---- */

typedef struct {
    pid_t pid;
    mcp *m;
    int to_fd, from_fd; /* as given to mcp_open (closed by it) */
} fake;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int dead_calls, changed;
    char dead_why[512];
} events;

static events ev = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, ""};

static void on_dead(void *arg, const char *why)
{
    events *e = arg;
    pthread_mutex_lock(&e->mu);
    e->dead_calls++;
    snprintf(e->dead_why, sizeof e->dead_why, "%s", why);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void on_changed(void *arg)
{
    events *e = arg;
    pthread_mutex_lock(&e->mu);
    e->changed++;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits until *counter reaches n (0 on time, -1 on timeout). */
static int wait_count(pthread_mutex_t *mu, pthread_cond_t *cv, int *counter, int n, unsigned ms)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    int rc = 0;
    pthread_mutex_lock(mu);
    while (*counter < n && rc == 0)
        rc = pthread_cond_timedwait(cv, mu, &ts);
    int ok = *counter >= n;
    pthread_mutex_unlock(mu);
    return ok ? 0 : -1;
}

static aos_err start_opts(fake *f, mcp_opts *o, const char *mode, const char *arg2, char *why,
                          size_t whylen)
{
    int in[2], outp[2];
    memset(f, 0, sizeof *f);
    if (pipe2(in, O_CLOEXEC) || pipe2(outp, O_CLOEXEC))
        fail_msg("pipe: %s", strerror(errno));
    f->pid = fork();
    if (f->pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no fake behind */
        dup2(in[0], 0);
        dup2(outp[1], 1);
        execl(fake_path, fake_path, mode, arg2, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    f->to_fd = o->to_fd = in[1];
    f->from_fd = o->from_fd = outp[0];
    pthread_mutex_lock(&ev.mu);
    ev.dead_calls = ev.changed = 0;
    ev.dead_why[0] = 0;
    pthread_mutex_unlock(&ev.mu);
    return mcp_open(o, &f->m, why, whylen);
}

static void start(fake *f, const char *mode)
{
    mcp_opts o = {.name = "fake", .on_dead = on_dead, .on_list_changed = on_changed,
                  .arg = &ev};
    char why[512];
    aos_err rc = start_opts(f, &o, mode, NULL, why, sizeof why);
    if (rc)
        fail_msg("mcp_open(%s): %s", mode, why);
}

static void stop(fake *f)
{
    mcp_free(f->m);
    f->m = NULL;
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
}

static int fd_open(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

/* One call's outcome. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n; /* times done ran */
    aos_err st;
    int is_error;
    char text[512];
    char structured[256];
    char why[512];
    pthread_t thread;
} got;

static void got_init(got *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void got_fini(got *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void done(void *arg, aos_err st, const json_t *result, const char *why)
{
    got *g = arg;
    pthread_mutex_lock(&g->mu);
    g->n++;
    g->st = st;
    g->thread = pthread_self();
    snprintf(g->why, sizeof g->why, "%s", why ? why : "");
    if (st == AOS_OK) {
        if (!result)
            g->why[0] = '!';
        g->is_error = json_is_true(json_object_get(result, "isError"));
        json_t *c = json_array_get(json_object_get(result, "content"), 0);
        const char *text = json_string_value(json_object_get(c, "text"));
        snprintf(g->text, sizeof g->text, "%s", text ? text : "");
        json_t *s = json_object_get(result, "structuredContent");
        char *d = s ? json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        snprintf(g->structured, sizeof g->structured, "%s", d ? d : "");
        free(d);
    }
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static uint64_t call(fake *f, const char *tool, const char *args_json, unsigned timeout_ms,
                     got *g)
{
    char why[512];
    json_t *args = args_json ? json_loads(args_json, 0, NULL) : NULL;
    if (args_json && !args)
        fail_msg("bad test JSON %s", args_json);
    uint64_t id = mcp_call(f->m, tool, args, timeout_ms, done, g, why, sizeof why);
    json_decref(args);
    if (!id)
        fail_msg("mcp_call(%s): %s", tool, why);
    return id;
}

static void wait_got(got *g, unsigned ms)
{
    if (wait_count(&g->mu, &g->cv, &g->n, 1, ms))
        fail_msg("no answer within %u ms", ms);
}

/* A call that must succeed with text. */
static void call_text(fake *f, const char *tool, const char *args, const char *want)
{
    got g;
    got_init(&g);
    call(f, tool, args, 10000, &g);
    wait_got(&g, 15000);
    if (g.st != AOS_OK)
        fail_msg("%s: %s: %s", tool, aos_err_name(g.st), g.why);
    if (!strstr(g.text, want))
        fail_msg("%s: text '%s' lacks '%s'", tool, g.text, want);
    got_fini(&g);
}

static void wait_dead(fake *f, unsigned ms)
{
    if (wait_count(&ev.mu, &ev.cv, &ev.dead_calls, 1, ms))
        fail_msg("session still alive after %u ms", ms);
    assert_true(mcp_dead(f->m));
}

/* ---- the decoder ---- */

static void test_decode_kinds(void **state)
{
    (void)state;
    mcp_msg m;
    char why[256];
    const char *r = "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"a\":1}}";
    assert_int_equal(mcp_decode(r, strlen(r), &m, why, sizeof why), AOS_OK);
    assert_int_equal(m.kind, MCP_MSG_RESPONSE);
    assert_int_equal(json_integer_value(m.id), 7);
    assert_int_equal(json_integer_value(json_object_get(m.result, "a")), 1);
    json_decref(m.root);

    const char *e = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
                    "\"message\":\"Parse error\",\"data\":[1]}}";
    assert_int_equal(mcp_decode(e, strlen(e), &m, why, sizeof why), AOS_OK);
    assert_int_equal(m.kind, MCP_MSG_ERROR);
    assert_true(json_is_null(m.id));
    assert_int_equal(m.err_code, -32700);
    assert_string_equal(m.err_message, "Parse error");
    assert_true(json_is_array(m.err_data));
    json_decref(m.root);

    const char *q = "{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"ping\"}\r";
    assert_int_equal(mcp_decode(q, strlen(q), &m, why, sizeof why), AOS_OK);
    assert_int_equal(m.kind, MCP_MSG_REQUEST);
    assert_string_equal(json_string_value(m.id), "s1");
    assert_string_equal(m.method, "ping");
    assert_null(m.params);
    json_decref(m.root);

    const char *n = "{\"method\":\"notifications/tools/list_changed\",\"params\":{},"
                    "\"jsonrpc\":\"2.0\"}";
    assert_int_equal(mcp_decode(n, strlen(n), &m, why, sizeof why), AOS_OK);
    assert_int_equal(m.kind, MCP_MSG_NOTIFICATION);
    assert_null(m.id);
    assert_string_equal(m.method, "notifications/tools/list_changed");
    assert_true(json_is_object(m.params));
    json_decref(m.root);
}

static void test_decode_refused(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        size_t len; /* 0: strlen */
        const char *want;
    } bad[] = {
        {"[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}]", 0, "batch"},
        {"[]", 0, "batch"},
        {"42", 0, "not a JSON object"},
        {"\"x\"", 0, "not a JSON object"},
        {"{\"id\":1,\"result\":{}}", 0, "jsonrpc"},
        {"{\"jsonrpc\":\"1.0\",\"id\":1,\"result\":{}}", 0, "jsonrpc"},
        {"{\"jsonrpc\":2.0,\"id\":1,\"result\":{}}", 0, "jsonrpc"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"result\":{}}", 0, "method together"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{\"code\":1,\"message\":\"\"}}",
         0, "both result and error"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1}", 0, "neither"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"result\":{}}", 0, "response id"},
        {"{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}", 0, "response id"},
        {"{\"jsonrpc\":\"2.0\",\"result\":{}}", 0, "response id"},
        {"{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{}}", 0, "response id"},
        {"{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"ping\"}", 0, "request id"},
        {"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", 0, "request id"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"\"}", 0, "method is not"},
        {"{\"jsonrpc\":\"2.0\",\"method\":7}", 0, "method is not"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":\"s\"}", 0, "params"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":null}", 0, "params"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"message\":\"m\"}}", 0, "code: integer"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"1\",\"message\":\"m\"}}", 0,
         "code: integer"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"boom\"}", 0, "code: integer"},
        {"{\"jsonrpc\":\"2.0\",\"id\":[1],\"error\":{\"code\":1,\"message\":\"m\"}}", 0,
         "error id"},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"result\":{}}", 0, "not JSON"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\\u0000b\"}", 0, "not JSON"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}", 0, "not JSON"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\0", 31, "NUL"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"x\"", 0, "not JSON"},
        {"Server started on stdio", 0, "not JSON"},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"x\"} {}", 0, "not JSON"},
        {"", 0, "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mcp_msg m;
        char why[256] = "";
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].line);
        aos_err rc = mcp_decode(bad[i].line, len, &m, why, sizeof why);
        if (rc != AOS_ERR_USAGE)
            fail_msg("%zu: %s accepted", i, bad[i].line);
        assert_null(m.root);
        if (!strstr(why, bad[i].want))
            fail_msg("%zu: message '%s' lacks '%s'", i, why, bad[i].want);
    }
}

typedef struct {
    int n;
    char methods[8][64];
} seen;

static aos_err collect(void *arg, const mcp_msg *msg, char *why, size_t whylen)
{
    seen *s = arg;
    if (s->n < 8)
        snprintf(s->methods[s->n], sizeof s->methods[0], "%s",
                 msg->method ? msg->method : "(response)");
    s->n++;
    return AOS_OK;
}

static void test_reader_split(void **state)
{
    (void)state;
    const char *text = "{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\n\n"
                       "{\"jsonrpc\":\"2.0\",\"method\":\"b\"}\r\n"
                       "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n"
                       "{\"jsonrpc\":\"2.0\",\"method\":\"c\"}";
    char why[256];
    /* byte by byte and all at once give the same messages */
    for (int whole = 0; whole < 2; whole++) {
        mcp_reader *r = mcp_reader_new(0);
        assert_non_null(r);
        seen s = {0};
        size_t n = strlen(text);
        if (whole)
            assert_int_equal(mcp_reader_feed(r, text, n, collect, &s, why, sizeof why), 0);
        else
            for (size_t i = 0; i < n; i++)
                assert_int_equal(mcp_reader_feed(r, text + i, 1, collect, &s, why, sizeof why),
                                 0);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.methods[0], "a");
        assert_string_equal(s.methods[1], "b");
        assert_string_equal(s.methods[2], "(response)");
        assert_int_equal(mcp_reader_pending(r), strlen("{\"jsonrpc\":\"2.0\",\"method\":\"c\"}"));
        assert_int_equal(mcp_reader_feed(r, "\n", 1, collect, &s, why, sizeof why), 0);
        assert_int_equal(s.n, 4);
        assert_string_equal(s.methods[3], "c");
        mcp_reader_free(r);
    }
}

static void test_reader_limits(void **state)
{
    (void)state;
    char why[256];
    seen s = {0};
    /* a line of exactly line_max bytes passes, one more byte is fatal */
    const char *ok = "{\"jsonrpc\":\"2.0\",\"method\":\"abc\"}"; /* 32 bytes */
    mcp_reader *r = mcp_reader_new(32);
    assert_int_equal(mcp_reader_feed(r, ok, 32, collect, &s, why, sizeof why), 0);
    assert_int_equal(mcp_reader_feed(r, "\n", 1, collect, &s, why, sizeof why), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(mcp_reader_feed(r, ok, 32, collect, &s, why, sizeof why), 0);
    assert_int_equal(mcp_reader_feed(r, " ", 1, collect, &s, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "line longer than 32 bytes"));
    /* broken for good */
    assert_int_equal(mcp_reader_feed(r, "\n", 1, collect, &s, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_int_equal(s.n, 1);
    mcp_reader_free(r);

    /* a long line given whole with its newline is refused too */
    r = mcp_reader_new(16);
    assert_int_equal(mcp_reader_feed(r, "{\"jsonrpc\":\"2.0\",\"method\":\"abc\"}\n", 33, collect,
                                     &s, why, sizeof why),
                     AOS_ERR_TOO_BIG);
    mcp_reader_free(r);

    /* an undecodable line is fatal and names its line */
    r = mcp_reader_new(0);
    const char *two = "{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\nnot json\n"
                      "{\"jsonrpc\":\"2.0\",\"method\":\"b\"}\n";
    s.n = 0;
    assert_int_equal(mcp_reader_feed(r, two, strlen(two), collect, &s, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(s.n, 1);
    assert_non_null(strstr(why, "line 2:"));
    assert_int_equal(mcp_reader_feed(r, "{}\n", 3, collect, &s, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(s.n, 1);
    mcp_reader_free(r);
    mcp_reader_free(NULL);
}

/* ---- sessions ---- */

static void test_open_and_call(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    assert_string_equal(mcp_protocol(f.m), "2025-06-18");
    assert_string_equal(json_string_value(json_object_get(mcp_server_info(f.m), "name")),
                        "fake");
    assert_true(json_is_object(json_object_get(mcp_server_capabilities(f.m), "tools")));
    assert_false(mcp_dead(f.m));
    assert_string_equal(mcp_dead_why(f.m), "");

    char why[512];
    json_t *tools = NULL;
    assert_int_equal(mcp_list_tools(f.m, 5000, &tools, why, sizeof why), AOS_OK);
    assert_int_equal(json_array_size(tools), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tools, 0), "name")),
                        "echo");
    json_decref(tools);

    got g;
    got_init(&g);
    call(&f, "echo", "{\"message\":\"hi there\"}", 5000, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_OK);
    assert_string_equal(g.text, "hi there");
    assert_string_equal(g.structured, "{\"echo\":\"hi there\"}");
    assert_false(g.is_error);
    got_fini(&g);

    got_init(&g);
    call(&f, "fail", NULL, 5000, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_OK);
    assert_true(g.is_error);
    assert_string_equal(g.text, "failed on purpose");
    got_fini(&g);

    /* JSON-RPC errors: invalid params is USAGE, anything else INTERNAL, with the server's
     * message made safe (its newline is gone) */
    got_init(&g);
    call(&f, "nosuch", NULL, 5000, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_ERR_USAGE);
    assert_non_null(strstr(g.why, "Unknown tool: nosuch"));
    got_fini(&g);
    got_init(&g);
    call(&f, "rpcerror", NULL, 5000, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_ERR_INTERNAL);
    assert_non_null(strstr(g.why, "-32603"));
    assert_non_null(strstr(g.why, "boom?inside"));
    got_fini(&g);

    /* a result that is not an object is refused, the session lives on */
    got_init(&g);
    call(&f, "badresult", NULL, 5000, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_ERR_PROTO);
    got_fini(&g);
    assert_false(mcp_dead(f.m));

    /* bad arguments to mcp_call send nothing */
    json_t *arr = json_array();
    assert_int_equal(mcp_call(f.m, "echo", arr, 0, done, &g, why, sizeof why), 0);
    assert_int_equal(mcp_call(f.m, "", NULL, 0, done, &g, why, sizeof why), 0);
    json_decref(arr);
    call_text(&f, "echo", "{\"message\":\"still here\"}", "still here");
    stop(&f);
    assert_int_equal(ev.dead_calls, 0); /* mcp_free is not a death */
}

static void test_versions(void **state)
{
    (void)state;
    const char *ok[] = {"2024-11-05", "2025-03-26", "2025-06-18"};
    for (size_t i = 0; i < 3; i++) {
        fake f;
        mcp_opts o = {.name = "v"};
        char why[512];
        if (start_opts(&f, &o, "version", ok[i], why, sizeof why))
            fail_msg("%s refused: %s", ok[i], why);
        assert_string_equal(mcp_protocol(f.m), ok[i]);
        call_text(&f, "echo", "{\"message\":\"v\"}", "v");
        stop(&f);
    }
    const char *bad[] = {"1999-01-01", "2025-06-19", ""};
    for (size_t i = 0; i < 3; i++) {
        fake f;
        mcp_opts o = {.name = "v"};
        char why[512];
        assert_int_equal(start_opts(&f, &o, "version", bad[i], why, sizeof why), AOS_ERR_PROTO);
        assert_null(f.m);
        if (!strstr(why, bad[i]) || !strstr(why, "2025-06-18"))
            fail_msg("message '%s'", why);
        assert_false(fd_open(f.to_fd));
        assert_false(fd_open(f.from_fd));
        stop(&f);
    }
}

static void test_open_failures(void **state)
{
    (void)state;
    static const struct {
        const char *mode;
        aos_err rc;
        const char *want;
    } cases[] = {
        {"noinit", AOS_ERR_TIMEOUT, "no answer within 300 ms"},
        {"init_eof", AOS_ERR_UNAVAILABLE, "closed its stdout"},
        {"init_error", AOS_ERR_INTERNAL, "cannot start"},
        {"init_noinfo", AOS_ERR_PROTO, "serverInfo"},
        {"init_notjsonrpc", AOS_ERR_UNAVAILABLE, "jsonrpc"},
        {"init_garbage", AOS_ERR_UNAVAILABLE, "not JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake f;
        mcp_opts o = {.name = "bad", .init_timeout_ms = 300, .on_dead = on_dead, .arg = &ev};
        char why[512];
        aos_err rc = start_opts(&f, &o, cases[i].mode, NULL, why, sizeof why);
        if (rc != cases[i].rc || !strstr(why, cases[i].want))
            fail_msg("%s: %s: %s", cases[i].mode, aos_err_name(rc), why);
        assert_null(f.m);
        assert_false(fd_open(f.to_fd));
        assert_int_equal(ev.dead_calls, 0); /* a failed open reports by its return */
        stop(&f);
    }
    mcp *m = (mcp *)1;
    mcp_opts o = {.to_fd = -1, .from_fd = -1};
    char why[128];
    assert_int_equal(mcp_open(&o, &m, why, sizeof why), AOS_ERR_USAGE);
    assert_null(m);
}

static void test_pages(void **state)
{
    (void)state;
    fake f;
    char why[512];
    json_t *tools = NULL;
    start(&f, "pages");
    assert_int_equal(mcp_list_tools(f.m, 5000, &tools, why, sizeof why), AOS_OK);
    const char *want[] = {"echo", "fail", "slow", "hang"};
    assert_int_equal(json_array_size(tools), 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(tools, i), "name")), want[i]);
    json_decref(tools);
    stop(&f);

    start(&f, "endless_pages");
    assert_int_equal(mcp_list_tools(f.m, 20000, &tools, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_null(tools);
    assert_non_null(strstr(why, "64 pages"));
    stop(&f);

    start(&f, "badtool");
    assert_int_equal(mcp_list_tools(f.m, 5000, &tools, why, sizeof why), AOS_ERR_PROTO);
    assert_null(tools);
    assert_non_null(strstr(why, "noschema"));
    stop(&f);
}

static void test_out_of_order(void **state)
{
    (void)state;
    fake f;
    start(&f, "ooo");
    got g[3];
    const char *msgs[] = {"{\"message\":\"one\"}", "{\"message\":\"two\"}",
                          "{\"message\":\"three\"}"};
    const char *want[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        got_init(&g[i]);
        call(&f, "echo", msgs[i], 5000, &g[i]);
    }
    for (int i = 0; i < 3; i++) {
        wait_got(&g[i], 5000);
        assert_int_equal(g[i].st, AOS_OK);
        assert_string_equal(g[i].text, want[i]);
        assert_int_equal(g[i].n, 1);
        got_fini(&g[i]);
    }
    stop(&f);
}

static void test_server_requests(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    /* ping answered {}, sampling, roots and elicitation refused with -32601, the
     * notifications between them ignored; string and integer ids both echoed */
    call_text(&f, "probe", NULL, "\"s1\"=ok 2=-32601 \"s3\"=-32601 \"s4\"=-32601");
    assert_false(mcp_dead(f.m));
    stop(&f);
}

static void test_list_changed(void **state)
{
    (void)state;
    fake f;
    char why[512];
    json_t *tools = NULL;
    start(&f, "normal");
    call_text(&f, "change", NULL, "changed");
    assert_int_equal(wait_count(&ev.mu, &ev.cv, &ev.changed, 1, 5000), 0);
    assert_int_equal(mcp_list_tools(f.m, 5000, &tools, why, sizeof why), AOS_OK);
    assert_int_equal(json_array_size(tools), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tools, 3), "name")),
                        "added");
    json_decref(tools);
    stop(&f);
}

static void test_crash(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    got g;
    got_init(&g);
    call(&f, "crash", NULL, 0, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_ERR_UNAVAILABLE);
    assert_non_null(strstr(g.why, "closed its stdout"));
    wait_dead(&f, 5000);
    assert_non_null(strstr(ev.dead_why, "closed its stdout"));
    assert_non_null(strstr(mcp_dead_why(f.m), "closed its stdout"));
    char why[512];
    assert_int_equal(mcp_call(f.m, "echo", NULL, 0, done, &g, why, sizeof why), 0);
    assert_non_null(strstr(why, "dead"));
    json_t *tools = (json_t *)1;
    assert_int_equal(mcp_list_tools(f.m, 1000, &tools, why, sizeof why), AOS_ERR_UNAVAILABLE);
    assert_null(tools);
    assert_int_equal(g.n, 1);
    got_fini(&g);
    stop(&f);
    assert_int_equal(ev.dead_calls, 1);
}

static void test_timeout_and_cancel(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    got g;
    char want[128];

    /* a timeout fails the call and tells the server */
    got_init(&g);
    uint64_t id = call(&f, "hang", NULL, 200, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_ERR_TIMEOUT);
    assert_non_null(strstr(g.why, "200 ms"));
    got_fini(&g);
    snprintf(want, sizeof want, "requestId=%llu reason=timed out", (unsigned long long)id);
    call_text(&f, "last_cancel", NULL, want);

    /* a cancel runs done at once, here; the late reply is dropped */
    got_init(&g);
    id = call(&f, "slow", "{\"ms\":300}", 0, &g);
    mcp_cancel(f.m, id, "user left");
    assert_int_equal(g.n, 1);
    assert_int_equal(g.st, AOS_ERR_CANCELLED);
    assert_true(pthread_equal(g.thread, pthread_self()));
    assert_non_null(strstr(g.why, "user left"));
    snprintf(want, sizeof want, "requestId=%llu reason=user left", (unsigned long long)id);
    call_text(&f, "last_cancel", NULL, want);
    usleep(500 * 1000);
    assert_int_equal(g.n, 1);
    mcp_cancel(f.m, id, "again");   /* finished: no-op */
    mcp_cancel(f.m, 424242, NULL);  /* unknown: no-op */
    assert_int_equal(g.n, 1);
    got_fini(&g);

    /* a slow call within its timeout is answered */
    got_init(&g);
    call(&f, "slow", "{\"ms\":100}", 5000, &g);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_OK);
    assert_string_equal(g.text, "slow done");
    got_fini(&g);

    /* mcp_free fails what is pending, on the caller's thread */
    got_init(&g);
    call(&f, "hang", NULL, 0, &g);
    stop(&f);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.st, AOS_ERR_UNAVAILABLE);
    assert_true(pthread_equal(g.thread, pthread_self()));
    got_fini(&g);
}

static void test_flood(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    call_text(&f, "flood", NULL, "after the flood");
    call_text(&f, "echo", "{\"message\":\"alive\"}", "alive");
    stop(&f);
}

/* Each of these lines kills the session: the call fails UNAVAILABLE, on_dead names why. */
static void test_fatal_lines(void **state)
{
    (void)state;
    static const struct {
        const char *tool;
        size_t line_max;
        const char *want;
    } cases[] = {
        {"malformed", 0, "not JSON"},
        {"garbage", 0, "not JSON"},
        {"batch", 0, "batch"},
        {"notjsonrpc", 0, "jsonrpc"},
        {"flood_noline", 1u << 20, "line longer than 1048576 bytes"},
        {"bigline", 0, "line longer than 8388608 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake f;
        mcp_opts o = {.name = "fatal", .line_max = cases[i].line_max, .on_dead = on_dead,
                      .arg = &ev};
        char why[512];
        if (start_opts(&f, &o, "normal", NULL, why, sizeof why))
            fail_msg("open: %s", why);
        got g;
        got_init(&g);
        call(&f, cases[i].tool, NULL, 0, &g);
        wait_got(&g, 20000);
        assert_int_equal(g.st, AOS_ERR_UNAVAILABLE);
        wait_dead(&f, 5000);
        if (!strstr(ev.dead_why, cases[i].want))
            fail_msg("%s: '%s' lacks '%s'", cases[i].tool, ev.dead_why, cases[i].want);
        got_fini(&g);
        stop(&f);
        assert_int_equal(ev.dead_calls, 1);
    }
}

static void test_unknown_and_duplicate_ids(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    call_text(&f, "unknownid", NULL, "after unknown ids");
    got g;
    got_init(&g);
    call(&f, "dup", NULL, 5000, &g);
    wait_got(&g, 5000);
    assert_string_equal(g.text, "first");
    call_text(&f, "echo", "{\"message\":\"after dup\"}", "after dup");
    assert_int_equal(g.n, 1);
    got_fini(&g);
    assert_false(mcp_dead(f.m));
    stop(&f);
}

static void test_deaf_server(void **state)
{
    (void)state;
    fake f;
    start(&f, "deaf");
    /* a 1 MiB argument cannot fit the pipe of a server that reads nothing: the write gives
     * up after MCP_WRITE_MS and the session is dead */
    size_t big = 1u << 20;
    char *s = malloc(big + 1);
    memset(s, 'a', big);
    s[big] = 0;
    json_t *args = json_pack("{s:s}", "message", s);
    free(s);
    got g;
    got_init(&g);
    char why[512] = "";
    time_t t0 = time(NULL);
    uint64_t id = mcp_call(f.m, "echo", args, 0, done, &g, why, sizeof why);
    json_decref(args);
    if (id) {
        wait_got(&g, 10000);
        assert_int_equal(g.st, AOS_ERR_UNAVAILABLE);
    } else {
        assert_non_null(strstr(why, "read nothing"));
        assert_int_equal(g.n, 0);
    }
    assert_true(time(NULL) - t0 >= 4);
    wait_dead(&f, 5000);
    assert_non_null(strstr(ev.dead_why, "read nothing"));
    got_fini(&g);
    stop(&f);
}

static void test_closed_stdin(void **state)
{
    (void)state;
    fake f;
    start(&f, "closein");
    /* once the fake has closed its stdin (after notifications/initialized), a write gets
     * EPIPE, which SIGPIPE would have turned into this test's death */
    char why[512] = "";
    for (int i = 0; i < 100 && !mcp_dead(f.m); i++) {
        got g;
        got_init(&g);
        uint64_t id = mcp_call(f.m, "echo", NULL, 100, done, &g, why, sizeof why);
        if (id) {
            wait_got(&g, 5000);
            assert_true(g.st == AOS_ERR_TIMEOUT || g.st == AOS_ERR_UNAVAILABLE);
        } else {
            assert_non_null(strstr(why, "Broken pipe"));
        }
        got_fini(&g);
    }
    wait_dead(&f, 5000);
    assert_non_null(strstr(ev.dead_why, "Broken pipe"));
    stop(&f);
}

static void test_killed_server(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    got g;
    got_init(&g);
    call(&f, "hang", NULL, 0, &g);
    kill(f.pid, SIGKILL);
    wait_got(&g, 5000);
    assert_int_equal(g.st, AOS_ERR_UNAVAILABLE);
    wait_dead(&f, 5000);
    got_fini(&g);
    stop(&f);
}

static void test_pending_cap(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    got *g = calloc(MCP_PENDING_MAX + 1, sizeof *g);
    assert_non_null(g);
    for (unsigned i = 0; i < MCP_PENDING_MAX; i++) {
        got_init(&g[i]);
        call(&f, "hang", NULL, 0, &g[i]);
    }
    char why[512];
    got_init(&g[MCP_PENDING_MAX]);
    assert_int_equal(mcp_call(f.m, "echo", NULL, 0, done, &g[MCP_PENDING_MAX], why, sizeof why),
                     0);
    assert_non_null(strstr(why, "in flight"));
    stop(&f);
    for (unsigned i = 0; i <= MCP_PENDING_MAX; i++) {
        assert_int_equal(g[i].n, i < MCP_PENDING_MAX ? 1 : 0);
        if (i < MCP_PENDING_MAX)
            assert_int_equal(g[i].st, AOS_ERR_UNAVAILABLE);
        got_fini(&g[i]);
    }
    free(g);
}

/* Many threads calling on one session: every answer reaches its own caller. */
typedef struct {
    fake *f;
    int t;
    int bad;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 50; i++) {
        char args[64], want[32];
        snprintf(want, sizeof want, "t%d-%d", w->t, i);
        snprintf(args, sizeof args, "{\"message\":\"%s\"}", want);
        got g;
        got_init(&g);
        json_t *a = json_loads(args, 0, NULL);
        char why[256];
        if (!mcp_call(w->f->m, "echo", a, 10000, done, &g, why, sizeof why))
            w->bad++;
        else if (wait_count(&g.mu, &g.cv, &g.n, 1, 15000) || g.st || strcmp(g.text, want))
            w->bad++;
        json_decref(a);
        got_fini(&g);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    fake f;
    start(&f, "normal");
    pthread_t th[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){&f, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    stop(&f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tool_mcp PATH-OF-mcp_fake\n");
        return 2;
    }
    fake_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_kinds),
        cmocka_unit_test(test_decode_refused),
        cmocka_unit_test(test_reader_split),
        cmocka_unit_test(test_reader_limits),
        cmocka_unit_test(test_open_and_call),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_open_failures),
        cmocka_unit_test(test_pages),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_server_requests),
        cmocka_unit_test(test_list_changed),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_timeout_and_cancel),
        cmocka_unit_test(test_flood),
        cmocka_unit_test(test_fatal_lines),
        cmocka_unit_test(test_unknown_and_duplicate_ids),
        cmocka_unit_test(test_deaf_server),
        cmocka_unit_test(test_closed_stdin),
        cmocka_unit_test(test_killed_server),
        cmocka_unit_test(test_pending_cap),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
