/* Unit tests of aos-storage's request checking: keys, names, JSON, ids, limits, prefix
 * ranges, configuration, and the rule that a refused request says why. No database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "stg.h"

static ProtobufCBinaryData bin(const char *s, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)s};
    return b;
}
#define B(lit) bin(lit, sizeof(lit) - 1)

static void test_keys(void **state)
{
    (void)state;
    char out[AOS_KEY_MAX + 1], why[256];
    assert_int_equal(stg_valid_key(B("a/b c.d"), "key", out, why, sizeof why), AOS_ERR_OK);
    assert_string_equal(out, "a/b c.d");
    /* SQL metacharacters are just bytes of a key */
    assert_int_equal(stg_valid_key(B("x'); DROP TABLE storage.kv; --"), "key", out, why,
                                   sizeof why), AOS_ERR_OK);
    assert_int_equal(stg_valid_key(B("h\xc3\xa9llo \xe2\x82\xac"), "key", out, why, sizeof why),
                     AOS_ERR_OK);
    assert_int_equal(stg_valid_key(B(""), "key", out, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "empty"));
    assert_int_equal(stg_valid_key(B("bad\xff"), "key", out, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "UTF-8"));
    assert_int_equal(stg_valid_key(B("\xc0\xaf"), "key", out, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(stg_valid_key(B("nul\0inside"), "key", out, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(stg_valid_key(B("tab\there"), "key", out, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "control"));
    assert_int_equal(stg_valid_key(B("esc\x1b[31m"), "key", out, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(stg_valid_key(B("c1\xc2\x9b"), "key", out, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(stg_valid_key(B("del\x7f"), "key", out, why, sizeof why), AOS_ERR_USAGE);
    char big[AOS_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    assert_int_equal(stg_valid_key(bin(big, AOS_KEY_MAX), "key", out, why, sizeof why),
                     AOS_ERR_OK);
    assert_int_equal(stg_valid_key(bin(big, AOS_KEY_MAX + 1), "key", out, why, sizeof why),
                     AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "at most 512"));
}

static void test_names(void **state)
{
    (void)state;
    char out[AOS_NAME_MAX + 1], why[256];
    assert_int_equal(stg_valid_name(B("jobs.high-prio_2:x"), "queue", NULL, out, why,
                                    sizeof why), AOS_ERR_OK);
    assert_string_equal(out, "jobs.high-prio_2:x");
    assert_int_equal(stg_valid_name(B(""), "name", "default", out, why, sizeof why),
                     AOS_ERR_OK);
    assert_string_equal(out, "default");
    assert_int_equal(stg_valid_name(B(""), "queue", NULL, out, why, sizeof why), AOS_ERR_USAGE);
    const char *bad[] = {"a b", "q'; DROP TABLE x;--", "a/b", "q\"", "\xc3\xa9", "a*", "a%",
                         "a\\b", "(x)", NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_equal(stg_valid_name(bin(bad[i], strlen(bad[i])), "queue", NULL, out, why,
                                        sizeof why), AOS_ERR_USAGE);
        assert_non_null(strstr(why, "only letters"));
    }
    char big[AOS_NAME_MAX + 1];
    memset(big, 'n', sizeof big);
    assert_int_equal(stg_valid_name(bin(big, AOS_NAME_MAX + 1), "queue", NULL, out, why,
                                    sizeof why), AOS_ERR_TOO_BIG);
}

static void test_json(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(stg_valid_json(B("{\"a\": 1, \"b\": [1, 2]}"), "document", 1, 0, why,
                                    sizeof why), AOS_ERR_OK);
    assert_int_equal(stg_valid_json(B("{\"big\": 123456789012345678901234567890}"), "document",
                                    1, 0, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(stg_valid_json(B("{\"a\": 1,}"), "document", 1, 0, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "not valid JSON"));
    assert_int_equal(stg_valid_json(B("[1, 2]"), "document", 1, 0, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "object"));
    assert_int_equal(stg_valid_json(B("{\"a\": 1, \"a\": 2}"), "document", 1, 0, why,
                                    sizeof why), AOS_ERR_USAGE);
    assert_int_equal(stg_valid_json(B("{\"a\": \"\\u0000\"}"), "document", 1, 0, why,
                                    sizeof why), AOS_ERR_USAGE);
    assert_int_equal(stg_valid_json(B("{\"a\": \"\xff\"}"), "document", 1, 0, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(stg_valid_json(B(""), "document", 1, 0, why, sizeof why), AOS_ERR_USAGE);
    /* metadata may be any JSON value */
    assert_int_equal(stg_valid_json(B("42"), "metadata", 0, 0, why, sizeof why), AOS_ERR_OK);
    /* filters: top-level scalars only */
    assert_int_equal(stg_valid_json(B("{\"s\": \"x\", \"n\": 2, \"b\": true, \"z\": null}"),
                                    "filter", 1, 1, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(stg_valid_json(B("{\"o\": {\"x\": 1}}"), "filter", 1, 1, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "\"o\""));
}

static void test_ids_limits(void **state)
{
    (void)state;
    char why[256];
    uint32_t v;
    assert_int_equal(stg_valid_id(B("0123456789abcdef"), 16, "receipt", why, sizeof why),
                     AOS_ERR_OK);
    assert_int_equal(stg_valid_id(B("short"), 16, "receipt", why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "16 bytes"));
    assert_int_equal(stg_valid_limit(0, 100, 1000, "limit", &v, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(v, 100);
    assert_int_equal(stg_valid_limit(7, 100, 1000, "limit", &v, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(v, 7);
    assert_int_equal(stg_valid_limit(1001, 100, 1000, "limit", &v, why, sizeof why),
                     AOS_ERR_USAGE);
}

static void test_prefix_end(void **state)
{
    (void)state;
    uint8_t out[8];
    assert_int_equal(stg_prefix_end((const uint8_t *)"ab", 2, out), 2);
    assert_memory_equal(out, "ac", 2);
    assert_int_equal(stg_prefix_end((const uint8_t *)"a\xff\xff", 3, out), 1);
    assert_memory_equal(out, "b", 1);
    assert_int_equal(stg_prefix_end((const uint8_t *)"\xff", 1, out), 0);
    assert_int_equal(stg_prefix_end((const uint8_t *)"", 0, out), 0);
}

static void test_cfg(void **state)
{
    (void)state;
    stg_cfg c;
    char why[256];
    unsetenv("AOS_STORAGE_VALUE_MAX");
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(c.value_max, 1u << 20);
    setenv("AOS_STORAGE_VALUE_MAX", "4096", 1);
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(c.value_max, 4096);
    setenv("AOS_STORAGE_VALUE_MAX", "99999999", 1);   /* past the envelope */
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "AOS_STORAGE_VALUE_MAX"));
    setenv("AOS_STORAGE_VALUE_MAX", "-1", 1);
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_USAGE);
    setenv("AOS_STORAGE_VALUE_MAX", "12abc", 1);
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_USAGE);
    unsetenv("AOS_STORAGE_VALUE_MAX");
    /* kv.gets are grouped unless told otherwise */
    unsetenv("AOS_STORAGE_GET_LEADERS");
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(c.get_leaders, 1);
    setenv("AOS_STORAGE_GET_LEADERS", "0", 1);
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(c.get_leaders, 0);
    setenv("AOS_STORAGE_GET_LEADERS", "9", 1);
    assert_int_equal(stg_cfg_load(&c, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "AOS_STORAGE_GET_LEADERS"));
    unsetenv("AOS_STORAGE_GET_LEADERS");
}

/* The call layer: no agent, malformed payloads, and the fingerprint. */
static void test_call_checks(void **state)
{
    (void)state;
    srv_reply rep = {0};
    stg st = {0};
    stg_call c = {.st = &st, .agent = "", .op = "kv.put", .rep = &rep};
    assert_int_equal(stg_need_agent(&c), AOS_ERR_USAGE);
    assert_non_null(strstr(rep.error, "needs an agent"));
    c.agent = "a1";
    assert_int_equal(stg_need_agent(&c), AOS_ERR_OK);
    c.deadline_ms = 1;   /* long past */
    assert_int_equal(stg_check_deadline(&c), AOS_ERR_TIMEOUT);
    c.deadline_ms = 0;
    assert_int_equal(stg_left_ms(&c), UINT32_MAX);

    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    c.payload = junk;
    c.len = sizeof junk;
    extern const ProtobufCMessageDescriptor aos__storage__kv_put_request__descriptor;
    assert_null(stg_decode(&c, &aos__storage__kv_put_request__descriptor));
    assert_non_null(strstr(rep.error, "not a valid"));

    uint8_t a[32], b[32];
    c.payload = (const uint8_t *)"xy";
    c.len = 2;
    stg_fingerprint(&c, a);
    c.op = "kv.delete";
    stg_fingerprint(&c, b);
    assert_memory_not_equal(a, b, 32);
    free(rep.payload);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),        cmocka_unit_test(test_names),
        cmocka_unit_test(test_json),        cmocka_unit_test(test_ids_limits),
        cmocka_unit_test(test_prefix_end),  cmocka_unit_test(test_cfg),
        cmocka_unit_test(test_call_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
