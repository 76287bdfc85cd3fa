/* The server sandbox in two steps: namespaces, a minimal root and an empty bounding set
 * while the server is one thread, then privilege drop, rlimits and one seccomp list. */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "aos/readall.h"

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
    SBX_NET,         /* socket: AF_UNIX; AF_INET and AF_INET6 too where the profile
                      * says why (sbx_profile.inet) and the database is not pg_local */
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
    {"restart_syscall", SBX_ALLOW, 0}, /* a sleep resumed after SIGSTOP/SIGCONT or ptrace */
    {"madvise", SBX_ALLOW, 0},         /* glibc frees dead threads' stacks, trims arenas */
    {"mmap", SBX_ALLOW, 0},            /* malloc arenas, thread stacks */
    {"munmap", SBX_ALLOW, 0},          /* malloc, thread stacks */
    {"mremap", SBX_ALLOW, 0},          /* realloc of a block malloc mmapped (over 128 KiB) */
    {"mprotect", SBX_ALLOW, 0},        /* malloc arenas grow, thread stack guards */
    {"brk", SBX_ALLOW, 0},             /* malloc's main heap */
    {"sched_getaffinity", SBX_ALLOW, 0}, /* malloc: a thread's first allocation once 8
                                          * arenas exist sizes the arena cap by the CPU
                                          * mask (glibc's __get_nprocs_sched); aos-api was
                                          * killed at a late worker's first stats reply */
    {"sysinfo", SBX_ALLOW, 0},         /* qsort sizes its merge buffer by the machine's
                                        * memory (sysconf(_SC_PHYS_PAGES)) past 1 KiB: a
                                        * sort of many items killed aos-audit's verify */
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
    /* sched_getaffinity is in the base: ASan calls it at each thread start too */
    {"open", SBX_ALLOW, 0},            /* /proc/self/maps, cmdline, environ for a report */
    {"openat", SBX_ALLOW, 0},          /* libbacktrace opens the binary and libraries */
    {"newfstatat", SBX_ALLOW, 0},      /* libbacktrace sizes the files it maps */
    {"readlink", SBX_ALLOW, 0},        /* /proc/self/exe and libraries' real names */
    {"fcntl", SBX_ALLOW, 0},           /* libbacktrace sets FD_CLOEXEC */
    {"ioctl", SBX_ARG1, TCGETS},       /* isatty(2): colours in the report or not */
    {"sched_yield", SBX_ALLOW, 0},     /* the sanitizers' spin locks yield under contention */
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

/* What the HTTP front door adds to the base: the connections its listener accepts. The
 * listener itself (socket, bind, listen) and libmicrohttpd's epoll set and wakeup eventfd
 * are made before the sandbox, so none of those calls is on the list. */
static const sbx_call sbx_api[] = {
    {"accept4", SBX_ALLOW, 0},         /* each client, non-blocking and close-on-exec at once */
    {"setsockopt", SBX_ALLOW, 0},      /* SO_REUSEADDR on the listener, TCP_NODELAY per client */
    {"getsockopt", SBX_ALLOW, 0},      /* SO_ERROR on a client that went away */
    {"getsockname", SBX_ALLOW, 0},     /* the port actually bound (port 0 in the tests) */
    {"getpeername", SBX_ALLOW, 0},     /* the client's address for the access log */
    {"poll", SBX_ALLOW, 0},            /* waits on the listener and slow clients */
    {"recvfrom", SBX_ALLOW, 0},        /* a request's bytes */
    {"sendto", SBX_ALLOW, 0},          /* a response's bytes */
    {"fcntl", SBX_ALLOW, 0},           /* O_NONBLOCK on the listener */
    SBX_END,
};

typedef struct sbx_profile {
    const char *server;
    const sbx_call *lists[3];   /* the base, then the server's own (NULL-ended, may be none) */
    const char *inet;           /* why its socket() may make AF_INET/AF_INET6 sockets (never
                                 * when pg_local, unless host_net); NULL: AF_UNIX only */
    int host_tree;              /* the host's tree read-only instead of a minimal root */
    int host_net;               /* the host's network even when its database is local: the
                                 * server's own work is on the network (no net namespace) */
    int spawner;                /* it starts sandboxed programs, which inherit its filter:
                                 * every syscall but sbx_denied is allowed (see there) */
    unsigned nofile;            /* RLIMIT_NOFILE when not the default (SBX_NOFILE_MAX) */
} sbx_profile;

/* What the LLM gateway adds to the database's list: libcurl's connections to the
 * providers over TCP and TLS and its threaded resolver (a thread and a socketpair per
 * lookup, /etc/hosts, /etc/resolv.conf, nsswitch). OpenSSL reads its configuration at
 * curl_global_init, before the sandbox; the CA bundle comes with the configuration.
 * Found with AOS_SECCOMP_TRAP=1 on llm_test (both wire formats, refused and cut
 * connections, a 100 MB body) and on calls over HTTPS to localhost by name. */
static const sbx_call sbx_llm[] = {
    {"socketpair", SBX_NET, 0},        /* the threaded resolver wakes curl through one */
    {"getpeername", SBX_ALLOW, 0},     /* curl records each connection's peer address */
    SBX_END,
};

/* What aos-audit adds when it exports spans (audit.otlp.endpoint in aos.yaml): libcurl's
 * connections to the collector. The exporter resolves the collector's host before the
 * sandbox (otlp_new), so no resolver thread runs; curl still records each peer. */
static const sbx_call sbx_otlp[] = {
    {"getpeername", SBX_ALLOW, 0},     /* curl records each connection's peer address */
    {"socketpair", SBX_NET, 0},        /* curl's wakeup pair for its multi handle */
    SBX_END,
};

/* What aos-tool refuses. A seccomp filter is inherited by every child and can never be
 * lifted, so aos-tool's filter is also the outer bound on bubblewrap (which needs mount,
 * pivot_root, unshare and clone with namespace flags to build a tool's sandbox) and on
 * every tool (any program: sh, grep, node, ...). An allow-list cannot name what arbitrary
 * programs call, so this one profile is a deny-list of what none of them needs: kernel
 * modules, kexec, bpf, perf, ptrace and reading other processes' memory, keyrings,
 * userfaultfd, io_uring (whose operations bypass seccomp), the clock, swap, reboot,
 * quotas, file handles (open_by_handle_at escapes a bind mount) and the kernel log. Each
 * tool run adds its own, stricter filter on top (servers/tool/jail.c), loaded by bubblewrap
 * just before the tool's execve. */
static const char *const sbx_denied[] = {
    "init_module", "finit_module", "delete_module", "create_module", "kexec_load",
    "kexec_file_load", "bpf", "perf_event_open", "ptrace", "process_vm_readv",
    "process_vm_writev", "kcmp", "pidfd_getfd", "keyctl", "add_key", "request_key",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "acct",
    "swapon", "swapoff", "reboot", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "stime", "quotactl", "quotactl_fd", "open_by_handle_at",
    "name_to_handle_at", "syslog", "iopl", "ioperm", "lookup_dcookie", "nfsservctl",
    "uselib", "_sysctl", "vhangup", "fanotify_init", "get_kernel_syms", "query_module",
    "vm86", "vm86old", "move_pages", "migrate_pages", "mbind", "set_mempolicy",
    NULL,
};

aos_err sbx_deny_common(void *ctx, char *why, size_t whylen)
{
    for (size_t i = 0; sbx_denied[i]; i++) {
        int nr = seccomp_syscall_resolve_name(sbx_denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a syscall of this architecture */
        int rc = seccomp_rule_add((scmp_filter_ctx)ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc) {
            snprintf(why, whylen, "seccomp rule for %s: %s", sbx_denied[i], strerror(-rc));
            return AOS_ERR_INTERNAL;
        }
    }
    return AOS_ERR_OK;
}

/* One allow-list per server; aos-tool's is the deny-list above. */
static const sbx_profile sbx_profiles[] = {
    {"memory", {sbx_base, sbx_db}, "an external PostgreSQL reached over TCP", 0, 0, 0, 0},
    {"storage", {sbx_base, sbx_db}, "an external PostgreSQL reached over TCP", 0, 0, 0, 0},
    {"audit", {sbx_base, sbx_db}, "an external PostgreSQL reached over TCP", 0, 0, 0, 0},
    /* aos-audit with an OTLP endpoint: the collector over TCP is its own work, so the
     * host's network even with the embedded database (and nothing more) */
    {"audit-otlp", {sbx_base, sbx_db, sbx_otlp},
     "the OTLP collector aos.yaml names (audit.otlp.endpoint), over HTTP(S)", 0, 1, 0, 0},
    /* bubblewrap binds parts of the host's tree into each tool's own root. Its filter,
     * a deny-list, cannot keep socket() to AF_UNIX: tools inherit it and make their own
     * sockets, in network namespaces of their own */
    {"tool", {sbx_base}, "tools make sockets, each run in a network namespace of its own",
     1, 0, 1, 0},
    {"llm", {sbx_base, sbx_db, sbx_llm}, "the model providers' HTTPS APIs", 0, 1, 0, 0},
    /* its clients: 1,024 connections by default, and a band past the cap that still gets
     * its 503 (servers/api/main.c) */
    {"api", {sbx_base, sbx_api}, NULL, 0, 0, 0, 8192},
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

/* Address space: nng's threads, the workers' stacks and glibc's per-thread 64 MiB malloc
 * arenas fit in well under 1 GiB; 4 GiB only stops a runaway allocation from taking the
 * machine. Not under ASan, which reserves terabytes of shadow memory. */
#define SBX_AS_MAX ((rlim_t)4 << 30)
/* Processes and threads of the server's own uid: nng's and the workers' few dozen
 * threads. Only meaningful for a dedicated uid: counted per user, not per process. */
#define SBX_NPROC_MAX ((rlim_t)512)
/* aos-tool's: every tool run is a process tree of its uid (each bounded by a pids cgroup
 * of its own, 64 by default), so the uid's count must hold many runs at their bound, or
 * one agent's fork bombs would keep every other agent's runs from starting. */
#define SBX_NPROC_SPAWNER ((rlim_t)16384)
/* No server locks memory; 64 KiB is the kernel's own default, and a nonzero value keeps
 * 0 meaning "not set" in the report. */
#define SBX_MEMLOCK_MAX ((rlim_t)64 << 10)

/* The minimal root: a tmpfs holding only mount points, symlinks and the few directories
 * between / and the kept paths, read-only once built; /tmp a tiny one of its own. */
#define SBX_ROOT_TMPFS "size=1m,nr_inodes=1024,mode=0755"
#define SBX_TMP_TMPFS "size=1m,nr_inodes=256,mode=1777"
/* Where the host's tree sits between pivot_root and its detach: binds are made from it,
 * so a kept path under the host's /tmp is not hidden by the new root's own /tmp. */
#define SBX_OLD "/.oldroot"

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
 * threads started before the sandbox lose root too. group_of (NULL: none): a user whose
 * primary group stays our one supplementary group (aos-tool keeps aos-agent's, the group of
 * the workspaces it shares with the agents). */
static aos_err sbx_drop(const char *user, const char *group_of, char *why, size_t whylen)
{
    uid_t uid, guid;
    gid_t gid, g2 = 0;
    aos_err e = sbx_lookup_user(user, &uid, &gid, why, whylen);
    if (e || (group_of && (e = sbx_lookup_user(group_of, &guid, &g2, why, whylen))))
        return e;
    if (setgroups(group_of ? 1 : 0, group_of ? &g2 : NULL) || setresgid(gid, gid, gid) ||
        setresuid(uid, uid, uid)) {
        snprintf(why, whylen, "dropping privileges to %s (uid %u gid %u): %s", user,
                 (unsigned)uid, (unsigned)gid, strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    uid_t r, ef, s;
    gid_t gr, ge, gs, gl[2] = {0, 0};
    if (getresuid(&r, &ef, &s) || getresgid(&gr, &ge, &gs) || r != uid || ef != uid ||
        s != uid || gr != gid || ge != gid || gs != gid ||
        getgroups(2, gl) != (group_of ? 1 : 0) || (group_of && gl[0] != g2)) {
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

/* errno's name ("EPERM"): short enough for the report's notes. */
static const char *sbx_ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

/* Appends one "; "-separated note on a layer that is off or weaker than planned. */
__attribute__((format(printf, 2, 3))) static void sbx_note(sbx_report *rep, const char *fmt,
                                                           ...)
{
    size_t n = strlen(rep->notes);
    if (n && n + 2 < sizeof rep->notes) {
        memcpy(rep->notes + n, "; ", 3);
        n += 2;
    }
    if (n + 1 >= sizeof rep->notes)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->notes + n, sizeof rep->notes - n, fmt, ap);
    va_end(ap);
}

/* why = "<what>: <strerror(errno)>"; for the many steps a failed syscall ends. */
__attribute__((format(printf, 3, 4))) static aos_err sbx_sys(char *why, size_t whylen,
                                                             const char *fmt, ...)
{
    int e = errno;
    char what[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(why, whylen, "%s: %s", what, strerror(e));
    return AOS_ERR_INTERNAL;
}

/* Lowers res to max (never raises: an unprivileged process cannot raise its hard limit
 * back) and says in *set what it is now. */
static aos_err sbx_limit(int res, const char *resname, rlim_t max, rlim_t *set, char *why,
                         size_t whylen)
{
    struct rlimit rl;
    if (getrlimit(res, &rl)) {
        snprintf(why, whylen, "getrlimit %s: %s", resname, strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > max)
        rl.rlim_max = max;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(res, &rl)) {
        snprintf(why, whylen, "setrlimit %s: %s", resname, strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    if (set)
        *set = rl.rlim_max;
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
static size_t sbx_lists(const sbx_profile *p, const sbx_call *out[4])
{
    size_t n = 0;
    for (size_t i = 0; i < 3 && p->lists[i]; i++)
        out[n++] = p->lists[i];
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

/* Whether the profile's socket() may make AF_INET/AF_INET6 sockets: only where it says
 * why, and never for a server whose database is on a Unix socket (pg_local). */
static int sbx_inet(const sbx_profile *p, int pg_local)
{
    return p->inet && (!pg_local || p->host_net);
}

static aos_err sbx_add(scmp_filter_ctx ctx, const sbx_call *c, int inet, char *why,
                       size_t whylen)
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
        size_t nfams = inet ? 3 : 1;
        rc = 0;
        for (size_t i = 0; !rc && i < nfams; i++)
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

/* Whether the profile's lists hold a socket() rule at all (inet is only reported when
 * a socket can actually be made). */
static int sbx_has_socket(const sbx_profile *p)
{
    const sbx_call *lists[4];
    size_t n = sbx_lists(p, lists);
    for (size_t l = 0; l < n; l++)
        for (const sbx_call *c = lists[l]; c->name; c++)
            if (c->how == SBX_NET)
                return 1;
    return 0;
}

static aos_err sbx_seccomp(const sbx_profile *p, int inet, char *why, size_t whylen)
{
    aos_err e = AOS_ERR_INTERNAL;
    const char *t = getenv("AOS_SECCOMP_TRAP");
    int trap = t && !strcmp(t, "1");
    scmp_filter_ctx ctx = seccomp_init(p->spawner ? SCMP_ACT_ALLOW
                                       : trap     ? SCMP_ACT_TRAP
                                                  : SCMP_ACT_KILL_PROCESS);
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
    const sbx_call *lists[4];
    size_t n = p->spawner ? 0 : sbx_lists(p, lists);
    for (size_t l = 0; l < n; l++)
        for (const sbx_call *c = lists[l]; c->name; c++)
            if (!sbx_skip(lists, n, l, c) && (e = sbx_add(ctx, c, inet, why, whylen)))
                goto out;
    if (p->spawner && (e = sbx_deny_common(ctx, why, whylen)))
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

/* The checks both steps start with; they return before touching the process. */
static aos_err sbx_check_opts(const sbx_opts *o, const sbx_report *rep,
                              const sbx_profile **p, char *why, size_t whylen)
{
    if (!o || !rep) {
        snprintf(why, whylen, "no sandbox options or report");
        return AOS_ERR_USAGE;
    }
    *p = o->name ? sbx_find(o->name) : NULL;
    if (!*p) {
        snprintf(why, whylen, "no sandbox profile for server %s", o->name ? o->name : "(null)");
        return AOS_ERR_USAGE;
    }
    return AOS_ERR_OK;
}

aos_err sbx_apply(const sbx_opts *o, sbx_report *rep, char *why, size_t whylen)
{
    const sbx_profile *p;
    aos_err e = sbx_check_opts(o, rep, &p, why, whylen);
    if (e)
        return e;
    if (o->parent <= 0) {
        snprintf(why, whylen, "invalid parent pid %d", (int)o->parent);
        return AOS_ERR_USAGE;
    }
    /* Not root: there is nothing to drop, aosd runs us as its own unprivileged user (in
     * a user namespace of our own, where that uid is not root either). */
    int dropped = o->user && geteuid() == 0;
    if (dropped && (e = sbx_drop(o->user, o->group_of, why, whylen)))
        return e;
    /* After the drop, which clears the death signal; then make sure the parent did not
     * die before it was set, or we would never get it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) {
        snprintf(why, whylen, "PR_SET_PDEATHSIG: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    if (getppid() != o->parent) {
        snprintf(why, whylen, "parent %d is gone (parent now %d)", (int)o->parent,
                 (int)getppid());
        return AOS_ERR_UNAVAILABLE;
    }
    rlim_t as = 0, nproc = 0, memlock = 0;
    /* No core dumps: a server's memory holds agents' data and credentials. */
    if ((e = sbx_limit(RLIMIT_CORE, "RLIMIT_CORE", 0, NULL, why, whylen)) ||
        (e = sbx_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE",
                        p->nofile ? (rlim_t)p->nofile : SBX_NOFILE_MAX, NULL, why, whylen)) ||
        (e = sbx_limit(RLIMIT_FSIZE, "RLIMIT_FSIZE", SBX_FSIZE_MAX, NULL, why, whylen)) ||
        (e = sbx_limit(RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK", SBX_MEMLOCK_MAX, &memlock, why,
                       whylen)))
        return e;
    if (SBX_SANITIZED)
        sbx_note(rep, "as: not limited under ASan (terabytes of shadow)");
    else if ((e = sbx_limit(RLIMIT_AS, "RLIMIT_AS", SBX_AS_MAX, &as, why, whylen)))
        return e;
    /* Counted per real uid: with aosd's own uid it would count every process of that
     * user (aosd's session too), and a limit there is a denial of service, not a bound. */
    if (!dropped)
        sbx_note(rep, "nproc: not limited (no uid of its own)");
    else if ((e = sbx_limit(RLIMIT_NPROC, "RLIMIT_NPROC",
                            p->spawner ? SBX_NPROC_SPAWNER : SBX_NPROC_MAX, &nproc, why,
                            whylen)))
        return e;
    rep->rlimit_as = as;
    rep->rlimit_nproc = nproc;
    rep->rlimit_memlock = memlock;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
        snprintf(why, whylen, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    int inet = sbx_inet(p, o->pg_local);
    if ((e = sbx_seccomp(p, inet, why, whylen)))
        return e;
    rep->inet = inet && (p->spawner || sbx_has_socket(p));
    return AOS_ERR_OK;
}

/* ---- step 1: namespaces and the root, while the server is one thread ------------- */

/* A kept path: as the server names it (the bind's target in the minimal root) and what
 * it really is on the host, resolved while the host's tree is still in sight. */
typedef struct sbx_keep {
    const char *path;
    char real[PATH_MAX];
    int dir;
} sbx_keep;

/* /proc/self as it was when sbx_enter began: the mountinfo fallback reads through it
 * after the host's /proc left the root. Only set during sbx_enter (one thread). */
static int sbx_self = -1;

/* Tests set it to exercise the remount fallback for kernels without mount_setattr
 * (before 5.12); production always tries mount_setattr first. */
static int sbx_no_setattr;

/* A refusal by the kernel of a whole layer, not a failure: containers without the
 * capability (EPERM, EACCES), kernels built without it (EINVAL, ENOSYS), namespace
 * counts capped by sysctl (ENOSPC, EUSERS). */
static int sbx_refused(int e)
{
    return e == EPERM || e == EACCES || e == EINVAL || e == ENOSYS || e == ENOSPC ||
           e == EUSERS;
}

/* Reads a small file (under /proc) relative to dirfd, NUL-terminated; -1 on error. */
static ssize_t sbx_read_small(int dirfd, const char *path, char *buf, size_t cap)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

static aos_err sbx_write_file(int dirfd, const char *path, const char *text, char *why,
                              size_t whylen)
{
    int fd = openat(dirfd, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return sbx_sys(why, whylen, "opening /proc/self/%s", path);
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int e = errno;
    close(fd);
    if (w != (ssize_t)len) {
        errno = w < 0 ? e : EIO;
        return sbx_sys(why, whylen, "writing \"%.*s\" to /proc/self/%s", (int)len - 1, text,
                       path);
    }
    return AOS_ERR_OK;
}

/* The process's thread count: unshare would move only the calling thread into the new
 * namespaces (and refuses a user or mount namespace to a multi-threaded process). */
static long sbx_threads(int self)
{
    char buf[8192];
    if (sbx_read_small(self, "status", buf, sizeof buf) > 0) {
        const char *t = strstr(buf, "\nThreads:");
        if (t)
            return strtol(t + 9, NULL, 10);
    }
    int fd = openat(self, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    long n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The highest capability this kernel knows: the bounding set is emptied up to it. */
static int sbx_last_cap(void)
{
    char buf[32];
    if (sbx_read_small(AT_FDCWD, "/proc/sys/kernel/cap_last_cap", buf, sizeof buf) > 0) {
        long v = strtol(buf, NULL, 10);
        if (v > 0 && v < 64)
            return (int)v;
    }
    int c = 0;
    while (c < 63 && prctl(PR_CAPBSET_READ, c + 1, 0, 0, 0) >= 0)
        c++;
    return c;
}

/* Kept paths must be absolute and normalised (they are also where the binds land) and
 * must not nest: a bind inside a read-write bind of the host's would mkdir on the host. */
static aos_err sbx_keeps(const sbx_opts *o, sbx_keep *k, size_t *nk, char *why,
                         size_t whylen)
{
    size_t n = 0;
    for (; n < SBX_KEEP_MAX && o->keep[n]; n++) {
        const char *p = o->keep[n];
        size_t len = strlen(p);
        if (p[0] != '/' || len < 2 || len + sizeof SBX_OLD >= PATH_MAX || p[len - 1] == '/' ||
            strstr(p, "//") || strstr(p, "/./") || strstr(p, "/../") ||
            !strcmp(p + len - 2, "/.") || (len >= 3 && !strcmp(p + len - 3, "/.."))) {
            snprintf(why, whylen, "kept path \"%s\": not a normalised absolute path", p);
            return AOS_ERR_USAGE;
        }
        struct stat st;
        if (!realpath(p, k[n].real) || stat(k[n].real, &st)) {
            aos_err e = errno == ENOENT ? AOS_ERR_NOT_FOUND : AOS_ERR_INTERNAL;
            sbx_sys(why, whylen, "kept path %s", p);
            return e;
        }
        k[n].path = p;
        k[n].dir = S_ISDIR(st.st_mode);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            size_t li = strlen(k[i].path);
            if (i != j && !strncmp(k[i].path, k[j].path, li) &&
                (k[j].path[li] == '/' || (k[j].path[li] == '\0' && i < j))) {
                snprintf(why, whylen, "kept paths %s and %s nest: keep the outer one only",
                         k[i].path, k[j].path);
                return AOS_ERR_USAGE;
            }
        }
    *nk = n;
    return AOS_ERR_OK;
}

/* Remounts the one mount at mp read-only or read-write, repeating the flags it has: a
 * user namespace may not clear the nosuid/nodev/noexec/atime flags it inherited. */
static int sbx_remount(const char *mp, int ro)
{
    static const struct {
        unsigned long st, ms;
    } same[] = {{ST_NOSUID, MS_NOSUID},   {ST_NODEV, MS_NODEV},
                {ST_NOEXEC, MS_NOEXEC},   {ST_NOATIME, MS_NOATIME},
                {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME}};
    struct statvfs sv;
    if (statvfs(mp, &sv))
        return -1;
    unsigned long fl = MS_REMOUNT | MS_BIND | (ro ? MS_RDONLY : 0);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        if (sv.f_flag & same[i].st)
            fl |= same[i].ms;
    return mount(NULL, mp, NULL, fl, NULL);
}

/* The fallback for a whole tree: every mount /proc/self/mountinfo lists at or under top.
 * A mount hidden under another at the same path is out of its reach (mount_setattr's
 * AT_RECURSIVE is not). */
static int sbx_remount_tree(const char *top, int ro)
{
    int fd = openat(sbx_self, "mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char *buf = aos_read_all(fd, 8u << 20, NULL);
    int read_errno = errno;
    close(fd);
    if (!buf) {
        errno = read_errno;
        return -1;
    }
    size_t tl = strlen(top);
    int whole = !strcmp(top, "/"), rc = 0;
    for (char *line = buf; rc == 0 && *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        /* "id parent major:minor root mountpoint ...": the fifth field, octal-escaped */
        char *f = line;
        for (int i = 0; i < 4 && f; i++)
            f = strchr(f, ' ') ? strchr(f, ' ') + 1 : NULL;
        char mp[PATH_MAX];
        size_t m = 0;
        for (; f && *f && *f != ' ' && m + 1 < sizeof mp; f++) {
            if (f[0] == '\\' && f[1] >= '0' && f[1] <= '3' && f[2] && f[3]) {
                mp[m++] = (char)((f[1] - '0') * 64 + (f[2] - '0') * 8 + (f[3] - '0'));
                f += 3;
            } else {
                mp[m++] = *f;
            }
        }
        mp[m] = '\0';
        if (m && (whole || (!strncmp(mp, top, tl) && (mp[tl] == '\0' || mp[tl] == '/'))))
            rc = sbx_remount(mp, ro);
        line = end ? end + 1 : line + strlen(line);
    }
    int e = errno;
    free(buf);
    errno = e;
    return rc;
}

/* Makes the mount at path (and with recursive, every mount under it) read-only or
 * read-write again, touching no other flag. */
static int sbx_set_ro(const char *path, int recursive, int ro)
{
    if (!sbx_no_setattr) {
        struct mount_attr a;
        memset(&a, 0, sizeof a);
        if (ro)
            a.attr_set = MOUNT_ATTR_RDONLY;
        else
            a.attr_clr = MOUNT_ATTR_RDONLY;
        if (!syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &a,
                     sizeof a))
            return 0;
        if (errno != ENOSYS)
            return -1;
    }
    return recursive ? sbx_remount_tree(path, ro) : sbx_remount(path, ro);
}

/* mkdir -p in the new root. Every directory it makes is on the root's own tmpfs or its
 * /tmp (kept paths never nest, so none lands inside a read-write bind of the host's);
 * inside a read-only bind an existing directory is EEXIST, a missing one EROFS. */
static int sbx_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *s = buf + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return -1;
        *s = c;
        if (!c)
            return 0;
    }
}

/* An empty file to bind a file onto (a device, a kept file). */
static int sbx_mkfile(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (sbx_mkdirs(dir))
            return -1;
    }
    int fd = open(path, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Binds src (in the host's tree, under SBX_OLD) at dst with what is mounted below it,
 * read-only unless a kept path. */
static aos_err sbx_bind(const char *src, const char *dst, int dir, int ro, char *why,
                        size_t whylen)
{
    if (dir ? sbx_mkdirs(dst) : sbx_mkfile(dst))
        return sbx_sys(why, whylen, "making the mount point %s", dst);
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL))
        return sbx_sys(why, whylen, "binding %s on %s", src + strlen(SBX_OLD), dst);
    if (ro && sbx_set_ro(dst, 1, 1))
        return sbx_sys(why, whylen, "making %s read-only", dst);
    return AOS_ERR_OK;
}

/* A /proc of our own: with hidepid=invisible (5.8; older kernels know only "2") the
 * server sees no process but its own once it dropped to its uid. A user namespace may
 * not mount one without a pid namespace of its own: then the host's, read-only. */
static aos_err sbx_proc(sbx_report *rep, char *why, size_t whylen)
{
    if (mkdir("/proc", 0555))
        return sbx_sys(why, whylen, "making /proc");
    static const char *const opts[] = {"hidepid=invisible", "hidepid=2"};
    int e = 0;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        if (!mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts[i])) {
            rep->proc = 1;
            if (i)
                sbx_note(rep, "proc: hidepid=2, not invisible");
            return AOS_ERR_OK;
        }
        if ((e = errno) != EINVAL)
            break;
    }
    if (!mount(SBX_OLD "/proc", "/proc", NULL, MS_BIND | MS_REC, NULL)) {
        if (sbx_set_ro("/proc", 1, 1))
            return sbx_sys(why, whylen, "making the bound /proc read-only");
        rep->proc = 1;
        sbx_note(rep, "proc: the host's, read-only (a new one: %s)", sbx_ename(e));
        return AOS_ERR_OK;
    }
    sbx_note(rep, "proc: none (a new one: %s, a bind: %s)", sbx_ename(e), sbx_ename(errno));
    return AOS_ERR_OK;
}

/* The host's directories a server's binaries need: the program and its libraries (/usr,
 * and the top-level names merged-/usr makes symlinks into it) and /etc (passwd, hosts,
 * resolv.conf, ssl). Nothing else of the host is visible. */
static const char *const sbx_sys_dirs[] = {"usr", "etc"};
static const char *const sbx_top_links[] = {"bin", "sbin", "lib", "lib64", "lib32"};
/* The devices libraries open: null and zero for redirections and mappings, full for
 * completeness, random and urandom for libraries that predate getrandom. */
static const char *const sbx_devs[] = {"null", "zero", "full", "random", "urandom"};

static aos_err sbx_minimal(const sbx_keep *k, size_t nk, sbx_report *rep, char *why,
                           size_t whylen)
{
    aos_err e;
    char src[PATH_MAX + sizeof SBX_OLD], dst[64];
    struct stat st;
    /* The new root sits on the host's /tmp only until pivot_root makes it /: any
     * directory would do, and every system has this one. */
    if (mount("aos-root", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, SBX_ROOT_TMPFS))
        return sbx_sys(why, whylen, "mounting the new root's tmpfs");
    if (mkdir("/tmp" SBX_OLD, 0700))
        return sbx_sys(why, whylen, "making %s", SBX_OLD);
    if (syscall(SYS_pivot_root, "/tmp", "/tmp" SBX_OLD))
        return sbx_sys(why, whylen, "pivot_root into the new root");
    if (chdir("/"))
        return sbx_sys(why, whylen, "chdir into the new root");
    for (size_t i = 0; i < sizeof sbx_sys_dirs / sizeof sbx_sys_dirs[0]; i++) {
        snprintf(src, sizeof src, SBX_OLD "/%s", sbx_sys_dirs[i]);
        snprintf(dst, sizeof dst, "/%s", sbx_sys_dirs[i]);
        if (stat(src, &st) || !S_ISDIR(st.st_mode)) {
            snprintf(why, whylen, "the host has no directory %s", dst);
            return AOS_ERR_INTERNAL;
        }
        if ((e = sbx_bind(src, dst, 1, 1, why, whylen)))
            return e;
    }
    for (size_t i = 0; i < sizeof sbx_top_links / sizeof sbx_top_links[0]; i++) {
        snprintf(src, sizeof src, SBX_OLD "/%s", sbx_top_links[i]);
        snprintf(dst, sizeof dst, "/%s", sbx_top_links[i]);
        if (lstat(src, &st))
            continue;   /* lib32 and lib64 exist on some systems only */
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(src, target, sizeof target - 1);
            if (n < 0)
                return sbx_sys(why, whylen, "reading the link %s", dst);
            target[n] = '\0';
            if (symlink(target, dst))
                return sbx_sys(why, whylen, "making the link %s", dst);
        } else if (S_ISDIR(st.st_mode) && (e = sbx_bind(src, dst, 1, 1, why, whylen))) {
            return e;
        }
    }
    if (mkdir("/dev", 0755))
        return sbx_sys(why, whylen, "making /dev");
    for (size_t i = 0; i < sizeof sbx_devs / sizeof sbx_devs[0]; i++) {
        snprintf(src, sizeof src, SBX_OLD "/dev/%s", sbx_devs[i]);
        snprintf(dst, sizeof dst, "/dev/%s", sbx_devs[i]);
        if (!lstat(src, &st) && (e = sbx_bind(src, dst, 0, 1, why, whylen)))
            return e;
    }
    if (mkdir("/tmp", 01777) ||
        mount("aos-tmp", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, SBX_TMP_TMPFS))
        return sbx_sys(why, whylen, "mounting /tmp");
    if ((e = sbx_proc(rep, why, whylen)))
        return e;
    /* Last, so that a kept path under /usr, /dev or /tmp lands on top of those. */
    for (size_t i = 0; i < nk; i++) {
        snprintf(src, sizeof src, SBX_OLD "%s", k[i].real);
        if ((e = sbx_bind(src, k[i].path, k[i].dir, 0, why, whylen)))
            return e;
    }
    if (umount2(SBX_OLD, MNT_DETACH))
        return sbx_sys(why, whylen, "detaching the host's tree");
    if (rmdir(SBX_OLD))
        return sbx_sys(why, whylen, "removing %s", SBX_OLD);
    if (sbx_set_ro("/", 0, 1))
        return sbx_sys(why, whylen, "making the new root read-only");
    snprintf(rep->root, sizeof rep->root, "minimal");
    return AOS_ERR_OK;
}

/* tool's root: the host's whole tree, read-only, the kept paths read-write on top. */
static aos_err sbx_readonly(const sbx_keep *k, size_t nk, sbx_report *rep, char *why,
                            size_t whylen)
{
    if (sbx_set_ro("/", 1, 1))
        return sbx_sys(why, whylen, "making / read-only");
    /* bubblewrap writes its user namespace's uid_map and gid_map under /proc/<pid>: only
     * /proc's own mount goes back to read-write (what is mounted below it stays ro, and
     * an unprivileged aos-tool can write nothing else there) */
    if (sbx_set_ro("/proc", 0, 0))
        return sbx_sys(why, whylen, "making /proc writable for bubblewrap");
    for (size_t i = 0; i < nk; i++) {
        /* a bind of a read-only mount starts read-only: clear it on the new one only */
        if (mount(k[i].real, k[i].real, NULL, MS_BIND | MS_REC, NULL))
            return sbx_sys(why, whylen, "binding %s on itself", k[i].real);
        if (sbx_set_ro(k[i].real, 1, 0))
            return sbx_sys(why, whylen, "making %s read-write", k[i].real);
    }
    rep->proc = 1;
    snprintf(rep->root, sizeof rep->root, "readonly");
    return AOS_ERR_OK;
}

/* Not root: a user namespace in which we keep our own uid and gid and hold the
 * capabilities the other namespaces need. *in says whether we got one. */
static aos_err sbx_userns(sbx_report *rep, int *in, char *why, size_t whylen)
{
    uid_t uid = geteuid();
    gid_t gid = getegid();
    *in = 0;
    if (unshare(CLONE_NEWUSER)) {
        if (!sbx_refused(errno))
            return sbx_sys(why, whylen, "unshare(CLONE_NEWUSER)");
        sbx_note(rep, "user ns: %s, so no mount ns, net ns or bounding set",
                 sbx_ename(errno));
        return AOS_ERR_OK;
    }
    /* From here a failure is fatal: a user namespace without a map makes us the
     * overflow uid, which libpq would take for our user name. */
    aos_err e;
    char map[64];
    /* setgroups must be denied before an unprivileged gid_map (3.19); older: absent */
    int fd = openat(sbx_self, "setgroups", O_WRONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    if (fd >= 0 && (e = sbx_write_file(sbx_self, "setgroups", "deny\n", why, whylen)))
        return e;
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    if ((e = sbx_write_file(sbx_self, "uid_map", map, why, whylen)))
        return e;
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    if ((e = sbx_write_file(sbx_self, "gid_map", map, why, whylen)))
        return e;
    rep->user_ns = 1;
    *in = 1;
    return AOS_ERR_OK;
}

/* Empties the bounding set (per thread: threads made later copy this one's), then checks
 * it: no execve can give a capability back, whatever file capabilities say. */
static aos_err sbx_bounding(int last, sbx_report *rep, char *why, size_t whylen)
{
    for (int c = 0; c <= last; c++)
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0)) {
            if (errno == EPERM) {
                sbx_note(rep, "bounding set: kept (no CAP_SETPCAP)");
                return AOS_ERR_OK;
            }
            if (errno != EINVAL)
                return sbx_sys(why, whylen, "dropping capability %d from the bounding set", c);
        }
    for (int c = 0; c <= last; c++)
        if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) > 0) {
            snprintf(why, whylen, "capability %d still in the bounding set", c);
            return AOS_ERR_INTERNAL;
        }
    /* ambient capabilities (4.3) would survive an execve too */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
        return sbx_sys(why, whylen, "clearing the ambient capabilities");
    return AOS_ERR_OK;
}

static aos_err sbx_enter_ns(const sbx_opts *o, const sbx_profile *p, const sbx_keep *k,
                            size_t nk, int last, sbx_report *rep, char *why, size_t whylen)
{
    aos_err e;
    int root = geteuid() == 0, can = 1;
    if (!root && (e = sbx_userns(rep, &can, why, whylen)))
        return e;
    /* The network namespace first: refusing it leaves nothing half-done. Inside it the
     * server has only a loopback that is down; path-named Unix sockets (the link, the
     * database) still connect across namespaces. */
    if (can && o->pg_local && !p->host_net) {
        if (!unshare(CLONE_NEWNET))
            rep->net_ns = 1;
        else if (sbx_refused(errno))
            sbx_note(rep, "net ns: %s", sbx_ename(errno));
        else
            return sbx_sys(why, whylen, "unshare(CLONE_NEWNET)");
    }
    rep->proc = 1;  /* the host's, until a root of our own says otherwise */
    if (can && unshare(CLONE_NEWNS)) {
        if (!sbx_refused(errno))
            return sbx_sys(why, whylen, "unshare(CLONE_NEWNS)");
        sbx_note(rep, "mount ns: %s, the host's tree as it is", sbx_ename(errno));
    } else if (can) {
        rep->mount_ns = 1;
        rep->proc = 0;
        /* From here any failure is fatal: never serve from a half-built root. Private
         * first, so that nothing we mount reaches the host, and pivot_root accepts. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
            return sbx_sys(why, whylen, "making our mounts private");
        if ((e = p->host_tree ? sbx_readonly(k, nk, rep, why, whylen)
                              : sbx_minimal(k, nk, rep, why, whylen)))
            return e;
    }
    if (chdir("/"))
        return sbx_sys(why, whylen, "chdir /");
    if (root || can) {
        if ((e = sbx_bounding(last, rep, why, whylen)))
            return e;
    } else {
        sbx_note(rep, "bounding set: kept (no CAP_SETPCAP)");
    }
    /* In our user namespace we held every capability; threads made from now on copy
     * this thread's empty sets. */
    if (!root) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
        memset(d, 0, sizeof d);
        if (syscall(SYS_capset, &h, d))
            return sbx_sys(why, whylen, "clearing our capabilities");
    }
    return AOS_ERR_OK;
}

aos_err sbx_enter(const sbx_opts *o, sbx_report *rep, char *why, size_t whylen)
{
    const sbx_profile *p;
    aos_err e = sbx_check_opts(o, rep, &p, why, whylen);
    if (e)
        return e;
    memset(rep, 0, sizeof *rep);
    snprintf(rep->root, sizeof rep->root, "host");
    sbx_keep keeps[SBX_KEEP_MAX];
    size_t nk = 0;
    if ((e = sbx_keeps(o, keeps, &nk, why, whylen)))
        return e;
    sbx_self = open("/proc/self", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sbx_self < 0)
        return sbx_sys(why, whylen, "opening /proc/self");
    long threads = sbx_threads(sbx_self);
    if (threads != 1) {
        close(sbx_self);
        sbx_self = -1;
        if (threads < 0)
            snprintf(why, whylen, "cannot count our threads in /proc/self: refusing, since "
                                  "namespaces would hold only one of them");
        else
            snprintf(why, whylen, "%ld threads: the namespaces would hold only one of them; "
                                  "sbx_enter must come before any thread (nng starts its "
                                  "own with the first socket)", threads);
        return AOS_ERR_REFUSED;
    }
    int last = sbx_last_cap();
    /* Directories of the new root are for every uid to cross, whatever aosd's umask. */
    mode_t mask = umask(022);
    e = sbx_enter_ns(o, p, keeps, nk, last, rep, why, whylen);
    umask(mask);
    close(sbx_self);
    sbx_self = -1;
    return e;
}

aos_err sbx_drop_to(const char *user, char *why, size_t whylen)
{
    return sbx_drop(user, NULL, why, whylen);
}
