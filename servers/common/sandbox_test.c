/* Tests of the server sandbox: each case forks a child that applies a server's sandbox and
 * then does allowed or forbidden things; the parent judges how the child ended. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* The tables are static: the test reads them from the source itself. */
#include "sandbox.c"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static const char *const servers[] = {"memory", "storage", "audit", "tool", "llm", "api"};
#define N_SERVERS (sizeof servers / sizeof servers[0])

/* What a child left behind: how it ended and what it wrote on stderr. */
typedef struct child {
    int status;
    char err[16384];
} child;

typedef void (*child_fn)(const void *arg);

/* Children end with _exit: exit() would run LeakSanitizer's check, which needs ptrace. */
static void run_child(child_fn fn, const void *arg, child *out)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 2);
        close(p[1]);
        fn(arg);
        _exit(99);
    }
    close(p[1]);
    size_t n = 0;
    for (;;) {
        char scratch[4096];
        char *dst = n + 1 < sizeof out->err ? out->err + n : scratch;
        size_t cap = n + 1 < sizeof out->err ? sizeof out->err - 1 - n : sizeof scratch;
        ssize_t r = read(p[0], dst, cap);
        if (r <= 0)
            break;
        if (dst != scratch)
            n += (size_t)r;
    }
    out->err[n] = '\0';
    close(p[0]);
    assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

static void apply_or_die(const char *name, const char *user)
{
    char why[256];
    sbx_opts o = {.name = name, .user = user, .parent = getppid()};
    sbx_report rep;
    memset(&rep, 0, sizeof rep);
    aos_err e = sbx_apply(&o, &rep, why, sizeof why);
    if (e) {
        dprintf(2, "sbx_apply(%s): %s\n", name, why);
        _exit(100);
    }
}

/* Both steps, as a server does them (no kept path: nothing on the host to write). */
static void enter_apply_or_die(const char *name, const char *user)
{
    char why[256];
    sbx_opts o = {.name = name, .user = user, .parent = getppid()};
    sbx_report rep;
    aos_err e = sbx_enter(&o, &rep, why, sizeof why);
    if (e) {
        dprintf(2, "sbx_enter(%s): %s\n", name, why);
        _exit(100);
    }
    apply_or_die(name, user);
}

static void expect_sigsys(const child *c, const char *what)
{
    if (!WIFSIGNALED(c->status) || WTERMSIG(c->status) != SIGSYS)
        fail_msg("%s: expected death by SIGSYS, got %s %d; stderr: %s", what,
                 WIFSIGNALED(c->status) ? "signal" : "exit",
                 WIFSIGNALED(c->status) ? WTERMSIG(c->status) : WEXITSTATUS(c->status),
                 c->err);
}

static void expect_exit(const child *c, int code, const char *what)
{
    if (!WIFEXITED(c->status) || WEXITSTATUS(c->status) != code)
        fail_msg("%s: expected exit %d, got %s %d; stderr: %s", what, code,
                 WIFSIGNALED(c->status) ? "signal" : "exit",
                 WIFSIGNALED(c->status) ? WTERMSIG(c->status) : WEXITSTATUS(c->status),
                 c->err);
}

/* ---- forbidden syscalls kill the whole process ----------------------------------- */

/* Arguments are harmless ones, so that a sandbox that failed to load is caught by the
 * child's exit code, not by damage: mount with NULLs is EFAULT, unshare(0) a no-op. */
typedef struct forbidden {
    const char *name;
    long nr;
    long a[6];
} forbidden;

static char *const true_argv[] = {"/bin/true", NULL};
static char *const no_env[] = {NULL};

static const forbidden forbidden_calls[] = {
    {"ptrace", SYS_ptrace, {0}},
    {"execve", SYS_execve, {(long)"/bin/true", (long)true_argv, (long)no_env}},
    {"mount", SYS_mount, {0}},
    {"unshare", SYS_unshare, {0}},
    {"personality", SYS_personality, {0xffffffffL}},
    {"bpf", SYS_bpf, {-1}},
    {"kexec_load", SYS_kexec_load, {0, 0, 0, 0xdeadbeefL}},
    {"init_module", SYS_init_module, {0, 0, (long)""}},
    {"process_vm_readv", SYS_process_vm_readv, {0}},
    {"setuid", SYS_setuid, {-1}},
    {"setresuid", SYS_setresuid, {-1, -1, -1}},
    {"setns", SYS_setns, {-1, 0}},
    {"fork-style clone", SYS_clone, {SIGCHLD}},
    {"kill", SYS_kill, {0, 0}},
    {"chroot", SYS_chroot, {0}},
};

typedef struct forbid_arg {
    const char *server;
    const forbidden *f;
} forbid_arg;

static void child_forbidden(const void *arg)
{
    const forbid_arg *fa = arg;
    long a[6];
    memcpy(a, fa->f->a, sizeof a);
    if (fa->f->nr == SYS_process_vm_readv)
        a[0] = getpid();
    if (fa->f->nr == SYS_kill)
        a[0] = getppid();
    apply_or_die(fa->server, NULL);
    syscall(fa->f->nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    _exit(0);   /* both sides of a clone that went through land here */
}

static void test_forbidden_kills(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_SERVERS; s++)
        for (size_t i = 0; i < sizeof forbidden_calls / sizeof forbidden_calls[0]; i++) {
            if (sbx_find(servers[s])->spawner)
                continue; /* a deny-list: test_tool_denylist */
            forbid_arg fa = {servers[s], &forbidden_calls[i]};
            child c;
            char what[96];
            snprintf(what, sizeof what, "%s calling %s", servers[s], forbidden_calls[i].name);
            run_child(child_forbidden, &fa, &c);
            expect_sigsys(&c, what);
        }
}

static void child_fork(const void *arg)
{
    apply_or_die(arg, NULL);
    pid_t pid = fork();
    (void)pid;
    _exit(0);
}

static void child_raw_socket(const void *arg)
{
    apply_or_die(arg, NULL);
    syscall(SYS_socket, AF_PACKET, SOCK_RAW, 0);
    _exit(0);
}

static void child_kill_parent_thread(const void *arg)
{
    apply_or_die(arg, NULL);
    /* tgkill is allowed towards our own threads only */
    syscall(SYS_tgkill, getppid(), getppid(), 0);
    _exit(0);
}

static void test_no_fork_no_raw_socket_no_signals_out(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_SERVERS; s++) {
        if (sbx_find(servers[s])->spawner)
            continue; /* it forks by design: test_tool_denylist */
        child c;
        run_child(child_fork, servers[s], &c);
        expect_sigsys(&c, "fork()");
        run_child(child_raw_socket, servers[s], &c);
        expect_sigsys(&c, "socket(AF_PACKET)");
        run_child(child_kill_parent_thread, servers[s], &c);
        expect_sigsys(&c, "tgkill to another process");
    }
}

/* ---- what servers do every day still works --------------------------------------- */

static void *thread_work(void *arg)
{
    int *fd = arg;
    char *p = malloc(1 << 20);  /* a thread's own malloc arena */
    if (!p)
        return NULL;
    memset(p, 7, 1 << 20);
    free(p);
    ssize_t w = write(*fd, "t", 1);
    return w == 1 ? arg : NULL;
}

typedef struct allowed_arg {
    const char *server;
    int enter;      /* both steps, not only sbx_apply */
} allowed_arg;

static int int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

static void child_allowed(const void *arg)
{
    const allowed_arg *aa = arg;
    const char *server = aa->server;
    int p[2];
    if (pipe(p))
        _exit(101);
    if (aa->enter)
        enter_apply_or_die(server, NULL);
    else
        apply_or_die(server, NULL);
    void *small = malloc(32), *big = malloc(8 << 20);
    if (!small || !big)
        _exit(102);
    memset(big, 1, 8 << 20);
    free(big);
    free(small);
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) || clock_gettime(CLOCK_REALTIME, &ts))
        _exit(103);
    struct timespec nap = {0, 1000000};
    if (nanosleep(&nap, NULL))
        _exit(104);
    if (write(p[1], "x", 1) != 1)
        _exit(105);
    char b;
    if (read(p[0], &b, 1) != 1 || b != 'x')
        _exit(106);
    /* A new thread after the sandbox: glibc tries clone3 (ENOSYS), then clone. */
    pthread_t t;
    void *res = NULL;
    if (pthread_create(&t, NULL, thread_work, &p[1]) || pthread_join(t, &res) || !res)
        _exit(107);
    if (read(p[0], &b, 1) != 1 || b != 't')
        _exit(108);
    if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
        _exit(109);
    /* Servers without a database may not open files; the refusal is an error, not a
     * death, because glibc's malloc opens /proc files and copes without them. */
    int fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
    int db = sbx_find(server)->lists[1] == sbx_db;
    if (db || SBX_SANITIZED) {
        if (fd < 0)
            _exit(110);
        close(fd);
    } else if (fd >= 0 || errno != EACCES) {
        _exit(111);
    }
    if (getpid() <= 0)
        _exit(112);
    /* qsort past 1 KiB asks sysinfo for the machine's memory (a sort in verify died so) */
    static int v[4096];
    for (int i = 0; i < 4096; i++)
        v[i] = (i * 2654435761u) % 4096;
    qsort(v, 4096, sizeof v[0], int_cmp);
    for (int i = 1; i < 4096; i++)
        if (v[i - 1] > v[i])
            _exit(113);
    _exit(0);
}

static void test_allowed_work(void **state)
{
    (void)state;
    for (int enter = 0; enter < 2; enter++)
        for (size_t s = 0; s < N_SERVERS; s++) {
            if (sbx_find(servers[s])->spawner)
                continue; /* allows everything but its deny-list */
            child c;
            allowed_arg aa = {servers[s], enter};
            char what[64];
            snprintf(what, sizeof what, "%s%s", servers[s], enter ? " after sbx_enter" : "");
            run_child(child_allowed, &aa, &c);
            expect_exit(&c, 0, what);
        }
}

static void child_abort(const void *arg)
{
    apply_or_die(arg, NULL);
    abort();
}

static void test_abort_still_aborts(void **state)
{
    (void)state;
    child c;
    run_child(child_abort, "llm", &c);
    assert_true(WIFSIGNALED(c.status));
    assert_int_equal(WTERMSIG(c.status), SIGABRT);
}

/* ---- the filter covers threads that ran before it -------------------------------- */

static int tsync_pipe[2];

static void *thread_ptrace_later(void *arg)
{
    (void)arg;
    char b;
    if (read(tsync_pipe[0], &b, 1) == 1)
        syscall(SYS_ptrace, 0, 0, 0, 0);
    return NULL;
}

static void child_tsync(const void *arg)
{
    pthread_t t;
    if (pipe(tsync_pipe) || pthread_create(&t, NULL, thread_ptrace_later, NULL))
        _exit(101);
    apply_or_die(arg, NULL);
    if (write(tsync_pipe[1], "go", 1) != 1)
        _exit(102);
    pthread_join(t, NULL);
    _exit(0);
}

static void test_threads_started_before_are_filtered(void **state)
{
    (void)state;
    child c;
    run_child(child_tsync, "memory", &c);
    expect_sigsys(&c, "ptrace from a thread started before the sandbox");
}

/* ---- AOS_SECCOMP_TRAP reports the syscall instead of dying silently --------------- */

static void child_trap(const void *arg)
{
    setenv("AOS_SECCOMP_TRAP", "1", 1);
    apply_or_die(arg, NULL);
    syscall(SYS_ptrace, 0, 0, 0, 0);
    _exit(0);
}

static void test_trap_mode_reports(void **state)
{
    (void)state;
    child c;
    run_child(child_trap, "audit", &c);
    expect_exit(&c, SBX_TRAP_EXIT, "trap mode");
    char want[64];
    snprintf(want, sizeof want, "seccomp: forbidden syscall %d\n", (int)SYS_ptrace);
    assert_non_null(strstr(c.err, want));
}

/* ---- limits, no_new_privs, seccomp mode, as the kernel sees them ----------------- */

static int wait_pipe[2];

static void child_wait(const void *arg)
{
    const char *const *a = arg;   /* {server, user} */
    apply_or_die(a[0], a[1]);
    if (write(wait_pipe[1], "r", 1) != 1)
        _exit(101);
    char b;
    /* EOF: the parent is done looking at us */
    ssize_t r = read(wait_pipe[0], &b, 1);
    if (a[1])
        syscall(SYS_setuid, 0);   /* forbidden after the drop: dies here */
    _exit(r == 0 ? 0 : 102);
}

/* The value of a "Key:" line in /proc/pid/status, or of a limit's soft column. */
static void proc_field(pid_t pid, const char *file, const char *key, char *out, size_t cap)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(n > 0);
    buf[n] = '\0';
    char *line = strstr(buf, key);
    assert_non_null(line);
    line += strlen(key);
    while (*line == ' ' || *line == '\t' || *line == ':')
        line++;
    size_t len = strcspn(line, "\n");
    snprintf(out, cap, "%.*s", (int)len, line);
}

/* Fork child_wait, let check() look at it while it is sandboxed, then let it go. */
static void with_waiting_child(const char *server, const char *user,
                               void (*check)(pid_t pid, const char *user), child *out)
{
    const char *a[2] = {server, user};
    int p[2], q[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pipe(q), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        close(q[1]);
        wait_pipe[1] = p[1];
        wait_pipe[0] = q[0];
        child_wait(a);
    }
    close(p[1]);
    close(q[0]);
    char b;
    ssize_t r = read(p[0], &b, 1);
    if (r == 1)
        check(pid, user);
    close(q[1]);
    close(p[0]);
    assert_int_equal(waitpid(pid, &out->status, 0), pid);
    out->err[0] = '\0';
    assert_int_equal(r, 1);
}

static const char *limits_server; /* the server test_limits_and_modes checks */

static void check_limits(pid_t pid, const char *user)
{
    (void)user;
    char v[128];
    proc_field(pid, "status", "NoNewPrivs:", v, sizeof v);
    assert_string_equal(v, "1");
    proc_field(pid, "status", "Seccomp:", v, sizeof v);
    assert_string_equal(v, "2");
    proc_field(pid, "limits", "Max core file size", v, sizeof v);
    assert_int_equal(strtoull(v, NULL, 10), 0);
    proc_field(pid, "limits", "Max open files", v, sizeof v);
    /* the front door holds its clients' connections: 8192; every other server 1024 */
    assert_true(strtoull(v, NULL, 10) <=
                (limits_server && !strcmp(limits_server, "api") ? 8192u : 1024u));
    proc_field(pid, "limits", "Max file size", v, sizeof v);
    assert_true(strncmp(v, "unlimited", 9) && strtoull(v, NULL, 10) <= SBX_FSIZE_MAX);
}

static void test_limits_and_modes(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_SERVERS; s++) {
        child c;
        limits_server = servers[s];
        with_waiting_child(servers[s], NULL, check_limits, &c);
        expect_exit(&c, 0, servers[s]);
    }
}

/* ---- the privilege drop (only when the test runs as root) ------------------------ */

static void check_dropped(pid_t pid, const char *user)
{
    uid_t uid;
    gid_t gid;
    char why[128], v[128], want[64];
    assert_int_equal(sbx_lookup_user(user, &uid, &gid, why, sizeof why), AOS_ERR_OK);
    proc_field(pid, "status", "Uid:", v, sizeof v);
    snprintf(want, sizeof want, "%u\t%u\t%u\t%u", (unsigned)uid, (unsigned)uid,
             (unsigned)uid, (unsigned)uid);
    assert_string_equal(v, want);
    proc_field(pid, "status", "Gid:", v, sizeof v);
    snprintf(want, sizeof want, "%u\t%u\t%u\t%u", (unsigned)gid, (unsigned)gid,
             (unsigned)gid, (unsigned)gid);
    assert_string_equal(v, want);
    proc_field(pid, "status", "Groups:", v, sizeof v);
    assert_string_equal(v, "");
    proc_field(pid, "status", "CapEff:", v, sizeof v);
    assert_string_equal(v, "0000000000000000");
    limits_server = NULL;
    check_limits(pid, user);
}

static void test_drop_privileges(void **state)
{
    (void)state;
    uid_t uid;
    gid_t gid;
    char why[128];
    if (geteuid() != 0 || sbx_lookup_user("nobody", &uid, &gid, why, sizeof why))
        skip();
    child c;
    with_waiting_child("memory", "nobody", check_dropped, &c);
    /* and setuid(0) afterwards is not even an error: it is a death */
    expect_sigsys(&c, "setuid(0) after the drop");
}

static void test_lookup_user(void **state)
{
    (void)state;
    uid_t uid;
    gid_t gid;
    char why[128];
    assert_int_equal(sbx_lookup_user(NULL, &uid, &gid, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(sbx_lookup_user("", &uid, &gid, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(sbx_lookup_user("root", &uid, &gid, why, sizeof why), AOS_ERR_REFUSED);
    assert_non_null(strstr(why, "root"));
    assert_int_equal(sbx_lookup_user("aos-no-such-user-x", &uid, &gid, why, sizeof why),
                     AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(why, "aos-no-such-user-x"));
}

/* ---- bad input changes nothing --------------------------------------------------- */

static void test_bad_arguments(void **state)
{
    (void)state;
    char why[128];
    /* these return before touching the process, so they run in the test itself */
    sbx_report rep;
    sbx_opts o = {.name = "nosuch", .parent = getppid()};
    assert_int_equal(sbx_apply(&o, &rep, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "nosuch"));
    assert_int_equal(sbx_enter(&o, &rep, why, sizeof why), AOS_ERR_USAGE);
    o.name = NULL;
    assert_int_equal(sbx_apply(&o, &rep, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(sbx_enter(&o, &rep, why, sizeof why), AOS_ERR_USAGE);
    o.name = "memory";
    assert_int_equal(sbx_apply(NULL, &rep, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(sbx_apply(&o, NULL, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(sbx_enter(NULL, &rep, why, sizeof why), AOS_ERR_USAGE);
    o.parent = 0;
    assert_int_equal(sbx_apply(&o, &rep, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0);
    assert_int_equal(prctl(PR_GET_SECCOMP, 0, 0, 0, 0), 0);
}

static void child_wrong_parent(const void *arg)
{
    (void)arg;
    char why[128];
    /* we are not our own parent: as if aosd had died and we had been re-parented */
    sbx_opts o = {.name = "memory", .parent = getpid()};
    sbx_report rep;
    memset(&rep, 0, sizeof rep);
    aos_err e = sbx_apply(&o, &rep, why, sizeof why);
    dprintf(2, "%s\n", why);
    _exit(e);
}

static void test_parent_gone(void **state)
{
    (void)state;
    child c;
    run_child(child_wrong_parent, NULL, &c);
    expect_exit(&c, AOS_ERR_UNAVAILABLE, "wrong parent");
    assert_non_null(strstr(c.err, "is gone"));
}

/* ---- the parent-death signal survives the drop and fires ------------------------- */

static void test_parent_death_kills(void **state)
{
    (void)state;
    /* Become the orphan's reaper, so we can see how the grandchild ended. */
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        pid_t leaf = fork();
        if (leaf < 0)
            _exit(101);
        if (leaf == 0) {
            char why[128];
            const char *user = geteuid() == 0 ? "nobody" : NULL;
            uid_t u;
            gid_t g;
            if (user && sbx_lookup_user(user, &u, &g, why, sizeof why))
                user = NULL;
            sbx_opts o = {.name = "tool", .user = user, .parent = getppid()};
            sbx_report rep;
            memset(&rep, 0, sizeof rep);
            if (sbx_apply(&o, &rep, why, sizeof why))
                _exit(102);
            pid_t me[2] = {getpid(), getpid()};   /* one for the parent, one for us */
            if (write(p[1], me, sizeof me) != sizeof me)
                _exit(103);
            /* Bounded, so that a broken death signal fails the test instead of hanging
             * it: the parent exits at once, the signal comes long before this ends. */
            for (int i = 0; i < 600; i++) {
                struct timespec nap = {0, 100000000L};
                nanosleep(&nap, NULL);
            }
            _exit(7);
        }
        pid_t got;
        if (read(p[0], &got, sizeof got) != sizeof got)
            _exit(104);
        _exit(0);   /* the parent dies; the leaf must follow */
    }
    close(p[1]);
    int st;
    assert_int_equal(waitpid(mid, &st, 0), mid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pid_t leaf;
    assert_int_equal(read(p[0], &leaf, sizeof leaf), sizeof leaf);
    close(p[0]);
    assert_int_equal(waitpid(leaf, &st, 0), leaf);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
        fail_msg("the orphan was not killed: %s %d", WIFSIGNALED(st) ? "signal" : "exit",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

/* ---- aos-tool's deny-list: refused with EPERM, the rest (fork, exec) allowed ------- */

static void child_denylist(const void *arg)
{
    (void)arg;
    apply_or_die("tool", NULL);
    errno = 0;
    if (syscall(SYS_bpf, 0, NULL, 0) != -1 || errno != EPERM)
        _exit(101);
    if (syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0) != -1 || errno != EPERM)
        _exit(102);
    if (syscall(SYS_keyctl, 0, 0, 0, 0, 0) != -1 || errno != EPERM)
        _exit(103);
    if (syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0) != -1 || errno != EPERM)
        _exit(104);
    if (syscall(SYS_io_uring_setup, 1, NULL) != -1 || errno != EPERM)
        _exit(105);
    if (syscall(SYS_process_vm_readv, getppid(), NULL, 0, NULL, 0, 0) != -1 ||
        errno != EPERM)
        _exit(106);
    pid_t pid = fork();
    if (pid < 0)
        _exit(107);
    if (pid == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(99);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        _exit(108);
    _exit(0);
}

static void test_tool_denylist(void **state)
{
    (void)state;
    child c;
    run_child(child_denylist, NULL, &c);
    expect_exit(&c, 0, "tool's deny-list");
}

/* ---- the tables themselves ------------------------------------------------------- */

/* Never in any list: each would let a server out of its box or into another process. */
static const char *const never[] = {
    "execve", "execveat", "ptrace", "mount", "umount2", "pivot_root", "chroot",
    "kexec_load", "kexec_file_load", "bpf", "init_module", "finit_module",
    "delete_module", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setgroups", "setfsuid", "setfsgid", "capset", "unshare", "setns", "process_vm_readv",
    "process_vm_writev", "personality", "fork", "vfork", "kill", "keyctl", "add_key",
    "request_key", "userfaultfd", "perf_event_open", "io_uring_setup", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm", "open_by_handle_at",
    "name_to_handle_at", "seccomp", "mknod", "mknodat", "link", "symlink", "unlink",
    "rename", "chmod", "chown", "fchown", "fchmod", "truncate", "ftruncate", "socketpair",
    "bind", "listen", "accept", "accept4", "wait4", "waitid",
};

/* A listener's calls: the api server's own, never another server's. */
static const char *const listener[] = {"bind", "listen", "accept4"};
/* The LLM gateway's own: libcurl's threaded resolver wakes the transfer through a
 * socketpair (AF_UNIX only: SBX_NET narrows it as it narrows socket). */
static const char *const resolver[] = {"socketpair"};

static void test_tables(void **state)
{
    (void)state;
    const sbx_call *lists[] = {sbx_base, sbx_db, sbx_sanitizer, sbx_api, sbx_llm, sbx_otlp};
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++)
        for (const sbx_call *c = lists[l]; c->name; c++) {
#ifdef __x86_64__
            if (seccomp_syscall_resolve_name(c->name) == __NR_SCMP_ERROR)
                fail_msg("%s is not a syscall name libseccomp knows", c->name);
#endif
            for (size_t n = 0; n < sizeof never / sizeof never[0]; n++) {
                int ok = lists[l] == sbx_api;
                for (size_t m = 0; ok && m < sizeof listener / sizeof listener[0]; m++)
                    if (!strcmp(never[n], listener[m]))
                        ok = 2;
                if ((lists[l] == sbx_llm || lists[l] == sbx_otlp) &&
                    !strcmp(never[n], resolver[0]))
                    ok = 2;
                if (!strcmp(c->name, never[n]) && ok != 2)
                    fail_msg("%s must never be allowed", c->name);
            }
        }
    /* inet only where a reason is written down, and tool (which forks tools) none; with
     * a local database only for a server whose own work is on the network (llm, and
     * aos-audit when it exports spans) */
    for (size_t i = 0; i < sizeof sbx_profiles / sizeof sbx_profiles[0]; i++) {
        const sbx_profile *p = &sbx_profiles[i];
        assert_int_equal(sbx_inet(p, 1), p->host_net && p->inet);
        assert_int_equal(p->host_net, !strcmp(p->server, "llm") ||
                                          !strcmp(p->server, "audit-otlp"));
        if (p->inet)
            assert_true(strlen(p->inet) > 10);
    }
    assert_non_null(sbx_find("tool")->inet); /* its deny-list cannot narrow socket() */
    assert_true(sbx_find("tool")->spawner);
    assert_true(sbx_find("tool")->host_tree);
    assert_int_equal(sbx_inet(sbx_find("memory"), 0), 1);
    for (size_t s = 0; s < N_SERVERS; s++) {
        const sbx_profile *p = sbx_find(servers[s]);
        assert_non_null(p);
        assert_ptr_equal(p->lists[0], sbx_base);
    }
    assert_null(sbx_find("kernel"));
}

/* ---- under ASan/UBSan, a report inside the sandbox comes out whole ---------------- */

#if SBX_SANITIZED
static void child_heap_overflow(const void *arg)
{
    apply_or_die(arg, NULL);
    char *p = malloc(8);
    volatile size_t i = 8;
    p[i] = 1;
    free(p);
    _exit(0);
}

/* The same inside the minimal root: ASan still finds /proc/self/maps there. */
static void child_heap_overflow_entered(const void *arg)
{
    enter_apply_or_die(arg, NULL);
    char *p = malloc(8);
    volatile size_t i = 8;
    p[i] = 1;
    free(p);
    _exit(0);
}

static void child_signed_overflow(const void *arg)
{
    apply_or_die(arg, NULL);
    volatile int i = INT_MAX;
    int j = i + 1;
    _exit(j > 0 ? 0 : 1);
}

static void test_sanitizer_reports_survive(void **state)
{
    (void)state;
    child c;
    run_child(child_heap_overflow, "llm", &c);
    if (WIFSIGNALED(c.status))
        fail_msg("ASan's report died of signal %d: %s", WTERMSIG(c.status), c.err);
    assert_non_null(strstr(c.err, "ERROR: AddressSanitizer: heap-buffer-overflow"));
    assert_non_null(strstr(c.err, "SUMMARY: AddressSanitizer"));
    run_child(child_heap_overflow_entered, "memory", &c);
    if (WIFSIGNALED(c.status))
        fail_msg("ASan's report in the minimal root died of signal %d: %s",
                 WTERMSIG(c.status), c.err);
    assert_non_null(strstr(c.err, "ERROR: AddressSanitizer: heap-buffer-overflow"));
    assert_non_null(strstr(c.err, "SUMMARY: AddressSanitizer"));
    run_child(child_signed_overflow, "tool", &c);
    if (WIFSIGNALED(c.status))
        fail_msg("UBSan's report died of signal %d: %s", WTERMSIG(c.status), c.err);
    assert_non_null(strstr(c.err, "runtime error: signed integer overflow"));
}
#endif

/* ---- step 1: the namespaces and the root, seen from inside and from aosd's side ---- */

/* A failed check inside a sandboxed child: says which and why, then exits 1. Only
 * dprintf (write) and strerrorname_np, both fine under every seccomp list. */
#define CK(cond, ...)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            int e_ = errno;                                                             \
            dprintf(2, "line %d: ", __LINE__);                                          \
            dprintf(2, __VA_ARGS__);                                                    \
            dprintf(2, " (errno %s)\n", strerrorname_np(e_) ? strerrorname_np(e_) : "?"); \
            _exit(1);                                                                   \
        }                                                                               \
    } while (0)

/* The scene of a case: a temp dir on the host with a kept dir inside (open to every
 * uid, for the dropped child) and a file beside it that must stay out of sight. */
typedef struct scene {
    char tmp[64], keep[96], outside[96], build[PATH_MAX];
    const char *server, *user;
    int pg_local, fallback;
    pid_t parent;
} scene;

static void scene_make(scene *s, const char *server, const char *user)
{
    memset(s, 0, sizeof *s);
    snprintf(s->tmp, sizeof s->tmp, "/tmp/aos-sbx-XXXXXX");
    assert_non_null(mkdtemp(s->tmp));
    assert_int_equal(chmod(s->tmp, 0755), 0);
    snprintf(s->keep, sizeof s->keep, "%s/keep", s->tmp);
    snprintf(s->outside, sizeof s->outside, "%s/outside", s->tmp);
    assert_int_equal(mkdir(s->keep, 0777), 0);
    assert_int_equal(chmod(s->keep, 0777), 0);
    int fd = open(s->outside, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    assert_true(fd >= 0);
    close(fd);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(s->build, sizeof s->build, "%s", exe);
    s->server = server;
    s->user = user;
    s->parent = getpid();
}

/* Removes what the children may have left in the kept dir, then the scene. */
static void scene_clean(scene *s)
{
    static const char *const left[] = {"by-root", "by-child", "by-tool"};
    char p[160];
    for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", s->keep, left[i]);
        unlink(p);
    }
    assert_int_equal(rmdir(s->keep), 0);
    assert_int_equal(unlink(s->outside), 0);
    assert_int_equal(rmdir(s->tmp), 0);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* sbx_enter for the scene, timed (a server restart must stay well under 20 ms). */
static void scene_enter(const scene *s, sbx_report *rep)
{
    char why[512];
    sbx_opts o = {.name = s->server, .user = s->user, .parent = s->parent,
                  .pg_local = s->pg_local, .keep = {s->keep}};
    sbx_no_setattr = s->fallback;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    aos_err e = sbx_enter(&o, rep, why, sizeof why);
    double ms = ms_since(&t0);
    CK(e == AOS_ERR_OK, "sbx_enter(%s): %s", s->server, why);
    dprintf(2, "time: sbx_enter(%s%s%s) %.3f ms, root %s; notes: %s\n", s->server,
            s->pg_local ? ", pg_local" : "", s->fallback ? ", remount fallback" : "", ms,
            rep->root, rep->notes[0] ? rep->notes : "-");
}

static void scene_apply(const scene *s, sbx_report *rep)
{
    char why[512];
    sbx_opts o = {.name = s->server, .user = s->user, .parent = s->parent,
                  .pg_local = s->pg_local, .keep = {s->keep}};
    aos_err e = sbx_apply(&o, rep, why, sizeof why);
    CK(e == AOS_ERR_OK, "sbx_apply(%s): %s", s->server, why);
}

/* The "Key:" value of /proc/self/status, read with openat and read only. */
static void self_status(const char *key, char *out, size_t cap)
{
    char buf[8192];
    ssize_t n = sbx_read_small(AT_FDCWD, "/proc/self/status", buf, sizeof buf);
    CK(n > 0, "reading /proc/self/status");
    const char *l = strstr(buf, key);
    CK(l, "no %s in /proc/self/status", key);
    l += strlen(key);
    while (*l == ' ' || *l == '\t')
        l++;
    snprintf(out, cap, "%.*s", (int)strcspn(l, "\n"), l);
}

static void ck_absent(const char *path)
{
    struct stat st;
    CK(stat(path, &st) && errno == ENOENT, "%s is visible", path);
}

static void ck_present(const char *path)
{
    struct stat st;
    CK(!stat(path, &st), "%s is not visible", path);
}

/* Creating path must fail with EROFS (as root, so that only the mount can refuse). */
static void ck_erofs(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        /* a broken sandbox must not leave the proof behind on the host */
        close(fd);
        unlink(path);
        errno = 0;
    }
    CK(fd < 0 && errno == EROFS, "creating %s: not EROFS", path);
}

static void ck_writable(const char *dir, const char *name)
{
    char p[160];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CK(fd >= 0, "creating %s", p);
    CK(write(fd, "x", 1) == 1, "writing %s", p);
    close(fd);
}

static void ck_cwd_root(void)
{
    char cwd[PATH_MAX];
    CK(getcwd(cwd, sizeof cwd) && !strcmp(cwd, "/"), "cwd is %s, not /", cwd);
}

/* In the child: hand the report to the parent and wait for it to have looked (EOF). */
static int ready_fd = -1, release_fd = -1;

static void ready_and_wait(const sbx_report *rep)
{
    CK(write(ready_fd, rep, sizeof *rep) == (ssize_t)sizeof *rep, "ready");
    char b;
    ssize_t r = read(release_fd, &b, 1);
    _exit(r == 0 ? 0 : 102);
}

typedef void (*check_fn)(pid_t pid, const sbx_report *rep, const scene *s);

/* Forks fn(s) with stderr captured; when it says ready, check() looks at it from here
 * (aosd's side), then it is let go and judged by its exit. */
static void run_waiting(child_fn fn, const scene *s, check_fn check, child *out)
{
    int e[2], r[2], q[2];
    assert_int_equal(pipe(e), 0);
    assert_int_equal(pipe(r), 0);
    assert_int_equal(pipe(q), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(e[0]);
        close(r[0]);
        close(q[1]);
        dup2(e[1], 2);
        close(e[1]);
        ready_fd = r[1];
        release_fd = q[0];
        fn(s);
        _exit(99);
    }
    close(e[1]);
    close(r[1]);
    close(q[0]);
    sbx_report rep;
    ssize_t got = read(r[0], &rep, sizeof rep);
    close(r[0]);
    if (got == (ssize_t)sizeof rep && check)
        check(pid, &rep, s);
    close(q[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < sizeof out->err && (k = read(e[0], out->err + n, sizeof out->err - 1 - n)) > 0)
        n += (size_t)k;
    out->err[n] = '\0';
    close(e[0]);
    assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

/* Prints the child's "time:" lines: the measurement asked of every run. */
static void print_times(const child *c)
{
    for (const char *l = strstr(c->err, "time: "); l; l = strstr(l + 1, "time: "))
        print_message("    %.*s\n", (int)strcspn(l, "\n"), l);
}

static int same_ns(pid_t pid, const char *ns)
{
    char p[64], a[64] = "", b[64] = "";
    snprintf(p, sizeof p, "/proc/%d/ns/%s", (int)pid, ns);
    assert_true(readlink(p, a, sizeof a - 1) > 0);
    snprintf(p, sizeof p, "/proc/self/ns/%s", ns);
    assert_true(readlink(p, b, sizeof b - 1) > 0);
    return !strcmp(a, b);
}

static void check_limit(pid_t pid, const char *what, unsigned long long want)
{
    char v[128];
    proc_field(pid, "limits", what, v, sizeof v);
    if (want)
        assert_int_equal(strtoull(v, NULL, 10), want);
}

/* What aosd will measure: namespaces, cwd, capabilities, limits as reported. */
static void check_from_outside(pid_t pid, const sbx_report *rep, const scene *s)
{
    char v[128], p[64], cwd[PATH_MAX] = "";
    assert_false(same_ns(pid, "mnt"));
    assert_int_equal(same_ns(pid, "net"), !s->pg_local);
    snprintf(p, sizeof p, "/proc/%d/cwd", (int)pid);
    assert_true(readlink(p, cwd, sizeof cwd - 1) > 0);
    assert_string_equal(cwd, "/");
    proc_field(pid, "status", "CapBnd:", v, sizeof v);
    assert_string_equal(v, "0000000000000000");
    proc_field(pid, "status", "CapEff:", v, sizeof v);
    assert_string_equal(v, "0000000000000000");
    proc_field(pid, "status", "NoNewPrivs:", v, sizeof v);
    assert_string_equal(v, "1");
    proc_field(pid, "status", "Seccomp:", v, sizeof v);
    assert_string_equal(v, "2");
    check_limit(pid, "Max address space", rep->rlimit_as);
    check_limit(pid, "Max processes", rep->rlimit_nproc);
    check_limit(pid, "Max locked memory", rep->rlimit_memlock);
    assert_int_equal(rep->rlimit_memlock, SBX_MEMLOCK_MAX);
    if (SBX_SANITIZED)
        assert_int_equal(rep->rlimit_as, 0);
    else
        assert_int_equal(rep->rlimit_as, SBX_AS_MAX);
    if (s->user) {
        uid_t uid;
        gid_t gid;
        char why[128], want[64];
        assert_int_equal(sbx_lookup_user(s->user, &uid, &gid, why, sizeof why), AOS_ERR_OK);
        proc_field(pid, "status", "Uid:", v, sizeof v);
        snprintf(want, sizeof want, "%u\t%u\t%u\t%u", (unsigned)uid, (unsigned)uid,
                 (unsigned)uid, (unsigned)uid);
        assert_string_equal(v, want);
        assert_int_equal(rep->rlimit_nproc, sbx_find(s->server)->spawner ? SBX_NPROC_SPAWNER
                                                                         : SBX_NPROC_MAX);
    }
}

/* A database server as root: minimal root, dropped to the scene's user. */
static void child_minimal(const void *arg)
{
    const scene *s = arg;
    sbx_report rep;
    scene_enter(s, &rep);
    CK(!strcmp(rep.root, "minimal") && rep.mount_ns && !rep.user_ns && rep.proc,
       "report: root %s mount_ns %d user_ns %d proc %d", rep.root, rep.mount_ns,
       rep.user_ns, rep.proc);
    CK(rep.net_ns == s->pg_local, "net_ns %d", rep.net_ns);
    ck_cwd_root();
    /* only /usr, /etc, the merged-/usr links, five devices, /tmp, /proc, the kept path */
    ck_absent("/home");
    ck_absent("/root");
    ck_absent("/var");
    ck_absent("/work");
    ck_absent(s->build);
    ck_absent(s->outside);
    ck_absent("/dev/tty");
    ck_absent("/dev/shm");
    ck_absent("/sys/kernel");
    ck_present("/etc/passwd");
    ck_present("/bin/sh");
    ck_present("/proc/self/maps");
    ck_present(s->keep);
    /* still root here: only the mounts can refuse */
    ck_erofs("/etc/aos-sbx-test");
    ck_erofs("/usr/aos-sbx-test");
    ck_erofs("/aos-sbx-test");
    ck_erofs("/dev/aos-sbx-test");
    CK(mkdir("/aos-sbx-test", 0755) && errno == EROFS, "mkdir in /");
    int fd = open("/etc/passwd", O_WRONLY | O_CLOEXEC);
    CK(fd < 0 && errno == EROFS, "/etc/passwd opened for writing");
    fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    CK(fd >= 0 && write(fd, "x", 1) == 1, "writing /dev/null");
    close(fd);
    char rnd[8];
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    CK(fd >= 0 && read(fd, rnd, sizeof rnd) == (ssize_t)sizeof rnd, "reading /dev/urandom");
    close(fd);
    ck_writable("/tmp", "scratch");
    ck_writable(s->keep, "by-root");
    char v[64];
    self_status("CapBnd:", v, sizeof v);
    CK(!strcmp(v, "0000000000000000"), "CapBnd %s after sbx_enter", v);
    scene_apply(s, &rep);
    /* the drop took, and the sandbox is what the kernel reports */
    self_status("CapBnd:", v, sizeof v);
    CK(!strcmp(v, "0000000000000000"), "CapBnd %s", v);
    self_status("CapEff:", v, sizeof v);
    CK(!strcmp(v, "0000000000000000"), "CapEff %s", v);
    self_status("NoNewPrivs:", v, sizeof v);
    CK(!strcmp(v, "1"), "NoNewPrivs %s", v);
    self_status("Seccomp:", v, sizeof v);
    CK(!strcmp(v, "2"), "Seccomp %s", v);
    ck_writable(s->keep, "by-child");
    /* (no O_CREAT: a success could not be undone under seccomp, which forbids unlink) */
    fd = open("/etc/passwd", O_WRONLY | O_CLOEXEC);
    CK(fd < 0, "/etc/passwd opened for writing after the drop");
    /* hidepid=invisible: init is root's, and we are no longer root */
    if (!strstr(rep.notes, "proc:"))
        ck_absent("/proc/1/status");
    CK(rep.inet == !s->pg_local, "inet %d", rep.inet);
    ready_and_wait(&rep);
}

static const char *drop_user(void)
{
    uid_t u;
    gid_t g;
    char why[128];
    if (!sbx_lookup_user("aos-storage", &u, &g, why, sizeof why))
        return "aos-storage";
    if (!sbx_lookup_user("nobody", &u, &g, why, sizeof why))
        return "nobody";
    return NULL;
}

static void check_left_on_host(const scene *s)
{
    char p[160];
    struct stat st;
    snprintf(p, sizeof p, "%s/by-child", s->keep);
    assert_int_equal(stat(p, &st), 0);   /* the kept path is the host's, read-write */
    if (s->user) {
        uid_t uid;
        gid_t gid;
        char why[128];
        assert_int_equal(sbx_lookup_user(s->user, &uid, &gid, why, sizeof why), 0);
        assert_int_equal(st.st_uid, uid);
    }
}

static void test_minimal_root(void **state)
{
    (void)state;
    const char *user = drop_user();
    if (geteuid() != 0 || !user) {
        print_message("    skipped: needs root and a user to drop to\n");
        skip();
    }
    for (int fallback = 0; fallback < 2; fallback++)
        for (int pg_local = 0; pg_local < 2; pg_local++) {
            scene s;
            scene_make(&s, "storage", user);
            s.pg_local = pg_local;
            s.fallback = fallback;
            child c;
            run_waiting(child_minimal, &s, check_from_outside, &c);
            expect_exit(&c, 0, "minimal root");
            print_times(&c);
            check_left_on_host(&s);
            scene_clean(&s);
        }
}

/* With pg_local the database servers' socket() takes AF_UNIX only. */
static void child_inet(const void *arg)
{
    const scene *s = arg;
    sbx_report rep;
    scene_enter(s, &rep);
    scene_apply(s, &rep);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CK(fd >= 0, "socket(AF_UNIX)");
    close(fd);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);   /* pg_local: dies here */
    CK(fd >= 0, "socket(AF_INET) without pg_local");
    close(fd);
    _exit(0);
}

static void test_pg_local_no_inet(void **state)
{
    (void)state;
    for (int pg_local = 0; pg_local < 2; pg_local++) {
        scene s;
        scene_make(&s, "memory", NULL);
        s.pg_local = pg_local;
        child c;
        run_child(child_inet, &s, &c);
        if (pg_local)
            expect_sigsys(&c, "socket(AF_INET) with pg_local");
        else
            expect_exit(&c, 0, "socket(AF_INET) without pg_local");
        scene_clean(&s);
    }
}

/* tool: the host's tree stays in sight (bubblewrap will need it), read-only. */
static void child_tool(const void *arg)
{
    const scene *s = arg;
    sbx_report rep;
    scene_enter(s, &rep);
    CK(!strcmp(rep.root, "readonly") && rep.mount_ns, "root %s", rep.root);
    ck_cwd_root();
    ck_present(s->build);
    ck_present(s->outside);
    ck_present("/etc/passwd");
    ck_present(s->keep);
    if (geteuid() == 0) {
        ck_erofs("/etc/aos-sbx-test");
        ck_erofs("/aos-sbx-test");
        int fd = open(s->outside, O_WRONLY | O_CLOEXEC);
        CK(fd < 0 && errno == EROFS, "%s opened for writing", s->outside);
    }
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/by-tool", s->build);
    ck_erofs(p);
    ck_writable(s->keep, "by-tool");
    scene_apply(s, &rep);
    ready_and_wait(&rep);
}

static void check_tool(pid_t pid, const sbx_report *rep, const scene *s)
{
    (void)s;
    char v[64];
    assert_false(same_ns(pid, "mnt"));
    assert_true(same_ns(pid, "net"));
    assert_string_equal(rep->root, "readonly");
    assert_int_equal(rep->inet, 1); /* its deny-list cannot narrow socket() */
    proc_field(pid, "status", "CapBnd:", v, sizeof v);
    assert_string_equal(v, "0000000000000000");
}

static void test_tool_readonly(void **state)
{
    (void)state;
    for (int fallback = 0; fallback < 2; fallback++) {
        scene s;
        scene_make(&s, "tool", geteuid() == 0 ? drop_user() : NULL);
        s.fallback = fallback;
        child c;
        run_waiting(child_tool, &s, check_tool, &c);
        if (strstr(c.err, "user ns: ")) {
            scene_clean(&s);
            print_message("    skipped: no user namespace for a non-root test (%s)\n", c.err);
            skip();
        }
        expect_exit(&c, 0, "tool's read-only root");
        print_times(&c);
        scene_clean(&s);
    }
}

/* Not root: an unprivileged user namespace gives the same layers. As root, the child
 * first becomes an ordinary user, as if aosd ran as one. */
static void child_userns(const void *arg)
{
    const scene *s = arg;
    uid_t uid = geteuid();
    if (uid == 0) {
        gid_t gid;
        char why[128];
        CK(!sbx_lookup_user("nobody", &uid, &gid, why, sizeof why), "%s", why);
        CK(!setgroups(0, NULL) && !setresgid(gid, gid, gid) && !setresuid(uid, uid, uid),
           "becoming nobody");
        /* as a freshly exec'd server is: a uid change made us undumpable, which would
         * leave /proc/self/uid_map root's */
        CK(!prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable");
    }
    sbx_report rep;
    scene_enter(s, &rep);
    if (!rep.user_ns) {
        dprintf(2, "SKIP: %s\n", rep.notes);
        _exit(77);
    }
    CK(!strcmp(rep.root, "minimal") && rep.mount_ns, "root %s", rep.root);
    CK(geteuid() == uid && getuid() == uid, "our uid inside is %u, not %u",
       (unsigned)geteuid(), (unsigned)uid);
    ck_cwd_root();
    ck_absent("/home");
    ck_absent(s->build);
    ck_absent(s->outside);
    ck_present("/etc/passwd");
    ck_erofs("/etc/aos-sbx-test");
    ck_erofs("/aos-sbx-test");
    ck_writable(s->keep, "by-child");
    char v[64];
    self_status("CapEff:", v, sizeof v);
    CK(!strcmp(v, "0000000000000000"), "CapEff %s after sbx_enter", v);
    self_status("CapPrm:", v, sizeof v);
    CK(!strcmp(v, "0000000000000000"), "CapPrm %s after sbx_enter", v);
    self_status("CapBnd:", v, sizeof v);
    CK(!strcmp(v, "0000000000000000"), "CapBnd %s after sbx_enter", v);
    scene_apply(s, &rep);
    CK(rep.rlimit_nproc == 0 && strstr(rep.notes, "nproc"), "nproc %llu: %s",
       rep.rlimit_nproc, rep.notes);
    self_status("NoNewPrivs:", v, sizeof v);
    CK(!strcmp(v, "1"), "NoNewPrivs %s", v);
    ready_and_wait(&rep);
}

static void check_userns(pid_t pid, const sbx_report *rep, const scene *s)
{
    assert_false(same_ns(pid, "user"));
    assert_true(rep->user_ns);
    check_from_outside(pid, rep, s);
}

static void test_unprivileged_userns(void **state)
{
    (void)state;
    scene s;
    scene_make(&s, "audit", NULL);
    s.pg_local = 1;
    child c;
    run_waiting(child_userns, &s, check_userns, &c);
    if (WIFEXITED(c.status) && WEXITSTATUS(c.status) == 77) {
        scene_clean(&s);
        print_message("    skipped: unprivileged user namespaces are off here: %s", c.err);
        skip();
    }
    expect_exit(&c, 0, "user namespace");
    print_times(&c);
    check_left_on_host(&s);
    scene_clean(&s);
}

/* unshare would move one thread only: a second thread is refused, nothing changed. */
static int thread_pipe[2];

static void *thread_block(void *arg)
{
    (void)arg;
    char b;
    ssize_t r = read(thread_pipe[0], &b, 1);
    (void)r;
    return NULL;
}

static void child_threaded(const void *arg)
{
    (void)arg;
    char before[64] = "", after[64] = "", why[256];
    CK(readlink("/proc/self/ns/mnt", before, sizeof before - 1) > 0, "ns");
    int bnd = prctl(PR_CAPBSET_READ, 0, 0, 0, 0);
    pthread_t t;
    CK(!pipe(thread_pipe) && !pthread_create(&t, NULL, thread_block, NULL), "thread");
    sbx_opts o = {.name = "memory", .parent = getppid()};
    sbx_report rep;
    aos_err e = sbx_enter(&o, &rep, why, sizeof why);
    CK(e == AOS_ERR_REFUSED && strstr(why, "2 threads"), "sbx_enter: %d %s", e, why);
    CK(readlink("/proc/self/ns/mnt", after, sizeof after - 1) > 0 && !strcmp(before, after),
       "the mount namespace changed");
    CK(prctl(PR_CAPBSET_READ, 0, 0, 0, 0) == bnd, "the bounding set changed");
    _exit(0);
}

static void test_multithreaded_refused(void **state)
{
    (void)state;
    child c;
    run_child(child_threaded, NULL, &c);
    expect_exit(&c, 0, "multi-threaded sbx_enter");
}

/* Bad kept paths are refused before anything changes, in the test process itself. */
static void test_enter_bad_keeps(void **state)
{
    (void)state;
    char before[64] = "", after[64] = "", why[256];
    assert_true(readlink("/proc/self/ns/mnt", before, sizeof before - 1) > 0);
    int bnd = prctl(PR_CAPBSET_READ, 0, 0, 0, 0);
    sbx_report rep;
    static const char *const bad[][2] = {
        {"relative/path", NULL}, {"/tmp/", NULL}, {"/tmp/../etc", NULL}, {"/tmp//x", NULL},
        {"/", NULL}, {"/tmp/.", NULL}, {"/usr", "/usr/bin"}, {"/tmp", "/tmp"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sbx_opts o = {.name = "memory", .parent = getppid(), .keep = {bad[i][0], bad[i][1]}};
        if (sbx_enter(&o, &rep, why, sizeof why) != AOS_ERR_USAGE)
            fail_msg("keep %s %s: not refused (%s)", bad[i][0], bad[i][1] ? bad[i][1] : "",
                     why);
    }
    sbx_opts o = {.name = "memory", .parent = getppid(), .keep = {"/aos-no-such-dir-x"}};
    assert_int_equal(sbx_enter(&o, &rep, why, sizeof why), AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(why, "/aos-no-such-dir-x"));
    assert_true(readlink("/proc/self/ns/mnt", after, sizeof after - 1) > 0);
    assert_string_equal(before, after);
    assert_int_equal(prctl(PR_CAPBSET_READ, 0, 0, 0, 0), bnd);
}

int main(void)
{
    /* The tests choose the mode themselves: a trap mode inherited from the environment
     * would turn every expected SIGSYS into exit 159. */
    unsetenv("AOS_SECCOMP_TRAP");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_lookup_user),
        cmocka_unit_test(test_forbidden_kills),
        cmocka_unit_test(test_no_fork_no_raw_socket_no_signals_out),
        cmocka_unit_test(test_allowed_work),
        cmocka_unit_test(test_abort_still_aborts),
        cmocka_unit_test(test_threads_started_before_are_filtered),
        cmocka_unit_test(test_trap_mode_reports),
        cmocka_unit_test(test_limits_and_modes),
        cmocka_unit_test(test_drop_privileges),
        cmocka_unit_test(test_parent_gone),
        cmocka_unit_test(test_parent_death_kills),
        cmocka_unit_test(test_enter_bad_keeps),
        cmocka_unit_test(test_multithreaded_refused),
        cmocka_unit_test(test_minimal_root),
        cmocka_unit_test(test_pg_local_no_inet),
        cmocka_unit_test(test_tool_readonly),
        cmocka_unit_test(test_tool_denylist),
        cmocka_unit_test(test_unprivileged_userns),
#if SBX_SANITIZED
        cmocka_unit_test(test_sanitizer_reports_survive),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
