/* PostgreSQL's binary COPY format, one message at a time (copybin.h): every length is
 * checked against what the message holds before it is used. */
#include "copybin.h"

#include <string.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

aos_err copybin_row(const uint8_t *m, size_t n, int *header, int want, const uint8_t **f,
                    int32_t *fl)
{
    static const uint8_t sig[11] = "PGCOPY\n\377\r\n";
    if (!m || !header || want < 0 || want > COPYBIN_FIELDS_MAX || (want && (!f || !fl)))
        return AOS_ERR_PROTO;
    const uint8_t *p = m, *end = m + n;
    if (!*header) { /* the signature, flags and extension come before the first row */
        if (n < 19 || memcmp(p, sig, sizeof sig) != 0)
            return AOS_ERR_PROTO;
        uint32_t ext = be32(p + 15);
        p += 19;
        if (ext > (size_t)(end - p))
            return AOS_ERR_PROTO;
        p += ext;
        *header = 1;
    }
    if (end - p < 2)
        return AOS_ERR_PROTO;
    int16_t cnt = (int16_t)((uint16_t)p[0] << 8 | p[1]);
    p += 2;
    if (cnt == -1)
        return p == end ? AOS_ERR_NOT_FOUND : AOS_ERR_PROTO;
    if (cnt != want)
        return AOS_ERR_PROTO;
    for (int i = 0; i < want; i++) {
        if (end - p < 4)
            return AOS_ERR_PROTO;
        int32_t l = (int32_t)be32(p);
        p += 4;
        if (l < -1 || (l > 0 && (size_t)l > (size_t)(end - p)))
            return AOS_ERR_PROTO;
        f[i] = p;
        fl[i] = l;
        if (l > 0)
            p += l;
    }
    return p == end ? AOS_OK : AOS_ERR_PROTO;
}
