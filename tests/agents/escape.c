/* The escape probes: each forbidden call tried once with arguments that, without a filter,
 * fail otherwise than EPERM (or succeed), so an EPERM is the filter's answer. */
#include "escape.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* -1 with errno, or what the call returned (a new fd is closed). */
typedef long (*esc_fn)(void);

static long fd_result(long fd)
{
    if (fd >= 0)
        close((int)fd);
    return fd;
}

static long p_inet(void) { return fd_result(socket(AF_INET, SOCK_STREAM, 0)); }
static long p_inet6(void) { return fd_result(socket(AF_INET6, SOCK_DGRAM, 0)); }
static long p_netlink(void) { return fd_result(socket(AF_NETLINK, SOCK_RAW, 0)); }
static long p_packet(void) { return fd_result(socket(AF_PACKET, SOCK_DGRAM, 0)); }
static long p_inet_pair(void)
{
    int sv[2];
    long r = socketpair(AF_INET, SOCK_STREAM, 0, sv);
    if (r == 0) {
        close(sv[0]);
        close(sv[1]);
    }
    return r;
}
/* last in the list: the baseline's process (a child of the test) is the one moved */
static long p_userns(void) { return unshare(CLONE_NEWUSER); }
static long p_netns(void) { return unshare(CLONE_NEWNET); }
static long p_setns(void) { return setns(-1, 0); }
static long p_mount(void) { return mount("none", "/nonexistent-aos", "tmpfs", 0, NULL); }
static long p_umount(void) { return umount2("/nonexistent-aos", 0); }
static long p_chroot(void) { return chroot("/nonexistent-aos"); }
static long p_bpf(void) { return syscall(SYS_bpf, -1, NULL, 0); }
static long p_perf(void) { return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0); }
static long p_keyctl(void) { return syscall(SYS_keyctl, 0x7fff, 0, 0, 0, 0); }
static long p_uring(void) { return fd_result(syscall(SYS_io_uring_setup, 1, NULL)); }
static long p_vm_readv(void)
{
    char a[8] = "x", b[8];
    struct iovec l = {b, sizeof b}, r = {a, sizeof a};
    return syscall(SYS_process_vm_readv, getpid(), &l, 1, &r, 1, 0);
}
static long p_finit_module(void) { return syscall(SYS_finit_module, -1, "", 0); }
static long p_handle(void) { return syscall(SYS_open_by_handle_at, -1, NULL, 0); }
static long p_userfaultfd(void) { return fd_result(syscall(SYS_userfaultfd, O_CLOEXEC)); }
static long p_tiocsti(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char c = 'x';
    long r = ioctl(fd, TIOCSTI, &c);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}
static long p_symlink(void) { return symlink("/etc/passwd", "/nonexistent-aos/l"); }
static long p_link(void) { return link("/etc/passwd", "/nonexistent-aos/l"); }
/* a fork as clone(2) makes it: without CLONE_THREAD */
static long p_fork(void)
{
    long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0, NULL, NULL, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid > 0 ? 0 : pid;
}
/* posix_spawn: glibc's clone(CLONE_VM|CLONE_VFORK), which LeakSanitizer's clone rule in
 * the sanitized build must not let through either */
extern char **environ;
static long p_spawn(void)
{
    pid_t pid;
    char *argv[] = {"/bin/true", NULL};
    int rc = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
    if (rc)
        return errno = rc, -1;
    waitpid(pid, NULL, 0);
    return 0;
}
/* pid 1 of an agent's namespace is bubblewrap's reaper: never attachable */
static long p_ptrace1(void)
{
    long r = ptrace(PTRACE_ATTACH, 1, NULL, NULL);
    if (r == 0)
        ptrace(PTRACE_DETACH, 1, NULL, NULL);
    return r;
}

typedef struct esc_probe {
    const char *name;
    esc_fn fn;
    int safe; /* harmless without a filter, also as root */
} esc_probe;

static const esc_probe esc_probes[] = {
    {"socket(AF_INET)", p_inet, 1},
    {"socket(AF_INET6)", p_inet6, 1},
    {"socket(AF_NETLINK)", p_netlink, 1},
    {"socket(AF_PACKET)", p_packet, 1},
    {"socketpair(AF_INET)", p_inet_pair, 1},
    {"setns", p_setns, 1},
    {"mount", p_mount, 1},
    {"umount2", p_umount, 1},
    {"chroot", p_chroot, 1},
    {"bpf", p_bpf, 1},
    {"perf_event_open", p_perf, 1},
    {"keyctl", p_keyctl, 1},
    {"io_uring_setup", p_uring, 1},
    {"process_vm_readv", p_vm_readv, 1},
    {"finit_module", p_finit_module, 1},
    {"open_by_handle_at", p_handle, 1},
    {"userfaultfd", p_userfaultfd, 1},
    {"ioctl(TIOCSTI)", p_tiocsti, 1},
    {"symlink", p_symlink, 1},
    {"link", p_link, 1},
    {"clone without CLONE_THREAD (fork)", p_fork, 1},
    {"posix_spawn (clone with CLONE_VFORK)", p_spawn, 1},
    {"unshare(CLONE_NEWNET)", p_netns, 1},
    {"unshare(CLONE_NEWUSER)", p_userns, 1},
    {"ptrace(PTRACE_ATTACH, 1)", p_ptrace1, 0},
};

int esc_run(FILE *out, int safe_only)
{
    int bad = 0;
    for (size_t i = 0; i < sizeof esc_probes / sizeof esc_probes[0]; i++) {
        const esc_probe *p = &esc_probes[i];
        if (safe_only && !p->safe)
            continue;
        errno = 0;
        long r = p->fn();
        int e = errno;
        if (r < 0 && e == EPERM) {
            fprintf(out, "escape: %s: refused (EPERM)\n", p->name);
            continue;
        }
        bad++;
        if (r < 0)
            fprintf(out, "escape: %s: NOT REFUSED: failed otherwise (%s)\n", p->name,
                    strerror(e));
        else
            fprintf(out, "escape: %s: NOT REFUSED: it ran (%ld)\n", p->name, r);
    }
    return bad;
}

static void *esc_thread(void *arg) { return arg; }

int esc_allowed(FILE *out, const char *dir)
{
    int bad = 0;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        fprintf(out, "allowed: socket(AF_UNIX): %s\n", strerror(errno));
        bad++;
    } else {
        close(s);
    }
    pthread_t t;
    int rc = pthread_create(&t, NULL, esc_thread, NULL);
    if (rc) {
        fprintf(out, "allowed: pthread_create: %s\n", strerror(rc));
        bad++;
    } else {
        pthread_join(t, NULL);
    }
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/escape-probe.tmp", dir);
    snprintf(b, sizeof b, "%s/escape-probe", dir);
    int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, "x", 1) != 1 || fsync(fd) != 0 || close(fd) != 0 ||
        rename(a, b) != 0 || unlink(b) != 0) {
        fprintf(out, "allowed: a file in %s: %s\n", dir, strerror(errno));
        bad++;
    }
    struct timespec ts = {0, 1000000};
    if (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) != 0) {
        fprintf(out, "allowed: clock_nanosleep failed\n");
        bad++;
    }
    struct clone_args ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    long r = syscall(SYS_clone3, &ca, sizeof ca);
    if (r == 0)
        _exit(0); /* a child: the filter let clone3 through */
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    if (r >= 0 || errno != ENOSYS) {
        fprintf(out, "allowed: clone3 gave %s, not ENOSYS\n", r >= 0 ? "a child" : strerror(errno));
        bad++;
    }
    return bad;
}
