/* aos-storage through a real aosd and PostgreSQL: every operation via libaos and the aosctl
 * commands with their exit codes, CAS conflicts, TTL expiry, quotas, redelivery, dead letters. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"

static h_aosd *H;
static PGconn *ADMIN;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **st)
{
    (void)st;
    /* small limits, so that quotas and dead letters are quick to reach */
    setenv("AOS_STORAGE_BLOB_QUOTA", "3000000", 1);
    setenv("AOS_STORAGE_MAX_TRIES", "2", 1);
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

static long long sql_count(const char *sql)
{
    return su_count(ADMIN, sql);
}

static aos_call_opts as(const char *agent)
{
    aos_call_opts o = {.agent_id = agent};
    return o;
}

static char WHY[AOS_ERRMSG_MAX + 1];

/* ---- key/value -------------------------------------------------------------------------- */

static void test_kv(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("kv-agent");
    uint64_t v;
    assert_int_equal(aos_kv_put(c, &o, "colour", "blue", 4, NULL, &v, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(v, 1);
    assert_int_equal(aos_kv_put(c, &o, "colour", "green", 5, NULL, &v, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(v, 2);
    uint8_t *val;
    size_t len;
    assert_int_equal(aos_kv_get(c, &o, "colour", &val, &len, &v, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(len, 5);
    assert_string_equal((char *)val, "green");
    free(val);

    /* compare-and-set */
    aos_kv_put_opts cas = {.cas = 1, .if_version = 1};
    assert_int_equal(aos_kv_put(c, &o, "colour", "red", 3, &cas, &v, WHY, sizeof WHY),
                     AOS_ERR_CONFLICT);
    assert_non_null(strstr(WHY, "version 2"));
    cas.if_version = 2;
    assert_int_equal(aos_kv_put(c, &o, "colour", "red", 3, &cas, &v, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(v, 3);

    /* list by prefix, paged */
    char key[32];
    for (int i = 0; i < 12; i++) {
        snprintf(key, sizeof key, "list/%02d", i);
        assert_int_equal(aos_kv_put(c, &o, key, "x", 1, NULL, NULL, WHY, sizeof WHY), AOS_OK);
    }
    aos_kv_page *pg;
    assert_int_equal(aos_kv_list(c, &o, "list/", NULL, 5, 1, &pg, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(pg->n, 5);
    assert_string_equal(pg->entries[0].key, "list/00");
    assert_int_equal(pg->entries[0].value_len, 1);
    assert_non_null(pg->next);
    char *next = strdup(pg->next);
    aos_kv_page_free(pg);
    assert_int_equal(aos_kv_list(c, &o, "list/", next, 100, 0, &pg, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(pg->n, 7);
    assert_null(pg->next);
    assert_string_equal(pg->entries[0].key, "list/05");
    aos_kv_page_free(pg);
    free(next);

    /* delete, and compare-and-delete */
    uint64_t stale = 1;
    assert_int_equal(aos_kv_delete(c, &o, "colour", &stale, WHY, sizeof WHY), AOS_ERR_CONFLICT);
    assert_int_equal(aos_kv_delete(c, &o, "colour", NULL, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(aos_kv_get(c, &o, "colour", &val, &len, NULL, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
    assert_int_equal(aos_kv_delete(c, &o, "colour", NULL, WHY, sizeof WHY), AOS_ERR_NOT_FOUND);

    /* counters, and an idempotent retry of one increment */
    int64_t n;
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    aos_call_opts once = {.agent_id = "kv-agent", .request_id = rid};
    assert_int_equal(aos_kv_incr(c, &once, "hits", 5, &n, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(n, 5);
    assert_int_equal(aos_kv_incr(c, &once, "hits", 5, &n, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(n, 5);   /* the recorded answer: not applied twice */
    assert_int_equal(aos_kv_incr(c, &o, "hits", -1, &n, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(n, 4);
}

static void test_kv_ttl(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("ttl-agent");
    aos_kv_put_opts ttl = {.ttl_ms = 300};
    assert_int_equal(aos_kv_put(c, &o, "brief", "here", 4, &ttl, NULL, WHY, sizeof WHY), AOS_OK);
    ttl.ttl_ms = 3600 * 1000;
    assert_int_equal(aos_kv_put(c, &o, "long", "here", 4, &ttl, NULL, WHY, sizeof WHY), AOS_OK);
    nap_ms(700);
    uint8_t *val;
    size_t len;
    assert_int_equal(aos_kv_get(c, &o, "brief", &val, &len, NULL, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
    assert_int_equal(aos_kv_get(c, &o, "long", &val, &len, NULL, WHY, sizeof WHY), AOS_OK);
    free(val);
    aos_kv_page *pg;
    assert_int_equal(aos_kv_list(c, &o, NULL, NULL, 0, 0, &pg, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(pg->n, 1);
    assert_string_equal(pg->entries[0].key, "long");
    assert_true(pg->entries[0].expires_at_ms > 0);
    aos_kv_page_free(pg);
}

/* ---- documents, blobs, checkpoints, steps ------------------------------------------------ */

static void test_docs(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("doc-agent");
    uint64_t v;
    assert_int_equal(aos_doc_put(c, &o, "notes", "n1", "{\"topic\": \"pg\", \"n\": 1}", NULL,
                                 &v, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(aos_doc_put(c, &o, "notes", "n2", "{\"topic\": \"nng\", \"n\": 2}", NULL,
                                 &v, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(aos_doc_put(c, &o, "notes", "n3", "{\"topic\": \"pg\"", NULL, &v, WHY,
                                 sizeof WHY), AOS_ERR_USAGE);
    assert_non_null(strstr(WHY, "JSON"));
    char *json;
    assert_int_equal(aos_doc_get(c, &o, "notes", "n1", &json, &v, WHY, sizeof WHY), AOS_OK);
    json_t *j = json_loads(json, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "topic")), "pg");
    json_decref(j);
    free(json);
    aos_doc_page *dp;
    assert_int_equal(aos_doc_query(c, &o, "notes", "{\"topic\": \"pg\"}", NULL, 0, &dp, WHY,
                                   sizeof WHY), AOS_OK);
    assert_int_equal(dp->n, 1);
    assert_string_equal(dp->docs[0].id, "n1");
    aos_doc_page_free(dp);
    uint64_t stale = 7;
    assert_int_equal(aos_doc_put(c, &o, "notes", "n1", "{}", &stale, &v, WHY, sizeof WHY),
                     AOS_ERR_CONFLICT);
    assert_int_equal(aos_doc_delete(c, &o, "notes", "n2", WHY, sizeof WHY), AOS_OK);
    assert_int_equal(aos_doc_get(c, &o, "notes", "n2", &json, &v, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
}

static void test_blobs(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts a = as("blob-a"), b = as("blob-b");
    size_t len = 2500000;   /* ten chunks and a bit */
    uint8_t *data = malloc(len), sha[AOS_SHA256_LEN], sha2[AOS_SHA256_LEN];
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 13);
    assert_int_equal(aos_blob_put(c, &a, data, len, sha, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(aos_blob_put(c, &b, data, len, sha2, WHY, sizeof WHY), AOS_OK);
    assert_memory_equal(sha, sha2, AOS_SHA256_LEN);
    /* stored once */
    assert_int_equal(sql_count("SELECT count(*) FROM storage.blob"), 1);
    assert_int_equal(sql_count("SELECT refs FROM storage.blob"), 2);

    uint8_t *back;
    size_t got;
    uint64_t size;
    assert_int_equal(aos_blob_get(c, &b, sha, 0, 0, len, &back, &got, &size, WHY, sizeof WHY),
                     AOS_OK);
    assert_int_equal(got, len);
    assert_int_equal(size, len);
    assert_memory_equal(back, data, len);
    free(back);
    assert_int_equal(aos_blob_get(c, &a, sha, 1000000, 10, len, &back, &got, NULL, WHY,
                                  sizeof WHY), AOS_OK);
    assert_memory_equal(back, data + 1000000, 10);
    free(back);
    /* someone who never stored it cannot read it */
    aos_call_opts x = as("blob-x");
    assert_int_equal(aos_blob_get(c, &x, sha, 0, 0, len, &back, &got, NULL, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);

    /* the quota (3000000 bytes per agent): a-agent holds 2500000 */
    memset(data, 'q', 600000);
    assert_int_equal(aos_blob_put(c, &a, data, 600000, sha2, WHY, sizeof WHY), AOS_ERR_QUOTA);
    assert_non_null(strstr(WHY, "quota"));
    assert_int_equal(aos_blob_delete(c, &a, sha, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(aos_blob_delete(c, &b, sha, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(sql_count("SELECT count(*) FROM storage.blob_chunk"), 0);
    free(data);
}

static void test_checkpoints_steps(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("ck-agent");
    uint64_t v;
    for (int i = 1; i <= 4; i++) {
        char d[16];
        snprintf(d, sizeof d, "state %d", i);
        assert_int_equal(aos_ckpt_save(c, &o, "brain", d, strlen(d), "{\"turn\": 3}", &v, WHY,
                                       sizeof WHY), AOS_OK);
        assert_int_equal(v, (uint64_t)i);
    }
    uint8_t *data;
    size_t len;
    aos_ckpt_info info;
    assert_int_equal(aos_ckpt_load(c, &o, "brain", 0, &data, &len, &info, WHY, sizeof WHY),
                     AOS_OK);
    assert_string_equal((char *)data, "state 4");
    assert_int_equal(info.version, 4);
    assert_non_null(strstr(info.meta, "turn"));
    free(data);
    aos_ckpt_info_clear(&info);
    assert_int_equal(aos_ckpt_load(c, &o, "brain", 2, &data, &len, NULL, WHY, sizeof WHY),
                     AOS_OK);
    assert_string_equal((char *)data, "state 2");
    free(data);
    uint64_t deleted;
    assert_int_equal(aos_ckpt_prune(c, &o, "brain", 2, &deleted, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(deleted, 2);
    aos_ckpt_page *cl;
    assert_int_equal(aos_ckpt_list(c, &o, NULL, 0, &cl, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(cl->n, 2);
    assert_int_equal(cl->items[0].version, 4);
    aos_ckpt_page_free(cl);

    int existed;
    assert_int_equal(aos_step_append(c, &o, "run-7", 1, "llm", "hello", 5, &existed, WHY,
                                     sizeof WHY), AOS_OK);
    assert_int_equal(aos_step_append(c, &o, "run-7", 2, "tool", "ls", 2, &existed, WHY,
                                     sizeof WHY), AOS_OK);
    assert_int_equal(aos_step_append(c, &o, "run-7", 2, "tool", "ls", 2, &existed, WHY,
                                     sizeof WHY), AOS_OK);
    assert_true(existed);
    assert_int_equal(aos_step_append(c, &o, "run-7", 2, "tool", "rm", 2, &existed, WHY,
                                     sizeof WHY), AOS_ERR_CONFLICT);
    assert_int_equal(aos_step_append(c, &o, "run-7", 9, "tool", "x", 1, &existed, WHY,
                                     sizeof WHY), AOS_ERR_CONFLICT);
    aos_step_page *sp;
    assert_int_equal(aos_step_read(c, &o, "run-7", 1, 0, &sp, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(sp->n, 2);
    assert_int_equal(sp->last_step, 2);
    assert_string_equal(sp->steps[1].kind, "tool");
    aos_step_page_free(sp);
}

/* ---- queues ------------------------------------------------------------------------------ */

static void test_queue_redelivery_dead(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("q-agent");
    uint64_t id;
    assert_int_equal(aos_queue_send(c, &o, "tasks", "job", 3, NULL, &id, WHY, sizeof WHY),
                     AOS_OK);
    aos_queue_msgs *m;
    assert_int_equal(aos_queue_recv(c, &o, "tasks", 1, 300, 0, &m, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(m->n, 1);
    assert_int_equal(m->msgs[0].id, id);
    assert_int_equal(m->msgs[0].tries, 1);
    uint8_t first[AOS_RECEIPT_LEN];
    memcpy(first, m->msgs[0].receipt, sizeof first);
    aos_queue_msgs_free(m);
    /* not acked: back after the visibility timeout, with a new receipt */
    nap_ms(600);
    assert_int_equal(aos_queue_recv(c, &o, "tasks", 1, 300, 0, &m, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(m->n, 1);
    assert_int_equal(m->msgs[0].id, id);
    assert_int_equal(m->msgs[0].tries, 2);
    aos_queue_msgs_free(m);
    assert_int_equal(aos_queue_ack(c, &o, "tasks", id, first, WHY, sizeof WHY),
                     AOS_ERR_NOT_FOUND);
    /* max tries is 2 here: the third time it goes to the dead-letter queue */
    nap_ms(600);
    assert_int_equal(aos_queue_recv(c, &o, "tasks", 1, 300, 0, &m, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(m->n, 0);
    aos_queue_msgs_free(m);
    assert_int_equal(aos_queue_recv(c, &o, "tasks.dead", 1, 30000, 0, &m, WHY, sizeof WHY),
                     AOS_OK);
    assert_int_equal(m->n, 1);
    assert_int_equal(m->msgs[0].id, id);
    assert_int_equal(aos_queue_ack(c, &o, "tasks.dead", id, m->msgs[0].receipt, WHY,
                                   sizeof WHY), AOS_OK);
    aos_queue_msgs_free(m);
}

static void *late_sender(void *arg)
{
    (void)arg;
    nap_ms(300);
    aos_call_opts o = as("q-waiter");
    char why[AOS_ERRMSG_MAX + 1];
    aos_queue_send(h_conn(H), &o, "bell", "ring", 4, NULL, NULL, why, sizeof why);
    return NULL;
}

static void test_queue_wait(void **st)
{
    (void)st;
    aos_conn *c = h_conn(H);
    aos_call_opts o = as("q-waiter");
    pthread_t th;
    pthread_create(&th, NULL, late_sender, NULL);
    aos_queue_msgs *m;
    /* the receiver waits up to 20 s; the send wakes it through LISTEN/NOTIFY */
    assert_int_equal(aos_queue_recv(c, &o, "bell", 1, 0, 20000, &m, WHY, sizeof WHY), AOS_OK);
    pthread_join(th, NULL);
    assert_int_equal(m->n, 1);
    assert_string_equal((char *)m->msgs[0].body, "ring");
    aos_queue_msgs_free(m);

    /* mail between agents goes only to the inbox */
    aos_queue_send_opts mail = {.to_agent = "q-other"};
    assert_int_equal(aos_queue_send(c, &o, "inbox", "hi", 2, &mail, NULL, WHY, sizeof WHY),
                     AOS_OK);
    assert_int_equal(aos_queue_send(c, &o, "tasks", "hi", 2, &mail, NULL, WHY, sizeof WHY),
                     AOS_ERR_REFUSED);
    aos_call_opts other = as("q-other");
    assert_int_equal(aos_queue_recv(c, &other, "inbox", 10, 0, 0, &m, WHY, sizeof WHY), AOS_OK);
    assert_int_equal(m->n, 1);
    assert_string_equal(m->msgs[0].from_agent, "q-waiter");
    aos_queue_msgs_free(m);
}

/* ---- aosctl --------------------------------------------------------------------------- */

#define CTL(out, ...) h_aosctl(H, out, sizeof out, (const char *const[]){__VA_ARGS__, NULL})

static void test_cli(void **st)
{
    (void)st;
    char out[8192];
    assert_int_equal(CTL(out, "kv", "put", "cli-agent", "greeting", "hello world"), 0);
    assert_int_equal(CTL(out, "kv", "get", "cli-agent", "greeting"), 0);
    assert_string_equal(out, "hello world");   /* the value alone */
    assert_int_equal(CTL(out, "kv", "get", "cli-agent", "absent"), 3);
    assert_int_equal(CTL(out, "kv", "put", "cli-agent", "greeting", "x", "--if-version", "9"),
                     5);
    assert_int_equal(CTL(out, "--json", "kv", "put", "cli-agent", "greeting", "x",
                         "--if-version", "9"), 5);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "error"), "code")),
                     5);
    json_decref(j);
    assert_int_equal(CTL(out, "--json", "kv", "get", "cli-agent", "greeting"), 0);
    j = json_loads(out, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "value")), "hello world");
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
    json_decref(j);
    assert_int_equal(CTL(out, "kv", "put", "cli-agent", "greet2", "hi"), 0);
    assert_int_equal(CTL(out, "kv", "ls", "cli-agent", "greet"), 0);
    assert_string_equal(out, "greet2\ngreeting\n");
    assert_int_equal(CTL(out, "kv", "rm", "cli-agent", "greet2"), 0);
    assert_int_equal(CTL(out, "kv", "rm", "cli-agent", "greet2"), 3);
    assert_int_equal(CTL(out, "kv", "get", "cli-agent"), 2);
    assert_int_equal(CTL(out, "kv", "get", "bad agent!", "k"), 2);

    assert_int_equal(CTL(out, "queue", "send", "cli-agent", "q1", "first"), 0);
    assert_int_equal(CTL(out, "queue", "send", "cli-agent", "q1", "second"), 0);
    assert_int_equal(CTL(out, "queue", "ls", "cli-agent"), 0);
    assert_non_null(strstr(out, "q1"));
    assert_int_equal(CTL(out, "--json", "queue", "recv", "cli-agent", "q1"), 0);
    j = json_loads(out, 0, NULL);
    json_t *msg = json_array_get(json_object_get(j, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(msg, "body")), "first");
    char id[32], receipt[64];
    snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(msg, "id")));
    snprintf(receipt, sizeof receipt, "%s",
             json_string_value(json_object_get(msg, "receipt")));
    json_decref(j);
    assert_int_equal(CTL(out, "queue", "ack", "cli-agent", "q1", id, receipt), 0);
    assert_int_equal(CTL(out, "queue", "ack", "cli-agent", "q1", id, receipt), 3);
    assert_int_equal(CTL(out, "queue", "ack", "cli-agent", "q1", id, "nothex"), 2);
    assert_int_equal(CTL(out, "queue", "send", "cli-agent", "q'; DROP TABLE x; --", "b"), 2);

    aos_call_opts o = as("cli-agent");
    assert_int_equal(aos_ckpt_save(h_conn(H), &o, NULL, "s", 1, NULL, NULL, WHY, sizeof WHY),
                     AOS_OK);
    assert_int_equal(CTL(out, "checkpoint", "ls", "cli-agent"), 0);
    assert_non_null(strstr(out, "default"));
    assert_int_equal(CTL(out, "--json", "checkpoint", "ls", "cli-agent"), 0);
    j = json_loads(out, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(j, "checkpoints")), 1);
    json_decref(j);

    /* every command describes itself */
    const char *cmds[][2] = {{"kv", "put"},      {"kv", "get"},       {"kv", "ls"},
                             {"kv", "rm"},       {"queue", "send"},   {"queue", "recv"},
                             {"queue", "ack"},   {"queue", "ls"},     {"checkpoint", "ls"}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(CTL(out, cmds[i][0], cmds[i][1], "--desc"), 0);
        j = json_loads(out, 0, NULL);
        assert_non_null(j);
        assert_true(json_is_array(json_object_get(j, "arguments")));
        assert_true(json_is_object(json_object_get(j, "output")));
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_kv_ttl),
        cmocka_unit_test(test_docs),
        cmocka_unit_test(test_blobs),
        cmocka_unit_test(test_checkpoints_steps),
        cmocka_unit_test(test_queue_redelivery_dead),
        cmocka_unit_test(test_queue_wait),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
