/* Unit tests of aos-audit's tamper-evidence core: the record codec against hostile bytes,
 * RFC 6962 hashing against published vectors and a naive tree, proofs, heads, verify, and
 * the contents list a body names its stored contents by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "aos/envelope.h"
#include "archdir.h"
#include "contents.h"
#include "copybin.h"
#include "merkle.h"
#include "record.h"
#include "verify.h"

typedef uint8_t hash_t[AUDIT_HASH_LEN];

static void unhex(const char *s, uint8_t *out, size_t n)
{
    size_t got = 0;
    assert_int_equal(sodium_hex2bin(out, n, s, strlen(s), NULL, &got, NULL), 0);
    assert_int_equal(got, n);
}

static void sample(audit_rec *r, uint64_t seq, const char *body)
{
    memset(r, 0, sizeof *r);
    r->seq = seq;
    r->time_ns = 1700000000000000000ull + seq;
    r->kind = "syscall";
    r->kind_len = 7;
    r->agent = "agent-1";
    r->agent_len = 7;
    r->run = "run-7";
    r->run_len = 5;
    r->step = (uint32_t)seq;
    for (int i = 0; i < 16; i++)
        r->trace_id[i] = (uint8_t)(i + seq);
    for (int i = 0; i < 8; i++) {
        r->span_id[i] = (uint8_t)(0x40 + i);
        r->parent_span_id[i] = (uint8_t)(0x80 + i);
    }
    r->method = "storage.put";
    r->method_len = 11;
    r->status = -3;
    r->latency_us = 1234;
    r->body = (const uint8_t *)body;
    r->body_len = strlen(body);
}

/* ---- records ---- */

static void rec_round_trip(void **st)
{
    (void)st;
    audit_rec r, d;
    sample(&r, 42, "{\"path\":\"a/b\"}");
    memset(r.prev_hash, 0xab, AUDIT_HASH_LEN);
    static uint8_t buf[AUDIT_REC_MAX], buf2[AUDIT_REC_MAX];
    size_t len, len2;
    char why[128];
    assert_int_equal(audit_rec_encode(&r, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    assert_int_equal(len, audit_rec_encoded_len(&r));
    assert_int_equal(len, AUDIT_REC_FIXED + 7 + 7 + 5 + 11 + r.body_len);
    assert_int_equal(buf[0], 1);
    assert_int_equal(buf[AUDIT_REC_SEQ_OFF + 7], 42);
    assert_memory_equal(buf + len - AUDIT_HASH_LEN, r.prev_hash, AUDIT_HASH_LEN);
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_OK);
    assert_int_equal(d.seq, 42);
    assert_int_equal(d.time_ns, r.time_ns);
    assert_int_equal(d.status, -3);
    assert_int_equal(d.step, 42);
    assert_int_equal(d.latency_us, 1234);
    assert_int_equal(d.kind_len, 7);
    assert_memory_equal(d.kind, "syscall", 7);
    assert_memory_equal(d.method, "storage.put", 11);
    assert_memory_equal(d.body, r.body, r.body_len);
    assert_memory_equal(d.trace_id, r.trace_id, 16);
    assert_memory_equal(d.parent_span_id, r.parent_span_id, 8);
    /* the encoding is canonical: decoding and encoding again gives the same bytes */
    assert_int_equal(audit_rec_encode(&d, buf2, sizeof buf2, &len2, why, sizeof why), AOS_OK);
    assert_int_equal(len2, len);
    assert_memory_equal(buf, buf2, len);
    /* empty optional fields */
    r.agent_len = r.run_len = r.method_len = r.body_len = 0;
    r.agent = r.run = r.method = NULL;
    r.body = NULL;
    assert_int_equal(audit_rec_encode(&r, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_OK);
    assert_int_equal(d.body_len, 0);
    /* too small a buffer */
    assert_int_equal(audit_rec_encode(&r, buf, len - 1, &len2, why, sizeof why),
                     AOS_ERR_TOO_BIG);
}

static void rec_hostile(void **st)
{
    (void)st;
    audit_rec r, d;
    sample(&r, 7, "{}");
    static uint8_t buf[AUDIT_REC_MAX + 8];
    size_t len;
    char why[128];
    assert_int_equal(audit_rec_encode(&r, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    /* every cut is refused, and so is one byte more */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(audit_rec_decode(buf, n, &d, why, sizeof why), AOS_ERR_PROTO);
    buf[len] = 0;
    assert_int_equal(audit_rec_decode(buf, len + 1, &d, why, sizeof why), AOS_ERR_PROTO);
    assert_non_null(strstr(why, "after the record"));
    /* every byte of a field length flipped high: a length past the end or over a cap */
    size_t kind_off = 17;
    for (int b = 0; b < 4; b++) {
        uint8_t keep = buf[kind_off + b];
        buf[kind_off + b] = 0xff;
        assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_ERR_PROTO);
        buf[kind_off + b] = keep;
    }
    buf[0] = 2;
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_ERR_PROTO);
    buf[0] = 1;
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_OK);

    /* fields the decoder refuses, the encoder refuses too */
    static const struct {
        const char *kind, *agent, *method;
        size_t agent_len;
        uint64_t seq;
    } bad[] = {
        {"Syscall", "a", "m", 1, 1}, {"", "a", "m", 1, 1},     {"sys call", "a", "m", 1, 1},
        {"syscall", "\xc3\x28", "m", 2, 1}, {"syscall", "a\0b", "m", 3, 1},
        {"syscall", "\xed\xa0\x80", "m", 3, 1}, {"syscall", "a", "m", 1, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        audit_rec x;
        sample(&x, bad[i].seq, "{}");
        x.kind = bad[i].kind;
        x.kind_len = strlen(bad[i].kind);
        x.agent = bad[i].agent;
        x.agent_len = bad[i].agent_len;
        assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why),
                         AOS_ERR_USAGE);
        /* and the same bytes forged by hand do not decode */
        x.kind = "syscall";
        x.kind_len = 7;
        x.agent = "a";
        x.agent_len = 1;
        x.seq = 1;
        assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    }
    /* a hand-made NUL in the agent (offset: kind 4+7, then agent length) */
    audit_rec x;
    sample(&x, 9, "{}");
    assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    buf[17 + 4 + 7 + 4 + 2] = 0;
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_ERR_PROTO);
    /* seq 0 by hand */
    assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    memset(buf + 1, 0, 8);
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_ERR_PROTO);
    /* the body cap, both sides of it */
    uint8_t *big = calloc(1, AUDIT_BODY_MAX + 1);
    assert_non_null(big);
    sample(&x, 9, "");
    x.body = big;
    x.body_len = AUDIT_BODY_MAX;
    assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why), AOS_OK);
    assert_int_equal(audit_rec_decode(buf, len, &d, why, sizeof why), AOS_OK);
    x.body_len = AUDIT_BODY_MAX + 1;
    assert_int_equal(audit_rec_encoded_len(&x), 0);
    assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    free(big);
    /* the method cap */
    char m65[65];
    memset(m65, 'm', sizeof m65);
    sample(&x, 9, "");
    x.method = m65;
    x.method_len = 65;
    assert_int_equal(audit_rec_encode(&x, buf, sizeof buf, &len, why, sizeof why),
                     AOS_ERR_USAGE);
}

static void chain_hash_def(void **st)
{
    (void)st;
    /* chain = SHA-256(0x02 || prev || encoding), computed here the long way */
    hash_t prev, got, want;
    memset(prev, 0x11, sizeof prev);
    const uint8_t enc[] = {1, 2, 3};
    uint8_t in[1 + 32 + 3];
    in[0] = 2;
    memcpy(in + 1, prev, 32);
    memcpy(in + 33, enc, 3);
    crypto_hash_sha256(want, in, sizeof in);
    audit_chain_hash(prev, enc, 3, got);
    assert_memory_equal(got, want, 32);
}

/* ---- Merkle ---- */

/* The naive RFC 6962 §2.1 definition, independent of merkle.c. */
static void naive_mth(const hash_t *leaves, uint64_t n, uint8_t out[32])
{
    if (n == 0) {
        crypto_hash_sha256(out, (const uint8_t *)"", 0);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves[0], 32);
        return;
    }
    uint64_t k = 1;
    while (k * 2 < n)
        k *= 2;
    uint8_t in[65];
    in[0] = 1;
    naive_mth(leaves, k, in + 1);
    naive_mth(leaves + k, n - k, in + 33);
    crypto_hash_sha256(out, in, sizeof in);
}

static void naive_leaf(const uint8_t *d, size_t n, uint8_t out[32])
{
    uint8_t in[64];
    assert_true(n < sizeof in);
    in[0] = 0;
    memcpy(in + 1, d, n);
    crypto_hash_sha256(out, in, n + 1);
}

static aos_err leaf_of(void *arg, uint64_t i, uint8_t out[AUDIT_HASH_LEN], char *why,
                       size_t whylen)
{
    (void)why;
    (void)whylen;
    memcpy(out, ((const hash_t *)arg)[i], AUDIT_HASH_LEN);
    return AOS_OK;
}

static void ct_vectors(void **st)
{
    (void)st;
    static const char *leaves_hex[] = {"", "00", "10", "2021", "3031", "40414243",
                                       "5051525354555657", "606162636465666768696a6b6c6d6e6f"};
    static const char *roots_hex[] = {
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    };
    hash_t leaves[8], root, want;
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    audit_tree_root(t, root);
    unhex(roots_hex[0], want, 32);
    assert_memory_equal(root, want, 32);
    for (int i = 0; i < 8; i++) {
        uint8_t d[16];
        size_t n = strlen(leaves_hex[i]) / 2;
        if (n)
            unhex(leaves_hex[i], d, n);
        audit_leaf_hash(d, n, leaves[i]);
        assert_int_equal(audit_tree_append(t, leaves[i], NULL, 0), AOS_OK);
        audit_tree_root(t, root);
        unhex(roots_hex[i + 1], want, 32);
        assert_memory_equal(root, want, 32);
    }
    audit_tree_free(t);
    /* the published audit paths for leaves 0 and 5 of the 8-leaf tree */
    static const char *p0[] = {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                               "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                               "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"};
    static const char *p5[] = {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                               "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                               "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"};
    hash_t path[AUDIT_PROOF_MAX], w;
    size_t len;
    unhex(roots_hex[8], root, 32);
    for (int which = 0; which < 2; which++) {
        uint64_t m = which ? 5 : 0;
        const char **p = which ? p5 : p0;
        assert_int_equal(audit_inclusion_proof(leaf_of, leaves, m, 8, path, AUDIT_PROOF_MAX,
                                               &len, NULL, 0), AOS_OK);
        assert_int_equal(len, 3);
        for (int i = 0; i < 3; i++) {
            unhex(p[i], w, 32);
            assert_memory_equal(path[i], w, 32);
        }
        assert_int_equal(audit_inclusion_verify(leaves[m], m, 8,
                                                (const uint8_t(*)[32])path, len, root, NULL, 0),
                         AOS_OK);
    }
}

static void tree_vs_naive(void **st)
{
    (void)st;
    enum { N = 130 };
    hash_t leaves[N], root, want, via_cb;
    for (int i = 0; i < N; i++) {
        uint8_t d[3] = {(uint8_t)i, (uint8_t)(i * 7), 0x5a};
        naive_leaf(d, sizeof d, leaves[i]);
        audit_leaf_hash(d, sizeof d, want);
        assert_memory_equal(leaves[i], want, 32);
    }
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    for (int n = 0; n <= N; n++) {
        assert_int_equal(audit_tree_size(t), n);
        audit_tree_root(t, root);
        naive_mth(leaves, (uint64_t)n, want);
        assert_memory_equal(root, want, 32);
        assert_int_equal(audit_merkle_root(leaf_of, leaves, (uint64_t)n, via_cb, NULL, 0),
                         AOS_OK);
        assert_memory_equal(via_cb, want, 32);
        /* a builder restored from the frontier carries on the same */
        hash_t fr[AUDIT_TREE_DEPTH];
        size_t k = audit_tree_frontier(t, fr, AUDIT_TREE_DEPTH);
        assert_int_equal(k, (size_t)__builtin_popcount((unsigned)n));
        audit_tree *u;
        assert_int_equal(audit_tree_new(&u, NULL, 0), AOS_OK);
        assert_int_equal(audit_tree_restore(u, (uint64_t)n, (const uint8_t(*)[32])fr, k, NULL,
                                            0), AOS_OK);
        for (int j = n; j < N && j < n + 5; j++)
            assert_int_equal(audit_tree_append(u, leaves[j], NULL, 0), AOS_OK);
        int upto = n + 5 < N ? n + 5 : N;
        audit_tree_root(u, root);
        naive_mth(leaves, (uint64_t)upto, want);
        assert_memory_equal(root, want, 32);
        if (k > 0)
            assert_int_equal(audit_tree_restore(u, (uint64_t)n, (const uint8_t(*)[32])fr,
                                                k - 1, NULL, 0), AOS_ERR_USAGE);
        audit_tree_free(u);
        if (n < N)
            assert_int_equal(audit_tree_append(t, leaves[n], NULL, 0), AOS_OK);
    }
    audit_tree_free(t);
}

static void proofs_all(void **st)
{
    (void)st;
    enum { N = 64 };
    hash_t leaves[N], roots[N + 1], path[AUDIT_CPROOF_MAX];
    for (int i = 0; i < N; i++) {
        uint8_t d[2] = {(uint8_t)i, 0xc3};
        naive_leaf(d, sizeof d, leaves[i]);
    }
    for (int n = 0; n <= N; n++)
        naive_mth(leaves, (uint64_t)n, roots[n]);
    size_t len;
    const uint8_t(*cp)[32] = (const uint8_t(*)[32])path;
    for (uint64_t n = 1; n <= N; n++) {
        for (uint64_t m = 0; m < n; m++) {
            assert_int_equal(audit_inclusion_proof(leaf_of, leaves, m, n, path,
                                                   AUDIT_PROOF_MAX, &len, NULL, 0), AOS_OK);
            assert_int_equal(audit_inclusion_verify(leaves[m], m, n, cp, len, roots[n], NULL,
                                                    0), AOS_OK);
            for (size_t i = 0; i < len; i++) {
                path[i][i % 32] ^= 0x01;
                assert_int_equal(audit_inclusion_verify(leaves[m], m, n, cp, len, roots[n],
                                                        NULL, 0), AOS_ERR_CONFLICT);
                path[i][i % 32] ^= 0x01;
            }
            hash_t bad;
            memcpy(bad, leaves[m], 32);
            bad[31] ^= 0x80;
            assert_int_equal(audit_inclusion_verify(bad, m, n, cp, len, roots[n], NULL, 0),
                             AOS_ERR_CONFLICT);
            if (n > 1) /* another leaf's index, or a proof cut short, does not pass */
                assert_int_equal(audit_inclusion_verify(leaves[m], (m + 1) % n, n, cp, len,
                                                        roots[n], NULL, 0), AOS_ERR_CONFLICT);
            if (len)
                assert_int_equal(audit_inclusion_verify(leaves[m], m, n, cp, len - 1,
                                                        roots[n], NULL, 0), AOS_ERR_CONFLICT);
            /* (not checked: the same path and root can also pass for another size, e.g.
             * leaf 0 of 3 and of 4; the signed head binds the size to the root) */
        }
        assert_int_equal(audit_inclusion_proof(leaf_of, leaves, n, n, path, AUDIT_PROOF_MAX,
                                               &len, NULL, 0), AOS_ERR_USAGE);
    }
    for (uint64_t n = 0; n <= N; n++) {
        for (uint64_t m = 0; m <= n; m++) {
            assert_int_equal(audit_consistency_proof(leaf_of, leaves, m, n, path,
                                                     AUDIT_CPROOF_MAX, &len, NULL, 0), AOS_OK);
            assert_int_equal(audit_consistency_verify(m, n, roots[m], roots[n], cp, len, NULL,
                                                      0), AOS_OK);
            if (m == 0 || m == n)
                assert_int_equal(len, 0);
            for (size_t i = 0; i < len; i++) {
                path[i][(i * 5) % 32] ^= 0x10;
                assert_int_equal(audit_consistency_verify(m, n, roots[m], roots[n], cp, len,
                                                          NULL, 0), AOS_ERR_CONFLICT);
                path[i][(i * 5) % 32] ^= 0x10;
            }
            hash_t bad;
            memcpy(bad, roots[m], 32);
            bad[0] ^= 1;
            assert_int_equal(audit_consistency_verify(m, n, bad, roots[n], cp, len, NULL, 0),
                             AOS_ERR_CONFLICT);
            memcpy(bad, roots[n], 32);
            bad[0] ^= 1;
            if (m > 0) /* every tree extends the empty one */
                assert_int_equal(audit_consistency_verify(m, n, roots[m], bad, cp, len, NULL,
                                                          0), AOS_ERR_CONFLICT);
            if (len)
                assert_int_equal(audit_consistency_verify(m, n, roots[m], roots[n], cp,
                                                          len - 1, NULL, 0), AOS_ERR_CONFLICT);
        }
        if (n > 0)
            assert_int_equal(audit_consistency_verify(n, n - 1, roots[n], roots[n - 1], cp, 0,
                                                      NULL, 0), AOS_ERR_CONFLICT);
    }
}

/* ---- heads and keys ---- */

static void heads_and_keys(void **st)
{
    (void)st;
    audit_key *k, *k2, *other;
    char why[128];
    assert_int_equal(audit_key_generate(&k, why, sizeof why), AOS_OK);
    assert_int_equal(audit_key_generate(&other, why, sizeof why), AOS_OK);
    uint8_t pk[AUDIT_PK_LEN], pk2[AUDIT_PK_LEN], opk[AUDIT_PK_LEN], kb[AUDIT_KEY_LEN];
    audit_key_public(k, pk);
    audit_key_public(other, opk);
    audit_sth h = {.tree_size = 100, .time_ns = 123456789};
    memset(h.root, 0x5c, 32);
    assert_int_equal(audit_sth_sign(&h, k, why, sizeof why), AOS_OK);
    assert_int_equal(audit_sth_verify(&h, pk, why, sizeof why), AOS_OK);
    assert_int_equal(audit_sth_verify(&h, opk, why, sizeof why), AOS_ERR_CONFLICT);
    audit_sth x = h;
    x.tree_size++;
    assert_int_equal(audit_sth_verify(&x, pk, why, sizeof why), AOS_ERR_CONFLICT);
    x = h;
    x.time_ns--;
    assert_int_equal(audit_sth_verify(&x, pk, why, sizeof why), AOS_ERR_CONFLICT);
    x = h;
    x.root[7] ^= 1;
    assert_int_equal(audit_sth_verify(&x, pk, why, sizeof why), AOS_ERR_CONFLICT);
    /* the wire form */
    uint8_t b[AUDIT_STH_LEN + 1];
    audit_sth_encode(&h, b);
    assert_int_equal(b[0], 1);
    assert_int_equal(b[8], 100);
    assert_int_equal(audit_sth_decode(b, AUDIT_STH_LEN, &x, why, sizeof why), AOS_OK);
    assert_memory_equal(&x, &h, sizeof h);
    assert_int_equal(audit_sth_decode(b, AUDIT_STH_LEN - 1, &x, why, sizeof why),
                     AOS_ERR_PROTO);
    assert_int_equal(audit_sth_decode(b, AUDIT_STH_LEN + 1, &x, why, sizeof why),
                     AOS_ERR_PROTO);
    b[0] = 9;
    assert_int_equal(audit_sth_decode(b, AUDIT_STH_LEN, &x, why, sizeof why), AOS_ERR_PROTO);
    /* a key saved and loaded signs as before */
    audit_key_to_bytes(k, kb);
    assert_int_equal(audit_key_from_bytes(kb, sizeof kb, &k2, why, sizeof why), AOS_OK);
    audit_key_public(k2, pk2);
    assert_memory_equal(pk, pk2, sizeof pk);
    x = h;
    memset(x.sig, 0, sizeof x.sig);
    assert_int_equal(audit_sth_sign(&x, k2, why, sizeof why), AOS_OK);
    assert_int_equal(audit_sth_verify(&x, pk, why, sizeof why), AOS_OK);
    kb[40] ^= 1; /* a damaged public half */
    audit_key *k3 = (audit_key *)1;
    assert_int_equal(audit_key_from_bytes(kb, sizeof kb, &k3, why, sizeof why), AOS_ERR_PROTO);
    assert_null(k3);
    assert_int_equal(audit_key_from_bytes(kb, 32, &k3, why, sizeof why), AOS_ERR_PROTO);
    sodium_memzero(kb, sizeof kb);
    audit_key_free(k);
    audit_key_free(k2);
    audit_key_free(other);
    audit_key_free(NULL);
}

static void archive_body(void **st)
{
    (void)st;
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    hash_t l, chain;
    memset(chain, 0x77, 32);
    uint8_t b[AUDIT_ARCHIVE_MAX];
    size_t len;
    assert_int_equal(audit_archive_encode(chain, t, b, sizeof b, &len, NULL, 0),
                     AOS_ERR_USAGE);
    for (int i = 0; i < 11; i++) {
        memset(l, i, 32);
        audit_tree_append(t, l, NULL, 0);
    }
    assert_int_equal(audit_archive_encode(chain, t, b, sizeof b, &len, NULL, 0), AOS_OK);
    assert_int_equal(len, 1 + 8 + 32 + 1 + 3 * 32);
    audit_archive a;
    assert_int_equal(audit_archive_decode(b, len, &a, NULL, 0), AOS_OK);
    assert_int_equal(a.archived_to, 11);
    assert_int_equal(a.n, 3);
    assert_memory_equal(a.chain, chain, 32);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(audit_archive_decode(b, n, &a, NULL, 0), AOS_ERR_PROTO);
    b[8] = 12; /* popcount(12) is 2, not 3 */
    assert_int_equal(audit_archive_decode(b, len, &a, NULL, 0), AOS_ERR_PROTO);
    audit_tree_free(t);
}

/* After an archive only the frontier at the cut is left of leaves 0..base-1: the proofs
 * built from it are byte for byte the proofs built from every leaf, for every base, leaf
 * and tree size up to 40. */
static void proofs_past_an_archive(void **st)
{
    (void)st;
    enum { N = 40 };
    hash_t leaves[N], p1[AUDIT_PROOF_MAX], p2[AUDIT_PROOF_MAX], fr[AUDIT_TREE_DEPTH];
    for (int i = 0; i < N; i++) {
        uint8_t d[2] = {(uint8_t)i, 0x5a};
        naive_leaf(d, sizeof d, leaves[i]);
    }
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    for (uint64_t base = 0; base < N; base++) {
        size_t nf = audit_tree_frontier(t, fr, AUDIT_TREE_DEPTH);
        assert_int_equal(nf, (size_t)__builtin_popcountll(base));
        for (uint64_t n = base + 1; n <= N; n++)
            for (uint64_t m = base; m < n; m++) {
                size_t l1, l2;
                assert_int_equal(audit_inclusion_proof(leaf_of, leaves, m, n, p1,
                                                       AUDIT_PROOF_MAX, &l1, NULL, 0), AOS_OK);
                assert_int_equal(audit_inclusion_proof_base(leaf_of, leaves, base,
                                                            (const uint8_t(*)[32])fr, nf, m,
                                                            n, p2, AUDIT_PROOF_MAX, &l2, NULL,
                                                            0), AOS_OK);
                assert_int_equal(l1, l2);
                assert_memory_equal(p1, p2, l1 * 32);
            }
        if (base > 0) /* a leaf inside the archived range has no proof left */
            assert_int_equal(audit_inclusion_proof_base(leaf_of, leaves, base,
                                                        (const uint8_t(*)[32])fr, nf,
                                                        base - 1, N, p2, AUDIT_PROOF_MAX,
                                                        &(size_t){0}, NULL, 0),
                             AOS_ERR_USAGE);
        assert_int_equal(audit_tree_append(t, leaves[base], NULL, 0), AOS_OK);
    }
    audit_tree_free(t);
}

static void archive_body_v2(void **st)
{
    (void)st;
    audit_archive a = {.archived_to = 11, .n = 3, .archived_from = 5, .head_time_ns = 77};
    memset(a.chain, 0x11, 32);
    memset(a.frontier, 0x22, sizeof a.frontier);
    memset(a.digest, 0x33, 32);
    memset(a.head_sig, 0x44, 64);
    uint8_t b[AUDIT_ARCHIVE_MAX];
    size_t len;
    assert_int_equal(audit_archive_encode_v2(&a, b, sizeof b, &len, NULL, 0), AOS_OK);
    assert_int_equal(len, 1 + 8 + 32 + 1 + 3 * 32 + AUDIT_ARCHIVE_V2_TAIL);
    audit_archive d;
    assert_int_equal(audit_archive_decode(b, len, &d, NULL, 0), AOS_OK);
    assert_int_equal(d.version, 2);
    assert_int_equal(d.archived_to, 11);
    assert_int_equal(d.archived_from, 5);
    assert_int_equal(d.head_time_ns, 77);
    assert_memory_equal(d.digest, a.digest, 32);
    assert_memory_equal(d.head_sig, a.head_sig, 64);
    assert_memory_equal(d.frontier, a.frontier, 3 * 32);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(audit_archive_decode(b, n, &d, NULL, 0), AOS_ERR_PROTO);
    a.archived_from = 12; /* past its end */
    assert_int_equal(audit_archive_encode_v2(&a, b, sizeof b, &len, NULL, 0), AOS_ERR_USAGE);
    a.archived_from = 5;
    a.n = 2;
    assert_int_equal(audit_archive_encode_v2(&a, b, sizeof b, &len, NULL, 0), AOS_ERR_USAGE);
    a.n = 3;
    assert_int_equal(audit_archive_encode_v2(&a, b, 40, &len, NULL, 0), AOS_ERR_TOO_BIG);
}

/* ---- verify: a log of 1000 records with a head every 100, tampered every way ---- */

enum { NREC = 1000, EVERY = 100, CAP = NREC + 8 };

typedef struct {
    audit_rec r;
    char body[48];
    hash_t chain;
} row;

static row good[CAP];
static hash_t good_leaf[CAP];
static audit_sth good_heads[NREC / EVERY + 1];
static size_t ngood_heads;
static audit_key *key;
static uint8_t pk[AUDIT_PK_LEN];
static row scratch[CAP];

static void seal(row *w)
{
    static uint8_t buf[AUDIT_REC_MAX];
    size_t len;
    w->r.body = (const uint8_t *)w->body;
    w->r.body_len = strlen(w->body);
    assert_int_equal(audit_rec_encode(&w->r, buf, sizeof buf, &len, NULL, 0), AOS_OK);
    audit_chain_hash(w->r.prev_hash, buf, len, w->chain);
}

static void leaf_of_row(row *w, uint8_t out[32])
{
    static uint8_t buf[AUDIT_REC_MAX];
    size_t len;
    w->r.body = (const uint8_t *)w->body;
    assert_int_equal(audit_rec_encode(&w->r, buf, sizeof buf, &len, NULL, 0), AOS_OK);
    audit_leaf_hash(buf, len, out);
}

static int setup_log(void **st)
{
    (void)st;
    if (audit_key_generate(&key, NULL, 0) != AOS_OK)
        return -1;
    audit_key_public(key, pk);
    audit_tree *t;
    if (audit_tree_new(&t, NULL, 0) != AOS_OK)
        return -1;
    hash_t prev = {0};
    for (int i = 0; i < NREC; i++) {
        row *w = &good[i];
        snprintf(w->body, sizeof w->body, "{\"i\":%d}", i);
        sample(&w->r, (uint64_t)i + 1, w->body);
        memcpy(w->r.prev_hash, prev, 32);
        seal(w);
        memcpy(prev, w->chain, 32);
        leaf_of_row(w, good_leaf[i]);
        audit_tree_append(t, good_leaf[i], NULL, 0);
        if ((i + 1) % EVERY == 0) {
            audit_sth *h = &good_heads[ngood_heads++];
            h->tree_size = (uint64_t)i + 1;
            h->time_ns = (uint64_t)i;
            audit_tree_root(t, h->root);
            audit_sth_sign(h, key, NULL, 0);
        }
    }
    audit_tree_free(t);
    return 0;
}

static int teardown_log(void **st)
{
    (void)st;
    audit_key_free(key);
    return 0;
}

static audit_finding verify_rows(row *rows, size_t n, const audit_sth *heads, size_t nh,
                                 const audit_rec *archive)
{
    audit_verifier *v;
    char why[256];
    assert_int_equal(audit_verify_new(pk, heads, nh, archive, &v, why, sizeof why), AOS_OK);
    for (size_t i = 0; i < n; i++) {
        rows[i].r.body = (const uint8_t *)rows[i].body;
        rows[i].r.body_len = strlen(rows[i].body);
        assert_int_equal(audit_verify_add(v, &rows[i].r, rows[i].chain, why, sizeof why),
                         AOS_OK);
    }
    audit_finding f;
    assert_int_equal(audit_verify_finish(v, &f), AOS_OK);
    assert_int_equal(audit_verify_add(v, &rows[0].r, rows[0].chain, why, sizeof why),
                     AOS_ERR_USAGE);
    audit_verify_free(v);
    return f;
}

static size_t fresh(void)
{
    memcpy(scratch, good, sizeof good);
    return NREC;
}

#define EXPECT(f, k, s)                                                                  \
    do {                                                                                 \
        audit_finding f_ = (f);                                                          \
        if (f_.kind != (k) || f_.seq != (s))                                             \
            fail_msg("got %s at %llu (%s), want %s at %llu", audit_find_name(f_.kind),   \
                     (unsigned long long)f_.seq, f_.what, audit_find_name(k),            \
                     (unsigned long long)(s));                                           \
    } while (0)

static void remove_row(row *rows, size_t *n, size_t i)
{
    memmove(&rows[i], &rows[i + 1], (*n - i - 1) * sizeof *rows);
    (*n)--;
}

static void insert_row(row *rows, size_t *n, size_t i, const row *w)
{
    memmove(&rows[i + 1], &rows[i], (*n - i) * sizeof *rows);
    rows[i] = *w;
    (*n)++;
}

/* A row from another place in the log, keeping this place's seq: what swapping two rows'
 * contents, or two rows' seq values, looks like read back in seq order. */
static void swap_keep_seq(row *rows, size_t i, size_t j)
{
    row t = rows[i];
    rows[i] = rows[j];
    rows[j] = t;
    uint64_t s = rows[i].r.seq;
    rows[i].r.seq = rows[j].r.seq;
    rows[j].r.seq = s;
}

static void verify_clean(void **st)
{
    (void)st;
    size_t n = fresh();
    audit_finding f = verify_rows(scratch, n, good_heads, ngood_heads, NULL);
    EXPECT(f, AUDIT_FIND_OK, 0);
    assert_int_equal(f.records, NREC);
    assert_int_equal(f.heads_checked, NREC / EVERY);
    /* no heads, no records: nothing to object to */
    f = verify_rows(scratch, 0, NULL, 0, NULL);
    EXPECT(f, AUDIT_FIND_OK, 0);
    /* the tail after the last head is not covered by any: it checks by the chain alone */
    f = verify_rows(scratch, 950, good_heads, 9, NULL);
    EXPECT(f, AUDIT_FIND_OK, 0);
}

static void verify_altered(void **st)
{
    (void)st;
    size_t n = fresh();
    strcpy(scratch[499].body, "{\"i\":\"forged\"}");
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 500);
    /* the stored chain hash recomputed too: the next record's prev_hash gives it away */
    seal(&scratch[499]);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 500);
    /* a field of the fixed part */
    n = fresh();
    scratch[499].r.status = 0;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 500);
    /* the prev_hash field alone */
    n = fresh();
    scratch[499].r.prev_hash[3] ^= 1;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 500);
    /* a stored chain hash alone */
    n = fresh();
    scratch[499].chain[0] ^= 1;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 500);
    /* the first and the last record */
    n = fresh();
    strcpy(scratch[0].body, "{}");
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 1);
    n = fresh();
    strcpy(scratch[999].body, "{}");
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 1000);
    /* a field made invalid (it cannot even be encoded) */
    n = fresh();
    scratch[499].r.kind = "NOT A KIND";
    scratch[499].r.kind_len = 10;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_ALTERED, 500);
}

static void verify_deleted(void **st)
{
    (void)st;
    size_t n = fresh();
    remove_row(scratch, &n, 499);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_DELETED, 500);
    n = fresh();
    for (int i = 0; i < 11; i++)
        remove_row(scratch, &n, 499);
    audit_finding f = verify_rows(scratch, n, good_heads, ngood_heads, NULL);
    EXPECT(f, AUDIT_FIND_DELETED, 500);
    assert_int_equal(f.seq_end, 510);
    /* deleted and the later seqs renumbered to close the gap */
    n = fresh();
    remove_row(scratch, &n, 499);
    for (size_t i = 499; i < n; i++)
        scratch[i].r.seq--;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_DELETED, 500);
    /* the first record */
    n = fresh();
    remove_row(scratch, &n, 0);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_DELETED, 1);
}

static void verify_reordered(void **st)
{
    (void)st;
    /* contents (or seq values) of two rows swapped, read back in seq order */
    size_t n = fresh();
    swap_keep_seq(scratch, 299, 699);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_REORDERED, 300);
    n = fresh();
    swap_keep_seq(scratch, 299, 300);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_REORDERED, 300);
    n = fresh();
    swap_keep_seq(scratch, 998, 999);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_REORDERED, 999);
    /* whole rows stored out of order, each keeping its seq */
    n = fresh();
    row t = scratch[299];
    scratch[299] = scratch[699];
    scratch[699] = t;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_REORDERED, 300);
    n = fresh();
    t = scratch[299];
    scratch[299] = scratch[300];
    scratch[300] = t;
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_REORDERED, 300);
    /* one row moved ten places later */
    n = fresh();
    t = scratch[299];
    remove_row(scratch, &n, 299);
    insert_row(scratch, &n, 309, &t);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_REORDERED, 300);
}

static void verify_inserted(void **st)
{
    (void)st;
    /* a forged second record for seq 500, well made: linked and its hash recomputed */
    size_t n = fresh();
    row forged = good[499];
    strcpy(forged.body, "{\"i\":\"forged\"}");
    seal(&forged);
    insert_row(scratch, &n, 500, &forged);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_INSERTED, 500);
    n = fresh();
    insert_row(scratch, &n, 499, &forged);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_INSERTED, 500);
    /* put in at 500 with the later seqs shifted up, carefully and sloppily */
    for (int sloppy = 0; sloppy < 2; sloppy++) {
        n = fresh();
        row w = good[499];
        strcpy(w.body, "{\"i\":\"forged\"}");
        seal(&w);
        if (sloppy) {
            memset(w.r.prev_hash, 0, 32);
            memset(w.chain, 0xee, 32);
        }
        insert_row(scratch, &n, 499, &w);
        for (size_t i = 500; i < n; i++)
            scratch[i].r.seq++;
        EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_INSERTED,
               500);
    }
    /* appended at the end with a link to nothing */
    n = fresh();
    row w = good[999];
    w.r.seq = 1001;
    memset(w.r.prev_hash, 0x42, 32);
    seal(&w);
    insert_row(scratch, &n, n, &w);
    EXPECT(verify_rows(scratch, n, good_heads, ngood_heads, NULL), AUDIT_FIND_INSERTED, 1001);
}

static void verify_truncated(void **st)
{
    (void)st;
    size_t n = fresh();
    audit_finding f = verify_rows(scratch, 950, good_heads, ngood_heads, NULL);
    EXPECT(f, AUDIT_FIND_TRUNCATED, 951);
    assert_int_equal(f.head_size, 1000);
    f = verify_rows(scratch, 0, good_heads, ngood_heads, NULL);
    EXPECT(f, AUDIT_FIND_TRUNCATED, 1);
    (void)n;
}

static void verify_bad_heads(void **st)
{
    (void)st;
    /* a forger who rewrites the chain from 450 on passes the chain, not the heads */
    size_t n = fresh();
    strcpy(scratch[449].body, "{\"i\":\"forged\"}");
    for (size_t i = 449; i < n; i++) {
        if (i > 449)
            memcpy(scratch[i].r.prev_hash, scratch[i - 1].chain, 32);
        seal(&scratch[i]);
    }
    audit_finding f = verify_rows(scratch, n, good_heads, ngood_heads, NULL);
    EXPECT(f, AUDIT_FIND_BAD_HEAD, 401);
    assert_int_equal(f.seq_end, 500);
    assert_int_equal(f.head_size, 500);
    assert_int_equal(f.heads_checked, 4);
    /* without heads that rewrite is invisible: that is what the heads are for */
    EXPECT(verify_rows(scratch, n, NULL, 0, NULL), AUDIT_FIND_OK, 0);
    /* a head whose signature fails */
    n = fresh();
    audit_sth hs[NREC / EVERY];
    memcpy(hs, good_heads, sizeof hs);
    hs[2].sig[10] ^= 1;
    EXPECT(verify_rows(scratch, n, hs, ngood_heads, NULL), AUDIT_FIND_BAD_HEAD, 300);
    /* a head signed by another key */
    audit_key *other;
    assert_int_equal(audit_key_generate(&other, NULL, 0), AOS_OK);
    memcpy(hs, good_heads, sizeof hs);
    audit_sth_sign(&hs[0], other, NULL, 0);
    EXPECT(verify_rows(scratch, n, hs, ngood_heads, NULL), AUDIT_FIND_BAD_HEAD, 100);
    audit_key_free(other);
    /* heads out of order are a caller's mistake */
    memcpy(hs, good_heads, sizeof hs);
    hs[0].tree_size = 5000;
    audit_verifier *v;
    assert_int_equal(audit_verify_new(pk, hs, ngood_heads, NULL, &v, NULL, 0), AOS_ERR_USAGE);
}

static void verify_archive(void **st)
{
    (void)st;
    enum { TO = 300 };
    /* records 1..300 archived: the archive record (seq 1001) carries the chain hash of 300
     * and the tree's frontier at 300, and a head at 1001 covers it */
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    for (int i = 0; i < TO; i++)
        audit_tree_append(t, good_leaf[i], NULL, 0);
    static uint8_t body[AUDIT_ARCHIVE_MAX];
    size_t blen;
    assert_int_equal(audit_archive_encode(good[TO - 1].chain, t, body, sizeof body, &blen,
                                          NULL, 0), AOS_OK);
    audit_tree_free(t);
    size_t n = fresh();
    row *a = &scratch[n];
    *a = good[999];
    a->r.seq = 1001;
    a->r.kind = "archive";
    a->r.kind_len = 7;
    memcpy(a->r.prev_hash, good[999].chain, 32);
    a->body[0] = 0;
    a->r.body = body;
    a->r.body_len = blen;
    static uint8_t enc[AUDIT_REC_MAX];
    size_t elen;
    assert_int_equal(audit_rec_encode(&a->r, enc, sizeof enc, &elen, NULL, 0), AOS_OK);
    audit_chain_hash(a->r.prev_hash, enc, elen, a->chain);
    hash_t aleaf;
    audit_leaf_hash(enc, elen, aleaf);
    n++;
    audit_tree *full;
    assert_int_equal(audit_tree_new(&full, NULL, 0), AOS_OK);
    for (int i = 0; i < NREC; i++)
        audit_tree_append(full, good_leaf[i], NULL, 0);
    audit_tree_append(full, aleaf, NULL, 0);
    audit_sth hs[NREC / EVERY + 1];
    memcpy(hs, good_heads, ngood_heads * sizeof *hs);
    hs[ngood_heads].tree_size = 1001;
    hs[ngood_heads].time_ns = 1;
    audit_tree_root(full, hs[ngood_heads].root);
    audit_sth_sign(&hs[ngood_heads], key, NULL, 0);
    audit_tree_free(full);
    audit_rec arch = a->r;

    /* verify_rows resets the body from row.body: feed the archive by hand */
    audit_verifier *v;
    audit_finding f;
    for (int variant = 0; variant < 4; variant++) {
        size_t first = variant == 2 ? TO + 1 : TO; /* 2: record 301 gone too */
        size_t nh = variant == 1 ? ngood_heads : ngood_heads + 1; /* 1: no covering head */
        assert_int_equal(audit_verify_new(pk, hs, nh, &arch, &v, NULL, 0), AOS_OK);
        for (size_t i = first; i < n; i++) {
            if (i < n - 1) {
                scratch[i].r.body = (const uint8_t *)scratch[i].body;
                scratch[i].r.body_len = strlen(scratch[i].body);
            }
            if (variant == 3 && i == 500) /* 3: a tamper after the gap is still found */
                scratch[i].r.status = 99;
            audit_verify_add(v, &scratch[i].r, scratch[i].chain, NULL, 0);
            if (variant == 3 && i == 500)
                scratch[i].r.status = good[i].r.status;
        }
        assert_int_equal(audit_verify_finish(v, &f), AOS_OK);
        audit_verify_free(v);
        if (variant == 0) {
            EXPECT(f, AUDIT_FIND_DECLARED_GAP, 1);
            assert_int_equal(f.seq_end, TO);
            assert_int_equal(f.heads_skipped, 2);
            assert_int_equal(f.heads_checked, 9);
        } else if (variant == 1) {
            EXPECT(f, AUDIT_FIND_DELETED, 1);
        } else if (variant == 2) {
            EXPECT(f, AUDIT_FIND_DELETED, TO + 1);
        } else {
            EXPECT(f, AUDIT_FIND_ALTERED, 501);
        }
    }
    /* a body that is not an archive declaration is refused up front */
    arch.body_len--;
    assert_int_equal(audit_verify_new(pk, hs, ngood_heads, &arch, &v, NULL, 0), AOS_ERR_PROTO);
}

/* A version-2 declaration (what audit.archive writes) names the head at the cut: its
 * signature, over the frontier's root, is checked; a forged one is a bad head. */
static int archive_v2_case(int forge)
{
    enum { TO = 300 };
    const audit_sth *cut = NULL;
    for (size_t i = 0; i < ngood_heads; i++)
        if (good_heads[i].tree_size == TO)
            cut = &good_heads[i];
    assert_non_null(cut);
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    for (int i = 0; i < TO; i++)
        audit_tree_append(t, good_leaf[i], NULL, 0);
    audit_archive d = {.archived_to = TO, .archived_from = 1, .head_time_ns = cut->time_ns};
    memcpy(d.chain, good[TO - 1].chain, 32);
    d.n = audit_tree_frontier(t, d.frontier, AUDIT_TREE_DEPTH);
    audit_tree_free(t);
    memset(d.digest, 0x5c, 32);
    memcpy(d.head_sig, cut->sig, AUDIT_SIG_LEN);
    if (forge)
        d.head_sig[3] ^= 1;
    static uint8_t body[AUDIT_ARCHIVE_MAX];
    size_t blen;
    assert_int_equal(audit_archive_encode_v2(&d, body, sizeof body, &blen, NULL, 0), AOS_OK);
    size_t n = fresh();
    row *a = &scratch[n];
    *a = good[999];
    a->r.seq = 1001;
    a->r.kind = "archive";
    a->r.kind_len = 7;
    memcpy(a->r.prev_hash, good[999].chain, 32);
    a->body[0] = 0;
    a->r.body = body;
    a->r.body_len = blen;
    static uint8_t enc[AUDIT_REC_MAX];
    size_t elen;
    assert_int_equal(audit_rec_encode(&a->r, enc, sizeof enc, &elen, NULL, 0), AOS_OK);
    audit_chain_hash(a->r.prev_hash, enc, elen, a->chain);
    hash_t aleaf;
    audit_leaf_hash(enc, elen, aleaf);
    n++;
    audit_tree *full;
    assert_int_equal(audit_tree_new(&full, NULL, 0), AOS_OK);
    for (int i = 0; i < NREC; i++)
        audit_tree_append(full, good_leaf[i], NULL, 0);
    audit_tree_append(full, aleaf, NULL, 0);
    audit_sth hs[NREC / EVERY + 1];
    memcpy(hs, good_heads, ngood_heads * sizeof *hs);
    hs[ngood_heads].tree_size = 1001;
    hs[ngood_heads].time_ns = 1;
    audit_tree_root(full, hs[ngood_heads].root);
    audit_sth_sign(&hs[ngood_heads], key, NULL, 0);
    audit_tree_free(full);
    audit_rec arch = a->r;
    audit_verifier *v;
    audit_finding f;
    assert_int_equal(audit_verify_new(pk, hs, ngood_heads + 1, &arch, &v, NULL, 0), AOS_OK);
    for (size_t i = TO; i < n; i++) {
        if (i < n - 1) {
            scratch[i].r.body = (const uint8_t *)scratch[i].body;
            scratch[i].r.body_len = strlen(scratch[i].body);
        }
        audit_verify_add(v, &scratch[i].r, scratch[i].chain, NULL, 0);
    }
    assert_int_equal(audit_verify_finish(v, &f), AOS_OK);
    audit_verify_free(v);
    print_message("v2 archive (forged %d): %s at %llu: %s\n", forge, audit_find_name(f.kind),
                  (unsigned long long)f.seq, f.what);
    assert_int_equal(f.seq, forge ? TO : 1);
    return f.kind;
}

static void verify_archive_v2(void **st)
{
    (void)st;
    assert_int_equal(archive_v2_case(0), AUDIT_FIND_DECLARED_GAP);
    assert_int_equal(archive_v2_case(1), AUDIT_FIND_BAD_HEAD);
}

/* The iterator form over the same rows. */
typedef struct {
    row *rows;
    size_t n, i;
} cursor;

static aos_err next_row(void *arg, audit_rec *r, uint8_t chain[AUDIT_HASH_LEN], char *why,
                        size_t whylen)
{
    (void)why;
    (void)whylen;
    cursor *c = arg;
    if (c->i == c->n)
        return AOS_ERR_NOT_FOUND;
    row *w = &c->rows[c->i++];
    *r = w->r;
    r->body = (const uint8_t *)w->body;
    r->body_len = strlen(w->body);
    memcpy(chain, w->chain, AUDIT_HASH_LEN);
    return AOS_OK;
}

static void verify_iterator(void **st)
{
    (void)st;
    size_t n = fresh();
    cursor c = {scratch, n, 0};
    audit_finding f;
    char why[128];
    assert_int_equal(audit_verify_run(pk, good_heads, ngood_heads, NULL, next_row, &c, &f, why,
                                      sizeof why), AOS_OK);
    EXPECT(f, AUDIT_FIND_OK, 0);
    strcpy(scratch[9].body, "{}");
    c.i = 0;
    assert_int_equal(audit_verify_run(pk, good_heads, ngood_heads, NULL, next_row, &c, &f, why,
                                      sizeof why), AOS_OK);
    EXPECT(f, AUDIT_FIND_ALTERED, 10);
    assert_true(c.i < n); /* it stopped reading once the outcome was settled */
    assert_string_equal(audit_find_name(AUDIT_FIND_BAD_HEAD), "bad_head");
    assert_string_equal(audit_find_name((audit_find)99), "?");
}

/* ---- contents -------------------------------------------------------------------------- */

static void contents_address_and_list(void **st)
{
    (void)st;
    /* the address is BLAKE2b-256, unkeyed: the "blake2b" digests the details carry */
    uint8_t h[AUDIT_CONTENT_HASH_LEN], want[AUDIT_CONTENT_HASH_LEN];
    audit_content_hash("abc", 3, h);
    crypto_generichash(want, sizeof want, (const uint8_t *)"abc", 3, NULL, 0);
    assert_memory_equal(h, want, sizeof h);
    char hex[65], body[512];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    uint8_t out[4][AUDIT_CONTENT_HASH_LEN];
    /* listed twice, found twice, in order; fewer slots give the same count */
    snprintf(body, sizeof body, "{\"a\":1,\"contents\":[\"%s\",\"%s\"]}", hex, hex);
    assert_int_equal(audit_contents_listed((const uint8_t *)body, strlen(body), out, 4), 2);
    assert_memory_equal(out[0], h, sizeof h);
    assert_memory_equal(out[1], h, sizeof h);
    assert_int_equal(audit_contents_listed((const uint8_t *)body, strlen(body), out, 1), 2);
    assert_true(audit_contents_has((const uint8_t(*)[32])out, 1, h));
    assert_false(audit_contents_has((const uint8_t(*)[32])out, 0, h));
    /* no list, not JSON, not an object: none */
    static const char *const none[] = {"", "{}", "{\"x\":\"contents\"}", "[\"contents\"]",
                                       "not json \"contents\"", "{\"contents\":[]}"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
        assert_int_equal(audit_contents_listed((const uint8_t *)none[i], strlen(none[i]), out,
                                               4),
                         0);
    /* a list that is not one: upper case, short, not a string, not an array; a key given
     * twice counts as its last (as PostgreSQL's jsonb reads it) */
    char up[65];
    memcpy(up, hex, sizeof up);
    for (char *p = up; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    char bad[5][512];
    snprintf(bad[0], 512, "{\"contents\":[\"%s\"]}", up);
    snprintf(bad[1], 512, "{\"contents\":[\"%.62s\"]}", hex);
    snprintf(bad[2], 512, "{\"contents\":[1]}");
    snprintf(bad[3], 512, "{\"contents\":\"%s\"}", hex);
    snprintf(bad[4], 512, "{\"contents\":[],\"contents\":[\"%s\"]}", hex);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(audit_contents_listed((const uint8_t *)bad[i], strlen(bad[i]), out, 4),
                         -1);
    assert_int_equal(audit_contents_listed((const uint8_t *)bad[4], strlen(bad[4]), out, 4), 1);
    /* over the cap */
    size_t cap = (AUDIT_CONTENTS_LIST_MAX + 1) * 67 + 32;
    char *big = malloc(cap), *w = big;
    assert_non_null(big);
    w += sprintf(w, "{\"contents\":[");
    for (size_t i = 0; i <= AUDIT_CONTENTS_LIST_MAX; i++)
        w += sprintf(w, "%s\"%s\"", i ? "," : "", hex);
    w += sprintf(w, "]}");
    assert_int_equal(audit_contents_listed((const uint8_t *)big, (size_t)(w - big), out, 4), -1);
    free(big);
}

/* PostgreSQL's binary COPY messages: the header before the first row, a row of fields (one
 * NULL), the trailer, and each way a message can lie about its lengths. */
static void copybin_rows(void **st)
{
    (void)st;
    static const uint8_t first[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0,
                                    0, 0, 0, 0,   /* flags */
                                    0, 0, 0, 2,   /* a 2-byte extension */
                                    9, 9,
                                    0, 2,         /* 2 fields */
                                    0, 0, 0, 3, 'a', 'b', 'c',
                                    0xff, 0xff, 0xff, 0xff}; /* NULL */
    const uint8_t *f[2];
    int32_t fl[2];
    int header = 0;
    assert_int_equal(copybin_row(first, sizeof first, &header, 2, f, fl), AOS_OK);
    assert_int_equal(header, 1);
    assert_int_equal(fl[0], 3);
    assert_memory_equal(f[0], "abc", 3);
    assert_int_equal(fl[1], -1);
    /* the next rows have no header; a message with one again is not a row */
    static const uint8_t r1[] = {0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 'x'};
    assert_int_equal(copybin_row(r1, sizeof r1, &header, 2, f, fl), AOS_OK);
    assert_int_equal(fl[0], 0);
    assert_int_equal(fl[1], 1);
    assert_int_equal(f[1][0], 'x');
    assert_int_equal(copybin_row(first, sizeof first, &header, 2, f, fl), AOS_ERR_PROTO);
    static const uint8_t trailer[] = {0xff, 0xff};
    assert_int_equal(copybin_row(trailer, sizeof trailer, &header, 2, f, fl), AOS_ERR_NOT_FOUND);
    /* another field count, a length past the end, bytes left over, a cut count */
    assert_int_equal(copybin_row(r1, sizeof r1, &header, 3, f, fl), AOS_ERR_PROTO);
    assert_int_equal(copybin_row(r1, sizeof r1 - 1, &header, 2, f, fl), AOS_ERR_PROTO);
    static const uint8_t extra[] = {0, 1, 0, 0, 0, 1, 'x', 'y'};
    assert_int_equal(copybin_row(extra, sizeof extra, &header, 1, f, fl), AOS_ERR_PROTO);
    assert_int_equal(copybin_row(r1, 1, &header, 2, f, fl), AOS_ERR_PROTO);
    static const uint8_t neg[] = {0, 1, 0xff, 0xff, 0xff, 0xfe};
    assert_int_equal(copybin_row(neg, sizeof neg, &header, 1, f, fl), AOS_ERR_PROTO);
    /* a first message: a wrong signature, an extension past the end */
    uint8_t bad[sizeof first];
    memcpy(bad, first, sizeof bad);
    bad[0] = 'Q';
    header = 0;
    assert_int_equal(copybin_row(bad, sizeof bad, &header, 2, f, fl), AOS_ERR_PROTO);
    memcpy(bad, first, sizeof bad);
    bad[18] = 200;
    header = 0;
    assert_int_equal(copybin_row(bad, sizeof bad, &header, 2, f, fl), AOS_ERR_PROTO);
    /* an empty table: the header and the trailer in one message */
    static const uint8_t empty[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0,
                                    0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    header = 0;
    assert_int_equal(copybin_row(empty, sizeof empty, &header, 2, f, fl), AOS_ERR_NOT_FOUND);
}

/* ---- the archive directory's MANIFEST lines and head.json ---- */

static void archive_manifest_and_head(void **st)
{
    (void)st;
    char line[256], why[256], sha_hex[65], c_hex[65];
    uint8_t sha[32], h[32], want[32];
    audit_am_kind kind;
    memset(want, 0xab, sizeof want);
    aos_hex(want, 32, sha_hex);
    uint8_t ch[32];
    audit_content_hash("x", 1, ch);
    aos_hex(ch, 32, c_hex);
    snprintf(line, sizeof line, "%s  records", sha_hex);
    assert_int_equal(audit_manifest_line(line, strlen(line), &kind, sha, h, why, sizeof why), 0);
    assert_int_equal(kind, AUDIT_AM_RECORDS);
    assert_memory_equal(sha, want, 32);
    snprintf(line, sizeof line, "%s *head.json", sha_hex); /* sha256sum's binary mark */
    assert_int_equal(audit_manifest_line(line, strlen(line), &kind, sha, h, why, sizeof why), 0);
    assert_int_equal(kind, AUDIT_AM_HEAD);
    snprintf(line, sizeof line, "%s  contents/%s", sha_hex, c_hex);
    assert_int_equal(audit_manifest_line(line, strlen(line), &kind, sha, h, why, sizeof why), 0);
    assert_int_equal(kind, AUDIT_AM_CONTENT);
    assert_memory_equal(h, ch, 32);
    char name[AUDIT_ARCHDIR_NAME_MAX];
    audit_archdir_content_name(ch, name);
    assert_string_equal(name, line + 66);
    /* refused: another file, a short content name, paths that escape, one space, no name */
    const char *bad[] = {"  other", "  contents/0123", "  ../records", " records",
                         "  contents/../head.json", "  "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(line, sizeof line, "%s%s", sha_hex, bad[i]);
        assert_int_equal(audit_manifest_line(line, strlen(line), &kind, sha, h, why, sizeof why),
                         -1);
    }
    char up[65];
    for (int i = 0; i < 64; i++)
        up[i] = (char)(c_hex[i] >= 'a' ? c_hex[i] - 32 : c_hex[i]);
    up[64] = 0;
    snprintf(line, sizeof line, "%s  contents/%s", sha_hex, up);
    assert_int_equal(audit_manifest_line(line, strlen(line), &kind, sha, h, why, sizeof why), -1);
    assert_int_equal(audit_manifest_line(sha_hex, 40, &kind, sha, h, why, sizeof why), -1);

    /* head.json: a range ending at its head, the frontier of FROM-1 */
    char doc[1024], r64[65], s128[129], fr[65];
    memset(r64, '1', 64);
    r64[64] = 0;
    memset(s128, '2', 128);
    s128[128] = 0;
    memset(fr, '5', 64);
    fr[64] = 0;
    audit_archhead ah;
#define HEAD_DOC(v, from, to, size, f)                                                        \
    snprintf(doc, sizeof doc, "{\"version\":%d,\"from_seq\":%d,\"to_seq\":%d,\"head\":{"  \
             "\"tree_size\":%d,\"time_ns\":5,\"root\":\"%s\",\"signature\":\"%s\","         \
             "\"public_key\":\"%s\"},\"base_chain\":\"%s\",\"base_frontier\":[%s]}", v, from,  \
             to, size, r64, s128, r64, r64, f)
    char frs[80];
    snprintf(frs, sizeof frs, "\"%s\"", fr);
    HEAD_DOC(2, 2, 3, 3, frs);
    assert_int_equal(audit_archhead_parse(doc, strlen(doc), &ah, why, sizeof why), 0);
    assert_int_equal(ah.version, 2);
    assert_int_equal(ah.from, 2);
    assert_int_equal(ah.to, 3);
    assert_int_equal(ah.nbase, 1);
    HEAD_DOC(1, 1, 3, 3, "");
    assert_int_equal(audit_archhead_parse(doc, strlen(doc), &ah, why, sizeof why), 0);
    assert_int_equal(ah.version, 1);
    /* refused: a frontier of the wrong size, to not at the head, from past to, a version
     * from the future */
    HEAD_DOC(2, 1, 3, 3, frs);
    assert_int_equal(audit_archhead_parse(doc, strlen(doc), &ah, why, sizeof why), -1);
    HEAD_DOC(2, 2, 3, 4, frs);
    assert_int_equal(audit_archhead_parse(doc, strlen(doc), &ah, why, sizeof why), -1);
    HEAD_DOC(2, 4, 3, 3, frs);
    assert_int_equal(audit_archhead_parse(doc, strlen(doc), &ah, why, sizeof why), -1);
    HEAD_DOC(3, 2, 3, 3, frs);
    assert_int_equal(audit_archhead_parse(doc, strlen(doc), &ah, why, sizeof why), -1);
#undef HEAD_DOC
    assert_int_equal(audit_archhead_parse("[]", 2, &ah, why, sizeof why), -1);
}

int main(void)
{
    const struct CMUnitTest codec[] = {
        cmocka_unit_test(rec_round_trip), cmocka_unit_test(rec_hostile),
        cmocka_unit_test(chain_hash_def), cmocka_unit_test(ct_vectors),
        cmocka_unit_test(tree_vs_naive),  cmocka_unit_test(proofs_all),
        cmocka_unit_test(heads_and_keys), cmocka_unit_test(archive_body),
        cmocka_unit_test(proofs_past_an_archive), cmocka_unit_test(archive_body_v2),
    };
    const struct CMUnitTest log[] = {
        cmocka_unit_test(verify_clean),     cmocka_unit_test(verify_altered),
        cmocka_unit_test(verify_deleted),   cmocka_unit_test(verify_reordered),
        cmocka_unit_test(verify_inserted),  cmocka_unit_test(verify_truncated),
        cmocka_unit_test(verify_bad_heads), cmocka_unit_test(verify_archive),
        cmocka_unit_test(verify_archive_v2),
        cmocka_unit_test(verify_iterator),
        cmocka_unit_test(contents_address_and_list),
        cmocka_unit_test(copybin_rows),
        cmocka_unit_test(archive_manifest_and_head),
    };
    if (sodium_init() < 0)
        return 1;
    int rc = cmocka_run_group_tests_name("audit codec and tree", codec, NULL, NULL);
    return rc | cmocka_run_group_tests_name("audit verify", log, setup_log, teardown_log);
}
