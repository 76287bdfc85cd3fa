/* aos-audit's reads: proofs built from the stored leaf hashes, the verifier fed from the
 * table by binary COPY inside one snapshot, and the filtered tail. Nothing here writes. */
#include "read.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/log.h"
#include "audit.pb-c.h"
#include "contents.h"
#include "copybin.h"
#include "db.h"
#include "merkle.h"
#include "pg.h"
#include "record.h"
#include "verify.h"

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

#define VERIFY_INLINE 4096         /* contents up to this come in the cursor's rows */
#define LEAF_PAGE 65536u           /* leaf hashes per read while proving */
#define TAIL_DEFAULT 100u
#define TAIL_MAX 1000u
#define TAIL_BYTES (3u << 20)      /* a reply stays well under AOS_MSG_MAX */
#define REC_SCRATCH 320            /* 33 + 3 * 65 + 32 bytes, rounded up */
#define CONTENTS_REQ_MAX 64u       /* hashes in one audit.contents */
#define CONTENTS_BYTES (3u << 20)  /* bodies in one ContentsReply (one content may be 1 MiB) */

static atomic_ullong n_proofs, n_verifies, n_verified, n_tails, n_replays;

/* The record columns, in audit_rec order, then its stored hashes. */
#define REC_COLS                                                                        \
    "seq, time_ns, kind, agent, run, step, trace_id, span_id, parent_span_id, method, "  \
    "status, latency_us, body, prev_hash, chain_hash, leaf_hash"

static const db_stmt st_heads = {
    "audit_heads", "SELECT tree_size, time_ns, root, signature FROM audit.heads "
                   "ORDER BY tree_size",
    0};
static const db_stmt st_archive = {
    "audit_archive",
    "SELECT " REC_COLS " FROM audit.records WHERE kind = 'archive' ORDER BY seq DESC LIMIT 1",
    0};
static const db_stmt st_rec = {
    "audit_rec", "SELECT " REC_COLS " FROM audit.records WHERE seq = $1", 1};
static const db_stmt st_head_at = {
    "audit_head_at",
    "SELECT tree_size, time_ns, root, signature FROM audit.heads WHERE tree_size = $1", 1};
static const db_stmt st_head_cover = {
    "audit_head_cover",
    "SELECT tree_size, time_ns, root, signature FROM audit.heads WHERE tree_size >= $1 "
    "ORDER BY tree_size LIMIT 1",
    1};
static const db_stmt st_leaves = {
    "audit_leaves",
    "SELECT seq, leaf_hash FROM audit.records WHERE seq > $1 AND seq <= $2 ORDER BY seq", 2};
static const db_stmt st_tail = {
    "audit_tail",
    "SELECT " REC_COLS " FROM audit.records WHERE seq > $1 AND ($2 = '' OR agent = $2) "
    "AND ($3 = '' OR run = $3) AND ($4 = ''::bytea OR trace_id = $4) ORDER BY seq LIMIT $5",
    5};
static const db_stmt st_replay = {
    "audit_replay",
    "SELECT " REC_COLS " FROM audit.records WHERE agent = $1 AND run = $2 AND run <> '' "
    "AND (step, seq) > ($3, $4) ORDER BY agent, run, step, seq LIMIT $5",
    5};
/* verify's contents pass: bodies over VERIFY_INLINE come one by one */
static const db_stmt st_content_body = {
    "audit_content_body", "SELECT body FROM audit.contents WHERE hash = $1", 1};
/* the first record whose body names a content (by its hex) */
static const db_stmt st_content_ref = {
    "audit_content_ref",
    "SELECT seq FROM audit.records WHERE position($1::bytea IN body) > 0 ORDER BY seq LIMIT 1",
    1};
/* the records that list contents (records_contents holds just those), a page at a time;
 * their lists are read here, and the hashes looked up in one statement per page */
static const db_stmt st_listing = {
    "audit_listing",
    "SELECT seq, body FROM audit.records WHERE position('\"contents\"'::bytea IN body) > 0 "
    "AND seq > $1 ORDER BY seq LIMIT 1024",
    1};
static const db_stmt st_unstored = {
    "audit_unstored",
    "SELECT k.h FROM unnest($1::bytea[]) AS k(h) "
    "WHERE NOT EXISTS (SELECT 1 FROM audit.contents c WHERE c.hash = k.h)",
    1};
/* audit.contents: sizes first, then the bodies that fit the reply */
static const db_stmt st_content_sizes = {
    "audit_content_sizes",
    "SELECT c.hash, length(c.body) FROM unnest($1::bytea[]) AS k(h) "
    "CROSS JOIN LATERAL (SELECT hash, body FROM audit.contents WHERE hash = k.h) c",
    1};
static const db_stmt st_max = {
    "audit_max", "SELECT coalesce(max(seq), 0) FROM audit.records", 0};

/* Copy a fixed-width column; a stored value of another width is damage: 0 so the caller
 * makes the record fail to encode (the verifier then calls it altered). */
static int fixed(const PGresult *r, int row, int col, uint8_t *out, size_t want)
{
    size_t n;
    const uint8_t *b = db_bytes(r, row, col, &n);
    if (n != want) {
        memset(out, 0, want);
        return 0;
    }
    memcpy(out, b, want);
    return 1;
}

/* Row `row` of a REC_COLS result as a record (pointers into r) and its stored hashes. */
static void row_rec(const PGresult *r, int row, audit_rec *rec, uint8_t chain[AUDIT_HASH_LEN],
                    uint8_t leaf[AUDIT_HASH_LEN])
{
    memset(rec, 0, sizeof *rec);
    rec->seq = (uint64_t)db_i64(r, row, 0);
    rec->time_ns = (uint64_t)db_i64(r, row, 1);
    rec->kind = (const char *)db_bytes(r, row, 2, &rec->kind_len);
    rec->agent = (const char *)db_bytes(r, row, 3, &rec->agent_len);
    rec->run = (const char *)db_bytes(r, row, 4, &rec->run_len);
    int64_t step = db_i64(r, row, 5);
    rec->step = (uint32_t)step;
    int ok = step >= 0 && step <= (int64_t)UINT32_MAX;
    ok &= fixed(r, row, 6, rec->trace_id, AUDIT_TRACE_LEN);
    ok &= fixed(r, row, 7, rec->span_id, AUDIT_SPAN_LEN);
    ok &= fixed(r, row, 8, rec->parent_span_id, AUDIT_SPAN_LEN);
    rec->method = (const char *)db_bytes(r, row, 9, &rec->method_len);
    rec->status = db_i32(r, row, 10);
    rec->latency_us = (uint64_t)db_i64(r, row, 11);
    rec->body = db_bytes(r, row, 12, &rec->body_len);
    ok &= fixed(r, row, 13, rec->prev_hash, AUDIT_HASH_LEN);
    ok &= fixed(r, row, 14, chain, AUDIT_HASH_LEN);
    if (leaf)
        ok &= fixed(r, row, 15, leaf, AUDIT_HASH_LEN);
    if (!ok)
        rec->kind_len = 0; /* never encodes: the record reads as altered */
}

static void row_sth(const PGresult *r, int row, audit_sth *h)
{
    memset(h, 0, sizeof *h);
    h->tree_size = (uint64_t)db_i64(r, row, 0);
    h->time_ns = (uint64_t)db_i64(r, row, 1);
    fixed(r, row, 2, h->root, AUDIT_HASH_LEN);
    fixed(r, row, 3, h->sig, AUDIT_SIG_LEN); /* a bad one fails its signature check */
}

static void fill_head(Aos__Audit__Head *m, audit_sth *h, uint8_t pk[AUDIT_PK_LEN])
{
    m->tree_size = h->tree_size;
    m->time_ns = h->time_ns;
    m->root = (ProtobufCBinaryData){AUDIT_HASH_LEN, h->root};
    m->signature = (ProtobufCBinaryData){AUDIT_SIG_LEN, h->sig};
    m->public_key = (ProtobufCBinaryData){AUDIT_PK_LEN, pk};
}

/* One snapshot for the whole read, and index scans only: with a young log's stale
 * statistics the planner would scan the table for a range of seqs. */
static aos_err begin_read(PGconn *c, char *why, size_t whylen)
{
    aos_err rc = db_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", why, whylen);
    if (rc == AOS_OK)
        rc = db_cmd(c, "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; "
                       "SET LOCAL enable_sort = off; "
                       "SET LOCAL max_parallel_workers_per_gather = 0",
                    why, whylen);
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    return rc;
}

/* ---- audit.verify ------------------------------------------------------------------------ */

/* The walk reads the records with COPY ... TO STDOUT (FORMAT binary): PostgreSQL streams
 * the rows while the verifier hashes them (on the other core), one CopyData message per
 * row, so at most one row is held (libpq's buffer: the largest row, a body being at most
 * AUDIT_BODY_MAX) and no result set is built. Chunks of VERIFY_CHUNK rows by seq: a walk
 * that stops early (a finding) drains at most the rest of one chunk, as a COPY cannot be
 * stopped on its connection. The rows are untrusted bytes like any wire input: every
 * length is checked against what the message holds. */
#define VERIFY_CHUNK 65536u

typedef struct copyrd {
    PGconn *c;
    char *msg;     /* the current row's message (PQfreemem) */
    uint64_t wait_ns; /* time spent waiting for PostgreSQL's rows (the log says it) */
    int active;    /* a COPY is running: its rows must be read before anything else */
    int header;    /* its header was read */
} copyrd;

static uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static aos_err copy_start(copyrd *k, PGconn *c, const char *sql, char *why, size_t whylen)
{
    k->c = c;
    k->msg = NULL;
    k->header = 0; /* wait_ns adds up over a walk's chunks */
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        aos_err rc = db_error(c, r, why, whylen);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    k->active = 1;
    return AOS_OK;
}

/* The COPY's end: its command status (an error there, say a snapshot problem, is the
 * walk's error). */
static aos_err copy_finish(copyrd *k, char *why, size_t whylen)
{
    aos_err rc = AOS_OK;
    PGresult *r;
    while ((r = PQgetResult(k->c))) {
        if (rc == AOS_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = db_error(k->c, r, why, whylen);
        PQclear(r);
    }
    k->active = 0;
    return rc;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The next row: want fields into f/fl (fl -1: NULL), pointing into the row's message (valid
 * until the next call). AOS_ERR_NOT_FOUND after the last row (the COPY is then finished). */
static aos_err copy_row(copyrd *k, int want, const uint8_t **f, int32_t *fl, char *why,
                        size_t whylen)
{
    if (k->msg) {
        PQfreemem(k->msg);
        k->msg = NULL;
    }
    if (!k->active)
        return AOS_ERR_NOT_FOUND;
    int n = PQgetCopyData(k->c, &k->msg, 1); /* what has come, without a wait */
    if (n == 0) {
        uint64_t t0 = mono_ns();
        n = PQgetCopyData(k->c, &k->msg, 0);
        k->wait_ns += mono_ns() - t0;
    }
    if (n == -1) {
        aos_err rc = copy_finish(k, why, whylen);
        return rc == AOS_OK ? AOS_ERR_NOT_FOUND : rc;
    }
    if (n < 0) {
        aos_err rc = db_error(k->c, NULL, why, whylen);
        copy_finish(k, NULL, 0);
        return rc == AOS_OK ? AOS_ERR_INTERNAL : rc;
    }
    aos_err rc = copybin_row((const uint8_t *)k->msg, (size_t)n, &k->header, want, f, fl);
    if (rc == AOS_ERR_NOT_FOUND) { /* the trailer: the end follows */
        PQfreemem(k->msg);
        k->msg = NULL;
        if (PQgetCopyData(k->c, &k->msg, 0) != -1)
            goto bad;
        rc = copy_finish(k, why, whylen);
        return rc == AOS_OK ? AOS_ERR_NOT_FOUND : rc;
    }
    if (rc == AOS_OK)
        return AOS_OK;
bad:
    WHY("a COPY row from PostgreSQL does not parse as %d binary fields", want);
    return AOS_ERR_PROTO;
}

/* A COPY that must stop: its remaining rows read and dropped. */
static void copy_drain(copyrd *k)
{
    if (k->msg) {
        PQfreemem(k->msg);
        k->msg = NULL;
    }
    if (!k->active)
        return;
    char *m;
    int n;
    while ((n = PQgetCopyData(k->c, &m, 0)) >= 0)
        PQfreemem(m);
    copy_finish(k, NULL, 0);
}

/* A field as db_i64 / db_i32 / db_bytes read it: another width is 0, NULL is empty. */
static int64_t f_i64(const uint8_t *f, int32_t l)
{
    if (l != 8)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | f[i];
    return (int64_t)v;
}

static int32_t f_i32(const uint8_t *f, int32_t l)
{
    return l == 4 ? (int32_t)be32(f) : 0;
}

static const uint8_t *f_bytes(const uint8_t *f, int32_t l, size_t *len)
{
    *len = l > 0 ? (size_t)l : 0;
    return l > 0 ? f : (const uint8_t *)"";
}

static int f_fixed(const uint8_t *f, int32_t l, uint8_t *out, size_t want)
{
    if (l < 0 || (size_t)l != want) {
        memset(out, 0, want);
        return 0;
    }
    memcpy(out, f, want);
    return 1;
}

/* The walk's columns: REC_COLS without leaf_hash, in audit_rec order */
#define WALK_COLS 15
/* A walk row as a record (pointers into the row), as row_rec reads a REC_COLS row. */
static void fields_rec(const uint8_t **f, const int32_t *l, audit_rec *rec,
                       uint8_t chain[AUDIT_HASH_LEN])
{
    memset(rec, 0, sizeof *rec);
    rec->seq = (uint64_t)f_i64(f[0], l[0]);
    rec->time_ns = (uint64_t)f_i64(f[1], l[1]);
    rec->kind = (const char *)f_bytes(f[2], l[2], &rec->kind_len);
    rec->agent = (const char *)f_bytes(f[3], l[3], &rec->agent_len);
    rec->run = (const char *)f_bytes(f[4], l[4], &rec->run_len);
    int64_t step = f_i64(f[5], l[5]);
    rec->step = (uint32_t)step;
    int ok = step >= 0 && step <= (int64_t)UINT32_MAX;
    ok &= f_fixed(f[6], l[6], rec->trace_id, AUDIT_TRACE_LEN);
    ok &= f_fixed(f[7], l[7], rec->span_id, AUDIT_SPAN_LEN);
    ok &= f_fixed(f[8], l[8], rec->parent_span_id, AUDIT_SPAN_LEN);
    rec->method = (const char *)f_bytes(f[9], l[9], &rec->method_len);
    rec->status = f_i32(f[10], l[10]);
    rec->latency_us = (uint64_t)f_i64(f[11], l[11]);
    rec->body = f_bytes(f[12], l[12], &rec->body_len);
    ok &= f_fixed(f[13], l[13], rec->prev_hash, AUDIT_HASH_LEN);
    ok &= f_fixed(f[14], l[14], chain, AUDIT_HASH_LEN);
    if (!ok)
        rec->kind_len = 0; /* never encodes: the record reads as altered */
}

/* The stored contents' names, sorted, so each one a record lists is looked up in memory
 * after the walk. At most VERIFY_SET_MAX names (32 bytes each: 64 MiB), and as many listed
 * ones gathered by the walk (40 bytes each); past either the listed ones are looked up in
 * the database after the walk (contents_listed_check). */
#define VERIFY_SET_MAX (2u << 20)

/* AOS_AUDIT_VERIFY_SET_MAX / AOS_AUDIT_VERIFY_BAD_MAX / AOS_AUDIT_VERIFY_CONNS lower a cap
 * (never raise it): a test sets them to 0 (1 connection) so the same findings are checked
 * on the database fallbacks and on one connection. */
static size_t cap_knob(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    return *end || n > dflt ? dflt : (size_t)n;
}
/* One step up of a full array p of *cap elements: doubled (from 4096), at most max. The
 * new array, or NULL past max or out of memory: then p is freed and *cap 0, and the caller
 * falls back to the database. */
static void *grow(void *p, size_t *cap, size_t max, size_t elem)
{
    size_t n = *cap ? 2 * *cap : 4096;
    if (n > max && *cap < max)
        n = max; /* the last step up to the cap */
    void *q = n <= max && n > *cap ? realloc(p, n * elem) : NULL;
    if (!q) {
        free(p);
        *cap = 0;
        return NULL;
    }
    *cap = n;
    return q;
}

typedef struct cset {
    uint8_t (*h)[AUDIT_CONTENT_HASH_LEN];
    size_t n, cap, max;
    int over;
} cset;

/* A content a record lists, gathered by the walk in seq order and looked up in the set
 * once the contents pass (run beside the walk) has built it. */
typedef struct listed_name {
    uint8_t h[AUDIT_CONTENT_HASH_LEN];
    uint64_t seq;
} listed_name;

typedef struct walk {
    PGconn *c;
    copyrd k;                      /* the chunk being read */
    uint64_t after;                /* the last seq read */
    uint64_t in_chunk;             /* rows read of this chunk */
    int done;
    uint64_t fed;
    uint64_t miss;                 /* the first record listing a content not stored (0) */
    char mhex[2 * AUDIT_CONTENT_HASH_LEN + 1];
    uint64_t looked;               /* listed contents looked up */
    uint8_t (*listed)[AUDIT_CONTENT_HASH_LEN]; /* AUDIT_CONTENTS_LIST_MAX, the walk's */
    listed_name *names;            /* what the records listed, in seq order */
    size_t n, cap, max;            /* at most max names (the set's cap) */
    int over;                      /* past max or out of memory: the database looks them up */
} walk;

static int hcmp(const void *a, const void *b)
{
    return memcmp(a, b, AUDIT_CONTENT_HASH_LEN);
}

/* What record seq lists (body[0..bl)), parsed as contents_listed_check does it in the
 * database, kept for the look-up after the walk (contents_lookup). */
static void walk_listed(walk *w, uint64_t seq, const uint8_t *body, size_t bl)
{
    if (w->over || !w->listed)
        return;
    int k = audit_contents_listed(body, bl, w->listed, AUDIT_CONTENTS_LIST_MAX);
    for (int j = 0; j < k && (size_t)j < AUDIT_CONTENTS_LIST_MAX; j++) {
        if (w->n == w->cap &&
            !(w->names = grow(w->names, &w->cap, w->max, sizeof *w->names))) {
            w->n = 0; /* over the cap, or out of memory: the database looks them up */
            w->over = 1;
            return;
        }
        memcpy(w->names[w->n].h, w->listed[j], AUDIT_CONTENT_HASH_LEN);
        w->names[w->n++].seq = seq;
    }
}

/* The first record, in seq order, listing a content the set (every stored one that hashes
 * to its name) lacks: w->miss and w->mhex. */
static void contents_lookup(walk *w, const uint8_t (*set)[AUDIT_CONTENT_HASH_LEN], size_t n)
{
    for (size_t i = 0; i < w->n && !w->miss; i++) {
        w->looked++;
        if (!n || !bsearch(w->names[i].h, set, n, sizeof *set, hcmp)) {
            w->miss = w->names[i].seq;
            aos_hex(w->names[i].h, AUDIT_CONTENT_HASH_LEN, w->mhex);
        }
    }
}

/* A walk that stopped early: the rest of its chunk read and dropped. */
static void walk_end(walk *w)
{
    copy_drain(&w->k);
}

static aos_err walk_next(void *arg, audit_rec *r, uint8_t chain[AUDIT_HASH_LEN], char *why,
                         size_t whylen)
{
    walk *w = arg;
    const uint8_t *f[WALK_COLS];
    int32_t fl[WALK_COLS];
    for (;;) {
        if (w->done)
            return AOS_ERR_NOT_FOUND;
        if (!w->k.active) {
            char sql[512];
            snprintf(sql, sizeof sql,
                     "COPY (SELECT seq, time_ns, kind, agent, run, step, trace_id, span_id, "
                     "parent_span_id, method, status, latency_us, body, prev_hash, chain_hash "
                     "FROM audit.records WHERE seq > %llu ORDER BY seq LIMIT %u) "
                     "TO STDOUT (FORMAT binary)",
                     (unsigned long long)w->after, VERIFY_CHUNK);
            aos_err rc = copy_start(&w->k, w->c, sql, why, whylen);
            if (rc != AOS_OK)
                return rc;
            w->in_chunk = 0;
        }
        aos_err rc = copy_row(&w->k, WALK_COLS, f, fl, why, whylen);
        if (rc == AOS_OK)
            break;
        if (rc != AOS_ERR_NOT_FOUND)
            return rc;
        if (w->in_chunk < VERIFY_CHUNK) /* a short chunk is the last */
            w->done = 1;
    }
    fields_rec(f, fl, r, chain);
    w->after = r->seq;
    w->in_chunk++;
    walk_listed(w, r->seq, r->body, r->body_len);
    w->fed++;
    return AOS_OK;
}

/* The first record naming content h (by its hex in the body), 0 when none does. */
static aos_err content_ref(PGconn *c, const uint8_t *h, size_t hl, uint64_t *seq, char *why,
                           size_t whylen)
{
    char hex[2 * AUDIT_CONTENT_HASH_LEN + 1] = "";
    if (hl == AUDIT_CONTENT_HASH_LEN)
        aos_hex(h, hl, hex);
    db_params p;
    dp_init(&p);
    dp_bytes(&p, hex, strlen(hex));
    PGresult *r = NULL;
    *seq = 0;
    aos_err rc = db_exec(c, &st_content_ref, &p, &r, why, whylen);
    if (rc == AOS_OK && PQntuples(r) == 1)
        *seq = (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* The first record (by seq) listing a content the store does not hold: *seq (0: none) and
 * the content's hex. Pages of at most 1024 records of at most AUDIT_BODY_MAX each, their
 * lists parsed here (audit_contents_listed, as on emit) and looked up together. */
static aos_err contents_listed_check(PGconn *c, uint64_t *seq, char hex[65],
                                     uint64_t *looked, char *why, size_t whylen)
{
    enum { PAGE = 1024, PER_PAGE_MAX = 8192 };
    *seq = 0;
    uint8_t(*hs)[AUDIT_CONTENT_HASH_LEN] = malloc(PER_PAGE_MAX * sizeof *hs);
    uint64_t *owner = malloc(PER_PAGE_MAX * sizeof *owner);
    uint8_t *arr = malloc(20 + (size_t)PER_PAGE_MAX * (4 + AUDIT_CONTENT_HASH_LEN));
    aos_err rc = AOS_OK;
    if (!hs || !owner || !arr) {
        WHY("out of memory for the contents check");
        rc = AOS_ERR_NOMEM;
    }
    uint64_t after = 0;
    while (rc == AOS_OK && !*seq) {
        db_params p;
        dp_init(&p);
        dp_i64(&p, (int64_t)after);
        PGresult *r = NULL;
        if ((rc = db_exec(c, &st_listing, &p, &r, why, whylen)) != AOS_OK)
            break;
        int n = PQntuples(r), cut = 0;
        size_t m = 0;
        for (int i = 0; i < n; i++) {
            size_t bl;
            const uint8_t *b = db_bytes(r, i, 1, &bl);
            uint64_t sq = (uint64_t)db_i64(r, i, 0);
            after = sq;
            /* a page's hashes stay under PER_PAGE_MAX: a record past it starts the next */
            if (m + AUDIT_CONTENTS_LIST_MAX > PER_PAGE_MAX) {
                after = (uint64_t)db_i64(r, i - 1, 0);
                cut = 1;
                break;
            }
            int k = audit_contents_listed(b, bl, hs + m, AUDIT_CONTENTS_LIST_MAX);
            for (int j = 0; j < k; j++)
                owner[m + (size_t)j] = sq;
            m += k > 0 ? (size_t)k : 0;
        }
        PQclear(r);
        *looked += m;
        if (m) {
            uint8_t *w = arr;
            uint32_t hdr[5] = {1, 0, 17, (uint32_t)m, 1};
            for (int j = 0; j < 5; j++)
                for (int k = 3; k >= 0; k--)
                    *w++ = (uint8_t)(hdr[j] >> (8 * k));
            for (size_t i = 0; i < m; i++) {
                for (int k = 3; k >= 0; k--)
                    *w++ = (uint8_t)(AUDIT_CONTENT_HASH_LEN >> (8 * k));
                memcpy(w, hs[i], AUDIT_CONTENT_HASH_LEN);
                w += AUDIT_CONTENT_HASH_LEN;
            }
            dp_init(&p);
            dp_bytes(&p, arr, (size_t)(w - arr));
            if ((rc = db_exec(c, &st_unstored, &p, &r, why, whylen)) != AOS_OK)
                break;
            /* the first owner, in seq order, of any hash found missing */
            for (int i = 0; i < PQntuples(r); i++) {
                size_t hl;
                const uint8_t *h = db_bytes(r, i, 0, &hl);
                for (size_t j = 0; hl == AUDIT_CONTENT_HASH_LEN && j < m; j++)
                    if (!memcmp(hs[j], h, hl) && (!*seq || owner[j] < *seq)) {
                        *seq = owner[j];
                        aos_hex(h, hl, hex);
                    }
            }
            PQclear(r);
        }
        if (n < PAGE && !cut)
            break;
    }
    free(hs);
    free(owner);
    free(arr);
    return rc;
}

typedef struct cpass {
    uint64_t bad_seq, rows, ms;
    int by_cursor; /* the COPY found too many damaged to keep: the cursor pass ran */
    char bad_what[200];
} cpass;

static void cset_sort(cset *set)
{
    if (set->n > 1)
        qsort(set->h, set->n, sizeof *set->h, hcmp);
}

/* Add h to the set (sorted at the end of contents_rehash); past VERIFY_SET_MAX the set is over. */
static void cset_add(cset *set, const uint8_t *h, size_t hl)
{
    if (set->over || hl != AUDIT_CONTENT_HASH_LEN)
        return; /* a name of another width is never listed (64 hex digits): no need */
    if (set->n == set->cap &&
        !(set->h = grow(set->h, &set->cap, set->max, sizeof *set->h))) {
        set->n = 0; /* over the cap, or out of memory: the database looks them up */
        set->over = 1;
        return;
    }
    memcpy(set->h[set->n++], h, AUDIT_CONTENT_HASH_LEN);
}

/* A stored content h that does not hash to its name: the first record naming it (by its
 * hex) is the damage's seq, kept in *bad_seq / bad_what when before the one there. */
static aos_err bad_content(PGconn *c, const uint8_t *h, size_t hl, uint64_t *bad_seq,
                           char *bad_what, size_t cap, char *why, size_t whylen)
{
    uint64_t seq;
    aos_err rc = content_ref(c, h, hl, &seq, why, whylen);
    if (rc != AOS_OK)
        return rc;
    char hex[2 * AUDIT_CONTENT_HASH_LEN + 1] = "?";
    if (hl == AUDIT_CONTENT_HASH_LEN)
        aos_hex(h, hl, hex);
    if (seq && (!*bad_seq || seq < *bad_seq)) {
        *bad_seq = seq;
        snprintf(bad_what, cap,
                 "content %.16s... named by record %llu does not hash to its name "
                 "(its body or size was changed in audit.contents)",
                 hex, (unsigned long long)seq);
    }
    return AOS_OK;
}

/* Every stored content re-hashed (its size too), its name put in set: cp gets the first
 * damage by the seq of the record that names it (the verdict waits for the chain: see
 * contents_verdict). The rows come through a cursor in the table's own order (one
 * sequential read, not one index probe per row), 4096 at a time with bodies up to
 * VERIFY_INLINE bytes; bigger bodies are read one by one. */
static aos_err contents_rehash_cursor(PGconn *c, cset *set, cpass *cp, char *why,
                                      size_t whylen)
{
    uint64_t bad_seq = 0, rows = 0, t0 = aos_mono_ms();
    char *bad_what = cp->bad_what;
    aos_err rc = db_cmd(c, "SET LOCAL enable_seqscan = on; "
                           "DECLARE audit_contents_walk NO SCROLL CURSOR FOR "
                           "SELECT hash, size, CASE WHEN length(body) <= 4096 THEN body END "
                           "FROM audit.contents",
                        why, whylen);
    if (rc != AOS_OK)
        return rc;
    for (;;) {
        PGresult *r = PQexecParams(c, "FETCH FORWARD 4096 FROM audit_contents_walk", 0, NULL,
                                   NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = db_error(c, r, why, whylen);
            PQclear(r);
            return rc;
        }
        int n = PQntuples(r);
        for (int i = 0; i < n; i++) {
            size_t hl, bl;
            const uint8_t *h = db_bytes(r, i, 0, &hl);
            int64_t size = db_i64(r, i, 1);
            PGresult *big = NULL;
            const uint8_t *b;
            if (PQgetisnull(r, i, 2)) {
                db_params p;
                dp_init(&p);
                dp_bytes(&p, h, hl);
                if ((rc = db_exec(c, &st_content_body, &p, &big, why, whylen)) != AOS_OK) {
                    PQclear(r);
                    return rc;
                }
                b = PQntuples(big) == 1 ? db_bytes(big, 0, 0, &bl) : NULL;
                if (!b)
                    bl = 0;
            } else {
                b = db_bytes(r, i, 2, &bl);
            }
            uint8_t got[AUDIT_CONTENT_HASH_LEN];
            audit_content_hash(b, bl, got);
            int ok = hl == AUDIT_CONTENT_HASH_LEN && !memcmp(got, h, hl) && size >= 0 &&
                     (uint64_t)size == bl;
            PQclear(big);
            rows++;
            if (ok)
                cset_add(set, h, hl);
            if (!ok && (rc = bad_content(c, h, hl, &bad_seq, bad_what, sizeof cp->bad_what,
                                         why, whylen)) != AOS_OK) {
                PQclear(r);
                return rc;
            }
        }
        PQclear(r);
        if (n < 4096)
            break;
    }
    if ((rc = db_cmd(c, "CLOSE audit_contents_walk; SET LOCAL enable_seqscan = off", why,
                     whylen)) != AOS_OK)
        return rc;
    if (!set->over)
        cset_sort(set);
    cp->bad_seq = bad_seq;
    cp->rows = rows;
    cp->ms = aos_mono_ms() - t0;
    return AOS_OK;
}

/* The same pass as one binary COPY of the table (a sequential read streamed while this
 * thread hashes, bodies whole: at most one content, AUDIT_CONTENT_MAX, is held). The
 * damaged ones are named after the COPY (the connection is busy during it): up to
 * BAD_MAX of them are kept; more, and the pass is done again by the cursor, which names
 * each as it goes. */
#define BAD_MAX 1024u
typedef struct bad_name {
    uint8_t h[AUDIT_CONTENT_HASH_LEN];
    size_t hl;
} bad_name;

static aos_err contents_rehash(PGconn *c, cset *set, cpass *cp, char *why, size_t whylen)
{
    uint64_t rows = 0, t0 = aos_mono_ms();
    size_t bad_max = cap_knob("AOS_AUDIT_VERIFY_BAD_MAX", BAD_MAX);
    bad_name *bad = malloc((bad_max ? bad_max : 1) * sizeof *bad);
    size_t nbad = 0;
    int bad_over = 0;
    if (!bad) {
        WHY("out of memory for the contents check");
        return AOS_ERR_NOMEM;
    }
    copyrd k = {0};
    aos_err rc = db_cmd(c, "SET LOCAL enable_seqscan = on", why, whylen);
    if (rc == AOS_OK)
        rc = copy_start(&k, c,
                        "COPY (SELECT hash, size, body FROM audit.contents) TO STDOUT "
                        "(FORMAT binary)",
                        why, whylen);
    while (rc == AOS_OK) {
        const uint8_t *f[3];
        int32_t fl[3];
        if ((rc = copy_row(&k, 3, f, fl, why, whylen)) != AOS_OK)
            break;
        size_t hl, bl;
        const uint8_t *h = f_bytes(f[0], fl[0], &hl);
        int64_t size = f_i64(f[1], fl[1]);
        const uint8_t *b = f_bytes(f[2], fl[2], &bl);
        uint8_t got[AUDIT_CONTENT_HASH_LEN];
        audit_content_hash(b, bl, got);
        int ok = hl == AUDIT_CONTENT_HASH_LEN && !memcmp(got, h, hl) && size >= 0 &&
                 (uint64_t)size == bl;
        rows++;
        if (ok) {
            cset_add(set, h, hl);
        } else if (nbad < bad_max) {
            bad[nbad].hl = hl;
            memcpy(bad[nbad].h, h, hl < AUDIT_CONTENT_HASH_LEN ? hl : AUDIT_CONTENT_HASH_LEN);
            nbad++;
        } else {
            bad_over = 1;
        }
    }
    if (rc == AOS_ERR_NOT_FOUND)
        rc = AOS_OK;
    copy_drain(&k);
    if (rc == AOS_OK)
        rc = db_cmd(c, "SET LOCAL enable_seqscan = off", why, whylen);
    if (rc == AOS_OK && bad_over) { /* too many to keep: the cursor names them as it goes */
        free(bad);
        free(set->h);
        *set = (cset){.max = set->max};
        *cp = (cpass){.by_cursor = 1};
        return contents_rehash_cursor(c, set, cp, why, whylen);
    }
    uint64_t bad_seq = 0;
    for (size_t i = 0; rc == AOS_OK && i < nbad; i++)
        rc = bad_content(c, bad[i].h, bad[i].hl, &bad_seq, cp->bad_what, sizeof cp->bad_what,
                         why, whylen);
    free(bad);
    if (rc != AOS_OK)
        return rc;
    if (!set->over)
        cset_sort(set);
    cp->bad_seq = bad_seq;
    cp->rows = rows;
    cp->ms = aos_mono_ms() - t0;
    return AOS_OK;
}

/* After a clean chain: the first damage to contents, by the seq of the record that names
 * it, turns f into ALTERED there (the record vouches for a content the store no longer
 * holds as it was): a stored one that does not hash to its name (cp), or a listed one not
 * stored (the walk's look-ups in w, or the database's when the set was over). */
static aos_err contents_verdict(PGconn *c, const cset *set, walk *w, cpass *cp,
                                audit_finding *f, char *why, size_t whylen)
{
    int in_db = set->over || w->over || !w->listed;
    if (!in_db)
        contents_lookup(w, (const uint8_t(*)[AUDIT_CONTENT_HASH_LEN])set->h, set->n);
    uint64_t bad_seq = cp->bad_seq, miss = w->miss, looked = w->looked, t1 = aos_mono_ms();
    char *bad_what = cp->bad_what;
    char mhex[2 * AUDIT_CONTENT_HASH_LEN + 1];
    snprintf(mhex, sizeof mhex, "%s", w->mhex);
    aos_err rc;
    if (in_db &&
        (rc = contents_listed_check(c, &miss, mhex, &looked, why, whylen)) != AOS_OK)
        return rc;
    if (in_db)
        aos_info("audit.verify: %llu contents re-hashed in %llu ms%s, %llu listed ones looked "
                 "up in the database in %llu ms (over %zu names)",
                 (unsigned long long)cp->rows, (unsigned long long)cp->ms,
                 cp->by_cursor ? " by the cursor" : "",
                 (unsigned long long)looked, (unsigned long long)(aos_mono_ms() - t1),
                 set->max);
    else
        aos_info("audit.verify: %llu contents re-hashed in %llu ms%s, %llu listed ones looked "
                 "up in memory after the walk",
                 (unsigned long long)cp->rows, (unsigned long long)cp->ms,
                 cp->by_cursor ? " by the cursor" : "",
                 (unsigned long long)looked);
    if (miss && (!bad_seq || miss < bad_seq)) {
        bad_seq = miss;
        snprintf(bad_what, sizeof cp->bad_what,
                 "record %llu lists content %.16s... that is not in audit.contents (deleted "
                 "from the store)",
                 (unsigned long long)miss, mhex);
    }
    if (bad_seq) {
        f->kind = AUDIT_FIND_ALTERED;
        f->seq = f->seq_end = bad_seq;
        f->head_size = 0;
        snprintf(f->what, sizeof f->what, "%s", bad_what);
    }
    return AOS_OK;
}

typedef struct verify_arg {
    alog *l;
    const char *dsn; /* the server's role, for the contents pass's own connection */
    audit_finding f;
    uint64_t fed;
} verify_arg;

/* The contents pass on a connection of its own, in the walk's snapshot (exported by the
 * walk's transaction, imported here), so re-hashing the store and walking the chain share
 * the two cores instead of taking turns. rc is set when it ran; ran = 0 means it could not
 * start (no second connection) and the walk's thread runs it after the walk instead. */
typedef struct cjob {
    const char *dsn;
    char snap[64];
    cset set;
    cpass cp;
    int ran;
    aos_err rc;
    char why[512];
} cjob;

static void *cjob_main(void *arg)
{
    cjob *j = arg;
    srv_pg *p = NULL;
    if (srv_pg_open(j->dsn, &p, j->why, sizeof j->why) != AOS_OK)
        return NULL;
    PGconn *c = srv_pg_conn(p, j->why, sizeof j->why);
    char sql[128];
    snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT '%s'", j->snap);
    if (c && db_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", j->why,
                    sizeof j->why) == AOS_OK) {
        if (db_cmd(c, sql, j->why, sizeof j->why) == AOS_OK) {
            j->ran = 1;
            j->rc = contents_rehash(c, &j->set, &j->cp, j->why, sizeof j->why);
        }
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    srv_pg_close(p);
    return NULL;
}

/* This transaction's snapshot, for the contents pass to import (0: none to share). */
static int export_snapshot(PGconn *c, char *out, size_t cap)
{
    PGresult *r = PQexec(c, "SELECT pg_export_snapshot()");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             strlen(PQgetvalue(r, 0, 0)) < cap;
    if (ok) {
        /* its id goes into SQL text: only the form PostgreSQL gives it (hex and dashes) */
        const char *v = PQgetvalue(r, 0, 0);
        for (size_t i = 0; v[i] && ok; i++)
            ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'A' && v[i] <= 'F') || v[i] == '-';
        if (ok)
            snprintf(out, cap, "%s", v);
    }
    PQclear(r);
    return ok;
}

static aos_err verify_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    verify_arg *va = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    audit_sth *heads = NULL;
    PGresult *hr = NULL, *ar = NULL;
    size_t set_max = cap_knob("AOS_AUDIT_VERIFY_SET_MAX", VERIFY_SET_MAX);
    cjob *job = calloc(1, sizeof *job);
    pthread_t th;
    int started = 0;
    walk w = {.c = c,
              .max = set_max,
              .listed = malloc(AUDIT_CONTENTS_LIST_MAX * sizeof *w.listed)};
    if (!job) {
        free(w.listed);
        WHY("out of memory for the contents check");
        return AOS_ERR_NOMEM;
    }
    job->dsn = va->dsn;
    job->set.max = set_max;
    aos_err rc = begin_read(c, why, whylen);
    if (rc != AOS_OK) {
        free(w.listed);
        free(job);
        return rc;
    }
    if ((rc = db_exec(c, &st_heads, NULL, &hr, why, whylen)) != AOS_OK)
        goto out;
    size_t nh = (size_t)PQntuples(hr);
    heads = calloc(nh ? nh : 1, sizeof *heads);
    if (!heads) {
        rc = AOS_ERR_NOMEM;
        WHY("out of memory for %zu heads", nh);
        goto out;
    }
    for (size_t i = 0; i < nh; i++)
        row_sth(hr, (int)i, &heads[i]);
    if ((rc = db_exec(c, &st_archive, NULL, &ar, why, whylen)) != AOS_OK)
        goto out;
    audit_rec arch;
    uint8_t achain[AUDIT_HASH_LEN];
    int have_arch = PQntuples(ar) == 1;
    if (have_arch)
        row_rec(ar, 0, &arch, achain, NULL);
    uint8_t pk[AUDIT_PK_LEN];
    alog_public_key(va->l, pk);
    /* the contents beside the walk; the walk gathers what records list, looked up after */
    if (job->dsn && cap_knob("AOS_AUDIT_VERIFY_CONNS", 2) > 1 &&
        export_snapshot(c, job->snap, sizeof job->snap))
        started = pthread_create(&th, NULL, cjob_main, job) == 0;
    uint64_t t0 = mono_ns();
    rc = audit_verify_run(pk, heads, nh, have_arch ? &arch : NULL, walk_next, &w, &va->f, why,
                          whylen);
    va->fed = w.fed;
    aos_info("audit.verify: %llu records walked in %llu ms, %llu ms of it waiting for "
             "PostgreSQL's rows",
             (unsigned long long)w.fed, (unsigned long long)((mono_ns() - t0) / 1000000u),
             (unsigned long long)(w.k.wait_ns / 1000000u));
    walk_end(&w);
    if (started) {
        pthread_join(th, NULL);
        started = 0;
    }
    int settled = rc == AOS_OK &&
                  (va->f.kind == AUDIT_FIND_OK || va->f.kind == AUDIT_FIND_DECLARED_GAP);
    if (settled && !job->ran) { /* no second connection: the contents pass here, after */
        aos_info("audit.verify: contents checked on the walk's connection, after it%s%s",
                 job->why[0] ? ": " : "", job->why);
        rc = contents_rehash(c, &job->set, &job->cp, why, whylen);
    } else if (settled && job->rc != AOS_OK) {
        rc = job->rc;
        WHY("%s", job->why);
    }
    if (settled && rc == AOS_OK)
        rc = contents_verdict(c, &job->set, &w, &job->cp, &va->f, why, whylen);
    if (rc == AOS_OK)
        rc = db_cmd(c, "COMMIT", why, whylen);
out:
    if (started)
        pthread_join(th, NULL);
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    walk_end(&w);
    PQclear(hr);
    PQclear(ar);
    free(heads);
    free(job->set.h);
    free(job);
    free(w.names);
    free(w.listed);
    return rc;
}

aos_err ar_verify(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    Aos__Audit__VerifyRequest *vr =
        aos__audit__verify_request__unpack(NULL, req->payload_len, req->payload);
    if (!vr)
        return srv_fail(rep, AOS_ERR_PROTO, "audit.verify: the payload is not a VerifyRequest");
    aos__audit__verify_request__free_unpacked(vr, NULL);
    srv_pg *pg = srv_db(s);
    if (!pg || !l)
        return srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.verify: no database connection");
    verify_arg va = {.l = l, .dsn = srv_pg_dsn(s)};
    aos_err rc = db_run(pg, req->deadline_ms, "audit.verify", rep, verify_attempt, &va, NULL);
    if (rc != AOS_OK)
        return rc;
    atomic_fetch_add(&n_verifies, 1);
    atomic_fetch_add(&n_verified, va.fed);
    Aos__Audit__Finding f = AOS__AUDIT__FINDING__INIT;
    f.kind = (char *)audit_find_name(va.f.kind);
    f.seq = va.f.seq;
    f.seq_end = va.f.seq_end;
    f.head_size = va.f.head_size;
    f.records = va.f.records;
    f.heads_checked = va.f.heads_checked;
    f.heads_skipped = va.f.heads_skipped;
    va.f.what[sizeof va.f.what - 1] = 0;
    f.what = va.f.what;
    return srv_reply_pb(rep, &f.base);
}

/* ---- audit.prove -------------------------------------------------------------------------- */

typedef struct leaves {
    PGconn *c;
    uint64_t n;                    /* the tree's size */
    uint64_t lo, cnt;              /* cached leaves lo..lo+cnt-1 (indices) */
    uint8_t (*h)[AUDIT_HASH_LEN];
} leaves;

static aos_err leaf_at(void *arg, uint64_t index, uint8_t out[AUDIT_HASH_LEN], char *why,
                       size_t whylen)
{
    leaves *L = arg;
    if (index < L->lo || index >= L->lo + L->cnt) {
        uint64_t hi = index + LEAF_PAGE < L->n ? index + LEAF_PAGE : L->n;
        db_params p;
        dp_init(&p);
        dp_i64(&p, (int64_t)index);       /* seq > index: from seq index+1 */
        dp_i64(&p, (int64_t)hi);
        PGresult *r;
        aos_err rc = db_exec(L->c, &st_leaves, &p, &r, why, whylen);
        if (rc != AOS_OK)
            return rc;
        L->lo = index;
        L->cnt = 0;
        for (int i = 0; i < PQntuples(r); i++) {
            if ((uint64_t)db_i64(r, i, 0) != index + 1 + (uint64_t)i ||
                !fixed(r, i, 1, L->h[i], AUDIT_HASH_LEN))
                break;
            L->cnt++;
        }
        PQclear(r);
        if (index >= L->lo + L->cnt) {
            WHY("the log has no good leaf for seq %llu (a gap or damage: audit.verify "
                "names it)",
                (unsigned long long)index + 1);
            return AOS_ERR_CONFLICT;
        }
    }
    memcpy(out, L->h[index - L->lo], AUDIT_HASH_LEN);
    return AOS_OK;
}

typedef struct prove_arg {
    uint64_t seq, size;
    alog *l;
    leaves L;
    uint64_t base;      /* seqs 1..base are archived (the latest archive record's) */
    audit_archive arch;
} prove_arg;

/* After an archive the leaves below the cut are gone: a record there has no proof left
 * (its archive holds it and the head of the cut), and a path past the cut takes the
 * archived subtrees from the archive record's frontier. */
static aos_err prove_base(PGconn *c, prove_arg *pa, char *why, size_t whylen)
{
    PGresult *ar = NULL;
    pa->base = 0;
    aos_err rc = db_exec(c, &st_archive, NULL, &ar, why, whylen);
    if (rc != AOS_OK)
        return rc;
    if (PQntuples(ar) == 1) {
        audit_rec arch;
        uint8_t chain[AUDIT_HASH_LEN];
        row_rec(ar, 0, &arch, chain, NULL);
        if (audit_archive_decode(arch.body, arch.body_len, &pa->arch, NULL, 0) != AOS_OK) {
            WHY("audit.prove: the archive record %llu does not decode (audit.verify names "
                "it)", (unsigned long long)arch.seq);
            rc = AOS_ERR_CONFLICT;
        } else if (pa->seq <= pa->arch.archived_to) {
            WHY("audit.prove: record %llu was archived: seqs 1..%llu were dropped from the "
                "log (declared by archive record %llu), so no proof of it can be built "
                "here; its archive holds it with the signed head of size %llu",
                (unsigned long long)pa->seq, (unsigned long long)pa->arch.archived_to,
                (unsigned long long)arch.seq, (unsigned long long)pa->arch.archived_to);
            rc = AOS_ERR_NOT_FOUND;
        } else {
            /* records above the cut may still be the dropped range's neighbours in a
             * log that was not dropped yet: then the leaves are there and this is the
             * same path */
            pa->base = pa->arch.archived_to;
        }
    }
    PQclear(ar);
    return rc;
}

static aos_err prove_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    prove_arg *pa = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *hr = NULL, *rr = NULL;
    uint8_t *enc = NULL;
    aos_err rc = begin_read(c, why, whylen);
    if (rc != AOS_OK)
        return rc;
    db_params p;
    dp_init(&p);
    dp_i64(&p, (int64_t)(pa->size ? pa->size : pa->seq));
    if ((rc = db_exec(c, pa->size ? &st_head_at : &st_head_cover, &p, &hr, why, whylen)) !=
        AOS_OK)
        goto out;
    if (PQntuples(hr) != 1) {
        rc = AOS_ERR_NOT_FOUND;
        if (pa->size)
            WHY("audit.prove: no head of tree size %llu", (unsigned long long)pa->size);
        else
            WHY("audit.prove: no signed head covers seq %llu yet (audit.head with sign_now "
                "signs one)",
                (unsigned long long)pa->seq);
        goto out;
    }
    audit_sth h;
    row_sth(hr, 0, &h);
    if ((rc = prove_base(c, pa, why, whylen)) != AOS_OK)
        goto out;
    if (h.tree_size < pa->seq) {
        rc = AOS_ERR_USAGE;
        WHY("audit.prove: seq %llu is not in the tree of size %llu",
            (unsigned long long)pa->seq, (unsigned long long)h.tree_size);
        goto out;
    }
    dp_init(&p);
    dp_i64(&p, (int64_t)pa->seq);
    if ((rc = db_exec(c, &st_rec, &p, &rr, why, whylen)) != AOS_OK)
        goto out;
    if (PQntuples(rr) != 1) {
        rc = AOS_ERR_NOT_FOUND;
        WHY("audit.prove: no record %llu", (unsigned long long)pa->seq);
        goto out;
    }
    audit_rec rec;
    uint8_t chain[AUDIT_HASH_LEN], leaf[AUDIT_HASH_LEN];
    row_rec(rr, 0, &rec, chain, leaf);
    enc = malloc(AUDIT_REC_MAX);
    if (!enc) {
        rc = AOS_ERR_NOMEM;
        WHY("out of memory");
        goto out;
    }
    size_t len;
    if (audit_rec_encode(&rec, enc, AUDIT_REC_MAX, &len, NULL, 0) != AOS_OK) {
        rc = AOS_ERR_CONFLICT;
        WHY("audit.prove: record %llu as stored does not encode: it was altered",
            (unsigned long long)pa->seq);
        goto out;
    }
    pa->L = (leaves){.c = c, .n = h.tree_size, .h = pa->L.h};
    uint8_t path[AUDIT_PROOF_MAX][AUDIT_HASH_LEN];
    size_t plen;
    if (pa->base)
        rc = audit_inclusion_proof_base(leaf_at, &pa->L, pa->base,
                                        (const uint8_t(*)[AUDIT_HASH_LEN])pa->arch.frontier,
                                        pa->arch.n, pa->seq - 1, h.tree_size, path,
                                        AUDIT_PROOF_MAX, &plen, why, whylen);
    else
        rc = audit_inclusion_proof(leaf_at, &pa->L, pa->seq - 1, h.tree_size, path,
                                   AUDIT_PROOF_MAX, &plen, why, whylen);
    if (rc != AOS_OK)
        goto out;
    /* a proof the log's own head refutes is no proof: say what is wrong instead */
    uint8_t lh[AUDIT_HASH_LEN];
    audit_leaf_hash(enc, len, lh);
    if (audit_inclusion_verify(lh, pa->seq - 1, h.tree_size,
                               (const uint8_t(*)[AUDIT_HASH_LEN])path, plen, h.root, NULL,
                               0) != AOS_OK) {
        rc = AOS_ERR_CONFLICT;
        WHY("audit.prove: record %llu and the stored leaves do not give head %llu's root: "
            "the log was changed (audit.verify names where)",
            (unsigned long long)pa->seq, (unsigned long long)h.tree_size);
        goto out;
    }
    if ((rc = db_cmd(c, "COMMIT", why, whylen)) != AOS_OK)
        goto out;
    uint8_t pk[AUDIT_PK_LEN];
    alog_public_key(pa->l, pk);
    Aos__Audit__Head hm = AOS__AUDIT__HEAD__INIT;
    fill_head(&hm, &h, pk);
    ProtobufCBinaryData pb[AUDIT_PROOF_MAX];
    for (size_t i = 0; i < plen; i++)
        pb[i] = (ProtobufCBinaryData){AUDIT_HASH_LEN, path[i]};
    Aos__Audit__Proof pr = AOS__AUDIT__PROOF__INIT;
    pr.record = (ProtobufCBinaryData){len, enc};
    pr.seq = pa->seq;
    pr.n_path = plen;
    pr.path = pb;
    pr.head = &hm;
    rc = srv_reply_pb(rep, &pr.base);
out:
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    free(enc);
    PQclear(hr);
    PQclear(rr);
    return rc;
}

aos_err ar_prove(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    Aos__Audit__ProveRequest *pr =
        aos__audit__prove_request__unpack(NULL, req->payload_len, req->payload);
    if (!pr)
        return srv_fail(rep, AOS_ERR_PROTO, "audit.prove: the payload is not a ProveRequest");
    prove_arg pa = {.seq = pr->seq, .size = pr->tree_size, .l = l};
    aos__audit__prove_request__free_unpacked(pr, NULL);
    if (pa.seq == 0 || pa.seq > INT64_MAX || pa.size > INT64_MAX)
        return srv_fail(rep, AOS_ERR_USAGE, "audit.prove: seq must be 1 or more");
    if (pa.size && pa.size < pa.seq)
        return srv_fail(rep, AOS_ERR_USAGE, "audit.prove: seq %llu is not in a tree of %llu",
                        (unsigned long long)pa.seq, (unsigned long long)pa.size);
    srv_pg *pg = srv_db(s);
    if (!pg || !l)
        return srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.prove: no database connection");
    pa.L.h = malloc((size_t)LEAF_PAGE * AUDIT_HASH_LEN);
    if (!pa.L.h)
        return srv_fail(rep, AOS_ERR_NOMEM, "audit.prove: out of memory");
    aos_err rc = db_run(pg, req->deadline_ms, "audit.prove", rep, prove_attempt, &pa, NULL);
    free(pa.L.h);
    if (rc == AOS_OK)
        atomic_fetch_add(&n_proofs, 1);
    return rc;
}

/* ---- audit.tail ---------------------------------------------------------------------------- */

/* audit.tail and audit.replay: one query of REC_COLS rows, answered as a TailReply. */
typedef struct tail_arg {
    const db_stmt *st;
    db_params p;
} tail_arg;

static aos_err tail_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    tail_arg *ta = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *r = NULL, *mr = NULL;
    Aos__Audit__Record *recs = NULL, **rp = NULL;
    char *strs = NULL;
    aos_err rc = begin_read(c, why, whylen);
    if (rc != AOS_OK)
        return rc;
    if ((rc = db_exec(c, ta->st, &ta->p, &r, why, whylen)) != AOS_OK)
        goto out;
    if ((rc = db_exec(c, &st_max, NULL, &mr, why, whylen)) != AOS_OK)
        goto out;
    if ((rc = db_cmd(c, "COMMIT", why, whylen)) != AOS_OK)
        goto out;
    int n = PQntuples(r);
    recs = calloc((size_t)(n ? n : 1), sizeof *recs);
    rp = calloc((size_t)(n ? n : 1), sizeof *rp);
    /* per record: NUL-terminated copies of its four strings, then its three ids */
    strs = malloc((size_t)(n ? n : 1) * REC_SCRATCH);
    if (!recs || !rp || !strs) {
        rc = AOS_ERR_NOMEM;
        WHY("out of memory for %d records", n);
        goto out;
    }
    size_t bytes = 0, k = 0;
    for (int i = 0; i < n; i++) {
        audit_rec a;
        uint8_t chain[AUDIT_HASH_LEN];
        row_rec(r, i, &a, chain, NULL);
        if (bytes + a.body_len + 512 > TAIL_BYTES && k > 0)
            break; /* the caller asks again after the last seq it got */
        Aos__Audit__Record *m = &recs[k];
        aos__audit__record__init(m);
        char *sp = strs + k * REC_SCRATCH;
        const struct {
            const char *s;
            size_t n;
            char **dst;
        } f[] = {{a.kind, a.kind_len, &m->kind},
                 {a.agent, a.agent_len, &m->agent},
                 {a.run, a.run_len, &m->run},
                 {a.method, a.method_len, &m->method}};
        for (size_t j = 0; j < 4; j++) {
            size_t len = f[j].n < 64 ? f[j].n : 64;
            if (len)
                memcpy(sp, f[j].s, len);
            sp[len] = 0;
            *f[j].dst = sp;
            sp += len + 1;
        }
        m->seq = a.seq;
        m->time_ns = a.time_ns;
        m->step = a.step;
        uint8_t *ids = (uint8_t *)sp;
        memcpy(ids, a.trace_id, AUDIT_TRACE_LEN);
        memcpy(ids + AUDIT_TRACE_LEN, a.span_id, AUDIT_SPAN_LEN);
        memcpy(ids + AUDIT_TRACE_LEN + AUDIT_SPAN_LEN, a.parent_span_id, AUDIT_SPAN_LEN);
        m->trace_id = (ProtobufCBinaryData){AUDIT_TRACE_LEN, ids};
        m->span_id = (ProtobufCBinaryData){AUDIT_SPAN_LEN, ids + AUDIT_TRACE_LEN};
        m->parent_span_id =
            (ProtobufCBinaryData){AUDIT_SPAN_LEN, ids + AUDIT_TRACE_LEN + AUDIT_SPAN_LEN};
        m->status = a.status;
        m->latency_us = a.latency_us;
        m->body = (ProtobufCBinaryData){a.body_len, (uint8_t *)a.body};
        rp[k++] = m;
        bytes += a.body_len + 512;
    }
    Aos__Audit__TailReply tr_out = AOS__AUDIT__TAIL_REPLY__INIT;
    tr_out.n_records = k;
    tr_out.records = rp;
    tr_out.last_seq = (uint64_t)db_i64(mr, 0, 0);
    rc = srv_reply_pb(rep, &tr_out.base);
out:
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    free(recs);
    free(rp);
    free(strs);
    PQclear(r);
    PQclear(mr);
    return rc;
}

aos_err ar_tail(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    (void)l;
    Aos__Audit__TailRequest *tr =
        aos__audit__tail_request__unpack(NULL, req->payload_len, req->payload);
    if (!tr)
        return srv_fail(rep, AOS_ERR_PROTO, "audit.tail: the payload is not a TailRequest");
    aos_err rc = AOS_OK;
    if (tr->agent.len > AUDIT_AGENT_MAX || !aos_utf8_valid(tr->agent.data, tr->agent.len) ||
        tr->run.len > AUDIT_RUN_MAX || !aos_utf8_valid(tr->run.data, tr->run.len))
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.tail: agent or run over 64 bytes or not UTF-8");
    else if (tr->trace_id.len != 0 && tr->trace_id.len != AUDIT_TRACE_LEN)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.tail: trace_id is neither 16 bytes nor empty");
    else if (tr->after_seq > INT64_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.tail: after_seq out of range");
    else if (tr->limit > TAIL_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.tail: limit %u (at most %u)", tr->limit,
                      TAIL_MAX);
    srv_pg *pg = srv_db(s);
    if (rc == AOS_OK && !pg)
        rc = srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.tail: no database connection");
    if (rc == AOS_OK) {
        tail_arg ta = {.st = &st_tail};
        dp_init(&ta.p);
        dp_i64(&ta.p, (int64_t)tr->after_seq);
        dp_bytes(&ta.p, tr->agent.data, tr->agent.len);
        dp_bytes(&ta.p, tr->run.data, tr->run.len);
        dp_bytes(&ta.p, tr->trace_id.data, tr->trace_id.len);
        dp_i64(&ta.p, tr->limit ? tr->limit : TAIL_DEFAULT);
        rc = db_run(pg, req->deadline_ms, "audit.tail", rep, tail_attempt, &ta, NULL);
        if (rc == AOS_OK)
            atomic_fetch_add(&n_tails, 1);
    }
    aos__audit__tail_request__free_unpacked(tr, NULL);
    return rc;
}

/* ---- audit.replay ------------------------------------------------------------------------- */

aos_err ar_replay(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    (void)l;
    Aos__Audit__ReplayRequest *q =
        aos__audit__replay_request__unpack(NULL, req->payload_len, req->payload);
    if (!q)
        return srv_fail(rep, AOS_ERR_PROTO, "audit.replay: the payload is not a ReplayRequest");
    aos_err rc = AOS_OK;
    if (q->agent.len < 1 || q->agent.len > AUDIT_AGENT_MAX ||
        !aos_utf8_valid(q->agent.data, q->agent.len) || q->run.len < 1 ||
        q->run.len > AUDIT_RUN_MAX || !aos_utf8_valid(q->run.data, q->run.len))
        rc = srv_fail(rep, AOS_ERR_USAGE,
                      "audit.replay: agent and run are 1 to 64 bytes of UTF-8");
    else if (q->after_seq > INT64_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.replay: after_seq out of range");
    else if (q->limit > TAIL_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.replay: limit %u (at most %u)", q->limit,
                      TAIL_MAX);
    srv_pg *pg = srv_db(s);
    if (rc == AOS_OK && !pg)
        rc = srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.replay: no database connection");
    if (rc == AOS_OK) {
        tail_arg ta = {.st = &st_replay};
        dp_init(&ta.p);
        dp_bytes(&ta.p, q->agent.data, q->agent.len);
        dp_bytes(&ta.p, q->run.data, q->run.len);
        dp_i64(&ta.p, q->after_step);
        dp_i64(&ta.p, (int64_t)q->after_seq);
        dp_i64(&ta.p, q->limit ? q->limit : TAIL_DEFAULT);
        rc = db_run(pg, req->deadline_ms, "audit.replay", rep, tail_attempt, &ta, NULL);
        if (rc == AOS_OK)
            atomic_fetch_add(&n_replays, 1);
    }
    aos__audit__replay_request__free_unpacked(q, NULL);
    return rc;
}

/* ---- audit.contents ------------------------------------------------------------------------ */

typedef struct contents_arg {
    const uint8_t *arr;            /* the hashes as a binary bytea[] */
    size_t arr_len;
} contents_arg;

static aos_err contents_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    contents_arg *ca = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *sr = NULL;
    PGresult *br[CONTENTS_REQ_MAX] = {0};
    Aos__Audit__Content cs[CONTENTS_REQ_MAX], *cp[CONTENTS_REQ_MAX];
    size_t n = 0;
    int truncated = 0;
    aos_err rc = begin_read(c, why, whylen);
    if (rc != AOS_OK)
        return rc;
    db_params p;
    dp_init(&p);
    dp_bytes(&p, ca->arr, ca->arr_len);
    if ((rc = db_exec(c, &st_content_sizes, &p, &sr, why, whylen)) != AOS_OK)
        goto out;
    size_t bytes = 0;
    for (int i = 0; i < PQntuples(sr) && n < CONTENTS_REQ_MAX; i++) {
        size_t hl;
        const uint8_t *h = db_bytes(sr, i, 0, &hl);
        int64_t len = db_i64(sr, i, 1);
        /* one at least, so a caller asking again always gets further */
        if (n && bytes + (uint64_t)len + 64 > CONTENTS_BYTES) {
            truncated = 1;
            continue;
        }
        dp_init(&p);
        dp_bytes(&p, h, hl);
        if ((rc = db_exec(c, &st_content_body, &p, &br[n], why, whylen)) != AOS_OK)
            goto out;
        if (PQntuples(br[n]) != 1) {
            PQclear(br[n]);
            br[n] = NULL;
            continue;
        }
        aos__audit__content__init(&cs[n]);
        cs[n].hash = (ProtobufCBinaryData){hl, (uint8_t *)h};
        cs[n].body.data = (uint8_t *)db_bytes(br[n], 0, 0, &cs[n].body.len);
        bytes += cs[n].body.len + 64;
        cp[n] = &cs[n];
        n++;
    }
    if ((rc = db_cmd(c, "COMMIT", why, whylen)) != AOS_OK)
        goto out;
    Aos__Audit__ContentsReply out = AOS__AUDIT__CONTENTS_REPLY__INIT;
    out.n_contents = n;
    out.contents = cp;
    out.truncated = truncated;
    rc = srv_reply_pb(rep, &out.base);
out:
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    for (size_t i = 0; i < CONTENTS_REQ_MAX; i++)
        PQclear(br[i]);
    PQclear(sr);
    return rc;
}

aos_err ar_contents(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    (void)l;
    Aos__Audit__ContentsRequest *q =
        aos__audit__contents_request__unpack(NULL, req->payload_len, req->payload);
    if (!q)
        return srv_fail(rep, AOS_ERR_PROTO,
                        "audit.contents: the payload is not a ContentsRequest");
    aos_err rc = AOS_OK;
    if (q->n_hashes < 1 || q->n_hashes > CONTENTS_REQ_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.contents: %zu hashes (1 to %u)", q->n_hashes,
                      CONTENTS_REQ_MAX);
    for (size_t i = 0; rc == AOS_OK && i < q->n_hashes; i++)
        if (q->hashes[i].len != AUDIT_CONTENT_HASH_LEN)
            rc = srv_fail(rep, AOS_ERR_USAGE, "audit.contents: hashes[%zu] is not 32 bytes", i);
    srv_pg *pg = srv_db(s);
    if (rc == AOS_OK && !pg)
        rc = srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.contents: no database connection");
    uint8_t arr[20 + CONTENTS_REQ_MAX * (4 + AUDIT_CONTENT_HASH_LEN)];
    if (rc == AOS_OK) {
        uint8_t *w = arr;
        uint32_t hdr[5] = {1, 0, 17, (uint32_t)q->n_hashes, 1};
        for (int j = 0; j < 5; j++)
            for (int k = 3; k >= 0; k--)
                *w++ = (uint8_t)(hdr[j] >> (8 * k));
        for (size_t i = 0; i < q->n_hashes; i++) {
            for (int k = 3; k >= 0; k--)
                *w++ = (uint8_t)(AUDIT_CONTENT_HASH_LEN >> (8 * k));
            memcpy(w, q->hashes[i].data, AUDIT_CONTENT_HASH_LEN);
            w += AUDIT_CONTENT_HASH_LEN;
        }
        contents_arg ca = {.arr = arr, .arr_len = (size_t)(w - arr)};
        rc = db_run(pg, req->deadline_ms, "audit.contents", rep, contents_attempt, &ca, NULL);
    }
    aos__audit__contents_request__free_unpacked(q, NULL);
    return rc;
}

void ar_stats(srv_stats *st)
{
    srv_stat(st, "replays", (int64_t)atomic_load(&n_replays), NULL);
    srv_stat(st, "proofs", (int64_t)atomic_load(&n_proofs), NULL);
    srv_stat(st, "verifies", (int64_t)atomic_load(&n_verifies), NULL);
    srv_stat(st, "verified_records", (int64_t)atomic_load(&n_verified), NULL);
    srv_stat(st, "tails", (int64_t)atomic_load(&n_tails), NULL);
}

/* ---- for archive.c --------------------------------------------------------------------- */

void ar_row_rec(const PGresult *r, int row, audit_rec *rec, uint8_t chain[AUDIT_HASH_LEN])
{
    row_rec(r, row, rec, chain, NULL);
}

void ar_row_sth(const PGresult *r, int row, audit_sth *h)
{
    row_sth(r, row, h);
}

void ar_fill_head(Aos__Audit__Head *m, audit_sth *h, uint8_t pk[AUDIT_PK_LEN])
{
    fill_head(m, h, pk);
}

aos_err ar_begin_read(PGconn *c, char *why, size_t whylen)
{
    return begin_read(c, why, whylen);
}
