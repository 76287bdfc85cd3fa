/* Group commit (kv.put, kv.incr) and pipelined reads (kv.get): a leader/follower queue
 * that turns many workers' single statements into one libpq pipeline and one commit. */
#include "batch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_BYTES (8u << 20)

typedef struct item {
    stg_call *c;
    stg_job *job;
    aos_err status;
    int answered;        /* status is final: written by the leader alone */
    db_retry retry;      /* the failure's verdict (db.h), handed to the owner's thread */
    int done;            /* under the mutex: the owner may go */
    struct item *next;
} item;

struct stg_batcher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *head, *tail;
    unsigned leaders, max_leaders;
    int in_tx;
};

stg_batcher *batcher_new(int in_tx, unsigned max_leaders)
{
    stg_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->in_tx = in_tx;
    b->max_leaders = max_leaders ? max_leaders : 1;
    return b;
}

void batcher_free(stg_batcher *b)
{
    if (!b)
        return;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* Run one job alone, outside any pipeline (autocommit: each storage function is atomic). */
static aos_err run_one(PGconn *db, item *it)
{
    char why[AOS_ERRMSG_MAX];
    stg_call *c = it->c;
    if (stg_left_ms(c) == 0)
        return stg_fail(c, AOS_ERR_TIMEOUT, "deadline passed before storage.%s ran", c->op);
    PGresult *r;
    aos_err e = db_exec(db, it->job->stmt, &it->job->p, &r, why, sizeof why);
    if (e == AOS_ERR_CONFLICT && it->job->unique_is_retry) {
        /* the other run commits or rolls back soon: the next run finds its record */
        db_retry_note(DB_AGAIN);
        return stg_fail(c, AOS_ERR_UNAVAILABLE, "storage.%s: the same request is being run "
                        "concurrently, retry: %s", c->op, why);
    }
    if (e)
        return stg_fail(c, e, "storage.%s: %s", c->op, why);
    e = it->job->finish(c, r, it->job->arg);
    PQclear(r);
    return e;
}

/* Answer every item not answered yet with e and "storage.<op>: <what><why>", and the
 * verdict retry for its owner's db_run. */
static void fail_all(item **its, int n, aos_err e, db_retry retry, const char *what,
                     const char *why)
{
    for (int i = 0; i < n; i++)
        if (!its[i]->answered) {
            its[i]->status = stg_fail(its[i]->c, e, "storage.%s: %s%s", its[i]->c->op, what,
                                      why);
            its[i]->retry = retry;
            its[i]->answered = 1;
        }
}

/* Drain what the pipeline still owes us, up to and including the sync. */
static void drain(PGconn *db)
{
    for (int guard = 0; guard < 4 * STG_BATCH_MAX + 16; guard++) {
        PGresult *r = PQgetResult(db);
        if (!r) {
            if (PQstatus(db) == CONNECTION_BAD)
                return;
            continue;   /* between two queries' results */
        }
        ExecStatusType s = PQresultStatus(r);
        PQclear(r);
        if (s == PGRES_PIPELINE_SYNC)
            return;
    }
}

/* The next query's result (the one non-NULL result followed by its NULL). */
static PGresult *next_result(PGconn *db)
{
    PGresult *r = PQgetResult(db);
    if (r) {
        PGresult *end = PQgetResult(db);
        /* each query in a pipeline ends with a NULL; anything else is a protocol slip */
        if (end)
            PQclear(end);
    }
    return r;
}

/* Several jobs as one pipeline. Returns 0 when each item got its outcome, -1 when the
 * pipeline as a whole failed and every item still needs to run alone. */
static int run_pipeline(stg_batcher *b, PGconn *db, item **its, int n)
{
    char why[AOS_ERRMSG_MAX];
    PGresult *res[STG_BATCH_MAX];
    int rc = -1, got = 0;
    memset(res, 0, sizeof res);
    for (int i = 0; i < n; i++) {
        aos_err e = db_prepare(db, its[i]->job->stmt, why, sizeof why);
        if (e) {
            fail_all(its, n, e, db_retry_take(), "", why);
            return 0;
        }
    }
    if (!PQenterPipelineMode(db)) {
        fail_all(its, n, AOS_ERR_UNAVAILABLE,
                 PQstatus(db) == CONNECTION_BAD ? DB_WAIT : DB_FINAL, "", PQerrorMessage(db));
        return 0;
    }
    int ok = 1;
    if (b->in_tx)
        ok = PQsendQueryParams(db, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    for (int i = 0; ok && i < n; i++) {
        stg_job *j = its[i]->job;
        ok = PQsendQueryPrepared(db, j->stmt->name, j->p.n, j->p.v, j->p.len, j->p.fmt, 1);
    }
    if (ok && b->in_tx)
        ok = PQsendQueryParams(db, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    if (ok)
        ok = PQpipelineSync(db);
    if (!ok) {
        /* nothing can have committed: the COMMIT was not even sent */
        snprintf(why, sizeof why, "%s", PQerrorMessage(db));
        goto lost;
    }
    if (b->in_tx) {
        PGresult *r = next_result(db);
        int fine = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!fine)
            goto broken;
    }
    for (; got < n; got++) {
        res[got] = next_result(db);
        if (!res[got] || PQresultStatus(res[got]) != PGRES_TUPLES_OK)
            goto broken;
    }
    if (b->in_tx) {
        PGresult *r = next_result(db);
        int fine = r && PQresultStatus(r) == PGRES_COMMAND_OK &&
                   !strcmp(PQcmdStatus(r), "COMMIT");
        if (!fine) {
            /* The commit itself failed: the outcome of every item is unknown. Their
             * request ids make a retry safe; we must not claim success. */
            aos_err e = db_error(db, r, why, sizeof why);
            db_retry v = db_retry_take();
            PQclear(r);
            drain(db);
            PQexitPipelineMode(db);
            fail_all(its, n, e == AOS_ERR_INTERNAL ? AOS_ERR_UNAVAILABLE : e, v,
                     "commit failed, outcome unknown (retry with the same request id): ", why);
            rc = 0;
            goto out;
        }
        PQclear(r);
    }
    drain(db);
    PQexitPipelineMode(db);
    for (int i = 0; i < n; i++) {
        its[i]->status = its[i]->job->finish(its[i]->c, res[i], its[i]->job->arg);
        its[i]->answered = 1;
    }
    rc = 0;
    goto out;

broken:
    /* One statement failed (the rest were skipped) or the link broke. */
    if (PQstatus(db) == CONNECTION_BAD) {
        snprintf(why, sizeof why, "%s", PQerrorMessage(db));
        goto lost;
    }
    drain(db);
    PQexitPipelineMode(db);
    if (PQtransactionStatus(db) != PQTRANS_IDLE) {
        PGresult *r = PQexec(db, "ROLLBACK");
        PQclear(r);
    }
    rc = -1;
    goto out;

lost:
    PQexitPipelineMode(db);
    {
        size_t l = strlen(why);
        while (l > 0 && why[l - 1] == '\n')
            why[--l] = 0;
    }
    fail_all(its, n, AOS_ERR_UNAVAILABLE, DB_WAIT, "database connection lost: ", why);
    rc = 0;
out:
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    return rc;
}

static void run_batch(stg_batcher *b, stg_call *leader, item **its, int n)
{
    item *live[STG_BATCH_MAX];
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (stg_left_ms(its[i]->c) == 0) {
            its[i]->status = stg_fail(its[i]->c, AOS_ERR_TIMEOUT,
                                      "deadline passed before storage.%s ran", its[i]->c->op);
            its[i]->answered = 1;
        } else {
            live[m++] = its[i];
        }
    }
    if (m == 0)
        return;
    /* The leader's thread notes verdicts for every item now: start from none. */
    (void)db_retry_take();
    atomic_fetch_add(&leader->st->n_batches, 1);
    atomic_fetch_add(&leader->st->n_batched, (uint64_t)m);
    if (m > 1 && run_pipeline(b, leader->db, live, m) == 0)
        return;
    for (int i = 0; i < m; i++) {
        live[i]->status = run_one(leader->db, live[i]);
        live[i]->retry = db_retry_take();
        live[i]->answered = 1;
    }
}

aos_err batcher_run(stg_batcher *b, stg_call *c, stg_job *job)
{
    item me = {.c = c, .job = job};
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = &me;
    else
        b->head = &me;
    b->tail = &me;
    while (!me.done) {
        if (b->leaders < b->max_leaders && b->head) {
            item *its[STG_BATCH_MAX];
            int n = 0;
            size_t bytes = 0;
            while (b->head && n < STG_BATCH_MAX &&
                   (n == 0 || bytes + b->head->job->bytes <= BATCH_BYTES)) {
                item *it = b->head;
                b->head = it->next;
                if (!b->head)
                    b->tail = NULL;
                it->next = NULL;
                bytes += it->job->bytes;
                its[n++] = it;
            }
            b->leaders++;
            pthread_mutex_unlock(&b->mu);
            run_batch(b, c, its, n);
            pthread_mutex_lock(&b->mu);
            for (int i = 0; i < n; i++)
                its[i]->done = 1;
            b->leaders--;
            pthread_cond_broadcast(&b->cv);
        } else {
            pthread_cond_wait(&b->cv, &b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
    /* what the leader found for us becomes ours, for the db_run around this call */
    db_retry_note(me.retry);
    return me.status;
}
