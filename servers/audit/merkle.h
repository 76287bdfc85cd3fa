/* aos-audit's Merkle tree, hashed exactly as RFC 6962 §2.1 says (so any CT tool checks
 * our proofs), its proofs and their verifiers, and Ed25519-signed tree heads.
 *
 * Leaf i (from 0) of the tree is the record with seq i+1; its leaf input is the record's
 * canonical encoding (record.h). leaf = SHA-256(0x00 || input), node = SHA-256(0x01 ||
 * left || right), the empty tree's root is SHA-256(""), and a tree of n > 1 leaves
 * splits at k, the largest power of two < n. Proofs are RFC 6962 §2.1.1 audit paths and
 * §2.1.2 consistency proofs; the verifiers are RFC 9162 §2.1.3.2 and §2.1.4.2.
 *
 * Signed tree head: the signed message is AUDIT_STH_SIGNED_LEN bytes, u8 version (1) ||
 * u64 tree_size || u64 time_ns || root, integers big-endian; the signature is Ed25519
 * (libsodium crypto_sign_detached) over those bytes. The head key signs nothing else. A
 * head travels as the signed bytes followed by the 64-byte signature. */
#ifndef AUDIT_MERKLE_H
#define AUDIT_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "record.h"

#define AUDIT_TREE_DEPTH 64u    /* tree sizes are u64: at most 64 perfect subtrees */
#define AUDIT_PROOF_MAX 64u     /* hashes in an inclusion proof */
#define AUDIT_CPROOF_MAX 128u   /* hashes in a consistency proof (at most depth + 1) */

void audit_leaf_hash(const uint8_t *input, size_t len, uint8_t out[AUDIT_HASH_LEN]);
void audit_node_hash(const uint8_t left[AUDIT_HASH_LEN], const uint8_t right[AUDIT_HASH_LEN],
                     uint8_t out[AUDIT_HASH_LEN]);
void audit_empty_root(uint8_t out[AUDIT_HASH_LEN]);

/* The incremental builder: a stack of the perfect subtrees' roots (one per set bit of the
 * size), so memory is O(log n) and the root at the current size costs O(log n). Created
 * by audit_tree_new, freed by audit_tree_free (NULL is fine). */
typedef struct audit_tree audit_tree;

aos_err audit_tree_new(audit_tree **out, char *why, size_t whylen);
void audit_tree_free(audit_tree *t);
/* Append leaf hash (not leaf input). AOS_ERR_TOO_BIG at 2^64-1 leaves. */
aos_err audit_tree_append(audit_tree *t, const uint8_t leaf[AUDIT_HASH_LEN], char *why,
                          size_t whylen);
uint64_t audit_tree_size(const audit_tree *t);
void audit_tree_root(const audit_tree *t, uint8_t out[AUDIT_HASH_LEN]);
/* The frontier: the subtree roots, largest (leftmost) first; popcount(size) of them.
 * Saved beside a head (or in an archive record), it lets a builder resume at that size
 * without the leaves. Returns the count, or 0 with nothing written when cap is short. */
size_t audit_tree_frontier(const audit_tree *t, uint8_t (*out)[AUDIT_HASH_LEN], size_t cap);
/* Reset t to size with that frontier. AOS_ERR_USAGE when n != popcount(size). */
aos_err audit_tree_restore(audit_tree *t, uint64_t size,
                           const uint8_t (*frontier)[AUDIT_HASH_LEN], size_t n, char *why,
                           size_t whylen);

/* Where proofs get leaf hashes: leaf index (from 0) into out. Any error stops the proof
 * and is passed on with its why. The server backs it with its table or a cache. */
typedef aos_err (*audit_leaf_fn)(void *arg, uint64_t index, uint8_t out[AUDIT_HASH_LEN],
                                 char *why, size_t whylen);

/* MTH of the first n leaves (O(n) leaf reads, O(log n) memory). */
aos_err audit_merkle_root(audit_leaf_fn leaf, void *arg, uint64_t n,
                          uint8_t out[AUDIT_HASH_LEN], char *why, size_t whylen);

/* The audit path of leaf m in the tree of the first n leaves (m < n), written to
 * path[0..*len), leaf side first. AOS_ERR_USAGE for m >= n, AOS_ERR_TOO_BIG for cap. */
aos_err audit_inclusion_proof(audit_leaf_fn leaf, void *arg, uint64_t m, uint64_t n,
                              uint8_t (*path)[AUDIT_HASH_LEN], size_t cap, size_t *len,
                              char *why, size_t whylen);
/* AOS_OK when path proves leaf_hash is leaf m of the tree of size n with that root;
 * AOS_ERR_CONFLICT when it does not (with why); never reads past path[len). */
aos_err audit_inclusion_verify(const uint8_t leaf_hash[AUDIT_HASH_LEN], uint64_t m,
                               uint64_t n, const uint8_t (*path)[AUDIT_HASH_LEN], size_t len,
                               const uint8_t root[AUDIT_HASH_LEN], char *why, size_t whylen);

/* audit_inclusion_proof for a log whose leaves 0..base-1 are gone (archived): the
 * subtrees over them come from the frontier at size base (frontier[0..nf), largest first,
 * nf == popcount(base)), which is all a path to a leaf m >= base needs (every node of that
 * path inside the archived range is one of those subtrees). The path is the same RFC 6962
 * path audit_inclusion_verify checks. AOS_ERR_USAGE for m < base or a bad frontier. */
aos_err audit_inclusion_proof_base(audit_leaf_fn leaf, void *arg, uint64_t base,
                                   const uint8_t (*frontier)[AUDIT_HASH_LEN], size_t nf,
                                   uint64_t m, uint64_t n, uint8_t (*path)[AUDIT_HASH_LEN],
                                   size_t cap, size_t *len, char *why, size_t whylen);

/* The proof that the tree of size m is a prefix of the tree of size n (m <= n); empty
 * when m == 0 or m == n. */
aos_err audit_consistency_proof(audit_leaf_fn leaf, void *arg, uint64_t m, uint64_t n,
                                uint8_t (*path)[AUDIT_HASH_LEN], size_t cap, size_t *len,
                                char *why, size_t whylen);
/* AOS_OK when path proves root_m (size m) is a prefix of root_n (size n);
 * AOS_ERR_CONFLICT otherwise. m == 0 needs an empty path and root_m the empty root;
 * m == n an empty path and equal roots. */
aos_err audit_consistency_verify(uint64_t m, uint64_t n, const uint8_t root_m[AUDIT_HASH_LEN],
                                 const uint8_t root_n[AUDIT_HASH_LEN],
                                 const uint8_t (*path)[AUDIT_HASH_LEN], size_t len, char *why,
                                 size_t whylen);

/* Signed tree heads and the Ed25519 key that signs them. */
#define AUDIT_STH_VERSION 1u
#define AUDIT_STH_SIGNED_LEN (1u + 8 + 8 + AUDIT_HASH_LEN)
#define AUDIT_SIG_LEN 64u
#define AUDIT_STH_LEN (AUDIT_STH_SIGNED_LEN + AUDIT_SIG_LEN)
#define AUDIT_PK_LEN 32u
#define AUDIT_KEY_LEN 64u /* serialized key pair: the 32-byte seed, then the public key */

typedef struct audit_sth {
    uint64_t tree_size;
    uint64_t time_ns;
    uint8_t root[AUDIT_HASH_LEN];
    uint8_t sig[AUDIT_SIG_LEN];
} audit_sth;

/* A key pair; the secret half is wiped on free. Created by audit_key_generate or
 * audit_key_from_bytes, freed by audit_key_free (NULL is fine). */
typedef struct audit_key audit_key;

aos_err audit_key_generate(audit_key **out, char *why, size_t whylen);
/* AOS_ERR_PROTO when the bytes are not a key pair (wrong length, or the public half does
 * not belong to the seed: a damaged key file). */
aos_err audit_key_from_bytes(const uint8_t *b, size_t len, audit_key **out, char *why,
                             size_t whylen);
/* The serialized pair: secret, so the caller keeps it in a file only its uid reads and
 * wipes the buffer (sodium_memzero) after use. */
void audit_key_to_bytes(const audit_key *k, uint8_t out[AUDIT_KEY_LEN]);
void audit_key_public(const audit_key *k, uint8_t pk[AUDIT_PK_LEN]);
void audit_key_free(audit_key *k);

/* The bytes the signature covers. */
void audit_sth_signed_bytes(const audit_sth *h, uint8_t out[AUDIT_STH_SIGNED_LEN]);
/* Fill h->sig. */
aos_err audit_sth_sign(audit_sth *h, const audit_key *k, char *why, size_t whylen);
/* AOS_OK when h->sig is pk's signature of h; AOS_ERR_CONFLICT when not. */
aos_err audit_sth_verify(const audit_sth *h, const uint8_t pk[AUDIT_PK_LEN], char *why,
                         size_t whylen);
void audit_sth_encode(const audit_sth *h, uint8_t out[AUDIT_STH_LEN]);
/* Untrusted bytes: exactly AUDIT_STH_LEN with version 1, else AOS_ERR_PROTO. The
 * signature is not checked here. */
aos_err audit_sth_decode(const uint8_t *b, size_t len, audit_sth *h, char *why,
                         size_t whylen);

#endif
