/* libFuzzer target for aos-audit's untrusted inputs: the record decoder (a record that
 * decodes must encode back to the same bytes), the proof and head checkers, the proof
 * files aosctl check-proof reads, a body's "contents" list (emit and replay read it), a
 * message of the binary COPY stream audit.verify reads its tables by, and the MANIFEST
 * lines and head.json of an archive directory (aosctl check-archive reads them). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aos/envelope.h"
#include "archdir.h"
#include "contents.h"
#include "copybin.h"
#include "merkle.h"
#include "prooffile.h"
#include "record.h"
#include "verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static aos_err fuzz_leaf(void *arg, uint64_t i, uint8_t *out, char *why, size_t whylen);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_audit: %s\n", what);
    abort();
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void fuzz_record(const uint8_t *d, size_t n)
{
    static uint8_t out[AUDIT_REC_MAX];
    audit_rec r;
    char why[128];
    if (audit_rec_decode(d, n, &r, why, sizeof why) != AOS_OK)
        return;
    size_t len;
    if (audit_rec_encode(&r, out, sizeof out, &len, why, sizeof why) != AOS_OK)
        broken("a decoded record does not encode");
    if (len != n || memcmp(out, d, n) != 0)
        broken("decode then encode changed the bytes");
    uint8_t h[AUDIT_HASH_LEN];
    audit_chain_hash(r.prev_hash, out, len, h);
    audit_leaf_hash(out, len, h);
}

/* Layout: u64 m, u64 n, leaf hash, root, then path hashes. */
static void fuzz_inclusion(const uint8_t *d, size_t n)
{
    if (n < 16 + 64)
        return;
    size_t len = (n - 80) / AUDIT_HASH_LEN;
    audit_inclusion_verify(d + 16, rd64(d), rd64(d + 8), (const uint8_t(*)[32])(d + 80), len,
                           d + 48, NULL, 0);
}

/* Layout: u64 m, u64 n, root_m, root_n, then path hashes. */
static void fuzz_consistency(const uint8_t *d, size_t n)
{
    if (n < 16 + 64)
        return;
    size_t len = (n - 80) / AUDIT_HASH_LEN;
    audit_consistency_verify(rd64(d), rd64(d + 8), d + 16, d + 48,
                             (const uint8_t(*)[32])(d + 80), len, NULL, 0);
}

/* Real proofs over leaves made from the input verify; with a byte flipped they must not. */
static void fuzz_roundtrip(const uint8_t *d, size_t n)
{
    enum { MAXL = 70 };
    uint8_t leaves[MAXL][AUDIT_HASH_LEN], root[AUDIT_HASH_LEN], path[AUDIT_CPROOF_MAX][32];
    if (n < 2)
        return;
    uint64_t cnt = d[0] % MAXL + 1, m = d[1] % cnt;
    for (uint64_t i = 0; i < cnt; i++)
        audit_leaf_hash(d, (size_t)i < n ? (size_t)i : n, leaves[i]);
    audit_tree *t;
    if (audit_tree_new(&t, NULL, 0) != AOS_OK)
        broken("no tree");
    for (uint64_t i = 0; i < cnt; i++)
        audit_tree_append(t, leaves[i], NULL, 0);
    audit_tree_root(t, root);
    audit_tree_free(t);
    size_t len;
    if (audit_inclusion_proof(fuzz_leaf, leaves, m, cnt, path, AUDIT_PROOF_MAX, &len, NULL,
                              0) != AOS_OK)
        broken("no inclusion proof");
    if (audit_inclusion_verify(leaves[m], m, cnt, (const uint8_t(*)[32])path, len, root, NULL,
                               0) != AOS_OK)
        broken("a real inclusion proof fails");
    if (len && n > 2) {
        path[d[2] % len][d[2] % 32] ^= 1;
        if (audit_inclusion_verify(leaves[m], m, cnt, (const uint8_t(*)[32])path, len, root,
                                   NULL, 0) == AOS_OK)
            broken("a flipped inclusion proof passes");
    }
}

static aos_err fuzz_leaf(void *arg, uint64_t i, uint8_t *out, char *why, size_t whylen)
{
    (void)why;
    (void)whylen;
    memcpy(out, ((const uint8_t(*)[32])arg)[i], 32);
    return AOS_OK;
}

/* Records as u32-length-prefixed chunks, each followed by a 32-byte stored chain hash,
 * fed to the verifier: whatever they are, it must finish with some finding. */
static void fuzz_verify(const uint8_t *d, size_t n)
{
    static const uint8_t pk[AUDIT_PK_LEN];
    audit_verifier *v;
    if (audit_verify_new(pk, NULL, 0, NULL, &v, NULL, 0) != AOS_OK)
        broken("no verifier");
    while (n >= 4) {
        size_t l = (size_t)d[0] << 8 | d[1];
        d += 2;
        n -= 2;
        if (l + AUDIT_HASH_LEN > n)
            break;
        audit_rec r;
        if (audit_rec_decode(d, l, &r, NULL, 0) == AOS_OK)
            audit_verify_add(v, &r, d + l, NULL, 0);
        d += l + AUDIT_HASH_LEN;
        n -= l + AUDIT_HASH_LEN;
    }
    audit_finding f;
    audit_verify_finish(v, &f);
    audit_verify_free(v);
}

/* A proof file as aosctl check-proof reads it: a document that decodes is checked, and
 * written back it must decode to the same proof. */
static void fuzz_proof_file(const uint8_t *d, size_t n)
{
    json_t *doc = json_loadb((const char *)d, n, JSON_REJECT_DUPLICATES, NULL);
    audit_proof p = {0}, q = {0};
    char why[256];
    if (doc && audit_proof_from_json(doc, &p, why, sizeof why) == 0) {
        audit_proof_check(&p, NULL, why, sizeof why);
        json_t *again = audit_proof_json(&p);
        if (!again || audit_proof_from_json(again, &q, why, sizeof why) != 0)
            broken("a proof written back does not decode");
        if (q.seq != p.seq || q.rec_len != p.rec_len || memcmp(q.rec, p.rec, p.rec_len) ||
            q.n_path != p.n_path || memcmp(q.path, p.path, p.n_path * AUDIT_HASH_LEN) ||
            memcmp(&q.head, &p.head, sizeof p.head) || memcmp(q.pk, p.pk, sizeof p.pk))
            broken("a proof written back decodes to another");
        audit_proof_free(&q);
        json_decref(again);
    }
    audit_proof_free(&p);
    json_decref(doc);
}

/* A body's "contents" list: a count within the cap, each hash written spelled in the body
 * as 64 lowercase hex digits, the same answer with less room (only fewer written). */
static void fuzz_contents(const uint8_t *d, size_t n)
{
    static uint8_t out[AUDIT_CONTENTS_LIST_MAX][AUDIT_CONTENT_HASH_LEN];
    static uint8_t few[2][AUDIT_CONTENT_HASH_LEN];
    int k = audit_contents_listed(d, n, out, AUDIT_CONTENTS_LIST_MAX);
    if (k < -1 || k > (int)AUDIT_CONTENTS_LIST_MAX)
        broken("contents: a count out of range");
    if (audit_contents_listed(d, n, few, 2) != k || audit_contents_listed(d, n, NULL, 0) != k)
        broken("contents: the count depends on the room given");
    for (int i = 0; i < k; i++) {
        char hex[2 * AUDIT_CONTENT_HASH_LEN + 1];
        aos_hex(out[i], AUDIT_CONTENT_HASH_LEN, hex);
        if (!memmem(d, n, hex, 2 * AUDIT_CONTENT_HASH_LEN))
            broken("contents: a hash that the body does not spell");
        if (i < 2 && memcmp(few[i], out[i], AUDIT_CONTENT_HASH_LEN))
            broken("contents: the first hashes depend on the room given");
        if (!audit_contents_has((const uint8_t(*)[AUDIT_CONTENT_HASH_LEN])out, (size_t)k,
                                out[i]))
            broken("contents: a listed hash is not found among them");
    }
}

/* d[0] picks the field count, d[1] whether the header was read; the rest is the message.
 * A row that parses has every field inside the message. */
static void fuzz_copybin(const uint8_t *d, size_t n)
{
    if (n < 2)
        return;
    int want = d[0] % (COPYBIN_FIELDS_MAX + 1), header = d[1] & 1;
    const uint8_t *m = d + 2, *f[COPYBIN_FIELDS_MAX];
    int32_t fl[COPYBIN_FIELDS_MAX];
    size_t len = n - 2;
    if (copybin_row(m, len, &header, want, f, fl) != AOS_OK)
        return;
    for (int i = 0; i < want; i++)
        if (fl[i] < -1 || (fl[i] > 0 && (f[i] < m || f[i] + fl[i] > m + len)))
            __builtin_trap();
}

/* A MANIFEST line: one that parses names a file of the layout, and a content's name
 * spelled back is the line's own. */
static void fuzz_manifest_line(const uint8_t *d, size_t n)
{
    audit_am_kind kind;
    uint8_t sha[AUDIT_HASH_LEN], h[AUDIT_CONTENT_HASH_LEN];
    if (audit_manifest_line((const char *)d, n, &kind, sha, h, NULL, 0) != 0)
        return;
    if (kind == AUDIT_AM_CONTENT) {
        char name[AUDIT_ARCHDIR_NAME_MAX];
        audit_archdir_content_name(h, name);
        if (n != 66 + AUDIT_ARCHDIR_NAME_MAX - 1 || memcmp(d + 66, name, n - 66))
            broken("a content line's name does not spell back");
    } else if (kind != AUDIT_AM_RECORDS && kind != AUDIT_AM_HEAD) {
        broken("a manifest line of no kind");
    }
}

/* head.json: one that parses is a range ending at its head, with its frontier's size. */
static void fuzz_archhead(const uint8_t *d, size_t n)
{
    audit_archhead ah;
    char why[256];
    if (audit_archhead_parse((const char *)d, n, &ah, why, sizeof why) != 0)
        return;
    if (ah.from < 1 || ah.from > ah.to || ah.to != ah.head.tree_size ||
        ah.nbase != (size_t)__builtin_popcountll(ah.from - 1) || ah.version < 1 ||
        ah.version > AUDIT_ARCHDIR_VERSION)
        broken("a head.json that parsed is not a range at its head");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    audit_sth h;
    audit_archive a;
    switch (data[0] % 12) {
    case 0: fuzz_record(d, n); break;
    case 1: fuzz_inclusion(d, n); break;
    case 2: fuzz_consistency(d, n); break;
    case 3: fuzz_roundtrip(d, n); break;
    case 4: fuzz_verify(d, n); break;
    case 5:
        if (audit_sth_decode(d, n, &h, NULL, 0) == AOS_OK)
            audit_sth_verify(&h, h.root, NULL, 0);
        break;
    case 7: fuzz_proof_file(d, n); break;
    case 8: fuzz_contents(d, n); break;
    case 9: fuzz_copybin(d, n); break;
    case 10: fuzz_manifest_line(d, n); break;
    case 11: fuzz_archhead(d, n); break;
    default:
        /* a version-2 declaration (audit.archive's) encodes back to the same bytes */
        if (audit_archive_decode(d, n, &a, NULL, 0) == AOS_OK && a.version == 2) {
            static uint8_t b[AUDIT_ARCHIVE_MAX];
            size_t len;
            if (audit_archive_encode_v2(&a, b, sizeof b, &len, NULL, 0) != AOS_OK ||
                len != n || memcmp(b, d, n) != 0)
                __builtin_trap();
        }
        break;
    }
    return 0;
}
