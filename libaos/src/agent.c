/* libaos for agent programs (see aos/agent.h): the link aosd named in the environment, who
 * the kernel says we are, step boundaries and idle waits, every reply checked as wire input. */
#include "aos/agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "aos/envelope.h"
#include "aos/err.h"

/* kernel.agent.wait is answered at the wake, or at its deadline without one: a long wait
 * keeps an idle agent's calls few, and aosd caps a deadline at 10 minutes anyway. */
#define WAIT_MS (5u * 60u * 1000u)
#define MANIFEST_MAX (1u << 20)

struct aos_agent {
    aos_conn *conn;
    char name[AOS_AGENT_ID_MAX + 1];
    char *manifest;         /* NUL-terminated JSON text, "" for none */
    uint64_t incarnation;
    uint64_t steps;
    char run[AOS_RUN_ID_MAX + 1]; /* the run its steps belong to (aos_agent_set_run), "" */
};

/* A bytes field from aosd that must be text: UTF-8 (empty is fine). */
static int text_ok(ProtobufCBinaryData b)
{
    return b.len == 0 || aos_utf8_valid(b.data, b.len);
}

static int text_is(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0);
}

/* One call whose reply is unpacked as rd; *out is the caller's
 * (protobuf_c_message_free_unpacked). id (may be NULL: a fresh one) is its request id. */
static aos_err call_id(aos_agent *a, const char *method, const ProtobufCMessage *rq,
                       uint32_t timeout_ms, const uint8_t *id,
                       const ProtobufCMessageDescriptor *rd, void **out, char *why,
                       size_t whylen)
{
    uint8_t buf[64];
    size_t n = rq ? protobuf_c_message_get_packed_size(rq) : 0;
    if (n > sizeof buf) {
        aos_say(why, whylen, "%s: request too large", method);
        return AOS_ERR_INTERNAL;
    }
    if (rq)
        protobuf_c_message_pack(rq, buf);
    aos_call_opts o = {.timeout_ms = timeout_ms, .request_id = id};
    aos_reply r;
    aos_err e = aos_call(a->conn, &o, method, n ? buf : NULL, n, &r);
    if (e != AOS_OK) {
        aos_say(why, whylen, "%s", r.error[0] ? r.error : aos_strerror(e));
        aos_reply_clear(&r);
        return e;
    }
    *out = protobuf_c_message_unpack(rd, NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!*out) {
        aos_say(why, whylen, "%s: aosd sent a malformed reply", method);
        return AOS_ERR_PROTO;
    }
    return AOS_OK;
}

static aos_err call(aos_agent *a, const char *method, const ProtobufCMessage *rq,
                    uint32_t timeout_ms, const ProtobufCMessageDescriptor *rd, void **out,
                    char *why, size_t whylen)
{
    return call_id(a, method, rq, timeout_ms, NULL, rd, out, why, whylen);
}

aos_err aos_agent_open(aos_agent **out, char *why, size_t whylen)
{
    aos_err e;
    Aos__Agent__SelfReply *s = NULL;

    if (why && whylen)
        why[0] = 0;
    if (!out) {
        aos_say(why, whylen, "aos_agent_open needs a place for the agent");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    const char *url = getenv(AOS_AGENT_URL_ENV);
    if (!url || !*url) {
        aos_say(why, whylen, "not started by aosd: %s is not set", AOS_AGENT_URL_ENV);
        return AOS_ERR_NOT_FOUND;
    }
    aos_agent *a = calloc(1, sizeof *a);
    if (!a) {
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    if ((e = aos_connect(url, &a->conn, why, whylen)) != AOS_OK)
        goto out;
    if ((e = call(a, "kernel.agent.self", NULL, 0, &aos__agent__self_reply__descriptor,
                  (void **)&s, why, whylen)) != AOS_OK)
        goto out;
    /* the name is what every later message of ours is recorded under: it must be one */
    if (!aos_agent_id_valid((const char *)s->name.data, s->name.len) ||
        !text_ok(s->manifest_json) || s->manifest_json.len > MANIFEST_MAX) {
        aos_say(why, whylen, "kernel.agent.self: aosd sent a name that is not an agent id, "
                "or a manifest that is not UTF-8 of at most %u bytes", MANIFEST_MAX);
        e = AOS_ERR_PROTO;
        goto out;
    }
    memcpy(a->name, s->name.data, s->name.len);
    a->name[s->name.len] = 0;
    if (!(a->manifest = malloc(s->manifest_json.len + 1))) {
        aos_say(why, whylen, "out of memory");
        e = AOS_ERR_NOMEM;
        goto out;
    }
    if (s->manifest_json.len)
        memcpy(a->manifest, s->manifest_json.data, s->manifest_json.len);
    a->manifest[s->manifest_json.len] = 0;
    a->incarnation = s->incarnation;
    *out = a;
    a = NULL;
out:
    if (s)
        aos__agent__self_reply__free_unpacked(s, NULL);
    aos_agent_close(a);
    return e;
}

void aos_agent_close(aos_agent *a)
{
    if (!a)
        return;
    aos_close(a->conn);
    free(a->manifest);
    free(a);
}

aos_conn *aos_agent_conn(aos_agent *a)
{
    return a ? a->conn : NULL;
}

const char *aos_agent_name(const aos_agent *a)
{
    return a ? a->name : "";
}

const char *aos_agent_manifest(const aos_agent *a)
{
    return a && a->manifest ? a->manifest : "";
}

uint64_t aos_agent_incarnation(const aos_agent *a)
{
    return a ? a->incarnation : 0;
}

uint64_t aos_agent_steps(const aos_agent *a)
{
    return a ? a->steps : 0;
}

aos_err aos_agent_set_run(aos_agent *a, const char *run_id)
{
    if (!a || !run_id || strlen(run_id) > AOS_RUN_ID_MAX)
        return AOS_ERR_USAGE;
    snprintf(a->run, sizeof a->run, "%s", run_id);
    return AOS_OK;
}

aos_err aos_agent_step(aos_agent *a, aos_agent_action *action, char *why, size_t whylen)
{
    if (!a || !action) {
        aos_say(why, whylen, "aos_agent_step needs an agent and a place for the action");
        return AOS_ERR_USAGE;
    }
    *action = AOS_AGENT_CONTINUE;
    Aos__Agent__StepRequest q = AOS__AGENT__STEP_REQUEST__INIT;
    q.step = a->steps + 1;
    q.run = (ProtobufCBinaryData){strlen(a->run), (uint8_t *)a->run};
    Aos__Agent__StepReply *r = NULL;
    /* a suspend holds this call and freezes us in it: when we are thawed, our deadline may
     * have passed before the answer was read. The same request id again is the same step
     * to the kernel, answered at once (and not counted twice) */
    uint8_t id[AOS_ID_LEN];
    aos_id_random(id);
    aos_err e;
    while ((e = call_id(a, "kernel.agent.step", &q.base, 0, id,
                        &aos__agent__step_reply__descriptor, (void **)&r, why, whylen)) ==
           AOS_ERR_TIMEOUT) {
    }
    if (e != AOS_OK)
        return e;
    /* "suspend": the kernel held this call while we were suspended at this boundary; we
     * have been resumed, and go on */
    if (text_is(r->action, "continue") || text_is(r->action, "suspend")) {
        *action = AOS_AGENT_CONTINUE;
    } else if (text_is(r->action, "stop")) {
        *action = AOS_AGENT_STOP;
    } else {
        aos_say(why, whylen, "kernel.agent.step: aosd answered an action that is none of "
                "continue, stop, suspend");
        e = AOS_ERR_PROTO;
    }
    aos__agent__step_reply__free_unpacked(r, NULL);
    if (e == AOS_OK)
        a->steps = q.step;
    return e;
}

aos_err aos_agent_wait(aos_agent *a, char *why_woken, size_t cap, char *err, size_t errlen)
{
    if (!a || !why_woken || cap == 0) {
        aos_say(err, errlen, "aos_agent_wait needs an agent and a place for the reason");
        return AOS_ERR_USAGE;
    }
    why_woken[0] = 0;
    Aos__Agent__WaitRequest q = AOS__AGENT__WAIT_REQUEST__INIT;
    for (;;) {
        Aos__Agent__WaitReply *r = NULL;
        aos_err e = call(a, "kernel.agent.wait", &q.base, WAIT_MS,
                         &aos__agent__wait_reply__descriptor, (void **)&r, err, errlen);
        if (e == AOS_ERR_TIMEOUT)
            continue; /* the deadline came first, aosd's or ours: no wake yet */
        if (e != AOS_OK)
            return e;
        /* not woken: the wait's deadline, look again. A stop ends the wait however it is
         * flagged: looping on it would spin against aosd until its SIGTERM */
        if (!r->woken && !text_is(r->why, "stop")) {
            aos__agent__wait_reply__free_unpacked(r, NULL);
            continue;
        }
        if (!r->why.len || !aos_utf8_valid(r->why.data, r->why.len) || r->why.len >= cap) {
            aos__agent__wait_reply__free_unpacked(r, NULL);
            aos_say(err, errlen, "kernel.agent.wait: aosd sent a reason that is not UTF-8 "
                    "text of fewer than %zu bytes", cap);
            return AOS_ERR_PROTO;
        }
        memcpy(why_woken, r->why.data, r->why.len);
        why_woken[r->why.len] = 0;
        aos__agent__wait_reply__free_unpacked(r, NULL);
        return AOS_OK;
    }
}
