/* The data dir (see datadir.h): made and checked through directory fds only (fsafe), so
 * nothing a service user plants there can turn root's hand against another file. */
#include "datadir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aos/log.h"
#include "fsafe.h"

/* Every existing directory above DATA must be root's (or ours) and writable by nobody
 * else unless sticky: otherwise its owner could swap DATA for a tree of their own. The
 * missing ones are made 0755. */
static aos_err safe_parents(const char *path, char *why, size_t whylen)
{
    char p[AOS_PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            snprintf(why, whylen, "mkdir %s: %s", p, strerror(errno));
            return AOS_ERR_IO;
        }
        struct stat st;
        if (lstat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            snprintf(why, whylen, "%s is not a directory", p);
            return AOS_ERR_REFUSED;
        }
        if ((st.st_uid != 0 && st.st_uid != geteuid()) ||
            ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))) {
            snprintf(why, whylen, "%s (uid %u, mode %o) can be changed by another user: the "
                     "data dir must sit below directories only root can change", p,
                     (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
            return AOS_ERR_REFUSED;
        }
        *s = '/';
    }
    return AOS_OK;
}

/* A data dir of the single-user layout (DATA owned by the old service user): made root's
 * first, so that user can change nothing in it while the rest is put right; root's files
 * it could have replaced are removed and made anew; the cluster is given to PostgreSQL's
 * own uid, entry by entry, never through a symlink or a hard link. */
static aos_err migrate_legacy(const kcfg *c, uid_t legacy, uid_t pg_uid, gid_t pg_gid,
                              char *why, size_t whylen)
{
    int fd = open(c->data_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_uid != legacy) {
        snprintf(why, whylen, "%s changed while it was being migrated", c->data_dir);
        if (fd >= 0)
            close(fd);
        return AOS_ERR_REFUSED;
    }
    aos_warn("%s has the single-user layout of an older aos: migrating it", c->data_dir);
    aos_err e = AOS_OK;
    if (fchown(fd, 0, 0) != 0 || fchmod(fd, 0755) != 0) {
        snprintf(why, whylen, "making %s root's: %s", c->data_dir, strerror(errno));
        e = AOS_ERR_IO;
        goto out;
    }
    static const char *const roots[] = {"aosd.lock", "pg.log", "control.sock", "run", "etc"};
    for (size_t i = 0; !e && i < sizeof roots / sizeof roots[0]; i++)
        e = fs_remove(fd, roots[i], why, whylen);
    if (e)
        goto out;
    int pg = openat(fd, "pg", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (pg < 0 && errno != ENOENT) {
        /* a symlink or a file where the cluster should be: not ours to follow */
        e = fs_remove(fd, "pg", why, whylen);
        goto out;
    }
    if (pg >= 0) {
        e = fs_reown_tree(pg, legacy, pg_uid, pg_gid, why, whylen);
        close(pg);
        if (e) {
            char m[400];
            snprintf(m, sizeof m, "%s", why);
            snprintf(why, whylen, "migrating %s/pg: %s; fix or remove it by hand",
                     c->data_dir, m);
        }
    }
out:
    close(fd);
    return e;
}

/* DATA/etc/format: refused when newer than this aosd knows, written when missing. Read
 * after the lock, so two aosds never race on it. */
static aos_err check_format(const kcfg *c, int etc, char *why, size_t whylen)
{
    char buf[32];
    int fd = openat(etc, "format", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        snprintf(why, whylen, "%s/etc/format: %s", c->data_dir, strerror(errno));
        return AOS_ERR_IO;
    }
    if (fd < 0) {
        int n = snprintf(buf, sizeof buf, "%d\n", DD_FORMAT);
        return fs_write(etc, "format", buf, (size_t)n, 0644, why, whylen);
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    char *end;
    long f = strtol(buf, &end, 10);
    if (n <= 0 || end == buf || (*end && *end != '\n') || f < 1) {
        snprintf(why, whylen, "%s/etc/format does not hold a format number (it says '%.16s')",
                 c->data_dir, buf);
        return AOS_ERR_REFUSED;
    }
    if (f > DD_FORMAT) {
        snprintf(why, whylen, "this data dir has format %ld, newer than this aos (%s) knows "
                 "(format %d): it was last run by a newer aos; run that aos again, or "
                 "restore a backup made before the upgrade", f, AOS_VERSION, DD_FORMAT);
        return AOS_ERR_REFUSED;
    }
    /* older formats would be brought up to DD_FORMAT here, one step at a time */
    return AOS_OK;
}

static aos_err take_lock(const kcfg *c, datadir *d, char *why, size_t whylen)
{
    char buf[32];
    d->lock = fs_open(d->dir, "aosd.lock", O_RDWR | O_CREAT, 0600, why, whylen);
    if (d->lock < 0)
        return AOS_ERR_IO;
    if (flock(d->lock, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = pread(d->lock, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = 0;
        snprintf(why, whylen, "another aosd (pid %d) is already running on %s", atoi(buf),
                 c->data_dir);
        return AOS_ERR_CONFLICT;
    }
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(d->lock, 0) != 0 || pwrite(d->lock, buf, (size_t)n, 0) != n)
        aos_warn("cannot write %s/aosd.lock", c->data_dir);
    return AOS_OK;
}

aos_err dd_open(const kcfg *c, uid_t pg_uid, gid_t pg_gid, uid_t legacy_uid, datadir *d,
                char *why, size_t whylen)
{
    *d = (datadir){.dir = -1, .run = -1, .etc = -1, .pg = -1, .lock = -1, .pg_log = -1};
    int root = geteuid() == 0;
    aos_err e = safe_parents(c->data_dir, why, whylen);
    if (e)
        return e;
    struct stat st;
    if (root && legacy_uid != (uid_t)-1 && lstat(c->data_dir, &st) == 0 &&
        S_ISDIR(st.st_mode) && st.st_uid == legacy_uid &&
        (e = migrate_legacy(c, legacy_uid, pg_uid, pg_gid, why, whylen)))
        return e;
    /* root: 0755, readable so the service users can reach run/ and pgsock/ below it,
     * writable by root alone; not root: everything is ours, kept private */
    d->dir = fs_dir(AT_FDCWD, c->data_dir, root ? 0755 : 0700, geteuid(), getegid(), why,
                    whylen);
    if (d->dir < 0)
        return AOS_ERR_REFUSED;
    if ((e = take_lock(c, d, why, whylen)))
        return e;
    if ((d->run = fs_dir(d->dir, "run", 0755, geteuid(), getegid(), why, whylen)) < 0 ||
        (d->etc = fs_dir(d->dir, "etc", 0755, geteuid(), getegid(), why, whylen)) < 0)
        return AOS_ERR_REFUSED;
    if ((e = check_format(c, d->etc, why, whylen)))
        return e;
    if (!c->pg_dsn[0]) {
        int sock;
        if ((d->pg = fs_dir(d->dir, "pg", 0700, pg_uid, pg_gid, why, whylen)) < 0 ||
            (sock = fs_dir(d->dir, "pgsock", 0755, pg_uid, pg_gid, why, whylen)) < 0)
            return AOS_ERR_REFUSED;
        close(sock);
        d->pg_log = fs_open(d->dir, "pg.log", O_WRONLY | O_CREAT | O_APPEND, 0600, why,
                            whylen);
        if (d->pg_log < 0)
            return AOS_ERR_IO;
    }
    return AOS_OK;
}
