/* Each tool run's sandbox: bubblewrap builds the namespaces and the root, our seccomp
 * program and rlimits go on top, and a cgroup of the run's own bounds pids and memory. */
#include "jail.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "aos/log.h"
#include "aos/readall.h"
#include "monotime.h"
#include "sandbox.h"

#define JAIL_BWRAP "/usr/bin/bwrap"
#define JAIL_SLIRP "/usr/bin/slirp4netns"
#define JAIL_NET_SETUP_MS 5000     /* a network run's sandbox to its network being up */
#define JAIL_ARGV_MAX 256           /* bwrap's own options, before the tool's argv */
#define JAIL_CG_SLOTS 256           /* runs at once with a cgroup each */
#define JAIL_TMP_BYTES (64u << 20)  /* the private /tmp */
#define JAIL_NOFILE 256
#define JAIL_DEF_MEMORY_MB 512
#define JAIL_DEF_PROCESSES 64
#define JAIL_DEF_CPU_S 60
#define JAIL_DEF_FILE_BYTES (256ull << 20)
/* The uid and gid a tool has inside: an unprivileged one; outside it is aos-tool's own. */
#define JAIL_UID "1000"

/* What a tool needs to run in /etc, written by us: no host secret (shadow, ssh keys,
 * aos's own files) can be reached from a generated /etc. */
static const struct {
    const char *name, *text;
} jail_etc[] = {
    {"passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\n"
               "agent:x:" JAIL_UID ":" JAIL_UID ":agent:/workspace:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
    {"group", "root:x:0:\nagent:x:" JAIL_UID ":\nnogroup:x:65534:\n"},
    {"hosts", "127.0.0.1 localhost aos\n::1 localhost ip6-localhost\n"},
    {"nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"},
    /* slirp4netns's resolver, for runs granted the network */
    {"resolv.conf", "nameserver 10.0.2.3\n"},
};
#define JAIL_NETC (sizeof jail_etc / sizeof jail_etc[0])

/* What of the host's /etc a program needs and that holds no secret, copied into the
 * generated one (a copy, so that the sandbox gets /etc in one bind: each bind costs a
 * mount): the loader's cache, the time zone, Debian's alternatives (awk, editor: symlinks
 * into /usr) and the CA certificates for https (symlinks into /usr/share and one bundle).
 * Never /etc/ssl/private. */
static const char *const jail_etc_files[] = {"ld.so.cache", "localtime", "ssl/openssl.cnf",
                                             NULL};
static const char *const jail_etc_dirs[] = {"alternatives", "ssl/certs", NULL};
#define JAIL_ETC_COPY_MAX (4u << 20) /* bytes of one copied file */
/* The top-level names a merged-/usr system makes symlinks into /usr. */
static const char *const jail_top[] = {"bin", "sbin", "lib", "lib64", "lib32", "libx32",
                                       NULL};

typedef enum { CG_NONE, CG_V2, CG_V1 } cg_kind;

struct jail {
    pthread_mutex_t mu;
    int prepared;
    char state[PATH_MAX];      /* where etc/ is */
    char temp[PATH_MAX];       /* a temporary state dir we made, removed in jail_free */
    int ready;
    char notready[256];
    int disable_userns;        /* this bwrap knows --disable-userns */
    int slirp;                 /* slirp4netns is there and /dev/net/tun usable by us */
    char slirp_why[160];
    uint8_t *bpf;              /* the compiled seccomp program */
    size_t bpf_len;
    char bpf_why[160];
    /* top-level links and directories, as found on the host */
    char top_link[8][64];
    int top_kind[8];           /* 0 absent, 1 symlink (top_link), 2 directory */
    /* cgroups */
    cg_kind cg;
    char cg_v2[PATH_MAX];      /* our delegated cgroup (v2) */
    char cg_pids[PATH_MAX];    /* v1: our pids cgroup, "" none */
    char cg_mem[PATH_MAX];     /* v1: our memory cgroup, "" none */
    char cg_why[256];
    int cg_pids_on, cg_mem_on;
    unsigned char slot_used[JAIL_CG_SLOTS];
    uint64_t gen;
};

/* ---- seccomp ------------------------------------------------------------------------- */

/* On top of aos-tool's own deny-list (sbx_deny_common): what would let a tool rebuild
 * or leave its sandbox. Namespaces (a user namespace would give it every capability over
 * new mounts), mounts of any kind, chroot, the host name, and TIOCSTI/TIOCLINUX, which
 * push input into a terminal that a tool's caller may share. clone3 says ENOSYS: its
 * flags sit behind a pointer seccomp cannot read, and glibc then falls back to clone. */
static aos_err jail_compile(jail *j)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "seccomp_init failed");
        return AOS_ERR_NOMEM;
    }
    aos_err e = AOS_ERR_INTERNAL;
    char why[160];
    static const char *const deny[] = {
        "mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
        "mount_setattr", "sethostname", "setdomainname", "personality", NULL};
    static const unsigned long nsflags[] = {CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID,
                                            CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS,
                                            CLONE_NEWCGROUP, CLONE_NEWTIME};
    if (sbx_deny_common(ctx, why, sizeof why)) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "%s", why);
        goto out;
    }
    int rc = 0;
    for (size_t i = 0; deny[i] && !rc; i++) {
        int nr = seccomp_syscall_resolve_name(deny[i]);
        if (nr != __NR_SCMP_ERROR)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    for (size_t i = 0; i < sizeof nsflags / sizeof nsflags[0] && !rc; i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, nsflags[i], nsflags[i]));
    if (!rc)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (!rc)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
    if (!rc)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCLINUX));
    if (rc) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "seccomp rule: %s", strerror(-rc));
        goto out;
    }
    /* Exported once as raw BPF; each run hands bubblewrap a copy on a pipe. */
    int fd = memfd_create("aos-tool-seccomp", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "memfd_create: %s", strerror(errno));
        goto out;
    }
    if ((rc = seccomp_export_bpf(ctx, fd))) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "seccomp_export_bpf: %s", strerror(-rc));
        close(fd);
        goto out;
    }
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0 || len > 60000 || lseek(fd, 0, SEEK_SET) != 0) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "the seccomp program is %lld bytes",
                 (long long)len);
        close(fd);
        goto out;
    }
    size_t got = 0;
    j->bpf = (uint8_t *)aos_read_all(fd, (size_t)len + 1, &got);
    close(fd);
    if (!j->bpf || got != (size_t)len) {
        snprintf(j->bpf_why, sizeof j->bpf_why, "reading the seccomp program back");
        free(j->bpf);
        j->bpf = NULL;
        goto out;
    }
    j->bpf_len = got;
    e = AOS_ERR_OK;
out:
    seccomp_release(ctx);
    return e;
}

/* ---- preparing, once, after the server's own sandbox is on ----------------------------- */

/* One write of text into dfd/name (flags: O_CREAT|O_TRUNC for a file of ours, 0 for a
 * cgroup's control file, which takes each write(2) as one request). */
static int jail_write_at(int dfd, const char *name, const char *text, int flags)
{
    int fd = openat(dfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC | flags, 0644);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = errno;
    close(fd);
    if (w != (ssize_t)n) {
        errno = w < 0 ? e : EIO;
        return -1;
    }
    return 0;
}

/* One file (a symlink stays a symlink) from the host's /etc into dfd, same name. */
static int jail_copy_one(int src_dir, int dst_dir, const char *name)
{
    struct stat st;
    if (fstatat(src_dir, name, &st, AT_SYMLINK_NOFOLLOW))
        return errno == ENOENT ? 0 : -1;
    if (S_ISLNK(st.st_mode)) {
        char t[PATH_MAX];
        ssize_t n = readlinkat(src_dir, name, t, sizeof t - 1);
        if (n < 0)
            return -1;
        t[n] = 0;
        return symlinkat(t, dst_dir, name);
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)JAIL_ETC_COPY_MAX)
        return 0; /* nothing else belongs in a tool's /etc */
    int in = openat(src_dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return errno == EACCES ? 0 : -1; /* unreadable to us: private, not for tools */
    size_t len = 0;
    char *buf = aos_read_all(in, JAIL_ETC_COPY_MAX, &len);
    close(in);
    if (!buf)
        return -1;
    int out = openat(dst_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    int rc = out < 0 || write(out, buf, len) != (ssize_t)len ? -1 : 0;
    if (out >= 0)
        close(out);
    free(buf);
    return rc;
}

/* rm -r of what jail_write_etc made (two levels of plain files, links and dirs). */
static void jail_rm_tree(int parent, const char *name, int depth)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        if (!d) {
            close(fd);
        } else {
            for (struct dirent *e; (e = readdir(d));) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                if (e->d_type == DT_DIR && depth < 4)
                    jail_rm_tree(dirfd(d), e->d_name, depth + 1);
                else
                    unlinkat(dirfd(d), e->d_name, 0);
            }
            closedir(d);
        }
    }
    unlinkat(parent, name, AT_REMOVEDIR);
}

/* The sandbox's /etc, built afresh at each aos-tool start in state/etc.new and then put
 * in place of state/etc: the host's files may have changed since the last start. */
static int jail_write_etc(jail *j, char *why, size_t whylen)
{
    int sfd = open(j->state, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0) {
        aos_say(why, whylen, "open %.200s: %s", j->state, strerror(errno));
        return -1;
    }
    jail_rm_tree(sfd, "etc.new", 0);
    jail_rm_tree(sfd, "etc.old", 0);
    int rc = -1, dfd = -1, host = -1;
    if (mkdirat(sfd, "etc.new", 0755) ||
        (dfd = openat(sfd, "etc.new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        aos_say(why, whylen, "making %.200s/etc.new: %s", j->state, strerror(errno));
        goto out;
    }
    fchmod(dfd, 0755);
    for (size_t i = 0; i < JAIL_NETC; i++)
        if (jail_write_at(dfd, jail_etc[i].name, jail_etc[i].text, O_CREAT | O_TRUNC)) {
            aos_say(why, whylen, "writing etc/%s: %s", jail_etc[i].name, strerror(errno));
            goto out;
        }
    if ((host = open("/etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        aos_say(why, whylen, "open /etc: %s", strerror(errno));
        goto out;
    }
    if (mkdirat(dfd, "ssl", 0755)) {
        aos_say(why, whylen, "mkdir etc/ssl: %s", strerror(errno));
        goto out;
    }
    for (size_t i = 0; jail_etc_files[i]; i++)
        if (jail_copy_one(host, dfd, jail_etc_files[i])) {
            aos_say(why, whylen, "copying /etc/%s: %s", jail_etc_files[i], strerror(errno));
            goto out;
        }
    for (size_t i = 0; jail_etc_dirs[i]; i++) {
        int src = openat(host, jail_etc_dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (src < 0)
            continue; /* not on this host */
        int dst = mkdirat(dfd, jail_etc_dirs[i], 0755)
                      ? -1
                      : openat(dfd, jail_etc_dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dst >= 0 ? fdopendir(src) : NULL;
        int bad = !d;
        for (struct dirent *e; d && !bad && (e = readdir(d));)
            if (e->d_name[0] != '.' && jail_copy_one(src, dst, e->d_name))
                bad = 1;
        if (d)
            closedir(d);
        else
            close(src);
        if (dst >= 0)
            close(dst);
        if (bad) {
            aos_say(why, whylen, "copying /etc/%s: %s", jail_etc_dirs[i], strerror(errno));
            goto out;
        }
    }
    jail_rm_tree(sfd, "etc.old", 0);
    if (renameat(sfd, "etc", sfd, "etc.old") && errno != ENOENT) {
        aos_say(why, whylen, "moving the old etc: %s", strerror(errno));
        goto out;
    }
    if (renameat(sfd, "etc.new", sfd, "etc")) {
        aos_say(why, whylen, "putting etc in place: %s", strerror(errno));
        goto out;
    }
    jail_rm_tree(sfd, "etc.old", 0);
    rc = 0;
out:
    if (dfd >= 0)
        close(dfd);
    if (host >= 0)
        close(host);
    close(sfd);
    return rc;
}

/* A command run to completion with no output, for the probes: its exit status or -1. */
static aos_err spawn_inner(jail *j, const jail_spec *s, jail_proc *p, char *why,
                           size_t whylen);

/* One real run of /usr/bin/true through the whole sandbox, as every run will be made:
 * 0 when it exits 0; else -1 with bubblewrap's first words of stderr in why. */
static int jail_probe(jail *j, char *why, size_t whylen)
{
    char *argv[] = {"/usr/bin/true", NULL};
    jail_spec sp = {.argv = argv};
    jail_proc p;
    if (spawn_inner(j, &sp, &p, why, whylen))
        return -1;
    char err[200];
    size_t n = 0;
    /* blocking reads: the probe runs once, before any request is served */
    int fl = fcntl(p.err_fd, F_GETFL);
    fcntl(p.err_fd, F_SETFL, fl & ~O_NONBLOCK);
    for (ssize_t r; n < sizeof err - 1 && (r = read(p.err_fd, err + n, sizeof err - 1 - n)) > 0;)
        n += (size_t)r;
    err[n] = 0;
    while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = 0;
    uint64_t peak;
    int st = jail_reap(j, &p, &peak);
    close(p.out_fd);
    close(p.err_fd);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    aos_say(why, whylen, "exit %d: %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
             err[0] ? err : "(no message)");
    return -1;
}

/* The line of /proc/self/cgroup for a v1 controller ("4:memory:/a/b"), or v2 ("0::/a"). */
static int jail_own_cgroup(const char *ctrl, char *rel, size_t rellen)
{
    char *text = NULL;
    int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        text = aos_read_all(fd, 1u << 20, NULL);
        close(fd);
    }
    if (!text)
        return -1;
    int found = -1;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(l, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *names = c1 + 1;
        int match = 0;
        if (!ctrl[0]) {
            match = !names[0] && !strncmp(l, "0:", 2);
        } else {
            for (char *s2 = NULL, *w = strtok_r((char *)names, ",", &s2); w;
                 w = strtok_r(NULL, ",", &s2))
                if (!strcmp(w, ctrl))
                    match = 1;
        }
        if (match) {
            snprintf(rel, rellen, "%s", c2 + 1);
            found = 0;
            break;
        }
    }
    free(text);
    return found;
}

/* Where a cgroup hierarchy is mounted: fstype cgroup2 (ctrl "") or cgroup with ctrl among
 * its super options. Read from /proc/self/mountinfo; only the simple layout (the mount's
 * root is "/") is used. */
static int jail_cg_mount(const char *ctrl, char *mnt, size_t mntlen)
{
    char *text = NULL;
    int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        text = aos_read_all(fd, 8u << 20, NULL);
        close(fd);
    }
    if (!text)
        return -1;
    int found = -1;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && found;
         l = strtok_r(NULL, "\n", &save)) {
        char *f[64];
        int n = 0;
        for (char *s2 = NULL, *t = strtok_r(l, " ", &s2); t && n < 64; t = strtok_r(NULL, " ", &s2))
            f[n++] = t;
        int dash = -1;
        for (int i = 6; i < n; i++)
            if (!strcmp(f[i], "-")) {
                dash = i;
                break;
            }
        if (dash < 0 || dash + 3 >= n || strcmp(f[3], "/") || strchr(f[4], '\\'))
            continue;
        const char *fstype = f[dash + 1], *super = f[dash + 3];
        if (!ctrl[0] ? !strcmp(fstype, "cgroup2")
                     : !strcmp(fstype, "cgroup") && strstr(super, ctrl)) {
            if (ctrl[0]) { /* a whole word of the options */
                int word = 0;
                for (char *s3 = NULL, *w = strtok_r((char *)super, ",", &s3); w;
                     w = strtok_r(NULL, ",", &s3))
                    if (!strcmp(w, ctrl))
                        word = 1;
                if (!word)
                    continue;
            }
            snprintf(mnt, mntlen, "%s", f[4]);
            found = 0;
        }
    }
    free(text);
    return found;
}

static int jail_write_file(const char *dir, const char *name, const char *text)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    int rc = jail_write_at(dfd, name, text, 0);
    int e = errno;
    close(dfd);
    errno = e;
    return rc;
}

static int jail_read_file(const char *dir, const char *name, char *buf, size_t cap)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, cap - 1);
    close(fd);
    if (r < 0)
        return -1;
    buf[r] = 0;
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' '))
        buf[--r] = 0;
    return 0;
}

/* v2: the cgroup aosd delegated to us (we are in it): move ourselves into a leaf
 * ("server"), since a cgroup with processes cannot pass controllers down, then enable
 * pids and memory for the runs' cgroups beside it. */
static void jail_cg_v2(jail *j)
{
    char mnt[PATH_MAX], rel[PATH_MAX], dir[PATH_MAX * 2 + 2], ctl[256] = "";
    if (jail_cg_mount("", mnt, sizeof mnt) || jail_own_cgroup("", rel, sizeof rel))
        return;
    snprintf(dir, sizeof dir, "%s%s", mnt, !strcmp(rel, "/") ? "" : rel);
    if (!strcmp(rel, "/") || access(dir, W_OK))
        return; /* the root, or not ours: not delegated */
    if (jail_read_file(dir, "cgroup.controllers", ctl, sizeof ctl))
        return;
    int pids = strstr(ctl, "pids") != NULL, mem = strstr(ctl, "memory") != NULL;
    if (!pids && !mem) {
        snprintf(j->cg_why, sizeof j->cg_why, "cgroup v2 %.160s has no pids or memory "
                 "controller", dir);
        return;
    }
    char leaf[sizeof dir + 16];
    snprintf(leaf, sizeof leaf, "%s/server", dir);
    if (mkdir(leaf, 0755) && errno != EEXIST)
        return;
    if (jail_write_file(leaf, "cgroup.procs", "0")) {
        snprintf(j->cg_why, sizeof j->cg_why, "moving aos-tool into %.160s: %.60s", leaf,
                 strerror(errno));
        return;
    }
    char want[32] = "";
    snprintf(want, sizeof want, "%s%s", pids ? "+pids " : "", mem ? "+memory" : "");
    if (jail_write_file(dir, "cgroup.subtree_control", want)) {
        snprintf(j->cg_why, sizeof j->cg_why, "enabling %s in %.160s: %.40s", want, dir,
                 strerror(errno));
        return;
    }
    if (strlen(dir) >= sizeof j->cg_v2)
        return;
    memcpy(j->cg_v2, dir, strlen(dir) + 1);
    j->cg = CG_V2;
    j->cg_pids_on = pids;
    j->cg_mem_on = mem;
    snprintf(j->cg_why, sizeof j->cg_why, "cgroup v2 %.200s", dir);
}

/* v1: our own pids and memory cgroups, when aosd made them ours. */
static void jail_cg_v1(jail *j)
{
    static const char *const ctrls[] = {"pids", "memory"};
    char *dst[] = {j->cg_pids, j->cg_mem};
    int *on[] = {&j->cg_pids_on, &j->cg_mem_on};
    for (size_t i = 0; i < 2; i++) {
        char mnt[PATH_MAX], rel[PATH_MAX], dir[PATH_MAX * 2 + 2];
        if (jail_cg_mount(ctrls[i], mnt, sizeof mnt) ||
            jail_own_cgroup(ctrls[i], rel, sizeof rel))
            continue;
        snprintf(dir, sizeof dir, "%s%s", mnt, !strcmp(rel, "/") ? "" : rel);
        if (!strcmp(rel, "/") || access(dir, W_OK))
            continue;
        if (strlen(dir) >= PATH_MAX)
            continue;
        memcpy(dst[i], dir, strlen(dir) + 1);
        *on[i] = 1;
    }
    if (j->cg_pids_on || j->cg_mem_on) {
        j->cg = CG_V1;
        snprintf(j->cg_why, sizeof j->cg_why, "cgroup v1 %.120s%s%.120s", j->cg_pids,
                 j->cg_pids[0] && j->cg_mem[0] ? ", " : "", j->cg_mem);
    }
}

static void jail_prepare(jail *j)
{
    pthread_mutex_lock(&j->mu);
    if (j->prepared) {
        pthread_mutex_unlock(&j->mu);
        return;
    }
    j->prepared = 1;
    char why[256] = "";
    for (size_t i = 0; jail_top[i] && i < 8; i++) {
        char p[64], t[64];
        struct stat st;
        snprintf(p, sizeof p, "/%s", jail_top[i]);
        if (lstat(p, &st))
            continue;
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(p, t, sizeof t - 1);
            if (n > 0) {
                t[n] = 0;
                snprintf(j->top_link[i], sizeof j->top_link[i], "%s", t);
                j->top_kind[i] = 1;
            }
        } else if (S_ISDIR(st.st_mode)) {
            j->top_kind[i] = 2;
        }
    }
    if (access(JAIL_BWRAP, X_OK)) {
        snprintf(j->notready, sizeof j->notready,
                 "bubblewrap is not installed (" JAIL_BWRAP ": %s): install the bubblewrap "
                 "package", strerror(errno));
    } else if (!j->bpf) {
        snprintf(j->notready, sizeof j->notready, "no seccomp program: %s", j->bpf_why);
    } else if (jail_write_etc(j, why, sizeof why)) {
        snprintf(j->notready, sizeof j->notready, "the sandbox's /etc: %.200s", why);
    } else {
        /* --disable-userns is bubblewrap 0.8's: try with it, then without */
        j->disable_userns = 1;
        if (jail_probe(j, why, sizeof why)) {
            j->disable_userns = 0;
            char why2[256];
            if (jail_probe(j, why2, sizeof why2) == 0)
                j->ready = 1;
            else
                snprintf(j->notready, sizeof j->notready,
                         "bubblewrap cannot make a sandbox here (%.120s); unprivileged user "
                         "namespaces may be off (sysctl user.max_user_namespaces)", why2);
        } else {
            j->ready = 1;
        }
    }
    /* network grants: slirp4netns, which opens /dev/net/tun inside the run's namespaces as
     * our uid (not root there): the device must be open to every user, as Debian makes it */
    if (access(JAIL_SLIRP, X_OK))
        snprintf(j->slirp_why, sizeof j->slirp_why, "off: slirp4netns is not installed");
    else if (access("/dev/net/tun", R_OK | W_OK))
        snprintf(j->slirp_why, sizeof j->slirp_why, "off: /dev/net/tun is not usable by "
                 "aos-tool's uid (%s) on this host", strerror(errno));
    else
        j->slirp = 1;
    snprintf(j->cg_why, sizeof j->cg_why, "no cgroup of aos-tool's own with pids or memory");
    jail_cg_v2(j);
    if (j->cg == CG_NONE)
        jail_cg_v1(j);
    pthread_mutex_unlock(&j->mu);
}

aos_err jail_open(const char *state_dir, jail **out, char *why, size_t whylen)
{
    *out = NULL;
    jail *j = calloc(1, sizeof *j);
    if (!j) {
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    pthread_mutex_init(&j->mu, NULL);
    if (state_dir) {
        snprintf(j->state, sizeof j->state, "%s", state_dir);
    } else {
        snprintf(j->temp, sizeof j->temp, "/tmp/aos-tool-XXXXXX");
        if (!mkdtemp(j->temp)) {
            aos_say(why, whylen, "mkdtemp: %s", strerror(errno));
            free(j);
            return AOS_ERR_INTERNAL;
        }
        chmod(j->temp, 0755);
        snprintf(j->state, sizeof j->state, "%s", j->temp);
    }
    jail_compile(j); /* a failure is reported by jail_ready */
    *out = j;
    return AOS_ERR_OK;
}

void jail_free(jail *j)
{
    if (!j)
        return;
    if (j->temp[0]) {
        int fd = open(j->temp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            jail_rm_tree(fd, "etc", 0);
            close(fd);
        }
        rmdir(j->temp);
    }
    free(j->bpf);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int jail_ready(const jail *cj, char *why, size_t whylen)
{
    jail *j = (jail *)cj;
    jail_prepare(j);
    if (!j->ready)
        aos_say(why, whylen, "%s", j->notready);
    return j->ready;
}

static size_t jail_add_layer(jail_layer *out, size_t n, const char *name, int on,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static size_t jail_add_layer(jail_layer *out, size_t n, const char *name, int on,
                             const char *fmt, ...)
{
    if (n >= JAIL_LAYERS_MAX)
        return n;
    out[n].name = name;
    out[n].on = on;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out[n].why, sizeof out[n].why, fmt, ap);
    va_end(ap);
    return n + 1;
}

size_t jail_layers(const jail *cj, jail_layer *out)
{
    jail *j = (jail *)cj;
    jail_prepare(j);
    size_t n = 0;
    int r = j->ready;
    const char *nr = j->notready;
    n = jail_add_layer(out, n, "bubblewrap", r, "%s", r ? JAIL_BWRAP : nr);
    n = jail_add_layer(out, n, "user_ns", r, "%s", r ? "uid " JAIL_UID " inside" : nr);
    n = jail_add_layer(out, n, "mount_ns", r, "%s",
                       r ? "read-only /usr, generated /etc, private /tmp, minimal /dev, new "
                           "/proc, the workspace at /workspace" : nr);
    n = jail_add_layer(out, n, "pid_ns", r, "%s", r ? "the timeout kills the whole namespace" : nr);
    n = jail_add_layer(out, n, "net_ns", r, "%s", r ? "only its own loopback" : nr);
    n = jail_add_layer(out, n, "ipc_ns", r, "%s", r ? "" : nr);
    n = jail_add_layer(out, n, "uts_ns", r, "%s", r ? "" : nr);
    n = jail_add_layer(out, n, "cgroup_ns", r, "%s", r ? "where the kernel has them" : nr);
    n = jail_add_layer(out, n, "no_new_privs", r, "%s", r ? "set by bubblewrap" : nr);
    n = jail_add_layer(out, n, "seccomp", r && j->bpf, "%s",
                       j->bpf ? "namespaces, mounts, ptrace, bpf, keyrings, io_uring, kexec, "
                                "modules refused" : j->bpf_why);
    n = jail_add_layer(out, n, "userns_disabled", r && j->disable_userns, "%s",
                       j->disable_userns ? "--disable-userns" : "this bubblewrap lacks "
                       "--disable-userns (seccomp still refuses namespaces)");
    n = jail_add_layer(out, n, "rlimits", 1, "CPU, address space, file size, open files, "
                       "no core");
    n = jail_add_layer(out, n, "cgroup_pids", j->cg_pids_on, "%s", j->cg_why);
    n = jail_add_layer(out, n, "cgroup_memory", j->cg_mem_on, "%s", j->cg_why);
    n = jail_add_layer(out, n, "own_uid", 0, "off: every run's uid outside is aos-tool's "
                       "(no subordinate uid range); processes are bounded by %s",
                       j->cg_pids_on ? "the pids cgroup" : "aos-tool's RLIMIT_NPROC");
    n = jail_add_layer(out, n, "disk_quota", 0, "off: no project quota or per-workspace image "
                       "is set up; RLIMIT_FSIZE caps each file");
    n = jail_add_layer(out, n, "network_grant", j->slirp, "%s%s",
                       j->slirp ? "granted runs: slirp4netns in their own network namespace, "
                                  "outbound only, the host's loopback unreachable"
                                : j->slirp_why,
                       j->slirp ? "" : "; runs granted the network are refused");
    return n;
}

/* ---- one run ------------------------------------------------------------------------- */

typedef struct {
    const char *v[JAIL_ARGV_MAX + 2];
    size_t n;
    char store[8192];   /* numbers and joined paths made for this command line */
    size_t used;
    int over;
} jargv;

static void ja(jargv *a, const char *s)
{
    if (a->n >= JAIL_ARGV_MAX) {
        a->over = 1;
        return;
    }
    a->v[a->n++] = s;
}

static const char *jfmt(jargv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *jfmt(jargv *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof a->store - a->used;
    int n = vsnprintf(a->store + a->used, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        a->over = 1;
        return "";
    }
    const char *s = a->store + a->used;
    a->used += (size_t)n + 1;
    return s;
}

/* A cgroup of the run's own, limits written; the child joins it before exec. Returns the
 * slot, or -1 (no cgroup: the rlimits still hold). fds get cgroup.procs of each
 * hierarchy, opened here (-1 where none). */
static int jail_cg_make(jail *j, const jail_spec *s, int fds[2])
{
    fds[0] = fds[1] = -1;
    if (j->cg == CG_NONE)
        return -1;
    pthread_mutex_lock(&j->mu);
    int slot = -1;
    for (int i = 0; i < JAIL_CG_SLOTS; i++)
        if (!j->slot_used[i]) {
            j->slot_used[i] = 1;
            slot = i;
            break;
        }
    pthread_mutex_unlock(&j->mu);
    if (slot < 0)
        return -1;
    unsigned procs = s->processes ? s->processes : JAIL_DEF_PROCESSES;
    unsigned long long mem = (unsigned long long)(s->memory_mb ? s->memory_mb
                                                               : JAIL_DEF_MEMORY_MB) << 20;
    char num[32], dir[PATH_MAX + 32];
    const char *bases[2] = {j->cg == CG_V2 ? j->cg_v2 : j->cg_pids,
                            j->cg == CG_V2 ? NULL : j->cg_mem};
    for (int h = 0; h < 2; h++) {
        if (!bases[h] || !bases[h][0])
            continue;
        snprintf(dir, sizeof dir, "%s/run-%d", bases[h], slot);
        if (mkdir(dir, 0755) && errno != EEXIST)
            continue;
        if (j->cg == CG_V2) {
            if (j->cg_pids_on) {
                snprintf(num, sizeof num, "%u", procs);
                jail_write_file(dir, "pids.max", num);
            }
            if (j->cg_mem_on) {
                snprintf(num, sizeof num, "%llu", mem);
                jail_write_file(dir, "memory.max", num);
                jail_write_file(dir, "memory.swap.max", "0");
            }
        } else if (h == 0) {
            snprintf(num, sizeof num, "%u", procs);
            jail_write_file(dir, "pids.max", num);
        } else {
            snprintf(num, sizeof num, "%llu", mem);
            jail_write_file(dir, "memory.limit_in_bytes", num);
            jail_write_file(dir, "memory.memsw.limit_in_bytes", num); /* absent: no swap acct */
            jail_write_file(dir, "memory.max_usage_in_bytes", "0");   /* reset the peak */
        }
        char procs_path[sizeof dir + 16];
        snprintf(procs_path, sizeof procs_path, "%s/cgroup.procs", dir);
        fds[h] = open(procs_path, O_WRONLY | O_CLOEXEC);
    }
    if (fds[0] < 0 && fds[1] < 0) {
        pthread_mutex_lock(&j->mu);
        j->slot_used[slot] = 0;
        pthread_mutex_unlock(&j->mu);
        return -1;
    }
    return slot;
}

/* The run cgroup's peak memory (KiB), where the kernel keeps one. */
static void jail_cg_peak(jail *j, int slot, uint64_t *peak_kb)
{
    if (slot < 0 || !j->cg_mem_on)
        return;
    const char *base = j->cg == CG_V2 ? j->cg_v2 : j->cg_mem;
    char dir[PATH_MAX + 32], buf[64];
    snprintf(dir, sizeof dir, "%s/run-%d", base, slot);
    if (!jail_read_file(dir, j->cg == CG_V2 ? "memory.peak" : "memory.max_usage_in_bytes",
                        buf, sizeof buf) && buf[0] >= '0' && buf[0] <= '9')
        *peak_kb = strtoull(buf, NULL, 10) / 1024;
}

/* Every process left in a run's cgroup, killed (v2: cgroup.kill; v1: one by one, again
 * until none is left), and the cgroup removed. */
static void jail_cg_free(jail *j, int slot)
{
    if (slot < 0)
        return;
    const char *bases[2] = {j->cg == CG_V2 ? j->cg_v2 : j->cg_pids,
                            j->cg == CG_V2 ? NULL : j->cg_mem};
    char dir[PATH_MAX + 32], buf[4096];
    for (int h = 0; h < 2; h++) {
        if (!bases[h] || !bases[h][0])
            continue;
        snprintf(dir, sizeof dir, "%s/run-%d", bases[h], slot);
        for (int round = 0; round < 50; round++) {
            if (j->cg == CG_V2)
                jail_write_file(dir, "cgroup.kill", "1");
            if (jail_read_file(dir, "cgroup.procs", buf, sizeof buf) || !buf[0])
                break;
            for (char *sv = NULL, *l = strtok_r(buf, "\n", &sv); l; l = strtok_r(NULL, "\n", &sv)) {
                long pid = strtol(l, NULL, 10);
                if (pid > 1)
                    kill((pid_t)pid, SIGKILL);
            }
            /* the sandbox's last processes are usually still exiting: short naps first */
            usleep(round < 10 ? 200 : 2000);
        }
        if (rmdir(dir) && errno != ENOENT)
            aos_warn("tool: cgroup %s stays: %s", dir, strerror(errno));
    }
    pthread_mutex_lock(&j->mu);
    j->slot_used[slot] = 0;
    pthread_mutex_unlock(&j->mu);
}

static void jail_rlimit(int res, rlim_t v)
{
    struct rlimit rl = {v, v};
    struct rlimit old;
    /* never above what aos-tool itself has: raising would fail */
    if (!getrlimit(res, &old) && old.rlim_max != RLIM_INFINITY && old.rlim_max < v)
        rl.rlim_cur = rl.rlim_max = old.rlim_max;
    setrlimit(res, &rl);
}

/* A granted run's network: bubblewrap's info fd names the sandbox's pid; slirp4netns
 * joins its user and network namespaces and brings up tap0 (10.0.2.100, gateway 10.0.2.2,
 * resolver 10.0.2.3) with the host's loopback cut off; only then is the tool let go on the
 * block fd. slirp4netns runs as our child and ends when net_exit_fd is closed. */
static aos_err net_up(jail *j, jail_proc *p, int info_fd, int block_fd, char *why,
                      size_t whylen)
{
    (void)j;
    char buf[1024];
    size_t n = 0;
    uint64_t end = mt_now_us() + (uint64_t)JAIL_NET_SETUP_MS * 1000u;
    long child = 0;
    while (!child && n < sizeof buf - 1) {
        uint64_t now = mt_now_us();
        struct pollfd q = {info_fd, POLLIN, 0};
        if (now >= end || poll(&q, 1, (int)((end - now) / 1000u) + 1) <= 0)
            break;
        ssize_t r = read(info_fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = 0;
        const char *k = strstr(buf, "\"child-pid\"");
        const char *colon = k ? strchr(k, ':') : NULL;
        if (colon && strchr(colon, '}'))
            child = strtol(colon + 1, NULL, 10);
    }
    if (child <= 1) {
        aos_say(why, whylen, "the network run's sandbox did not say its pid");
        return AOS_ERR_INTERNAL;
    }
    int ready[2] = {-1, -1}, ex[2] = {-1, -1};
    if (pipe2(ready, O_CLOEXEC) || pipe2(ex, O_CLOEXEC)) {
        aos_say(why, whylen, "pipe: %s", strerror(errno));
        goto fail;
    }
    /* slirp4netns must join the user namespace that owns the run's network namespace,
     * which bubblewrap may nest differently from the sandbox's own: asked of the netns */
    char netns[64];
    snprintf(netns, sizeof netns, "/proc/%ld/ns/net", child);
    int nfd = open(netns, O_RDONLY | O_CLOEXEC);
    int owner = nfd >= 0 ? ioctl(nfd, NS_GET_USERNS) : -1;
    if (nfd >= 0)
        close(nfd);
    if (owner < 0) {
        aos_say(why, whylen, "the network run's namespaces: %s", strerror(errno));
        goto fail;
    }
    char *argv[] = {JAIL_SLIRP, "--configure", "--mtu=65520", "--disable-host-loopback",
                    "--userns-path=/proc/self/fd/5", "--ready-fd=3", "--exit-fd=4",
                    "--netns-type=path", netns, "tap0", NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    int r_w = fcntl(ready[1], F_DUPFD_CLOEXEC, 6), e_r = fcntl(ex[0], F_DUPFD_CLOEXEC, 6);
    int o_r = fcntl(owner, F_DUPFD_CLOEXEC, 6);
    close(owner);
    pid_t sp = fork();
    if (sp == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        int dn = open("/dev/null", O_RDWR);
        if (dn < 0 || dup2(dn, 0) < 0 || dup2(dn, 1) < 0 || dup2(r_w, 3) < 0 ||
            dup2(e_r, 4) < 0 || dup2(o_r, 5) < 0)
            _exit(126);
        /* stderr stays aos-tool's: slirp4netns's complaints reach its log */
        syscall(SYS_close_range, 6u, ~0u, 0u);
        execve(JAIL_SLIRP, argv, envp);
        _exit(127);
    }
    close(r_w);
    close(e_r);
    close(o_r);
    close(ready[1]);
    close(ex[0]);
    ready[1] = ex[0] = -1;
    if (sp < 0) {
        aos_say(why, whylen, "fork for slirp4netns: %s", strerror(errno));
        goto fail;
    }
    p->net_pid = sp;
    p->net_exit_fd = ex[1];
    ex[1] = -1;
    char ok = 0;
    struct pollfd q = {ready[0], POLLIN, 0};
    uint64_t now = mt_now_us();
    if (now >= end || poll(&q, 1, (int)((end - now) / 1000u) + 1) <= 0 ||
        read(ready[0], &ok, 1) != 1 || ok != '1') {
        aos_say(why, whylen, "slirp4netns did not bring the run's network up in %u ms (its "
                "log lines are in aos-tool's)", JAIL_NET_SETUP_MS);
        goto fail;
    }
    close(ready[0]);
    if (write(block_fd, "1", 1) != 1) {
        aos_say(why, whylen, "releasing the network run: %s", strerror(errno));
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
fail:
    for (int i = 0; i < 2; i++) {
        if (ready[i] >= 0)
            close(ready[i]);
        if (ex[i] >= 0)
            close(ex[i]);
    }
    return AOS_ERR_UNAVAILABLE;
}

/* The child's side of a spawn, everything prepared by the parent. vfork'd in a function of
 * its own, so that no local of the parent lives across the vfork (which the child could
 * clobber); the child only makes syscalls on these values, then execs. */
typedef struct child_args {
    int in, out, err, sc, cg[2];
    int info, block;             /* a network run's: to become fds 4 and 5; -1: none */
    rlim_t as, cpu, fsz;
    int no_as, plain;
    const char *workspace;
    char **argv, **envp;
} child_args;

static __attribute__((noinline)) pid_t spawn_vfork(const child_args *ca)
{
    pid_t pid = vfork();
    if (pid != 0)
        return pid;
    if (dup2(ca->in, 0) < 0 || dup2(ca->out, 1) < 0 || dup2(ca->err, 2) < 0 ||
        dup2(ca->sc, 3) < 0)
        _exit(126);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* aos-tool ignores SIGPIPE and its threads block signals: a tool starts with neither
     * (an ignored signal survives execve; `yes | head` relies on SIGPIPE) */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* files a tool makes in its workspace: its agent's to read and write too (the
     * workspace is of the agents' group, setgid: aosd's spawn_agent), nobody else's */
    umask(007);
    for (int h = 0; h < 2; h++)
        if (ca->cg[h] >= 0 && write(ca->cg[h], "0", 1) != 1)
            _exit(126);
    /* 4 and 5 from copies made above 5 by the parent, so no dup2 lands on one to move */
    if (ca->info >= 0 && (dup2(ca->info, 4) < 0 || dup2(ca->block, 5) < 0))
        _exit(126);
    if (!ca->no_as)
        jail_rlimit(RLIMIT_AS, ca->as);
    jail_rlimit(RLIMIT_CPU, ca->cpu);
    jail_rlimit(RLIMIT_FSIZE, ca->fsz);
    jail_rlimit(RLIMIT_NOFILE, JAIL_NOFILE);
    jail_rlimit(RLIMIT_CORE, 0);
    syscall(SYS_close_range, ca->info >= 0 ? 6u : 4u, ~0u, 0u);
    if (ca->plain) {
        if (ca->workspace && chdir(ca->workspace))
            _exit(126);
        execvpe(ca->argv[0], ca->argv, ca->envp);
    } else {
        execve(JAIL_BWRAP, ca->argv, ca->envp);
    }
    _exit(127);
}

static aos_err spawn_inner(jail *j, const jail_spec *s, jail_proc *p, char *why,
                           size_t whylen)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->pidfd = p->out_fd = p->err_fd = p->in_fd = -1;
    p->cg = -1;
    p->net_pid = -1;
    p->net_exit_fd = -1;
    if (s->network && (!j->slirp || s->plain)) {
        aos_say(why, whylen, "the run is granted the network, but network grants are off on "
                "this host (%.100s): refused rather than run without one", j->slirp_why);
        return AOS_ERR_REFUSED;
    }
    if (!s->argv || !s->argv[0]) {
        aos_say(why, whylen, "an empty command");
        return AOS_ERR_USAGE;
    }
    jargv a = {.n = 0};
    ja(&a, JAIL_BWRAP);
    ja(&a, "--unshare-user");
    ja(&a, "--unshare-pid");
    ja(&a, "--unshare-ipc");
    ja(&a, "--unshare-uts");
    ja(&a, "--unshare-cgroup-try");
    ja(&a, "--unshare-net");
    /* a network run's slirp4netns joins the sandbox's user namespace to reach its network
     * namespace: no nested one (seccomp still refuses namespaces to the tool) */
    if (j->disable_userns && !s->network)
        ja(&a, "--disable-userns");
    if (s->network) {
        /* bubblewrap says the sandbox's pid on fd 4 and waits on fd 5 before the tool */
        ja(&a, "--info-fd");
        ja(&a, "4");
        ja(&a, "--block-fd");
        ja(&a, "5");
    }
    ja(&a, "--die-with-parent");
    ja(&a, "--new-session");
    ja(&a, "--uid");
    ja(&a, JAIL_UID);
    ja(&a, "--gid");
    ja(&a, JAIL_UID);
    ja(&a, "--hostname");
    ja(&a, "aos");
    ja(&a, "--ro-bind");
    ja(&a, "/usr");
    ja(&a, "/usr");
    for (size_t i = 0; jail_top[i] && i < 8; i++) {
        if (j->top_kind[i] == 1) {
            ja(&a, "--symlink");
            ja(&a, j->top_link[i]);
            ja(&a, jfmt(&a, "/%s", jail_top[i]));
        } else if (j->top_kind[i] == 2) {
            const char *d = jfmt(&a, "/%s", jail_top[i]);
            ja(&a, "--ro-bind");
            ja(&a, d);
            ja(&a, d);
        }
    }
    ja(&a, "--ro-bind");
    ja(&a, jfmt(&a, "%s/etc", j->state));
    ja(&a, "/etc");
    ja(&a, "--proc");
    ja(&a, "/proc");
    ja(&a, "--dev");
    ja(&a, "/dev");
    ja(&a, "--perms");
    ja(&a, "1777");
    ja(&a, "--size");
    ja(&a, jfmt(&a, "%u", JAIL_TMP_BYTES));
    ja(&a, "--tmpfs");
    ja(&a, "/tmp");
    for (size_t i = 0; s->ro_paths && s->ro_paths[i] && i < JAIL_RO_MAX; i++) {
        ja(&a, "--ro-bind");
        ja(&a, s->ro_srcs && s->ro_srcs[i] ? s->ro_srcs[i] : s->ro_paths[i]);
        ja(&a, s->ro_paths[i]);
    }
    if (s->workspace) {
        ja(&a, "--bind");
        ja(&a, s->workspace);
        ja(&a, "/workspace");
    } else {
        ja(&a, "--dir");
        ja(&a, "/workspace");
    }
    ja(&a, "--chdir");
    ja(&a, "/workspace");
    ja(&a, "--remount-ro");
    ja(&a, "/");
    ja(&a, "--seccomp");
    ja(&a, "3");
    ja(&a, "--");
    size_t nargs = 0;
    while (s->argv[nargs])
        nargs++;
    if (a.over) {
        aos_say(why, whylen, "the sandbox's command line is too long");
        return AOS_ERR_TOO_BIG;
    }
    char **argv = calloc(a.n + nargs + 1, sizeof *argv);
    if (!argv) {
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    size_t skip = s->plain ? a.n : 0; /* plain: the tool's argv alone */
    for (size_t i = skip; i < a.n; i++)
        argv[i - skip] = (char *)a.v[i];
    for (size_t i = 0; i < nargs; i++)
        argv[a.n - skip + i] = s->argv[i];
    /* A clean environment: nothing of aosd's or aos-tool's, only what a tool needs and
     * the secrets granted to this one. bubblewrap passes its own on to the tool. */
    char *envp[JAIL_ENV_MAX + 8];
    size_t ne = 0;
    envp[ne++] = "PATH=/usr/local/bin:/usr/bin:/bin";
    envp[ne++] = "HOME=/workspace";
    envp[ne++] = "TMPDIR=/tmp";
    envp[ne++] = "LANG=C.UTF-8";
    envp[ne++] = "USER=agent";
    for (size_t i = 0; s->env && s->env[i] && i < JAIL_ENV_MAX; i++)
        envp[ne++] = (char *)s->env[i];
    envp[ne] = NULL;

    int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, sc[2] = {-1, -1}, cgfd[2];
    aos_err rc = AOS_ERR_INTERNAL;
    if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) || pipe2(sc, O_CLOEXEC) ||
        (s->want_stdin && pipe2(in, O_CLOEXEC))) {
        aos_say(why, whylen, "pipe: %s", strerror(errno));
        goto fail;
    }
    /* The program fits the pipe's buffer (64 KiB; checked at compile), so this write
     * cannot block; the write end is closed before bwrap reads, so it sees EOF. */
    if (write(sc[1], j->bpf, j->bpf_len) != (ssize_t)j->bpf_len) {
        aos_say(why, whylen, "writing the seccomp program: %s", strerror(errno));
        goto fail;
    }
    close(sc[1]);
    sc[1] = -1;
    int devnull = -1;
    if (!s->want_stdin && (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        aos_say(why, whylen, "/dev/null: %s", strerror(errno));
        goto fail;
    }
    int slot = s->plain ? (cgfd[0] = cgfd[1] = -1) : jail_cg_make(j, s, cgfd);
    int info[2] = {-1, -1}, block[2] = {-1, -1};
    if (s->network && (pipe2(info, O_CLOEXEC) || pipe2(block, O_CLOEXEC))) {
        aos_say(why, whylen, "pipe: %s", strerror(errno));
        for (int h = 0; h < 2; h++) {
            if (info[h] >= 0)
                close(info[h]);
            if (cgfd[h] >= 0)
                close(cgfd[h]);
        }
        if (devnull >= 0)
            close(devnull);
        jail_cg_free(j, slot);
        goto fail;
    }
    int info_w = info[1] >= 0 ? fcntl(info[1], F_DUPFD_CLOEXEC, 6) : -1;
    int block_r = block[0] >= 0 ? fcntl(block[0], F_DUPFD_CLOEXEC, 6) : -1;
    child_args ca = {
        .info = info_w, .block = block_r,
        .in = s->want_stdin ? in[0] : devnull, .out = out[1], .err = err[1], .sc = sc[0],
        .cg = {cgfd[0], cgfd[1]},
        .as = (rlim_t)(s->memory_mb ? s->memory_mb : JAIL_DEF_MEMORY_MB) << 20,
        .cpu = s->cpu_s ? s->cpu_s : JAIL_DEF_CPU_S,
        .fsz = s->file_bytes ? s->file_bytes : JAIL_DEF_FILE_BYTES,
        .no_as = s->no_as_limit, .plain = s->plain, .workspace = s->workspace,
        .argv = argv, .envp = envp};
    pid_t pid = spawn_vfork(&ca);
    int spawn_errno = errno;
    if (info_w >= 0)
        close(info_w);
    if (block_r >= 0)
        close(block_r);
    if (info[1] >= 0)
        close(info[1]);
    if (block[0] >= 0)
        close(block[0]);
    for (int h = 0; h < 2; h++)
        if (cgfd[h] >= 0)
            close(cgfd[h]);
    if (devnull >= 0)
        close(devnull);
    if (pid < 0) {
        jail_cg_free(j, slot);
        aos_say(why, whylen, "vfork: %s", strerror(spawn_errno));
        if (info[0] >= 0)
            close(info[0]);
        if (block[1] >= 0)
            close(block[1]);
        goto fail;
    }
    free(argv);
    argv = NULL;
    close(out[1]);
    close(err[1]);
    close(sc[0]);
    if (in[0] >= 0)
        close(in[0]);
    p->pid = pid;
    p->cg = slot;
    p->out_fd = out[0];
    p->err_fd = err[0];
    p->in_fd = in[1];
    fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
    if (p->in_fd >= 0)
        fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p->pidfd < 0)
        aos_warn("tool: pidfd_open: %s (the run's exit is found by polling)", strerror(errno));
    if (s->network) {
        aos_err nerr = net_up(j, p, info[0], block[1], why, whylen);
        close(info[0]);
        close(block[1]); /* bubblewrap goes on (or, on an error, sees EOF and exits) */
        if (nerr) {
            jail_kill(j, p);
            uint64_t pk;
            jail_reap(j, p, &pk);
            jail_release(j, p);
            close(p->out_fd);
            close(p->err_fd);
            if (p->in_fd >= 0)
                close(p->in_fd);
            p->out_fd = p->err_fd = p->in_fd = -1;
            return nerr;
        }
    }
    return AOS_ERR_OK;
fail:
    free(argv);
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (in[i] >= 0)
            close(in[i]);
        if (sc[i] >= 0)
            close(sc[i]);
    }
    return rc;
}

aos_err jail_spawn(jail *j, const jail_spec *s, jail_proc *p, char *why, size_t whylen)
{
    if (!jail_ready(j, why, whylen)) {
        memset(p, 0, sizeof *p);
        p->pid = p->pidfd = p->out_fd = p->err_fd = p->in_fd = p->cg = -1;
        p->net_pid = -1;
        p->net_exit_fd = -1;
        return AOS_ERR_UNAVAILABLE;
    }
    return spawn_inner(j, s, p, why, whylen);
}

void jail_kill(jail *j, const jail_proc *p)
{
    (void)j;
    if (p->pid > 0)
        kill(p->pid, SIGKILL);
}

int jail_reap(jail *j, jail_proc *p, uint64_t *peak_kb)
{
    int st = -1;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (p->pid > 0) {
        while (wait4(p->pid, &st, 0, &ru) < 0 && errno == EINTR)
            ;
    }
    uint64_t peak = (uint64_t)ru.ru_maxrss;
    jail_cg_peak(j, p->cg, &peak);
    if (peak_kb)
        *peak_kb = peak;
    if (p->pidfd >= 0)
        close(p->pidfd);
    p->pidfd = -1;
    p->pid = -1;
    return st;
}

void jail_release(jail *j, jail_proc *p)
{
    if (p->net_exit_fd >= 0) { /* slirp4netns ends with it */
        close(p->net_exit_fd);
        p->net_exit_fd = -1;
    }
    if (p->net_pid > 0) {
        kill(p->net_pid, SIGKILL);
        while (waitpid(p->net_pid, NULL, 0) < 0 && errno == EINTR)
            ;
        p->net_pid = -1;
    }
    /* the sandbox's pid 1 died with bwrap; anything that slipped out into the cgroup too */
    jail_cg_free(j, p->cg);
    p->cg = -1;
}
