/* The demo of tools/demo (three aos-agent runs cooperating through tools, shared memory
 * collections and messages) runs to its end on the sim, while aos-llm, aos-tool and
 * aos-storage are each killed -9 once, and on local servers of the OpenAI wire format. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "harness.h"
#include "storage_util.h"

static h_aosd *H;
static char DATA_DIR[64];

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *b = malloc(1 << 20);
    size_t n = b ? fread(b, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (b)
        b[n] = 0;
    if (len)
        *len = n;
    return b;
}

/* tools/demo/aos.yaml with its scripts by absolute path, as tools/run.sh writes it. */
static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-demo-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char *y = slurp(AOS_SOURCE_DIR "/tools/demo/aos.yaml", NULL);
    assert_non_null(y);
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("restart_intensity: 100/60\n", f);
    for (char *p = y; *p;) {
        char *q = strstr(p, "script: ");
        if (!q) {
            fputs(p, f);
            break;
        }
        q += strlen("script: ");
        fwrite(p, 1, (size_t)(q - p), f);
        fputs(AOS_SOURCE_DIR "/tools/demo/", f);
        p = q;
    }
    fclose(f);
    free(y);
    char why[1024];
    H = h_start_on(DATA_DIR, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd on %s: %s", DATA_DIR, why);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    if (H)
        h_stop(H);
    return 0;
}

static int apply_file(const char *file)
{
    size_t len;
    char *yaml = slurp(file, &len);
    assert_non_null(yaml);
    int st = h_apply(H, yaml, len, "deploy.yaml", 1);
    free(yaml);
    return st;
}

static long long count(const char *sql)
{
    PGconn *pg = su_admin_connect(H);
    long long n = su_count(pg, sql);
    PQfinish(pg);
    return n;
}

/* Runs of the three agents not yet finished (a missing record counts as unfinished). */
static long long unfinished(void)
{
    return 3 - count("SELECT count(*) FROM storage.kv c JOIN storage.kv r ON r.agent = c.agent "
                     "AND r.key = convert_to('aos.run/' || convert_from(c.value, 'UTF8'), "
                     "'UTF8') WHERE c.agent IN ('gatherer', 'writer', 'reviewer') AND c.key = "
                     "convert_to('aos.run.current', 'UTF8') AND convert_from(r.value, "
                     "'UTF8')::json->>'state' = 'done'");
}

static void wait_done(unsigned ms)
{
    uint64_t end = aos_mono_ms() + ms;
    for (;;) {
        long long n = -1;
        /* aos-storage or postgres may be restarting: a failed count is not the answer */
        PGconn *pg = su_admin_connect(H);
        if (PQstatus(pg) == CONNECTION_OK)
            n = unfinished();
        PQfinish(pg);
        if (n == 0)
            return;
        if (aos_mono_ms() > end) {
            h_dump_log(H);
            fail_msg("%lld of the demo's runs are not done after %u ms", n, ms);
        }
        usleep(200000);
    }
}

/* The agent's n-th msg.recv step (1, 2, ...) holds a message from `from` whose text has
 * `text` (the step log's record of what it received). */
static int received(const char *agent, int n, const char *from, const char *text)
{
    char sql[768];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM (SELECT data FROM storage.step WHERE agent "
             "= '%s' AND kind = 'msg.recv' ORDER BY step OFFSET %d LIMIT 1) s WHERE "
             "encode(data, 'escape') LIKE '%%\"from\":\"%s\"%%' AND encode(data, 'escape') "
             "LIKE '%%%s%%'", agent, n - 1, from, text);
    return count(sql) == 1;
}

/* The messages: the gatherer's word to the writer, the report back and forth once, each
 * received once (one msg.recv step each) and acked (the inboxes are empty). */
static void check_mail(void)
{
    assert_true(count("SELECT count(*) FROM storage.step WHERE agent = 'writer' AND kind = "
                      "'msg.recv'") == 3);
    assert_true(count("SELECT count(*) FROM storage.step WHERE agent = 'reviewer' AND kind = "
                      "'msg.recv'") == 2);
    assert_true(received("writer", 1, "gatherer", "facts ready"));
    assert_true(received("reviewer", 1, "writer", "report.md v1 is ready"));
    assert_true(received("writer", 2, "reviewer", "add a conclusion"));
    assert_true(received("reviewer", 2, "writer", "report.md v2 has a conclusion"));
    assert_true(received("writer", 3, "reviewer", "report.md v2 approved"));
    assert_true(count("SELECT count(*) FROM storage.queue_msg WHERE agent IN ('gatherer', "
                      "'writer', 'reviewer')") == 0);
}

static void check_outputs(void)
{
    char p[256];
    snprintf(p, sizeof p, "%s/workspaces/writer/report.md", DATA_DIR);
    char *rep = slurp(p, NULL);
    assert_non_null(rep);
    assert_non_null(strstr(rep, "# aos in four facts"));
    assert_non_null(strstr(rep, "## Conclusion"));   /* the revision the reviewer asked for */
    free(rep);
    snprintf(p, sizeof p, "%s/workspaces/reviewer/review.md", DATA_DIR);
    char *rev = slurp(p, NULL);
    assert_non_null(rev);
    assert_non_null(strstr(rev, "Approved."));
    free(rev);
    /* the shared collections were read by the others: facts by the writer and the
     * reviewer, reports by the reviewer (their searches are durable steps) */
    assert_true(count("SELECT count(*) FROM storage.step WHERE agent = 'writer' AND kind = "
                      "'memory.search'") == 1);
    assert_true(count("SELECT count(*) FROM storage.step WHERE agent = 'reviewer' AND kind = "
                      "'memory.search'") == 3);
    assert_true(count("SELECT count(*) FROM memory.chunks WHERE agent_id = 'gatherer'") >= 1);
    check_mail();
}

static void the_demo_runs_to_its_end(void **st)
{
    (void)st;
    uint64_t t0 = aos_mono_ms();
    assert_int_equal(apply_file(AOS_SOURCE_DIR "/tools/demo/deploy.yaml"), AOS_OK);
    wait_done(120000);
    print_message("the demo: %.1f s\n", (double)(aos_mono_ms() - t0) / 1000.0);
    check_outputs();
}

static void kill9(const char *server)
{
    pid_t p = h_child(H, server, NULL);
    assert_true(p > 0);
    assert_int_equal(kill(p, SIGKILL), 0);
    assert_true(h_wait_running(H, server, p, 30000) > 0);
}

/* The same again on a fresh aosd (the first demo's runs are finished on the first one),
 * with a kill -9 of aos-llm, aos-tool and aos-storage while it runs: it still ends, with
 * its report and review (a tool killed mid-run may come back interrupted: the agents go
 * on, as their scripts do). */
static void the_demo_survives_kill9_of_llm_tool_and_storage(void **st)
{
    (void)st;
    h_aosd *old = H;
    H = NULL;   /* a failed stop fails the test: teardown must not stop it again */
    h_stop(old);
    setup(NULL);
    uint64_t t0 = aos_mono_ms();
    assert_int_equal(apply_file(AOS_SOURCE_DIR "/tools/demo/deploy.yaml"), AOS_OK);
    usleep(400000);
    kill9("llm");
    usleep(500000);
    kill9("storage");
    usleep(500000);
    kill9("tool");
    wait_done(120000);
    print_message("the demo with three kill -9s: %.1f s, %lld tool steps interrupted\n",
                  (double)(aos_mono_ms() - t0) / 1000.0,
                  count("SELECT count(*) FROM storage.step WHERE kind = 'tool.end' AND "
                        "substr(data, 1, 5) = '\\x0100000010'::bytea"));
    char p[256];
    snprintf(p, sizeof p, "%s/workspaces/writer/report.md", DATA_DIR);
    char *rep = slurp(p, NULL);
    assert_non_null(rep);
    assert_non_null(strstr(rep, "# aos in four facts"));
    free(rep);
    snprintf(p, sizeof p, "%s/workspaces/reviewer/review.md", DATA_DIR);
    char *rev = slurp(p, NULL);
    assert_non_null(rev);
    free(rev);
    check_mail();   /* no message lost or handled twice across the kill -9s */
}

/* The same agents on a model behind the OpenAI wire format: each demo provider is an
 * `openai` provider pointed at a local aos-test-llm-endpoint serving that agent's script
 * (streamed SSE, tool calls in argument fragments), as a real endpoint would be used. The
 * demo ends as it does on the sim, and each endpoint's log shows the calls it served. */
static void the_demo_runs_on_the_openai_wire(void **st)
{
    (void)st;
    h_aosd *old = H;
    H = NULL;
    h_stop(old);
    static const char *const who[] = {"gatherer", "writer", "reviewer"};
    h_endpoint ep[3];
    char logs[3][96];
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-demo-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("restart_intensity: 100/60\nllm:\n  default_model: sim/sim-1\n  providers:\n"
          "    - name: sim\n      kind: sim\n"
          "      models: [{name: sim-1}, {name: sim-embed, embedding: true}]\n", f);
    for (int i = 0; i < 3; i++) {
        char script[256];
        snprintf(script, sizeof script, AOS_SOURCE_DIR "/tools/demo/%s.yaml", who[i]);
        snprintf(logs[i], sizeof logs[i], "%s/ep-%s.log", DATA_DIR, who[i]);
        const char *args[] = {"--script", script, "--log", logs[i], "--latency-ms", "50", NULL};
        assert_int_equal(h_endpoint_start(&ep[i], args), 0);
        fprintf(f, "    - name: demo-%s\n      kind: openai\n"
                "      base_url: http://127.0.0.1:%d/v1\n      max_retries: 0\n"
                "      models: [{name: sim-1, price: {input: 0.15, output: 0.60}}]\n",
                who[i], ep[i].port);
    }
    fclose(f);
    char why[1024];
    H = h_start_on(DATA_DIR, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd on %s: %s", DATA_DIR, why);
    uint64_t t0 = aos_mono_ms();
    assert_int_equal(apply_file(AOS_SOURCE_DIR "/tools/demo/deploy.yaml"), AOS_OK);
    wait_done(120000);
    print_message("the demo on the OpenAI wire: %.1f s\n",
                  (double)(aos_mono_ms() - t0) / 1000.0);
    check_outputs();
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        char *l = slurp(logs[i], &n);
        assert_non_null(l);
        long lines = 0;
        for (size_t k = 0; k < n; k++)
            lines += l[k] == '\n';
        print_message("endpoint of %s: %ld requests\n", who[i], lines);
        assert_true(lines >= 3);
        assert_null(strstr(l, "past the script")); /* no turn asked for twice or skipped */
        free(l);
        h_endpoint_stop(&ep[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_demo_runs_to_its_end),
        cmocka_unit_test(the_demo_survives_kill9_of_llm_tool_and_storage),
        cmocka_unit_test(the_demo_runs_on_the_openai_wire),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
