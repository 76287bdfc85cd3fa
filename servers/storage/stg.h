/* aos-storage's internal interface: the per-call context every handler gets, the
 * configuration, validation of client input, and the database helpers the handlers share. */
#ifndef STG_H
#define STG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "aos/storage.h"
#include "db.h"
#include "serve.h"

/* The limits clients see (keys, names, pages, values, receipts) are libaos's, defined once
 * in aos/storage.h; below only what is the server's own. */
#define STG_VALUE_MAX_CEIL (3u << 20)  /* highest AOS_STORAGE_VALUE_MAX */
#define STG_PAGE_BYTES (2u << 20)  /* values carried by one list/read reply */
#define STG_TRIES_MAX 1000         /* deliveries of a queue message before "dead" */
#define STG_FP_LEN 32              /* a request's fingerprint: SHA-256 */
/* What a reply or request carries besides its value: the envelope, a key, names. */
#define STG_ENVELOPE_SLACK (64u << 10)
_Static_assert(AOS_VALUE_MAX_DEFAULT <= STG_VALUE_MAX_CEIL, "the default cap is allowed");
_Static_assert(STG_VALUE_MAX_CEIL + STG_ENVELOPE_SLACK <= AOS_MSG_MAX,
               "a value at the highest cap fits one message with its envelope");
_Static_assert(STG_PAGE_BYTES + (AOS_LIST_MAX + 1) * (AOS_KEY_MAX + 32) + STG_ENVELOPE_SLACK
                   <= AOS_MSG_MAX,
               "a full page of entries (keys, sizes, values up to the page cap) fits one message");
#define STG_BATCH_MAX 64           /* requests one group commit or pipeline carries */

typedef struct stg_cfg {
    size_t value_max;              /* AOS_STORAGE_VALUE_MAX */
    uint64_t blob_quota;           /* AOS_STORAGE_BLOB_QUOTA: bytes per agent */
    uint32_t max_tries;            /* AOS_STORAGE_MAX_TRIES: queue deliveries before dead */
    uint64_t idem_ttl_ms;          /* AOS_STORAGE_IDEM_TTL_MS: how long results are kept */
    unsigned workers;              /* AOS_STORAGE_WORKERS */
    unsigned get_leaders;          /* AOS_STORAGE_GET_LEADERS: kv.get groups running at
                                    * once; 0: no grouping, each worker reads alone */
} stg_cfg;

/* Read the configuration from the environment; why says which variable is wrong. */
aos_err stg_cfg_load(stg_cfg *cfg, char *why, size_t whylen);

typedef struct stg_batcher stg_batcher;   /* batch.c */
typedef struct stg_notify stg_notify;     /* notify.c */

/* The server's state, shared by the workers. */
typedef struct stg {
    stg_cfg cfg;
    stg_batcher *puts;             /* group commit of kv.put / kv.incr */
    stg_batcher *gets;             /* grouped kv.get; NULL: each worker reads alone */
    stg_notify *notify;            /* LISTEN connection for queue receivers; may be NULL */
    db_counts db;                                  /* calls, errors, reruns, waits */
    atomic_uint_fast64_t n_replays, n_batches, n_batched;
    atomic_uint_fast64_t n_groups, n_grouped;     /* kv.get statements, and gets they answered */
    atomic_uint_fast64_t last_sweep_ms;
    /* queue receivers waiting now, and how many may: each holds a worker, and a server
     * whose workers all wait cannot answer aosd's heartbeat */
    atomic_int waiting;
    int max_waiting;
} stg;

/* One request as a handler sees it. db is the worker's own live connection. */
typedef struct stg_call {
    stg *st;
    PGconn *db;
    const char *agent;             /* from the envelope (set by aosd); "" when none */
    const uint8_t *request_id;     /* 16 bytes, NULL when the envelope has none */
    uint64_t deadline_ms;          /* absolute epoch ms; 0: none */
    const char *op;                /* "kv.put" */
    const uint8_t *payload;
    size_t len;
    srv_reply *rep;
} stg_call;

typedef aos_err (*stg_fn)(stg_call *c);

/* ---- replies (util.c) ------------------------------------------------------------- */

/* Pack m as the reply payload; AOS_ERR_OK or NOMEM. */
aos_err stg_reply(stg_call *c, const ProtobufCMessage *m);
/* Set the reply's error text and return code. */
aos_err stg_fail(stg_call *c, aos_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Milliseconds left before the call's deadline (UINT32_MAX when none, 0 when past). */
uint32_t stg_left_ms(const stg_call *c);
/* AOS_ERR_TIMEOUT (with the reply's message) when the deadline has passed. */
aos_err stg_check_deadline(stg_call *c);
/* Refuse calls without an agent: all storage data belongs to an agent. */
aos_err stg_need_agent(stg_call *c);

/* Decode the payload as desc's message, and check its strings. NULL after stg_fail. */
void *stg_decode(stg_call *c, const ProtobufCMessageDescriptor *desc);
void stg_free(void *m);

/* ---- validation (valid.c); each writes a message naming `what` --------------------- */

/* 1..AOS_KEY_MAX bytes of UTF-8 without control characters; copied NUL-terminated into
 * out (AOS_KEY_MAX + 1 bytes). */
aos_err stg_valid_key(ProtobufCBinaryData b, const char *what, char *out, char *why,
                      size_t whylen);
/* [A-Za-z0-9_.:-]{1,AOS_NAME_MAX}; copied into out (AOS_NAME_MAX + 1). An empty b gives
 * dflt when dflt is not NULL. */
aos_err stg_valid_name(ProtobufCBinaryData b, const char *what, const char *dflt, char *out,
                       char *why, size_t whylen);
/* A JSON text: must_be_object 1 for documents and filters. scalars_only: every member of
 * the object must be a string, number, boolean or null. */
aos_err stg_valid_json(ProtobufCBinaryData b, const char *what, int must_be_object,
                       int scalars_only, char *why, size_t whylen);
/* An exact-length binary id (request ids, receipts, sha256). */
aos_err stg_valid_id(ProtobufCBinaryData b, size_t len, const char *what, char *why,
                     size_t whylen);
/* Page limits: 0 means dflt; above max is an error. */
aos_err stg_valid_limit(uint32_t v, uint32_t dflt, uint32_t max, const char *what,
                        uint32_t *out, char *why, size_t whylen);
/* The smallest byte string greater than every string starting with p (len n) into out;
 * returns its length, 0 when there is none (p empty or all 0xff). */
size_t stg_prefix_end(const uint8_t *p, size_t n, uint8_t *out);

/* ---- the database-call layer: servers/common/db.h (db_stmt, dp_*, db_exec, the
 * SQLSTATE table); below, its use with a call's reply ------------------------------- */

/* db_exec on the call's connection (util.c): on failure the call fails with the op's name
 * ("storage.<op>: ...") and *r is NULL; on success the caller owns *r and PQclears it. */
aos_err stg_exec(stg_call *c, const db_stmt *st, const db_params *p, PGresult **r);
/* stg_exec for a statement whose rows nobody reads. */
aos_err stg_exec_void(stg_call *c, const db_stmt *st, const db_params *p);
/* A timestamptz column (binary: microseconds since 2000-01-01) as epoch milliseconds,
 * rounded down; 0 when NULL. Cheaper than asking PostgreSQL for extract(epoch ...), whose
 * numeric expression costs more to set up on each execution than the lookup itself. */
int64_t stg_ts_ms(const PGresult *r, int row, int col);
/* stg_exec for one number: *v is the first column of the first row, 0 when there is no row
 * (a version lookup that finds nothing). */
aos_err stg_exec_i64(stg_call *c, const db_stmt *st, const db_params *p, int64_t *v);

/* ---- transactions with idempotency (tx.c) ------------------------------------------ */

/* The mutation inside stg_tx: runs in an open transaction on c->db, fills c->rep (an OK
 * reply payload, or an error via stg_fail) and returns the status. Only an OK outcome is
 * recorded and committed; anything else rolls back, so a retry may run it again. */
typedef aos_err (*stg_tx_fn)(stg_call *c, void *arg);

/* Run fn as one transaction, idempotent by the call's request id: a request seen before
 * gets its recorded reply and fn does not run. The deadline becomes statement_timeout.
 * Acknowledges (returns OK) only after COMMIT succeeded. */
aos_err stg_tx(stg_call *c, stg_tx_fn fn, void *arg);
/* A read-only transaction with the deadline as statement_timeout (for heavier reads). */
aos_err stg_read_tx(stg_call *c, stg_tx_fn fn, void *arg);

/* The fingerprint of a request: SHA-256 of op, a NUL and the payload. */
void stg_fingerprint(const stg_call *c, uint8_t out[STG_FP_LEN]);

/* Expired keys, old idempotency records and abandoned uploads, at most once per 10 s. */
void stg_sweep(stg_call *c);

#endif
