/* The envelope codec: every message on every aos link is one protobuf Envelope.
 * Decoding validates everything a hostile peer controls before anyone reads a field. */
#ifndef AOS_ENVELOPE_H
#define AOS_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/err.h"

#define AOS_WIRE_VERSION 1u
#define AOS_MSG_MAX (4u << 20)   /* NNG_OPT_RECVMAXSZ on every socket */
#define AOS_ID_LEN 16            /* request id and trace id */
#define AOS_SPAN_LEN 8
#define AOS_METHOD_MAX 64
#define AOS_AGENT_ID_MAX 64
#define AOS_RUN_ID_MAX 64        /* same charset as an agent id */
#define AOS_ERRMSG_MAX 1024
#define AOS_KEY_HASH_LEN 32      /* an API key's BLAKE2b-256 (the front door's requests) */
/* The largest part of a streamed reply: a part travels in one envelope on the link and in
 * a chunk of several to the client, both under AOS_MSG_MAX. */
#define AOS_PART_MAX (1u << 20)
_Static_assert(AOS_PART_MAX + 64u * 1024u <= AOS_MSG_MAX, "a part and its envelope fit a message");

/* Envelope kinds; the values are those of aos.Kind on the wire. */
enum {
    AOS_KIND_REQUEST = 1,
    AOS_KIND_REPLY = 2,
    AOS_KIND_REPLY_PART = 3,
    AOS_KIND_CANCEL = 4,
    AOS_KIND_READY = 5,
    AOS_KIND_HEARTBEAT = 6,
    AOS_KIND_STOP = 7,
};

/* A decoded (or to-be-encoded) envelope. Text fields are NUL-terminated copies, checked
 * for UTF-8 and charset. payload points into decoder storage owned by the envelope:
 * release it with aos_env_clear(). For encoding, payload may point anywhere. */
typedef struct aos_env {
    int kind;
    uint8_t request_id[AOS_ID_LEN];
    uint8_t trace_id[AOS_ID_LEN];
    uint8_t span_id[AOS_SPAN_LEN];
    int has_request_id, has_trace;
    uint64_t deadline_ms;
    uint64_t link_id;
    int32_t status;
    uint32_t seq;   /* REPLY_PART: the part's index; REPLY: the number of parts before it */
    uint64_t retry_after_ms; /* an error reply's hint: a retry may succeed this much later */
    char method[AOS_METHOD_MAX + 1];
    char agent_id[AOS_AGENT_ID_MAX + 1];
    char run_id[AOS_RUN_ID_MAX + 1]; /* "" when the request belongs to no run */
    uint32_t step;
    uint8_t key_hash[AOS_KEY_HASH_LEN]; /* has_key_hash: aos-api's requests only */
    int has_key_hash;
    char error[AOS_ERRMSG_MAX + 1];
    const uint8_t *payload;
    size_t payload_len;
    void *pb_; /* private: the unpacked protobuf that payload points into */
} aos_env;

/* Zero an envelope for filling in by hand. */
void aos_env_init(aos_env *e, int kind);
/* Release decoder storage; the envelope is zeroed. Safe on an initialised envelope. */
void aos_env_clear(aos_env *e);

/* Decode and validate buf. On success *e owns decoder storage (aos_env_clear). On error
 * *e holds nothing and why (if not NULL) says what was wrong, for the error reply. */
aos_err aos_env_decode(const void *buf, size_t len, aos_env *e, char *why, size_t whylen);

/* Encode e into a new nng message; the caller owns *out. */
aos_err aos_env_encode(const aos_env *e, nng_msg **out);

/* Fill r as the reply (kind REPLY) to req: same request, link, trace ids and method.
 * The error text is formatted from fmt (may be NULL). */
void aos_env_reply_to(aos_env *r, const aos_env *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Checks that every string field of a decoded protobuf message, recursively, is valid
 * UTF-8: protobuf-c does not. Use it on every payload decoded from the wire. */
int aos_pb_strings_valid(const ProtobufCMessage *m);

/* Valid UTF-8 (no overlongs, no surrogates, no NUL) of exactly n bytes. */
int aos_utf8_valid(const void *s, size_t n);
/* A method name: [a-z0-9_.-]{1,64}, with at least one dot. */
int aos_method_valid(const char *s, size_t n);
/* An agent id: [A-Za-z0-9_.:-]{1,64}. */
int aos_agent_id_valid(const char *s, size_t n);

/* Milliseconds: wall clock (deadlines on the wire) and monotonic (local timers). */
uint64_t aos_now_ms(void);
uint64_t aos_mono_ms(void);
/* Fill a fresh random 16-byte id. */
void aos_id_random(uint8_t id[AOS_ID_LEN]);
/* Hex of n bytes into out (2n+1 bytes). */
void aos_hex(const uint8_t *b, size_t n, char *out);
/* Exactly 2n hex digits (either case) of s[0..slen) into out[0..n); -1 for any other
 * length or digit. */
int aos_unhex(const char *s, size_t slen, uint8_t *out, size_t n);

#endif
