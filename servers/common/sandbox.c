/* The server sandbox: privilege drop, parent-death signal, rlimits, no_new_privs and one
 * seccomp allow-list per server, built from a shared base and found with strace. */
#include "sandbox.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* How a listed syscall is allowed. Most are plain; a few are narrowed by argument so the
 * list cannot be turned into a way around the sandbox (a fork, a signal to aosd). */
typedef enum {
    SBX_ALLOW,       /* any arguments */
    SBX_THREAD,      /* clone: only with CLONE_THREAD, i.e. pthread_create, never a fork */
    SBX_ENOSYS,      /* fails with ENOSYS: clone3's flags sit behind a pointer seccomp
                      * cannot read, and glibc falls back to clone on ENOSYS */
    SBX_EACCES,      /* fails with EACCES, unless another list of the server allows it:
                      * for libc's optional reads, which cope with failure */
    SBX_OWN_PID,     /* tgkill: only to threads of this process (abort(), raise()) */
    SBX_NET,         /* socket: only AF_UNIX, AF_INET, AF_INET6 */
    SBX_ARG0,        /* only when the first argument equals arg (a prctl option) */
    SBX_ARG1,        /* only when the second argument equals arg (an ioctl request) */
} sbx_how;

typedef struct sbx_call {
    const char *name;   /* libseccomp's name; names this arch lacks are skipped */
    sbx_how how;
    unsigned long arg;  /* SBX_ARG0's or SBX_ARG1's value */
} sbx_call;

#define SBX_END {NULL, SBX_ALLOW, 0}

/* What every server needs after the sandbox: nng's threads serving the link to aosd,
 * the worker pool, malloc, aos_log, and the exit path. Found by strace -f on a server
 * echoing requests from worker threads, through exit, abort() and a glibc fatal error. */
static const sbx_call sbx_base[] = {
    {"read", SBX_ALLOW, 0},            /* nng's eventfd wakeups */
    {"write", SBX_ALLOW, 0},           /* aos_log's one write(2) per line; nng wakeups */
    {"writev", SBX_ALLOW, 0},          /* glibc's fatal messages ("double free") */
    {"readv", SBX_ALLOW, 0},           /* nng ipc receives header and body in one call */
    {"sendmsg", SBX_ALLOW, 0},         /* nng ipc sends header and body in one call */
    {"close", SBX_ALLOW, 0},           /* nng closes pipes and its poller at shutdown */
    {"shutdown", SBX_ALLOW, 0},        /* nng shuts a pipe down when either side closes */
    {"epoll_wait", SBX_ALLOW, 0},      /* nng's poller thread */
    {"epoll_ctl", SBX_ALLOW, 0},       /* nng arms and disarms pipes in its poller */
    {"futex", SBX_ALLOW, 0},           /* every mutex and condition variable */
    {"clone", SBX_THREAD, 0},          /* worker and nng threads, not processes */
    {"clone3", SBX_ENOSYS, 0},         /* glibc's first try at a thread: see SBX_ENOSYS */
    {"set_robust_list", SBX_ALLOW, 0}, /* glibc, at thread start */
    {"rseq", SBX_ALLOW, 0},            /* glibc registers rseq at thread start */
    {"rt_sigprocmask", SBX_ALLOW, 0},  /* thread creation blocks signals around clone */
    {"rt_sigaction", SBX_ALLOW, 0},    /* glibc's first pthread_create sets SIGCANCEL's */
    {"rt_sigreturn", SBX_ALLOW, 0},    /* return from a handler (glibc's, the SIGSYS one) */
    {"madvise", SBX_ALLOW, 0},         /* glibc frees dead threads' stacks, trims arenas */
    {"mmap", SBX_ALLOW, 0},            /* malloc arenas, thread stacks */
    {"munmap", SBX_ALLOW, 0},          /* malloc, thread stacks */
    {"mprotect", SBX_ALLOW, 0},        /* malloc arenas grow, thread stack guards */
    {"brk", SBX_ALLOW, 0},             /* malloc's main heap */
    {"openat", SBX_EACCES, 0},         /* malloc reads /proc/sys/vm/overcommit_memory */
    {"newfstatat", SBX_EACCES, 0},     /* stdio sizes a stream's buffer on first use */
    {"prctl", SBX_ARG0, PR_SET_NAME},  /* nng threads started before it name themselves */
    {"getpid", SBX_ALLOW, 0},          /* aos_log's line prefix, ping's reply, abort() */
    {"gettid", SBX_ALLOW, 0},          /* abort() */
    {"tgkill", SBX_OWN_PID, 0},        /* abort() raises SIGABRT in itself */
    {"getrandom", SBX_ALLOW, 0},       /* nng draws an id per message and pipe */
    {"clock_gettime", SBX_ALLOW, 0},   /* when the vDSO falls back to the syscall */
    {"clock_nanosleep", SBX_ALLOW, 0}, /* nng_msleep, backoff sleeps */
    {"exit", SBX_ALLOW, 0},            /* a thread ends */
    {"exit_group", SBX_ALLOW, 0},      /* the process ends; _exit in the SIGSYS reporter */
    SBX_END,
};

/* What a sanitized build (the one the tests run) adds so that ASan and UBSan can print a
 * report and exit with it, instead of the report being cut short by SIGSYS. Found by
 * strace on a heap overflow, a signed overflow and abort() after the sandbox. LSan's
 * exit-time check needs ptrace and stays impossible: servers must not run it. */
static const sbx_call sbx_sanitizer[] = {
    {"sigaltstack", SBX_ALLOW, 0},     /* ASan gives each new thread an alternate stack */
    {"sched_getaffinity", SBX_ALLOW, 0}, /* ASan, at each thread start */
    {"open", SBX_ALLOW, 0},            /* /proc/self/maps, cmdline, environ for a report */
    {"openat", SBX_ALLOW, 0},          /* libbacktrace opens the binary and libraries */
    {"newfstatat", SBX_ALLOW, 0},      /* libbacktrace sizes the files it maps */
    {"readlink", SBX_ALLOW, 0},        /* /proc/self/exe and libraries' real names */
    {"fcntl", SBX_ALLOW, 0},           /* libbacktrace sets FD_CLOEXEC */
    {"ioctl", SBX_ARG1, TCGETS},       /* isatty(2): colours in the report or not */
    SBX_END,
};

/* What libpq needs to (re)connect as the server's role and to run queries: a Unix or
 * TCP socket, ~/.pgpass and /etc/passwd lookups, a DNS lookup of the DSN's host, and
 * its poll loop. Found by strace on libpq over a Unix socket, TCP and a URI DSN, with
 * and without a user and a password file, and with a host name to resolve. */
static const sbx_call sbx_db[] = {
    {"socket", SBX_NET, 0},            /* a new connection; a DNS query */
    {"connect", SBX_ALLOW, 0},         /* a new connection; a DNS query */
    {"poll", SBX_ALLOW, 0},            /* libpq and the resolver wait for their socket */
    {"getsockopt", SBX_ALLOW, 0},      /* SO_ERROR after a non-blocking connect */
    {"setsockopt", SBX_ALLOW, 0},      /* TCP_NODELAY and keepalives over TCP */
    {"getsockname", SBX_ALLOW, 0},     /* libpq records its local address */
    {"sendto", SBX_ALLOW, 0},          /* libpq sends queries */
    {"recvfrom", SBX_ALLOW, 0},        /* libpq reads results; DNS answers */
    {"sendmmsg", SBX_ALLOW, 0},        /* the resolver sends A and AAAA queries at once */
    {"fcntl", SBX_ALLOW, 0},           /* libpq makes its socket non-blocking */
    {"openat", SBX_ALLOW, 0},          /* ~/.pgpass, /etc/passwd, /etc/hosts, Kerberos */
    {"newfstatat", SBX_ALLOW, 0},      /* libpq checks ~/.pgpass's mode; fstat on files */
    {"lseek", SBX_ALLOW, 0},           /* stdio reading /etc/passwd */
    {"getdents64", SBX_ALLOW, 0},      /* GSSAPI lists /etc/gss/mech.d on a first TCP try */
    {"getuid", SBX_ALLOW, 0},          /* libpq's Kerberos credential cache name over TCP */
    {"geteuid", SBX_ALLOW, 0},         /* libpq's default user and home directory */
    SBX_END,
};

typedef struct sbx_profile {
    const char *server;
    const sbx_call *lists[2];   /* the base, then the server's own (may be NULL) */
} sbx_profile;

/* One allow-list per server. tool's issue will add what starting a sandboxed tool takes
 * (a fork-style clone, pipes, wait4, kill of its own children; execve stays in the child,
 * after the tool's own filter); llm's adds libcurl's network and TLS calls (socket,
 * connect, poll, DNS through /etc/resolv.conf and /etc/hosts). */
static const sbx_profile sbx_profiles[] = {
    {"memory", {sbx_base, sbx_db}},
    {"storage", {sbx_base, sbx_db}},
    {"audit", {sbx_base, sbx_db}},
    {"tool", {sbx_base, NULL}},
    {"llm", {sbx_base, NULL}},
};

#if defined(AOS_SANITIZE) || defined(__SANITIZE_ADDRESS__)
#define SBX_SANITIZED 1
/* ASan symbolizes a report by spawning llvm-symbolizer: fork and execve, which no
 * sandbox allows, so the report would die half-printed with SIGSYS. Sandboxed processes
 * print raw addresses instead (symbolize offline); ASAN_OPTIONS can still override. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "symbolize=0";
}
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

/* The lists a profile is made of, in order: base, the server's own, the sanitizer's. */
static size_t sbx_lists(const sbx_profile *p, const sbx_call *out[3])
{
    size_t n = 0;
    out[n++] = p->lists[0];
    if (p->lists[1])
        out[n++] = p->lists[1];
    if (SBX_SANITIZED)
        out[n++] = sbx_sanitizer;
    return n;
}

/* A syscall listed twice (openat: EACCES in the base, allowed for a database) gets one
 * rule: the allowing one wins over SBX_EACCES, and exact repeats are added once. */
static int sbx_skip(const sbx_call *const *lists, size_t n, size_t li, const sbx_call *c)
{
    for (size_t l = 0; l < n; l++)
        for (const sbx_call *o = lists[l]; o->name; o++) {
            if (o == c || strcmp(o->name, c->name))
                continue;
            if (c->how == SBX_EACCES && o->how != SBX_EACCES)
                return 1;
            if (l < li && o->how == c->how && o->arg == c->arg)
                return 1;
        }
    return 0;
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
    case SBX_EACCES:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 0);
        break;
    case SBX_OWN_PID:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
        break;
    case SBX_NET: {
        static const int fams[] = {AF_UNIX, AF_INET, AF_INET6};
        rc = 0;
        for (size_t i = 0; !rc && i < sizeof fams / sizeof fams[0]; i++)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                  SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)fams[i], 0));
        break;
    }
    case SBX_ARG0:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)c->arg, 0));
        break;
    case SBX_ARG1:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)c->arg, 0));
        break;
    default:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        break;
    }
    if (rc) {
        snprintf(why, whylen, "seccomp rule for %s: %s", c->name, strerror(-rc));
        return AOS_ERR_INTERNAL;
    }
    return AOS_ERR_OK;
}

static aos_err sbx_seccomp(const sbx_profile *p, char *why, size_t whylen)
{
    aos_err e = AOS_ERR_INTERNAL;
    const char *t = getenv("AOS_SECCOMP_TRAP");
    int trap = t && !strcmp(t, "1");
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
    const sbx_call *lists[3];
    size_t n = sbx_lists(p, lists);
    for (size_t l = 0; l < n; l++)
        for (const sbx_call *c = lists[l]; c->name; c++)
            if (!sbx_skip(lists, n, l, c) && (e = sbx_add(ctx, c, why, whylen)))
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
