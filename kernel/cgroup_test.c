/* Unit tests of cgroup delegation: cg_locate on mountinfo texts of every host kind, and on
 * this host cg_setup + cg_delegate for real in a forked child (skipped without cgroup v2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"

/* ---- cg_locate ---- */

static const char PURE_V2[] =
    "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

/* This machine's kind: v1 hierarchies for the controllers, an empty v2 tree at unified/. */
static const char HYBRID[] =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

typedef struct loc {
    aos_err err;
    char mnt[256], rel[512], why[256];
    int ro;
} loc;

static loc locate(const char *mi, const char *self)
{
    loc l;
    memset(&l, 0, sizeof l);
    l.err = cg_locate(mi, self, l.mnt, sizeof l.mnt, l.rel, sizeof l.rel, &l.ro, l.why,
                      sizeof l.why);
    return l;
}

static void pure_v2_host_gives_the_service_cgroup(void **st)
{
    (void)st;
    loc l = locate(PURE_V2, "0::/system.slice/aosd.service\n");
    assert_int_equal(l.err, AOS_OK);
    assert_string_equal(l.mnt, "/sys/fs/cgroup");
    assert_string_equal(l.rel, "/system.slice/aosd.service");
    assert_int_equal(l.ro, 0);
}

static void hybrid_host_uses_unified_and_its_root(void **st)
{
    (void)st;
    loc l = locate(HYBRID, "9:name=systemd:/\n4:memory:/x\n1:cpu:/\n0::/\n");
    assert_int_equal(l.err, AOS_OK);
    assert_string_equal(l.mnt, "/sys/fs/cgroup/unified");
    assert_string_equal(l.rel, "");
}

static void read_only_mount_is_reported(void **st)
{
    (void)st;
    loc l = locate("600 590 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 "
                   "cgroup ro\n",
                   "0::/\n");
    assert_int_equal(l.err, AOS_OK);
    assert_int_equal(l.ro, 1);
}

static void v1_only_host_has_no_v2(void **st)
{
    (void)st;
    loc l = locate("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
                   "4:memory:/\n0::/\n");
    assert_int_equal(l.err, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(l.why, "no cgroup2"));
    l = locate(HYBRID, "4:memory:/\n");
    assert_int_equal(l.err, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(l.why, "no cgroup v2 hierarchy"));
}

static void bind_mount_of_a_subtree_is_followed_and_others_skipped(void **st)
{
    (void)st;
    const char *mi = "50 1 0:23 /system.slice/x /mnt/c\\040g rw shared:1 master:2 - cgroup2 "
                     "cgroup2 rw\n";
    loc l = locate(mi, "0::/system.slice/x/sub\n");
    assert_int_equal(l.err, AOS_OK);
    assert_string_equal(l.mnt, "/mnt/c g");
    assert_string_equal(l.rel, "/sub");
    l = locate(mi, "0::/system.slice/xy\n");
    assert_int_equal(l.err, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(l.why, "below no visible"));
}

static void cgroup_outside_the_namespace_is_refused(void **st)
{
    (void)st;
    loc l = locate(PURE_V2, "0::/../../user.slice\n");
    assert_int_equal(l.err, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(l.why, "not reachable"));
    /* In a new cgroup namespace the host's mount shows as /../..: not usable from here. */
    l = locate("57 47 0:38 /../.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/\n");
    assert_int_equal(l.err, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(l.why, "another cgroup namespace"));
}

static void delegate_before_setup_or_with_a_bad_name_says_why(void **st)
{
    (void)st;
    cg_deleg d;
    cg_delegate("tool", 65534, 65534, &d);
    assert_int_equal(d.procs_fd, -1);
    assert_string_equal(d.why, "none: cg_setup was not called");
    const char *bad[] = {"", "a/b", "..", "memory.max", "aosd", "x\ny"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cg_delegate(bad[i], 65534, 65534, &d);
        assert_int_equal(d.procs_fd, -1);
        assert_string_equal(d.why, "none: invalid cgroup name");
    }
}

/* ---- on this host, in a forked child (the test process itself stays where it is) ---- */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* The "0::" line of /proc/self/cgroup, read by the process itself: /proc may belong to
 * another pid namespace (unshare --pid without a new /proc), /proc/self is still right. */
static void own_cgroup(char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[600];
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(buf, len, "%s", line + 3);
        }
    if (f)
        fclose(f);
}

/* A grandchild: optionally become nobody, join through procs_fd, optionally make and enter
 * a sub-cgroup (what aos-tool will do), report its cgroup on rep, then wait on hold. */
/* The fds a grandchild must not keep: the child's result pipe (the test reads it to EOF)
 * and the write end of hold (its EOF is the grandchild's signal to go). */
static int g_res = -1, g_hold_w = -1;

static pid_t grandchild(const cg_deleg *d, uid_t uid, gid_t gid, int sub, int rep, int hold)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(g_res);
    close(g_hold_w);
    char msg[700];
    if (uid && (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
                setresuid(uid, uid, uid) != 0)) {
        dprintf(rep, "setuid: %s\n", strerror(errno));
        _exit(1);
    }
    double t0 = now_us();
    if (write(d->procs_fd, "0", 1) != 1) {
        dprintf(rep, "join: %s\n", strerror(errno));
        _exit(1);
    }
    printf("cost: joining through procs_fd (uid %u) %.0f us\n", (unsigned)getuid(),
           now_us() - t0);
    fflush(stdout);
    if (sub) {
        char p[600];
        snprintf(p, sizeof p, "%s/sub", d->path);
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            dprintf(rep, "mkdir sub as uid %u: %s\n", (unsigned)getuid(), strerror(errno));
            _exit(1);
        }
        snprintf(p, sizeof p, "%s/sub/cgroup.procs", d->path);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            dprintf(rep, "enter sub as uid %u: %s\n", (unsigned)getuid(), strerror(errno));
            _exit(1);
        }
        close(fd);
    }
    own_cgroup(msg, sizeof msg);
    dprintf(rep, "%s\n", msg);
    char c;
    while (read(hold, &c, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

static int read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    while (n + 1 < len) {
        ssize_t r = read(fd, buf + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    return (int)n;
}

#define FAIL(...)                                                                          \
    do {                                                                                   \
        dprintf(res, __VA_ARGS__);                                                         \
        _exit(1);                                                                          \
    } while (0)

static void host_child(int res)
{
    alarm(60); /* a watchdog: never hang the suite */
    struct passwd *pw = getpwnam("nobody");
    uid_t nob = pw ? pw->pw_uid : 65534;
    gid_t nog = pw ? pw->pw_gid : 65534;
    char why[512];
    cg_deleg d;
    double t0 = now_us();
    cg_setup(why, sizeof why);
    double t1 = now_us();
    char name[32];
    /* Runs in parallel (also in pid namespaces, where every pid is 2) stay apart. */
    snprintf(name, sizeof name, "test-%ld-%ld", (long)getpid(), (long)(now_us()) % 1000000);
    cg_delegate(name, nob, nog, &d);
    double t2 = now_us();
    printf("cg_setup: %s\ncg_delegate: %s\ncost: cg_setup %.0f us, cg_delegate %.0f us\n", why,
           d.why, t1 - t0, t2 - t1);
    fflush(stdout);
    if (d.procs_fd < 0) {
        if (!d.why[0] || !why[0] || strncmp(d.why, "none: ", 6) != 0)
            FAIL("no delegation and no reason: setup '%s' delegate '%s'", why, d.why);
        dprintf(res, "%s", d.why);
        _exit(77);
    }
    dprintf(res, "BASE %.*s\n", (int)(strrchr(d.path, '/') - d.path), d.path);
    if (!d.delegated || strncmp(d.why, "delegated ", 10) != 0)
        FAIL("not delegated: %s", d.why);
    const char *owned[] = {"", "/cgroup.procs", "/cgroup.threads", "/cgroup.subtree_control"};
    for (size_t i = 0; i < 4; i++) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof p, "%s%s", d.path, owned[i]);
        if (stat(p, &st) != 0 || st.st_uid != nob || st.st_gid != nog)
            FAIL("%s not owned by nobody", p);
    }
    /* Root's files stay root's: the child cannot raise its own limits. */
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/cgroup.max.descendants", d.path);
    if (stat(p, &st) != 0 || st.st_uid != 0)
        FAIL("%s is not root's", p);

    int rep[2], hold[2];
    if (pipe(rep) != 0 || pipe(hold) != 0)
        FAIL("pipe");
    g_res = res;
    g_hold_w = hold[1];
    /* As root (how aosd's spawn joins), then as nobody (open-time credentials) making and
     * entering a sub-cgroup of its own (the delegation itself). */
    pid_t g1 = grandchild(&d, 0, 0, 0, rep[1], hold[0]);
    char line[700];
    read_line(rep[0], line, sizeof line);
    size_t pl = strlen(d.path), ll = strlen(line);
    size_t nl = strlen(name);
    if (ll <= nl || ll > pl || strcmp(d.path + pl - ll, line) != 0 ||
        strcmp(line + ll - nl, name) != 0 || line[ll - nl - 1] != '/')
        FAIL("grandchild in '%s', want the end of '%s'", line, d.path);
    pid_t g2 = grandchild(&d, nob, nog, 1, rep[1], hold[0]);
    read_line(rep[0], line, sizeof line);
    ll = strlen(line);
    if (ll <= nl + 4 || strcmp(line + ll - 4, "/sub") != 0 ||
        strncmp(line + ll - 4 - nl, name, nl) != 0)
        FAIL("nobody's grandchild: '%s'", line);

    /* aosd exits with a process still inside: the cgroup stays and why says so. */
    char twhy[512];
    cg_teardown(twhy, sizeof twhy);
    if (!strstr(twhy, " stays: ") || stat(d.path, &st) != 0)
        FAIL("teardown with processes inside: '%s'", twhy);
    close(d.procs_fd);
    char first[sizeof d.path];
    snprintf(first, sizeof first, "%s", d.path);

    /* The next start (aosd now in its leaf, as after a re-exec) reuses the same cgroup. */
    double t3 = now_us();
    cg_setup(why, sizeof why);
    double t3b = now_us();
    cg_delegate(name, nob, nog, &d);
    double t4 = now_us();
    printf("cost: second start (reuse): cg_setup %.0f us, cg_delegate %.0f us\n", t3b - t3,
           t4 - t3b);
    if (d.procs_fd < 0)
        FAIL("reuse: %s", d.why);
    if (strcmp(d.path, first) != 0)
        FAIL("reuse made %s, not %s again", d.path, first);
    fflush(stdout);
    close(hold[1]);
    waitpid(g1, NULL, 0);
    waitpid(g2, NULL, 0);
    /* Empty now: delegating again recreates it, without the child's old sub-cgroup. */
    close(d.procs_fd);
    cg_delegate(name, nob, nog, &d);
    snprintf(p, sizeof p, "%s/sub", d.path);
    if (d.procs_fd < 0 || stat(p, &st) == 0)
        FAIL("recreate: %s (sub %s)", d.why, stat(p, &st) == 0 ? "stayed" : "gone");
    cg_teardown(twhy, sizeof twhy);
    if (twhy[0] || stat(d.path, &st) == 0 || errno != ENOENT)
        FAIL("teardown left %s: '%s'", d.path, twhy);
    close(d.procs_fd);
    fflush(stdout);
    dprintf(res, "OK");
    _exit(0);
}

static void delegates_on_this_host_or_says_why(void **st)
{
    (void)st;
    int res[2];
    assert_int_equal(pipe(res), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(res[0]);
        host_child(res[1]);
    }
    close(res[1]);
    char buf[2048];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof buf && (r = read(res[0], buf + n, sizeof buf - 1 - n)) != 0)
        if (r > 0)
            n += (size_t)r;
        else if (errno != EINTR)
            break;
    buf[n] = '\0';
    close(res[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        printf("no delegation here: %s\n", buf);
        skip();
    }
    /* Tidy the leaf the child moved itself into; it stays when someone else is in it. */
    char *base = strncmp(buf, "BASE ", 5) == 0 ? buf + 5 : NULL;
    char *nl = base ? strchr(base, '\n') : NULL;
    if (nl) {
        *nl = '\0';
        char p[1100];
        if (snprintf(p, sizeof p, "%.1000s/aosd", base) < (int)sizeof p)
            rmdir(p);
        size_t bl = strlen(base);
        if (bl > 4 && strcmp(base + bl - 4, "/aos") == 0)
            rmdir(base);
    }
    if (WEXITSTATUS(status) != 0)
        fail_msg("%s", nl ? nl + 1 : buf);
    assert_non_null(strstr(nl ? nl + 1 : buf, "OK"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pure_v2_host_gives_the_service_cgroup),
        cmocka_unit_test(hybrid_host_uses_unified_and_its_root),
        cmocka_unit_test(read_only_mount_is_reported),
        cmocka_unit_test(v1_only_host_has_no_v2),
        cmocka_unit_test(bind_mount_of_a_subtree_is_followed_and_others_skipped),
        cmocka_unit_test(cgroup_outside_the_namespace_is_refused),
        cmocka_unit_test(delegate_before_setup_or_with_a_bad_name_says_why),
        cmocka_unit_test(delegates_on_this_host_or_says_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
