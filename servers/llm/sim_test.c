/* Unit tests of the sim provider: deterministic and scripted chat plans with their pacing
 * and usage, feature-hashed embeddings, and the rate limiter on a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "sim.h"

/* ---- building requests the way the engine gets them (everything malloc'd, so one
 * free_unpacked frees it) ----------------------------------------------------------------- */

static void bdup(ProtobufCBinaryData *d, const void *p, size_t n)
{
    d->len = n;
    d->data = NULL;
    if (n) {
        d->data = malloc(n);
        assert_non_null(d->data);
        memcpy(d->data, p, n);
    }
}

static void bstr(ProtobufCBinaryData *d, const char *s)
{
    bdup(d, s, strlen(s));
}

static int beq(const ProtobufCBinaryData *d, const char *s)
{
    return d->len == strlen(s) && memcmp(d->data, s, d->len) == 0;
}

static void *grow(void *arr, size_t n, size_t size)
{
    void *v = realloc(arr, (n + 1) * size);
    assert_non_null(v);
    return v;
}

static Aos__Llm__ChatRequest *req_new(void)
{
    Aos__Llm__ChatRequest *r = malloc(sizeof *r);
    assert_non_null(r);
    aos__llm__chat_request__init(r);
    return r;
}

static void req_push(Aos__Llm__ChatRequest *r, Aos__Llm__Message *m)
{
    r->messages = grow(r->messages, r->n_messages, sizeof *r->messages);
    r->messages[r->n_messages++] = m;
}

static Aos__Llm__Message *req_add_bytes(Aos__Llm__ChatRequest *r, Aos__Llm__Role role,
                                        const void *text, size_t n)
{
    Aos__Llm__Message *m = malloc(sizeof *m);
    assert_non_null(m);
    aos__llm__message__init(m);
    m->role = role;
    m->content = malloc(sizeof *m->content);
    assert_non_null(m->content);
    m->content[0] = malloc(sizeof *m->content[0]);
    assert_non_null(m->content[0]);
    aos__llm__content_part__init(m->content[0]);
    m->content[0]->kind = AOS__LLM__PART_KIND__TEXT;
    bdup(&m->content[0]->text, text, n);
    m->n_content = 1;
    req_push(r, m);
    return m;
}

static Aos__Llm__Message *req_add(Aos__Llm__ChatRequest *r, Aos__Llm__Role role, const char *s)
{
    return req_add_bytes(r, role, s, strlen(s));
}

static void req_add_tool_result(Aos__Llm__ChatRequest *r, const ProtobufCBinaryData *call_id,
                                const char *result)
{
    Aos__Llm__Message *m = req_add(r, AOS__LLM__ROLE__TOOL, result);
    bdup(&m->tool_call_id, call_id->data, call_id->len);
}

static void req_add_tool(Aos__Llm__ChatRequest *r, const char *name, const char *schema)
{
    Aos__Llm__Tool *t = malloc(sizeof *t);
    assert_non_null(t);
    aos__llm__tool__init(t);
    bstr(&t->name, name);
    bstr(&t->description, "a test tool");
    bstr(&t->input_schema, schema);
    r->tools = grow(r->tools, r->n_tools, sizeof *r->tools);
    r->tools[r->n_tools++] = t;
}

/* The agent appends the model's answer to its conversation: a deep copy via the codec. */
static void req_add_reply(Aos__Llm__ChatRequest *r, const Aos__Llm__ChatReply *rep)
{
    size_t n = aos__llm__message__get_packed_size(rep->message);
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    aos__llm__message__pack(rep->message, buf);
    Aos__Llm__Message *m = aos__llm__message__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(m);
    req_push(r, m);
}

static void req_free(Aos__Llm__ChatRequest *r)
{
    aos__llm__chat_request__free_unpacked(r, NULL);
}

/* The whole plan as bytes (delays, packed deltas, packed reply), to compare two plans. */
static size_t plan_bytes(const sim_plan *p, uint8_t **out)
{
    size_t cap = 0, n = 0;
    uint8_t *b = NULL;
    for (size_t i = 0; i <= sim_plan_steps(p); i++) {
        uint32_t delay = 0;
        const ProtobufCMessage *m;
        if (i < sim_plan_steps(p))
            m = &sim_plan_delta(p, i, &delay)->base;
        else
            m = &sim_plan_reply(p)->base;
        size_t len = protobuf_c_message_get_packed_size(m);
        if (n + len + 8 > cap) {
            cap = 2 * (n + len + 8);
            b = realloc(b, cap);
            assert_non_null(b);
        }
        memcpy(b + n, &delay, 4);
        memcpy(b + n + 4, &(uint32_t){(uint32_t)len}, 4);
        n += 8 + protobuf_c_message_pack(m, b + n + 8);
    }
    *out = b;
    return n;
}

/* What a client assembles from the streamed steps. */
typedef struct {
    char text[4096];
    size_t text_len;
    size_t n_calls;
    char id[8][64], name[8][80], args[8][512];
    uint64_t delay_sum;
    int first_delta_has_id[8];
} assembled;

static void cat(char *dst, size_t cap, const ProtobufCBinaryData *d)
{
    size_t n = strlen(dst);
    assert_true(n + d->len < cap);
    if (d->len)
        memcpy(dst + n, d->data, d->len);
    dst[n + d->len] = 0;
}

static void assemble(const sim_plan *p, assembled *a)
{
    memset(a, 0, sizeof *a);
    for (size_t i = 0; i < sim_plan_steps(p); i++) {
        uint32_t delay;
        const Aos__Llm__ChatDelta *d = sim_plan_delta(p, i, &delay);
        assert_non_null(d);
        a->delay_sum += delay;
        assert_true(a->text_len + d->text.len < sizeof a->text);
        if (d->text.len)
            memcpy(a->text + a->text_len, d->text.data, d->text.len);
        a->text_len += d->text.len;
        for (size_t k = 0; k < d->n_tool_calls; k++) {
            const Aos__Llm__ToolCallDelta *t = d->tool_calls[k];
            assert_true(t->index < 8);
            if (t->index >= a->n_calls) {
                assert_int_equal(t->index, a->n_calls); /* calls start in order */
                a->n_calls++;
                a->first_delta_has_id[t->index] = t->id.len > 0 && t->name.len > 0;
            }
            cat(a->id[t->index], sizeof a->id[0], &t->id);
            cat(a->name[t->index], sizeof a->name[0], &t->name);
            cat(a->args[t->index], sizeof a->args[0], &t->arguments);
        }
    }
    assert_null(sim_plan_delta(p, sim_plan_steps(p), NULL));
}

/* The reply's text (its one text part), NUL-terminated in buf. */
static const char *reply_text(const Aos__Llm__ChatReply *r, char *buf, size_t cap)
{
    buf[0] = 0;
    if (r->message->n_content) {
        assert_int_equal(r->message->n_content, 1);
        cat(buf, cap, &r->message->content[0]->text);
    }
    return buf;
}

/* The streamed steps add up to the final reply, byte for byte. */
static void assert_stream_matches(const sim_plan *p)
{
    const Aos__Llm__ChatReply *r = sim_plan_reply(p);
    assembled a;
    assemble(p, &a);
    char t[4096];
    reply_text(r, t, sizeof t);
    assert_int_equal(a.text_len, strlen(t));
    assert_memory_equal(a.text, t, a.text_len);
    assert_int_equal(a.n_calls, r->message->n_tool_calls);
    for (size_t i = 0; i < a.n_calls; i++) {
        const Aos__Llm__ToolCall *tc = r->message->tool_calls[i];
        assert_true(a.first_delta_has_id[i]);
        assert_true(beq(&tc->id, a.id[i]));
        assert_true(beq(&tc->name, a.name[i]));
        assert_true(beq(&tc->arguments, a.args[i]));
    }
    assert_int_equal(r->message->role, AOS__LLM__ROLE__ASSISTANT);
}

static sim_plan *chat_ok(const Aos__Llm__SimSettings *cfg, const Aos__Llm__ChatRequest *req)
{
    sim_plan *p = NULL;
    char why[256] = "";
    aos_err e = sim_chat(cfg, req, &p, why, sizeof why);
    if (e != AOS_OK)
        fail_msg("sim_chat: %s: %s", aos_err_name(e), why);
    assert_non_null(p);
    assert_stream_matches(p);
    return p;
}

/* ---- echo mode ------------------------------------------------------------------------ */

static void deterministic(void **st)
{
    (void)st;
    Aos__Llm__ChatRequest *r = req_new();
    req_add(r, AOS__LLM__ROLE__SYSTEM, "You are terse.");
    req_add(r, AOS__LLM__ROLE__USER, "hello there, little simulator of mine");
    sim_plan *a = chat_ok(NULL, r), *b = chat_ok(NULL, r);
    uint8_t *ab, *bb;
    size_t al = plan_bytes(a, &ab), bl = plan_bytes(b, &bb);
    assert_int_equal(al, bl);
    assert_memory_equal(ab, bb, al);
    char t[4096];
    reply_text(sim_plan_reply(a), t, sizeof t);
    assert_non_null(strstr(t, "sim: you said 'hello there, little simulator of mine'"));
    assert_int_equal(sim_plan_reply(a)->stop_reason, AOS__LLM__STOP_REASON__END_TURN);
    assert_int_equal(sim_plan_reply(a)->usage->output_tokens, sim_plan_steps(a));
    assert_int_equal(sim_plan_reply(a)->message->n_tool_calls, 0);

    /* A different conversation reads differently; the same bytes again read the same. */
    req_add(r, AOS__LLM__ROLE__ASSISTANT, "ok");
    req_add(r, AOS__LLM__ROLE__USER, "hello there, little simulator of mine");
    sim_plan *c = chat_ok(NULL, r);
    uint8_t *cb;
    size_t cl = plan_bytes(c, &cb);
    assert_false(cl == al && memcmp(cb, ab, al) == 0);
    free(ab);
    free(bb);
    free(cb);
    sim_plan_free(a);
    sim_plan_free(b);
    sim_plan_free(c);
    req_free(r);
}

static void max_tokens_cut(void **st)
{
    (void)st;
    Aos__Llm__ChatRequest *r = req_new();
    req_add(r, AOS__LLM__ROLE__USER, "tell me a long story please");
    sim_plan *full = chat_ok(NULL, r);
    size_t nfull = sim_plan_steps(full);
    assert_true(nfull > 5);
    char ft[4096], ct[4096];
    reply_text(sim_plan_reply(full), ft, sizeof ft);

    r->max_tokens = 3;
    sim_plan *cut = chat_ok(NULL, r);
    assert_int_equal(sim_plan_steps(cut), 3);
    assert_int_equal(sim_plan_reply(cut)->stop_reason, AOS__LLM__STOP_REASON__MAX_TOKENS);
    assert_int_equal(sim_plan_reply(cut)->usage->output_tokens, 3);
    reply_text(sim_plan_reply(cut), ct, sizeof ct);
    assert_string_equal(ct, "sim: you said ");
    assert_memory_equal(ft, ct, strlen(ct)); /* a cut answer is a prefix of the whole one */

    /* Exactly as many tokens as the answer has is not a cut. */
    r->max_tokens = (uint32_t)nfull;
    sim_plan *exact = chat_ok(NULL, r);
    assert_int_equal(sim_plan_reply(exact)->stop_reason, AOS__LLM__STOP_REASON__END_TURN);
    assert_int_equal(sim_plan_steps(exact), nfull);

    /* A stop sequence cuts before itself. */
    r->max_tokens = 0;
    r->stop = calloc(1, sizeof *r->stop);
    assert_non_null(r->stop);
    r->n_stop = 1;
    bstr(&r->stop[0], "said");
    sim_plan *stop = chat_ok(NULL, r);
    reply_text(sim_plan_reply(stop), ct, sizeof ct);
    assert_string_equal(ct, "sim: you ");
    assert_int_equal(sim_plan_reply(stop)->stop_reason, AOS__LLM__STOP_REASON__STOP_SEQUENCE);
    sim_plan_free(full);
    sim_plan_free(cut);
    sim_plan_free(exact);
    sim_plan_free(stop);
    req_free(r);
}

static void tool_call_trigger(void **st)
{
    (void)st;
    const char *schema = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}";
    Aos__Llm__ChatRequest *r = req_new();
    req_add_tool(r, "get_weather", schema);
    req_add_tool(r, "get_time", "{\"type\":\"object\"}");
    req_add(r, AOS__LLM__ROLE__USER,
            "please call get_weather {\"city\": \"Par}is\", \"n\": {\"a\": 1}} now");
    sim_plan *p = chat_ok(NULL, r);
    const Aos__Llm__ChatReply *rep = sim_plan_reply(p);
    assert_int_equal(rep->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
    assert_int_equal(rep->message->n_tool_calls, 1);
    assert_int_equal(rep->message->n_content, 0);
    const Aos__Llm__ToolCall *tc = rep->message->tool_calls[0];
    assert_true(beq(&tc->name, "get_weather"));
    assert_true(beq(&tc->arguments, "{\"city\": \"Par}is\", \"n\": {\"a\": 1}}"));
    assert_int_equal(tc->id.len, 21);
    assert_memory_equal(tc->id.data, "call_", 5);
    for (size_t i = 5; i < 21; i++)
        assert_non_null(strchr("0123456789abcdef", tc->id.data[i]));
    /* one step with id and name, then the arguments in a few fragments */
    assert_true(sim_plan_steps(p) >= 2 && sim_plan_steps(p) <= 1 + SIM_ARG_FRAGMENTS);
    assert_int_equal(rep->usage->output_tokens,
                     (strlen("get_weather") + tc->arguments.len + 3) / 4);
    sim_plan *p2 = chat_ok(NULL, r);
    assert_int_equal(sim_plan_reply(p2)->message->tool_calls[0]->id.len, 21);
    assert_memory_equal(sim_plan_reply(p2)->message->tool_calls[0]->id.data, tc->id.data, 21);
    sim_plan_free(p2);

    /* The tool's result comes back: a text answer quoting it. */
    req_add_reply(r, rep);
    req_add_tool_result(r, &tc->id, "sunny, 22 C in Paris");
    sim_plan *q = chat_ok(NULL, r);
    char t[4096];
    reply_text(sim_plan_reply(q), t, sizeof t);
    assert_non_null(strstr(t, "sim: the tool returned 'sunny, 22 C in Paris'"));
    assert_int_equal(sim_plan_reply(q)->stop_reason, AOS__LLM__STOP_REASON__END_TURN);
    sim_plan_free(q);
    sim_plan_free(p);
    req_free(r);
}

/* What is not a trigger: no tools offered, an unknown tool, "recall", tool_choice none; and
 * what forces one: tool_choice naming a tool. */
static void tool_call_non_triggers(void **st)
{
    (void)st;
    static const struct {
        int tools;
        const char *choice, *text;
        int calls;
        const char *args;
    } cases[] = {
        {0, "", "call get_weather", 0, NULL},
        {1, "", "call get_wind {}", 0, NULL},
        {1, "", "recall get_weather", 0, NULL},
        {1, "none", "call get_weather", 0, NULL},
        {1, "auto", "call get_weather", 1, "{}"},
        {1, "", "call get_weather {\"unterminated\": ", 1, "{}"},
        {1, "", "call get_weather", 1, "{}"},
        {1, "get_weather", "just answer", 1, "{}"},
        {1, "required", "just answer", 1, "{}"},
        {1, "", "call get_weather {} and call get_weather {\"b\":2}", 2, "{\"b\":2}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Aos__Llm__ChatRequest *r = req_new();
        if (cases[i].tools)
            req_add_tool(r, "get_weather", "{}");
        bstr(&r->tool_choice, cases[i].choice);
        req_add(r, AOS__LLM__ROLE__USER, cases[i].text);
        sim_plan *p = chat_ok(NULL, r);
        const Aos__Llm__ChatReply *rep = sim_plan_reply(p);
        assert_int_equal(rep->message->n_tool_calls, (size_t)cases[i].calls);
        if (cases[i].calls) {
            assert_int_equal(rep->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
            const Aos__Llm__ToolCall *last = rep->message->tool_calls[cases[i].calls - 1];
            assert_true(beq(&last->arguments, cases[i].args));
            if (cases[i].calls == 2) /* parallel calls get ids of their own */
                assert_memory_not_equal(rep->message->tool_calls[0]->id.data, last->id.data,
                                        21);
        } else {
            assert_int_equal(rep->stop_reason, AOS__LLM__STOP_REASON__END_TURN);
            assert_int_equal(rep->message->n_content, 1);
        }
        sim_plan_free(p);
        req_free(r);
    }
}

/* ---- script mode ---------------------------------------------------------------------- */

static Aos__Llm__SimTurn *turn_add(Aos__Llm__SimSettings *cfg, const char *text,
                                   const char *expect)
{
    Aos__Llm__SimTurn *t = malloc(sizeof *t);
    assert_non_null(t);
    aos__llm__sim_turn__init(t);
    bstr(&t->text, text);
    bstr(&t->expect, expect);
    cfg->script = grow(cfg->script, cfg->n_script, sizeof *cfg->script);
    cfg->script[cfg->n_script++] = t;
    return t;
}

static void turn_call(Aos__Llm__SimTurn *t, const char *id, const char *name, const char *args)
{
    Aos__Llm__ToolCall *c = malloc(sizeof *c);
    assert_non_null(c);
    aos__llm__tool_call__init(c);
    bstr(&c->id, id);
    bstr(&c->name, name);
    bstr(&c->arguments, args);
    t->tool_calls = grow(t->tool_calls, t->n_tool_calls, sizeof *t->tool_calls);
    t->tool_calls[t->n_tool_calls++] = c;
}

static Aos__Llm__SimSettings *evening_script(void)
{
    Aos__Llm__SimSettings *cfg = malloc(sizeof *cfg);
    assert_non_null(cfg);
    aos__llm__sim_settings__init(cfg);
    bstr(&cfg->script_path, "tests/evening.yaml");
    turn_call(turn_add(cfg, "Let me look at the weather first. ", "Paris"), "", "get_weather",
              "{\"city\":\"Paris\"}");
    turn_call(turn_add(cfg, "", "sunny"), "call_time1", "get_time", "{\"tz\":\"Europe/Paris\"}");
    Aos__Llm__SimTurn *t3 = turn_add(cfg, "Booking two tables. ", "20:");
    turn_call(t3, "", "book_table", "{\"place\":\"Chez Ann\",\"at\":\"21:00\",\"n\":2}");
    turn_call(t3, "", "book_table", "{\"place\":\"Le Bar\",\"at\":\"23:00\",\"n\":2}");
    turn_add(cfg, "Both tables are booked: Chez Ann at 21:00, then Le Bar.", "confirmed");
    turn_add(cfg, "You are welcome. Enjoy your evening!", "thanks");
    return cfg;
}

/* A 5-turn tool-using conversation played as an agent would: each reply appended, each call
 * answered with a tool result, and a user message when the model asked for nothing. */
static void script_conversation(void **st)
{
    (void)st;
    Aos__Llm__SimSettings *cfg = evening_script();
    Aos__Llm__ChatRequest *r = req_new();
    req_add_tool(r, "get_weather", "{}");
    req_add_tool(r, "get_time", "{}");
    req_add_tool(r, "book_table", "{}");
    req_add(r, AOS__LLM__ROLE__SYSTEM, "You plan evenings.");
    req_add(r, AOS__LLM__ROLE__USER, "Plan my evening in Paris.");
    static const struct {
        const char *text;
        size_t calls;
        const char *name0, *args0;
        const char *results[2];
        const char *user_next;
    } want[] = {
        {"Let me look at the weather first. ", 1, "get_weather", "{\"city\":\"Paris\"}",
         {"sunny, 22 C"}, NULL},
        {"", 1, "get_time", "{\"tz\":\"Europe/Paris\"}", {"20:15"}, NULL},
        {"Booking two tables. ", 2, "book_table",
         "{\"place\":\"Chez Ann\",\"at\":\"21:00\",\"n\":2}",
         {"confirmed #41", "confirmed #42"}, NULL},
        {"Both tables are booked: Chez Ann at 21:00, then Le Bar.", 0, NULL, NULL, {NULL},
         "thanks a lot"},
        {"You are welcome. Enjoy your evening!", 0, NULL, NULL, {NULL}, NULL},
    };
    for (size_t k = 0; k < 5; k++) {
        sim_plan *p = chat_ok(cfg, r);
        const Aos__Llm__ChatReply *rep = sim_plan_reply(p);
        char t[4096];
        assert_string_equal(reply_text(rep, t, sizeof t), want[k].text);
        assert_int_equal(rep->message->n_tool_calls, want[k].calls);
        assert_int_equal(rep->stop_reason, want[k].calls ? AOS__LLM__STOP_REASON__TOOL_USE
                                                         : AOS__LLM__STOP_REASON__END_TURN);
        if (want[k].calls) {
            assert_true(beq(&rep->message->tool_calls[0]->name, want[k].name0));
            assert_true(beq(&rep->message->tool_calls[0]->arguments, want[k].args0));
        }
        if (k == 1) /* the script's own id is kept, the others are made up */
            assert_true(beq(&rep->message->tool_calls[0]->id, "call_time1"));
        if (k == 2)
            assert_memory_not_equal(rep->message->tool_calls[0]->id.data,
                                    rep->message->tool_calls[1]->id.data, 21);
        /* stateless: asking again (a restart, a replay) gives the same turn */
        sim_plan *again = chat_ok(cfg, r);
        uint8_t *ab, *bb;
        size_t al = plan_bytes(p, &ab), bl = plan_bytes(again, &bb);
        assert_int_equal(al, bl);
        assert_memory_equal(ab, bb, al);
        free(ab);
        free(bb);
        sim_plan_free(again);

        req_add_reply(r, rep);
        for (size_t c = 0; c < want[k].calls; c++)
            req_add_tool_result(r, &rep->message->tool_calls[c]->id, want[k].results[c]);
        if (want[k].user_next)
            req_add(r, AOS__LLM__ROLE__USER, want[k].user_next);
        sim_plan_free(p);
    }
    /* The agent talks on past the script's end. */
    req_add(r, AOS__LLM__ROLE__USER, "one more thing");
    sim_plan *p = (sim_plan *)1;
    char why[256];
    assert_int_equal(sim_chat(cfg, r, &p, why, sizeof why), AOS_ERR_NOT_FOUND);
    assert_null(p);
    assert_string_equal(why,
                        "sim script (tests/evening.yaml) has 5 turns; the conversation is at "
                        "turn 6");
    req_free(r);
    aos__llm__sim_settings__free_unpacked(cfg, NULL);
}

static void script_expect_mismatch(void **st)
{
    (void)st;
    Aos__Llm__SimSettings *cfg = evening_script();
    Aos__Llm__ChatRequest *r = req_new();
    req_add(r, AOS__LLM__ROLE__USER, "Plan my evening in Paris.");
    sim_plan *p = chat_ok(cfg, r);
    req_add_reply(r, sim_plan_reply(p));
    req_add_tool_result(r, &sim_plan_reply(p)->message->tool_calls[0]->id,
                        "rainy\nand 12 C, with wind from the west at forty kilometres an hour");
    sim_plan_free(p);
    p = (sim_plan *)1;
    char why[256];
    assert_int_equal(sim_chat(cfg, r, &p, why, sizeof why), AOS_ERR_CONFLICT);
    assert_null(p);
    assert_string_equal(why, "sim script turn 2 expects 'sunny' in the last message; got "
                             "'rainy and 12 C, with wind from the west at forty kilometres "
                             "...'");

    /* The first turn expects Paris: a conversation without it fails at turn 1. */
    Aos__Llm__ChatRequest *r2 = req_new();
    req_add(r2, AOS__LLM__ROLE__USER, "Plan my evening in Rome.");
    assert_int_equal(sim_chat(cfg, r2, &p, why, sizeof why), AOS_ERR_CONFLICT);
    assert_string_equal(why, "sim script turn 1 expects 'Paris' in the last message; got "
                             "'Plan my evening in Rome.'");
    /* No script path: the message says so. */
    ProtobufCBinaryData path = cfg->script_path;
    cfg->script_path = (ProtobufCBinaryData){0, NULL};
    cfg->n_script = 0;
    aos__llm__chat_request__free_unpacked(r2, NULL);
    r2 = req_new();
    req_add(r2, AOS__LLM__ROLE__USER, "x");
    p = chat_ok(cfg, r2); /* an empty script is the echo mode */
    assert_int_equal(strncmp((const char *)sim_plan_reply(p)->message->content[0]->text.data,
                             "sim: ", 5), 0);
    sim_plan_free(p);
    cfg->n_script = 5;
    req_add(r2, AOS__LLM__ROLE__ASSISTANT, "a");
    req_add(r2, AOS__LLM__ROLE__ASSISTANT, "b");
    req_add(r2, AOS__LLM__ROLE__ASSISTANT, "c");
    req_add(r2, AOS__LLM__ROLE__ASSISTANT, "d");
    req_add(r2, AOS__LLM__ROLE__ASSISTANT, "e");
    assert_int_equal(sim_chat(cfg, r2, &p, why, sizeof why), AOS_ERR_NOT_FOUND);
    assert_string_equal(why, "sim script (inline) has 5 turns; the conversation is at turn 6");
    cfg->script_path = path;
    req_free(r2);
    req_free(r);
    aos__llm__sim_settings__free_unpacked(cfg, NULL);
}

/* max_tokens cuts a scripted answer too, and a cut answer never reaches its tool calls. */
static void script_cut(void **st)
{
    (void)st;
    Aos__Llm__SimSettings *cfg = evening_script();
    Aos__Llm__ChatRequest *r = req_new();
    req_add(r, AOS__LLM__ROLE__USER, "Plan my evening in Paris.");
    r->max_tokens = 2;
    sim_plan *p = chat_ok(cfg, r);
    char t[4096];
    assert_string_equal(reply_text(sim_plan_reply(p), t, sizeof t), "Let me ");
    assert_int_equal(sim_plan_reply(p)->stop_reason, AOS__LLM__STOP_REASON__MAX_TOKENS);
    assert_int_equal(sim_plan_reply(p)->message->n_tool_calls, 0);
    assert_int_equal(sim_plan_steps(p), 2);
    sim_plan_free(p);
    r->max_tokens = 7; /* the whole text: the call follows */
    p = chat_ok(cfg, r);
    assert_int_equal(sim_plan_reply(p)->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
    assert_int_equal(sim_plan_reply(p)->message->n_tool_calls, 1);
    sim_plan_free(p);
    req_free(r);
    aos__llm__sim_settings__free_unpacked(cfg, NULL);
}

/* ---- timing and usage ----------------------------------------------------------------- */

static void pacing(void **st)
{
    (void)st;
    Aos__Llm__SimSettings cfg = AOS__LLM__SIM_SETTINGS__INIT;
    Aos__Llm__ChatRequest *r = req_new();
    req_add(r, AOS__LLM__ROLE__USER, "count the delays of this answer");
    static const uint32_t tps[] = {0, 1, 3, 20, 7000, 2000000};
    for (size_t i = 0; i < sizeof tps / sizeof tps[0]; i++) {
        cfg.latency_ms = 250;
        cfg.tokens_per_s = tps[i];
        sim_plan *p = chat_ok(&cfg, r);
        size_t n = sim_plan_steps(p);
        assert_true(n > 3);
        uint32_t d0;
        sim_plan_delta(p, 0, &d0);
        assert_int_equal(d0, 250000); /* the first token after the latency */
        assembled a;
        assemble(p, &a);
        uint64_t want = 250000 + (tps[i] ? (uint64_t)(n - 1) * 1000000 / tps[i] : 0);
        assert_int_equal(a.delay_sum, want);
        sim_plan_free(p);
    }
    /* Tool-call steps are paced like tokens. */
    cfg.latency_ms = 0;
    cfg.tokens_per_s = 10;
    req_add_tool(r, "t", "{}");
    req_add(r, AOS__LLM__ROLE__USER, "call t {\"k\": \"a value long enough\"}");
    sim_plan *p = chat_ok(&cfg, r);
    assembled a;
    assemble(p, &a);
    assert_int_equal(a.delay_sum, (sim_plan_steps(p) - 1) * 100000);
    sim_plan_free(p);
    /* A huge latency stays within the uint32 delay. */
    cfg.latency_ms = UINT32_MAX;
    p = chat_ok(&cfg, r);
    uint32_t d0;
    sim_plan_delta(p, 0, &d0);
    assert_int_equal(d0, 3600u * 1000000u);
    sim_plan_free(p);
    req_free(r);
}

static void usage_and_cache(void **st)
{
    (void)st;
    Aos__Llm__ChatRequest *r = req_new();
    req_add_tool(r, "tool", "{}");                  /* 4 + 11 + 2 = 17 bytes */
    req_add(r, AOS__LLM__ROLE__SYSTEM, "abcdefgh"); /* 8 */
    req_add(r, AOS__LLM__ROLE__USER, "hi");         /* 2 */
    sim_plan *p = chat_ok(NULL, r);
    const Aos__Llm__Usage *u = sim_plan_reply(p)->usage;
    assert_int_equal(u->input_tokens, (17 + 8 + 2 + 3) / 4);
    assert_int_equal(u->cache_read_tokens, 0);
    assert_int_equal(u->cache_write_tokens, 0);
    sim_plan_free(p);

    /* A breakpoint on a short prefix caches nothing, as real providers' minimum says. */
    r->cache_breakpoint = 1;
    p = chat_ok(NULL, r);
    assert_int_equal(sim_plan_reply(p)->usage->cache_read_tokens, 0);
    assert_int_equal(sim_plan_reply(p)->usage->input_tokens, 7);
    sim_plan_free(p);

    /* A prefix of 1024 tokens or more is read from the "cache". */
    Aos__Llm__ChatRequest *big = req_new();
    req_add_tool(big, "tool", "{}");
    char *sys = malloc(5000);
    assert_non_null(sys);
    memset(sys, 'x', 5000);
    req_add_bytes(big, AOS__LLM__ROLE__SYSTEM, sys, 5000);
    free(sys);
    Aos__Llm__Message *asst = req_add(big, AOS__LLM__ROLE__ASSISTANT, "");
    asst->tool_calls = malloc(sizeof *asst->tool_calls);
    assert_non_null(asst->tool_calls);
    asst->tool_calls[0] = malloc(sizeof *asst->tool_calls[0]);
    assert_non_null(asst->tool_calls[0]);
    aos__llm__tool_call__init(asst->tool_calls[0]);
    asst->n_tool_calls = 1;
    bstr(&asst->tool_calls[0]->id, "call_1");
    bstr(&asst->tool_calls[0]->name, "tool");             /* 4 */
    bstr(&asst->tool_calls[0]->arguments, "{\"a\":1}");   /* 7 */
    req_add_tool_result(big, &asst->tool_calls[0]->id, "done"); /* 4 + id 6 */
    big->cache_breakpoint = 1;
    p = chat_ok(NULL, big);
    u = sim_plan_reply(p)->usage;
    uint64_t prefix = (17 + 5000 + 3) / 4, all = (17 + 5000 + 11 + 10 + 3) / 4;
    assert_int_equal(u->cache_read_tokens, prefix);
    assert_int_equal(u->input_tokens, all - prefix);
    sim_plan_free(p);
    big->cache_breakpoint = 1000; /* past the messages: the whole conversation */
    p = chat_ok(NULL, big);
    assert_int_equal(sim_plan_reply(p)->usage->cache_read_tokens, all);
    assert_int_equal(sim_plan_reply(p)->usage->input_tokens, 0);
    sim_plan_free(p);
    big->cache_breakpoint = 0;
    p = chat_ok(NULL, big);
    assert_int_equal(sim_plan_reply(p)->usage->cache_read_tokens, 0);
    assert_int_equal(sim_plan_reply(p)->usage->input_tokens, all);
    sim_plan_free(p);
    req_free(big);
    req_free(r);
}

/* Hostile or odd requests: no messages, NULL entries, huge and binary text, a huge
 * max_tokens; nothing crashes and every answer streams what it says. */
static void hostile_requests(void **st)
{
    (void)st;
    sim_plan *p = (sim_plan *)1;
    char why[256];
    Aos__Llm__ChatRequest *r = req_new();
    assert_int_equal(sim_chat(NULL, r, &p, why, sizeof why), AOS_ERR_USAGE);
    assert_null(p);
    assert_int_equal(sim_chat(NULL, NULL, &p, NULL, 0), AOS_ERR_USAGE);

    req_add(r, AOS__LLM__ROLE__SYSTEM, "only a system message");
    p = chat_ok(NULL, r);
    sim_plan_free(p);

    size_t big = 1u << 20;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, 'a', big);
    memcpy(text + big - 20, " call t {{{{{{{{", 16);
    req_add_tool(r, "t", "{}");
    req_add_bytes(r, AOS__LLM__ROLE__USER, text, big);
    r->max_tokens = UINT32_MAX;
    p = chat_ok(NULL, r);
    assert_int_equal(sim_plan_reply(p)->message->n_tool_calls, 1); /* unclosed: "{}" */
    assert_true(beq(&sim_plan_reply(p)->message->tool_calls[0]->arguments, "{}"));
    sim_plan_free(p);

    /* pseudo-random bytes (a fixed LCG, so failures reproduce) in every role */
    uint32_t x = 12345;
    for (int round = 0; round < 200; round++) {
        Aos__Llm__ChatRequest *h = req_new();
        req_add_tool(h, "t", "{}");
        int nm = 1 + round % 5;
        for (int m = 0; m < nm; m++) {
            size_t n = (x = x * 1103515245u + 12345u) % 300;
            for (size_t i = 0; i < n; i++)
                text[i] = (char)((x = x * 1103515245u + 12345u) >> 24);
            if (round % 3 == 0 && n > 10)
                memcpy(text + n / 2, "call t ", 7);
            req_add_bytes(h, (Aos__Llm__Role)(1 + (x >> 8) % 5), text, n);
        }
        h->max_tokens = x % 7;
        Aos__Llm__SimSettings cfg = AOS__LLM__SIM_SETTINGS__INIT;
        cfg.tokens_per_s = x % 100;
        p = chat_ok(&cfg, h);
        sim_plan_free(p);
        req_free(h);
    }
    /* a NULL message pointer (never from the codec, but not a crash either) */
    req_push(r, NULL);
    p = chat_ok(NULL, r);
    sim_plan_free(p);
    r->n_messages--;
    free(text);
    req_free(r);
}

/* ---- embeddings ----------------------------------------------------------------------- */

static Aos__Llm__EmbedReply *embed_ok(const Aos__Llm__SimSettings *cfg, const char *const *in,
                                      size_t n)
{
    Aos__Llm__EmbedRequest req = AOS__LLM__EMBED_REQUEST__INIT;
    ProtobufCBinaryData bins[16];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++)
        bins[i] = (ProtobufCBinaryData){strlen(in[i]), (uint8_t *)(uintptr_t)in[i]};
    req.inputs = bins;
    req.n_inputs = n;
    Aos__Llm__EmbedReply *r = NULL;
    char why[256] = "";
    aos_err e = sim_embed(cfg, &req, &r, why, sizeof why);
    if (e != AOS_OK)
        fail_msg("sim_embed: %s: %s", aos_err_name(e), why);
    assert_non_null(r);
    assert_int_equal(r->n_vectors, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(r->vectors[i]->n_values, r->dim);
    return r;
}

/* The squared L2 norm (no libm here: the target links none). */
static double norm2(const Aos__Llm__Embedding *v)
{
    double s = 0;
    for (size_t i = 0; i < v->n_values; i++)
        s += (double)v->values[i] * v->values[i];
    return s;
}

static int near1(double x)
{
    return x > 1.0 - 1e-5 && x < 1.0 + 1e-5;
}

static void embed_basics(void **st)
{
    (void)st;
    const char *in[] = {"The quick brown fox", "the QUICK, brown... fox!", "", "  ?! ",
                        "caf\xc3\xa9 au lait", "jumps over the lazy dog"};
    Aos__Llm__EmbedReply *a = embed_ok(NULL, in, 6), *b = embed_ok(NULL, in, 6);
    assert_int_equal(a->dim, SIM_EMBED_DIM_DEFAULT);
    for (size_t i = 0; i < 6; i++)
        assert_memory_equal(a->vectors[i]->values, b->vectors[i]->values,
                            a->dim * sizeof(float));
    assert_true(near1(norm2(a->vectors[0])));
    assert_true(near1(norm2(a->vectors[4])));
    assert_true(near1(norm2(a->vectors[5])));
    /* case and punctuation do not matter; inputs without words are all zeros */
    assert_memory_equal(a->vectors[0]->values, a->vectors[1]->values, a->dim * sizeof(float));
    assert_true(norm2(a->vectors[2]) == 0.0 && norm2(a->vectors[3]) == 0.0);
    assert_true(sim_cosine(a->vectors[0]->values, a->vectors[2]->values, a->dim) == 0.0f);
    assert_true(near1(sim_cosine(a->vectors[0]->values, a->vectors[1]->values, a->dim)));
    /* usage counts words: 4 + 4 + 0 + 0 + 3 ("café" is one word) + 5 */
    assert_int_equal(a->usage->input_tokens, 16);
    sim_embed_free(a);
    sim_embed_free(b);
    sim_embed_free(NULL);
}

static void embed_synonyms(void **st)
{
    (void)st;
    Aos__Llm__SimSettings cfg = AOS__LLM__SIM_SETTINGS__INIT;
    ProtobufCBinaryData syn[] = {
        {strlen("car automobile vehicle"), (uint8_t *)"car automobile vehicle"},
        {strlen("buy purchase acquire"), (uint8_t *)"buy purchase acquire"},
        {strlen("an a"), (uint8_t *)"an a"},
    };
    cfg.synonyms = syn;
    cfg.n_synonyms = 3;
    const char *in[] = {"buy a car", "purchase an automobile", "sell a house",
                        "Acquire a VEHICLE"};
    Aos__Llm__EmbedReply *r = embed_ok(&cfg, in, 4);
    float near = sim_cosine(r->vectors[0]->values, r->vectors[1]->values, r->dim);
    float far = sim_cosine(r->vectors[0]->values, r->vectors[2]->values, r->dim);
    assert_true(near > 0.99f); /* every word maps to the same group */
    assert_true(far < near);
    assert_true(sim_cosine(r->vectors[3]->values, r->vectors[0]->values, r->dim) > 0.99f);
    sim_embed_free(r);

    /* without the synonyms the two phrasings are unrelated */
    cfg.n_synonyms = 0;
    r = embed_ok(&cfg, in, 4);
    near = sim_cosine(r->vectors[0]->values, r->vectors[1]->values, r->dim);
    far = sim_cosine(r->vectors[0]->values, r->vectors[2]->values, r->dim);
    assert_true(near < far); /* "sell a house" shares "a" */
    sim_embed_free(r);
}

static void embed_bounds(void **st)
{
    (void)st;
    Aos__Llm__SimSettings cfg = AOS__LLM__SIM_SETTINGS__INIT;
    const char *in[] = {"one two three"};
    static const uint32_t dims[] = {1, 7, 4096};
    for (size_t i = 0; i < 3; i++) {
        cfg.embed_dim = dims[i];
        Aos__Llm__EmbedReply *r = embed_ok(&cfg, in, 1);
        assert_int_equal(r->dim, dims[i]);
        assert_true(near1(norm2(r->vectors[0])));
        sim_embed_free(r);
    }
    Aos__Llm__EmbedRequest req = AOS__LLM__EMBED_REQUEST__INIT;
    Aos__Llm__EmbedReply *r = (Aos__Llm__EmbedReply *)1;
    char why[256];
    ProtobufCBinaryData one = {3, (uint8_t *)"abc"};
    req.inputs = &one;
    req.n_inputs = 1;
    cfg.embed_dim = 4097;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_ERR_USAGE);
    assert_null(r);
    assert_non_null(strstr(why, "4097"));
    cfg.embed_dim = 0;
    req.n_inputs = 0;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_ERR_USAGE);
    ProtobufCBinaryData *many = calloc(SIM_EMBED_MAX_INPUTS + 1, sizeof *many);
    assert_non_null(many);
    req.inputs = many;
    req.n_inputs = SIM_EMBED_MAX_INPUTS;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_OK);
    assert_int_equal(r->n_vectors, SIM_EMBED_MAX_INPUTS);
    sim_embed_free(r);
    req.n_inputs = SIM_EMBED_MAX_INPUTS + 1;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_null(r);
    uint8_t *huge = malloc(SIM_EMBED_MAX_INPUT_BYTES + 1);
    assert_non_null(huge);
    memset(huge, 'w', SIM_EMBED_MAX_INPUT_BYTES + 1);
    many[1] = (ProtobufCBinaryData){SIM_EMBED_MAX_INPUT_BYTES, huge};
    req.n_inputs = 2;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_OK);
    assert_int_equal(r->usage->input_tokens, 1); /* one 64 KiB word */
    sim_embed_free(r);
    many[1].len++;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_null(r);
    /* too many synonym words is a config error, not a slow embed */
    many[1].len = SIM_EMBED_MAX_INPUT_BYTES;
    for (size_t i = 0; i < SIM_EMBED_MAX_INPUT_BYTES; i += 2)
        huge[i] = ' ';
    ProtobufCBinaryData syn[3] = {{SIM_EMBED_MAX_INPUT_BYTES, huge},
                                  {SIM_EMBED_MAX_INPUT_BYTES, huge},
                                  {SIM_EMBED_MAX_INPUT_BYTES, huge}};
    cfg.synonyms = syn;
    cfg.n_synonyms = 2; /* 2 x 32768 words: the limit itself */
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_OK);
    sim_embed_free(r);
    cfg.n_synonyms = 3;
    assert_int_equal(sim_embed(&cfg, &req, &r, why, sizeof why), AOS_ERR_USAGE);
    assert_null(r);
    free(huge);
    free(many);
}

/* ---- the limiter ---------------------------------------------------------------------- */

static Aos__Llm__Limits limits(uint32_t conc, uint32_t rpm, uint32_t tpm)
{
    Aos__Llm__Limits l = AOS__LLM__LIMITS__INIT;
    l.max_concurrency = conc;
    l.requests_per_min = rpm;
    l.tokens_per_min = tpm;
    return l;
}

static void limiter_rpm(void **st)
{
    (void)st;
    Aos__Llm__Limits l = limits(0, 3, 0);
    sim_limiter *lim = sim_limiter_new(&l);
    assert_non_null(lim);
    uint64_t ra = 77, t0 = 1700000000000ull; /* an epoch-ms clock */
    assert_int_equal(sim_admit(lim, t0 + 0, 10, &ra), 0);
    assert_int_equal(ra, 0);
    assert_int_equal(sim_admit(lim, t0 + 100, 10, &ra), 0);
    assert_int_equal(sim_admit(lim, t0 + 2500, 10, &ra), 0);
    assert_int_equal(sim_admit(lim, t0 + 3000, 10, &ra), 429);
    assert_int_equal(ra, 57000);  /* the first second's two requests leave at t0 + 60 s */
    assert_int_equal(sim_admit(lim, t0 + 59999, 10, &ra), 429);
    assert_int_equal(ra, 1);
    /* the refusals counted too (seconds 3 and 59), as OpenAI counts them: a client
     * resending at once keeps itself out */
    assert_int_equal(sim_admit(lim, t0 + 60000, 10, &ra), 429);
    assert_int_equal(ra, 62000 - 60000); /* second 2's request leaves at t0 + 62 s */
    assert_int_equal(sim_admit(lim, t0 + 62000, 10, &ra), 429);
    assert_int_equal(ra, 1000);
    /* one that waits until its refusals have left gets in */
    assert_int_equal(sim_admit(lim, t0 + 121000, 10, &ra), 0);
    assert_int_equal(sim_admit(lim, t0 + 121001, 10, &ra), 0);
    assert_int_equal(sim_admit(lim, t0 + 121002, 10, &ra), 429);
    assert_int_equal(ra, 122000 - 121002); /* second 62's refusal leaves at t0 + 122 s */
    /* a clock that steps back is taken as standing still */
    assert_int_equal(sim_admit(lim, t0, 10, &ra), 429);
    assert_int_equal(ra, 181000 - 121002);
    sim_counts s;
    sim_limiter_counts(lim, &s);
    assert_int_equal(s.admitted, 5);
    assert_int_equal(s.refused, 6);
    assert_int_equal(s.tokens, 50);
    assert_int_equal(s.in_flight, 5);
    sim_limiter_free(lim);
}

static void limiter_tpm(void **st)
{
    (void)st;
    Aos__Llm__Limits l = limits(0, 0, 1000);
    sim_limiter *lim = sim_limiter_new(&l);
    assert_non_null(lim);
    uint64_t ra;
    assert_int_equal(sim_admit(lim, 1000, 600, &ra), 0);
    assert_int_equal(sim_admit(lim, 5500, 300, &ra), 0);
    assert_int_equal(sim_admit(lim, 10000, 100, &ra), 0); /* exactly the budget */
    assert_int_equal(sim_admit(lim, 10000, 1, &ra), 429);
    assert_int_equal(ra, 61000 - 10000); /* second 1's 600 tokens free enough */
    /* 1000 tokens need all of seconds 1 and 5 and 10 gone */
    assert_int_equal(sim_admit(lim, 10000, 1000, &ra), 429);
    assert_int_equal(ra, 70000 - 10000);
    /* 700 need seconds 1 and 5 gone */
    assert_int_equal(sim_admit(lim, 20000, 700, &ra), 429);
    assert_int_equal(ra, 65000 - 20000);
    assert_int_equal(sim_admit(lim, 65000, 700, &ra), 0);
    /* bigger than the whole budget: waits for an empty window, then passes */
    assert_int_equal(sim_admit(lim, 66000, 5000, &ra), 429);
    assert_int_equal(ra, 125000 - 66000);
    assert_int_equal(sim_admit(lim, 125000, 5000, &ra), 0);
    assert_int_equal(sim_admit(lim, 125001, 1, &ra), 429);
    assert_int_equal(ra, 185000 - 125001);
    sim_counts s;
    sim_limiter_counts(lim, &s);
    assert_int_equal(s.admitted, 5);
    assert_int_equal(s.refused, 5);
    assert_int_equal(s.tokens, 600 + 300 + 100 + 700 + 5000);
    sim_limiter_free(lim);
}

static void limiter_concurrency(void **st)
{
    (void)st;
    Aos__Llm__Limits l = limits(2, 10, 0);
    sim_limiter *lim = sim_limiter_new(&l);
    assert_non_null(lim);
    uint64_t ra;
    assert_int_equal(sim_admit(lim, 0, 1, &ra), 0);
    assert_int_equal(sim_admit(lim, 0, 1, &ra), 0);
    assert_int_equal(sim_admit(lim, 0, 1, &ra), 429);
    assert_int_equal(ra, SIM_CONCURRENCY_RETRY_MS);
    sim_release(lim);
    assert_int_equal(sim_admit(lim, 0, 1, NULL), 0);
    sim_release(lim);
    sim_release(lim);
    sim_release(lim); /* nothing in flight: ignored */
    sim_counts s;
    sim_limiter_counts(lim, &s);
    assert_int_equal(s.in_flight, 0);
    for (int i = 0; i < 4; i++) { /* 4 (the refusal counted) + 4 of the 10 a minute */
        assert_int_equal(sim_admit(lim, 30000, 1, &ra), 0);
        sim_release(lim);
    }
    /* both limits refuse (2 in flight, 10 this minute): the longer wait wins */
    assert_int_equal(sim_admit(lim, 30000, 1, &ra), 0);
    assert_int_equal(sim_admit(lim, 30000, 1, &ra), 0);
    assert_int_equal(sim_admit(lim, 30000, 1, &ra), 429);
    assert_int_equal(ra, 60000 - 30000);
    sim_limiter_free(lim);

    /* no limits at all */
    lim = sim_limiter_new(NULL);
    assert_non_null(lim);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(sim_admit(lim, 5, UINT64_MAX, &ra), 0);
    sim_limiter_counts(lim, &s);
    assert_int_equal(s.tokens, UINT64_MAX); /* saturates */
    assert_int_equal(s.in_flight, 10000);
    sim_limiter_free(lim);
    sim_limiter_free(NULL);
}

typedef struct {
    sim_limiter *lim;
    int admitted;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    for (int i = 0; i < 2000; i++)
        if (sim_admit(w->lim, (uint64_t)i, 1, NULL) == 0) {
            w->admitted++;
            sim_release(w->lim);
        }
    return NULL;
}

/* Four threads at once: the counters add up exactly. */
static void limiter_threads(void **st)
{
    (void)st;
    Aos__Llm__Limits l = limits(3, 0, 5000);
    sim_limiter *lim = sim_limiter_new(&l);
    assert_non_null(lim);
    pthread_t th[4];
    worker_arg wa[4];
    for (int i = 0; i < 4; i++) {
        wa[i] = (worker_arg){lim, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &wa[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += wa[i].admitted;
    }
    sim_counts s;
    sim_limiter_counts(lim, &s);
    assert_int_equal(s.admitted, (uint64_t)total);
    assert_int_equal(s.admitted + s.refused, 8000);
    assert_true(s.tokens <= 5000);
    assert_int_equal(s.tokens, s.admitted);
    assert_int_equal(s.in_flight, 0);
    sim_limiter_free(lim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deterministic),
        cmocka_unit_test(max_tokens_cut),
        cmocka_unit_test(tool_call_trigger),
        cmocka_unit_test(tool_call_non_triggers),
        cmocka_unit_test(script_conversation),
        cmocka_unit_test(script_expect_mismatch),
        cmocka_unit_test(script_cut),
        cmocka_unit_test(pacing),
        cmocka_unit_test(usage_and_cache),
        cmocka_unit_test(hostile_requests),
        cmocka_unit_test(embed_basics),
        cmocka_unit_test(embed_synonyms),
        cmocka_unit_test(embed_bounds),
        cmocka_unit_test(limiter_rpm),
        cmocka_unit_test(limiter_tpm),
        cmocka_unit_test(limiter_concurrency),
        cmocka_unit_test(limiter_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
