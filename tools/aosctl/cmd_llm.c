/* aosctl's llm commands: providers (what aos-llm is configured with), test (one chat,
 * streamed to the terminal as it arrives) and usage (tokens and cost per agent and model). */
#include "aosctl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm.pb-c.h"

#define TARGET_MAX 256      /* aos-llm refuses longer model names */
#define CELL_MAX 512        /* one table cell, cleaned; longer text is cut */
#define TOOL_ARGS_SHOWN 400 /* a tool call's arguments on the terminal; --json has them all */
#define DUR_DIGITS_MAX 9    /* "--since 999999999d" is already before 1970 */

/* ---- small helpers -------------------------------------------------------------------- */

static int bytes_ok(ProtobufCBinaryData b)
{
    return aos_utf8_valid(b.data, b.len);
}

/* A bytes field as a JSON string; the caller checked it is UTF-8 (NULL only without
 * memory, which json_pack turns into a failed document). */
static json_t *jbytes(ProtobufCBinaryData b)
{
    return json_stringn(b.len ? (const char *)b.data : "", b.len);
}

/* Columns a terminal gives a cleaned UTF-8 string: one per character. */
static size_t cols(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* "$0.000012": micro-dollars as dollars. */
static void usd(uint64_t micro, char *out, size_t cap)
{
    snprintf(out, cap, "%" PRIu64 ".%06" PRIu64, micro / 1000000u, micro % 1000000u);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- a table for people --------------------------------------------------------------- */

/* Cells are cleaned copies, so what aos-llm sent is printed once, safely, and column widths
 * are measured on what is printed. */
typedef struct tbl {
    size_t ncols, nrows, used;
    unsigned right;   /* bit k: column k is right-aligned (numbers) */
    char **cells;     /* nrows * ncols, each malloc'd; freed by tbl_free */
} tbl;

static int tbl_init(tbl *t, size_t ncols, size_t nrows, unsigned right)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->nrows = nrows;
    t->right = right;
    t->cells = calloc(nrows * ncols + 1, sizeof *t->cells);
    return t->cells ? 0 : -1;
}

/* The next cell, in row order, from raw bytes. -1 without memory. */
static int tbl_put(tbl *t, const uint8_t *b, size_t n)
{
    char buf[CELL_MAX];
    if (t->used >= t->nrows * t->ncols)
        return -1;
    ctl_clean(buf, sizeof buf, b, n, 0, NULL);
    return (t->cells[t->used++] = strdup(buf)) ? 0 : -1;
}

static int tbl_putf(tbl *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tbl_putf(tbl *t, const char *fmt, ...)
{
    char buf[CELL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return tbl_put(t, (const uint8_t *)buf, strlen(buf));
}

static void tbl_print(const tbl *t, FILE *f)
{
    size_t w[32] = {0};
    size_t rows = t->used / t->ncols;
    for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < t->ncols && k < 32; k++) {
            size_t n = cols(t->cells[r * t->ncols + k]);
            if (n > w[k])
                w[k] = n;
        }
    for (size_t r = 0; r < rows; r++) {
        for (size_t k = 0; k < t->ncols; k++) {
            const char *s = t->cells[r * t->ncols + k];
            int last = k + 1 == t->ncols;
            size_t pad = k < 32 ? w[k] - cols(s) : 0;
            /* the last column is not padded, so lines carry no trailing blanks */
            if (t->right >> k & 1u)
                fprintf(f, "%*s%s", (int)pad, "", s);
            else
                fprintf(f, "%s%*s", s, last ? 0 : (int)pad, "");
            fputs(last ? "\n" : "  ", f);
        }
    }
}

static void tbl_free(tbl *t)
{
    for (size_t i = 0; t->cells && i < t->used; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
}

/* ---- llm providers -------------------------------------------------------------------- */

/* Calls llm.providers and checks every text field. Returns 0 with *out (the caller frees it
 * with aos__llm__providers_reply__free_unpacked), or the exit code, the error printed. */
static int get_providers(ctl_ctx *c, Aos__Llm__ProvidersReply **out)
{
    aos_reply r;
    *out = NULL;
    if (ctl_call(c, NULL, "llm.providers", NULL, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Llm__ProvidersReply *p =
        aos__llm__providers_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!p)
        return ctl_fail(c, AOS_ERR_PROTO, "llm.providers: aos-llm sent a malformed "
                        "ProvidersReply");
    int ok = 1;
    for (size_t i = 0; ok && i < p->n_providers; i++) {
        const Aos__Llm__ProviderInfo *pi = p->providers[i];
        ok = bytes_ok(pi->name) && bytes_ok(pi->kind) && bytes_ok(pi->base_url) &&
             bytes_ok(pi->why);
        for (size_t k = 0; ok && k < pi->n_models; k++)
            ok = bytes_ok(pi->models[k]);
    }
    if (!ok) {
        aos__llm__providers_reply__free_unpacked(p, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "llm.providers: aos-llm sent text that is not "
                        "UTF-8");
    }
    *out = p;
    return 0;
}

static int bytes_is(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0);
}

/* "64", or "-" for 0 (no limit). */
static void limit_text(uint32_t v, char *out, size_t cap)
{
    if (v)
        snprintf(out, cap, "%" PRIu32, v);
    else
        snprintf(out, cap, "-");
}

/* "a, b, c" of a provider's models, cut to fit a cell. */
static void models_text(const Aos__Llm__ProviderInfo *pi, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t k = 0; k < pi->n_models; k++) {
        char m[CELL_MAX];
        ctl_clean(m, sizeof m, pi->models[k].data, pi->models[k].len, 0, NULL);
        int n = snprintf(out + used, cap - used, "%s%s", k ? "," : "", m);
        if (n < 0 || (size_t)n >= cap - used) {
            if (cap >= 4) /* a character cut here becomes '?' when the cell is cleaned */
                memcpy(out + cap - 4, "...", 4);
            return;
        }
        used += (size_t)n;
    }
    if (!used)
        snprintf(out, cap, "-");
}

static json_t *provider_json(const Aos__Llm__ProviderInfo *pi)
{
    json_t *models = json_array();
    for (size_t k = 0; models && k < pi->n_models; k++)
        if (json_array_append_new(models, jbytes(pi->models[k])) != 0) {
            json_decref(models);
            return NULL;
        }
    const Aos__Llm__Limits *l = pi->limits;
    return json_pack("{s:o,s:o,s:o,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:f},s:b,s:b,s:o}", "name",
                     jbytes(pi->name), "kind", jbytes(pi->kind), "base_url",
                     jbytes(pi->base_url), "models", models, "limits", "max_concurrency",
                     (json_int_t)(l ? l->max_concurrency : 0), "requests_per_min",
                     (json_int_t)(l ? l->requests_per_min : 0), "tokens_per_min",
                     (json_int_t)(l ? l->tokens_per_min : 0), "input_tokens_per_min",
                     (json_int_t)(l ? l->input_tokens_per_min : 0), "output_tokens_per_min",
                     (json_int_t)(l ? l->output_tokens_per_min : 0), "daily_spend_usd",
                     l ? l->daily_spend_usd : 0.0, "has_key", pi->has_key, "reachable",
                     pi->reachable, "why", jbytes(pi->why));
}

static int cmd_providers(ctl_ctx *c, const ctl_vals *v)
{
    (void)v;
    Aos__Llm__ProvidersReply *p;
    int rc = get_providers(c, &p);
    if (rc)
        return rc;
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < p->n_providers; i++)
            if (json_array_append_new(arr, provider_json(p->providers[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        aos__llm__providers_reply__free_unpacked(p, NULL);
        return ctl_print_json(c, arr ? json_pack("{s:o}", "providers", arr) : NULL);
    }
    tbl t;
    int bad = tbl_init(&t, 6, p->n_providers + 1, 0);
    bad = bad || tbl_putf(&t, "NAME") || tbl_putf(&t, "KIND") || tbl_putf(&t, "MODELS") ||
          tbl_putf(&t, "LIMITS") || tbl_putf(&t, "KEY") || tbl_putf(&t, "REACHABLE");
    for (size_t i = 0; !bad && i < p->n_providers; i++) {
        const Aos__Llm__ProviderInfo *pi = p->providers[i];
        const Aos__Llm__Limits *l = pi->limits;
        char models[CELL_MAX], lim[3][16], why[CELL_MAX - 8];
        models_text(pi, models, sizeof models);
        limit_text(l ? l->max_concurrency : 0, lim[0], sizeof lim[0]);
        limit_text(l ? l->requests_per_min : 0, lim[1], sizeof lim[1]);
        limit_text(l ? l->tokens_per_min : 0, lim[2], sizeof lim[2]);
        ctl_clean(why, sizeof why, pi->why.data, pi->why.len, 0, NULL);
        bad = tbl_put(&t, pi->name.data, pi->name.len) ||
              tbl_put(&t, pi->kind.data, pi->kind.len) || tbl_putf(&t, "%s", models) ||
              tbl_putf(&t, "%s/%s/%s", lim[0], lim[1], lim[2]) ||
              tbl_putf(&t, "%s", pi->has_key ? "yes" : "no") ||
              (pi->reachable ? tbl_putf(&t, "yes")
                             : tbl_putf(&t, "no: %s", why[0] ? why : "no reason given"));
    }
    aos__llm__providers_reply__free_unpacked(p, NULL);
    if (bad) {
        tbl_free(&t);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory building the table");
    }
    tbl_print(&t, stdout);
    tbl_free(&t);
    return 0;
}

/* ---- llm test ------------------------------------------------------------------------- */

static int check_target(const char *val, char *why, size_t whylen)
{
    size_t n = strlen(val);
    const char *slash = strchr(val, '/');
    int ctl = 0;
    for (size_t i = 0; i < n; i++)
        ctl |= (unsigned char)val[i] < 0x20 || val[i] == 0x7f;
    if (n && n <= TARGET_MAX && !ctl && aos_utf8_valid(val, n) && slash != val &&
        (!slash || slash[1]))
        return 0;
    snprintf(why, whylen, "PROVIDER[/MODEL] wants a provider (sim), provider/model "
             "(sim/sim-1) or a model name, UTF-8 of at most %d bytes; not \"%.100s\"",
             TARGET_MAX, val);
    return -1;
}

static int check_text(const char *what, const char *val, char *why, size_t whylen)
{
    if (aos_utf8_valid(val, strlen(val)))
        return 0;
    snprintf(why, whylen, "%s is not UTF-8", what);
    return -1;
}

static int check_prompt(const char *val, char *why, size_t whylen)
{
    if (!*val) {
        snprintf(why, whylen, "PROMPT is empty");
        return -1;
    }
    return check_text("PROMPT", val, why, whylen);
}

static int check_system(const char *val, char *why, size_t whylen)
{
    return check_text("--system", val, why, whylen);
}

/* 0 to 2 as typed by people: up to three digits, then a point and up to six; no sign,
 * exponent, hex, inf or nan, which strtod alone would take. */
static int parse_temperature(const char *s, float *out)
{
    size_t i = 0, d = 0, f = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++, d++;
    if (s[i] == '.')
        for (i++; s[i] >= '0' && s[i] <= '9'; i++)
            f++;
    if (s[i] || d < 1 || d > 3 || f > 6 || (s[d] == '.' && f == 0))
        return -1;
    errno = 0;
    double t = strtod(s, NULL);
    if (errno || !isfinite(t) || t < 0 || t > 2)
        return -1;
    *out = (float)t;
    return 0;
}

static int check_temperature(const char *val, char *why, size_t whylen)
{
    float t;
    if (parse_temperature(val, &t) == 0)
        return 0;
    snprintf(why, whylen, "--temperature wants a number from 0 to 2 (0.7), not \"%.100s\"",
             val);
    return -1;
}

/* For a bare PROVIDER, the model to ask: its first chat model (an older aos-llm that does
 * not say which models embed: the first whose name lacks "embed"), else the first. */
static ProtobufCBinaryData pick_model(const Aos__Llm__ProviderInfo *pi)
{
    for (size_t k = 0; k < pi->n_models; k++) {
        if (pi->n_embedding == pi->n_models) {
            if (!pi->embedding[k])
                return pi->models[k];
            continue;
        }
        char m[TARGET_MAX + 1];
        ctl_clean(m, sizeof m, pi->models[k].data, pi->models[k].len, 0, NULL);
        if (!strstr(m, "embed"))
            return pi->models[k];
    }
    return pi->models[0];
}

/* What llm.chat gets as its model: "p/m" as typed; for a provider's name, "p/" and its chat
 * model; any other word as typed (a model name some provider lists). Writes out (cap). */
static int resolve_model(ctl_ctx *c, const char *target, char *out, size_t cap)
{
    if (strchr(target, '/')) {
        snprintf(out, cap, "%s", target);
        return 0;
    }
    Aos__Llm__ProvidersReply *p;
    int rc = get_providers(c, &p);
    if (rc)
        return rc;
    const Aos__Llm__ProviderInfo *hit = NULL;
    int is_model = 0;
    char names[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < p->n_providers; i++) {
        const Aos__Llm__ProviderInfo *pi = p->providers[i];
        if (bytes_is(pi->name, target))
            hit = pi;
        for (size_t k = 0; k < pi->n_models; k++)
            is_model |= bytes_is(pi->models[k], target);
        char nm[64];
        ctl_clean(nm, sizeof nm, pi->name.data, pi->name.len, 0, NULL);
        int n = snprintf(names + used, sizeof names - used, "%s%s", used ? ", " : "", nm);
        if (n > 0 && (size_t)n < sizeof names - used)
            used += (size_t)n;
    }
    rc = 0;
    if (hit && hit->n_models) {
        ProtobufCBinaryData m = pick_model(hit);
        snprintf(out, cap, "%s/%.*s", target, (int)m.len, (const char *)m.data);
    } else if (hit) {
        rc = ctl_fail(c, AOS_ERR_NOT_FOUND, "provider \"%s\" lists no models", target);
    } else if (is_model) {
        snprintf(out, cap, "%s", target);
    } else {
        rc = ctl_fail(c, AOS_ERR_NOT_FOUND, "no provider or model \"%s\" (providers: %s)",
                      target, names[0] ? names : "none");
    }
    aos__llm__providers_reply__free_unpacked(p, NULL);
    return rc;
}

/* What the parts did, for the summary and for a part that is not a ChatDelta. */
typedef struct stream_st {
    int human;          /* print text as it comes */
    int bad_part;       /* a part that did not decode; the stream was cancelled */
    uint32_t bad_seq;
    uint64_t printed;   /* text bytes printed */
    int last_nl;        /* the last byte printed was a newline */
} stream_st;

/* The model's text for a terminal: newlines and tabs kept, other control characters
 * (an escape sequence in a reply could rewrite the screen) shown as '?'. */
static void put_text(stream_st *s, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = b[i];
        int ctl = (ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f;
        /* C1 controls (U+0080..U+009F) act as escapes on some terminals */
        int c1 = ch == 0xC2 && i + 1 < n && b[i + 1] >= 0x80 && b[i + 1] < 0xA0;
        fputc(ctl || c1 ? '?' : ch, stdout);
        i += (size_t)c1;
    }
    if (n) {
        s->printed += n;
        s->last_nl = b[n - 1] == '\n';
    }
}

static int on_part(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    stream_st *s = arg;
    Aos__Llm__ChatDelta *d = aos__llm__chat_delta__unpack(NULL, len, data);
    if (!d) {
        s->bad_part = 1;
        s->bad_seq = seq;
        return 1;
    }
    if (s->human && d->text.len) {
        put_text(s, d->text.data, d->text.len);
        fflush(stdout); /* as it arrives: that is what the command is for */
    }
    aos__llm__chat_delta__free_unpacked(d, NULL);
    return 0;
}

static const char *stop_name(Aos__Llm__StopReason r)
{
    switch (r) {
    case AOS__LLM__STOP_REASON__STOP_UNSPECIFIED: return "unspecified";
    case AOS__LLM__STOP_REASON__END_TURN: return "end_turn";
    case AOS__LLM__STOP_REASON__MAX_TOKENS: return "max_tokens";
    case AOS__LLM__STOP_REASON__TOOL_USE: return "tool_use";
    case AOS__LLM__STOP_REASON__STOP_SEQUENCE: return "stop_sequence";
    case AOS__LLM__STOP_REASON__CONTENT_FILTER: return "content_filter";
    default: return "unknown";
    }
}

/* Every text of the reply is UTF-8 and every counter fits a JSON integer. */
static int reply_ok(const Aos__Llm__ChatReply *r)
{
    const Aos__Llm__Message *m = r->message;
    const Aos__Llm__Usage *u = r->usage;
    int ok = bytes_ok(r->provider) && bytes_ok(r->model) && r->cost_micro_usd <= INT64_MAX;
    if (u)
        ok = ok && u->input_tokens <= INT64_MAX && u->output_tokens <= INT64_MAX &&
             u->cache_read_tokens <= INT64_MAX && u->cache_write_tokens <= INT64_MAX;
    for (size_t i = 0; ok && m && i < m->n_content; i++)
        ok = bytes_ok(m->content[i]->text);
    for (size_t i = 0; ok && m && i < m->n_tool_calls; i++)
        ok = bytes_ok(m->tool_calls[i]->id) && bytes_ok(m->tool_calls[i]->name) &&
             bytes_ok(m->tool_calls[i]->arguments);
    return ok;
}

/* The reply's text parts, joined: malloc'd (caller frees), *n its length; NULL without
 * memory. */
static char *reply_text(const Aos__Llm__Message *m, size_t *n)
{
    size_t len = 0;
    for (size_t i = 0; m && i < m->n_content; i++)
        if (m->content[i]->kind == AOS__LLM__PART_KIND__TEXT)
            len += m->content[i]->text.len;
    char *t = malloc(len + 1);
    if (!t)
        return NULL;
    len = 0;
    for (size_t i = 0; m && i < m->n_content; i++) {
        const Aos__Llm__ContentPart *p = m->content[i];
        if (p->kind != AOS__LLM__PART_KIND__TEXT || !p->text.len)
            continue;
        memcpy(t + len, p->text.data, p->text.len);
        len += p->text.len;
    }
    t[len] = 0;
    *n = len;
    return t;
}

static json_t *chat_json(const Aos__Llm__ChatReply *r, const char *asked, uint32_t parts)
{
    const Aos__Llm__Message *m = r->message;
    const Aos__Llm__Usage *u = r->usage;
    size_t n;
    char *text = reply_text(m, &n);
    json_t *calls = json_array();
    for (size_t i = 0; calls && m && i < m->n_tool_calls; i++) {
        const Aos__Llm__ToolCall *tc = m->tool_calls[i];
        if (json_array_append_new(calls, json_pack("{s:o,s:o,s:o}", "id", jbytes(tc->id),
                                                   "name", jbytes(tc->name), "arguments",
                                                   jbytes(tc->arguments))) != 0) {
            json_decref(calls);
            calls = NULL;
        }
    }
    json_t *d = NULL;
    if (text && calls) {
        d = json_pack("{s:s%,s:O,s:s,s:{s:I,s:I,s:I,s:I},s:I,s:o,s:o,s:s,s:i,s:I,s:b,s:I}",
                      "text", text, n, "tool_calls", calls, "stop_reason",
                      stop_name(r->stop_reason), "usage", "input_tokens",
                      (json_int_t)(u ? u->input_tokens : 0), "output_tokens",
                      (json_int_t)(u ? u->output_tokens : 0), "cache_read_tokens",
                      (json_int_t)(u ? u->cache_read_tokens : 0), "cache_write_tokens",
                      (json_int_t)(u ? u->cache_write_tokens : 0), "cost_micro_usd",
                      (json_int_t)r->cost_micro_usd, "provider", jbytes(r->provider), "model",
                      jbytes(r->model), "requested", asked, "attempts", (int)r->attempts,
                      "ttft_us", (json_int_t)r->ttft_us, "resent", r->resent, "parts",
                      (json_int_t)parts);
    }
    json_decref(calls);
    free(text);
    return d;
}

/* For people: the text when none streamed, the tool calls, then one line on stderr with the
 * rest, so stdout holds the answer alone. */
static void chat_print(const Aos__Llm__ChatReply *r, stream_st *s, uint32_t parts)
{
    const Aos__Llm__Message *m = r->message;
    const Aos__Llm__Usage *u = r->usage;
    if (!s->printed) {
        size_t n;
        char *text = reply_text(m, &n);
        if (text)
            put_text(s, (const uint8_t *)text, n);
        free(text);
    }
    if (s->printed && !s->last_nl)
        fputc('\n', stdout);
    for (size_t i = 0; m && i < m->n_tool_calls; i++) {
        const Aos__Llm__ToolCall *tc = m->tool_calls[i];
        char name[128], args[TOOL_ARGS_SHOWN + 1];
        ctl_clean(name, sizeof name, tc->name.data, tc->name.len, 0, NULL);
        ctl_clean(args, sizeof args, tc->arguments.data, tc->arguments.len, 0, NULL);
        /* clean keeps the length unless it had to cut */
        printf("[tool %s(%s%s)]\n", name, args, strlen(args) < tc->arguments.len ? "..." : "");
    }
    fflush(stdout); /* the answer first, then the summary, also when both go to one tty */
    char prov[128], model[TARGET_MAX + 1], cost[32], ttft[32];
    ctl_clean(prov, sizeof prov, r->provider.data, r->provider.len, 0, NULL);
    ctl_clean(model, sizeof model, r->model.data, r->model.len, 0, NULL);
    usd(r->cost_micro_usd, cost, sizeof cost);
    if (r->ttft_us >= 1000)
        snprintf(ttft, sizeof ttft, "%" PRIu32 ".%01" PRIu32 "ms", r->ttft_us / 1000,
                 r->ttft_us % 1000 / 100);
    else
        snprintf(ttft, sizeof ttft, "%" PRIu32 "us", r->ttft_us);
    fprintf(stderr,
            "-- %s; tokens in %" PRIu64 " out %" PRIu64 " cache read %" PRIu64 " write %" PRIu64
            "; cost $%s; %s/%s; %" PRIu32 " attempt%s; ttft %s; %" PRIu32 " parts%s\n",
            stop_name(r->stop_reason), u ? u->input_tokens : 0, u ? u->output_tokens : 0,
            u ? u->cache_read_tokens : 0, u ? u->cache_write_tokens : 0, cost, prov, model,
            r->attempts, r->attempts == 1 ? "" : "s", ttft, parts,
            r->resent ? "; resent: the provider got this request twice (paid twice)" : "");
}

/* The request's one or two messages, on the stack of the caller. */
typedef struct chat_msgs {
    Aos__Llm__Message m[2], *mp[2];
    Aos__Llm__ContentPart p[2], *pp[2];
} chat_msgs;

static void add_msg(chat_msgs *cm, size_t i, Aos__Llm__Role role, const char *text)
{
    aos__llm__message__init(&cm->m[i]);
    aos__llm__content_part__init(&cm->p[i]);
    cm->p[i].kind = AOS__LLM__PART_KIND__TEXT;
    cm->p[i].text = (ProtobufCBinaryData){strlen(text), (uint8_t *)text};
    cm->pp[i] = &cm->p[i];
    cm->m[i].role = role;
    cm->m[i].content = &cm->pp[i];
    cm->m[i].n_content = 1;
    cm->mp[i] = &cm->m[i];
}

static int cmd_test(ctl_ctx *c, const ctl_vals *v)
{
    const char *target = ctl_str(v, "PROVIDER[/MODEL]"), *prompt = ctl_str(v, "PROMPT");
    const char *sys = ctl_str(v, "--system"), *temp = ctl_str(v, "--temperature");
    char model[TARGET_MAX + 80];
    int rc = resolve_model(c, target, model, sizeof model);
    if (rc)
        return rc;

    Aos__Llm__ChatRequest req = AOS__LLM__CHAT_REQUEST__INIT;
    chat_msgs cm;
    size_t nm = 0;
    if (sys)
        add_msg(&cm, nm++, AOS__LLM__ROLE__SYSTEM, sys);
    add_msg(&cm, nm++, AOS__LLM__ROLE__USER, prompt);
    req.messages = cm.mp;
    req.n_messages = nm;
    req.model = (ProtobufCBinaryData){strlen(model), (uint8_t *)model};
    req.max_tokens = (uint32_t)ctl_int(v, "--max-tokens");
    if (temp) {
        if (parse_temperature(temp, &req.temperature) != 0) /* checked by the table */
            return ctl_fail(c, AOS_ERR_INTERNAL, "--temperature passed its check but is not "
                            "a number");
        req.has_temperature = 1;
    }
    size_t n = aos__llm__chat_request__get_packed_size(&req);
    if (n > AOS_MSG_MAX)
        return ctl_fail(c, AOS_ERR_TOO_BIG, "llm.chat: request of %zu bytes exceeds the %u "
                        "byte cap", n, AOS_MSG_MAX);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    aos__llm__chat_request__pack(&req, buf);

    aos_reply r;
    memset(&r, 0, sizeof r);
    if (ctl_connect(c, &r) != AOS_OK) {
        free(buf);
        return ctl_fail_reply(c, &r);
    }
    stream_st st = {.human = !c->json};
    aos_call_opts o = {.timeout_ms = c->timeout_ms};
    aos_err e = aos_call_stream(c->conn, &o, "llm.chat", buf, n, on_part, &st, &r);
    free(buf);
    if (st.printed && !st.last_nl) {
        fputc('\n', stdout); /* a stream cut short still ends its line */
        st.last_nl = 1;
    }
    fflush(stdout);
    if (st.bad_part) {
        aos_reply_clear(&r);
        return ctl_fail(c, AOS_ERR_PROTO, "llm.chat: part %" PRIu32 " is not a ChatDelta",
                        st.bad_seq);
    }
    if (e != AOS_OK) {
        if (e == AOS_ERR_RATE_LIMITED && r.retry_after_ms) {
            rc = ctl_fail(c, e, "%s (retry after %" PRIu64 " ms)", r.error, r.retry_after_ms);
            aos_reply_clear(&r);
            return rc;
        }
        return ctl_fail_reply(c, &r);
    }
    uint32_t parts = r.parts;
    Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!cr)
        return ctl_fail(c, AOS_ERR_PROTO, "llm.chat: aos-llm sent a malformed ChatReply");
    if (!reply_ok(cr)) {
        aos__llm__chat_reply__free_unpacked(cr, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "llm.chat: aos-llm sent a ChatReply with text "
                        "that is not UTF-8 or out-of-range counters");
    }
    rc = 0;
    if (c->json)
        rc = ctl_print_json(c, chat_json(cr, model, parts));
    else
        chat_print(cr, &st, parts);
    aos__llm__chat_reply__free_unpacked(cr, NULL);
    return rc;
}

/* ---- llm usage ------------------------------------------------------------------------ */

/* Only the digits s[0..n), as a number; -1 when there are none or another character. */
static int digits(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (!n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int leap(uint64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* YYYY-MM-DD[THH:MM[:SS]][Z], UTC, as epoch ms; -1 when it is not one (or before 1970). */
static int parse_date(const char *s, uint64_t *out)
{
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    size_t n = strlen(s);
    if (n > 10 && s[n - 1] == 'Z')
        n--;
    if (n != 10 && n != 16 && n != 19)
        return -1;
    uint64_t y, mo, d, h = 0, mi = 0, sec = 0;
    if (s[4] != '-' || s[7] != '-' || digits(s, 4, &y) || digits(s + 5, 2, &mo) ||
        digits(s + 8, 2, &d))
        return -1;
    if (n >= 16 && (s[10] != 'T' || s[13] != ':' || digits(s + 11, 2, &h) ||
                    digits(s + 14, 2, &mi)))
        return -1;
    if (n == 19 && (s[16] != ':' || digits(s + 17, 2, &sec)))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && leap(y)) || h > 23 || mi > 59 || sec > 59)
        return -1;
    /* days since 1970-01-01, counted here rather than with timegm, which reads TZ rules */
    uint64_t days = 0;
    for (uint64_t yy = 1970; yy < y; yy++)
        days += 365u + (uint64_t)leap(yy);
    for (uint64_t m = 1; m < mo; m++)
        days += mdays[m - 1] + (m == 2 && leap(y));
    days += d - 1;
    *out = ((days * 24 + h) * 60 + mi) * 60000 + sec * 1000;
    return 0;
}

/* --since T as epoch ms: digits are epoch ms; N followed by s, m, h or d is that long
 * before now; else a date. -1 with why when T is none of them. */
static int parse_since(const char *t, uint64_t now, uint64_t *out, char *why, size_t whylen)
{
    size_t n = strlen(t);
    uint64_t v;
    if (n && n <= 19 && digits(t, n, &v) == 0 && v <= INT64_MAX) {
        *out = v;
        return 0;
    }
    const char *unit = n ? strchr("smhd", t[n - 1]) : NULL;
    if (unit && *unit && n >= 2 && n - 1 <= DUR_DIGITS_MAX && digits(t, n - 1, &v) == 0) {
        static const uint64_t ms[] = {1000, 60000, 3600000, 86400000};
        uint64_t ago = v * ms[unit - "smhd"];
        if (ago <= now) {
            *out = now - ago;
            return 0;
        }
        snprintf(why, whylen, "--since %s ago is before 1970", t);
        return -1;
    }
    if (parse_date(t, out) == 0)
        return 0;
    snprintf(why, whylen, "--since wants epoch ms, a duration (10m, 2h, 7d) or a UTC date "
             "YYYY-MM-DD[THH:MM[:SS]] from 1970 on, not \"%.100s\"", t);
    return -1;
}

static int check_since(const char *val, char *why, size_t whylen)
{
    uint64_t ms;
    return parse_since(val, now_ms(), &ms, why, whylen);
}

/* The sums of the rows; each row fits int64 (checked), the sums are checked too. */
typedef struct usage_sum {
    uint64_t v[8]; /* calls failed resent in out cache_r cache_w cost */
} usage_sum;

static void row_vals(const Aos__Llm__UsageRow *w, uint64_t v[8])
{
    const Aos__Llm__Usage *u = w->usage;
    v[0] = w->calls;
    v[1] = w->failed;
    v[2] = w->resent;
    v[3] = u ? u->input_tokens : 0;
    v[4] = u ? u->output_tokens : 0;
    v[5] = u ? u->cache_read_tokens : 0;
    v[6] = u ? u->cache_write_tokens : 0;
    v[7] = w->cost_micro_usd;
}

static const char *const sum_names[8] = {"calls", "failed", "resent", "input_tokens",
                                         "output_tokens", "cache_read_tokens",
                                         "cache_write_tokens", "cost_micro_usd"};

static json_t *sums_json(const uint64_t v[8])
{
    json_t *o = json_object();
    for (int k = 0; o && k < 8; k++)
        if (json_object_set_new(o, sum_names[k], json_integer((json_int_t)v[k])) != 0) {
            json_decref(o);
            return NULL;
        }
    return o;
}

static int usage_print(const Aos__Llm__UsageReply *u, const usage_sum *tot)
{
    tbl t;
    char cost[32];
    /* the numbers (CALLS .. COST_USD) are right-aligned */
    int bad = tbl_init(&t, 11, u->n_rows + 2, 0x7F8u);
    static const char *const head[11] = {"AGENT", "PROVIDER", "MODEL", "CALLS", "FAILED",
                                         "RESENT", "IN", "OUT", "CACHE_R", "CACHE_W",
                                         "COST_USD"};
    for (int k = 0; !bad && k < 11; k++)
        bad = tbl_putf(&t, "%s", head[k]);
    for (size_t i = 0; !bad && i <= u->n_rows; i++) {
        uint64_t v[8];
        if (i < u->n_rows) {
            const Aos__Llm__UsageRow *w = u->rows[i];
            row_vals(w, v);
            /* calls made on the control socket have no agent */
            bad = (w->agent.len ? tbl_put(&t, w->agent.data, w->agent.len)
                                : tbl_putf(&t, "-")) ||
                  tbl_put(&t, w->provider.data, w->provider.len) ||
                  tbl_put(&t, w->model.data, w->model.len);
        } else {
            memcpy(v, tot->v, sizeof v);
            bad = tbl_putf(&t, "TOTAL") || tbl_putf(&t, "%s", "") || tbl_putf(&t, "%s", "");
        }
        for (int k = 0; !bad && k < 7; k++)
            bad = tbl_putf(&t, "%" PRIu64, v[k]);
        usd(v[7], cost, sizeof cost);
        bad = bad || tbl_putf(&t, "%s", cost);
    }
    if (!bad)
        tbl_print(&t, stdout);
    tbl_free(&t);
    return bad ? -1 : 0;
}

static int cmd_usage(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "--agent"), *since = ctl_str(v, "--since");
    Aos__Llm__UsageRequest q = AOS__LLM__USAGE_REQUEST__INIT;
    char why[256];
    if (since && parse_since(since, now_ms(), &q.since_ms, why, sizeof why) != 0)
        return ctl_fail(c, AOS_ERR_USAGE, "%s", why); /* checked by the table, at its now */
    if (agent)
        q.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    aos_reply r;
    if (ctl_call(c, NULL, "llm.usage", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Llm__UsageReply *u = aos__llm__usage_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!u)
        return ctl_fail(c, AOS_ERR_PROTO, "llm.usage: aos-llm sent a malformed UsageReply");
    usage_sum tot = {{0}};
    int ok = 1;
    for (size_t i = 0; ok && i < u->n_rows; i++) {
        const Aos__Llm__UsageRow *w = u->rows[i];
        uint64_t vals[8];
        row_vals(w, vals);
        ok = bytes_ok(w->agent) && bytes_ok(w->provider) && bytes_ok(w->model);
        for (int k = 0; ok && k < 8; k++) {
            ok = vals[k] <= INT64_MAX && tot.v[k] <= INT64_MAX - vals[k];
            tot.v[k] += ok ? vals[k] : 0;
        }
    }
    if (!ok) {
        aos__llm__usage_reply__free_unpacked(u, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "llm.usage: aos-llm sent text that is not UTF-8 or "
                        "counters past int64");
    }
    int rc = 0;
    if (c->json) {
        json_t *rows = json_array();
        for (size_t i = 0; rows && i < u->n_rows; i++) {
            const Aos__Llm__UsageRow *w = u->rows[i];
            uint64_t vals[8];
            row_vals(w, vals);
            json_t *row = sums_json(vals);
            if (!row || json_object_set_new(row, "agent", jbytes(w->agent)) ||
                json_object_set_new(row, "provider", jbytes(w->provider)) ||
                json_object_set_new(row, "model", jbytes(w->model)) ||
                json_array_append_new(rows, row)) {
                json_decref(rows);
                rows = NULL;
            }
        }
        rc = ctl_print_json(c, !rows ? NULL
                               : json_pack("{s:s,s:I,s:o,s:o}", "agent", agent ? agent : "",
                                           "since_ms", (json_int_t)q.since_ms, "rows", rows,
                                           "totals", sums_json(tot.v)));
    } else if (usage_print(u, &tot) != 0) {
        rc = ctl_fail(c, AOS_ERR_NOMEM, "out of memory building the table");
    }
    aos__llm__usage_reply__free_unpacked(u, NULL);
    return rc;
}

/* ---- the table ------------------------------------------------------------------------ */

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define STR "{\"type\":\"string\"}"

static const char providers_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"providers\"],\"properties\":{"
    "\"providers\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"name\","
    "\"kind\",\"base_url\",\"models\",\"limits\",\"has_key\",\"reachable\",\"why\"],"
    "\"properties\":{\"name\":" STR ",\"kind\":{\"type\":\"string\",\"description\":"
    "\"openai, anthropic or sim\"},\"base_url\":{\"type\":\"string\",\"description\":\"empty "
    "for sim\"},\"models\":{\"type\":\"array\",\"items\":" STR "},"
    "\"limits\":{\"type\":\"object\",\"description\":\"0: no limit\",\"required\":["
    "\"max_concurrency\",\"requests_per_min\",\"tokens_per_min\"],\"properties\":{"
    "\"max_concurrency\":" INT0 ",\"requests_per_min\":" INT0 ",\"tokens_per_min\":" INT0
    ",\"input_tokens_per_min\":" INT0 ",\"output_tokens_per_min\":" INT0 ","
    "\"daily_spend_usd\":{\"type\":\"number\",\"minimum\":0}}},"
    "\"has_key\":{\"type\":\"boolean\",\"description\":\"an API key was configured and "
    "found (the key is never shown)\"},"
    "\"reachable\":{\"type\":\"boolean\",\"description\":\"a connection to base_url could be "
    "made just now\"},\"why\":{\"type\":\"string\",\"description\":\"why not reachable; empty "
    "when reachable\"}}}}}}";

static const char test_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"text\",\"tool_calls\",\"stop_reason\",\"usage\","
    "\"cost_micro_usd\",\"provider\",\"model\",\"requested\",\"attempts\",\"ttft_us\","
    "\"resent\",\"parts\"],\"properties\":{"
    "\"text\":{\"type\":\"string\",\"description\":\"the assistant's whole text\"},"
    "\"tool_calls\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"id\","
    "\"name\",\"arguments\"],\"properties\":{\"id\":" STR ",\"name\":" STR ","
    "\"arguments\":{\"type\":\"string\",\"description\":\"JSON text, as the model sent "
    "it\"}}}},"
    "\"stop_reason\":{\"type\":\"string\",\"enum\":[\"unspecified\",\"end_turn\","
    "\"max_tokens\",\"tool_use\",\"stop_sequence\",\"content_filter\",\"unknown\"]},"
    "\"usage\":{\"type\":\"object\",\"required\":[\"input_tokens\",\"output_tokens\","
    "\"cache_read_tokens\",\"cache_write_tokens\"],\"properties\":{\"input_tokens\":" INT0 ","
    "\"output_tokens\":" INT0 ",\"cache_read_tokens\":" INT0 ",\"cache_write_tokens\":" INT0
    "}},\"cost_micro_usd\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"USD "
    "millionths, from aos.yaml's prices\"},"
    "\"provider\":{\"type\":\"string\",\"description\":\"who answered\"},\"model\":" STR ","
    "\"requested\":{\"type\":\"string\",\"description\":\"the model asked for (PROVIDER "
    "alone resolved to provider/model)\"},"
    "\"attempts\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"HTTP attempts\"},"
    "\"ttft_us\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"time to the first "
    "part from the provider\"},"
    "\"resent\":{\"type\":\"boolean\",\"description\":\"the provider got this request "
    "before (a second paid call)\"},"
    "\"parts\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"ChatDelta parts "
    "streamed\"}}}";

#define USAGE_NUMS                                                                         \
    "\"calls\":" INT0 ",\"failed\":" INT0 ",\"resent\":" INT0 ",\"input_tokens\":" INT0    \
    ",\"output_tokens\":" INT0 ",\"cache_read_tokens\":" INT0 ",\"cache_write_tokens\":"   \
    INT0 ",\"cost_micro_usd\":" INT0
#define USAGE_NUM_NAMES                                                                    \
    "\"calls\",\"failed\",\"resent\",\"input_tokens\",\"output_tokens\","                  \
    "\"cache_read_tokens\",\"cache_write_tokens\",\"cost_micro_usd\""

static const char usage_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"since_ms\",\"rows\",\"totals\"],"
    "\"properties\":{\"agent\":{\"type\":\"string\",\"description\":\"--agent; empty: every "
    "agent\"},\"since_ms\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"epoch ms "
    "--since resolved to; 0: all\"},"
    "\"rows\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"agent\","
    "\"provider\",\"model\"," USAGE_NUM_NAMES "],\"properties\":{\"agent\":{\"type\":"
    "\"string\",\"description\":\"the acting agent (calls made on the control socket "
    "are booked as -)\"},"
    "\"provider\":" STR ",\"model\":" STR "," USAGE_NUMS "}}},"
    "\"totals\":{\"type\":\"object\",\"required\":[" USAGE_NUM_NAMES "],\"properties\":{"
    USAGE_NUMS "}}}}";

static const ctl_arg test_args[] = {
    {.name = "PROVIDER[/MODEL]", .required = 1, .pattern = "^[^/]+(/.+)?$",
     .check = check_target,
     .summary = "a provider (its first chat model), provider/model, or a model name"},
    {.name = "PROMPT", .required = 1, .check = check_prompt,
     .summary = "the user message"},
    {.name = "--system", .value = "TEXT", .check = check_system,
     .summary = "a system message before it"},
    {.name = "--max-tokens", .type = CTL_INTEGER, .value = "N", .min = 1, .max = 1000000,
     .summary = "at most N output tokens (default: the model's)"},
    {.name = "--temperature", .value = "X", .pattern = "^[0-9]{1,3}(\\.[0-9]{1,6})?$",
     .check = check_temperature, .summary = "sampling temperature, 0 to 2"},
};
static const ctl_arg usage_args[] = {
    {.name = "--agent", .value = "A", .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "only this agent's calls"},
    {.name = "--since", .value = "T",
     .pattern = "^([0-9]{1,19}|[0-9]{1,9}[smhd]|[0-9]{4}-[0-9]{2}-[0-9]{2}"
                "(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?Z?)$",
     .check = check_since,
     .summary = "only calls from then on: epoch ms, a duration ago (10m, 2h, 7d) or a UTC "
                "date YYYY-MM-DD[THH:MM[:SS]]"},
};

static const ctl_cmd llm_cmds[] = {
    {"llm providers", "aos-llm's providers: models, limits, whether a key was found and "
     "whether base_url answers", NULL, 0, providers_out, cmd_providers},
    {"llm test", "send PROMPT to a model and stream the answer as it arrives; a summary "
     "line (tokens, cost, attempts, ttft) goes to stderr", CTL_ARGS(test_args), test_out,
     cmd_test},
    {"llm usage", "tokens and cost per agent, provider and model, with a TOTAL line",
     CTL_ARGS(usage_args), usage_out, cmd_usage},
};

const ctl_group ctl_group_llm = {llm_cmds, sizeof llm_cmds / sizeof llm_cmds[0]};
