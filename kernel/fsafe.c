/* Root's safe file operations (see fsafe.h): the rule of systemd's tmpfiles against unsafe
 * path transitions, applied to everything aosd touches in its data dir. */
#include "fsafe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_dir(int dirfd, const char *name, mode_t mode, uid_t uid, gid_t gid, char *why,
           size_t whylen)
{
    if (mkdirat(dirfd, name, mode) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "mkdir %s: %s", name, strerror(errno));
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "%s: %s", name,
                 errno == ENOTDIR || errno == ELOOP ? "exists and is not a directory"
                                                    : strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "stat %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    if (geteuid() == 0 && st.st_uid != 0 && st.st_uid != uid) {
        snprintf(why, whylen, "%s belongs to uid %u, neither root nor uid %u: refusing to "
                 "take it over", name, (unsigned)st.st_uid, (unsigned)uid);
        close(fd);
        return -1;
    }
    if ((st.st_uid != uid || st.st_gid != gid) && geteuid() == 0 &&
        fchown(fd, uid, gid) != 0) {
        snprintf(why, whylen, "chown %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    if ((st.st_mode & 07777) != mode && fchmod(fd, mode) != 0) {
        snprintf(why, whylen, "chmod %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int check_reg(int fd, const char *name, uid_t uid, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "stat %s: %s", name, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != uid) {
        snprintf(why, whylen, "%s is not a plain file of uid %u (type %o, %lu links, uid %u)",
                 name, (unsigned)uid, (unsigned)(st.st_mode & S_IFMT),
                 (unsigned long)st.st_nlink, (unsigned)st.st_uid);
        return -1;
    }
    return 0;
}

int fs_open(int dirfd, const char *name, int flags, mode_t mode, char *why, size_t whylen)
{
    int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);
    if (fd < 0) {
        snprintf(why, whylen, "open %s: %s", name,
                 errno == ELOOP ? "is a symlink" : strerror(errno));
        return -1;
    }
    if (check_reg(fd, name, geteuid(), why, whylen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int fs_open_owned_by(int dirfd, const char *name, uid_t uid, char *why, size_t whylen)
{
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, whylen, "open %s: %s", name, strerror(errno));
        return -1;
    }
    if (check_reg(fd, name, uid, why, whylen) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

aos_err fs_write(int dirfd, const char *name, const char *content, size_t len, mode_t mode,
                 char *why, size_t whylen)
{
    char tmp[256];
    if (snprintf(tmp, sizeof tmp, ".%s.tmp", name) >= (int)sizeof tmp) {
        snprintf(why, whylen, "name too long: %s", name);
        return AOS_ERR_USAGE;
    }
    unlinkat(dirfd, tmp, 0);
    int fd = fs_open(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL, mode, why, whylen);
    if (fd < 0)
        return AOS_ERR_IO;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, content + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int ok = off == len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || renameat(dirfd, tmp, dirfd, name) != 0) {
        snprintf(why, whylen, "writing %s: %s", name, strerror(ok ? errno : e));
        unlinkat(dirfd, tmp, 0);
        return AOS_ERR_IO;
    }
    return AOS_OK;
}

static aos_err rm_tree(int parent, const char *name, int depth, char *why, size_t whylen)
{
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
        return AOS_OK;
    if (errno != EISDIR && errno != EPERM) {
        snprintf(why, whylen, "remove %s: %s", name, strerror(errno));
        return AOS_ERR_IO;
    }
    if (depth > 64) {
        snprintf(why, whylen, "remove %s: nested too deep", name);
        return AOS_ERR_IO;
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "open %s: %s", name, strerror(errno));
        return AOS_ERR_IO;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        snprintf(why, whylen, "read %s: %s", name, strerror(errno));
        return AOS_ERR_IO;
    }
    aos_err e = AOS_OK;
    struct dirent *de;
    while (!e && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            e = rm_tree(dirfd(d), de->d_name, depth + 1, why, whylen);
    closedir(d);
    if (!e && unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
        snprintf(why, whylen, "rmdir %s: %s", name, strerror(errno));
        e = AOS_ERR_IO;
    }
    return e;
}

aos_err fs_remove(int dirfd, const char *name, char *why, size_t whylen)
{
    return rm_tree(dirfd, name, 0, why, whylen);
}

/* What a tree walk does with one entry (fd: O_PATH to the entry itself, st its stat): an
 * error ends the walk; *descend asks to go into it when it is a directory. */
typedef aos_err (*walk_fn)(int fd, const char *name, const struct stat *st, dev_t dev,
                           void *arg, int *descend, char *why, size_t whylen);

/* fn over every entry below dirfd, depth first, never following a symlink: each entry is
 * opened once (O_PATH), and a directory is entered only if it is still the one fn saw
 * (verb says what was being done to it when it was not). */
static aos_err walk(int dirfd, dev_t dev, int depth, walk_fn fn, void *arg, const char *verb,
                    char *why, size_t whylen)
{
    if (depth > 64) {
        snprintf(why, whylen, "tree nested too deep");
        return AOS_ERR_IO;
    }
    int dfd = dup(dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        snprintf(why, whylen, "read dir: %s", strerror(errno));
        return AOS_ERR_IO;
    }
    rewinddir(d); /* the dup shares dirfd's offset: an earlier walk of it left it at the end */
    aos_err e = AOS_OK;
    struct dirent *de;
    while (!e && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        /* O_PATH: an fd to the entry itself, symlinks included, opened once */
        int fd = openat(dirfd, de->d_name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        int descend = 0;
        if (fd < 0 || fstat(fd, &st) != 0) {
            snprintf(why, whylen, "%s: %s", de->d_name, strerror(errno));
            e = AOS_ERR_IO;
        } else {
            e = fn(fd, de->d_name, &st, dev, arg, &descend, why, whylen);
        }
        if (!e && descend && S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            struct stat s2;
            if (sub < 0 || fstat(sub, &s2) != 0 || s2.st_ino != st.st_ino) {
                snprintf(why, whylen, "%s changed while it was %s", de->d_name, verb);
                e = AOS_ERR_REFUSED;
            } else {
                e = walk(sub, dev, depth + 1, fn, arg, verb, why, whylen);
            }
            if (sub >= 0)
                close(sub);
        }
        if (fd >= 0)
            close(fd);
    }
    closedir(d);
    return e;
}

typedef struct reown_arg {
    uid_t from, to;
    gid_t gid;
} reown_arg;

static aos_err reown_one(int fd, const char *name, const struct stat *st, dev_t dev,
                         void *arg, int *descend, char *why, size_t whylen)
{
    const reown_arg *a = arg;
    if (st->st_dev != dev) {
        snprintf(why, whylen, "%s is on another file system", name);
        return AOS_ERR_REFUSED;
    }
    if (S_ISREG(st->st_mode) && st->st_nlink > 1) {
        snprintf(why, whylen, "%s has %lu hard links: it may be someone else's file", name,
                 (unsigned long)st->st_nlink);
        return AOS_ERR_REFUSED;
    }
    if (st->st_uid == a->from &&
        fchownat(fd, "", a->to, a->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
        snprintf(why, whylen, "chown %s: %s", name, strerror(errno));
        return AOS_ERR_IO;
    }
    *descend = 1;
    return AOS_OK;
}

aos_err fs_reown_tree(int dirfd, uid_t from_uid, uid_t to_uid, gid_t to_gid, char *why,
                      size_t whylen)
{
    struct stat st;
    if (fstat(dirfd, &st) != 0) {
        snprintf(why, whylen, "stat: %s", strerror(errno));
        return AOS_ERR_IO;
    }
    if (st.st_uid == from_uid && fchown(dirfd, to_uid, to_gid) != 0) {
        snprintf(why, whylen, "chown: %s", strerror(errno));
        return AOS_ERR_IO;
    }
    reown_arg a = {from_uid, to_uid, to_gid};
    return walk(dirfd, st.st_dev, 0, reown_one, &a, "re-owned", why, whylen);
}

/* An fd's mode through its /proc link: an O_PATH fd has no fchmod, and the link is the
 * entry itself (no path is resolved again, so nothing can be swapped in). */
static int chmod_fd(int fd, mode_t mode)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    return chmod(p, mode);
}

static aos_err share_one(int fd, const char *name, const struct stat *st, dev_t dev,
                         void *arg, int *descend, char *why, size_t whylen)
{
    gid_t gid = *(const gid_t *)arg;
    if (st->st_dev != dev || !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode)) ||
        (S_ISREG(st->st_mode) && st->st_nlink > 1))
        return AOS_OK; /* another file system's, a symlink, a device or a FIFO, a hard link
                        * to who knows whose file: left as it is */
    /* the group may do what the owner may, and a directory's new files keep it */
    mode_t m = (st->st_mode & 07777) | ((st->st_mode & 0700) >> 3) |
               (S_ISDIR(st->st_mode) ? S_ISGID : 0);
    if (fchownat(fd, "", (uid_t)-1, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 ||
        chmod_fd(fd, m) != 0) {
        snprintf(why, whylen, "%s: %s", name, strerror(errno));
        return AOS_ERR_IO;
    }
    *descend = 1;
    return AOS_OK;
}

aos_err fs_share_tree(int dirfd, gid_t gid, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(dirfd, &st) != 0) {
        snprintf(why, whylen, "stat: %s", strerror(errno));
        return AOS_ERR_IO;
    }
    return walk(dirfd, st.st_dev, 0, share_one, &gid, "shared", why, whylen);
}
