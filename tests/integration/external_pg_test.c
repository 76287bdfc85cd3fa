/* aosd on an external PostgreSQL (--pg-dsn / AOS_PG_DSN): the harness starts its own
 * cluster, aosd runs no postgres of its own, and the servers migrate and connect to it. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "aos.pb-c.h"
#include "aos/servers.h"
#include "harness.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

static char dir[] = "/tmp/aos-ext-XXXXXX";
static pid_t pg_pid;

/* PostgreSQL refuses root: as root, run it as Debian's postgres user (not one of aos's:
 * this cluster stands for someone else's server), from a directory that user can enter
 * (ctest's working directory may be under a private home). */
static void drop_if_root(void)
{
    if (chdir(dir) != 0)
        _exit(125);
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam("postgres");
    if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
        _exit(126);
}

static int run(char *const argv[])
{
    pid_t p = fork();
    if (p == 0) {
        drop_if_root();
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int setup(void **st)
{
    (void)st;
    if (!mkdtemp(dir))
        return -1;
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    /* 0755: the servers, each under its own uid, reach the socket in here */
    if ((pw && chown(dir, pw->pw_uid, pw->pw_gid) != 0) || chmod(dir, 0755) != 0)
        return -1;
    char data[128], sock[128];
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(sock, sizeof sock, "%s", dir);
    char *initdb[] = {PG_BIN "/initdb", "-D", data, "-U", "ext_admin", "--auth=trust", "-N",
                      NULL};
    if (run(initdb) != 0) {
        fprintf(stderr, "external_pg_test: initdb into %s failed\n", data);
        return -1;
    }
    char log[160];
    snprintf(log, sizeof log, "%s/pg.log", dir);
    pg_pid = fork();
    if (pg_pid == 0) {
        drop_if_root();
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        /* argv[0] the full path: postgres finds its installation from it */
        execl(PG_BIN "/postgres", PG_BIN "/postgres", "-D", data, "-k", sock, "-p", "5544", "-c",
              "listen_addresses=", (char *)NULL);
        _exit(127);
    }
    /* ready when it answers: the servers themselves will retry, but the test wants a
     * cluster that is up before aosd starts */
    char probe[256];
    snprintf(probe, sizeof probe, "%s/.s.PGSQL.5544", dir);
    for (int i = 0; i < 500; i++) {
        struct stat sb;
        if (stat(probe, &sb) == 0) {
            usleep(300 * 1000);
            return 0;
        }
        usleep(20 * 1000);
    }
    fprintf(stderr, "external_pg_test: the test's own PostgreSQL did not start in %s\n", dir);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cat %s >&2", log);
    if (system(cmd) != 0)
        fprintf(stderr, "(no %s)\n", log);
    return -1;
}

static int teardown(void **st)
{
    (void)st;
    if (pg_pid > 0) {
        kill(pg_pid, SIGINT);
        waitpid(pg_pid, NULL, 0);
    }
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void servers_use_the_external_database(void **st)
{
    (void)st;
    char dsn[256];
    snprintf(dsn, sizeof dsn, "host=%s port=5544 dbname=aos user=ext_admin", dir);
    const char *args[] = {"--pg-dsn", dsn, NULL};
    h_aosd *h = h_start(args);
    char state[32];
    assert_int_equal(h_child(h, "postgres", state), 0); /* no embedded cluster */
    aos_reply r;
    assert_int_equal(aos_call(h_conn(h), NULL, "kernel.status", NULL, 0, &r), AOS_OK);
    Aos__StatusReply *s = aos__status_reply__unpack(NULL, r.payload_len, r.payload);
    assert_non_null(s);
    assert_string_equal(s->pg_mode, "external");
    assert_int_equal(s->n_children, AOS_SRV_COUNT); /* every server, no postgres */
    aos__status_reply__free_unpacked(s, NULL);
    aos_reply_clear(&r);
    const char *dbs[] = {"storage", "memory", "audit"};
    for (size_t i = 0; i < 3; i++) {
        char m[64];
        snprintf(m, sizeof m, "%s.stats", dbs[i]);
        assert_int_equal(aos_call(h_conn(h), NULL, m, NULL, 0, &r), AOS_OK);
        Aos__StatsReply *sr = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
        int connected = 0;
        for (size_t k = 0; sr && k < sr->n_stats; k++)
            if (!strcmp(sr->stats[k]->name, "pg_connected"))
                connected = (int)sr->stats[k]->value;
        assert_int_equal(connected, 1);
        aos__stats_reply__free_unpacked(sr, NULL);
        aos_reply_clear(&r);
    }
    h_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(servers_use_the_external_database),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
