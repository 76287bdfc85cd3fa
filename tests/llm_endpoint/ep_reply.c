/* The test LLM endpoint's answers: request parsing, the directive, and the OpenAI and
 * Anthropic bodies and SSE events, rendered lazily one event at a time to bound memory. */
#include "ep_reply.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SEGS 10000u          /* text deltas of one reply */
#define MAX_TOOLS 64u
#define MAX_EMBED_VALUES (1u << 20)
#define PIECE_MAX 65536u         /* filler bytes per piece of a big= reply */
#define OUT_MAX ((size_t)64 << 20)
/* Raw bytes badutf8=1 puts in the text: a lead byte whose continuation is missing, and
 * bytes that never occur in UTF-8. */
#define BAD_BYTES "\xc3(\xff\xfe"
/* The text a placeholder control character becomes once jansson has escaped it. */
#define MARK "\\u0001"

enum ev_kind {
    EV_HEAD, EV_BODY, EV_BIG, EV_END,
    OA_ROLE, OA_TEXT, OA_TOOL_START, OA_TOOL_ARG, OA_FINISH, OA_USAGE, OA_DONE, OA_PING,
    OA_MALFORMED, OA_ERROR,
    AN_MSG_START, AN_TEXT_START, AN_TEXT, AN_BLOCK_STOP, AN_TOOL_START, AN_TOOL_ARG,
    AN_MSG_DELTA, AN_MSG_STOP, AN_PING, AN_MALFORMED, AN_ERROR,
};

typedef struct {
    uint8_t kind;
    uint8_t is_delta;
    uint16_t blk;    /* Anthropic content block index */
    uint32_t a;      /* text segment or tool number */
    uint32_t b;      /* byte of the tool's arguments */
    uint32_t at;     /* ms after the reply started */
} ep_ev;

typedef struct {
    uint32_t off, len;
    uint8_t lead;    /* a space before the text (repeated text= words) */
    uint8_t bad;     /* badutf8: raw invalid bytes after the text */
} ep_seg;

typedef struct {
    char id[48];
    char name[65];
    char *args;      /* JSON text of the arguments */
    size_t len;
} ep_tool;

struct ep_reply {
    ep_dialect dia;
    int is_chat;
    int stream;
    int chunked;
    int include_usage;
    int split, crlf, badutf8;
    int cut;
    long long retry_after_ms;    /* retry-after-ms header; -1: none */
    char id[48];
    char *model;
    long long created;
    ep_usage usage;
    int stop_tools;          /* finish by tool calls */
    ep_buf text;             /* bytes the segments point into */
    ep_seg *segs;
    uint32_t nsegs;
    ep_tool tools[MAX_TOOLS];
    uint32_t ntools;
    ep_buf head;             /* the HTTP head */
    ep_buf body;             /* a non-stream body */
    ep_ev *ev;
    size_t nev, capev, iev;
    uint64_t big;            /* big= total */
    /* the event being written */
    ep_buf cur;
    size_t cur_off;
    ep_ev cur_ev;
    size_t cuts[8];
    int ncuts, icut;
    uint64_t big_left;
    uint32_t deltas_sent;
    int closing;
};

uint64_t ep_hash(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static uint64_t count_words(const char *s, size_t n)
{
    uint64_t w = 0;
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        int ws = is_ws((unsigned char)s[i]);
        if (!ws && !in)
            w++;
        in = !ws;
    }
    return w;
}

/* ---------------------------------------------------------------- the directive */

static int parse_num(const char *v, uint64_t max, uint64_t *out)
{
    if (!*v || strlen(v) > 20)
        return -1;
    uint64_t x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (x > (UINT64_MAX - 9) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    if (x > max)
        return -1;
    *out = x;
    return 0;
}

static void directive_defaults(ep_directive *d)
{
    memset(d, 0, sizeof *d);
    d->retry_after = -1;
    d->cut = -1;
}

enum { NUM_UNSIGNED, NUM_INT, NUM_U64 };

/* The numeric keys: range, and the field (of the type) the value goes to. */
#define NUM(key, min, max, field, type) {key, min, max, offsetof(ep_directive, field), type}
static const struct {
    const char *key;
    uint64_t min, max;
    size_t off;
    int type;
} nums[] = {
    NUM("chunks", 0, MAX_SEGS, chunks, NUM_UNSIGNED),
    NUM("gap_ms", 0, 600000, gap_ms, NUM_UNSIGNED),
    NUM("first_ms", 0, 600000, first_ms, NUM_UNSIGNED),
    NUM("spread_ms", 0, 600000, spread_ms, NUM_UNSIGNED),
    NUM("tools", 0, MAX_TOOLS, tools, NUM_UNSIGNED),
    NUM("crlf", 0, 1, crlf, NUM_INT),
    NUM("status", 400, 599, status, NUM_INT),
    NUM("count", 0, 1000000, count, NUM_UNSIGNED),
    NUM("retry_after", 0, 86400, retry_after, NUM_INT),
    NUM("cut", 0, MAX_SEGS, cut, NUM_INT),
    NUM("hang", 0, 1, hang, NUM_INT),
    NUM("malformed", 0, 1, malformed, NUM_INT),
    NUM("big", 0, (uint64_t)1 << 40, big, NUM_U64),
    NUM("badutf8", 0, 1, badutf8, NUM_INT),
    NUM("cached", 0, 1000000000, cached, NUM_U64),
    NUM("cache_write", 0, 1000000000, cache_write, NUM_U64),
    NUM("ping", 0, 1, ping, NUM_INT),
    NUM("error_mid", 0, 1, error_mid, NUM_INT),
};
#undef NUM

/* One key=value; returns nonzero (with why) for an unknown key or a bad value. */
static int directive_kv(ep_directive *d, const char *k, const char *v, char *why,
                        size_t whylen)
{
    uint64_t x = 0;
    if (strcmp(k, "text") == 0) {
        size_t n = strlen(v);
        if (n == 0 || n >= sizeof d->text) {
            snprintf(why, whylen, "directive text= must be 1..64 bytes");
            return -1;
        }
        memcpy(d->text, v, n + 1);
        d->has_text = 1;
        return 0;
    }
    if (strcmp(k, "split") == 0) {
        if (strcmp(v, "line") == 0)
            d->split = EP_SPLIT_LINE;
        else if (strcmp(v, "mid") == 0)
            d->split = EP_SPLIT_MID;
        else if (strcmp(v, "byte") == 0)
            d->split = EP_SPLIT_BYTE;
        else {
            snprintf(why, whylen, "directive split= takes line, mid or byte");
            return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(k, nums[i].key) != 0)
            continue;
        if (parse_num(v, nums[i].max, &x) != 0) {
            snprintf(why, whylen, "directive %.32s= takes a number 0..%llu", k,
                     (unsigned long long)nums[i].max);
            return -1;
        }
        if (x < nums[i].min) {
            snprintf(why, whylen, "directive %.32s= takes %llu..%llu", k,
                     (unsigned long long)nums[i].min, (unsigned long long)nums[i].max);
            return -1;
        }
        char *f = (char *)d + nums[i].off;
        if (nums[i].type == NUM_UNSIGNED)
            *(unsigned *)f = (unsigned)x;
        else if (nums[i].type == NUM_INT)
            *(int *)f = (int)x;
        else
            *(uint64_t *)f = x;
        if (strcmp(k, "chunks") == 0)
            d->has_chunks = 1;
        else if (strcmp(k, "first_ms") == 0)
            d->has_first_ms = 1;
        else if (strcmp(k, "gap_ms") == 0 || strcmp(k, "spread_ms") == 0)
            d->has_gap_ms = 1;
        return 0;
    }
    snprintf(why, whylen, "unknown directive key %.40s", k);
    return -1;
}

/* Finds [[...]] in text and applies its keys; *raw (malloc'd) is the inside, NULL when
 * the text has no directive. */
static aos_err directive_parse(const char *text, size_t n, ep_directive *d, char **raw,
                               char *why, size_t whylen)
{
    *raw = NULL;
    const char *s = memmem(text, n, "[[", 2);
    if (!s)
        return AOS_OK;
    s += 2;
    const char *e = memmem(s, n - (size_t)(s - text), "]]", 2);
    if (!e) {
        snprintf(why, whylen, "directive [[ without ]]");
        return AOS_ERR_USAGE;
    }
    size_t len = (size_t)(e - s);
    if (len > 1024) {
        snprintf(why, whylen, "directive over 1024 bytes");
        return AOS_ERR_USAGE;
    }
    if (memchr(s, '\0', len)) {
        snprintf(why, whylen, "NUL in the directive");
        return AOS_ERR_USAGE;
    }
    *raw = strndup(s, len);
    char *copy = strndup(s, len);
    if (!*raw || !copy) {
        free(copy);
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    aos_err err = AOS_OK;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t\r\n", &save); tok;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            snprintf(why, whylen, "directive token %.40s is not key=value", tok);
            err = AOS_ERR_USAGE;
            break;
        }
        *eq = '\0';
        if (directive_kv(d, tok, eq + 1, why, whylen) != 0) {
            err = AOS_ERR_USAGE;
            break;
        }
    }
    free(copy);
    return err;
}

/* ---------------------------------------------------------------- requests */

/* Text of a message's content (string, or text parts of an array) appended to out, its
 * words added to *words; tool results inside are flagged. */
static aos_err content_text(json_t *c, ep_buf *out, int *has_text, int *has_tool_result,
                            uint64_t *words)
{
    if (json_is_string(c)) {
        const char *s = json_string_value(c);
        size_t n = json_string_length(c);
        *words += count_words(s, n);
        *has_text = 1;
        return out ? ep_buf_add(out, s, n, EP_BODY_MAX) : AOS_OK;
    }
    if (!json_is_array(c))
        return AOS_OK;
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *t = json_object_get(part, "text");
        if (type && strcmp(type, "tool_result") == 0) {
            *has_tool_result = 1;
            int ht = 0, htr = 0;
            aos_err e = content_text(json_object_get(part, "content"), NULL, &ht, &htr, words);
            if (e != AOS_OK)
                return e;
        } else if (json_is_string(t)) {
            const char *s = json_string_value(t);
            size_t n = json_string_length(t);
            *words += count_words(s, n);
            if (out && *has_text && ep_buf_add(out, "\n", 1, EP_BODY_MAX) != AOS_OK)
                return AOS_ERR_NOMEM;
            *has_text = 1;
            if (out && ep_buf_add(out, s, n, EP_BODY_MAX) != AOS_OK)
                return AOS_ERR_NOMEM;
        }
    }
    return AOS_OK;
}

static aos_err bad(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return AOS_ERR_PROTO;
}

static aos_err parse_messages(ep_ask *a, json_t *msgs, char *why, size_t whylen)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(why, whylen, a->dialect == EP_ANTHROPIC
                                    ? "messages: Field required (a non-empty array)"
                                    : "'messages' must be a non-empty array");
    ep_buf cur = {0}, last = {0};
    long last_user = -1, last_tool = -1;
    aos_err e = AOS_OK;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role) {
            e = bad(why, whylen, "messages: each message needs a role");
            goto out;
        }
        int user = strcmp(role, "user") == 0;
        a->turns += strcmp(role, "assistant") == 0;
        int ok = user || strcmp(role, "assistant") == 0;
        if (a->dialect == EP_OPENAI)
            ok = ok || strcmp(role, "system") == 0 || strcmp(role, "developer") == 0 ||
                 strcmp(role, "tool") == 0;
        if (!ok) {
            snprintf(why, whylen, "messages.%zu.role: unexpected role \"%.32s\"", i, role);
            e = AOS_ERR_PROTO;
            goto out;
        }
        json_t *c = json_object_get(m, "content");
        if (a->dialect == EP_ANTHROPIC && !json_is_string(c) && !json_is_array(c)) {
            snprintf(why, whylen, "messages.%zu.content: Field required", i);
            e = AOS_ERR_PROTO;
            goto out;
        }
        int has_text = 0, has_tr = strcmp(role, "tool") == 0;
        cur.len = 0;
        e = content_text(c, user ? &cur : NULL, &has_text, &has_tr, &a->words);
        if (e != AOS_OK) {
            snprintf(why, whylen, "out of memory");
            goto out;
        }
        if (has_tr)
            last_tool = (long)i;
        if (user && has_text) {
            last_user = (long)i;
            ep_buf t = last;
            last = cur;
            cur = t;
        }
    }
    if (last_user >= 0) {
        a->text = malloc(last.len + 1);
        if (!a->text) {
            e = AOS_ERR_NOMEM;
            goto out;
        }
        if (last.len)
            memcpy(a->text, last.p, last.len);
        a->text[last.len] = '\0';
        a->text_len = last.len;
        a->tools_done = last_tool >= last_user;
    }
out:
    ep_buf_free(&cur);
    ep_buf_free(&last);
    return e;
}

static aos_err parse_embed(ep_ask *a, json_t *root, char *why, size_t whylen)
{
    json_t *in = json_object_get(root, "input");
    if (json_is_string(in)) {
        a->words = count_words(json_string_value(in), json_string_length(in));
    } else if (json_is_array(in) && json_array_size(in) > 0 && json_array_size(in) <= 2048) {
        size_t i;
        json_t *v;
        json_array_foreach(in, i, v) {
            if (!json_is_string(v))
                return bad(why, whylen, "input: the test endpoint takes strings only");
            a->words += count_words(json_string_value(v), json_string_length(v));
        }
    } else {
        return bad(why, whylen, "input: a string or an array of 1..2048 strings");
    }
    json_t *first = json_is_string(in) ? in : json_array_get(in, 0);
    a->text_len = json_string_length(first);
    a->text = strndup(json_string_value(first), a->text_len);
    if (!a->text)
        return AOS_ERR_NOMEM;
    json_t *dims = json_object_get(root, "dimensions");
    if (dims && (!json_is_integer(dims) || json_integer_value(dims) < 1 ||
                 json_integer_value(dims) > 4096))
        return bad(why, whylen, "dimensions: an integer 1..4096");
    size_t n = json_is_string(in) ? 1 : json_array_size(in);
    size_t dim = dims ? (size_t)json_integer_value(dims) : 8;
    if (n * dim > MAX_EMBED_VALUES)
        return bad(why, whylen, "inputs x dimensions over 2^20 values");
    return AOS_OK;
}

aos_err ep_ask_parse(ep_dialect dia, ep_kind kind, const char *body, size_t len, ep_ask *a,
                     char *why, size_t whylen)
{
    memset(a, 0, sizeof *a);
    a->dialect = dia;
    a->kind = kind;
    directive_defaults(&a->d);
    json_error_t je;
    a->root = json_loadb(body, len, 0, &je);
    if (!a->root) {
        snprintf(why, whylen, "the body is not valid JSON: %s (at byte %d)", je.text,
                 je.position);
        return AOS_ERR_PROTO;
    }
    if (!json_is_object(a->root))
        return bad(why, whylen, "the body is not a JSON object");
    json_t *model = json_object_get(a->root, "model");
    if (json_is_string(model)) {
        a->model = strndup(json_string_value(model), json_string_length(model));
        if (!a->model)
            return AOS_ERR_NOMEM;
    }
    json_t *stream = json_object_get(a->root, "stream");
    if (stream && !json_is_boolean(stream) && !json_is_null(stream))
        return bad(why, whylen, "stream: must be a boolean");
    a->stream = json_is_true(stream);
    if (!a->model || !*a->model)
        return bad(why, whylen, "model: Field required");
    aos_err e;
    if (kind == EP_EMBED) {
        e = parse_embed(a, a->root, why, whylen);
    } else {
        if (dia == EP_OPENAI) {
            json_t *so = json_object_get(a->root, "stream_options");
            a->include_usage = json_is_true(json_object_get(so, "include_usage"));
        } else {
            json_t *mt = json_object_get(a->root, "max_tokens");
            if (!json_is_integer(mt) || json_integer_value(mt) < 1)
                return bad(why, whylen, "max_tokens: Field required (a positive integer)");
            json_t *sys = json_object_get(a->root, "system");
            if (sys && !json_is_string(sys) && !json_is_array(sys))
                return bad(why, whylen, "system: a string or an array of text blocks");
            int ht = 0, htr = 0;
            e = content_text(sys, NULL, &ht, &htr, &a->words);
            if (e != AOS_OK)
                return e;
        }
        e = parse_messages(a, json_object_get(a->root, "messages"), why, whylen);
    }
    if (e != AOS_OK)
        return e;
    if (a->text)
        e = directive_parse(a->text, a->text_len, &a->d, &a->directive, why, whylen);
    return e;
}

void ep_ask_clear(ep_ask *a)
{
    free(a->model);
    free(a->directive);
    free(a->text);
    json_decref(a->root);
    memset(a, 0, sizeof *a);
}

/* ---------------------------------------------------------------- building replies */

static const char *reason(int st)
{
    switch (st) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Overloaded";
    default: return st < 500 ? "Client Error" : "Server Error";
    }
}

static ep_reply *reply_new(ep_dialect dia, const ep_ctx *ctx, const char *model)
{
    ep_reply *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->dia = dia;
    r->cut = -1;
    r->retry_after_ms = -1;
    r->created = (long long)time(NULL);
    snprintf(r->id, sizeof r->id, dia == EP_ANTHROPIC ? "msg_aos%06llu" : "chatcmpl-aos%06llu",
             (unsigned long long)ctx->seq);
    r->model = strdup(model ? model : "aos-test-1");
    if (!r->model) {
        free(r);
        return NULL;
    }
    return r;
}

void ep_reply_free(ep_reply *r)
{
    if (!r)
        return;
    free(r->model);
    ep_buf_free(&r->text);
    free(r->segs);
    for (uint32_t i = 0; i < r->ntools; i++)
        free(r->tools[i].args);
    ep_buf_free(&r->head);
    ep_buf_free(&r->body);
    free(r->ev);
    ep_buf_free(&r->cur);
    free(r);
}

static aos_err add_ev(ep_reply *r, int kind, int is_delta, unsigned blk, uint32_t a,
                      uint32_t b, uint32_t at)
{
    if (r->nev == r->capev) {
        size_t cap = r->capev ? r->capev * 2 : 32;
        ep_ev *p = realloc(r->ev, cap * sizeof *p);
        if (!p)
            return AOS_ERR_NOMEM;
        r->ev = p;
        r->capev = cap;
    }
    r->ev[r->nev++] = (ep_ev){(uint8_t)kind, (uint8_t)is_delta, (uint16_t)blk, a, b, at};
    return AOS_OK;
}

static aos_err make_head(ep_reply *r, int status, const char *ctype, long long clen,
                         int retry_after, const ep_ctx *ctx, uint64_t seq)
{
    ep_buf *h = &r->head;
    aos_err e = ep_buf_printf(h, EP_HEAD_MAX, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status,
                              reason(status), ctype);
    if (e == AOS_OK && clen >= 0)
        e = ep_buf_printf(h, EP_HEAD_MAX, "Content-Length: %lld\r\n", clen);
    if (e == AOS_OK && r->chunked)
        e = ep_buf_printf(h, EP_HEAD_MAX, "Transfer-Encoding: chunked\r\n");
    if (e == AOS_OK && r->stream)
        e = ep_buf_printf(h, EP_HEAD_MAX, "Cache-Control: no-cache\r\n");
    if (e == AOS_OK && retry_after >= 0)
        e = ep_buf_printf(h, EP_HEAD_MAX, "Retry-After: %d\r\n", retry_after);
    if (e == AOS_OK && r->retry_after_ms >= 0)
        e = ep_buf_printf(h, EP_HEAD_MAX, "retry-after-ms: %lld\r\n", r->retry_after_ms);
    if (e == AOS_OK)
        e = ep_buf_printf(h, EP_HEAD_MAX, "%s: req_aos%06llu\r\nConnection: %s\r\n\r\n",
                          r->dia == EP_ANTHROPIC ? "request-id" : "x-request-id",
                          (unsigned long long)seq,
                          ctx->keep_alive && !(r->stream && ctx->http10) ? "keep-alive"
                                                                        : "close");
    return e;
}

/* Dumps j (taking its reference) compactly in insertion order; replaces the escaped
 * placeholder by raw invalid bytes when badutf8 is on. The result is appended to out. */
static aos_err dump_into(ep_reply *r, json_t *j, ep_buf *out)
{
    if (!j)
        return AOS_ERR_NOMEM;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    json_decref(j);
    if (!s)
        return AOS_ERR_NOMEM;
    aos_err e = AOS_OK;
    const char *p = s;
    while (r->badutf8 && e == AOS_OK) {
        const char *m = strstr(p, MARK);
        if (!m)
            break;
        e = ep_buf_add(out, p, (size_t)(m - p), OUT_MAX);
        if (e == AOS_OK)
            e = ep_buf_add(out, BAD_BYTES, sizeof BAD_BYTES - 1, OUT_MAX);
        p = m + sizeof MARK - 1;
    }
    if (e == AOS_OK)
        e = ep_buf_add(out, p, strlen(p), OUT_MAX);
    free(s);
    return e;
}

/* The text of segments from..to-1 as one JSON string (a control-character placeholder
 * marks where badutf8's raw bytes go). */
static json_t *segs_json(ep_reply *r, uint32_t from, uint32_t to)
{
    ep_buf t = {0};
    json_t *j = NULL;
    for (uint32_t i = from; i < to; i++) {
        const ep_seg *g = &r->segs[i];
        if ((g->lead && ep_buf_add(&t, " ", 1, OUT_MAX) != AOS_OK) ||
            ep_buf_add(&t, r->text.p + g->off, g->len, OUT_MAX) != AOS_OK ||
            (g->bad && ep_buf_add(&t, "\x01", 1, OUT_MAX) != AOS_OK))
            goto out;
    }
    j = json_stringn(t.p ? t.p : "", t.len);
out:
    ep_buf_free(&t);
    return j;
}

static json_t *oa_usage(const ep_reply *r)
{
    const ep_usage *u = &r->usage;
    return json_pack("{s:I,s:I,s:I,s:{s:I,s:I},s:{s:I,s:I}}",
                     "prompt_tokens", (json_int_t)(u->input + u->cache_read),
                     "completion_tokens", (json_int_t)u->output,
                     "total_tokens", (json_int_t)(u->input + u->cache_read + u->output),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)u->cache_read,
                     "audio_tokens", (json_int_t)0,
                     "completion_tokens_details", "reasoning_tokens", (json_int_t)0,
                     "audio_tokens", (json_int_t)0);
}

static json_t *an_usage(const ep_reply *r, uint64_t output)
{
    const ep_usage *u = &r->usage;
    return json_pack("{s:I,s:I,s:I,s:I}", "input_tokens", (json_int_t)u->input,
                     "cache_creation_input_tokens", (json_int_t)u->cache_write,
                     "cache_read_input_tokens", (json_int_t)u->cache_read,
                     "output_tokens", (json_int_t)output);
}

/* A chat.completion.chunk of these choices; with "usage" last when usage is not NULL. */
static json_t *oa_chunk_of(ep_reply *r, json_t *choices, json_t *usage)
{
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:s,s:o}", "id", r->id, "object",
                          "chat.completion.chunk", "created", (json_int_t)r->created, "model",
                          r->model, "system_fingerprint", "fp_aos_test", "choices", choices);
    if (usage && json_object_set_new(j, "usage", usage) != 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static json_t *oa_chunk(ep_reply *r, json_t *delta, const char *finish)
{
    json_t *choice = json_pack("{s:i,s:o,s:n,s:o}", "index", 0, "delta", delta, "logprobs",
                               "finish_reason", finish ? json_string(finish) : json_null());
    return oa_chunk_of(r, json_pack("[o]", choice), r->include_usage ? json_null() : NULL);
}

/* An Anthropic content_block_delta of block blk: {"type":type, key: v}. */
static json_t *an_delta(unsigned blk, const char *type, const char *key, json_t *v)
{
    return json_pack("{s:s,s:i,s:{s:s,s:o}}", "type", "content_block_delta", "index", (int)blk,
                     "delta", "type", type, key, v);
}

static const char *eol(const ep_reply *r)
{
    return r->crlf ? "\r\n" : "\n";
}

/* An event's first lines: event: when it has a name, and the start of its data: line. */
static aos_err sse_head(ep_reply *r, const char *name, ep_buf *out)
{
    aos_err e = AOS_OK;
    if (name)
        e = ep_buf_printf(out, OUT_MAX, "event: %s%s", name, eol(r));
    return e == AOS_OK ? ep_buf_add(out, "data: ", 6, OUT_MAX) : e;
}

/* One SSE event: optional event: line, one data: line, the blank line; half: only the
 * first half of the data, a syntactically broken event. */
static aos_err sse_event(ep_reply *r, const char *name, json_t *j, int half, ep_buf *out)
{
    ep_buf t = {0};
    aos_err e = dump_into(r, j, &t);
    if (e == AOS_OK)
        e = sse_head(r, name, out);
    if (e == AOS_OK)
        e = ep_buf_add(out, t.p, half ? t.len / 2 : t.len, OUT_MAX);
    if (e == AOS_OK)
        e = ep_buf_printf(out, OUT_MAX, "%s%s", eol(r), eol(r));
    ep_buf_free(&t);
    return e;
}

static aos_err sse(ep_reply *r, const char *name, json_t *j, ep_buf *out)
{
    return sse_event(r, name, j, 0, out);
}

/* A valid event cut in half, blank line after it. */
static aos_err sse_broken(ep_reply *r, const char *name, json_t *j, ep_buf *out)
{
    return sse_event(r, name, j, 1, out);
}

static json_t *one_char(const ep_tool *t, uint32_t j)
{
    return json_stringn(t->args + j, 1);
}

static aos_err render(ep_reply *r, const ep_ev *ev, ep_buf *out)
{
    const ep_tool *t = ev->a < r->ntools ? &r->tools[ev->a] : &r->tools[0];
    switch (ev->kind) {
    case EV_HEAD:
        return ep_buf_add(out, r->head.p, r->head.len, OUT_MAX);
    case EV_BODY:
        return ep_buf_add(out, r->body.p, r->cut >= 0 ? r->body.len / 2 : r->body.len,
                          OUT_MAX);
    case OA_ROLE:
        return sse(r, NULL, oa_chunk(r, json_pack("{s:s,s:s,s:n}", "role", "assistant",
                                                  "content", "", "refusal"), NULL), out);
    case OA_TEXT:
        return sse(r, NULL, oa_chunk(r, json_pack("{s:o}", "content", segs_json(r, ev->a, ev->a + 1)),
                                     NULL), out);
    case OA_TOOL_START:
        return sse(r, NULL, oa_chunk(r, json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}",
                                                  "tool_calls", "index", (int)ev->a, "id",
                                                  t->id, "type", "function", "function",
                                                  "name", t->name, "arguments", ""), NULL),
                   out);
    case OA_TOOL_ARG:
        return sse(r, NULL, oa_chunk(r, json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls",
                                                  "index", (int)ev->a, "function",
                                                  "arguments", one_char(t, ev->b)), NULL),
                   out);
    case OA_FINISH:
        return sse(r, NULL, oa_chunk(r, json_object(), r->stop_tools ? "tool_calls" : "stop"),
                   out);
    case OA_USAGE: {
        json_t *u = oa_usage(r);
        return sse(r, NULL, u ? oa_chunk_of(r, json_array(), u) : NULL, out);
    }
    case OA_DONE:
        return ep_buf_printf(out, OUT_MAX, "data: [DONE]%s%s", eol(r), eol(r));
    case OA_PING:
        return ep_buf_printf(out, OUT_MAX, ": ping%s%s", eol(r), eol(r));
    case OA_MALFORMED:
        return sse_broken(r, NULL, oa_chunk(r, json_pack("{s:s}", "content", "broken"), NULL),
                          out);
    case OA_ERROR:
        return sse(r, NULL, json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message",
                                      "Overloaded", "type", "server_error", "param", "code"),
                   out);
    case AN_MSG_START:
        return sse(r, "message_start",
                   json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}}", "type",
                             "message_start", "message", "id", r->id, "type", "message",
                             "role", "assistant", "model", r->model, "content",
                             "stop_reason", "stop_sequence", "usage", an_usage(r, 1)),
                   out);
    case AN_TEXT_START:
        return sse(r, "content_block_start",
                   json_pack("{s:s,s:i,s:{s:s,s:s}}", "type", "content_block_start", "index",
                             (int)ev->blk, "content_block", "type", "text", "text", ""),
                   out);
    case AN_TEXT:
        return sse(r, "content_block_delta",
                   an_delta(ev->blk, "text_delta", "text", segs_json(r, ev->a, ev->a + 1)),
                   out);
    case AN_BLOCK_STOP:
        return sse(r, "content_block_stop",
                   json_pack("{s:s,s:i}", "type", "content_block_stop", "index", (int)ev->blk),
                   out);
    case AN_TOOL_START:
        return sse(r, "content_block_start",
                   json_pack("{s:s,s:i,s:{s:s,s:s,s:s,s:{}}}", "type", "content_block_start",
                             "index", (int)ev->blk, "content_block", "type", "tool_use", "id",
                             t->id, "name", t->name, "input"), out);
    case AN_TOOL_ARG:
        return sse(r, "content_block_delta",
                   an_delta(ev->blk, "input_json_delta", "partial_json", one_char(t, ev->b)),
                   out);
    case AN_MSG_DELTA:
        return sse(r, "message_delta",
                   json_pack("{s:s,s:{s:s,s:n},s:o}", "type", "message_delta", "delta",
                             "stop_reason", r->stop_tools ? "tool_use" : "end_turn",
                             "stop_sequence", "usage", json_pack("{s:I}", "output_tokens",
                                                                 (json_int_t)r->usage.output)),
                   out);
    case AN_MSG_STOP:
        return sse(r, "message_stop", json_pack("{s:s}", "type", "message_stop"), out);
    case AN_PING:
        return sse(r, "ping", json_pack("{s:s}", "type", "ping"), out);
    case AN_MALFORMED:
        return sse_broken(r, "content_block_delta",
                          an_delta(0, "text_delta", "text", json_string("broken")), out);
    case AN_ERROR:
        return sse(r, "error", json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                                         "overloaded_error", "message", "Overloaded"), out);
    default:
        return AOS_ERR_INTERNAL;
    }
}

/* The non-stream chat body, with the text placeholder where badutf8 goes. */
static json_t *chat_body_json(ep_reply *r)
{
    json_t *text = r->nsegs || !r->ntools ? segs_json(r, 0, r->nsegs) : json_null();
    if (!text)
        return NULL;
    if (r->dia == EP_OPENAI) {
        json_t *msg = json_pack("{s:s,s:o,s:n}", "role", "assistant", "content", text,
                                "refusal");
        if (msg && r->ntools) {
            json_t *calls = json_array();
            for (uint32_t k = 0; k < r->ntools && calls; k++)
                json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s%}}", "id",
                                                       r->tools[k].id, "type", "function",
                                                       "function", "name", r->tools[k].name,
                                                       "arguments", r->tools[k].args,
                                                       r->tools[k].len));
            json_object_set_new(msg, "tool_calls", calls);
        }
        return json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:n,s:s}],s:o,s:s}", "id", r->id,
                         "object", "chat.completion", "created", (json_int_t)r->created,
                         "model", r->model, "choices", "index", 0, "message", msg, "logprobs",
                         "finish_reason", r->stop_tools ? "tool_calls" : "stop", "usage",
                         oa_usage(r), "system_fingerprint", "fp_aos_test");
    }
    json_t *content = json_array();
    if (content && r->nsegs)
        json_array_append_new(content, json_pack("{s:s,s:o}", "type", "text", "text", text));
    else
        json_decref(text);
    for (uint32_t k = 0; k < r->ntools && content; k++)
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id",
                                                 r->tools[k].id, "name", r->tools[k].name,
                                                 "input", json_loadb(r->tools[k].args,
                                                                     r->tools[k].len, 0,
                                                                     NULL)));
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n,s:o}", "id", r->id, "type", "message",
                     "role", "assistant", "model", r->model, "content", content, "stop_reason",
                     r->stop_tools ? "tool_use" : "end_turn", "stop_sequence", "usage",
                     an_usage(r, r->usage.output));
}

/* The prefix of a big= body: a valid body or event up to the opening quote of its text. */
static aos_err big_prefix(ep_reply *r, ep_buf *out)
{
    json_t *j;
    const char *name = NULL;
    if (!r->stream)
        j = r->dia == EP_OPENAI
                ? json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s}}]}", "id", r->id, "object",
                            "chat.completion", "created", (json_int_t)r->created, "model",
                            r->model, "choices", "index", 0, "message", "role", "assistant",
                            "content", "\x01")
                : json_pack("{s:s,s:s,s:s,s:s,s:[{s:s,s:s}]}", "id", r->id, "type", "message",
                            "role", "assistant", "model", r->model, "content", "type", "text",
                            "text", "\x01");
    else if (r->dia == EP_OPENAI)
        j = oa_chunk(r, json_pack("{s:s}", "content", "\x01"), NULL);
    else {
        name = "content_block_delta";
        j = an_delta(0, "text_delta", "text", json_string("\x01"));
    }
    if (!j)
        return AOS_ERR_NOMEM;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s)
        return AOS_ERR_NOMEM;
    const char *m = strstr(s, MARK);
    aos_err e = AOS_OK;
    if (r->stream)
        e = sse_head(r, name, out);
    if (e == AOS_OK)
        e = ep_buf_add(out, s, m ? (size_t)(m - s) : strlen(s), OUT_MAX);
    free(s);
    return e;
}

static uint32_t clamp32(uint64_t x)
{
    return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
}

/* When delta number d of D is due. */
static uint32_t delta_at(const ep_directive *d, uint64_t n, uint64_t D)
{
    if (d->spread_ms)
        return clamp32(d->first_ms + (D > 1 ? n * d->spread_ms / (D - 1) : 0));
    return clamp32(d->first_ms + n * (uint64_t)d->gap_ms);
}

/* r->text cut before each word, every byte kept: one delta per word. */
static aos_err split_words(ep_reply *r, const ep_directive *d, uint32_t *n_text)
{
    r->segs = calloc(MAX_SEGS, sizeof *r->segs);
    if (!r->segs)
        return AOS_ERR_NOMEM;
    size_t b = 0, L = r->text.len;
    const unsigned char *s = (const unsigned char *)r->text.p;
    while (b < L) {
        size_t e = b;
        while (e < L && is_ws(s[e]))
            e++;
        if (e == L && r->nsegs) {
            r->segs[r->nsegs - 1].len += (uint32_t)(L - b);
            break;
        }
        while (e < L && !is_ws(s[e]))
            e++;
        if (r->nsegs == MAX_SEGS - 1)
            e = L;
        r->segs[r->nsegs++] = (ep_seg){(uint32_t)b, (uint32_t)(e - b), 0, 0};
        b = e;
    }
    if (d->badutf8 && r->nsegs)
        r->segs[0].bad = 1;
    *n_text = r->nsegs;
    return AOS_OK;
}

/* Segments of the reply's text: echo mode cuts "echo: <text>" before each word, keeping
 * every byte; text= and chunks= repeat one word. */
static aos_err build_text(ep_reply *r, const ep_ask *a, uint32_t *n_text)
{
    const ep_directive *d = &a->d;
    if (a->turn) { /* the script's text, a delta per word like echo mode */
        const char *t = json_string_value(json_object_get(a->turn, "text"));
        if (!t || !t[0]) {
            *n_text = 0;
            return AOS_OK;
        }
        if (ep_buf_add(&r->text, t, strlen(t), OUT_MAX) != AOS_OK)
            return AOS_ERR_NOMEM;
        return split_words(r, d, n_text);
    }
    int word_mode = d->has_text || d->has_chunks;
    if (!word_mode && d->tools && !a->tools_done) {
        *n_text = 0;
        return AOS_OK;
    }
    if (word_mode) {
        uint32_t n = d->has_chunks ? d->chunks : 1;
        const char *w = d->has_text ? d->text
                                    : (d->split != EP_SPLIT_LINE ? "tok\xe2\x82\xac" : "tok");
        if (ep_buf_add(&r->text, w, strlen(w), OUT_MAX) != AOS_OK)
            return AOS_ERR_NOMEM;
        r->segs = calloc(n ? n : 1, sizeof *r->segs);
        if (!r->segs)
            return AOS_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++)
            r->segs[i] = (ep_seg){0, (uint32_t)strlen(w), i > 0, 0};
        r->nsegs = n;
    } else {
        if (ep_buf_add(&r->text, "echo: ", 6, OUT_MAX) != AOS_OK ||
            ep_buf_add(&r->text, a->text ? a->text : "", a->text_len, OUT_MAX) != AOS_OK)
            return AOS_ERR_NOMEM;
        return split_words(r, d, n_text);
    }
    if (d->badutf8 && r->nsegs)
        r->segs[0].bad = 1;
    *n_text = r->nsegs;
    return AOS_OK;
}

/* The script's tool calls for this turn: names and arguments as written. */
static aos_err script_tools(ep_reply *r, const ep_ask *a, const ep_ctx *ctx)
{
    json_t *calls = json_object_get(a->turn, "tool_calls");
    size_t k;
    json_t *c;
    json_array_foreach(calls, k, c) {
        if (k >= MAX_TOOLS)
            break;
        ep_tool *t = &r->tools[k];
        snprintf(t->id, sizeof t->id, "%s%06llu_%zu",
                 r->dia == EP_ANTHROPIC ? "toolu_aos" : "call_aos",
                 (unsigned long long)ctx->seq, k);
        const char *name = json_string_value(json_object_get(c, "name"));
        snprintf(t->name, sizeof t->name, "%s", name ? name : "");
        json_t *args = json_object_get(c, "arguments");
        t->args = json_is_string(args) ? strdup(json_string_value(args)) /* JSON already */
                  : args ? json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER)
                         : strdup("{}");
        if (!t->args)
            return AOS_ERR_NOMEM;
        t->len = strlen(t->args);
        r->ntools = (uint32_t)k + 1;
    }
    r->stop_tools = r->ntools > 0;
    return AOS_OK;
}

static aos_err build_tools(ep_reply *r, const ep_ask *a, const ep_ctx *ctx)
{
    if (a->turn)
        return script_tools(r, a, ctx);
    uint32_t n = a->tools_done ? 0 : a->d.tools;
    for (uint32_t k = 0; k < n; k++) {
        ep_tool *t = &r->tools[k];
        snprintf(t->id, sizeof t->id, "%s%06llu_%u",
                 r->dia == EP_ANTHROPIC ? "toolu_aos" : "call_aos",
                 (unsigned long long)ctx->seq, k);
        snprintf(t->name, sizeof t->name, "tool_%u", k);
        json_t *j = json_pack("{s:i,s:s}", "i", (int)k, "s", t->name);
        t->args = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(j);
        if (!t->args)
            return AOS_ERR_NOMEM;
        t->len = strlen(t->args);
        r->ntools = k + 1;
    }
    r->stop_tools = n > 0;
    return AOS_OK;
}

/* The stream's event list; error_mid stops it after the first delta. */
static aos_err build_stream(ep_reply *r, const ep_directive *d, uint32_t n_text, uint64_t D)
{
    int oa = r->dia == EP_OPENAI;
    uint64_t n = 0;
    int hooked = 0;
    aos_err e = add_ev(r, EV_HEAD, 0, 0, 0, 0, 0);
    if (e == AOS_OK)
        e = add_ev(r, oa ? OA_ROLE : AN_MSG_START, 0, 0, 0, 0, 0);
    if (e == AOS_OK && d->big) {
        e = add_ev(r, EV_BIG, 0, 0, 0, 0, d->first_ms);
        return e == AOS_OK ? add_ev(r, EV_END, 0, 0, 0, 0, d->first_ms) : e;
    }
#define HOOK(t)                                                                        \
    do {                                                                               \
        if (!hooked) {                                                                 \
            hooked = 1;                                                                \
            if (e == AOS_OK && d->malformed)                                           \
                e = add_ev(r, oa ? OA_MALFORMED : AN_MALFORMED, 0, 0, 0, 0, (t));      \
            if (e == AOS_OK && d->error_mid) {                                         \
                e = add_ev(r, oa ? OA_ERROR : AN_ERROR, 0, 0, 0, 0, (t));              \
                return e == AOS_OK ? add_ev(r, EV_END, 0, 0, 0, 0, (t)) : e;           \
            }                                                                          \
        }                                                                              \
    } while (0)
#define PING(t)                                                                        \
    do {                                                                               \
        if (e == AOS_OK && d->ping && n < D)                                           \
            e = add_ev(r, oa ? OA_PING : AN_PING, 0, 0, 0, 0,                          \
                       (uint32_t)(((uint64_t)(t) + delta_at(d, n, D)) / 2));           \
    } while (0)
    unsigned blk = 0;
    if (n_text) {
        if (e == AOS_OK && !oa)
            e = add_ev(r, AN_TEXT_START, 0, blk, 0, 0, 0);
        uint32_t t = 0;
        for (uint32_t i = 0; i < n_text && e == AOS_OK; i++) {
            t = delta_at(d, n, D);
            e = add_ev(r, oa ? OA_TEXT : AN_TEXT, 1, blk, i, 0, t);
            n++;
            HOOK(t);
            PING(t);
        }
        if (e == AOS_OK && !oa)
            e = add_ev(r, AN_BLOCK_STOP, 0, blk, 0, 0, t);
        blk++;
    }
    for (uint32_t k = 0; k < r->ntools && e == AOS_OK; k++, blk++) {
        uint32_t t = delta_at(d, n, D);
        e = add_ev(r, oa ? OA_TOOL_START : AN_TOOL_START, 0, blk, k, 0, t);
        for (uint32_t j = 0; j < r->tools[k].len && e == AOS_OK; j++) {
            t = delta_at(d, n, D);
            e = add_ev(r, oa ? OA_TOOL_ARG : AN_TOOL_ARG, 1, blk, k, j, t);
            n++;
            HOOK(t);
            PING(t);
        }
        if (e == AOS_OK && !oa)
            e = add_ev(r, AN_BLOCK_STOP, 0, blk, 0, 0, t);
    }
    uint32_t end = D ? delta_at(d, D - 1, D) : d->first_ms;
    HOOK(end);
#undef HOOK
#undef PING
    if (e == AOS_OK)
        e = add_ev(r, oa ? OA_FINISH : AN_MSG_DELTA, 0, 0, 0, 0, end);
    if (e == AOS_OK && oa && r->include_usage)
        e = add_ev(r, OA_USAGE, 0, 0, 0, 0, end);
    if (e == AOS_OK)
        e = add_ev(r, oa ? OA_DONE : AN_MSG_STOP, 0, 0, 0, 0, end);
    if (e == AOS_OK)
        e = add_ev(r, EV_END, 0, 0, 0, 0, end);
    return e;
}

/* A JSON body's two pieces, its head and itself, both due at ms after the start. */
static aos_err head_and_body(ep_reply *r, int status, int retry_after, uint32_t at,
                             const ep_ctx *ctx)
{
    aos_err e = make_head(r, status, "application/json", (long long)r->body.len, retry_after,
                          ctx, ctx->seq);
    if (e == AOS_OK)
        e = add_ev(r, EV_HEAD, 0, 0, 0, 0, at);
    if (e == AOS_OK)
        e = add_ev(r, EV_BODY, 0, 0, 0, 0, at);
    return e;
}

aos_err ep_reply_chat(const ep_ask *a, const ep_ctx *ctx, ep_reply **out, char *why,
                      size_t whylen)
{
    *out = NULL;
    const ep_directive *d = &a->d;
    ep_reply *r = reply_new(a->dialect, ctx, a->model);
    if (!r)
        return AOS_ERR_NOMEM;
    aos_err e;
    r->is_chat = 1;
    r->stream = a->stream;
    r->chunked = a->stream && !ctx->http10;
    r->include_usage = a->include_usage;
    r->split = d->split;
    r->crlf = d->crlf;
    r->badutf8 = d->badutf8;
    r->cut = d->cut;
    r->big = d->big;
    uint32_t n_text = 0;
    e = build_text(r, a, &n_text);
    if (e == AOS_OK)
        e = build_tools(r, a, ctx);
    if (e != AOS_OK)
        goto out;
    uint64_t D = n_text;
    for (uint32_t k = 0; k < r->ntools; k++)
        D += r->tools[k].len;
    r->usage = (ep_usage){a->words, D, d->cached, d->cache_write};
    if (r->stream) {
        e = make_head(r, 200, "text/event-stream; charset=utf-8", -1, -1, ctx, ctx->seq);
        if (e == AOS_OK)
            e = build_stream(r, d, n_text, D);
    } else {
        uint32_t end = D ? delta_at(d, D - 1, D) : d->first_ms;
        if (d->big) {
            e = make_head(r, 200, "application/json", (long long)d->big, -1, ctx, ctx->seq);
            if (e == AOS_OK)
                e = add_ev(r, EV_HEAD, 0, 0, 0, 0, end);
            if (e == AOS_OK)
                e = add_ev(r, EV_BIG, 0, 0, 0, 0, end);
            goto out;
        }
        e = dump_into(r, chat_body_json(r), &r->body);
        if (e == AOS_OK && d->malformed)
            r->body.len /= 2;
        if (e == AOS_OK)
            e = head_and_body(r, 200, -1, end, ctx);
    }
out:
    if (e != AOS_OK) {
        snprintf(why, whylen, "building the reply: %s",
                 e == AOS_ERR_TOO_BIG ? "too large" : "out of memory");
        ep_reply_free(r);
        return e;
    }
    *out = r;
    return AOS_OK;
}

/* splitmix64: a deterministic stream of numbers from one seed. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* One unit vector per input, a function of the input's bytes only. */
static json_t *embedding(const char *s, size_t n, size_t dim)
{
    double *v = calloc(dim, sizeof *v), norm = 0;
    if (!v)
        return NULL;
    uint64_t seed = ep_hash(s, n, 0);
    for (size_t j = 0; j < dim; j++) {
        v[j] = (double)(mix(seed + j) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        norm += v[j] * v[j];
    }
    norm = norm > 0 ? 1.0 / sqrt(norm) : 0;
    json_t *a = json_array();
    for (size_t j = 0; j < dim && a; j++)
        if (json_array_append_new(a, json_real(v[j] * norm)) != 0) {
            json_decref(a);
            a = NULL;
        }
    free(v);
    return a;
}

/* Ends a constructor of a one-body reply: e is how building its body (what) went. On
 * AOS_OK *out is r; else r is freed and why says which step ran out of memory. */
static aos_err finish_simple(ep_reply *r, aos_err e, const char *what, int status,
                             int retry_after, uint32_t at, const ep_ctx *ctx, ep_reply **out,
                             char *why, size_t whylen)
{
    if (e != AOS_OK)
        snprintf(why, whylen, "building %s: out of memory", what);
    else if ((e = head_and_body(r, status, retry_after, at, ctx)) != AOS_OK)
        snprintf(why, whylen, "building the reply: out of memory");
    if (e != AOS_OK) {
        ep_reply_free(r);
        return e;
    }
    *out = r;
    return AOS_OK;
}

aos_err ep_reply_embed(const ep_ask *a, const ep_ctx *ctx, ep_reply **out, char *why,
                       size_t whylen)
{
    *out = NULL;
    ep_reply *r = reply_new(EP_OPENAI, ctx, a->model);
    if (!r)
        return AOS_ERR_NOMEM;
    json_t *in = json_object_get(a->root, "input");
    json_t *dims = json_object_get(a->root, "dimensions");
    size_t dim = json_is_integer(dims) ? (size_t)json_integer_value(dims) : 8;
    size_t n = json_is_string(in) ? 1 : json_array_size(in);
    json_t *data = json_array();
    for (size_t i = 0; i < n && data; i++) {
        json_t *s = json_is_string(in) ? in : json_array_get(in, i);
        json_t *v = embedding(json_string_value(s), json_string_length(s), dim);
        if (!v || json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object", "embedding",
                                                        "index", (json_int_t)i, "embedding",
                                                        v)) != 0) {
            json_decref(data);
            data = NULL;
        }
    }
    aos_err e = data ? dump_into(r, json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list",
                                              "data", data, "model", r->model, "usage",
                                              "prompt_tokens", (json_int_t)a->words,
                                              "total_tokens", (json_int_t)a->words),
                                 &r->body)
                     : AOS_ERR_NOMEM;
    if (e == AOS_OK && a->d.malformed)
        r->body.len /= 2;
    return finish_simple(r, e, "the embeddings", 200, -1, a->d.first_ms, ctx, out, why,
                         whylen);
}

aos_err ep_reply_models(ep_dialect dia, const ep_ctx *ctx, ep_reply **out, char *why,
                        size_t whylen)
{
    *out = NULL;
    ep_reply *r = reply_new(dia, ctx, NULL);
    if (!r)
        return AOS_ERR_NOMEM;
    json_t *j = dia == EP_OPENAI
                    ? json_pack("{s:s,s:[{s:s,s:s,s:i,s:s},{s:s,s:s,s:i,s:s}]}", "object",
                                "list", "data", "id", "aos-test-1", "object", "model",
                                "created", 1700000000, "owned_by", "aos-test", "id",
                                "aos-test-embed", "object", "model", "created", 1700000000,
                                "owned_by", "aos-test")
                    : json_pack("{s:[{s:s,s:s,s:s,s:s}],s:b,s:s,s:s}", "data", "type",
                                "model", "id", "aos-test-1", "display_name", "AOS test 1",
                                "created_at", "2024-01-01T00:00:00Z", "has_more", 0,
                                "first_id", "aos-test-1", "last_id", "aos-test-1");
    return finish_simple(r, dump_into(r, j, &r->body), "the model list", 200, -1, 0, ctx, out,
                         why, whylen);
}

aos_err ep_reply_error(ep_dialect dia, int status, const char *msg, int retry_after,
                       unsigned delay_ms, const ep_ctx *ctx, ep_reply **out, char *why,
                       size_t whylen)
{
    *out = NULL;
    ep_reply *r = reply_new(dia, ctx, NULL);
    if (!r)
        return AOS_ERR_NOMEM;
    json_t *j;
    if (dia == EP_OPENAI) {
        const char *type = status >= 500 ? "server_error"
                           : status == 429 ? "requests" : "invalid_request_error";
        const char *code = status == 401 ? "invalid_api_key"
                           : status == 404 ? "unknown_url"
                           : status == 429 ? "rate_limit_exceeded" : NULL;
        j = json_pack("{s:{s:s,s:s,s:n,s:o}}", "error", "message", msg, "type", type, "param",
                      "code", code ? json_string(code) : json_null());
    } else {
        const char *type;
        switch (status) {
        case 401: type = "authentication_error"; break;
        case 403: type = "permission_error"; break;
        case 404: type = "not_found_error"; break;
        case 413: type = "request_too_large"; break;
        case 429: type = "rate_limit_error"; break;
        case 503:
        case 529: type = "overloaded_error"; break;
        default: type = status >= 500 ? "api_error" : "invalid_request_error"; break;
        }
        j = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", type, "message",
                      msg);
    }
    return finish_simple(r, dump_into(r, j, &r->body), "the error body", status, retry_after,
                         delay_ms, ctx, out, why, whylen);
}

aos_err ep_reply_rate_limited(ep_dialect dia, const char *msg, const char *type,
                              uint64_t retry_ms, const ep_ctx *ctx, ep_reply **out, char *why,
                              size_t whylen)
{
    *out = NULL;
    ep_reply *r = reply_new(dia, ctx, NULL);
    if (!r)
        return AOS_ERR_NOMEM;
    json_t *j;
    if (dia == EP_OPENAI) {
        /* OpenAI names the limit that refused in error.type: "requests" or "tokens" */
        j = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type", type, "param",
                      "code", "rate_limit_exceeded");
        r->retry_after_ms = retry_ms > 86400000u ? 86400000 : (long long)retry_ms;
    } else {
        j = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", "rate_limit_error",
                      "message", msg);
    }
    /* Retry-After counts whole seconds: rounded up, so a client that honours it is never
     * early; the precise wait is in retry-after-ms */
    uint64_t secs = (retry_ms + 999) / 1000;
    return finish_simple(r, dump_into(r, j, &r->body), "the 429 body", 429,
                         secs > 86400 ? 86400 : (int)secs, 0, ctx, out, why, whylen);
}

aos_err ep_reply_json(int status, json_t *j, const ep_ctx *ctx, ep_reply **out, char *why,
                      size_t whylen)
{
    *out = NULL;
    ep_reply *r = reply_new(EP_OPENAI, ctx, NULL);
    if (!r) {
        json_decref(j);
        return AOS_ERR_NOMEM;
    }
    return finish_simple(r, dump_into(r, j, &r->body), "the JSON body", status, -1, 0, ctx,
                         out, why, whylen);
}

int ep_reply_usage(const ep_reply *r, ep_usage *u)
{
    if (!r->is_chat)
        return 0;
    *u = r->usage;
    return 1;
}

/* split=mid: cut points of the current event at odd places — after its first byte,
 * between a \r and its \n, inside the first multi-byte character, near the middle and
 * before the final newline. */
static void compute_cuts(ep_reply *r)
{
    r->ncuts = r->icut = 0;
    size_t L = r->cur.len, c[5];
    const unsigned char *s = (const unsigned char *)r->cur.p;
    int n = 0;
    c[n++] = 1;
    for (size_t i = 0; i + 1 < L; i++)
        if (s[i] == '\r' && s[i + 1] == '\n') {
            c[n++] = i + 1;
            break;
        }
    for (size_t i = 0; i < L; i++)
        if (s[i] >= 0xc0) {
            c[n++] = i + 1;
            break;
        }
    c[n++] = (L / 2) | 1;
    c[n++] = L ? L - 1 : 0;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && c[j - 1] > c[j]; j--) {
            size_t t = c[j];
            c[j] = c[j - 1];
            c[j - 1] = t;
        }
    for (int i = 0; i < n; i++)
        if (c[i] > 0 && c[i] < L && (r->ncuts == 0 || r->cuts[r->ncuts - 1] != c[i]))
            r->cuts[r->ncuts++] = c[i];
}

/* n bytes of the reply, from p, or n filler bytes (big=) when p is NULL; in a chunk of
 * its own when chunk. */
static aos_err frame(const char *p, size_t n, int chunk, ep_buf *piece)
{
    aos_err e = AOS_OK;
    if (chunk)
        e = ep_buf_printf(piece, OUT_MAX, "%zx\r\n", n);
    if (e == AOS_OK && p) {
        e = ep_buf_add(piece, p, n, OUT_MAX);
    } else if (e == AOS_OK && (e = ep_buf_reserve(piece, n + 2, OUT_MAX)) == AOS_OK) {
        memset(piece->p + piece->len, 'x', n);
        piece->len += n;
    }
    if (e == AOS_OK && chunk)
        e = ep_buf_add(piece, "\r\n", 2, OUT_MAX);
    return e;
}

aos_err ep_reply_next(ep_reply *r, ep_buf *piece, uint32_t *at_ms, int *separate,
                      int *step, char *why, size_t whylen)
{
    piece->len = 0;
    *separate = 0;
    *at_ms = 0;
    aos_err e = AOS_OK;
    for (;;) {
        if (r->closing) {
            *step = EP_STEP_CLOSE;
            return AOS_OK;
        }
        int kind = r->cur_ev.kind;
        if (r->cur_off < r->cur.len) {
            int splittable = kind != EV_HEAD && kind != EV_END && kind != EV_BIG;
            size_t end = r->cur.len;
            if (splittable && r->split == EP_SPLIT_BYTE) {
                end = r->cur_off + 1;
            } else if (splittable && r->split == EP_SPLIT_MID) {
                while (r->icut < r->ncuts && r->cuts[r->icut] <= r->cur_off)
                    r->icut++;
                if (r->icut < r->ncuts)
                    end = r->cuts[r->icut];
            }
            if (end - r->cur_off > PIECE_MAX)
                end = r->cur_off + PIECE_MAX;
            e = frame(r->cur.p + r->cur_off, end - r->cur_off,
                      r->chunked && kind != EV_HEAD && kind != EV_END, piece);
            if (e != AOS_OK)
                goto fail;
            *at_ms = r->cur_ev.at;
            *separate = splittable && r->split != EP_SPLIT_LINE;
            r->cur_off = end;
            if (r->cur_off == r->cur.len) {
                if (r->cur_ev.is_delta)
                    r->deltas_sent++;
                if (r->cur_ev.is_delta && r->cut >= 0 && r->deltas_sent >= (uint32_t)r->cut)
                    r->closing = 1;
                if (kind == EV_BODY && r->cut >= 0)
                    r->closing = 1;
            }
            *step = EP_STEP_PIECE;
            return AOS_OK;
        }
        if (r->big_left) {
            size_t n = r->big_left > PIECE_MAX ? PIECE_MAX : (size_t)r->big_left;
            if ((e = frame(NULL, n, r->chunked, piece)) != AOS_OK)
                goto fail;
            r->big_left -= n;
            *at_ms = r->cur_ev.at;
            *step = EP_STEP_PIECE;
            return AOS_OK;
        }
        if (r->iev == r->nev) {
            *step = r->stream && !r->chunked ? EP_STEP_CLOSE : EP_STEP_DONE;
            return AOS_OK;
        }
        ep_ev ev = r->ev[r->iev];
        if (r->cut >= 0 && r->stream &&
            (ev.kind == EV_END || (ev.is_delta && r->deltas_sent >= (uint32_t)r->cut))) {
            r->closing = 1;
            continue;
        }
        r->iev++;
        r->cur.len = 0;
        r->cur_off = 0;
        r->cur_ev = ev;
        if (ev.kind == EV_END) {
            if (r->chunked)
                e = ep_buf_add(&r->cur, "0\r\n\r\n", 5, OUT_MAX);
        } else if (ev.kind == EV_BIG) {
            e = big_prefix(r, &r->cur);
            if (r->cur.len > r->big)
                r->cur.len = (size_t)r->big;
            r->big_left = r->big - r->cur.len;
        } else {
            e = render(r, &ev, &r->cur);
        }
        if (e != AOS_OK)
            goto fail;
        if (r->split == EP_SPLIT_MID)
            compute_cuts(r);
    }
fail:
    snprintf(why, whylen, "rendering the reply: %s",
             e == AOS_ERR_TOO_BIG ? "too large" : "out of memory");
    return e;
}
