/* Batch frame codec: a zero-copy walk over the records of a received frame, and a builder
 * that appends encoded envelopes to one nng message under a byte and count cap. */
#include "aos/batch.h"

#include <string.h>

#include "aos/err.h"

int aos_batch_is(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    return len >= AOS_BATCH_HDR && p[0] == AOS_BATCH_MAGIC0 && p[1] == AOS_BATCH_MAGIC1;
}

aos_err aos_batch_next(const uint8_t *buf, size_t len, size_t *off, const uint8_t **rec,
                       size_t *reclen, char *why, size_t whylen)
{
    if (!aos_batch_is(buf, len)) {
        aos_say(why, whylen, "not a batch frame");
        return AOS_ERR_PROTO;
    }
    if (*off == 0)
        *off = AOS_BATCH_HDR;
    if (*off > len) {
        aos_say(why, whylen, "batch offset past its end");
        return AOS_ERR_PROTO;
    }
    if (*off == len)
        return AOS_ERR_NOT_FOUND;
    size_t left = len - *off;
    if (left < AOS_BATCH_REC_HDR) {
        aos_say(why, whylen, "batch record header cut short (%zu bytes left)", left);
        return AOS_ERR_PROTO;
    }
    const uint8_t *p = buf + *off;
    size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (n == 0 || n > left - AOS_BATCH_REC_HDR) {
        aos_say(why, whylen, "batch record of %zu bytes with %zu left", n,
                left - AOS_BATCH_REC_HDR);
        return AOS_ERR_PROTO;
    }
    *rec = p + AOS_BATCH_REC_HDR;
    *reclen = n;
    *off += AOS_BATCH_REC_HDR + n;
    return AOS_OK;
}

void aos_batch_init(aos_batch *b, size_t cap)
{
    b->msg = NULL;
    b->n = 0;
    b->cap = cap;
}

int aos_batch_fits(const aos_batch *b, size_t env_len)
{
    size_t used = b->msg ? nng_msg_len(b->msg) : AOS_BATCH_HDR;
    return env_len > 0 && b->n < AOS_BATCH_MAX && env_len <= b->cap &&
           used + AOS_BATCH_REC_HDR + env_len <= b->cap;
}

aos_err aos_batch_add(aos_batch *b, const void *env, size_t env_len)
{
    if (!aos_batch_fits(b, env_len))
        return AOS_ERR_TOO_BIG;
    if (!b->msg) {
        if (nng_msg_alloc(&b->msg, 0) != 0)
            return AOS_ERR_NOMEM;
        uint8_t hdr[AOS_BATCH_HDR] = {AOS_BATCH_MAGIC0, AOS_BATCH_MAGIC1};
        if (nng_msg_append(b->msg, hdr, sizeof hdr) != 0) {
            aos_batch_clear(b);
            return AOS_ERR_NOMEM;
        }
    }
    uint8_t rh[AOS_BATCH_REC_HDR] = {(uint8_t)(env_len >> 24), (uint8_t)(env_len >> 16),
                                     (uint8_t)(env_len >> 8), (uint8_t)env_len};
    size_t before = nng_msg_len(b->msg);
    if (nng_msg_append(b->msg, rh, sizeof rh) != 0 ||
        nng_msg_append(b->msg, env, env_len) != 0) {
        nng_msg_chop(b->msg, nng_msg_len(b->msg) - before);
        return AOS_ERR_NOMEM;
    }
    b->n++;
    return AOS_OK;
}

nng_msg *aos_batch_take(aos_batch *b)
{
    nng_msg *m = b->msg;
    b->msg = NULL;
    b->n = 0;
    return m;
}

void aos_batch_clear(aos_batch *b)
{
    if (b->msg)
        nng_msg_free(b->msg);
    b->msg = NULL;
    b->n = 0;
}
