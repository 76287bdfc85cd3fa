/* The `sim` provider: deterministic chat plans (echo, tool-call trigger, script), feature-
 * hashed embeddings and the sliding-window rate limiter, all offline and stateless. */
#include "sim.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/llmsize.h"

/* Bounds on what a hostile request can make us scan or build. */
#define SIM_MAX_CALLS 8u              /* "call NAME" triggers honoured per message */
#define SIM_TRIGGER_TRIES 1024u       /* "call " occurrences looked at per text part */
#define SIM_NAME_MAX 64u              /* a tool name, as proto/llm.proto allows */
#define SIM_ARGS_MAX (64u * 1024u)    /* {json} taken from a user message */
#define SIM_QUOTE_WORDS 8u            /* words of the user echoed back */
#define SIM_QUOTE_WORD_BYTES 32u
#define SIM_RESULT_QUOTE_BYTES 64u    /* bytes of a tool result quoted back */
#define SIM_GOT_QUOTE_BYTES 60u       /* bytes of the last message in an expect error */
#define SIM_STOPS_MAX 16u             /* stop sequences looked at (OpenAI allows 4) */
#define SIM_LATENCY_MS_MAX 3600000u   /* keeps every delay within uint32 microseconds */

static void say(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* ---- hashing: FNV-1a 64, fixed so replies match across machines ------------------------ */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_add(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Fields are length-prefixed so ("ab","c") and ("a","bc") hash apart. */
static uint64_t fnv_u64(uint64_t h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return fnv_add(h, b, sizeof b);
}

static uint64_t fnv_bin(uint64_t h, const ProtobufCBinaryData *d)
{
    h = fnv_u64(h, d->len);
    return d->len ? fnv_add(h, d->data, d->len) : h;
}

static uint64_t hash_request(const Aos__Llm__ChatRequest *req)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < req->n_messages; i++) {
        const Aos__Llm__Message *m = req->messages[i];
        if (!m)
            continue;
        h = fnv_u64(h, (uint64_t)m->role);
        for (size_t j = 0; j < m->n_content; j++)
            if (m->content[j])
                h = fnv_bin(fnv_u64(h, (uint64_t)m->content[j]->kind), &m->content[j]->text);
        for (size_t j = 0; j < m->n_tool_calls; j++)
            if (m->tool_calls[j])
                h = fnv_bin(fnv_bin(h, &m->tool_calls[j]->name), &m->tool_calls[j]->arguments);
        h = fnv_bin(h, &m->tool_call_id);
    }
    for (size_t i = 0; i < req->n_tools; i++)
        if (req->tools[i])
            h = fnv_bin(h, &req->tools[i]->name);
    return h;
}

/* The square root by Newton's method: aos_llm_sim links no libm (CMake gives it aos_static
 * only), and this converges to within an ulp for the sums of squares used here. x <= 0 (or
 * NaN) gives 0. */
static double sim_sqrt(double x)
{
    if (!(x > 0))
        return 0;
    if (x > 1.7e308)
        return x; /* infinity stays infinite */
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = (bits >> 1) + (1023ull << 51); /* halves the exponent: near the root */
    double r;
    memcpy(&r, &bits, sizeof r);
    for (int i = 0; i < 64; i++) { /* quadratic: a handful of steps, more for subnormals */
        double n = 0.5 * (r + x / r);
        if (n == r)
            break;
        r = n;
    }
    return r;
}

/* ---- small byte helpers ---------------------------------------------------------------- */

static int is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_word(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c >= 0x80;
}

/* Not tolower(): the locale must not change an embedding. */
static uint8_t ascii_lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

static int is_name(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_' || c == '-';
}

/* The largest cut <= n that does not split a UTF-8 sequence (for valid text; any bytes are
 * safe). */
static size_t utf8_cut(const uint8_t *p, size_t len, size_t n)
{
    if (n >= len)
        return len;
    size_t c = n;
    while (c > 0 && (p[c] & 0xC0) == 0x80)
        c--;
    return c;
}

static const uint8_t *find_bytes(const uint8_t *hay, size_t hl, const uint8_t *nd, size_t nl)
{
    if (nl == 0 || nl > hl)
        return NULL;
    return memmem(hay, hl, nd, nl);
}

static int bin_eq(const ProtobufCBinaryData *d, const void *p, size_t n)
{
    return d->len == n && (n == 0 || memcmp(d->data, p, n) == 0);
}

/* protobuf-c's free_unpacked frees every non-NULL bytes field, so each is its own malloc. */
static int bin_set(ProtobufCBinaryData *d, const void *p, size_t n)
{
    d->data = NULL;
    d->len = 0;
    if (n == 0)
        return 0;
    d->data = malloc(n);
    if (!d->data)
        return -1;
    memcpy(d->data, p, n);
    d->len = n;
    return 0;
}

/* A fixed buffer that silently stops at its end: the texts built in it are bounded by
 * construction, and the cap only guards against a mistake. */
typedef struct {
    char b[1024];
    size_t n;
} tbuf;

static void tb_add(tbuf *t, const void *p, size_t n)
{
    size_t room = sizeof t->b - t->n;
    if (n > room)
        n = room;
    memcpy(t->b + t->n, p, n);
    t->n += n;
}

static void tb_str(tbuf *t, const char *s)
{
    tb_add(t, s, strlen(s));
}

/* Quotes bytes with control characters and quote marks made harmless for one line. */
static void tb_quote(tbuf *t, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c < 0x20 || c == 0x7f)
            c = ' ';
        else if (c == '\'')
            c = '"';
        tb_add(t, &c, 1);
    }
}

/* The message's first TEXT part, or an empty view. */
static void first_text(const Aos__Llm__Message *m, const uint8_t **p, size_t *n)
{
    *p = (const uint8_t *)"";
    *n = 0;
    for (size_t j = 0; m && j < m->n_content; j++) {
        const Aos__Llm__ContentPart *c = m->content[j];
        if (c && c->kind == AOS__LLM__PART_KIND__TEXT && c->text.len) {
            *p = c->text.data;
            *n = c->text.len;
            return;
        }
    }
}

static int msg_contains(const Aos__Llm__Message *m, const ProtobufCBinaryData *needle)
{
    for (size_t j = 0; m && j < m->n_content; j++) {
        const Aos__Llm__ContentPart *c = m->content[j];
        if (c && c->kind == AOS__LLM__PART_KIND__TEXT &&
            find_bytes(c->text.data, c->text.len, needle->data, needle->len))
            return 1;
    }
    return 0;
}

static const Aos__Llm__Message *last_with_role(const Aos__Llm__ChatRequest *req, int r1, int r2)
{
    for (size_t i = req->n_messages; i-- > 0;) {
        const Aos__Llm__Message *m = req->messages[i];
        if (m && ((int)m->role == r1 || (int)m->role == r2))
            return m;
    }
    return NULL;
}

/* ---- the reply message ----------------------------------------------------------------- */

static Aos__Llm__Message *msg_new(void)
{
    Aos__Llm__Message *m = malloc(sizeof *m);
    if (m) {
        aos__llm__message__init(m);
        m->role = AOS__LLM__ROLE__ASSISTANT;
    }
    return m;
}

static int msg_set_text(Aos__Llm__Message *m, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    m->content = malloc(sizeof *m->content);
    if (!m->content)
        return -1;
    Aos__Llm__ContentPart *c = malloc(sizeof *c);
    if (!c)
        return -1;
    aos__llm__content_part__init(c);
    c->kind = AOS__LLM__PART_KIND__TEXT;
    m->content[0] = c;
    m->n_content = 1;
    return bin_set(&c->text, p, n);
}

/* A call id that is the same for the same conversation, call and name. */
static void make_call_id(char out[22], uint64_t seed, size_t index, const void *name, size_t nl)
{
    uint64_t h = fnv_add(fnv_u64(fnv_u64(FNV_OFFSET, seed), index), name, nl);
    snprintf(out, 22, "call_%016llx", (unsigned long long)h);
}

/* Appends a call; an empty id or arguments get the defaults. The array grows by one each
 * time: calls are few (a script's or SIM_MAX_CALLS). */
static int msg_add_call(Aos__Llm__Message *m, uint64_t seed, const void *id, size_t idl,
                        const void *name, size_t nl, const void *args, size_t al)
{
    Aos__Llm__ToolCall **v = realloc(m->tool_calls, (m->n_tool_calls + 1) * sizeof *v);
    if (!v)
        return -1;
    m->tool_calls = v;
    Aos__Llm__ToolCall *tc = malloc(sizeof *tc);
    if (!tc)
        return -1;
    aos__llm__tool_call__init(tc);
    v[m->n_tool_calls++] = tc;
    char idbuf[22];
    if (idl == 0) {
        make_call_id(idbuf, seed, m->n_tool_calls - 1, name, nl);
        id = idbuf;
        idl = strlen(idbuf);
    }
    if (al == 0) {
        args = "{}";
        al = 2;
    }
    if (bin_set(&tc->id, id, idl) || bin_set(&tc->name, name, nl) ||
        bin_set(&tc->arguments, args, al))
        return -1;
    return 0;
}

static void msg_drop_calls(Aos__Llm__Message *m)
{
    for (size_t i = 0; i < m->n_tool_calls; i++)
        aos__llm__tool_call__free_unpacked(m->tool_calls[i], NULL);
    free(m->tool_calls);
    m->tool_calls = NULL;
    m->n_tool_calls = 0;
}

/* ---- the echo-style answer ------------------------------------------------------------- */

static const char *const sim_vocab[] = {
    "the",    "model",  "answers", "quietly", "with",   "a",      "simple", "plan",
    "every",  "agent",  "reads",   "its",     "tools",  "and",    "memory", "before",
    "acting", "on",     "clear",   "steady",  "signal", "from",   "one",    "small",
    "kernel", "server", "keeps",   "records", "that",   "replay", "exactly", "here",
};
#define SIM_VOCAB_N (sizeof sim_vocab / sizeof sim_vocab[0])

/* 6 to 12 words picked by the conversation's hash, so different requests read apart. */
static void tb_sentence(tbuf *t, uint64_t seed)
{
    unsigned n = 6 + (unsigned)(seed % 7);
    for (unsigned i = 0; i < n; i++) {
        const char *w = sim_vocab[fnv_u64(seed, i) % SIM_VOCAB_N];
        if (i == 0) {
            char c = (char)(w[0] - ('a' - 'A')); /* the vocabulary is lower-case ASCII */
            tb_add(t, &c, 1);
            tb_str(t, w + 1);
        } else {
            tb_str(t, " ");
            tb_str(t, w);
        }
    }
    tb_str(t, ".");
}

/* The first words of a message's text parts, each capped, joined by one space. */
static void tb_first_words(tbuf *t, const Aos__Llm__Message *m)
{
    unsigned words = 0;
    for (size_t j = 0; m && j < m->n_content && words < SIM_QUOTE_WORDS; j++) {
        const Aos__Llm__ContentPart *c = m->content[j];
        if (!c || c->kind != AOS__LLM__PART_KIND__TEXT)
            continue;
        const uint8_t *p = c->text.data;
        size_t n = c->text.len, i = 0;
        while (i < n && words < SIM_QUOTE_WORDS) {
            while (i < n && is_space(p[i]))
                i++;
            size_t s = i;
            while (i < n && !is_space(p[i]))
                i++;
            if (i == s)
                break;
            if (words++)
                tb_str(t, " ");
            tb_quote(t, p + s, utf8_cut(p + s, i - s, SIM_QUOTE_WORD_BYTES));
        }
    }
}

static int tool_offered(const Aos__Llm__ChatRequest *req, const uint8_t *name, size_t nl)
{
    for (size_t i = 0; i < req->n_tools; i++)
        if (req->tools[i] && bin_eq(&req->tools[i]->name, name, nl))
            return 1;
    return 0;
}

/* The length of the JSON object at p (balanced braces outside strings), 0 when it is not
 * closed within SIM_ARGS_MAX. A scan, not a parser: the caller's tool checks the JSON, as
 * it would a real model's. */
static size_t json_object_len(const uint8_t *p, size_t n)
{
    if (n > SIM_ARGS_MAX)
        n = SIM_ARGS_MAX;
    size_t depth = 0;
    int in_str = 0, esc = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{') {
            depth++;
        } else if (c == '}') {
            if (depth == 0)
                return 0;
            if (--depth == 0)
                return i + 1;
        }
    }
    return 0;
}

/* Adds a call for each "call NAME [{json}]" in text naming an offered tool (and `only`, if
 * tool_choice named one). */
static int add_triggered_calls(Aos__Llm__Message *out, const Aos__Llm__ChatRequest *req,
                               const uint8_t *p, size_t n, const ProtobufCBinaryData *only,
                               uint64_t seed)
{
    static const char kw[] = "call ";
    size_t i = 0;
    unsigned tries = 0; /* a text of nothing but "call call call" stays cheap */
    while (i + sizeof kw - 1 < n && out->n_tool_calls < SIM_MAX_CALLS &&
           tries++ < SIM_TRIGGER_TRIES) {
        const uint8_t *hit = find_bytes(p + i, n - i, (const uint8_t *)kw, sizeof kw - 1);
        if (!hit)
            break;
        size_t at = (size_t)(hit - p);
        i = at + sizeof kw - 1;
        if (at > 0 && is_name(p[at - 1]))
            continue; /* "recall x" is not a trigger */
        size_t s = i;
        while (i < n && i - s <= SIM_NAME_MAX && is_name(p[i]))
            i++;
        size_t nl = i - s;
        if (nl == 0 || nl > SIM_NAME_MAX || !tool_offered(req, p + s, nl) ||
            (only && !bin_eq(only, p + s, nl)))
            continue;
        size_t j = i;
        while (j < n && is_space(p[j]))
            j++;
        const uint8_t *args = NULL;
        size_t al = 0;
        if (j < n && p[j] == '{' && (al = json_object_len(p + j, n - j)) > 0) {
            args = p + j;
            i = j + al;
        }
        if (msg_add_call(out, seed, NULL, 0, p + s, nl, args, al))
            return -1;
    }
    return 0;
}

static aos_err echo_answer(const Aos__Llm__ChatRequest *req, Aos__Llm__Message *out,
                           char *why, size_t whylen)
{
    uint64_t seed = hash_request(req);
    const Aos__Llm__Message *last = req->messages[req->n_messages - 1];
    tbuf t = {.n = 0};
    if (last && last->role == AOS__LLM__ROLE__TOOL) {
        const uint8_t *p;
        size_t n;
        first_text(last, &p, &n);
        tb_str(&t, last->is_error ? "sim: the tool failed: '" : "sim: the tool returned '");
        tb_quote(&t, p, utf8_cut(p, n, SIM_RESULT_QUOTE_BYTES));
        tb_str(&t, n > SIM_RESULT_QUOTE_BYTES ? "...'. " : "'. ");
        tb_sentence(&t, seed);
        goto text;
    }
    const Aos__Llm__Message *user = last_with_role(req, AOS__LLM__ROLE__USER, -1);
    const ProtobufCBinaryData *choice = &req->tool_choice;
    int none = bin_eq(choice, "none", 4);
    if (user && user == last && req->n_tools > 0 && !none) {
        const ProtobufCBinaryData *only = NULL;
        if (choice->len && !bin_eq(choice, "auto", 4) && !bin_eq(choice, "required", 8))
            only = choice;
        for (size_t j = 0; j < user->n_content; j++) {
            const Aos__Llm__ContentPart *c = user->content[j];
            if (c && c->kind == AOS__LLM__PART_KIND__TEXT &&
                add_triggered_calls(out, req, c->text.data, c->text.len, only, seed))
                goto nomem;
        }
        /* A forced tool choice must be obeyed even without a trigger, as real models do. */
        if (out->n_tool_calls == 0 && (only || bin_eq(choice, "required", 8))) {
            const ProtobufCBinaryData *name = only;
            for (size_t k = 0; !name && k < req->n_tools; k++)
                if (req->tools[k])
                    name = &req->tools[k]->name;
            if (name && tool_offered(req, name->data, name->len) &&
                msg_add_call(out, seed, NULL, 0, name->data, name->len, NULL, 0))
                goto nomem;
        }
        if (out->n_tool_calls)
            return AOS_OK;
    }
    if (user) {
        tb_str(&t, "sim: you said '");
        tb_first_words(&t, user);
        tb_str(&t, "'. ");
    } else {
        tb_str(&t, "sim: there is no user message. ");
    }
    tb_sentence(&t, seed);
text:
    if (msg_set_text(out, t.b, t.n))
        goto nomem;
    return AOS_OK;
nomem:
    say(why, whylen, "sim: no memory for the reply");
    return AOS_ERR_NOMEM;
}

/* ---- the scripted answer --------------------------------------------------------------- */

static aos_err script_answer(const Aos__Llm__SimSettings *cfg, const Aos__Llm__ChatRequest *req,
                             Aos__Llm__Message *out, char *why, size_t whylen)
{
    size_t turn = 0;
    for (size_t i = 0; i < req->n_messages; i++)
        if (req->messages[i] && req->messages[i]->role == AOS__LLM__ROLE__ASSISTANT)
            turn++;
    int plen = cfg->script_path.len > 200 ? 200 : (int)cfg->script_path.len;
    const char *path = plen ? (const char *)cfg->script_path.data : "inline";
    if (!plen)
        plen = 6;
    if (turn >= cfg->n_script) {
        say(why, whylen, "sim script (%.*s) has %zu turns; the conversation is at turn %zu",
            plen, path, cfg->n_script, turn + 1);
        return AOS_ERR_NOT_FOUND;
    }
    const Aos__Llm__SimTurn *st = cfg->script[turn];
    if (!st) {
        say(why, whylen, "sim script (%.*s): turn %zu is missing", plen, path, turn + 1);
        return AOS_ERR_USAGE;
    }
    if (st->expect.len) {
        const Aos__Llm__Message *m =
            last_with_role(req, AOS__LLM__ROLE__USER, AOS__LLM__ROLE__TOOL);
        if (!msg_contains(m, &st->expect)) {
            const uint8_t *p;
            size_t n;
            first_text(m, &p, &n);
            tbuf want = {.n = 0}, got = {.n = 0};
            tb_quote(&want, st->expect.data, utf8_cut(st->expect.data, st->expect.len, 200));
            tb_quote(&got, p, utf8_cut(p, n, SIM_GOT_QUOTE_BYTES));
            say(why, whylen, "sim script turn %zu expects '%.*s' in the last message; got "
                "'%.*s%s'", turn + 1, (int)want.n, want.b, (int)got.n, got.b,
                n > SIM_GOT_QUOTE_BYTES ? "..." : "");
            return AOS_ERR_CONFLICT;
        }
    }
    uint64_t seed = fnv_u64(hash_request(req), turn);
    if (msg_set_text(out, st->text.data, st->text.len))
        goto nomem;
    for (size_t i = 0; i < st->n_tool_calls; i++) {
        const Aos__Llm__ToolCall *tc = st->tool_calls[i];
        if (tc && msg_add_call(out, seed, tc->id.data, tc->id.len, tc->name.data, tc->name.len,
                               tc->arguments.data, tc->arguments.len))
            goto nomem;
    }
    return AOS_OK;
nomem:
    say(why, whylen, "sim: no memory for the reply");
    return AOS_ERR_NOMEM;
}

/* ---- the plan -------------------------------------------------------------------------- */

typedef struct {
    uint32_t delay_us;
    Aos__Llm__ChatDelta *delta;
} sim_step;

struct sim_plan {
    sim_step *steps;
    size_t n, cap;
    Aos__Llm__ChatReply *reply;
};

void sim_plan_free(sim_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        aos__llm__chat_delta__free_unpacked(p->steps[i].delta, NULL);
    free(p->steps);
    if (p->reply)
        aos__llm__chat_reply__free_unpacked(p->reply, NULL);
    free(p);
}

size_t sim_plan_steps(const sim_plan *p)
{
    return p ? p->n : 0;
}

const Aos__Llm__ChatDelta *sim_plan_delta(const sim_plan *p, size_t i, uint32_t *delay_us)
{
    if (!p || i >= p->n)
        return NULL;
    if (delay_us)
        *delay_us = p->steps[i].delay_us;
    return p->steps[i].delta;
}

const Aos__Llm__ChatReply *sim_plan_reply(const sim_plan *p)
{
    return p ? p->reply : NULL;
}

/* A new step at the end, its delta empty; NULL when out of memory. */
static Aos__Llm__ChatDelta *plan_push(sim_plan *p)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        sim_step *s = realloc(p->steps, cap * sizeof *s);
        if (!s)
            return NULL;
        p->steps = s;
        p->cap = cap;
    }
    Aos__Llm__ChatDelta *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    aos__llm__chat_delta__init(d);
    p->steps[p->n].delay_us = 0;
    p->steps[p->n++].delta = d;
    return d;
}

static Aos__Llm__ToolCallDelta *delta_call(Aos__Llm__ChatDelta *d, uint32_t index)
{
    d->tool_calls = malloc(sizeof *d->tool_calls);
    if (!d->tool_calls)
        return NULL;
    Aos__Llm__ToolCallDelta *tc = malloc(sizeof *tc);
    if (!tc)
        return NULL;
    aos__llm__tool_call_delta__init(tc);
    tc->index = index;
    d->tool_calls[0] = tc;
    d->n_tool_calls = 1;
    return tc;
}

/* The end of the token starting at i: leading spaces (only at the text's start), a run of
 * non-space bytes, and the spaces after it. */
static size_t token_end(const uint8_t *p, size_t n, size_t i)
{
    while (i < n && is_space(p[i]))
        i++;
    while (i < n && !is_space(p[i]))
        i++;
    while (i < n && is_space(p[i]))
        i++;
    return i;
}

/* Applies the stop sequences and max_tokens to the text; returns the stop reason. */
static Aos__Llm__StopReason cut_text(Aos__Llm__Message *m, const Aos__Llm__ChatRequest *req)
{
    if (m->n_content == 0)
        return m->n_tool_calls ? AOS__LLM__STOP_REASON__TOOL_USE
                               : AOS__LLM__STOP_REASON__END_TURN;
    ProtobufCBinaryData *t = &m->content[0]->text;
    Aos__Llm__StopReason why = AOS__LLM__STOP_REASON__END_TURN;
    size_t cut = t->len;
    for (size_t i = 0; i < req->n_stop && i < SIM_STOPS_MAX; i++) {
        const uint8_t *hit = find_bytes(t->data, cut, req->stop[i].data, req->stop[i].len);
        if (hit) {
            cut = (size_t)(hit - t->data);
            why = AOS__LLM__STOP_REASON__STOP_SEQUENCE;
        }
    }
    uint32_t max = req->max_tokens ? req->max_tokens : SIM_DEFAULT_TOKENS;
    if (max > SIM_MAX_TOKENS)
        max = SIM_MAX_TOKENS;
    size_t i = 0;
    for (uint32_t k = 0; k < max && i < cut; k++)
        i = token_end(t->data, cut, i);
    if (i < cut) {
        cut = i;
        why = AOS__LLM__STOP_REASON__MAX_TOKENS;
    }
    t->len = cut; /* the bytes past len stay in the same malloc, freed with it */
    if (why != AOS__LLM__STOP_REASON__END_TURN)
        msg_drop_calls(m); /* a cut answer never reaches its tool calls */
    else if (m->n_tool_calls)
        why = AOS__LLM__STOP_REASON__TOOL_USE;
    if (cut == 0) {
        aos__llm__content_part__free_unpacked(m->content[0], NULL);
        free(m->content);
        m->content = NULL;
        m->n_content = 0;
    }
    return why;
}

/* Fills the plan's steps from the answer; returns the output tokens, or -1 (no memory). */
static int64_t plan_steps(sim_plan *p, const Aos__Llm__Message *m)
{
    int64_t out = 0;
    if (m->n_content) {
        const ProtobufCBinaryData *t = &m->content[0]->text;
        for (size_t i = 0, e; i < t->len; i = e) {
            e = token_end(t->data, t->len, i);
            Aos__Llm__ChatDelta *d = plan_push(p);
            if (!d || bin_set(&d->text, t->data + i, e - i))
                return -1;
            out++;
        }
    }
    for (size_t c = 0; c < m->n_tool_calls; c++) {
        const Aos__Llm__ToolCall *tc = m->tool_calls[c];
        Aos__Llm__ChatDelta *d = plan_push(p);
        Aos__Llm__ToolCallDelta *td = d ? delta_call(d, (uint32_t)c) : NULL;
        if (!td || bin_set(&td->id, tc->id.data, tc->id.len) ||
            bin_set(&td->name, tc->name.data, tc->name.len))
            return -1;
        const uint8_t *a = tc->arguments.data;
        size_t al = tc->arguments.len, step = (al + SIM_ARG_FRAGMENTS - 1) / SIM_ARG_FRAGMENTS;
        for (size_t i = 0; i < al;) {
            size_t e = i + step >= al ? al : i + step;
            while (e < al && (a[e] & 0xC0) == 0x80)
                e++;
            d = plan_push(p);
            td = d ? delta_call(d, (uint32_t)c) : NULL;
            if (!td || bin_set(&td->arguments, a + i, e - i))
                return -1;
            i = e;
        }
        out += (int64_t)((tc->name.len + al + 3) / 4);
    }
    return out;
}

/* Step k (from 0) is due at latency + k/tps; each delay is the gap to the previous one, so
 * rounding never accumulates. */
static void plan_pace(sim_plan *p, const Aos__Llm__SimSettings *cfg)
{
    uint64_t lat = cfg->latency_ms > SIM_LATENCY_MS_MAX ? SIM_LATENCY_MS_MAX : cfg->latency_ms;
    lat *= 1000;
    uint64_t prev = 0;
    for (size_t k = 0; k < p->n; k++) {
        uint64_t at = lat + (cfg->tokens_per_s ? (uint64_t)k * 1000000u / cfg->tokens_per_s : 0);
        p->steps[k].delay_us = (uint32_t)(at - prev);
        prev = at;
    }
}

static void usage_in(const Aos__Llm__ChatRequest *req, Aos__Llm__Usage *u)
{
    uint64_t tools = 0, prefix, all;
    for (size_t i = 0; i < req->n_tools; i++)
        tools += aos_llm_tool_bytes(req->tools[i]);
    size_t bp = req->cache_breakpoint < req->n_messages ? req->cache_breakpoint
                                                        : req->n_messages;
    prefix = tools;
    for (size_t i = 0; i < bp; i++)
        prefix += aos_llm_msg_bytes(req->messages[i]);
    all = prefix;
    for (size_t i = bp; i < req->n_messages; i++)
        all += aos_llm_msg_bytes(req->messages[i]);
    uint64_t all_t = aos_llm_tokens(all), prefix_t = aos_llm_tokens(prefix);
    if (req->cache_breakpoint > 0 && prefix_t >= SIM_CACHE_MIN_TOKENS) {
        u->cache_read_tokens = prefix_t;
        u->input_tokens = all_t - prefix_t;
    } else {
        u->input_tokens = all_t;
    }
}

aos_err sim_chat(const Aos__Llm__SimSettings *cfg, const Aos__Llm__ChatRequest *req,
                 sim_plan **out, char *why, size_t whylen)
{
    static const Aos__Llm__SimSettings defaults = AOS__LLM__SIM_SETTINGS__INIT;
    aos_err e = AOS_ERR_NOMEM;
    *out = NULL;
    if (!cfg)
        cfg = &defaults;
    if (!req || req->n_messages == 0) {
        say(why, whylen, "sim: the request has no messages");
        return AOS_ERR_USAGE;
    }
    sim_plan *p = calloc(1, sizeof *p);
    if (!p)
        goto nomem;
    p->reply = malloc(sizeof *p->reply);
    if (!p->reply)
        goto nomem;
    aos__llm__chat_reply__init(p->reply);
    p->reply->usage = malloc(sizeof *p->reply->usage);
    if (!p->reply->usage)
        goto nomem;
    aos__llm__usage__init(p->reply->usage);
    p->reply->message = msg_new();
    if (!p->reply->message)
        goto nomem;
    e = cfg->n_script ? script_answer(cfg, req, p->reply->message, why, whylen)
                      : echo_answer(req, p->reply->message, why, whylen);
    if (e != AOS_OK)
        goto fail;
    p->reply->stop_reason = cut_text(p->reply->message, req);
    int64_t toks = plan_steps(p, p->reply->message);
    if (toks < 0)
        goto nomem;
    plan_pace(p, cfg);
    usage_in(req, p->reply->usage);
    p->reply->usage->output_tokens = (uint64_t)toks;
    *out = p;
    return AOS_OK;
nomem:
    e = AOS_ERR_NOMEM;
    say(why, whylen, "sim: no memory for the reply");
fail:
    sim_plan_free(p);
    return e;
}

/* ---- embeddings ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *w; /* the word as written in cfg (NULL: empty slot) */
    size_t wl;
    uint64_t h;       /* its hash */
    uint64_t canon;   /* the hash of its group's first word */
} syn_slot;

typedef struct {
    syn_slot *slot;
    size_t mask;
} syn_table;

static uint64_t word_hash(const uint8_t *p, size_t n)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++) {
        h ^= ascii_lower(p[i]);
        h *= FNV_PRIME;
    }
    return h;
}

static int word_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return 0;
    }
    return 1;
}

/* Calls fn on each word of p, stopping when it returns nonzero. */
static int each_word(const uint8_t *p, size_t n, int (*fn)(void *, const uint8_t *, size_t),
                     void *ctx)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && !is_word(p[i]))
            i++;
        size_t s = i;
        while (i < n && is_word(p[i]))
            i++;
        if (i > s) {
            int r = fn(ctx, p + s, i - s);
            if (r)
                return r;
        }
    }
    return 0;
}

static int count_word(void *ctx, const uint8_t *w, size_t n)
{
    (void)w;
    (void)n;
    size_t *c = ctx;
    return ++*c > SIM_SYNONYM_MAX_WORDS;
}

static syn_slot *syn_find(const syn_table *t, const uint8_t *w, size_t n, uint64_t h)
{
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        syn_slot *s = &t->slot[i];
        if (!s->w || (s->h == h && s->wl == n && word_eq(s->w, w, n)))
            return s;
    }
}

typedef struct {
    syn_table *t;
    int first;
    uint64_t canon;
} syn_fill;

static int syn_insert(void *ctx, const uint8_t *w, size_t n)
{
    syn_fill *f = ctx;
    uint64_t h = word_hash(w, n);
    if (f->first) {
        f->canon = h;
        f->first = 0;
    }
    syn_slot *s = syn_find(f->t, w, n, h);
    if (!s->w) { /* a word in two groups keeps its first group */
        s->w = w;
        s->wl = n;
        s->h = h;
        s->canon = f->canon;
    }
    return 0;
}

static aos_err syn_build(const Aos__Llm__SimSettings *cfg, syn_table *t, char *why,
                         size_t whylen)
{
    size_t words = 0;
    t->slot = NULL;
    t->mask = 0;
    for (size_t i = 0; i < cfg->n_synonyms; i++)
        if (each_word(cfg->synonyms[i].data, cfg->synonyms[i].len, count_word, &words)) {
            say(why, whylen, "sim synonyms: more than %u words", SIM_SYNONYM_MAX_WORDS);
            return AOS_ERR_USAGE;
        }
    if (words == 0)
        return AOS_OK;
    size_t cap = 16;
    while (cap < 2 * words) /* at most half full, so probes stay short and end */
        cap *= 2;
    t->slot = calloc(cap, sizeof *t->slot);
    if (!t->slot) {
        say(why, whylen, "sim: no memory for %zu synonyms", words);
        return AOS_ERR_NOMEM;
    }
    t->mask = cap - 1;
    for (size_t i = 0; i < cfg->n_synonyms; i++) {
        syn_fill f = {.t = t, .first = 1, .canon = 0};
        each_word(cfg->synonyms[i].data, cfg->synonyms[i].len, syn_insert, &f);
    }
    return AOS_OK;
}

typedef struct {
    const syn_table *syn;
    float *v;
    uint32_t dim;
    uint64_t words;
} embed_ctx;

static int embed_word(void *ctx, const uint8_t *w, size_t n)
{
    embed_ctx *e = ctx;
    uint64_t h = word_hash(w, n);
    if (e->syn->slot) {
        const syn_slot *s = syn_find(e->syn, w, n, h);
        if (s->w)
            h = s->canon;
    }
    e->v[(uint32_t)h % e->dim] += (h >> 63) ? -1.0f : 1.0f;
    e->words++;
    return 0;
}

void sim_embed_free(Aos__Llm__EmbedReply *r)
{
    if (r)
        aos__llm__embed_reply__free_unpacked(r, NULL);
}

aos_err sim_embed(const Aos__Llm__SimSettings *cfg, const Aos__Llm__EmbedRequest *req,
                  Aos__Llm__EmbedReply **out, char *why, size_t whylen)
{
    static const Aos__Llm__SimSettings defaults = AOS__LLM__SIM_SETTINGS__INIT;
    Aos__Llm__EmbedReply *r = NULL;
    syn_table syn = {NULL, 0};
    aos_err e;
    *out = NULL;
    if (!cfg)
        cfg = &defaults;
    uint32_t dim = cfg->embed_dim ? cfg->embed_dim : SIM_EMBED_DIM_DEFAULT;
    if (dim > SIM_EMBED_DIM_MAX) {
        say(why, whylen, "sim embed_dim %u is above the maximum %u", dim, SIM_EMBED_DIM_MAX);
        return AOS_ERR_USAGE;
    }
    if (!req || req->n_inputs == 0) {
        say(why, whylen, "sim embed: no inputs");
        return AOS_ERR_USAGE;
    }
    if (req->n_inputs > SIM_EMBED_MAX_INPUTS) {
        say(why, whylen, "sim embed: %zu inputs, at most %u", req->n_inputs,
            SIM_EMBED_MAX_INPUTS);
        return AOS_ERR_TOO_BIG;
    }
    for (size_t i = 0; i < req->n_inputs; i++)
        if (req->inputs[i].len > SIM_EMBED_MAX_INPUT_BYTES) {
            say(why, whylen, "sim embed: input %zu has %zu bytes, at most %u", i,
                req->inputs[i].len, SIM_EMBED_MAX_INPUT_BYTES);
            return AOS_ERR_TOO_BIG;
        }
    if ((e = syn_build(cfg, &syn, why, whylen)) != AOS_OK)
        return e;
    e = AOS_ERR_NOMEM;
    r = malloc(sizeof *r);
    if (!r)
        goto nomem;
    aos__llm__embed_reply__init(r);
    r->dim = dim;
    r->usage = malloc(sizeof *r->usage);
    r->vectors = calloc(req->n_inputs, sizeof *r->vectors);
    if (!r->usage || !r->vectors)
        goto nomem;
    aos__llm__usage__init(r->usage);
    embed_ctx ec = {.syn = &syn, .dim = dim, .words = 0};
    for (size_t i = 0; i < req->n_inputs; i++) {
        Aos__Llm__Embedding *v = malloc(sizeof *v);
        if (!v)
            goto nomem;
        aos__llm__embedding__init(v);
        r->vectors[r->n_vectors++] = v;
        v->values = calloc(dim, sizeof *v->values);
        if (!v->values)
            goto nomem;
        v->n_values = dim;
        ec.v = v->values;
        each_word(req->inputs[i].data, req->inputs[i].len, embed_word, &ec);
        double ss = 0;
        for (uint32_t k = 0; k < dim; k++)
            ss += (double)v->values[k] * v->values[k];
        if (ss > 0) {
            double inv = 1.0 / sim_sqrt(ss);
            for (uint32_t k = 0; k < dim; k++)
                v->values[k] = (float)(v->values[k] * inv);
        }
    }
    r->usage->input_tokens = ec.words;
    free(syn.slot);
    *out = r;
    return AOS_OK;
nomem:
    say(why, whylen, "sim embed: no memory for %zu vectors of %u", req->n_inputs, dim);
    free(syn.slot);
    sim_embed_free(r);
    return e;
}

float sim_cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa <= 0 || bb <= 0)
        return 0.0f;
    return (float)(ab / (sim_sqrt(aa) * sim_sqrt(bb)));
}

/* ---- rate limits ----------------------------------------------------------------------- */

#define SIM_WINDOW_S 60u

typedef struct {
    uint64_t sec; /* the second this bucket counts; stale when outside the window */
    uint64_t requests;
    uint64_t tokens;
} sim_bucket;

struct sim_limiter {
    pthread_mutex_t mu;
    uint32_t max_concurrency, requests_per_min, tokens_per_min;
    sim_bucket b[SIM_WINDOW_S];
    uint64_t last_ms;
    sim_counts st;
};

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

sim_limiter *sim_limiter_new(const Aos__Llm__Limits *l)
{
    sim_limiter *lim = calloc(1, sizeof *lim);
    if (!lim)
        return NULL;
    if (pthread_mutex_init(&lim->mu, NULL) != 0) {
        free(lim);
        return NULL;
    }
    if (l) {
        lim->max_concurrency = l->max_concurrency;
        lim->requests_per_min = l->requests_per_min;
        lim->tokens_per_min = l->tokens_per_min;
    }
    return lim;
}

void sim_limiter_free(sim_limiter *lim)
{
    if (!lim)
        return;
    pthread_mutex_destroy(&lim->mu);
    free(lim);
}

/* The wait until the oldest buckets of the window, holding at least `need` requests (or
 * tokens), have slid out: visited oldest first, the one that completes `need` decides. */
static uint64_t wait_for(const sim_limiter *lim, uint64_t now_ms, uint64_t need, int tokens)
{
    uint64_t now_s = now_ms / 1000, got = 0;
    for (uint64_t k = SIM_WINDOW_S; k-- > 0;) {
        if (k > now_s)
            continue;
        const sim_bucket *b = &lim->b[(now_s - k) % SIM_WINDOW_S];
        if (b->sec != now_s - k)
            continue;
        got = sat_add(got, tokens ? b->tokens : b->requests);
        if (got >= need)
            return (b->sec + SIM_WINDOW_S) * 1000 - now_ms;
    }
    return SIM_WINDOW_S * 1000; /* not reached while need <= the window's sum */
}

int sim_admit(sim_limiter *lim, uint64_t now_ms, uint64_t tokens, uint64_t *retry_after_ms)
{
    uint64_t wait = 0;
    int refuse = 0;
    pthread_mutex_lock(&lim->mu);
    if (now_ms < lim->last_ms)
        now_ms = lim->last_ms;
    lim->last_ms = now_ms;
    uint64_t now_s = now_ms / 1000, reqs = 0, toks = 0;
    for (uint64_t k = 0; k < SIM_WINDOW_S && k <= now_s; k++) {
        const sim_bucket *b = &lim->b[(now_s - k) % SIM_WINDOW_S];
        if (b->sec == now_s - k) {
            reqs = sat_add(reqs, b->requests);
            toks = sat_add(toks, b->tokens);
        }
    }
    if (lim->max_concurrency && lim->st.in_flight >= lim->max_concurrency) {
        refuse = 1;
        wait = SIM_CONCURRENCY_RETRY_MS;
    }
    if (lim->requests_per_min && reqs >= lim->requests_per_min) {
        uint64_t w = wait_for(lim, now_ms, reqs + 1 - lim->requests_per_min, 0);
        refuse = 1;
        wait = w > wait ? w : wait;
    }
    if (lim->tokens_per_min && toks > 0) {
        uint64_t need = 0;
        if (tokens > lim->tokens_per_min)
            need = toks;
        else if (sat_add(toks, tokens) > lim->tokens_per_min)
            need = toks + tokens - lim->tokens_per_min;
        if (need) {
            uint64_t w = wait_for(lim, now_ms, need, 1);
            refuse = 1;
            wait = w > wait ? w : wait;
        }
    }
    sim_bucket *b = &lim->b[now_s % SIM_WINDOW_S];
    if (b->sec != now_s)
        *b = (sim_bucket){.sec = now_s, .requests = 0, .tokens = 0};
    /* a refused request counts in the minute's requests too, as OpenAI's rate-limit guide
     * says of its own ("unsuccessful requests contribute to your per-minute limit, so
     * continuously resending a request won't work"): clients retrying in a storm use up
     * the limit they are waiting for */
    b->requests++;
    if (refuse) {
        lim->st.refused++;
    } else {
        b->tokens = sat_add(b->tokens, tokens);
        lim->st.admitted++;
        lim->st.tokens = sat_add(lim->st.tokens, tokens);
        lim->st.in_flight++;
    }
    pthread_mutex_unlock(&lim->mu);
    if (retry_after_ms)
        *retry_after_ms = refuse ? wait : 0;
    return refuse ? 429 : 0;
}

void sim_release(sim_limiter *lim)
{
    pthread_mutex_lock(&lim->mu);
    if (lim->st.in_flight > 0)
        lim->st.in_flight--;
    pthread_mutex_unlock(&lim->mu);
}

void sim_limiter_counts(sim_limiter *lim, sim_counts *out)
{
    pthread_mutex_lock(&lim->mu);
    *out = lim->st;
    pthread_mutex_unlock(&lim->mu);
}
