/* Batch frames: several envelopes in one nng message on a server link, so a busy link pays
 * nng's per-message thread hand-offs once per batch instead of once per envelope. */
#ifndef AOS_BATCH_H
#define AOS_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>

#include "aos/err.h"

/* Layout: the two bytes 0x00 'B', then records of a 4-byte big-endian length and one
 * encoded envelope. A protobuf message never starts with byte 0 (field number 0 is not a
 * tag), so a frame cannot be taken for an envelope nor an envelope for a frame. */
#define AOS_BATCH_MAGIC0 0x00u
#define AOS_BATCH_MAGIC1 0x42u
#define AOS_BATCH_HDR 2u
#define AOS_BATCH_REC_HDR 4u
#define AOS_BATCH_MAX 128u       /* envelopes in one frame */

/* 1 when buf is a batch frame (by its first two bytes), 0 for a plain envelope. */
int aos_batch_is(const void *buf, size_t len);

/* Next record of the frame buf[0..len) at *off (start with *off = 0). AOS_OK: *rec and
 * *reclen (pointing into buf) hold it and *off moves past it; AOS_ERR_NOT_FOUND: no more;
 * AOS_ERR_PROTO: a malformed frame (a short record, an empty one, too many), with why.
 * Nothing is copied or allocated; each record is still an undecoded, untrusted envelope. */
aos_err aos_batch_next(const uint8_t *buf, size_t len, size_t *off, const uint8_t **rec,
                       size_t *reclen, char *why, size_t whylen);

/* A frame being built. Owned by the caller; aos_batch_take hands the message over. */
typedef struct aos_batch {
    nng_msg *msg;      /* NULL until the first add */
    unsigned n;
    size_t cap;        /* the frame's byte cap, e.g. the peer's receive cap minus headers */
} aos_batch;

void aos_batch_init(aos_batch *b, size_t cap);
/* 1 when env_len more bytes of envelope fit the frame (in count and bytes). */
int aos_batch_fits(const aos_batch *b, size_t env_len);
/* Append one encoded envelope (copied). AOS_ERR_TOO_BIG when it does not fit. */
aos_err aos_batch_add(aos_batch *b, const void *env, size_t env_len);
/* The frame's message (caller owns it), NULL when empty; b is empty again after. */
nng_msg *aos_batch_take(aos_batch *b);
void aos_batch_clear(aos_batch *b);

#endif
