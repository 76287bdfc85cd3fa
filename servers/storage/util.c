/* What every storage handler shares: replies and errors, deadlines, payload decoding,
 * request fingerprints, and the configuration read from the environment. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "stg.h"

aos_err stg_reply(stg_call *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return stg_fail(c, AOS_ERR_NOMEM, "out of memory packing a %zu-byte reply", n);
    protobuf_c_message_pack(m, buf);
    free(c->rep->payload);
    c->rep->payload = buf;
    c->rep->len = n;
    return AOS_ERR_OK;
}

aos_err stg_fail(stg_call *c, aos_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->rep->error, sizeof c->rep->error, fmt, ap);
    va_end(ap);
    /* An error reply carries no payload: a half-built one must not leak out. */
    free(c->rep->payload);
    c->rep->payload = NULL;
    c->rep->len = 0;
    return code;
}

uint32_t stg_left_ms(const stg_call *c)
{
    if (!c->deadline_ms)
        return UINT32_MAX;
    uint64_t now = aos_now_ms();
    if (now >= c->deadline_ms)
        return 0;
    uint64_t left = c->deadline_ms - now;
    return left > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)left;
}

aos_err stg_exec(stg_call *c, const db_stmt *st, const db_params *p, PGresult **r)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e = db_exec(c->db, st, p, r, why, sizeof why);
    if (e)
        return stg_fail(c, e, "storage.%s: %s", c->op, why);
    return AOS_ERR_OK;
}

aos_err stg_exec_void(stg_call *c, const db_stmt *st, const db_params *p)
{
    PGresult *r;
    aos_err e = stg_exec(c, st, p, &r);
    if (!e)
        PQclear(r);
    return e;
}

int64_t stg_ts_ms(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    int64_t us = db_i64(r, row, col);
    int64_t ms = us / 1000 - (us % 1000 < 0);   /* floor, also before 2000 */
    return ms + INT64_C(946684800000);           /* 2000-01-01 in epoch ms */
}

aos_err stg_exec_i64(stg_call *c, const db_stmt *st, const db_params *p, int64_t *v)
{
    PGresult *r;
    aos_err e = stg_exec(c, st, p, &r);
    if (e)
        return e;
    *v = PQntuples(r) ? db_i64(r, 0, 0) : 0;
    PQclear(r);
    return AOS_ERR_OK;
}

aos_err stg_check_deadline(stg_call *c)
{
    if (stg_left_ms(c) == 0)
        return stg_fail(c, AOS_ERR_TIMEOUT, "deadline passed before storage.%s ran", c->op);
    return AOS_ERR_OK;
}

aos_err stg_need_agent(stg_call *c)
{
    if (!c->agent || !c->agent[0])
        return stg_fail(c, AOS_ERR_USAGE, "storage.%s needs an agent: storage data belongs "
                        "to an agent (set the acting agent)", c->op);
    return AOS_ERR_OK;
}

void *stg_decode(stg_call *c, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, c->len, c->payload);
    if (!m) {
        stg_fail(c, AOS_ERR_PROTO, "storage.%s: payload is not a valid %s", c->op, desc->name);
        return NULL;
    }
    if (!aos_pb_strings_valid(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        stg_fail(c, AOS_ERR_PROTO, "storage.%s: payload holds a string that is not UTF-8",
                 c->op);
        return NULL;
    }
    return m;
}

void stg_free(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

_Static_assert(crypto_hash_sha256_BYTES == STG_FP_LEN, "a fingerprint is a SHA-256");

void stg_fingerprint(const stg_call *c, uint8_t out[STG_FP_LEN])
{
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    crypto_hash_sha256_update(&h, (const uint8_t *)c->op, strlen(c->op) + 1);
    crypto_hash_sha256_update(&h, c->payload ? c->payload : (const uint8_t *)"", c->len);
    crypto_hash_sha256_final(&h, out);
}

/* An unsigned number from the environment within [lo, hi]; absent keeps *out. */
static aos_err env_u64(const char *name, uint64_t lo, uint64_t hi, uint64_t *out, char *why,
                       size_t whylen)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return AOS_ERR_OK;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || s[0] == '-' || v < lo || v > hi) {
        snprintf(why, whylen, "%s=%s: want a number from %llu to %llu", name, s,
                 (unsigned long long)lo, (unsigned long long)hi);
        return AOS_ERR_USAGE;
    }
    *out = v;
    return AOS_ERR_OK;
}

aos_err stg_cfg_load(stg_cfg *cfg, char *why, size_t whylen)
{
    uint64_t vmax = AOS_VALUE_MAX_DEFAULT, quota = 1ull << 30, tries = 5,
             idem_ttl = 24ull * 3600 * 1000, workers = 16, get_leaders = 1;
    aos_err e;
    if ((e = env_u64("AOS_STORAGE_VALUE_MAX", 1, STG_VALUE_MAX_CEIL, &vmax, why, whylen)) ||
        (e = env_u64("AOS_STORAGE_BLOB_QUOTA", 0, UINT64_C(1) << 50, &quota, why, whylen)) ||
        (e = env_u64("AOS_STORAGE_MAX_TRIES", 1, STG_TRIES_MAX, &tries, why, whylen)) ||
        (e = env_u64("AOS_STORAGE_IDEM_TTL_MS", 60000, UINT64_C(1) << 40, &idem_ttl, why,
                     whylen)) ||
        (e = env_u64("AOS_STORAGE_WORKERS", 1, 64, &workers, why, whylen)) ||
        (e = env_u64("AOS_STORAGE_GET_LEADERS", 0, 8, &get_leaders, why, whylen)))
        return e;
    cfg->value_max = (size_t)vmax;
    cfg->blob_quota = quota;
    cfg->max_tries = (uint32_t)tries;
    cfg->idem_ttl_ms = idem_ttl;
    cfg->workers = (unsigned)workers;
    cfg->get_leaders = (unsigned)get_leaders;
    return AOS_ERR_OK;
}
