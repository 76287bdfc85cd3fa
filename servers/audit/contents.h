/* aos-audit's contents: large bodies (messages, replies, argv, output heads) stored once in
 * audit.contents, named by their BLAKE2b-256, and the list by which an event's body names them.
 *
 * A content's address is BLAKE2b-256 of its bytes (unkeyed, libsodium's crypto_generichash
 * at 32 bytes): the digest the servers' details already carried ("blake2b" fields), so a
 * detail's digest is the key of its content. An event that stores contents lists their
 * hashes in its body's top-level "contents" member, an array of 64 lowercase hex digits
 * each, in the order sent; the body is inside the chained record, so the chain covers the
 * list and the list covers each content. A digest named elsewhere in a body but not in its
 * "contents" was not stored (over a cap below): a reader says "not stored", never
 * "missing".
 *
 * Caps (checked by aos-audit on emit, respected by srv_emit_contents):
 * - AUDIT_CONTENT_MAX: one content, 1 MiB (a record's body cap; a bigger one keeps only its
 *   digest).
 * - AUDIT_CONTENTS_EMIT_MAX / _BYTES: 256 contents and 2 MiB in one emit, so an emit with
 *   its events stays under AOS_MSG_MAX (4 MiB) and a group commit a few MB. */
#ifndef AUDIT_CONTENTS_H
#define AUDIT_CONTENTS_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define AUDIT_CONTENT_HASH_LEN 32u
#define AUDIT_CONTENT_MAX (1u << 20)
#define AUDIT_CONTENTS_EMIT_MAX 256u
#define AUDIT_CONTENTS_EMIT_BYTES (2u << 20)
/* hashes named by one body's "contents" (AUDIT_CONTENTS_EMIT_MAX: one emit's worth) */
#define AUDIT_CONTENTS_LIST_MAX AUDIT_CONTENTS_EMIT_MAX

/* BLAKE2b-256 of b[0..n). */
void audit_content_hash(const void *b, size_t n, uint8_t out[AUDIT_CONTENT_HASH_LEN]);

/* The hashes a body lists in its top-level "contents" array (untrusted bytes: a body that
 * is not a JSON object, has no "contents", or whose list is not an array of 64-hex strings
 * lists none). Up to max hashes into out; returns how many the list has (more than max:
 * only the first max were written), 0 for none; -1 for a list that is malformed (not an
 * array, an element that is not 64 hex digits, more than AUDIT_CONTENTS_LIST_MAX). Nothing
 * is kept: out is the caller's. */
int audit_contents_listed(const uint8_t *body, size_t len,
                          uint8_t (*out)[AUDIT_CONTENT_HASH_LEN], size_t max);

/* 1 when hash h is among list[0..n). */
int audit_contents_has(const uint8_t (*list)[AUDIT_CONTENT_HASH_LEN], size_t n,
                       const uint8_t h[AUDIT_CONTENT_HASH_LEN]);

#endif
