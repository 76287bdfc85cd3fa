/* The vector index and rank fusion: nearest neighbours against a brute-force float scan,
 * collection filters, zero vectors, and RRF's arithmetic and ties. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "rrf.h"
#include "vindex.h"

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static double cosine(const float *a, const float *b, unsigned n)
{
    double d = 0, x = 0, y = 0;
    for (unsigned i = 0; i < n; i++) {
        d += (double)a[i] * b[i];
        x += (double)a[i] * a[i];
        y += (double)b[i] * b[i];
    }
    return d / sqrt(x * y);
}

static void nearest_agree_with_a_float_scan(void **st)
{
    (void)st;
    for (unsigned dim = 7; dim <= 1536; dim = dim * 3 + 1) {
        unsigned s = dim, n = 2000;
        mem_vindex *x = mem_vx_new(dim);
        assert_non_null(x);
        float *v = malloc(sizeof(float) * dim * n), q[1600];
        for (unsigned i = 0; i < n * dim; i++)
            v[i] = frand(&s);
        for (unsigned i = 0; i < n; i++)
            assert_int_equal(mem_vx_add(x, 1000 + i, 1 + i % 3, v + i * dim), 0);
        assert_int_equal(mem_vx_count(x), n);
        for (int t = 0; t < 5; t++) {
            unsigned target = (unsigned)(t * 397) % n;
            for (unsigned i = 0; i < dim; i++)   /* near one stored vector */
                q[i] = v[target * dim + i] + 0.05f * frand(&s);
            mem_vhit h[10];
            size_t k = mem_vx_search(x, q, 0, 10, h);
            assert_int_equal(k, 10);
            assert_int_equal(h[0].id, 1000 + target);
            assert_true(fabs(h[0].score - cosine(q, v + target * dim, dim)) < 0.03);
            for (size_t i = 1; i < k; i++)
                assert_true(h[i - 1].score >= h[i].score);
            /* a collection filter keeps its own only */
            k = mem_vx_search(x, q, 2, 10, h);
            for (size_t i = 0; i < k; i++)
                assert_int_equal((h[i].id - 1000) % 3, 1);
        }
        /* a zero query matches nothing */
        for (unsigned i = 0; i < dim; i++)
            q[i] = 0;
        mem_vhit h[3];
        assert_int_equal(mem_vx_search(x, q, 0, 3, h), 0);
        free(v);
        mem_vx_free(x);
    }
    assert_null(mem_vx_new(0));
    assert_null(mem_vx_new(MEM_VX_DIM_MAX + 1));
}

static void fewer_than_k_and_zero_rows(void **st)
{
    (void)st;
    mem_vindex *x = mem_vx_new(4);
    float a[4] = {1, 0, 0, 0}, z[4] = {0, 0, 0, 0}, b[4] = {0.9f, 0.1f, 0, 0};
    mem_vx_add(x, 1, 1, a);
    mem_vx_add(x, 2, 1, z);
    mem_vx_add(x, 3, 1, b);
    mem_vhit h[10];
    assert_int_equal(mem_vx_search(x, a, 0, 10, h), 2);   /* the zero row never matches */
    assert_int_equal(h[0].id, 1);
    assert_int_equal(h[1].id, 3);
    mem_vx_free(x);
}

static void rrf_sums_reciprocal_ranks(void **st)
{
    (void)st;
    uint64_t a[] = {10, 20, 30}, b[] = {30, 40, 10, 30};
    mem_fused f[7];
    size_t n = mem_rrf(a, 3, b, 4, 60, f);
    assert_int_equal(n, 4);
    /* 10: 1/61 + 1/63; 30: 1/63 + 1/61 (its best rank in b): a tie, the smaller id first */
    assert_int_equal(f[0].id, 10);
    assert_int_equal(f[1].id, 30);
    assert_true(fabs(f[0].score - (1.0 / 61 + 1.0 / 63)) < 1e-12);
    assert_int_equal(f[1].pos_b, 1);
    assert_int_equal(f[1].pos_a, 3);
    /* 20 (rank 2 in a) beats 40 (rank 2 in b)? equal scores: the id decides */
    assert_int_equal(f[2].id, 20);
    assert_int_equal(f[3].id, 40);
    assert_int_equal(f[3].pos_a, 0);
    assert_int_equal(mem_rrf(NULL, 0, NULL, 0, 60, f), 0);
    /* one list alone keeps its order */
    n = mem_rrf(b, 2, NULL, 0, 60, f);
    assert_int_equal(f[0].id, 30);
    assert_int_equal(f[1].id, 40);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nearest_agree_with_a_float_scan),
        cmocka_unit_test(fewer_than_k_and_zero_rows),
        cmocka_unit_test(rrf_sums_reciprocal_ranks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
