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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static const char *const servers[] = {"memory", "storage", "audit", "tool", "llm"};
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
    aos_err e = sbx_apply(name, user, getppid(), why, sizeof why);
    if (e) {
        dprintf(2, "sbx_apply(%s): %s\n", name, why);
        _exit(100);
    }
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

static void child_allowed(const void *arg)
{
    const char *server = arg;
    int p[2];
    if (pipe(p))
        _exit(101);
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
    int db = strcmp(server, "tool") && strcmp(server, "llm");
    if (db || SBX_SANITIZED) {
        if (fd < 0)
            _exit(110);
        close(fd);
    } else if (fd >= 0 || errno != EACCES) {
        _exit(111);
    }
    if (getpid() <= 0)
        _exit(112);
    _exit(0);
}

static void test_allowed_work(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_SERVERS; s++) {
        child c;
        run_child(child_allowed, servers[s], &c);
        expect_exit(&c, 0, servers[s]);
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
    assert_true(strtoull(v, NULL, 10) <= 1024);
    proc_field(pid, "limits", "Max file size", v, sizeof v);
    assert_true(strncmp(v, "unlimited", 9) && strtoull(v, NULL, 10) <= SBX_FSIZE_MAX);
}

static void test_limits_and_modes(void **state)
{
    (void)state;
    for (size_t s = 0; s < N_SERVERS; s++) {
        child c;
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
    assert_int_equal(sbx_apply("nosuch", NULL, getppid(), why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "nosuch"));
    assert_int_equal(sbx_apply(NULL, NULL, getppid(), why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(sbx_apply("memory", NULL, 0, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0);
    assert_int_equal(prctl(PR_GET_SECCOMP, 0, 0, 0, 0), 0);
}

static void child_wrong_parent(const void *arg)
{
    (void)arg;
    char why[128];
    /* we are not our own parent: as if aosd had died and we had been re-parented */
    aos_err e = sbx_apply("memory", NULL, getpid(), why, sizeof why);
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
            if (sbx_apply("tool", user, getppid(), why, sizeof why))
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

static void test_tables(void **state)
{
    (void)state;
    const sbx_call *lists[] = {sbx_base, sbx_db, sbx_sanitizer};
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++)
        for (const sbx_call *c = lists[l]; c->name; c++) {
#ifdef __x86_64__
            if (seccomp_syscall_resolve_name(c->name) == __NR_SCMP_ERROR)
                fail_msg("%s is not a syscall name libseccomp knows", c->name);
#endif
            for (size_t n = 0; n < sizeof never / sizeof never[0]; n++)
                if (!strcmp(c->name, never[n]))
                    fail_msg("%s must never be allowed", c->name);
        }
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
    run_child(child_signed_overflow, "tool", &c);
    if (WIFSIGNALED(c.status))
        fail_msg("UBSan's report died of signal %d: %s", WTERMSIG(c.status), c.err);
    assert_non_null(strstr(c.err, "runtime error: signed integer overflow"));
}
#endif

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
#if SBX_SANITIZED
        cmocka_unit_test(test_sanitizer_reports_survive),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
