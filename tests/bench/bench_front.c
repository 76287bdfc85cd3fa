/* The front door's bench: streamed chats (OpenAI wire, 10 chunks) through aos-api, aosd, the
 * scheduler and aos-llm to a local endpoint, against the same calls straight to it, one run. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "harness.h"

#define CALL_TIMEOUT_MS 60000u
#define OPEN_HANDLES 512         /* the open loop's transfers at once, most */
#define OPEN_MAX 60000u          /* requests of one open-loop phase */
#define ERR_PRINTS 5
#define CHUNKS 10

/* A text delta in both sides' SSE (aos-api writes "content" before "role" too). */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)(q / 100.0 * (double)n);
    return (double)v[i < n ? i : n - 1] / 1000.0;
}

/* ---- the endpoint (tests/llm_endpoint) ------------------------------------------------- */

typedef h_endpoint endpoint;

static int ep_start(endpoint *ep) { return h_endpoint_start(ep, NULL); }
static void ep_stop(endpoint *ep) { h_endpoint_stop(ep); }

/* ---- one side: a libcurl multi client, closed or open loop --------------------------------- */

typedef struct side {
    const char *name;
    char url[160];
    char auth[200];          /* "Authorization: Bearer ..." or "" */
    const char *model;
} side;

typedef struct phase {
    const char *directive;
    unsigned conc;           /* closed loop: in flight */
    unsigned ramp_ms, warm_ms, measure_ms;
    unsigned rate, count, skip; /* open loop (rate > 0) */
} phase;

typedef struct result {
    uint64_t done, failed;
    double secs;
    uint64_t lat[OPEN_MAX];  /* open loop: ns per request, start to last byte */
    size_t nlat;
} result;

typedef struct req {
    CURL *h;
    result *res;                 /* its side's */
    const side *sd;
    unsigned idx;
    uint64_t t0;
    h_deltas d;                  /* the text deltas counted so far */
    int busy;
} req;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    req *q = arg;
    size_t n = size * nmemb;
    h_deltas_feed(&q->d, data, n);
    return n;
}

/* t0: when the request was due (open loop: its scheduled time, so a client that falls
 * behind shows in the figures instead of hiding in them); 0: now. */
static void start(CURLM *m, req *q, unsigned idx, uint64_t t0)
{
    q->idx = idx;
    q->d = (h_deltas){0};
    q->busy = 1;
    q->t0 = t0 ? t0 : now_ns();
    curl_multi_add_handle(m, q->h);
}

/* One phase on nsides sides (1 or 2; two: in one loop at one schedule, each due time
 * starting a request on each side). */
static void run_sides(const side *const *sds, unsigned nsides, const phase *ph,
                      result *const *ress)
{
    char body[2][512];
    struct curl_slist *hd[2] = {NULL, NULL};
    int bad = 0;
    for (unsigned k = 0; k < nsides; k++) {
        memset(ress[k], 0, sizeof *ress[k]);
        snprintf(body[k], sizeof body[k],
                 "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                 "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                 sds[k]->model, ph->directive);
        hd[k] = curl_slist_append(NULL, "Content-Type: application/json");
        hd[k] = curl_slist_append(hd[k], "Expect:");
        if (sds[k]->auth[0])
            hd[k] = curl_slist_append(hd[k], sds[k]->auth);
        bad |= !hd[k];
    }
    unsigned per = ph->rate ? OPEN_HANDLES : ph->conc, nh = per * nsides;
    req *q = calloc(nh, sizeof *q);
    CURLM *m = curl_multi_init();
    if (!q || !m || bad) {
        ress[0]->failed++;
        goto out;
    }
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)nh + 16);
    for (unsigned i = 0; i < nh; i++) {
        unsigned k = i / per;
        q[i].res = ress[k];
        q[i].sd = sds[k];
        CURL *h = q[i].h = curl_easy_init();
        curl_easy_setopt(h, CURLOPT_URL, sds[k]->url);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body[k]);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd[k]);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &q[i]);
        curl_easy_setopt(h, CURLOPT_PRIVATE, &q[i]);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)CALL_TIMEOUT_MS);
    }
    uint64_t t0 = now_ns();
    uint64_t w0 = t0 + (uint64_t)ph->warm_ms * 1000000u;
    uint64_t w1 = w0 + (uint64_t)ph->measure_ms * 1000000u;
    uint64_t period = ph->rate ? 1000000000u / ph->rate : 0;
    unsigned next = 0, active = 0, errs = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (!ph->rate)
            for (; next < nh && t0 + (uint64_t)next * ph->ramp_ms * 1000000u / nh <= now;
                 next++, active++)
                start(m, &q[next], next, 0);
        else
            while (next < ph->count && t0 + next * period <= now) {
                /* one request per side, all due at once; none while a side has no free
                 * handle (then they start late, and the lateness counts) */
                req *pick[2] = {NULL, NULL};
                int all = 1;
                for (unsigned k = 0; k < nsides; k++) {
                    for (unsigned i = k * per; i < (k + 1) * per && !pick[k]; i++)
                        if (!q[i].busy)
                            pick[k] = &q[i];
                    all &= pick[k] != NULL;
                }
                if (!all)
                    break;
                for (unsigned k = 0; k < nsides; k++) {
                    start(m, pick[k], next, t0 + next * period);
                    active++;
                }
                next++;
            }
        int running;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            char *pv = NULL;
            long code = 0;
            CURLcode cc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &pv);
            req *r = (req *)pv;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            curl_multi_remove_handle(m, msg->easy_handle);
            uint64_t t = now_ns();
            r->busy = 0;
            active--;
            result *res = r->res;
            if (cc != CURLE_OK || code != 200 || r->d.n != CHUNKS) {
                res->failed++;
                if (errs++ < ERR_PRINTS)
                    fprintf(stderr, "%s: %s, HTTP %ld, %u of %u deltas\n", r->sd->name,
                            curl_easy_strerror(cc), code, r->d.n, CHUNKS);
            } else if (ph->rate) {
                if (r->idx >= ph->skip && res->nlat < OPEN_MAX)
                    res->lat[res->nlat++] = t - r->t0;
                res->done++;
            } else if (t >= w0 && t <= w1) {
                res->done++;
            }
            if (!ph->rate && t < w1) {
                start(m, r, 0, 0);
                active++;
            }
        }
        now = now_ns();
        if (ph->rate ? next >= ph->count && !active : now >= w1 && !active)
            break;
        int wait = 20;
        if (ph->rate && next < ph->count) {
            uint64_t due = t0 + next * period;
            wait = due <= now ? 0 : (int)((due - now) / 1000000u);
            if (wait > 5)
                wait = 5;
        }
        curl_multi_poll(m, NULL, 0, wait, NULL);
    }
    for (unsigned k = 0; k < nsides; k++)
        ress[k]->secs = ph->rate ? (double)(now_ns() - t0) / 1e9
                                 : (double)ph->measure_ms / 1000.0;
out:
    if (q)
        for (unsigned i = 0; i < nh; i++)
            if (q[i].h) {
                if (q[i].busy)
                    curl_multi_remove_handle(m, q[i].h);
                curl_easy_cleanup(q[i].h);
            }
    if (m)
        curl_multi_cleanup(m);
    free(q);
    for (unsigned k = 0; k < nsides; k++)
        curl_slist_free_all(hd[k]);
}

static void run(const side *sd, const phase *ph, result *res)
{
    run_sides(&sd, 1, ph, &res);
}

/* An open-loop phase on direct and front in alternating blocks of about 1 s (ABAB...), the
 * figures of each side's blocks pooled. One whole leg after the other, a burst of load
 * from the other workers on these 2 cores during one leg skewed the comparison (added p99
 * came out negative once); both legs at once load each other instead (direct p50 went
 * from 365 to 1055 us, which hides aos's cost). Alternating blocks share the drift of the
 * machine without either leg carrying the other's load. */
static void run_abab(const side *d, const side *f, const phase *ph, result *rd, result *rf)
{
    static result tmp;
    unsigned rounds = ph->rate ? ph->count / ph->rate : 1;
    if (!rounds)
        rounds = 1;
    memset(rd, 0, sizeof *rd);
    memset(rf, 0, sizeof *rf);
    for (unsigned r = 0; r < rounds; r++) {
        phase sub = *ph;
        sub.count = ph->count / rounds;
        sub.skip = ph->skip / rounds;
        for (int k = 0; k < 2; k++) {
            result *acc = k ? rf : rd;
            run(k ? f : d, &sub, &tmp);
            acc->done += tmp.done;
            acc->failed += tmp.failed;
            acc->secs += tmp.secs;
            for (size_t i = 0; i < tmp.nlat && acc->nlat < OPEN_MAX; i++)
                acc->lat[acc->nlat++] = tmp.lat[i];
        }
    }
}

/* ---- set-up -------------------------------------------------------------------------------- */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int read_port(const char *dir)
{
    char path[256], txt[16] = "";
    snprintf(path, sizeof path, "%s/api/port", dir);
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "re");
        if (f) {
            size_t n = fread(txt, 1, sizeof txt - 1, f);
            fclose(f);
            txt[n] = 0;
            if (atoi(txt) > 0)
                return atoi(txt);
        }
        usleep(50000);
    }
    return -1;
}

static double success_pct(const result *r)
{
    uint64_t all = r->done + r->failed;
    return all ? 100.0 * (double)r->done / (double)all : 0;
}

/* The front door's own round trip: GET /v1/models, sequential (HTTP, the key's lookup in
 * aosd and aosd's answer on aos-api's link; no LLM call). p50 and p99 in us into out. */
static void front_rtt(const side *sd, unsigned n, double *p50, double *p99)
{
    uint64_t *v = calloc(n, sizeof *v);
    CURL *h = curl_easy_init();
    char url[200];
    snprintf(url, sizeof url, "%.*s/models", (int)(strlen(sd->url) - strlen("/chat/completions")),
             sd->url);
    struct curl_slist *hd = curl_slist_append(NULL, sd->auth);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    req q = {0};
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &q);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    size_t k = 0;
    for (unsigned i = 0; v && i < n; i++) {
        uint64_t t0 = now_ns();
        long code = 0;
        if (curl_easy_perform(h) == CURLE_OK &&
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200)
            v[k++] = now_ns() - t0;
    }
    *p50 = pct_us(v, k, 50);
    *p99 = pct_us(v, k, 99);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    free(v);
}

/* aos-api's own account of where a call's time goes (servers/api/main.c's stages: sums and
 * counts in `aosctl server stats api`), read before and after a phase to show its means. */
#define N_STAGES 5
static const char *const stage_names[N_STAGES] = {"stage_in", "stage_first", "stage_rest",
                                                  "stage_relay", "stage_out"};
typedef struct stages {
    double sum[N_STAGES], n[N_STAGES], max[N_STAGES]; /* max: since aos-api started */
} stages;

static void read_stages(h_aosd *h, stages *st)
{
    static char out[65536];
    const char *argv[] = {"--json", "server", "stats", "api", NULL};
    memset(st, 0, sizeof *st);
    int rc = h_aosctl(h, out, sizeof out, argv);
    json_t *j = rc == 0 ? json_loads(out, 0, NULL) : NULL;
    if (!j)
        fprintf(stderr, "bench_front: aosctl server stats api (exit %d): %.300s\n", rc, out);
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(j, "stats"), i, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        double v = (double)json_integer_value(json_object_get(it, "value"));
        for (int k = 0; name && k < N_STAGES; k++) {
            size_t l = strlen(stage_names[k]);
            if (strncmp(name, stage_names[k], l))
                continue;
            if (!strcmp(name + l, "_sum_us"))
                st->sum[k] = v;
            else if (!strcmp(name + l, "_n"))
                st->n[k] = v;
            else if (!strcmp(name + l, "_max_us"))
                st->max[k] = v;
        }
    }
    json_decref(j);
}

/* "in 120 first 2900 rest 800 relay 40 out 60": the mean us of each stage between a and b */
static void print_stages(const char *label, const stages *a, const stages *b)
{
    printf("%s:", label);
    for (int k = 0; k < N_STAGES; k++) {
        double n = b->n[k] - a->n[k];
        printf(" %s %.0f", stage_names[k] + 6, n > 0 ? (b->sum[k] - a->sum[k]) / n : 0.0);
    }
    printf("\n");
}

/* bench_front [SECS [CONC [RATE [fail-open]]]]: 10 200 200. fail-open: audit_fail_open: true,
 * to show what the durable audit records of each LLM call cost (the default is fail-closed). */
int main(int argc, char **argv)
{
    unsigned secs = argc > 1 ? (unsigned)atoi(argv[1]) : 10;
    unsigned conc = argc > 2 ? (unsigned)atoi(argv[2]) : 200;
    unsigned rate = argc > 3 ? (unsigned)atoi(argv[3]) : 200;
    int fail_open = argc > 4 && !strcmp(argv[4], "fail-open");
    if (!secs || secs > 600)
        secs = 10;
    if (!conc || conc > 4000)
        conc = 200;
    if (!rate || rate > 5000)
        rate = 200;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    long errors = 0;
    endpoint ep;
    if (ep_start(&ep) != 0)
        return 1;
    char dir[] = "/tmp/bench-front-XXXXXX", why[1024], path[300], text[2048];
    if (!mkdtemp(dir)) {
        ep_stop(&ep);
        return 1;
    }
    /* limits unset: the front door's own path is measured, not a configured cap; the audit
     * log is on (fail-closed, the default) */
    snprintf(text, sizeof text,
             "%s"
             "api: {max_connections: 4096}\n"
             "llm:\n"
             "  default_model: ep/m1\n"
             "  providers:\n"
             "    - name: ep\n"
             "      kind: openai\n"
             "      base_url: http://127.0.0.1:%d/v1\n"
             "      timeout_ms: %u\n"
             "      max_retries: 0\n"
             "      models: [{name: m1}]\n",
             fail_open ? "audit_fail_open: true\n" : "", ep.port, CALL_TIMEOUT_MS);
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    write_file(path, text);
    h_aosd *h = h_start_on(dir, NULL, 90000, why, sizeof why);
    if (!h) {
        fprintf(stderr, "bench_front: aosd: %s\n", why);
        ep_stop(&ep);
        return 1;
    }
    snprintf(path, sizeof path, "%s/deploy.yaml", dir);
    write_file(path, "agents:\n  - name: bench\n    program: aos-test-agent\n    args: [idle]\n"
                     "    model: ep/m1\n");
    static char out[65536];
    const char *apply[] = {"--json", "apply", "-f", path, NULL};
    const char *mk[] = {"--json", "agent", "key", "create", "bench", NULL};
    json_t *k = NULL;
    if (h_aosctl(h, out, sizeof out, apply) != 0 || h_aosctl(h, out, sizeof out, mk) != 0 ||
        !(k = json_loads(out, 0, NULL))) {
        fprintf(stderr, "bench_front: apply / key create: %s\n", out);
        errors++;
        goto done;
    }
    int aport = read_port(dir);
    side direct = {.name = "direct", .model = "m1"};
    side front = {.name = "front", .model = "ep/m1"};
    snprintf(direct.url, sizeof direct.url, "http://127.0.0.1:%d/v1/chat/completions", ep.port);
    snprintf(front.url, sizeof front.url, "http://127.0.0.1:%d/v1/chat/completions", aport);
    snprintf(front.auth, sizeof front.auth, "Authorization: Bearer %s",
             json_string_value(json_object_get(k, "key")));
    json_decref(k);
    static result rd, rf;

    /* warm both paths */
    phase warm = {.directive = "[[chunks=10]]", .conc = 8, .measure_ms = 1000};
    run(&direct, &warm, &rd);
    run(&front, &warm, &rf);
    printf("secs: %u\n", secs);
    printf("audit: %s\n", fail_open ? "fail-open" : "fail-closed (each LLM call's records durable)");
    double m50, m99;
    front_rtt(&front, 1000, &m50, &m99);
    printf("front_door_rtt_us_p50: %.0f\nfront_door_rtt_us_p99: %.0f\n", m50, m99);

    /* throughput: CONC in flight, each reply's 10 chunks spread over 1 s */
    phase tp = {.directive = "[[chunks=10 spread_ms=1000]]", .conc = conc, .ramp_ms = 1000,
                .warm_ms = 1500, .measure_ms = secs * 1000};
    run(&direct, &tp, &rd);
    run(&front, &tp, &rf);
    double r1 = rd.done / rd.secs, r2 = rf.done / rf.secs;
    printf("front_concurrency: %u\n", conc);
    printf("direct_rps: %.1f\nfront_rps: %.1f\n", r1, r2);
    printf("front_throughput_ratio: %.1f\n", r1 > 0 ? 100.0 * r2 / r1 : 0.0);
    errors += (long)(rd.failed + rf.failed);

    /* latency: an open loop at RATE/s, replies that start at once; both sides get the same
     * body (but for the model's name: "m1" is "ep/m1" behind aos) at the same schedule */
    phase lat = {.directive = "[[chunks=10 first_ms=0]]", .rate = rate,
                 .count = secs * rate + 50, .skip = 50};
    stages s0, s1;
    read_stages(h, &s0);
    run_abab(&direct, &front, &lat, &rd, &rf);
    read_stages(h, &s1);
    double d50 = pct_us(rd.lat, rd.nlat, 50), d99 = pct_us(rd.lat, rd.nlat, 99);
    double f50 = pct_us(rf.lat, rf.nlat, 50), f99 = pct_us(rf.lat, rf.nlat, 99);
    printf("open_rate: %u\n", rate);
    printf("direct_us_p50: %.0f\ndirect_us_p99: %.0f\nfront_us_p50: %.0f\nfront_us_p99: %.0f\n",
           d50, d99, f50, f99);
    printf("front_added_us_p50: %.0f\n", f50 - d50);
    printf("front_added_us_p99: %.0f\n", f99 - d99);
    printf("front_success_pct: %.2f\n", success_pct(&rf));
    /* in, relay and out are aos-api's own; first and rest are the wait on aosd (and the
     * scheduler, aos-llm, the endpoint and the audit log behind it) */
    print_stages("front_stage_mean_us", &s0, &s1);
    printf("front_stage_max_us (since aos-api started, the 1 s replies of the throughput "
           "phase included):");
    for (int g = 0; g < N_STAGES; g++)
        printf(" %s %.0f", stage_names[g] + 6, s1.max[g]);
    printf("\n");
    errors += (long)(rd.failed + rf.failed);

    /* the highest open-loop rate held with 100 % success and p99 added <= 5 ms: rates
     * searched upwards, each step's figures printed, up to the first step that fails */
    static const unsigned steps[] = {50, 100, 200, 500, 1000};
    unsigned best = 0;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        unsigned q = steps[i];
        phase p = {.directive = "[[chunks=10 first_ms=0]]", .rate = q, .count = 3 * q + 20,
                   .skip = 20};
        read_stages(h, &s0);
        run_abab(&direct, &front, &p, &rd, &rf);
        read_stages(h, &s1);
        double dp50 = pct_us(rd.lat, rd.nlat, 50), dp99 = pct_us(rd.lat, rd.nlat, 99);
        double fp50 = pct_us(rf.lat, rf.nlat, 50), fp99 = pct_us(rf.lat, rf.nlat, 99);
        double add = fp99 - dp99;
        printf("at_%u_qps: success %.2f %% (direct %.2f %%), direct p50 %.0f p99 %.0f us, "
               "front p50 %.0f p99 %.0f us, added p50 %.0f p99 %.0f us\n",
               q, success_pct(&rf), success_pct(&rd), dp50, dp99, fp50, fp99, fp50 - dp50, add);
        char label[32];
        snprintf(label, sizeof label, "at_%u_qps_stage_mean_us", q);
        print_stages(label, &s0, &s1);
        if (rf.failed || rd.failed || add > 5000)
            break;
        best = q;
    }
    printf("front_max_qps: %u\n", best);
done:
    printf("errors: %ld\n", errors);
    h_stop(h);
    ep_stop(&ep);
    curl_global_cleanup();
    return errors ? 1 : 0;
}
