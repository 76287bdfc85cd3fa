/* Unit tests of the restart policy (sup_decide): what is charged against the intensity
 * (the child's own exits and faults, hangs, kills before it got going) and what is not
 * (kills after it got going, a database outage), and the backoff. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "supervise.h"

static const sup_policy P = {.permanent = 1, .intensity = 5, .period_ms = 30000,
                             .loop_ms = 250, .stable_ms = 1000, .backoff_min_ms = 100,
                             .backoff_max_ms = 800};

static const sup_exit QUICK = {.ran_ms = 10};     /* died 10 ms after READY */
static const sup_exit STABLE = {.ran_ms = 5000};  /* served 5 s, then died */
static const sup_exit NEVER = {.ran_ms = 0};      /* died before READY */

static sup_action decide(sup_track *t, const sup_policy *p, const sup_exit *x, uint64_t now,
                         uint64_t *d, char *why)
{
    return sup_decide(t, p, x, now, d, why, 160);
}

static void first_restart_is_immediate(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d = 99;
    char why[160];
    assert_int_equal(decide(&t, &P, &QUICK, 100000, &d, why), SUP_ACT_RESTART);
    assert_int_equal(d, 0);
    assert_non_null(strstr(why, "counted: 1 of 5 in 30 s"));
}

static void quick_crashes_back_off_exponentially_to_the_cap(void **st)
{
    (void)st;
    sup_policy p = P;
    p.intensity = 100;
    sup_track t = {0};
    uint64_t d, want[] = {0, 100, 200, 400, 800, 800, 800};
    char why[160];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(decide(&t, &p, &QUICK, 1000 + i, &d, why), SUP_ACT_RESTART);
        assert_int_equal(d, want[i]);
    }
}

static void a_stable_run_resets_the_backoff(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    decide(&t, &P, &QUICK, 1000, &d, why);
    decide(&t, &P, &QUICK, 1100, &d, why);
    assert_int_equal(d, 100);
    decide(&t, &P, &STABLE, 7000, &d, why);
    assert_int_equal(d, 0);
}

/* A crash loop: dying before READY (or right after it), again and again, fails. */
static void a_crash_loop_fails_with_a_reason(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160] = "";
    for (int i = 0; i < 5; i++)
        assert_int_equal(decide(&t, &P, i % 2 ? &QUICK : &NEVER, 1000 + (uint64_t)i * 10, &d,
                                why), SUP_ACT_RESTART);
    assert_int_equal(decide(&t, &P, &NEVER, 1100, &d, why), SUP_ACT_FAIL);
    assert_non_null(strstr(why, "6 restarts in 30 s (limit 5/30 s)"));
    assert_non_null(strstr(why, "crash loop"));
}

static void old_exits_fall_out_of_the_window(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    for (int i = 0; i < 5; i++)
        decide(&t, &P, &QUICK, 1000 + (uint64_t)i, &d, why);
    /* 40 s later the five are outside the 30 s window */
    assert_int_equal(decide(&t, &P, &QUICK, 41000, &d, why), SUP_ACT_RESTART);
    assert_non_null(strstr(why, "counted: 1 of 5"));
}

/* kill -9 from outside at the campaign's rate: every child killed every second or two,
 * often well within stable_ms of its READY, but never within loop_ms. Nothing is charged
 * and nothing fails, however long it goes on; the backoff stays within its cap. */
static void kills_of_a_child_that_got_going_are_never_charged(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d, now = 1000;
    char why[160];
    for (int i = 0; i < 1000; i++) {
        sup_exit x = {.ran_ms = 250 + (uint64_t)(i % 11) * 100};
        now += x.ran_ms + 150;
        assert_int_equal(decide(&t, &P, &x, now, &d, why), SUP_ACT_RESTART);
        assert_true(d <= P.backoff_max_ms);
        if (x.ran_ms >= P.stable_ms)
            assert_int_equal(d, 0);
        assert_non_null(strstr(why, "not counted: killed after it ran"));
    }
    assert_int_equal(t.n, 0);
    assert_int_equal(t.not_charged, 1000);
}

/* Between loop_ms and stable_ms: not charged, but in a row they back off (a child that
 * keeps dying half a second after READY is not restarted in a tight loop). */
static void short_runs_back_off_without_being_charged(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d, want[] = {0, 100, 200, 400, 800, 800, 800, 800, 800, 800};
    char why[160];
    sup_exit x = {.ran_ms = 500};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(decide(&t, &P, &x, 1000 + i * 10, &d, why), SUP_ACT_RESTART);
        assert_int_equal(d, want[i]);
    }
    assert_int_equal(t.n, 0);
}

/* A stable run ends a loop: quick exits before it are forgotten. */
static void a_stable_run_forgets_the_quick_exits_before_it(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    for (int i = 0; i < 5; i++)
        assert_int_equal(decide(&t, &P, &QUICK, 1000 + (uint64_t)i, &d, why), SUP_ACT_RESTART);
    assert_int_equal(decide(&t, &P, &STABLE, 7000, &d, why), SUP_ACT_RESTART);
    for (int i = 0; i < 5; i++)
        assert_int_equal(decide(&t, &P, &QUICK, 8000 + (uint64_t)i, &d, why), SUP_ACT_RESTART);
    /* the sixth quick exit in a row fails, whatever came before the stable run */
    assert_int_equal(decide(&t, &P, &QUICK, 8010, &d, why), SUP_ACT_FAIL);
}

/* Exits while the database is away (or just back) are the database's: a server killed
 * again and again during a postgres outage never fails, but still backs off. */
static void a_dependency_outage_is_not_charged(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    sup_exit x = {.ran_ms = 10, .excused = 1};
    uint64_t want[] = {0, 100, 200, 400, 800, 800};
    for (int i = 0; i < 50; i++) {
        assert_int_equal(decide(&t, &P, &x, 1000 + (uint64_t)i * 20, &d, why),
                         SUP_ACT_RESTART);
        assert_int_equal(d, want[i < 5 ? i : 5]);
        assert_non_null(strstr(why, "not counted: its database was away"));
    }
    assert_int_equal(t.n, 0);
    /* and the excused exits do not add up with the child's own quick exits */
    for (int i = 0; i < 5; i++)
        assert_int_equal(decide(&t, &P, &QUICK, 3000 + (uint64_t)i, &d, why), SUP_ACT_RESTART);
    assert_int_equal(decide(&t, &P, &QUICK, 3010, &d, why), SUP_ACT_FAIL);
}

/* A hang aosd detected is the child's own doing, however long it ran, and even while its
 * database was away: charged, and it does not wipe the count. */
static void a_hang_is_charged_even_after_a_long_run(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    sup_exit hung = {.ran_ms = 6000, .hung = 1, .excused = 1};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(decide(&t, &P, &hung, 1000 + (uint64_t)i * 5000, &d, why),
                         SUP_ACT_RESTART);
        assert_int_equal(d, 0); /* it had run stable: no backoff */
    }
    assert_int_equal(decide(&t, &P, &hung, 26000, &d, why), SUP_ACT_FAIL);
}

/* An exit of its own (exit 3, SIGSEGV) is the child's doing however long it ran: a child
 * that keeps crashing every few seconds ends failed, and a stable run forgives nothing. */
static void its_own_exits_are_charged_however_long_it_ran(void **st)
{
    (void)st;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    sup_exit own = {.own = 1, .ran_ms = 1400};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(decide(&t, &P, &own, 1000 + (uint64_t)i * 1500, &d, why),
                         SUP_ACT_RESTART);
        assert_int_equal(d, 0); /* it had run stable: no backoff */
        assert_non_null(strstr(why, "counted:"));
        assert_null(strstr(why, "not counted"));
    }
    assert_int_equal(decide(&t, &P, &own, 9000, &d, why), SUP_ACT_FAIL);
    /* but not while its database is away */
    sup_track t2 = {0};
    sup_exit own_excused = {.own = 1, .ran_ms = 10, .excused = 1};
    for (int i = 0; i < 50; i++)
        assert_int_equal(decide(&t2, &P, &own_excused, 1000 + (uint64_t)i, &d, why),
                         SUP_ACT_RESTART);
}

/* Who ended a child, from its wait status: exits and fault signals are its own; SIGKILL
 * and SIGTERM may come from anyone. */
static void own_ends_are_told_from_kills(void **st)
{
    (void)st;
    assert_true(sup_own_end(3 << 8));        /* exit 3 */
    assert_true(sup_own_end(0));             /* exit 0 */
    assert_true(sup_own_end(SIGSEGV));
    assert_true(sup_own_end(SIGABRT));
    assert_true(sup_own_end(SIGSYS | 0x80)); /* with a core dump */
    assert_false(sup_own_end(SIGKILL));
    assert_false(sup_own_end(SIGTERM));
}

static void transient_clean_exit_is_done(void **st)
{
    (void)st;
    sup_policy p = P;
    p.permanent = 0;
    sup_track t = {0};
    uint64_t d;
    char why[160];
    sup_exit clean = {.clean = 1, .ran_ms = 10}, crash = {.ran_ms = 10};
    assert_int_equal(decide(&t, &p, &clean, 1000, &d, why), SUP_ACT_DONE);
    assert_int_equal(decide(&t, &p, &crash, 1000, &d, why), SUP_ACT_RESTART);
    /* a permanent child is restarted even after exit 0 */
    sup_exit clean_stable = {.clean = 1, .ran_ms = 5000};
    assert_int_equal(decide(&t, &P, &clean_stable, 9000, &d, why), SUP_ACT_RESTART);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_restart_is_immediate),
        cmocka_unit_test(quick_crashes_back_off_exponentially_to_the_cap),
        cmocka_unit_test(a_stable_run_resets_the_backoff),
        cmocka_unit_test(a_crash_loop_fails_with_a_reason),
        cmocka_unit_test(old_exits_fall_out_of_the_window),
        cmocka_unit_test(kills_of_a_child_that_got_going_are_never_charged),
        cmocka_unit_test(short_runs_back_off_without_being_charged),
        cmocka_unit_test(a_stable_run_forgets_the_quick_exits_before_it),
        cmocka_unit_test(a_dependency_outage_is_not_charged),
        cmocka_unit_test(a_hang_is_charged_even_after_a_long_run),
        cmocka_unit_test(its_own_exits_are_charged_however_long_it_ran),
        cmocka_unit_test(own_ends_are_told_from_kills),
        cmocka_unit_test(transient_clean_exit_is_done),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
