/* Writes the fuzzer's seed corpus: one valid envelope per file, covering every kind and the
 * kernel payloads, so libFuzzer starts from messages deep inside the validation rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos.pb-c.h"
#include "aos/batch.h"
#include "aos/envelope.h"

static int n_written;

static int write_file(const char *dir, const void *buf, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%02d", dir, n_written++);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "gen_seeds: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fwrite(buf, 1, len, f) == len;
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "gen_seeds: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

static int emit(const char *dir, const aos_env *e)
{
    nng_msg *m;
    if (aos_env_encode(e, &m) != AOS_OK) {
        fprintf(stderr, "gen_seeds: encode failed\n");
        return -1;
    }
    int r = write_file(dir, nng_msg_body(m), nng_msg_len(m));
    nng_msg_free(m);
    return r;
}

static void request(aos_env *e, const char *method, const void *payload, size_t len)
{
    aos_env_init(e, AOS_KIND_REQUEST);
    for (int i = 0; i < AOS_ID_LEN; i++)
        e->request_id[i] = (uint8_t)(0x11 * (i + 1));
    e->has_request_id = 1;
    snprintf(e->method, sizeof e->method, "%s", method);
    e->payload = payload;
    e->payload_len = len;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    aos_env e, r;
    int rc = 0;

    /* kernel.status request, and its reply with two children */
    request(&e, "kernel.status", NULL, 0);
    rc |= emit(dir, &e);
    Aos__ChildStatus c[2] = {AOS__CHILD_STATUS__INIT, AOS__CHILD_STATUS__INIT};
    Aos__ChildStatus *cp[2] = {&c[0], &c[1]};
    c[0].name = "storage";
    c[0].pid = 4242;
    c[0].state = "running";
    c[0].uptime_ms = 12345;
    c[1].name = "postgres";
    c[1].state = "backoff";
    c[1].restarts = 3;
    c[1].last_exit = "signal 9 (Killed)";
    c[1].reason = "restart in 2 s";
    c[1].next_start_ms = 1767225600000u;
    Aos__StatusReply sr = AOS__STATUS_REPLY__INIT;
    sr.aosd_pid = 4000;
    sr.version = "0.1.0";
    sr.data_dir = "/var/lib/aos";
    sr.pg_mode = "embedded";
    sr.n_children = 2;
    sr.children = cp;
    sr.routed = 7;
    uint8_t pbuf[1024];
    size_t plen = aos__status_reply__pack(&sr, pbuf);
    aos_env_reply_to(&r, &e, AOS_OK, NULL);
    r.payload = pbuf;
    r.payload_len = plen;
    rc |= emit(dir, &r);

    /* a ping with tracing and an agent, and its reply */
    Aos__PingRequest pq = AOS__PING_REQUEST__INIT;
    pq.data.data = (uint8_t *)"hello";
    pq.data.len = 5;
    uint8_t qbuf[64];
    size_t qlen = aos__ping_request__pack(&pq, qbuf);
    request(&e, "storage.ping", qbuf, qlen);
    memset(e.trace_id, 0xab, AOS_ID_LEN);
    memset(e.span_id, 0xcd, AOS_SPAN_LEN);
    e.has_trace = 1;
    e.deadline_ms = 1767225600000u;
    snprintf(e.agent_id, sizeof e.agent_id, "agent:demo-1");
    rc |= emit(dir, &e);
    Aos__PingReply pr = AOS__PING_REPLY__INIT;
    pr.data = pq.data;
    pr.pid = 77;
    aos_env_reply_to(&r, &e, AOS_OK, NULL);
    r.link_id = 9;
    r.payload = qbuf;
    r.payload_len = aos__ping_reply__pack(&pr, qbuf);
    rc |= emit(dir, &r);

    /* an error reply with a multibyte message */
    aos_env_reply_to(&r, &e, AOS_ERR_NOT_FOUND, "no key \"caf\xc3\xa9\" \xf0\x9f\x98\x80");
    rc |= emit(dir, &r);

    /* stats reply with a repeated message */
    Aos__Stat s[2] = {AOS__STAT__INIT, AOS__STAT__INIT};
    Aos__Stat *sp[2] = {&s[0], &s[1]};
    s[0].name = "requests";
    s[0].value = 10;
    s[1].name = "pg";
    s[1].text = "connected";
    Aos__StatsReply st = AOS__STATS_REPLY__INIT;
    st.n_stats = 2;
    st.stats = sp;
    request(&e, "memory.stats", NULL, 0);
    aos_env_reply_to(&r, &e, AOS_OK, NULL);
    r.payload = pbuf;
    r.payload_len = aos__stats_reply__pack(&st, pbuf);
    rc |= emit(dir, &r);

    /* server control requests */
    Aos__ServerRequest sq = AOS__SERVER_REQUEST__INIT;
    sq.name = "llm";
    request(&e, "kernel.server.restart", qbuf, aos__server_request__pack(&sq, qbuf));
    rc |= emit(dir, &e);

    /* the link kinds, bare and with a link id */
    static const int kinds[] = {AOS_KIND_REPLY_PART, AOS_KIND_CANCEL, AOS_KIND_READY,
                                AOS_KIND_HEARTBEAT, AOS_KIND_STOP};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        aos_env_init(&e, kinds[i]);
        e.link_id = i + 1;
        rc |= emit(dir, &e);
    }

    /* a streamed part, a chunk of two parts to a client, and a batch frame of three */
    aos_env_init(&e, AOS_KIND_REPLY_PART);
    e.link_id = 12;
    e.seq = 3;
    e.payload = (const uint8_t *)"delta";
    e.payload_len = 5;
    rc |= emit(dir, &e);
    ProtobufCBinaryData parts[2] = {{3, (uint8_t *)"abc"}, {0, NULL}};
    Aos__StreamChunk ch = AOS__STREAM_CHUNK__INIT;
    ch.first_seq = 7;
    ch.n_parts = 2;
    ch.parts = parts;
    request(&e, "storage.test.stream", NULL, 0);
    aos_env_reply_to(&r, &e, AOS_OK, NULL);
    r.kind = AOS_KIND_REPLY_PART;
    r.seq = 7;
    r.payload = pbuf;
    r.payload_len = aos__stream_chunk__pack(&ch, pbuf);
    rc |= emit(dir, &r);
    aos_batch b;
    aos_batch_init(&b, AOS_MSG_MAX);
    for (int i = 0; i < 3; i++) {
        nng_msg *m = NULL;
        request(&e, "storage.ping", qbuf, qlen);
        e.link_id = 100u + (unsigned)i;
        if (aos_env_encode(&e, &m) != AOS_OK ||
            aos_batch_add(&b, nng_msg_body(m), nng_msg_len(m)) != AOS_OK)
            rc = 1;
        if (m)
            nng_msg_free(m);
    }
    nng_msg *bm = aos_batch_take(&b);
    if (bm) {
        rc |= write_file(dir, nng_msg_body(bm), nng_msg_len(bm));
        nng_msg_free(bm);
    }
    return rc ? 1 : 0;
}
