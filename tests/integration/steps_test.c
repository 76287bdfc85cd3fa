/* libaos durable steps against a real aosd (aos-llm on sim, aos-tool, aos-storage): a run
 * replayed after its process went away pays no LLM call and runs no tool again. */
#include <pthread.h>
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
#include <jansson.h>
#include <libpq-fe.h>

#include "aos/aos.h"
#include "aos/step.h"
#include "aos/storage.h"
#include "harness.h"
#include "llm.pb-c.h"
#include "storage_util.h"
#include "tool.pb-c.h"
#include "aos.pb-c.h"

static h_aosd *H;
static char DATA_DIR[64];

static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-steps-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    H = h_start_yaml(DATA_DIR, "restart_intensity: 100/60\n"
                     "run_retention_s: 0\n"
                     /* only aosctl's --prune, at the case that checks it (retain_test
                      * covers aosd's own passes) */
                     "run_prune_interval_s: 0\n"
                     "llm:\n"
                     "  default_model: sim/s1\n"
                     "  providers:\n"
                     "    - name: sim\n"
                     "      kind: sim\n"
                     "      models: [{name: s1, price: {input: 1, output: 2}}]\n");
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

static ProtobufCBinaryData txt(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

typedef struct chat { const char *text; int builds; } chat;

static aos_err build_chat(void *arg, uint8_t **buf, size_t *len)
{
    chat *c = arg;
    c->builds++;
    Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT, *parts[1] = {&part};
    Aos__Llm__Message msg = AOS__LLM__MESSAGE__INIT, *msgs[1] = {&msg};
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = txt(c->text);
    msg.role = AOS__LLM__ROLE__USER;
    msg.n_content = 1;
    msg.content = parts;
    q.model = txt("sim/s1");
    q.n_messages = 1;
    q.messages = msgs;
    q.max_tokens = 32;
    *len = aos__llm__chat_request__get_packed_size(&q);
    *buf = malloc(*len);
    if (!*buf)
        return AOS_ERR_NOMEM;
    aos__llm__chat_request__pack(&q, *buf);
    return AOS_OK;
}

static uint8_t *tool_req(const char *agent, const char *cmd, size_t *len)
{
    char args[512];
    snprintf(args, sizeof args, "{\"command\":\"%s\"}", cmd);
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    q.agent = txt(agent);
    q.tool = txt("sh");
    q.args = txt(args);
    *len = aos__tool__run_request__get_packed_size(&q);
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    aos__tool__run_request__pack(&q, b);
    return b;
}

static long long paid_calls(const char *agent)
{
    PGconn *pg = su_admin_connect(H);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM llm.calls WHERE agent = '%s'", agent);
    long long n = su_count(pg, sql);
    PQfinish(pg);
    return n;
}

static long long log_rows(const char *agent, const char *kind)
{
    PGconn *pg = su_admin_connect(H);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM storage.step WHERE agent = '%s' AND "
             "kind = '%s'", agent, kind);
    long long n = su_count(pg, sql);
    PQfinish(pg);
    return n;
}

static int64_t tool_stat(const char *name)
{
    aos_reply r;
    int64_t v = -1;
    if (aos_call(h_conn(H), NULL, "tool.stats", NULL, 0, &r) == AOS_OK) {
        Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
        for (size_t i = 0; s && i < s->n_stats; i++)
            if (!strcmp(s->stats[i]->name, name))
                v = s->stats[i]->value;
        if (s)
            aos__stats_reply__free_unpacked(s, NULL);
    }
    aos_reply_clear(&r);
    return v;
}

static void open_ok(const char *agent, int fresh, aos_run **r, int *resumed, char *why,
                    size_t whylen)
{
    aos_err e = aos_run_open(h_conn(H), agent, fresh, r, resumed, why, whylen);
    if (e)
        fail_msg("aos_run_open(%s): %s: %s", agent, aos_err_name(e), why);
}

static void replayed_steps_pay_and_run_nothing(void **st)
{
    (void)st;
    const char *A = "stepper";
    char why[1024];
    aos_run *r;
    int resumed = -1;
    open_ok(A, 0, &r, &resumed, why, sizeof why);
    assert_int_equal(resumed, 0);
    char id[AOS_RUN_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", aos_run_id(r));
    int64_t e0 = tool_stat("executions");
    chat c = {"hello there", 0};
    aos_reply a1, t1;
    assert_int_equal(aos_step_llm(r, build_chat, &c, 20000, &a1), AOS_OK);
    size_t tl;
    uint8_t *tq = tool_req(A, "echo ran >> count; cat count | wc -l", &tl);
    assert_int_equal(aos_step_tool(r, tq, tl, 20000, &t1), AOS_OK);
    assert_int_equal(paid_calls(A), 1);
    assert_int_equal(tool_stat("executions"), e0 + 1);
    /* the process "dies": the run is dropped unfinished */
    aos_run_close(r);

    open_ok(A, 0, &r, &resumed, why, sizeof why);
    assert_int_equal(resumed, 1);
    assert_string_equal(aos_run_id(r), id);
    assert_true(aos_run_replaying(r));
    aos_reply a2, t2;
    assert_int_equal(aos_step_llm(r, build_chat, &c, 20000, &a2), AOS_OK);
    assert_int_equal(c.builds, 1);   /* replayed: no request was even built */
    assert_int_equal(a2.payload_len, a1.payload_len);
    assert_memory_equal(a2.payload, a1.payload, a1.payload_len);
    assert_int_equal(aos_step_tool(r, tq, tl, 20000, &t2), AOS_OK);
    assert_int_equal(t2.payload_len, t1.payload_len);
    assert_memory_equal(t2.payload, t1.payload, t1.payload_len);
    assert_false(aos_run_replaying(r));
    assert_int_equal(paid_calls(A), 1);
    assert_int_equal(tool_stat("executions"), e0 + 1);
    /* the run goes on live */
    aos_reply a3;
    chat c2 = {"and now?", 0};
    assert_int_equal(aos_step_llm(r, build_chat, &c2, 20000, &a3), AOS_OK);
    assert_int_equal(paid_calls(A), 2);
    assert_int_equal(aos_run_position(r), 4);
    assert_int_equal(aos_run_finish(r, AOS_RUN_DONE, "said hello", why, sizeof why), AOS_OK);
    aos_run_close(r);
    aos_reply_clear(&a1), aos_reply_clear(&a2), aos_reply_clear(&a3);
    aos_reply_clear(&t1), aos_reply_clear(&t2);

    /* started again: the run is finished, its steps refuse */
    open_ok(A, 0, &r, &resumed, why, sizeof why);
    assert_int_equal(aos_run_state_of(r), AOS_RUN_DONE);
    assert_string_equal(aos_run_id(r), id);
    assert_int_equal(aos_step_llm(r, build_chat, &c, 20000, &a1), AOS_ERR_CONFLICT);
    aos_reply_clear(&a1);
    aos_run_close(r);
    /* a fresh open is a new run */
    open_ok(A, 1, &r, &resumed, why, sizeof why);
    assert_int_equal(resumed, 0);
    assert_string_not_equal(aos_run_id(r), id);
    aos_run_close(r);
    free(tq);
    /* the record says so */
    uint8_t *v;
    size_t n;
    char key[128];
    snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%s", id);
    aos_call_opts o = {.agent_id = A};
    assert_int_equal(aos_kv_get(h_conn(H), &o, key, &v, &n, NULL, why, sizeof why), AOS_OK);
    assert_non_null(strstr((char *)v, "\"state\":\"done\""));
    assert_non_null(strstr((char *)v, "\"steps\":4,"));
    assert_non_null(strstr((char *)v, "said hello"));
    free(v);
}

/* The agent died after aos-llm answered but before the reply was recorded: its retry under
 * the same (derived) request id is answered from aos-llm's books, not paid again. */
static void a_reply_lost_before_its_record_is_not_paid_twice(void **st)
{
    (void)st;
    const char *A = "lostreply";
    char why[1024];
    aos_run *r;
    open_ok(A, 0, &r, NULL, why, sizeof why);
    uint8_t rid[AOS_ID_LEN];
    aos_step_request_id(aos_run_id(r), 1, 0, rid);
    chat c = {"the first question", 0};
    uint8_t *buf;
    size_t len;
    assert_int_equal(build_chat(&c, &buf, &len), AOS_OK);
    aos_call_opts o = {.request_id = rid, .agent_id = A, .timeout_ms = 20000};
    aos_reply direct, step;
    assert_int_equal(aos_call(h_conn(H), &o, "llm.chat", buf, len, &direct), AOS_OK);
    free(buf);
    assert_int_equal(paid_calls(A), 1);
    aos_err e = aos_step_llm(r, build_chat, &c, 20000, &step);
    if (e)
        fail_msg("the step: %s: %s", aos_err_name(e), step.error);
    assert_int_equal(paid_calls(A), 1);
    assert_int_equal(step.payload_len, direct.payload_len);
    assert_memory_equal(step.payload, direct.payload, direct.payload_len);
    assert_int_equal(log_rows(A, "llm"), 1);
    aos_reply_clear(&direct);
    aos_reply_clear(&step);
    aos_run_close(r);
}

typedef struct killer { unsigned after_ms; pid_t killed; } killer;

static void *kill_tool(void *arg)
{
    killer *k = arg;
    usleep(k->after_ms * 1000u);
    k->killed = h_child(H, "tool", NULL);
    if (k->killed > 0)
        kill(k->killed, SIGKILL);
    return NULL;
}

/* aos-tool killed -9 while the step's tool runs: the step comes back INTERRUPTED, recorded
 * so, and is never run again (not now, not on a replay). */
static void a_tool_killed_mid_run_is_interrupted(void **st)
{
    (void)st;
    const char *A = "interrupted";
    char why[1024];
    aos_run *r;
    open_ok(A, 0, &r, NULL, why, sizeof why);
    size_t tl;
    uint8_t *tq = tool_req(A, "echo began >> marks; sleep 3; echo ended >> marks", &tl);
    killer k = {800, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, kill_tool, &k), 0);
    aos_reply t1;
    aos_err e = aos_step_tool(r, tq, tl, 60000, &t1);
    pthread_join(th, NULL);
    assert_true(k.killed > 0);
    if (e != AOS_ERR_INTERRUPTED)
        fail_msg("the step: %s: %s", aos_err_name(e), t1.error);
    assert_non_null(strstr(t1.error, "not run again"));
    aos_reply_clear(&t1);
    assert_true(h_wait_running(H, "tool", k.killed, 30000) > 0);
    aos_run_close(r);
    /* replayed: interrupted again, from the log */
    open_ok(A, 0, &r, NULL, why, sizeof why);
    int64_t e0 = tool_stat("executions");
    assert_int_equal(aos_step_tool(r, tq, tl, 20000, &t1), AOS_ERR_INTERRUPTED);
    aos_reply_clear(&t1);
    assert_int_equal(tool_stat("executions"), e0);
    assert_int_equal(log_rows(A, "tool.start"), 1);
    assert_int_equal(log_rows(A, "tool.end"), 1);
    assert_int_equal(aos_run_finish(r, AOS_RUN_INTERRUPTED, "the tool was interrupted", why,
                                    sizeof why), AOS_OK);
    aos_run_close(r);
    free(tq);
}

/* aosctl agent runs: the runs of the cases above with their states and steps; --prune
 * removes the finished ones (retention 0 here), never the current one. */
static void aosctl_lists_and_prunes_runs(void **st)
{
    (void)st;
    static char out[1 << 16];
    const char *ls[] = {"--json", "agent", "runs", "stepper", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, ls), 0);
    json_error_t je;
    json_t *d = json_loads(out, 0, &je);
    if (!d)
        fail_msg("not JSON: %s: %s", je.text, out);
    json_t *runs = json_object_get(d, "runs");
    assert_int_equal(json_array_size(runs), 2);
    json_t *first = json_array_get(runs, 0), *second = json_array_get(runs, 1);
    assert_string_equal(json_string_value(json_object_get(first, "state")), "done");
    assert_int_equal(json_integer_value(json_object_get(first, "steps")), 4);
    assert_false(json_is_true(json_object_get(first, "current")));
    assert_string_equal(json_string_value(json_object_get(second, "state")), "running");
    assert_true(json_is_true(json_object_get(second, "current")));
    char done_run[64];
    snprintf(done_run, sizeof done_run, "%s", json_string_value(json_object_get(first, "run")));
    json_decref(d);
    const char *ls2[] = {"--json", "agent", "runs", "interrupted", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, ls2), 0);
    assert_non_null(strstr(out, "\"state\":\"interrupted\""));
    assert_non_null(strstr(out, "\"current\":true"));

    const char *pr[] = {"--json", "agent", "runs", "stepper", "--prune", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, pr), 0);
    d = json_loads(out, 0, &je);
    assert_non_null(d);
    assert_int_equal(json_integer_value(json_object_get(d, "pruned")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "retention_s")), 0);
    json_decref(d);
    PGconn *pg = su_admin_connect(H);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM storage.step WHERE agent = 'stepper' AND "
             "run = '%s'", done_run);
    assert_int_equal(su_count(pg, sql), 0);
    PQfinish(pg);
    assert_int_equal(h_aosctl(H, out, sizeof out, ls), 0);
    d = json_loads(out, 0, &je);
    assert_int_equal(json_array_size(json_object_get(d, "runs")), 1);
    json_decref(d);
    /* for people: a table */
    const char *human[] = {"agent", "runs", "interrupted", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, human), 0);
    assert_non_null(strstr(out, "interrupted"));
    assert_non_null(strstr(out, "(current)"));
    /* stepper's current run stays (it is unfinished); "interrupted" is no applied agent
     * and all of it is finished and expired: it goes whole, its current run, the pointer
     * to it and the workspace its tool run made */
    const char *pr2[] = {"--json", "agent", "runs", "interrupted", "--prune", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, pr2), 0);
    assert_non_null(strstr(out, "\"pruned\":1"));
    assert_non_null(strstr(out, "\"workspace_removed\":true"));
    assert_int_equal(h_aosctl(H, out, sizeof out, human), 0);
    assert_non_null(strstr(out, "interrupted has no runs"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replayed_steps_pay_and_run_nothing),
        cmocka_unit_test(a_reply_lost_before_its_record_is_not_paid_twice),
        cmocka_unit_test(a_tool_killed_mid_run_is_interrupted),
        cmocka_unit_test(aosctl_lists_and_prunes_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
