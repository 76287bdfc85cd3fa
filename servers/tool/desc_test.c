/* Unit tests for tool descriptors: the built-ins, refusals with line:column, argv built
 * from hostile values as single elements, optional groups, and the three renderings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "desc.h"

static desc *parse_ok(const char *yaml)
{
    char why[512];
    desc *d = NULL;
    if (desc_parse("t.yaml", yaml, strlen(yaml), &d, why, sizeof why) != AOS_OK)
        fail_msg("should parse: %s", why);
    return d;
}

static void parse_bad(const char *yaml, aos_err want, const char *text)
{
    char why[512];
    desc *d = (desc *)1;
    assert_int_equal(desc_parse("t.yaml", yaml, strlen(yaml), &d, why, sizeof why), want);
    assert_null(d);
    if (!strstr(why, text))
        fail_msg("message '%s' lacks '%s'", why, text);
}

static desc *builtin(desc **all, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(desc_name(all[i]), name))
            return all[i];
    fail_msg("no builtin %s", name);
    return NULL;
}

static void test_builtins(void **state)
{
    (void)state;
    char why[512];
    desc **all = NULL;
    size_t n = 0;
    assert_int_equal(desc_builtins(&all, &n, why, sizeof why), AOS_OK);
    assert_int_equal(n, 6);
    const char *names[] = {"sh", "cat", "ls", "grep", "write_file", "http_get"};
    for (size_t i = 0; i < 6; i++)
        assert_non_null(builtin(all, n, names[i]));
    /* write_file runs in the sandbox too: its content comes on stdin */
    assert_false(desc_builtin(builtin(all, n, "write_file")));
    assert_string_equal(desc_stdin_arg(builtin(all, n, "write_file")), "content");
    assert_null(desc_stdin_arg(builtin(all, n, "cat")));
    assert_false(desc_builtin(builtin(all, n, "cat")));
    assert_true(desc_network(builtin(all, n, "http_get")));
    assert_false(desc_network(builtin(all, n, "sh")));
    assert_int_equal(desc_exit_error(builtin(all, n, "cat"), 1), AOS_ERR_NOT_FOUND);
    assert_int_equal(desc_exit_error(builtin(all, n, "cat"), 2), AOS_OK);
    assert_int_equal(desc_exit_error(builtin(all, n, "http_get"), 28), AOS_ERR_TIMEOUT);
    assert_int_equal(desc_get_limits(builtin(all, n, "sh")).time_ms, 30000);
    char **argv = NULL;
    json_t *a = json_pack("{s:s,s:s}", "path", "x", "content", "y");
    assert_int_equal(desc_argv(builtin(all, n, "write_file"), a, &argv, why, sizeof why),
                     AOS_OK);
    /* the content is not on the command line, the path is one element of its own */
    assert_string_equal(argv[0], "/bin/sh");
    assert_string_equal(argv[4], "x");
    assert_null(argv[5]);
    desc_argv_free(argv);
    json_decref(a);
    desc_free_all(all, n);
}

static void argv_is(const desc *d, const char *args, const char *const *want)
{
    char why[512];
    char **argv = NULL;
    json_t *a = json_loads(args, 0, NULL);
    assert_non_null(a);
    if (desc_argv(d, a, &argv, why, sizeof why) != AOS_OK)
        fail_msg("argv for %s: %s", args, why);
    size_t i = 0;
    for (; want[i]; i++) {
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want[i]);
    }
    assert_null(argv[i]);
    desc_argv_free(argv);
    json_decref(a);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_argv_hostile(void **state)
{
    (void)state;
    char why[512];
    desc **all = NULL;
    size_t n = 0;
    assert_int_equal(desc_builtins(&all, &n, why, sizeof why), AOS_OK);
    const desc *cat = builtin(all, n, "cat"), *grep = builtin(all, n, "grep"),
               *sh = builtin(all, n, "sh");
    argv_is(cat, "{\"path\":\"; rm -rf /\"}", L("cat", "--", "; rm -rf /"));
    argv_is(cat, "{\"path\":\"$(x) `y` a b\"}", L("cat", "--", "$(x) `y` a b"));
    argv_is(cat, "{\"path\":\"--flag\"}", L("cat", "--", "--flag"));
    argv_is(cat, "{\"path\":\"{path}\"}", L("cat", "--", "{path}"));
    argv_is(sh, "{\"command\":\"echo hi; ls\"}", L("/bin/sh", "-c", "echo hi; ls"));
    argv_is(grep, "{\"pattern\":\"-v x\",\"path\":\".\"}",
            L("grep", "-E", "-r", "-n", "-e", "-v x", "--", "."));
    argv_is(grep, "{\"pattern\":\"a\",\"path\":\"p\",\"ignore_case\":true}",
            L("grep", "-E", "-r", "-n", "-i", "-e", "a", "--", "p"));
    argv_is(grep, "{\"pattern\":\"a\",\"path\":\"p\",\"ignore_case\":false}",
            L("grep", "-E", "-r", "-n", "-e", "a", "--", "p"));
    /* validation comes first: wrong types, extra keys, NUL bytes */
    const char *bad[] = {"{\"path\":5}", "{}", "{\"path\":\"a\",\"x\":1}", "{\"path\":\"\"}",
                         "{\"path\":\"a\\u0000b\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char **argv = (char **)1;
        json_t *a = json_loads(bad[i], 0, NULL);
        assert_int_equal(desc_argv(cat, a, &argv, why, sizeof why), AOS_ERR_USAGE);
        assert_null(argv);
        json_decref(a);
    }
    desc_free_all(all, n);
}

static const char *tool =
    "name: tool.x-1\n"
    "summary: a test tool\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    file: {type: string}\n"
    "    count: {type: integer, minimum: 1}\n"
    "    mode: {enum: [fast, slow]}\n"
    "    ratio: {type: number}\n"
    "  required: [file]\n"
    "output: {format: json, schema: {type: object}}\n"
    "argv: [prog, '--file={file}', '[--count {count}]', '[-m {mode} -r {ratio}]', '{{x}}']\n"
    "exit_codes: {3: conflict, 4: NOT_FOUND}\n"
    "limits: {time_ms: 100, output_bytes: 10, memory_mb: 2, processes: 1}\n"
    "network: false\n";

static void test_descriptor(void **state)
{
    (void)state;
    desc *d = parse_ok(tool);
    assert_string_equal(desc_name(d), "tool.x-1");
    assert_int_equal(desc_output_format(d), DESC_OUT_JSON);
    assert_non_null(desc_output_validator(d));
    assert_int_equal(desc_exit_error(d, 4), AOS_ERR_NOT_FOUND);
    assert_int_equal(desc_get_limits(d).output_bytes, 10);
    argv_is(d, "{\"file\":\"a b\"}", L("prog", "--file=a b", "{x}"));
    argv_is(d, "{\"file\":\"a\",\"count\":7}", L("prog", "--file=a", "--count", "7", "{x}"));
    /* a group is all or nothing */
    argv_is(d, "{\"file\":\"a\",\"mode\":\"fast\"}", L("prog", "--file=a", "{x}"));
    argv_is(d, "{\"file\":\"a\",\"mode\":\"slow\",\"ratio\":0.5}",
            L("prog", "--file=a", "-m", "slow", "-r", "0.5", "{x}"));
    desc_free(d);
}

static void test_refusals(void **state)
{
    (void)state;
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a]\nnetwrk: true\n",
              AOS_ERR_USAGE, "t.yaml:5:1: the descriptor: unknown key 'netwrk'");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a]\nlimits: {time: 1}\n",
              AOS_ERR_USAGE, "t.yaml:5:10: limits: unknown key 'time'");
    parse_bad("name: A\nsummary: s\nargs: {type: object}\nargv: [a]\n", AOS_ERR_USAGE,
              "t.yaml:1:7: name 'A' must match");
    parse_bad("name: a\nsummary: s\nargs: {type: string}\nargv: [a]\n", AOS_ERR_USAGE,
              "type: object");
    parse_bad("name: a\nsummary: s\nargs: {type: object, propertes: {}}\nargv: [a]\n",
              AOS_ERR_USAGE, "unknown keyword 'propertes'");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\n", AOS_ERR_USAGE, "needs 'argv'");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a, '{x}']\n", AOS_ERR_USAGE,
              "{x} is not a property");
    parse_bad("name: a\nsummary: s\nargs: {type: object, properties: {x: {}}}\n"
              "argv: [a, '{x}']\n", AOS_ERR_USAGE, "must be in a [...] group");
    parse_bad("name: a\nsummary: s\nargs: {type: object, properties: {x: {}}}\n"
              "argv: [a, '[{x}']\n", AOS_ERR_USAGE, "must end with");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a, '}']\n", AOS_ERR_USAGE,
              "lone '}'");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a]\nexit_codes: {1: nope}\n",
              AOS_ERR_USAGE, "not an aos error name");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a]\nexit_codes: {0: usage}\n",
              AOS_ERR_USAGE, "1 to 255");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nbuiltin: true\nargv: [a]\n",
              AOS_ERR_USAGE, "builtin tool has no argv");
    parse_bad("name: a\nsummary: s\nargs: {type: object}\nargv: [a]\noutput: {format: text, "
              "schema: {}}\n", AOS_ERR_USAGE, "needs format: json");
    parse_bad("name: &x a\nsummary: s\n", AOS_ERR_USAGE, "anchors");
    parse_bad("name: a\nsummary: *x\n", AOS_ERR_USAGE, "aliases");
    parse_bad("name: [a\n", AOS_ERR_USAGE, "not valid YAML");
    parse_bad("", AOS_ERR_USAGE, "empty");
    /* hostile nesting */
    char deep[2048] = "name: a\nsummary: s\nargs: ";
    for (int i = 0; i < 300; i++)
        strcat(deep, "[");
    parse_bad(deep, AOS_ERR_TOO_BIG, "nested more than");
    char *big = malloc(DESC_YAML_MAX + 2);
    memset(big, '#', DESC_YAML_MAX + 1);
    big[DESC_YAML_MAX + 1] = 0;
    parse_bad(big, AOS_ERR_TOO_BIG, "over the cap");
    free(big);
}

static void test_render(void **state)
{
    char wire[160];
    desc_wire_name("mcp.fs.read_file", wire, sizeof wire);
    assert_string_equal(wire, "mcp__fs__read_file");
    desc_wire_name("grep", wire, sizeof wire);
    assert_string_equal(wire, "grep");
    (void)state;
    char why[512], *out = NULL;
    desc **all = NULL;
    size_t n = 0;
    assert_int_equal(desc_builtins(&all, &n, why, sizeof why), AOS_OK);
    const desc *const *c = (const desc *const *)all;

    assert_int_equal(desc_render(c, n, DESC_SCHEMA_OPENAI, &out, why, sizeof why), AOS_OK);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_array_size(j), n);
    json_t *f = json_object_get(json_array_get(j, 1), "function");
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 1), "type")),
                        "function");
    assert_string_equal(json_string_value(json_object_get(f, "name")), "cat");
    assert_string_equal(json_string_value(json_object_get(f, "description")), "print a file");
    assert_true(json_equal(json_object_get(f, "parameters"), (json_t *)desc_args_schema(all[1])));
    json_decref(j);
    free(out);

    assert_int_equal(desc_render(c, n, DESC_SCHEMA_ANTHROPIC, &out, why, sizeof why), AOS_OK);
    j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 3), "name")), "grep");
    assert_non_null(json_object_get(json_object_get(json_array_get(j, 3), "input_schema"),
                                    "properties"));
    json_decref(j);
    free(out);

    assert_int_equal(desc_render(c, n, DESC_CLI, &out, why, sizeof why), AOS_OK);
    assert_non_null(strstr(out, "cat PATH  - print a file\n"));
    assert_non_null(strstr(out, "grep PATTERN PATH [--ignore-case]  - search files"));
    assert_non_null(strstr(out, "write_file PATH CONTENT  - "));
    free(out);
    desc_free_all(all, n);

    desc *d = parse_ok(tool);
    const desc *one[] = {d};
    assert_int_equal(desc_render(one, 1, DESC_CLI, &out, why, sizeof why), AOS_OK);
    assert_string_equal(out, "tool.x-1 FILE [--count COUNT] [--mode fast|slow] [--ratio RATIO]"
                             "  - a test tool\n");
    free(out);
    assert_int_equal(desc_render(NULL, 0, DESC_SCHEMA_OPENAI, &out, why, sizeof why), AOS_OK);
    assert_string_equal(out, "[]");
    free(out);
    desc_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_argv_hostile),
        cmocka_unit_test(test_descriptor),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
