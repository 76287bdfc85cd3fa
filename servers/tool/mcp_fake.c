/* A fake MCP stdio server for mcp_test.c only: well-behaved by default, and misbehaving as
 * argv[1] (the whole session) or the tool name called (one call) picks. Never installed. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* argv[1] modes:
 *   normal          one page of tools; tools/call by tool name below
 *   pages           tools/list in two pages (cursor "p2")
 *   endless_pages   every page has a nextCursor
 *   badtool         a tool without inputSchema
 *   ooo             echo replies held until three are waiting, then sent newest first
 *   version V       initialize answers protocolVersion V
 *   noinit          initialize never answered
 *   init_eof        exits on initialize
 *   init_error      initialize answered with a JSON-RPC error
 *   init_noinfo     initialize result without serverInfo
 *   init_notjsonrpc initialize answered without "jsonrpc"
 *   init_garbage    a log line on stdout before the initialize answer
 *   deaf            after initialize, never reads stdin again (and never answers)
 *   closein         after initialize, closes stdin (writes to it fail: EPIPE), stays up
 * tools/call names: echo {message}, fail (isError), slow {ms}, hang, last_cancel, change
 * (list_changed), probe (server->client requests), crash, malformed, garbage, batch,
 * notjsonrpc, flood, flood_noline, bigline, unknownid, dup, badresult, rpcerror; any
 * other name: error -32602. */

#define LINE_CAP (64u << 20)

static const char *mode = "normal";
static int changed;          /* list_changed was sent: the list grew */
static char last_cancel[256] = "none";
static int initialized_seen;

typedef struct {
    long long due; /* ms */
    char *line;
} delayed;
static delayed later[64];
static size_t nlater;

static json_t *held[8]; /* ooo: echo replies waiting */
static size_t nheld;

static json_t *probe_id; /* the probe call waiting for our four requests' answers */
static char probe_text[256];
static int probe_answers;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_all(const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(1, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            exit(0); /* the client went away */
        s += w;
        n -= (size_t)w;
    }
}

static char *line_of(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        exit(2);
    size_t n = strlen(s);
    s = realloc(s, n + 2);
    if (!s)
        exit(2);
    s[n] = '\n';
    s[n + 1] = 0;
    return s;
}

static void out(json_t *j)
{
    char *s = line_of(j);
    write_all(s, strlen(s));
    free(s);
}

static void raw(const char *s) { write_all(s, strlen(s)); }

static json_t *reply(json_t *id, json_t *result)
{
    return json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result", result);
}

static json_t *error(json_t *id, int code, const char *msg)
{
    return json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                     code, "message", msg);
}

static json_t *text_result(const char *text, int is_error)
{
    return json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text", "text", text,
                     "isError", is_error);
}

static json_t *tool(const char *name)
{
    return json_pack("{s:s,s:s,s:{s:s,s:{}}}", "name", name, "description", "a fake tool",
                     "inputSchema", "type", "object", "properties");
}

static void list_tools(json_t *id, json_t *params)
{
    const char *cursor = json_string_value(json_object_get(params, "cursor"));
    json_t *res;
    if (!strcmp(mode, "pages")) {
        if (!cursor)
            res = json_pack("{s:[o,o],s:s}", "tools", tool("echo"), tool("fail"), "nextCursor",
                            "p2");
        else if (!strcmp(cursor, "p2"))
            res = json_pack("{s:[o,o]}", "tools", tool("slow"), tool("hang"));
        else {
            out(error(id, -32602, "bad cursor"));
            return;
        }
    } else if (!strcmp(mode, "endless_pages")) {
        res = json_pack("{s:[],s:s}", "tools", "nextCursor", "again");
    } else if (!strcmp(mode, "badtool")) {
        res = json_pack("{s:[o,{s:s}]}", "tools", tool("echo"), "name", "noschema");
    } else {
        res = json_pack("{s:[o,o,o]}", "tools", tool("echo"), tool("fail"), tool("slow"));
        if (changed)
            json_array_append_new(json_object_get(res, "tools"), tool("added"));
    }
    out(reply(id, res));
}

static void call(json_t *id, json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    json_t *args = json_object_get(params, "arguments");
    if (!name)
        name = "";
    if (!strcmp(name, "echo")) {
        const char *msg = json_string_value(json_object_get(args, "message"));
        if (!msg) {
            out(error(id, -32602, "echo: message is required"));
            return;
        }
        json_t *r = text_result(msg, 0);
        json_object_set_new(r, "structuredContent", json_pack("{s:s}", "echo", msg));
        if (!strcmp(mode, "ooo")) {
            held[nheld++] = reply(id, r);
            if (nheld == 3)
                while (nheld)
                    out(held[--nheld]);
            return;
        }
        out(reply(id, r));
    } else if (!strcmp(name, "fail")) {
        out(reply(id, text_result("failed on purpose", 1)));
    } else if (!strcmp(name, "slow")) {
        long long ms = json_integer_value(json_object_get(args, "ms"));
        if (nlater < sizeof later / sizeof later[0]) {
            later[nlater].due = now_ms() + ms;
            later[nlater++].line = line_of(reply(id, text_result("slow done", 0)));
        }
    } else if (!strcmp(name, "hang")) {
        /* never answered */
    } else if (!strcmp(name, "last_cancel")) {
        out(reply(id, text_result(last_cancel, 0)));
    } else if (!strcmp(name, "change")) {
        changed = 1;
        out(json_pack("{s:s,s:s}", "jsonrpc", "2.0", "method",
                      "notifications/tools/list_changed"));
        out(reply(id, text_result("changed", 0)));
    } else if (!strcmp(name, "probe")) {
        /* four requests of the server's, notifications between them; the call's answer
         * waits for the client's four answers */
        json_decref(probe_id);
        probe_id = json_incref(id);
        probe_text[0] = 0;
        probe_answers = 0;
        raw("{\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"ping\"}\n");
        raw("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\","
            "\"params\":{\"level\":\"info\",\"data\":\"probing\"}}\n");
        raw("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"sampling/createMessage\","
            "\"params\":{\"messages\":[],\"maxTokens\":5}}\n");
        raw("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\","
            "\"params\":{\"progressToken\":1,\"progress\":1}}\n");
        raw("{\"jsonrpc\":\"2.0\",\"id\":\"s3\",\"method\":\"roots/list\"}\n");
        raw("{\"jsonrpc\":\"2.0\",\"id\":\"s4\",\"method\":\"elicitation/create\","
            "\"params\":{\"message\":\"?\",\"requestedSchema\":{\"type\":\"object\"}}}\n");
    } else if (!strcmp(name, "crash")) {
        exit(3);
    } else if (!strcmp(name, "malformed")) {
        raw("{\"jsonrpc\":\"2.0\",\"id\":");
        raw("oops\n");
    } else if (!strcmp(name, "garbage")) {
        raw("Server listening on stdio\n");
    } else if (!strcmp(name, "batch")) {
        char *l = line_of(reply(id, text_result("batched", 0)));
        raw("[");
        l[strlen(l) - 1] = 0;
        raw(l);
        raw("]\n");
        free(l);
    } else if (!strcmp(name, "notjsonrpc")) {
        char *l = json_dumps(id, JSON_ENCODE_ANY);
        raw("{\"id\":");
        raw(l);
        raw(",\"result\":{\"content\":[]}}\n");
        free(l);
    } else if (!strcmp(name, "flood")) {
        for (int i = 0; i < 100000; i++)
            raw("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\","
                "\"params\":{\"level\":\"debug\",\"data\":\"flood\"}}\n");
        out(reply(id, text_result("after the flood", 0)));
    } else if (!strcmp(name, "flood_noline")) {
        static char x[65536];
        memset(x, 'x', sizeof x);
        for (;;)
            write_all(x, sizeof x); /* exits when the client closes */
    } else if (!strcmp(name, "bigline")) {
        static char x[1 << 20];
        memset(x, 'x', sizeof x);
        raw("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"data\":\"");
        for (int i = 0; i < 50; i++)
            write_all(x, sizeof x);
        raw("\"}}\n");
    } else if (!strcmp(name, "unknownid")) {
        raw("{\"jsonrpc\":\"2.0\",\"id\":999999,\"result\":{}}\n");
        raw("{\"jsonrpc\":\"2.0\",\"id\":\"nope\",\"result\":{}}\n");
        raw("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"?\"}}\n");
        raw("{\"jsonrpc\":\"2.0\",\"id\":-5,\"error\":{\"code\":-32600,\"message\":\"?\"}}\n");
        out(reply(id, text_result("after unknown ids", 0)));
    } else if (!strcmp(name, "dup")) {
        out(reply(id, text_result("first", 0)));
        out(reply(id, text_result("second", 0)));
    } else if (!strcmp(name, "badresult")) {
        out(json_pack("{s:s,s:O,s:s}", "jsonrpc", "2.0", "id", id, "result", "nope"));
    } else if (!strcmp(name, "rpcerror")) {
        out(error(id, -32603, "boom\ninside"));
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "Unknown tool: %.200s", name);
        out(error(id, -32602, msg));
    }
}

static void initialize(json_t *id, json_t *params)
{
    const char *offered = json_string_value(json_object_get(params, "protocolVersion"));
    const char *ver = offered ? offered : "2025-06-18";
    if (!strcmp(mode, "version"))
        ver = getenv("FAKE_VERSION") ? getenv("FAKE_VERSION") : "1999-01-01";
    if (!strcmp(mode, "noinit"))
        return;
    if (!strcmp(mode, "init_eof"))
        exit(0);
    if (!strcmp(mode, "init_error")) {
        out(error(id, -32603, "cannot start"));
        return;
    }
    json_t *res = json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s}}", "protocolVersion", ver,
                            "capabilities", "tools", "listChanged", 1, "serverInfo", "name",
                            "fake", "version", "1.0");
    if (!strcmp(mode, "init_noinfo"))
        json_object_del(res, "serverInfo");
    if (!strcmp(mode, "init_notjsonrpc")) {
        json_t *r = reply(id, res);
        json_object_del(r, "jsonrpc");
        out(r);
        return;
    }
    if (!strcmp(mode, "init_garbage"))
        raw("fake MCP server 1.0 starting\n");
    out(reply(id, res));
}

static void probe_answer(json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    json_t *err = json_object_get(msg, "error");
    json_t *res = json_object_get(msg, "result");
    char one[64];
    char *ids = json_dumps(id, JSON_ENCODE_ANY);
    if (err)
        snprintf(one, sizeof one, "%s=%lld ", ids ? ids : "?",
                 (long long)json_integer_value(json_object_get(err, "code")));
    else
        snprintf(one, sizeof one, "%s=%s ", ids ? ids : "?",
                 json_is_object(res) && !json_object_size(res) ? "ok" : "bad");
    free(ids);
    strncat(probe_text, one, sizeof probe_text - strlen(probe_text) - 1);
    if (++probe_answers == 4 && probe_id) {
        out(reply(probe_id, text_result(probe_text, 0)));
        json_decref(probe_id);
        probe_id = NULL;
    }
}

static void handle(const char *line, size_t len)
{
    json_t *msg = json_loadb(line, len, 0, NULL);
    if (!msg) {
        fprintf(stderr, "mcp_fake: the client sent a line that is not JSON\n");
        exit(4);
    }
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id");
    json_t *params = json_object_get(msg, "params");
    if (!method) {
        probe_answer(msg);
    } else if (!strcmp(method, "initialize")) {
        initialize(id, params);
        if (!strcmp(mode, "deaf"))
            for (;;)
                pause();
    } else if (!strcmp(method, "notifications/initialized")) {
        initialized_seen = 1;
        if (!strcmp(mode, "closein")) {
            close(0);
            for (;;)
                pause();
        }
    } else if (!strcmp(method, "notifications/cancelled")) {
        char *rid = json_dumps(json_object_get(params, "requestId"), JSON_ENCODE_ANY);
        const char *reason = json_string_value(json_object_get(params, "reason"));
        snprintf(last_cancel, sizeof last_cancel, "requestId=%s reason=%s", rid ? rid : "?",
                 reason ? reason : "");
        free(rid);
    } else if (!initialized_seen) {
        if (id)
            out(error(id, -32600, "not initialized"));
    } else if (!strcmp(method, "tools/list")) {
        list_tools(id, params);
    } else if (!strcmp(method, "tools/call")) {
        call(id, params);
    } else if (!strcmp(method, "ping")) {
        out(reply(id, json_object()));
    } else if (id) {
        out(error(id, -32601, "Method not found"));
    }
    json_decref(msg);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1)
        mode = argv[1];
    if (argc > 2 && !strcmp(mode, "version"))
        setenv("FAKE_VERSION", argv[2], 1);
    static char buf[65536];
    char *acc = NULL;
    size_t alen = 0;
    for (;;) {
        int timeout = -1;
        long long t = now_ms();
        for (size_t i = 0; i < nlater; i++) {
            if (later[i].due <= t) {
                raw(later[i].line);
                free(later[i].line);
                later[i--] = later[--nlater];
                continue;
            }
            int left = (int)(later[i].due - t);
            if (timeout < 0 || left < timeout)
                timeout = left;
        }
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, timeout) <= 0)
            continue;
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        char *nacc = realloc(acc, alen + (size_t)r);
        if (!nacc || alen + (size_t)r > LINE_CAP)
            return 2;
        acc = nacc;
        memcpy(acc + alen, buf, (size_t)r);
        alen += (size_t)r;
        size_t start = 0;
        for (size_t i = 0; i < alen; i++) {
            if (acc[i] == '\n') {
                handle(acc + start, i - start);
                start = i + 1;
            }
        }
        memmove(acc, acc + start, alen - start);
        alen -= start;
    }
}
