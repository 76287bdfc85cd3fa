/* Embedded PostgreSQL for a zero-setup first run: a private cluster in DATA/pg run as its
 * own uid, listening only on a Unix socket in DATA/pgsock, peer authentication only. */
#include "pgembed.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aos/log.h"
#include "fsafe.h"
#include "spawn.h"

static int pg_dirfd = -1;
static uid_t pg_uid;

static aos_err write_auth(int etcfd, const pgem_ident *map, size_t nmap, char *why,
                          size_t whylen)
{
    static const char hba[] =
        "# Written by aosd at every start; edits are lost. Unix socket only, and every\n"
        "# login is checked against the OS user of the connecting process (peer) through\n"
        "# the map in pg_ident.conf: each aos server's user may be its own role only.\n"
        "local all all peer map=aos\n"
        "# aosctl backup's pg_basebackup (a replication connection, which 'all' does not\n"
        "# match): the superuser only, which the map gives to root and aosd's own user.\n"
        "local replication " PGEM_SUPERUSER " peer map=aos\n";
    char ident[4096];
    size_t n = (size_t)snprintf(ident, sizeof ident,
                                "# Written by aosd at every start; edits are lost.\n"
                                "# MAPNAME OS-USER ROLE\n");
    for (size_t i = 0; i < nmap && n < sizeof ident; i++)
        n += (size_t)snprintf(ident + n, sizeof ident - n, "aos %s %s\n", map[i].os_user,
                              map[i].role);
    if (n >= sizeof ident) {
        snprintf(why, whylen, "pg_ident.conf too long");
        return AOS_ERR_TOO_BIG;
    }
    aos_err e = fs_write(etcfd, "pg_hba.conf", hba, sizeof hba - 1, 0644, why, whylen);
    return e ? e : fs_write(etcfd, "pg_ident.conf", ident, n, 0644, why, whylen);
}

aos_err pgem_init(const kcfg *c, int etcfd, int pgfd, uid_t uid, gid_t gid, int log_fd,
                  const pgem_ident *map, size_t nmap, char *why, size_t whylen)
{
    aos_err e = write_auth(etcfd, map, nmap, why, whylen);
    if (e)
        return e;
    pg_dirfd = pgfd;
    pg_uid = uid;
    struct stat st;
    if (fstatat(pgfd, "PG_VERSION", &st, AT_SYMLINK_NOFOLLOW) == 0)
        return AOS_OK;
    char pg[AOS_PATH_MAX + 8], bin[4200];
    snprintf(pg, sizeof pg, "%s/pg", c->data_dir);
    snprintf(bin, sizeof bin, "%s/initdb", c->pg_bin_dir);
    if (access(bin, X_OK) != 0) {
        snprintf(why, whylen, "no initdb at %s (install postgresql-15, or set AOS_PG_BINDIR)",
                 bin);
        return AOS_ERR_NOT_FOUND;
    }
    aos_info("initdb into %s (once)", pg);
    /* initdb's own pg_hba.conf is never read (hba_file points at ours), but is made
     * strict anyway should someone start the cluster by hand */
    char *argv[] = {bin, "-D", pg, "-U", PGEM_SUPERUSER, "--auth-local=peer",
                    "--auth-host=reject", "-E", "UTF8", "--locale=C.UTF-8", NULL};
    spawn_req r = {.argv = argv, .uid = uid, .gid = gid, .out_fd = log_fd, .fds = {-1},
                   .cwd = c->data_dir, .no_new_privs = 1};
    pid_t pid = spawn_child(&r);
    if (pid < 0) {
        snprintf(why, whylen, "cannot start initdb: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    int wst;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
        snprintf(why, whylen, "initdb failed (status %d); see %s/pg.log", wst, c->data_dir);
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
}

/* The cluster's major version (DATA/pg/PG_VERSION), 0 when unknown. */
static int cluster_major(void)
{
    char why[160], buf[16];
    if (pg_dirfd < 0)
        return 0;
    int fd = fs_open_owned_by(pg_dirfd, "PG_VERSION", pg_uid, why, sizeof why);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return atoi(buf);
}

aos_err pgem_argv(const kcfg *c, char *buf, size_t cap, char *argv[PGEM_ARGV_MAX])
{
    const char *d = c->data_dir;
    int n = snprintf(buf, cap,
                     "%s/postgres%c-D%c%s/pg%c-k%c%s/pgsock%c-c%clisten_addresses=%c"
                     "-c%cunix_socket_permissions=0777%c-c%cmax_connections=200%c"
                     "-c%clog_min_messages=warning%c-c%chba_file=%s/etc/pg_hba.conf%c"
                     "-c%cident_file=%s/etc/pg_ident.conf%c",
                     c->pg_bin_dir, 0, 0, d, 0, 0, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, d, 0, 0,
                     d, 0);
    /* After a crash, postgres syncs its whole data dir before recovery; one file at a time
     * that was most of a restart (150-480 ms of 250-1200 ms measured under a kill
     * campaign). syncfs (PostgreSQL 14+) syncs the file system in one call: as durable,
     * and the data dir is ours alone. */
    if (n >= 0 && (size_t)n < cap && cluster_major() >= 14)
        n += snprintf(buf + n, cap - (size_t)n, "-c%crecovery_init_sync_method=syncfs%c", 0,
                      0);
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

/* postmaster.pid: line 1 the pid, line 8 the status ("ready" once it accepts). DATA/pg
 * is PostgreSQL's to write, so it is read through the directory fd, no symlink followed,
 * and only as a plain file of PostgreSQL's uid. */
int pgem_ready(int pid)
{
    char why[160], buf[1024];
    if (pg_dirfd < 0)
        return 0;
    int fd = fs_open_owned_by(pg_dirfd, "postmaster.pid", pg_uid, why, sizeof why);
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
        snprintf(out, cap, "host=%s/pgsock port=5432 dbname=aos user=" PGEM_SUPERUSER,
                 c->data_dir);
}

void pgem_role_dsn(const kcfg *c, const char *role, char *out, size_t cap)
{
    if (!c->pg_dsn[0])
        snprintf(out, cap, "host=%s/pgsock port=5432 dbname=aos user=%s", c->data_dir, role);
    else if (!strncmp(c->pg_dsn, "postgres://", 11) || !strncmp(c->pg_dsn, "postgresql://", 13))
        snprintf(out, cap, "%s%cuser=%s", c->pg_dsn, strchr(c->pg_dsn, '?') ? '&' : '?', role);
    else /* key=value form: a later keyword overrides an earlier one */
        snprintf(out, cap, "%s user=%s", c->pg_dsn, role);
}

/* ---- the probe ---------------------------------------------------------------------- */

static int probe_fd = -1;
static uint64_t probe_last_ok, probe_next;

void pgem_probe_reset(void)
{
    if (probe_fd >= 0)
        close(probe_fd);
    probe_fd = -1;
    probe_last_ok = probe_next = 0;
}

/* Connecting to a socket in a directory PostgreSQL's uid can write could be pointed
 * elsewhere by a symlink; the most that reaches is an 8-byte SSLRequest, nothing read
 * back but one byte. */
static int probe_send(const kcfg *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s/pgsock/.s.PGSQL.5432", c->data_dir) >=
        (int)sizeof sa.sun_path)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* SSLRequest: length 8, code 80877103; the postmaster's backend answers 'N' or 'S' */
    static const unsigned char req[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        send(fd, req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req) {
        close(fd);
        return -1;
    }
    return fd;
}

int pgem_probe(const kcfg *c, uint64_t now, uint64_t interval_ms, uint64_t timeout_ms,
               char *health, size_t cap)
{
    if (!probe_last_ok)
        probe_last_ok = now; /* a new postmaster: counted from its readiness */
    if (probe_fd >= 0) {
        unsigned char b;
        ssize_t r = recv(probe_fd, &b, 1, MSG_DONTWAIT);
        if (r == 1 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) || r == 0) {
            if (r == 1)
                probe_last_ok = now;
            close(probe_fd);
            probe_fd = -1;
        }
    }
    if (probe_fd < 0 && now >= probe_next) {
        probe_next = now + interval_ms;
        probe_fd = probe_send(c);
    }
    if (now - probe_last_ok > timeout_ms) {
        snprintf(health, cap, "not answering for %llu ms (SSLRequest probe on its socket%s)",
                 (unsigned long long)(now - probe_last_ok),
                 probe_fd < 0 ? ": cannot connect" : "");
        return 0;
    }
    snprintf(health, cap, "ok");
    return 1;
}
