/* aos-audit's verifier: walks the records as stored, with their stored chain hashes and
 * the signed heads, and names the first problem with its kind and seq (aosctl audit verify).
 *
 * How each tampering shows (checked in this order, one record of lookahead):
 * - seq jumps forward: DELETED at the first missing seq; but if a missing seq turns up
 *   later (records stored out of order, two swapped), REORDERED at that first seq.
 * - a seq already seen: INSERTED at that seq (a second record claims it).
 * - in place, "S" = the record matches its stored chain hash, "L" = its prev_hash is the
 *   chain hash of the record before:
 *   S and L: fine. Not L, and the next record links to the one before: INSERTED here (the
 *   chain steps over it) — unless this one links to the next (the two are swapped:
 *   REORDERED). Not S but L: ALTERED here. S but not L: the record before no longer
 *   matches this prev_hash: ALTERED there, or INSERTED there when this one links to the
 *   record two back. Neither: ALTERED (just its prev_hash was changed), INSERTED before,
 *   REORDERED (it links to the next), DELETED (it is the next record renumbered down)
 *   or, found nowhere else, REORDERED (it belongs elsewhere); at the tail, INSERTED.
 *   So a swap of two records' contents, or of their seqs, is REORDERED at the first.
 * - a careful forger who recomputes every chain hash passes the chain, not the tree:
 *   BAD_HEAD at the first signed head whose root differs (seq..seq_end: the records since
 *   the last good head). A head whose signature fails is BAD_HEAD at its size.
 * - the log ends before a head's tree_size: TRUNCATED at the first missing seq.
 * - DECLARED_GAP (not an error): records 1..archived_to were dropped, as an "archive"
 *   record's body declares (layout below). It only counts when that archive record is in
 *   the log, matches the one given, and a good signed head covers it: otherwise DELETED.
 *   The server must therefore sign a head right after writing an archive record.
 * Appending well-formed records after the last signed head cannot be told from real ones;
 * that window is the heads' interval. */
#ifndef AUDIT_VERIFY_H
#define AUDIT_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "merkle.h"
#include "record.h"

typedef enum {
    AUDIT_FIND_OK = 0,
    AUDIT_FIND_DECLARED_GAP,
    AUDIT_FIND_ALTERED,
    AUDIT_FIND_DELETED,
    AUDIT_FIND_INSERTED,
    AUDIT_FIND_REORDERED,
    AUDIT_FIND_TRUNCATED,
    AUDIT_FIND_BAD_HEAD,
} audit_find;

/* "ok", "declared_gap", "altered", "deleted", "inserted", "reordered", "truncated",
 * "bad_head"; "?" for other values. */
const char *audit_find_name(audit_find f);

typedef struct audit_finding {
    audit_find kind;
    uint64_t seq;           /* the first seq concerned (0 for OK) */
    uint64_t seq_end;       /* the last one (a gap, a bad head's range), else == seq */
    uint64_t head_size;     /* the head involved (TRUNCATED, BAD_HEAD), else 0 */
    uint64_t records;       /* records that checked out */
    uint64_t heads_checked; /* heads whose signature and root checked out */
    uint64_t heads_skipped; /* heads inside an archived range: not checkable */
    char what[256];         /* a sentence for the operator */
} audit_finding;

/* An archive record's body (kind "archive"): u8 version (1) || u64 archived_to ||
 * u8[32] chain hash of record archived_to || u8 n || n frontier hashes of the tree at
 * size archived_to (largest subtree first, n = popcount(archived_to)). */
#define AUDIT_ARCHIVE_VERSION 1u
/* Version 2 (what aos-audit's audit.archive writes): the version-1 fields with version 2,
 * then what the drop was: u64 archived_from (the first seq of this archive's range) ||
 * u8[32] digest (SHA-256 of the archive's MANIFEST) || u64 head_time_ns || u8[64] the
 * signature of the head of size archived_to (its root is the frontier's), so the record
 * names the files and the head they hold, and the verifier checks that head's signature. */
#define AUDIT_ARCHIVE_VERSION2 2u
#define AUDIT_ARCHIVE_V2_TAIL (8u + AUDIT_HASH_LEN + 8u + AUDIT_SIG_LEN)
#define AUDIT_ARCHIVE_MAX                                                               \
    (1u + 8 + AUDIT_HASH_LEN + 1 + AUDIT_TREE_DEPTH * AUDIT_HASH_LEN + AUDIT_ARCHIVE_V2_TAIL)

typedef struct audit_archive {
    uint64_t archived_to;
    uint8_t chain[AUDIT_HASH_LEN];
    size_t n;
    uint8_t frontier[AUDIT_TREE_DEPTH][AUDIT_HASH_LEN];
    /* version 2 only (version is 1 or 2) */
    unsigned version;
    uint64_t archived_from;
    uint8_t digest[AUDIT_HASH_LEN];
    uint64_t head_time_ns;
    uint8_t head_sig[AUDIT_SIG_LEN];
} audit_archive;

/* The version-2 body of a (a->n, a->frontier, a->chain, a->archived_to and the v2
 * fields; a->version is ignored) into out[0..cap). AOS_ERR_USAGE when archived_to is 0,
 * n is not popcount(archived_to), or archived_from is not in 1..archived_to;
 * AOS_ERR_TOO_BIG for cap. */
aos_err audit_archive_encode_v2(const audit_archive *a, uint8_t *out, size_t cap, size_t *len,
                                char *why, size_t whylen);

/* Body for an archive record declaring 1..archived_to dropped; at_to is a builder at size
 * archived_to. */
aos_err audit_archive_encode(const uint8_t chain[AUDIT_HASH_LEN], const audit_tree *at_to,
                             uint8_t *out, size_t cap, size_t *len, char *why, size_t whylen);
/* Untrusted bytes; AOS_ERR_PROTO unless exactly one valid body. */
aos_err audit_archive_decode(const uint8_t *b, size_t len, audit_archive *a, char *why,
                             size_t whylen);

typedef struct audit_verifier audit_verifier;

/* pk: the head key's public half. heads[0..nheads) sorted by tree_size (AOS_ERR_USAGE if
 * not), borrowed until audit_verify_free. archive: NULL, or the latest "archive" record
 * (copied; AOS_ERR_PROTO when its body is not an archive declaration). The verifier holds
 * two record buffers of AUDIT_REC_MAX and nothing grows per record. Free with
 * audit_verify_free. */
aos_err audit_verify_new(const uint8_t pk[AUDIT_PK_LEN], const audit_sth *heads,
                         size_t nheads, const audit_rec *archive, audit_verifier **out,
                         char *why, size_t whylen);
void audit_verify_free(audit_verifier *v);

/* The next record as stored (in the store's order) and its stored chain hash; r is
 * re-encoded, so it may be reused after the call. AOS_ERR_USAGE after finish. */
aos_err audit_verify_add(audit_verifier *v, const audit_rec *r,
                         const uint8_t chain[AUDIT_HASH_LEN], char *why, size_t whylen);
/* 1 when the outcome is decided and more records cannot change it. */
int audit_verify_settled(const audit_verifier *v);
/* After the last record: the first problem, DECLARED_GAP, or OK, into *f. */
aos_err audit_verify_finish(audit_verifier *v, audit_finding *f);

/* The next stored record and its chain hash: AOS_OK, AOS_ERR_NOT_FOUND at the end, any
 * other error stops the walk (a database error, with why). */
typedef aos_err (*audit_rec_next_fn)(void *arg, audit_rec *r, uint8_t chain[AUDIT_HASH_LEN],
                                     char *why, size_t whylen);
/* The whole walk: new, add until next says NOT_FOUND or the outcome is settled, finish. */
aos_err audit_verify_run(const uint8_t pk[AUDIT_PK_LEN], const audit_sth *heads,
                         size_t nheads, const audit_rec *archive, audit_rec_next_fn next,
                         void *arg, audit_finding *f, char *why, size_t whylen);

#endif
