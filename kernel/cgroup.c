/* cgroup v2 delegation for aosd (see cgroup.h): find the unified hierarchy, put aosd in a
 * leaf so controllers can be enabled above it, and give aos-tool a subtree of its own. */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "aos/readall.h"

#define CG_NAMES_MAX 16
#define CG_DEPTH_MAX 32

/* The controllers a delegated child can use to bound a tool run; io is blkio in v1. */
static const char *const cg_wanted[] = {"pids", "memory", "cpu", "io"};
static const char *const cg_wanted_v1[] = {"pids", "memory", "cpu", "blkio"};
#define CG_NWANTED (sizeof cg_wanted / sizeof cg_wanted[0])

/* One aosd, one state; the mutex because supervisor threads may delegate concurrently. */
static pthread_mutex_t cg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int done;              /* cg_setup ran */
    int basefd;            /* B, the cgroup whose children aosd makes; -1: none */
    char base[512];        /* B's path */
    char none[224];        /* why there is no B */
    char summary[512];     /* what cg_setup returns in why */
    char ctl[128];         /* B's cgroup.subtree_control after setup */
    char ctl_note[160];    /* why some wanted controller is not in ctl */
    char names[CG_NAMES_MAX][64];
    size_t nnames;
    char v1dirs[2 * CG_NAMES_MAX][600]; /* the v1 cgroups cg_delegate_v1 made */
    size_t nv1;
} cg = {.basefd = -1};

/* Append to a NUL-terminated buffer, truncating. */
static void cat(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *buf, size_t len, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, len - n, fmt, ap);
    va_end(ap);
}

/* A whole /proc file (8 MiB at most). Caller frees. */
static char *read_proc(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = aos_read_all(fd, 8u << 20, NULL);
    int e = errno;
    close(fd);
    errno = e;
    return buf;
}

/* A small cgroup file below dirfd, trailing newline stripped. 0 or an errno. */
static int read_small(int dirfd, const char *name, char *buf, size_t len)
{
    buf[0] = '\0';
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t r;
    do
        r = read(fd, buf, len - 1);
    while (r < 0 && errno == EINTR);
    int e = r < 0 ? errno : 0;
    close(fd);
    if (r < 0)
        return e;
    buf[r] = '\0';
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' '))
        buf[--r] = '\0';
    return 0;
}

/* One write into a cgroup control file below dirfd: the kernel acts on each write(2) as a
 * whole, so one call per request. 0 or an errno. */
static int write_small(int dirfd, const char *name, const char *s)
{
    int fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t n = strlen(s);
    ssize_t w;
    do
        w = write(fd, s, n);
    while (w < 0 && errno == EINTR);
    int e = w < 0 ? errno : (size_t)w != n ? EIO : 0;
    close(fd);
    return e;
}

/* Is tok one of the sep-separated words of list? */
static int has_word(const char *list, const char *tok, char sep)
{
    size_t tl = strlen(tok);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, sep);
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == tl && memcmp(p, tok, tl) == 0)
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* One mountinfo line split into the fields cg needs (pointers into line, unescaped). */
typedef struct mi_line {
    const char *root, *mnt, *opts, *fstype, *superopts;
} mi_line;

/* Split line in place: "id parent maj:min root mnt opts [optional...] - fstype src super". */
static int mi_split(char *line, mi_line *m)
{
    char *f[64];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(line, " ", &save); t && n < 64;
         t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    int dash = -1;
    for (int i = 6; i < n; i++)
        if (strcmp(f[i], "-") == 0) {
            dash = i;
            break;
        }
    if (dash < 0 || dash + 1 >= n)
        return -1;
    unescape(f[3]);
    unescape(f[4]);
    m->root = f[3];
    m->mnt = f[4];
    m->opts = f[5];
    m->fstype = f[dash + 1];
    m->superopts = dash + 3 < n ? f[dash + 3] : "";
    return 0;
}

aos_err cg_locate(const char *mountinfo, const char *self_cgroup, char *mnt, size_t mntlen,
                  char *rel, size_t rellen, int *readonly, char *why, size_t whylen)
{
    mnt[0] = rel[0] = '\0';
    *readonly = 0;
    /* "0::/path" is the unified hierarchy's line; v1 lines have a number and names. */
    const char *cgp = NULL;
    size_t cgl = 0;
    for (const char *p = self_cgroup; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l >= 3 && memcmp(p, "0::", 3) == 0) {
            cgp = p + 3;
            cgl = l - 3;
        }
        if (!e)
            break;
        p = e + 1;
    }
    if (!cgp) {
        snprintf(why, whylen, "aosd is in no cgroup v2 hierarchy (cgroup v1 only)");
        return AOS_ERR_NOT_FOUND;
    }
    char path[1024];
    if (cgl >= sizeof path || cgl == 0 || cgp[0] != '/') {
        snprintf(why, whylen, "cannot read aosd's cgroup from /proc/self/cgroup");
        return AOS_ERR_NOT_FOUND;
    }
    memcpy(path, cgp, cgl);
    path[cgl] = '\0';
    /* A cgroup outside our cgroup namespace shows as /../..: there is no path to it. */
    if (strstr(path, "/..") || strstr(path, " (deleted)")) {
        snprintf(why, whylen, "aosd's cgroup %.200s is not reachable from its cgroup namespace",
                 path);
        return AOS_ERR_NOT_FOUND;
    }

    char *mi = strdup(mountinfo ? mountinfo : "");
    if (!mi) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    int seen = 0, foreign = 0, best = 0;
    for (char *save = NULL, *line = strtok_r(mi, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        mi_line m;
        if (mi_split(line, &m) != 0 || strcmp(m.fstype, "cgroup2") != 0)
            continue;
        seen = 1;
        const char *sub;
        size_t rl = strlen(m.root);
        if (strcmp(m.root, "/") == 0)
            sub = path;
        else if (strncmp(path, m.root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0'))
            sub = path + rl;
        else {
            /* a bind mount of another part of the tree, or (root "/..") a mount made in
             * another cgroup namespace */
            foreign |= strncmp(m.root, "/..", 3) == 0;
            continue;
        }
        /* Prefer the usual place; for one mount point the later line is the one on top. */
        int score = strncmp(m.mnt, "/sys/fs/cgroup", 14) == 0 ? 2 : 1;
        if (score < best || (score == best && strcmp(m.mnt, mnt) != 0))
            continue;
        if (strlen(m.mnt) >= mntlen || strlen(sub) >= rellen)
            continue;
        best = score;
        snprintf(mnt, mntlen, "%s", m.mnt);
        snprintf(rel, rellen, "%s", strcmp(sub, "/") == 0 ? "" : sub);
        *readonly = has_word(m.opts, "ro", ',') || has_word(m.superopts, "ro", ',');
    }
    free(mi);
    if (!best) {
        snprintf(why, whylen,
                 !seen     ? "no cgroup2 file system is mounted (cgroup v1 only)%.0s"
                 : foreign ? "aosd's cgroup %.200s is below no visible cgroup2 mount (the mount "
                             "is from another cgroup namespace: mount cgroup2 in this one)"
                           : "aosd's cgroup %.200s is below no visible cgroup2 mount",
                 path);
        return AOS_ERR_NOT_FOUND;
    }
    return AOS_OK;
}

/* Why a wanted controller is missing from the unified tree: on a hybrid host the v1
 * hierarchies hold it, and a controller can be bound to one hierarchy only. */
static int held_by_v1(const char *mountinfo, const char *v1name)
{
    char *mi = strdup(mountinfo ? mountinfo : "");
    int held = 0;
    for (char *save = NULL, *line = mi ? strtok_r(mi, "\n", &save) : NULL; line && !held;
         line = strtok_r(NULL, "\n", &save)) {
        mi_line m;
        if (mi_split(line, &m) == 0 && strcmp(m.fstype, "cgroup") == 0 &&
            has_word(m.superopts, v1name, ','))
            held = 1;
    }
    free(mi);
    return held;
}

/* Enable each wanted controller in dirfd's cgroup.subtree_control on its own, so one the
 * kernel refuses (cpu with a realtime task, EBUSY for internal processes) costs only
 * itself. Failures and absences go to note. */
static void enable_controllers(int dirfd, const char *mountinfo, char *note, size_t notelen)
{
    char avail[256], on[256];
    read_small(dirfd, "cgroup.controllers", avail, sizeof avail);
    read_small(dirfd, "cgroup.subtree_control", on, sizeof on);
    char v1[64] = "", absent[64] = "";
    for (size_t i = 0; i < CG_NWANTED; i++) {
        if (has_word(on, cg_wanted[i], ' '))
            continue;
        if (!has_word(avail, cg_wanted[i], ' ')) {
            if (held_by_v1(mountinfo, cg_wanted_v1[i]))
                cat(v1, sizeof v1, "%s%s", v1[0] ? " " : "", cg_wanted[i]);
            else
                cat(absent, sizeof absent, "%s%s", absent[0] ? " " : "", cg_wanted[i]);
            continue;
        }
        char req[16];
        snprintf(req, sizeof req, "+%s", cg_wanted[i]);
        int e = write_small(dirfd, "cgroup.subtree_control", req);
        if (e)
            cat(note, notelen, "%s%s: %s%s", note[0] ? "; " : "", cg_wanted[i], strerror(e),
                e == EBUSY ? " (other processes in that cgroup)" : "");
    }
    if (v1[0])
        cat(note, notelen, "%s%s held by cgroup v1", note[0] ? "; " : "", v1);
    if (absent[0])
        cat(note, notelen, "%s%s not offered by the parent", note[0] ? "; " : "", absent);
}

/* "why not" for a failed mkdir or open in the cgroup tree. */
static void fail_text(char *buf, size_t len, const char *what, const char *path, int e)
{
    if (e == EROFS)
        snprintf(buf, len, "%.200s is read-only", path);
    else if (e == EACCES || e == EPERM)
        snprintf(buf, len, "%s %.180s: %s (not delegated to aosd)", what, path, strerror(e));
    else
        snprintf(buf, len, "%s %.180s: %s", what, path, strerror(e));
}

/* mkdir + open a cgroup directory below dirfd, reusing one left by an earlier aosd. */
static int cg_mkdir(int dirfd, const char *name, int *err)
{
    if (mkdirat(dirfd, name, 0755) != 0 && errno != EEXIST) {
        *err = errno;
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        *err = errno == ELOOP ? ENOTDIR : errno;
    /* 0755 whatever aosd's umask (077): the delegated child must be able to walk down to
     * its own cgroup */
    else if (fchmod(fd, 0755) != 0)
        *err = errno;
    return fd;
}

static int rm_tree(int parent, const char *name, int depth);

static void do_setup(void)
{
    char *mi = read_proc("/proc/self/mountinfo"), *self = read_proc("/proc/self/cgroup");
    char mnt[256], rel[512], why[224];
    int ro = 0, mntfd = -1, pfd = -1, leaffd = -1;
    if (!mi || !self) {
        snprintf(cg.none, sizeof cg.none, "cannot read /proc/self/%s: %s",
                 !mi ? "mountinfo" : "cgroup", strerror(errno));
        goto out;
    }
    if (cg_locate(mi, self, mnt, sizeof mnt, rel, sizeof rel, &ro, why, sizeof why) != AOS_OK) {
        snprintf(cg.none, sizeof cg.none, "%s", why);
        goto out;
    }
    if (ro) {
        snprintf(cg.none, sizeof cg.none, "%.200s is read-only", mnt);
        goto out;
    }
    /* Our own leaf from an earlier start (aosd re-run from a process that stayed there):
     * the cgroup we manage is its parent, not a new one below it. */
    size_t rl = strlen(rel);
    if (rl >= 5 && strcmp(rel + rl - 5, "/aosd") == 0)
        rel[rl - 5] = '\0';

    mntfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct statfs sfs;
    if (mntfd < 0 || fstatfs(mntfd, &sfs) != 0 || sfs.f_type != CGROUP2_SUPER_MAGIC) {
        snprintf(cg.none, sizeof cg.none, "%.180s: %s", mnt,
                 mntfd < 0 ? strerror(errno) : "not a cgroup2 file system");
        goto out;
    }
    /* Walk down to P one component at a time: no symlink, no path looked up as a whole. */
    pfd = dup(mntfd);
    char walk[512];
    snprintf(walk, sizeof walk, "%s", rel);
    for (char *save = NULL, *c = strtok_r(walk, "/", &save); c && pfd >= 0;
         c = strtok_r(NULL, "/", &save)) {
        int nfd = openat(pfd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0)
            snprintf(cg.none, sizeof cg.none, "open %.100s%.100s: %s", mnt, rel,
                     strerror(errno));
        close(pfd);
        pfd = nfd;
    }
    if (pfd < 0) {
        if (!cg.none[0])
            snprintf(cg.none, sizeof cg.none, "dup: %s", strerror(errno));
        goto out;
    }
    char ppath[512];
    snprintf(ppath, sizeof ppath, "%.255s%.255s", mnt, rel);

    /* The host's root cgroup (no cgroup.type there) may hold processes and controllers at
     * once, but its children are everyone's: aosd makes one of its own, P/aos, to be B. */
    char note[160] = "";
    struct stat st;
    int e = 0;
    if (fstatat(pfd, "cgroup.type", &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
        enable_controllers(pfd, mi, note, sizeof note);
        int bfd = cg_mkdir(pfd, "aos", &e);
        snprintf(cg.base, sizeof cg.base, "%.500s/aos", strcmp(ppath, "/") ? ppath : "");
        if (bfd < 0) {
            fail_text(cg.none, sizeof cg.none, "mkdir", cg.base, e);
            goto out;
        }
        close(pfd);
        pfd = bfd;
        note[0] = '\0'; /* B's own attempt below says what B got */
    } else {
        snprintf(cg.base, sizeof cg.base, "%s", ppath);
    }

    /* No internal processes: controllers can be enabled in B only once B holds none, so
     * aosd (the whole process: cgroup.procs, not one thread) moves to B/aosd first. */
    leaffd = cg_mkdir(pfd, "aosd", &e);
    if (leaffd < 0) {
        char p[560];
        snprintf(p, sizeof p, "%.500s/aosd", cg.base);
        fail_text(cg.none, sizeof cg.none, "mkdir", p, e);
        goto out;
    }
    char pid[24], moved[200] = "";
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    int mv = write_small(leaffd, "cgroup.procs", pid);
    if (mv)
        snprintf(moved, sizeof moved, "; aosd stays in %.120s (move: %s)", cg.base,
                 strerror(mv));
    else
        snprintf(moved, sizeof moved, "; aosd in aosd/");
    enable_controllers(pfd, mi, note, sizeof note);
    read_small(pfd, "cgroup.subtree_control", cg.ctl, sizeof cg.ctl);
    snprintf(cg.ctl_note, sizeof cg.ctl_note, "%s", note);
    cg.basefd = pfd;
    pfd = -1;
    snprintf(cg.summary, sizeof cg.summary, "cgroup v2 %.200s; controllers: %s%s%s%s",
             cg.base, cg.ctl[0] ? cg.ctl : "none", note[0] ? " (" : "", note,
             note[0] ? ")" : "");
    cat(cg.summary, sizeof cg.summary, "%s", moved);
out:
    if (cg.basefd < 0)
        snprintf(cg.summary, sizeof cg.summary, "none: %s", cg.none);
    if (leaffd >= 0)
        close(leaffd);
    if (pfd >= 0)
        close(pfd);
    if (mntfd >= 0)
        close(mntfd);
    free(mi);
    free(self);
}

aos_err cg_setup(char *why, size_t whylen)
{
    pthread_mutex_lock(&cg_mu);
    if (!cg.done) {
        cg.done = 1;
        do_setup();
    }
    snprintf(why, whylen, "%s", cg.summary);
    pthread_mutex_unlock(&cg_mu);
    return AOS_OK;
}

void cg_delegate(const char *name, uid_t uid, gid_t gid, cg_deleg *out)
{
    memset(out, 0, sizeof *out);
    out->procs_fd = -1;
    /* One component, and none the kernel or aosd uses: with no dot it cannot collide with
     * an interface file (cgroup.*, memory.max...); "aosd" is aosd's own leaf. */
    if (!name || !name[0] || strlen(name) >= sizeof cg.names[0] || strchr(name, '/') ||
        strchr(name, '.') || strchr(name, '\n') || strcmp(name, "aosd") == 0) {
        snprintf(out->why, sizeof out->why, "none: invalid cgroup name");
        return;
    }
    pthread_mutex_lock(&cg_mu);
    if (cg.basefd < 0) {
        snprintf(out->why, sizeof out->why, "none: %s",
                 cg.done ? cg.none : "cg_setup was not called");
        pthread_mutex_unlock(&cg_mu);
        return;
    }
    char path[sizeof out->path];
    snprintf(path, sizeof path, "%.440s/%s", cg.base, name);
    /* Recreate when the old one is empty: a restarted child finds no stale sub-cgroups and
     * no controllers enabled in its subtree_control (which would make the kernel refuse the
     * join with EBUSY, no internal processes). Still in use: reused as it is. */
    rm_tree(cg.basefd, name, 0);
    int e = 0, dfd = cg_mkdir(cg.basefd, name, &e);
    if (dfd < 0) {
        char t[224];
        fail_text(t, sizeof t, "mkdir", path, e);
        snprintf(out->why, sizeof out->why, "none: %s", t);
        pthread_mutex_unlock(&cg_mu);
        return;
    }
    size_t i;
    for (i = 0; i < cg.nnames && strcmp(cg.names[i], name) != 0; i++)
        ;
    if (i == cg.nnames && i < CG_NAMES_MAX)
        snprintf(cg.names[cg.nnames++], sizeof cg.names[0], "%s", name);

    /* The files the kernel's delegation document lists; the controllers' own interface
     * files (memory.max...) stay root's, so the child cannot raise its own limits. */
    static const char *const files[] = {"cgroup.procs", "cgroup.threads",
                                        "cgroup.subtree_control"};
    char chown_err[96] = "";
    if (fchown(dfd, uid, gid) != 0)
        snprintf(chown_err, sizeof chown_err, "chown %s: %s", name, strerror(errno));
    for (size_t f = 0; f < 3 && !chown_err[0]; f++)
        if (fchownat(dfd, files[f], uid, gid, AT_SYMLINK_NOFOLLOW) != 0)
            snprintf(chown_err, sizeof chown_err, "chown %s: %s", files[f], strerror(errno));
    out->delegated = !chown_err[0];

    /* Opened by aosd, so the kernel checks aosd's credentials when the child writes to it
     * (open-time credentials, Linux 5.16+): the child joins even after dropping root. */
    out->procs_fd = openat(dfd, "cgroup.procs", O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (out->procs_fd < 0) {
        snprintf(out->why, sizeof out->why, "none: open %.200s/cgroup.procs: %s", path,
                 strerror(errno));
        out->delegated = 0;
        close(dfd);
        pthread_mutex_unlock(&cg_mu);
        return;
    }
    read_small(dfd, "cgroup.controllers", out->controllers, sizeof out->controllers);
    close(dfd);
    snprintf(out->path, sizeof out->path, "%s", path);
    if (out->delegated)
        /* cat, not snprintf: a long path may cut the line, which is fine for status. */
        cat(out->why, sizeof out->why, "delegated %s (controllers: %s%s%s)", path,
            out->controllers[0] ? out->controllers : "none", cg.ctl_note[0] ? "; " : "",
            cg.ctl_note);
    else
        cat(out->why, sizeof out->why, "joined, not delegated %s (%s)", path, chown_err);
    pthread_mutex_unlock(&cg_mu);
}

static int v1_find(const char *ctrl, char *dir, size_t cap);

/* dir/<name> below an open parent: made fresh (an empty old one removed), the limit
 * written to file (NULL: none), its cgroup.procs opened. -1 with why. */
static int agent_leaf(int parent, const char *name, const char *file, uint64_t limit,
                      char *why, size_t whylen)
{
    rm_tree(parent, name, 0); /* an empty one from an earlier run: fresh counters */
    int e = 0, dfd = cg_mkdir(parent, name, &e);
    if (dfd < 0) {
        snprintf(why, whylen, "mkdir %s: %s", name, strerror(e));
        return -1;
    }
    char v[32];
    snprintf(v, sizeof v, "%llu", (unsigned long long)limit);
    int fd = -1;
    if (file && limit && (e = write_small(dfd, file, v)))
        snprintf(why, whylen, "%s/%s: %s", name, file, strerror(e));
    else if ((fd = openat(dfd, "cgroup.procs", O_WRONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        snprintf(why, whylen, "open %s/cgroup.procs: %s", name, strerror(errno));
    close(dfd);
    return fd;
}

/* The v2 half: B/agents/<name> with both limits, or -1 (why). mu held. */
static int agent_v2(const char *name, uint64_t memory_max, uint64_t pids_max, char *why,
                    size_t whylen)
{
    int e = 0, afd = cg_mkdir(cg.basefd, "agents", &e), fd = -1;
    if (afd < 0) {
        fail_text(why, whylen, "mkdir", "agents", e);
        return -1;
    }
    size_t i;
    for (i = 0; i < cg.nnames && strcmp(cg.names[i], "agents") != 0; i++)
        ;
    if (i == cg.nnames && i < CG_NAMES_MAX)
        snprintf(cg.names[cg.nnames++], sizeof cg.names[0], "agents");
    /* B/agents holds no process, so the controllers can be on in it for its children */
    char on[256] = "";
    read_small(afd, "cgroup.subtree_control", on, sizeof on);
    if ((!has_word(on, "memory", ' ') &&
         (e = write_small(afd, "cgroup.subtree_control", "+memory"))) ||
        (!has_word(on, "pids", ' ') && (e = write_small(afd, "cgroup.subtree_control", "+pids"))))
        snprintf(why, whylen, "v2: memory and pids for agents: %s", strerror(e));
    else if ((fd = agent_leaf(afd, name, "memory.max", memory_max, why, whylen)) >= 0) {
        int dfd = openat(afd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long)pids_max);
        if (dfd < 0 || (pids_max && (e = write_small(dfd, "pids.max", v)))) {
            snprintf(why, whylen, "v2: %s/pids.max: %s", name, strerror(dfd < 0 ? errno : e));
            close(fd);
            fd = -1;
        }
        if (dfd >= 0) {
            if (memory_max)
                write_small(dfd, "memory.swap.max", "0"); /* absent without swap accounting */
            close(dfd);
        }
    }
    close(afd);
    return fd;
}

int cg_agent(const char *name, uint64_t memory_max, uint64_t pids_max, int fds[3], char *why,
             size_t whylen)
{
    fds[0] = fds[1] = fds[2] = -1;
    why[0] = 0;
    if (!name || !name[0] || strlen(name) >= 64 || strchr(name, '/') || strchr(name, '.') ||
        strchr(name, '\n')) {
        snprintf(why, whylen, "none: invalid cgroup name");
        return 0;
    }
    char t[300] = "";
    pthread_mutex_lock(&cg_mu);
    if (cg.basefd >= 0)
        fds[0] = agent_v2(name, memory_max, pids_max, t, sizeof t);
    else
        snprintf(t, sizeof t, "v2: %s", cg.done ? cg.none : "cg_setup was not called");
    pthread_mutex_unlock(&cg_mu);
    if (fds[0] >= 0) {
        snprintf(why, whylen, "%.300s/agents/%s", cg.base, name);
        return 2;
    }
    cat(why, whylen, "%s", t);
    /* a hybrid host: pids and memory are v1 hierarchies of their own */
    static const char *const ctrls[] = {"pids", "memory"};
    static const char *const files[] = {"pids.max", "memory.limit_in_bytes"};
    const uint64_t limits[] = {pids_max, memory_max};
    int got = 0;
    for (int c = 0; c < 2; c++) {
        char base[480], parent[96], dir[600];
        if (v1_find(ctrls[c], base, sizeof base)) {
            cat(why, whylen, "; no v1 %s", ctrls[c]);
            continue;
        }
        snprintf(parent, sizeof parent, "aos-%d-agents", (int)getpid());
        snprintf(dir, sizeof dir, "%.480s/%.96s", base, parent);
        int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC), e = 0;
        int pfd = bfd >= 0 ? cg_mkdir(bfd, parent, &e) : -1;
        if (bfd >= 0)
            close(bfd);
        if (pfd < 0) {
            cat(why, whylen, "; v1 %s: %s", ctrls[c], strerror(bfd < 0 ? errno : e));
            continue;
        }
        pthread_mutex_lock(&cg_mu);
        size_t k;
        for (k = 0; k < cg.nv1 && strcmp(cg.v1dirs[k], dir); k++)
            ;
        if (k == cg.nv1 && k < sizeof cg.v1dirs / sizeof cg.v1dirs[0])
            snprintf(cg.v1dirs[cg.nv1++], sizeof cg.v1dirs[0], "%s", dir);
        pthread_mutex_unlock(&cg_mu);
        char lt[200] = "";
        fds[1 + c] = agent_leaf(pfd, name, files[c], limits[c], lt, sizeof lt);
        close(pfd);
        if (fds[1 + c] >= 0)
            got++;
        else
            cat(why, whylen, "; v1 %s: %s", ctrls[c], lt);
    }
    if (got == 2)
        snprintf(why, whylen, "v1 pids and memory: aos-%d-agents/%s", (int)getpid(), name);
    return got;
}

/* rmdir a cgroup and the cgroups the child made below it, deepest first. 0 or an errno. */
static int rm_tree(int parent, const char *name, int depth)
{
    if (depth > CG_DEPTH_MAX)
        return ELOOP;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return e;
    }
    int err = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        int isdir = de->d_type == DT_DIR ||
                    (de->d_type == DT_UNKNOWN &&
                     fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                     S_ISDIR(st.st_mode));
        if (isdir) {
            int e = rm_tree(dirfd(d), de->d_name, depth + 1);
            if (e && !err)
                err = e;
        }
    }
    closedir(d);
    if (unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT && !err)
        err = errno;
    return err;
}

/* The v1 hierarchy holding ctrl: its mount point, and aosd's cgroup in it. */
static int v1_find(const char *ctrl, char *dir, size_t cap)
{
    char *mi = read_proc("/proc/self/mountinfo"), *self = read_proc("/proc/self/cgroup");
    int found = -1;
    char mnt[512] = "", rel[512] = "";
    for (char *sv = NULL, *l = mi ? strtok_r(mi, "\n", &sv) : NULL; l && !mnt[0];
         l = strtok_r(NULL, "\n", &sv)) {
        mi_line m;
        if (mi_split(l, &m) || strcmp(m.fstype, "cgroup") || strcmp(m.root, "/") ||
            !has_word(m.superopts, ctrl, ','))
            continue;
        snprintf(mnt, sizeof mnt, "%.500s", m.mnt);
    }
    for (char *sv = NULL, *l = self && mnt[0] ? strtok_r(self, "\n", &sv) : NULL; l;
         l = strtok_r(NULL, "\n", &sv)) {
        char *c1 = strchr(l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        if (has_word(c1 + 1, ctrl, ',')) {
            snprintf(rel, sizeof rel, "%.500s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
            found = 0;
            break;
        }
    }
    if (!found && (size_t)snprintf(dir, cap, "%s%s", mnt, rel) >= cap)
        found = -1;
    free(mi);
    free(self);
    return found;
}

/* Removes the "aos-<pid>-<name>" cgroups of aosds that are gone (a kill -9 leaves them):
 * empty ones only (rmdir refuses the others), so nothing still running is touched. */
static void v1_sweep(int bfd)
{
    int fd = dup(bfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    char names[64][96];
    size_t n = 0;
    for (struct dirent *e; n < 64 && (e = readdir(d));) {
        int pid = 0, off = 0;
        if (sscanf(e->d_name, "aos-%d-%n", &pid, &off) == 1 && off > 0 && pid > 0 &&
            pid != (int)getpid() && kill(pid, 0) != 0 && errno == ESRCH)
            snprintf(names[n++], sizeof names[0], "%.90s", e->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        rm_tree(bfd, names[i], 0);
}

void cg_delegate_v1(const char *name, uid_t uid, gid_t gid, const cg_deleg *v2,
                    cg_deleg_v1 *out)
{
    static const char *const ctrls[] = {"pids", "memory"};
    out->procs_fd[0] = out->procs_fd[1] = -1;
    out->path[0][0] = out->path[1][0] = 0;
    out->why[0] = 0;
    for (int i = 0; i < 2; i++) {
        if (v2->controllers[0] && has_word(v2->controllers, ctrls[i], ' '))
            continue; /* the unified hierarchy has it: v2's delegation covers it */
        char base[520], dir[600];
        if (v1_find(ctrls[i], base, sizeof base))
            continue;
        /* one per aosd: two aosds on a host share the v1 root, and must not share (nor
         * clean up) each other's runs */
        char leaf[96];
        snprintf(leaf, sizeof leaf, "aos-%d-%.60s", (int)getpid(), name);
        snprintf(dir, sizeof dir, "%.500s/%s", base, leaf);
        int bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (bfd < 0) {
            cat(out->why, sizeof out->why, "%sv1 %s: %s", out->why[0] ? "; " : "", ctrls[i],
                strerror(errno));
            continue;
        }
        v1_sweep(bfd);
        rm_tree(bfd, leaf, 0); /* a stale one from an earlier incarnation, when empty */
        int e = 0, dfd = cg_mkdir(bfd, leaf, &e);
        close(bfd);
        if (dfd < 0) {
            cat(out->why, sizeof out->why, "%sv1 %s: mkdir %.200s: %s", out->why[0] ? "; " : "",
                ctrls[i], dir, strerror(e));
            continue;
        }
        static const char *const files[] = {"cgroup.procs", "tasks"};
        int ok = fchown(dfd, uid, gid) == 0;
        for (size_t f = 0; f < 2 && ok; f++)
            ok = fchownat(dfd, files[f], uid, gid, AT_SYMLINK_NOFOLLOW) == 0;
        out->procs_fd[i] = ok ? openat(dfd, "cgroup.procs", O_WRONLY | O_NOFOLLOW | O_CLOEXEC)
                              : -1;
        close(dfd);
        if (out->procs_fd[i] >= 0)
            snprintf(out->path[i], sizeof out->path[i], "%s", dir);
        cat(out->why, sizeof out->why, "%sv1 %s %.200s%s", out->why[0] ? "; " : "", ctrls[i],
            dir, out->procs_fd[i] >= 0 ? "" : ": not given (chown or open failed)");
        pthread_mutex_lock(&cg_mu);
        size_t k;
        for (k = 0; k < cg.nv1 && strcmp(cg.v1dirs[k], dir); k++)
            ;
        if (k == cg.nv1 && k < sizeof cg.v1dirs / sizeof cg.v1dirs[0])
            snprintf(cg.v1dirs[cg.nv1++], sizeof cg.v1dirs[0], "%s", dir);
        pthread_mutex_unlock(&cg_mu);
    }
}

void cg_teardown(char *why, size_t whylen)
{
    if (why && whylen)
        why[0] = '\0';
    pthread_mutex_lock(&cg_mu);
    for (size_t i = 0; i < cg.nv1; i++) {
        /* the run cgroups aos-tool made, then its own */
        char *slash = strrchr(cg.v1dirs[i], '/');
        if (!slash)
            continue;
        *slash = 0;
        int pfd = open(cg.v1dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int e = pfd >= 0 ? rm_tree(pfd, slash + 1, 0) : errno;
        if (pfd >= 0)
            close(pfd);
        *slash = '/';
        if (e && why && whylen)
            cat(why, whylen, "%s%.200s stays: %s", why[0] ? "; " : "", cg.v1dirs[i],
                strerror(e));
    }
    for (size_t i = 0; i < cg.nnames && cg.basefd >= 0; i++) {
        int e = rm_tree(cg.basefd, cg.names[i], 0);
        if (e && why && whylen)
            cat(why, whylen, "%s%.200s/%s stays: %s%s", why[0] ? "; " : "", cg.base,
                cg.names[i], strerror(e), e == EBUSY ? " (processes still in it)" : "");
    }
    if (cg.basefd >= 0)
        close(cg.basefd);
    /* Back to the start, so a test (or a re-initialising aosd) can set up again. */
    memset(&cg, 0, sizeof cg);
    cg.basefd = -1;
    pthread_mutex_unlock(&cg_mu);
}
