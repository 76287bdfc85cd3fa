/* The LLM scheduler: a pure state machine (no threads, no I/O, the clock passed in) that
 * decides which queued model call goes to which provider next, and when.
 *
 * - Weighted fair queueing by tokens (start-time fair queueing): per provider and class,
 *   a request's start tag is max(virtual time, its agent's last finish tag) and its finish
 *   tag start + cost / weight, cost = estimated prompt tokens + max output tokens; the
 *   lowest start tag goes first, so shares follow weights and an idle agent's unused share
 *   goes to the others (work-conserving). The agent's finish tag is corrected by the
 *   actual usage when the reply comes.
 * - Two classes, interactive before batch; a batch request that waited SCHED_AGE_MS goes
 *   before interactive ones (aging: no class starves).
 * - Admission inside each provider's limits: concurrency, requests, tokens, input and
 *   output tokens per minute (a sliding window of 60 one-second buckets, as providers
 *   count), scaled down multiplicatively after a 429 and raised additively after each
 *   success (AIMD); a 429's Retry-After holds the provider for everyone, and the request
 *   goes back to its place in the queue.
 * - Budgets: tokens and cost per agent (set by the admin), spend per provider per day;
 *   refused at submission with the figures, counting what is in flight as spent.
 *
 * Not thread-safe: the caller holds one lock around every call. Times are monotonic µs,
 * except `day` (the UTC day number, for the daily spend caps). */
#ifndef AOS_SCHEDULER_H
#define AOS_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define SCHED_PROVIDERS_MAX 64u
#define SCHED_AGENTS_MAX 100000u   /* agents with a weight, a budget or work in the queue */
#define SCHED_AGENT_MAX 64u        /* bytes of an agent id, with the NUL */
#define SCHED_QUEUE_MAX 100000u    /* requests waiting, all providers */
#define SCHED_AGE_MS 2000u         /* a batch request waiting this long goes first */
#define SCHED_WEIGHT_MIN 0.01
#define SCHED_WEIGHT_MAX 10000.0
#define SCHED_WINDOW_S 60u

typedef struct sched sched;
typedef struct sched_item sched_item;   /* one request, queued or in flight; owned by s */

enum { SCHED_CLS_INTERACTIVE = 0, SCHED_CLS_BATCH = 1 };

typedef struct sched_limits {
    uint32_t max_concurrency;    /* 0: unlimited, in every field */
    uint32_t requests_per_min;
    uint32_t tokens_per_min;     /* input + output */
    uint32_t input_tokens_per_min;
    uint32_t output_tokens_per_min;
    uint64_t daily_spend_micro_usd;
} sched_limits;

/* Prices in micro-USD per token (= USD per million tokens). */
typedef struct sched_price {
    double input, output;
} sched_price;

/* A new, empty scheduler; NULL when out of memory. Free with sched_free. */
sched *sched_new(void);
void sched_free(sched *s);

/* Adds a provider (names unique, at most SCHED_PROVIDERS_MAX); its index, or -1. */
int sched_add_provider(sched *s, const char *name, const sched_limits *l);
int sched_find_provider(const sched *s, const char *name);

/* The admin's settings for an agent; weight 1, interactive and no budgets by default.
 * A budget of 0 is none. USAGE for a bad weight or class or agent id, QUOTA when the
 * agent table is full. */
typedef struct sched_agent_cfg {
    double weight;
    int cls;
    uint64_t token_budget;
    uint64_t cost_budget_micro_usd;
} sched_agent_cfg;
aos_err sched_set_agent(sched *s, const char *agent, const sched_agent_cfg *cfg, char *why,
                        size_t whylen);
/* The agent's settings into *out: 1, or 0 when the scheduler does not know it. */
int sched_get_agent(const sched *s, const char *agent, sched_agent_cfg *out);
/* What the agent has used (tokens, micro-USD) and waited in the queue in all: 1, or 0
 * when the scheduler does not know it. */
int sched_agent_used(const sched *s, const char *agent, uint64_t *tokens, uint64_t *cost,
                     uint64_t *wait_total_us);
/* What the agent has used so far (restored from the kernel's own file at start). */
void sched_set_usage(sched *s, const char *agent, uint64_t tokens, uint64_t cost_micro_usd);
/* A provider's spend on `day` so far (restored at start). */
void sched_set_spend(sched *s, int provider, uint32_t day, uint64_t micro_usd);

/* One request as the router describes it. */
typedef struct sched_job {
    const char *agent;           /* "" for calls on no agent's behalf */
    int provider;                /* sched_add_provider's index */
    uint64_t in_tokens;          /* estimated prompt tokens */
    uint64_t max_out;            /* the reply's cap in tokens */
    sched_price price;
    uint64_t deadline;           /* monotonic µs: it must have started by then; 0: none */
    void *arg;                   /* the router's call */
} sched_job;

/* Queue j. AOS_OK: *out is its item, which sched_next hands out once admitted (or
 * sched_expired at its deadline). REFUSED: a budget or spend cap would be passed;
 * TIMEOUT: it cannot start before its deadline (the provider is held past it);
 * TOO_BIG: it asks more tokens than a per-minute limit ever admits; QUOTA: the queue or
 * agent table is full. Why says which, with the figures. */
aos_err sched_submit(sched *s, const sched_job *j, uint64_t now, uint32_t day, sched_item **out,
                     char *why, size_t whylen);

/* The next request to start now, counted in flight, or NULL: nothing may start yet. */
sched_item *sched_next(sched *s, uint64_t now);
/* A queued request whose deadline has come (taken out of the queue; the caller answers
 * TIMEOUT and calls sched_drop), or NULL. */
sched_item *sched_expired(sched *s, uint64_t now);
/* When something may change without a call: a window bucket sliding out, a Retry-After
 * ending, a deadline, a batch request coming of age. 0: nothing is queued. */
uint64_t sched_wake_at(const sched *s, uint64_t now);

void *sched_item_arg(const sched_item *it);
/* µs it waited in the queue before sched_next handed it out (this time round). */
uint64_t sched_item_waited(const sched_item *it, uint64_t now);

/* What the provider reported for a finished call. */
typedef struct sched_usage {
    uint64_t in_tokens, out_tokens;   /* all input tokens (cache reads included) */
    uint64_t cost_micro_usd;
    /* aos-llm held the provider to its concurrency: the call held a slot there this long
     * and waited this long for it (0, 0: not held there; see "pipeline" in sched.c) */
    uint32_t slot_us, slot_wait_us;
} sched_usage;

/* An in-flight request ended. rate_limited: the provider answered 429; the item goes
 * back to its place in the queue (returns 1), the provider's limits shrink and it is
 * held for retry_after_ms (0: 1 s). Otherwise (returns 0) the item is freed: u (NULL:
 * nothing was used, e.g. an error before the provider) corrects the estimates. */
int sched_done(sched *s, sched_item *it, uint64_t now, uint32_t day, int rate_limited,
               uint64_t retry_after_ms, const sched_usage *u);
/* Forget an item that is queued (a cancel, an expiry) or that was handed out but never
 * started (nothing used). */
void sched_drop(sched *s, sched_item *it);

/* ---- what `aosctl sched` shows --------------------------------------------------------- */

typedef struct sched_prov_info {
    const char *name;
    sched_limits cap;
    double eff_concurrency;      /* the AIMD limit now (0: unlimited) */
    double rate_factor;          /* the rate limits' scale now, (0, 1] */
    double pipeline;             /* calls held in flight per provider slot, [1, 2] */
    uint32_t in_flight;
    uint32_t queued[2];          /* interactive, batch */
    uint64_t admitted, completed, rate_limited, expired, refused;
    uint64_t held_ms;            /* Retry-After left */
    uint64_t window_requests, window_tokens;
    uint64_t spent_today_micro_usd;
} sched_prov_info;

typedef struct sched_agent_info {
    const char *agent;
    sched_agent_cfg cfg;
    uint64_t tokens, cost_micro_usd, requests, refused;
    uint32_t queued, in_flight;
    uint64_t wait_p50_us, wait_p99_us;   /* over its last SCHED_WAIT_SAMPLES admissions */
} sched_agent_info;
#define SCHED_WAIT_SAMPLES 256u

size_t sched_nproviders(const sched *s);
void sched_provider_info(const sched *s, int i, uint64_t now, uint32_t day,
                         sched_prov_info *out);
/* Visits every known agent; stops when fn returns nonzero. */
void sched_each_agent(const sched *s, int (*fn)(void *arg, const sched_agent_info *a),
                      void *arg);

#endif
