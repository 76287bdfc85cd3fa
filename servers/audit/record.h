/* aos-audit's record: the one canonical binary encoding of an audit record (one encoder,
 * one decoder for untrusted bytes) and the hash chain that links each record to the last.
 *
 * Encoding, version 1. Every integer is big-endian and fixed width; a variable field is a
 * u32 length then that many bytes; nothing is optional, so each record has exactly one
 * encoding and decode(encode(r)) == r, encode(decode(b)) == b:
 *
 *   u8      version         = 1
 *   u64     seq             >= 1, the record's place in the log
 *   u64     time_ns         Unix time in nanoseconds
 *   var     kind            1..32 bytes of [a-z0-9._-]: "syscall", "llm.request", "gap", ...
 *   var     agent           0..64 bytes UTF-8
 *   var     run             0..64 bytes UTF-8 (the durable run id)
 *   u32     step
 *   u8[16]  trace_id
 *   u8[8]   span_id
 *   u8[8]   parent_span_id
 *   var     method          0..64 bytes UTF-8
 *   i32     status          two's complement
 *   u64     latency_us
 *   var     body            0..AUDIT_BODY_MAX bytes: canonical JSON of the details, or a
 *                           content hash of contents stored elsewhere
 *   u8[32]  prev_hash       chain hash of record seq-1; all zero for seq 1
 *
 * UTF-8 is checked with aos_utf8_valid (which refuses NUL). seq sits at offset 1 and
 * prev_hash in the last 32 bytes, so a verifier can patch either in place.
 *
 * The encoding is the leaf input of RFC 6962: leaf hash = SHA-256(0x00 || encoding).
 * The chain: chain_hash(seq) = SHA-256(0x02 || prev_hash || encoding). 0x02 keeps chain
 * hashes apart from Merkle leaves (0x00) and nodes (0x01). prev_hash is also inside the
 * encoding, so a record names its predecessor on its own and the chain hash covers it. */
#ifndef AUDIT_RECORD_H
#define AUDIT_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define AUDIT_REC_VERSION 1u
#define AUDIT_HASH_LEN 32u
#define AUDIT_TRACE_LEN 16u
#define AUDIT_SPAN_LEN 8u
#define AUDIT_KIND_MAX 32u
#define AUDIT_AGENT_MAX 64u
#define AUDIT_RUN_MAX 64u
#define AUDIT_METHOD_MAX 64u
#define AUDIT_BODY_MAX (1u << 20) /* big contents go elsewhere, by hash */
/* Fixed part: version, seq, time, step, ids, status, latency, prev, five lengths. */
#define AUDIT_REC_FIXED (1u + 8 + 8 + 4 + 16 + 8 + 8 + 4 + 8 + 32 + 5 * 4)
#define AUDIT_REC_MAX                                                                   \
    (AUDIT_REC_FIXED + AUDIT_KIND_MAX + AUDIT_AGENT_MAX + AUDIT_RUN_MAX +               \
     AUDIT_METHOD_MAX + AUDIT_BODY_MAX)
#define AUDIT_REC_SEQ_OFF 1u /* where seq sits in an encoding */

/* A record's fields. The pointers are borrowed: for encode they are the caller's; after
 * decode they point into the decoded buffer and live as long as it. Strings are not
 * NUL-terminated; a zero length may come with a NULL pointer. */
typedef struct audit_rec {
    uint64_t seq;
    uint64_t time_ns;
    const char *kind;
    size_t kind_len;
    const char *agent;
    size_t agent_len;
    const char *run;
    size_t run_len;
    uint32_t step;
    uint8_t trace_id[AUDIT_TRACE_LEN];
    uint8_t span_id[AUDIT_SPAN_LEN];
    uint8_t parent_span_id[AUDIT_SPAN_LEN];
    const char *method;
    size_t method_len;
    int32_t status;
    uint64_t latency_us;
    const uint8_t *body;
    size_t body_len;
    uint8_t prev_hash[AUDIT_HASH_LEN];
} audit_rec;

/* The encoded length of r (no checks; 0 when a field is over its cap). */
size_t audit_rec_encoded_len(const audit_rec *r);

/* Encode r into buf[0..cap). AOS_OK with *len set; AOS_ERR_USAGE for a field the decoder
 * would refuse (so nothing is ever written that cannot be read back); AOS_ERR_TOO_BIG
 * when cap is short. Nothing is allocated. */
aos_err audit_rec_encode(const audit_rec *r, uint8_t *buf, size_t cap, size_t *len,
                         char *why, size_t whylen);

/* Decode untrusted bytes: every length and cap checked, UTF-8 checked, trailing bytes
 * refused. AOS_ERR_PROTO (with why) for anything else than one exact encoding; r is then
 * undefined. On AOS_OK r's pointers point into buf (nothing is allocated or copied). */
aos_err audit_rec_decode(const uint8_t *buf, size_t len, audit_rec *r, char *why,
                         size_t whylen);

/* SHA-256(0x02 || prev || enc): the chain hash of the record whose encoding is enc. */
void audit_chain_hash(const uint8_t prev[AUDIT_HASH_LEN], const uint8_t *enc, size_t len,
                      uint8_t out[AUDIT_HASH_LEN]);

/* A kind as the encoding allows: [a-z0-9._-]{1,32}. */
int audit_kind_valid(const char *s, size_t n);

#endif
