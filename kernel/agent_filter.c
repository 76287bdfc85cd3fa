/* The agents' seccomp allow-list, with a reason per syscall, compiled into BPF for
 * bubblewrap; what is not listed fails with EPERM, and a never-list names what must not run. */
#include "agent_filter.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(AOS_SANITIZE) || defined(__SANITIZE_ADDRESS__)
#define AGF_SANITIZED 1
#else
#define AGF_SANITIZED 0
#endif

/* How a listed syscall is allowed; the narrowed ones keep the list from becoming a way out
 * (a fork, a network socket, a namespace). */
typedef enum {
    AGF_ALLOW,    /* any arguments */
    AGF_THREAD,   /* clone: CLONE_THREAD and no CLONE_NEW*: pthread_create, never a fork */
    AGF_ENOSYS,   /* clone3: its flags sit behind a pointer seccomp cannot read; on ENOSYS
                   * glibc falls back to clone, where AGF_THREAD reads them */
    AGF_UNIX,     /* socket, socketpair: AF_UNIX only (agents have no network of their own) */
    AGF_ARG0,     /* only when the first argument is arg (a prctl option) */
    AGF_ARG1,     /* only when the second argument is arg (an ioctl request) */
    AGF_NOT_PID1, /* ptrace: any pid of its own namespace but 1 (bubblewrap's reaper, the
                   * one process there that is not under this filter) */
    AGF_CLONE_EQ, /* clone: exactly the flags arg (LeakSanitizer's tracer thread) */
} agf_how;

typedef struct agf_call {
    const char *name; /* libseccomp's name; names this architecture lacks are skipped */
    agf_how how;
    unsigned long arg;
} agf_call;

#define AGF_END {NULL, AGF_ALLOW, 0}

/* The namespace flags clone must not carry (CLONE_NEWTIME is left out: in clone's first
 * argument its bit is the exit signal's, and threads have none). */
#define AGF_CLONE_NEW                                                                      \
    ((unsigned long)(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |         \
                     CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET))

/* What a program linking libaos needs, from bubblewrap's execve on. Found with strace -f of
 * aos-test-agent (every mode) and aos-agent under agents_test, msg_test, durable_test and
 * demo_test, and with AOS_AGENT_SECCOMP=kill on the same suites in both builds; the file
 * calls beyond those are what "its own workspace" means for a program that keeps files. */
static const agf_call agf_base[] = {
    /* the exec and ld.so's start-up */
    {"execve", AGF_ALLOW, 0},          /* bubblewrap's exec of the program runs under the
                                        * filter; what it may exec (from /usr) stays under it */
    {"brk", AGF_ALLOW, 0},             /* ld.so and malloc's main heap */
    {"arch_prctl", AGF_ALLOW, 0},      /* ld.so sets the thread pointer (ARCH_SET_FS) */
    {"set_tid_address", AGF_ALLOW, 0}, /* glibc's start-up */
    {"set_robust_list", AGF_ALLOW, 0}, /* glibc, at start-up and each thread's start */
    {"rseq", AGF_ALLOW, 0},            /* glibc registers rseq per thread */
    {"prlimit64", AGF_ALLOW, 0},       /* pthread reads RLIMIT_STACK; raising a soft limit to
                                        * the hard one aosd set is harmless */
    {"access", AGF_ALLOW, 0},          /* ld.so looks for /etc/ld.so.preload */
    {"faccessat", AGF_ALLOW, 0},       /* access(2) as newer code calls it */
    {"faccessat2", AGF_ALLOW, 0},      /* glibc's faccessat with flags */
    {"pread64", AGF_ALLOW, 0},         /* ld.so reads the libraries' ELF headers */
    {"mmap", AGF_ALLOW, 0},            /* ld.so maps libraries; malloc, thread stacks */
    {"mprotect", AGF_ALLOW, 0},        /* RELRO after relocation; thread stack guards */
    {"munmap", AGF_ALLOW, 0},          /* malloc, thread stacks */
    {"mremap", AGF_ALLOW, 0},          /* realloc of a block malloc mmapped */
    {"madvise", AGF_ALLOW, 0},         /* glibc frees dead threads' stacks, trims arenas */
    {"getrandom", AGF_ALLOW, 0},       /* malloc's tcache key; nng's ids per message */
    /* files: the libraries, /proc/self, /sys's cpu list, and the agent's workspace */
    {"openat", AGF_ALLOW, 0},          /* libraries, ld.so.cache, /dev/urandom, workspace */
    {"open", AGF_ALLOW, 0},            /* the same from code that calls open(2) */
    {"close", AGF_ALLOW, 0},           /* every fd */
    {"read", AGF_ALLOW, 0},            /* files, nng's eventfd wakeups */
    {"write", AGF_ALLOW, 0},           /* its log (stdout), files, nng's wakeups */
    {"readv", AGF_ALLOW, 0},           /* nng ipc receives header and body in one call */
    {"writev", AGF_ALLOW, 0},          /* stdio; glibc's fatal messages */
    {"pwrite64", AGF_ALLOW, 0},        /* files written at an offset */
    {"lseek", AGF_ALLOW, 0},           /* stdio on files */
    {"newfstatat", AGF_ALLOW, 0},      /* fstat/stat: stdio's buffers, the workspace */
    {"fstat", AGF_ALLOW, 0},           /* the same from older code */
    {"stat", AGF_ALLOW, 0},            /* the same */
    {"lstat", AGF_ALLOW, 0},           /* the same */
    {"statx", AGF_ALLOW, 0},           /* the same from newer code */
    {"statfs", AGF_ALLOW, 0},          /* free space of the workspace */
    {"fstatfs", AGF_ALLOW, 0},         /* the same by fd */
    {"getdents64", AGF_ALLOW, 0},      /* listing the workspace */
    {"mkdir", AGF_ALLOW, 0},           /* directories in the workspace */
    {"mkdirat", AGF_ALLOW, 0},         /* the same */
    {"rmdir", AGF_ALLOW, 0},           /* the same */
    {"unlink", AGF_ALLOW, 0},          /* files in the workspace */
    {"unlinkat", AGF_ALLOW, 0},        /* the same */
    {"rename", AGF_ALLOW, 0},          /* write-then-rename, the atomic replace */
    {"renameat", AGF_ALLOW, 0},        /* the same */
    {"renameat2", AGF_ALLOW, 0},       /* the same (RENAME_NOREPLACE) */
    {"fsync", AGF_ALLOW, 0},           /* a file made durable */
    {"fdatasync", AGF_ALLOW, 0},       /* the same */
    {"ftruncate", AGF_ALLOW, 0},       /* files in the workspace */
    {"truncate", AGF_ALLOW, 0},        /* the same by name */
    {"fallocate", AGF_ALLOW, 0},       /* the same, space reserved */
    {"fchmod", AGF_ALLOW, 0},          /* modes of its own files */
    {"fchmodat", AGF_ALLOW, 0},        /* the same by name */
    {"chmod", AGF_ALLOW, 0},           /* the same */
    {"utimensat", AGF_ALLOW, 0},       /* times of its own files */
    {"readlink", AGF_ALLOW, 0},        /* /proc/self/exe */
    {"readlinkat", AGF_ALLOW, 0},      /* the same */
    {"getcwd", AGF_ALLOW, 0},          /* /workspace */
    {"chdir", AGF_ALLOW, 0},           /* within its world */
    {"fchdir", AGF_ALLOW, 0},          /* the same */
    {"umask", AGF_ALLOW, 0},           /* modes of new files */
    {"flock", AGF_ALLOW, 0},           /* a lock on its own files */
    {"fadvise64", AGF_ALLOW, 0},       /* sequential reads */
    {"dup", AGF_ALLOW, 0},             /* fds */
    {"dup2", AGF_ALLOW, 0},            /* the same */
    {"dup3", AGF_ALLOW, 0},            /* the same */
    {"pipe2", AGF_ALLOW, 0},           /* a wakeup pipe (nng where eventfd is not used) */
    {"fcntl", AGF_ALLOW, 0},           /* nng: FD_CLOEXEC and O_NONBLOCK on its sockets */
    {"ioctl", AGF_ARG1, TCGETS},       /* isatty(3): stdio's buffering; never TIOCSTI */
    /* nng: its threads, its poller, its AF_UNIX link to aosd */
    {"futex", AGF_ALLOW, 0},           /* every mutex and condition variable */
    {"clone", AGF_THREAD, 0},          /* nng's threads, not processes */
    {"clone3", AGF_ENOSYS, 0},         /* glibc's first try at a thread: see AGF_ENOSYS */
    {"socket", AGF_UNIX, 0},           /* the agent link (ipc://) */
    {"socketpair", AGF_UNIX, 0},       /* a wakeup pair */
    {"connect", AGF_ALLOW, 0},         /* the agent link */
    {"sendmsg", AGF_ALLOW, 0},         /* nng ipc sends header and body in one call */
    {"recvmsg", AGF_ALLOW, 0},         /* the same, received */
    {"sendto", AGF_ALLOW, 0},          /* send(2) */
    {"recvfrom", AGF_ALLOW, 0},        /* recv(2) */
    {"getsockopt", AGF_ALLOW, 0},      /* nng: SO_PEERCRED, SO_ERROR after connect */
    {"setsockopt", AGF_ALLOW, 0},      /* buffer sizes */
    {"getsockname", AGF_ALLOW, 0},     /* nng's pipe properties */
    {"getpeername", AGF_ALLOW, 0},     /* the same */
    {"shutdown", AGF_ALLOW, 0},        /* nng shuts a pipe down when it closes */
    {"epoll_create1", AGF_ALLOW, 0},   /* nng's poller */
    {"epoll_ctl", AGF_ALLOW, 0},       /* nng arms and disarms pipes */
    {"epoll_wait", AGF_ALLOW, 0},      /* nng's poller thread */
    {"epoll_pwait", AGF_ALLOW, 0},     /* the same from newer libcs */
    {"eventfd2", AGF_ALLOW, 0},        /* nng's poller wakeup */
    {"poll", AGF_ALLOW, 0},            /* waiting on a few fds */
    {"ppoll", AGF_ALLOW, 0},           /* the same */
    {"prctl", AGF_ARG0, PR_SET_NAME},  /* nng names its threads */
    /* time and sleep */
    {"clock_gettime", AGF_ALLOW, 0},   /* when the vDSO falls back to the syscall */
    {"clock_getres", AGF_ALLOW, 0},    /* the same */
    {"gettimeofday", AGF_ALLOW, 0},    /* the same */
    {"time", AGF_ALLOW, 0},            /* the same */
    {"nanosleep", AGF_ALLOW, 0},       /* sleeps between steps */
    {"clock_nanosleep", AGF_ALLOW, 0}, /* nng_msleep, sleeps */
    {"sched_yield", AGF_ALLOW, 0},     /* spin locks under contention */
    {"sched_getaffinity", AGF_ALLOW, 0}, /* get_nprocs(): nng sizes its task pool */
    /* signals to itself: in its own pid namespace it can name no other agent */
    {"rt_sigprocmask", AGF_ALLOW, 0},  /* thread creation blocks signals around clone */
    {"rt_sigaction", AGF_ALLOW, 0},    /* handlers (SIGTERM for a stop) */
    {"rt_sigreturn", AGF_ALLOW, 0},    /* the return from a handler */
    {"rt_sigtimedwait", AGF_ALLOW, 0}, /* sigwait(3) */
    {"rt_sigsuspend", AGF_ALLOW, 0},   /* sigsuspend(3) */
    {"sigaltstack", AGF_ALLOW, 0},     /* an alternate stack for a handler */
    {"restart_syscall", AGF_ALLOW, 0}, /* a sleep resumed after SIGSTOP/SIGCONT (suspend) */
    {"pause", AGF_ALLOW, 0},           /* waiting for a signal */
    {"kill", AGF_ALLOW, 0},            /* raise(), or a signal to pid 1 of its namespace */
    {"tgkill", AGF_ALLOW, 0},          /* abort() raises SIGABRT in itself */
    {"tkill", AGF_ALLOW, 0},           /* the same in older code */
    /* who it is */
    {"getpid", AGF_ALLOW, 0},          /* its pid in its namespace */
    {"gettid", AGF_ALLOW, 0},          /* abort(), thread names */
    {"getppid", AGF_ALLOW, 0},         /* pid 1, bubblewrap's reaper */
    {"getuid", AGF_ALLOW, 0},          /* 1000 in its namespace */
    {"geteuid", AGF_ALLOW, 0},         /* nng's ipc checks its peer's uid */
    {"getgid", AGF_ALLOW, 0},          /* the same */
    {"getegid", AGF_ALLOW, 0},         /* the same */
    {"uname", AGF_ALLOW, 0},           /* "agent" */
    {"sysinfo", AGF_ALLOW, 0},         /* sysconf(_SC_PHYS_PAGES) */
    {"getrusage", AGF_ALLOW, 0},       /* its own CPU time */
    /* the end */
    {"wait4", AGF_ALLOW, 0},           /* bubblewrap's reaper (pid 1) runs under the filter
                                        * too, and waits for the program to pass on its end */
    {"exit", AGF_ALLOW, 0},            /* a thread ends */
    {"exit_group", AGF_ALLOW, 0},      /* the process ends */
    AGF_END,
};

/* What the ASan+UBSan build adds (aosd is built with the agents it runs, so one tree has
 * one kind): the sanitizers' start-up and reports, and LeakSanitizer's check at exit, which
 * test.sh turns on. LSan stops the world with a tracer thread (clone with exactly
 * CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_UNTRACED, not CLONE_THREAD) that ptrace-attaches the
 * program's threads (waiting for each with wait4, on the base list for bubblewrap's
 * reaper): that is the one reason ptrace is here, and only in this build. In its own pid
 * namespace an agent names only its own threads and pid 1 (the reaper, under this filter
 * too), which AGF_NOT_PID1 leaves out; another agent is not there to attach to. */
static const agf_call agf_sanitizer[] = {
    {"clone", AGF_CLONE_EQ, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED}, /* tracer */
    {"ptrace", AGF_NOT_PID1, 0},       /* the tracer attaches, reads registers, detaches */
    {"prctl", AGF_ARG0, PR_SET_PTRACER}, /* lets the tracer attach */
    {"prctl", AGF_ARG0, PR_GET_DUMPABLE}, /* LSan makes the process dumpable for the */
    {"prctl", AGF_ARG0, PR_SET_DUMPABLE}, /* tracer, then restores it */
    {"prctl", AGF_ARG0, PR_SET_PDEATHSIG}, /* the tracer dies with the program */
    {"getdents", AGF_ALLOW, 0},        /* the tracer lists /proc/self/task (the old call) */
    {"mincore", AGF_ALLOW, 0},         /* the sanitizers probe whether memory is mapped */
    AGF_END,
};

/* Never on the lists, whatever the build: the mount family, namespaces, bpf, perf, keyrings,
 * kexec and modules, io_uring (its operations bypass seccomp), other processes' memory,
 * userfaultfd, file handles (open_by_handle_at escapes a bind mount), fork and vfork,
 * sockets other than AF_UNIX, links and symlinks (its tool runs share the workspace: a
 * link there must not name a file outside it), the clock, swap, reboot. escape mode of
 * aos-test-agent and agent_filter_test try them. */

agf_mode agf_mode_from_env(void)
{
    const char *v = getenv("AOS_AGENT_SECCOMP");
    return v && !strcmp(v, "kill") ? AGF_KILL : AGF_ENFORCE;
}

static aos_err agf_rule(scmp_filter_ctx ctx, const agf_call *c, char *why, size_t whylen)
{
    int nr = seccomp_syscall_resolve_name(c->name);
    if (nr == __NR_SCMP_ERROR)
        return AOS_OK; /* not a syscall of this architecture */
    int rc;
    switch (c->how) {
    case AGF_THREAD:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | AGF_CLONE_NEW,
                                      CLONE_THREAD));
        break;
    case AGF_CLONE_EQ:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)c->arg, 0));
        break;
    case AGF_ENOSYS:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
        break;
    case AGF_UNIX:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)AF_UNIX, 0));
        break;
    case AGF_ARG0:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)c->arg, 0));
        break;
    case AGF_ARG1: /* an ioctl request is an int: the upper half may be anything */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)c->arg));
        break;
    case AGF_NOT_PID1:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1, SCMP_A1(SCMP_CMP_NE, 1, 0));
        break;
    default:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        break;
    }
    if (rc) {
        snprintf(why, whylen, "seccomp rule for %s: %s", c->name, strerror(-rc));
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
}

/* The default action. EPERM, not KILL_PROCESS: the allow-list decides what runs either
 * way, and an agent is any program (with libraries and runtimes that probe for optional
 * calls and cope with a refusal); killing it would turn such a probe into a crash loop
 * under its restart policy, while EPERM lets it say in its own log what it was refused. */
aos_err agf_compile(agf_mode mode, uint8_t **out, size_t *len, char *why, size_t whylen)
{
    *out = NULL;
    *len = 0;
    scmp_filter_ctx ctx = seccomp_init(mode == AGF_KILL ? SCMP_ACT_KILL_PROCESS
                                                      : SCMP_ACT_ERRNO(EPERM));
    if (!ctx) {
        snprintf(why, whylen, "seccomp_init failed");
        return AOS_ERR_NOMEM;
    }
    aos_err e = AOS_OK;
    const agf_call *lists[2] = {agf_base, AGF_SANITIZED ? agf_sanitizer : NULL};
    for (size_t l = 0; l < 2 && lists[l] && e == AOS_OK; l++)
        for (const agf_call *c = lists[l]; c->name && e == AOS_OK; c++)
            e = agf_rule(ctx, c, why, whylen);
    if (e != AOS_OK)
        goto out;
    e = AOS_ERR_INTERNAL;
    int fd = memfd_create("aos-agent-seccomp", MFD_CLOEXEC), rc = 0;
    if (fd < 0 || (rc = seccomp_export_bpf(ctx, fd)) != 0) {
        snprintf(why, whylen, "seccomp export: %s", strerror(fd < 0 ? errno : -rc));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    off_t n = lseek(fd, 0, SEEK_END);
    uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (!buf || pread(fd, buf, (size_t)n, 0) != n) {
        snprintf(why, whylen, "seccomp export: cannot read the program back");
        free(buf);
        close(fd);
        goto out;
    }
    close(fd);
    *out = buf;
    *len = (size_t)n;
    e = AOS_OK;
out:
    seccomp_release(ctx);
    return e;
}
