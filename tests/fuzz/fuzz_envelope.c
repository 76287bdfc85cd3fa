/* libFuzzer target for the envelope codec and the link's batch frames: decode anything; what
 * decodes must re-encode and decode to the same fields, what is refused must say why. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos.pb-c.h"
#include "aos/batch.h"
#include "aos/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_envelope: %s\n", what);
    abort();
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* Compares what the codec promises to carry. The span id travels only with a trace id. */
static void compare(const aos_env *a, const aos_env *b)
{
    if (a->kind != b->kind)
        broken("kind changed");
    if (a->has_request_id != b->has_request_id ||
        (a->has_request_id && memcmp(a->request_id, b->request_id, AOS_ID_LEN)))
        broken("request id changed");
    if (a->has_trace != b->has_trace ||
        (a->has_trace && (memcmp(a->trace_id, b->trace_id, AOS_ID_LEN) ||
                          memcmp(a->span_id, b->span_id, AOS_SPAN_LEN))))
        broken("trace changed");
    if (a->deadline_ms != b->deadline_ms || a->link_id != b->link_id ||
        a->status != b->status || a->seq != b->seq)
        broken("number field changed");
    if (strcmp(a->method, b->method) || strcmp(a->agent_id, b->agent_id) ||
        strcmp(a->error, b->error))
        broken("text field changed");
    if (a->payload_len != b->payload_len ||
        (a->payload_len && memcmp(a->payload, b->payload, a->payload_len)))
        broken("payload changed");
}

/* The payload of a kernel.status reply is the deepest kernel message: run the string
 * walker over whatever it decodes to, so it sees nested and repeated fields too. */
static void walk_payload(const aos_env *e)
{
    Aos__StatusReply *sr = aos__status_reply__unpack(NULL, e->payload_len, e->payload);
    if (sr) {
        (void)aos_pb_strings_valid(&sr->base);
        aos__status_reply__free_unpacked(sr, NULL);
    }
    Aos__StatsReply *st = aos__stats_reply__unpack(NULL, e->payload_len, e->payload);
    if (st) {
        (void)aos_pb_strings_valid(&st->base);
        aos__stats_reply__free_unpacked(st, NULL);
    }
    Aos__StreamChunk *sc = aos__stream_chunk__unpack(NULL, e->payload_len, e->payload);
    if (sc)
        aos__stream_chunk__free_unpacked(sc, NULL);
}

static int one_envelope(const uint8_t *data, size_t size);

/* A batch frame: every record is an envelope of its own; a malformed frame says why. */
static int batch(const uint8_t *data, size_t size)
{
    size_t off = 0, len;
    const uint8_t *rec;
    char why[128] = "";
    aos_err err;
    while ((err = aos_batch_next(data, size, &off, &rec, &len, why, sizeof why)) == AOS_OK) {
        if (rec < data || rec + len > data + size || off > size)
            broken("a batch record points outside its frame");
        one_envelope(rec, len);
    }
    if (err != AOS_ERR_NOT_FOUND && (err != AOS_ERR_PROTO || !why[0]))
        broken("batch walk failed without a reason");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (aos_batch_is(data, size))
        return batch(data, size);
    return one_envelope(data, size);
}

static int one_envelope(const uint8_t *data, size_t size)
{
    aos_env e, d;
    char why[256] = "";
    aos_err err = aos_env_decode(data, size, &e, why, sizeof why);
    if (err != AOS_OK) {
        if (err != AOS_ERR_PROTO && err != AOS_ERR_TOO_BIG)
            broken("decode failed with an unexpected code");
        if (why[0] == 0)
            broken("decode failed without a reason");
        if (!all_zero(&e, sizeof e))
            broken("a refused envelope left fields behind");
        return 0;
    }
    if (!aos_utf8_valid(e.error, strlen(e.error)) ||
        (e.method[0] && !aos_method_valid(e.method, strlen(e.method))) ||
        (e.agent_id[0] && !aos_agent_id_valid(e.agent_id, strlen(e.agent_id))) ||
        !aos_err_valid(e.status))
        broken("decode accepted an invalid field");
    walk_payload(&e);

    nng_msg *m = NULL;
    err = aos_env_encode(&e, &m);
    if (err != AOS_OK) {
        /* only possible when the input was at the cap already */
        if (err != AOS_ERR_TOO_BIG || size + 16 < AOS_MSG_MAX)
            broken("re-encode failed");
        aos_env_clear(&e);
        return 0;
    }
    err = aos_env_decode(nng_msg_body(m), nng_msg_len(m), &d, why, sizeof why);
    if (err != AOS_OK) {
        fprintf(stderr, "fuzz_envelope: re-decode: %s\n", why);
        broken("our own encoding does not decode");
    }
    compare(&e, &d);
    aos_env_clear(&d);
    nng_msg_free(m);
    aos_env_clear(&e);
    return 0;
}
