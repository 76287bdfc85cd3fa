/* Envelope encode/decode with full validation of everything a peer controls.
 * protobuf-c checks structure only; UTF-8, charsets, lengths and enums are checked here. */
#include "aos/envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "aos.pb-c.h"
#include "aos/err.h"

int aos_utf8_valid(const void *s, size_t n)
{
    if (n == 0) /* an empty field may come with a NULL pointer */
        return 1;
    const uint8_t *p = s, *end = p + n;
    while (p < end) {
        uint8_t c = *p;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            need = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if ((size_t)(end - p) <= need)
            return 0;
        for (size_t i = 1; i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* overlong forms, surrogates and values past Unicode are not UTF-8 */
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) ||
            (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += need + 1;
    }
    return 1;
}

int aos_method_valid(const char *s, size_t n)
{
    int dot = 0;
    if (n == 0 || n > AOS_METHOD_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.')
            dot = 1;
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return dot && s[0] != '.' && s[n - 1] != '.';
}

int aos_agent_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > AOS_AGENT_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

/* Walks the descriptor: every string field, in nested and repeated messages too. */
int aos_pb_strings_valid(const ProtobufCMessage *m)
{
    if (!m)
        return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *)((const char *)m + f->quantifier_offset);
            void *const *arr = *(void *const *const *)base;
            for (size_t k = 0; k < cnt; k++) {
                if (f->type == PROTOBUF_C_TYPE_STRING) {
                    const char *s = arr[k];
                    if (s && !aos_utf8_valid(s, strlen(s)))
                        return 0;
                } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                    if (!aos_pb_strings_valid(arr[k]))
                        return 0;
                }
            }
        } else if (f->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(const char *const *)base;
            if (s && !aos_utf8_valid(s, strlen(s)))
                return 0;
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (!aos_pb_strings_valid(*(const ProtobufCMessage *const *)base))
                return 0;
        }
    }
    return 1;
}

void aos_env_init(aos_env *e, int kind)
{
    memset(e, 0, sizeof *e);
    e->kind = kind;
}

void aos_env_clear(aos_env *e)
{
    if (e->pb_)
        aos__envelope__free_unpacked(e->pb_, NULL);
    memset(e, 0, sizeof *e);
}

static int copy_text(char *dst, size_t cap, ProtobufCBinaryData b)
{
    if (b.len >= cap || !aos_utf8_valid(b.data, b.len))
        return 0;
    if (b.len) /* an empty field may have a NULL pointer */
        memcpy(dst, b.data, b.len);
    dst[b.len] = 0;
    return 1;
}

aos_err aos_env_decode(const void *buf, size_t len, aos_env *e, char *why, size_t whylen)
{
    memset(e, 0, sizeof *e);
    if (len == 0) {
        aos_say(why, whylen, "empty message");
        return AOS_ERR_PROTO;
    }
    if (len > AOS_MSG_MAX) {
        aos_say(why, whylen, "message of %zu bytes exceeds the %u byte cap", len, AOS_MSG_MAX);
        return AOS_ERR_TOO_BIG;
    }
    Aos__Envelope *pb = aos__envelope__unpack(NULL, len, buf);
    if (!pb) {
        aos_say(why, whylen, "not a protobuf envelope (%zu bytes)", len);
        return AOS_ERR_PROTO;
    }
    const char *bad = NULL;
    if (pb->version != AOS_WIRE_VERSION)
        bad = "unsupported wire version";
    else if ((int)pb->kind < AOS_KIND_REQUEST || (int)pb->kind > AOS_KIND_STOP)
        bad = "unknown envelope kind";
    else if (pb->request_id.len != 0 && pb->request_id.len != AOS_ID_LEN)
        bad = "request id must be 16 bytes";
    else if (pb->kind == (Aos__Kind)AOS_KIND_REQUEST && pb->request_id.len != AOS_ID_LEN)
        bad = "a request needs a 16-byte request id";
    else if (pb->trace_id.len != 0 && pb->trace_id.len != AOS_ID_LEN)
        bad = "trace id must be 16 bytes";
    else if (pb->span_id.len != 0 && pb->span_id.len != AOS_SPAN_LEN)
        bad = "span id must be 8 bytes";
    else if (pb->method.len && !aos_method_valid((const char *)pb->method.data, pb->method.len))
        bad = "invalid method name";
    else if (pb->kind == (Aos__Kind)AOS_KIND_REQUEST && pb->method.len == 0)
        bad = "a request needs a method";
    else if (pb->agent_id.len &&
             !aos_agent_id_valid((const char *)pb->agent_id.data, pb->agent_id.len))
        bad = "invalid agent id";
    else if (pb->run_id.len &&
             (pb->run_id.len > AOS_RUN_ID_MAX ||
              !aos_agent_id_valid((const char *)pb->run_id.data, pb->run_id.len)))
        bad = "invalid run id";
    else if (pb->step && !pb->run_id.len)
        bad = "a step needs a run id";
    else if (pb->key_hash.len != 0 && pb->key_hash.len != AOS_KEY_HASH_LEN)
        bad = "key hash must be 32 bytes";
    else if (!aos_err_valid(pb->status))
        bad = "unknown status code";
    else if (!copy_text(e->error, sizeof e->error, pb->error))
        bad = "error text too long or not UTF-8";
    if (bad) {
        aos_say(why, whylen, "%s", bad);
        aos__envelope__free_unpacked(pb, NULL);
        memset(e, 0, sizeof *e);
        return AOS_ERR_PROTO;
    }
    e->kind = (int)pb->kind;
    e->has_request_id = pb->request_id.len == AOS_ID_LEN;
    if (e->has_request_id)
        memcpy(e->request_id, pb->request_id.data, AOS_ID_LEN);
    e->has_trace = pb->trace_id.len == AOS_ID_LEN;
    if (e->has_trace)
        memcpy(e->trace_id, pb->trace_id.data, AOS_ID_LEN);
    if (pb->span_id.len)
        memcpy(e->span_id, pb->span_id.data, AOS_SPAN_LEN);
    e->deadline_ms = pb->deadline_ms;
    e->link_id = pb->link_id;
    e->status = pb->status;
    e->seq = pb->seq;
    e->retry_after_ms = pb->retry_after_ms;
    if (pb->method.len)
        memcpy(e->method, pb->method.data, pb->method.len);
    if (pb->agent_id.len)
        memcpy(e->agent_id, pb->agent_id.data, pb->agent_id.len);
    if (pb->run_id.len)
        memcpy(e->run_id, pb->run_id.data, pb->run_id.len);
    e->step = pb->step;
    e->has_key_hash = pb->key_hash.len == AOS_KEY_HASH_LEN;
    if (e->has_key_hash)
        memcpy(e->key_hash, pb->key_hash.data, AOS_KEY_HASH_LEN);
    e->payload = pb->payload.data;
    e->payload_len = pb->payload.len;
    e->pb_ = pb;
    return AOS_OK;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData b = {.len = n, .data = (uint8_t *)p};
    return b;
}

aos_err aos_env_encode(const aos_env *e, nng_msg **out)
{
    Aos__Envelope pb = AOS__ENVELOPE__INIT;
    pb.version = AOS_WIRE_VERSION;
    pb.kind = (Aos__Kind)e->kind;
    if (e->has_request_id)
        pb.request_id = bin(e->request_id, AOS_ID_LEN);
    if (e->has_trace) {
        pb.trace_id = bin(e->trace_id, AOS_ID_LEN);
        pb.span_id = bin(e->span_id, AOS_SPAN_LEN);
    }
    pb.deadline_ms = e->deadline_ms;
    pb.link_id = e->link_id;
    pb.status = e->status;
    pb.seq = e->seq;
    pb.retry_after_ms = e->retry_after_ms;
    pb.method = bin(e->method, strnlen(e->method, sizeof e->method));
    pb.agent_id = bin(e->agent_id, strnlen(e->agent_id, sizeof e->agent_id));
    pb.run_id = bin(e->run_id, strnlen(e->run_id, sizeof e->run_id));
    pb.step = e->step;
    if (e->has_key_hash)
        pb.key_hash = bin(e->key_hash, AOS_KEY_HASH_LEN);
    pb.error = bin(e->error, strnlen(e->error, sizeof e->error));
    pb.payload = bin(e->payload, e->payload_len);
    size_t n = aos__envelope__get_packed_size(&pb);
    if (n > AOS_MSG_MAX)
        return AOS_ERR_TOO_BIG;
    nng_msg *m;
    if (nng_msg_alloc(&m, n) != 0)
        return AOS_ERR_NOMEM;
    aos__envelope__pack(&pb, nng_msg_body(m));
    *out = m;
    return AOS_OK;
}

void aos_env_reply_to(aos_env *r, const aos_env *req, int status, const char *fmt, ...)
{
    aos_env_init(r, AOS_KIND_REPLY);
    memcpy(r->request_id, req->request_id, AOS_ID_LEN);
    r->has_request_id = req->has_request_id;
    memcpy(r->trace_id, req->trace_id, AOS_ID_LEN);
    memcpy(r->span_id, req->span_id, AOS_SPAN_LEN);
    r->has_trace = req->has_trace;
    r->link_id = req->link_id;
    r->status = status;
    memcpy(r->method, req->method, sizeof r->method);
    memcpy(r->agent_id, req->agent_id, sizeof r->agent_id);
    memcpy(r->run_id, req->run_id, sizeof r->run_id);
    r->step = req->step;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->error, sizeof r->error, fmt, ap);
        va_end(ap);
        /* a truncated message may end inside a UTF-8 sequence: cut back to a boundary */
        size_t n = strlen(r->error);
        while (n > 0 && !aos_utf8_valid(r->error, n))
            r->error[--n] = 0;
    }
}

uint64_t aos_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t aos_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void aos_id_random(uint8_t id[AOS_ID_LEN])
{
    size_t got = 0;
    while (got < AOS_ID_LEN) {
        ssize_t r = getrandom(id + got, AOS_ID_LEN - got, 0);
        if (r > 0)
            got += (size_t)r;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int aos_unhex(const char *s, size_t slen, uint8_t *out, size_t n)
{
    if (slen != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void aos_hex(const uint8_t *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = 0;
}
