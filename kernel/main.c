/* aosd: the aos kernel. Takes the data dir's lock, starts PostgreSQL and the servers,
 * routes requests, and turns signals into loop events; SIGTERM stops all in order. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aos/log.h"
#include "config.h"
#include "route.h"
#include "supervise.h"

#ifdef AOS_SANITIZE
/* aosd leaves its nng sockets to the exit (nng 1.5.2's nng_close can hang, see
 * route_close), so messages still queued inside nng at that moment look leaked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libnng.so\n";
}
#endif

/* mkdir -p, the last component private (0700) and, when root, owned by the service user
 * so the embedded PostgreSQL (which refuses root) can live inside it. */
static int make_data_dir(const kcfg *c)
{
    char p[AOS_PATH_MAX];
    snprintf(p, sizeof p, "%s", c->data_dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "aosd: mkdir %s: %s\n", p, strerror(errno));
            return -1;
        }
        *s = '/';
    }
    if (mkdir(p, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "aosd: mkdir %s: %s\n", p, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "aosd: %s is not a directory\n", p);
        return -1;
    }
    if (st.st_uid != geteuid() && st.st_uid != c->uid) {
        fprintf(stderr, "aosd: data dir %s belongs to uid %u, not to us\n", p,
                (unsigned)st.st_uid);
        return -1;
    }
    if (chmod(p, 0700) != 0 ||
        (geteuid() == 0 && chown(p, c->uid, c->gid) != 0)) {
        fprintf(stderr, "aosd: cannot make %s private: %s\n", p, strerror(errno));
        return -1;
    }
    return 0;
}

/* One aosd per data dir: an flock held for our lifetime; the file names the holder. */
static int take_lock(const kcfg *c)
{
    char path[AOS_PATH_MAX + 16], buf[32];
    snprintf(path, sizeof path, "%s/aosd.lock", c->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "aosd: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        fprintf(stderr, "aosd: another aosd (pid %d) is already running on %s\n", atoi(buf),
                c->data_dir);
        close(fd);
        return -1;
    }
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        aos_warn("cannot write %s", path);
    return fd; /* kept open: the lock lives as long as we do */
}

int main(int argc, char **argv)
{
    kcfg cfg;
    int rc = kcfg_load(&cfg, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    aos_log_init("aosd");
    signal(SIGPIPE, SIG_IGN);
    umask(077);
    /* orphans of our children come to us, to be reaped and, if alive, killed */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (make_data_dir(&cfg) != 0)
        return 1;
    int lockfd = take_lock(&cfg);
    if (lockfd < 0)
        return 1;

    /* signals become events on the loop: nothing runs in a handler */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGCHLD);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        aos_error("signalfd: %s", strerror(errno));
        return 1;
    }

    char why[1024] = "", url[AOS_PATH_MAX + 32], sock[AOS_PATH_MAX + 16];
    snprintf(sock, sizeof sock, "%s/control.sock", cfg.data_dir);
    unlink(sock); /* we hold the lock: any socket file here is a dead aosd's */
    if (sup_init(&cfg, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    route *r = NULL;
    snprintf(url, sizeof url, "ipc://%s", sock);
    if (route_open(&r, url, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    aos_info("aosd %s on %s (%s PostgreSQL%s%s)", AOS_VERSION, cfg.data_dir,
             cfg.pg_dsn[0] ? "external" : "embedded", cfg.user[0] ? ", children as " : "",
             cfg.user);

    int stopping = 0;
    for (;;) {
        uint64_t now = aos_mono_ms();
        uint64_t wake = sup_tick(now);
        if (stopping && sup_stopped())
            break;
        int timeout = wake > now ? (int)(wake - now) : 0;
        if (timeout > 100)
            timeout = 100;
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        if (poll(&pfd, 1, timeout) < 0 && errno != EINTR) {
            aos_error("poll: %s", strerror(errno));
            break;
        }
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo == SIGCHLD) {
                sup_reap();
            } else if (si.ssi_signo == SIGHUP) {
                aos_info("SIGHUP: nothing to reload yet");
            } else if (!stopping) {
                aos_info("signal %u: stopping", si.ssi_signo);
                stopping = 1;
                sup_shutdown();
            }
        }
    }
    route_close(r);
    sup_fini();
    unlink(sock);
    aos_info("stopped");
    close(lockfd);
    return 0;
}
