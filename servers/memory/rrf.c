/* Reciprocal rank fusion (rrf.h): a merge by id in O((na + nb) log(na + nb)). */
#include "rrf.h"

#include <stdlib.h>


static int by_id(const void *x, const void *y)
{
    const mem_fused *a = x, *b = y;
    return a->id < b->id ? -1 : a->id > b->id;
}

static uint32_t best(const mem_fused *f)
{
    uint32_t a = f->pos_a ? f->pos_a : UINT32_MAX, b = f->pos_b ? f->pos_b : UINT32_MAX;
    return a < b ? a : b;
}

static int by_score(const void *x, const void *y)
{
    const mem_fused *a = x, *b = y;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    uint32_t ra = best(a), rb = best(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

size_t mem_rrf(const uint64_t *a, size_t na, const uint64_t *b, size_t nb, unsigned k,
               mem_fused *out)
{
    size_t n = 0;
    for (size_t i = 0; i < na; i++)
        out[n++] = (mem_fused){a[i], 0, (uint32_t)(i + 1), 0};
    for (size_t i = 0; i < nb; i++)
        out[n++] = (mem_fused){b[i], 0, 0, (uint32_t)(i + 1)};
    qsort(out, n, sizeof *out, by_id);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && out[m - 1].id == out[i].id) {
            mem_fused *f = &out[m - 1];
            if (out[i].pos_a && (!f->pos_a || out[i].pos_a < f->pos_a))
                f->pos_a = out[i].pos_a;
            if (out[i].pos_b && (!f->pos_b || out[i].pos_b < f->pos_b))
                f->pos_b = out[i].pos_b;
            continue;
        }
        out[m++] = out[i];
    }
    for (size_t i = 0; i < m; i++)
        out[i].score = (out[i].pos_a ? 1.0 / (k + out[i].pos_a) : 0) +
                       (out[i].pos_b ? 1.0 / (k + out[i].pos_b) : 0);
    qsort(out, m, sizeof *out, by_score);
    return m;
}
