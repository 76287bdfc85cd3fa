/* The LLM gateway's bench: streamed chats through aosd and aos-llm to a local OpenAI-wire
 * endpoint, against a plain libcurl multi client straight to that endpoint, in the same run. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>

#include <curl/curl.h>

#include "harness.h"
#include "llm.pb-c.h"

#define NCONN 8                  /* aosd connections the aos side's threads share */
#define THREAD_STACK (256u << 10)
#define OPEN_THREADS 16          /* the open loop's callers: far more than 10/s needs */
#define OPEN_HANDLES 64
#define OPEN_MAX 8000u           /* requests of one open-loop phase */
#define CALL_TIMEOUT_MS 60000u
#define ERR_PRINTS 5             /* failures shown per side and phase; the rest counted */
#define MODEL "ep/m1"

/* A text delta in the endpoint's SSE; its role chunk has "delta":{"role" instead. */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
                          .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-th percentile (0..100) in us of v[0..n), sorted here. */
static double pct_us(uint64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)(q / 100.0 * (double)n);
    return (double)v[i < n ? i : n - 1] / 1000.0;
}

/* ---- what a phase asks for and what it measured -------------------------------------- */

typedef struct phase {
    const char *name;
    const char *directive;       /* the user message: the endpoint's [[...]] */
    unsigned chunks;             /* text deltas each reply must carry */
    unsigned conc;               /* closed loop: requests in flight */
    unsigned ramp_ms;            /* closed loop: first starts spread over this, so the
                                  * completions of long replies do not come in rounds */
    unsigned warm_ms, measure_ms;
    unsigned rate, count, skip;  /* open loop (rate > 0): per s, how many, first not kept */
} phase;

enum { P_EP, P_LLM, P_AOSD, P_PG, P_SELF, P_AUDIT, P_N };
static const char *const P_NAMES[P_N] = {"ep", "llm", "aosd", "pg", "bench", "audit"};
static pid_t g_pids[P_N];
static h_aosd *g_h;

typedef struct cpu_snap {
    uint64_t t_ns;
    unsigned long long ticks[P_N];
    unsigned long long idle, total; /* the machine's, /proc/stat */
} cpu_snap;

typedef struct result {
    uint64_t done, failed, parts;  /* done and parts: in the window; failed: any time */
    uint64_t dur_ns;               /* the sum of the done requests' durations */
    double secs;
    uint64_t ttft[OPEN_MAX];       /* open loop: ns to the first byte or part */
    size_t nttft;
    cpu_snap c0, c1;
} result;

/* utime+stime of pid in clock ticks; 0 when it cannot be read. */
static unsigned long long proc_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return 0;
    return ut + st;
}

static pid_t proc_ppid(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    int ppid = 0;
    if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1)
        return 0;
    return (pid_t)ppid;
}

/* The postmaster and its backends, which come and go: whoever is alive at the snapshot. */
static unsigned long long pg_ticks(pid_t pm)
{
    if (!pm)
        return 0;
    unsigned long long t = proc_ticks(pm);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pm, (int)pm);
    FILE *f = fopen(path, "re");
    if (!f)
        return t;
    int c;
    while (fscanf(f, "%d", &c) == 1)
        if (proc_ppid((pid_t)c) == pm)
            t += proc_ticks((pid_t)c);
    fclose(f);
    return t;
}

/* A process's CPU time (ns) and times it was put on a CPU (each wake-up is one), summed over
 * its threads from /proc/PID/task/T/schedstat: finer than clock ticks, and a count of the
 * hand-offs between threads and processes that a call pays for, whatever the load. */
static void sched_add(pid_t pid, unsigned long long *ns, unsigned long long *runs)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char sp[320];
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
        FILE *f = fopen(sp, "re");
        if (!f)
            continue;
        unsigned long long a = 0, b = 0, c = 0;
        if (fscanf(f, "%llu %llu %llu", &a, &b, &c) == 3) {
            *ns += a;
            *runs += c;
        }
        fclose(f);
    }
    closedir(d);
}

/* The postmaster's backends too (their pids come and go). */
static void sched_take(int i, unsigned long long *ns, unsigned long long *runs)
{
    *ns = *runs = 0;
    pid_t pid = g_pids[i];
    if (!pid)
        return;
    sched_add(pid, ns, runs);
    if (i != P_PG)
        return;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    int c;
    while (fscanf(f, "%d", &c) == 1)
        if (proc_ppid((pid_t)c) == pid)
            sched_add((pid_t)c, ns, runs);
    fclose(f);
}

static void cpu_take(cpu_snap *s)
{
    s->t_ns = now_ns();
    for (int i = 0; i < P_N; i++)
        s->ticks[i] = i == P_PG ? pg_ticks(g_pids[i]) : g_pids[i] ? proc_ticks(g_pids[i]) : 0;
    s->idle = s->total = 0;
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return;
    unsigned long long v[8] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++)
            s->total += v[i];
        s->idle = v[3] + v[4];
    }
    fclose(f);
}

/* % of one core that process i used between the snapshots. */
static double cpu_pct(const result *r, int i)
{
    double secs = (double)(r->c1.t_ns - r->c0.t_ns) / 1e9;
    long hz = sysconf(_SC_CLK_TCK);
    if (secs <= 0 || hz <= 0 || r->c1.ticks[i] < r->c0.ticks[i])
        return 0;
    return 100.0 * (double)(r->c1.ticks[i] - r->c0.ticks[i]) / (double)hz / secs;
}

static double idle_pct(const result *r)
{
    unsigned long long t = r->c1.total - r->c0.total;
    return t ? 100.0 * (double)(r->c1.idle - r->c0.idle) / (double)t : 0;
}

/* ---- the endpoint ---------------------------------------------------------------------- */

typedef h_endpoint endpoint;

static int ep_start(endpoint *ep) { return h_endpoint_start(ep, NULL); }
static void ep_stop(endpoint *ep) { h_endpoint_stop(ep); }

/* ---- (a) the plain client: one libcurl multi handle, straight to the endpoint ---------- */

typedef struct preq {
    CURL *h;
    unsigned idx;        /* open loop: which request */
    uint64_t t0, first_ns;
    h_deltas d;                  /* the text deltas counted so far */
    int busy;
} preq;

/* Counts the text deltas as the body streams in, a pattern cut by a read boundary too. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    preq *q = arg;
    size_t n = size * nmemb;
    if (!q->first_ns)
        q->first_ns = now_ns();
    h_deltas_feed(&q->d, data, n);
    return n;
}

static char *plain_body(const char *directive)
{
    char *b = malloc(512);
    if (b)
        snprintf(b, 512,
                 "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                 "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                 directive);
    return b;
}

static void preq_start(CURLM *m, preq *q, unsigned idx)
{
    q->idx = idx;
    q->first_ns = 0;
    q->d = (h_deltas){0};
    q->busy = 1;
    q->t0 = now_ns();
    curl_multi_add_handle(m, q->h);
}

static void plain_run(const phase *ph, int port, result *res)
{
    memset(res, 0, sizeof *res);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", port);
    char *body = plain_body(ph->directive);
    /* the headers aos-llm sends, so both sides ask the endpoint for the same work */
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    hd = curl_slist_append(hd, "Accept: application/json, text/event-stream");
    hd = curl_slist_append(hd, "Expect:");
    unsigned nh = ph->rate ? OPEN_HANDLES : ph->conc;
    preq *q = calloc(nh, sizeof *q);
    CURLM *m = curl_multi_init();
    if (!body || !hd || !q || !m) {
        fprintf(stderr, "bench_llm: plain %s: out of memory\n", ph->name);
        res->failed++;
        goto out;
    }
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)nh + 16);
    for (unsigned i = 0; i < nh; i++) {
        CURL *h = q[i].h = curl_easy_init();
        if (!h) {
            res->failed++;
            goto out;
        }
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
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
    int snap0 = 0, snap1 = 0;
    if (ph->rate) {
        cpu_take(&res->c0);
        snap0 = 1;
    }
    for (;;) {
        uint64_t now = now_ns();
        if (!ph->rate)
            for (; next < nh && t0 + (uint64_t)next * ph->ramp_ms * 1000000u / nh <= now;
                 next++, active++)
                preq_start(m, &q[next], next);
        if (ph->rate) {
            for (unsigned i = 0; i < nh && next < ph->count && t0 + next * period <= now; i++)
                if (!q[i].busy) {
                    preq_start(m, &q[i], next++);
                    active++;
                }
        } else {
            if (!snap0 && now >= w0) {
                cpu_take(&res->c0);
                snap0 = 1;
            }
            if (!snap1 && now >= w1) {
                cpu_take(&res->c1);
                snap1 = 1;
            }
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
            preq *r = (preq *)pv;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            curl_multi_remove_handle(m, msg->easy_handle);
            uint64_t t = now_ns();
            r->busy = 0;
            active--;
            if (cc != CURLE_OK || code != 200 || r->d.n != ph->chunks) {
                res->failed++;
                if (errs++ < ERR_PRINTS)
                    fprintf(stderr, "plain %s: %s, HTTP %ld, %u of %u deltas\n", ph->name,
                            curl_easy_strerror(cc), code, r->d.n, ph->chunks);
            } else if (ph->rate) {
                if (r->idx >= ph->skip && res->nttft < OPEN_MAX)
                    res->ttft[res->nttft++] = r->first_ns - r->t0;
                res->done++;
                res->parts += r->d.n;
            } else if (t >= w0 && t <= w1) {
                res->done++;
                res->parts += r->d.n;
                res->dur_ns += t - r->t0;
            }
            if (!ph->rate && t < w1) {
                preq_start(m, r, 0);
                active++;
            }
        }
        now = now_ns();
        if (ph->rate ? next >= ph->count && !active : now >= w1 && !active)
            break;
        int wait = 20;
        uint64_t due = ph->rate ? t0 + next * period
                                : t0 + (uint64_t)next * ph->ramp_ms * 1000000u / nh;
        if (ph->rate ? next < ph->count : next < nh) {
            wait = due <= now ? 0 : (int)((due - now) / 1000000u);
            if (wait > 20)
                wait = 20;
        }
        curl_multi_poll(m, NULL, 0, wait, NULL);
    }
    if (ph->rate) {
        cpu_take(&res->c1);
        res->secs = (double)(res->c1.t_ns - t0) / 1e9;
    } else {
        if (!snap1)
            cpu_take(&res->c1);
        res->secs = (double)ph->measure_ms / 1000.0;
    }
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
    curl_slist_free_all(hd);
    free(body);
}

/* ---- (b) through aos: threads, each in aos_call_stream, over NCONN connections ------- */

typedef struct arun {
    const phase *ph;
    aos_conn **conns;
    uint8_t *req;
    size_t req_len;
    uint64_t t0, w0, w1;
    atomic_uint next;
    atomic_uint errs;
    uint64_t *ttft;     /* open loop: per request index, 0 when none */
} arun;

typedef struct aworker {
    arun *run;
    unsigned idx;
    aos_conn *c;
    pthread_t th;
    uint64_t done, failed, parts, dur_ns;
} aworker;

typedef struct acount {
    unsigned n;
    uint64_t first_ns;
} acount;

static int on_part(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    acount *k = arg;
    if (!k->n)
        k->first_ns = now_ns();
    k->n++;
    return 0;
}

/* One chat; 1 when it streamed every delta and ended well. */
static int aos_one(aworker *w, acount *k, uint64_t *t_call)
{
    arun *r = w->run;
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = CALL_TIMEOUT_MS};
    memset(k, 0, sizeof *k);
    *t_call = now_ns();
    aos_err e = aos_call_stream(w->c, &o, "llm.chat", r->req, r->req_len, on_part, k, &rep);
    int ok = e == AOS_OK && k->n == r->ph->chunks;
    if (!ok && atomic_fetch_add(&r->errs, 1) < ERR_PRINTS)
        fprintf(stderr, "aos %s: %s: %s (%u of %u parts)\n", r->ph->name, aos_err_name(e),
                rep.error, k->n, r->ph->chunks);
    aos_reply_clear(&rep);
    return ok;
}

static void *closed_main(void *arg)
{
    aworker *w = arg;
    arun *r = w->run;
    acount k;
    uint64_t tc;
    sleep_until(r->t0 + (uint64_t)w->idx * r->ph->ramp_ms * 1000000u / r->ph->conc);
    while (now_ns() < r->w1) {
        int ok = aos_one(w, &k, &tc);
        uint64_t t = now_ns();
        if (!ok) {
            w->failed++;
            usleep(10000); /* a failing path must not turn into a busy loop */
        } else if (t >= r->w0 && t <= r->w1) {
            w->done++;
            w->parts += k.n;
            w->dur_ns += t - tc;
        }
    }
    return NULL;
}

static void *open_main(void *arg)
{
    aworker *w = arg;
    arun *r = w->run;
    uint64_t period = 1000000000u / r->ph->rate;
    for (;;) {
        unsigned i = atomic_fetch_add(&r->next, 1);
        if (i >= r->ph->count)
            return NULL;
        sleep_until(r->t0 + i * period);
        acount k;
        uint64_t tc;
        if (!aos_one(w, &k, &tc)) {
            w->failed++;
            continue;
        }
        w->done++;
        w->parts += k.n;
        r->ttft[i] = k.first_ns - tc + 1; /* +1: 0 means none */
    }
}

static uint8_t *chat_req(const char *directive, size_t *len)
{
    Aos__Llm__ContentPart cp = AOS__LLM__CONTENT_PART__INIT;
    cp.kind = AOS__LLM__PART_KIND__TEXT;
    cp.text.data = (uint8_t *)directive;
    cp.text.len = strlen(directive);
    Aos__Llm__ContentPart *cps[] = {&cp};
    Aos__Llm__Message msg = AOS__LLM__MESSAGE__INIT;
    msg.role = AOS__LLM__ROLE__USER;
    msg.n_content = 1;
    msg.content = cps;
    Aos__Llm__Message *msgs[] = {&msg};
    Aos__Llm__ChatRequest rq = AOS__LLM__CHAT_REQUEST__INIT;
    rq.model.data = (uint8_t *)MODEL;
    rq.model.len = strlen(MODEL);
    rq.n_messages = 1;
    rq.messages = msgs;
    *len = aos__llm__chat_request__get_packed_size(&rq);
    uint8_t *b = malloc(*len);
    if (b)
        aos__llm__chat_request__pack(&rq, b);
    return b;
}

static void aos_run(const phase *ph, aos_conn **conns, result *res)
{
    memset(res, 0, sizeof *res);
    arun r = {.ph = ph, .conns = conns};
    unsigned nt = ph->rate ? OPEN_THREADS : ph->conc;
    aworker *w = calloc(nt, sizeof *w);
    r.req = chat_req(ph->directive, &r.req_len);
    r.ttft = ph->rate ? calloc(ph->count, sizeof *r.ttft) : NULL;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, THREAD_STACK);
    unsigned started = 0;
    if (!w || !r.req || (ph->rate && !r.ttft)) {
        fprintf(stderr, "bench_llm: aos %s: out of memory\n", ph->name);
        res->failed++;
        goto out;
    }
    r.t0 = now_ns() + 50000000u; /* the threads are all up before the first call is due */
    r.w0 = r.t0 + (uint64_t)ph->warm_ms * 1000000u;
    r.w1 = r.w0 + (uint64_t)ph->measure_ms * 1000000u;
    for (; started < nt; started++) {
        w[started].run = &r;
        w[started].idx = started;
        w[started].c = conns[started % NCONN];
        if (pthread_create(&w[started].th, &at, ph->rate ? open_main : closed_main,
                           &w[started]) != 0) {
            fprintf(stderr, "bench_llm: aos %s: only %u threads started\n", ph->name, started);
            res->failed++;
            break;
        }
    }
    sleep_until(ph->rate ? r.t0 : r.w0);
    cpu_take(&res->c0);
    if (!ph->rate) {
        sleep_until(r.w1);
        cpu_take(&res->c1);
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(w[i].th, NULL);
        res->done += w[i].done;
        res->failed += w[i].failed;
        res->parts += w[i].parts;
        res->dur_ns += w[i].dur_ns;
    }
    if (ph->rate) {
        cpu_take(&res->c1);
        res->secs = (double)(res->c1.t_ns - r.t0) / 1e9;
        for (unsigned i = ph->skip; i < ph->count && res->nttft < OPEN_MAX; i++)
            if (r.ttft[i])
                res->ttft[res->nttft++] = r.ttft[i] - 1;
    } else {
        res->secs = (double)ph->measure_ms / 1000.0;
    }
out:
    pthread_attr_destroy(&at);
    free(r.ttft);
    free(r.req);
    free(w);
}

/* ---- reporting ------------------------------------------------------------------------ */

static double rate_of(const result *r) { return r->secs > 0 ? (double)r->done / r->secs : 0; }

static void print_side(const char *pname, const char *side, const result *r, int all_procs)
{
    printf("%s_%s_req_per_s: %.1f\n", pname, side, rate_of(r));
    printf("%s_%s_parts_per_s: %.0f\n", pname, side, r->secs > 0 ? (double)r->parts / r->secs
                                                                 : 0.0);
    if (r->dur_ns)
        printf("%s_%s_req_ms_mean: %.1f\n", pname, side,
               (double)r->dur_ns / 1e6 / (double)r->done);
    printf("%s_%s_failed: %llu\n", pname, side, (unsigned long long)r->failed);
    for (int i = 0; i < P_N; i++)
        if (all_procs || i == P_EP || i == P_SELF)
            printf("%s_%s_cpu_%s_pct: %.0f\n", pname, side, P_NAMES[i], cpu_pct(r, i));
    printf("%s_%s_machine_idle_pct: %.0f\n", pname, side, idle_pct(r));
}

/* VmHWM (peak resident) of pid in MiB; 0 when it cannot be read. */
static double hwm_mb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    unsigned long kb = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':' && sscanf(line + kl + 1, "%lu", &kb) == 1)
            break;
    fclose(f);
    return (double)kb / 1024.0;
}

/* ---- the three measurements: each returns the failed requests of both sides ------------ */

static result g_rp, g_ra; /* big (the open loop's samples): not on the stack */

static long bench_load(const phase *ph, int port, aos_conn **conns)
{
    plain_run(ph, port, &g_rp);
    aos_run(ph, conns, &g_ra);
    printf("load_concurrency: %u\n", ph->conc);
    print_side("load", "plain", &g_rp, 0);
    print_side("load", "aos", &g_ra, 1);
    double r1 = rate_of(&g_rp), r2 = rate_of(&g_ra);
    printf("llm_throughput_ratio: %.1f\n", r1 > 0 ? 100.0 * r2 / r1 : 0.0);
    printf("llm_rss_mb: %.1f\n", hwm_mb(g_pids[P_LLM], "VmHWM"));
    printf("aosd_rss_mb: %.1f\n", hwm_mb(g_pids[P_AOSD], "VmHWM"));
    return (long)(g_rp.failed + g_ra.failed);
}

static long bench_lat(const phase *ph, int port, aos_conn **conns)
{
    plain_run(ph, port, &g_rp);
    static const int who[] = {P_AOSD, P_LLM, P_AUDIT, P_PG};
    enum { NW = sizeof who / sizeof who[0] };
    unsigned long long ns0[NW], r0[NW], ns1[NW], r1[NW], in0[NW], ir0[NW];
    /* what the processes do with no call at all (timers, polls), over 2 s, is taken off */
    uint64_t i0 = now_ns();
    for (int i = 0; i < NW; i++)
        sched_take(who[i], &in0[i], &ir0[i]);
    usleep(2000 * 1000);
    for (int i = 0; i < NW; i++)
        sched_take(who[i], &ns0[i], &r0[i]);
    uint64_t t0 = now_ns();
    aos_run(ph, conns, &g_ra);
    for (int i = 0; i < NW; i++)
        sched_take(who[i], &ns1[i], &r1[i]);
    double scale = (double)(now_ns() - t0) / (double)(t0 - i0);
    double pp50 = pct_us(g_rp.ttft, g_rp.nttft, 50), pp99 = pct_us(g_rp.ttft, g_rp.nttft, 99);
    if (getenv("BENCH_SAMPLES"))
        for (size_t i = 0; i < g_ra.nttft; i++)
            fprintf(stderr, "aos_ttft_us[%zu]: %.1f\n", i, (double)g_ra.ttft[i] / 1000.0);
    double ap50 = pct_us(g_ra.ttft, g_ra.nttft, 50), ap99 = pct_us(g_ra.ttft, g_ra.nttft, 99);
    printf("lat_rate_per_s: %u\n", ph->rate);
    printf("lat_plain_samples: %zu\n", g_rp.nttft);
    printf("lat_aos_samples: %zu\n", g_ra.nttft);
    printf("lat_plain_ttft_us_p50: %.1f\n", pp50);
    printf("lat_plain_ttft_us_p99: %.1f\n", pp99);
    printf("lat_aos_ttft_us_p50: %.1f\n", ap50);
    printf("lat_aos_ttft_us_p99: %.1f\n", ap99);
    printf("llm_ttft_added_us_p50: %.1f\n", ap50 - pp50);
    printf("llm_ttft_added_us_p99: %.1f\n", ap99 - pp99);
    /* the BEGIN record is durable before the call goes out: the disk's own fdatasync, at the
     * same pace, is the floor of that wait and the source of its tail */
    uint64_t f50 = 0, f99 = 0, fmax = 0;
    h_fsync_lat(h_data_dir(g_h), 100, 100000u / (ph->rate ? ph->rate : 10), &f50, &f99, &fmax);
    printf("lat_fsync_us_p50: %llu\nlat_fsync_us_p99: %llu\nlat_fsync_us_max: %llu\n",
           (unsigned long long)f50, (unsigned long long)f99, (unsigned long long)fmax);
    /* per call of the aos leg (the whole call, not only to its first token): CPU time and
     * wake-ups of each process on the path; the bench's own are not counted */
    double calls = (double)ph->count;
    for (int i = 0; i < NW; i++) {
        double cpu = (double)(ns1[i] - ns0[i]) - scale * (double)(ns0[i] - in0[i]);
        double wk = (double)(r1[i] - r0[i]) - scale * (double)(r0[i] - ir0[i]);
        printf("lat_aos_per_call_%s: cpu_us %.0f wakeups %.1f (idle: %.0f wakeups/s)\n",
               P_NAMES[who[i]], cpu / 1e3 / calls, wk / calls,
               (double)(r0[i] - ir0[i]) * 1e9 / (double)(t0 - i0));
    }
    return (long)(g_rp.failed + g_ra.failed);
}

static long bench_cap(const phase *ph, int port, aos_conn **conns)
{
    plain_run(ph, port, &g_rp);
    aos_run(ph, conns, &g_ra);
    printf("cap_concurrency: %u\n", ph->conc);
    print_side("cap", "plain", &g_rp, 0);
    print_side("cap", "aos", &g_ra, 1);
    double r1 = rate_of(&g_rp), r2 = rate_of(&g_ra);
    printf("llm_parts_per_s: %.0f\n", g_ra.secs > 0 ? (double)g_ra.parts / g_ra.secs : 0.0);
    printf("llm_capacity_ratio: %.1f\n", r1 > 0 ? 100.0 * r2 / r1 : 0.0);
    printf("llm_rss_mb_end: %.1f\n", hwm_mb(g_pids[P_LLM], "VmHWM"));
    return (long)(g_rp.failed + g_ra.failed);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int write_conf(const char *dir, int port)
{
    char path[256];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    /* limits unset: the gateway's own path is measured, not a configured cap */
    fprintf(f,
            "llm:\n"
            "  default_model: " MODEL "\n"
            "  providers:\n"
            "    - name: ep\n"
            "      kind: openai\n"
            "      base_url: http://127.0.0.1:%d/v1\n"
            "      timeout_ms: %u\n"
            "      max_retries: 0\n"
            "      models: [{name: m1}]\n",
            port, CALL_TIMEOUT_MS);
    return fclose(f) == 0 ? 0 : -1;
}

/* bench_llm [SECS [LOAD_CONC [CAP_CONC [PHASES [LOAD_CHUNKS]]]]]: 10 500 64 load,lat,cap 20.
 * BENCH_SAMPLES=1 prints the lat phase's aos samples on stderr in the order they were sent,
 * to tell a slow path from an occasional stall.
 * LOAD_CHUNKS 2 keeps a stream waiting 2 s on one pull: it shows aosd's cap on waiting
 * contexts without the CPU that 20 parts cost. */
int main(int argc, char **argv)
{
    unsigned secs = argc > 1 ? (unsigned)atoi(argv[1]) : 10;
    unsigned load_conc = argc > 2 ? (unsigned)atoi(argv[2]) : 500;
    unsigned cap_conc = argc > 3 ? (unsigned)atoi(argv[3]) : 64;
    const char *which = argc > 4 ? argv[4] : "load,lat,cap";
    unsigned load_chunks = argc > 5 ? (unsigned)atoi(argv[5]) : 20;
    if (!secs || secs > 600)
        secs = 10;
    if (!load_conc || load_conc > 4000)
        load_conc = 500;
    if (!cap_conc || cap_conc > 4000)
        cap_conc = 64;
    if (!load_chunks || load_chunks > 1000)
        load_chunks = 20;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    long errors = 0;

    endpoint ep;
    if (ep_start(&ep) != 0)
        return 1;
    char dir[] = "/tmp/bench-llm-XXXXXX", why[1024];
    if (!mkdtemp(dir) || write_conf(dir, ep.port) != 0) {
        fprintf(stderr, "bench_llm: cannot prepare a data dir: %s\n", strerror(errno));
        ep_stop(&ep);
        return 1;
    }
    h_aosd *h = h_start_on(dir, NULL, 90000, why, sizeof why);
    g_h = h;
    if (!h) {
        fprintf(stderr, "bench_llm: aosd: %s (the dir %s is kept)\n", why, dir);
        ep_stop(&ep);
        return 1;
    }
    g_pids[P_EP] = ep.pid;
    g_pids[P_LLM] = h_child(h, "llm", NULL);
    g_pids[P_AOSD] = h_aosd_pid(h);
    g_pids[P_PG] = h_child(h, "postgres", NULL);
    g_pids[P_AUDIT] = h_child(h, "audit", NULL);
    g_pids[P_SELF] = getpid();
    char curl_[256];
    aos_control_url(h_data_dir(h), curl_, sizeof curl_);
    aos_conn *conns[NCONN] = {0};
    for (int i = 0; i < NCONN; i++)
        if (aos_connect(curl_, &conns[i], why, sizeof why) != AOS_OK) {
            fprintf(stderr, "bench_llm: connect: %s\n", why);
            errors++;
            goto out;
        }

    /* load: a round of 2 s replies to fill every slot, then the window */
    char dload[64];
    snprintf(dload, sizeof dload, "[[chunks=%u spread_ms=2000]]", load_chunks);
    phase load = {.name = "load", .directive = dload, .chunks = load_chunks,
                  .conc = load_conc, .ramp_ms = 2000, .warm_ms = 2500, .measure_ms = secs * 1000};
    phase lat = {.name = "lat", .directive = "[[chunks=20 first_ms=0]]", .chunks = 20,
                 .rate = 10, .count = secs * 10 + 5, .skip = 5};
    phase cap = {.name = "cap", .directive = "[[chunks=20]]", .chunks = 20,
                 .conc = cap_conc, .warm_ms = 1000, .measure_ms = secs * 1000};
    printf("llm_rss_mb_idle: %.1f\n", hwm_mb(g_pids[P_LLM], "VmHWM"));

    /* warm both paths: connections made, caches filled */
    phase warm = cap;
    warm.name = "warm";
    warm.conc = 4;
    warm.warm_ms = 0;
    warm.measure_ms = 500;
    plain_run(&warm, ep.port, &g_rp);
    aos_run(&warm, conns, &g_ra);
    errors += (long)(g_rp.failed + g_ra.failed);

    printf("secs: %u\n", secs);

    if (strstr(which, "load"))
        errors += bench_load(&load, ep.port, conns);
    if (strstr(which, "lat"))
        errors += bench_lat(&lat, ep.port, conns);
    if (strstr(which, "cap"))
        errors += bench_cap(&cap, ep.port, conns);
    printf("errors: %ld\n", errors);
out:
    for (int i = 0; i < NCONN; i++)
        aos_close(conns[i]);
    h_stop(h);
    ep_stop(&ep);
    curl_global_cleanup();
    return errors ? 1 : 0;
}
