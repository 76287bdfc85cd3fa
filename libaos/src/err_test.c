/* Unit tests of the error table: every value has a name, a message and the exit code of
 * DESIGN.md's table; values outside the table get the documented fallbacks. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "aos/err.h"

typedef struct { int val; const char *name; } entry;

static const entry table[] = {
#define X_(name, val, exitc, msg) {val, #name},
    AOS_ERR_TABLE(X_)
#undef X_
};
#define N_TABLE (sizeof table / sizeof table[0])

static void test_every_value_is_complete(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TABLE; i++) {
        int v = table[i].val;
        assert_true(aos_err_valid(v));
        assert_string_equal(aos_err_name(v), table[i].name);
        const char *msg = aos_strerror(v);
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        assert_string_not_equal(msg, "unknown error");
        int x = aos_err_exit_code(v);
        assert_in_range(x, 0, 7);
    }
}

/* Values travel on the wire: they are 0..N-1 in order, and names and messages unique. */
static void test_values_dense_and_unique(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TABLE; i++) {
        assert_int_equal(table[i].val, (int)i);
        for (size_t j = i + 1; j < N_TABLE; j++) {
            assert_string_not_equal(table[i].name, table[j].name);
            assert_string_not_equal(aos_strerror(table[i].val), aos_strerror(table[j].val));
        }
    }
    assert_int_equal(AOS_ERR_OK, 0);
    assert_int_equal(AOS_ERR_IO, 14);
    assert_int_equal(AOS_ERR_RATE_LIMITED, 15);
    assert_int_equal(AOS_ERR_INTERRUPTED, 16);
    assert_int_equal(AOS_ERR_UNAUTHENTICATED, 17);
    assert_int_equal(N_TABLE, 18);
}

/* DESIGN.md: 0 ok; 2 usage; 3 not found; 4 refused/permission; 5 conflict;
 * 6 unavailable/retry later; 7 timeout; 1 internal. */
static void test_exit_codes_follow_design(void **state)
{
    (void)state;
    static const struct { int err, exitc; } want[] = {
        {AOS_ERR_OK, 0},          {AOS_ERR_INTERNAL, 1},  {AOS_ERR_USAGE, 2},
        {AOS_ERR_NOT_FOUND, 3},   {AOS_ERR_REFUSED, 4},   {AOS_ERR_CONFLICT, 5},
        {AOS_ERR_UNAVAILABLE, 6}, {AOS_ERR_TIMEOUT, 7},   {AOS_ERR_NOMEM, 1},
        {AOS_ERR_PROTO, 1},       {AOS_ERR_TOO_BIG, 2},   {AOS_ERR_CANCELLED, 6},
        {AOS_ERR_FAILED, 6},      {AOS_ERR_QUOTA, 4},     {AOS_ERR_IO, 1},   {AOS_ERR_RATE_LIMITED, 6},
        {AOS_ERR_INTERRUPTED, 5},
        {AOS_ERR_UNAUTHENTICATED, 4},
    };
    assert_int_equal(sizeof want / sizeof want[0], N_TABLE);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (aos_err_exit_code(want[i].err) != want[i].exitc)
            fail_msg("%s: exit code %d, want %d", aos_err_name(want[i].err),
                     aos_err_exit_code(want[i].err), want[i].exitc);
    }
    /* success is the only thing that exits 0 */
    for (size_t i = 1; i < N_TABLE; i++)
        assert_int_not_equal(aos_err_exit_code(table[i].val), 0);
}

static void test_names_and_messages(void **state)
{
    (void)state;
    assert_string_equal(aos_err_name(AOS_ERR_OK), "OK");
    assert_string_equal(aos_err_name(AOS_ERR_NOT_FOUND), "NOT_FOUND");
    assert_string_equal(aos_err_name(AOS_ERR_TOO_BIG), "TOO_BIG");
    assert_string_equal(aos_strerror(AOS_ERR_OK), "ok");
    assert_string_equal(aos_strerror(AOS_ERR_NOT_FOUND), "not found");
    assert_string_equal(aos_strerror(AOS_ERR_TIMEOUT), "timed out");
}

static void test_unknown_values(void **state)
{
    (void)state;
    static const int unknown[] = {-1, (int)N_TABLE, 18, 100, 1000, INT_MIN, INT_MAX, -14};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        int v = unknown[i];
        assert_false(aos_err_valid(v));
        assert_string_equal(aos_strerror(v), "unknown error");
        assert_string_equal(aos_err_name(v), "UNKNOWN");
        assert_int_equal(aos_err_exit_code(v), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_value_is_complete),
        cmocka_unit_test(test_values_dense_and_unique),
        cmocka_unit_test(test_exit_codes_follow_design),
        cmocka_unit_test(test_names_and_messages),
        cmocka_unit_test(test_unknown_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
