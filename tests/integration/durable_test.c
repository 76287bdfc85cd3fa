/* R2, durable agent runs: a 20-step aos-agent run on the scripted sim, kill -9 of the agent
 * at each step, of aosd mid-run and of aos-tool mid-tool, against an uncrashed run. */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
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
#include <libpq-fe.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "harness.h"
#include "storage_util.h"

#define TURNS 20          /* LLM steps of the run: 19 with a tool call, then the answer */
#define CRASHES 20        /* agents killed -9, one at each turn 1..20 */

static h_aosd *H;
static char DATA_DIR[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The run's script: turn i (1..19) calls one tool, alternately a shell line appending to
 * ran.log (each tool run leaves one line: a second run would show) and a file written;
 * turn 20 answers. */
static void write_script(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("turns:\n", f);
    for (int i = 1; i < TURNS; i++) {
        if (i % 2)
            fprintf(f, "  - text: \"Step %d: noting it.\"\n    tool_calls:\n"
                       "      - {name: sh, arguments: {command: \"echo ran %d >> ran.log\"}}\n",
                    i, i);
        else if (i == 10)
            fprintf(f, "  - text: \"Step %d: the plan.\"\n    tool_calls:\n"
                       "      - {name: todo_write, arguments: {todo: \"1. finish the notes\"}}\n",
                    i);
        else
            fprintf(f, "  - text: \"Step %d: a file.\"\n    tool_calls:\n"
                       "      - {name: write_file, arguments: {path: f%02d.txt, "
                       "content: \"fact %d\"}}\n", i, i, i);
    }
    fputs("  - text: \"All twenty steps done.\"\n", f);
    fclose(f);
}

static void write_loop_script(const char *path)
{
    write_file(path, "turns:\n"
                     "  - tool_calls: [{name: sh, arguments: {command: \"echo again\"}}]\n"
                     "  - tool_calls: [{name: sh, arguments: {command: \"echo again\"}}]\n"
                     "  - tool_calls: [{name: sh, arguments: {command: \"echo again\"}}]\n"
                     "  - text: \"never reached\"\n");
}

static void write_slow_tool_script(const char *path)
{
    write_file(path, "turns:\n"
                     "  - text: \"A slow one.\"\n    tool_calls:\n"
                     "      - {name: sh, arguments: {command: \"echo began >> marks; sleep 4; "
                     "echo ended >> marks\"}}\n"
                     "  - text: \"It was interrupted; going on without it.\"\n");
}

/* Mail through aos-agent's msg_send and msg_recv: the sender sends one message; the
 * receiver gets it, then waits again and must get none (a message handled twice would be
 * the second receive's outcome: the test reads both from the step log). The sim's
 * `expect` is not used: aos-agent recites its todo list last, after the tool result. */
static void write_mail_scripts(const char *sender, const char *receiver)
{
    write_file(sender, "turns:\n"
                       "  - text: \"Telling the receiver.\"\n    tool_calls:\n"
                       "      - {name: msg_send, arguments: {to: mailee, text: \"hello mailee, "
                       "the facts are ready\"}}\n"
                       "  - text: \"Sent.\"\n");
    write_file(receiver, "turns:\n"
                         "  - text: \"Waiting for mail.\"\n    tool_calls:\n"
                         "      - {name: msg_recv, arguments: {timeout_s: 30}}\n"
                         "  - text: \"Got it; anything more?\"\n    tool_calls:\n"
                         "      - {name: msg_recv, arguments: {timeout_s: 3}}\n"
                         "  - text: \"One message, handled once.\"\n");
}

static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-durable-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char run[128], loop[128], slow[128], path[128], yaml[4096], snd[128], rcv[128];
    snprintf(snd, sizeof snd, "%s/mailer.yaml", DATA_DIR);
    snprintf(rcv, sizeof rcv, "%s/mailee.yaml", DATA_DIR);
    write_mail_scripts(snd, rcv);
    snprintf(run, sizeof run, "%s/run.yaml", DATA_DIR);
    snprintf(loop, sizeof loop, "%s/loop.yaml", DATA_DIR);
    snprintf(slow, sizeof slow, "%s/slow.yaml", DATA_DIR);
    write_script(run);
    write_loop_script(loop);
    write_slow_tool_script(slow);
    /* "paced": the same script with a latency per call, so aosd can be killed mid-run */
    snprintf(yaml, sizeof yaml,
             "restart_intensity: 1000/60\n"
             "llm:\n"
             "  default_model: sim/s1\n"
             "  providers:\n"
             "    - name: sim\n"
             "      kind: sim\n"
             "      sim: {script: %s}\n"
             "      models: [{name: s1, price: {input: 1, output: 2}}]\n"
             "    - name: paced\n"
             "      kind: sim\n"
             "      sim: {script: %s, latency_ms: 250}\n"
             "      models: [{name: p1}]\n"
             "    - name: loop\n"
             "      kind: sim\n"
             "      sim: {script: %s}\n"
             "      models: [{name: l1}]\n"
             "    - name: slow\n"
             "      kind: sim\n"
             "      sim: {script: %s}\n"
             "      models: [{name: w1}]\n"
             "    - name: mailer\n"
             "      kind: sim\n"
             "      sim: {script: %s}\n"
             "      models: [{name: m1}]\n"
             "    - name: mailee\n"
             "      kind: sim\n"
             "      sim: {script: %s}\n"
             "      models: [{name: m1}]\n",
             run, run, loop, slow, snd, rcv);
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

/* ---- calls and checks ------------------------------------------------------------------- */

static int apply(const char *yaml)
{
    return h_apply(H, yaml, strlen(yaml), "dep.yaml", 0);
}

static PGconn *pg_open(void)
{
    PGconn *pg = su_admin_connect(H);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("admin connection: %s", PQerrorMessage(pg));
    return pg;
}

static long long count(PGconn *pg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long long count(PGconn *pg, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return su_count(pg, sql);
}

/* One text value of sql (with %s the agent); "" when NULL. */
static void text_of(PGconn *pg, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void text_of(PGconn *pg, char *out, size_t cap, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    snprintf(out, cap, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* The run's record state ("" while there is none). */
static void run_state(PGconn *pg, const char *agent, char *out, size_t cap)
{
    text_of(pg, out, cap, "SELECT (SELECT convert_from(r.value, 'UTF8')::json->>'state' FROM storage.kv c "
                "JOIN storage.kv r ON r.agent = c.agent AND r.key = convert_to('aos.run/' || "
                "convert_from(c.value, 'UTF8'), 'UTF8') WHERE c.agent = '%s' AND c.key = "
                "convert_to('aos.run.current', 'UTF8'))", agent);
}

/* Waits until every agent's run is finished (its record not running). */
static void wait_finished(const char *const *names, size_t n, unsigned ms)
{
    PGconn *pg = pg_open();
    uint64_t end = aos_mono_ms() + ms;
    for (size_t i = 0; i < n; i++) {
        char st[32] = "";
        for (;;) {
            run_state(pg, names[i], st, sizeof st);
            if (st[0] && strcmp(st, "running"))
                break;
            if (aos_mono_ms() > end) {
                h_dump_log(H);
                fail_msg("%s: its run is '%s' after %u ms", names[i], st, ms);
            }
            usleep(100000);
        }
    }
    PQfinish(pg);
}

/* Every regular file of the agent's tool workspace, "name=content;" in name order. */
static void workspace(const char *agent, char *out, size_t cap)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/workspaces/%s", DATA_DIR, agent);
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        char p[512], buf[4096];
        snprintf(p, sizeof p, "%s/%s", dir, ents[i]->d_name);
        struct stat sb;
        if (ents[i]->d_name[0] != '.' && !lstat(p, &sb) && S_ISREG(sb.st_mode)) {
            FILE *f = fopen(p, "r");
            size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f)
                fclose(f);
            buf[got] = 0;
            k += (size_t)snprintf(out + k, k < cap ? cap - k : 0, "%s=%s;", ents[i]->d_name, buf);
        }
        free(ents[i]);
    }
    free(ents);
}

/* The durable state that must not depend on crashes, ids and timestamps aside (the run id,
 * also in each run's first page, page ids and created times are not in it; tool results
 * lose duration_ms and
 * peak_rss_kb): the step log's kinds in order, the memory pages' kinds and texts, the
 * workspace files. */
typedef struct state {
    char steps[4096], memory[16384], files[8192];
    long long paid, paid_ids, resent, tool_ends_ok;
} state;

static void state_of(const char *agent, state *s)
{
    PGconn *pg = pg_open();
    text_of(pg, s->steps, sizeof s->steps, "SELECT string_agg(kind, ',' ORDER BY step) FROM storage.step WHERE agent = "
                "'%s'", agent);
    text_of(pg, s->memory, sizeof s->memory,
            "SELECT md5(string_agg(kind || ':' || regexp_replace(regexp_replace(body, "
            "'\"(duration_ms|peak_rss_kb)\":[0-9]+', '', 'g'), 'r-[0-9a-f]{32}', 'r-ID', 'g'), "
            "'|' ORDER BY page_id)) || "
            "':' || count(*) FROM memory.pages WHERE agent_id = '%s'", agent);
    s->paid = count(pg, "SELECT count(*) FROM llm.calls WHERE agent = '%s'", agent);
    s->paid_ids = count(pg, "SELECT count(DISTINCT request_id) FROM llm.calls WHERE agent = "
                            "'%s'", agent);
    s->resent = count(pg, "SELECT count(*) FROM llm.calls WHERE agent = '%s' AND resent", agent);
    /* outcome records: version 1, status 0 (4 bytes big-endian) */
    s->tool_ends_ok = count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND "
                                "kind = 'tool.end' AND substr(data, 1, 5) = '\\x0100000000'::bytea",
                            agent);
    PQfinish(pg);
    workspace(agent, s->files, sizeof s->files);
}

static void same_state(const char *agent, const state *want, int llm_exact)
{
    state got;
    state_of(agent, &got);
    if (strcmp(got.steps, want->steps))
        fail_msg("%s: step log %s, want %s", agent, got.steps, want->steps);
    if (strcmp(got.memory, want->memory))
        fail_msg("%s: memory %s, want %s", agent, got.memory, want->memory);
    if (strcmp(got.files, want->files))
        fail_msg("%s: workspace %s, want %s", agent, got.files, want->files);
    assert_int_equal(got.tool_ends_ok, want->tool_ends_ok);
    if (llm_exact) {
        /* no LLM call paid twice: one call per LLM step, each request id once */
        if (got.paid != TURNS || got.paid_ids != TURNS || got.resent)
            fail_msg("%s: %lld LLM calls (%lld request ids, %lld resent), want %d", agent,
                     got.paid, got.paid_ids, got.resent, TURNS);
    }
}

static int lines_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- R2 -------------------------------------------------------------------------------- */

#define AGENT_YAML(name, model, extra)                                                     \
    "  - name: " name "\n    program: aos-agent\n    model: " model "\n"                     \
    "    tools: [sh, write_file]\n    args: [--goal, \"take twenty steps\"]\n"               \
    "    restart: {policy: on-failure, intensity: 50/60, backoff_min_ms: 50}\n" extra

static state BASE;

static void an_uncrashed_run_is_the_reference(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT_YAML("base", "sim/s1", "")), AOS_OK);
    const char *n[] = {"base"};
    wait_finished(n, 1, 60000);
    state_of("base", &BASE);
    print_message("reference run: steps %s\n", BASE.steps);
    /* 20 LLM steps, 18 tool steps (turn 10 is todo_write, no tool) of 2 records each */
    assert_int_equal(lines_of(BASE.steps, "llm"), TURNS);
    assert_int_equal(lines_of(BASE.steps, "tool.start"), TURNS - 2);
    assert_int_equal(BASE.tool_ends_ok, TURNS - 2);
    assert_int_equal(BASE.paid, TURNS);
    assert_int_equal(lines_of(BASE.files, "ran "), 10);
    assert_non_null(strstr(BASE.files, "f18.txt=fact 18;"));
}

/* Agent k is killed -9 (by itself: SIGKILL, no cleanup) at turn k: odd k (and 20, the
 * answer, which calls no tool) right after the LLM step was recorded, before its tool ran;
 * the other even k after its tool step was recorded. */
static void kill9_of_the_agent_at_every_step(void **st)
{
    (void)st;
    size_t cap = 64 + CRASHES * 512;
    char *y = malloc(cap), name[CRASHES][16];
    const char *names[CRASHES];
    size_t k = (size_t)snprintf(y, cap, "agents:\n" AGENT_YAML("base", "sim/s1", ""));
    for (int i = 1; i <= CRASHES; i++) {
        snprintf(name[i - 1], sizeof name[0], "k%02d", i);
        names[i - 1] = name[i - 1];
        k += (size_t)snprintf(y + k, cap - k,
                              "  - name: %s\n    program: aos-agent\n    model: sim/s1\n"
                              "    tools: [sh, write_file]\n    args: [--goal, \"take twenty "
                              "steps\"]\n    restart: {policy: on-failure, intensity: 50/60, "
                              "backoff_min_ms: 50}\n    env: {TEST_CRASH_AT_TURN: \"%d%s\"}\n",
                              name[i - 1], i, i % 2 || i == TURNS ? "" : ":tool");
    }
    uint64_t t0 = aos_mono_ms();
    assert_int_equal(apply(y), AOS_OK);
    free(y);
    wait_finished(names, CRASHES, 240000);
    print_message("%d crashed runs finished in %.1f s\n", CRASHES,
                  (double)(aos_mono_ms() - t0) / 1000.0);
    for (int i = 0; i < CRASHES; i++)
        same_state(names[i], &BASE, 1);
    /* each crashed once: the kernel restarted each exactly once */
    static char out[1 << 16];
    const char *ps[] = {"--json", "ps", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, ps), 0);
    json_error_t je;
    json_t *d = json_loads(out, 0, &je);
    assert_non_null(d);
    size_t i;
    json_t *a;
    int seen = 0;
    json_array_foreach(json_object_get(d, "agents"), i, a) {
        const char *nm = json_string_value(json_object_get(a, "name"));
        if (nm && nm[0] == 'k') {
            seen++;
            assert_int_equal(json_integer_value(json_object_get(a, "restarts")), 1);
        }
    }
    json_decref(d);
    assert_int_equal(seen, CRASHES);
}

/* The agent's pid from aosctl ps (0: none now). */
static int agent_pid(const char *name)
{
    static char out[1 << 16];
    const char *ps[] = {"--json", "ps", NULL};
    if (h_aosctl(H, out, sizeof out, ps) != 0)
        return 0;
    json_error_t je;
    json_t *d = json_loads(out, 0, &je);
    size_t i;
    json_t *a;
    int pid = 0;
    json_array_foreach(json_object_get(d, "agents"), i, a) {
        const char *nm = json_string_value(json_object_get(a, "name"));
        if (nm && !strcmp(nm, name))
            pid = (int)json_integer_value(json_object_get(a, "pid"));
    }
    json_decref(d);
    return pid;
}

/* kill -9 from outside, at moments the test does not choose: mid-LLM call, mid-tool, mid-
 * record. Whatever was cut, no tool runs twice (a tool cut mid-run comes back INTERRUPTED,
 * is told to the model and not run again), every run ends, and no LLM call is paid twice
 * (one the agent died in runs on, and its reply answers the agent's re-issue). */
#define RANDOM_KILLS 5
static void kill9_of_the_agent_at_random_moments(void **st)
{
    (void)st;
    char y[4096], name[RANDOM_KILLS][16];
    const char *names[RANDOM_KILLS];
    size_t k = (size_t)snprintf(y, sizeof y, "agents:\n");
    for (int i = 0; i < RANDOM_KILLS; i++) {
        snprintf(name[i], sizeof name[i], "x%d", i);
        names[i] = name[i];
        k += (size_t)snprintf(y + k, sizeof y - k,
                              "  - name: %s\n    program: aos-agent\n    model: paced/p1\n"
                              "    tools: [sh, write_file]\n    args: [--goal, \"take twenty "
                              "steps\"]\n    restart: {policy: on-failure, intensity: 50/60, "
                              "backoff_min_ms: 50}\n", name[i]);
    }
    assert_int_equal(apply(y), AOS_OK);
    srand((unsigned)aos_mono_ms());
    uint64_t t0 = aos_mono_ms();
    unsigned at[RANDOM_KILLS];
    for (int i = 0; i < RANDOM_KILLS; i++)
        at[i] = 500u + (unsigned)(rand() % 5500);
    int killed[RANDOM_KILLS] = {0};
    for (int left = RANDOM_KILLS; left > 0;) {
        for (int i = 0; i < RANDOM_KILLS; i++) {
            if (killed[i] || aos_mono_ms() - t0 < at[i])
                continue;
            int pid = agent_pid(names[i]);
            if (pid > 0 && kill(pid, SIGKILL) == 0)
                print_message("%s: kill -9 at %u ms\n", names[i], at[i]);
            killed[i] = 1;
            left--;
        }
        usleep(20000);
    }
    wait_finished(names, RANDOM_KILLS, 120000);
    PGconn *pg = pg_open();
    for (int i = 0; i < RANDOM_KILLS; i++) {
        char files[8192], st2[32];
        workspace(names[i], files, sizeof files);
        for (int t = 1; t < TURNS; t += 2) {
            char line[32];
            snprintf(line, sizeof line, "ran %d\n", t);
            if (lines_of(files, line) > 1)
                fail_msg("%s: the tool of turn %d ran twice: %s", names[i], t, files);
        }
        run_state(pg, names[i], st2, sizeof st2);
        assert_string_equal(st2, "done");
        long long starts = count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND "
                                     "kind = 'tool.start'", names[i]);
        long long intr = count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND "
                                   "kind = 'tool.end' AND substr(data, 1, 5) = "
                                   "'\\x0100000010'::bytea", names[i]);
        long long paid = count(pg, "SELECT count(*) FROM llm.calls WHERE agent = '%s'", names[i]);
        long long llm = count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND "
                                  "kind = 'llm'", names[i]);
        print_message("%s: %lld LLM steps, %lld paid calls, %lld tool steps, %lld interrupted\n",
                      names[i], llm, paid, starts, intr);
        assert_int_equal(llm, TURNS);
        assert_int_equal(starts, TURNS - 2);
        assert_true(intr <= 1);          /* one kill: at most one tool cut */
        /* a call cut mid-way with its agent ran on in aos-llm, and the agent's re-issue of
         * that step got its reply: no call paid twice, none resent */
        assert_int_equal(paid, TURNS);
        assert_int_equal(count(pg, "SELECT count(*) FROM llm.calls WHERE agent = '%s' AND "
                                   "resent", names[i]), 0);
    }
    PQfinish(pg);
}

/* aosd killed -9 three times during one run (agents, servers and the run's calls in flight
 * go with it); the agent comes back with aosd and resumes. */
static void kill9_of_aosd_mid_run(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n" AGENT_YAML("phoenix", "paced/p1", "")), AOS_OK);
    PGconn *pg = pg_open();
    int kills = 0;
    const long long at[] = {6, 18, 34};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        uint64_t end = aos_mono_ms() + 60000;
        while (count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s'", "phoenix") <
               at[i]) {
            if (aos_mono_ms() > end)
                fail_msg("phoenix did not reach step %lld", at[i]);
            usleep(50000);
        }
        PQfinish(pg);
        char dir[256], why[512];
        h_kill9_keep(H, dir, sizeof dir);
        kills++;
        H = h_start_on(dir, NULL, 120000, why, sizeof why);
        if (!H)
            fail_msg("aosd again: %s", why);
        pg = pg_open();
    }
    PQfinish(pg);
    const char *n[] = {"phoenix"};
    wait_finished(n, 1, 120000);
    state want = BASE, got;
    state_of("phoenix", &got);
    /* the same model's replies with a latency: the same log and files; memory too */
    same_state("phoenix", &want, 0);
    /* an LLM call in flight when aos-llm died with aosd was sent again (resent): at most
     * one per kill */
    print_message("phoenix: %lld LLM calls for %d steps (%lld resent) over %d kills of aosd\n",
                  got.paid, TURNS, got.resent, kills);
    assert_true(got.paid_ids == TURNS);
    assert_true(got.paid <= TURNS + kills);
}

/* aos-tool killed -9 while the run's tool runs: the step comes back INTERRUPTED, the agent
 * tells the model, the run goes on; the tool is never run again. */
static void kill9_of_aos_tool_mid_tool_is_interrupted(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n"
                           "  - name: victim\n    program: aos-agent\n    model: slow/w1\n"
                           "    tools: [sh]\n    args: [--goal, \"run a slow tool\"]\n"),
                     AOS_OK);
    char marks[256];
    snprintf(marks, sizeof marks, "%s/workspaces/victim/marks", DATA_DIR);
    uint64_t end = aos_mono_ms() + 60000;
    while (access(marks, F_OK)) {
        if (aos_mono_ms() > end)
            fail_msg("the slow tool never began");
        usleep(50000);
    }
    pid_t tool = h_child(H, "tool", NULL);
    assert_true(tool > 0);
    assert_int_equal(kill(tool, SIGKILL), 0);
    const char *n[] = {"victim"};
    wait_finished(n, 1, 60000);
    PGconn *pg = pg_open();
    /* the outcome record's status is 16, INTERRUPTED */
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND kind = "
                               "'tool.end' AND substr(data, 1, 5) = '\\x0100000010'::bytea",
                           "victim"), 1);
    assert_int_equal(count(pg, "SELECT count(*) FROM memory.pages WHERE agent_id = '%s' AND "
                               "body LIKE 'interrupted:%%'", "victim"), 1);
    char st2[32];
    run_state(pg, "victim", st2, sizeof st2);
    assert_string_equal(st2, "done");
    PQfinish(pg);
    char files[1024];
    workspace("victim", files, sizeof files);
    assert_int_equal(lines_of(files, "began"), 1);   /* ran once, not again */
    assert_int_equal(lines_of(files, "ended"), 0);
}

/* The loop breaker and the step budget end a run failed, with the reason. */
static void the_loop_breaker_and_the_step_budget(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n"
                           "  - name: looper\n    program: aos-agent\n    model: loop/l1\n"
                           "    tools: [sh]\n    args: [--goal, \"loop\", --repeat, \"3\"]\n"
                           "  - name: frugal\n    program: aos-agent\n    model: sim/s1\n"
                           "    tools: [sh, write_file]\n    args: [--goal, \"take twenty "
                           "steps\"]\n    budgets: {steps: 5}\n"),
                     AOS_OK);
    const char *n[] = {"looper", "frugal"};
    wait_finished(n, 2, 60000);
    static char out[1 << 16];
    const char *l1[] = {"--json", "agent", "runs", "looper", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, l1), 0);
    assert_non_null(strstr(out, "\"state\":\"failed\""));
    assert_non_null(strstr(out, "loop: sh was called 3 times in a row"));
    const char *l2[] = {"--json", "agent", "runs", "frugal", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, l2), 0);
    assert_non_null(strstr(out, "\"state\":\"failed\""));
    assert_non_null(strstr(out, "the step budget of 5 steps is spent"));
    PGconn *pg = pg_open();
    /* the looper ran its tool twice: the third identical call was never made */
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND kind = "
                               "'tool.start'", "looper"), 2);
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND kind = "
                               "'llm'", "frugal"), 5);
    PQfinish(pg);
}

/* aos-agent's msg_recv is a durable step: the receiver killed -9 after the message was
 * recorded in its step log and before the ack gets the recorded message back on replay
 * (nothing received again) and its redelivery, if any, is dropped by id: the message is
 * handled once, the inbox is left empty. */
static void kill9_of_the_agent_between_recv_and_ack(void **st)
{
    (void)st;
    assert_int_equal(apply("agents:\n"
                           "  - name: mailer\n    program: aos-agent\n    model: mailer/m1\n"
                           "    args: [--goal, \"tell mailee\"]\n    talks_to: [mailee]\n"
                           "  - name: mailee\n    program: aos-agent\n    model: mailee/m1\n"
                           "    args: [--goal, \"read your mail\"]\n    talks_to: [mailer]\n"
                           "    restart: {policy: on-failure, intensity: 50/60, "
                           "backoff_min_ms: 50}\n"
                           "    env: {TEST_CRASH_AT_TURN: \"1:recv\"}\n"),
                     AOS_OK);
    const char *n[] = {"mailer", "mailee"};
    wait_finished(n, 2, 60000);
    PGconn *pg = pg_open();
    char s1[32], s2[32];
    run_state(pg, "mailer", s1, sizeof s1);
    run_state(pg, "mailee", s2, sizeof s2);
    /* Once (a fresh root's ASan run) the second receive was not "none": every step of
     * mailee's log is printed first, whichever check below fails, to tell a redelivery
     * from a script that went another way (its kinds, in order, and what each holds) */
    PGresult *rr = PQexec(pg, "SELECT step, kind, left(encode(data, 'escape'), 300) FROM "
                              "storage.step WHERE agent = 'mailee' ORDER BY step");
    for (int i = 0; PQresultStatus(rr) == PGRES_TUPLES_OK && i < PQntuples(rr); i++)
        print_message("mailee's step %s (%s): %s\n", PQgetvalue(rr, i, 0), PQgetvalue(rr, i, 1),
                      PQgetvalue(rr, i, 2));
    PQclear(rr);
    if (strcmp(s2, "done"))
        h_dump_log(H);
    assert_string_equal(s1, "done");
    assert_string_equal(s2, "done");   /* each turn's expectation held */
    /* two receives recorded: the message, then none; nothing recorded twice */
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND kind = "
                               "'msg.recv'", "mailee"), 2);
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND kind = "
                               "'llm'", "mailee"), 3);
    /* the first receive is the message (from the kernel's word of its sender), the second
     * none: its redelivery after the crash was not handed out again */
    assert_int_equal(count(pg, "SELECT count(*) FROM (SELECT data FROM storage.step WHERE agent "
                               "= '%s' AND kind = 'msg.recv' ORDER BY step LIMIT 1) s WHERE "
                               "encode(data, 'escape') LIKE '%%\"from\":\"mailer\"%%hello mailee, "
                               "the facts are ready%%'", "mailee"), 1);
    assert_int_equal(count(pg, "SELECT count(*) FROM (SELECT data FROM storage.step WHERE agent "
                               "= '%s' AND kind = 'msg.recv' ORDER BY step DESC LIMIT 1) s "
                               "WHERE encode(data, 'escape') LIKE '%%no message came within 3 "
                               "s%%'", "mailee"), 1);
    /* the model saw the message as the tool's result */
    assert_true(count(pg, "SELECT count(*) FROM memory.pages WHERE agent_id = '%s' AND body "
                          "LIKE 'message from mailer (msg): hello mailee%%'", "mailee") >= 1);
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.queue_msg WHERE agent = '%s'",
                           "mailee"), 0);
    PQfinish(pg);
    static char out[1 << 16];
    const char *lg[] = {"agent", "logs", "mailee", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, lg), 0);
    assert_non_null(strstr(out, "SIGKILL at turn 1 before the ack"));
    assert_non_null(strstr(out, "msg_recv (replayed): from mailer"));
    /* the first incarnation died before it printed its receipt; the second replayed it and
     * did not receive it again */
    assert_int_equal(lines_of(out, "msg_recv: from mailer"), 0);
}

/* A finished run is not run again by a restart, unless an operator asks for a new run
 * (kv aos.run.again, then aosctl agent restart): a fresh run, whose prompt starts at its
 * own first page (the sim's turns count from 1 again: the earlier run's turns in the
 * window would run the 2-turn script off its end). */
static void a_new_run_when_asked(void **st)
{
    (void)st;
    static char out[1 << 16];
    const char *rs[] = {"agent", "restart", "mailer", NULL};
    const char *runs[] = {"--json", "agent", "runs", "mailer", NULL};
    PGconn *pg = pg_open();
    long long llm0 = count(pg, "SELECT count(*) FROM storage.step WHERE agent = 'mailer' AND "
                               "kind = 'llm'");
    /* a restart alone: the finished run stays finished, nothing is asked again */
    assert_int_equal(h_aosctl(H, out, sizeof out, rs), 0);
    usleep(1500000);
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = 'mailer' AND "
                               "kind = 'llm'"), llm0);
    const char *put[] = {"kv", "put", "mailer", "aos.run.again", "1", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, put), 0);
    assert_int_equal(h_aosctl(H, out, sizeof out, rs), 0);
    uint64_t end = aos_mono_ms() + 30000;
    while (count(pg, "SELECT count(*) FROM storage.step WHERE agent = 'mailer' AND kind = "
                     "'llm'") < llm0 + 2) {
        if (aos_mono_ms() > end) {
            h_dump_log(H);
            fail_msg("mailer: no second run");
        }
        usleep(100000);
    }
    const char *n[] = {"mailer"};
    wait_finished(n, 1, 30000);
    char s1[32];
    run_state(pg, "mailer", s1, sizeof s1);
    assert_string_equal(s1, "done");
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.step WHERE agent = 'mailer' AND "
                               "kind = 'llm'"), llm0 + 2);
    /* the ask was used up: another restart does not start a third run */
    assert_int_equal(count(pg, "SELECT count(*) FROM storage.kv WHERE agent = 'mailer' AND "
                               "key = convert_to('aos.run.again', 'UTF8')"), 0);
    PQfinish(pg);
    assert_int_equal(h_aosctl(H, out, sizeof out, runs), 0);
    json_error_t je;
    json_t *d = json_loads(out, 0, &je);
    assert_non_null(d);
    json_t *arr = json_is_array(d) ? d : json_object_get(d, "runs");
    assert_int_equal(json_array_size(arr), 2);
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r)
        assert_string_equal(json_string_value(json_object_get(r, "state")), "done");
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_uncrashed_run_is_the_reference),
        cmocka_unit_test(kill9_of_the_agent_at_every_step),
        cmocka_unit_test(kill9_of_the_agent_at_random_moments),
        cmocka_unit_test(kill9_of_aosd_mid_run),
        cmocka_unit_test(kill9_of_aos_tool_mid_tool_is_interrupted),
        cmocka_unit_test(the_loop_breaker_and_the_step_budget),
        cmocka_unit_test(kill9_of_the_agent_between_recv_and_ack),
        cmocka_unit_test(a_new_run_when_asked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
