/* The agents: each applied manifest is an entry here, spawned by the main loop inside
 * bubblewrap, admitted on the agent socket by its pid, governed by its manifest's rights. */
#include "agents.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "agent.pb-c.h"
#include "agent_filter.h"
#include "agstate.h"
#include "aos/log.h"
#include "aos/storage.h"
#include "cgroup.h"
#include "deploy.h"
#include "fsafe.h"
#include "link.h"
#include "llm.pb-c.h"
#include "llmq.h"
#include "memory.pb-c.h"
#include "procview.h"
#include "spawn.h"
#include "storage.pb-c.h"
#include "supervise.h"
#include "tool.pb-c.h"

#define AG_MAX 4096u                 /* agents applied at once */
#define AG_PIPES 8192u               /* the pipe map's slots (a power of two) */
#define AG_KV_AGENT "aos:kernel"     /* the storage namespace of aosd's own records: ':' is
                                      * never in an agent's name, so no agent reads it */
#define AG_KV_KEY "deployment"
#define AG_KV_STATE "state/"       /* + an agent's name: what a restarted aosd must know */
#define AG_SENDS 256u              /* budget sets and state writes one tick sends at most */
#define AG_LOG_MAX (1u << 20)        /* an agent's log file; past it, it starts anew */
#define AG_BWRAP "/usr/bin/bwrap"
#define AG_INNER_UID "1000"
#define AG_SOCK_DIR "/run/aos"       /* where the agent socket is inside the sandbox */
#define AG_STORAGE_MS 20000u
#define AG_BWRAP_ARGV 96
#define AG_FREEZE_WAIT_MS 100u       /* a freeze waits this long (mu held) for its SIGSTOP to
                                      * land; past it, the admin's next look sees it land */


typedef enum { AS_PENDING, AS_RUNNING, AS_SUSPENDED, AS_STOPPING, AS_DONE, AS_FAILED,
               AS_BACKOFF } astate;
static const char *const state_names[] = {"pending", "running", "suspended", "stopping",
                                          "done", "failed", "backoff"};

typedef struct agent {
    char name[DEP_NAME_MAX + 1];
    dep_agent *m;                /* the manifest, owned */
    char *mjson;                 /* its canonical JSON, owned */
    astate st;
    uint32_t gen;                /* slot generation: the pipe map's check */
    pid_t pid;                   /* bubblewrap, our child; 0: none */
    pid_t prog;                  /* the program's pid as its first pipe showed it */
    uint64_t started, started_wall_ms, next_start, stop_at, incarnation;
    int stop_req;                /* 1 request sent, 2 SIGTERM, 3 SIGKILL */
    int kill_req, suspend_req, restart_after, removed, reset_track;
    int frozen;                  /* 0 thawed; 1 SIGSTOP sent, not yet landed in every thread
                                  * of its sandbox; 2 landed: it is suspended */
    kreply *held;                /* the step call it is suspended at: answered at resume or
                                  * stop, so it cannot pass the boundary however late the
                                  * SIGSTOP lands */
    uint8_t last_step_id[AOS_ID_LEN]; /* its last kernel.agent.step, counted once: a call
                                  * that timed out while frozen comes again with this id */
    int last_step_set, last_step_refused;
    char stop_why[128];
    uint64_t steps, wakes, skipped, refused;
    char run[AGST_RUN_MAX];      /* the run its last kernel.agent.step named ("" none) */
    uint64_t run_steps;          /* that run's steps: budgets.steps counts these */
    uint64_t next_wake;          /* monotonic ms, 0: none */
    int64_t next_wake_wall;      /* the same in wall-clock ms */
    kreply *waiter;              /* its kernel.agent.wait, while idle */
    int waiter_mail;             /* that wait is a receive's: mail ends it, timers do not */
    uint64_t waiter_seen;        /* the mail count that receive had seen */
    uint64_t mail_in;            /* messages aosd put into its inbox or replies */
    unsigned calls[5];           /* in flight, by km_class */
    unsigned restarts;
    sup_track track;
    char reason[256];
    int budget_ok, budget_busy;  /* aos-memory holds its context budget / a set in flight */
    int st_dirty, st_busy;       /* its state record needs writing / a write in flight */
    uint64_t budget_retry, st_retry; /* after a failed set / write: not before (mono ms) */
    uint32_t slot;               /* its index in A.tab */
    struct agent *hnext;         /* the name hash's chain */
} agent;

typedef struct pslot {
    uint32_t pipe;               /* 0: free */
    uint32_t idx, gen;
} pslot;

static struct {
    pthread_mutex_t mu;
    const kcfg *cfg;
    int wsdir, logdir;           /* DATA/workspaces (aos-tool's too), DATA/agent-logs */
    uid_t wsuid;                 /* the workspaces' owner: aos-tool's uid (ours if not root) */
    int run;                     /* DATA/run */
    int bindir;                  /* DATA/agent-bin: programs the agents' uid can read */
    char sockdir[AOS_PATH_MAX + 32];
    uid_t uid;
    gid_t gid;
    uint8_t *bpf;
    size_t bpf_len;
    agent *tab[AG_MAX];
    agent *byname[AG_MAX];       /* by name hash: every syscall of an agent looks it up */
    uint32_t hi;                 /* slots at and above it have never been used */
    uint32_t gens[AG_MAX];
    pslot pipes[AG_PIPES];
    int loaded, loading, applying, shutting;
    int cg_said;                 /* "no cgroup for agents" was logged */
    int state_loaded, state_loading; /* the agents' state records read back (spawns wait) */
    uint64_t load_retry, kv_version, state_retry;
    char **collections, **topics; /* of the applied deployment */
    size_t ncollections, ntopics;
} A = {.mu = PTHREAD_MUTEX_INITIALIZER, .wsdir = -1, .logdir = -1};

/* ---- small things ---------------------------------------------------------------------- */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % AG_MAX;
}

/* The applied (not removed) agent of that name; mu held. */
static agent *find(const char *name, uint32_t *idx)
{
    for (agent *a = A.byname[name_hash(name)]; a; a = a->hnext)
        if (!a->removed && !strcmp(a->name, name)) {
            if (idx)
                *idx = a->slot;
            return a;
        }
    return NULL;
}

static void agent_free(agent *a)
{
    dep_agent_free(a->m);
    free(a->mjson);
    free(a);
}

static int64_t wall_ms(void) { return (int64_t)aos_now_ms(); }

/* The next timer wake after now (monotonic and wall), from every_ms or cron. */
static void plan_wake(agent *a, uint64_t now)
{
    a->next_wake = 0;
    a->next_wake_wall = 0;
    if (a->m->every_ms) {
        a->next_wake = now + a->m->every_ms;
        a->next_wake_wall = wall_ms() + (int64_t)a->m->every_ms;
    } else if (a->m->cron) {
        int64_t t = cron_next(&a->m->cron_parsed, wall_ms() / 1000);
        if (t > 0) {
            a->next_wake_wall = t * 1000;
            a->next_wake = now + (uint64_t)(a->next_wake_wall - wall_ms());
        }
    }
}

/* The scheduler's settings from the manifest: weight, class, the token and cost budgets. */
static void sched_apply(const agent *a)
{
    char why[256];
    if (llmq_agent_set(a->name, a->m->weight, a->m->batch, a->m->budget_tokens,
                       (uint64_t)(a->m->budget_cost_usd * 1e6 + 0.5), why, sizeof why) !=
        AOS_OK)
        aos_warn("agent %s: scheduler settings: %s", a->name, why);
}

/* ---- the sandbox ------------------------------------------------------------------------ */

/* The allow-list (agent_filter.c), compiled once: every spawn hands bubblewrap a copy. */
static aos_err compile_seccomp(char *why, size_t whylen)
{
    agf_mode mode = agf_mode_from_env();
    if (mode == AGF_KILL)
        aos_warn("AOS_AGENT_SECCOMP=kill: an agent's unlisted syscall kills it, and the "
                 "kernel logs which (dmesg)");
    return agf_compile(mode, &A.bpf, &A.bpf_len, why, whylen);
}

/* The seccomp program on a fresh fd for bubblewrap, which reads it once from offset 0. */
static int bpf_fd(void)
{
    int fd = memfd_create("aos-agent-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (write(fd, A.bpf, A.bpf_len) != (ssize_t)A.bpf_len || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void argv_add(char **argv, int *n, const char *s)
{
    if (*n < AG_BWRAP_ARGV - 1)
        argv[(*n)++] = (char *)s;
}

/* The program as the sandbox binds it. Running as root, aosd may start a program the
 * agents' uid cannot reach (a build tree under /root): bubblewrap resolves every bind's path
 * as that uid, even one given by fd. So it is copied once into DATA/agent-bin (root's,
 * read-only to others), named by the source's device, inode, size and mtime, so a rebuilt
 * program gets a new copy and 1,000 agents of one program share one. Not root: the agents
 * are aosd's uid and reach what aosd reaches, and the program is bound where it is. */
static int stage_program(const char *prog, char *out, size_t cap, char *why, size_t whylen)
{
    int src = open(prog, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (src < 0 || fstat(src, &st) != 0 || !S_ISREG(st.st_mode) || !(st.st_mode & 0111)) {
        snprintf(why, whylen, "program %.150s: %s", prog,
                 src < 0 ? strerror(errno) : "not an executable file");
        if (src >= 0)
            close(src);
        return -1;
    }
    if (geteuid() != 0) {
        close(src);
        snprintf(out, cap, "%s", prog);
        return 0;
    }
    char name[128], tmp[160];
    snprintf(name, sizeof name, "%llx-%llx-%llx-%llx.%ld", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    snprintf(out, cap, "%s/agent-bin/%s", A.cfg->data_dir, name);
    struct stat have;
    if (fstatat(A.bindir, name, &have, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(have.st_mode) &&
        have.st_size == st.st_size && have.st_uid == 0 && (have.st_mode & 07777) == 0755) {
        close(src);
        return 0;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    unlinkat(A.bindir, tmp, 0);
    int dst = openat(A.bindir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
    int ok = dst >= 0 && fchmod(dst, 0755) == 0; /* aosd's umask is 077 */
    char buf[1 << 16];
    ssize_t r;
    while (ok && (r = read(src, buf, sizeof buf)) != 0) {
        if (r < 0) {
            ok = errno == EINTR;
            continue;
        }
        for (ssize_t w = 0; ok && w < r;) {
            ssize_t k = write(dst, buf + w, (size_t)(r - w));
            ok = k > 0;
            w += k > 0 ? k : 0;
        }
    }
    int e = errno;
    close(src);
    if (dst >= 0 && (close(dst) != 0 || !ok || renameat(A.bindir, tmp, A.bindir, name) != 0)) {
        e = e ? e : errno;
        ok = 0;
    }
    if (!ok) {
        unlinkat(A.bindir, tmp, 0);
        snprintf(why, whylen, "copying %.150s into DATA/agent-bin: %s", prog, strerror(e));
        return -1;
    }
    return 0;
}

/* Start a's process: main loop only (the parent-death signal follows the forking thread).
 * The sandbox: namespaces of its own (user, pid, net, ipc, uts, cgroup), the host's /usr
 * read-only, its workspace at /workspace, the agent socket's directory read-only, nothing
 * else of DATA; seccomp; rlimits; the agents' uid. mu held. */
static void spawn_agent(agent *a, uint64_t now)
{
    char why[256] = "";
    int fds[3] = {-1, -1, -1}, logfd = -1, wsfd = -1;
    char prog[4200];
    const char *p = a->m->program;
    if (p[0] == '/')
        snprintf(prog, sizeof prog, "%s", p);
    else
        snprintf(prog, sizeof prog, "%s/%s", A.cfg->bin_dir, p);
    /* one workspace, the agent's and its tool runs': aos-tool's, of the agents' group
     * (which aos-tool has as a supplementary one), setgid so what either makes keeps the
     * group; each side's umask is 007, so each can read and write what the other made */
    if ((wsfd = fs_dir(A.wsdir, a->name, 02770, A.wsuid, A.gid, why, sizeof why)) < 0)
        goto fail;
    close(wsfd);
    wsfd = -1;
    /* the log starts anew past its cap; aosd's own file, the agent holds only its fd */
    struct stat st;
    int append = !(fstatat(A.logdir, a->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                   st.st_size > AG_LOG_MAX);
    logfd = openat(A.logdir, a->name, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                   (append ? O_APPEND : O_TRUNC), 0600);
    if (logfd < 0) {
        snprintf(why, sizeof why, "its log file: %s", strerror(errno));
        goto fail;
    }
    if (!append) { /* O_TRUNC then O_APPEND: the agent's writes never overwrite */
        close(logfd);
        logfd = openat(A.logdir, a->name, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
        if (logfd < 0) {
            snprintf(why, sizeof why, "its log file: %s", strerror(errno));
            goto fail;
        }
    }
    if ((fds[0] = bpf_fd()) < 0) {
        snprintf(why, sizeof why, "the seccomp program's memfd: %s", strerror(errno));
        goto fail;
    }
    char staged[4400];
    if (stage_program(prog, staged, sizeof staged, why, sizeof why) != 0)
        goto fail;
    if ((fds[1] = openat(A.wsdir, a->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) <
        0) {
        snprintf(why, sizeof why, "its workspace: %s", strerror(errno));
        goto fail;
    }
    const char *base = strrchr(prog, '/') ? strrchr(prog, '/') + 1 : prog;
    char inner[300];
    snprintf(inner, sizeof inner, "/aos/bin/%.255s", base);

    char *argv[AG_BWRAP_ARGV];
    int n = 0;
    const char *head[] = {AG_BWRAP, "--unshare-user", "--unshare-pid", "--unshare-ipc",
                          "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
                          "--disable-userns", "--die-with-parent", "--new-session", "--uid",
                          AG_INNER_UID, "--gid", AG_INNER_UID, "--hostname", "agent",
                          "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev",
                          "--tmpfs", "/tmp", "--ro-bind-try", "/etc/ld.so.cache",
                          "/etc/ld.so.cache", "--ro-bind-try", "/etc/localtime",
                          "/etc/localtime", "--seccomp", "3", "--ro-bind"};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        argv_add(argv, &n, head[i]);
    argv_add(argv, &n, staged);
    argv_add(argv, &n, inner);
    argv_add(argv, &n, "--bind-fd");
    argv_add(argv, &n, "4");
    argv_add(argv, &n, "/workspace");
    argv_add(argv, &n, "--ro-bind");
    argv_add(argv, &n, A.sockdir);
    argv_add(argv, &n, AG_SOCK_DIR);
    argv_add(argv, &n, "--chdir");
    argv_add(argv, &n, "/workspace");
    /* a merged /usr: the top-level names are links into it */
    static const char *const top[][2] = {{"usr/bin", "/bin"}, {"usr/sbin", "/sbin"},
                                         {"usr/lib", "/lib"}, {"usr/lib64", "/lib64"}};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        struct stat ts;
        if (lstat(top[i][1], &ts) == 0 && S_ISLNK(ts.st_mode)) {
            argv_add(argv, &n, "--symlink");
            argv_add(argv, &n, top[i][0]);
            argv_add(argv, &n, top[i][1]);
        } else if (lstat(top[i][1], &ts) == 0 && S_ISDIR(ts.st_mode)) {
            argv_add(argv, &n, "--ro-bind");
            argv_add(argv, &n, top[i][1]);
            argv_add(argv, &n, top[i][1]);
        }
    }
    argv_add(argv, &n, "--");
    argv_add(argv, &n, inner);
    for (size_t i = 0; i < a->m->nargs; i++)
        argv_add(argv, &n, a->m->args[i]);
    argv[n] = NULL;
    if (n >= AG_BWRAP_ARGV - 1) {
        snprintf(why, sizeof why, "too many arguments");
        goto fail;
    }

    /* its environment: the minimal one, who it is and where the kernel is, its own */
    char *envp[SPAWN_ENV_MAX + 40];
    size_t e = spawn_env(envp, SPAWN_ENV_MAX, 0);
    char url[64], name[DEP_NAME_MAX + 32], inc[48];
    snprintf(url, sizeof url, "AOS_AGENT_URL=ipc://" AG_SOCK_DIR "/agent.sock");
    snprintf(name, sizeof name, "AOS_AGENT_NAME=%s", a->name);
    snprintf(inc, sizeof inc, "AOS_AGENT_INCARNATION=%" PRIu64, a->incarnation + 1);
    envp[e++] = url;
    envp[e++] = name;
    envp[e++] = inc;
    envp[e++] = "HOME=/workspace";
    for (size_t i = 0; i < a->m->nenv && e < SPAWN_ENV_MAX + 38; i++)
        envp[e++] = a->m->env[i];
    envp[e] = NULL;

    spawn_req r = {.argv = argv, .envp = envp, .uid = A.uid, .gid = A.gid, .out_fd = logfd,
                   .fds = {fds[0], fds[1], -1, -1}, .cwd = "/", .deathsig = SIGKILL,
                   .no_new_privs = 1, .umask_set = 1, .umask = 007};
    /* per-process caps; memory and process counts are its cgroup's (below) */
    r.rlim_res[r.nrlim] = RLIMIT_CORE;
    r.rlim_val[r.nrlim++] = (struct rlimit){0, 0};
    r.rlim_res[r.nrlim] = RLIMIT_NOFILE;
    r.rlim_val[r.nrlim++] = (struct rlimit){1024, 1024};
    r.rlim_res[r.nrlim] = RLIMIT_FSIZE;
    r.rlim_val[r.nrlim++] = (struct rlimit){1ull << 30, 1ull << 30};
    r.rlim_res[r.nrlim] = RLIMIT_MEMLOCK;
    r.rlim_val[r.nrlim++] = (struct rlimit){64u << 10, 64u << 10};
    char cgwhy[400];
    /* what rlimits cannot bound for processes that share one uid: a fork or thread bomb,
     * memory a sanitizer build cannot cap with RLIMIT_AS (aos.yaml agent_memory_mb and
     * agent_pids_max; tool runs have their own limits in aos-tool) */
    int cgfd[3];
    int limits = cg_agent(a->name, (uint64_t)A.cfg->agent_memory_mb << 20,
                          A.cfg->agent_pids_max, cgfd, cgwhy, sizeof cgwhy);
    r.cgroup_fd = cgfd[0] >= 0 ? cgfd[0] : 0;
    r.cgroup_v1_fd[0] = cgfd[1] >= 0 ? cgfd[1] : 0;
    r.cgroup_v1_fd[1] = cgfd[2] >= 0 ? cgfd[2] : 0;
    if (limits < 2 && !A.cg_said) { /* once: the same reason holds for every agent */
        A.cg_said = 1;
        aos_warn("agents run without a cgroup of their own (rlimits only): %s", cgwhy);
    }
    pid_t pid = spawn_child(&r);
    int err = errno;
    for (int i = 0; i < 3; i++)
        if (cgfd[i] >= 0)
            close(cgfd[i]);
    for (int i = 0; i < 2; i++)
        close(fds[i]);
    close(logfd);
    if (pid < 0) {
        snprintf(a->reason, sizeof a->reason, "fork: %s", strerror(err));
        a->st = AS_BACKOFF;
        a->next_start = now + 1000;
        return;
    }
    a->pid = pid;
    a->prog = 0;
    a->started = now;
    a->started_wall_ms = aos_now_ms();
    a->incarnation++;
    a->stop_req = a->kill_req = a->frozen = a->last_step_set = 0; /* a suspend asked for
                                                                    * before it started stays */
    a->stop_why[0] = 0;
    a->st = AS_RUNNING;
    snprintf(a->reason, sizeof a->reason, "started (pid %d)", (int)pid);
    if (!a->next_wake)
        plan_wake(a, now);
    aos_info("agent %s started (pid %d)", a->name, (int)pid);
    return;
fail:
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (logfd >= 0)
        close(logfd);
    snprintf(a->reason, sizeof a->reason, "cannot start: %s", why);
    aos_warn("agent %s: %s", a->name, a->reason);
    a->st = AS_FAILED;
}

/* ---- aosd's own calls to aos-storage ------------------------------------------------------ */

typedef void (*kc_done_fn)(void *arg, int status, const uint8_t *payload, size_t len,
                           const char *err);
typedef struct kcall {
    kc_done_fn done;
    void *arg;
} kcall;

static void kc_on_done(void *arg, nng_msg *reply, int status, const char *err)
{
    kcall *c = arg;
    aos_env rep;
    char why[AOS_ERRMSG_MAX];
    if (reply && aos_env_decode(nng_msg_body(reply), nng_msg_len(reply), &rep, why,
                                sizeof why) == AOS_OK) {
        c->done(c->arg, rep.status, rep.payload, rep.payload_len, rep.error);
        aos_env_clear(&rep);
    } else {
        c->done(c->arg, reply ? AOS_ERR_PROTO : status, NULL, 0,
                reply ? "the server's reply is not an envelope" : err);
    }
    if (reply)
        nng_msg_free(reply);
    free(c);
}

/* A request of aosd's own on a server's link: it waits there until the server is ready
 * (or timeout_ms passes: TIMEOUT) and is re-sent to a restarted one. done runs exactly
 * once (no lock held; inline when it cannot be forwarded). */
static void kc_call_as(const char *server, const char *method, const char *who,
                       const uint8_t *request_id, uint32_t timeout_ms,
                       const ProtobufCMessage *msg, kc_done_fn done, void *arg)
{
    int failed = 0;
    char why[AOS_ERRMSG_MAX] = "";
    klink *l = sup_link(server, &failed, why, sizeof why);
    kcall *c = malloc(sizeof *c);
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!l || failed || !c || !buf) {
        free(c);
        free(buf);
        char w[AOS_ERRMSG_MAX];
        snprintf(w, sizeof w, "aos-%s is not there", server);
        done(arg, failed ? failed : !l ? AOS_ERR_NOT_FOUND : AOS_ERR_NOMEM, NULL, 0,
             why[0] ? why : w);
        return;
    }
    protobuf_c_message_pack(msg, buf);
    c->done = done;
    c->arg = arg;
    aos_env e;
    aos_env_init(&e, AOS_KIND_REQUEST);
    snprintf(e.method, sizeof e.method, "%s", method);
    snprintf(e.agent_id, sizeof e.agent_id, "%s", who);
    if (request_id)
        memcpy(e.request_id, request_id, AOS_ID_LEN);
    else
        aos_id_random(e.request_id);
    e.has_request_id = 1;
    e.deadline_ms = aos_now_ms() + timeout_ms;
    e.payload = buf;
    e.payload_len = len;
    link_fwd f = {.deadline = aos_mono_ms() + timeout_ms, .done = kc_on_done, .arg = c};
    aos_err rc = link_forward(l, &e, &f, NULL);
    free(buf);
    if (rc != AOS_OK) {
        free(c);
        snprintf(why, sizeof why, "cannot forward to aos-%s", server);
        done(arg, rc, NULL, 0, why);
    }
}

static void kc_storage_as(const char *method, const char *who, const uint8_t *request_id,
                          uint32_t timeout_ms, const ProtobufCMessage *msg, kc_done_fn done,
                          void *arg)
{
    kc_call_as("storage", method, who, request_id, timeout_ms, msg, done, arg);
}

static void kc_storage(const char *method, const ProtobufCMessage *msg, kc_done_fn done,
                       void *arg)
{
    kc_storage_as(method, AG_KV_AGENT, NULL, AG_STORAGE_MS, msg, done, arg);
}

void agents_storage(const char *method, const char *who, const uint8_t *request_id,
                    uint32_t timeout_ms, const ProtobufCMessage *msg, agents_storage_fn done,
                    void *arg)
{
    kc_storage_as(method, who, request_id, timeout_ms, msg, done, arg);
}

/* ---- mail (msg.c) ---------------------------------------------------------------------------- */

static int has(char *const *v, size_t n, const char *s, size_t len);
static ProtobufCBinaryData bin(const char *s);
static void freeze_check(struct agent *a);
static aos_err refuse(agent *a, char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

aos_err agents_may_mail(const char *from, const char *to, char *why, size_t whylen)
{
    aos_err rc = AOS_OK;
    pthread_mutex_lock(&A.mu);
    agent *s = from[0] ? find(from, NULL) : NULL;
    if (!find(to, NULL)) {
        rc = AOS_ERR_NOT_FOUND;
        snprintf(why, whylen, "no agent %s is applied", to);
    } else if (from[0] && !s) {
        rc = AOS_ERR_REFUSED;
        snprintf(why, whylen, "agent %s is no longer applied", from);
    } else if (s && !has(s->m->talks_to, s->m->ntalks_to, to, strlen(to))) {
        rc = refuse(s, why, whylen, "agent %s may not send mail to %s: its manifest's talks_to "
                    "names %zu agents, not this one", from, to, s->m->ntalks_to);
    }
    pthread_mutex_unlock(&A.mu);
    return rc;
}

aos_err agents_subscribers(const char *topic, char ***out, size_t *n, char *why,
                           size_t whylen)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&A.mu);
    aos_err rc = AOS_OK;
    if (!has(A.topics, A.ntopics, topic, strlen(topic))) {
        rc = AOS_ERR_NOT_FOUND;
        snprintf(why, whylen, "no topic %s in the applied deployment", topic);
        goto out;
    }
    size_t cap = 0;
    for (uint32_t i = 0; i < A.hi; i++)
        cap += A.tab[i] != NULL;
    char **v = calloc(cap + 1, sizeof *v);
    if (!v) {
        rc = AOS_ERR_NOMEM;
        snprintf(why, whylen, "aosd is out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < A.hi; i++) {
        agent *a = A.tab[i];
        if (a && !a->removed && has(a->m->subscribes, a->m->nsubscribes, topic, strlen(topic)))
            if (!(v[(*n)++] = strdup(a->name))) {
                for (size_t j = 0; j < *n; j++)
                    free(v[j]);
                free(v);
                *n = 0;
                rc = AOS_ERR_NOMEM;
                snprintf(why, whylen, "aosd is out of memory");
                goto out;
            }
    }
    *out = v;
out:
    pthread_mutex_unlock(&A.mu);
    return rc;
}

/* A receive waiting behind the mail count wakes (not while frozen: resume calls this). mu
 * held. */
static void mail_wake(agent *a)
{
    if (!a->waiter || !a->waiter_mail || a->frozen || a->mail_in == a->waiter_seen)
        return;
    Aos__Agent__WaitReply w = AOS__AGENT__WAIT_REPLY__INIT;
    uint8_t buf[48];
    w.woken = 1;
    w.why = bin("message");
    w.mail_in = a->mail_in;
    kreply_send(a->waiter, AOS_OK, NULL, buf, aos__agent__wait_reply__pack(&w, buf));
    a->waiter = NULL;
}

void agents_mail_arrived(const char *name)
{
    pthread_mutex_lock(&A.mu);
    agent *a = find(name, NULL);
    if (a) {
        a->mail_in++; /* a receive not waiting yet sees the count moved and looks again */
        mail_wake(a);
    }
    pthread_mutex_unlock(&A.mu);
}

int agents_applied(const char *name)
{
    pthread_mutex_lock(&A.mu);
    int ok = find(name, NULL) != NULL;
    pthread_mutex_unlock(&A.mu);
    return ok;
}

/* ---- retention's questions (retain.c) ----------------------------------------------------- */

/* Any entry of that name, applied or removed with its process not reaped yet, is in use. */
static int in_table(const char *name)
{
    for (agent *a = A.byname[name_hash(name)]; a; a = a->hnext)
        if (!strcmp(a->name, name))
            return 1;
    return 0;
}

int agents_in_use(const char *name)
{
    pthread_mutex_lock(&A.mu);
    int r = !A.loaded || in_table(name);
    pthread_mutex_unlock(&A.mu);
    return r;
}

aos_err agents_ws_names(char ***out, size_t *n, char *why, size_t whylen)
{
    *out = NULL;
    *n = 0;
    int dfd = dup(A.wsdir);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dir) {
        snprintf(why, whylen, "DATA/workspaces: %s", strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return AOS_ERR_IO;
    }
    rewinddir(dir); /* the dup shares its offset with A.wsdir's earlier walks */
    size_t cap = 0;
    aos_err e = AOS_OK;
    struct dirent *de;
    while ((de = readdir(dir))) {
        /* agent names only: the hidden ones are workspaces being removed */
        if (de->d_name[0] == '.' || !aos_agent_id_valid(de->d_name, strlen(de->d_name)))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nv = cap <= AG_MAX * 4u ? realloc(*out, cap * sizeof *nv) : NULL;
            if (!nv) {
                e = AOS_ERR_NOMEM;
                snprintf(why, whylen, "DATA/workspaces: more names than memory or %u",
                         AG_MAX * 4u);
                break;
            }
            *out = nv;
        }
        if (!((*out)[*n] = strdup(de->d_name))) {
            e = AOS_ERR_NOMEM;
            snprintf(why, whylen, "out of memory");
            break;
        }
        (*n)++;
    }
    closedir(dir);
    return e;
}

aos_err agents_ws_remove(const char *name, char *why, size_t whylen)
{
    char hidden[16 + 2 * AOS_ID_LEN];
    uint8_t rnd[AOS_ID_LEN];
    aos_id_random(rnd);
    int k = snprintf(hidden, sizeof hidden, ".removing-");
    aos_hex(rnd, sizeof rnd, hidden + k);
    if (!aos_agent_id_valid(name, strlen(name))) {
        snprintf(why, whylen, "%s is no agent name", name);
        return AOS_ERR_USAGE;
    }
    /* renamed away under the lock an apply takes: an agent of that name applied after this
     * starts in a new, empty workspace, never in one half removed */
    pthread_mutex_lock(&A.mu);
    if (!A.loaded || in_table(name)) {
        pthread_mutex_unlock(&A.mu);
        snprintf(why, whylen, "agent %s is %s", name,
                 A.loaded ? "applied (or still stopping)" : "not known yet: the deployment is "
                                                            "not read back");
        return AOS_ERR_CONFLICT;
    }
    int r = renameat(A.wsdir, name, A.wsdir, hidden);
    int err = errno;
    if (r == 0 || err == ENOENT) /* its log goes with it (one file, aosd's own) */
        unlinkat(A.logdir, name, 0);
    pthread_mutex_unlock(&A.mu);
    if (r != 0) {
        if (err == ENOENT)
            return AOS_OK;
        snprintf(why, whylen, "DATA/workspaces/%s: %s", name, strerror(err));
        return AOS_ERR_IO;
    }
    return fs_remove(A.wsdir, hidden, why, whylen);
}

int agents_ws_mtime(const char *name, uint64_t *ms)
{
    struct stat st;
    if (fstatat(A.wsdir, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
        return -1;
    *ms = (uint64_t)st.st_mtim.tv_sec * 1000u + (uint64_t)st.st_mtim.tv_nsec / 1000000u;
    return 0;
}

/* ---- the deployment record ---------------------------------------------------------------- */

/* {"agents":[manifest...], "collections":[...], "topics":[...]}: the whole applied set in
 * one value, so an apply is one atomic write (compare-and-set on its version). */
static char *record_json(char *const *jsons, size_t n, char *const *cols, size_t ncols,
                         char *const *tops, size_t ntops)
{
    json_t *o = json_object(), *arr = json_array(), *c = json_array(), *t = json_array();
    json_object_set_new(o, "agents", arr);
    json_object_set_new(o, "collections", c);
    json_object_set_new(o, "topics", t);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_loads(jsons[i], 0, NULL));
    for (size_t i = 0; i < ncols; i++)
        json_array_append_new(c, json_string(cols[i]));
    for (size_t i = 0; i < ntops; i++)
        json_array_append_new(t, json_string(tops[i]));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static agent *agent_new(dep_agent *m, char *mjson)
{
    agent *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    snprintf(a->name, sizeof a->name, "%s", m->name);
    a->m = m;
    a->mjson = mjson;
    a->st = AS_PENDING;
    snprintf(a->reason, sizeof a->reason, "applied: waiting to start");
    return a;
}

/* Into a free slot; mu held. */
static int slot_put(agent *a)
{
    for (uint32_t i = 0; i < AG_MAX; i++)
        if (!A.tab[i]) {
            A.tab[i] = a;
            a->gen = ++A.gens[i];
            a->slot = i;
            uint32_t h = name_hash(a->name);
            a->hnext = A.byname[h];
            A.byname[h] = a;
            if (i + 1 > A.hi)
                A.hi = i + 1;
            return 0;
        }
    return -1;
}

/* Out of the table and freed; mu held. */
static void slot_drop(uint32_t i)
{
    agent *a = A.tab[i];
    for (agent **pp = &A.byname[name_hash(a->name)]; *pp; pp = &(*pp)->hnext)
        if (*pp == a) {
            *pp = a->hnext;
            break;
        }
    A.tab[i] = NULL;
    agent_free(a);
}

/* ---- what a restart must know: one small record per agent ---------------------------------
 * Written (by agents_tick, one write in flight per agent, the latest state each time) when
 * an agent reaches done or failed, and when it leaves them (a wake, a restart): "live".
 * A restarted aosd reads them before it starts anything: a finished agent stays finished,
 * with its reason and restart count; a live one is started again. */

static char *state_json(const agent *a)
{
    agst r = {.state = a->st == AS_DONE ? AGST_DONE : a->st == AS_FAILED ? AGST_FAILED
                                                                         : AGST_LIVE,
              .restarts = a->restarts, .at_ms = wall_ms(), .run_steps = a->run_steps};
    snprintf(r.reason, sizeof r.reason, "%s", a->reason);
    snprintf(r.run, sizeof r.run, "%s", a->run);
    snprintf(r.stopped, sizeof r.stopped, "%s", r.state == AGST_LIVE ? "" : a->stop_why);
    return agst_encode(&r);
}

/* A record read back (a stored value: agst_decode checks it whole); mu held. */
static void state_restore(agent *a, const uint8_t *val, size_t len, uint64_t now)
{
    agst r;
    char why[200];
    if (agst_decode(val, len, &r, why, sizeof why) != AOS_OK) {
        aos_warn("agent %s: its state record does not read (%s): started as if new", a->name,
                 why);
        return;
    }
    a->restarts = r.restarts;
    /* the run it was in goes on counting its steps where it was (an aosd restart is not a
     * new run); a step of aosd's never recorded is at most the one in flight */
    if (!a->run[0] && !a->run_steps) {
        snprintf(a->run, sizeof a->run, "%s", r.run);
        a->run_steps = r.run_steps;
    }
    if (r.state != AGST_LIVE && !a->pid && a->st == AS_PENDING) {
        a->st = r.state == AGST_DONE ? AS_DONE : AS_FAILED;
        snprintf(a->reason, sizeof a->reason, "%s", r.reason);
        snprintf(a->stop_why, sizeof a->stop_why, "%.*s", (int)sizeof a->stop_why - 1,
                 r.stopped);
        if (a->st == AS_DONE && !a->stop_why[0])
            plan_wake(a, now); /* its wakes start it again, as they did before */
    }
}

static void state_load(const uint8_t *after, size_t alen);

static void state_page_cb(void *arg, int status, const uint8_t *pl, size_t len,
                          const char *err)
{
    (void)arg;
    Aos__Storage__KvListReply *r = NULL;
    if (status == AOS_OK && !(r = aos__storage__kv_list_reply__unpack(NULL, len, pl)))
        status = AOS_ERR_PROTO;
    if (status != AOS_OK) {
        aos_warn("agents: reading their state records from aos-storage: %s (%s); retrying",
                 aos_err_name(status), err ? err : "");
        pthread_mutex_lock(&A.mu);
        A.state_loading = 0;
        A.state_retry = aos_mono_ms() + 1000;
        pthread_mutex_unlock(&A.mu);
        return;
    }
    uint64_t now = aos_mono_ms();
    size_t pre = strlen(AG_KV_STATE), kept = 0;
    pthread_mutex_lock(&A.mu);
    for (size_t i = 0; i < r->n_entries; i++) {
        const ProtobufCBinaryData *k = &r->entries[i]->key;
        char name[DEP_NAME_MAX + 1];
        if (k->len <= pre || k->len - pre > DEP_NAME_MAX || memcmp(k->data, AG_KV_STATE, pre))
            continue;
        memcpy(name, k->data + pre, k->len - pre);
        name[k->len - pre] = 0;
        agent *a = find(name, NULL);
        if (a) {
            state_restore(a, r->entries[i]->value.data, r->entries[i]->value.len, now);
            kept += a->st == AS_DONE || a->st == AS_FAILED;
        }
    }
    int more = r->next.len > 0;
    if (!more) {
        A.state_loading = 0;
        A.state_loaded = 1;
    }
    pthread_mutex_unlock(&A.mu);
    if (kept)
        aos_info("agents: %zu finished before aosd restarted stay finished", kept);
    if (more)
        state_load(r->next.data, r->next.len);
    aos__storage__kv_list_reply__free_unpacked(r, NULL);
}

/* One page of the state records, after the key after (NULL: from the first). */
static void state_load(const uint8_t *after, size_t alen)
{
    pthread_mutex_lock(&A.mu);
    A.state_loading = 1;
    pthread_mutex_unlock(&A.mu);
    Aos__Storage__KvListRequest l = AOS__STORAGE__KV_LIST_REQUEST__INIT;
    l.prefix = (ProtobufCBinaryData){strlen(AG_KV_STATE), (uint8_t *)AG_KV_STATE};
    l.after = (ProtobufCBinaryData){after ? alen : 0, (uint8_t *)after};
    l.limit = 1000;
    l.values = 1;
    kc_storage("storage.kv.list", &l.base, state_page_cb, NULL);
}

typedef struct kname {
    char name[DEP_NAME_MAX + 1];
    uint64_t n;
} kname;

static void state_put_cb(void *arg, int status, const uint8_t *pl, size_t len,
                         const char *err)
{
    (void)pl;
    (void)len;
    kname *x = arg;
    pthread_mutex_lock(&A.mu);
    agent *a = find(x->name, NULL);
    if (a) {
        a->st_busy = 0;
        if (status != AOS_OK) {
            a->st_dirty = 1; /* written again a second later */
            a->st_retry = aos_mono_ms() + 1000;
            aos_warn("agent %s: writing its state record: %s (%s); again", x->name,
                     aos_err_name(status), err ? err : "");
        }
    }
    pthread_mutex_unlock(&A.mu);
    free(x);
}

static void state_del_cb(void *arg, int status, const uint8_t *pl, size_t len,
                         const char *err)
{
    (void)pl;
    (void)len;
    kname *x = arg;
    if (status != AOS_OK && status != AOS_ERR_NOT_FOUND)
        aos_warn("agent %s: deleting its state record: %s (%s)", x->name,
                 aos_err_name(status), err ? err : "");
    free(x);
}

/* A removed agent's record goes with it. No lock held. */
static void state_delete(const char *name)
{
    kname *x = calloc(1, sizeof *x);
    if (!x)
        return;
    snprintf(x->name, sizeof x->name, "%s", name);
    char key[DEP_NAME_MAX + 16];
    snprintf(key, sizeof key, AG_KV_STATE "%.*s", (int)DEP_NAME_MAX, name);
    Aos__Storage__KvDeleteRequest d = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
    d.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    kc_storage("storage.kv.delete", &d.base, state_del_cb, x);
}

/* ---- budgets.context_tokens: aos-memory's window budget for the agent --------------------- */

static void budget_cb(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    (void)pl;
    (void)len;
    kname *x = arg;
    pthread_mutex_lock(&A.mu);
    agent *a = find(x->name, NULL);
    if (a) {
        a->budget_busy = 0;
        if (status == AOS_OK) {
            /* a manifest changed meanwhile is sent again */
            a->budget_ok = a->m->budget_context_tokens == x->n;
        } else {
            aos_warn("agent %s: aos-memory did not take its context budget: %s (%s)",
                     x->name, aos_err_name(status), err ? err : "");
            a->budget_retry = aos_mono_ms() + 1000;
            if (!a->pid) {
                snprintf(a->reason, sizeof a->reason, "waiting for aos-memory to take its "
                         "context budget (%s: %.150s)", aos_err_name(status), err ? err : "");
                a->next_start = aos_mono_ms() + 1000;
            }
        }
    }
    pthread_mutex_unlock(&A.mu);
    free(x);
}

static void loaded_cb(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    (void)arg;
    pthread_mutex_lock(&A.mu);
    A.loading = 0;
    if (status == AOS_ERR_NOT_FOUND) {
        A.loaded = 1;
        A.state_loaded = 1; /* no agents: no state of theirs to read */
        A.kv_version = 0;
        aos_info("agents: no deployment applied yet");
        pthread_mutex_unlock(&A.mu);
        return;
    }
    Aos__Storage__KvGetReply *g = NULL;
    if (status != AOS_OK || !(g = aos__storage__kv_get_reply__unpack(NULL, len, pl))) {
        aos_warn("agents: reading the deployment from aos-storage: %s (%s); retrying",
                 aos_err_name(status == AOS_OK ? AOS_ERR_PROTO : status), err ? err : "");
        A.load_retry = aos_mono_ms() + 1000;
        pthread_mutex_unlock(&A.mu);
        return;
    }
    json_error_t je;
    json_t *o = json_loadb((const char *)g->value.data, g->value.len, 0, &je);
    json_t *arr = json_object_get(o, "agents");
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        char *txt = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        dep_agent *m = NULL;
        char why[256];
        if (txt && dep_agent_from_json(txt, strlen(txt), &m, why, sizeof why) == AOS_OK) {
            agent *a = agent_new(m, txt);
            if (a && !find(a->name, NULL) && slot_put(a) == 0) {
                sched_apply(a);
                continue;
            }
            if (a)
                agent_free(a);
            else {
                dep_agent_free(m);
                free(txt);
            }
        } else {
            aos_warn("agents: a stored manifest no longer reads: %s", why);
            free(txt);
        }
    }
    json_t *cols = json_object_get(o, "collections"), *tops = json_object_get(o, "topics");
    A.collections = calloc(json_array_size(cols) + 1, sizeof *A.collections);
    A.topics = calloc(json_array_size(tops) + 1, sizeof *A.topics);
    json_array_foreach(cols, i, v) if (A.collections && json_is_string(v))
        A.collections[A.ncollections++] = strdup(json_string_value(v));
    json_array_foreach(tops, i, v) if (A.topics && json_is_string(v))
        A.topics[A.ntopics++] = strdup(json_string_value(v));
    json_decref(o);
    A.kv_version = g->version;
    A.loaded = 1;
    size_t n = 0;
    for (i = 0; i < AG_MAX; i++)
        n += A.tab[i] != NULL;
    aos_info("agents: %zu from the applied deployment (version %" PRIu64 ")", n,
             A.kv_version);
    aos__storage__kv_get_reply__free_unpacked(g, NULL);
    pthread_mutex_unlock(&A.mu);
    state_load(NULL, 0);
}

void agents_load(void)
{
    pthread_mutex_lock(&A.mu);
    if (A.loaded || A.loading) {
        pthread_mutex_unlock(&A.mu);
        return;
    }
    A.loading = 1;
    pthread_mutex_unlock(&A.mu);
    Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
    g.key.data = (uint8_t *)AG_KV_KEY;
    g.key.len = strlen(AG_KV_KEY);
    kc_storage("storage.kv.get", &g.base, loaded_cb, NULL);
}

/* ---- kernel.agent.apply ------------------------------------------------------------------- */

enum { CH_CREATE, CH_UPDATE, CH_DELETE, CH_SAME };
static const char *const ch_names[] = {"create", "update", "delete", "unchanged"};

typedef struct change {
    int kind;                    /* 0 agent, 1 collection, 2 topic */
    int action;
    char name[DEP_NAME_MAX + 1];
    const char *fields[24];
    size_t nfields;
    char *json;                  /* create/update: the new manifest's JSON, owned */
} change;

typedef struct plan {
    kreply *k;
    change *ch;
    size_t n;
    char **cols, **tops;         /* the file's, owned */
    size_t ncols, ntops;
    uint8_t *reply;
    size_t reply_len;
    char *record;
} plan;

static void plan_free(plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->ch[i].json);
    free(p->ch);
    strv_free(p->cols, p->ncols);
    strv_free(p->tops, p->ntops);
    free(p->reply);
    free(p->record);
    free(p);
}

static int known_model(const char *name)
{
    const Aos__Llm__Config *c = conf_llm(A.cfg->cf);
    for (size_t i = 0; c && i < c->n_providers; i++) {
        const Aos__Llm__Provider *p = c->providers[i];
        for (size_t j = 0; j < p->n_models; j++) {
            char full[300];
            snprintf(full, sizeof full, "%.*s/%.*s", (int)p->name.len, (char *)p->name.data,
                     (int)p->models[j]->name.len, (char *)p->models[j]->name.data);
            size_t ml = p->models[j]->name.len;
            if (!strcmp(full, name) ||
                (strlen(name) == ml && !memcmp(name, p->models[j]->name.data, ml)))
                return 1;
        }
    }
    return 0;
}

/* What known() consults. Models are aos.yaml's, which aosd holds; tools and MCP tools are
 * aos-tool's catalogue (aosd never reads a descriptor), asked for by the apply itself. */
typedef struct kctx {
    json_t *cat;                 /* the catalogue's names as keys; NULL: not fetched yet */
    int asked;                   /* a tool was named while cat was NULL */
} kctx;

static int known(void *arg, const char *kind, const char *name)
{
    kctx *x = arg;
    if (!strcmp(kind, "model"))
        return known_model(name);
    if (!x->cat) { /* first pass: note that the file needs the catalogue */
        x->asked = 1;
        return 1;
    }
    if (!strcmp(kind, "tool"))
        return json_object_get(x->cat, name) != NULL;
    /* mcp_tool SERVER/TOOL is mcp.SERVER.TOOL in the catalogue (as in tool.run) */
    const char *sl = strchr(name, '/');
    char full[300];
    if (!sl || (size_t)snprintf(full, sizeof full, "mcp.%.*s.%s", (int)(sl - name), name,
                                sl + 1) >= sizeof full)
        return 0;
    return json_object_get(x->cat, full) != NULL;
}

static int strv_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i], s))
            return 1;
    return 0;
}

/* The reply: every change, in the order the plan has them. */
static void plan_reply(plan *p, int applied)
{
    Aos__Agent__ApplyReply r = AOS__AGENT__APPLY_REPLY__INIT;
    Aos__Agent__Change *cs = calloc(p->n + 1, sizeof *cs);
    Aos__Agent__Change **cp = calloc(p->n + 1, sizeof *cp);
    ProtobufCBinaryData *fs = calloc(p->n * 24 + 1, sizeof *fs);
    static const char *const kinds[] = {"agent", "collection", "topic"};
    if (!cs || !cp || !fs)
        goto out;
    for (size_t i = 0; i < p->n; i++) {
        change *c = &p->ch[i];
        aos__agent__change__init(&cs[i]);
        cs[i].kind = (ProtobufCBinaryData){strlen(kinds[c->kind]), (uint8_t *)kinds[c->kind]};
        cs[i].name = (ProtobufCBinaryData){strlen(c->name), (uint8_t *)c->name};
        cs[i].action = (ProtobufCBinaryData){strlen(ch_names[c->action]),
                                             (uint8_t *)ch_names[c->action]};
        cs[i].fields = &fs[i * 24];
        for (size_t f = 0; f < c->nfields; f++)
            fs[i * 24 + f] = (ProtobufCBinaryData){strlen(c->fields[f]),
                                                   (uint8_t *)c->fields[f]};
        cs[i].n_fields = c->nfields;
        cp[i] = &cs[i];
    }
    r.changes = cp;
    r.n_changes = p->n;
    r.applied = applied;
    p->reply_len = aos__agent__apply_reply__get_packed_size(&r);
    p->reply = malloc(p->reply_len ? p->reply_len : 1);
    if (p->reply)
        aos__agent__apply_reply__pack(&r, p->reply);
out:
    free(cs);
    free(cp);
    free(fs);
}

static void list_diff(plan *p, int kind, char *const *old, size_t nold, char *const *nw,
                      size_t nnew, int prune)
{
    for (size_t i = 0; i < nnew; i++)
        if (!strv_has(old, nold, nw[i])) {
            change *c = &p->ch[p->n++];
            c->kind = kind;
            c->action = CH_CREATE;
            snprintf(c->name, sizeof c->name, "%s", nw[i]);
        }
    for (size_t i = 0; prune && i < nold; i++)
        if (!strv_has(nw, nnew, old[i])) {
            change *c = &p->ch[p->n++];
            c->kind = kind;
            c->action = CH_DELETE;
            snprintf(c->name, sizeof c->name, "%s", old[i]);
        }
}

/* The applied set is in PostgreSQL: now the table follows it. */
/* The stop request to a running agent, heard even when it is idle (its wait ends) or frozen
 * (thawed first): below, with the admin's stop. mu held. */
static void stop_now(agent *a, const char *why);

static void commit(plan *p, uint64_t version)
{
    uint64_t now = aos_mono_ms();
    for (size_t i = 0; i < p->n; i++) {
        change *c = &p->ch[i];
        if (c->kind != 0 || c->action == CH_SAME)
            continue;
        agent *a = find(c->name, NULL);
        dep_agent *m = NULL;
        char why[256];
        if (c->json && dep_agent_from_json(c->json, strlen(c->json), &m, why, sizeof why) !=
                           AOS_OK) {
            aos_error("agent %s: its own manifest does not read back: %s", c->name, why);
            continue;
        }
        if (c->action == CH_CREATE && !a) {
            a = agent_new(m, c->json);
            if (!a || slot_put(a) != 0) {
                aos_error("agent %s: no room", c->name);
                if (a)
                    agent_free(a);
                else
                    dep_agent_free(m);
            } else {
                sched_apply(a);
            }
            c->json = NULL;
        } else if (c->action == CH_UPDATE && a) {
            int restart = 0;
            for (size_t f = 0; f < c->nfields; f++)
                restart |= !strcmp(c->fields[f], "program") || !strcmp(c->fields[f], "args") ||
                           !strcmp(c->fields[f], "env");
            if (!m || a->m->budget_context_tokens != m->budget_context_tokens)
                a->budget_ok = 0; /* the next tick hands aos-memory the new one */
            dep_agent_free(a->m);
            free(a->mjson);
            a->m = m;
            a->mjson = c->json;
            c->json = NULL;
            sched_apply(a);
            plan_wake(a, now);
            if (restart && a->pid) {
                a->restart_after = 1;
                stop_now(a, "its manifest changed");
            }
        } else if (c->action == CH_DELETE && a) {
            dep_agent_free(m);
            a->removed = 1;
            stop_now(a, "removed from the deployment");
        } else {
            dep_agent_free(m);
        }
    }
    /* removed agents without a process go now; the others when they exit */
    for (uint32_t i = 0; i < AG_MAX; i++)
        if (A.tab[i] && A.tab[i]->removed && !A.tab[i]->pid) {
            if (A.tab[i]->waiter)
                kreply_send(A.tab[i]->waiter, AOS_ERR_CANCELLED, "removed", NULL, 0);
            slot_drop(i);
        }
    strv_free(A.collections, A.ncollections);
    strv_free(A.topics, A.ntopics);
    A.collections = p->cols;
    A.ncollections = p->ncols;
    A.topics = p->tops;
    A.ntopics = p->ntops;
    p->cols = p->tops = NULL;
    p->ncols = p->ntops = 0;
    A.kv_version = version;
}

static void applied_cb(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    plan *p = arg;
    Aos__Storage__KvPutReply *r = NULL;
    if (status == AOS_OK && !(r = aos__storage__kv_put_reply__unpack(NULL, len, pl)))
        status = AOS_ERR_PROTO;
    pthread_mutex_lock(&A.mu);
    A.applying = 0;
    if (status == AOS_OK)
        commit(p, r->version);
    pthread_mutex_unlock(&A.mu);
    if (r)
        aos__storage__kv_put_reply__free_unpacked(r, NULL);
    if (status == AOS_OK) {
        /* a removed agent's record goes with it; a created one starts without any (one
         * left by an earlier agent of its name whose delete was lost or raced its last
         * write would make a restarted aosd take it for finished) */
        for (size_t i = 0; i < p->n; i++)
            if (p->ch[i].kind == 0 &&
                (p->ch[i].action == CH_DELETE || p->ch[i].action == CH_CREATE))
                state_delete(p->ch[i].name);
        kreply_send(p->k, AOS_OK, NULL, p->reply, p->reply_len);
    } else {
        char why[AOS_ERRMSG_MAX];
        snprintf(why, sizeof why, "%s: %s",
                 status == AOS_ERR_CONFLICT ? "the stored deployment changed under this apply "
                                              "(another apply?); nothing changed, try again"
                                            : "cannot store the deployment in aos-storage; "
                                              "nothing changed",
                 err ? err : "");
        kreply_send(p->k, status, why, NULL, 0);
    }
    plan_free(p);
}

/* The applied set's record must fit one storage value: aos-storage's cap, which it reads
 * from the same variable in the environment aosd hands it. */
static size_t record_cap(void)
{
    const char *v = getenv("AOS_STORAGE_VALUE_MAX");
    char *end;
    unsigned long long n = v && *v ? strtoull(v, &end, 10) : 0;
    return n > 0 && !*end && n <= (3u << 20) ? (size_t)n : AOS_VALUE_MAX_DEFAULT;
}

/* The file is valid and checked whole (d): the plan, then one compare-and-set of the
 * record (or, dry, the plan alone). Takes k, ar and d. */
static void apply_checked(kreply *k, Aos__Agent__ApplyRequest *ar, dep *d)
{
    plan *p = calloc(1, sizeof *p);
    size_t cap = dep_nagents(d) + AG_MAX + dep_ncollections(d) + dep_ntopics(d) + 8;
    if (p)
        p->ch = calloc(cap + A.ncollections + A.ntopics, sizeof *p->ch);
    if (!p || !p->ch) {
        kreply_send(k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        goto out;
    }
    p->k = k;
    p->ncols = dep_ncollections(d);
    p->ntops = dep_ntopics(d);
    p->cols = calloc(p->ncols + 1, sizeof *p->cols);
    p->tops = calloc(p->ntops + 1, sizeof *p->tops);
    for (size_t i = 0; p->cols && i < p->ncols; i++)
        p->cols[i] = strdup(dep_collection_at(d, i));
    for (size_t i = 0; p->tops && i < p->ntops; i++)
        p->tops[i] = strdup(dep_topic_at(d, i));

    pthread_mutex_lock(&A.mu);
    if (!A.loaded || A.applying) {
        pthread_mutex_unlock(&A.mu);
        kreply_send(k, A.loaded ? AOS_ERR_CONFLICT : AOS_ERR_UNAVAILABLE,
                    A.loaded ? "another apply is in progress; try again"
                             : "the applied deployment is not read back from aos-storage yet; "
                               "try again",
                    NULL, 0);
        p->k = NULL;
        goto out;
    }
    /* every agent of the file: new, changed or the same; then, with prune, the rest */
    size_t nd = dep_nagents(d);
    char **jsons = calloc(nd + AG_MAX + 1, sizeof *jsons);
    size_t nj = 0;
    for (size_t i = 0; jsons && i < nd; i++) {
        const dep_agent *m = dep_agent_at(d, i);
        change *c = &p->ch[p->n++];
        snprintf(c->name, sizeof c->name, "%s", m->name);
        c->json = dep_agent_json(m);
        agent *a = find(m->name, NULL);
        if (!a)
            c->action = CH_CREATE;
        else {
            c->nfields = dep_agent_diff(a->m, m, c->fields, 24);
            c->action = c->nfields ? CH_UPDATE : CH_SAME;
        }
        jsons[nj++] = c->json;
    }
    for (uint32_t i = 0; jsons && i < AG_MAX; i++) {
        agent *a = A.tab[i];
        if (!a || a->removed)
            continue;
        int in_file = 0;
        for (size_t j = 0; j < nd && !in_file; j++)
            in_file = !strcmp(dep_agent_at(d, j)->name, a->name);
        if (in_file)
            continue;
        if (ar->prune) {
            change *c = &p->ch[p->n++];
            c->action = CH_DELETE;
            snprintf(c->name, sizeof c->name, "%s", a->name);
        } else {
            jsons[nj++] = a->mjson;
        }
    }
    list_diff(p, 1, A.collections, A.ncollections, p->cols, p->ncols, ar->prune);
    list_diff(p, 2, A.topics, A.ntopics, p->tops, p->ntops, ar->prune);
    if (!ar->prune) { /* kept: the applied lists stay, with the file's added */
        for (size_t i = 0; i < A.ncollections; i++)
            if (!strv_has(p->cols, p->ncols, A.collections[i])) {
                char **nv = realloc(p->cols, (p->ncols + 2) * sizeof *nv);
                if (nv) {
                    p->cols = nv;
                    p->cols[p->ncols++] = strdup(A.collections[i]);
                }
            }
        for (size_t i = 0; i < A.ntopics; i++)
            if (!strv_has(p->tops, p->ntops, A.topics[i])) {
                char **nv = realloc(p->tops, (p->ntops + 2) * sizeof *nv);
                if (nv) {
                    p->tops = nv;
                    p->tops[p->ntops++] = strdup(A.topics[i]);
                }
            }
    }
    p->record = jsons ? record_json(jsons, nj, p->cols, p->ncols, p->tops, p->ntops) : NULL;
    free(jsons);
    uint64_t version = A.kv_version;
    int dry = ar->dry_run;
    size_t rlen = p->record ? strlen(p->record) : 0, vcap = record_cap();
    if (rlen > vcap) {
        /* aos-storage would refuse it: said here with what the cap means in agents */
        pthread_mutex_unlock(&A.mu);
        char why[AOS_ERRMSG_MAX];
        size_t per = nj ? rlen / nj : rlen;
        snprintf(why, sizeof why, "the applied deployment would hold %zu agents in a record "
                 "of %zu bytes, over aos-storage's value cap of %zu bytes "
                 "(AOS_STORAGE_VALUE_MAX; about %zu agents of this size fit): nothing changed; "
                 "split the agents over fewer or smaller manifests, or raise the cap",
                 nj, rlen, vcap, per ? vcap / per : 0);
        kreply_send(k, AOS_ERR_TOO_BIG, why, NULL, 0);
        p->k = NULL;
        goto out;
    }
    if (!dry && p->record)
        A.applying = 1;
    pthread_mutex_unlock(&A.mu);
    plan_reply(p, !dry);
    if (!p->record || !p->reply) {
        kreply_send(k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        if (!dry && p->record) {
            pthread_mutex_lock(&A.mu);
            A.applying = 0;
            pthread_mutex_unlock(&A.mu);
        }
        p->k = NULL;
        goto out;
    }
    if (dry) {
        kreply_send(k, AOS_OK, NULL, p->reply, p->reply_len);
        goto out;
    }
    Aos__Storage__KvPutRequest put = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    put.key = (ProtobufCBinaryData){strlen(AG_KV_KEY), (uint8_t *)AG_KV_KEY};
    put.value = (ProtobufCBinaryData){strlen(p->record), (uint8_t *)p->record};
    put.cas = 1;
    put.if_version = version;
    dep_free(d);
    aos__agent__apply_request__free_unpacked(ar, NULL);
    kc_storage("storage.kv.put", &put.base, applied_cb, p);
    return;
out:
    if (p)
        plan_free(p);
    dep_free(d);
    aos__agent__apply_request__free_unpacked(ar, NULL);
}

/* An apply waiting for aos-tool's catalogue. */
typedef struct acheck {
    kreply *k;
    Aos__Agent__ApplyRequest *ar;
    char file[1100];
    uint32_t waited_ms;
} acheck;

static void catalogue_cb(void *arg, int status, const uint8_t *pl, size_t len,
                         const char *err)
{
    acheck *c = arg;
    char why[AOS_ERRMSG_MAX] = "";
    kctx x = {.cat = NULL};
    dep *d = NULL;
    Aos__Tool__ListReply *r = NULL;
    if (status == AOS_OK && !(r = aos__tool__list_reply__unpack(NULL, len, pl)))
        status = AOS_ERR_PROTO;
    if (status != AOS_OK) {
        /* never applied unchecked: without the catalogue nothing is */
        snprintf(why, sizeof why, "the file names tools, and aos-tool's catalogue is not "
                 "available to check them (%s%s%.300s; waited up to %u ms): nothing changed, "
                 "try again when aos-tool runs (aosctl status)",
                 aos_err_name(status), err && err[0] ? ": " : "", err ? err : "",
                 c->waited_ms);
        kreply_send(c->k, AOS_ERR_UNAVAILABLE, why, NULL, 0);
        goto out;
    }
    x.cat = json_object();
    for (size_t i = 0; x.cat && i < r->n_tools; i++) {
        const ProtobufCBinaryData *n = &r->tools[i]->name;
        char name[256];
        /* untrusted: a name we could not compare is left out (refused if a file names it) */
        if (!n->len || n->len >= sizeof name || memchr(n->data, 0, n->len) ||
            !aos_utf8_valid(n->data, n->len))
            continue;
        memcpy(name, n->data, n->len);
        name[n->len] = 0;
        json_object_set_new(x.cat, name, json_true());
    }
    if (!x.cat) {
        kreply_send(c->k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        goto out;
    }
    aos_err rc = dep_parse((const char *)c->ar->yaml.data, c->ar->yaml.len, c->file, known,
                           &x, &d, why, sizeof why);
    if (rc != AOS_OK) {
        kreply_send(c->k, rc, why, NULL, 0);
        goto out;
    }
    apply_checked(c->k, c->ar, d);
    c->ar = NULL;
out:
    if (r)
        aos__tool__list_reply__free_unpacked(r, NULL);
    json_decref(x.cat);
    if (c->ar)
        aos__agent__apply_request__free_unpacked(c->ar, NULL);
    free(c);
}

void agents_m_apply(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    char why[AOS_ERRMSG_MAX] = "";
    dep *d = NULL;
    Aos__Agent__ApplyRequest *ar =
        aos__agent__apply_request__unpack(NULL, req->payload_len, req->payload);
    if (!ar || !aos_utf8_valid(ar->file.data, ar->file.len) || ar->file.len > 1024) {
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.apply: payload is not an ApplyRequest",
                    NULL, 0);
        if (ar)
            aos__agent__apply_request__free_unpacked(ar, NULL);
        return;
    }
    char file[1100];
    snprintf(file, sizeof file, "%.*s", (int)ar->file.len,
             ar->file.len ? (const char *)ar->file.data : "-");
    /* first pass: everything but the tools' existence, which needs aos-tool */
    kctx x = {.cat = NULL};
    aos_err rc = dep_parse((const char *)ar->yaml.data, ar->yaml.len, file, known, &x, &d,
                           why, sizeof why);
    if (rc != AOS_OK) {
        kreply_send(k, rc, why, NULL, 0);
        aos__agent__apply_request__free_unpacked(ar, NULL);
        return;
    }
    if (!x.asked) { /* no tool named: nothing to ask aos-tool */
        apply_checked(k, ar, d);
        return;
    }
    dep_free(d);
    acheck *c = calloc(1, sizeof *c);
    if (!c) {
        kreply_send(k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        aos__agent__apply_request__free_unpacked(ar, NULL);
        return;
    }
    c->k = k;
    c->ar = ar;
    snprintf(c->file, sizeof c->file, "%s", file);
    /* the catalogue within the request's deadline, leaving a part of it for the store */
    uint64_t now = aos_mono_ms(), dl = kreply_deadline(k);
    uint64_t left = dl > now ? dl - now : 0;
    uint64_t keep = left / 4 < 3000 ? left / 4 : 3000;
    c->waited_ms = (uint32_t)(left - keep > 600000 ? 600000 : left - keep < 100 ? 100
                                                                              : left - keep);
    Aos__Tool__ListRequest lr = AOS__TOOL__LIST_REQUEST__INIT; /* every tool, no render */
    kc_call_as("tool", "tool.list", AG_KV_AGENT, NULL, c->waited_ms, &lr.base, catalogue_cb,
               c);
}

/* ---- the admin's view and commands ---------------------------------------------------------- */

static const char *waiting_on(const agent *a)
{
    if (a->calls[KM_LLM])
        return "llm";
    if (a->calls[KM_EFFECT])
        return "tool";
    if (a->waiter && a->waiter_mail)
        return "mailbox";
    if (a->waiter)
        return a->next_wake ? "timer" : "wake";
    return "";
}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)(s ? s : "")};
}

void agents_m_list(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    Aos__Agent__ListRequest *lr =
        aos__agent__list_request__unpack(NULL, req->payload_len, req->payload);
    if (!lr || !aos_utf8_valid(lr->name.data, lr->name.len) || lr->name.len > DEP_NAME_MAX) {
        if (lr)
            aos__agent__list_request__free_unpacked(lr, NULL);
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.list: payload is not a ListRequest", NULL,
                    0);
        return;
    }
    char want[DEP_NAME_MAX + 1];
    snprintf(want, sizeof want, "%.*s", (int)lr->name.len, (const char *)lr->name.data);
    int with_manifest = lr->with_manifest;
    aos__agent__list_request__free_unpacked(lr, NULL);

    Aos__Agent__Info *inf = calloc(AG_MAX, sizeof *inf);
    Aos__Agent__Info **ip = calloc(AG_MAX, sizeof *ip);
    char (*states)[16] = calloc(AG_MAX, 16);
    if (!inf || !ip || !states) {
        free(inf);
        free(ip);
        free(states);
        kreply_send(k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        return;
    }
    uint64_t now = aos_mono_ms();
    size_t n = 0;
    pthread_mutex_lock(&A.mu);
    for (uint32_t i = 0; i < AG_MAX; i++) {
        agent *a = A.tab[i];
        if (!a || a->removed || (want[0] && strcmp(want, a->name)))
            continue;
        freeze_check(a); /* a suspend whose SIGSTOP had not landed: has it now? */
        Aos__Agent__Info *o = &inf[n];
        aos__agent__info__init(o);
        const char *w = waiting_on(a);
        snprintf(states[n], 16, "%s", a->st == AS_RUNNING && w[0] ? "waiting"
                                      : state_names[a->st]);
        o->name = bin(a->name);
        o->state = bin(states[n]);
        o->waiting_on = bin(w);
        o->pid = a->prog ? a->prog : a->pid;
        o->steps = a->steps;
        uint64_t tok = 0, cost = 0, wait = 0;
        llmq_agent_used(a->name, &tok, &cost, &wait);
        o->tokens = tok;
        o->cost_micro_usd = cost;
        o->sched_wait_us = wait;
        o->restarts = a->restarts;
        o->uptime_ms = a->pid ? now - a->started : 0;
        o->reason = bin(a->reason);
        o->wakes = a->wakes;
        o->wakes_skipped = a->skipped;
        o->program = bin(a->m->program);
        o->model = bin(a->m->model);
        o->refused = a->refused;
        o->next_wake_ms = a->next_wake_wall > 0 ? (uint64_t)a->next_wake_wall : 0;
        if (with_manifest)
            o->manifest_json = bin(a->mjson);
        ip[n] = o;
        n++;
    }
    Aos__Agent__ListReply r = AOS__AGENT__LIST_REPLY__INIT;
    r.agents = ip;
    r.n_agents = n;
    r.now_ms = aos_now_ms();
    size_t len = aos__agent__list_reply__get_packed_size(&r);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf)
        aos__agent__list_reply__pack(&r, buf);
    pthread_mutex_unlock(&A.mu);
    if (want[0] && !n)
        kreply_send(k, AOS_ERR_NOT_FOUND, "no such agent", NULL, 0);
    else if (!buf)
        kreply_send(k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
    else if (len > AOS_MSG_MAX - (64u << 10))
        kreply_send(k, AOS_ERR_TOO_BIG, "the list does not fit one reply", NULL, 0);
    else
        kreply_send(k, AOS_OK, NULL, buf, len);
    free(buf);
    free(inf);
    free(ip);
    free(states);
}

/* Every process of the sandbox (bubblewrap and what runs under it), /proc walked once, is
 * sent sig; *tree (may be NULL) gets the pids, valid until the next call. mu held. */
static size_t signal_walk(pid_t root, int sig, const pid_t **tree_out)
{
    enum { MAXP = 4096 };
    static pid_t pids[MAXP], ppids[MAXP], tree[MAXP];
    size_t n = 0;
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d)) && n < MAXP) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        pid_t pp = pv_ppid((pid_t)pid, NULL);
        if (pp > 0) {
            pids[n] = (pid_t)pid;
            ppids[n++] = pp;
        }
    }
    if (d)
        closedir(d);
    /* descendants, breadth first */
    size_t nt = 0;
    tree[nt++] = root;
    for (size_t h = 0; h < nt; h++)
        for (size_t i = 0; i < n && nt < MAXP; i++)
            if (ppids[i] == tree[h])
                tree[nt++] = pids[i];
    for (size_t i = 0; i < nt; i++)
        kill(tree[i], sig);
    if (tree_out)
        *tree_out = tree;
    return nt;
}

static void signal_tree(pid_t root, int sig)
{
    signal_walk(root, sig, NULL);
}

/* SIGSTOP to the sandbox again, and whether it has landed in every thread of it. The walk
 * is made anew each time: a process forked before its parent stopped is stopped too. */
static int stop_landed(agent *a)
{
    const pid_t *tree;
    size_t n = signal_walk(a->pid, SIGSTOP, &tree);
    for (size_t i = 0; i < n; i++)
        if (!pv_stopped(tree[i]))
            return 0;
    return 1;
}

static void step_answer(kreply *k, const char *action)
{
    Aos__Agent__StepReply r = AOS__AGENT__STEP_REPLY__INIT;
    uint8_t buf[32];
    r.action = bin(action);
    kreply_send(k, AOS_OK, NULL, buf, aos__agent__step_reply__pack(&r, buf));
}

/* The held step call answered: action, or CANCELLED when action is NULL. mu held. */
static void release_held(agent *a, const char *action)
{
    kreply *k = a->held;
    a->held = NULL;
    if (k && action)
        step_answer(k, action);
    else if (k)
        kreply_send(k, AOS_ERR_CANCELLED, "the agent's process ended", NULL, 0);
}

/* Frozen once its SIGSTOP is seen to have landed, and said so only then: a stop lands when
 * each thread is next scheduled, on a loaded machine long after kill() returned, and until
 * then the agent runs. Waits AG_FREEZE_WAIT_MS at most; if it is not there yet, the state
 * stays and the reason says so (agents_m_list looks again). mu held. */
static void freeze(agent *a)
{
    if (!a->pid || a->frozen)
        return;
    a->frozen = 1;
    uint64_t end = aos_mono_ms() + AG_FREEZE_WAIT_MS;
    int landed;
    while (!(landed = stop_landed(a)) && aos_mono_ms() < end)
        usleep(1000);
    if (!landed) {
        snprintf(a->reason, sizeof a->reason, "suspending: a process of its sandbox has not "
                 "taken its SIGSTOP yet");
        return;
    }
    a->frozen = 2;
    a->st = AS_SUSPENDED;
    snprintf(a->reason, sizeof a->reason, "suspended by the admin (frozen at a step "
             "boundary)");
}

/* A freeze that had not landed: looked at again (agents_m_list). mu held. */
static void freeze_check(agent *a)
{
    if (a->pid && a->frozen == 1 && stop_landed(a)) {
        a->frozen = 2;
        a->st = AS_SUSPENDED;
        snprintf(a->reason, sizeof a->reason, "suspended by the admin (frozen at a step "
                 "boundary)");
    }
}

/* SIGCONT to the sandbox, then the held step call answered with action: it goes on from
 * the boundary it was held at. mu held. */
static void thaw(agent *a, const char *action, const char *why)
{
    if (!a->frozen && !a->held)
        return;
    if (a->pid && a->frozen)
        signal_tree(a->pid, SIGCONT);
    if (a->pid) {
        a->st = AS_RUNNING;
        snprintf(a->reason, sizeof a->reason, "%s", why);
    }
    a->frozen = 0;
    release_held(a, action);
    mail_wake(a); /* mail that came while it was frozen */
}

static void stop_now(agent *a, const char *why)
{
    if (!a->pid)
        return;
    if (!a->stop_req) {
        a->stop_req = 1;
        a->stop_at = aos_mono_ms();
        snprintf(a->stop_why, sizeof a->stop_why, "%s", why);
    }
    /* a frozen process cannot hear the request; one held at its step hears it as the
     * answer */
    thaw(a, "stop", "resumed to stop");
    a->st = AS_STOPPING;
    if (a->waiter) {
        Aos__Agent__WaitReply w = AOS__AGENT__WAIT_REPLY__INIT;
        uint8_t buf[48];
        w.woken = 1; /* a stop is a wake: the agent's wait returns with it */
        w.why = bin("stop");
        w.mail_in = a->mail_in;
        size_t len = aos__agent__wait_reply__pack(&w, buf);
        kreply_send(a->waiter, AOS_OK, NULL, buf, len);
        a->waiter = NULL;
    }
}

void agents_m_ctl(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    Aos__Agent__CtlRequest *cr =
        aos__agent__ctl_request__unpack(NULL, req->payload_len, req->payload);
    char name[DEP_NAME_MAX + 1], act[16];
    if (!cr || cr->name.len > DEP_NAME_MAX || cr->action.len >= sizeof act ||
        !aos_utf8_valid(cr->name.data, cr->name.len) ||
        !aos_utf8_valid(cr->action.data, cr->action.len)) {
        if (cr)
            aos__agent__ctl_request__free_unpacked(cr, NULL);
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.ctl: payload is not a CtlRequest", NULL, 0);
        return;
    }
    snprintf(name, sizeof name, "%.*s", (int)cr->name.len, (const char *)cr->name.data);
    snprintf(act, sizeof act, "%.*s", (int)cr->action.len, (const char *)cr->action.data);
    aos__agent__ctl_request__free_unpacked(cr, NULL);
    aos_err rc = AOS_OK;
    char why[200] = "";
    char state[16] = "";
    pthread_mutex_lock(&A.mu);
    agent *a = find(name, NULL);
    uint64_t now = aos_mono_ms();
    if (!a) {
        rc = AOS_ERR_NOT_FOUND;
        snprintf(why, sizeof why, "no agent %s", name);
    } else if (!strcmp(act, "suspend")) {
        if (!a->pid && a->st != AS_PENDING && a->st != AS_BACKOFF) {
            rc = AOS_ERR_CONFLICT;
            snprintf(why, sizeof why, "%s is not running (%s)", name, state_names[a->st]);
        } else if (!a->pid) {
            a->suspend_req = 1; /* about to start: frozen at its first boundary */
        } else if (a->waiter) {
            freeze(a); /* idle between steps: a boundary already */
        } else if (a->frozen) {
            freeze_check(a);
        } else {
            a->suspend_req = 1; /* at its next step boundary */
        }
    } else if (!strcmp(act, "resume")) {
        a->suspend_req = 0;
        thaw(a, "suspend", "resumed");
    } else if (!strcmp(act, "stop")) {
        if (a->pid)
            stop_now(a, "stopped by the admin");
        else if (a->st == AS_BACKOFF || a->st == AS_PENDING) {
            a->st = AS_DONE;
            snprintf(a->reason, sizeof a->reason, "stopped by the admin");
            snprintf(a->stop_why, sizeof a->stop_why, "stopped by the admin");
            a->st_dirty = 1;
        }
    } else if (!strcmp(act, "kill")) {
        if (a->pid) {
            a->kill_req = 1;
            a->stop_req = 3;
            snprintf(a->stop_why, sizeof a->stop_why, "killed by the admin");
            kill(a->pid, SIGKILL); /* bubblewrap: its sandbox dies with it */
            a->st = AS_STOPPING;
        } else if (a->st == AS_BACKOFF || a->st == AS_PENDING) {
            a->st = AS_DONE;
            snprintf(a->reason, sizeof a->reason, "killed by the admin");
            snprintf(a->stop_why, sizeof a->stop_why, "killed by the admin");
            a->st_dirty = 1;
        }
    } else if (!strcmp(act, "restart")) {
        memset(&a->track, 0, sizeof a->track); /* an operator's restart starts afresh */
        if (a->pid) {
            a->restart_after = 1;
            stop_now(a, "restarted by the admin");
        } else {
            a->st = AS_PENDING;
            a->next_start = now;
            a->stop_why[0] = 0;
            a->st_dirty = 1;
            snprintf(a->reason, sizeof a->reason, "restart requested");
        }
    } else {
        rc = AOS_ERR_USAGE;
        snprintf(why, sizeof why, "action is suspend, resume, stop, kill or restart, not %s",
                 act);
    }
    if (a && rc == AOS_OK)
        snprintf(state, sizeof state, "%s", state_names[a->st]);
    pthread_mutex_unlock(&A.mu);
    if (rc != AOS_OK) {
        kreply_send(k, rc, why, NULL, 0);
        return;
    }
    Aos__Agent__CtlReply r = AOS__AGENT__CTL_REPLY__INIT;
    uint8_t buf[64];
    r.state = bin(state);
    kreply_send(k, AOS_OK, NULL, buf, aos__agent__ctl_reply__pack(&r, buf));
}

void agents_m_logs(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    Aos__Agent__LogsRequest *lr =
        aos__agent__logs_request__unpack(NULL, req->payload_len, req->payload);
    char name[DEP_NAME_MAX + 1];
    if (!lr || lr->name.len > DEP_NAME_MAX || !aos_utf8_valid(lr->name.data, lr->name.len)) {
        if (lr)
            aos__agent__logs_request__free_unpacked(lr, NULL);
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.logs: payload is not a LogsRequest", NULL,
                    0);
        return;
    }
    snprintf(name, sizeof name, "%.*s", (int)lr->name.len, (const char *)lr->name.data);
    size_t max = lr->max_bytes ? lr->max_bytes : 64u << 10;
    if (max > 1u << 20)
        max = 1u << 20;
    aos__agent__logs_request__free_unpacked(lr, NULL);
    pthread_mutex_lock(&A.mu);
    int exists = find(name, NULL) != NULL;
    pthread_mutex_unlock(&A.mu);
    if (!exists) {
        kreply_send(k, AOS_ERR_NOT_FOUND, "no such agent", NULL, 0);
        return;
    }
    int fd = openat(A.logdir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    uint8_t *buf = NULL;
    ssize_t got = 0;
    off_t from = 0;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        from = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
        buf = malloc(max + 1);
        if (buf)
            got = pread(fd, buf, max, from);
    }
    if (fd >= 0)
        close(fd);
    Aos__Agent__LogsReply r = AOS__AGENT__LOGS_REPLY__INIT;
    r.text = (ProtobufCBinaryData){got > 0 ? (size_t)got : 0, buf};
    r.truncated = from > 0;
    size_t len = aos__agent__logs_reply__get_packed_size(&r);
    uint8_t *out = malloc(len ? len : 1);
    if (out)
        aos__agent__logs_reply__pack(&r, out);
    kreply_send(k, out ? AOS_OK : AOS_ERR_NOMEM, out ? NULL : "aosd is out of memory", out,
                len);
    free(out);
    free(buf);
}

/* ---- an agent's own calls ------------------------------------------------------------------ */

void agents_m_self(const aos_env *req, const char *caller, kreply *k)
{
    (void)req;
    pthread_mutex_lock(&A.mu);
    agent *a = find(caller, NULL);
    if (!a) {
        pthread_mutex_unlock(&A.mu);
        kreply_send(k, AOS_ERR_NOT_FOUND, "this agent is no longer applied", NULL, 0);
        return;
    }
    Aos__Agent__SelfReply r = AOS__AGENT__SELF_REPLY__INIT;
    r.name = bin(a->name);
    r.manifest_json = bin(a->mjson);
    r.incarnation = a->incarnation;
    size_t len = aos__agent__self_reply__get_packed_size(&r);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf)
        aos__agent__self_reply__pack(&r, buf);
    pthread_mutex_unlock(&A.mu);
    kreply_send(k, buf ? AOS_OK : AOS_ERR_NOMEM, buf ? NULL : "aosd is out of memory", buf,
                len);
    free(buf);
}

void agents_m_step(const aos_env *req, const char *caller, kreply *k)
{
    Aos__Agent__StepRequest *sr =
        aos__agent__step_request__unpack(NULL, req->payload_len, req->payload);
    if (!sr) {
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.step: payload is not a StepRequest", NULL,
                    0);
        return;
    }
    char run[AGST_RUN_MAX] = "";
    if (!agst_run_ok((const char *)sr->run.data, sr->run.len)) {
        aos__agent__step_request__free_unpacked(sr, NULL);
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.step: its run is not a run id (at most "
                    "64 of A-Z a-z 0-9 . _ : -)", NULL, 0);
        return;
    }
    if (sr->run.len) /* an empty bytes field's data is NULL */
        memcpy(run, sr->run.data, sr->run.len);
    run[sr->run.len] = 0;
    aos__agent__step_request__free_unpacked(sr, NULL);
    const char *action = "continue";
    char why[AGST_RUN_MAX + 200] = "";
    pthread_mutex_lock(&A.mu);
    agent *a = find(caller, NULL);
    /* the same call again (its reply came after its deadline: the agent was frozen in it)
     * is not another step: it is answered as things are now, and counted once */
    int again = a && req->has_request_id && a->last_step_set &&
                !memcmp(a->last_step_id, req->request_id, AOS_ID_LEN);
    if (!a) {
        action = "stop";
    } else if (again) {
        if (a->last_step_refused)
            snprintf(why, sizeof why, "agent %s: run %s has taken its %" PRIu64 " steps "
                     "(budgets.steps); a new run starts at 0", a->name, a->run[0] ? a->run
                     : "(none)", a->m->budget_steps);
    } else {
        /* budgets.steps is per run: another run starts at 0; the same one (resumed after a
         * restart) goes on from its count, which the state record keeps across aosd's */
        if (strcmp(run, a->run)) {
            snprintf(a->run, sizeof a->run, "%s", run);
            a->run_steps = 0;
        }
        if (a->m->budget_steps && a->run_steps >= a->m->budget_steps) {
            refuse(a, why, sizeof why, "agent %s: run %s has taken its %" PRIu64 " steps "
                   "(budgets.steps); a new run starts at 0", a->name, run[0] ? run : "(none)",
                   a->m->budget_steps);
        } else {
            a->steps++;
            a->run_steps++;
            a->st_dirty = 1;
        }
        a->last_step_set = req->has_request_id;
        memcpy(a->last_step_id, req->request_id, AOS_ID_LEN);
        a->last_step_refused = why[0] != 0;
    }
    if (why[0]) {
        pthread_mutex_unlock(&A.mu);
        kreply_send(k, AOS_ERR_REFUSED, why, NULL, 0);
        return;
    }
    if (a && !a->stop_req && a->suspend_req && a->pid) {
        /* suspended at this boundary: the call is held, and answered "suspend" at resume
         * ("stop" at a stop); the sandbox is frozen meanwhile. The agent is parked in this
         * call, so it cannot pass the boundary, however late its SIGSTOP lands */
        a->suspend_req = 0;
        kreply *old = a->held;
        a->held = k;
        freeze(a);
        pthread_mutex_unlock(&A.mu);
        if (old)
            kreply_send(old, AOS_ERR_CONFLICT, "a newer kernel.agent.step replaced this one",
                        NULL, 0);
        return;
    }
    if (a && a->stop_req)
        action = "stop";
    pthread_mutex_unlock(&A.mu);
    step_answer(k, action);
}

void agents_m_wait(const aos_env *req, const char *caller, kreply *k)
{
    Aos__Agent__WaitRequest *wr =
        aos__agent__wait_request__unpack(NULL, req->payload_len, req->payload);
    if (!wr) {
        kreply_send(k, AOS_ERR_PROTO, "kernel.agent.wait: payload is not a WaitRequest", NULL,
                    0);
        return;
    }
    int mail = wr->mail;
    uint64_t seen = wr->mail_seen;
    aos__agent__wait_request__free_unpacked(wr, NULL);
    pthread_mutex_lock(&A.mu);
    agent *a = find(caller, NULL);
    if (!a || a->stop_req || (mail && a->mail_in != seen)) {
        /* a receive whose count is behind: mail came since it last looked (maybe while
         * no wait was there to wake), so it looks again at once */
        const char *why = !a || a->stop_req ? "stop" : "message";
        Aos__Agent__WaitReply w = AOS__AGENT__WAIT_REPLY__INIT;
        w.woken = 1; /* mail, or a stop: either ends the wait */
        w.why = bin(why);
        w.mail_in = a ? a->mail_in : 0;
        pthread_mutex_unlock(&A.mu);
        uint8_t buf[48];
        kreply_send(k, AOS_OK, NULL, buf, aos__agent__wait_reply__pack(&w, buf));
        return;
    }
    kreply *old = a->waiter;
    a->waiter = k;
    a->waiter_mail = mail;
    a->waiter_seen = seen;
    if (a->suspend_req) { /* idle is a boundary */
        a->suspend_req = 0;
        freeze(a);
    }
    pthread_mutex_unlock(&A.mu);
    if (old)
        kreply_send(old, AOS_ERR_CONFLICT, "a newer kernel.agent.wait replaced this one", NULL,
                    0);
}

/* ---- identity -------------------------------------------------------------------------------- */

static pid_t ppid_of(pid_t pid) { return pv_ppid(pid, NULL); }

/* The slot of the agent whose sandbox pid is in (pid itself or an ancestor within a few
 * generations: bubblewrap, its init, the program, what the program forks). mu held. */
static int owner_of(pid_t pid)
{
    pid_t self = getpid();
    for (int depth = 0; depth < 12 && pid > 1 && pid != self; depth++) {
        for (uint32_t i = 0; i < AG_MAX; i++)
            if (A.tab[i] && A.tab[i]->pid == pid)
                return (int)i;
        pid = ppid_of(pid);
    }
    return -1;
}

int agents_pid_is_agent(pid_t pid)
{
    pthread_mutex_lock(&A.mu);
    int r = owner_of(pid) >= 0;
    pthread_mutex_unlock(&A.mu);
    return r;
}

static pslot *pipe_slot(uint32_t pipe, int make)
{
    for (uint32_t i = 0; i < AG_PIPES; i++) {
        pslot *s = &A.pipes[(pipe * 2654435761u + i) & (AG_PIPES - 1)];
        if (s->pipe == pipe || (make && s->pipe == 0))
            return s;
        if (!make && s->pipe == 0)
            return NULL;
    }
    return NULL;
}

int agents_admit(uint32_t pipe, pid_t pid, char *why, size_t whylen)
{
    pthread_mutex_lock(&A.mu);
    int idx = owner_of(pid);
    pslot *s = idx >= 0 ? pipe_slot(pipe, 1) : NULL;
    if (s) {
        s->pipe = pipe;
        s->idx = (uint32_t)idx;
        s->gen = A.tab[idx]->gen;
        if (!A.tab[idx]->prog)
            A.tab[idx]->prog = pid;
    }
    pthread_mutex_unlock(&A.mu);
    if (idx < 0)
        snprintf(why, whylen, "refused pid %d: not a process aosd started as an agent",
                 (int)pid);
    else if (!s)
        snprintf(why, whylen, "refused pid %d: too many agent connections", (int)pid);
    return s ? 0 : -1;
}

/* Deleting from linear probing: the entries after it are put in again. mu held. */
static void pipe_del(pslot *s)
{
    s->pipe = 0;
    uint32_t i = (uint32_t)(s - A.pipes);
    for (uint32_t j = (i + 1) & (AG_PIPES - 1); A.pipes[j].pipe; j = (j + 1) & (AG_PIPES - 1)) {
        pslot e = A.pipes[j];
        A.pipes[j].pipe = 0;
        *pipe_slot(e.pipe, 1) = e;
    }
}

void agents_pipe_gone(uint32_t pipe)
{
    pthread_mutex_lock(&A.mu);
    pslot *s = pipe_slot(pipe, 0);
    if (s)
        pipe_del(s);
    pthread_mutex_unlock(&A.mu);
}

int agents_of_pipe(uint32_t pipe, char *name, size_t cap)
{
    pthread_mutex_lock(&A.mu);
    pslot *s = pipe_slot(pipe, 0);
    agent *a = s ? A.tab[s->idx] : NULL;
    int ok = a && a->gen == s->gen && !a->removed;
    if (ok)
        snprintf(name, cap, "%s", a->name);
    pthread_mutex_unlock(&A.mu);
    return ok;
}

/* ---- rights ----------------------------------------------------------------------------------- */

static int has(char *const *v, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) == len && !memcmp(v[i], s, len))
            return 1;
    return 0;
}

/* mcp.SERVER.TOOL in tool.run is SERVER/TOOL in a manifest. */
static int mcp_granted(const dep_agent *m, const uint8_t *t, size_t len)
{
    if (len < 5 || memcmp(t, "mcp.", 4))
        return 0;
    const uint8_t *dot = memchr(t + 4, '.', len - 4);
    if (!dot)
        return 0;
    char want[200];
    int n = snprintf(want, sizeof want, "%.*s/%.*s", (int)(dot - t - 4), (const char *)t + 4,
                     (int)(len - (size_t)(dot + 1 - t)), (const char *)dot + 1);
    return n > 0 && (size_t)n < sizeof want && has(m->mcp_tools, m->nmcp_tools, want, (size_t)n);
}

static aos_err refuse(agent *a, char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err refuse(agent *a, char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    a->refused++;
    return AOS_ERR_REFUSED;
}

static aos_err check_tool(agent *a, const aos_env *req, uint8_t **out, size_t *olen, char *why,
                          size_t whylen)
{
    Aos__Tool__RunRequest *r = aos__tool__run_request__unpack(NULL, req->payload_len,
                                                              req->payload);
    if (!r)
        return AOS_OK; /* not a request: aos-tool answers why */
    aos_err rc = AOS_OK;
    const dep_agent *m = a->m;
    if (!has(m->tools, m->ntools, (const char *)r->tool.data, r->tool.len) &&
        !mcp_granted(m, r->tool.data, r->tool.len)) {
        rc = refuse(a, why, whylen, "agent %s may not use the tool %.*s (its manifest grants "
                    "%zu tools and %zu MCP tools)", a->name, (int)(r->tool.len > 64 ? 64 :
                    r->tool.len), (const char *)r->tool.data, m->ntools, m->nmcp_tools);
        goto out;
    }
    if (r->test_plain) {
        rc = refuse(a, why, whylen, "an agent's tool runs are always sandboxed");
        goto out;
    }
    /* asking for a network its manifest does not grant is refused, not quietly narrowed:
     * the agent learns why its run would fail, and the refusal is audited */
    if (r->grant && r->grant->network && !m->network) {
        rc = refuse(a, why, whylen, "agent %s may not give its tool runs a network (its "
                    "manifest has network: no)", a->name);
        goto out;
    }
    /* whose workspace and which grant: the kernel's word, never the agent's */
    Aos__Tool__Grant g = AOS__TOOL__GRANT__INIT, *their_grant = r->grant;
    ProtobufCBinaryData their_agent = r->agent;
    g.network = m->network;
    r->grant = &g;
    r->agent = bin(a->name);
    *olen = aos__tool__run_request__get_packed_size(r);
    *out = malloc(*olen ? *olen : 1);
    if (*out)
        aos__tool__run_request__pack(r, *out);
    else
        rc = AOS_ERR_NOMEM;
    /* the unpacked message's own fields back, for its free (the agent's name and grant,
     * which an agent program may well have filled in, were leaked here) */
    r->grant = their_grant;
    r->agent = their_agent;
out:
    aos__tool__run_request__free_unpacked(r, NULL);
    return rc;
}

static aos_err check_model(agent *a, const ProtobufCBinaryData *model, char *why,
                           size_t whylen)
{
    const char *mm = a->m->model ? a->m->model : "";
    if (!mm[0])
        return refuse(a, why, whylen, "agent %s has no model in its manifest", a->name);
    if (model->len && !(model->len == strlen(mm) && !memcmp(model->data, mm, model->len)))
        return refuse(a, why, whylen, "agent %s may use the model %s, not %.*s", a->name, mm,
                      (int)(model->len > 128 ? 128 : model->len), (const char *)model->data);
    return AOS_OK;
}

aos_err agents_check(const char *agent_name, const kmethod *km, const aos_env *req,
                     uint8_t **payload, size_t *len, char *why, size_t whylen)
{
    *payload = NULL;
    *len = 0;
    aos_err rc = AOS_OK;
    pthread_mutex_lock(&A.mu);
    agent *a = find(agent_name, NULL);
    if (!a) {
        pthread_mutex_unlock(&A.mu);
        snprintf(why, whylen, "agent %s is no longer applied", agent_name);
        return AOS_ERR_REFUSED;
    }
    if (a->pid && a->m->budget_wall_s &&
        aos_mono_ms() - a->started > a->m->budget_wall_s * 1000) {
        rc = refuse(a, why, whylen, "agent %s: its wall-time budget is used up", a->name);
    } else if (!strcmp(req->method, "tool.run")) {
        rc = check_tool(a, req, payload, len, why, whylen);
    } else if (!strcmp(req->method, "llm.chat")) {
        Aos__Llm__ChatRequest *c =
            aos__llm__chat_request__unpack(NULL, req->payload_len, req->payload);
        if (c) {
            rc = check_model(a, &c->model, why, whylen);
            if (rc == AOS_OK && !c->model.len) { /* its own model, not the default */
                c->model = bin(a->m->model);
                *len = aos__llm__chat_request__get_packed_size(c);
                *payload = malloc(*len ? *len : 1);
                if (*payload)
                    aos__llm__chat_request__pack(c, *payload);
                else
                    rc = AOS_ERR_NOMEM;
                c->model = (ProtobufCBinaryData){0, NULL};
            }
            aos__llm__chat_request__free_unpacked(c, NULL);
        }
    } else if (!strcmp(req->method, "memory.budget.set") && a->m->budget_context_tokens) {
        rc = refuse(a, why, whylen, "agent %s: its context budget is its manifest's "
                    "budgets.context_tokens (%" PRIu64 "), which aosd sets; an agent does not",
                    a->name, a->m->budget_context_tokens);
    } else if (!strcmp(req->method, "memory.assemble") && a->m->budget_context_tokens) {
        /* a call's own budget may be smaller than the manifest's, never larger */
        Aos__Memory__AssembleRequest *q =
            aos__memory__assemble_request__unpack(NULL, req->payload_len, req->payload);
        if (q && q->budget > 0 && (uint64_t)q->budget > a->m->budget_context_tokens)
            rc = refuse(a, why, whylen, "agent %s: a prompt of %" PRId64 " tokens is over its "
                        "manifest's budgets.context_tokens (%" PRIu64 ")", a->name, q->budget,
                        a->m->budget_context_tokens);
        if (q)
            aos__memory__assemble_request__free_unpacked(q, NULL);
    } else if (!strcmp(req->method, "storage.queue.send")) {
        /* mail to another agent goes through msg.send, where talks_to is checked */
        Aos__Storage__QueueSendRequest *q =
            aos__storage__queue_send_request__unpack(NULL, req->payload_len, req->payload);
        if (q && q->to_agent.len && !(q->to_agent.len == strlen(a->name) &&
                                      !memcmp(q->to_agent.data, a->name, q->to_agent.len)))
            rc = refuse(a, why, whylen, "agent %s may not put mail into another agent's "
                        "inbox with storage.queue.send: msg.send does, to the agents its "
                        "manifest's talks_to names", a->name);
        if (q)
            aos__storage__queue_send_request__free_unpacked(q, NULL);
    } else if (!strcmp(req->method, "memory.search")) {
        Aos__Memory__SearchRequest *s =
            aos__memory__search_request__unpack(NULL, req->payload_len, req->payload);
        if (s && s->owner.len && !(s->owner.len == strlen(a->name) &&
                                   !memcmp(s->owner.data, a->name, s->owner.len)) &&
            !has(a->m->collections, a->m->ncollections, (const char *)s->collection.data,
                 s->collection.len))
            rc = refuse(a, why, whylen, "agent %s may not read another agent's collection "
                        "%.*s: not among its manifest's collections", a->name,
                        (int)(s->collection.len > 64 ? 64 : s->collection.len),
                        (const char *)s->collection.data);
        if (s)
            aos__memory__search_request__free_unpacked(s, NULL);
    }
    (void)km;
    pthread_mutex_unlock(&A.mu);
    return rc;
}

void agents_call(const char *agent_name, km_class cls, int begin)
{
    pthread_mutex_lock(&A.mu);
    agent *a = find(agent_name, NULL);
    if (a && (unsigned)cls < 5) {
        if (begin)
            a->calls[cls]++;
        else if (a->calls[cls])
            a->calls[cls]--;
    }
    pthread_mutex_unlock(&A.mu);
}

void agents_refused(const char *agent_name)
{
    pthread_mutex_lock(&A.mu);
    agent *a = find(agent_name, NULL);
    if (a)
        a->refused++;
    pthread_mutex_unlock(&A.mu);
}

/* ---- supervision ---------------------------------------------------------------------------- */

static void wake(agent *a, uint64_t now)
{
    if (a->waiter && !a->frozen && !a->waiter_mail) {
        Aos__Agent__WaitReply w = AOS__AGENT__WAIT_REPLY__INIT;
        uint8_t buf[32];
        w.woken = 1;
        w.why = bin("timer");
        kreply_send(a->waiter, AOS_OK, NULL, buf, aos__agent__wait_reply__pack(&w, buf));
        a->waiter = NULL;
        a->wakes++;
    } else if (!a->pid && a->st == AS_DONE && !a->stop_why[0]) {
        a->st = AS_PENDING; /* a finished agent is started again by its wake */
        a->next_start = now;
        a->wakes++;
        a->st_dirty = 1;
    } else if (!a->pid) {
        /* failed, stopped by the admin, waiting for its restart: no wake is due to it */
    } else {
        a->skipped++; /* busy (or frozen): skipped, never stacked */
    }
    plan_wake(a, now);
}

uint64_t agents_tick(uint64_t now)
{
    uint64_t next = now + 1000;
    /* what this tick sends once mu is let go (a failed send calls back at once) */
    static kname budgets[AG_SENDS], states[AG_SENDS];
    static char *sjson[AG_SENDS];
    size_t nb = 0, ns = 0;
    pthread_mutex_lock(&A.mu);
    if (!A.loaded && !A.loading && A.load_retry && now >= A.load_retry) {
        A.load_retry = 0;
        pthread_mutex_unlock(&A.mu);
        agents_load();
        pthread_mutex_lock(&A.mu);
    }
    if (A.loaded && !A.state_loaded && !A.state_loading && A.state_retry &&
        now >= A.state_retry) {
        A.state_retry = 0;
        pthread_mutex_unlock(&A.mu);
        state_load(NULL, 0);
        pthread_mutex_lock(&A.mu);
    }
    for (uint32_t i = 0; A.loaded && i < AG_MAX; i++) {
        agent *a = A.tab[i];
        if (!a)
            continue;
        int due = !A.shutting && !a->removed && !a->pid &&
                  (a->st == AS_PENDING || a->st == AS_BACKOFF) && now >= a->next_start;
        uint64_t ctx = a->m->budget_context_tokens;
        /* aosd, not the agent, gives aos-memory its context budget: before it starts, and
         * again when the manifest changes it */
        if (ctx && !a->budget_ok && !a->budget_busy && !a->removed && (due || a->pid) &&
            now >= a->budget_retry && nb < AG_SENDS) {
            a->budget_busy = 1;
            snprintf(budgets[nb].name, sizeof budgets[nb].name, "%s", a->name);
            budgets[nb++].n = ctx;
        }
        if (a->st_dirty && !a->st_busy && !a->removed && now >= a->st_retry && ns < AG_SENDS &&
            (sjson[ns] = state_json(a))) {
            a->st_dirty = 0;
            a->st_busy = 1;
            snprintf(states[ns].name, sizeof states[ns].name, "%s", a->name);
            ns++;
        }
        if (due && A.state_loaded && (!ctx || a->budget_ok))
            spawn_agent(a, now);
        if (a->pid && a->m->budget_wall_s && !a->stop_req &&
            now - a->started > a->m->budget_wall_s * 1000)
            stop_now(a, "its wall-time budget is used up");
        /* stop: the request, then SIGTERM to the program, then SIGKILL to the sandbox */
        if (a->pid && a->stop_req == 1 && now - a->stop_at >= a->m->stop_timeout_ms) {
            a->stop_req = 2;
            a->stop_at = now;
            if (a->prog)
                kill(a->prog, SIGTERM);
            else
                signal_tree(a->pid, SIGTERM);
        } else if (a->pid && a->stop_req == 2 && now - a->stop_at >= a->m->stop_timeout_ms) {
            a->stop_req = 3;
            a->stop_at = now;
            kill(a->pid, SIGKILL); /* bubblewrap: its sandbox dies with it */
        }
        if (a->waiter && now >= kreply_deadline(a->waiter)) {
            Aos__Agent__WaitReply w = AOS__AGENT__WAIT_REPLY__INIT;
            uint8_t buf[48];
            w.mail_in = a->mail_in;
            kreply_send(a->waiter, AOS_OK, NULL, buf, aos__agent__wait_reply__pack(&w, buf));
            a->waiter = NULL;
        }
        if (a->next_wake && now >= a->next_wake && !a->removed)
            wake(a, now);
        if (a->next_wake && a->next_wake < next)
            next = a->next_wake;
        if (a->st == AS_BACKOFF && a->next_start < next)
            next = a->next_start;
    }
    pthread_mutex_unlock(&A.mu);
    for (size_t i = 0; i < nb; i++) {
        kname *x = malloc(sizeof *x);
        Aos__Memory__BudgetRequest b = AOS__MEMORY__BUDGET_REQUEST__INIT;
        b.budget = (int64_t)budgets[i].n; /* dep_parse kept it in aos-memory's range */
        if (x) {
            *x = budgets[i];
            kc_call_as("memory", "memory.budget.set", x->name, NULL, AG_STORAGE_MS, &b.base,
                       budget_cb, x);
        } else {
            pthread_mutex_lock(&A.mu);
            agent *a = find(budgets[i].name, NULL);
            if (a)
                a->budget_busy = 0;
            pthread_mutex_unlock(&A.mu);
        }
    }
    for (size_t i = 0; i < ns; i++) {
        kname *x = malloc(sizeof *x);
        char key[DEP_NAME_MAX + 16];
        snprintf(key, sizeof key, AG_KV_STATE "%.*s", (int)DEP_NAME_MAX, states[i].name);
        Aos__Storage__KvPutRequest put = AOS__STORAGE__KV_PUT_REQUEST__INIT;
        put.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
        put.value = (ProtobufCBinaryData){strlen(sjson[i]), (uint8_t *)sjson[i]};
        if (x) {
            *x = states[i];
            kc_storage("storage.kv.put", &put.base, state_put_cb, x);
        } else {
            pthread_mutex_lock(&A.mu);
            agent *a = find(states[i].name, NULL);
            if (a) {
                a->st_busy = 0;
                a->st_dirty = 1;
            }
            pthread_mutex_unlock(&A.mu);
        }
        free(sjson[i]);
        sjson[i] = NULL;
    }
    return next;
}

static void describe(int st, char *out, size_t cap)
{
    if (WIFEXITED(st))
        snprintf(out, cap, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, cap, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(out, cap, "status 0x%x", st);
}

int agents_reaped(pid_t pid, int st)
{
    pthread_mutex_lock(&A.mu);
    uint32_t i = 0;
    for (; i < AG_MAX; i++)
        if (A.tab[i] && A.tab[i]->pid == pid)
            break;
    if (i == AG_MAX) {
        pthread_mutex_unlock(&A.mu);
        return 0;
    }
    agent *a = A.tab[i];
    uint64_t now = aos_mono_ms();
    /* the rest of its sandbox died with bubblewrap (its pid namespace's init follows it by
     * --die-with-parent, and every process of the namespace with that init) */
    kill(-pid, SIGKILL);
    a->pid = 0;
    a->prog = 0;
    a->frozen = 0;
    release_held(a, NULL);
    a->gen = ++A.gens[i]; /* its pipes are no one's now */
    memset(a->calls, 0, sizeof a->calls);
    if (a->waiter) {
        kreply_send(a->waiter, AOS_ERR_CANCELLED, "the agent's process ended", NULL, 0);
        a->waiter = NULL;
    }
    char how[80];
    describe(st, how, sizeof how);
    int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    uint64_t ran = now - a->started;
    if (a->removed) {
        aos_info("agent %s removed (%s)", a->name, how);
        slot_drop(i);
    } else if (A.shutting) {
        a->st = AS_PENDING;
        snprintf(a->reason, sizeof a->reason, "aosd stopped (%s)", how);
    } else if (a->restart_after) {
        a->restart_after = 0;
        a->restarts++;
        a->st = AS_PENDING;
        a->next_start = now;
        a->stop_why[0] = 0;
        snprintf(a->reason, sizeof a->reason, "restarting (it ended: %s)", how);
    } else if (a->stop_req) {
        a->st = AS_DONE;
        snprintf(a->reason, sizeof a->reason, "%s (%s)", a->stop_why, how);
    } else if (a->m->restart == DEP_RESTART_NEVER ||
               (clean && a->m->restart == DEP_RESTART_ON_FAILURE)) {
        a->st = clean ? AS_DONE : AS_FAILED;
        snprintf(a->reason, sizeof a->reason, "%s after %" PRIu64 " ms%s", how, ran,
                 clean ? "" : " (restart: never)");
    } else {
        sup_policy pol = {.permanent = a->m->restart == DEP_RESTART_ALWAYS,
                          .intensity = a->m->intensity,
                          .period_ms = a->m->period_ms,
                          .loop_ms = SUP_LOOP_MS,
                          .stable_ms = a->m->backoff_max_ms > 10000 ? a->m->backoff_max_ms
                                                                    : 10000,
                          .backoff_min_ms = a->m->backoff_min_ms,
                          .backoff_max_ms = a->m->backoff_max_ms};
        /* an agent has no READY: its run counts from the start */
        sup_exit x = {.clean = clean, .own = 1, .ran_ms = ran ? ran : 1};
        uint64_t delay = 0;
        char r[200];
        sup_action act = sup_decide(&a->track, &pol, &x, now, &delay, r, sizeof r);
        if (act == SUP_ACT_RESTART) {
            a->st = AS_BACKOFF;
            a->next_start = now + delay;
            a->restarts++;
            snprintf(a->reason, sizeof a->reason, "%s; restart in %" PRIu64 " ms (%.120s)", how,
                     delay, r);
        } else {
            a->st = act == SUP_ACT_FAIL ? AS_FAILED : AS_DONE;
            snprintf(a->reason, sizeof a->reason, "%s: %.160s", how, r);
        }
    }
    if (A.tab[i]) {
        aos_info("agent %s: %s", a->name, a->reason);
        if (!A.shutting && (a->st == AS_DONE || a->st == AS_FAILED))
            a->st_dirty = 1; /* a restarted aosd must not run it again */
    }
    pthread_mutex_unlock(&A.mu);
    return 1;
}

int agents_own_pid(pid_t pid)
{
    pthread_mutex_lock(&A.mu);
    int r = 0;
    for (uint32_t i = 0; i < A.hi && !r; i++)
        r = A.tab[i] && A.tab[i]->pid == pid;
    pthread_mutex_unlock(&A.mu);
    return r;
}

void agents_shutdown(void)
{
    pthread_mutex_lock(&A.mu);
    A.shutting = 1;
    for (uint32_t i = 0; i < AG_MAX; i++)
        if (A.tab[i] && A.tab[i]->pid)
            stop_now(A.tab[i], "aosd is stopping");
    pthread_mutex_unlock(&A.mu);
}

unsigned agents_running(void)
{
    unsigned n = 0;
    pthread_mutex_lock(&A.mu);
    for (uint32_t i = 0; i < AG_MAX; i++)
        n += A.tab[i] && A.tab[i]->pid;
    pthread_mutex_unlock(&A.mu);
    return n;
}

void agents_kill_all(void)
{
    pthread_mutex_lock(&A.mu);
    for (uint32_t i = 0; i < AG_MAX; i++)
        if (A.tab[i] && A.tab[i]->pid) {
            A.tab[i]->stop_req = 3;
            kill(A.tab[i]->pid, SIGKILL); /* bubblewrap: its sandbox dies with it */
        }
    pthread_mutex_unlock(&A.mu);
}

int agents_stopped(void)
{
    pthread_mutex_lock(&A.mu);
    int any = 0;
    for (uint32_t i = 0; i < AG_MAX && !any; i++)
        any = A.tab[i] && A.tab[i]->pid;
    pthread_mutex_unlock(&A.mu);
    return !any;
}

/* ---- start ------------------------------------------------------------------------------------- */

/* Before one workspace, an agent's own was DATA/agents/<name>, not its tool runs'
 * (DATA/workspaces/<name>). Each such one is moved to DATA/workspaces when there is none
 * there yet (then shared: owner aos-tool, group and mode as spawn_agent gives them, every
 * file in it readable and writable by the group as by its owner); where both exist the old
 * one stays where it is, said in the log, for the operator to merge. DATA/agents goes when
 * it is empty. Agents are not running yet: nothing writes in these trees meanwhile. */
static void migrate_workspaces(int data)
{
    int old = openat(data, "agents", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (old < 0)
        return;
    int dfd = dup(old);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dir) {
        if (dfd >= 0)
            close(dfd);
        close(old);
        return;
    }
    struct dirent *de;
    while ((de = readdir(dir))) {
        struct stat st;
        char why[300];
        if (de->d_name[0] == '.' || fstatat(old, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        if (fstatat(A.wsdir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            aos_warn("agent %s: DATA/agents/%s (its workspace before aos shared it with its "
                     "tool runs) is kept as it is: DATA/workspaces/%s exists, merge them by "
                     "hand", de->d_name, de->d_name, de->d_name);
            continue;
        }
        if (renameat(old, de->d_name, A.wsdir, de->d_name) != 0) {
            aos_warn("agent %s: moving DATA/agents/%s to DATA/workspaces: %s", de->d_name,
                     de->d_name, strerror(errno));
            continue;
        }
        int w = openat(A.wsdir, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (w < 0 || fchown(w, A.wsuid, A.gid) != 0 || fchmod(w, 02770) != 0)
            snprintf(why, sizeof why, "%s", strerror(errno));
        else if (fs_share_tree(w, A.gid, why, sizeof why) == AOS_OK)
            why[0] = 0;
        if (why[0])
            aos_warn("agent %s: sharing its moved workspace: %s", de->d_name, why);
        else
            aos_info("agent %s: its workspace DATA/agents/%s is now DATA/workspaces/%s, "
                     "shared with its tool runs", de->d_name, de->d_name, de->d_name);
        if (w >= 0)
            close(w);
    }
    closedir(dir);
    close(old);
    unlinkat(data, "agents", AT_REMOVEDIR); /* only when empty: what stays is said above */
}

/* A workspace aos-tool made before it was shared (its group, files of umask 022) is
 * shared once: the agents' group, 02770, the group's permissions as the owners'. */
static void share_workspaces(void)
{
    int dfd = dup(A.wsdir);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dir) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(dir))) {
        struct stat st;
        char why[300];
        if (de->d_name[0] == '.')
            continue;
        int w = openat(A.wsdir, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (w < 0)
            continue;
        if (fstat(w, &st) == 0 && st.st_uid == A.wsuid && st.st_gid != A.gid) {
            if (fchown(w, A.wsuid, A.gid) != 0 || fchmod(w, 02770) != 0)
                snprintf(why, sizeof why, "%s", strerror(errno));
            else if (fs_share_tree(w, A.gid, why, sizeof why) == AOS_OK)
                why[0] = 0;
            if (why[0])
                aos_warn("agent %s: sharing its workspace with it: %s", de->d_name, why);
        }
        close(w);
    }
    closedir(dir);
}

aos_err agents_init(const kcfg *c, const datadir *d, char *url, size_t urlcap, char *why,
                    size_t whylen)
{
    A.cfg = c;
    A.uid = geteuid();
    A.gid = getegid();
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("aos-agent");
        if (!pw || pw->pw_uid == 0 || pw->pw_gid == 0) {
            snprintf(why, whylen, "aosd as root runs agents as the user aos-agent, which %s "
                     "(tools/deps.sh creates it: useradd --system --user-group aos-agent)",
                     pw ? "is root" : "does not exist");
            return AOS_ERR_NOT_FOUND;
        }
        A.uid = pw->pw_uid;
        A.gid = pw->pw_gid;
    }
    /* workspaces: DATA/workspaces/<name>, shared with the tool runs (aos-tool keeps the
     * directory: the same owner, group and mode as supervise gives it, 0710 with the
     * agents' group, which bubblewrap passes through to bind an agent's own); the logs
     * are aosd's */
    gid_t wsgid;
    A.wsuid = sup_ws_uid(&wsgid);
    if ((A.wsdir = fs_dir(d->dir, "workspaces", 0710, A.wsuid, wsgid, why, whylen)) < 0 ||
        (A.logdir = fs_dir(d->dir, "agent-logs", 0700, geteuid(), getegid(), why, whylen)) <
            0)
        return AOS_ERR_IO;
    migrate_workspaces(d->dir);
    share_workspaces();
    if ((A.bindir = fs_dir(d->dir, "agent-bin", 0755, geteuid(), getegid(), why, whylen)) < 0)
        return AOS_ERR_IO;
    int sd = fs_dir(d->run, "agent", 0755, geteuid(), getegid(), why, whylen);
    if (sd < 0)
        return AOS_ERR_IO;
    unlinkat(sd, "agent.sock", 0); /* a dead aosd's: we hold the lock */
    close(sd);
    A.run = d->run;
    snprintf(A.sockdir, sizeof A.sockdir, "%s/run/agent", c->data_dir);
    if ((size_t)snprintf(url, urlcap, "ipc://%s/agent.sock", A.sockdir) >= urlcap) {
        snprintf(why, whylen, "the agent socket's path is too long");
        return AOS_ERR_TOO_BIG;
    }
    return compile_seccomp(why, whylen);
}

/* The socket is the agents' uid's: inside a sandbox's user namespace that uid is the
 * agent's own, and libaos refuses a socket of any other owner (a fake aosd's). Agents see
 * it read-only, so they cannot change its mode. */
aos_err agents_socket_made(char *why, size_t whylen)
{
    if (fchownat(A.run, "agent/agent.sock", A.uid, A.gid, AT_SYMLINK_NOFOLLOW) != 0) {
        snprintf(why, whylen, "chown DATA/run/agent/agent.sock: %s", strerror(errno));
        return AOS_ERR_IO;
    }
    return AOS_OK;
}
