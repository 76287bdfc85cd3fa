/* Every storage handler against a real PostgreSQL (a throwaway cluster): results, errors,
 * idempotent replays, isolation between agents, batching under concurrency, crashes. */
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <sodium.h>

#include "batch.h"
#include "notify.h"
#include "ops.h"
#include "schema.h"
#include "storage.pb-c.h"
#include "testpg.h"

typedef struct T {
    testpg *pg;
    PGconn *db;       /* as aos_storage, like a worker */
    PGconn *admin;    /* as aos_admin, to look behind the handlers' back */
    char dsn[256];
    stg st;
} T;

static T *T_;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    char why[512];
    T *t = calloc(1, sizeof *t);
    if (sodium_init() < 0)
        return -1;
    t->pg = testpg_start(why, sizeof why);
    if (!t->pg) {
        fprintf(stderr, "skipping: %s\n", why);
        free(t);
        *state = NULL;
        return 0;
    }
    if (srv_pg_migrate(testpg_dsn(t->pg, "aos_admin"), &stg_schema, why, sizeof why)) {
        fprintf(stderr, "migrate: %s\n", why);
        return -1;
    }
    /* a second run of the migrations is a no-op */
    if (srv_pg_migrate(testpg_dsn(t->pg, "aos_admin"), &stg_schema, why, sizeof why)) {
        fprintf(stderr, "migrate again: %s\n", why);
        return -1;
    }
    t->admin = PQconnectdb(testpg_dsn(t->pg, "aos_admin"));
    snprintf(t->dsn, sizeof t->dsn, "%s", testpg_dsn(t->pg, "aos_storage"));
    t->db = PQconnectdb(t->dsn);
    if (PQstatus(t->db) != CONNECTION_OK || PQstatus(t->admin) != CONNECTION_OK)
        return -1;
    if (stg_cfg_load(&t->st.cfg, why, sizeof why))
        return -1;
    t->st.cfg.value_max = 4096;
    t->st.cfg.blob_quota = 20000;
    t->st.cfg.max_tries = 3;
    t->st.max_waiting = 4;
    t->st.puts = batcher_new(1, 1);
    t->st.gets = stg_get_batcher_new(1);
    t->st.notify = notify_new(t->dsn, 0);
    T_ = t;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    T *t = *state;
    if (!t)
        return 0;
    notify_free(t->st.notify);
    batcher_free(t->st.puts);
    batcher_free(t->st.gets);
    PQfinish(t->db);
    PQfinish(t->admin);
    testpg_stop(t->pg);
    free(t);
    return 0;
}

#define NEED_PG(state)                                                                     \
    T *t = *(state);                                                                       \
    if (!t)                                                                                \
        skip();

/* One call of a handler as agent with m as the payload; rid NULL: a fresh request id.
 * No cmocka asserts here: threads use it. */
static aos_err call_raw(T *t, PGconn *db, const char *agent, const char *op, stg_fn fn,
                        const ProtobufCMessage *m, const uint8_t *rid, srv_reply *rep)
{
    uint8_t fresh[AOS_ID_LEN];
    aos_id_random(fresh);
    size_t n = m ? protobuf_c_message_get_packed_size(m) : 0;
    uint8_t *buf = malloc(n + 1);
    if (m)
        protobuf_c_message_pack(m, buf);
    memset(rep, 0, sizeof *rep);
    stg_call c = {.st = &t->st, .db = db, .agent = agent, .request_id = rid ? rid : fresh,
                  .op = op, .payload = buf, .len = n, .rep = rep};
    aos_err e = fn(&c);
    free(buf);
    return e;
}

static aos_err call_on(T *t, PGconn *db, const char *agent, const char *op, stg_fn fn,
                       const ProtobufCMessage *m, const uint8_t *rid, srv_reply *rep)
{
    aos_err e = call_raw(t, db, agent, op, fn, m, rid, rep);
    if (e == AOS_ERR_OK)
        assert_string_equal(rep->error, "");
    else
        assert_true(rep->error[0] != 0);   /* a refusal always says why */
    return e;
}

static aos_err call(T *t, const char *agent, const char *op, stg_fn fn,
                    const ProtobufCMessage *m, const uint8_t *rid, srv_reply *rep)
{
    return call_on(t, t->db, agent, op, fn, m, rid, rep);
}

static void done(srv_reply *rep)
{
    free(rep->payload);
    rep->payload = NULL;
}

static ProtobufCBinaryData S(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static long long admin_count(T *t, const char *sql)
{
    PGresult *r = PQexec(t->admin, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* ---- kv ------------------------------------------------------------------------------ */

static aos_err put(T *t, const char *agent, const char *key, const char *val, int cas,
                   uint64_t ifv, uint64_t *version, srv_reply *rep)
{
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key = S(key);
    rq.value = S(val);
    rq.cas = cas;
    rq.if_version = ifv;
    aos_err e = call(t, agent, "kv.put", op_kv_put, &rq.base, NULL, rep);
    if (!e && version) {
        Aos__Storage__KvPutReply *rp =
            aos__storage__kv_put_reply__unpack(NULL, rep->len, rep->payload);
        assert_non_null(rp);
        *version = rp->version;
        aos__storage__kv_put_reply__free_unpacked(rp, NULL);
    }
    done(rep);
    return e;
}

/* Get key's value into out (cap), or the error. */
static aos_err get(T *t, const char *agent, const char *key, char *out, size_t cap,
                   uint64_t *version)
{
    srv_reply rep;
    Aos__Storage__KvGetRequest rq = AOS__STORAGE__KV_GET_REQUEST__INIT;
    rq.key = S(key);
    aos_err e = call(t, agent, "kv.get", op_kv_get, &rq.base, NULL, &rep);
    if (!e) {
        Aos__Storage__KvGetReply *rp =
            aos__storage__kv_get_reply__unpack(NULL, rep.len, rep.payload);
        assert_non_null(rp);
        snprintf(out, cap, "%.*s", (int)rp->value.len, (const char *)rp->value.data);
        if (version)
            *version = rp->version;
        aos__storage__kv_get_reply__free_unpacked(rp, NULL);
    }
    done(&rep);
    return e;
}

static void test_kv_basic(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    uint64_t v;
    char buf[64];
    assert_int_equal(put(t, "a1", "greeting", "hello", 0, 0, &v, &rep), AOS_ERR_OK);
    assert_int_equal(v, 1);
    assert_int_equal(get(t, "a1", "greeting", buf, sizeof buf, &v), AOS_ERR_OK);
    assert_string_equal(buf, "hello");
    assert_int_equal(v, 1);
    assert_int_equal(put(t, "a1", "greeting", "hi", 0, 0, &v, &rep), AOS_ERR_OK);
    assert_int_equal(v, 2);
    assert_int_equal(get(t, "a1", "greeting", buf, sizeof buf, &v), AOS_ERR_OK);
    assert_string_equal(buf, "hi");
    /* an empty value is a value */
    assert_int_equal(put(t, "a1", "empty", "", 0, 0, &v, &rep), AOS_ERR_OK);
    assert_int_equal(get(t, "a1", "empty", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_string_equal(buf, "");

    Aos__Storage__KvDeleteRequest d = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
    d.key = S("greeting");
    assert_int_equal(call(t, "a1", "kv.delete", op_kv_delete, &d.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
    assert_int_equal(get(t, "a1", "greeting", buf, sizeof buf, NULL), AOS_ERR_NOT_FOUND);
    assert_int_equal(call(t, "a1", "kv.delete", op_kv_delete, &d.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(rep.error, "greeting"));
    done(&rep);
    /* a deleted key starts again at version 1 */
    assert_int_equal(put(t, "a1", "greeting", "again", 0, 0, &v, &rep), AOS_ERR_OK);
    assert_int_equal(v, 1);
}

static void test_kv_cas(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    uint64_t v;
    char buf[64];
    assert_int_equal(put(t, "a1", "cas", "one", 1, 0, &v, &rep), AOS_ERR_OK);
    assert_int_equal(v, 1);
    assert_int_equal(put(t, "a1", "cas", "dup", 1, 0, &v, &rep), AOS_ERR_CONFLICT);
    assert_int_equal(put(t, "a1", "cas", "two", 1, 1, &v, &rep), AOS_ERR_OK);
    assert_int_equal(v, 2);
    /* stale version: refused, says where the key is, and changes nothing */
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key = S("cas");
    rq.value = S("stale");
    rq.cas = 1;
    rq.if_version = 1;
    assert_int_equal(call(t, "a1", "kv.put", op_kv_put, &rq.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    assert_non_null(strstr(rep.error, "version 2"));
    done(&rep);
    assert_int_equal(get(t, "a1", "cas", buf, sizeof buf, &v), AOS_ERR_OK);
    assert_string_equal(buf, "two");
    assert_int_equal(v, 2);
    /* cas on a key that does not exist */
    assert_int_equal(put(t, "a1", "nothere", "x", 1, 3, &v, &rep), AOS_ERR_CONFLICT);
    assert_int_equal(get(t, "a1", "nothere", buf, sizeof buf, NULL), AOS_ERR_NOT_FOUND);
    /* if_version without cas is a mistake, not a silent overwrite */
    assert_int_equal(put(t, "a1", "cas", "x", 0, 2, &v, &rep), AOS_ERR_USAGE);
    /* delete with a stale version */
    Aos__Storage__KvDeleteRequest d = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
    d.key = S("cas");
    d.cas = 1;
    d.if_version = 1;
    assert_int_equal(call(t, "a1", "kv.delete", op_kv_delete, &d.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    done(&rep);
    d.if_version = 2;
    assert_int_equal(call(t, "a1", "kv.delete", op_kv_delete, &d.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
}

static void test_kv_ttl(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    uint64_t v;
    char buf[64];
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key = S("short");
    rq.value = S("lived");
    rq.ttl_ms = 60000;
    assert_int_equal(call(t, "a1", "kv.put", op_kv_put, &rq.base, NULL, &rep), AOS_ERR_OK);
    done(&rep);
    assert_int_equal(get(t, "a1", "short", buf, sizeof buf, NULL), AOS_ERR_OK);
    rq.value = S("gone");
    rq.ttl_ms = 1;
    assert_int_equal(call(t, "a1", "kv.put", op_kv_put, &rq.base, NULL, &rep), AOS_ERR_OK);
    done(&rep);
    nap_ms(30);
    assert_int_equal(get(t, "a1", "short", buf, sizeof buf, NULL), AOS_ERR_NOT_FOUND);
    /* listing skips it; cas "must not exist" succeeds over it; versions restart */
    assert_int_equal(put(t, "a1", "short", "new", 1, 0, &v, &rep), AOS_ERR_OK);
    assert_int_equal(v, 1);
    rq.key = S("short");
    rq.ttl_ms = (UINT64_C(11) * 366 * 24 * 3600 * 1000);
    assert_int_equal(call(t, "a1", "kv.put", op_kv_put, &rq.base, NULL, &rep), AOS_ERR_USAGE);
    done(&rep);
}

static void test_sweep(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key = S("swept");
    rq.value = S("soon gone");
    rq.ttl_ms = 1;
    assert_int_equal(call(t, "sweeper", "kv.put", op_kv_put, &rq.base, NULL, &rep), AOS_ERR_OK);
    done(&rep);
    nap_ms(20);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.kv WHERE agent = 'sweeper'"),
                     1);
    /* old idempotency records go too: age one artificially */
    PGresult *r = PQexec(t->admin, "UPDATE storage.idem SET created_at = now() - "
                                   "interval '2 days' WHERE agent = 'sweeper'");
    PQclear(r);
    atomic_store(&t->st.last_sweep_ms, 0);
    stg_call c = {.st = &t->st, .db = t->db, .agent = "sweeper", .op = "kv.get", .rep = &rep};
    stg_sweep(&c);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.kv WHERE agent = 'sweeper'"),
                     0);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.idem WHERE agent = "
                                    "'sweeper'"), 0);
    /* and not again within ten seconds */
    assert_true(atomic_load(&t->st.last_sweep_ms) > 0);
}

static void test_kv_list(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    char key[32];
    for (int i = 0; i < 25; i++) {
        snprintf(key, sizeof key, "page/%02d", i);
        assert_int_equal(put(t, "lister", key, "v", 0, 0, NULL, &rep), AOS_ERR_OK);
    }
    assert_int_equal(put(t, "lister", "pagf", "v", 0, 0, NULL, &rep), AOS_ERR_OK);
    assert_int_equal(put(t, "lister", "pag", "v", 0, 0, NULL, &rep), AOS_ERR_OK);
    Aos__Storage__KvListRequest rq = AOS__STORAGE__KV_LIST_REQUEST__INIT;
    rq.prefix = S("page/");
    rq.limit = 10;
    int seen = 0, pages = 0;
    uint8_t after[64];
    for (;;) {
        assert_int_equal(call(t, "lister", "kv.list", op_kv_list, &rq.base, NULL, &rep),
                         AOS_ERR_OK);
        Aos__Storage__KvListReply *rp =
            aos__storage__kv_list_reply__unpack(NULL, rep.len, rep.payload);
        assert_non_null(rp);
        for (size_t i = 0; i < rp->n_entries; i++) {
            snprintf(key, sizeof key, "page/%02d", seen++);
            assert_int_equal(rp->entries[i]->key.len, strlen(key));
            assert_memory_equal(rp->entries[i]->key.data, key, strlen(key));
            assert_int_equal(rp->entries[i]->size, 1);
            assert_int_equal(rp->entries[i]->value.len, 0);   /* not asked for */
        }
        pages++;
        size_t nl = rp->next.len;
        if (nl)
            memcpy(after, rp->next.data, nl);
        aos__storage__kv_list_reply__free_unpacked(rp, NULL);
        done(&rep);
        if (!nl)
            break;
        rq.after.data = after;
        rq.after.len = nl;
    }
    assert_int_equal(seen, 25);
    assert_int_equal(pages, 3);
    /* with values, no prefix: everything of the agent */
    memset(&rq, 0, sizeof rq);
    aos__storage__kv_list_request__init(&rq);
    rq.values = 1;
    rq.limit = 1000;
    assert_int_equal(call(t, "lister", "kv.list", op_kv_list, &rq.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__KvListReply *rp =
        aos__storage__kv_list_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(rp->n_entries, 27);
    assert_int_equal(rp->entries[0]->value.len, 1);
    aos__storage__kv_list_reply__free_unpacked(rp, NULL);
    done(&rep);
    rq.limit = 1001;
    assert_int_equal(call(t, "lister", "kv.list", op_kv_list, &rq.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);
}

static void test_kv_incr(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    char buf[64];
    Aos__Storage__KvIncrRequest rq = AOS__STORAGE__KV_INCR_REQUEST__INIT;
    rq.key = S("counter");
    rq.delta = 5;
    assert_int_equal(call(t, "a1", "kv.incr", op_kv_incr, &rq.base, NULL, &rep), AOS_ERR_OK);
    done(&rep);
    rq.delta = -7;
    assert_int_equal(call(t, "a1", "kv.incr", op_kv_incr, &rq.base, NULL, &rep), AOS_ERR_OK);
    Aos__Storage__KvIncrReply *rp =
        aos__storage__kv_incr_reply__unpack(NULL, rep.len, rep.payload);
    assert_non_null(rp);
    assert_int_equal(rp->value, -2);
    assert_int_equal(rp->version, 2);
    aos__storage__kv_incr_reply__free_unpacked(rp, NULL);
    done(&rep);
    assert_int_equal(get(t, "a1", "counter", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_string_equal(buf, "-2");
    /* not a number */
    assert_int_equal(put(t, "a1", "word", "abc", 0, 0, NULL, &rep), AOS_ERR_OK);
    rq.key = S("word");
    assert_int_equal(call(t, "a1", "kv.incr", op_kv_incr, &rq.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    assert_non_null(strstr(rep.error, "not a decimal integer"));
    done(&rep);
    /* overflow */
    assert_int_equal(put(t, "a1", "max", "9223372036854775807", 0, 0, NULL, &rep),
                     AOS_ERR_OK);
    rq.key = S("max");
    rq.delta = 1;
    assert_int_equal(call(t, "a1", "kv.incr", op_kv_incr, &rq.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    done(&rep);
    assert_int_equal(get(t, "a1", "max", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_string_equal(buf, "9223372036854775807");
}

/* ---- idempotency ------------------------------------------------------------------- */

static void test_idempotent_replay(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    Aos__Storage__KvIncrRequest rq = AOS__STORAGE__KV_INCR_REQUEST__INIT;
    rq.key = S("once");
    rq.delta = 1;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(call(t, "a1", "kv.incr", op_kv_incr, &rq.base, rid, &rep),
                         AOS_ERR_OK);
        Aos__Storage__KvIncrReply *rp =
            aos__storage__kv_incr_reply__unpack(NULL, rep.len, rep.payload);
        assert_int_equal(rp->value, 1);   /* the recorded reply, not a second increment */
        aos__storage__kv_incr_reply__free_unpacked(rp, NULL);
        done(&rep);
    }
    char buf[32];
    assert_int_equal(get(t, "a1", "once", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_string_equal(buf, "1");
    /* the same id for a different request is refused */
    rq.delta = 2;
    assert_int_equal(call(t, "a1", "kv.incr", op_kv_incr, &rq.base, rid, &rep),
                     AOS_ERR_CONFLICT);
    assert_non_null(strstr(rep.error, "different request"));
    done(&rep);
    /* ... and another agent using it is another key entirely */
    rq.delta = 1;
    assert_int_equal(call(t, "a2", "kv.incr", op_kv_incr, &rq.base, rid, &rep), AOS_ERR_OK);
    done(&rep);

    /* a transaction-path op (doc.put) replays too */
    aos_id_random(rid);
    Aos__Storage__DocPutRequest d = AOS__STORAGE__DOC_PUT_REQUEST__INIT;
    d.collection = S("c");
    d.id = S("once");
    d.json = S("{\"n\": 1}");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(call(t, "a1", "doc.put", op_doc_put, &d.base, rid, &rep), AOS_ERR_OK);
        Aos__Storage__DocPutReply *rp =
            aos__storage__doc_put_reply__unpack(NULL, rep.len, rep.payload);
        assert_int_equal(rp->version, 1);
        aos__storage__doc_put_reply__free_unpacked(rp, NULL);
        done(&rep);
    }
    /* a failed request is not recorded: nothing was applied, a retry may run it */
    aos_id_random(rid);
    Aos__Storage__KvPutRequest p = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    p.key = S("late");
    p.value = S("x");
    p.cas = 1;
    p.if_version = 1;
    assert_int_equal(call(t, "a1", "kv.put", op_kv_put, &p.base, rid, &rep), AOS_ERR_CONFLICT);
    done(&rep);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.idem WHERE method = 'kv.put' "
                                    "AND status IS NULL"), 0);
    /* a mutation without a request id is refused */
    memset(&rep, 0, sizeof rep);
    uint8_t buf2[64];
    size_t n = protobuf_c_message_pack(&p.base, buf2);
    stg_call c = {.st = &t->st, .db = t->db, .agent = "a1", .op = "kv.put", .payload = buf2,
                  .len = n, .rep = &rep};
    assert_int_equal(op_kv_put(&c), AOS_ERR_USAGE);
    assert_non_null(strstr(rep.error, "request id"));
}

/* ---- hostile input and isolation ------------------------------------------------------ */

static void test_isolation(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    char buf[64];
    assert_int_equal(put(t, "alice", "secret", "alice's", 0, 0, NULL, &rep), AOS_ERR_OK);
    assert_int_equal(get(t, "bob", "secret", buf, sizeof buf, NULL), AOS_ERR_NOT_FOUND);
    Aos__Storage__KvListRequest l = AOS__STORAGE__KV_LIST_REQUEST__INIT;
    assert_int_equal(call(t, "bob", "kv.list", op_kv_list, &l.base, NULL, &rep), AOS_ERR_OK);
    Aos__Storage__KvListReply *lr =
        aos__storage__kv_list_reply__unpack(NULL, rep.len, rep.payload);
    for (size_t i = 0; i < lr->n_entries; i++)
        assert_memory_not_equal(lr->entries[i]->key.data, "secret", 6);
    aos__storage__kv_list_reply__free_unpacked(lr, NULL);
    done(&rep);
    Aos__Storage__KvDeleteRequest d = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
    d.key = S("secret");
    assert_int_equal(call(t, "bob", "kv.delete", op_kv_delete, &d.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    done(&rep);
    /* bob writing the same key writes his own */
    assert_int_equal(put(t, "bob", "secret", "bob's", 0, 0, NULL, &rep), AOS_ERR_OK);
    assert_int_equal(get(t, "alice", "secret", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_string_equal(buf, "alice's");
    /* no agent at all */
    assert_int_equal(get(t, "", "secret", buf, sizeof buf, NULL), AOS_ERR_USAGE);
}

static void test_hostile(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    long long before = admin_count(t, "SELECT count(*) FROM storage.kv");
    /* oversized value */
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = 0;
    assert_int_equal(put(t, "a1", "big", big, 0, 0, NULL, &rep), AOS_ERR_TOO_BIG);
    free(big);
    /* non-UTF-8 key */
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key.data = (uint8_t *)"k\xff\xfe";
    rq.key.len = 3;
    rq.value = S("v");
    assert_int_equal(call(t, "a1", "kv.put", op_kv_put, &rq.base, NULL, &rep), AOS_ERR_USAGE);
    assert_non_null(strstr(rep.error, "UTF-8"));
    done(&rep);
    /* SQL metacharacters in a key are data */
    const char *evil = "k'; DELETE FROM storage.kv; --";
    assert_int_equal(put(t, "a1", evil, "v", 0, 0, NULL, &rep), AOS_ERR_OK);
    char buf[8];
    assert_int_equal(get(t, "a1", evil, buf, sizeof buf, NULL), AOS_ERR_OK);
    /* in a queue name they are refused */
    Aos__Storage__QueueSendRequest q = AOS__STORAGE__QUEUE_SEND_REQUEST__INIT;
    q.queue = S("jobs'; DROP TABLE storage.queue_msg; --");
    q.body = S("x");
    assert_int_equal(call(t, "a1", "queue.send", op_queue_send, &q.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);
    /* invalid JSON */
    Aos__Storage__DocPutRequest d = AOS__STORAGE__DOC_PUT_REQUEST__INIT;
    d.collection = S("c");
    d.id = S("x");
    d.json = S("{\"a\": ");
    assert_int_equal(call(t, "a1", "doc.put", op_doc_put, &d.base, NULL, &rep), AOS_ERR_USAGE);
    assert_non_null(strstr(rep.error, "not valid JSON"));
    done(&rep);
    /* a payload that is not protobuf */
    memset(&rep, 0, sizeof rep);
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    stg_call c = {.st = &t->st, .db = t->db, .agent = "a1", .request_id = rid, .op = "kv.put",
                  .payload = junk, .len = sizeof junk, .rep = &rep};
    assert_int_equal(op_kv_put(&c), AOS_ERR_PROTO);
    /* nothing but the one legitimate key was written */
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.kv"), before + 1);
    /* deadline already passed */
    Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
    g.key = S("x");
    uint8_t b2[32];
    memset(&rep, 0, sizeof rep);
    c.payload = b2;
    c.len = protobuf_c_message_pack(&g.base, b2);
    c.op = "kv.get";
    c.deadline_ms = aos_now_ms() - 1000;
    assert_int_equal(op_kv_get(&c), AOS_ERR_TIMEOUT);
}

/* ---- batching under concurrency --------------------------------------------------- */

#define WRITERS 12
#define WRITES 40

static atomic_int writer_errors;
static char writer_error[512];

static void writer_fail(const char *what, const char *why)
{
    if (atomic_fetch_add(&writer_errors, 1) == 0)
        snprintf(writer_error, sizeof writer_error, "%s: %.400s", what, why);
}

static void *writer(void *arg)
{
    long id = (long)arg;
    T *t = T_;
    PGconn *db = PQconnectdb(t->dsn);
    srv_reply rep;
    char key[32], val[32];
    for (int i = 0; i < WRITES; i++) {
        snprintf(key, sizeof key, "w%ld/%d", id, i);
        snprintf(val, sizeof val, "%ld:%d", id, i);
        Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
        rq.key = S(key);
        rq.value = S(val);
        if (call_raw(t, db, "batch", "kv.put", op_kv_put, &rq.base, NULL, &rep))
            writer_fail("put", rep.error);
        done(&rep);
        Aos__Storage__KvIncrRequest in = AOS__STORAGE__KV_INCR_REQUEST__INIT;
        in.key = S("total");
        in.delta = 1;
        if (call_raw(t, db, "batch", "kv.incr", op_kv_incr, &in.base, NULL, &rep))
            writer_fail("incr", rep.error);
        done(&rep);
        Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
        g.key = S(key);
        if (call_raw(t, db, "batch", "kv.get", op_kv_get, &g.base, NULL, &rep))
            writer_fail("get", rep.error);
        Aos__Storage__KvGetReply *gr =
            aos__storage__kv_get_reply__unpack(NULL, rep.len, rep.payload);
        if (!gr || gr->value.len != strlen(val) || memcmp(gr->value.data, val, gr->value.len))
            writer_fail("get", "read back the wrong value");
        if (gr)
            aos__storage__kv_get_reply__free_unpacked(gr, NULL);
        done(&rep);
    }
    PQfinish(db);
    return NULL;
}

static void test_batch_concurrency(void **state)
{
    NEED_PG(state);
    pthread_t th[WRITERS];
    for (long i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *)i);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&writer_errors))
        fail_msg("%d writer errors, first: %s", atomic_load(&writer_errors), writer_error);
    char buf[32];
    assert_int_equal(get(t, "batch", "total", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_int_equal(atoi(buf), WRITERS * WRITES);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.kv WHERE agent = 'batch'"),
                     WRITERS * WRITES + 1);
}

/* ---- concurrent gets as one statement ------------------------------------------ */

typedef struct getter {
    const char *agent, *key;
    uint64_t deadline_ms;          /* 0: none */
    PGconn *db;                    /* its own, as each worker has */
    aos_err e;
    db_retry retry;                /* what its db_run would have been told */
    char value[64], error[AOS_ERRMSG_MAX + 1];
    uint64_t version, expires_at_ms;
    pthread_t th;
} getter;

static void *getter_main(void *arg)
{
    getter *g = arg;
    T *t = T_;
    Aos__Storage__KvGetRequest rq = AOS__STORAGE__KV_GET_REQUEST__INIT;
    rq.key = S(g->key);
    uint8_t buf[600];
    srv_reply rep;
    memset(&rep, 0, sizeof rep);
    stg_call c = {.st = &t->st, .db = g->db, .agent = g->agent, .op = "kv.get",
                  .deadline_ms = g->deadline_ms, .payload = buf,
                  .len = protobuf_c_message_pack(&rq.base, buf), .rep = &rep};
    (void)db_retry_take();
    g->e = op_kv_get(&c);
    g->retry = db_retry_take();
    snprintf(g->error, sizeof g->error, "%s", rep.error);
    if (!g->e) {
        Aos__Storage__KvGetReply *rp =
            aos__storage__kv_get_reply__unpack(NULL, rep.len, rep.payload);
        if (rp) {
            snprintf(g->value, sizeof g->value, "%.*s", (int)rp->value.len,
                     (const char *)rp->value.data);
            g->version = rp->version;
            g->expires_at_ms = rp->expires_at_ms;
            aos__storage__kv_get_reply__free_unpacked(rp, NULL);
        }
    }
    done(&rep);
    return NULL;
}

static void getter_start(T *t, getter *g, const char *agent, const char *key)
{
    memset(g, 0, sizeof *g);
    g->agent = agent;
    g->key = key;
    g->db = PQconnectdb(t->dsn);
    assert_int_equal(PQstatus(g->db), CONNECTION_OK);
    pthread_create(&g->th, NULL, getter_main, g);
}

static void getter_join(getter *g)
{
    pthread_join(g->th, NULL);
    PQfinish(g->db);
}

/* Until n of aos_storage's backends (but not_pid's) wait on a lock: the leader's statement
 * stuck behind the test's LOCK TABLE. mon is outside the locking transaction, whose view
 * of pg_stat_activity would not change. */
#define LOCK_WAITERS "FROM pg_stat_activity WHERE usename = 'aos_storage' AND " \
                     "wait_event_type = 'Lock' AND pid <> $1::int"
static void wait_lock_waiters(PGconn *mon, int n, int not_pid)
{
    char pid[16];
    snprintf(pid, sizeof pid, "%d", not_pid);
    const char *v[1] = {pid};
    for (int i = 0; i < 500; i++) {
        PGresult *r = PQexecParams(mon, "SELECT count(*) " LOCK_WAITERS, 1, NULL, v, NULL,
                                   NULL, 0);
        int got = PQresultStatus(r) == PGRES_TUPLES_OK ? atoi(PQgetvalue(r, 0, 0)) : -1;
        PQclear(r);
        if (got == n)
            return;
        nap_ms(10);
    }
    fail_msg("%d gets did not come to wait on the lock", n);
}

static void test_get_group(void **state)
{
    NEED_PG(state);
    PGresult *r = PQexec(t->admin,
        "INSERT INTO storage.kv (agent, key, value, version, expires_at) VALUES "
        "('g0', 'k', 'v0', 1, NULL), ('g1', 'k', 'v1', 3, '2100-01-01 00:00:00+00'), "
        "('g5', 'k', '', 1, NULL), ('g6', 'k', 'old', 1, now() - interval '1 s')");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    uint64_t groups0 = atomic_load(&t->st.n_groups), grouped0 = atomic_load(&t->st.n_grouped);
    PGconn *mon = PQconnectdb(testpg_dsn(t->pg, "aos_admin"));
    assert_int_equal(PQstatus(mon), CONNECTION_OK);

    /* The first get leads at once, and is held in PostgreSQL behind a table lock; the
     * gets that come meanwhile wait, and go together as one statement once it is done. */
    r = PQexec(t->admin, "BEGIN; LOCK TABLE storage.kv IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    getter g[9];
    getter_start(t, &g[0], "g0", "k");
    wait_lock_waiters(mon, 1, 0);
    getter_start(t, &g[1], "g1", "k");      /* found, with a version and an expiry */
    getter_start(t, &g[2], "g2", "k");      /* missing: NOT_FOUND to it alone */
    getter_start(t, &g[3], "h", "k");       /* g0 has "k", h does not: its own namespace */
    getter_start(t, &g[4], "g0", "k");      /* the same key twice in one group */
    getter_start(t, &g[5], "g5", "k");      /* an empty value */
    getter_start(t, &g[6], "g6", "k");      /* expired: absent */
    getter_start(t, &g[7], "g7", "bad\x01key");   /* refused before it is queued */
    memset(&g[8], 0, sizeof g[8]);
    g[8].agent = "g1";
    g[8].key = "k";
    g[8].deadline_ms = aos_now_ms() + 100;  /* passes while it waits: TIMEOUT */
    g[8].db = PQconnectdb(t->dsn);
    pthread_create(&g[8].th, NULL, getter_main, &g[8]);
    nap_ms(300);
    r = PQexec(t->admin, "COMMIT");
    PQclear(r);
    for (int i = 0; i < 9; i++)
        getter_join(&g[i]);

    assert_int_equal(g[0].e, AOS_ERR_OK);
    assert_string_equal(g[0].value, "v0");
    assert_int_equal(g[1].e, AOS_ERR_OK);
    assert_string_equal(g[1].value, "v1");
    assert_int_equal(g[1].version, 3);
    assert_int_equal(g[1].expires_at_ms, UINT64_C(4102444800000));
    assert_int_equal(g[2].e, AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(g[2].error, "no key \"k\""));
    assert_int_equal(g[3].e, AOS_ERR_NOT_FOUND);
    assert_int_equal(g[4].e, AOS_ERR_OK);
    assert_string_equal(g[4].value, "v0");
    assert_int_equal(g[4].expires_at_ms, 0);
    assert_int_equal(g[5].e, AOS_ERR_OK);
    assert_string_equal(g[5].value, "");
    assert_int_equal(g[6].e, AOS_ERR_NOT_FOUND);
    assert_int_equal(g[7].e, AOS_ERR_USAGE);
    assert_int_equal(g[8].e, AOS_ERR_TIMEOUT);
    /* the leader alone, then the six live ones in one statement */
    assert_int_equal(atomic_load(&t->st.n_groups) - groups0, 2);
    assert_int_equal(atomic_load(&t->st.n_grouped) - grouped0, 7);

    /* The connection of a group's leader dies under it: every get of the group fails
     * with UNAVAILABLE and the verdict "wait for the database and run again", none OK. */
    r = PQexec(t->admin, "BEGIN; LOCK TABLE storage.kv IN ACCESS EXCLUSIVE MODE");
    PQclear(r);
    getter_start(t, &g[0], "g0", "k");
    wait_lock_waiters(mon, 1, 0);
    for (int i = 1; i < 5; i++)
        getter_start(t, &g[i], "g1", "k");
    nap_ms(300);
    /* the first leader goes; the group's leader takes its place behind the lock */
    char pid0[16];
    snprintf(pid0, sizeof pid0, "%d", PQbackendPID(g[0].db));
    const char *v[1] = {pid0};
    PQclear(PQexecParams(mon, "SELECT pg_terminate_backend($1::int)", 1, NULL, v, NULL, NULL,
                         0));
    wait_lock_waiters(mon, 1, PQbackendPID(g[0].db));
    PQclear(PQexecParams(mon, "SELECT pg_terminate_backend(pid) " LOCK_WAITERS, 1, NULL, v,
                         NULL, NULL, 0));
    for (int i = 0; i < 5; i++)
        getter_join(&g[i]);
    r = PQexec(t->admin, "COMMIT");
    PQclear(r);
    PQfinish(mon);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(g[i].e, AOS_ERR_UNAVAILABLE);
        assert_int_equal(g[i].retry, DB_WAIT);
    }
}

/* ---- documents --------------------------------------------------------------------- */

static aos_err doc_put(T *t, const char *coll, const char *id, const char *json)
{
    srv_reply rep;
    Aos__Storage__DocPutRequest d = AOS__STORAGE__DOC_PUT_REQUEST__INIT;
    d.collection = S(coll);
    d.id = S(id);
    d.json = S(json);
    aos_err e = call(t, "docs", "doc.put", op_doc_put, &d.base, NULL, &rep);
    done(&rep);
    return e;
}

static void test_docs(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    assert_int_equal(doc_put(t, "tasks", "t1", "{\"status\": \"open\", \"prio\": 1}"),
                     AOS_ERR_OK);
    assert_int_equal(doc_put(t, "tasks", "t2", "{\"status\": \"done\", \"prio\": 1}"),
                     AOS_ERR_OK);
    assert_int_equal(doc_put(t, "tasks", "t3", "{\"status\": \"open\", \"prio\": 2, "
                                               "\"tags\": [\"x\"]}"), AOS_ERR_OK);
    assert_int_equal(doc_put(t, "other", "t4", "{\"status\": \"open\"}"), AOS_ERR_OK);
    assert_int_equal(doc_put(t, "tasks", "bad", "[1, 2]"), AOS_ERR_USAGE);
    assert_int_equal(doc_put(t, "tasks", "bad", "{\"a\": tru}"), AOS_ERR_USAGE);
    assert_int_equal(doc_put(t, "bad coll", "x", "{}"), AOS_ERR_USAGE);

    Aos__Storage__DocGetRequest g = AOS__STORAGE__DOC_GET_REQUEST__INIT;
    g.collection = S("tasks");
    g.id = S("t3");
    assert_int_equal(call(t, "docs", "doc.get", op_doc_get, &g.base, NULL, &rep), AOS_ERR_OK);
    Aos__Storage__DocGetReply *gr = aos__storage__doc_get_reply__unpack(NULL, rep.len,
                                                                        rep.payload);
    assert_non_null(gr->doc);
    assert_non_null(memmem(gr->doc->json.data, gr->doc->json.len, "\"tags\"", 6));
    assert_int_equal(gr->doc->version, 1);
    aos__storage__doc_get_reply__free_unpacked(gr, NULL);
    done(&rep);
    g.id = S("nope");
    assert_int_equal(call(t, "docs", "doc.get", op_doc_get, &g.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    done(&rep);

    Aos__Storage__DocQueryRequest q = AOS__STORAGE__DOC_QUERY_REQUEST__INIT;
    q.collection = S("tasks");
    q.filter = S("{\"status\": \"open\"}");
    assert_int_equal(call(t, "docs", "doc.query", op_doc_query, &q.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__DocQueryReply *qr = aos__storage__doc_query_reply__unpack(NULL, rep.len,
                                                                            rep.payload);
    assert_int_equal(qr->n_docs, 2);
    assert_memory_equal(qr->docs[0]->id.data, "t1", 2);
    assert_memory_equal(qr->docs[1]->id.data, "t3", 2);
    aos__storage__doc_query_reply__free_unpacked(qr, NULL);
    done(&rep);
    q.filter = S("{\"status\": \"open\", \"prio\": 2}");
    assert_int_equal(call(t, "docs", "doc.query", op_doc_query, &q.base, NULL, &rep),
                     AOS_ERR_OK);
    qr = aos__storage__doc_query_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(qr->n_docs, 1);
    aos__storage__doc_query_reply__free_unpacked(qr, NULL);
    done(&rep);
    q.filter = S("");   /* everything, paged */
    q.limit = 2;
    assert_int_equal(call(t, "docs", "doc.query", op_doc_query, &q.base, NULL, &rep),
                     AOS_ERR_OK);
    qr = aos__storage__doc_query_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(qr->n_docs, 2);
    assert_int_equal(qr->next.len, 2);
    aos__storage__doc_query_reply__free_unpacked(qr, NULL);
    done(&rep);
    q.filter = S("{\"tags\": [\"x\"]}");   /* not a top-level scalar */
    assert_int_equal(call(t, "docs", "doc.query", op_doc_query, &q.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);
    q.filter = S("not json");
    assert_int_equal(call(t, "docs", "doc.query", op_doc_query, &q.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);

    /* compare-and-set on documents */
    Aos__Storage__DocPutRequest d = AOS__STORAGE__DOC_PUT_REQUEST__INIT;
    d.collection = S("tasks");
    d.id = S("t1");
    d.json = S("{\"status\": \"done\"}");
    d.cas = 1;
    d.if_version = 5;
    assert_int_equal(call(t, "docs", "doc.put", op_doc_put, &d.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    done(&rep);
    d.if_version = 1;
    assert_int_equal(call(t, "docs", "doc.put", op_doc_put, &d.base, NULL, &rep), AOS_ERR_OK);
    done(&rep);
    d.if_version = 0;
    d.id = S("t9");
    assert_int_equal(call(t, "docs", "doc.put", op_doc_put, &d.base, NULL, &rep), AOS_ERR_OK);
    done(&rep);
    assert_int_equal(call(t, "docs", "doc.put", op_doc_put, &d.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    done(&rep);

    Aos__Storage__DocDeleteRequest del = AOS__STORAGE__DOC_DELETE_REQUEST__INIT;
    del.collection = S("tasks");
    del.id = S("t2");
    assert_int_equal(call(t, "docs", "doc.delete", op_doc_delete, &del.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
    assert_int_equal(call(t, "docs", "doc.delete", op_doc_delete, &del.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    done(&rep);
    /* another agent sees none of it */
    q.filter = S("");
    q.limit = 0;
    assert_int_equal(call(t, "intruder", "doc.query", op_doc_query, &q.base, NULL, &rep),
                     AOS_ERR_OK);
    qr = aos__storage__doc_query_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(qr->n_docs, 0);
    aos__storage__doc_query_reply__free_unpacked(qr, NULL);
    done(&rep);
}

/* ---- blobs ----------------------------------------------------------------------------- */

/* Upload data in chunks of `chunk` as agent; sha256 out. */
static aos_err blob_put(T *t, const char *agent, const uint8_t *data, size_t len, size_t chunk,
                        uint8_t sha[32], srv_reply *last)
{
    uint8_t up[16];
    aos_id_random(up);
    srv_reply rep;
    for (size_t off = 0; off < len; off += chunk) {
        Aos__Storage__BlobWriteRequest w = AOS__STORAGE__BLOB_WRITE_REQUEST__INIT;
        w.upload.data = up;
        w.upload.len = 16;
        w.offset = off;
        w.data.data = (uint8_t *)data + off;
        w.data.len = len - off < chunk ? len - off : chunk;
        aos_err e = call(t, agent, "blob.write", op_blob_write, &w.base, NULL, &rep);
        if (e) {
            *last = rep;
            return e;
        }
        done(&rep);
    }
    Aos__Storage__BlobCommitRequest c = AOS__STORAGE__BLOB_COMMIT_REQUEST__INIT;
    c.upload.data = up;
    c.upload.len = 16;
    crypto_hash_sha256(sha, data, len);
    c.sha256.data = sha;
    c.sha256.len = 32;
    aos_err e = call(t, agent, "blob.commit", op_blob_commit, &c.base, NULL, &rep);
    *last = rep;
    return e;
}

static void test_blobs(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    size_t len = 10000;
    uint8_t *data = malloc(len), sha[32];
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(blob_put(t, "b1", data, len, 3000, sha, &rep), AOS_ERR_OK);
    Aos__Storage__BlobCommitReply *cr =
        aos__storage__blob_commit_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(cr->blob->size, len);
    assert_memory_equal(cr->blob->sha256.data, sha, 32);
    aos__storage__blob_commit_reply__free_unpacked(cr, NULL);
    done(&rep);

    /* a range across chunks */
    Aos__Storage__BlobReadRequest r = AOS__STORAGE__BLOB_READ_REQUEST__INIT;
    r.sha256.data = sha;
    r.sha256.len = 32;
    r.offset = 2500;
    r.length = 4000;
    assert_int_equal(call(t, "b1", "blob.read", op_blob_read, &r.base, NULL, &rep), AOS_ERR_OK);
    Aos__Storage__BlobReadReply *rr =
        aos__storage__blob_read_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(rr->data.len, 4000);
    assert_int_equal(rr->size, len);
    assert_memory_equal(rr->data.data, data + 2500, 4000);
    aos__storage__blob_read_reply__free_unpacked(rr, NULL);
    done(&rep);

    /* the same content from another agent is stored once, and charged to both */
    assert_int_equal(blob_put(t, "b2", data, len, 4096, sha, &rep), AOS_ERR_OK);
    done(&rep);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.blob"), 1);
    assert_int_equal(admin_count(t, "SELECT refs FROM storage.blob"), 2);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.blob_upload"), 0);
    /* another agent that never stored it cannot read it */
    assert_int_equal(call(t, "b3", "blob.read", op_blob_read, &r.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    done(&rep);

    /* quota: 20000 per agent; b1 holds 10000 */
    uint8_t sha2[32];
    assert_int_equal(blob_put(t, "b1", data, 4000, 4000, sha2, &rep), AOS_ERR_OK);
    done(&rep);
    uint8_t *more = malloc(7000);
    memset(more, 'm', 7000);
    assert_int_equal(blob_put(t, "b1", more, 7000, 3500, sha2, &rep), AOS_ERR_QUOTA);
    assert_non_null(strstr(rep.error, "quota"));
    done(&rep);
    free(more);

    Aos__Storage__BlobListRequest l = AOS__STORAGE__BLOB_LIST_REQUEST__INIT;
    assert_int_equal(call(t, "b1", "blob.list", op_blob_list, &l.base, NULL, &rep), AOS_ERR_OK);
    Aos__Storage__BlobListReply *lr =
        aos__storage__blob_list_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(lr->n_blobs, 2);
    assert_int_equal(lr->quota, 20000);
    assert_int_equal(lr->used, 14000 + 3500);   /* the failed upload's first chunk is staged */
    aos__storage__blob_list_reply__free_unpacked(lr, NULL);
    done(&rep);

    /* a wrong hash, a wrong offset */
    uint8_t up[16];
    aos_id_random(up);
    Aos__Storage__BlobWriteRequest w = AOS__STORAGE__BLOB_WRITE_REQUEST__INIT;
    w.upload.data = up;
    w.upload.len = 16;
    w.offset = 5;
    w.data = S("abc");
    assert_int_equal(call(t, "b4", "blob.write", op_blob_write, &w.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    done(&rep);
    w.offset = 0;
    assert_int_equal(call(t, "b4", "blob.write", op_blob_write, &w.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
    Aos__Storage__BlobCommitRequest c = AOS__STORAGE__BLOB_COMMIT_REQUEST__INIT;
    c.upload.data = up;
    c.upload.len = 16;
    c.sha256.data = sha;
    c.sha256.len = 32;
    assert_int_equal(call(t, "b4", "blob.commit", op_blob_commit, &c.base, NULL, &rep),
                     AOS_ERR_CONFLICT);
    assert_non_null(strstr(rep.error, "mismatch"));
    done(&rep);

    /* deleting: the content goes with its last holder */
    Aos__Storage__BlobDeleteRequest d = AOS__STORAGE__BLOB_DELETE_REQUEST__INIT;
    d.sha256.data = sha;
    d.sha256.len = 32;
    assert_int_equal(call(t, "b1", "blob.delete", op_blob_delete, &d.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
    assert_int_equal(admin_count(t, "SELECT refs FROM storage.blob WHERE sha256 = "
                                    "(SELECT sha256 FROM storage.blob_ref WHERE agent = 'b2')"),
                     1);
    assert_int_equal(call(t, "b2", "blob.delete", op_blob_delete, &d.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
    assert_int_equal(call(t, "b2", "blob.delete", op_blob_delete, &d.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    done(&rep);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.blob_ref WHERE agent = 'b2'"),
                     0);
    assert_int_equal(admin_count(t, "SELECT count(*) FROM storage.blob_chunk c JOIN "
                                    "storage.blob b USING (sha256) WHERE b.size = 10000"), 0);
    free(data);
}

/* ---- checkpoints and steps -------------------------------------------------------------- */

static void test_checkpoints(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    for (int i = 1; i <= 3; i++) {
        char data[16];
        snprintf(data, sizeof data, "state-%d", i);
        Aos__Storage__CheckpointSaveRequest s = AOS__STORAGE__CHECKPOINT_SAVE_REQUEST__INIT;
        s.data = S(data);
        s.meta = S("{\"step\": 7}");
        assert_int_equal(call(t, "ck", "checkpoint.save", op_ckpt_save, &s.base, NULL, &rep),
                         AOS_ERR_OK);
        Aos__Storage__CheckpointSaveReply *sr =
            aos__storage__checkpoint_save_reply__unpack(NULL, rep.len, rep.payload);
        assert_int_equal(sr->version, (uint64_t)i);
        aos__storage__checkpoint_save_reply__free_unpacked(sr, NULL);
        done(&rep);
    }
    Aos__Storage__CheckpointSaveRequest bad = AOS__STORAGE__CHECKPOINT_SAVE_REQUEST__INIT;
    bad.data = S("x");
    bad.meta = S("{oops");
    assert_int_equal(call(t, "ck", "checkpoint.save", op_ckpt_save, &bad.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);

    Aos__Storage__CheckpointLoadRequest l = AOS__STORAGE__CHECKPOINT_LOAD_REQUEST__INIT;
    assert_int_equal(call(t, "ck", "checkpoint.load", op_ckpt_load, &l.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__CheckpointLoadReply *lr =
        aos__storage__checkpoint_load_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(lr->info->version, 3);
    assert_memory_equal(lr->data.data, "state-3", 7);
    assert_memory_equal(lr->info->name.data, "default", 7);
    assert_non_null(memmem(lr->info->meta.data, lr->info->meta.len, "step", 4));
    aos__storage__checkpoint_load_reply__free_unpacked(lr, NULL);
    done(&rep);
    l.version = 2;
    assert_int_equal(call(t, "ck", "checkpoint.load", op_ckpt_load, &l.base, NULL, &rep),
                     AOS_ERR_OK);
    lr = aos__storage__checkpoint_load_reply__unpack(NULL, rep.len, rep.payload);
    assert_memory_equal(lr->data.data, "state-2", 7);
    aos__storage__checkpoint_load_reply__free_unpacked(lr, NULL);
    done(&rep);

    Aos__Storage__CheckpointPruneRequest p = AOS__STORAGE__CHECKPOINT_PRUNE_REQUEST__INIT;
    p.keep = 1;
    assert_int_equal(call(t, "ck", "checkpoint.prune", op_ckpt_prune, &p.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__CheckpointPruneReply *pr =
        aos__storage__checkpoint_prune_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(pr->deleted, 2);
    aos__storage__checkpoint_prune_reply__free_unpacked(pr, NULL);
    done(&rep);
    assert_int_equal(call(t, "ck", "checkpoint.load", op_ckpt_load, &l.base, NULL, &rep),
                     AOS_ERR_NOT_FOUND);
    done(&rep);
    p.keep = 0;
    assert_int_equal(call(t, "ck", "checkpoint.prune", op_ckpt_prune, &p.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);

    Aos__Storage__CheckpointListRequest ls = AOS__STORAGE__CHECKPOINT_LIST_REQUEST__INIT;
    assert_int_equal(call(t, "ck", "checkpoint.list", op_ckpt_list, &ls.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__CheckpointListReply *cl =
        aos__storage__checkpoint_list_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(cl->n_checkpoints, 1);
    assert_int_equal(cl->checkpoints[0]->version, 3);
    assert_int_equal(cl->checkpoints[0]->size, 7);
    aos__storage__checkpoint_list_reply__free_unpacked(cl, NULL);
    done(&rep);
    /* a new save after a prune keeps counting */
    Aos__Storage__CheckpointSaveRequest s = AOS__STORAGE__CHECKPOINT_SAVE_REQUEST__INIT;
    s.data = S("state-4");
    assert_int_equal(call(t, "ck", "checkpoint.save", op_ckpt_save, &s.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__CheckpointSaveReply *sr =
        aos__storage__checkpoint_save_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(sr->version, 4);
    aos__storage__checkpoint_save_reply__free_unpacked(sr, NULL);
    done(&rep);
}

static aos_err step(T *t, const char *run, uint64_t n, const char *kind, const char *data,
                    int *existed)
{
    srv_reply rep;
    Aos__Storage__StepAppendRequest a = AOS__STORAGE__STEP_APPEND_REQUEST__INIT;
    a.run = S(run);
    a.step = n;
    a.kind = S(kind);
    a.data = S(data);
    aos_err e = call(t, "stepper", "step.append", op_step_append, &a.base, NULL, &rep);
    if (!e && existed) {
        Aos__Storage__StepAppendReply *r =
            aos__storage__step_append_reply__unpack(NULL, rep.len, rep.payload);
        *existed = r->existed;
        aos__storage__step_append_reply__free_unpacked(r, NULL);
    }
    done(&rep);
    return e;
}

static void test_steps(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    int ex;
    assert_int_equal(step(t, "run1", 1, "llm", "reply one", &ex), AOS_ERR_OK);
    assert_false(ex);
    assert_int_equal(step(t, "run1", 2, "tool", "result two", &ex), AOS_ERR_OK);
    assert_int_equal(step(t, "run1", 2, "tool", "result two", &ex), AOS_ERR_OK);
    assert_true(ex);   /* replayed append: nothing twice */
    assert_int_equal(step(t, "run1", 2, "tool", "other", &ex), AOS_ERR_CONFLICT);
    assert_int_equal(step(t, "run1", 4, "tool", "gap", &ex), AOS_ERR_CONFLICT);
    assert_int_equal(step(t, "run1", 0, "tool", "zero", &ex), AOS_ERR_USAGE);
    assert_int_equal(step(t, "run2", 1, "llm", "other run", &ex), AOS_ERR_OK);

    Aos__Storage__StepReadRequest r = AOS__STORAGE__STEP_READ_REQUEST__INIT;
    r.run = S("run1");
    assert_int_equal(call(t, "stepper", "step.read", op_step_read, &r.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__StepReadReply *rr =
        aos__storage__step_read_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(rr->n_steps, 2);
    assert_int_equal(rr->last_step, 2);
    assert_int_equal(rr->steps[0]->step, 1);
    assert_memory_equal(rr->steps[1]->data.data, "result two", 10);
    assert_memory_equal(rr->steps[1]->kind.data, "tool", 4);
    aos__storage__step_read_reply__free_unpacked(rr, NULL);
    done(&rep);
    r.from_step = 2;
    assert_int_equal(call(t, "other", "step.read", op_step_read, &r.base, NULL, &rep),
                     AOS_ERR_OK);
    rr = aos__storage__step_read_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(rr->n_steps, 0);   /* another agent's run of the same name is empty */
    aos__storage__step_read_reply__free_unpacked(rr, NULL);
    done(&rep);
}

/* ---- queues ------------------------------------------------------------------------- */

static uint64_t qsend(T *t, const char *agent, const char *queue, const char *body,
                      uint32_t max_tries)
{
    srv_reply rep;
    Aos__Storage__QueueSendRequest s = AOS__STORAGE__QUEUE_SEND_REQUEST__INIT;
    s.queue = S(queue);
    s.body = S(body);
    s.max_tries = max_tries;
    assert_int_equal(call(t, agent, "queue.send", op_queue_send, &s.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__QueueSendReply *r =
        aos__storage__queue_send_reply__unpack(NULL, rep.len, rep.payload);
    uint64_t id = r->id;
    aos__storage__queue_send_reply__free_unpacked(r, NULL);
    done(&rep);
    return id;
}

static Aos__Storage__QueueRecvReply *qrecv(T *t, const char *agent, const char *queue,
                                           uint32_t max, uint32_t vis, uint32_t wait)
{
    srv_reply rep;
    Aos__Storage__QueueRecvRequest r = AOS__STORAGE__QUEUE_RECV_REQUEST__INIT;
    r.queue = S(queue);
    r.max = max;
    r.visibility_ms = vis;
    r.wait_ms = wait;
    assert_int_equal(call(t, agent, "queue.recv", op_queue_recv, &r.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__QueueRecvReply *rr =
        aos__storage__queue_recv_reply__unpack(NULL, rep.len, rep.payload);
    assert_non_null(rr);
    done(&rep);
    return rr;
}

static aos_err qack(T *t, const char *agent, const char *queue, const Aos__Storage__QueueMessage *m,
                    int nack)
{
    srv_reply rep;
    aos_err e;
    if (nack) {
        Aos__Storage__QueueNackRequest a = AOS__STORAGE__QUEUE_NACK_REQUEST__INIT;
        a.queue = S(queue);
        a.id = m->id;
        a.receipt = m->receipt;
        e = call(t, agent, "queue.nack", op_queue_nack, &a.base, NULL, &rep);
    } else {
        Aos__Storage__QueueAckRequest a = AOS__STORAGE__QUEUE_ACK_REQUEST__INIT;
        a.queue = S(queue);
        a.id = m->id;
        a.receipt = m->receipt;
        e = call(t, agent, "queue.ack", op_queue_ack, &a.base, NULL, &rep);
    }
    done(&rep);
    return e;
}

static void test_queue_basic(void **state)
{
    NEED_PG(state);
    uint64_t id1 = qsend(t, "q", "jobs", "one", 0);
    uint64_t id2 = qsend(t, "q", "jobs", "two", 0);
    uint64_t id3 = qsend(t, "q", "jobs", "three", 0);
    assert_true(id1 < id2 && id2 < id3);
    Aos__Storage__QueueRecvReply *r = qrecv(t, "q", "jobs", 2, 60000, 0);
    assert_int_equal(r->n_messages, 2);
    assert_int_equal(r->messages[0]->id, id1);   /* FIFO */
    assert_int_equal(r->messages[1]->id, id2);
    assert_int_equal(r->messages[0]->tries, 1);
    assert_int_equal(r->messages[0]->receipt.len, 16);
    assert_int_equal(qack(t, "q", "jobs", r->messages[0], 0), AOS_ERR_OK);
    assert_int_equal(qack(t, "q", "jobs", r->messages[0], 0), AOS_ERR_NOT_FOUND);
    assert_int_equal(qack(t, "q", "jobs", r->messages[1], 1), AOS_ERR_OK);   /* nack */
    /* another agent cannot ack what it did not receive */
    assert_int_equal(qack(t, "intruder", "jobs", r->messages[1], 0), AOS_ERR_NOT_FOUND);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
    r = qrecv(t, "q", "jobs", 10, 60000, 0);
    assert_int_equal(r->n_messages, 2);
    assert_int_equal(r->messages[0]->id, id2);
    assert_int_equal(r->messages[0]->tries, 2);   /* the nack counted a try */
    assert_int_equal(r->messages[1]->id, id3);
    for (size_t i = 0; i < r->n_messages; i++)
        assert_int_equal(qack(t, "q", "jobs", r->messages[i], 0), AOS_ERR_OK);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
    r = qrecv(t, "q", "jobs", 10, 60000, 0);
    assert_int_equal(r->n_messages, 0);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
    /* and another agent's queue of the same name is its own */
    qsend(t, "q", "jobs", "mine", 0);
    r = qrecv(t, "other", "jobs", 10, 60000, 0);
    assert_int_equal(r->n_messages, 0);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);

    srv_reply rep;
    Aos__Storage__QueueListRequest l = AOS__STORAGE__QUEUE_LIST_REQUEST__INIT;
    assert_int_equal(call(t, "q", "queue.list", op_queue_list, &l.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__QueueListReply *lr =
        aos__storage__queue_list_reply__unpack(NULL, rep.len, rep.payload);
    assert_int_equal(lr->n_queues, 1);
    assert_int_equal(lr->queues[0]->ready, 1);
    aos__storage__queue_list_reply__free_unpacked(lr, NULL);
    done(&rep);
}

static void test_queue_redelivery_dead(void **state)
{
    NEED_PG(state);
    uint64_t id = qsend(t, "q2", "work", "payload", 2);
    Aos__Storage__QueueRecvReply *r = qrecv(t, "q2", "work", 1, 20, 0);
    assert_int_equal(r->n_messages, 1);
    Aos__Storage__QueueRecvReply *first = r;
    /* hidden while its visibility lasts */
    r = qrecv(t, "q2", "work", 1, 20, 0);
    if (r->n_messages == 0) {
        aos__storage__queue_recv_reply__free_unpacked(r, NULL);
        nap_ms(60);
        r = qrecv(t, "q2", "work", 1, 20, 0);
    }
    /* redelivered after the visibility timeout, with a new receipt */
    assert_int_equal(r->n_messages, 1);
    assert_int_equal(r->messages[0]->id, id);
    assert_int_equal(r->messages[0]->tries, 2);
    assert_memory_not_equal(r->messages[0]->receipt.data, first->messages[0]->receipt.data, 16);
    /* the first consumer's receipt is void now */
    assert_int_equal(qack(t, "q2", "work", first->messages[0], 0), AOS_ERR_NOT_FOUND);
    aos__storage__queue_recv_reply__free_unpacked(first, NULL);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
    nap_ms(60);
    /* two tries used up: dead-lettered instead of a third delivery */
    r = qrecv(t, "q2", "work", 1, 20, 0);
    assert_int_equal(r->n_messages, 0);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
    r = qrecv(t, "q2", "work.dead", 1, 60000, 0);
    assert_int_equal(r->n_messages, 1);
    assert_int_equal(r->messages[0]->id, id);
    assert_memory_equal(r->messages[0]->body.data, "payload", 7);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);

    /* nack past the last try dead-letters at once */
    qsend(t, "q2", "fast", "x", 1);
    r = qrecv(t, "q2", "fast", 1, 60000, 0);
    srv_reply rep;
    Aos__Storage__QueueNackRequest n = AOS__STORAGE__QUEUE_NACK_REQUEST__INIT;
    n.queue = S("fast");
    n.id = r->messages[0]->id;
    n.receipt = r->messages[0]->receipt;
    assert_int_equal(call(t, "q2", "queue.nack", op_queue_nack, &n.base, NULL, &rep),
                     AOS_ERR_OK);
    Aos__Storage__QueueNackReply *nr =
        aos__storage__queue_nack_reply__unpack(NULL, rep.len, rep.payload);
    assert_true(nr->dead);
    aos__storage__queue_nack_reply__free_unpacked(nr, NULL);
    done(&rep);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
}

typedef struct waiter_arg {
    T *t;
    Aos__Storage__QueueRecvReply *got;
} waiter_arg;

static void *waiter(void *arg)
{
    waiter_arg *w = arg;
    PGconn *db = PQconnectdb(w->t->dsn);
    srv_reply rep;
    Aos__Storage__QueueRecvRequest r = AOS__STORAGE__QUEUE_RECV_REQUEST__INIT;
    r.queue = S("wake");
    r.wait_ms = 60000;
    if (call_raw(w->t, db, "sleeper", "queue.recv", op_queue_recv, &r.base, NULL, &rep) == 0)
        w->got = aos__storage__queue_recv_reply__unpack(NULL, rep.len, rep.payload);
    done(&rep);
    PQfinish(db);
    return NULL;
}

static void test_queue_wait_notify(void **state)
{
    NEED_PG(state);
    /* the listener is up before we count on it */
    for (int i = 0; i < 100 && !notify_listening(t->st.notify); i++)
        nap_ms(50);
    assert_true(notify_listening(t->st.notify));
    uint64_t before = notify_count(t->st.notify);
    waiter_arg w = {t, NULL};
    pthread_t th;
    pthread_create(&th, NULL, waiter, &w);
    nap_ms(100);
    qsend(t, "sleeper", "wake", "up", 0);
    pthread_join(th, NULL);
    assert_non_null(w.got);
    assert_int_equal(w.got->n_messages, 1);
    assert_memory_equal(w.got->messages[0]->body.data, "up", 2);
    aos__storage__queue_recv_reply__free_unpacked(w.got, NULL);
    /* the NOTIFY reaches the listener on its own schedule: give it time to arrive */
    for (int i = 0; i < 200 && notify_count(t->st.notify) == before; i++)
        nap_ms(25);
    assert_true(notify_count(t->st.notify) > before);
}

static void test_mail(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    Aos__Storage__QueueSendRequest s = AOS__STORAGE__QUEUE_SEND_REQUEST__INIT;
    s.queue = S("inbox");
    s.body = S("hello bob");
    s.to_agent = S("bob");
    assert_int_equal(call(t, "alice", "queue.send", op_queue_send, &s.base, NULL, &rep),
                     AOS_ERR_OK);
    done(&rep);
    s.queue = S("jobs");   /* only the inbox of another agent */
    assert_int_equal(call(t, "alice", "queue.send", op_queue_send, &s.base, NULL, &rep),
                     AOS_ERR_REFUSED);
    done(&rep);
    s.to_agent = S("bob'; --");
    s.queue = S("inbox");
    assert_int_equal(call(t, "alice", "queue.send", op_queue_send, &s.base, NULL, &rep),
                     AOS_ERR_USAGE);
    done(&rep);
    Aos__Storage__QueueRecvReply *r = qrecv(t, "bob", "inbox", 10, 60000, 0);
    assert_int_equal(r->n_messages, 1);
    assert_memory_equal(r->messages[0]->from_agent.data, "alice", 5);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
    r = qrecv(t, "alice", "inbox", 10, 60000, 0);
    assert_int_equal(r->n_messages, 0);
    aos__storage__queue_recv_reply__free_unpacked(r, NULL);
}

/* ---- the role's rights, the varint encoder, database trouble ------------------------- */

static void test_grants(void **state)
{
    NEED_PG(state);
    const char *forbidden[] = {
        "DROP TABLE storage.kv", "TRUNCATE storage.kv", "ALTER TABLE storage.kv ADD x int",
        "INSERT INTO storage.quota VALUES ('me', 999999999)",
        "SELECT * FROM storage.schema_migrations", "CREATE TABLE storage.mine (x int)",
        NULL};
    for (int i = 0; forbidden[i]; i++) {
        PGresult *r = PQexec(t->db, forbidden[i]);
        assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
        PQclear(r);
    }
}

static void test_db_crash(void **state)
{
    NEED_PG(state);
    srv_reply rep;
    char buf[32];
    assert_int_equal(put(t, "crash", "before", "1", 0, 0, NULL, &rep), AOS_ERR_OK);
    assert_int_equal(testpg_crash(t->pg, 0), 0);
    /* the database is gone: unavailable (exit 6 at the CLI), never a false success */
    assert_int_equal(put(t, "crash", "during", "1", 0, 0, NULL, &rep), AOS_ERR_UNAVAILABLE);
    assert_int_equal(get(t, "crash", "before", buf, sizeof buf, NULL), AOS_ERR_UNAVAILABLE);
    assert_int_equal(testpg_crash(t->pg, 1), 0);
    /* a new connection (srv_pg's reconnect) re-prepares what it needs */
    PQfinish(t->db);
    t->db = PQconnectdb(t->dsn);
    assert_int_equal(PQstatus(t->db), CONNECTION_OK);
    assert_int_equal(get(t, "crash", "before", buf, sizeof buf, NULL), AOS_ERR_OK);
    assert_int_equal(get(t, "crash", "during", buf, sizeof buf, NULL), AOS_ERR_NOT_FOUND);
    assert_int_equal(put(t, "crash", "after", "1", 0, 0, NULL, &rep), AOS_ERR_OK);
    PQfinish(t->admin);
    t->admin = PQconnectdb(testpg_dsn(t->pg, "aos_admin"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grants),
        cmocka_unit_test(test_kv_basic),
        cmocka_unit_test(test_kv_cas),
        cmocka_unit_test(test_kv_ttl),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_kv_list),
        cmocka_unit_test(test_kv_incr),
        cmocka_unit_test(test_idempotent_replay),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_batch_concurrency),
        cmocka_unit_test(test_get_group),
        cmocka_unit_test(test_docs),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_checkpoints),
        cmocka_unit_test(test_steps),
        cmocka_unit_test(test_queue_basic),
        cmocka_unit_test(test_queue_redelivery_dead),
        cmocka_unit_test(test_queue_wait_notify),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_db_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
