/* Archival memory: documents chunked and stored with their full text (tsvector, GIN) and
 * embeddings (from llm.embed through aosd) in PostgreSQL, searched by both and fused by
 * reciprocal rank; the vector leg scans the agent's in-RAM index. Evicted pages land here
 * too, so that a search finds them and can page them back in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.pb-c.h"
#include "mem.h"
#include "memory.pb-c.h"
#include "rrf.h"

/* ---- embeddings ------------------------------------------------------------------------ */

static aos_err embed_pack(const char *model, const ProtobufCBinaryData *in, size_t n,
                          uint8_t **buf, size_t *len)
{
    Aos__Llm__EmbedRequest q = AOS__LLM__EMBED_REQUEST__INIT;
    q.model = (ProtobufCBinaryData){strlen(model), (uint8_t *)model};
    q.n_inputs = n;
    q.inputs = (ProtobufCBinaryData *)in;
    *len = aos__llm__embed_request__get_packed_size(&q);
    *buf = malloc(*len ? *len : 1);
    if (!*buf)
        return AOS_ERR_NOMEM;
    aos__llm__embed_request__pack(&q, *buf);
    return AOS_OK;
}

/* An EmbedReply for n inputs into *vecs (n*dim floats, malloc'd, caller frees). */
static aos_err embed_decode(mem_call *c, const char *model, const uint8_t *p, size_t plen,
                            size_t n, float **vecs, uint32_t *dim, char *why, size_t whylen)
{
    *vecs = NULL;
    *dim = 0;
    Aos__Llm__EmbedReply *er = aos__llm__embed_reply__unpack(NULL, plen, p);
    aos_err e = AOS_ERR_PROTO;
    if (!er || er->n_vectors != n || !er->dim || er->dim > MEM_VX_DIM_MAX) {
        snprintf(why, whylen, "llm.embed %s: a malformed reply", model);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (er->vectors[i]->n_values != er->dim) {
            snprintf(why, whylen, "llm.embed %s: vector %zu has %zu values, not %u", model, i,
                     er->vectors[i]->n_values, er->dim);
            goto out;
        }
    *vecs = malloc(n * er->dim * sizeof(float));
    if (!*vecs) {
        e = AOS_ERR_NOMEM;
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(*vecs + i * er->dim, er->vectors[i]->values, er->dim * sizeof(float));
    *dim = er->dim;
    e = AOS_OK;
out:
    if (e)
        atomic_fetch_add(&c->st->embed_failures, 1);
    if (er)
        aos__llm__embed_reply__free_unpacked(er, NULL);
    return e;
}

/* Embed inputs (n <= MEM_EMBED_BATCH) with model through llm.embed, waiting for it. */
static aos_err embed(mem_call *c, const char *model, const ProtobufCBinaryData *in, size_t n,
                     float **vecs, uint32_t *dim, char *why, size_t whylen)
{
    *vecs = NULL;
    *dim = 0;
    uint8_t *buf;
    size_t len;
    if (embed_pack(model, in, n, &buf, &len)) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    aos_reply r;
    atomic_fetch_add(&c->st->embed_calls, 1);
    aos_err e = srv_request(c->s, c->call, "llm.embed", buf, len, 0, &r);
    free(buf);
    if (e) {
        snprintf(why, whylen, "llm.embed %.100s: %.800s", model,
                 r.error[0] ? r.error : aos_strerror(e));
        aos_reply_clear(&r);
        atomic_fetch_add(&c->st->embed_failures, 1);
        return e;
    }
    e = embed_decode(c, model, r.payload, r.payload_len, n, vecs, dim, why, whylen);
    aos_reply_clear(&r);
    return e;
}

/* A search's query embedding, asked for before the full-text leg runs so that the two
 * overlap; the reply lands here from a receive thread. */
typedef struct embed_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, done;
    aos_err status;
    uint8_t *payload;
    size_t len;
    char error[256];
} embed_wait;

static void embed_done(void *arg, const aos_reply *r)
{
    embed_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->status = (aos_err)r->status;
    snprintf(w->error, sizeof w->error, "%.200s", r->error);
    if (!w->status && r->payload_len) {
        w->payload = malloc(r->payload_len);
        if (w->payload) {
            memcpy(w->payload, r->payload, r->payload_len);
            w->len = r->payload_len;
        } else {
            w->status = AOS_ERR_NOMEM;
        }
    }
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void embed_start(mem_call *c, embed_wait *w, const char *model,
                        const ProtobufCBinaryData *q)
{
    uint8_t *buf;
    size_t len;
    if (embed_pack(model, q, 1, &buf, &len))
        return;
    atomic_fetch_add(&c->st->embed_calls, 1);
    w->started = srv_request_async(c->s, c->call, "llm.embed", buf, len, 0, embed_done, w) ==
                 AOS_OK;
    free(buf);
}

/* Wait for the started request (done runs exactly once: reply or deadline). */
static void embed_wait_done(embed_wait *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    w->started = 0;
}

/* ---- memory.store ---------------------------------------------------------------------- */

typedef struct chunk {
    size_t doc;
    uint32_t seq;
    const uint8_t *p;
    size_t n;
} chunk;

typedef struct chunks {
    chunk *v;
    size_t n, cap, doc;
    uint32_t seq;
} chunks;

static int add_chunk(void *arg, const uint8_t *p, size_t n)
{
    chunks *cs = arg;
    if (cs->n == cs->cap) {
        size_t c = cs->cap ? cs->cap * 2 : 64;
        chunk *q = realloc(cs->v, c * sizeof *q);
        if (!q)
            return -1;
        cs->v = q;
        cs->cap = c;
    }
    cs->v[cs->n++] = (chunk){cs->doc, cs->seq++, p, n};
    return 0;
}

static const db_stmt st_ins_chunk = {
    "mem_ins_chunk",
    "INSERT INTO memory.chunks (agent_id, collection, doc_id, seq, body, trust, source, "
    "model, dim, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id", 10};

typedef struct store_arg {
    mem_agent *a;
    const char *coll, *model;
    Aos__Memory__StoreRequest *rq;
    char (*docid)[MEM_DOC_ID_MAX + 1];
    int *trust;
    char (*src)[MEM_SOURCE_MAX + 1];
    chunks *cs;
    const float *vecs;
    uint32_t dim;
    uint64_t *ids;
} store_arg;

static aos_err store_tx(mem_call *c, void *arg)
{
    store_arg *x = arg;
    aos_err e;
    for (size_t i = 0; i < x->cs->n; i++) {
        const chunk *k = &x->cs->v[i];
        db_params p;
        dp_init(&p);
        dp_text(&p, x->a->id);
        dp_text(&p, x->coll);
        dp_text(&p, x->docid[k->doc]);
        dp_i32(&p, (int32_t)k->seq);
        dp_bytes(&p, k->p, k->n);
        dp_i32(&p, x->trust[k->doc]);
        dp_text(&p, x->src[k->doc]);
        dp_text(&p, x->dim ? x->model : "");
        dp_i32(&p, (int32_t)x->dim);
        if (x->dim)
            dp_bytes(&p, x->vecs + i * x->dim, x->dim * sizeof(float));
        else
            dp_null(&p);
        PGresult *r;
        if ((e = mem_exec(c, &st_ins_chunk, &p, &r)))
            return e;
        x->ids[i] = (uint64_t)db_i64(r, 0, 0);
        PQclear(r);
    }
    Aos__Memory__StoreReply rep = AOS__MEMORY__STORE_REPLY__INIT;
    rep.chunks = (uint32_t)x->cs->n;
    rep.dim = x->dim;
    rep.n_chunk_ids = x->cs->n;
    rep.chunk_ids = x->ids;
    return mem_reply(c, &rep.base);
}

static aos_err need_agent(mem_call *c)
{
    if (!c->agent || !c->agent[0])
        return mem_fail(c, AOS_ERR_USAGE, "needs an agent: archival memory belongs to an "
                        "agent (on the control socket, name the acting agent)");
    return AOS_OK;
}

aos_err op_store(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__StoreRequest *rq = mem_decode(c, &aos__memory__store_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    char coll[MEM_COLLECTION_MAX + 1], model[MEM_MODEL_MAX + 1];
    char (*docid)[MEM_DOC_ID_MAX + 1] = NULL;
    char (*src)[MEM_SOURCE_MAX + 1] = NULL;
    int *trust = NULL;
    chunks cs = {0};
    float *vecs = NULL;
    uint64_t *ids = NULL;
    uint32_t dim = 0;
    mem_agent *a = NULL;
    if ((e = mem_valid_name(c, rq->collection, "notes", MEM_COLLECTION_MAX, "collection",
                            coll)) ||
        (e = mem_valid_text(c, rq->model, MEM_MODEL_MAX, 1, "model")))
        goto out;
    snprintf(model, sizeof model, "%.*s", (int)rq->model.len, (const char *)rq->model.data);
    if (!model[0])
        strcpy(model, MEM_DEFAULT_EMBED);
    if (!rq->n_docs || rq->n_docs > MEM_DOCS_MAX) {
        e = mem_fail(c, rq->n_docs ? AOS_ERR_TOO_BIG : AOS_ERR_USAGE,
                     "%zu documents: one store takes 1 to %u", rq->n_docs, MEM_DOCS_MAX);
        goto out;
    }
    uint32_t cb = rq->chunk_bytes ? rq->chunk_bytes : MEM_CHUNK_DEFAULT;
    if (cb < MEM_CHUNK_MIN || cb > MEM_CHUNK_MAX) {
        e = mem_fail(c, AOS_ERR_USAGE, "chunk_bytes %u: want %u to %u", cb, MEM_CHUNK_MIN,
                     MEM_CHUNK_MAX);
        goto out;
    }
    docid = calloc(rq->n_docs, sizeof *docid);
    src = calloc(rq->n_docs, sizeof *src);
    trust = calloc(rq->n_docs, sizeof *trust);
    if (!docid || !src || !trust) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < rq->n_docs; i++) {
        const Aos__Memory__Doc *d = rq->docs[i];
        char what[48];
        snprintf(what, sizeof what, "document %zu's text", i);
        if ((e = mem_valid_text(c, d->text, MEM_STORE_BYTES_MAX, 0, what)) ||
            (e = mem_valid_text(c, d->doc_id, MEM_DOC_ID_MAX, 1, "doc_id")) ||
            (e = mem_valid_source(c, d->source, src[i])))
            goto out;
        if ((int)d->trust < 0 || (int)d->trust > MEM_TRUST_UNTRUSTED) {
            e = mem_fail(c, AOS_ERR_USAGE, "document %zu: trust %d is not a trust level", i,
                         (int)d->trust);
            goto out;
        }
        trust[i] = (int)d->trust ? (int)d->trust : MEM_TRUST_UNTRUSTED;
        if (d->doc_id.len)
            snprintf(docid[i], sizeof docid[i], "%.*s", (int)d->doc_id.len,
                     (const char *)d->doc_id.data);
        else
            snprintf(docid[i], sizeof docid[i], "doc-%zu", i);
        total += d->text.len;
        cs.doc = i;
        cs.seq = 0;
        if (mem_chunk(d->text.data, d->text.len, cb, add_chunk, &cs)) {
            e = mem_fail(c, AOS_ERR_NOMEM, "out of memory chunking");
            goto out;
        }
    }
    if (total > MEM_STORE_BYTES_MAX) {
        e = mem_fail(c, AOS_ERR_TOO_BIG, "the documents hold %zu bytes, one store takes at "
                     "most %u", total, MEM_STORE_BYTES_MAX);
        goto out;
    }
    ids = calloc(cs.n, sizeof *ids);
    if (!ids) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!rq->no_embed) {
        /* embedded before the agent's lock is taken: aos-llm may take its time */
        ProtobufCBinaryData *in = malloc(cs.n * sizeof *in);
        if (!in) {
            e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < cs.n; i++)
            in[i] = (ProtobufCBinaryData){cs.v[i].n, (uint8_t *)cs.v[i].p};
        for (size_t i = 0; i < cs.n && !e; i += MEM_EMBED_BATCH) {
            size_t m = cs.n - i < MEM_EMBED_BATCH ? cs.n - i : MEM_EMBED_BATCH;
            float *v;
            uint32_t d;
            char why[AOS_ERRMSG_MAX];
            if ((e = embed(c, model, in + i, m, &v, &d, why, sizeof why))) {
                e = mem_fail(c, e, "%s (no_embed stores full text only)", why);
                break;
            }
            if (!vecs) {
                dim = d;
                vecs = malloc(cs.n * (size_t)dim * sizeof(float));
            }
            if (!vecs || d != dim) {
                e = mem_fail(c, vecs ? AOS_ERR_PROTO : AOS_ERR_NOMEM,
                             vecs ? "llm.embed changed dimension mid-store" : "out of memory");
            } else {
                memcpy(vecs + i * dim, v, m * dim * sizeof(float));
            }
            free(v);
        }
        free(in);
        if (e)
            goto out;
    }
    if (!(a = mem_agent_get(c->st, c->agent))) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_lock(&a->mu);
    if (!(e = mem_agent_load(c, a)) && !(e = mem_agent_load_index(c, a))) {
        if (a->nchunks + cs.n > MEM_CHUNKS_MAX) {
            e = mem_fail(c, AOS_ERR_QUOTA, "%s holds %llu archival chunks; %zu more would pass "
                         "the cap of %u per agent", a->id, (unsigned long long)a->nchunks,
                         cs.n, MEM_CHUNKS_MAX);
        } else {
            store_arg x = {a, coll, model, rq, docid, trust, src, &cs, vecs, dim, ids};
            int replayed = 0;
            e = mem_tx(c, store_tx, &x, &replayed);
            if (!e && !replayed) {
                a->nchunks += cs.n;
                uint32_t ci = dim ? mem_agent_coll(a, coll, 1) : 0;
                mem_vspace *sp = dim ? mem_agent_space(a, model, dim, 1) : NULL;
                for (size_t i = 0; dim && i < cs.n; i++)
                    if (!ci || !sp || mem_vx_add(sp->vx, ids[i], ci, vecs + i * dim)) {
                        a->vx_loaded = 0;   /* read the index again when next searched */
                        break;
                    }
                atomic_fetch_add(&c->st->stores, 1);
                atomic_fetch_add(&c->st->chunks_stored, cs.n);
            }
            if (e || replayed)
                a->stale = 1;
        }
    }
    pthread_mutex_unlock(&a->mu);
    mem_agent_put(c->st, a);
out:
    free(docid);
    free(src);
    free(trust);
    free(cs.v);
    free(vecs);
    free(ids);
    mem_free(rq);
    return e;
}

/* ---- evicted pages ----------------------------------------------------------------------- */

static const db_stmt st_ins_evicted = {
    "mem_ins_evicted",
    "INSERT INTO memory.chunks (agent_id, collection, doc_id, seq, body, trust, source, "
    "page_id) SELECT $1, 'evicted', $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM "
    "memory.chunks WHERE agent_id = $1 AND page_id = $7 AND seq = $3)", 7};

typedef struct ev_ctx {
    mem_call *c;
    const mem_page *p;
    uint32_t seq;
    aos_err e;
} ev_ctx;

static int ev_chunk(void *arg, const uint8_t *t, size_t n)
{
    ev_ctx *x = arg;
    char docid[32];
    snprintf(docid, sizeof docid, "page:%llu", (unsigned long long)x->p->id);
    db_params p;
    dp_init(&p);
    dp_text(&p, x->c->agent);
    dp_text(&p, docid);
    dp_i32(&p, (int32_t)x->seq++);
    dp_bytes(&p, t, n);
    dp_i32(&p, x->p->trust);
    dp_text(&p, x->p->source);
    dp_i64(&p, (int64_t)x->p->id);
    x->e = mem_exec_void(x->c, &st_ins_evicted, &p);
    return x->e != AOS_OK;
}

aos_err mem_archive_evicted(mem_call *c, const mem_page *p, const uint8_t *text, size_t len)
{
    ev_ctx x = {c, p, 0, AOS_OK};
    mem_chunk(text, len, MEM_CHUNK_DEFAULT, ev_chunk, &x);
    return x.e;
}

/* ---- memory.search --------------------------------------------------------------------- */

/* The query's words each through plainto_tsquery, OR-ed (memory.tsq_or): no word reaches
 * the tsquery parser, and a chunk needs only some of them; ts_rank orders by how many
 * and how often. */
/* The query as a tsquery first, on its own, so the chunks' statement plans with a value.
 * The text that goes back as $2 is PostgreSQL's own output (each lexeme quoted by
 * tsquery_out), never the caller's syntax. The agent test is written so that no index
 * serves it: the full-text index is the selective one, and before statistics exist the
 * planner would AND it with a scan of all the agent's rows. */
static const db_stmt st_orq = {"mem_orq", "SELECT coalesce(memory.or_query($1)::text, '')", 1};
static const db_stmt st_fts = {
    "mem_fts",
    "SELECT c.id, ts_rank(c.tsv, $2::text::tsquery)::float8 FROM memory.chunks c "
    "WHERE (c.agent_id = $1) IS TRUE AND ($3 = '' OR c.collection = $3) "
    "AND c.tsv @@ $2::text::tsquery "
    "ORDER BY 2 DESC, c.id LIMIT $4", 4};
/* The hits' rows in one statement: ids as an array literal aos-memory writes (digits and
 * commas only); the agent and collection conditions hold whatever the ids say. */
static const db_stmt st_hit = {
    "mem_hit",
    "SELECT id, collection, doc_id, seq, body, coalesce(page_id, 0), trust, source "
    "FROM memory.chunks WHERE agent_id = $1 AND id = ANY($2::bigint[]) "
    "AND ($3 = '' OR collection = $3)", 3};
static const db_stmt st_shared = {
    "mem_shared",
    "SELECT 1 FROM memory.shares WHERE owner = $1 AND collection = $2 AND grantee = $3", 3};

static double f8(const PGresult *r, int row, int col)
{
    uint64_t bits = (uint64_t)db_i64(r, row, col);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

aos_err mem_page_in_hits(mem_call *c, const uint64_t *ids, size_t n, int *done);

aos_err op_search(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__SearchRequest *rq = mem_decode(c, &aos__memory__search_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    char coll[MEM_COLLECTION_MAX + 1] = "", owner[AOS_AGENT_ID_MAX + 1], model[MEM_MODEL_MAX + 1];
    uint64_t *fids = NULL, *vids = NULL, *pages = NULL;
    float *frank = NULL, *vsc = NULL, *qv = NULL;
    mem_fused *fu = NULL;
    mem_vhit *vh = NULL;
    Aos__Memory__Hit *hits = NULL, **hp = NULL;
    PGresult **rows = NULL;
    int *done = NULL;
    size_t nf = 0, nv = 0, nh = 0;
    int embedded = 0;
    embed_wait ew = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    if ((e = mem_valid_text(c, rq->query, MEM_QUERY_MAX, 0, "query")) ||
        (rq->collection.len && (e = mem_valid_name(c, rq->collection, NULL, MEM_COLLECTION_MAX,
                                                   "collection", coll))) ||
        (e = mem_valid_text(c, rq->model, MEM_MODEL_MAX, 1, "model")))
        goto out;
    snprintf(model, sizeof model, "%.*s", (int)rq->model.len, (const char *)rq->model.data);
    if (!model[0])
        strcpy(model, MEM_DEFAULT_EMBED);
    strcpy(owner, c->agent);
    if (rq->owner.len && (e = mem_valid_agent(c, rq->owner, owner)))
        goto out;
    if (rq->limit > MEM_SEARCH_MAX) {
        e = mem_fail(c, AOS_ERR_USAGE, "limit %u: at most %u hits", rq->limit, MEM_SEARCH_MAX);
        goto out;
    }
    if ((int)rq->mode < 0 || (int)rq->mode > 2) {
        e = mem_fail(c, AOS_ERR_USAGE, "mode %d: hybrid (0), fts (1) or vector (2)", (int)rq->mode);
        goto out;
    }
    size_t limit = rq->limit ? rq->limit : MEM_SEARCH_DEFAULT;
    size_t cand = limit > MEM_CANDIDATES ? limit : MEM_CANDIDATES;
    int other = strcmp(owner, c->agent) != 0;
    db_params p;
    if (other) {
        /* another agent's memory: only a collection it shared with this one */
        if (!coll[0]) {
            e = mem_fail(c, AOS_ERR_USAGE, "searching %s's memory needs the collection it "
                         "shared", owner);
            goto out;
        }
        PGresult *r;
        dp_init(&p);
        dp_text(&p, owner);
        dp_text(&p, coll);
        dp_text(&p, c->agent);
        if ((e = mem_exec(c, &st_shared, &p, &r)))
            goto out;
        int ok = PQntuples(r) == 1;
        PQclear(r);
        if (!ok) {
            e = mem_fail(c, AOS_ERR_REFUSED, "%s has not shared collection %s with %s", owner,
                         coll, c->agent);
            goto out;
        }
    }
    atomic_fetch_add(&c->st->searches, 1);
    fids = calloc(cand, sizeof *fids);
    frank = calloc(cand, sizeof *frank);
    vh = calloc(cand, sizeof *vh);
    vids = calloc(cand, sizeof *vids);
    vsc = calloc(cand, sizeof *vsc);
    fu = calloc(2 * cand, sizeof *fu);
    if (!fids || !frank || !vh || !vids || !vsc || !fu) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((int)rq->mode != AOS__MEMORY__MODE__MODE_FTS)
        embed_start(c, &ew, model, &rq->query);
    if ((int)rq->mode != AOS__MEMORY__MODE__MODE_VECTOR) {
        PGresult *r, *qr;
        dp_init(&p);
        dp_bytes(&p, rq->query.data, rq->query.len);
        if ((e = mem_exec(c, &st_orq, &p, &qr)))
            goto out;
        size_t ql;
        const uint8_t *qt = db_bytes(qr, 0, 0, &ql);
        if (!ql) {   /* no word with a lexeme (only stop words or punctuation) */
            PQclear(qr);
            goto fts_done;
        }
        dp_init(&p);
        dp_text(&p, owner);
        dp_bytes(&p, qt, ql);
        dp_text(&p, coll);
        dp_i64(&p, (int64_t)cand);
        e = mem_exec(c, &st_fts, &p, &r);
        PQclear(qr);
        if (e)
            goto out;
        nf = (size_t)PQntuples(r);
        for (size_t i = 0; i < nf && i < cand; i++) {
            fids[i] = (uint64_t)db_i64(r, (int)i, 0);
            frank[i] = (float)f8(r, (int)i, 1);
        }
        PQclear(r);
    }
fts_done:
    if ((int)rq->mode != AOS__MEMORY__MODE__MODE_FTS) {
        uint32_t dim = 0;
        char why[AOS_ERRMSG_MAX];
        embed_wait_done(&ew);
        if (!ew.done) {
            e = AOS_ERR_UNAVAILABLE;
            snprintf(why, sizeof why, "llm.embed %s: could not be sent", model);
        } else if (ew.status) {
            e = ew.status;
            snprintf(why, sizeof why, "llm.embed %.100s: %.200s", model,
                     ew.error[0] ? ew.error : aos_strerror(e));
            atomic_fetch_add(&c->st->embed_failures, 1);
        } else {
            e = embed_decode(c, model, ew.payload, ew.len, 1, &qv, &dim, why, sizeof why);
        }
        if (e && (int)rq->mode == AOS__MEMORY__MODE__MODE_VECTOR) {
            e = mem_fail(c, e, "%s", why);
            goto out;
        }
        if (!e) {
            embedded = 1;
            mem_agent *a = mem_agent_get(c->st, owner);
            if (!a) {
                e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
                goto out;
            }
            pthread_mutex_lock(&a->mu);
            if (!(e = mem_agent_load(c, a)) && !(e = mem_agent_load_index(c, a))) {
                mem_vspace *sp = mem_agent_space(a, model, dim, 0);
                uint32_t ci = coll[0] ? mem_agent_coll(a, coll, 0) : 0;
                if (sp && (!coll[0] || ci))
                    nv = mem_vx_search(sp->vx, qv, ci, cand, vh);
            }
            pthread_mutex_unlock(&a->mu);
            mem_agent_put(c->st, a);
            if (e)
                goto out;
            for (size_t i = 0; i < nv; i++) {
                vids[i] = vh[i].id;
                vsc[i] = vh[i].score;
            }
        }
        e = AOS_OK;   /* hybrid without an embedding: full text alone */
    }
    size_t nfu = mem_rrf(fids, nf, vids, nv, MEM_RRF_K, fu);
    nh = nfu < limit ? nfu : limit;
    hits = calloc(nh ? nh : 1, sizeof *hits);
    hp = calloc(nh ? nh : 1, sizeof *hp);
    rows = calloc(nh ? nh : 1, sizeof *rows);
    pages = calloc(nh ? nh : 1, sizeof *pages);
    done = calloc(nh ? nh : 1, sizeof *done);
    if (!hits || !hp || !rows || !pages || !done) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    if (nh) {
        char *arr = malloc(nh * 24 + 4);
        if (!arr) {
            e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
            goto out;
        }
        size_t o = 0;
        arr[o++] = '{';
        for (size_t i = 0; i < nh; i++)
            o += (size_t)sprintf(arr + o, "%s%llu", i ? "," : "", (unsigned long long)fu[i].id);
        arr[o++] = '}';
        arr[o] = 0;
        dp_init(&p);
        dp_text(&p, owner);
        dp_text(&p, arr);
        dp_text(&p, coll);
        e = mem_exec(c, &st_hit, &p, &rows[0]);
        free(arr);
        if (e)
            goto out;
    }
    PGresult *r = rows[0];
    int nrows = r ? PQntuples(r) : 0;
    for (size_t i = 0; i < nh; i++) {
        int row = -1;
        for (int j = 0; j < nrows && row < 0; j++)
            if ((uint64_t)db_i64(r, j, 0) == fu[i].id)
                row = j;
        if (row < 0)   /* not this agent's, or not in this collection: never shown */
            continue;
        Aos__Memory__Hit *h = &hits[k];
        aos__memory__hit__init(h);
        h->chunk_id = fu[i].id;
        h->collection.data = (uint8_t *)db_bytes(r, row, 1, &h->collection.len);
        h->doc_id.data = (uint8_t *)db_bytes(r, row, 2, &h->doc_id.len);
        h->seq = (uint32_t)db_i32(r, row, 3);
        h->text.data = (uint8_t *)db_bytes(r, row, 4, &h->text.len);
        h->page_id = other ? 0 : (uint64_t)db_i64(r, row, 5);
        h->trust = db_i32(r, row, 6);
        h->source.data = (uint8_t *)db_bytes(r, row, 7, &h->source.len);
        h->fts_pos = fu[i].pos_a;
        h->fts_rank = fu[i].pos_a ? frank[fu[i].pos_a - 1] : 0;
        h->vec_pos = fu[i].pos_b;
        h->vec_score = fu[i].pos_b ? vsc[fu[i].pos_b - 1] : 0;
        h->score = (int)rq->mode == AOS__MEMORY__MODE__MODE_FTS ? h->fts_rank
                   : (int)rq->mode == AOS__MEMORY__MODE__MODE_VECTOR ? h->vec_score
                                                                    : fu[i].score;
        pages[k] = h->page_id;
        hp[k] = h;
        k++;
    }
    if (rq->page_in && !other && k) {
        if ((e = mem_page_in_hits(c, pages, k, done)))
            goto out;
        for (size_t i = 0; i < k; i++)
            hits[i].paged_in = done[i];
    }
    Aos__Memory__SearchReply rep = AOS__MEMORY__SEARCH_REPLY__INIT;
    rep.n_hits = k;
    rep.hits = hp;
    rep.fts_candidates = (uint32_t)nf;
    rep.vec_candidates = (uint32_t)nv;
    rep.embedded = embedded;
    e = mem_reply(c, &rep.base);
out:
    embed_wait_done(&ew);   /* its reply lands in ew: never leave before it came */
    free(ew.payload);
    if (rows)
        PQclear(rows[0]);
    free(rows);
    free(hits);
    free(hp);
    free(pages);
    free(done);
    free(fids);
    free(frank);
    free(vids);
    free(vsc);
    free(vh);
    free(fu);
    free(qv);
    mem_free(rq);
    return e;
}

/* ---- memory.share ---------------------------------------------------------------------- */

static const db_stmt st_share = {
    "mem_share",
    "INSERT INTO memory.shares (owner, collection, grantee) VALUES ($1, $2, $3) "
    "ON CONFLICT DO NOTHING", 3};
static const db_stmt st_unshare = {
    "mem_unshare",
    "DELETE FROM memory.shares WHERE owner = $1 AND collection = $2 AND grantee = $3", 3};

typedef struct share_arg {
    const char *coll, *grantee;
    int revoke;
} share_arg;

static aos_err share_tx(mem_call *c, void *arg)
{
    share_arg *x = arg;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, x->coll);
    dp_text(&p, x->grantee);
    PGresult *r;
    aos_err e = mem_exec(c, x->revoke ? &st_unshare : &st_share, &p, &r);
    if (e)
        return e;
    Aos__Memory__ShareReply rep = AOS__MEMORY__SHARE_REPLY__INIT;
    rep.changed = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    return mem_reply(c, &rep.base);
}

aos_err op_share(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__ShareRequest *rq = mem_decode(c, &aos__memory__share_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    char coll[MEM_COLLECTION_MAX + 1], grantee[AOS_AGENT_ID_MAX + 1];
    if (!(e = mem_valid_name(c, rq->collection, NULL, MEM_COLLECTION_MAX, "collection", coll)) &&
        !(e = mem_valid_agent(c, rq->agent, grantee))) {
        if (!strcmp(grantee, c->agent)) {
            e = mem_fail(c, AOS_ERR_USAGE, "an agent searches its own collections already");
        } else {
            share_arg x = {coll, grantee, rq->revoke};
            int replayed;
            e = mem_tx(c, share_tx, &x, &replayed);
        }
    }
    mem_free(rq);
    return e;
}
