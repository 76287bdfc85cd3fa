/* fork+exec for every child aosd starts (see spawn.h): one place for the order of
 * credentials, descriptors and the death signal, which matters for each of them. */
#include "spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string.h>

extern char **environ;

/* What any program needs of aosd's environment: its search path, its locale, its time
 * zone, and the sanitizers' options in a test build. Nothing else: aosd's environment
 * holds the providers' API keys and maybe a DSN, and a child's /proc/<pid>/environ stays
 * readable for its whole life. */
static int spawn_keep_env(const char *e, int aos_vars)
{
    static const char *const keep[] = {"PATH=", "LANG=", "LC_ALL=", "TZ=", "ASAN_OPTIONS=",
                                       "UBSAN_OPTIONS=", "LSAN_OPTIONS=", NULL};
    for (int i = 0; keep[i]; i++)
        if (!strncmp(e, keep[i], strlen(keep[i])))
            return 1;
    return aos_vars && !strncmp(e, "AOS_", 4) && strncmp(e, "AOS_PG_DSN=", 11) &&
           strncmp(e, "AOS_PG_ADMIN_DSN=", 17) && strncmp(e, "AOS_DATA_DIR=", 13);
}

size_t spawn_env(char **out, size_t cap, int aos_vars)
{
    size_t n = 0;
    for (char **p = environ; *p && n + 1 < cap; p++)
        if (spawn_keep_env(*p, aos_vars))
            out[n++] = *p;
    out[n] = NULL;
    return n;
}

pid_t spawn_child(const spawn_req *r)
{
    /* before the fork: the child may not allocate, and this takes no lock */
    char *minimal[SPAWN_ENV_MAX + 1];
    if (!r->envp)
        spawn_env(minimal, sizeof minimal / sizeof minimal[0], 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* the child: only async-signal-safe calls until exec (nng's threads are not here) */
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0); /* a terminal's ^C goes to aosd alone, which then stops us in order */
    /* join the delegated cgroup while still root (older kernels check the writer's
     * rights on the source cgroup too); failure shows in status, which reads /proc */
    if (r->cgroup_fd > 0) {
        ssize_t w = write(r->cgroup_fd, "0", 1);
        (void)w;
    }
    for (int i = 0; i < 2; i++)
        if (r->cgroup_v1_fd[i] > 0) {
            ssize_t w = write(r->cgroup_v1_fd[i], "0", 1);
            (void)w;
        }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0)
        dup2(devnull, 0);
    if (r->out_fd >= 0) {
        dup2(r->out_fd, 1);
        dup2(r->out_fd, 2);
    }
    /* passed fds: first out of the way (above any target), then into place */
    int n = 0, moved[SPAWN_FDS_MAX];
    for (; n < SPAWN_FDS_MAX && r->fds[n] >= 0; n++)
        if ((moved[n] = fcntl(r->fds[n], F_DUPFD, 3 + SPAWN_FDS_MAX)) < 0)
            _exit(126);
    for (int i = 0; i < n; i++)
        if (dup2(moved[i], 3 + i) < 0)
            _exit(126);
    close_range(3 + (unsigned)n, ~0u, 0);
    if (chdir(r->cwd ? r->cwd : "/") != 0)
        _exit(126);
    if (r->umask_set)
        umask(r->umask);
    if (r->uid != 0 && geteuid() == 0 &&
        (setgroups(0, NULL) != 0 || setresgid(r->gid, r->gid, r->gid) != 0 ||
         setresuid(r->uid, r->uid, r->uid) != 0))
        _exit(126);
    /* after the uid change, which clears it; then make sure the parent is still there */
    if (r->deathsig && (prctl(PR_SET_PDEATHSIG, r->deathsig) != 0 || getppid() != parent))
        _exit(125);
    if (r->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        _exit(126);
    for (int i = 0; i < r->nrlim && i < SPAWN_RLIM_MAX; i++)
        if (setrlimit(r->rlim_res[i], &r->rlim_val[i]) != 0)
            _exit(126);
    execve(r->argv[0], r->argv, r->envp ? r->envp : minimal);
    _exit(127);
}
