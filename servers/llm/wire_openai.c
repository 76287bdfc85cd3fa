/* OpenAI's wire format: Chat Completions and embeddings request bodies from the neutral
 * model, and the chat.completion(.chunk) and embeddings answers decoded back into it. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIRE_INTERNAL
#include "aos/envelope.h"
#include "wire.h"

#define OA "openai"

/* ---- request bodies ------------------------------------------------------------------------ */

static const char *oa_role(Aos__Llm__Role r)
{
    switch (r) {
    case AOS__LLM__ROLE__SYSTEM:
        return "system";
    case AOS__LLM__ROLE__USER:
        return "user";
    case AOS__LLM__ROLE__ASSISTANT:
        return "assistant";
    case AOS__LLM__ROLE__TOOL:
        return "tool";
    default:
        return NULL;
    }
}

static aos_err oa_part(const Aos__Llm__ContentPart *p, const char *where, int images,
                       json_t *arr, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    if (p->kind == AOS__LLM__PART_KIND__TEXT) {
        wire_text_block(&p->text, where, arr, &err, why, whylen);
    } else if (p->kind == AOS__LLM__PART_KIND__IMAGE_URL) {
        if ((err = wire_check_image(p, OA, where, images, "user messages", why, whylen)))
            goto out;
        json_t *o = json_object(), *img;
        WIRE_PUSH(arr, o);
        if ((img = wire_typed(o, "image_url", "image_url", &err, why, whylen)))
            WIRE_SET(img, "url", wire_jstr(&p->text, where, &err, why, whylen));
    } else {
        err = wire_usage(why, whylen, OA ": %s: the part's kind is not set", where);
    }
out:
    return err;
}

static aos_err oa_calls(const Aos__Llm__Message *m, size_t i, json_t *msg, char *why,
                        size_t whylen)
{
    aos_err err = AOS_OK;
    char where[96];
    json_t *calls = json_array();
    WIRE_SET(msg, "tool_calls", calls);
    for (size_t k = 0; k < m->n_tool_calls; k++) {
        const Aos__Llm__ToolCall *c = m->tool_calls[k];
        snprintf(where, sizeof where, "messages[%zu].tool_calls[%zu]", i, k);
        if ((err = wire_check_call(c, OA, where, why, whylen)) != AOS_OK)
            goto out;
        json_t *args = wire_jobj(&c->arguments, where, &err, why, whylen);
        if (!args)
            goto out;
        json_decref(args); /* only checked: the caller's text is sent as it is */
        json_t *o = json_object();
        WIRE_PUSH(calls, o);
        WIRE_SET(o, "id", wire_jstr(&c->id, where, &err, why, whylen));
        json_t *fn = wire_typed(o, "function", "function", &err, why, whylen);
        if (!fn)
            goto out;
        WIRE_SET(fn, "name", wire_jstr(&c->name, where, &err, why, whylen));
        if (c->arguments.len)
            WIRE_SET(fn, "arguments", wire_jstr(&c->arguments, where, &err, why, whylen));
        else
            WIRE_SET(fn, "arguments", json_string("{}"));
    }
out:
    return err;
}

static aos_err oa_message(const Aos__Llm__Message *m, size_t i, json_t *msgs, char *why,
                          size_t whylen)
{
    aos_err err = AOS_OK;
    char where[96];
    const char *role = oa_role(m->role);
    if (!role)
        return wire_usage(why, whylen, OA ": messages[%zu]: the role is not set", i);
    int assistant = m->role == AOS__LLM__ROLE__ASSISTANT;
    if (m->n_tool_calls && !assistant)
        return wire_usage(why, whylen, OA ": messages[%zu]: only assistant messages carry "
                          "tool calls", i);
    json_t *o = json_object();
    WIRE_PUSH(msgs, o);
    WIRE_SET(o, "role", json_string(role));
    if (m->n_content == 1 && m->content[0]->kind == AOS__LLM__PART_KIND__TEXT) {
        snprintf(where, sizeof where, "messages[%zu].content[0]", i);
        WIRE_SET(o, "content", wire_jstr(&m->content[0]->text, where, &err, why, whylen));
    } else if (m->n_content == 0) {
        /* an assistant turn that only calls tools has no content; others need a string */
        WIRE_SET(o, "content", assistant && m->n_tool_calls ? json_null() : json_string(""));
    } else {
        json_t *parts = json_array();
        WIRE_SET(o, "content", parts);
        for (size_t k = 0; k < m->n_content; k++) {
            snprintf(where, sizeof where, "messages[%zu].content[%zu]", i, k);
            err = oa_part(m->content[k], where, m->role == AOS__LLM__ROLE__USER, parts, why,
                          whylen);
            if (err != AOS_OK)
                goto out;
        }
    }
    if (m->n_tool_calls && (err = oa_calls(m, i, o, why, whylen)) != AOS_OK)
        goto out;
    if (m->role == AOS__LLM__ROLE__TOOL) {
        snprintf(where, sizeof where, "messages[%zu].tool_call_id", i);
        if (m->tool_call_id.len == 0) {
            err = wire_usage(why, whylen, OA ": messages[%zu]: a tool result names no call",
                             i);
            goto out;
        }
        WIRE_SET(o, "tool_call_id", wire_jstr(&m->tool_call_id, where, &err, why, whylen));
    }
out:
    return err;
}

/* {"type":"function","function":{name, description, parameters}} */
static aos_err oa_tool(const Aos__Llm__Tool *t, const char *where, json_t *o, char *why,
                       size_t whylen)
{
    aos_err err = AOS_OK;
    json_t *fn = wire_typed(o, "function", "function", &err, why, whylen);
    return fn ? wire_tool_fields(t, where, fn, "parameters", why, whylen) : err;
}

static aos_err oa_tools(const Aos__Llm__ChatRequest *r, json_t *root, char *why,
                        size_t whylen)
{
    aos_err err = wire_tools(r, root, oa_tool, why, whylen);
    const ProtobufCBinaryData *c = &r->tool_choice;
    if (err != AOS_OK || c->len == 0)
        goto out;
    if (wire_bin_is(c, "auto") || wire_bin_is(c, "none") || wire_bin_is(c, "required")) {
        WIRE_SET(root, "tool_choice", json_stringn((const char *)c->data, c->len));
    } else {
        json_t *o = json_object();
        WIRE_SET(root, "tool_choice", o);
        json_t *fn = wire_typed(o, "function", "function", &err, why, whylen);
        if (!fn)
            goto out;
        WIRE_SET(fn, "name", json_stringn((const char *)c->data, c->len));
    }
out:
    return err;
}

aos_err wire_openai_chat_body(const Aos__Llm__ChatRequest *r, const char *model, int stream,
                              char **out, size_t *len, char *why, size_t whylen)
{
    aos_err err = wire_check_chat(r, model, OA, 2, out, len, why, whylen);
    if (err != AOS_OK)
        return err;
    json_t *root = json_object();
    if (!root)
        return wire_nomem(why, whylen);
    WIRE_SET(root, "model", json_string(model));
    json_t *msgs = json_array();
    WIRE_SET(root, "messages", msgs);
    for (size_t i = 0; i < r->n_messages; i++)
        if ((err = oa_message(r->messages[i], i, msgs, why, whylen)) != AOS_OK)
            goto out;
    if (r->n_tools && (err = oa_tools(r, root, why, whylen)) != AOS_OK)
        goto out;
    if (r->max_tokens > 0)
        WIRE_SET(root, "max_tokens", json_integer(r->max_tokens));
    if (r->has_temperature)
        WIRE_SET(root, "temperature", json_real(wire_decimal(r->temperature)));
    if ((err = wire_str_array(r->stop, r->n_stop, "stop", root, "stop", why, whylen)))
        goto out;
    if (stream) {
        WIRE_SET(root, "stream", json_true());
        json_t *so = json_object();
        WIRE_SET(root, "stream_options", so);
        WIRE_SET(so, "include_usage", json_true());
    }
    err = wire_dump(root, out, len, why, whylen);
out:
    json_decref(root);
    return err;
}

aos_err wire_openai_embed_body(const Aos__Llm__EmbedRequest *r, const char *model,
                               char **out, size_t *len, char *why, size_t whylen)
{
    aos_err err = wire_body_start(r != NULL, model, OA, out, len, why, whylen);
    if (err != AOS_OK)
        return err;
    if (r->n_inputs == 0 || r->n_inputs > WIRE_EMBED_MAX_INPUTS)
        return wire_usage(why, whylen, OA ": %zu inputs to embed, 1..%u are taken",
                          r->n_inputs, WIRE_EMBED_MAX_INPUTS);
    json_t *root = json_object();
    if (!root)
        return wire_nomem(why, whylen);
    WIRE_SET(root, "model", json_string(model));
    if ((err = wire_str_array(r->inputs, r->n_inputs, "inputs", root, "input", why, whylen)))
        goto out;
    WIRE_SET(root, "encoding_format", json_string("float"));
    err = wire_dump(root, out, len, why, whylen);
out:
    json_decref(root);
    return err;
}

/* ---- decoding ------------------------------------------------------------------------------ */

static Aos__Llm__StopReason oa_finish(const char *s)
{
    if (!strcmp(s, "length"))
        return AOS__LLM__STOP_REASON__MAX_TOKENS;
    if (!strcmp(s, "tool_calls") || !strcmp(s, "function_call"))
        return AOS__LLM__STOP_REASON__TOOL_USE;
    if (!strcmp(s, "content_filter"))
        return AOS__LLM__STOP_REASON__CONTENT_FILTER;
    return AOS__LLM__STOP_REASON__END_TURN; /* "stop", and what compatible servers invent */
}

static aos_err oa_usage(wire_dec *d, json_t *o)
{
    json_t *u, *det;
    uint64_t p = 0, c = 0, cached = 0;
    const wire_count counts[] = {{"prompt_tokens", &p}, {"completion_tokens", &c}};
    int rc = wire_get_usage(d, o, "chunk", counts, 2, &u);
    if (rc <= 0)
        return d->err;
    if ((rc = wire_get_obj(d, u, "prompt_tokens_details", "usage", &det)) < 0 ||
        (rc > 0 && wire_get_uint(d, det, "cached_tokens", "usage.prompt_tokens_details",
                                 &cached) < 0))
        return d->err;
    d->cache_read = cached;
    d->in = p > cached ? p - cached : 0;
    d->out = c;
    return AOS_OK;
}

static aos_err oa_tool_calls(wire_dec *d, json_t *arr)
{
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *tc = json_array_get(arr, i), *fn = NULL;
        if (!json_is_object(tc))
            return wire_fail(d, AOS_ERR_PROTO, OA ": tool_calls[%zu] is not an object", i);
        /* a whole message's calls have no index: their position is theirs */
        uint64_t idx = i;
        const char *id = "", *name = "", *args = "";
        size_t id_n = 0, name_n = 0, args_n = 0;
        if ((d->stream && wire_get_uint(d, tc, "index", "tool_calls[]", &idx) < 0) ||
            wire_get_str(d, tc, "id", "tool_calls[]", &id, &id_n) < 0 ||
            wire_get_obj(d, tc, "function", "tool_calls[]", &fn) < 0 ||
            (fn && (wire_get_str(d, fn, "name", "function", &name, &name_n) < 0 ||
                    wire_get_str(d, fn, "arguments", "function", &args, &args_n) < 0)))
            return d->err;
        size_t ord;
        if (wire_call_at(d, (int64_t)idx, 1, &ord) != AOS_OK ||
            wire_add_call(d, ord, id, id_n, name, name_n, args, args_n) != AOS_OK)
            return d->err;
    }
    return AOS_OK;
}

static aos_err oa_choice(wire_dec *d, json_t *ch)
{
    json_t *m = NULL, *calls = NULL;
    const char *s, *fin;
    size_t n, fin_n;
    int rc = wire_get_obj(d, ch, d->stream ? "delta" : "message", "choices[0]", &m);
    if (rc < 0)
        return d->err;
    if (m) {
        /* a refusal is the model's answer, in place of content */
        static const char *const texts[] = {"content", "refusal"};
        for (size_t i = 0; i < 2; i++) {
            if ((rc = wire_get_str(d, m, texts[i], "delta", &s, &n)) < 0)
                return d->err;
            if (rc > 0 && wire_add_text(d, s, n) != AOS_OK)
                return d->err;
        }
        if ((rc = wire_get_arr(d, m, "tool_calls", "delta", &calls)) < 0)
            return d->err;
        if (calls && oa_tool_calls(d, calls) != AOS_OK)
            return d->err;
    }
    if ((rc = wire_get_str(d, ch, "finish_reason", "choices[0]", &fin, &fin_n)) < 0)
        return d->err;
    if (rc > 0) {
        d->stop = oa_finish(fin);
        d->have_stop = 1;
    }
    return AOS_OK;
}

static aos_err oa_object(wire_dec *d, json_t *o)
{
    json_t *e = json_object_get(o, "error"), *choices = NULL;
    if (e && !json_is_null(e))
        return wire_provider_error(d, e);
    if (wire_get_arr(d, o, "choices", d->stream ? "chunk" : "body", &choices) < 0)
        return d->err;
    int seen = 0;
    for (size_t i = 0; choices && i < json_array_size(choices) && !seen; i++) {
        json_t *ch = json_array_get(choices, i);
        uint64_t ci = 0;
        if (!json_is_object(ch))
            return wire_fail(d, AOS_ERR_PROTO, OA ": choices[%zu] is not an object", i);
        if (wire_get_uint(d, ch, "index", "choices[]", &ci) < 0)
            return d->err;
        if (ci != 0)
            continue; /* we ask for one choice; others are not ours */
        seen = 1;
        if (oa_choice(d, ch) != AOS_OK)
            return d->err;
    }
    if (!seen && !d->stream)
        return wire_fail(d, AOS_ERR_PROTO, OA ": the response has no choice");
    return oa_usage(d, o);
}

aos_err wire_openai_event(wire_dec *d, const char *event, const char *data, size_t len)
{
    (void)event; /* OpenAI names no events; the data says it all */
    if (len == 0)
        return AOS_OK;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        d->done = 1;
        return AOS_OK;
    }
    json_t *o = wire_parse(d, data, len, "a stream event");
    if (!o)
        return d->err;
    oa_object(d, o);
    json_decref(o);
    return d->err;
}

aos_err wire_openai_body(wire_dec *d, json_t *body)
{
    return oa_object(d, body);
}

/* ---- embeddings --------------------------------------------------------------------------- */

static void vecs_free(Aos__Llm__Embedding **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        if (v[i])
            aos__llm__embedding__free_unpacked(v[i], NULL);
    free(v);
}

static aos_err oa_vectors(wire_dec *d, json_t *data, Aos__Llm__Embedding **vec, size_t n,
                          size_t *dim)
{
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(data, i), *emb = NULL;
        uint64_t idx = i;
        if (!json_is_object(it))
            return wire_fail(d, AOS_ERR_PROTO, OA ": data[%zu] is not an object", i);
        if (wire_get_uint(d, it, "index", "data[]", &idx) < 0 ||
            wire_get_arr(d, it, "embedding", "data[]", &emb) < 0)
            return d->err;
        if (!emb)
            return wire_fail(d, AOS_ERR_PROTO, OA ": data[%zu] has no embedding array", i);
        if (idx >= n || vec[idx])
            return wire_fail(d, AOS_ERR_PROTO, OA ": data[%zu] has the index %llu, out of "
                             "range or seen before", i, (unsigned long long)idx);
        size_t m = json_array_size(emb);
        if (i == 0)
            *dim = m;
        if (m == 0 || m != *dim || m > UINT32_MAX)
            return wire_fail(d, AOS_ERR_PROTO, OA ": data[%zu] has %zu dimensions, not %zu",
                             i, m, *dim);
        Aos__Llm__Embedding *v = malloc(sizeof *v);
        if (!v)
            return wire_fail(d, AOS_ERR_NOMEM, OA ": out of memory for the embeddings");
        aos__llm__embedding__init(v);
        vec[idx] = v;
        if (!(v->values = malloc(m * sizeof *v->values)))
            return wire_fail(d, AOS_ERR_NOMEM, OA ": out of memory for the embeddings");
        v->n_values = m;
        for (size_t k = 0; k < m; k++) {
            json_t *x = json_array_get(emb, k);
            double f = json_number_value(x);
            if (!json_is_number(x) || !(fabs(f) <= FLT_MAX))
                return wire_fail(d, AOS_ERR_PROTO, OA ": data[%zu].embedding[%zu] is not a "
                                 "float", i, k);
            v->values[k] = (float)f;
        }
    }
    return AOS_OK;
}

aos_err wire_openai_embed_decode(const char *body, size_t len, Aos__Llm__EmbedReply **out,
                                 char *why, size_t whylen)
{
    if (!out || (!body && len))
        return wire_usage(why, whylen, OA ": no body or output");
    *out = NULL;
    wire_dec d;
    memset(&d, 0, sizeof d);
    d.kind = WIRE_OPENAI;
    json_t *j = NULL, *data = NULL, *e;
    Aos__Llm__Embedding **vec = NULL;
    Aos__Llm__EmbedReply *r = NULL;
    size_t n = 0, dim = 0;
    uint64_t prompt = 0;
    if (len == 0) {
        wire_fail(&d, AOS_ERR_PROTO, OA ": the embeddings body is empty");
        goto out;
    }
    if (!(j = wire_parse(&d, body, len, "the embeddings body")))
        goto out;
    if ((e = json_object_get(j, "error")) && !json_is_null(e)) {
        wire_provider_error(&d, e);
        goto out;
    }
    const wire_count counts[] = {{"prompt_tokens", &prompt}};
    if (wire_get_arr(&d, j, "data", "body", &data) < 0 ||
        wire_get_usage(&d, j, "body", counts, 1, NULL) < 0)
        goto out;
    if (!data || (n = json_array_size(data)) == 0) {
        wire_fail(&d, AOS_ERR_PROTO, OA ": the embeddings body has no data");
        goto out;
    }
    if (!(vec = calloc(n, sizeof *vec)) || !(r = malloc(sizeof *r))) {
        wire_fail(&d, AOS_ERR_NOMEM, OA ": out of memory for the embeddings");
        goto out;
    }
    aos__llm__embed_reply__init(r);
    if (oa_vectors(&d, data, vec, n, &dim) != AOS_OK)
        goto out;
    if (!(r->usage = malloc(sizeof *r->usage))) {
        wire_fail(&d, AOS_ERR_NOMEM, OA ": out of memory for the embeddings");
        goto out;
    }
    aos__llm__usage__init(r->usage);
    r->usage->input_tokens = prompt;
    r->vectors = vec;
    r->n_vectors = n;
    r->dim = (uint32_t)dim;
    vec = NULL;
    *out = r;
    r = NULL;
out:
    vecs_free(vec, n);
    wire_embed_free(r);
    json_decref(j);
    if (d.err != AOS_OK)
        wire_clean(d.why, strlen(d.why), why, whylen);
    return d.err;
}
