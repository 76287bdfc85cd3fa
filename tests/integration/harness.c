/* The integration harness: runs a real aosd on a fresh data dir, asks it for status, stops
 * or kills it, and proves that no process it started (postgres included) is left behind. */
#include "harness.h"
#include "aos/bounded.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent.pb-c.h"
#include "aos.pb-c.h"

extern char **environ;

#define H_START_MS 60000u      /* every server and postgres running */
#define H_STOP_MS 30000u       /* aosd's own graceful stop: STOP, SIGTERM, SIGKILL */
#define H_ORPHAN_MS 10000u     /* after kill -9: the children notice and exit on their own */
#define H_GRACE_MS 2000u       /* after a clean exit 0: only zombies being reaped */
#define H_CALL_MS 3000u
#define H_ARGS_MAX 32

struct h_aosd {
    pid_t pid;
    int pg_embedded;           /* no --pg-dsn given: postgres is one of the children */
    char dir[64];
    char log[96];
    aos_conn *conn;
};

/* Exit statuses of aosd processes that reap_orphans collected before wait_exit asked. */
static struct { pid_t pid; int status; } reaped[16];
/* The aosd processes of live handles: not leftovers of each other. */
static pid_t live[16];

static void live_set(pid_t old, pid_t now)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] == old) {
            live[i] = now;
            return;
        }
}

static int is_live_aosd(pid_t pid)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] && live[i] == pid)
            return 1;
    return 0;
}

static const char *const h_children[] = {"memory", "storage", "tool", "llm", "audit", "api",
                                         "postgres"};

static void h_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- binaries and logs -------------------------------------------------------------- */

const char *h_bin(const char *name)
{
    static _Thread_local char path[PATH_MAX];
    const char *dir = getenv("AOS_BIN_DIR");
    char self[PATH_MAX];
    if (!dir || !*dir) {
        /* tests are built into build/bin beside aosd */
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            fail_msg("h_bin: AOS_BIN_DIR is not set and /proc/self/exe is unreadable");
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = 0;
        dir = self;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        fail_msg("h_bin: path of %s too long", name);
    return path;
}

/* The last `lines` lines of a file, to stderr: the reason a start or stop failed. */
static void print_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "harness: (no %s: %s)\n", path, strerror(errno));
        return;
    }
    static char buf[32768];
    long start = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        start = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    }
    fseek(f, start, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = buf + n;
    int seen = 0;
    while (p > buf && seen <= lines)
        if (*--p == '\n')
            seen++;
    if (seen > lines)
        p++;
    fprintf(stderr, "---- %s (last %d lines) ----\n%s%s---- end of %s ----\n", path, lines, p,
            n && buf[n - 1] != '\n' ? "\n" : "", path);
}

/* aosd.log, then the tail of every other log aosd keeps at the top of its data dir. */
static void print_logs(const h_aosd *h)
{
    print_tail(h->log, 60);
    DIR *d = opendir(h->dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n > 4 && !strcmp(de->d_name + n - 4, ".log") && strcmp(de->d_name, "aosd.log")) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", h->dir, de->d_name);
            print_tail(p, 20);
        }
    }
    closedir(d);
}

/* ---- processes ---------------------------------------------------------------------- */

static int take_reaped(pid_t pid, int *status)
{
    for (size_t i = 0; i < sizeof reaped / sizeof reaped[0]; i++)
        if (reaped[i].pid == pid) {
            *status = reaped[i].status;
            reaped[i].pid = 0;
            return 1;
        }
    return 0;
}

static int proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp);

/* Collects the exited orphans that were reparented to us (zombies outside our process
 * group), keeping an aosd's status for wait_exit. Children the test started itself are in
 * our group and left for the test to wait for. */
static void reap_orphans(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end, state;
        pid_t ppid, pgrp;
        long v = strtol(de->d_name, &end, 10);
        if (*end || v <= 0 || !proc_stat((pid_t)v, &state, &ppid, &pgrp) ||
            ppid != getpid() || pgrp == getpgrp() || state != 'Z')
            continue;
        int st;
        if (waitpid((pid_t)v, &st, WNOHANG) != (pid_t)v || !is_live_aosd((pid_t)v))
            continue;
        for (size_t i = 0; i < sizeof reaped / sizeof reaped[0]; i++)
            if (reaped[i].pid == 0) {
                reaped[i].pid = (pid_t)v;
                reaped[i].status = st;
                break;
            }
    }
    closedir(d);
}

/* Waits up to ms for pid (our child) to exit; 1 with *status when it did. */
static int wait_exit(pid_t pid, int *status, unsigned ms)
{
    uint64_t end = aos_mono_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno == ECHILD)
            return take_reaped(pid, status);
        if (aos_mono_ms() >= end)
            return 0;
        h_sleep_ms(20);
    }
}

/* Reads /proc/PID/<what> (NULs turned into spaces); 0 when unreadable. */
static size_t proc_read(pid_t pid, const char *what, char *buf, size_t cap)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/%s", (int)pid, what);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    close(fd);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == 0)
            buf[i] = ' ';
    buf[n] = 0;
    return n;
}

/* State letter, parent and process group from /proc/PID/stat; 0 when it is gone. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp)
{
    char buf[1024];
    if (!proc_read(pid, "stat", buf, sizeof buf))
        return 0;
    char *rp = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    int pp, pg;
    if (!rp || sscanf(rp + 1, " %c %d %d", state, &pp, &pg) != 3)
        return 0;
    *ppid = pp;
    *pgrp = pg;
    return 1;
}

/* Whether a process belongs to aosd on h's data dir. We are a child subreaper, so every
 * descendant of a dead aosd is reparented to us, postgres backends included; aosd runs in
 * its own process group, so an orphan is told from a helper the test itself started (in
 * our group). Besides, anything whose command line or environment names the data dir. */
static int belongs(const h_aosd *h, pid_t pid, char *state, char *cmd, size_t cmdcap)
{
    static char env[65536];
    pid_t ppid, pgrp;
    if (pid == getpid() || is_live_aosd(pid) || !proc_stat(pid, state, &ppid, &pgrp))
        return 0;
    proc_read(pid, "cmdline", cmd, cmdcap);
    if (ppid == getpid() && pgrp != getpgrp())
        return 1;
    return strstr(cmd, h->dir) != NULL ||
           (proc_read(pid, "environ", env, sizeof env) && strstr(env, h->dir));
}

/* Lists (into out, one line each) the processes of aosd on h's data dir still alive. */
static int find_leftovers(const h_aosd *h, char *out, size_t cap)
{
    static char cmd[4096];
    int found = 0;
    size_t used = 0;
    out[0] = 0;
    DIR *d = opendir("/proc");
    if (!d)
        fail_msg("harness: cannot read /proc: %s", strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end, state;
        long v = strtol(de->d_name, &end, 10);
        if (*end || v <= 0 || !belongs(h, (pid_t)v, &state, cmd, sizeof cmd))
            continue;
        if (state == 'Z' || state == 'X')
            continue; /* dead, waiting to be reaped */
        found++;
        int w = snprintf(out + used, cap - used, "  pid %ld state %c: %.200s\n", v, state,
                         cmd);
        if (w > 0 && (size_t)w < cap - used)
            used += (size_t)w;
    }
    closedir(d);
    return found;
}

/* After a failure: so the next test does not inherit a half-stopped system. */
static void kill_leftovers(const h_aosd *h)
{
    static char cmd[4096];
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end, state;
        long v = strtol(de->d_name, &end, 10);
        if (!*end && v > 0 && belongs(h, (pid_t)v, &state, cmd, sizeof cmd))
            kill((pid_t)v, SIGKILL);
    }
    closedir(d);
    h_sleep_ms(200);
    reap_orphans();
}

/* Waits until nothing aosd started is alive. Returns how many still are (listed on stderr
 * and then killed, so the next test does not inherit them). */
static int leftovers_after(const h_aosd *h, unsigned ms, const char *after)
{
    static char list[8192];
    uint64_t end = aos_mono_ms() + ms;
    int n;
    for (;;) {
        reap_orphans();
        n = find_leftovers(h, list, sizeof list);
        if (n == 0 || aos_mono_ms() >= end)
            break;
        h_sleep_ms(50);
    }
    if (n) {
        fprintf(stderr, "harness: %d process(es) of aosd on %s still running %u ms after "
                "%s:\n%s", n, h->dir, ms, after, list);
        kill_leftovers(h);
    }
    return n;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(p) != 0 && errno != ENOENT)
        fprintf(stderr, "harness: rm %s: %s\n", p, strerror(errno));
    return 0;
}

static void h_free(h_aosd *h, int remove_dir)
{
    live_set(h->pid, 0);
    if (h->conn)
        aos_close(h->conn);
    if (remove_dir)
        nftw(h->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(h);
}

/* Ends a failed start or stop: logs, what is left killed, the handle freed, then the test
 * fails with the message. The data dir (a whole PostgreSQL cluster) is removed unless
 * AOS_IT_KEEP=1 asks to keep it for a look. */
static void h_fail(h_aosd *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void h_fail(h_aosd *h, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_logs(h);
    kill_leftovers(h);
    const char *keep = getenv("AOS_IT_KEEP");
    int kept = keep && !strcmp(keep, "1");
    fprintf(stderr, "harness: data dir %s %s\n", h->dir,
            kept ? "kept (AOS_IT_KEEP=1)" : "removed (AOS_IT_KEEP=1 keeps it)");
    h_free(h, !kept);
    fail_msg("%s", msg);
}

/* ---- kernel.status ------------------------------------------------------------------ */

/* kernel.status, decoded and checked; NULL (why filled in) when it did not answer. The
 * caller frees the reply with aos__status_reply__free_unpacked. */
static Aos__StatusReply *status(h_aosd *h, char *why, size_t whylen)
{
    aos_call_opts o = {.timeout_ms = H_CALL_MS};
    aos_reply r;
    aos_err err = aos_call(h->conn, &o, "kernel.status", NULL, 0, &r);
    if (err != AOS_OK) {
        snprintf(why, whylen, "kernel.status: %s: %s", aos_err_name(err), r.error);
        aos_reply_clear(&r);
        return NULL;
    }
    Aos__StatusReply *s = aos__status_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s)
        fail_msg("kernel.status: the reply is not a StatusReply");
    if (!aos_pb_strings_valid(&s->base))
        fail_msg("kernel.status: the reply holds invalid UTF-8");
    return s;
}

static const Aos__ChildStatus *find_child(const Aos__StatusReply *s, const char *name)
{
    for (size_t i = 0; i < s->n_children; i++)
        if (s->children[i]->name && !strcmp(s->children[i]->name, name))
            return s->children[i];
    return NULL;
}

/* 1: every child that must run is running; 0: not yet; -1: one has failed (aosd gave up
 * restarting it, so waiting longer cannot help). why says who is not running and why. */
static int all_running(const h_aosd *h, const Aos__StatusReply *s, char *why, size_t whylen)
{
    size_t n = sizeof h_children / sizeof h_children[0];
    if (!h->pg_embedded)
        n--; /* postgres is last: with an external database there is none */
    for (size_t i = 0; i < n; i++) {
        const Aos__ChildStatus *c = find_child(s, h_children[i]);
        if (!c) {
            snprintf(why, whylen, "kernel.status lists no child \"%s\"", h_children[i]);
            return 0;
        }
        if (strcmp(c->state, "running") || c->pid <= 0) {
            snprintf(why, whylen, "%s is %s (pid %d, last exit \"%s\", reason \"%s\")",
                     c->name, c->state, (int)c->pid, c->last_exit, c->reason);
            return strcmp(c->state, "failed") ? 0 : -1;
        }
    }
    return 1;
}

/* ---- start and stop ----------------------------------------------------------------- */

/* fork+exec (nng is not fork-safe: the child only execs). aosd gets SIGTERM if the test
 * process dies, so a crashed test does not leave a system running. */
static pid_t spawn_aosd(h_aosd *h, const char *const *extra)
{
    const char *argv[H_ARGS_MAX + 4];
    size_t n = 0;
    argv[n++] = h_bin("aosd");
    argv[n++] = "--data-dir";
    argv[n++] = h->dir;
    for (size_t i = 0; extra && extra[i]; i++) {
        if (n >= H_ARGS_MAX + 3)
            h_fail(h, "h_start: more than %d extra arguments", H_ARGS_MAX);
        if (!strcmp(extra[i], "--pg-dsn") || !strncmp(extra[i], "--pg-dsn=", 9))
            h->pg_embedded = 0;
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s", argv[0]);
    if (access(exe, X_OK) != 0)
        h_fail(h, "h_start: %s: %s (is aosd built?)", exe, strerror(errno));

    /* The harness starts its own PostgreSQL: a developer's AOS_PG_DSN must not leak in
     * (a test that wants an external one passes --pg-dsn). */
    static char *envp[512];
    size_t ne = 0;
    for (char **e = environ; *e && ne < sizeof envp / sizeof envp[0] - 1; e++)
        if (strncmp(*e, "AOS_PG_DSN=", 11) && strncmp(*e, "AOS_DATA_DIR=", 13))
            envp[ne++] = *e;
    envp[ne] = NULL;

    int fd = open(h->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        h_fail(h, "h_start: %s: %s", h->log, strerror(errno));
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        h_fail(h, "h_start: fork: %s", strerror(errno));
    if (pid == 0) {
        /* only async-signal-safe calls from here to exec */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent ||
            setpgid(0, 0) != 0)
            _exit(127);
        if ((devnull >= 0 && dup2(devnull, 0) < 0) || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(127);
        execve(exe, (char *const *)argv, envp);
        _exit(127);
    }
    close(fd);
    if (devnull >= 0)
        close(devnull);
    live_set(0, pid);
    return pid;
}

h_aosd *h_start(const char *const *extra_args)
{
    /* Orphans of aosd come to us, so h_stop and h_kill9 can see anything it leaves. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        fail_msg("h_start: PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    /* a write to a closed pipe must be an error, not the death of the test */
    signal(SIGPIPE, SIG_IGN);

    h_aosd *h = calloc(1, sizeof *h);
    if (!h)
        fail_msg("h_start: out of memory");
    h->pg_embedded = 1;
    snprintf(h->dir, sizeof h->dir, "/tmp/aos-it-XXXXXX");
    if (!mkdtemp(h->dir)) {
        free(h);
        fail_msg("h_start: mkdtemp: %s", strerror(errno));
    }
    snprintf(h->log, sizeof h->log, "%s/aosd.log", h->dir);
    h->pid = spawn_aosd(h, extra_args);

    char url[AOS_PATH_MAX + 16], why[AOS_ERRMSG_MAX + 128] = "";
    if (aos_control_url(h->dir, url, sizeof url) != AOS_OK)
        h_fail(h, "h_start: no control URL for %s", h->dir);
    uint64_t end = aos_mono_ms() + H_START_MS;
    int st, ready = 0;
    while (ready == 0) {
        pid_t r = waitpid(h->pid, &st, WNOHANG);
        if (r == h->pid) {
            leftovers_after(h, H_ORPHAN_MS, "aosd exited during start");
            h_fail(h, "h_start: aosd exited during start (%s %d)",
                   WIFEXITED(st) ? "status" : "signal",
                   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        }
        if (aos_mono_ms() >= end)
            break;
        if (!h->conn) {
            aos_err err = aos_connect(url, &h->conn, why, sizeof why);
            if (err != AOS_OK && err != AOS_ERR_UNAVAILABLE)
                break;
        }
        if (h->conn) {
            Aos__StatusReply *s = status(h, why, sizeof why);
            if (s) {
                ready = all_running(h, s, why, sizeof why);
                aos__status_reply__free_unpacked(s, NULL);
            }
        }
        if (ready == 0)
            h_sleep_ms(100);
    }
    if (ready != 1) {
        kill(h->pid, SIGTERM);
        if (!wait_exit(h->pid, &st, H_STOP_MS)) {
            kill(h->pid, SIGKILL);
            wait_exit(h->pid, &st, H_STOP_MS);
        }
        h_fail(h, "h_start: aosd on %s not ready%s: %s", h->dir,
               ready < 0 ? "" : " within 60 s", why);
    }
    return h;
}

void h_stop(h_aosd *h)
{
    int st;
    if (!h) /* a teardown after a start that failed */
        return;
    if (kill(h->pid, SIGTERM) != 0)
        h_fail(h, "h_stop: kill %d: %s", (int)h->pid, strerror(errno));
    if (!wait_exit(h->pid, &st, H_STOP_MS)) {
        kill(h->pid, SIGKILL);
        wait_exit(h->pid, &st, H_STOP_MS);
        h_fail(h, "h_stop: aosd (pid %d) did not exit within %u ms of SIGTERM", (int)h->pid,
               H_STOP_MS);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        int n = leftovers_after(h, H_ORPHAN_MS, "a failed stop");
        h_fail(h, "h_stop: aosd ended with %s %d, want exit 0%s",
               WIFEXITED(st) ? "exit" : "signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
               n ? "; and it left processes behind" : "");
    }
    int n = leftovers_after(h, H_GRACE_MS, "SIGTERM and exit 0");
    if (n)
        h_fail(h, "h_stop: %d process(es) of aosd outlived its exit 0", n);
    h_free(h, 1);
}

static void kill9(h_aosd *h, int remove_dir)
{
    int st;
    if (kill(h->pid, SIGKILL) != 0)
        h_fail(h, "h_kill9: kill %d: %s", (int)h->pid, strerror(errno));
    if (!wait_exit(h->pid, &st, H_STOP_MS))
        h_fail(h, "h_kill9: aosd (pid %d) survived SIGKILL", (int)h->pid);
    int n = leftovers_after(h, H_ORPHAN_MS, "kill -9 of aosd");
    if (n)
        h_fail(h, "h_kill9: %d process(es) outlived aosd by %u ms", n, H_ORPHAN_MS);
    h_free(h, remove_dir);
}

void h_kill9(h_aosd *h)
{
    kill9(h, 1);
}

void h_kill9_keep(h_aosd *h, char *dir, size_t cap)
{
    snprintf(dir, cap, "%s", h->dir);
    kill9(h, 0);
}

const char *h_data_dir(const h_aosd *h)
{
    return h->dir;
}

pid_t h_aosd_pid(const h_aosd *h)
{
    return h->pid;
}

aos_conn *h_conn(h_aosd *h)
{
    return h->conn;
}

/* ---- children ----------------------------------------------------------------------- */

pid_t h_child(h_aosd *h, const char *name, char *state)
{
    char why[AOS_ERRMSG_MAX + 128];
    if (state)
        state[0] = 0;
    Aos__StatusReply *s = status(h, why, sizeof why);
    if (!s)
        return 0;
    pid_t pid = 0;
    const Aos__ChildStatus *c = find_child(s, name);
    if (c) {
        pid = c->pid;
        if (state)
            snprintf(state, 32, "%s", c->state);
    }
    aos__status_reply__free_unpacked(s, NULL);
    return pid;
}

void h_dump_log(const h_aosd *h)
{
    print_tail(h->log, 80);
}

pid_t h_wait_running(h_aosd *h, const char *name, pid_t not_pid, uint32_t timeout_ms)
{
    uint64_t end = aos_mono_ms() + timeout_ms;
    char state[32];
    for (;;) {
        pid_t pid = h_child(h, name, state);
        if (pid > 0 && pid != not_pid && !strcmp(state, "running"))
            return pid;
        if (aos_mono_ms() >= end)
            return 0;
        h_sleep_ms(50);
    }
}

int h_wait_state(h_aosd *h, const char *name, const char *state, uint32_t timeout_ms)
{
    uint64_t end = aos_mono_ms() + timeout_ms;
    char now[32];
    for (;;) {
        h_child(h, name, now);
        if (!strcmp(now, state))
            return 1;
        if (aos_mono_ms() >= end)
            return 0;
        h_sleep_ms(50);
    }
}

/* ---- aosctl ------------------------------------------------------------------------- */

void h_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    if (fclose(f) != 0 || bad)
        fail_msg("%s: writing failed: %s", path, strerror(errno));
}

h_aosd *h_start_yaml(const char *dir, const char *yaml)
{
    char path[4200], why[1024];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    h_write_file(path, yaml);
    h_aosd *h = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!h)
        fail_msg("aosd on %s: %s", dir, why);
    return h;
}

int h_apply(h_aosd *h, const char *yaml, size_t len, const char *file, int prune)
{
    Aos__Agent__ApplyRequest r = AOS__AGENT__APPLY_REQUEST__INIT;
    r.yaml = (ProtobufCBinaryData){len, (uint8_t *)yaml};
    r.file = (ProtobufCBinaryData){strlen(file), (uint8_t *)file};
    r.prune = prune;
    size_t n = aos__agent__apply_request__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    aos__agent__apply_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 30000};
    aos_call(h_conn(h), &o, "kernel.agent.apply", buf, n, &rep);
    free(buf);
    int st = rep.status;
    if (st)
        print_message("apply: %s\n", rep.error);
    aos_reply_clear(&rep);
    return st;
}

int h_aosctl(h_aosd *h, char *out, size_t cap, const char *const *argv)
{
    const char *args[H_ARGS_MAX + 4];
    size_t n = 0;
    args[n++] = h_bin("aosctl");
    args[n++] = "--data-dir";
    args[n++] = h->dir;
    for (size_t i = 0; argv && argv[i]; i++) {
        if (n >= H_ARGS_MAX + 3)
            fail_msg("h_aosctl: more than %d arguments", H_ARGS_MAX);
        args[n++] = argv[i];
    }
    args[n] = NULL;
    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s", args[0]);

    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        fail_msg("h_aosctl: pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, (char *const *)args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        fail_msg("h_aosctl: %s: %s", exe, strerror(rc));
    }
    /* read everything, so aosctl never blocks on a full pipe; keep what fits */
    size_t used = 0;
    char sink[4096];
    for (;;) {
        char *dst = out && used + 1 < cap ? out + used : sink;
        size_t room = out && used + 1 < cap ? cap - 1 - used : sizeof sink;
        ssize_t r = read(p[0], dst, room);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (dst != sink)
            used += (size_t)r;
    }
    close(p[0]);
    if (out && cap)
        out[used] = 0;
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            if (take_reaped(pid, &st))
                break;
            fail_msg("h_aosctl: waitpid: %s", strerror(errno));
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- privilege separation: restarts on a kept dir, acting as a service user ---------- */

#include <grp.h>
#include <poll.h>
#include <pwd.h>

int h_privsep_skip_reason(char *why, size_t cap)
{
    static const char *const users[] = {"aos-pg",  "aos-storage", "aos-memory", "aos-audit",
                                        "aos-llm", "aos-tool"};
    if (geteuid() != 0) {
        snprintf(why, cap, "not root: the per-server uids exist only when aosd runs as root");
        return 1;
    }
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
        uid_t u;
        gid_t g;
        if (!h_user(users[i], &u, &g)) {
            snprintf(why, cap, "user %s does not exist: run tools/deps.sh as root", users[i]);
            return 1;
        }
    }
    return 0;
}

int h_user(const char *user, uid_t *uid, gid_t *gid)
{
    char buf[4096];
    struct passwd pw, *res = NULL;
    if (getpwnam_r(user, &pw, buf, sizeof buf, &res) != 0 || !res)
        return 0;
    *uid = pw.pw_uid;
    *gid = pw.pw_gid;
    return 1;
}

const char *h_log_path(const h_aosd *h)
{
    return h->log;
}

void h_stop_keep(h_aosd *h, char *dir, size_t cap)
{
    int st;
    snprintf(dir, cap, "%s", h->dir);
    if (kill(h->pid, SIGTERM) != 0)
        h_fail(h, "h_stop_keep: kill %d: %s", (int)h->pid, strerror(errno));
    if (!wait_exit(h->pid, &st, H_STOP_MS)) {
        kill(h->pid, SIGKILL);
        wait_exit(h->pid, &st, H_STOP_MS);
        h_fail(h, "h_stop_keep: aosd (pid %d) did not exit within %u ms of SIGTERM",
               (int)h->pid, H_STOP_MS);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        leftovers_after(h, H_ORPHAN_MS, "a failed stop");
        h_fail(h, "h_stop_keep: aosd ended with %s %d, want exit 0",
               WIFEXITED(st) ? "exit" : "signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    int n = leftovers_after(h, H_GRACE_MS, "SIGTERM and exit 0");
    if (n)
        h_fail(h, "h_stop_keep: %d process(es) of aosd outlived its exit 0", n);
    h_free(h, 0);
}

int h_endpoint_start(h_endpoint *ep, const char *const *extra_args)
{
    char bin[PATH_MAX];
    snprintf(bin, sizeof bin, "%s", h_bin("aos-test-llm-endpoint"));
    const char *argv[H_ARGS_MAX + 8] = {bin, "--port", "0", "--stdin-eof", "--max-s", "3600"};
    size_t n = 6;
    for (size_t i = 0; extra_args && extra_args[i] && n < H_ARGS_MAX + 7; i++)
        argv[n++] = extra_args[i];
    argv[n] = NULL;
    int out[2], in[2];
    if (pipe2(out, O_CLOEXEC) || pipe2(in, O_CLOEXEC))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    int port = 0;
    if (!f || fscanf(f, "port %d", &port) != 1 || port <= 0) {
        fprintf(stderr, "h_endpoint_start: %s did not say its port\n", bin);
        close(in[1]);
        waitpid(pid, NULL, 0);
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    ep->pid = pid;
    ep->port = port;
    ep->stdin_w = in[1];
    return 0;
}

void h_endpoint_stop(h_endpoint *ep)
{
    close(ep->stdin_w);
    for (int i = 0; i < 100; i++) {
        if (waitpid(ep->pid, NULL, WNOHANG) == ep->pid)
            return;
        usleep(20000);
    }
    kill(ep->pid, SIGKILL);
    waitpid(ep->pid, NULL, 0);
}

static unsigned count_pat(const char *s, size_t n)
{
    static const size_t plen = sizeof H_DELTA_PAT - 1;
    unsigned k = 0;
    const char *p = s, *end = s + n;
    while (p < end && (p = memmem(p, (size_t)(end - p), H_DELTA_PAT, plen))) {
        k++;
        p += plen;
    }
    return k;
}

void h_deltas_feed(h_deltas *d, const char *data, size_t n)
{
    enum { PLEN = sizeof H_DELTA_PAT - 1 };
    char buf[2 * PLEN];
    size_t k = n < PLEN - 1 ? n : PLEN - 1;
    /* carry and the head are each shorter than the pattern: a match here straddles */
    memcpy(buf, d->carry, d->carry_len);
    memcpy(buf + d->carry_len, data, k);
    d->n += count_pat(buf, d->carry_len + k) + count_pat(data, n);
    if (n >= PLEN - 1) {
        memcpy(d->carry, data + n - (PLEN - 1), PLEN - 1);
        d->carry_len = PLEN - 1;
    } else {
        size_t all = d->carry_len + k, keep = all < PLEN - 1 ? all : PLEN - 1;
        memcpy(d->carry, buf + all - keep, keep);
        d->carry_len = keep;
    }
}

void h_wait_gone(h_aosd *h, uint32_t timeout_ms, char *dir, size_t cap)
{
    int st;
    snprintf(dir, cap, "%s", h->dir);
    if (!wait_exit(h->pid, &st, timeout_ms)) {
        kill(h->pid, SIGKILL);
        wait_exit(h->pid, &st, H_STOP_MS);
        h_fail(h, "h_wait_gone: aosd (pid %d) did not exit within %u ms", (int)h->pid,
               timeout_ms);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        h_fail(h, "h_wait_gone: aosd ended with %s %d, want exit 0",
               WIFEXITED(st) ? "exit" : "signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    int n = leftovers_after(h, H_GRACE_MS, "its own exit 0");
    if (n)
        h_fail(h, "h_wait_gone: %d process(es) of aosd outlived its exit 0", n);
    h_free(h, 0);
}

/* The start-up wait of h_start, but a refusal is an answer, not a test failure: the caller
 * checks what aosd said. Whatever aosd started is gone when this returns NULL. */
h_aosd *h_start_on(const char *dir, const char *const *extra_args, uint32_t timeout_ms,
                   char *why, size_t whylen)
{
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        fail_msg("h_start_on: PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    why[0] = 0;
    h_aosd *h = calloc(1, sizeof *h);
    if (!h)
        fail_msg("h_start_on: out of memory");
    h->pg_embedded = 1;
    if ((size_t)snprintf(h->dir, sizeof h->dir, "%s", dir) >= sizeof h->dir) {
        free(h);
        fail_msg("h_start_on: data dir %s is too long for the harness", dir);
    }
    snprintf(h->log, sizeof h->log, "%s/aosd.log", h->dir);
    h->pid = spawn_aosd(h, extra_args);

    char url[AOS_PATH_MAX + 16], sw[AOS_ERRMSG_MAX + 128] = "";
    if (aos_control_url(h->dir, url, sizeof url) != AOS_OK)
        h_fail(h, "h_start_on: no control URL for %s", h->dir);
    uint64_t end = aos_mono_ms() + timeout_ms;
    int st, ready = 0, exited = 0;
    while (ready == 0) {
        pid_t r = waitpid(h->pid, &st, WNOHANG);
        if (r == h->pid) {
            exited = 1;
            snprintf(why, whylen, "aosd exited during start (%s %d)",
                     WIFEXITED(st) ? "status" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            break;
        }
        if (aos_mono_ms() >= end)
            break;
        /* any refusal is retried: on a dir being migrated, what is at control.sock may
         * still be the old (or a planted) file until aosd replaced it */
        if (!h->conn && aos_connect(url, &h->conn, sw, sizeof sw) != AOS_OK)
            h->conn = NULL;
        if (h->conn) {
            Aos__StatusReply *s = status(h, sw, sizeof sw);
            if (s) {
                ready = all_running(h, s, sw, sizeof sw);
                aos__status_reply__free_unpacked(s, NULL);
            }
        }
        if (ready == 0)
            h_sleep_ms(100);
    }
    if (ready == 1)
        return h;
    if (!exited) {
        snprintf(why, whylen, "aosd not ready%s: %s", ready < 0 ? "" : " in time", sw);
        kill(h->pid, SIGTERM);
        if (!wait_exit(h->pid, &st, H_STOP_MS)) {
            kill(h->pid, SIGKILL);
            wait_exit(h->pid, &st, H_STOP_MS);
        }
    }
    if (leftovers_after(h, H_ORPHAN_MS, "a refused start"))
        snprintf(why + strlen(why), whylen - strlen(why), "; and it left processes behind");
    h_free(h, 0);
    return NULL;
}

void h_remove_dir(const char *dir)
{
    /* FTW_PHYS: a planted symlink is removed, never followed */
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct Aos__StatusReply *h_status(h_aosd *h, char *why, size_t whylen)
{
    return status(h, why, whylen);
}

int h_run_as(const char *user, const char *const *argv, char *out, size_t cap,
             uint32_t timeout_ms)
{
    const char *args[H_ARGS_MAX + 8];
    char ru[128], rg[128];
    size_t n = 0;
    if (user) {
        snprintf(ru, sizeof ru, "--reuid=%s", user);
        snprintf(rg, sizeof rg, "--regid=%s", user);
        args[n++] = "/usr/bin/setpriv";
        args[n++] = ru;
        args[n++] = rg;
        args[n++] = "--clear-groups";
        args[n++] = "--";
    }
    for (size_t i = 0; argv[i]; i++) {
        if (n >= H_ARGS_MAX + 7)
            fail_msg("h_run_as: more than %d arguments", H_ARGS_MAX);
        args[n++] = argv[i];
    }
    args[n] = NULL;
    /* a fixed environment: nothing of ours (a DSN, a PGPASSWORD) helps the service user */
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", "LC_ALL=C",
                    "PGCONNECT_TIMEOUT=5", NULL};
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        fail_msg("h_run_as: pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    /* from /: ctest's directory may be under a home the service user cannot enter */
    posix_spawn_file_actions_addchdir_np(&fa, "/");
    pid_t pid;
    int rc = posix_spawn(&pid, args[0], &fa, NULL, (char *const *)args, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        fail_msg("h_run_as: %s: %s", args[0], strerror(rc));
    }
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    size_t used = 0;
    uint64_t end = aos_mono_ms() + timeout_ms;
    int timed_out = 0, eof = 0;
    while (!eof) {
        uint64_t now = aos_mono_ms();
        if (now >= end) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        if (poll(&pf, 1, (int)(end - now)) < 0 && errno != EINTR)
            break;
        char sink[4096];
        for (;;) {
            char *dst = out && used + 1 < cap ? out + used : sink;
            size_t room = out && used + 1 < cap ? cap - 1 - used : sizeof sink;
            ssize_t r = read(p[0], dst, room);
            if (r > 0) {
                if (dst != sink)
                    used += (size_t)r;
                continue;
            }
            if (r == 0)
                eof = 1;
            break;
        }
    }
    close(p[0]);
    if (out && cap)
        out[used] = 0;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            fail_msg("h_run_as: waitpid: %s", strerror(errno));
    if (timed_out)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int h_as_user(const char *user, int (*fn)(void *arg), void *arg)
{
    uid_t u;
    gid_t g;
    if (!h_user(user, &u, &g))
        fail_msg("h_as_user: no user %s", user);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("h_as_user: fork: %s", strerror(errno));
    if (pid == 0) {
        /* only system calls from here on: the parent may have threads */
        if (setgroups(0, NULL) != 0 || setresgid(g, g, g) != 0 || setresuid(u, u, u) != 0)
            _exit(255);
        _exit(fn(arg) & 0xff);
    }
    int st;
    if (!wait_exit(pid, &st, 10000)) {
        kill(pid, SIGKILL);
        wait_exit(pid, &st, 10000);
        fail_msg("h_as_user: the child acting as %s did not finish in 10 s", user);
    }
    if (!WIFEXITED(st))
        fail_msg("h_as_user: the child acting as %s died of signal %d", user, WTERMSIG(st));
    if (WEXITSTATUS(st) == 255)
        fail_msg("h_as_user: could not become %s", user);
    return WEXITSTATUS(st);
}

/* ---- bounded nng close, aosd's fds and log (appended for the listener limits) --------- */

#include <pthread.h>

static void h_close_sock(void *arg)
{
    nng_close(*(nng_socket *)arg);
    free(arg);
}

int h_nng_close(nng_socket s, unsigned ms)
{
    nng_socket *p = malloc(sizeof *p);
    if (!p)
        return 0; /* left open: a leak in a test beats a hang */
    *p = s;
    return aos_run_bounded(h_close_sock, p, ms);
}

int h_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int h_log_count(const h_aosd *h, const char *needle)
{
    FILE *f = fopen(h->log, "r");
    if (!f)
        return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int h_fsync_lat(const char *dir, unsigned n, unsigned gap_us, uint64_t *p50, uint64_t *p99,
                uint64_t *max)
{
    if (!n || n > 100000)
        return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/h-fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    uint64_t *lat = fd >= 0 ? calloc(n, sizeof *lat) : NULL;
    if (!lat) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    static const char block[4096];
    unsigned got = 0;
    for (; got < n; got++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (pwrite(fd, block, sizeof block, (off_t)(got % 256) * 4096) != (ssize_t)sizeof block ||
            fdatasync(fd) != 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &b);
        int64_t ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
        lat[got] = (uint64_t)(ns / 1000);
        if (gap_us)
            usleep(gap_us);
    }
    close(fd);
    unlink(path);
    if (got)
        qsort(lat, got, sizeof *lat, cmp_u64);
    if (p50)
        *p50 = got ? lat[got / 2] : 0;
    if (p99)
        *p99 = got ? lat[got * 99 / 100] : 0;
    if (max)
        *max = got ? lat[got - 1] : 0;
    free(lat);
    return got == n ? 0 : -1;
}
