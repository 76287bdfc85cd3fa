/* aosd run by an ordinary user, its agents on that same uid: they run confined, a spoofed id
 * writes as itself, the control socket is out of their reach, and a process of that uid that
 * aosd did not spawn cannot use the agent socket. Run as root, the test becomes aos-itest. */
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "aos/aos.h"
#include "harness.h"
#include "storage.pb-c.h"

#define USER "aos-itest"

static h_aosd *H;
static char DIR_[64];
static uid_t UID;
static gid_t GID;
static char SKIP[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* Root: the whole test becomes USER before anything starts (no thread yet, nothing of
 * nng), so it is that user's operator who starts aosd, talks to it and checks its agents,
 * as libaos's checks of socket owners want. Not root: it already is an ordinary user. */
static int become_user(void)
{
    if (geteuid() != 0) {
        UID = geteuid();
        GID = getegid();
        return 0;
    }
    if (!h_user(USER, &UID, &GID)) {
        snprintf(SKIP, sizeof SKIP, "no user %s: run tools/deps.sh as root", USER);
        return -1;
    }
    if (setgroups(0, NULL) != 0 || setresgid(GID, GID, GID) != 0 ||
        setresuid(UID, UID, UID) != 0) {
        snprintf(SKIP, sizeof SKIP, "cannot become %s", USER);
        return -1;
    }
    return 0;
}

static int setup(void **st)
{
    (void)st;
    if (SKIP[0])
        return 0;
    snprintf(DIR_, sizeof DIR_, "/tmp/it-agents-user-XXXXXX");
    assert_non_null(mkdtemp(DIR_));
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", DIR_);
    write_file(path, "llm:\n  default_model: sim/s1\n  providers:\n"
                     "    - {name: sim, kind: sim, models: [{name: s1}]}\n");
    char why[1024];
    H = h_start_on(DIR_, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd as uid %u on %s: %s", (unsigned)UID, DIR_, why);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    if (H)
        h_stop(H);
    return 0;
}

#define NEED_AOSD()                                                                         \
    do {                                                                                    \
        if (!H) {                                                                           \
            printf("skipped: %s\n", SKIP);                                                  \
            skip();                                                                         \
        }                                                                                   \
    } while (0)

/* aosctl apply -f of yaml: its exit code. */
static int apply(const char *yaml)
{
    char path[128], out[4096];
    snprintf(path, sizeof path, "%s/dep.yaml", DIR_);
    write_file(path, yaml);
    const char *argv[] = {"apply", "-f", path, NULL};
    int rc = h_aosctl(H, out, sizeof out, argv);
    if (rc)
        printf("aosctl apply: exit %d: %s\n", rc, out);
    return rc;
}

/* The agent's ps --json row: state, pid and reason copied out; 0 when it is listed. */
static int ps_row(const char *name, char *state, size_t scap, int *pid, char *reason,
                  size_t rcap)
{
    static char out[1 << 16];
    const char *argv[] = {"ps", "--json", NULL};
    if (h_aosctl(H, out, sizeof out, argv) != 0)
        return -1;
    json_t *j = json_loads(out, 0, NULL);
    int found = -1;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "agents"), i, a)
    {
        const char *n = json_string_value(json_object_get(a, "name"));
        if (!n || strcmp(n, name))
            continue;
        const char *s = json_string_value(json_object_get(a, "state"));
        const char *r = json_string_value(json_object_get(a, "reason"));
        snprintf(state, scap, "%s", s ? s : "");
        snprintf(reason, rcap, "%s", r ? r : "");
        *pid = (int)json_integer_value(json_object_get(a, "pid"));
        found = 0;
    }
    json_decref(j);
    return found;
}

/* Polls until the agent is in one of the '|'-separated states; its reason and pid out. */
static int wait_state(const char *name, const char *states, unsigned ms, char *reason,
                      size_t rcap, int *pid)
{
    char want[128], got[40], state[32];
    snprintf(want, sizeof want, "|%s|", states);
    for (unsigned t = 0; t < ms; t += 100) {
        if (ps_row(name, state, sizeof state, pid, reason, rcap) == 0) {
            snprintf(got, sizeof got, "|%s|", state);
            if (strstr(want, got))
                return 0;
        }
        usleep(100000);
    }
    printf("%s: still %s (%s), wanted %s\n", name, state, reason, states);
    return -1;
}

static void agent_log(const char *name, char *out, size_t cap)
{
    char path[160];
    snprintf(path, sizeof path, "%s/agent-logs/%s", DIR_, name);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, cap - 1, f) : 0;
    if (f)
        fclose(f);
    out[n] = 0;
}

/* The uid (the real one, the first of /proc/PID/status's Uid: line); -1 if unknown. */
static long proc_uid(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long uid = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Uid:", 4))
            uid = strtol(line + 4, NULL, 10);
    if (f)
        fclose(f);
    return uid;
}

static int kv_exists(const char *agent, const char *key)
{
    Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
    g.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    uint8_t buf[128];
    size_t len = aos__storage__kv_get_request__pack(&g, buf);
    aos_reply rep;
    aos_call_opts o = {.agent_id = agent};
    aos_call(h_conn(H), &o, "storage.kv.get", buf, len, &rep);
    int st = rep.status;
    aos_reply_clear(&rep);
    return st == AOS_OK;
}

#define AGENT(name, args) "  - {name: " name ", program: aos-test-agent, args: " args "}\n"

static void agents_run_on_aosds_uid_confined(void **st)
{
    (void)st;
    NEED_AOSD();
    assert_int_equal(apply("agents:\n" AGENT("u-idle", "[idle]") AGENT("u-escape", "[escape]")),
                     0);
    char reason[256], log[16384];
    int pid = 0;
    assert_int_equal(wait_state("u-idle", "waiting", 30000, reason, sizeof reason, &pid), 0);
    assert_true(pid > 0);
    assert_int_equal(proc_uid(pid), (long)UID); /* aosd's uid (not aos-agent's) */
    assert_int_equal(proc_uid(h_aosd_pid(H)), (long)UID);
    /* the seccomp allow-list holds without root too */
    assert_int_equal(wait_state("u-escape", "done|failed", 30000, reason, sizeof reason, &pid),
                     0);
    agent_log("u-escape", log, sizeof log);
    if (!strstr(reason, "exit 0") ||
        !strstr(log, "escape: 0 not refused, 0 of what it needs broken"))
        fail_msg("u-escape: %s; its log:\n%s", reason, log);
    assert_int_equal(apply("agents: []\n"), 0);
}

static void a_spoofed_id_writes_as_itself(void **st)
{
    (void)st;
    NEED_AOSD();
    assert_int_equal(apply("agents:\n" AGENT("u-spoof", "[spoof, u-victim]")), 0);
    char reason[256];
    int pid;
    assert_int_equal(wait_state("u-spoof", "done|failed", 30000, reason, sizeof reason, &pid),
                     0);
    assert_non_null(strstr(reason, "exit 0"));
    assert_true(kv_exists("u-spoof", "spoof"));
    assert_false(kv_exists("u-victim", "spoof"));
    assert_int_equal(apply("agents: []\n"), 0);
}

/* On the same uid, the socket's mode cannot keep an agent out: the control socket is not in
 * the agent's mount namespace (aos-test-agent dial exits 0 when it did not get through). */
static void the_control_socket_is_out_of_an_agents_reach(void **st)
{
    (void)st;
    NEED_AOSD();
    char y[1024];
    snprintf(y, sizeof y, "agents:\n" AGENT("u-dial", "[dial, \"ipc://%s/control.sock\"]")
                          AGENT("u-dial2", "[dial, \"ipc:///run/aos/../../control.sock\"]")
                          AGENT("u-dial3", "[dial, \"ipc:///proc/1/root%s/control.sock\"]"),
             DIR_, DIR_);
    assert_int_equal(apply(y), 0);
    static const char *const names[] = {"u-dial", "u-dial2", "u-dial3"};
    for (size_t i = 0; i < 3; i++) {
        char reason[256], log[4096];
        int pid;
        assert_int_equal(wait_state(names[i], "done|failed", 30000, reason, sizeof reason,
                                    &pid), 0);
        agent_log(names[i], log, sizeof log);
        if (!strstr(reason, "exit 0") || !strstr(log, "dial: ") || strstr(log, "dial: OK"))
            fail_msg("%s: %s; its log:\n%s", names[i], reason, log);
    }
    assert_int_equal(apply("agents: []\n"), 0);
}

/* A process of aosd's own uid, but not one aosd spawned, dials the agent socket itself:
 * aosd knows its agents by the pid it spawned, so the link is cut before any call. */
static void a_process_aosd_did_not_spawn_cannot_use_the_agent_socket(void **st)
{
    (void)st;
    NEED_AOSD();
    const char *msg = "not a process aosd started as an agent";
    int before = h_log_count(H, msg);
    char url[160], out[4096];
    snprintf(url, sizeof url, "ipc://%s/run/agent/agent.sock", DIR_);
    const char *argv[] = {h_bin("aos-test-agent"), "dial", url, NULL};
    int rc = h_run_as(NULL, argv, out, sizeof out, 30000);
    printf("aos-test-agent dial as uid %u, not spawned by aosd: exit %d: %s", (unsigned)UID,
           rc, out);
    assert_int_equal(rc, 0); /* 3 would be a kernel.ping answered */
    assert_non_null(strstr(out, "dial: "));
    for (int i = 0; i < 50 && h_log_count(H, msg) <= before; i++)
        usleep(100000);
    assert_true(h_log_count(H, msg) > before);
}

/* Root: the build tree may be where the test user cannot go (a clone under /root, 0700),
 * so aosd, the servers and the agent programs are copied into a directory of their own
 * that user can read, and AOS_BIN_DIR points there. 0 or -1 (SKIP says why). */
static char BIN_[64];
static int stage_binaries(void)
{
    if (geteuid() != 0)
        return 0;
    char src[PATH_MAX];
    snprintf(src, sizeof src, "%s", h_bin("aosd"));
    char *slash = strrchr(src, '/');
    if (!slash)
        return -1;
    *slash = 0;
    snprintf(BIN_, sizeof BIN_, "/tmp/it-agents-user-bin-XXXXXX");
    if (!mkdtemp(BIN_) || chmod(BIN_, 0755) != 0) {
        snprintf(SKIP, sizeof SKIP, "cannot make a directory for the binaries");
        return -1;
    }
    DIR *d = opendir(src);
    if (!d)
        return -1;
    int rc = 0;
    for (struct dirent *e; (e = readdir(d)) && !rc;) {
        if (strncmp(e->d_name, "aos", 3) != 0)
            continue;
        char from[PATH_MAX + 256], to[PATH_MAX];
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        snprintf(to, sizeof to, "%s/%s", BIN_, e->d_name);
        int in = open(from, O_RDONLY | O_CLOEXEC);
        int out = in >= 0 ? open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755) : -1;
        char buf[1 << 16];
        ssize_t n;
        while (out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
            if (write(out, buf, (size_t)n) != n)
                rc = -1;
        if (in < 0 || out < 0 || fchmod(out, 0755) != 0)
            rc = -1;
        if (in >= 0)
            close(in);
        if (out >= 0)
            close(out);
    }
    closedir(d);
    /* the test user's, so that it removes them at the end */
    uid_t u;
    gid_t g;
    if (!rc && h_user(USER, &u, &g) && chown(BIN_, u, g) != 0)
        rc = -1;
    if (rc) {
        snprintf(SKIP, sizeof SKIP, "cannot copy the binaries to %s", BIN_);
        return -1;
    }
    setenv("AOS_BIN_DIR", BIN_, 1);
    return 0;
}

static void unstage_binaries(void)
{
    if (!BIN_[0])
        return;
    DIR *d = opendir(BIN_);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", BIN_, e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(BIN_);
}

int main(void)
{
    if (stage_binaries() != 0 || become_user() != 0)
        printf("skipped: %s\n", SKIP);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(agents_run_on_aosds_uid_confined),
        cmocka_unit_test(a_spoofed_id_writes_as_itself),
        cmocka_unit_test(the_control_socket_is_out_of_an_agents_reach),
        cmocka_unit_test(a_process_aosd_did_not_spawn_cannot_use_the_agent_socket),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    unstage_binaries();
    return rc;
}
