/* Key/value per agent: put (with compare-and-set and TTL) and incr by group commit, get,
 * list by prefix in pages, delete. Values are bytes up to value_max. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "ops.h"
#include "storage.pb-c.h"

#define TTL_MAX_MS (UINT64_C(10) * 366 * 24 * 3600 * 1000)  /* ten years */

static const db_stmt st_put = {
    "stg_kv_put",
    "SELECT status, result, message, replayed FROM storage.kv_put($1, $2, $3, $4, $5, $6, $7, "
    "$8)", 8};
static const db_stmt st_incr = {
    "stg_kv_incr",
    "SELECT status, result, message, replayed FROM storage.kv_incr($1, $2, $3, $4, $5)", 5};
/* expires_at comes as it is (stg_ts_ms): converting it in SQL was a tenth of the query. */
static const db_stmt st_get = {
    "stg_kv_get",
    "SELECT value, version, expires_at FROM storage.kv WHERE agent = $1 AND key = $2 "
    "AND (expires_at IS NULL OR expires_at > now())", 2};
/* Concurrent gets as one statement: the (agent, key) pairs of every waiting get, each
 * answered by its place in the arrays. Pairs, not key = ANY($2) under one agent, because
 * the gets that wait together come from many agents; each row still matches its own
 * agent's key only. One index probe per pair (a nested loop over the primary key). */
static const db_stmt st_get_group = {
    "stg_kv_get_group",
    "SELECT k.value, k.version, k.expires_at, q.i "
    "FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS q(agent, key, i) "
    "JOIN storage.kv k ON k.agent = q.agent AND k.key = q.key "
    "WHERE k.expires_at IS NULL OR k.expires_at > now()", 2};
static const stg_group get_group = {&st_get_group, {25, 17}};   /* text, bytea */
/* Two forms of a page, so that a prefix is a bounded index range: with an upper bound and
 * without (an empty prefix, or one of 0xff bytes). */
#define LIST_COLS                                                                          \
    "SELECT key, version, octet_length(value)::bigint, "                                   \
    "coalesce(floor(extract(epoch FROM expires_at) * 1000)::bigint, 0), "                   \
    "CASE WHEN $5 THEN value END FROM storage.kv "
static const db_stmt st_list_to = {
    "stg_kv_list_to",
    LIST_COLS "WHERE agent = $1 AND key >= $2 AND key > $3 AND key < $6 "
    "AND (expires_at IS NULL OR expires_at > now()) ORDER BY key LIMIT $4", 6};
static const db_stmt st_list = {
    "stg_kv_list",
    LIST_COLS "WHERE agent = $1 AND key >= $2 AND key > $3 "
    "AND (expires_at IS NULL OR expires_at > now()) ORDER BY key LIMIT $4", 5};
static const db_stmt st_delete = {
    "stg_kv_delete",
    "DELETE FROM storage.kv WHERE agent = $1 AND key = $2 AND (NOT $3 OR version = $4) "
    "AND (expires_at IS NULL OR expires_at > now()) RETURNING version", 4};
static const db_stmt st_version = {
    "stg_kv_version",
    "SELECT version FROM storage.kv WHERE agent = $1 AND key = $2 "
    "AND (expires_at IS NULL OR expires_at > now())", 2};

/* The row of kv_put / kv_incr: (status, result, message, replayed). The result of a success
 * (first run or replay) goes to *res (n bytes, big-endian int64s, borrowed from r). */
static aos_err fn_row(stg_call *c, const PGresult *r, int row, size_t want,
                      const uint8_t **res)
{
    if (row < 0 || PQntuples(r) != 1 || PQnfields(r) != 4)
        return stg_fail(c, AOS_ERR_INTERNAL, "storage.%s: unexpected result shape", c->op);
    int st = db_i32(r, row, 0);
    if (db_bool(r, row, 3))
        atomic_fetch_add(&c->st->n_replays, 1);
    size_t n;
    if (st != AOS_ERR_OK) {
        const uint8_t *m = db_bytes(r, row, 2, &n);
        return stg_fail(c, aos_err_valid(st) ? (aos_err)st : AOS_ERR_INTERNAL, "%.*s",
                        (int)n, (const char *)m);
    }
    *res = db_bytes(r, row, 1, &n);
    if (n != want)
        return stg_fail(c, AOS_ERR_INTERNAL, "storage.%s: recorded result of %zu bytes",
                        c->op, n);
    return AOS_ERR_OK;
}

static int64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static aos_err put_finish(stg_call *c, const PGresult *r, int row, void *arg)
{
    (void)arg;
    const uint8_t *res;
    aos_err e = fn_row(c, r, row, 8, &res);
    if (e)
        return e;
    Aos__Storage__KvPutReply rp = AOS__STORAGE__KV_PUT_REPLY__INIT;
    rp.version = (uint64_t)be64(res);
    return stg_reply(c, &rp.base);
}

static aos_err incr_finish(stg_call *c, const PGresult *r, int row, void *arg)
{
    (void)arg;
    const uint8_t *res;
    aos_err e = fn_row(c, r, row, 16, &res);
    if (e)
        return e;
    Aos__Storage__KvIncrReply rp = AOS__STORAGE__KV_INCR_REPLY__INIT;
    rp.value = be64(res);
    rp.version = (uint64_t)be64(res + 8);
    return stg_reply(c, &rp.base);
}

/* What every kv mutation checks before it is queued. */
static aos_err mutation_ok(stg_call *c)
{
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    if (!c->request_id)
        return stg_fail(c, AOS_ERR_USAGE, "storage.%s changes data and needs a request id "
                        "(the idempotency key)", c->op);
    return AOS_ERR_OK;
}

aos_err op_kv_put(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], key[AOS_KEY_MAX + 1];
    aos_err e;
    if ((e = mutation_ok(c)))
        return e;
    Aos__Storage__KvPutRequest *rq = stg_decode(c, &aos__storage__kv_put_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_key(rq->key, "key", key, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if (rq->value.len > c->st->cfg.value_max) {
        e = stg_fail(c, AOS_ERR_TOO_BIG, "value is %zu bytes, at most %zu allowed "
                     "(AOS_STORAGE_VALUE_MAX); store larger objects as blobs", rq->value.len,
                     c->st->cfg.value_max);
        goto out;
    }
    if (rq->ttl_ms > TTL_MAX_MS || (!rq->cas && rq->if_version)) {
        e = stg_fail(c, AOS_ERR_USAGE, rq->ttl_ms > TTL_MAX_MS ? "ttl_ms is beyond ten years"
                     : "if_version is given without cas");
        goto out;
    }
    if (rq->if_version > INT64_MAX) {
        e = stg_fail(c, AOS_ERR_USAGE, "if_version is out of range");
        goto out;
    }
    uint8_t fp[STG_FP_LEN];
    stg_fingerprint(c, fp);
    stg_job job = {.stmt = &st_put, .bytes = rq->value.len, .finish = put_finish,
                   .unique_is_retry = 1};
    dp_init(&job.p);
    dp_text(&job.p, c->agent);
    dp_bytes(&job.p, c->request_id, AOS_ID_LEN);
    dp_bytes(&job.p, fp, sizeof fp);
    dp_bytes(&job.p, rq->key.data, rq->key.len);
    dp_bytes(&job.p, rq->value.data, rq->value.len);
    dp_bool(&job.p, rq->cas);
    dp_i64(&job.p, (int64_t)rq->if_version);
    dp_i64(&job.p, (int64_t)rq->ttl_ms);
    e = batcher_run(c->st->puts, c, &job);
out:
    stg_free(rq);
    return e;
}

aos_err op_kv_incr(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], key[AOS_KEY_MAX + 1];
    aos_err e;
    if ((e = mutation_ok(c)))
        return e;
    Aos__Storage__KvIncrRequest *rq =
        stg_decode(c, &aos__storage__kv_incr_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_key(rq->key, "key", key, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    uint8_t fp[STG_FP_LEN];
    stg_fingerprint(c, fp);
    stg_job job = {.stmt = &st_incr, .bytes = 8, .finish = incr_finish,
                   .unique_is_retry = 1};
    dp_init(&job.p);
    dp_text(&job.p, c->agent);
    dp_bytes(&job.p, c->request_id, AOS_ID_LEN);
    dp_bytes(&job.p, fp, sizeof fp);
    dp_bytes(&job.p, rq->key.data, rq->key.len);
    dp_i64(&job.p, rq->delta);
    e = batcher_run(c->st->puts, c, &job);
out:
    stg_free(rq);
    return e;
}

/* The reply of a get from its row (of st_get or of the group's statement). */
static aos_err get_finish(stg_call *c, const PGresult *r, int row, void *arg)
{
    const char *key = arg;
    if (row < 0)
        return stg_fail(c, AOS_ERR_NOT_FOUND, "no key \"%.200s\"", key);
    Aos__Storage__KvGetReply rp = AOS__STORAGE__KV_GET_REPLY__INIT;
    rp.value.data = (uint8_t *)db_bytes(r, row, 0, &rp.value.len);
    rp.version = (uint64_t)db_i64(r, row, 1);
    rp.expires_at_ms = (uint64_t)stg_ts_ms(r, row, 2);
    return stg_reply(c, &rp.base);
}

stg_batcher *stg_get_batcher_new(unsigned max_leaders)
{
    return batcher_new_group(&get_group, max_leaders);
}

aos_err op_kv_get(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], key[AOS_KEY_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__KvGetRequest *rq = stg_decode(c, &aos__storage__kv_get_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_key(rq->key, "key", key, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    stg_job job = {.stmt = &st_get, .bytes = rq->key.len, .finish = get_finish, .arg = key};
    dp_init(&job.p);
    dp_text(&job.p, c->agent);
    dp_bytes(&job.p, rq->key.data, rq->key.len);
    if (c->st->gets) {
        e = batcher_run(c->st->gets, c, &job);
    } else {
        PGresult *r;
        if ((e = stg_check_deadline(c)))
            goto out;
        if ((e = stg_exec(c, &st_get, &job.p, &r)))
            goto out;
        e = get_finish(c, r, PQntuples(r) > 0 ? 0 : -1, key);
        PQclear(r);
    }
out:
    stg_free(rq);
    return e;
}

aos_err op_kv_list(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], tmp[AOS_KEY_MAX + 1];
    aos_err e;
    PGresult *r = NULL;
    Aos__Storage__KvEntry *ents = NULL, **eptr = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__KvListRequest *rq =
        stg_decode(c, &aos__storage__kv_list_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    uint32_t limit;
    if ((rq->prefix.len && (e = stg_valid_key(rq->prefix, "prefix", tmp, why, sizeof why))) ||
        (rq->after.len && (e = stg_valid_key(rq->after, "after", tmp, why, sizeof why))) ||
        (e = stg_valid_limit(rq->limit, AOS_LIST_DEFAULT, AOS_LIST_MAX, "limit", &limit, why,
                             sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if ((e = stg_check_deadline(c)))
        goto out;
    uint8_t end[AOS_KEY_MAX];
    size_t endlen = stg_prefix_end(rq->prefix.data, rq->prefix.len, end);
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_bytes(&p, rq->prefix.data, rq->prefix.len);
    dp_bytes(&p, rq->after.data, rq->after.len);
    dp_i64(&p, (int64_t)limit + 1);   /* one more: is there a next page? */
    dp_bool(&p, rq->values);
    if (endlen)
        dp_bytes(&p, end, endlen);
    if ((e = stg_exec(c, endlen ? &st_list_to : &st_list, &p, &r)))
        goto out;
    int rows = PQntuples(r), n = 0;
    ents = calloc((size_t)rows + 1, sizeof *ents);
    eptr = calloc((size_t)rows + 1, sizeof *eptr);
    if (!ents || !eptr) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    Aos__Storage__KvListReply rp = AOS__STORAGE__KV_LIST_REPLY__INIT;
    size_t bytes = 0;
    for (int i = 0; i < rows; i++) {
        size_t vlen = 0;
        const uint8_t *v = rq->values ? db_bytes(r, i, 4, &vlen) : NULL;
        /* a full page (or the byte cap, when a value is already in) ends here */
        if (n == (int)limit || (n > 0 && bytes + vlen > STG_PAGE_BYTES)) {
            rp.next = ents[n - 1].key;
            break;
        }
        Aos__Storage__KvEntry *en = &ents[n];
        aos__storage__kv_entry__init(en);
        en->key.data = (uint8_t *)db_bytes(r, i, 0, &en->key.len);
        en->version = (uint64_t)db_i64(r, i, 1);
        en->size = (uint64_t)db_i64(r, i, 2);
        en->expires_at_ms = (uint64_t)db_i64(r, i, 3);
        if (v) {
            en->value.data = (uint8_t *)v;
            en->value.len = vlen;
        }
        bytes += vlen;
        eptr[n++] = en;
    }
    rp.n_entries = (size_t)n;
    rp.entries = eptr;
    e = stg_reply(c, &rp.base);
out:
    free(ents);
    free(eptr);
    PQclear(r);
    stg_free(rq);
    return e;
}

typedef struct del_arg {
    const Aos__Storage__KvDeleteRequest *rq;
    const char *key;
} del_arg;

static aos_err delete_tx(stg_call *c, void *arg)
{
    del_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_bytes(&p, a->rq->key.data, a->rq->key.len);
    dp_bool(&p, a->rq->cas);
    dp_i64(&p, (int64_t)a->rq->if_version);
    aos_err e = stg_exec(c, &st_delete, &p, &r);
    if (e)
        return e;
    if (PQntuples(r) == 1) {
        Aos__Storage__KvDeleteReply rp = AOS__STORAGE__KV_DELETE_REPLY__INIT;
        rp.version = (uint64_t)db_i64(r, 0, 0);
        PQclear(r);
        return stg_reply(c, &rp.base);
    }
    PQclear(r);
    /* nothing deleted: absent, or (with cas) at another version */
    p.n = 2;
    int64_t cur;
    if ((e = stg_exec_i64(c, &st_version, &p, &cur)))
        return e;
    if (!cur)
        return stg_fail(c, AOS_ERR_NOT_FOUND, "no key \"%.200s\"", a->key);
    return stg_fail(c, AOS_ERR_CONFLICT, "version mismatch: the key is at version %lld, "
                    "not %llu", (long long)cur, (unsigned long long)a->rq->if_version);
}

aos_err op_kv_delete(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], key[AOS_KEY_MAX + 1];
    aos_err e;
    if ((e = mutation_ok(c)))
        return e;
    Aos__Storage__KvDeleteRequest *rq =
        stg_decode(c, &aos__storage__kv_delete_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_key(rq->key, "key", key, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
    } else if (!rq->cas && rq->if_version) {
        e = stg_fail(c, AOS_ERR_USAGE, "if_version is given without cas");
    } else if (rq->if_version > INT64_MAX) {
        e = stg_fail(c, AOS_ERR_USAGE, "if_version is out of range");
    } else {
        del_arg a = {rq, key};
        e = stg_tx(c, delete_tx, &a);
    }
    stg_free(rq);
    return e;
}
