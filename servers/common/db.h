/* The database-call layer every aos server shares: binary parameters and results,
 * statements prepared lazily per connection, the one SQLSTATE -> aos_err table, and
 * "run this transaction again until the database is back or the deadline is near".
 *
 * Errors carry a retry verdict beside their aos_err: whether the attempt failed because
 * the database went away (wait for it, then run the whole transaction again), because it
 * lost a race it may win next time (run again now), or for good (answer). Handlers return
 * only an aos_err, so the verdict of the failures on a thread is kept on that thread
 * (db_retry_take), the way errno is: db_run reads it after each attempt. */
#ifndef AOS_DB_H
#define AOS_DB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "aos/err.h"
#include "pg.h"
#include "serve.h"

#define DB_MAX_PARAMS 28

/* A prepared statement: prepared lazily on each connection that first runs it. */
typedef struct db_stmt {
    const char *name;              /* "stg_kv_get": unique in the process */
    const char *sql;
    int nparams;
} db_stmt;

/* Parameters of one execution. Values are borrowed: they must outlive the call. */
typedef struct db_params {
    int n;
    const char *v[DB_MAX_PARAMS];
    int len[DB_MAX_PARAMS];
    int fmt[DB_MAX_PARAMS];
    char num[DB_MAX_PARAMS][8];
} db_params;

void dp_init(db_params *p);
void dp_text(db_params *p, const char *s);                 /* NUL-terminated text */
void dp_bytes(db_params *p, const void *b, size_t n);      /* bytea, or text as raw UTF-8 */
void dp_i64(db_params *p, int64_t v);                      /* $n must be bigint */
void dp_i32(db_params *p, int32_t v);                      /* $n must be integer */
void dp_bool(db_params *p, int v);                         /* $n must be boolean */
void dp_null(db_params *p);

/* A one-dimensional binary array parameter (array_recv's form: dimensions, has-NULL flag,
 * element type, size and lower bound, then each element as its length, -1 for NULL, and
 * its bytes), built element by element. The buffer is the builder's: it is kept across
 * dba_start for reuse, and freed by dba_free. Element OIDs: 17 bytea, 20 bigint,
 * 23 integer, 25 text (raw UTF-8). */
typedef struct db_array {
    uint8_t *b;
    size_t len, cap;
    uint32_t n;
    int nulls;
} db_array;

void dba_start(db_array *a, uint32_t elem_oid);
/* -1: out of memory (the array is then unusable until the next dba_start) */
int dba_add(db_array *a, const void *v, size_t n);
int dba_i64(db_array *a, int64_t v);
int dba_null(db_array *a);
/* The finished array (n and the NULL flag filled in), valid until the next change. */
const uint8_t *dba_done(db_array *a, size_t *len);
void dba_free(db_array *a);

/* Make sure st is prepared on c (tracked per connection and thread). */
aos_err db_prepare(PGconn *c, const db_stmt *st, char *why, size_t whylen);
/* Run st with binary results. On success *out holds the result (the caller PQclears it):
 * TUPLES_OK or COMMAND_OK. On failure the mapped error (db_error) and NULL. */
aos_err db_exec(PGconn *c, const db_stmt *st, const db_params *p, PGresult **out, char *why,
                size_t whylen);
/* Run a fixed command (BEGIN, COMMIT, SET LOCAL ...); rows it returns are dropped. */
aos_err db_cmd(PGconn *c, const char *sql, char *why, size_t whylen);

/* What a failed attempt means for running it again, from the least to the most hopeful. */
typedef enum db_retry {
    DB_FINAL = 0,     /* answer with the error */
    DB_AGAIN = 1,     /* a race lost (serialization, deadlock): run the transaction again */
    DB_WAIT = 2,      /* the database went away: wait until it is back, then run again */
} db_retry;

/* The one SQLSTATE table (db.c): the aos_err, the retry verdict and a few words for the
 * message. state may be NULL or "" (no SQLSTATE: INTERNAL, final). */
aos_err db_state_map(const char *state, db_retry *retry, const char **what);
/* Map a failed result (or a broken connection, or r NULL) to an aos_err and "<what>:
 * <server's message> (SQLSTATE x)" in why; notes the verdict on this thread. */
aos_err db_error(PGconn *c, const PGresult *r, char *why, size_t whylen);
/* Note a verdict on this thread (the strongest one noted since the last take wins): for
 * failures found without a result, or decided on another thread on this one's behalf. */
void db_retry_note(db_retry r);
/* The verdict noted on this thread since the last take, and forget it. */
db_retry db_retry_take(void);

/* Binary result columns. */
int64_t db_i64(const PGresult *r, int row, int col);
int32_t db_i32(const PGresult *r, int row, int col);
int db_bool(const PGresult *r, int row, int col);
const uint8_t *db_bytes(const PGresult *r, int row, int col, size_t *len);
/* A jsonb column in binary format: skips its version byte. */
const uint8_t *db_jsonb(const PGresult *r, int row, int col, size_t *len);

/* ---- a transaction that outlives a database restart -------------------------------- */

/* One attempt: runs the whole transaction on c (BEGIN ... COMMIT, with its idempotency
 * record when it changes data) and fills rep. Called again from the start after a
 * failure the verdict says to retry, with rep emptied, so it must be safe to repeat: a
 * read, or a mutation whose request id makes a second run answer the first's record. */
typedef aos_err (*db_attempt_fn)(PGconn *c, void *arg, srv_reply *rep);

/* What db_run did, for a server's stats. */
typedef struct db_run_info {
    unsigned attempts;             /* runs of fn */
    uint64_t waited_ms;            /* time spent waiting for the database to come back */
} db_run_info;

/* Without a deadline a request waits at most this long for the database. */
#define DB_WAIT_NO_DEADLINE_MS 10000u
/* A request gives up this long before its deadline (10% of its budget when that is
 * shorter), so that the answer still reaches the caller in time. */
#define DB_MARGIN_MAX_MS 200u

/* Run fn on the calling worker's connection pg until it succeeds or fails for good. A
 * request that finds the database away waits for it (reconnecting with 20 ms doubling to
 * 200 ms); an attempt that fails because the database went away (DB_WAIT) is run again
 * once it is back, a lost race (DB_AGAIN) at once. Gives up at deadline_ms (absolute epoch
 * ms, 0: none) minus the margin with AOS_ERR_UNAVAILABLE and "<what>: the database was
 * unavailable for N ms ..." in rep. fn's own errors are returned as they are. Never
 * turns a failure into success: only fn's own OK is OK. info may be NULL. */
aos_err db_run(srv_pg *pg, uint64_t deadline_ms, const char *what, srv_reply *rep,
               db_attempt_fn fn, void *arg, db_run_info *info);

/* A server's figures of db_serve, for its stats. */
typedef struct db_counts {
    atomic_uint_fast64_t calls, errors, reruns, waited_ms;
} db_counts;

/* A method's whole database part, on the calling worker's connection: UNAVAILABLE
 * ("<what>: no database connection") without one, else db_run; counted in n. */
aos_err db_serve(srv *s, uint64_t deadline_ms, const char *what, srv_reply *rep,
                 db_attempt_fn fn, void *arg, db_counts *n);

#endif
