/* The eviction policy: the cut keeps the longest prefix, hot pages stay unless nothing else
 * frees enough, the last page never goes, and nothing is chosen when nothing is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy.h"

static void the_cut_is_as_late_as_it_can_be(void **st)
{
    (void)st;
    mem_cand c[40];
    for (int i = 0; i < 40; i++)
        c[i] = (mem_cand){.gain = 100, .last_use = (uint64_t)i + 1, .evictable = 1};
    size_t out[40];
    uint64_t freed;
    /* now = 40: the last 16 pages are hot (used within MEM_HOT_PAGES) */
    size_t k = mem_policy_pick(c, 40, 40, 1000, out, &freed);
    assert_int_equal(k, 10);
    assert_true(freed >= 1000);
    /* the ten cold pages right before the hot tail: pages 0..13 stay byte for byte */
    for (size_t i = 0; i < k; i++)
        assert_int_equal(out[i], 14 + i);
    /* pinned (not evictable) and gainless pages are skipped, the cut moves back */
    c[20].evictable = 0;
    c[21].gain = 0;
    k = mem_policy_pick(c, 40, 40, 1000, out, &freed);
    assert_int_equal(k, 10);
    assert_int_equal(out[0], 12);
    for (size_t i = 0; i < k; i++)
        assert_true(out[i] != 20 && out[i] != 21);
    assert_int_equal(mem_policy_pick(c, 40, 40, 0, out, &freed), 0);
}

static void recently_used_pages_are_spared(void **st)
{
    (void)st;
    mem_cand c[30];
    for (int i = 0; i < 30; i++)
        c[i] = (mem_cand){.gain = 100, .last_use = 1, .evictable = 1};
    c[10].last_use = 100;   /* paged in or hit by a search just now */
    size_t out[30];
    uint64_t freed;
    size_t k = mem_policy_pick(c, 30, 100, 1500, out, &freed);
    assert_int_equal(k, 15);
    for (size_t i = 0; i < k; i++)
        assert_true(out[i] != 10);
}

static void hot_pages_go_last_and_never_the_last_page(void **st)
{
    (void)st;
    mem_cand c[6];
    for (int i = 0; i < 6; i++)
        c[i] = (mem_cand){.gain = 100, .last_use = 90 + (uint64_t)i, .evictable = 1};
    size_t out[6];
    uint64_t freed;
    /* every page hot; need more than all but the last can give */
    size_t k = mem_policy_pick(c, 6, 100, 10000, out, &freed);
    assert_int_equal(k, 5);
    assert_int_equal(freed, 500);
    for (size_t i = 0; i < k; i++)
        assert_int_equal(out[i], i);   /* sorted back into prompt order */
    /* a little: the least recently used hot page first */
    k = mem_policy_pick(c, 6, 100, 50, out, &freed);
    assert_int_equal(k, 1);
    assert_int_equal(out[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_cut_is_as_late_as_it_can_be),
        cmocka_unit_test(recently_used_pages_are_spared),
        cmocka_unit_test(hot_pages_go_last_and_never_the_last_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
