/* aosctl backup DIR and aosctl restore DIR --data-dir NEW: an online copy of the embedded
 * cluster (pg_basebackup) and of the files aosd keeps outside it, with a checksummed manifest. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "aos/aos.h"
#include "aosctl.h"
#include "bkman.h"
#include "conf.h"

#define BK_FORMAT BKM_FORMAT
#define BK_MANIFEST BKM_FILE
#define BK_MANIFEST_MAX (64u << 20)
#define BK_DEPTH_MAX 32
#define BK_HASH_LEN BKM_HASH_LEN
#define BK_PATH_MAX 4096
#define PG_SUPERUSER "aos_admin" /* kernel/pgembed.h's PGEM_SUPERUSER */

/* What aosd makes anew at every start, or what is no file's content: never copied. The
 * cluster is copied by pg_basebackup, not file by file. */
static const char *const skip_top[] = {"pg", "pgsock", "run", "control.sock", "aosd.lock",
                                       BK_MANIFEST, NULL};
static const char *const skip_prefix[] = {"aosd.log", "pg.log", NULL};

typedef struct bk {
    ctl_ctx *c;
    json_t *entries;           /* the manifest's "files" */
    uint64_t bytes, nfiles;
    uint64_t done_bytes, done_files; /* progress */
    time_t last_progress;
    int denied;                /* a file could not be read for want of rights */
    char why[512];
} bk;

/* snprintf for messages: a path cut short in a message is fine. */
static void setwhy(char *w, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void setwhy(char *w, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w, cap, fmt, ap);
    va_end(ap);
}

static void progress(bk *b, const char *what, int force)
{
    if (b->c->json)
        return;
    time_t now = time(NULL);
    if (!force && now == b->last_progress)
        return;
    b->last_progress = now;
    fprintf(stderr, "  %s: %llu files, %.1f MB\n", what, (unsigned long long)b->done_files,
            (double)b->done_bytes / 1e6);
}

static const char *user_name(uid_t u, char *buf, size_t cap)
{
    struct passwd *p = getpwuid(u);
    if (p)
        snprintf(buf, cap, "%s", p->pw_name);
    else
        snprintf(buf, cap, "%u", (unsigned)u);
    return buf;
}

static const char *group_name(gid_t g, char *buf, size_t cap)
{
    struct group *p = getgrgid(g);
    if (p)
        snprintf(buf, cap, "%s", p->gr_name);
    else
        snprintf(buf, cap, "%u", (unsigned)g);
    return buf;
}

static void hex(const uint8_t *h, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[h[i] >> 4];
        out[2 * i + 1] = d[h[i] & 15];
    }
    out[2 * n] = 0;
}

/* Copy the open file in to a new file name under dirfd (mode), hashing what is written.
 * in_fd may be -1 when only the hash of name (already there) is wanted. Returns 0 or -1
 * with b->why. */
static int copy_hash(bk *b, int in, int dirfd, const char *name, mode_t mode, char hexout[65],
                     uint64_t *size)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, BK_HASH_LEN);
    int out = -1;
    if (dirfd >= 0) {
        out = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (out < 0) {
            setwhy(b->why, sizeof b->why, "cannot create %s: %s", name, strerror(errno));
            return -1;
        }
    }
    static uint8_t buf[1 << 17];
    uint64_t n = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            setwhy(b->why, sizeof b->why, "reading %s: %s", name, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        crypto_generichash_update(&st, buf, (size_t)r);
        for (ssize_t w = 0; out >= 0 && w < r;) {
            ssize_t k = write(out, buf + w, (size_t)(r - w));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                setwhy(b->why, sizeof b->why, "writing %s: %s", name, strerror(errno));
                goto fail;
            }
            w += k;
        }
        n += (uint64_t)r;
        b->done_bytes += (uint64_t)r;
    }
    if (out >= 0 && (fsync(out) != 0 || close(out) != 0)) {
        out = -1;
        setwhy(b->why, sizeof b->why, "writing %s: %s", name, strerror(errno));
        return -1;
    }
    uint8_t h[BK_HASH_LEN];
    crypto_generichash_final(&st, h, sizeof h);
    hex(h, sizeof h, hexout);
    *size = n;
    return 0;
fail:
    if (out >= 0)
        close(out);
    return -1;
}

static int skipped(const char *rel, int top)
{
    if (!top)
        return 0;
    for (int i = 0; skip_top[i]; i++)
        if (!strcmp(rel, skip_top[i]))
            return 1;
    for (int i = 0; skip_prefix[i]; i++)
        if (!strncmp(rel, skip_prefix[i], strlen(skip_prefix[i])))
            return 1;
    return 0;
}

static void add_entry(bk *b, const char *path, const char *type, const struct stat *st,
                      const char *owner_override, const char *hash, uint64_t size)
{
    char u[64], g[64];
    json_t *e = json_pack("{s:s,s:s,s:I,s:s,s:s}", "path", path, "type", type, "mode",
                          (json_int_t)(st->st_mode & 07777), "owner",
                          owner_override ? owner_override : user_name(st->st_uid, u, sizeof u),
                          "group",
                          owner_override ? owner_override : group_name(st->st_gid, g, sizeof g));
    if (e && hash) {
        json_object_set_new(e, "size", json_integer((json_int_t)size));
        json_object_set_new(e, "blake2b", json_string(hash));
    }
    if (e)
        json_array_append_new(b->entries, e);
}

/* Copy the tree under src (a directory fd in the data dir) into dst (a directory fd in the
 * backup), entry by entry: no symlink followed, only regular files and directories. rel is
 * the path below "files/" for the manifest. */
static int copy_tree(bk *b, int src, int dst, const char *rel, int depth)
{
    if (depth > BK_DEPTH_MAX) {
        setwhy(b->why, sizeof b->why, "%s: deeper than %d levels", rel, BK_DEPTH_MAX);
        return -1;
    }
    int dfd = dup(src);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        setwhy(b->why, sizeof b->why, "cannot list %s: %s", rel[0] ? rel : ".",
                 strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[BK_PATH_MAX];
        if (snprintf(path, sizeof path, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >=
            (int)sizeof path)
            continue;
        if (skipped(path, depth == 0))
            continue;
        struct stat st;
        if (fstatat(src, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue; /* gone since readdir: a file being replaced */
        if (S_ISDIR(st.st_mode)) {
            int s2 = openat(src, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0 && errno == ENOENT)
                continue; /* removed since readdir */
            if (s2 < 0) {
                b->denied = errno == EACCES || errno == EPERM;
                setwhy(b->why, sizeof b->why, "cannot open %s: %s%s", path, strerror(errno),
                       errno == EACCES ? " (the data dir is root's: run aosctl as root)" : "");
                rc = -1;
                break;
            }
            int d2 = -1;
            if (mkdirat(dst, de->d_name, 0700) != 0 ||
                (d2 = openat(dst, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                  O_CLOEXEC)) < 0) {
                setwhy(b->why, sizeof b->why, "cannot make files/%s: %s", path,
                         strerror(errno));
                close(s2);
                rc = -1;
                break;
            }
            add_entry(b, path, "dir", &st, NULL, NULL, 0);
            rc = copy_tree(b, s2, d2, path, depth + 1);
            close(s2);
            close(d2);
        } else if (S_ISREG(st.st_mode)) {
            int in = openat(src, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            if (in < 0 && errno == ENOENT)
                continue; /* replaced or removed since readdir */
            if (in < 0) {
                b->denied = errno == EACCES || errno == EPERM;
                setwhy(b->why, sizeof b->why, "cannot read %s: %s%s", path, strerror(errno),
                       errno == EACCES ? " (the data dir is root's: run aosctl as root)" : "");
                rc = -1;
                break;
            }
            struct stat st2;
            if (fstat(in, &st2) != 0 || !S_ISREG(st2.st_mode)) {
                close(in);
                continue;
            }
            char h[65];
            uint64_t size;
            rc = copy_hash(b, in, dst, de->d_name, 0600, h, &size);
            close(in);
            if (rc) {
                char m[512];
                setwhy(m, sizeof m, "%s", b->why);
                setwhy(b->why, sizeof b->why, "files/%s: %s", path, m);
                break;
            }
            add_entry(b, path, "file", &st2, NULL, h, size);
            b->nfiles++;
            b->bytes += size;
            b->done_files++;
            progress(b, "files", 0);
        }
        /* sockets, FIFOs, devices and symlinks: nothing aosd needs to resume */
    }
    closedir(d);
    return rc;
}

/* Hash every file pg_basebackup wrote under DIR/pg into the manifest. */
static int hash_tree(bk *b, int dirfd, const char *rel, int depth)
{
    if (depth > BK_DEPTH_MAX)
        return -1;
    int dfd = dup(dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        setwhy(b->why, sizeof b->why, "cannot list %s: %s", rel, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char path[BK_PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", rel, de->d_name) >= (int)sizeof path)
            continue;
        struct stat st;
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int s2 = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0) {
                setwhy(b->why, sizeof b->why, "cannot open %s: %s", path, strerror(errno));
                rc = -1;
                break;
            }
            add_entry(b, path, "dir", &st, "postgres", NULL, 0);
            rc = hash_tree(b, s2, path, depth + 1);
            close(s2);
        } else if (S_ISREG(st.st_mode)) {
            int in = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            char h[65];
            uint64_t size;
            if (in < 0 || copy_hash(b, in, -1, path, 0, h, &size)) {
                if (in < 0)
                    setwhy(b->why, sizeof b->why, "cannot open %s: %s", path,
                             strerror(errno));
                if (in >= 0)
                    close(in);
                rc = -1;
                break;
            }
            close(in);
            add_entry(b, path, "file", &st, "postgres", h, size);
            b->nfiles++;
            b->bytes += size;
            b->done_files++;
            progress(b, "checksums of the cluster", 0);
        } else {
            setwhy(b->why, sizeof b->why, "%s: not a file or a directory", path);
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

/* Run argv, its stdout and stderr going to ours unless quiet (--json: one document only on
 * stdout, so pg_basebackup's output goes to stderr). Returns its exit status, -1. */
static int run_prog(char *const argv[], int quiet)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (quiet) {
            int nul = open("/dev/null", O_WRONLY);
            if (nul >= 0) {
                dup2(nul, 1);
                dup2(nul, 2);
            }
        } else {
            dup2(2, 1);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int dir_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 1 : -1;
    struct dirent *de;
    int empty = 1;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = 0;
    closedir(d);
    return empty;
}

static int write_manifest(bk *b, int outfd, json_t *m)
{
    char *t = json_dumps(m, JSON_INDENT(1) | JSON_SORT_KEYS);
    if (!t) {
        setwhy(b->why, sizeof b->why, "out of memory");
        return -1;
    }
    size_t len = strlen(t);
    int fd = openat(outfd, BK_MANIFEST ".new", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, t, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
             fsync(fd) == 0;
    if (fd >= 0)
        close(fd);
    free(t);
    if (!ok || renameat(outfd, BK_MANIFEST ".new", outfd, BK_MANIFEST) != 0 || fsync(outfd)) {
        setwhy(b->why, sizeof b->why, "cannot write %s: %s", BK_MANIFEST, strerror(errno));
        return -1;
    }
    return 0;
}

static int cmd_backup(ctl_ctx *c, const ctl_vals *v)
{
    const char *out = ctl_str(v, "DIR");
    char dd[BK_PATH_MAX];
    if (aos_data_dir(c->data_dir, dd, sizeof dd) != AOS_OK)
        return ctl_fail(c, AOS_ERR_USAGE, "backup: no data dir (--data-dir, $AOS_DATA_DIR)");
    if (sodium_init() < 0)
        return ctl_fail(c, AOS_ERR_INTERNAL, "backup: libsodium does not initialise");
    int src = open(dd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src < 0)
        return ctl_fail(c, errno == EACCES ? AOS_ERR_REFUSED : AOS_ERR_NOT_FOUND,
                        "backup: cannot open the data dir %s: %s", dd, strerror(errno));
    /* the same aos.yaml aosd reads (the environment first, as aosd does) */
    char cpath[BK_PATH_MAX], why[512], dsn_note[256] = "";
    const char *envdsn = getenv("AOS_PG_DSN"), *envbin = getenv("AOS_PG_BINDIR");
    int external = envdsn && *envdsn;
    char pgbin[BK_PATH_MAX];
    snprintf(pgbin, sizeof pgbin, "%s", envbin && *envbin ? envbin : "/usr/lib/postgresql/15/bin");
    conf *cf = NULL;
    if (conf_default_path(dd, cpath, sizeof cpath) == AOS_OK &&
        conf_load(cpath, 0, &cf, why, sizeof why) == AOS_OK && cf) {
        const conf_kernel *k = conf_kernel_settings(cf);
        if (k && k->has_pg_dsn && k->pg_dsn[0])
            external = 1;
        if (k && k->has_pg_bin_dir && !(envbin && *envbin))
            snprintf(pgbin, sizeof pgbin, "%s", k->pg_bin_dir);
        conf_free(cf);
    } else if (cf) {
        conf_free(cf);
    }
    struct stat pst;
    if (!external && fstatat(src, "pg/PG_VERSION", &pst, AT_SYMLINK_NOFOLLOW) != 0)
        external = 1; /* no embedded cluster in this data dir */
    int e = dir_empty(out);
    if (e != 1) {
        close(src);
        return ctl_fail(c, e < 0 ? AOS_ERR_IO : AOS_ERR_CONFLICT,
                        "backup: %s %s: give a new or empty directory", out,
                        e < 0 ? strerror(errno) : "is not empty");
    }
    if (mkdir(out, 0700) != 0 && errno != EEXIST) {
        close(src);
        return ctl_fail(c, AOS_ERR_IO, "backup: mkdir %s: %s", out, strerror(errno));
    }
    int outfd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (outfd < 0 || fchmod(outfd, 0700) != 0) {
        close(src);
        if (outfd >= 0)
            close(outfd);
        return ctl_fail(c, AOS_ERR_IO, "backup: %s: %s", out, strerror(errno));
    }
    /* a backup inside the data dir would copy itself */
    char rout[BK_PATH_MAX], rdd[BK_PATH_MAX];
    if (realpath(out, rout) && realpath(dd, rdd) && !strncmp(rout, rdd, strlen(rdd)) &&
        (rout[strlen(rdd)] == '/' || !rout[strlen(rdd)])) {
        close(src);
        close(outfd);
        rmdir(out);
        return ctl_fail(c, AOS_ERR_USAGE, "backup: %s is inside the data dir %s: give a "
                        "directory outside it", out, dd);
    }
    bk b = {.c = c, .entries = json_array()};
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    int rc = 0, code = AOS_ERR_INTERNAL;
    /* 1. the cluster, online: pg_basebackup streams the WAL written while it copies, so the
     * copy is consistent at its end point whatever the writers do meanwhile */
    char pg_owner[64] = "aos-pg";
    if (!external) {
        user_name(pst.st_uid, pg_owner, sizeof pg_owner);
        if (!c->json)
            fprintf(stderr, "aosctl backup: the cluster (pg_basebackup, WAL streamed)\n");
        char bin[BK_PATH_MAX + 32], host[BK_PATH_MAX + 16], dst[BK_PATH_MAX + 16];
        snprintf(bin, sizeof bin, "%s/pg_basebackup", pgbin);
        snprintf(host, sizeof host, "%s/pgsock", dd);
        snprintf(dst, sizeof dst, "%s/pg", out);
        char *argv[] = {bin, "-h", host, "-U", PG_SUPERUSER, "-D", dst, "-Fp", "-X", "stream",
                        "-c", "fast", "--no-password", c->json ? NULL : "-P", NULL};
        int st = run_prog(argv, c->json);
        if (st != 0) {
            setwhy(b.why, sizeof b.why, "pg_basebackup %s (status %d)%s",
                     st == 127 ? "could not be run" : "failed", st,
                     st == 127 ? ": install postgresql-15 or set pg_bin_dir"
                               : ": is aosd running? (the cluster must be up; see its "
                                 "output above)");
            code = AOS_ERR_UNAVAILABLE;
            rc = -1;
        }
        int pgfd = rc ? -1 : openat(outfd, "pg", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (!rc && pgfd < 0) {
            setwhy(b.why, sizeof b.why, "pg_basebackup wrote no %s/pg", out);
            rc = -1;
        }
        if (!rc) {
            struct stat st2;
            fstat(pgfd, &st2);
            add_entry(&b, "pg", "dir", &st2, "postgres", NULL, 0);
            rc = hash_tree(&b, pgfd, "pg", 0);
            close(pgfd);
        }
        progress(&b, "cluster", 1);
    } else {
        snprintf(dsn_note, sizeof dsn_note,
                 "PostgreSQL is external (pg_dsn): this backup holds the files outside it "
                 "only; back the database up with its own tools (pg_dump, pg_basebackup)");
        if (!c->json)
            fprintf(stderr, "aosctl backup: %s\n", dsn_note);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* 2. the files aosd keeps outside the cluster: aos.yaml, the audit key and heads,
     * agents' workspaces and deployments, the scheduler's state, each server's dir */
    if (!rc) {
        if (!c->json)
            fprintf(stderr, "aosctl backup: the files outside the cluster\n");
        int fdst = -1;
        if (mkdirat(outfd, "files", 0700) != 0 ||
            (fdst = openat(outfd, "files", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
            setwhy(b.why, sizeof b.why, "cannot make %s/files: %s", out, strerror(errno));
            rc = -1;
        } else {
            uint64_t f0 = b.done_files, b0 = b.done_bytes;
            b.done_files = b.done_bytes = 0;
            rc = copy_tree(&b, src, fdst, "", 0);
            progress(&b, "files", 1);
            b.done_files += f0;
            b.done_bytes += b0;
            fsync(fdst);
            close(fdst);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t2);
    close(src);
    if (!rc) {
        json_t *m = json_pack("{s:i,s:s,s:s,s:s,s:s,s:O,s:I,s:I}", "format", BK_FORMAT,
                              "aos_version", AOS_VERSION, "created", created, "data_dir", dd,
                              "postgres", external ? "external" : "pg_basebackup", "files",
                              b.entries, "file_count", (json_int_t)b.nfiles, "bytes",
                              (json_int_t)b.bytes);
        if (m && dsn_note[0])
            json_object_set_new(m, "note", json_string(dsn_note));
        if (m && !external)
            json_object_set_new(m, "pg_owner", json_string(pg_owner));
        rc = m ? write_manifest(&b, outfd, m) : -1;
        json_decref(m);
    }
    close(outfd);
    double pg_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    double f_s = (double)(t2.tv_sec - t1.tv_sec) + (double)(t2.tv_nsec - t1.tv_nsec) / 1e9;
    if (rc) {
        json_decref(b.entries);
        if (b.denied)
            code = AOS_ERR_REFUSED;
        return ctl_fail(c, code, "backup: %s (the partial copy in %s is of no use: remove it)",
                        b.why[0] ? b.why : "failed", out);
    }
    json_decref(b.entries);
    if (c->json) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:f,s:f}", "dir", out, "created", created,
                              "postgres", external ? "external" : "pg_basebackup", "files",
                              (json_int_t)b.nfiles, "bytes", (json_int_t)b.bytes, "cluster_s",
                              pg_s, "files_s", f_s);
        if (o && dsn_note[0])
            json_object_set_new(o, "note", json_string(dsn_note));
        return ctl_print_json(c, o);
    }
    printf("backup of %s in %s: %llu files, %.1f MB (cluster %.2f s, files %.2f s)%s%s\n", dd,
           out, (unsigned long long)b.nfiles, (double)b.bytes / 1e6, pg_s, f_s,
           dsn_note[0] ? "\n" : "", dsn_note);
    return 0;
}

/* ---- restore ------------------------------------------------------------------------ */

static int open_under(int root, const char *rel, int flags)
{
    /* each component without following a symlink */
    char p[BK_PATH_MAX];
    snprintf(p, sizeof p, "%s", rel);
    int fd = dup(root);
    char *s = p;
    for (;;) {
        char *slash = strchr(s, '/');
        if (slash)
            *slash = 0;
        int nfd = openat(fd, s, slash ? O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                                      : flags | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        close(fd);
        if (nfd < 0) {
            errno = err;
            return -1;
        }
        fd = nfd;
        if (!slash)
            return fd;
        s = slash + 1;
    }
}

static int ids_of(const bkm_entry *r, const char *pg_owner, uid_t *u, gid_t *g, char *why,
                  size_t whylen)
{
    if (geteuid() != 0) { /* a data dir of one user: everything is ours */
        *u = geteuid();
        *g = getegid();
        return 0;
    }
    const char *un = bkm_is_pg(r) ? pg_owner : r->owner;
    struct passwd *pw = getpwnam(un);
    if (!pw) {
        char *end;
        unsigned long n = strtoul(un, &end, 10);
        if (*un && !*end) {
            *u = (uid_t)n;
        } else {
            snprintf(why, whylen, "%s is owned by user %s, who does not exist here (run "
                     "tools/deps.sh)", r->path, un);
            return -1;
        }
    } else {
        *u = pw->pw_uid;
    }
    if (bkm_is_pg(r)) {
        *g = pw ? pw->pw_gid : (gid_t)*u;
        return 0;
    }
    struct group *gr = getgrnam(r->group);
    if (gr) {
        *g = gr->gr_gid;
    } else {
        char *end;
        unsigned long n = strtoul(r->group, &end, 10);
        if (!*r->group || *end) {
            snprintf(why, whylen, "%s is of group %s, which does not exist here", r->path,
                     r->group);
            return -1;
        }
        *g = (gid_t)n;
    }
    return 0;
}

static int cmd_restore(ctl_ctx *c, const ctl_vals *v)
{
    const char *in = ctl_str(v, "DIR");
    if (!c->data_dir)
        return ctl_fail(c, AOS_ERR_USAGE, "restore: say where: --data-dir NEW (a new or empty "
                        "directory; aosd is then started with --data-dir NEW)");
    const char *nd = c->data_dir;
    if (sodium_init() < 0)
        return ctl_fail(c, AOS_ERR_INTERNAL, "restore: libsodium does not initialise");
    int bfd = open(in, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0)
        return ctl_fail(c, AOS_ERR_NOT_FOUND, "restore: %s: %s", in, strerror(errno));
    bk b = {.c = c};
    json_t *m = NULL;
    int code = AOS_ERR_REFUSED, rc = -1, nfd = -1;
    /* 1. the manifest, then every checksum, before anything is written */
    int mfd = openat(bfd, BK_MANIFEST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat mst;
    if (mfd < 0 || fstat(mfd, &mst) != 0 || !S_ISREG(mst.st_mode) ||
        (uint64_t)mst.st_size > BK_MANIFEST_MAX) {
        setwhy(b.why, sizeof b.why, "%s/%s: %s", in, BK_MANIFEST,
                 mfd < 0 ? strerror(errno) : "not a file of a sensible size");
        code = AOS_ERR_NOT_FOUND;
        goto out;
    }
    json_error_t je;
    m = json_loadfd(mfd, JSON_REJECT_DUPLICATES, &je);
    if (!m || !json_is_object(m)) {
        setwhy(b.why, sizeof b.why, "%s/%s is not a manifest: %s (line %d)", in, BK_MANIFEST,
                 m ? "not an object" : je.text, je.line);
        goto out;
    }
    json_t *files = json_object_get(m, "files");
    const char *pgmode = json_string_value(json_object_get(m, "postgres"));
    const char *pg_owner = json_string_value(json_object_get(m, "pg_owner"));
    char mwhy[400];
    if (bkm_check(m, mwhy, sizeof mwhy)) {
        setwhy(b.why, sizeof b.why, "%s/%s: %s", in, BK_MANIFEST, mwhy);
        goto out;
    }
    size_t n = json_array_size(files);
    if (!c->json)
        fprintf(stderr, "aosctl restore: checking %zu entries of %s\n", n, in);
    for (size_t i = 0; i < n; i++) {
        bkm_entry r;
        if (bkm_entry_get(json_array_get(files, i), &r, b.why, sizeof b.why, i))
            goto out;
        if (strcmp(r.type, "file"))
            continue;
        char bp[BK_PATH_MAX + 8];
        bkm_backup_path(&r, bp, sizeof bp);
        int fd = open_under(bfd, bp, O_RDONLY | O_NONBLOCK);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            setwhy(b.why, sizeof b.why, "%s/%s is missing from the backup%s%s", in, bp,
                     fd < 0 ? ": " : "", fd < 0 ? strerror(errno) : " (not a file)");
            if (fd >= 0)
                close(fd);
            goto out;
        }
        char h[65];
        uint64_t size;
        int k = copy_hash(&b, fd, -1, bp, 0, h, &size);
        close(fd);
        if (k)
            goto out;
        if (size != r.size || strcmp(h, r.hash)) {
            setwhy(b.why, sizeof b.why, "%s/%s does not match the manifest (%s): the backup "
                     "is damaged or was changed; nothing restored", in, bp,
                     size != r.size ? "its size differs: truncated or extended"
                                    : "its BLAKE2b checksum differs");
            goto out;
        }
        b.done_files++;
        progress(&b, "checked", 0);
    }
    progress(&b, "checked", 1);
    /* 2. the new data dir: new or empty, never over an existing one */
    int e = dir_empty(nd);
    if (e != 1) {
        setwhy(b.why, sizeof b.why, "%s %s: restore into a new or empty directory", nd,
                 e < 0 ? strerror(errno) : "is not empty");
        code = e < 0 ? AOS_ERR_IO : AOS_ERR_CONFLICT;
        goto out;
    }
    if (mkdir(nd, 0755) != 0 && errno != EEXIST) {
        setwhy(b.why, sizeof b.why, "mkdir %s: %s", nd, strerror(errno));
        code = AOS_ERR_IO;
        goto out;
    }
    nfd = open(nd, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (nfd < 0 || fchmod(nfd, geteuid() == 0 ? 0755 : 0700) != 0) {
        setwhy(b.why, sizeof b.why, "%s: %s", nd, strerror(errno));
        code = AOS_ERR_IO;
        goto out;
    }
    /* 3. copy: directories made root's 0700 first, given to their owner once filled (the
     * manifest lists a directory before what is in it, so the second pass goes backward) */
    if (!c->json)
        fprintf(stderr, "aosctl restore: writing %s\n", nd);
    b.done_files = b.done_bytes = 0;
    code = AOS_ERR_IO;
    for (size_t i = 0; i < n; i++) {
        bkm_entry r;
        bkm_entry_get(json_array_get(files, i), &r, b.why, sizeof b.why, i);
        char parent[BK_PATH_MAX];
        snprintf(parent, sizeof parent, "%s", r.path);
        char *slash = strrchr(parent, '/');
        const char *name = slash ? slash + 1 : parent;
        if (slash)
            *slash = 0;
        int pfd = slash ? open_under(nfd, parent, O_RDONLY | O_DIRECTORY) : dup(nfd);
        if (pfd < 0) {
            setwhy(b.why, sizeof b.why, "%s: its directory is not in the manifest before "
                     "it", r.path);
            code = AOS_ERR_REFUSED;
            goto out;
        }
        if (!strcmp(r.type, "dir")) {
            if (mkdirat(pfd, name, 0700) != 0) {
                setwhy(b.why, sizeof b.why, "mkdir %s/%s: %s", nd, r.path, strerror(errno));
                close(pfd);
                goto out;
            }
            close(pfd);
            continue;
        }
        char bp[BK_PATH_MAX + 8];
        bkm_backup_path(&r, bp, sizeof bp);
        int fd = open_under(bfd, bp, O_RDONLY | O_NONBLOCK);
        char h[65];
        uint64_t size;
        int k = fd < 0 ? -1 : copy_hash(&b, fd, pfd, name, 0600, h, &size);
        if (fd < 0)
            setwhy(b.why, sizeof b.why, "%s: %s", bp, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (!k && (size != r.size || strcmp(h, r.hash))) {
            setwhy(b.why, sizeof b.why, "%s/%s changed while it was restored", in, bp);
            k = -1;
            code = AOS_ERR_REFUSED;
        }
        uid_t u;
        gid_t g;
        mode_t mode = bkm_is_pg(&r) ? 0600 : (mode_t)r.mode;
        if (!k && (ids_of(&r, pg_owner, &u, &g, b.why, sizeof b.why) ||
                   fchownat(pfd, name, u, g, AT_SYMLINK_NOFOLLOW) != 0 ||
                   fchmodat(pfd, name, mode, 0) != 0)) {
            if (!b.why[0])
                setwhy(b.why, sizeof b.why, "%s: %s", r.path, strerror(errno));
            k = -1;
        }
        close(pfd);
        if (k)
            goto out;
        b.done_files++;
        progress(&b, "restored", 0);
    }
    for (size_t i = n; i-- > 0;) {
        bkm_entry r;
        bkm_entry_get(json_array_get(files, i), &r, b.why, sizeof b.why, i);
        if (strcmp(r.type, "dir"))
            continue;
        uid_t u;
        gid_t g;
        /* PostgreSQL wants its data dir 0700 (or 0750) */
        mode_t mode = bkm_is_pg(&r) ? 0700 : (mode_t)r.mode;
        int dfd = open_under(nfd, r.path, O_RDONLY | O_DIRECTORY);
        if (dfd < 0 || ids_of(&r, pg_owner ? pg_owner : "root", &u, &g, b.why, sizeof b.why) ||
            fchown(dfd, u, g) != 0 || fchmod(dfd, mode) != 0 || fsync(dfd) != 0) {
            if (!b.why[0])
                setwhy(b.why, sizeof b.why, "%s: %s", r.path, strerror(errno));
            if (dfd >= 0)
                close(dfd);
            goto out;
        }
        close(dfd);
    }
    progress(&b, "restored", 1);
    if (fsync(nfd) != 0 || syncfs(nfd) != 0) {
        setwhy(b.why, sizeof b.why, "syncing %s: %s", nd, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (mfd >= 0)
        close(mfd);
    close(bfd);
    if (nfd >= 0)
        close(nfd);
    if (rc) {
        json_decref(m);
        return ctl_fail(c, code, "restore: %s", b.why[0] ? b.why : "failed");
    }
    int ext = !strcmp(pgmode, "external");
    const char *note = ext ? "the database is external (pg_dsn): restore it with its own "
                             "tools; only the files outside it were restored"
                           : NULL;
    int ret;
    if (c->json) {
        json_t *o = json_pack("{s:s,s:s,s:I,s:I,s:s}", "dir", in, "data_dir", nd, "files",
                              (json_int_t)b.done_files, "bytes", (json_int_t)b.done_bytes,
                              "postgres", pgmode);
        if (o && note)
            json_object_set_new(o, "note", json_string(note));
        ret = ctl_print_json(c, o);
    } else {
        printf("restored %s into %s: %llu files, %.1f MB; start it with aosd --data-dir %s\n",
               in, nd, (unsigned long long)b.done_files, (double)b.done_bytes / 1e6, nd);
        if (note)
            printf("%s\n", note);
        ret = 0;
    }
    json_decref(m);
    return ret;
}

static const char backup_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"dir\",\"created\",\"postgres\",\"files\",\"bytes\"],\"properties\":{"
    "\"dir\":{\"type\":\"string\"},\"created\":{\"type\":\"string\",\"description\":\"UTC, "
    "ISO 8601\"},\"postgres\":{\"enum\":[\"pg_basebackup\",\"external\"]},\"files\":{\"type\":"
    "\"integer\",\"description\":\"files in the backup, each with its BLAKE2b checksum in "
    "manifest.json\"},\"bytes\":{\"type\":\"integer\"},\"cluster_s\":{\"type\":\"number\"},"
    "\"files_s\":{\"type\":\"number\"},\"note\":{\"type\":\"string\",\"description\":\"with an "
    "external PostgreSQL: what the backup does not hold\"}}}";

static const char restore_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"dir\",\"data_dir\",\"files\",\"bytes\",\"postgres\"],\"properties\":{"
    "\"dir\":{\"type\":\"string\"},\"data_dir\":{\"type\":\"string\"},\"files\":{\"type\":"
    "\"integer\"},\"bytes\":{\"type\":\"integer\"},\"postgres\":{\"enum\":[\"pg_basebackup\","
    "\"external\"]},\"note\":{\"type\":\"string\"}}}";

static const ctl_arg backup_args[] = {
    {.name = "DIR", .required = 1, .summary = "a new or empty directory for the backup"},
};

static const ctl_arg restore_args[] = {
    {.name = "DIR", .required = 1, .summary = "a backup made by aosctl backup; with "
     "--data-dir NEW, a new or empty directory to restore into"},
};

static const ctl_cmd backup_cmds[] = {
    {"backup", "an online backup of the data dir into DIR: the embedded cluster "
     "(pg_basebackup), aos.yaml, the audit key and heads, workspaces, deployments, the "
     "scheduler's state; manifest.json holds every file's BLAKE2b checksum",
     CTL_ARGS(backup_args), backup_out, cmd_backup},
    {"restore", "check every checksum of backup DIR, then bring it back into --data-dir NEW "
     "(new or empty), owners and modes as aosd expects", CTL_ARGS(restore_args), restore_out,
     cmd_restore},
};

const ctl_group ctl_group_backup = {backup_cmds, sizeof backup_cmds / sizeof backup_cmds[0]};
