/* Validation of everything a client of aos-storage controls: keys, names, JSON, ids and
 * limits. Pure functions, so that request checking is unit-tested without a database. */
#include <stdio.h>
#include <string.h>
#include <jansson.h>

#include "stg.h"

aos_err stg_valid_key(ProtobufCBinaryData b, const char *what, char *out, char *why,
                      size_t whylen)
{
    if (b.len == 0) {
        snprintf(why, whylen, "%s is empty", what);
        return AOS_ERR_USAGE;
    }
    if (b.len > AOS_KEY_MAX) {
        snprintf(why, whylen, "%s is %zu bytes, at most %d allowed", what, b.len, AOS_KEY_MAX);
        return AOS_ERR_TOO_BIG;
    }
    if (!aos_utf8_valid(b.data, b.len)) {
        snprintf(why, whylen, "%s is not valid UTF-8", what);
        return AOS_ERR_USAGE;
    }
    for (size_t i = 0; i < b.len; i++) {
        uint8_t ch = b.data[i];
        /* C0 controls and DEL; C1 controls are U+0080..U+009F, encoded C2 80..C2 9F.
         * Keys end up in terminals and logs: no escape sequences in them. */
        if (ch < 0x20 || ch == 0x7f ||
            (ch == 0xc2 && i + 1 < b.len && b.data[i + 1] >= 0x80 && b.data[i + 1] <= 0x9f)) {
            snprintf(why, whylen, "%s contains a control character at byte %zu", what, i);
            return AOS_ERR_USAGE;
        }
    }
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return AOS_ERR_OK;
}

aos_err stg_valid_name(ProtobufCBinaryData b, const char *what, const char *dflt, char *out,
                       char *why, size_t whylen)
{
    if (b.len == 0 && dflt) {
        snprintf(out, AOS_NAME_MAX + 1, "%s", dflt);
        return AOS_ERR_OK;
    }
    if (b.len == 0) {
        snprintf(why, whylen, "%s is empty", what);
        return AOS_ERR_USAGE;
    }
    if (b.len > AOS_NAME_MAX) {
        snprintf(why, whylen, "%s is %zu bytes, at most %d allowed", what, b.len,
                 AOS_NAME_MAX);
        return AOS_ERR_TOO_BIG;
    }
    for (size_t i = 0; i < b.len; i++) {
        uint8_t ch = b.data[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.' || ch == ':')) {
            snprintf(why, whylen, "%s may hold only letters, digits and _ . : - (byte %zu is "
                     "0x%02x)", what, i, ch);
            return AOS_ERR_USAGE;
        }
    }
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return AOS_ERR_OK;
}

aos_err stg_valid_json(ProtobufCBinaryData b, const char *what, int must_be_object,
                       int scalars_only, char *why, size_t whylen)
{
    json_error_t jerr;
    /* Duplicate keys are refused: jsonb would keep only the last, silently. Integers are
     * read as reals so that valid JSON beyond int64 (jsonb keeps it exactly) passes. */
    json_t *j = json_loadb((const char *)b.data, b.len,
                           JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL |
                               (must_be_object ? 0 : JSON_DECODE_ANY),
                           &jerr);
    if (!j) {
        snprintf(why, whylen, "%s is not valid JSON: %s (line %d, column %d)", what, jerr.text,
                 jerr.line, jerr.column);
        return AOS_ERR_USAGE;
    }
    aos_err e = AOS_ERR_OK;
    if (must_be_object && !json_is_object(j)) {
        snprintf(why, whylen, "%s must be a JSON object", what);
        e = AOS_ERR_USAGE;
    } else if (scalars_only) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (json_is_object(v) || json_is_array(v)) {
                snprintf(why, whylen, "%s: member \"%.64s\" must be a string, number, boolean "
                         "or null", what, k);
                e = AOS_ERR_USAGE;
                break;
            }
        }
    }
    json_decref(j);
    return e;
}

aos_err stg_valid_id(ProtobufCBinaryData b, size_t len, const char *what, char *why,
                     size_t whylen)
{
    if (b.len != len) {
        snprintf(why, whylen, "%s must be %zu bytes, got %zu", what, len, b.len);
        return AOS_ERR_USAGE;
    }
    return AOS_ERR_OK;
}

aos_err stg_valid_limit(uint32_t v, uint32_t dflt, uint32_t max, const char *what,
                        uint32_t *out, char *why, size_t whylen)
{
    if (v > max) {
        snprintf(why, whylen, "%s is %u, at most %u allowed", what, v, max);
        return AOS_ERR_USAGE;
    }
    *out = v ? v : dflt;
    return AOS_ERR_OK;
}

size_t stg_prefix_end(const uint8_t *p, size_t n, uint8_t *out)
{
    /* bytea compares bytewise: drop trailing 0xff bytes and increment the last one left. */
    while (n > 0 && p[n - 1] == 0xff)
        n--;
    if (n == 0)
        return 0;
    memcpy(out, p, n);
    out[n - 1]++;
    return n;
}
