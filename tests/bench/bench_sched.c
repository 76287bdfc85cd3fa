/* bench_sched (B2): aosd's LLM scheduler against a provider with real limits — 1,000 callers'
 * chats through aosd, beside the same callers straight to the provider retrying as openai's client.
 *
 * The provider is aos-test-llm-endpoint in provider-limits mode: LATENCY_MS to the first token,
 * then one token each GAP_MS, at most CONC requests at once. RPM and TPM are set too (aosd gets
 * the same limits), but above anything CONC requests of LATENCY_MS or more could use, so the
 * binding limit is the concurrency and the capacity is CONC slots: utilisation: is the
 * slot-time the endpoint itself counted (GET /v1/stats) over CONC x the time while at least
 * CONC callers had work left.
 *
 * The workload: AGENTS callers (threads here); caller i is in size class (i / 3) % 3 (prompts
 * and max_tokens of 1, 2 and 4 units, each call +-20 %; its first PREFIX_CALLS calls of one
 * unit) and weight group i % 3, with a fixed list of calls (the same in both legs).
 * Scheduled leg: aosd with the provider's limits, each caller calling llm.chat with its agent
 * id. Once every caller's first call waits, kernel.sched.set gives groups 1 and 2 weights 2
 * and 4 (group 0 keeps 1); once every caller was served for a call it sent after that,
 * WINDOW_MS is the window: jain: is the lowest of the groups' Jain indices of the tokens
 * served per caller (within a group all weights are equal, the sizes are mixed),
 * weight_error: the worst relative deviation (%) of the groups' token shares from their
 * weights' (1/7, 2/7, 4/7). Tokens served: each call's tokens spread evenly from its dispatch
 * (its first token, less LATENCY_MS) to the caller's next dispatch, so the window does not
 * count calls whole or not at all.
 * Unscheduled leg: the same callers and calls over HTTP (libcurl), each call made as the
 * openai client does by default: 2 retries on 408/409/429/5xx and connection errors, waiting
 * retry-after-ms, else retry-after, when 0 < it < 60 s, else 0.5 s * 2^n up to 8 s times
 * (1 - 0.25 * random). A call that still failed counts in baseline_failed: and is made again
 * (the caller needs its answer), so both legs do the whole workload; speedup: is the
 * unscheduled wall time over the scheduled one (a lower bound, said on the next line, when
 * the unscheduled leg was stopped at BASE_LEG_MAX_S with calls unfinished).
 * The endpoint counts a refused request in its requests per minute, as OpenAI's guide says
 * of its own limits ("unsuccessful requests contribute to your per-minute limit, so
 * continuously resending a request won't work"): the RPM is above what CONC slots can
 * use, but not above what a storm of retries sends.
 * overhead_us: kernel/sched.c linked in, on a virtual clock: 1,000 agents, submit -> next ->
 * done cycles with CONC in flight, the median over ROUNDS rounds of OVH_CYCLES, per cycle.
 *
 * bench_sched [CONC [AGENTS]]: 32 1000. Needs AOS_BIN_DIR; prints `name: value` lines, the
 * six figures first; BENCH_SCHED_DEBUG=1 adds the slots used second by second on stderr. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "aos.pb-c.h"
#include "harness.h"
#include "llm.pb-c.h"
#include "scheduler.h"

#define LATENCY_MS 80u            /* the provider: first token after this */
#define GAP_MS 2u                 /* then one token each */
#define UNIT_IN 96u               /* a size class's prompt words (tokens) per unit */
#define UNIT_OUT 16u              /* and max_tokens (= tokens answered) per unit */
#define SPREAD 0.2                /* each call's sizes: the class's times 1 +- SPREAD */
#define NCONN 16                  /* aosd connections the callers share */
#define THREAD_STACK (256u << 10)
#define CALL_TIMEOUT_MS 120000u
#define SCHED_LEG_MAX_S 300u      /* each leg stops there, whatever is left (printed) */
#define BASE_LEG_MAX_S 400u
#define PREFIX_CALLS 4u          /* each caller's first calls are of one unit, whatever its class */
#define WINDOW_MS 10000u          /* jain and weight_error are measured over this */
#define PHASE_WAIT_MAX_MS 60000u  /* for every caller to reach the phase's condition */
#define SET_EST_S 5.0             /* planning only: how long the weights take to set */
#define PROMPT_CAP 8192u
#define SAMPLES_MAX 8192u         /* /v1/stats polls, every POLL_MS */
#define POLL_MS 200u
#define ERR_PRINTS 5
#define ROUNDS 5                  /* overhead: rounds of OVH_CYCLES */
#define OVH_CYCLES 1000000u
#define OVH_AGENTS 1000u
#define KEY_ENV "AOS_BENCH_SCHED_KEY"
#define KEY "bench-sched-key"
#define MODEL "ep/m1"

static const unsigned CLASS_UNITS[3] = {1, 2, 4};
static const double WEIGHTS[3] = {1, 2, 4};

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

static void sleep_ms(double ms)
{
    if (ms > 0)
        sleep_until(now_ns() + (uint64_t)(ms * 1e6));
}

/* splitmix64: the plan and the retry jitter, reproducible from a seed. */
static uint64_t mix(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double unif(uint64_t *s) { return (double)(mix(s) >> 11) / 9007199254740992.0; }

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- CPU: who used the machine during a leg (the figures are read against it) ---------- */

enum { P_EP, P_LLM, P_AOSD, P_PG, P_SELF, P_N };
static const char *const P_NAMES[P_N] = {"ep", "llm", "aosd", "pg", "bench"};
static pid_t g_pids[P_N];

typedef struct cpu_snap {
    uint64_t t_ns;
    unsigned long long ticks[P_N];
    unsigned long long idle, total; /* the machine's, /proc/stat */
} cpu_snap;

/* Field 1 (ppid) or utime+stime of pid from /proc/pid/stat; 0 when it cannot be read. */
static unsigned long long proc_stat(pid_t pid, int ppid)
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
    int pp = 0;
    if (!p)
        return 0;
    if (ppid)
        return sscanf(p + 2, "%*c %d", &pp) == 1 ? (unsigned long long)pp : 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return ut + st;
}

/* The postmaster and its backends, which come and go: whoever is alive at the snapshot. */
static unsigned long long pg_ticks(pid_t pm)
{
    if (!pm)
        return 0;
    unsigned long long t = proc_stat(pm, 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pm, (int)pm);
    FILE *f = fopen(path, "re");
    if (!f)
        return t;
    int c;
    while (fscanf(f, "%d", &c) == 1)
        if (proc_stat((pid_t)c, 1) == (unsigned long long)pm)
            t += proc_stat((pid_t)c, 0);
    fclose(f);
    return t;
}

static void cpu_take(cpu_snap *s)
{
    s->t_ns = now_ns();
    for (int i = 0; i < P_N; i++)
        s->ticks[i] = i == P_PG ? pg_ticks(g_pids[i]) : g_pids[i] ? proc_stat(g_pids[i], 0) : 0;
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

/* "name=NN ..." : % of one core each process used between the snapshots, and the machine's
 * idle %. */
static void cpu_line(const cpu_snap *a, const cpu_snap *b, char *out, size_t cap)
{
    double secs = (double)(b->t_ns - a->t_ns) / 1e9;
    long hz = sysconf(_SC_CLK_TCK);
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < P_N && n < cap; i++) {
        if (!g_pids[i])
            continue;
        double pct = secs > 0 && hz > 0 && b->ticks[i] >= a->ticks[i]
                         ? 100.0 * (double)(b->ticks[i] - a->ticks[i]) / (double)hz / secs
                         : 0;
        int w = snprintf(out + n, cap - n, "%s=%.0f ", P_NAMES[i], pct);
        n += w > 0 ? (size_t)w : 0;
    }
    unsigned long long t = b->total - a->total;
    if (n < cap)
        snprintf(out + n, cap - n, "machine_idle=%.0f",
                 t ? 100.0 * (double)(b->idle - a->idle) / (double)t : 0.0);
}

/* ---- the plan and what a leg measured ------------------------------------------------- */

typedef struct call {
    uint32_t in, out;            /* prompt words (the endpoint's input tokens), max_tokens */
    uint64_t t_send, t_disp, t_end; /* ns from the leg's start: the successful attempt's */
    uint64_t tokens;             /* served: the reply's usage (unscheduled: in + out) */
} call;

struct leg;

typedef struct agent {
    unsigned idx, group, cls;
    char id[24];
    call *calls;
    size_t ncalls;
    struct leg *leg;
    aos_conn *conn;
    pthread_t th;
    uint64_t t_done;             /* ns from the start; 0: not finished */
    uint32_t failed;             /* calls the caller saw fail (and made again) */
    uint32_t rl;                 /* 429s it was answered (unscheduled) */
    size_t unfinished;
    int after;                   /* a call sent after the weights were set was served */
    uint64_t rng;
} agent;

typedef struct sample {
    uint64_t t;                  /* ns from the leg's start */
    double busy_ms;
    uint64_t admitted, refused;
    uint32_t peak, in_flight;
    int32_t aosd_in_flight;      /* debug: aosd's count then (kernel.sched); -1: not asked */
} sample;

typedef struct leg {
    int sched;                   /* 1: through aosd */
    unsigned nagents, conc;
    agent *ag;
    uint64_t t0, deadline;       /* absolute ns */
    int port;
    atomic_uint sent1;           /* callers whose first call is out: all are backlogged */
    _Atomic uint64_t set_done;   /* ns from the start (+1) once the weights are set; 0 before */
    atomic_uint after;           /* callers served for a call sent after that */
    atomic_uint nfin;
    uint64_t *fin;               /* finish times, in order */
    atomic_uint errs;
    /* the poller */
    aos_conn *admin;             /* debug: it asks kernel.sched too */
    sample *smp;
    size_t nsmp;
    atomic_int poll_stop;
    /* the weights: when setting them began, how long it took, when every caller had been
     * served at them and when the window ended (ns from the start; 0: not reached) */
    uint64_t set0, set_ms, win0, win1;
    cpu_snap c0, c1;
} leg;

static uint64_t rel(const leg *L) { return now_ns() - L->t0; }

/* The prompt of a call: the endpoint's directive for its answer's length, then words of 4
 * bytes, so aosd's estimate (bytes / 4) and the endpoint's count (words) agree. */
static size_t prompt(char *out, size_t cap, const call *c)
{
    int n = snprintf(out, cap, "[[chunks=%u]]", c->out);
    size_t len = n > 0 ? (size_t)n : 0;
    static const char *const W[] = {" the", " cat", " sat", " one", " mat", " and", " ran"};
    for (uint32_t i = 1; i < c->in && len + 5 < cap; i++) {
        memcpy(out + len, W[i % 7], 4);
        len += 4;
    }
    out[len] = '\0';
    return len;
}

/* The slot a call of class cl holds at the provider, ms (its last token's time). */
static double slot_ms(unsigned cl)
{
    return LATENCY_MS + (double)(UNIT_OUT * CLASS_UNITS[cl] - 1) * GAP_MS + 1.0;
}

/* Each caller's calls: enough tokens that every caller is still busy past the window,
 * whether the weights took hold early (at its weighted fair rate) or late (at the equal
 * one), with a quarter as much time again to spare (the window needs all backlogged; the
 * rest of the leg only conc callers). The first PREFIX_CALLS calls are of one unit whatever the
 * class: a weight set while a caller waits applies from the next call it sends, whose start
 * tag (start-time fair queueing) is the finish tag of the one before, taken at the old
 * weight and reached at the new, slower pace of virtual time; small calls there keep that
 * wait to seconds. Returns how long every caller is planned busy at least, s. */
static double plan(agent *ag, unsigned n, unsigned conc)
{
    double spt = 0, wsum = 0;
    for (unsigned i = 0; i < n; i++) {
        unsigned cl = (i / 3) % 3;
        spt += slot_ms(cl) / (double)((UNIT_IN + UNIT_OUT) * CLASS_UNITS[cl]);
        wsum += WEIGHTS[i % 3];
    }
    double r = conc * 1000.0 / spt;                    /* tokens/s per caller, equal */
    double r1 = conc * 1000.0 / (n * slot_ms(0) / ((UNIT_IN + UNIT_OUT) * 1.0)); /* prefix */
    double unit = (UNIT_IN + UNIT_OUT) * (1 + SPREAD);
    /* the weights set, then one prefix call's tag at the weighted pace of virtual time */
    double settle = SET_EST_S + unit / (r1 * n / wsum);
    double busy = 1.25 * (settle + WINDOW_MS / 1000.0) + 3.0;
    for (unsigned i = 0; i < n; i++) {
        agent *a = &ag[i];
        a->idx = i;
        a->group = i % 3;
        a->cls = (i / 3) % 3;
        snprintf(a->id, sizeof a->id, "bench-%04u", i);
        double budget = r * busy * fmax(1.0, n * WEIGHTS[a->group] / wsum);
        uint64_t s = 0x5eed0000ull + i;
        size_t cap = 16, k = 0;
        a->calls = malloc(cap * sizeof *a->calls);
        double got = 0;
        while (a->calls && got < budget) {
            if (k == cap) {
                call *nc = realloc(a->calls, 2 * cap * sizeof *nc);
                if (!nc) {
                    free(a->calls);
                    a->calls = NULL;
                    break;
                }
                a->calls = nc;
                cap *= 2;
            }
            unsigned u = k >= PREFIX_CALLS ? CLASS_UNITS[a->cls] : 1;
            call *c = &a->calls[k++];
            memset(c, 0, sizeof *c);
            c->in = (uint32_t)lround(UNIT_IN * u * (1 - SPREAD + 2 * SPREAD * unif(&s)));
            c->out = (uint32_t)lround(UNIT_OUT * u * (1 - SPREAD + 2 * SPREAD * unif(&s)));
            got += c->in + c->out;
        }
        a->ncalls = a->calls ? k : 0;
        a->rng = 0xa11ce000ull + i;
    }
    return busy;
}

static void leg_reset(leg *L)
{
    for (unsigned i = 0; i < L->nagents; i++) {
        agent *a = &L->ag[i];
        for (size_t k = 0; k < a->ncalls; k++) {
            call *c = &a->calls[k];
            c->t_send = c->t_disp = c->t_end = 0;
            c->tokens = 0;
        }
        a->leg = L;
        a->t_done = 0;
        a->failed = a->rl = 0;
        a->unfinished = 0;
        a->after = 0;
    }
    atomic_store(&L->sent1, 0);
    atomic_store(&L->set_done, 0);
    atomic_store(&L->after, 0);
    L->set0 = L->set_ms = L->win0 = L->win1 = 0;
    atomic_store(&L->nfin, 0);
    atomic_store(&L->errs, 0);
    atomic_store(&L->poll_stop, 0);
    L->nsmp = 0;
}

/* A caller was served (its call k's first token came): the phases' conditions. */
static void served_first(agent *a, size_t k, uint64_t t)
{
    leg *L = a->leg;
    call *c = &a->calls[k];
    c->t_disp = t > (uint64_t)LATENCY_MS * 1000000u ? t - (uint64_t)LATENCY_MS * 1000000u : 0;
    if (c->t_disp < c->t_send)
        c->t_disp = c->t_send;
    uint64_t sd = atomic_load(&L->set_done);
    if (sd && !a->after && c->t_send + 1 >= sd) {
        a->after = 1;
        atomic_fetch_add(&L->after, 1);
    }
}

static void finished(agent *a)
{
    leg *L = a->leg;
    a->t_done = rel(L);
    unsigned j = atomic_fetch_add(&L->nfin, 1);
    if (j < L->nagents)
        L->fin[j] = a->t_done;
}

/* ---- the endpoint ---------------------------------------------------------------------- */

typedef h_endpoint endpoint;

static uint32_t g_rpm, g_tpm;

/* the provider: the limits aosd gets too, the pacing of LATENCY_MS and GAP_MS */
static int ep_start(endpoint *ep, unsigned conc)
{
    char c[16], r[16], t[16], l[16], gp[16];
    snprintf(c, sizeof c, "%u", conc);
    snprintf(r, sizeof r, "%u", g_rpm);
    snprintf(t, sizeof t, "%u", g_tpm);
    snprintf(l, sizeof l, "%u", LATENCY_MS);
    snprintf(gp, sizeof gp, "%u", GAP_MS);
    const char *args[] = {"--expect-key", KEY, "--max-concurrency", c, "--rpm", r, "--tpm", t,
                          "--latency-ms", l, "--gap-ms", gp, NULL};
    return h_endpoint_start(ep, args);
}

static void ep_stop(endpoint *ep) { h_endpoint_stop(ep); }

typedef struct membuf {
    char b[4096];
    size_t n;
} membuf;

static size_t to_membuf(char *d, size_t size, size_t nmemb, void *arg)
{
    membuf *m = arg;
    size_t n = size * nmemb, room = sizeof m->b - 1 - m->n;
    memcpy(m->b + m->n, d, n < room ? n : room);
    m->n += n < room ? n : room;
    m->b[m->n] = '\0';
    return n;
}

/* GET /v1/stats (or POST /v1/stats/reset) of the endpoint: its own counts. */
static int ep_stats(CURL *h, int port, int reset, sample *s, uint64_t t)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/stats%s", port, reset ? "/reset" : "");
    membuf m = {.n = 0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, to_membuf);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &m);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    if (reset)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    else
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    long code = 0;
    if (curl_easy_perform(h) != CURLE_OK ||
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 200)
        return -1;
    json_t *j = json_loads(m.b, 0, NULL);
    if (!j)
        return -1;
    s->t = t;
    s->busy_ms = json_number_value(json_object_get(j, "busy_slot_ms"));
    s->admitted = (uint64_t)json_integer_value(json_object_get(j, "admitted"));
    s->refused = (uint64_t)json_integer_value(json_object_get(j, "refused"));
    s->peak = (uint32_t)json_integer_value(json_object_get(j, "peak_in_flight"));
    s->in_flight = (uint32_t)json_integer_value(json_object_get(j, "in_flight"));
    s->aosd_in_flight = -1;
    json_decref(j);
    return 0;
}

/* aosd's own count of the provider's calls in flight (kernel.sched); -1 when it cannot say. */
static int32_t aosd_in_flight(aos_conn *cn)
{
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 5000};
    int32_t n = -1;
    if (aos_call(cn, &o, "kernel.sched", NULL, 0, &r) == AOS_OK) {
        Aos__SchedReply *s = aos__sched_reply__unpack(NULL, r.payload_len, r.payload);
        for (size_t i = 0; s && i < s->n_providers; i++)
            if (!strcmp(s->providers[i]->name, "ep"))
                n = (int32_t)s->providers[i]->in_flight;
        if (s)
            aos__sched_reply__free_unpacked(s, NULL);
    }
    aos_reply_clear(&r);
    return n;
}

/* Polls the endpoint's counts through the leg, so utilisation can be read at any time. */
static void *poller(void *arg)
{
    leg *L = arg;
    CURL *h = curl_easy_init();
    if (!h)
        return NULL;
    sleep_until(L->t0); /* times are from the start: none before it */
    for (unsigned n = 0; !atomic_load(&L->poll_stop) && L->nsmp < SAMPLES_MAX; n++) {
        uint64_t t = rel(L);
        if (ep_stats(h, L->port, 0, &L->smp[L->nsmp], t) == 0) {
            /* kernel.sched holds aosd's queue lock while it sums every agent: once a second,
             * and only to see where slots go idle */
            if (L->admin && n % 5 == 0)
                L->smp[L->nsmp].aosd_in_flight = aosd_in_flight(L->admin);
            L->nsmp++;
        }
        sleep_ms(POLL_MS);
    }
    if (L->nsmp < SAMPLES_MAX && ep_stats(h, L->port, 0, &L->smp[L->nsmp], rel(L)) == 0)
        L->nsmp++;
    curl_easy_cleanup(h);
    return NULL;
}

/* ---- the scheduled leg: llm.chat through aosd ----------------------------------------- */

typedef struct part_ctx {
    agent *a;
    size_t k;
    int first;
} part_ctx;

static int on_part(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    (void)seq, (void)data, (void)len;
    part_ctx *p = arg;
    if (!p->first) {
        p->first = 1;
        served_first(p->a, p->k, rel(p->a->leg));
    }
    return 0;
}

static uint8_t *chat_req(const char *text, size_t tl, uint32_t max_tokens, uint8_t *buf,
                         size_t cap, size_t *len)
{
    Aos__Llm__ContentPart cp = AOS__LLM__CONTENT_PART__INIT, *cps[] = {&cp};
    cp.kind = AOS__LLM__PART_KIND__TEXT;
    cp.text.data = (uint8_t *)text;
    cp.text.len = tl;
    Aos__Llm__Message msg = AOS__LLM__MESSAGE__INIT, *msgs[] = {&msg};
    msg.role = AOS__LLM__ROLE__USER;
    msg.n_content = 1;
    msg.content = cps;
    Aos__Llm__ChatRequest rq = AOS__LLM__CHAT_REQUEST__INIT;
    rq.model.data = (uint8_t *)MODEL;
    rq.model.len = strlen(MODEL);
    rq.n_messages = 1;
    rq.messages = msgs;
    rq.max_tokens = max_tokens;
    *len = aos__llm__chat_request__get_packed_size(&rq);
    if (*len > cap)
        return NULL;
    aos__llm__chat_request__pack(&rq, buf);
    return buf;
}

static void *sched_caller(void *arg)
{
    agent *a = arg;
    leg *L = a->leg;
    char text[PROMPT_CAP];
    uint8_t buf[PROMPT_CAP + 512];
    sleep_until(L->t0);
    for (size_t k = 0; k < a->ncalls; k++) {
        call *c = &a->calls[k];
        size_t tl = prompt(text, sizeof text, c), len;
        if (!chat_req(text, tl, c->out, buf, sizeof buf, &len)) {
            a->unfinished = a->ncalls - k;
            break;
        }
        for (;;) {
            if (now_ns() >= L->deadline) {
                a->unfinished = a->ncalls - k;
                goto out;
            }
            part_ctx pc = {a, k, 0};
            aos_call_opts o = {.agent_id = a->id, .timeout_ms = CALL_TIMEOUT_MS};
            aos_reply rep;
            c->t_send = rel(L);
            if (k == 0 && !a->failed)
                atomic_fetch_add(&L->sent1, 1);
            aos_err e = aos_call_stream(a->conn, &o, "llm.chat", buf, len, on_part, &pc, &rep);
            Aos__Llm__ChatReply *cr = e == AOS_OK ? aos__llm__chat_reply__unpack(
                                                        NULL, rep.payload_len, rep.payload)
                                                  : NULL;
            if (cr && pc.first) {
                c->t_end = rel(L);
                if (cr->usage)
                    c->tokens = cr->usage->input_tokens + cr->usage->output_tokens +
                                cr->usage->cache_read_tokens + cr->usage->cache_write_tokens;
                aos__llm__chat_reply__free_unpacked(cr, NULL);
                aos_reply_clear(&rep);
                break;
            }
            if (cr)
                aos__llm__chat_reply__free_unpacked(cr, NULL);
            a->failed++;
            if (atomic_fetch_add(&L->errs, 1) < ERR_PRINTS)
                fprintf(stderr, "bench_sched: %s: llm.chat: %s: %s%s\n", a->id,
                        aos_err_name(e), rep.error, e == AOS_OK ? " (no part came)" : "");
            aos_reply_clear(&rep);
            usleep(10000); /* a failing path must not turn into a busy loop */
        }
    }
out:
    finished(a);
    return NULL;
}

/* kernel.sched.set: the weight of agent who (admin, on the control socket). */
static aos_err set_weight(aos_conn *cn, const char *who, double w, char *why, size_t whylen)
{
    Aos__SchedSetRequest q = AOS__SCHED_SET_REQUEST__INIT;
    q.agent = (char *)who;
    q.has_weight = 1;
    q.weight = w;
    uint8_t buf[256];
    size_t len = aos__sched_set_request__get_packed_size(&q);
    if (len > sizeof buf)
        return AOS_ERR_TOO_BIG;
    aos__sched_set_request__pack(&q, buf);
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 30000};
    aos_err rc = aos_call(cn, &o, "kernel.sched.set", buf, len, &r);
    if (rc != AOS_OK)
        snprintf(why, whylen, "%s", r.error);
    aos_reply_clear(&r);
    return rc;
}

/* Waits until *cnt reaches want (or the time is up, or every caller ended); 1 when it did. */
static int wait_count(leg *L, atomic_uint *cnt, unsigned want)
{
    uint64_t until = now_ns() + (uint64_t)PHASE_WAIT_MAX_MS * 1000000u;
    while (atomic_load(cnt) < want) {
        if (now_ns() >= until || atomic_load(&L->nfin) >= L->nagents)
            return 0;
        sleep_ms(20);
    }
    return 1;
}

/* The scheduled leg's phase, on the calling thread while the callers run: once every
 * caller's first call waits (all are backlogged), groups 1 and 2 get weights 2 and 4 (group
 * 0 keeps the default 1); once every caller was served for a call it sent after that, the
 * window. */
static void sched_phases(leg *L, aos_conn *admin)
{
    char why[AOS_ERRMSG_MAX + 1];
    if (!wait_count(L, &L->sent1, L->nagents))
        fprintf(stderr, "bench_sched: only %u of %u callers sent a first call in %u s\n",
                atomic_load(&L->sent1), L->nagents, PHASE_WAIT_MAX_MS / 1000);
    L->set0 = rel(L);
    unsigned bad = 0;
    for (unsigned i = 0; i < L->nagents; i++) {
        agent *a = &L->ag[i];
        if (a->group == 0)
            continue;
        aos_err rc = set_weight(admin, a->id, WEIGHTS[a->group], why, sizeof why);
        if (rc != AOS_OK && bad++ < ERR_PRINTS)
            fprintf(stderr, "bench_sched: kernel.sched.set %s: %s: %s\n", a->id,
                    aos_err_name(rc), why);
    }
    L->set_ms = (rel(L) - L->set0) / 1000000u;
    atomic_store(&L->set_done, rel(L) + 1);
    if (!wait_count(L, &L->after, L->nagents))
        fprintf(stderr, "bench_sched: only %u of %u callers were served for a call sent after "
                "the weights were set, in %u s\n", atomic_load(&L->after), L->nagents,
                PHASE_WAIT_MAX_MS / 1000);
    L->win0 = rel(L);
    sleep_ms(WINDOW_MS);
    L->win1 = rel(L);
}

/* ---- the unscheduled leg: each caller straight to the provider, as openai's client ---- */

typedef struct attempt {
    uint64_t t_head;      /* the status line came (the provider took the request) */
    double ra_ms;         /* retry-after-ms; < 0: none */
    double ra_s;          /* retry-after, in s (a date made relative); < 0: none */
    int done;             /* [DONE] came */
    char tail[8];         /* the last bytes, for a [DONE] cut by a read */
    size_t tail_len;
    leg *L;
} attempt;

static size_t on_header(char *d, size_t size, size_t nmemb, void *arg)
{
    attempt *at = arg;
    size_t n = size * nmemb;
    char line[256];
    size_t m = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, d, m);
    line[m] = '\0';
    if (!strncmp(line, "HTTP/", 5)) {
        at->t_head = rel(at->L);
        at->ra_ms = at->ra_s = -1;
    } else if (!strncasecmp(line, "retry-after-ms:", 15)) {
        char *end;
        double v = strtod(line + 15, &end);
        if (end != line + 15)
            at->ra_ms = v;
    } else if (!strncasecmp(line, "retry-after:", 12)) {
        char *end;
        double v = strtod(line + 12, &end);
        if (end != line + 12) {
            at->ra_s = v;
        } else {
            line[strcspn(line, "\r\n")] = '\0';
            time_t t = curl_getdate(line + 12, NULL);
            if (t > 0)
                at->ra_s = difftime(t, time(NULL));
        }
    }
    return n;
}

static size_t on_body(char *d, size_t size, size_t nmemb, void *arg)
{
    attempt *at = arg;
    size_t n = size * nmemb;
    char b[16 + 8];
    size_t k = n < 8 ? n : 8;
    memcpy(b, at->tail, at->tail_len);
    memcpy(b + at->tail_len, d, k);
    if (memmem(b, at->tail_len + k, "[DONE]", 6) || memmem(d, n, "[DONE]", 6))
        at->done = 1;
    if (n >= 7) {
        memcpy(at->tail, d + n - 7, 7);
        at->tail_len = 7;
    } else {
        size_t all = at->tail_len + k, keep = all < 7 ? all : 7;
        memmove(at->tail, b + all - keep, keep);
        at->tail_len = keep;
    }
    return n;
}

/* One call as the openai client makes it (maxRetries 2): 1 answered, 0 failed. */
static int openai_call(agent *a, CURL *h, call *c, const char *body)
{
    leg *L = a->leg;
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    for (unsigned n = 0;; n++) {
        attempt at = {.ra_ms = -1, .ra_s = -1, .L = L};
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &at);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &at);
        c->t_send = rel(L);
        CURLcode cc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (cc == CURLE_OK && code == 200 && at.done) {
            c->t_disp = at.t_head;
            c->t_end = rel(L);
            c->tokens = (uint64_t)c->in + c->out;
            return 1;
        }
        if (code == 429)
            a->rl++;
        /* shouldRetry: 408, 409, 429, 5xx; and connection errors and timeouts */
        int retry = cc != CURLE_OK || code == 408 || code == 409 || code == 429 || code >= 500;
        if (!retry || n >= 2) {
            if (atomic_fetch_add(&L->errs, 1) < ERR_PRINTS)
                fprintf(stderr, "bench_sched: unscheduled %s: %s, HTTP %ld after %u tries\n",
                        a->id, curl_easy_strerror(cc), code, n + 1);
            return 0;
        }
        /* retry-after-ms, else retry-after, honoured when 0 < it < 60 s; else backoff */
        double ms = at.ra_ms >= 0 ? at.ra_ms : at.ra_s >= 0 ? at.ra_s * 1000.0 : -1;
        if (!(ms > 0 && ms < 60000)) {
            double s = 0.5 * pow(2.0, (double)n);
            ms = (s < 8.0 ? s : 8.0) * (1.0 - 0.25 * unif(&a->rng)) * 1000.0;
        }
        uint64_t left = L->deadline > now_ns() ? (L->deadline - now_ns()) / 1000000u : 0;
        if ((double)left <= ms)
            return 0;
        sleep_ms(ms);
    }
}

static void *base_caller(void *arg)
{
    agent *a = arg;
    leg *L = a->leg;
    char url[96], text[PROMPT_CAP], body[PROMPT_CAP + 256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", L->port);
    /* what aos-llm sends, so both legs ask the endpoint for the same work */
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    hd = hd ? curl_slist_append(hd, "Accept: application/json, text/event-stream") : NULL;
    hd = hd ? curl_slist_append(hd, "Authorization: Bearer " KEY) : NULL;
    hd = hd ? curl_slist_append(hd, "Expect:") : NULL;
    CURL *h = curl_easy_init();
    sleep_until(L->t0);
    if (!h || !hd) {
        fprintf(stderr, "bench_sched: unscheduled %s: out of memory\n", a->id);
        a->unfinished = a->ncalls;
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)CALL_TIMEOUT_MS);
    for (size_t k = 0; k < a->ncalls; k++) {
        call *c = &a->calls[k];
        prompt(text, sizeof text, c);
        snprintf(body, sizeof body,
                 "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],"
                 "\"max_tokens\":%u,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                 text, c->out);
        while (!openai_call(a, h, c, body)) {
            a->failed++;
            if (now_ns() >= L->deadline) {
                a->unfinished = a->ncalls - k;
                goto out;
            }
        }
        served_first(a, k, c->t_disp + (uint64_t)LATENCY_MS * 1000000u);
    }
out:
    if (h)
        curl_easy_cleanup(h);
    curl_slist_free_all(hd);
    finished(a);
    return NULL;
}

/* ---- running a leg and reading its figures -------------------------------------------- */

static int leg_run(leg *L, aos_conn **conns, aos_conn *admin)
{
    leg_reset(L);
    L->admin = admin && getenv("BENCH_SCHED_DEBUG") ? admin : NULL;
    CURL *h = curl_easy_init();
    sample s0;
    if (!h || ep_stats(h, L->port, 1, &s0, 0) != 0) {
        fprintf(stderr, "bench_sched: the endpoint's /v1/stats/reset failed\n");
        if (h)
            curl_easy_cleanup(h);
        return -1;
    }
    curl_easy_cleanup(h);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, THREAD_STACK);
    L->t0 = now_ns() + 200000000u; /* every thread is up before the first call is due */
    L->deadline = L->t0 + (uint64_t)(L->sched ? SCHED_LEG_MAX_S : BASE_LEG_MAX_S) * 1000000000u;
    L->smp[0] = (sample){0};
    L->nsmp = 1; /* the reset: nothing used at the start */
    pthread_t pt;
    int poll_ok = pthread_create(&pt, NULL, poller, L) == 0;
    unsigned started = 0;
    for (; started < L->nagents; started++) {
        agent *a = &L->ag[started];
        a->conn = conns ? conns[started % NCONN] : NULL;
        if (pthread_create(&a->th, &at, L->sched ? sched_caller : base_caller, a) != 0) {
            fprintf(stderr, "bench_sched: only %u caller threads started\n", started);
            break;
        }
    }
    pthread_attr_destroy(&at);
    sleep_until(L->t0);
    cpu_take(&L->c0);
    if (L->sched && started == L->nagents)
        sched_phases(L, admin);
    for (unsigned i = 0; i < started; i++)
        pthread_join(L->ag[i].th, NULL);
    cpu_take(&L->c1);
    atomic_store(&L->poll_stop, 1);
    if (poll_ok)
        pthread_join(pt, NULL);
    return started == L->nagents ? 0 : -1;
}

/* The caller's tokens served by t (ns): each call's spread evenly from its dispatch to the
 * caller's next dispatch (the last call's to its end). */
static double served(const agent *a, uint64_t t)
{
    double s = 0;
    for (size_t k = 0; k < a->ncalls; k++) {
        const call *c = &a->calls[k];
        if (!c->t_end || t <= c->t_disp)
            break;
        uint64_t next = k + 1 < a->ncalls && a->calls[k + 1].t_end ? a->calls[k + 1].t_disp
                                                                   : c->t_end;
        if (next <= c->t_disp || t >= next)
            s += (double)c->tokens;
        else
            s += (double)c->tokens * (double)(t - c->t_disp) / (double)(next - c->t_disp);
    }
    return s;
}

/* The last dispatch of a caller: after it, it has nothing waiting. */
static uint64_t last_disp(const agent *a)
{
    for (size_t k = a->ncalls; k-- > 0;)
        if (a->calls[k].t_end)
            return a->calls[k].t_disp;
    return 0;
}

/* The endpoint's slot-time used by t, ms, between the poller's samples. */
static double busy_at(const leg *L, uint64_t t)
{
    if (!L->nsmp)
        return 0;
    for (size_t i = 1; i < L->nsmp; i++)
        if (L->smp[i].t >= t) {
            const sample *a = &L->smp[i - 1], *b = &L->smp[i];
            double f = b->t > a->t ? (double)(t - a->t) / (double)(b->t - a->t) : 1;
            return a->busy_ms + f * (b->busy_ms - a->busy_ms);
        }
    return L->smp[L->nsmp - 1].busy_ms;
}

typedef struct figures {
    double wall_s, util, util_end_s;
    uint64_t failed, unfinished, rl, refused, admitted;
    uint32_t peak;
} figures;

static void leg_figures(const leg *L, figures *f)
{
    memset(f, 0, sizeof *f);
    if (getenv("BENCH_SCHED_DEBUG")) { /* where the provider's slots were idle */
        double a = 0, e = 0;
        unsigned n = 0;
        for (size_t i = 0; i < L->nsmp; i++)
            if (L->smp[i].aosd_in_flight >= 0) {
                a += L->smp[i].aosd_in_flight;
                e += L->smp[i].in_flight;
                n++;
            }
        if (n)
            fprintf(stderr, "in flight, mean of %u looks: %.1f by aosd's count, %.1f at the "
                    "endpoint\n", n, a / n, e / n);
    }
    if (getenv("BENCH_SCHED_DEBUG")) /* the slot use second by second, on stderr */
        for (uint64_t t = 0; t + 1000000000u <= L->smp[L->nsmp - 1].t; t += 1000000000u)
            fprintf(stderr, "%s t=%3llu s: slots used %.1f of %u\n",
                    L->sched ? "sched" : "base", (unsigned long long)(t / 1000000000u),
                    (busy_at(L, t + 1000000000u) - busy_at(L, t)) / 1000.0, L->conc);
    unsigned nf = atomic_load(&L->nfin);
    uint64_t *fin = malloc((nf ? nf : 1) * sizeof *fin);
    if (fin && nf) {
        memcpy(fin, L->fin, nf * sizeof *fin);
        qsort(fin, nf, sizeof *fin, cmp_u64);
        f->wall_s = (double)fin[nf - 1] / 1e9;
        /* capacity is used while at least conc callers have work: until the finish that
         * leaves conc - 1 */
        uint64_t te = nf > L->conc ? fin[nf - L->conc] : fin[nf - 1];
        f->util_end_s = (double)te / 1e9;
        f->util = te ? 100.0 * busy_at(L, te) / ((double)L->conc * (double)te / 1e6) : 0;
    }
    free(fin);
    for (unsigned i = 0; i < L->nagents; i++) {
        f->failed += L->ag[i].failed;
        f->unfinished += L->ag[i].unfinished;
        f->rl += L->ag[i].rl;
    }
    if (L->nsmp) {
        f->refused = L->smp[L->nsmp - 1].refused;
        f->admitted = L->smp[L->nsmp - 1].admitted;
        f->peak = L->smp[L->nsmp - 1].peak;
    }
}

/* Jain's index of the tokens served per caller of group g (all of one weight) over
 * [t0, t1]. */
static double jain(const leg *L, unsigned g, uint64_t t0, uint64_t t1)
{
    double s = 0, s2 = 0;
    unsigned n = 0;
    for (unsigned i = 0; i < L->nagents; i++) {
        if (L->ag[i].group != g)
            continue;
        double x = served(&L->ag[i], t1) - served(&L->ag[i], t0);
        s += x;
        s2 += x * x;
        n++;
    }
    return s2 > 0 ? s * s / ((double)n * s2) : 0;
}

/* The worst relative deviation (%) of the groups' token shares over [t0, t1] from their
 * weights' shares (sum of the group's weights over all weights: 1/7, 2/7, 4/7 for equal
 * groups); shares[] gets the measured ones. */
static double weight_error(const leg *L, uint64_t t0, uint64_t t1, double shares[3])
{
    double got[3] = {0}, want[3] = {0}, all = 0, wall = 0;
    for (unsigned i = 0; i < L->nagents; i++) {
        const agent *a = &L->ag[i];
        double x = served(a, t1) - served(a, t0);
        got[a->group] += x;
        all += x;
        want[a->group] += WEIGHTS[a->group];
        wall += WEIGHTS[a->group];
    }
    double worst = 0;
    for (int g = 0; g < 3; g++) {
        shares[g] = all > 0 ? got[g] / all : 0;
        double target = want[g] / wall;
        double dev = target > 0 ? 100.0 * fabs(shares[g] - target) / target : 0;
        if (dev > worst)
            worst = dev;
    }
    return worst;
}

/* ---- the scheduler's own cost --------------------------------------------------------- */

/* µs per submit -> next -> done cycle: OVH_AGENTS agents each with a call queued, conc in
 * flight; each cycle ends the oldest call in flight (its usage off the estimate), queues
 * that agent's next and starts the next in the fair order; the clock advances 50 µs a
 * cycle, a deadline 30 s on, as the router passes them. */
static double overhead_round(unsigned conc, unsigned cycles)
{
    sched *s = sched_new();
    if (!s)
        return -1;
    /* limits as the bench's provider has them (windows counted on every admission), rates
     * that 20,000 calls/s of virtual time do not reach */
    sched_limits l = {.max_concurrency = conc, .requests_per_min = 4000000,
                      .tokens_per_min = 1000000000};
    int p = sched_add_provider(s, "ep", &l);
    char (*ids)[24] = calloc(OVH_AGENTS, sizeof *ids);
    sched_item **ring = calloc(conc, sizeof *ring);
    double us = -1;
    char why[256];
    uint64_t now = 1000000, rng = 42;
    if (p < 0 || !ids || !ring)
        goto out;
    for (unsigned i = 0; i < OVH_AGENTS; i++) {
        snprintf(ids[i], sizeof ids[i], "agent-%04u", i);
        sched_item *it;
        sched_job j = {.agent = ids[i], .provider = p, .in_tokens = 100 + i % 300,
                       .max_out = 16 + i % 64, .deadline = now + 30000000,
                       .arg = (void *)(uintptr_t)i};
        if (sched_submit(s, &j, now, 1, &it, why, sizeof why) != AOS_OK) {
            fprintf(stderr, "bench_sched: overhead: sched_submit: %s\n", why);
            goto out;
        }
    }
    unsigned head = 0, n = 0;
    for (sched_item *it; n < conc && (it = sched_next(s, now)); n++)
        ring[n] = it;
    if (n != conc)
        goto out;
    uint64_t t0 = now_ns();
    for (unsigned c = 0; c < cycles; c++) {
        sched_item *it = ring[head];
        unsigned i = (unsigned)(uintptr_t)sched_item_arg(it);
        uint64_t r = mix(&rng);
        sched_usage u = {.in_tokens = 100 + i % 300, .out_tokens = r % (16 + i % 64)};
        sched_done(s, it, now, 1, 0, 0, &u);
        sched_job j = {.agent = ids[i], .provider = p, .in_tokens = 100 + i % 300,
                       .max_out = 16 + i % 64, .deadline = now + 30000000,
                       .arg = (void *)(uintptr_t)i};
        sched_item *q;
        if (sched_submit(s, &j, now, 1, &q, why, sizeof why) != AOS_OK ||
            !(ring[head] = sched_next(s, now))) {
            fprintf(stderr, "bench_sched: overhead: cycle %u: %s\n", c,
                    ring[head] ? why : "nothing admitted");
            goto out;
        }
        head = (head + 1) % conc;
        now += 50;
    }
    us = (double)(now_ns() - t0) / 1e3 / cycles;
out:
    sched_free(s);
    free(ids);
    free(ring);
    return us;
}

/* ---- main ------------------------------------------------------------------------------ */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int write_conf(const char *dir, int port, unsigned conc)
{
    char path[256];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    /* the provider's own limits: the scheduler keeps inside what the endpoint enforces */
    fprintf(f,
            "llm:\n"
            "  default_model: " MODEL "\n"
            "  providers:\n"
            "    - name: ep\n"
            "      kind: openai\n"
            "      base_url: http://127.0.0.1:%d/v1\n"
            "      api_key_env: " KEY_ENV "\n"
            "      timeout_ms: %u\n"
            "      limits: {max_concurrency: %u, requests_per_min: %u, tokens_per_min: %u}\n"
            "      models: [{name: m1}]\n",
            port, CALL_TIMEOUT_MS, conc, g_rpm, g_tpm);
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    unsigned conc = argc > 1 ? (unsigned)atoi(argv[1]) : 32;
    unsigned nag = argc > 2 ? (unsigned)atoi(argv[2]) : 1000;
    if (!conc || conc > 1000)
        conc = 32;
    if (nag < 30 || nag > 4000)
        nag = 1000;
    /* not binding, by construction: a request holds its slot LATENCY_MS at least, so conc
     * slots pass at most conc * 60000 / LATENCY_MS requests a minute, each of at most the
     * largest call's tokens */
    g_rpm = conc * (60000u / LATENCY_MS);
    double maxcall = (UNIT_IN + UNIT_OUT) * 4 * (1 + SPREAD) + 1;
    g_tpm = (uint32_t)fmin(1e9, g_rpm * maxcall);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    int rc = 1;

    /* the scheduler's own cost first, on a machine not yet busy with the legs */
    double ovh[ROUNDS];
    for (int i = 0; i < ROUNDS; i++)
        ovh[i] = overhead_round(conc, OVH_CYCLES);
    qsort(ovh, ROUNDS, sizeof ovh[0], cmp_dbl);

    agent *ag = calloc(nag, sizeof *ag);
    leg L = {.nagents = nag, .conc = conc, .ag = ag};
    L.fin = calloc(nag, sizeof *L.fin);
    L.smp = calloc(SAMPLES_MAX, sizeof *L.smp);
    if (!ag || !L.fin || !L.smp) {
        fprintf(stderr, "bench_sched: out of memory\n");
        return 1;
    }
    double planned = plan(ag, nag, conc);
    size_t ncalls = 0;
    for (unsigned i = 0; i < nag; i++) {
        if (!ag[i].ncalls) {
            fprintf(stderr, "bench_sched: out of memory\n");
            return 1;
        }
        ncalls += ag[i].ncalls;
    }

    endpoint ep;
    if (ep_start(&ep, conc) != 0)
        return 1;
    L.port = ep.port;
    setenv(KEY_ENV, KEY, 1);
    char dir[] = "/tmp/bench-sched-XXXXXX", why[1024];
    if (!mkdtemp(dir) || write_conf(dir, ep.port, conc) != 0) {
        fprintf(stderr, "bench_sched: cannot prepare a data dir: %s\n", strerror(errno));
        ep_stop(&ep);
        return 1;
    }
    h_aosd *h = h_start_on(dir, NULL, 90000, why, sizeof why);
    if (!h) {
        fprintf(stderr, "bench_sched: aosd: %s (the dir %s is kept)\n", why, dir);
        ep_stop(&ep);
        return 1;
    }
    g_pids[P_EP] = ep.pid;
    g_pids[P_LLM] = h_child(h, "llm", NULL);
    g_pids[P_AOSD] = h_aosd_pid(h);
    g_pids[P_PG] = h_child(h, "postgres", NULL);
    g_pids[P_SELF] = getpid();
    char url[256];
    aos_control_url(h_data_dir(h), url, sizeof url);
    aos_conn *conns[NCONN] = {0}, *admin = NULL;
    for (int i = 0; i < NCONN; i++)
        if (aos_connect(url, &conns[i], why, sizeof why) != AOS_OK) {
            fprintf(stderr, "bench_sched: connect: %s\n", why);
            goto out;
        }
    if (aos_connect(url, &admin, why, sizeof why) != AOS_OK) {
        fprintf(stderr, "bench_sched: connect: %s\n", why);
        goto out;
    }

    /* ---- scheduled ---- */
    L.sched = 1;
    if (leg_run(&L, conns, admin) != 0)
        goto out;
    figures fs;
    leg_figures(&L, &fs);
    /* the window, from what was measured: from the moment every caller was served for a
     * call it sent after the weights were set (the call before keeps the tag of weight 1),
     * WINDOW_MS long, not past the first caller's last dispatch (nothing waits after it) */
    uint64_t w0 = 0, lastmin = UINT64_MAX, sd = atomic_load(&L.set_done);
    for (unsigned i = 0; i < nag; i++) {
        const agent *a = &ag[i];
        for (size_t k = 0; sd && k < a->ncalls; k++)
            if (a->calls[k].t_end && a->calls[k].t_send + 1 >= sd) {
                if (a->calls[k].t_disp > w0)
                    w0 = a->calls[k].t_disp;
                break;
            }
        uint64_t ld = last_disp(a);
        if (ld < lastmin)
            lastmin = ld;
    }
    uint64_t w1 = w0 + (uint64_t)WINDOW_MS * 1000000u;
    if (w1 > lastmin)
        w1 = lastmin;
    int no_window = !sd || w1 <= w0 + 1000000000u;
    if (no_window)
        fprintf(stderr, "bench_sched: no window to measure jain and weight_error in (from "
                "%.1f s to the first caller's last dispatch at %.1f s)\n", w0 / 1e9,
                lastmin / 1e9);
    double settle = sd && w0 > sd ? (double)(w0 - sd) / 1e9 : 0;
    if (getenv("BENCH_SCHED_DEBUG"))
        fprintf(stderr, "weights set from %.1f s for %llu ms; live window %.1f .. %.1f s; the "
                "first caller's last dispatch %.1f s\n", L.set0 / 1e9,
                (unsigned long long)L.set_ms, L.win0 / 1e9, L.win1 / 1e9, lastmin / 1e9);
    if (getenv("BENCH_SCHED_DEBUG"))
        for (unsigned g = 0; g < 3; g++)
            for (unsigned cl = 0; cl < 3; cl++) {
                double mx = 0, sum = 0;
                unsigned n = 0;
                for (unsigned i = 0; i < nag; i++) {
                    const agent *a = &ag[i];
                    if (a->group != g || a->cls != cl)
                        continue;
                    for (size_t k = 0; sd && k < a->ncalls; k++)
                        if (a->calls[k].t_end && a->calls[k].t_send + 1 >= sd) {
                            double d = ((double)a->calls[k].t_disp - (double)sd) / 1e9;
                            mx = d > mx ? d : mx;
                            sum += d;
                            n++;
                            break;
                        }
                }
                fprintf(stderr, "group %u class %u: first served after the set %.1f s on "
                        "average, %.1f s at most (%u callers)\n", g, cl, n ? sum / n : 0.0,
                        mx, n);
            }
    double jg[3] = {0}, shares[3] = {0}, j = 0, we = 100;
    if (w1 > w0) {
        j = 1;
        for (unsigned g = 0; g < 3; g++) {
            jg[g] = jain(&L, g, w0, w1);
            j = jg[g] < j ? jg[g] : j;
        }
        we = weight_error(&L, w0, w1, shares);
    }
    uint64_t set_ms = L.set_ms, set0 = L.set0;
    char cpu_s[256], cpu_b[256];
    cpu_line(&L.c0, &L.c1, cpu_s, sizeof cpu_s);
    aos_close(admin);
    admin = NULL;
    for (int i = 0; i < NCONN; i++) {
        aos_close(conns[i]);
        conns[i] = NULL;
    }
    h_stop(h);
    h = NULL; /* aosd's CPU is not the baseline's to share */
    g_pids[P_LLM] = g_pids[P_AOSD] = g_pids[P_PG] = 0;

    /* ---- unscheduled ---- */
    L.sched = 0;
    if (leg_run(&L, NULL, NULL) != 0)
        goto out;
    figures fb;
    leg_figures(&L, &fb);
    cpu_line(&L.c0, &L.c1, cpu_b, sizeof cpu_b);

    printf("utilisation: %.1f\n", fs.util);
    printf("jain: %.4f\n", j);
    printf("weight_error: %.1f\n", we);
    printf("speedup: %.2f%s\n", fs.wall_s > 0 ? fb.wall_s / fs.wall_s : 0.0,
           fb.unfinished ? " (at least: the unscheduled leg was stopped unfinished)" : "");
    printf("baseline_failed: %llu\n", (unsigned long long)fb.failed);
    printf("overhead_us: %.3f\n", ovh[ROUNDS / 2]);
    /* what the figures are made of */
    printf("agents: %u\n", nag);
    printf("calls: %zu\n", ncalls);
    printf("concurrency: %u\n", conc);
    printf("latency_ms: %u\n", LATENCY_MS);
    printf("gap_ms: %u\n", GAP_MS);
    printf("rpm: %u\n", g_rpm);
    printf("tpm: %u\n", g_tpm);
    printf("planned_busy_s: %.1f\n", planned);
    printf("sched_wall_s: %.1f\n", fs.wall_s);
    printf("sched_util_until_s: %.1f\n", fs.util_end_s);
    printf("sched_429s: %llu\n", (unsigned long long)fs.refused);
    printf("sched_failed: %llu\n", (unsigned long long)fs.failed);
    printf("sched_unfinished: %llu\n", (unsigned long long)fs.unfinished);
    printf("sched_peak_in_flight: %u\n", fs.peak);
    printf("sched_cpu_pct: %s\n", cpu_s);
    printf("weight_set_at_s: %.1f\n", set0 / 1e9);
    printf("weight_set_ms: %llu\n", (unsigned long long)set_ms);
    printf("weight_settle_s: %.1f\n", settle);
    printf("window_s: %.1f .. %.1f\n", w0 / 1e9, w1 / 1e9);
    printf("jain_groups: %.4f %.4f %.4f\n", jg[0], jg[1], jg[2]);
    printf("weight_shares: %.4f %.4f %.4f\n", shares[0], shares[1], shares[2]);
    printf("baseline_wall_s: %.1f\n", fb.wall_s);
    printf("baseline_utilisation: %.1f\n", fb.util);
    printf("baseline_429s: %llu\n", (unsigned long long)fb.refused);
    printf("baseline_unfinished: %llu\n", (unsigned long long)fb.unfinished);
    printf("baseline_cpu_pct: %s\n", cpu_b);
    printf("overhead_us_min: %.3f\n", ovh[0]);
    printf("overhead_us_max: %.3f\n", ovh[ROUNDS - 1]);
    rc = fs.unfinished || fb.unfinished || fs.failed || no_window ? 1 : 0;
out:
    if (admin)
        aos_close(admin);
    for (int i = 0; i < NCONN; i++)
        if (conns[i])
            aos_close(conns[i]);
    if (h)
        h_stop(h);
    ep_stop(&ep);
    for (unsigned i = 0; i < nag; i++)
        free(ag[i].calls);
    free(ag);
    free(L.fin);
    free(L.smp);
    curl_global_cleanup();
    return rc;
}
