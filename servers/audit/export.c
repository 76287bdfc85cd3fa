/* Committed audit records as OpenTelemetry spans: the mapping (GenAI semantic conventions,
 * aos.* attributes, ids and times), and the exporter's configuration from aos.yaml. */
#include "export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.pb-c.h"

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

#define MODELS 256u            /* LLM calls whose request waits for its reply */
#define BODY_PARSE_MAX (256u << 10) /* bodies read for attributes; bigger ones are not */

/* What an llm.request said, kept for its llm.reply (same parent span: the syscall's), so
 * the reply's span, the GenAI inference span, names the model and the provider. */
typedef struct pending {
    uint8_t parent[AUDIT_SPAN_LEN];
    uint64_t time_ns;
    char provider[64], model[128];
    int used;
} pending;

struct aexp {
    otlp *e;
    pending p[MODELS]; /* the writer thread's alone */
    unsigned next;
};

static int zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* A record with no id of its own gets one derived from its seq (and the trace for a span),
 * stable across exports and restarts. Never all zero, as OTLP wants. */
static void derive(const char *what, uint64_t seq, uint8_t *out, size_t n)
{
    uint8_t in[16], h[32];
    memcpy(in, what, 8);
    for (int i = 0; i < 8; i++)
        in[8 + i] = (uint8_t)(seq >> (8 * (7 - i)));
    crypto_hash_sha256(h, in, sizeof in);
    memcpy(out, h, n);
    if (zero(out, n))
        out[n - 1] = 1;
}

static void cpy(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = 0;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static pending *pending_find(aexp *x, const uint8_t parent[AUDIT_SPAN_LEN])
{
    for (unsigned i = 0; i < MODELS; i++)
        if (x->p[i].used && !memcmp(x->p[i].parent, parent, AUDIT_SPAN_LEN))
            return &x->p[i];
    return NULL;
}

void aexp_span_of(aexp *x, const audit_rec *r, otlp_span *s)
{
    memset(s, 0, sizeof *s);
    if (zero(r->trace_id, AUDIT_TRACE_LEN))
        derive("aostrace", r->seq, s->trace_id, sizeof s->trace_id);
    else
        memcpy(s->trace_id, r->trace_id, AUDIT_TRACE_LEN);
    if (zero(r->span_id, AUDIT_SPAN_LEN))
        derive("aos.span", r->seq, s->span_id, sizeof s->span_id);
    else
        memcpy(s->span_id, r->span_id, AUDIT_SPAN_LEN);
    memcpy(s->parent_span_id, r->parent_span_id, AUDIT_SPAN_LEN);
    s->end_ns = r->time_ns;
    uint64_t lat = r->latency_us * 1000u;
    s->start_ns = lat < r->time_ns ? r->time_ns - lat : r->time_ns;
    s->kind = OTLP_KIND_INTERNAL;
    s->status = r->status ? OTLP_STATUS_ERROR : OTLP_STATUS_OK;
    if (r->status)
        snprintf(s->status_message, sizeof s->status_message, "%s",
                 aos_err_name((aos_err)r->status));
    char kind[AUDIT_KIND_MAX + 1], method[AUDIT_METHOD_MAX + 1], agent[AUDIT_AGENT_MAX + 1],
        run[AUDIT_RUN_MAX + 1];
    cpy(kind, sizeof kind, r->kind, r->kind_len);
    cpy(method, sizeof method, r->method ? r->method : "", r->method_len);
    cpy(agent, sizeof agent, r->agent ? r->agent : "", r->agent_len);
    cpy(run, sizeof run, r->run ? r->run : "", r->run_len);
    json_t *b = NULL;
    int llm = !strcmp(kind, "llm.request") || !strcmp(kind, "llm.reply");
    if ((llm || !strcmp(kind, "tool.run")) && r->body_len <= BODY_PARSE_MAX)
        b = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (llm) {
        /* the GenAI inference span: "chat {model}", a client call to the provider */
        int embed = b && (json_object_get(b, "inputs_blake2b") || json_object_get(b, "dim"));
        const char *op = embed ? "embeddings" : "chat";
        char provider[64] = "", model[128] = "";
        pending *pd = x ? pending_find(x, r->parent_span_id) : NULL;
        if (!strcmp(kind, "llm.request")) {
            snprintf(provider, sizeof provider, "%s", jstr(b, "provider"));
            snprintf(model, sizeof model, "%s", jstr(b, "model"));
            if (x && !zero(r->parent_span_id, AUDIT_SPAN_LEN)) {
                if (!pd) {
                    pd = &x->p[x->next];
                    x->next = (x->next + 1) % MODELS; /* the oldest waits longest: dropped */
                }
                memcpy(pd->parent, r->parent_span_id, AUDIT_SPAN_LEN);
                pd->time_ns = r->time_ns;
                snprintf(pd->provider, sizeof pd->provider, "%s", provider);
                snprintf(pd->model, sizeof pd->model, "%s", model);
                pd->used = 1;
            }
        } else if (pd) {
            snprintf(provider, sizeof provider, "%s", pd->provider);
            snprintf(model, sizeof model, "%s", pd->model);
            if (pd->time_ns && pd->time_ns < s->end_ns)
                s->start_ns = pd->time_ns; /* the call took from its request to its reply */
            pd->used = 0;
        }
        if (!strcmp(kind, "llm.reply"))
            s->kind = OTLP_KIND_CLIENT;
        snprintf(s->name, sizeof s->name, "%s%s%s", op, model[0] ? " " : "", model);
        otlp_attr_str(s, OTLP_GENAI_OPERATION_NAME, op);
        if (provider[0])
            otlp_attr_str(s, OTLP_GENAI_PROVIDER_NAME, provider);
        if (model[0])
            otlp_attr_str(s, OTLP_GENAI_REQUEST_MODEL, model);
        json_t *u = json_object_get(b, "usage");
        if (json_is_integer(json_object_get(u, "input_tokens")))
            otlp_attr_int(s, OTLP_GENAI_USAGE_INPUT_TOKENS,
                          json_integer_value(json_object_get(u, "input_tokens")));
        if (json_is_integer(json_object_get(u, "output_tokens")))
            otlp_attr_int(s, OTLP_GENAI_USAGE_OUTPUT_TOKENS,
                          json_integer_value(json_object_get(u, "output_tokens")));
    } else if (!strcmp(kind, "tool.run")) {
        const char *tool = jstr(b, "tool");
        snprintf(s->name, sizeof s->name, "execute_tool%s%s", tool[0] ? " " : "", tool);
        otlp_attr_str(s, OTLP_GENAI_OPERATION_NAME, "execute_tool");
        if (tool[0])
            otlp_attr_str(s, OTLP_GENAI_TOOL_NAME, tool);
        if (json_is_integer(json_object_get(b, "exit_status")))
            otlp_attr_int(s, "aos.tool.exit_status",
                          json_integer_value(json_object_get(b, "exit_status")));
    } else {
        /* a syscall (aosd's) or a server's detail: the method names it */
        snprintf(s->name, sizeof s->name, "%s", method[0] ? method : kind);
        if (!strcmp(kind, "syscall"))
            s->kind = OTLP_KIND_SERVER;
    }
    json_decref(b);
    if (agent[0])
        otlp_attr_str(s, OTLP_GENAI_AGENT_NAME, agent);
    otlp_attr_int(s, "aos.seq", (int64_t)r->seq);
    otlp_attr_str(s, "aos.kind", kind);
    if (method[0])
        otlp_attr_str(s, "aos.method", method);
    if (agent[0])
        otlp_attr_str(s, "aos.agent", agent);
    if (run[0]) {
        otlp_attr_str(s, "aos.run", run);
        otlp_attr_int(s, "aos.step", r->step);
    }
    otlp_attr_str(s, "aos.status", aos_err_name((aos_err)r->status));
    otlp_attr_int(s, "aos.latency_us", (int64_t)r->latency_us);
}

void aexp_record(aexp *x, const audit_rec *r)
{
    if (!x)
        return;
    otlp_span s;
    aexp_span_of(x, r, &s);
    if (x->e)
        otlp_push(x->e, &s, NULL, 0);
}

aexp *aexp_mapper(void)
{
    return calloc(1, sizeof(aexp));
}

static Aos__Audit__Config *config_of(const uint8_t *config, size_t len)
{
    return config && len ? aos__audit__config__unpack(NULL, len, config) : NULL;
}

int aexp_wanted(const uint8_t *config, size_t len)
{
    Aos__Audit__Config *c = config_of(config, len);
    int yes = c && c->otlp_endpoint.len > 0;
    if (c)
        aos__audit__config__free_unpacked(c, NULL);
    return yes;
}

aos_err aexp_new(const uint8_t *config, size_t len, aexp **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!config || !len)
        return AOS_OK;
    Aos__Audit__Config *c = config_of(config, len);
    if (!c) {
        WHY("the audit configuration is not an aos.audit.Config");
        return AOS_ERR_PROTO;
    }
    aos_err rc = AOS_OK;
    char *url = NULL, **hdr = NULL;
    aexp *x = NULL;
    if (!c->otlp_endpoint.len)
        goto out;
    /* aosd checked these; they are checked again here, where they are used */
    if (c->otlp_endpoint.len > 2048 || c->n_otlp_headers > OTLP_MAX_HEADERS) {
        WHY("the OTLP endpoint or its headers are over their caps");
        rc = AOS_ERR_USAGE;
        goto out;
    }
    url = strndup((const char *)c->otlp_endpoint.data, c->otlp_endpoint.len);
    hdr = calloc(c->n_otlp_headers + 1, sizeof *hdr);
    x = calloc(1, sizeof *x);
    if (!url || !hdr || !x) {
        WHY("out of memory");
        rc = AOS_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < c->n_otlp_headers; i++) {
        const Aos__Audit__OtlpHeader *h = c->otlp_headers[i];
        size_t n = h->name.len + 2 + h->value.len + 1;
        if (n > OTLP_HEADER_MAX || !(hdr[i] = malloc(n))) {
            WHY("OTLP header %zu is over %u bytes", i, OTLP_HEADER_MAX);
            rc = AOS_ERR_USAGE;
            goto out;
        }
        snprintf(hdr[i], n, "%.*s: %.*s", (int)h->name.len, (const char *)h->name.data,
                 (int)h->value.len, (const char *)h->value.data);
    }
    otlp_config oc = {
        .url = url,
        .headers = (const char *const *)hdr,
        .max_queue_spans = c->max_queue_spans,
        .batch_max = c->batch_size,
        .flush_ms = c->flush_ms,
        .timeout_ms = c->timeout_ms,
        .retry_initial_ms = c->retry_initial_ms,
        .retry_max_ms = c->retry_max_ms,
    };
    if ((rc = otlp_new(&oc, &x->e, why, whylen)) != AOS_OK)
        goto out;
    *out = x;
    x = NULL;
out:
    if (hdr) {
        for (size_t i = 0; hdr[i]; i++) {
            sodium_memzero(hdr[i], strlen(hdr[i])); /* a collector's key, maybe */
            free(hdr[i]);
        }
        free(hdr);
    }
    free(url);
    free(x);
    for (size_t i = 0; i < c->n_otlp_headers; i++)
        sodium_memzero(c->otlp_headers[i]->value.data, c->otlp_headers[i]->value.len);
    aos__audit__config__free_unpacked(c, NULL);
    return rc;
}

void aexp_stats(aexp *x, srv_stats *st)
{
    if (!x || !x->e)
        return;
    otlp_stats o;
    otlp_stats_get(x->e, &o);
    srv_stat(st, "otlp_pushed", (int64_t)o.pushed, "spans queued for export");
    srv_stat(st, "otlp_sent", (int64_t)o.sent, "spans the collector took");
    srv_stat(st, "otlp_queued", (int64_t)o.queued, "spans waiting (or in the request)");
    srv_stat(st, "otlp_dropped_full", (int64_t)o.dropped_full,
             "oldest spans dropped from a full queue (the collector was away too long)");
    srv_stat(st, "otlp_dropped_rejected", (int64_t)o.dropped_rejected,
             "spans the collector refused");
    srv_stat(st, "otlp_retries", (int64_t)o.retries, "requests sent again after a failure");
}

void aexp_free(aexp *x)
{
    if (!x)
        return;
    otlp_free(x->e);
    free(x);
}
