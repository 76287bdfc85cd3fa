/* aos-llm's books: llm.calls gets a row before a call is sent and its usage after it ends,
 * written in batches by one thread with its own connection, so no handler waits on SQL. */
#include "acct.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/log.h"
#include "db.h"
#include "monotime.h"
#include "pg.h"

/* The table belongs to the admin; aos_llm may add rows and complete them, never delete
 * one: the books of a compromised gateway can be padded, not erased. */
static const srv_migration llm_migrations[] = {
    {1, "CREATE TABLE llm.calls ("
        "  id bigserial PRIMARY KEY,"
        "  request_id bytea NOT NULL,"
        "  agent text NOT NULL,"
        "  provider text NOT NULL,"
        "  model text NOT NULL,"
        "  started_at timestamptz NOT NULL DEFAULT now(),"
        "  ended_at timestamptz,"
        "  status integer,"          /* aos_err; NULL while in flight (or lost in a crash) */
        "  resent boolean NOT NULL DEFAULT false,"
        "  attempts integer NOT NULL DEFAULT 0,"
        "  input_tokens bigint NOT NULL DEFAULT 0,"
        "  output_tokens bigint NOT NULL DEFAULT 0,"
        "  cache_read_tokens bigint NOT NULL DEFAULT 0,"
        "  cache_write_tokens bigint NOT NULL DEFAULT 0,"
        "  cost_micro_usd bigint NOT NULL DEFAULT 0,"
        "  ttft_us integer,"
        "  error text);"
        "CREATE INDEX calls_request_id ON llm.calls (request_id);"
        "CREATE INDEX calls_agent_started ON llm.calls (agent, started_at);"
        "REVOKE ALL ON llm.calls FROM PUBLIC;"
        "GRANT SELECT, INSERT, UPDATE ON llm.calls TO aos_llm;"
        "GRANT USAGE ON SEQUENCE llm.calls_id_seq TO aos_llm;"},
    /* the reply of a completed call, so a retry with its request id (aosd restarted, its
     * caller sent it again) is answered from the books, not paid twice */
    {2, "ALTER TABLE llm.calls ADD COLUMN reply bytea;"},
};

const srv_schema llm_schema = {
    .schema = "llm",
    .role = "aos_llm",
    .migrations = llm_migrations,
    .n_migrations = sizeof llm_migrations / sizeof llm_migrations[0],
};

/* resent: the provider was asked this same request before (a crash of aos-llm, or a
 * caller retrying after an error) and this is a second paid call; one it refused with a
 * 429 (status 15, RATE_LIMITED) was never served, so a retry after it is not resent. */
_Static_assert(AOS_ERR_RATE_LIMITED == 15, "llm_begin's SQL names RATE_LIMITED as 15");
static const db_stmt st_begin = {
    "llm_begin",
    "INSERT INTO llm.calls (request_id, agent, provider, model, resent) "
    "VALUES ($1, $2, $3, $4, EXISTS (SELECT 1 FROM llm.calls WHERE request_id = $1 "
    "AND status IS DISTINCT FROM 15)) "
    "RETURNING id, resent",
    4};
/* Only for a request id seen before (resent): did this agent's call with it complete? Then
 * its reply answers, and the row just made says so instead of becoming a second paid call.
 * Looked up apart from the insert: one statement doing both was planned into a scan of the
 * whole table once it grew, and cost every call (halved bench_llm's capacity). */
static const db_stmt st_prior = {
    "llm_prior",
    "SELECT id, reply FROM llm.calls WHERE request_id = $1 AND agent = $2 AND status = 0 "
    "AND reply IS NOT NULL AND id < $3 ORDER BY id DESC LIMIT 1",
    3};
static const db_stmt st_replayed = {
    "llm_replayed",
    "UPDATE llm.calls SET ended_at = now(), status = 0, resent = false, "
    "error = 'replayed: answered with the reply of call ' || $2::text WHERE id = $1",
    2};
/* A row whose begin was lost (an asynchronous commit that a crash of PostgreSQL took
 * with it) is written whole by st_end_insert: usage is never dropped for want of a row. */
static const db_stmt st_end = {
    "llm_end",
    "UPDATE llm.calls SET ended_at = now(), status = $2, attempts = $3, input_tokens = $4, "
    "output_tokens = $5, cache_read_tokens = $6, cache_write_tokens = $7, "
    "cost_micro_usd = $8, ttft_us = $9, error = $10, reply = $11 WHERE id = $1",
    11};
/* Rows still in flight when an earlier aos-llm died: they ended with it. */
static const db_stmt st_orphans = {
    "llm_orphans",
    "UPDATE llm.calls SET ended_at = now(), status = $1, "
    "error = 'aos-llm stopped before the call ended; usage unknown' "
    "WHERE status IS NULL AND started_at < now()",
    1};

typedef struct op {
    int end;
    /* begin */
    uint8_t id[AOS_ID_LEN];
    char agent[AOS_AGENT_ID_MAX + 1], provider[64], model[128];
    uint64_t deadline_mono_ms;
    acct_begin_fn bdone;
    int resent;
    uint8_t *replay;               /* a completed call's reply, found by the begin */
    size_t replay_len;
    /* end */
    int64_t row;
    acct_result r;                 /* r.reply points at reply below */
    uint8_t *reply;
    void (*edone)(void *);
    uint64_t queued_mono_ms;
    void *arg;
    struct op *next;
} op;

/* Begins and ends each have a lane: a thread with its own connection. A call waits for
 * its begin before it is sent, so a begin must never queue behind an end's durable
 * commit (an fsync, milliseconds on a slow disk); ends group-commit among themselves. */
enum { LANE_BEGIN, LANE_END };

typedef struct lane {
    acct *a;
    int end;                       /* LANE_END: its batches commit durably */
    srv_pg *pg;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    op *head, *tail;
    int stop, orphans_done;
    PGconn *async_conn;            /* the connection set to commit asynchronously */
} lane;

struct acct {
    srv *s;
    lane lanes[2];
    atomic_ullong begins, ends, batches, dropped, waits;
};

static void push(acct *a, op *o)
{
    lane *l = &a->lanes[o->end ? LANE_END : LANE_BEGIN];
    pthread_mutex_lock(&l->mu);
    if (l->tail)
        l->tail->next = o;
    else
        l->head = o;
    l->tail = o;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void acct_begin(acct *a, const uint8_t id[AOS_ID_LEN], const char *agent, const char *provider,
                const char *model, uint64_t deadline_mono_ms, acct_begin_fn done, void *arg)
{
    op *o = calloc(1, sizeof *o);
    if (!o) {
        done(arg, AOS_ERR_NOMEM, 0, 0, NULL, 0, "aos-llm is out of memory");
        return;
    }
    memcpy(o->id, id, AOS_ID_LEN);
    snprintf(o->agent, sizeof o->agent, "%s", agent);
    snprintf(o->provider, sizeof o->provider, "%s", provider);
    snprintf(o->model, sizeof o->model, "%s", model);
    o->deadline_mono_ms = deadline_mono_ms;
    o->bdone = done;
    o->arg = arg;
    push(a, o);
}

void acct_end(acct *a, int64_t row, const acct_result *r, void (*done)(void *arg), void *arg)
{
    op *o = calloc(1, sizeof *o);
    if (!o) {
        aos_warn("usage of call %lld not recorded: out of memory", (long long)row);
        done(arg);
        return;
    }
    o->end = 1;
    o->row = row;
    o->r = *r;
    o->r.reply = NULL;
    o->r.reply_len = 0;
    if (r->status == AOS_OK && r->reply && r->reply_len <= ACCT_REPLY_MAX &&
        (o->reply = malloc(r->reply_len ? r->reply_len : 1))) {
        memcpy(o->reply, r->reply, r->reply_len);
        o->r.reply = o->reply;
        o->r.reply_len = r->reply_len;
    }
    o->edone = done;
    o->arg = arg;
    o->queued_mono_ms = aos_mono_ms();
    push(a, o);
}

static aos_err run_begin(PGconn *c, op *o, int64_t *row, int *resent, char *why,
                         size_t whylen)
{
    db_params p;
    dp_init(&p);
    dp_bytes(&p, o->id, AOS_ID_LEN);
    dp_text(&p, o->agent);
    dp_text(&p, o->provider);
    dp_text(&p, o->model);
    PGresult *res;
    aos_err rc = db_exec(c, &st_begin, &p, &res, why, whylen);
    if (rc != AOS_OK)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        snprintf(why, whylen, "llm.calls insert returned no row");
        return AOS_ERR_INTERNAL;
    }
    *row = db_i64(res, 0, 0);
    *resent = db_bool(res, 0, 1);
    PQclear(res);
    free(o->replay); /* a batch run again after a failure finds it again */
    o->replay = NULL;
    o->replay_len = 0;
    if (!*resent)
        return AOS_OK;
    dp_init(&p);
    dp_bytes(&p, o->id, AOS_ID_LEN);
    dp_text(&p, o->agent);
    dp_i64(&p, *row);
    if ((rc = db_exec(c, &st_prior, &p, &res, why, whylen)) != AOS_OK)
        return rc;
    if (PQntuples(res) == 1) {
        int64_t prior = db_i64(res, 0, 0);
        size_t n = 0;
        const uint8_t *b = db_bytes(res, 0, 1, &n);
        if (!(o->replay = malloc(n ? n : 1))) {
            PQclear(res);
            snprintf(why, whylen, "aos-llm is out of memory for a kept reply");
            return AOS_ERR_NOMEM;
        }
        memcpy(o->replay, b, n);
        o->replay_len = n;
        PQclear(res);
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)prior);
        dp_init(&p);
        dp_i64(&p, *row);
        dp_text(&p, num);
        if ((rc = db_exec(c, &st_replayed, &p, &res, why, whylen)) != AOS_OK)
            return rc;
        *resent = 0;
    }
    PQclear(res);
    return AOS_OK;
}

static aos_err run_end(PGconn *c, op *o, char *why, size_t whylen)
{
    db_params p;
    dp_init(&p);
    dp_i64(&p, o->row);
    dp_i32(&p, o->r.status);
    dp_i32(&p, (int32_t)o->r.attempts);
    dp_i64(&p, (int64_t)o->r.input_tokens);
    dp_i64(&p, (int64_t)o->r.output_tokens);
    dp_i64(&p, (int64_t)o->r.cache_read_tokens);
    dp_i64(&p, (int64_t)o->r.cache_write_tokens);
    dp_i64(&p, (int64_t)o->r.cost_micro_usd);
    dp_i32(&p, (int32_t)o->r.ttft_us);
    if (o->r.error[0])
        dp_text(&p, o->r.error);
    else
        dp_null(&p);
    if (o->r.reply)
        dp_bytes(&p, o->r.reply, o->r.reply_len);
    else
        dp_null(&p);
    PGresult *res;
    aos_err rc = db_exec(c, &st_end, &p, &res, why, whylen);
    if (rc == AOS_OK)
        PQclear(res);
    return rc;
}

/* One batch in one transaction: a single commit for everything that queued meanwhile.
 * Begins commit asynchronously (a crash of aos-llm cannot lose them, only one of
 * PostgreSQL itself, and then st_end finds no row and the usage is still written);
 * a batch of ends (the other lane) commits durably, since its callers are answered after
 * it. */
static aos_err run_batch(lane *l, PGconn *c, op *ops, int has_end, char *why, size_t whylen)
{
    /* The session commits asynchronously (set once per connection: if a reconnect loses
     * it, begins only get slower); an end's transaction asks for a durable commit. */
    if (c != l->async_conn) {
        aos_err rc = db_cmd(c, "SET synchronous_commit = off", why, whylen);
        if (rc != AOS_OK)
            return rc;
        l->async_conn = c;
    }
    /* one begin alone is one statement, committed on its own: one round trip */
    if (!has_end && l->orphans_done && ops && !ops->next)
        return run_begin(c, ops, &ops->row, &ops->resent, why, whylen);
    aos_err rc = db_cmd(c, "BEGIN", why, whylen);
    if (rc == AOS_OK && has_end)
        rc = db_cmd(c, "SET LOCAL synchronous_commit = on", why, whylen);
    if (rc == AOS_OK && !l->orphans_done) {
        db_params p;
        dp_init(&p);
        dp_i32(&p, AOS_ERR_UNAVAILABLE);
        PGresult *res;
        if ((rc = db_exec(c, &st_orphans, &p, &res, why, whylen)) == AOS_OK) {
            const char *n = PQcmdTuples(res);
            if (n && strcmp(n, "0"))
                aos_warn("%s calls were in flight when aos-llm last stopped: marked ended, "
                         "usage unknown", n);
            PQclear(res);
        }
    }
    for (op *o = ops; rc == AOS_OK && o; o = o->next) {
        if (o->end)
            rc = run_end(c, o, why, whylen);
        else
            rc = run_begin(c, o, &o->row, &o->resent, why, whylen);
    }
    if (rc == AOS_OK)
        rc = db_cmd(c, "COMMIT", why, whylen);
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
        return rc;
    }
    l->orphans_done = 1;
    return AOS_OK;
}

static void finish(acct *a, op *o, aos_err rc, const char *why)
{
    if (o->end) {
        atomic_fetch_add(&a->ends, 1);
        o->edone(o->arg);
    } else {
        atomic_fetch_add(&a->begins, 1);
        o->bdone(o->arg, rc, o->row, rc == AOS_OK ? o->resent : 0,
                 rc == AOS_OK ? o->replay : NULL, rc == AOS_OK ? o->replay_len : 0, why);
    }
    free(o->replay);
    free(o->reply);
    free(o);
}

/* Ops that cannot wait any longer for the database: begins past their deadline fail (the
 * call is not sent), ends past ACCT_END_WAIT_MS are logged and dropped. */
static op *expire(acct *a, op *ops, const char *why)
{
    uint64_t now = aos_mono_ms();
    op *keep = NULL, **kt = &keep;
    while (ops) {
        op *o = ops;
        ops = o->next;
        o->next = NULL;
        int late = o->end ? now >= o->queued_mono_ms + ACCT_END_WAIT_MS
                          : now + 50 >= o->deadline_mono_ms;
        if (!late) {
            *kt = o;
            kt = &o->next;
            continue;
        }
        char msg[AOS_ERRMSG_MAX];
        if (o->end) {
            atomic_fetch_add(&a->dropped, 1);
            aos_warn("usage of call %lld not recorded (%llu in, %llu out tokens): the "
                     "database stayed away: %s",
                     (long long)o->row, (unsigned long long)o->r.input_tokens,
                     (unsigned long long)o->r.output_tokens, why);
            finish(a, o, AOS_OK, NULL);
        } else {
            snprintf(msg, sizeof msg,
                     "the usage database is unavailable (%s); nothing was sent to the "
                     "provider",
                     why);
            finish(a, o, AOS_ERR_UNAVAILABLE, msg);
        }
    }
    return keep;
}

static op *concat(op *x, op *y)
{
    if (!x)
        return y;
    op *t = x;
    while (t->next)
        t = t->next;
    t->next = y;
    return x;
}

static void *lane_main(void *arg)
{
    lane *l = arg;
    acct *a = l->a;
    op *ops = NULL;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->head && !ops && !l->stop)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop && !l->head && !ops) {
            pthread_mutex_unlock(&l->mu);
            return NULL;
        }
        /* what queued meanwhile joins the batch, in order */
        ops = concat(ops, l->head);
        l->head = l->tail = NULL;
        pthread_mutex_unlock(&l->mu);

        char why[AOS_ERRMSG_MAX] = "";
        PGconn *c = srv_pg_wait(l->pg, 100, why, sizeof why);
        if (!c) {
            atomic_fetch_add(&a->waits, 1);
            ops = expire(a, ops, why);
            continue;
        }
        aos_err rc = run_batch(l, c, ops, l->end, why, sizeof why);
        if (rc != AOS_OK) {
            db_retry v = db_retry_take();
            srv_pg_check(l->pg);
            if (v != DB_FINAL) { /* the database went away or a race was lost: again */
                atomic_fetch_add(&a->waits, 1);
                ops = expire(a, ops, why);
                continue;
            }
            /* a final error is a bug in the books, not in the call: say so for each */
            aos_error("llm.calls: %s", why);
            while (ops) {
                op *o = ops;
                ops = o->next;
                if (o->end)
                    atomic_fetch_add(&a->dropped, 1);
                finish(a, o, AOS_ERR_INTERNAL, why);
            }
            continue;
        }
        db_retry_take();
        atomic_fetch_add(&a->batches, 1);
        while (ops) {
            op *o = ops;
            ops = o->next;
            finish(a, o, AOS_OK, NULL);
        }
    }
}

static void lane_stop(lane *l)
{
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->th, NULL);
    }
    srv_pg_close(l->pg);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
}

aos_err acct_start(srv *s, acct **out, char *why, size_t whylen)
{
    acct *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(why, whylen, "no memory for the accounting");
        return AOS_ERR_NOMEM;
    }
    a->s = s;
    aos_err rc = AOS_OK;
    int n = 0;
    for (; n < 2 && rc == AOS_OK; n++) {
        lane *l = &a->lanes[n];
        l->a = a;
        l->end = n == LANE_END;
        /* orphans are closed once, by the begins' first batch, before any row of ours */
        l->orphans_done = l->end;
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, NULL);
        rc = srv_pg_open(srv_pg_dsn(s), &l->pg, why, whylen);
        if (rc == AOS_OK && pthread_create(&l->th, NULL, lane_main, l)) {
            snprintf(why, whylen, "cannot start the accounting thread");
            rc = AOS_ERR_INTERNAL;
        }
        l->started = rc == AOS_OK;
    }
    if (rc != AOS_OK) {
        for (int i = 0; i < n; i++)
            lane_stop(&a->lanes[i]);
        free(a);
        return rc;
    }
    *out = a;
    return AOS_OK;
}

void acct_stop(acct *a)
{
    if (!a)
        return;
    for (int i = 0; i < 2; i++)
        lane_stop(&a->lanes[i]);
    free(a);
}

void acct_stats(acct *a, srv_stats *st)
{
    srv_stat(st, "acct.begins", (int64_t)atomic_load(&a->begins), NULL);
    srv_stat(st, "acct.ends", (int64_t)atomic_load(&a->ends), NULL);
    srv_stat(st, "acct.batches", (int64_t)atomic_load(&a->batches), NULL);
    srv_stat(st, "acct.db_waits", (int64_t)atomic_load(&a->waits), NULL);
    srv_stat(st, "acct.dropped", (int64_t)atomic_load(&a->dropped), NULL);
}
