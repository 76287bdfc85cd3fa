/* aos-llm's engine: every provider call in flight lives in one libcurl multi loop on one
 * thread (with the sim provider's paced steps and retry waits on the same timer heap). */
#include "engine.h"
#include "trail.h"

#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/log.h"
#include "monotime.h"
#include "sim.h"
#include "wire.h"

#define BODY_MAX_DEFAULT (16u << 20)
#define ERRBODY_MAX (16u << 10)     /* what we keep of an error body: its message */
#define RETRIES_DEFAULT 2u
#define BACKOFF_BASE_MS 200u
#define BACKOFF_MAX_MS 5000u
#define DEADLINE_DEFAULT_MS 300000u /* a request without one (the kernel always sets one) */
#define MARGIN_MS 20u               /* an answer must still reach the caller in time */

enum { P_OPENAI, P_ANTHROPIC, P_SIM };
enum { J_CHAT, J_EMBED };

typedef struct job job;

typedef struct prov {
    const Aos__Llm__Provider *cfg;
    int kind;
    char name[64];
    char chat_url[1100], embed_url[1100];
    struct curl_slist *hdrs;       /* content type and credentials: built once */
    sim_limiter *lim;              /* sim only */
    unsigned inflight;             /* loop thread only */
    job *wait_head, *wait_tail;    /* over max_concurrency: in order */
    atomic_ullong calls, failed, retries, rate_limited, in_tok, out_tok, resent;
} prov;

struct job {
    eng *e;
    srv_call *call;
    int type;
    Aos__Llm__ChatRequest *req;
    Aos__Llm__EmbedRequest *ereq;
    prov *p;
    const Aos__Llm__Model *m;
    uint64_t deadline_mono_ms;
    int64_t row;
    int resent;
    atomic_int cancelled;

    /* the loop thread's */
    char *body;                    /* the request body, kept for retries */
    size_t body_len;
    CURL *h;
    struct curl_slist *req_hdrs;
    wire_dec *dec;
    long http_status;
    uint8_t *buf;                  /* a non-stream body, or an error body */
    size_t buf_len;
    uint64_t recv_bytes;
    uint64_t retry_after_ms;
    aos_err feed_err;              /* why the write callback stopped the transfer */
    char feed_why[AOS_ERRMSG_MAX];
    unsigned attempts;
    uint32_t parts;
    uint64_t t_attempt_us, ttft_us;
    uint64_t wait_from_us, slot_at_us; /* a held provider: queued for a slot, got it (0: not) */
    sim_plan *plan;
    size_t step;
    uint64_t when_us;              /* on the timer heap: next step or the retry */
    int hidx;                      /* heap index, -1 when not on it */
    int waiting;                   /* on its provider's wait list */
    job *next;                     /* incoming queue, wait list */
    job *aprev, *anext;            /* active list (cancel scan) */
};

struct eng {
    srv *s;
    const Aos__Llm__Config *cfg;
    acct *a;
    prov *provs;
    size_t nprov;
    CURLM *multi;
    pthread_t th;
    pthread_mutex_t mu;
    job *in_head, *in_tail;        /* under mu: ready to run */
    int stop;
    job **heap;
    size_t nheap, heap_cap;
    job *active;
    uint64_t max_body;
    atomic_ullong started, finished, parts, cancelled, replayed;
};

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static const char *bstr(ProtobufCBinaryData b, char *out, size_t cap)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n)
        memcpy(out, b.data, n);
    out[n] = 0;
    return out;
}

/* A provider's error text may quote what it was sent: a key never leaves aos-llm. */
static void scrub(char *why, const prov *p)
{
    if (!p || !p->cfg->api_key.len || p->cfg->api_key.len < 4)
        return;
    const char *k = (const char *)p->cfg->api_key.data;
    size_t kl = p->cfg->api_key.len;
    char *hit;
    while ((hit = memmem(why, strlen(why), k, kl))) {
        static const char mask[] = "[key]";
        size_t rest = strlen(hit + kl);
        memcpy(hit, mask, sizeof mask - 1);
        memmove(hit + sizeof mask - 1, hit + kl, rest + 1);
    }
}

/* ---- the timer heap (loop thread) ---------------------------------------------------- */

static void heap_swap(eng *e, size_t i, size_t j)
{
    job *t = e->heap[i];
    e->heap[i] = e->heap[j];
    e->heap[j] = t;
    e->heap[i]->hidx = (int)i;
    e->heap[j]->hidx = (int)j;
}

static void heap_up(eng *e, size_t i)
{
    while (i && e->heap[(i - 1) / 2]->when_us > e->heap[i]->when_us) {
        heap_swap(e, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static void heap_down(eng *e, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < e->nheap && e->heap[l]->when_us < e->heap[m]->when_us)
            m = l;
        if (r < e->nheap && e->heap[r]->when_us < e->heap[m]->when_us)
            m = r;
        if (m == i)
            return;
        heap_swap(e, i, m);
        i = m;
    }
}

static int heap_add(eng *e, job *j, uint64_t when_us)
{
    if (e->nheap == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 256;
        job **h = realloc(e->heap, cap * sizeof *h);
        if (!h)
            return -1;
        e->heap = h;
        e->heap_cap = cap;
    }
    j->when_us = when_us;
    j->hidx = (int)e->nheap;
    e->heap[e->nheap++] = j;
    heap_up(e, (size_t)j->hidx);
    return 0;
}

static void heap_del(eng *e, job *j)
{
    if (j->hidx < 0)
        return;
    size_t i = (size_t)j->hidx, last = e->nheap - 1;
    if (i != last) {
        heap_swap(e, i, last);
        e->nheap--;
        heap_down(e, i);
        heap_up(e, i);
    } else {
        e->nheap--;
    }
    j->hidx = -1;
}

/* ---- finishing a call ---------------------------------------------------------------- */

static void job_free(job *j)
{
    if (j->req)
        aos__llm__chat_request__free_unpacked(j->req, NULL);
    if (j->ereq)
        aos__llm__embed_request__free_unpacked(j->ereq, NULL);
    if (j->plan)
        sim_plan_free(j->plan);
    if (j->dec)
        wire_dec_free(j->dec);
    free(j->body);
    free(j->buf);
    free(j);
}

/* What finish hands the accounting thread: the answer waits for its record. */
typedef struct answer {
    job *j;
    aos_err status;
    char why[AOS_ERRMSG_MAX];
    uint8_t *payload;
    size_t len;
    uint64_t retry_after_ms;
} answer;

static void answered(void *arg)
{
    answer *an = arg;
    srv_call *call = an->j->call;
    trail_reply(srv_call_srv(call), call, an->j->type == J_EMBED, an->status, an->why,
                an->payload, an->len);
    if (an->retry_after_ms)
        srv_call_retry_after(an->j->call, an->retry_after_ms);
    srv_call_done(an->j->call, an->status, an->why[0] ? an->why : NULL, an->payload, an->len);
    job_free(an->j);
    free(an->payload);
    free(an);
}

static uint64_t cost_of(const Aos__Llm__Model *m, const Aos__Llm__Usage *u)
{
    if (!m || !u)
        return 0;
    /* USD per million tokens times tokens is micro-USD */
    double c = (double)u->input_tokens * m->price_input +
               (double)u->output_tokens * m->price_output +
               (double)u->cache_read_tokens * m->price_cache_read +
               (double)u->cache_write_tokens * m->price_cache_write;
    return isfinite(c) && c > 0 ? (uint64_t)llround(c) : 0;
}

static void start_waiting(eng *e, prov *p);

static uint32_t us32(uint64_t v) { return v < UINT32_MAX ? (uint32_t)v : UINT32_MAX; }

/* How long the call held its provider's slot in aos-llm, and waited for it (0, 0: the
 * provider is not held to a concurrency here): aosd's scheduler sizes its pipeline so. */
static void slot_times(const job *j, uint32_t *slot_us, uint32_t *wait_us)
{
    *slot_us = j->slot_at_us ? us32(now_us() - j->slot_at_us) : 0;
    *wait_us = j->slot_at_us ? us32(j->slot_at_us - j->wait_from_us) : 0;
    if (j->slot_at_us && !*slot_us)
        *slot_us = 1;
}

/* The call is over on the loop's side: release its slot, write its usage, then answer.
 * payload (a packed reply) becomes the answer's. usage may be NULL (nothing reported). */
static void finish(job *j, aos_err status, const char *why, uint8_t *payload, size_t len,
                   const Aos__Llm__Usage *usage, uint64_t cost)
{
    eng *e = j->e;
    prov *p = j->p;
    if (j->aprev)
        j->aprev->anext = j->anext;
    else if (e->active == j)
        e->active = j->anext;
    if (j->anext)
        j->anext->aprev = j->aprev;
    j->aprev = j->anext = NULL;
    heap_del(e, j);
    if (j->h) {
        curl_multi_remove_handle(e->multi, j->h);
        curl_easy_cleanup(j->h);
        j->h = NULL;
    }
    curl_slist_free_all(j->req_hdrs);
    j->req_hdrs = NULL;
    if (p) {
        if (p->lim && j->attempts)
            sim_release(p->lim);
        if (p->inflight)
            p->inflight--;
        atomic_fetch_add(&p->calls, 1);
        if (status != AOS_OK)
            atomic_fetch_add(&p->failed, 1);
        if (status == AOS_ERR_RATE_LIMITED)
            atomic_fetch_add(&p->rate_limited, 1);
        if (usage) {
            atomic_fetch_add(&p->in_tok, usage->input_tokens + usage->cache_read_tokens +
                                             usage->cache_write_tokens);
            atomic_fetch_add(&p->out_tok, usage->output_tokens);
        }
        start_waiting(e, p);
    }
    atomic_fetch_add(&e->finished, 1);

    answer *an = calloc(1, sizeof *an);
    if (!an) { /* no memory even to answer properly: answer without the books */
        free(payload);
        srv_call_done(j->call, AOS_ERR_NOMEM, "aos-llm is out of memory", NULL, 0);
        job_free(j);
        return;
    }
    an->j = j;
    an->status = status;
    if (why)
        snprintf(an->why, sizeof an->why, "%s", why);
    scrub(an->why, p);
    an->payload = payload;
    an->len = len;
    an->retry_after_ms = status == AOS_ERR_RATE_LIMITED ? j->retry_after_ms : 0;
    if (!j->row) { /* never recorded: nothing was sent */
        answered(an);
        return;
    }
    acct_result r = {.status = status, .attempts = j->attempts, .cost_micro_usd = cost,
                     .ttft_us = (uint32_t)(j->ttft_us < UINT32_MAX ? j->ttft_us : UINT32_MAX)};
    if (usage) {
        r.input_tokens = usage->input_tokens;
        r.output_tokens = usage->output_tokens;
        r.cache_read_tokens = usage->cache_read_tokens;
        r.cache_write_tokens = usage->cache_write_tokens;
    }
    if (status != AOS_OK)
        snprintf(r.error, sizeof r.error, "%.255s", an->why[0] ? an->why : aos_strerror(status));
    else
        r.reply = payload, r.reply_len = len;
    acct_end(e->a, j->row, &r, answered, an);
}

static void fail(job *j, aos_err status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(job *j, aos_err status, const char *fmt, ...)
{
    char why[AOS_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    finish(j, status, why, NULL, 0, NULL, 0);
}

/* A chat reply assembled by a wire decoder or the sim: stamp who answered and the cost,
 * pack it, finish. r is borrowed (a shallow copy gets our fields). */
static void finish_chat(job *j, const Aos__Llm__ChatReply *r)
{
    Aos__Llm__ChatReply out = *r;
    out.provider = (ProtobufCBinaryData){strlen(j->p->name), (uint8_t *)j->p->name};
    out.model = j->m->name;
    out.cost_micro_usd = cost_of(j->m, r->usage);
    out.attempts = j->attempts;
    out.ttft_us = (uint32_t)(j->ttft_us < UINT32_MAX ? j->ttft_us : UINT32_MAX);
    out.resent = j->resent != 0;
    slot_times(j, &out.slot_us, &out.slot_wait_us);
    size_t n = aos__llm__chat_reply__get_packed_size(&out);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory for the reply");
        return;
    }
    aos__llm__chat_reply__pack(&out, b);
    finish(j, AOS_OK, NULL, b, n, r->usage, out.cost_micro_usd);
}

static void finish_embed(job *j, const Aos__Llm__EmbedReply *r)
{
    Aos__Llm__EmbedReply out = *r;
    out.provider = (ProtobufCBinaryData){strlen(j->p->name), (uint8_t *)j->p->name};
    out.model = j->m->name;
    slot_times(j, &out.slot_us, &out.slot_wait_us);
    size_t n = aos__llm__embed_reply__get_packed_size(&out);
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory for the reply");
        return;
    }
    aos__llm__embed_reply__pack(&out, b);
    finish(j, AOS_OK, NULL, b, n, r->usage, cost_of(j->m, r->usage));
}

/* A part for the caller. CANCELLED/TIMEOUT: the caller is gone, stop the work. */
static aos_err send_delta(job *j, const Aos__Llm__ChatDelta *d)
{
    if (!j->parts)
        j->ttft_us = now_us() - j->t_attempt_us;
    size_t n = aos__llm__chat_delta__get_packed_size(d);
    uint8_t small[4096], *b = n <= sizeof small ? small : malloc(n);
    if (!b)
        return AOS_ERR_NOMEM;
    aos__llm__chat_delta__pack(d, b);
    aos_err rc = srv_call_part(j->call, b, n);
    if (b != small)
        free(b);
    if (rc == AOS_OK) {
        j->parts++;
        atomic_fetch_add(&j->e->parts, 1);
    }
    return rc;
}

/* ---- the sim provider -------------------------------------------------------------- */

static void sim_step(job *j)
{
    size_t n = sim_plan_steps(j->plan);
    if (j->step < n) {
        uint32_t delay;
        const Aos__Llm__ChatDelta *d = sim_plan_delta(j->plan, j->step, &delay);
        aos_err rc = send_delta(j, d);
        if (rc != AOS_OK) {
            fail(j, rc, "%s", rc == AOS_ERR_NOMEM ? "aos-llm is out of memory"
                                                  : "the caller went away mid-stream");
            return;
        }
        j->step++;
        if (j->step < n) {
            sim_plan_delta(j->plan, j->step, &delay);
            if (delay) {
                if (heap_add(j->e, j, now_us() + delay))
                    fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory");
                return;
            }
            /* no pacing: the next steps at once, but give the loop a turn between calls */
            if (heap_add(j->e, j, now_us()))
                fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory");
            return;
        }
    }
    finish_chat(j, sim_plan_reply(j->plan));
}

static void sim_run(job *j)
{
    prov *p = j->p;
    char why[AOS_ERRMSG_MAX] = "";
    j->t_attempt_us = now_us();
    if (j->type == J_EMBED) {
        Aos__Llm__EmbedReply *r = NULL;
        aos_err rc = sim_embed(p->cfg->sim, j->ereq, &r, why, sizeof why);
        if (rc != AOS_OK) {
            fail(j, rc, "sim: %s", why);
            return;
        }
        j->attempts = 0; /* the limiter is for chats */
        finish_embed(j, r);
        sim_embed_free(r);
        return;
    }
    aos_err rc = sim_chat(p->cfg->sim, j->req, &j->plan, why, sizeof why);
    if (rc != AOS_OK) {
        fail(j, rc, "sim: %s", why);
        return;
    }
    const Aos__Llm__ChatReply *r = sim_plan_reply(j->plan);
    uint64_t tokens = r->usage ? r->usage->input_tokens + r->usage->output_tokens +
                                     r->usage->cache_read_tokens
                               : 0;
    uint64_t retry = 0;
    if (sim_admit(p->lim, aos_mono_ms(), tokens, &retry)) {
        j->retry_after_ms = retry ? retry : 1000;
        fail(j, AOS_ERR_RATE_LIMITED,
             "sim: 429 Too Many Requests (the provider's limits: %u requests/min, %u "
             "tokens/min, %u at once); retry after %llu ms",
             p->cfg->limits ? p->cfg->limits->requests_per_min : 0,
             p->cfg->limits ? p->cfg->limits->tokens_per_min : 0,
             p->cfg->limits ? p->cfg->limits->max_concurrency : 0,
             (unsigned long long)j->retry_after_ms);
        return;
    }
    j->attempts = 1;
    j->step = 0;
    uint32_t delay = 0;
    if (sim_plan_steps(j->plan))
        sim_plan_delta(j->plan, 0, &delay);
    if (heap_add(j->e, j, now_us() + delay))
        fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory");
}

/* ---- HTTP providers ------------------------------------------------------------------ */

static void on_delta(void *arg, const Aos__Llm__ChatDelta *d)
{
    job *j = arg;
    if (j->feed_err)
        return;
    aos_err rc = send_delta(j, d);
    if (rc != AOS_OK) {
        j->feed_err = rc;
        snprintf(j->feed_why, sizeof j->feed_why, "%s",
                 rc == AOS_ERR_NOMEM ? "aos-llm is out of memory"
                                     : "the caller went away mid-stream");
    }
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    job *j = arg;
    size_t n = size * nmemb;
    if (!j->http_status)
        curl_easy_getinfo(j->h, CURLINFO_RESPONSE_CODE, &j->http_status);
    j->recv_bytes += n;
    if (j->recv_bytes > j->e->max_body) {
        j->feed_err = AOS_ERR_TOO_BIG;
        snprintf(j->feed_why, sizeof j->feed_why,
                 "%s: the response body is over %llu bytes (max_body_bytes); refused",
                 j->p->name, (unsigned long long)j->e->max_body);
        return 0;
    }
    int ok = j->http_status >= 200 && j->http_status < 300;
    if (ok && j->dec) { /* a chat: decoded as it comes, parts go out at once */
        char why[AOS_ERRMSG_MAX - 80];
        aos_err rc = wire_dec_feed(j->dec, data, n, why, sizeof why);
        if (rc != AOS_OK && !j->feed_err) {
            j->feed_err = rc;
            snprintf(j->feed_why, sizeof j->feed_why, "%.63s: %s", j->p->name, why);
        }
        return j->feed_err ? 0 : n;
    }
    /* an embedding body (up to the cap) or an error body (its first bytes: the message) */
    size_t cap = ok ? (size_t)j->e->max_body : ERRBODY_MAX;
    size_t take = j->buf_len + n > cap ? cap - j->buf_len : n;
    if (take) {
        uint8_t *b = realloc(j->buf, j->buf_len + take + 1);
        if (!b) {
            j->feed_err = AOS_ERR_NOMEM;
            snprintf(j->feed_why, sizeof j->feed_why, "aos-llm is out of memory");
            return 0;
        }
        j->buf = b;
        memcpy(j->buf + j->buf_len, data, take);
        j->buf_len += take;
        j->buf[j->buf_len] = 0;
    }
    return n;
}

/* Retry-After (seconds or an HTTP date) and OpenAI's retry-after-ms. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    job *j = arg;
    size_t n = size * nmemb;
    char line[256];
    if (n >= sizeof line)
        return n;
    memcpy(line, data, n);
    line[n] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (!strncasecmp(line, "retry-after-ms:", 15)) {
        double v = strtod(line + 15, NULL);
        if (v > 0 && v < 86400000.0)
            j->retry_after_ms = (uint64_t)v;
    } else if (!strncasecmp(line, "retry-after:", 12) && !j->retry_after_ms) {
        char *v = line + 12, *end;
        while (*v == ' ')
            v++;
        double s = strtod(v, &end);
        if (end != v && s >= 0 && s < 86400)
            j->retry_after_ms = (uint64_t)(s * 1000.0);
        else {
            time_t t = curl_getdate(v, NULL);
            time_t now = time(NULL);
            if (t > now && t - now < 86400)
                j->retry_after_ms = (uint64_t)(t - now) * 1000u;
        }
    }
    return n;
}

static void http_start(job *j);

static uint64_t remaining_ms(const job *j)
{
    uint64_t now = aos_mono_ms();
    return j->deadline_mono_ms > now + MARGIN_MS ? j->deadline_mono_ms - now - MARGIN_MS : 0;
}

/* Again after a failure before any part reached the caller, if time allows. */
static int retry_later(job *j, uint64_t wait_ms)
{
    if (j->parts || remaining_ms(j) <= wait_ms + 50)
        return 0;
    atomic_fetch_add(&j->p->retries, 1);
    wire_dec_free(j->dec);
    j->dec = NULL;
    free(j->buf);
    j->buf = NULL;
    j->buf_len = 0;
    if (j->h) {
        curl_multi_remove_handle(j->e->multi, j->h);
        curl_easy_cleanup(j->h);
        j->h = NULL;
    }
    curl_slist_free_all(j->req_hdrs);
    j->req_hdrs = NULL;
    return heap_add(j->e, j, now_us() + wait_ms * 1000u) == 0;
}

static uint64_t backoff_ms(unsigned attempt)
{
    uint64_t b = BACKOFF_BASE_MS << (attempt > 5 ? 5 : attempt - 1);
    if (b > BACKOFF_MAX_MS)
        b = BACKOFF_MAX_MS;
    /* full jitter in [b/2, b): many callers that failed together do not return together */
    uint8_t rnd[AOS_ID_LEN];
    aos_id_random(rnd);
    uint32_t r;
    memcpy(&r, rnd, sizeof r);
    return b / 2 + r % (b / 2 + 1);
}

static aos_err status_error(long code)
{
    if (code == 429)
        return AOS_ERR_RATE_LIMITED;
    if (code == 401 || code == 403)
        return AOS_ERR_REFUSED;
    if (code == 404)
        return AOS_ERR_NOT_FOUND;
    if (code == 400 || code == 413 || code == 422)
        return AOS_ERR_USAGE;
    if (code == 408 || code == 409 || code >= 500)
        return AOS_ERR_UNAVAILABLE;
    return AOS_ERR_REFUSED;
}

static int status_retryable(long code) { return code == 408 || code == 409 || code >= 500; }

static void http_done(job *j, CURLcode cc)
{
    prov *p = j->p;
    unsigned max_retries = p->cfg->max_retries ? p->cfg->max_retries : RETRIES_DEFAULT;
    const char *url = j->type == J_CHAT ? p->chat_url : p->embed_url;
    if (!j->http_status && j->h)
        curl_easy_getinfo(j->h, CURLINFO_RESPONSE_CODE, &j->http_status);

    if (atomic_load(&j->cancelled) || j->feed_err == AOS_ERR_CANCELLED ||
        j->feed_err == AOS_ERR_TIMEOUT) {
        int late = aos_mono_ms() + MARGIN_MS >= j->deadline_mono_ms;
        fail(j, late ? AOS_ERR_TIMEOUT : AOS_ERR_CANCELLED,
             late ? "%s: the request's deadline passed after %u parts; the transfer was "
                    "stopped"
                  : "%s: cancelled by the caller after %u parts; the transfer was stopped",
             p->name, j->parts);
        return;
    }
    if (j->feed_err) { /* our cap, a decode error, a mid-stream error event */
        if (j->feed_err == AOS_ERR_UNAVAILABLE && !j->parts && j->attempts <= max_retries &&
            retry_later(j, backoff_ms(j->attempts)))
            return;
        if (j->feed_err == AOS_ERR_RATE_LIMITED && !j->retry_after_ms)
            j->retry_after_ms = 1000;
        fail(j, j->feed_err, "%s", j->feed_why);
        return;
    }
    if (cc != CURLE_OK) {
        if (cc == CURLE_OPERATION_TIMEDOUT && remaining_ms(j) < 100) {
            fail(j, AOS_ERR_TIMEOUT,
                 "%s: no complete answer from %s before the request's deadline (%u parts "
                 "arrived)",
                 p->name, url, j->parts);
            return;
        }
        if (!j->parts && j->attempts <= max_retries && retry_later(j, backoff_ms(j->attempts)))
            return;
        if (j->parts)
            fail(j, AOS_ERR_UNAVAILABLE,
                 "%s: the stream from %s was cut after %u parts (%s); not retried: the "
                 "caller has part of the answer",
                 p->name, url, j->parts, curl_easy_strerror(cc));
        else
            fail(j, cc == CURLE_OPERATION_TIMEDOUT ? AOS_ERR_TIMEOUT : AOS_ERR_UNAVAILABLE,
                 "%s: %s: %s (after %u attempts)", p->name, url, curl_easy_strerror(cc),
                 j->attempts);
        return;
    }
    if (j->http_status < 200 || j->http_status >= 300) {
        char msg[512] = "";
        wire_error_message(p->kind == P_ANTHROPIC ? WIRE_ANTHROPIC : WIRE_OPENAI,
                           (const char *)j->buf, j->buf_len, msg, sizeof msg);
        long code = j->http_status;
        if (code == 429 && j->e->cfg->honour_retry_after) {
            uint64_t w = j->retry_after_ms ? j->retry_after_ms : backoff_ms(j->attempts);
            if (retry_later(j, w))
                return;
        }
        if (status_retryable(code) && j->attempts <= max_retries &&
            retry_later(j, backoff_ms(j->attempts)))
            return;
        if (code == 429 && !j->retry_after_ms)
            j->retry_after_ms = 1000;
        fail(j, status_error(code), "%s: HTTP %ld from %s%s%s%s", p->name, code, url,
             msg[0] ? ": " : "", msg,
             code == 429 ? "" : j->attempts > 1 ? " (after retries)" : "");
        return;
    }
    char why[AOS_ERRMSG_MAX];
    if (j->type == J_EMBED) {
        Aos__Llm__EmbedReply *r = NULL;
        aos_err rc = wire_openai_embed_decode((const char *)j->buf, j->buf_len, &r, why,
                                              sizeof why);
        if (rc != AOS_OK) {
            fail(j, rc, "%s: %s", p->name, why);
            return;
        }
        finish_embed(j, r);
        wire_embed_free(r);
        return;
    }
    Aos__Llm__ChatReply *r = NULL;
    aos_err rc = wire_dec_finish(j->dec, &r, why, sizeof why);
    if (rc != AOS_OK) {
        if (rc == AOS_ERR_UNAVAILABLE && !j->parts && j->attempts <= max_retries &&
            retry_later(j, backoff_ms(j->attempts)))
            return;
        fail(j, rc, "%s: %s", p->name, why);
        return;
    }
    finish_chat(j, r);
    wire_reply_free(r);
}

static void http_start(job *j)
{
    eng *e = j->e;
    prov *p = j->p;
    char why[AOS_ERRMSG_MAX];
    uint64_t left = remaining_ms(j);
    if (!left) {
        fail(j, AOS_ERR_TIMEOUT, "%s: the request's deadline passed before it was sent",
             p->name);
        return;
    }
    if (!j->body) {
        char model[256];
        bstr(j->m->name, model, sizeof model);
        aos_err rc =
            j->type == J_EMBED
                ? wire_openai_embed_body(j->ereq, model, &j->body, &j->body_len, why,
                                         sizeof why)
            : p->kind == P_ANTHROPIC
                ? wire_anthropic_chat_body(j->req, model, 1, &j->body, &j->body_len, why,
                                           sizeof why)
                : wire_openai_chat_body(j->req, model, 1, &j->body, &j->body_len, why,
                                        sizeof why);
        if (rc != AOS_OK) {
            fail(j, rc, "%s: %s", p->name, why);
            return;
        }
    }
    if (j->type == J_CHAT) {
        j->dec = wire_dec_new(p->kind == P_ANTHROPIC ? WIRE_ANTHROPIC : WIRE_OPENAI, 1,
                              e->max_body, on_delta, j);
        if (!j->dec) {
            fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory");
            return;
        }
    }
    j->attempts++;
    j->http_status = 0;
    j->recv_bytes = 0;
    j->retry_after_ms = 0;
    j->feed_err = AOS_OK;
    j->t_attempt_us = now_us();

    char hex[2 * AOS_ID_LEN + 1], h1[96], h2[48];
    aos_hex(srv_call_env(j->call)->request_id, AOS_ID_LEN, hex);
    snprintf(h1, sizeof h1, "X-Aos-Request-Id: %s", hex);
    snprintf(h2, sizeof h2, "X-Aos-Attempt: %u", j->attempts);
    struct curl_slist *l = NULL;
    for (struct curl_slist *s = p->hdrs; s; s = s->next)
        l = curl_slist_append(l, s->data);
    l = curl_slist_append(l, h1);
    l = curl_slist_append(l, h2);
    CURL *h = curl_easy_init();
    if (!h || !l) {
        curl_slist_free_all(l);
        if (h)
            curl_easy_cleanup(h);
        fail(j, AOS_ERR_NOMEM, "aos-llm is out of memory");
        return;
    }
    j->req_hdrs = l;
    j->h = h;
    uint64_t timeout = left;
    if (p->cfg->timeout_ms && p->cfg->timeout_ms < timeout)
        timeout = p->cfg->timeout_ms;
    curl_easy_setopt(h, CURLOPT_URL, j->type == J_CHAT ? p->chat_url : p->embed_url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, j);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10000 ? timeout : 10000));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    /* HTTP/2 where a TLS provider offers it by ALPN; HTTP/1.1 in the clear */
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    /* no Accept-Encoding: a compressed body would let a provider grow memory past the cap
     * we count on the wire */
    if (e->cfg->ca_pem.len) { /* aosd read the file: our root may not show its path */
        struct curl_blob ca = {e->cfg->ca_pem.data, e->cfg->ca_pem.len, CURL_BLOB_NOCOPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca);
    }
    CURLMcode mc = curl_multi_add_handle(e->multi, h);
    if (mc != CURLM_OK) {
        fail(j, AOS_ERR_INTERNAL, "%s: cannot start the transfer: %s", p->name,
             curl_multi_strerror(mc));
        return;
    }
}

/* ---- the loop ------------------------------------------------------------------------ */

/* A job whose provider has room runs now; else it waits for a slot, in order. */
static void run(eng *e, job *j)
{
    prov *p = j->p;
    j->anext = e->active;
    if (e->active)
        e->active->aprev = j;
    e->active = j;
    unsigned cap = p->cfg->limits ? p->cfg->limits->max_concurrency : 0;
    int held = p->kind != P_SIM && cap;
    if (held && !j->wait_from_us)
        j->wait_from_us = now_us();
    if (held && p->inflight >= cap) {
        j->waiting = 1;
        if (p->wait_tail)
            p->wait_tail->next = j;
        else
            p->wait_head = j;
        p->wait_tail = j;
        return;
    }
    p->inflight++;
    if (held)
        j->slot_at_us = now_us();
    if (j->resent)
        atomic_fetch_add(&p->resent, 1);
    if (p->kind == P_SIM)
        sim_run(j);
    else
        http_start(j);
}

static void unwait(prov *p, job *j)
{
    job **pp = &p->wait_head, *prev = NULL;
    while (*pp && *pp != j) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = j->next;
        if (p->wait_tail == j)
            p->wait_tail = prev;
    }
    j->next = NULL;
    j->waiting = 0;
}

static void start_waiting(eng *e, prov *p)
{
    unsigned cap = p->cfg->limits ? p->cfg->limits->max_concurrency : 0;
    while (p->wait_head && (!cap || p->inflight < cap)) {
        job *j = p->wait_head;
        unwait(p, j);
        /* run() links it into the active list again */
        if (j->aprev)
            j->aprev->anext = j->anext;
        else if (e->active == j)
            e->active = j->anext;
        if (j->anext)
            j->anext->aprev = j->aprev;
        j->aprev = j->anext = NULL;
        run(e, j);
    }
}

static void reap_cancelled(eng *e)
{
    job *j = e->active;
    while (j) {
        job *next = j->anext;
        if (atomic_load(&j->cancelled)) {
            if (j->waiting) {
                unwait(j->p, j);
                j->p->inflight++; /* finish gives back the slot it never took */
            }
            if (j->h) {
                http_done(j, CURLE_ABORTED_BY_CALLBACK);
            } else {
                int late = aos_mono_ms() + MARGIN_MS >= j->deadline_mono_ms;
                fail(j, late ? AOS_ERR_TIMEOUT : AOS_ERR_CANCELLED,
                     "%s: %s after %u parts", j->p->name,
                     late ? "the request's deadline passed" : "cancelled by the caller",
                     j->parts);
            }
            atomic_fetch_add(&e->cancelled, 1);
            next = e->active; /* finish may have started waiting jobs: scan again */
            if (next == j)
                next = NULL;
        }
        j = next;
    }
}

static void *loop_main(void *arg)
{
    eng *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        job *in = e->in_head;
        e->in_head = e->in_tail = NULL;
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop && !in)
            break;
        while (in) {
            job *j = in;
            in = j->next;
            j->next = NULL;
            atomic_fetch_add(&e->started, 1);
            run(e, j);
        }
        reap_cancelled(e);

        int running = 0;
        curl_multi_perform(e->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(e->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            job *j = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            CURLcode cc = msg->data.result;
            if (j)
                http_done(j, cc);
        }
        uint64_t now = now_us();
        while (e->nheap && e->heap[0]->when_us <= now) {
            job *j = e->heap[0];
            heap_del(e, j);
            if (j->p->kind == P_SIM)
                sim_step(j);
            else
                http_start(j); /* a retry's wait is over */
        }
        long ct = -1;
        curl_multi_timeout(e->multi, &ct);
        long wait = ct < 0 || ct > 100 ? 100 : ct;
        if (e->nheap) {
            uint64_t t = e->heap[0]->when_us;
            now = now_us();
            long hw = t > now ? (long)((t - now + 999) / 1000) : 0;
            if (hw < wait)
                wait = hw;
        }
        if (wait > 0)
            curl_multi_poll(e->multi, NULL, 0, (int)wait, NULL);
    }
    return NULL;
}

/* ---- entry points -------------------------------------------------------------------- */

static void push_job(eng *e, job *j)
{
    pthread_mutex_lock(&e->mu);
    if (e->in_tail)
        e->in_tail->next = j;
    else
        e->in_head = j;
    e->in_tail = j;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
}

/* A completed call asked again (its caller retried with the same request id after aosd
 * or aos-llm restarted): the kept reply, marked replayed, and no second paid call. */
static void replay(job *j, const uint8_t *b, size_t n)
{
    uint8_t *out = NULL;
    size_t len = 0;
    if (j->type == J_EMBED) {
        Aos__Llm__EmbedReply *r = aos__llm__embed_reply__unpack(NULL, n, b);
        if (r) {
            r->replayed = 1;
            len = aos__llm__embed_reply__get_packed_size(r);
            if ((out = malloc(len ? len : 1)))
                aos__llm__embed_reply__pack(r, out);
            aos__llm__embed_reply__free_unpacked(r, NULL);
        }
    } else {
        Aos__Llm__ChatReply *r = aos__llm__chat_reply__unpack(NULL, n, b);
        if (r) {
            r->replayed = 1;
            len = aos__llm__chat_reply__get_packed_size(r);
            if ((out = malloc(len ? len : 1)))
                aos__llm__chat_reply__pack(r, out);
            aos__llm__chat_reply__free_unpacked(r, NULL);
        }
    }
    atomic_fetch_add(&j->e->replayed, 1);
    if (out)
        srv_call_done(j->call, AOS_OK, NULL, out, len);
    else
        srv_call_done(j->call, AOS_ERR_INTERNAL, "the kept reply of this request id could "
                      "not be read back", NULL, 0);
    free(out);
    job_free(j);
}

static void on_begun(void *arg, aos_err rc, int64_t row, int resent, const uint8_t *kept,
                     size_t kept_len, const char *why)
{
    job *j = arg;
    if (rc != AOS_OK) {
        srv_call_done(j->call, rc, why, NULL, 0);
        job_free(j);
        return;
    }
    if (kept) {
        replay(j, kept, kept_len);
        return;
    }
    j->row = row;
    j->resent = resent;
    push_job(j->e, j);
}

static void on_cancel(srv_call *c, void *arg)
{
    (void)c;
    job *j = arg;
    atomic_store(&j->cancelled, 1);
    curl_multi_wakeup(j->e->multi);
}

/* The provider and model a request names: "provider/model", a model any provider lists
 * (the first in the file), or the default. */
static aos_err resolve(eng *e, ProtobufCBinaryData want, int embedding, prov **pp,
                       const Aos__Llm__Model **mp, char *why, size_t whylen)
{
    ProtobufCBinaryData name = want;
    if (!name.len)
        name = e->cfg->default_model;
    const uint8_t *slash = name.len ? memchr(name.data, '/', name.len) : NULL;
    for (size_t i = 0; i < e->nprov; i++) {
        prov *p = &e->provs[i];
        ProtobufCBinaryData mn = name;
        if (slash) {
            size_t pl = (size_t)(slash - name.data);
            if (strlen(p->name) != pl || memcmp(p->name, name.data, pl))
                continue;
            mn = (ProtobufCBinaryData){name.len - pl - 1, (uint8_t *)slash + 1};
        }
        for (size_t k = 0; k < p->cfg->n_models; k++) {
            const Aos__Llm__Model *m = p->cfg->models[k];
            if (m->name.len == mn.len && !memcmp(m->name.data, mn.data, mn.len)) {
                if (!m->embedding != !embedding)
                    continue;
                *pp = p;
                *mp = m;
                return AOS_OK;
            }
        }
    }
    char n[160];
    bstr(name, n, sizeof n);
    snprintf(why, whylen, "no %s model '%s' in aos.yaml's providers (name one as "
                          "provider/model; aosctl llm providers lists them)",
             embedding ? "embedding" : "chat", n);
    return AOS_ERR_NOT_FOUND;
}

static void submit(eng *e, srv_call *call, job *j, ProtobufCBinaryData model, int embedding)
{
    char why[AOS_ERRMSG_MAX];
    aos_err rc = resolve(e, model, embedding, &j->p, &j->m, why, sizeof why);
    if (rc == AOS_OK && embedding && j->p->kind == P_ANTHROPIC) {
        rc = AOS_ERR_USAGE;
        snprintf(why, sizeof why, "%s is an anthropic provider: it has no embeddings",
                 j->p->name);
    }
    if (rc != AOS_OK) {
        srv_call_done(call, rc, why, NULL, 0);
        job_free(j);
        return;
    }
    const aos_env *env = srv_call_env(call);
    uint64_t now = aos_now_ms();
    uint64_t left = env->deadline_ms ? (env->deadline_ms > now ? env->deadline_ms - now : 0)
                                     : DEADLINE_DEFAULT_MS;
    j->deadline_mono_ms = aos_mono_ms() + left;
    srv_call_on_cancel(call, on_cancel, j);
    char model_name[128];
    bstr(j->m->name, model_name, sizeof model_name);
    if (j->req)
        trail_chat_request(srv_call_srv(call), call, j->p->name, model_name, j->req);
    else
        trail_embed_request(srv_call_srv(call), call, j->p->name, model_name, j->ereq);
    acct_begin(e->a, env->request_id, env->agent_id[0] ? env->agent_id : "-", j->p->name,
               model_name, j->deadline_mono_ms, on_begun, j);
}

static job *job_new(eng *e, srv_call *call, int type)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->e = e;
    j->call = call;
    j->type = type;
    j->hidx = -1;
    return j;
}

/* A job for the decoded request (exactly one of chat and embed), or the call answered
 * NOMEM and the request freed. */
static void take(eng *e, srv_call *call, Aos__Llm__ChatRequest *chat,
                 Aos__Llm__EmbedRequest *embed)
{
    job *j = job_new(e, call, chat ? J_CHAT : J_EMBED);
    if (!j) {
        if (chat)
            aos__llm__chat_request__free_unpacked(chat, NULL);
        else
            aos__llm__embed_request__free_unpacked(embed, NULL);
        srv_call_done(call, AOS_ERR_NOMEM, "aos-llm is out of memory", NULL, 0);
        return;
    }
    j->req = chat;
    j->ereq = embed;
    submit(e, call, j, chat ? chat->model : embed->model, !chat);
}

void eng_chat(eng *e, srv_call *call, Aos__Llm__ChatRequest *req)
{
    take(e, call, req, NULL);
}

void eng_embed(eng *e, srv_call *call, Aos__Llm__EmbedRequest *req)
{
    take(e, call, NULL, req);
}

/* ---- set-up -------------------------------------------------------------------------- */

static aos_err prov_init(eng *e, prov *p, const Aos__Llm__Provider *c, char *why,
                         size_t whylen)
{
    p->cfg = c;
    bstr(c->name, p->name, sizeof p->name);
    char kind[16], base[1024];
    bstr(c->kind, kind, sizeof kind);
    bstr(c->base_url, base, sizeof base);
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        base[--bl] = 0;
    if (!strcmp(kind, "openai"))
        p->kind = P_OPENAI;
    else if (!strcmp(kind, "anthropic"))
        p->kind = P_ANTHROPIC;
    else if (!strcmp(kind, "sim"))
        p->kind = P_SIM;
    else {
        snprintf(why, whylen, "provider %s: unknown kind '%s'", p->name, kind);
        return AOS_ERR_USAGE;
    }
    if (p->kind == P_SIM) {
        p->lim = sim_limiter_new(c->limits);
        if (!p->lim) {
            snprintf(why, whylen, "no memory for the sim limiter");
            return AOS_ERR_NOMEM;
        }
        return AOS_OK;
    }
    /* OpenAI's base URL ends in /v1 (as its SDK's does); Anthropic's is the host */
    if (p->kind == P_OPENAI) {
        snprintf(p->chat_url, sizeof p->chat_url, "%s/chat/completions", base);
        snprintf(p->embed_url, sizeof p->embed_url, "%s/embeddings", base);
    } else {
        snprintf(p->chat_url, sizeof p->chat_url, "%s/v1/messages", base);
    }
    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    l = curl_slist_append(l, "Accept: application/json, text/event-stream");
    /* curl would add "Expect: 100-continue" to big bodies: one more round trip */
    l = curl_slist_append(l, "Expect:");
    char h[4200];
    if (c->api_key.len && c->api_key.len < 4000) {
        if (p->kind == P_ANTHROPIC)
            snprintf(h, sizeof h, "x-api-key: %.*s", (int)c->api_key.len,
                     (const char *)c->api_key.data);
        else
            snprintf(h, sizeof h, "Authorization: Bearer %.*s", (int)c->api_key.len,
                     (const char *)c->api_key.data);
        l = curl_slist_append(l, h);
        explicit_bzero(h, sizeof h);
    }
    if (p->kind == P_ANTHROPIC) {
        char v[64];
        snprintf(h, sizeof h, "anthropic-version: %s",
                 c->anthropic_version.len ? bstr(c->anthropic_version, v, sizeof v)
                                          : "2023-06-01");
        l = curl_slist_append(l, h);
    }
    if (!l) {
        snprintf(why, whylen, "no memory for the headers");
        return AOS_ERR_NOMEM;
    }
    p->hdrs = l;
    (void)e;
    return AOS_OK;
}

aos_err eng_start(srv *s, const Aos__Llm__Config *cfg, acct *a, eng **out, char *why,
                  size_t whylen)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        snprintf(why, whylen, "curl_global_init failed");
        return AOS_ERR_INTERNAL;
    }
    eng *e = calloc(1, sizeof *e);
    if (!e || !(e->provs = calloc(cfg->n_providers ? cfg->n_providers : 1, sizeof *e->provs))) {
        free(e);
        snprintf(why, whylen, "no memory for the engine");
        return AOS_ERR_NOMEM;
    }
    e->s = s;
    e->cfg = cfg;
    e->a = a;
    e->max_body = cfg->max_body_bytes ? cfg->max_body_bytes : BODY_MAX_DEFAULT;
    pthread_mutex_init(&e->mu, NULL);
    e->nprov = cfg->n_providers;
    aos_err rc = AOS_OK;
    for (size_t i = 0; i < e->nprov && rc == AOS_OK; i++)
        rc = prov_init(e, &e->provs[i], cfg->providers[i], why, whylen);
    if (rc == AOS_OK && !(e->multi = curl_multi_init())) {
        snprintf(why, whylen, "curl_multi_init failed");
        rc = AOS_ERR_INTERNAL;
    }
    if (rc == AOS_OK) {
        /* connections are kept and reused; many requests share one HTTP/2 connection */
        curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
        curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 1024L);
        if (pthread_create(&e->th, NULL, loop_main, e)) {
            snprintf(why, whylen, "cannot start the engine thread");
            rc = AOS_ERR_INTERNAL;
        }
    }
    if (rc != AOS_OK) {
        for (size_t i = 0; i < e->nprov; i++) {
            curl_slist_free_all(e->provs[i].hdrs);
            sim_limiter_free(e->provs[i].lim);
        }
        if (e->multi)
            curl_multi_cleanup(e->multi);
        free(e->provs);
        free(e);
        return rc;
    }
    *out = e;
    return AOS_OK;
}

void eng_stop(eng *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->multi);
    pthread_join(e->th, NULL);
    curl_multi_cleanup(e->multi);
    for (size_t i = 0; i < e->nprov; i++) {
        curl_slist_free_all(e->provs[i].hdrs);
        sim_limiter_free(e->provs[i].lim);
    }
    free(e->heap);
    free(e->provs);
    free(e);
}

/* ---- llm.providers and stats ---------------------------------------------------------- */

static int probe(const prov *p, char *why, size_t whylen)
{
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(why, whylen, "out of memory");
        return 0;
    }
    curl_easy_setopt(h, CURLOPT_URL, p->chat_url);
    curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1500L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK)
        snprintf(why, whylen, "%s", curl_easy_strerror(cc));
    return cc == CURLE_OK;
}

aos_err eng_providers(eng *e, Aos__Llm__ProvidersReply **out, char *why, size_t whylen)
{
    Aos__Llm__ProvidersReply *r = calloc(1, sizeof *r);
    if (!r)
        goto nomem;
    aos__llm__providers_reply__init(r);
    r->providers = calloc(e->nprov ? e->nprov : 1, sizeof *r->providers);
    if (!r->providers)
        goto nomem;
    for (size_t i = 0; i < e->nprov; i++) {
        const prov *p = &e->provs[i];
        Aos__Llm__ProviderInfo *pi = calloc(1, sizeof *pi);
        char *w = calloc(1, 256);
        ProtobufCBinaryData *ms = calloc(p->cfg->n_models ? p->cfg->n_models : 1, sizeof *ms);
        protobuf_c_boolean *emb =
            calloc(p->cfg->n_models ? p->cfg->n_models : 1, sizeof *emb);
        if (!pi || !w || !ms || !emb) {
            free(pi);
            free(w);
            free(ms);
            free(emb);
            goto nomem;
        }
        aos__llm__provider_info__init(pi);
        r->providers[r->n_providers++] = pi;
        /* borrowed from the configuration: eng_providers_free frees only what is ours */
        pi->name = p->cfg->name;
        pi->kind = p->cfg->kind;
        pi->base_url = p->cfg->base_url;
        for (size_t k = 0; k < p->cfg->n_models; k++) {
            ms[k] = p->cfg->models[k]->name;
            emb[k] = p->cfg->models[k]->embedding;
        }
        pi->models = ms;
        pi->n_models = p->cfg->n_models;
        pi->embedding = emb;
        pi->n_embedding = p->cfg->n_models;
        pi->limits = p->cfg->limits;
        pi->has_key = p->cfg->api_key.len > 0;
        pi->reachable = p->kind == P_SIM ? 1 : probe(p, w, 256);
        pi->why = (ProtobufCBinaryData){strlen(w), (uint8_t *)w};
    }
    *out = r;
    return AOS_OK;
nomem:
    eng_providers_free(r);
    snprintf(why, whylen, "aos-llm is out of memory");
    return AOS_ERR_NOMEM;
}

void eng_providers_free(Aos__Llm__ProvidersReply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_providers; i++) {
        free(r->providers[i]->models);
        free(r->providers[i]->embedding);
        free(r->providers[i]->why.data);
        free(r->providers[i]);
    }
    free(r->providers);
    free(r);
}

void eng_stats(eng *e, srv_stats *st)
{
    srv_stat(st, "llm.started", (int64_t)atomic_load(&e->started), NULL);
    srv_stat(st, "llm.finished", (int64_t)atomic_load(&e->finished), NULL);
    srv_stat(st, "llm.parts", (int64_t)atomic_load(&e->parts), NULL);
    srv_stat(st, "llm.cancelled", (int64_t)atomic_load(&e->cancelled), NULL);
    srv_stat(st, "llm.replayed", (int64_t)atomic_load(&e->replayed), NULL);
    for (size_t i = 0; i < e->nprov; i++) {
        prov *p = &e->provs[i];
        char n[128];
#define PSTAT(field)                                                                       \
    snprintf(n, sizeof n, "provider.%s." #field, p->name);                                \
    srv_stat(st, n, (int64_t)atomic_load(&p->field), NULL)
        PSTAT(calls);
        PSTAT(failed);
        PSTAT(retries);
        PSTAT(rate_limited);
        PSTAT(in_tok);
        PSTAT(out_tok);
        PSTAT(resent);
#undef PSTAT
        if (p->lim) {
            sim_counts sc;
            sim_limiter_counts(p->lim, &sc);
            snprintf(n, sizeof n, "provider.%s.sim_429s", p->name);
            srv_stat(st, n, (int64_t)sc.refused, NULL);
            snprintf(n, sizeof n, "provider.%s.sim_admitted", p->name);
            srv_stat(st, n, (int64_t)sc.admitted, NULL);
        }
    }
}
