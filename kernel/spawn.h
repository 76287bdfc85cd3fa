/* Starting a child: fork and exec (nng is not fork-safe, so nothing runs between them but
 * async-signal-safe calls), credentials, inherited fds, cwd, parent-death signal. */
#ifndef AOS_SPAWN_H
#define AOS_SPAWN_H

#include <sys/resource.h>
#include <sys/types.h>

#define SPAWN_FDS_MAX 4
#define SPAWN_RLIM_MAX 6

typedef struct spawn_req {
    char *const *argv;          /* argv[0] is the full path of the program */
    char *const *envp;          /* NULL: spawn_env's minimal one (never aosd's whole:
                                 * it holds API keys) */
    uid_t uid;                  /* switch to uid:gid (no supplementary groups) when root; */
    gid_t gid;                  /* uid 0 means stay root (servers drop by themselves) */
    int umask_set;              /* the child's umask is umask, not aosd's 077 */
    mode_t umask;
    int out_fd;                 /* stdout and stderr (-1: inherit) */
    int fds[SPAWN_FDS_MAX];     /* fds[i] becomes fd 3+i in the child; -1 ends the list */
    const char *cwd;            /* NULL: "/" */
    int deathsig;               /* PR_SET_PDEATHSIG after the uid change; 0: none */
    int no_new_privs;           /* PR_SET_NO_NEW_PRIVS before exec */
    int cgroup_fd;              /* > 0: a cgroup.procs the child joins first (0: none) */
    int cgroup_v1_fd[2];        /* > 0: cgroup v1 procs files it joins too (0: none) */
    int nrlim;                  /* rlimits set just before exec (RLIMIT_* and values) */
    int rlim_res[SPAWN_RLIM_MAX];
    struct rlimit rlim_val[SPAWN_RLIM_MAX];
} spawn_req;

/* The environment for a child, filtered out of aosd's into out (cap pointers, the last
 * one NULL; the strings are aosd's own): PATH, the locale, TZ, the sanitizer options, and
 * with aos_vars the AOS_* settings servers read (never AOS_PG_DSN, AOS_PG_ADMIN_DSN).
 * Returns the count. */
#define SPAWN_ENV_MAX 60
size_t spawn_env(char **out, size_t cap, int aos_vars);

/* fork + exec r. Returns the pid, or -1 with errno from fork. A child that cannot reach
 * exec exits 125 (parent gone), 126 (cannot switch user or directory) or 127 (exec). */
pid_t spawn_child(const spawn_req *r);

#endif
