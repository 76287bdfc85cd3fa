/* The canonical audit record codec and its chain hash. The decoder reads hostile bytes:
 * it checks each length against what is left and against the field's cap before use. */
#include "record.h"

#include <stdio.h>
#include <string.h>

#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_*: see merkle.c */
#include <openssl/sha.h>

#include "aos/envelope.h"

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

int audit_kind_valid(const char *s, size_t n)
{
    if (n == 0 || n > AUDIT_KIND_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

size_t audit_rec_encoded_len(const audit_rec *r)
{
    if (r->kind_len > AUDIT_KIND_MAX || r->agent_len > AUDIT_AGENT_MAX ||
        r->run_len > AUDIT_RUN_MAX || r->method_len > AUDIT_METHOD_MAX ||
        r->body_len > AUDIT_BODY_MAX)
        return 0;
    return AUDIT_REC_FIXED + r->kind_len + r->agent_len + r->run_len + r->method_len +
           r->body_len;
}

/* One check shared by both directions, so the encoder never writes what decode refuses. */
static aos_err check_fields(const audit_rec *r, char *why, size_t whylen)
{
    if (r->seq == 0) {
        WHY("seq 0: records count from 1");
        return AOS_ERR_PROTO;
    }
    if (!audit_kind_valid(r->kind, r->kind_len)) {
        WHY("seq %llu: kind is not [a-z0-9._-]{1,%u}", (unsigned long long)r->seq,
            AUDIT_KIND_MAX);
        return AOS_ERR_PROTO;
    }
    const struct {
        const char *name, *s;
        size_t n, max;
    } str[] = {
        {"agent", r->agent, r->agent_len, AUDIT_AGENT_MAX},
        {"run", r->run, r->run_len, AUDIT_RUN_MAX},
        {"method", r->method, r->method_len, AUDIT_METHOD_MAX},
    };
    for (size_t i = 0; i < sizeof str / sizeof str[0]; i++) {
        if (str[i].n > str[i].max) {
            WHY("seq %llu: %s of %zu bytes (cap %zu)", (unsigned long long)r->seq,
                str[i].name, str[i].n, str[i].max);
            return AOS_ERR_PROTO;
        }
        if (!aos_utf8_valid(str[i].s, str[i].n)) {
            WHY("seq %llu: %s is not valid UTF-8", (unsigned long long)r->seq, str[i].name);
            return AOS_ERR_PROTO;
        }
    }
    if (r->body_len > AUDIT_BODY_MAX) {
        WHY("seq %llu: body of %zu bytes (cap %u)", (unsigned long long)r->seq, r->body_len,
            AUDIT_BODY_MAX);
        return AOS_ERR_PROTO;
    }
    return AOS_OK;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put_var(uint8_t *p, const void *s, size_t n)
{
    p = put_u32(p, (uint32_t)n);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

static uint8_t *put_raw(uint8_t *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

aos_err audit_rec_encode(const audit_rec *r, uint8_t *buf, size_t cap, size_t *len,
                         char *why, size_t whylen)
{
    if (!r || !buf || !len) {
        WHY("audit_rec_encode: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (check_fields(r, why, whylen) != AOS_OK)
        return AOS_ERR_USAGE;
    size_t need = audit_rec_encoded_len(r);
    if (need > cap) {
        WHY("seq %llu: encoding needs %zu bytes, buffer has %zu", (unsigned long long)r->seq,
            need, cap);
        return AOS_ERR_TOO_BIG;
    }
    uint8_t *p = buf;
    *p++ = AUDIT_REC_VERSION;
    p = put_u64(p, r->seq);
    p = put_u64(p, r->time_ns);
    p = put_var(p, r->kind, r->kind_len);
    p = put_var(p, r->agent, r->agent_len);
    p = put_var(p, r->run, r->run_len);
    p = put_u32(p, r->step);
    p = put_raw(p, r->trace_id, AUDIT_TRACE_LEN);
    p = put_raw(p, r->span_id, AUDIT_SPAN_LEN);
    p = put_raw(p, r->parent_span_id, AUDIT_SPAN_LEN);
    p = put_var(p, r->method, r->method_len);
    p = put_u32(p, (uint32_t)r->status);
    p = put_u64(p, r->latency_us);
    p = put_var(p, r->body, r->body_len);
    p = put_raw(p, r->prev_hash, AUDIT_HASH_LEN);
    *len = (size_t)(p - buf);
    return AOS_OK;
}

/* A cursor over untrusted bytes: every take checks what is left first. */
typedef struct {
    const uint8_t *p;
    size_t left;
    const char *short_field; /* the first field that did not fit, for the message */
} rd;

static int take(rd *c, size_t n, const uint8_t **out, const char *field)
{
    if (c->left < n) {
        if (!c->short_field)
            c->short_field = field;
        return 0;
    }
    *out = c->p;
    c->p += n;
    c->left -= n;
    return 1;
}

static int take_u64(rd *c, uint64_t *v, const char *field)
{
    const uint8_t *b;
    if (!take(c, 8, &b, field))
        return 0;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | b[i];
    *v = x;
    return 1;
}

static int take_u32(rd *c, uint32_t *v, const char *field)
{
    const uint8_t *b;
    if (!take(c, 4, &b, field))
        return 0;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return 1;
}

/* A variable field: the length is checked against the cap before anything is taken, so
 * a hostile length never makes us look past the buffer. */
static aos_err take_var(rd *c, const void **s, size_t *n, size_t max, const char *field,
                        char *why, size_t whylen)
{
    uint32_t l;
    const uint8_t *b;
    if (!take_u32(c, &l, field)) {
        WHY("cut short in the length of %s", field);
        return AOS_ERR_PROTO;
    }
    if (l > max) {
        WHY("%s of %u bytes (cap %zu)", field, l, max);
        return AOS_ERR_PROTO;
    }
    if (!take(c, l, &b, field)) {
        WHY("%s says %u bytes, %zu are left", field, l, c->left);
        return AOS_ERR_PROTO;
    }
    *s = l ? b : NULL;
    *n = l;
    return AOS_OK;
}

aos_err audit_rec_decode(const uint8_t *buf, size_t len, audit_rec *r, char *why,
                         size_t whylen)
{
    if (!r || (!buf && len)) {
        WHY("audit_rec_decode: NULL argument");
        return AOS_ERR_USAGE;
    }
    memset(r, 0, sizeof *r);
    if (len > AUDIT_REC_MAX) {
        WHY("record of %zu bytes (cap %u)", len, (unsigned)AUDIT_REC_MAX);
        return AOS_ERR_PROTO;
    }
    rd c = {.p = buf, .left = len};
    const uint8_t *b;
    if (!take(&c, 1, &b, "version")) {
        WHY("empty record");
        return AOS_ERR_PROTO;
    }
    if (b[0] != AUDIT_REC_VERSION) {
        WHY("record version %u (this build reads %u)", b[0], AUDIT_REC_VERSION);
        return AOS_ERR_PROTO;
    }
    aos_err e;
    const void *s;
    uint32_t u;
    if (!take_u64(&c, &r->seq, "seq") || !take_u64(&c, &r->time_ns, "time_ns"))
        goto cut;
    if ((e = take_var(&c, &s, &r->kind_len, AUDIT_KIND_MAX, "kind", why, whylen)))
        return e;
    r->kind = s;
    if ((e = take_var(&c, &s, &r->agent_len, AUDIT_AGENT_MAX, "agent", why, whylen)))
        return e;
    r->agent = s;
    if ((e = take_var(&c, &s, &r->run_len, AUDIT_RUN_MAX, "run", why, whylen)))
        return e;
    r->run = s;
    if (!take_u32(&c, &r->step, "step"))
        goto cut;
    if (!take(&c, AUDIT_TRACE_LEN, &b, "trace_id"))
        goto cut;
    memcpy(r->trace_id, b, AUDIT_TRACE_LEN);
    if (!take(&c, AUDIT_SPAN_LEN, &b, "span_id"))
        goto cut;
    memcpy(r->span_id, b, AUDIT_SPAN_LEN);
    if (!take(&c, AUDIT_SPAN_LEN, &b, "parent_span_id"))
        goto cut;
    memcpy(r->parent_span_id, b, AUDIT_SPAN_LEN);
    if ((e = take_var(&c, &s, &r->method_len, AUDIT_METHOD_MAX, "method", why, whylen)))
        return e;
    r->method = s;
    if (!take_u32(&c, &u, "status"))
        goto cut;
    r->status = (int32_t)u;
    if (!take_u64(&c, &r->latency_us, "latency_us"))
        goto cut;
    if ((e = take_var(&c, &s, &r->body_len, AUDIT_BODY_MAX, "body", why, whylen)))
        return e;
    r->body = s;
    if (!take(&c, AUDIT_HASH_LEN, &b, "prev_hash"))
        goto cut;
    memcpy(r->prev_hash, b, AUDIT_HASH_LEN);
    if (c.left) {
        WHY("%zu bytes after the record", c.left);
        return AOS_ERR_PROTO;
    }
    return check_fields(r, why, whylen);
cut:
    WHY("record cut short in %s", c.short_field ? c.short_field : "?");
    return AOS_ERR_PROTO;
}

void audit_chain_hash(const uint8_t prev[AUDIT_HASH_LEN], const uint8_t *enc, size_t len,
                      uint8_t out[AUDIT_HASH_LEN])
{
    static const uint8_t tag = 0x02;
    SHA256_CTX st; /* OpenSSL's, as in merkle.c (SHA extensions) */
    SHA256_Init(&st);
    SHA256_Update(&st, &tag, 1);
    SHA256_Update(&st, prev, AUDIT_HASH_LEN);
    SHA256_Update(&st, enc, len);
    SHA256_Final(out, &st);
}
