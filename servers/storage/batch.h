/* Group commit and grouped reads across workers: requests of one kind that wait at the same
 * time go to PostgreSQL together, in one round trip and (for writes) one commit. */
#ifndef STG_BATCH_H
#define STG_BATCH_H

#include "stg.h"

/* One request's statement. The parameters borrow the request's data. finish turns the
 * statement's result into the reply (c->rep) and returns the status: row is this request's
 * row of r, -1 when r holds none for it. */
typedef struct stg_job {
    const db_stmt *stmt;
    db_params p;
    size_t bytes;                 /* payload size, to cap a batch's volume */
    aos_err (*finish)(stg_call *c, const PGresult *r, int row, void *arg);
    void *arg;
    /* A unique violation means the same request id is being run concurrently (its record
     * was inserted under us): answer UNAVAILABLE, and the retry finds the record. */
    int unique_is_retry;
} stg_job;

/* Jobs that one statement answers together (reads). stmt takes, for each parameter k of
 * the jobs' own statement, the array of parameter k over the group's jobs, elements of
 * type elem[k] (an OID), and returns at most one row per job: the columns of the jobs'
 * own statement, then the job's 1-based place in the arrays (bigint, WITH ORDINALITY).
 * The jobs' parameters must be binary, or text (dp_text). */
typedef struct stg_group {
    const db_stmt *stmt;
    unsigned elem[DB_MAX_PARAMS];
} stg_group;

/* in_tx: wrap a batch of several in BEGIN ... COMMIT, and answer none of them before the
 * COMMIT succeeded (a statement's own outcome is final only then). max_leaders: how many
 * batches may run at once (each on its leader's connection). Caller owns the result. */
stg_batcher *batcher_new(int in_tx, unsigned max_leaders);
/* A batcher whose batches of several run as group g's one statement (g is static; every
 * job queued on it is one of g's kind). Caller owns the result. */
stg_batcher *batcher_new_group(const stg_group *g, unsigned max_leaders);
void batcher_free(stg_batcher *b);

/* Queue job for c and wait for its outcome. The first waiter to find no batch running
 * becomes the leader at once: it takes what is queued (up to STG_BATCH_MAX) and runs it on
 * its own connection; those that arrive meanwhile wait and go together in the next batch.
 * A batch that fails as a whole is retried one by one, so one bad request does not sink
 * its neighbours. */
aos_err batcher_run(stg_batcher *b, stg_call *c, stg_job *job);

#endif
