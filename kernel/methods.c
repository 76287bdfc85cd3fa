/* The method table and the kernel's own methods (status, ping, server control). The
 * router looks every request up here once; a method not listed does not exist. */
#include "methods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agents.h"
#include "keys.h"
#include "retain.h"
#include "aos.pb-c.h"
#include "llmq.h"
#include "aos/msg.h"
#include "msg.h"
#include "metrics.h"
#include "supervise.h"

#define PING_MAX (64u << 10)
#define SMALL (64u << 10)        /* a request of names, keys and numbers */
#define WHOLE (AOS_MSG_MAX)      /* one that carries data (a value, a document, a blob chunk) */

static aos_err k_status(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                        char *why, size_t whylen)
{
    (void)req; (void)why; (void)whylen;
    return sup_status(k->bad_messages, k->routed, out, len);
}

/* aosd alone: the router's own cost, for the benchmarks */
static aos_err k_ping(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                      char *why, size_t whylen)
{
    (void)k;
    Aos__PingRequest *in = aos__ping_request__unpack(NULL, req->payload_len, req->payload);
    if (!in || in->data.len > PING_MAX) {
        if (in)
            aos__ping_request__free_unpacked(in, NULL);
        snprintf(why, whylen, "kernel.ping: payload is not a PingRequest of <= 64 KiB");
        return AOS_ERR_PROTO;
    }
    Aos__PingReply pr = AOS__PING_REPLY__INIT;
    pr.data = in->data;
    pr.pid = getpid();
    *len = aos__ping_reply__get_packed_size(&pr);
    *out = malloc(*len ? *len : 1);
    if (*out)
        aos__ping_reply__pack(&pr, *out);
    aos__ping_request__free_unpacked(in, NULL);
    return *out ? AOS_OK : AOS_ERR_NOMEM;
}

static aos_err k_server(const aos_env *req, int kill, char *why, size_t whylen)
{
    Aos__ServerRequest *sr = aos__server_request__unpack(NULL, req->payload_len, req->payload);
    if (!sr || !aos_pb_strings_valid(&sr->base) || !sr->name[0]) {
        if (sr)
            aos__server_request__free_unpacked(sr, NULL);
        snprintf(why, whylen, "%s: payload is not a ServerRequest with a name", req->method);
        return AOS_ERR_USAGE;
    }
    aos_err rc = kill ? sup_kill(sr->name, why, whylen) : sup_restart(sr->name, why, whylen);
    aos__server_request__free_unpacked(sr, NULL);
    return rc;
}

static aos_err k_kill(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                      char *why, size_t whylen)
{
    (void)k; (void)out; (void)len;
    return k_server(req, 1, why, whylen);
}

static aos_err k_restart(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                         char *why, size_t whylen)
{
    (void)k; (void)out; (void)len;
    return k_server(req, 0, why, whylen);
}

/* the LLM scheduler: its state, and the admin's weights, classes and budgets */
static aos_err k_sched(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                       char *why, size_t whylen)
{
    (void)req; (void)k;
    return llmq_status(out, len, why, whylen);
}

static aos_err k_sched_set(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                           char *why, size_t whylen)
{
    (void)k; (void)out; (void)len;
    return llmq_set(req->payload, req->payload_len, why, whylen);
}

static aos_err k_shutdown(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                          char *why, size_t whylen)
{
    (void)k; (void)out; (void)len;
    Aos__ShutdownRequest *r = aos__shutdown_request__unpack(NULL, req->payload_len,
                                                            req->payload);
    if (!r) {
        snprintf(why, whylen, "kernel.shutdown: payload is not a ShutdownRequest");
        return AOS_ERR_USAGE;
    }
    sup_request_stop((uint64_t)r->timeout_s * 1000u);
    aos__shutdown_request__free_unpacked(r, NULL);
    return AOS_OK;
}

/* Prometheus text: for the admin, and for aos-api's /metrics (read-only) */
static aos_err k_metrics(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                         char *why, size_t whylen)
{
    (void)req;
    char *t = NULL;
    aos_err rc = kmetrics_text(k->bad_messages, k->routed, &t, len, why, whylen);
    *out = (uint8_t *)t;
    return rc;
}

#define ALL (KM_ADMIN | KM_AGENT | KM_SERVER)
#define KERNEL(n, f, cap, w) {n, KM_CONTROL, KM_KERNEL, NULL, f, NULL, cap, w, 0}
#define ASYNC(n, f, cap, w) {n, KM_CONTROL, KM_ASYNC, NULL, NULL, f, cap, w, 0}
#define FWD(n, c, srv, cap, w) {n, c, KM_FORWARD, srv, NULL, NULL, cap, w, 0}
#define HOOK(n, srv) {n, KM_CONTROL, KM_FORWARD, srv, NULL, NULL, WHOLE, ALL, 1}
/* Every server answers ping and stats (servers/common/serve.c) and, with --test-hooks,
 * test.* (the tests drive streams, async replies and server-to-server calls with them). */
#define SERVER_COMMON(s)                                                                  \
    FWD(s ".ping", KM_READ, s, PING_MAX + 64, ALL),                                       \
    FWD(s ".stats", KM_READ, s, SMALL, KM_ADMIN | KM_SERVER),                             \
    HOOK(s ".test.*", s)

static const kmethod table[] = {
    KERNEL("kernel.status", k_status, SMALL, KM_ADMIN),
    KERNEL("kernel.ping", k_ping, PING_MAX + 64, KM_ADMIN | KM_AGENT),
    KERNEL("kernel.server.kill", k_kill, SMALL, KM_ADMIN),
    KERNEL("kernel.server.restart", k_restart, SMALL, KM_ADMIN),
    KERNEL("kernel.shutdown", k_shutdown, SMALL, KM_ADMIN),
    KERNEL("kernel.sched", k_sched, SMALL, KM_ADMIN),
    KERNEL("kernel.sched.set", k_sched_set, SMALL, KM_ADMIN),
    KERNEL("kernel.metrics", k_metrics, SMALL, KM_ADMIN | KM_SERVER),
    {"kernel.stream.next", KM_CONTROL, KM_PULL, NULL, NULL, NULL, SMALL, KM_ADMIN | KM_AGENT,
     0},
    {"kernel.stream.cancel", KM_CONTROL, KM_STOP_STREAM, NULL, NULL, NULL, SMALL,
     KM_ADMIN | KM_AGENT, 0},
    /* agents: the admin deploys and governs them; an agent asks who it is, reports its
     * step boundaries (where stop and suspend take effect) and waits for its wakes */
    ASYNC("kernel.agent.apply", agents_m_apply, WHOLE, KM_ADMIN),
    ASYNC("kernel.agent.list", agents_m_list, SMALL, KM_ADMIN),
    ASYNC("kernel.agent.ctl", agents_m_ctl, SMALL, KM_ADMIN),
    ASYNC("kernel.agent.logs", agents_m_logs, SMALL, KM_ADMIN),
    /* retention: expired finished runs and gone agents' workspaces, now */
    ASYNC("kernel.agent.prune", retain_m_prune, SMALL, KM_ADMIN),
    /* the front door's API keys: each one is an agent's identity for aos-api's clients */
    ASYNC("kernel.agent.key.create", keys_m_create, SMALL, KM_ADMIN),
    ASYNC("kernel.agent.key.list", keys_m_list, SMALL, KM_ADMIN),
    ASYNC("kernel.agent.key.revoke", keys_m_revoke, SMALL, KM_ADMIN),
    ASYNC("kernel.agent.self", agents_m_self, SMALL, KM_AGENT),
    ASYNC("kernel.agent.step", agents_m_step, SMALL, KM_AGENT),
    ASYNC("kernel.agent.wait", agents_m_wait, SMALL, KM_AGENT),
    /* mail: into another agent's durable inbox (talks_to checked), to a topic's
     * subscribers; operators send as aos:operator and look into an inbox */
    ASYNC("msg.send", msg_m_send, AOS_MSG_BODY_MAX + (16u << 10), KM_ADMIN | KM_AGENT),
    ASYNC("msg.publish", msg_m_publish, AOS_MSG_BODY_MAX + (16u << 10), KM_ADMIN | KM_AGENT),
    ASYNC("msg.ls", msg_m_ls, SMALL, KM_ADMIN),

    SERVER_COMMON("storage"),
    FWD("storage.kv.put", KM_WRITE, "storage", WHOLE, ALL),
    FWD("storage.kv.get", KM_READ, "storage", SMALL, ALL),
    FWD("storage.kv.list", KM_READ, "storage", SMALL, ALL),
    FWD("storage.kv.delete", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.kv.incr", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.doc.put", KM_WRITE, "storage", WHOLE, ALL),
    FWD("storage.doc.get", KM_READ, "storage", SMALL, ALL),
    FWD("storage.doc.query", KM_READ, "storage", WHOLE, ALL),
    FWD("storage.doc.delete", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.blob.write", KM_WRITE, "storage", WHOLE, ALL),
    FWD("storage.blob.commit", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.blob.read", KM_READ, "storage", SMALL, ALL),
    FWD("storage.blob.delete", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.blob.list", KM_READ, "storage", SMALL, ALL),
    FWD("storage.checkpoint.save", KM_WRITE, "storage", WHOLE, ALL),
    FWD("storage.checkpoint.load", KM_READ, "storage", SMALL, ALL),
    FWD("storage.checkpoint.list", KM_READ, "storage", SMALL, ALL),
    FWD("storage.checkpoint.prune", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.step.append", KM_WRITE, "storage", WHOLE, ALL),
    FWD("storage.step.read", KM_READ, "storage", SMALL, ALL),
    FWD("storage.step.drop", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.queue.send", KM_WRITE, "storage", WHOLE, ALL),
    FWD("storage.queue.recv", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.queue.ack", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.queue.nack", KM_WRITE, "storage", SMALL, ALL),
    FWD("storage.queue.list", KM_READ, "storage", SMALL, ALL),
    FWD("storage.queue.peek", KM_READ, "storage", SMALL, ALL),

    SERVER_COMMON("memory"),
    /* context windows: an assembly can swap pages out, so it writes; a search's automatic
     * page-ins are the memory manager's own residency, like a fault under a read */
    FWD("memory.page.append", KM_WRITE, "memory", WHOLE, ALL),
    FWD("memory.page.pin", KM_WRITE, "memory", SMALL, ALL),
    FWD("memory.page.unpin", KM_WRITE, "memory", SMALL, ALL),
    FWD("memory.page.in", KM_WRITE, "memory", SMALL, ALL),
    FWD("memory.budget.set", KM_WRITE, "memory", SMALL, ALL),
    FWD("memory.show", KM_READ, "memory", SMALL, ALL),
    FWD("memory.assemble", KM_WRITE, "memory", SMALL, ALL),
    FWD("memory.store", KM_WRITE, "memory", WHOLE, ALL),
    FWD("memory.search", KM_READ, "memory", SMALL, ALL),
    FWD("memory.share", KM_WRITE, "memory", SMALL, ALL),
    /* the other servers answer their common methods until their own arrive */
    SERVER_COMMON("tool"),
    /* the devices: a run is effectful (its record is durable before it starts) */
    FWD("tool.list", KM_READ, "tool", SMALL, ALL),
    FWD("tool.show", KM_READ, "tool", SMALL, ALL),
    FWD("tool.run", KM_EFFECT, "tool", WHOLE, ALL),
    SERVER_COMMON("llm"),
    /* the gateway: a chat is the LLM class (the scheduler issue queues it here) */
    FWD("llm.chat", KM_LLM, "llm", WHOLE, ALL),
    FWD("llm.embed", KM_LLM, "llm", WHOLE, ALL),
    FWD("llm.providers", KM_READ, "llm", SMALL, KM_ADMIN | KM_SERVER),
    FWD("llm.usage", KM_READ, "llm", SMALL, KM_ADMIN | KM_SERVER),
    SERVER_COMMON("audit"),
    /* the black box: servers add their decision details; aosd adds its syscall events
     * itself, straight onto the link. Admins read and check it. */
    FWD("audit.emit", KM_CONTROL, "audit", WHOLE, KM_ADMIN | KM_SERVER),
    FWD("audit.head", KM_READ, "audit", SMALL, KM_ADMIN),
    FWD("audit.prove", KM_READ, "audit", SMALL, KM_ADMIN),
    FWD("audit.verify", KM_READ, "audit", SMALL, KM_ADMIN),
    FWD("audit.tail", KM_READ, "audit", SMALL, KM_ADMIN),
    /* retention: an admin exports a range, then aos-audit records the cut and drops it */
    FWD("audit.export", KM_READ, "audit", SMALL, KM_ADMIN),
    FWD("audit.archive", KM_CONTROL, "audit", SMALL, KM_ADMIN),
    FWD("audit.replay", KM_READ, "audit", SMALL, KM_ADMIN),
    FWD("audit.contents", KM_READ, "audit", SMALL, KM_ADMIN),
    SERVER_COMMON("api"),
};
#define NTABLE (sizeof table / sizeof table[0])

static int matches(const char *pat, const char *method)
{
    size_t n = strlen(pat);
    if (n >= 2 && pat[n - 1] == '*' && pat[n - 2] == '.')
        return !strncmp(pat, method, n - 1) && method[n - 1] != 0;
    return !strcmp(pat, method);
}

const kmethod *km_find(const char *method)
{
    /* a linear scan of ~50 short strings costs less than the envelope decode before it */
    for (size_t i = 0; i < NTABLE; i++)
        if (matches(table[i].name, method))
            return &table[i];
    return NULL;
}

const char *km_class_name(km_class c)
{
    static const char *const names[] = {"control", "read", "write", "effect", "llm"};
    return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "?";
}

int km_allowed(const kmethod *m, unsigned caller)
{
    return (m->who & caller) != 0;
}
