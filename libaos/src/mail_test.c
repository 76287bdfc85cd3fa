/* Unit tests of the stored-mail decoder: what the kernel writes decodes whole; every way a
 * body can fail to be mail is refused with a reason and leaves nothing allocated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aos/msg.h"
#include "msg.pb-c.h"

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)p};
}

static ProtobufCBinaryData txt(const char *s)
{
    return bin(s, strlen(s));
}

static const uint8_t ID[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static aos_err decode(const Aos__Msg__Mail *ml, aos_msg *m, char *why, size_t whylen)
{
    uint8_t buf[1024];
    size_t n = aos__msg__mail__pack(ml, buf);
    return aos_msg_decode(buf, n, m, why, whylen);
}

static void mail_the_kernel_writes_decodes_whole(void **st)
{
    (void)st;
    Aos__Msg__Mail ml = AOS__MSG__MAIL__INIT;
    ml.msg_id = bin(ID, 16);
    ml.from = txt("planner");
    ml.kind = txt("reply");
    ml.correlation = bin(ID, 16);
    ml.body = txt("done: 3 facts");
    ml.topic = txt("news");
    aos_msg m;
    char why[128] = "";
    assert_int_equal(decode(&ml, &m, why, sizeof why), AOS_OK);
    assert_string_equal(m.id_hex, "deadbeef0102030405060708090a0b0c");
    assert_string_equal(m.from, "planner");
    assert_string_equal(m.kind, "reply");
    assert_true(m.has_correlation);
    assert_memory_equal(m.correlation, ID, 16);
    assert_string_equal(m.topic, "news");
    assert_int_equal(m.len, 13);
    assert_string_equal((char *)m.body, "done: 3 facts"); /* NUL-terminated */
    free(m.body);
}

static void bodies_that_are_not_mail_are_refused(void **st)
{
    (void)st;
    static const struct {
        const char *field, *value, *why;
    } cases[] = {
        {"from", "", "sender"},          {"from", "a b", "sender"},
        {"from", "x\n", "sender"},       {"kind", "spam", "kind"},
        {"kind", "", "kind"},            {"topic", "t\x01", "topic"},
        {"corr", "short", "correlation"}, {"id", "short", "id"},
        {"reply-no-corr", "", "reply without"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Aos__Msg__Mail ml = AOS__MSG__MAIL__INIT;
        ml.msg_id = bin(ID, 16);
        ml.from = txt("a");
        ml.kind = txt("msg");
        ml.body = txt("b");
        const char *f = cases[i].field;
        if (!strcmp(f, "from"))
            ml.from = txt(cases[i].value);
        else if (!strcmp(f, "kind"))
            ml.kind = txt(cases[i].value);
        else if (!strcmp(f, "topic"))
            ml.topic = txt(cases[i].value);
        else if (!strcmp(f, "corr"))
            ml.correlation = txt(cases[i].value);
        else if (!strcmp(f, "id"))
            ml.msg_id = txt(cases[i].value);
        else
            ml.kind = txt("reply");
        aos_msg m;
        char why[128] = "";
        assert_int_equal(decode(&ml, &m, why, sizeof why), AOS_ERR_PROTO);
        if (!strstr(why, cases[i].why))
            fail_msg("case %zu: '%s' does not say %s", i, why, cases[i].why);
        assert_null(m.body);
    }
    /* not a protobuf message at all */
    aos_msg m;
    char why[128] = "";
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(aos_msg_decode(junk, sizeof junk, &m, why, sizeof why), AOS_ERR_PROTO);
    assert_non_null(strstr(why, "not a Mail"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mail_the_kernel_writes_decodes_whole),
        cmocka_unit_test(bodies_that_are_not_mail_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
