/* OTLP/HTTP JSON export for aos-audit: the span encoder (jansson), and the exporter's bounded
 * queue and its one sender thread (a libcurl easy handle driven through a multi handle). */
#include "otlp.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* What we keep of a collector's answer: an ExportTraceServiceResponse is tiny; the rest of
 * a larger body is read and thrown away so a hostile collector cannot grow us. */
#define RESP_MAX 16384u

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- strings ---------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates,
 * nothing past U+10FFFF), or 0 when it is not one. */
static size_t u8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A JSON string of s[0..strnlen(s, max)): the arrays of a span need no NUL when full, and
 * bytes that are not UTF-8 become U+FFFD, since jansson refuses them and the span still
 * deserves to be sent. */
static json_t *jstr(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    json_t *v = json_stringn(s, n);
    if (v)
        return v;
    char *buf = malloc(n * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = u8_seq((const unsigned char *)s + i, n - i);
        if (k) {
            memcpy(buf + o, s + i, k);
            o += k, i += k;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3, i++;
        }
    }
    v = json_stringn(buf, o);
    free(buf);
    return v;
}

/* Copy src into dst[cap], cut before a character that would not fit whole. */
static void copy_cut(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* ---- attributes and spans --------------------------------------------------------------- */

static aos_err attr_slot(otlp_span *s, const char *key, otlp_attr **out)
{
    if (!s || !key || !*key)
        return AOS_ERR_USAGE;
    size_t kl = strnlen(key, OTLP_KEY_MAX);
    if (s->n_attrs >= OTLP_MAX_ATTRS || kl >= OTLP_KEY_MAX)
        return AOS_ERR_TOO_BIG;
    otlp_attr *a = &s->attrs[s->n_attrs];
    memset(a, 0, sizeof *a);
    memcpy(a->key, key, kl + 1);
    *out = a;
    return AOS_OK;
}

aos_err otlp_attr_str(otlp_span *s, const char *key, const char *val)
{
    otlp_attr *a;
    aos_err rc = val ? attr_slot(s, key, &a) : AOS_ERR_USAGE;
    if (rc != AOS_OK)
        return rc;
    a->type = OTLP_ATTR_STRING;
    copy_cut(a->v.s, sizeof a->v.s, val);
    s->n_attrs++;
    return AOS_OK;
}

aos_err otlp_attr_int(otlp_span *s, const char *key, int64_t val)
{
    otlp_attr *a;
    aos_err rc = attr_slot(s, key, &a);
    if (rc != AOS_OK)
        return rc;
    a->type = OTLP_ATTR_INT;
    a->v.i = val;
    s->n_attrs++;
    return AOS_OK;
}

aos_err otlp_attr_double(otlp_span *s, const char *key, double val)
{
    otlp_attr *a;
    aos_err rc = attr_slot(s, key, &a);
    if (rc != AOS_OK)
        return rc;
    a->type = OTLP_ATTR_DOUBLE;
    a->v.d = val;
    s->n_attrs++;
    return AOS_OK;
}

aos_err otlp_attr_bool(otlp_span *s, const char *key, int val)
{
    otlp_attr *a;
    aos_err rc = attr_slot(s, key, &a);
    if (rc != AOS_OK)
        return rc;
    a->type = OTLP_ATTR_BOOL;
    a->v.b = val != 0;
    s->n_attrs++;
    return AOS_OK;
}

static aos_err attr_check(const otlp_attr *a, size_t i, char *why, size_t whylen)
{
    if (!a->key[0]) {
        aos_say(why, whylen, "attribute %zu has an empty key", i);
        return AOS_ERR_USAGE;
    }
    if ((unsigned)a->type > OTLP_ATTR_BOOL) {
        aos_say(why, whylen, "attribute %zu has an unknown type %u", i, (unsigned)a->type);
        return AOS_ERR_USAGE;
    }
    return AOS_OK;
}

aos_err otlp_span_check(const otlp_span *s, char *why, size_t whylen)
{
    if (!s) {
        aos_say(why, whylen, "no span");
        return AOS_ERR_USAGE;
    }
    if (sodium_is_zero(s->trace_id, sizeof s->trace_id)) {
        aos_say(why, whylen, "the trace id is all zero (OTLP calls that invalid)");
        return AOS_ERR_USAGE;
    }
    if (sodium_is_zero(s->span_id, sizeof s->span_id)) {
        aos_say(why, whylen, "the span id is all zero (OTLP calls that invalid)");
        return AOS_ERR_USAGE;
    }
    if ((unsigned)s->kind > OTLP_KIND_CONSUMER) {
        aos_say(why, whylen, "unknown span kind %u", (unsigned)s->kind);
        return AOS_ERR_USAGE;
    }
    if ((unsigned)s->status > OTLP_STATUS_ERROR) {
        aos_say(why, whylen, "unknown status code %u", (unsigned)s->status);
        return AOS_ERR_USAGE;
    }
    if (s->n_attrs > OTLP_MAX_ATTRS) {
        aos_say(why, whylen, "%u attributes, at most %u", s->n_attrs, OTLP_MAX_ATTRS);
        return AOS_ERR_USAGE;
    }
    for (unsigned i = 0; i < s->n_attrs; i++) {
        aos_err rc = attr_check(&s->attrs[i], i, why, whylen);
        if (rc != AOS_OK)
            return rc;
    }
    return AOS_OK;
}

/* ---- the encoder ------------------------------------------------------------------------ */
/* jansson's *_set_new and *_append_new free the value they are given on failure (also a
 * NULL container), so each builder below adds children into a container it already owns
 * and frees just that container when anything fails. */

static json_t *jhex(const uint8_t *b, size_t n)
{
    char h[2 * 16 + 1];
    sodium_bin2hex(h, sizeof h, b, n);
    return json_string(h);
}

static json_t *jdec_u(uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return json_string(b);
}

static json_t *jdec_i(int64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRId64, v);
    return json_string(b);
}

/* proto3's JSON mapping spells the doubles JSON has no numbers for as strings. */
static json_t *jdouble(double d)
{
    if (isnan(d))
        return json_string("NaN");
    if (isinf(d))
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

static json_t *attr_json(const otlp_attr *a)
{
    json_t *o = json_object();
    json_t *v = json_object();
    if (json_object_set_new(o, "value", v))
        goto fail;
    json_t *x = NULL;
    const char *vk = NULL;
    switch (a->type) {
    case OTLP_ATTR_STRING:
        vk = "stringValue", x = jstr(a->v.s, sizeof a->v.s);
        break;
    case OTLP_ATTR_INT:
        vk = "intValue", x = jdec_i(a->v.i);
        break;
    case OTLP_ATTR_DOUBLE:
        vk = "doubleValue", x = jdouble(a->v.d);
        break;
    case OTLP_ATTR_BOOL:
        vk = "boolValue", x = json_boolean(a->v.b);
        break;
    }
    if (!vk || json_object_set_new(v, vk, x) ||
        json_object_set_new(o, "key", jstr(a->key, sizeof a->key)))
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *attrs_json(const otlp_attr *a, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(arr, attr_json(&a[i]))) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

static json_t *span_json(const otlp_span *s)
{
    json_t *o = json_object();
    json_t *st = json_object();
    if (json_object_set_new(o, "traceId", jhex(s->trace_id, sizeof s->trace_id)) ||
        json_object_set_new(o, "spanId", jhex(s->span_id, sizeof s->span_id)) ||
        (!sodium_is_zero(s->parent_span_id, sizeof s->parent_span_id) &&
         json_object_set_new(o, "parentSpanId",
                             jhex(s->parent_span_id, sizeof s->parent_span_id))) ||
        json_object_set_new(o, "name", jstr(s->name, sizeof s->name)) ||
        json_object_set_new(o, "kind", json_integer(s->kind)) ||
        json_object_set_new(o, "startTimeUnixNano", jdec_u(s->start_ns)) ||
        json_object_set_new(o, "endTimeUnixNano", jdec_u(s->end_ns)) ||
        json_object_set_new(o, "attributes", attrs_json(s->attrs, s->n_attrs)) ||
        json_object_set_new(o, "status", st) ||
        json_object_set_new(st, "code", json_integer(s->status)) ||
        (s->status_message[0] &&
         json_object_set_new(st, "message",
                             jstr(s->status_message, sizeof s->status_message)))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

aos_err otlp_encode(const otlp_span *spans, size_t n, const otlp_attr *res, size_t nres,
                    const char *scope_name, const char *scope_version, char **out,
                    size_t *outlen, char *why, size_t whylen)
{
    if (out)
        *out = NULL;
    if (outlen)
        *outlen = 0;
    if (!spans || !n || (nres && !res) || !scope_name || !out || !outlen) {
        aos_say(why, whylen, "otlp_encode: missing spans, scope name or output");
        return AOS_ERR_USAGE;
    }
    char w[160];
    for (size_t i = 0; i < nres; i++)
        if (attr_check(&res[i], i, w, sizeof w) != AOS_OK) {
            aos_say(why, whylen, "resource: %s", w);
            return AOS_ERR_USAGE;
        }
    for (size_t i = 0; i < n; i++)
        if (otlp_span_check(&spans[i], w, sizeof w) != AOS_OK) {
            aos_say(why, whylen, "span %zu: %s", i, w);
            return AOS_ERR_USAGE;
        }

    json_t *root = json_object();
    json_t *rss = json_array(), *rs = json_object(), *resource = json_object();
    json_t *sss = json_array(), *ss = json_object(), *scope = json_object();
    json_t *arr = json_array();
    /* each node is linked into its parent at once, so root owns all from here on */
    if (json_object_set_new(root, "resourceSpans", rss) || json_array_append_new(rss, rs) ||
        json_object_set_new(rs, "resource", resource) ||
        json_object_set_new(resource, "attributes", attrs_json(res, nres)) ||
        json_object_set_new(rs, "scopeSpans", sss) || json_array_append_new(sss, ss) ||
        json_object_set_new(ss, "scope", scope) ||
        json_object_set_new(scope, "name", jstr(scope_name, OTLP_STR_MAX)) ||
        (scope_version &&
         json_object_set_new(scope, "version", jstr(scope_version, OTLP_STR_MAX))) ||
        json_object_set_new(ss, "spans", arr))
        goto nomem;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(arr, span_json(&spans[i])))
            goto nomem;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) {
        aos_say(why, whylen, "no memory for the encoded spans");
        return AOS_ERR_NOMEM;
    }
    *out = s;
    *outlen = strlen(s);
    return AOS_OK;
nomem:
    json_decref(root);
    aos_say(why, whylen, "no memory to encode %zu spans", n);
    return AOS_ERR_NOMEM;
}

/* ---- the exporter ----------------------------------------------------------------------- */

struct otlp {
    pthread_mutex_t mu;    /* guards everything up to st; the sender's curl state is its own */
    pthread_cond_t cv;     /* on CLOCK_MONOTONIC: spans arrived, stop, or a backoff wake-up */
    otlp_span *ring;       /* cap slots, count of them in use from head on */
    unsigned cap, head, count;
    unsigned inflight;     /* spans taken into batch and not yet settled */
    uint64_t oldest_ms;    /* when the oldest queued span arrived */
    int stopping;
    uint64_t stop_deadline_ms;
    otlp_stats st;

    unsigned batch_max, flush_ms, timeout_ms, retry_initial_ms, retry_max_ms, stop_ms;
    otlp_span *batch;      /* the sender's copy of the batch under way */
    otlp_attr res[2];      /* service.name, service.version */
    CURL *h;
    CURLM *m;
    struct curl_slist *hdrs, *resolve;
    char resp[RESP_MAX];
    size_t resp_len;
    pthread_t th;
    int th_started, curl_inited, mu_inited;
};

static size_t on_write(char *p, size_t sz, size_t nm, void *arg)
{
    otlp *e = arg;
    size_t n = sz * nm;
    size_t room = sizeof e->resp - 1 - e->resp_len;
    size_t k = n < room ? n : room;
    memcpy(e->resp + e->resp_len, p, k);
    e->resp_len += k;
    return n;
}

/* Wait on cv until deadline_ms (monotonic) or a signal; the caller holds mu. */
static void wait_until(otlp *e, uint64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000u),
                          (long)(deadline_ms % 1000u) * 1000000L};
    pthread_cond_timedwait(&e->cv, &e->mu, &ts);
}

/* Move up to batch_max spans from the queue into e->batch once a batch is full, the oldest
 * span has waited flush_ms, or we are stopping. 0: the thread should end. The lock is let
 * go between spans so a push never waits for more than one copy. */
static unsigned take_batch(otlp *e)
{
    pthread_mutex_lock(&e->mu);
    for (;;) {
        uint64_t now = now_ms();
        if (e->stopping && (!e->count || now >= e->stop_deadline_ms)) {
            pthread_mutex_unlock(&e->mu);
            return 0;
        }
        if (e->count >= e->batch_max ||
            (e->count && (e->stopping || now >= e->oldest_ms + e->flush_ms)))
            break;
        if (e->count)
            wait_until(e, e->oldest_ms + e->flush_ms);
        else
            pthread_cond_wait(&e->cv, &e->mu);
    }
    unsigned want = e->count < e->batch_max ? e->count : e->batch_max, n = 0;
    while (n < want && e->count) {
        memcpy(&e->batch[n], &e->ring[e->head], sizeof e->batch[n]);
        e->head = (e->head + 1) % e->cap;
        e->count--;
        e->inflight = ++n;
        pthread_mutex_unlock(&e->mu);
        pthread_mutex_lock(&e->mu);
    }
    if (e->count)
        e->oldest_ms = now_ms();
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* The batch under way is done with: sent of it arrived, rejected were refused. */
static void settle(otlp *e, unsigned sent, unsigned rejected, const char *err)
{
    pthread_mutex_lock(&e->mu);
    e->st.sent += sent;
    e->st.dropped_rejected += rejected;
    e->inflight = 0;
    if (err)
        copy_cut(e->st.last_error, sizeof e->st.last_error, err);
    pthread_mutex_unlock(&e->mu);
}

typedef enum { P_SENT, P_RETRY, P_REJECTED, P_ABORTED } post_res;

/* Spans of the batch the collector refused in an otherwise successful answer (OTLP's
 * partial success); rejectedSpans is an int64, so a string of decimal or a number. */
static unsigned partial_rejects(otlp *e, unsigned n)
{
    json_t *r = json_loadb(e->resp, e->resp_len, 0, NULL);
    json_t *v = json_object_get(json_object_get(r, "partialSuccess"), "rejectedSpans");
    long long k = 0;
    if (json_is_integer(v))
        k = json_integer_value(v);
    else if (json_is_string(v))
        k = strtoll(json_string_value(v), NULL, 10);
    json_decref(r);
    return k <= 0 ? 0 : k >= (long long)n ? n : (unsigned)k;
}

/* One POST of body. The multi handle lets otlp_free interrupt the wait at once
 * (curl_multi_wakeup) and the stop deadline cut a request short. */
static post_res post(otlp *e, const char *body, size_t len, unsigned n, unsigned *rejected,
                     uint64_t *retry_after_ms, char *err, size_t errlen)
{
    e->resp_len = 0;
    curl_easy_setopt(e->h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLMcode mc = curl_multi_add_handle(e->m, e->h);
    if (mc != CURLM_OK) {
        aos_say(err, errlen, "cannot start a request: %s", curl_multi_strerror(mc));
        return P_RETRY;
    }
    int running = 1, aborted = 0, done = 0;
    CURLcode cc = CURLE_OK;
    for (;;) {
        mc = curl_multi_perform(e->m, &running);
        if (mc != CURLM_OK || !running)
            break;
        pthread_mutex_lock(&e->mu);
        int stop = e->stopping;
        uint64_t dl = e->stop_deadline_ms;
        pthread_mutex_unlock(&e->mu);
        uint64_t now = now_ms();
        int wait = 1000;
        if (stop) {
            if (now >= dl) {
                aborted = 1;
                break;
            }
            if (dl - now < 1000)
                wait = (int)(dl - now);
        }
        curl_multi_poll(e->m, NULL, 0, wait, NULL);
    }
    CURLMsg *msg;
    int q;
    while ((msg = curl_multi_info_read(e->m, &q)))
        if (msg->msg == CURLMSG_DONE)
            cc = msg->data.result, done = 1;
    curl_multi_remove_handle(e->m, e->h);
    if (aborted) {
        aos_say(err, errlen, "stopped with a request under way");
        return P_ABORTED;
    }
    if (mc != CURLM_OK) {
        aos_say(err, errlen, "request failed: %s", curl_multi_strerror(mc));
        return P_RETRY;
    }
    if (!done) {
        aos_say(err, errlen, "request ended without a result");
        return P_RETRY;
    }
    if (cc != CURLE_OK) {
        aos_say(err, errlen, "cannot reach the collector: %s", curl_easy_strerror(cc));
        return P_RETRY;
    }
    long code = 0;
    curl_easy_getinfo(e->h, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
        e->resp[e->resp_len] = 0;
        *rejected = partial_rejects(e, n);
        if (*rejected)
            aos_say(err, errlen, "the collector rejected %u spans of a batch of %u", *rejected, n);
        return P_SENT;
    }
    if (code == 429 || code == 502 || code == 503 || code == 504) {
        curl_off_t ra = 0;
        if (curl_easy_getinfo(e->h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            *retry_after_ms = (uint64_t)ra > e->retry_max_ms / 1000u
                                  ? e->retry_max_ms
                                  : (uint64_t)ra * 1000u;
        aos_say(err, errlen, "the collector answered HTTP %ld", code);
        return P_RETRY;
    }
    aos_say(err, errlen, "the collector refused a batch of %u spans: HTTP %ld", n, code);
    return P_REJECTED;
}

/* Full jitter over the upper half: spreads many exporters' retries, never retries at once. */
static uint64_t backoff_ms(const otlp *e, unsigned attempt)
{
    uint64_t d = e->retry_initial_ms;
    for (unsigned i = 0; i < attempt && d < e->retry_max_ms; i++)
        d *= 2;
    if (d > e->retry_max_ms)
        d = e->retry_max_ms;
    return d / 2 + randombytes_uniform((uint32_t)(d / 2 + 1));
}

static void send_batch(otlp *e, unsigned n)
{
    char *body = NULL, err[200];
    size_t len = 0;
    aos_err rc = otlp_encode(e->batch, n, e->res, 2, "aos", AOS_VERSION, &body, &len, err,
                             sizeof err);
    if (rc != AOS_OK) {
        char m[256];
        snprintf(m, sizeof m, "cannot encode a batch: %s", err);
        settle(e, 0, n, m);
        return;
    }
    unsigned attempt = 0;
    int tried_stopping = 0;
    for (;;) {
        unsigned rej = 0;
        uint64_t ra = 0;
        err[0] = 0;
        post_res r = post(e, body, len, n, &rej, &ra, err, sizeof err);
        if (r == P_SENT) {
            settle(e, n - rej, rej, rej ? err : NULL);
            break;
        }
        if (r == P_REJECTED) {
            settle(e, 0, n, err);
            break;
        }
        if (r == P_ABORTED) { /* nobody reads the figures after otlp_free */
            settle(e, 0, 0, NULL);
            break;
        }
        pthread_mutex_lock(&e->mu);
        copy_cut(e->st.last_error, sizeof e->st.last_error, err);
        if (!e->stopping) {
            uint64_t until = now_ms() + (ra ? ra : backoff_ms(e, attempt++));
            while (!e->stopping && now_ms() < until)
                wait_until(e, until);
        }
        /* while stopping, one more try per batch: a dead collector answers at once and
         * must not turn the stop budget into a busy loop */
        if (e->stopping && tried_stopping++) {
            e->inflight = 0;
            pthread_mutex_unlock(&e->mu);
            break;
        }
        e->st.retries++;
        pthread_mutex_unlock(&e->mu);
    }
    free(body);
}

static void *sender_main(void *arg)
{
    otlp *e = arg;
    unsigned n;
    while ((n = take_batch(e)))
        send_batch(e, n);
    return NULL;
}

static void destroy(otlp *e)
{
    if (e->m && e->h)
        curl_multi_remove_handle(e->m, e->h);
    if (e->m)
        curl_multi_cleanup(e->m);
    if (e->h)
        curl_easy_cleanup(e->h);
    curl_slist_free_all(e->hdrs);
    curl_slist_free_all(e->resolve);
    if (e->curl_inited)
        curl_global_cleanup();
    if (e->mu_inited) {
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
    }
    free(e->ring);
    free(e->batch);
    free(e);
}

void otlp_free(otlp *e)
{
    if (!e)
        return;
    if (e->th_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = 1;
        e->stop_deadline_ms = now_ms() + e->stop_ms;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        curl_multi_wakeup(e->m);
        pthread_join(e->th, NULL);
    }
    destroy(e);
}

/* A header line we pass on: "Name: value" with a token name, no CR, LF or NUL (they would
 * let a config smuggle requests), and not one of the headers we set ourselves. */
static aos_err header_check(const char *h, unsigned i, char *why, size_t whylen)
{
    size_t n = strnlen(h, OTLP_HEADER_MAX);
    if (n >= OTLP_HEADER_MAX) {
        aos_say(why, whylen, "otlp header %u: longer than %u bytes", i, OTLP_HEADER_MAX - 1);
        return AOS_ERR_TOO_BIG;
    }
    const char *colon = memchr(h, ':', n);
    if (!colon || colon == h) {
        aos_say(why, whylen, "otlp header %u: not \"Name: value\"", i);
        return AOS_ERR_USAGE;
    }
    for (const char *p = h; p < colon; p++)
        if (!strchr("!#$%&'*+-.^_`|~", *p) && !(*p >= '0' && *p <= '9') &&
            !(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z')) {
            aos_say(why, whylen, "otlp header %u: the name has a character not allowed", i);
            return AOS_ERR_USAGE;
        }
    if (strpbrk(colon, "\r\n")) {
        aos_say(why, whylen, "otlp header %u: the value holds a line break", i);
        return AOS_ERR_USAGE;
    }
    size_t nl = (size_t)(colon - h);
    if ((nl == 12 && !strncasecmp(h, "content-type", nl)) ||
        (nl == 14 && !strncasecmp(h, "content-length", nl)) ||
        (nl == 4 && !strncasecmp(h, "host", nl))) {
        aos_say(why, whylen, "otlp header %u: %.*s is set by the exporter", i, (int)nl, h);
        return AOS_ERR_USAGE;
    }
    return AOS_OK;
}

/* Resolve the collector's host now, while we may, and give libcurl the addresses
 * (CURLOPT_RESOLVE): it then finds them in its cache and never starts the resolver
 * thread, which the sandbox would kill. Numeric hosts need nothing. */
static aos_err pin_host(otlp *e, const char *host, const char *port, char *why, size_t whylen)
{
    if (host[0] == '[')
        return AOS_OK;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
    struct addrinfo *res = NULL, *a;
    if (getaddrinfo(host, NULL, &hints, &res) == 0) {
        freeaddrinfo(res);
        return AOS_OK;
    }
    hints.ai_flags = AI_ADDRCONFIG;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g) {
        aos_say(why, whylen, "cannot resolve the OTLP collector's host %s: %s", host,
            gai_strerror(g));
        return AOS_ERR_UNAVAILABLE;
    }
    char line[1024];
    int o = snprintf(line, sizeof line, "%s:%s:", host, port);
    int k = 0;
    for (a = res; a && o > 0 && (size_t)o < sizeof line - 64 && k < 8; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *src = a->ai_family == AF_INET6
                              ? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
                              : (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            !inet_ntop(a->ai_family, src, ip, sizeof ip))
            continue;
        o += snprintf(line + o, sizeof line - (size_t)o,
                      a->ai_family == AF_INET6 ? "%s[%s]" : "%s%s", k ? "," : "", ip);
        k++;
    }
    freeaddrinfo(res);
    if (!k || o <= 0 || (size_t)o >= sizeof line) {
        aos_say(why, whylen, "the OTLP collector's host %s has no usable address", host);
        return AOS_ERR_UNAVAILABLE;
    }
    if (!(e->resolve = curl_slist_append(NULL, line))) {
        aos_say(why, whylen, "no memory for the collector's addresses");
        return AOS_ERR_NOMEM;
    }
    return AOS_OK;
}

/* The URL must be http(s) with a host; on AOS_OK *host and *port are curl_free'd by the
 * caller. The URL itself is never echoed: it may carry credentials. */
static aos_err url_parts(const char *url, char **host, char **port, char *why, size_t whylen)
{
    CURLU *u = curl_url();
    char *scheme = NULL;
    aos_err rc = AOS_OK;
    *host = *port = NULL;
    if (!u) {
        aos_say(why, whylen, "no memory to parse the OTLP URL");
        return AOS_ERR_NOMEM;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, host, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT);
    if (uc != CURLUE_OK) {
        aos_say(why, whylen, "the OTLP URL does not parse: %s", curl_url_strerror(uc));
        rc = AOS_ERR_USAGE;
    } else if (strcmp(scheme, "http") && strcmp(scheme, "https")) {
        aos_say(why, whylen, "the OTLP URL's scheme is %s; only http and https are spoken", scheme);
        rc = AOS_ERR_USAGE;
    } else if (!**host) {
        aos_say(why, whylen, "the OTLP URL has no host");
        rc = AOS_ERR_USAGE;
    }
    if (rc != AOS_OK) {
        curl_free(*host);
        curl_free(*port);
        *host = *port = NULL;
    }
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

static void res_attr(otlp_attr *a, const char *key, const char *val)
{
    copy_cut(a->key, sizeof a->key, key);
    a->type = OTLP_ATTR_STRING;
    copy_cut(a->v.s, sizeof a->v.s, val);
}

aos_err otlp_new(const otlp_config *cfg, otlp **out, char *why, size_t whylen)
{
    if (out)
        *out = NULL;
    if (!cfg || !out || !cfg->url) {
        aos_say(why, whylen, "otlp_new: no configuration, URL or output");
        return AOS_ERR_USAGE;
    }
    unsigned q = cfg->max_queue_spans ? cfg->max_queue_spans : OTLP_QUEUE_DEFAULT;
    unsigned b = cfg->batch_max ? cfg->batch_max
                                : (q < OTLP_BATCH_DEFAULT ? q : OTLP_BATCH_DEFAULT);
    if (q > OTLP_QUEUE_CAP || b > OTLP_BATCH_CAP || b > q) {
        aos_say(why, whylen, "otlp queue %u (at most %u) and batch %u (at most %u and the queue)",
            q, OTLP_QUEUE_CAP, b, OTLP_BATCH_CAP);
        return AOS_ERR_USAGE;
    }
    unsigned nh = 0;
    for (; cfg->headers && cfg->headers[nh]; nh++) {
        if (nh >= OTLP_MAX_HEADERS) {
            aos_say(why, whylen, "more than %u otlp headers", OTLP_MAX_HEADERS);
            return AOS_ERR_TOO_BIG;
        }
        aos_err hrc = header_check(cfg->headers[nh], nh, why, whylen);
        if (hrc != AOS_OK)
            return hrc;
    }
    char *host = NULL, *port = NULL;
    aos_err rc = url_parts(cfg->url, &host, &port, why, whylen);
    if (rc != AOS_OK)
        return rc;

    otlp *e = calloc(1, sizeof *e);
    if (!e) {
        aos_say(why, whylen, "no memory for the exporter");
        rc = AOS_ERR_NOMEM;
        goto out;
    }
    e->cap = q;
    e->batch_max = b;
    e->flush_ms = cfg->flush_ms ? cfg->flush_ms : OTLP_FLUSH_MS_DEFAULT;
    e->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : OTLP_TIMEOUT_MS_DEFAULT;
    e->retry_initial_ms = cfg->retry_initial_ms ? cfg->retry_initial_ms
                                                : OTLP_RETRY_INITIAL_MS_DEFAULT;
    e->retry_max_ms = cfg->retry_max_ms ? cfg->retry_max_ms : OTLP_RETRY_MAX_MS_DEFAULT;
    if (e->retry_max_ms < e->retry_initial_ms)
        e->retry_max_ms = e->retry_initial_ms;
    e->stop_ms = cfg->stop_ms ? cfg->stop_ms : OTLP_STOP_MS_DEFAULT;
    res_attr(&e->res[0], OTLP_SERVICE_NAME, cfg->service_name ? cfg->service_name : "aos");
    res_attr(&e->res[1], OTLP_SERVICE_VERSION,
             cfg->service_version ? cfg->service_version : AOS_VERSION);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    e->mu_inited = 1;

    if (!(e->ring = calloc(q, sizeof *e->ring)) || !(e->batch = calloc(b, sizeof *e->batch))) {
        aos_say(why, whylen, "no memory for a queue of %u spans", q);
        rc = AOS_ERR_NOMEM;
        goto out;
    }
    if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        aos_say(why, whylen, "cannot initialise libsodium or libcurl");
        rc = AOS_ERR_INTERNAL;
        goto out;
    }
    e->curl_inited = 1;
    if ((rc = pin_host(e, host, port, why, whylen)) != AOS_OK)
        goto out;

    struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");
    e->hdrs = l;
    /* no 100-continue round trip before a large batch */
    if (l)
        l = curl_slist_append(l, "Expect:");
    for (unsigned i = 0; l && i < nh; i++)
        l = curl_slist_append(l, cfg->headers[i]);
    if (!l || !(e->h = curl_easy_init()) || !(e->m = curl_multi_init())) {
        aos_say(why, whylen, "no memory for the libcurl handles");
        rc = AOS_ERR_NOMEM;
        goto out;
    }
    CURL *h = e->h;
    curl_easy_setopt(h, CURLOPT_URL, cfg->url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "aos-audit/" AOS_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, e);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)e->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(e->timeout_ms < 10000 ? e->timeout_ms : 10000));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* a proxy from the environment would need its own name resolved, by a thread */
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    if (e->resolve)
        curl_easy_setopt(h, CURLOPT_RESOLVE, e->resolve);
    if (cfg->ca_pem && cfg->ca_pem_len) { /* the sandbox may hide the system store */
        struct curl_blob blob = {(void *)cfg->ca_pem, cfg->ca_pem_len, CURL_BLOB_COPY};
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }

    /* the sender takes no signals: the server's loop handles them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int perr = pthread_create(&e->th, NULL, sender_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (perr) {
        aos_say(why, whylen, "cannot start the OTLP sender thread: %s", strerror(perr));
        rc = AOS_ERR_INTERNAL;
        goto out;
    }
    e->th_started = 1;
    *out = e;
    e = NULL;
out:
    if (e)
        destroy(e);
    curl_free(host);
    curl_free(port);
    return rc;
}

aos_err otlp_push(otlp *e, const otlp_span *s, char *why, size_t whylen)
{
    if (!e) {
        aos_say(why, whylen, "otlp_push: no exporter");
        return AOS_ERR_USAGE;
    }
    aos_err rc = otlp_span_check(s, why, whylen);
    if (rc != AOS_OK)
        return rc;
    uint64_t now = now_ms();
    pthread_mutex_lock(&e->mu);
    e->st.pushed++;
    if (e->count == e->cap) {
        e->head = (e->head + 1) % e->cap;
        e->count--;
        e->st.dropped_full++;
    }
    memcpy(&e->ring[(e->head + e->count) % e->cap], s, sizeof *s);
    e->count++;
    int wake = e->count == 1 || e->count == e->batch_max;
    if (e->count == 1)
        e->oldest_ms = now;
    pthread_mutex_unlock(&e->mu);
    if (wake)
        pthread_cond_signal(&e->cv);
    return AOS_OK;
}

void otlp_stats_get(otlp *e, otlp_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->queued = (uint64_t)e->count + e->inflight;
    pthread_mutex_unlock(&e->mu);
}
