/* What both wire formats share: the response decoder's state (text and tool calls under a
 * byte cap, deltas, the sticky error), JSON field access, provider error mapping, cleaning. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WIRE_INTERNAL
#include "aos/envelope.h"
#include "wire.h"

/* ---- buffers ------------------------------------------------------------------------------ */

int wire_buf_add(wire_buf *b, const void *s, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len)
        return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

void wire_buf_free(wire_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- cleaning text for messages ---------------------------------------------------------- */

static size_t u8_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        return 2;
    if ((c & 0xF0) == 0xE0)
        return 3;
    if ((c & 0xF8) == 0xF0)
        return 4;
    return 0;
}

size_t wire_clean(const char *s, size_t n, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    size_t o = 0, i = 0;
    int space = 0; /* a line break or tab is pending as one space */
    while (i < n) {
        const unsigned char *p = (const unsigned char *)s + i;
        size_t k = u8_len(p[0]);
        if (k == 0 || k > n - i || !aos_utf8_valid(p, k)) {
            i++; /* a stray byte: dropped, and the next one is looked at afresh */
            continue;
        }
        i += k;
        if (k == 1 && (p[0] < 0x20 || p[0] == 0x7F)) {
            if (p[0] == '\n' || p[0] == '\r' || p[0] == '\t')
                space = o > 0;
            continue;
        }
        if (k == 2 && p[0] == 0xC2 && p[1] <= 0x9F) /* C1 controls */
            continue;
        if (space && out[o - 1] != ' ') {
            if (o + 1 >= cap)
                break;
            out[o++] = ' ';
        }
        space = 0;
        if (o + k >= cap)
            break;
        memcpy(out + o, p, k);
        o += k;
    }
    out[o] = 0;
    return o;
}

/* ---- errors -------------------------------------------------------------------------------- */

const char *wire_name(wire_kind k)
{
    return k == WIRE_ANTHROPIC ? "anthropic" : "openai";
}

aos_err wire_fail(wire_dec *d, aos_err err, const char *fmt, ...)
{
    char tmp[sizeof d->why];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    wire_clean(tmp, strnlen(tmp, sizeof tmp), d->why, sizeof d->why);
    d->err = err;
    return err;
}

aos_err wire_usage(char *why, size_t whylen, const char *fmt, ...)
{
    char tmp[320];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        tmp[0] = 0;
    wire_clean(tmp, strnlen(tmp, sizeof tmp), why, whylen);
    return AOS_ERR_USAGE;
}

aos_err wire_nomem(char *why, size_t whylen)
{
    if (why && whylen)
        snprintf(why, whylen, "out of memory");
    return AOS_ERR_NOMEM;
}

static int one_of(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

aos_err wire_error_code(const char *type, const char *code)
{
    /* Both providers' names: overloaded and server trouble pass, a retry may succeed. */
    static const char *const unavailable[] = {"overloaded_error", "api_error", "server_error",
                                              "timeout_error", "service_unavailable", NULL};
    static const char *const limited[] = {"rate_limit_error", "rate_limit_exceeded",
                                          "requests", "tokens", NULL};
    const char *try[2] = {type, code};
    for (int i = 0; i < 2; i++) {
        if (one_of(try[i], unavailable))
            return AOS_ERR_UNAVAILABLE;
        if (one_of(try[i], limited))
            return AOS_ERR_RATE_LIMITED;
    }
    return AOS_ERR_INTERNAL;
}

aos_err wire_provider_error(wire_dec *d, json_t *e)
{
    const char *type = NULL, *code = NULL, *msg = NULL;
    if (json_is_string(e)) {
        msg = json_string_value(e);
    } else if (json_is_object(e)) {
        type = json_string_value(json_object_get(e, "type"));
        code = json_string_value(json_object_get(e, "code"));
        msg = json_string_value(json_object_get(e, "message"));
    }
    return wire_fail(d, wire_error_code(type, code), "%s: %s: %s", wire_name(d->kind),
                     type ? type : code ? code : "error", msg ? msg : "(no message)");
}

/* ---- JSON field access -------------------------------------------------------------------- */

static int wrong(wire_dec *d, const char *where, const char *key, const char *want)
{
    wire_fail(d, AOS_ERR_PROTO, "%s: %s.%s is not %s", wire_name(d->kind), where, key, want);
    return -1;
}

/* o[key] when it is there and not null. */
static json_t *field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return v && !json_is_null(v) ? v : NULL;
}

int wire_get_str(wire_dec *d, json_t *o, const char *key, const char *where, const char **s,
                 size_t *n)
{
    json_t *v = field(o, key);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return wrong(d, where, key, "a string");
    *s = json_string_value(v);
    *n = json_string_length(v);
    return 1;
}

int wire_get_uint(wire_dec *d, json_t *o, const char *key, const char *where, uint64_t *v)
{
    json_t *j = field(o, key);
    if (!j)
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return wrong(d, where, key, "a count");
    *v = (uint64_t)json_integer_value(j);
    return 1;
}

/* An object or an array member: type is JSON_OBJECT or JSON_ARRAY, want says it. */
static int get_typed(wire_dec *d, json_t *o, const char *key, const char *where,
                     json_type type, const char *want, json_t **v)
{
    json_t *j = field(o, key);
    if (!j)
        return 0;
    if (json_typeof(j) != type)
        return wrong(d, where, key, want);
    *v = j;
    return 1;
}

int wire_get_obj(wire_dec *d, json_t *o, const char *key, const char *where, json_t **v)
{
    return get_typed(d, o, key, where, JSON_OBJECT, "an object", v);
}

int wire_get_arr(wire_dec *d, json_t *o, const char *key, const char *where, json_t **v)
{
    return get_typed(d, o, key, where, JSON_ARRAY, "an array", v);
}

int wire_get_usage(wire_dec *d, json_t *o, const char *where, const wire_count *c, size_t n,
                   json_t **u)
{
    json_t *j = NULL;
    int rc = wire_get_obj(d, o, "usage", where, &j);
    if (u)
        *u = j;
    for (size_t i = 0; rc > 0 && i < n; i++)
        if (wire_get_uint(d, j, c[i].key, "usage", c[i].v) < 0)
            rc = -1;
    return rc;
}

json_t *wire_parse(wire_dec *d, const char *s, size_t n, const char *what)
{
    json_error_t e;
    json_t *o = json_loadb(s, n, 0, &e);
    if (!o) {
        /* jansson says what is wrong, invalid UTF-8 included; wire_fail cleans its quote */
        wire_fail(d, AOS_ERR_PROTO, "%s: %s is not valid JSON: %s (byte %d)",
                  wire_name(d->kind), what, e.text, e.position);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        wire_fail(d, AOS_ERR_PROTO, "%s: %s is not a JSON object", wire_name(d->kind), what);
        return NULL;
    }
    return o;
}

/* ---- the decoder ---------------------------------------------------------------------------- */

wire_dec *wire_dec_new(wire_kind k, int stream, size_t max_body, wire_delta_cb on_delta,
                       void *arg)
{
    if (k != WIRE_OPENAI && k != WIRE_ANTHROPIC)
        return NULL;
    wire_dec *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->kind = k;
    d->stream = stream != 0;
    d->max_body = max_body ? max_body : WIRE_DEFAULT_MAX_BODY;
    d->on_delta = on_delta;
    d->arg = arg;
    if (d->stream && !(d->parser = sse_new(d->max_body))) {
        free(d);
        return NULL;
    }
    return d;
}

static void calls_free(wire_dec *d)
{
    for (size_t i = 0; i < d->n_calls; i++) {
        wire_buf_free(&d->calls[i].id);
        wire_buf_free(&d->calls[i].name);
        wire_buf_free(&d->calls[i].args);
    }
    free(d->calls);
    d->calls = NULL;
    d->n_calls = 0;
}

void wire_dec_free(wire_dec *d)
{
    if (!d)
        return;
    sse_free(d->parser);
    wire_buf_free(&d->body);
    wire_buf_free(&d->text);
    calls_free(d);
    free(d);
}

int wire_dec_parts(const wire_dec *d)
{
    return d ? d->parts : 0;
}

static aos_err copy_err(const wire_dec *d, char *why, size_t whylen)
{
    wire_clean(d->why, strlen(d->why), why, whylen);
    return d->err;
}

static int dec_event(void *arg, const char *event, const char *data, size_t len)
{
    wire_dec *d = arg;
    if (d->done)
        return 0; /* after [DONE] / message_stop nothing more belongs to the reply */
    return (int)(d->kind == WIRE_OPENAI ? wire_openai_event(d, event, data, len)
                                        : wire_anthropic_event(d, event, data, len));
}

aos_err wire_dec_feed(wire_dec *d, const char *buf, size_t len, char *why, size_t whylen)
{
    if (!d || (!buf && len))
        return wire_usage(why, whylen, "wire_dec_feed: no decoder or buffer");
    if (d->err != AOS_OK)
        return copy_err(d, why, whylen);
    if (d->finished)
        return wire_usage(why, whylen, "wire_dec_feed: the reply was finished already");
    if (d->stream) {
        char tmp[160] = "";
        aos_err err = sse_feed(d->parser, buf, len, dec_event, d, tmp, sizeof tmp);
        if (err != AOS_OK && d->err == AOS_OK) /* the parser's own error, not an event's */
            wire_fail(d, err, "%s: %s", wire_name(d->kind), tmp);
    } else if (len > d->max_body - d->body.len) {
        wire_fail(d, AOS_ERR_TOO_BIG, "%s: the response body is over %zu bytes",
                  wire_name(d->kind), d->max_body);
    } else if (wire_buf_add(&d->body, buf, len)) {
        wire_fail(d, AOS_ERR_NOMEM, "%s: out of memory for the response body",
                  wire_name(d->kind));
    }
    return d->err != AOS_OK ? copy_err(d, why, whylen) : AOS_OK;
}

static aos_err reserve(wire_dec *d, size_t n)
{
    if (n > d->max_body - d->assembled)
        return wire_fail(d, AOS_ERR_TOO_BIG,
                         "%s: the reply's text and tool calls are over %zu bytes",
                         wire_name(d->kind), d->max_body);
    d->assembled += n;
    return AOS_OK;
}

static void emit(wire_dec *d, const Aos__Llm__ChatDelta *dl)
{
    if (!d->stream)
        return;
    d->parts++;
    if (d->on_delta)
        d->on_delta(d->arg, dl);
}

aos_err wire_add_text(wire_dec *d, const char *s, size_t n)
{
    if (n == 0)
        return AOS_OK;
    if (reserve(d, n) != AOS_OK)
        return d->err;
    if (wire_buf_add(&d->text, s, n))
        return wire_fail(d, AOS_ERR_NOMEM, "%s: out of memory for the reply",
                         wire_name(d->kind));
    Aos__Llm__ChatDelta dl = AOS__LLM__CHAT_DELTA__INIT;
    dl.text.data = (uint8_t *)s;
    dl.text.len = n;
    emit(d, &dl);
    return AOS_OK;
}

aos_err wire_call_at(wire_dec *d, int64_t key, int create, size_t *ord)
{
    for (size_t i = 0; i < d->n_calls; i++)
        if (d->calls[i].key == key) {
            *ord = i;
            return AOS_OK;
        }
    if (!create)
        return AOS_ERR_NOT_FOUND;
    if (d->n_calls == WIRE_MAX_TOOL_CALLS)
        return wire_fail(d, AOS_ERR_TOO_BIG, "%s: more than %u tool calls in one reply",
                         wire_name(d->kind), WIRE_MAX_TOOL_CALLS);
    if (!d->calls && !(d->calls = calloc(WIRE_MAX_TOOL_CALLS, sizeof *d->calls)))
        return wire_fail(d, AOS_ERR_NOMEM, "%s: out of memory for the reply",
                         wire_name(d->kind));
    d->calls[d->n_calls].key = key;
    *ord = d->n_calls++;
    return AOS_OK;
}

/* Some OpenAI-compatible servers repeat a call's id and name on every fragment: a repeat
 * is dropped, anything else is taken as the next piece. */
static int repeat(const wire_buf *b, const char *s, size_t n)
{
    return b->len && b->len == n && memcmp(b->p, s, n) == 0;
}

aos_err wire_add_call(wire_dec *d, size_t ord, const char *id, size_t id_n, const char *name,
                      size_t name_n, const char *args, size_t args_n)
{
    wire_call *c = &d->calls[ord];
    if (repeat(&c->id, id, id_n))
        id_n = 0;
    if (repeat(&c->name, name, name_n))
        name_n = 0;
    if (id_n + name_n + args_n == 0)
        return AOS_OK;
    if (reserve(d, id_n + name_n + args_n) != AOS_OK)
        return d->err;
    if (wire_buf_add(&c->id, id, id_n) || wire_buf_add(&c->name, name, name_n) ||
        wire_buf_add(&c->args, args, args_n))
        return wire_fail(d, AOS_ERR_NOMEM, "%s: out of memory for the reply",
                         wire_name(d->kind));
    Aos__Llm__ToolCallDelta tc = AOS__LLM__TOOL_CALL_DELTA__INIT;
    Aos__Llm__ToolCallDelta *tcs[1] = {&tc};
    tc.index = (uint32_t)ord;
    tc.id.data = (uint8_t *)id;
    tc.id.len = id_n;
    tc.name.data = (uint8_t *)name;
    tc.name.len = name_n;
    tc.arguments.data = (uint8_t *)args;
    tc.arguments.len = args_n;
    Aos__Llm__ChatDelta dl = AOS__LLM__CHAT_DELTA__INIT;
    dl.n_tool_calls = 1;
    dl.tool_calls = tcs;
    emit(d, &dl);
    return AOS_OK;
}

/* ---- assembling the reply -------------------------------------------------------------- */

static int dup_bin(ProtobufCBinaryData *b, const char *s, size_t n)
{
    b->len = 0;
    b->data = NULL;
    if (n == 0)
        return 0;
    if (!(b->data = malloc(n)))
        return -1;
    memcpy(b->data, s, n);
    b->len = n;
    return 0;
}

static aos_err check_args(wire_dec *d, size_t i)
{
    wire_call *c = &d->calls[i];
    if (c->name.len == 0)
        return wire_fail(d, AOS_ERR_PROTO, "%s: tool call %zu has no name",
                         wire_name(d->kind), i);
    if (c->args.len == 0)
        return AOS_OK;
    json_error_t e;
    json_t *j = json_loadb(c->args.p, c->args.len, 0, &e);
    int ok = json_is_object(j);
    json_decref(j);
    if (!ok)
        return wire_fail(d, AOS_ERR_PROTO,
                         "%s: tool call %zu (%.64s): the arguments are not a JSON object: %s",
                         wire_name(d->kind), i, c->name.p, j ? "another JSON value" : e.text);
    return AOS_OK;
}

static aos_err build(wire_dec *d, Aos__Llm__ChatReply **out)
{
    for (size_t i = 0; i < d->n_calls; i++)
        if (check_args(d, i) != AOS_OK)
            return d->err;
    Aos__Llm__ChatReply *r = malloc(sizeof *r);
    if (!r)
        goto nomem;
    aos__llm__chat_reply__init(r);
    if (!(r->message = malloc(sizeof *r->message)) || !(r->usage = malloc(sizeof *r->usage)))
        goto nomem;
    aos__llm__message__init(r->message);
    aos__llm__usage__init(r->usage);
    Aos__Llm__Message *m = r->message;
    m->role = AOS__LLM__ROLE__ASSISTANT;
    if (d->text.len) {
        if (!(m->content = calloc(1, sizeof *m->content)) ||
            !(m->content[0] = malloc(sizeof *m->content[0])))
            goto nomem;
        m->n_content = 1;
        aos__llm__content_part__init(m->content[0]);
        m->content[0]->kind = AOS__LLM__PART_KIND__TEXT;
        if (dup_bin(&m->content[0]->text, d->text.p, d->text.len))
            goto nomem;
    }
    if (d->n_calls) {
        if (!(m->tool_calls = calloc(d->n_calls, sizeof *m->tool_calls)))
            goto nomem;
        for (size_t i = 0; i < d->n_calls; i++) {
            wire_call *c = &d->calls[i];
            Aos__Llm__ToolCall *tc = malloc(sizeof *tc);
            if (!tc)
                goto nomem;
            aos__llm__tool_call__init(tc);
            m->tool_calls[m->n_tool_calls++] = tc;
            if (dup_bin(&tc->id, c->id.p, c->id.len) ||
                dup_bin(&tc->name, c->name.p, c->name.len) ||
                (c->args.len ? dup_bin(&tc->arguments, c->args.p, c->args.len)
                             : dup_bin(&tc->arguments, "{}", 2)))
                goto nomem;
        }
    }
    r->stop_reason = d->stop;
    r->usage->input_tokens = d->in;
    r->usage->output_tokens = d->out;
    r->usage->cache_read_tokens = d->cache_read;
    r->usage->cache_write_tokens = d->cache_write;
    *out = r;
    return AOS_OK;
nomem:
    wire_reply_free(r);
    return wire_fail(d, AOS_ERR_NOMEM, "%s: out of memory for the reply", wire_name(d->kind));
}

aos_err wire_dec_finish(wire_dec *d, Aos__Llm__ChatReply **out, char *why, size_t whylen)
{
    if (!d || !out)
        return wire_usage(why, whylen, "wire_dec_finish: no decoder or out");
    *out = NULL;
    if (d->finished)
        return wire_usage(why, whylen, "wire_dec_finish: called twice");
    d->finished = 1;
    if (d->err != AOS_OK)
        return copy_err(d, why, whylen);
    if (d->stream) {
        if (!d->done && !d->have_stop)
            wire_fail(d, AOS_ERR_UNAVAILABLE, "%s: stream cut after %d parts",
                      wire_name(d->kind), d->parts);
    } else if (d->body.len == 0) {
        wire_fail(d, AOS_ERR_PROTO, "%s: the response body is empty", wire_name(d->kind));
    } else {
        json_t *body = wire_parse(d, d->body.p, d->body.len, "the response body");
        if (body) {
            if (d->kind == WIRE_OPENAI)
                wire_openai_body(d, body);
            else
                wire_anthropic_body(d, body);
            json_decref(body);
        }
    }
    if (d->err == AOS_OK)
        build(d, out);
    return d->err != AOS_OK ? copy_err(d, why, whylen) : AOS_OK;
}

void wire_reply_free(Aos__Llm__ChatReply *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

void wire_embed_free(Aos__Llm__EmbedReply *r)
{
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* ---- provider error bodies ---------------------------------------------------------------- */

#define WIRE_RAW_ERROR_BYTES 200u

size_t wire_error_message(wire_kind k, const char *body, size_t len, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    out[0] = 0;
    if (!body)
        len = 0;
    const char *type = NULL, *msg = NULL;
    json_t *j = len ? json_loadb(body, len, 0, NULL) : NULL;
    if (json_is_object(j)) {
        json_t *e = json_object_get(j, "error");
        if (json_is_object(e)) {
            type = json_string_value(json_object_get(e, "type"));
            if (!type)
                type = json_string_value(json_object_get(e, "code"));
            msg = json_string_value(json_object_get(e, "message"));
        } else if (json_is_string(e)) {
            msg = json_string_value(e);
        } else {
            /* other OpenAI-compatible servers: {"message": ..} or FastAPI's {"detail": ..} */
            msg = json_string_value(json_object_get(j, "message"));
            if (!msg)
                msg = json_string_value(json_object_get(j, "detail"));
        }
    }
    size_t n;
    if (type || msg) {
        char line[1024];
        snprintf(line, sizeof line, "%s%s%s", type ? type : "", type && msg ? ": " : "",
                 msg ? msg : "");
        n = wire_clean(line, strlen(line), out, cap);
    } else {
        size_t lim = cap < WIRE_RAW_ERROR_BYTES + 1 ? cap : WIRE_RAW_ERROR_BYTES + 1;
        n = wire_clean(body, len, out, lim);
    }
    (void)k; /* both providers' bodies are told apart by their shape */
    json_decref(j);
    /* a line ending where a break was cut off keeps no trailing space */
    while (n && out[n - 1] == ' ')
        out[--n] = 0;
    return n;
}

/* ---- encoder helpers ------------------------------------------------------------------------- */

int wire_name_ok(const ProtobufCBinaryData *b)
{
    if (b->len == 0 || b->len > 64)
        return 0;
    for (size_t i = 0; i < b->len; i++) {
        uint8_t c = b->data[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

json_t *wire_jstr(const ProtobufCBinaryData *b, const char *what, aos_err *err, char *why,
                  size_t whylen)
{
    if (!aos_utf8_valid(b->data, b->len)) {
        *err = wire_usage(why, whylen, "%s is not valid UTF-8 (or holds a NUL)", what);
        return NULL;
    }
    json_t *s = json_stringn_nocheck(b->len ? (const char *)b->data : "", b->len);
    if (!s)
        *err = wire_nomem(why, whylen);
    return s;
}

json_t *wire_jobj(const ProtobufCBinaryData *b, const char *what, aos_err *err, char *why,
                  size_t whylen)
{
    if (b->len == 0) {
        json_t *o = json_object();
        if (!o)
            *err = wire_nomem(why, whylen);
        return o;
    }
    if (!aos_utf8_valid(b->data, b->len)) {
        *err = wire_usage(why, whylen, "%s is not valid UTF-8 (or holds a NUL)", what);
        return NULL;
    }
    json_error_t e;
    json_t *o = json_loadb((const char *)b->data, b->len, 0, &e);
    if (!o) {
        *err = wire_usage(why, whylen, "%s is not valid JSON: %s", what, e.text);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        *err = wire_usage(why, whylen, "%s is not a JSON object", what);
        return NULL;
    }
    return o;
}

aos_err wire_dump(json_t *root, char **out, size_t *len, char *why, size_t whylen)
{
    char *s = json_dumps(root, JSON_COMPACT);
    if (!s)
        return wire_nomem(why, whylen);
    *out = s;
    *len = strlen(s);
    return AOS_OK;
}

double wire_decimal(float f)
{
    char b[32];
    snprintf(b, sizeof b, "%.6g", (double)f);
    return strtod(b, NULL);
}

#define WIRE_MAX_TOOLS 256u

int wire_bin_is(const ProtobufCBinaryData *b, const char *s)
{
    return b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

aos_err wire_body_start(int have, const char *model, const char *kind, char **out,
                        size_t *len, char *why, size_t whylen)
{
    if (!out || !len || !have)
        return wire_usage(why, whylen, "%s: no request or output", kind);
    *out = NULL;
    *len = 0;
    return wire_check_model(model, kind, why, whylen);
}

aos_err wire_check_chat(const Aos__Llm__ChatRequest *r, const char *model, const char *kind,
                        int max_temp, char **out, size_t *len, char *why, size_t whylen)
{
    aos_err err = wire_body_start(r != NULL, model, kind, out, len, why, whylen);
    if (err != AOS_OK)
        return err;
    if (r->n_messages == 0)
        return wire_usage(why, whylen, "%s: the request has no messages", kind);
    if ((err = wire_check_tools(r, kind, why, whylen)) != AOS_OK)
        return err;
    if (r->has_temperature && !(r->temperature >= 0.0f && r->temperature <= (float)max_temp))
        return wire_usage(why, whylen, "%s: the temperature must be within 0..%d", kind,
                          max_temp);
    return AOS_OK;
}

aos_err wire_check_call(const Aos__Llm__ToolCall *c, const char *kind, const char *where,
                        char *why, size_t whylen)
{
    if (c->id.len == 0)
        return wire_usage(why, whylen, "%s: %s: the call has no id", kind, where);
    if (!wire_name_ok(&c->name))
        return wire_usage(why, whylen, "%s: %s: the name must match [A-Za-z0-9_-]{1,64}", kind,
                          where);
    return AOS_OK;
}

json_t *wire_text_block(const ProtobufCBinaryData *text, const char *where, json_t *arr,
                        aos_err *err, char *why, size_t whylen)
{
    json_t *o = json_object(), *s;
    if (!o || json_array_append_new(arr, o) ||
        json_object_set_new(o, "type", json_string("text")))
        goto nomem;
    if (!(s = wire_jstr(text, where, err, why, whylen)))
        return NULL;
    if (json_object_set_new(o, "text", s))
        goto nomem;
    return o;
nomem:
    *err = wire_nomem(why, whylen);
    return NULL;
}

json_t *wire_typed(json_t *o, const char *type, const char *key, aos_err *err, char *why,
                   size_t whylen)
{
    json_t *in = json_object();
    if (json_object_set_new(o, "type", json_string(type)) || !in ||
        json_object_set(o, key, in)) {
        json_decref(in);
        *err = wire_nomem(why, whylen);
        return NULL;
    }
    json_decref(in); /* o holds it */
    return in;
}

aos_err wire_tools(const Aos__Llm__ChatRequest *r, json_t *root, wire_tool_fn fn, char *why,
                   size_t whylen)
{
    aos_err err = AOS_OK;
    char where[64];
    json_t *tools = json_array();
    WIRE_SET(root, "tools", tools);
    for (size_t i = 0; i < r->n_tools; i++) {
        snprintf(where, sizeof where, "tools[%zu].input_schema", i);
        json_t *o = json_object();
        WIRE_PUSH(tools, o);
        if ((err = fn(r->tools[i], where, o, why, whylen)) != AOS_OK)
            goto out;
    }
out:
    return err;
}

aos_err wire_tool_fields(const Aos__Llm__Tool *t, const char *where, json_t *o,
                         const char *schema_key, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    WIRE_SET(o, "name", wire_jstr(&t->name, where, &err, why, whylen));
    if (t->description.len)
        WIRE_SET(o, "description", wire_jstr(&t->description, where, &err, why, whylen));
    json_t *schema = wire_jobj(&t->input_schema, where, &err, why, whylen);
    if (schema && t->input_schema.len == 0 &&
        (json_object_set_new(schema, "type", json_string("object")) ||
         json_object_set_new(schema, "properties", json_object()))) {
        json_decref(schema);
        schema = NULL;
    }
    WIRE_SET(o, schema_key, schema);
out:
    return err;
}

aos_err wire_str_array(const ProtobufCBinaryData *v, size_t n, const char *name, json_t *root,
                       const char *key, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    char where[48];
    if (n == 0)
        return AOS_OK;
    json_t *a = json_array();
    WIRE_SET(root, key, a);
    for (size_t i = 0; i < n; i++) {
        snprintf(where, sizeof where, "%s[%zu]", name, i);
        if (v[i].len == 0) {
            err = wire_usage(why, whylen, "%s is empty", where);
            goto out;
        }
        WIRE_PUSH(a, wire_jstr(&v[i], where, &err, why, whylen));
    }
out:
    return err;
}

aos_err wire_check_tools(const Aos__Llm__ChatRequest *r, const char *kind, char *why,
                         size_t whylen)
{
    if (r->n_tools > WIRE_MAX_TOOLS)
        return wire_usage(why, whylen, "%s: %zu tools offered, at most %u", kind, r->n_tools,
                          WIRE_MAX_TOOLS);
    for (size_t i = 0; i < r->n_tools; i++) {
        const Aos__Llm__Tool *t = r->tools[i];
        if (!wire_name_ok(&t->name))
            return wire_usage(why, whylen, "%s: tools[%zu]: the name must match "
                              "[A-Za-z0-9_-]{1,64}", kind, i);
        for (size_t j = 0; j < i; j++)
            if (t->name.len == r->tools[j]->name.len &&
                memcmp(t->name.data, r->tools[j]->name.data, t->name.len) == 0)
                return wire_usage(why, whylen, "%s: tools[%zu]: the name %.*s is offered "
                                  "twice", kind, i, (int)t->name.len, (const char *)t->name.data);
        if (!aos_utf8_valid(t->description.data, t->description.len))
            return wire_usage(why, whylen, "%s: tools[%zu].description is not valid UTF-8",
                              kind, i);
    }
    const ProtobufCBinaryData *c = &r->tool_choice;
    if (c->len == 0 || wire_bin_is(c, "auto") || wire_bin_is(c, "none"))
        return AOS_OK;
    if (r->n_tools == 0)
        return wire_usage(why, whylen, "%s: tool_choice asks for a tool but none is offered",
                          kind);
    if (wire_bin_is(c, "required"))
        return AOS_OK;
    for (size_t i = 0; i < r->n_tools; i++)
        if (c->len == r->tools[i]->name.len &&
            memcmp(c->data, r->tools[i]->name.data, c->len) == 0)
            return AOS_OK;
    if (!wire_name_ok(c))
        return wire_usage(why, whylen, "%s: tool_choice is not auto, none, required or a "
                          "tool's name", kind);
    return wire_usage(why, whylen, "%s: tool_choice names %.*s, which is not offered", kind,
                      (int)c->len, (const char *)c->data);
}

aos_err wire_check_url(const ProtobufCBinaryData *u, const char *what, char *why,
                       size_t whylen)
{
    static const char *const schemes[] = {"https://", "http://", "data:"};
    if (!aos_utf8_valid(u->data, u->len))
        return wire_usage(why, whylen, "%s: the image URL is not valid UTF-8", what);
    for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++) {
        size_t n = strlen(schemes[i]);
        if (u->len > n && strncasecmp((const char *)u->data, schemes[i], n) == 0)
            return AOS_OK;
    }
    return wire_usage(why, whylen, "%s: the image URL must be https:, http: or data:", what);
}

aos_err wire_check_image(const Aos__Llm__ContentPart *p, const char *kind, const char *where,
                         int images, const char *allowed, char *why, size_t whylen)
{
    if (!images)
        return wire_usage(why, whylen, "%s: %s: images go in %s only", kind, where, allowed);
    return wire_check_url(&p->text, where, why, whylen);
}

aos_err wire_check_model(const char *model, const char *kind, char *why, size_t whylen)
{
    if (!model || !model[0] || !aos_utf8_valid(model, strlen(model)))
        return wire_usage(why, whylen, "%s: no model name, or not valid UTF-8", kind);
    return AOS_OK;
}
