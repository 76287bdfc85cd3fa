/* Unit tests for jschema: each keyword with values that pass and fail, the messages'
 * paths, refusals at compile time, and hostile nesting of schemas and values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jschema.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, e.text);
    return j;
}

/* Compiles schema and checks each value: ok lists pass, bad lists fail with USAGE. */
static void expect(const char *schema, const char *const *ok, const char *const *bad)
{
    char why[512];
    json_t *s = parse(schema);
    jschema *v = NULL;
    aos_err rc = jschema_compile(s, &v, why, sizeof why);
    if (rc)
        fail_msg("schema %s: %s", schema, why);
    for (; ok && *ok; ok++) {
        json_t *j = parse(*ok);
        if (jschema_validate(v, j, why, sizeof why) != AOS_OK)
            fail_msg("%s should pass %s: %s", *ok, schema, why);
        json_decref(j);
    }
    for (; bad && *bad; bad++) {
        json_t *j = parse(*bad);
        if (jschema_validate(v, j, why, sizeof why) != AOS_ERR_USAGE)
            fail_msg("%s should fail %s", *bad, schema);
        assert_true(strncmp(why, "$", 1) == 0);
        json_decref(j);
    }
    jschema_free(v);
    json_decref(s);
}

static void message(const char *schema, const char *value, const char *want)
{
    char why[512];
    json_t *s = parse(schema), *j = parse(value);
    jschema *v = NULL;
    assert_int_equal(jschema_compile(s, &v, why, sizeof why), AOS_OK);
    assert_int_equal(jschema_validate(v, j, why, sizeof why), AOS_ERR_USAGE);
    if (!strstr(why, want))
        fail_msg("message '%s' lacks '%s'", why, want);
    jschema_free(v);
    json_decref(s);
    json_decref(j);
}

static void refused(const char *schema, aos_err want, const char *text)
{
    char why[512];
    json_t *s = parse(schema);
    jschema *v = (jschema *)1;
    assert_int_equal(jschema_compile(s, &v, why, sizeof why), want);
    assert_null(v);
    if (!strstr(why, text))
        fail_msg("compile message '%s' lacks '%s'", why, text);
    json_decref(s);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_type(void **state)
{
    (void)state;
    expect("{\"type\":\"string\"}", L("\"\"", "\"x\""), L("1", "null", "[]", "{}", "true"));
    expect("{\"type\":\"integer\"}", L("0", "-5", "3.0", "9007199254740993"),
           L("1.5", "\"1\"", "true", "null"));
    expect("{\"type\":\"number\"}", L("0", "1.5", "-1e300"), L("\"1\"", "false"));
    expect("{\"type\":\"boolean\"}", L("true", "false"), L("0", "\"true\"", "null"));
    expect("{\"type\":\"null\"}", L("null"), L("0", "false", "\"\""));
    expect("{\"type\":\"array\"}", L("[]", "[1,\"a\"]"), L("{}", "\"[]\""));
    expect("{\"type\":\"object\"}", L("{}", "{\"a\":1}"), L("[]", "null"));
    expect("{\"type\":[\"string\",\"null\"]}", L("\"a\"", "null"), L("1", "[]"));
    expect("{}", L("1", "null", "{\"a\":[1]}"), NULL);
    expect("true", L("1", "null"), NULL);
    expect("false", NULL, L("1", "null", "{}"));
    message("{\"type\":\"string\"}", "5", "$: expected string, got integer");
    message("{\"type\":[\"string\",\"null\"]}", "5", "expected null or string, got integer");
    message("{\"type\":\"integer\"}", "2.5", "expected integer, got number");
}

static void test_properties_required_additional(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},"
                    "\"n\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"path\"]}";
    expect(s, L("{\"path\":\"a\"}", "{\"path\":\"a\",\"n\":2}", "{\"path\":\"a\",\"x\":[]}"),
           L("{}", "{\"n\":2}", "{\"path\":1}", "{\"path\":\"a\",\"n\":0}",
             "{\"path\":\"a\",\"n\":\"2\"}"));
    message(s, "{\"path\":7}", "$.path: expected string, got integer");
    message(s, "{\"n\":1}", "$: missing required property 'path'");
    message(s, "{\"path\":\"a\",\"n\":0}", "$.n: value is below the minimum 1");
    expect("{\"properties\":{\"a\":{}},\"additionalProperties\":false}",
           L("{}", "{\"a\":1}", "5"), L("{\"b\":1}", "{\"a\":1,\"b\":2}"));
    message("{\"additionalProperties\":false}", "{\"b c\":1}", "unexpected property 'b c'");
    expect("{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"integer\"}}",
           L("{\"a\":\"x\",\"b\":1}"), L("{\"b\":\"x\"}"));
    message("{\"additionalProperties\":{\"type\":\"integer\"}}", "{\"a b\":\"x\"}",
            "$[\"a b\"]: expected integer");
    message("{\"properties\":{\"a\":{\"properties\":{\"b\":{\"items\":{\"type\":\"null\"}}}}}}",
            "{\"a\":{\"b\":[null,null,3]}}", "$.a.b[2]: expected null, got integer");
}

static void test_enum_const(void **state)
{
    (void)state;
    expect("{\"enum\":[\"json\",\"text\",1,null,[1,2]]}",
           L("\"json\"", "\"text\"", "1", "1.0", "null", "[1,2]"),
           L("\"JSON\"", "2", "[2,1]", "false", "{}"));
    expect("{\"const\":{\"a\":[1,{\"b\":null}]}}", L("{\"a\":[1,{\"b\":null}]}", "{\"a\":[1.0,{\"b\":null}]}"),
           L("{\"a\":[1,{\"b\":false}]}", "{\"a\":[1]}", "{}"));
    expect("{\"const\":null}", L("null"), L("0", "false"));
    message("{\"enum\":[\"a\",\"b\"]}", "\"c\"", "not one of [\"a\",\"b\"]");
}

static void test_numbers(void **state)
{
    (void)state;
    expect("{\"minimum\":0,\"maximum\":10}", L("0", "10", "5.5", "\"x\"", "0.0"),
           L("-1", "10.0001", "11", "-0.5"));
    expect("{\"exclusiveMinimum\":0,\"exclusiveMaximum\":1.5}", L("1", "0.0001", "1.4999"),
           L("0", "0.0", "1.5", "2", "-3"));
    expect("{\"maximum\":9223372036854775807}", L("9223372036854775807"), L("1e19"));
    expect("{\"minimum\":-9223372036854775808}", L("-9223372036854775808"), L("-1e19"));
    message("{\"exclusiveMaximum\":3}", "3", "value must be below 3");
}

static void test_strings(void **state)
{
    (void)state;
    /* code points, not bytes: "héé" is 3 characters, 5 bytes */
    expect("{\"minLength\":2,\"maxLength\":3}", L("\"ab\"", "\"abc\"", "\"h\\u00e9\\u00e9\"",
                                                   "\"\\ud83d\\ude00\\ud83d\\ude00\"", "5"),
           L("\"a\"", "\"abcd\"", "\"\"", "\"\\u00e9\\u00e9\\u00e9\\u00e9\""));
    expect("{\"pattern\":\"^[a-z][a-z0-9_]*$\"}", L("\"abc\"", "\"a_1\"", "7"),
           L("\"Abc\"", "\"\"", "\"a b\"", "\"abc\\u0000; rm -rf /\"", "\"1a\""));
    expect("{\"pattern\":\"\\\\d{3}-\\\\d{2}\"}", L("\"x123-45y\""), L("\"12-345\"", "\"abc-de\""));
    expect("{\"pattern\":\"^(?:ab)+$\"}", L("\"abab\""), L("\"aba\""));
    expect("{\"pattern\":\"^a{2,}b{1,2}$\"}", L("\"aab\"", "\"aaabb\""), L("\"ab\"", "\"aabbb\""));
    expect("{\"pattern\":\"^[]a]+$\"}", L("\"]a]\""), L("\"b\""));
    expect("{\"pattern\":\"^[[:digit:]]+\\\\.txt$\"}", L("\"12.txt\""), L("\"12xtxt\""));
    expect("{\"pattern\":\"^https?://\"}", L("\"https://x\"", "\"http://y\""),
           L("\"ftp://z\"", "\" https://x\""));
    message("{\"maxLength\":1}", "\"ab\"", "$: string of 2 characters is longer than maxLength 1");
    message("{\"pattern\":\"^a\"}", "\"b\"", "does not match the pattern");
}

static void test_arrays(void **state)
{
    (void)state;
    expect("{\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":2}",
           L("[1]", "[1,2]", "{}"), L("[]", "[1,2,3]", "[\"a\"]", "[1,1.5]"));
    message("{\"items\":{\"type\":\"string\"}}", "[\"a\",\"b\",3]",
            "$[2]: expected string, got integer");
}

static void test_compile_refusals(void **state)
{
    (void)state;
    refused("{\"typ\":\"string\"}", AOS_ERR_USAGE, "$: unknown keyword 'typ'");
    refused("{\"properties\":{\"path\":{\"type\":\"string\",\"maxLen\":3}}}", AOS_ERR_USAGE,
            "$.properties.path: unknown keyword 'maxLen'");
    refused("{\"items\":{\"items\":{\"patern\":\"x\"}}}", AOS_ERR_USAGE,
            "$.items.items: unknown keyword 'patern'");
    refused("{\"type\":\"str\"}", AOS_ERR_USAGE, "unknown type 'str'");
    refused("{\"type\":[]}", AOS_ERR_USAGE, "empty");
    refused("{\"type\":[\"string\",\"string\"]}", AOS_ERR_USAGE, "twice");
    refused("{\"minLength\":-1}", AOS_ERR_USAGE, "non-negative integer");
    refused("{\"maxItems\":1.5}", AOS_ERR_USAGE, "non-negative integer");
    refused("{\"minimum\":\"1\"}", AOS_ERR_USAGE, "must be a number");
    refused("{\"required\":[\"a\",\"a\"]}", AOS_ERR_USAGE, "twice");
    refused("{\"required\":[1]}", AOS_ERR_USAGE, "must be a string");
    refused("{\"enum\":[]}", AOS_ERR_USAGE, "non-empty");
    refused("{\"items\":[{}]}", AOS_ERR_USAGE, "array form");
    refused("{\"properties\":{\"a\":3}}", AOS_ERR_USAGE, "$.properties.a: a schema must be");
    refused("{\"pattern\":\"(a\"}", AOS_ERR_USAGE, "does not compile");
    refused("{\"pattern\":\"(a)\\\\1\"}", AOS_ERR_USAGE, "escape \\1");
    refused("{\"pattern\":\"[\\\\d]\"}", AOS_ERR_USAGE, "backslash inside");
    refused("{\"pattern\":\"((a{1,100}){1,100}){1,100}\"}", AOS_ERR_USAGE, "multiply");
    refused("{\"pattern\":\"a{1000}\"}", AOS_ERR_USAGE, "repeat count");
    refused("{\"pattern\":\"a++++\"}", AOS_ERR_USAGE, "quantifier right after");
    refused("{\"pattern\":\"a{2,}+\"}", AOS_ERR_USAGE, "quantifier right after");
    refused("{\"pattern\":\"a*?\"}", AOS_ERR_USAGE, "quantifier right after");
    refused("\"string\"", AOS_ERR_USAGE, "a schema must be an object or a boolean");
}

/* JSON text nested n deep: [[[...]]] */
static json_t *nested(unsigned n, const char *open, const char *close, const char *mid)
{
    size_t ol = strlen(open), cl = strlen(close), ml = strlen(mid);
    char *t = malloc(n * (ol + cl) + ml + 1), *p = t;
    for (unsigned i = 0; i < n; i++)
        memcpy(p, open, ol), p += ol;
    memcpy(p, mid, ml), p += ml;
    for (unsigned i = 0; i < n; i++)
        memcpy(p, close, cl), p += cl;
    *p = 0;
    json_t *j = parse(t);
    free(t);
    return j;
}

static void test_hostile_nesting(void **state)
{
    (void)state;
    char why[512];
    jschema *v = NULL;
    /* a schema 32 deep compiles, 33 does not */
    json_t *s = nested(31, "{\"items\":", "}", "{}");
    assert_int_equal(jschema_compile(s, &v, why, sizeof why), AOS_OK);
    jschema_free(v);
    json_decref(s);
    s = nested(32, "{\"items\":", "}", "{}");
    assert_int_equal(jschema_compile(s, &v, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "nested more than 32"));
    json_decref(s);
    s = nested(1000, "{\"properties\":{\"a\":", "}}", "{}");
    assert_int_equal(jschema_compile(s, &v, why, sizeof why), AOS_ERR_TOO_BIG);
    json_decref(s);
    /* an enum holding a deep value */
    s = nested(100, "[", "]", "1");
    json_t *e = json_pack("{s:[O]}", "enum", s);
    assert_int_equal(jschema_compile(e, &v, why, sizeof why), AOS_ERR_TOO_BIG);
    json_decref(e);
    json_decref(s);

    /* values: 64 deep passes, 65 and 1500 are refused without recursion */
    json_t *any = parse("{}");
    assert_int_equal(jschema_compile(any, &v, why, sizeof why), AOS_OK);
    json_decref(any);
    json_t *ok = nested(64, "[", "]", "1"), *deep = nested(65, "[", "]", "1"),
           *deeper = nested(1500, "{\"a\":", "}", "1");
    assert_int_equal(jschema_validate(v, ok, why, sizeof why), AOS_OK);
    assert_int_equal(jschema_validate(v, deep, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_int_equal(jschema_validate(v, deeper, why, sizeof why), AOS_ERR_TOO_BIG);
    /* a cycle built in code */
    json_t *cyc = json_array(), *inner = json_array();
    json_array_append(inner, cyc);
    if (json_array_append(cyc, inner) == 0) {
        assert_int_equal(jschema_validate(v, cyc, why, sizeof why), AOS_ERR_TOO_BIG);
        json_array_clear(cyc);
    }
    json_array_clear(inner);
    json_decref(inner);
    json_decref(cyc);
    json_decref(ok);
    json_decref(deep);
    json_decref(deeper);
    jschema_free(v);
    json_t *one = json_integer(1);
    assert_int_equal(jschema_too_deep(one, 0), 0);
    json_decref(one);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type),
        cmocka_unit_test(test_enum_const),
        cmocka_unit_test(test_properties_required_additional),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_compile_refusals),
        cmocka_unit_test(test_hostile_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
