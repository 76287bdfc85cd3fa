/* Group commit and pipelining across workers: requests of one kind that wait at the same
 * time go to PostgreSQL together, in one round trip and (for writes) one commit. */
#ifndef STG_BATCH_H
#define STG_BATCH_H

#include "stg.h"

/* One request's statement. The parameters borrow the request's data. finish turns the
 * statement's result into the reply (c->rep) and returns the status. */
typedef struct stg_job {
    const db_stmt *stmt;
    db_params p;
    size_t bytes;                 /* payload size, to cap a batch's volume */
    aos_err (*finish)(stg_call *c, const PGresult *r, void *arg);
    void *arg;
    /* A unique violation means the same request id is being run concurrently (its record
     * was inserted under us): answer UNAVAILABLE, and the retry finds the record. */
    int unique_is_retry;
} stg_job;

/* in_tx: wrap a batch of several in BEGIN ... COMMIT, and answer none of them before the
 * COMMIT succeeded (a statement's own outcome is final only then). max_leaders: how many
 * batches may run at once (each on its leader's connection). Caller owns the result. */
stg_batcher *batcher_new(int in_tx, unsigned max_leaders);
void batcher_free(stg_batcher *b);

/* Queue job for c and wait for its outcome. The first waiter to find no batch running
 * becomes the leader: it takes what is queued (up to STG_BATCH_MAX) and runs it on its own
 * connection; the others wait. A batch that fails as a whole is retried one by one, so
 * one bad request does not sink its neighbours. */
aos_err batcher_run(stg_batcher *b, stg_call *c, stg_job *job);

#endif
