/* The front door's JSON, both directions, for the OpenAI and Anthropic APIs as their own
 * clients speak them (jansson), and the one table that turns an aos_err into each one's error. */
#include "front.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aos/envelope.h"

/* ---- small things ----------------------------------------------------------------------- */

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

/* A copy of n bytes as a protobuf bytes field; 0 when out of memory. */
static int set_bin(ProtobufCBinaryData *b, const char *s, size_t n)
{
    b->data = malloc(n ? n : 1);
    if (!b->data)
        return 0;
    if (n)
        memcpy(b->data, s, n);
    b->len = n;
    return 1;
}

static int set_str(ProtobufCBinaryData *b, json_t *v)
{
    return set_bin(b, json_string_value(v), json_string_length(v));
}

/* jansson checks UTF-8 on load and rejects NUL in keys; strings may hold NUL (\u0000), which
 * no model field wants. */
static int clean_str(json_t *v)
{
    return json_is_string(v) && !memchr(json_string_value(v), 0, json_string_length(v));
}

static json_t *load(const char *body, size_t len, char *why, size_t whylen)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        bad(why, whylen, "the body is not JSON (or not UTF-8): %s at line %d column %d",
            je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        bad(why, whylen, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

static Aos__Llm__Message *msg_new(Aos__Llm__ChatRequest *r, Aos__Llm__Role role)
{
    if (r->n_messages >= FRONT_MESSAGES_MAX)
        return NULL;
    Aos__Llm__Message **m = realloc(r->messages, (r->n_messages + 1) * sizeof *m);
    if (!m)
        return NULL;
    r->messages = m;
    Aos__Llm__Message *x = malloc(sizeof *x);
    if (!x)
        return NULL;
    aos__llm__message__init(x);
    x->role = role;
    m[r->n_messages++] = x;
    return x;
}

static int part_add(Aos__Llm__Message *m, Aos__Llm__PartKind kind, json_t *text)
{
    if (m->n_content >= FRONT_PARTS_MAX)
        return 0;
    Aos__Llm__ContentPart **p = realloc(m->content, (m->n_content + 1) * sizeof *p);
    if (!p)
        return 0;
    m->content = p;
    Aos__Llm__ContentPart *x = malloc(sizeof *x);
    if (!x)
        return 0;
    aos__llm__content_part__init(x);
    x->kind = kind;
    p[m->n_content++] = x;
    return set_str(&x->text, text);
}

/* A tool call with arguments as JSON text (OpenAI sends text, Anthropic an object). */
static int call_add(Aos__Llm__Message *m, json_t *id, json_t *name, const char *args,
                    size_t alen)
{
    if (m->n_tool_calls >= FRONT_CALLS_MAX)
        return 0;
    Aos__Llm__ToolCall **p = realloc(m->tool_calls, (m->n_tool_calls + 1) * sizeof *p);
    if (!p)
        return 0;
    m->tool_calls = p;
    Aos__Llm__ToolCall *x = malloc(sizeof *x);
    if (!x)
        return 0;
    aos__llm__tool_call__init(x);
    p[m->n_tool_calls++] = x;
    return set_str(&x->id, id) && set_str(&x->name, name) && set_bin(&x->arguments, args, alen);
}

static int tool_add(Aos__Llm__ChatRequest *r, json_t *name, json_t *desc, json_t *schema)
{
    if (r->n_tools >= FRONT_TOOLS_MAX)
        return 0;
    Aos__Llm__Tool **p = realloc(r->tools, (r->n_tools + 1) * sizeof *p);
    if (!p)
        return 0;
    r->tools = p;
    Aos__Llm__Tool *x = malloc(sizeof *x);
    if (!x)
        return 0;
    aos__llm__tool__init(x);
    p[r->n_tools++] = x;
    char *s = schema ? json_dumps(schema, JSON_COMPACT) : NULL;
    int ok = set_str(&x->name, name) &&
             (desc ? set_str(&x->description, desc) : set_bin(&x->description, "", 0)) &&
             set_bin(&x->input_schema, s ? s : "", s ? strlen(s) : 0);
    free(s);
    return ok;
}

static int stop_add(Aos__Llm__ChatRequest *r, json_t *v)
{
    if (r->n_stop >= FRONT_STOPS_MAX)
        return 0;
    ProtobufCBinaryData *p = realloc(r->stop, (r->n_stop + 1) * sizeof *p);
    if (!p)
        return 0;
    r->stop = p;
    if (!set_str(&p[r->n_stop], v))
        return 0;
    r->n_stop++;
    return 1;
}

static Aos__Llm__ChatRequest *chat_new(void)
{
    Aos__Llm__ChatRequest *r = malloc(sizeof *r);
    if (r)
        aos__llm__chat_request__init(r);
    return r;
}

static aos_err nomem(char *why, size_t whylen)
{
    snprintf(why, whylen, "aos-api is out of memory (or the request passes a cap)");
    return AOS_ERR_USAGE;
}

/* Common fields: model, max_tokens, temperature (range per API), stream. */
static aos_err common(json_t *o, Aos__Llm__ChatRequest *r, int *stream, double tmax,
                      const char *maxkey, int need_max, char *why, size_t whylen)
{
    json_t *model = json_object_get(o, "model");
    if (!clean_str(model) || !json_string_length(model) ||
        json_string_length(model) > FRONT_NAME_MAX)
        return bad(why, whylen, "model: a string of 1..%u bytes is required", FRONT_NAME_MAX);
    if (!set_str(&r->model, model))
        return nomem(why, whylen);
    json_t *mt = json_object_get(o, maxkey);
    if (!mt && !strcmp(maxkey, "max_tokens"))
        mt = json_object_get(o, "max_completion_tokens");
    if (mt && !json_is_null(mt)) {
        if (!json_is_integer(mt) || json_integer_value(mt) < 1 ||
            json_integer_value(mt) > 10000000)
            return bad(why, whylen, "%s: an integer from 1 to 10000000", maxkey);
        r->max_tokens = (uint32_t)json_integer_value(mt);
    } else if (need_max) {
        return bad(why, whylen, "max_tokens: required");
    }
    json_t *t = json_object_get(o, "temperature");
    if (t && !json_is_null(t)) {
        double d = json_number_value(t);
        if (!json_is_number(t) || !(d >= 0 && d <= tmax))
            return bad(why, whylen, "temperature: a number from 0 to %g", tmax);
        r->temperature = (float)d;
        r->has_temperature = 1;
    }
    json_t *s = json_object_get(o, "stream");
    if (s && !json_is_null(s) && !json_is_boolean(s))
        return bad(why, whylen, "stream: a boolean");
    *stream = json_is_true(s);
    return AOS_OK;
}

/* ---- OpenAI: POST /v1/chat/completions ------------------------------------------------- */

static aos_err oai_content(json_t *c, Aos__Llm__Message *m, size_t i, char *why,
                           size_t whylen)
{
    if (!c || json_is_null(c))
        return AOS_OK;
    if (clean_str(c))
        return part_add(m, AOS__LLM__PART_KIND__TEXT, c) ? AOS_OK : nomem(why, whylen);
    if (!json_is_array(c))
        return bad(why, whylen, "messages[%zu].content: a string, an array of parts or null",
                   i);
    size_t j;
    json_t *p;
    json_array_foreach(c, j, p) {
        const char *type = json_string_value(json_object_get(p, "type"));
        if (type && !strcmp(type, "text") && clean_str(json_object_get(p, "text"))) {
            if (!part_add(m, AOS__LLM__PART_KIND__TEXT, json_object_get(p, "text")))
                return nomem(why, whylen);
        } else if (type && !strcmp(type, "image_url") &&
                   clean_str(json_object_get(json_object_get(p, "image_url"), "url"))) {
            if (!part_add(m, AOS__LLM__PART_KIND__IMAGE_URL,
                          json_object_get(json_object_get(p, "image_url"), "url")))
                return nomem(why, whylen);
        } else {
            return bad(why, whylen, "messages[%zu].content[%zu]: a text or image_url part",
                       i, j);
        }
    }
    return AOS_OK;
}

aos_err front_openai_chat(const char *body, size_t len, Aos__Llm__ChatRequest **out,
                          int *stream, int *usage_in_stream, char *why, size_t whylen)
{
    *out = NULL;
    *stream = *usage_in_stream = 0;
    json_t *o = load(body, len, why, whylen);
    if (!o)
        return AOS_ERR_USAGE;
    Aos__Llm__ChatRequest *r = chat_new();
    aos_err rc = r ? common(o, r, stream, 2.0, "max_tokens", 0, why, whylen)
                   : nomem(why, whylen);
    if (rc)
        goto out;
    json_t *so = json_object_get(o, "stream_options");
    *usage_in_stream = json_is_true(json_object_get(so, "include_usage"));
    json_t *msgs = json_object_get(o, "messages");
    if (!json_is_array(msgs) || !json_array_size(msgs)) {
        rc = bad(why, whylen, "messages: a non-empty array is required");
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(msgs, i, v) {
        const char *role = json_string_value(json_object_get(v, "role"));
        Aos__Llm__Role ro = !role                         ? 0
                            : !strcmp(role, "system")     ? AOS__LLM__ROLE__SYSTEM
                            : !strcmp(role, "developer")  ? AOS__LLM__ROLE__SYSTEM
                            : !strcmp(role, "user")       ? AOS__LLM__ROLE__USER
                            : !strcmp(role, "assistant")  ? AOS__LLM__ROLE__ASSISTANT
                            : !strcmp(role, "tool")       ? AOS__LLM__ROLE__TOOL
                                                          : 0;
        if (!ro) {
            rc = bad(why, whylen, "messages[%zu].role: system, developer, user, assistant "
                     "or tool", i);
            goto out;
        }
        Aos__Llm__Message *m = msg_new(r, ro);
        if (!m) {
            rc = nomem(why, whylen);
            goto out;
        }
        if ((rc = oai_content(json_object_get(v, "content"), m, i, why, whylen)))
            goto out;
        if (ro == AOS__LLM__ROLE__TOOL) {
            json_t *id = json_object_get(v, "tool_call_id");
            if (!clean_str(id) || !json_string_length(id)) {
                rc = bad(why, whylen, "messages[%zu].tool_call_id: required for a tool "
                         "message", i);
                goto out;
            }
            if (!set_str(&m->tool_call_id, id)) {
                rc = nomem(why, whylen);
                goto out;
            }
        }
        json_t *calls = json_object_get(v, "tool_calls");
        size_t j;
        json_t *c;
        if (calls && !json_is_null(calls) &&
            (ro != AOS__LLM__ROLE__ASSISTANT || !json_is_array(calls))) {
            rc = bad(why, whylen, "messages[%zu].tool_calls: an array, on an assistant "
                     "message only", i);
            goto out;
        }
        json_array_foreach(calls, j, c) {
            json_t *f = json_object_get(c, "function");
            json_t *id = json_object_get(c, "id"), *name = json_object_get(f, "name");
            json_t *args = json_object_get(f, "arguments");
            if (!clean_str(id) || !clean_str(name) || !clean_str(args)) {
                rc = bad(why, whylen, "messages[%zu].tool_calls[%zu]: id, function.name and "
                         "function.arguments (a JSON text) are required", i, j);
                goto out;
            }
            if (!call_add(m, id, name, json_string_value(args), json_string_length(args))) {
                rc = nomem(why, whylen);
                goto out;
            }
        }
    }
    json_t *tools = json_object_get(o, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        rc = bad(why, whylen, "tools: an array");
        goto out;
    }
    json_array_foreach(tools, i, v) {
        json_t *f = json_object_get(v, "function");
        json_t *name = json_object_get(f, "name"), *desc = json_object_get(f, "description");
        json_t *params = json_object_get(f, "parameters");
        if (!clean_str(name) || (desc && !json_is_null(desc) && !clean_str(desc)) ||
            (params && !json_is_object(params))) {
            rc = bad(why, whylen, "tools[%zu]: function.name (a string), description (a "
                     "string) and parameters (a JSON Schema object)", i);
            goto out;
        }
        if (!tool_add(r, name, clean_str(desc) ? desc : NULL, params)) {
            rc = nomem(why, whylen);
            goto out;
        }
    }
    json_t *tc = json_object_get(o, "tool_choice");
    if (tc && !json_is_null(tc)) {
        json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (clean_str(tc) && (!strcmp(json_string_value(tc), "auto") ||
                              !strcmp(json_string_value(tc), "none") ||
                              !strcmp(json_string_value(tc), "required"))) {
            if (!set_str(&r->tool_choice, tc))
                rc = nomem(why, whylen);
        } else if (clean_str(name)) {
            if (!set_str(&r->tool_choice, name))
                rc = nomem(why, whylen);
        } else {
            rc = bad(why, whylen, "tool_choice: auto, none, required or {\"type\":\"function\","
                     "\"function\":{\"name\":...}}");
        }
        if (rc)
            goto out;
    }
    json_t *stop = json_object_get(o, "stop");
    if (clean_str(stop)) {
        if (!stop_add(r, stop))
            rc = nomem(why, whylen);
    } else if (json_is_array(stop)) {
        json_array_foreach(stop, i, v) if (!rc && (!clean_str(v) || !stop_add(r, v)))
            rc = bad(why, whylen, "stop: at most %u strings", FRONT_STOPS_MAX);
    } else if (stop && !json_is_null(stop)) {
        rc = bad(why, whylen, "stop: a string or an array of strings");
    }
out:
    json_decref(o);
    if (rc && r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    else
        *out = r;
    return rc;
}

/* ---- Anthropic: POST /v1/messages -------------------------------------------------------- */

/* A tool_result's content: a string or text blocks, as one text part each. */
static aos_err ant_result(json_t *c, Aos__Llm__Message *m, char *why, size_t whylen)
{
    if (!c || json_is_null(c))
        return AOS_OK;
    if (clean_str(c))
        return part_add(m, AOS__LLM__PART_KIND__TEXT, c) ? AOS_OK : nomem(why, whylen);
    size_t i;
    json_t *b;
    if (!json_is_array(c))
        return bad(why, whylen, "tool_result.content: a string or text blocks");
    json_array_foreach(c, i, b) {
        json_t *t = json_object_get(b, "text");
        if (!clean_str(t))
            return bad(why, whylen, "tool_result.content[%zu]: a text block", i);
        if (!part_add(m, AOS__LLM__PART_KIND__TEXT, t))
            return nomem(why, whylen);
    }
    return AOS_OK;
}

aos_err front_anthropic_messages(const char *body, size_t len, Aos__Llm__ChatRequest **out,
                                 int *stream, char *why, size_t whylen)
{
    *out = NULL;
    *stream = 0;
    json_t *o = load(body, len, why, whylen);
    if (!o)
        return AOS_ERR_USAGE;
    Aos__Llm__ChatRequest *r = chat_new();
    aos_err rc = r ? common(o, r, stream, 1.0, "max_tokens", 1, why, whylen)
                   : nomem(why, whylen);
    if (rc)
        goto out;
    json_t *sys = json_object_get(o, "system");
    if (sys && !json_is_null(sys)) {
        Aos__Llm__Message *m = msg_new(r, AOS__LLM__ROLE__SYSTEM);
        if (!m) {
            rc = nomem(why, whylen);
            goto out;
        }
        if ((rc = ant_result(sys, m, why, whylen))) {
            snprintf(why, whylen, "system: a string or text blocks");
            goto out;
        }
    }
    json_t *msgs = json_object_get(o, "messages");
    if (!json_is_array(msgs) || !json_array_size(msgs)) {
        rc = bad(why, whylen, "messages: a non-empty array is required");
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(msgs, i, v) {
        const char *role = json_string_value(json_object_get(v, "role"));
        Aos__Llm__Role ro = !role                        ? 0
                            : !strcmp(role, "user")      ? AOS__LLM__ROLE__USER
                            : !strcmp(role, "assistant") ? AOS__LLM__ROLE__ASSISTANT
                                                         : 0;
        if (!ro) {
            rc = bad(why, whylen, "messages[%zu].role: user or assistant", i);
            goto out;
        }
        json_t *c = json_object_get(v, "content");
        Aos__Llm__Message *m = NULL;
        if (clean_str(c)) {
            if (!(m = msg_new(r, ro)) || !part_add(m, AOS__LLM__PART_KIND__TEXT, c)) {
                rc = nomem(why, whylen);
                goto out;
            }
            continue;
        }
        if (!json_is_array(c)) {
            rc = bad(why, whylen, "messages[%zu].content: a string or an array of blocks", i);
            goto out;
        }
        size_t j;
        json_t *b;
        json_array_foreach(c, j, b) {
            const char *type = json_string_value(json_object_get(b, "type"));
            if (type && !strcmp(type, "tool_result")) {
                /* each result is a TOOL message of its own, as the neutral model has it */
                json_t *id = json_object_get(b, "tool_use_id");
                Aos__Llm__Message *t = msg_new(r, AOS__LLM__ROLE__TOOL);
                if (ro != AOS__LLM__ROLE__USER || !clean_str(id)) {
                    rc = bad(why, whylen, "messages[%zu].content[%zu]: a tool_result (with "
                             "tool_use_id) belongs in a user message", i, j);
                    goto out;
                }
                if (!t || !set_str(&t->tool_call_id, id)) {
                    rc = nomem(why, whylen);
                    goto out;
                }
                t->is_error = json_is_true(json_object_get(b, "is_error"));
                if ((rc = ant_result(json_object_get(b, "content"), t, why, whylen)))
                    goto out;
                m = NULL; /* text after it starts a new user message */
                continue;
            }
            if (!m && !(m = msg_new(r, ro))) {
                rc = nomem(why, whylen);
                goto out;
            }
            if (type && !strcmp(type, "text") && clean_str(json_object_get(b, "text"))) {
                if (!part_add(m, AOS__LLM__PART_KIND__TEXT, json_object_get(b, "text"))) {
                    rc = nomem(why, whylen);
                    goto out;
                }
            } else if (type && !strcmp(type, "tool_use") && ro == AOS__LLM__ROLE__ASSISTANT &&
                       clean_str(json_object_get(b, "id")) &&
                       clean_str(json_object_get(b, "name")) &&
                       json_is_object(json_object_get(b, "input"))) {
                char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT);
                int ok = args && call_add(m, json_object_get(b, "id"),
                                          json_object_get(b, "name"), args, strlen(args));
                free(args);
                if (!ok) {
                    rc = nomem(why, whylen);
                    goto out;
                }
            } else if (type && !strcmp(type, "image") &&
                       clean_str(json_object_get(json_object_get(b, "source"), "url"))) {
                if (!part_add(m, AOS__LLM__PART_KIND__IMAGE_URL,
                              json_object_get(json_object_get(b, "source"), "url"))) {
                    rc = nomem(why, whylen);
                    goto out;
                }
            } else {
                rc = bad(why, whylen, "messages[%zu].content[%zu]: a text, tool_use (assistant), "
                         "tool_result (user) or image (url source) block", i, j);
                goto out;
            }
        }
    }
    json_t *tools = json_object_get(o, "tools");
    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        rc = bad(why, whylen, "tools: an array");
        goto out;
    }
    json_array_foreach(tools, i, v) {
        json_t *name = json_object_get(v, "name"), *desc = json_object_get(v, "description");
        json_t *schema = json_object_get(v, "input_schema");
        if (!clean_str(name) || (desc && !clean_str(desc)) || !json_is_object(schema)) {
            rc = bad(why, whylen, "tools[%zu]: name, description (a string) and input_schema "
                     "(an object)", i);
            goto out;
        }
        if (!tool_add(r, name, desc, schema)) {
            rc = nomem(why, whylen);
            goto out;
        }
    }
    json_t *tc = json_object_get(o, "tool_choice");
    if (tc && !json_is_null(tc)) {
        const char *type = json_string_value(json_object_get(tc, "type"));
        const char *pick = !type                    ? NULL
                           : !strcmp(type, "auto")  ? "auto"
                           : !strcmp(type, "any")   ? "required"
                           : !strcmp(type, "none")  ? "none"
                           : !strcmp(type, "tool")  ? json_string_value(json_object_get(tc, "name"))
                                                    : NULL;
        if (!pick || !set_bin(&r->tool_choice, pick, strlen(pick))) {
            rc = bad(why, whylen, "tool_choice: {\"type\": auto, any, none, or tool with a "
                     "name}");
            goto out;
        }
    }
    json_t *stop = json_object_get(o, "stop_sequences");
    if (stop && !json_is_null(stop) && !json_is_array(stop)) {
        rc = bad(why, whylen, "stop_sequences: an array of strings");
        goto out;
    }
    json_array_foreach(stop, i, v) if (!rc && (!clean_str(v) || !stop_add(r, v)))
        rc = bad(why, whylen, "stop_sequences: at most %u strings", FRONT_STOPS_MAX);
out:
    json_decref(o);
    if (rc && r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    else
        *out = r;
    return rc;
}

/* ---- OpenAI: POST /v1/embeddings --------------------------------------------------------- */

aos_err front_openai_embed(const char *body, size_t len, Aos__Llm__EmbedRequest **out,
                           int *base64, char *why, size_t whylen)
{
    *out = NULL;
    *base64 = 0;
    json_t *o = load(body, len, why, whylen);
    if (!o)
        return AOS_ERR_USAGE;
    aos_err rc = AOS_OK;
    Aos__Llm__EmbedRequest *r = malloc(sizeof *r);
    json_t *model = json_object_get(o, "model"), *in = json_object_get(o, "input");
    const char *fmt = json_string_value(json_object_get(o, "encoding_format"));
    if (!r) {
        rc = nomem(why, whylen);
        goto out;
    }
    aos__llm__embed_request__init(r);
    if (!clean_str(model) || !json_string_length(model) ||
        json_string_length(model) > FRONT_NAME_MAX) {
        rc = bad(why, whylen, "model: a string of 1..%u bytes is required", FRONT_NAME_MAX);
        goto out;
    }
    if (fmt && strcmp(fmt, "float") && strcmp(fmt, "base64")) {
        rc = bad(why, whylen, "encoding_format: \"float\" or \"base64\"");
        goto out;
    }
    *base64 = fmt && !strcmp(fmt, "base64");
    size_t n = clean_str(in) ? 1 : json_array_size(in);
    if (!n || n > FRONT_EMBED_INPUTS_MAX) {
        rc = bad(why, whylen, "input: a string or an array of 1..%u strings",
                 FRONT_EMBED_INPUTS_MAX);
        goto out;
    }
    if (!set_str(&r->model, model) || !(r->inputs = calloc(n, sizeof *r->inputs))) {
        rc = nomem(why, whylen);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = clean_str(in) ? in : json_array_get(in, i);
        if (!clean_str(s) || !json_string_length(s)) {
            rc = bad(why, whylen, "input[%zu]: a non-empty string (token arrays are not "
                     "served)", i);
            goto out;
        }
        if (!set_str(&r->inputs[i], s)) {
            rc = nomem(why, whylen);
            goto out;
        }
        r->n_inputs = i + 1;
    }
out:
    json_decref(o);
    if (rc && r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    else
        *out = r;
    return rc;
}

/* ---- replies ---------------------------------------------------------------------------- */

static json_t *jbin(ProtobufCBinaryData b)
{
    json_t *s = json_stringn(b.len ? (const char *)b.data : "", b.len);
    return s ? s : json_string(""); /* not UTF-8 (aos-llm checks it): an empty string */
}

static char *dump(json_t *o, size_t *len)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    *len = s ? strlen(s) : 0;
    return s;
}

/* The reply's text: its text parts joined. */
static json_t *reply_text(const Aos__Llm__Message *m)
{
    size_t n = 0;
    for (size_t i = 0; m && i < m->n_content; i++)
        if (m->content[i]->kind == AOS__LLM__PART_KIND__TEXT)
            n += m->content[i]->text.len;
    if (!n)
        return NULL;
    char *buf = malloc(n);
    if (!buf)
        return NULL;
    size_t off = 0;
    for (size_t i = 0; i < m->n_content; i++)
        if (m->content[i]->kind == AOS__LLM__PART_KIND__TEXT && m->content[i]->text.len) {
            memcpy(buf + off, m->content[i]->text.data, m->content[i]->text.len);
            off += m->content[i]->text.len;
        }
    json_t *s = json_stringn(buf, n);
    free(buf);
    return s;
}

static const char *oai_finish(Aos__Llm__StopReason s)
{
    switch (s) {
    case AOS__LLM__STOP_REASON__MAX_TOKENS: return "length";
    case AOS__LLM__STOP_REASON__TOOL_USE: return "tool_calls";
    case AOS__LLM__STOP_REASON__CONTENT_FILTER: return "content_filter";
    default: return "stop";
    }
}

static const char *ant_stop(Aos__Llm__StopReason s)
{
    switch (s) {
    case AOS__LLM__STOP_REASON__MAX_TOKENS: return "max_tokens";
    case AOS__LLM__STOP_REASON__TOOL_USE: return "tool_use";
    case AOS__LLM__STOP_REASON__STOP_SEQUENCE: return "stop_sequence";
    default: return "end_turn";
    }
}

static uint64_t in_tokens(const Aos__Llm__Usage *u)
{
    return u ? u->input_tokens + u->cache_read_tokens + u->cache_write_tokens : 0;
}

static json_t *oai_usage(const Aos__Llm__Usage *u)
{
    uint64_t in = in_tokens(u), out = u ? u->output_tokens : 0;
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)in, "completion_tokens",
                     (json_int_t)out, "total_tokens", (json_int_t)(in + out));
}

char *front_openai_reply(const Aos__Llm__ChatReply *r, const char *id, const char *model,
                         uint64_t created, size_t *len)
{
    const Aos__Llm__Message *m = r->message;
    json_t *text = reply_text(m);
    json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content",
                            text ? text : json_null());
    if (m && m->n_tool_calls && msg) {
        json_t *calls = json_array();
        for (size_t i = 0; i < m->n_tool_calls; i++)
            json_array_append_new(calls, json_pack("{s:o, s:s, s:{s:o, s:o}}", "id",
                                                   jbin(m->tool_calls[i]->id), "type",
                                                   "function", "function", "name",
                                                   jbin(m->tool_calls[i]->name), "arguments",
                                                   jbin(m->tool_calls[i]->arguments)));
        json_object_set_new(msg, "tool_calls", calls);
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:s, s:n}], s:o}", "id", id,
                          "object", "chat.completion", "created", (json_int_t)created,
                          "model", model, "choices", "index", 0, "message",
                          msg ? msg : json_object(), "finish_reason",
                          oai_finish(r->stop_reason), "logprobs", "usage",
                          oai_usage(r->usage));
    return dump(o, len);
}

char *front_anthropic_reply(const Aos__Llm__ChatReply *r, const char *id, const char *model,
                            size_t *len)
{
    const Aos__Llm__Message *m = r->message;
    json_t *content = json_array();
    json_t *text = reply_text(m);
    if (text)
        json_array_append_new(content, json_pack("{s:s, s:o}", "type", "text", "text", text));
    for (size_t i = 0; m && i < m->n_tool_calls; i++) {
        json_t *input = json_loadb((const char *)m->tool_calls[i]->arguments.data,
                                   m->tool_calls[i]->arguments.len, 0, NULL);
        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }
        json_array_append_new(content, json_pack("{s:s, s:o, s:o, s:o}", "type", "tool_use",
                                                 "id", jbin(m->tool_calls[i]->id), "name",
                                                 jbin(m->tool_calls[i]->name), "input",
                                                 input));
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:n, s:{s:I, s:I}}", "id", id,
                          "type", "message", "role", "assistant", "model", model, "content",
                          content, "stop_reason", ant_stop(r->stop_reason), "stop_sequence",
                          "usage", "input_tokens", (json_int_t)in_tokens(r->usage),
                          "output_tokens",
                          (json_int_t)(r->usage ? r->usage->output_tokens : 0));
    return dump(o, len);
}

/* A vector as base64 of its little-endian float32s (what encoding_format base64 asks). */
static json_t *b64_floats(const float *v, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t bytes = n * 4, olen = (bytes + 2) / 3 * 4;
    uint8_t *in = malloc(bytes ? bytes : 1);
    char *o = malloc(olen + 1);
    json_t *s = NULL;
    if (!in || !o)
        goto out;
    for (size_t i = 0; i < n; i++) {
        float f = isfinite(v[i]) ? v[i] : 0.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        in[i * 4] = (uint8_t)u;
        in[i * 4 + 1] = (uint8_t)(u >> 8);
        in[i * 4 + 2] = (uint8_t)(u >> 16);
        in[i * 4 + 3] = (uint8_t)(u >> 24);
    }
    size_t k = 0;
    for (size_t i = 0; i < bytes; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16 | (i + 1 < bytes ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < bytes ? in[i + 2] : 0);
        o[k++] = tab[w >> 18 & 63];
        o[k++] = tab[w >> 12 & 63];
        o[k++] = i + 1 < bytes ? tab[w >> 6 & 63] : '=';
        o[k++] = i + 2 < bytes ? tab[w & 63] : '=';
    }
    o[k] = 0;
    s = json_stringn(o, k);
out:
    free(in);
    free(o);
    return s ? s : json_string("");
}

char *front_openai_embed_reply(const Aos__Llm__EmbedReply *r, const char *model, int base64,
                               size_t *len)
{
    json_t *data = json_array();
    for (size_t i = 0; data && i < r->n_vectors; i++) {
        json_t *v = base64 ? b64_floats(r->vectors[i]->values, r->vectors[i]->n_values)
                           : json_array();
        for (size_t j = 0; !base64 && v && j < r->vectors[i]->n_values; j++)
            json_array_append_new(v, json_real(isfinite(r->vectors[i]->values[j])
                                                   ? r->vectors[i]->values[j]
                                                   : 0.0));
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding",
                                              "index", (int)i, "embedding",
                                              v ? v : json_array()));
    }
    uint64_t in = in_tokens(r->usage);
    json_t *o = json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data",
                          data ? data : json_array(), "model", model, "usage",
                          "prompt_tokens", (json_int_t)in, "total_tokens", (json_int_t)in);
    return dump(o, len);
}

char *front_openai_models(const char *model, uint64_t created, size_t *len)
{
    json_t *data = json_array();
    if (model && model[0])
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", model, "object",
                                              "model", "created", (json_int_t)created,
                                              "owned_by", "aos"));
    return dump(json_pack("{s:s, s:o}", "object", "list", "data", data), len);
}

/* ---- streams ------------------------------------------------------------------------------ */

struct front_sse {
    front_flavour f;
    char id[96], model[FRONT_NAME_MAX + 1];
    uint64_t created;
    int usage, started, text_open, text_index, blocks, ended;
    int call_block[FRONT_CALLS_MAX];   /* Anthropic: the content block of call i + 1; 0: none */
    unsigned open_call;                /* Anthropic: the call whose block is open, + 1 */
    int calls_seen;
    front_emit_fn emit;
    void *arg;
};

front_sse *front_sse_new(front_flavour f, const char *id, const char *model, uint64_t created,
                         int usage_in_stream, front_emit_fn emit, void *arg)
{
    front_sse *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->f = f;
    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->model, sizeof s->model, "%s", model);
    s->created = created;
    s->usage = usage_in_stream;
    s->emit = emit;
    s->arg = arg;
    return s;
}

void front_sse_free(front_sse *s) { free(s); }

/* One event: "event: NAME\n" (Anthropic) and "data: JSON\n\n". Takes o. */
static int ev(front_sse *s, const char *name, json_t *o)
{
    size_t n;
    char *j = dump(o, &n);
    if (!j)
        return -1;
    char head[64];
    int hl = name ? snprintf(head, sizeof head, "event: %s\n", name) : 0;
    int rc = (hl > 0 ? s->emit(s->arg, head, (size_t)hl) : 0) < 0 ||
                     s->emit(s->arg, "data: ", 6) < 0 || s->emit(s->arg, j, n) < 0 ||
                     s->emit(s->arg, "\n\n", 2) < 0
                 ? -1
                 : 0;
    free(j);
    return rc;
}

/* OpenAI's chunk around one delta (or the finish, with finish non-NULL). */
static int oai_chunk(front_sse *s, json_t *delta, const char *finish)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:o}]}", "id", s->id, "object",
                          "chat.completion.chunk", "created", (json_int_t)s->created, "model",
                          s->model, "choices", "index", 0, "delta", delta, "finish_reason",
                          finish ? json_string(finish) : json_null());
    return ev(s, NULL, o);
}

static int ant_start(front_sse *s)
{
    if (s->started)
        return 0;
    s->started = 1;
    return ev(s, "message_start",
              json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:{s:i, s:i}}}", "type",
                        "message_start", "message", "id", s->id, "type", "message", "role",
                        "assistant", "model", s->model, "content", "stop_reason",
                        "stop_sequence", "usage", "input_tokens", 0, "output_tokens", 0));
}

static int ant_close(front_sse *s)
{
    int rc = 0;
    if (s->text_open) {
        rc = ev(s, "content_block_stop", json_pack("{s:s, s:i}", "type", "content_block_stop",
                                                   "index", s->text_index));
        s->text_open = 0;
    }
    if (s->open_call) {
        rc |= ev(s, "content_block_stop",
                 json_pack("{s:s, s:i}", "type", "content_block_stop", "index",
                           s->call_block[s->open_call - 1] - 1));
        s->open_call = 0;
    }
    return rc;
}

static int sse_text(front_sse *s, const char *t, size_t n)
{
    json_t *str = json_stringn(t, n);
    if (!str)
        return -1;
    if (s->f == FRONT_OPENAI) {
        json_t *d = json_pack("{s:o}", "content", str);
        if (!s->started) {
            json_object_set_new(d, "role", json_string("assistant"));
            s->started = 1;
        }
        return oai_chunk(s, d, NULL);
    }
    if (ant_start(s) < 0) {
        json_decref(str);
        return -1;
    }
    if (!s->text_open) {
        if (s->open_call && ant_close(s) < 0) {
            json_decref(str);
            return -1;
        }
        s->text_open = 1;
        s->text_index = s->blocks++;
        if (ev(s, "content_block_start",
               json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", "content_block_start", "index",
                         s->text_index, "content_block", "type", "text", "text", "")) < 0) {
            json_decref(str);
            return -1;
        }
    }
    return ev(s, "content_block_delta",
              json_pack("{s:s, s:i, s:{s:s, s:o}}", "type", "content_block_delta", "index",
                        s->text_index, "delta", "type", "text_delta", "text", str));
}

static int sse_call(front_sse *s, uint32_t index, ProtobufCBinaryData id,
                    ProtobufCBinaryData name, ProtobufCBinaryData args)
{
    if (index >= FRONT_CALLS_MAX)
        return -1;
    if (s->f == FRONT_OPENAI) {
        json_t *c = json_pack("{s:i}", "index", (int)index);
        json_t *fn = json_object();
        if (id.len) {
            json_object_set_new(c, "id", jbin(id));
            json_object_set_new(c, "type", json_string("function"));
        }
        if (name.len)
            json_object_set_new(fn, "name", jbin(name));
        json_object_set_new(fn, "arguments", jbin(args));
        json_object_set_new(c, "function", fn);
        json_t *d = json_pack("{s:[o]}", "tool_calls", c);
        if (!s->started) {
            json_object_set_new(d, "role", json_string("assistant"));
            s->started = 1;
        }
        return oai_chunk(s, d, NULL);
    }
    if (ant_start(s) < 0)
        return -1;
    if (!s->call_block[index]) {
        if (ant_close(s) < 0)
            return -1;
        s->call_block[index] = ++s->blocks; /* the block's index + 1 */
        s->open_call = index + 1;
        if (ev(s, "content_block_start",
               json_pack("{s:s, s:i, s:{s:s, s:o, s:o, s:{}}}", "type", "content_block_start",
                         "index", s->call_block[index] - 1, "content_block", "type",
                         "tool_use", "id", jbin(id), "name", jbin(name), "input")) < 0)
            return -1;
    }
    if (!args.len)
        return 0;
    return ev(s, "content_block_delta",
              json_pack("{s:s, s:i, s:{s:s, s:o}}", "type", "content_block_delta", "index",
                        s->call_block[index] - 1, "delta", "type", "input_json_delta",
                        "partial_json", jbin(args)));
}

int front_sse_delta(front_sse *s, const uint8_t *part, size_t len)
{
    Aos__Llm__ChatDelta *d = aos__llm__chat_delta__unpack(NULL, len, part);
    if (!d || !aos_pb_strings_valid(&d->base)) {
        if (d)
            aos__llm__chat_delta__free_unpacked(d, NULL);
        return -1;
    }
    int rc = 0;
    if (d->text.len && !aos_utf8_valid(d->text.data, d->text.len))
        rc = -1;
    else if (d->text.len)
        rc = sse_text(s, (const char *)d->text.data, d->text.len);
    for (size_t i = 0; !rc && i < d->n_tool_calls; i++) {
        const Aos__Llm__ToolCallDelta *c = d->tool_calls[i];
        s->calls_seen = 1;
        rc = sse_call(s, c->index, c->id, c->name, c->arguments);
    }
    aos__llm__chat_delta__free_unpacked(d, NULL);
    return rc;
}

int front_sse_end(front_sse *s, const Aos__Llm__ChatReply *r, aos_err status,
                  const char *message)
{
    if (s->ended)
        return 0;
    s->ended = 1;
    if (status != AOS_OK || !r) {
        front_error e = front_error_of(status, s->f, message);
        json_t *msg = json_string(message ? message : aos_strerror(status));
        if (!msg)
            msg = json_string(aos_strerror(status));
        if (s->f == FRONT_OPENAI)
            return ev(s, NULL, json_pack("{s:{s:o, s:s, s:o}}", "error", "message", msg,
                                         "type", e.type, "code",
                                         e.code ? json_string(e.code) : json_null())) |
                   s->emit(s->arg, "data: [DONE]\n\n", 14);
        return ev(s, "error", json_pack("{s:s, s:{s:s, s:o}}", "type", "error", "error",
                                        "type", e.type, "message", msg));
    }
    /* a reply with no parts streamed (replayed whole): its content as one delta each */
    const Aos__Llm__Message *m = r->message;
    if (!s->started && m) {
        json_t *t = reply_text(m);
        if (t) {
            int rc = sse_text(s, json_string_value(t), json_string_length(t));
            json_decref(t);
            if (rc < 0)
                return -1;
        }
        for (size_t i = 0; i < m->n_tool_calls; i++)
            if (sse_call(s, (uint32_t)i, m->tool_calls[i]->id, m->tool_calls[i]->name,
                         m->tool_calls[i]->arguments) < 0)
                return -1;
    }
    if (s->f == FRONT_OPENAI) {
        json_t *d = json_object();
        if (!s->started)
            json_object_set_new(d, "role", json_string("assistant"));
        if (oai_chunk(s, d, oai_finish(r->stop_reason)) < 0)
            return -1;
        if (s->usage &&
            ev(s, NULL, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", s->id, "object",
                                  "chat.completion.chunk", "created", (json_int_t)s->created,
                                  "model", s->model, "choices", "usage",
                                  oai_usage(r->usage))) < 0)
            return -1;
        return s->emit(s->arg, "data: [DONE]\n\n", 14);
    }
    if (ant_start(s) < 0 || ant_close(s) < 0)
        return -1;
    if (ev(s, "message_delta",
           json_pack("{s:s, s:{s:s, s:n}, s:{s:I, s:I}}", "type", "message_delta", "delta",
                     "stop_reason", ant_stop(r->stop_reason), "stop_sequence", "usage",
                     "input_tokens", (json_int_t)in_tokens(r->usage), "output_tokens",
                     (json_int_t)(r->usage ? r->usage->output_tokens : 0))) < 0)
        return -1;
    return ev(s, "message_stop", json_pack("{s:s}", "type", "message_stop"));
}

/* ---- errors ---------------------------------------------------------------------------- */

/* The one table: what each API's own clients expect for each outcome. OpenAI's SDKs read
 * the status (their exception class) and error.code; Anthropic's read error.type. ctx, when
 * set, must be in aosd's message for the row to apply: the scheduler refuses a budget used
 * up with REFUSED, as agents_check refuses a model not granted, but the clients expect 429
 * insufficient_quota for the first and 403 for the second. First match wins. */
static const struct {
    aos_err err;
    const char *ctx;
    int http;
    const char *oai_type, *oai_code, *ant_type;
    int retry_after;
} errtab[] = {
    {AOS_ERR_UNAUTHENTICATED, NULL, 401, "invalid_request_error", "invalid_api_key",
     "authentication_error", 0},
    {AOS_ERR_REFUSED, "budget", 429, "insufficient_quota", "insufficient_quota",
     "rate_limit_error", 0},
    {AOS_ERR_REFUSED, "spend cap", 429, "insufficient_quota", "insufficient_quota",
     "rate_limit_error", 0},
    {AOS_ERR_REFUSED, NULL, 403, "permission_error", "permission_denied", "permission_error",
     0},
    {AOS_ERR_QUOTA, NULL, 429, "insufficient_quota", "insufficient_quota", "rate_limit_error",
     0},
    {AOS_ERR_RATE_LIMITED, NULL, 429, "requests", "rate_limit_exceeded", "rate_limit_error",
     1},
    {AOS_ERR_TIMEOUT, NULL, 504, "timeout", "timeout", "timeout_error", 0},
    {AOS_ERR_UNAVAILABLE, NULL, 503, "server_error", "service_unavailable",
     "overloaded_error", 1},
    {AOS_ERR_FAILED, NULL, 503, "server_error", "service_unavailable", "overloaded_error", 1},
    {AOS_ERR_CANCELLED, NULL, 503, "server_error", "service_unavailable", "overloaded_error",
     1},
    {AOS_ERR_USAGE, NULL, 400, "invalid_request_error", NULL, "invalid_request_error", 0},
    {AOS_ERR_PROTO, NULL, 400, "invalid_request_error", NULL, "invalid_request_error", 0},
    {AOS_ERR_TOO_BIG, NULL, 413, "invalid_request_error", "request_too_large",
     "request_too_large", 0},
    {AOS_ERR_NOT_FOUND, NULL, 404, "invalid_request_error", "not_found", "not_found_error",
     0},
    {AOS_ERR_CONFLICT, NULL, 409, "invalid_request_error", "conflict",
     "invalid_request_error", 0},
};

front_error front_error_of(aos_err status, front_flavour f, const char *message)
{
    for (size_t i = 0; i < sizeof errtab / sizeof errtab[0]; i++)
        if (errtab[i].err == status &&
            (!errtab[i].ctx || (message && strstr(message, errtab[i].ctx))))
            return (front_error){errtab[i].http,
                                 f == FRONT_ANTHROPIC ? errtab[i].ant_type : errtab[i].oai_type,
                                 f == FRONT_ANTHROPIC ? NULL : errtab[i].oai_code,
                                 errtab[i].retry_after};
    /* INTERNAL, NOMEM, IO and whatever is added later: the server's fault */
    return (front_error){500, f == FRONT_ANTHROPIC ? "api_error" : "server_error",
                         f == FRONT_ANTHROPIC ? NULL : "internal_error", 0};
}

/* message with every byte that is not part of valid UTF-8 as '?' (a why from aosd is
 * UTF-8 already; this is for anything else). */
static json_t *safe_string(const char *m)
{
    json_t *s = json_string(m);
    if (s)
        return s;
    size_t n = strlen(m);
    char *c = malloc(n + 1);
    if (!c)
        return json_string("?");
    for (size_t i = 0; i < n; i++)
        c[i] = (unsigned char)m[i] < 0x80 && (unsigned char)m[i] >= 0x20 ? m[i] : '?';
    c[n] = 0;
    s = json_string(c);
    free(c);
    return s;
}

char *front_error_body(aos_err status, front_flavour f, const char *message, size_t *len)
{
    front_error e = front_error_of(status, f, message);
    json_t *msg = safe_string(message && message[0] ? message : aos_strerror(status));
    json_t *o = f == FRONT_ANTHROPIC
                    ? json_pack("{s:s, s:{s:s, s:o}}", "type", "error", "error", "type", e.type,
                                "message", msg)
                    : json_pack("{s:{s:o, s:s, s:n, s:o}}", "error", "message", msg, "type",
                                e.type, "param", "code",
                                e.code ? json_string(e.code) : json_null());
    return dump(o, len);
}
