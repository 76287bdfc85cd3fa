/* Agents as processes under a real aosd: deployments applied, validated and pruned; each
 * lifecycle transition; identity from the kernel; rights refused; kill -9 of aosd; 200 agents. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "harness.h"
#include "memory.pb-c.h"
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
    chmod(DATA_DIR, 0755);
    /* the fake MCP server of tool_mcp_test: its tools are in aos-tool's catalogue, which
     * an apply checks the file's mcp_tools against */
    const char *bin = getenv("AOS_BIN_DIR");
    assert_non_null(bin);
    char bindir[PATH_MAX], yaml[16384], path[128];
    assert_non_null(realpath(bin, bindir));
    snprintf(yaml, sizeof yaml,
             "agent_memory_mb: 192\n"
             "agent_pids_max: 128\n"
             "llm:\n"
             "  default_model: sim/s1\n"
             "  providers:\n"
             "    - name: sim\n"
             "      kind: sim\n"
             "      models: [{name: s1, price: {input: 1, output: 2}}, {name: s2}]\n"
             "tools:\n"
             "  mcp:\n"
             "    - {name: fake, command: %s/mcp_fake, args: [normal], paths: [%s]}\n",
             bindir, bindir);
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    write_file(path, yaml);
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

static Aos__Agent__ListReply *list(const char *name);

static int apply_in(const char *yaml, int prune, int dry, Aos__Agent__ApplyReply **out,
                    char *err, size_t errlen, uint32_t timeout_ms)
{
    Aos__Agent__ApplyRequest r = AOS__AGENT__APPLY_REQUEST__INIT;
    r.yaml = (ProtobufCBinaryData){strlen(yaml), (uint8_t *)yaml};
    r.file = (ProtobufCBinaryData){8, (uint8_t *)"dep.yaml"};
    r.prune = prune;
    r.dry_run = dry;
    size_t len = aos__agent__apply_request__get_packed_size(&r);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    aos__agent__apply_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = timeout_ms};
    aos_call(h_conn(H), &o, "kernel.agent.apply", buf, len, &rep);
    free(buf);
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

static int apply(const char *yaml, int prune, int dry, Aos__Agent__ApplyReply **out,
                 char *err, size_t errlen)
{
    return apply_in(yaml, prune, dry, out, err, errlen, 30000);
}

static size_t n_applied(void)
{
    Aos__Agent__ListReply *l = list("");
    assert_non_null(l);
    size_t n = l->n_agents;
    aos__agent__list_reply__free_unpacked(l, NULL);
    return n;
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

/* kernel.agent.ctl; the state it answered goes into state (cap 16) unless NULL. */
static int ctl_state(const char *name, const char *action, char *state)
{
    Aos__Agent__CtlRequest r = AOS__AGENT__CTL_REQUEST__INIT;
    r.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    r.action = (ProtobufCBinaryData){strlen(action), (uint8_t *)action};
    uint8_t buf[256];
    size_t len = aos__agent__ctl_request__pack(&r, buf);
    aos_reply rep;
    aos_call(h_conn(H), NULL, "kernel.agent.ctl", buf, len, &rep);
    int st = rep.status;
    Aos__Agent__CtlReply *c = st == AOS_OK ? aos__agent__ctl_reply__unpack(NULL, rep.payload_len,
                                                                            rep.payload)
                                           : NULL;
    if (state)
        snprintf(state, 16, "%.*s", c ? (int)c->state.len : 0, c ? (char *)c->state.data : "");
    if (c)
        aos__agent__ctl_reply__free_unpacked(c, NULL);
    aos_reply_clear(&rep);
    return st;
}

static int ctl(const char *name, const char *action)
{
    return ctl_state(name, action, NULL);
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

/* For a failure's message: the end of the agent's own log and of aosd's. */
static void story(const char *name)
{
    static char out[1 << 14];
    const char *lg[] = {"agent", "logs", name, "--bytes", "2000", NULL};
    if (h_aosctl(H, out, sizeof out, lg) == 0)
        print_message("%s's log ends:\n%s\n", name, out);
    h_dump_log(H);
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
        {"agents:\n  - name: a\n    program: aos-test-agent\n"
         "    budgets: {context_tokens: 100}\n", ":4:"},
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

static int has_change(const Aos__Agent__ApplyReply *r, const char *name, const char *action);

/* Tools and MCP tools are checked against aos-tool's catalogue at apply: an unknown one is
 * refused with its line, also in a dry run, and nothing changes. */
static void unknown_tools_are_refused_at_apply(void **st)
{
    (void)st;
    size_t before = n_applied();
    char err[512];
    static const char *const bad[] = {
        "agents:\n  - name: t1\n    program: aos-test-agent\n    tools: [cat]\n"
        "  - name: t2\n    program: aos-test-agent\n    tools: [ls, no_such_tool]\n",
        "agents:\n  - name: t1\n    program: aos-test-agent\n    tools: [cat]\n"
        "  - name: t2\n    program: aos-test-agent\n    mcp_tools: [fake/no_such_tool]\n",
        "agents:\n  - name: t1\n    program: aos-test-agent\n    tools: [cat]\n"
        "  - name: t2\n    program: aos-test-agent\n    mcp_tools: [nosrv/echo]\n",
    };
    static const char *const needle[] = {"no_such_tool", "fake/no_such_tool", "nosrv/echo"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int dry = 0; dry < 2; dry++) {
            int rc = apply(bad[i], 0, dry, NULL, err, sizeof err);
            if (rc != AOS_ERR_USAGE || !strstr(err, "dep.yaml:7:") || !strstr(err, needle[i]))
                fail_msg("case %zu%s: %s: %s", i, dry ? " (dry run)" : "", aos_err_name(rc),
                         err);
        }
    assert_int_equal(n_applied(), before); /* nothing changed: t1 is not there either */
    assert_int_not_equal(info("t1", &(ainfo){0}), 0);
    /* what the catalogue has passes: a built-in and the fake server's echo */
    Aos__Agent__ApplyReply *r = NULL;
    const char *good = "agents:\n  - name: t1\n    program: aos-test-agent\n    args: [idle]\n"
                       "    tools: [cat]\n    mcp_tools: [fake/echo]\n";
    assert_int_equal(apply(good, 0, 1, &r, err, sizeof err), AOS_OK);
    assert_true(!r->applied && has_change(r, "t1", "create"));
    aos__agent__apply_reply__free_unpacked(r, NULL);
    assert_int_equal(n_applied(), before);
}

/* The state letter of pid's thread tid (T: stopped), '?' when it cannot be read. */
static char task_state(pid_t pid, const char *tid)
{
    char path[320], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%.255s/stat", (int)pid, tid);
    FILE *f = fopen(path, "re");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

/* 'T' once every thread of pid is stopped, after waiting up to 2 s for a SIGSTOP to land;
 * else the state of a thread that is not ('?' when none can be read). kill() returns
 * before the stop lands: it lands in each thread when that thread is next scheduled, and
 * until the thread the kernel picked has taken it the others run on (under a soak's load
 * aos-tool answered the catalogue after kill(SIGSTOP) had returned). */
static char stopped_state(pid_t pid)
{
    char path[64], st = '?';
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    for (int i = 0; i < 200; i++) {
        DIR *d = opendir(path);
        struct dirent *de;
        int seen = 0;
        st = 'T';
        while (d && (de = readdir(d)))
            if (de->d_name[0] != '.') {
                char t = task_state(pid, de->d_name);
                seen = 1;
                if (t != 'T' && t != 't')
                    st = t;
            }
        if (d)
            closedir(d);
        if (!seen)
            st = '?';
        if (st == 'T')
            break;
        usleep(10000);
    }
    return st;
}

/* Without aos-tool's answer nothing is applied unchecked: UNAVAILABLE once the request's
 * deadline is near. aos-tool is frozen (SIGSTOP) for less than its heartbeat timeout. */
static void an_apply_without_the_catalogue_is_unavailable(void **st)
{
    (void)st;
    char state[32], err[512];
    pid_t tool = h_child(H, "tool", state);
    assert_true(tool > 0);
    size_t before = n_applied();
    const char *y = "agents:\n  - name: t3\n    program: aos-test-agent\n    args: [idle]\n"
                    "    tools: [cat]\n";
    assert_int_equal(kill(tool, SIGSTOP), 0);
    char pst = stopped_state(tool);
    if (pst != 'T') {
        kill(tool, SIGCONT);
        fail_msg("aos-tool (pid %d) has not stopped 2 s after SIGSTOP: a thread is '%c'",
                 (int)tool, pst);
    }
    int rc = apply_in(y, 0, 0, NULL, err, sizeof err, 1500);
    char now[32];
    pid_t tool_now = h_child(H, "tool", now);
    kill(tool, SIGCONT);
    /* once (a soak under load) this apply came back OK: the pid and states say whether
     * aos-tool was really stopped, or another one answered */
    if (rc != AOS_ERR_UNAVAILABLE || !strstr(err, "aos-tool"))
        fail_msg("%s: %s (aos-tool pid %d was '%s', /proc state '%c' after SIGSTOP; now pid %d "
                 "'%s')",
                 aos_err_name(rc), err, (int)tool, state, pst, (int)tool_now, now);
    assert_int_equal(n_applied(), before);
    /* a file that names no tool needs no catalogue */
    assert_int_equal(kill(tool, SIGSTOP), 0);
    rc = apply_in("agents:\n  - name: t4\n    program: aos-test-agent\n    args: [idle]\n",
                  0, 1, NULL, err, sizeof err, 1500);
    kill(tool, SIGCONT);
    assert_int_equal(rc, AOS_OK);
    /* and with aos-tool back it applies */
    assert_int_equal(apply(y, 0, 1, NULL, err, sizeof err), AOS_OK);
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
    /* the prune's stop ends d1's wait: it exits on the request, not by the SIGTERM that
     * follows an unheard one (its exit code is not asked: a sanitizer build's leak check
     * may fail inside the sandbox and change it) */
    for (int i = 0; i < 200 && !h_log_count(H, "agent d1 removed ("); i++)
        usleep(100 * 1000);
    if (h_log_count(H, "agent d1 removed (exit ") != 1)
        fail_msg("d1 did not exit by itself after the prune (%d lines say removed, %d by "
                 "a signal)", h_log_count(H, "agent d1 removed ("),
                 h_log_count(H, "agent d1 removed (signal"));
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
    char ps = proc_state(a.pid);
    if (ps != 'T') { /* frozen */
        story("stepper");
        fail_msg("suspended, but pid %d is in state '%c' (reason \"%s\")", a.pid, ps ? ps : '?',
                 a.reason);
    }
    uint64_t s1 = a.steps;
    usleep(300000);
    info("stepper", &a);
    if (a.steps != s1) {
        story("stepper");
        fail_msg("suspended at step %" PRIu64 ", yet at step %" PRIu64 " 300 ms later", s1,
                 a.steps);
    }
    assert_int_equal(ctl("stepper", "resume"), AOS_OK);
    for (int i = 0; i < 100 && (info("stepper", &a), a.steps <= s1); i++)
        usleep(50000);
    assert_true(a.steps > s1);
    assert_int_equal(ctl("stepper", "stop"), AOS_OK);
    int got = wait_state("stepper", "done", 10000, &a);
    if (got != 0 || !strstr(a.reason, "exit 0")) { /* it heard the request and finished */
        story("stepper");
        fail_msg("after stop: state %s, reason \"%s\", %u restarts, %" PRIu64 " steps",
                 a.state, a.reason, a.restarts, a.steps);
    }
}

/* An idle agent is at a boundary already: the suspend's answer says "suspended" only
 * once every thread of its sandbox has taken its SIGSTOP, so /proc agrees at once. */
static void an_idle_agent_is_suspended_when_the_answer_says_so(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("napper", "[idle]", ""), 0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("napper", "waiting", 20000, &a), 0);
    char state[16];
    assert_int_equal(ctl_state("napper", "suspend", state), AOS_OK);
    char ps = proc_state(a.pid);
    if (strcmp(state, "suspended") || ps != 'T') {
        story("napper");
        fail_msg("the suspend answered \"%s\" with pid %d in state '%c'", state, a.pid,
                 ps ? ps : '?');
    }
    assert_int_equal(ctl_state("napper", "resume", state), AOS_OK);
    assert_int_not_equal(proc_state(a.pid), 'T');
    /* a stop of a suspended agent thaws it to hear the stop */
    assert_int_equal(ctl_state("napper", "suspend", state), AOS_OK);
    assert_int_equal(ctl("napper", "stop"), AOS_OK);
    int got = wait_state("napper", "done", 10000, &a);
    if (got != 0 || !strstr(a.reason, "exit 0")) {
        story("napper");
        fail_msg("after stop: state %s, reason \"%s\"", a.state, a.reason);
    }
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

/* ---- budgets.context_tokens ---------------------------------------------------------------- */

/* aos-memory's budget of the agent's window, as memory.show reports it (0: no answer). */
static uint64_t memory_budget(const char *agent)
{
    Aos__Memory__ShowRequest q = AOS__MEMORY__SHOW_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = aos__memory__show_request__pack(&q, buf);
    aos_reply rep;
    aos_call_opts o = {.agent_id = agent, .timeout_ms = 10000};
    aos_call(h_conn(H), &o, "memory.show", buf, len, &rep);
    uint64_t b = 0;
    Aos__Memory__ShowReply *r = rep.status == AOS_OK
                                    ? aos__memory__show_reply__unpack(NULL, rep.payload_len,
                                                                      rep.payload)
                                    : NULL;
    if (r) {
        b = r->budget;
        aos__memory__show_reply__free_unpacked(r, NULL);
    }
    aos_reply_clear(&rep);
    return b;
}

static uint64_t wait_budget(const char *agent, uint64_t want)
{
    uint64_t b = 0;
    for (int i = 0; i < 200 && (b = memory_budget(agent)) != want; i++)
        usleep(50000);
    return b;
}

/* The manifest's context budget is aos-memory's for the agent before it starts, follows an
 * update, and the agent cannot set its own. */
static void the_context_budget_reaches_aos_memory(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("ctxa", "[idle]",
                                             "    budgets: {context_tokens: 5000}\n")
                                       AGENT("ctxb", "[call, memory.budget.set]",
                                             "    budgets: {context_tokens: 4000}\n"
                                             "    restart: {policy: never}\n")
                                       AGENT("ctxc", "[assemble, \"8000\"]",
                                             "    budgets: {context_tokens: 4000}\n"
                                             "    restart: {policy: never}\n")
                                       AGENT("ctxd", "[assemble, \"2000\"]",
                                             "    budgets: {context_tokens: 4000}\n"
                                             "    restart: {policy: never}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("ctxa", "waiting", 20000, &a), 0);
    assert_int_equal(memory_budget("ctxa"), 5000); /* set before it started */
    /* its own memory.budget.set: REFUSED (exit 4), the budget stays */
    assert_int_equal(wait_state("ctxb", "done|failed", 20000, &a), 0);
    if (!strstr(a.reason, "exit 4"))
        fail_msg("ctxb: %s", a.reason);
    assert_true(a.refused >= 1);
    assert_int_equal(memory_budget("ctxb"), 4000);
    /* a prompt over the manifest's budget: REFUSED; one under it is the call's to ask */
    assert_int_equal(wait_state("ctxc", "done|failed", 20000, &a), 0);
    if (!strstr(a.reason, "exit 4"))
        fail_msg("ctxc: %s", a.reason);
    assert_int_equal(wait_state("ctxd", "done|failed", 20000, &a), 0);
    if (!strstr(a.reason, "exit 0"))
        fail_msg("ctxd: %s", a.reason);
    /* an update of a running agent's budget reaches aos-memory too */
    assert_int_equal(apply("agents:\n" AGENT("ctxa", "[idle]",
                                             "    budgets: {context_tokens: 7000}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    assert_int_equal(wait_budget("ctxa", 7000), 7000);
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
    if (wait_state("escaper", "done|failed", 20000, &a) != 0) {
        /* twice in a soak the agent socket answered nobody from here on (kernel.agent.self
         * timed out for every later agent): what aosd said is the lead */
        story("escaper");
        fail_msg("escaper did not finish in 20 s: state %s, reason \"%s\"", a.state, a.reason);
    }
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

static void wait_record(const char *agent, const char *needle);

/* The agent's log as aosd keeps it (every process's lines, appended). */
static void agent_log(const char *name, char *log, size_t cap)
{
    char path[128];
    snprintf(path, sizeof path, "%s/agent-logs/%s", DATA_DIR, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(log, 1, cap - 1, f);
    fclose(f);
    log[n] = 0;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* budgets.steps counts the steps of one run: the 4th step of a run is REFUSED at 3, a second
 * run gets 3 again, and a run resumed after a crash goes on from its count (2 before the
 * crash: 1 more after it, not 3); the count is in the agent's state record for aosd's
 * restart. */
static void the_step_budget_counts_the_steps_of_one_run(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("perrun", "[runsteps, \"r-aa,r-bb\", \"5\"]",
                                             "    budgets: {steps: 3}\n"
                                             "    restart: {policy: never}\n")
                                       AGENT("crashy", "[runsteps, r-cc, \"5\", \"2\"]",
                                             "    budgets: {steps: 3}\n"
                                             "    restart: {policy: on-failure, intensity: "
                                             "2/60, backoff_min_ms: 50, backoff_max_ms: 200}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    static char log[1 << 16];
    assert_int_equal(wait_state("perrun", "done|failed", 20000, &a), 0);
    agent_log("perrun", log, sizeof log);
    if (!strstr(a.reason, "exit 4"))
        fail_msg("perrun: %s; its log:\n%s", a.reason, log);
    static const char *const want[] = {
        "run r-aa step 3: continue",
        ("run r-aa step 4: REFUSED: agent perrun: run r-aa has taken its 3 steps "
         "(budgets.steps)"),
        "run r-bb step 3: continue",
        "run r-bb step 4: REFUSED", "runsteps: done"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(log, want[i]))
            fail_msg("no \"%s\" in perrun's log:\n%s", want[i], log);
    assert_int_equal(count_of(log, ": continue"), 6);
    assert_true(a.refused >= 2);
    assert_int_equal(a.steps, 6);

    assert_int_equal(wait_state("crashy", "failed", 30000, &a), 0);
    agent_log("crashy", log, sizeof log);
    if (!strstr(log, "runsteps: abort after step 2") || !strstr(log, "run r-cc step 2: REFUSED") ||
        count_of(log, "run r-cc step 1: continue") != 2 || count_of(log, ": continue") != 3)
        fail_msg("crashy (%s): its log:\n%s", a.reason, log);
    wait_record("crashy", "\"run\":\"r-cc\",\"run_steps\":3");
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

static void file_is(const char *rel, const char *want)
{
    char path[256], got[512];
    snprintf(path, sizeof path, "%s/%s", DATA_DIR, rel);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    size_t n = fread(got, 1, sizeof got - 1, f);
    fclose(f);
    got[n] = 0;
    if (strcmp(got, want))
        fail_msg("%s holds '%s', not '%s'", path, got, want);
}

/* One workspace: what the agent writes its tool run reads, what the tool run writes the
 * agent reads, and each can add to the other's file; another agent (and its tool runs)
 * sees neither. DATA/workspaces/NAME is aos-tool's, of the agents' group, 02770. */
static void an_agent_and_its_tool_runs_share_one_workspace(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("sharer", "[share]", "    tools: [sh]\n"
                                             "    restart: {policy: never}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    static char log[1 << 16];
    assert_int_equal(wait_state("sharer", "done|failed", 30000, &a), 0);
    agent_log("sharer", log, sizeof log);
    if (!strstr(a.reason, "exit 0") || !strstr(log, "share: all ok"))
        fail_msg("sharer: %s; its log:\n%s", a.reason, log);
    file_is("workspaces/sharer/from-agent.txt", "agent wrote this\ntool added this\n");
    file_is("workspaces/sharer/from-tool.txt", "tool wrote this\nagent added this\n");
    char p[256];
    struct stat sb;
    snprintf(p, sizeof p, "%s/workspaces/sharer", DATA_DIR);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 02770);
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam("aos-tool"); /* static: read before the next */
        assert_non_null(pw);
        assert_int_equal(sb.st_uid, pw->pw_uid);
        assert_non_null(pw = getpwnam("aos-agent"));
        assert_int_equal(sb.st_gid, pw->pw_gid);
    }
    snprintf(p, sizeof p, "%s/agents", DATA_DIR); /* the old place is not made any more */
    assert_int_not_equal(access(p, F_OK), 0);

    assert_int_equal(apply("agents:\n" AGENT("peeker", "[peek, sharer]", "    tools: [sh]\n"
                                             "    restart: {policy: never}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    assert_int_equal(wait_state("peeker", "done|failed", 30000, &a), 0);
    agent_log("peeker", log, sizeof log);
    static const char *const want[] = {
        "peek: from-agent.txt: not there", "peek: ../sharer/from-agent.txt: not there",
        "peek: /workspace/../sharer/from-tool.txt: not there",
        "peek: the tool run saw: [] (ok)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(log, want[i]))
            fail_msg("no \"%s\" in peeker's log (%s):\n%s", want[i], a.reason, log);
    assert_null(strstr(log, "wrote this"));
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

/* A tool run asking for a network the manifest does not grant, and LLM calls past the token
 * budget: REFUSED (exit 4), counted, and each refusal is in the audit log under the agent. */
static void network_and_budget_refusals_are_audited(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("netter", "[tool, cat, \"{}\", net]",
                                             "    tools: [cat]\n")
                                       AGENT("spender", "[llm, sim/s1, hello, \"50\"]",
                                             "    budgets: {tokens: 300}\n"),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("netter", "done|failed", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 4"));
    assert_true(a.refused >= 1);
    assert_int_equal(wait_state("spender", "done|failed", 60000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 4")); /* some call past the budget was refused */
    assert_true(a.refused >= 1);                  /* the scheduler's refusal counts too */
    static const struct {
        const char *agent, *needle;
    } want[] = {{"netter", "network"}, {"spender", "token budget"}};
    for (size_t i = 0; i < 2; i++) {
        char out[1 << 16];
        const char *argv[] = {"--json", "audit", "tail", "--agent", want[i].agent, "-n", "200",
                              NULL};
        int found = 0;
        for (int t = 0; t < 50 && !found; t++) {
            if (h_aosctl(H, out, sizeof out, argv) == 0 && strstr(out, "REFUSED") &&
                strstr(out, want[i].needle))
                found = 1;
            else
                usleep(100000);
        }
        if (!found)
            print_message("audit tail of %s: %.2000s\n", want[i].agent, out);
        assert_true(found);
    }
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
}

/* Each agent has a cgroup of its own (when aosd has cgroup v2): memory past
 * agent_memory_mb kills that agent alone, threads past agent_pids_max are refused to it;
 * aosd and the other agents go on. */
static void an_agent_is_held_to_its_cgroup(void **st)
{
    (void)st;
    char self[512] = "";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        if (!fgets(self, sizeof self, f))
            self[0] = 0;
        fclose(f);
    }
    assert_int_equal(apply("agents:\n" AGENT("hog", "[hog, \"4096\"]", "    restart: {policy: never}\n")
                                       AGENT("spawner", "[threads, \"1000\"]",
                                             "    restart: {policy: never}\n")
                                       AGENT("calm", "[idle]", ""),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("hog", "done|failed", 60000, &a), 0);
    print_message("hog: %s\n", a.reason);
    /* the OOM killer's SIGKILL: bubblewrap's exit 137, or the signal when it was hit */
    int limited = strstr(a.reason, "exit 137") || strstr(a.reason, "signal 9");
    if (!limited) {
        /* no cgroup v2 for aosd here (the log says why): the agent had its rlimits only */
        assert_true(h_log_count(H, "agents run without a cgroup of their own") >= 1);
        print_message("no cgroup for agents on this host: skipped the limits' checks\n");
    }
    assert_int_equal(wait_state("spawner", "done|failed", 60000, &a), 0);
    print_message("spawner: %s\n", a.reason);
    if (limited) {
        /* a thread refused under 128: the program says so (exit 3), or a sanitizer's runtime
         * gives up on it first (exit 1); never all 1000 started */
        assert_null(strstr(a.reason, "exit 0"));
        char lp[160], lg[4096] = "";
        snprintf(lp, sizeof lp, "%s/agent-logs/spawner", DATA_DIR);
        FILE *lf = fopen(lp, "r");
        if (lf) {
            lg[fread(lg, 1, sizeof lg - 1, lf)] = 0;
            fclose(lf);
        }
        print_message("spawner's log: %.300s\n", lg);
        assert_null(strstr(lg, "threads: all"));
    }
    assert_int_equal(wait_state("calm", "running|waiting", 20000, &a), 0);
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

/* The agent's state record in aosd's namespace, "" when there is none. */
static void state_record(const char *agent, char *out, size_t cap)
{
    char key[96];
    snprintf(key, sizeof key, "state/%s", agent);
    Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
    g.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    uint8_t buf[128];
    size_t len = aos__storage__kv_get_request__pack(&g, buf);
    aos_reply rep;
    aos_call_opts o = {.agent_id = "aos:kernel"};
    aos_call(h_conn(H), &o, "storage.kv.get", buf, len, &rep);
    out[0] = 0;
    Aos__Storage__KvGetReply *r = rep.status == AOS_OK
                                      ? aos__storage__kv_get_reply__unpack(NULL, rep.payload_len,
                                                                           rep.payload)
                                      : NULL;
    if (r) {
        snprintf(out, cap, "%.*s", (int)r->value.len, (const char *)r->value.data);
        aos__storage__kv_get_reply__free_unpacked(r, NULL);
    }
    aos_reply_clear(&rep);
}

static void wait_record(const char *agent, const char *needle)
{
    char rec[1024] = "";
    for (int i = 0; i < 200 && !strstr(rec, needle); i++) {
        state_record(agent, rec, sizeof rec);
        if (!strstr(rec, needle))
            usleep(50000);
    }
    if (!strstr(rec, needle))
        fail_msg("state record of %s: '%s', wanted %s", agent, rec, needle);
}

/* A data dir of before one workspace: DATA/agents/NAME moves to DATA/workspaces/NAME at
 * aosd's start, its files shared with the agents' group; where both exist the old one
 * stays. */
static void old_agent_workspaces_move_to_the_shared_one(void **st)
{
    (void)st;
    char dir[256], why[512], p[512];
    h_kill9_keep(H, dir, sizeof dir);
    const char *mk[] = {"agents", "agents/mig", "agents/mig/sub", "agents/both", "workspaces",
                        "workspaces/both"};
    for (size_t i = 0; i < sizeof mk / sizeof mk[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, mk[i]);
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            fail_msg("mkdir %s: %s", p, strerror(errno));
    }
    snprintf(p, sizeof p, "%s/agents/mig/sub/notes.txt", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("old notes\n", f);
    fclose(f);
    assert_int_equal(chmod(p, 0600), 0);
    H = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd again: %s", why);
    file_is("workspaces/mig/sub/notes.txt", "old notes\n");
    struct stat sb;
    snprintf(p, sizeof p, "%s/workspaces/mig/sub/notes.txt", DATA_DIR);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0660); /* the group may what the owner may */
    snprintf(p, sizeof p, "%s/workspaces/mig/sub", DATA_DIR);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 02770);
    snprintf(p, sizeof p, "%s/workspaces/mig", DATA_DIR);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 02770);
    snprintf(p, sizeof p, "%s/agents/mig", DATA_DIR);
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(p, sizeof p, "%s/agents/both", DATA_DIR); /* both: the old one is left */
    assert_int_equal(access(p, F_OK), 0);
}

/* A finished restart-never agent is not run again by a restarted aosd: done and failed stay,
 * with their reasons, shown so by ps; one with a wake still wakes; a live one starts again. */
static void finished_agents_stay_finished_after_aosd_kill9(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT("once", "[steps, \"2\", \"10\"]",
                                             "    restart: {policy: never}\n")
                                       AGENT("oops", "[crash]", "    restart: {policy: never}\n")
                                       AGENT("tick", "[steps, \"1\", \"10\"]",
                                             "    restart: {policy: never}\n"
                                             "    wake: {every: 2s}\n")
                                       AGENT("alive", "[idle]", ""),
                           0, 0, NULL, NULL, 0),
                     AOS_OK);
    ainfo a;
    assert_int_equal(wait_state("once", "done", 20000, &a), 0);
    assert_non_null(strstr(a.reason, "exit 0"));
    assert_int_equal(wait_state("oops", "failed", 20000, &a), 0);
    char oops_reason[256];
    snprintf(oops_reason, sizeof oops_reason, "%s", a.reason);
    assert_int_equal(wait_state("alive", "waiting", 20000, &a), 0);
    wait_record("once", "\"state\":\"done\"");
    wait_record("oops", "\"state\":\"failed\"");
    char dir[256], why[512];
    h_kill9_keep(H, dir, sizeof dir);
    H = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd again: %s", why);
    assert_int_equal(wait_state("alive", "waiting", 30000, &a), 0); /* started again */
    assert_int_equal(info("once", &a), 0);
    assert_string_equal(a.state, "done");
    assert_non_null(strstr(a.reason, "exit 0"));
    assert_int_equal(info("oops", &a), 0);
    assert_string_equal(a.state, "failed");
    assert_string_equal(a.reason, oops_reason);
    /* still so a while later: nothing started them */
    usleep(1500000);
    assert_int_equal(info("once", &a), 0);
    assert_string_equal(a.state, "done");
    assert_int_equal(a.pid, 0);
    assert_int_equal(info("oops", &a), 0);
    assert_string_equal(a.state, "failed");
    char out[1 << 16];
    const char *argv[] = {"ps", "--json", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, argv), 0);
    const char *o = strstr(out, "\"once\"");
    assert_non_null(o);
    const char *next = strstr(o + 1, "\"name\"");
    const char *d = strstr(o, "\"done\"");
    assert_true(d && (!next || d < next));
    /* the agent with a wake wakes */
    for (int i = 0; i < 100 && (info("tick", &a), a.wakes < 1); i++)
        usleep(100000);
    assert_true(a.wakes >= 1);
    assert_int_equal(apply("agents: []\n", 1, 0, NULL, NULL, 0), AOS_OK);
    /* a removed agent's record goes with it */
    char rec[1024] = "x";
    for (int i = 0; i < 100 && rec[0]; i++) {
        state_record("once", rec, sizeof rec);
        if (rec[0])
            usleep(50000);
    }
    assert_string_equal(rec, "");
}

/* The applied set is one storage value: past its cap the apply is refused whole, saying how
 * many agents it holds and what the cap is. */
static void a_deployment_over_the_record_cap_is_refused(void **st)
{
    (void)st;
    /* 1,500 agents of about 1.1 kB each (a 600-byte argument): 1.6 MB */
    size_t n = 1500, cap = n * 720 + 64;
    char *y = malloc(cap), err[1024], pad[601];
    assert_non_null(y);
    memset(pad, 'x', 600);
    pad[600] = 0;
    size_t k = (size_t)snprintf(y, cap, "agents:\n");
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(y + k, cap - k, "  - {name: big%04zu, program: aos-test-agent, "
                              "args: [idle, %s], restart: {policy: never}}\n", i, pad);
    assert_true(k < cap);
    size_t before = n_applied();
    /* the dry run first: were it let through, the real one would start 1,500 agents */
    for (int dry = 1; dry >= 0; dry--) {
        int rc = apply(y, 0, dry, NULL, err, sizeof err);
        if (rc != AOS_ERR_TOO_BIG || !strstr(err, "1500 agents") || !strstr(err, "1048576")) {
            free(y);
            fail_msg("%s%s: %s", dry ? "dry run: " : "", aos_err_name(rc), err);
        }
    }
    free(y);
    assert_int_equal(n_applied(), before);
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
        cmocka_unit_test(unknown_tools_are_refused_at_apply),
        cmocka_unit_test(an_apply_without_the_catalogue_is_unavailable),
        cmocka_unit_test(apply_update_prune_and_dry_run),
        cmocka_unit_test(suspend_resume_stop_at_step_boundaries),
        cmocka_unit_test(an_idle_agent_is_suspended_when_the_answer_says_so),
        cmocka_unit_test(stop_of_an_agent_that_ignores_it_ends_in_sigkill),
        cmocka_unit_test(a_crash_loop_backs_off_then_fails),
        cmocka_unit_test(a_wake_while_busy_is_skipped_and_counted),
        cmocka_unit_test(an_agent_acts_as_itself_only),
        cmocka_unit_test(an_agent_cannot_leave_its_sandbox),
        cmocka_unit_test(ungranted_tools_and_models_are_refused),
        cmocka_unit_test(network_and_budget_refusals_are_audited),
        cmocka_unit_test(the_step_budget_counts_the_steps_of_one_run),
        cmocka_unit_test(an_agent_and_its_tool_runs_share_one_workspace),
        cmocka_unit_test(an_agent_is_held_to_its_cgroup),
        cmocka_unit_test(the_context_budget_reaches_aos_memory),
        cmocka_unit_test(agents_come_back_after_aosd_kill9),
        cmocka_unit_test(finished_agents_stay_finished_after_aosd_kill9),
        cmocka_unit_test(old_agent_workspaces_move_to_the_shared_one),
        cmocka_unit_test(a_deployment_over_the_record_cap_is_refused),
        cmocka_unit_test(two_hundred_agents_alive_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
