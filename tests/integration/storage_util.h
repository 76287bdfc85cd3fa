/* What the storage integration tests share: an admin connection to aosd's embedded
 * PostgreSQL, to look behind aos-storage at the rows it really wrote. */
#ifndef AOS_STORAGE_UTIL_H
#define AOS_STORAGE_UTIL_H

#include <libpq-fe.h>

#include "harness.h"

/* Connect as aos_admin to the PostgreSQL of h. The caller owns the result and PQfinish()es
 * it, also when PQstatus() says the connection failed. */
PGconn *su_admin_connect(h_aosd *h);

/* Run sql (one row, one integer column) on pg and return that integer; a failed query
 * fails the calling cmocka test. */
long long su_count(PGconn *pg, const char *sql);

#endif
