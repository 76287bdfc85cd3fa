/* The vector index (vindex.h): vectors quantized to int8 with a per-vector scale, rows padded
 * to 32 bytes; the query is widened to int16 once and each row costs one pass of madd. */
#include "vindex.h"

#include <math.h>
#include <stdlib.h>

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VX_X86 1
#endif

struct mem_vindex {
    uint32_t dim, dpad;
    size_t n, cap;
    int8_t *q;                    /* n rows of dpad */
    float *scale;                 /* per row: the float the int8 units stand for */
    uint64_t *ids;
    uint32_t *coll;
};

mem_vindex *mem_vx_new(uint32_t dim)
{
    if (!dim || dim > MEM_VX_DIM_MAX)
        return NULL;
    mem_vindex *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->dim = dim;
    x->dpad = (dim + 31u) & ~31u;
    return x;
}

void mem_vx_free(mem_vindex *x)
{
    if (!x)
        return;
    free(x->q);
    free(x->scale);
    free(x->ids);
    free(x->coll);
    free(x);
}

uint32_t mem_vx_dim(const mem_vindex *x) { return x->dim; }
size_t mem_vx_count(const mem_vindex *x) { return x->n; }

size_t mem_vx_bytes(const mem_vindex *x)
{
    return x->cap * ((size_t)x->dpad + sizeof(float) + sizeof(uint64_t) + sizeof(uint32_t));
}

/* v normalised, then scaled so its largest component is +-127. */
static float quantize(const float *v, uint32_t dim, uint32_t dpad, int8_t *out)
{
    double ss = 0;
    float mx = 0;
    for (uint32_t i = 0; i < dim; i++) {
        ss += (double)v[i] * v[i];
        float a = fabsf(v[i]);
        if (a > mx)
            mx = a;
    }
    memset(out, 0, dpad);
    if (ss <= 0 || !(mx > 0) || !isfinite(ss))
        return 0;
    double norm = sqrt(ss);
    double s = 127.0 / mx;
    for (uint32_t i = 0; i < dim; i++) {
        long r = lround(v[i] * s);
        out[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
    }
    return (float)(1.0 / (s * norm)) ;
}

aos_err mem_vx_add(mem_vindex *x, uint64_t id, uint32_t coll, const float *v)
{
    if (x->n == x->cap) {
        size_t c = x->cap ? x->cap * 2 : 256;
        int8_t *q = realloc(x->q, c * x->dpad);
        if (!q)
            return AOS_ERR_NOMEM;
        x->q = q;
        float *s = realloc(x->scale, c * sizeof *s);
        if (!s)
            return AOS_ERR_NOMEM;
        x->scale = s;
        uint64_t *ids = realloc(x->ids, c * sizeof *ids);
        if (!ids)
            return AOS_ERR_NOMEM;
        x->ids = ids;
        uint32_t *cl = realloc(x->coll, c * sizeof *cl);
        if (!cl)
            return AOS_ERR_NOMEM;
        x->coll = cl;
        x->cap = c;
    }
    x->scale[x->n] = quantize(v, x->dim, x->dpad, x->q + x->n * x->dpad);
    x->ids[x->n] = id;
    x->coll[x->n] = coll;
    x->n++;
    return AOS_OK;
}

#ifndef VX_X86
static int32_t dot_scalar(const int16_t *q, const int8_t *r, uint32_t n)
{
    int32_t s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += q[i] * r[i];
    return s;
}
#endif

#ifdef VX_X86
static int32_t dot_sse2(const int16_t *q, const int8_t *r, uint32_t n)
{
    __m128i acc = _mm_setzero_si128();
    for (uint32_t i = 0; i < n; i += 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)(r + i));
        __m128i lo = _mm_srai_epi16(_mm_unpacklo_epi8(b, b), 8);
        __m128i hi = _mm_srai_epi16(_mm_unpackhi_epi8(b, b), 8);
        acc = _mm_add_epi32(acc, _mm_madd_epi16(lo, _mm_loadu_si128((const __m128i *)(q + i))));
        acc = _mm_add_epi32(acc,
                            _mm_madd_epi16(hi, _mm_loadu_si128((const __m128i *)(q + i + 8))));
    }
    acc = _mm_add_epi32(acc, _mm_shuffle_epi32(acc, 0x4E));
    acc = _mm_add_epi32(acc, _mm_shuffle_epi32(acc, 0xB1));
    return _mm_cvtsi128_si32(acc);
}

__attribute__((target("avx2"))) static int32_t dot_avx2(const int16_t *q, const int8_t *r,
                                                        uint32_t n)
{
    __m256i acc = _mm256_setzero_si256();
    for (uint32_t i = 0; i < n; i += 32) {
        __m256i a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + i)));
        __m256i a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + i + 16)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(
                                        a0, _mm256_loadu_si256((const __m256i *)(q + i))));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(
                                        a1, _mm256_loadu_si256((const __m256i *)(q + i + 16))));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}
#endif

typedef int32_t (*dot_fn)(const int16_t *, const int8_t *, uint32_t);

static dot_fn pick_dot(void)
{
#ifdef VX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return dot_avx2;
    return dot_sse2;
#else
    return dot_scalar;
#endif
}

/* A min-heap of the best k so far: the root is the worst kept. */
static void sift_down(mem_vhit *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && h[l].score < h[m].score)
            m = l;
        if (l + 1 < n && h[l + 1].score < h[m].score)
            m = l + 1;
        if (m == i)
            return;
        mem_vhit t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static int by_score(const void *a, const void *b)
{
    const mem_vhit *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

size_t mem_vx_search(const mem_vindex *x, const float *q, uint32_t coll, size_t k,
                     mem_vhit *out)
{
    if (!k || !x->n)
        return 0;
    int8_t *q8 = malloc(x->dpad);
    int16_t *q16 = malloc(x->dpad * sizeof *q16);
    size_t n = 0;
    if (!q8 || !q16)
        goto out;
    float qs = quantize(q, x->dim, x->dpad, q8);
    if (qs == 0)
        goto out;
    for (uint32_t i = 0; i < x->dpad; i++)
        q16[i] = q8[i];
    dot_fn dot = pick_dot();
    for (size_t r = 0; r < x->n; r++) {
        if (coll && x->coll[r] != coll)
            continue;
        if (x->scale[r] == 0)
            continue;
        float sc = (float)dot(q16, x->q + r * x->dpad, x->dpad) * x->scale[r] * qs;
        if (n < k) {
            out[n++] = (mem_vhit){x->ids[r], sc};
            if (n == k)
                for (size_t i = k / 2 + 1; i-- > 0;)
                    sift_down(out, n, i);
        } else if (sc > out[0].score) {
            out[0] = (mem_vhit){x->ids[r], sc};
            sift_down(out, n, 0);
        }
    }
    qsort(out, n, sizeof *out, by_score);
out:
    free(q8);
    free(q16);
    return n;
}
