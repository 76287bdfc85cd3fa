/* bench_agents (B7): N idle agents (aos-test-agent idle) alive under one aosd at once — how
 * fast they start, what aosd and each agent cost, how long `aosctl ps` takes with all of them.
 *
 * Usage: AOS_BIN_DIR=build/bin build/bin/bench_agents [N]   (N: 1000)
 * Prints: rlimits raised, agents_alive, spawn_per_s, ps_ms_N (median of 5), aosd_rss_mb,
 * agent_private_kb (median over a sample of sandboxes: bubblewrap, its init and the
 * program), and the same-run baselines: plain fork+exec of /bin/true per second and the
 * private memory of a plain `sleep` process, with the ratios. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "harness.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Private_Clean + Private_Dirty of pid, KiB (smaps_rollup). */
static long private_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = 0, v;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Private_Clean: %ld kB", &v) == 1 ||
            sscanf(line, "Private_Dirty: %ld kB", &v) == 1)
            kb += v;
    fclose(f);
    return kb;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static pid_t ppid_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    int pp = 0;
    return rp && sscanf(rp + 1, " %*c %d", &pp) == 1 ? pp : 0;
}

/* The private memory of one sandbox: root and its descendants (two levels below). */
static long tree_private_kb(pid_t root)
{
    long kb = private_kb(root);
    DIR *d = opendir("/proc");
    struct dirent *de;
    while (d && (de = readdir(d))) {
        pid_t p = (pid_t)atoi(de->d_name);
        if (p <= 0)
            continue;
        pid_t pp = ppid_of(p);
        if (pp == root || (pp > 0 && ppid_of(pp) == root))
            kb += private_kb(p);
    }
    if (d)
        closedir(d);
    return kb;
}

static int apply(h_aosd *h, const char *yaml)
{
    Aos__Agent__ApplyRequest r = AOS__AGENT__APPLY_REQUEST__INIT;
    r.yaml = (ProtobufCBinaryData){strlen(yaml), (uint8_t *)yaml};
    r.prune = 1;
    size_t len = aos__agent__apply_request__get_packed_size(&r);
    uint8_t *buf = malloc(len);
    aos__agent__apply_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 60000};
    aos_call(h_conn(h), &o, "kernel.agent.apply", buf, len, &rep);
    free(buf);
    if (rep.status != AOS_OK)
        fprintf(stderr, "apply: %s: %s\n", aos_err_name(rep.status), rep.error);
    int st = rep.status;
    aos_reply_clear(&rep);
    return st;
}

/* How many agents are waiting (idle in kernel.agent.wait), and up to cap of their pids. */
static size_t count_waiting(h_aosd *h, pid_t *pids, size_t cap)
{
    Aos__Agent__ListRequest r = AOS__AGENT__LIST_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = aos__agent__list_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 30000};
    aos_call(h_conn(h), &o, "kernel.agent.list", buf, len, &rep);
    size_t n = 0;
    Aos__Agent__ListReply *l = rep.status == AOS_OK
        ? aos__agent__list_reply__unpack(NULL, rep.payload_len, rep.payload) : NULL;
    for (size_t i = 0; l && i < l->n_agents; i++)
        if (l->agents[i]->state.len == 7 && !memcmp(l->agents[i]->state.data, "waiting", 7)) {
            if (pids && n < cap)
                pids[n] = l->agents[i]->pid;
            n++;
        }
    if (l)
        aos__agent__list_reply__free_unpacked(l, NULL);
    aos_reply_clear(&rep);
    return n;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 1000;
    if (n < 1 || n > 4000) {
        fprintf(stderr, "usage: bench_agents [N (1..4000)]\n");
        return 2;
    }
    /* aosd holds a pipe per agent and inherits our limits */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    printf("rlimit_nofile: %llu\n", (unsigned long long)rl.rlim_cur);

    /* baselines, in this run: plain fork+exec, and a plain process's private memory */
    double t0 = now_s();
    unsigned nb = 200;
    for (unsigned i = 0; i < nb; i++) {
        pid_t p = fork();
        if (p == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        waitpid(p, NULL, 0);
    }
    double base_spawn = nb / (now_s() - t0);
    pid_t sl = fork();
    if (sl == 0) {
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    usleep(200000);
    long base_kb = private_kb(sl);
    kill(sl, SIGKILL);
    waitpid(sl, NULL, 0);

    h_aosd *h = h_start(NULL);
    if (!h) {
        fprintf(stderr, "aosd did not start\n");
        return 1;
    }
    size_t cap = (size_t)n * 96 + 64;
    char *y = malloc(cap);
    size_t off = (size_t)snprintf(y, cap, "agents:\n");
    for (unsigned i = 0; i < n; i++)
        off += (size_t)snprintf(y + off, cap - off, "  - {name: b%04u, program: aos-test-agent, "
                                "args: [idle]}\n", i);
    t0 = now_s();
    if (apply(h, y) != AOS_OK) {
        h_stop(h);
        return 1;
    }
    size_t alive = 0;
    double t_all = 0;
    while (now_s() - t0 < 600) {
        alive = count_waiting(h, NULL, 0);
        if (alive >= n) {
            t_all = now_s() - t0;
            break;
        }
        usleep(200000);
    }
    if (!t_all)
        t_all = now_s() - t0;
    printf("agents_alive: %zu\n", alive);
    printf("spawn_per_s: %.1f (baseline fork+exec of /bin/true: %.1f/s, ratio %.3f)\n",
           alive / t_all, base_spawn, alive / t_all / base_spawn);

    double ps[5];
    char *out = malloc(8u << 20);
    for (int i = 0; i < 5; i++) {
        const char *args[] = {"ps", "--json", NULL};
        double s = now_s();
        h_aosctl(h, out, 8u << 20, args);
        ps[i] = (now_s() - s) * 1000;
    }
    qsort(ps, 5, sizeof ps[0], cmp_dbl);
    printf("ps_ms_%u: %.1f\n", n, ps[2]);
    printf("aosd_rss_mb: %.1f\n", rss_kb(h_aosd_pid(h)) / 1024.0);

    /* each sandbox: the program's pid is listed; its bubblewrap is two levels up */
    pid_t pids[20];
    size_t np = count_waiting(h, pids, 20);
    double kb[20];
    size_t nk = 0;
    for (size_t i = 0; i < np && i < 20; i++) {
        pid_t init = ppid_of(pids[i]), bw = init ? ppid_of(init) : 0;
        if (bw > 0)
            kb[nk++] = (double)tree_private_kb(bw);
    }
    qsort(kb, nk, sizeof kb[0], cmp_dbl);
    if (nk)
        printf("agent_private_kb: %.0f (baseline plain sleep: %ld kB, ratio %.2f)\n",
               kb[nk / 2], base_kb, base_kb > 0 ? kb[nk / 2] / (double)base_kb : 0);
    apply(h, "agents: []\n");
    free(out);
    free(y);
    h_stop(h);
    return 0;
}
