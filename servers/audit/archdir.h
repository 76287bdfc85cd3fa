/* The audit archive directory that `aosctl audit archive` writes and `audit check-archive`
 * reads back: its layout, the decoders of its MANIFEST lines and head.json, and its check.
 *
 * Layout (head.json version 2):
 *   records          every record of seqs FROM..TO, each as u32 big-endian length then its
 *                    canonical encoding (record.h), in seq order
 *   head.json        {"version":2, "from_seq", "to_seq", "head":{tree_size (= TO), time_ns,
 *                    root, signature, public_key}, "base_chain": the chain hash of FROM-1
 *                    (zeros when FROM is 1), "base_frontier": [the tree's frontier at FROM-1]}
 *   contents/<hex>   every content the range's records list in their body's "contents"
 *                    (contents.h), once each, named by its BLAKE2b-256 in 64 lowercase hex
 *                    digits, its bytes exactly as stored
 *   MANIFEST         "<sha256 hex>  NAME" lines, NAME one of records, head.json and each
 *                    contents/<hex> (`sha256sum -c MANIFEST` reads it); the log's archive
 *                    record keeps the SHA-256 of this file, so it covers every content too.
 * A version-1 head.json (written before contents were carried) has no contents/: its
 * records are checked, the contents they list are not (the check says so).
 *
 * Bounds: at most AUDIT_ARCHDIR_CONTENTS_MAX distinct contents per archive (the writer
 * refuses a range that lists more: archive a shorter one); the check holds one entry of
 * 72 bytes per content (at most 72 MiB), one record and one content (1 MiB each). */
#ifndef AUDIT_ARCHDIR_H
#define AUDIT_ARCHDIR_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "contents.h"
#include "merkle.h"
#include "record.h"

#define AUDIT_ARCHDIR_VERSION 2u
#define AUDIT_ARCHDIR_CONTENTS_MAX (1u << 20)
#define AUDIT_ARCHDIR_HEAD_MAX (64u << 10) /* head.json: a few hundred bytes in practice */
#define AUDIT_ARCHDIR_LINE_MAX 160u        /* one MANIFEST line, newline included */
#define AUDIT_ARCHDIR_NAME_MAX (9u + 2 * AUDIT_CONTENT_HASH_LEN + 1) /* "contents/" + hex */

typedef struct audit_archhead {
    unsigned version; /* 1 or 2 */
    uint64_t from, to;
    audit_sth head;
    uint8_t pk[AUDIT_PK_LEN];
    uint8_t base_chain[AUDIT_HASH_LEN];
    size_t nbase;
    uint8_t base_fr[AUDIT_TREE_DEPTH][AUDIT_HASH_LEN];
} audit_archhead;

/* head.json's text (untrusted) into h: every field, type and hex length checked, from and
 * to in 1..2^63 with from <= to = head.tree_size, base_frontier popcount(from - 1)
 * hashes. 0, or -1 with why. Whether the head's signature holds is the check's job. */
int audit_archhead_parse(const char *text, size_t len, audit_archhead *h, char *why,
                         size_t whylen);

typedef enum { AUDIT_AM_RECORDS, AUDIT_AM_HEAD, AUDIT_AM_CONTENT } audit_am_kind;

/* One MANIFEST line line[0..n), its newline left off (untrusted): 64 hex digits of
 * SHA-256, two spaces (or a space and '*', sha256sum's binary mark), then "records",
 * "head.json" or "contents/" and 64 lowercase hex digits. 0 with *kind, sha and (for a
 * content) hash filled; -1 with why. */
int audit_manifest_line(const char *line, size_t n, audit_am_kind *kind,
                        uint8_t sha[AUDIT_HASH_LEN], uint8_t hash[AUDIT_CONTENT_HASH_LEN],
                        char *why, size_t whylen);

/* "contents/" and hash's 64 lowercase hex digits into out (AUDIT_ARCHDIR_NAME_MAX bytes). */
void audit_archdir_content_name(const uint8_t hash[AUDIT_CONTENT_HASH_LEN],
                                char out[AUDIT_ARCHDIR_NAME_MAX]);

typedef struct audit_archcheck {
    audit_archhead h;        /* head.json, once it parsed */
    uint64_t records;        /* records that checked out */
    uint64_t contents;       /* contents that checked out */
    uint64_t bytes;          /* the records file's size */
    uint8_t manifest_sha[AUDIT_HASH_LEN];
    int have_head, have_manifest_sha;
    /* the first failed check, when one failed (NULL when the archive holds): "manifest",
     * "head", "key", "signature", "records", "chain", "tree" or "content" */
    const char *failed;
    char file[AUDIT_ARCHDIR_NAME_MAX]; /* the file at fault ("" for none) */
    uint64_t seq;                      /* the record concerned (0 for none) */
    int has_hash;                      /* hash: the content concerned */
    uint8_t hash[AUDIT_CONTENT_HASH_LEN];
} audit_archcheck;

/* The archive in directory dfd (borrowed, not closed), from its files alone: MANIFEST
 * read and parsed; head.json against its MANIFEST sum, its key against pin (may be NULL:
 * trust the key in the file), its signature; every record in order from base_chain and
 * base_frontier (decodes, seq, chain), the records file against its sum, the tree's root
 * against the signed head's; then each content: named by the MANIFEST exactly when a
 * record lists it, its file present, hashing (BLAKE2b-256) to its name and to its
 * MANIFEST sum. AOS_OK when every check holds (out->failed NULL); AOS_ERR_CONFLICT when
 * one fails: out->failed, file, seq and hash name it and why says what happened;
 * AOS_ERR_NOMEM without memory. */
aos_err audit_archdir_check(int dfd, const uint8_t *pin, audit_archcheck *out, char *why,
                            size_t whylen);

#endif
