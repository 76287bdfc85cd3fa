/* The SSE parser of aos-llm: WHATWG event-stream framing over bytes fed in any pieces, with
 * every line and event capped, so a provider's stream cannot grow memory without bound. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIRE_INTERNAL
#include "wire.h"

/* Room for "event: " or "data: " and a few stray spaces beyond the data itself. */
#define SSE_LINE_SLACK 64u

struct sse {
    size_t max_event, max_line;
    wire_buf line, data, event;
    int skip_lf;   /* the last line ended in \r: a \n next is part of that line end */
    int bom;       /* bytes of a leading BOM matched so far; -1 once past the start */
    aos_err err;   /* sticky */
    char why[160];
};

static const unsigned char sse_bom[3] = {0xEF, 0xBB, 0xBF};

sse *sse_new(size_t max_event)
{
    if (max_event == 0 || max_event > SIZE_MAX / 2)
        return NULL;
    sse *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->max_event = max_event;
    p->max_line = max_event + SSE_LINE_SLACK;
    return p;
}

void sse_free(sse *p)
{
    if (!p)
        return;
    wire_buf_free(&p->line);
    wire_buf_free(&p->data);
    wire_buf_free(&p->event);
    free(p);
}

static aos_err sse_fail(sse *p, aos_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static aos_err sse_fail(sse *p, aos_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
    p->err = err;
    return err;
}

static aos_err sse_dispatch(sse *p, sse_cb cb, void *arg)
{
    if (p->data.len == 0) {
        p->event.len = 0;
        return AOS_OK;
    }
    p->data.p[--p->data.len] = 0; /* the "\n" after the last data line */
    const char *event = p->event.len ? p->event.p : "";
    int rc = cb(arg, event, p->data.p, p->data.len);
    p->data.len = 0;
    p->event.len = 0;
    if (p->data.p)
        p->data.p[0] = 0;
    if (rc != 0)
        return sse_fail(p, (aos_err)rc, "sse: the event handler stopped the stream (%s)",
                        aos_err_name(rc));
    return AOS_OK;
}

static aos_err sse_line(sse *p, sse_cb cb, void *arg)
{
    const char *l = p->line.p;
    size_t n = p->line.len;
    p->line.len = 0;
    if (n == 0)
        return sse_dispatch(p, cb, arg);
    if (l[0] == ':')
        return AOS_OK;
    const char *colon = memchr(l, ':', n);
    size_t flen = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = (size_t)(l + n - v);
    if (vlen && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(l, "data", 4) == 0) {
        if (p->data.len + vlen > p->max_event)
            return sse_fail(p, AOS_ERR_TOO_BIG, "sse: an event's data is over %zu bytes",
                            p->max_event);
        if (wire_buf_add(&p->data, v, vlen) || wire_buf_add(&p->data, "\n", 1))
            return sse_fail(p, AOS_ERR_NOMEM, "sse: out of memory");
    } else if (flen == 5 && memcmp(l, "event", 5) == 0) {
        p->event.len = 0;
        if (wire_buf_add(&p->event, v, vlen))
            return sse_fail(p, AOS_ERR_NOMEM, "sse: out of memory");
    }
    return AOS_OK; /* id, retry and unknown fields mean nothing to us */
}

static aos_err sse_bytes(sse *p, const char *b, size_t n, sse_cb cb, void *arg)
{
    size_t i = 0;
    while (i < n) {
        if (p->skip_lf) {
            p->skip_lf = 0;
            if (b[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && b[j] != '\r' && b[j] != '\n')
            j++;
        if (j > i) {
            if (p->line.len + (j - i) > p->max_line)
                return sse_fail(p, AOS_ERR_TOO_BIG, "sse: a line is over %zu bytes",
                                p->max_line);
            if (wire_buf_add(&p->line, b + i, j - i))
                return sse_fail(p, AOS_ERR_NOMEM, "sse: out of memory");
        }
        if (j == n)
            break;
        p->skip_lf = b[j] == '\r';
        i = j + 1;
        aos_err err = sse_line(p, cb, arg);
        if (err != AOS_OK)
            return err;
    }
    return AOS_OK;
}

aos_err sse_feed(sse *p, const char *buf, size_t len, sse_cb cb, void *arg, char *why,
                 size_t whylen)
{
    aos_err err = AOS_OK;
    if (!p || !cb || (!buf && len)) {
        if (why && whylen)
            snprintf(why, whylen, "sse_feed: no parser, callback or buffer");
        return AOS_ERR_USAGE;
    }
    if (p->err != AOS_OK)
        goto out;
    /* The BOM may arrive split, too: hold its bytes until it is whole or proves not one. */
    while (p->bom >= 0 && len) {
        if ((unsigned char)buf[0] == sse_bom[p->bom]) {
            buf++;
            len--;
            if (++p->bom == 3)
                p->bom = -1;
            continue;
        }
        int held = p->bom;
        p->bom = -1;
        if (held && (err = sse_bytes(p, (const char *)sse_bom, (size_t)held, cb, arg)))
            goto out;
    }
    (void)sse_bytes(p, buf, len, cb, arg); /* its errors are in p->err */
out:
    if (p->err != AOS_OK && why && whylen)
        snprintf(why, whylen, "%s", p->why);
    return p->err;
}
