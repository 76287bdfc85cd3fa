/* Prometheus text for kernel.metrics, from what aosd already keeps: kernel.status's children,
 * the router's counts by method class, the LLM scheduler's state, the audit queue. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos.pb-c.h"
#include "audit.h"
#include "llmq.h"
#include "methods.h"
#include "route.h"
#include "supervise.h"

typedef struct mbuf {
    char *p;
    size_t len, cap;
    int oom;
} mbuf;

static void put(mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(mbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap * 2 : 8192;
        while (nc < b->len + (size_t)n + 1)
            nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
}

/* A label value as the format wants it: \, " and newline escaped. Names in aos are from
 * narrow charsets already; this keeps any other byte from breaking a line. */
static const char *lv(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; s && *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *s;
        }
    }
    out[o] = 0;
    return out;
}

static void head(mbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

aos_err kmetrics_text(uint64_t bad_messages, uint64_t routed, char **out, size_t *len,
                      char *why, size_t whylen)
{
    mbuf b = {0};
    char l1[256], l2[256];
    uint8_t *pl = NULL;
    size_t pn = 0;
    if (sup_status(bad_messages, routed, &pl, &pn) == AOS_OK) {
        Aos__StatusReply *st = aos__status_reply__unpack(NULL, pn, pl);
        if (st) {
            head(&b, "aos_up_seconds", "gauge", "how long aosd has run");
            put(&b, "aos_up_seconds %.3f\n", st->aosd_uptime_ms / 1000.0);
            head(&b, "aos_child_up", "gauge", "1 when the child (server or postgres) is running");
            for (size_t i = 0; i < st->n_children; i++)
                put(&b, "aos_child_up{child=\"%s\",state=\"%s\"} %d\n",
                    lv(st->children[i]->name, l1, sizeof l1),
                    lv(st->children[i]->state, l2, sizeof l2),
                    !strcmp(st->children[i]->state, "running"));
            head(&b, "aos_child_restarts_total", "counter", "restarts of the child by aosd");
            for (size_t i = 0; i < st->n_children; i++)
                put(&b, "aos_child_restarts_total{child=\"%s\"} %u\n",
                    lv(st->children[i]->name, l1, sizeof l1), st->children[i]->restarts);
            head(&b, "aos_bad_messages_total", "counter", "envelopes aosd refused as malformed");
            put(&b, "aos_bad_messages_total %llu\n", (unsigned long long)st->bad_messages);
            aos__status_reply__free_unpacked(st, NULL);
        }
        free(pl);
    }
    uint64_t cls[5];
    route_class_counts(cls);
    head(&b, "aos_routed_requests_total", "counter",
         "requests aosd routed to servers, by the method's class");
    for (int c = 0; c < 5; c++)
        put(&b, "aos_routed_requests_total{class=\"%s\"} %llu\n", km_class_name((km_class)c),
            (unsigned long long)cls[c]);
    pl = NULL;
    if (llmq_status(&pl, &pn, why, whylen) == AOS_OK) {
        Aos__SchedReply *sr = aos__sched_reply__unpack(NULL, pn, pl);
        if (sr) {
            head(&b, "aos_llm_queue_depth", "gauge", "LLM calls waiting in the scheduler");
            for (size_t i = 0; i < sr->n_providers; i++)
                put(&b, "aos_llm_queue_depth{provider=\"%s\"} %u\n",
                    lv(sr->providers[i]->name, l1, sizeof l1),
                    sr->providers[i]->queued_interactive + sr->providers[i]->queued_batch);
            head(&b, "aos_llm_in_flight", "gauge", "LLM calls at the provider");
            for (size_t i = 0; i < sr->n_providers; i++)
                put(&b, "aos_llm_in_flight{provider=\"%s\"} %u\n",
                    lv(sr->providers[i]->name, l1, sizeof l1), sr->providers[i]->in_flight);
            head(&b, "aos_llm_rate_limited_total", "counter", "429s from the provider");
            for (size_t i = 0; i < sr->n_providers; i++)
                put(&b, "aos_llm_rate_limited_total{provider=\"%s\"} %llu\n",
                    lv(sr->providers[i]->name, l1, sizeof l1),
                    (unsigned long long)sr->providers[i]->rate_limited);
            head(&b, "aos_llm_tokens_total", "counter", "LLM tokens used by the agent");
            for (size_t i = 0; i < sr->n_agents; i++)
                put(&b, "aos_llm_tokens_total{agent=\"%s\"} %llu\n",
                    lv(sr->agents[i]->agent, l1, sizeof l1),
                    (unsigned long long)sr->agents[i]->tokens);
            head(&b, "aos_llm_cost_usd_total", "counter", "LLM cost of the agent, USD");
            for (size_t i = 0; i < sr->n_agents; i++)
                put(&b, "aos_llm_cost_usd_total{agent=\"%s\"} %.6f\n",
                    lv(sr->agents[i]->agent, l1, sizeof l1),
                    sr->agents[i]->cost_micro_usd / 1e6);
            head(&b, "aos_llm_requests_total", "counter", "LLM calls the agent made");
            for (size_t i = 0; i < sr->n_agents; i++)
                put(&b, "aos_llm_requests_total{agent=\"%s\"} %llu\n",
                    lv(sr->agents[i]->agent, l1, sizeof l1),
                    (unsigned long long)sr->agents[i]->requests);
            head(&b, "aos_llm_queue_wait_seconds", "gauge",
                 "the agent's queue wait over its last 256 admissions");
            for (size_t i = 0; i < sr->n_agents; i++) {
                lv(sr->agents[i]->agent, l1, sizeof l1);
                put(&b, "aos_llm_queue_wait_seconds{agent=\"%s\",quantile=\"0.5\"} %.6f\n", l1,
                    sr->agents[i]->wait_p50_us / 1e6);
                put(&b, "aos_llm_queue_wait_seconds{agent=\"%s\",quantile=\"0.99\"} %.6f\n",
                    l1, sr->agents[i]->wait_p99_us / 1e6);
            }
            aos__sched_reply__free_unpacked(sr, NULL);
        }
        free(pl);
    }
    kaud_stats as;
    kaud_get_stats(&as);
    head(&b, "aos_audit_queued", "gauge", "audit events not yet handed to aos-audit");
    put(&b, "aos_audit_queued %llu\n", (unsigned long long)as.queued);
    head(&b, "aos_audit_lag_seconds", "gauge", "how long the oldest queued audit event waited");
    put(&b, "aos_audit_lag_seconds %.3f\n", as.oldest_ms / 1000.0);
    head(&b, "aos_audit_events_total", "counter", "audit events aosd recorded");
    put(&b, "aos_audit_events_total %llu\n", (unsigned long long)as.events);
    head(&b, "aos_audit_lost_total", "counter", "audit events lost (fail-open only)");
    put(&b, "aos_audit_lost_total %llu\n", (unsigned long long)as.lost);
    if (b.oom) {
        free(b.p);
        snprintf(why, whylen, "aosd is out of memory");
        return AOS_ERR_NOMEM;
    }
    *out = b.p;
    *len = b.len;
    return AOS_OK;
}
