/* aos-test-llm-endpoint: a local HTTP/1.1 server on 127.0.0.1 speaking the OpenAI and
 * Anthropic wire formats, misbehaving on request, for aos-llm's tests and benchmarks.
 *
 * One thread, level-triggered epoll, one min-heap of per-connection wake times (ms).
 * A reply is a list of timed pieces (ep_reply.c); the loop writes each when it is due and
 * the socket has room, so a reply of any size is held one piece at a time and capacity
 * mode (no delays) goes as fast as the client reads.
 *
 * Routes: POST /v1/chat/completions, POST /v1/messages (needs anthropic-version),
 * POST /v1/embeddings, GET /v1/models. The last user message's text may hold a
 * directive [[k=v ...]]: chunks gap_ms first_ms text spread_ms tools split=line|mid|byte
 * crlf status count retry_after cut hang malformed big badutf8 cached cache_write ping
 * error_mid. Without one the reply is "echo: <text>", one delta per word. Token counts:
 * input = words of all messages (and Anthropic system) — OpenAI prompt_tokens adds
 * cached= on top; output = deltas sent (text deltas plus tool-argument bytes).
 * status= without count= fails every attempt. tools= is ignored once a tool result
 * follows the directive's message, so a tool loop ends with text.
 *
 * Provider-limits mode (--max-concurrency, --rpm, --tpm): chats are admitted by the sim
 * provider's limiter (servers/llm/sim.c: a sliding minute of one-second buckets, and
 * requests in flight), charged the tokens their reply reports (input + output) when they
 * start; over a limit the answer is 429 with the provider's error body, Retry-After and
 * retry-after-ms (when a retry may pass). --latency-ms and --gap-ms pace every chat
 * (first delta, then one delta per gap) unless its directive says otherwise. GET /v1/stats
 * gives the counts (admitted, refused by which limit, tokens, in flight and its peak, the
 * slot-time used); POST /v1/stats/reset starts them again; they are printed on stdout at
 * exit in limits mode. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "aos/yjson.h"
#include "ep_http.h"
#include "ep_reply.h"
#include "llm.pb-c.h"
#include "sim.h"

#define HIGH_WATER (128u << 10)   /* queued output before waiting for the peer to read */
#define OUT_CAP (1u << 20)
#define LINGER_MS 1000            /* reading what follows an error before closing */
#define LINGER_BYTES (16u << 20)
#define ATT_SLOTS 65536u          /* attempts per request, direct-mapped */
#define MAX_EVENTS 512

enum { K_LISTEN, K_SIGNAL, K_STDIN, K_CONN };
enum { S_HEAD, S_BODY, S_CHUNKED, S_REPLY, S_HANG, S_CLOSING, S_LINGER };

typedef struct conn {
    int kind;                 /* K_CONN; first, like the other epoll tags */
    int fd;
    int state;
    int dead;
    uint32_t events;
    struct conn *prev, *next, *next_dead;
    int heap_idx;
    int64_t wake;
    char in[EP_HEAD_MAX];
    size_t in_len;
    ep_head head;
    int have_head;
    ep_buf body;
    uint64_t body_need;
    ep_chunked chunked;
    ep_buf out;
    size_t out_off;
    ep_reply *reply;
    ep_buf piece;
    int piece_ready, piece_sep;
    uint32_t piece_at;
    int64_t t0, last_write;
    int keep_alive;
    int abrupt;
    int slot;                 /* its chat reply holds an in-flight slot until it ends */
    uint64_t discarded;
} conn;

#define SCRIPT_MAX (1u << 20)

static struct {
    int port;
    const char *log_path;
    const char *expect_key;
    int stdin_eof;
    long max_s;
    long max_conc, rpm, tpm;    /* provider-limits mode when any is > 0 */
    long latency_ms, gap_ms;    /* -1: the directive's (default 0) */
    const char *script_path;    /* --script: the sim provider's turns, served by turn */
} opt = {0, NULL, NULL, 0, 600, 0, 0, 0, -1, -1, NULL};

/* What the provider-limits mode counts (and plain mode too, without refusals): since the
 * start or the last POST /v1/stats/reset. */
typedef struct {
    uint64_t admitted, refused, refused_conc, refused_req, refused_tok, tokens;
    uint32_t in_flight, peak;
    uint64_t busy_us;           /* the integral of in_flight over time: slot-µs used */
    int64_t last_us, since_us;
} ep_stats;

/* The chats per second over the last minute, as the limiter counts them (a refused one
 * counts its request, not its tokens): only to say which limit refused, and the window's
 * use in /v1/stats. */
typedef struct {
    uint64_t sec, req, tok;
} ep_sec;
#define EP_WINDOW_S 60

static struct {
    int ep;
    FILE *log;
    conn *live, *dead;
    size_t nconns, max_conns;
    conn **heap;
    size_t nheap;
    uint64_t seq;
    int stop;
    sim_limiter *lim;           /* NULL: no limits */
    json_t *turns;              /* --script's turns (an array), or NULL */
    ep_stats st;
    ep_sec win[EP_WINDOW_S];
} g;

static struct { uint64_t key; uint32_t n; } attempts[ATT_SLOTS];

static int tag_listen = K_LISTEN, tag_signal = K_SIGNAL, tag_stdin = K_STDIN;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------- the counts */

/* Brings the slot-time integral up to now: before every change of in_flight. */
static void busy_tick(void)
{
    int64_t t = now_us();
    if (t > g.st.last_us)
        g.st.busy_us += (uint64_t)g.st.in_flight * (uint64_t)(t - g.st.last_us);
    g.st.last_us = t;
}

static void win_sum(uint64_t *req, uint64_t *tok)
{
    uint64_t sec = (uint64_t)now_ms() / 1000;
    *req = *tok = 0;
    for (unsigned k = 0; k < EP_WINDOW_S; k++)
        if (g.win[k].sec && g.win[k].sec + EP_WINDOW_S > sec) {
            *req += g.win[k].req;
            *tok += g.win[k].tok;
        }
}

/* This second's bucket of the window, a request counted in it (the limiter counts a
 * refused one too, as OpenAI does). */
static ep_sec *win_count(void)
{
    uint64_t sec = (uint64_t)now_ms() / 1000;
    ep_sec *b = &g.win[sec % EP_WINDOW_S];
    if (b->sec != sec)
        *b = (ep_sec){sec, 0, 0};
    b->req++;
    return b;
}

static void slot_take(conn *c, uint64_t tokens)
{
    busy_tick();
    c->slot = 1;
    g.st.admitted++;
    g.st.tokens += tokens;
    if (++g.st.in_flight > g.st.peak)
        g.st.peak = g.st.in_flight;
    ep_sec *b = win_count();
    b->tok += tokens;
}

/* The reply ended (or the connection did): the provider has a slot again. */
static void slot_release(conn *c)
{
    if (!c->slot)
        return;
    c->slot = 0;
    busy_tick();
    if (g.st.in_flight)
        g.st.in_flight--;
    if (g.lim)
        sim_release(g.lim);
}

static json_t *stats_json(void)
{
    busy_tick();
    uint64_t wreq, wtok;
    win_sum(&wreq, &wtok);
    return json_pack("{s:{s:I,s:I,s:I},s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I}",
                     "limits", "max_concurrency", (json_int_t)opt.max_conc, "requests_per_min",
                     (json_int_t)opt.rpm, "tokens_per_min", (json_int_t)opt.tpm, "admitted",
                     (json_int_t)g.st.admitted, "refused", (json_int_t)g.st.refused,
                     "refused_concurrency", (json_int_t)g.st.refused_conc, "refused_requests",
                     (json_int_t)g.st.refused_req, "refused_tokens",
                     (json_int_t)g.st.refused_tok, "tokens", (json_int_t)g.st.tokens,
                     "in_flight", (json_int_t)g.st.in_flight, "peak_in_flight",
                     (json_int_t)g.st.peak, "busy_slot_ms", (double)g.st.busy_us / 1000.0,
                     "since_reset_ms", (json_int_t)((g.st.last_us - g.st.since_us) / 1000),
                     "window_requests", (json_int_t)wreq, "window_tokens", (json_int_t)wtok);
}

static void stats_reset(void)
{
    busy_tick();
    uint32_t inf = g.st.in_flight;
    int64_t t = g.st.last_us;
    memset(&g.st, 0, sizeof g.st);
    g.st.in_flight = g.st.peak = inf;
    g.st.last_us = g.st.since_us = t;
}

/* A chat the limiter refused: which limit (the first that is full, as OpenAI names one),
 * counted, and the provider's message. */
static const char *refusal(uint64_t tokens, uint64_t retry_ms, char *msg, size_t cap)
{
    uint64_t wreq, wtok;
    win_sum(&wreq, &wtok);
    win_count(); /* after the sum: "Used" is what the window held before this one */
    g.st.refused++;
    double s = (double)retry_ms / 1000.0;
    if (opt.max_conc && g.st.in_flight >= (uint64_t)opt.max_conc) {
        g.st.refused_conc++;
        snprintf(msg, cap, "Rate limit reached for concurrent requests: Limit %ld, In flight "
                 "%u. Please try again in %.3gs.", opt.max_conc, g.st.in_flight, s);
        return "requests";
    }
    if (opt.rpm && wreq >= (uint64_t)opt.rpm) {
        g.st.refused_req++;
        snprintf(msg, cap, "Rate limit reached for requests per min (RPM): Limit %ld, Used "
                 "%llu, Requested 1. Please try again in %.3gs.", opt.rpm,
                 (unsigned long long)wreq, s);
        return "requests";
    }
    g.st.refused_tok++;
    snprintf(msg, cap, "Rate limit reached for tokens per min (TPM): Limit %ld, Used %llu, "
             "Requested %llu. Please try again in %.3gs.", opt.tpm, (unsigned long long)wtok,
             (unsigned long long)tokens, s);
    return "tokens";
}

/* ---------------------------------------------------------------- the timer heap */

static void heap_swap(size_t a, size_t b)
{
    conn *t = g.heap[a];
    g.heap[a] = g.heap[b];
    g.heap[b] = t;
    g.heap[a]->heap_idx = (int)a;
    g.heap[b]->heap_idx = (int)b;
}

static void heap_fix(size_t i)
{
    while (i > 0 && g.heap[(i - 1) / 2]->wake > g.heap[i]->wake) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < g.nheap && g.heap[l]->wake < g.heap[m]->wake)
            m = l;
        if (r < g.nheap && g.heap[r]->wake < g.heap[m]->wake)
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
}

/* Every connection fits: the heap has max_conns slots. */
static void heap_set(conn *c, int64_t when)
{
    c->wake = when;
    if (c->heap_idx < 0) {
        c->heap_idx = (int)g.nheap;
        g.heap[g.nheap++] = c;
    }
    heap_fix((size_t)c->heap_idx);
}

static void heap_del(conn *c)
{
    if (c->heap_idx < 0)
        return;
    size_t i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    if (i != --g.nheap) {
        g.heap[i] = g.heap[g.nheap];
        g.heap[i]->heap_idx = (int)i;
        heap_fix(i);
    }
}

/* ---------------------------------------------------------------- the log */

static json_t *jstr(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    return j ? j : json_string("(invalid UTF-8)");
}

static void log_request(conn *c, const ep_ask *a, int status, int key_ok, const ep_reply *r)
{
    if (!g.log)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *j = json_object();
    if (!j)
        return;
    json_object_set_new(j, "t_ms", json_integer((json_int_t)ts.tv_sec * 1000 +
                                                ts.tv_nsec / 1000000));
    json_object_set_new(j, "path", jstr(c->have_head ? c->head.path : NULL));
    json_object_set_new(j, "model", jstr(a ? a->model : NULL));
    json_object_set_new(j, "stream", json_boolean(a && a->stream));
    json_object_set_new(j, "request_id", jstr(c->have_head ? c->head.request_id : NULL));
    json_object_set_new(j, "attempt", jstr(c->have_head ? c->head.attempt : NULL));
    json_object_set_new(j, "status", status ? json_integer(status) : json_null());
    json_object_set_new(j, "key_ok", key_ok < 0 ? json_null() : json_boolean(key_ok));
    json_object_set_new(j, "directive", jstr(a ? a->directive : NULL));
    ep_usage u;
    if (r && ep_reply_usage(r, &u))
        json_object_set_new(j, "usage",
                            json_pack("{s:I,s:I,s:I,s:I}", "input_tokens", (json_int_t)u.input,
                                      "output_tokens", (json_int_t)u.output,
                                      "cache_read_tokens", (json_int_t)u.cache_read,
                                      "cache_write_tokens", (json_int_t)u.cache_write));
    else
        json_object_set_new(j, "usage", json_null());
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (s) {
        fprintf(g.log, "%s\n", s);
        fflush(g.log);
        free(s);
    }
}

/* ---------------------------------------------------------------- connections */

static size_t out_pending(const conn *c)
{
    return c->out.len - c->out_off;
}

static void conn_free(conn *c)
{
    ep_head_clear(&c->head);
    ep_buf_free(&c->body);
    ep_buf_free(&c->out);
    ep_buf_free(&c->piece);
    ep_reply_free(c->reply);
    free(c);
}

/* Closes at once; the memory lives until the end of this loop turn, as epoll events
 * already fetched may still name it. */
static void conn_close(conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    slot_release(c);
    heap_del(c);
    epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        g.live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next_dead = g.dead;
    g.dead = c;
    g.nconns--;
}

static void free_dead(void)
{
    while (g.dead) {
        conn *c = g.dead;
        g.dead = c->next_dead;
        conn_free(c);
    }
}

static void update_events(conn *c)
{
    uint32_t m = 0;
    switch (c->state) {
    case S_HEAD:
    case S_BODY:
    case S_CHUNKED:
    case S_LINGER:
        m = EPOLLIN;
        break;
    case S_REPLY:
    case S_HANG:
        /* Pipelined bytes wait in c->in; a full buffer stops reading but not the news
         * that the peer left. */
        m = c->in_len < sizeof c->in ? EPOLLIN : EPOLLRDHUP;
        break;
    default:
        break;
    }
    if (out_pending(c))
        m |= EPOLLOUT;
    if (m != c->events) {
        struct epoll_event ev = {.events = m, .data.ptr = c};
        if (epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
            c->events = m;
    }
}

/* Writes what is queued; -1 when the peer is gone. */
static int flush(conn *c)
{
    while (out_pending(c)) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, out_pending(c), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_off += (size_t)n;
        c->last_write = now_ms();
    }
    if (c->out_off == c->out.len)
        c->out_off = c->out.len = 0;
    return 0;
}

static int queue(conn *c, const void *p, size_t n)
{
    if (c->out_off) {
        memmove(c->out.p, c->out.p + c->out_off, out_pending(c));
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
    return ep_buf_add(&c->out, p, n, OUT_CAP) == AOS_OK ? 0 : -1;
}

static void consume(conn *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

static void start_reply(conn *c, ep_reply *r)
{
    c->reply = r;
    c->piece_ready = 0;
    c->t0 = now_ms();
    c->state = S_REPLY;
}

/* The end of one request's input: back to reading a head for the next. */
static void reset_request(conn *c)
{
    ep_head_clear(&c->head);
    c->have_head = 0;
    ep_buf_free(&c->body);
    c->body_need = 0;
    memset(&c->chunked, 0, sizeof c->chunked);
}

/* A request we cannot take: answer and close, the way a provider's front end does. */
static void http_fail(conn *c, int status, const char *why)
{
    ep_dialect dia = c->have_head && strcmp(c->head.path, "/v1/messages") == 0
                         ? EP_ANTHROPIC : EP_OPENAI;
    ep_ctx ctx = {0, 0, ++g.seq};
    char w2[256];
    ep_reply *r = NULL;
    if (c->have_head)
        log_request(c, NULL, status, -1, NULL);
    c->keep_alive = 0;
    reset_request(c);
    if (ep_reply_error(dia, status, why, -1, 0, &ctx, &r, w2, sizeof w2) != AOS_OK) {
        c->abrupt = 1;
        c->state = S_CLOSING;
        return;
    }
    start_reply(c, r);
}

static uint32_t attempt_bump(uint64_t key)
{
    size_t slot = (size_t)(key % ATT_SLOTS);
    if (attempts[slot].key != key) {
        attempts[slot].key = key;
        attempts[slot].n = 0;
    }
    return ++attempts[slot].n;
}

enum { R_NONE, R_CHAT_OA, R_CHAT_AN, R_EMBED, R_MODELS, R_STATS, R_RESET };

/* Routes a complete request and starts its reply (or its silence, hang=1). */
static void request_done(conn *c)
{
    ep_head *h = &c->head;
    char why[512] = "";
    ep_ask a;
    int have_ask = 0, key_ok = -1, status = 0;
    ep_reply *r = NULL;
    aos_err e = AOS_OK;
    ep_ctx ctx = {c->keep_alive, h->minor == 0, ++g.seq};
    int route = strcmp(h->path, "/v1/chat/completions") == 0 ? R_CHAT_OA
                : strcmp(h->path, "/v1/messages") == 0       ? R_CHAT_AN
                : strcmp(h->path, "/v1/embeddings") == 0     ? R_EMBED
                : strcmp(h->path, "/v1/models") == 0         ? R_MODELS
                : strcmp(h->path, "/v1/stats") == 0          ? R_STATS
                : strcmp(h->path, "/v1/stats/reset") == 0    ? R_RESET
                                                             : R_NONE;
    ep_dialect dia = route == R_CHAT_AN || (route == R_MODELS && (h->x_api_key ||
                                                                 h->anthropic_version))
                         ? EP_ANTHROPIC : EP_OPENAI;
    const char *msg = NULL;
    int retry_after = -1;
    unsigned delay = 0;
    if (route == R_NONE) {
        status = 404;
        snprintf(why, sizeof why, "Unknown request URL: %s %.400s", h->method, h->path);
        msg = why;
    } else if (strcmp(h->method, route == R_MODELS || route == R_STATS ? "GET" : "POST") !=
               0) {
        status = 405;
        msg = "Method not allowed";
    }
    if (!status && (route == R_STATS || route == R_RESET)) {
        /* the endpoint's own counts: no key, no body */
        if (route == R_RESET)
            stats_reset();
        e = ep_reply_json(200, stats_json(), &ctx, &r, why, sizeof why);
        log_request(c, NULL, 200, -1, NULL);
        reset_request(c);
        if (e != AOS_OK) {
            fprintf(stderr, "aos-test-llm-endpoint: %s\n", why);
            c->abrupt = 1;
            c->state = S_CLOSING;
            return;
        }
        start_reply(c, r);
        return;
    }
    if (!status && opt.expect_key) {
        const char *auth = h->authorization;
        if (dia == EP_ANTHROPIC) {
            key_ok = h->x_api_key && strcmp(h->x_api_key, opt.expect_key) == 0;
            msg = h->x_api_key ? "invalid x-api-key" : "x-api-key header is required";
        } else {
            key_ok = auth && strncmp(auth, "Bearer ", 7) == 0 &&
                     strcmp(auth + 7, opt.expect_key) == 0;
            msg = auth ? "Incorrect API key provided."
                       : "You didn't provide an API key. You need to provide your API key "
                         "in an Authorization header using Bearer auth (i.e. Authorization: "
                         "Bearer YOUR_KEY).";
        }
        if (!key_ok)
            status = 401;
    }
    if (!status && route == R_CHAT_AN && !h->anthropic_version) {
        status = 400;
        msg = "anthropic-version: header is required";
    }
    if (!status && route != R_MODELS) {
        have_ask = 1;
        e = ep_ask_parse(dia, route == R_EMBED ? EP_EMBED : EP_CHAT, c->body.p ? c->body.p : "",
                         c->body.len, &a, why, sizeof why);
        if (e == AOS_ERR_NOMEM) {
            status = 500;
            msg = "out of memory";
        } else if (e != AOS_OK) {
            status = 400;
            msg = why;
        } else {
            /* the endpoint's pacing, for a directive that sets none */
            if (opt.latency_ms >= 0 && !a.d.has_first_ms)
                a.d.first_ms = (unsigned)opt.latency_ms;
            if (opt.gap_ms >= 0 && !a.d.has_gap_ms)
                a.d.gap_ms = (unsigned)opt.gap_ms;
        }
    }
    if (!status && have_ask && a.d.status) {
        uint64_t key = h->request_id
                           ? ep_hash(h->request_id, strlen(h->request_id), 0x5bd1e995)
                           : ep_hash(c->body.p ? c->body.p : "", c->body.len, 0);
        uint32_t n = attempt_bump(key);
        if (a.d.count == 0 || n <= a.d.count) {
            status = a.d.status;
            retry_after = a.d.retry_after;
            delay = a.d.first_ms;
            msg = status == 429 ? "Rate limit reached (test endpoint directive)"
                  : status == 400 ? "Invalid request (test endpoint directive)"
                  : status >= 500 ? "The server had an error (test endpoint directive)"
                                  : "Error (test endpoint directive)";
        }
    }
    if (!status && have_ask && a.d.hang) {
        log_request(c, &a, 0, key_ok, NULL);
        ep_ask_clear(&a);
        reset_request(c);
        c->state = S_HANG;
        return;
    }
    if (status) {
        e = ep_reply_error(dia, status, msg, retry_after, delay, &ctx, &r, why, sizeof why);
    } else if (route == R_MODELS) {
        status = 200;
        e = ep_reply_models(dia, &ctx, &r, why, sizeof why);
    } else if (route == R_EMBED) {
        status = 200;
        e = ep_reply_embed(&a, &ctx, &r, why, sizeof why);
    } else {
        status = 200;
        e = AOS_OK;
        char past[160];
        if (g.turns) { /* the script's turn for this conversation, as the sim picks it */
            a.turn = json_array_get(g.turns, a.turns);
            if (!a.turn) {
                snprintf(past, sizeof past, "the conversation (%u assistant turns) is past "
                         "the script's %zu turns", a.turns, json_array_size(g.turns));
                e = AOS_ERR_NOT_FOUND;
            }
        }
        if (e == AOS_OK)
            e = ep_reply_chat(&a, &ctx, &r, why, sizeof why);
        else
            e = ep_reply_error(dia, status = 400, past, -1, 0, &ctx, &r, why, sizeof why);
        ep_usage u = {0};
        uint64_t tokens = 0, retry = 0;
        if (e == AOS_OK && ep_reply_usage(r, &u))
            tokens = u.input + u.output + u.cache_read + u.cache_write;
        if (e == AOS_OK && g.lim && sim_admit(g.lim, (uint64_t)now_ms(), tokens, &retry)) {
            /* over a limit: the provider's 429 instead, nothing counted against it */
            char m[320];
            const char *type = refusal(tokens, retry, m, sizeof m);
            ep_reply_free(r);
            r = NULL;
            status = 429;
            e = ep_reply_rate_limited(dia, m, type, retry, &ctx, &r, why, sizeof why);
        } else if (e == AOS_OK) {
            slot_take(c, tokens);
        }
    }
    log_request(c, have_ask ? &a : NULL, status, key_ok, status == 200 ? r : NULL);
    if (have_ask)
        ep_ask_clear(&a);
    reset_request(c);
    if (e != AOS_OK) {
        fprintf(stderr, "aos-test-llm-endpoint: %s\n", why);
        c->abrupt = 1;
        c->state = S_CLOSING;
        return;
    }
    start_reply(c, r);
}

/* One step of reading a request; 1 when it moved on, 0 when it needs more bytes. */
static int input_step(conn *c)
{
    char why[256];
    switch (c->state) {
    case S_HEAD: {
        if (!c->in_len)
            return 0;
        size_t used;
        int status;
        aos_err e = ep_head_parse(c->in, c->in_len, &used, &c->head, &status, why, sizeof why);
        if (e != AOS_OK) {
            http_fail(c, status ? status : 400, why);
            return 1;
        }
        if (!used)
            return 0;
        consume(c, used);
        c->have_head = 1;
        c->keep_alive = c->head.keep_alive;
        if (c->head.content_length > (int64_t)EP_BODY_MAX) {
            http_fail(c, 413, "request body over 8 MiB");
            return 1;
        }
        int body = c->head.chunked || c->head.content_length > 0;
        if (body && c->head.expect_continue && c->head.minor == 1 &&
            queue(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0) {
            c->abrupt = 1;
            c->state = S_CLOSING;
            return 1;
        }
        if (c->head.chunked) {
            c->state = S_CHUNKED;
        } else if (c->head.content_length > 0) {
            c->body_need = (uint64_t)c->head.content_length;
            if (ep_buf_reserve(&c->body, (size_t)c->body_need, EP_BODY_MAX) != AOS_OK) {
                http_fail(c, 500, "out of memory");
                return 1;
            }
            c->state = S_BODY;
        } else {
            request_done(c);
        }
        return 1;
    }
    case S_BODY: {
        size_t take = c->body_need - c->body.len;
        if (take > c->in_len)
            take = c->in_len;
        if (take) {
            ep_buf_add(&c->body, c->in, take, EP_BODY_MAX);
            consume(c, take);
        }
        if (c->body.len == c->body_need) {
            request_done(c);
            return 1;
        }
        return 0;
    }
    case S_CHUNKED: {
        if (!c->in_len)
            return 0;
        size_t used;
        int done;
        aos_err e = ep_chunked_feed(&c->chunked, c->in, c->in_len, &used, &c->body, &done, why,
                                    sizeof why);
        consume(c, used);
        if (e != AOS_OK) {
            http_fail(c, e == AOS_ERR_TOO_BIG ? 413 : 400, why);
            return 1;
        }
        if (done) {
            request_done(c);
            return 1;
        }
        return used > 0;
    }
    default:
        return 0;
    }
}

/* Moves due pieces of the reply to the output; 1 when the reply ended (state changed). */
static int pump(conn *c)
{
    char why[256];
    for (;;) {
        if (out_pending(c) >= HIGH_WATER)
            return 0;
        if (!c->piece_ready) {
            int step = 0, sep = 0;
            uint32_t at = 0;
            aos_err e = ep_reply_next(c->reply, &c->piece, &at, &sep, &step, why, sizeof why);
            if (e != AOS_OK || step != EP_STEP_PIECE) {
                if (e != AOS_OK)
                    fprintf(stderr, "aos-test-llm-endpoint: %s\n", why);
                /* the last piece is queued: the provider is done with this request */
                slot_release(c);
                ep_reply_free(c->reply);
                c->reply = NULL;
                if (e == AOS_OK && step == EP_STEP_DONE && c->keep_alive) {
                    c->state = S_HEAD;
                } else {
                    c->abrupt = e != AOS_OK || step == EP_STEP_CLOSE;
                    c->state = S_CLOSING;
                }
                return 1;
            }
            c->piece_ready = 1;
            c->piece_at = at;
            c->piece_sep = sep;
        }
        int64_t due = c->t0 + c->piece_at;
        if (c->piece_sep) {
            /* A piece of its own: the previous one must be out of our hands first. */
            if (out_pending(c))
                return 0;
            if (due < c->last_write + 1)
                due = c->last_write + 1;
        }
        if (due > now_ms()) {
            heap_set(c, due);
            return 0;
        }
        if (queue(c, c->piece.p, c->piece.len) != 0) {
            c->abrupt = 1;
            c->state = S_CLOSING;
            return 1;
        }
        c->piece_ready = 0;
        if (c->piece_sep && flush(c) < 0) {
            c->abrupt = 1;
            c->state = S_CLOSING;
            return 1;
        }
    }
}

/* Drives a connection as far as it can go now, then sets its epoll interest. */
static void conn_run(conn *c)
{
    for (;;) {
        if (c->dead)
            return;
        if (flush(c) < 0) {
            conn_close(c);
            return;
        }
        int moved = 0;
        switch (c->state) {
        case S_HEAD:
        case S_BODY:
        case S_CHUNKED:
            moved = input_step(c);
            break;
        case S_REPLY:
            moved = pump(c);
            break;
        case S_CLOSING:
            if (out_pending(c))
                break;
            if (c->abrupt) {
                conn_close(c);
                return;
            }
            /* Unread request bytes would turn our close into a reset that can eat the
             * answer: stop sending, read a little longer, then close. */
            shutdown(c->fd, SHUT_WR);
            c->state = S_LINGER;
            heap_set(c, now_ms() + LINGER_MS);
            break;
        default:
            break;
        }
        if (!moved)
            break;
    }
    update_events(c);
}

static void conn_readable(conn *c)
{
    char scratch[16384];
    char *dst = c->in + c->in_len;
    size_t room = sizeof c->in - c->in_len;
    if (c->state == S_BODY && c->in_len == 0) {
        dst = c->body.p + c->body.len;
        room = (size_t)(c->body_need - c->body.len);
    } else if (c->state == S_LINGER || c->state == S_CLOSING) {
        dst = scratch;
        room = sizeof scratch;
    }
    if (!room)
        return;
    ssize_t n = read(c->fd, dst, room);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != EWOULDBLOCK)
            conn_close(c);
        return;
    }
    if (n == 0) {
        conn_close(c);
        return;
    }
    if (dst == scratch) {
        c->discarded += (uint64_t)n;
        if (c->discarded > LINGER_BYTES)
            conn_close(c);
    } else if (dst == c->in + c->in_len) {
        c->in_len += (size_t)n;
    } else {
        c->body.len += (size_t)n;
    }
}

static void conn_event(conn *c, uint32_t ev)
{
    if (c->dead)
        return;
    if (ev & (EPOLLERR | EPOLLHUP)) {
        conn_close(c);
        return;
    }
    if ((ev & EPOLLRDHUP) && !(c->events & EPOLLIN)) {
        conn_close(c);
        return;
    }
    if (ev & EPOLLIN) {
        conn_readable(c);
        if (c->dead)
            return;
    }
    conn_run(c);
}

static void on_timer(conn *c)
{
    if (c->state == S_LINGER)
        conn_close(c);
    else
        conn_run(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        if (g.nconns >= g.max_conns) {
            close(fd);
            continue;
        }
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->kind = K_CONN;
        c->fd = fd;
        c->heap_idx = -1;
        c->state = S_HEAD;
        c->head.content_length = -1;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = g.live;
        if (g.live)
            g.live->prev = c;
        g.live = c;
        g.nconns++;
    }
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f, "usage: aos-test-llm-endpoint [--port N] [--log FILE] [--expect-key KEY]\n"
               "                             [--stdin-eof] [--max-s S]\n"
               "                             [--max-concurrency N] [--rpm N] [--tpm N]\n"
               "                             [--latency-ms MS] [--gap-ms MS] [--script FILE]\n"
               "Serves OpenAI and Anthropic wire formats on 127.0.0.1; prints \"port N\".\n"
               "With a limit, chats over it get 429 with Retry-After and retry-after-ms;\n"
               "GET /v1/stats counts them.\n"
               "With --script (a sim provider's script: turns of text and tool_calls), a\n"
               "chat with N assistant messages is answered with turn N, like the sim.\n");
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    static const struct option longs[] = {
        {"port", required_argument, NULL, 'p'},   {"log", required_argument, NULL, 'l'},
        {"expect-key", required_argument, NULL, 'k'}, {"stdin-eof", no_argument, NULL, 'e'},
        {"max-s", required_argument, NULL, 'm'},  {"help", no_argument, NULL, 'h'},
        {"max-concurrency", required_argument, NULL, 'C'}, {"rpm", required_argument, NULL, 'R'},
        {"tpm", required_argument, NULL, 'T'},    {"latency-ms", required_argument, NULL, 'L'},
        {"gap-ms", required_argument, NULL, 'G'}, {"script", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    /* the limits as aos.yaml takes them (uint32), the pacing as the directive does */
    static const struct {
        int ch;
        const char *name;
        long max;
        long *dst;
    } nums[] = {
        {'C', "--max-concurrency", 1000000, &opt.max_conc}, {'R', "--rpm", 1000000000, &opt.rpm},
        {'T', "--tpm", 2000000000, &opt.tpm},  {'L', "--latency-ms", 600000, &opt.latency_ms},
        {'G', "--gap-ms", 600000, &opt.gap_ms},
    };
    int ch;
    long v;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'p':
            if (parse_long(optarg, 0, 65535, &v) != 0) {
                fprintf(stderr, "aos-test-llm-endpoint: --port takes 0..65535\n");
                return 2;
            }
            opt.port = (int)v;
            break;
        case 'l':
            opt.log_path = optarg;
            break;
        case 'k':
            opt.expect_key = optarg;
            break;
        case 'e':
            opt.stdin_eof = 1;
            break;
        case 's':
            opt.script_path = optarg;
            break;
        case 'm':
            if (parse_long(optarg, 1, 86400, &v) != 0) {
                fprintf(stderr, "aos-test-llm-endpoint: --max-s takes 1..86400\n");
                return 2;
            }
            opt.max_s = v;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'C':
        case 'R':
        case 'T':
        case 'L':
        case 'G':
            for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
                if (nums[i].ch == ch) {
                    if (parse_long(optarg, 0, nums[i].max, &v) != 0) {
                        fprintf(stderr, "aos-test-llm-endpoint: %s takes 0..%ld\n",
                                nums[i].name, nums[i].max);
                        return 2;
                    }
                    *nums[i].dst = v;
                }
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    return 0;
}

/* More descriptors than the default 1024, so 1,000+ connections fit. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t n = rl.rlim_cur > 65536 + 32 ? 65536 + 32 : rl.rlim_cur;
    g.max_conns = n > 64 ? (size_t)(n - 32) : 32;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* --script FILE into g.turns: the YAML the sim provider reads (turns: [{text, tool_calls}]),
 * read with aos's own safe loader. */
static int load_script(const char *path)
{
    char why[512];
    FILE *f = fopen(path, "re");
    char *buf = f ? malloc(SCRIPT_MAX) : NULL;
    size_t n = buf ? fread(buf, 1, SCRIPT_MAX, f) : 0;
    if (f)
        fclose(f);
    if (!buf || n == SCRIPT_MAX) {
        fprintf(stderr, "aos-test-llm-endpoint: %s: %s\n", path,
                buf ? "over 1 MiB" : strerror(errno));
        free(buf);
        return -1;
    }
    yaml_document_t doc;
    aos_err e = aos_yaml_load(path, buf, n, 32, &doc, why, sizeof why);
    free(buf);
    if (e != AOS_OK) {
        fprintf(stderr, "aos-test-llm-endpoint: %s\n", why);
        return -1;
    }
    aos_yjson_err err = {0};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    json_t *j = root ? aos_yjson(&doc, root, 32, &err) : NULL;
    yaml_document_delete(&doc);
    json_t *turns = json_object_get(j, "turns");
    if (!json_is_array(turns)) {
        fprintf(stderr, "aos-test-llm-endpoint: %s: no turns list (%s)\n", path,
                err.what[0] ? err.what : "turns: [...]");
        json_decref(j);
        return -1;
    }
    g.turns = json_incref(turns);
    json_decref(j);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = parse_args(argc, argv);
    if (rc)
        return rc;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    int lfd = listen_on(opt.port);
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    g.heap = calloc(g.max_conns, sizeof *g.heap);
    if (sfd < 0 || lfd < 0 || g.ep < 0 || !g.heap) {
        fprintf(stderr, "aos-test-llm-endpoint: cannot listen on 127.0.0.1:%d: %s\n", opt.port,
                strerror(errno));
        return 1;
    }
    if (opt.max_conc || opt.rpm || opt.tpm) {
        Aos__Llm__Limits l = AOS__LLM__LIMITS__INIT;
        l.max_concurrency = (uint32_t)opt.max_conc;
        l.requests_per_min = (uint32_t)opt.rpm;
        l.tokens_per_min = (uint32_t)opt.tpm;
        g.lim = sim_limiter_new(&l);
        if (!g.lim) {
            fprintf(stderr, "aos-test-llm-endpoint: out of memory\n");
            return 1;
        }
    }
    if (opt.script_path && load_script(opt.script_path) != 0)
        return 2;
    g.st.last_us = g.st.since_us = now_us();
    if (opt.log_path) {
        g.log = fopen(opt.log_path, "we");
        if (!g.log) {
            fprintf(stderr, "aos-test-llm-endpoint: %s: %s\n", opt.log_path, strerror(errno));
            return 1;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
    epoll_ctl(g.ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &tag_signal;
    epoll_ctl(g.ep, EPOLL_CTL_ADD, sfd, &ev);
    if (opt.stdin_eof) {
        ev.data.ptr = &tag_stdin;
        /* A regular file or /dev/null cannot be polled: for it EOF is now. */
        if (epoll_ctl(g.ep, EPOLL_CTL_ADD, 0, &ev) != 0)
            g.stop = 1;
    }
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    int64_t deadline = now_ms() + opt.max_s * 1000;
    struct epoll_event evs[MAX_EVENTS];
    while (!g.stop) {
        int64_t now = now_ms();
        if (now >= deadline)
            break;
        int64_t wait = deadline - now;
        if (g.nheap && g.heap[0]->wake - now < wait)
            wait = g.heap[0]->wake > now ? g.heap[0]->wake - now : 0;
        int n = epoll_wait(g.ep, evs, MAX_EVENTS, (int)wait);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == K_LISTEN) {
                accept_all(lfd);
            } else if (kind == K_SIGNAL) {
                g.stop = 1;
            } else if (kind == K_STDIN) {
                char b[4096];
                ssize_t r = read(0, b, sizeof b);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                    g.stop = 1;
            } else {
                conn_event(evs[i].data.ptr, evs[i].events);
            }
        }
        now = now_ms();
        while (g.nheap && g.heap[0]->wake <= now) {
            conn *c = g.heap[0];
            heap_del(c);
            on_timer(c);
        }
        free_dead();
    }
    while (g.live)
        conn_close(g.live);
    free_dead();
    if (g.lim) {
        /* the counts of a limits run, for whoever reads our stdout to the end */
        json_t *j = stats_json();
        char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (s)
            printf("stats %s\n", s);
        free(s);
        json_decref(j);
        fflush(stdout);
        sim_limiter_free(g.lim);
    }
    free(g.heap);
    close(lfd);
    close(sfd);
    close(g.ep);
    if (g.log)
        fclose(g.log);
    return 0;
}
