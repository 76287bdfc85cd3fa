/* Agents as processes under a real aosd: deployments applied, validated and pruned; each
 * lifecycle transition; identity from the kernel; rights refused; kill -9 of aosd; 200 agents. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "harness.h"
#include "storage.pb-c.h"

static h_aosd *H;
static char DATA_DIR[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-agents-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    write_file(path, "llm:\n"
                     "  default_model: sim/s1\n"
                     "  providers:\n"
                     "    - name: sim\n"
                     "      kind: sim\n"
                     "      models: [{name: s1, price: {input: 1, output: 2}}, {name: s2}]\n");
    char why[1024];
    H = h_start_on(DATA_DIR, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd on %s: %s", DATA_DIR, why);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

static int apply(const char *yaml, int prune, int dry, Aos__Agent__ApplyReply **out,
                 char *err, size_t errlen)
{
    Aos__Agent__ApplyRequest r = AOS__AGENT__APPLY_REQUEST__INIT;
    r.yaml = (ProtobufCBinaryData){strlen(yaml), (uint8_t *)yaml};
    r.file = (ProtobufCBinaryData){8, (uint8_t *)"dep.yaml"};
    r.prune = prune;
    r.dry_run = dry;
    uint8_t buf[1 << 16];
    size_t len = aos__agent__apply_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 30000};
    aos_call(h_conn(H), &o, "kernel.agent.apply", buf, len, &rep);
    int st = rep.status;
    if (err)
        snprintf(err, errlen, "%.*s", (int)(errlen > 1 ? errlen - 1 : 0), rep.error);
    if (out)
        *out = st == AOS_OK ? aos__agent__apply_reply__unpack(NULL, rep.payload_len,
                                                              rep.payload)
                            : NULL;
    aos_reply_clear(&rep);
    return st;
}

static Aos__Agent__ListReply *list(const char *name)
{
    Aos__Agent__ListRequest r = AOS__AGENT__LIST_REQUEST__INIT;
    r.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    uint8_t buf[256];
    size_t len = aos__agent__list_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 10000};
    aos_call(h_conn(H), &o, "kernel.agent.list", buf, len, &rep);
    Aos__Agent__ListReply *l = rep.status == AOS_OK
                                   ? aos__agent__list_reply__unpack(NULL, rep.payload_len,
                                                                    rep.payload)
                                   : NULL;
    aos_reply_clear(&rep);
    return l;
}

static int ctl(const char *name, const char *action)
{
    Aos__Agent__CtlRequest r = AOS__AGENT__CTL_REQUEST__INIT;
    r.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    r.action = (ProtobufCBinaryData){strlen(action), (uint8_t *)action};
    uint8_t buf[256];
    size_t len = aos__agent__ctl_request__pack(&r, buf);
    aos_reply rep;
    aos_call(h_conn(H), NULL, "kernel.agent.ctl", buf, len, &rep);
    int st = rep.status;
    aos_reply_clear(&rep);
    return st;
}

/* The agent's Info fields we test, copied out. */
typedef struct ainfo {
    char state[16], waiting[16], reason[256];
    int pid;
    uint64_t steps, wakes, skipped, refused;
    unsigned restarts;
} ainfo;

static int info(const char *name, ainfo *o)
{
    Aos__Agent__ListReply *l = list(name);
    if (!l || l->n_agents != 1) {
        if (l)
            aos__agent__list_reply__free_unpacked(l, NULL);
        return -1;
    }
    Aos__Agent__Info *a = l->agents[0];
    snprintf(o->state, sizeof o->state, "%.*s", (int)a->state.len, (char *)a->state.data);
    snprintf(o->waiting, sizeof o->waiting, "%.*s", (int)a->waiting_on.len,
             (char *)a->waiting_on.data);
    snprintf(o->reason, sizeof o->reason, "%.*s", (int)a->reason.len, (char *)a->reason.data);
    o->pid = a->pid;
    o->steps = a->steps;
    o->wakes = a->wakes;
    o->skipped = a->wakes_skipped;
    o->refused = a->refused;
    o->restarts = a->restarts;
    aos__agent__list_reply__free_unpacked(l, NULL);
    return 0;
}

/* Polls until the agent's state is one of the '|'-separated states. */
static int wait_state(const char *name, const char *states, unsigned ms, ainfo *o)
{
    for (unsigned t = 0; t < ms; t += 50) {
        if (info(name, o) == 0) {
            char want[128];
            snprintf(want, sizeof want, "|%s|", states);
            char got[24];
            snprintf(got, sizeof got, "|%s|", o->state);
            if (strstr(want, got))
                return 0;
        }
        usleep(50000);
    }
    return -1;
}

static char proc_state(int pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

#define AGENT(name, args, extra)                                                            \
    "  - name: " name "\n    program: aos-test-agent\n    args: " args "\n    model: sim/s1\n" \
    extra

/* ---- deployments ------------------------------------------------------------------------- */

static void bad_files_are_refused_with_their_line(void **st)
{
    (void)st;
    static const struct {
        const char *yaml, *needle;
    } cases[] = {
        {"agents:\n  - name: a\n    program: [x\n", "dep.yaml:"},
        {"agents:\n  - name: a\n    program: aos-test-agent\n    model: nope/none\n", ":4:"},
        {"agents:\n  - name: a\n    program: aos-test-agent\n    budgets: {tokens: -5}\n",
         ":4:"},
        {"agents:\n  - name: a\n    program: aos-test-agent\n  - name: a\n"
         "    program: aos-test-agent\n", ":4:"},
        {"agents:\n  - name: a\n    program: aos-test-agent\n    wake: {cron: \"61 * * * *\"}\n",
         ":4:"},
        {"agents:\n  - name: a\n    program: aos-test-agent\n    colour: blue\n", ":4:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512];
        int rc = apply(cases[i].yaml, 0, 0, NULL, err, sizeof err);
        if (rc != AOS_ERR_USAGE || !strstr(err, cases[i].needle))
            fail_msg("case %zu: %s: %s (wanted %s)", i, aos_err_name(rc), err,
                     cases[i].needle);
    }
    Aos__Agent__ListReply *l = list("");
    assert_non_null(l);
    assert_int_equal(l->n_agents, 0); /* nothing changed */
    aos__agent__list_reply__free_unpacked(l, NULL);
}

static int has_change(const Aos__Agent__ApplyReply *r, const char *name, const char *action)
{
    for (size_t i = 0; i < r->n_changes; i++)
        if (r->changes[i]->name.len == strlen(name) &&
            !memcmp(r->changes[i]->name.data, name, strlen(name)) &&
            r->changes[i]->action.len == strlen(action) &&
            !memcmp(r->changes[i]->action.data, action, strlen(action)))
            return 1;
    return 0;
}

static void apply_update_prune_and_dry_run(void **st)
{
    (void)st;
    Aos__Agent__ApplyReply *r = NULL;
    const char *two = "agents:\n" AGENT("d1", "[idle]", "") AGENT("d2", "[idle]", "");
    assert_int_equal(apply(two, 0, 0, &r, NULL, 0), AOS_OK);
    assert_true(r->applied && has_change(r, "d1", "create") && has_change(r, "d2", "create"));
    aos__agent__apply_reply__free_unpacked(r, NULL);
    /* the same file again: nothing to do */
    assert_int_equal(apply(two, 0, 0, &r, NULL, 0), AOS_OK);
    assert_true(has_change(r, "d1", "unchanged") && has_change(r, "d2", "unchanged"));
    aos__agent__apply_reply__free_unpacked(r, NULL);
    /* a dry run of an update and a prune: shown, not done */
    const char *one = "agents:\n" AGENT("d1", "[idle]", "    weight: 3\n");
    assert_int_equal(apply(one, 1, 1, &r, NULL, 0), AOS_OK);
    assert_false(r->applied);
    assert_true(has_change(r, "d1", "update") && has_change(r, "d2", "delete"));
    aos__agent__apply_reply__free_unpacked(r, NULL);
    ainfo a;
    assert_int_equal(info("d2", &a), 0);
    /* now for real */
    assert_int_equal(apply(one, 1, 0, &r, NULL, 0), AOS_OK);
    assert_true(r->applied && has_change(r, "d2", "delete"));
    aos__agent__apply_reply__free_unpacked(r, NULL);
    assert_int_not_equal(info("d2", &a), 0);
    assert_int_equal(wait_state("d1", "waiting|running", 20000, &a), 0);
    assert_int_equal(apply("agents: []\n", 1, 0, &r, NULL, 0), AOS_OK);
    aos__agent__apply_reply__free_unpacked(r, NULL);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static void suspend_resume_stop_at_step_boundaries(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("stepper", "[steps, \"100000\", \"20\"]", ""), 0, 0,
                           NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("stepper", "running", 20000, &a), 0);
    for (int i = 0; i < 100 && (info("stepper", &a), a.steps < 3); i++)
        usleep(50000);
    assert_true(a.steps >= 3);
    assert_int_equal(ctl("stepper", "suspend"), AOS_OK);
    assert_int_equal(wait_state("stepper", "suspended", 5000, &a), 0);
    assert_int_equal(proc_state(a.pid), 'T'); /* frozen */
    uint64_t s1 = a.steps;
    usleep(300000);
    info("stepper", &a);
    assert_true(a.steps == s1);
    assert_int_equal(ctl("stepper", "resume"), AOS_OK);
    for (int i = 0; i < 100 && (info("stepper", &a), a.steps <= s1); i++)
        usleep(50000);
    assert_true(a.steps > s1);
    assert_int_equal(ctl("stepper", "stop"), AOS_OK);
    assert_int_equal(wait_state("stepper", "done", 10000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 0")); /* it heard the request and finished */
}

static void stop_of_an_agent_that_ignores_it_ends_in_sigkill(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("deaf", "[ignore-stop]",
                                             "    stop_timeout_ms: 300\n"), 0, 0, NULL, NULL,
                           0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("deaf", "running|waiting", 20000, &a), 0);
    usleep(300000); /* it has connected and ignores SIGTERM by now */
    assert_int_equal(ctl("deaf", "stop"), AOS_OK);
    assert_int_equal(wait_state("deaf", "done", 10000, &a), 0);
    assert_non_null(strstr(a.reason, "signal 9"));
}

static void a_crash_loop_backs_off_then_fails(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("crasher", "[crash]",
                                             "    restart: {policy: on-failure, intensity: "
                                             "2/60, backoff_min_ms: 50, backoff_max_ms: 200}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("crasher", "failed", 30000, &a), 0);
    assert_true(a.restarts >= 2);
    /* bubblewrap passes on its program's death by SIGABRT as exit 128 + 6 */
    if (!strstr(a.reason, "signal 6") && !strstr(a.reason, "exit 134"))
        fail_msg("reason: %s", a.reason);
}

static void a_wake_while_busy_is_skipped_and_counted(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("sleeper", "[idle]", "    wake: {every: 200ms}\n")
                                       AGENT("busy", "[steps, \"100000\", \"50\"]",
                                             "    wake: {every: 100ms}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a, b;
    assert_int_equal(wait_state("sleeper", "waiting", 20000, &a), 0);
    assert_int_equal(wait_state("busy", "running|waiting", 20000, &b), 0);
    usleep(1500000);
    info("sleeper", &a);
    info("busy", &b);
    assert_true(a.wakes >= 2);
    assert_true(b.skipped >= 3);
    assert_int_equal(b.wakes, 0); /* never stacked */
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

/* ---- identity and rights ------------------------------------------------------------------ */

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

static void an_agent_acts_as_itself_only(void **st)
{
    (void)st;
    char ctlsock[256], y[2048];
    snprintf(ctlsock, sizeof ctlsock, "ipc://%s/control.sock", DATA_DIR);
    snprintf(y, sizeof y, "agents:\n" AGENT("spoofer", "[spoof, victim]", "")
                          AGENT("dialer", "[dial, \"%s\"]", "")
                          AGENT("dialer2", "[dial, \"ipc:///run/aos/../../control.sock\"]", ""),
             ctlsock);
    assert_int_equal(apply(y, 0, 0, NULL, NULL, 0), AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("spoofer", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 0"));
    assert_true(kv_exists("spoofer", "spoof"));
    assert_false(kv_exists("victim", "spoof"));
    /* the control socket is not in an agent's world: exit 0 means it was refused */
    assert_int_equal(wait_state("dialer", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 0"));
    assert_int_equal(wait_state("dialer2", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 0"));
    /* a process aosd did not spawn cannot use the agent socket: libaos would not even
     * dial it (the file is the agents' uid's), so this dials it raw */
    char url[256];
    snprintf(url, sizeof url, "ipc://%s/run/agent/agent.sock", DATA_DIR);
    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    assert_int_equal(nng_dial(s, url, NULL, 0), 0);
    for (int i = 0; i < 40 && h_log_count(H, "not a process aosd started as an agent") < 1; i++)
        usleep(50000);
    h_nng_close(s, 2000);
    assert_true(h_log_count(H, "not a process aosd started as an agent") >= 1);
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

/* The seccomp allow-list from inside: every forbidden call refused with EPERM, libaos and
 * the workspace still working (aos-test-agent escape exits 0 only then). */
static void an_agent_cannot_leave_its_sandbox(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("escaper", "[escape]", ""), 0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("escaper", "done|failed", 20000, &a), 0);
    char path[128], log[16384];
    snprintf(path, sizeof path, "%s/agent-logs/escaper", DATA_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(log, 1, sizeof log - 1, f);
    fclose(f);
    log[n] = 0;
    if (!strstr(a.reason, "exit 0"))
        fail_msg("escaper: %s; its log:\n%s", a.reason, log);
    static const char *const refused[] = {
        "socket(AF_INET): refused", "socket(AF_NETLINK): refused", "socket(AF_PACKET): refused",
        "unshare(CLONE_NEWUSER): refused", "mount: refused", "bpf: refused",
        "io_uring_setup: refused", "ptrace(PTRACE_ATTACH, 1): refused",
        "clone without CLONE_THREAD (fork): refused", "ioctl(TIOCSTI): refused",
        "posix_spawn (clone with CLONE_VFORK): refused",
        "escape: 0 not refused, 0 of what it needs broken",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!strstr(log, refused[i]))
            fail_msg("no \"%s\" in the escaper's log:\n%s", refused[i], log);
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

static void ungranted_tools_and_models_are_refused(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("asker", "[llm, sim/s2]", "")
                                       AGENT("tooler", "[tool, rm, \"{}\"]", "    tools: [cat]\n")
                                       AGENT("ok", "[llm, sim/s1]", ""),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("asker", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 4")); /* REFUSED */
    assert_true(a.refused >= 1);
    assert_int_equal(wait_state("tooler", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 4"));
    assert_int_equal(wait_state("ok", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 0"));
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

/* ---- aosd's crash, and many agents -------------------------------------------------------- */

static void agents_come_back_after_aosd_kill9(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("phoenix", "[idle]", ""), 0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("phoenix", "waiting", 20000, &a), 0);
    int old = a.pid;
    char dir[256], why[512];
    h_kill9_keep(H, dir, sizeof dir);
    H = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd again: %s", why);
    assert_int_equal(wait_state("phoenix", "waiting", 30000, &a), 0);
    assert_int_not_equal(a.pid, old);
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

static void two_hundred_agents_alive_at_once(void **st)
{
    (void)st;
    size_t cap = 200 * 128 + 64;
    char *y = malloc(cap);
    assert_non_null(y);
    size_t n = (size_t)snprintf(y, cap, "agents:\n");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(y + n, cap - n, "  - {name: many%03d, program: aos-test-agent, "
                              "args: [idle]}\n", i);
    assert_int_equal(apply(y, 0, 0, NULL, NULL, 0), AOS_OK);
    free(y);
    size_t waiting = 0;
    for (int t = 0; t < 1200 && waiting < 200; t++) {
        Aos__Agent__ListReply *l = list("");
        waiting = 0;
        for (size_t i = 0; l && i < l->n_agents; i++)
            waiting += l->agents[i]->state.len == 7 &&
                       !memcmp(l->agents[i]->state.data, "waiting", 7);
        if (l)
            aos__agent__list_reply__free_unpacked(l, NULL);
        if (waiting < 200)
            usleep(100000);
    }
    assert_int_equal(waiting, 200);
    char out[1 << 16];
    const char *argv[] = {"ps", "--json", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, argv), 0);
    assert_non_null(strstr(out, "many199"));
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_files_are_refused_with_their_line),
        cmocka_unit_test(apply_update_prune_and_dry_run),
        cmocka_unit_test(suspend_resume_stop_at_step_boundaries),
        cmocka_unit_test(stop_of_an_agent_that_ignores_it_ends_in_sigkill),
        cmocka_unit_test(a_crash_loop_backs_off_then_fails),
        cmocka_unit_test(a_wake_while_busy_is_skipped_and_counted),
        cmocka_unit_test(an_agent_acts_as_itself_only),
        cmocka_unit_test(an_agent_cannot_leave_its_sandbox),
        cmocka_unit_test(ungranted_tools_and_models_are_refused),
        cmocka_unit_test(agents_come_back_after_aosd_kill9),
        cmocka_unit_test(two_hundred_agents_alive_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
