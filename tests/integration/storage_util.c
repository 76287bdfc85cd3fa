/* What the storage integration tests share: an admin connection to aosd's embedded
 * PostgreSQL, to look behind aos-storage at the rows it really wrote. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
