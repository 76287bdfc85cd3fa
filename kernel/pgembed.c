/* Embedded PostgreSQL for a zero-setup first run: a private cluster in DATA/pg that
 * listens only on a Unix socket in DATA, run as the unprivileged user when aosd is root. */
#include "pgembed.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aos/log.h"
#include "supervise.h"

#define PG_SUPERUSER "aos_admin"

aos_err pgem_init(const kcfg *c, char *why, size_t whylen)
{
    char pg[AOS_PATH_MAX + 8], ver[AOS_PATH_MAX + 24], bin[4200], log[AOS_PATH_MAX + 16];
    snprintf(pg, sizeof pg, "%s/pg", c->data_dir);
    snprintf(ver, sizeof ver, "%s/PG_VERSION", pg);
    snprintf(log, sizeof log, "%s/pg.log", c->data_dir);
    if (access(ver, F_OK) == 0)
        return AOS_OK;
    snprintf(bin, sizeof bin, "%s/initdb", c->pg_bin_dir);
    if (access(bin, X_OK) != 0) {
        snprintf(why, whylen, "no initdb at %s (install postgresql-15, or set AOS_PG_BINDIR)",
                 bin);
        return AOS_ERR_NOT_FOUND;
    }
    /* initdb wants an empty or missing directory it can write as the cluster's owner */
    if (mkdir(pg, 0700) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "mkdir %s: %s", pg, strerror(errno));
        return AOS_ERR_IO;
    }
    if (geteuid() == 0 && chown(pg, c->uid, c->gid) != 0) {
        snprintf(why, whylen, "chown %s to %s: %s", pg, c->user, strerror(errno));
        return AOS_ERR_IO;
    }
    aos_info("initdb into %s (once)", pg);
    char *argv[] = {bin, "-D", pg, "-U", PG_SUPERUSER, "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8", NULL};
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, whylen, "open %s: %s", log, strerror(errno));
        return AOS_ERR_IO;
    }
    if (geteuid() == 0 && fchown(fd, c->uid, c->gid) != 0)
        aos_warn("chown %s: %s", log, strerror(errno));
    pid_t pid = sup_spawn(c, argv, NULL, 1, fd, 0);
    close(fd);
    if (pid < 0) {
        snprintf(why, whylen, "cannot start initdb: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(why, whylen, "initdb failed (status %d); see %s", st, log);
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
}

aos_err pgem_argv(const kcfg *c, char *buf, size_t cap, char *argv[PGEM_ARGV_MAX])
{
    int n = snprintf(buf, cap, "%s/postgres%c-D%c%s/pg%c-k%c%s%c-c%clisten_addresses=%c"
                               "-c%cunix_socket_permissions=0700%c-c%cmax_connections=200%c"
                               "-c%clog_min_messages=warning%c",
                     c->pg_bin_dir, 0, 0, c->data_dir, 0, 0, c->data_dir, 0, 0, 0, 0, 0, 0, 0,
                     0, 0);
    if (n < 0 || (size_t)n >= cap)
        return AOS_ERR_TOO_BIG;
    char *p = buf;
    int k = 0;
    while (p < buf + n && k < PGEM_ARGV_MAX - 1) {
        argv[k++] = p;
        p += strlen(p) + 1;
    }
    argv[k] = NULL;
    return AOS_OK;
}

/* postmaster.pid: line 1 the pid, line 8 the status ("ready" once it accepts). */
int pgem_ready(const kcfg *c, int pid)
{
    char path[AOS_PATH_MAX + 32], buf[1024];
    snprintf(path, sizeof path, "%s/pg/postmaster.pid", c->data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    if (atoi(buf) != pid)
        return 0;
    char *line = buf;
    for (int i = 1; i < 8 && line; i++) {
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return line && !strncmp(line, "ready", 5);
}

void pgem_admin_dsn(const kcfg *c, char *out, size_t cap)
{
    if (c->pg_dsn[0])
        snprintf(out, cap, "%s", c->pg_dsn);
    else
        snprintf(out, cap, "host=%s port=5432 dbname=aos user=" PG_SUPERUSER, c->data_dir);
}

void pgem_role_dsn(const kcfg *c, const char *role, char *out, size_t cap)
{
    if (!c->pg_dsn[0])
        snprintf(out, cap, "host=%s port=5432 dbname=aos user=%s", c->data_dir, role);
    else if (!strncmp(c->pg_dsn, "postgres://", 11) || !strncmp(c->pg_dsn, "postgresql://", 13))
        snprintf(out, cap, "%s%cuser=%s", c->pg_dsn, strchr(c->pg_dsn, '?') ? '&' : '?', role);
    else /* key=value form: a later keyword overrides an earlier one */
        snprintf(out, cap, "%s user=%s", c->pg_dsn, role);
}
