/* The sandbox of one tool run or MCP server: a bubblewrap command line (namespaces, a
 * read-only root of the system's /usr, a generated /etc, the workspace), a seccomp filter
 * compiled once, rlimits and a cgroup of its own; and what of it this host enforces. */
#ifndef AOS_TOOL_JAIL_H
#define AOS_TOOL_JAIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aos/err.h"

typedef struct jail jail;  /* shared by every run; thread-safe after jail_open */

#define JAIL_ENV_MAX 32     /* extra NAME=value pairs of one run */
#define JAIL_RO_MAX 8       /* extra host paths bound read-only */

/* One layer of the sandbox as in force on this host. */
typedef struct jail_layer {
    const char *name;   /* static */
    int on;
    char why[160];
} jail_layer;
#define JAIL_LAYERS_MAX 24

typedef struct jail_spec {
    char *const *argv;              /* argv[0] is looked up in the sandbox's PATH by bwrap */
    const char *const *env;         /* NULL-terminated extra "NAME=value" (secrets), or NULL */
    const char *workspace;          /* host directory bound read-write at /workspace; NULL:
                                     * none (an empty one of its own) */
    const char *const *ro_paths;    /* host paths bound read-only at the same path, or NULL */
    const char *const *ro_srcs;     /* NULL, or per ro_path where to bind it from instead
                                     * (NULL entry: the path itself) */
    int network;                    /* granted: a network namespace with a way out */
    unsigned memory_mb, processes, cpu_s; /* 0: the defaults */
    int no_as_limit;                /* no RLIMIT_AS (node, ASan-built programs reserve far
                                     * more address space than they use): memory is then
                                     * bounded by the cgroup alone */
    uint64_t file_bytes;            /* RLIMIT_FSIZE; 0: the default */
    int want_stdin;                 /* give the run a pipe on stdin (else /dev/null) */
    int plain;                      /* no sandbox at all: plain fork/exec in the workspace
                                     * (the benchmarks' baseline; --test-hooks only) */
} jail_spec;

/* A started run. The fds are the caller's to read (stdout, stderr) and write (stdin, or
 * -1), all O_NONBLOCK|O_CLOEXEC; pidfd is readable once bwrap exits. */
typedef struct jail_proc {
    pid_t pid;          /* bubblewrap's outer process, our child */
    int pidfd;
    int out_fd, err_fd, in_fd;
    int cg;             /* slot of its cgroup, -1: none */
    pid_t net_pid;      /* a network run's slirp4netns, our child too; -1: none */
    int net_exit_fd;    /* closing it ends that slirp4netns; -1: none */
} jail_proc;

/* Probes bubblewrap and the kernel, writes the sandbox's /etc into state_dir/etc (state_dir
 * is aos-tool's own directory, NULL: a temporary one), compiles the seccomp filter, and
 * finds the cgroups aos-tool may divide (v2 delegated, or v1 pids/memory it owns). Never
 * fails for a layer the host lacks: it is reported off. *out is the caller's (jail_free).
 * Must run before the server's own sandbox closes (it reads /proc and /etc). */
aos_err jail_open(const char *state_dir, jail **out, char *why, size_t whylen);
void jail_free(jail *j);

/* 1 when runs are possible at all (bubblewrap found and working). */
int jail_ready(const jail *j, char *why, size_t whylen);

/* The layers, into out (at most JAIL_LAYERS_MAX); returns how many. */
size_t jail_layers(const jail *j, jail_layer *out);

/* Starts one run; the caller owns p's fds and must call jail_reap once pidfd is readable
 * (or after jail_kill). Forks from the calling thread: that thread must outlive the run,
 * since bubblewrap's parent-death signal follows it. */
aos_err jail_spawn(jail *j, const jail_spec *s, jail_proc *p, char *why, size_t whylen);

/* Kills the whole run: bubblewrap (whose parent-death signal takes the sandbox's pid 1,
 * and with it every process of its pid namespace) and whatever is left in its cgroup. */
void jail_kill(jail *j, const jail_proc *p);

/* Collects the exit (blocks only if it has not exited: call after pidfd is readable),
 * returns the wait status and the peak memory (KiB: the cgroup's peak where there is one,
 * else the largest process's maxrss). Closes pidfd, not the pipes. */
int jail_reap(jail *j, jail_proc *p, uint64_t *peak_kb);
/* After jail_reap (and after the caller answered: it may take a few ms): kills whatever
 * is left in the run's cgroup and removes it. */
void jail_release(jail *j, jail_proc *p);

#endif
