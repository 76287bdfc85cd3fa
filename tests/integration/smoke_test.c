/* Smoke test of the whole system: aosd starts every server and postgres, answers status,
 * routes a ping to each server, and leaves nothing behind on SIGTERM or on kill -9. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "aos.pb-c.h"
#include "harness.h"

static const char *const servers[] = {"memory", "storage", "tool", "llm", "audit", "api"};

static void test_status(void **state)
{
    (void)state;
    h_aosd *h = h_start(NULL);
    aos_reply r;
    assert_int_equal(aos_call(h_conn(h), NULL, "kernel.status", NULL, 0, &r), AOS_OK);
    Aos__StatusReply *s = aos__status_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(s);
    assert_int_equal(s->aosd_pid, h_aosd_pid(h));
    assert_string_equal(s->data_dir, h_data_dir(h));
    assert_string_equal(s->pg_mode, "embedded");
    assert_true(strlen(s->version) > 0);
    assert_true(s->n_children >= 6);
    for (size_t i = 0; i < s->n_children; i++) {
        const Aos__ChildStatus *c = s->children[i];
        assert_string_equal(c->state, "running");
        assert_true(c->pid > 0);
        assert_int_not_equal(c->pid, getpid());
    }
    aos__status_reply__free_unpacked(s, NULL);

    char out[8192];
    const char *const argv[] = {"status", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, argv), 0);
    assert_non_null(strstr(out, "storage"));
    h_stop(h);
}

/* Every server answers <name>.ping through aosd, from the process status names. */
static void test_ping_each_server(void **state)
{
    (void)state;
    h_aosd *h = h_start(NULL);
    for (size_t i = 0; i < sizeof servers / sizeof servers[0]; i++) {
        char method[64];
        snprintf(method, sizeof method, "%s.ping", servers[i]);
        Aos__PingRequest q = AOS__PING_REQUEST__INIT;
        q.data.data = (uint8_t *)"smoke";
        q.data.len = 5;
        uint8_t buf[64];
        size_t n = aos__ping_request__pack(&q, buf);
        aos_reply r;
        aos_err err = aos_call(h_conn(h), NULL, method, buf, n, &r);
        if (err != AOS_OK)
            fail_msg("%s: %s: %s", method, aos_err_name(err), r.error);
        Aos__PingReply *p = aos__ping_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        assert_non_null(p);
        assert_int_equal(p->data.len, 5);
        assert_memory_equal(p->data.data, "smoke", 5);
        assert_int_equal(p->pid, h_child(h, servers[i], NULL));
        aos__ping_reply__free_unpacked(p, NULL);
    }
    h_stop(h);
}

static void test_kill9_leaves_nothing(void **state)
{
    (void)state;
    h_aosd *h = h_start(NULL);
    assert_true(h_child(h, "postgres", NULL) > 0);
    h_kill9(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_ping_each_server),
        cmocka_unit_test(test_kill9_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
