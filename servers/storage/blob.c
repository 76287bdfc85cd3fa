/* Blobs: uploaded in chunks, sealed under their SHA-256 (libsodium), stored once however
 * many agents hold them, read in ranges, and charged to each holder's quota. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "ops.h"
#include "storage.pb-c.h"

_Static_assert(crypto_hash_sha256_BYTES == AOS_SHA256_LEN, "a blob's address is its SHA-256");


/* Blob changes of one agent take this lock, so that two uploads cannot both pass the quota
 * check. The second key keeps clear of other advisory locks. */
static const db_stmt st_lock = {
    "stg_blob_lock", "SELECT pg_advisory_xact_lock(hashtext($1), 7171)", 1};
static const db_stmt st_usage = {
    "stg_blob_usage",
    "SELECT (SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM storage.blob_upload "
    "        WHERE agent = $1 AND upload = $2), "
    "       (SELECT coalesce(sum(size), 0)::bigint FROM storage.blob_ref WHERE agent = $1) + "
    "       (SELECT coalesce(sum(octet_length(data)), 0)::bigint FROM storage.blob_upload "
    "        WHERE agent = $1), "
    "       (SELECT blob_bytes FROM storage.quota WHERE agent = $1)", 2};
static const db_stmt st_stage = {
    "stg_blob_stage",
    "INSERT INTO storage.blob_upload (agent, upload, off, data) VALUES ($1, $2, $3, $4)", 4};
static const db_stmt st_chunks = {
    "stg_blob_chunks",
    "SELECT off, octet_length(data)::bigint FROM storage.blob_upload "
    "WHERE agent = $1 AND upload = $2 ORDER BY off", 2};
static const db_stmt st_chunk = {
    "stg_blob_chunk",
    "SELECT data FROM storage.blob_upload WHERE agent = $1 AND upload = $2 AND off = $3", 3};
static const db_stmt st_content = {
    "stg_blob_content",
    "INSERT INTO storage.blob (sha256, size) VALUES ($1, $2) ON CONFLICT DO NOTHING", 2};
static const db_stmt st_copy = {
    "stg_blob_copy",
    "INSERT INTO storage.blob_chunk (sha256, off, data) SELECT $3, off, data "
    "FROM storage.blob_upload WHERE agent = $1 AND upload = $2", 3};
static const db_stmt st_lock_content = {
    "stg_blob_lock_content",
    "SELECT refs FROM storage.blob WHERE sha256 = $1 FOR UPDATE", 1};
static const db_stmt st_ref = {
    "stg_blob_ref",
    "INSERT INTO storage.blob_ref (agent, sha256, size) VALUES ($1, $2, $3) "
    "ON CONFLICT DO NOTHING", 3};
static const db_stmt st_refs_up = {
    "stg_blob_refs_up", "UPDATE storage.blob SET refs = refs + 1 WHERE sha256 = $1", 1};
static const db_stmt st_unstage = {
    "stg_blob_unstage",
    "DELETE FROM storage.blob_upload WHERE agent = $1 AND upload = $2", 2};
static const db_stmt st_info = {
    "stg_blob_info",
    "SELECT size, floor(extract(epoch FROM created_at) * 1000)::bigint FROM storage.blob_ref "
    "WHERE agent = $1 AND sha256 = $2", 2};
static const db_stmt st_read = {
    "stg_blob_read",
    "SELECT off, data FROM storage.blob_chunk WHERE sha256 = $1 AND off < $3 "
    "AND off + octet_length(data) > $2 ORDER BY off", 3};
static const db_stmt st_unref = {
    "stg_blob_unref",
    "DELETE FROM storage.blob_ref WHERE agent = $1 AND sha256 = $2 RETURNING size", 2};
static const db_stmt st_refs_down = {
    "stg_blob_refs_down",
    "UPDATE storage.blob SET refs = refs - 1 WHERE sha256 = $1 RETURNING refs", 1};
static const db_stmt st_drop = {
    "stg_blob_drop", "DELETE FROM storage.blob WHERE sha256 = $1 AND refs <= 0", 1};
static const db_stmt st_list = {
    "stg_blob_list",
    "SELECT sha256, size, floor(extract(epoch FROM created_at) * 1000)::bigint "
    "FROM storage.blob_ref WHERE agent = $1 AND sha256 > $2 ORDER BY sha256 LIMIT $3", 3};

static void hex(const uint8_t *b, size_t n, char *out)
{
    aos_hex(b, n, out);
}

static aos_err write_tx(stg_call *c, void *arg)
{
    const Aos__Storage__BlobWriteRequest *rq = arg;
    PGresult *r;
    aos_err e;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    if ((e = stg_exec_void(c, &st_lock, &p)))
        return e;
    dp_bytes(&p, rq->upload.data, AOS_ID_LEN);
    if ((e = stg_exec(c, &st_usage, &p, &r)))
        return e;
    uint64_t staged = (uint64_t)db_i64(r, 0, 0), used = (uint64_t)db_i64(r, 0, 1);
    uint64_t quota = PQgetisnull(r, 0, 2) ? c->st->cfg.blob_quota : (uint64_t)db_i64(r, 0, 2);
    PQclear(r);
    if (rq->offset != staged)
        return stg_fail(c, AOS_ERR_CONFLICT, "upload has %llu bytes staged: the next chunk's "
                        "offset must be %llu, not %llu", (unsigned long long)staged,
                        (unsigned long long)staged, (unsigned long long)rq->offset);
    if (used + rq->data.len > quota)
        return stg_fail(c, AOS_ERR_QUOTA, "blob quota exceeded: %llu of %llu bytes in use, "
                        "this chunk needs %zu more", (unsigned long long)used,
                        (unsigned long long)quota, rq->data.len);
    dp_i64(&p, (int64_t)rq->offset);
    dp_bytes(&p, rq->data.data, rq->data.len);
    if ((e = stg_exec_void(c, &st_stage, &p)))
        return e;
    Aos__Storage__BlobWriteReply rp = AOS__STORAGE__BLOB_WRITE_REPLY__INIT;
    rp.size = staged + rq->data.len;
    return stg_reply(c, &rp.base);
}

aos_err op_blob_write(stg_call *c)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__BlobWriteRequest *rq =
        stg_decode(c, &aos__storage__blob_write_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_id(rq->upload, AOS_ID_LEN, "upload", why, sizeof why)))
        e = stg_fail(c, e, "%s", why);
    else if (rq->data.len == 0)
        e = stg_fail(c, AOS_ERR_USAGE, "a chunk needs at least one byte");
    else if (rq->data.len > c->st->cfg.value_max)
        e = stg_fail(c, AOS_ERR_TOO_BIG, "chunk is %zu bytes, at most %zu allowed "
                     "(AOS_STORAGE_VALUE_MAX)", rq->data.len, c->st->cfg.value_max);
    else if (rq->offset > (UINT64_C(1) << 50))
        e = stg_fail(c, AOS_ERR_USAGE, "offset is out of range");
    else
        e = stg_tx(c, write_tx, rq);
    stg_free(rq);
    return e;
}

static aos_err info_reply(stg_call *c, const uint8_t *sha)
{
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_bytes(&p, sha, AOS_SHA256_LEN);
    aos_err e = stg_exec(c, &st_info, &p, &r);
    if (e)
        return e;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return stg_fail(c, AOS_ERR_INTERNAL, "storage.%s: blob reference vanished", c->op);
    }
    Aos__Storage__BlobInfo bi = AOS__STORAGE__BLOB_INFO__INIT;
    Aos__Storage__BlobCommitReply rp = AOS__STORAGE__BLOB_COMMIT_REPLY__INIT;
    bi.sha256.data = (uint8_t *)sha;
    bi.sha256.len = AOS_SHA256_LEN;
    bi.size = (uint64_t)db_i64(r, 0, 0);
    bi.created_ms = (uint64_t)db_i64(r, 0, 1);
    rp.blob = &bi;
    PQclear(r);
    return stg_reply(c, &rp.base);
}

static aos_err commit_tx(stg_call *c, void *arg)
{
    const Aos__Storage__BlobCommitRequest *rq = arg;
    PGresult *r = NULL;
    aos_err e;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    if ((e = stg_exec_void(c, &st_lock, &p)))
        return e;
    dp_bytes(&p, rq->upload.data, AOS_ID_LEN);
    if ((e = stg_exec(c, &st_chunks, &p, &r)))
        return e;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return stg_fail(c, AOS_ERR_NOT_FOUND, "no upload with that id (never written, already "
                        "committed, or abandoned for more than a day)");
    }
    /* Hash chunk by chunk: a blob may be far larger than what we want in memory. */
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    uint64_t size = 0;
    for (int i = 0; i < n; i++) {
        int64_t off = db_i64(r, i, 0);
        if ((uint64_t)off != size) {
            PQclear(r);
            return stg_fail(c, AOS_ERR_INTERNAL, "upload has a hole at byte %llu",
                            (unsigned long long)size);
        }
        db_params q = p;
        q.n = 2;
        dp_i64(&q, off);
        PGresult *cr;
        if ((e = stg_exec(c, &st_chunk, &q, &cr))) {
            PQclear(r);
            return e;
        }
        size_t len;
        const uint8_t *d = db_bytes(cr, 0, 0, &len);
        crypto_hash_sha256_update(&h, d, len);
        size += len;
        PQclear(cr);
    }
    PQclear(r);
    uint8_t sha[AOS_SHA256_LEN];
    crypto_hash_sha256_final(&h, sha);
    if (rq->sha256.len && memcmp(sha, rq->sha256.data, AOS_SHA256_LEN)) {
        char got[2 * AOS_SHA256_LEN + 1], want[2 * AOS_SHA256_LEN + 1];
        hex(sha, AOS_SHA256_LEN, got);
        hex(rq->sha256.data, AOS_SHA256_LEN, want);
        return stg_fail(c, AOS_ERR_CONFLICT, "content hash mismatch: the upload hashes to %s, "
                        "not %s", got, want);
    }
    db_params s;
    dp_init(&s);
    dp_bytes(&s, sha, AOS_SHA256_LEN);
    /* The content row, once (dedup); then hold it locked while we add our reference, so
     * that a concurrent last delete cannot drop it under us. */
    for (int tries = 0;; tries++) {
        db_params q = s;
        dp_i64(&q, (int64_t)size);
        if ((e = stg_exec(c, &st_content, &q, &r)))
            return e;
        int fresh = !strcmp(PQcmdTuples(r), "1");
        PQclear(r);
        if (fresh) {
            q = p;
            dp_bytes(&q, sha, AOS_SHA256_LEN);
            if ((e = stg_exec_void(c, &st_copy, &q)))
                return e;
        }
        if ((e = stg_exec(c, &st_lock_content, &s, &r)))
            return e;
        int there = PQntuples(r) == 1;
        PQclear(r);
        if (there)
            break;
        if (tries == 3)
            return stg_fail(c, AOS_ERR_UNAVAILABLE, "blob content keeps vanishing, retry");
    }
    db_params q;
    dp_init(&q);
    dp_text(&q, c->agent);
    dp_bytes(&q, sha, AOS_SHA256_LEN);
    dp_i64(&q, (int64_t)size);
    if ((e = stg_exec(c, &st_ref, &q, &r)))
        return e;
    int newref = !strcmp(PQcmdTuples(r), "1");
    PQclear(r);
    if (newref && (e = stg_exec_void(c, &st_refs_up, &s)))
        return e;
    if ((e = stg_exec_void(c, &st_unstage, &p)))
        return e;
    return info_reply(c, sha);
}

aos_err op_blob_commit(stg_call *c)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__BlobCommitRequest *rq =
        stg_decode(c, &aos__storage__blob_commit_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_id(rq->upload, AOS_ID_LEN, "upload", why, sizeof why)) ||
        (rq->sha256.len && (e = stg_valid_id(rq->sha256, AOS_SHA256_LEN, "sha256", why, sizeof why))))
        e = stg_fail(c, e, "%s", why);
    else
        e = stg_tx(c, commit_tx, rq);
    stg_free(rq);
    return e;
}

typedef struct read_arg {
    const Aos__Storage__BlobReadRequest *rq;
    uint32_t len;
} read_arg;

static aos_err read_tx(stg_call *c, void *arg)
{
    read_arg *a = arg;
    const Aos__Storage__BlobReadRequest *rq = a->rq;
    PGresult *r;
    aos_err e;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_bytes(&p, rq->sha256.data, AOS_SHA256_LEN);
    if ((e = stg_exec(c, &st_info, &p, &r)))
        return e;
    if (PQntuples(r) == 0) {
        PQclear(r);
        char h[2 * AOS_SHA256_LEN + 1];
        hex(rq->sha256.data, AOS_SHA256_LEN, h);
        return stg_fail(c, AOS_ERR_NOT_FOUND, "no blob %s", h);
    }
    uint64_t size = (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    uint64_t from = rq->offset < size ? rq->offset : size;
    uint64_t to = from + a->len < size ? from + a->len : size;
    uint8_t *buf = malloc(to - from + 1);
    if (!buf)
        return stg_fail(c, AOS_ERR_NOMEM, "out of memory");
    db_params q;
    dp_init(&q);
    dp_bytes(&q, rq->sha256.data, AOS_SHA256_LEN);
    dp_i64(&q, (int64_t)from);
    dp_i64(&q, (int64_t)to);
    if ((e = stg_exec(c, &st_read, &q, &r))) {
        free(buf);
        return e;
    }
    uint64_t filled = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        uint64_t off = (uint64_t)db_i64(r, i, 0);
        size_t len;
        const uint8_t *d = db_bytes(r, i, 1, &len);
        uint64_t lo = off > from ? off : from, hi = off + len < to ? off + len : to;
        if (lo < hi) {
            memcpy(buf + (lo - from), d + (lo - off), hi - lo);
            filled += hi - lo;
        }
    }
    PQclear(r);
    if (filled != to - from) {
        free(buf);
        return stg_fail(c, AOS_ERR_INTERNAL, "blob content is incomplete");
    }
    Aos__Storage__BlobReadReply rp = AOS__STORAGE__BLOB_READ_REPLY__INIT;
    rp.data.data = buf;
    rp.data.len = to - from;
    rp.size = size;
    e = stg_reply(c, &rp.base);
    free(buf);
    return e;
}

aos_err op_blob_read(stg_call *c)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__BlobReadRequest *rq =
        stg_decode(c, &aos__storage__blob_read_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    read_arg a = {rq, rq->length};
    if (!a.len || a.len > c->st->cfg.value_max)
        a.len = (uint32_t)c->st->cfg.value_max;
    if ((e = stg_valid_id(rq->sha256, AOS_SHA256_LEN, "sha256", why, sizeof why)))
        e = stg_fail(c, e, "%s", why);
    else if (rq->offset > (UINT64_C(1) << 50))
        e = stg_fail(c, AOS_ERR_USAGE, "offset is out of range");
    else
        e = stg_read_tx(c, read_tx, &a);
    stg_free(rq);
    return e;
}

static aos_err delete_tx(stg_call *c, void *arg)
{
    const Aos__Storage__BlobDeleteRequest *rq = arg;
    PGresult *r;
    aos_err e;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    if ((e = stg_exec_void(c, &st_lock, &p)))
        return e;
    dp_bytes(&p, rq->sha256.data, AOS_SHA256_LEN);
    if ((e = stg_exec(c, &st_unref, &p, &r)))
        return e;
    int had = PQntuples(r) == 1;
    PQclear(r);
    if (!had) {
        char h[2 * AOS_SHA256_LEN + 1];
        hex(rq->sha256.data, AOS_SHA256_LEN, h);
        return stg_fail(c, AOS_ERR_NOT_FOUND, "no blob %s", h);
    }
    db_params s;
    dp_init(&s);
    dp_bytes(&s, rq->sha256.data, AOS_SHA256_LEN);
    if ((e = stg_exec(c, &st_refs_down, &s, &r)))
        return e;
    int last = PQntuples(r) == 1 && db_i32(r, 0, 0) <= 0;
    PQclear(r);
    if (last && (e = stg_exec_void(c, &st_drop, &s)))
        return e;
    Aos__Storage__BlobDeleteReply rp = AOS__STORAGE__BLOB_DELETE_REPLY__INIT;
    return stg_reply(c, &rp.base);
}

aos_err op_blob_delete(stg_call *c)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__BlobDeleteRequest *rq =
        stg_decode(c, &aos__storage__blob_delete_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_id(rq->sha256, AOS_SHA256_LEN, "sha256", why, sizeof why)))
        e = stg_fail(c, e, "%s", why);
    else
        e = stg_tx(c, delete_tx, rq);
    stg_free(rq);
    return e;
}

typedef struct list_arg {
    const Aos__Storage__BlobListRequest *rq;
    uint32_t limit;
} list_arg;

static aos_err list_tx(stg_call *c, void *arg)
{
    list_arg *a = arg;
    PGresult *r = NULL;
    aos_err e;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_bytes(&p, a->rq->after.data, a->rq->after.len);
    dp_i64(&p, (int64_t)a->limit + 1);
    if ((e = stg_exec(c, &st_list, &p, &r)))
        return e;
    int rows = PQntuples(r), n = 0;
    Aos__Storage__BlobInfo *bi = calloc((size_t)rows + 1, sizeof *bi);
    Aos__Storage__BlobInfo **bp = calloc((size_t)rows + 1, sizeof *bp);
    PGresult *u = NULL;
    if (!bi || !bp) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    Aos__Storage__BlobListReply rp = AOS__STORAGE__BLOB_LIST_REPLY__INIT;
    for (int i = 0; i < rows; i++) {
        if (n == (int)a->limit) {
            rp.next = bi[n - 1].sha256;
            break;
        }
        aos__storage__blob_info__init(&bi[n]);
        bi[n].sha256.data = (uint8_t *)db_bytes(r, i, 0, &bi[n].sha256.len);
        bi[n].size = (uint64_t)db_i64(r, i, 1);
        bi[n].created_ms = (uint64_t)db_i64(r, i, 2);
        bp[n] = &bi[n];
        n++;
    }
    rp.n_blobs = (size_t)n;
    rp.blobs = bp;
    uint8_t none[AOS_ID_LEN] = {0};
    p.n = 1;
    dp_bytes(&p, none, AOS_ID_LEN);
    if ((e = stg_exec(c, &st_usage, &p, &u)))
        goto out;
    rp.used = (uint64_t)db_i64(u, 0, 1);
    rp.quota = PQgetisnull(u, 0, 2) ? c->st->cfg.blob_quota : (uint64_t)db_i64(u, 0, 2);
    e = stg_reply(c, &rp.base);
out:
    PQclear(u);
    PQclear(r);
    free(bi);
    free(bp);
    return e;
}

aos_err op_blob_list(stg_call *c)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__BlobListRequest *rq =
        stg_decode(c, &aos__storage__blob_list_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    list_arg a = {.rq = rq};
    if ((rq->after.len && (e = stg_valid_id(rq->after, AOS_SHA256_LEN, "after", why, sizeof why))) ||
        (e = stg_valid_limit(rq->limit, AOS_LIST_DEFAULT, AOS_LIST_MAX, "limit", &a.limit, why,
                             sizeof why)))
        e = stg_fail(c, e, "%s", why);
    else
        e = stg_read_tx(c, list_tx, &a);
    stg_free(rq);
    return e;
}
