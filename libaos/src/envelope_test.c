/* Unit tests of the envelope codec: round trips, every validation rule of aos_env_decode,
 * the UTF-8 and charset checks, and aos_pb_strings_valid on nested and repeated messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aos.pb-c.h"
#include "aos/envelope.h"

/* ---- helpers ------------------------------------------------------------------------ */

/* Byte strings that may hold NULs: the length comes from the literal. */
typedef struct { const char *s; size_t n; } bytes_t;
#define B(lit) {lit, sizeof(lit) - 1}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {.len = n, .data = (uint8_t *)p};
    return b;
}

static ProtobufCBinaryData txt(const char *s)
{
    return bin(s, strlen(s));
}

static const uint8_t RID[AOS_ID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t TID[AOS_ID_LEN] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                                        0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
static const uint8_t SID[AOS_SPAN_LEN] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7};

/* A raw protobuf envelope that passes every rule: a request to storage.ping. Tests break
 * one thing at a time, so each rejection is known to come from that one rule. */
static Aos__Envelope valid_pb(void)
{
    Aos__Envelope pb = AOS__ENVELOPE__INIT;
    pb.version = AOS_WIRE_VERSION;
    pb.kind = AOS__KIND__REQUEST;
    pb.request_id = bin(RID, sizeof RID);
    pb.method = txt("storage.ping");
    return pb;
}

/* Packs pb and decodes it; the packed bytes are freed before returning. */
static aos_err decode_pb(const Aos__Envelope *pb, aos_env *e, char *why, size_t whylen)
{
    size_t n = aos__envelope__get_packed_size(pb);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    aos__envelope__pack(pb, buf);
    aos_err err = aos_env_decode(buf, n, e, why, whylen);
    free(buf);
    return err;
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* pb must be rejected with PROTO, a message naming the rule, and an empty envelope. */
static void expect_reject(const Aos__Envelope *pb, const char *why_part)
{
    aos_env e;
    memset(&e, 0x5a, sizeof e); /* decode must not leave anything behind, garbage included */
    char why[256] = "";
    assert_int_equal(decode_pb(pb, &e, why, sizeof why), AOS_ERR_PROTO);
    if (!strstr(why, why_part))
        fail_msg("expected a message with \"%s\", got \"%s\"", why_part, why);
    assert_true(all_zero(&e, sizeof e));
    aos_env_clear(&e);
}

static void expect_accept(const Aos__Envelope *pb)
{
    aos_env e;
    char why[256] = "";
    aos_err err = decode_pb(pb, &e, why, sizeof why);
    if (err != AOS_OK)
        fail_msg("expected accept, got %s: %s", aos_err_name(err), why);
    aos_env_clear(&e);
}

/* Encodes e and decodes the result into *out (caller clears it). */
static void round_trip(const aos_env *e, aos_env *out)
{
    nng_msg *m = NULL;
    assert_int_equal(aos_env_encode(e, &m), AOS_OK);
    assert_non_null(m);
    char why[256] = "";
    aos_err err = aos_env_decode(nng_msg_body(m), nng_msg_len(m), out, why, sizeof why);
    nng_msg_free(m);
    if (err != AOS_OK)
        fail_msg("round trip decode failed: %s", why);
}

/* ---- round trips -------------------------------------------------------------------- */

static void test_round_trip_full(void **state)
{
    (void)state;
    static const uint8_t payload[] = {0, 1, 2, 0xff, 0xfe, 0, 'x'};
    aos_env e, d;
    aos_env_init(&e, AOS_KIND_REQUEST);
    memcpy(e.request_id, RID, AOS_ID_LEN);
    e.has_request_id = 1;
    memcpy(e.trace_id, TID, AOS_ID_LEN);
    memcpy(e.span_id, SID, AOS_SPAN_LEN);
    e.has_trace = 1;
    e.deadline_ms = 1767225600123u;
    e.link_id = UINT64_MAX;
    e.status = 0;
    strcpy(e.method, "storage.kv.put");
    strcpy(e.agent_id, "agent:Alpha_1.b-2");
    e.payload = payload;
    e.payload_len = sizeof payload;

    round_trip(&e, &d);
    assert_int_equal(d.kind, AOS_KIND_REQUEST);
    assert_true(d.has_request_id);
    assert_memory_equal(d.request_id, RID, AOS_ID_LEN);
    assert_true(d.has_trace);
    assert_memory_equal(d.trace_id, TID, AOS_ID_LEN);
    assert_memory_equal(d.span_id, SID, AOS_SPAN_LEN);
    assert_int_equal(d.deadline_ms, 1767225600123u);
    assert_true(d.link_id == UINT64_MAX);
    assert_int_equal(d.status, 0);
    assert_string_equal(d.method, "storage.kv.put");
    assert_string_equal(d.agent_id, "agent:Alpha_1.b-2");
    assert_string_equal(d.error, "");
    assert_int_equal(d.payload_len, sizeof payload);
    assert_memory_equal(d.payload, payload, sizeof payload);
    assert_non_null(d.pb_);
    aos_env_clear(&d);
    assert_true(all_zero(&d, sizeof d));
}

static void test_round_trip_minimal_kinds(void **state)
{
    (void)state;
    static const int kinds[] = {AOS_KIND_REPLY, AOS_KIND_REPLY_PART, AOS_KIND_CANCEL,
                                AOS_KIND_READY, AOS_KIND_HEARTBEAT, AOS_KIND_STOP};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        aos_env e, d;
        aos_env_init(&e, kinds[i]);
        round_trip(&e, &d);
        assert_int_equal(d.kind, kinds[i]);
        assert_false(d.has_request_id);
        assert_false(d.has_trace);
        assert_string_equal(d.method, "");
        assert_string_equal(d.agent_id, "");
        assert_int_equal(d.payload_len, 0);
        aos_env_clear(&d);
    }
}

static void test_round_trip_error_reply(void **state)
{
    (void)state;
    aos_env e, d;
    aos_env_init(&e, AOS_KIND_REPLY);
    memcpy(e.request_id, RID, AOS_ID_LEN);
    e.has_request_id = 1;
    e.status = AOS_ERR_NOT_FOUND;
    strcpy(e.method, "storage.kv.get");
    strcpy(e.error, "key \"caf\xc3\xa9 \xf0\x9f\x98\x80\" not found");
    round_trip(&e, &d);
    assert_int_equal(d.status, AOS_ERR_NOT_FOUND);
    assert_string_equal(d.error, "key \"caf\xc3\xa9 \xf0\x9f\x98\x80\" not found");
    aos_env_clear(&d);
}

/* Limits are inclusive: a field of exactly its maximum length travels. */
static void test_round_trip_maximal_fields(void **state)
{
    (void)state;
    aos_env e, d;
    aos_env_init(&e, AOS_KIND_REPLY);
    memset(e.method, 'm', AOS_METHOD_MAX);
    e.method[1] = '.';
    memset(e.agent_id, 'A', AOS_AGENT_ID_MAX);
    memset(e.error, 'e', AOS_ERRMSG_MAX);
    e.status = AOS_ERR_IO;
    round_trip(&e, &d);
    assert_int_equal(strlen(d.method), AOS_METHOD_MAX);
    assert_string_equal(d.method, e.method);
    assert_int_equal(strlen(d.agent_id), AOS_AGENT_ID_MAX);
    assert_int_equal(strlen(d.error), AOS_ERRMSG_MAX);
    assert_string_equal(d.error, e.error);
    aos_env_clear(&d);
}

/* A payload that makes the envelope pass AOS_MSG_MAX cannot be encoded. */
static void test_encode_too_big(void **state)
{
    (void)state;
    size_t n = AOS_MSG_MAX;
    uint8_t *big = calloc(1, n);
    assert_non_null(big);
    aos_env e;
    aos_env_init(&e, AOS_KIND_REPLY);
    e.payload = big;
    e.payload_len = n;
    nng_msg *m = NULL;
    assert_int_equal(aos_env_encode(&e, &m), AOS_ERR_TOO_BIG);
    assert_null(m);

    /* just under the cap still goes, and decodes */
    e.payload_len = n - 64;
    assert_int_equal(aos_env_encode(&e, &m), AOS_OK);
    assert_true(nng_msg_len(m) <= AOS_MSG_MAX);
    aos_env d;
    assert_int_equal(aos_env_decode(nng_msg_body(m), nng_msg_len(m), &d, NULL, 0), AOS_OK);
    assert_int_equal(d.payload_len, n - 64);
    aos_env_clear(&d);
    nng_msg_free(m);
    free(big);
}

static void test_reply_to(void **state)
{
    (void)state;
    aos_env req, r;
    aos_env_init(&req, AOS_KIND_REQUEST);
    memcpy(req.request_id, RID, AOS_ID_LEN);
    req.has_request_id = 1;
    memcpy(req.trace_id, TID, AOS_ID_LEN);
    memcpy(req.span_id, SID, AOS_SPAN_LEN);
    req.has_trace = 1;
    req.link_id = 42;
    req.deadline_ms = 99;
    strcpy(req.method, "memory.page.get");
    strcpy(req.agent_id, "a1");

    aos_env_reply_to(&r, &req, AOS_ERR_QUOTA, "budget %d of %s", 7, "tokens");
    assert_int_equal(r.kind, AOS_KIND_REPLY);
    assert_true(r.has_request_id);
    assert_memory_equal(r.request_id, RID, AOS_ID_LEN);
    assert_true(r.has_trace);
    assert_memory_equal(r.trace_id, TID, AOS_ID_LEN);
    assert_memory_equal(r.span_id, SID, AOS_SPAN_LEN);
    assert_int_equal(r.link_id, 42);
    assert_int_equal(r.status, AOS_ERR_QUOTA);
    assert_string_equal(r.method, "memory.page.get");
    assert_string_equal(r.agent_id, "a1");
    assert_string_equal(r.error, "budget 7 of tokens");
    assert_null(r.payload);

    aos_env_reply_to(&r, &req, AOS_OK, NULL);
    assert_int_equal(r.status, AOS_OK);
    assert_string_equal(r.error, "");

    /* the reply encodes and decodes as itself */
    aos_env_reply_to(&r, &req, AOS_ERR_CONFLICT, "exists");
    aos_env d;
    round_trip(&r, &d);
    assert_int_equal(d.status, AOS_ERR_CONFLICT);
    assert_string_equal(d.error, "exists");
    assert_int_equal(d.link_id, 42);
    aos_env_clear(&d);
}

/* A message cut at the buffer's end must not end inside a UTF-8 sequence. */
static void test_reply_to_truncates_on_utf8_boundary(void **state)
{
    (void)state;
    char *longtxt = malloc(3 * AOS_ERRMSG_MAX + 1);
    assert_non_null(longtxt);
    for (size_t i = 0; i < AOS_ERRMSG_MAX; i++)
        memcpy(longtxt + 3 * i, "\xe2\x82\xac", 3); /* U+20AC, 3 bytes */
    longtxt[3 * AOS_ERRMSG_MAX] = 0;
    aos_env req, r;
    aos_env_init(&req, AOS_KIND_REQUEST);
    for (int skew = 0; skew < 3; skew++) {
        aos_env_reply_to(&r, &req, AOS_ERR_INTERNAL, "%.*s%s", skew, "ab", longtxt);
        size_t n = strlen(r.error);
        assert_true(n > 0 && n <= AOS_ERRMSG_MAX);
        assert_true(aos_utf8_valid(r.error, n));
        aos_env d;
        round_trip(&r, &d);
        assert_string_equal(d.error, r.error);
        aos_env_clear(&d);
    }
    free(longtxt);
}

static void test_clear_is_safe(void **state)
{
    (void)state;
    aos_env e;
    aos_env_init(&e, AOS_KIND_REQUEST);
    aos_env_clear(&e);
    aos_env_clear(&e);
    assert_true(all_zero(&e, sizeof e));
}

/* ---- validation: every rule of aos_env_decode --------------------------------------- */

static void test_valid_base_is_accepted(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    expect_accept(&pb);
}

static void test_reject_empty(void **state)
{
    (void)state;
    aos_env e;
    char why[128] = "";
    static const uint8_t none[1] = {0};
    assert_int_equal(aos_env_decode(none, 0, &e, why, sizeof why), AOS_ERR_PROTO);
    assert_non_null(strstr(why, "empty"));
    assert_true(all_zero(&e, sizeof e));
}

static void test_reject_too_big(void **state)
{
    (void)state;
    size_t n = (size_t)AOS_MSG_MAX + 1;
    uint8_t *buf = calloc(1, n);
    assert_non_null(buf);
    aos_env e;
    char why[128] = "";
    assert_int_equal(aos_env_decode(buf, n, &e, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "exceeds"));
    assert_true(all_zero(&e, sizeof e));
    free(buf);
}

static void test_reject_not_protobuf(void **state)
{
    (void)state;
    static const bytes_t bad[] = {
        B("\xff\xff\xff\xff"),                   /* a tag that never ends */
        B("\x5a\x10xx"),                         /* payload (11) claims 16 bytes, has 2 */
        B("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), /* varint of 11 bytes */
        B("\x0f"),                               /* wire type 7 does not exist */
        B("\x08"),                               /* field header without its value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        aos_env e;
        char why[128] = "";
        assert_int_equal(aos_env_decode(bad[i].s, bad[i].n, &e, why, sizeof why),
                         AOS_ERR_PROTO);
        assert_non_null(strstr(why, "not a protobuf envelope"));
        assert_true(all_zero(&e, sizeof e));
    }
}

static void test_reject_version(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.version = 0;
    expect_reject(&pb, "wire version");
    pb.version = AOS_WIRE_VERSION + 1;
    expect_reject(&pb, "wire version");
    pb.version = UINT32_MAX;
    expect_reject(&pb, "wire version");
}

static void test_reject_kind(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.kind = AOS__KIND__KIND_UNSPECIFIED;
    expect_reject(&pb, "envelope kind");
    pb.kind = (Aos__Kind)(AOS_KIND_STOP + 1);
    expect_reject(&pb, "envelope kind");
    pb.kind = (Aos__Kind)-1;
    expect_reject(&pb, "envelope kind");
    pb.kind = (Aos__Kind)1000;
    expect_reject(&pb, "envelope kind");
    pb.kind = (Aos__Kind)AOS_KIND_STOP;
    expect_accept(&pb);
}

static void test_reject_request_id(void **state)
{
    (void)state;
    static const uint8_t long_id[AOS_ID_LEN + 1] = {0};
    Aos__Envelope pb = valid_pb();
    pb.request_id = bin(RID, AOS_ID_LEN - 1);
    expect_reject(&pb, "request id must be 16 bytes");
    pb.request_id = bin(long_id, sizeof long_id);
    expect_reject(&pb, "request id must be 16 bytes");
    pb.request_id = bin(RID, 1);
    expect_reject(&pb, "request id must be 16 bytes");
    /* a reply with a wrong-sized id is as bad as a request */
    pb.kind = AOS__KIND__REPLY;
    pb.request_id = bin(RID, 8);
    expect_reject(&pb, "request id must be 16 bytes");
}

static void test_reject_request_without_id(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.request_id = bin(NULL, 0);
    expect_reject(&pb, "a request needs a 16-byte request id");
    /* other kinds may go without one */
    pb.kind = AOS__KIND__HEARTBEAT;
    expect_accept(&pb);
}

static void test_reject_trace_and_span(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.trace_id = bin(TID, 8);
    expect_reject(&pb, "trace id must be 16 bytes");
    pb.trace_id = bin(TID, AOS_ID_LEN);
    pb.span_id = bin(TID, AOS_ID_LEN);
    expect_reject(&pb, "span id must be 8 bytes");
    pb.span_id = bin(SID, 1);
    expect_reject(&pb, "span id must be 8 bytes");
    pb.span_id = bin(SID, AOS_SPAN_LEN);
    expect_accept(&pb);
}

static void test_reject_method(void **state)
{
    (void)state;
    char m65[AOS_METHOD_MAX + 2];
    memset(m65, 'a', sizeof m65);
    m65[3] = '.';
    static const bytes_t bad[] = {
        B("Storage.ping"),            /* upper case */
        B("storageping"),             /* no dot */
        B(".ping"),                   /* leading dot */
        B("storage."),                /* trailing dot */
        B("storage. ping"),           /* space */
        B("storage.p\0ng"),           /* embedded NUL */
        B("storage.p\xc3\xa9ng"),     /* non-ASCII, valid UTF-8 */
        B("storage/ping"),            /* slash */
        B("storage.ping\n"),          /* control character */
    };
    Aos__Envelope pb = valid_pb();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb.method = bin(bad[i].s, bad[i].n);
        expect_reject(&pb, "invalid method name");
    }
    pb.method = bin(m65, AOS_METHOD_MAX + 1);
    expect_reject(&pb, "invalid method name");
    pb.method = bin(m65, AOS_METHOD_MAX);
    expect_accept(&pb);
    pb.method = txt("a.b");
    expect_accept(&pb);
    pb.method = txt("kernel.server.re-start_2");
    expect_accept(&pb);
}

static void test_reject_request_without_method(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.method = bin(NULL, 0);
    expect_reject(&pb, "a request needs a method");
    pb.kind = AOS__KIND__REPLY;
    expect_accept(&pb);
}

static void test_reject_agent_id(void **state)
{
    (void)state;
    char a65[AOS_AGENT_ID_MAX + 1];
    memset(a65, 'a', sizeof a65);
    static const bytes_t bad[] = {
        B("agent 1"), B("agent/1"), B("a\0b"), B("caf\xc3\xa9"), B("a\"b"), B("a;b"),
        B("\xff"),
    };
    Aos__Envelope pb = valid_pb();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pb.agent_id = bin(bad[i].s, bad[i].n);
        expect_reject(&pb, "invalid agent id");
    }
    pb.agent_id = bin(a65, AOS_AGENT_ID_MAX + 1);
    expect_reject(&pb, "invalid agent id");
    pb.agent_id = bin(a65, AOS_AGENT_ID_MAX);
    expect_accept(&pb);
    pb.agent_id = txt("Agent_1.x:y-Z");
    expect_accept(&pb);
}

static void test_reject_status(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.kind = AOS__KIND__REPLY;
    pb.status = AOS_ERR_UNAUTHENTICATED + 1;
    expect_reject(&pb, "unknown status code");
    pb.status = -1;
    expect_reject(&pb, "unknown status code");
    pb.status = INT32_MIN;
    expect_reject(&pb, "unknown status code");
    pb.status = INT32_MAX;
    expect_reject(&pb, "unknown status code");
    pb.status = AOS_ERR_IO;
    expect_accept(&pb);
}

static void test_reject_error_text(void **state)
{
    (void)state;
    char big[AOS_ERRMSG_MAX + 1];
    memset(big, 'x', sizeof big);
    Aos__Envelope pb = valid_pb();
    pb.kind = AOS__KIND__REPLY;
    pb.status = AOS_ERR_INTERNAL;
    pb.error = bin(big, AOS_ERRMSG_MAX + 1);
    expect_reject(&pb, "error text");
    pb.error = bin("bad \xc0\xaf", 6);          /* overlong '/' */
    expect_reject(&pb, "error text");
    pb.error = bin("nul \0 inside", 12);
    expect_reject(&pb, "error text");
    pb.error = bin("cut \xe2\x82", 6);          /* truncated sequence at the end */
    expect_reject(&pb, "error text");
    pb.error = bin("\xed\xa0\x80", 3);          /* a surrogate */
    expect_reject(&pb, "error text");
    pb.error = bin(big, AOS_ERRMSG_MAX);
    expect_accept(&pb);
}

/* Fields a newer peer adds are skipped, so the table of fields can grow. */
static void test_unknown_fields_ignored(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    size_t n = aos__envelope__get_packed_size(&pb);
    uint8_t buf[256];
    assert_true(n + 4 <= sizeof buf);
    aos__envelope__pack(&pb, buf);
    /* field 99, varint 5: tag (99<<3|0) = 792 = 0x98 0x06 */
    buf[n] = 0x98;
    buf[n + 1] = 0x06;
    buf[n + 2] = 0x05;
    aos_env e;
    char why[128] = "";
    assert_int_equal(aos_env_decode(buf, n + 3, &e, why, sizeof why), AOS_OK);
    assert_string_equal(e.method, "storage.ping");
    aos_env_clear(&e);
}

/* The reason is optional and capped: NULL or a tiny buffer must not overflow. */
static void test_why_buffer(void **state)
{
    (void)state;
    Aos__Envelope pb = valid_pb();
    pb.version = 9;
    aos_env e;
    assert_int_equal(decode_pb(&pb, &e, NULL, 0), AOS_ERR_PROTO);
    char why[4] = {'z', 'z', 'z', 'z'};
    assert_int_equal(decode_pb(&pb, &e, why, sizeof why), AOS_ERR_PROTO);
    assert_int_equal(why[3], 0);
    assert_int_equal(strlen(why), 3);
    char one[1] = {'z'};
    assert_int_equal(decode_pb(&pb, &e, one, sizeof one), AOS_ERR_PROTO);
    assert_int_equal(one[0], 0);
}

/* ---- UTF-8 and charsets -------------------------------------------------------------- */

static void test_utf8_valid_cases(void **state)
{
    (void)state;
    static const bytes_t good[] = {
        B(""), B("plain ascii ~\x7f"), B("\xc2\x80"), B("caf\xc3\xa9"), B("\xdf\xbf"),
        B("\xe0\xa0\x80"),             /* U+0800, smallest 3-byte */
        B("\xed\x9f\xbf"),             /* U+D7FF, just below the surrogates */
        B("\xee\x80\x80"),             /* U+E000, just above them */
        B("\xef\xbf\xbf"),             /* U+FFFF */
        B("\xf0\x90\x80\x80"),         /* U+10000, smallest 4-byte */
        B("\xf0\x9f\x98\x80 ok"),      /* emoji */
        B("\xf4\x8f\xbf\xbf"),         /* U+10FFFF, the last code point */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!aos_utf8_valid(good[i].s, good[i].n))
            fail_msg("valid UTF-8 case %zu rejected", i);
}

static void test_utf8_invalid_cases(void **state)
{
    (void)state;
    static const bytes_t bad[] = {
        /* overlong forms */
        B("\xc0\x80"), B("\xc1\xbf"), B("\xc0\xaf"), B("\xe0\x80\x80"), B("\xe0\x9f\xbf"),
        B("\xf0\x80\x80\x80"), B("\xf0\x8f\xbf\xbf"),
        /* UTF-16 surrogates */
        B("\xed\xa0\x80"), B("\xed\xad\xbf"), B("\xed\xb0\x80"), B("\xed\xbf\xbf"),
        B("\xed\xa0\xbd\xed\xb8\x80"), /* a surrogate pair in CESU-8 */
        /* past U+10FFFF and impossible leads */
        B("\xf4\x90\x80\x80"), B("\xf5\x80\x80\x80"), B("\xf8\x88\x80\x80\x80"),
        B("\xfc\x84\x80\x80\x80\x80"), B("\xfe"), B("\xff"),
        /* truncated sequences, at the end and in the middle */
        B("\xc3"), B("\xe2\x82"), B("\xf0\x9f\x98"), B("ab\xc3"), B("\xe2\x82x"),
        B("\xf0\x9f\x98 x"),
        /* lone or stray continuation bytes */
        B("\x80"), B("a\xbf"), B("\xc3\xa9\xa9"),
        /* a bad continuation byte */
        B("\xc3\x28"), B("\xe2\x28\xa1"), B("\xf0\x9f\x28\x80"),
        /* NUL anywhere */
        {"\0", 1}, {"a\0b", 3}, {"ab\0", 3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (aos_utf8_valid(bad[i].s, bad[i].n))
            fail_msg("invalid UTF-8 case %zu accepted", i);
    /* the length is exact: a valid sequence cut by n is invalid */
    assert_false(aos_utf8_valid("\xc3\xa9", 1));
    assert_true(aos_utf8_valid("\xc3\xa9", 2));
}

static void test_method_and_agent_validators(void **state)
{
    (void)state;
    assert_true(aos_method_valid("kernel.status", 13));
    assert_true(aos_method_valid("a.b.c", 5));
    assert_false(aos_method_valid("", 0));
    assert_false(aos_method_valid("kernel", 6));
    assert_false(aos_method_valid("kernel.STATUS", 13));
    /* n is what counts, not a NUL */
    assert_false(aos_method_valid("kernel.status", 6));
    assert_true(aos_method_valid("kernel.status!", 13));

    assert_true(aos_agent_id_valid("A", 1));
    assert_true(aos_agent_id_valid("ns:agent-1.v_2", 14));
    assert_false(aos_agent_id_valid("", 0));
    assert_false(aos_agent_id_valid("a b", 3));
    assert_false(aos_agent_id_valid("a@b", 3));
}

/* ---- aos_pb_strings_valid ------------------------------------------------------------ */

/* A StatusReply with two children; the tests corrupt one string at a time. */
typedef struct {
    Aos__StatusReply sr;
    Aos__ChildStatus c[2];
    Aos__ChildStatus *cp[2];
} status_fixture;

static void status_init(status_fixture *f)
{
    Aos__StatusReply sr = AOS__STATUS_REPLY__INIT;
    Aos__ChildStatus c = AOS__CHILD_STATUS__INIT;
    f->sr = sr;
    f->sr.version = "0.1.0";
    f->sr.data_dir = "/var/lib/aos";
    f->sr.pg_mode = "embedded";
    for (int i = 0; i < 2; i++) {
        f->c[i] = c;
        f->c[i].name = i ? "storage" : "memory";
        f->c[i].state = "running";
        f->c[i].last_exit = "";
        f->c[i].reason = "";
        f->cp[i] = &f->c[i];
    }
    f->sr.n_children = 2;
    f->sr.children = f->cp;
}

static void test_pb_strings_status_reply(void **state)
{
    (void)state;
    status_fixture f;
    status_init(&f);
    assert_true(aos_pb_strings_valid(&f.sr.base));

    f.c[1].reason = "caf\xc3\xa9 \xf0\x9f\x98\x80"; /* valid multibyte stays valid */
    assert_true(aos_pb_strings_valid(&f.sr.base));

    f.c[1].reason = "bad \xc0\x80";                  /* overlong, in the 2nd child */
    assert_false(aos_pb_strings_valid(&f.sr.base));
    status_init(&f);
    f.c[0].name = "\xed\xa0\x80";                    /* surrogate, in the 1st child */
    assert_false(aos_pb_strings_valid(&f.sr.base));
    status_init(&f);
    f.c[0].last_exit = "exit \xe2\x82";              /* truncated */
    assert_false(aos_pb_strings_valid(&f.sr.base));
    status_init(&f);
    f.sr.version = "\xff";                           /* top-level field */
    assert_false(aos_pb_strings_valid(&f.sr.base));
    status_init(&f);
    f.sr.pg_mode = "\x80";
    assert_false(aos_pb_strings_valid(&f.sr.base));

    /* a child only fails when it is counted */
    status_init(&f);
    f.c[1].state = "\xff";
    f.sr.n_children = 1;
    assert_true(aos_pb_strings_valid(&f.sr.base));

    /* NULL message and NULL strings are fine */
    assert_true(aos_pb_strings_valid(NULL));
    status_init(&f);
    f.c[0].reason = NULL;
    f.sr.data_dir = NULL;
    assert_true(aos_pb_strings_valid(&f.sr.base));
}

/* Strings arrive unchecked from the wire: protobuf-c accepts them, the walker must not. */
static void test_pb_strings_from_wire(void **state)
{
    (void)state;
    status_fixture f;
    status_init(&f);
    f.c[1].state = "run\xc3\x28ning";
    size_t n = aos__status_reply__get_packed_size(&f.sr);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    aos__status_reply__pack(&f.sr, buf);
    Aos__StatusReply *u = aos__status_reply__unpack(NULL, n, buf);
    assert_non_null(u); /* protobuf-c does not look at UTF-8 */
    assert_int_equal(u->n_children, 2);
    assert_false(aos_pb_strings_valid(&u->base));
    aos__status_reply__free_unpacked(u, NULL);

    f.c[1].state = "running";
    n = aos__status_reply__pack(&f.sr, buf); /* shorter than before: fits */
    u = aos__status_reply__unpack(NULL, n, buf);
    assert_non_null(u);
    assert_true(aos_pb_strings_valid(&u->base));
    aos__status_reply__free_unpacked(u, NULL);
    free(buf);
}

/* A repeated message field (StatsReply.stats) and a message with only bytes fields. */
static void test_pb_strings_repeated_and_bytes(void **state)
{
    (void)state;
    Aos__Stat s[3] = {AOS__STAT__INIT, AOS__STAT__INIT, AOS__STAT__INIT};
    Aos__Stat *sp[3] = {&s[0], &s[1], &s[2]};
    s[0].name = "requests";
    s[1].name = "pg";
    s[1].text = "connected";
    s[2].name = "errors";
    Aos__StatsReply st = AOS__STATS_REPLY__INIT;
    st.n_stats = 3;
    st.stats = sp;
    assert_true(aos_pb_strings_valid(&st.base));
    s[2].text = "\xf4\x90\x80\x80"; /* past U+10FFFF, in the last element */
    assert_false(aos_pb_strings_valid(&st.base));
    s[2].text = "";
    s[0].name = "\xe0\x80\x80";
    assert_false(aos_pb_strings_valid(&st.base));

    st.n_stats = 0;
    st.stats = NULL;
    assert_true(aos_pb_strings_valid(&st.base));

    /* bytes are not text: any content passes */
    Aos__PingReply pr = AOS__PING_REPLY__INIT;
    pr.data = bin("\xff\x00\xc0\x80", 4);
    assert_true(aos_pb_strings_valid(&pr.base));
}

/* ---- small helpers -------------------------------------------------------------------- */

static void test_hex_and_ids(void **state)
{
    (void)state;
    char hex[2 * AOS_ID_LEN + 1];
    aos_hex(RID, AOS_ID_LEN, hex);
    assert_string_equal(hex, "0102030405060708090a0b0c0d0e0f10");
    aos_hex(SID, 0, hex);
    assert_string_equal(hex, "");
    static const uint8_t ends[2] = {0x00, 0xff};
    aos_hex(ends, 2, hex);
    assert_string_equal(hex, "00ff");

    uint8_t a[AOS_ID_LEN], b[AOS_ID_LEN];
    aos_id_random(a);
    aos_id_random(b);
    assert_memory_not_equal(a, b, AOS_ID_LEN); /* 2^-128 to be wrong */

    assert_true(aos_now_ms() > 1600000000000u); /* after 2020: the clock is epoch ms */
    uint64_t m1 = aos_mono_ms(), m2 = aos_mono_ms();
    assert_true(m2 >= m1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_full),
        cmocka_unit_test(test_round_trip_minimal_kinds),
        cmocka_unit_test(test_round_trip_error_reply),
        cmocka_unit_test(test_round_trip_maximal_fields),
        cmocka_unit_test(test_encode_too_big),
        cmocka_unit_test(test_reply_to),
        cmocka_unit_test(test_reply_to_truncates_on_utf8_boundary),
        cmocka_unit_test(test_clear_is_safe),
        cmocka_unit_test(test_valid_base_is_accepted),
        cmocka_unit_test(test_reject_empty),
        cmocka_unit_test(test_reject_too_big),
        cmocka_unit_test(test_reject_not_protobuf),
        cmocka_unit_test(test_reject_version),
        cmocka_unit_test(test_reject_kind),
        cmocka_unit_test(test_reject_request_id),
        cmocka_unit_test(test_reject_request_without_id),
        cmocka_unit_test(test_reject_trace_and_span),
        cmocka_unit_test(test_reject_method),
        cmocka_unit_test(test_reject_request_without_method),
        cmocka_unit_test(test_reject_agent_id),
        cmocka_unit_test(test_reject_status),
        cmocka_unit_test(test_reject_error_text),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_why_buffer),
        cmocka_unit_test(test_utf8_valid_cases),
        cmocka_unit_test(test_utf8_invalid_cases),
        cmocka_unit_test(test_method_and_agent_validators),
        cmocka_unit_test(test_pb_strings_status_reply),
        cmocka_unit_test(test_pb_strings_from_wire),
        cmocka_unit_test(test_pb_strings_repeated_and_bytes),
        cmocka_unit_test(test_hex_and_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
