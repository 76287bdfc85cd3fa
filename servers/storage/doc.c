/* Documents: JSON objects (jsonb) per agent collection; put with optional compare-and-set,
 * get, delete, and query by equality on top-level fields (jsonb containment, GIN indexed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "storage.pb-c.h"

static const db_stmt st_insert = {
    "stg_doc_insert",
    "INSERT INTO storage.doc AS d (agent, coll, id, body, version) "
    "VALUES ($1, $2, $3, $4::jsonb, 1) ON CONFLICT (agent, coll, id) DO UPDATE "
    "SET body = EXCLUDED.body, version = d.version + 1, updated_at = now() "
    "WHERE NOT $5 RETURNING version", 5};
static const db_stmt st_update = {
    "stg_doc_update",
    "UPDATE storage.doc SET body = $4::jsonb, version = version + 1, updated_at = now() "
    "WHERE agent = $1 AND coll = $2 AND id = $3 AND version = $5 RETURNING version", 5};
static const db_stmt st_version = {
    "stg_doc_version",
    "SELECT version FROM storage.doc WHERE agent = $1 AND coll = $2 AND id = $3", 3};
static const db_stmt st_get = {
    "stg_doc_get",
    "SELECT body, version FROM storage.doc WHERE agent = $1 AND coll = $2 AND id = $3", 3};
static const db_stmt st_query = {
    "stg_doc_query",
    "SELECT id, body, version FROM storage.doc WHERE agent = $1 AND coll = $2 AND id > $3 "
    "AND body @> $4::jsonb ORDER BY id LIMIT $5", 5};
static const db_stmt st_delete = {
    "stg_doc_delete",
    "DELETE FROM storage.doc WHERE agent = $1 AND coll = $2 AND id = $3 RETURNING version", 3};

/* jsonb's binary input: a version byte, then the text. Caller frees. */
static uint8_t *jsonb_bin(ProtobufCBinaryData b, size_t *len)
{
    uint8_t *p = malloc(b.len + 1);
    if (!p)
        return NULL;
    p[0] = 1;
    memcpy(p + 1, b.data, b.len);
    *len = b.len + 1;
    return p;
}

/* Collection and id of a request, checked. */
static aos_err coll_id(stg_call *c, ProtobufCBinaryData coll, ProtobufCBinaryData id,
                       char *collbuf, char *idbuf)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_valid_name(coll, "collection", NULL, collbuf, why, sizeof why)) ||
        (idbuf && (e = stg_valid_key(id, "document id", idbuf, why, sizeof why))))
        return stg_fail(c, e, "%s", why);
    return AOS_ERR_OK;
}

typedef struct put_arg {
    const Aos__Storage__DocPutRequest *rq;
    const char *coll, *id;
    const uint8_t *body;
    size_t blen;
} put_arg;

static aos_err put_tx(stg_call *c, void *arg)
{
    put_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->coll);
    dp_bytes(&p, a->rq->id.data, a->rq->id.len);
    dp_bytes(&p, a->body, a->blen);
    int update = a->rq->cas && a->rq->if_version > 0;
    if (update)
        dp_i64(&p, (int64_t)a->rq->if_version);
    else
        dp_bool(&p, a->rq->cas);
    aos_err e = stg_exec(c, update ? &st_update : &st_insert, &p, &r);
    if (e)
        return e;
    if (PQntuples(r) == 1) {
        Aos__Storage__DocPutReply rp = AOS__STORAGE__DOC_PUT_REPLY__INIT;
        rp.version = (uint64_t)db_i64(r, 0, 0);
        PQclear(r);
        return stg_reply(c, &rp.base);
    }
    PQclear(r);
    p.n = 3;
    int64_t cur;
    if ((e = stg_exec_i64(c, &st_version, &p, &cur)))
        return e;
    return stg_fail(c, AOS_ERR_CONFLICT, "version mismatch: document \"%.200s\" is at "
                    "version %lld, not %llu", a->id, (long long)cur,
                    (unsigned long long)a->rq->if_version);
}

aos_err op_doc_put(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], coll[AOS_NAME_MAX + 1], id[AOS_KEY_MAX + 1];
    aos_err e;
    uint8_t *body = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__DocPutRequest *rq = stg_decode(c, &aos__storage__doc_put_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = coll_id(c, rq->collection, rq->id, coll, id)))
        goto out;
    if (rq->json.len > c->st->cfg.value_max) {
        e = stg_fail(c, AOS_ERR_TOO_BIG, "document is %zu bytes, at most %zu allowed "
                     "(AOS_STORAGE_VALUE_MAX)", rq->json.len, c->st->cfg.value_max);
        goto out;
    }
    if ((e = stg_valid_json(rq->json, "document", 1, 0, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if ((!rq->cas && rq->if_version) || rq->if_version > INT64_MAX) {
        e = stg_fail(c, AOS_ERR_USAGE, "if_version is given without cas, or out of range");
        goto out;
    }
    put_arg a = {.rq = rq, .coll = coll, .id = id};
    if (!(body = jsonb_bin(rq->json, &a.blen))) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    a.body = body;
    e = stg_tx(c, put_tx, &a);
out:
    free(body);
    stg_free(rq);
    return e;
}

aos_err op_doc_get(stg_call *c)
{
    char coll[AOS_NAME_MAX + 1], id[AOS_KEY_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__DocGetRequest *rq = stg_decode(c, &aos__storage__doc_get_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = coll_id(c, rq->collection, rq->id, coll, id)) || (e = stg_check_deadline(c)))
        goto out;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, coll);
    dp_bytes(&p, rq->id.data, rq->id.len);
    PGresult *r;
    if ((e = stg_exec(c, &st_get, &p, &r)))
        goto out;
    if (PQntuples(r) == 0) {
        e = stg_fail(c, AOS_ERR_NOT_FOUND, "no document \"%.200s\" in collection %s", id,
                     coll);
    } else {
        Aos__Storage__Doc d = AOS__STORAGE__DOC__INIT;
        Aos__Storage__DocGetReply rp = AOS__STORAGE__DOC_GET_REPLY__INIT;
        d.id = rq->id;
        d.json.data = (uint8_t *)db_jsonb(r, 0, 0, &d.json.len);
        d.version = (uint64_t)db_i64(r, 0, 1);
        rp.doc = &d;
        e = stg_reply(c, &rp.base);
    }
    PQclear(r);
out:
    stg_free(rq);
    return e;
}

typedef struct query_arg {
    const Aos__Storage__DocQueryRequest *rq;
    const char *coll;
    const uint8_t *filter;
    size_t flen;
    uint32_t limit;
} query_arg;

static aos_err query_tx(stg_call *c, void *arg)
{
    query_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->coll);
    dp_bytes(&p, a->rq->after.data, a->rq->after.len);
    dp_bytes(&p, a->filter, a->flen);
    dp_i64(&p, (int64_t)a->limit + 1);
    aos_err e = stg_exec(c, &st_query, &p, &r);
    if (e)
        return e;
    int rows = PQntuples(r), n = 0;
    Aos__Storage__Doc *docs = calloc((size_t)rows + 1, sizeof *docs);
    Aos__Storage__Doc **dptr = calloc((size_t)rows + 1, sizeof *dptr);
    if (!docs || !dptr) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    Aos__Storage__DocQueryReply rp = AOS__STORAGE__DOC_QUERY_REPLY__INIT;
    size_t bytes = 0;
    for (int i = 0; i < rows; i++) {
        size_t jl;
        const uint8_t *j = db_jsonb(r, i, 1, &jl);
        if (n == (int)a->limit || (n > 0 && bytes + jl > STG_PAGE_BYTES)) {
            rp.next = docs[n - 1].id;
            break;
        }
        aos__storage__doc__init(&docs[n]);
        docs[n].id.data = (uint8_t *)db_bytes(r, i, 0, &docs[n].id.len);
        docs[n].json.data = (uint8_t *)j;
        docs[n].json.len = jl;
        docs[n].version = (uint64_t)db_i64(r, i, 2);
        bytes += jl;
        dptr[n] = &docs[n];
        n++;
    }
    rp.n_docs = (size_t)n;
    rp.docs = dptr;
    e = stg_reply(c, &rp.base);
out:
    free(docs);
    free(dptr);
    PQclear(r);
    return e;
}

aos_err op_doc_query(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], coll[AOS_NAME_MAX + 1], tmp[AOS_KEY_MAX + 1];
    aos_err e;
    uint8_t *filter = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__DocQueryRequest *rq =
        stg_decode(c, &aos__storage__doc_query_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    query_arg a = {.rq = rq, .coll = coll};
    ProtobufCBinaryData all = {2, (uint8_t *)"{}"};
    ProtobufCBinaryData f = rq->filter.len ? rq->filter : all;
    if ((e = coll_id(c, rq->collection, rq->after, coll, NULL)))
        goto out;
    if ((rq->after.len && (e = stg_valid_key(rq->after, "after", tmp, why, sizeof why))) ||
        (e = stg_valid_limit(rq->limit, AOS_LIST_DEFAULT, AOS_LIST_MAX, "limit", &a.limit, why,
                             sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if (f.len > 65536) {
        e = stg_fail(c, AOS_ERR_TOO_BIG, "filter is %zu bytes, at most 65536 allowed", f.len);
        goto out;
    }
    if ((e = stg_valid_json(f, "filter", 1, 1, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if (!(filter = jsonb_bin(f, &a.flen))) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    a.filter = filter;
    e = stg_read_tx(c, query_tx, &a);
out:
    free(filter);
    stg_free(rq);
    return e;
}

typedef struct del_arg {
    const Aos__Storage__DocDeleteRequest *rq;
    const char *coll, *id;
} del_arg;

static aos_err delete_tx(stg_call *c, void *arg)
{
    del_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->coll);
    dp_bytes(&p, a->rq->id.data, a->rq->id.len);
    aos_err e = stg_exec(c, &st_delete, &p, &r);
    if (e)
        return e;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return stg_fail(c, AOS_ERR_NOT_FOUND, "no document \"%.200s\" in collection %s",
                        a->id, a->coll);
    }
    Aos__Storage__DocDeleteReply rp = AOS__STORAGE__DOC_DELETE_REPLY__INIT;
    rp.version = (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    return stg_reply(c, &rp.base);
}

aos_err op_doc_delete(stg_call *c)
{
    char coll[AOS_NAME_MAX + 1], id[AOS_KEY_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__DocDeleteRequest *rq =
        stg_decode(c, &aos__storage__doc_delete_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if (!(e = coll_id(c, rq->collection, rq->id, coll, id))) {
        del_arg a = {rq, coll, id};
        e = stg_tx(c, delete_tx, &a);
    }
    stg_free(rq);
    return e;
}
