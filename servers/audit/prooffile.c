/* Audit proof files: the document `aosctl audit prove` writes and `check-proof` reads
 * offline (record, Merkle path, signed head), decoded as untrusted input and checked. */
#include "prooffile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "record.h"

json_t *audit_jhex(const uint8_t *b, size_t n)
{
    char *s = malloc(2 * n + 1);
    if (!s)
        return NULL;
    aos_hex(b, n, s);
    json_t *j = json_stringn(s, 2 * n);
    free(s);
    return j;
}



void audit_proof_free(audit_proof *p)
{
    free(p->rec);
    p->rec = NULL;
}

/* The checks in order; the first that fails is named. Returns NULL when the proof holds,
 * else the check's name ("record", "seq", "inclusion", "key", "signature") with why. pin
 * (may be NULL) is a public key kept elsewhere: the head must be signed by it. */
const char *audit_proof_check(const audit_proof *p, const uint8_t *pin, char *why,
                              size_t whylen)
{
    audit_rec r;
    char sub[512];
    if (audit_rec_decode(p->rec, p->rec_len, &r, sub, sizeof sub) != AOS_OK) {
        snprintf(why, whylen, "the record does not decode: %s", sub);
        return "record";
    }
    if (r.seq != p->seq) {
        snprintf(why, whylen, "the record says seq %" PRIu64 ", the proof seq %" PRIu64,
                 r.seq, p->seq);
        return "seq";
    }
    if (p->seq < 1 || p->seq > p->head.tree_size) {
        snprintf(why, whylen, "seq %" PRIu64 " is not in a tree of %" PRIu64 " records",
                 p->seq, p->head.tree_size);
        return "inclusion";
    }
    uint8_t leaf[AUDIT_HASH_LEN];
    audit_leaf_hash(p->rec, p->rec_len, leaf);
    if (audit_inclusion_verify(leaf, p->seq - 1, p->head.tree_size,
                               (const uint8_t (*)[AUDIT_HASH_LEN])p->path, p->n_path,
                               p->head.root, sub, sizeof sub) != AOS_OK) {
        snprintf(why, whylen, "the path does not lead from the record to the head's root: %s",
                 sub);
        return "inclusion";
    }
    if (pin && memcmp(pin, p->pk, AUDIT_PK_LEN) != 0) {
        char have[2 * AUDIT_PK_LEN + 1], want[2 * AUDIT_PK_LEN + 1];
        aos_hex(p->pk, AUDIT_PK_LEN, have);
        aos_hex(pin, AUDIT_PK_LEN, want);
        snprintf(why, whylen, "the head names key %s, not the pinned key %s", have, want);
        return "key";
    }
    if (audit_sth_verify(&p->head, p->pk, sub, sizeof sub) != AOS_OK) {
        snprintf(why, whylen, "the head's signature does not verify with its key: %s", sub);
        return "signature";
    }
    return NULL;
}

/* The proof file's document (the format at the top of this file). */
json_t *audit_proof_json(const audit_proof *p)
{
    json_t *path = json_array();
    for (size_t i = 0; path && i < p->n_path; i++)
        if (json_array_append_new(path, audit_jhex(p->path[i], AUDIT_HASH_LEN)) != 0) {
            json_decref(path);
            path = NULL;
        }
    if (!path)
        return NULL;
    return json_pack("{s:i,s:I,s:o,s:o,s:o}", "version", AUDIT_PROOF_FILE_VERSION, "seq",
                     (json_int_t)p->seq, "record", audit_jhex(p->rec, p->rec_len), "path", path,
                     "head", audit_head_json(&p->head, p->pk));
}

/* A JSON integer in [min, INT64_MAX] under key of o. */
int audit_jget_u64(const json_t *o, const char *key, uint64_t min, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < min)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Exactly n bytes of hex under key of o. */
int audit_jget_hex(const json_t *o, const char *key, uint8_t *out, size_t n)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? aos_unhex(json_string_value(v), json_string_length(v), out, n) : -1;
}

/* A proof file's document into p (p->rec malloc'd, freed by proof_free also on failure).
 * Untrusted: every field, type and hex length checked. -1 with why when it is not a
 * proof; checking whether it holds is proof_check's job. */
int audit_proof_from_json(const json_t *d, audit_proof *p, char *why, size_t whylen)
{
    memset(p, 0, sizeof *p);
    json_t *v, *path, *head = json_object_get(d, "head");
    if (!json_is_object(d)) {
        snprintf(why, whylen, "it is not a JSON object");
        return -1;
    }
    v = json_object_get(d, "version");
    if (!json_is_integer(v) || json_integer_value(v) != AUDIT_PROOF_FILE_VERSION) {
        if (json_is_integer(v))
            snprintf(why, whylen, "it is of version %" JSON_INTEGER_FORMAT ", this aosctl "
                     "reads version %d", json_integer_value(v), AUDIT_PROOF_FILE_VERSION);
        else
            snprintf(why, whylen, "\"version\" is missing or not an integer");
        return -1;
    }
    if (audit_jget_u64(d, "seq", 1, &p->seq) != 0) {
        snprintf(why, whylen, "\"seq\" is not an integer of at least 1");
        return -1;
    }
    v = json_object_get(d, "record");
    size_t hl = json_is_string(v) ? json_string_length(v) : 0;
    if (!json_is_string(v) || hl == 0 || hl % 2 || hl / 2 > AUDIT_REC_MAX) {
        snprintf(why, whylen, "\"record\" is not an even count of hex digits, at most %u",
                 2 * AUDIT_REC_MAX);
        return -1;
    }
    p->rec_len = hl / 2;
    if (!(p->rec = malloc(p->rec_len))) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    if (aos_unhex(json_string_value(v), hl, p->rec, p->rec_len) != 0) {
        snprintf(why, whylen, "\"record\" is not hex");
        return -1;
    }
    path = json_object_get(d, "path");
    if (!json_is_array(path) || json_array_size(path) > AUDIT_PROOF_MAX) {
        snprintf(why, whylen, "\"path\" is not an array of at most %u hashes",
                 AUDIT_PROOF_MAX);
        return -1;
    }
    p->n_path = json_array_size(path);
    for (size_t i = 0; i < p->n_path; i++) {
        json_t *h = json_array_get(path, i);
        if (!json_is_string(h) || aos_unhex(json_string_value(h), json_string_length(h),
                                        p->path[i], AUDIT_HASH_LEN) != 0) {
            snprintf(why, whylen, "\"path\"[%zu] is not %u hex digits", i, 2 * AUDIT_HASH_LEN);
            return -1;
        }
    }
    if (!json_is_object(head)) {
        snprintf(why, whylen, "\"head\" is not an object");
        return -1;
    }
    const char *bad = audit_jget_u64(head, "tree_size", 1, &p->head.tree_size) ? "tree_size"
                    : audit_jget_u64(head, "time_ns", 0, &p->head.time_ns)    ? "time_ns"
                    : audit_jget_hex(head, "root", p->head.root, AUDIT_HASH_LEN) ? "root"
                    : audit_jget_hex(head, "signature", p->head.sig, AUDIT_SIG_LEN) ? "signature"
                    : audit_jget_hex(head, "public_key", p->pk, AUDIT_PK_LEN)  ? "public_key"
                    : NULL;
    if (bad) {
        snprintf(why, whylen, "\"head\".\"%s\" is missing or not %s", bad,
                 !strcmp(bad, "tree_size") ? "an integer of at least 1"
                 : !strcmp(bad, "time_ns") ? "an integer of at least 0"
                 : !strcmp(bad, "root") ? "64 hex digits"
                 : !strcmp(bad, "signature") ? "128 hex digits" : "64 hex digits");
        return -1;
    }
    return 0;
}


json_t *audit_head_json(const audit_sth *h, const uint8_t pk[AUDIT_PK_LEN])
{
    return json_pack("{s:I,s:I,s:o,s:o,s:o}", "tree_size", (json_int_t)h->tree_size,
                     "time_ns", (json_int_t)h->time_ns, "root", audit_jhex(h->root, AUDIT_HASH_LEN),
                     "signature", audit_jhex(h->sig, AUDIT_SIG_LEN), "public_key",
                     audit_jhex(pk, AUDIT_PK_LEN));
}
