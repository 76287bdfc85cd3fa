/* The LLM scheduler's state machine: per provider two start-time fair queues (one per class)
 * in binary heaps, a deadline heap, sliding rate windows, AIMD limits and budgets. */
#include "scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_BUCKETS 16384u
#define US 1000000u
#define DECREASE 0.7              /* AIMD: a 429 keeps 70 % of the limit ... */
#define DECREASE_EVERY_US 1000000u /* ... at most once a second: one burst, one cut */
#define FACTOR_MIN 0.05
#define FACTOR_STEP 0.01          /* 100 successes back to the configured rates */
#define RETRY_DEFAULT_MS 1000u
#define HEAL_US (60u * 1000000u)   /* a minute without a 429: the configured limits again */
#define PIPE_MAX 2.0              /* the pipeline holds at most twice the provider's slots */
#define PIPE_ALPHA 0.05           /* each call's sample moves the pipeline this much */

enum { ST_QUEUED = 1, ST_FLIGHT = 2, ST_OUT = 3 };

typedef struct agent {
    char id[SCHED_AGENT_MAX];
    sched_agent_cfg cfg;
    uint64_t tokens, cost, requests, refused;
    uint64_t res_tokens, res_cost;      /* what its queued and in-flight calls may take */
    uint32_t queued, in_flight;
    double *ftag;                       /* per provider: the last finish tag */
    size_t nftag;
    uint32_t waits[SCHED_WAIT_SAMPLES]; /* µs, a ring */
    uint32_t nwaits;
    uint64_t wait_total_us;   /* every admission's queue wait, summed */
    struct agent *hnext;
} agent;

struct sched_item {
    agent *ag;
    int prov, cls, state;
    double stag;
    uint64_t seq;
    uint64_t cost, in, out;             /* the estimate, tokens */
    uint64_t money;                     /* the estimate, micro-USD */
    uint64_t deadline, queued_at, started_at;
    uint64_t bsec;                      /* the window bucket it was counted in (+1; 0: none) */
    size_t hidx[2];
    void *arg;
    struct sched_item *aprev, *anext;   /* every item, for sched_free */
};

typedef struct heap {
    sched_item **a;
    size_t n, cap;
    int which;                          /* 0: by (start tag, seq); 1: by deadline */
} heap;

typedef struct bucket {
    uint64_t sec;                       /* +1: 0 is an empty bucket */
    uint64_t req, tok, in, out;
} bucket;

typedef struct prov {
    char name[64];
    sched_limits cap;
    double eff;                         /* AIMD concurrency; 0: unlimited */
    double pipe;                        /* the pipeline: calls held here per provider slot */
    double factor;
    uint32_t in_flight;
    heap q[2];
    double vtime[2];
    uint64_t held_until, last_cut;
    bucket b[SCHED_WINDOW_S];
    uint64_t admitted, completed, rate_limited, expired, refused;
    uint32_t day;
    uint64_t spent, res_spend;
} prov;

struct sched {
    prov p[SCHED_PROVIDERS_MAX];
    size_t np;
    heap dl;
    agent *ab[AGENT_BUCKETS];
    size_t nagents;
    size_t queued;
    uint64_t seq;
    sched_item *all;
};

/* ---- heaps --------------------------------------------------------------------------- */

static int before(const heap *h, const sched_item *x, const sched_item *y)
{
    if (h->which)
        return x->deadline < y->deadline;
    return x->stag < y->stag || (x->stag == y->stag && x->seq < y->seq);
}

static void put(heap *h, size_t i, sched_item *it)
{
    h->a[i] = it;
    it->hidx[h->which] = i;
}

static void sift_up(heap *h, size_t i)
{
    sched_item *it = h->a[i];
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!before(h, it, h->a[up]))
            break;
        put(h, i, h->a[up]);
        i = up;
    }
    put(h, i, it);
}

static void sift_down(heap *h, size_t i)
{
    sched_item *it = h->a[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const sched_item *best = it;
        if (l < h->n && before(h, h->a[l], best))
            best = h->a[m = l];
        if (l + 1 < h->n && before(h, h->a[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        put(h, i, h->a[m]);
        i = m;
    }
    put(h, i, it);
}

static int heap_push(heap *h, sched_item *it)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        sched_item **na = realloc(h->a, nc * sizeof *na);
        if (!na)
            return -1;
        h->a = na;
        h->cap = nc;
    }
    h->a[h->n++] = it;
    sift_up(h, h->n - 1);
    return 0;
}

static void heap_remove(heap *h, sched_item *it)
{
    size_t i = it->hidx[h->which];
    if (i == SIZE_MAX || i >= h->n || h->a[i] != it)
        return;
    it->hidx[h->which] = SIZE_MAX;
    sched_item *last = h->a[--h->n];
    if (last == it)
        return;
    put(h, i, last);
    sift_up(h, i);
    sift_down(h, last->hidx[h->which]);
}

/* ---- agents ---------------------------------------------------------------------------- */

static unsigned hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % AGENT_BUCKETS;
}

static agent *agent_find(const sched *s, const char *id)
{
    for (agent *a = s->ab[hash(id)]; a; a = a->hnext)
        if (!strcmp(a->id, id))
            return a;
    return NULL;
}

static agent *agent_get(sched *s, const char *id)
{
    agent *a = agent_find(s, id);
    if (a || s->nagents >= SCHED_AGENTS_MAX || strlen(id) >= SCHED_AGENT_MAX)
        return a;
    if (!(a = calloc(1, sizeof *a)))
        return NULL;
    snprintf(a->id, sizeof a->id, "%s", id);
    a->cfg.weight = 1.0;
    a->cfg.cls = SCHED_CLS_INTERACTIVE;
    unsigned b = hash(id);
    a->hnext = s->ab[b];
    s->ab[b] = a;
    s->nagents++;
    return a;
}

static double *ftag(agent *a, int pi)
{
    if ((size_t)pi >= a->nftag) {
        double *n = realloc(a->ftag, SCHED_PROVIDERS_MAX * sizeof *n);
        if (!n)
            return NULL;
        for (size_t i = a->nftag; i < SCHED_PROVIDERS_MAX; i++)
            n[i] = 0;
        a->ftag = n;
        a->nftag = SCHED_PROVIDERS_MAX;
    }
    return &a->ftag[pi];
}

/* ---- life ------------------------------------------------------------------------------ */

sched *sched_new(void)
{
    sched *s = calloc(1, sizeof *s);
    if (s)
        s->dl.which = 1;
    return s;
}

void sched_free(sched *s)
{
    if (!s)
        return;
    for (sched_item *it = s->all, *n; it; it = n) {
        n = it->anext;
        free(it);
    }
    for (size_t i = 0; i < s->np; i++)
        for (int c = 0; c < 2; c++)
            free(s->p[i].q[c].a);
    free(s->dl.a);
    for (unsigned b = 0; b < AGENT_BUCKETS; b++)
        for (agent *a = s->ab[b], *n; a; a = n) {
            n = a->hnext;
            free(a->ftag);
            free(a);
        }
    free(s);
}

int sched_add_provider(sched *s, const char *name, const sched_limits *l)
{
    if (s->np >= SCHED_PROVIDERS_MAX || strlen(name) >= sizeof s->p[0].name ||
        sched_find_provider(s, name) >= 0)
        return -1;
    prov *p = &s->p[s->np];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->cap = *l;
    p->eff = l->max_concurrency;
    p->pipe = 1.0;
    p->factor = 1.0;
    p->q[0].which = p->q[1].which = 0;
    return (int)s->np++;
}

int sched_find_provider(const sched *s, const char *name)
{
    for (size_t i = 0; i < s->np; i++)
        if (!strcmp(s->p[i].name, name))
            return (int)i;
    return -1;
}

aos_err sched_set_agent(sched *s, const char *agent_id, const sched_agent_cfg *cfg, char *why,
                        size_t whylen)
{
    if (!(cfg->weight >= SCHED_WEIGHT_MIN && cfg->weight <= SCHED_WEIGHT_MAX)) {
        snprintf(why, whylen, "a weight is %g .. %g, not %g", SCHED_WEIGHT_MIN,
                 SCHED_WEIGHT_MAX, cfg->weight);
        return AOS_ERR_USAGE;
    }
    if (cfg->cls != SCHED_CLS_INTERACTIVE && cfg->cls != SCHED_CLS_BATCH) {
        snprintf(why, whylen, "a class is interactive or batch");
        return AOS_ERR_USAGE;
    }
    if (strlen(agent_id) >= SCHED_AGENT_MAX) {
        snprintf(why, whylen, "an agent id has at most %u bytes", SCHED_AGENT_MAX - 1);
        return AOS_ERR_USAGE;
    }
    agent *a = agent_get(s, agent_id);
    if (!a) {
        snprintf(why, whylen, "the scheduler knows %zu agents already, its most",
                 s->nagents);
        return AOS_ERR_QUOTA;
    }
    a->cfg = *cfg;
    return AOS_OK;
}

int sched_get_agent(const sched *s, const char *agent_id, sched_agent_cfg *out)
{
    const agent *a = agent_find(s, agent_id);
    if (a)
        *out = a->cfg;
    return a != NULL;
}

int sched_agent_used(const sched *s, const char *agent_id, uint64_t *tokens, uint64_t *cost,
                     uint64_t *wait_total_us)
{
    const agent *a = agent_find(s, agent_id);
    if (!a)
        return 0;
    *tokens = a->tokens;
    *cost = a->cost;
    *wait_total_us = a->wait_total_us;
    return 1;
}

void sched_set_usage(sched *s, const char *agent_id, uint64_t tokens, uint64_t cost)
{
    agent *a = agent_get(s, agent_id);
    if (a) {
        a->tokens = tokens;
        a->cost = cost;
    }
}

void sched_set_spend(sched *s, int provider, uint32_t day, uint64_t micro_usd)
{
    if (provider >= 0 && (size_t)provider < s->np) {
        s->p[provider].day = day;
        s->p[provider].spent = micro_usd;
    }
}

/* ---- windows and limits ---------------------------------------------------------------- */

static bucket window(const prov *p, uint64_t now)
{
    uint64_t sec = now / US;
    bucket w = {0};
    for (unsigned k = 0; k < SCHED_WINDOW_S; k++) {
        const bucket *b = &p->b[k];
        if (b->sec && b->sec - 1 + SCHED_WINDOW_S > sec) {
            w.req += b->req;
            w.tok += b->tok;
            w.in += b->in;
            w.out += b->out;
        }
    }
    return w;
}

static uint64_t scaled(uint32_t limit, double factor)
{
    double v = floor(limit * factor);
    return v < 1 ? 1 : (uint64_t)v;
}

/* One per-minute limit: an empty window admits anything the submit let through, so a
 * limit scaled below one request's size cannot wedge the queue. */
static int over(uint32_t limit, double factor, uint64_t have, uint64_t add)
{
    return limit && have && have + add > scaled(limit, factor);
}

/* The pipeline. A call holds its slot here from dispatch to its final reply, but the
 * provider's only while it is being served: the hops to aos-llm and back and aos-llm's
 * books (a PostgreSQL commit before the call is sent and one before it is answered) are
 * outside it. With one call here per provider slot, the provider idles through all of
 * that (a third of its capacity was lost so). Where aos-llm holds the provider to its
 * concurrency itself, calls handed to it early wait there for the next free slot, so
 * this scheduler keeps slots x pipe in flight, pipe being the measured hold time (less
 * the wait in aos-llm) over the provider's service time (Little's law), at most
 * PIPE_MAX. The order of service is still decided here: aos-llm serves its few waiting
 * calls first come, first served. Where aos-llm does not hold it (the sim, which plays a
 * provider's own refusals), no sample comes and pipe stays 1. */
static int full(const prov *p)
{
    if (p->eff <= 0)
        return 0;
    double cap = p->eff < 1 ? 1 : floor(p->eff);
    if (p->pipe > 1.0)
        cap += ceil(cap * (p->pipe - 1.0));
    return p->in_flight + 1 > cap;
}

static void pipe_sample(prov *p, const sched_item *it, const sched_usage *u, uint64_t now)
{
    if (!u->slot_us || now <= it->started_at)
        return;
    uint64_t hold = now - it->started_at;
    hold = hold > u->slot_wait_us ? hold - u->slot_wait_us : 0;
    double r = (double)hold / (double)u->slot_us;
    r = r < 1.0 ? 1.0 : r > PIPE_MAX ? PIPE_MAX : r;
    p->pipe += PIPE_ALPHA * (r - p->pipe);
}

static int admissible(const prov *p, const sched_item *it, uint64_t now)
{
    if (now < p->held_until)
        return 0;
    if (full(p))
        return 0;
    if (!p->cap.requests_per_min && !p->cap.tokens_per_min && !p->cap.input_tokens_per_min &&
        !p->cap.output_tokens_per_min)
        return 1;
    bucket w = window(p, now);
    if (p->cap.requests_per_min && w.req + 1 > scaled(p->cap.requests_per_min, p->factor))
        return 0;
    return !over(p->cap.tokens_per_min, p->factor, w.tok, it->cost) &&
           !over(p->cap.input_tokens_per_min, p->factor, w.in, it->in) &&
           !over(p->cap.output_tokens_per_min, p->factor, w.out, it->out);
}

static void count(prov *p, sched_item *it, uint64_t now)
{
    uint64_t sec = now / US;
    bucket *b = &p->b[sec % SCHED_WINDOW_S];
    if (b->sec != sec + 1)
        *b = (bucket){.sec = sec + 1};
    b->req++;
    b->tok += it->cost;
    b->in += it->in;
    b->out += it->out;
    it->bsec = sec + 1;
}

static uint64_t sub_sat(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

/* Replace the item's estimate in its bucket by what was used (nothing: u NULL), while
 * that bucket is still the one of its second. */
static void recount(prov *p, sched_item *it, const sched_usage *u)
{
    if (!it->bsec)
        return;
    bucket *b = &p->b[(it->bsec - 1) % SCHED_WINDOW_S];
    if (b->sec == it->bsec) {
        uint64_t in = u ? u->in_tokens : 0, out = u ? u->out_tokens : 0;
        if (!u)
            b->req = sub_sat(b->req, 1);
        b->tok = sub_sat(b->tok, it->cost) + in + out;
        b->in = sub_sat(b->in, it->in) + in;
        b->out = sub_sat(b->out, it->out) + out;
    }
    it->bsec = 0;
}

/* ---- the queue ------------------------------------------------------------------------- */

static void item_free(sched *s, sched_item *it)
{
    if (it->aprev)
        it->aprev->anext = it->anext;
    else
        s->all = it->anext;
    if (it->anext)
        it->anext->aprev = it->aprev;
    free(it);
}

static void release(sched *s, sched_item *it)
{
    agent *a = it->ag;
    prov *p = &s->p[it->prov];
    a->res_tokens = sub_sat(a->res_tokens, it->cost);
    a->res_cost = sub_sat(a->res_cost, it->money);
    p->res_spend = sub_sat(p->res_spend, it->money);
}

static void roll_day(prov *p, uint32_t day)
{
    if (p->day != day) {
        p->day = day;
        p->spent = 0;
    }
}

aos_err sched_submit(sched *s, const sched_job *j, uint64_t now, uint32_t day, sched_item **out,
                     char *why, size_t whylen)
{
    *out = NULL;
    if (j->provider < 0 || (size_t)j->provider >= s->np) {
        snprintf(why, whylen, "no such provider in the scheduler");
        return AOS_ERR_USAGE;
    }
    prov *p = &s->p[j->provider];
    const char *aid = j->agent ? j->agent : "";
    if (strlen(aid) >= SCHED_AGENT_MAX) {
        snprintf(why, whylen, "an agent id has at most %u bytes", SCHED_AGENT_MAX - 1);
        return AOS_ERR_USAGE;
    }
    agent *a = agent_get(s, aid);
    if (!a) {
        snprintf(why, whylen, "the scheduler knows %zu agents already, its most",
                 s->nagents);
        return AOS_ERR_QUOTA;
    }
    uint64_t cost = j->in_tokens + j->max_out;
    double m = (double)j->in_tokens * j->price.input + (double)j->max_out * j->price.output;
    uint64_t money = m > 0 ? (uint64_t)ceil(m) : 0;
    aos_err rc = AOS_OK;
    roll_day(p, day);
    if (p->cap.tokens_per_min && cost > p->cap.tokens_per_min) {
        snprintf(why, whylen, "this call may take %llu tokens (%llu in, %llu out), more than "
                 "provider %s admits in a minute (%u); lower max_tokens or the prompt",
                 (unsigned long long)cost, (unsigned long long)j->in_tokens,
                 (unsigned long long)j->max_out, p->name, p->cap.tokens_per_min);
        rc = AOS_ERR_TOO_BIG;
    } else if (p->cap.input_tokens_per_min && j->in_tokens > p->cap.input_tokens_per_min) {
        snprintf(why, whylen, "this call's prompt is about %llu tokens, more than provider %s "
                 "admits in a minute (%u input tokens)", (unsigned long long)j->in_tokens,
                 p->name, p->cap.input_tokens_per_min);
        rc = AOS_ERR_TOO_BIG;
    } else if (p->cap.output_tokens_per_min && j->max_out > p->cap.output_tokens_per_min) {
        snprintf(why, whylen, "this call's max_tokens %llu is more than provider %s admits "
                 "in a minute (%u output tokens)", (unsigned long long)j->max_out, p->name,
                 p->cap.output_tokens_per_min);
        rc = AOS_ERR_TOO_BIG;
    } else if (a->cfg.token_budget && a->tokens + a->res_tokens + cost > a->cfg.token_budget) {
        snprintf(why, whylen, "agent '%s' is over its token budget: %llu used, %llu held by "
                 "calls in flight, this call may take %llu, budget %llu", aid,
                 (unsigned long long)a->tokens, (unsigned long long)a->res_tokens,
                 (unsigned long long)cost, (unsigned long long)a->cfg.token_budget);
        rc = AOS_ERR_REFUSED;
    } else if (a->cfg.cost_budget_micro_usd &&
               a->cost + a->res_cost + money > a->cfg.cost_budget_micro_usd) {
        snprintf(why, whylen, "agent '%s' is over its cost budget: $%.6f used, $%.6f held by "
                 "calls in flight, this call may cost $%.6f, budget $%.6f", aid,
                 a->cost / 1e6, a->res_cost / 1e6, money / 1e6,
                 a->cfg.cost_budget_micro_usd / 1e6);
        rc = AOS_ERR_REFUSED;
    } else if (p->cap.daily_spend_micro_usd &&
               p->spent + p->res_spend + money > p->cap.daily_spend_micro_usd) {
        snprintf(why, whylen, "provider %s's daily spend cap is reached: $%.6f spent today "
                 "(UTC), $%.6f held by calls in flight, this call may cost $%.6f, cap $%.6f",
                 p->name, p->spent / 1e6, p->res_spend / 1e6, money / 1e6,
                 p->cap.daily_spend_micro_usd / 1e6);
        rc = AOS_ERR_REFUSED;
    } else if (j->deadline && (j->deadline <= now || p->held_until > j->deadline)) {
        if (j->deadline <= now)
            snprintf(why, whylen, "the deadline passed before the call could be queued");
        else
            snprintf(why, whylen, "provider %s asked to be left alone (Retry-After) for %llu "
                     "ms more, past this call's deadline", p->name,
                     (unsigned long long)((p->held_until - now) / 1000));
        rc = AOS_ERR_TIMEOUT;
    } else if (s->queued >= SCHED_QUEUE_MAX) {
        snprintf(why, whylen, "%zu LLM calls wait already, the scheduler's most; retry later",
                 s->queued);
        rc = AOS_ERR_QUOTA;
    }
    if (rc != AOS_OK) {
        a->refused++;
        p->refused++;
        return rc;
    }
    double *f = ftag(a, j->provider);
    sched_item *it = calloc(1, sizeof *it);
    if (!f || !it) {
        free(it);
        snprintf(why, whylen, "aosd is out of memory");
        return AOS_ERR_NOMEM;
    }
    it->ag = a;
    it->prov = j->provider;
    it->cls = a->cfg.cls;
    it->cost = cost;
    it->in = j->in_tokens;
    it->out = j->max_out;
    it->money = money;
    it->deadline = j->deadline;
    it->queued_at = now;
    it->arg = j->arg;
    it->hidx[0] = it->hidx[1] = SIZE_MAX;
    it->seq = ++s->seq;
    it->stag = *f > p->vtime[it->cls] ? *f : p->vtime[it->cls];
    /* a zero-cost call still moves the tag, so one agent's stream of them takes turns */
    *f = it->stag + (cost ? (double)cost : 1.0) / a->cfg.weight;
    if (heap_push(&p->q[it->cls], it) || (it->deadline && heap_push(&s->dl, it))) {
        heap_remove(&p->q[it->cls], it);
        free(it);
        snprintf(why, whylen, "aosd is out of memory");
        return AOS_ERR_NOMEM;
    }
    it->state = ST_QUEUED;
    it->anext = s->all;
    if (s->all)
        s->all->aprev = it;
    s->all = it;
    s->queued++;
    a->queued++;
    a->res_tokens += cost;
    a->res_cost += money;
    p->res_spend += money;
    *out = it;
    return AOS_OK;
}

static void unqueue(sched *s, sched_item *it)
{
    heap_remove(&s->p[it->prov].q[it->cls], it);
    heap_remove(&s->dl, it);
    it->state = ST_OUT;
    s->queued--;
    it->ag->queued--;
}

/* Interactive first, unless the oldest batch request has come of age. */
static sched_item *head(const prov *p, uint64_t now)
{
    const heap *in = &p->q[SCHED_CLS_INTERACTIVE], *ba = &p->q[SCHED_CLS_BATCH];
    if (!ba->n)
        return in->n ? in->a[0] : NULL;
    if (!in->n)
        return ba->a[0];
    /* the batch heap's top is its lowest tag, not its oldest; aging looks at the top,
     * which the fair order brings round to every batch agent in turn */
    return now - ba->a[0]->queued_at >= (uint64_t)SCHED_AGE_MS * 1000u ? ba->a[0] : in->a[0];
}

/* What AIMD took is given back in steps by successes, and whole after a quiet minute: a
 * burst of 429s long ago does not cap a provider for good. */
static void heal(prov *p, uint64_t now)
{
    if (p->last_cut && now - p->last_cut >= HEAL_US) {
        p->last_cut = 0;
        p->eff = p->cap.max_concurrency;
        p->factor = 1.0;
    }
}

sched_item *sched_next(sched *s, uint64_t now)
{
    if (!s->queued)
        return NULL;
    for (size_t i = 0; i < s->np; i++) {
        prov *p = &s->p[i];
        heal(p, now);
        sched_item *it = head(p, now);
        if (!it || !admissible(p, it, now))
            continue;
        unqueue(s, it);
        it->state = ST_FLIGHT;
        it->started_at = now;
        p->vtime[it->cls] = it->stag;
        p->in_flight++;
        p->admitted++;
        count(p, it, now);
        agent *a = it->ag;
        a->in_flight++;
        a->requests++;
        uint64_t w = now > it->queued_at ? now - it->queued_at : 0;
        a->wait_total_us += w;
        a->waits[a->nwaits++ % SCHED_WAIT_SAMPLES] = w > UINT32_MAX ? UINT32_MAX : (uint32_t)w;
        return it;
    }
    return NULL;
}

sched_item *sched_expired(sched *s, uint64_t now)
{
    if (!s->dl.n || s->dl.a[0]->deadline > now)
        return NULL;
    sched_item *it = s->dl.a[0];
    unqueue(s, it);
    s->p[it->prov].expired++;
    return it;
}

uint64_t sched_wake_at(const sched *s, uint64_t now)
{
    if (!s->queued)
        return 0;
    uint64_t wake = s->dl.n ? s->dl.a[0]->deadline : UINT64_MAX;
    for (size_t i = 0; i < s->np; i++) {
        const prov *p = &s->p[i];
        if (!p->q[0].n && !p->q[1].n)
            continue;
        uint64_t t;
        if (now < p->held_until)
            t = p->held_until;
        else if (full(p))
            continue; /* a reply frees the slot, and its sched_done is a call */
        else /* a window: buckets slide out on the second */
            t = (now / US + 1) * US;
        if (t < wake)
            wake = t;
    }
    /* batch aging needs no timer: it only decides between two heads when a slot frees */
    return wake == UINT64_MAX ? 0 : wake;
}

void *sched_item_arg(const sched_item *it) { return it->arg; }

uint64_t sched_item_waited(const sched_item *it, uint64_t now)
{
    return now > it->queued_at ? now - it->queued_at : 0;
}

int sched_done(sched *s, sched_item *it, uint64_t now, uint32_t day, int rate_limited,
               uint64_t retry_after_ms, const sched_usage *u)
{
    prov *p = &s->p[it->prov];
    agent *a = it->ag;
    if (it->state != ST_FLIGHT)
        return 0;
    p->in_flight--;
    a->in_flight--;
    if (rate_limited) {
        p->rate_limited++;
        /* a refused request used no tokens, but counts in the provider's requests per
         * minute (OpenAI: "unsuccessful requests contribute to your per-minute limit") */
        recount(p, it, &(sched_usage){0});
        if (!p->last_cut || now - p->last_cut >= DECREASE_EVERY_US) {
            p->last_cut = now;
            /* the concurrency shrinks (or, with none in aos.yaml, is learnt from what was
             * in flight) unless this call was alone: then it was a rate, not a crowd */
            if (p->in_flight > 0) {
                double base = p->eff > 0 ? p->eff : (double)(p->in_flight + 1);
                p->eff = base * DECREASE < 1 ? 1 : base * DECREASE;
            }
            p->factor = p->factor * DECREASE < FACTOR_MIN ? FACTOR_MIN : p->factor * DECREASE;
        }
        uint64_t until = now + (retry_after_ms ? retry_after_ms : RETRY_DEFAULT_MS) * 1000u;
        if (until > p->held_until)
            p->held_until = until;
        /* back to its place: the same start tag and sequence number */
        if (heap_push(&p->q[it->cls], it) == 0 && (!it->deadline || heap_push(&s->dl, it) == 0)) {
            it->state = ST_QUEUED;
            it->queued_at = now;
            s->queued++;
            a->queued++;
            a->requests = sub_sat(a->requests, 1);
            p->admitted = sub_sat(p->admitted, 1);
            return 1;
        }
        heap_remove(&p->q[it->cls], it); /* no memory to queue it again: it fails */
        u = NULL;
    }
    recount(p, it, u);
    if (u) {
        pipe_sample(p, it, u, now);
        uint64_t used = u->in_tokens + u->out_tokens;
        double *f = ftag(a, it->prov);
        if (f) { /* the next call's turn follows what this one really cost */
            *f += ((double)used - (double)it->cost) / a->cfg.weight;
            if (*f < it->stag)
                *f = it->stag;
        }
        a->tokens += used;
        a->cost += u->cost_micro_usd;
        roll_day(p, day);
        p->spent += u->cost_micro_usd;
        p->completed++;
        if (p->eff > 0) {
            p->eff += 1.0 / p->eff;
            double top = p->cap.max_concurrency ? p->cap.max_concurrency : 100000.0;
            if (p->eff > top)
                p->eff = top;
        }
        p->factor = p->factor + FACTOR_STEP > 1 ? 1 : p->factor + FACTOR_STEP;
    }
    release(s, it);
    item_free(s, it);
    return 0;
}

void sched_drop(sched *s, sched_item *it)
{
    prov *p = &s->p[it->prov];
    if (it->state == ST_QUEUED) {
        unqueue(s, it);
    } else if (it->state == ST_FLIGHT) {
        p->in_flight--;
        it->ag->in_flight--;
        recount(p, it, NULL);
    }
    release(s, it);
    item_free(s, it);
}

/* ---- figures ----------------------------------------------------------------------------- */

size_t sched_nproviders(const sched *s) { return s->np; }

void sched_provider_info(const sched *s, int i, uint64_t now, uint32_t day,
                         sched_prov_info *o)
{
    const prov *p = &s->p[i];
    bucket w = window(p, now);
    *o = (sched_prov_info){
        .name = p->name, .cap = p->cap, .eff_concurrency = p->eff, .rate_factor = p->factor,
        .pipeline = p->pipe,
        .in_flight = p->in_flight, .queued = {(uint32_t)p->q[0].n, (uint32_t)p->q[1].n},
        .admitted = p->admitted, .completed = p->completed, .rate_limited = p->rate_limited,
        .expired = p->expired, .refused = p->refused,
        .held_ms = p->held_until > now ? (p->held_until - now) / 1000 : 0,
        .window_requests = w.req, .window_tokens = w.tok,
        .spent_today_micro_usd = p->day == day ? p->spent : 0};
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

void sched_each_agent(const sched *s, int (*fn)(void *arg, const sched_agent_info *a),
                      void *arg)
{
    uint32_t w[SCHED_WAIT_SAMPLES];
    for (unsigned b = 0; b < AGENT_BUCKETS; b++)
        for (const agent *a = s->ab[b]; a; a = a->hnext) {
            sched_agent_info ai = {.agent = a->id, .cfg = a->cfg, .tokens = a->tokens,
                                   .cost_micro_usd = a->cost, .requests = a->requests,
                                   .refused = a->refused, .queued = a->queued,
                                   .in_flight = a->in_flight};
            size_t n = a->nwaits < SCHED_WAIT_SAMPLES ? a->nwaits : SCHED_WAIT_SAMPLES;
            if (n) {
                memcpy(w, a->waits, n * sizeof w[0]);
                qsort(w, n, sizeof w[0], cmp_u32);
                ai.wait_p50_us = w[(n - 1) / 2];
                ai.wait_p99_us = w[(n * 99 + 99) / 100 - 1];
            }
            if (fn(arg, &ai))
                return;
        }
}
