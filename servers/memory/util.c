/* What every aos-memory handler shares: replies and errors, payload decoding and the
 * checks of wire input, database calls, and transactions idempotent by request id. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "mem.h"
#include "pidem.h"

aos_err mem_fail(mem_call *c, aos_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* "memory.<op>: " then the message, cut at the reply's cap */
    int n = snprintf(c->rep->error, sizeof c->rep->error, "memory.%s: ", c->op);
    if (n > 0 && (size_t)n < sizeof c->rep->error)
        vsnprintf(c->rep->error + n, sizeof c->rep->error - (size_t)n, fmt, ap);
    va_end(ap);
    free(c->rep->payload);
    c->rep->payload = NULL;
    c->rep->len = 0;
    return code;
}

aos_err mem_reply(mem_call *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > AOS_MSG_MAX - 65536)
        return mem_fail(c, AOS_ERR_TOO_BIG, "the reply would be %zu bytes, over the message "
                        "cap", n);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return mem_fail(c, AOS_ERR_NOMEM, "out of memory packing a %zu-byte reply", n);
    protobuf_c_message_pack(m, buf);
    free(c->rep->payload);
    c->rep->payload = buf;
    c->rep->len = n;
    return AOS_OK;
}

void *mem_decode(mem_call *c, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, c->len, c->payload);
    if (!m) {
        mem_fail(c, AOS_ERR_PROTO, "payload is not a valid %s", desc->name);
        return NULL;
    }
    if (!aos_pb_strings_valid(m)) {
        protobuf_c_message_free_unpacked(m, NULL);
        mem_fail(c, AOS_ERR_PROTO, "payload holds a string that is not UTF-8");
        return NULL;
    }
    return m;
}

void mem_free(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

aos_err mem_valid_text(mem_call *c, ProtobufCBinaryData b, size_t max, int allow_empty,
                       const char *what)
{
    if (!b.len && !allow_empty)
        return mem_fail(c, AOS_ERR_USAGE, "%s is empty", what);
    if (b.len > max)
        return mem_fail(c, AOS_ERR_TOO_BIG, "%s is %zu bytes, at most %zu allowed", what,
                        b.len, max);
    if (b.len && !aos_utf8_valid(b.data, b.len))
        return mem_fail(c, AOS_ERR_USAGE, "%s is not valid UTF-8 (or holds a NUL byte)",
                        what);
    return AOS_OK;
}

aos_err mem_valid_name(mem_call *c, ProtobufCBinaryData b, const char *dflt, size_t max,
                       const char *what, char *out)
{
    if (!b.len && dflt) {
        strcpy(out, dflt);
        return AOS_OK;
    }
    if (!b.len || b.len > max)
        return mem_fail(c, AOS_ERR_USAGE, "%s must be 1 to %zu characters of "
                        "[A-Za-z0-9_.:-]", what, max);
    for (size_t i = 0; i < b.len; i++) {
        uint8_t ch = b.data[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            return mem_fail(c, AOS_ERR_USAGE, "%s may hold only [A-Za-z0-9_.:-]", what);
    }
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return AOS_OK;
}

aos_err mem_valid_source(mem_call *c, ProtobufCBinaryData b, char *out)
{
    if (b.len > MEM_SOURCE_MAX)
        return mem_fail(c, AOS_ERR_TOO_BIG, "source is %zu bytes, at most %u allowed", b.len,
                        MEM_SOURCE_MAX);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] < 0x20 || b.data[i] > 0x7e || b.data[i] == '"' || b.data[i] == '\\' ||
            b.data[i] == '<' || b.data[i] == '>')
            return mem_fail(c, AOS_ERR_USAGE, "source must be printable ASCII without quotes, "
                            "backslashes or angle brackets (it labels a fence)");
    if (b.len)
        memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return AOS_OK;
}

aos_err mem_valid_agent(mem_call *c, ProtobufCBinaryData b, char *out)
{
    if (!b.len || b.len > AOS_AGENT_ID_MAX || !aos_agent_id_valid((const char *)b.data, b.len))
        return mem_fail(c, AOS_ERR_USAGE, "agent must be an agent id (1 to %d characters)",
                        AOS_AGENT_ID_MAX);
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return AOS_OK;
}

aos_err mem_exec(mem_call *c, const db_stmt *st, const db_params *p, PGresult **r)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e = db_exec(c->db, st, p, r, why, sizeof why);
    if (e)
        return mem_fail(c, e, "%s", why);
    return AOS_OK;
}

aos_err mem_exec_void(mem_call *c, const db_stmt *st, const db_params *p)
{
    PGresult *r;
    aos_err e = mem_exec(c, st, p, &r);
    if (!e)
        PQclear(r);
    return e;
}

int64_t mem_ts_ms(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    int64_t us = db_i64(r, row, col);
    int64_t ms = us / 1000 - (us % 1000 < 0);
    return ms + INT64_C(946684800000);   /* 2000-01-01 in epoch ms */
}

void mem_fingerprint(const mem_call *c, uint8_t out[32])
{
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    crypto_hash_sha256_update(&h, (const uint8_t *)c->op, strlen(c->op) + 1);
    crypto_hash_sha256_update(&h, c->payload ? c->payload : (const uint8_t *)"", c->len);
    crypto_hash_sha256_final(&h, out);
}

static void rollback(mem_call *c)
{
    PGresult *r = PQexec(c->db, "ROLLBACK");   /* best effort: a broken link took it */
    PQclear(r);
}

static aos_err begin(mem_call *c, char *why, size_t whylen)
{
    aos_err e = db_cmd(c->db, "BEGIN", why, whylen);
    if (e || !c->deadline_ms)
        return e;
    uint64_t now = aos_now_ms();
    uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 1;
    char set[64];
    snprintf(set, sizeof set, "SET LOCAL statement_timeout = %llu",
             (unsigned long long)(left > 600000 ? 600000 : left));
    if ((e = db_cmd(c->db, set, why, whylen)))
        rollback(c);
    return e;
}

static aos_err commit(mem_call *c, char *why, size_t whylen)
{
    PGresult *r = PQexec(c->db, "COMMIT");
    aos_err e = AOS_OK;
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
        e = db_error(c->db, r, why, whylen);
    else if (strcmp(PQcmdStatus(r), "COMMIT")) {
        snprintf(why, whylen, "transaction rolled back at commit");
        e = AOS_ERR_INTERNAL;
    }
    PQclear(r);
    return e;
}

aos_err mem_tx(mem_call *c, aos_err (*fn)(mem_call *c, void *arg), void *arg, int *replayed)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    *replayed = 0;
    if (!c->request_id)
        return mem_fail(c, AOS_ERR_USAGE, "this method changes the window and needs a "
                        "request id (the idempotency key)");
    pidem_key k = {.schema = "memory", .agent = c->agent, .request_id = c->request_id,
                   .method = c->op};
    mem_fingerprint(c, k.fingerprint);
    pidem_prior prior;
    if ((e = begin(c, why, sizeof why)))
        return mem_fail(c, e, "%s", why);
    if ((e = pidem_claim(c->db, &k, &prior, why, sizeof why))) {
        rollback(c);
        return mem_fail(c, e, "%s", why);
    }
    if (prior.found) {
        rollback(c);
        atomic_fetch_add(&c->st->n_replays, 1);
        free(c->rep->payload);
        c->rep->payload = prior.result;
        c->rep->len = prior.len;
        prior.result = NULL;
        aos_err st = (aos_err)prior.status;
        pidem_prior_clear(&prior);
        *replayed = 1;
        return st;
    }
    if ((e = fn(c, arg))) {
        rollback(c);
        return e;
    }
    if ((e = pidem_record(c->db, &k, AOS_OK, c->rep->payload, c->rep->len, why,
                          sizeof why))) {
        rollback(c);
        return mem_fail(c, e, "%s", why);
    }
    if ((e = commit(c, why, sizeof why)))
        return mem_fail(c, e == AOS_ERR_INTERNAL ? AOS_ERR_UNAVAILABLE : e,
                        "commit failed, outcome unknown (retry with the same request id): %s",
                        why);
    return AOS_OK;
}

aos_err mem_tx_plain(mem_call *c, aos_err (*fn)(mem_call *c, void *arg), void *arg)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = begin(c, why, sizeof why)))
        return mem_fail(c, e, "%s", why);
    if ((e = fn(c, arg))) {
        rollback(c);
        return e;
    }
    if ((e = commit(c, why, sizeof why)))
        return mem_fail(c, e == AOS_ERR_INTERNAL ? AOS_ERR_UNAVAILABLE : e,
                        "commit failed, outcome unknown: %s", why);
    return AOS_OK;
}
