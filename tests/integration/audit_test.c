/* aos-audit through a real aosd: emits are durable, deduped and chained, proofs check
 * offline, and each kind of tampering by a superuser is named where it happened. Also
 * kill -9 of aos-audit or of PostgreSQL under 8 emitters, and hostile input. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "aos.pb-c.h"
#include "audit.pb-c.h"
#include "harness.h"
#include "merkle.h"
#include "record.h"
#include "storage_util.h"

#define EMITTERS 8
#define PER_CALL 10
#define RETRY_FOR_MS 120000u

/* h_stop, after checking that no sanitizer spoke up in aosd's log (the servers' stderr):
 * a sanitized aos-audit that reported an error is a failure even if it went on. */
static void stop(h_aosd *h)
{
    int n = h_log_count(h, "Sanitizer");
    if (n != 0)
        h_dump_log(h);
    assert_int_equal(n, 0);
    h_stop(h);
}

/* ---- calls ------------------------------------------------------------------------------ */

typedef struct ev_spec {
    const char *agent;
    const char *key; /* NULL: none */
    long n;
} ev_spec;

/* Pack an EmitRequest of n events: agent, method, body {"n":first+i}, keys
 * "<prefix>/<first+i>" (prefix NULL: no keys). Caller frees *out. */
static size_t pack_emit(const char *agent, const char *prefix, long first, size_t n,
                        uint8_t **out)
{
    Aos__Audit__Event *ev = calloc(n, sizeof *ev);
    Aos__Audit__Event **evp = calloc(n, sizeof *evp);
    char(*keys)[64] = calloc(n, 64);
    char(*bodies)[64] = calloc(n, 64);
    static const uint8_t trace[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t span[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    assert_true(ev && evp && keys && bodies);
    for (size_t i = 0; i < n; i++) {
        aos__audit__event__init(&ev[i]);
        ev[i].kind = (ProtobufCBinaryData){7, (uint8_t *)"syscall"};
        ev[i].agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
        ev[i].method = (ProtobufCBinaryData){14, (uint8_t *)"storage.kv.put"};
        ev[i].trace_id = (ProtobufCBinaryData){16, (uint8_t *)trace};
        ev[i].span_id = (ProtobufCBinaryData){8, (uint8_t *)span};
        ev[i].step = (uint32_t)(first + (long)i);
        ev[i].latency_us = 42;
        snprintf(bodies[i], 64, "{\"n\": %ld}", first + (long)i);
        ev[i].body = (ProtobufCBinaryData){strlen(bodies[i]), (uint8_t *)bodies[i]};
        if (prefix) {
            snprintf(keys[i], 64, "%s/%ld", prefix, first + (long)i);
            ev[i].key = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
        }
        evp[i] = &ev[i];
    }
    Aos__Audit__EmitRequest r = AOS__AUDIT__EMIT_REQUEST__INIT;
    r.n_events = n;
    r.events = evp;
    size_t len = aos__audit__emit_request__get_packed_size(&r);
    *out = malloc(len ? len : 1);
    assert_non_null(*out);
    aos__audit__emit_request__pack(&r, *out);
    free(ev);
    free(evp);
    free(keys);
    free(bodies);
    return len;
}

static aos_err emit(aos_conn *c, const char *agent, const char *prefix, long first, size_t n,
                    uint64_t *first_seq, uint32_t *appended, char *why, size_t whylen)
{
    uint8_t *b;
    size_t len = pack_emit(agent, prefix, first, n, &b);
    aos_call_opts o = {.timeout_ms = 10000};
    aos_reply r;
    aos_err e = aos_call(c, &o, "audit.emit", b, len, &r);
    free(b);
    if (why)
        snprintf(why, whylen, "%s", r.error);
    if (e == AOS_OK) {
        Aos__Audit__EmitReply *er =
            aos__audit__emit_reply__unpack(NULL, r.payload_len, r.payload);
        assert_non_null(er);
        if (first_seq)
            *first_seq = er->first_seq;
        if (appended)
            *appended = er->appended;
        aos__audit__emit_reply__free_unpacked(er, NULL);
    }
    aos_reply_clear(&r);
    return e;
}

static Aos__Audit__Head *head(h_aosd *h, int sign_now)
{
    Aos__Audit__HeadRequest q = AOS__AUDIT__HEAD_REQUEST__INIT;
    q.sign_now = sign_now;
    uint8_t b[16];
    size_t n = aos__audit__head_request__pack(&q, b);
    aos_reply r;
    aos_err e = aos_call(h_conn(h), NULL, "audit.head", b, n, &r);
    if (e != AOS_OK)
        fail_msg("audit.head: %s: %s", aos_err_name(e), r.error);
    Aos__Audit__Head *m = aos__audit__head__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(m);
    return m;
}

static Aos__Audit__Finding *verify(h_aosd *h)
{
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 60000};
    aos_err e = aos_call(h_conn(h), &o, "audit.verify", NULL, 0, &r);
    if (e != AOS_OK)
        fail_msg("audit.verify: %s: %s", aos_err_name(e), r.error);
    Aos__Audit__Finding *f = aos__audit__finding__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(f);
    print_message("verify: %s at %llu..%llu (head %llu): %llu records, %llu heads: %s\n",
                  f->kind, (unsigned long long)f->seq, (unsigned long long)f->seq_end,
                  (unsigned long long)f->head_size, (unsigned long long)f->records,
                  (unsigned long long)f->heads_checked, f->what);
    return f;
}

static aos_err prove(h_aosd *h, uint64_t seq, uint64_t size, Aos__Audit__Proof **out,
                     char *why, size_t whylen)
{
    Aos__Audit__ProveRequest q = AOS__AUDIT__PROVE_REQUEST__INIT;
    q.seq = seq;
    q.tree_size = size;
    uint8_t b[32];
    size_t n = aos__audit__prove_request__pack(&q, b);
    aos_reply r;
    aos_err e = aos_call(h_conn(h), NULL, "audit.prove", b, n, &r);
    snprintf(why, whylen, "%s", r.error);
    *out = e == AOS_OK ? aos__audit__proof__unpack(NULL, r.payload_len, r.payload) : NULL;
    if (e == AOS_OK)
        assert_non_null(*out);
    aos_reply_clear(&r);
    return e;
}

/* The offline check a holder of the log's public key makes: the record decodes to seq,
 * its leaf is in the head's tree by the path, and the head is signed by pk. */
static aos_err check_proof(const Aos__Audit__Proof *p, const uint8_t pk[AUDIT_PK_LEN],
                           char *why, size_t whylen)
{
    audit_rec r;
    aos_err e = audit_rec_decode(p->record.data, p->record.len, &r, why, whylen);
    if (e != AOS_OK)
        return e;
    if (r.seq != p->seq || !p->head || p->head->root.len != AUDIT_HASH_LEN ||
        p->head->signature.len != AUDIT_SIG_LEN || p->n_path > AUDIT_PROOF_MAX) {
        snprintf(why, whylen, "proof fields malformed");
        return AOS_ERR_PROTO;
    }
    audit_sth h = {.tree_size = p->head->tree_size, .time_ns = p->head->time_ns};
    memcpy(h.root, p->head->root.data, AUDIT_HASH_LEN);
    memcpy(h.sig, p->head->signature.data, AUDIT_SIG_LEN);
    if ((e = audit_sth_verify(&h, pk, why, whylen)) != AOS_OK)
        return e;
    uint8_t path[AUDIT_PROOF_MAX][AUDIT_HASH_LEN];
    for (size_t i = 0; i < p->n_path; i++) {
        if (p->path[i].len != AUDIT_HASH_LEN)
            return AOS_ERR_PROTO;
        memcpy(path[i], p->path[i].data, AUDIT_HASH_LEN);
    }
    uint8_t leaf[AUDIT_HASH_LEN];
    audit_leaf_hash(p->record.data, p->record.len, leaf);
    return audit_inclusion_verify(leaf, p->seq - 1, h.tree_size,
                                  (const uint8_t(*)[AUDIT_HASH_LEN])path, p->n_path, h.root,
                                  why, whylen);
}

static void sql_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
}

/* The superuser's way past the triggers: what the tamper cases do. */
static void tamper(h_aosd *h, const char *sql)
{
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    sql_ok(pg, "SET session_replication_role = replica");
    sql_ok(pg, sql);
    PQfinish(pg);
}

/* A log of 300 records from 6 emits and a head signed over all of them. */
static h_aosd *start_with_log(void)
{
    h_aosd *h = h_start(NULL);
    char why[AOS_ERRMSG_MAX + 1];
    for (long i = 0; i < 6; i++) {
        aos_err e = emit(h_conn(h), "agent-t", "t", i * 50, 50, NULL, NULL, why, sizeof why);
        if (e != AOS_OK)
            fail_msg("emit: %s: %s", aos_err_name(e), why);
    }
    Aos__Audit__Head *m = head(h, 1);
    assert_true(m->tree_size >= 300);
    aos__audit__head__free_unpacked(m, NULL);
    return h;
}

/* One of aos-audit's own figures; -1 when it cannot be read. */
static long long audit_stat(h_aosd *h, const char *name)
{
    aos_reply r;
    long long v = -1;
    if (aos_call(h_conn(h), NULL, "audit.stats", NULL, 0, &r) != AOS_OK) {
        aos_reply_clear(&r);
        return -1;
    }
    Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    for (size_t i = 0; s && i < s->n_stats; i++)
        if (!strcmp(s->stats[i]->name, name))
            v = (long long)s->stats[i]->value;
    if (s)
        aos__stats_reply__free_unpacked(s, NULL);
    return v;
}

/* aos-audit's own figures, printed beside the measured ones */
static void print_stats(h_aosd *h)
{
    aos_reply r;
    if (aos_call(h_conn(h), NULL, "audit.stats", NULL, 0, &r) != AOS_OK) {
        aos_reply_clear(&r);
        return;
    }
    Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s)
        return;
    for (size_t i = 0; i < s->n_stats; i++)
        if (!strcmp(s->stats[i]->name, "commits") ||
            !strcmp(s->stats[i]->name, "events_per_commit") ||
            !strcmp(s->stats[i]->name, "records") || !strcmp(s->stats[i]->name, "db_waits") ||
            !strcmp(s->stats[i]->name, "duplicates"))
            print_message("  %s = %lld\n", s->stats[i]->name, (long long)s->stats[i]->value);
    aos__stats_reply__free_unpacked(s, NULL);
}

/* ---- 1. the log works ------------------------------------------------------------------- */

static void emit_verify_prove(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    char why[AOS_ERRMSG_MAX + 1];
    uint64_t first = 0, prev_end = 0;
    uint32_t app = 0;
    /* a few hundred events, with keys: each call's seqs follow the last */
    for (long i = 0; i < 8; i++) {
        aos_err e = emit(h_conn(h), "agent-a", "k", i * 40, 40, &first, &app, why, sizeof why);
        if (e != AOS_OK)
            fail_msg("emit: %s: %s", aos_err_name(e), why);
        assert_int_equal(app, 40);
        if (prev_end)
            assert_true(first > prev_end);
        prev_end = first + 39;
    }
    /* without keys, another agent */
    assert_int_equal(emit(h_conn(h), "agent-b", NULL, 0, 20, &first, &app, why, sizeof why),
                     AOS_OK);
    assert_int_equal(app, 20);
    /* a re-sent emit appends nothing and names the seq it had: its batch, sent without
     * looking its keys up, meets the unique index and runs again with them looked up */
    long long lookups = audit_stat(h, "key_lookups");
    assert_true(lookups >= 0);
    uint64_t again = 0;
    assert_int_equal(emit(h_conn(h), "agent-a", "k", 40, 40, &again, &app, why, sizeof why),
                     AOS_OK);
    assert_int_equal(app, 0);
    assert_true(audit_stat(h, "key_lookups") > lookups);
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT seq FROM audit.records WHERE key = 'k/40'");
    assert_int_equal(su_count(pg, sql), (long long)again);
    /* partly new: the new ones only, first_seq the first new one */
    assert_int_equal(emit(h_conn(h), "agent-a", "k", 310, 20, &first, &app, why, sizeof why),
                     AOS_OK);
    assert_int_equal(app, 10);
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.records WHERE key LIKE 'k/%'"),
                     330);
    assert_int_equal(su_count(pg, "SELECT count(DISTINCT key) FROM audit.records "
                                  "WHERE key LIKE 'k/%'"),
                     330);
    snprintf(sql, sizeof sql, "SELECT seq FROM audit.records WHERE key = 'k/320'");
    assert_int_equal(su_count(pg, sql), (long long)first);

    Aos__Audit__Head *hd = head(h, 1);
    assert_int_equal(hd->public_key.len, AUDIT_PK_LEN);
    uint8_t pk[AUDIT_PK_LEN];
    memcpy(pk, hd->public_key.data, AUDIT_PK_LEN);
    uint64_t size = hd->tree_size;
    assert_true(size >= 350);
    assert_int_equal(su_count(pg, "SELECT max(seq) FROM audit.records"), (long long)size);
    aos__audit__head__free_unpacked(hd, NULL);

    Aos__Audit__Finding *f = verify(h);
    assert_string_equal(f->kind, "ok");
    assert_true(f->records >= size);
    assert_true(f->heads_checked >= 1);
    aos__audit__finding__free_unpacked(f, NULL);

    /* a proof checks offline; a forged record, a forged head or a foreign key do not */
    Aos__Audit__Proof *p;
    aos_err e = prove(h, 123, 0, &p, why, sizeof why);
    if (e != AOS_OK)
        fail_msg("audit.prove: %s: %s", aos_err_name(e), why);
    assert_int_equal(p->seq, 123);
    assert_int_equal(check_proof(p, pk, why, sizeof why), AOS_OK);
    p->record.data[p->record.len - 40] ^= 1; /* in the body */
    assert_int_not_equal(check_proof(p, pk, why, sizeof why), AOS_OK);
    p->record.data[p->record.len - 40] ^= 1;
    p->head->root.data[0] ^= 1;
    assert_int_not_equal(check_proof(p, pk, why, sizeof why), AOS_OK);
    p->head->root.data[0] ^= 1;
    audit_key *k;
    assert_int_equal(audit_key_generate(&k, why, sizeof why), AOS_OK);
    audit_sth foreign = {.tree_size = p->head->tree_size, .time_ns = p->head->time_ns};
    memcpy(foreign.root, p->head->root.data, AUDIT_HASH_LEN);
    assert_int_equal(audit_sth_sign(&foreign, k, why, sizeof why), AOS_OK);
    uint8_t fpk[AUDIT_PK_LEN];
    audit_key_public(k, fpk);
    audit_key_free(k);
    memcpy(p->head->signature.data, foreign.sig, AUDIT_SIG_LEN);
    assert_int_not_equal(check_proof(p, pk, why, sizeof why), AOS_OK);
    assert_int_equal(check_proof(p, fpk, why, sizeof why), AOS_OK); /* the forger's own */
    aos__audit__proof__free_unpacked(p, NULL);
    /* every seq of a small range, against a given head */
    for (uint64_t s = 1; s <= size; s += 37) {
        assert_int_equal(prove(h, s, size, &p, why, sizeof why), AOS_OK);
        assert_int_equal(check_proof(p, pk, why, sizeof why), AOS_OK);
        aos__audit__proof__free_unpacked(p, NULL);
    }
    assert_int_equal(prove(h, size + 5, 0, &p, why, sizeof why), AOS_ERR_NOT_FOUND);

    /* tail: agent-b's 20, oldest first */
    Aos__Audit__TailRequest tq = AOS__AUDIT__TAIL_REQUEST__INIT;
    tq.agent = (ProtobufCBinaryData){7, (uint8_t *)"agent-b"};
    uint8_t tb[64];
    size_t tn = aos__audit__tail_request__pack(&tq, tb);
    aos_reply r;
    assert_int_equal(aos_call(h_conn(h), NULL, "audit.tail", tb, tn, &r), AOS_OK);
    Aos__Audit__TailReply *tr = aos__audit__tail_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(tr);
    assert_int_equal(tr->n_records, 20);
    for (size_t i = 0; i < tr->n_records; i++) {
        assert_string_equal(tr->records[i]->agent, "agent-b");
        assert_int_equal(tr->records[i]->step, i);
        if (i)
            assert_true(tr->records[i]->seq > tr->records[i - 1]->seq);
    }
    assert_true(tr->last_seq >= size);
    aos__audit__tail_reply__free_unpacked(tr, NULL);

    /* the operator's view, and the triggers that even the owner meets */
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.events_v WHERE agent = 'agent-b' "
                                  "AND (body_json->>'n')::int = 7 AND at > now() - "
                                  "interval '1 hour' AND trace_id = "
                                  "'0102030405060708090a0b0c0d0e0f10'"),
                     1);
    static const char *const refused[] = {"UPDATE audit.records SET method = 'x'",
                                          "DELETE FROM audit.records WHERE seq = 1",
                                          "TRUNCATE audit.records",
                                          "UPDATE audit.heads SET time_ns = 0",
                                          "DELETE FROM audit.heads", "TRUNCATE audit.heads",
                                          "UPDATE audit.contents SET size = 0",
                                          "DELETE FROM audit.contents",
                                          "TRUNCATE audit.contents"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        PGresult *res = PQexec(pg, refused[i]);
        assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
        assert_string_equal(PQresultErrorField(res, PG_DIAG_SQLSTATE), "42501");
        PQclear(res);
    }
    /* aos_audit's grants: INSERT and SELECT, nothing else */
    assert_int_equal(su_count(pg, "SELECT count(*) FROM information_schema.role_table_grants "
                                  "WHERE grantee = 'aos_audit' AND table_schema = 'audit' "
                                  "AND table_name IN ('records', 'heads', 'contents') AND "
                                  "privilege_type NOT IN ('INSERT', 'SELECT')"),
                     0);
    assert_int_equal(su_count(pg, "SELECT count(*) FROM information_schema.role_table_grants "
                                  "WHERE grantee = 'aos_audit' AND table_schema = 'audit' "
                                  "AND table_name IN ('records', 'heads', 'contents')"),
                     6);
    PQfinish(pg);

    /* kill -9 and on: the next incarnation continues the chain and the tree */
    pid_t old = h_child(h, "audit", NULL);
    assert_true(old > 0);
    assert_int_equal(kill(old, SIGKILL), 0);
    assert_true(h_wait_running(h, "audit", old, 30000) > 0);
    assert_int_equal(emit(h_conn(h), "agent-c", NULL, 0, 30, &first, &app, why, sizeof why),
                     AOS_OK);
    /* after the records before the kill (aosd may have audited something meanwhile) */
    assert_true(first > size);
    hd = head(h, 1);
    assert_true(hd->tree_size >= size + 30);
    assert_memory_equal(hd->public_key.data, pk, AUDIT_PK_LEN); /* the same key */
    aos__audit__head__free_unpacked(hd, NULL);
    f = verify(h);
    assert_string_equal(f->kind, "ok");
    assert_true(f->records >= size + 30);
    aos__audit__finding__free_unpacked(f, NULL);
    /* the heads file holds the heads, each signed by the key */
    char path[512];
    snprintf(path, sizeof path, "%s/audit/heads", h_data_dir(h));
    FILE *hf = fopen(path, "rb");
    assert_non_null(hf);
    uint8_t hb[AUDIT_STH_LEN];
    int nheads = 0;
    while (fread(hb, 1, sizeof hb, hf) == sizeof hb) {
        audit_sth sth;
        assert_int_equal(audit_sth_decode(hb, sizeof hb, &sth, why, sizeof why), AOS_OK);
        assert_int_equal(audit_sth_verify(&sth, pk, why, sizeof why), AOS_OK);
        nheads++;
    }
    fclose(hf);
    assert_true(nheads >= 2);
    stop(h);
}

/* ---- 2. tampering, each on a fresh log ---------------------------------------------------- */

static void expect_finding(h_aosd *h, const char *kind, uint64_t seq)
{
    Aos__Audit__Finding *f = verify(h);
    if (strcmp(f->kind, kind) || f->seq != seq)
        fail_msg("expected %s at %llu, verify said %s at %llu: %s", kind,
                 (unsigned long long)seq, f->kind, (unsigned long long)f->seq, f->what);
    aos__audit__finding__free_unpacked(f, NULL);
}

static void tamper_altered(void **st)
{
    (void)st;
    h_aosd *h = start_with_log();
    tamper(h, "UPDATE audit.records SET method = 'storage.kv.del' WHERE seq = 100");
    expect_finding(h, "altered", 100);
    /* a proof of it is refused: the stored record is not the one the head covers */
    Aos__Audit__Proof *p;
    char why[AOS_ERRMSG_MAX + 1];
    assert_int_equal(prove(h, 100, 0, &p, why, sizeof why), AOS_ERR_CONFLICT);
    stop(h);
}

static void tamper_deleted(void **st)
{
    (void)st;
    h_aosd *h = start_with_log();
    tamper(h, "DELETE FROM audit.records WHERE seq = 100");
    expect_finding(h, "deleted", 100);
    stop(h);
}

static void tamper_reordered(void **st)
{
    (void)st;
    h_aosd *h = start_with_log();
    tamper(h, "UPDATE audit.records SET seq = 1000000 WHERE seq = 100;"
              "UPDATE audit.records SET seq = 100 WHERE seq = 101;"
              "UPDATE audit.records SET seq = 101 WHERE seq = 1000000");
    expect_finding(h, "reordered", 100);
    stop(h);
}

static void tamper_inserted(void **st)
{
    (void)st;
    h_aosd *h = start_with_log();
    /* the later seqs shifted up one, and a forged record put in at 100 */
    tamper(h, "UPDATE audit.records SET seq = seq + 1000000 WHERE seq >= 100;"
              "UPDATE audit.records SET seq = seq - 1000000 + 1 WHERE seq >= 1000000;"
              "INSERT INTO audit.records SELECT 100, time_ns, kind, agent, run, step, "
              "trace_id, span_id, parent_span_id, 'storage.kv.del', status, latency_us, "
              "'{\"forged\": 1}'::bytea, decode(repeat('00', 32), 'hex'), leaf_hash, "
              "decode(repeat('ee', 32), 'hex'), NULL FROM audit.records WHERE seq = 101");
    expect_finding(h, "inserted", 100);
    stop(h);
}

static void tamper_truncated(void **st)
{
    (void)st;
    h_aosd *h = start_with_log();
    tamper(h, "DELETE FROM audit.records WHERE seq > 250");
    expect_finding(h, "truncated", 251);
    /* and the writer refuses to append to it rather than hide the cut */
    char why[AOS_ERRMSG_MAX + 1];
    pid_t old = h_child(h, "audit", NULL);
    assert_int_equal(kill(old, SIGKILL), 0);
    assert_true(h_wait_running(h, "audit", old, 30000) > 0);
    aos_err e = emit(h_conn(h), "agent-t", NULL, 0, 1, NULL, NULL, why, sizeof why);
    assert_int_not_equal(e, AOS_OK);
    print_message("emit to a truncated log: %s: %s\n", aos_err_name(e), why);
    expect_finding(h, "truncated", 251);
    stop(h);
}

/* ---- 3. crashes under load ---------------------------------------------------------------- */

typedef struct emitter {
    h_aosd *h;
    int w;
    atomic_int *stop;
    long acked;       /* calls 0..acked-1 acknowledged, PER_CALL events each */
    long retries;
    int fatal;
    char why[AOS_ERRMSG_MAX + 1];
} emitter;

static int transient(aos_err e)
{
    return e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_CANCELLED;
}

static void *emitter_main(void *arg)
{
    emitter *em = arg;
    char url[AOS_PATH_MAX + 16], prefix[32];
    aos_conn *c;
    aos_control_url(h_data_dir(em->h), url, sizeof url);
    if (aos_connect(url, &c, em->why, sizeof em->why) != AOS_OK) {
        em->fatal = 1;
        return NULL;
    }
    snprintf(prefix, sizeof prefix, "w%d", em->w);
    char agent[32];
    snprintf(agent, sizeof agent, "emitter-%d", em->w);
    for (long n = 0; !atomic_load(em->stop); n++) {
        /* one logical emit, re-sent with the same keys until it is answered */
        uint64_t end = aos_mono_ms() + RETRY_FOR_MS;
        for (;;) {
            aos_err e = emit(c, agent, prefix, n * PER_CALL, PER_CALL, NULL, NULL, em->why,
                             sizeof em->why);
            if (e == AOS_OK)
                break;
            if (!transient(e) || aos_mono_ms() > end) {
                em->fatal = 1;
                char w[AOS_ERRMSG_MAX + 1];
                snprintf(w, sizeof w, "%s", em->why);
                snprintf(em->why, sizeof em->why, "%s: %.400s", aos_err_name(e), w);
                aos_close(c);
                return NULL;
            }
            em->retries++;
            usleep(20 * 1000);
        }
        em->acked = n + 1;
    }
    aos_close(c);
    return NULL;
}

/* 8 emitters; victim ("audit" or "postgres") is killed twice meanwhile. Afterwards every
 * acknowledged event is in the log exactly once, and the log verifies. */
static void kill9_under_emitters(const char *victim)
{
    h_aosd *h = h_start(NULL);
    atomic_int quit = 0;
    emitter em[EMITTERS];
    pthread_t t[EMITTERS];
    for (int i = 0; i < EMITTERS; i++) {
        em[i] = (emitter){.h = h, .w = i, .stop = &quit};
        assert_int_equal(pthread_create(&t[i], NULL, emitter_main, &em[i]), 0);
    }
    for (int round = 0; round < 2; round++) {
        usleep(700 * 1000);
        pid_t old = h_child(h, victim, NULL);
        assert_true(old > 0);
        assert_int_equal(kill(old, SIGKILL), 0);
        pid_t now = h_wait_running(h, victim, old, 60000);
        if (now <= 0)
            h_dump_log(h);
        assert_true(now > 0);
    }
    usleep(1000 * 1000);
    atomic_store(&quit, 1);
    long acked = 0, retries = 0;
    for (int i = 0; i < EMITTERS; i++) {
        pthread_join(t[i], NULL);
        if (em[i].fatal)
            fail_msg("emitter %d: %s", i, em[i].why);
        acked += em[i].acked;
        retries += em[i].retries;
    }
    print_message("%s killed twice: %ld calls (%ld events) acknowledged, %ld re-sent\n",
                  victim, acked, acked * PER_CALL, retries);
    print_stats(h); /* duplicates: events of re-sent emits found in the log already */
    assert_true(acked > 0);
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    for (int i = 0; i < EMITTERS; i++) {
        char sql[256];
        /* every acknowledged key once; keys past it (answered after the stop) at most once */
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM audit.records WHERE key ~ '^w%d/[0-9]+$' "
                 "AND split_part(key, '/', 2)::bigint < %ld",
                 i, em[i].acked * PER_CALL);
        assert_int_equal(su_count(pg, sql), em[i].acked * PER_CALL);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) - count(DISTINCT key) FROM audit.records "
                 "WHERE key LIKE 'w%d/%%'",
                 i);
        assert_int_equal(su_count(pg, sql), 0);
    }
    /* no record twice: every (agent, step) pair of the emitters is unique too */
    assert_int_equal(su_count(pg, "SELECT count(*) FROM (SELECT agent, step FROM audit.records "
                                  "WHERE agent LIKE 'emitter-%' GROUP BY agent, step "
                                  "HAVING count(*) > 1) d"),
                     0);
    PQfinish(pg);
    Aos__Audit__Head *hd = head(h, 1);
    aos__audit__head__free_unpacked(hd, NULL);
    Aos__Audit__Finding *f = verify(h);
    assert_string_equal(f->kind, "ok");
    aos__audit__finding__free_unpacked(f, NULL);
    stop(h);
}

static void kill9_audit_under_emitters(void **st)
{
    (void)st;
    kill9_under_emitters("audit");
}

static void kill9_postgres_under_emitters(void **st)
{
    (void)st;
    kill9_under_emitters("postgres");
}

/* ---- 4. hostile input ----------------------------------------------------------------------- */

static aos_err raw_emit(h_aosd *h, const uint8_t *b, size_t n, char *why, size_t whylen)
{
    aos_reply r;
    aos_err e = aos_call(h_conn(h), NULL, "audit.emit", b, n, &r);
    snprintf(why, whylen, "%s", r.error);
    aos_reply_clear(&r);
    return e;
}

static void bad_input(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    char why[AOS_ERRMSG_MAX + 1];
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    assert_int_equal(raw_emit(h, junk, sizeof junk, why, sizeof why), AOS_ERR_PROTO);

    /* one event at a time, each with one bad field */
    static const uint8_t trace19[19] = {1};
    for (int c = 0; c < 7; c++) {
        Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT;
        ev.kind = (ProtobufCBinaryData){7, (uint8_t *)"syscall"};
        ev.agent = (ProtobufCBinaryData){5, (uint8_t *)"agent"};
        char big[80];
        memset(big, 'a', sizeof big);
        switch (c) {
        case 0: ev.agent = (ProtobufCBinaryData){4, (uint8_t *)"ab\xc3\x28"}; break;
        case 1: ev.trace_id = (ProtobufCBinaryData){19, (uint8_t *)trace19}; break;
        case 2: ev.kind = (ProtobufCBinaryData){7, (uint8_t *)"SysCall"}; break;
        case 3: ev.span_id = (ProtobufCBinaryData){3, (uint8_t *)"abc"}; break;
        case 4: ev.method = (ProtobufCBinaryData){sizeof big, (uint8_t *)big}; break;
        case 5: ev.key = (ProtobufCBinaryData){3, (uint8_t *)"a\0b"}; break;
        case 6: ev.kind = (ProtobufCBinaryData){0, NULL}; break;
        }
        Aos__Audit__Event *evp = &ev;
        Aos__Audit__EmitRequest r = AOS__AUDIT__EMIT_REQUEST__INIT;
        r.n_events = 1;
        r.events = &evp;
        uint8_t b[512];
        size_t n = aos__audit__emit_request__pack(&r, b);
        aos_err e = raw_emit(h, b, n, why, sizeof why);
        print_message("bad event %d: %s: %s\n", c, aos_err_name(e), why);
        assert_int_equal(e, AOS_ERR_USAGE);
    }
    /* no events, and 1025 */
    assert_int_equal(raw_emit(h, NULL, 0, why, sizeof why), AOS_ERR_USAGE);
    uint8_t *b;
    size_t n = pack_emit("agent", NULL, 0, 1025, &b);
    assert_int_equal(raw_emit(h, b, n, why, sizeof why), AOS_ERR_USAGE);
    free(b);
    /* hostile reads */
    static const uint8_t tail_bad[] = {0x22, 0x03, 'a', 'b', 'c'}; /* trace_id of 3 bytes */
    aos_reply r;
    assert_int_equal(aos_call(h_conn(h), NULL, "audit.tail", tail_bad, sizeof tail_bad, &r),
                     AOS_ERR_USAGE);
    aos_reply_clear(&r);
    assert_int_equal(aos_call(h_conn(h), NULL, "audit.prove", junk, sizeof junk, &r),
                     AOS_ERR_PROTO);
    aos_reply_clear(&r);
    Aos__Audit__Proof *p;
    assert_int_equal(prove(h, 0, 0, &p, why, sizeof why), AOS_ERR_USAGE);
    /* nothing was appended, and the server is alive: 1024 events go in */
    pid_t pid = h_child(h, "audit", NULL);
    n = pack_emit("agent", NULL, 0, 1024, &b);
    assert_int_equal(raw_emit(h, b, n, why, sizeof why), AOS_OK);
    free(b);
    assert_int_equal(h_child(h, "audit", NULL), pid);
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.records WHERE agent <> 'agent'"),
                     0);
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.records WHERE agent = 'agent'"),
                     1024);
    PQfinish(pg);
    stop(h);
}

/* ---- 5. the role and the key ------------------------------------------------------------- */

static const char *psql_bin(void)
{
    return access("/usr/lib/postgresql/15/bin/psql", X_OK) == 0
               ? "/usr/lib/postgresql/15/bin/psql"
               : "/usr/bin/psql";
}

/* sql as aos_audit, from aos-audit's own uid (peer authentication): what a compromised
 * aos-audit could do. Returns psql's exit code; its output (errors too) into out. */
static int as_audit(h_aosd *h, const char *sql, char *out, size_t cap)
{
    char sock[300];
    snprintf(sock, sizeof sock, "%s/pgsock", h_data_dir(h));
    const char *argv[] = {psql_bin(), "-X", "-w", "-q", "-h", sock, "-p", "5432", "-U",
                          "aos_audit", "-d", "aos", "-v", "ON_ERROR_STOP=1", "-tAc", sql,
                          NULL};
    return h_run_as("aos-audit", argv, out, cap, 20000);
}

static void the_audit_role_appends_and_reads_only(void **st)
{
    (void)st;
    char why[256];
    if (h_privsep_skip_reason(why, sizeof why)) {
        print_message("skipped: %s\n", why);
        skip();
    }
    h_aosd *h = start_with_log();
    char out[4096];
    int rc = as_audit(h, "SELECT count(*) FROM audit.records", out, sizeof out);
    assert_int_equal(rc, 0);
    assert_true(atol(out) >= 300);
    static const char *const refused[] = {
        "UPDATE audit.records SET method = 'x' WHERE seq = 5",
        "DELETE FROM audit.records WHERE seq = 5",
        "TRUNCATE audit.records",
        "UPDATE audit.heads SET time_ns = 0",
        "DELETE FROM audit.heads",
        "TRUNCATE audit.heads",
        "UPDATE audit.contents SET size = 0",
        "DELETE FROM audit.contents",
        "TRUNCATE audit.contents",
        "DROP TABLE audit.records",
        "ALTER TABLE audit.records DISABLE TRIGGER ALL",
        "SET session_replication_role = replica",
        "DROP TRIGGER records_append_only ON audit.records",
        "CREATE TABLE audit.shadow (x int)",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        rc = as_audit(h, refused[i], out, sizeof out);
        print_message("as aos_audit: %s -> rc %d: %s", refused[i], rc, out);
        assert_int_not_equal(rc, 0);
        assert_true(strstr(out, "permission denied") || strstr(out, "must be owner") ||
                    strstr(out, "append-only"));
    }
    Aos__Audit__Finding *f = verify(h);
    assert_string_equal(f->kind, "ok"); /* nothing changed */
    aos__audit__finding__free_unpacked(f, NULL);
    stop(h);
}

static void a_damaged_key_stops_the_server_with_a_reason(void **st)
{
    (void)st;
    const char *args[] = {"--restart-intensity", "3/60", NULL};
    h_aosd *h = h_start(args);
    char why[AOS_ERRMSG_MAX + 1], path[512];
    assert_int_equal(emit(h_conn(h), "agent-k", NULL, 0, 10, NULL, NULL, why, sizeof why),
                     AOS_OK);
    Aos__Audit__Head *hd = head(h, 1);
    aos__audit__head__free_unpacked(hd, NULL);
    snprintf(path, sizeof path, "%s/audit/head.key", h_data_dir(h));
    uint8_t key[AUDIT_KEY_LEN], junk[AUDIT_KEY_LEN];
    FILE *kf = fopen(path, "r+b");
    assert_non_null(kf);
    assert_int_equal(fread(key, 1, sizeof key, kf), sizeof key);
    memcpy(junk, key, sizeof junk);
    junk[40] ^= 0x55; /* the public half no longer the seed's */
    rewind(kf);
    assert_int_equal(fwrite(junk, 1, sizeof junk, kf), sizeof junk);
    fclose(kf);
    pid_t old = h_child(h, "audit", NULL);
    assert_int_equal(kill(old, SIGKILL), 0);
    assert_true(h_wait_state(h, "audit", "failed", 60000));
    assert_true(h_log_count(h, "head.key is damaged") >= 1);
    /* the key restored, an operator brings it back and the log goes on verifying */
    kf = fopen(path, "r+b");
    assert_non_null(kf);
    assert_int_equal(fwrite(key, 1, sizeof key, kf), sizeof key);
    fclose(kf);
    const char *rs[] = {"server", "restart", "aos-audit", NULL};
    assert_int_equal(h_aosctl(h, NULL, 0, rs), 0);
    assert_true(h_wait_running(h, "audit", 0, 20000) > 0);
    assert_int_equal(emit(h_conn(h), "agent-k", NULL, 10, 10, NULL, NULL, why, sizeof why),
                     AOS_OK);
    hd = head(h, 1);
    assert_true(hd->tree_size >= 20); /* aosd audits the restart itself too */
    aos__audit__head__free_unpacked(hd, NULL);
    Aos__Audit__Finding *f = verify(h);
    assert_string_equal(f->kind, "ok");
    assert_true(f->heads_checked >= 2);
    aos__audit__finding__free_unpacked(f, NULL);
    stop(h);
}

/* ---- figures (AOS_AUDIT_BENCH=1 only: no timing is asserted) -------------------------------- */

typedef struct bench {
    h_aosd *h;
    int w;
    long calls;
    size_t per;
} bench;

static void *bench_main(void *arg)
{
    bench *b = arg;
    char url[AOS_PATH_MAX + 16], why[AOS_ERRMSG_MAX + 1], prefix[32];
    aos_conn *c;
    aos_control_url(h_data_dir(b->h), url, sizeof url);
    if (aos_connect(url, &c, why, sizeof why) != AOS_OK)
        return NULL;
    snprintf(prefix, sizeof prefix, "b%d", b->w);
    for (long n = 0; n < b->calls; n++)
        if (emit(c, "bench", prefix, n * (long)b->per, b->per, NULL, NULL, why, sizeof why) !=
            AOS_OK)
            break;
    aos_close(c);
    return NULL;
}

static double secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void figures(void **st)
{
    (void)st;
    if (!getenv("AOS_AUDIT_BENCH"))
        skip();
    h_aosd *h = h_start(NULL);
    const struct {
        int threads;
        size_t per;
        long calls;
    } runs[] = {{1, 1, 2000}, {1, 100, 400}, {1, 1000, 100}, {8, 1, 1000}, {8, 100, 100},
                {8, 1000, 20}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        bench b[EMITTERS];
        pthread_t t[EMITTERS];
        double t0 = secs();
        for (int i = 0; i < runs[r].threads; i++) {
            b[i] = (bench){h, (int)(r * 100 + (size_t)i), runs[r].calls, runs[r].per};
            pthread_create(&t[i], NULL, bench_main, &b[i]);
        }
        for (int i = 0; i < runs[r].threads; i++)
            pthread_join(t[i], NULL);
        double dt = secs() - t0;
        double ev = (double)runs[r].threads * (double)runs[r].calls * (double)runs[r].per;
        print_message("emit: %d producer(s), %zu events per call: %.0f events/s\n",
                      runs[r].threads, runs[r].per, ev / dt);
        print_stats(h);
    }
    Aos__Audit__Head *hd = head(h, 1);
    aos__audit__head__free_unpacked(hd, NULL);
    double t0 = secs();
    Aos__Audit__Finding *f = verify(h);
    double dt = secs() - t0;
    print_message("verify: %llu records in %.2f s: %.0f records/s\n",
                  (unsigned long long)f->records, dt, (double)f->records / dt);
    assert_string_equal(f->kind, "ok");
    aos__audit__finding__free_unpacked(f, NULL);
    stop(h);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    if (getenv("AOS_AUDIT_TEST_ONLY")) /* one case by name, while working on it */
        cmocka_set_test_filter(getenv("AOS_AUDIT_TEST_ONLY"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(emit_verify_prove),
        cmocka_unit_test(bad_input),
        cmocka_unit_test(tamper_altered),
        cmocka_unit_test(tamper_deleted),
        cmocka_unit_test(tamper_reordered),
        cmocka_unit_test(tamper_inserted),
        cmocka_unit_test(tamper_truncated),
        cmocka_unit_test(kill9_audit_under_emitters),
        cmocka_unit_test(kill9_postgres_under_emitters),
        cmocka_unit_test(the_audit_role_appends_and_reads_only),
        cmocka_unit_test(a_damaged_key_stops_the_server_with_a_reason),
        cmocka_unit_test(figures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
