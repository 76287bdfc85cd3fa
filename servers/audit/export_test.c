/* Unit tests of the record-to-span mapping: GenAI attributes for LLM calls and tool runs,
 * an LLM reply that names its request's model, ids derived for records without, status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sodium.h>

#include "export.h"

static const otlp_attr *find(const otlp_span *s, const char *key)
{
    for (unsigned i = 0; i < s->n_attrs; i++)
        if (!strcmp(s->attrs[i].key, key))
            return &s->attrs[i];
    return NULL;
}

static const char *str(const otlp_span *s, const char *key)
{
    const otlp_attr *a = find(s, key);
    return a && a->type == OTLP_ATTR_STRING ? a->v.s : NULL;
}

static void rec(audit_rec *r, uint64_t seq, const char *kind, const char *body)
{
    memset(r, 0, sizeof *r);
    r->seq = seq;
    r->time_ns = 1800000000000000000ull + seq * 1000000u;
    r->kind = kind;
    r->kind_len = strlen(kind);
    r->agent = "alice";
    r->agent_len = 5;
    r->method = "llm.chat";
    r->method_len = 8;
    r->body = (const uint8_t *)body;
    r->body_len = strlen(body);
    r->latency_us = 250;
    memset(r->trace_id, 0xab, sizeof r->trace_id);
    memset(r->parent_span_id, 0x11, sizeof r->parent_span_id);
}

static void an_llm_call_is_a_genai_inference_span(void **st)
{
    (void)st;
    aexp *x = aexp_mapper();
    assert_non_null(x);
    audit_rec r;
    otlp_span s;
    char why[256];
    rec(&r, 10, "llm.request", "{\"model\":\"gpt-x\",\"provider\":\"openai\",\"messages\":[]}");
    aexp_span_of(x, &r, &s);
    assert_int_equal(otlp_span_check(&s, why, sizeof why), AOS_OK);
    assert_string_equal(s.name, "chat gpt-x");
    assert_string_equal(str(&s, "gen_ai.operation.name"), "chat");
    assert_string_equal(str(&s, "gen_ai.provider.name"), "openai");
    assert_string_equal(str(&s, "gen_ai.request.model"), "gpt-x");
    assert_string_equal(str(&s, "gen_ai.agent.name"), "alice");
    uint64_t req_time = r.time_ns;
    /* the reply: same parent span (the syscall's), usage, the model learnt from its request */
    rec(&r, 12, "llm.reply", "{\"usage\":{\"input_tokens\":31,\"output_tokens\":7},\"text\":[]}");
    aexp_span_of(x, &r, &s);
    assert_int_equal(otlp_span_check(&s, why, sizeof why), AOS_OK);
    assert_int_equal(s.kind, OTLP_KIND_CLIENT);
    assert_string_equal(s.name, "chat gpt-x");
    assert_string_equal(str(&s, "gen_ai.request.model"), "gpt-x");
    assert_int_equal(find(&s, "gen_ai.usage.input_tokens")->v.i, 31);
    assert_int_equal(find(&s, "gen_ai.usage.output_tokens")->v.i, 7);
    assert_int_equal(s.start_ns, req_time); /* the call ran from its request to its reply */
    assert_int_equal(s.end_ns, r.time_ns);
    assert_int_equal(find(&s, "aos.seq")->v.i, 12);
    /* an embedding */
    rec(&r, 13, "llm.request", "{\"model\":\"e1\",\"provider\":\"sim\",\"inputs_blake2b\":[]}");
    aexp_span_of(x, &r, &s);
    assert_string_equal(str(&s, "gen_ai.operation.name"), "embeddings");
    /* a body that is not JSON still gives a span */
    rec(&r, 14, "llm.reply", "\xff\xfe not json");
    aexp_span_of(NULL, &r, &s);
    assert_int_equal(otlp_span_check(&s, why, sizeof why), AOS_OK);
    assert_string_equal(s.name, "chat");
    aexp_free(x);
}

static void a_tool_run_and_a_syscall(void **st)
{
    (void)st;
    audit_rec r;
    otlp_span s, s2;
    char why[256];
    rec(&r, 20, "tool.run", "{\"tool\":\"grep\",\"exit_status\":1}");
    aexp_span_of(NULL, &r, &s);
    assert_string_equal(s.name, "execute_tool grep");
    assert_string_equal(str(&s, "gen_ai.operation.name"), "execute_tool");
    assert_string_equal(str(&s, "gen_ai.tool.name"), "grep");
    assert_int_equal(find(&s, "aos.tool.exit_status")->v.i, 1);
    /* a syscall without trace nor span: ids derived from its seq, never zero, stable */
    rec(&r, 21, "syscall", "{}");
    memset(r.trace_id, 0, sizeof r.trace_id);
    memset(r.parent_span_id, 0, sizeof r.parent_span_id);
    r.method = "storage.kv.put";
    r.method_len = 14;
    r.status = AOS_ERR_NOT_FOUND;
    aexp_span_of(NULL, &r, &s);
    aexp_span_of(NULL, &r, &s2);
    assert_int_equal(otlp_span_check(&s, why, sizeof why), AOS_OK);
    assert_memory_equal(s.trace_id, s2.trace_id, 16);
    assert_memory_equal(s.span_id, s2.span_id, 8);
    assert_string_equal(s.name, "storage.kv.put");
    assert_int_equal(s.kind, OTLP_KIND_SERVER);
    assert_int_equal(s.status, OTLP_STATUS_ERROR);
    assert_string_equal(s.status_message, "NOT_FOUND");
    assert_string_equal(str(&s, "aos.method"), "storage.kv.put");
    assert_int_equal(s.end_ns - s.start_ns, 250000);
    r.seq = 22;
    aexp_span_of(NULL, &r, &s2);
    assert_memory_not_equal(s.span_id, s2.span_id, 8);
    /* a span encodes */
    char *js;
    size_t n;
    assert_int_equal(otlp_encode(&s, 1, NULL, 0, "aos", NULL, &js, &n, why, sizeof why),
                     AOS_OK);
    assert_non_null(strstr(js, "\"storage.kv.put\""));
    free(js);
}

static void no_endpoint_no_exporter(void **st)
{
    (void)st;
    aexp *x = (aexp *)1;
    char why[256];
    assert_int_equal(aexp_new(NULL, 0, &x, why, sizeof why), AOS_OK);
    assert_null(x);
    assert_int_equal(aexp_wanted(NULL, 0), 0);
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_equal(aexp_wanted(junk, sizeof junk), 0);
    assert_int_equal(aexp_new(junk, sizeof junk, &x, why, sizeof why), AOS_ERR_PROTO);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_llm_call_is_a_genai_inference_span),
        cmocka_unit_test(a_tool_run_and_a_syscall),
        cmocka_unit_test(no_endpoint_no_exporter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
