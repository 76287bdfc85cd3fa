/* What aos-llm tells the audit log about each call: the request (model, each message by its
 * content hash, the tools offered) and the reply (text, tool calls, usage), via audit.emit. */
#include "trail.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>


#define TRAIL_TEXT_MAX (64u << 10) /* reply text kept in the record; the rest by hash */

static json_t *jstr(ProtobufCBinaryData b)
{
    /* every text field was checked as UTF-8 on the way in (main.c, the wire decoders) */
    return json_stringn((const char *)b.data, b.len);
}

static json_t *digest(const void *p, size_t n)
{
    char hex[65];
    srv_blake2b_hex(p, n, hex);
    return json_string(hex);
}

/* A message by what it says, not its words: a hash per part and per tool call. */
static json_t *message(const Aos__Llm__Message *m)
{
    json_t *o = json_object(), *parts = json_array();
    json_object_set_new(o, "role", json_integer(m->role));
    for (size_t i = 0; i < m->n_content; i++) {
        json_t *p = json_object();
        json_object_set_new(p, "blake2b", digest(m->content[i]->text.data,
                                                 m->content[i]->text.len));
        json_object_set_new(p, "len", json_integer((json_int_t)m->content[i]->text.len));
        json_array_append_new(parts, p);
    }
    json_object_set_new(o, "content", parts);
    if (m->n_tool_calls) {
        json_t *calls = json_array();
        for (size_t i = 0; i < m->n_tool_calls; i++) {
            json_t *c = json_object();
            json_object_set_new(c, "name", jstr(m->tool_calls[i]->name));
            json_object_set_new(c, "args_blake2b", digest(m->tool_calls[i]->arguments.data,
                                                          m->tool_calls[i]->arguments.len));
            json_array_append_new(calls, c);
        }
        json_object_set_new(o, "tool_calls", calls);
    }
    return o;
}

/* Send one event of kind with body o (consumed) under call's trace. */
static void emit(srv *s, srv_call *call, const char *kind, aos_err status, json_t *o)
{
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (body)
        srv_emit(s, call, kind, status, body);
    free(body);
}

void trail_chat_request(srv *s, srv_call *call, const char *provider, const char *model,
                        const Aos__Llm__ChatRequest *rq)
{
    json_t *o = json_object(), *msgs = json_array(), *tools = json_array();
    json_object_set_new(o, "provider", json_string(provider));
    json_object_set_new(o, "model", json_string(model));
    for (size_t i = 0; i < rq->n_messages; i++)
        json_array_append_new(msgs, message(rq->messages[i]));
    json_object_set_new(o, "messages", msgs);
    for (size_t i = 0; i < rq->n_tools; i++)
        json_array_append_new(tools, jstr(rq->tools[i]->name));
    json_object_set_new(o, "tools", tools);
    emit(s, call, "llm.request", AOS_OK, o);
}

void trail_embed_request(srv *s, srv_call *call, const char *provider, const char *model,
                         const Aos__Llm__EmbedRequest *rq)
{
    json_t *o = json_object(), *in = json_array();
    json_object_set_new(o, "provider", json_string(provider));
    json_object_set_new(o, "model", json_string(model));
    for (size_t i = 0; i < rq->n_inputs; i++)
        json_array_append_new(in, digest(rq->inputs[i].data, rq->inputs[i].len));
    json_object_set_new(o, "inputs_blake2b", in);
    emit(s, call, "llm.request", AOS_OK, o);
}

static json_t *usage(const Aos__Llm__Usage *u)
{
    json_t *o = json_object();
    if (u) {
        json_object_set_new(o, "input_tokens", json_integer((json_int_t)u->input_tokens));
        json_object_set_new(o, "output_tokens", json_integer((json_int_t)u->output_tokens));
        json_object_set_new(o, "cache_read_tokens",
                            json_integer((json_int_t)u->cache_read_tokens));
        json_object_set_new(o, "cache_write_tokens",
                            json_integer((json_int_t)u->cache_write_tokens));
    }
    return o;
}

void trail_reply(srv *s, srv_call *call, int embed, aos_err status, const char *why,
                 const uint8_t *payload, size_t len)
{
    json_t *o = json_object();
    if (status != AOS_OK) {
        json_object_set_new(o, "error", json_string(why && *why ? why : aos_strerror(status)));
    } else if (embed) {
        Aos__Llm__EmbedReply *r = aos__llm__embed_reply__unpack(NULL, len, payload);
        if (r) {
            json_object_set_new(o, "vectors", json_integer((json_int_t)r->n_vectors));
            json_object_set_new(o, "dim", json_integer(r->dim));
            json_object_set_new(o, "usage", usage(r->usage));
            aos__llm__embed_reply__free_unpacked(r, NULL);
        }
    } else {
        Aos__Llm__ChatReply *r = aos__llm__chat_reply__unpack(NULL, len, payload);
        if (r) {
            json_t *text = json_array();
            const Aos__Llm__Message *m = r->message;
            size_t kept = 0;
            for (size_t i = 0; m && i < m->n_content; i++) {
                ProtobufCBinaryData t = m->content[i]->text;
                if (kept + t.len <= TRAIL_TEXT_MAX) {
                    json_array_append_new(text, jstr(t));
                    kept += t.len;
                } else {
                    json_t *d = json_object();
                    json_object_set_new(d, "blake2b", digest(t.data, t.len));
                    json_object_set_new(d, "len", json_integer((json_int_t)t.len));
                    json_array_append_new(text, d);
                }
            }
            json_object_set_new(o, "text", text);
            if (m && m->n_tool_calls) {
                json_t *calls = json_array();
                for (size_t i = 0; i < m->n_tool_calls; i++) {
                    json_t *c = json_object();
                    json_object_set_new(c, "id", jstr(m->tool_calls[i]->id));
                    json_object_set_new(c, "name", jstr(m->tool_calls[i]->name));
                    json_object_set_new(c, "arguments", jstr(m->tool_calls[i]->arguments));
                    json_array_append_new(calls, c);
                }
                json_object_set_new(o, "tool_calls", calls);
            }
            json_object_set_new(o, "stop_reason", json_integer(r->stop_reason));
            json_object_set_new(o, "usage", usage(r->usage));
            json_object_set_new(o, "cost_micro_usd", json_integer((json_int_t)r->cost_micro_usd));
            json_object_set_new(o, "attempts", json_integer(r->attempts));
            aos__llm__chat_reply__free_unpacked(r, NULL);
        }
    }
    emit(s, call, "llm.reply", status, o);
}
