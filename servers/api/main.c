/* aos-api: the front door. OpenAI- and Anthropic-compatible HTTP on 127.0.0.1 (libmicrohttpd);
 * every call becomes the API key's agent's own syscall through aosd (srv_request_front). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <sodium.h>

#include <jansson.h>

#include "agent.pb-c.h"
#include "aos.pb-c.h"
#include "aos/log.h"
#include "front.h"
#include "llm.pb-c.h"
#include "serve.h"

#define API_CONNS_DEFAULT 1024u
#define API_OVER_BAND 256u            /* connections past the cap that still get their 503 */
#define API_BODY_DEFAULT (8u << 20)   /* a request body: conversations of long contexts */
#define API_HEADERS_MAX (32u << 10)   /* per connection: request line and headers (MHD's
                                       * memory pool; past it, 431) */
#define API_DISCARD_MAX (64u << 20)   /* body bytes past the cap read and dropped so the 413
                                       * reaches the client; past it the connection is cut */
#define API_IDLE_S 15u                /* a connection silent this long is closed: slow-loris
                                       * clients hold a slot for this long at most */
#define API_KEY_MAX 256u
#define API_STREAM_HOLD (8u << 20)    /* SSE bytes waiting for a slow client; past it the
                                       * call is dropped */
#define API_CALL_MS 600000u           /* an LLM call's deadline (aosd's ceiling) */
#define API_RETRY_AFTER_S 1u          /* Retry-After when aosd gave no hint */

/* Where a call's time goes, stage by stage (sums and counts in us, read by `aosctl stats
 * api` and bench_front, which diffs them over a phase): what aos-api itself adds (in, relay,
 * out) against the wait on aosd and what is behind it (first, rest). */
enum { ST_IN, ST_FIRST, ST_REST, ST_RELAY, ST_OUT, ST_N };
static const char *const stage_name[ST_N] = {
    "stage_in",     /* first header callback -> the request is in aosd's outbox: the body,
                     * the key's hash, JSON decode, protobuf encode */
    "stage_first",  /* in the outbox -> the first part (or the reply): aosd, scheduler,
                     * aos-llm, the provider */
    "stage_rest",   /* the first part -> the final reply (the rest of the stream, audit) */
    "stage_relay",  /* per part: it came on a receive thread -> MHD's thread took its bytes
                     * (the resume's wake-up) */
    "stage_out",    /* the final reply came -> the response's last bytes went to MHD */
};

typedef struct stage {
    atomic_ullong sum_us, n, max_us;
} stage;

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

typedef enum { R_NONE, R_CHAT, R_MESSAGES, R_EMBED, R_MODELS, R_METRICS, R_NOTFOUND,
               R_METHOD } route_t;

typedef struct api {
    srv *s;
    struct MHD_Daemon *d;
    int lfd;
    unsigned port, max_conns, idle_s;
    size_t max_body;
    atomic_uint conns;
    atomic_ullong served, refused_over_cap, bad_requests, calls, streams, cancelled;
    struct in_addr addr;        /* where it listens (api.listen) */
    int loopback;               /* in 127.0.0.0/8 */
    char *tls_cert, *tls_key;   /* PEM for MHD, which keeps pointers to them: for life */
    int has_token;              /* /metrics wants Bearer <token> whose hash is token_hash */
    uint8_t token_hash[AOS_KEY_HASH_LEN];
    atomic_ullong metrics_refused;
    stage stages[ST_N];
} api;

static api A = {.lfd = -1};

static void stage_add(int st, uint64_t from_us, uint64_t to_us)
{
    if (!from_us || to_us < from_us)
        return;
    unsigned long long d = to_us - from_us;
    stage *g = &A.stages[st];
    atomic_fetch_add(&g->sum_us, d);
    atomic_fetch_add(&g->n, 1);
    unsigned long long m = atomic_load(&g->max_us);
    while (d > m && !atomic_compare_exchange_weak(&g->max_us, &m, d))
        ;
}

/* One HTTP request, from its headers to its last byte. Referenced by MHD (until its
 * completed callback) and by the call in flight to aosd (until its done): freed at 0. */
struct pend {
    struct pend *next;
    uint32_t seq;
    size_t len;
    uint8_t data[];
};

typedef struct hreq {
    pthread_mutex_t mu;
    int refs;
    struct MHD_Connection *conn;
    route_t route;
    front_flavour flav;
    char *body;
    size_t len, cap;
    int too_big, dispatched, suspended, finished, mhd_gone, over_cap;
    size_t dropped; /* body bytes read past the cap and thrown away */
    /* the call's outcome */
    aos_err status;
    char err[AOS_ERRMSG_MAX + 1];
    uint64_t retry_after_ms;
    uint8_t *reply;
    size_t reply_len;
    /* streams: parts come on several receive threads; put back in order by seq */
    int stream, usage, streaming, base64;
    uint32_t next_seq;
    struct pend *pend;          /* parts ahead of next_seq, in seq order */
    size_t pend_bytes;
    front_sse *sse;
    char *out;
    size_t out_len, out_off, out_cap;
    int out_broken;
    char id[64], model[FRONT_NAME_MAX + 1];
    uint8_t call_id[AOS_ID_LEN]; /* the request to aosd, to cancel when the client goes */
    /* mono_us of the stages' edges (0: not reached); t_resumed: the oldest part's bytes
     * not yet taken by MHD's thread, under mu */
    uint64_t t_in, t_sent, t_first, t_done, t_resumed;
} hreq;

static void hreq_unref(hreq *h)
{
    pthread_mutex_lock(&h->mu);
    int left = --h->refs;
    pthread_mutex_unlock(&h->mu);
    if (left)
        return;
    pthread_mutex_destroy(&h->mu);
    free(h->body);
    free(h->reply);
    front_sse_free(h->sse);
    free(h->out);
    for (struct pend *p = h->pend, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    free(h);
}

/* ---- responses ------------------------------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *ctype,
                               char *body, size_t len, unsigned retry_after_s)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                                             body ? MHD_RESPMEM_MUST_FREE
                                                                  : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    if (retry_after_s) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", retry_after_s);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result respond_error(struct MHD_Connection *c, front_flavour f, aos_err st,
                                     const char *msg, uint64_t retry_after_ms)
{
    front_error e = front_error_of(st, f, msg);
    size_t len = 0;
    char *body = front_error_body(st, f, msg, &len);
    unsigned ra = 0;
    if (e.retry_after || retry_after_ms)
        ra = retry_after_ms ? (unsigned)((retry_after_ms + 999) / 1000) : API_RETRY_AFTER_S;
    if (st != AOS_OK)
        atomic_fetch_add(&A.bad_requests, st == AOS_ERR_USAGE || st == AOS_ERR_TOO_BIG);
    return respond(c, (unsigned)e.http, "application/json", body, len, ra);
}

/* ---- the call to aosd ------------------------------------------------------------------ */

static void resume_locked(hreq *h)
{
    if (h->suspended && !h->mhd_gone) {
        h->suspended = 0;
        MHD_resume_connection(h->conn);
    }
}

/* SSE bytes for the client; h->mu held (front_sse runs under it). */
static int emit(void *arg, const char *b, size_t n)
{
    hreq *h = arg;
    if (h->out_len - h->out_off + n > API_STREAM_HOLD) {
        h->out_broken = 1;
        return -1;
    }
    if (h->out_off && h->out_off == h->out_len)
        h->out_off = h->out_len = 0;
    if (h->out_len + n > h->out_cap) {
        size_t nc = h->out_cap ? h->out_cap : 4096;
        while (nc < h->out_len + n)
            nc *= 2;
        char *p = realloc(h->out, nc);
        if (!p) {
            h->out_broken = 1;
            return -1;
        }
        h->out = p;
        h->out_cap = nc;
    }
    memcpy(h->out + h->out_len, b, n);
    h->out_len += n;
    return 0;
}

static void feed_locked(hreq *h, const uint8_t *data, size_t len)
{
    if (h->sse && !h->out_broken && front_sse_delta(h->sse, data, len) < 0)
        h->out_broken = 1;
    h->next_seq++;
}

static void on_part(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    hreq *h = arg;
    uint64_t now = mono_us();
    pthread_mutex_lock(&h->mu);
    if (!h->t_first)
        h->t_first = now;
    if (!h->t_resumed)
        h->t_resumed = now;
    if (seq == h->next_seq) {
        feed_locked(h, data, len);
        while (h->pend && h->pend->seq == h->next_seq) {
            struct pend *p = h->pend;
            h->pend = p->next;
            h->pend_bytes -= p->len;
            feed_locked(h, p->data, p->len);
            free(p);
        }
    } else if (seq > h->next_seq) { /* ahead: held until the ones before it come */
        struct pend *p = h->pend_bytes + len > API_STREAM_HOLD ? NULL
                                                                : malloc(sizeof *p + len);
        if (!p) {
            h->out_broken = 1;
        } else {
            p->seq = seq;
            p->len = len;
            memcpy(p->data, data, len);
            struct pend **pp = &h->pend;
            while (*pp && (*pp)->seq < seq)
                pp = &(*pp)->next;
            p->next = *pp;
            *pp = p;
            h->pend_bytes += len;
        }
    }
    h->streaming = 1;
    resume_locked(h);
    pthread_mutex_unlock(&h->mu);
}

static void on_done(void *arg, const aos_reply *r)
{
    hreq *h = arg;
    uint64_t now = mono_us();
    pthread_mutex_lock(&h->mu);
    h->finished = 1;
    h->t_done = now;
    if (!h->t_first)
        h->t_first = now;
    h->status = r->status;
    h->retry_after_ms = r->retry_after_ms;
    snprintf(h->err, sizeof h->err, "%s", r->error);
    if (r->status == AOS_OK && r->payload_len) {
        h->reply = malloc(r->payload_len);
        if (h->reply) {
            memcpy(h->reply, r->payload, r->payload_len);
            h->reply_len = r->payload_len;
        } else {
            h->status = AOS_ERR_NOMEM;
        }
    }
    if (h->sse && h->streaming && !h->out_broken) {
        Aos__Llm__ChatReply *cr =
            h->status == AOS_OK ? aos__llm__chat_reply__unpack(NULL, h->reply_len, h->reply)
                                : NULL;
        front_sse_end(h->sse, cr, cr ? AOS_OK : h->status == AOS_OK ? AOS_ERR_PROTO : h->status,
                      h->err);
        if (cr)
            aos__llm__chat_reply__free_unpacked(cr, NULL);
    }
    resume_locked(h);
    pthread_mutex_unlock(&h->mu);
    hreq_unref(h);
}

/* The presented key: "Authorization: Bearer KEY" (OpenAI) or "x-api-key: KEY" (Anthropic). */
static int key_hash(struct MHD_Connection *c, uint8_t out[AOS_KEY_HASH_LEN])
{
    const char *k = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key");
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!k && auth && !strncasecmp(auth, "Bearer ", 7))
        k = auth + 7;
    while (k && *k == ' ')
        k++;
    size_t n = k ? strlen(k) : 0;
    if (!n || n > API_KEY_MAX)
        return 0;
    crypto_generichash(out, AOS_KEY_HASH_LEN, (const uint8_t *)k, n, NULL, 0);
    return 1;
}

static void new_id(hreq *h, const char *prefix)
{
    uint8_t b[12];
    char hex[25];
    randombytes_buf(b, sizeof b);
    aos_hex(b, sizeof b, hex);
    snprintf(h->id, sizeof h->id, "%s%s", prefix, hex);
}

/* The body is in: decode it, call aosd as the key's agent, suspend until it answers. */
static enum MHD_Result dispatch(hreq *h)
{
    struct MHD_Connection *c = h->conn;
    uint8_t hash[AOS_KEY_HASH_LEN];
    if (!key_hash(c, hash))
        return respond_error(c, h->flav, AOS_ERR_UNAUTHENTICATED,
                             h->flav == FRONT_ANTHROPIC
                                 ? "no API key: send x-api-key (aosctl agent key create NAME)"
                                 : "no API key: send Authorization: Bearer KEY (aosctl agent "
                                   "key create NAME)",
                             0);
    char why[512] = "";
    ProtobufCMessage *m = NULL;
    const char *method = "llm.chat";
    aos_err rc = AOS_OK;
    if (h->route == R_MODELS) { /* who the key's agent is: its manifest names its model */
        pthread_mutex_lock(&h->mu);
        h->refs++;
        h->dispatched = 1;
        h->suspended = 1;
        pthread_mutex_unlock(&h->mu);
        MHD_suspend_connection(c);
        h->t_sent = mono_us(); /* before the call: its answer may come at once */
        aos_err mrc = srv_request_front(A.s, hash, "kernel.agent.self", NULL, 0, 10000, NULL,
                                        on_done, h, NULL);
        if (mrc != AOS_OK) {
            aos_reply r;
            memset(&r, 0, sizeof r);
            r.status = mrc;
            snprintf(r.error, sizeof r.error, "aos-api cannot reach aosd: %s",
                     aos_strerror(mrc));
            on_done(h, &r);
        }
        return MHD_YES;
    }
    if (h->route == R_CHAT) {
        Aos__Llm__ChatRequest *cr = NULL;
        rc = front_openai_chat(h->body, h->len, &cr, &h->stream, &h->usage, why, sizeof why);
        m = cr ? &cr->base : NULL;
        new_id(h, "chatcmpl-");
    } else if (h->route == R_MESSAGES) {
        Aos__Llm__ChatRequest *cr = NULL;
        rc = front_anthropic_messages(h->body, h->len, &cr, &h->stream, why, sizeof why);
        m = cr ? &cr->base : NULL;
        new_id(h, "msg_");
    } else {
        Aos__Llm__EmbedRequest *er = NULL;
        rc = front_openai_embed(h->body, h->len, &er, &h->base64, why, sizeof why);
        m = er ? &er->base : NULL;
        method = "llm.embed";
    }
    if (rc != AOS_OK)
        return respond_error(c, h->flav, rc, why, 0);
    /* the model as the client named it, for the reply */
    const ProtobufCBinaryData *model = h->route == R_EMBED
                                           ? &((Aos__Llm__EmbedRequest *)m)->model
                                           : &((Aos__Llm__ChatRequest *)m)->model;
    snprintf(h->model, sizeof h->model, "%.*s", (int)model->len, (const char *)model->data);
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf)
        protobuf_c_message_pack(m, buf);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!buf)
        return respond_error(c, h->flav, AOS_ERR_NOMEM, "aos-api is out of memory", 0);
    if (h->stream) {
        h->sse = front_sse_new(h->flav, h->id, h->model, (uint64_t)time(NULL), h->usage, emit,
                               h);
        if (!h->sse) {
            free(buf);
            return respond_error(c, h->flav, AOS_ERR_NOMEM, "aos-api is out of memory", 0);
        }
    }
    pthread_mutex_lock(&h->mu);
    h->refs++; /* the call's */
    h->dispatched = 1;
    h->suspended = 1;
    pthread_mutex_unlock(&h->mu);
    MHD_suspend_connection(c); /* before the call: its answer may resume at once */
    atomic_fetch_add(&A.calls, 1);
    h->t_sent = mono_us();
    rc = srv_request_front(A.s, hash, method, buf, len, API_CALL_MS,
                           h->stream ? on_part : NULL, on_done, h, h->call_id);
    free(buf);
    if (rc != AOS_OK) { /* nothing was sent: answer now */
        aos_reply r;
        memset(&r, 0, sizeof r);
        r.status = rc;
        snprintf(r.error, sizeof r.error, "aos-api cannot reach aosd: %s", aos_strerror(rc));
        on_done(h, &r);
    }
    return MHD_YES;
}

/* GET /metrics: aosd's kernel.metrics. On loopback without a key; with a scrape token
 * configured (api.metrics_token_env) only with it, and off loopback only then: it shows
 * every agent's cost. */
static enum MHD_Result metrics(hreq *h)
{
    uint8_t hash[AOS_KEY_HASH_LEN];
    if (A.has_token && !(key_hash(h->conn, hash) &&
                         !sodium_memcmp(hash, A.token_hash, sizeof hash))) {
        atomic_fetch_add(&A.metrics_refused, 1);
        return respond_error(h->conn, h->flav, AOS_ERR_UNAUTHENTICATED, "/metrics wants the "
                             "scrape token: Authorization: Bearer TOKEN", 0);
    }
    if (!A.has_token && !A.loopback) {
        atomic_fetch_add(&A.metrics_refused, 1);
        return respond_error(h->conn, h->flav, AOS_ERR_REFUSED, "/metrics is not served off "
                             "loopback without a scrape token (api.metrics_token_env)", 0);
    }
    pthread_mutex_lock(&h->mu);
    h->refs++;
    h->dispatched = 1;
    h->suspended = 1;
    pthread_mutex_unlock(&h->mu);
    MHD_suspend_connection(h->conn);
    aos_err rc = srv_request_async(A.s, NULL, "kernel.metrics", NULL, 0, 5000, on_done, h);
    if (rc != AOS_OK) {
        aos_reply r;
        memset(&r, 0, sizeof r);
        r.status = rc;
        snprintf(r.error, sizeof r.error, "aos-api cannot reach aosd: %s", aos_strerror(rc));
        on_done(h, &r);
    }
    return MHD_YES;
}

/* The SSE body: what the stream encoder produced, suspended while there is nothing yet. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    hreq *h = cls;
    pthread_mutex_lock(&h->mu);
    ssize_t n;
    if (h->out_len > h->out_off) {
        if (h->t_resumed) {
            stage_add(ST_RELAY, h->t_resumed, mono_us());
            h->t_resumed = 0;
        }
        size_t k = h->out_len - h->out_off;
        if (k > max)
            k = max;
        memcpy(buf, h->out + h->out_off, k);
        h->out_off += k;
        n = (ssize_t)k;
    } else if (h->out_broken) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (h->finished) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        h->suspended = 1;
        MHD_suspend_connection(h->conn);
        n = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

static void sse_free(void *cls) { hreq_unref(cls); }

/* Resumed with the call's answer (or its first part): the response. */
static enum MHD_Result answer(hreq *h)
{
    struct MHD_Connection *c = h->conn;
    pthread_mutex_lock(&h->mu);
    int finished = h->finished, streaming = h->streaming;
    aos_err st = h->status;
    pthread_mutex_unlock(&h->mu);
    if (h->stream && streaming) {
        /* the first part came: 200 and the events as they come */
        pthread_mutex_lock(&h->mu);
        h->refs++; /* the response's reader */
        pthread_mutex_unlock(&h->mu);
        atomic_fetch_add(&A.streams, 1);
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, h, sse_free);
        if (!r) {
            hreq_unref(h);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result rc = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return rc;
    }
    if (!finished) { /* a spurious resume: wait on */
        pthread_mutex_lock(&h->mu);
        h->suspended = 1;
        MHD_suspend_connection(c);
        pthread_mutex_unlock(&h->mu);
        return MHD_YES;
    }
    if (st != AOS_OK)
        return respond_error(c, h->flav, st, h->err, h->retry_after_ms);
    atomic_fetch_add(&A.served, 1);
    char *body = NULL;
    size_t len = 0;
    uint64_t now = (uint64_t)time(NULL);
    if (h->stream) { /* replayed whole: a stream of one go */
        pthread_mutex_lock(&h->mu);
        Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, h->reply_len, h->reply);
        front_sse_end(h->sse, cr, cr ? AOS_OK : AOS_ERR_PROTO, "aos-llm's reply does not read");
        if (cr)
            aos__llm__chat_reply__free_unpacked(cr, NULL);
        body = malloc(h->out_len - h->out_off + 1);
        if (body) {
            len = h->out_len - h->out_off;
            memcpy(body, h->out + h->out_off, len);
        }
        pthread_mutex_unlock(&h->mu);
        return respond(c, 200, "text/event-stream", body, len, 0);
    }
    if (h->route == R_METRICS) {
        char *t = malloc(h->reply_len + 1);
        if (!t)
            return MHD_NO;
        memcpy(t, h->reply, h->reply_len);
        return respond(c, 200, "text/plain; version=0.0.4", t, h->reply_len, 0);
    }
    if (h->route == R_MODELS) {
        Aos__Agent__SelfReply *sr = aos__agent__self_reply__unpack(NULL, h->reply_len, h->reply);
        json_t *man = sr ? json_loadb((const char *)sr->manifest_json.data,
                                      sr->manifest_json.len, 0, NULL)
                         : NULL;
        const char *model = json_string_value(json_object_get(man, "model"));
        if (sr)
            body = front_openai_models(model, now, &len);
        json_decref(man);
        if (sr)
            aos__agent__self_reply__free_unpacked(sr, NULL);
    } else if (h->route == R_EMBED) {
        Aos__Llm__EmbedReply *er = aos__llm__embed_reply__unpack(NULL, h->reply_len, h->reply);
        if (er) {
            body = front_openai_embed_reply(er, h->model, h->base64, &len);
            aos__llm__embed_reply__free_unpacked(er, NULL);
        }
    } else {
        Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, h->reply_len, h->reply);
        if (cr) {
            body = h->route == R_CHAT ? front_openai_reply(cr, h->id, h->model, now, &len)
                                      : front_anthropic_reply(cr, h->id, h->model, &len);
            aos__llm__chat_reply__free_unpacked(cr, NULL);
        }
    }
    if (!body)
        return respond_error(c, h->flav, AOS_ERR_INTERNAL, "aos-llm's reply does not read",
                             0);
    return respond(c, 200, "application/json", body, len, 0);
}

static route_t route_of(const char *method, const char *url, front_flavour *f)
{
    *f = FRONT_OPENAI;
    int post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    if (!strcmp(url, "/v1/chat/completions"))
        return post ? R_CHAT : R_METHOD;
    if (!strcmp(url, "/v1/embeddings"))
        return post ? R_EMBED : R_METHOD;
    if (!strcmp(url, "/v1/messages")) {
        *f = FRONT_ANTHROPIC;
        return post ? R_MESSAGES : R_METHOD;
    }
    if (!strcmp(url, "/v1/models"))
        return get ? R_MODELS : R_METHOD;
    if (!strcmp(url, "/metrics"))
        return get ? R_METRICS : R_METHOD;
    return R_NOTFOUND;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_len, void **con_cls)
{
    (void)cls;
    (void)version;
    hreq *h = *con_cls;
    if (!h) {
        h = calloc(1, sizeof *h);
        if (!h)
            return MHD_NO;
        pthread_mutex_init(&h->mu, NULL);
        h->refs = 1;
        h->conn = c;
        h->route = route_of(method, url, &h->flav);
        h->t_in = mono_us();
        *con_cls = h;
        if (atomic_load(&A.conns) > A.max_conns) {
            h->over_cap = 1;
            atomic_fetch_add(&A.refused_over_cap, 1);
            return respond_error(c, h->flav, AOS_ERR_UNAVAILABLE,
                                 "aos-api has all its connections in use; retry later", 1000);
        }
        /* An announced body over the cap is read and dropped, then answered 413: answering
         * before it is read makes MHD close with the client's bytes unread, the kernel then
         * sends a reset, and the client loses the answer in it (CI saw curl get no status).
         * Past API_DISCARD_MAX the connection is answered at once and cut, so a client
         * announcing gigabytes costs nothing. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
        if (n > A.max_body && n > API_DISCARD_MAX)
            return respond_error(c, h->flav, AOS_ERR_TOO_BIG, "the request body is over "
                                 "aos-api's cap (api.max_body_bytes)", 0);
        if (n > A.max_body)
            h->too_big = 1;
        return MHD_YES;
    }
    if (h->over_cap)
        return MHD_YES;
    if (*upload_len) { /* a piece of the body */
        if (h->too_big) {
            h->dropped += *upload_len;
            if (h->dropped > API_DISCARD_MAX)
                return MHD_NO; /* an endless body: cut, no answer owed */
        } else if (h->len + *upload_len > A.max_body) {
            h->too_big = 1;
        } else {
            if (h->len + *upload_len + 1 > h->cap) {
                size_t nc = h->cap ? h->cap : 4096;
                while (nc < h->len + *upload_len + 1)
                    nc *= 2;
                char *p = realloc(h->body, nc);
                if (!p)
                    return MHD_NO;
                h->body = p;
                h->cap = nc;
            }
            memcpy(h->body + h->len, upload, *upload_len);
            h->len += *upload_len;
        }
        *upload_len = 0;
        return MHD_YES;
    }
    if (h->dispatched)
        return answer(h);
    switch (h->route) {
    case R_NOTFOUND:
        return respond_error(c, h->flav, AOS_ERR_NOT_FOUND, "no such endpoint in aos's front "
                             "door (POST /v1/chat/completions, /v1/embeddings, /v1/messages; "
                             "GET /v1/models, /metrics)", 0);
    case R_METHOD:
        return respond_error(c, h->flav, AOS_ERR_USAGE, "wrong HTTP method for this "
                             "endpoint", 0);
    case R_MODELS:
        return dispatch(h);
    case R_METRICS:
        return metrics(h);
    default:
        break;
    }
    if (h->too_big)
        return respond_error(c, h->flav, AOS_ERR_TOO_BIG, "the request body is over aos-api's "
                             "cap (api.max_body_bytes)", 0);
    return dispatch(h);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    hreq *h = *con_cls;
    if (!h)
        return;
    *con_cls = NULL;
    uint64_t now = mono_us();
    pthread_mutex_lock(&h->mu);
    h->mhd_gone = 1;
    if (h->dispatched && h->finished && h->t_sent && /* t_sent: a call, not /metrics */
        toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        stage_add(ST_IN, h->t_in, h->t_sent);
        stage_add(ST_FIRST, h->t_sent, h->t_first);
        stage_add(ST_REST, h->t_first, h->t_done);
        stage_add(ST_OUT, h->t_done, now);
    }
    /* the client went away before the answer was whole: aosd stops the LLM call */
    int cancel = h->dispatched && !h->finished && h->route != R_MODELS &&
                 h->route != R_METRICS;
    pthread_mutex_unlock(&h->mu);
    if (cancel) {
        atomic_fetch_add(&A.cancelled, 1);
        srv_request_cancel(A.s, h->call_id);
    }
    hreq_unref(h);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)c;
    (void)socket_ctx;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&A.conns, 1);
    else
        atomic_fetch_sub(&A.conns, 1);
}

/* ---- the listener ---------------------------------------------------------------------- */

/* DATA/api/port: where the tests and aosctl find a port chosen by the kernel. Written
 * whole (a temporary file renamed over it). */
static void write_port(unsigned port)
{
    const char *dir = srv_dir(A.s);
    if (!dir)
        return;
    char tmp[4200], path[4200], txt[16];
    snprintf(tmp, sizeof tmp, "%s/port.tmp", dir);
    snprintf(path, sizeof path, "%s/port", dir);
    int n = snprintf(txt, sizeof txt, "%u\n", port);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 || write(fd, txt, (size_t)n) != n || close(fd) || rename(tmp, path))
        aos_warn("api: cannot write %s: %s", path, strerror(errno));
}

/* The port this server had before a restart (port 0 only): its clients keep their URL. */
static unsigned old_port(void)
{
    const char *dir = srv_dir(A.s);
    char path[4200], txt[16] = "";
    if (!dir)
        return 0;
    snprintf(path, sizeof path, "%s/port", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, txt, sizeof txt - 1);
    close(fd);
    unsigned long p = n > 0 ? strtoul(txt, NULL, 10) : 0;
    return p > 0 && p < 65536 ? (unsigned)p : 0;
}

static int listen_on(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr = A.addr;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 1024)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* The address, TLS and the scrape token from the config (checked by aosd already; an
 * address off loopback without TLS is refused here too, whatever handed it over). */
static aos_err tls_config(const Aos__ApiConfig *ac, char *why, size_t whylen)
{
    char ip[16] = "127.0.0.1";
    if (ac && ac->listen.len && ac->listen.len < sizeof ip) {
        memcpy(ip, ac->listen.data, ac->listen.len);
        ip[ac->listen.len] = 0;
    }
    if (inet_pton(AF_INET, ip, &A.addr) != 1) {
        snprintf(why, whylen, "api.listen: not an IPv4 address");
        return AOS_ERR_USAGE;
    }
    A.loopback = (ntohl(A.addr.s_addr) >> 24) == 127;
    if (ac && ac->tls_cert_pem.len && ac->tls_key_pem.len) {
        A.tls_cert = strndup((const char *)ac->tls_cert_pem.data, ac->tls_cert_pem.len);
        A.tls_key = strndup((const char *)ac->tls_key_pem.data, ac->tls_key_pem.len);
        if (!A.tls_cert || !A.tls_key) {
            snprintf(why, whylen, "out of memory");
            return AOS_ERR_NOMEM;
        }
    } else if (!A.loopback) {
        snprintf(why, whylen, "api.listen %s is off loopback and no TLS certificate came", ip);
        return AOS_ERR_USAGE;
    }
    if (ac && ac->metrics_token_hash.len == sizeof A.token_hash) {
        memcpy(A.token_hash, ac->metrics_token_hash.data, sizeof A.token_hash);
        A.has_token = 1;
    }
    return AOS_OK;
}

static aos_err api_open(srv *s, char *why, size_t whylen)
{
    A.s = s;
    size_t clen = 0;
    const uint8_t *cfg = srv_config(s, &clen);
    Aos__ApiConfig *ac = cfg ? aos__api_config__unpack(NULL, clen, cfg) : NULL;
    if (cfg && !ac) {
        snprintf(why, whylen, "the configuration aosd handed over does not read");
        return AOS_ERR_PROTO;
    }
    A.port = ac ? ac->port : 0;
    A.max_conns = ac && ac->max_connections ? ac->max_connections : API_CONNS_DEFAULT;
    A.max_body = ac && ac->max_body_bytes ? (size_t)ac->max_body_bytes : API_BODY_DEFAULT;
    A.idle_s = ac && ac->idle_timeout_s ? ac->idle_timeout_s : API_IDLE_S;
    aos_err e = tls_config(ac, why, whylen);
    if (ac) {
        if (ac->tls_key_pem.data)
            explicit_bzero(ac->tls_key_pem.data, ac->tls_key_pem.len);
        aos__api_config__free_unpacked(ac, NULL);
    }
    if (e != AOS_OK)
        return e;
    if (sodium_init() < 0) {
        snprintf(why, whylen, "libsodium does not start");
        return AOS_ERR_INTERNAL;
    }
    unsigned want = A.port ? A.port : old_port();
    A.lfd = listen_on(want);
    if (A.lfd < 0 && !A.port && want)
        A.lfd = listen_on(0); /* the old port is taken: any */
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &A.addr, ip, sizeof ip);
    if (A.lfd < 0) {
        snprintf(why, whylen, "listening on %s:%u: %s", ip, want, strerror(errno));
        return AOS_ERR_IO;
    }
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(A.lfd, (struct sockaddr *)&sa, &sl);
    A.port = ntohs(sa.sin_port);
    write_port(A.port);
    /* one polling thread (epoll) for every connection; calls wait suspended, so a slow model
     * holds no thread. Its epoll set and wakeup eventfd are made here, before the sandbox */
    /* TLS (GnuTLS inside libmicrohttpd) when a certificate came: the key and chain are
     * handed over in memory, so nothing in the sandbox reads a file */
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, A.tls_key},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, A.tls_cert},
        {MHD_OPTION_END, 0, NULL},
    };
    A.d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            (A.tls_cert ? MHD_USE_TLS : 0),
        0, NULL, NULL, on_request, NULL, MHD_OPTION_LISTEN_SOCKET, A.lfd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(A.max_conns + API_OVER_BAND),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_HEADERS_MAX,
        MHD_OPTION_CONNECTION_TIMEOUT, A.idle_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        NULL, MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_ARRAY,
        A.tls_cert ? tls : &tls[2], MHD_OPTION_END);
    if (!A.d) {
        snprintf(why, whylen, "libmicrohttpd does not start on %s:%u%s", ip, A.port,
                 A.tls_cert ? " (with TLS: is the key the certificate's?)" : "");
        return AOS_ERR_INTERNAL;
    }
    aos_info("api: the front door on %s://%s:%u/v1 (%u connections, %zu-byte bodies%s)",
             A.tls_cert ? "https" : "http", ip, A.port, A.max_conns, A.max_body,
             A.has_token ? ", /metrics with its scrape token" : "");
    return AOS_OK;
}

static void api_stats(srv *s, srv_stats *st)
{
    (void)s;
    srv_stat(st, "port", A.port, NULL);
    srv_stat(st, "connections", atomic_load(&A.conns), NULL);
    srv_stat(st, "calls", (int64_t)atomic_load(&A.calls), NULL);
    srv_stat(st, "served", (int64_t)atomic_load(&A.served), NULL);
    srv_stat(st, "streams", (int64_t)atomic_load(&A.streams), NULL);
    srv_stat(st, "refused_over_cap", (int64_t)atomic_load(&A.refused_over_cap), NULL);
    srv_stat(st, "bad_requests", (int64_t)atomic_load(&A.bad_requests), NULL);
    srv_stat(st, "cancelled", (int64_t)atomic_load(&A.cancelled), NULL);
    srv_stat(st, "tls", A.tls_cert != NULL, NULL);
    srv_stat(st, "metrics_refused", (int64_t)atomic_load(&A.metrics_refused), NULL);
    for (int i = 0; i < ST_N; i++) {
        char k[48];
        snprintf(k, sizeof k, "%s_sum_us", stage_name[i]);
        srv_stat(st, k, (int64_t)atomic_load(&A.stages[i].sum_us), NULL);
        snprintf(k, sizeof k, "%s_n", stage_name[i]);
        srv_stat(st, k, (int64_t)atomic_load(&A.stages[i].n), NULL);
        snprintf(k, sizeof k, "%s_max_us", stage_name[i]);
        srv_stat(st, k, (int64_t)atomic_load(&A.stages[i].max_us), NULL);
    }
}

int main(int argc, char **argv)
{
    srv_def def = {
        .name = "api",
        .methods = NULL,
        .n_methods = 0,
        .open = api_open,
        .add_stats = api_stats,
        /* no close: suspended connections may still wait on aosd at exit (MHD_stop_daemon
         * must not run with any suspended), and the process's exit closes every socket */
    };
    return srv_main(&def, argc, argv);
}
