/* Unit tests of the restart policy state table (sup_decide): immediate first restart,
 * exponential backoff on quick crashes, reset after a stable run, intensity -> failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "supervise.h"

static const sup_policy P = {.permanent = 1, .intensity = 5, .period_ms = 30000,
                             .stable_ms = 1000, .backoff_min_ms = 100, .backoff_max_ms = 800};

static void first_restart_is_immediate(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d = 99;
    char why[128];
    assert_int_equal(sup_decide(&t, &P, 0, 5000, 100000, &d, why, sizeof why), SUP_ACT_RESTART);
    assert_int_equal(d, 0);
}

static void quick_crashes_back_off_exponentially_to_the_cap(void **st)
{
    (void)st;
    sup_policy p = P;
    p.intensity = 100;
    sup_track t = {0};
    uint64_t d, want[] = {0, 100, 200, 400, 800, 800, 800};
    char why[128];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(sup_decide(&t, &p, 0, 10, 1000 + i, &d, why, sizeof why),
                         SUP_ACT_RESTART);
        assert_int_equal(d, want[i]);
    }
}

static void a_stable_run_resets_the_backoff(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[128];
    sup_decide(&t, &P, 0, 10, 1000, &d, why, sizeof why);
    sup_decide(&t, &P, 0, 10, 1100, &d, why, sizeof why);
    assert_int_equal(d, 100);
    sup_decide(&t, &P, 0, 5000, 7000, &d, why, sizeof why);
    assert_int_equal(d, 0);
}

static void intensity_exceeded_means_failed_with_a_reason(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[128] = "";
    for (int i = 0; i < 5; i++)
        assert_int_equal(sup_decide(&t, &P, 0, 5000, 1000 + (uint64_t)i * 10, &d, why,
                                    sizeof why), SUP_ACT_RESTART);
    assert_int_equal(sup_decide(&t, &P, 0, 5000, 1100, &d, why, sizeof why), SUP_ACT_FAIL);
    assert_non_null(strstr(why, "6 restarts in 30 s"));
}

static void old_exits_fall_out_of_the_window(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[128];
    for (int i = 0; i < 5; i++)
        sup_decide(&t, &P, 0, 5000, 1000 + (uint64_t)i, &d, why, sizeof why);
    /* 40 s later the five are outside the 30 s window */
    assert_int_equal(sup_decide(&t, &P, 0, 5000, 41000, &d, why, sizeof why), SUP_ACT_RESTART);
}

static void transient_clean_exit_is_done(void **st)
{
    (void)st;
    sup_policy p = P;
    p.permanent = 0;
    sup_track t = {0};
    uint64_t d;
    char why[128];
    assert_int_equal(sup_decide(&t, &p, 1, 10, 1000, &d, why, sizeof why), SUP_ACT_DONE);
    assert_int_equal(sup_decide(&t, &p, 0, 10, 1000, &d, why, sizeof why), SUP_ACT_RESTART);
    /* a permanent child is restarted even after exit 0 */
    assert_int_equal(sup_decide(&t, &P, 1, 5000, 9000, &d, why, sizeof why), SUP_ACT_RESTART);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_restart_is_immediate),
        cmocka_unit_test(quick_crashes_back_off_exponentially_to_the_cap),
        cmocka_unit_test(a_stable_run_resets_the_backoff),
        cmocka_unit_test(intensity_exceeded_means_failed_with_a_reason),
        cmocka_unit_test(old_exits_fall_out_of_the_window),
        cmocka_unit_test(transient_clean_exit_is_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
