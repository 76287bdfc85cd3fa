/* aosd: the aos kernel. Takes the data dir's lock, starts PostgreSQL and the servers,
 * routes requests, and turns signals into loop events; SIGTERM stops all in order. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agents.h"
#include "keys.h"
#include "aos/log.h"
#include "audit.h"
#include "cgroup.h"
#include "childlog.h"
#include "diskguard.h"
#include "fsafe.h"
#include "config.h"
#include "llmq.h"
#include "logs.h"
#include "notify.h"
#include "retain.h"

#define STOP_AGENTS_MS 30000u /* aosctl shutdown's default, and a signal's: then killed */
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

/* The single-user layout of older versions ran everything as this account. */
static uid_t legacy_uid(void)
{
    struct passwd *pw = getpwnam("aos");
    return pw && pw->pw_uid != 0 ? pw->pw_uid : (uid_t)-1;
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
    if (chdir("/") != 0)
        return 1;
    /* orphans of our children come to us, to be reaped and, if alive, killed */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    char why[1024] = "";
    datadir dd;
    gid_t pg_gid;
    if (sup_users(why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        return 1;
    }
    uid_t pg_uid = sup_pg_uid(&pg_gid);
    aos_err drc = dd_open(&cfg, pg_uid, pg_gid, legacy_uid(), &dd, why, sizeof why);
    if (drc != AOS_OK) {
        aos_error("data dir %s: %s", cfg.data_dir, why);
        return 1;
    }
    if (cfg.log_to_file) {
        /* opened by us, in the directory only root can write: never through a link */
        int lfd = fs_open(dd.dir, "aosd.log", O_WRONLY | O_CREAT | O_APPEND, 0600, why,
                          sizeof why);
        if (lfd < 0) {
            aos_error("log: %s", why);
            return 1;
        }
        dup2(lfd, 2);
        close(lfd);
    }
    logs_init(dd.dir, cfg.log_to_file, dd.pg_log, (uint64_t)cfg.log_max_mb << 20, cfg.log_keep);
    dg_init(dd.dir, cfg.disk_min_free_mb);

    /* before any child: one left in aosd's cgroup keeps controllers from being enabled */
    char cgwhy[256] = "";
    cg_setup(cgwhy, sizeof cgwhy);
    aos_info("cgroup: %s", cgwhy);
    sup_set_cgroup(cgwhy);

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

    char url[AOS_PATH_MAX + 32], sock[AOS_PATH_MAX + 16];
    snprintf(sock, sizeof sock, "%s/control.sock", cfg.data_dir);
    /* we hold the lock: any socket file here is a dead aosd's (DATA is root's alone) */
    unlinkat(dd.dir, "control.sock", 0);
    if (sup_init(&cfg, &dd, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    if (kaud_open(cfg.audit_fail_open, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    /* the LLM scheduler before the router: the first call may come at once */
    if (llmq_open(conf_llm(cfg.cf), dd.dir, route_llm_hooks(), why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    char aurl[AOS_PATH_MAX + 64];
    if (agents_init(&cfg, &dd, aurl, sizeof aurl, why, sizeof why) != AOS_OK) {
        aos_error("agents: %s", why);
        sup_fini();
        return 1;
    }
    route *r = NULL;
    snprintf(url, sizeof url, "ipc://%s", sock);
    if (route_open(&r, url, why, sizeof why) != AOS_OK ||
        route_open_agents(r, aurl, why, sizeof why) != AOS_OK ||
        agents_socket_made(why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    agents_load(); /* waits on storage's link until storage is ready */
    keys_load();
    if (retain_start(cfg.run_retention_s, cfg.run_prune_interval_s, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        sup_fini();
        return 1;
    }
    aos_info("aosd %s on %s (%s PostgreSQL; %s)", AOS_VERSION, cfg.data_dir,
             cfg.pg_dsn[0] ? "external" : "embedded",
             geteuid() == 0 ? "each child as its own user"
                            : "not root: every child as this user, see README");

    /* stopping: 1 the agents (at their step boundaries, they need the servers for that),
     * 2 the servers, then postgres (supervise.c keeps that order) */
    int stopping = 0;
    uint64_t agents_until = 0;
    unsigned agents_told = 0;
    ntf_init();
    for (;;) {
        uint64_t now = aos_mono_ms();
        uint64_t wake = sup_tick(now);
        uint64_t awake = agents_tick(now);
        keys_tick(now);
        if (awake < wake)
            wake = awake;
        route_tick(r, now);
        logs_tick(now);
        dg_tick(now);
        ntf_tick(now, !stopping && sup_all_running());
        uint64_t asked_ms;
        if (sup_stop_requested(&asked_ms) && !stopping) {
            aos_info("aosctl shutdown: stopping (agents within %llu s)",
                     (unsigned long long)((asked_ms ? asked_ms : STOP_AGENTS_MS) / 1000));
            stopping = 1;
            agents_until = now + (asked_ms ? asked_ms : STOP_AGENTS_MS);
            agents_shutdown();
            retain_stop(0);
        }
        if (stopping == 1) {
            unsigned left = agents_running();
            if (left && now < agents_until) {
                if (left != agents_told) { /* said when it changes, not every turn */
                    char ph[64];
                    snprintf(ph, sizeof ph, "agents: %u left", left);
                    sup_set_phase(ph);
                    ntf_stopping(ph);
                    agents_told = left;
                }
            } else {
                if (left)
                    aos_warn("shutdown: %u agents still running after the timeout: killed", left);
                agents_kill_all();
                stopping = 2;
                sup_set_phase("servers");
                ntf_stopping("servers");
                sup_shutdown();
            }
        }
        if (stopping == 2 && sup_stopped() && agents_stopped())
            break;
        int timeout = wake > now ? (int)(wake - now) : 0;
        if (timeout > 100)
            timeout = 100;
        struct pollfd pfd[1 + 32] = {{.fd = sfd, .events = POLLIN}};
        int nlog = clog_pollfds(pfd + 1, 32);
        if (poll(pfd, (nfds_t)(1 + nlog), timeout) < 0 && errno != EINTR) {
            aos_error("poll: %s", strerror(errno));
            break;
        }
        clog_service(pfd + 1, nlog);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo == SIGCHLD) {
                sup_reap();
            } else if (si.ssi_signo == SIGHUP) {
                aos_info("SIGHUP: nothing to reload yet");
            } else if (!stopping) {
                aos_info("signal %u: stopping", si.ssi_signo);
                stopping = 1;
                agents_until = aos_mono_ms() + STOP_AGENTS_MS;
                agents_shutdown();
                retain_stop(0);
            }
        }
    }
    retain_stop(2000);
    kaud_close(); /* what still waits for a record is refused before the router goes */
    llmq_close(); /* the admin's settings and the usage so far, written a last time */
    route_close(r);
    sup_fini();
    cg_teardown(cgwhy, sizeof cgwhy);
    if (cgwhy[0])
        aos_info("cgroup: %s", cgwhy);
    unlinkat(dd.dir, "control.sock", 0);
    aos_info("stopped");
    close(dd.lock);
    return 0;
}
