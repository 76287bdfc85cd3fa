/* The throwaway PostgreSQL cluster of storage's tests (see testpg.h): initdb, postgres on a
 * private socket, crash and restart on demand, and removal. */
#include "testpg.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PG_BIN "/usr/lib/postgresql/15/bin"

struct testpg {
    char dir[64];
    char pgdata[96];
    uid_t uid;
    gid_t gid;
    int drop;
    pid_t pid;
    char dsn[256];
};

/* fork+exec argv as the cluster's owner, output to dir/log; returns the child's pid. */
static pid_t spawn(testpg *t, char *const argv[])
{
    char log[128];
    snprintf(log, sizeof log, "%s/log", t->dir);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    if (t->drop && (setgid(t->gid) || setuid(t->uid)))
        _exit(126);
    /* a test that dies (an assertion, a sanitizer) takes its cluster along; set after the
     * uid change, which clears it */
    if (prctl(PR_SET_PDEATHSIG, SIGQUIT) != 0 || getppid() == 1)
        _exit(126);
    execv(argv[0], argv);
    _exit(127);
}

static int run(testpg *t, char *const argv[])
{
    pid_t pid = spawn(t, argv);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int start_postgres(testpg *t)
{
    char *argv[] = {PG_BIN "/postgres", "-D", t->pgdata, "-k", t->dir, "-p", "5432",
                    "-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=100",
                    "-c", "unix_socket_permissions=0777", NULL};
    t->pid = spawn(t, argv);
    if (t->pid < 0)
        return -1;
    char dsn[128];
    snprintf(dsn, sizeof dsn, "host=%s port=5432 dbname=postgres user=aos_admin", t->dir);
    for (int i = 0; i < 300; i++) {   /* up to 30 s */
        if (PQping(dsn) == PQPING_OK)
            return 0;
        if (waitpid(t->pid, NULL, WNOHANG) == t->pid) {
            t->pid = 0;   /* it gave up (e.g. the old shared memory is still in use) */
            return -1;
        }
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

testpg *testpg_start(char *why, size_t whylen)
{
    if (getenv("AOS_TEST_NO_PG")) {
        snprintf(why, whylen, "AOS_TEST_NO_PG is set");
        return NULL;
    }
    if (access(PG_BIN "/initdb", X_OK)) {
        snprintf(why, whylen, "no %s/initdb (postgresql-15 is not installed)", PG_BIN);
        return NULL;
    }
    testpg *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    snprintf(t->dir, sizeof t->dir, "/tmp/aos-stgtest-XXXXXX");
    if (!mkdtemp(t->dir)) {
        snprintf(why, whylen, "mkdtemp: %s", strerror(errno));
        free(t);
        return NULL;
    }
    snprintf(t->pgdata, sizeof t->pgdata, "%s/pg", t->dir);
    if (geteuid() == 0) {
        /* PostgreSQL refuses to run as root */
        struct passwd *pw = getpwnam("postgres");
        if (!pw)
            pw = getpwnam("aos");
        if (!pw) {
            snprintf(why, whylen, "running as root and there is no postgres or aos user");
            goto fail;
        }
        t->uid = pw->pw_uid;
        t->gid = pw->pw_gid;
        t->drop = 1;
        if (chown(t->dir, t->uid, t->gid)) {
            snprintf(why, whylen, "chown %s: %s", t->dir, strerror(errno));
            goto fail;
        }
    }
    char *initdb[] = {PG_BIN "/initdb", "-D", t->pgdata, "-U", "aos_admin", "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions", NULL};
    if (run(t, initdb) != 0) {
        snprintf(why, whylen, "initdb failed (see %s/log)", t->dir);
        goto fail;
    }
    if (start_postgres(t)) {
        snprintf(why, whylen, "postgres did not start (see %s/log)", t->dir);
        goto fail;
    }
    return t;
fail:
    testpg_stop(t);
    return NULL;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    remove(p);
    return 0;
}

void testpg_stop(testpg *t)
{
    if (!t)
        return;
    if (t->pid > 0) {
        kill(t->pid, SIGQUIT);   /* immediate shutdown: nothing here is worth a checkpoint */
        waitpid(t->pid, NULL, 0);
    }
    nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
}

int testpg_crash(testpg *t, int restart)
{
    if (t->pid > 0) {
        kill(t->pid, SIGKILL);
        waitpid(t->pid, NULL, 0);
        t->pid = 0;
        /* the orphaned backends notice the postmaster is gone and exit; wait for them to
         * let go of the shared memory, or the new postmaster refuses to start */
        for (int i = 0; i < 100; i++) {
            struct timespec ts = {0, 100000000L};
            nanosleep(&ts, NULL);
            if (!restart)
                break;
            if (start_postgres(t) == 0)
                return 0;
        }
        return restart ? -1 : 0;
    }
    return restart ? start_postgres(t) : 0;
}

const char *testpg_dsn(testpg *t, const char *user)
{
    snprintf(t->dsn, sizeof t->dsn, "host=%s port=5432 dbname=aos user=%s", t->dir, user);
    return t->dsn;
}
