/* Checkpoints: versioned snapshots of an agent's state (opaque bytes plus JSON metadata)
 * under a name; save, load the latest or version N, list, and prune to the newest K. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "storage.pb-c.h"

#define META_MAX 65536

static const db_stmt st_save = {
    "stg_ckpt_save",
    "WITH h AS (INSERT INTO storage.checkpoint_head AS h (agent, name, last_version) "
    "  VALUES ($1, $2, 1) ON CONFLICT (agent, name) "
    "  DO UPDATE SET last_version = h.last_version + 1 RETURNING last_version) "
    "INSERT INTO storage.checkpoint (agent, name, version, data, meta) "
    "SELECT $1, $2, h.last_version, $3, $4::jsonb FROM h RETURNING version", 4};
#define INFO_COLS                                                                          \
    "SELECT name, version, octet_length(data)::bigint, meta, "                             \
    "floor(extract(epoch FROM created_at) * 1000)::bigint"
static const db_stmt st_load = {
    "stg_ckpt_load",
    INFO_COLS ", data FROM storage.checkpoint WHERE agent = $1 AND name = $2 "
    "AND ($3::bigint = 0 OR version = $3) ORDER BY version DESC LIMIT 1", 3};
static const db_stmt st_list_one = {
    "stg_ckpt_list_one",
    INFO_COLS " FROM storage.checkpoint WHERE agent = $1 AND name = $2 "
    "ORDER BY version DESC LIMIT $3", 3};
static const db_stmt st_list_all = {
    "stg_ckpt_list_all",
    INFO_COLS " FROM storage.checkpoint WHERE agent = $1 "
    "ORDER BY name, version DESC LIMIT $2", 2};
static const db_stmt st_prune = {
    "stg_ckpt_prune",
    "DELETE FROM storage.checkpoint WHERE agent = $1 AND name = $2 AND version < "
    "(SELECT version FROM storage.checkpoint WHERE agent = $1 AND name = $2 "
    " ORDER BY version DESC OFFSET $3::bigint - 1 LIMIT 1)", 3};

static void info_of(const PGresult *r, int i, Aos__Storage__CheckpointInfo *ci)
{
    aos__storage__checkpoint_info__init(ci);
    ci->name.data = (uint8_t *)db_bytes(r, i, 0, &ci->name.len);
    ci->version = (uint64_t)db_i64(r, i, 1);
    ci->size = (uint64_t)db_i64(r, i, 2);
    if (!PQgetisnull(r, i, 3))
        ci->meta.data = (uint8_t *)db_jsonb(r, i, 3, &ci->meta.len);
    ci->created_ms = (uint64_t)db_i64(r, i, 4);
}

typedef struct save_arg {
    const Aos__Storage__CheckpointSaveRequest *rq;
    const char *name;
    uint8_t *meta;
    size_t mlen;
} save_arg;

static aos_err save_tx(stg_call *c, void *arg)
{
    save_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->name);
    dp_bytes(&p, a->rq->data.data, a->rq->data.len);
    if (a->meta)
        dp_bytes(&p, a->meta, a->mlen);
    else
        dp_null(&p);
    aos_err e = stg_exec(c, &st_save, &p, &r);
    if (e)
        return e;
    Aos__Storage__CheckpointSaveReply rp = AOS__STORAGE__CHECKPOINT_SAVE_REPLY__INIT;
    rp.version = (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    return stg_reply(c, &rp.base);
}

aos_err op_ckpt_save(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], name[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__CheckpointSaveRequest *rq =
        stg_decode(c, &aos__storage__checkpoint_save_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    save_arg a = {.rq = rq, .name = name};
    if ((e = stg_valid_name(rq->name, "checkpoint name", "default", name, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
    } else if (rq->data.len > c->st->cfg.value_max) {
        e = stg_fail(c, AOS_ERR_TOO_BIG, "checkpoint is %zu bytes, at most %zu allowed "
                     "(AOS_STORAGE_VALUE_MAX); keep large state in blobs and name them in "
                     "the checkpoint", rq->data.len, c->st->cfg.value_max);
    } else if (rq->meta.len > META_MAX) {
        e = stg_fail(c, AOS_ERR_TOO_BIG, "metadata is %zu bytes, at most %d allowed",
                     rq->meta.len, META_MAX);
    } else if (rq->meta.len &&
               (e = stg_valid_json(rq->meta, "metadata", 0, 0, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
    } else {
        if (rq->meta.len) {
            if (!(a.meta = malloc(rq->meta.len + 1))) {
                e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
                goto out;
            }
            a.meta[0] = 1;   /* jsonb binary input: version byte */
            memcpy(a.meta + 1, rq->meta.data, rq->meta.len);
            a.mlen = rq->meta.len + 1;
        }
        e = stg_tx(c, save_tx, &a);
    }
out:
    free(a.meta);
    stg_free(rq);
    return e;
}

aos_err op_ckpt_load(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], name[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__CheckpointLoadRequest *rq =
        stg_decode(c, &aos__storage__checkpoint_load_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_name(rq->name, "checkpoint name", "default", name, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if (rq->version > INT64_MAX) {
        e = stg_fail(c, AOS_ERR_USAGE, "version is out of range");
        goto out;
    }
    if ((e = stg_check_deadline(c)))
        goto out;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, name);
    dp_i64(&p, (int64_t)rq->version);
    PGresult *r;
    if ((e = stg_exec(c, &st_load, &p, &r)))
        goto out;
    if (PQntuples(r) == 0) {
        if (rq->version)
            e = stg_fail(c, AOS_ERR_NOT_FOUND, "no version %llu of checkpoint %s",
                         (unsigned long long)rq->version, name);
        else
            e = stg_fail(c, AOS_ERR_NOT_FOUND, "no checkpoint %s", name);
    } else {
        Aos__Storage__CheckpointInfo ci;
        Aos__Storage__CheckpointLoadReply rp = AOS__STORAGE__CHECKPOINT_LOAD_REPLY__INIT;
        info_of(r, 0, &ci);
        rp.info = &ci;
        rp.data.data = (uint8_t *)db_bytes(r, 0, 5, &rp.data.len);
        e = stg_reply(c, &rp.base);
    }
    PQclear(r);
out:
    stg_free(rq);
    return e;
}

aos_err op_ckpt_list(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], name[AOS_NAME_MAX + 1];
    aos_err e;
    PGresult *r = NULL;
    Aos__Storage__CheckpointInfo *ci = NULL, **cp = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__CheckpointListRequest *rq =
        stg_decode(c, &aos__storage__checkpoint_list_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    uint32_t limit;
    if ((rq->name.len &&
         (e = stg_valid_name(rq->name, "checkpoint name", NULL, name, why, sizeof why))) ||
        (e = stg_valid_limit(rq->limit, AOS_LIST_DEFAULT, AOS_LIST_MAX, "limit", &limit, why,
                             sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if ((e = stg_check_deadline(c)))
        goto out;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    if (rq->name.len)
        dp_text(&p, name);
    dp_i64(&p, limit);
    if ((e = stg_exec(c, rq->name.len ? &st_list_one : &st_list_all, &p, &r)))
        goto out;
    int n = PQntuples(r);
    ci = calloc((size_t)n + 1, sizeof *ci);
    cp = calloc((size_t)n + 1, sizeof *cp);
    if (!ci || !cp) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        info_of(r, i, &ci[i]);
        cp[i] = &ci[i];
    }
    Aos__Storage__CheckpointListReply rp = AOS__STORAGE__CHECKPOINT_LIST_REPLY__INIT;
    rp.n_checkpoints = (size_t)n;
    rp.checkpoints = cp;
    e = stg_reply(c, &rp.base);
out:
    free(ci);
    free(cp);
    PQclear(r);
    stg_free(rq);
    return e;
}

typedef struct prune_arg {
    const char *name;
    uint32_t keep;
} prune_arg;

static aos_err prune_tx(stg_call *c, void *arg)
{
    prune_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->name);
    dp_i64(&p, a->keep);
    aos_err e = stg_exec(c, &st_prune, &p, &r);
    if (e)
        return e;
    Aos__Storage__CheckpointPruneReply rp = AOS__STORAGE__CHECKPOINT_PRUNE_REPLY__INIT;
    rp.deleted = strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return stg_reply(c, &rp.base);
}

aos_err op_ckpt_prune(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], name[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__CheckpointPruneRequest *rq =
        stg_decode(c, &aos__storage__checkpoint_prune_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_name(rq->name, "checkpoint name", "default", name, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
    } else if (rq->keep < 1) {
        e = stg_fail(c, AOS_ERR_USAGE, "keep must be at least 1");
    } else {
        prune_arg a = {name, rq->keep};
        e = stg_tx(c, prune_tx, &a);
    }
    stg_free(rq);
    return e;
}
