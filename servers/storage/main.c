/* aos-storage: agents' durable state in PostgreSQL (key/value, documents, blobs,
 * checkpoints, step log, queues), served as "storage.<op>" through the common serve loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sodium.h>

#include "aos/log.h"
#include "batch.h"
#include "notify.h"
#include "ops.h"
#include "schema.h"
#include "serve.h"

static stg_cfg cfg;

/* One attempt of a method on the connection db_run hands out. */
typedef struct attempt_arg {
    stg_call *c;
    stg_fn fn;
} attempt_arg;

static aos_err attempt(PGconn *db, void *arg, srv_reply *rep)
{
    attempt_arg *a = arg;
    (void)rep;   /* the same as a->c->rep */
    a->c->db = db;
    return a->fn(a->c);
}

/* Every method goes through here: db_run gives the handler the worker's connection,
 * waits for the database when it is away, and runs the handler again when the database
 * went away under it (safe: reads have no effect, and a mutation that did commit is
 * answered from its idempotency record), until the deadline is near. */
static aos_err dispatch(srv *s, const aos_env *req, srv_reply *rep, const char *op, stg_fn fn)
{
    stg *st = srv_state(s);
    stg_call c = {
        .st = st,
        .agent = req->agent_id,
        .request_id = req->has_request_id ? req->request_id : NULL,
        .deadline_ms = req->deadline_ms,
        .op = op,
        .payload = req->payload,
        .len = req->payload_len,
        .rep = rep,
    };
    char what[64];
    snprintf(what, sizeof what, "storage.%s", op);
    attempt_arg a = {&c, fn};
    aos_err e = db_serve(s, c.deadline_ms, what, rep, attempt, &a, &st->db);
    if (!e)
        stg_sweep(&c);
    return e;
}

#define WRAP(name, fn)                                                                     \
    static aos_err w_##fn(srv *s, const aos_env *req, srv_reply *rep)                      \
    {                                                                                      \
        return dispatch(s, req, rep, name, fn);                                            \
    }
STG_OP_TABLE(WRAP)
#undef WRAP

#define METHOD(name, h) {.op = name, .fn = w_##h},
static const srv_method methods[] = {STG_OP_TABLE(METHOD)};
#undef METHOD

static aos_err st_open(srv *s, char *why, size_t whylen)
{
    if (sodium_init() < 0) {
        snprintf(why, whylen, "libsodium failed to initialise");
        return AOS_ERR_INTERNAL;
    }
    stg *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    st->cfg = cfg;
    /* The serve loop's worker count (AOS_WORKERS, set by aosd, wins over ours); half of
     * them at most may sit in a waiting queue.recv. */
    unsigned workers = cfg.workers;
    const char *w = getenv("AOS_WORKERS");
    if (w && atoi(w) > 0)
        workers = (unsigned)atoi(w);
    st->max_waiting = workers / 2 > 0 ? (int)(workers / 2) : 1;
    /* One group commit at a time: a batch never waits for another's row locks, so batches
     * cannot deadlock, and the next batch gathers while this one commits. */
    st->puts = batcher_new(1, 1);
    /* Concurrent kv.gets become one statement: PostgreSQL's cost of a statement (executor
     * set-up, a round trip, two wake-ups) is most of a key lookup's. */
    if (cfg.get_leaders)
        st->gets = stg_get_batcher_new(cfg.get_leaders);
    st->notify = notify_new(srv_pg_dsn(s), geteuid() == 0);
    if (!st->puts || (cfg.get_leaders && !st->gets)) {
        batcher_free(st->puts);
        batcher_free(st->gets);
        notify_free(st->notify);
        snprintf(why, whylen, "out of memory");
        free(st);
        return AOS_ERR_NOMEM;
    }
    srv_set_state(s, st);
    aos_info("value cap %zu bytes, blob quota %llu bytes per agent, %u queue tries, "
             "%u workers", cfg.value_max, (unsigned long long)cfg.blob_quota, cfg.max_tries,
             cfg.workers);
    return AOS_ERR_OK;
}

static void st_stats(srv *s, srv_stats *out)
{
    stg *st = srv_state(s);
    if (!st)
        return;
    uint64_t b = atomic_load(&st->n_batches), n = atomic_load(&st->n_batched);
    srv_stat(out, "storage_calls", (int64_t)atomic_load(&st->db.calls), NULL);
    srv_stat(out, "storage_errors", (int64_t)atomic_load(&st->db.errors), NULL);
    srv_stat(out, "durable_replays", (int64_t)atomic_load(&st->n_replays),
             "retried requests answered from their idempotency record");
    srv_stat(out, "db_reruns", (int64_t)atomic_load(&st->db.reruns),
             "transactions run again after the database went away or a race was lost");
    srv_stat(out, "db_waited_ms", (int64_t)atomic_load(&st->db.waited_ms),
             "time requests spent waiting for the database to come back");
    srv_stat(out, "batches", (int64_t)b, "group commits");
    srv_stat(out, "batched", (int64_t)n, "requests carried by them");
    srv_stat(out, "get_groups", (int64_t)atomic_load(&st->n_groups),
             "statements that answered concurrent kv.gets");
    srv_stat(out, "get_grouped", (int64_t)atomic_load(&st->n_grouped), "kv.gets they answered");
    srv_stat(out, "value_max", (int64_t)st->cfg.value_max, NULL);
    srv_stat(out, "blob_quota", (int64_t)st->cfg.blob_quota, NULL);
    srv_stat(out, "queue_listening", notify_listening(st->notify),
             st->notify ? "LISTEN " STG_NOTIFY_CHANNEL : "no listener: receivers poll");
    srv_stat(out, "queue_notifications", (int64_t)notify_count(st->notify), NULL);
}

static void st_close(srv *s)
{
    stg *st = srv_state(s);
    /* Workers may still be inside the batchers (the serve loop stops waiting for them after
     * a while) and the process exits next: stop the listener, free nothing they use. */
    if (st)
        notify_stop(st->notify);
}

int main(int argc, char **argv)
{
    char why[256];
    if (stg_cfg_load(&cfg, why, sizeof why) != AOS_ERR_OK) {
        fprintf(stderr, "aos-storage: %s\n", why);
        return 2;
    }
    srv_def def = {
        .name = "storage",
        .methods = methods,
        .n_methods = sizeof methods / sizeof methods[0],
        .schema = &stg_schema,
        .open = st_open,
        .add_stats = st_stats,
        .close = st_close,
        .workers = cfg.workers,
    };
    return srv_main(&def, argc, argv);
}
