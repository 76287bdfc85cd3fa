/* Hostile input to aos-storage through aosd: oversized values, non-UTF-8 keys, invalid
 * JSON, SQL metacharacters, reaching into another agent -> clear errors, nothing written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <libpq-fe.h>

#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"
#include "storage.pb-c.h"

static h_aosd *H;
static PGconn *ADMIN;
static char WHY[AOS_ERRMSG_MAX + 1];

static int setup(void **st)
{
    (void)st;
    H = h_start(NULL);
    ADMIN = su_admin_connect(H);
    return PQstatus(ADMIN) == CONNECTION_OK ? 0 : -1;
}

static int teardown(void **st)
{
    (void)st;
    PQfinish(ADMIN);
    h_stop(H);
    return 0;
}

/* Rows in every storage table: refused requests must leave it unchanged. */
static long long rows(void)
{
    return su_count(ADMIN,
        "SELECT (SELECT count(*) FROM storage.kv) + (SELECT count(*) FROM storage.doc) + "
        "(SELECT count(*) FROM storage.queue_msg) + (SELECT count(*) FROM storage.checkpoint) + "
        "(SELECT count(*) FROM storage.step) + (SELECT count(*) FROM storage.blob_upload) + "
        "(SELECT count(*) FROM storage.idem)");
}

static aos_call_opts as(const char *agent)
{
    aos_call_opts o = {.agent_id = agent};
    return o;
}

/* A raw call with payload bytes of our choosing. */
static aos_err raw(const char *agent, const char *method, const ProtobufCMessage *m)
{
    uint8_t buf[4096];
    size_t n = protobuf_c_message_pack(m, buf);
    aos_reply r;
    aos_call_opts o = as(agent);
    aos_err e = aos_call(h_conn(H), &o, method, buf, n, &r);
    snprintf(WHY, sizeof WHY, "%s", r.error);
    aos_reply_clear(&r);
    return e;
}

static void test_refused_writes_nothing(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("mallory");
    long long before = rows();

    /* a value over the cap (1 MiB), and one over the envelope (4 MiB) */
    size_t big = (1u << 20) + 1;
    char *v = malloc(5u << 20);
    memset(v, 'v', 5u << 20);
    assert_int_equal(aos_kv_put(c, &o, "big", v, big, NULL, NULL, WHY, sizeof WHY),
                     AOS_ERR_TOO_BIG);
    assert_non_null(strstr(WHY, "blob"));   /* says where large objects go */
    assert_int_not_equal(aos_kv_put(c, &o, "huge", v, 5u << 20, NULL, NULL, WHY, sizeof WHY),
                         AOS_OK);
    free(v);

    /* non-UTF-8 and control characters in keys */
    Aos__Storage__KvPutRequest p = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    p.key.data = (uint8_t *)"bad\xc3\x28key";
    p.key.len = 8;
    p.value.data = (uint8_t *)"x";
    p.value.len = 1;
    assert_int_equal(raw("mallory", "storage.kv.put", &p.base), AOS_ERR_USAGE);
    assert_non_null(strstr(WHY, "UTF-8"));
    p.key.data = (uint8_t *)"nul\0key";
    p.key.len = 7;
    assert_int_equal(raw("mallory", "storage.kv.put", &p.base), AOS_ERR_USAGE);
    assert_int_equal(aos_kv_put(c, &o, "esc\x1b[2Jkey", "x", 1, NULL, NULL, WHY, sizeof WHY),
                     AOS_ERR_USAGE);

    /* invalid JSON, and JSON that is not an object */
    assert_int_equal(aos_doc_put(c, &o, "docs", "d1", "{\"a\": [1, 2}", NULL, NULL, WHY,
                                 sizeof WHY), AOS_ERR_USAGE);
    assert_non_null(strstr(WHY, "not valid JSON"));
    assert_int_equal(aos_doc_put(c, &o, "docs", "d1", "\"just a string\"", NULL, NULL, WHY,
                                 sizeof WHY), AOS_ERR_USAGE);
    assert_int_equal(aos_doc_put(c, &o, "docs", "d1", "{\"a\": \"\\u0000\"}", NULL, NULL, WHY,
                                 sizeof WHY), AOS_ERR_USAGE);
    aos_doc_page *dp;
    assert_int_equal(aos_doc_query(c, &o, "docs", "{\"a\": 1} OR 1=1", NULL, 0, &dp, WHY,
                                   sizeof WHY), AOS_ERR_USAGE);

    /* SQL metacharacters in names */
    const char *evil[] = {"jobs'; DROP TABLE storage.queue_msg; --", "jobs\" OR \"1\"=\"1",
                          "jobs;", "$1", "jobs%", "../other", NULL};
    for (int i = 0; evil[i]; i++) {
        assert_int_equal(aos_queue_send(c, &o, evil[i], "x", 1, NULL, NULL, WHY, sizeof WHY),
                         AOS_ERR_USAGE);
        assert_non_null(strstr(WHY, "queue"));
        assert_int_equal(aos_ckpt_save(c, &o, evil[i], "x", 1, NULL, NULL, WHY, sizeof WHY),
                         AOS_ERR_USAGE);
        assert_int_equal(aos_step_append(c, &o, evil[i], 1, "llm", "x", 1, NULL, WHY,
                                         sizeof WHY), AOS_ERR_USAGE);
    }
    /* checkpoint metadata that is not JSON; a payload that is not protobuf */
    assert_int_equal(aos_ckpt_save(c, &o, "c", "x", 1, "{meta", NULL, WHY, sizeof WHY),
                     AOS_ERR_USAGE);
    aos_reply r;
    assert_int_not_equal(aos_call(c, &o, "storage.kv.put", "\xff\xff\xff\xff", 4, &r), AOS_OK);
    aos_reply_clear(&r);
    /* an unknown storage method */
    assert_int_equal(aos_call(c, &o, "storage.kv.drop_all", NULL, 0, &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);

    assert_int_equal(rows(), before);
    /* and the tables are all still there */
    assert_int_equal(aos_queue_send(c, &o, "jobs", "x", 1, NULL, NULL, WHY, sizeof WHY), AOS_OK);
}

static void test_agents_are_isolated(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts alice = as("alice"), bob = as("bob");
    assert_int_equal(aos_kv_put(c, &alice, "diary", "secret", 6, NULL, NULL, WHY, sizeof WHY),
                     AOS_OK);
    assert_int_equal(aos_queue_send(c, &alice, "todo", "mine", 4, NULL, NULL, WHY, sizeof WHY),
                     AOS_OK);
    uint8_t *v;
    size_t len;
    assert_int_equal(aos_kv_get(c, &bob, "diary", &v, &len, NULL, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
    /* keys that look like paths are just keys in bob's own namespace */
    assert_int_equal(aos_kv_get(c, &bob, "../alice/diary", &v, &len, NULL, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
    assert_int_equal(aos_kv_get(c, &bob, "alice/diary", &v, &len, NULL, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
    aos_kv_page *pg;
    assert_int_equal(aos_kv_list(c, &bob, NULL, NULL, 0, 1, &pg, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(pg->n, 0);
    aos_kv_page_free(pg);
    assert_int_equal(aos_kv_delete(c, &bob, "diary", NULL, WHY, sizeof WHY), AOS_ERR_NOT_FOUND);
    aos_queue_msgs *m;
    assert_int_equal(aos_queue_recv(c, &bob, "todo", 10, 0, 0, &m, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(m->n, 0);
    aos_queue_msgs_free(m);
    aos_queue_infos *qi;
    assert_int_equal(aos_queue_list(c, &bob, &qi, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(qi->n, 0);
    aos_queue_infos_free(qi);
    /* mail reaches another agent's inbox and nothing else */
    aos_queue_send_opts to = {.to_agent = "alice"};
    assert_int_equal(aos_queue_send(c, &bob, "todo", "x", 1, &to, NULL, WHY, sizeof WHY),
                     AOS_ERR_REFUSED);
    /* an agent id that is not one is refused before it reaches storage */
    aos_call_opts evil = as("alice' OR '1'='1");
    assert_int_not_equal(aos_kv_get(c, &evil, "diary", &v, &len, NULL, WHY, sizeof WHY),
                         AOS_OK);
    /* no agent at all */
    aos_call_opts none = {0};
    assert_int_not_equal(aos_kv_get(c, &none, "diary", &v, &len, NULL, WHY, sizeof WHY),
                         AOS_OK);
    /* alice's data is untouched */
    assert_int_equal(aos_kv_get(c, &alice, "diary", &v, &len, NULL, WHY, sizeof WHY), AOS_OK);
    assert_string_equal((char *)v, "secret");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_writes_nothing),
        cmocka_unit_test(test_agents_are_isolated),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
