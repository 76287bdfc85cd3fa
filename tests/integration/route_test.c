/* The router against a real aosd: the method table (unknown methods, payload caps, who may
 * call) and servers calling servers through their links (a call, a cycle, a deadline). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "aos.pb-c.h"
#include "harness.h"

static h_aosd *H;

static int setup(void **st)
{
    (void)st;
    const char *args[] = {"--test-hooks", NULL};
    H = h_start(args);
    return H ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

static aos_err call(const char *method, const void *pl, size_t len, uint32_t ms, aos_reply *r)
{
    aos_call_opts o = {.timeout_ms = ms};
    return aos_call(h_conn(H), &o, method, pl, len, r);
}

static void an_unknown_method_is_refused_by_aosd(void **st)
{
    (void)st;
    aos_reply r;
    assert_int_equal(call("storage.no.such", NULL, 0, 5000, &r), AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(r.error, "no method storage.no.such"));
    aos_reply_clear(&r);
    assert_int_equal(call("nosuch.ping", NULL, 0, 5000, &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
}

static void a_payload_over_the_methods_cap_is_refused(void **st)
{
    (void)st;
    size_t n = 200u << 10; /* kernel.status takes 64 KiB at most */
    uint8_t *big = calloc(1, n);
    aos_reply r;
    assert_int_equal(call("kernel.status", big, n, 5000, &r), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(r.error, "at most"));
    aos_reply_clear(&r);
    free(big);
}

static void a_pull_without_a_stream_is_not_found(void **st)
{
    (void)st;
    Aos__StreamNext sn = AOS__STREAM_NEXT__INIT;
    uint8_t buf[16];
    size_t len = aos__stream_next__pack(&sn, buf);
    aos_reply r;
    assert_int_equal(call("kernel.stream.next", buf, len, 5000, &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
    assert_int_equal(call("kernel.stream.cancel", NULL, 0, 5000, &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
}

/* storage.test.call asks storage to call `method` through its own link. */
static size_t pack_call(uint8_t *buf, const char *method, const uint8_t *pl, size_t len,
                        uint32_t timeout_ms)
{
    Aos__TestCallRequest q = AOS__TEST_CALL_REQUEST__INIT;
    q.method = (char *)method;
    q.payload.data = (uint8_t *)pl;
    q.payload.len = len;
    q.timeout_ms = timeout_ms;
    return aos__test_call_request__pack(&q, buf);
}

static void a_server_calls_another_server(void **st)
{
    (void)st;
    Aos__PingRequest pq = AOS__PING_REQUEST__INIT;
    pq.data.data = (uint8_t *)"via storage";
    pq.data.len = 11;
    uint8_t ping[64], buf[256];
    size_t pl = aos__ping_request__pack(&pq, ping);
    size_t len = pack_call(buf, "memory.ping", ping, pl, 0);
    aos_reply r;
    assert_int_equal(call("storage.test.call", buf, len, 10000, &r), AOS_OK);
    Aos__PingReply *pr = aos__ping_reply__unpack(NULL, r.payload_len, r.payload);
    assert_non_null(pr);
    assert_int_equal(pr->data.len, 11);
    assert_memory_equal(pr->data.data, "via storage", 11);
    assert_int_equal(pr->pid, h_child(H, "memory", NULL));
    aos__ping_reply__free_unpacked(pr, NULL);
    aos_reply_clear(&r);
}

static void a_call_cycle_is_refused_not_deadlocked(void **st)
{
    (void)st;
    uint8_t inner[256], outer[512];
    aos_reply r;
    /* storage -> storage */
    size_t len = pack_call(outer, "storage.ping", NULL, 0, 0);
    assert_int_equal(call("storage.test.call", outer, len, 10000, &r), AOS_ERR_REFUSED);
    assert_non_null(strstr(r.error, "cycle"));
    aos_reply_clear(&r);
    /* storage -> memory -> storage */
    size_t il = pack_call(inner, "storage.ping", NULL, 0, 0);
    len = pack_call(outer, "memory.test.call", inner, il, 0);
    assert_int_equal(call("storage.test.call", outer, len, 10000, &r), AOS_ERR_REFUSED);
    assert_non_null(strstr(r.error, "cycle"));
    aos_reply_clear(&r);
    /* storage -> memory -> tool is no cycle */
    il = pack_call(inner, "tool.ping", NULL, 0, 0);
    len = pack_call(outer, "memory.test.call", inner, il, 0);
    assert_int_equal(call("storage.test.call", outer, len, 10000, &r), AOS_OK);
    aos_reply_clear(&r);
}

static void a_server_may_not_call_the_kernel(void **st)
{
    (void)st;
    uint8_t buf[256];
    size_t len = pack_call(buf, "kernel.server.kill", NULL, 0, 0);
    aos_reply r;
    aos_err rc = call("storage.test.call", buf, len, 10000, &r);
    assert_true(rc == AOS_ERR_NOT_FOUND || rc == AOS_ERR_REFUSED);
    aos_reply_clear(&r);
    assert_true(h_child(H, "storage", NULL) > 0);
}

/* The inner call inherits the outer request's deadline even when it asks for more. */
static void the_callers_deadline_travels_with_the_call(void **st)
{
    (void)st;
    Aos__TestAsyncRequest aq = AOS__TEST_ASYNC_REQUEST__INIT;
    aq.delay_ms = 5000;
    uint8_t a[64], buf[256];
    size_t al = aos__test_async_request__pack(&aq, a);
    /* storage -> memory.test.async (5 s), asking 60 s, under an outer deadline of 1 s */
    size_t len = pack_call(buf, "memory.test.async", a, al, 60000);
    aos_reply r;
    uint64_t t0 = aos_mono_ms();
    aos_err rc = call("storage.test.call", buf, len, 1000, &r);
    uint64_t took = aos_mono_ms() - t0;
    assert_int_equal(rc, AOS_ERR_TIMEOUT);
    assert_true(took < 4000);
    aos_reply_clear(&r);
    /* and the inner call was cut at that deadline too: memory answers again at once */
    assert_int_equal(call("memory.ping", NULL, 0, 5000, &r), AOS_OK);
    aos_reply_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_unknown_method_is_refused_by_aosd),
        cmocka_unit_test(a_payload_over_the_methods_cap_is_refused),
        cmocka_unit_test(a_pull_without_a_stream_is_not_found),
        cmocka_unit_test(a_server_calls_another_server),
        cmocka_unit_test(a_call_cycle_is_refused_not_deadlocked),
        cmocka_unit_test(a_server_may_not_call_the_kernel),
        cmocka_unit_test(the_callers_deadline_travels_with_the_call),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
