/* Each server's sandbox, in two steps: namespaces and a minimal root while the process is
 * still single-threaded, then privilege drop, rlimits, no_new_privs and seccomp. */
#ifndef AOS_SANDBOX_H
#define AOS_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

#include "aos/err.h"

#define SBX_KEEP_MAX 8

/* What aosd decided for this server (from its command line). */
typedef struct sbx_opts {
    const char *name;          /* "memory", "storage", "tool", "llm", "audit", "api" */
    const char *user;          /* the server's own account to drop to when root; NULL: stay */
    const char *group_of;      /* a user whose primary group it keeps as its one
                                * supplementary group (aos-tool: aos-agent's); NULL none */
    pid_t parent;              /* aosd's pid: checked again after the drop */
    int pg_local;              /* its database is on a Unix socket (the embedded cluster):
                                * AF_UNIX only and a network namespace of its own,
                                * unless its own work is on the network (llm) */
    const char *keep[SBX_KEEP_MAX]; /* absolute paths to keep visible read-write inside
                                * the minimal root (the link's run dir, PostgreSQL's socket
                                * dir, the server's state dir); NULL-terminated */
} sbx_opts;

/* What was applied; sent to aosd in READY (SandboxReport) and shown by aosctl status. */
typedef struct sbx_report {
    char root[16];             /* "minimal", "readonly" or "host" */
    int mount_ns, net_ns, user_ns, proc, inet;
    unsigned long long rlimit_as, rlimit_nproc, rlimit_memlock; /* 0: not set */
    char notes[256];           /* why a layer is off; "" when all are on */
} sbx_report;

/* Step 1, the first thing a server does, while it has no thread but main: a mount
 * namespace with / read-only and only the server's own paths visible (pivot_root into a
 * tmpfs of read-only binds; aos-tool keeps the host's tree read-only instead, for
 * bubblewrap), a network namespace when pg_local, chdir("/"), an empty capability
 * bounding set. Not root: an unprivileged user namespace gives the same layers. A layer
 * the kernel refuses is written to rep->notes and is not fatal; a half-done one is. */
aos_err sbx_enter(const sbx_opts *o, sbx_report *rep, char *why, size_t whylen);

/* Step 2, after the server opened its resources and started its threads: privilege drop
 * (setgroups/setresgid/setresuid reach every thread), parent-death signal, rlimits
 * (CORE 0, NOFILE, FSIZE, AS, NPROC, MEMLOCK), no_new_privs, and the server's seccomp
 * allow-list (AF_INET only where its profile says why and not pg_local). Any syscall
 * outside the list kills the process (SIGSYS); AOS_SECCOMP_TRAP=1 names the syscall. */
aos_err sbx_apply(const sbx_opts *o, sbx_report *rep, char *why, size_t whylen);

/* Adds aos-tool's deny-list (the syscalls no server, bubblewrap nor tool needs) to a
 * libseccomp filter (a scmp_filter_ctx; void * to keep <seccomp.h> out of this header),
 * each refused with EPERM: the tool sandbox stacks it into every run's own filter. */
aos_err sbx_deny_common(void *ctx, char *why, size_t whylen);

/* Only the privilege drop of sbx_apply (checked, root unrecoverable): for one-shot
 * helpers such as the migrator, which exec as root (their binary may sit where only root
 * can reach) and need nothing else of the sandbox. */
aos_err sbx_drop_to(const char *user, char *why, size_t whylen);

/* Look up user's uid and gid (before the sandbox: it reads /etc/passwd). */
aos_err sbx_lookup_user(const char *user, uid_t *uid, gid_t *gid, char *why, size_t whylen);

#endif
