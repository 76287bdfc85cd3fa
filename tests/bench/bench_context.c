/* B4: context paging. A 200-step agent run on the sim under memory pressure (aos-memory's
 * assembly beside a sliding window over the same turns), assembly of a 128k-token window,
 * page-in latency, and hybrid retrieval over 100k chunks at the sim's dimension and 1,536.
 * Usage: bench_context [CHUNKS] (100000 unless given). Needs root (aosd's servers). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos/memory.h"
#include "harness.h"
#include "llm.pb-c.h"
#include "memory.pb-c.h"
#include "window.h"

#define STEPS 200
#define BUDGET 8192
#define RESERVE 1024
#define CACHED_PRICE 0.1     /* a cached input token costs a tenth of an uncached one */

static h_aosd *H;

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

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void die(const char *what, aos_err e, const char *why)
{
    fprintf(stderr, "bench_context: %s: %s: %s\n", what, aos_err_name(e), why);
    if (H) {
        h_dump_log(H);
        h_stop(H);
    }
    exit(1);
}

/* ---- prompts as the provider sees them: the sim's count of each message --------------- */

typedef struct prompt {
    size_t n;
    uint64_t *tok;               /* per message: ceil(bytes / 4) */
    uint64_t *hash;              /* per message: FNV-1a of role and text */
} prompt;

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void prompt_set(prompt *p, Aos__Llm__Message **m, size_t n)
{
    free(p->tok);
    free(p->hash);
    p->n = n;
    p->tok = calloc(n ? n : 1, sizeof *p->tok);
    p->hash = calloc(n ? n : 1, sizeof *p->hash);
    for (size_t i = 0; i < n; i++) {
        uint64_t b = 0, h = fnv(&m[i]->role, sizeof m[i]->role, 1469598103934665603ull);
        for (size_t j = 0; j < m[i]->n_content; j++) {
            b += m[i]->content[j]->text.len;
            h = fnv(m[i]->content[j]->text.data, m[i]->content[j]->text.len, h);
        }
        p->tok[i] = (b + 3) / 4;
        p->hash[i] = h;
    }
}

/* Tokens of cur identical to prev's start (what a provider's prefix cache would hold). */
static uint64_t common_prefix(const prompt *prev, const prompt *cur, uint64_t *total)
{
    uint64_t c = 0, t = 0;
    size_t i = 0;
    for (; i < cur->n && i < prev->n && cur->hash[i] == prev->hash[i]; i++)
        c += cur->tok[i];
    for (size_t j = 0; j < cur->n; j++)
        t += cur->tok[j];
    *total = t;
    return c;
}

/* ---- the sliding-window baseline: system and tools, then the newest turns that fit ---- */

typedef struct turn {
    int role;
    char *text;
    size_t len;
} turn;

static Aos__Llm__Message *msg(int role, const char *text, size_t len)
{
    Aos__Llm__Message *m = malloc(sizeof *m);
    Aos__Llm__ContentPart *p = malloc(sizeof *p);
    aos__llm__message__init(m);
    aos__llm__content_part__init(p);
    p->kind = AOS__LLM__PART_KIND__TEXT;
    p->text = (ProtobufCBinaryData){len, (uint8_t *)text};
    m->role = role;
    m->n_content = 1;
    m->content = malloc(sizeof *m->content);
    m->content[0] = p;
    return m;
}

static void msg_free(Aos__Llm__Message *m)
{
    free(m->content[0]);
    free(m->content);
    free(m);
}

static size_t sliding(const turn *t, size_t nt, Aos__Llm__Message **out, uint64_t limit)
{
    uint64_t used = 0;
    size_t first = nt;
    for (size_t k = 0; k < 2; k++)
        used += (t[k].len + 3) / 4;
    while (first > 2 && used + (t[first - 1].len + 3) / 4 <= limit) {
        first--;
        used += (t[first].len + 3) / 4;
    }
    size_t n = 0;
    out[n++] = msg(t[0].role, t[0].text, t[0].len);
    out[n++] = msg(t[1].role, t[1].text, t[1].len);
    for (size_t i = first; i < nt; i++)
        out[n++] = msg(t[i].role, t[i].text, t[i].len);
    return n;
}

/* ---- the run ------------------------------------------------------------------------------ */

static const char *vocab[] = {"deploy", "config", "latency", "cluster", "index", "query",
                              "parser", "buffer", "socket", "thread", "kernel", "schema",
                              "request", "replica", "shard", "commit", "rollback", "cache",
                              "token", "budget", "window", "prompt", "vector", "metric"};

static void words(char *out, size_t n, unsigned seed)
{
    size_t o = 0;
    for (unsigned k = 0; o + 16 < n; k++)
        o += (size_t)snprintf(out + o, n - o, "%s%u ", vocab[(seed * 31 + k * 7) % 24],
                              (seed + k) % 97);
    out[o] = 0;
}

static Aos__Llm__ChatReply *chat(aos_call_opts *o, Aos__Llm__Message **m, size_t n,
                                 uint32_t breakpoint)
{
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = (ProtobufCBinaryData){9, (uint8_t *)"sim/sim-1"};
    q.n_messages = n;
    q.messages = m;
    q.cache_breakpoint = breakpoint;
    q.max_tokens = 60;
    size_t len = aos__llm__chat_request__get_packed_size(&q);
    uint8_t *buf = malloc(len);
    aos__llm__chat_request__pack(&q, buf);
    aos_reply r;
    aos_err e = aos_call(h_conn(H), o, "llm.chat", buf, len, &r);
    free(buf);
    if (e)
        die("llm.chat", e, r.error);
    Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    return cr;
}

static void run_b4(void)
{
    const char *A = "bench-run";
    aos_call_opts o = {.agent_id = A, .timeout_ms = 60000};
    char why[AOS_ERRMSG_MAX];
    aos_err e;
    if ((e = aos_mem_budget_set(h_conn(H), &o, BUDGET, RESERVE, why, sizeof why)))
        die("budget", e, why);
    turn *t = calloc(3 * STEPS + 4, sizeof *t);
    size_t nt = 0;
    char sys[2400], tools[2400];
    words(sys, 2000, 1);
    words(tools, 2000, 2);
    aos_mem_page pre[2] = {{AOS_MEM_SYSTEM, 0, NULL, sys, strlen(sys), 0},
                           {AOS_MEM_TOOLS, 0, NULL, tools, strlen(tools), 0}};
    if ((e = aos_mem_append(h_conn(H), &o, pre, 2, NULL, why, sizeof why)))
        die("append", e, why);
    t[nt++] = (turn){AOS__LLM__ROLE__SYSTEM, strdup(sys), strlen(sys)};
    t[nt++] = (turn){AOS__LLM__ROLE__SYSTEM, strdup(tools), strlen(tools)};
    prompt pa = {0}, pa_prev = {0}, pb = {0}, pb_prev = {0};
    uint64_t a_common = 0, a_total = 0, b_common = 0, b_total = 0, history = 0;
    double a_cost = 0, b_cost = 0;
    aos_mem_assemble_opts ao = {.model = "sim/sim-1"};
    Aos__Llm__Message **bm = malloc((3 * STEPS + 4) * sizeof *bm);
    unsigned compactions = 0;
    for (int s = 0; s < STEPS; s++) {
        char u[1200];
        words(u, 700 + (size_t)(s % 5) * 60, 100 + (unsigned)s);
        aos_mem_page pg = {AOS_MEM_USER, 0, NULL, u, strlen(u), 0};
        if ((e = aos_mem_append(h_conn(H), &o, &pg, 1, NULL, why, sizeof why)))
            die("append", e, why);
        t[nt++] = (turn){AOS__LLM__ROLE__USER, strdup(u), strlen(u)};
        history += (strlen(u) + 3) / 4;
        if (s % 3 == 2) {   /* a tool's output, untrusted */
            char out[1200];
            words(out, 900, 5000 + (unsigned)s);
            aos_mem_page tp = {AOS_MEM_TOOL_RESULT, 0, "tool:sh", out, strlen(out), 0};
            if ((e = aos_mem_append(h_conn(H), &o, &tp, 1, NULL, why, sizeof why)))
                die("append", e, why);
            t[nt++] = (turn){AOS__LLM__ROLE__USER, strdup(out), strlen(out)};
            history += (strlen(out) + 3) / 4;
        }
        Aos__Memory__AssembleReply *r = NULL;
        if ((e = aos_mem_assemble(h_conn(H), &o, &ao, &r, why, sizeof why)))
            die("assemble", e, why);
        compactions += r->compacted;
        prompt_set(&pa, r->messages, r->n_messages);
        Aos__Llm__ChatReply *cr = chat(&o, r->messages, r->n_messages, r->cache_breakpoint);
        ao.has_usage = 1;
        ao.input_tokens = cr->usage->input_tokens;
        ao.cache_read_tokens = cr->usage->cache_read_tokens;
        /* the baseline over the same turns, the same limit */
        size_t nb = sliding(t, nt, bm, BUDGET - RESERVE);
        prompt_set(&pb, bm, nb);
        for (size_t i = 0; i < nb; i++)
            msg_free(bm[i]);
        if (s > 0) {
            uint64_t tot, c = common_prefix(&pa_prev, &pa, &tot);
            a_common += c;
            a_total += tot;
            a_cost += (double)(tot - c) + CACHED_PRICE * (double)c;
            c = common_prefix(&pb_prev, &pb, &tot);
            b_common += c;
            b_total += tot;
            b_cost += (double)(tot - c) + CACHED_PRICE * (double)c;
        }
        prompt_set(&pa_prev, r->messages, r->n_messages);
        free(pb_prev.tok);
        free(pb_prev.hash);
        pb_prev = pb;
        pb = (prompt){0};
        /* the assistant's answer joins the history */
        const ProtobufCBinaryData *ans = &cr->message->content[0]->text;
        aos_mem_page ap = {AOS_MEM_ASSISTANT, 0, NULL, ans->data, ans->len, 0};
        if ((e = aos_mem_append(h_conn(H), &o, &ap, 1, NULL, why, sizeof why)))
            die("append", e, why);
        t[nt++] = (turn){AOS__LLM__ROLE__ASSISTANT, strndup((const char *)ans->data, ans->len),
                         ans->len};
        history += (ans->len + 3) / 4;
        aos__llm__chat_reply__free_unpacked(cr, NULL);
        aos_mem_prompt_free(r);
    }
    printf("# %d steps, history %llu tokens = %.1f x the %d-token limit, %u compactions\n",
           STEPS, (unsigned long long)history, (double)history / (BUDGET - RESERVE),
           BUDGET - RESERVE, compactions);
    printf("prefix_reuse: %.1f\n", 100.0 * (double)a_common / (double)a_total);
    printf("prefix_reuse_baseline: %.1f\n", 100.0 * (double)b_common / (double)b_total);
    printf("cost_ratio: %.3f\n", a_cost / b_cost);
    /* page-in latency: each swapped page of the run, through aosd */
    Aos__Memory__ShowRequest q = AOS__MEMORY__SHOW_REQUEST__INIT;
    uint8_t buf[16];
    size_t n = aos__memory__show_request__pack(&q, buf);
    aos_reply rep;
    if ((e = aos_call(h_conn(H), &o, "memory.show", buf, n, &rep)))
        die("show", e, rep.error);
    Aos__Memory__ShowReply *sh = aos__memory__show_reply__unpack(NULL, rep.payload_len,
                                                                 rep.payload);
    aos_reply_clear(&rep);
    uint64_t *lat = calloc(sh->n_pages, sizeof *lat);
    size_t nl = 0;
    for (size_t i = 0; i < sh->n_pages; i++) {
        if (sh->pages[i]->resident)
            continue;
        uint8_t *text;
        size_t len;
        int faulted;
        uint64_t t0 = now_ns();
        if ((e = aos_mem_page_in(h_conn(H), &o, sh->pages[i]->page_id, &text, &len, &faulted,
                                 why, sizeof why)))
            die("page in", e, why);
        lat[nl++] = now_ns() - t0;
        free(text);
    }
    printf("# %zu page-ins\n", nl);
    printf("page_in_us_p50: %.0f\n", (double)pct(lat, nl, 0.5) / 1000.0);
    printf("page_in_us_p99: %.0f\n", (double)pct(lat, nl, 0.99) / 1000.0);
    free(lat);
    aos__memory__show_reply__free_unpacked(sh, NULL);
    for (size_t i = 0; i < nt; i++)
        free(t[i].text);
    free(t);
    free(bm);
}

/* ---- assembly of a 128k-token window, in process (aos-memory's own work) --------------- */

static void run_assembly_128k(void)
{
    mem_window *w = mem_win_new();
    const double r = 0.25;
    char text[2100];
    uint64_t id = 1;
    words(text, 2000, 7);
    mem_win_add(w, mem_page_new(id++, MEM_SYSTEM, MEM_TRUST_OWN, "", (uint8_t *)text,
                                strlen(text)));
    while (mem_win_tokens(w, r) < 128000) {
        words(text, 500 + (size_t)(id % 7) * 50, (unsigned)id);
        int kind = id % 2 ? MEM_USER : MEM_ASSISTANT;
        mem_win_add(w, mem_page_new(id++, kind, MEM_TRUST_USER, "", (uint8_t *)text,
                                    strlen(text)));
    }
    mem_asm as;
    char why[512];
    uint64_t t0 = now_ns();
    if (mem_win_assemble(w, r, 200000, 0, 0, &as, why, sizeof why))
        die("assemble 128k", AOS_ERR_INTERNAL, why);
    uint64_t cold = now_ns() - t0;
    size_t bytes = as.len;
    free(as.payload);
    uint64_t lat[200];
    for (int i = 0; i < 200; i++) {
        words(text, 600, 90000 + (unsigned)i);
        mem_win_add(w, mem_page_new(id++, MEM_USER, MEM_TRUST_USER, "", (uint8_t *)text,
                                    strlen(text)));
        t0 = now_ns();
        if (mem_win_assemble(w, r, 400000, 0, 0, &as, why, sizeof why))
            die("assemble 128k", AOS_ERR_INTERNAL, why);
        lat[i] = now_ns() - t0;
        free(as.payload);
    }
    printf("# 128k window: %llu pages, %zu bytes; the first assembly %.3f ms\n",
           (unsigned long long)id - 1, bytes, (double)cold / 1e6);
    printf("assembly_128k_ms: %.3f\n", (double)pct(lat, 200, 0.5) / 1e6);
    mem_win_free(w);
}

/* ---- hybrid retrieval over N chunks ------------------------------------------------------- */

static double run_search(const char *agent, const char *model, size_t chunks)
{
    aos_call_opts o = {.agent_id = agent, .timeout_ms = 120000};
    char (*texts)[400] = malloc(256 * sizeof *texts);
    Aos__Memory__Doc d[256], *dp[256];
    uint64_t t0 = now_ns();
    unsigned seed = 12345;
    for (size_t i = 0; i < chunks; i += 256) {
        size_t n = chunks - i < 256 ? chunks - i : 256;
        for (size_t k = 0; k < n; k++) {
            size_t off = 0;
            for (int w = 0; w < 30; w++) {   /* 30 words from a vocabulary of 20000 */
                seed = seed * 1103515245u + 12345u;
                off += (size_t)snprintf(texts[k] + off, sizeof texts[k] - off, "w%u ",
                                        (seed >> 8) % 20000);
            }
            aos__memory__doc__init(&d[k]);
            d[k].text = (ProtobufCBinaryData){off, (uint8_t *)texts[k]};
            dp[k] = &d[k];
        }
        Aos__Memory__StoreRequest q = AOS__MEMORY__STORE_REQUEST__INIT;
        q.n_docs = n;
        q.docs = dp;
        q.model = (ProtobufCBinaryData){strlen(model), (uint8_t *)model};
        size_t len = aos__memory__store_request__get_packed_size(&q);
        uint8_t *buf = malloc(len);
        aos__memory__store_request__pack(&q, buf);
        aos_reply r;
        aos_err e = aos_call(h_conn(H), &o, "memory.store", buf, len, &r);
        free(buf);
        if (e)
            die("store", e, r.error);
        aos_reply_clear(&r);
    }
    printf("# %zu chunks stored with %s in %.1f s\n", chunks, model,
           (double)(now_ns() - t0) / 1e9);
    uint64_t lat[41];
    size_t nl = 0;
    for (int i = 0; i < 41; i++) {
        char query[64];
        seed = seed * 1103515245u + 12345u;
        snprintf(query, sizeof query, "w%u w%u w%u", (seed >> 8) % 20000, (seed >> 12) % 20000,
                 (seed >> 4) % 20000);
        aos_mem_search_opts so = {.limit = 10, .model = model};
        aos_mem_hits *h;
        char why[AOS_ERRMSG_MAX];
        uint64_t s0 = now_ns();
        aos_err e = aos_mem_search(h_conn(H), &o, query, &so, &h, why, sizeof why);
        uint64_t dt = now_ns() - s0;
        if (e)
            die("search", e, why);
        if (!h->embedded)
            die("search", AOS_ERR_INTERNAL, "the query was not embedded");
        aos_mem_hits_free(h);
        if (i > 0)   /* the first loads the index */
            lat[nl++] = dt;
    }
    /* each leg alone, for the reader of the figures */
    for (int m = 1; m <= 2; m++) {
        uint64_t leg[21];
        for (int i = 0; i < 21; i++) {
            char query[64];
            seed = seed * 1103515245u + 12345u;
            snprintf(query, sizeof query, "w%u w%u w%u", (seed >> 8) % 20000,
                     (seed >> 12) % 20000, (seed >> 4) % 20000);
            aos_mem_search_opts so = {.limit = 10, .model = model, .mode = m};
            aos_mem_hits *h;
            char why[AOS_ERRMSG_MAX];
            uint64_t s0 = now_ns();
            aos_err e = aos_mem_search(h_conn(H), &o, query, &so, &h, why, sizeof why);
            leg[i] = now_ns() - s0;
            if (e)
                die("search", e, why);
            aos_mem_hits_free(h);
        }
        printf("# %s alone: p50 %.2f ms\n", m == 1 ? "full text" : "vectors (with the query's "
               "embedding)", (double)pct(leg, 21, 0.5) / 1e6);
    }
    free(texts);
    return (double)pct(lat, nl, 0.5) / 1e6;
}

int main(int argc, char **argv)
{
    size_t chunks = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 100000;
    char dir[] = "/tmp/bench-ctx-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "restart_intensity: 100/60\n"
               "llm:\n"
               "  default_model: sim/sim-1\n"
               "  providers:\n"
               "    - name: sim\n"
               "      kind: sim\n"
               "      models: [{name: sim-1}, {name: sim-embed, embedding: true}]\n"
               "    - name: sim1536\n"
               "      kind: sim\n"
               "      sim: {embed_dim: 1536}\n"
               "      models: [{name: embed, embedding: true}]\n");
    fclose(f);
    char why[1024];
    H = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!H) {
        fprintf(stderr, "bench_context: aosd: %s\n", why);
        return 1;
    }
    if (!getenv("BENCH_CONTEXT_SEARCH_ONLY")) {
        run_b4();
        run_assembly_128k();
    }
    printf("search_100k_ms_p50: %.2f\n", run_search("bench-s256", "sim/sim-embed", chunks));
    printf("search_100k_1536_ms_p50: %.2f\n", run_search("bench-s1536", "sim1536/embed",
                                                         chunks));
    if (chunks != 100000)
        printf("# (over %zu chunks, not 100k)\n", chunks);
    if (getenv("BENCH_CONTEXT_HOLD"))   /* to look at its database: psql -h DIR/pg */
        sleep((unsigned)atoi(getenv("BENCH_CONTEXT_HOLD")));
    h_stop(H);
    return 0;
}
