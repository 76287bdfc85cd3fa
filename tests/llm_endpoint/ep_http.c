/* HTTP/1.1 request parsing for the test LLM endpoint: strict about framing (a client bug
 * must show up as a 400, not be guessed around), lenient only where curl and RFC 9112 are. */
#include "ep_http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EP_MAX_HEADERS 100
#define EP_CHUNK_LINE_MAX 4096u

aos_err ep_buf_reserve(ep_buf *b, size_t n, size_t max)
{
    if (n > max || b->len > max - n)
        return AOS_ERR_TOO_BIG;
    if (b->len + n <= b->cap)
        return AOS_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
    if (cap > max)
        cap = max;
    char *p = realloc(b->p, cap ? cap : 1);
    if (!p)
        return AOS_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return AOS_OK;
}

aos_err ep_buf_add(ep_buf *b, const void *data, size_t n, size_t max)
{
    aos_err e = ep_buf_reserve(b, n, max);
    if (e != AOS_OK)
        return e;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    return AOS_OK;
}

aos_err ep_buf_printf(ep_buf *b, size_t max, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return AOS_ERR_INTERNAL;
    aos_err e = ep_buf_reserve(b, (size_t)n + 1, max);
    if (e != AOS_OK)
        return e;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return AOS_OK;
}

void ep_buf_free(ep_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void ep_head_clear(ep_head *h)
{
    free(h->authorization);
    free(h->x_api_key);
    free(h->anthropic_version);
    free(h->request_id);
    free(h->attempt);
    memset(h, 0, sizeof *h);
    h->content_length = -1;
}

/* RFC 9110 token characters: what a method or a header name may be made of. */
static int is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static aos_err fail(int *status, int st, char *why, size_t whylen, const char *msg)
{
    *status = st;
    snprintf(why, whylen, "%s", msg);
    return st == 400 ? AOS_ERR_PROTO : AOS_ERR_TOO_BIG;
}

/* Replaces *dst with a copy of v[0..n); a repeated header keeps its last value. */
static aos_err keep(char **dst, const char *v, size_t n)
{
    char *s = strndup(v, n);
    if (!s)
        return AOS_ERR_NOMEM;
    free(*dst);
    *dst = s;
    return AOS_OK;
}

/* Does the comma-separated list v[0..n) hold token tok (case-insensitive)? */
static int list_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

static aos_err parse_request_line(const char *l, size_t n, ep_head *h, int *status,
                                  char *why, size_t whylen)
{
    const char *sp1 = memchr(l, ' ', n);
    if (!sp1 || sp1 == l || (size_t)(sp1 - l) >= sizeof h->method)
        return fail(status, 400, why, whylen, "malformed request line (method)");
    for (const char *p = l; p < sp1; p++)
        if (!is_tchar((unsigned char)*p))
            return fail(status, 400, why, whylen, "malformed request line (method)");
    memcpy(h->method, l, (size_t)(sp1 - l));
    h->method[sp1 - l] = '\0';
    const char *t = sp1 + 1, *end = l + n;
    const char *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!sp2 || sp2 == t || *t != '/')
        return fail(status, 400, why, whylen, "malformed request line (target)");
    for (const char *p = t; p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return fail(status, 400, why, whylen, "malformed request line (target)");
    const char *q = memchr(t, '?', (size_t)(sp2 - t));
    size_t plen = (size_t)((q ? q : sp2) - t);
    if ((size_t)(sp2 - t) >= 8192 || plen >= sizeof h->path)
        return fail(status, 414, why, whylen, "request target too long");
    memcpy(h->path, t, plen);
    h->path[plen] = '\0';
    const char *v = sp2 + 1;
    size_t vl = (size_t)(end - v);
    if (vl == 8 && memcmp(v, "HTTP/1.1", 8) == 0)
        h->minor = 1;
    else if (vl == 8 && memcmp(v, "HTTP/1.0", 8) == 0)
        h->minor = 0;
    else if (vl == 8 && memcmp(v, "HTTP/", 5) == 0 && isdigit((unsigned char)v[5]) &&
             v[6] == '.' && isdigit((unsigned char)v[7]))
        return fail(status, 505, why, whylen, "HTTP version not supported");
    else
        return fail(status, 400, why, whylen, "malformed request line (version)");
    h->keep_alive = h->minor == 1;
    return AOS_OK;
}

static aos_err parse_header(const char *l, size_t n, ep_head *h, int *have_host,
                            int *status, char *why, size_t whylen)
{
    const char *colon = memchr(l, ':', n);
    if (!colon || colon == l)
        return fail(status, 400, why, whylen, "malformed header line");
    for (const char *p = l; p < colon; p++)
        if (!is_tchar((unsigned char)*p))
            return fail(status, 400, why, whylen, "malformed header name");
    size_t nl = (size_t)(colon - l);
    const char *v = colon + 1, *e = l + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    for (const char *p = v; p < e; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(status, 400, why, whylen, "control character in a header value");
    }
    size_t vl = (size_t)(e - v);
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(l, name, nl) == 0)
    if (IS("content-length")) {
        if (vl == 0 || vl > 18)
            return fail(status, 400, why, whylen, "bad Content-Length");
        int64_t x = 0;
        for (size_t i = 0; i < vl; i++) {
            if (!isdigit((unsigned char)v[i]))
                return fail(status, 400, why, whylen, "bad Content-Length");
            x = x * 10 + (v[i] - '0');
        }
        if (h->content_length >= 0 && h->content_length != x)
            return fail(status, 400, why, whylen, "conflicting Content-Length headers");
        h->content_length = x;
    } else if (IS("transfer-encoding")) {
        if (!(vl == 7 && strncasecmp(v, "chunked", 7) == 0))
            return fail(status, 501, why, whylen, "only Transfer-Encoding: chunked is known");
        h->chunked = 1;
    } else if (IS("connection")) {
        if (list_has(v, vl, "close"))
            h->keep_alive = 0;
        else if (list_has(v, vl, "keep-alive"))
            h->keep_alive = 1;
    } else if (IS("expect")) {
        if (!(vl == 12 && strncasecmp(v, "100-continue", 12) == 0))
            return fail(status, 417, why, whylen, "unknown Expect");
        h->expect_continue = 1;
    } else if (IS("host")) {
        *have_host = 1;
    } else if (IS("authorization")) {
        return keep(&h->authorization, v, vl);
    } else if (IS("x-api-key")) {
        return keep(&h->x_api_key, v, vl);
    } else if (IS("anthropic-version")) {
        return keep(&h->anthropic_version, v, vl);
    } else if (IS("x-aos-request-id")) {
        return keep(&h->request_id, v, vl);
    } else if (IS("x-aos-attempt")) {
        return keep(&h->attempt, v, vl);
    }
#undef IS
    return AOS_OK;
}

aos_err ep_head_parse(const char *buf, size_t len, size_t *used, ep_head *h, int *status,
                      char *why, size_t whylen)
{
    *used = 0;
    *status = 0;
    memset(h, 0, sizeof *h);
    h->content_length = -1;
    size_t start = 0;
    /* RFC 9112 2.2: empty lines before a request line are ignored. */
    while (start < len && (buf[start] == '\r' || buf[start] == '\n') && start < 8)
        start++;
    size_t end = 0;
    for (size_t i = start; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n') {
            end = i + 2;
            break;
        }
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
            end = i + 3;
            break;
        }
    }
    if (!end) {
        if (len >= EP_HEAD_MAX)
            return fail(status, 431, why, whylen, "request head over 16 KiB");
        /* A request line needs no more than a few KiB; refuse binary garbage early. */
        for (size_t i = start; i < len; i++)
            if (buf[i] == '\0')
                return fail(status, 400, why, whylen, "NUL byte in the request head");
        return AOS_OK;
    }
    if (end > EP_HEAD_MAX)
        return fail(status, 431, why, whylen, "request head over 16 KiB");
    aos_err e = AOS_OK;
    int line_no = 0, have_host = 0;
    size_t p = start;
    while (p < end) {
        const char *nl = memchr(buf + p, '\n', end - p);
        size_t n = (size_t)(nl - (buf + p));
        const char *l = buf + p;
        p += n + 1;
        if (n && l[n - 1] == '\r')
            n--;
        if (n == 0)
            break;
        if (memchr(l, '\r', n) || memchr(l, '\0', n)) {
            e = fail(status, 400, why, whylen, "stray CR or NUL in the request head");
            goto out;
        }
        if (line_no == 0) {
            e = parse_request_line(l, n, h, status, why, whylen);
        } else if (l[0] == ' ' || l[0] == '\t') {
            e = fail(status, 400, why, whylen, "obsolete header line folding");
        } else if (line_no > EP_MAX_HEADERS) {
            e = fail(status, 431, why, whylen, "more than 100 header lines");
        } else {
            e = parse_header(l, n, h, &have_host, status, why, whylen);
            if (e == AOS_ERR_NOMEM) {
                *status = 500;
                snprintf(why, whylen, "out of memory");
            }
        }
        if (e != AOS_OK)
            goto out;
        line_no++;
    }
    if (h->chunked && h->content_length >= 0) {
        e = fail(status, 400, why, whylen, "both Content-Length and Transfer-Encoding");
        goto out;
    }
    if (h->minor == 1 && !have_host) {
        e = fail(status, 400, why, whylen, "HTTP/1.1 request without Host");
        goto out;
    }
    if (h->chunked && h->minor == 0) {
        e = fail(status, 400, why, whylen, "chunked body in an HTTP/1.0 request");
        goto out;
    }
    *used = end;
out:
    if (e != AOS_OK)
        ep_head_clear(h);
    return e;
}

enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER_START, C_TRAILER,
       C_END_LF, C_DONE };

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

aos_err ep_chunked_feed(ep_chunked *d, const char *in, size_t len, size_t *used,
                        ep_buf *body, int *done, char *why, size_t whylen)
{
    size_t i = 0;
    aos_err e = AOS_OK;
    *done = d->st == C_DONE;
    while (i < len && d->st != C_DONE) {
        unsigned char c = (unsigned char)in[i];
        switch (d->st) {
        case C_SIZE: {
            int v = hexval(c);
            if (v >= 0) {
                if (++d->digits > 8) {
                    snprintf(why, whylen, "chunk size too large");
                    e = AOS_ERR_TOO_BIG;
                    goto out;
                }
                d->size = d->size * 16 + (uint64_t)v;
                i++;
                break;
            }
            if (!d->digits) {
                snprintf(why, whylen, "chunk size line without a size");
                e = AOS_ERR_PROTO;
                goto out;
            }
            if (c == ';' || c == ' ' || c == '\t') {
                d->st = C_EXT;
                d->line = 0;
                i++;
            } else if (c == '\r') {
                d->st = C_SIZE_LF;
                i++;
            } else if (c == '\n') {
                d->st = C_SIZE_LF;
            } else {
                snprintf(why, whylen, "bad character in a chunk size");
                e = AOS_ERR_PROTO;
                goto out;
            }
            break;
        }
        case C_EXT:
            if (c == '\n') {
                d->st = C_SIZE_LF;
                break;
            }
            if (++d->line > EP_CHUNK_LINE_MAX) {
                snprintf(why, whylen, "chunk extension too long");
                e = AOS_ERR_PROTO;
                goto out;
            }
            i++;
            break;
        case C_SIZE_LF:
            if (c != '\n') {
                snprintf(why, whylen, "chunk size line not ended by LF");
                e = AOS_ERR_PROTO;
                goto out;
            }
            i++;
            if (d->size == 0) {
                d->st = C_TRAILER_START;
                d->line = 0;
            } else {
                if (d->size > EP_BODY_MAX || body->len + d->size > EP_BODY_MAX) {
                    snprintf(why, whylen, "chunked body over %u bytes", EP_BODY_MAX);
                    e = AOS_ERR_TOO_BIG;
                    goto out;
                }
                d->left = d->size;
                d->st = C_DATA;
            }
            break;
        case C_DATA: {
            size_t n = len - i;
            if (n > d->left)
                n = (size_t)d->left;
            e = ep_buf_add(body, in + i, n, EP_BODY_MAX);
            if (e != AOS_OK) {
                snprintf(why, whylen, "chunked body over %u bytes", EP_BODY_MAX);
                goto out;
            }
            i += n;
            d->left -= n;
            if (!d->left)
                d->st = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
        case C_DATA_LF:
            if (c == '\r' && d->st == C_DATA_CR) {
                d->st = C_DATA_LF;
                i++;
            } else if (c == '\n') {
                d->st = C_SIZE;
                d->size = 0;
                d->digits = 0;
                i++;
            } else {
                snprintf(why, whylen, "chunk data not followed by CRLF");
                e = AOS_ERR_PROTO;
                goto out;
            }
            break;
        case C_TRAILER_START:
            if (c == '\r') {
                d->st = C_END_LF;
                i++;
            } else if (c == '\n') {
                d->st = C_DONE;
                i++;
            } else {
                d->st = C_TRAILER;
            }
            break;
        case C_TRAILER:
            if (++d->line > EP_HEAD_MAX) {
                snprintf(why, whylen, "chunked trailers over 16 KiB");
                e = AOS_ERR_TOO_BIG;
                goto out;
            }
            if (c == '\n')
                d->st = C_TRAILER_START;
            i++;
            break;
        case C_END_LF:
            if (c != '\n') {
                snprintf(why, whylen, "chunked body not ended by CRLF");
                e = AOS_ERR_PROTO;
                goto out;
            }
            d->st = C_DONE;
            i++;
            break;
        default:
            break;
        }
    }
    *done = d->st == C_DONE;
out:
    *used = i;
    return e;
}
