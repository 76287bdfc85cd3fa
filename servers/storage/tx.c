/* Transactions for storage handlers: every mutation runs in one transaction with its
 * idempotency record, acknowledged only once COMMIT succeeded; plus the periodic sweep. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pidem.h"
#include "stg.h"

/* stg_fingerprint fills the record's fingerprint */
_Static_assert(PIDEM_FP_LEN == STG_FP_LEN, "fingerprints agree with pidem's records");

static void rollback(stg_call *c)
{
    /* Best effort: on a broken connection the transaction is gone with it. */
    PGresult *r = PQexec(c->db, "ROLLBACK");
    PQclear(r);
}

static aos_err commit(stg_call *c, char *why, size_t whylen)
{
    PGresult *r = PQexec(c->db, "COMMIT");
    aos_err e = AOS_ERR_OK;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
        e = db_error(c->db, r, why, whylen);
    else if (strcmp(PQcmdStatus(r), "COMMIT")) {
        /* COMMIT of an aborted transaction answers ROLLBACK */
        snprintf(why, whylen, "transaction rolled back at commit");
        e = AOS_ERR_INTERNAL;
    }
    PQclear(r);
    return e;
}

/* BEGIN, and the deadline as this transaction's statement_timeout. */
static aos_err begin(stg_call *c, const char *sql, char *why, size_t whylen)
{
    aos_err e = db_cmd(c->db, sql, why, whylen);
    if (e)
        return e;
    uint32_t left = stg_left_ms(c);
    if (left != UINT32_MAX) {
        char set[64];
        snprintf(set, sizeof set, "SET LOCAL statement_timeout = %u", left ? left : 1);
        if ((e = db_cmd(c->db, set, why, whylen)))
            rollback(c);
    }
    return e;
}

aos_err stg_tx(stg_call *c, stg_tx_fn fn, void *arg)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if (!c->request_id)
        return stg_fail(c, AOS_ERR_USAGE, "storage.%s changes data and needs a request id "
                        "(the idempotency key)", c->op);
    if ((e = stg_check_deadline(c)))
        return e;
    pidem_key k = {.schema = "storage", .agent = c->agent, .request_id = c->request_id,
                  .method = c->op};
    stg_fingerprint(c, k.fingerprint);
    pidem_prior prior;
    if ((e = begin(c, "BEGIN", why, sizeof why)))
        return stg_fail(c, e, "storage.%s: %s", c->op, why);
    if ((e = pidem_claim(c->db, &k, &prior, why, sizeof why))) {
        rollback(c);
        return stg_fail(c, e, "storage.%s: %s", c->op, why);
    }
    if (prior.found) {
        rollback(c);
        atomic_fetch_add(&c->st->n_replays, 1);
        free(c->rep->payload);
        c->rep->payload = prior.result;   /* the reply takes the recorded bytes */
        c->rep->len = prior.len;
        prior.result = NULL;
        aos_err st = (aos_err)prior.status;
        pidem_prior_clear(&prior);
        return st;
    }
    e = fn(c, arg);
    if (e) {
        rollback(c);
        return e;
    }
    if ((e = pidem_record(c->db, &k, AOS_ERR_OK, c->rep->payload, c->rep->len, why,
                         sizeof why))) {
        rollback(c);
        return stg_fail(c, e, "storage.%s: %s", c->op, why);
    }
    if ((e = commit(c, why, sizeof why))) {
        /* Maybe committed, maybe not: the caller retries with the same request id and the
         * record answers either way. Never acknowledged without a commit. */
        return stg_fail(c, e == AOS_ERR_INTERNAL ? AOS_ERR_UNAVAILABLE : e,
                        "storage.%s: commit failed, outcome unknown (retry with the same "
                        "request id): %s", c->op, why);
    }
    return AOS_ERR_OK;
}

aos_err stg_read_tx(stg_call *c, stg_tx_fn fn, void *arg)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_check_deadline(c)))
        return e;
    if ((e = begin(c, "BEGIN READ ONLY", why, sizeof why)))
        return stg_fail(c, e, "storage.%s: %s", c->op, why);
    e = fn(c, arg);
    rollback(c);
    return e;
}

void stg_sweep(stg_call *c)
{
    uint64_t now = aos_now_ms(), last = atomic_load(&c->st->last_sweep_ms);
    if (now < last + 10000 ||
        !atomic_compare_exchange_strong(&c->st->last_sweep_ms, &last, now))
        return;
    /* Bounded steps, so that the request that pays for the sweep is not held long. */
    static const char *const steps[] = {
        "DELETE FROM storage.kv WHERE ctid = ANY (ARRAY(SELECT ctid FROM storage.kv "
        "WHERE expires_at <= now() LIMIT 1000))",
        "DELETE FROM storage.blob_upload WHERE ctid = ANY (ARRAY(SELECT ctid FROM "
        "storage.blob_upload WHERE created_at < now() - interval '1 day' LIMIT 1000))",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        PGresult *r = PQexec(c->db, steps[i]);
        PQclear(r);
    }
    char why[256];
    uint64_t n;
    pidem_prune(c->db, "storage", c->st->cfg.idem_ttl_ms, &n, why, sizeof why);
}
