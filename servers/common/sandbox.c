/* The server sandbox: privilege drop, parent-death signal, rlimits, no_new_privs and one
 * seccomp allow-list per server, built from a shared base and found with strace. */
#include "sandbox.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sched.h>

/* How a listed syscall is allowed. Most are plain; a few are narrowed by argument so the
 * list cannot be turned into a way around the sandbox (a fork, a signal to aosd). */
typedef enum {
    SBX_ALLOW,       /* any arguments */
    SBX_THREAD,      /* clone: only with CLONE_THREAD, i.e. pthread_create, never a fork */
    SBX_ENOSYS,      /* fails with ENOSYS: clone3's flags sit behind a pointer seccomp
                      * cannot read, and glibc falls back to clone on ENOSYS */
    SBX_OWN_PID,     /* tgkill: only to threads of this process (abort(), raise()) */
    SBX_NET,         /* socket: only AF_UNIX, AF_INET, AF_INET6 */
} sbx_how;

typedef struct sbx_call {
    const char *name;   /* libseccomp's name; names this arch lacks are skipped */
    sbx_how how;
} sbx_call;

#define SBX_END {NULL, SBX_ALLOW}

/* What every server needs after the sandbox: nng's threads serving the link to aosd,
 * the worker pool, malloc, aos_log, and the exit path. */
static const sbx_call sbx_base[] = {
    {"read", SBX_ALLOW},            /* nng's eventfd wakeups; libc reads */
    {"write", SBX_ALLOW},           /* aos_log's one write(2) per line; nng wakeups */
    {"readv", SBX_ALLOW},           /* nng ipc receives a message header and body */
    {"writev", SBX_ALLOW},          /* nng ipc sends header and body in one call */
    {"sendmsg", SBX_ALLOW},         /* nng ipc transport send */
    {"recvmsg", SBX_ALLOW},         /* nng ipc transport receive */
    {"close", SBX_ALLOW},           /* nng closes pipes; libc closes what it opened */
    {"shutdown", SBX_ALLOW},        /* nng shuts a pipe down when aosd goes away */
    {"epoll_wait", SBX_ALLOW},      /* nng's poller thread */
    {"epoll_pwait", SBX_ALLOW},     /* same, as newer libcs spell it */
    {"epoll_ctl", SBX_ALLOW},       /* nng arms and disarms pipes in its poller */
    {"futex", SBX_ALLOW},           /* every mutex and condition variable */
    {"clone", SBX_THREAD},          /* worker and nng threads, not processes */
    {"clone3", SBX_ENOSYS},         /* glibc's first try at a thread: see SBX_ENOSYS */
    {"set_robust_list", SBX_ALLOW}, /* glibc, at thread start */
    {"rseq", SBX_ALLOW},            /* glibc registers rseq at thread start */
    {"madvise", SBX_ALLOW},         /* glibc frees a finished thread's stack */
    {"mmap", SBX_ALLOW},            /* malloc arenas, thread stacks */
    {"munmap", SBX_ALLOW},          /* malloc, thread stacks */
    {"mprotect", SBX_ALLOW},        /* malloc arenas grow, thread stack guards */
    {"brk", SBX_ALLOW},             /* malloc's main heap */
    {"rt_sigaction", SBX_ALLOW},    /* abort() resets SIGABRT */
    {"rt_sigprocmask", SBX_ALLOW},  /* thread creation blocks signals around clone */
    {"rt_sigreturn", SBX_ALLOW},    /* return from any signal handler */
    {"getpid", SBX_ALLOW},          /* aos_log's line prefix, ping's reply */
    {"gettid", SBX_ALLOW},          /* abort(), raise() */
    {"tgkill", SBX_OWN_PID},        /* abort() raises SIGABRT in itself */
    {"sched_yield", SBX_ALLOW},     /* nng spins briefly in its task queue */
    {"clock_gettime", SBX_ALLOW},   /* when the vDSO falls back to the syscall */
    {"clock_nanosleep", SBX_ALLOW}, /* nng_msleep, backoff sleeps */
    {"nanosleep", SBX_ALLOW},       /* same, older spelling */
    {"getrandom", SBX_ALLOW},       /* nng's ids and random backoff; malloc's tcache key */
    {"exit", SBX_ALLOW},            /* a thread ends */
    {"exit_group", SBX_ALLOW},      /* the process ends; _exit in the SIGSYS reporter */
    SBX_END,
};

/* What a sanitized build (the one the tests run) adds so that ASan and UBSan can print a
 * report and exit with it, instead of the report being cut short by SIGSYS. */
static const sbx_call sbx_sanitizer[] = {
    {"sigaltstack", SBX_ALLOW},     /* ASan gives each new thread an alternate stack */
    {"openat", SBX_ALLOW},          /* /proc/self/maps and the binary, to symbolize */
    {"newfstatat", SBX_ALLOW},      /* the symbolizer sizes the files it maps */
    {"fstat", SBX_ALLOW},           /* same, older spelling */
    {"lseek", SBX_ALLOW},           /* libbacktrace reads debug sections */
    {"pread64", SBX_ALLOW},         /* libbacktrace reads debug sections */
    {"readlink", SBX_ALLOW},        /* /proc/self/exe for the module list */
    {"prlimit64", SBX_ALLOW},       /* the runtime reads its stack limit */
    {"getrlimit", SBX_ALLOW},       /* same, older spelling */
    {"sched_getaffinity", SBX_ALLOW}, /* the runtime sizes its thread registry */
    {"prctl", SBX_ALLOW},           /* PR_GET_DUMPABLE and thread names in reports */
    {"mremap", SBX_ALLOW},          /* its internal vectors grow */
    SBX_END,
};

/* What libpq needs to (re)connect as the server's role and to run queries: a Unix or
 * TCP socket, ~/.pgpass and /etc/passwd lookups, and its poll loop. */
static const sbx_call sbx_db[] = {
    {"socket", SBX_NET},            /* a new connection: Unix socket or TCP */
    {"connect", SBX_ALLOW},         /* a new connection */
    {"poll", SBX_ALLOW},            /* libpq waits for the socket */
    {"ppoll", SBX_ALLOW},           /* same, as newer libcs spell it */
    {"getsockopt", SBX_ALLOW},      /* SO_ERROR after a non-blocking connect */
    {"setsockopt", SBX_ALLOW},      /* TCP_NODELAY, keepalives */
    {"getsockname", SBX_ALLOW},     /* libpq records its local address */
    {"getpeername", SBX_ALLOW},     /* libpq's peer check on a Unix socket */
    {"sendto", SBX_ALLOW},          /* libpq sends queries */
    {"recvfrom", SBX_ALLOW},        /* libpq reads results */
    {"fcntl", SBX_ALLOW},           /* libpq makes the socket non-blocking */
    {"openat", SBX_ALLOW},          /* ~/.pgpass, /etc/passwd, /etc/services */
    {"newfstatat", SBX_ALLOW},      /* libpq checks ~/.pgpass's mode */
    {"fstat", SBX_ALLOW},           /* stdio on those files */
    {"lseek", SBX_ALLOW},           /* stdio on those files */
    {"getuid", SBX_ALLOW},          /* libpq's default user name */
    {"geteuid", SBX_ALLOW},         /* libpq's home directory lookup */
    {"uname", SBX_ALLOW},           /* libpq's default host name */
    SBX_END,
};

typedef struct sbx_profile {
    const char *server;
    const sbx_call *lists[3];   /* NULL-padded */
} sbx_profile;

/* One allow-list per server. tool's issue will add what starting a sandboxed tool takes
 * (a fork-style clone, pipes, wait4, kill of its own children; execve stays in the child,
 * after the tool's own filter); llm's adds libcurl's network and TLS calls (socket,
 * connect, poll, DNS through /etc/resolv.conf and /etc/hosts). */
static const sbx_profile sbx_profiles[] = {
    {"memory", {sbx_base, sbx_db, NULL}},
    {"storage", {sbx_base, sbx_db, NULL}},
    {"audit", {sbx_base, sbx_db, NULL}},
    {"tool", {sbx_base, NULL, NULL}},
    {"llm", {sbx_base, NULL, NULL}},
};

#if defined(AOS_SANITIZE) || defined(__SANITIZE_ADDRESS__)
#define SBX_SANITIZED 1
#else
#define SBX_SANITIZED 0
#endif

/* Servers write no files of their own; only stderr may be a log file, so the cap only
 * stops a runaway loop from filling the disk. */
#define SBX_FSIZE_MAX ((rlim_t)1 << 30)
/* A server holds the link to aosd, nng's poller and eventfds, and one database
 * connection per worker: a few dozen descriptors. 1024 leaves room and keeps every
 * descriptor below FD_SETSIZE for any library still using select(). */
#define SBX_NOFILE_MAX ((rlim_t)1024)

/* Exit code of a process stopped by the SIGSYS reporter: 128 + SIGSYS, as a shell
 * would show a SIGSYS death. */
#define SBX_TRAP_EXIT 159

static const sbx_profile *sbx_find(const char *name)
{
    for (size_t i = 0; i < sizeof sbx_profiles / sizeof sbx_profiles[0]; i++)
        if (!strcmp(sbx_profiles[i].server, name))
            return &sbx_profiles[i];
    return NULL;
}

aos_err sbx_lookup_user(const char *user, uid_t *uid, gid_t *gid, char *why, size_t whylen)
{
    if (!user || !*user) {
        snprintf(why, whylen, "no user name given");
        return AOS_ERR_USAGE;
    }
    struct passwd pw, *res = NULL;
    char buf[16384];
    int rc = getpwnam_r(user, &pw, buf, sizeof buf, &res);
    if (rc) {
        snprintf(why, whylen, "looking up user %s: %s", user, strerror(rc));
        return AOS_ERR_INTERNAL;
    }
    if (!res) {
        snprintf(why, whylen, "no such user: %s", user);
        return AOS_ERR_NOT_FOUND;
    }
    if (pw.pw_uid == 0 || pw.pw_gid == 0) {
        snprintf(why, whylen, "user %s is root (uid %u gid %u): not a privilege drop", user,
                 (unsigned)pw.pw_uid, (unsigned)pw.pw_gid);
        return AOS_ERR_REFUSED;
    }
    *uid = pw.pw_uid;
    *gid = pw.pw_gid;
    return AOS_ERR_OK;
}

/* setgroups/setresgid/setresuid reach every thread (glibc broadcasts them), so nng's
 * threads started before the sandbox lose root too. */
static aos_err sbx_drop(const char *user, char *why, size_t whylen)
{
    uid_t uid;
    gid_t gid;
    aos_err e = sbx_lookup_user(user, &uid, &gid, why, whylen);
    if (e)
        return e;
    if (setgroups(0, NULL) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid)) {
        snprintf(why, whylen, "dropping privileges to %s (uid %u gid %u): %s", user,
                 (unsigned)uid, (unsigned)gid, strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    uid_t r, ef, s;
    gid_t gr, ge, gs;
    if (getresuid(&r, &ef, &s) || getresgid(&gr, &ge, &gs) || r != uid || ef != uid ||
        s != uid || gr != gid || ge != gid || gs != gid || getgroups(0, NULL) != 0) {
        snprintf(why, whylen, "privileges of %s not fully dropped", user);
        return AOS_ERR_INTERNAL;
    }
    /* The proof: root is out of reach for good. */
    if (setuid(0) == 0 || setgid(0) == 0) {
        snprintf(why, whylen, "could regain root after dropping to %s", user);
        return AOS_ERR_INTERNAL;
    }
    return AOS_ERR_OK;
}

static aos_err sbx_limit(int res, const char *resname, rlim_t max, char *why, size_t whylen)
{
    struct rlimit rl;
    if (getrlimit(res, &rl)) {
        snprintf(why, whylen, "getrlimit %s: %s", resname, strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    /* Only ever lower: an unprivileged process cannot raise its hard limit. */
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > max)
        rl.rlim_max = max;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(res, &rl)) {
        snprintf(why, whylen, "setrlimit %s: %s", resname, strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    return AOS_ERR_OK;
}

/* Writes "seccomp: forbidden syscall N" with nothing but write(2) and _exit: it runs in a
 * signal handler inside the sandbox, so no stdio and no malloc. */
static void sbx_sigsys(int sig, siginfo_t *si, void *uctx)
{
    (void)sig;
    (void)uctx;
    char msg[64] = "seccomp: forbidden syscall ";
    size_t n = strlen(msg);
    char digits[16];
    size_t d = 0;
    unsigned v = (unsigned)si->si_syscall;
    do {
        digits[d++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && d < sizeof digits);
    while (d)
        msg[n++] = digits[--d];
    msg[n++] = '\n';
    ssize_t w = write(2, msg, n);
    (void)w;
    _exit(SBX_TRAP_EXIT);
}

static aos_err sbx_add(scmp_filter_ctx ctx, const sbx_call *c, char *why, size_t whylen)
{
    int nr = seccomp_syscall_resolve_name(c->name);
    if (nr == __NR_SCMP_ERROR)
        return AOS_ERR_OK;      /* not a syscall of this architecture */
    int rc;
    switch (c->how) {
    case SBX_THREAD:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
        break;
    case SBX_ENOSYS:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
        break;
    case SBX_OWN_PID:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
        break;
    case SBX_NET:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX, 0));
        if (!rc)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_INET, 0));
        if (!rc)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A0(SCMP_CMP_EQ, AF_INET6, 0));
        break;
    default:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        break;
    }
    /* The same syscall in two lists (base and db both open files in a sanitized build)
     * is fine: libseccomp reports EEXIST for an identical plain rule. */
    if (rc && rc != -EEXIST) {
        snprintf(why, whylen, "seccomp rule for %s: %s", c->name, strerror(-rc));
        return AOS_ERR_INTERNAL;
    }
    return AOS_ERR_OK;
}

static aos_err sbx_seccomp(const sbx_profile *p, char *why, size_t whylen)
{
    aos_err e = AOS_ERR_INTERNAL;
    int trap = getenv("AOS_SECCOMP_TRAP") && !strcmp(getenv("AOS_SECCOMP_TRAP"), "1");
    scmp_filter_ctx ctx = seccomp_init(trap ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
    if (!ctx) {
        snprintf(why, whylen, "seccomp_init failed");
        return AOS_ERR_NOMEM;
    }
    int rc;
    /* nng's threads already run: the filter must cover them too, not only this one. */
    if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1))) {
        snprintf(why, whylen, "seccomp thread sync: %s", strerror(-rc));
        goto out;
    }
    for (size_t l = 0; l < 3 && p->lists[l]; l++)
        for (const sbx_call *c = p->lists[l]; c->name; c++)
            if ((e = sbx_add(ctx, c, why, whylen)))
                goto out;
    if (SBX_SANITIZED)
        for (const sbx_call *c = sbx_sanitizer; c->name; c++)
            if ((e = sbx_add(ctx, c, why, whylen)))
                goto out;
    e = AOS_ERR_INTERNAL;
    if (trap) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = sbx_sigsys;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSYS, &sa, NULL)) {
            snprintf(why, whylen, "SIGSYS handler: %s", strerror(errno));
            goto out;
        }
    }
    if ((rc = seccomp_load(ctx))) {
        snprintf(why, whylen, "loading the seccomp filter: %s", strerror(-rc));
        goto out;
    }
    e = AOS_ERR_OK;
out:
    seccomp_release(ctx);
    return e;
}

aos_err sbx_apply(const char *name, const char *user, pid_t parent, char *why, size_t whylen)
{
    const sbx_profile *p = name ? sbx_find(name) : NULL;
    if (!p) {
        snprintf(why, whylen, "no sandbox profile for server %s", name ? name : "(null)");
        return AOS_ERR_USAGE;
    }
    if (parent <= 0) {
        snprintf(why, whylen, "invalid parent pid %d", (int)parent);
        return AOS_ERR_USAGE;
    }
    aos_err e;
    /* Not root: there is nothing to drop, aosd runs us as its own unprivileged user. */
    if (user && geteuid() == 0 && (e = sbx_drop(user, why, whylen)))
        return e;
    /* After the drop, which clears the death signal; then make sure the parent did not
     * die before it was set, or we would never get it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) {
        snprintf(why, whylen, "PR_SET_PDEATHSIG: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    if (getppid() != parent) {
        snprintf(why, whylen, "parent %d is gone (parent now %d)", (int)parent,
                 (int)getppid());
        return AOS_ERR_UNAVAILABLE;
    }
    /* No core dumps: a server's memory holds agents' data and credentials. */
    if ((e = sbx_limit(RLIMIT_CORE, "RLIMIT_CORE", 0, why, whylen)) ||
        (e = sbx_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", SBX_NOFILE_MAX, why, whylen)) ||
        (e = sbx_limit(RLIMIT_FSIZE, "RLIMIT_FSIZE", SBX_FSIZE_MAX, why, whylen)))
        return e;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
        snprintf(why, whylen, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    return sbx_seccomp(p, why, whylen);
}
