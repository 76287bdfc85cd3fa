/* Tests of the shared database-call layer: the SQLSTATE table, and db_run against a
 * throwaway cluster that crashes, restarts and terminates our backend under it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/envelope.h"
#include "db.h"
#include "pidem.h"
#include "testpg.h"

static testpg *T;
static char DSN[512];

static int setup(void **state)
{
    (void)state;
    char why[256];
    T = testpg_start(why, sizeof why);
    if (!T) {
        fprintf(stderr, "skipping the PostgreSQL tests: %s\n", why);
        return 0;
    }
    /* the cluster's own database: "aos" is made by the migrations, which are not ours */
    snprintf(DSN, sizeof DSN, "%s dbname=postgres", testpg_dsn(T, "aos_admin"));
    PGconn *c = PQconnectdb(DSN);
    PGresult *r = PQexec(c, "CREATE SCHEMA t_idem; CREATE TABLE t_idem.effect (n int);"
                            PIDEM_SQL("t_idem"));
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "setup: %s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
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

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_state_table(void **state)
{
    (void)state;
    static const struct {
        const char *state;
        aos_err err;
        db_retry retry;
    } want[] = {
        {"08006", AOS_ERR_UNAVAILABLE, DB_WAIT},  {"08001", AOS_ERR_UNAVAILABLE, DB_WAIT},
        {"57P01", AOS_ERR_UNAVAILABLE, DB_WAIT},  {"57P02", AOS_ERR_UNAVAILABLE, DB_WAIT},
        {"57P03", AOS_ERR_UNAVAILABLE, DB_WAIT},  {"53300", AOS_ERR_UNAVAILABLE, DB_WAIT},
        {"53100", AOS_ERR_UNAVAILABLE, DB_FINAL}, {"53200", AOS_ERR_UNAVAILABLE, DB_FINAL},
        {"58030", AOS_ERR_IO, DB_FINAL},          {"58P01", AOS_ERR_IO, DB_FINAL},
        {"40001", AOS_ERR_UNAVAILABLE, DB_AGAIN}, {"40P01", AOS_ERR_UNAVAILABLE, DB_AGAIN},
        {"23505", AOS_ERR_CONFLICT, DB_FINAL},    {"23503", AOS_ERR_CONFLICT, DB_FINAL},
        {"23514", AOS_ERR_USAGE, DB_FINAL},       {"22P02", AOS_ERR_USAGE, DB_FINAL},
        {"42501", AOS_ERR_REFUSED, DB_FINAL},     {"42601", AOS_ERR_INTERNAL, DB_FINAL},
        {"57014", AOS_ERR_TIMEOUT, DB_FINAL},     {"54000", AOS_ERR_TOO_BIG, DB_FINAL},
        {"XX001", AOS_ERR_IO, DB_FINAL},          {"XX000", AOS_ERR_INTERNAL, DB_FINAL},
        {"P0001", AOS_ERR_INTERNAL, DB_FINAL},    {"", AOS_ERR_INTERNAL, DB_FINAL},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        db_retry r;
        const char *what;
        aos_err e = db_state_map(want[i].state, &r, &what);
        if (e != want[i].err || r != want[i].retry)
            fail_msg("%s: got %s/%d, want %s/%d", want[i].state, aos_err_name(e), r,
                     aos_err_name(want[i].err), want[i].retry);
        assert_non_null(what);
    }
    db_retry r;
    const char *what;
    assert_int_equal(db_state_map(NULL, &r, &what), AOS_ERR_INTERNAL);
    /* the strongest verdict since the last take wins, and a take forgets it */
    (void)db_retry_take();
    db_retry_note(DB_AGAIN);
    db_retry_note(DB_FINAL);
    assert_int_equal(db_retry_take(), DB_AGAIN);
    assert_int_equal(db_retry_take(), DB_FINAL);
}

/* ---- db_run ------------------------------------------------------------------------- */

static aos_err select_one(PGconn *c, void *arg, srv_reply *rep)
{
    (void)arg;
    char why[AOS_ERRMSG_MAX];
    aos_err e = db_cmd(c, "SELECT 1", why, sizeof why);
    return e ? srv_fail(rep, e, "%s", why) : AOS_OK;
}

/* db_run on another thread: the main thread restarts postgres, because testpg's
 * postmaster dies with the thread that spawned it (PR_SET_PDEATHSIG). */
typedef struct run_arg {
    srv_pg *pg;
    uint64_t deadline_ms;
    srv_reply rep;
    db_run_info info;
    aos_err e;
} run_arg;

static void *run_thread(void *arg)
{
    run_arg *a = arg;
    a->e = db_run(a->pg, a->deadline_ms, "t", &a->rep, select_one, NULL, &a->info);
    return NULL;
}

static void test_run_waits_for_the_database(void **state)
{
    (void)state;
    NEED_PG();
    char why[256];
    srv_pg *pg;
    assert_int_equal(srv_pg_open(DSN, &pg, why, sizeof why), AOS_OK);
    srv_reply rep = {0};
    db_run_info info = {0};
    assert_int_equal(db_run(pg, aos_now_ms() + 5000, "t", &rep, select_one, NULL, &info),
                     AOS_OK);
    assert_int_equal(info.attempts, 1);

    /* down before the request comes, back 600 ms later: the request waits and succeeds */
    assert_int_equal(testpg_crash(T, 0), 0);
    pthread_t th;
    run_arg a = {.pg = pg, .deadline_ms = aos_now_ms() + 20000};
    uint64_t t0 = aos_mono_ms();
    pthread_create(&th, NULL, run_thread, &a);
    nap_ms(600);
    /* a new postmaster may be refused while the old one's backends still hold its shared
     * memory: try again for a while */
    for (int i = 0; i < 50 && testpg_crash(T, 1) != 0; i++)
        nap_ms(100);
    pthread_join(th, NULL);
    if (a.e)
        fail_msg("db_run across a restart: %s: %s", aos_err_name(a.e), a.rep.error);
    assert_true(aos_mono_ms() - t0 >= 400);
    assert_true(a.info.waited_ms > 0);
    free(a.rep.payload);

    /* down for longer than the deadline: UNAVAILABLE before the deadline, saying so */
    assert_int_equal(testpg_crash(T, 0), 0);
    t0 = aos_mono_ms();
    aos_err e = db_run(pg, aos_now_ms() + 300, "t.op", &rep, select_one, NULL, NULL);
    uint64_t took = aos_mono_ms() - t0;
    assert_int_equal(e, AOS_ERR_UNAVAILABLE);
    assert_non_null(strstr(rep.error, "t.op: the database was unavailable for"));
    if (took > 300)
        fail_msg("gave up after %llu ms, past the 300 ms deadline", (unsigned long long)took);
    assert_true(took >= 200);
    int up = -1;
    for (int i = 0; i < 50 && (up = testpg_crash(T, 1)) != 0; i++)
        nap_ms(100);
    assert_int_equal(up, 0);
    free(rep.payload);
    srv_pg_close(pg);
}

/* The first attempt has its own backend terminated (57P01, as at a fast shutdown); the
 * second runs on a new connection. */
static aos_err terminated_once(PGconn *c, void *arg, srv_reply *rep)
{
    int *n = arg;
    char why[AOS_ERRMSG_MAX];
    aos_err e = db_cmd(c, (*n)++ ? "SELECT 1" : "SELECT pg_terminate_backend(pg_backend_pid())",
                       why, sizeof why);
    return e ? srv_fail(rep, e, "%s", why) : AOS_OK;
}

/* A serialization failure, twice, then success; a unique violation is final. */
static aos_err races(PGconn *c, void *arg, srv_reply *rep)
{
    int *n = arg;
    char why[AOS_ERRMSG_MAX];
    const char *sql = (*n)++ < 2 ? "DO $$BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = '40001';"
                                   " END$$"
                                 : "SELECT 1";
    aos_err e = db_cmd(c, sql, why, sizeof why);
    return e ? srv_fail(rep, e, "%s", why) : AOS_OK;
}

static aos_err dup(PGconn *c, void *arg, srv_reply *rep)
{
    int *n = arg;
    (*n)++;
    char why[AOS_ERRMSG_MAX];
    aos_err e = db_cmd(c, "DO $$BEGIN RAISE EXCEPTION 'dup' USING ERRCODE = '23505'; END$$",
                       why, sizeof why);
    return e ? srv_fail(rep, e, "%s", why) : AOS_OK;
}

static void test_run_verdicts(void **state)
{
    (void)state;
    NEED_PG();
    char why[256];
    srv_pg *pg;
    assert_int_equal(srv_pg_open(DSN, &pg, why, sizeof why), AOS_OK);
    srv_reply rep = {0};
    db_run_info info = {0};
    int n = 0;
    aos_err e = db_run(pg, aos_now_ms() + 5000, "t", &rep, terminated_once, &n, &info);
    if (e)
        fail_msg("after a terminated backend: %s: %s", aos_err_name(e), rep.error);
    assert_int_equal(info.attempts, 2);

    n = 0;
    memset(&info, 0, sizeof info);
    assert_int_equal(db_run(pg, aos_now_ms() + 5000, "t", &rep, races, &n, &info), AOS_OK);
    assert_int_equal(info.attempts, 3);

    n = 0;
    memset(&info, 0, sizeof info);
    assert_int_equal(db_run(pg, aos_now_ms() + 5000, "t", &rep, dup, &n, &info),
                     AOS_ERR_CONFLICT);
    assert_int_equal(info.attempts, 1);
    assert_non_null(strstr(rep.error, "SQLSTATE 23505"));
    free(rep.payload);
    srv_pg_close(pg);
}

/* The idempotency protocol in db_run: the first attempt commits, then its answer is lost
 * (as when the connection dies between COMMIT and its reply); the re-run finds the record
 * and replays it, and the effect happened once. */
typedef struct idem_arg {
    int runs;
    uint8_t rid[16];
} idem_arg;

static aos_err idem_tx(PGconn *c, void *arg, srv_reply *rep)
{
    idem_arg *a = arg;
    char why[AOS_ERRMSG_MAX];
    pidem_key k = {.schema = "t_idem", .agent = "a", .request_id = a->rid, .method = "m"};
    pidem_prior prior;
    aos_err e;
    if ((e = db_cmd(c, "BEGIN", why, sizeof why)))
        return srv_fail(rep, e, "%s", why);
    if ((e = pidem_claim(c, &k, &prior, why, sizeof why)))
        return srv_fail(rep, e, "%s", why);
    if (prior.found) {
        db_cmd(c, "ROLLBACK", why, sizeof why);
        rep->payload = prior.result;
        rep->len = prior.len;
        prior.result = NULL;
        pidem_prior_clear(&prior);
        return AOS_OK;
    }
    if ((e = db_cmd(c, "INSERT INTO t_idem.effect VALUES (1)", why, sizeof why)) ||
        (e = pidem_record(c, &k, AOS_OK, "done", 4, why, sizeof why)) ||
        (e = db_cmd(c, "COMMIT", why, sizeof why)))
        return srv_fail(rep, e, "%s", why);
    if (a->runs++ == 0) {
        /* committed, but the caller is never told: the reply was lost */
        db_retry_note(DB_WAIT);
        return srv_fail(rep, AOS_ERR_UNAVAILABLE, "reply lost");
    }
    return AOS_OK;
}

static void test_run_replays_a_lost_commit(void **state)
{
    (void)state;
    NEED_PG();
    char why[256];
    srv_pg *pg;
    assert_int_equal(srv_pg_open(DSN, &pg, why, sizeof why), AOS_OK);
    srv_reply rep = {0};
    db_run_info info = {0};
    idem_arg a = {.runs = 0, .rid = {1, 2, 3}};
    aos_err e = db_run(pg, aos_now_ms() + 5000, "t", &rep, idem_tx, &a, &info);
    if (e)
        fail_msg("idempotent re-run: %s: %s", aos_err_name(e), rep.error);
    assert_int_equal(info.attempts, 2);
    assert_int_equal(rep.len, 4);
    assert_memory_equal(rep.payload, "done", 4);
    PGconn *c = PQconnectdb(DSN);
    PGresult *r = PQexec(c, "SELECT count(*) FROM t_idem.effect");
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    PQfinish(c);
    free(rep.payload);
    srv_pg_close(pg);
}

/* Arrays built by db_array read back as PostgreSQL sees them: values, NULLs, the empty
 * array (no dimension), and a builder reused for another element type. */
static void test_arrays_round_trip(void **state)
{
    (void)state;
    NEED_PG();
    PGconn *c = PQconnectdb(DSN);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    db_array a = {0}, t = {0};
    dba_start(&a, 20);
    assert_int_equal(dba_i64(&a, -5), 0);
    assert_int_equal(dba_null(&a), 0);
    assert_int_equal(dba_i64(&a, 1LL << 40), 0);
    dba_start(&t, 25);
    assert_int_equal(dba_add(&t, "h\xc3\xa9", 3), 0);
    assert_int_equal(dba_add(&t, "", 0), 0);
    for (int i = 0; i < 300; i++) /* past the first buffer */
        assert_int_equal(dba_add(&t, "0123456789", 10), 0);
    size_t al, tl;
    const uint8_t *ab = dba_done(&a, &al), *tb = dba_done(&t, &tl);
    assert_non_null(ab);
    assert_non_null(tb);
    const char *v[2] = {(const char *)ab, (const char *)tb};
    int len[2] = {(int)al, (int)tl}, fmt[2] = {1, 1};
    PGresult *r = PQexecParams(c,
                               "SELECT array_to_string($1::bigint[], ',', 'null'), "
                               "cardinality($2::text[]), ($2::text[])[1], ($2::text[])[2] = ''",
                               2, NULL, v, len, fmt, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "-5,null,1099511627776");
    assert_string_equal(PQgetvalue(r, 0, 1), "302");
    assert_string_equal(PQgetvalue(r, 0, 2), "h\xc3\xa9");
    assert_string_equal(PQgetvalue(r, 0, 3), "t");
    PQclear(r);
    dba_start(&a, 17); /* reused, now empty: an array with no dimension */
    ab = dba_done(&a, &al);
    assert_int_equal(al, 12);
    v[0] = (const char *)ab;
    len[0] = (int)al;
    r = PQexecParams(c, "SELECT cardinality($1::bytea[])", 1, NULL, v, len, fmt, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    dba_free(&a);
    dba_free(&t);
    PQfinish(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_table),
        cmocka_unit_test(test_arrays_round_trip),
        cmocka_unit_test(test_run_verdicts),
        cmocka_unit_test(test_run_replays_a_lost_commit),
        cmocka_unit_test(test_run_waits_for_the_database),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
