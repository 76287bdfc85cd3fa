/* The MCP client against the reference servers from npm (server-everything, server-filesystem)
 * run unsandboxed as plain children; exits 77 when tools/mcp-servers.sh cannot reach npm. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mcp.h"

static int failures;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

typedef struct {
    pid_t pid;
    mcp *m;
} child;

/* Runs the install script; its stdout's two lines are the entry scripts. Returns its exit
 * status (or -1). */
static int install(const char *script, const char *dir, char *everything, char *filesystem,
                   size_t cap)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(p[1], 1);
        execl("/bin/bash", "bash", script, dir, (char *)NULL);
        _exit(126);
    }
    close(p[1]);
    char buf[2 * PATH_MAX + 4];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(p[0], buf + n, sizeof buf - 1 - n)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        n += (size_t)r;
    }
    buf[n] = 0;
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st))
        return -1;
    char *nl = strchr(buf, '\n');
    if (nl) {
        *nl = 0;
        char *second = nl + 1;
        char *nl2 = strchr(second, '\n');
        if (nl2)
            *nl2 = 0;
        /* copied with their lengths checked: a path never is cut short silently */
        if (strlen(buf) >= cap || strlen(second) >= cap)
            return -1;
        memcpy(everything, buf, strlen(buf) + 1);
        memcpy(filesystem, second, strlen(second) + 1);
    }
    return WEXITSTATUS(st);
}

static int spawn(child *c, char *const argv[], const char *name)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return -1;
    c->pid = fork();
    if (c->pid < 0)
        return -1;
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    mcp_opts o = {.name = name, .to_fd = in[1], .from_fd = out[0], .init_timeout_ms = 30000};
    char why[512];
    aos_err rc = mcp_open(&o, &c->m, why, sizeof why);
    CHECK(rc == AOS_OK, "%s: mcp_open: %s", name, why);
    return rc == AOS_OK ? 0 : -1;
}

static void reap(child *c)
{
    mcp_free(c->m);
    c->m = NULL;
    if (c->pid > 0) {
        kill(c->pid, SIGTERM);
        waitpid(c->pid, NULL, 0);
    }
}

/* A blocking call on top of mcp_call. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    aos_err st;
    json_t *result;
    char why[512];
} waiter;

static void done(void *arg, aos_err st, const json_t *result, const char *why)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    w->result = result ? json_incref((json_t *)result) : NULL;
    snprintf(w->why, sizeof w->why, "%s", why ? why : "");
    w->finished = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* *result is the caller's (json_decref) when AOS_OK. */
static aos_err call(mcp *m, const char *tool, const char *args_json, json_t **result,
                    char *why, size_t whylen)
{
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, AOS_OK, NULL, ""};
    json_t *args = json_loads(args_json, 0, NULL);
    uint64_t id = mcp_call(m, tool, args, 30000, done, &w, why, whylen);
    json_decref(args);
    *result = NULL;
    if (!id)
        return AOS_ERR_INTERNAL;
    pthread_mutex_lock(&w.mu);
    while (!w.finished)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    snprintf(why, whylen, "%s", w.why);
    *result = w.result;
    return w.st;
}

/* All text content of a result joined, in a static buffer. */
static const char *texts(const json_t *result)
{
    static char buf[8192];
    buf[0] = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(result, "content"), i, c) {
        const char *t = json_string_value(json_object_get(c, "text"));
        if (t)
            strncat(buf, t, sizeof buf - strlen(buf) - 1);
    }
    return buf;
}

static int has_tool(const json_t *tools, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (n && !strcmp(n, name))
            return 1;
    }
    return 0;
}

static void everything(const char *entry)
{
    child c = {0};
    char *argv[] = {"node", (char *)entry, "stdio", NULL};
    if (spawn(&c, argv, "everything")) {
        reap(&c);
        return;
    }
    const char *v = mcp_protocol(c.m);
    CHECK(v && !strcmp(v, "2025-06-18"), "everything negotiated %s", v ? v : "(null)");
    fprintf(stderr, "everything: protocol %s, server %s\n", v,
            json_string_value(json_object_get(mcp_server_info(c.m), "name")));

    char why[512];
    json_t *tools = NULL, *res = NULL;
    aos_err rc = mcp_list_tools(c.m, 30000, &tools, why, sizeof why);
    CHECK(rc == AOS_OK, "tools/list: %s", why);
    CHECK(json_array_size(tools) >= 5, "only %zu tools", json_array_size(tools));
    CHECK(has_tool(tools, "echo"), "no echo tool");
    int has_sum = has_tool(tools, "get-sum");
    fprintf(stderr, "everything: %zu tools\n", json_array_size(tools));
    json_decref(tools);

    rc = call(c.m, "echo", "{\"message\":\"hi\"}", &res, why, sizeof why);
    CHECK(rc == AOS_OK, "echo: %s", why);
    CHECK(strstr(texts(res), "hi") != NULL, "echo said '%s'", texts(res));
    CHECK(!json_is_true(json_object_get(res, "isError")), "echo isError");
    json_decref(res);

    if (has_sum) {
        rc = call(c.m, "get-sum", "{\"a\":2,\"b\":40}", &res, why, sizeof why);
        CHECK(rc == AOS_OK, "get-sum: %s", why);
        CHECK(strstr(texts(res), "42") != NULL, "get-sum said '%s'", texts(res));
        json_decref(res);
    }

    /* a missing argument: a tool error (isError) or a JSON-RPC error, never a success */
    rc = call(c.m, "echo", "{}", &res, why, sizeof why);
    CHECK((rc == AOS_OK && json_is_true(json_object_get(res, "isError"))) ||
              rc == AOS_ERR_USAGE || rc == AOS_ERR_INTERNAL,
          "echo {} gave %s: %s", aos_err_name(rc), why);
    fprintf(stderr, "everything: echo {} -> %s %s\n", aos_err_name(rc),
            rc ? why : texts(res));
    json_decref(res);
    rc = call(c.m, "no_such_tool", "{}", &res, why, sizeof why);
    CHECK((rc == AOS_OK && json_is_true(json_object_get(res, "isError"))) ||
              rc == AOS_ERR_USAGE || rc == AOS_ERR_INTERNAL,
          "no_such_tool gave %s: %s", aos_err_name(rc), why);
    json_decref(res);
    CHECK(!mcp_dead(c.m), "everything died: %s", mcp_dead_why(c.m));
    reap(&c);
}

static void filesystem(const char *entry)
{
    char dir[] = "/tmp/aos-mcp-real-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp: %s", strerror(errno));
        return;
    }
    char file[sizeof dir + 16];
    snprintf(file, sizeof file, "%s/hello.txt", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL, "create %s", file);
    if (f) {
        fputs("hello from aos\n", f);
        fclose(f);
    }
    child c = {0};
    char *argv[] = {"node", (char *)entry, dir, NULL};
    if (spawn(&c, argv, "filesystem") == 0) {
        char why[512];
        json_t *tools = NULL, *res = NULL;
        aos_err rc = mcp_list_tools(c.m, 30000, &tools, why, sizeof why);
        CHECK(rc == AOS_OK, "tools/list: %s", why);
        CHECK(has_tool(tools, "read_file") || has_tool(tools, "read_text_file"),
              "no read_file tool");
        fprintf(stderr, "filesystem: protocol %s, %zu tools\n", mcp_protocol(c.m),
                json_array_size(tools));
        const char *tool = has_tool(tools, "read_text_file") ? "read_text_file" : "read_file";
        json_decref(tools);
        char args[sizeof file + 32];
        snprintf(args, sizeof args, "{\"path\":\"%s\"}", file);
        rc = call(c.m, tool, args, &res, why, sizeof why);
        CHECK(rc == AOS_OK, "%s: %s", tool, why);
        CHECK(strstr(texts(res), "hello from aos") != NULL, "%s said '%s'", tool, texts(res));
        json_decref(res);
        /* outside the allowed directory: refused one way or the other */
        rc = call(c.m, tool, "{\"path\":\"/etc/passwd\"}", &res, why, sizeof why);
        CHECK((rc == AOS_OK && json_is_true(json_object_get(res, "isError"))) ||
                  rc == AOS_ERR_USAGE || rc == AOS_ERR_INTERNAL,
              "/etc/passwd gave %s", aos_err_name(rc));
        CHECK(!strstr(texts(res), "root:"), "read outside its directory");
        json_decref(res);
    }
    reap(&c);
    unlink(file);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_tool_mcp_real tools/mcp-servers.sh NPM-DIR\n");
        return 2;
    }
    char ev[PATH_MAX] = "", fs[PATH_MAX] = "";
    int rc = install(argv[1], argv[2], ev, fs, sizeof ev);
    if (rc == 77) {
        fprintf(stderr, "test_tool_mcp_real: skipped: npm cannot reach its registry, so the "
                        "reference MCP servers cannot be installed\n");
        return 77;
    }
    if (rc != 0 || !ev[0] || !fs[0]) {
        fprintf(stderr, "test_tool_mcp_real: %s failed (%d)\n", argv[1], rc);
        return 1;
    }
    everything(ev);
    filesystem(fs);
    if (failures) {
        fprintf(stderr, "test_tool_mcp_real: %d check(s) failed\n", failures);
        return 1;
    }
    fprintf(stderr, "test_tool_mcp_real: all checks passed\n");
    return 0;
}
