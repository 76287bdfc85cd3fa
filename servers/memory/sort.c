/* mem_sort (sort.h): a textbook heap sort over byte-swapped elements. */
#include "sort.h"

#include <string.h>

static void swap(unsigned char *a, unsigned char *b, size_t size)
{
    unsigned char t[64];
    memcpy(t, a, size);
    memcpy(a, b, size);
    memcpy(b, t, size);
}

static void sift(unsigned char *b, size_t i, size_t n, size_t size,
                 int (*cmp)(const void *, const void *))
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && cmp(b + l * size, b + m * size) > 0)
            m = l;
        if (l + 1 < n && cmp(b + (l + 1) * size, b + m * size) > 0)
            m = l + 1;
        if (m == i)
            return;
        swap(b + i * size, b + m * size, size);
        i = m;
    }
}

void mem_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
    unsigned char *b = base;
    if (n < 2 || size > 64)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift(b, i, n, size, cmp);
    for (size_t e = n - 1; e > 0; e--) {
        swap(b, b + e * size, size);
        sift(b, 0, e, size, cmp);
    }
}
