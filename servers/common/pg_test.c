/* Tests of the servers' PostgreSQL layer against a throwaway cluster: migrations (database,
 * role, schema, versions, rollback, concurrency), audit's grants, and reconnects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg.h"
#include "../audit/schema.h"   /* audit's real migrations */
#include "testpg.h"

static testpg *T;

static int setup(void **state)
{
    (void)state;
    char why[256];
    T = testpg_start(why, sizeof why);
    if (!T)
        fprintf(stderr, "skipping the PostgreSQL tests: %s\n", why);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    testpg_stop(T);
    return 0;
}

#define NEED_PG()          \
    do {                   \
        if (!T)            \
            skip();        \
    } while (0)

/* testpg_dsn's buffer is shared: each caller gets its own copy. */
static void dsn(const char *user, const char *dbname, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", testpg_dsn(T, user), dbname ? " dbname=" : "",
             dbname ? dbname : "");
}

static PGconn *connect_as(const char *user)
{
    char d[512];
    dsn(user, NULL, d, sizeof d);
    PGconn *c = PQconnectdb(d);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connecting as %s: %s", user, PQerrorMessage(c));
    return c;
}

/* The first column of the first row, or "(none)"; fails the test on an error. */
static const char *one(PGconn *c, const char *sql)
{
    static char buf[256];
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    snprintf(buf, sizeof buf, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "(none)");
    PQclear(r);
    return buf;
}

/* The SQLSTATE a statement fails with, "" when it succeeds. */
static const char *sqlstate(PGconn *c, const char *sql)
{
    static char buf[8];
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(buf, sizeof buf, "%s",
             st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "" : s ? s : "?");
    PQclear(r);
    return buf;
}

static aos_err migrate(const srv_schema *sc, char *why, size_t whylen)
{
    char d[512];
    dsn("aos_admin", NULL, d, sizeof d);
    return srv_pg_migrate(d, sc, why, whylen);
}

static const srv_migration t1_v1[] = {
    {1, "CREATE TABLE t1.items (id int PRIMARY KEY, name text);"
        "GRANT SELECT ON t1.items TO aos_t1;"},
    /* unqualified: migrations run with search_path set to their schema */
    {2, "INSERT INTO items VALUES (1, 'one');"},
    {3, "INSERT INTO items VALUES (3, 'three');"},
    {4, "CREATE TABLE t1.half (x int); SELEC 1;"},
};

static void test_migrate_creates_everything(void **state)
{
    (void)state;
    NEED_PG();
    char why[512] = "";
    srv_schema sc = {"t1", "aos_t1", t1_v1, 2};
    /* database "aos" does not exist yet: initdb made only postgres and the templates */
    if (migrate(&sc, why, sizeof why) != AOS_ERR_OK)
        fail_msg("migrate: %s", why);
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, "SELECT rolsuper::text || rolcanlogin::text || "
                               "rolcreatedb::text || rolcreaterole::text FROM pg_roles "
                               "WHERE rolname = 'aos_t1'"), "falsetruefalsefalse");
    assert_string_equal(one(a, "SELECT nspowner::regrole::text FROM pg_namespace "
                               "WHERE nspname = 't1'"), "aos_admin");
    assert_string_equal(one(a, "SELECT string_agg(version::text, ',' ORDER BY version) "
                               "FROM t1.schema_migrations"), "1,2");
    assert_string_equal(one(a, "SELECT count(*) FROM t1.schema_migrations "
                               "WHERE applied_at IS NULL"), "0");
    PQfinish(a);
    PGconn *r = connect_as("aos_t1");
    assert_string_equal(one(r, "SELECT name FROM t1.items WHERE id = 1"), "one");
    assert_string_equal(sqlstate(r, "INSERT INTO t1.items VALUES (2, 'two')"), "42501");
    assert_string_equal(sqlstate(r, "CREATE TABLE t1.mine (x int)"), "42501");
    PQfinish(r);
}

static void test_migrate_again_applies_only_new(void **state)
{
    (void)state;
    NEED_PG();
    char why[512] = "";
    srv_schema sc = {"t1", "aos_t1", t1_v1, 2};
    if (migrate(&sc, why, sizeof why) != AOS_ERR_OK)
        fail_msg("migrate again: %s", why);
    sc.n_migrations = 3;
    if (migrate(&sc, why, sizeof why) != AOS_ERR_OK)
        fail_msg("migrate with a new version: %s", why);
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, "SELECT string_agg(version::text, ',' ORDER BY version) "
                               "FROM t1.schema_migrations"), "1,2,3");
    /* migration 2's row is there once: it did not run twice */
    assert_string_equal(one(a, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t1.items"),
                        "1,3");
    PQfinish(a);
}

static void test_migrate_failure_rolls_back(void **state)
{
    (void)state;
    NEED_PG();
    char why[512] = "";
    srv_schema sc = {"t1", "aos_t1", t1_v1, 4};
    assert_int_equal(migrate(&sc, why, sizeof why), AOS_ERR_INTERNAL);
    assert_non_null(strstr(why, "migration 4"));
    assert_non_null(strstr(why, "syntax error"));
    assert_null(strchr(why, '\n'));
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, "SELECT to_regclass('t1.half') IS NULL"), "t");
    assert_string_equal(one(a, "SELECT max(version) FROM t1.schema_migrations"), "3");
    PQfinish(a);
}

/* An older binary on a newer database: t1 is at version 3, this "binary" knows 1 and 2.
 * Refused with both versions in the message, and nothing changed. */
static void test_migrate_refuses_a_newer_schema(void **state)
{
    (void)state;
    NEED_PG();
    char why[512] = "";
    srv_schema sc = {"t1", "aos_t1", t1_v1, 2};
    assert_int_equal(migrate(&sc, why, sizeof why), AOS_ERR_REFUSED);
    assert_non_null(strstr(why, "schema t1 is at version 3, newer than this aos knows "
                                "(version 2)"));
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, "SELECT string_agg(version::text, ',' ORDER BY version) "
                               "FROM t1.schema_migrations"), "1,2,3");
    PQfinish(a);
}

static void test_migrate_bad_input(void **state)
{
    (void)state;
    NEED_PG();
    char why[512] = "", d[512];
    dsn("aos_admin", NULL, d, sizeof d);
    static const srv_migration unsorted[] = {{2, "SELECT 1"}, {1, "SELECT 1"}};
    static const srv_migration zero[] = {{0, "SELECT 1"}};
    static const srv_migration nosql[] = {{1, NULL}};
    srv_schema sc = {"bad1", "aos_bad1", unsorted, 2};
    assert_int_equal(srv_pg_migrate(d, &sc, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "increasing"));
    sc.migrations = zero;
    sc.n_migrations = 1;
    assert_int_equal(srv_pg_migrate(d, &sc, why, sizeof why), AOS_ERR_USAGE);
    sc.migrations = nosql;
    assert_int_equal(srv_pg_migrate(d, &sc, why, sizeof why), AOS_ERR_USAGE);
    srv_schema noname = {NULL, "aos_bad1", NULL, 0};
    assert_int_equal(srv_pg_migrate(d, &noname, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(srv_pg_migrate(d, NULL, why, sizeof why), AOS_ERR_USAGE);
    srv_schema ok = {"bad1", "aos_bad1", NULL, 0};
    assert_int_equal(srv_pg_migrate("not a dsn", &ok, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "invalid PostgreSQL DSN"));
    assert_int_equal(srv_pg_migrate(NULL, &ok, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(srv_pg_migrate("host=/nonexistent-aos-dir port=5432 dbname=aos "
                                    "user=aos_admin", &ok, why, sizeof why),
                     AOS_ERR_UNAVAILABLE);
    assert_non_null(strstr(why, "connecting"));
    /* none of that left anything behind */
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, "SELECT count(*) FROM pg_namespace WHERE nspname = 'bad1'"),
                        "0");
    assert_string_equal(one(a, "SELECT count(*) FROM pg_roles WHERE rolname = 'aos_bad1'"),
                        "0");
    PQfinish(a);
}

/* Servers start together: several migrate a database that does not exist yet at once. */
static void test_migrate_concurrent_new_database(void **state)
{
    (void)state;
    NEED_PG();
    static const srv_migration m[] = {{1, "CREATE TABLE conc.t (x int);"},
                                      {2, "INSERT INTO conc.t VALUES (1);"}};
    srv_schema sc = {"conc", "aos_conc", m, 2};
    char d[512];
    dsn("aos_admin", "aos_conc", d, sizeof d);
    enum { N = 4 };
    pid_t pids[N];
    fflush(NULL);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            char why[512];
            aos_err e = srv_pg_migrate(d, &sc, why, sizeof why);
            if (e)
                fprintf(stderr, "concurrent migrate %d: %s\n", i, why);
            _exit(e);
        }
    }
    for (int i = 0; i < N; i++) {
        int st;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    PGconn *c = PQconnectdb(d);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_string_equal(one(c, "SELECT current_database()"), "aos_conc");
    assert_string_equal(one(c, "SELECT count(*) FROM conc.t"), "1");
    assert_string_equal(one(c, "SELECT count(*) FROM conc.schema_migrations"), "2");
    PQfinish(c);
}

/* audit's own migrations: aos_audit appends and reads, and can change nothing. */
static void test_audit_is_append_only(void **state)
{
    (void)state;
    NEED_PG();
    char why[512] = "";
    if (migrate(&audit_schema, why, sizeof why) != AOS_ERR_OK)
        fail_msg("audit migrate: %s", why);
    PGconn *c = connect_as("aos_audit");
    assert_string_equal(sqlstate(c, "INSERT INTO audit.log (agent_id, method, request_id, "
                                    "prev_hash, hash, body) VALUES ('a1', 'storage.kv.put', "
                                    "'\\x00', NULL, '\\x01', '{\"k\": 1}')"), "");
    assert_string_equal(one(c, "SELECT count(*) FROM audit.log"), "1");
    assert_string_equal(sqlstate(c, "UPDATE audit.log SET method = 'x'"), "42501");
    assert_string_equal(sqlstate(c, "DELETE FROM audit.log"), "42501");
    assert_string_equal(sqlstate(c, "TRUNCATE audit.log"), "42501");
    assert_string_equal(sqlstate(c, "DROP TABLE audit.log"), "42501");
    assert_string_equal(sqlstate(c, "ALTER TABLE audit.log DISABLE TRIGGER ALL"), "42501");
    assert_string_equal(sqlstate(c, "CREATE TABLE audit.shadow (x int)"), "42501");
    assert_string_equal(sqlstate(c, "SELECT setval('audit.log_seq_seq', 1)"), "42501");
    /* the log proper (migration 2): its triggers refuse even the owner */
    assert_string_equal(sqlstate(c, "UPDATE audit.records SET method = 'x'"), "42501");
    assert_string_equal(sqlstate(c, "DELETE FROM audit.records"), "42501");
    assert_string_equal(sqlstate(c, "TRUNCATE audit.records"), "42501");
    assert_string_equal(sqlstate(c, "UPDATE audit.heads SET time_ns = 0"), "42501");
    assert_string_equal(sqlstate(c, "TRUNCATE audit.heads"), "42501");
    assert_string_equal(sqlstate(c, "ALTER TABLE audit.records DISABLE TRIGGER ALL"), "42501");
    /* the contents (migration 3): insert-only the same way */
    assert_string_equal(sqlstate(c, "INSERT INTO audit.contents (hash, size, body) VALUES "
                                    "(sha256('x'), 1, 'x')"), "");
    assert_string_equal(sqlstate(c, "UPDATE audit.contents SET size = 2"), "42501");
    assert_string_equal(sqlstate(c, "DELETE FROM audit.contents"), "42501");
    assert_string_equal(sqlstate(c, "TRUNCATE audit.contents"), "42501");
    assert_string_equal(sqlstate(c, "ALTER TABLE audit.contents DISABLE TRIGGER ALL"),
                        "42501");
    PQfinish(c);
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, "SELECT count(*) || method FROM audit.log GROUP BY method"),
                        "1storage.kv.put");
    PQfinish(a);
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait (bounded) for srv_pg_conn to hand out a connection; NULL if it never does. */
static PGconn *conn_eventually(srv_pg *p, char *why, size_t whylen)
{
    for (int i = 0; i < 600; i++) {
        PGconn *c = srv_pg_conn(p, why, whylen);
        if (c)
            return c;
        nap_ms(25);
    }
    return NULL;
}

/* Use the connection until a query fails (the server side is gone), as a handler would,
 * then report it with srv_pg_check. 1 when a failure was seen. */
static int use_until_broken(srv_pg *p)
{
    char why[256];
    for (int i = 0; i < 600; i++) {
        PGconn *c = srv_pg_conn(p, why, sizeof why);
        if (!c)
            return 1;
        PGresult *r = PQexec(c, "SELECT 1");
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (!ok) {
            srv_pg_check(p);
            return 1;
        }
        nap_ms(25);
    }
    return 0;
}

static void test_conn_never_up(void **state)
{
    (void)state;
    srv_pg *p = NULL;
    char why[256] = "";
    assert_int_equal(srv_pg_open("not a dsn", &p, why, sizeof why), AOS_ERR_USAGE);
    assert_null(p);
    assert_int_equal(srv_pg_open(NULL, &p, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(srv_pg_open("host=/nonexistent-aos-dir port=5432 dbname=aos user=x", &p,
                                 why, sizeof why), AOS_ERR_OK);
    assert_null(srv_pg_conn(p, why, sizeof why));
    assert_non_null(strstr(why, "unreachable"));
    assert_null(srv_pg_conn(p, why, sizeof why));
    assert_int_equal(srv_pg_connected(p), 0);
    assert_int_equal(srv_pg_connects(p), 0);
    srv_pg_check(p);
    srv_pg_close(p);
    srv_pg_close(NULL);
}

static void test_conn_cleans_up_and_reconnects(void **state)
{
    (void)state;
    NEED_PG();
    char why[256] = "", d[512];
    dsn("aos_t1", NULL, d, sizeof d);
    srv_pg *p = NULL;
    assert_int_equal(srv_pg_open(d, &p, why, sizeof why), AOS_ERR_OK);
    assert_int_equal(srv_pg_connects(p), 0);
    PGconn *c = srv_pg_conn(p, why, sizeof why);
    if (!c)
        fail_msg("first connection: %s", why);
    assert_int_equal(srv_pg_connected(p), 1);
    assert_int_equal(srv_pg_connects(p), 1);
    assert_ptr_equal(srv_pg_conn(p, why, sizeof why), c);

    /* a handler that left a transaction open, or failed inside one */
    PQclear(PQexec(c, "BEGIN"));
    assert_ptr_equal(srv_pg_conn(p, why, sizeof why), c);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "SELEC"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    assert_ptr_equal(srv_pg_conn(p, why, sizeof why), c);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(srv_pg_connects(p), 1);

    /* its backend is terminated: the next use fails, the one after reconnects */
    char kill_sql[96];
    snprintf(kill_sql, sizeof kill_sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(c));
    PGconn *a = connect_as("aos_admin");
    assert_string_equal(one(a, kill_sql), "t");
    PQfinish(a);
    assert_true(use_until_broken(p));
    c = conn_eventually(p, why, sizeof why);
    if (!c)
        fail_msg("reconnect after terminate: %s", why);
    assert_int_equal(srv_pg_connects(p), 2);
    assert_string_equal(one(c, "SELECT current_user"), "aos_t1");

    /* the whole cluster goes away: unreachable, with the reason, and no new connects */
    assert_int_equal(testpg_crash(T, 0), 0);
    assert_true(use_until_broken(p));
    assert_null(srv_pg_conn(p, why, sizeof why));
    assert_non_null(strstr(why, "unreachable"));
    assert_int_equal(srv_pg_connected(p), 0);
    assert_int_equal(srv_pg_connects(p), 2);

    /* and comes back: so do we */
    assert_int_equal(testpg_crash(T, 1), 0);
    c = conn_eventually(p, why, sizeof why);
    if (!c)
        fail_msg("reconnect after restart: %s", why);
    assert_int_equal(srv_pg_connected(p), 1);
    assert_int_equal(srv_pg_connects(p), 3);
    srv_pg_close(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_creates_everything),
        cmocka_unit_test(test_migrate_again_applies_only_new),
        cmocka_unit_test(test_migrate_failure_rolls_back),
        cmocka_unit_test(test_migrate_refuses_a_newer_schema),
        cmocka_unit_test(test_migrate_bad_input),
        cmocka_unit_test(test_migrate_concurrent_new_database),
        cmocka_unit_test(test_audit_is_append_only),
        cmocka_unit_test(test_conn_never_up),
        cmocka_unit_test(test_conn_cleans_up_and_reconnects),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
