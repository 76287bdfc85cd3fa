/* Audit proof files: what one holds in memory, and its JSON document both ways (version 1:
 * {version, seq, record (hex), path [hex], head {tree_size, time_ns, root, signature,
 * public_key}}), and the checks that make it a proof. */
#ifndef AOS_AUDIT_PROOFFILE_H
#define AOS_AUDIT_PROOFFILE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "merkle.h"

#define AUDIT_PROOF_FILE_VERSION 1

typedef struct audit_proof {
    uint64_t seq;
    uint8_t *rec; /* malloc'd; freed by proof_free */
    size_t rec_len;
    uint8_t path[AUDIT_PROOF_MAX][AUDIT_HASH_LEN];
    size_t n_path;
    audit_sth head;
    uint8_t pk[AUDIT_PK_LEN];
} audit_proof;

/* Frees what audit_proof_from_json malloc'd (the record); p stays valid to free again. */
void audit_proof_free(audit_proof *p);
/* A document into p (p->rec malloc'd, freed by audit_proof_free also on failure).
 * Untrusted: every field, type and hex length checked. -1 with why when it is not a
 * proof; whether it holds is audit_proof_check's job. */
int audit_proof_from_json(const json_t *d, audit_proof *p, char *why, size_t whylen);
/* The checks in order; the first that fails is named. NULL when the proof holds, else
 * the check's name ("record", "seq", "inclusion", "key", "signature") with why. pin (may
 * be NULL) is a public key kept elsewhere: the head must be signed by it. */
const char *audit_proof_check(const audit_proof *p, const uint8_t *pin, char *why,
                              size_t whylen);
/* The document of p (a new reference), NULL without memory. */
json_t *audit_proof_json(const audit_proof *p);
/* Hex of b as a JSON string; NULL without memory (json_pack then fails the document). */
json_t *audit_jhex(const uint8_t *b, size_t n);
/* A JSON integer in [min, INT64_MAX] under key of o into *out: 0, else -1. */
int audit_jget_u64(const json_t *o, const char *key, uint64_t min, uint64_t *out);
/* Exactly n bytes of hex under key of o into out: 0, else -1. */
int audit_jget_hex(const json_t *o, const char *key, uint8_t *out, size_t n);
/* A signed head and its key as JSON (tree_size, time_ns, root, signature, public_key). */
json_t *audit_head_json(const audit_sth *h, const uint8_t pk[AUDIT_PK_LEN]);

#endif
