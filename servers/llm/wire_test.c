/* Unit tests of aos-llm's wire formats: SSE framing, OpenAI and Anthropic streams replayed
 * split at every byte, non-stream bodies, request bodies parsed back, error bodies, embeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "wire.h"

/* ---- small helpers --------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len;
} sbuf;

static void sb_add(sbuf *b, const void *s, size_t n)
{
    char *p = realloc(b->p, b->len + n + 1);
    assert_non_null(p);
    b->p = p;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_fmt(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_fmt(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof tmp);
    sb_add(b, tmp, (size_t)n);
}

/* Test streams are written with ' for JSON's quote and ` for a quote escaped inside a JSON
 * string, so they stay readable; this turns them into the real bytes. */
static char *unq(const char *t, size_t *len)
{
    sbuf b = {0};
    sb_add(&b, "", 0);
    for (; *t; t++) {
        if (*t == '\'')
            sb_add(&b, "\"", 1);
        else if (*t == '`')
            sb_add(&b, "\\\"", 2);
        else
            sb_add(&b, t, 1);
    }
    if (len)
        *len = b.len;
    return b.p;
}

/* The same stream with every \n turned into eol. */
static char *with_eol(const char *s, size_t n, const char *eol, size_t *len)
{
    sbuf b = {0};
    sb_add(&b, "", 0);
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\n')
            sb_add(&b, eol, strlen(eol));
        else
            sb_add(&b, s + i, 1);
    *len = b.len;
    return b.p;
}

static int beq(const ProtobufCBinaryData *d, const char *s)
{
    return d->len == strlen(s) && (d->len == 0 || memcmp(d->data, s, d->len) == 0);
}

#define assert_bin(b, s)                                                                  \
    do {                                                                                  \
        if (!beq(&(b), s))                                                                \
            fail_msg("got '%.*s', want '%s'", (int)(b).len, (const char *)(b).data, s);   \
    } while (0)

/* ---- SSE -------------------------------------------------------------------------------- */

typedef struct {
    sbuf log;
    int n;
    int stop_after; /* > 0: the n-th event answers AOS_ERR_CANCELLED */
} sse_rec;

static int sse_log(void *arg, const char *event, const char *data, size_t len)
{
    sse_rec *r = arg;
    assert_int_equal(data[len], 0);
    sb_fmt(&r->log, "[%s|", event);
    sb_add(&r->log, data, len);
    sb_add(&r->log, "]", 1);
    r->n++;
    return r->stop_after && r->n == r->stop_after ? AOS_ERR_CANCELLED : 0;
}

/* Feeds s (n bytes) to feed in pieces that end at cuts[0..ncuts) and at n, up to the first
 * error, which it returns. */
typedef aos_err (*feed_fn)(void *arg, const char *s, size_t n, char *why, size_t whylen);

static aos_err feed_cuts(const char *s, size_t n, const size_t *cuts, size_t ncuts,
                         feed_fn feed, void *arg, char *why, size_t whylen)
{
    size_t at = 0;
    aos_err err = AOS_OK;
    for (size_t i = 0; i <= ncuts && err == AOS_OK; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        err = feed(arg, s + at, end - at, why, whylen);
        at = end;
    }
    return err;
}

/* Calls run for n bytes cut in two at every offset (what: split), then cut before every
 * byte ("bytewise", cut 0): the cuts of every run that must give the same result. */
typedef void (*cut_fn)(void *arg, const size_t *cuts, size_t ncuts, const char *what,
                       size_t cut);

static void every_cut(size_t n, const char *split, cut_fn run, void *arg)
{
    for (size_t cut = 0; cut <= n; cut++)
        run(arg, &cut, 1, split, cut);
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 0; i < n; i++)
        cuts[i] = i;
    run(arg, cuts, n, "bytewise", 0);
    free(cuts);
}

typedef struct {
    sse *p;
    sse_rec *r;
} sse_feeder;

static aos_err sse_feed_one(void *arg, const char *s, size_t n, char *why, size_t whylen)
{
    sse_feeder *f = arg;
    return sse_feed(f->p, s, n, sse_log, f->r, why, whylen);
}

/* Feeds s in pieces cut at the given offsets and returns the events as one string. */
static aos_err sse_run(const char *s, size_t n, size_t max, const size_t *cuts, size_t ncuts,
                       int stop_after, sbuf *log, char *why, size_t whylen)
{
    sse_rec r = {.stop_after = stop_after};
    sse_feeder f = {sse_new(max), &r};
    assert_non_null(f.p);
    sb_add(&r.log, "", 0);
    aos_err err = feed_cuts(s, n, cuts, ncuts, sse_feed_one, &f, why, whylen);
    sse_free(f.p);
    *log = r.log;
    return err;
}

typedef struct {
    const char *s;
    size_t n, max;
    aos_err want_err;
    const char *ref;
} sse_case;

static void sse_same(void *arg, const size_t *cuts, size_t ncuts, const char *what, size_t cut)
{
    const sse_case *c = arg;
    char why[256];
    sbuf got;
    if (sse_run(c->s, c->n, c->max, cuts, ncuts, 0, &got, why, sizeof why) != c->want_err ||
        strcmp(got.p, c->ref))
        fail_msg("%s, cut at %zu: got '%s', want '%s'", what, cut, got.p, c->ref);
    free(got.p);
}

static void sse_same_everywhere(const char *s, size_t n, size_t max, const char *want,
                                aos_err want_err)
{
    char why[256];
    sbuf ref;
    assert_int_equal(sse_run(s, n, max, NULL, 0, 0, &ref, why, sizeof why), want_err);
    if (want)
        assert_string_equal(ref.p, want);
    sse_case c = {s, n, max, want_err, ref.p};
    every_cut(n, "split", sse_same, &c);
    free(ref.p);
}

static void sse_fields(void **state)
{
    (void)state;
    static const char s[] = "\xEF\xBB\xBF" /* a BOM, dropped */
                            ": a comment\n"
                            "data: one\n"
                            "\n"
                            "event: add\n"
                            "data:two\n"
                            "data:  three\n" /* one space dropped, the second kept */
                            "id: 7\n"
                            "retry: 100\n"
                            "bogus: x\n"
                            "\n"
                            "event: lonely\n" /* no data: nothing dispatched */
                            "\n"
                            "data\n" /* a field without a colon: empty data */
                            "\n"
                            "data: a:b: c\n"
                            "\n"
                            "data: last, never finished\n";
    sse_same_everywhere(s, sizeof s - 1, 1024,
                        "[|one][add|two\n three][|][|a:b: c]", AOS_OK);
}

static void sse_line_ends(void **state)
{
    (void)state;
    static const char s[] = "event: e\ndata: x\ndata: y\n\ndata: z\n\n";
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    for (size_t i = 0; i < 3; i++) {
        size_t n;
        char *t = with_eol(s, sizeof s - 1, eols[i], &n);
        sse_same_everywhere(t, n, 64, "[e|x\ny][|z]", AOS_OK);
        free(t);
    }
    /* mixed in one stream */
    static const char m[] = "data: a\r\ndata: b\rdata: c\n\r\n";
    sse_same_everywhere(m, sizeof m - 1, 64, "[|a\nb\nc]", AOS_OK);
    /* \r ending one feed and \n starting the next are one line end, not a blank line */
    char why[128];
    sbuf log;
    static const char cr[] = "data: a\r\ndata: b\r\n\r\n";
    size_t cut = 8; /* right after the first \r */
    assert_int_equal(sse_run(cr, sizeof cr - 1, 64, &cut, 1, 0, &log, why, sizeof why),
                     AOS_OK);
    assert_string_equal(log.p, "[|a\nb]");
    free(log.p);
}

static void sse_caps(void **state)
{
    (void)state;
    char why[128];
    sbuf log;
    /* exactly at the cap passes; one more byte does not */
    static const char ok[] = "data: 12345\ndata: 1234\n\n"; /* 5 + 1 + 4 = 10 */
    assert_int_equal(sse_run(ok, sizeof ok - 1, 10, NULL, 0, 0, &log, why, sizeof why),
                     AOS_OK);
    assert_string_equal(log.p, "[|12345\n1234]");
    free(log.p);
    static const char big[] = "data: ok\n\ndata: 12345\ndata: 12345\n\ndata: after\n\n";
    sse_same_everywhere(big, sizeof big - 1, 10, "[|ok]", AOS_ERR_TOO_BIG);
    /* a line that never ends is capped too */
    size_t n = 5000;
    char *line = malloc(n);
    assert_non_null(line);
    memset(line, 'x', n);
    memcpy(line, "data: ", 6);
    sse *p = sse_new(100);
    assert_non_null(p);
    sse_rec r = {0};
    aos_err err = AOS_OK;
    size_t i;
    for (i = 0; i < n && err == AOS_OK; i += 10)
        err = sse_feed(p, line + i, 10, sse_log, &r, why, sizeof why);
    assert_int_equal(err, AOS_ERR_TOO_BIG);
    assert_true(i <= 200);
    assert_non_null(strstr(why, "line"));
    /* sticky: the parser says the same again */
    why[0] = 0;
    assert_int_equal(sse_feed(p, "\n\n", 2, sse_log, &r, why, sizeof why), AOS_ERR_TOO_BIG);
    assert_non_null(strstr(why, "line"));
    assert_int_equal(r.n, 0);
    sse_free(p);
    free(line);
    free(r.log.p);
    assert_null(sse_new(0));
}

static void sse_callback_stops(void **state)
{
    (void)state;
    static const char s[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    char why[128];
    sbuf log;
    assert_int_equal(sse_run(s, sizeof s - 1, 64, NULL, 0, 2, &log, why, sizeof why),
                     AOS_ERR_CANCELLED);
    assert_string_equal(log.p, "[|1][|2]");
    free(log.p);
}

/* ---- decoding: a harness that replays a stream in pieces --------------------------------- */

typedef struct {
    sbuf log;       /* every delta, in order */
    sbuf text;      /* the text deltas joined */
    sbuf args[8];   /* each call's argument fragments joined, by delta index */
    sbuf ids[8], names[8];
    int n;
} dl_rec;

static void dl_on(void *arg, const Aos__Llm__ChatDelta *d)
{
    dl_rec *r = arg;
    r->n++;
    if (d->text.len) {
        sb_add(&r->log, "T:", 2);
        sb_add(&r->log, d->text.data, d->text.len);
        sb_add(&r->log, ";", 1);
        sb_add(&r->text, d->text.data, d->text.len);
    }
    for (size_t i = 0; i < d->n_tool_calls; i++) {
        const Aos__Llm__ToolCallDelta *t = d->tool_calls[i];
        sb_fmt(&r->log, "C%u:", t->index);
        sb_add(&r->log, t->id.data, t->id.len);
        sb_add(&r->log, "|", 1);
        sb_add(&r->log, t->name.data, t->name.len);
        sb_add(&r->log, "|", 1);
        sb_add(&r->log, t->arguments.data, t->arguments.len);
        sb_add(&r->log, ";", 1);
        if (t->index >= 8)
            continue; /* the log has them; the joined fields are for the first few */
        sb_add(&r->args[t->index], t->arguments.data, t->arguments.len);
        sb_add(&r->ids[t->index], t->id.data, t->id.len);
        sb_add(&r->names[t->index], t->name.data, t->name.len);
    }
}

static void dl_free(dl_rec *r)
{
    free(r->log.p);
    free(r->text.p);
    for (int i = 0; i < 8; i++) {
        free(r->args[i].p);
        free(r->ids[i].p);
        free(r->names[i].p);
    }
    memset(r, 0, sizeof *r);
}

typedef struct {
    aos_err feed_err, err;
    char why[256];
    Aos__Llm__ChatReply *reply;
    uint8_t *packed;
    size_t plen;
    dl_rec dl;
    int parts;
} run_out;

static void run_free(run_out *o)
{
    wire_reply_free(o->reply);
    free(o->packed);
    dl_free(&o->dl);
    memset(o, 0, sizeof *o);
}

static aos_err dec_feed(void *d, const char *s, size_t n, char *why, size_t whylen)
{
    return wire_dec_feed(d, s, n, why, whylen);
}

static void run_dec(wire_kind k, int stream, size_t max, const char *s, size_t n,
                    const size_t *cuts, size_t ncuts, run_out *o)
{
    memset(o, 0, sizeof *o);
    wire_dec *d = wire_dec_new(k, stream, max, dl_on, &o->dl);
    assert_non_null(d);
    o->feed_err = feed_cuts(s, n, cuts, ncuts, dec_feed, d, o->why, sizeof o->why);
    char why2[256] = "";
    o->err = wire_dec_finish(d, &o->reply, why2, sizeof why2);
    if (o->feed_err != AOS_OK) {
        assert_int_equal(o->err, o->feed_err); /* the error is sticky */
        assert_string_equal(why2, o->why);
    } else if (o->err != AOS_OK) {
        memcpy(o->why, why2, sizeof why2);
    }
    if (o->reply) {
        assert_int_equal(o->err, AOS_OK);
        o->plen = aos__llm__chat_reply__get_packed_size(o->reply);
        o->packed = malloc(o->plen + 1);
        assert_non_null(o->packed);
        aos__llm__chat_reply__pack(o->reply, o->packed);
    } else {
        assert_int_not_equal(o->err, AOS_OK);
    }
    o->parts = wire_dec_parts(d);
    assert_int_equal(o->parts, o->dl.n);
    Aos__Llm__ChatReply *again = NULL;
    assert_int_equal(wire_dec_finish(d, &again, why2, sizeof why2), AOS_ERR_USAGE);
    assert_null(again);
    wire_dec_free(d);
}

static void same_run(const run_out *a, const run_out *b, const char *what, size_t cut)
{
    if (a->err != b->err || strcmp(a->why, b->why) || a->plen != b->plen ||
        (a->plen && memcmp(a->packed, b->packed, a->plen)) ||
        strcmp(a->dl.log.p ? a->dl.log.p : "", b->dl.log.p ? b->dl.log.p : ""))
        fail_msg("%s, cut at %zu: differs (err %d/%d, why '%s'/'%s')", what, cut, a->err,
                 b->err, a->why, b->why);
}

typedef struct {
    wire_kind k;
    const char *s;
    size_t n;
    const run_out *ref;
} replay_case;

static void replay_same(void *arg, const size_t *cuts, size_t ncuts, const char *what,
                        size_t cut)
{
    const replay_case *c = arg;
    run_out o;
    run_dec(c->k, 1, 0, c->s, c->n, cuts, ncuts, &o);
    same_run(c->ref, &o, what, cut);
    run_free(&o);
}

/* Decodes template tmpl (see unq) whole, split in two at every byte and one byte at a
 * time, with \n, \r\n and \r line ends; every run must give the same reply, error and
 * deltas. ref gets the first. */
static void replay_everywhere(wire_kind k, const char *tmpl, run_out *ref)
{
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    size_t n;
    char *s = unq(tmpl, &n);
    run_dec(k, 1, 0, s, n, NULL, 0, ref);
    for (size_t e = 0; e < 3; e++) {
        replay_case c = {k, NULL, 0, ref};
        char *t = with_eol(s, n, eols[e], &c.n);
        c.s = t;
        every_cut(c.n, eols[e][0] == '\r' && !eols[e][1] ? "cr" : "split", replay_same, &c);
        free(t);
    }
    free(s);
}

static const Aos__Llm__ToolCall *call_of(const run_out *o, size_t i)
{
    assert_non_null(o->reply);
    assert_true(i < o->reply->message->n_tool_calls);
    return o->reply->message->tool_calls[i];
}

typedef struct {
    const char *id, *name, *args;
} call_want;

/* The reply's tool calls are exactly these, in order. */
static void calls_are(const run_out *o, const call_want *w, size_t n)
{
    assert_non_null(o->reply);
    assert_int_equal(o->reply->message->n_tool_calls, n);
    for (size_t i = 0; i < n; i++) {
        assert_bin(call_of(o, i)->id, w[i].id);
        assert_bin(call_of(o, i)->name, w[i].name);
        assert_bin(call_of(o, i)->arguments, w[i].args);
    }
}

static void text_is(const run_out *o, const char *want)
{
    const Aos__Llm__Message *m = o->reply->message;
    assert_int_equal(m->role, AOS__LLM__ROLE__ASSISTANT);
    if (!*want) {
        assert_int_equal(m->n_content, 0);
        return;
    }
    assert_int_equal(m->n_content, 1);
    assert_int_equal(m->content[0]->kind, AOS__LLM__PART_KIND__TEXT);
    assert_bin(m->content[0]->text, want);
}

static void usage_is(const run_out *o, uint64_t in, uint64_t cache_read, uint64_t out,
                     uint64_t cache_write)
{
    const Aos__Llm__Usage *u = o->reply->usage;
    assert_int_equal(u->input_tokens, in);
    assert_int_equal(u->cache_read_tokens, cache_read);
    assert_int_equal(u->output_tokens, out);
    assert_int_equal(u->cache_write_tokens, cache_write);
}

/* ---- OpenAI streams (as recorded from the API, ids shortened) ---------------------------- */

#define OA_CH "data: {'id':'chatcmpl-B9x','object':'chat.completion.chunk','created':1731000000," \
              "'model':'gpt-4o-2024-08-06','service_tier':'default','system_fingerprint':"    \
              "'fp_7f6be3efb0','choices':"

static const char oa_text_stream[] =
    OA_CH "[{'index':0,'delta':{'role':'assistant','content':'','refusal':null},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'content':'Héllo'},'logprobs':null,'finish_reason':null}],"
          "'usage':null,'obfuscation':'x1'}\n\n"
    OA_CH "[{'index':0,'delta':{'content':', wörld — 日本語 🎉'},'logprobs':null,"
          "'finish_reason':null}],'usage':null}\n\n"
    ": keep-alive\n\n"
    OA_CH "[{'index':0,'delta':{'content':'. `Quoted`\\nnext line'},'logprobs':null,"
          "'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{},'logprobs':null,'finish_reason':'stop'}],'usage':null}\n\n"
    OA_CH "[],'usage':{'prompt_tokens':1536,'completion_tokens':14,'total_tokens':1550,"
          "'prompt_tokens_details':{'cached_tokens':1280,'audio_tokens':0},"
          "'completion_tokens_details':{'reasoning_tokens':0,'audio_tokens':0,"
          "'accepted_prediction_tokens':0,'rejected_prediction_tokens':0}}}\n\n"
    "data: [DONE]\n\n";

static void openai_text(void **state)
{
    (void)state;
    run_out o;
    replay_everywhere(WIRE_OPENAI, oa_text_stream, &o);
    assert_int_equal(o.err, AOS_OK);
    text_is(&o, "Héllo, wörld — 日本語 🎉. \"Quoted\"\nnext line");
    assert_string_equal(o.dl.text.p, "Héllo, wörld — 日本語 🎉. \"Quoted\"\nnext line");
    assert_int_equal(o.parts, 3);
    assert_int_equal(o.reply->message->n_tool_calls, 0);
    assert_int_equal(o.reply->stop_reason, AOS__LLM__STOP_REASON__END_TURN);
    usage_is(&o, 256, 1280, 14, 0);
    run_free(&o);

    /* a multi-byte character split between two feeds reaches the reply whole */
    size_t n;
    char *s = unq(oa_text_stream, &n);
    const char *e = strstr(s, "日本");
    assert_non_null(e);
    size_t cut = (size_t)(e - s) + 1;
    run_dec(WIRE_OPENAI, 1, 0, s, n, &cut, 1, &o);
    assert_int_equal(o.err, AOS_OK);
    assert_non_null(strstr((const char *)o.reply->message->content[0]->text.data, "日本語"));
    run_free(&o);
    free(s);
}

static const char oa_tools_stream[] =
    OA_CH "[{'index':0,'delta':{'role':'assistant','content':null,'tool_calls':[{'index':0,"
          "'id':'call_Qm7sKd','type':'function','function':{'name':'get_weather',"
          "'arguments':''}}],'refusal':null},'logprobs':null,'finish_reason':null}],"
          "'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'{`ci'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'ty`: `Pa'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':1,'id':'call_Zr2pXa','type':'function',"
          "'function':{'name':'get_time','arguments':''}}]},'logprobs':null,"
          "'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'ris, Île-de'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':1,'function':{'arguments':'{`tz`:'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':0,'function':{'arguments':'-France`}'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':1,'function':{'arguments':' `Europe/'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':1,'function':{'arguments':'Paris`}'}}]},"
          "'logprobs':null,'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{'tool_calls':[{'index':2,'id':'call_Np0','type':'function',"
          "'function':{'name':'ping','arguments':''}}]},'logprobs':null,"
          "'finish_reason':null}],'usage':null}\n\n"
    OA_CH "[{'index':0,'delta':{},'logprobs':null,'finish_reason':'tool_calls'}],"
          "'usage':null}\n\n"
    OA_CH "[],'usage':{'prompt_tokens':320,'completion_tokens':61,'total_tokens':381,"
          "'prompt_tokens_details':{'cached_tokens':0}}}\n\n"
    "data: [DONE]\n\n";

static void openai_tool_calls(void **state)
{
    (void)state;
    run_out o;
    replay_everywhere(WIRE_OPENAI, oa_tools_stream, &o);
    assert_int_equal(o.err, AOS_OK);
    text_is(&o, "");
    static const call_want calls[] = {
        {"call_Qm7sKd", "get_weather", "{\"city\": \"Paris, Île-de-France\"}"},
        {"call_Zr2pXa", "get_time", "{\"tz\": \"Europe/Paris\"}"},
        {"call_Np0", "ping", "{}"}, /* none streamed: {} */
    };
    calls_are(&o, calls, 3);
    /* the deltas carry the same, piece by piece */
    assert_string_equal(o.dl.args[0].p, "{\"city\": \"Paris, Île-de-France\"}");
    assert_string_equal(o.dl.args[1].p, "{\"tz\": \"Europe/Paris\"}");
    assert_string_equal(o.dl.ids[1].p, "call_Zr2pXa");
    assert_string_equal(o.dl.names[2].p, "ping");
    assert_int_equal(o.parts, 10);
    assert_int_equal(o.reply->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
    usage_is(&o, 320, 0, 61, 0);
    run_free(&o);
}

/* Deltas leave as their event completes, not at the end. */
static void openai_deltas_at_once(void **state)
{
    (void)state;
    size_t n;
    char *s = unq(oa_text_stream, &n);
    dl_rec r = {0};
    char why[256];
    wire_dec *d = wire_dec_new(WIRE_OPENAI, 1, 0, dl_on, &r);
    assert_non_null(d);
    const char *second = strstr(s, "Héllo");
    const char *end = strstr(second, "\n\n");
    assert_int_equal(wire_dec_feed(d, s, (size_t)(end - s) + 1, why, sizeof why), AOS_OK);
    assert_int_equal(r.n, 0); /* the event is not complete before its blank line */
    assert_int_equal(wire_dec_feed(d, end + 1, 1, why, sizeof why), AOS_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(wire_dec_parts(d), 1);
    assert_string_equal(r.text.p, "Héllo");
    wire_dec_free(d); /* never finished: frees all the same */
    dl_free(&r);
    free(s);
}

static void expect_err(wire_kind k, int stream, size_t max, const char *tmpl, aos_err want,
                       const char *want_why)
{
    size_t n;
    char *s = unq(tmpl, &n);
    run_out o;
    run_dec(k, stream, max, s, n, NULL, 0, &o);
    if (o.err != want || (want_why && !strstr(o.why, want_why)))
        fail_msg("want %s '%s', got %s '%s' for %s", aos_err_name(want),
                 want_why ? want_why : "", aos_err_name(o.err), o.why, tmpl);
    run_free(&o);
    free(s);
}

typedef struct {
    int stream;
    size_t max;
    const char *tmpl;
    aos_err want;
    const char *want_why;
} err_case;

static void expect_errs(wire_kind k, const err_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        expect_err(k, c[i].stream, c[i].max, c[i].tmpl, c[i].want, c[i].want_why);
}

static void openai_cut_and_bad(void **state)
{
    (void)state;
    /* ends without [DONE] and without a finish_reason */
    static const err_case cases[] = {
        {1, 0,
         OA_CH "[{'index':0,'delta':{'content':'a'}}]}\n\n"
         OA_CH "[{'index':0,'delta':{'content':'b'}}]}\n\n"
         OA_CH "[{'index':0,'delta':{'content':'c'}}]}\n\n"
         OA_CH "[{'index':0,'delta':{'content':'d'",
         AOS_ERR_UNAVAILABLE, "openai: stream cut after 3 parts"},
        /* a finish_reason without [DONE] is a whole answer */
        {1, 0,
         OA_CH "[{'index':0,'delta':{'content':'a'},'finish_reason':'length'}]}\n\n",
         AOS_OK, NULL},
        /* nothing at all */
        {1, 0, "", AOS_ERR_UNAVAILABLE, "after 0 parts"},
        {1, 0, "data: {'choices':[{'index':0,'delta':{'content':'a'}}\n\n",
         AOS_ERR_PROTO, "openai: a stream event is not valid JSON"},
        {1, 0, "data: not json\n\n", AOS_ERR_PROTO, "openai:"},
        {1, 0, "data: ['an array']\n\n", AOS_ERR_PROTO, "not a JSON object"},
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'content':'\xff\xfe'}}]}\n\n",
         AOS_ERR_PROTO, "openai: a stream event is not valid JSON"},
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'content':'\xc3'}}]}\n\n",
         AOS_ERR_PROTO, "openai:"},
        /* known fields of the wrong type */
        {1, 0, "data: {'choices':[{'index':0,'delta':{'content':5}}]}\n\n",
         AOS_ERR_PROTO, "delta.content is not a string"},
        {1, 0, "data: {'choices':{}}\n\n", AOS_ERR_PROTO, "not an array"},
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'tool_calls':[{'index':-1}]}}]}\n\n",
         AOS_ERR_PROTO, "index is not a count"},
        {1, 0,
         "data: {'choices':[],'usage':{'prompt_tokens':'12'}}\n\n", AOS_ERR_PROTO,
         "usage.prompt_tokens"},
        /* unknown fields and null ones are nothing */
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'content':null,'audio':{'x':1},"
         "'tool_calls':null},'finish_reason':'stop','new':[1,2]}],'usage':null}\n\n"
         "data: [DONE]\n\n",
         AOS_OK, NULL},
        /* arguments that are not a JSON object */
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,'id':'c1',"
         "'function':{'name':'f','arguments':'{`a`:'}}]},'finish_reason':'tool_calls'}]}"
         "\n\n",
         AOS_ERR_PROTO, "tool call 0 (f): the arguments are not a JSON object"},
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,'id':'c1',"
         "'function':{'name':'f','arguments':'[1]'}}]},'finish_reason':'tool_calls'}]}"
         "\n\n",
         AOS_ERR_PROTO, "not a JSON object"},
        {1, 0,
         "data: {'choices':[{'index':0,'delta':{'tool_calls':[{'index':0,"
         "'function':{'arguments':'{}'}}]},'finish_reason':'tool_calls'}]}\n\n",
         AOS_ERR_PROTO, "tool call 0 has no name"},
        /* the provider's own error, mid-stream */
        {1, 0,
         OA_CH "[{'index':0,'delta':{'content':'a'}}]}\n\n"
         "data: {'error':{'message':'The server had an error while processing your "
         "request.','type':'server_error','param':null,'code':null}}\n\n",
         AOS_ERR_UNAVAILABLE,
         "openai: server_error: The server had an error while processing your request."},
        {1, 0,
         "data: {'error':{'message':'Rate limit reached','type':'requests',"
         "'code':'rate_limit_exceeded'}}\n\n",
         AOS_ERR_RATE_LIMITED, "openai: requests: Rate limit reached"},
        {1, 0,
         "data: {'error':{'message':'bad','type':'invalid_request_error'}}\n\n",
         AOS_ERR_INTERNAL, "openai: invalid_request_error: bad"},
    };
    expect_errs(WIRE_OPENAI, cases, sizeof cases / sizeof *cases);
}

static void openai_caps(void **state)
{
    (void)state;
    /* text over the reply cap */
    expect_err(WIRE_OPENAI, 1, 40,
               "data: {'choices':[{'index':0,'delta':{'content':'0123456789012345'}}]}\n\n",
               AOS_ERR_TOO_BIG, NULL); /* the event itself is over 40 bytes */
    expect_err(WIRE_OPENAI, 1, 100,
               "data: {'choices':[{'delta':{'content':'0123456789012345678901234567890'}}]}\n\n"
               "data: {'choices':[{'delta':{'content':'0123456789012345678901234567890'}}]}\n\n"
               "data: {'choices':[{'delta':{'content':'0123456789012345678901234567890'}}]}\n\n"
               "data: {'choices':[{'delta':{'content':'0123456789012345678901234567890'}}]}\n\n",
               AOS_ERR_TOO_BIG, "the reply's text and tool calls are over 100 bytes");
    /* a non-stream body over the cap, fed in pieces */
    run_out o;
    static const char body[] = "{\"choices\":[{\"message\":{\"content\":\"0123456789\"}}]}";
    size_t cuts[] = {10, 20, 30, 40};
    run_dec(WIRE_OPENAI, 0, 45, body, sizeof body - 1, cuts, 4, &o);
    assert_int_equal(o.err, AOS_ERR_TOO_BIG);
    assert_non_null(strstr(o.why, "body is over 45 bytes"));
    run_free(&o);
    /* at most 128 tool calls */
    sbuf s = {0};
    for (int i = 0; i < 130; i++)
        sb_fmt(&s, "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,"
               "\"id\":\"c%d\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n",
               i, i);
    run_dec(WIRE_OPENAI, 1, 0, s.p, s.len, NULL, 0, &o);
    assert_int_equal(o.err, AOS_ERR_TOO_BIG);
    assert_non_null(strstr(o.why, "more than 128 tool calls"));
    assert_int_equal(o.parts, 128);
    run_free(&o);
    free(s.p);
}

static void openai_body(void **state)
{
    (void)state;
    size_t n;
    char *s = unq("{'id':'chatcmpl-1','object':'chat.completion','created':1731000000,"
                  "'model':'gpt-4o','choices':[{'index':0,'message':{'role':'assistant',"
                  "'content':'I will check.','tool_calls':[{'id':'call_1','type':'function',"
                  "'function':{'name':'get_weather','arguments':'{`city`:`Oslo`}'}},"
                  "{'id':'call_2','type':'function','function':{'name':'get_time',"
                  "'arguments':''}}],'refusal':null,'annotations':[]},'logprobs':null,"
                  "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':100,"
                  "'completion_tokens':20,'total_tokens':120,'prompt_tokens_details':"
                  "{'cached_tokens':64}}}",
                  &n);
    run_out o;
    size_t cut = n / 2;
    run_dec(WIRE_OPENAI, 0, 0, s, n, &cut, 1, &o);
    assert_int_equal(o.err, AOS_OK);
    assert_int_equal(o.parts, 0);
    text_is(&o, "I will check.");
    static const call_want calls[] = {
        {"call_1", "get_weather", "{\"city\":\"Oslo\"}"},
        {"call_2", "get_time", "{}"},
    };
    calls_are(&o, calls, 2);
    assert_int_equal(o.reply->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
    usage_is(&o, 36, 64, 20, 0);
    run_free(&o);
    free(s);
    static const err_case cases[] = {
        {0, 0, "{'choices':[{'index':0,'message':{'content':'ok'},"
         "'finish_reason':'content_filter'}]}", AOS_OK, NULL},
        {0, 0, "{'choices':[]}", AOS_ERR_PROTO, "no choice"},
        {0, 0, "", AOS_ERR_PROTO, "empty"},
        {0, 0, "{'choices':[{'message':{'content':'\xed\xa0\x80'}}]}",
         AOS_ERR_PROTO, "openai: the response body is not valid JSON"},
        {0, 0, "{'error':{'message':'Overloaded','type':'server_error'}}",
         AOS_ERR_UNAVAILABLE, "openai: server_error: Overloaded"},
    };
    expect_errs(WIRE_OPENAI, cases, sizeof cases / sizeof *cases);
}

/* ---- Anthropic streams ------------------------------------------------------------------ */

static const char an_stream[] =
    "event: message_start\n"
    "data: {'type':'message_start','message':{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','type':"
    "'message','role':'assistant','model':'claude-sonnet-4-5-20250929','content':[],"
    "'stop_reason':null,'stop_sequence':null,'usage':{'input_tokens':25,"
    "'cache_creation_input_tokens':112,'cache_read_input_tokens':2048,'output_tokens':1,"
    "'service_tier':'standard'}}}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':0,'content_block':{'type':'text','text':''}}"
    "\n\n"
    "event: ping\n"
    "data: {'type': 'ping'}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta',"
    "'text':'Let me look — '}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta',"
    "'text':'☀️ and 🕐.'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':0}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':1,'content_block':{'type':'tool_use',"
    "'id':'toolu_01T1x1fJ34qAmk2tNTrN7Up6','name':'get_weather','input':{}}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
    "'partial_json':''}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
    "'partial_json':'{`location`: `San Fra'}}\n\n"
    "event: ping\n"
    "data: {'type': 'ping'}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
    "'partial_json':'ncisco, CA`, `unit`: `°F`}'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':1}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':2,'content_block':{'type':'tool_use',"
    "'id':'toolu_02','name':'get_time','input':{}}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':'{`tz`:'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':2,'delta':{'type':'input_json_delta',"
    "'partial_json':'`America/Los_Angeles`}'}}\n\n"
    "event: content_block_stop\n"
    "data: {'type':'content_block_stop','index':2}\n\n"
    "event: message_delta\n"
    "data: {'type':'message_delta','delta':{'stop_reason':'tool_use','stop_sequence':null},"
    "'usage':{'output_tokens':40}}\n\n"
    "event: message_delta\n"
    "data: {'type':'message_delta','delta':{},'usage':{'output_tokens':89}}\n\n"
    "event: message_stop\n"
    "data: {'type':'message_stop'}\n\n";

static void anthropic_stream(void **state)
{
    (void)state;
    run_out o;
    replay_everywhere(WIRE_ANTHROPIC, an_stream, &o);
    assert_int_equal(o.err, AOS_OK);
    text_is(&o, "Let me look — ☀️ and 🕐.");
    static const call_want calls[] = {
        {"toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather",
         "{\"location\": \"San Francisco, CA\", \"unit\": \"°F\"}"},
        {"toolu_02", "get_time", "{\"tz\":\"America/Los_Angeles\"}"},
    };
    calls_are(&o, calls, 2);
    /* delta indexes count tool_use blocks (0, 1), not content blocks (1, 2) */
    assert_string_equal(o.dl.names[0].p, "get_weather");
    assert_string_equal(o.dl.names[1].p, "get_time");
    assert_string_equal(o.dl.args[1].p, "{\"tz\":\"America/Los_Angeles\"}");
    assert_null(o.dl.names[2].p);
    assert_int_equal(o.parts, 8);
    assert_int_equal(o.reply->stop_reason, AOS__LLM__STOP_REASON__TOOL_USE);
    usage_is(&o, 25, 2048, 89, 112); /* output: the last count */
    run_free(&o);
}

static const char an_err_stream[] =
    "event: message_start\n"
    "data: {'type':'message_start','message':{'id':'msg_1','type':'message','role':"
    "'assistant','content':[],'usage':{'input_tokens':10,'output_tokens':1}}}\n\n"
    "event: content_block_start\n"
    "data: {'type':'content_block_start','index':0,'content_block':{'type':'text','text':''}}"
    "\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':'Hi'}}"
    "\n\n"
    "event: ping\n"
    "data: {'type':'ping'}\n\n"
    "event: error\n"
    "data: {'type':'error','error':{'type':'overloaded_error','message':'Overloaded'}}\n\n"
    "event: content_block_delta\n"
    "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta',"
    "'text':'never seen'}}\n\n";

static void anthropic_errors(void **state)
{
    (void)state;
    run_out o;
    replay_everywhere(WIRE_ANTHROPIC, an_err_stream, &o);
    assert_int_equal(o.feed_err, AOS_ERR_UNAVAILABLE);
    assert_string_equal(o.why, "anthropic: overloaded_error: Overloaded");
    assert_string_equal(o.dl.text.p, "Hi");
    assert_int_equal(o.parts, 1);
    run_free(&o);
    static const err_case cases[] = {
        {1, 0,
         "event: error\ndata: {'type':'error','error':{'type':'rate_limit_error',"
         "'message':'Number of request tokens has exceeded your per-minute rate limit'}}"
         "\n\n",
         AOS_ERR_RATE_LIMITED, "anthropic: rate_limit_error: Number of request tokens"},
        {1, 0,
         "event: error\ndata: {'type':'error','error':{'type':'api_error',"
         "'message':'Internal server error'}}\n\n",
         AOS_ERR_UNAVAILABLE, "anthropic: api_error: Internal server error"},
        {1, 0,
         "event: error\ndata: {'type':'error','error':{'type':'invalid_request_error',"
         "'message':'prompt is too long'}}\n\n",
         AOS_ERR_INTERNAL, "anthropic: invalid_request_error: prompt is too long"},
        /* cut: no message_stop and no stop_reason */
        {1, 0,
         "event: content_block_delta\ndata: {'type':'content_block_delta','index':0,"
         "'delta':{'type':'text_delta','text':'a'}}\n\n"
         "event: content_block_delta\ndata: {'type':'content_block_delta','index':0,"
         "'delta':{'type':'text_delta','text':'b'}}\n\n",
         AOS_ERR_UNAVAILABLE, "anthropic: stream cut after 2 parts"},
        {1, 0,
         "event: content_block_delta\ndata: {'type':'content_block_delta','index':0,"
         "'delta':{'type':'input_json_delta','partial_json':'{'}}\n\n",
         AOS_ERR_PROTO, "not a tool_use block"},
        {1, 0,
         "event: content_block_delta\ndata: {'type':'content_block_delta',"
         "'delta':{'type':'text_delta','text':'a'}}\n\n",
         AOS_ERR_PROTO, "without an index"},
        {1, 0,
         "event: message_delta\ndata: {'type':'message_delta','delta':{'stop_reason':7}}"
         "\n\n",
         AOS_ERR_PROTO, "delta.stop_reason is not a string"},
        {1, 0, "event: message_start\ndata: {'type':'message_start',"
         "'message':{'usage':{'input_tokens':1.5}}}\n\n",
         AOS_ERR_PROTO, "usage.input_tokens is not a count"},
        {1, 0,
         "event: content_block_delta\ndata: {'type':'content_block_delta','index':0,"
         "'delta':{'type':'text_delta','text':'bad \xc0\xaf'}}\n\n",
         AOS_ERR_PROTO, "anthropic: a stream event is not valid JSON"},
        /* unknown events, blocks and deltas are passed over */
        {1, 0,
         "event: brand_new\ndata: {'type':'brand_new','x':1}\n\n"
         "event: content_block_start\ndata: {'type':'content_block_start','index':0,"
         "'content_block':{'type':'thinking','thinking':''}}\n\n"
         "event: content_block_delta\ndata: {'type':'content_block_delta','index':0,"
         "'delta':{'type':'thinking_delta','thinking':'hmm'}}\n\n"
         "event: message_stop\ndata: {'type':'message_stop'}\n\n",
         AOS_OK, NULL},
        /* a text block without its text (the type's length must not stand in for it) */
        {1, 0,
         "event: content_block_start\ndata: {'type':'content_block_start','index':0,"
         "'content_block':{'type':'text'}}\n\n"
         "event: content_block_delta\ndata: {'type':'content_block_delta','index':0,"
         "'delta':{'type':'text_delta'}}\n\n"
         "event: message_stop\ndata: {'type':'message_stop'}\n\n",
         AOS_OK, NULL},
        {0, 0, "{'type':'message','content':[{'type':'text'}]}", AOS_OK,
         NULL},
    };
    expect_errs(WIRE_ANTHROPIC, cases, sizeof cases / sizeof *cases);
    /* a tool_use whose input never streamed is {} */
    size_t n;
    char *s = unq("event: content_block_start\ndata: {'type':'content_block_start','index':0,"
            "'content_block':{'type':'tool_use','id':'toolu_9','name':'noop','input':{}}}\n\n"
            "event: message_delta\ndata: {'type':'message_delta','delta':{'stop_reason':"
            "'max_tokens'}}\n\n",
            &n);
    run_dec(WIRE_ANTHROPIC, 1, 0, s, n, NULL, 0, &o);
    assert_int_equal(o.err, AOS_OK);
    assert_bin(call_of(&o, 0)->arguments, "{}");
    assert_int_equal(o.reply->stop_reason, AOS__LLM__STOP_REASON__MAX_TOKENS);
    run_free(&o);
    free(s);
}

static void anthropic_body(void **state)
{
    (void)state;
    size_t n;
    char *s = unq("{'id':'msg_01','type':'message','role':'assistant','model':'claude-x',"
                  "'content':[{'type':'text','text':'Checking.'},{'type':'tool_use',"
                  "'id':'toolu_1','name':'get_weather','input':{'city':'Zürich','days':3}},"
                  "{'type':'text','text':' Done.'}],'stop_reason':'stop_sequence',"
                  "'stop_sequence':'END','usage':{'input_tokens':7,'output_tokens':30,"
                  "'cache_read_input_tokens':0,'cache_creation_input_tokens':900}}",
                  &n);
    run_out o;
    run_dec(WIRE_ANTHROPIC, 0, 0, s, n, NULL, 0, &o);
    assert_int_equal(o.err, AOS_OK);
    text_is(&o, "Checking. Done.");
    static const call_want calls[] = {
        {"toolu_1", "get_weather", "{\"city\":\"Zürich\",\"days\":3}"}};
    calls_are(&o, calls, 1);
    assert_int_equal(o.reply->stop_reason, AOS__LLM__STOP_REASON__STOP_SEQUENCE);
    usage_is(&o, 7, 0, 30, 900);
    run_free(&o);
    free(s);
    static const err_case cases[] = {
        {0, 0, "{'type':'error','error':{'type':'overloaded_error',"
         "'message':'Overloaded'}}", AOS_ERR_UNAVAILABLE,
         "anthropic: overloaded_error: Overloaded"},
        {0, 0, "{'type':'message','content':{}}", AOS_ERR_PROTO,
         "body.content is not an array"},
        {0, 0, "{'type':'message','content':[{'type':'tool_use',"
         "'id':'t','name':'f','input':[1]}]}", AOS_ERR_PROTO, "not an object"},
        {0, 0, "{'type':'message'", AOS_ERR_PROTO,
         "anthropic: the response body is not valid JSON"},
    };
    expect_errs(WIRE_ANTHROPIC, cases, sizeof cases / sizeof *cases);
}

/* ---- request bodies ------------------------------------------------------------------------ */

static void bset(ProtobufCBinaryData *d, const char *s)
{
    d->len = strlen(s);
    d->data = NULL;
    if (d->len) {
        d->data = malloc(d->len);
        assert_non_null(d->data);
        memcpy(d->data, s, d->len);
    }
}

/* bset over a field that holds bytes already. */
static void breset(ProtobufCBinaryData *d, const char *s)
{
    free(d->data);
    bset(d, s);
}

static void *grow(void *arr, size_t n, size_t size)
{
    void *v = realloc(arr, (n + 1) * size);
    assert_non_null(v);
    return v;
}

static Aos__Llm__Message *msg(Aos__Llm__ChatRequest *r, Aos__Llm__Role role)
{
    Aos__Llm__Message *m = malloc(sizeof *m);
    assert_non_null(m);
    aos__llm__message__init(m);
    m->role = role;
    r->messages = grow(r->messages, r->n_messages, sizeof *r->messages);
    r->messages[r->n_messages++] = m;
    return m;
}

static Aos__Llm__Message *part(Aos__Llm__Message *m, Aos__Llm__PartKind k, const char *s)
{
    Aos__Llm__ContentPart *p = malloc(sizeof *p);
    assert_non_null(p);
    aos__llm__content_part__init(p);
    p->kind = k;
    bset(&p->text, s);
    m->content = grow(m->content, m->n_content, sizeof *m->content);
    m->content[m->n_content++] = p;
    return m;
}

static Aos__Llm__Message *text(Aos__Llm__ChatRequest *r, Aos__Llm__Role role, const char *s)
{
    return part(msg(r, role), AOS__LLM__PART_KIND__TEXT, s);
}

static void call(Aos__Llm__Message *m, const char *id, const char *name, const char *args)
{
    Aos__Llm__ToolCall *c = malloc(sizeof *c);
    assert_non_null(c);
    aos__llm__tool_call__init(c);
    bset(&c->id, id);
    bset(&c->name, name);
    bset(&c->arguments, args);
    m->tool_calls = grow(m->tool_calls, m->n_tool_calls, sizeof *m->tool_calls);
    m->tool_calls[m->n_tool_calls++] = c;
}

static Aos__Llm__Message *result(Aos__Llm__ChatRequest *r, const char *id, const char *s,
                                 int is_error)
{
    Aos__Llm__Message *m = text(r, AOS__LLM__ROLE__TOOL, s);
    bset(&m->tool_call_id, id);
    m->is_error = is_error;
    return m;
}

static void tool(Aos__Llm__ChatRequest *r, const char *name, const char *desc,
                 const char *schema)
{
    Aos__Llm__Tool *t = malloc(sizeof *t);
    assert_non_null(t);
    aos__llm__tool__init(t);
    bset(&t->name, name);
    bset(&t->description, desc);
    bset(&t->input_schema, schema);
    r->tools = grow(r->tools, r->n_tools, sizeof *r->tools);
    r->tools[r->n_tools++] = t;
}

static Aos__Llm__ChatRequest *req_new(void)
{
    Aos__Llm__ChatRequest *r = malloc(sizeof *r);
    assert_non_null(r);
    aos__llm__chat_request__init(r);
    return r;
}

static void req_free(Aos__Llm__ChatRequest *r)
{
    aos__llm__chat_request__free_unpacked(r, NULL);
}

/* A conversation with every kind of message: the shape agents send. */
static Aos__Llm__ChatRequest *conversation(void)
{
    Aos__Llm__ChatRequest *r = req_new();
    text(r, AOS__LLM__ROLE__SYSTEM, "You are terse.");                           /* 0 */
    text(r, AOS__LLM__ROLE__USER, "Weather in Paris and the time there?");        /* 1 */
    part(text(r, AOS__LLM__ROLE__USER, "And this picture:"),                      /* 2 */
         AOS__LLM__PART_KIND__IMAGE_URL, "https://example.com/sky.png");
    Aos__Llm__Message *a = text(r, AOS__LLM__ROLE__ASSISTANT, "Checking both.");  /* 3 */
    call(a, "call_1", "get_weather", "{\"city\":\"Paris\"}");
    call(a, "call_2", "get_time", "");
    result(r, "call_1", "18°C, cloudy", 0);                                       /* 4 */
    result(r, "call_2", "clock unavailable", 1);                                  /* 5 */
    text(r, AOS__LLM__ROLE__USER, "Thanks; also: pack an umbrella?");            /* 6 */
    tool(r, "get_weather", "Current weather",
         "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
         "\"required\":[\"city\"]}");
    tool(r, "get_time", "", "");
    bset(&r->tool_choice, "get_weather");
    r->max_tokens = 512;
    r->temperature = 0.7f;
    r->has_temperature = 1;
    r->stop = malloc(sizeof *r->stop);
    assert_non_null(r->stop);
    bset(&r->stop[0], "END");
    r->n_stop = 1;
    return r;
}

/* Walks "a.0.b" through objects and arrays. */
static json_t *jat(json_t *root, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = root;
    for (char *save, *tok = strtok_r(buf, ".", &save); tok && v;
         tok = strtok_r(NULL, ".", &save)) {
        if (json_is_array(v))
            v = json_array_get(v, strtoul(tok, NULL, 10));
        else
            v = json_object_get(v, tok);
    }
    return v;
}

static void jstr_is(json_t *root, const char *path, const char *want)
{
    json_t *v = jat(root, path);
    if (!json_is_string(v) || strcmp(json_string_value(v), want))
        fail_msg("%s: got %s, want '%s'", path,
                 json_is_string(v) ? json_string_value(v) : "(not a string)", want);
}

typedef struct {
    const char *path, *want;
} jwant;

static void jstrs_are(json_t *root, const jwant *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        jstr_is(root, w[i].path, w[i].want);
}

typedef aos_err (*chat_enc)(const Aos__Llm__ChatRequest *, const char *, int, char **,
                           size_t *, char *, size_t);

static json_t *body_of(chat_enc enc, const Aos__Llm__ChatRequest *r, int stream)
{
    char *out = NULL, why[256] = "";
    size_t len = 0;
    aos_err err = enc(r, "model-x", stream, &out, &len, why, sizeof why);
    if (err != AOS_OK)
        fail_msg("encode: %s", why);
    assert_int_equal(strlen(out), len);
    json_error_t e;
    json_t *j = json_loadb(out, len, 0, &e);
    assert_non_null(j);
    free(out);
    return j;
}

static void openai_request(void **state)
{
    (void)state;
    Aos__Llm__ChatRequest *r = conversation();
    json_t *j = body_of(wire_openai_chat_body, r, 1);
    jstr_is(j, "model", "model-x");
    assert_int_equal(json_array_size(jat(j, "messages")), 7);
    static const jwant want[] = {
        {"messages.0.role", "system"},
        {"messages.0.content", "You are terse."},
        {"messages.1.role", "user"},
        {"messages.1.content", "Weather in Paris and the time there?"},
        {"messages.2.content.0.type", "text"},
        {"messages.2.content.1.type", "image_url"},
        {"messages.2.content.1.image_url.url", "https://example.com/sky.png"},
        {"messages.3.role", "assistant"},
        {"messages.3.content", "Checking both."},
        {"messages.3.tool_calls.0.id", "call_1"},
        {"messages.3.tool_calls.0.type", "function"},
        {"messages.3.tool_calls.0.function.name", "get_weather"},
        {"messages.3.tool_calls.0.function.arguments", "{\"city\":\"Paris\"}"},
        {"messages.3.tool_calls.1.function.arguments", "{}"},
        {"messages.4.role", "tool"},
        {"messages.4.tool_call_id", "call_1"},
        {"messages.4.content", "18°C, cloudy"},
        {"messages.5.tool_call_id", "call_2"},
        {"tools.0.type", "function"},
        {"tools.0.function.name", "get_weather"},
        {"tools.0.function.description", "Current weather"},
        {"tools.0.function.parameters.required.0", "city"},
    };
    jstrs_are(j, want, sizeof want / sizeof *want);
    assert_null(jat(j, "tools.1.function.description"));
    jstr_is(j, "tools.1.function.parameters.type", "object");
    jstr_is(j, "tool_choice.type", "function");
    jstr_is(j, "tool_choice.function.name", "get_weather");
    assert_int_equal(json_integer_value(jat(j, "max_tokens")), 512);
    assert_true(json_real_value(jat(j, "temperature")) == 0.7);
    jstr_is(j, "stop.0", "END");
    assert_true(json_is_true(jat(j, "stream")));
    assert_true(json_is_true(jat(j, "stream_options.include_usage")));
    json_decref(j);

    /* not streaming; an assistant turn of tool calls only has null content */
    free(r->messages[3]->content[0]->text.data);
    free(r->messages[3]->content[0]);
    r->messages[3]->n_content = 0;
    r->max_tokens = 0;
    r->has_temperature = 0;
    breset(&r->tool_choice, "required");
    j = body_of(wire_openai_chat_body, r, 0);
    assert_true(json_is_null(jat(j, "messages.3.content")));
    assert_null(jat(j, "stream"));
    assert_null(jat(j, "stream_options"));
    assert_null(jat(j, "max_tokens"));
    assert_null(jat(j, "temperature"));
    jstr_is(j, "tool_choice", "required");
    json_decref(j);
    req_free(r);
}

static void anthropic_request(void **state)
{
    (void)state;
    Aos__Llm__ChatRequest *r = conversation();
    text(r, AOS__LLM__ROLE__SYSTEM, "Answer in English."); /* 7: hoisted as well */
    part(text(r, AOS__LLM__ROLE__USER, ""), AOS__LLM__PART_KIND__IMAGE_URL,    /* 8 */
         "data:image/png;base64,iVBORw0KGgo=");
    r->cache_breakpoint = 6; /* the prefix ends with the second tool result */
    json_t *j = body_of(wire_anthropic_chat_body, r, 1);
    jstr_is(j, "model", "model-x");
    assert_int_equal(json_integer_value(jat(j, "max_tokens")), 512);
    assert_int_equal(json_array_size(jat(j, "system")), 2);
    jstr_is(j, "system.0.type", "text");
    jstr_is(j, "system.0.text", "You are terse.");
    jstr_is(j, "system.1.text", "Answer in English.");
    /* user (1, 2 merged) / assistant (3) / user (4, 5, 6, 8 merged) */
    assert_int_equal(json_array_size(jat(j, "messages")), 3);
    jstr_is(j, "messages.0.role", "user");
    assert_int_equal(json_array_size(jat(j, "messages.0.content")), 3);
    static const jwant want[] = {
        {"messages.0.content.0.text", "Weather in Paris and the time there?"},
        {"messages.0.content.2.type", "image"},
        {"messages.0.content.2.source.type", "url"},
        {"messages.0.content.2.source.url", "https://example.com/sky.png"},
        {"messages.1.role", "assistant"},
        {"messages.1.content.0.text", "Checking both."},
        {"messages.1.content.1.type", "tool_use"},
        {"messages.1.content.1.id", "call_1"},
        {"messages.1.content.1.name", "get_weather"},
        {"messages.1.content.1.input.city", "Paris"},
    };
    jstrs_are(j, want, sizeof want / sizeof *want);
    assert_true(json_is_object(jat(j, "messages.1.content.2.input")));
    assert_int_equal(json_object_size(jat(j, "messages.1.content.2.input")), 0);
    jstr_is(j, "messages.2.role", "user");
    assert_int_equal(json_array_size(jat(j, "messages.2.content")), 4);
    jstr_is(j, "messages.2.content.0.type", "tool_result");
    jstr_is(j, "messages.2.content.0.tool_use_id", "call_1");
    jstr_is(j, "messages.2.content.0.content", "18°C, cloudy");
    assert_null(jat(j, "messages.2.content.0.is_error"));
    jstr_is(j, "messages.2.content.1.tool_use_id", "call_2");
    assert_true(json_is_true(jat(j, "messages.2.content.1.is_error")));
    static const jwant want2[] = {
        {"messages.2.content.2.text", "Thanks; also: pack an umbrella?"},
        {"messages.2.content.3.source.type", "base64"},
        {"messages.2.content.3.source.media_type", "image/png"},
        {"messages.2.content.3.source.data", "iVBORw0KGgo="},
        /* the cache breakpoint, and only there */
        {"messages.2.content.1.cache_control.type", "ephemeral"},
    };
    jstrs_are(j, want2, sizeof want2 / sizeof *want2);
    char *dump = json_dumps(j, 0);
    const char *cc = strstr(dump, "cache_control");
    assert_non_null(cc);
    assert_null(strstr(cc + 1, "cache_control"));
    free(dump);
    static const jwant want3[] = {
        {"tools.0.name", "get_weather"},
        {"tools.0.input_schema.properties.city.type", "string"},
        {"tools.1.input_schema.type", "object"},
        {"tool_choice.type", "tool"},
        {"tool_choice.name", "get_weather"},
    };
    jstrs_are(j, want3, sizeof want3 / sizeof *want3);
    assert_true(json_real_value(jat(j, "temperature")) == 0.7);
    jstr_is(j, "stop_sequences.0", "END");
    assert_true(json_is_true(jat(j, "stream")));
    json_decref(j);

    /* breakpoint on a system message: its last block; on the assistant: its last tool_use */
    r->cache_breakpoint = 1;
    j = body_of(wire_anthropic_chat_body, r, 0);
    jstr_is(j, "system.0.cache_control.type", "ephemeral");
    assert_null(jat(j, "system.1.cache_control"));
    assert_null(jat(j, "stream"));
    json_decref(j);
    r->cache_breakpoint = 4;
    j = body_of(wire_anthropic_chat_body, r, 0);
    jstr_is(j, "messages.1.content.2.cache_control.type", "ephemeral");
    json_decref(j);
    r->cache_breakpoint = 8; /* a system message in the middle: the last system block */
    j = body_of(wire_anthropic_chat_body, r, 0);
    jstr_is(j, "system.1.cache_control.type", "ephemeral");
    json_decref(j);
    r->cache_breakpoint = 1000; /* past the end: the last message */
    j = body_of(wire_anthropic_chat_body, r, 0);
    jstr_is(j, "messages.2.content.3.cache_control.type", "ephemeral");
    json_decref(j);

    /* tool_choice and max_tokens defaults */
    r->max_tokens = 0;
    breset(&r->tool_choice, "required");
    j = body_of(wire_anthropic_chat_body, r, 0);
    assert_int_equal(json_integer_value(jat(j, "max_tokens")), 4096);
    jstr_is(j, "tool_choice.type", "any");
    json_decref(j);
    req_free(r);
}

static void expect_usage(const Aos__Llm__ChatRequest *r, int anthropic_too, const char *want)
{
    static const struct {
        const char *name;
        chat_enc enc;
    } encs[] = {{"openai", wire_openai_chat_body}, {"anthropic", wire_anthropic_chat_body}};
    for (size_t i = 0; i < (anthropic_too ? 2u : 1u); i++) {
        char *out = (char *)1, why[256] = "";
        size_t len = 1;
        aos_err err = encs[i].enc(r, "m", 1, &out, &len, why, sizeof why);
        if (err != AOS_ERR_USAGE || !strstr(why, want))
            fail_msg("%s: got %s '%s', want '%s'", encs[i].name, aos_err_name(err), why, want);
        assert_null(out);
    }
}

static void request_validation(void **state)
{
    (void)state;
    Aos__Llm__ChatRequest *r = req_new();
    expect_usage(r, 1, "no messages");
    text(r, AOS__LLM__ROLE__USER, "hi");
    tool(r, "bad name", "", "");
    expect_usage(r, 1, "[A-Za-z0-9_-]{1,64}");
    breset(&r->tools[0]->name, "t");
    tool(r, "t", "", "");
    expect_usage(r, 1, "offered twice");
    breset(&r->tools[1]->name, "u");
    breset(&r->tools[1]->input_schema, "[\"not an object\"]");
    expect_usage(r, 1, "tools[1].input_schema is not a JSON object");
    breset(&r->tools[1]->input_schema, "{\"type\":");
    expect_usage(r, 1, "tools[1].input_schema is not valid JSON");
    breset(&r->tools[1]->input_schema, "{}");
    bset(&r->tool_choice, "v");
    expect_usage(r, 1, "names v, which is not offered");
    breset(&r->tool_choice, "u");
    r->has_temperature = 1;
    r->temperature = 1.5f;
    char *out = NULL, why[256];
    size_t len;
    assert_int_equal(wire_openai_chat_body(r, "m", 0, &out, &len, why, sizeof why), AOS_OK);
    free(out);
    assert_int_equal(wire_anthropic_chat_body(r, "m", 0, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "0..1"));
    r->temperature = -0.1f;
    expect_usage(r, 1, "temperature");
    r->has_temperature = 0;
    assert_int_equal(wire_openai_chat_body(r, "", 0, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);

    Aos__Llm__Message *a = text(r, AOS__LLM__ROLE__ASSISTANT, "ok");
    call(a, "c1", "t", "{\"a\":");
    expect_usage(r, 1, "messages[1].tool_calls[0] is not valid JSON");
    breset(&a->tool_calls[0]->arguments, "[42]");
    expect_usage(r, 1, "not a JSON object");
    breset(&a->tool_calls[0]->arguments, "{}");
    breset(&a->tool_calls[0]->name, "");
    expect_usage(r, 1, "[A-Za-z0-9_-]{1,64}");
    breset(&a->tool_calls[0]->name, "t");
    breset(&a->tool_calls[0]->id, "");
    expect_usage(r, 1, "has no id");
    breset(&a->tool_calls[0]->id, "c1");
    Aos__Llm__Message *t = result(r, "", "out", 0);
    expect_usage(r, 1, "names no call");
    bset(&t->tool_call_id, "c1");
    assert_int_equal(wire_anthropic_chat_body(r, "m", 0, &out, &len, why, sizeof why), AOS_OK);
    free(out);

    Aos__Llm__Message *u = text(r, AOS__LLM__ROLE__USER, "bad \xff utf-8");
    expect_usage(r, 1, "messages[3].content[0] is not valid UTF-8");
    breset(&u->content[0]->text, "fine");
    part(a, AOS__LLM__PART_KIND__IMAGE_URL, "https://x/y.png");
    expect_usage(r, 1, "images go in user messages");
    a->content[1]->kind = AOS__LLM__PART_KIND__PART_UNSPECIFIED;
    expect_usage(r, 1, "kind is not set");
    a->content[1]->kind = AOS__LLM__PART_KIND__TEXT;
    part(u, AOS__LLM__PART_KIND__IMAGE_URL, "ftp://x/y.png");
    expect_usage(r, 1, "must be https:, http: or data:");
    breset(&u->content[1]->text, "data:image/tiff;base64,AAAA");
    assert_int_equal(wire_anthropic_chat_body(r, "m", 0, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "JPEG, PNG, GIF or WebP"));
    breset(&u->content[1]->text, "data:image/png,rawbytes");
    assert_int_equal(wire_anthropic_chat_body(r, "m", 0, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "data:TYPE;base64,DATA"));
    u->content[1]->kind = AOS__LLM__PART_KIND__TEXT;
    msg(r, AOS__LLM__ROLE__ROLE_UNSPECIFIED);
    expect_usage(r, 1, "messages[4]: the role is not set");
    r->messages[4]->role = AOS__LLM__ROLE__USER;
    call(r->messages[4], "c9", "t", "{}");
    expect_usage(r, 1, "only assistant messages carry tool calls");
    req_free(r);

    /* only system messages: nothing for Anthropic's messages */
    r = req_new();
    text(r, AOS__LLM__ROLE__SYSTEM, "s");
    text(r, AOS__LLM__ROLE__USER, "");
    assert_int_equal(wire_anthropic_chat_body(r, "m", 0, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_non_null(strstr(why, "no message with content"));
    bset(&r->tool_choice, "required");
    expect_usage(r, 0, "none is offered");
    req_free(r);
}

/* ---- embeddings ------------------------------------------------------------------------------ */

static void embeddings(void **state)
{
    (void)state;
    Aos__Llm__EmbedRequest *q = malloc(sizeof *q);
    assert_non_null(q);
    aos__llm__embed_request__init(q);
    q->inputs = calloc(2, sizeof *q->inputs);
    assert_non_null(q->inputs);
    bset(&q->inputs[0], "first");
    bset(&q->inputs[1], "zweite ü");
    q->n_inputs = 2;
    char *out, why[256];
    size_t len;
    assert_int_equal(wire_openai_embed_body(q, "text-embedding-3-small", &out, &len, why,
                                            sizeof why), AOS_OK);
    json_t *j = json_loadb(out, len, 0, NULL);
    assert_non_null(j);
    jstr_is(j, "model", "text-embedding-3-small");
    jstr_is(j, "input.1", "zweite ü");
    jstr_is(j, "encoding_format", "float");
    json_decref(j);
    free(out);
    breset(&q->inputs[1], "");
    assert_int_equal(wire_openai_embed_body(q, "m", &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    aos__llm__embed_request__free_unpacked(q, NULL);

    size_t n;
    char *s = unq("{'object':'list','data':[{'object':'embedding','index':1,'embedding':"
                  "[0.5,-1,2e-3]},{'object':'embedding','index':0,'embedding':[1,0.25,-0.125]}],"
                  "'model':'text-embedding-3-small','usage':{'prompt_tokens':8,"
                  "'total_tokens':8}}",
                  &n);
    Aos__Llm__EmbedReply *e = NULL;
    assert_int_equal(wire_openai_embed_decode(s, n, &e, why, sizeof why), AOS_OK);
    free(s);
    assert_int_equal(e->n_vectors, 2);
    assert_int_equal(e->dim, 3);
    assert_true(e->vectors[0]->values[1] == 0.25f);
    assert_true(e->vectors[1]->values[1] == -1.0f);
    assert_true(e->vectors[1]->values[2] == 2e-3f);
    assert_int_equal(e->usage->input_tokens, 8);
    wire_embed_free(e);

    static const struct {
        const char *body;
        aos_err err;
        const char *why;
    } bad[] = {
        {"{'data':[{'index':0,'embedding':[1,2]},{'index':1,'embedding':[1]}]}",
         AOS_ERR_PROTO, "1 dimensions, not 2"},
        {"{'data':[{'index':0,'embedding':[1]},{'index':0,'embedding':[1]}]}", AOS_ERR_PROTO,
         "seen before"},
        {"{'data':[{'index':5,'embedding':[1]}]}", AOS_ERR_PROTO, "out of range"},
        {"{'data':[{'index':0,'embedding':['x']}]}", AOS_ERR_PROTO, "is not a float"},
        {"{'data':[{'index':0,'embedding':[1e300]}]}", AOS_ERR_PROTO, "is not a float"},
        {"{'data':[{'index':0,'embedding':'AAAA'}]}", AOS_ERR_PROTO, "not an array"},
        {"{'data':[{'index':0,'embedding':[]}]}", AOS_ERR_PROTO, "0 dimensions"},
        {"{'data':[]}", AOS_ERR_PROTO, "no data"},
        {"[1]", AOS_ERR_PROTO, "not a JSON object"},
        {"", AOS_ERR_PROTO, "empty"},
        {"{'error':{'message':'Rate limit','type':'tokens','code':'rate_limit_exceeded'}}",
         AOS_ERR_RATE_LIMITED, "openai: tokens: Rate limit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = unq(bad[i].body, &n);
        e = (Aos__Llm__EmbedReply *)1;
        aos_err err = wire_openai_embed_decode(s, n, &e, why, sizeof why);
        if (err != bad[i].err || !strstr(why, bad[i].why))
            fail_msg("%s: got %s '%s'", bad[i].body, aos_err_name(err), why);
        assert_null(e);
        free(s);
    }
}

/* ---- provider error bodies ---------------------------------------------------------------- */

static void error_messages(void **state)
{
    (void)state;
    char out[256];
    size_t n;
    char *s = unq("{'error':{'message':'Incorrect API key provided: sk-abc.\\nSee docs.',"
                  "'type':'invalid_request_error','param':null,'code':'invalid_api_key'}}",
                  &n);
    size_t got = wire_error_message(WIRE_OPENAI, s, n, out, sizeof out);
    assert_int_equal(got, strlen(out));
    assert_string_equal(out,
                        "invalid_request_error: Incorrect API key provided: sk-abc. See docs.");
    free(s);
    s = unq("{'type':'error','error':{'type':'overloaded_error','message':'Overloaded'},"
            "'request_id':'req_1'}", &n);
    wire_error_message(WIRE_ANTHROPIC, s, n, out, sizeof out);
    assert_string_equal(out, "overloaded_error: Overloaded");
    free(s);
    s = unq("{'error':{'message':'no type here','code':404}}", &n);
    wire_error_message(WIRE_OPENAI, s, n, out, sizeof out);
    assert_string_equal(out, "no type here");
    free(s);
    s = unq("{'detail':'Not Found'}", &n);
    wire_error_message(WIRE_OPENAI, s, n, out, sizeof out);
    assert_string_equal(out, "Not Found");
    free(s);

    /* not JSON: the first printable 200 bytes, control bytes and broken UTF-8 dropped */
    static const char html[] = "<html>\r\n<head><title>502 Bad\x01 Gateway</title></head>\r\n"
                               "\t<body>\xff\xfe caf\xc3\xa9</body></html>";
    wire_error_message(WIRE_OPENAI, html, sizeof html - 1, out, sizeof out);
    assert_string_equal(out,
                        "<html> <head><title>502 Bad Gateway</title></head> <body> café"
                        "</body></html>");
    char big[1000];
    memset(big, 'x', sizeof big);
    assert_int_equal(wire_error_message(WIRE_OPENAI, big, sizeof big, out, sizeof out), 200);
    /* cut only between characters */
    static const char u8[] = "{\"error\":{\"type\":\"t\",\"message\":\"\xc3\xa9\xc3\xa9\"}}";
    char small[7];
    assert_int_equal(wire_error_message(WIRE_OPENAI, u8, sizeof u8 - 1, small, sizeof small),
                     5);
    assert_string_equal(small, "t: \xc3\xa9");
    assert_int_equal(wire_error_message(WIRE_OPENAI, u8, sizeof u8 - 1, small, 0), 0);
    assert_int_equal(wire_error_message(WIRE_OPENAI, "", 0, out, sizeof out), 0);
    assert_string_equal(out, "");
    /* C1 controls and a lone NUL go too */
    static const char c1[] = "a\xc2\x85" "b\0c";
    wire_error_message(WIRE_OPENAI, c1, sizeof c1 - 1, out, sizeof out);
    assert_string_equal(out, "abc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sse_fields),
        cmocka_unit_test(sse_line_ends),
        cmocka_unit_test(sse_caps),
        cmocka_unit_test(sse_callback_stops),
        cmocka_unit_test(openai_text),
        cmocka_unit_test(openai_tool_calls),
        cmocka_unit_test(openai_deltas_at_once),
        cmocka_unit_test(openai_cut_and_bad),
        cmocka_unit_test(openai_caps),
        cmocka_unit_test(openai_body),
        cmocka_unit_test(anthropic_stream),
        cmocka_unit_test(anthropic_errors),
        cmocka_unit_test(anthropic_body),
        cmocka_unit_test(openai_request),
        cmocka_unit_test(anthropic_request),
        cmocka_unit_test(request_validation),
        cmocka_unit_test(embeddings),
        cmocka_unit_test(error_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
