/* Upgrades (issue 23): a database of the previous release's schemas (the committed fixture)
 * migrated in place at start, and a schema or data dir format newer than aosd refused. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "aos/aos.h"
#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"

#define FIXTURE "/tests/integration/fixtures/prev_schema.sql"

static void sql(PGconn *pg, const char *q)
{
    PGresult *r = PQexec(pg, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", q, PQerrorMessage(pg));
    PQclear(r);
}

static long long count(h_aosd *h, const char *q)
{
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    long long n = su_count(pg, q);
    PQfinish(pg);
    return n;
}

/* Whether the data dir's log holds needle. */
static int log_has(const char *dir, const char *needle)
{
    char path[256];
    snprintf(path, sizeof path, "%s/aosd.log", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* A fresh cluster made by this aos, its storage, llm and memory schemas replaced by the
 * fixture (the previous release's, with its data); then aosd again: its migrators bring
 * them up to date before the servers start. */
static void the_previous_schema_is_migrated_in_place(void **st)
{
    (void)st;
    const char *src = getenv("AOS_SOURCE_DIR");
    assert_non_null(src);
    char fixture[1024];
    snprintf(fixture, sizeof fixture, "%s" FIXTURE, src);
    assert_int_equal(access(fixture, R_OK), 0);
    h_aosd *h = h_start(NULL);
    char dir[256], sock[300], why[1024], out[8192];
    snprintf(sock, sizeof sock, "%s/pgsock", h_data_dir(h));
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    sql(pg, "SET client_min_messages = warning");
    sql(pg, "DROP SCHEMA storage, llm, memory CASCADE");
    PQfinish(pg);
    /* the test step that loads the dump: psql, as an operator would */
    char psql[600];
    const char *bindir = getenv("AOS_PG_BINDIR"); /* where aosd finds PostgreSQL too */
    snprintf(psql, sizeof psql, "%s/psql", bindir && *bindir ? bindir : "/usr/lib/postgresql/15/bin");
    const char *load[] = {psql, "-X", "-q", "-h", sock, "-U", "aos_admin", "-d", "aos",
                          "-v", "ON_ERROR_STOP=1", "-f", fixture, NULL};
    int rc = h_run_as(NULL, load, out, sizeof out, 60000);
    if (rc != 0)
        fail_msg("loading %s: exit %d: %s", fixture, rc, out);
    assert_int_equal(count(h, "SELECT max(version) FROM llm.schema_migrations"), 1);
    assert_int_equal(count(h, "SELECT max(version) FROM memory.schema_migrations"), 3);
    h_stop_keep(h, dir, sizeof dir);

    h = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!h)
        fail_msg("aosd on the previous schema: %s", why);
    /* migrated: each server at its latest version, the latest migrations' changes there */
    assert_int_equal(count(h, "SELECT max(version) FROM llm.schema_migrations"), 2);
    assert_int_equal(count(h, "SELECT max(version) FROM memory.schema_migrations"), 4);
    assert_int_equal(count(h, "SELECT count(*) FROM information_schema.columns WHERE "
                              "table_schema = 'llm' AND table_name = 'calls' AND "
                              "column_name = 'reply'"), 1);
    assert_int_equal(count(h, "SELECT count(*) FROM pg_class WHERE relname = 'chunks_tsv' AND "
                              "'fastupdate=off' = ANY(reloptions)"), 1);
    /* the data is there, and served */
    assert_int_equal(count(h, "SELECT count(*) FROM llm.calls WHERE reply IS NULL"), 1);
    for (int i = 1; i <= 5; i++) {
        char key[32], want[64];
        snprintf(key, sizeof key, "key-%d", i);
        snprintf(want, sizeof want, "value from the previous release %d", i);
        aos_call_opts o = {.agent_id = "old-agent", .timeout_ms = 20000};
        uint8_t *v = NULL;
        size_t len;
        uint64_t ver;
        aos_err e = aos_kv_get(h_conn(h), &o, key, &v, &len, &ver, why, sizeof why);
        if (e != AOS_OK)
            fail_msg("%s of the previous release: %s", key, why);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(v, want, len);
        free(v);
    }
    aos_call_opts o = {.agent_id = "old-agent", .timeout_ms = 20000};
    uint64_t ver;
    assert_int_equal(aos_kv_put(h_conn(h), &o, "key-1", "new", 3, NULL, &ver, why, sizeof why),
                     AOS_OK);
    assert_int_equal(ver, 2);
    /* the files' format is recorded */
    char path[300], buf[16] = "";
    snprintf(path, sizeof path, "%s/etc/format", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "1\n");
    h_stop(h);
}

/* A schema version above what the binary knows: the server is refused with the message,
 * aosd's status shows it, and it is not started again in a loop. */
static void a_newer_schema_is_refused(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    char dir[256], why[1024];
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    sql(pg, "INSERT INTO storage.schema_migrations (version) VALUES (1000)");
    PQfinish(pg);
    h_stop_keep(h, dir, sizeof dir);
    h = h_start_on(dir, NULL, 60000, why, sizeof why);
    assert_null(h);
    print_message("refused: %s\n", why);
    /* h_start_on's why is kernel.status's line for the failed child */
    assert_non_null(strstr(why, "storage is failed"));
    assert_non_null(strstr(why, "schema storage is at version 1000, newer than this aos knows"));
    assert_true(log_has(dir, "schema storage is at version 1000"));
    h_remove_dir(dir);
}

/* DATA/etc/format above what aosd knows: aosd exits at start, saying why. */
static void a_newer_data_dir_format_is_refused(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    char dir[256], why[1024], path[300];
    h_stop_keep(h, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/etc/format", dir);
    h_write_file(path, "7\n");
    h = h_start_on(dir, NULL, 30000, why, sizeof why);
    assert_null(h);
    assert_non_null(strstr(why, "exited during start"));
    assert_true(log_has(dir, "this data dir has format 7, newer than this aos"));
    h_remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_previous_schema_is_migrated_in_place),
        cmocka_unit_test(a_newer_schema_is_refused),
        cmocka_unit_test(a_newer_data_dir_format_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
