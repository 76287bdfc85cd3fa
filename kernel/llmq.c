/* The LLM queue: describes each model call for the scheduler (provider, tokens, price),
 * hands admitted calls back to the router, keeps the admin's settings in DATA/sched.state. */
#include "llmq.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos.pb-c.h"
#include "aos/llmsize.h"
#include "aos/log.h"
#include "fsafe.h"
#include "scheduler.h"

#define STATE_FILE "sched.state"
#define STATE_MAX (16u << 20)
#define SAVE_EVERY_MS 5000u
#define PUMP_BATCH 64u
/* Output tokens a call may take when it names no max_tokens: the providers' defaults
 * (Anthropic needs one; aos-llm sends 4096), the sim's own, and a guess for the rest
 * that the reply's usage corrects. */
#define OUT_ANTHROPIC 4096u
#define OUT_SIM 256u
#define OUT_OTHER 1024u

enum { Q_QUEUED = 1, Q_FLIGHT, Q_ENDED };

/* The router's handle on one call: freed only by llmq_done (its final answer, unless it
 * went back in the queue) or by an llmq_cancel that returns 1, so the router's pointer
 * never dangles. Q_ENDED: the timer failed it (the router's answer comes to llmq_done).
 * Everything in it is under q.mu. */
typedef struct qcall {
    sched_item *it;
    void *call;
    int state;
    int embed;
    int prov;
} qcall;

static struct {
    pthread_mutex_t mu;
    pthread_mutex_t save_mu;       /* one state file write at a time, taken without mu */
    pthread_cond_t cv;
    sched *s;
    const Aos__Llm__Config *cfg;
    llmq_hooks h;
    int dirfd;
    pthread_t th;
    int started, stop, dirty;
    uint64_t sleep_until;          /* µs: when the timer wakes by itself (0: it is awake) */
    uint64_t resent[SCHED_PROVIDERS_MAX];
    uint64_t save_gen, written_gen; /* snapshots taken (mu), and the newest written (save_mu) */
} q = {.mu = PTHREAD_MUTEX_INITIALIZER, .save_mu = PTHREAD_MUTEX_INITIALIZER, .dirfd = -1}; /* cv: llmq_open, on the monotonic clock */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint32_t utc_day(void) { return (uint32_t)(time(NULL) / 86400); }

/* ---- describing a call --------------------------------------------------------------- */

static int bin_is(ProtobufCBinaryData b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && !memcmp(b.data, s, n);
}

/* As aos-llm resolves it (servers/llm/engine.c resolve): "provider/model", a model any
 * provider lists (the first in the file), or the default. -1: none (aos-llm says why). */
static int resolve(ProtobufCBinaryData want, int embedding, const Aos__Llm__Model **mp)
{
    ProtobufCBinaryData name = want.len ? want : q.cfg->default_model;
    const uint8_t *slash = name.len ? memchr(name.data, '/', name.len) : NULL;
    for (size_t i = 0; i < q.cfg->n_providers && i < SCHED_PROVIDERS_MAX; i++) {
        const Aos__Llm__Provider *p = q.cfg->providers[i];
        ProtobufCBinaryData mn = name;
        if (slash) {
            size_t pl = (size_t)(slash - name.data);
            if (p->name.len != pl || memcmp(p->name.data, name.data, pl))
                continue;
            mn = (ProtobufCBinaryData){name.len - pl - 1, (uint8_t *)slash + 1};
        }
        for (size_t k = 0; k < p->n_models; k++) {
            const Aos__Llm__Model *m = p->models[k];
            if (m->name.len == mn.len && !memcmp(m->name.data, mn.data, mn.len) &&
                !m->embedding == !embedding) {
                *mp = m;
                return (int)i;
            }
        }
    }
    return -1;
}

/* Tokens, estimated as a quarter of the bytes: the providers' own rule of thumb, and the
 * sim's count; the reply's usage replaces it. */
static int describe(const char *method, const uint8_t *pl, size_t len, sched_job *j, int *embed)
{
    const Aos__Llm__Model *m = NULL;
    int p = -1;
    uint64_t bytes = 0;
    if (!strcmp(method, "llm.chat")) {
        Aos__Llm__ChatRequest *r = aos__llm__chat_request__unpack(NULL, len, pl);
        if (!r)
            return -1;
        if ((p = resolve(r->model, 0, &m)) >= 0) {
            for (size_t i = 0; i < r->n_messages; i++)
                bytes += aos_llm_msg_bytes(r->messages[i]);
            for (size_t i = 0; i < r->n_tools; i++)
                bytes += aos_llm_tool_bytes(r->tools[i]);
            const Aos__Llm__Provider *pv = q.cfg->providers[p];
            j->max_out = r->max_tokens             ? r->max_tokens
                         : bin_is(pv->kind, "anthropic") ? OUT_ANTHROPIC
                         : bin_is(pv->kind, "sim")       ? OUT_SIM
                                                         : OUT_OTHER;
        }
        aos__llm__chat_request__free_unpacked(r, NULL);
        *embed = 0;
    } else if (!strcmp(method, "llm.embed")) {
        Aos__Llm__EmbedRequest *r = aos__llm__embed_request__unpack(NULL, len, pl);
        if (!r)
            return -1;
        if ((p = resolve(r->model, 1, &m)) >= 0)
            for (size_t i = 0; i < r->n_inputs; i++)
                bytes += r->inputs[i].len;
        aos__llm__embed_request__free_unpacked(r, NULL);
        j->max_out = 0;
        *embed = 1;
    }
    if (p < 0)
        return -1;
    j->provider = p;
    j->in_tokens = aos_llm_tokens(bytes);
    j->price = (sched_price){m->price_input, m->price_output};
    return 0;
}

/* ---- the state file -------------------------------------------------------------------- */

static void hex(const char *s, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (; *s; s++) {
        *out++ = d[(uint8_t)*s >> 4];
        *out++ = d[(uint8_t)*s & 15];
    }
    *out = 0;
}

static int unhex(const char *h, char *out, size_t cap)
{
    size_t n = strlen(h);
    if (n % 2 || n / 2 >= cap)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        unsigned v;
        if (sscanf(h + i, "%2x", &v) != 1)
            return -1;
        *out++ = (char)v;
    }
    *out = 0;
    return 0;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int bad;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0 || b->bad) {
            b->bad = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *np = nc <= STATE_MAX ? realloc(b->p, nc) : NULL;
        if (!np) {
            b->bad = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

static int save_agent(void *arg, const sched_agent_info *a)
{
    sbuf *b = arg;
    char h[2 * SCHED_AGENT_MAX + 1];
    hex(a->agent, h);
    /* "-" for the id "" */
    sb_add(b, "agent %s %.17g %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
           h[0] ? h : "-", a->cfg.weight, a->cfg.cls, a->cfg.token_budget,
           a->cfg.cost_budget_micro_usd, a->tokens, a->cost_micro_usd);
    return b->bad;
}

/* q.mu held. Written whole to a new file and renamed over: a crash leaves the old one. */
/* Called with q.mu held; the state is copied under it but written with it released: a
 * write and its fsync take milliseconds, and every dispatch and reply waits on q.mu. */
static void save(void)
{
    if (q.dirfd < 0 || !q.dirty)
        return;
    sbuf b = {0};
    sb_add(&b, "aos-sched 1\n");
    uint32_t day = utc_day();
    for (size_t i = 0; i < sched_nproviders(q.s); i++) {
        sched_prov_info pi;
        sched_provider_info(q.s, (int)i, now_us(), day, &pi);
        char h[2 * 64 + 1];
        hex(pi.name, h);
        sb_add(&b, "spend %s %u %" PRIu64 "\n", h, day, pi.spent_today_micro_usd);
    }
    sched_each_agent(q.s, save_agent, &b);
    q.dirty = 0; /* a change while the lock is away sets it again */
    uint64_t gen = ++q.save_gen;
    pthread_mutex_unlock(&q.mu);
    char why[256];
    int failed = 1;
    /* the timer and an admin's set may both save: the newer snapshot must land last */
    pthread_mutex_lock(&q.save_mu);
    if (gen < q.written_gen)
        failed = 0;
    else if (b.bad)
        aos_error("sched: the state file would pass %u MiB; not written", STATE_MAX >> 20);
    else if (fs_write(q.dirfd, STATE_FILE, b.p, b.len, 0600, why, sizeof why) != AOS_OK)
        aos_error("sched: %s", why);
    else
        failed = 0, q.written_gen = gen;
    pthread_mutex_unlock(&q.save_mu);
    free(b.p);
    pthread_mutex_lock(&q.mu);
    if (failed)
        q.dirty = 1;
}

static void load(void)
{
    char why[256];
    int fd = fs_open(q.dirfd, STATE_FILE, O_RDONLY, 0, why, sizeof why);
    if (fd < 0) {
        if (errno != ENOENT)
            aos_error("sched: %s", why);
        return;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return;
    }
    char line[512], a[2 * SCHED_AGENT_MAX + 2], id[SCHED_AGENT_MAX];
    unsigned n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        sched_agent_cfg c;
        uint64_t tok, cost, spent;
        unsigned day;
        n++;
        if (n == 1) {
            if (strcmp(line, "aos-sched 1\n")) {
                aos_error("sched: %s is not a state file of this version; ignored",
                          STATE_FILE);
                break;
            }
            continue;
        }
        if (sscanf(line, "agent %129s %lf %d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
                   a, &c.weight, &c.cls, &c.token_budget, &c.cost_budget_micro_usd, &tok,
                   &cost) == 7 &&
            (!strcmp(a, "-") ? (id[0] = 0, 1) : !unhex(a, id, sizeof id))) {
            if (sched_set_agent(q.s, id, &c, why, sizeof why) == AOS_OK)
                sched_set_usage(q.s, id, tok, cost);
            else
                bad++;
        } else if (sscanf(line, "spend %129s %u %" SCNu64, a, &day, &spent) == 3 &&
                   !unhex(a, id, sizeof id)) {
            sched_set_spend(q.s, sched_find_provider(q.s, id), day, spent);
        } else {
            bad++;
        }
    }
    fclose(f);
    if (bad)
        aos_error("sched: %u lines of %s could not be read; skipped", bad, STATE_FILE);
}

/* ---- the queue --------------------------------------------------------------------------- */

/* Wake the timer only when it would sleep past the next thing to do: a signal per call
 * costs a futex wake of another thread, which is most of a call's cost in aosd. q.mu held. */
static void wake_timer(uint64_t now)
{
    uint64_t w = sched_wake_at(q.s, now);
    if (w && q.sleep_until && w < q.sleep_until)
        pthread_cond_signal(&q.cv);
}

/* Hands every call that may start now to the router. */
static void pump(void)
{
    for (;;) {
        void *go[PUMP_BATCH];
        size_t n = 0;
        pthread_mutex_lock(&q.mu);
        uint64_t now = now_us();
        sched_item *it;
        while (n < PUMP_BATCH && (it = sched_next(q.s, now))) {
            qcall *qc = sched_item_arg(it);
            qc->state = Q_FLIGHT;
            go[n++] = qc->call;
        }
        wake_timer(now);
        pthread_mutex_unlock(&q.mu);
        for (size_t i = 0; i < n; i++)
            q.h.go(go[i]);
        if (n < PUMP_BATCH)
            return;
    }
}

static void *timer(void *arg)
{
    (void)arg;
    uint64_t last_save = now_us();
    pthread_mutex_lock(&q.mu);
    while (!q.stop) {
        uint64_t now = now_us();
        sched_item *it;
        if ((it = sched_expired(q.s, now))) {
            qcall *qc = sched_item_arg(it);
            char why[AOS_ERRMSG_MAX];
            sched_prov_info pi;
            sched_provider_info(q.s, qc->prov, now, utc_day(), &pi);
            snprintf(why, sizeof why, "the call waited %" PRIu64 " ms in aosd's LLM queue and "
                     "could not start before its deadline (provider %s: %u in flight, %u "
                     "queued%s)", sched_item_waited(it, now) / 1000, pi.name, pi.in_flight,
                     pi.queued[0] + pi.queued[1], pi.held_ms ? ", held by a Retry-After" : "");
            sched_drop(q.s, it);
            qc->it = NULL;
            qc->state = Q_ENDED;
            void *call = qc->call;
            pthread_mutex_unlock(&q.mu);
            q.h.fail(call, AOS_ERR_TIMEOUT, why);
            pthread_mutex_lock(&q.mu);
            continue;
        }
        if (now - last_save >= SAVE_EVERY_MS * 1000ull) {
            save();
            last_save = now;
        }
        uint64_t wake = sched_wake_at(q.s, now);
        if (wake && wake <= now) {
            pthread_mutex_unlock(&q.mu);
            pump();
            pthread_mutex_lock(&q.mu);
            continue;
        }
        uint64_t until = wake && wake - now < SAVE_EVERY_MS * 1000ull
                             ? wake
                             : now + SAVE_EVERY_MS * 1000ull;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (until - now) * 1000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        q.sleep_until = until;
        pthread_cond_timedwait(&q.cv, &q.mu, &ts);
        q.sleep_until = 0;
        wake = sched_wake_at(q.s, now_us());
        if (wake && wake <= now_us()) {
            pthread_mutex_unlock(&q.mu);
            pump();
            pthread_mutex_lock(&q.mu);
        }
    }
    save();
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

aos_err llmq_open(const Aos__Llm__Config *cfg, int data_dir_fd, const llmq_hooks *hooks,
                  char *why, size_t whylen)
{
    q.cfg = cfg;
    q.h = *hooks;
    q.dirfd = data_dir_fd;
    /* the timer's waits are deadlines on the monotonic clock, as the scheduler's times */
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
        pthread_cond_init(&q.cv, &ca)) {
        snprintf(why, whylen, "sched: cannot make the timer's condition variable");
        return AOS_ERR_INTERNAL;
    }
    pthread_condattr_destroy(&ca);
    if (!(q.s = sched_new())) {
        snprintf(why, whylen, "no memory for the LLM scheduler");
        return AOS_ERR_NOMEM;
    }
    for (size_t i = 0; i < cfg->n_providers && i < SCHED_PROVIDERS_MAX; i++) {
        const Aos__Llm__Provider *p = cfg->providers[i];
        const Aos__Llm__Limits *l = p->limits;
        sched_limits sl = {0};
        if (l) {
            sl = (sched_limits){l->max_concurrency, l->requests_per_min, l->tokens_per_min,
                                l->input_tokens_per_min, l->output_tokens_per_min,
                                (uint64_t)llround(l->daily_spend_usd * 1e6)};
        }
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)p->name.len, (const char *)p->name.data);
        if (sched_add_provider(q.s, name, &sl) != (int)i) {
            snprintf(why, whylen, "sched: provider '%s' cannot be added", name);
            return AOS_ERR_USAGE;
        }
    }
    /* settings written by this build's llmq_close, or its timer every few seconds */
    pthread_mutex_lock(&q.mu);
    if (q.dirfd >= 0)
        load();
    pthread_mutex_unlock(&q.mu);
    int rv = pthread_create(&q.th, NULL, timer, NULL);
    if (rv) {
        snprintf(why, whylen, "sched: cannot start its timer: %s", strerror(rv));
        return AOS_ERR_INTERNAL;
    }
    q.started = 1;
    return AOS_OK;
}

void llmq_close(void)
{
    if (!q.started)
        return;
    pthread_mutex_lock(&q.mu);
    q.stop = 1;
    q.dirty = 1;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
    pthread_join(q.th, NULL);
    q.started = 0;
    /* the scheduler and its items stay: calls still in flight may answer until exit */
}

aos_err llmq_submit(void *call, const char *method, const char *agent, const uint8_t *payload,
                    size_t len, uint64_t deadline_ms, llmq_ticket **slot, int *queued,
                    char *why, size_t whylen)
{
    *queued = 0;
    sched_job j = {.agent = agent, .arg = NULL};
    int embed = 0;
    if (!q.s || describe(method, payload, len, &j, &embed) != 0)
        return AOS_OK; /* not ours to judge: aos-llm answers a bad payload or model */
    qcall *qc = calloc(1, sizeof *qc);
    if (!qc) {
        snprintf(why, whylen, "aosd is out of memory");
        return AOS_ERR_NOMEM;
    }
    qc->call = call;
    qc->embed = embed;
    qc->prov = j.provider;
    qc->state = Q_QUEUED;
    j.arg = qc;
    /* a little before the caller's own deadline, so the TIMEOUT reaches it in time */
    uint64_t now = aos_mono_ms();
    if (deadline_ms) {
        uint64_t margin = deadline_ms > now ? (deadline_ms - now) / 10 : 0;
        j.deadline = (deadline_ms - (margin > 200 ? 200 : margin)) * 1000u;
    }
    pthread_mutex_lock(&q.mu);
    sched_item *it = NULL;
    aos_err rc = sched_submit(q.s, &j, now_us(), utc_day(), &it, why, whylen);
    if (rc == AOS_OK) {
        qc->it = it;
        *slot = (llmq_ticket *)qc; /* before go can run: the router's answer finds it */
        *queued = 1;
    }
    pthread_mutex_unlock(&q.mu);
    if (rc != AOS_OK) {
        free(qc);
        return rc;
    }
    pump();
    return AOS_OK;
}

static void usage_of(const qcall *qc, nng_msg *reply, int *status, uint64_t *retry,
                     sched_usage *u, int *has_u, int *resent)
{
    aos_env env;
    char why[64];
    *has_u = 0;
    *resent = 0;
    if (!reply || aos_env_decode(nng_msg_body(reply), nng_msg_len(reply), &env, why,
                                 sizeof why) != AOS_OK)
        return;
    *status = env.status;
    *retry = env.retry_after_ms;
    const Aos__Llm__Usage *us = NULL;
    Aos__Llm__ChatReply *cr = NULL;
    Aos__Llm__EmbedReply *er = NULL;
    if (env.status == AOS_OK && qc->embed)
        us = (er = aos__llm__embed_reply__unpack(NULL, env.payload_len, env.payload))
                 ? er->usage
                 : NULL;
    else if (env.status == AOS_OK)
        us = (cr = aos__llm__chat_reply__unpack(NULL, env.payload_len, env.payload))
                 ? cr->usage
                 : NULL;
    if (cr && cr->replayed) /* answered from aos-llm's books: the provider was not called */
        us = NULL;
    if (er && er->replayed)
        us = NULL;
    if (us) {
        u->in_tokens = us->input_tokens + us->cache_read_tokens + us->cache_write_tokens;
        u->out_tokens = us->output_tokens;
        u->slot_us = cr ? cr->slot_us : er->slot_us;
        u->slot_wait_us = cr ? cr->slot_wait_us : er->slot_wait_us;
        *has_u = 1;
    }
    if (cr) {
        u->cost_micro_usd = cr->cost_micro_usd;
        *resent = cr->resent;
        aos__llm__chat_reply__free_unpacked(cr, NULL);
    }
    if (er)
        aos__llm__embed_reply__free_unpacked(er, NULL);
    aos_env_clear(&env);
}

int llmq_done(llmq_ticket **slot, nng_msg *reply, int status, int streamed)
{
    pthread_mutex_lock(&q.mu);
    qcall *qc = (qcall *)*slot;
    if (!qc) {
        pthread_mutex_unlock(&q.mu);
        return 0;
    }
    if (qc->state != Q_FLIGHT) { /* failed by the timer, or answered while queued */
        if (qc->state == Q_QUEUED)
            sched_drop(q.s, qc->it);
        free(qc);
        *slot = NULL;
        pthread_mutex_unlock(&q.mu);
        return 0;
    }
    /* in flight, only this function moves it on: it stays while the lock is away */
    pthread_mutex_unlock(&q.mu);
    uint64_t retry = 0;
    sched_usage u = {0};
    int has_u = 0, resent = 0;
    usage_of(qc, reply, &status, &retry, &u, &has_u, &resent);
    pthread_mutex_lock(&q.mu);
    int limited = status == AOS_ERR_RATE_LIMITED && !streamed;
    if (resent && qc->prov < (int)SCHED_PROVIDERS_MAX)
        q.resent[qc->prov]++;
    int again = sched_done(q.s, qc->it, now_us(), utc_day(), limited, retry,
                           has_u ? &u : NULL);
    q.dirty = 1;
    if (again) {
        qc->state = Q_QUEUED;
    } else {
        free(qc);
        *slot = NULL;
    }
    wake_timer(now_us());
    pthread_mutex_unlock(&q.mu);
    pump(); /* a slot is free, or the 429 held the provider (the timer wakes then) */
    return again;
}

int llmq_cancel(llmq_ticket **slot)
{
    pthread_mutex_lock(&q.mu);
    qcall *qc = (qcall *)*slot;
    int was = qc && qc->state == Q_QUEUED;
    if (was) {
        sched_drop(q.s, qc->it);
        free(qc);
        *slot = NULL;
    }
    pthread_mutex_unlock(&q.mu);
    return was;
}

/* ---- kernel.sched, kernel.sched.set --------------------------------------------------- */

typedef struct agents_out {
    Aos__SchedAgent **v;
    size_t n, cap;
    uint64_t total;
    int bad;
} agents_out;

static int add_agent(void *arg, const sched_agent_info *a)
{
    agents_out *o = arg;
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        Aos__SchedAgent **nv = realloc(o->v, nc * sizeof *nv);
        if (!nv)
            return o->bad = 1;
        o->v = nv;
        o->cap = nc;
    }
    Aos__SchedAgent *m = malloc(sizeof *m);
    char *id = strdup(a->agent);
    if (!m || !id) {
        free(m);
        free(id);
        return o->bad = 1;
    }
    aos__sched_agent__init(m);
    m->agent = id;
    m->weight = a->cfg.weight;
    m->priority = a->cfg.cls == SCHED_CLS_BATCH ? "batch" : "interactive";
    m->token_budget = a->cfg.token_budget;
    m->cost_budget_micro_usd = a->cfg.cost_budget_micro_usd;
    m->tokens = a->tokens;
    m->cost_micro_usd = a->cost_micro_usd;
    m->requests = a->requests;
    m->refused = a->refused;
    m->queued = a->queued;
    m->in_flight = a->in_flight;
    m->wait_p50_us = a->wait_p50_us;
    m->wait_p99_us = a->wait_p99_us;
    o->total += a->tokens;
    o->v[o->n++] = m;
    return 0;
}

aos_err llmq_status(uint8_t **out, size_t *len, char *why, size_t whylen)
{
    Aos__SchedReply r = AOS__SCHED_REPLY__INIT;
    Aos__SchedProvider pv[SCHED_PROVIDERS_MAX], *pp[SCHED_PROVIDERS_MAX];
    agents_out ag = {0};
    aos_err rc = AOS_OK;
    if (!q.s) {
        snprintf(why, whylen, "the LLM scheduler is not running");
        return AOS_ERR_UNAVAILABLE;
    }
    pthread_mutex_lock(&q.mu);
    uint64_t now = now_us();
    uint32_t day = utc_day();
    size_t np = sched_nproviders(q.s);
    for (size_t i = 0; i < np; i++) {
        sched_prov_info pi;
        sched_provider_info(q.s, (int)i, now, day, &pi);
        Aos__SchedProvider *p = &pv[i];
        aos__sched_provider__init(p);
        p->name = (char *)pi.name; /* the scheduler's, read before the lock goes */
        p->max_concurrency = pi.cap.max_concurrency;
        p->requests_per_min = pi.cap.requests_per_min;
        p->tokens_per_min = pi.cap.tokens_per_min;
        p->input_tokens_per_min = pi.cap.input_tokens_per_min;
        p->output_tokens_per_min = pi.cap.output_tokens_per_min;
        p->eff_concurrency = pi.eff_concurrency;
        p->rate_factor = pi.rate_factor;
        p->pipeline = pi.pipeline;
        p->in_flight = pi.in_flight;
        p->queued_interactive = pi.queued[0];
        p->queued_batch = pi.queued[1];
        p->admitted = pi.admitted;
        p->completed = pi.completed;
        p->rate_limited = pi.rate_limited;
        p->expired = pi.expired;
        p->refused = pi.refused;
        p->held_ms = pi.held_ms;
        p->window_requests = pi.window_requests;
        p->window_tokens = pi.window_tokens;
        p->spent_today_micro_usd = pi.spent_today_micro_usd;
        p->daily_spend_micro_usd = pi.cap.daily_spend_micro_usd;
        p->resent = q.resent[i];
        pp[i] = p;
    }
    sched_each_agent(q.s, add_agent, &ag);
    r.n_providers = np;
    r.providers = pp;
    if (ag.bad) {
        rc = AOS_ERR_NOMEM;
        snprintf(why, whylen, "aosd is out of memory");
    } else {
        for (size_t i = 0; i < ag.n; i++)
            ag.v[i]->share = ag.total ? (double)ag.v[i]->tokens / (double)ag.total : 0;
        r.n_agents = ag.n;
        r.agents = ag.v;
        *len = aos__sched_reply__get_packed_size(&r);
        if (*len > AOS_MSG_MAX - 4096) {
            rc = AOS_ERR_TOO_BIG;
            snprintf(why, whylen, "the scheduler's state is %zu bytes, more than a reply takes",
                     *len);
        } else if (!(*out = malloc(*len ? *len : 1))) {
            rc = AOS_ERR_NOMEM;
        } else {
            aos__sched_reply__pack(&r, *out);
        }
    }
    pthread_mutex_unlock(&q.mu);
    for (size_t i = 0; i < ag.n; i++) {
        free(ag.v[i]->agent);
        free(ag.v[i]);
    }
    free(ag.v);
    return rc;
}

aos_err llmq_set(const uint8_t *payload, size_t len, char *why, size_t whylen)
{
    Aos__SchedSetRequest *r = aos__sched_set_request__unpack(NULL, len, payload);
    aos_err rc = AOS_OK;
    if (!r || !aos_pb_strings_valid(&r->base)) {
        snprintf(why, whylen, "kernel.sched.set: payload is not a SchedSetRequest");
        rc = AOS_ERR_PROTO;
        goto out;
    }
    if (!aos_agent_id_valid(r->agent, strlen(r->agent))) {
        snprintf(why, whylen, "kernel.sched.set: '%.64s' is not an agent id "
                 "([A-Za-z0-9_.:-]{1,64})", r->agent);
        rc = AOS_ERR_USAGE;
        goto out;
    }
    if (r->priority[0] && strcmp(r->priority, "interactive") && strcmp(r->priority, "batch")) {
        snprintf(why, whylen, "kernel.sched.set: priority is interactive or batch, not '%.32s'",
                 r->priority);
        rc = AOS_ERR_USAGE;
        goto out;
    }
    if (!q.s) {
        snprintf(why, whylen, "the LLM scheduler is not running");
        rc = AOS_ERR_UNAVAILABLE;
        goto out;
    }
    pthread_mutex_lock(&q.mu);
    /* a hash lookup: the walk over every agent (sorting their waits) held the queue's
     * lock for milliseconds per set and stalled dispatch while an admin set hundreds */
    sched_agent_cfg c = {.weight = 1, .cls = SCHED_CLS_INTERACTIVE};
    sched_get_agent(q.s, r->agent, &c);
    if (r->has_weight)
        c.weight = r->weight;
    if (r->priority[0])
        c.cls = strcmp(r->priority, "batch") ? SCHED_CLS_INTERACTIVE : SCHED_CLS_BATCH;
    if (r->has_token_budget)
        c.token_budget = r->token_budget;
    if (r->has_cost_budget)
        c.cost_budget_micro_usd = r->cost_budget_micro_usd;
    rc = sched_set_agent(q.s, r->agent, &c, why, whylen);
    if (rc == AOS_OK && r->reset_usage)
        sched_set_usage(q.s, r->agent, 0, 0);
    if (rc == AOS_OK) {
        q.dirty = 1;
        save(); /* an admin's decision is kept at once */
    }
    pthread_mutex_unlock(&q.mu);
    if (rc == AOS_OK)
        pump(); /* a raised budget may let nothing new in, but a weight reorders nothing
                 * queued: only the next calls' tags follow it */
out:
    if (r)
        aos__sched_set_request__free_unpacked(r, NULL);
    return rc;
}

aos_err llmq_agent_set(const char *agent, double weight, int batch, uint64_t token_budget,
                       uint64_t cost_budget_micro_usd, char *why, size_t whylen)
{
    if (!q.s) {
        snprintf(why, whylen, "the LLM scheduler is not running");
        return AOS_ERR_UNAVAILABLE;
    }
    sched_agent_cfg c = {.weight = weight, .cls = batch ? SCHED_CLS_BATCH : SCHED_CLS_INTERACTIVE,
                         .token_budget = token_budget,
                         .cost_budget_micro_usd = cost_budget_micro_usd};
    pthread_mutex_lock(&q.mu);
    aos_err rc = sched_set_agent(q.s, agent, &c, why, whylen);
    if (rc == AOS_OK)
        q.dirty = 1; /* the manifest is in PostgreSQL already: the next save keeps it */
    pthread_mutex_unlock(&q.mu);
    return rc;
}

int llmq_agent_used(const char *agent, uint64_t *tokens, uint64_t *cost_micro_usd,
                    uint64_t *wait_total_us)
{
    *tokens = *cost_micro_usd = *wait_total_us = 0;
    if (!q.s)
        return 0;
    pthread_mutex_lock(&q.mu);
    int found = sched_agent_used(q.s, agent, tokens, cost_micro_usd, wait_total_us);
    pthread_mutex_unlock(&q.mu);
    return found;
}
