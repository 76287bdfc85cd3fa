/* The token estimator: the default before reports, calibration to a provider's counts
 * (the sim's ceil(bytes / 4)), robustness to odd reports, per-model separation. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "est.h"

static void default_then_calibrated(void **st)
{
    (void)st;
    mem_est *e = mem_est_new();
    assert_non_null(e);
    assert_true(fabs(mem_est_ratio(e, "sim/sim-1") - MEM_EST_DEFAULT_RATIO) < 1e-12);
    assert_int_equal(mem_est_tokens(0.25, 0), 0);
    assert_int_equal(mem_est_tokens(0.25, 401), 101);   /* ceil */
    /* prompts of many sizes, the sim's counts: the median error ends near zero */
    for (size_t b = 100; b < 40000; b += 997)
        assert_int_equal(mem_est_observe(e, "sim/sim-1", b, (b + 3) / 4), 1);
    double r = mem_est_ratio(e, "sim/sim-1");
    assert_true(fabs(r - 0.25) < 0.005);
    for (size_t b = 500; b < 100000; b += 7919) {
        double est = mem_est_tokens(r, b), rep = (double)((b + 3) / 4);
        assert_true(fabs(est - rep) / rep < 0.02);
    }
    /* a model never reported borrows the latest calibration of any */
    assert_true(fabs(mem_est_ratio(e, "other/model") - r) < 1e-12);
    mem_est_free(e);
}

static void odd_reports_are_dropped_or_outvoted(void **st)
{
    (void)st;
    mem_est *e = mem_est_new();
    assert_int_equal(mem_est_observe(e, "m", 1000, 0), 0);          /* nothing reported */
    assert_int_equal(mem_est_observe(e, "m", 1000, 100000), 0);     /* 100 tokens a byte */
    assert_int_equal(mem_est_observe(e, "m", 4, 1), 0);             /* too small to tell */
    for (int i = 0; i < 10; i++)
        mem_est_observe(e, "m", 1000, 300);
    mem_est_observe(e, "m", 1000, 1500);   /* one prompt with a big image, say */
    assert_true(fabs(mem_est_ratio(e, "m") - 0.3) < 1e-9);
    /* two models keep their own */
    for (int i = 0; i < 5; i++)
        mem_est_observe(e, "n", 1000, 500);
    assert_true(fabs(mem_est_ratio(e, "n") - 0.5) < 1e-9);
    assert_true(fabs(mem_est_ratio(e, "m") - 0.3) < 1e-9);
    assert_int_equal(mem_est_reports(e), 16);
    mem_est_free(e);
    mem_est_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_then_calibrated),
        cmocka_unit_test(odd_reports_are_dropped_or_outvoted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
