/* A server's decision details for the audit log: one event sent with audit.emit under the
 * call's trace, run and step, keyed so that a re-sent emit is not appended twice, with the
 * contents it names by digest (stored once by aos-audit, in the same commit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "audit.pb-c.h"
#include "serve.h"

static void emitted(void *arg, const aos_reply *r)
{
    (void)arg;
    (void)r; /* a detail that did not make it is counted by aos-audit's gap, not here */
}

struct srv_contents {
    Aos__Audit__Content *c[SRV_CONTENTS_MAX];
    uint8_t hash[SRV_CONTENTS_MAX][32];
    size_t n, bytes;
};

srv_contents *srv_contents_new(void)
{
    return calloc(1, sizeof(srv_contents));
}

int srv_contents_add(srv_contents *c, const void *p, size_t n, char hex[65])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof h, p, n, NULL, 0);
    aos_hex(h, sizeof h, hex);
    if (!c)
        return 0;
    for (size_t i = 0; i < c->n; i++)
        if (!memcmp(c->hash[i], h, sizeof h))
            return 1;
    if (n > SRV_CONTENT_MAX || c->n >= SRV_CONTENTS_MAX || c->bytes + n > SRV_CONTENTS_BYTES)
        return 0;
    Aos__Audit__Content *k = malloc(sizeof *k);
    uint8_t *b = malloc(n ? n : 1);
    if (!k || !b) {
        free(k);
        free(b);
        return 0;
    }
    aos__audit__content__init(k);
    if (n)
        memcpy(b, p, n);
    memcpy(c->hash[c->n], h, sizeof h);
    k->hash = (ProtobufCBinaryData){sizeof h, c->hash[c->n]};
    k->body = (ProtobufCBinaryData){n, b};
    c->c[c->n++] = k;
    c->bytes += n;
    return 1;
}

size_t srv_contents_count(const srv_contents *c)
{
    return c ? c->n : 0;
}

void srv_contents_free(srv_contents *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->c[i]->body.data);
        free(c->c[i]);
    }
    free(c);
}

void srv_emit(srv *s, srv_call *call, const char *kind, aos_err status, const char *body)
{
    srv_emit_with(s, call, kind, status, body, NULL);
}

void srv_emit_with(srv *s, srv_call *call, const char *kind, aos_err status, const char *body,
                   const srv_contents *c)
{
    const aos_env *env = srv_call_env(call);
    Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT;
    ev.kind = (ProtobufCBinaryData){strlen(kind), (uint8_t *)kind};
    ev.agent = (ProtobufCBinaryData){strlen(env->agent_id), (uint8_t *)env->agent_id};
    ev.run = (ProtobufCBinaryData){strlen(env->run_id), (uint8_t *)env->run_id};
    ev.step = env->step;
    if (env->has_trace) {
        ev.trace_id = (ProtobufCBinaryData){AOS_ID_LEN, (uint8_t *)env->trace_id};
        ev.parent_span_id = (ProtobufCBinaryData){AOS_SPAN_LEN, (uint8_t *)env->span_id};
    }
    ev.method = (ProtobufCBinaryData){strlen(env->method), (uint8_t *)env->method};
    ev.status = status;
    ev.body = (ProtobufCBinaryData){strlen(body), (uint8_t *)body};
    /* the key: this call's request id and the kind */
    char key[2 * AOS_ID_LEN + 40];
    aos_hex(env->request_id, AOS_ID_LEN, key);
    snprintf(key + 2 * AOS_ID_LEN, sizeof key - 2 * AOS_ID_LEN, ":%.32s", kind);
    ev.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    Aos__Audit__EmitRequest rq = AOS__AUDIT__EMIT_REQUEST__INIT;
    Aos__Audit__Event *evs[1] = {&ev};
    rq.n_events = 1;
    rq.events = evs;
    if (c && c->n) {
        rq.n_contents = c->n;
        rq.contents = (Aos__Audit__Content **)c->c;
    }
    size_t n = aos__audit__emit_request__get_packed_size(&rq);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        aos__audit__emit_request__pack(&rq, buf);
        (void)srv_request_async(s, call, "audit.emit", buf, n, 0, emitted, NULL);
    }
    free(buf);
}

void srv_blake2b_hex(const void *p, size_t n, char out[65])
{
    uint8_t d[32];
    crypto_generichash(d, sizeof d, p, n, NULL, 0);
    aos_hex(d, sizeof d, out);
}
