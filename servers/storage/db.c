/* The thin libpq layer of aos-storage: binary parameters and results, statements
 * prepared lazily per connection, and SQLSTATEs mapped onto aos errors. */
#include <arpa/inet.h>
#include <endian.h>
#include <stdio.h>
#include <string.h>

#include "stg.h"

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

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
}

aos_err db_error(PGconn *c, const PGresult *r, char *why, size_t whylen)
{
    if (!r || PQstatus(c) == CONNECTION_BAD) {
        snprintf(why, whylen, "database connection lost: %s", PQerrorMessage(c));
        trim(why);
        return AOS_ERR_UNAVAILABLE;
    }
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = PQresultErrorMessage(r);
    if (!state)
        state = "";
    aos_err e = AOS_ERR_INTERNAL;
    const char *what = "database error";
    if (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3) || !strncmp(state, "53", 2) ||
        !strcmp(state, "40001") || !strcmp(state, "40P01") || !strncmp(state, "58", 2)) {
        e = AOS_ERR_UNAVAILABLE;  /* retry later: the database is going away or busy */
        what = "database unavailable";
    } else if (!strcmp(state, "57014")) {
        e = AOS_ERR_TIMEOUT;
        what = "deadline reached in the database";
    } else if (!strncmp(state, "22", 2)) {
        e = AOS_ERR_USAGE;
        what = "invalid data";
    } else if (!strcmp(state, "23505")) {
        e = AOS_ERR_CONFLICT;
        what = "conflict";
    } else if (!strcmp(state, "54000")) {
        e = AOS_ERR_TOO_BIG;
        what = "too large for the database";
    }
    snprintf(why, whylen, "%s: %s%s%s%s", what, msg, *state ? " (SQLSTATE " : "", state,
             *state ? ")" : "");
    trim(why);
    return e;
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
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
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
