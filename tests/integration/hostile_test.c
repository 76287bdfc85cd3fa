/* Hostile input on aosd's sockets: garbage, truncated, oversized, wrong-kind and
 * wrong-method envelopes, and an intruder on a server link -> errors, nothing breaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/protocol/reqrep0/req.h>

#include "aos.pb-c.h"
#include "harness.h"

static h_aosd *H;

static int setup(void **st)
{
    (void)st;
    H = h_start(NULL);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

static nng_socket raw_sock(void)
{
    char url[256];
    nng_socket s;
    assert_int_equal(aos_control_url(h_data_dir(H), url, sizeof url), AOS_OK);
    assert_int_equal(nng_req0_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    assert_int_equal(nng_dial(s, url, NULL, 0), 0);
    return s;
}

/* Send bytes, return the status of the reply (-1: no reply) and its error text. */
static int send_raw(const void *buf, size_t len, char *err, size_t cap)
{
    nng_socket s = raw_sock();
    int status = -1;
    if (nng_send(s, (void *)buf, len, 0) == 0) {
        nng_msg *m;
        if (nng_recvmsg(s, &m, 0) == 0) {
            aos_env e;
            char why[256];
            assert_int_equal(aos_env_decode(nng_msg_body(m), nng_msg_len(m), &e, why,
                                            sizeof why), AOS_OK);
            assert_int_equal(e.kind, AOS_KIND_REPLY);
            status = e.status;
            snprintf(err, cap, "%s", e.error);
            aos_env_clear(&e);
            nng_msg_free(m);
        }
    }
    nng_close(s);
    return status;
}

static size_t encode(const Aos__Envelope *pb, uint8_t **out)
{
    size_t n = aos__envelope__get_packed_size(pb);
    *out = malloc(n + 1);
    aos__envelope__pack(pb, *out);
    return n;
}

static void still_serves(void)
{
    aos_reply r;
    assert_int_equal(aos_call(h_conn(H), NULL, "storage.ping", NULL, 0, &r), AOS_OK);
    aos_reply_clear(&r);
    assert_int_equal(aos_call(h_conn(H), NULL, "kernel.status", NULL, 0, &r), AOS_OK);
    aos_reply_clear(&r);
}

static Aos__Envelope valid_request(uint8_t *id)
{
    Aos__Envelope pb = AOS__ENVELOPE__INIT;
    pb.version = AOS_WIRE_VERSION;
    pb.kind = (Aos__Kind)AOS_KIND_REQUEST;
    pb.request_id.data = id;
    pb.request_id.len = AOS_ID_LEN;
    pb.method.data = (uint8_t *)"storage.ping";
    pb.method.len = 12;
    return pb;
}

static void garbage_gets_a_protocol_error(void **st)
{
    (void)st;
    char err[1100];
    uint8_t junk[512];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(i * 131 + 7);
    assert_int_equal(send_raw(junk, sizeof junk, err, sizeof err), AOS_ERR_PROTO);
    print_message("garbage -> %s\n", err);
    assert_int_equal(send_raw("", 0, err, sizeof err), AOS_ERR_PROTO);
    still_serves();
}

static void a_truncated_envelope_gets_a_protocol_error(void **st)
{
    (void)st;
    uint8_t id[AOS_ID_LEN], *buf;
    aos_id_random(id);
    Aos__Envelope pb = valid_request(id);
    size_t n = encode(&pb, &buf);
    char err[1100];
    for (size_t cut = 1; cut < n; cut += 5)
        assert_int_equal(send_raw(buf, cut, err, sizeof err), AOS_ERR_PROTO);
    free(buf);
    still_serves();
}

static void an_oversized_message_is_cut_off_at_the_transport(void **st)
{
    (void)st;
    size_t n = AOS_MSG_MAX + 1024;
    uint8_t *big = calloc(1, n);
    char err[1100];
    /* over NNG_OPT_RECVMAXSZ nng drops the connection: no reply, nothing allocated */
    assert_int_equal(send_raw(big, n, err, sizeof err), -1);
    free(big);
    still_serves();
}

static void invalid_fields_are_refused_with_the_reason(void **st)
{
    (void)st;
    uint8_t id[AOS_ID_LEN], *buf;
    char err[1100];
    aos_id_random(id);
    Aos__Envelope pb;

    pb = valid_request(id); /* a method outside the charset */
    pb.method.data = (uint8_t *)"Storage/../ping";
    pb.method.len = 15;
    size_t n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    assert_non_null(strstr(err, "method"));
    free(buf);

    pb = valid_request(id); /* an agent id that is not UTF-8 / not in the charset */
    pb.agent_id.data = (uint8_t *)"\xff\xfe";
    pb.agent_id.len = 2;
    n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    free(buf);

    pb = valid_request(id); /* error text with invalid UTF-8 */
    static const char bad_utf8[] = "bad \xc0\xaf text";
    pb.error.data = (uint8_t *)bad_utf8;
    pb.error.len = sizeof bad_utf8 - 1;
    n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    free(buf);

    pb = valid_request(id); /* a short request id */
    pb.request_id.len = 5;
    n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    free(buf);

    pb = valid_request(id); /* an unknown kind */
    pb.kind = (Aos__Kind)99;
    n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    free(buf);

    pb = valid_request(id); /* a reply where a request belongs */
    pb.kind = (Aos__Kind)AOS_KIND_REPLY;
    n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    free(buf);

    pb = valid_request(id); /* a wire version from the future */
    pb.version = 7;
    n = encode(&pb, &buf);
    assert_int_equal(send_raw(buf, n, err, sizeof err), AOS_ERR_PROTO);
    free(buf);
    still_serves();
}

static void wrong_methods_are_not_found(void **st)
{
    (void)st;
    aos_reply r;
    assert_int_equal(aos_call(h_conn(H), NULL, "nosuch.ping", NULL, 0, &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
    assert_int_equal(aos_call(h_conn(H), NULL, "storage.nosuch", NULL, 0, &r),
                     AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(r.error, "storage.nosuch"));
    aos_reply_clear(&r);
    assert_int_equal(aos_call(h_conn(H), NULL, "kernel.nosuch", NULL, 0, &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
    /* test hooks are off unless aosd was started with --test-hooks */
    assert_int_equal(aos_call(h_conn(H), NULL, "storage.test.exit", NULL, 0, &r),
                     AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
    /* a payload that is not the method's message */
    uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(aos_call(h_conn(H), NULL, "storage.ping", junk, sizeof junk, &r),
                     AOS_ERR_PROTO);
    aos_reply_clear(&r);
    assert_int_equal(aos_call(h_conn(H), NULL, "kernel.server.kill", junk, sizeof junk, &r),
                     AOS_ERR_USAGE);
    aos_reply_clear(&r);
    still_serves();
}

static void bad_messages_are_counted(void **st)
{
    (void)st;
    aos_reply r;
    assert_int_equal(aos_call(h_conn(H), NULL, "kernel.status", NULL, 0, &r), AOS_OK);
    Aos__StatusReply *s = aos__status_reply__unpack(NULL, r.payload_len, r.payload);
    assert_non_null(s);
    print_message("bad_messages: %llu\n", (unsigned long long)s->bad_messages);
    assert_true(s->bad_messages >= 10);
    aos__status_reply__free_unpacked(s, NULL);
    aos_reply_clear(&r);
}

static void an_intruder_on_a_server_link_is_refused(void **st)
{
    (void)st;
    char url[256];
    nng_socket s;
    snprintf(url, sizeof url, "ipc://%s/run/storage.sock", h_data_dir(H));
    assert_int_equal(nng_pair1_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 500);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 500);
    /* the dial may succeed at the socket level; aosd closes the pipe (wrong pid) */
    nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK);
    uint8_t id[AOS_ID_LEN], *buf;
    aos_id_random(id);
    Aos__Envelope pb = valid_request(id);
    pb.kind = (Aos__Kind)AOS_KIND_READY;
    size_t n = encode(&pb, &buf);
    nng_send(s, buf, n, 0);
    free(buf);
    nng_msg *m;
    assert_int_not_equal(nng_recvmsg(s, &m, 0), 0);
    nng_close(s);
    still_serves();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(garbage_gets_a_protocol_error),
        cmocka_unit_test(a_truncated_envelope_gets_a_protocol_error),
        cmocka_unit_test(an_oversized_message_is_cut_off_at_the_transport),
        cmocka_unit_test(invalid_fields_are_refused_with_the_reason),
        cmocka_unit_test(wrong_methods_are_not_found),
        cmocka_unit_test(bad_messages_are_counted),
        cmocka_unit_test(an_intruder_on_a_server_link_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
