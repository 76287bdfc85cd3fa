/* Unit tests of the cron schedules: the accepted forms into their bit sets, every refusal
 * naming its field, and cron_next against known dates and a minute-by-minute scan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "cron.h"

static cron_spec parse_ok(const char *text)
{
    cron_spec c;
    char why[256] = "";
    if (cron_parse(text, &c, why, sizeof why) != AOS_OK)
        fail_msg("'%s' refused: %s", text, why);
    return c;
}

static void the_forms_give_their_bits(void **st)
{
    (void)st;
    cron_spec c = parse_ok("*/15 9-17/4 1,15,31 JAN,jul-Sep sun");
    assert_true(c.minute == (1ull << 0 | 1ull << 15 | 1ull << 30 | 1ull << 45));
    assert_int_equal(c.hour, 1u << 9 | 1u << 13 | 1u << 17);
    assert_int_equal(c.dom, 1u << 1 | 1u << 15 | 1u << 31);
    assert_int_equal(c.month, 1u << 1 | 1u << 7 | 1u << 8 | 1u << 9);
    assert_int_equal(c.dow, 1u << 0);
    assert_false(c.dom_star);
    assert_false(c.dow_star);

    c = parse_ok("  0\t0 * * 5-7  ");
    assert_true(c.minute == 1);
    assert_int_equal(c.hour, 1);
    assert_int_equal(c.dom, 0xfffffffeu);
    assert_int_equal(c.month, 0x1ffeu);
    assert_int_equal(c.dow, 1u << 0 | 1u << 5 | 1u << 6); /* 7 is Sunday */
    assert_true(c.dom_star);
    assert_false(c.dow_star);

    c = parse_ok("* * * * 7");
    assert_int_equal(c.dow, 1);
    assert_true(c.minute == (1ull << 60) - 1);
    assert_int_equal(c.hour, (1u << 24) - 1);
    assert_true(c.dow_star == 0 && c.dom_star == 1);
    c = parse_ok("* * * * Mon-FRI");
    assert_int_equal(c.dow, 0x3e);
    c = parse_ok("* * * * */2");
    assert_int_equal(c.dow, 1u << 0 | 1u << 2 | 1u << 4 | 1u << 6);
    assert_true(c.dow_star);
}

static void expect_refused(const char *text, const char *want)
{
    cron_spec c;
    char why[256] = "";
    assert_int_equal(cron_parse(text, &c, why, sizeof why), AOS_ERR_USAGE);
    if (!strstr(why, want))
        fail_msg("'%s': wanted '%s' in: %s", text, want, why);
}

static void every_bad_form_is_refused_naming_its_field(void **st)
{
    (void)st;
    expect_refused("61 * * * *", "minute: 61 is out of range 0-59");
    expect_refused("* * *", "has 3 fields; a schedule has 5");
    expect_refused("* * * * * *", "has 6 fields");
    expect_refused("", "has 0 fields");
    expect_refused("*/0 * * * *", "minute: the step in */0");
    expect_refused("*/60 * * * *", "minute: the step");
    expect_refused("* 24 * * *", "hour: 24 is out of range 0-23");
    expect_refused("* * 0 * *", "day-of-month: 0 is out of range 1-31");
    expect_refused("* * 32 * *", "day-of-month: 32");
    expect_refused("* * * 13 *", "month: 13 is out of range 1-12");
    expect_refused("* * * 0 *", "month: 0");
    expect_refused("* * * * 8", "day-of-week: 8 is out of range 0-7");
    expect_refused("* * * foo *", "month: 'foo' is not a number or a name");
    expect_refused("* * * * monday", "day-of-week: 'monday'");
    expect_refused("* * * * jan", "day-of-week: 'jan'");
    expect_refused("* * * mon *", "month: 'mon'");
    expect_refused("5/10 * * * *", "minute: a step needs a range");
    expect_refused("10-5 * * * *", "minute: the range 10-5 runs backwards");
    expect_refused("1,,2 * * * *", "minute: an empty item");
    expect_refused("1, * * * *", "minute: an empty item");
    expect_refused("1- * * * *", "minute: '1-' is not a number");
    expect_refused("*5 * * * *", "minute: '*5' is not *, N, N-M, */S or N-M/S");
    expect_refused("@daily", "has 1 field;");
    expect_refused("-1 * * * *", "minute: '-1' is not a number");
    expect_refused("99999999999 * * * *", "minute: 99999999999 is out of range");
    expect_refused("* * * * 1-5/", "day-of-week: the step in 1-5/ must be a number");
    expect_refused("0 0 * * *\n", "control character");
    char big[CRON_TEXT_MAX + 8];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = 0;
    expect_refused(big, "at most 256 bytes");
}

static int64_t next(const char *text, int64_t after)
{
    cron_spec c = parse_ok(text);
    return cron_next(&c, after);
}

static void next_matches_known_dates(void **st)
{
    (void)st;
    /* every 5 minutes: strictly after, from mid-minute and from a match */
    assert_int_equal(next("*/5 * * * *", 1704067350), 1704067500);  /* 00:02:30 -> 00:05 */
    assert_int_equal(next("*/5 * * * *", 1704067500), 1704067800);  /* 00:05 -> 00:10 */
    assert_int_equal(next("*/5 * * * *", 1704067499), 1704067500);
    /* weekdays at 9: Friday 2024-01-05 09:00 -> Monday 2024-01-08 09:00 */
    assert_int_equal(next("0 9 * * mon-fri", 1704445200), 1704704400);
    assert_int_equal(next("0 9 * * 1-5", 1704445200 - 1), 1704445200);
    /* Feb 29: from 2024-03-01 to 2028-02-29 */
    assert_int_equal(next("0 0 29 2 *", 1709251200), 1835395200);
    assert_int_equal(next("0 0 29 2 *", 1709164800 - 60), 1709164800);
    /* 2100 is no leap year: from 2097-03-01 the next is 2104, past the 5 years */
    assert_int_equal(next("0 0 29 2 *", 4012934400), 0);
    /* both day fields restricted: the 13th OR a Friday */
    assert_int_equal(next("0 0 13 * fri", 1704067200), 1704412800);  /* Fri Jan 5 */
    assert_int_equal(next("0 0 13 * fri", 1704412800), 1705017600);  /* Fri Jan 12 */
    assert_int_equal(next("0 0 13 * fri", 1705017600), 1705104000);  /* Sat Jan 13 */
    /* a day field starting with '*' is unrestricted (Vixie): days 1,11,21,31 AND Monday */
    assert_int_equal(next("0 0 */10 * mon", 1704067200), 1710115200); /* Mon Mar 11 */
    /* never */
    assert_int_equal(next("0 0 30 2 *", 1704067200), 0);
    assert_int_equal(next("0 0 31 4,6,9,11 *", 1704067200), 0);
    /* year's end */
    assert_int_equal(next("0 0 1 1 *", 1735689599), 1735689600);
    assert_int_equal(next("59 23 31 12 *", 1735689600 - 61), 1735689600 - 60);
    /* before the epoch and at the top of the range: nothing */
    assert_int_equal(next("* * * * *", -5), 0);
    assert_int_equal(next("* * * * *", INT64_MAX), 0);
}

/* The slow way: every minute, through gmtime_r. */
static int64_t naive(const cron_spec *c, int64_t after, int64_t span)
{
    for (int64_t t = (after / 60 + 1) * 60; t <= after + span; t += 60) {
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        int dm = (int)(c->dom >> tm.tm_mday & 1), wm = (int)(c->dow >> tm.tm_wday & 1);
        int day = c->dom_star || c->dow_star ? dm && wm : dm || wm;
        if ((c->minute >> tm.tm_min & 1) && (c->hour >> tm.tm_hour & 1) &&
            (c->month >> (tm.tm_mon + 1) & 1) && day)
            return t;
    }
    return -1;
}

static void next_agrees_with_a_minute_by_minute_scan(void **st)
{
    (void)st;
    static const char *const specs[] = {
        "* * * * *",          "7 * * * *",       "*/7 3-20/3 * * *", "0 0 * * 0",
        "30 12 1,15 * *",     "0 6 * * sat,sun", "15 * 29-31 * *",   "0 0 1 * mon",
        "45 23 * * 5",        "0 */2 10-20 * 3", "5 4 * jan,mar,dec *",
    };
    static const int64_t starts[] = {1704067200, 1709164800 - 3601, 1735689599, 951782400,
                                     4107542340};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
            cron_spec c = parse_ok(specs[i]);
            int64_t got = cron_next(&c, starts[k]), want = naive(&c, starts[k], 62 * 86400);
            if (want >= 0 && got != want)
                fail_msg("'%s' after %lld: %lld, the scan says %lld", specs[i],
                         (long long)starts[k], (long long)got, (long long)want);
            if (want < 0 && got != 0 && got <= starts[k] + 62 * 86400)
                fail_msg("'%s' after %lld: %lld, the scan found none", specs[i],
                         (long long)starts[k], (long long)got);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_forms_give_their_bits),
        cmocka_unit_test(every_bad_form_is_refused_naming_its_field),
        cmocka_unit_test(next_matches_known_dates),
        cmocka_unit_test(next_agrees_with_a_minute_by_minute_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
