/* What aos-llm tells the audit log about each call: the request (model, each message by its
 * content hash, the tools offered) and the reply (text, tool calls, usage), via audit.emit,
 * with the messages' texts and arguments (and a long reply text) as contents. No API key is
 * in any of them: keys live in the provider's config and its HTTP headers only. */
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

/* The digest of p[0..n), kept in cs as a content when it fits (listed in kept). */
static json_t *content(srv_contents *cs, json_t *kept, const void *p, size_t n)
{
    char hex[65];
    if (srv_contents_add(cs, p, n, hex))
        json_array_append_new(kept, json_string(hex));
    return json_string(hex);
}

/* The "contents" list of a body: each hash once, in the order first added. */
static void set_kept(json_t *o, json_t *kept)
{
    json_t *u = json_array();
    for (size_t i = 0; i < json_array_size(kept); i++) {
        const char *h = json_string_value(json_array_get(kept, i));
        int dup = 0;
        for (size_t j = 0; !dup && j < json_array_size(u); j++)
            dup = !strcmp(h, json_string_value(json_array_get(u, j)));
        if (!dup)
            json_array_append_new(u, json_string(h));
    }
    json_decref(kept);
    if (json_array_size(u))
        json_object_set_new(o, "contents", u);
    else
        json_decref(u);
}

/* A message by what it says, not its words: a hash per part and per tool call, each kept
 * as a content in cs. */
static json_t *message(const Aos__Llm__Message *m, srv_contents *cs, json_t *kept)
{
    json_t *o = json_object(), *parts = json_array();
    json_object_set_new(o, "role", json_integer(m->role));
    for (size_t i = 0; i < m->n_content; i++) {
        json_t *p = json_object();
        json_object_set_new(p, "blake2b", content(cs, kept, m->content[i]->text.data,
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
            json_object_set_new(c, "id", jstr(m->tool_calls[i]->id));
            json_object_set_new(c, "args_blake2b",
                                content(cs, kept, m->tool_calls[i]->arguments.data,
                                        m->tool_calls[i]->arguments.len));
            json_array_append_new(calls, c);
        }
        json_object_set_new(o, "tool_calls", calls);
    }
    if (m->tool_call_id.len)
        json_object_set_new(o, "tool_call_id", jstr(m->tool_call_id));
    if (m->is_error)
        json_object_set_new(o, "is_error", json_true());
    return o;
}

/* Send one event of kind with body o (consumed) under call's trace. */
static void emit(srv *s, srv_call *call, const char *kind, aos_err status, json_t *o,
                 srv_contents *cs)
{
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (body)
        srv_emit_with(s, call, kind, status, body, cs);
    free(body);
    srv_contents_free(cs);
}

void trail_chat_request(srv *s, srv_call *call, const char *provider, const char *model,
                        const Aos__Llm__ChatRequest *rq)
{
    json_t *o = json_object(), *msgs = json_array(), *tools = json_array();
    json_t *kept = json_array();
    srv_contents *cs = srv_contents_new();
    json_object_set_new(o, "provider", json_string(provider));
    json_object_set_new(o, "model", json_string(model));
    for (size_t i = 0; i < rq->n_messages; i++)
        json_array_append_new(msgs, message(rq->messages[i], cs, kept));
    json_object_set_new(o, "messages", msgs);
    for (size_t i = 0; i < rq->n_tools; i++)
        json_array_append_new(tools, jstr(rq->tools[i]->name));
    json_object_set_new(o, "tools", tools);
    set_kept(o, kept);
    emit(s, call, "llm.request", AOS_OK, o, cs);
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
    emit(s, call, "llm.request", AOS_OK, o, NULL);
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
    json_t *o = json_object(), *listed = json_array();
    srv_contents *cs = NULL;
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
                    if (!cs)
                        cs = srv_contents_new();
                    json_object_set_new(d, "blake2b", content(cs, listed, t.data, t.len));
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
    set_kept(o, listed);
    emit(s, call, "llm.reply", status, o, cs);
}
