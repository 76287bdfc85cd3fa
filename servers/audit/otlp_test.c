/* Unit tests of the OTLP exporter: the JSON encoding read back field by field, and the
 * exporter against a tiny HTTP receiver in a test thread: 503 then 200, 4xx, refused, stuck. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "otlp.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void fill_span(otlp_span *s, uint32_t id)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < 16; i++)
        s->trace_id[i] = (uint8_t)(0xa0 + i);
    s->span_id[4] = (uint8_t)(id >> 24);
    s->span_id[5] = (uint8_t)(id >> 16);
    s->span_id[6] = (uint8_t)(id >> 8);
    s->span_id[7] = (uint8_t)id;
    s->span_id[0] = 0x5e; /* never zero, also for id 0 */
    snprintf(s->name, sizeof s->name, "execute_tool t%u", id);
    s->kind = OTLP_KIND_INTERNAL;
    s->start_ns = 1700000000000000000ull + id;
    s->end_ns = s->start_ns + 1000;
    s->status = OTLP_STATUS_OK;
    assert_int_equal(otlp_attr_str(s, OTLP_GENAI_OPERATION_NAME, "execute_tool"), AOS_OK);
}

/* The attribute called key in a JSON attribute array, or NULL. */
static json_t *find_attr(json_t *attrs, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a)
    {
        if (!strcmp(json_string_value(json_object_get(a, "key")), key))
            return json_object_get(a, "value");
    }
    return NULL;
}

static json_t *encode_parse(const otlp_span *s, size_t n)
{
    otlp_attr res[2];
    memset(res, 0, sizeof res);
    strcpy(res[0].key, OTLP_SERVICE_NAME);
    strcpy(res[0].v.s, "aos");
    strcpy(res[1].key, OTLP_SERVICE_VERSION);
    strcpy(res[1].v.s, "0.1.0");
    char *out = NULL, why[200] = "";
    size_t len = 0;
    assert_int_equal(otlp_encode(s, n, res, 2, "aos", "0.1.0", &out, &len, why, sizeof why),
                     AOS_OK);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    json_error_t je;
    json_t *root = json_loadb(out, len, 0, &je);
    free(out);
    assert_non_null(root);
    return root;
}

static json_t *first_spans(json_t *root)
{
    json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    return json_object_get(ss, "spans");
}

/* ---- encoding --------------------------------------------------------------------------- */

static void test_encode_known_span(void **state)
{
    (void)state;
    otlp_span s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < 16; i++)
        s.trace_id[i] = (uint8_t)(0xf0 - i * 0x0f);
    const uint8_t sid[8] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0xab, 0xcd};
    const uint8_t pid[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    memcpy(s.span_id, sid, 8);
    memcpy(s.parent_span_id, pid, 8);
    strcpy(s.name, "chat gpt-4o");
    s.kind = OTLP_KIND_CLIENT;
    s.start_ns = 1700000000123456789ull;
    s.end_ns = UINT64_MAX;
    s.status = OTLP_STATUS_ERROR;
    strcpy(s.status_message, "provider said 500");
    assert_int_equal(otlp_attr_str(&s, OTLP_GENAI_OPERATION_NAME, "chat"), AOS_OK);
    assert_int_equal(otlp_attr_str(&s, OTLP_GENAI_PROVIDER_NAME, "openai"), AOS_OK);
    assert_int_equal(otlp_attr_int(&s, OTLP_GENAI_USAGE_INPUT_TOKENS, 123), AOS_OK);
    assert_int_equal(otlp_attr_int(&s, "aos.big", INT64_MIN), AOS_OK);
    assert_int_equal(otlp_attr_double(&s, OTLP_GENAI_REQUEST_TEMPERATURE, 0.25), AOS_OK);
    assert_int_equal(otlp_attr_double(&s, "aos.nan", NAN), AOS_OK);
    assert_int_equal(otlp_attr_double(&s, "aos.ninf", -INFINITY), AOS_OK);
    assert_int_equal(otlp_attr_bool(&s, "aos.cached", 7), AOS_OK);

    json_t *root = encode_parse(&s, 1);
    json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
    json_t *rattrs = json_object_get(json_object_get(rs, "resource"), "attributes");
    assert_string_equal(json_string_value(json_object_get(find_attr(rattrs, "service.name"),
                                                          "stringValue")),
                        "aos");
    assert_string_equal(json_string_value(json_object_get(
                            find_attr(rattrs, "service.version"), "stringValue")),
                        "0.1.0");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    json_t *scope = json_object_get(ss, "scope");
    assert_string_equal(json_string_value(json_object_get(scope, "name")), "aos");
    assert_string_equal(json_string_value(json_object_get(scope, "version")), "0.1.0");
    json_t *spans = json_object_get(ss, "spans");
    assert_int_equal(json_array_size(spans), 1);
    json_t *j = json_array_get(spans, 0);

    assert_string_equal(json_string_value(json_object_get(j, "traceId")),
                        "f0e1d2c3b4a5968778695a4b3c2d1e0f");
    assert_string_equal(json_string_value(json_object_get(j, "spanId")), "deadbeef0001abcd");
    assert_string_equal(json_string_value(json_object_get(j, "parentSpanId")),
                        "0102030405060708");
    assert_string_equal(json_string_value(json_object_get(j, "name")), "chat gpt-4o");
    assert_true(json_is_integer(json_object_get(j, "kind")));
    assert_int_equal(json_integer_value(json_object_get(j, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(j, "startTimeUnixNano")),
                        "1700000000123456789");
    assert_string_equal(json_string_value(json_object_get(j, "endTimeUnixNano")),
                        "18446744073709551615");
    json_t *st = json_object_get(j, "status");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(json_string_value(json_object_get(st, "message")), "provider said 500");

    json_t *at = json_object_get(j, "attributes");
    assert_int_equal(json_array_size(at), 8);
    json_t *v = find_attr(at, "gen_ai.operation.name");
    assert_int_equal(json_object_size(v), 1);
    assert_string_equal(json_string_value(json_object_get(v, "stringValue")), "chat");
    v = find_attr(at, "gen_ai.provider.name");
    assert_string_equal(json_string_value(json_object_get(v, "stringValue")), "openai");
    v = find_attr(at, "gen_ai.usage.input_tokens");
    assert_true(json_is_string(json_object_get(v, "intValue")));
    assert_string_equal(json_string_value(json_object_get(v, "intValue")), "123");
    v = find_attr(at, "aos.big");
    assert_string_equal(json_string_value(json_object_get(v, "intValue")),
                        "-9223372036854775808");
    v = find_attr(at, "gen_ai.request.temperature");
    assert_true(json_is_real(json_object_get(v, "doubleValue")));
    assert_true(json_real_value(json_object_get(v, "doubleValue")) == 0.25);
    v = find_attr(at, "aos.nan");
    assert_string_equal(json_string_value(json_object_get(v, "doubleValue")), "NaN");
    v = find_attr(at, "aos.ninf");
    assert_string_equal(json_string_value(json_object_get(v, "doubleValue")), "-Infinity");
    v = find_attr(at, "aos.cached");
    assert_true(json_is_true(json_object_get(v, "boolValue")));
    json_decref(root);

    /* a root span has no parentSpanId; an unset status no message */
    memset(s.parent_span_id, 0, 8);
    s.status = OTLP_STATUS_UNSET;
    s.status_message[0] = 0;
    root = encode_parse(&s, 1);
    j = json_array_get(first_spans(root), 0);
    assert_null(json_object_get(j, "parentSpanId"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "status"), "code")),
                     0);
    assert_null(json_object_get(json_object_get(j, "status"), "message"));
    json_decref(root);
}

static void test_encode_hostile_bytes(void **state)
{
    (void)state;
    otlp_span s;
    fill_span(&s, 1);
    memset(s.name, 'A', sizeof s.name); /* no NUL at all */
    static const char bad[] = "bad \xff\xc0\xaf \xed\xa0\x80 ok \xe2\x82";
    memcpy(s.status_message, bad, sizeof bad);
    s.status = OTLP_STATUS_ERROR;
    otlp_attr *a = &s.attrs[0];
    memset(a->v.s, 0xff, sizeof a->v.s); /* a string value of nothing but bad bytes */
    json_t *root = encode_parse(&s, 1);
    json_t *j = json_array_get(first_spans(root), 0);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "name"))), sizeof s.name);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "status"), "message")),
        "bad \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD ok "
        "\xEF\xBF\xBD\xEF\xBF\xBD");
    json_t *v = find_attr(json_object_get(j, "attributes"), OTLP_GENAI_OPERATION_NAME);
    assert_int_equal(strlen(json_string_value(json_object_get(v, "stringValue"))),
                     3 * sizeof a->v.s);
    json_decref(root);

    /* random bytes in every string of a full span: always encodes, always parses */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 200; round++) {
        unsigned char *p = (unsigned char *)&s;
        for (size_t i = 0; i < sizeof s; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            p[i] = (unsigned char)x;
        }
        s.trace_id[0] |= 1;
        s.span_id[0] |= 1;
        s.kind = (otlp_kind)(x % 6);
        s.status = (otlp_status)(x % 3);
        s.n_attrs = OTLP_MAX_ATTRS;
        for (unsigned i = 0; i < OTLP_MAX_ATTRS; i++) {
            s.attrs[i].type = (otlp_attr_type)((x >> i) % 4);
            s.attrs[i].key[0] |= 1;
        }
        root = encode_parse(&s, 1);
        assert_int_equal(json_array_size(first_spans(root)), 1);
        json_decref(root);
    }
}

static void test_encode_rejects_invalid(void **state)
{
    (void)state;
    otlp_span s[2];
    fill_span(&s[0], 1);
    fill_span(&s[1], 2);
    char *out = (char *)1, why[200];
    size_t len = 9;
    memset(s[1].trace_id, 0, 16);
    assert_int_equal(otlp_encode(s, 2, NULL, 0, "aos", NULL, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
    assert_null(out);
    assert_int_equal(len, 0);
    assert_non_null(strstr(why, "span 1"));
    fill_span(&s[1], 2);
    memset(s[1].span_id, 0, 8);
    assert_int_equal(otlp_span_check(&s[1], why, sizeof why), AOS_ERR_USAGE);
    fill_span(&s[1], 2);
    s[1].kind = (otlp_kind)6;
    assert_int_equal(otlp_span_check(&s[1], why, sizeof why), AOS_ERR_USAGE);
    fill_span(&s[1], 2);
    s[1].status = (otlp_status)3;
    assert_int_equal(otlp_span_check(&s[1], why, sizeof why), AOS_ERR_USAGE);
    fill_span(&s[1], 2);
    s[1].n_attrs = OTLP_MAX_ATTRS + 1;
    assert_int_equal(otlp_span_check(&s[1], why, sizeof why), AOS_ERR_USAGE);
    fill_span(&s[1], 2);
    s[1].attrs[0].type = (otlp_attr_type)9;
    assert_int_equal(otlp_span_check(&s[1], why, sizeof why), AOS_ERR_USAGE);
    fill_span(&s[1], 2);
    s[1].attrs[0].key[0] = 0;
    assert_int_equal(otlp_span_check(&s[1], why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(otlp_encode(s, 0, NULL, 0, "aos", NULL, &out, &len, why, sizeof why),
                     AOS_ERR_USAGE);
}

static void test_attr_setters(void **state)
{
    (void)state;
    otlp_span s;
    memset(&s, 0, sizeof s);
    assert_int_equal(otlp_attr_int(&s, "", 1), AOS_ERR_USAGE);
    char key[OTLP_KEY_MAX + 1];
    memset(key, 'k', OTLP_KEY_MAX);
    key[OTLP_KEY_MAX] = 0;
    assert_int_equal(otlp_attr_int(&s, key, 1), AOS_ERR_TOO_BIG);
    key[OTLP_KEY_MAX - 1] = 0; /* the longest that fits */
    assert_int_equal(otlp_attr_int(&s, key, 1), AOS_OK);
    /* a long value of two-byte characters is cut before a character that would not fit */
    char val[600] = "";
    for (int i = 0; i < 299; i++)
        strcat(val, "\xc3\xa9");
    assert_int_equal(otlp_attr_str(&s, "aos.long", val), AOS_OK);
    assert_int_equal(strlen(s.attrs[1].v.s), OTLP_STR_MAX - 2);
    assert_int_equal((unsigned char)s.attrs[1].v.s[OTLP_STR_MAX - 3], 0xa9);
    while (s.n_attrs < OTLP_MAX_ATTRS)
        assert_int_equal(otlp_attr_bool(&s, "aos.b", 1), AOS_OK);
    assert_int_equal(otlp_attr_double(&s, "aos.d", 1.0), AOS_ERR_TOO_BIG);
    assert_int_equal(s.n_attrs, OTLP_MAX_ATTRS);
}

/* ---- the receiver ----------------------------------------------------------------------- */

typedef struct {
    int fd, port;
    pthread_t th;
    pthread_mutex_t mu;
    int stop;
    int fail_first;           /* answer this many requests with fail_status */
    int fail_status;
    const char *fail_extra;   /* more header lines for a failure, e.g. Retry-After */
    int ok_status;
    const char *ok_body;
    int requests, bad_requests;
    int saw_ctype, saw_auth, saw_path;
    unsigned char *seen;      /* times each span id was accepted */
    size_t nseen;
} rcv;

static int rcv_stopping(rcv *r)
{
    pthread_mutex_lock(&r->mu);
    int s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
}

/* Read one request from c (Content-Length body, which is what libcurl sends for a POST
 * of known size); 0 on success with *body malloc'd. */
static int read_request(int c, char **head, char **body, size_t *blen)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    char *end = NULL;
    while (!end) {
        if (len == cap)
            goto fail;
        ssize_t k = recv(c, b + len, cap - len, 0);
        if (k <= 0)
            goto fail;
        len += (size_t)k;
        b[len] = 0;
        end = strstr(b, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end - b) + 4;
    const char *cl = strcasestr(b, "\r\ncontent-length:");
    if (!cl || cl > end)
        goto fail;
    size_t want = strtoul(cl + 17, NULL, 10);
    if (want > (32u << 20))
        goto fail;
    char *p = malloc(want + 1);
    size_t have = len - hlen < want ? len - hlen : want;
    memcpy(p, b + hlen, have);
    while (have < want) {
        ssize_t k = recv(c, p + have, want - have, 0);
        if (k <= 0) {
            free(p);
            goto fail;
        }
        have += (size_t)k;
    }
    p[want] = 0;
    b[hlen] = 0;
    *head = b;
    *body = p;
    *blen = want;
    return 0;
fail:
    free(b);
    return -1;
}

static void rcv_handle(rcv *r, int c)
{
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char *head, *body;
    size_t blen;
    if (read_request(c, &head, &body, &blen))
        return;
    pthread_mutex_lock(&r->mu);
    int n = ++r->requests;
    int status = n <= r->fail_first ? r->fail_status : r->ok_status;
    const char *extra = n <= r->fail_first && r->fail_extra ? r->fail_extra : "";
    if (strcasestr(head, "\r\ncontent-type: application/json\r\n"))
        r->saw_ctype++;
    if (strcasestr(head, "\r\nauthorization: Bearer t0ken\r\n"))
        r->saw_auth++;
    if (!strncmp(head, "POST /v1/traces HTTP/1.1\r\n", 26))
        r->saw_path++;
    json_t *root = json_loadb(body, blen, 0, NULL);
    if (!root)
        r->bad_requests++;
    if (root && status >= 200 && status < 300) {
        size_t i;
        json_t *sp;
        json_array_foreach(first_spans(root), i, sp)
        {
            const char *id = json_string_value(json_object_get(sp, "spanId"));
            unsigned long v = id && strlen(id) == 16 ? strtoul(id + 8, NULL, 16) : ~0ul;
            if (v < r->nseen)
                r->seen[v]++;
            else
                r->bad_requests++;
        }
    }
    pthread_mutex_unlock(&r->mu);
    json_decref(root);
    const char *bodyout = status >= 200 && status < 300 && r->ok_body ? r->ok_body : "{}";
    char resp[1024];
    int k = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n%s",
                     status, strlen(bodyout), extra, bodyout);
    ssize_t w = send(c, resp, (size_t)k, MSG_NOSIGNAL);
    (void)w;
    free(head);
    free(body);
}

static void *rcv_main(void *arg)
{
    rcv *r = arg;
    while (!rcv_stopping(r)) {
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(r->fd, NULL, NULL);
        if (c < 0)
            continue;
        rcv_handle(r, c);
        close(c);
    }
    return NULL;
}

/* A listening socket on 127.0.0.1 and a free port; serve = 0 leaves it unaccepted (a
 * collector that takes connections and never answers). */
static void rcv_start(rcv *r, size_t nseen, int serve)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->ok_status = 200;
    r->nseen = nseen;
    r->seen = calloc(nseen ? nseen : 1, 1);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(r->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(r->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(r->fd, 64), 0);
    socklen_t al = sizeof a;
    getsockname(r->fd, (struct sockaddr *)&a, &al);
    r->port = ntohs(a.sin_port);
    r->stop = !serve;
    if (serve)
        assert_int_equal(pthread_create(&r->th, NULL, rcv_main, r), 0);
}

static void rcv_stop(rcv *r)
{
    pthread_mutex_lock(&r->mu);
    int running = !r->stop;
    r->stop = 1;
    pthread_mutex_unlock(&r->mu);
    if (running)
        pthread_join(r->th, NULL);
    close(r->fd);
    pthread_mutex_destroy(&r->mu);
}

/* After rcv_stop, once the test has read what arrived. */
static void rcv_free(rcv *r)
{
    free(r->seen);
    r->seen = NULL;
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    return ntohs(a.sin_port);
}

/* Poll the figures until done says so; a cap only so a broken exporter fails the test
 * instead of hanging it. */
static void wait_stats(otlp *e, int (*done)(const otlp_stats *, uint64_t), uint64_t arg,
                       otlp_stats *st)
{
    for (int i = 0; i < 6000; i++) {
        otlp_stats_get(e, st);
        if (done(st, arg))
            return;
        sleep_ms(10);
    }
    fail_msg("exporter did not get there: sent %" PRIu64 " queued %" PRIu64
             " rejected %" PRIu64 " last error %s",
             st->sent, st->queued, st->dropped_rejected, st->last_error);
}

static int all_sent(const otlp_stats *st, uint64_t n) { return st->sent >= n; }
static int all_settled(const otlp_stats *st, uint64_t n)
{
    return st->sent + st->dropped_rejected >= n;
}

static void check_invariant(const otlp_stats *st)
{
    assert_int_equal(st->pushed,
                     st->sent + st->queued + st->dropped_full + st->dropped_rejected);
}

static otlp_config test_config(char *url, size_t ulen, const char *host, int port)
{
    snprintf(url, ulen, "http://%s:%d/v1/traces", host, port);
    otlp_config c = {.url = url, .max_queue_spans = 1000, .batch_max = 50, .flush_ms = 20,
                     .timeout_ms = 3000, .retry_initial_ms = 10, .retry_max_ms = 40,
                     .stop_ms = 300};
    return c;
}

/* ---- the exporter ----------------------------------------------------------------------- */

static void test_new_rejects_bad_config(void **state)
{
    (void)state;
    char url[128], why[256];
    otlp *e = (otlp *)1;
    otlp_config c = test_config(url, sizeof url, "127.0.0.1", 4318);
    c.url = "ftp://127.0.0.1/v1/traces";
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    assert_null(e);
    c.url = "not a url at all";
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    c.url = url;
    const char *h1[] = {"Authorization: Bearer x\r\nX-Evil: 1", NULL};
    c.headers = h1;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    assert_null(strstr(why, "Bearer")); /* a header's value is never echoed */
    const char *h2[] = {"no colon", NULL};
    c.headers = h2;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    const char *h3[] = {"Content-Type: text/plain", NULL};
    c.headers = h3;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    c.headers = NULL;
    c.batch_max = 2000; /* more than the queue */
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    c.batch_max = 50;
    c.max_queue_spans = OTLP_QUEUE_CAP + 1;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(otlp_push(NULL, NULL, why, sizeof why), AOS_ERR_USAGE);
    otlp_free(NULL);
}

/* 503 three times (once with Retry-After), then 200: every span arrives, none twice. */
static void test_delivered_after_503(void **state)
{
    (void)state;
    enum { N = 300 };
    rcv r;
    rcv_start(&r, N, 1);
    r.fail_first = 3;
    r.fail_status = 503;
    r.fail_extra = "Retry-After: 0\r\n";
    char url[128], why[256];
    otlp_config c = test_config(url, sizeof url, "localhost", r.port); /* a pinned name */
    const char *hdrs[] = {"Authorization: Bearer t0ken", NULL};
    c.headers = hdrs;
    otlp *e;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_OK);
    otlp_span s;
    for (uint32_t i = 0; i < N; i++) {
        fill_span(&s, i);
        assert_int_equal(otlp_push(e, &s, why, sizeof why), AOS_OK);
    }
    otlp_stats st;
    wait_stats(e, all_sent, N, &st);
    check_invariant(&st);
    assert_int_equal(st.sent, N);
    assert_int_equal(st.dropped_full, 0);
    assert_int_equal(st.dropped_rejected, 0);
    assert_true(st.retries >= 3);
    assert_non_null(strstr(st.last_error, "503"));
    otlp_free(e);
    rcv_stop(&r);
    for (int i = 0; i < N; i++)
        assert_int_equal(r.seen[i], 1);
    assert_int_equal(r.bad_requests, 0);
    assert_int_equal(r.saw_ctype, r.requests);
    assert_int_equal(r.saw_auth, r.requests);
    assert_int_equal(r.saw_path, r.requests);
    rcv_free(&r);
}

/* A 400 drops the batch and counts it; a 429 is retried; a partial success counts its
 * rejected spans. */
static void test_rejected_and_partial(void **state)
{
    (void)state;
    enum { N = 10 };
    char url[128], why[256];
    otlp_span s;
    otlp_stats st;
    otlp *e;

    rcv r;
    rcv_start(&r, N, 1);
    r.fail_first = 1000;
    r.fail_status = 400;
    otlp_config c = test_config(url, sizeof url, "127.0.0.1", r.port);
    c.batch_max = N;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_OK);
    for (uint32_t i = 0; i < N; i++) {
        fill_span(&s, i);
        assert_int_equal(otlp_push(e, &s, why, sizeof why), AOS_OK);
    }
    wait_stats(e, all_settled, N, &st);
    check_invariant(&st);
    assert_int_equal(st.dropped_rejected, N);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.retries, 0);
    assert_non_null(strstr(st.last_error, "400"));
    otlp_free(e);
    rcv_stop(&r);
    rcv_free(&r);

    rcv_start(&r, N, 1);
    r.fail_first = 1;
    r.fail_status = 429;
    r.ok_body = "{\"partialSuccess\":{\"rejectedSpans\":\"3\",\"errorMessage\":\"x\"}}";
    c = test_config(url, sizeof url, "127.0.0.1", r.port);
    c.batch_max = N;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_OK);
    for (uint32_t i = 0; i < N; i++) {
        fill_span(&s, i);
        assert_int_equal(otlp_push(e, &s, why, sizeof why), AOS_OK);
    }
    wait_stats(e, all_settled, N, &st);
    check_invariant(&st);
    assert_int_equal(st.sent, N - 3);
    assert_int_equal(st.dropped_rejected, 3);
    assert_int_equal(st.retries, 1);
    otlp_free(e);
    rcv_stop(&r);
    rcv_free(&r);
}

/* Connection refused: 1e5 pushes all return, and what is not queued is counted dropped. */
static void test_refused_never_blocks(void **state)
{
    (void)state;
    enum { N = 100000 };
    char url[128], why[256];
    otlp_config c = test_config(url, sizeof url, "127.0.0.1", dead_port());
    c.batch_max = 100;
    otlp *e;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_OK);
    otlp_span s;
    fill_span(&s, 1);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(otlp_push(e, &s, why, sizeof why), AOS_OK);
    otlp_stats st;
    otlp_stats_get(e, &st);
    check_invariant(&st);
    assert_int_equal(st.pushed, N);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.dropped_rejected, 0);
    assert_true(st.queued <= c.max_queue_spans + c.batch_max);
    assert_int_equal(st.dropped_full, N - st.queued);
    otlp_free(e); /* bounded, though nobody will ever take the spans */
}

/* A collector that accepts connections and never answers: the queue bound holds and
 * otlp_free still returns, aborting the request under way. */
static void test_stuck_collector_bound(void **state)
{
    (void)state;
    rcv r;
    rcv_start(&r, 0, 0);
    char url[128], why[256];
    otlp_config c = test_config(url, sizeof url, "127.0.0.1", r.port);
    c.max_queue_spans = 100;
    c.batch_max = 10;
    c.timeout_ms = 60000;
    otlp *e;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_OK);
    otlp_span s;
    for (uint32_t i = 0; i < 5000; i++) {
        fill_span(&s, i);
        assert_int_equal(otlp_push(e, &s, why, sizeof why), AOS_OK);
        otlp_stats st;
        otlp_stats_get(e, &st);
        assert_true(st.queued <= c.max_queue_spans + c.batch_max);
    }
    otlp_stats st;
    otlp_stats_get(e, &st);
    check_invariant(&st);
    assert_int_equal(st.sent, 0);
    assert_true(st.dropped_full >= 5000 - (c.max_queue_spans + c.batch_max));
    otlp_free(e);
    rcv_stop(&r);
    rcv_free(&r);
}

/* otlp_free sends what is queued, even before the flush interval. */
static void test_free_flushes(void **state)
{
    (void)state;
    enum { N = 25 };
    rcv r;
    rcv_start(&r, N, 1);
    char url[128], why[256];
    otlp_config c = test_config(url, sizeof url, "127.0.0.1", r.port);
    c.flush_ms = 600000;
    c.batch_max = 100;
    c.stop_ms = 3000;
    otlp *e;
    assert_int_equal(otlp_new(&c, &e, why, sizeof why), AOS_OK);
    otlp_span s;
    for (uint32_t i = 0; i < N; i++) {
        fill_span(&s, i);
        assert_int_equal(otlp_push(e, &s, why, sizeof why), AOS_OK);
    }
    otlp_free(e);
    rcv_stop(&r);
    for (int i = 0; i < N; i++)
        assert_int_equal(r.seen[i], 1);
    rcv_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_known_span),
        cmocka_unit_test(test_encode_hostile_bytes),
        cmocka_unit_test(test_encode_rejects_invalid),
        cmocka_unit_test(test_attr_setters),
        cmocka_unit_test(test_new_rejects_bad_config),
        cmocka_unit_test(test_delivered_after_503),
        cmocka_unit_test(test_rejected_and_partial),
        cmocka_unit_test(test_refused_never_blocks),
        cmocka_unit_test(test_stuck_collector_bound),
        cmocka_unit_test(test_free_flushes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
