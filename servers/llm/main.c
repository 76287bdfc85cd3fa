/* aos-llm: the LLM gateway, the only process that talks to model providers. llm.chat and
 * llm.embed run on the engine's libcurl loop; llm.providers and llm.usage on workers. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acct.h"
#include "aos/log.h"
#include "db.h"
#include "engine.h"
#include "llm.pb-c.h"
#include "serve.h"
#include "wire.h"

/* Caps on a request beyond the envelope's size cap: a conversation of more messages or
 * tools than any model's context holds is a caller's bug, refused before work is done. */
#define REQ_MESSAGES_MAX 10000u
#define REQ_PARTS_MAX 1000u
#define REQ_TOOLS_MAX 512u
#define REQ_CALLS_MAX 256u
#define REQ_STOPS_MAX 16u
#define REQ_NAME_MAX 256u
#define USAGE_ROWS_MAX 10000

typedef struct llm {
    Aos__Llm__Config *cfg;
    acct *a;
    eng *e;
    atomic_ullong refused;
} llm;

/* ---- checking a request: every byte field is text the providers get as JSON ---------- */

static int text_ok(ProtobufCBinaryData b) { return aos_utf8_valid(b.data, b.len); }

static aos_err bad(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aos_err bad(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return AOS_ERR_USAGE;
}

static aos_err model_ok(ProtobufCBinaryData m, const char *op, char *why, size_t whylen)
{
    if (m.len > REQ_NAME_MAX || !text_ok(m))
        return bad(why, whylen, "%s: the model name is not UTF-8 of at most %u bytes", op,
                   REQ_NAME_MAX);
    return AOS_OK;
}

static aos_err chat_ok(const Aos__Llm__ChatRequest *r, char *why, size_t whylen)
{
    aos_err e = model_ok(r->model, "llm.chat", why, whylen);
    if (e)
        return e;
    if (!r->n_messages || r->n_messages > REQ_MESSAGES_MAX)
        return bad(why, whylen, "llm.chat: %zu messages (1 to %u)", r->n_messages,
                   REQ_MESSAGES_MAX);
    if (r->n_tools > REQ_TOOLS_MAX || r->n_stop > REQ_STOPS_MAX)
        return bad(why, whylen, "llm.chat: %zu tools and %zu stop sequences (at most %u and %u)",
                   r->n_tools, r->n_stop, REQ_TOOLS_MAX, REQ_STOPS_MAX);
    for (size_t i = 0; i < r->n_messages; i++) {
        const Aos__Llm__Message *m = r->messages[i];
        if (m->role < AOS__LLM__ROLE__SYSTEM || m->role > AOS__LLM__ROLE__TOOL)
            return bad(why, whylen, "llm.chat: messages[%zu] has no role", i);
        if (m->n_content > REQ_PARTS_MAX || m->n_tool_calls > REQ_CALLS_MAX)
            return bad(why, whylen, "llm.chat: messages[%zu] has %zu parts and %zu tool calls "
                       "(at most %u and %u)", i, m->n_content, m->n_tool_calls, REQ_PARTS_MAX,
                       REQ_CALLS_MAX);
        for (size_t k = 0; k < m->n_content; k++) {
            const Aos__Llm__ContentPart *p = m->content[k];
            if (p->kind != AOS__LLM__PART_KIND__TEXT && p->kind != AOS__LLM__PART_KIND__IMAGE_URL)
                return bad(why, whylen, "llm.chat: messages[%zu].content[%zu] has no kind", i, k);
            if (!text_ok(p->text))
                return bad(why, whylen, "llm.chat: messages[%zu].content[%zu] is not valid "
                           "UTF-8 (or holds a NUL)", i, k);
        }
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            const Aos__Llm__ToolCall *c = m->tool_calls[k];
            if (!text_ok(c->id) || !text_ok(c->name) || !text_ok(c->arguments) ||
                c->id.len > REQ_NAME_MAX || c->name.len > REQ_NAME_MAX)
                return bad(why, whylen, "llm.chat: messages[%zu].tool_calls[%zu]: id, name "
                           "or arguments not valid UTF-8, or too long", i, k);
        }
        if (!text_ok(m->tool_call_id) || m->tool_call_id.len > REQ_NAME_MAX)
            return bad(why, whylen, "llm.chat: messages[%zu].tool_call_id is not UTF-8 of at "
                       "most %u bytes", i, REQ_NAME_MAX);
    }
    for (size_t i = 0; i < r->n_tools; i++) {
        const Aos__Llm__Tool *t = r->tools[i];
        if (!text_ok(t->name) || !text_ok(t->description) || !text_ok(t->input_schema) ||
            t->name.len > REQ_NAME_MAX)
            return bad(why, whylen, "llm.chat: tools[%zu]: name, description or schema not "
                       "valid UTF-8, or the name too long", i);
    }
    for (size_t i = 0; i < r->n_stop; i++)
        if (!text_ok(r->stop[i]) || r->stop[i].len > REQ_NAME_MAX)
            return bad(why, whylen, "llm.chat: stop[%zu] is not UTF-8 of at most %u bytes", i,
                       REQ_NAME_MAX);
    if (!text_ok(r->tool_choice) || r->tool_choice.len > REQ_NAME_MAX)
        return bad(why, whylen, "llm.chat: tool_choice is not UTF-8 of at most %u bytes",
                   REQ_NAME_MAX);
    if (r->cache_breakpoint > r->n_messages)
        return bad(why, whylen, "llm.chat: cache_breakpoint %u is past the %zu messages",
                   r->cache_breakpoint, r->n_messages);
    return AOS_OK;
}

static aos_err embed_ok(const Aos__Llm__EmbedRequest *r, char *why, size_t whylen)
{
    aos_err e = model_ok(r->model, "llm.embed", why, whylen);
    if (e)
        return e;
    if (!r->n_inputs || r->n_inputs > WIRE_EMBED_MAX_INPUTS)
        return bad(why, whylen, "llm.embed: %zu inputs (1 to %u)", r->n_inputs,
                   WIRE_EMBED_MAX_INPUTS);
    for (size_t i = 0; i < r->n_inputs; i++)
        if (!r->inputs[i].len || !text_ok(r->inputs[i]))
            return bad(why, whylen, "llm.embed: inputs[%zu] is empty or not valid UTF-8", i);
    return AOS_OK;
}

/* A call refused before it reached the engine: nothing was sent, nothing is owed. */
static void refuse(srv *s, srv_call *call, aos_err rc, const char *why)
{
    llm *L = srv_state(s);
    atomic_fetch_add(&L->refused, 1);
    srv_call_done(call, rc, why, NULL, 0);
}

static int has_id(srv *s, srv_call *call, const char *op)
{
    if (srv_call_env(call)->has_request_id)
        return 1;
    char why[128];
    snprintf(why, sizeof why, "%s: the request has no request id (the key of its usage record)",
             op);
    refuse(s, call, AOS_ERR_USAGE, why);
    return 0;
}

static void m_chat(srv *s, srv_call *call)
{
    llm *L = srv_state(s);
    const aos_env *env = srv_call_env(call);
    if (!has_id(s, call, "llm.chat"))
        return;
    Aos__Llm__ChatRequest *req =
        aos__llm__chat_request__unpack(NULL, env->payload_len, env->payload);
    if (!req) {
        refuse(s, call, AOS_ERR_PROTO, "llm.chat: the payload is not a ChatRequest");
        return;
    }
    char why[AOS_ERRMSG_MAX];
    aos_err rc = chat_ok(req, why, sizeof why);
    if (rc) {
        aos__llm__chat_request__free_unpacked(req, NULL);
        refuse(s, call, rc, why);
        return;
    }
    eng_chat(L->e, call, req);
}

static void m_embed(srv *s, srv_call *call)
{
    llm *L = srv_state(s);
    const aos_env *env = srv_call_env(call);
    if (!has_id(s, call, "llm.embed"))
        return;
    Aos__Llm__EmbedRequest *req =
        aos__llm__embed_request__unpack(NULL, env->payload_len, env->payload);
    if (!req) {
        refuse(s, call, AOS_ERR_PROTO, "llm.embed: the payload is not an EmbedRequest");
        return;
    }
    char why[AOS_ERRMSG_MAX];
    aos_err rc = embed_ok(req, why, sizeof why);
    if (rc) {
        aos__llm__embed_request__free_unpacked(req, NULL);
        refuse(s, call, rc, why);
        return;
    }
    eng_embed(L->e, call, req);
}

static aos_err m_providers(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)req;
    llm *L = srv_state(s);
    Aos__Llm__ProvidersReply *r = NULL;
    aos_err rc = eng_providers(L->e, &r, rep->error, sizeof rep->error);
    if (rc)
        return rc;
    rc = srv_reply_pb(rep, &r->base);
    eng_providers_free(r);
    return rc;
}

/* ---- llm.usage: the books, summed per agent, provider and model ---------------------- */

static const db_stmt st_usage = {
    "llm_usage",
    "SELECT agent, provider, model, count(*)::bigint,"
    " (count(*) FILTER (WHERE status IS NOT NULL AND status <> 0))::bigint,"
    " (count(*) FILTER (WHERE resent))::bigint,"
    " coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,"
    " coalesce(sum(cache_read_tokens), 0)::bigint, coalesce(sum(cache_write_tokens), 0)::bigint,"
    " coalesce(sum(cost_micro_usd), 0)::bigint "
    "FROM llm.calls WHERE ($1 = '' OR agent = $1) AND started_at >= to_timestamp($2::bigint / 1000.0) "
    "GROUP BY agent, provider, model ORDER BY agent, provider, model LIMIT 10001",
    2};

typedef struct usage_arg {
    const Aos__Llm__UsageRequest *q;
    char agent[AOS_AGENT_ID_MAX + 1];
} usage_arg;

static ProtobufCBinaryData col(const PGresult *r, int row, int c)
{
    size_t n = 0;
    const uint8_t *b = db_bytes(r, row, c, &n);
    return (ProtobufCBinaryData){n, (uint8_t *)b};
}

static aos_err usage_attempt(PGconn *db, void *arg, srv_reply *rep)
{
    usage_arg *u = arg;
    db_params p;
    dp_init(&p);
    dp_text(&p, u->agent);
    dp_i64(&p, (int64_t)(u->q->since_ms > INT64_MAX ? INT64_MAX : u->q->since_ms));
    PGresult *res = NULL;
    aos_err rc = db_exec(db, &st_usage, &p, &res, rep->error, sizeof rep->error);
    if (rc)
        return rc;
    int n = PQntuples(res);
    if (n > USAGE_ROWS_MAX) {
        PQclear(res);
        return srv_fail(rep, AOS_ERR_TOO_BIG, "llm.usage: more than %d agent/model rows: "
                        "name an agent (--agent) or a later start (--since)", USAGE_ROWS_MAX);
    }
    Aos__Llm__UsageReply out = AOS__LLM__USAGE_REPLY__INIT;
    Aos__Llm__UsageRow *rows = calloc((size_t)n + 1, sizeof *rows);
    Aos__Llm__UsageRow **rp = calloc((size_t)n + 1, sizeof *rp);
    Aos__Llm__Usage *us = calloc((size_t)n + 1, sizeof *us);
    if (!rows || !rp || !us) {
        free(rows);
        free(rp);
        free(us);
        PQclear(res);
        return srv_fail(rep, AOS_ERR_NOMEM, "llm.usage: out of memory");
    }
    for (int i = 0; i < n; i++) {
        Aos__Llm__UsageRow *w = &rows[i];
        aos__llm__usage_row__init(w);
        aos__llm__usage__init(&us[i]);
        w->agent = col(res, i, 0);
        w->provider = col(res, i, 1);
        w->model = col(res, i, 2);
        w->calls = (uint64_t)db_i64(res, i, 3);
        w->failed = (uint64_t)db_i64(res, i, 4);
        w->resent = (uint64_t)db_i64(res, i, 5);
        us[i].input_tokens = (uint64_t)db_i64(res, i, 6);
        us[i].output_tokens = (uint64_t)db_i64(res, i, 7);
        us[i].cache_read_tokens = (uint64_t)db_i64(res, i, 8);
        us[i].cache_write_tokens = (uint64_t)db_i64(res, i, 9);
        w->cost_micro_usd = (uint64_t)db_i64(res, i, 10);
        w->usage = &us[i];
        rp[i] = w;
    }
    out.rows = rp;
    out.n_rows = (size_t)n;
    rc = srv_reply_pb(rep, &out.base);
    free(rows);
    free(rp);
    free(us);
    PQclear(res);
    return rc;
}

static aos_err m_usage(srv *s, const aos_env *req, srv_reply *rep)
{
    Aos__Llm__UsageRequest *q =
        aos__llm__usage_request__unpack(NULL, req->payload_len, req->payload);
    if (!q)
        return srv_fail(rep, AOS_ERR_PROTO, "llm.usage: the payload is not a UsageRequest");
    usage_arg u = {.q = q};
    aos_err rc = AOS_OK;
    if (q->agent.len > AOS_AGENT_ID_MAX || !text_ok(q->agent))
        rc = srv_fail(rep, AOS_ERR_USAGE, "llm.usage: the agent is not UTF-8 of at most %u "
                      "bytes", AOS_AGENT_ID_MAX);
    else if (!srv_db(s))
        rc = srv_fail(rep, AOS_ERR_UNAVAILABLE, "llm.usage: no database connection");
    if (!rc) {
        if (q->agent.len) /* data is NULL when empty: memcpy's arguments must not be */
            memcpy(u.agent, q->agent.data, q->agent.len);
        rc = db_run(srv_db(s), req->deadline_ms, "llm.usage", rep, usage_attempt, &u, NULL);
    }
    aos__llm__usage_request__free_unpacked(q, NULL);
    return rc;
}

static const srv_method methods[] = {
    {.op = "chat", .afn = m_chat},
    {.op = "embed", .afn = m_embed},
    {.op = "providers", .fn = m_providers},
    {.op = "usage", .fn = m_usage},
};

/* ---- the server --------------------------------------------------------------------- */

static aos_err llm_open(srv *s, char *why, size_t whylen)
{
    size_t len = 0;
    const uint8_t *c = srv_config(s, &len);
    if (!c) {
        snprintf(why, whylen, "no configuration came on --config-fd (aosd hands aos-llm its "
                              "part of aos.yaml)");
        return AOS_ERR_USAGE;
    }
    llm *L = calloc(1, sizeof *L);
    if (!L) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    /* aosd packed it from a checked aos.yaml: a message that does not decode is a bug */
    if (!(L->cfg = aos__llm__config__unpack(NULL, len, c))) {
        free(L);
        snprintf(why, whylen, "the configuration on --config-fd is not an llm Config");
        return AOS_ERR_PROTO;
    }
    aos_err rc = acct_start(s, &L->a, why, whylen);
    if (!rc && (rc = eng_start(s, L->cfg, L->a, &L->e, why, whylen)))
        acct_stop(L->a);
    if (rc) {
        aos__llm__config__free_unpacked(L->cfg, NULL);
        free(L);
        return rc;
    }
    srv_set_state(s, L);
    size_t nmodels = 0;
    for (size_t i = 0; i < L->cfg->n_providers; i++)
        nmodels += L->cfg->providers[i]->n_models;
    aos_info("%zu providers, %zu models, default %.*s%s", L->cfg->n_providers, nmodels,
             (int)L->cfg->default_model.len, (const char *)L->cfg->default_model.data,
             L->cfg->honour_retry_after ? ", Retry-After waited out here" : "");
    return AOS_OK;
}

static void llm_stats(srv *s, srv_stats *st)
{
    llm *L = srv_state(s);
    if (!L)
        return;
    srv_stat(st, "llm.refused", (int64_t)atomic_load(&L->refused),
             "requests refused before they reached a provider (malformed, no request id)");
    eng_stats(L->e, st);
    acct_stats(L->a, st);
}

int main(int argc, char **argv)
{
    srv_def def = {
        .name = "llm",
        .methods = methods,
        .n_methods = sizeof methods / sizeof methods[0],
        .schema = &llm_schema,
        .open = llm_open,
        .add_stats = llm_stats,
        /* no close: calls may still be on the engine's loop when the process exits, and
         * the loop's thread and the books' are left to the exit */
    };
    return srv_main(&def, argc, argv);
}
