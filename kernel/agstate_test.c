/* agstate: a record comes back as it was written; a reason cut inside a character is
 * written as UTF-8; a damaged or foreign value is refused naming its field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agstate.h"

static void a_record_comes_back(void **st)
{
    (void)st;
    agst a = {.state = AGST_FAILED, .restarts = 7, .at_ms = 1764720000123};
    strcpy(a.reason, "exit 134 after 80 ms (restart: never)");
    strcpy(a.stopped, "");
    char *j = agst_encode(&a);
    assert_non_null(j);
    assert_string_equal(j, "{\"at_ms\":1764720000123,\"reason\":\"exit 134 after 80 ms "
                           "(restart: never)\",\"restarts\":7,\"state\":\"failed\","
                           "\"stopped\":\"\"}");
    agst b;
    char why[256];
    assert_int_equal(agst_decode((const uint8_t *)j, strlen(j), &b, why, sizeof why), AOS_OK);
    assert_int_equal(b.state, AGST_FAILED);
    assert_string_equal(b.reason, a.reason);
    assert_int_equal(b.restarts, 7);
    assert_int_equal(b.at_ms, a.at_ms);
    free(j);
}

/* The current run's step count: written when there is one, read back; a record of before
 * the field (none) reads as no run and 0 steps; a run that is no run id is refused. */
static void the_run_and_its_steps_come_back(void **st)
{
    (void)st;
    agst a = {.state = AGST_LIVE, .run_steps = 12};
    strcpy(a.run, "r-0123456789abcdef0123456789abcdef");
    char *j = agst_encode(&a);
    assert_non_null(j);
    assert_non_null(strstr(j, "\"run\":\"r-0123456789abcdef0123456789abcdef\",\"run_steps\":12"));
    agst b;
    char why[256];
    assert_int_equal(agst_decode((const uint8_t *)j, strlen(j), &b, why, sizeof why), AOS_OK);
    assert_string_equal(b.run, a.run);
    assert_int_equal(b.run_steps, 12);
    free(j);
    const char *old = "{\"state\":\"live\",\"reason\":\"\",\"stopped\":\"\",\"restarts\":0,"
                      "\"at_ms\":0}";
    strcpy(b.run, "x");
    assert_int_equal(agst_decode((const uint8_t *)old, strlen(old), &b, why, sizeof why), AOS_OK);
    assert_string_equal(b.run, "");
    assert_int_equal(b.run_steps, 0);
    const char *bad[] = {"{\"state\":\"live\",\"reason\":\"\",\"stopped\":\"\",\"restarts\":0,"
                         "\"at_ms\":0,\"run\":\"../x\",\"run_steps\":1}",
                         "{\"state\":\"live\",\"reason\":\"\",\"stopped\":\"\",\"restarts\":0,"
                         "\"at_ms\":0,\"run\":\"r-1\",\"run_steps\":-1}"};
    const char *field[] = {"run", "run_steps"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(agst_decode((const uint8_t *)bad[i], strlen(bad[i]), &b, why, sizeof why),
                         AOS_ERR_USAGE);
        assert_non_null(strstr(why, field[i]));
    }
    assert_int_equal(agst_run_ok("r-ab", 4), 1);
    assert_int_equal(agst_run_ok("r/ab", 4), 0);
}

static void a_cut_reason_is_still_utf8(void **st)
{
    (void)st;
    agst a = {.state = AGST_DONE};
    strcpy(a.reason, "stopped: \xc3\xa9t\xc3"); /* "été" cut inside its last character */
    strcpy(a.stopped, "x\xff" "y");              /* not UTF-8 at all */
    char *j = agst_encode(&a);
    assert_non_null(j);
    agst b;
    char why[256];
    assert_int_equal(agst_decode((const uint8_t *)j, strlen(j), &b, why, sizeof why), AOS_OK);
    assert_string_equal(b.reason, "stopped: \xc3\xa9t");
    assert_string_equal(b.stopped, "x?y");
    free(j);
}

static void damaged_records_are_refused(void **st)
{
    (void)st;
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"", "JSON object"},
        {"[1]", "JSON object"},
        {"{\"state\":\"zombie\",\"reason\":\"\",\"stopped\":\"\",\"restarts\":0,\"at_ms\":0}",
         "state"},
        {"{\"state\":\"done\",\"reason\":5,\"stopped\":\"\",\"restarts\":0,\"at_ms\":0}",
         "reason"},
        {"{\"state\":\"done\",\"reason\":\"a\\u0000b\",\"stopped\":\"\",\"restarts\":0,"
         "\"at_ms\":0}", "not allowed"}, /* jansson refuses a NUL itself */
        {"{\"state\":\"done\",\"reason\":\"\",\"stopped\":\"\",\"restarts\":-1,\"at_ms\":0}",
         "restarts"},
        {"{\"state\":\"done\",\"reason\":\"\",\"stopped\":\"\",\"restarts\":1}", "at_ms"},
        {"{\"state\":\"done\",\"state\":\"live\",\"reason\":\"\",\"stopped\":\"\","
         "\"restarts\":0,\"at_ms\":0}", "JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        agst b;
        char why[256];
        aos_err e = agst_decode((const uint8_t *)cases[i].json, strlen(cases[i].json), &b, why,
                                sizeof why);
        if (e != AOS_ERR_USAGE || !strstr(why, cases[i].needle))
            fail_msg("case %zu: %d: %s", i, (int)e, why);
        assert_int_equal(b.state, AGST_LIVE); /* zeroed */
    }
    /* a reason past the cap */
    char big[600];
    int n = snprintf(big, sizeof big, "{\"state\":\"done\",\"reason\":\"%0300d\",\"stopped\":"
                     "\"\",\"restarts\":0,\"at_ms\":0}", 0);
    agst b;
    char why[256];
    assert_int_equal(agst_decode((const uint8_t *)big, (size_t)n, &b, why, sizeof why),
                     AOS_ERR_USAGE);
    /* a run id past its own (shorter) cap: refused, not copied over what follows it
     * (fuzz_agstate found it writing past run[]) */
    n = snprintf(big, sizeof big, "{\"state\":\"done\",\"reason\":\"\",\"stopped\":\"\","
                 "\"restarts\":0,\"at_ms\":0,\"run\":\"r-%0100d\"}", 0);
    assert_int_equal(agst_decode((const uint8_t *)big, (size_t)n, &b, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "run"));
}

/* Run records (libaos writes them, the agent may too): read back checked, and only a
 * finished one past the retention is expired. */
static void run_records_are_read_as_untrusted(void **st)
{
    (void)st;
    char why[256];
    agst_runrec r;
    const char *ok = "{\"run\":\"r-0a1b\",\"state\":\"done\",\"started_ms\":1000,"
                     "\"ended_ms\":5000,\"steps\":7,\"reason\":\"exit 0\"}";
    assert_int_equal(agst_runrec_decode((const uint8_t *)ok, strlen(ok), &r, why, sizeof why),
                     AOS_OK);
    assert_string_equal(r.run, "r-0a1b");
    assert_int_equal(r.state, 1);
    assert_int_equal(r.started_ms, 1000);
    assert_int_equal(r.ended_ms, 5000);
    assert_int_equal(r.steps, 7);
    assert_string_equal(r.reason, "exit 0");
    /* expired only when finished and ended at least keep_s ago */
    assert_false(agst_runrec_expired(&r, 5000 + 9999, 10));
    assert_true(agst_runrec_expired(&r, 5000 + 10000, 10));
    assert_false(agst_runrec_expired(&r, 4000, 0)); /* ended "in the future": a skewed clock */
    assert_true(agst_runrec_expired(&r, 5000, 0));
    const char *running = "{\"run\":\"r-00\",\"state\":\"running\",\"started_ms\":1,"
                          "\"ended_ms\":2,\"steps\":0}";
    assert_int_equal(agst_runrec_decode((const uint8_t *)running, strlen(running), &r, why,
                                        sizeof why),
                     AOS_OK);
    assert_false(agst_runrec_expired(&r, UINT64_MAX, 0)); /* running: never, whatever its age */
    assert_false(agst_runrec_expired(&r, 10, UINT64_MAX));
    /* a reason past the cap is cut to a whole character */
    char big[2048];
    int n = snprintf(big, sizeof big,
                     "{\"run\":\"r-01\",\"state\":\"failed\",\"started_ms\":1,"
                     "\"ended_ms\":2,\"steps\":0,\"reason\":\"");
    for (int i = 0; i < 300; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "\u00e9");
    n += snprintf(big + n, sizeof big - (size_t)n, "\"}");
    assert_int_equal(agst_runrec_decode((const uint8_t *)big, (size_t)n, &r, why, sizeof why),
                     AOS_OK);
    assert_int_equal(strlen(r.reason), 400);
    static const char *const bad[] = {
        "[]", "{", "{\"run\":\"x-01\",\"state\":\"done\",\"started_ms\":1,\"ended_ms\":2,\"steps\":0}",
        "{\"run\":\"r-0G\",\"state\":\"done\",\"started_ms\":1,\"ended_ms\":2,\"steps\":0}",
        "{\"run\":\"r-01\",\"state\":\"gone\",\"started_ms\":1,\"ended_ms\":2,\"steps\":0}",
        "{\"run\":\"r-01\",\"state\":\"done\",\"started_ms\":-1,\"ended_ms\":2,\"steps\":0}",
        "{\"run\":\"r-01\",\"state\":\"done\",\"started_ms\":1,\"ended_ms\":\"2\",\"steps\":0}",
        "{\"run\":\"r-01\",\"state\":\"done\",\"started_ms\":1,\"ended_ms\":2}",
        "{\"run\":\"r-01\",\"state\":\"done\",\"started_ms\":1,\"ended_ms\":2,\"steps\":0,\"reason\":3}",
        "{\"run\":\"r-01\",\"run\":\"r-02\",\"state\":\"done\",\"started_ms\":1,\"ended_ms\":2,\"steps\":0}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(agst_runrec_decode((const uint8_t *)bad[i], strlen(bad[i]), &r, why,
                                            sizeof why),
                         AOS_ERR_USAGE);
        assert_string_equal(r.run, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_record_comes_back),
        cmocka_unit_test(a_cut_reason_is_still_utf8),
        cmocka_unit_test(the_run_and_its_steps_come_back),
        cmocka_unit_test(damaged_records_are_refused),
        cmocka_unit_test(run_records_are_read_as_untrusted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
