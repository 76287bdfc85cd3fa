/* aos-tool's attack battery: every way out of a tool run's sandbox we could think of, tried
 * through a real aosd; each must fail, say why, leave the host unchanged and aos-tool up. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
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
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "aos.pb-c.h"
#include "harness.h"
#include "tool.pb-c.h"

#define CALL_MS 30000u          /* a call's deadline unless a case says otherwise */
#define TEXT_MAX (2u << 20)     /* what of a reply's stdout/stderr we keep */
#define MIB (1024ull * 1024ull)
#define TOOL_MEMORY_MB 512u     /* the built-ins' limits (jail.c, desc.c) */
#define TOOL_PROCESSES 64u
#define TOOL_FILE_BYTES (256ull * MIB)
#define TOOL_OUTPUT_CAP MIB
#define KILL_RUNS 4

static h_aosd *H;
static char SKIP_WHY[256];
static char DATA[128];          /* the data dir */
static char WS[192];            /* DATA/workspaces */
static char OUTDIR[96];         /* a host dir anyone may write: an escape would land here */
static char TOK[16];            /* random digits: markers of this process's runs */
static uid_t TOOL_UID;
static gid_t TOOL_GID;
static pid_t TOOL_PID;          /* aos-tool as kernel.status reports it */
static pid_t VICTIM;            /* a host process of aos-tool's uid: what a run may not touch */
static int HAVE_PERL;
static int CG_PIDS_ON, CG_MEM_ON;
static char ATTACK_PL[4096];    /* the attack program (perl), written into workspaces */

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- one tool.run ------------------------------------------------------------------------ */

typedef struct {
    const char *env_agent;      /* the envelope's agent_id (NULL: none, the admin) */
    const char *req_agent;      /* RunRequest.agent (NULL: "") */
    const char *tool;
    const char *args;           /* JSON text */
    uint32_t time_ms;
    uint32_t timeout_ms;        /* 0: CALL_MS */
    int network;                /* grant the network */
    const uint8_t *rid;         /* NULL: a fresh request id */
    aos_conn *conn;             /* NULL: H's */
} run_spec;

typedef struct {
    aos_err rc;
    char error[AOS_ERRMSG_MAX + 1];
    Aos__Tool__RunReply *rep;   /* NULL unless rc is OK and the reply decoded */
    char *out, *err;            /* the reply's stdout/stderr, NUL-terminated ("" if none) */
    json_t *res;                /* result_json, parsed (NULL if none or invalid) */
    uint32_t parts;
    int bad_parts;
    uint64_t streamed_out, streamed_err;
    uint64_t elapsed_ms;
} run_res;

static ProtobufCBinaryData bs(const char *s)
{
    return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)s};
}

static char *text_of(ProtobufCBinaryData b)
{
    size_t n = b.len < TEXT_MAX ? b.len : TEXT_MAX;
    char *s = malloc(n + 1);
    if (!s)
        abort(); /* runs on the runs' threads too, where a cmocka failure cannot */
    if (n)
        memcpy(s, b.data, n);
    s[n] = 0;
    return s;
}

static int on_chunk(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    (void)seq;
    run_res *r = arg;
    Aos__Tool__Chunk *c = aos__tool__chunk__unpack(NULL, len, data);
    if (!c) {
        r->bad_parts++;
        return 0;
    }
    if (c->stream == 1)
        r->streamed_out += c->data.len;
    else if (c->stream == 2)
        r->streamed_err += c->data.len;
    else
        r->bad_parts++;
    aos__tool__chunk__free_unpacked(c, NULL);
    return 0;
}

static void res_free(run_res *r)
{
    if (r->rep)
        aos__tool__run_reply__free_unpacked(r->rep, NULL);
    free(r->out);
    free(r->err);
    json_decref(r->res);
    memset(r, 0, sizeof *r);
}

/* Thread-safe: cmocka's asserts are not, so nothing here may fail the test. */
static void run_do(const run_spec *s, run_res *r)
{
    memset(r, 0, sizeof *r);
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    Aos__Tool__Grant g = AOS__TOOL__GRANT__INIT;
    q.agent = bs(s->req_agent);
    q.tool = bs(s->tool);
    q.args = bs(s->args);
    q.time_ms = s->time_ms;
    if (s->network) {
        g.network = 1;
        q.grant = &g;
    }
    size_t len = aos__tool__run_request__get_packed_size(&q);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        r->rc = AOS_ERR_NOMEM;
        return;
    }
    aos__tool__run_request__pack(&q, buf);
    aos_call_opts o = {.request_id = s->rid, .agent_id = s->env_agent,
                       .timeout_ms = s->timeout_ms ? s->timeout_ms : CALL_MS};
    aos_reply rep;
    uint64_t t0 = aos_mono_ms();
    r->rc = aos_call_stream(s->conn ? s->conn : h_conn(H), &o, "tool.run", buf, len, on_chunk,
                            r, &rep);
    r->elapsed_ms = aos_mono_ms() - t0;
    free(buf);
    snprintf(r->error, sizeof r->error, "%s", rep.error);
    r->parts = rep.parts;
    if (r->rc == AOS_OK) {
        r->rep = aos__tool__run_reply__unpack(NULL, rep.payload_len, rep.payload);
        if (!r->rep)
            r->bad_parts++;
    }
    aos_reply_clear(&rep);
    ProtobufCBinaryData none = {0, NULL};
    r->out = text_of(r->rep ? r->rep->stdout_data : none);
    r->err = text_of(r->rep ? r->rep->stderr_data : none);
    if (r->rep && r->rep->result_json.len)
        r->res = json_loadb((const char *)r->rep->result_json.data, r->rep->result_json.len,
                            JSON_ALLOW_NUL, NULL); /* a tool's NUL bytes are \u0000 in it */
}

static char *jdump(json_t *v)
{
    assert_non_null(v);
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    assert_non_null(s);
    return s;
}

/* tool with JSON args (built by jansson: any text is safe in it) as agent. */
static void run_j(const char *agent, const char *tool, json_t *args, uint32_t time_ms,
                  run_res *r)
{
    char *a = jdump(args);
    run_spec s = {.env_agent = agent, .tool = tool, .args = a, .time_ms = time_ms};
    run_do(&s, r);
    free(a);
}

static void sh(const char *agent, const char *cmd, uint32_t time_ms, run_res *r)
{
    run_j(agent, "sh", json_pack("{s:s}", "command", cmd), time_ms, r);
}

static void path_tool(const char *agent, const char *tool, const char *path, run_res *r)
{
    run_j(agent, tool, json_pack("{s:s}", "path", path), 0, r);
}

static void show(const char *what, const run_res *r)
{
    print_message("[%s] rc %s%s%s", what, aos_err_name(r->rc), r->error[0] ? ": " : "",
                  r->error);
    if (r->rep)
        print_message(" exit %d signal %d error %s (%.*s) %llu ms", r->rep->exit_status,
                      r->rep->signal, aos_err_name((aos_err)r->rep->error),
                      (int)r->rep->error_text.len, (const char *)r->rep->error_text.data,
                      (unsigned long long)(r->rep->duration_us / 1000));
    print_message("\n  stdout: %.600s\n  stderr: %.600s\n", r->out ? r->out : "",
                  r->err ? r->err : "");
}

#define EXPECT_REPLY(what, r)                                                            \
    do {                                                                                 \
        if ((r)->rc != AOS_OK || !(r)->rep || (r)->bad_parts || !(r)->res) {             \
            show(what, r);                                                               \
            h_dump_log(H);                                                               \
            fail_msg("%s: tool.run: %s: %s (bad parts %d, result_json %s)", what,        \
                     aos_err_name((r)->rc), (r)->error, (r)->bad_parts,                  \
                     (r)->res ? "ok" : "missing or invalid");                            \
        }                                                                                \
    } while (0)

#define EXPECT(what, r, cond)                                                            \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            show(what, r);                                                               \
            fail_msg("%s: want %s", what, #cond);                                        \
        }                                                                                \
    } while (0)

#define HAS(s, needle) (strstr((s), (needle)) != NULL)

/* The run completed with a reply, and its tool failed (non-zero exit or a signal). */
static void expect_failed_run(const char *what, const run_res *r)
{
    EXPECT_REPLY(what, r);
    EXPECT(what, r, r->rep->exit_status != 0 || r->rep->signal != 0);
}

/* ---- the host side ----------------------------------------------------------------------- */

/* A small host file (NUL-terminated, at most cap-1 bytes); "" when there is none. */
static void read_host(const char *path, char *buf, size_t cap)
{
    buf[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t n = 0;
    for (ssize_t k; n < cap - 1 && (k = read(fd, buf + n, cap - 1 - n)) > 0;)
        n += (size_t)k;
    buf[n] = 0;
    close(fd);
}

static int host_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void ws_path(char *out, size_t cap, const char *agent, const char *name)
{
    snprintf(out, cap, "%s/%s%s%s", WS, agent, name ? "/" : "", name ? name : "");
}

/* The workspace as aos-tool makes it (its uid's, 0700), so files can be planted first. */
static void ws_make(const char *agent)
{
    char p[512];
    ws_path(p, sizeof p, agent, NULL);
    if (mkdir(p, 0700) && errno != EEXIST)
        fail_msg("mkdir %s: %s", p, strerror(errno));
    assert_int_equal(lchown(p, TOOL_UID, TOOL_GID), 0);
}

/* A file in agent's workspace written from the host, owned by aos-tool's uid. */
static void ws_put(const char *agent, const char *name, const char *text, mode_t mode)
{
    char p[512];
    ws_make(agent);
    ws_path(p, sizeof p, agent, name);
    unlink(p);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        fail_msg("creating %s: %s", p, strerror(errno));
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchown(fd, TOOL_UID, TOOL_GID), 0);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* A symlink planted by the host in agent's workspace. */
static void ws_link(const char *agent, const char *name, const char *target)
{
    char p[512];
    ws_make(agent);
    ws_path(p, sizeof p, agent, name);
    unlink(p);
    if (symlink(target, p))
        fail_msg("symlink %s: %s", p, strerror(errno));
    assert_int_equal(lchown(p, TOOL_UID, TOOL_GID), 0);
}

static void put_attack(const char *agent)
{
    ws_put(agent, "attack.pl", ATTACK_PL, 0644);
}

/* Processes on the host whose command line holds marker (our own excepted); the first
 * one found goes into first (cap bytes) for the message. */
static int marker_procs(const char *marker, char *first, size_t cap)
{
    if (first && cap)
        first[0] = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0; /* the sampler's thread: no cmocka assertion there */
    int n = 0;
    static _Thread_local char buf[65536];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        long pid = strtol(e->d_name, NULL, 10);
        if (pid == (long)getpid())
            continue;
        char p[300];
        snprintf(p, sizeof p, "/proc/%s/cmdline", e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (k <= 0)
            continue;
        for (ssize_t i = 0; i < k; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[k] = 0;
        if (strstr(buf, marker)) {
            if (!n && first && cap)
                snprintf(first, cap, "pid %ld: %.300s", pid, buf);
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Processes whose command line starts with prefix (argv joined by spaces). */
static int procs_starting(const char *prefix)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int n = 0;
    size_t pl = strlen(prefix);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char p[300], c[512];
        snprintf(p, sizeof p, "/proc/%s/cmdline", e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t k = read(fd, c, sizeof c - 1);
        close(fd);
        if (k <= 0)
            continue;
        for (ssize_t i = 0; i < k; i++)
            c[i] = c[i] ? c[i] : ' ';
        c[k] = 0;
        n += !strncmp(c, prefix, pl);
    }
    closedir(d);
    return n;
}

/* Waits up to ms until at least want processes start with prefix: runs under way. */
static int wait_procs(const char *prefix, int want, unsigned ms)
{
    uint64_t end = aos_mono_ms() + ms;
    for (;;) {
        if (procs_starting(prefix) >= want)
            return 1;
        if (aos_mono_ms() >= end)
            return 0;
        nap_ms(20);
    }
}

/* The pid of a process whose command line holds marker, 0 if none. */
static pid_t marker_pid(const char *marker)
{
    char first[400];
    if (!marker_procs(marker, first, sizeof first))
        return 0;
    return (pid_t)strtol(first + 4, NULL, 10); /* "pid N: ..." */
}

/* The v1 pids cgroup of pid ("" when none): where its run's cgroup is. */
static void pids_cgroup_of(pid_t pid, char *out, size_t cap)
{
    char p[64], cg[4096];
    out[0] = 0;
    snprintf(p, sizeof p, "/proc/%d/cgroup", (int)pid);
    read_host(p, cg, sizeof cg);
    const char *l = strstr(cg, ":pids:");
    if (!l)
        return;
    l += 6;
    size_t n = strcspn(l, "\n");
    snprintf(out, cap, "%.*s", (int)n, l);
}

/* Waits up to ms for every marker process to be gone; returns how many are left. */
static int wait_no_marker(const char *marker, unsigned ms, char *first, size_t cap)
{
    uint64_t end = aos_mono_ms() + ms;
    for (;;) {
        int n = marker_procs(marker, first, cap);
        if (!n || aos_mono_ms() >= end)
            return n;
        nap_ms(50);
    }
}

static void marker(char *out, size_t cap, int kase)
{
    snprintf(out, cap, "%02d%s", kase, TOK);
}

static int64_t tool_stat(const char *name)
{
    aos_reply r;
    int64_t v = -1;
    if (aos_call(h_conn(H), NULL, "tool.stats", NULL, 0, &r) == AOS_OK) {
        Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
        for (size_t i = 0; s && i < s->n_stats; i++)
            if (!strcmp(s->stats[i]->name, name))
                v = s->stats[i]->value;
        if (s)
            aos__stats_reply__free_unpacked(s, NULL);
    }
    aos_reply_clear(&r);
    return v;
}

/* After every case: a plain run works, aos-tool is the same process (unless the case
 * killed it on purpose), aosd is alive. */
static void still_serving(void)
{
    run_res r;
    sh("h2check", "echo ok", 0, &r);
    EXPECT_REPLY("follow-up run", &r);
    EXPECT("follow-up run", &r, r.rep->exit_status == 0 && !strcmp(r.out, "ok\n"));
    res_free(&r);
    pid_t now = h_child(H, "tool", NULL);
    if (now != TOOL_PID) {
        h_dump_log(H);
        fail_msg("aos-tool is pid %d now, was %d: it died or restarted", (int)now,
                 (int)TOOL_PID);
    }
    assert_int_equal(kill(h_aosd_pid(H), 0), 0);
    assert_int_equal(kill(VICTIM, 0), 0);
}

#define NEED_PERL()                                                                      \
    do {                                                                                 \
        if (!HAVE_PERL) {                                                                \
            print_message("skipped: /usr/bin/perl is not installed (the attack program "  \
                          "is a perl script)\n");                                         \
            skip();                                                                       \
        }                                                                                \
    } while (0)

#define NEED_SETUP()                                                                     \
    do {                                                                                 \
        if (SKIP_WHY[0]) {                                                               \
            print_message("skipped: %s\n", SKIP_WHY);                                     \
            skip();                                                                       \
        }                                                                                 \
    } while (0)

/* ---- setup ------------------------------------------------------------------------------- */

/* The attack program: raw system calls (numbers of this build's architecture) and
 * sockets, each reported as "WHAT rc=N errno=E". Perl (perl-base is Essential in Debian)
 * rather than this binary re-executed inside: an ASan build cannot even start under a
 * run's 512 MiB RLIMIT_AS (its shadow memory reservation is refused). */
static void make_attack_pl(void)
{
    int n = snprintf(
        ATTACK_PL, sizeof ATTACK_PL,
        "use strict; use warnings; use Socket;\n"
        "my ($op, @a) = @ARGV;\n"
        "sub rep { my ($w, $rc, $e) = @_; printf(\"%%s rc=%%d errno=%%d\\n\", $w, $rc,"
        " $rc < 0 ? $e : 0); }\n"
        "if ($op eq 'ptrace') { my $r = syscall(%d, 16, $a[0] + 0, 0, 0);"
        " rep(\"ptrace $a[0]\", $r, $! + 0); }\n"
        "elsif ($op eq 'kill') { my $r = syscall(%d, $a[0] + 0, 9);"
        " rep(\"kill $a[0]\", $r, $! + 0); }\n"
        "elsif ($op eq 'mount') { my ($s, $t, $f) = ('none', $a[0], 'tmpfs');"
        " my $r = syscall(%d, $s, $t, $f, 0, 0); rep(\"mount $a[0]\", $r, $! + 0); }\n"
        "elsif ($op eq 'unshare') { my $r = syscall(%d, hex($a[0]));"
        " rep(\"unshare $a[0]\", $r, $! + 0); }\n"
        "elsif ($op eq 'setns') { if (open(my $f, '<', $a[0])) {"
        " my $r = syscall(%d, fileno($f), 0); rep(\"setns $a[0]\", $r, $! + 0); }"
        " else { rep(\"open $a[0]\", -1, $! + 0); } }\n"
        "elsif ($op eq 'tcp') { socket(my $s, PF_INET, SOCK_STREAM, 0) or die \"socket: $!\";"
        " my $ok = connect($s, pack_sockaddr_in($a[1], inet_aton($a[0])));"
        " rep(\"tcp $a[0]:$a[1]\", $ok ? 0 : -1, $! + 0); }\n"
        "elsif ($op eq 'unix') { my $p = $a[0]; $p =~ s/^@/\\0/;"
        " socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die \"socket: $!\";"
        " my $ok = connect($s, pack_sockaddr_un($p));"
        " rep(\"unix $a[0]\", $ok ? 0 : -1, $! + 0); }\n"
        "else { die \"unknown op $op\\n\"; }\n",
        (int)SYS_ptrace, (int)SYS_kill, (int)SYS_mount, (int)SYS_unshare, (int)SYS_setns);
    assert_true(n > 0 && (size_t)n < sizeof ATTACK_PL);
}

/* A host process of aos-tool's uid (a run's uid outside its namespaces): every kill and
 * ptrace a run tries must miss it. */
static pid_t start_victim(void)
{
    char arg[48];
    snprintf(arg, sizeof arg, "600.99%s", TOK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgroups(0, NULL) || setgid(TOOL_GID) || setuid(TOOL_UID))
            _exit(125);
        execl("/usr/bin/sleep", "sleep", arg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int layer_on(const Aos__Tool__ListReply *l, const char *name, int *found)
{
    for (size_t i = 0; i < l->n_layers; i++)
        if (l->layers[i]->name.len == strlen(name) &&
            !memcmp(l->layers[i]->name.data, name, strlen(name))) {
            if (found)
                *found = 1;
            return l->layers[i]->on;
        }
    return 0;
}

static Aos__Tool__ListReply *tool_list(void)
{
    Aos__Tool__ListRequest q = AOS__TOOL__LIST_REQUEST__INIT;
    size_t len = aos__tool__list_request__get_packed_size(&q);
    uint8_t buf[64];
    assert_true(len <= sizeof buf);
    aos__tool__list_request__pack(&q, buf);
    aos_reply r;
    aos_err e = aos_call(h_conn(H), NULL, "tool.list", buf, len, &r);
    if (e != AOS_OK)
        fail_msg("tool.list: %s: %s", aos_err_name(e), r.error);
    Aos__Tool__ListReply *l = aos__tool__list_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(l);
    return l;
}

static int setup(void **st)
{
    (void)st;
    if (h_privsep_skip_reason(SKIP_WHY, sizeof SKIP_WHY))
        return 0;
    if (access("/usr/bin/bwrap", X_OK)) {
        snprintf(SKIP_WHY, sizeof SKIP_WHY, "bubblewrap (/usr/bin/bwrap) is not installed");
        return 0;
    }
    assert_true(h_user("aos-tool", &TOOL_UID, &TOOL_GID));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(TOK, sizeof TOK, "%09lu",
             (unsigned long)((ts.tv_nsec ^ ((unsigned long)getpid() << 12)) % 1000000000ul));
    HAVE_PERL = access("/usr/bin/perl", X_OK) == 0;
    make_attack_pl();
    H = h_start(NULL);
    snprintf(DATA, sizeof DATA, "%s", h_data_dir(H));
    snprintf(WS, sizeof WS, "%s/workspaces", DATA);
    snprintf(OUTDIR, sizeof OUTDIR, "/tmp/aos-h2-out-%s", TOK);
    assert_int_equal(mkdir(OUTDIR, 0777), 0);
    assert_int_equal(chmod(OUTDIR, 0777), 0); /* an escape would be free to write here */
    TOOL_PID = h_wait_running(H, "tool", 0, 30000);
    assert_true(TOOL_PID > 0);
    VICTIM = start_victim();
    Aos__Tool__ListReply *l = tool_list();
    int bw = layer_on(l, "bubblewrap", NULL);
    CG_PIDS_ON = layer_on(l, "cgroup_pids", NULL);
    CG_MEM_ON = layer_on(l, "cgroup_memory", NULL);
    for (size_t i = 0; i < l->n_layers; i++)
        print_message("layer %.*s: %s (%.*s)\n", (int)l->layers[i]->name.len,
                      (const char *)l->layers[i]->name.data, l->layers[i]->on ? "on" : "off",
                      (int)l->layers[i]->why.len, (const char *)l->layers[i]->why.data);
    aos__tool__list_reply__free_unpacked(l, NULL);
    if (!bw) {
        snprintf(SKIP_WHY, sizeof SKIP_WHY, "aos-tool reports bubblewrap off on this host");
        return 0;
    }
    /* the first run makes the workspaces directory as aos-tool's */
    run_res r;
    sh("h2check", "echo ok", 0, &r);
    EXPECT_REPLY("first run", &r);
    res_free(&r);
    return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static int teardown(void **st)
{
    (void)st;
    if (VICTIM > 0) {
        kill(VICTIM, SIGKILL);
        waitpid(VICTIM, NULL, 0);
    }
    if (OUTDIR[0])
        nftw(OUTDIR, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    h_stop(H);
    return 0;
}

/* A run on a thread of its own (for runs in flight while the test does something else). */
typedef struct {
    pthread_t t;
    run_spec s;
    run_res r;
    char *args;
    char agent[80];
} bg_run;

static void *bg_main(void *arg)
{
    bg_run *b = arg;
    run_do(&b->s, &b->r);
    return NULL;
}

static bg_run *bg_start(const char *agent, const char *cmd, uint32_t time_ms,
                        uint32_t timeout_ms)
{
    bg_run *b = calloc(1, sizeof *b);
    assert_non_null(b);
    snprintf(b->agent, sizeof b->agent, "%s", agent);
    b->args = jdump(json_pack("{s:s}", "command", cmd));
    b->s = (run_spec){.env_agent = b->agent, .tool = "sh", .args = b->args,
                      .time_ms = time_ms, .timeout_ms = timeout_ms};
    assert_int_equal(pthread_create(&b->t, NULL, bg_main, b), 0);
    return b;
}

static void bg_join(bg_run *b)
{
    assert_int_equal(pthread_join(b->t, NULL), 0);
}

static void bg_free(bg_run *b)
{
    res_free(&b->r);
    free(b->args);
    free(b);
}

/* ---- 1. secrets of the host and of other agents ------------------------------------------ */

static void reading_host_secrets_and_other_workspaces_fails(void **st)
{
    (void)st;
    NEED_SETUP();
    char shadow[8192], line[256] = "", p[512];
    read_host("/etc/shadow", shadow, sizeof shadow);
    char *nl = strchr(shadow, '\n');
    snprintf(line, sizeof line, "%.*s", nl ? (int)(nl - shadow) : (int)strlen(shadow), shadow);
    assert_true(strlen(line) > 5); /* the host has one: "root:..." */
    run_res r;

    path_tool("bob", "cat", "/etc/shadow", &r);
    expect_failed_run("cat /etc/shadow", &r);
    EXPECT("cat /etc/shadow", &r, r.rep->error == AOS_ERR_NOT_FOUND);
    EXPECT("cat /etc/shadow", &r, HAS(r.err, "No such file"));
    EXPECT("cat /etc/shadow", &r, !HAS(r.out, line) && !HAS(r.err, line));
    res_free(&r);

    sh("bob", "cat /etc/shadow /etc/gshadow; ls -A /etc; cat /etc/*", 0, &r);
    EXPECT_REPLY("sh cat /etc/shadow", &r);
    EXPECT("sh cat /etc/shadow", &r, HAS(r.err, "/etc/shadow: No such file"));
    EXPECT("sh cat /etc/shadow", &r, !HAS(r.out, line) && !HAS(r.out, "shadow"));
    res_free(&r);

    /* the data dir, PostgreSQL's files, aosd's sockets, by absolute host path */
    static const char *const inside[] = {"pg.log", "aosd.lock", "pg/PG_VERSION",
                                         "pg/global/pg_control", "pg/postmaster.pid",
                                         "tool/etc/passwd", NULL};
    for (size_t i = 0; inside[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", DATA, inside[i]);
        assert_true(host_exists(p));
        path_tool("bob", "cat", p, &r);
        expect_failed_run(p, &r);
        EXPECT(p, &r, r.rep->error == AOS_ERR_NOT_FOUND && HAS(r.err, "No such file"));
        EXPECT(p, &r, r.out[0] == 0);
        res_free(&r);
    }
    path_tool("bob", "ls", DATA, &r);
    expect_failed_run("ls DATA", &r);
    EXPECT("ls DATA", &r, r.rep->error == AOS_ERR_NOT_FOUND && HAS(r.err, "No such file"));
    res_free(&r);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls -la %s %s/pg %s/run; find / -name 'PG_VERSION' -o -name "
             "'control.sock' -o -name 'pg_hba.conf' 2>/dev/null | grep -v '^/proc'; "
             "echo done", DATA, DATA, DATA);
    sh("bob", cmd, 0, &r);
    EXPECT_REPLY("ls the data dir", &r);
    EXPECT("ls the data dir", &r, !strcmp(r.out, "done\n") && HAS(r.err, "No such file"));
    res_free(&r);

    /* another agent's workspace */
    char secret[64];
    snprintf(secret, sizeof secret, "alice-secret-%s", TOK);
    run_j("alice", "write_file", json_pack("{s:s, s:s}", "path", "secret", "content", secret),
          0, &r);
    EXPECT_REPLY("alice writes", &r);
    EXPECT("alice writes", &r, r.rep->exit_status == 0);
    res_free(&r);
    char host_secret[128];
    ws_path(p, sizeof p, "alice", "secret");
    read_host(p, host_secret, sizeof host_secret);
    assert_string_equal(host_secret, secret);

    static const char *const tries[] = {"../alice/secret", "/workspace/../alice/secret",
                                        "../../alice/secret", "/proc/self/cwd/../alice/secret",
                                        "/proc/1/root/workspace/../alice/secret", NULL};
    for (size_t i = 0; tries[i]; i++) {
        path_tool("bob", "cat", tries[i], &r);
        expect_failed_run(tries[i], &r);
        EXPECT(tries[i], &r, !HAS(r.out, secret) && HAS(r.err, "No such file"));
        res_free(&r);
    }
    path_tool("bob", "cat", p, &r); /* the host's absolute path */
    expect_failed_run("alice's secret by host path", &r);
    EXPECT("alice's secret by host path", &r, !HAS(r.out, secret) && HAS(r.err, "No such"));
    res_free(&r);
    /* every file bob can reach (but the host's read-only /usr, /proc, and /dev, whose
     * device binds find takes for files) */
    snprintf(cmd, sizeof cmd, "find / \\( -path /proc -o -path /usr -o -path /dev \\) "
             "-prune -o -type f -print 2>/dev/null | xargs grep -l %s 2>/dev/null; "
             "echo searched", secret);
    sh("bob", cmd, 0, &r);
    EXPECT_REPLY("search bob's whole root for alice's secret", &r);
    EXPECT("search bob's whole root for alice's secret", &r,
           !HAS(r.out, secret) && HAS(r.out, "searched"));
    res_free(&r);

    /* alice's run in flight: its processes are in a pid namespace bob cannot see */
    char m[32];
    marker(m, sizeof m, 1);
    snprintf(cmd, sizeof cmd, "sleep 3.%s; cat secret", m);
    bg_run *b = bg_start("alice", cmd, 0, 0);
    char sleeper[64];
    snprintf(sleeper, sizeof sleeper, "sleep 3.%s", m);
    if (!wait_procs(sleeper, 1, 5000))
        fail_msg("alice's run did not start");
    nap_ms(200);
    sh("bob", "for p in /proc/[0-9]*; do cat $p/root/workspace/secret $p/cwd/secret "
              "$p/root/workspace/../alice/secret 2>/dev/null; ls $p/root/workspace; done; "
              "echo scanned", 0, &r);
    EXPECT_REPLY("bob looks through /proc", &r);
    EXPECT("bob looks through /proc", &r, HAS(r.out, "scanned") && !HAS(r.out, secret) &&
                                            !HAS(r.out, "secret"));
    res_free(&r);
    bg_join(b);
    EXPECT_REPLY("alice's own run", &b->r);
    EXPECT("alice's own run", &b->r, !strcmp(b->r.out, secret)); /* she still reads it */
    bg_free(b);
    ws_path(p, sizeof p, "alice", "secret");
    read_host(p, host_secret, sizeof host_secret);
    assert_string_equal(host_secret, secret);
    still_serving();
}


/* ---- 2. `..` and absolute paths -------------------------------------------------------- */

static void dotdot_and_absolute_paths_stay_in_the_sandbox(void **st)
{
    (void)st;
    NEED_SETUP();
    run_res r;
    char p[512], hostpw[16384];
    read_host("/etc/passwd", hostpw, sizeof hostpw);
    assert_true(HAS(hostpw, "\naos-tool:") || !strncmp(hostpw, "aos-tool:", 9));

    path_tool("bob", "cat", "../../../../etc/passwd", &r);
    EXPECT_REPLY("cat ../../../../etc/passwd", &r);
    /* the sandbox's generated passwd, not the host's */
    EXPECT("cat ../../../../etc/passwd", &r, r.rep->exit_status == 0 &&
                                             HAS(r.out, "agent:x:1000:1000:") &&
                                             !HAS(r.out, "aos-tool:") && !HAS(r.out, "daemon:"));
    res_free(&r);

    path_tool("bob", "ls", "../../../..", &r);
    EXPECT_REPLY("ls ../../../..", &r);
    EXPECT("ls ../../../..", &r, r.rep->exit_status == 0 && HAS(r.out, " workspace\n") &&
                                 !HAS(r.out, " home\n") && !HAS(r.out, " root\n") &&
                                 !HAS(r.out, " var\n"));
    res_free(&r);

    /* written through .. into the sandbox's /tmp: the host's /tmp gets nothing */
    char esc[128];
    snprintf(esc, sizeof esc, "aos-h2-escape-%s", TOK);
    snprintf(p, sizeof p, "../../../../tmp/%s", esc);
    run_j("bob", "write_file", json_pack("{s:s, s:s}", "path", p, "content", "x"), 0, &r);
    EXPECT_REPLY("write_file ../../tmp", &r);
    res_free(&r);
    snprintf(p, sizeof p, "/tmp/%s", esc);
    assert_false(host_exists(p));

    /* an absolute host path into another workspace, and onto /etc */
    char owned[512];
    ws_path(owned, sizeof owned, "alice", "owned-by-bob");
    run_j("bob", "write_file", json_pack("{s:s, s:s}", "path", owned, "content", "x"), 0, &r);
    expect_failed_run("write_file into alice's by host path", &r);
    EXPECT("write_file into alice's by host path", &r, HAS(r.err, "nonexistent") ||
                                                       HAS(r.err, "No such file"));
    res_free(&r);
    assert_false(host_exists(owned));
    snprintf(p, sizeof p, "%s/../alice/owned-by-bob", WS);
    run_j("bob", "write_file", json_pack("{s:s, s:s}", "path", "../alice/owned-by-bob",
                                         "content", "x"), 0, &r);
    expect_failed_run("write_file ../alice", &r);
    res_free(&r);
    assert_false(host_exists(owned));

    char pw0[4096], pw1[4096], gen[512];
    snprintf(gen, sizeof gen, "%s/tool/etc/passwd", DATA);
    read_host(gen, pw0, sizeof pw0);
    assert_true(HAS(pw0, "agent:x:1000"));
    run_j("bob", "write_file", json_pack("{s:s, s:s}", "path", "/etc/passwd", "content",
                                         "root::0:0::/:/bin/sh\n"), 0, &r);
    expect_failed_run("write_file /etc/passwd", &r);
    EXPECT("write_file /etc/passwd", &r, HAS(r.err, "Read-only file system"));
    res_free(&r);
    sh("bob", "chmod 666 /etc/passwd; echo x >> /etc/passwd; mv /etc/passwd /etc/p; "
              "touch /usr/h2-pwned /etc/h2-pwned /h2-pwned", 0, &r);
    EXPECT_REPLY("change the sandbox's root", &r);
    EXPECT("change the sandbox's root", &r, HAS(r.err, "Read-only file system"));
    res_free(&r);
    read_host(gen, pw1, sizeof pw1);
    assert_string_equal(pw0, pw1);
    assert_false(host_exists("/usr/h2-pwned"));
    still_serving();
}

/* ---- 3. symlinks ----------------------------------------------------------------------- */

static void symlinks_out_of_the_workspace_resolve_inside(void **st)
{
    (void)st;
    NEED_SETUP();
    run_res r;
    char host0[4096], host1[4096], p[512], pglog[512], pgline[256] = "";
    const char *hf = host_exists("/etc/hostname") ? "/etc/hostname" : "/etc/hosts";
    read_host(hf, host0, sizeof host0);

    /* made by the tool */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -f x p; ln -s %s x; ln -s /etc/passwd p; cat x; "
             "echo pwn > x; echo w=$?; cat p", hf);
    sh("bob", cmd, 0, &r);
    EXPECT_REPLY("tool-made symlinks", &r);
    EXPECT("tool-made symlinks", &r, HAS(r.err, "No such file") || !strcmp(hf, "/etc/hosts"));
    EXPECT("tool-made symlinks", &r, HAS(r.err, "Read-only file system") &&
                                     HAS(r.out, "w=2\n") && HAS(r.out, "agent:x:1000") &&
                                     !HAS(r.out, "aos-tool:"));
    res_free(&r);
    run_j("bob", "write_file", json_pack("{s:s, s:s}", "path", "x", "content", "pwn"), 0, &r);
    expect_failed_run("write_file through x", &r);
    EXPECT("write_file through x", &r, HAS(r.err, "Read-only file system"));
    res_free(&r);
    sh("bob", "ln /etc/passwd hard", 0, &r);
    expect_failed_run("hard link to /etc/passwd", &r);
    EXPECT("hard link to /etc/passwd", &r, HAS(r.err, "cross-device"));
    res_free(&r);
    read_host(hf, host1, sizeof host1);
    assert_string_equal(host0, host1);

    /* made on the host, pointing at host files */
    snprintf(pglog, sizeof pglog, "%s/pg.log", DATA);
    read_host(pglog, host0, sizeof host0);
    char *nl = strchr(host0, '\n');
    snprintf(pgline, sizeof pgline, "%.*s", nl ? (int)(nl - host0) : 0, host0);
    ws_link("bob", "hl_data", pglog);
    ws_link("bob", "hl_dir", DATA);
    char newf[256];
    snprintf(newf, sizeof newf, "%s/new", OUTDIR);
    ws_link("bob", "hl_out", newf);
    ws_path(p, sizeof p, "alice", "secret2");
    ws_put("alice", "secret2", "alice2", 0600);
    ws_link("bob", "hl_alice", p);
    ws_link("bob", "rel_alice", "../alice/secret2");

    static const char *const reads[] = {"hl_data", "hl_alice", "rel_alice", "hl_dir/pg.log",
                                        NULL};
    for (size_t i = 0; reads[i]; i++) {
        path_tool("bob", "cat", reads[i], &r);
        expect_failed_run(reads[i], &r);
        EXPECT(reads[i], &r, r.rep->error == AOS_ERR_NOT_FOUND && HAS(r.err, "No such file"));
        EXPECT(reads[i], &r, r.out[0] == 0);
        res_free(&r);
    }
    path_tool("bob", "ls", "hl_dir/", &r);
    expect_failed_run("ls hl_dir/", &r);
    res_free(&r);
    static const char *const writes[] = {"hl_out", "hl_alice", "rel_alice", "hl_data",
                                         "hl_dir/pwned", NULL};
    for (size_t i = 0; writes[i]; i++) {
        run_j("bob", "write_file", json_pack("{s:s, s:s}", "path", writes[i], "content",
                                             "pwned"), 0, &r);
        expect_failed_run(writes[i], &r);
        EXPECT(writes[i], &r, HAS(r.err, "nonexistent") ||
                              HAS(r.err, "No such file") || HAS(r.err, "Read-only"));
        res_free(&r);
    }
    sh("bob", "echo pwned > hl_out; echo pwned >> hl_data; echo pwned > hl_alice; "
              "cp /etc/passwd hl_dir/x; cat hl_data", 0, &r);
    EXPECT_REPLY("sh writes through host links", &r);
    EXPECT("sh writes through host links", &r, !pgline[0] || !HAS(r.out, pgline));
    res_free(&r);
    assert_false(host_exists(newf));
    read_host(p, host1, sizeof host1);
    assert_string_equal(host1, "alice2");
    read_host(pglog, host1, sizeof host1);
    assert_false(HAS(host1, "pwned"));
    snprintf(p, sizeof p, "%s/pwned", DATA);
    assert_false(host_exists(p));
    snprintf(p, sizeof p, "%s/x", DATA);
    assert_false(host_exists(p));
    still_serving();
}

/* ---- 4. fork bomb ---------------------------------------------------------------------- */

typedef struct {
    const char *marker;
    atomic_int stop;
    int max;
} sampler;

static void *sample_main(void *arg)
{
    sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        int n = marker_procs(s->marker, NULL, 0);
        if (n > s->max)
            s->max = n;
        nap_ms(25);
    }
    return NULL;
}

static void a_fork_bomb_is_bounded_and_leaves_nothing(void **st)
{
    (void)st;
    NEED_SETUP();
    char m[32], cmd[256], left[400];
    marker(m, sizeof m, 4);
    snprintf(cmd, sizeof cmd, "b() { sleep 60.%s & b & b; }; b; sleep 60.%s", m, m);
    sampler s = {.marker = m};
    atomic_init(&s.stop, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sample_main, &s), 0);
    run_res r;
    sh("bomber", cmd, 3000, &r);
    atomic_store(&s.stop, 1);
    pthread_join(t, NULL);
    EXPECT_REPLY("fork bomb", &r);
    print_message("fork bomb: at most %d processes of it seen on the host\n", s.max);
    /* it ends by its timeout, or by itself once its own shell cannot fork ("Cannot fork":
     * the limit was hit) */
    EXPECT("fork bomb", &r, HAS(r.err, "Cannot fork"));
    EXPECT("fork bomb", &r, (r.rep->error == AOS_ERR_TIMEOUT && r.rep->timed_out) ||
                            (r.rep->exit_status > 0 && !r.rep->timed_out));
    EXPECT("fork bomb", &r, r.elapsed_ms < 3000 + 2000);
    /* the pids cgroup bounds the whole run (bubblewrap's two processes included) */
    if (CG_PIDS_ON && s.max > (int)TOOL_PROCESSES) {
        show("fork bomb", &r);
        fail_msg("fork bomb: %d processes at once, over the pids limit of %u", s.max,
                 TOOL_PROCESSES);
    }
    res_free(&r);
    int n = wait_no_marker(m, 2000, left, sizeof left);
    if (n)
        fail_msg("fork bomb: %d processes outlived the run, e.g. %s", n, left);
    still_serving();
}

/* ---- 5. memory bomb -------------------------------------------------------------------- */

static int count_of(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int host_has_swap(void)
{
    char mi[8192];
    read_host("/proc/meminfo", mi, sizeof mi);
    const char *p = strstr(mi, "SwapTotal:");
    return p && strtoull(p + 10, NULL, 10) > 0;
}

static void a_memory_bomb_is_stopped_at_the_limit(void **st)
{
    (void)st;
    NEED_SETUP();
    NEED_PERL();
    run_res r;
    /* one process: the address-space limit refuses the allocation */
    sh("bomber", "perl -e '$x = q(x) x (900 << 20); print length($x), qq(\\n)'", 0, &r);
    expect_failed_run("one 900 MiB allocation", &r);
    EXPECT("one 900 MiB allocation", &r, HAS(r.err, "Out of memory") || r.rep->signal);
    EXPECT("one 900 MiB allocation", &r, !HAS(r.out, "943718400"));
    EXPECT("one 900 MiB allocation", &r,
           r.rep->peak_rss_kb <= (uint64_t)TOOL_MEMORY_MB * 1024 + 4096);
    res_free(&r);

    /* four processes of 200 MiB each: together over the run's memory cgroup */
    sh("bomber", "perl -e 'fork; fork; my $x = q(x) x (200 << 20); sleep 2; "
                 "print qq(alive\\n)'; echo end", 20000, &r);
    EXPECT_REPLY("4 x 200 MiB", &r);
    int alive = count_of(r.out, "alive\n");
    print_message("4 x 200 MiB: %d of 4 lived, peak %llu KiB, error %s, signal %d\n", alive,
                  (unsigned long long)r.rep->peak_rss_kb, aos_err_name((aos_err)r.rep->error),
                  r.rep->signal);
    EXPECT("4 x 200 MiB", &r, r.rep->peak_rss_kb <= (uint64_t)TOOL_MEMORY_MB * 1024 + 4096);
    if (CG_MEM_ON && !host_has_swap())
        EXPECT("4 x 200 MiB", &r, alive < 4 || r.rep->error == AOS_ERR_QUOTA);
    res_free(&r);
    still_serving();
}

/* ---- 6. CPU past the time limit -------------------------------------------------------- */

static void a_cpu_spin_is_killed_at_its_time_limit(void **st)
{
    (void)st;
    NEED_SETUP();
    run_res r;
    sh("spinner", "while :; do :; done", 2000, &r);
    EXPECT_REPLY("spin", &r);
    EXPECT("spin", &r, r.rep->error == AOS_ERR_TIMEOUT && r.rep->timed_out &&
                       r.rep->exit_status == -1);
    EXPECT("spin", &r, HAS((const char *)r.rep->error_text.data, "2000 ms"));
    EXPECT("spin", &r, r.rep->duration_us >= 1900000 && r.rep->duration_us < 4000000);
    EXPECT("spin", &r, r.elapsed_ms < 4000);
    json_t *to = json_object_get(r.res, "timed_out");
    EXPECT("spin", &r, json_is_true(to) &&
                       !strcmp(json_string_value(json_object_get(r.res, "error")), "TIMEOUT"));
    res_free(&r);
    still_serving();
}

/* ---- 7. a daemon that setsid()s to outlive its run --------------------------------------- */

static void a_setsid_daemon_does_not_outlive_its_run(void **st)
{
    (void)st;
    NEED_SETUP();
    char m[32], cmd[512], left[400];
    run_res r;
    /* the run times out with the daemon running */
    marker(m, sizeof m, 7);
    snprintf(cmd, sizeof cmd, "(setsid sh -c 'sleep 300.%s; :' &); sleep 30.%s", m, m);
    sh("daemon", cmd, 2000, &r);
    EXPECT_REPLY("setsid daemon, timeout", &r);
    EXPECT("setsid daemon, timeout", &r, r.rep->error == AOS_ERR_TIMEOUT && r.rep->timed_out);
    res_free(&r);
    int n = wait_no_marker(m, 2000, left, sizeof left);
    if (n)
        fail_msg("%d processes outlived the run that timed out, e.g. %s", n, left);

    /* the run exits at once, leaving its daemon (and a perl double fork) behind */
    marker(m, sizeof m, 71);
    snprintf(cmd, sizeof cmd, "(setsid sh -c 'sleep 300.%s; :' > /dev/null 2>&1 &); "
             "%s echo started", m, HAVE_PERL ? "" : "#");
    if (HAVE_PERL) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "(setsid sh -c 'sleep 300.%s; :' > /dev/null 2>&1 &); "
                 "perl -MPOSIX -e 'exit if fork; POSIX::setsid(); exit if fork; "
                 "open(STDOUT, \">/dev/null\"); open(STDERR, \">/dev/null\"); "
                 "exec(\"sleep\", \"301.%s\")'; echo started", m, m);
        snprintf(cmd, sizeof cmd, "%s", tmp);
    }
    sh("daemon", cmd, 0, &r);
    EXPECT_REPLY("setsid daemon, exit", &r);
    EXPECT("setsid daemon, exit", &r, r.rep->exit_status == 0 && HAS(r.out, "started") &&
                                      r.rep->error == AOS_OK);
    res_free(&r);
    n = wait_no_marker(m, 2000, left, sizeof left);
    if (n)
        fail_msg("%d processes outlived the run that exited, e.g. %s", n, left);
    still_serving();
}

/* ---- 8. disk ------------------------------------------------------------------------------ */

static void a_huge_file_stops_at_the_file_size_limit(void **st)
{
    (void)st;
    NEED_SETUP();
    Aos__Tool__ListReply *l = tool_list();
    int found = 0, on = layer_on(l, "disk_quota", &found);
    aos__tool__list_reply__free_unpacked(l, NULL);
    assert_true(found);
    print_message("disk_quota layer: %s\n", on ? "on" : "off (RLIMIT_FSIZE is the bound)");
    run_res r;
    char big[512];
    ws_path(big, sizeof big, "filler", "big");
    sh("filler", "head -c 400M /dev/zero > big", 0, &r);
    EXPECT_REPLY("400 MiB file", &r);
    EXPECT("400 MiB file", &r, r.rep->error == AOS_ERR_QUOTA && r.rep->signal == SIGXFSZ);
    EXPECT("400 MiB file", &r, HAS((const char *)r.rep->error_text.data, "size limit") &&
                               HAS(r.err, "File size limit exceeded"));
    res_free(&r);
    struct stat sb;
    assert_int_equal(stat(big, &sb), 0);
    print_message("400 MiB file: %lld bytes on the host\n", (long long)sb.st_size);
    assert_true((uint64_t)sb.st_size <= TOOL_FILE_BYTES);
    unlink(big);

    /* the private /tmp is a 64 MiB tmpfs */
    sh("filler", "head -c 100M /dev/zero > /tmp/big; echo st=$?; ls -l /tmp/big", 0, &r);
    EXPECT_REPLY("100 MiB into /tmp", &r);
    EXPECT("100 MiB into /tmp", &r, HAS(r.err, "No space left") && !HAS(r.out, "st=0"));
    res_free(&r);
    still_serving();
}

/* ---- 9. output ---------------------------------------------------------------------------- */

static void a_gigabyte_on_stdout_is_capped_and_answered(void **st)
{
    (void)st;
    NEED_SETUP();
    run_res r;
    sh("talker", "head -c 1G /dev/zero", 0, &r);
    EXPECT_REPLY("1 GiB on stdout", &r);
    print_message("1 GiB on stdout: %llu bytes read, %llu kept, %llu streamed, %llu ms, %s\n",
                  (unsigned long long)r.rep->stdout_bytes,
                  (unsigned long long)r.rep->stdout_data.len,
                  (unsigned long long)r.streamed_out, (unsigned long long)r.elapsed_ms,
                  aos_err_name((aos_err)r.rep->error));
    EXPECT("1 GiB on stdout", &r, r.rep->error == AOS_ERR_QUOTA || r.rep->stdout_truncated);
    EXPECT("1 GiB on stdout", &r, r.rep->stdout_truncated &&
                                  r.rep->stdout_data.len <= TOOL_OUTPUT_CAP &&
                                  r.streamed_out <= TOOL_OUTPUT_CAP);
    if (r.rep->error == AOS_ERR_QUOTA)
        EXPECT("1 GiB on stdout", &r, HAS((const char *)r.rep->error_text.data,
                                          "output limit") &&
                                      r.rep->stdout_bytes < TOOL_OUTPUT_CAP + 80 * MIB);
    EXPECT("1 GiB on stdout", &r, r.elapsed_ms < 30000);
    res_free(&r);
    still_serving();
}

/* ---- 10. the network and aosd's sockets --------------------------------------------------- */

static void connecting_out_of_the_sandbox_fails(void **st)
{
    (void)st;
    NEED_SETUP();
    NEED_PERL();
    /* a host listener that is reachable from the host, and an abstract unix socket */
    int tl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(tl >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(tl, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(tl, 8), 0);
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(tl, (struct sockaddr *)&sin, &sl), 0);
    int port = ntohs(sin.sin_port);
    int al = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(al >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char aname[64];
    snprintf(aname, sizeof aname, "aos-h2-%s", TOK);
    memcpy(sun.sun_path + 1, aname, strlen(aname));
    assert_int_equal(bind(al, (struct sockaddr *)&sun,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(aname))),
                     0);
    assert_int_equal(listen(al, 8), 0);

    put_attack("netter");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "perl attack.pl tcp 127.0.0.1 5432; perl attack.pl tcp 127.0.0.1 %d; "
             "perl attack.pl unix %s/control.sock; perl attack.pl unix %s/run/tool.sock; "
             "perl attack.pl unix %s/pgsock/.s.PGSQL.5432; perl attack.pl unix @%s",
             port, DATA, DATA, DATA, aname);
    run_res r;
    sh("netter", cmd, 0, &r);
    EXPECT_REPLY("connect out", &r);
    EXPECT("connect out", &r, count_of(r.out, " rc=-1 errno=") == 6 && !HAS(r.out, "rc=0"));
    char want[512];
    snprintf(want, sizeof want, "tcp 127.0.0.1:%d rc=-1 errno=%d\n", port, ECONNREFUSED);
    EXPECT("connect out", &r, HAS(r.out, want));
    snprintf(want, sizeof want, "unix %s/control.sock rc=-1 errno=%d\n", DATA, ENOENT);
    EXPECT("connect out", &r, HAS(r.out, want));
    snprintf(want, sizeof want, "unix @%s rc=-1 errno=%d\n", aname, ECONNREFUSED);
    EXPECT("connect out", &r, HAS(r.out, want));
    res_free(&r);
    /* nothing reached the listeners */
    assert_true(accept(tl, NULL, NULL) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    assert_true(accept(al, NULL, NULL) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    close(tl);
    close(al);
    /* the sandbox has a loopback of its own and nothing else */
    sh("netter", "cat /proc/net/dev | tail -n +3 | cut -d: -f1", 0, &r);
    EXPECT_REPLY("interfaces", &r);
    EXPECT("interfaces", &r, r.rep->exit_status == 0 && !strcmp(r.out, "    lo\n"));
    res_free(&r);
    still_serving();
}

/* ---- 11. ptrace --------------------------------------------------------------------------- */

static void ptrace_of_any_process_fails(void **st)
{
    (void)st;
    NEED_SETUP();
    NEED_PERL();
    put_attack("tracer");
    char cmd[512], want[128];
    snprintf(cmd, sizeof cmd, "sleep 30 & perl attack.pl ptrace 1; perl attack.pl ptrace $!; "
             "perl attack.pl ptrace %d; perl attack.pl ptrace %d; perl attack.pl ptrace %d; "
             "kill %%1", (int)TOOL_PID, (int)VICTIM, (int)h_aosd_pid(H));
    run_res r;
    sh("tracer", cmd, 0, &r);
    EXPECT_REPLY("ptrace", &r);
    EXPECT("ptrace", &r, count_of(r.out, " rc=-1 errno=1\n") == 5 && !HAS(r.out, "rc=0"));
    snprintf(want, sizeof want, "ptrace %d rc=-1 errno=1\n", (int)TOOL_PID);
    EXPECT("ptrace", &r, HAS(r.out, want));
    res_free(&r);
    sh("tracer", "strace -f true 2>&1 | head -3; gdb -batch -p 1 2>&1 | head -3; echo done", 0,
       &r);
    EXPECT_REPLY("ptrace tools", &r);
    res_free(&r);
    char status[4096];
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/status", (int)TOOL_PID);
    read_host(p, status, sizeof status);
    assert_true(HAS(status, "TracerPid:\t0\n"));
    snprintf(p, sizeof p, "/proc/%d/status", (int)VICTIM);
    read_host(p, status, sizeof status);
    assert_true(HAS(status, "TracerPid:\t0\n"));
    still_serving();
}

/* ---- 12. kill ----------------------------------------------------------------------------- */

static void kill_of_processes_outside_misses(void **st)
{
    (void)st;
    NEED_SETUP();
    char cmd[512], m[32], left[400], want[128];
    run_res r;
    snprintf(cmd, sizeof cmd, "kill -9 %d; echo k1=$?; kill -9 %d; echo k2=$?; kill -9 %d; "
             "echo k3=$?", (int)TOOL_PID, (int)VICTIM, (int)h_aosd_pid(H));
    sh("killer", cmd, 0, &r);
    EXPECT_REPLY("kill -9 host pids", &r);
    EXPECT("kill -9 host pids", &r, HAS(r.out, "k1=1\n") && HAS(r.out, "k2=1\n") &&
                                    HAS(r.out, "k3=1\n") && HAS(r.err, "No such process"));
    res_free(&r);
    if (HAVE_PERL) {
        put_attack("killer");
        snprintf(cmd, sizeof cmd, "perl attack.pl kill %d; perl attack.pl kill %d",
                 (int)TOOL_PID, (int)VICTIM);
        sh("killer", cmd, 0, &r);
        EXPECT_REPLY("kill(2) of host pids", &r);
        snprintf(want, sizeof want, "kill %d rc=-1 errno=%d\n", (int)TOOL_PID, ESRCH);
        EXPECT("kill(2) of host pids", &r, HAS(r.out, want) && !HAS(r.out, "rc=0"));
        res_free(&r);
    }
    /* kill -1: everything the run may signal, which is only its own namespace */
    marker(m, sizeof m, 12);
    snprintf(cmd, sizeof cmd, "sleep 100.%s & sleep 0.2; kill -9 -1; echo after=$?; wait", m);
    sh("killer", cmd, 10000, &r);
    EXPECT_REPLY("kill -9 -1", &r);
    EXPECT("kill -9 -1", &r, r.rep->error == AOS_OK && HAS(r.out, "after=0\n"));
    res_free(&r);
    if (HAVE_PERL) {
        sh("killer", "perl attack.pl kill -1; echo after", 10000, &r);
        EXPECT_REPLY("kill(-1, 9)", &r);
        res_free(&r);
    }
    int n = wait_no_marker(m, 2000, left, sizeof left);
    if (n)
        fail_msg("kill -1: %d processes of the run left, e.g. %s", n, left);
    still_serving(); /* aos-tool, aosd and the victim are all alive */
}

/* ---- 13. mount, unshare, setns ------------------------------------------------------------ */

static void mount_unshare_and_setns_fail(void **st)
{
    (void)st;
    NEED_SETUP();
    run_res r;
    sh("mounter", "mkdir -p x; mount -t tmpfs none /workspace/x; echo m=$?; "
                  "unshare -r true; echo u=$?; unshare -m true; echo um=$?; "
                  "unshare -n true; echo un=$?; unshare -p -f true; echo up=$?; "
                  "nsenter -t 1 -m true; echo ns=$?; nsenter -t 1 -U true; echo nu=$?", 0, &r);
    EXPECT_REPLY("mount/unshare/nsenter", &r);
    static const char *const bad[] = {"m=0\n", "u=0\n", "um=0\n", "un=0\n", "up=0\n",
                                      "ns=0\n", "nu=0\n", NULL};
    for (size_t i = 0; bad[i]; i++)
        EXPECT("mount/unshare/nsenter", &r, HAS(r.out, "=") && !HAS(r.out, bad[i]));
    EXPECT("mount/unshare/nsenter", &r, HAS(r.err, "Operation not permitted") ||
                                        HAS(r.err, "superuser"));
    res_free(&r);
    if (HAVE_PERL) {
        put_attack("mounter");
        sh("mounter", "perl attack.pl mount /workspace/x; perl attack.pl mount /tmp; "
                      "perl attack.pl unshare 0x10000000; perl attack.pl unshare 0x20000; "
                      "perl attack.pl unshare 0x40000000; "
                      "for n in mnt user pid net ipc uts cgroup; do "
                      "perl attack.pl setns /proc/1/ns/$n; done", 0, &r);
        EXPECT_REPLY("mount(2), unshare(2), setns(2)", &r);
        EXPECT("mount(2), unshare(2), setns(2)", &r,
               count_of(r.out, " rc=-1 errno=") == 12 && !HAS(r.out, "rc=0"));
        EXPECT("mount(2), unshare(2), setns(2)", &r,
               HAS(r.out, "mount /workspace/x rc=-1 errno=1\n") &&
               HAS(r.out, "unshare 0x10000000 rc=-1 errno=1\n") &&
               HAS(r.out, "setns /proc/1/ns/mnt rc=-1 errno=1\n"));
        res_free(&r);
    }
    /* nothing got mounted on the host */
    char mi[1 << 16], p[512];
    read_host("/proc/self/mountinfo", mi, sizeof mi);
    ws_path(p, sizeof p, "mounter", "x");
    assert_false(HAS(mi, p));
    still_serving();
}

/* ---- 14. setuid --------------------------------------------------------------------------- */

static void setuid_binaries_give_no_privilege(void **st)
{
    (void)st;
    NEED_SETUP();
    run_res r;
    sh("suid", "ls -l /usr/bin/su /usr/bin/passwd /usr/bin/mount 2>&1; "
               "grep NoNewPrivs /proc/self/status; "
               "su -c 'id -u' root < /dev/null; echo su=$?; "
               "passwd -d agent < /dev/null; echo pw=$?; "
               "mount -t tmpfs none /tmp; echo mo=$?; id -u", 10000, &r);
    EXPECT_REPLY("setuid", &r);
    EXPECT("setuid", &r, HAS(r.out, "NoNewPrivs:\t1\n"));
    EXPECT("setuid", &r, !HAS(r.out, "su=0\n") && !HAS(r.out, "pw=0\n") &&
                         !HAS(r.out, "mo=0\n"));
    EXPECT("setuid", &r, !HAS(r.out, "\n0\n") && HAS(r.out, "\n1000\n"));
    if (HAS(r.out, "-rws"))
        print_message("setuid: a setuid binary is in /usr, and it gave nothing\n");
    res_free(&r);
    still_serving();
}

/* ---- 15. /proc of host processes ---------------------------------------------------------- */

static void host_processes_are_invisible_in_proc(void **st)
{
    (void)st;
    NEED_SETUP();
    char env[16384], p[64], path_line[4096] = "";
    snprintf(p, sizeof p, "/proc/%d/environ", (int)TOOL_PID);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = read(fd, env, sizeof env - 1);
    close(fd);
    assert_true(n >= 0);
    env[n] = 0;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(env + i) + 1)
        if (!strncmp(env + i, "PATH=", 5) && strcmp(env + i, "PATH=/usr/local/bin:/usr/bin:/bin"))
            snprintf(path_line, sizeof path_line, "%s", env + i);
    run_res r;
    snprintf(p, sizeof p, "/proc/%d/environ", (int)TOOL_PID);
    path_tool("procer", "cat", p, &r);
    expect_failed_run("cat aos-tool's environ", &r);
    EXPECT("cat aos-tool's environ", &r, HAS(r.err, "No such file") && r.out[0] == 0);
    res_free(&r);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls /proc/%d /proc/%d; ls -d /proc/[0-9]*; "
             "cat /proc/*/environ | tr '\\0' '\\n'", (int)TOOL_PID, (int)h_aosd_pid(H));
    sh("procer", cmd, 0, &r);
    EXPECT_REPLY("look through /proc", &r);
    EXPECT("look through /proc", &r, HAS(r.err, "No such file") &&
                                     (!path_line[0] || !HAS(r.out, path_line)));
    char own[64];
    snprintf(own, sizeof own, "/proc/%d\n", (int)TOOL_PID);
    EXPECT("look through /proc", &r, !HAS(r.out, own));
    res_free(&r);
    still_serving();
}

/* ---- 16. argument injection --------------------------------------------------------------- */

static void arguments_are_one_argv_element_each(void **st)
{
    (void)st;
    NEED_SETUP();
    ws_put("injector", "canary", "canary\n", 0644);
    ws_put("injector", "lines", "a-nb\n--help me\nplain\n", 0644);
    run_res r;
    static const char *const paths[] = {"; rm -rf /workspace", "$(touch /workspace/pwned)",
                                        "`touch /workspace/pwned`", "-rf", "--help",
                                        "canary; touch pwned", "| touch pwned", NULL};
    for (size_t i = 0; paths[i]; i++) {
        path_tool("injector", "cat", paths[i], &r);
        expect_failed_run(paths[i], &r);
        char want[256];
        snprintf(want, sizeof want, "cat: '%s': No such file", paths[i]);
        char want2[256];
        snprintf(want2, sizeof want2, "cat: %s: No such file", paths[i]);
        EXPECT(paths[i], &r, r.rep->error == AOS_ERR_NOT_FOUND &&
                             (HAS(r.err, want) || HAS(r.err, want2)));
        res_free(&r);
        path_tool("injector", "ls", paths[i], &r);
        expect_failed_run(paths[i], &r);
        EXPECT(paths[i], &r, r.rep->error == AOS_ERR_NOT_FOUND && HAS(r.err, "No such file") &&
                             !HAS(r.out, "Usage"));
        res_free(&r);
    }
    run_j("injector", "grep", json_pack("{s:s, s:s}", "pattern", "-n", "path", "lines"), 0, &r);
    EXPECT_REPLY("grep -n as the pattern", &r);
    EXPECT("grep -n as the pattern", &r, r.rep->exit_status == 0 && HAS(r.out, "a-nb") &&
                                         !HAS(r.out, "plain"));
    res_free(&r);
    run_j("injector", "grep", json_pack("{s:s, s:s}", "pattern", "--help", "path", "lines"), 0,
          &r);
    EXPECT_REPLY("grep --help as the pattern", &r);
    EXPECT("grep --help as the pattern", &r, r.rep->exit_status == 0 &&
                                             HAS(r.out, "--help me") && !HAS(r.out, "Usage"));
    res_free(&r);
    run_j("injector", "grep", json_pack("{s:s, s:s}", "pattern", "x", "path",
                                        "--include=*; touch pwned"), 0, &r);
    expect_failed_run("grep path injection", &r);
    EXPECT("grep path injection", &r, HAS(r.err, "No such file"));
    res_free(&r);
    run_j("injector", "write_file", json_pack("{s:s, s:s}", "path", "$(touch pwned)",
                                              "content", "x"), 0, &r);
    EXPECT_REPLY("write_file odd name", &r);
    EXPECT("write_file odd name", &r, r.rep->exit_status == 0);
    res_free(&r);
    char p[512];
    ws_path(p, sizeof p, "injector", "pwned");
    assert_false(host_exists(p));
    ws_path(p, sizeof p, "injector", "$(touch pwned)");
    assert_true(host_exists(p)); /* the file of that very name */
    ws_path(p, sizeof p, "injector", "canary");
    assert_true(host_exists(p));
    still_serving();
}

/* ---- 17. kill -9 of aos-tool with runs in flight ------------------------------------------ */

static void kill9_of_aos_tool_with_runs_in_flight(void **st)
{
    (void)st;
    NEED_SETUP();
    char m[32], cmd[128], left[400], p[512];
    marker(m, sizeof m, 17);
    /* each run leaves a line, so a run executed twice shows */
    snprintf(cmd, sizeof cmd, "echo %s >> runs; sleep 30.%s", m, m);
    ws_path(p, sizeof p, "inflight", "runs");
    unlink(p);
    bg_run *b[KILL_RUNS];
    for (int i = 0; i < KILL_RUNS; i++)
        b[i] = bg_start("inflight", cmd, 0, 20000);
    char sleeper[64];
    snprintf(sleeper, sizeof sleeper, "sleep 30.%s", m);
    if (!wait_procs(sleeper, KILL_RUNS, 10000))
        fail_msg("the %d runs did not all start (%d sleeping; aos-tool says %lld running)",
                 KILL_RUNS, procs_starting(sleeper), (long long)tool_stat("running"));
    nap_ms(300);
    /* the processes of the runs in flight: every one must die with aos-tool */
    pid_t before[256];
    int nb = 0;
    {
        DIR *d = opendir("/proc");
        assert_non_null(d);
        for (struct dirent *e; (e = readdir(d)) && nb < 256;) {
            pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
            char one[32];
            snprintf(one, sizeof one, "%d", (int)pid);
            if (pid > 0 && pid != getpid()) {
                char c[600], path[64];
                snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
                read_host(path, c, sizeof c);
                for (size_t i = 0; i + 1 < sizeof c && (c[i] || c[i + 1]); i++)
                    if (!c[i])
                        c[i] = ' ';
                if (strstr(c, m))
                    before[nb++] = pid;
            }
        }
        closedir(d);
    }
    assert_true(nb >= KILL_RUNS);
    pid_t old = TOOL_PID;
    uint64_t t_kill = aos_mono_ms();
    assert_int_equal(kill(old, SIGKILL), 0);
    int alive = nb;
    while (alive && aos_mono_ms() < t_kill + 2000) {
        alive = 0;
        for (int i = 0; i < nb; i++) {
            char c[600] = "", path[64];
            snprintf(path, sizeof path, "/proc/%d/cmdline", (int)before[i]);
            read_host(path, c, sizeof c);
            alive += c[0] != 0; /* a zombie's is empty */
        }
        if (alive)
            nap_ms(50);
    }
    if (alive)
        fail_msg("%d of the %d processes of the runs in flight outlived aos-tool by 2 s", alive,
                 nb);
    int answered_ok = 0;
    for (int i = 0; i < KILL_RUNS; i++) {
        bg_join(b[i]);
        run_res *r = &b[i]->r;
        print_message("run %d after kill -9: %s%s%s (%llu ms)\n", i, aos_err_name(r->rc),
                      r->error[0] ? ": " : "", r->error, (unsigned long long)r->elapsed_ms);
        if (r->rep)
            print_message("  its reply: exit %d signal %d error %s (%.*s) %llu ms\n",
                          r->rep->exit_status, r->rep->signal,
                          aos_err_name((aos_err)r->rep->error), (int)r->rep->error_text.len,
                          (const char *)r->rep->error_text.data,
                          (unsigned long long)(r->rep->duration_us / 1000));
        /* an answer or a clear error, before the call's own deadline ran out */
        EXPECT("in-flight run", r, r->rc == AOS_OK ? r->rep != NULL : r->error[0] != 0);
        EXPECT("in-flight run", r, r->rc != AOS_ERR_TIMEOUT && r->elapsed_ms < 20000 + 1000);
        answered_ok += r->rc == AOS_OK;
        bg_free(b[i]);
    }
    int n = wait_no_marker(m, 2000, left, sizeof left);
    if (n)
        fail_msg("%d processes of the runs are left, e.g. %s", n, left);
    TOOL_PID = h_wait_running(H, "tool", old, 30000);
    if (!TOOL_PID) {
        h_dump_log(H);
        fail_msg("aos-tool did not come back after kill -9");
    }
    still_serving();
    /* exactly once: a run whose aos-tool died is not started again behind its caller's
     * back (a tool's side effects would happen twice) */
    char runs[4096];
    read_host(p, runs, sizeof runs);
    int executed = count_of(runs, m);
    if (executed != KILL_RUNS)
        fail_msg("%d runs were executed %d times: aosd re-sent the runs in flight to the new "
                 "aos-tool (%d answered OK, after the second execution)", KILL_RUNS, executed,
                 answered_ok);
}

/* ---- 18. exactly once ------------------------------------------------------------------- */

static void one_run_counts_one_execution(void **st)
{
    (void)st;
    NEED_SETUP();
    int64_t e0 = tool_stat("executions");
    assert_true(e0 >= 0);
    char m[32], p[512];
    marker(m, sizeof m, 18);
    snprintf(p, sizeof p, "echo %s >> count", m);
    char *a = jdump(json_pack("{s:s}", "command", p));
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    /* the same request id sent twice: it runs once, whatever answers the second */
    for (int k = 0; k < 2; k++) {
        run_spec s1 = {.env_agent = "counter", .tool = "sh", .args = a, .rid = rid};
        run_res r;
        run_do(&s1, &r);
        if (k == 0) {
            EXPECT_REPLY("one run", &r);
            EXPECT("one run", &r, r.rep->exit_status == 0);
        } else if (r.rc != AOS_OK && r.rc != AOS_ERR_CONFLICT) {
            fail_msg("the same request again: %s: %s", aos_err_name(r.rc), r.error);
        }
        res_free(&r);
    }
    free(a);
    assert_int_equal(tool_stat("executions"), e0 + 1);
    char got[256];
    ws_path(p, sizeof p, "counter", "count");
    read_host(p, got, sizeof got);
    assert_int_equal(count_of(got, m), 1);
    still_serving();
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void expect_refused(const char *what, const run_spec *s, aos_err want, const char *text)
{
    run_res r;
    run_do(s, &r);
    int bad = r.rc != want || (text && !HAS(r.error, text));
    aos_err got = r.rc;
    char err[AOS_ERRMSG_MAX + 1];
    snprintf(err, sizeof err, "%s", r.error);
    if (bad)
        show(what, &r);
    res_free(&r); /* before a failure, which does not return */
    if (bad)
        fail_msg("%s: want %s%s%s, got %s: %s", what, aos_err_name(want), text ? " with " : "",
                 text ? text : "", aos_err_name(got), err);
}

static void bad_requests_are_refused_with_the_reason(void **st)
{
    (void)st;
    NEED_SETUP();
    const char *ok = "{\"command\":\"echo hi\"}";
    run_spec s = {.env_agent = "refused", .tool = "nope", .args = "{}"};
    expect_refused("no such tool", &s, AOS_ERR_NOT_FOUND, "nope");
    s = (run_spec){.env_agent = "refused", .tool = "sh", .args = "{\"command\":"};
    expect_refused("bad JSON", &s, AOS_ERR_USAGE, "JSON");
    s.args = "[\"echo\"]";
    expect_refused("not an object", &s, AOS_ERR_USAGE, "JSON object");
    s.args = "{}";
    expect_refused("missing required", &s, AOS_ERR_USAGE, "'command'");
    s.args = "{\"command\":5}";
    expect_refused("wrong type", &s, AOS_ERR_USAGE, "$.command");
    s.args = "{\"command\":\"x\",\"y\":1}";
    expect_refused("extra property", &s, AOS_ERR_USAGE, "'y'");
    s.args = "{\"command\":\"\"}";
    expect_refused("empty command", &s, AOS_ERR_USAGE, "$.command");
    s = (run_spec){.env_agent = "refused", .tool = "grep",
                   .args = "{\"pattern\":\"x\",\"path\":\".\",\"ignore_case\":\"yes\"}"};
    expect_refused("grep wrong type", &s, AOS_ERR_USAGE, "$.ignore_case");
    s = (run_spec){.env_agent = "refused", .tool = "http_get",
                   .args = "{\"url\":\"http://127.0.0.1:9/\"}"};
    expect_refused("network tool", &s, AOS_ERR_REFUSED, "network");

    /* agents: by the envelope and by the request */
    static const char *const bad_env[] = {"a/b", "..", ".", "../x", "a:b", ".hidden", NULL};
    for (size_t i = 0; bad_env[i]; i++) {
        s = (run_spec){.env_agent = bad_env[i], .tool = "sh", .args = ok};
        run_res r;
        run_do(&s, &r);
        if (r.rc != AOS_ERR_USAGE && r.rc != AOS_ERR_REFUSED) {
            show(bad_env[i], &r);
            fail_msg("agent_id '%s': want USAGE or REFUSED, got %s", bad_env[i],
                     aos_err_name(r.rc));
        }
        res_free(&r);
    }
    static const char *const bad_req[] = {"a/b", "..", "../x", "a:b", ".hidden", "x/../../y",
                                          NULL};
    for (size_t i = 0; bad_req[i]; i++) {
        s = (run_spec){.req_agent = bad_req[i], .tool = "sh", .args = ok};
        expect_refused(bad_req[i], &s, AOS_ERR_USAGE, "belongs to an agent");
    }
    s = (run_spec){.tool = "sh", .args = ok};
    expect_refused("no agent", &s, AOS_ERR_USAGE, "belongs to an agent");
    s = (run_spec){.env_agent = "mallory", .req_agent = "alice", .tool = "sh", .args = ok};
    expect_refused("naming another agent", &s, AOS_ERR_REFUSED, "alice");

    /* payloads that are not what the method takes: garbage bytes, arguments over the cap,
     * arguments that are not UTF-8; each answered with the reason, aos-tool unharmed */
    static const uint8_t junk[] = {0xff, 0x13, 0x37, 0x00, 0x42, 0x99, 0xde, 0xad};
    static const char *const methods[] = {"tool.run", "tool.list", "tool.show"};
    for (size_t i = 0; i < 3; i++) {
        aos_call_opts o = {.agent_id = "refused", .timeout_ms = CALL_MS};
        aos_reply r;
        aos_err e = aos_call(h_conn(H), &o, methods[i], junk, sizeof junk, &r);
        if (e != AOS_ERR_PROTO || !strstr(r.error, "decode"))
            fail_msg("%s with garbage: want PROTO, got %s: %s", methods[i], aos_err_name(e),
                     r.error);
        aos_reply_clear(&r);
    }
    size_t big = (2u << 20) + 16;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    memcpy(huge, "{\"command\":\"", 12);
    memcpy(huge + big - 2, "\"}", 2);
    huge[big] = 0;
    s = (run_spec){.env_agent = "refused", .tool = "sh", .args = huge};
    expect_refused("arguments over 2 MiB", &s, AOS_ERR_TOO_BIG, "at most");
    free(huge);
    s = (run_spec){.env_agent = "refused", .tool = "sh", .args = "{\"command\":\"\xff\xfe\"}"};
    expect_refused("arguments not UTF-8", &s, AOS_ERR_USAGE, "UTF-8");
    char p[512];
    static const char *const never[] = {"a", "x", "y", ".hidden", "mallory", NULL};
    for (size_t i = 0; never[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", WS, never[i]);
        if (host_exists(p))
            fail_msg("a refused run made %s", p);
    }
    still_serving();
}


/* The network_grant layer says "off: ... tools needing the network are refused": a run
 * granted the network must be refused too, not started without one (and answered
 * "unavailable, retry later", which no retry can change). */
/* A one-shot HTTP server on 0.0.0.0: what a network run may reach (the host's own address
 * on its interface, through slirp4netns) and what it may not (the host's loopback). */
typedef struct http1 {
    int fd, port, served;
    pthread_t t;
} http1;

static void *http1_loop(void *arg)
{
    http1 *h = arg;
    for (;;) {
        int c = accept(h->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[2048];
        ssize_t r = read(c, buf, sizeof buf);
        (void)r;
        static const char resp[] = "HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nhello-net";
        ssize_t w = write(c, resp, sizeof resp - 1);
        (void)w;
        close(c);
        h->served++;
    }
}

/* The first IPv4 address of an interface that is up and not loopback, or "" */
static void host_ipv4(char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = popen("hostname -I 2>/dev/null", "r");
    char line[512] = "";
    if (f && fgets(line, sizeof line, f))
        for (char *sv = NULL, *w = strtok_r(line, " \n", &sv); w; w = strtok_r(NULL, " \n", &sv))
            if (strchr(w, '.') && strncmp(w, "127.", 4)) {
                snprintf(out, cap, "%s", w);
                break;
            }
    if (f)
        pclose(f);
}

static void a_granted_network_run_goes_out_only_through_its_own_namespace(void **st)
{
    (void)st;
    NEED_SETUP();
    Aos__Tool__ListReply *l = tool_list();
    int net_on = layer_on(l, "network_grant", NULL);
    aos__tool__list_reply__free_unpacked(l, NULL);
    run_spec ungranted = {.env_agent = "netter", .tool = "http_get",
                          .args = "{\"url\":\"http://127.0.0.1:9/\"}"};
    expect_refused("network tool, not granted", &ungranted, AOS_ERR_REFUSED, "network");
    if (!net_on) {
        /* the host cannot give runs a network (no slirp4netns, or a /dev/net/tun
         * aos-tool's uid cannot open): a granted run is refused, never run without one */
        print_message("network grants are off on this host: checking the refusal\n");
        run_spec s = {.env_agent = "netter", .tool = "http_get",
                      .args = "{\"url\":\"http://127.0.0.1:9/\"}", .network = 1};
        expect_refused("network tool, granted", &s, AOS_ERR_REFUSED, "network");
        still_serving();
        return;
    }
    http1 h = {.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    assert_true(h.fd >= 0);
    int one = 1;
    setsockopt(h.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    assert_int_equal(bind(h.fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(h.fd, (struct sockaddr *)&a, &al), 0);
    h.port = ntohs(a.sin_port);
    assert_int_equal(listen(h.fd, 8), 0);
    assert_int_equal(pthread_create(&h.t, NULL, http1_loop, &h), 0);
    char ip[64], args[256];
    host_ipv4(ip, sizeof ip);
    /* the host's loopback, by the gateway's address and by 127.0.0.1: unreachable */
    const char *const lo[] = {"10.0.2.2", "127.0.0.1"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "{\"url\":\"http://%s:%d/\"}", lo[i], h.port);
        run_spec s = {.env_agent = "netter", .tool = "http_get", .args = args, .network = 1};
        run_res r;
        run_do(&s, &r);
        EXPECT_REPLY("http_get of the host's loopback", &r);
        EXPECT("http_get of the host's loopback", &r,
               r.rep->exit_status != 0 && !HAS(r.out, "hello-net"));
        res_free(&r);
    }
    if (ip[0]) {
        snprintf(args, sizeof args, "{\"url\":\"http://%s:%d/\"}", ip, h.port);
        run_spec s = {.env_agent = "netter", .tool = "http_get", .args = args, .network = 1};
        run_res r;
        run_do(&s, &r);
        EXPECT_REPLY("http_get of the host's own address", &r);
        EXPECT("http_get of the host's own address, through slirp4netns", &r,
               r.rep->exit_status == 0 && HAS(r.out, "hello-net"));
        res_free(&r);
    } else {
        print_message("no non-loopback IPv4 address on this host: outbound not checked\n");
    }
    shutdown(h.fd, SHUT_RDWR);
    close(h.fd);
    pthread_join(h.t, NULL);
    /* the runs' slirp4netns are gone with them: none is left under our aos-tool */
    nap_ms(200);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "pgrep -c -x -P %d slirp4netns", (int)TOOL_PID);
    FILE *f = popen(cmd, "r");
    char cnt[32] = "0";
    if (f && !fgets(cnt, sizeof cnt, f))
        snprintf(cnt, sizeof cnt, "0");
    if (f)
        pclose(f);
    assert_int_equal(atoi(cnt), 0);
    still_serving();
}

/* ---- two aosds on one host ------------------------------------------------------------- */

/* Runs of every aosd on a host are processes of one uid (aos-tool's): only their cgroups
 * tell them apart, so one aos-tool's clean-up of its run's cgroup must never reach a run of
 * another aosd's (it did when the cgroups were named per slot alone). */
static void two_aosds_on_one_host_leave_each_others_runs_alone(void **st)
{
    (void)st;
    NEED_SETUP();
    char m[32], cmd[256], cg[512];
    marker(m, sizeof m, 20);
    snprintf(cmd, sizeof cmd, "sleep 3.%s; echo survived", m);
    bg_run *b = bg_start("neighbour", cmd, 0, 0);
    char sleeper[64];
    snprintf(sleeper, sizeof sleeper, "sleep 3.%s", m);
    if (!wait_procs(sleeper, 1, 5000))
        fail_msg("the run did not start");
    pid_t mp = marker_pid(m);
    assert_true(mp > 0);
    pids_cgroup_of(mp, cg, sizeof cg);
    print_message("the run's pids cgroup: %s\n", cg[0] ? cg : "(none)");

    h_aosd *h2 = h_start(NULL);
    run_res r;
    char *a = jdump(json_pack("{s:s}", "command", "echo hi"));
    run_spec s = {.env_agent = "neighbour", .tool = "sh", .args = a, .conn = h_conn(h2)};
    run_do(&s, &r);
    free(a);
    bg_join(b);
    h_stop(h2); /* before any assertion: a failure must not leave it running */
    EXPECT_REPLY("a run of the second aosd", &r);
    EXPECT("a run of the second aosd", &r, r.rep->exit_status == 0 && !strcmp(r.out, "hi\n"));
    res_free(&r);
    /* the second aosd's aos-tool cleaned up its own run, not ours */
    int ok = b->r.rc == AOS_OK && b->r.rep && b->r.rep->signal == 0 &&
             b->r.rep->exit_status == 0 && !strcmp(b->r.out, "survived\n");
    if (!ok)
        show("the first aosd's run", &b->r);
    bg_free(b);
    if (!ok)
        fail_msg("a run of one aosd was killed when a second aosd's aos-tool cleaned up its "
                 "own run: its run cgroup %s is shared with the second aosd's runs", cg);
    still_serving();
}

/* A run's pids cgroup on the host while it runs ("" when it has none). */
static void cgroup_of_a_run(const char *agent, int kase, char *cg, size_t cap)
{
    char m[32], cmd[128];
    marker(m, sizeof m, kase);
    snprintf(cmd, sizeof cmd, "sleep 2.%s", m);
    bg_run *b = bg_start(agent, cmd, 0, 0);
    pid_t mp = 0;
    uint64_t end = aos_mono_ms() + 3000;
    while (!(mp = marker_pid(m)) && aos_mono_ms() < end)
        nap_ms(20);
    cg[0] = 0;
    if (mp)
        pids_cgroup_of(mp, cg, cap);
    bg_join(b);
    bg_free(b);
}

static void a_second_aosd_stopping_leaves_our_runs_their_cgroups(void **st)
{
    (void)st;
    NEED_SETUP();
    if (!CG_PIDS_ON)
        skip();
    char cg[512];
    cgroup_of_a_run("neighbour", 21, cg, sizeof cg);
    print_message("a run's pids cgroup: %s\n", cg);
    assert_true(HAS(cg, "tool/run-"));
    h_aosd *h2 = h_start(NULL);
    h_stop(h2);
    cgroup_of_a_run("neighbour", 22, cg, sizeof cg);
    if (!HAS(cg, "tool/run-"))
        fail_msg("after a second aosd on the host stopped, a run of the first is in pids "
                 "cgroup '%s', not a run cgroup of its own: its pids limit is gone", cg);
    still_serving();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reading_host_secrets_and_other_workspaces_fails),
        cmocka_unit_test(dotdot_and_absolute_paths_stay_in_the_sandbox),
        cmocka_unit_test(symlinks_out_of_the_workspace_resolve_inside),
        cmocka_unit_test(a_fork_bomb_is_bounded_and_leaves_nothing),
        cmocka_unit_test(a_memory_bomb_is_stopped_at_the_limit),
        cmocka_unit_test(a_cpu_spin_is_killed_at_its_time_limit),
        cmocka_unit_test(a_setsid_daemon_does_not_outlive_its_run),
        cmocka_unit_test(a_huge_file_stops_at_the_file_size_limit),
        cmocka_unit_test(a_gigabyte_on_stdout_is_capped_and_answered),
        cmocka_unit_test(connecting_out_of_the_sandbox_fails),
        cmocka_unit_test(ptrace_of_any_process_fails),
        cmocka_unit_test(kill_of_processes_outside_misses),
        cmocka_unit_test(mount_unshare_and_setns_fail),
        cmocka_unit_test(setuid_binaries_give_no_privilege),
        cmocka_unit_test(host_processes_are_invisible_in_proc),
        cmocka_unit_test(arguments_are_one_argv_element_each),
        cmocka_unit_test(bad_requests_are_refused_with_the_reason),
        cmocka_unit_test(a_granted_network_run_goes_out_only_through_its_own_namespace),
        cmocka_unit_test(one_run_counts_one_execution),
        cmocka_unit_test(two_aosds_on_one_host_leave_each_others_runs_alone),
        cmocka_unit_test(a_second_aosd_stopping_leaves_our_runs_their_cgroups),
        cmocka_unit_test(kill9_of_aos_tool_with_runs_in_flight), /* last but one: a new aos-tool */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
