/* A throwaway PostgreSQL 15 cluster for storage's own tests: initdb into a temp dir, run
 * postgres on a Unix socket there (as the `postgres` user when we are root), remove it. */
#ifndef STG_TESTPG_H
#define STG_TESTPG_H

#include <stddef.h>
#include <libpq-fe.h>

typedef struct testpg testpg;

/* Start a cluster with database "aos" reachable as the trusted superuser aos_admin.
 * NULL (why says why) when AOS_TEST_NO_PG is set or PostgreSQL cannot be started: the
 * caller skips. Caller owns the result: testpg_stop. */
testpg *testpg_start(char *why, size_t whylen);
/* Stop postgres and remove the directory. */
void testpg_stop(testpg *t);
/* Kill postgres hard (SIGKILL to the postmaster, as a crash would) and start it again
 * once stopped is 1; returns 0 when it is back. */
int testpg_crash(testpg *t, int restart);
/* conninfo for user (e.g. "aos_admin", "aos_storage") on database "aos"; static storage
 * per call: copy it before the next call. */
const char *testpg_dsn(testpg *t, const char *user);

#endif
