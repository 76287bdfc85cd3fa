/* aos-audit's contents: the content address (BLAKE2b-256) and the parser of the "contents"
 * list by which a record's body names what it stored (contents.h has the layout). */
#include "contents.h"

#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "aos/envelope.h"

void audit_content_hash(const void *b, size_t n, uint8_t out[AUDIT_CONTENT_HASH_LEN])
{
    crypto_generichash(out, AUDIT_CONTENT_HASH_LEN, b, n, NULL, 0);
}

/* 64 lowercase hex digits exactly: one spelling per hash, so the verifier can find the
 * records that name a content by its text. */
static int hex64(const char *s, size_t n, uint8_t out[AUDIT_CONTENT_HASH_LEN])
{
    if (n != 2 * AUDIT_CONTENT_HASH_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return aos_unhex(s, n, out, AUDIT_CONTENT_HASH_LEN) == 0;
}

int audit_contents_listed(const uint8_t *body, size_t len,
                          uint8_t (*out)[AUDIT_CONTENT_HASH_LEN], size_t max)
{
    /* most bodies store nothing: no parse for them */
    static const char key[] = "\"contents\"";
    if (!body || len < sizeof key - 1 || !memmem(body, len, key, sizeof key - 1))
        return 0;
    /* a key given twice: the last one counts, as in PostgreSQL's jsonb, which verify's
     * look-up of listed contents reads the same bodies with */
    json_t *o = json_loadb((const char *)body, len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    const json_t *l = json_object_get(o, "contents");
    int n = 0;
    if (!l) {
        n = 0;
    } else if (!json_is_array(l) || json_array_size(l) > AUDIT_CONTENTS_LIST_MAX) {
        n = -1;
    } else {
        for (size_t i = 0; i < json_array_size(l); i++) {
            const json_t *e = json_array_get(l, i);
            uint8_t h[AUDIT_CONTENT_HASH_LEN];
            if (!json_is_string(e) || !hex64(json_string_value(e), json_string_length(e), h)) {
                n = -1;
                break;
            }
            if ((size_t)n < max && out)
                memcpy(out[n], h, AUDIT_CONTENT_HASH_LEN);
            n++;
        }
    }
    json_decref(o);
    return n;
}

int audit_contents_has(const uint8_t (*list)[AUDIT_CONTENT_HASH_LEN], size_t n,
                       const uint8_t h[AUDIT_CONTENT_HASH_LEN])
{
    for (size_t i = 0; i < n; i++)
        if (!memcmp(list[i], h, AUDIT_CONTENT_HASH_LEN))
            return 1;
    return 0;
}
