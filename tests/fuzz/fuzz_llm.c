/* libFuzzer target for aos-llm's wire formats, built once per format (FUZZ_ANTHROPIC or not):
 * the input as a stream and a body (whole and split), an error body, a request to encode. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aos/envelope.h"
#include "llm.pb-c.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_ANTHROPIC
#define FUZZ_KIND WIRE_ANTHROPIC
#define FUZZ_NAME "fuzz_llm_anthropic"
#else /* OpenAI: also its embeddings */
#define FUZZ_KIND WIRE_OPENAI
#define FUZZ_NAME "fuzz_llm_openai"
#endif

static void broken(const char *what)
{
    fprintf(stderr, FUZZ_NAME ": %s\n", what);
    abort();
}

/* ---- what the deltas said, to hold against the reply ---------------------------------- */

typedef struct {
    char *p;
    size_t len;
} fbuf;

static void fput(fbuf *b, const void *s, size_t n)
{
    char *p = realloc(b->p, b->len + n + 1);
    if (!p)
        broken("out of memory");
    b->p = p;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

typedef struct {
    fbuf log, text;
    fbuf ids[WIRE_MAX_TOOL_CALLS], names[WIRE_MAX_TOOL_CALLS], args[WIRE_MAX_TOOL_CALLS];
} drec;

static void drec_free(drec *r)
{
    free(r->log.p);
    free(r->text.p);
    for (size_t i = 0; i < WIRE_MAX_TOOL_CALLS; i++) {
        free(r->ids[i].p);
        free(r->names[i].p);
        free(r->args[i].p);
    }
    free(r);
}

static void on_delta(void *arg, const Aos__Llm__ChatDelta *d)
{
    drec *r = arg;
    if (!d->text.len && !d->n_tool_calls)
        broken("an empty delta");
    fput(&r->log, "T", 1);
    fput(&r->log, &d->text.len, sizeof d->text.len);
    fput(&r->log, d->text.data, d->text.len);
    fput(&r->text, d->text.data, d->text.len);
    for (size_t i = 0; i < d->n_tool_calls; i++) {
        const Aos__Llm__ToolCallDelta *t = d->tool_calls[i];
        if (t->index >= WIRE_MAX_TOOL_CALLS)
            broken("a tool call index past the cap");
        fput(&r->log, "C", 1);
        fput(&r->log, &t->index, sizeof t->index);
        const ProtobufCBinaryData *f[3] = {&t->id, &t->name, &t->arguments};
        fbuf *dst[3] = {&r->ids[t->index], &r->names[t->index], &r->args[t->index]};
        for (int k = 0; k < 3; k++) {
            fput(&r->log, &f[k]->len, sizeof f[k]->len);
            fput(&r->log, f[k]->data, f[k]->len);
            fput(dst[k], f[k]->data, f[k]->len);
        }
    }
}

/* ---- one decoder run ---------------------------------------------------------------------- */

typedef struct {
    aos_err err;
    char why[320];
    uint8_t *packed;
    size_t plen;
    int parts;
    drec *dl;
} run_out;

static void check_why(aos_err err, const char *why)
{
    if (!aos_err_valid(err))
        broken("an error outside the table");
    if (!why[0])
        broken("an error without a reason");
    if (!aos_utf8_valid(why, strlen(why)))
        broken("a reason that is not UTF-8");
    for (const char *p = why; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            broken("a reason with a control character");
}

static int bin_eq(const ProtobufCBinaryData *b, const fbuf *f)
{
    return b->len == f->len && (b->len == 0 || memcmp(b->data, f->p, b->len) == 0);
}

static void check_reply(const Aos__Llm__ChatReply *r, size_t max, int stream, const drec *dl)
{
    const Aos__Llm__Message *m = r->message;
    if (!m || !r->usage || m->role != AOS__LLM__ROLE__ASSISTANT || m->n_content > 1)
        broken("a reply of the wrong shape");
    if ((unsigned)r->stop_reason > AOS__LLM__STOP_REASON__CONTENT_FILTER)
        broken("a stop reason outside the enum");
    size_t total = 0;
    if (m->n_content) {
        const Aos__Llm__ContentPart *p = m->content[0];
        if (p->kind != AOS__LLM__PART_KIND__TEXT || !p->text.len ||
            !aos_utf8_valid(p->text.data, p->text.len))
            broken("reply text empty or not UTF-8");
        total += p->text.len;
        if (stream && !bin_eq(&p->text, &dl->text))
            broken("reply text is not the deltas joined");
    } else if (stream && dl->text.len) {
        broken("deltas carried text the reply lacks");
    }
    if (m->n_tool_calls > WIRE_MAX_TOOL_CALLS)
        broken("more tool calls than the cap");
    for (size_t i = 0; i < m->n_tool_calls; i++) {
        const Aos__Llm__ToolCall *c = m->tool_calls[i];
        if (!c->name.len || !aos_utf8_valid(c->name.data, c->name.len) ||
            !aos_utf8_valid(c->id.data, c->id.len))
            broken("a tool call without a name, or not UTF-8");
        json_t *j = json_loadb((const char *)c->arguments.data, c->arguments.len, 0, NULL);
        if (!json_is_object(j))
            broken("tool-call arguments that are not a JSON object");
        json_decref(j);
        if (stream && (!bin_eq(&c->id, &dl->ids[i]) || !bin_eq(&c->name, &dl->names[i]) ||
                       (!bin_eq(&c->arguments, &dl->args[i]) &&
                        !(dl->args[i].len == 0 && c->arguments.len == 2))))
            broken("a tool call is not its deltas joined");
        total += c->id.len + c->name.len + (dl && dl->args[i].len ? c->arguments.len : 0);
    }
    if (stream && total > max)
        broken("the reply is over its cap");
}

static void run(int stream, size_t max, const char *s, size_t n, const size_t *cut,
                run_out *o)
{
    memset(o, 0, sizeof *o);
    o->dl = calloc(1, sizeof *o->dl);
    if (!o->dl)
        broken("out of memory");
    wire_dec *d = wire_dec_new(FUZZ_KIND, stream, max, on_delta, o->dl);
    if (!d)
        broken("wire_dec_new failed");
    aos_err err = AOS_OK;
    if (cut) {
        err = wire_dec_feed(d, s, *cut, o->why, sizeof o->why);
        if (err == AOS_OK)
            err = wire_dec_feed(d, s + *cut, n - *cut, o->why, sizeof o->why);
    } else {
        err = wire_dec_feed(d, s, n, o->why, sizeof o->why);
    }
    if (err != AOS_OK)
        check_why(err, o->why);
    Aos__Llm__ChatReply *r = NULL;
    char why2[320] = "";
    o->err = wire_dec_finish(d, &r, why2, sizeof why2);
    if (err != AOS_OK && (o->err != err || strcmp(why2, o->why)))
        broken("a feed error that finish does not repeat");
    if (o->err != AOS_OK) {
        check_why(o->err, why2);
        if (r)
            broken("a reply with an error");
        memcpy(o->why, why2, sizeof why2);
    } else {
        if (!r)
            broken("no reply and no error");
        check_reply(r, max, stream, o->dl);
        o->plen = aos__llm__chat_reply__get_packed_size(r);
        o->packed = malloc(o->plen + 1);
        if (!o->packed)
            broken("out of memory");
        aos__llm__chat_reply__pack(r, o->packed);
        wire_reply_free(r);
    }
    o->parts = wire_dec_parts(d);
    if (!stream && o->parts)
        broken("deltas from a non-stream body");
    wire_dec_free(d);
}

static void run_free(run_out *o)
{
    free(o->packed);
    drec_free(o->dl);
}

static void same(const run_out *a, const run_out *b)
{
    if (a->err != b->err || strcmp(a->why, b->why) || a->plen != b->plen ||
        (a->plen && memcmp(a->packed, b->packed, a->plen)) || a->parts != b->parts ||
        a->dl->log.len != b->dl->log.len ||
        (a->dl->log.len && memcmp(a->dl->log.p, b->dl->log.p, a->dl->log.len))) {
        fprintf(stderr, FUZZ_NAME ": %d '%s' vs %d '%s'\n", a->err, a->why, b->err, b->why);
        broken("the result depends on how the body was split");
    }
}

static void decode(const char *s, size_t n, size_t max, size_t cut)
{
    for (int stream = 0; stream < 2; stream++) {
        run_out whole, split;
        run(stream, max, s, n, NULL, &whole);
        run(stream, max, s, n, &cut, &split);
        same(&whole, &split);
        run_free(&whole);
        run_free(&split);
    }
}

/* ---- the rest of the format ---------------------------------------------------------------- */

static void error_line(const char *s, size_t n, size_t cap)
{
    char out[256];
    size_t len = wire_error_message(FUZZ_KIND, s, n, out, cap);
    if (len >= cap || strlen(out) != len || !aos_utf8_valid(out, len))
        broken("an error line over its cap, or not UTF-8");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7F)
            broken("an error line with a control character");
}

#ifndef FUZZ_ANTHROPIC
static void embed(const char *s, size_t n)
{
    Aos__Llm__EmbedReply *e = NULL;
    char why[320] = "";
    aos_err err = wire_openai_embed_decode(s, n, &e, why, sizeof why);
    if (err != AOS_OK) {
        check_why(err, why);
        if (e)
            broken("embeddings with an error");
        return;
    }
    if (!e || !e->n_vectors || !e->dim || !e->usage)
        broken("embeddings of the wrong shape");
    for (size_t i = 0; i < e->n_vectors; i++)
        if (!e->vectors[i] || e->vectors[i]->n_values != e->dim)
            broken("vectors of different dimensions");
    wire_embed_free(e);
}
#endif

static void check_body(aos_err err, char *out, size_t len, const char *why)
{
    if (err != AOS_OK) {
        if (err != AOS_ERR_USAGE && err != AOS_ERR_NOMEM)
            broken("an encoder error other than USAGE");
        check_why(err, why);
        if (out)
            broken("an encoder error with a body");
        return;
    }
    json_t *j = json_loadb(out, len, 0, NULL);
    if (!json_is_object(j) || strlen(out) != len)
        broken("an encoded body that is not one JSON object");
    json_decref(j);
    free(out);
}

/* Inputs that happen to be a ChatRequest or EmbedRequest in protobuf go to the encoders:
 * whatever a caller sends, the body is JSON or the refusal says why. */
static void encode(const uint8_t *s, size_t n, int stream)
{
    char *out = NULL, why[320] = "";
    size_t len = 0;
    Aos__Llm__ChatRequest *r = aos__llm__chat_request__unpack(NULL, n, s);
    if (r) {
#ifdef FUZZ_ANTHROPIC
        aos_err err = wire_anthropic_chat_body(r, "claude-x", stream, &out, &len, why,
                                               sizeof why);
#else
        aos_err err = wire_openai_chat_body(r, "gpt-x", stream, &out, &len, why, sizeof why);
#endif
        check_body(err, out, len, why);
        aos__llm__chat_request__free_unpacked(r, NULL);
    }
#ifndef FUZZ_ANTHROPIC
    Aos__Llm__EmbedRequest *q = aos__llm__embed_request__unpack(NULL, n, s);
    if (q) {
        out = NULL;
        aos_err err = wire_openai_embed_body(q, "emb-x", &out, &len, why, sizeof why);
        check_body(err, out, len, why);
        aos__llm__embed_request__free_unpacked(q, NULL);
    }
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    size_t max = (sel & 0x80) ? 512 : (1u << 20); /* a small cap now and then */
    size_t cut = n ? ((size_t)sel * 2654435761u) % (n + 1) : 0;
    decode(s, n, max, cut);
#ifndef FUZZ_ANTHROPIC
    embed(s, n);
#endif
    error_line(s, n, 1 + sel % 64);
    error_line(s, n, 256);
    encode(data + 1, n, sel & 1);
    return 0;
}
