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

/* The writers' check after a crash test: every key "<prefix><k>" of agent must hold
 * want(k) and have been applied once (version 1); acked[k] (k < n) says which puts were
 * acknowledged. Adds to *checked the acknowledged ones and to *lost those not found.
 * Returns 0, or -1 with why (a wrong value, a put applied twice). */
typedef void (*su_want_fn)(char *out, size_t cap, long k, void *arg);
int su_check_puts(PGconn *pg, const char *agent, const char *prefix, long n,
                  const unsigned char *acked, su_want_fn want, void *arg, long *checked,
                  long *lost, char *why, size_t whylen);
/* The integer value of key "counter" of agent (fails the calling test if absent). */
long su_counter(PGconn *pg, const char *agent);

#endif
