/* The database-call layer servers share (see db.h): parameters, lazily prepared
 * statements, the one SQLSTATE table, and db_run's retry until the deadline is near. */
#include "db.h"

#include <arpa/inet.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/envelope.h"
#include "aos/log.h"

void dp_init(db_params *p)
{
    memset(p, 0, sizeof *p);
}

static int dp_slot(db_params *p)
{
    /* Overflowing the table is a programming error, caught by the unit tests. */
    if (p->n >= DB_MAX_PARAMS)
        __builtin_trap();
    return p->n++;
}

static void be32_at(uint8_t *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static int dba_grow(db_array *a, size_t more)
{
    if (!a->b) /* a failed grow left no buffer: refuse until the next start */
        return -1;
    if (a->len + more <= a->cap)
        return 0;
    size_t cap = a->cap * 2;
    while (cap < a->len + more)
        cap *= 2;
    uint8_t *b = realloc(a->b, cap);
    if (!b) {
        free(a->b);
        a->b = NULL;
        a->cap = a->len = 0;
        return -1;
    }
    a->b = b;
    a->cap = cap;
    return 0;
}

void dba_start(db_array *a, uint32_t elem_oid)
{
    if (!a->b) {
        a->cap = 256;
        a->b = malloc(a->cap);
        if (!a->b)
            a->cap = 0;
    }
    a->len = 0;
    a->n = 0;
    a->nulls = 0;
    if (a->b) {
        be32_at(a->b, 1);
        be32_at(a->b + 4, 0);
        be32_at(a->b + 8, elem_oid);
        be32_at(a->b + 12, 0);
        be32_at(a->b + 16, 1);
        a->len = 20;
    }
}

int dba_add(db_array *a, const void *v, size_t n)
{
    if (n > INT32_MAX || dba_grow(a, 4 + n))
        return -1;
    be32_at(a->b + a->len, (uint32_t)n);
    if (n) /* an empty element's bytes may be NULL */
        memcpy(a->b + a->len + 4, v, n);
    a->len += 4 + n;
    a->n++;
    return 0;
}

int dba_i64(db_array *a, int64_t v)
{
    uint64_t be = htobe64((uint64_t)v);
    return dba_add(a, &be, 8);
}

int dba_null(db_array *a)
{
    if (dba_grow(a, 4))
        return -1;
    be32_at(a->b + a->len, UINT32_MAX); /* -1 */
    a->len += 4;
    a->n++;
    a->nulls = 1;
    return 0;
}

const uint8_t *dba_done(db_array *a, size_t *len)
{
    if (!a->b)
        return NULL;
    be32_at(a->b + 4, (uint32_t)a->nulls);
    be32_at(a->b + 12, a->n);
    if (!a->n) { /* no dimension at all: array_recv's empty array */
        be32_at(a->b, 0);
        *len = 12;
        return a->b;
    }
    be32_at(a->b, 1);
    *len = a->len;
    return a->b;
}

void dba_free(db_array *a)
{
    free(a->b);
    memset(a, 0, sizeof *a);
}

void dp_text(db_params *p, const char *s)
{
    int i = dp_slot(p);
    p->v[i] = s;
    p->len[i] = 0;
    p->fmt[i] = 0;
}

void dp_bytes(db_params *p, const void *b, size_t n)
{
    int i = dp_slot(p);
    /* A zero-length binary value must still be non-NULL, or libpq sends SQL NULL. */
    p->v[i] = n ? (const char *)b : "";
    p->len[i] = (int)n;
    p->fmt[i] = 1;
}

void dp_i64(db_params *p, int64_t v)
{
    int i = dp_slot(p);
    uint64_t be = htobe64((uint64_t)v);
    memcpy(p->num[i], &be, 8);
    p->v[i] = p->num[i];
    p->len[i] = 8;
    p->fmt[i] = 1;
}

void dp_i32(db_params *p, int32_t v)
{
    int i = dp_slot(p);
    uint32_t be = htonl((uint32_t)v);
    memcpy(p->num[i], &be, 4);
    p->v[i] = p->num[i];
    p->len[i] = 4;
    p->fmt[i] = 1;
}

void dp_bool(db_params *p, int v)
{
    int i = dp_slot(p);
    p->num[i][0] = v ? 1 : 0;
    p->v[i] = p->num[i];
    p->len[i] = 1;
    p->fmt[i] = 1;
}

void dp_null(db_params *p)
{
    int i = dp_slot(p);
    p->v[i] = NULL;
    p->len[i] = 0;
    p->fmt[i] = 1;
}

/* ---- the SQLSTATE table --------------------------------------------------------------- */

/* Exact codes first, then whole classes (two characters); the first match wins. The
 * reason for each row is the question a caller asks: may I retry, and who must act? */
static const struct {
    const char *state;
    aos_err err;
    db_retry retry;
    const char *what;
} db_states[] = {
    /* Our own statement_timeout, set from the request's deadline: the caller's time is up. */
    {"57014", AOS_ERR_TIMEOUT, DB_FINAL, "deadline reached in the database"},
    /* The server is shutting down, crashed, or still starting: it will be back, and the
     * transaction did not commit. Wait for it. 57P05: our idle session was closed. */
    {"57P01", AOS_ERR_UNAVAILABLE, DB_WAIT, "database shutting down"},
    {"57P02", AOS_ERR_UNAVAILABLE, DB_WAIT, "database crashed"},
    {"57P03", AOS_ERR_UNAVAILABLE, DB_WAIT, "database starting up"},
    {"57P05", AOS_ERR_UNAVAILABLE, DB_WAIT, "database session closed"},
    /* Our database was dropped: nothing comes back by waiting; an operator must act. */
    {"57P04", AOS_ERR_UNAVAILABLE, DB_FINAL, "database dropped"},
    /* Lost a race with another transaction; it rolled back whole, so running it again is
     * safe and usually wins. The caller never needs to see these. */
    {"40001", AOS_ERR_UNAVAILABLE, DB_AGAIN, "serialization failure"},
    {"40P01", AOS_ERR_UNAVAILABLE, DB_AGAIN, "deadlock"},
    {"55P03", AOS_ERR_UNAVAILABLE, DB_AGAIN, "lock not available"},
    /* Too many connections: a connection-time condition that passes as others close. */
    {"53300", AOS_ERR_UNAVAILABLE, DB_WAIT, "too many database connections"},
    /* The request's data against the schema's rules. A duplicate key is the one the
     * caller can act on (another value, or read what is there). */
    {"23505", AOS_ERR_CONFLICT, DB_FINAL, "conflict"},
    {"23P01", AOS_ERR_CONFLICT, DB_FINAL, "conflict"},
    {"23503", AOS_ERR_CONFLICT, DB_FINAL, "conflict with a related row"},
    {"40002", AOS_ERR_CONFLICT, DB_FINAL, "conflict at commit"},
    /* The role lacks a grant: a deployment fault the request cannot fix; retrying is
     * pointless. REFUSED says "not allowed", which is what it is. */
    {"42501", AOS_ERR_REFUSED, DB_FINAL, "permission denied in the database"},
    /* Corrupted pages on disk: the database host's storage, like class 58. */
    {"XX001", AOS_ERR_IO, DB_FINAL, "database data corrupted"},
    {"XX002", AOS_ERR_IO, DB_FINAL, "database index corrupted"},
    /* Whole classes. */
    {"08", AOS_ERR_UNAVAILABLE, DB_WAIT, "database connection lost"},
    {"22", AOS_ERR_USAGE, DB_FINAL, "invalid data"},
    {"23", AOS_ERR_USAGE, DB_FINAL, "data breaks a rule of the schema"},
    {"28", AOS_ERR_REFUSED, DB_FINAL, "database login refused"},
    {"40", AOS_ERR_UNAVAILABLE, DB_AGAIN, "transaction rolled back"},
    /* Disk full, out of memory, a configured limit: retry later, but not inside the
     * request: these pass on an operator's or another workload's time, not in 200 ms,
     * and a worker held in a loop would only add to the load. */
    {"53", AOS_ERR_UNAVAILABLE, DB_FINAL, "database out of resources"},
    {"54", AOS_ERR_TOO_BIG, DB_FINAL, "too large for the database"},
    /* System errors (58000, 58030 io_error, 58P01 undefined file): the database host's
     * files failed under it. IO, not INTERNAL: nothing in our SQL is wrong, and the
     * caller should hear that storage failed; not UNAVAILABLE: retrying does not help
     * until someone repairs the host, and clients loop on UNAVAILABLE. */
    {"58", AOS_ERR_IO, DB_FINAL, "database system error"},
    /* Syntax, undefined objects, a raised exception: a bug in our SQL or a migration that
     * did not run. */
    {"42", AOS_ERR_INTERNAL, DB_FINAL, "database error"},
    {"XX", AOS_ERR_INTERNAL, DB_FINAL, "database internal error"},
};

aos_err db_state_map(const char *state, db_retry *retry, const char **what)
{
    *retry = DB_FINAL;
    *what = "database error";
    if (!state || strlen(state) != 5)
        return AOS_ERR_INTERNAL;
    for (size_t i = 0; i < sizeof db_states / sizeof db_states[0]; i++) {
        size_t n = strlen(db_states[i].state);
        if (!strncmp(state, db_states[i].state, n)) {
            *retry = db_states[i].retry;
            *what = db_states[i].what;
            return db_states[i].err;
        }
    }
    return AOS_ERR_INTERNAL;
}

static _Thread_local db_retry tl_retry;

void db_retry_note(db_retry r)
{
    if (r > tl_retry)
        tl_retry = r;
}

db_retry db_retry_take(void)
{
    db_retry r = tl_retry;
    tl_retry = DB_FINAL;
    return r;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
        s[--n] = 0;
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

aos_err db_error(PGconn *c, const PGresult *r, char *why, size_t whylen)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    /* A connection that broke ("server closed the connection unexpectedly", EOF after a
     * kill -9) gives a result without SQLSTATE, or none: the database went away. A
     * SQLSTATE the server sent on its way out (57P01) says more and is kept. */
    if (!state && (!r || PQstatus(c) == CONNECTION_BAD)) {
        snprintf(why, whylen, "database connection lost: %s", PQerrorMessage(c));
        trim(why);
        db_retry_note(DB_WAIT);
        return AOS_ERR_UNAVAILABLE;
    }
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = PQresultErrorMessage(r);
    db_retry retry;
    const char *what;
    aos_err e = db_state_map(state, &retry, &what);
    /* Whatever the server said, a connection that is now gone must be waited for. */
    if (PQstatus(c) == CONNECTION_BAD && e == AOS_ERR_INTERNAL) {
        e = AOS_ERR_UNAVAILABLE;
        retry = DB_WAIT;
    }
    db_retry_note(retry);
    snprintf(why, whylen, "%s: %s%s%s%s", what, msg, state ? " (SQLSTATE " : "",
             state ? state : "", state ? ")" : "");
    trim(why);
    return e;
}

/* ---- statements ------------------------------------------------------------------------ */

/* Which statements this thread prepared on which backend. A reconnect gives a new backend
 * pid, which forgets them all. */
#define DB_TRACK 128
static _Thread_local struct {
    const PGconn *conn;
    int pid;
    int n;
    const db_stmt *done[DB_TRACK];
} tl;

static void track_reset(PGconn *c)
{
    tl.conn = c;
    tl.pid = PQbackendPID(c);
    tl.n = 0;
}

static int tracked(PGconn *c, const db_stmt *st)
{
    if (tl.conn != c || tl.pid != PQbackendPID(c))
        track_reset(c);
    for (int i = 0; i < tl.n; i++)
        if (tl.done[i] == st)
            return 1;
    return 0;
}

aos_err db_prepare(PGconn *c, const db_stmt *st, char *why, size_t whylen)
{
    if (tracked(c, st))
        return AOS_ERR_OK;
    PGresult *r = PQprepare(c, st->name, st->sql, st->nparams, NULL);
    aos_err e = AOS_ERR_OK;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        /* 42P05: a previous thread's preparation on this very backend; that is fine. */
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (!(state && !strcmp(state, "42P05")))
            e = db_error(c, r, why, whylen);
    }
    PQclear(r);
    if (!e && tl.n < DB_TRACK)
        tl.done[tl.n++] = st;
    return e;
}

aos_err db_exec(PGconn *c, const db_stmt *st, const db_params *p, PGresult **out, char *why,
                size_t whylen)
{
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        aos_err e = db_prepare(c, st, why, whylen);
        if (e)
            return e;
        PGresult *r = PQexecPrepared(c, st->name, p ? p->n : 0, p ? p->v : NULL,
                                     p ? p->len : NULL, p ? p->fmt : NULL, 1);
        ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
            *out = r;
            return AOS_ERR_OK;
        }
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (attempt == 0 && state && !strcmp(state, "26000")) {
            /* Not prepared after all (DISCARD ALL, a pooler): prepare and run again. */
            PQclear(r);
            track_reset(c);
            continue;
        }
        e = db_error(c, r, why, whylen);
        PQclear(r);
        return e;
    }
    snprintf(why, whylen, "statement %s could not be prepared", st->name);
    return AOS_ERR_INTERNAL;
}

aos_err db_cmd(PGconn *c, const char *sql, char *why, size_t whylen)
{
    PGresult *r = PQexec(c, sql);
    aos_err e = AOS_ERR_OK;
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        e = db_error(c, r, why, whylen);
    PQclear(r);
    return e;
}

int64_t db_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
        return 0;
    uint64_t be;
    memcpy(&be, PQgetvalue(r, row, col), 8);
    return (int64_t)be64toh(be);
}

int32_t db_i32(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 4)
        return 0;
    uint32_t be;
    memcpy(&be, PQgetvalue(r, row, col), 4);
    return (int32_t)ntohl(be);
}

int db_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetlength(r, row, col) == 1 &&
           PQgetvalue(r, row, col)[0] != 0;
}

const uint8_t *db_bytes(const PGresult *r, int row, int col, size_t *len)
{
    *len = PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);
    return (const uint8_t *)PQgetvalue(r, row, col);
}

const uint8_t *db_jsonb(const PGresult *r, int row, int col, size_t *len)
{
    size_t n;
    const uint8_t *p = db_bytes(r, row, col, &n);
    if (n < 1) {
        *len = 0;
        return p;
    }
    *len = n - 1;   /* binary jsonb: a version byte (1) and the JSON text */
    return p + 1;
}

/* ---- db_run ------------------------------------------------------------------------------ */

/* Races lost in a row before the request is answered anyway: a livelock must not hold a
 * worker until the deadline. */
#define DB_AGAIN_MAX 20

static void nap_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void reply_reset(srv_reply *rep)
{
    free(rep->payload);
    rep->payload = NULL;
    rep->len = 0;
    rep->error[0] = 0;
}

aos_err db_run(srv_pg *pg, uint64_t deadline_ms, const char *what, srv_reply *rep,
               db_attempt_fn fn, void *arg, db_run_info *info)
{
    db_run_info local = {0};
    if (!info)
        info = &local;
    uint64_t start = aos_now_ms();
    uint64_t give_up = start + DB_WAIT_NO_DEADLINE_MS;
    if (deadline_ms) {
        uint64_t budget = deadline_ms > start ? deadline_ms - start : 0;
        uint64_t margin = budget / 10 < DB_MARGIN_MAX_MS ? budget / 10 : DB_MARGIN_MAX_MS;
        give_up = deadline_ms - margin;
    }
    uint64_t away_since = 0;       /* when this request first found the database away */
    unsigned races = 0;
    char last[AOS_ERRMSG_MAX + 1] = "";
    for (;;) {
        char why[256] = "";
        uint64_t now = aos_now_ms();
        uint32_t left = now < give_up ? (uint32_t)(give_up - now) : 0;
        uint64_t w0 = aos_mono_ms();
        PGconn *c = srv_pg_wait(pg, left, why, sizeof why);
        info->waited_ms += aos_mono_ms() - w0;
        if (!c) {
            now = aos_now_ms();
            if (!away_since)
                away_since = start;
            reply_reset(rep);
            return srv_fail(rep, AOS_ERR_UNAVAILABLE, "%s: the database was unavailable for "
                            "%llu ms, answering before the deadline (retry with the same "
                            "request id): %s%s%s", what, (unsigned long long)(now - away_since),
                            last[0] ? last : "", last[0] ? "; then " : "", why);
        }
        reply_reset(rep);
        (void)db_retry_take();
        info->attempts++;
        aos_err e = fn(c, arg, rep);
        db_retry r = db_retry_take();
        if (e == AOS_ERR_OK || r == DB_FINAL) {
            if (e)
                srv_pg_check(pg);
            return e;
        }
        snprintf(last, sizeof last, "%s", rep->error[0] ? rep->error : aos_strerror(e));
        if (r == DB_WAIT) {
            if (!away_since)
                away_since = aos_now_ms();
            /* The session is over even if libpq has not read the EOF yet. */
            srv_pg_reset(pg);
            aos_debug("%s: database away, running the transaction again when it is "
                      "back: %s", what, last);
        } else if (++races > DB_AGAIN_MAX) {
            return e;
        } else {
            /* A little apart from the transaction that won, growing with each loss. */
            nap_ms(races < 10 ? races : 10);
        }
        if (aos_now_ms() >= give_up) {
            now = aos_now_ms();
            reply_reset(rep);
            return srv_fail(rep, AOS_ERR_UNAVAILABLE, "%s: %s for %llu ms, answering before "
                            "the deadline (retry with the same request id): %s", what,
                            r == DB_WAIT ? "the database was unavailable"
                                         : "the transaction kept losing races",
                            (unsigned long long)(now - (away_since ? away_since : start)),
                            last);
        }
    }
}

aos_err db_serve(srv *s, uint64_t deadline_ms, const char *what, srv_reply *rep,
                 db_attempt_fn fn, void *arg, db_counts *n)
{
    atomic_fetch_add(&n->calls, 1);
    srv_pg *pg = srv_db(s);
    if (!pg) {
        atomic_fetch_add(&n->errors, 1);
        return srv_fail(rep, AOS_ERR_UNAVAILABLE, "%s: no database connection", what);
    }
    db_run_info info = {0};
    aos_err e = db_run(pg, deadline_ms, what, rep, fn, arg, &info);
    if (info.attempts > 1)
        atomic_fetch_add(&n->reruns, info.attempts - 1);
    if (info.waited_ms)
        atomic_fetch_add(&n->waited_ms, info.waited_ms);
    if (e)
        atomic_fetch_add(&n->errors, 1);
    return e;
}
