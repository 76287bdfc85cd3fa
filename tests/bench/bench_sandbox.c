/* B6: what the tool sandbox costs. Spawn-to-exit of /bin/true in the full sandbox beside
 * plain fork/exec and a bare bwrap, tool runs per second through aosd, catalogue tokens. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <grp.h>
#include <pwd.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "jail.h"
#include "tool.pb-c.h"

extern char **environ;

#define SPAWNS 200
#define CALLERS 16
#define RUNS_PER_CALLER 25

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double median_us(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
    return n ? (double)v[n / 2] / 1000.0 : 0.0;
}

/* One command to its exit: ns, or 0 when it failed. */
static uint64_t spawn_wait(char *const argv[])
{
    uint64_t t0 = now_ns();
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ))
        return 0;
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
        return 0;
    return now_ns() - t0;
}

static uint64_t jail_once(jail *j)
{
    char *argv[] = {"/bin/true", NULL};
    jail_spec sp = {.argv = argv};
    jail_proc p;
    char why[256];
    uint64_t t0 = now_ns();
    if (jail_spawn(j, &sp, &p, why, sizeof why)) {
        fprintf(stderr, "jail_spawn: %s\n", why);
        return 0;
    }
    struct pollfd q = {p.pidfd, POLLIN, 0};
    while (p.pidfd >= 0 && poll(&q, 1, -1) < 0 && errno == EINTR)
        ;
    uint64_t peak;
    int st = jail_reap(j, &p, &peak);
    uint64_t t1 = now_ns(); /* a caller is answered here; the cgroup goes after */
    jail_release(j, &p);
    close(p.out_fd);
    close(p.err_fd);
    if (p.in_fd >= 0)
        close(p.in_fd);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return 0;
    return t1 - t0;
}

static void spawn_figures(void)
{
    static uint64_t plain[SPAWNS], bare[SPAWNS], full[SPAWNS];
    char *t[] = {"/bin/true", NULL};
    char *b[] = {"/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "/bin/true", NULL};
    jail *j = NULL;
    char why[256];
    if (jail_open(NULL, &j, why, sizeof why) || !jail_ready(j, why, sizeof why)) {
        printf("spawn: skipped: %s\n", why);
        jail_free(j);
        return;
    }
    /* interleaved, so that the machine's noise falls on all three alike */
    size_t np = 0, nb = 0, nf = 0;
    for (int i = 0; i < SPAWNS; i++) {
        uint64_t v;
        if ((v = spawn_wait(t)))
            plain[np++] = v;
        if ((v = spawn_wait(b)))
            bare[nb++] = v;
        if ((v = jail_once(j)))
            full[nf++] = v;
    }
    jail_layer ls[JAIL_LAYERS_MAX];
    size_t nl = jail_layers(j, ls);
    printf("layers_on:");
    for (size_t i = 0; i < nl; i++)
        if (ls[i].on)
            printf(" %s", ls[i].name);
    printf("\nlayers_off:");
    for (size_t i = 0; i < nl; i++)
        if (!ls[i].on)
            printf(" %s", ls[i].name);
    printf("\n");
    double mp = median_us(plain, np), mb = median_us(bare, nb), mf = median_us(full, nf);
    printf("spawn_plain_us_p50: %.0f (n=%zu)\n", mp, np);
    printf("spawn_bare_bwrap_us_p50: %.0f (n=%zu)\n", mb, nb);
    printf("spawn_sandbox_us_p50: %.0f (n=%zu)\n", mf, nf);
    printf("spawn_overhead_us: %.0f\n", mf - mp);
    printf("spawn_vs_bare_bwrap: %.2f (target <= 1.3)\n", mb > 0 ? mf / mb : 0.0);
    jail_free(j);
}

typedef struct caller {
    h_aosd *h;
    int plain;
    atomic_int *fails;
} caller;

static void *call_loop(void *arg)
{
    caller *c = arg;
    aos_conn *conn = NULL;
    char sock[4200];
    if (aos_control_url(h_data_dir(c->h), sock, sizeof sock) != AOS_OK ||
        aos_connect(sock, &conn, NULL, 0) != AOS_OK) {
        atomic_fetch_add(c->fails, RUNS_PER_CALLER);
        return NULL;
    }
    for (int i = 0; i < RUNS_PER_CALLER; i++) {
        Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
        static const char args[] = "{\"command\":\"true\"}";
        q.tool = (ProtobufCBinaryData){2, (uint8_t *)"sh"};
        q.args = (ProtobufCBinaryData){sizeof args - 1, (uint8_t *)args};
        q.test_plain = c->plain;
        uint8_t buf[256];
        size_t n = aos__tool__run_request__pack(&q, buf);
        aos_call_opts o = {.agent_id = "bench", .timeout_ms = 30000};
        aos_reply r;
        if (aos_call(conn, &o, "tool.run", buf, n, &r) != AOS_OK) {
            if (atomic_fetch_add(c->fails, 1) == 0)
                fprintf(stderr, "tool.run: %s\n", r.error);
        }
        aos_reply_clear(&r);
    }
    aos_close(conn);
    return NULL;
}

static double runs_per_s(h_aosd *h, int plain, int *fails)
{
    pthread_t t[CALLERS];
    atomic_int f = 0;
    caller c = {h, plain, &f};
    uint64_t t0 = now_ns();
    for (int i = 0; i < CALLERS; i++)
        pthread_create(&t[i], NULL, call_loop, &c);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(t[i], NULL);
    double s = (double)(now_ns() - t0) / 1e9;
    *fails = atomic_load(&f);
    return (double)(CALLERS * RUNS_PER_CALLER - *fails) / s;
}

static void render_tokens(h_aosd *h, const char *render, const char *name)
{
    Aos__Tool__ListRequest q = AOS__TOOL__LIST_REQUEST__INIT;
    q.render = (ProtobufCBinaryData){strlen(render), (uint8_t *)render};
    uint8_t buf[64];
    size_t n = aos__tool__list_request__pack(&q, buf);
    aos_call_opts o = {.timeout_ms = 10000};
    aos_reply r;
    if (aos_call(h_conn(h), &o, "tool.list", buf, n, &r) != AOS_OK) {
        printf("%s: failed: %s\n", name, r.error);
        aos_reply_clear(&r);
        return;
    }
    Aos__Tool__ListReply *l = aos__tool__list_reply__unpack(NULL, r.payload_len, r.payload);
    if (l) {
        printf("%s: %zu (%zu tools, %zu bytes, bytes/4)\n", name, (l->rendered.len + 3) / 4,
               l->n_tools, l->rendered.len);
        aos__tool__list_reply__free_unpacked(l, NULL);
    }
    aos_reply_clear(&r);
}

/* server-everything's entry script from tools/mcp-servers.sh (into the build tree), or
 * "" with the reason printed: then the MCP figures are left out. */
static void find_everything(char *out, size_t cap)
{
    out[0] = 0;
    const char *src = getenv("AOS_SOURCE_DIR"), *bin = getenv("AOS_BIN_DIR");
    char cmd[8400], line[4096];
    snprintf(cmd, sizeof cmd, "'%s/tools/mcp-servers.sh' '%s/../npm' 2>/dev/null",
             src ? src : ".", bin ? bin : "build/bin");
    FILE *p = popen(cmd, "r");
    while (p && fgets(line, sizeof line, p))
        if (!out[0] && line[0] == '/' && strstr(line, "server-everything")) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, cap, "%s", line);
        }
    if (p && pclose(p) != 0)
        out[0] = 0;
}

static void mcp_figures(h_aosd *h)
{
    static uint64_t t[200];
    size_t n = 0;
    for (int i = 0; i < 220; i++) {
        Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
        static const char args[] = "{\"message\":\"hi\"}";
        static const char tool[] = "mcp.everything.echo";
        q.tool = (ProtobufCBinaryData){sizeof tool - 1, (uint8_t *)tool};
        q.args = (ProtobufCBinaryData){sizeof args - 1, (uint8_t *)args};
        uint8_t buf[256];
        size_t len = aos__tool__run_request__pack(&q, buf);
        aos_call_opts o = {.agent_id = "bench", .timeout_ms = 30000};
        aos_reply r;
        uint64_t t0 = now_ns();
        aos_err e = aos_call(h_conn(h), &o, "tool.run", buf, len, &r);
        uint64_t dt = now_ns() - t0;
        if (e)
            printf("mcp call: %s\n", r.error);
        else if (i >= 20) /* the first start the server and warm node up */
            t[n++] = dt;
        aos_reply_clear(&r);
    }
    qsort(t, n, sizeof t[0], cmp_u64);
    printf("mcp_call_us_p50: %.0f (n=%zu, server-everything echo through aosd)\n",
           n ? (double)t[n / 2] / 1000.0 : 0.0, n);
    printf("mcp_call_us_p99: %.0f\n", n ? (double)t[n * 99 / 100] / 1000.0 : 0.0);
}

/* As aos-tool's uid, where runs really start (bwrap then makes a user namespace for the
 * bare case too, as it does for ours), when we are root and the account exists; else as
 * we are. */
static void spawn_figures_as_tool(void)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("aos-tool") : NULL;
    if (!pw) {
        printf("spawn: as uid %d\n", (int)geteuid());
        spawn_figures();
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgroups(0, NULL) || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) ||
            setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid))
            _exit(1);
        printf("spawn: as uid %d (aos-tool's; no cgroup of its own here, unlike in "
               "aos-tool)\n", (int)pw->pw_uid);
        spawn_figures();
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    spawn_figures_as_tool();
    char ev[4096], dir[64] = "/tmp/bench-sbx-XXXXXX", yaml[9000], path[128];
    find_everything(ev, sizeof ev);
    if (!mkdtemp(dir))
        return 1;
    chmod(dir, 0755);
    if (ev[0]) {
        char npm[4096];
        snprintf(npm, sizeof npm, "%s", ev);
        char *nm = strstr(npm, "/node_modules/");
        if (nm)
            *nm = 0;
        snprintf(yaml, sizeof yaml, "tools:\n  mcp:\n    - {name: everything, command: "
                 "/usr/bin/node, args: [%.3000s, stdio], paths: [%.3000s]}\n", ev, npm);
        snprintf(path, sizeof path, "%s/aos.yaml", dir);
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(yaml, f);
            fclose(f);
        }
    } else {
        printf("mcp: skipped: tools/mcp-servers.sh could not install server-everything\n");
    }
    const char *args[] = {"--test-hooks", NULL};
    char why[512];
    h_aosd *h = h_start_on(dir, args, 120000, why, sizeof why);
    if (!h) {
        printf("aosd: did not start: %s\n", why);
        return 1;
    }
    int fp = 0, fs = 0;
    runs_per_s(h, 1, &fp); /* warm up: workspaces, caches */
    double plain = runs_per_s(h, 1, &fp);
    double sand = runs_per_s(h, 0, &fs);
    printf("tool_runs_plain_per_s: %.0f (%d callers, %d failed)\n", plain, CALLERS, fp);
    printf("tool_runs_per_s: %.0f (%d callers, %d failed)\n", sand, CALLERS, fs);
    printf("tool_runs_ratio: %.2f (sandboxed / plain fork/exec, both through aosd)\n",
           plain > 0 ? sand / plain : 0.0);
    render_tokens(h, "openai", "catalogue_tokens_schema");
    render_tokens(h, "cli", "catalogue_tokens_cli");
    if (ev[0])
        mcp_figures(h);
    h_stop(h);
    return 0;
}
