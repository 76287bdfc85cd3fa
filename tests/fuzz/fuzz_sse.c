/* libFuzzer target for aos-llm's SSE parser: the input fed whole, split in two at a byte
 * the input picks, and one byte at a time must give the same events, caps and stop. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_BYTEWISE_MAX 4096u /* one feed per byte is slow; longer inputs skip that run */

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_sse: %s\n", what);
    abort();
}

typedef struct {
    char *log;
    size_t len, cap;
    size_t max;
    int n, stop_after, stopped;
} rec;

static void put(rec *r, const void *p, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + n)
            cap *= 2;
        char *q = realloc(r->log, cap);
        if (!q)
            broken("out of memory");
        r->log = q;
        r->cap = cap;
    }
    memcpy(r->log + r->len, p, n);
    r->len += n;
}

static int on_event(void *arg, const char *event, const char *data, size_t len)
{
    rec *r = arg;
    if (r->stopped)
        broken("an event after the callback stopped the feed");
    if (len > r->max)
        broken("an event over the cap");
    if (data[len] != 0)
        broken("event data not NUL-terminated");
    size_t el = strlen(event);
    put(r, &el, sizeof el);
    put(r, event, el);
    put(r, &len, sizeof len);
    put(r, data, len);
    if (r->stop_after && ++r->n == r->stop_after) {
        r->stopped = 1;
        return AOS_ERR_CANCELLED;
    }
    return 0;
}

static aos_err run(const char *s, size_t n, size_t max, int stop_after, const size_t *cuts,
                   size_t ncuts, rec *r)
{
    memset(r, 0, sizeof *r);
    r->max = max;
    r->stop_after = stop_after;
    sse *p = sse_new(max);
    if (!p)
        broken("sse_new failed");
    char why[160] = "";
    aos_err err = AOS_OK;
    size_t at = 0;
    for (size_t i = 0; i <= ncuts && err == AOS_OK; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        err = sse_feed(p, s + at, end - at, on_event, r, why, sizeof why);
        at = end;
    }
    if (err != AOS_OK && err != AOS_ERR_TOO_BIG && err != AOS_ERR_CANCELLED)
        broken("an unexpected error code");
    if (err != AOS_OK && !why[0])
        broken("an error without a reason");
    if (err == AOS_ERR_CANCELLED && !r->stopped)
        broken("cancelled without the callback asking");
    sse_free(p);
    return err;
}

static void same(const rec *a, aos_err ea, const rec *b, aos_err eb, const char *what)
{
    if (ea != eb || a->len != b->len || (a->len && memcmp(a->log, b->log, a->len))) {
        fprintf(stderr, "fuzz_sse: %s: errors %d/%d, logs of %zu/%zu bytes\n", what, ea, eb,
                a->len, b->len);
        broken("the events depend on how the input was split");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = 1 + (size_t)(data[0] & 0x3F) * 16; /* small caps, so TOO_BIG is reached */
    int stop_after = data[1] & 7;                   /* 0: never */
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    size_t cut = n ? ((size_t)data[0] << 8 | data[1]) % (n + 1) : 0;
    rec whole, split, bytes;
    aos_err ew = run(s, n, max, stop_after, NULL, 0, &whole);
    aos_err es = run(s, n, max, stop_after, &cut, 1, &split);
    same(&whole, ew, &split, es, "split in two");
    free(split.log);
    if (n <= FUZZ_BYTEWISE_MAX) {
        size_t *cuts = malloc((n + 1) * sizeof *cuts);
        if (!cuts)
            broken("out of memory");
        for (size_t i = 0; i < n; i++)
            cuts[i] = i;
        aos_err eb = run(s, n, max, stop_after, cuts, n, &bytes);
        same(&whole, ew, &bytes, eb, "one byte at a time");
        free(bytes.log);
        free(cuts);
    }
    free(whole.log);
    return 0;
}
