/* libaos storage (see aos/storage.h): each function checks its arguments, encodes one
 * storage.* request, calls aosd, and turns the reply into plain C the caller owns. */
#include "aos/storage.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.pb-c.h"
#include "rpc.h"

#define BLOB_CHUNK (256u << 10)
#define BLOB_READ (1u << 20)
/* a chunk the server refuses would make every blob over the lowest usual cap unstorable */
_Static_assert(BLOB_CHUNK <= AOS_VALUE_MAX_DEFAULT, "a blob chunk is within the value cap");

static aos_err say(char *why, size_t whylen, aos_err e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err say(char *why, size_t whylen, aos_err e, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return e;
}

/* A required text argument of at most max bytes. */
static aos_err need(const char *s, const char *what, size_t max, char *why, size_t whylen)
{
    if (!s || !*s)
        return say(why, whylen, AOS_ERR_USAGE, "%s is missing", what);
    if (strlen(s) > max)
        return say(why, whylen, AOS_ERR_TOO_BIG, "%s is %zu bytes, at most %zu allowed", what,
                   strlen(s), max);
    return AOS_ERR_OK;
}

static ProtobufCBinaryData txt(const char *s)
{
    ProtobufCBinaryData b = {s ? strlen(s) : 0, (uint8_t *)s};
    return b;
}

static ProtobufCBinaryData raw(const void *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

/* A malloc'd copy of b with a NUL after it (also for empty b). */
static uint8_t *dupb(ProtobufCBinaryData b)
{
    uint8_t *p = malloc(b.len + 1);
    if (p) {
        if (b.len)
            memcpy(p, b.data, b.len);
        p[b.len] = 0;
    }
    return p;
}

static char *dups(ProtobufCBinaryData b)
{
    return (char *)dupb(b);
}

/* ---- key/value ------------------------------------------------------------------------- */

aos_err aos_kv_put(aos_conn *c, const aos_call_opts *o, const char *key, const void *value,
                   size_t len, const aos_kv_put_opts *po, uint64_t *version, char *why,
                   size_t whylen)
{
    aos_err e = need(key, "key", AOS_KEY_MAX, why, whylen);
    if (e)
        return e;
    if (!value && len)
        return say(why, whylen, AOS_ERR_USAGE, "value is NULL");
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key = txt(key);
    rq.value = raw(value, len);
    if (po) {
        rq.cas = po->cas;
        rq.if_version = po->if_version;
        rq.ttl_ms = po->ttl_ms;
    }
    Aos__Storage__KvPutReply *rp;
    if ((e = aos_rpc(c, o, "storage.kv.put", &rq.base, &aos__storage__kv_put_reply__descriptor,
                 (void **)&rp, why, whylen)))
        return e;
    if (version)
        *version = rp->version;
    aos__storage__kv_put_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

aos_err aos_kv_get(aos_conn *c, const aos_call_opts *o, const char *key, uint8_t **value,
                   size_t *len, uint64_t *version, char *why, size_t whylen)
{
    if (value)
        *value = NULL;
    aos_err e = need(key, "key", AOS_KEY_MAX, why, whylen);
    if (e)
        return e;
    Aos__Storage__KvGetRequest rq = AOS__STORAGE__KV_GET_REQUEST__INIT;
    rq.key = txt(key);
    Aos__Storage__KvGetReply *rp;
    if ((e = aos_rpc(c, o, "storage.kv.get", &rq.base, &aos__storage__kv_get_reply__descriptor,
                 (void **)&rp, why, whylen)))
        return e;
    if (value && !(*value = dupb(rp->value)))
        e = say(why, whylen, AOS_ERR_NOMEM, "out of memory");
    if (len)
        *len = rp->value.len;
    if (version)
        *version = rp->version;
    aos__storage__kv_get_reply__free_unpacked(rp, NULL);
    return e;
}

void aos_kv_page_free(aos_kv_page *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->entries[i].key);
        free(l->entries[i].value);
    }
    free(l->entries);
    free(l->next);
    free(l);
}

aos_err aos_kv_list(aos_conn *c, const aos_call_opts *o, const char *prefix, const char *after,
                    uint32_t limit, int values, aos_kv_page **out, char *why, size_t whylen)
{
    *out = NULL;
    if ((prefix && strlen(prefix) > AOS_KEY_MAX) || (after && strlen(after) > AOS_KEY_MAX))
        return say(why, whylen, AOS_ERR_TOO_BIG, "prefix or after is over %d bytes",
                   AOS_KEY_MAX);
    Aos__Storage__KvListRequest rq = AOS__STORAGE__KV_LIST_REQUEST__INIT;
    rq.prefix = txt(prefix);
    rq.after = txt(after);
    rq.limit = limit;
    rq.values = values != 0;
    Aos__Storage__KvListReply *rp;
    aos_err e = aos_rpc(c, o, "storage.kv.list", &rq.base, &aos__storage__kv_list_reply__descriptor,
                    (void **)&rp, why, whylen);
    if (e)
        return e;
    aos_kv_page *l = calloc(1, sizeof *l);
    if (!l || !(l->entries = calloc(rp->n_entries + 1, sizeof *l->entries)))
        goto nomem;
    l->n = rp->n_entries;   /* zeroed entries free as they are, if we stop half way */
    for (size_t i = 0; i < rp->n_entries; i++) {
        const Aos__Storage__KvEntry *en = rp->entries[i];
        aos_kv_entry *d = &l->entries[i];
        d->version = en->version;
        d->size = en->size;
        d->expires_at_ms = en->expires_at_ms;
        if (!(d->key = dups(en->key)))
            goto nomem;
        if (values) {
            if (!(d->value = dupb(en->value)))
                goto nomem;
            d->value_len = en->value.len;
        }
    }
    if (rp->next.len && !(l->next = dups(rp->next)))
        goto nomem;
    aos__storage__kv_list_reply__free_unpacked(rp, NULL);
    *out = l;
    return AOS_ERR_OK;
nomem:
    aos_kv_page_free(l);
    aos__storage__kv_list_reply__free_unpacked(rp, NULL);
    return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
}

aos_err aos_kv_delete(aos_conn *c, const aos_call_opts *o, const char *key,
                      const uint64_t *if_version, char *why, size_t whylen)
{
    aos_err e = need(key, "key", AOS_KEY_MAX, why, whylen);
    if (e)
        return e;
    Aos__Storage__KvDeleteRequest rq = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
    rq.key = txt(key);
    if (if_version) {
        rq.cas = 1;
        rq.if_version = *if_version;
    }
    return aos_rpc(c, o, "storage.kv.delete", &rq.base, NULL, NULL, why, whylen);
}

aos_err aos_kv_incr(aos_conn *c, const aos_call_opts *o, const char *key, int64_t delta,
                    int64_t *value, char *why, size_t whylen)
{
    aos_err e = need(key, "key", AOS_KEY_MAX, why, whylen);
    if (e)
        return e;
    Aos__Storage__KvIncrRequest rq = AOS__STORAGE__KV_INCR_REQUEST__INIT;
    rq.key = txt(key);
    rq.delta = delta;
    Aos__Storage__KvIncrReply *rp;
    if ((e = aos_rpc(c, o, "storage.kv.incr", &rq.base, &aos__storage__kv_incr_reply__descriptor,
                 (void **)&rp, why, whylen)))
        return e;
    if (value)
        *value = rp->value;
    aos__storage__kv_incr_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

/* ---- documents --------------------------------------------------------------------------- */

static aos_err coll_id(const char *coll, const char *id, char *why, size_t whylen)
{
    aos_err e = need(coll, "collection", AOS_NAME_MAX, why, whylen);
    if (!e && id != (const char *)1)
        e = need(id, "document id", AOS_KEY_MAX, why, whylen);
    return e;
}

aos_err aos_doc_put(aos_conn *c, const aos_call_opts *o, const char *collection, const char *id,
                    const char *json, const uint64_t *if_version, uint64_t *version, char *why,
                    size_t whylen)
{
    aos_err e = coll_id(collection, id, why, whylen);
    if (e || (e = need(json, "document", AOS_MSG_MAX, why, whylen)))
        return e;
    Aos__Storage__DocPutRequest rq = AOS__STORAGE__DOC_PUT_REQUEST__INIT;
    rq.collection = txt(collection);
    rq.id = txt(id);
    rq.json = txt(json);
    if (if_version) {
        rq.cas = 1;
        rq.if_version = *if_version;
    }
    Aos__Storage__DocPutReply *rp;
    if ((e = aos_rpc(c, o, "storage.doc.put", &rq.base, &aos__storage__doc_put_reply__descriptor,
                 (void **)&rp, why, whylen)))
        return e;
    if (version)
        *version = rp->version;
    aos__storage__doc_put_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

aos_err aos_doc_get(aos_conn *c, const aos_call_opts *o, const char *collection, const char *id,
                    char **json, uint64_t *version, char *why, size_t whylen)
{
    if (json)
        *json = NULL;
    aos_err e = coll_id(collection, id, why, whylen);
    if (e)
        return e;
    Aos__Storage__DocGetRequest rq = AOS__STORAGE__DOC_GET_REQUEST__INIT;
    rq.collection = txt(collection);
    rq.id = txt(id);
    Aos__Storage__DocGetReply *rp;
    if ((e = aos_rpc(c, o, "storage.doc.get", &rq.base, &aos__storage__doc_get_reply__descriptor,
                 (void **)&rp, why, whylen)))
        return e;
    if (!rp->doc)
        e = say(why, whylen, AOS_ERR_PROTO, "storage.doc.get: reply without a document");
    else {
        if (json && !(*json = dups(rp->doc->json)))
            e = say(why, whylen, AOS_ERR_NOMEM, "out of memory");
        if (version)
            *version = rp->doc->version;
    }
    aos__storage__doc_get_reply__free_unpacked(rp, NULL);
    return e;
}

void aos_doc_page_free(aos_doc_page *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->docs[i].id);
        free(l->docs[i].json);
    }
    free(l->docs);
    free(l->next);
    free(l);
}

aos_err aos_doc_query(aos_conn *c, const aos_call_opts *o, const char *collection,
                      const char *filter, const char *after, uint32_t limit, aos_doc_page **out,
                      char *why, size_t whylen)
{
    *out = NULL;
    aos_err e = coll_id(collection, (const char *)1, why, whylen);
    if (e)
        return e;
    Aos__Storage__DocQueryRequest rq = AOS__STORAGE__DOC_QUERY_REQUEST__INIT;
    rq.collection = txt(collection);
    rq.filter = txt(filter);
    rq.after = txt(after);
    rq.limit = limit;
    Aos__Storage__DocQueryReply *rp;
    if ((e = aos_rpc(c, o, "storage.doc.query", &rq.base,
                 &aos__storage__doc_query_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    aos_doc_page *l = calloc(1, sizeof *l);
    if (!l || !(l->docs = calloc(rp->n_docs + 1, sizeof *l->docs)))
        goto nomem;
    l->n = rp->n_docs;
    for (size_t i = 0; i < rp->n_docs; i++) {
        l->docs[i].version = rp->docs[i]->version;
        if (!(l->docs[i].id = dups(rp->docs[i]->id)) ||
            !(l->docs[i].json = dups(rp->docs[i]->json)))
            goto nomem;
    }
    if (rp->next.len && !(l->next = dups(rp->next)))
        goto nomem;
    aos__storage__doc_query_reply__free_unpacked(rp, NULL);
    *out = l;
    return AOS_ERR_OK;
nomem:
    aos_doc_page_free(l);
    aos__storage__doc_query_reply__free_unpacked(rp, NULL);
    return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
}

aos_err aos_doc_delete(aos_conn *c, const aos_call_opts *o, const char *collection,
                       const char *id, char *why, size_t whylen)
{
    aos_err e = coll_id(collection, id, why, whylen);
    if (e)
        return e;
    Aos__Storage__DocDeleteRequest rq = AOS__STORAGE__DOC_DELETE_REQUEST__INIT;
    rq.collection = txt(collection);
    rq.id = txt(id);
    return aos_rpc(c, o, "storage.doc.delete", &rq.base, NULL, NULL, why, whylen);
}

/* ---- blobs ------------------------------------------------------------------------------- */

/* The sub-call ids of a multi-call operation: derived from the caller's request id when it
 * gave one (so that a retry of the whole operation replays each step), else fresh. */
static void sub_id(const aos_call_opts *o, uint32_t tag, uint64_t n, uint8_t out[AOS_ID_LEN])
{
    if (!o || !o->request_id) {
        aos_id_random(out);
        return;
    }
    memcpy(out, o->request_id, AOS_ID_LEN);
    for (int i = 0; i < 4; i++)
        out[i] ^= (uint8_t)(tag >> (8 * i));
    for (int i = 0; i < 8; i++)
        out[8 + i] ^= (uint8_t)(n >> (8 * i));
}

aos_err aos_blob_put(aos_conn *c, const aos_call_opts *o, const void *data, size_t len,
                     uint8_t sha256[AOS_SHA256_LEN], char *why, size_t whylen)
{
    if (!len || !data)
        return say(why, whylen, AOS_ERR_USAGE, "a blob needs at least one byte");
    aos_call_opts so = o ? *o : (aos_call_opts){0};
    uint8_t upload[AOS_ID_LEN], rid[AOS_ID_LEN];
    sub_id(o, 0x55504c44u, 0, upload);
    aos_err e;
    uint64_t k = 1;
    for (size_t off = 0; off < len; off += BLOB_CHUNK, k++) {
        Aos__Storage__BlobWriteRequest rq = AOS__STORAGE__BLOB_WRITE_REQUEST__INIT;
        rq.upload = raw(upload, sizeof upload);
        rq.offset = off;
        rq.data = raw((const uint8_t *)data + off, len - off < BLOB_CHUNK ? len - off : BLOB_CHUNK);
        sub_id(o, 0x57524954u, k, rid);
        so.request_id = rid;
        if ((e = aos_rpc(c, &so, "storage.blob.write", &rq.base, NULL, NULL, why, whylen)))
            return e;
    }
    Aos__Storage__BlobCommitRequest rq = AOS__STORAGE__BLOB_COMMIT_REQUEST__INIT;
    rq.upload = raw(upload, sizeof upload);
    sub_id(o, 0x434f4d54u, 0, rid);
    so.request_id = rid;
    Aos__Storage__BlobCommitReply *rp;
    if ((e = aos_rpc(c, &so, "storage.blob.commit", &rq.base,
                 &aos__storage__blob_commit_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    if (!rp->blob || rp->blob->sha256.len != AOS_SHA256_LEN)
        e = say(why, whylen, AOS_ERR_PROTO, "storage.blob.commit: reply without a hash");
    else if (sha256)
        memcpy(sha256, rp->blob->sha256.data, AOS_SHA256_LEN);
    aos__storage__blob_commit_reply__free_unpacked(rp, NULL);
    return e;
}

aos_err aos_blob_get(aos_conn *c, const aos_call_opts *o, const uint8_t sha256[AOS_SHA256_LEN],
                     uint64_t offset, size_t len, size_t max_len, uint8_t **data, size_t *got,
                     uint64_t *size, char *why, size_t whylen)
{
    *data = NULL;
    *got = 0;
    if (!sha256)
        return say(why, whylen, AOS_ERR_USAGE, "sha256 is missing");
    uint8_t *buf = NULL;
    size_t have = 0, want = len;
    uint64_t total = 0;
    aos_err e = AOS_ERR_OK;
    for (int first = 1;; first = 0) {
        Aos__Storage__BlobReadRequest rq = AOS__STORAGE__BLOB_READ_REQUEST__INIT;
        rq.sha256 = raw(sha256, AOS_SHA256_LEN);
        rq.offset = offset + have;
        rq.length = BLOB_READ;
        if (want && want - have < BLOB_READ)
            rq.length = (uint32_t)(want - have);
        Aos__Storage__BlobReadReply *rp;
        if ((e = aos_rpc(c, o, "storage.blob.read", &rq.base,
                     &aos__storage__blob_read_reply__descriptor, (void **)&rp, why, whylen)))
            goto fail;
        if (first) {
            total = rp->size;
            uint64_t avail = offset < total ? total - offset : 0;
            if (!want || want > avail)
                want = (size_t)avail;
            if (want > max_len) {
                aos__storage__blob_read_reply__free_unpacked(rp, NULL);
                e = say(why, whylen, AOS_ERR_TOO_BIG, "blob range is %zu bytes, over the %zu "
                        "asked for at most", want, max_len);
                goto fail;
            }
            if (!(buf = malloc(want + 1))) {
                aos__storage__blob_read_reply__free_unpacked(rp, NULL);
                e = say(why, whylen, AOS_ERR_NOMEM, "out of memory");
                goto fail;
            }
        }
        size_t n = rp->data.len < want - have ? rp->data.len : want - have;
        memcpy(buf + have, rp->data.data, n);
        have += n;
        aos__storage__blob_read_reply__free_unpacked(rp, NULL);
        if (have == want)
            break;
        if (n == 0) {
            e = say(why, whylen, AOS_ERR_PROTO, "storage.blob.read: the blob ended early");
            goto fail;
        }
    }
    buf[have] = 0;
    *data = buf;
    *got = have;
    if (size)
        *size = total;
    return AOS_ERR_OK;
fail:
    free(buf);
    return e;
}

aos_err aos_blob_delete(aos_conn *c, const aos_call_opts *o,
                        const uint8_t sha256[AOS_SHA256_LEN], char *why, size_t whylen)
{
    if (!sha256)
        return say(why, whylen, AOS_ERR_USAGE, "sha256 is missing");
    Aos__Storage__BlobDeleteRequest rq = AOS__STORAGE__BLOB_DELETE_REQUEST__INIT;
    rq.sha256 = raw(sha256, AOS_SHA256_LEN);
    return aos_rpc(c, o, "storage.blob.delete", &rq.base, NULL, NULL, why, whylen);
}

/* ---- checkpoints --------------------------------------------------------------------------- */

void aos_ckpt_info_clear(aos_ckpt_info *i)
{
    if (!i)
        return;
    free(i->name);
    free(i->meta);
    memset(i, 0, sizeof *i);
}

void aos_ckpt_page_free(aos_ckpt_page *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        aos_ckpt_info_clear(&l->items[i]);
    free(l->items);
    free(l);
}

static int info_of(const Aos__Storage__CheckpointInfo *s, aos_ckpt_info *d)
{
    memset(d, 0, sizeof *d);
    d->version = s->version;
    d->size = s->size;
    d->created_ms = s->created_ms;
    if (!(d->name = dups(s->name)))
        return -1;
    if (s->meta.len && !(d->meta = dups(s->meta)))
        return -1;
    return 0;
}

aos_err aos_ckpt_save(aos_conn *c, const aos_call_opts *o, const char *name, const void *data,
                      size_t len, const char *meta, uint64_t *version, char *why, size_t whylen)
{
    if (name && strlen(name) > AOS_NAME_MAX)
        return say(why, whylen, AOS_ERR_TOO_BIG, "checkpoint name is over %d bytes",
                   AOS_NAME_MAX);
    if (!data && len)
        return say(why, whylen, AOS_ERR_USAGE, "data is NULL");
    Aos__Storage__CheckpointSaveRequest rq = AOS__STORAGE__CHECKPOINT_SAVE_REQUEST__INIT;
    rq.name = txt(name);
    rq.data = raw(data, len);
    rq.meta = txt(meta);
    Aos__Storage__CheckpointSaveReply *rp;
    aos_err e = aos_rpc(c, o, "storage.checkpoint.save", &rq.base,
                    &aos__storage__checkpoint_save_reply__descriptor, (void **)&rp, why, whylen);
    if (e)
        return e;
    if (version)
        *version = rp->version;
    aos__storage__checkpoint_save_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

aos_err aos_ckpt_load(aos_conn *c, const aos_call_opts *o, const char *name, uint64_t version,
                      uint8_t **data, size_t *len, aos_ckpt_info *info, char *why,
                      size_t whylen)
{
    if (data)
        *data = NULL;
    if (info)
        memset(info, 0, sizeof *info);
    if (name && strlen(name) > AOS_NAME_MAX)
        return say(why, whylen, AOS_ERR_TOO_BIG, "checkpoint name is over %d bytes",
                   AOS_NAME_MAX);
    Aos__Storage__CheckpointLoadRequest rq = AOS__STORAGE__CHECKPOINT_LOAD_REQUEST__INIT;
    rq.name = txt(name);
    rq.version = version;
    Aos__Storage__CheckpointLoadReply *rp;
    aos_err e = aos_rpc(c, o, "storage.checkpoint.load", &rq.base,
                    &aos__storage__checkpoint_load_reply__descriptor, (void **)&rp, why, whylen);
    if (e)
        return e;
    if (!rp->info) {
        e = say(why, whylen, AOS_ERR_PROTO, "storage.checkpoint.load: reply without info");
    } else if ((data && !(*data = dupb(rp->data))) || (info && info_of(rp->info, info))) {
        if (data) {
            free(*data);
            *data = NULL;
        }
        aos_ckpt_info_clear(info);
        e = say(why, whylen, AOS_ERR_NOMEM, "out of memory");
    } else if (len) {
        *len = rp->data.len;
    }
    aos__storage__checkpoint_load_reply__free_unpacked(rp, NULL);
    return e;
}

aos_err aos_ckpt_list(aos_conn *c, const aos_call_opts *o, const char *name, uint32_t limit,
                      aos_ckpt_page **out, char *why, size_t whylen)
{
    *out = NULL;
    if (name && strlen(name) > AOS_NAME_MAX)
        return say(why, whylen, AOS_ERR_TOO_BIG, "checkpoint name is over %d bytes",
                   AOS_NAME_MAX);
    Aos__Storage__CheckpointListRequest rq = AOS__STORAGE__CHECKPOINT_LIST_REQUEST__INIT;
    rq.name = txt(name);
    rq.limit = limit;
    Aos__Storage__CheckpointListReply *rp;
    aos_err e = aos_rpc(c, o, "storage.checkpoint.list", &rq.base,
                    &aos__storage__checkpoint_list_reply__descriptor, (void **)&rp, why, whylen);
    if (e)
        return e;
    aos_ckpt_page *l = calloc(1, sizeof *l);
    if (!l || !(l->items = calloc(rp->n_checkpoints + 1, sizeof *l->items)))
        goto nomem;
    l->n = rp->n_checkpoints;
    for (size_t i = 0; i < rp->n_checkpoints; i++)
        if (info_of(rp->checkpoints[i], &l->items[i]))
            goto nomem;
    aos__storage__checkpoint_list_reply__free_unpacked(rp, NULL);
    *out = l;
    return AOS_ERR_OK;
nomem:
    aos_ckpt_page_free(l);
    aos__storage__checkpoint_list_reply__free_unpacked(rp, NULL);
    return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
}

aos_err aos_ckpt_prune(aos_conn *c, const aos_call_opts *o, const char *name, uint32_t keep,
                       uint64_t *deleted, char *why, size_t whylen)
{
    if (keep < 1)
        return say(why, whylen, AOS_ERR_USAGE, "keep must be at least 1");
    Aos__Storage__CheckpointPruneRequest rq = AOS__STORAGE__CHECKPOINT_PRUNE_REQUEST__INIT;
    rq.name = txt(name);
    rq.keep = keep;
    Aos__Storage__CheckpointPruneReply *rp;
    aos_err e = aos_rpc(c, o, "storage.checkpoint.prune", &rq.base,
                    &aos__storage__checkpoint_prune_reply__descriptor, (void **)&rp, why,
                    whylen);
    if (e)
        return e;
    if (deleted)
        *deleted = rp->deleted;
    aos__storage__checkpoint_prune_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

/* ---- step log ------------------------------------------------------------------------------ */

aos_err aos_step_append(aos_conn *c, const aos_call_opts *o, const char *run, uint64_t step,
                        const char *kind, const void *data, size_t len, int *existed, char *why,
                        size_t whylen)
{
    aos_err e = need(run, "run", AOS_NAME_MAX, why, whylen);
    if (e || (e = need(kind, "step kind", AOS_NAME_MAX, why, whylen)))
        return e;
    if (!data && len)
        return say(why, whylen, AOS_ERR_USAGE, "data is NULL");
    Aos__Storage__StepAppendRequest rq = AOS__STORAGE__STEP_APPEND_REQUEST__INIT;
    rq.run = txt(run);
    rq.step = step;
    rq.kind = txt(kind);
    rq.data = raw(data, len);
    Aos__Storage__StepAppendReply *rp;
    if ((e = aos_rpc(c, o, "storage.step.append", &rq.base,
                 &aos__storage__step_append_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    if (existed)
        *existed = rp->existed;
    aos__storage__step_append_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

void aos_step_page_free(aos_step_page *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->steps[i].kind);
        free(l->steps[i].data);
    }
    free(l->steps);
    free(l);
}

aos_err aos_step_read(aos_conn *c, const aos_call_opts *o, const char *run, uint64_t from_step,
                      uint32_t limit, aos_step_page **out, char *why, size_t whylen)
{
    *out = NULL;
    aos_err e = need(run, "run", AOS_NAME_MAX, why, whylen);
    if (e)
        return e;
    Aos__Storage__StepReadRequest rq = AOS__STORAGE__STEP_READ_REQUEST__INIT;
    rq.run = txt(run);
    rq.from_step = from_step;
    rq.limit = limit;
    Aos__Storage__StepReadReply *rp;
    if ((e = aos_rpc(c, o, "storage.step.read", &rq.base, &aos__storage__step_read_reply__descriptor,
                 (void **)&rp, why, whylen)))
        return e;
    aos_step_page *l = calloc(1, sizeof *l);
    if (!l || !(l->steps = calloc(rp->n_steps + 1, sizeof *l->steps)))
        goto nomem;
    l->last_step = rp->last_step;
    l->n = rp->n_steps;
    for (size_t i = 0; i < rp->n_steps; i++) {
        aos_step *s = &l->steps[i];
        s->step = rp->steps[i]->step;
        s->created_ms = rp->steps[i]->created_ms;
        s->len = rp->steps[i]->data.len;
        if (!(s->kind = dups(rp->steps[i]->kind)) || !(s->data = dupb(rp->steps[i]->data)))
            goto nomem;
    }
    aos__storage__step_read_reply__free_unpacked(rp, NULL);
    *out = l;
    return AOS_ERR_OK;
nomem:
    aos_step_page_free(l);
    aos__storage__step_read_reply__free_unpacked(rp, NULL);
    return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
}

aos_err aos_step_drop(aos_conn *c, const aos_call_opts *o, const char *run, uint64_t *deleted,
                      char *why, size_t whylen)
{
    aos_err e = need(run, "run", AOS_NAME_MAX, why, whylen);
    if (e)
        return e;
    Aos__Storage__StepDropRequest rq = AOS__STORAGE__STEP_DROP_REQUEST__INIT;
    rq.run = txt(run);
    Aos__Storage__StepDropReply *rp;
    if ((e = aos_rpc(c, o, "storage.step.drop", &rq.base,
                     &aos__storage__step_drop_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    if (deleted)
        *deleted = rp->deleted;
    aos__storage__step_drop_reply__free_unpacked(rp, NULL);
    return AOS_OK;
}

/* ---- queues -------------------------------------------------------------------------------- */

aos_err aos_queue_send(aos_conn *c, const aos_call_opts *o, const char *queue, const void *body,
                       size_t len, const aos_queue_send_opts *so, uint64_t *id, char *why,
                       size_t whylen)
{
    aos_err e = need(queue, "queue", AOS_NAME_MAX, why, whylen);
    if (e)
        return e;
    if (!body && len)
        return say(why, whylen, AOS_ERR_USAGE, "body is NULL");
    Aos__Storage__QueueSendRequest rq = AOS__STORAGE__QUEUE_SEND_REQUEST__INIT;
    rq.queue = txt(queue);
    rq.body = raw(body, len);
    if (so) {
        rq.delay_ms = so->delay_ms;
        rq.max_tries = so->max_tries;
        rq.to_agent = txt(so->to_agent);
    }
    Aos__Storage__QueueSendReply *rp;
    if ((e = aos_rpc(c, o, "storage.queue.send", &rq.base,
                 &aos__storage__queue_send_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    if (id)
        *id = rp->id;
    aos__storage__queue_send_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

void aos_queue_msgs_free(aos_queue_msgs *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->msgs[i].body);
        free(m->msgs[i].from_agent);
    }
    free(m->msgs);
    free(m);
}

aos_err aos_queue_recv(aos_conn *c, const aos_call_opts *o, const char *queue, uint32_t max,
                       uint32_t visibility_ms, uint32_t wait_ms, aos_queue_msgs **out, char *why,
                       size_t whylen)
{
    *out = NULL;
    aos_err e = need(queue, "queue", AOS_NAME_MAX, why, whylen);
    if (e)
        return e;
    /* The call must outlive the wait, or the reply arrives after we stopped listening. */
    aos_call_opts co = o ? *o : (aos_call_opts){0};
    uint32_t t = co.timeout_ms ? co.timeout_ms : AOS_DEFAULT_TIMEOUT_MS;
    if (wait_ms && t < wait_ms + 5000u)
        co.timeout_ms = wait_ms + 5000u;
    Aos__Storage__QueueRecvRequest rq = AOS__STORAGE__QUEUE_RECV_REQUEST__INIT;
    rq.queue = txt(queue);
    rq.max = max;
    rq.visibility_ms = visibility_ms;
    rq.wait_ms = wait_ms;
    Aos__Storage__QueueRecvReply *rp;
    if ((e = aos_rpc(c, &co, "storage.queue.recv", &rq.base,
                 &aos__storage__queue_recv_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    aos_queue_msgs *m = calloc(1, sizeof *m);
    if (!m || !(m->msgs = calloc(rp->n_messages + 1, sizeof *m->msgs)))
        goto nomem;
    m->n = rp->n_messages;
    for (size_t i = 0; i < rp->n_messages; i++) {
        const Aos__Storage__QueueMessage *s = rp->messages[i];
        aos_queue_msg *d = &m->msgs[i];
        d->id = s->id;
        d->tries = s->tries;
        d->enqueued_ms = s->enqueued_ms;
        if (s->receipt.len == AOS_RECEIPT_LEN)
            memcpy(d->receipt, s->receipt.data, AOS_RECEIPT_LEN);
        d->len = s->body.len;
        if (!(d->body = dupb(s->body)) ||
            (s->from_agent.len && !(d->from_agent = dups(s->from_agent))))
            goto nomem;
    }
    aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
    *out = m;
    return AOS_ERR_OK;
nomem:
    aos_queue_msgs_free(m);
    aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
    return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
}

aos_err aos_queue_ack(aos_conn *c, const aos_call_opts *o, const char *queue, uint64_t id,
                      const uint8_t receipt[AOS_RECEIPT_LEN], char *why, size_t whylen)
{
    aos_err e = need(queue, "queue", AOS_NAME_MAX, why, whylen);
    if (e)
        return e;
    if (!receipt)
        return say(why, whylen, AOS_ERR_USAGE, "receipt is missing");
    Aos__Storage__QueueAckRequest rq = AOS__STORAGE__QUEUE_ACK_REQUEST__INIT;
    rq.queue = txt(queue);
    rq.id = id;
    rq.receipt = raw(receipt, AOS_RECEIPT_LEN);
    return aos_rpc(c, o, "storage.queue.ack", &rq.base, NULL, NULL, why, whylen);
}

aos_err aos_queue_nack(aos_conn *c, const aos_call_opts *o, const char *queue, uint64_t id,
                       const uint8_t receipt[AOS_RECEIPT_LEN], uint32_t delay_ms, int *dead,
                       char *why, size_t whylen)
{
    aos_err e = need(queue, "queue", AOS_NAME_MAX, why, whylen);
    if (e)
        return e;
    if (!receipt)
        return say(why, whylen, AOS_ERR_USAGE, "receipt is missing");
    Aos__Storage__QueueNackRequest rq = AOS__STORAGE__QUEUE_NACK_REQUEST__INIT;
    rq.queue = txt(queue);
    rq.id = id;
    rq.receipt = raw(receipt, AOS_RECEIPT_LEN);
    rq.delay_ms = delay_ms;
    Aos__Storage__QueueNackReply *rp;
    if ((e = aos_rpc(c, o, "storage.queue.nack", &rq.base,
                 &aos__storage__queue_nack_reply__descriptor, (void **)&rp, why, whylen)))
        return e;
    if (dead)
        *dead = rp->dead;
    aos__storage__queue_nack_reply__free_unpacked(rp, NULL);
    return AOS_ERR_OK;
}

void aos_queue_infos_free(aos_queue_infos *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->queues[i].queue);
    free(l->queues);
    free(l);
}

aos_err aos_queue_list(aos_conn *c, const aos_call_opts *o, aos_queue_infos **out,
                           char *why, size_t whylen)
{
    *out = NULL;
    Aos__Storage__QueueListRequest rq = AOS__STORAGE__QUEUE_LIST_REQUEST__INIT;
    Aos__Storage__QueueListReply *rp;
    aos_err e = aos_rpc(c, o, "storage.queue.list", &rq.base,
                    &aos__storage__queue_list_reply__descriptor, (void **)&rp, why, whylen);
    if (e)
        return e;
    aos_queue_infos *l = calloc(1, sizeof *l);
    if (!l || !(l->queues = calloc(rp->n_queues + 1, sizeof *l->queues)))
        goto nomem;
    l->n = rp->n_queues;
    for (size_t i = 0; i < rp->n_queues; i++) {
        aos_queue_info *q = &l->queues[i];
        q->ready = rp->queues[i]->ready;
        q->inflight = rp->queues[i]->inflight;
        q->delayed = rp->queues[i]->delayed;
        if (!(q->queue = dups(rp->queues[i]->queue)))
            goto nomem;
    }
    aos__storage__queue_list_reply__free_unpacked(rp, NULL);
    *out = l;
    return AOS_ERR_OK;
nomem:
    aos_queue_infos_free(l);
    aos__storage__queue_list_reply__free_unpacked(rp, NULL);
    return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
}
