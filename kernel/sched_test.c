/* unit_sched: the LLM scheduler's state machine on a virtual clock — fairness, weights,
 * classes with aging, limits never passed, AIMD and Retry-After, deadlines and budgets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler.h"

#define MS 1000u
#define SEC 1000000u

static sched *with(const sched_limits *l, int *prov)
{
    sched *s = sched_new();
    assert_non_null(s);
    *prov = sched_add_provider(s, "p", l);
    assert_int_equal(*prov, 0);
    return s;
}

static sched_item *submit(sched *s, const char *agent, uint64_t in, uint64_t out, uint64_t now,
                          uint64_t deadline, aos_err want)
{
    char why[256] = "";
    sched_item *it = NULL;
    sched_job j = {.agent = agent, .provider = 0, .in_tokens = in, .max_out = out,
                   .price = {1.0, 2.0}, .deadline = deadline, .arg = (void *)agent};
    aos_err rc = sched_submit(s, &j, now, 1, &it, why, sizeof why);
    if (rc != want)
        fail_msg("submit for %s: %s (%s), wanted %s", agent, aos_err_name(rc), why,
                 aos_err_name(want));
    return it;
}

static void finish(sched *s, sched_item *it, uint64_t now, uint64_t in, uint64_t out)
{
    sched_usage u = {.in_tokens = in, .out_tokens = out, .cost_micro_usd = in + 2 * out};
    assert_int_equal(sched_done(s, it, now, 1, 0, 0, &u), 0);
}

/* Keeps every agent backlogged (nq requests each), one at a time in flight, each served
 * and finished at once with its estimate; counts the tokens each agent got. */
static void backlog(sched *s, const char **agents, size_t na, size_t rounds, uint64_t cost,
                    uint64_t *tokens)
{
    uint64_t now = SEC;
    for (size_t a = 0; a < na; a++)
        for (int k = 0; k < 8; k++)
            submit(s, agents[a], cost, 0, now, 0, AOS_OK);
    for (size_t r = 0; r < rounds; r++) {
        sched_item *it = sched_next(s, now);
        assert_non_null(it);
        const char *who = sched_item_arg(it);
        for (size_t a = 0; a < na; a++)
            if (!strcmp(agents[a], who))
                tokens[a] += cost;
        finish(s, it, now, cost, 0);
        submit(s, who, cost, 0, now, 0, AOS_OK);
        now += MS;
    }
}

static void equal_weights_share_equally(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 1};
    int p;
    sched *s = with(&l, &p);
    const char *ag[] = {"a", "b", "c", "d"};
    uint64_t tok[4] = {0};
    backlog(s, ag, 4, 4000, 100, tok);
    double sum = 0, sq = 0;
    for (int i = 0; i < 4; i++) {
        sum += tok[i];
        sq += (double)tok[i] * tok[i];
        assert_in_range(tok[i], 99000, 101000); /* 1/4 of 400000 within 1 % */
    }
    assert_true(sum * sum / (4 * sq) > 0.999); /* Jain's index */
    sched_free(s);
}

static void weights_one_two_four(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 1};
    int p;
    sched *s = with(&l, &p);
    char why[128];
    double w[] = {1, 2, 4};
    const char *ag[] = {"w1", "w2", "w4"};
    for (int i = 0; i < 3; i++) {
        sched_agent_cfg c = {.weight = w[i], .cls = SCHED_CLS_INTERACTIVE};
        assert_int_equal(sched_set_agent(s, ag[i], &c, why, sizeof why), AOS_OK);
    }
    uint64_t tok[3] = {0};
    backlog(s, ag, 3, 7000, 50, tok);
    for (int i = 0; i < 3; i++) {
        double share = tok[i] / (7000.0 * 50), want = w[i] / 7;
        assert_true(share > want * 0.98 && share < want * 1.02);
    }
    sched_free(s);
}

/* Mixed sizes: fairness is by tokens, not by requests. */
static void shares_are_by_tokens(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 1};
    int p;
    sched *s = with(&l, &p);
    uint64_t now = SEC, big = 0, small = 0;
    for (int k = 0; k < 4; k++) {
        submit(s, "big", 1000, 0, now, 0, AOS_OK);
        submit(s, "small", 10, 0, now, 0, AOS_OK);
    }
    for (int r = 0; r < 20000; r++) {
        sched_item *it = sched_next(s, now);
        assert_non_null(it);
        const char *who = sched_item_arg(it);
        uint64_t c = !strcmp(who, "big") ? 1000 : 10;
        *(!strcmp(who, "big") ? &big : &small) += c;
        finish(s, it, now, c, 0);
        submit(s, who, c, 0, now, 0, AOS_OK);
        now += MS;
    }
    double ratio = (double)big / (double)small;
    assert_true(ratio > 0.97 && ratio < 1.03);
    sched_free(s);
}

static void interactive_first_batch_ages(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 1};
    int p;
    sched *s = with(&l, &p);
    char why[128];
    sched_agent_cfg b = {.weight = 1, .cls = SCHED_CLS_BATCH};
    assert_int_equal(sched_set_agent(s, "bat", &b, why, sizeof why), AOS_OK);
    uint64_t now = SEC;
    submit(s, "bat", 10, 0, now, 0, AOS_OK);
    submit(s, "int", 10, 0, now, 0, AOS_OK);
    submit(s, "int", 10, 0, now, 0, AOS_OK);
    /* fresh: interactive goes first even though batch came first */
    sched_item *it = sched_next(s, now);
    assert_string_equal(sched_item_arg(it), "int");
    assert_null(sched_next(s, now)); /* one at a time */
    /* an interactive backlog that never ends: batch still runs once it has waited */
    uint64_t served_batch_at = 0;
    for (int r = 0; r < 100 && !served_batch_at; r++) {
        now += 100 * MS;
        finish(s, it, now, 10, 0);
        submit(s, "int", 10, 0, now, 0, AOS_OK);
        it = sched_next(s, now);
        assert_non_null(it);
        if (!strcmp(sched_item_arg(it), "bat"))
            served_batch_at = now;
    }
    assert_true(served_batch_at > 0);
    assert_true(served_batch_at - SEC >= SCHED_AGE_MS * MS);
    assert_true(served_batch_at - SEC <= SCHED_AGE_MS * MS + 100 * MS);
    finish(s, it, now, 10, 0);
    sched_free(s);
}

/* Random arrivals and service times for ten virtual minutes: the concurrency and the
 * per-minute limits hold at every admission, counted the way providers count them. */
static void limits_are_never_passed(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 4, .requests_per_min = 120, .tokens_per_min = 30000,
                      .output_tokens_per_min = 9000};
    int p;
    sched *s = with(&l, &p);
    enum { MAXF = 64 };
    sched_item *flight[MAXF];
    uint64_t ends[MAXF];
    int nf = 0;
    static uint64_t adm_sec[100000], adm_tok[100000], adm_out[100000];
    size_t nadm = 0;
    srand(7);
    uint64_t now = SEC;
    for (uint64_t t = 0; t < 600 * SEC; t += 10 * MS) {
        now = SEC + t;
        if (rand() % 4 == 0)
            submit(s, rand() % 2 ? "x" : "y", 50 + rand() % 400, 10 + rand() % 200, now, 0,
                   AOS_OK);
        for (int i = 0; i < nf;)
            if (ends[i] <= now) {
                finish(s, flight[i], now, 100, 50);
                flight[i] = flight[--nf];
                ends[i] = ends[nf];
            } else {
                i++;
            }
        sched_item *it;
        while ((it = sched_next(s, now))) {
            assert_true(nf < 4);
            sched_prov_info pi;
            sched_provider_info(s, 0, now, 1, &pi);
            assert_true(pi.window_requests <= 120);
            assert_true(pi.window_tokens <= 30000);
            flight[nf] = it;
            ends[nf++] = now + (200 + (uint64_t)(rand() % 2000)) * MS;
            adm_sec[nadm] = now / SEC;
            adm_tok[nadm] = 100 + 50;
            adm_out[nadm++] = 50;
        }
    }
    /* every 60 s window of seconds, as the sim's limiter and the providers count */
    for (size_t i = 0; i < nadm; i++) {
        uint64_t req = 0, tok = 0, out = 0;
        for (size_t k = 0; k <= i; k++)
            if (adm_sec[k] + 60 > adm_sec[i]) {
                req++;
                tok += adm_tok[k];
                out += adm_out[k];
            }
        assert_true(req <= 120);
        assert_true(tok <= 30000);
        assert_true(out <= 9000);
    }
    assert_true(nadm > 1000); /* and it did work: 120/min over 10 minutes is 1200 */
    while (nf)
        finish(s, flight[--nf], now, 1, 1);
    sched_free(s);
}

static void aimd_and_retry_after(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 10, .requests_per_min = 1000};
    int p;
    sched *s = with(&l, &p);
    uint64_t now = SEC;
    sched_item *a = submit(s, "a", 10, 10, now, 0, AOS_OK);
    sched_item *b = submit(s, "a", 10, 10, now, 0, AOS_OK);
    assert_ptr_equal(sched_next(s, now), a);
    assert_ptr_equal(sched_next(s, now), b);
    /* a 429 with Retry-After 500 ms: the limit shrinks, everyone waits, a keeps its place */
    assert_int_equal(sched_done(s, a, now, 1, 1, 500, NULL), 1);
    sched_prov_info pi;
    sched_provider_info(s, 0, now, 1, &pi);
    assert_true(pi.eff_concurrency > 6.9 && pi.eff_concurrency < 7.1);
    assert_true(pi.rate_factor > 0.69 && pi.rate_factor < 0.71);
    assert_int_equal(pi.rate_limited, 1);
    assert_int_equal(pi.held_ms, 500);
    sched_item *c = submit(s, "a", 10, 10, now, 0, AOS_OK);
    assert_null(sched_next(s, now + 499 * MS));
    assert_int_equal(sched_wake_at(s, now), now + 500 * MS);
    /* a second 429 in the same second does not cut again */
    finish(s, b, now + 10 * MS, 10, 10);
    assert_ptr_equal(sched_next(s, now + 500 * MS), a); /* its place: before c */
    assert_ptr_equal(sched_next(s, now + 500 * MS), c);
    assert_int_equal(sched_done(s, c, now + 600 * MS, 1, 1, 0, NULL), 1);
    sched_provider_info(s, 0, now + 600 * MS, 1, &pi);
    assert_true(pi.eff_concurrency > 6.9 && pi.eff_concurrency < 7.2);
    /* successes raise it again, additively, up to the configured cap */
    now += 2 * SEC;
    finish(s, a, now, 10, 10);
    for (int i = 0; i < 200; i++) {
        sched_item *it = sched_next(s, now);
        if (!it)
            it = submit(s, "a", 1, 1, now, 0, AOS_OK), it = sched_next(s, now);
        assert_non_null(it);
        finish(s, it, now, 1, 1);
        now += 10 * MS;
    }
    sched_provider_info(s, 0, now, 1, &pi);
    assert_true(pi.eff_concurrency == 10.0);
    assert_true(pi.rate_factor == 1.0);
    sched_free(s);
}

/* Without configured limits a 429 still teaches the scheduler a concurrency. */
static void a_429_without_limits_learns_one(void **st)
{
    (void)st;
    sched_limits l = {0};
    int p;
    sched *s = with(&l, &p);
    uint64_t now = SEC;
    sched_item *it[10];
    for (int i = 0; i < 10; i++)
        it[i] = submit(s, "a", 1, 1, now, 0, AOS_OK);
    for (int i = 0; i < 10; i++)
        assert_ptr_equal(sched_next(s, now), it[i]);
    assert_int_equal(sched_done(s, it[9], now, 1, 1, 10, NULL), 1);
    sched_prov_info pi;
    sched_provider_info(s, 0, now, 1, &pi);
    assert_true(pi.eff_concurrency > 6.9 && pi.eff_concurrency < 7.1); /* 70 % of 10 */
    now += 20 * MS;
    assert_null(sched_next(s, now)); /* 9 in flight, 7 allowed */
    for (int i = 0; i < 3; i++)
        finish(s, it[i], now, 1, 1);
    assert_ptr_equal(sched_next(s, now), it[9]);
    for (int i = 3; i < 10; i++)
        finish(s, it[i], now, 1, 1);
    /* a call alone that gets a 429 teaches no concurrency: it was a rate */
    sched_item *one = submit(s, "a", 1, 1, now + 2 * SEC, 0, AOS_OK);
    assert_ptr_equal(sched_next(s, now + 2 * SEC), one);
    sched_provider_info(s, 0, now + 2 * SEC, 1, &pi);
    double before = pi.eff_concurrency;
    assert_int_equal(sched_done(s, one, now + 2 * SEC, 1, 1, 10, NULL), 1);
    sched_provider_info(s, 0, now + 2 * SEC, 1, &pi);
    assert_true(pi.eff_concurrency == before);
    /* a quiet minute gives the configured limits back: unlimited here */
    assert_ptr_equal(sched_next(s, now + 63 * SEC), one);
    sched_provider_info(s, 0, now + 63 * SEC, 1, &pi);
    assert_true(pi.eff_concurrency == 0);
    assert_true(pi.rate_factor == 1.0);
    finish(s, one, now + 63 * SEC, 1, 1);
    sched_free(s);
}

static void deadlines_fail_fast(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 1};
    int p;
    sched *s = with(&l, &p);
    uint64_t now = SEC;
    sched_item *busy = submit(s, "a", 1, 1, now, 0, AOS_OK);
    assert_ptr_equal(sched_next(s, now), busy);
    sched_item *late = submit(s, "b", 1, 1, now, now + 300 * MS, AOS_OK);
    sched_item *later = submit(s, "b", 1, 1, now, now + 900 * MS, AOS_OK);
    assert_int_equal(sched_wake_at(s, now), now + 300 * MS);
    assert_null(sched_expired(s, now + 299 * MS));
    assert_ptr_equal(sched_expired(s, now + 300 * MS), late);
    sched_drop(s, late);
    assert_null(sched_expired(s, now + 300 * MS));
    /* held by a Retry-After past the deadline: TIMEOUT at once, not after waiting */
    assert_int_equal(sched_done(s, busy, now + 400 * MS, 1, 1, 5000, NULL), 1);
    submit(s, "c", 1, 1, now + 400 * MS, now + 2 * SEC, AOS_ERR_TIMEOUT);
    submit(s, "c", 1, 1, now + 400 * MS, now + 100 * MS, AOS_ERR_TIMEOUT);
    /* a queued call leaves when its caller goes */
    sched_drop(s, later);
    sched_prov_info pi;
    sched_provider_info(s, 0, now + 400 * MS, 1, &pi);
    assert_int_equal(pi.queued[0], 1); /* busy, back in the queue */
    assert_int_equal(pi.expired, 1);
    assert_int_equal(pi.refused, 2);
    sched_free(s); /* frees what is still queued */
}

static void budgets_and_caps_refuse(void **st)
{
    (void)st;
    sched_limits l = {.tokens_per_min = 5000, .daily_spend_micro_usd = 5000};
    int p;
    sched *s = with(&l, &p);
    char why[256];
    sched_agent_cfg c = {.weight = 1, .token_budget = 1000};
    assert_int_equal(sched_set_agent(s, "t", &c, why, sizeof why), AOS_OK);
    sched_agent_cfg m = {.weight = 1, .cost_budget_micro_usd = 500};
    assert_int_equal(sched_set_agent(s, "m", &m, why, sizeof why), AOS_OK);
    uint64_t now = SEC;
    /* in flight counts as spent: two of 400 fit a budget of 1000, a third does not */
    sched_item *a = submit(s, "t", 300, 100, now, 0, AOS_OK);
    sched_item *b = submit(s, "t", 300, 100, now, 0, AOS_OK);
    submit(s, "t", 300, 100, now, 0, AOS_ERR_REFUSED);
    assert_ptr_equal(sched_next(s, now), a);
    finish(s, a, now, 50, 10); /* used 60: room again */
    sched_item *d = submit(s, "t", 300, 100, now, 0, AOS_OK);
    /* price 1 and 2 micro-USD per token: 300 + 2 * 100 = 500 fits 500, then nothing */
    sched_item *e = submit(s, "m", 300, 100, now, 0, AOS_OK);
    submit(s, "m", 1, 0, now, 0, AOS_ERR_REFUSED);
    /* asking more than a minute's tokens can never run */
    submit(s, "x", 4900, 200, now, 0, AOS_ERR_TOO_BIG);
    /* the provider's daily cap counts every agent, in flight too: 70 spent, 1500 held */
    sched_item *f = submit(s, "y", 1000, 700, now, 0, AOS_OK); /* 2400: 3970 of 5000 */
    char w2[256];
    sched_item *g = NULL;
    sched_job j = {.agent = "z", .provider = 0, .in_tokens = 1050, .price = {1, 2}};
    assert_int_equal(sched_submit(s, &j, now, 1, &g, w2, sizeof w2), AOS_ERR_REFUSED);
    assert_non_null(strstr(w2, "daily spend cap"));
    /* a new UTC day starts the count again (what is held still counts) */
    assert_int_equal(sched_submit(s, &j, now, 2, &g, w2, sizeof w2), AOS_OK);
    sched_drop(s, g);
    sched_drop(s, b);
    sched_drop(s, d);
    sched_drop(s, e);
    sched_drop(s, f);
    sched_free(s);
}

/* Estimates are replaced by the usage reported: a call that asked 1000 but used 100
 * leaves room in the window for the next. */
static void usage_corrects_the_window(void **st)
{
    (void)st;
    sched_limits l = {.tokens_per_min = 1500};
    int p;
    sched *s = with(&l, &p);
    uint64_t now = SEC;
    sched_item *a = submit(s, "a", 500, 500, now, 0, AOS_OK);
    sched_item *b = submit(s, "a", 500, 500, now, 0, AOS_OK);
    assert_ptr_equal(sched_next(s, now), a);
    assert_null(sched_next(s, now)); /* 1000 + 1000 > 1500 */
    finish(s, a, now + 100 * MS, 60, 40);
    assert_ptr_equal(sched_next(s, now + 100 * MS), b);
    sched_prov_info pi;
    sched_provider_info(s, 0, now + 100 * MS, 1, &pi);
    assert_int_equal(pi.window_tokens, 1100);
    finish(s, b, now + 200 * MS, 1, 1);
    sched_free(s);
}

/* One agent alone gets the whole provider; two providers never wait on each other. */
static void work_conserving(void **st)
{
    (void)st;
    sched *s = sched_new();
    sched_limits l1 = {.max_concurrency = 3}, l2 = {.max_concurrency = 1};
    assert_int_equal(sched_add_provider(s, "p1", &l1), 0);
    assert_int_equal(sched_add_provider(s, "p2", &l2), 1);
    assert_int_equal(sched_add_provider(s, "p1", &l1), -1);
    char why[128];
    sched_item *it;
    sched_job j = {.agent = "solo", .provider = 0, .in_tokens = 10};
    for (int i = 0; i < 5; i++)
        assert_int_equal(sched_submit(s, &j, SEC, 1, &it, why, sizeof why), AOS_OK);
    j.provider = 1;
    j.agent = "other";
    assert_int_equal(sched_submit(s, &j, SEC, 1, &it, why, sizeof why), AOS_OK);
    int n = 0;
    sched_item *got[8];
    while (n < 8 && (got[n] = sched_next(s, SEC)))
        n++;
    assert_int_equal(n, 4); /* 3 on p1, 1 on p2 */
    sched_prov_info pi;
    sched_provider_info(s, 1, SEC, 1, &pi);
    assert_int_equal(pi.in_flight, 1);
    for (int i = 0; i < n; i++)
        sched_drop(s, got[i]);
    sched_free(s);
}

static int count_agent(void *arg, const sched_agent_info *a)
{
    if (!strcmp(a->agent, "a")) {
        *(const sched_agent_info **)arg = a;
        assert_int_equal(a->requests, 3);
        assert_int_equal(a->tokens, 3 * 30);
        assert_true(a->wait_p50_us == 10 * MS);
        assert_true(a->wait_p99_us == 20 * MS);
    }
    return 0;
}

static void figures(void **st)
{
    (void)st;
    sched_limits l = {.max_concurrency = 1};
    int p;
    sched *s = with(&l, &p);
    char why[128];
    sched_agent_cfg c = {.weight = 1, .cls = SCHED_CLS_INTERACTIVE};
    assert_int_equal(sched_set_agent(s, "", &c, why, sizeof why), AOS_OK);
    c.weight = 0;
    assert_int_equal(sched_set_agent(s, "a", &c, why, sizeof why), AOS_ERR_USAGE);
    c.weight = 1;
    c.cls = 7;
    assert_int_equal(sched_set_agent(s, "a", &c, why, sizeof why), AOS_ERR_USAGE);
    uint64_t now = SEC, waits[] = {0, 10, 20};
    for (int i = 0; i < 3; i++) {
        submit(s, "a", 20, 10, now, 0, AOS_OK);
        sched_item *it = sched_next(s, now + waits[i] * MS);
        assert_non_null(it);
        finish(s, it, now, 20, 10);
    }
    const sched_agent_info *seen = NULL;
    sched_each_agent(s, count_agent, &seen);
    assert_non_null(seen);
    sched_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(equal_weights_share_equally),
        cmocka_unit_test(weights_one_two_four),
        cmocka_unit_test(shares_are_by_tokens),
        cmocka_unit_test(interactive_first_batch_ages),
        cmocka_unit_test(limits_are_never_passed),
        cmocka_unit_test(aimd_and_retry_after),
        cmocka_unit_test(a_429_without_limits_learns_one),
        cmocka_unit_test(deadlines_fail_fast),
        cmocka_unit_test(budgets_and_caps_refuse),
        cmocka_unit_test(usage_corrects_the_window),
        cmocka_unit_test(work_conserving),
        cmocka_unit_test(figures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
