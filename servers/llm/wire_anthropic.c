/* Anthropic's wire format: Messages request bodies from the neutral model (system hoisted,
 * roles alternating, tool results and the cache breakpoint placed) and replies decoded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WIRE_INTERNAL
#include "wire.h"

#define AN "anthropic"

/* ---- request bodies ------------------------------------------------------------------------ */

/* The turn being built: Anthropic wants user and assistant turns to alternate, so every
 * caller message of the same role (TOOL counts as user) lands in one turn. */
typedef struct {
    json_t *root, *msgs;
    json_t *sys;          /* the system blocks, made on the first one */
    const char *role;     /* of the open turn, NULL when none */
    json_t *results;      /* the open user turn's tool_result blocks: they must come first */
    json_t *blocks;       /* its other blocks */
    json_t *last;         /* the last message block made, borrowed */
    json_t *last_sys;     /* the last system block made, borrowed */
} an_enc;

static aos_err an_flush(an_enc *e, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    if (!e->role)
        return AOS_OK;
    json_t *m = json_object();
    WIRE_PUSH(e->msgs, m);
    WIRE_SET(m, "role", json_string(e->role));
    json_t *content = json_array();
    WIRE_SET(m, "content", content);
    if (json_array_extend(content, e->results) || json_array_extend(content, e->blocks))
        err = wire_nomem(why, whylen);
out:
    json_decref(e->results);
    json_decref(e->blocks);
    e->results = e->blocks = NULL;
    e->role = NULL;
    return err;
}

static const char *const an_media[] = {"image/jpeg", "image/png", "image/gif", "image/webp"};

/* data:<media type>;base64,<data> → a base64 source; anything else is a URL source. */
static aos_err an_source(const ProtobufCBinaryData *u, const char *where, json_t *src,
                         char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    const char *s = (const char *)u->data;
    if (u->len < 5 || strncasecmp(s, "data:", 5) != 0) {
        WIRE_SET(src, "type", json_string("url"));
        WIRE_SET(src, "url", wire_jstr(u, where, &err, why, whylen));
        goto out;
    }
    const char *comma = memchr(s, ',', u->len);
    const char *semi = memchr(s, ';', u->len);
    if (!comma || !semi || semi > comma || comma - semi != 7 ||
        strncasecmp(semi, ";base64", 7) != 0 || (size_t)(comma + 1 - s) >= u->len) {
        err = wire_usage(why, whylen, AN ": %s: a data: URL must be data:TYPE;base64,DATA",
                         where);
        goto out;
    }
    size_t mlen = (size_t)(semi - (s + 5));
    const char *media = NULL;
    for (size_t i = 0; i < sizeof an_media / sizeof *an_media; i++)
        if (mlen == strlen(an_media[i]) && strncasecmp(s + 5, an_media[i], mlen) == 0)
            media = an_media[i];
    if (!media) {
        err = wire_usage(why, whylen, AN ": %s: images must be JPEG, PNG, GIF or WebP", where);
        goto out;
    }
    WIRE_SET(src, "type", json_string("base64"));
    WIRE_SET(src, "media_type", json_string(media));
    WIRE_SET(src, "data", json_stringn(comma + 1, u->len - (size_t)(comma + 1 - s)));
out:
    return err;
}

/* Appends the block for part p (nothing for empty text) to arr; *made is it or NULL. */
static aos_err an_part(const Aos__Llm__ContentPart *p, const char *where, int images,
                       json_t *arr, json_t **made, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    *made = NULL;
    if (p->kind == AOS__LLM__PART_KIND__TEXT) {
        if (p->text.len) /* Anthropic refuses empty text blocks */
            *made = wire_text_block(&p->text, where, arr, &err, why, whylen);
    } else if (p->kind == AOS__LLM__PART_KIND__IMAGE_URL) {
        if ((err = wire_check_image(p, AN, where, images, "user messages and tool results",
                                    why, whylen)))
            goto out;
        json_t *o = json_object(), *src;
        WIRE_PUSH(arr, o);
        if (!(src = wire_typed(o, "image", "source", &err, why, whylen)) ||
            (err = an_source(&p->text, where, src, why, whylen)) != AOS_OK)
            goto out;
        *made = o;
    } else {
        err = wire_usage(why, whylen, AN ": %s: the part's kind is not set", where);
    }
out:
    return err;
}

static aos_err an_parts(const Aos__Llm__Message *m, size_t i, int images, json_t *arr,
                        json_t **last, char *why, size_t whylen)
{
    char where[96];
    for (size_t k = 0; k < m->n_content; k++) {
        json_t *made;
        snprintf(where, sizeof where, "messages[%zu].content[%zu]", i, k);
        aos_err err = an_part(m->content[k], where, images, arr, &made, why, whylen);
        if (err != AOS_OK)
            return err;
        if (made)
            *last = made;
    }
    return AOS_OK;
}

static aos_err an_tool_result(const Aos__Llm__Message *m, size_t i, json_t *res,
                              json_t **last, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    char where[96];
    snprintf(where, sizeof where, "messages[%zu].tool_call_id", i);
    if (m->tool_call_id.len == 0)
        return wire_usage(why, whylen, AN ": messages[%zu]: a tool result names no call", i);
    json_t *o = json_object();
    WIRE_PUSH(res, o);
    WIRE_SET(o, "type", json_string("tool_result"));
    WIRE_SET(o, "tool_use_id", wire_jstr(&m->tool_call_id, where, &err, why, whylen));
    json_t *content = json_array(), *inner = NULL;
    WIRE_SET(o, "content", content);
    if ((err = an_parts(m, i, 1, content, &inner, why, whylen)) != AOS_OK)
        goto out;
    json_t *first = json_array_get(content, 0);
    if (json_array_size(content) == 0) {
        json_object_del(o, "content");
    } else if (json_array_size(content) == 1 &&
               !strcmp(json_string_value(json_object_get(first, "type")), "text")) {
        WIRE_SET(o, "content", json_incref(json_object_get(first, "text")));
    }
    if (m->is_error)
        WIRE_SET(o, "is_error", json_true());
    *last = o;
out:
    return err;
}

static aos_err an_tool_uses(const Aos__Llm__Message *m, size_t i, json_t *arr, json_t **last,
                            char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    char where[96];
    for (size_t k = 0; k < m->n_tool_calls; k++) {
        const Aos__Llm__ToolCall *c = m->tool_calls[k];
        snprintf(where, sizeof where, "messages[%zu].tool_calls[%zu]", i, k);
        if ((err = wire_check_call(c, AN, where, why, whylen)) != AOS_OK)
            return err;
        json_t *o = json_object();
        WIRE_PUSH(arr, o);
        WIRE_SET(o, "type", json_string("tool_use"));
        WIRE_SET(o, "id", wire_jstr(&c->id, where, &err, why, whylen));
        WIRE_SET(o, "name", wire_jstr(&c->name, where, &err, why, whylen));
        WIRE_SET(o, "input", wire_jobj(&c->arguments, where, &err, why, whylen));
        *last = o;
    }
out:
    return err;
}

static aos_err an_system(an_enc *e, const Aos__Llm__Message *m, size_t i, char *why,
                         size_t whylen)
{
    aos_err err = AOS_OK;
    if (m->n_tool_calls)
        return wire_usage(why, whylen, AN ": messages[%zu]: a system message calls no tools",
                          i);
    if (!e->sys) {
        if (!(e->sys = json_array()))
            return wire_nomem(why, whylen);
        if (json_object_set_new(e->root, "system", e->sys)) {
            e->sys = NULL;
            return wire_nomem(why, whylen);
        }
    }
    err = an_parts(m, i, 0, e->sys, &e->last_sys, why, whylen);
    return err;
}

static aos_err an_message(an_enc *e, const Aos__Llm__Message *m, size_t i, char *why,
                          size_t whylen)
{
    aos_err err = AOS_OK;
    json_t *res = json_array(), *blk = json_array(), *last = NULL;
    if (!res || !blk) {
        err = wire_nomem(why, whylen);
        goto out;
    }
    const char *role;
    switch (m->role) {
    case AOS__LLM__ROLE__USER:
    case AOS__LLM__ROLE__TOOL:
        role = "user";
        if (m->n_tool_calls) {
            err = wire_usage(why, whylen, AN ": messages[%zu]: only assistant messages carry "
                             "tool calls", i);
            goto out;
        }
        if (m->role == AOS__LLM__ROLE__TOOL)
            err = an_tool_result(m, i, res, &last, why, whylen);
        else
            err = an_parts(m, i, 1, blk, &last, why, whylen);
        break;
    case AOS__LLM__ROLE__ASSISTANT:
        role = "assistant";
        if ((err = an_parts(m, i, 0, blk, &last, why, whylen)) == AOS_OK)
            err = an_tool_uses(m, i, blk, &last, why, whylen);
        break;
    default:
        err = wire_usage(why, whylen, AN ": messages[%zu]: the role is not set", i);
    }
    if (err != AOS_OK || !last)
        goto out; /* an empty message is dropped: its neighbours may merge */
    if (e->role && strcmp(e->role, role) != 0 && (err = an_flush(e, why, whylen)))
        goto out;
    if (!e->role) {
        e->role = role;
        if (!(e->results = json_array()) || !(e->blocks = json_array())) {
            err = wire_nomem(why, whylen);
            goto out;
        }
    }
    if (json_array_extend(e->results, res) || json_array_extend(e->blocks, blk)) {
        err = wire_nomem(why, whylen);
        goto out;
    }
    e->last = last;
out:
    json_decref(res);
    json_decref(blk);
    return err;
}

static aos_err an_tool(const Aos__Llm__Tool *t, const char *where, json_t *o, char *why,
                       size_t whylen)
{
    return wire_tool_fields(t, where, o, "input_schema", why, whylen);
}

static aos_err an_tools(const Aos__Llm__ChatRequest *r, json_t *root, char *why,
                        size_t whylen)
{
    /* the caller's word → Anthropic's tool_choice type; any other word names a tool */
    static const char *const types[][2] = {{"auto", "auto"}, {"none", "none"},
                                           {"required", "any"}};
    aos_err err = wire_tools(r, root, an_tool, why, whylen);
    const ProtobufCBinaryData *c = &r->tool_choice;
    if (err != AOS_OK || c->len == 0)
        goto out;
    json_t *tc = json_object();
    WIRE_SET(root, "tool_choice", tc);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (wire_bin_is(c, types[i][0])) {
            WIRE_SET(tc, "type", json_string(types[i][1]));
            goto out;
        }
    WIRE_SET(tc, "type", json_string("tool"));
    WIRE_SET(tc, "name", json_stringn((const char *)c->data, c->len));
out:
    return err;
}

aos_err wire_anthropic_chat_body(const Aos__Llm__ChatRequest *r, const char *model,
                                 int stream, char **out, size_t *len, char *why,
                                 size_t whylen)
{
    aos_err err = wire_check_chat(r, model, AN, 1, out, len, why, whylen);
    if (err != AOS_OK)
        return err;
    an_enc e = {0};
    if (!(e.root = json_object()))
        return wire_nomem(why, whylen);
    json_t *root = e.root, *mark = NULL;
    WIRE_SET(root, "model", json_string(model));
    WIRE_SET(root, "max_tokens",
            json_integer(r->max_tokens ? r->max_tokens : WIRE_ANTHROPIC_DEFAULT_MAX_TOKENS));
    /* the system blocks go here, before the messages, when there are any */
    if (!(e.msgs = json_array()))
        goto nomem;
    size_t k = r->cache_breakpoint < r->n_messages ? r->cache_breakpoint : r->n_messages;
    for (size_t i = 0; i < r->n_messages; i++) {
        const Aos__Llm__Message *m = r->messages[i];
        int sys = m->role == AOS__LLM__ROLE__SYSTEM;
        err = sys ? an_system(&e, m, i, why, whylen) : an_message(&e, m, i, why, whylen);
        if (err != AOS_OK)
            goto out;
        if (i + 1 == k) /* the end of the caller's stable prefix */
            mark = sys || !e.last ? e.last_sys : e.last;
    }
    if ((err = an_flush(&e, why, whylen)) != AOS_OK)
        goto out;
    if (json_array_size(e.msgs) == 0) {
        err = wire_usage(why, whylen, AN ": the request has no message with content besides "
                         "system ones");
        goto out;
    }
    json_t *msgs = e.msgs;
    e.msgs = NULL;
    WIRE_SET(root, "messages", msgs);
    if (mark) {
        json_t *cc = json_object();
        WIRE_SET(mark, "cache_control", cc);
        WIRE_SET(cc, "type", json_string("ephemeral"));
    }
    if (r->n_tools && (err = an_tools(r, root, why, whylen)) != AOS_OK)
        goto out;
    if (r->has_temperature)
        WIRE_SET(root, "temperature", json_real(wire_decimal(r->temperature)));
    if ((err = wire_str_array(r->stop, r->n_stop, "stop", root, "stop_sequences", why,
                              whylen)) != AOS_OK)
        goto out;
    if (stream)
        WIRE_SET(root, "stream", json_true());
    err = wire_dump(root, out, len, why, whylen);
    goto out;
nomem:
    err = wire_nomem(why, whylen);
out:
    json_decref(e.results);
    json_decref(e.blocks);
    json_decref(e.msgs);
    json_decref(root);
    return err;
}

/* ---- decoding ------------------------------------------------------------------------------ */

static Aos__Llm__StopReason an_stop(const char *s)
{
    if (!strcmp(s, "max_tokens"))
        return AOS__LLM__STOP_REASON__MAX_TOKENS;
    if (!strcmp(s, "tool_use"))
        return AOS__LLM__STOP_REASON__TOOL_USE;
    if (!strcmp(s, "stop_sequence"))
        return AOS__LLM__STOP_REASON__STOP_SEQUENCE;
    if (!strcmp(s, "refusal"))
        return AOS__LLM__STOP_REASON__CONTENT_FILTER;
    return AOS__LLM__STOP_REASON__END_TURN; /* end_turn, pause_turn and newer ones */
}

/* Usage counts are cumulative: a later event's count replaces an earlier one. */
static aos_err an_usage(wire_dec *d, json_t *o, const char *where)
{
    const wire_count counts[] = {{"input_tokens", &d->in},
                                 {"output_tokens", &d->out},
                                 {"cache_read_input_tokens", &d->cache_read},
                                 {"cache_creation_input_tokens", &d->cache_write}};
    wire_get_usage(d, o, where, counts, sizeof counts / sizeof *counts, NULL);
    return d->err;
}

static aos_err an_stop_reason(wire_dec *d, json_t *o, const char *where)
{
    const char *s;
    size_t n;
    int rc = wire_get_str(d, o, "stop_reason", where, &s, &n);
    if (rc > 0) {
        d->stop = an_stop(s);
        d->have_stop = 1;
    }
    return d->err;
}

/* An event about one content block: its index, and its sub-object key (noun says what that
 * is, for the message), both required. */
static aos_err an_block_event(wire_dec *d, json_t *o, const char *type, const char *key,
                              const char *noun, int64_t *idx, json_t **sub)
{
    uint64_t v;
    int rc = wire_get_uint(d, o, "index", type, &v);
    if (rc < 0)
        return d->err;
    if (rc == 0)
        return wire_fail(d, AOS_ERR_PROTO, AN ": %s without an index", type);
    *idx = (int64_t)v;
    *sub = NULL;
    if (wire_get_obj(d, o, key, type, sub) < 0)
        return d->err;
    if (!*sub)
        return wire_fail(d, AOS_ERR_PROTO, AN ": %s without %s", type, noun);
    return AOS_OK;
}

/* b's type into *type ("" when it has none). A text one (of type text_type) has its text
 * added to the reply, and so does its caller's work end: 1, the outcome in d->err; else 0,
 * also when the type is not a string (d->err says it). */
static int an_text(wire_dec *d, json_t *b, const char *where, const char *text_type,
                   const char **type)
{
    const char *s = "";
    size_t type_n = 0, n = 0;
    *type = "";
    if (wire_get_str(d, b, "type", where, type, &type_n) < 0)
        return 1;
    if (strcmp(*type, text_type) != 0)
        return 0;
    if (wire_get_str(d, b, "text", where, &s, &n) >= 0)
        wire_add_text(d, s, n);
    return 1;
}

static aos_err an_block_start(wire_dec *d, json_t *o)
{
    int64_t key = 0;
    json_t *b = NULL;
    const char *type, *id = "", *name = "";
    size_t id_n = 0, name_n = 0, ord;
    if (an_block_event(d, o, "content_block_start", "content_block", "a block", &key, &b) ||
        an_text(d, b, "content_block", "text", &type))
        return d->err;
    if (strcmp(type, "tool_use") != 0)
        return AOS_OK; /* thinking, server tools and newer kinds are not ours to run */
    if (wire_call_at(d, key, 0, &ord) == AOS_OK)
        return wire_fail(d, AOS_ERR_PROTO, AN ": content block %lld started twice",
                         (long long)key);
    if (wire_get_str(d, b, "id", "content_block", &id, &id_n) < 0 ||
        wire_get_str(d, b, "name", "content_block", &name, &name_n) < 0 ||
        wire_call_at(d, key, 1, &ord) != AOS_OK)
        return d->err;
    return wire_add_call(d, ord, id, id_n, name, name_n, "", 0);
}

static aos_err an_block_delta(wire_dec *d, json_t *o)
{
    int64_t key = 0;
    json_t *dl = NULL;
    const char *type, *s = "";
    size_t n = 0, ord;
    if (an_block_event(d, o, "content_block_delta", "delta", "a delta", &key, &dl) ||
        an_text(d, dl, "delta", "text_delta", &type))
        return d->err;
    if (strcmp(type, "input_json_delta") != 0)
        return AOS_OK; /* thinking, signatures, citations */
    if (wire_get_str(d, dl, "partial_json", "delta", &s, &n) < 0)
        return d->err;
    if (wire_call_at(d, key, 0, &ord) != AOS_OK)
        return wire_fail(d, AOS_ERR_PROTO, AN ": input_json_delta for content block %lld, "
                         "which is not a tool_use block", (long long)key);
    return wire_add_call(d, ord, "", 0, "", 0, s, n);
}

static aos_err an_object(wire_dec *d, json_t *o, const char *event)
{
    const char *type = NULL;
    size_t type_n;
    json_t *sub = NULL;
    if (wire_get_str(d, o, "type", "event", &type, &type_n) < 0)
        return d->err;
    if (!type)
        type = event;
    if (!strcmp(type, "error"))
        return wire_provider_error(d, json_object_get(o, "error"));
    if (!strcmp(type, "message_start")) {
        if (wire_get_obj(d, o, "message", "message_start", &sub) < 0)
            return d->err;
        return sub ? an_usage(d, sub, "message") : AOS_OK;
    }
    if (!strcmp(type, "content_block_start"))
        return an_block_start(d, o);
    if (!strcmp(type, "content_block_delta"))
        return an_block_delta(d, o);
    if (!strcmp(type, "message_delta")) {
        if (wire_get_obj(d, o, "delta", "message_delta", &sub) < 0 ||
            (sub && an_stop_reason(d, sub, "delta") != AOS_OK))
            return d->err;
        return an_usage(d, o, "message_delta");
    }
    if (!strcmp(type, "message_stop"))
        d->done = 1;
    return AOS_OK; /* ping, content_block_stop and event types added since */
}

aos_err wire_anthropic_event(wire_dec *d, const char *event, const char *data, size_t len)
{
    if (len == 0)
        return AOS_OK;
    json_t *o = wire_parse(d, data, len, "a stream event");
    if (!o)
        return d->err;
    an_object(d, o, event);
    json_decref(o);
    return d->err;
}

static aos_err an_body_block(wire_dec *d, json_t *b, size_t i)
{
    const char *type, *id = "", *name = "";
    size_t id_n = 0, name_n = 0, ord;
    json_t *input = NULL;
    if (!json_is_object(b))
        return wire_fail(d, AOS_ERR_PROTO, AN ": content[%zu] is not an object", i);
    if (an_text(d, b, "content[]", "text", &type))
        return d->err;
    if (strcmp(type, "tool_use") != 0)
        return AOS_OK;
    if (wire_get_str(d, b, "id", "content[]", &id, &id_n) < 0 ||
        wire_get_str(d, b, "name", "content[]", &name, &name_n) < 0 ||
        wire_get_obj(d, b, "input", "content[]", &input) < 0 ||
        wire_call_at(d, (int64_t)i, 1, &ord) != AOS_OK)
        return d->err;
    char *args = input ? json_dumps(input, JSON_COMPACT) : NULL;
    if (input && !args)
        return wire_fail(d, AOS_ERR_NOMEM, AN ": out of memory for the reply");
    wire_add_call(d, ord, id, id_n, name, name_n, args ? args : "", args ? strlen(args) : 0);
    free(args);
    return d->err;
}

aos_err wire_anthropic_body(wire_dec *d, json_t *body)
{
    const char *type = NULL;
    size_t type_n;
    json_t *content = NULL;
    if (wire_get_str(d, body, "type", "body", &type, &type_n) < 0)
        return d->err;
    if ((type && !strcmp(type, "error")) || (!type && json_object_get(body, "error")))
        return wire_provider_error(d, json_object_get(body, "error"));
    if (wire_get_arr(d, body, "content", "body", &content) < 0)
        return d->err;
    if (!content)
        return wire_fail(d, AOS_ERR_PROTO, AN ": the response has no content");
    for (size_t i = 0; i < json_array_size(content); i++)
        if (an_body_block(d, json_array_get(content, i), i) != AOS_OK)
            return d->err;
    if (an_stop_reason(d, body, "body") != AOS_OK)
        return d->err;
    return an_usage(d, body, "body");
}
