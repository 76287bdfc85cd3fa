/* Group commit (kv.put, kv.incr) and grouped reads (kv.get): a leader/follower queue that
 * turns many workers' single statements into one libpq pipeline and one commit, or into
 * one statement over arrays. */
#include "batch.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_BYTES (8u << 20)

struct item;
/* The requests one leader runs together. */
typedef struct item_list {
    struct item *its[STG_BATCH_MAX];
    int n;
} item_list;

typedef struct item {
    stg_call *c;
    stg_job *job;
    aos_err status;
    int answered;        /* status is final: written by the leader alone */
    db_retry retry;      /* the failure's verdict (db.h), handed to the owner's thread */
    /* The owner waits here, woken alone and exactly once: when its outcome is in, or to
     * lead the batch in `batch` (itself first). Once, so that the owner may return (the
     * item is on its stack) as soon as it wakes; alone, because one condition for all
     * woke every waiter at the end of each batch to find nothing to do, and then made
     * them queue for the mutex (a fifth of storage's CPU in the profile). */
    sem_t wake;
    int lead;
    item_list batch;
    struct item *next;
} item;

struct stg_batcher {
    pthread_mutex_t mu;
    item *head, *tail;
    unsigned leaders, max_leaders;
    int in_tx;
    const stg_group *group;    /* NULL: batches are pipelines */
};

static stg_batcher *make(int in_tx, const stg_group *g, unsigned max_leaders)
{
    stg_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    pthread_mutex_init(&b->mu, NULL);
    b->in_tx = in_tx;
    b->group = g;
    b->max_leaders = max_leaders ? max_leaders : 1;
    return b;
}

stg_batcher *batcher_new(int in_tx, unsigned max_leaders)
{
    return make(in_tx, NULL, max_leaders);
}

stg_batcher *batcher_new_group(const stg_group *g, unsigned max_leaders)
{
    return make(0, g, max_leaders);
}

void batcher_free(stg_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* The row a job gets from a result of its own statement: the first, if any. */
static int own_row(const PGresult *r)
{
    return PQntuples(r) > 0 ? 0 : -1;
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
    e = it->job->finish(c, r, own_row(r), it->job->arg);
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
        its[i]->status = its[i]->job->finish(its[i]->c, res[i], own_row(res[i]),
                                             its[i]->job->arg);
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

/* Parameter k of job j as bytes: text parameters (dp_text) carry no length. */
static size_t param_len(const stg_job *j, int k)
{
    if (!j->p.v[k])
        return 0;
    return j->p.fmt[k] ? (size_t)j->p.len[k] : strlen(j->p.v[k]);
}

/* Several jobs as the group's one statement: parameter k becomes the array of every job's
 * parameter k, in PostgreSQL's binary array form (array_recv: dimensions, has-NULL flag,
 * element type, size and lower bound of the one dimension, then each element as its length,
 * -1 for NULL, and its bytes). Returns 0 when each item got its outcome, -1 when the
 * statement failed as a whole for a reason that is not the connection's, and every item
 * still needs to run alone. */
static int run_group(stg_batcher *b, PGconn *db, item **its, int n)
{
    char why[AOS_ERRMSG_MAX];
    const stg_group *g = b->group;
    const stg_job *j0 = its[0]->job;
    int np = j0->p.n;
    for (int i = 0; i < n; i++) /* all of the group's kind, or they go one by one */
        if (its[i]->job->stmt != j0->stmt || its[i]->job->p.n != np)
            return -1;
    db_array arr[DB_MAX_PARAMS] = {{0}};
    db_params p;
    dp_init(&p);
    int bad = 0;
    for (int k = 0; k < np && !bad; k++) {
        dba_start(&arr[k], g->elem[k]);
        for (int i = 0; i < n && !bad; i++) {
            const stg_job *j = its[i]->job;
            bad = j->p.v[k] ? dba_add(&arr[k], j->p.v[k], param_len(j, k)) : dba_null(&arr[k]);
        }
        size_t len;
        const uint8_t *ab = bad ? NULL : dba_done(&arr[k], &len);
        if (!ab)
            bad = 1;
        else
            dp_bytes(&p, ab, len);
    }
    if (bad) {
        for (int k = 0; k < np; k++)
            dba_free(&arr[k]);
        return -1;
    }
    PGresult *r;
    aos_err e = db_exec(db, g->stmt, &p, &r, why, sizeof why);
    for (int k = 0; k < np; k++)
        dba_free(&arr[k]);
    if (e) {
        db_retry v = db_retry_take();
        if (v == DB_FINAL)
            return -1;
        /* the database went away or a race was lost: every owner's db_run runs again */
        fail_all(its, n, e, v, "", why);
        return 0;
    }
    int rows = PQntuples(r), last = PQnfields(r) - 1, row[STG_BATCH_MAX];
    for (int i = 0; i < n; i++)
        row[i] = -1;
    for (int x = 0; x < rows && last >= 0; x++) {
        int64_t at = db_i64(r, x, last);
        if (at >= 1 && at <= n && row[at - 1] < 0)
            row[at - 1] = x;
    }
    for (int i = 0; i < n; i++) {
        its[i]->status = its[i]->job->finish(its[i]->c, r, row[i], its[i]->job->arg);
        its[i]->answered = 1;
    }
    PQclear(r);
    return 0;
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
    stg *st = leader->st;
    atomic_fetch_add(b->group ? &st->n_groups : &st->n_batches, 1);
    atomic_fetch_add(b->group ? &st->n_grouped : &st->n_batched, (uint64_t)m);
    if (m > 1 && (b->group ? run_group(b, leader->db, live, m)
                           : run_pipeline(b, leader->db, live, m)) == 0)
        return;
    for (int i = 0; i < m; i++) {
        live[i]->status = run_one(leader->db, live[i]);
        live[i]->retry = db_retry_take();
        live[i]->answered = 1;
    }
}

/* Under the mutex: the next batch off the queue, in arrival order, within the caps. */
static void take(stg_batcher *b, item_list *bt)
{
    size_t bytes = 0;
    bt->n = 0;
    while (b->head && bt->n < STG_BATCH_MAX &&
           (bt->n == 0 || bytes + b->head->job->bytes <= BATCH_BYTES)) {
        item *it = b->head;
        b->head = it->next;
        if (!b->head)
            b->tail = NULL;
        it->next = NULL;
        bytes += it->job->bytes;
        bt->its[bt->n++] = it;
    }
}

/* me leads me->batch (me first in it), and the batches that gathered meanwhile go on
 * without a pause: to the first request of each, which leads it in turn. */
static void lead(stg_batcher *b, item *me)
{
    item_list *bt = &me->batch;
    run_batch(b, me->c, bt->its, bt->n);
    for (int i = 0; i < bt->n; i++)
        if (bt->its[i] != me)
            sem_post(&bt->its[i]->wake);   /* the last touch of its item */
    pthread_mutex_lock(&b->mu);
    if (b->head) {
        /* the leader's place passes on with the batch: b->leaders stays */
        item *next = b->head;
        take(b, &next->batch);
        next->lead = 1;
        pthread_mutex_unlock(&b->mu);
        sem_post(&next->wake);
    } else {
        b->leaders--;
        pthread_mutex_unlock(&b->mu);
    }
}

aos_err batcher_run(stg_batcher *b, stg_call *c, stg_job *job)
{
    item me = {.c = c, .job = job};
    sem_init(&me.wake, 0, 0);
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = &me;
    else
        b->head = &me;
    b->tail = &me;
    /* A request waits in the queue only while max_leaders batches run (a leader that
     * finds the queue empty leaves its place), so one that finds a place free is alone
     * in the queue and goes at once. */
    if (b->leaders < b->max_leaders) {
        b->leaders++;
        take(b, &me.batch);
        me.lead = 1;
        pthread_mutex_unlock(&b->mu);
    } else {
        pthread_mutex_unlock(&b->mu);
        while (sem_wait(&me.wake) != 0)
            ;   /* EINTR */
    }
    if (me.lead)
        lead(b, &me);
    sem_destroy(&me.wake);
    /* what the leader found for us becomes ours, for the db_run around this call */
    db_retry_note(me.retry);
    return me.status;
}
