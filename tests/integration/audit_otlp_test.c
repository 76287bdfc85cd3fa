/* aos-audit's OTLP/HTTP JSON export through a real aosd: a receiver started here on
 * 127.0.0.1 gets GenAI spans of an LLM call (sim provider) and of storage writes; while it
 * is down or answers 503 syscalls go on (their latency printed), the spans come once it is
 * back, and no provider key or header value of aos.yaml shows in what was exported. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"

#define AGENT "otlp-agent"
#define PROVIDER_KEY "sk-otlp-test-PROVIDER-KEY-5f1e2d3c4b5a"
#define HEADER_VALUE "Bearer otlp-HEADER-SECRET-99aa88bb"
#define WRITES 30

/* ---- the receiver: one thread, one connection at a time, Connection: close ------------ */

enum { RCV_OK, RCV_503 };

typedef struct rcv {
    int port;
    int lfd;
    pthread_t th;
    atomic_int stop, mode;
    pthread_mutex_t mu;
    char *all;             /* every body received, concatenated (NUL-terminated) */
    size_t len;
    unsigned requests, refused;
    int saw_header;        /* a request carried the header of aos.yaml */
} rcv;

static rcv R;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void handle(rcv *r, int c)
{
    static char buf[8 << 20];
    size_t n = 0;
    char *end = NULL;
    size_t want = 0;
    double t0 = now_ms();
    while (n < sizeof buf - 1 && now_ms() - t0 < 5000) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t k = read(c, buf + n, sizeof buf - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        buf[n] = 0;
        if (!end && (end = strstr(buf, "\r\n\r\n"))) {
            const char *cl = strcasestr(buf, "content-length:");
            want = (size_t)(end - buf) + 4 + (cl ? strtoul(cl + 15, NULL, 10) : 0);
        }
        if (end && n >= want)
            break;
    }
    if (!end)
        return;
    int mode = atomic_load(&r->mode);
    pthread_mutex_lock(&r->mu);
    r->requests++;
    *end = 0;
    if (strcasestr(buf, "authorization: " HEADER_VALUE))
        r->saw_header = 1;
    if (mode == RCV_OK) {
        size_t blen = n - (size_t)(end + 4 - buf);
        char *a = realloc(r->all, r->len + blen + 2);
        if (a) {
            memcpy(a + r->len, end + 4, blen);
            r->len += blen;
            a[r->len++] = '\n';
            a[r->len] = 0;
            r->all = a;
        }
    } else {
        r->refused++;
    }
    pthread_mutex_unlock(&r->mu);
    const char *ans = mode == RCV_OK
                          ? "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
                          : "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                            "Connection: close\r\n\r\n";
    if (write(c, ans, strlen(ans)) < 0)
        return;
}

static void *rcv_main(void *arg)
{
    rcv *r = arg;
    while (!atomic_load(&r->stop)) {
        struct pollfd p = {r->lfd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept(r->lfd, NULL, NULL);
        if (c < 0)
            continue;
        handle(r, c);
        close(c);
    }
    return NULL;
}

/* On r->port (0: a free one, remembered), serving in mode. */
static void rcv_up(rcv *r, int mode)
{
    r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(r->lfd >= 0);
    int one = 1;
    setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(r->lfd, (struct sockaddr *)&a, sizeof a) != 0)
        fail_msg("bind 127.0.0.1:%d: %s", r->port, strerror(errno));
    socklen_t al = sizeof a;
    getsockname(r->lfd, (struct sockaddr *)&a, &al);
    r->port = ntohs(a.sin_port);
    assert_int_equal(listen(r->lfd, 16), 0);
    atomic_store(&r->mode, mode);
    atomic_store(&r->stop, 0);
    assert_int_equal(pthread_create(&r->th, NULL, rcv_main, r), 0);
}

/* Down: nothing listens on the port (a connection is refused). */
static void rcv_down(rcv *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->th, NULL);
    close(r->lfd);
    r->lfd = -1;
}

static int rcv_has(rcv *r, const char *s)
{
    pthread_mutex_lock(&r->mu);
    int yes = r->all && strstr(r->all, s) != NULL;
    pthread_mutex_unlock(&r->mu);
    return yes;
}

/* ---- what was exported --------------------------------------------------------------------- */

static json_t *attr(json_t *span, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
        if (!strcmp(json_string_value(json_object_get(a, "key")), key))
            return json_object_get(a, "value");
    return NULL;
}

typedef int (*span_fn)(json_t *span, void *arg);

/* Every span received so far, each body parsed as an ExportTraceServiceRequest. */
static int each_span(rcv *r, span_fn fn, void *arg)
{
    pthread_mutex_lock(&r->mu);
    char *copy = r->all ? strdup(r->all) : strdup("");
    pthread_mutex_unlock(&r->mu);
    int found = 0;
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_error_t je;
        json_t *d = json_loads(line, 0, &je);
        if (!d)
            fail_msg("a body that is not JSON: %s: %.200s", je.text, line);
        size_t i, j, k;
        json_t *rs, *ss, *sp;
        json_array_foreach(json_object_get(d, "resourceSpans"), i, rs)
            json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
                json_array_foreach(json_object_get(ss, "spans"), k, sp)
                    found += fn(sp, arg);
        json_decref(d);
    }
    free(copy);
    return found;
}

static int hexlen(json_t *v, size_t n)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == n && strspn(s, "0123456789abcdef") == n;
}

static int is_chat(json_t *sp, void *arg)
{
    (void)arg;
    json_t *op = attr(sp, "gen_ai.operation.name"), *in = attr(sp, "gen_ai.usage.input_tokens");
    json_t *model = attr(sp, "gen_ai.request.model"), *prov = attr(sp, "gen_ai.provider.name");
    if (!op || strcmp(json_string_value(json_object_get(op, "stringValue")), "chat") || !in ||
        !model || !prov)
        return 0;
    /* ids as hex, times as Unix ns in decimal strings, kind CLIENT */
    assert_true(hexlen(json_object_get(sp, "traceId"), 32));
    assert_true(hexlen(json_object_get(sp, "spanId"), 16));
    const char *t0 = json_string_value(json_object_get(sp, "startTimeUnixNano"));
    const char *t1 = json_string_value(json_object_get(sp, "endTimeUnixNano"));
    assert_true(t0 && t1 && strtoull(t0, NULL, 10) > 1700000000000000000ull &&
                strtoull(t1, NULL, 10) >= strtoull(t0, NULL, 10));
    assert_int_equal(json_integer_value(json_object_get(sp, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(model, "stringValue")), "sim-1");
    assert_string_equal(json_string_value(json_object_get(prov, "stringValue")), "sim");
    print_message("chat span: %s, %s input tokens\n",
                  json_string_value(json_object_get(sp, "name")),
                  json_string_value(json_object_get(in, "intValue")));
    return 1;
}

/* seqs[] of storage.kv.put syscall records: 1 each that came as a span with its aos.seq */
typedef struct want_seqs {
    long long *seq;
    int n;
    int *seen;
} want_seqs;

static int is_put(json_t *sp, void *arg)
{
    want_seqs *w = arg;
    json_t *m = attr(sp, "aos.method"), *seq = attr(sp, "aos.seq");
    if (!m || strcmp(json_string_value(json_object_get(m, "stringValue")), "storage.kv.put") ||
        !seq)
        return 0;
    long long s = strtoll(json_string_value(json_object_get(seq, "intValue")), NULL, 10);
    for (int i = 0; w && i < w->n; i++)
        if (w->seq[i] == s)
            w->seen[i] = 1;
    return 1;
}

static void wait_for(int (*done)(void *), void *arg, unsigned ms, const char *what)
{
    double t0 = now_ms();
    while (!done(arg)) {
        if (now_ms() - t0 > ms)
            fail_msg("no %s in %u ms (%u requests, %zu bytes received)", what, ms, R.requests,
                     R.len);
        usleep(100 * 1000);
    }
}

static int chat_arrived(void *arg)
{
    (void)arg;
    return each_span(&R, is_chat, NULL) > 0;
}

static int puts_arrived(void *arg)
{
    return each_span(&R, is_put, NULL) >= *(int *)arg;
}

static int all_seen(void *arg)
{
    want_seqs *w = arg;
    each_span(&R, is_put, w);
    for (int i = 0; i < w->n; i++)
        if (!w->seen[i])
            return 0;
    return 1;
}

/* ---- syscalls and their latency ------------------------------------------------------------ */

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* WRITES storage.kv.put calls of agent, one after the other; p50 and max latency in ms. */
static void writes(h_aosd *h, const char *tag, double *p50, double *max)
{
    double lat[WRITES];
    aos_call_opts o = {.agent_id = AGENT, .timeout_ms = 20000};
    char why[AOS_ERRMSG_MAX + 1];
    for (int i = 0; i < WRITES; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s-%d", tag, i);
        double t0 = now_ms();
        aos_err e = aos_kv_put(h_conn(h), &o, key, "v", 1, NULL, NULL, why, sizeof why);
        lat[i] = now_ms() - t0;
        if (e != AOS_OK)
            fail_msg("kv put %s: %s: %s", key, aos_err_name(e), why);
    }
    qsort(lat, WRITES, sizeof *lat, by_double);
    *p50 = lat[WRITES / 2];
    *max = lat[WRITES - 1];
}

static long long stat_of(h_aosd *h, const char *name)
{
    static char out[1 << 16];
    const char *a[] = {"server", "stats", "audit", "--json", NULL};
    if (h_aosctl(h, out, sizeof out, a) != 0)
        return -1;
    json_error_t je;
    json_t *d = json_loads(out, 0, &je), *s;
    size_t i;
    long long v = -1;
    json_array_foreach(json_object_get(d, "stats"), i, s)
        if (!strcmp(json_string_value(json_object_get(s, "name")), name))
            v = json_integer_value(json_object_get(s, "value"));
    json_decref(d);
    return v;
}

/* ---- the test ------------------------------------------------------------------------------ */

/* aosd on a new dir whose aos.yaml exports to R (queue and batch as given), with a keyed
 * provider beside the simulator. */
static h_aosd *start(char *dir, unsigned queue, unsigned batch)
{
    assert_non_null(mkdtemp(dir));
    char path[256], yaml[2048];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    snprintf(yaml, sizeof yaml,
             "audit:\n"
             "  otlp:\n"
             "    endpoint: http://127.0.0.1:%d/v1/traces\n"
             "    headers: [{name: authorization, value_env: AOS_TEST_OTLP_AUTH}]\n"
             "    batch_size: %u\n"
             "    flush_ms: 100\n"
             "    max_queue_spans: %u\n"
             "    timeout_ms: 2000\n"
             "    retry_initial_ms: 100\n"
             "    retry_max_ms: 1000\n"
             "llm:\n"
             "  providers:\n"
             "    - name: sim\n"
             "      kind: sim\n"
             "      models: [{name: sim-1}]\n"
             "    - name: keyed\n"
             "      kind: openai\n"
             "      base_url: http://127.0.0.1:9/v1\n"
             "      api_key_env: AOS_TEST_OTLP_PROVIDER_KEY\n"
             "      models: [{name: k1}]\n",
             R.port, batch, queue);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(yaml, f);
    assert_int_equal(fclose(f), 0);
    setenv("AOS_TEST_OTLP_PROVIDER_KEY", PROVIDER_KEY, 1);
    setenv("AOS_TEST_OTLP_AUTH", HEADER_VALUE, 1);
    char why[1024];
    h_aosd *h = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!h)
        fail_msg("aosd on %s: %s", dir, why);
    return h;
}

static void rcv_reset(void)
{
    pthread_mutex_lock(&R.mu);
    free(R.all);
    R.all = NULL;
    R.len = 0;
    R.requests = R.refused = 0;
    R.saw_header = 0;
    pthread_mutex_unlock(&R.mu);
    R.port = 0;
}

static void spans_arrive_and_syscalls_never_wait(void **st)
{
    (void)st;
    rcv_reset();
    rcv_up(&R, RCV_OK);
    char dir[] = "/tmp/aos-it-otlp-XXXXXX";
    h_aosd *h = start(dir, 4096, 64);
    char why[1024];
    (void)why;

    /* 1. an LLM call through the sim provider and storage writes: spans with the GenAI
     * attributes arrive */
    static char out[1 << 16];
    const char *chat[] = {"llm", "test", "sim", "hello there", "--json", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, chat), 0);
    double up50, upmax;
    writes(h, "warm", &up50, &upmax); /* the first calls after the start pay for it */
    writes(h, "up", &up50, &upmax);
    wait_for(chat_arrived, NULL, 30000, "chat span with the GenAI attributes");
    int nput = 2 * WRITES;
    wait_for(puts_arrived, &nput, 30000, "storage.kv.put spans");
    assert_true(R.saw_header); /* the header of aos.yaml went with the requests */

    /* 2. the receiver is down, then answers 503: syscalls do not wait for it */
    rcv_down(&R);
    double down50, downmax, e50, emax;
    writes(h, "down", &down50, &downmax);
    rcv_up(&R, RCV_503);
    writes(h, "err", &e50, &emax);
    print_message("storage.kv.put latency over %d calls: receiver up p50 %.2f ms max %.2f ms; "
                  "down p50 %.2f ms max %.2f ms; answering 503 p50 %.2f ms max %.2f ms\n",
                  WRITES, up50, upmax, down50, downmax, e50, emax);
    /* the exporter may still be in its backoff from the down phase: wait until a retry
     * reached the 503 (never assert with R.mu held: a failed assert jumps out, and the
     * receiver's thread would wait for the lock forever) */
    double t0 = now_ms();
    int refused = 0;
    for (;;) {
        pthread_mutex_lock(&R.mu);
        refused = R.refused;
        pthread_mutex_unlock(&R.mu);
        if ((refused >= 1 && stat_of(h, "otlp_retries") >= 1) || now_ms() - t0 > 30000)
            break;
        usleep(200 * 1000);
    }
    assert_true(stat_of(h, "otlp_retries") >= 1);
    assert_true(refused >= 1);

    /* 3. back: every write made while it was away comes as a span (the queue held them) */
    rcv_down(&R);
    rcv_up(&R, RCV_OK);
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *res = PQexec(pg, "SELECT seq FROM audit.records WHERE kind = 'syscall' AND "
                               "method = 'storage.kv.put' ORDER BY seq DESC LIMIT 60");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    want_seqs w = {.n = PQntuples(res)};
    assert_int_equal(w.n, 2 * WRITES);
    w.seq = calloc((size_t)w.n, sizeof *w.seq);
    w.seen = calloc((size_t)w.n, sizeof *w.seen);
    for (int i = 0; i < w.n; i++)
        w.seq[i] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    PQfinish(pg);
    wait_for(all_seen, &w, 60000, "span of every write made while the receiver was away");
    free(w.seq);
    free(w.seen);
    assert_int_equal(stat_of(h, "otlp_dropped_full"), 0);
    print_message("exported: %lld spans sent, %lld retries, %lld dropped (full queue)\n",
                  stat_of(h, "otlp_sent"), stat_of(h, "otlp_retries"),
                  stat_of(h, "otlp_dropped_full"));

    /* 4. no secret of aos.yaml in what went out */
    assert_false(rcv_has(&R, PROVIDER_KEY));
    assert_false(rcv_has(&R, "PROVIDER-KEY"));
    assert_false(rcv_has(&R, "HEADER-SECRET"));
    h_stop(h);
    rcv_down(&R);
    rmdir(dir);
}

/* aos-audit's sandbox report: with an endpoint it has the network (no namespace of its own)
 * and may make AF_INET sockets; the other servers of the embedded setup keep theirs. */
static void check_audit_net(h_aosd *h)
{
    static char out[1 << 17];
    const char *a[] = {"status", "--json", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, a), 0);
    json_error_t je;
    json_t *d = json_loads(out, 0, &je), *ch;
    assert_non_null(d);
    size_t i;
    int seen = 0;
    json_array_foreach(json_object_get(d, "children"), i, ch) {
        const char *name = json_string_value(json_object_get(ch, "name"));
        json_t *rep = json_object_get(json_object_get(ch, "sandbox"), "report");
        if (!name || !json_is_object(rep))
            continue;
        if (!strcmp(name, "audit")) {
            assert_true(json_is_true(json_object_get(rep, "inet")));
            seen = 1;
        } else if (!strcmp(name, "storage")) {
            assert_false(json_is_true(json_object_get(rep, "inet")));
        }
    }
    assert_true(seen);
    json_decref(d);
}

/* The memory bound: with the receiver away past max_queue_spans, the oldest spans go and
 * are counted; the newest still arrive once it is back, and every span is accounted for. */
static void a_full_queue_drops_the_oldest_and_counts_them(void **st)
{
    (void)st;
    rcv_reset();
    rcv_up(&R, RCV_OK);
    char dir[] = "/tmp/aos-it-otlp-XXXXXX";
    h_aosd *h = start(dir, 40, 20);
    check_audit_net(h);
    double p50, max;
    writes(h, "warm", &p50, &max);
    int n = WRITES;
    wait_for(puts_arrived, &n, 30000, "storage.kv.put spans");
    rcv_down(&R);
    for (int round = 0; round < 4; round++)
        writes(h, round % 2 ? "away-b" : "away-a", &p50, &max);
    double t0 = now_ms();
    while (stat_of(h, "otlp_dropped_full") < 1 && now_ms() - t0 < 15000)
        usleep(200 * 1000);
    long long dropped = stat_of(h, "otlp_dropped_full");
    print_message("receiver away for %d writes with a queue of 40: %lld spans dropped, "
                  "oldest first (last write p50 %.2f ms, max %.2f ms)\n", 4 * WRITES, dropped,
                  p50, max);
    assert_true(dropped >= 4 * WRITES - 40 - 20);
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    long long newest = su_count(pg, "SELECT max(seq) FROM audit.records WHERE kind = 'syscall' "
                                    "AND method = 'storage.kv.put'");
    PQfinish(pg);
    rcv_up(&R, RCV_OK);
    long long seqv = newest;
    want_seqs w = {.seq = &seqv, .n = 1, .seen = &(int){0}};
    wait_for(all_seen, &w, 60000, "span of the newest write");
    /* every span pushed is sent, dropped or still queued: none lost unaccounted */
    t0 = now_ms();
    while (stat_of(h, "otlp_queued") != 0 && now_ms() - t0 < 20000)
        usleep(200 * 1000);
    long long pushed = stat_of(h, "otlp_pushed"), sent = stat_of(h, "otlp_sent"),
              full = stat_of(h, "otlp_dropped_full"), rej = stat_of(h, "otlp_dropped_rejected"),
              queued = stat_of(h, "otlp_queued");
    print_message("pushed %lld = sent %lld + dropped %lld + rejected %lld + queued %lld\n",
                  pushed, sent, full, rej, queued);
    assert_true(pushed >= sent + full + rej && pushed - (sent + full + rej) <= queued + 64);
    assert_int_equal(rej, 0);
    h_stop(h);
    rcv_down(&R);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spans_arrive_and_syscalls_never_wait),
        cmocka_unit_test(a_full_queue_drops_the_oldest_and_counts_them),
    };
    pthread_mutex_init(&R.mu, NULL);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(R.all);
    return rc;
}
