/* libaos storage: an agent's durable state through aos-storage (key/value, documents,
 * blobs, checkpoints, step log, queues and mail). One function per operation.
 *
 * Conventions for every function here:
 * - c and o are as for aos_call (o may be NULL). o->agent_id names the acting agent on the
 *   control socket (aosctl); an agent's own connection acts for that agent only.
 * - Mutations are idempotent by o->request_id: to retry after UNAVAILABLE or TIMEOUT
 *   without applying twice, call again with the same 16-byte id (NULL: a fresh one).
 * - The return value is the outcome; on failure `why` (may be NULL) gets the message.
 * - Out-parameters may be NULL when not wanted. Returned buffers and lists are malloc'd and
 *   owned by the caller: plain buffers go to free(), lists to their aos_*_free function.
 *   Returned byte buffers carry one extra NUL byte past their length, so text can be
 *   printed as is.
 * - Text arguments (keys, names, JSON) are NUL-terminated UTF-8; the server validates. */
#ifndef AOS_STORAGE_H
#define AOS_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "aos/aos.h"

/* The limits of storage, here once: libaos checks arguments against them before a call,
 * and aos-storage validates requests against the same definitions. */
#define AOS_KEY_MAX 512           /* bytes of a key or document id */
#define AOS_NAME_MAX 128          /* collections, queues, runs, checkpoint names */
#define AOS_SHA256_LEN 32         /* a blob's address */
#define AOS_RECEIPT_LEN 16        /* a queue delivery's receipt (a uuid) */
#define AOS_VALUE_MAX_DEFAULT (1u << 20)   /* the value cap unless AOS_STORAGE_VALUE_MAX */
#define AOS_LIST_DEFAULT 100      /* a page when limit is 0 */
#define AOS_LIST_MAX 1000         /* the largest page a limit may ask for */
#define AOS_QUEUE_RECV_MAX 100    /* messages one aos_queue_recv may take */

/* ---- key/value ----------------------------------------------------------------------- */

typedef struct aos_kv_put_opts {
    int cas;                  /* apply only when the key is at version if_version */
    uint64_t if_version;      /* with cas: 0 = the key must not exist */
    uint64_t ttl_ms;          /* 0: no expiry */
} aos_kv_put_opts;

/* Store value (len bytes, at most the server's cap, 1 MiB by default) under key.
 * *version: the key's new version (1 for a new key). CONFLICT when cas does not hold. */
aos_err aos_kv_put(aos_conn *c, const aos_call_opts *o, const char *key, const void *value,
                   size_t len, const aos_kv_put_opts *po, uint64_t *version, char *why,
                   size_t whylen);
/* The value of key: *value malloc'd (caller frees), *len its length. NOT_FOUND if absent
 * or expired. */
aos_err aos_kv_get(aos_conn *c, const aos_call_opts *o, const char *key, uint8_t **value,
                   size_t *len, uint64_t *version, char *why, size_t whylen);

typedef struct aos_kv_entry {
    char *key;
    uint64_t version, size, expires_at_ms;   /* expires_at_ms 0: never */
    uint8_t *value;                          /* NULL unless asked for */
    size_t value_len;
} aos_kv_entry;

typedef struct aos_kv_page {
    aos_kv_entry *entries;
    size_t n;
    char *next;                              /* pass as `after` for the next page; NULL: done */
} aos_kv_page;

/* One page of keys starting with prefix (NULL or "": all), after `after` (NULL: from the
 * start), at most limit (0: AOS_LIST_DEFAULT, max AOS_LIST_MAX), with their values if
 * values != 0. Caller owns
 * *out: aos_kv_page_free. */
aos_err aos_kv_list(aos_conn *c, const aos_call_opts *o, const char *prefix, const char *after,
                    uint32_t limit, int values, aos_kv_page **out, char *why, size_t whylen);
void aos_kv_page_free(aos_kv_page *l);

/* Delete key; if_version (may be NULL) makes it a compare-and-delete. NOT_FOUND if absent. */
aos_err aos_kv_delete(aos_conn *c, const aos_call_opts *o, const char *key,
                      const uint64_t *if_version, char *why, size_t whylen);
/* Add delta to the decimal integer stored at key (absent: 0); *value gets the result. */
aos_err aos_kv_incr(aos_conn *c, const aos_call_opts *o, const char *key, int64_t delta,
                    int64_t *value, char *why, size_t whylen);

/* ---- documents -------------------------------------------------------------------------- */

/* Store a JSON object as document id of collection; if_version (may be NULL): CAS as in
 * aos_kv_put (0: must not exist). Invalid JSON is refused (USAGE) with the parser's words. */
aos_err aos_doc_put(aos_conn *c, const aos_call_opts *o, const char *collection, const char *id,
                    const char *json, const uint64_t *if_version, uint64_t *version, char *why,
                    size_t whylen);
/* *json malloc'd, NUL-terminated (PostgreSQL's normal form of the document). */
aos_err aos_doc_get(aos_conn *c, const aos_call_opts *o, const char *collection, const char *id,
                    char **json, uint64_t *version, char *why, size_t whylen);

typedef struct aos_doc {
    char *id;
    char *json;
    uint64_t version;
} aos_doc;

typedef struct aos_doc_page {
    aos_doc *docs;
    size_t n;
    char *next;                              /* NULL: no more pages */
} aos_doc_page;

/* Documents whose top-level fields equal each member of filter (a JSON object of scalars;
 * NULL or "": all), in id order, one page. Caller owns *out: aos_doc_page_free. */
aos_err aos_doc_query(aos_conn *c, const aos_call_opts *o, const char *collection,
                      const char *filter, const char *after, uint32_t limit, aos_doc_page **out,
                      char *why, size_t whylen);
void aos_doc_page_free(aos_doc_page *l);
aos_err aos_doc_delete(aos_conn *c, const aos_call_opts *o, const char *collection,
                       const char *id, char *why, size_t whylen);

/* ---- blobs ----------------------------------------------------------------------------- */

/* Upload data (in chunks of at most 256 KiB) and seal it: sha256 gets its address. QUOTA
 * when the agent's blobs would pass its quota. A failed upload is abandoned (the server
 * drops it after a day); retry the whole call. */
aos_err aos_blob_put(aos_conn *c, const aos_call_opts *o, const void *data, size_t len,
                     uint8_t sha256[AOS_SHA256_LEN], char *why, size_t whylen);
/* Read len bytes (0: to the end, at most max_len; a whole blob larger than max_len is
 * TOO_BIG) from offset. *data malloc'd; *size the blob's whole size. */
aos_err aos_blob_get(aos_conn *c, const aos_call_opts *o, const uint8_t sha256[AOS_SHA256_LEN],
                     uint64_t offset, size_t len, size_t max_len, uint8_t **data, size_t *got,
                     uint64_t *size, char *why, size_t whylen);
aos_err aos_blob_delete(aos_conn *c, const aos_call_opts *o,
                        const uint8_t sha256[AOS_SHA256_LEN], char *why, size_t whylen);

/* ---- checkpoints --------------------------------------------------------------------------- */

typedef struct aos_ckpt_info {
    char *name;
    uint64_t version, size, created_ms;
    char *meta;                              /* JSON text, or NULL */
} aos_ckpt_info;

typedef struct aos_ckpt_page {
    aos_ckpt_info *items;
    size_t n;
} aos_ckpt_page;

/* Save a new version of checkpoint name (NULL: "default") with optional JSON meta. */
aos_err aos_ckpt_save(aos_conn *c, const aos_call_opts *o, const char *name, const void *data,
                      size_t len, const char *meta, uint64_t *version, char *why, size_t whylen);
/* Load version (0: the latest). *data malloc'd; info (may be NULL) filled, its strings
 * malloc'd: aos_ckpt_info_clear. */
aos_err aos_ckpt_load(aos_conn *c, const aos_call_opts *o, const char *name, uint64_t version,
                      uint8_t **data, size_t *len, aos_ckpt_info *info, char *why,
                      size_t whylen);
/* Checkpoints of name (NULL: every name), newest first, at most limit (0: AOS_LIST_DEFAULT). */
aos_err aos_ckpt_list(aos_conn *c, const aos_call_opts *o, const char *name, uint32_t limit,
                      aos_ckpt_page **out, char *why, size_t whylen);
/* Keep the newest `keep` (>= 1) versions of name; *deleted counts the others removed. */
aos_err aos_ckpt_prune(aos_conn *c, const aos_call_opts *o, const char *name, uint32_t keep,
                       uint64_t *deleted, char *why, size_t whylen);
void aos_ckpt_info_clear(aos_ckpt_info *i);
void aos_ckpt_page_free(aos_ckpt_page *l);

/* ---- step log ------------------------------------------------------------------------------ */

/* Append step (1, 2, ... no gaps) of run. The same step again with the same kind and data
 * is success with *existed = 1 (a replay); different content is CONFLICT. */
aos_err aos_step_append(aos_conn *c, const aos_call_opts *o, const char *run, uint64_t step,
                        const char *kind, const void *data, size_t len, int *existed, char *why,
                        size_t whylen);

typedef struct aos_step {
    uint64_t step, created_ms;
    char *kind;
    uint8_t *data;
    size_t len;
} aos_step;

typedef struct aos_step_page {
    aos_step *steps;
    size_t n;
    uint64_t last_step;                      /* the run's last step, 0: none */
} aos_step_page;

/* Steps of run from from_step on, at most limit (0: AOS_LIST_DEFAULT). */
aos_err aos_step_read(aos_conn *c, const aos_call_opts *o, const char *run, uint64_t from_step,
                      uint32_t limit, aos_step_page **out, char *why, size_t whylen);
void aos_step_page_free(aos_step_page *l);
/* Remove every step of run (retention of finished runs); *deleted (may be NULL) counts
 * them. A run without steps is no error. */
aos_err aos_step_drop(aos_conn *c, const aos_call_opts *o, const char *run, uint64_t *deleted,
                      char *why, size_t whylen);

/* ---- queues and mail -------------------------------------------------------------------- */

typedef struct aos_queue_send_opts {
    uint64_t delay_ms;        /* invisible this long first */
    uint32_t max_tries;       /* deliveries before "<queue>.dead"; 0: the server's (5) */
    const char *to_agent;     /* mail: another agent's queue "inbox" */
} aos_queue_send_opts;

aos_err aos_queue_send(aos_conn *c, const aos_call_opts *o, const char *queue, const void *body,
                       size_t len, const aos_queue_send_opts *so, uint64_t *id, char *why,
                       size_t whylen);

typedef struct aos_queue_msg {
    uint64_t id, enqueued_ms;
    uint32_t tries;
    uint8_t receipt[AOS_RECEIPT_LEN];
    uint8_t *body;
    size_t len;
    char *from_agent;                        /* NULL unless mail */
} aos_queue_msg;

typedef struct aos_queue_msgs {
    aos_queue_msg *msgs;
    size_t n;
} aos_queue_msgs;

/* Receive up to max (0: 1; at most AOS_QUEUE_RECV_MAX) messages, hidden for visibility_ms (0: 30 s) until acked;
 * wait_ms > 0 waits that long for one to arrive (woken by NOTIFY, not polling). An empty
 * *out (n = 0) means nothing came. Caller owns *out: aos_queue_msgs_free. */
aos_err aos_queue_recv(aos_conn *c, const aos_call_opts *o, const char *queue, uint32_t max,
                       uint32_t visibility_ms, uint32_t wait_ms, aos_queue_msgs **out, char *why,
                       size_t whylen);
void aos_queue_msgs_free(aos_queue_msgs *m);
/* Done with a message. NOT_FOUND when the receipt is no longer its current delivery. */
aos_err aos_queue_ack(aos_conn *c, const aos_call_opts *o, const char *queue, uint64_t id,
                      const uint8_t receipt[AOS_RECEIPT_LEN], char *why, size_t whylen);
/* Give it back (visible again after delay_ms); *dead = 1 when it was its last try. */
aos_err aos_queue_nack(aos_conn *c, const aos_call_opts *o, const char *queue, uint64_t id,
                       const uint8_t receipt[AOS_RECEIPT_LEN], uint32_t delay_ms, int *dead,
                       char *why, size_t whylen);

typedef struct aos_queue_info {
    char *queue;
    uint64_t ready, inflight, delayed;
} aos_queue_info;

typedef struct aos_queue_infos {
    aos_queue_info *queues;
    size_t n;
} aos_queue_infos;

aos_err aos_queue_list(aos_conn *c, const aos_call_opts *o, aos_queue_infos **out,
                           char *why, size_t whylen);
void aos_queue_infos_free(aos_queue_infos *l);

#endif
