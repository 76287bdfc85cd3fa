/* RFC 6962 tree hashing, the incremental builder, inclusion and consistency proofs with
 * their RFC 9162 verifiers, and Ed25519 tree heads; Ed25519 from libsodium, SHA-256 from
 * OpenSSL's libcrypto (it uses the CPU's SHA extensions: verify hashes every record twice). */
#include "merkle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the SHA256_* calls are deprecated in OpenSSL 3 for EVP, which costs an allocation and a
 * lookup per hash: these take a stack context and are the fastest path it offers */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <sodium.h>

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

typedef uint8_t hash_t[AUDIT_HASH_LEN];

void audit_leaf_hash(const uint8_t *input, size_t len, uint8_t out[AUDIT_HASH_LEN])
{
    static const uint8_t tag = 0x00;
    SHA256_CTX st;
    SHA256_Init(&st);
    SHA256_Update(&st, &tag, 1);
    SHA256_Update(&st, input, len);
    SHA256_Final(out, &st);
}

void audit_node_hash(const uint8_t left[AUDIT_HASH_LEN], const uint8_t right[AUDIT_HASH_LEN],
                     uint8_t out[AUDIT_HASH_LEN])
{
    uint8_t in[1 + 2 * AUDIT_HASH_LEN];
    in[0] = 0x01;
    memcpy(in + 1, left, AUDIT_HASH_LEN);
    memcpy(in + 1 + AUDIT_HASH_LEN, right, AUDIT_HASH_LEN);
    SHA256_CTX st; /* not SHA256(): in OpenSSL 3 that one goes through EVP, twice as slow */
    SHA256_Init(&st);
    SHA256_Update(&st, in, sizeof in);
    SHA256_Final(out, &st); /* out may alias left or right: in is a copy */
}

void audit_empty_root(uint8_t out[AUDIT_HASH_LEN])
{
    crypto_hash_sha256(out, (const uint8_t *)"", 0);
}

/* ---- the incremental builder ---- */

/* The stack lives in a plain struct so proofs can use one on the C stack for a range. */
typedef struct {
    uint64_t size;
    unsigned top; /* == popcount(size) */
    hash_t h[AUDIT_TREE_DEPTH];
} stack_t_;

struct audit_tree {
    stack_t_ s;
};

static int stack_push(stack_t_ *s, const uint8_t leaf[AUDIT_HASH_LEN])
{
    if (s->size == UINT64_MAX)
        return 0;
    hash_t h;
    memcpy(h, leaf, AUDIT_HASH_LEN);
    /* each trailing one bit of size is a complete subtree the new leaf now pairs with */
    for (uint64_t n = s->size; n & 1; n >>= 1)
        audit_node_hash(s->h[--s->top], h, h);
    memcpy(s->h[s->top++], h, AUDIT_HASH_LEN);
    s->size++;
    return 1;
}

static void stack_root(const stack_t_ *s, uint8_t out[AUDIT_HASH_LEN])
{
    if (s->top == 0) {
        audit_empty_root(out);
        return;
    }
    hash_t r;
    memcpy(r, s->h[s->top - 1], AUDIT_HASH_LEN);
    for (unsigned i = s->top - 1; i-- > 0;)
        audit_node_hash(s->h[i], r, r);
    memcpy(out, r, AUDIT_HASH_LEN);
}

aos_err audit_tree_new(audit_tree **out, char *why, size_t whylen)
{
    if (!out) {
        WHY("audit_tree_new: NULL argument");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    if (sodium_init() < 0) {
        WHY("libsodium failed to initialise");
        return AOS_ERR_INTERNAL;
    }
    audit_tree *t = calloc(1, sizeof *t);
    if (!t) {
        WHY("out of memory for a tree builder");
        return AOS_ERR_NOMEM;
    }
    *out = t;
    return AOS_OK;
}

void audit_tree_free(audit_tree *t)
{
    free(t);
}

aos_err audit_tree_append(audit_tree *t, const uint8_t leaf[AUDIT_HASH_LEN], char *why,
                          size_t whylen)
{
    if (!stack_push(&t->s, leaf)) {
        WHY("the tree is full (2^64-1 leaves)");
        return AOS_ERR_TOO_BIG;
    }
    return AOS_OK;
}

uint64_t audit_tree_size(const audit_tree *t)
{
    return t->s.size;
}

void audit_tree_root(const audit_tree *t, uint8_t out[AUDIT_HASH_LEN])
{
    stack_root(&t->s, out);
}

size_t audit_tree_frontier(const audit_tree *t, uint8_t (*out)[AUDIT_HASH_LEN], size_t cap)
{
    if (t->s.top > cap)
        return 0;
    memcpy(out, t->s.h, (size_t)t->s.top * AUDIT_HASH_LEN);
    return t->s.top;
}

aos_err audit_tree_restore(audit_tree *t, uint64_t size,
                           const uint8_t (*frontier)[AUDIT_HASH_LEN], size_t n, char *why,
                           size_t whylen)
{
    if ((size_t)__builtin_popcountll(size) != n) {
        WHY("a tree of %llu leaves has %d subtrees, not %zu", (unsigned long long)size,
            __builtin_popcountll(size), n);
        return AOS_ERR_USAGE;
    }
    t->s.size = size;
    t->s.top = (unsigned)n;
    if (n)
        memcpy(t->s.h, frontier, n * AUDIT_HASH_LEN);
    return AOS_OK;
}

/* ---- proofs ---- */

/* k for a tree of n >= 2 leaves: the largest power of two below n. */
static uint64_t split(uint64_t n)
{
    return (uint64_t)1 << (63 - __builtin_clzll(n - 1));
}

static aos_err range_root(audit_leaf_fn leaf, void *arg, uint64_t lo, uint64_t hi,
                          uint8_t out[AUDIT_HASH_LEN], char *why, size_t whylen)
{
    stack_t_ s = {0};
    hash_t h;
    for (uint64_t i = lo; i < hi; i++) {
        aos_err e = leaf(arg, i, h, why, whylen);
        if (e != AOS_OK)
            return e;
        stack_push(&s, h);
    }
    stack_root(&s, out);
    return AOS_OK;
}

aos_err audit_merkle_root(audit_leaf_fn leaf, void *arg, uint64_t n,
                          uint8_t out[AUDIT_HASH_LEN], char *why, size_t whylen)
{
    if (!leaf || !out) {
        WHY("audit_merkle_root: NULL argument");
        return AOS_ERR_USAGE;
    }
    return range_root(leaf, arg, 0, n, out, why, whylen);
}

/* The proofs are built top-down (the sibling of the whole tree's split comes first) and
 * handed out leaf side first, as RFC 6962 lists them. */
static aos_err emit(hash_t *tmp, size_t cnt, uint8_t (*path)[AUDIT_HASH_LEN], size_t cap,
                    size_t *len, char *why, size_t whylen)
{
    if (cnt > cap) {
        WHY("the proof has %zu hashes, room for %zu", cnt, cap);
        return AOS_ERR_TOO_BIG;
    }
    for (size_t i = 0; i < cnt; i++)
        memcpy(path[i], tmp[cnt - 1 - i], AUDIT_HASH_LEN);
    *len = cnt;
    return AOS_OK;
}

aos_err audit_inclusion_proof(audit_leaf_fn leaf, void *arg, uint64_t m, uint64_t n,
                              uint8_t (*path)[AUDIT_HASH_LEN], size_t cap, size_t *len,
                              char *why, size_t whylen)
{
    if (!leaf || !path || !len) {
        WHY("audit_inclusion_proof: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (m >= n) {
        WHY("leaf %llu is not in a tree of %llu leaves", (unsigned long long)m,
            (unsigned long long)n);
        return AOS_ERR_USAGE;
    }
    hash_t tmp[AUDIT_PROOF_MAX];
    size_t cnt = 0;
    uint64_t lo = 0, hi = n;
    while (hi - lo > 1) {
        uint64_t k = split(hi - lo);
        aos_err e;
        if (m - lo < k) {
            e = range_root(leaf, arg, lo + k, hi, tmp[cnt++], why, whylen);
            hi = lo + k;
        } else {
            e = range_root(leaf, arg, lo, lo + k, tmp[cnt++], why, whylen);
            lo += k;
        }
        if (e != AOS_OK)
            return e;
    }
    return emit(tmp, cnt, path, cap, len, why, whylen);
}

typedef struct based {
    audit_leaf_fn leaf;
    void *arg;
    uint64_t base;
    const uint8_t (*fr)[AUDIT_HASH_LEN];
    size_t nf;
} based;

/* MTH of [lo, hi) when [0, base) is known only by its frontier: a range inside it is one
 * of the frontier's subtrees (see merkle.h), a range past it is read leaf by leaf, and a
 * range across it splits as RFC 6962 splits it. */
static aos_err based_root(const based *b, uint64_t lo, uint64_t hi, uint8_t out[AUDIT_HASH_LEN],
                          char *why, size_t whylen)
{
    if (lo >= b->base)
        return range_root(b->leaf, b->arg, lo, hi, out, why, whylen);
    if (hi <= b->base) {
        uint64_t at = 0;
        for (size_t i = 0; i < b->nf; i++) {
            uint64_t size = (uint64_t)1 << (63 - __builtin_clzll(b->base - at));
            if (at == lo && at + size == hi) {
                memcpy(out, b->fr[i], AUDIT_HASH_LEN);
                return AOS_OK;
            }
            at += size;
        }
        WHY("leaves %llu..%llu are archived and not one subtree of the frontier",
            (unsigned long long)lo, (unsigned long long)hi - 1);
        return AOS_ERR_USAGE;
    }
    uint64_t k = split(hi - lo);
    hash_t l, r;
    aos_err e = based_root(b, lo, lo + k, l, why, whylen);
    if (e == AOS_OK)
        e = based_root(b, lo + k, hi, r, why, whylen);
    if (e == AOS_OK)
        audit_node_hash(l, r, out);
    return e;
}

aos_err audit_inclusion_proof_base(audit_leaf_fn leaf, void *arg, uint64_t base,
                                   const uint8_t (*frontier)[AUDIT_HASH_LEN], size_t nf,
                                   uint64_t m, uint64_t n, uint8_t (*path)[AUDIT_HASH_LEN],
                                   size_t cap, size_t *len, char *why, size_t whylen)
{
    if (!leaf || !path || !len || (nf && !frontier)) {
        WHY("audit_inclusion_proof_base: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (m >= n || m < base || nf != (size_t)__builtin_popcountll(base)) {
        WHY("leaf %llu of a tree of %llu leaves past %llu archived ones (%zu subtrees)",
            (unsigned long long)m, (unsigned long long)n, (unsigned long long)base, nf);
        return AOS_ERR_USAGE;
    }
    based b = {leaf, arg, base, frontier, nf};
    hash_t tmp[AUDIT_PROOF_MAX];
    size_t cnt = 0;
    uint64_t lo = 0, hi = n;
    while (hi - lo > 1) {
        uint64_t k = split(hi - lo);
        aos_err e;
        if (m - lo < k) {
            e = based_root(&b, lo + k, hi, tmp[cnt++], why, whylen);
            hi = lo + k;
        } else {
            e = based_root(&b, lo, lo + k, tmp[cnt++], why, whylen);
            lo += k;
        }
        if (e != AOS_OK)
            return e;
    }
    return emit(tmp, cnt, path, cap, len, why, whylen);
}

aos_err audit_consistency_proof(audit_leaf_fn leaf, void *arg, uint64_t m, uint64_t n,
                                uint8_t (*path)[AUDIT_HASH_LEN], size_t cap, size_t *len,
                                char *why, size_t whylen)
{
    if (!leaf || !path || !len) {
        WHY("audit_consistency_proof: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (m > n) {
        WHY("a tree of %llu leaves cannot extend one of %llu", (unsigned long long)n,
            (unsigned long long)m);
        return AOS_ERR_USAGE;
    }
    *len = 0;
    if (m == 0 || m == n)
        return AOS_OK;
    hash_t tmp[AUDIT_CPROOF_MAX];
    size_t cnt = 0;
    uint64_t lo = 0, hi = n, mm = m; /* mm: how many of [lo, hi) the old tree holds */
    int whole = 1;                   /* b of SUBPROOF: the old tree is a whole subtree */
    aos_err e;
    while (mm != hi - lo) {
        uint64_t k = split(hi - lo);
        if (mm <= k) {
            e = range_root(leaf, arg, lo + k, hi, tmp[cnt++], why, whylen);
            hi = lo + k;
        } else {
            e = range_root(leaf, arg, lo, lo + k, tmp[cnt++], why, whylen);
            lo += k;
            mm -= k;
            whole = 0;
        }
        if (e != AOS_OK)
            return e;
    }
    if (!whole && (e = range_root(leaf, arg, lo, hi, tmp[cnt++], why, whylen)) != AOS_OK)
        return e;
    return emit(tmp, cnt, path, cap, len, why, whylen);
}

aos_err audit_inclusion_verify(const uint8_t leaf_hash[AUDIT_HASH_LEN], uint64_t m,
                               uint64_t n, const uint8_t (*path)[AUDIT_HASH_LEN], size_t len,
                               const uint8_t root[AUDIT_HASH_LEN], char *why, size_t whylen)
{
    if (!leaf_hash || !root || (len && !path)) {
        WHY("audit_inclusion_verify: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (m >= n) {
        WHY("leaf %llu is not in a tree of %llu leaves", (unsigned long long)m,
            (unsigned long long)n);
        return AOS_ERR_CONFLICT;
    }
    if (len > AUDIT_PROOF_MAX) {
        WHY("a proof of %zu hashes (at most %u)", len, AUDIT_PROOF_MAX);
        return AOS_ERR_CONFLICT;
    }
    uint64_t fn = m, sn = n - 1;
    hash_t r;
    memcpy(r, leaf_hash, AUDIT_HASH_LEN);
    for (size_t i = 0; i < len; i++) {
        if (sn == 0) {
            WHY("the proof is longer than the tree is deep");
            return AOS_ERR_CONFLICT;
        }
        if ((fn & 1) || fn == sn) {
            audit_node_hash(path[i], r, r);
            if (!(fn & 1))
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
        } else {
            audit_node_hash(r, path[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0) {
        WHY("the proof is shorter than the tree is deep");
        return AOS_ERR_CONFLICT;
    }
    if (sodium_memcmp(r, root, AUDIT_HASH_LEN) != 0) {
        WHY("the proof leads to another root");
        return AOS_ERR_CONFLICT;
    }
    return AOS_OK;
}

aos_err audit_consistency_verify(uint64_t m, uint64_t n, const uint8_t root_m[AUDIT_HASH_LEN],
                                 const uint8_t root_n[AUDIT_HASH_LEN],
                                 const uint8_t (*path)[AUDIT_HASH_LEN], size_t len, char *why,
                                 size_t whylen)
{
    if (!root_m || !root_n || (len && !path)) {
        WHY("audit_consistency_verify: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (m > n) {
        WHY("a tree of %llu leaves cannot extend one of %llu", (unsigned long long)n,
            (unsigned long long)m);
        return AOS_ERR_CONFLICT;
    }
    if (m == 0 || m == n) {
        hash_t empty;
        audit_empty_root(empty);
        if (len) {
            WHY("a proof between sizes %llu and %llu must be empty", (unsigned long long)m,
                (unsigned long long)n);
            return AOS_ERR_CONFLICT;
        }
        if (m == 0 ? sodium_memcmp(root_m, empty, AUDIT_HASH_LEN) != 0
                   : sodium_memcmp(root_m, root_n, AUDIT_HASH_LEN) != 0) {
            WHY(m == 0 ? "the first root is not the empty tree's" : "the roots differ");
            return AOS_ERR_CONFLICT;
        }
        return AOS_OK;
    }
    if (len == 0 || len > AUDIT_CPROOF_MAX) {
        WHY("a consistency proof of %zu hashes", len);
        return AOS_ERR_CONFLICT;
    }
    /* a power-of-two old tree is a whole subtree of the new one: the proof leaves its
     * root out, and the verifier starts from it */
    int lead = (m & (m - 1)) == 0;
    size_t total = len + (size_t)lead;
#define ITEM(i) (lead ? ((i) == 0 ? root_m : path[(i) - 1]) : path[(i)])
    uint64_t fn = m - 1, sn = n - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    hash_t fr, sr;
    memcpy(fr, ITEM(0), AUDIT_HASH_LEN);
    memcpy(sr, ITEM(0), AUDIT_HASH_LEN);
    for (size_t i = 1; i < total; i++) {
        const uint8_t *c = ITEM(i);
        if (sn == 0) {
            WHY("the proof is longer than the tree is deep");
            return AOS_ERR_CONFLICT;
        }
        if ((fn & 1) || fn == sn) {
            audit_node_hash(c, fr, fr);
            audit_node_hash(c, sr, sr);
            if (!(fn & 1))
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
        } else {
            audit_node_hash(sr, c, sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
#undef ITEM
    if (sn != 0) {
        WHY("the proof is shorter than the tree is deep");
        return AOS_ERR_CONFLICT;
    }
    if (sodium_memcmp(fr, root_m, AUDIT_HASH_LEN) != 0) {
        WHY("the proof does not lead to the old root");
        return AOS_ERR_CONFLICT;
    }
    if (sodium_memcmp(sr, root_n, AUDIT_HASH_LEN) != 0) {
        WHY("the proof does not lead to the new root");
        return AOS_ERR_CONFLICT;
    }
    return AOS_OK;
}

/* ---- signed tree heads ---- */

struct audit_key {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES]; /* libsodium's: seed || pk */
};

static aos_err sodium_ready(char *why, size_t whylen)
{
    if (sodium_init() < 0) {
        WHY("libsodium failed to initialise");
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
}

aos_err audit_key_generate(audit_key **out, char *why, size_t whylen)
{
    if (!out) {
        WHY("audit_key_generate: NULL argument");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    aos_err e = sodium_ready(why, whylen);
    if (e != AOS_OK)
        return e;
    audit_key *k = calloc(1, sizeof *k);
    if (!k) {
        WHY("out of memory for a key");
        return AOS_ERR_NOMEM;
    }
    crypto_sign_keypair(k->pk, k->sk);
    *out = k;
    return AOS_OK;
}

aos_err audit_key_from_bytes(const uint8_t *b, size_t len, audit_key **out, char *why,
                             size_t whylen)
{
    _Static_assert(AUDIT_KEY_LEN == crypto_sign_SECRETKEYBYTES, "key layout");
    _Static_assert(AUDIT_PK_LEN == crypto_sign_PUBLICKEYBYTES, "key layout");
    if (!out || (!b && len)) {
        WHY("audit_key_from_bytes: NULL argument");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    aos_err e = sodium_ready(why, whylen);
    if (e != AOS_OK)
        return e;
    if (len != AUDIT_KEY_LEN) {
        WHY("a key pair is %u bytes, not %zu", AUDIT_KEY_LEN, len);
        return AOS_ERR_PROTO;
    }
    audit_key *k = calloc(1, sizeof *k);
    if (!k) {
        WHY("out of memory for a key");
        return AOS_ERR_NOMEM;
    }
    crypto_sign_seed_keypair(k->pk, k->sk, b);
    if (sodium_memcmp(k->pk, b + crypto_sign_SEEDBYTES, AUDIT_PK_LEN) != 0) {
        audit_key_free(k);
        WHY("the public key does not belong to the seed: a damaged key");
        return AOS_ERR_PROTO;
    }
    *out = k;
    return AOS_OK;
}

void audit_key_to_bytes(const audit_key *k, uint8_t out[AUDIT_KEY_LEN])
{
    memcpy(out, k->sk, AUDIT_KEY_LEN);
}

void audit_key_public(const audit_key *k, uint8_t pk[AUDIT_PK_LEN])
{
    memcpy(pk, k->pk, AUDIT_PK_LEN);
}

void audit_key_free(audit_key *k)
{
    if (!k)
        return;
    sodium_memzero(k, sizeof *k);
    free(k);
}

static uint8_t *be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void audit_sth_signed_bytes(const audit_sth *h, uint8_t out[AUDIT_STH_SIGNED_LEN])
{
    uint8_t *p = out;
    *p++ = AUDIT_STH_VERSION;
    p = be64(p, h->tree_size);
    p = be64(p, h->time_ns);
    memcpy(p, h->root, AUDIT_HASH_LEN);
}

aos_err audit_sth_sign(audit_sth *h, const audit_key *k, char *why, size_t whylen)
{
    if (!h || !k) {
        WHY("audit_sth_sign: NULL argument");
        return AOS_ERR_USAGE;
    }
    uint8_t msg[AUDIT_STH_SIGNED_LEN];
    audit_sth_signed_bytes(h, msg);
    if (crypto_sign_detached(h->sig, NULL, msg, sizeof msg, k->sk) != 0) {
        WHY("Ed25519 signing failed");
        return AOS_ERR_INTERNAL;
    }
    return AOS_OK;
}

aos_err audit_sth_verify(const audit_sth *h, const uint8_t pk[AUDIT_PK_LEN], char *why,
                         size_t whylen)
{
    if (!h || !pk) {
        WHY("audit_sth_verify: NULL argument");
        return AOS_ERR_USAGE;
    }
    aos_err e = sodium_ready(why, whylen);
    if (e != AOS_OK)
        return e;
    uint8_t msg[AUDIT_STH_SIGNED_LEN];
    audit_sth_signed_bytes(h, msg);
    if (crypto_sign_verify_detached(h->sig, msg, sizeof msg, pk) != 0) {
        WHY("the head of size %llu is not signed by this key",
            (unsigned long long)h->tree_size);
        return AOS_ERR_CONFLICT;
    }
    return AOS_OK;
}

void audit_sth_encode(const audit_sth *h, uint8_t out[AUDIT_STH_LEN])
{
    audit_sth_signed_bytes(h, out);
    memcpy(out + AUDIT_STH_SIGNED_LEN, h->sig, AUDIT_SIG_LEN);
}

aos_err audit_sth_decode(const uint8_t *b, size_t len, audit_sth *h, char *why,
                         size_t whylen)
{
    if (!h || (!b && len)) {
        WHY("audit_sth_decode: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (len != AUDIT_STH_LEN) {
        WHY("a signed tree head is %u bytes, not %zu", AUDIT_STH_LEN, len);
        return AOS_ERR_PROTO;
    }
    if (b[0] != AUDIT_STH_VERSION) {
        WHY("tree head version %u (this build reads %u)", b[0], AUDIT_STH_VERSION);
        return AOS_ERR_PROTO;
    }
    h->tree_size = rd64(b + 1);
    h->time_ns = rd64(b + 9);
    memcpy(h->root, b + 17, AUDIT_HASH_LEN);
    memcpy(h->sig, b + AUDIT_STH_SIGNED_LEN, AUDIT_SIG_LEN);
    return AOS_OK;
}
