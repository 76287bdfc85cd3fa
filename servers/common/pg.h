/* PostgreSQL for servers: versioned, transactional schema migrations run with the admin
 * DSN, and per-thread connections as the server's own role that reconnect with backoff. */
#ifndef AOS_PG_H
#define AOS_PG_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "aos/err.h"

typedef struct srv_pg srv_pg;

/* One migration: applied once, in order of version, in its own transaction. */
typedef struct srv_migration {
    int version;            /* 1, 2, 3, ... never reused or edited once shipped */
    const char *sql;        /* may hold several statements */
} srv_migration;

/* A server's place in the database: its schema, its login role and its migrations.
 * The migrations run as the admin (who owns the schema and its tables); grants in them
 * give the role only what the server needs. */
typedef struct srv_schema {
    const char *schema;     /* "storage" */
    const char *role;       /* "aos_storage" */
    const srv_migration *migrations;
    size_t n_migrations;
} srv_schema;

/* Create the database if missing (embedded mode), the role if missing, the schema, and
 * apply pending migrations under an advisory lock (servers may migrate concurrently).
 * admin_dsn: a libpq conninfo with rights to do all that. */
aos_err srv_pg_migrate(const char *admin_dsn, const srv_schema *sc, char *why, size_t whylen);

/* A connection handle for dsn (libpq conninfo of the server's own role). Does not fail
 * when PostgreSQL is down: srv_pg_conn connects later. Caller owns *out (srv_pg_close). */
aos_err srv_pg_open(const char *dsn, srv_pg **out, char *why, size_t whylen);
void srv_pg_close(srv_pg *p);

/* The live connection, reconnecting when it is broken, at most once per backoff step
 * (20 ms doubling to 200 ms). NULL when PostgreSQL is unreachable: why says so and the
 * caller waits (srv_pg_wait, db_run) or answers AOS_ERR_UNAVAILABLE. Not thread-safe: one
 * srv_pg per thread. */
PGconn *srv_pg_conn(srv_pg *p, char *why, size_t whylen);
/* srv_pg_conn, waiting up to max_wait_ms for PostgreSQL to come back (one attempt per
 * backoff step). NULL when it did not: why says why. */
PGconn *srv_pg_wait(srv_pg *p, uint32_t max_wait_ms, char *why, size_t whylen);
/* After a failed query: marks the connection for a reconnect if it is broken. */
void srv_pg_check(srv_pg *p);
/* Drop the connection whatever libpq thinks of it: the server said the session is over
 * (57P01 and the like) and the next use must reconnect. */
void srv_pg_reset(srv_pg *p);
/* 1 when the last use found the connection up. */
int srv_pg_connected(const srv_pg *p);
/* How many times it has (re)connected. */
unsigned srv_pg_connects(const srv_pg *p);

#endif
