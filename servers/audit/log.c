/* aos-audit's writer: one thread, one connection, group commits. It alone assigns seqs
 * and extends the chain and the tree, so no lock guards them; memory follows the database
 * only after a COMMIT succeeded, and is reloaded from it after any failure. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "aos/envelope.h"
#include "aos/log.h"
#include "contents.h"
#include "db.h"
#include "monotime.h"
#include "pg.h"

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

_Static_assert(SRV_CONTENT_MAX == AUDIT_CONTENT_MAX && SRV_CONTENTS_MAX == AUDIT_CONTENTS_EMIT_MAX &&
                   SRV_CONTENTS_BYTES == AUDIT_CONTENTS_EMIT_BYTES,
               "the producers' caps are aos-audit's");

/* A batch takes whole calls until it holds this many events or payload bytes: one
 * transaction stays a few MB, and the next batch gathers while it commits. */
#define BATCH_EVENTS 16384u
#define BATCH_BYTES (32u << 20)
#define COPY_CHUNK (1u << 20)
#define COPY_COLS 17
/* A batch up to this size goes as one autocommitted statement over arrays (one round trip
 * and the commit's fsync); a bigger one as BEGIN, COPY, COMMIT, where COPY's speed on many
 * rows is worth its extra round trips. */
#define ONE_STMT_ROWS 64u
#define ONE_STMT_BYTES (256u << 10)

enum { IT_EMIT, IT_HEAD };

/* A caller inside aos-audit (audit.archive) waiting for its emit: no srv_call. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    aos_err rc;
    uint64_t first_seq;
    uint32_t appended;
    char why[AOS_ERRMSG_MAX];
} waiter;

typedef struct item {
    int kind;
    srv_call *call;
    waiter *w;                    /* instead of call */
    Aos__Audit__EmitRequest *req; /* IT_EMIT, owned */
    int sign_now;                 /* IT_HEAD */
    uint64_t deadline_ms;         /* epoch ms */
    size_t bytes;
    /* the outcome of the batch being tried */
    uint64_t first_seq;
    uint32_t appended;
    struct item *next;
} item;

/* A key seen in this batch or found in the table, with the seq it has there. */
typedef struct kslot {
    const uint8_t *k;
    size_t n;
    uint64_t seq;
} kslot;

struct alog {
    srv *s;
    srv_pg *pg;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item *head, *tail;
    int stop;
    audit_key *key;
    uint8_t pk[AUDIT_PK_LEN];
    int heads_fd;

    /* the writer thread's alone */
    PGconn *tuned;                /* the connection the session settings are on */
    int loaded;
    uint64_t last_seq;
    uint8_t chain[AUDIT_HASH_LEN];
    audit_tree *tree, *scratch;
    int have_head;
    audit_sth sth;
    uint64_t head_mono_ms;
    uint8_t *enc;                 /* AUDIT_REC_MAX: one record's encoding */
    uint8_t *cbuf;                /* the COPY data of a batch */
    size_t clen, ccap;
    uint8_t (*leaves)[AUDIT_HASH_LEN];
    size_t nleaves, cleaves;
    kslot *ks;
    size_t kcap;
    uint8_t *fresh;               /* per event of the batch: 1 when appended, 0 a duplicate */
    size_t cfresh;
    alog_commit_fn on_commit;     /* set under mu; the writer reads it there */
    void *on_commit_arg;
    const Aos__Audit__Content **cs; /* the batch's distinct contents */
    size_t ccount, ccap_n;
    uint64_t *cset;                 /* open addressing over cs, by hash prefix */
    size_t csetcap;
    db_array arr[COPY_COLS + 3];    /* a small batch's columns, then its contents' */

    atomic_ullong records, heads, commits, committed_events, dups, db_waits, queued,
        failed, contents_sent, key_lookups;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the key and the heads file ------------------------------------------------------- */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static aos_err key_load(const char *path, audit_key **out, char *why, size_t whylen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? AOS_ERR_NOT_FOUND : AOS_ERR_IO;
    uint8_t b[AUDIT_KEY_LEN + 1];
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    aos_err rc = AOS_ERR_PROTO;
    if (n == (ssize_t)AUDIT_KEY_LEN)
        rc = audit_key_from_bytes(b, (size_t)n, out, why, whylen);
    sodium_memzero(b, sizeof b);
    if (rc != AOS_OK)
        WHY("%s is damaged (%zd bytes, not the %u-byte key pair that signs this log's "
            "heads): refusing to start; restore it from a backup (a new key could not "
            "vouch for the heads signed already)",
            path, n, AUDIT_KEY_LEN);
    return rc;
}

/* First start: the pair goes to a temporary file, is fsync'd, then linked to its name.
 * link() fails if the name exists (O_EXCL's guarantee), and a crash leaves either no key
 * or a whole one, never a short file that would keep the server from starting. */
static aos_err key_create(const char *dir, const char *path, audit_key **out, char *why,
                          size_t whylen)
{
    char tmp[AOS_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/%s.new", dir, ALOG_KEY_FILE);
    aos_err rc = audit_key_generate(out, why, whylen);
    if (rc != AOS_OK)
        return rc;
    uint8_t b[AUDIT_KEY_LEN];
    audit_key_to_bytes(*out, b);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int ok = fd >= 0 && write(fd, b, sizeof b) == (ssize_t)sizeof b && fsync(fd) == 0;
    sodium_memzero(b, sizeof b);
    if (fd >= 0)
        close(fd);
    if (ok && link(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        audit_key_free(*out);
        *out = NULL;
        if (e == EEXIST)
            return key_load(path, out, why, whylen);
        WHY("cannot create %s: %s", path, strerror(e));
        return AOS_ERR_IO;
    }
    unlink(tmp);
    if (!ok || fsync_dir(dir) != 0) {
        WHY("cannot write %s: %s", path, strerror(errno));
        audit_key_free(*out);
        *out = NULL;
        return AOS_ERR_IO;
    }
    aos_info("created the head key %s", path);
    return AOS_OK;
}

/* Append a head to the heads file, durably: a copy of every head outside the database,
 * for an operator who trusts its disk more than its SQL. The file is O_DSYNC (each write
 * returns once on disk), since the sandbox has no fsync for the writer thread. */
static void heads_file_append(alog *l, const audit_sth *h)
{
    if (l->heads_fd < 0)
        return;
    uint8_t b[AUDIT_STH_LEN];
    audit_sth_encode(h, b);
    if (write(l->heads_fd, b, sizeof b) != (ssize_t)sizeof b)
        aos_warn("cannot append head %llu to the heads file: %s",
                 (unsigned long long)h->tree_size, strerror(errno));
}

/* After a restart: the file may miss the last head (a crash between COMMIT and the
 * append). Only the latest is repaired; the database holds them all. */
static void heads_file_repair(alog *l, const audit_sth *h)
{
    if (l->heads_fd < 0)
        return;
    off_t end = lseek(l->heads_fd, 0, SEEK_END);
    uint8_t want[AUDIT_STH_LEN], got[AUDIT_STH_LEN];
    audit_sth_encode(h, want);
    /* lseek and read, not pread: the sandbox allows those (writes append whatever the
     * offset) */
    if (end >= (off_t)AUDIT_STH_LEN &&
        lseek(l->heads_fd, end - (off_t)AUDIT_STH_LEN, SEEK_SET) >= 0 &&
        read(l->heads_fd, got, sizeof got) == (ssize_t)sizeof got) {
        audit_sth last;
        if (audit_sth_decode(got, sizeof got, &last, NULL, 0) == AOS_OK &&
            last.tree_size >= h->tree_size)
            return;
    }
    heads_file_append(l, h);
}

/* ---- SQL -------------------------------------------------------------------------------- */

static const db_stmt st_last = {
    "audit_last", "SELECT seq, chain_hash FROM audit.records ORDER BY seq DESC LIMIT 1", 0};
static const db_stmt st_last_head = {
    "audit_last_head",
    "SELECT tree_size, time_ns, root, signature, frontier FROM audit.heads "
    "ORDER BY tree_size DESC LIMIT 1",
    0};
static const db_stmt st_leaves_after = {
    "audit_leaves_after",
    "SELECT seq, leaf_hash FROM audit.records WHERE seq > $1 ORDER BY seq", 1};
/* One index probe per key: as "key = ANY($1)" this was planned once, on the empty table
 * of a fresh log (before any ANALYZE), as a sequential scan, and stayed one. */
static const db_stmt st_keys = {
    "audit_keys",
    "SELECT r.key, r.seq FROM unnest($1::text[]) AS k(key) "
    "CROSS JOIN LATERAL (SELECT key, seq FROM audit.records WHERE key = k.key) r",
    1};
static const db_stmt st_head_ins = {
    "audit_head_ins",
    "INSERT INTO audit.heads (tree_size, time_ns, root, signature, frontier) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tree_size) DO NOTHING",
    5};
/* Contents go as three binary arrays in one statement; a hash stored already (by an
 * earlier batch, or twice in this one) is skipped: a content is immutable once written. */
static const db_stmt st_contents_ins = {
    "audit_contents_ins",
    "INSERT INTO audit.contents (hash, size, body) "
    "SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) ON CONFLICT (hash) DO NOTHING",
    3};
static const char copy_sql[] =
    "COPY audit.records (seq, time_ns, kind, agent, run, step, trace_id, span_id, "
    "parent_span_id, method, status, latency_us, body, prev_hash, leaf_hash, chain_hash, "
    "key) FROM STDIN (FORMAT binary)";
/* A small batch whole: its contents, its rows and the head when one is due, in one
 * statement, so in one transaction without BEGIN and COMMIT round trips. The columns come
 * as arrays in the COPY's order; a data-modifying WITH runs whether or not it is read. */
static const db_stmt st_append = {
    "audit_append",
    "WITH c AS (INSERT INTO audit.contents (hash, size, body) "
    "  SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) ON CONFLICT (hash) DO NOTHING), "
    "h AS (INSERT INTO audit.heads (tree_size, time_ns, root, signature, frontier) "
    "  SELECT $4::bigint, $5::bigint, $6::bytea, $7::bytea, $8::bytea WHERE $4::bigint IS NOT NULL "
    "  ON CONFLICT (tree_size) DO NOTHING) "
    "INSERT INTO audit.records (seq, time_ns, kind, agent, run, step, trace_id, span_id, "
    "parent_span_id, method, status, latency_us, body, prev_hash, leaf_hash, chain_hash, key) "
    "SELECT * FROM unnest($9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[], "
    "$14::bigint[], $15::bytea[], $16::bytea[], $17::bytea[], $18::text[], $19::integer[], "
    "$20::bigint[], $21::bytea[], $22::bytea[], $23::bytea[], $24::bytea[], $25::text[])",
    25};
/* The element types of the COPY's columns, for st_append's arrays. */
static const uint32_t col_oid[COPY_COLS] = {20, 20, 25, 25, 25, 20, 17, 17, 17,
                                            25, 23, 20, 17, 17, 17, 17, 25};

/* The state the chain and the tree are in, from the table: the last record and the tree
 * at the latest head, extended by the leaves stored after it. Refuses a log that does
 * not add up (a head beyond the last record, a gap, a frontier that is not its root's):
 * appending to it would hide the damage the verifier must name. */
static aos_err load(alog *l, PGconn *c, char *why, size_t whylen)
{
    PGresult *r = NULL;
    aos_err rc = db_cmd(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", why, whylen);
    if (rc != AOS_OK)
        return rc;
    uint64_t last = 0;
    uint8_t chain[AUDIT_HASH_LEN] = {0};
    if ((rc = db_exec(c, &st_last, NULL, &r, why, whylen)) != AOS_OK)
        goto out;
    if (PQntuples(r) == 1) {
        size_t n;
        const uint8_t *h = db_bytes(r, 0, 1, &n);
        last = (uint64_t)db_i64(r, 0, 0);
        if (n != AUDIT_HASH_LEN) {
            WHY("record %llu has a chain hash of %zu bytes", (unsigned long long)last, n);
            rc = AOS_ERR_CONFLICT;
            goto out;
        }
        memcpy(chain, h, AUDIT_HASH_LEN);
    }
    PQclear(r);
    r = NULL;
    if ((rc = db_exec(c, &st_last_head, NULL, &r, why, whylen)) != AOS_OK)
        goto out;
    int have = PQntuples(r) == 1;
    audit_sth h = {0};
    if (have) {
        size_t nr, ns, nf;
        const uint8_t *root = db_bytes(r, 0, 2, &nr), *sig = db_bytes(r, 0, 3, &ns);
        const uint8_t *fr = db_bytes(r, 0, 4, &nf);
        h.tree_size = (uint64_t)db_i64(r, 0, 0);
        h.time_ns = (uint64_t)db_i64(r, 0, 1);
        if (nr != AUDIT_HASH_LEN || ns != AUDIT_SIG_LEN || nf % AUDIT_HASH_LEN ||
            nf / AUDIT_HASH_LEN > AUDIT_TREE_DEPTH) {
            WHY("head %llu is malformed", (unsigned long long)h.tree_size);
            rc = AOS_ERR_CONFLICT;
            goto out;
        }
        memcpy(h.root, root, AUDIT_HASH_LEN);
        memcpy(h.sig, sig, AUDIT_SIG_LEN);
        if (h.tree_size > last) {
            WHY("the log ends at seq %llu but head %llu covers more: it was truncated "
                "(audit.verify names it); refusing to append",
                (unsigned long long)last, (unsigned long long)h.tree_size);
            rc = AOS_ERR_CONFLICT;
            goto out;
        }
        uint8_t fcopy[AUDIT_TREE_DEPTH][AUDIT_HASH_LEN];
        memcpy(fcopy, fr, nf);
        if ((rc = audit_tree_restore(l->tree, h.tree_size, (const uint8_t(*)[AUDIT_HASH_LEN])fcopy,
                                     nf / AUDIT_HASH_LEN, why, whylen)) != AOS_OK) {
            rc = AOS_ERR_CONFLICT;
            goto out;
        }
        uint8_t root_now[AUDIT_HASH_LEN];
        audit_tree_root(l->tree, root_now);
        if (memcmp(root_now, h.root, AUDIT_HASH_LEN)) {
            WHY("the frontier stored with head %llu does not give its root",
                (unsigned long long)h.tree_size);
            rc = AOS_ERR_CONFLICT;
            goto out;
        }
        if (audit_sth_verify(&h, l->pk, NULL, 0) != AOS_OK)
            aos_error("head %llu is not signed by %s/%s: the key was replaced; "
                      "audit.verify will name it",
                      (unsigned long long)h.tree_size, srv_dir(l->s), ALOG_KEY_FILE);
    } else {
        audit_tree_restore(l->tree, 0, NULL, 0, NULL, 0);
    }
    PQclear(r);
    r = NULL;
    db_params p;
    dp_init(&p);
    dp_i64(&p, (int64_t)h.tree_size);
    if ((rc = db_exec(c, &st_leaves_after, &p, &r, why, whylen)) != AOS_OK)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        size_t n;
        const uint8_t *leaf = db_bytes(r, i, 1, &n);
        uint64_t seq = (uint64_t)db_i64(r, i, 0);
        if (seq != audit_tree_size(l->tree) + 1 || n != AUDIT_HASH_LEN) {
            WHY("record %llu is out of place after head %llu (a gap or a bad leaf hash): "
                "refusing to append; audit.verify names it",
                (unsigned long long)seq, (unsigned long long)h.tree_size);
            rc = AOS_ERR_CONFLICT;
            goto out;
        }
        if ((rc = audit_tree_append(l->tree, leaf, why, whylen)) != AOS_OK)
            goto out;
    }
    if (audit_tree_size(l->tree) != last) {
        WHY("the tree has %llu leaves, the log %llu records",
            (unsigned long long)audit_tree_size(l->tree), (unsigned long long)last);
        rc = AOS_ERR_CONFLICT;
        goto out;
    }
    rc = db_cmd(c, "COMMIT", why, whylen);
    if (rc != AOS_OK)
        goto out;
    l->last_seq = last;
    memcpy(l->chain, chain, AUDIT_HASH_LEN);
    l->have_head = have;
    if (have) {
        l->sth = h;
        heads_file_repair(l, &h);
    }
    atomic_store(&l->records, last);
    l->loaded = 1;
out:
    PQclear(r);
    if (rc != AOS_OK) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    return rc;
}

/* ---- the COPY buffer -------------------------------------------------------------------- */

static int cgrow(alog *l, size_t more)
{
    if (l->clen + more <= l->ccap)
        return 0;
    size_t cap = l->ccap ? l->ccap : (1u << 20);
    while (cap < l->clen + more)
        cap *= 2;
    uint8_t *b = realloc(l->cbuf, cap);
    if (!b)
        return -1;
    l->cbuf = b;
    l->ccap = cap;
    return 0;
}

static void c16(alog *l, uint16_t v)
{
    l->cbuf[l->clen++] = (uint8_t)(v >> 8);
    l->cbuf[l->clen++] = (uint8_t)v;
}

static void c32(alog *l, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        l->cbuf[l->clen++] = (uint8_t)(v >> (8 * i));
}

static void c64(alog *l, uint64_t v)
{
    c32(l, 8);
    for (int i = 7; i >= 0; i--)
        l->cbuf[l->clen++] = (uint8_t)(v >> (8 * i));
}

static void cfield(alog *l, const void *b, size_t n)
{
    c32(l, (uint32_t)n);
    if (n)
        memcpy(l->cbuf + l->clen, b, n);
    l->clen += n;
}

static void ci32(alog *l, int32_t v)
{
    c32(l, 4);
    c32(l, (uint32_t)v);
}

/* ---- keys ------------------------------------------------------------------------------- */

static uint64_t khash(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return h;
}

/* The slot of key k: its entry, or the empty one where it goes. */
static kslot *kfind(alog *l, const uint8_t *k, size_t n)
{
    size_t m = l->kcap - 1;
    for (size_t i = (size_t)khash(k, n) & m;; i = (i + 1) & m) {
        kslot *s = &l->ks[i];
        if (!s->k || (s->n == n && !memcmp(s->k, k, n)))
            return s;
    }
}

static int kreset(alog *l, size_t nkeys)
{
    size_t cap = 64;
    while (cap < 2 * nkeys + 2)
        cap *= 2;
    if (cap > l->kcap) {
        kslot *k = realloc(l->ks, cap * sizeof *k);
        if (!k)
            return -1;
        l->ks = k;
        l->kcap = cap;
    }
    memset(l->ks, 0, l->kcap * sizeof *l->ks);
    return 0;
}

/* Keys travel as a binary text[] (element OID 25): no quoting to get wrong. NULL: out of
 * memory; else the array in a (the builder's buffer). */
static const uint8_t *keys_array(db_array *a, item *batch, size_t *len)
{
    dba_start(a, 25);
    for (item *it = batch; it; it = it->next)
        if (it->kind == IT_EMIT)
            for (size_t i = 0; i < it->req->n_events; i++) {
                ProtobufCBinaryData k = it->req->events[i]->key;
                if (k.len && dba_add(a, k.data, k.len))
                    return NULL;
            }
    return dba_done(a, len);
}

/* ---- one batch --------------------------------------------------------------------------- */

typedef struct plan {
    uint64_t last_seq;             /* after the batch */
    uint8_t chain[AUDIT_HASH_LEN];
    int sign;                      /* a head is in the batch */
    audit_sth sth;
    size_t nevents;
} plan;

static aos_err copy_in(alog *l, PGconn *c, char *why, size_t whylen)
{
    PGresult *r = PQexec(c, copy_sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        aos_err rc = db_error(c, r, why, whylen);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    int ok = 1;
    for (size_t off = 0; ok && off < l->clen; off += COPY_CHUNK) {
        size_t n = l->clen - off < COPY_CHUNK ? l->clen - off : COPY_CHUNK;
        ok = PQputCopyData(c, (const char *)l->cbuf + off, (int)n) == 1;
    }
    if (PQputCopyEnd(c, ok ? NULL : "aos-audit could not send the rows") != 1)
        ok = 0;
    aos_err rc = AOS_OK;
    while ((r = PQgetResult(c))) {
        if (rc == AOS_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = db_error(c, r, why, whylen);
        PQclear(r);
    }
    if (rc == AOS_OK && !ok)
        rc = db_error(c, NULL, why, whylen);
    return rc;
}

static uint64_t h64(const uint8_t *h)
{
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return v;
}

/* The batch's contents, each hash once (a system prompt sent with every call of a batch
 * goes to PostgreSQL once), of the calls that appended events. 0, or -1 out of memory. */
static int contents_gather(alog *l, item *batch)
{
    size_t n = 0;
    for (item *it = batch; it; it = it->next)
        if (it->kind == IT_EMIT && it->appended)
            n += it->req->n_contents;
    l->ccount = 0;
    if (!n)
        return 0;
    if (n > l->ccap_n) {
        void *p = realloc(l->cs, n * sizeof *l->cs);
        if (!p)
            return -1;
        l->cs = p;
        l->ccap_n = n;
    }
    size_t cap = 64;
    while (cap < 2 * n + 2)
        cap *= 2;
    if (cap > l->csetcap) {
        void *p = realloc(l->cset, cap * sizeof *l->cset);
        if (!p)
            return -1;
        l->cset = p;
        l->csetcap = cap;
    }
    /* slots hold index + 1; 0 is empty */
    memset(l->cset, 0, l->csetcap * sizeof *l->cset);
    size_t m = l->csetcap - 1;
    for (item *it = batch; it; it = it->next) {
        if (it->kind != IT_EMIT || !it->appended)
            continue;
        for (size_t i = 0; i < it->req->n_contents; i++) {
            const Aos__Audit__Content *c = it->req->contents[i];
            size_t j = (size_t)h64(c->hash.data) & m;
            int dup = 0;
            while (l->cset[j]) {
                const Aos__Audit__Content *o = l->cs[l->cset[j] - 1];
                if (!memcmp(o->hash.data, c->hash.data, AUDIT_CONTENT_HASH_LEN)) {
                    dup = 1;
                    break;
                }
                j = (j + 1) & m;
            }
            if (dup)
                continue;
            l->cs[l->ccount++] = c;
            l->cset[j] = l->ccount;
        }
    }
    return 0;
}

/* The batch's distinct contents as three arrays (hash, size, body) into a[0..2]: 0, or -1
 * out of memory. */
static int contents_arrays(alog *l, db_array *a)
{
    dba_start(&a[0], 17);
    dba_start(&a[1], 20);
    dba_start(&a[2], 17);
    for (size_t i = 0; i < l->ccount; i++) {
        const Aos__Audit__Content *ct = l->cs[i];
        if (dba_add(&a[0], ct->hash.data, AUDIT_CONTENT_HASH_LEN) ||
            dba_i64(&a[1], (int64_t)ct->body.len) || dba_add(&a[2], ct->body.data, ct->body.len))
            return -1;
    }
    return 0;
}

/* Three finished arrays as the next three parameters of p; -1 if one is unusable. */
static int dp_arrays(db_params *p, db_array *a, int n)
{
    for (int i = 0; i < n; i++) {
        size_t len;
        const uint8_t *b = dba_done(&a[i], &len);
        if (!b)
            return -1;
        dp_bytes(p, b, len);
    }
    return 0;
}

/* The batch's contents into audit.contents, inside the batch's transaction: they commit
 * with the events that name them, or not at all. */
static aos_err contents_insert(alog *l, PGconn *c, char *why, size_t whylen)
{
    db_array *a = &l->arr[COPY_COLS];
    db_params p;
    dp_init(&p);
    if (contents_arrays(l, a) || dp_arrays(&p, a, 3)) {
        WHY("out of memory for %zu contents", l->ccount);
        return AOS_ERR_NOMEM;
    }
    PGresult *r = NULL;
    aos_err rc = db_exec(c, &st_contents_ins, &p, &r, why, whylen);
    PQclear(r);
    if (rc == AOS_OK)
        atomic_fetch_add(&l->contents_sent, l->ccount);
    return rc;
}


/* An event as the record it becomes at seq (its strings point into e; hashes zero). */
static void rec_of(const Aos__Audit__Event *e, uint64_t seq, audit_rec *r)
{
    *r = (audit_rec){
        .seq = seq,
        .time_ns = e->time_ns,
        .kind = (const char *)e->kind.data,
        .kind_len = e->kind.len,
        .agent = (const char *)e->agent.data,
        .agent_len = e->agent.len,
        .run = (const char *)e->run.data,
        .run_len = e->run.len,
        .step = e->step,
        .method = (const char *)e->method.data,
        .method_len = e->method.len,
        .status = e->status,
        .latency_us = e->latency_us,
        .body = e->body.data,
        .body_len = e->body.len,
    };
    if (e->trace_id.len == AUDIT_TRACE_LEN)
        memcpy(r->trace_id, e->trace_id.data, AUDIT_TRACE_LEN);
    if (e->span_id.len == AUDIT_SPAN_LEN)
        memcpy(r->span_id, e->span_id.data, AUDIT_SPAN_LEN);
    if (e->parent_span_id.len == AUDIT_SPAN_LEN)
        memcpy(r->parent_span_id, e->parent_span_id.data, AUDIT_SPAN_LEN);
}

/* The rows in cbuf (COPY's binary form, which run_batch writes) as one array per column in
 * l->arr[0..COPY_COLS), the next COPY_COLS parameters of p. 0, or -1 out of memory. */
static int rows_arrays(alog *l, db_params *p)
{
    for (int j = 0; j < COPY_COLS; j++)
        dba_start(&l->arr[j], col_oid[j]);
    size_t off = 19; /* past the COPY header */
    for (;;) {
        uint16_t ncols = (uint16_t)(l->cbuf[off] << 8 | l->cbuf[off + 1]);
        off += 2;
        if (ncols == 0xffff)
            break;
        for (int j = 0; j < COPY_COLS; j++) {
            uint32_t n = (uint32_t)l->cbuf[off] << 24 | (uint32_t)l->cbuf[off + 1] << 16 |
                         (uint32_t)l->cbuf[off + 2] << 8 | l->cbuf[off + 3];
            off += 4;
            if (n == UINT32_MAX) {
                if (dba_null(&l->arr[j]))
                    return -1;
                continue;
            }
            if (dba_add(&l->arr[j], l->cbuf + off, n))
                return -1;
            off += n;
        }
    }
    return dp_arrays(p, l->arr, COPY_COLS);
}

/* A small batch as st_append: one round trip, one commit. */
static aos_err append_one(alog *l, PGconn *c, const plan *pl, const uint8_t *fr, size_t nf,
                          char *why, size_t whylen)
{
    db_params p;
    dp_init(&p);
    db_array *ca = &l->arr[COPY_COLS];
    if (contents_arrays(l, ca) || dp_arrays(&p, ca, 3)) {
        WHY("out of memory for %zu contents", l->ccount);
        return AOS_ERR_NOMEM;
    }
    if (pl->sign) {
        dp_i64(&p, (int64_t)pl->sth.tree_size);
        dp_i64(&p, (int64_t)pl->sth.time_ns);
        dp_bytes(&p, pl->sth.root, AUDIT_HASH_LEN);
        dp_bytes(&p, pl->sth.sig, AUDIT_SIG_LEN);
        dp_bytes(&p, fr, nf * AUDIT_HASH_LEN);
    } else {
        for (int i = 0; i < 5; i++)
            dp_null(&p);
    }
    if (rows_arrays(l, &p)) {
        WHY("out of memory for a batch of %zu records", l->nleaves);
        return AOS_ERR_NOMEM;
    }
    PGresult *r = NULL;
    aos_err rc = db_exec(c, &st_append, &p, &r, why, whylen);
    PQclear(r);
    if (rc == AOS_OK && l->ccount)
        atomic_fetch_add(&l->contents_sent, l->ccount);
    return rc;
}

/* Everything of the batch in one transaction: dedupe within the batch (and, with lookup,
 * against the table), then seqs, hashes and the rows, a head when one is due, committed
 * as one statement (a small batch) or as BEGIN, COPY, COMMIT. Without lookup a key that
 * is in the table already fails the batch with CONFLICT (the unique index on key): the
 * writer then runs it again with lookup, so the common case, a key never seen, pays no
 * query for it. Fills pl and each item's outcome; memory state is left alone (the caller
 * applies pl on success). */
static aos_err run_batch(alog *l, PGconn *c, item *batch, int sign, int lookup, plan *pl,
                         char *why, size_t whylen)
{
    memset(pl, 0, sizeof *pl);
    size_t nkeys = 0, nev = 0;
    for (item *it = batch; it; it = it->next)
        if (it->kind == IT_EMIT) {
            sign |= it->sign_now; /* audit.archive: the head covers its record at once */
            nev += it->req->n_events;
            for (size_t i = 0; i < it->req->n_events; i++)
                nkeys += it->req->events[i]->key.len > 0;
        } else if (it->sign_now) {
            sign = 1;
        }
    if (kreset(l, nkeys) || cgrow(l, 0)) {
        WHY("out of memory for a batch of %zu events", nev);
        return AOS_ERR_NOMEM;
    }
    if (l->cleaves < nev) {
        void *p = realloc(l->leaves, nev * sizeof *l->leaves);
        if (!p) {
            WHY("out of memory for a batch of %zu events", nev);
            return AOS_ERR_NOMEM;
        }
        l->leaves = p;
        l->cleaves = nev;
    }
    if (l->cfresh < nev) {
        void *p = realloc(l->fresh, nev);
        if (!p) {
            WHY("out of memory for a batch of %zu events", nev);
            return AOS_ERR_NOMEM;
        }
        l->fresh = p;
        l->cfresh = nev;
    }
    size_t evi = 0;
    l->nleaves = 0;
    aos_err rc = AOS_OK;
    PGresult *r = NULL;
    if (nkeys && lookup) {
        /* the writer alone appends, so the keys found now stay true until its commit */
        size_t alen;
        const uint8_t *arr = keys_array(&l->arr[0], batch, &alen);
        if (!arr) {
            WHY("out of memory for %zu keys", nkeys);
            return AOS_ERR_NOMEM;
        }
        db_params p;
        dp_init(&p);
        dp_bytes(&p, arr, alen);
        rc = db_exec(c, &st_keys, &p, &r, why, whylen);
        if (rc != AOS_OK)
            return rc;
        /* the found keys point into r, which lives until the batch is done */
        for (int i = 0; i < PQntuples(r); i++) {
            size_t n;
            const uint8_t *k = db_bytes(r, i, 0, &n);
            kslot *s = kfind(l, k, n);
            s->k = k;
            s->n = n;
            s->seq = (uint64_t)db_i64(r, i, 1);
        }
    }
    /* the rows */
    static const uint8_t copy_hdr[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n',
                                         0};
    l->clen = 0;
    if (cgrow(l, sizeof copy_hdr + 2)) {
        rc = AOS_ERR_NOMEM;
        goto fail;
    }
    memcpy(l->cbuf, copy_hdr, sizeof copy_hdr);
    l->clen = sizeof copy_hdr;
    uint64_t seq = l->last_seq;
    uint8_t chain[AUDIT_HASH_LEN];
    memcpy(chain, l->chain, AUDIT_HASH_LEN);
    for (item *it = batch; it; it = it->next) {
        if (it->kind != IT_EMIT)
            continue;
        it->first_seq = 0;
        it->appended = 0;
        for (size_t i = 0; i < it->req->n_events; i++) {
            const Aos__Audit__Event *e = it->req->events[i];
            kslot *ks = NULL;
            if (e->key.len) {
                ks = kfind(l, e->key.data, e->key.len);
                if (ks->k) { /* appended already, by an earlier call or this batch */
                    l->fresh[evi++] = 0;
                    atomic_fetch_add(&l->dups, 1);
                    if (i == 0)
                        it->first_seq = ks->seq;
                    continue;
                }
            }
            l->fresh[evi++] = 1;
            audit_rec rec;
            rec_of(e, ++seq, &rec);
            memcpy(rec.prev_hash, chain, AUDIT_HASH_LEN);
            size_t len;
            if ((rc = audit_rec_encode(&rec, l->enc, AUDIT_REC_MAX, &len, why, whylen)) !=
                AOS_OK)
                goto fail;
            uint8_t *leaf = l->leaves[l->nleaves++];
            audit_leaf_hash(l->enc, len, leaf);
            uint8_t next[AUDIT_HASH_LEN];
            audit_chain_hash(chain, l->enc, len, next);
            size_t need = 2 + COPY_COLS * 4 + 8 * 5 + 4 + rec.kind_len + rec.agent_len +
                          rec.run_len + AUDIT_TRACE_LEN + 2 * AUDIT_SPAN_LEN +
                          rec.method_len + rec.body_len + 3 * AUDIT_HASH_LEN + e->key.len;
            if (cgrow(l, need)) {
                WHY("out of memory for a batch of %zu events", nev);
                rc = AOS_ERR_NOMEM;
                goto fail;
            }
            c16(l, COPY_COLS);
            c64(l, rec.seq);
            c64(l, rec.time_ns);
            cfield(l, rec.kind, rec.kind_len);
            cfield(l, rec.agent, rec.agent_len);
            cfield(l, rec.run, rec.run_len);
            c64(l, rec.step);
            cfield(l, rec.trace_id, AUDIT_TRACE_LEN);
            cfield(l, rec.span_id, AUDIT_SPAN_LEN);
            cfield(l, rec.parent_span_id, AUDIT_SPAN_LEN);
            cfield(l, rec.method, rec.method_len);
            ci32(l, rec.status);
            c64(l, rec.latency_us);
            cfield(l, rec.body, rec.body_len);
            cfield(l, chain, AUDIT_HASH_LEN);
            cfield(l, leaf, AUDIT_HASH_LEN);
            cfield(l, next, AUDIT_HASH_LEN);
            if (e->key.len)
                cfield(l, e->key.data, e->key.len);
            else
                c32(l, 0xffffffffu); /* NULL */
            memcpy(chain, next, AUDIT_HASH_LEN);
            if (ks) {
                ks->k = e->key.data;
                ks->n = e->key.len;
                ks->seq = rec.seq;
            }
            if (!it->appended)
                it->first_seq = rec.seq;
            it->appended++;
        }
    }
    c16(l, 0xffff);
    /* set before the rows go: a failure after this is checked against them on reload */
    pl->nevents = l->nleaves;
    pl->last_seq = seq;
    memcpy(pl->chain, chain, AUDIT_HASH_LEN);
    /* the contents of the calls that appended something (a re-sent emit's are stored
     * already), in the same transaction as the records that list them */
    if (contents_gather(l, batch)) {
        WHY("out of memory for the contents of a batch of %zu events", nev);
        rc = AOS_ERR_NOMEM;
        goto fail;
    }

    /* the tree after the batch, on the scratch builder; a head if one is due */
    uint8_t fr[AUDIT_TREE_DEPTH][AUDIT_HASH_LEN];
    size_t nf = audit_tree_frontier(l->tree, fr, AUDIT_TREE_DEPTH);
    if ((rc = audit_tree_restore(l->scratch, audit_tree_size(l->tree),
                                 (const uint8_t(*)[AUDIT_HASH_LEN])fr, nf, why, whylen)) !=
        AOS_OK)
        goto fail;
    for (size_t i = 0; i < l->nleaves; i++)
        if ((rc = audit_tree_append(l->scratch, l->leaves[i], why, whylen)) != AOS_OK)
            goto fail;
    uint64_t size = audit_tree_size(l->scratch), signed_size = l->have_head ? l->sth.tree_size : 0;
    if (size >= signed_size + ALOG_HEAD_EVERY)
        sign = 1;
    if (sign && (size > signed_size || !l->have_head)) {
        pl->sign = 1;
        pl->sth.tree_size = size;
        pl->sth.time_ns = now_ns();
        audit_tree_root(l->scratch, pl->sth.root);
        if ((rc = audit_sth_sign(&pl->sth, l->key, why, whylen)) != AOS_OK)
            goto fail;
        nf = audit_tree_frontier(l->scratch, fr, AUDIT_TREE_DEPTH);
    }
    if (!l->nleaves && !pl->sign) /* duplicates only: nothing to write */
        goto done;

    size_t cbytes = 0;
    for (size_t i = 0; i < l->ccount; i++)
        cbytes += l->cs[i]->body.len;
    if (l->nleaves <= ONE_STMT_ROWS && l->clen + cbytes <= ONE_STMT_BYTES) {
        if ((rc = append_one(l, c, pl, &fr[0][0], nf, why, whylen)) != AOS_OK)
            goto fail;
        goto done;
    }
    if ((rc = db_cmd(c, "BEGIN", why, whylen)) != AOS_OK)
        goto fail;
    if (l->ccount && (rc = contents_insert(l, c, why, whylen)) != AOS_OK)
        goto fail;
    if (l->nleaves && (rc = copy_in(l, c, why, whylen)) != AOS_OK)
        goto fail;
    if (pl->sign) {
        db_params p;
        dp_init(&p);
        dp_i64(&p, (int64_t)pl->sth.tree_size);
        dp_i64(&p, (int64_t)pl->sth.time_ns);
        dp_bytes(&p, pl->sth.root, AUDIT_HASH_LEN);
        dp_bytes(&p, pl->sth.sig, AUDIT_SIG_LEN);
        dp_bytes(&p, fr, nf * AUDIT_HASH_LEN);
        PGresult *hr;
        if ((rc = db_exec(c, &st_head_ins, &p, &hr, why, whylen)) != AOS_OK)
            goto fail;
        PQclear(hr);
    }
    if ((rc = db_cmd(c, "COMMIT", why, whylen)) != AOS_OK)
        goto fail;
done:
    PQclear(r);
    return AOS_OK;
fail:
    PQclear(r);
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        char ignore[64];
        db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
    }
    return rc;
}

/* The batch's records, committed, to the commit hook (the OTLP export): rebuilt from the
 * events as run_batch encoded them, in seq order from first. */
static void tell_commit(alog *l, Aos__Audit__EmitRequest *const *reqs, size_t nreq,
                        uint64_t first, alog_commit_fn fn, void *arg)
{
    size_t evi = 0;
    uint64_t seq = first;
    for (size_t k = 0; k < nreq; k++) {
        for (size_t i = 0; i < reqs[k]->n_events; i++) {
            const Aos__Audit__Event *e = reqs[k]->events[i];
            if (!l->fresh[evi++])
                continue;
            audit_rec r;
            rec_of(e, seq++, &r);
            fn(arg, &r);
        }
    }
}

/* The batch committed: memory follows, then the callers hear it. */
static void apply(alog *l, const plan *pl)
{
    if (pl->nevents) {
        audit_tree *t = l->tree;
        l->tree = l->scratch;
        l->scratch = t;
        l->last_seq = pl->last_seq;
        memcpy(l->chain, pl->chain, AUDIT_HASH_LEN);
    }
    if (pl->sign) {
        l->sth = pl->sth;
        l->have_head = 1;
        l->head_mono_ms = aos_mono_ms();
        heads_file_append(l, &pl->sth);
        atomic_fetch_add(&l->heads, 1);
    }
    atomic_store(&l->records, l->last_seq);
    atomic_fetch_add(&l->commits, 1);
    atomic_fetch_add(&l->committed_events, pl->nevents);
}

static void reply_head(alog *l, item *it)
{
    if (!l->have_head) {
        srv_call_done(it->call, AOS_ERR_NOT_FOUND,
                      "audit.head: no head signed yet (audit.head with sign_now signs one)",
                      NULL, 0);
        return;
    }
    Aos__Audit__Head h = AOS__AUDIT__HEAD__INIT;
    h.tree_size = l->sth.tree_size;
    h.time_ns = l->sth.time_ns;
    h.root = (ProtobufCBinaryData){AUDIT_HASH_LEN, l->sth.root};
    h.signature = (ProtobufCBinaryData){AUDIT_SIG_LEN, l->sth.sig};
    h.public_key = (ProtobufCBinaryData){AUDIT_PK_LEN, l->pk};
    uint8_t b[256];
    size_t n = aos__audit__head__pack(&h, b);
    srv_call_done(it->call, AOS_OK, NULL, b, n);
}

static void finish(alog *l, item *it, aos_err rc, const char *why)
{
    if (it->w) {
        waiter *w = it->w;
        if (rc != AOS_OK)
            atomic_fetch_add(&l->failed, 1);
        if (it->req)
            aos__audit__emit_request__free_unpacked(it->req, NULL);
        uint64_t seq = it->first_seq;
        uint32_t n = it->appended;
        free(it);
        pthread_mutex_lock(&w->mu);
        w->rc = rc;
        w->first_seq = seq;
        w->appended = n;
        snprintf(w->why, sizeof w->why, "%s", why ? why : "");
        w->done = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (rc == AOS_OK && it->kind == IT_HEAD) {
        reply_head(l, it);
    } else if (rc == AOS_OK) {
        Aos__Audit__EmitReply r = AOS__AUDIT__EMIT_REPLY__INIT;
        r.first_seq = it->first_seq;
        r.appended = it->appended;
        uint8_t b[32];
        size_t n = aos__audit__emit_reply__pack(&r, b);
        srv_call_done(it->call, AOS_OK, NULL, b, n);
    } else {
        atomic_fetch_add(&l->failed, 1);
        srv_call_done(it->call, rc, why, NULL, 0);
    }
    if (it->req)
        aos__audit__emit_request__free_unpacked(it->req, NULL);
    free(it);
}

/* Calls whose deadline is (nearly) here while the database is away: UNAVAILABLE. unsure:
 * their batch's COMMIT went out and its answer was lost, so they may be in the log (a
 * re-send with the same keys is answered from it). */
static item *expire_as(alog *l, item *batch, const char *why, int unsure)
{
    uint64_t now = aos_now_ms();
    item *keep = NULL, **kt = &keep;
    while (batch) {
        item *it = batch;
        batch = it->next;
        it->next = NULL;
        if (now + DB_MARGIN_MAX_MS < it->deadline_ms) {
            *kt = it;
            kt = &it->next;
            continue;
        }
        char msg[AOS_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "audit: the log's database is unavailable (%.200s); %s", why,
                 unsure ? "whether this call's events were appended is not known: re-send "
                          "them with their keys"
                        : "nothing of this call was appended");
        finish(l, it, AOS_ERR_UNAVAILABLE, msg);
    }
    return keep;
}

static item *concat(item *x, item *y)
{
    if (!x)
        return y;
    item *t = x;
    while (t->next)
        t = t->next;
    t->next = y;
    return x;
}

/* Take queued calls into the batch, whole, up to the batch's caps. */
static item *take(alog *l, item *batch)
{
    size_t ev = 0, bytes = 0;
    for (item *it = batch; it; it = it->next) {
        ev += it->req ? it->req->n_events : 0;
        bytes += it->bytes;
    }
    item **tail = &batch;
    while (*tail)
        tail = &(*tail)->next;
    while (l->head && (ev < BATCH_EVENTS && bytes < BATCH_BYTES)) {
        item *it = l->head;
        l->head = it->next;
        if (!l->head)
            l->tail = NULL;
        it->next = NULL;
        ev += it->req ? it->req->n_events : 0;
        bytes += it->bytes;
        *tail = it;
        tail = &it->next;
        atomic_fetch_sub(&l->queued, 1);
    }
    return batch;
}

static void *writer_main(void *arg)
{
    alog *l = arg;
    item *batch = NULL;
    plan failed_plan = {0};
    int pending_check = 0; /* a COMMIT whose outcome is unknown: look before running again */
    char why[AOS_ERRMSG_MAX] = "";
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->head && !batch && !l->stop) {
            /* wake for the head timer only when the tree grew since the last head */
            uint64_t hs = l->have_head ? l->sth.tree_size : 0;
            if (l->loaded && l->last_seq > hs) {
                uint64_t due = l->head_mono_ms + ALOG_HEAD_MS, now = aos_mono_ms();
                if (now >= due)
                    break;
                struct timespec ts = mt_in_us((due - now) * 1000u);
                pthread_cond_timedwait(&l->cv, &l->mu, &ts);
            } else {
                pthread_cond_wait(&l->cv, &l->mu);
            }
        }
        if (l->stop) {
            batch = concat(batch, l->head);
            l->head = l->tail = NULL;
            pthread_mutex_unlock(&l->mu);
            while (batch) {
                item *it = batch;
                batch = it->next;
                finish(l, it, AOS_ERR_UNAVAILABLE, "audit: aos-audit is stopping");
            }
            return NULL;
        }
        /* a batch whose COMMIT may have happened is settled before anything joins it */
        if (!pending_check)
            batch = take(l, batch);
        pthread_mutex_unlock(&l->mu);

        PGconn *c = srv_pg_wait(l->pg, 100, why, sizeof why);
        if (!c) {
            atomic_fetch_add(&l->db_waits, 1);
            batch = expire_as(l, batch, why, pending_check);
            continue;
        }
        /* Every statement of the writer is an index lookup or range: never let a plan made
         * while the table looked empty (no ANALYZE yet) scan it whole. Once per
         * connection; a reconnect sets it again. */
        if (c != l->tuned) {
            if (db_cmd(c, "SET enable_seqscan = off; SET enable_bitmapscan = off; "
                          "SET enable_sort = off; SET max_parallel_workers_per_gather = 0",
                       why, sizeof why) != AOS_OK) {
                db_retry_take();
                srv_pg_check(l->pg);
                atomic_fetch_add(&l->db_waits, 1);
                batch = expire_as(l, batch, why, pending_check);
                continue;
            }
            l->tuned = c;
        }
        if (!l->loaded) {
            aos_err rc = load(l, c, why, sizeof why);
            if (rc != AOS_OK) {
                db_retry v = db_retry_take();
                srv_pg_check(l->pg);
                if (v == DB_FINAL) {
                    /* a damaged log: refuse appends (the verifier names the damage) */
                    aos_error("audit: cannot resume the log: %s", why);
                    while (batch) {
                        item *it = batch;
                        batch = it->next;
                        finish(l, it, rc == AOS_ERR_CONFLICT ? AOS_ERR_FAILED : rc, why);
                    }
                    struct timespec ts = {0, 200 * 1000000L};
                    nanosleep(&ts, NULL);
                } else {
                    atomic_fetch_add(&l->db_waits, 1);
                    batch = expire_as(l, batch, why, pending_check);
                }
                continue;
            }
            db_retry_take();
            if (pending_check) {
                pending_check = 0;
                /* the lost COMMIT did happen: the log ends where the batch would have */
                if (failed_plan.nevents && l->last_seq == failed_plan.last_seq &&
                    !memcmp(l->chain, failed_plan.chain, AUDIT_HASH_LEN)) {
                    aos_info("audit: a commit whose answer was lost did happen (seq %llu)",
                             (unsigned long long)l->last_seq);
                    atomic_fetch_add(&l->commits, 1);
                    atomic_fetch_add(&l->committed_events, failed_plan.nevents);
                    while (batch) {
                        item *it = batch;
                        batch = it->next;
                        finish(l, it, AOS_OK, NULL);
                    }
                    continue;
                }
            }
        }
        if (!batch) {
            uint64_t hs = l->have_head ? l->sth.tree_size : 0;
            if (l->last_seq <= hs)
                continue;
        }
        int timer = aos_mono_ms() >= l->head_mono_ms + ALOG_HEAD_MS;
        plan pl;
        aos_err rc = run_batch(l, c, batch, timer, 0, &pl, why, sizeof why);
        if (rc == AOS_ERR_CONFLICT) { /* a key in the table already: a re-sent emit */
            db_retry_take();
            atomic_fetch_add(&l->key_lookups, 1);
            rc = run_batch(l, c, batch, timer, 1, &pl, why, sizeof why);
        }
        if (rc != AOS_OK) {
            db_retry v = db_retry_take();
            srv_pg_check(l->pg);
            l->loaded = 0; /* memory is reloaded from the table before the next try */
            if (v != DB_FINAL || rc == AOS_ERR_NOMEM) {
                atomic_fetch_add(&l->db_waits, 1);
                failed_plan = pl;
                pending_check = 1;
                batch = expire_as(l, batch, why, pending_check);
                continue;
            }
            aos_error("audit: a batch failed: %s", why);
            while (batch) {
                item *it = batch;
                batch = it->next;
                finish(l, it, AOS_ERR_INTERNAL, why);
            }
            continue;
        }
        db_retry_take();
        uint64_t first = l->last_seq + 1;
        apply(l, &pl);
        pthread_mutex_lock(&l->mu);
        alog_commit_fn fn = l->on_commit;
        void *fn_arg = l->on_commit_arg;
        pthread_mutex_unlock(&l->mu);
        /* the callers hear first; the hook (the span export) maps the events after, from
         * the requests kept back from finish */
        Aos__Audit__EmitRequest **reqs = NULL;
        size_t nreq = 0;
        if (fn && pl.nevents) {
            size_t n = 0;
            for (item *it = batch; it; it = it->next)
                n += it->kind == IT_EMIT;
            if ((reqs = malloc(n * sizeof *reqs)))
                for (item *it = batch; it; it = it->next)
                    if (it->kind == IT_EMIT) {
                        reqs[nreq++] = it->req;
                        it->req = NULL;
                    }
        }
        while (batch) {
            item *it = batch;
            batch = it->next;
            finish(l, it, AOS_OK, NULL);
        }
        if (reqs) {
            tell_commit(l, reqs, nreq, first, fn, fn_arg);
            for (size_t i = 0; i < nreq; i++)
                aos__audit__emit_request__free_unpacked(reqs[i], NULL);
            free(reqs);
        }
    }
}

/* ---- the API ------------------------------------------------------------------------------ */

static void push(alog *l, item *it)
{
    if (it->call) {
        const aos_env *env = srv_call_env(it->call);
        it->deadline_ms = env->deadline_ms ? env->deadline_ms
                                           : aos_now_ms() + DB_WAIT_NO_DEADLINE_MS;
        it->bytes = env->payload_len;
    }
    pthread_mutex_lock(&l->mu);
    if (l->stop) { /* the writer is gone: nobody would answer */
        pthread_mutex_unlock(&l->mu);
        finish(l, it, AOS_ERR_UNAVAILABLE, "audit: aos-audit is stopping");
        return;
    }
    atomic_fetch_add(&l->queued, 1);
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void alog_emit(alog *l, srv_call *call, Aos__Audit__EmitRequest *req)
{
    item *it = calloc(1, sizeof *it);
    if (!it) {
        aos__audit__emit_request__free_unpacked(req, NULL);
        srv_call_done(call, AOS_ERR_NOMEM, "audit.emit: out of memory", NULL, 0);
        return;
    }
    it->kind = IT_EMIT;
    it->call = call;
    it->req = req;
    push(l, it);
}

void alog_head(alog *l, srv_call *call, int sign_now)
{
    item *it = calloc(1, sizeof *it);
    if (!it) {
        srv_call_done(call, AOS_ERR_NOMEM, "audit.head: out of memory", NULL, 0);
        return;
    }
    it->kind = IT_HEAD;
    it->call = call;
    it->sign_now = sign_now;
    push(l, it);
}

aos_err alog_append_sealed(alog *l, Aos__Audit__EmitRequest *req, uint64_t deadline_ms,
                           uint64_t *first_seq, uint32_t *appended, char *why, size_t whylen)
{
    item *it = calloc(1, sizeof *it);
    if (!it) {
        aos__audit__emit_request__free_unpacked(req, NULL);
        WHY("out of memory");
        return AOS_ERR_NOMEM;
    }
    waiter w = {.done = 0};
    pthread_mutex_init(&w.mu, NULL);
    mt_cond_init(&w.cv);
    it->kind = IT_EMIT;
    it->w = &w;
    it->req = req;
    it->sign_now = 1;
    it->deadline_ms = deadline_ms ? deadline_ms : aos_now_ms() + DB_WAIT_NO_DEADLINE_MS;
    it->bytes = aos__audit__emit_request__get_packed_size(req);
    push(l, it);
    /* the writer answers every item, at its deadline at the latest, and when it stops */
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (w.rc == AOS_OK) {
        *first_seq = w.first_seq;
        *appended = w.appended;
    } else {
        WHY("%s", w.why);
    }
    return w.rc;
}

void alog_on_commit(alog *l, alog_commit_fn fn, void *arg)
{
    pthread_mutex_lock(&l->mu);
    l->on_commit = fn;
    l->on_commit_arg = arg;
    pthread_mutex_unlock(&l->mu);
}

void alog_public_key(const alog *l, uint8_t pk[AUDIT_PK_LEN])
{
    memcpy(pk, l->pk, AUDIT_PK_LEN);
}

void alog_stats(alog *l, srv_stats *st)
{
    uint64_t commits = atomic_load(&l->commits), ev = atomic_load(&l->committed_events);
    srv_stat(st, "records", (int64_t)atomic_load(&l->records), "the log's last seq");
    srv_stat(st, "heads", (int64_t)atomic_load(&l->heads), "heads signed by this process");
    srv_stat(st, "commits", (int64_t)commits, "group commits");
    srv_stat(st, "events_per_commit", commits ? (int64_t)(ev / commits) : 0, NULL);
    srv_stat(st, "duplicates", (int64_t)atomic_load(&l->dups),
             "events not appended: their key was in the log");
    srv_stat(st, "queue_depth", (int64_t)atomic_load(&l->queued), "calls waiting");
    srv_stat(st, "db_waits", (int64_t)atomic_load(&l->db_waits),
             "batches that found the database away or failed and were run again");
    srv_stat(st, "failed_calls", (int64_t)atomic_load(&l->failed), NULL);
    srv_stat(st, "contents_written", (int64_t)atomic_load(&l->contents_sent),
             "contents sent with their batch (one already stored is kept as it was)");
    srv_stat(st, "key_lookups", (int64_t)atomic_load(&l->key_lookups),
             "batches run again with their keys looked up: one held a key in the log");
    srv_stat(st, "head_every_records", ALOG_HEAD_EVERY, "N");
    srv_stat(st, "head_every_ms", ALOG_HEAD_MS, "T");
}

aos_err alog_start(srv *s, alog **out, char *why, size_t whylen)
{
    const char *dir = srv_dir(s);
    if (!dir) {
        WHY("aos-audit has no directory of its own (aosd gives one: --dir)");
        return AOS_ERR_USAGE;
    }
    alog *l = calloc(1, sizeof *l);
    if (!l) {
        WHY("out of memory");
        return AOS_ERR_NOMEM;
    }
    l->s = s;
    l->heads_fd = -1;
    pthread_mutex_init(&l->mu, NULL);
    mt_cond_init(&l->cv);
    char path[AOS_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/%s", dir, ALOG_KEY_FILE);
    aos_err rc = key_load(path, &l->key, why, whylen);
    if (rc == AOS_ERR_NOT_FOUND)
        rc = key_create(dir, path, &l->key, why, whylen);
    else if (rc == AOS_ERR_IO)
        WHY("cannot read %s: %s", path, strerror(errno));
    if (rc == AOS_OK) {
        audit_key_public(l->key, l->pk);
        snprintf(path, sizeof path, "%s/%s", dir, ALOG_HEADS_FILE);
        l->heads_fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_DSYNC | O_NOFOLLOW | O_CLOEXEC,
                           0600);
        if (l->heads_fd < 0 || fsync_dir(dir) != 0) { /* its name is durable too */
            WHY("cannot open %s: %s", path, strerror(errno));
            rc = AOS_ERR_IO;
        }
    }
    if (rc == AOS_OK) {
        l->enc = malloc(AUDIT_REC_MAX);
        if (!l->enc) {
            WHY("out of memory");
            rc = AOS_ERR_NOMEM;
        }
    }
    if (rc == AOS_OK)
        rc = audit_tree_new(&l->tree, why, whylen);
    if (rc == AOS_OK)
        rc = audit_tree_new(&l->scratch, why, whylen);
    if (rc == AOS_OK)
        rc = srv_pg_open(srv_pg_dsn(s), &l->pg, why, whylen);
    l->head_mono_ms = aos_mono_ms();
    if (rc == AOS_OK && pthread_create(&l->th, NULL, writer_main, l) != 0) {
        WHY("cannot start the writer thread");
        rc = AOS_ERR_INTERNAL;
    }
    if (rc != AOS_OK) {
        alog_stop(l);
        return rc;
    }
    l->started = 1;
    *out = l;
    return AOS_OK;
}

void alog_halt(alog *l)
{
    if (!l || !l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->th, NULL);
    l->started = 0;
}

void alog_stop(alog *l)
{
    if (!l)
        return;
    alog_halt(l);
    srv_pg_close(l->pg);
    if (l->heads_fd >= 0)
        close(l->heads_fd);
    audit_key_free(l->key);
    audit_tree_free(l->tree);
    audit_tree_free(l->scratch);
    free(l->enc);
    free(l->cbuf);
    free(l->leaves);
    free(l->ks);
    free(l->fresh);
    free(l->cs);
    free(l->cset);
    for (size_t i = 0; i < sizeof l->arr / sizeof l->arr[0]; i++)
        dba_free(&l->arr[i]);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
