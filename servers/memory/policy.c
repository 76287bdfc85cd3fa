/* The eviction policy (policy.h): a backwards scan for the cut, then, rarely, a pass over
 * hot pages by age of last use. O(n log n) at worst; n is a window's pages (capped). */
#include "policy.h"

#include <stdlib.h>


static int is_hot(const mem_cand *c, uint64_t now)
{
    return c->last_use + MEM_HOT_PAGES > now;
}

typedef struct byuse {
    size_t i;
    uint64_t last_use;
} byuse;

static int cmp_use(const void *a, const void *b)
{
    const byuse *x = a, *y = b;
    if (x->last_use != y->last_use)
        return x->last_use < y->last_use ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int cmp_idx(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

size_t mem_policy_pick(const mem_cand *c, size_t n, uint64_t now, uint64_t need, size_t *out,
                       uint64_t *freed)
{
    uint64_t got = 0;
    size_t k = 0;
    *freed = 0;
    if (!n || !need)
        return 0;
    /* the cut: walk back from the end, gathering cold evictable pages */
    size_t s = n;
    while (s > 0 && got < need) {
        s--;
        if (c[s].evictable && c[s].gain && !is_hot(&c[s], now))
            got += c[s].gain;
    }
    for (size_t i = s; i < n; i++)
        if (c[i].evictable && c[i].gain && !is_hot(&c[i], now))
            out[k++] = i;
    if (got < need) {
        /* the whole history's cold pages are not enough: hot ones, oldest use first */
        byuse *h = malloc(n * sizeof *h);
        size_t nh = 0;
        if (h) {
            for (size_t i = 0; i + 1 < n; i++)
                if (c[i].evictable && c[i].gain && is_hot(&c[i], now))
                    h[nh++] = (byuse){i, c[i].last_use};
            qsort(h, nh, sizeof *h, cmp_use);
            for (size_t j = 0; j < nh && got < need; j++) {
                out[k++] = h[j].i;
                got += c[h[j].i].gain;
            }
            free(h);
            qsort(out, k, sizeof *out, cmp_idx);
        }
    }
    *freed = got;
    return k;
}
