/* HTTP/1.1 request parsing for the test LLM endpoint: the request head, the chunked body
 * decoder and a capped byte buffer; pure functions over caller memory, no sockets. */
#ifndef EP_HTTP_H
#define EP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

/* Request line plus headers, and the decoded body: what a provider accepts, roughly. */
#define EP_HEAD_MAX 16384u
#define EP_BODY_MAX (8u << 20)

/* A growable byte buffer. Zero-initialise; the owner frees p with ep_buf_free. */
typedef struct {
    char *p;
    size_t len;
    size_t cap;
} ep_buf;

/* Appends n bytes; AOS_ERR_TOO_BIG if len would pass max, AOS_ERR_NOMEM. */
aos_err ep_buf_add(ep_buf *b, const void *data, size_t n, size_t max);
/* printf-style append, same limits. */
aos_err ep_buf_printf(ep_buf *b, size_t max, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Makes room for n more bytes without changing len. */
aos_err ep_buf_reserve(ep_buf *b, size_t n, size_t max);
void ep_buf_free(ep_buf *b);

/* The parts of a request head the endpoint acts on. The strings are malloc'd copies
 * (NULL when the header was absent), freed by ep_head_clear. */
typedef struct {
    char method[16];
    char path[1024];         /* the target without its query */
    int minor;               /* HTTP/1.minor */
    int64_t content_length;  /* -1: none */
    int chunked;
    int keep_alive;          /* from the version and Connection */
    int expect_continue;
    char *authorization;
    char *x_api_key;
    char *anthropic_version;
    char *request_id;        /* X-Aos-Request-Id */
    char *attempt;           /* X-Aos-Attempt */
} ep_head;

/* Parses the head at buf[0..len). *used = 0: incomplete, read more (the caller keeps at
 * most EP_HEAD_MAX bytes; a full buffer without the end of the head is reported here as
 * AOS_ERR_TOO_BIG). *used > 0: the head took that many bytes and *h is filled (clear it
 * with ep_head_clear). On error *status is the HTTP status to answer before closing
 * (400, 413, 414, 417, 431, 501, 505) and why says what was wrong. */
aos_err ep_head_parse(const char *buf, size_t len, size_t *used, ep_head *h, int *status,
                      char *why, size_t whylen);
void ep_head_clear(ep_head *h);

/* Decoder state of a chunked request body; zero-initialise. */
typedef struct {
    int st;
    int digits;
    uint64_t size;
    uint64_t left;
    size_t line;
} ep_chunked;

/* Feeds in[0..len) to the decoder: *used bytes consumed, data appended to body (at most
 * EP_BODY_MAX in all: AOS_ERR_TOO_BIG), *done once the last chunk and its trailers are
 * read (bytes after them are left unconsumed). AOS_ERR_PROTO on bad framing. */
aos_err ep_chunked_feed(ep_chunked *d, const char *in, size_t len, size_t *used,
                        ep_buf *body, int *done, char *why, size_t whylen);

#endif
