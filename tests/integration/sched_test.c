/* The LLM scheduler end to end: a real aosd and aos-llm's sim provider with limits — the
 * limits held (the sim sends no 429), budgets and deadlines, callers that go, kill -9. */
#include <pthread.h>
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

#include "aos.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "harness.h"
#include "llm.pb-c.h"

static h_aosd *H;
static char DATA_DIR[64];

#define LATENCY_MS 200
#define CONC 3

/* provider "sim": 3 at once, 300 requests/min, answers after 200 ms; "slow": one at a
 * time, 2 s; "cheap": a daily spend cap of $0.001. */
static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-sched-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "restart_intensity: 100/60\n"
             "llm:\n"
             "  default_model: sim/s1\n"
             "  providers:\n"
             "    - name: sim\n"
             "      kind: sim\n"
             "      sim: {latency_ms: %d}\n"
             "      limits: {max_concurrency: %d, requests_per_min: 300, tokens_per_min: 200000}\n"
             "      models: [{name: s1, price: {input: 1, output: 2}}]\n"
             "    - name: slow\n"
             "      kind: sim\n"
             "      sim: {latency_ms: 2000}\n"
             "      limits: {max_concurrency: 1}\n"
             "      models: [{name: w1}]\n"
             "    - name: cheap\n"
             "      kind: sim\n"
             "      limits: {daily_spend_usd: 0.001}\n"
             "      models: [{name: c1, price: {input: 1, output: 1}}]\n",
             LATENCY_MS, CONC);
    H = h_start_yaml(DATA_DIR, yaml);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

static ProtobufCBinaryData bs(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* One user message to model, as agent; the status, and the reply's text in out. */
static aos_err chat(aos_conn *cn, const char *agent, const char *model, const char *text,
                    uint32_t max_tokens, uint32_t timeout_ms, char *err, size_t errcap)
{
    Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT, *pp = &part;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = bs(text);
    Aos__Llm__Message m = AOS__LLM__MESSAGE__INIT, *mp = &m;
    m.role = AOS__LLM__ROLE__USER;
    m.content = &pp;
    m.n_content = 1;
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = bs(model);
    q.messages = &mp;
    q.n_messages = 1;
    q.max_tokens = max_tokens;
    size_t len = aos__llm__chat_request__get_packed_size(&q);
    uint8_t buf[4096];
    assert_true(len <= sizeof buf);
    aos__llm__chat_request__pack(&q, buf);
    aos_call_opts o = {.agent_id = agent, .timeout_ms = timeout_ms};
    aos_reply r;
    aos_err rc = aos_call(cn ? cn : h_conn(H), &o, "llm.chat", buf, len, &r);
    if (err) /* the message, cut to the caller's buffer */
        snprintf(err, errcap, "%.*s", (int)(errcap ? errcap - 1 : 0), r.error);
    aos_reply_clear(&r);
    return rc;
}

/* The same with a request id of the caller's; the reply, unpacked (caller frees). */
static Aos__Llm__ChatReply *chat_rid(const char *agent, const uint8_t rid[AOS_ID_LEN],
                                     const char *text)
{
    Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT, *pp = &part;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = bs(text);
    Aos__Llm__Message m = AOS__LLM__MESSAGE__INIT, *mp = &m;
    m.role = AOS__LLM__ROLE__USER;
    m.content = &pp;
    m.n_content = 1;
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = bs("sim/s1");
    q.messages = &mp;
    q.n_messages = 1;
    q.max_tokens = 8;
    uint8_t buf[1024];
    size_t len = aos__llm__chat_request__pack(&q, buf);
    aos_call_opts o = {.agent_id = agent, .request_id = rid, .timeout_ms = 20000};
    aos_reply r;
    aos_err rc = aos_call(h_conn(H), &o, "llm.chat", buf, len, &r);
    if (rc != AOS_OK)
        fail_msg("llm.chat: %s: %s", aos_err_name(rc), r.error);
    Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(cr);
    return cr;
}

static Aos__SchedReply *sched_state(void)
{
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(aos_call(h_conn(H), &o, "kernel.sched", NULL, 0, &r), AOS_OK);
    Aos__SchedReply *s = aos__sched_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(s);
    return s;
}

static const Aos__SchedProvider *prov(const Aos__SchedReply *s, const char *name)
{
    for (size_t i = 0; i < s->n_providers; i++)
        if (!strcmp(s->providers[i]->name, name))
            return s->providers[i];
    fail_msg("no provider %s in kernel.sched", name);
    return NULL;
}

/* A figure of aos-llm's stats ("provider.sim.sim_429s"). */
static int64_t llm_stat(const char *name)
{
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 5000};
    assert_int_equal(aos_call(h_conn(H), &o, "llm.stats", NULL, 0, &r), AOS_OK);
    Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(s);
    int64_t v = -1;
    for (size_t i = 0; i < s->n_stats; i++)
        if (!strcmp(s->stats[i]->name, name))
            v = s->stats[i]->value;
    aos__stats_reply__free_unpacked(s, NULL);
    return v;
}

static void sched_set(const char *agent, double weight, uint64_t token_budget, aos_err want)
{
    Aos__SchedSetRequest q = AOS__SCHED_SET_REQUEST__INIT;
    q.agent = (char *)agent;
    q.has_weight = weight > 0;
    q.weight = weight;
    q.has_token_budget = 1;
    q.token_budget = token_budget;
    q.priority = "";
    uint8_t buf[512];
    size_t len = aos__sched_set_request__pack(&q, buf);
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 5000};
    aos_err rc = aos_call(h_conn(H), &o, "kernel.sched.set", buf, len, &r);
    if (rc != want)
        fail_msg("kernel.sched.set %s: %s (%s)", agent, aos_err_name(rc), r.error);
    aos_reply_clear(&r);
}

/* ---- many callers inside the limits ----------------------------------------------------- */

typedef struct caller {
    int i;
    aos_err rc;
    char err[256];
    uint64_t ms;
} caller;

static void *call_thread(void *arg)
{
    caller *c = arg;
    char agent[32], text[64];
    snprintf(agent, sizeof agent, "ag-%d", c->i % 4);
    snprintf(text, sizeof text, "question %d", c->i);
    uint64_t t0 = aos_mono_ms();
    c->rc = chat(NULL, agent, "sim/s1", text, 8, 60000, c->err, sizeof c->err);
    c->ms = aos_mono_ms() - t0;
    return NULL;
}

static void run_callers(caller *cs, int n)
{
    pthread_t th[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        cs[i].i = i;
        assert_int_equal(pthread_create(&th[i], NULL, call_thread, &cs[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* 30 callers at once against 3 at a time: all answered, the sim never had to refuse, and
 * the whole took the ten rounds the concurrency allows. */
static void the_limits_hold_end_to_end(void **st)
{
    (void)st;
    int64_t s429 = llm_stat("provider.sim.sim_429s");
    caller cs[30] = {0};
    uint64_t t0 = aos_mono_ms();
    run_callers(cs, 30);
    uint64_t wall = aos_mono_ms() - t0;
    for (int i = 0; i < 30; i++)
        if (cs[i].rc != AOS_OK)
            fail_msg("caller %d: %s: %s", i, aos_err_name(cs[i].rc), cs[i].err);
    int64_t s429b = llm_stat("provider.sim.sim_429s");
    Aos__SchedReply *s = sched_state();
    const Aos__SchedProvider *p = prov(s, "sim");
    print_message("30 calls, 3 at once: %llu ms; sim 429s %lld; admitted %llu, 429s seen %llu\n",
                  (unsigned long long)wall, (long long)(s429b - s429),
                  (unsigned long long)p->admitted, (unsigned long long)p->rate_limited);
    assert_int_equal(s429b - s429, 0);
    assert_int_equal(p->rate_limited, 0);
    assert_true(p->admitted >= 30);
    assert_int_equal(p->in_flight, 0);
    assert_true(wall >= 10 * LATENCY_MS - 50); /* never more than 3 at the provider */
    int agents = 0;
    for (size_t i = 0; i < s->n_agents; i++)
        if (!strncmp(s->agents[i]->agent, "ag-", 3)) {
            agents++;
            assert_int_equal(s->agents[i]->requests, 30 / 4 + (i < 30 % 4));
            assert_true(s->agents[i]->tokens > 0);
        }
    (void)agents;
    aos__sched_reply__free_unpacked(s, NULL);
}

/* A token budget set by the admin refuses at admission, with the figures; in-flight calls
 * count against it. Agents cannot set their own (admin only). */
static void budgets_refuse_with_a_reason(void **st)
{
    (void)st;
    sched_set("thrifty", 2.0, 40, AOS_OK);
    char err[512];
    /* ~3 prompt tokens + 8 out: fits 40 */
    assert_int_equal(chat(NULL, "thrifty", "sim/s1", "hi there", 8, 10000, err, sizeof err),
                     AOS_OK);
    aos_err rc = chat(NULL, "thrifty", "sim/s1", "hi there", 100, 10000, err, sizeof err);
    print_message("over budget: %s: %s\n", aos_err_name(rc), err);
    assert_int_equal(rc, AOS_ERR_REFUSED);
    assert_non_null(strstr(err, "token budget"));
    /* a bad weight is refused, and the agent id is checked */
    sched_set("thrifty", 100000.0, 0, AOS_ERR_USAGE);
    sched_set("bad agent!", 1.0, 0, AOS_ERR_USAGE);
    /* the daily spend cap counts every agent: $0.001 = 1000 micro-USD at $1/Mtok */
    rc = chat(NULL, "a", "cheap/c1", "x", 2000, 10000, err, sizeof err);
    print_message("over the cap: %s: %s\n", aos_err_name(rc), err);
    assert_int_equal(rc, AOS_ERR_REFUSED);
    assert_non_null(strstr(err, "daily spend cap"));
    assert_int_equal(chat(NULL, "a", "cheap/c1", "x", 10, 10000, err, sizeof err), AOS_OK);
    Aos__SchedReply *s = sched_state();
    int found = 0;
    for (size_t i = 0; i < s->n_agents; i++)
        if (!strcmp(s->agents[i]->agent, "thrifty")) {
            found = 1;
            assert_true(s->agents[i]->weight == 2.0);
            assert_int_equal(s->agents[i]->token_budget, 40);
            assert_int_equal(s->agents[i]->refused, 1);
        }
    assert_true(found);
    aos__sched_reply__free_unpacked(s, NULL);
}

typedef struct slow_arg {
    aos_err rc;
    char err[256];
    uint32_t timeout_ms;
    uint64_t ms;
    aos_conn *cn;
} slow_arg;

static void *slow_thread(void *arg)
{
    slow_arg *a = arg;
    uint64_t t0 = aos_mono_ms();
    a->rc = chat(a->cn, "s", "slow/w1", "take your time", 4, a->timeout_ms, a->err,
                 sizeof a->err);
    a->ms = aos_mono_ms() - t0;
    return NULL;
}

/* One at a time, 2 s each: a call whose deadline comes while it waits fails TIMEOUT at
 * that deadline, not after the call ahead; a caller that disconnects leaves the queue. */
static void deadlines_and_departures_leave_the_queue(void **st)
{
    (void)st;
    slow_arg busy = {.timeout_ms = 20000}, late = {.timeout_ms = 500};
    pthread_t tb, tl;
    assert_int_equal(pthread_create(&tb, NULL, slow_thread, &busy), 0);
    usleep(200 * 1000);
    assert_int_equal(pthread_create(&tl, NULL, slow_thread, &late), 0);
    pthread_join(tl, NULL);
    print_message("queued behind a 2 s call with 500 ms to go: %s in %llu ms: %s\n",
                  aos_err_name(late.rc), (unsigned long long)late.ms, late.err);
    assert_int_equal(late.rc, AOS_ERR_TIMEOUT);
    assert_true(late.ms < 1000);
    assert_non_null(strstr(late.err, "LLM queue"));
    /* a caller on its own connection, gone while queued */
    aos_conn *cn = NULL;
    char url[AOS_PATH_MAX + 16], why[256];
    aos_control_url(h_data_dir(H), url, sizeof url);
    assert_int_equal(aos_connect(url, &cn, why, sizeof why), AOS_OK);
    slow_arg gone = {.timeout_ms = 20000, .cn = cn};
    pthread_t tg;
    assert_int_equal(pthread_create(&tg, NULL, slow_thread, &gone), 0);
    usleep(300 * 1000);
    Aos__SchedReply *s = sched_state();
    assert_int_equal(prov(s, "slow")->queued_interactive, 1);
    uint64_t admitted = prov(s, "slow")->admitted;
    aos__sched_reply__free_unpacked(s, NULL);
    aos_close(cn); /* the pending call returns; its pipe is gone */
    pthread_join(tg, NULL);
    usleep(300 * 1000);
    s = sched_state();
    assert_int_equal(prov(s, "slow")->queued_interactive, 0);
    aos__sched_reply__free_unpacked(s, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(busy.rc, AOS_OK);
    usleep(2500 * 1000);
    s = sched_state();
    /* the departed call never reached the provider */
    assert_int_equal(prov(s, "slow")->admitted, admitted);
    assert_int_equal(prov(s, "slow")->expired, 1);
    aos__sched_reply__free_unpacked(s, NULL);
}

/* kill -9 of aos-llm with a full queue: every call answered once, the calls that were in
 * flight re-sent once and counted, nothing completed run again. */
static void kill9_of_aos_llm_with_a_full_queue_loses_nothing(void **st)
{
    (void)st;
    Aos__SchedReply *s = sched_state();
    uint64_t completed0 = prov(s, "sim")->completed;
    aos__sched_reply__free_unpacked(s, NULL);
    caller cs[24] = {0};
    pthread_t th[24];
    for (int i = 0; i < 24; i++) {
        cs[i].i = 100 + i;
        assert_int_equal(pthread_create(&th[i], NULL, call_thread, &cs[i]), 0);
    }
    usleep(LATENCY_MS * 1000 / 2 * 3); /* one round answered, the next in flight */
    pid_t llm = h_child(H, "llm", NULL);
    assert_true(llm > 0);
    s = sched_state();
    uint32_t queued = prov(s, "sim")->queued_interactive, inflight = prov(s, "sim")->in_flight;
    aos__sched_reply__free_unpacked(s, NULL);
    kill(llm, SIGKILL);
    for (int i = 0; i < 24; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 24; i++)
        if (cs[i].rc != AOS_OK)
            fail_msg("caller %d: %s: %s", i, aos_err_name(cs[i].rc), cs[i].err);
    s = sched_state();
    const Aos__SchedProvider *p = prov(s, "sim");
    print_message("kill -9 of aos-llm with %u queued, %u in flight: all 24 answered; "
                  "completed %llu, re-sent %llu\n", queued, inflight,
                  (unsigned long long)(p->completed - completed0),
                  (unsigned long long)p->resent);
    assert_true(queued > 0);
    assert_int_equal(p->completed - completed0, 24);
    assert_true(p->resent <= CONC);
    assert_int_equal(p->in_flight, 0);
    aos__sched_reply__free_unpacked(s, NULL);
}

/* kill -9 of aosd loses its queue, not the admin's decisions: weights and budgets are in
 * DATA/sched.state from the moment they were set, the usage of a few seconds ago too; and a
 * call that completed is not run again when its caller sends its request id again. */
static void kill9_of_aosd_keeps_weights_and_budgets(void **st)
{
    (void)st;
    sched_set("kept", 4.0, 12345, AOS_OK);
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    Aos__Llm__ChatReply *first = chat_rid("kept", rid, "remember me");
    assert_false(first->replayed);
    usleep(5600 * 1000); /* the timer writes the usage every 5 s */
    char dir[256], why[1024];
    h_kill9_keep(H, dir, sizeof dir);
    H = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd again on %s: %s", dir, why);
    Aos__SchedReply *s = sched_state();
    int found = 0;
    for (size_t i = 0; i < s->n_agents; i++)
        if (!strcmp(s->agents[i]->agent, "kept")) {
            found = 1;
            assert_true(s->agents[i]->weight == 4.0);
            assert_int_equal(s->agents[i]->token_budget, 12345);
            assert_true(s->agents[i]->tokens > 0);
        } else if (!strcmp(s->agents[i]->agent, "thrifty")) {
            assert_int_equal(s->agents[i]->token_budget, 40);
        }
    assert_true(found);
    aos__sched_reply__free_unpacked(s, NULL);
    /* the caller retries the completed call with its request id: answered from aos-llm's
     * books, the same reply, no second call to the provider and no tokens charged */
    Aos__Llm__ChatReply *again = chat_rid("kept", rid, "remember me");
    assert_true(again->replayed);
    assert_false(again->resent);
    assert_int_equal(again->message->n_content, first->message->n_content);
    assert_memory_equal(again->message->content[0]->text.data,
                        first->message->content[0]->text.data,
                        first->message->content[0]->text.len);
    assert_int_equal(llm_stat("llm.replayed"), 1);
    s = sched_state();
    for (size_t i = 0; i < s->n_agents; i++)
        if (!strcmp(s->agents[i]->agent, "kept")) /* as before the kill: nothing more */
            assert_int_equal(s->agents[i]->tokens, first->usage->input_tokens +
                                                       first->usage->output_tokens);
    aos__sched_reply__free_unpacked(s, NULL);
    aos__llm__chat_reply__free_unpacked(first, NULL);
    aos__llm__chat_reply__free_unpacked(again, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_limits_hold_end_to_end),
        cmocka_unit_test(budgets_refuse_with_a_reason),
        cmocka_unit_test(deadlines_and_departures_leave_the_queue),
        cmocka_unit_test(kill9_of_aos_llm_with_a_full_queue_loses_nothing),
        cmocka_unit_test(kill9_of_aosd_keeps_weights_and_budgets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
