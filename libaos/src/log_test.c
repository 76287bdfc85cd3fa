/* Unit tests of the log line's time stamp: its shape, and finding one at a line's start
 * (how aosd tells a child's own stamp from text that merely looks like one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "aos/log.h"

static void stamp_has_its_shape(void **st)
{
    (void)st;
    char s[AOS_LOG_STAMP_LEN + 1];
    aos_log_stamp(s);
    assert_int_equal(strlen(s), AOS_LOG_STAMP_LEN);
    assert_int_equal(aos_log_stamp_at(s, strlen(s)), AOS_LOG_STAMP_LEN);
    assert_true(s[0] == '2'); /* this century */
}

static void stamp_found_only_whole(void **st)
{
    (void)st;
    const char *ok = "2026-12-03T11:37:10.777Z aos-storage[4] info: x";
    assert_int_equal(aos_log_stamp_at(ok, strlen(ok)), AOS_LOG_STAMP_LEN);
    assert_int_equal(aos_log_stamp_at(ok, AOS_LOG_STAMP_LEN - 1), 0); /* cut short */
    const char *bad[] = {"11:37:10.777 aos-storage[4] info: x", "2026-12-03 11:37:10.777Z",
                         "2026-12-03T11:37:10.777+", "2026-1a-03T11:37:10.777Z", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(aos_log_stamp_at(bad[i], strlen(bad[i])), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stamp_has_its_shape),
        cmocka_unit_test(stamp_found_only_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
