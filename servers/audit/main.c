/* aos-audit: the append-only, hash-chained, Merkle-tree log of every syscall and decision.
 * This file checks what arrives and routes it: emits and heads to the writer, reads to
 * the workers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/envelope.h"
#include "aos/log.h"
#include "archive.h"
#include "export.h"
#include "audit.pb-c.h"
#include "contents.h"
#include "log.h"
#include "read.h"
#include "record.h"
#include "schema.h"
#include "serve.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int text_ok(ProtobufCBinaryData b, size_t max)
{
    return b.len <= max && aos_utf8_valid(b.data, b.len);
}

/* Contents against contents.h's caps, each named by its own hash: a content stored under
 * another's name would make the chain vouch for what was never sent. */
static aos_err contents_ok(const Aos__Audit__EmitRequest *r, char *why, size_t whylen)
{
    if (r->n_contents > AUDIT_CONTENTS_EMIT_MAX) {
        snprintf(why, whylen, "audit.emit: %zu contents (at most %u)", r->n_contents,
                 AUDIT_CONTENTS_EMIT_MAX);
        return AOS_ERR_USAGE;
    }
    size_t total = 0;
    for (size_t i = 0; i < r->n_contents; i++) {
        const Aos__Audit__Content *c = r->contents[i];
        uint8_t h[AUDIT_CONTENT_HASH_LEN];
        total += c->body.len;
        const char *bad = NULL;
        if (c->hash.len != AUDIT_CONTENT_HASH_LEN)
            bad = "hash is not 32 bytes";
        else if (c->body.len > AUDIT_CONTENT_MAX)
            bad = "body is over 1 MiB";
        else if (total > AUDIT_CONTENTS_EMIT_BYTES)
            bad = "the contents are over 2 MiB in all";
        else if (audit_content_hash(c->body.data, c->body.len, h),
                 memcmp(h, c->hash.data, AUDIT_CONTENT_HASH_LEN))
            bad = "hash is not the BLAKE2b-256 of body";
        if (bad) {
            snprintf(why, whylen, "audit.emit: contents[%zu]: %s", i, bad);
            return AOS_ERR_USAGE;
        }
    }
    /* what an event lists comes with it: a record never names a content not committed
     * with it (or before it) */
    for (size_t i = 0; i < r->n_events; i++) {
        const ProtobufCBinaryData b = r->events[i]->body;
        uint8_t(*l)[AUDIT_CONTENT_HASH_LEN] = NULL;
        int n = audit_contents_listed(b.data, b.len, NULL, 0);
        if (n > 0 && !(l = malloc((size_t)n * sizeof *l))) {
            snprintf(why, whylen, "audit.emit: out of memory");
            return AOS_ERR_NOMEM;
        }
        if (n > 0)
            audit_contents_listed(b.data, b.len, l, (size_t)n);
        const char *bad = n < 0 ? "its body's \"contents\" is not a list of 64-hex hashes"
                                : NULL;
        for (int k = 0; !bad && k < n; k++) {
            int found = 0;
            for (size_t j = 0; !found && j < r->n_contents; j++)
                found = !memcmp(r->contents[j]->hash.data, l[k], AUDIT_CONTENT_HASH_LEN);
            if (!found)
                bad = "its body lists a content that is not in this emit";
        }
        free(l);
        if (bad) {
            snprintf(why, whylen, "audit.emit: events[%zu]: %s", i, bad);
            return AOS_ERR_USAGE;
        }
    }
    return AOS_OK;
}

/* Every field of every event against record.h's caps: what is queued always encodes, so
 * a bad event fails its own call, never the batch it would have joined. */
static aos_err emit_ok(const Aos__Audit__EmitRequest *r, char *why, size_t whylen)
{
    if (r->n_events < 1 || r->n_events > ALOG_EMIT_MAX) {
        snprintf(why, whylen, "audit.emit: %zu events (1 to %u)", r->n_events, ALOG_EMIT_MAX);
        return AOS_ERR_USAGE;
    }
    for (size_t i = 0; i < r->n_events; i++) {
        const Aos__Audit__Event *e = r->events[i];
        const char *bad = NULL;
        if (!audit_kind_valid((const char *)e->kind.data, e->kind.len))
            bad = "kind is not [a-z0-9._-]{1,32}";
        else if (e->kind.len == 7 && !memcmp(e->kind.data, "archive", 7))
            /* an archive record declares records dropped: audit.archive alone writes one
             * (a producer's would shadow the real declaration in verify) */
            bad = "kind archive is audit.archive's own";
        else if (!text_ok(e->agent, AUDIT_AGENT_MAX))
            bad = "agent is over 64 bytes or not UTF-8";
        else if (!text_ok(e->run, AUDIT_RUN_MAX))
            bad = "run is over 64 bytes or not UTF-8";
        else if (!text_ok(e->method, AUDIT_METHOD_MAX))
            bad = "method is over 64 bytes or not UTF-8";
        else if (!text_ok(e->key, ALOG_KEY_MAX))
            bad = "key is over 64 bytes or not UTF-8";
        else if (e->trace_id.len != 0 && e->trace_id.len != AUDIT_TRACE_LEN)
            bad = "trace_id is neither 16 bytes nor empty";
        else if (e->span_id.len != 0 && e->span_id.len != AUDIT_SPAN_LEN)
            bad = "span_id is neither 8 bytes nor empty";
        else if (e->parent_span_id.len != 0 && e->parent_span_id.len != AUDIT_SPAN_LEN)
            bad = "parent_span_id is neither 8 bytes nor empty";
        else if (e->body.len > AUDIT_BODY_MAX)
            bad = "body is over 1 MiB";
        if (bad) {
            snprintf(why, whylen, "audit.emit: events[%zu]: %s", i, bad);
            return AOS_ERR_USAGE;
        }
    }
    return contents_ok(r, why, whylen);
}

static void m_emit(srv *s, srv_call *call)
{
    const aos_env *env = srv_call_env(call);
    Aos__Audit__EmitRequest *req =
        aos__audit__emit_request__unpack(NULL, env->payload_len, env->payload);
    if (!req) {
        srv_call_done(call, AOS_ERR_PROTO, "audit.emit: the payload is not an EmitRequest",
                      NULL, 0);
        return;
    }
    char why[AOS_ERRMSG_MAX];
    aos_err rc = emit_ok(req, why, sizeof why);
    if (rc != AOS_OK) {
        aos__audit__emit_request__free_unpacked(req, NULL);
        srv_call_done(call, rc, why, NULL, 0);
        return;
    }
    /* stamped on arrival, so a batch run again keeps the time it had */
    uint64_t now = now_ns();
    for (size_t i = 0; i < req->n_events; i++)
        if (!req->events[i]->time_ns)
            req->events[i]->time_ns = now;
    alog_emit(srv_state(s), call, req);
}

static void m_head(srv *s, srv_call *call)
{
    const aos_env *env = srv_call_env(call);
    Aos__Audit__HeadRequest *req =
        aos__audit__head_request__unpack(NULL, env->payload_len, env->payload);
    if (!req) {
        srv_call_done(call, AOS_ERR_PROTO, "audit.head: the payload is not a HeadRequest",
                      NULL, 0);
        return;
    }
    int sign = req->sign_now;
    aos__audit__head_request__free_unpacked(req, NULL);
    alog_head(srv_state(s), call, sign);
}

static aos_err m_prove(srv *s, const aos_env *req, srv_reply *rep)
{
    return ar_prove(s, srv_state(s), req, rep);
}

static aos_err m_verify(srv *s, const aos_env *req, srv_reply *rep)
{
    return ar_verify(s, srv_state(s), req, rep);
}

static aos_err m_tail(srv *s, const aos_env *req, srv_reply *rep)
{
    return ar_tail(s, srv_state(s), req, rep);
}

static aos_err m_export(srv *s, const aos_env *req, srv_reply *rep)
{
    return ax_export(s, srv_state(s), req, rep);
}

static aos_err m_archive(srv *s, const aos_env *req, srv_reply *rep)
{
    return ax_archive(s, srv_state(s), req, rep);
}

static aos_err m_replay(srv *s, const aos_env *req, srv_reply *rep)
{
    return ar_replay(s, srv_state(s), req, rep);
}

static aos_err m_contents(srv *s, const aos_env *req, srv_reply *rep)
{
    return ar_contents(s, srv_state(s), req, rep);
}

static const srv_method methods[] = {
    {.op = "emit", .afn = m_emit},
    {.op = "head", .afn = m_head},
    {.op = "prove", .fn = m_prove},
    {.op = "verify", .fn = m_verify},
    {.op = "tail", .fn = m_tail},
    {.op = "export", .fn = m_export},
    {.op = "archive", .fn = m_archive},
    {.op = "replay", .fn = m_replay},
    {.op = "contents", .fn = m_contents},
};

/* The OTLP exporter, when aos.yaml sets an endpoint; the writer alone pushes to it. */
static aexp *g_exp;

static void on_commit(void *arg, const audit_rec *r)
{
    aexp_record(arg, r);
}

static const char *au_profile(srv *s)
{
    size_t len;
    const uint8_t *c = srv_config(s, &len);
    return aexp_wanted(c, len) ? "audit-otlp" : NULL;
}

static aos_err au_open(srv *s, char *why, size_t whylen)
{
    size_t clen;
    const uint8_t *cfg = srv_config(s, &clen);
    /* before the writer: its thread and libcurl's handles exist before the sandbox */
    aos_err rc = aexp_new(cfg, clen, &g_exp, why, whylen);
    if (rc != AOS_OK)
        return rc;
    alog *l = NULL;
    rc = alog_start(s, &l, why, whylen);
    if (rc != AOS_OK)
        return rc;
    if (g_exp) {
        alog_on_commit(l, on_commit, g_exp);
        aos_info("exporting spans over OTLP/HTTP JSON");
    }
    srv_set_state(s, l);
    return AOS_OK;
}

static void au_stats(srv *s, srv_stats *st)
{
    alog *l = srv_state(s);
    if (l)
        alog_stats(l, st);
    ar_stats(st);
    ax_stats(st);
    aexp_stats(g_exp, st);
}

static void au_close(srv *s)
{
    /* workers may still be reading (the serve loop stops waiting for them after a while)
     * and the process exits next: stop the writer, free nothing they use */
    alog_halt(srv_state(s));
    /* the writer is stopped: send what is queued, within the exporter's stop budget */
    aexp_free(g_exp);
    g_exp = NULL;
}

int main(int argc, char **argv)
{
    static const srv_def def = {
        .name = "audit",
        .methods = methods,
        .n_methods = sizeof methods / sizeof methods[0],
        .schema = &audit_schema,
        .open = au_open,
        .add_stats = au_stats,
        .close = au_close,
        .sandbox_profile = au_profile,
    };
    return srv_main(&def, argc, argv);
}
