/* Unit tests of the front door's wire formats: request decoding (good and hostile bodies),
 * replies and streams as each API's clients read them, and the one error table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "front.h"

#define S(x) x, strlen(x)

static void error_table(void **st)
{
    (void)st;
    struct {
        aos_err e;
        int http;
        const char *oai, *ant;
        int ra;
    } want[] = {
        {AOS_ERR_UNAUTHENTICATED, 401, "invalid_request_error", "authentication_error", 0},
        {AOS_ERR_REFUSED, 403, "permission_error", "permission_error", 0},
        {AOS_ERR_QUOTA, 429, "insufficient_quota", "rate_limit_error", 0},
        {AOS_ERR_RATE_LIMITED, 429, "requests", "rate_limit_error", 1},
        {AOS_ERR_TIMEOUT, 504, "timeout", "timeout_error", 0},
        {AOS_ERR_UNAVAILABLE, 503, "server_error", "overloaded_error", 1},
        {AOS_ERR_USAGE, 400, "invalid_request_error", "invalid_request_error", 0},
        {AOS_ERR_INTERNAL, 500, "server_error", "api_error", 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        front_error o = front_error_of(want[i].e, FRONT_OPENAI, "x");
        front_error a = front_error_of(want[i].e, FRONT_ANTHROPIC, NULL);
        assert_int_equal(o.http, want[i].http);
        assert_int_equal(a.http, want[i].http);
        assert_string_equal(o.type, want[i].oai);
        assert_string_equal(a.type, want[i].ant);
        assert_int_equal(o.retry_after, want[i].ra);
    }
    assert_string_equal(front_error_of(AOS_ERR_UNAUTHENTICATED, FRONT_OPENAI, NULL).code,
                        "invalid_api_key");
    /* context: the scheduler's budget refusal is a quota to the clients, not a permission */
    front_error q = front_error_of(AOS_ERR_REFUSED, FRONT_OPENAI,
                                   "agent 'a' is over its token budget: 9 used");
    assert_int_equal(q.http, 429);
    assert_string_equal(q.code, "insufficient_quota");
    assert_string_equal(front_error_of(AOS_ERR_REFUSED, FRONT_ANTHROPIC, "over its cost budget")
                            .type,
                        "rate_limit_error");
    assert_int_equal(front_error_of(AOS_ERR_REFUSED, FRONT_OPENAI, "may use the model x").http,
                     403);
    size_t len;
    char *b = front_error_body(AOS_ERR_UNAUTHENTICATED, FRONT_OPENAI, "bad \xff key", &len);
    json_t *o = json_loads(b, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "error"), "code")),
                        "invalid_api_key");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "error"), "message")),
        "bad ? key");
    json_decref(o);
    free(b);
    b = front_error_body(AOS_ERR_REFUSED, FRONT_ANTHROPIC, "no", &len);
    o = json_loads(b, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "error");
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "error"), "type")),
                        "permission_error");
    json_decref(o);
    free(b);
}

static void openai_request(void **st)
{
    (void)st;
    const char *body =
        "{\"model\":\"sim-1\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"max_tokens\":50,\"temperature\":0.5,\"stop\":[\"END\"],\"user\":\"ignored\","
        "\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"weather?\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"c\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":"
        "{\"type\":\"object\"}}}],\"tool_choice\":\"auto\"}";
    Aos__Llm__ChatRequest *r = NULL;
    int stream = 0, usage = 0;
    char why[256];
    assert_int_equal(front_openai_chat(S(body), &r, &stream, &usage, why, sizeof why), AOS_OK);
    assert_true(stream && usage);
    assert_int_equal(r->n_messages, 4);
    assert_int_equal(r->messages[0]->role, AOS__LLM__ROLE__SYSTEM);
    assert_int_equal(r->messages[2]->n_tool_calls, 1);
    assert_memory_equal(r->messages[2]->tool_calls[0]->arguments.data, "{\"c\":1}", 7);
    assert_int_equal(r->messages[3]->role, AOS__LLM__ROLE__TOOL);
    assert_memory_equal(r->messages[3]->tool_call_id.data, "call_1", 6);
    assert_int_equal(r->n_tools, 1);
    assert_memory_equal(r->tools[0]->input_schema.data, "{\"type\":\"object\"}", 17);
    assert_int_equal(r->max_tokens, 50);
    assert_int_equal(r->n_stop, 1);
    assert_true(r->has_temperature);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    const char *bad[] = {
        "",
        "[]",
        "{\"model\":\"m\"}",
        "{\"model\":\"m\",\"messages\":[]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"temperature\":9,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"model\":\"n\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\":1,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = 0;
        assert_int_equal(front_openai_chat(S(bad[i]), &r, &stream, &usage, why, sizeof why),
                         AOS_ERR_USAGE);
        assert_null(r);
        assert_true(why[0]);
    }
}

static void anthropic_request(void **st)
{
    (void)st;
    const char *body =
        "{\"model\":\"sim-1\",\"max_tokens\":64,\"system\":\"brief\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\","
        "\"name\":\"get\",\"input\":{\"c\":1}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\","
        "\"content\":\"sunny\",\"is_error\":true},{\"type\":\"text\",\"text\":\"and?\"}]}],"
        "\"tools\":[{\"name\":\"get\",\"description\":\"d\",\"input_schema\":{\"type\":"
        "\"object\"}}],\"tool_choice\":{\"type\":\"any\"}}";
    Aos__Llm__ChatRequest *r = NULL;
    int stream = 1;
    char why[256];
    assert_int_equal(front_anthropic_messages(S(body), &r, &stream, why, sizeof why), AOS_OK);
    assert_false(stream);
    assert_int_equal(r->n_messages, 5); /* system, user, assistant, tool, user */
    assert_int_equal(r->messages[3]->role, AOS__LLM__ROLE__TOOL);
    assert_true(r->messages[3]->is_error);
    assert_memory_equal(r->tool_choice.data, "required", 8);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* max_tokens is required by Anthropic's API */
    assert_int_equal(front_anthropic_messages(
                         S("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}"),
                         &r, &stream, why, sizeof why),
                     AOS_ERR_USAGE);
}

static void embeddings_base64(void **st)
{
    (void)st;
    Aos__Llm__EmbedRequest *r = NULL;
    int b64 = 0;
    char why[256];
    assert_int_equal(front_openai_embed(S("{\"model\":\"e\",\"input\":\"x\","
                                          "\"encoding_format\":\"base64\"}"),
                                        &r, &b64, why, sizeof why),
                     AOS_OK);
    assert_true(b64);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    float vals[2] = {1.0f, -2.0f};
    Aos__Llm__Embedding e = AOS__LLM__EMBEDDING__INIT, *ep = &e;
    e.n_values = 2;
    e.values = vals;
    Aos__Llm__EmbedReply rep = AOS__LLM__EMBED_REPLY__INIT;
    rep.n_vectors = 1;
    rep.vectors = &ep;
    size_t len;
    char *b = front_openai_embed_reply(&rep, "e", 1, &len);
    /* 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0 (little-endian) */
    assert_non_null(strstr(b, "\"embedding\":\"AACAPwAAAMA=\""));
    free(b);
}

static Aos__Llm__ChatReply *reply_with_call(void)
{
    static Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT;
    static Aos__Llm__ToolCall call = AOS__LLM__TOOL_CALL__INIT;
    static Aos__Llm__ContentPart *parts[1] = {&part};
    static Aos__Llm__ToolCall *calls[1] = {&call};
    static Aos__Llm__Message m = AOS__LLM__MESSAGE__INIT;
    static Aos__Llm__Usage u = AOS__LLM__USAGE__INIT;
    static Aos__Llm__ChatReply r = AOS__LLM__CHAT_REPLY__INIT;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = (ProtobufCBinaryData){5, (uint8_t *)"hello"};
    call.id = (ProtobufCBinaryData){6, (uint8_t *)"call_9"};
    call.name = (ProtobufCBinaryData){3, (uint8_t *)"get"};
    call.arguments = (ProtobufCBinaryData){7, (uint8_t *)"{\"c\":2}"};
    m.role = AOS__LLM__ROLE__ASSISTANT;
    m.n_content = 1;
    m.content = parts;
    m.n_tool_calls = 1;
    m.tool_calls = calls;
    u.input_tokens = 10;
    u.output_tokens = 3;
    r.message = &m;
    r.usage = &u;
    r.stop_reason = AOS__LLM__STOP_REASON__TOOL_USE;
    return &r;
}

static void replies(void **st)
{
    (void)st;
    size_t len;
    char *b = front_openai_reply(reply_with_call(), "chatcmpl-x", "sim-1", 7, &len);
    json_t *o = json_loads(b, 0, NULL);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    json_t *msg = json_object_get(ch, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "hello");
    json_t *tc = json_array_get(json_object_get(msg, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(tc, "function"),
                                                          "arguments")),
                        "{\"c\":2}");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "usage"),
                                                        "total_tokens")),
                     13);
    json_decref(o);
    free(b);
    b = front_anthropic_reply(reply_with_call(), "msg_x", "sim-1", &len);
    o = json_loads(b, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "stop_reason")), "tool_use");
    json_t *tu = json_array_get(json_object_get(o, "content"), 1);
    assert_string_equal(json_string_value(json_object_get(tu, "type")), "tool_use");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(tu, "input"), "c")), 2);
    json_decref(o);
    free(b);
}

typedef struct {
    char buf[8192];
    size_t n;
} sink;

static int collect(void *arg, const char *b, size_t n)
{
    sink *s = arg;
    if (s->n + n >= sizeof s->buf)
        return -1;
    memcpy(s->buf + s->n, b, n);
    s->n += n;
    s->buf[s->n] = 0;
    return 0;
}

static void streams(void **st)
{
    (void)st;
    Aos__Llm__ChatDelta d = AOS__LLM__CHAT_DELTA__INIT;
    d.text = (ProtobufCBinaryData){3, (uint8_t *)"hel"};
    uint8_t pk[256];
    size_t pl = aos__llm__chat_delta__pack(&d, pk);
    sink s = {.n = 0};
    front_sse *e = front_sse_new(FRONT_OPENAI, "chatcmpl-1", "sim-1", 1, 1, collect, &s);
    assert_int_equal(front_sse_delta(e, pk, pl), 0);
    assert_int_equal(front_sse_end(e, reply_with_call(), AOS_OK, NULL), 0);
    assert_non_null(strstr(s.buf, "\"content\":\"hel\""));
    assert_non_null(strstr(s.buf, "\"finish_reason\":\"tool_calls\""));
    assert_non_null(strstr(s.buf, "\"total_tokens\":13"));
    assert_non_null(strstr(s.buf, "data: [DONE]\n\n"));
    front_sse_free(e);
    s.n = 0;
    e = front_sse_new(FRONT_ANTHROPIC, "msg_1", "sim-1", 1, 0, collect, &s);
    assert_int_equal(front_sse_delta(e, pk, pl), 0);
    assert_int_equal(front_sse_end(e, reply_with_call(), AOS_OK, NULL), 0);
    const char *order[] = {"event: message_start", "event: content_block_start",
                           "event: content_block_delta", "event: content_block_stop",
                           "event: message_delta", "event: message_stop"};
    const char *at = s.buf;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        at = strstr(at, order[i]);
        assert_non_null(at);
    }
    front_sse_free(e);
    /* a part that is no ChatDelta is refused */
    e = front_sse_new(FRONT_OPENAI, "x", "m", 1, 0, collect, &s);
    assert_int_equal(front_sse_delta(e, (const uint8_t *)"\xff\xff\xff", 3), -1);
    front_sse_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_table),    cmocka_unit_test(openai_request),
        cmocka_unit_test(anthropic_request), cmocka_unit_test(replies),
        cmocka_unit_test(streams),        cmocka_unit_test(embeddings_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
