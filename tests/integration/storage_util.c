/* What the storage integration tests share: an admin connection to aosd's embedded
 * PostgreSQL, to look behind aos-storage at the rows it really wrote. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "storage_util.h"

PGconn *su_admin_connect(h_aosd *h)
{
    char dsn[512];
    snprintf(dsn, sizeof dsn, "host=%s/pgsock port=5432 dbname=aos user=aos_admin", h_data_dir(h));
    return PQconnectdb(dsn);
}

long long su_count(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

int su_check_puts(PGconn *pg, const char *agent, const char *prefix, long n,
                  const unsigned char *acked, su_want_fn want, void *arg, long *checked,
                  long *lost, char *why, size_t whylen)
{
    const char *p[2] = {agent, prefix};
    PGresult *r = PQexecParams(pg,
        "SELECT convert_from(key, 'UTF8'), convert_from(value, 'UTF8'), version "
        "FROM storage.kv WHERE agent = $1 AND starts_with(convert_from(key, 'UTF8'), $2)",
        2, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *seen = calloc((size_t)n + 1, 1);
    assert_non_null(seen);
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        long k = atol(PQgetvalue(r, i, 0) + strlen(prefix));
        char w[128];
        want(w, sizeof w, k, arg);
        if (strcmp(PQgetvalue(r, i, 1), w)) {
            snprintf(why, whylen, "%s holds \"%s\"", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
            rc = -1;
        } else if (strcmp(PQgetvalue(r, i, 2), "1")) {
            snprintf(why, whylen, "%s was applied %s times", PQgetvalue(r, i, 0),
                     PQgetvalue(r, i, 2));
            rc = -1;
        } else if (k >= 0 && k < n) {
            seen[k] = 1;
        }
    }
    for (long k = 0; k < n && !rc; k++)
        if (acked[k]) {
            (*checked)++;
            *lost += !seen[k];
        }
    free(seen);
    PQclear(r);
    return rc;
}

long su_counter(PGconn *pg, const char *agent)
{
    const char *p[1] = {agent};
    PGresult *r = PQexecParams(pg, "SELECT convert_from(value, 'UTF8') FROM storage.kv "
                                   "WHERE agent = $1 AND key = 'counter'::bytea",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQntuples(r), 1);
    long counter = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return counter;
}
