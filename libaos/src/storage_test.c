/* Unit tests of libaos storage: argument checks (refused before anything is sent) and the
 * encoding of requests and decoding of replies, against a tiny REP responder in the test. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "aos/storage.h"
#include "storage.pb-c.h"

/* What the responder saw last, and how it answers: the test sets `answer`. */
typedef struct seen {
    char method[AOS_METHOD_MAX + 1];
    char agent[AOS_AGENT_ID_MAX + 1];
    uint8_t request_id[AOS_ID_LEN];
    uint8_t payload[1 << 20];
    size_t len;
    int calls;
} seen;

static seen S;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* Fills the reply payload (buf, *len) and returns the status for a request. */
static int (*answer)(const aos_env *req, uint8_t *buf, size_t *len);
static nng_socket sock;
static pthread_t th;
static char dir[64], url[128];

static void *serve(void *arg)
{
    (void)arg;
    static uint8_t out[1 << 20];
    for (;;) {
        nng_msg *m;
        if (nng_recvmsg(sock, &m, 0) != 0)
            return NULL;
        aos_env req, rep;
        char why[128];
        if (aos_env_decode(nng_msg_body(m), nng_msg_len(m), &req, why, sizeof why) != AOS_OK) {
            nng_msg_free(m);
            continue;
        }
        nng_msg_free(m);
        pthread_mutex_lock(&mu);
        snprintf(S.method, sizeof S.method, "%s", req.method);
        snprintf(S.agent, sizeof S.agent, "%s", req.agent_id);
        memcpy(S.request_id, req.request_id, AOS_ID_LEN);
        S.len = req.payload_len < sizeof S.payload ? req.payload_len : sizeof S.payload;
        memcpy(S.payload, req.payload, S.len);
        S.calls++;
        size_t len = 0;
        int st = answer ? answer(&req, out, &len) : AOS_OK;
        pthread_mutex_unlock(&mu);
        aos_env_reply_to(&rep, &req, st, st ? "refused by the test" : NULL);
        rep.payload = out;
        rep.payload_len = len;
        nng_msg *r;
        if (aos_env_encode(&rep, &r) == AOS_OK && nng_sendmsg(sock, r, 0) != 0)
            nng_msg_free(r);
        aos_env_clear(&req);
    }
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/aos-stgclient-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(url, sizeof url, "ipc://%s/control.sock", dir);
    if (nng_rep0_open(&sock) || nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX) ||
        nng_listen(sock, url, NULL, 0))
        return -1;
    return pthread_create(&th, NULL, serve, NULL);
}

static int teardown(void **state)
{
    (void)state;
    /* safe here: this responder's peer never cuts a send half-way, the case in which
     * nng 1.5.2's close can hang */
    nng_close(sock);
    pthread_join(th, NULL);
    char p[128];
    snprintf(p, sizeof p, "%s/control.sock", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

static aos_conn *conn(void)
{
    aos_conn *c;
    char why[256];
    assert_int_equal(aos_connect(url, &c, why, sizeof why), AOS_OK);
    pthread_mutex_lock(&mu);
    memset(&S, 0, sizeof S);
    pthread_mutex_unlock(&mu);
    return c;
}

/* ---- arguments are checked before anything is sent ------------------------------------- */

static void test_argument_errors(void **state)
{
    (void)state;
    aos_conn *c = conn();
    char why[256], key[AOS_KEY_MAX + 2];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = 0;
    assert_int_equal(aos_kv_put(c, NULL, NULL, "v", 1, NULL, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "key"));
    assert_int_equal(aos_kv_put(c, NULL, "", "v", 1, NULL, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(aos_kv_put(c, NULL, key, "v", 1, NULL, NULL, why, sizeof why),
                     AOS_ERR_TOO_BIG);
    assert_int_equal(aos_kv_put(c, NULL, "k", NULL, 3, NULL, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    uint8_t *v;
    size_t len;
    assert_int_equal(aos_kv_get(c, NULL, NULL, &v, &len, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(aos_doc_put(c, NULL, NULL, "id", "{}", NULL, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(aos_queue_send(c, NULL, NULL, "b", 1, NULL, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(aos_queue_ack(c, NULL, "q", 1, NULL, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(aos_ckpt_prune(c, NULL, "n", 0, NULL, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(aos_step_append(c, NULL, "run", 1, NULL, "x", 1, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_int_equal(aos_blob_put(c, NULL, NULL, 0, NULL, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(aos_kv_put(NULL, NULL, "k", "v", 1, NULL, NULL, why, sizeof why),
                     AOS_ERR_USAGE);
    pthread_mutex_lock(&mu);
    assert_int_equal(S.calls, 0);   /* nothing reached the wire */
    pthread_mutex_unlock(&mu);
    aos_close(c);
}

/* ---- encoding and decoding ----------------------------------------------------------- */

static int put_answer(const aos_env *req, uint8_t *buf, size_t *len)
{
    (void)req;
    Aos__Storage__KvPutReply r = AOS__STORAGE__KV_PUT_REPLY__INIT;
    r.version = 42;
    *len = aos__storage__kv_put_reply__pack(&r, buf);
    return AOS_OK;
}

static void test_kv_put_encoding(void **state)
{
    (void)state;
    aos_conn *c = conn();
    answer = put_answer;
    char why[256];
    uint64_t v = 0;
    uint8_t rid[AOS_ID_LEN];
    memset(rid, 7, sizeof rid);
    aos_call_opts o = {.agent_id = "agent-7", .request_id = rid};
    aos_kv_put_opts po = {.cas = 1, .if_version = 3, .ttl_ms = 500};
    assert_int_equal(aos_kv_put(c, &o, "k\xc3\xa9y", "\0bin", 4, &po, &v, why, sizeof why),
                     AOS_OK);
    assert_int_equal(v, 42);
    pthread_mutex_lock(&mu);
    assert_string_equal(S.method, "storage.kv.put");
    assert_memory_equal(S.request_id, rid, AOS_ID_LEN);
    Aos__Storage__KvPutRequest *rq = aos__storage__kv_put_request__unpack(NULL, S.len,
                                                                          S.payload);
    pthread_mutex_unlock(&mu);
    assert_non_null(rq);
    assert_int_equal(rq->key.len, 4);
    assert_memory_equal(rq->key.data, "k\xc3\xa9y", 4);
    assert_int_equal(rq->value.len, 4);
    assert_memory_equal(rq->value.data, "\0bin", 4);
    assert_true(rq->cas);
    assert_int_equal(rq->if_version, 3);
    assert_int_equal(rq->ttl_ms, 500);
    aos__storage__kv_put_request__free_unpacked(rq, NULL);
    aos_close(c);
}

static int get_answer(const aos_env *req, uint8_t *buf, size_t *len)
{
    (void)req;
    Aos__Storage__KvGetReply r = AOS__STORAGE__KV_GET_REPLY__INIT;
    r.value.data = (uint8_t *)"hello";
    r.value.len = 5;
    r.version = 9;
    *len = aos__storage__kv_get_reply__pack(&r, buf);
    return AOS_OK;
}

static int error_answer(const aos_env *req, uint8_t *buf, size_t *len)
{
    (void)req;
    (void)buf;
    *len = 0;
    return AOS_ERR_NOT_FOUND;
}

static int junk_answer(const aos_env *req, uint8_t *buf, size_t *len)
{
    (void)req;
    memcpy(buf, "\xff\xff\xff", 3);
    *len = 3;
    return AOS_OK;
}

static void test_kv_get_decoding(void **state)
{
    (void)state;
    aos_conn *c = conn();
    char why[256];
    uint8_t *v;
    size_t len;
    uint64_t ver;
    answer = get_answer;
    assert_int_equal(aos_kv_get(c, NULL, "k", &v, &len, &ver, why, sizeof why), AOS_OK);
    assert_int_equal(len, 5);
    assert_int_equal(ver, 9);
    assert_string_equal((char *)v, "hello");   /* NUL-terminated past its length */
    free(v);
    answer = error_answer;
    assert_int_equal(aos_kv_get(c, NULL, "k", &v, &len, &ver, why, sizeof why),
                     AOS_ERR_NOT_FOUND);
    assert_null(v);
    assert_non_null(strstr(why, "refused by the test"));
    answer = junk_answer;
    assert_int_equal(aos_kv_get(c, NULL, "k", &v, &len, &ver, why, sizeof why), AOS_ERR_PROTO);
    assert_null(v);
    aos_close(c);
}

/* blob_put: chunks with contiguous offsets under one upload id, then a commit */
static uint64_t next_offset;
static int chunks;

static int blob_answer(const aos_env *req, uint8_t *buf, size_t *len)
{
    *len = 0;
    if (!strcmp(req->method, "storage.blob.write")) {
        Aos__Storage__BlobWriteRequest *w =
            aos__storage__blob_write_request__unpack(NULL, req->payload_len, req->payload);
        int ok = w && w->offset == next_offset && w->upload.len == 16 && w->data.len > 0 &&
                 w->data.len <= (256u << 10);
        if (ok) {
            next_offset += w->data.len;
            chunks++;
        }
        aos__storage__blob_write_request__free_unpacked(w, NULL);
        return ok ? AOS_OK : AOS_ERR_CONFLICT;
    }
    Aos__Storage__BlobInfo bi = AOS__STORAGE__BLOB_INFO__INIT;
    Aos__Storage__BlobCommitReply r = AOS__STORAGE__BLOB_COMMIT_REPLY__INIT;
    static uint8_t sha[32];
    memset(sha, 0xab, sizeof sha);
    bi.sha256.data = sha;
    bi.sha256.len = 32;
    bi.size = next_offset;
    r.blob = &bi;
    *len = aos__storage__blob_commit_reply__pack(&r, buf);
    return AOS_OK;
}

static void test_blob_chunks(void **state)
{
    (void)state;
    aos_conn *c = conn();
    char why[256];
    size_t n = 600000;
    uint8_t *data = calloc(1, n), sha[32];
    next_offset = 0;
    chunks = 0;
    answer = blob_answer;
    assert_int_equal(aos_blob_put(c, NULL, data, n, sha, why, sizeof why), AOS_OK);
    assert_int_equal(chunks, 3);
    assert_int_equal(next_offset, n);
    assert_int_equal(sha[0], 0xab);
    pthread_mutex_lock(&mu);
    assert_string_equal(S.method, "storage.blob.commit");
    pthread_mutex_unlock(&mu);
    free(data);
    aos_close(c);
}

static int recv_answer(const aos_env *req, uint8_t *buf, size_t *len)
{
    Aos__Storage__QueueRecvRequest *rq =
        aos__storage__queue_recv_request__unpack(NULL, req->payload_len, req->payload);
    Aos__Storage__QueueMessage m = AOS__STORAGE__QUEUE_MESSAGE__INIT, *mp = &m;
    Aos__Storage__QueueRecvReply r = AOS__STORAGE__QUEUE_RECV_REPLY__INIT;
    static uint8_t receipt[16] = {1, 2, 3};
    m.id = 5;
    m.tries = 2;
    m.body.data = (uint8_t *)"job";
    m.body.len = 3;
    m.receipt.data = receipt;
    m.receipt.len = 16;
    m.from_agent.data = (uint8_t *)"boss";
    m.from_agent.len = 4;
    r.messages = &mp;
    r.n_messages = 1;
    /* the deadline must outlive the wait the request asks for */
    int ok = rq && rq->wait_ms == 40000 && req->deadline_ms > aos_now_ms() + 40000;
    aos__storage__queue_recv_request__free_unpacked(rq, NULL);
    *len = aos__storage__queue_recv_reply__pack(&r, buf);
    return ok ? AOS_OK : AOS_ERR_USAGE;
}

static void test_queue_recv(void **state)
{
    (void)state;
    aos_conn *c = conn();
    char why[256];
    answer = recv_answer;
    aos_queue_msgs *m;
    assert_int_equal(aos_queue_recv(c, NULL, "jobs", 1, 0, 40000, &m, why, sizeof why), AOS_OK);
    assert_int_equal(m->n, 1);
    assert_int_equal(m->msgs[0].id, 5);
    assert_int_equal(m->msgs[0].tries, 2);
    assert_string_equal((char *)m->msgs[0].body, "job");
    assert_string_equal(m->msgs[0].from_agent, "boss");
    assert_int_equal(m->msgs[0].receipt[2], 3);
    aos_queue_msgs_free(m);
    aos_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argument_errors), cmocka_unit_test(test_kv_put_encoding),
        cmocka_unit_test(test_kv_get_decoding), cmocka_unit_test(test_blob_chunks),
        cmocka_unit_test(test_queue_recv),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
