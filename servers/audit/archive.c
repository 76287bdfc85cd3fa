/* aos-audit's retention (aosctl audit archive): the export of a range's records, the plan of
 * a cut at a signed head, the archive record that declares it, and the drop (schema.c v3). */
#include "archive.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/log.h"
#include "audit.pb-c.h"
#include "db.h"
#include "merkle.h"
#include "read.h"
#include "record.h"
#include "verify.h"

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)
#define U(x) ((unsigned long long)(x))

#define EXPORT_DEFAULT 1000u
#define EXPORT_MAX 1000u
#define EXPORT_BYTES (3u << 20) /* a reply stays well under AOS_MSG_MAX */

static atomic_ullong n_exported, n_archives, n_dropped;

/* read.c's REC_COLS order, without the leaf hash */
#define COLS                                                                             \
    "seq, time_ns, kind, agent, run, step, trace_id, span_id, parent_span_id, method, "   \
    "status, latency_us, body, prev_hash, chain_hash"

static const db_stmt st_latest = {
    "ax_latest",
    "SELECT " COLS " FROM audit.records WHERE kind = 'archive' ORDER BY seq DESC LIMIT 1", 0};
static const db_stmt st_first_at = {
    "ax_first_at", "SELECT min(seq) FROM audit.records WHERE time_ns >= $1", 1};
static const db_stmt st_max = {"ax_max", "SELECT coalesce(max(seq), 0) FROM audit.records", 0};
static const db_stmt st_cut = {
    "ax_cut",
    "SELECT tree_size, time_ns, root, signature, frontier FROM audit.heads "
    "WHERE tree_size <= $1 AND tree_size > $2 ORDER BY tree_size DESC LIMIT 1",
    2};
static const db_stmt st_head_at = {
    "ax_head_at",
    "SELECT tree_size, time_ns, root, signature, frontier FROM audit.heads "
    "WHERE tree_size = $1",
    1};
static const db_stmt st_chain = {
    "ax_chain", "SELECT chain_hash FROM audit.records WHERE seq = $1", 1};
static const db_stmt st_page = {
    "ax_page",
    "SELECT " COLS " FROM audit.records WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    3};
static const db_stmt st_drop = {"ax_drop", "SELECT audit.drop_archived($1)", 1};
static const db_stmt st_below = {
    "ax_below", "SELECT 1 FROM audit.records WHERE seq <= $1 LIMIT 1", 1};
static const db_stmt st_cover = {
    "ax_cover",
    "SELECT tree_size, time_ns, root, signature FROM audit.heads WHERE tree_size >= $1 "
    "ORDER BY tree_size LIMIT 1",
    1};

static void rollback(PGconn *c)
{
    char ignore[64];
    db_cmd(c, "ROLLBACK", ignore, sizeof ignore);
}

/* ---- audit.export ------------------------------------------------------------------------ */

typedef struct export_arg {
    const Aos__Audit__ExportRequest *q;
    uint32_t limit;
    size_t n;
} export_arg;

static aos_err export_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    export_arg *xa = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *r = NULL;
    uint8_t *buf = NULL;
    ProtobufCBinaryData *recs = NULL, *chains = NULL;
    aos_err rc = ar_begin_read(c, why, whylen);
    if (rc != AOS_OK)
        return rc;
    db_params p;
    dp_init(&p);
    dp_i64(&p, (int64_t)xa->q->after_seq);
    dp_i64(&p, (int64_t)xa->q->to_seq);
    dp_i64(&p, xa->limit);
    if ((rc = db_exec(c, &st_page, &p, &r, why, whylen)) != AOS_OK)
        goto out;
    if ((rc = db_cmd(c, "COMMIT", why, whylen)) != AOS_OK)
        goto out;
    int n = PQntuples(r);
    /* every record of a page encodes into one buffer: the page's bodies plus the fixed
     * part of each, so its size is known before a byte is written */
    size_t cap = 0;
    for (int i = 0; i < n; i++)
        cap += (size_t)PQgetlength(r, i, 12) + AUDIT_REC_MAX - AUDIT_BODY_MAX;
    buf = malloc(cap ? cap : 1);
    recs = calloc((size_t)(n ? n : 1), sizeof *recs);
    chains = calloc((size_t)(n ? n : 1), sizeof *chains);
    uint8_t(*ch)[AUDIT_HASH_LEN] = malloc((size_t)(n ? n : 1) * AUDIT_HASH_LEN);
    if (!buf || !recs || !chains || !ch) {
        free(ch);
        rc = AOS_ERR_NOMEM;
        WHY("audit.export: out of memory for %d records", n);
        goto out;
    }
    size_t used = 0, k = 0;
    for (int i = 0; i < n; i++) {
        audit_rec a;
        ar_row_rec(r, i, &a, ch[k]);
        if (a.seq != xa->q->after_seq + 1 + (uint64_t)i) {
            rc = AOS_ERR_CONFLICT;
            WHY("audit.export: seq %llu is missing from the log (audit verify names it): "
                "an archive must hold every record of its range",
                U(xa->q->after_seq + 1 + (uint64_t)i));
            break;
        }
        size_t len;
        if (audit_rec_encode(&a, buf + used, cap - used, &len, NULL, 0) != AOS_OK) {
            rc = AOS_ERR_CONFLICT;
            WHY("audit.export: record %llu as stored does not encode: it was altered "
                "(audit verify names it)", U(a.seq));
            break;
        }
        if (k > 0 && used + len > EXPORT_BYTES)
            break; /* the caller asks again after the last seq it got */
        recs[k] = (ProtobufCBinaryData){len, buf + used};
        chains[k] = (ProtobufCBinaryData){AUDIT_HASH_LEN, ch[k]};
        used += len;
        k++;
    }
    if (rc == AOS_OK) {
        Aos__Audit__ExportReply x = AOS__AUDIT__EXPORT_REPLY__INIT;
        x.n_records = k;
        x.records = recs;
        x.n_chains = k;
        x.chains = chains;
        rc = srv_reply_pb(rep, &x.base);
        xa->n = k;
    }
    free(ch);
    PQclear(r);
    free(buf);
    free(recs);
    free(chains);
    return rc;
out:
    rollback(c);
    PQclear(r);
    free(buf);
    free(recs);
    free(chains);
    return rc;
}

aos_err ax_export(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    (void)l;
    Aos__Audit__ExportRequest *q =
        aos__audit__export_request__unpack(NULL, req->payload_len, req->payload);
    if (!q)
        return srv_fail(rep, AOS_ERR_PROTO, "audit.export: the payload is not an ExportRequest");
    aos_err rc = AOS_OK;
    if (q->after_seq >= INT64_MAX || q->to_seq > INT64_MAX || q->to_seq <= q->after_seq)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.export: to_seq %llu must be above after_seq "
                      "%llu (and both below 2^63)", U(q->to_seq), U(q->after_seq));
    else if (q->limit > EXPORT_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.export: limit %u (at most %u)", q->limit,
                      EXPORT_MAX);
    srv_pg *pg = srv_db(s);
    if (rc == AOS_OK && !pg)
        rc = srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.export: no database connection");
    if (rc == AOS_OK) {
        export_arg xa = {.q = q, .limit = q->limit ? q->limit : EXPORT_DEFAULT};
        rc = db_run(pg, req->deadline_ms, "audit.export", rep, export_attempt, &xa, NULL);
        if (rc == AOS_OK)
            atomic_fetch_add(&n_exported, xa.n);
    }
    aos__audit__export_request__free_unpacked(q, NULL);
    return rc;
}

/* ---- audit.archive ----------------------------------------------------------------------- */

typedef struct arch_arg {
    const Aos__Audit__ArchiveRequest *q;
    /* what is archived already: the latest archive record */
    int have_latest;
    uint64_t latest_seq;
    audit_archive latest;
    uint64_t base;
    /* the cut */
    uint64_t to;
    audit_sth head;
    size_t nf;
    uint8_t fr[AUDIT_TREE_DEPTH][AUDIT_HASH_LEN];
    uint8_t chain_to[AUDIT_HASH_LEN];
    int retry; /* the commit was made already: its record is latest_seq */
    int unfinished; /* the latest archive's range is still there: its drop was cut short */
    /* after the commit */
    uint64_t archive_seq, dropped;
    audit_sth sealed;
} arch_arg;

static aos_err read_latest(PGconn *c, arch_arg *a, char *why, size_t whylen)
{
    PGresult *r = NULL;
    aos_err rc = db_exec(c, &st_latest, NULL, &r, why, whylen);
    if (rc != AOS_OK)
        return rc;
    a->have_latest = PQntuples(r) == 1;
    a->base = 0;
    if (a->have_latest) {
        audit_rec rec;
        uint8_t chain[AUDIT_HASH_LEN];
        ar_row_rec(r, 0, &rec, chain);
        a->latest_seq = rec.seq;
        if (audit_archive_decode(rec.body, rec.body_len, &a->latest, NULL, 0) != AOS_OK) {
            WHY("audit.archive: the archive record %llu does not decode: the log was changed "
                "(audit verify names it); nothing is archived", U(rec.seq));
            rc = AOS_ERR_CONFLICT;
        } else {
            a->base = a->latest.archived_to;
        }
    }
    PQclear(r);
    return rc;
}

/* A heads row with its frontier (st_cut, st_head_at) into a->head and a->fr; the frontier
 * must give the signed root, or the cut would declare a tree the log never had. */
static aos_err take_head(const PGresult *r, arch_arg *a, char *why, size_t whylen)
{
    ar_row_sth(r, 0, &a->head);
    a->to = a->head.tree_size;
    size_t n;
    const uint8_t *fr = db_bytes(r, 0, 4, &n);
    a->nf = n / AUDIT_HASH_LEN;
    if (n % AUDIT_HASH_LEN || a->nf != (size_t)__builtin_popcountll(a->to)) {
        WHY("audit.archive: head %llu has a malformed frontier", U(a->to));
        return AOS_ERR_CONFLICT;
    }
    memcpy(a->fr, fr, n);
    audit_tree *t;
    aos_err rc = audit_tree_new(&t, why, whylen);
    if (rc != AOS_OK)
        return rc;
    uint8_t root[AUDIT_HASH_LEN];
    rc = audit_tree_restore(t, a->to, (const uint8_t(*)[AUDIT_HASH_LEN])a->fr, a->nf, why,
                            whylen);
    if (rc == AOS_OK) {
        audit_tree_root(t, root);
        if (memcmp(root, a->head.root, AUDIT_HASH_LEN)) {
            WHY("audit.archive: the frontier stored with head %llu does not give its root",
                U(a->to));
            rc = AOS_ERR_CONFLICT;
        }
    }
    audit_tree_free(t);
    return rc == AOS_ERR_USAGE ? AOS_ERR_CONFLICT : rc;
}

static aos_err plan_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    arch_arg *a = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *r = NULL;
    aos_err rc = ar_begin_read(c, why, whylen);
    if (rc != AOS_OK)
        return rc;
    if ((rc = read_latest(c, a, why, whylen)) != AOS_OK)
        goto out;
    if (a->base) {
        db_params bp;
        dp_init(&bp);
        dp_i64(&bp, (int64_t)a->base);
        if ((rc = db_exec(c, &st_below, &bp, &r, why, whylen)) != AOS_OK)
            goto out;
        a->unfinished = PQntuples(r) > 0;
        PQclear(r);
        r = NULL;
    }
    uint64_t bound;
    db_params p;
    if (a->q->before_seq) {
        bound = a->q->before_seq - 1;
    } else {
        /* records before T: up to the first one stamped at or after T, so a producer's
         * clock that went back never puts a later record in the archive */
        dp_init(&p);
        dp_i64(&p, (int64_t)a->q->before_time_ns);
        if ((rc = db_exec(c, &st_first_at, &p, &r, why, whylen)) != AOS_OK)
            goto out;
        int none = PQgetisnull(r, 0, 0);
        bound = none ? 0 : (uint64_t)db_i64(r, 0, 0) - 1;
        PQclear(r);
        r = NULL;
        if (none) {
            if ((rc = db_exec(c, &st_max, NULL, &r, why, whylen)) != AOS_OK)
                goto out;
            bound = (uint64_t)db_i64(r, 0, 0);
            PQclear(r);
            r = NULL;
        }
    }
    dp_init(&p);
    dp_i64(&p, (int64_t)bound);
    dp_i64(&p, (int64_t)a->base);
    if ((rc = db_exec(c, &st_cut, &p, &r, why, whylen)) != AOS_OK)
        goto out;
    if (PQntuples(r) != 1 && bound <= a->base) {
        rc = AOS_ERR_NOT_FOUND;
        WHY("audit.archive: nothing to archive: the records before the bound (seq %llu and "
            "below) are archived already (seqs 1..%llu)", U(bound), U(a->base));
        goto out;
    }
    if (PQntuples(r) != 1) {
        rc = AOS_ERR_NOT_FOUND;
        WHY("audit.archive: nothing to archive: no signed head has a tree size in %llu..%llu "
            "(seqs 1..%llu are archived already; a cut is always at a signed head, which "
            "covers exactly the records before it)",
            U(a->base + 1), U(bound), U(a->base));
        goto out;
    }
    if ((rc = take_head(r, a, why, whylen)) != AOS_OK)
        goto out;
    rc = db_cmd(c, "COMMIT", why, whylen);
out:
    if (rc != AOS_OK)
        rollback(c);
    PQclear(r);
    return rc;
}

static aos_err seal_read_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    arch_arg *a = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *r = NULL;
    aos_err rc = ar_begin_read(c, why, whylen);
    if (rc != AOS_OK)
        return rc;
    if ((rc = read_latest(c, a, why, whylen)) != AOS_OK)
        goto out;
    uint64_t to = a->q->to_seq;
    if (a->have_latest && a->latest.archived_to == to &&
        a->latest.version == AUDIT_ARCHIVE_VERSION2 &&
        !memcmp(a->latest.digest, a->q->digest.data, AUDIT_HASH_LEN)) {
        a->retry = 1; /* sent again: the record is there; the drop is run again */
        a->base = a->latest.archived_from - 1;
    } else if (to <= a->base) {
        rc = AOS_ERR_CONFLICT;
        WHY("audit.archive: seqs 1..%llu are archived already (record %llu): plan again",
            U(a->base), U(a->latest_seq));
        goto out;
    }
    db_params p;
    dp_init(&p);
    dp_i64(&p, (int64_t)to);
    if ((rc = db_exec(c, &st_head_at, &p, &r, why, whylen)) != AOS_OK)
        goto out;
    if (PQntuples(r) != 1) {
        rc = AOS_ERR_NOT_FOUND;
        WHY("audit.archive: no signed head of tree size %llu: a cut is at a head (plan "
            "again)", U(to));
        goto out;
    }
    if ((rc = take_head(r, a, why, whylen)) != AOS_OK)
        goto out;
    PQclear(r);
    r = NULL;
    if (!a->retry) {
        if ((rc = db_exec(c, &st_chain, &p, &r, why, whylen)) != AOS_OK)
            goto out;
        size_t n;
        const uint8_t *h = PQntuples(r) == 1 ? db_bytes(r, 0, 0, &n) : NULL;
        if (!h || n != AUDIT_HASH_LEN) {
            rc = AOS_ERR_CONFLICT;
            WHY("audit.archive: record %llu, the cut's last, is missing or damaged (audit "
                "verify names it)", U(to));
            goto out;
        }
        memcpy(a->chain_to, h, AUDIT_HASH_LEN);
    }
    rc = db_cmd(c, "COMMIT", why, whylen);
out:
    if (rc != AOS_OK)
        rollback(c);
    PQclear(r);
    return rc;
}

static aos_err drop_attempt(PGconn *c, void *arg, srv_reply *rep)
{
    arch_arg *a = arg;
    char *why = rep->error;
    size_t whylen = sizeof rep->error;
    PGresult *r = NULL;
    db_params p;
    dp_init(&p);
    dp_i64(&p, (int64_t)a->archive_seq);
    /* one statement, its own transaction: the function locks, checks and deletes */
    aos_err rc = db_exec(c, &st_drop, &p, &r, why, whylen);
    if (rc != AOS_OK)
        return rc;
    a->dropped = (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    r = NULL;
    if ((rc = db_exec(c, &st_cover, &p, &r, why, whylen)) != AOS_OK)
        return rc;
    if (PQntuples(r) == 1)
        ar_row_sth(r, 0, &a->sealed);
    PQclear(r);
    return AOS_OK;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The archive record as an EmitRequest the writer owns (unpacked with the default
 * allocator, as alog wants it). */
static aos_err archive_event(const arch_arg *a, Aos__Audit__EmitRequest **out, char *why,
                             size_t whylen)
{
    audit_archive d = {0};
    d.archived_to = a->to;
    memcpy(d.chain, a->chain_to, AUDIT_HASH_LEN);
    d.n = a->nf;
    memcpy(d.frontier, a->fr, a->nf * AUDIT_HASH_LEN);
    d.archived_from = a->base + 1;
    memcpy(d.digest, a->q->digest.data, AUDIT_HASH_LEN);
    d.head_time_ns = a->head.time_ns;
    memcpy(d.head_sig, a->head.sig, AUDIT_SIG_LEN);
    uint8_t body[AUDIT_ARCHIVE_MAX];
    size_t blen;
    aos_err rc = audit_archive_encode_v2(&d, body, sizeof body, &blen, why, whylen);
    if (rc != AOS_OK)
        return rc;
    /* the key makes a commit sent again the same record */
    char key[64];
    int kl = snprintf(key, sizeof key, "archive/%llu", U(a->to));
    Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT;
    ev.kind = (ProtobufCBinaryData){7, (uint8_t *)"archive"};
    ev.method = (ProtobufCBinaryData){13, (uint8_t *)"audit.archive"};
    ev.body = (ProtobufCBinaryData){blen, body};
    ev.key = (ProtobufCBinaryData){(size_t)kl, (uint8_t *)key};
    ev.time_ns = now_ns();
    Aos__Audit__Event *evs[1] = {&ev};
    Aos__Audit__EmitRequest er = AOS__AUDIT__EMIT_REQUEST__INIT;
    er.n_events = 1;
    er.events = evs;
    uint8_t b[AUDIT_ARCHIVE_MAX + 512];
    size_t n = aos__audit__emit_request__pack(&er, b);
    *out = aos__audit__emit_request__unpack(NULL, n, b);
    if (!*out) {
        WHY("audit.archive: out of memory");
        return AOS_ERR_NOMEM;
    }
    return AOS_OK;
}

aos_err ax_archive(srv *s, alog *l, const aos_env *req, srv_reply *rep)
{
    Aos__Audit__ArchiveRequest *q =
        aos__audit__archive_request__unpack(NULL, req->payload_len, req->payload);
    if (!q)
        return srv_fail(rep, AOS_ERR_PROTO,
                        "audit.archive: the payload is not an ArchiveRequest");
    arch_arg *a = calloc(1, sizeof *a);
    aos_err rc = AOS_OK;
    srv_pg *pg = srv_db(s);
    if (!a)
        rc = srv_fail(rep, AOS_ERR_NOMEM, "audit.archive: out of memory");
    else if (!q->commit && (!q->before_seq == !q->before_time_ns))
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.archive: give exactly one of before_seq and "
                      "before_time_ns");
    else if (q->before_seq > INT64_MAX || q->before_time_ns > INT64_MAX ||
             q->to_seq > INT64_MAX)
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.archive: a seq or time past 2^63");
    else if (q->commit && (!q->to_seq || q->digest.len != AUDIT_HASH_LEN))
        rc = srv_fail(rep, AOS_ERR_USAGE, "audit.archive: a commit needs to_seq (the planned "
                      "cut) and the 32-byte digest of the archive's MANIFEST");
    else if (!pg || !l)
        rc = srv_fail(rep, AOS_ERR_UNAVAILABLE, "audit.archive: no database connection");
    if (rc != AOS_OK)
        goto out;
    a->q = q;
    if (!q->commit) {
        rc = db_run(pg, req->deadline_ms, "audit.archive", rep, plan_attempt, a, NULL);
        if ((rc == AOS_OK || rc == AOS_ERR_NOT_FOUND) && a->unfinished) {
            /* a cut recorded and sealed whose drop never happened (aos-audit died between
             * the two): its archive was written before the record, so finish it first */
            aos_info("audit.archive: finishing the drop of archive record %llu (seqs up to "
                     "%llu)", U(a->latest_seq), U(a->base));
            a->archive_seq = a->latest_seq;
            rc = db_run(pg, req->deadline_ms, "audit.archive", rep, drop_attempt, a, NULL);
            if (rc == AOS_OK) {
                atomic_fetch_add(&n_dropped, a->dropped);
                a->unfinished = 0;
                memset(&a->sealed, 0, sizeof a->sealed);
                uint64_t was = a->latest_seq, upto = a->base;
                rc = db_run(pg, req->deadline_ms, "audit.archive", rep, plan_attempt, a, NULL);
                if (rc == AOS_ERR_NOT_FOUND)
                    rc = srv_fail(rep, AOS_ERR_NOT_FOUND, "audit.archive: finished the cut of "
                                  "archive record %llu, whose drop had not happened (seqs "
                                  "1..%llu are gone now); nothing more to archive",
                                  U(was), U(upto));
            }
        }
        if (rc != AOS_OK)
            goto out;
    } else {
        rc = db_run(pg, req->deadline_ms, "audit.archive", rep, seal_read_attempt, a, NULL);
        if (rc != AOS_OK)
            goto out;
        if (a->retry) {
            a->archive_seq = a->latest_seq;
        } else {
            Aos__Audit__EmitRequest *er;
            if ((rc = archive_event(a, &er, rep->error, sizeof rep->error)) != AOS_OK)
                goto out;
            uint32_t appended;
            rc = alog_append_sealed(l, er, req->deadline_ms, &a->archive_seq, &appended,
                                    rep->error, sizeof rep->error);
            if (rc != AOS_OK)
                goto out;
        }
        rc = db_run(pg, req->deadline_ms, "audit.archive", rep, drop_attempt, a, NULL);
        if (rc != AOS_OK)
            goto out;
        atomic_fetch_add(&n_archives, 1);
        atomic_fetch_add(&n_dropped, a->dropped);
    }
    uint8_t pk[AUDIT_PK_LEN];
    alog_public_key(l, pk);
    Aos__Audit__Head hm = AOS__AUDIT__HEAD__INIT, sm = AOS__AUDIT__HEAD__INIT;
    ar_fill_head(&hm, &a->head, pk);
    ProtobufCBinaryData fr[AUDIT_TREE_DEPTH];
    /* the base: the frontier and chain at from_seq - 1, from the previous archive */
    uint8_t zero[AUDIT_HASH_LEN] = {0};
    Aos__Audit__ArchiveReply x = AOS__AUDIT__ARCHIVE_REPLY__INIT;
    x.from_seq = a->base + 1;
    x.to_seq = a->to;
    x.head = &hm;
    if (a->base && a->have_latest && !a->retry) {
        x.base_chain = (ProtobufCBinaryData){AUDIT_HASH_LEN, a->latest.chain};
        for (size_t i = 0; i < a->latest.n; i++)
            fr[i] = (ProtobufCBinaryData){AUDIT_HASH_LEN, a->latest.frontier[i]};
        x.n_base_frontier = a->latest.n;
        x.base_frontier = fr;
    } else {
        x.base_chain = (ProtobufCBinaryData){AUDIT_HASH_LEN, zero};
    }
    if (q->commit) {
        x.archive_seq = a->archive_seq;
        x.dropped = a->dropped;
        if (a->sealed.tree_size) {
            ar_fill_head(&sm, &a->sealed, pk);
            x.sealed = &sm;
        }
    }
    rc = srv_reply_pb(rep, &x.base);
out:
    free(a);
    aos__audit__archive_request__free_unpacked(q, NULL);
    return rc;
}

void ax_stats(srv_stats *st)
{
    srv_stat(st, "exported_records", (int64_t)atomic_load(&n_exported),
             "records handed out by audit.export");
    srv_stat(st, "archives", (int64_t)atomic_load(&n_archives),
             "archive cuts recorded and dropped by this process");
    srv_stat(st, "archived_dropped", (int64_t)atomic_load(&n_dropped),
             "records deleted by those cuts");
}
