/* aos-audit's contents and aosctl audit replay through a real aosd (aos-llm on the sim,
 * aos-tool): a run driven by hand with run ids and step numbers replays step by step with
 * its contents; a content altered or deleted by the superuser is named by verify and shown
 * by replay; emits whose contents do not add up are refused. */
#include <setjmp.h>
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
#include "audit.pb-c.h"
#include "contents.h"
#include "harness.h"
#include "llm.pb-c.h"
#include "storage_util.h"
#include "tool.pb-c.h"

#define AGENT "replayer"
#define RUN "run-replay-1"
#define OUT_CAP (4u << 20)
#define SECRET "replay-secret-value-4711"

static h_aosd *H;
static char DATA_DIR[64];

static void stop(h_aosd *h)
{
    int n = h_log_count(h, "Sanitizer");
    if (n != 0)
        h_dump_log(h);
    assert_int_equal(n, 0);
    h_stop(h);
}

static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-replay-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    setenv("AOS_TEST_REPLAY_SECRET", SECRET, 1);
    fputs("tools:\n"
          "  secrets:\n"
          "    - {name: RS, env: AOS_TEST_REPLAY_SECRET, agents: [" AGENT "], tools: [sh]}\n"
          "llm:\n"
          "  default_model: sim/s1\n"
          "  providers:\n"
          "    - name: sim\n"
          "      kind: sim\n"
          "      models: [{name: s1, price: {input: 1, output: 2}}]\n",
          f);
    fclose(f);
    char why[1024];
    H = h_start_on(DATA_DIR, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd on %s: %s", DATA_DIR, why);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    stop(H);
    return 0;
}

static ProtobufCBinaryData txt(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static void sql_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
}

/* The superuser past the triggers, as the tamper cases of audit_test do. */
static void tamper(const char *sql)
{
    PGconn *pg = su_admin_connect(H);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    sql_ok(pg, "SET session_replication_role = replica");
    sql_ok(pg, sql);
    PQfinish(pg);
}

/* llm.chat at (RUN, step) with a system prompt and a user message (and, for a second
 * turn, the tool's result as a TOOL message). */
static void chat(uint32_t step, const char *user, const char *tool_result)
{
    Aos__Llm__ContentPart sp = AOS__LLM__CONTENT_PART__INIT, up = AOS__LLM__CONTENT_PART__INIT,
                          tp = AOS__LLM__CONTENT_PART__INIT;
    Aos__Llm__ContentPart *sps[1] = {&sp}, *ups[1] = {&up}, *tps[1] = {&tp};
    Aos__Llm__Message sm = AOS__LLM__MESSAGE__INIT, um = AOS__LLM__MESSAGE__INIT,
                      tm = AOS__LLM__MESSAGE__INIT;
    Aos__Llm__Message *msgs[3] = {&sm, &um, &tm};
    sp.kind = up.kind = tp.kind = AOS__LLM__PART_KIND__TEXT;
    sp.text = txt("You are the replay test's agent.");
    up.text = txt(user);
    sm.role = AOS__LLM__ROLE__SYSTEM;
    sm.n_content = 1;
    sm.content = sps;
    um.role = AOS__LLM__ROLE__USER;
    um.n_content = 1;
    um.content = ups;
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = txt("sim/s1");
    q.messages = msgs;
    q.n_messages = 2;
    if (tool_result) {
        tp.text = txt(tool_result);
        tm.role = AOS__LLM__ROLE__TOOL;
        tm.tool_call_id = txt("call-1");
        tm.n_content = 1;
        tm.content = tps;
        q.n_messages = 3;
    }
    q.max_tokens = 32;
    size_t len = aos__llm__chat_request__get_packed_size(&q);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    aos__llm__chat_request__pack(&q, b);
    aos_call_opts o = {.agent_id = AGENT, .run_id = RUN, .step = step, .timeout_ms = 20000};
    aos_reply r;
    aos_err e = aos_call(h_conn(H), &o, "llm.chat", b, len, &r);
    free(b);
    if (e != AOS_OK)
        fail_msg("llm.chat: %s: %s", aos_err_name(e), r.error);
    aos_reply_clear(&r);
}

static void run_tool_in(const char *run, uint32_t step, const char *cmd)
{
    char args[512];
    snprintf(args, sizeof args, "{\"command\":\"%s\"}", cmd);
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    q.agent = txt(AGENT);
    q.tool = txt("sh");
    q.args = txt(args);
    size_t len = aos__tool__run_request__get_packed_size(&q);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    aos__tool__run_request__pack(&q, b);
    aos_call_opts o = {.agent_id = AGENT, .run_id = run, .step = step, .timeout_ms = 20000};
    aos_reply r;
    aos_err e = aos_call(h_conn(H), &o, "tool.run", b, len, &r);
    free(b);
    if (e != AOS_OK)
        fail_msg("tool.run: %s: %s", aos_err_name(e), r.error);
    aos_reply_clear(&r);
}

static void run_tool(uint32_t step, const char *cmd)
{
    run_tool_in(RUN, step, cmd);
}

/* aosctl audit replay AGENT RUN --json: its exit code, the document into *doc. */
static int replay_json(json_t **doc)
{
    char *out = malloc(OUT_CAP);
    assert_non_null(out);
    const char *argv[] = {"--json", "audit", "replay", AGENT, RUN, NULL};
    int rc = h_aosctl(H, out, OUT_CAP, argv);
    json_error_t je;
    *doc = json_loads(out, 0, &je);
    if (!*doc)
        fail_msg("audit replay --json (exit %d) printed no JSON: %s: %.500s", rc, je.text, out);
    free(out);
    return rc;
}

/* The first record of kind in step (NULL: none). */
static json_t *record_of(json_t *doc, json_int_t step, const char *kind)
{
    json_t *steps = json_object_get(doc, "steps");
    for (size_t i = 0; i < json_array_size(steps); i++) {
        json_t *s = json_array_get(steps, i);
        if (json_integer_value(json_object_get(s, "step")) != step)
            continue;
        json_t *recs = json_object_get(s, "records");
        for (size_t j = 0; j < json_array_size(recs); j++)
            if (!strcmp(json_string_value(json_object_get(json_array_get(recs, j), "kind")),
                        kind))
                return json_array_get(recs, j);
    }
    return NULL;
}

/* The state of the content of rec whose text is text ("" when none has it). */
static const char *state_of(json_t *rec, const char *text)
{
    json_t *cs = json_object_get(rec, "contents");
    for (size_t i = 0; i < json_array_size(cs); i++) {
        json_t *c = json_array_get(cs, i);
        const char *t = json_string_value(json_object_get(c, "text"));
        if (t && !strcmp(t, text))
            return json_string_value(json_object_get(c, "state"));
    }
    return "";
}

/* The state of the content of rec with this hash. */
static const char *state_by_hash(json_t *rec, const char *hex)
{
    json_t *cs = json_object_get(rec, "contents");
    for (size_t i = 0; i < json_array_size(cs); i++) {
        json_t *c = json_array_get(cs, i);
        if (!strcmp(json_string_value(json_object_get(c, "hash")), hex))
            return json_string_value(json_object_get(c, "state"));
    }
    return "";
}

static json_int_t seq_of(json_t *rec)
{
    return json_integer_value(json_object_get(rec, "seq"));
}

static int verify_json(json_t **doc)
{
    char out[8192];
    const char *argv[] = {"--json", "audit", "verify", NULL};
    int rc = h_aosctl(H, out, sizeof out, argv);
    *doc = json_loads(out, 0, NULL);
    if (!*doc)
        fail_msg("audit verify --json (exit %d): %s", rc, out);
    return rc;
}

static void hex_of(const char *s, char hex[65])
{
    uint8_t h[AUDIT_CONTENT_HASH_LEN];
    audit_content_hash(s, strlen(s), h);
    aos_hex(h, sizeof h, hex);
}

#define USER1 "What is in the box?"
#define TOOL_CMD "echo replay-stdout-marker; echo replay-stderr-marker >&2"
#define TOOL_OUT "replay-stdout-marker\n"
#define TOOL_ERR "replay-stderr-marker\n"
#define USER3 "The tool said: replay-stdout-marker. Anything else?"

static void a_run_replays_step_by_step_and_tampering_shows(void **st)
{
    (void)st;
    chat(1, USER1, NULL);
    run_tool(2, TOOL_CMD);
    chat(3, USER3, TOOL_OUT);
    /* the servers' details are sent without waiting: wait (bounded) for the last one */
    json_t *doc = NULL;
    int rc = -1;
    for (int i = 0; i < 100; i++) {
        json_decref(doc);
        rc = replay_json(&doc);
        if (rc == 0 && record_of(doc, 3, "llm.reply") && record_of(doc, 2, "tool.run"))
            break;
        usleep(100 * 1000);
    }
    char *text = json_dumps(doc, JSON_INDENT(1));
    print_message("replay: %.4000s\n", text);
    free(text);
    assert_int_equal(rc, 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "problems")), 0);
    json_t *steps = json_object_get(doc, "steps");
    assert_int_equal(json_array_size(steps), 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(steps, i), "step")),
                         (json_int_t)i + 1);

    /* step 1: what the agent saw (both messages, by content), what it answered */
    json_t *req1 = record_of(doc, 1, "llm.request"), *rep1 = record_of(doc, 1, "llm.reply");
    assert_non_null(req1);
    assert_non_null(rep1);
    assert_string_equal(json_string_value(json_object_get(req1, "role")), "saw");
    assert_string_equal(state_of(req1, USER1), "ok");
    assert_string_equal(state_of(req1, "You are the replay test's agent."), "ok");
    assert_string_equal(json_string_value(json_object_get(rep1, "role")), "answered");
    json_t *d = json_object_get(rep1, "details");
    assert_true(json_array_size(json_object_get(d, "text")) >= 1);
    assert_true(json_integer_value(json_object_get(json_object_get(d, "usage"),
                                                   "output_tokens")) > 0);
    assert_true(seq_of(req1) < seq_of(rep1));
    /* aosd's own record of the syscall is in the step too */
    assert_non_null(record_of(doc, 1, "syscall"));

    /* step 2: what it did (argv as the sandbox got it), and what came back */
    json_t *tr = record_of(doc, 2, "tool.run");
    assert_non_null(tr);
    assert_string_equal(json_string_value(json_object_get(tr, "role")), "did");
    assert_string_equal(state_of(tr, TOOL_CMD), "ok"); /* sh -c's command is an argv */
    assert_string_equal(state_of(tr, TOOL_OUT), "ok");
    assert_string_equal(state_of(tr, TOOL_ERR), "ok");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(tr, "details"),
                                                        "exit_status")),
                     0);
    /* step 3 saw the tool's result */
    json_t *req3 = record_of(doc, 3, "llm.request");
    assert_non_null(req3);
    assert_string_equal(state_of(req3, TOOL_OUT), "ok");
    assert_string_equal(state_of(req3, USER3), "ok");

    /* the people's view says the same */
    char *out = malloc(OUT_CAP);
    assert_non_null(out);
    const char *argv[] = {"audit", "replay", AGENT, RUN, NULL};
    assert_int_equal(h_aosctl(H, out, OUT_CAP, argv), 0);
    print_message("audit replay:\n%.6000s\n", out);
    assert_non_null(strstr(out, "step 1"));
    assert_non_null(strstr(out, "saw:"));
    assert_non_null(strstr(out, USER1));
    assert_non_null(strstr(out, "answered:"));
    assert_non_null(strstr(out, "did: tool sh"));
    assert_non_null(strstr(out, "came back:"));
    assert_non_null(strstr(out, "replay-stdout-marker"));
    assert_null(strstr(out, "MISSING"));
    assert_null(strstr(out, "ALTERED"));

    json_t *v;
    assert_int_equal(verify_json(&v), 0);
    assert_string_equal(json_string_value(json_object_get(v, "kind")), "ok");
    json_decref(v);

    /* contents are stored once: the system prompt of both calls, the tool's output both as
     * its output and as step 3's message */
    PGconn *pg = su_admin_connect(H);
    char sql[512], hex[65];
    hex_of(TOOL_OUT, hex);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.contents WHERE hash = '\\x%s'", hex);
    assert_int_equal(su_count(pg, sql), 1);
    /* the triggers refuse changes to contents as they do to records */
    static const char *const refused[] = {"UPDATE audit.contents SET size = 0",
                                          "DELETE FROM audit.contents",
                                          "TRUNCATE audit.contents"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        PGresult *res = PQexec(pg, refused[i]);
        assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
        assert_string_equal(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501");
        PQclear(res);
    }
    PQfinish(pg);

    /* the superuser rewrites the tool's stderr head: verify names the tool.run record (the
     * first that lists it), replay shows it altered */
    hex_of(TOOL_ERR, hex);
    snprintf(sql, sizeof sql, "UPDATE audit.contents SET body = convert_to('forged', 'UTF8') "
             "WHERE hash = '\\x%s'", hex);
    tamper(sql);
    assert_int_equal(verify_json(&v), 1);
    print_message("verify after altering a content: %s\n",
                  json_string_value(json_object_get(v, "what")));
    assert_string_equal(json_string_value(json_object_get(v, "kind")), "altered");
    assert_int_equal(json_integer_value(json_object_get(v, "seq")), seq_of(tr));
    assert_non_null(strstr(json_string_value(json_object_get(v, "what")), "does not hash"));
    json_decref(v);
    json_t *doc2;
    assert_int_equal(replay_json(&doc2), 1);
    assert_int_equal(json_integer_value(json_object_get(doc2, "problems")), 1);
    assert_string_equal(state_by_hash(record_of(doc2, 2, "tool.run"), hex), "altered");
    json_decref(doc2);

    /* and deletes step 1's user message: verify now names the llm.request of step 1 (the
     * first damage by seq), replay shows it missing */
    char hex1[65];
    hex_of(USER1, hex1);
    snprintf(sql, sizeof sql, "DELETE FROM audit.contents WHERE hash = '\\x%s'", hex1);
    tamper(sql);
    assert_int_equal(verify_json(&v), 1);
    print_message("verify after deleting a content: %s\n",
                  json_string_value(json_object_get(v, "what")));
    assert_string_equal(json_string_value(json_object_get(v, "kind")), "altered");
    assert_int_equal(json_integer_value(json_object_get(v, "seq")), seq_of(req1));
    assert_non_null(strstr(json_string_value(json_object_get(v, "what")),
                           "not in audit.contents"));
    json_decref(v);
    /* the checks took the path the caps chose: in memory, or (integration_audit_replay_db_test
     * sets both caps to 0 and one connection) the database's look-ups and the cursor's re-hash
     * after the walk, on its connection */
    const char *cap = getenv("AOS_AUDIT_VERIFY_SET_MAX");
    int db = cap && !strcmp(cap, "0");
    assert_true(h_log_count(H, db ? "up in the database" : "up in memory after the walk") > 0);
    assert_int_equal(h_log_count(H, "by the cursor") > 0, db);
    assert_int_equal(h_log_count(H, "contents checked on the walk's connection") > 0, db);
    assert_int_equal(replay_json(&doc2), 1);
    assert_int_equal(json_integer_value(json_object_get(doc2, "problems")), 2);
    assert_string_equal(state_by_hash(record_of(doc2, 1, "llm.request"), hex1), "missing");
    json_decref(doc2);
    assert_int_equal(h_aosctl(H, out, OUT_CAP, argv), 1);
    assert_non_null(strstr(out, "MISSING"));
    assert_non_null(strstr(out, "ALTERED"));
    free(out);
    json_decref(doc);
}

/* ---- emits whose contents do not add up ---------------------------------------------------- */

static aos_err emit_with(const char *body, const char *content, int bad_hash, char *why,
                         size_t whylen)
{
    Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT;
    ev.kind = txt("test.detail");
    ev.agent = txt("emitter");
    ev.body = txt(body);
    Aos__Audit__Event *evs[1] = {&ev};
    Aos__Audit__Content c = AOS__AUDIT__CONTENT__INIT, *cs[1] = {&c};
    uint8_t h[AUDIT_CONTENT_HASH_LEN];
    Aos__Audit__EmitRequest q = AOS__AUDIT__EMIT_REQUEST__INIT;
    q.n_events = 1;
    q.events = evs;
    if (content) {
        audit_content_hash(content, strlen(content), h);
        h[0] ^= (uint8_t)bad_hash;
        c.hash = (ProtobufCBinaryData){sizeof h, h};
        c.body = txt(content);
        q.n_contents = 1;
        q.contents = cs;
    }
    size_t len = aos__audit__emit_request__get_packed_size(&q);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    aos__audit__emit_request__pack(&q, b);
    aos_reply r;
    aos_err e = aos_call(h_conn(H), NULL, "audit.emit", b, len, &r);
    free(b);
    snprintf(why, whylen, "%s", r.error);
    aos_reply_clear(&r);
    return e;
}

static void emits_whose_contents_do_not_add_up_are_refused(void **st)
{
    (void)st;
    char why[AOS_ERRMSG_MAX + 1], body[256], hex[65];
    hex_of("a content", hex);
    snprintf(body, sizeof body, "{\"contents\":[\"%s\"]}", hex);
    /* named but not sent */
    assert_int_equal(emit_with(body, NULL, 0, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "not in this emit"));
    /* sent under another's name */
    assert_int_equal(emit_with(body, "a content", 1, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "BLAKE2b"));
    /* a list that is not one */
    assert_int_equal(emit_with("{\"contents\":\"x\"}", NULL, 0, why, sizeof why),
                     AOS_ERR_USAGE);
    /* sent and named: stored, and twice is once */
    assert_int_equal(emit_with(body, "a content", 0, why, sizeof why), AOS_OK);
    assert_int_equal(emit_with(body, "a content", 0, why, sizeof why), AOS_OK);
    PGconn *pg = su_admin_connect(H);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.contents WHERE hash = '\\x%s' AND "
             "size = 9 AND body = 'a content'::bytea", hex);
    assert_int_equal(su_count(pg, sql), 1);
    PQfinish(pg);
}

/* A granted secret the agent put in its argv, and the tool printed, is redacted before it
 * is hashed and stored: it is in no content and no record. */
static void a_secret_is_in_no_content(void **st)
{
    (void)st;
    run_tool_in("run-secret", 1, "echo " SECRET "; echo $RS");
    PGconn *pg = su_admin_connect(H);
    char sql[512], hex[65];
    /* the detail is sent without waiting for it: wait (bounded) for its argv */
    hex_of("echo " "************************" "; echo $RS", hex);
    _Static_assert(sizeof SECRET - 1 == 24, "as many stars as the secret has bytes");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.contents WHERE hash = '\\x%s'", hex);
    long long n = 0;
    for (int i = 0; i < 100 && (n = su_count(pg, sql)) == 0; i++)
        usleep(100 * 1000);
    assert_int_equal(n, 1);
    hex_of("************************\n************************\n", hex);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.contents WHERE hash = '\\x%s'", hex);
    assert_int_equal(su_count(pg, sql), 1); /* the stdout head, redacted */
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.contents WHERE "
                                  "position('" SECRET "'::bytea IN body) > 0"),
                     0);
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.records WHERE "
                                  "position('" SECRET "'::bytea IN body) > 0"),
                     0);
    PQfinish(pg);
}

/* A run longer than replay's page of 200 records, its steps emitted out of order: replay
 * gives every record once, by step then seq, each step's records together. */
static void a_long_run_is_paged_in_step_order(void **st)
{
    (void)st;
    enum { EVENTS = 450, PER = 150 };
    static Aos__Audit__Event ev[PER];
    static Aos__Audit__Event *evp[PER];
    char why[AOS_ERRMSG_MAX + 1];
    for (int k = 0; k < EVENTS / PER; k++) {
        for (int i = 0; i < PER; i++) {
            aos__audit__event__init(&ev[i]);
            ev[i].kind = txt("test.detail");
            ev[i].agent = txt("pager");
            ev[i].run = txt("run-long");
            ev[i].step = (uint32_t)(30 - (k * PER + i) % 30); /* 30, 29, ..., 1, 30, ... */
            ev[i].body = txt("{}");
            evp[i] = &ev[i];
        }
        Aos__Audit__EmitRequest q = AOS__AUDIT__EMIT_REQUEST__INIT;
        q.n_events = PER;
        q.events = evp;
        size_t len = aos__audit__emit_request__get_packed_size(&q);
        uint8_t *b = malloc(len);
        assert_non_null(b);
        aos__audit__emit_request__pack(&q, b);
        aos_reply r;
        aos_err e = aos_call(h_conn(H), NULL, "audit.emit", b, len, &r);
        snprintf(why, sizeof why, "%s", r.error);
        aos_reply_clear(&r);
        free(b);
        if (e != AOS_OK)
            fail_msg("audit.emit: %s: %s", aos_err_name(e), why);
    }
    char *out = malloc(OUT_CAP);
    assert_non_null(out);
    const char *argv[] = {"--json", "audit", "replay", "pager", "run-long", NULL};
    assert_int_equal(h_aosctl(H, out, OUT_CAP, argv), 0);
    json_t *doc = json_loads(out, 0, NULL);
    free(out);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "records")), EVENTS);
    json_t *steps = json_object_get(doc, "steps");
    assert_int_equal(json_array_size(steps), 30);
    json_int_t total = 0;
    for (size_t i = 0; i < json_array_size(steps); i++) {
        json_t *s1 = json_array_get(steps, i), *recs = json_object_get(s1, "records");
        assert_int_equal(json_integer_value(json_object_get(s1, "step")), (json_int_t)i + 1);
        assert_int_equal(json_array_size(recs), EVENTS / 30);
        for (size_t j = 1; j < json_array_size(recs); j++)
            assert_true(seq_of(json_array_get(recs, j)) > seq_of(json_array_get(recs, j - 1)));
        total += (json_int_t)json_array_size(recs);
    }
    assert_int_equal(total, EVENTS);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(emits_whose_contents_do_not_add_up_are_refused),
        cmocka_unit_test(a_secret_is_in_no_content),
        cmocka_unit_test(a_long_run_is_paged_in_step_order),
        cmocka_unit_test(a_run_replays_step_by_step_and_tampering_shows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
