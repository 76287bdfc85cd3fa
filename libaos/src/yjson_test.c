/* aos_yjson: YAML 1.2 core typing of plain scalars, quoted scalars as strings, duplicate and
 * non-string keys refused, the depth cap, and the node at fault named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "aos/yjson.h"

/* text parsed into doc; returns its root */
static yaml_node_t *load(yaml_document_t *doc, const char *text)
{
    yaml_parser_t p;
    assert_true(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    assert_true(yaml_parser_load(&p, doc));
    yaml_parser_delete(&p);
    yaml_node_t *root = yaml_document_get_root_node(doc);
    assert_non_null(root);
    return root;
}

static void scalars_are_typed_as_yaml_reads_them(void **st)
{
    (void)st;
    yaml_document_t doc;
    yaml_node_t *root = load(&doc, "a: ~\nb: True\nc: false\nd: -42\ne: 2.5\nf: '7'\n"
                                   "g: hello\nh: [1, \"x\", null]\ni: 1e999\n");
    aos_yjson_err err;
    json_t *j = aos_yjson(&doc, root, 8, &err);
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "a")));
    assert_true(json_is_true(json_object_get(j, "b")));
    assert_true(json_is_false(json_object_get(j, "c")));
    assert_int_equal(json_integer_value(json_object_get(j, "d")), -42);
    assert_true(json_is_real(json_object_get(j, "e")));
    assert_string_equal(json_string_value(json_object_get(j, "f")), "7");
    assert_string_equal(json_string_value(json_object_get(j, "g")), "hello");
    assert_int_equal(json_array_size(json_object_get(j, "h")), 3);
    /* not finite: kept as the string it is, never an infinity in JSON */
    assert_string_equal(json_string_value(json_object_get(j, "i")), "1e999");
    json_decref(j);
    yaml_document_delete(&doc);
}

static void refusals_name_the_node(void **st)
{
    (void)st;
    yaml_document_t doc;
    yaml_node_t *root = load(&doc, "a: 1\nb: 2\na: 3\n");
    aos_yjson_err err;
    assert_null(aos_yjson(&doc, root, 8, &err));
    assert_int_equal(err.code, AOS_ERR_USAGE);
    assert_non_null(strstr(err.what, "twice"));
    assert_int_equal(err.at->start_mark.line, 2);
    yaml_document_delete(&doc);

    root = load(&doc, "[[[[1]]]]\n");
    assert_null(aos_yjson(&doc, root, 2, &err));
    assert_int_equal(err.code, AOS_ERR_TOO_BIG);
    yaml_document_delete(&doc);

    root = load(&doc, "? [1]\n: x\n");
    assert_null(aos_yjson(&doc, root, 8, &err));
    assert_non_null(strstr(err.what, "key must be a string"));
    yaml_document_delete(&doc);
}

static void plain_ints_have_at_most_19_digits(void **st)
{
    (void)st;
    assert_true(aos_yjson_plain_int("+12", 3));
    assert_true(aos_yjson_plain_int("1234567890123456789", 19));
    assert_false(aos_yjson_plain_int("12345678901234567890", 20));
    assert_false(aos_yjson_plain_int("-", 1));
    assert_false(aos_yjson_plain_int("", 0));
    assert_false(aos_yjson_plain_int("1.0", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scalars_are_typed_as_yaml_reads_them),
        cmocka_unit_test(refusals_name_the_node),
        cmocka_unit_test(plain_ints_have_at_most_19_digits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
