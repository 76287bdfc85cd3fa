/* PostgreSQL for servers: the admin-side migration (database, role, schema, versioned
 * migrations under one advisory lock) and the role-side connection with backoff. */
#include "pg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/log.h"
#include "db.h"

/* Every server's migrations take this one lock, so concurrent starts never race on
 * CREATE ROLE or GRANT (which fail with "tuple concurrently updated"). "aos_migr". */
#define PG_MIGRATE_LOCK "7022365126034466674"
/* Seconds libpq may spend on one connection attempt; a DSN may say otherwise. Short,
 * because a worker waits on it while a request is pending. */
#define PG_CONNECT_TIMEOUT "2"
#define PG_DSN_MAX 4096
/* Reconnect attempts: short steps, because a request waits on them (db_run) and a
 * restarted PostgreSQL is usually back within a few hundred ms; capped low enough that a
 * caller with time left sees it soon, high enough that 16 workers do not hammer it. */
#define PG_BACKOFF_MIN_MS 20u
#define PG_BACKOFF_MAX_MS 200u
/* A connection that lived this long broke by accident, not by a refusal after login. */
#define PG_STABLE_MS 2000u

struct srv_pg {
    char *dsn;
    PGconn *conn;
    int connected;          /* the last use found it up */
    unsigned connects;      /* successful (re)connections */
    unsigned backoff_ms;    /* the current step; 0 after a long-lived connection */
    uint64_t next_try_ms;   /* monotonic: no attempt before this */
    uint64_t up_since_ms;   /* when the current connection was made */
    char last_err[256];     /* why the last attempt failed */
};

static uint64_t pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* libpq's messages end with a newline (sometimes two lines); keep them on one line. */
static void pg_msg(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    if (!cap)
        return;
    for (; src && *src && n + 1 < cap; src++)
        dst[n++] = (*src == '\n' || *src == '\r') ? ' ' : *src;
    while (n && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

/* Connect with dsn (URI or key=value, expanded as the first dbname) and optionally a
 * different database. The timeout comes first so the DSN can override it; dbname last so
 * that it overrides the DSN's. Caller owns the result (PQfinish), even when it failed. */
static PGconn *pg_connect(const char *dsn, const char *dbname)
{
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                          dbname ? "dbname" : NULL, NULL};
    const char *vals[] = {PG_CONNECT_TIMEOUT, "aos", dsn, dbname, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

/* Server notices ("schema ... already exists, skipping") go to the debug log on one line
 * instead of libpq's default, a bare stderr print that would interleave with aos_log. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    char m[512];
    pg_msg(m, sizeof m, message);
    aos_debug("postgres: %s", m);
}

static int pg_dsn_ok(const char *dsn, char *why, size_t whylen)
{
    if (!dsn || !*dsn) {
        snprintf(why, whylen, "no PostgreSQL DSN given");
        return 0;
    }
    if (strlen(dsn) > PG_DSN_MAX) {
        snprintf(why, whylen, "PostgreSQL DSN longer than %d bytes", PG_DSN_MAX);
        return 0;
    }
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &err);
    if (!opts) {
        char m[256];
        pg_msg(m, sizeof m, err ? err : "out of memory");
        snprintf(why, whylen, "invalid PostgreSQL DSN: %s", m);
        PQfreemem(err);
        return 0;
    }
    PQconninfoFree(opts);
    return 1;
}

/* Run one command; on failure why gets "<what>: <server's message>". */
static aos_err pg_exec(PGconn *c, const char *sql, int nparams, const char *const *params,
                       const char *what, char *why, size_t whylen)
{
    PGresult *r = nparams ? PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0)
                          : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return AOS_ERR_OK;
    }
    /* the code from the one SQLSTATE table (db.c): a missing grant is REFUSED, a crash
     * UNAVAILABLE, a bad migration INTERNAL */
    char m[512];
    aos_err e = db_error(c, r, m, sizeof m);
    snprintf(why, whylen, "%s: %s", what, m);
    PQclear(r);
    return e;
}

/* The target database is missing (or unreachable): connect to "postgres" with the same
 * parameters and create it if it is not there. A concurrent creator winning is success. */
static aos_err pg_create_db(const char *dsn, const char *db, const char *first_err,
                            char *why, size_t whylen)
{
    aos_err e = AOS_ERR_UNAVAILABLE;
    char *ident = NULL;
    PGresult *r = NULL;
    PGconn *c = pg_connect(dsn, "postgres");
    if (PQstatus(c) != CONNECTION_OK) {
        /* Not a missing database: the first error is the one that matters. */
        snprintf(why, whylen, "connecting to PostgreSQL as admin: %s", first_err);
        goto out;
    }
    const char *p[1] = {db};
    r = PQexecParams(c, "SELECT 1 FROM pg_database WHERE datname = $1", 1, NULL, p, NULL,
                     NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[256];
        pg_msg(m, sizeof m, PQresultErrorMessage(r));
        snprintf(why, whylen, "looking for database %s: %s", db, m);
        e = AOS_ERR_INTERNAL;
        goto out;
    }
    if (PQntuples(r) > 0) {
        /* A concurrent creator won, or the first failure was something else (rights,
         * auth): the caller's second attempt tells which, with its own error. */
        e = AOS_ERR_OK;
        goto out;
    }
    PQclear(r);
    r = NULL;
    if (!(ident = PQescapeIdentifier(c, db, strlen(db)))) {
        char m[256];
        pg_msg(m, sizeof m, PQerrorMessage(c));
        snprintf(why, whylen, "quoting database name: %s", m);
        e = AOS_ERR_INTERNAL;
        goto out;
    }
    char sql[600];
    if ((size_t)snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident) >= sizeof sql) {
        snprintf(why, whylen, "database name too long: %s", db);
        e = AOS_ERR_USAGE;
        goto out;
    }
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* 42P04 duplicate_database; 23505 when two creators meet in pg_database's index */
        if (!state || (strcmp(state, "42P04") && strcmp(state, "23505"))) {
            char m[256];
            pg_msg(m, sizeof m, PQresultErrorMessage(r));
            snprintf(why, whylen, "creating database %s: %s", db, m);
            e = AOS_ERR_INTERNAL;
            goto out;
        }
    }
    e = AOS_ERR_OK;
out:
    PQclear(r);
    PQfreemem(ident);
    PQfinish(c);
    return e;
}

static aos_err pg_open_admin(const char *dsn, PGconn **out, char *why, size_t whylen)
{
    PGconn *c = pg_connect(dsn, NULL);
    if (PQstatus(c) == CONNECTION_OK) {
        PQsetNoticeProcessor(c, pg_notice, NULL);
        *out = c;
        return AOS_ERR_OK;
    }
    char first[512], db[256];
    pg_msg(first, sizeof first, PQerrorMessage(c));
    snprintf(db, sizeof db, "%s", PQdb(c) ? PQdb(c) : "");
    PQfinish(c);
    if (!*db || !strcmp(db, "postgres")) {
        snprintf(why, whylen, "connecting to PostgreSQL as admin: %s", first);
        return AOS_ERR_UNAVAILABLE;
    }
    aos_err e = pg_create_db(dsn, db, first, why, whylen);
    if (e)
        return e;
    c = pg_connect(dsn, NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        pg_msg(first, sizeof first, PQerrorMessage(c));
        snprintf(why, whylen, "connecting to database %s as admin: %s", db, first);
        PQfinish(c);
        return AOS_ERR_UNAVAILABLE;
    }
    PQsetNoticeProcessor(c, pg_notice, NULL);
    *out = c;
    return AOS_ERR_OK;
}

static aos_err pg_check_schema(const srv_schema *sc, char *why, size_t whylen)
{
    if (!sc || !sc->schema || !*sc->schema || !sc->role || !*sc->role ||
        (sc->n_migrations && !sc->migrations)) {
        snprintf(why, whylen, "incomplete schema definition");
        return AOS_ERR_USAGE;
    }
    if (strlen(sc->schema) > 63 || strlen(sc->role) > 63) {
        snprintf(why, whylen, "schema or role name longer than 63 bytes");
        return AOS_ERR_USAGE;
    }
    /* Versions are a contract with every database already migrated: they must be
     * strictly increasing so "in order" has one meaning. */
    for (size_t i = 0; i < sc->n_migrations; i++) {
        if (sc->migrations[i].version <= 0 || !sc->migrations[i].sql ||
            (i && sc->migrations[i].version <= sc->migrations[i - 1].version)) {
            snprintf(why, whylen, "schema %s: migration #%zu (version %d) is not a positive, "
                     "strictly increasing version with SQL", sc->schema, i,
                     sc->migrations[i].version);
            return AOS_ERR_USAGE;
        }
    }
    return AOS_ERR_OK;
}

/* Everything inside the transaction, under the advisory lock. */
static aos_err pg_migrate_tx(PGconn *c, const srv_schema *sc, const char *qs, const char *qr,
                             char *why, size_t whylen)
{
    aos_err e;
    char sql[1024];
    const char *role[1] = {sc->role};
    PGresult *r = NULL;

    if ((e = pg_exec(c, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ")", 0, NULL,
                     "taking the migration lock", why, whylen)))
        return e;
    r = PQexecParams(c, "SELECT 1 FROM pg_roles WHERE rolname = $1", 1, NULL, role, NULL,
                     NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char m[256];
        pg_msg(m, sizeof m, PQresultErrorMessage(r));
        snprintf(why, whylen, "looking for role %s: %s", sc->role, m);
        PQclear(r);
        return AOS_ERR_INTERNAL;
    }
    int have_role = PQntuples(r) > 0;
    PQclear(r);
    if (!have_role) {
        snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE",
                 qr);
        if ((e = pg_exec(c, sql, 0, NULL, "creating role", why, whylen)))
            return e;
    }
    snprintf(sql, sizeof sql, "CREATE SCHEMA IF NOT EXISTS %s", qs);
    if ((e = pg_exec(c, sql, 0, NULL, "creating schema", why, whylen)))
        return e;
    snprintf(sql, sizeof sql, "GRANT USAGE ON SCHEMA %s TO %s", qs, qr);
    if ((e = pg_exec(c, sql, 0, NULL, "granting the schema", why, whylen)))
        return e;
    /* Migrations may name their tables unqualified; pg_catalog still comes first. */
    snprintf(sql, sizeof sql, "SET LOCAL search_path TO %s", qs);
    if ((e = pg_exec(c, sql, 0, NULL, "setting search_path", why, whylen)))
        return e;
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations (version int PRIMARY KEY, "
             "applied_at timestamptz NOT NULL DEFAULT now())", qs);
    if ((e = pg_exec(c, sql, 0, NULL, "creating schema_migrations", why, whylen)))
        return e;
    /* A database migrated by a newer aos: its tables may not be what this binary's SQL
     * expects, and nothing here can undo the newer migrations. Refused, not run. */
    snprintf(sql, sizeof sql, "SELECT coalesce(max(version), 0) FROM %s.schema_migrations",
             qs);
    r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        char msg[256];
        pg_msg(msg, sizeof msg, PQresultErrorMessage(r));
        snprintf(why, whylen, "reading %s.schema_migrations: %s", sc->schema, msg);
        PQclear(r);
        return AOS_ERR_INTERNAL;
    }
    long have = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    int known = sc->n_migrations ? sc->migrations[sc->n_migrations - 1].version : 0;
    if (have > known) {
        snprintf(why, whylen, "schema %s is at version %ld, newer than this aos knows "
                 "(version %d): the data dir was last run by a newer aos; run that aos "
                 "again, or restore a backup made before the upgrade", sc->schema, have, known);
        return AOS_ERR_REFUSED;
    }

    for (size_t i = 0; i < sc->n_migrations; i++) {
        const srv_migration *m = &sc->migrations[i];
        char ver[16], what[160];
        const char *pv[1] = {ver};
        snprintf(ver, sizeof ver, "%d", m->version);
        snprintf(sql, sizeof sql, "SELECT 1 FROM %s.schema_migrations WHERE version = $1",
                 qs);
        r = PQexecParams(c, sql, 1, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            char msg[256];
            pg_msg(msg, sizeof msg, PQresultErrorMessage(r));
            snprintf(why, whylen, "reading %s.schema_migrations: %s", sc->schema, msg);
            PQclear(r);
            return AOS_ERR_INTERNAL;
        }
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        snprintf(what, sizeof what, "schema %s migration %d", sc->schema, m->version);
        if ((e = pg_exec(c, m->sql, 0, NULL, what, why, whylen)))
            return e;
        snprintf(sql, sizeof sql, "INSERT INTO %s.schema_migrations (version) VALUES ($1)",
                 qs);
        if ((e = pg_exec(c, sql, 1, pv, "recording a migration", why, whylen)))
            return e;
    }
    return AOS_ERR_OK;
}

aos_err srv_pg_migrate(const char *admin_dsn, const srv_schema *sc, char *why, size_t whylen)
{
    aos_err e = pg_check_schema(sc, why, whylen);
    if (e)
        return e;
    if (!pg_dsn_ok(admin_dsn, why, whylen))
        return AOS_ERR_USAGE;
    PGconn *c = NULL;
    char *qs = NULL, *qr = NULL;
    if ((e = pg_open_admin(admin_dsn, &c, why, whylen)))
        return e;
    qs = PQescapeIdentifier(c, sc->schema, strlen(sc->schema));
    qr = PQescapeIdentifier(c, sc->role, strlen(sc->role));
    if (!qs || !qr) {
        char m[256];
        pg_msg(m, sizeof m, PQerrorMessage(c));
        snprintf(why, whylen, "quoting schema or role name: %s", m);
        e = AOS_ERR_USAGE;
        goto out;
    }
    if ((e = pg_exec(c, "BEGIN", 0, NULL, "starting the migration", why, whylen)))
        goto out;
    e = pg_migrate_tx(c, sc, qs, qr, why, whylen);
    if (!e)
        e = pg_exec(c, "COMMIT", 0, NULL, "committing the migration", why, whylen);
    /* On failure, closing the connection rolls back; say nothing more than the cause. */
out:
    PQfreemem(qs);
    PQfreemem(qr);
    PQfinish(c);
    return e;
}

aos_err srv_pg_open(const char *dsn, srv_pg **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!pg_dsn_ok(dsn, why, whylen))
        return AOS_ERR_USAGE;
    srv_pg *p = calloc(1, sizeof *p);
    if (!p || !(p->dsn = strdup(dsn))) {
        free(p);
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    *out = p;
    return AOS_ERR_OK;
}

void srv_pg_close(srv_pg *p)
{
    if (!p)
        return;
    PQfinish(p->conn);
    free(p->dsn);
    free(p);
}

static void pg_backoff(srv_pg *p, uint64_t now)
{
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : PG_BACKOFF_MIN_MS;
    if (p->backoff_ms > PG_BACKOFF_MAX_MS)
        p->backoff_ms = PG_BACKOFF_MAX_MS;
    p->next_try_ms = now + p->backoff_ms;
}

/* A connection that served for a while reconnects at once; one that breaks right after
 * it was made (a server refusing us after login) keeps stepping the backoff, so a
 * flapping database is never hammered. */
static void pg_drop(srv_pg *p)
{
    uint64_t now = pg_now_ms();
    PQfinish(p->conn);
    p->conn = NULL;
    p->connected = 0;
    if (now - p->up_since_ms >= PG_STABLE_MS) {
        p->backoff_ms = 0;
        p->next_try_ms = 0;
    } else {
        pg_backoff(p, now);
    }
}

PGconn *srv_pg_conn(srv_pg *p, char *why, size_t whylen)
{
    /* PQconsumeInput reads what is pending without blocking: a server that went away
     * shows up here as EOF, so the caller gets a fresh connection instead of a query
     * that fails. */
    if (p->conn && PQstatus(p->conn) == CONNECTION_OK && PQconsumeInput(p->conn)) {
        /* A handler that returned mid-transaction or with results unread must not leave
         * its state to the next request on this worker. */
        PGTransactionStatusType ts = PQtransactionStatus(p->conn);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
            PGresult *r = PQexec(p->conn, "ROLLBACK");
            PQclear(r);
            ts = PQtransactionStatus(p->conn);
        }
        if (ts == PQTRANS_IDLE) {
            p->connected = 1;
            return p->conn;
        }
    }
    if (p->conn) {
        snprintf(p->last_err, sizeof p->last_err, "connection lost: %s",
                 PQerrorMessage(p->conn));
        pg_msg(p->last_err, sizeof p->last_err, p->last_err);
        pg_drop(p);
    }
    uint64_t now = pg_now_ms();
    if (now < p->next_try_ms) {
        snprintf(why, whylen, "PostgreSQL unreachable: %s (next try in %u ms)", p->last_err,
                 (unsigned)(p->next_try_ms - now));
        return NULL;
    }
    PGconn *c = pg_connect(p->dsn, NULL);
    if (PQstatus(c) == CONNECTION_OK) {
        PQsetNoticeProcessor(c, pg_notice, NULL);
        p->conn = c;
        p->connected = 1;
        p->connects++;
        p->up_since_ms = pg_now_ms();
        return c;
    }
    pg_msg(p->last_err, sizeof p->last_err, PQerrorMessage(c));
    PQfinish(c);
    p->connected = 0;
    pg_backoff(p, pg_now_ms());
    snprintf(why, whylen, "PostgreSQL unreachable: %s", p->last_err);
    return NULL;
}

PGconn *srv_pg_wait(srv_pg *p, uint32_t max_wait_ms, char *why, size_t whylen)
{
    uint64_t end = pg_now_ms() + max_wait_ms;
    for (;;) {
        PGconn *c = srv_pg_conn(p, why, whylen);
        if (c)
            return c;
        uint64_t now = pg_now_ms();
        if (now >= end)
            return NULL;
        /* sleep until the next attempt is due (the backoff step), not past the end */
        uint64_t until = p->next_try_ms > now ? p->next_try_ms : now + PG_BACKOFF_MIN_MS;
        if (until > end)
            until = end;
        uint64_t ms = until - now;
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void srv_pg_reset(srv_pg *p)
{
    if (!p->conn)
        return;
    snprintf(p->last_err, sizeof p->last_err, "connection lost: %s",
             PQstatus(p->conn) == CONNECTION_OK ? "the server ended the session"
                                                 : PQerrorMessage(p->conn));
    pg_msg(p->last_err, sizeof p->last_err, p->last_err);
    pg_drop(p);
}

void srv_pg_check(srv_pg *p)
{
    if (p->conn && PQstatus(p->conn) != CONNECTION_OK) {
        snprintf(p->last_err, sizeof p->last_err, "connection lost: %s",
                 PQerrorMessage(p->conn));
        pg_msg(p->last_err, sizeof p->last_err, p->last_err);
        pg_drop(p);
    }
}

int srv_pg_connected(const srv_pg *p)
{
    return p->connected;
}

unsigned srv_pg_connects(const srv_pg *p)
{
    return p->connects;
}
