/* The supervisor's table of children and its state machine: start in order, notice
 * exits (SIGCHLD) and hangs (heartbeats), restart under policy, stop in order. */
#include "supervise.h"

#include "agents.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aos.pb-c.h"
#include "aos/log.h"
#include "aos/servers.h"
#include "cgroup.h"
#include "diskguard.h"
#include "toolcfg.h"
#include "childlog.h"
#include "fsafe.h"
#include "pgembed.h"
#include "procview.h"
#include "spawn.h"


/* ---- policy (the why is in supervise.h) ---------------------------------------------- */

static unsigned charged_within(const sup_track *t, uint64_t now_ms, uint64_t period_ms)
{
    unsigned recent = 0, have = t->n < SUP_HIST ? t->n : SUP_HIST;
    for (unsigned i = 0; i < have; i++)
        if (now_ms - t->at[i] <= period_ms)
            recent++;
    return recent;
}

int sup_own_end(int st)
{
    if (WIFEXITED(st))
        return 1;
    if (!WIFSIGNALED(st))
        return 0;
    switch (WTERMSIG(st)) {
    case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE: case SIGABRT: case SIGSYS:
    case SIGTRAP: case SIGXCPU: case SIGXFSZ:
        return 1; /* its own fault, or its own rlimit */
    default:
        return 0; /* SIGKILL, SIGTERM, ...: anyone may have sent it */
    }
}

sup_action sup_decide(sup_track *t, const sup_policy *p, const sup_exit *x, uint64_t now_ms,
                      uint64_t *delay_ms, char *reason, size_t reason_len)
{
    *delay_ms = 0;
    if (reason_len)
        reason[0] = 0;
    if (!p->permanent && x->clean)
        return SUP_ACT_DONE;
    unsigned long long secs = (unsigned long long)(p->period_ms / 1000);
    int stable = x->ran_ms >= p->stable_ms;
    int got_going = x->ran_ms >= p->loop_ms && x->ran_ms > 0;
    int self = x->own || x->hung;
    if (x->excused && !x->hung) {
        t->not_charged++;
        snprintf(reason, reason_len, "not counted: its database was away");
    } else if (got_going && !self) {
        if (stable)
            t->n = 0; /* it got going: whatever looked like a loop before is over */
        t->not_charged++;
        snprintf(reason, reason_len, "not counted: killed after it ran %llu ms",
                 (unsigned long long)x->ran_ms);
    } else {
        t->at[t->n % SUP_HIST] = now_ms;
        t->n++;
        unsigned recent = charged_within(t, now_ms, p->period_ms);
        if (recent > p->intensity) {
            snprintf(reason, reason_len, "%u restarts in %llu s (limit %u/%llu s) after "
                     "exits of its own, hangs or kills within %llu ms of READY: a crash loop",
                     recent, secs, p->intensity, secs, (unsigned long long)p->loop_ms);
            return SUP_ACT_FAIL;
        }
        snprintf(reason, reason_len, "counted: %u of %u in %llu s", recent, p->intensity,
                 secs);
    }
    if (stable)
        t->streak = 0;
    if (t->streak > 0) {
        uint64_t d = p->backoff_min_ms;
        for (unsigned i = 1; i < t->streak && d < p->backoff_max_ms; i++)
            d *= 2;
        *delay_ms = d < p->backoff_max_ms ? d : p->backoff_max_ms;
    }
    t->streak++;
    return SUP_ACT_RESTART;
}

/* ---- the table ---------------------------------------------------------------------- */

typedef enum { ST_STOPPED, ST_STARTING, ST_RUNNING, ST_BACKOFF, ST_STOPPING, ST_FAILED,
               ST_MIGRATING } cstate;
static const char *const state_names[] = {"stopped", "starting", "running", "backoff",
                                          "stopping", "failed", "migrating"};

/* What a child is: data, not tests scattered over the code. */
typedef enum { KIND_PG, KIND_SERVER } ckind;

#define REPORT_MAX 1024

typedef struct child {
    const char *name;
    const char *user;     /* its own OS account when aosd is root */
    const char *role;     /* PostgreSQL role, NULL: no database */
    ckind kind;
    int cgroup;           /* gets a delegated cgroup subtree (aos-tool: per-run cgroups) */
    int own_dir;          /* gets DATA/<name>, its uid's alone, as --dir */
    int workspaces;       /* gets DATA/workspaces, its uid's alone, as --workspaces */
    int enabled;
    uid_t uid;
    gid_t gid;
    cstate state;
    pid_t pid;
    pid_t mig_pid;        /* its one-shot migrator, while it runs */
    int mig_why;          /* read end + 1 of the pipe its migrator says a refusal on; 0 */
    int migrated;         /* schema brought up to date since aosd started */
    uint64_t started, ready_at, next_start, stop_step_at, hb_sent;
    int stop_step;        /* 0 asked, 1 SIGTERM sent, 2 SIGKILL sent */
    int restart_after_stop;
    uint64_t link_wait_since; /* due to start, waiting for the old link to be let go */
    unsigned restarts;
    char last_exit[128];
    char pending_why[96]; /* why aosd itself killed it (heartbeat) */
    char reason[400];
    char health[128];
    char cgroup_why[256];
    uint8_t report[REPORT_MAX]; /* its READY payload (a SandboxReport), untrusted */
    size_t report_len;
    sup_track track;
    klink *link;
    atomic_int failed;    /* state == ST_FAILED, readable without the lock by the router */
} child;

/* Start order is table order; stop order is the reverse. PostgreSQL first, then the
 * servers of the one list (aos/servers.h), each with the account and role named after it. */
#define KID(n, flags)                                                                     \
    {.name = #n, .user = "aos-" #n, .role = ((flags) & AOS_SRV_DB) ? "aos_" #n : NULL,      \
     .kind = KIND_SERVER, .cgroup = ((flags) & AOS_SRV_CGROUP) != 0,                     \
     .own_dir = ((flags) & AOS_SRV_DIR) != 0,                                             \
     .workspaces = ((flags) & AOS_SRV_WORKSPACES) != 0},
static child kids[] = {
    {.name = AOS_CHILD_PG, .user = "aos-pg", .kind = KIND_PG},
    AOS_SERVERS(KID)
};
#undef KID
#define NKIDS (sizeof kids / sizeof kids[0])
_Static_assert(NKIDS == 1 + AOS_SRV_COUNT, "postgres and every server of aos/servers.h");
#define PG (&kids[0])

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const kcfg *cfg;
static const datadir *dd;
static sup_policy policy;
static atomic_int shutting_down;
/* aosctl shutdown asks the loop (any thread may); the loop says what it is stopping */
static atomic_int stop_asked;
static atomic_ullong stop_asked_timeout_ms;
static char stop_phase[96]; /* under mu */
static uint64_t boot_mono;
static pid_t migrating_pid;  /* one migrator at a time: the first creates the database */

static child *find(const char *name)
{
    for (size_t i = 0; i < NKIDS; i++)
        if (kids[i].enabled && !strcmp(kids[i].name, name))
            return &kids[i];
    return NULL;
}

static int pg_running(void)
{
    return !PG->enabled || PG->state == ST_RUNNING;
}

/* Only a migrator needs the database to start: a server whose schema is migrated starts
 * without it, says it is waiting for it (kernel.status) and serves once it is back, so its
 * recovery never queues behind postgres'. */
static int waits_for_pg(const child *k)
{
    return k->kind != KIND_PG && k->role && !k->migrated && !pg_running();
}

/* An exit of k at now is the database's fault, not k's (see SUP_DEP_GRACE_MS). Only the
 * embedded postgres is watched: an external one's outages are not aosd's to see. */
static int dep_away(const child *k, uint64_t now)
{
    return k->kind != KIND_PG && k->role && PG->enabled &&
           (PG->state != ST_RUNNING || now - PG->ready_at < SUP_DEP_GRACE_MS);
}

/* The environment a server gets: the minimal one and the AOS_* settings; no DSN and no
 * secret ever travels here (/proc/<pid>/environ stays readable for its whole life). */
#define ENV_MAX SPAWN_ENV_MAX
static void child_env(char **envp, char *wk, size_t wkcap)
{
    size_t e = spawn_env(envp, ENV_MAX, 1);
    /* an AOS_* variable aos.yaml reads a secret or an API key from stays with aosd: its
     * value reaches the one server that needs it, on a sealed fd */
    size_t k = 0;
    for (size_t i = 0; i < e; i++) {
        const char *eq = strchr(envp[i], '=');
        if (!(cfg->cf && eq && conf_env_is_secret(cfg->cf, envp[i], (size_t)(eq - envp[i]))))
            envp[k++] = envp[i];
    }
    e = k;
    if (cfg->workers) {
        snprintf(wk, wkcap, "AOS_WORKERS=%u", cfg->workers);
        envp[e++] = wk;
    }
    envp[e] = NULL;
}

/* A secret for a child: a sealed memfd it inherits and reads once, from offset 0 to EOF. */
static int sealed_fd(const char *name, const void *buf, size_t len)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, (const char *)buf + off, len - off);
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int secret_fd(const char *text)
{
    return sealed_fd("aos-dsn", text, strlen(text));
}

/* aos-llm's part of aos.yaml, API keys included: packed into a sealed memfd, never argv or
 * the environment (both readable in /proc for the child's whole life). */
static int llm_config_fd(void)
{
    const Aos__Llm__Config *lc = conf_llm(cfg->cf);
    size_t len = aos__llm__config__get_packed_size(lc);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    aos__llm__config__pack(lc, buf);
    int fd = sealed_fd("aos-llm-config", buf, len);
    int e = errno;
    explicit_bzero(buf, len); /* the keys leave no copy in freed memory */
    free(buf);
    errno = e;
    return fd;
}

/* aos-audit's: the audit: section (the OTLP export), header values included: a collector's
 * key travels like a provider's. Only when aos.yaml has one (else aos-audit exports
 * nothing and keeps its network namespace). */
static int audit_config_fd(void)
{
    const Aos__Audit__Config *ac = conf_audit(cfg->cf);
    size_t len = aos__audit__config__get_packed_size(ac);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    aos__audit__config__pack(ac, buf);
    int fd = sealed_fd("aos-audit-config", buf, len);
    int e = errno;
    explicit_bzero(buf, len);
    free(buf);
    errno = e;
    return fd;
}

/* aos-tool's: DATA/tools' descriptor files, read at each start so that a restart picks up
 * new ones, with aos.yaml's MCP servers and secrets. */
static int tool_config_fd(void)
{
    size_t extra_len = 0, len = 0;
    uint8_t *extra = cfg->cf ? conf_tool_packed(cfg->cf, &extra_len) : NULL;
    uint8_t *buf = toolcfg_pack(dd->dir, extra, extra_len, &len);
    if (extra) {
        explicit_bzero(extra, extra_len);
        free(extra);
    }
    if (!buf)
        return -1;
    int fd = sealed_fd("aos-tool-config", buf, len);
    int e = errno;
    explicit_bzero(buf, len);
    free(buf);
    errno = e;
    return fd;
}

/* aos-api's: the api: section, with the TLS key when there is one (a secret: the sealed
 * memfd is its only copy, and the buffer is wiped). */
static int api_config_fd(void)
{
    Aos__ApiConfig ac = AOS__API_CONFIG__INIT;
    const conf_kernel *ck = cfg->cf ? conf_kernel_settings(cfg->cf) : NULL;
    if (ck && ck->has_api) {
        ac.port = ck->api_port;
        ac.max_connections = ck->api_max_connections;
        ac.max_body_bytes = ck->api_max_body;
        ac.idle_timeout_s = ck->api_idle_s;
        ac.listen = (ProtobufCBinaryData){strlen(ck->api_listen), (uint8_t *)ck->api_listen};
        if (ck->api_tls_cert && ck->api_tls_key) {
            ac.tls_cert_pem = (ProtobufCBinaryData){ck->api_tls_cert_len,
                                                    (uint8_t *)ck->api_tls_cert};
            ac.tls_key_pem = (ProtobufCBinaryData){ck->api_tls_key_len,
                                                   (uint8_t *)ck->api_tls_key};
        }
        if (ck->has_api_token)
            ac.metrics_token_hash = (ProtobufCBinaryData){sizeof ck->api_token_hash,
                                                          (uint8_t *)ck->api_token_hash};
    }
    size_t len = aos__api_config__get_packed_size(&ac);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    aos__api_config__pack(&ac, buf);
    int fd = sealed_fd("aos-api-config", buf, len);
    int e = errno;
    explicit_bzero(buf, len);
    free(buf);
    errno = e;
    return fd;
}

/* The DSN a server's role logs in with: DATA/etc/<server>.dsn when root put one there
 * (an external PostgreSQL with a password per role), else derived from the admin's. */
static void role_dsn(const child *k, char *out, size_t cap)
{
    char why[160], name[64];
    snprintf(name, sizeof name, "%s.dsn", k->name);
    int fd = fs_open_owned_by(dd->etc, name, geteuid(), why, sizeof why);
    if (fd >= 0) {
        ssize_t n = read(fd, out, cap - 1);
        close(fd);
        out[n > 0 ? n : 0] = 0;
        char *nl = strchr(out, '\n');
        if (nl)
            *nl = 0;
        if (out[0])
            return;
    }
    pgem_role_dsn(cfg, k->role, out, cap);
}

static gid_t ws_gid; /* DATA/workspaces' group: the agents' (sup_users) */

static void start_failed(child *k, uint64_t now, const char *what)
{
    snprintf(k->reason, sizeof k->reason, "%s: %s", what, strerror(errno));
    k->state = ST_BACKOFF;
    k->next_start = now + 1000;
}

static void start_child(child *k, uint64_t now)
{
    char *argv[PGEM_ARGV_MAX];
    char bin[4200], url[AOS_PATH_MAX + 32], pgbuf[4096], keep[AOS_PATH_MAX + 8], wk[32];
    char owndir[AOS_PATH_MAX + 32], wsdir[AOS_PATH_MAX + 32];
    cg_deleg cg = {.procs_fd = -1};
    cg_deleg_v1 cg1 = {.procs_fd = {-1, -1}};
    char *envp[ENV_MAX + 4];
    char dsn[2048], cfgfd[8];
    int n = 0;
    spawn_req r = {.argv = argv, .fds = {-1, -1, -1, -1}, .deathsig = SIGKILL};
    _Static_assert(SPAWN_FDS_MAX == 4, "every slot -1: the first -1 ends the list");

    k->pending_why[0] = 0;
    k->report_len = 0;
    k->health[0] = 0;
    if (k->kind == KIND_PG) {
        if (pgem_argv(cfg, pgbuf, sizeof pgbuf, argv) != AOS_OK) {
            snprintf(k->reason, sizeof k->reason, "postgres command line too long");
            k->state = ST_FAILED;
            atomic_store(&k->failed, 1);
            return;
        }
        r.out_fd = dd->pg_log;
        r.uid = k->uid;
        r.gid = k->gid;
        r.cwd = cfg->data_dir;
        r.no_new_privs = 1;
        r.deathsig = SIGQUIT; /* postgres' immediate shutdown: its backends go with it */
        pgem_probe_reset();
    } else {
        snprintf(bin, sizeof bin, "%s/aos-%s", cfg->bin_dir, k->name);
        snprintf(url, sizeof url, "ipc://%s/run/%s.sock", cfg->data_dir, k->name);
        snprintf(keep, sizeof keep, "%s/run", cfg->data_dir);
        argv[n++] = bin;
        argv[n++] = "--link";
        argv[n++] = url;
        argv[n++] = "--name";
        argv[n++] = (char *)k->name;
        argv[n++] = "--keep";
        argv[n++] = keep;
        if (geteuid() == 0) { /* the server drops to its own user once it is set up */
            argv[n++] = "--user";
            argv[n++] = (char *)k->user;
            if (k->workspaces) { /* the agents' group: the workspaces are shared with them */
                argv[n++] = "--group-of";
                argv[n++] = AOS_AGENT_USER;
            }
        }
        if (k->role) {
            role_dsn(k, dsn, sizeof dsn);
            if ((r.fds[0] = secret_fd(dsn)) < 0) {
                start_failed(k, now, "memfd for the DSN");
                return;
            }
            argv[n++] = "--dsn-fd";
            argv[n++] = "3";
        }
        int audit = !strcmp(k->name, "audit") && conf_audit(cfg->cf);
        if ((!strcmp(k->name, "llm") && cfg->cf) || !strcmp(k->name, "tool") ||
            !strcmp(k->name, "api") || audit) {
            /* the next free slot: r.fds[i] is fd 3 + i in the child (spawn.c) */
            int slot = r.fds[0] >= 0 ? 1 : 0;
            int llm = !strcmp(k->name, "llm"), api = !strcmp(k->name, "api");
            if ((r.fds[slot] = llm     ? llm_config_fd()
                               : api   ? api_config_fd()
                               : audit ? audit_config_fd()
                                       : tool_config_fd()) < 0) {
                if (r.fds[0] >= 0)
                    close(r.fds[0]);
                start_failed(k, now, llm     ? "memfd for the LLM configuration"
                                     : api   ? "memfd for the front door's configuration"
                                     : audit ? "memfd for the audit configuration"
                                             : "memfd for the tool configuration");
                return;
            }
            snprintf(cfgfd, sizeof cfgfd, "%d", 3 + slot);
            argv[n++] = "--config-fd";
            argv[n++] = cfgfd;
        }
        if (k->cgroup) {
            cg_delegate(k->name, k->uid, k->gid, &cg);
            snprintf(k->cgroup_why, sizeof k->cgroup_why, "%s", cg.why);
            if (cg.procs_fd >= 0) {
                r.cgroup_fd = cg.procs_fd;
                argv[n++] = "--keep"; /* its own subtree stays writable in its root */
                argv[n++] = cg.path;
            }
            /* hybrid hosts: pids and memory may still be v1 hierarchies */
            cg_delegate_v1(k->name, k->uid, k->gid, &cg, &cg1);
            for (int i = 0; i < 2; i++)
                if (cg1.procs_fd[i] >= 0) {
                    r.cgroup_v1_fd[i] = cg1.procs_fd[i];
                    argv[n++] = "--keep";
                    argv[n++] = cg1.path[i];
                }
            if (cg1.why[0])
                snprintf(k->cgroup_why + strlen(k->cgroup_why),
                         sizeof k->cgroup_why - strlen(k->cgroup_why), "; %s", cg1.why);
        }
        /* made (or checked: ours, a directory, no symlink) at every start, so a dir
         * removed or re-owned by hand is put right before the server relies on it */
        const char *dirs[2][2] = {{k->own_dir ? k->name : NULL, "--dir"},
                                  {k->workspaces ? "workspaces" : NULL, "--workspaces"}};
        char *paths[2] = {owndir, wsdir};
        for (int d = 0; d < 2; d++) {
            if (!dirs[d][0])
                continue;
            char why[256];
            /* DATA/workspaces: the agents' group may pass through (bubblewrap reaches an
             * agent's own workspace by its path), not list it; each one is 02770 */
            int fd = fs_dir(dd->dir, dirs[d][0], d ? 0710 : 0700, k->uid, d ? ws_gid : k->gid,
                            why, sizeof why);
            if (fd < 0) {
                aos_error("%s: DATA/%s: %s", k->name, dirs[d][0], why);
                for (int i = 0; i < SPAWN_FDS_MAX && r.fds[i] >= 0; i++)
                    close(r.fds[i]);
                if (cg.procs_fd >= 0)
                    close(cg.procs_fd);
                for (int i = 0; i < 2; i++)
                    if (cg1.procs_fd[i] >= 0)
                        close(cg1.procs_fd[i]);
                errno = EACCES;
                start_failed(k, now, d ? "making the workspaces directory"
                                       : "making its directory");
                return;
            }
            close(fd);
            snprintf(paths[d], AOS_PATH_MAX + 32, "%s/%s", cfg->data_dir, dirs[d][0]);
            argv[n++] = (char *)dirs[d][1];
            argv[n++] = paths[d];
        }
        if (cfg->test_hooks)
            argv[n++] = "--test-hooks";
        argv[n] = NULL;
        child_env(envp, wk, sizeof wk);
        r.envp = envp;
        r.out_fd = clog_pipe(k->name);
    }
    pid_t pid = spawn_child(&r);
    int e = errno;
    for (int i = 0; i < SPAWN_FDS_MAX && r.fds[i] >= 0; i++)
        close(r.fds[i]);
    if (cg.procs_fd >= 0)
        close(cg.procs_fd);
    for (int i = 0; i < 2; i++)
        if (cg1.procs_fd[i] >= 0)
            close(cg1.procs_fd[i]);
    if (k->kind != KIND_PG && r.out_fd >= 0)
        close(r.out_fd);
    if (pid < 0) {
        errno = e;
        start_failed(k, now, "fork");
        return;
    }
    if (k->kind != KIND_PG)
        clog_set_pid(k->name, pid);
    k->pid = pid;
    k->state = ST_STARTING;
    k->started = now;
    snprintf(k->reason, sizeof k->reason, k->kind == KIND_PG
             ? "started (pid %d): waiting until it accepts connections"
             : "started (pid %d): waiting for its READY", (int)pid);
    if (k->link)
        link_expect(k->link, pid);
    aos_info("started %s (pid %d)", k->name, (int)pid);
}

/* The schema of a database server is brought up to date by a one-shot migrator with the
 * admin's DSN, running as PostgreSQL's uid, once per aosd start and before the server's
 * first start; so a restart stays fast and no long-running server ever holds the
 * admin's rights. One at a time: the first one creates the database. */
static void start_migrator(child *k, uint64_t now)
{
    char bin[4200], dsn[2048], wk[32], logname[32];
    char *envp[ENV_MAX + 4];
    snprintf(bin, sizeof bin, "%s/aos-%s", cfg->bin_dir, k->name);
    /* it starts as root and drops to PostgreSQL's uid itself: its binary may sit where
     * only root can reach (a build tree under /root) */
    /* a refusal (a schema newer than this aos) comes back on fd 4 as one short message,
     * which fits the pipe's buffer: read once the migrator has exited, for the status */
    int wp[2] = {-1, -1};
    if (k->mig_why) {
        close(k->mig_why - 1);
        k->mig_why = 0;
    }
    if (pipe2(wp, O_CLOEXEC | O_NONBLOCK) != 0)
        wp[0] = wp[1] = -1;
    char *argv[12] = {bin, "--migrate", "--name", (char *)k->name, "--dsn-fd", "3"};
    int an = 6;
    if (wp[1] >= 0) {
        argv[an++] = "--why-fd";
        argv[an++] = "4";
    }
    if (geteuid() == 0) {
        argv[an++] = "--user";
        argv[an++] = (char *)PG->user;
    }
    argv[an] = NULL;
    pgem_admin_dsn(cfg, dsn, sizeof dsn);
    child_env(envp, wk, sizeof wk);
    snprintf(logname, sizeof logname, "migrate-%s", k->name);
    spawn_req r = {.argv = argv, .envp = envp,
                   .out_fd = clog_pipe(logname), .fds = {secret_fd(dsn), wp[1], -1},
                   .deathsig = SIGKILL, .no_new_privs = 1};
    if (r.fds[0] < 0)
        r.fds[1] = -1;
    pid_t pid = r.fds[0] >= 0 ? spawn_child(&r) : -1;
    int e = errno;
    if (wp[1] >= 0)
        close(wp[1]);
    if (pid >= 0 && wp[0] >= 0)
        k->mig_why = wp[0] + 1;
    else if (wp[0] >= 0)
        close(wp[0]);
    if (r.fds[0] >= 0)
        close(r.fds[0]);
    if (r.out_fd >= 0)
        close(r.out_fd);
    if (pid < 0) {
        errno = e;
        start_failed(k, now, "starting its migrator");
        return;
    }
    clog_set_pid(logname, pid);
    k->mig_pid = migrating_pid = pid;
    k->state = ST_MIGRATING;
    snprintf(k->reason, sizeof k->reason, "migrating schema (pid %d)", (int)pid);
}

/* Start k unless its link still holds the dead incarnation's pipe; after 2 s of that,
 * give the link a new socket (nng may never let go of the old pipe) and start. */
#define LINK_WAIT_MAX_MS 2000
static int test_renew; /* AOS_TEST_LINK_RENEW: move on every restart, at once */
static void start_when_link_free(child *k, uint64_t now, uint64_t *wake)
{
    if (k->role && !k->migrated) {
        if (!migrating_pid)
            start_migrator(k, now);
        else
            snprintf(k->reason, sizeof k->reason, "waiting for another schema migration");
        return;
    }
    if (k->link) {
        if (!k->link_wait_since)
            k->link_wait_since = now;
        /* the tests make every restart take the move, which nng does not do on demand */
        int busy = link_busy(k->link) || test_renew;
        if (busy && !test_renew && now - k->link_wait_since < LINK_WAIT_MAX_MS) {
            snprintf(k->reason, sizeof k->reason, "due to start: waiting %llu ms so far for "
                     "the old incarnation's link to be let go",
                     (unsigned long long)(now - k->link_wait_since));
            if (now + 5 < *wake)
                *wake = now + 5;
            return;
        }
        if (busy) {
            char why[256];
            if (link_renew(k->link, why, sizeof why) != AOS_OK) {
                aos_error("%s: the old link was not let go in %d ms, and a new one could "
                          "not be opened: %s", k->name, LINK_WAIT_MAX_MS, why);
                snprintf(k->reason, sizeof k->reason, "opening a new link: %s", why);
                k->state = ST_BACKOFF;
                k->next_start = now + 1000;
                return;
            }
            aos_warn("%s: the old link was not let go in %d ms; moved to a new socket",
                     k->name, LINK_WAIT_MAX_MS);
        }
    }
    k->link_wait_since = 0;
    start_child(k, now);
}

static void on_ready(void *arg, int idx, pid_t pid, const uint8_t *payload, size_t len)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    child *k = &kids[idx];
    if (k->pid == pid && k->state == ST_STARTING) {
        k->state = ST_RUNNING;
        k->reason[0] = 0;
        k->ready_at = aos_mono_ms();
        k->report_len = len <= sizeof k->report ? len : 0;
        if (k->report_len)
            memcpy(k->report, payload, len);
        aos_info("%s is ready (pid %d, %llu ms)", k->name, (int)pid,
                 (unsigned long long)(k->ready_at - k->started));
    }
    pthread_mutex_unlock(&mu);
}

/* Each child's own account. Not root: there is no other to switch to, all run as us. */
static aos_err resolve_users(char *why, size_t whylen)
{
    ws_gid = getegid();
    if (geteuid() == 0) { /* the agents' group, which DATA/workspaces is shared with */
        struct passwd *pw = getpwnam(AOS_AGENT_USER);
        if (!pw || pw->pw_uid == 0 || pw->pw_gid == 0) {
            snprintf(why, whylen, "aosd as root runs agents as the user " AOS_AGENT_USER
                     ", which %s (tools/deps.sh creates it)", pw ? "is root" : "does not exist");
            return AOS_ERR_NOT_FOUND;
        }
        ws_gid = pw->pw_gid;
    }
    for (size_t i = 0; i < NKIDS; i++) {
        child *k = &kids[i];
        if (geteuid() != 0) {
            k->uid = geteuid();
            k->gid = getegid();
            continue;
        }
        struct passwd *pw = getpwnam(k->user);
        if (!pw || pw->pw_uid == 0 || pw->pw_gid == 0) {
            snprintf(why, whylen, "aosd as root runs %s as the user %s, which %s (tools/deps.sh "
                     "creates it: useradd --system --user-group %s)", k->name, k->user,
                     pw ? "is root" : "does not exist", k->user);
            return AOS_ERR_NOT_FOUND;
        }
        k->uid = pw->pw_uid;
        k->gid = pw->pw_gid;
    }
    return AOS_OK;
}

aos_err sup_init(const kcfg *c, const datadir *d, char *why, size_t whylen)
{
    cfg = c;
    test_renew = getenv("AOS_TEST_LINK_RENEW") != NULL;
    dd = d;
    boot_mono = aos_mono_ms();
    policy = (sup_policy){.permanent = 1,
                          .intensity = c->intensity,
                          .period_ms = c->period_ms,
                          .loop_ms = c->stable_ms < SUP_LOOP_MS ? c->stable_ms : SUP_LOOP_MS,
                          .stable_ms = c->stable_ms,
                          .backoff_min_ms = 100,
                          .backoff_max_ms = c->backoff_max_ms};
    PG->enabled = c->pg_dsn[0] == 0;
    if (PG->enabled) {
        /* peer authentication: who connects is the kernel's word, mapped to one role */
        pgem_ident map[NKIDS + 2];
        size_t n = 0;
        static char me[64] = "root";
        struct passwd *pw = getpwuid(geteuid());
        if (pw)
            snprintf(me, sizeof me, "%s", pw->pw_name);
        int root = geteuid() == 0;
        if (root)
            map[n++] = (pgem_ident){"root", PGEM_SUPERUSER}; /* an operator's psql */
        /* not root: one OS user is everybody, so it maps to every role (README says so) */
        map[n++] = (pgem_ident){root ? PG->user : me, PGEM_SUPERUSER};
        for (size_t i = 1; i < NKIDS; i++)
            if (kids[i].role)
                map[n++] = (pgem_ident){root ? kids[i].user : me, kids[i].role};
        aos_err rc = pgem_init(c, d->etc, d->pg, PG->uid, PG->gid, d->pg_log, map, n, why,
                               whylen);
        if (rc != AOS_OK)
            return rc;
    }
    for (size_t i = 0; i < NKIDS; i++)
        snprintf(kids[i].reason, sizeof kids[i].reason, "not started yet");
    for (size_t i = 1; i < NKIDS; i++) {
        kids[i].enabled = 1;
        char url[AOS_PATH_MAX + 32];
        snprintf(url, sizeof url, "ipc://%s/run/%s.sock", c->data_dir, kids[i].name);
        aos_err rc = link_open(&kids[i].link, kids[i].name, url, (int)i, on_ready, NULL, why,
                               whylen);
        if (rc != AOS_OK)
            return rc;
    }
    return AOS_OK;
}

aos_err sup_users(char *why, size_t whylen)
{
    return resolve_users(why, whylen);
}

uid_t sup_ws_uid(gid_t *gid)
{
    *gid = ws_gid;
    for (size_t i = 0; i < NKIDS; i++)
        if (kids[i].workspaces)
            return kids[i].uid;
    return geteuid();
}

uid_t sup_pg_uid(gid_t *gid)
{
    *gid = PG->gid;
    return PG->uid;
}

void sup_fini(void)
{
    for (size_t i = 0; i < NKIDS; i++)
        if (kids[i].link) {
            link_close(kids[i].link);
            char p[AOS_PATH_MAX + 32];
            snprintf(p, sizeof p, "%s/run/%s.sock", cfg->data_dir, kids[i].name);
            unlink(p);
        }
    clog_flush_all();
}

static int orphans_left(void);

static void send_stop(child *k, uint64_t now)
{
    k->state = ST_STOPPING;
    k->stop_step = 0;
    k->stop_step_at = now;
    snprintf(k->reason, sizeof k->reason, "%s: asked to finish (%s)",
             k->restart_after_stop ? "restarting on request" : "stopping",
             k->kind == KIND_PG ? "SIGINT, fast shutdown" : "STOP on its link");
    if (k->kind == KIND_PG) {
        /* our probe's connection, open while it waits for its answer, would hold a backend
         * in its start-up through the shutdown (authentication_timeout: a minute) */
        pgem_probe_reset();
        kill(k->pid, SIGINT); /* fast shutdown: aborts open transactions, exits cleanly */
    }
    else
        link_stop(k->link);
}

uint64_t sup_tick(uint64_t now)
{
    uint64_t wake = now + 100;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < NKIDS; i++) {
        child *k = &kids[i];
        if (!k->enabled)
            continue;
        switch (k->state) {
        case ST_STOPPED:
            if (shutting_down)
                break;
            if (waits_for_pg(k))
                snprintf(k->reason, sizeof k->reason, "waiting for postgres (%s): its schema "
                         "migration needs the database", state_names[PG->state]);
            else
                start_when_link_free(k, now, &wake);
            break;
        case ST_BACKOFF:
            if (shutting_down) {
                k->state = ST_STOPPED;
                snprintf(k->reason, sizeof k->reason, "not restarted: aosd is stopping");
            } else if (now < k->next_start) {
                if (k->next_start < wake)
                    wake = k->next_start;
            } else if (k->kind == KIND_PG && orphans_left()) {
                snprintf(k->reason, sizeof k->reason, "due to start: waiting for the old "
                         "postmaster's backends to exit (they hold its shared memory)");
                if (now + 5 < wake)
                    wake = now + 5;
            } else if (waits_for_pg(k)) {
                snprintf(k->reason, sizeof k->reason, "due to start: waiting for postgres "
                         "(%s): its schema migration needs the database",
                         state_names[PG->state]);
            } else {
                start_when_link_free(k, now, &wake);
            }
            break;
        case ST_STARTING:
            if (k->kind == KIND_PG) {
                if (pgem_ready(k->pid)) {
                    k->state = ST_RUNNING;
                    k->reason[0] = 0;
                    k->ready_at = now;
                    aos_info("postgres is ready (pid %d, %llu ms)", (int)k->pid,
                             (unsigned long long)(now - k->started));
                } else if (now + 10 < wake) {
                    wake = now + 10;
                }
            }
            break;
        case ST_RUNNING:
            /* a running server whose database is away is up but cannot serve: say so */
            if (k->role && !pg_running())
                snprintf(k->reason, sizeof k->reason, "running; its database is away "
                         "(postgres %s): requests wait for it", state_names[PG->state]);
            else
                k->reason[0] = 0;
            if (k->link) {
                if (now - k->hb_sent >= cfg->heartbeat_ms) {
                    link_heartbeat(k->link);
                    k->hb_sent = now;
                }
                uint64_t ack = link_last_ack(k->link);
                if (ack < k->ready_at)
                    ack = k->ready_at;
                /* ack may be newer than now: a receiver stamped it since we read the clock */
                if (ack < now && now - ack > cfg->heartbeat_timeout_ms && !k->pending_why[0]) {
                    snprintf(k->pending_why, sizeof k->pending_why,
                             "heartbeat timeout (no answer in %llu ms)",
                             (unsigned long long)(now - ack));
                    aos_warn("%s: %s: killing pid %d", k->name, k->pending_why, (int)k->pid);
                    kill(k->pid, SIGKILL);
                }
            } else if (k->kind == KIND_PG) {
                /* alive is not enough: a stopped or wedged postmaster still has a pid */
                pgem_probe(cfg, now, cfg->heartbeat_ms, cfg->heartbeat_timeout_ms, k->health,
                           sizeof k->health);
            }
            break;
        case ST_MIGRATING:
            break; /* its migrator's exit moves it on (sup_reap) */
        case ST_STOPPING:
            if (now - k->stop_step_at >= cfg->stop_timeout_ms && k->stop_step < 2) {
                k->stop_step++;
                k->stop_step_at = now;
                int sig = k->stop_step == 1 ? (k->kind == KIND_PG ? SIGQUIT : SIGTERM) : SIGKILL;
                aos_warn("%s did not stop in time: signal %d", k->name, sig);
                snprintf(k->reason, sizeof k->reason, "%s: did not finish in %llu ms, sent %s",
                         k->restart_after_stop ? "restarting on request" : "stopping",
                         (unsigned long long)cfg->stop_timeout_ms,
                         sig == SIGKILL ? "SIGKILL" : sig == SIGQUIT ? "SIGQUIT" : "SIGTERM");
                kill(k->pid, sig);
            }
            break;
        case ST_FAILED:
            break;
        }
        if (k->link)
            link_expire(k->link, now);
    }
    /* shutting down: servers first (all at once), postgres when they are all gone */
    if (shutting_down) {
        int servers_left = 0;
        for (size_t i = 1; i < NKIDS; i++) {
            child *k = &kids[i];
            if (k->state == ST_RUNNING || k->state == ST_STARTING) {
                if (k->state == ST_STARTING) {
                    k->state = ST_STOPPING;
                    k->stop_step = 1;
                    k->stop_step_at = now;
                    snprintf(k->reason, sizeof k->reason, "stopping: SIGTERM (it was still "
                             "starting, no link to ask on)");
                    kill(k->pid, SIGTERM);
                } else {
                    send_stop(k, now);
                }
            }
            if (k->state == ST_STOPPING)
                servers_left++;
        }
        child *pg = &kids[0];
        if (!servers_left && pg->enabled &&
            (pg->state == ST_RUNNING || pg->state == ST_STARTING))
            send_stop(pg, now);
    }
    pthread_mutex_unlock(&mu);
    return wake;
}

static void describe_exit(int st, char *out, size_t cap)
{
    /* 125-127 are sup_spawn's own: the child never reached its program */
    static const char *const pre[] = {"parent gone before exec", "cannot switch user",
                                      "cannot execute"};
    if (WIFEXITED(st) && WEXITSTATUS(st) >= 125 && WEXITSTATUS(st) <= 127)
        snprintf(out, cap, "exit %d (%s)", WEXITSTATUS(st), pre[WEXITSTATUS(st) - 125]);
    else if (WIFEXITED(st))
        snprintf(out, cap, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, cap, "signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                 WTERMSIG(st) == SIGSYS ? ": forbidden syscall (seccomp)" : "");
    else
        snprintf(out, cap, "status %d", st);
}

/* aosd is a child subreaper, so what a dead child leaves behind is reparented to us:
 * a postmaster's backends (each in its own session, so a group kill misses them, and
 * alive they keep its shared memory from a new postmaster), a server's helpers. Such
 * an orphan has no place in the table: it is killed. */
static int kill_orphans(void)
{
    /* one log line per orphan, not one per scan while it takes its time to die */
    static pid_t told[64];
    static unsigned ntold;
    int alive = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    pid_t self = getpid();
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char state = 0;
        if (pv_ppid((pid_t)pid, &state) != self)
            continue;
        int known = agents_own_pid((pid_t)pid);
        for (size_t i = 0; i < NKIDS; i++)
            known |= kids[i].pid == (pid_t)pid || kids[i].mig_pid == (pid_t)pid;
        if (!known) {
            /* a zombie is dead already: only its reaping is left (sup_reap) */
            if (state == 'Z')
                continue;
            int seen = 0;
            for (unsigned i = 0; i < sizeof told / sizeof told[0]; i++)
                seen |= told[i] == (pid_t)pid;
            if (!seen) {
                aos_warn("killing orphan pid %ld left by a dead child", pid);
                told[ntold++ % (sizeof told / sizeof told[0])] = (pid_t)pid;
            }
            kill((pid_t)pid, SIGKILL);
            alive++;
        }
    }
    closedir(d);
    return alive;
}

/* The orphans a dead postmaster left (its backends) are killed at once, but until they
 * are gone they hold its shared memory, and a new postmaster would exit with
 * "pre-existing shared memory block is still in use". */
static int orphans_left(void)
{
    return kill_orphans() > 0;
}

/* After an exit (of k or of its migrator, x says how): failed, done, or a restart after
 * the policy's delay; the reason says which, and whether the exit counted. */
static void apply_policy(child *k, const sup_exit *x, uint64_t now, uint64_t min_delay)
{
    uint64_t delay;
    char note[200];
    sup_action a = sup_decide(&k->track, &policy, x, now, &delay, note, sizeof note);
    if (a == SUP_ACT_FAIL) {
        k->state = ST_FAILED;
        atomic_store(&k->failed, 1);
        snprintf(k->reason, sizeof k->reason, "%s; aosctl server restart %s starts it again",
                 note, k->name);
        aos_error("%s failed: %s; last exit: %s", k->name, note, k->last_exit);
        if (k->link)
            link_fail_all(k->link, AOS_ERR_FAILED, k->reason);
        return;
    }
    if (a == SUP_ACT_DONE) {
        k->state = ST_STOPPED;
        snprintf(k->reason, sizeof k->reason, "exited cleanly; transient: not restarted");
        return;
    }
    if (delay < min_delay)
        delay = min_delay;
    k->restarts++;
    aos_warn("%s exited (%s); restart in %llu ms (%s)", k->name, k->last_exit,
             (unsigned long long)delay, note);
    /* started by the next tick (at once when delay is 0), once the old link is free */
    k->state = ST_BACKOFF;
    k->next_start = now + delay;
    if (delay)
        snprintf(k->reason, sizeof k->reason, "backoff %llu ms after %s (%s)",
                 (unsigned long long)delay, k->last_exit, note);
    else
        snprintf(k->reason, sizeof k->reason, "restarting after %s (%s)", k->last_exit, note);
}

/* A migrator ended: the server starts on success; an unreachable database (exit 75)
 * is waited for without counting against the server; anything else is the server's
 * failure, under its restart policy (excused while the database is away). */
static void migrator_exited(child *k, int st, uint64_t now)
{
    char how[80];
    describe_exit(st, how, sizeof how);
    k->mig_pid = migrating_pid = 0;
    char said[300] = "";
    if (k->mig_why) {
        ssize_t n = read(k->mig_why - 1, said, sizeof said - 1);
        said[n > 0 ? n : 0] = 0;
        for (char *p = said; *p; p++) /* for a status line: one line, printable */
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        close(k->mig_why - 1);
        k->mig_why = 0;
    }
    if (shutting_down) {
        k->state = ST_STOPPED;
        snprintf(k->reason, sizeof k->reason, "not started: aosd is stopping");
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        k->migrated = 1;
        k->state = ST_STOPPED; /* the next tick starts it */
        snprintf(k->reason, sizeof k->reason, "schema migrated: starting");
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == AOS_SRV_EXIT_REFUSED) {
        /* a schema newer than this aos: no restart changes that, so none is tried */
        k->state = ST_FAILED;
        atomic_store(&k->failed, 1);
        snprintf(k->last_exit, sizeof k->last_exit, "schema migration refused");
        snprintf(k->reason, sizeof k->reason, "refused to start: %s",
                 said[0] ? said : "its schema migration was refused (see aosd's log)");
        aos_error("%s: %s", k->name, k->reason);
        if (k->link)
            link_fail_all(k->link, AOS_ERR_FAILED, k->reason);
        return;
    }
    k->state = ST_BACKOFF;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 75) {
        k->next_start = now + 250;
        snprintf(k->reason, sizeof k->reason, "waiting for the database (its schema "
                 "migration could not connect; again in 250 ms)");
        return;
    }
    snprintf(k->last_exit, sizeof k->last_exit, "schema migration %s (see aosd's log)", how);
    sup_exit x = {.own = 1, .excused = dep_away(k, now)};
    apply_policy(k, &x, now, 100);
}

void sup_reap(void)
{
    int orphans = 0;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        pthread_mutex_lock(&mu);
        uint64_t now = aos_mono_ms();
        child *k = NULL;
        for (size_t i = 0; i < NKIDS; i++) {
            if (kids[i].enabled && kids[i].pid == pid)
                k = &kids[i];
            if (kids[i].mig_pid == pid) {
                migrator_exited(&kids[i], st, now);
                orphans = 1;
            }
        }
        if (!k) { /* an agent's sandbox, an orphan we adopted, or a migrator, now reaped */
            pthread_mutex_unlock(&mu);
            agents_reaped(pid, st);
            continue;
        }
        /* its process group goes with it, and whatever it left to us */
        kill(-pid, SIGKILL);
        orphans = 1;
        char how[80];
        describe_exit(st, how, sizeof how);
        if (k->pending_why[0])
            snprintf(k->last_exit, sizeof k->last_exit, "%s", k->pending_why);
        else /* postgres says why in its own log, not in ours */
            snprintf(k->last_exit, sizeof k->last_exit, "%s%s", how,
                     k->kind == KIND_PG && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)
                         ? " (see pg.log in the data dir)" : "");
        k->pid = 0;
        if (k->link) /* a poison pill is a request in hand when it ended itself */
            link_down(k->link, sup_own_end(st) || k->pending_why[0] != 0);
        int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (shutting_down) {
            k->state = ST_STOPPED;
            snprintf(k->reason, sizeof k->reason, "stopped: aosd is stopping");
            aos_info("%s stopped (%s)", k->name, how);
        } else if (k->state == ST_STOPPING && k->restart_after_stop) {
            k->restart_after_stop = 0;
            k->restarts++;
            aos_info("%s stopped for a restart (%s)", k->name, how);
            k->state = ST_BACKOFF; /* started by the next tick, right after this */
            k->next_start = now;
            snprintf(k->reason, sizeof k->reason, "restarting on request (it ended: %s)", how);
        } else {
            sup_exit x = {.clean = clean, .own = sup_own_end(st),
                          .hung = k->pending_why[0] != 0,
                          .ran_ms = k->ready_at >= k->started && k->ready_at
                                        ? now - k->ready_at : 0,
                          .excused = dep_away(k, now)};
            apply_policy(k, &x, now, 0);
        }
        k->ready_at = 0;
        pthread_mutex_unlock(&mu);
    }
    if (orphans) {
        pthread_mutex_lock(&mu);
        kill_orphans();
        pthread_mutex_unlock(&mu);
    }
}

void sup_shutdown(void)
{
    pthread_mutex_lock(&mu);
    shutting_down = 1;
    for (size_t i = 0; i < NKIDS; i++)
        if (kids[i].link)
            link_fail_all(kids[i].link, AOS_ERR_UNAVAILABLE, "aosd is shutting down");
    pthread_mutex_unlock(&mu);
}

void sup_request_stop(uint64_t timeout_ms)
{
    atomic_store(&stop_asked_timeout_ms, timeout_ms);
    atomic_store(&stop_asked, 1);
}

int sup_stop_requested(uint64_t *timeout_ms)
{
    if (!atomic_exchange(&stop_asked, 0))
        return 0;
    *timeout_ms = atomic_load(&stop_asked_timeout_ms);
    return 1;
}

void sup_set_phase(const char *phase)
{
    pthread_mutex_lock(&mu);
    snprintf(stop_phase, sizeof stop_phase, "%s", phase);
    pthread_mutex_unlock(&mu);
}

int sup_all_running(void)
{
    int all = 1;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < NKIDS && all; i++)
        if (kids[i].enabled && kids[i].state != ST_RUNNING)
            all = 0;
    pthread_mutex_unlock(&mu);
    return all;
}

int sup_stopped(void)
{
    int left = 0;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < NKIDS; i++)
        if (kids[i].enabled && kids[i].pid > 0)
            left++;
    pthread_mutex_unlock(&mu);
    return left == 0;
}

/* On every request: no lock unless the server is failed (the table and its links are
 * fixed once sup_init has run). */
klink *sup_link(const char *server, int *failed, char *why, size_t whylen)
{
    child *k = find(server);
    klink *l = k && k->kind != KIND_PG ? k->link : NULL;
    *failed = 0;
    if (atomic_load(&shutting_down)) {
        *failed = AOS_ERR_UNAVAILABLE;
        snprintf(why, whylen, "aosd is shutting down");
    } else if (l && atomic_load(&k->failed)) {
        pthread_mutex_lock(&mu);
        /* the same answer the calls queued when it failed got: retrying cannot help */
        *failed = AOS_ERR_FAILED;
        snprintf(why, whylen, "server %s is failed: %s (last exit: %s)", server, k->reason,
                 k->last_exit);
        pthread_mutex_unlock(&mu);
    }
    return l;
}

static char cg_setup_why[256];

void sup_set_cgroup(const char *why)
{
    snprintf(cg_setup_why, sizeof cg_setup_why, "%s", why);
}

aos_err sup_status(uint64_t bad_messages, uint64_t routed, uint8_t **out, size_t *len)
{
    Aos__StatusReply r = AOS__STATUS_REPLY__INIT;
    Aos__ChildStatus cs[NKIDS], *ptrs[NKIDS];
    Aos__SandboxStatus sb[NKIDS];
    Aos__SandboxReport *rep[NKIDS] = {0};
    pv_info pv[NKIDS];
    char ddir[AOS_PATH_MAX];
    pthread_mutex_lock(&mu);
    uint64_t now = aos_mono_ms();
    size_t n = 0;
    for (size_t i = 0; i < NKIDS; i++) {
        child *k = &kids[i];
        if (!k->enabled)
            continue;
        aos__child_status__init(&cs[n]);
        cs[n].name = (char *)k->name;
        cs[n].pid = k->pid;
        cs[n].state = (char *)state_names[k->state];
        cs[n].restarts = k->restarts;
        cs[n].uptime_ms = k->state == ST_RUNNING ? now - k->started : 0;
        cs[n].last_exit = k->last_exit;
        cs[n].reason = k->reason;
        cs[n].health = k->state != ST_RUNNING ? "" : k->health[0] ? k->health : "ok";
        cs[n].cgroup = k->cgroup_why;
        if (k->state == ST_BACKOFF && k->next_start > now)
            cs[n].next_start_ms = k->next_start - now;
        pv_read(k->pid, &pv[n]);
        if (pv[n].ok) {
            cs[n].uid = pv[n].uid;
            cs[n].cgroup_now = pv[n].cgroup;
            aos__sandbox_status__init(&sb[n]);
            sb[n].no_new_privs = pv[n].no_new_privs;
            sb[n].seccomp = (uint32_t)pv[n].seccomp;
            sb[n].cap_bnd_empty = pv[n].cap_bnd == 0;
            sb[n].cap_eff_empty = pv[n].cap_eff == 0;
            sb[n].mount_ns = pv[n].mount_ns;
            sb[n].net_ns = pv[n].net_ns;
            sb[n].user_ns = pv[n].user_ns;
            sb[n].cwd = pv[n].cwd;
            /* the server's own account of itself: shown only if it is well-formed */
            if (k->kind == KIND_SERVER && k->report_len) {
                rep[n] = aos__sandbox_report__unpack(NULL, k->report_len, k->report);
                if (rep[n] && !aos_pb_strings_valid(&rep[n]->base)) {
                    aos__sandbox_report__free_unpacked(rep[n], NULL);
                    rep[n] = NULL;
                }
                sb[n].report = rep[n];
            }
            cs[n].sandbox = &sb[n];
        }
        ptrs[n] = &cs[n];
        n++;
    }
    r.aosd_pid = getpid();
    r.aosd_uptime_ms = now - boot_mono;
    r.version = AOS_VERSION;
    snprintf(ddir, sizeof ddir, "%s", cfg->data_dir);
    r.data_dir = ddir;
    r.pg_mode = cfg->pg_dsn[0] ? "external" : "embedded";
    r.children = ptrs;
    r.n_children = n;
    r.bad_messages = bad_messages;
    for (size_t i = 0; i < NKIDS; i++)
        if (kids[i].link)
            r.bad_messages += link_bad_messages(kids[i].link);
    r.routed = routed;
    r.cgroup = cg_setup_why;
    r.stopping = stop_phase; /* mu held */
    int low = 0;
    dg_state(&r.disk_free_mb, &r.disk_min_free_mb, &low);
    r.disk_low = low != 0;
    *len = aos__status_reply__get_packed_size(&r);
    *out = malloc(*len ? *len : 1);
    if (*out)
        aos__status_reply__pack(&r, *out);
    pthread_mutex_unlock(&mu);
    for (size_t i = 0; i < n; i++)
        if (rep[i])
            aos__sandbox_report__free_unpacked(rep[i], NULL);
    return *out ? AOS_OK : AOS_ERR_NOMEM;
}

aos_err sup_kill(const char *name, char *why, size_t whylen)
{
    aos_err rc = AOS_OK;
    pthread_mutex_lock(&mu);
    child *k = find(name);
    if (!k) {
        snprintf(why, whylen, "no child named %s", name);
        rc = AOS_ERR_NOT_FOUND;
    } else if (k->pid <= 0) {
        snprintf(why, whylen, "%s is not running (%s)", name, state_names[k->state]);
        rc = AOS_ERR_CONFLICT;
    } else {
        aos_info("killing %s (pid %d) on request", name, (int)k->pid);
        kill(k->pid, SIGKILL);
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

aos_err sup_restart(const char *name, char *why, size_t whylen)
{
    aos_err rc = AOS_OK;
    pthread_mutex_lock(&mu);
    child *k = find(name);
    uint64_t now = aos_mono_ms();
    if (!k) {
        snprintf(why, whylen, "no child named %s", name);
        rc = AOS_ERR_NOT_FOUND;
    } else if (shutting_down) {
        snprintf(why, whylen, "aosd is shutting down");
        rc = AOS_ERR_UNAVAILABLE;
    } else if (k->state == ST_RUNNING) {
        k->restart_after_stop = 1;
        send_stop(k, now);
    } else if (k->state == ST_STOPPING) {
        k->restart_after_stop = 1;
    } else if (k->pid > 0) { /* starting: no link to ask on yet */
        k->restart_after_stop = 1;
        k->state = ST_STOPPING;
        k->stop_step = 1;
        k->stop_step_at = now;
        kill(k->pid, SIGTERM);
    } else if (k->state == ST_MIGRATING) { /* its migrator's exit moves it on */
        memset(&k->track, 0, sizeof k->track);
    } else { /* failed, backoff or waiting: start afresh, history forgotten */
        memset(&k->track, 0, sizeof k->track);
        /* through backoff, due now: postgres still waits there for the old backends */
        k->state = ST_BACKOFF;
        k->next_start = now;
        atomic_store(&k->failed, 0);
        snprintf(k->reason, sizeof k->reason, "restarting on request");
    }
    pthread_mutex_unlock(&mu);
    return rc;
}
