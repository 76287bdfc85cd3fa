/* The window's methods: append, pin and unpin, page in, budget, show and assemble. Each
 * holds the agent's lock, writes through to PostgreSQL in one transaction and changes the
 * cached window only after COMMIT; a write whose outcome is unknown reloads the agent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm.pb-c.h"
#include "mem.h"
#include "memory.pb-c.h"

static aos_err need_agent(mem_call *c)
{
    if (!c->agent || !c->agent[0])
        return mem_fail(c, AOS_ERR_USAGE, "needs an agent: a window belongs to an agent (on "
                        "the control socket, name the acting agent)");
    return AOS_OK;
}

/* The agent, locked and loaded; NULL after mem_fail. */
static mem_agent *lock_agent(mem_call *c, aos_err *e)
{
    mem_agent *a = mem_agent_get(c->st, c->agent);
    if (!a) {
        *e = mem_fail(c, AOS_ERR_NOMEM, "out of memory (or %u agents busy)", MEM_AGENTS_MAX);
        return NULL;
    }
    pthread_mutex_lock(&a->mu);
    if ((*e = mem_agent_load(c, a))) {
        pthread_mutex_unlock(&a->mu);
        mem_agent_put(c->st, a);
        return NULL;
    }
    return a;
}

static void unlock_agent(mem_call *c, mem_agent *a)
{
    pthread_mutex_unlock(&a->mu);
    mem_agent_put(c->st, a);
}

/* After a write that failed or was answered from its record, the cache may not match
 * PostgreSQL: read it again before the next use. */
static void settle(mem_agent *a, aos_err e, int replayed)
{
    if (e || replayed)
        a->stale = 1;
}

static double ratio_of(mem_call *c, const mem_agent *a)
{
    return mem_est_ratio(c->st->est, a->model);
}

/* ---- memory.page.append ------------------------------------------------------------- */

static const db_stmt st_upsert_agent = {
    "mem_upsert_agent",
    "INSERT INTO memory.agents (agent_id, budget, reserve, next_page) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (agent_id) DO UPDATE SET budget = EXCLUDED.budget, "
    "reserve = EXCLUDED.reserve, next_page = EXCLUDED.next_page", 4};
static const db_stmt st_ins_page = {
    "mem_ins_page",
    "INSERT INTO memory.pages (agent_id, page_id, kind, trust, source, pinned, body, tokens, "
    "last_use_mark) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $2)", 8};
static const db_stmt st_kill_todo = {
    "mem_kill_todo",
    "UPDATE memory.pages SET dead = true WHERE agent_id = $1 AND kind = 4 AND NOT dead "
    "AND page_id < $2", 2};

typedef struct app_arg {
    mem_agent *a;
    Aos__Memory__AppendRequest *rq;
    int *trust;
    char (*src)[MEM_SOURCE_MAX + 1];
    double ratio;
} app_arg;

static aos_err upsert_agent(mem_call *c, mem_agent *a, uint64_t budget, uint64_t reserve,
                            uint64_t next)
{
    db_params p;
    dp_init(&p);
    dp_text(&p, a->id);
    dp_i64(&p, (int64_t)budget);
    dp_i64(&p, (int64_t)reserve);
    dp_i64(&p, (int64_t)next);
    return mem_exec_void(c, &st_upsert_agent, &p);
}

static aos_err append_tx(mem_call *c, void *arg)
{
    app_arg *x = arg;
    mem_agent *a = x->a;
    size_t n = x->rq->n_pages;
    aos_err e;
    if ((e = upsert_agent(c, a, a->budget, a->reserve, a->next_page + n)))
        return e;
    Aos__Memory__PageRef *refs = calloc(n, sizeof *refs);
    Aos__Memory__PageRef **rp = calloc(n, sizeof *rp);
    if (!refs || !rp) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const Aos__Memory__PageIn *in = x->rq->pages[i];
        uint64_t id = a->next_page + i;
        uint32_t tokens = mem_est_tokens(x->ratio, in->text.len);
        db_params p;
        dp_init(&p);
        dp_text(&p, a->id);
        dp_i64(&p, (int64_t)id);
        dp_i32(&p, (int)in->kind);
        dp_i32(&p, x->trust[i]);
        dp_text(&p, x->src[i]);
        dp_bool(&p, in->pinned || (int)in->kind == MEM_PINNED);
        dp_bytes(&p, in->text.data ? in->text.data : (const uint8_t *)"", in->text.len);
        dp_i32(&p, (int32_t)(tokens > INT32_MAX ? INT32_MAX : tokens));
        if ((e = mem_exec_void(c, &st_ins_page, &p)))
            goto out;
        if ((int)in->kind == MEM_TODO) {
            dp_init(&p);
            dp_text(&p, a->id);
            dp_i64(&p, (int64_t)id);
            if ((e = mem_exec_void(c, &st_kill_todo, &p)))
                goto out;
        }
        aos__memory__page_ref__init(&refs[i]);
        refs[i].page_id = id;
        refs[i].tokens = tokens;
        refs[i].trust = x->trust[i];
        rp[i] = &refs[i];
    }
    Aos__Memory__AppendReply rep = AOS__MEMORY__APPEND_REPLY__INIT;
    rep.n_pages = n;
    rep.pages = rp;
    e = mem_reply(c, &rep.base);
out:
    free(refs);
    free(rp);
    return e;
}

aos_err op_append(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__AppendRequest *rq = mem_decode(c, &aos__memory__append_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    int *trust = NULL;
    char (*src)[MEM_SOURCE_MAX + 1] = NULL;
    mem_agent *a = NULL;
    if (!rq->n_pages || rq->n_pages > MEM_APPEND_MAX) {
        e = mem_fail(c, rq->n_pages ? AOS_ERR_TOO_BIG : AOS_ERR_USAGE,
                     "%zu pages: one append takes 1 to %u", rq->n_pages, MEM_APPEND_MAX);
        goto out;
    }
    trust = calloc(rq->n_pages, sizeof *trust);
    src = calloc(rq->n_pages, sizeof *src);
    if (!trust || !src) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < rq->n_pages; i++) {
        const Aos__Memory__PageIn *in = rq->pages[i];
        char what[48], why[160];
        snprintf(what, sizeof what, "page %zu's text", i);
        if ((int)in->kind < 1 || (int)in->kind > MEM_KIND_LAST) {
            e = mem_fail(c, AOS_ERR_USAGE, "page %zu: kind %d is not a page kind (1..%d)", i,
                         (int)in->kind, MEM_KIND_LAST);
            goto out;
        }
        if ((int)in->trust < 0 || (int)in->trust > MEM_TRUST_UNTRUSTED) {
            e = mem_fail(c, AOS_ERR_USAGE, "page %zu: trust %d is not a trust level", i,
                         (int)in->trust);
            goto out;
        }
        if ((e = mem_valid_text(c, in->text, MEM_PAGE_BYTES_MAX, 0, what)) ||
            (e = mem_valid_source(c, in->source, src[i])))
            goto out;
        trust[i] = mem_trust_effective((int)in->kind, (int)in->trust);
        if (((int)in->kind == MEM_SYSTEM || (int)in->kind == MEM_TOOLS) && in->pinned) {
            e = mem_fail(c, AOS_ERR_USAGE, "page %zu: system and tools pages are the stable "
                         "prefix already: not pinned", i);
            goto out;
        }
        if (mem_page_allowed((int)in->kind, trust[i], in->pinned || (int)in->kind == MEM_PINNED, why,
                             sizeof why)) {
            e = mem_fail(c, AOS_ERR_REFUSED, "page %zu: %s", i, why);
            goto out;
        }
        total += in->text.len;
    }
    if (total > MEM_APPEND_BYTES_MAX) {
        e = mem_fail(c, AOS_ERR_TOO_BIG, "the pages hold %zu bytes, one append takes at most "
                     "%u", total, MEM_APPEND_BYTES_MAX);
        goto out;
    }
    if (!(a = lock_agent(c, &e)))
        goto out;
    size_t live = mem_win_live(a->win, NULL);
    if (live + rq->n_pages > MEM_PAGES_MAX) {
        e = mem_fail(c, AOS_ERR_QUOTA, "the window of %s holds %zu pages; %zu more would pass "
                     "the cap of %u pages per agent (store documents in archival memory "
                     "instead)", a->id, live, rq->n_pages, MEM_PAGES_MAX);
        unlock_agent(c, a);
        a = NULL;
        goto out;
    }
    app_arg x = {a, rq, trust, src, ratio_of(c, a)};
    int replayed = 0;
    e = mem_tx(c, append_tx, &x, &replayed);
    if (!e && !replayed) {
        uint64_t now = aos_now_ms();
        for (size_t i = 0; i < rq->n_pages && !a->stale; i++) {
            const Aos__Memory__PageIn *in = rq->pages[i];
            mem_page *p = mem_page_new(a->next_page + i, (int)in->kind, trust[i], src[i],
                                       in->text.data, in->text.len);
            if (p) {
                p->pinned = in->pinned || (int)in->kind == MEM_PINNED;
                p->created_ms = p->last_use_ms = now;
            }
            if (!p || mem_win_add(a->win, p)) {
                mem_page_free(p);
                a->stale = 1;   /* committed: PostgreSQL has it, read it back */
            }
        }
        a->next_page += rq->n_pages;
    }
    settle(a, e, replayed);
    unlock_agent(c, a);
out:
    free(trust);
    free(src);
    mem_free(rq);
    return e;
}

/* ---- memory.page.in (and the page-ins of pin and search) --------------------------- */

static const db_stmt st_page_in = {
    "mem_page_in",
    "UPDATE memory.pages SET swapped = false, uses = uses + 1, last_use = now(), "
    "last_use_mark = $3 WHERE agent_id = $1 AND page_id = $2 AND NOT dead RETURNING body", 3};
static const db_stmt st_touch = {
    "mem_touch",
    "UPDATE memory.pages SET uses = uses + 1, last_use = now(), last_use_mark = $3 "
    "WHERE agent_id = $1 AND page_id = $2", 3};

typedef struct pin_arg {
    mem_agent *a;
    const uint64_t *ids;
    size_t n;
    uint8_t **bodies;              /* swapped pages' text read back (malloc'd), else NULL */
    size_t *lens;
    int reply;                     /* build a PageInReply */
} pin_arg;

static aos_err pagein_tx(mem_call *c, void *arg)
{
    pin_arg *x = arg;
    aos_err e = AOS_OK;
    for (size_t i = 0; i < x->n; i++) {
        mem_page *p = mem_win_find(x->a->win, x->ids[i]);
        db_params q;
        dp_init(&q);
        dp_text(&q, x->a->id);
        dp_i64(&q, (int64_t)x->ids[i]);
        dp_i64(&q, (int64_t)mem_win_newest(x->a->win));
        if (p->resident) {
            if ((e = mem_exec_void(c, &st_touch, &q)))
                return e;
            continue;
        }
        PGresult *r;
        if ((e = mem_exec(c, &st_page_in, &q, &r)))
            return e;
        if (PQntuples(r) != 1) {
            PQclear(r);
            return mem_fail(c, AOS_ERR_NOT_FOUND, "no page %llu",
                            (unsigned long long)x->ids[i]);
        }
        size_t len;
        const uint8_t *b = db_bytes(r, 0, 0, &len);
        free(x->bodies[i]);
        x->bodies[i] = malloc(len + 1);
        if (!x->bodies[i]) {
            PQclear(r);
            return mem_fail(c, AOS_ERR_NOMEM, "out of memory");
        }
        memcpy(x->bodies[i], b, len);
        x->bodies[i][len] = 0;
        x->lens[i] = len;
        PQclear(r);
    }
    if (!x->reply)
        return AOS_OK;
    Aos__Memory__PageText *pt = calloc(x->n, sizeof *pt), **pp = calloc(x->n, sizeof *pp);
    if (!pt || !pp) {
        free(pt);
        free(pp);
        return mem_fail(c, AOS_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < x->n; i++) {
        mem_page *p = mem_win_find(x->a->win, x->ids[i]);
        aos__memory__page_text__init(&pt[i]);
        pt[i].page_id = x->ids[i];
        pt[i].faulted = x->bodies[i] != NULL;
        pt[i].text.data = x->bodies[i] ? x->bodies[i] : p->text;
        pt[i].text.len = x->bodies[i] ? x->lens[i] : p->bytes;
        pp[i] = &pt[i];
    }
    Aos__Memory__PageInReply rep = AOS__MEMORY__PAGE_IN_REPLY__INIT;
    rep.n_pages = x->n;
    rep.pages = pp;
    e = mem_reply(c, &rep.base);
    free(pt);
    free(pp);
    return e;
}

/* Apply a committed page-in to the window. */
static void pagein_apply(mem_call *c, pin_arg *x)
{
    uint64_t now = aos_now_ms();
    for (size_t i = 0; i < x->n; i++) {
        mem_page *p = mem_win_find(x->a->win, x->ids[i]);
        if (!p)
            continue;
        if (x->bodies[i]) {
            if (mem_win_swap_in(x->a->win, p, x->bodies[i], x->lens[i]))
                x->a->stale = 1;
            x->a->faults++;
            x->a->bytes_in += x->lens[i];
            atomic_fetch_add(&c->st->faults, 1);
            atomic_fetch_add(&c->st->bytes_in, x->lens[i]);
            x->bodies[i] = NULL;   /* the window has it */
        }
        mem_win_touch(x->a->win, p, now);
    }
}

static void pin_arg_clear(pin_arg *x)
{
    for (size_t i = 0; i < x->n; i++)
        free(x->bodies[i]);
    free(x->bodies);
    free(x->lens);
}

/* Page in ids (which must be pages of a, live) in one transaction: idempotent records when
 * recorded is set (memory.page.in), else plain (a search's automatic page-ins). */
static aos_err page_in(mem_call *c, mem_agent *a, const uint64_t *ids, size_t n, int recorded,
                       int reply)
{
    pin_arg x = {a, ids, n, calloc(n ? n : 1, sizeof(uint8_t *)),
                 calloc(n ? n : 1, sizeof(size_t)), reply};
    aos_err e;
    int replayed = 0;
    if (!x.bodies || !x.lens)
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
    else if (recorded)
        e = mem_tx(c, pagein_tx, &x, &replayed);
    else
        e = mem_tx_plain(c, pagein_tx, &x);
    if (!e && !replayed)
        pagein_apply(c, &x);
    settle(a, e, replayed);
    pin_arg_clear(&x);
    return e;
}

aos_err op_page_in(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__PageInRequest *rq = mem_decode(c, &aos__memory__page_in_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if (!rq->n_page_ids || rq->n_page_ids > MEM_PAGE_IN_MAX) {
        e = mem_fail(c, AOS_ERR_USAGE, "%zu page ids: one page-in takes 1 to %u",
                     rq->n_page_ids, MEM_PAGE_IN_MAX);
        goto out;
    }
    mem_agent *a = lock_agent(c, &e);
    if (!a)
        goto out;
    size_t bytes = 0;
    for (size_t i = 0; i < rq->n_page_ids && !e; i++) {
        mem_page *p = mem_win_find(a->win, rq->page_ids[i]);
        if (!p || p->dead)
            e = mem_fail(c, AOS_ERR_NOT_FOUND, "%s has no page %llu", a->id,
                         (unsigned long long)rq->page_ids[i]);
        else
            bytes += p->bytes;
        for (size_t j = 0; j < i && !e; j++)
            if (rq->page_ids[j] == rq->page_ids[i])
                e = mem_fail(c, AOS_ERR_USAGE, "page %llu is named twice",
                             (unsigned long long)rq->page_ids[i]);
    }
    if (!e && bytes > MEM_APPEND_BYTES_MAX)
        e = mem_fail(c, AOS_ERR_TOO_BIG, "those pages hold %zu bytes, one page-in returns at "
                     "most %u: ask for fewer", bytes, MEM_APPEND_BYTES_MAX);
    if (!e)
        e = page_in(c, a, rq->page_ids, rq->n_page_ids, 1, 1);
    unlock_agent(c, a);
out:
    mem_free(rq);
    return e;
}

/* Search hits on evicted pages (archive.c): page them in, in one plain transaction. */
aos_err mem_page_in_hits(mem_call *c, const uint64_t *ids, size_t n, int *done);
aos_err mem_page_in_hits(mem_call *c, const uint64_t *ids, size_t n, int *done)
{
    aos_err e;
    mem_agent *a = lock_agent(c, &e);
    if (!a)
        return e;
    uint64_t *want = malloc((n ? n : 1) * sizeof *want);
    size_t m = 0;
    if (!want) {
        unlock_agent(c, a);
        return mem_fail(c, AOS_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        mem_page *p = mem_win_find(a->win, ids[i]);
        done[i] = 0;
        if (!p || p->dead || p->resident)
            continue;
        int dup = 0;
        for (size_t j = 0; j < m; j++)
            dup |= want[j] == ids[i];
        if (!dup && m < MEM_PAGE_IN_MAX)
            want[m++] = ids[i];
    }
    e = m ? page_in(c, a, want, m, 0, 0) : AOS_OK;
    for (size_t i = 0; i < n && !e; i++)
        for (size_t j = 0; j < m; j++)
            if (want[j] == ids[i])
                done[i] = 1;
    free(want);
    unlock_agent(c, a);
    return e;
}

/* ---- memory.page.pin / unpin ------------------------------------------------------- */

static const db_stmt st_pin = {
    "mem_pin",
    "UPDATE memory.pages SET pinned = $3 WHERE agent_id = $1 AND page_id = $2 AND NOT dead",
    3};

typedef struct pinset_arg {
    mem_agent *a;
    uint64_t id;
    int pinned, changed;
} pinset_arg;

static aos_err pinset_tx(mem_call *c, void *arg)
{
    pinset_arg *x = arg;
    db_params p;
    dp_init(&p);
    dp_text(&p, x->a->id);
    dp_i64(&p, (int64_t)x->id);
    dp_bool(&p, x->pinned);
    aos_err e = mem_exec_void(c, &st_pin, &p);
    if (e)
        return e;
    Aos__Memory__PinReply rep = AOS__MEMORY__PIN_REPLY__INIT;
    rep.changed = x->changed;
    return mem_reply(c, &rep.base);
}

static aos_err pin_set(mem_call *c, int pinned)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__PinRequest *rq = mem_decode(c, &aos__memory__pin_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    mem_agent *a = lock_agent(c, &e);
    if (!a)
        goto out;
    mem_page *p = mem_win_find(a->win, rq->page_id);
    char why[200];
    if (!p || p->dead) {
        e = mem_fail(c, AOS_ERR_NOT_FOUND, "%s has no page %llu", a->id,
                     (unsigned long long)rq->page_id);
    } else if (pinned && mem_page_allowed(p->kind, p->trust, 1, why, sizeof why)) {
        e = mem_fail(c, AOS_ERR_REFUSED, "page %llu: %s", (unsigned long long)rq->page_id, why);
    } else if (!pinned && p->kind == MEM_PINNED) {
        e = mem_fail(c, AOS_ERR_USAGE, "page %llu is a pinned note (its kind): append it as "
                     "another kind to have it unpinned", (unsigned long long)rq->page_id);
    } else if (p->kind == MEM_SYSTEM || p->kind == MEM_TOOLS) {
        e = mem_fail(c, AOS_ERR_USAGE, "page %llu is part of the stable prefix by its kind",
                     (unsigned long long)rq->page_id);
    } else {
        /* a swapped page comes back first: the prefix holds only resident pages */
        if (pinned && !p->resident)
            e = page_in(c, a, &rq->page_id, 1, 0, 0);
        if (!e) {
            pinset_arg x = {a, rq->page_id, pinned, (int)p->pinned != pinned};
            int replayed = 0;
            e = mem_tx(c, pinset_tx, &x, &replayed);
            if (!e && !replayed && mem_win_set_pinned(a->win, p, pinned))
                a->stale = 1;
            settle(a, e, replayed);
        }
    }
    unlock_agent(c, a);
out:
    mem_free(rq);
    return e;
}

aos_err op_pin(mem_call *c) { return pin_set(c, 1); }
aos_err op_unpin(mem_call *c) { return pin_set(c, 0); }

/* ---- memory.budget.set --------------------------------------------------------------- */

typedef struct bud_arg {
    mem_agent *a;
    uint64_t budget, reserve;
} bud_arg;

static aos_err budget_tx(mem_call *c, void *arg)
{
    bud_arg *x = arg;
    aos_err e = upsert_agent(c, x->a, x->budget, x->reserve, x->a->next_page);
    if (e)
        return e;
    Aos__Memory__BudgetReply rep = AOS__MEMORY__BUDGET_REPLY__INIT;
    rep.budget = x->budget;
    rep.reserve = x->reserve;
    return mem_reply(c, &rep.base);
}

/* A budget and reserve from the wire (signed, so that a negative one is seen as such). */
static aos_err check_budget(mem_call *c, int64_t budget, int64_t reserve)
{
    if (budget < MEM_BUDGET_MIN || budget > MEM_BUDGET_MAX)
        return mem_fail(c, AOS_ERR_USAGE, "budget %lld tokens: want %d to %d",
                        (long long)budget, MEM_BUDGET_MIN, MEM_BUDGET_MAX);
    if (reserve < 0 || reserve > budget / 2)
        return mem_fail(c, AOS_ERR_USAGE, "reserve %lld tokens: want 0 to half the budget "
                        "(%lld)", (long long)reserve, (long long)(budget / 2));
    return AOS_OK;
}

aos_err op_budget(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__BudgetRequest *rq = mem_decode(c, &aos__memory__budget_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = check_budget(c, rq->budget, rq->reserve)))
        goto out;
    mem_agent *a = lock_agent(c, &e);
    if (!a)
        goto out;
    bud_arg x = {a, (uint64_t)rq->budget, (uint64_t)rq->reserve};
    int replayed = 0;
    e = mem_tx(c, budget_tx, &x, &replayed);
    if (!e && !replayed) {
        a->budget = x.budget;
        a->reserve = x.reserve;
    }
    settle(a, e, replayed);
    unlock_agent(c, a);
out:
    mem_free(rq);
    return e;
}

/* ---- memory.show --------------------------------------------------------------------- */

#define SHOW_TEXT_MAX (2u << 20)   /* text one show carries; later pages' is left out */

aos_err op_show(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__ShowRequest *rq = mem_decode(c, &aos__memory__show_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    mem_agent *a = lock_agent(c, &e);
    if (!a)
        goto out;
    double r = ratio_of(c, a);
    size_t n = mem_win_count(a->win), k = 0, text = 0;
    Aos__Memory__PageInfo *pi = calloc(n ? n : 1, sizeof *pi), **pp = calloc(n ? n : 1,
                                                                           sizeof *pp);
    if (!pi || !pp) {
        e = mem_fail(c, AOS_ERR_NOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            const mem_page *p = mem_win_at(a->win, i);
            if (p->dead)
                continue;
            Aos__Memory__PageInfo *o = &pi[k];
            aos__memory__page_info__init(o);
            o->page_id = p->id;
            o->kind = p->kind;
            o->tokens = mem_est_tokens(r, p->resident ? p->cbytes : p->bytes);
            o->created_ms = p->created_ms;
            o->last_use_ms = p->last_use_ms;
            o->uses = p->uses;
            o->pinned = p->pinned;
            o->resident = p->resident;
            o->trust = p->trust;
            o->source = (ProtobufCBinaryData){strlen(p->source), (uint8_t *)p->source};
            o->summary = (ProtobufCBinaryData){strlen(p->summary), (uint8_t *)p->summary};
            o->bytes = p->bytes;
            if (rq->with_text && p->resident && text + p->bytes <= SHOW_TEXT_MAX) {
                o->text = (ProtobufCBinaryData){p->bytes, p->text};
                text += p->bytes;
            }
            pp[k++] = o;
        }
        Aos__Memory__ShowReply rep = AOS__MEMORY__SHOW_REPLY__INIT;
        rep.budget = a->budget;
        rep.reserve = a->reserve;
        rep.tokens = mem_win_tokens(a->win, r);
        rep.n_pages = k;
        rep.pages = pp;
        rep.faults = a->faults;
        rep.evictions = a->evictions;
        rep.bytes_out = a->bytes_out;
        rep.bytes_in = a->bytes_in;
        rep.compactions = a->compactions;
        rep.assemblies = a->assemblies;
        rep.prefix_reuse_pct = a->prefix_pct;
        rep.reported_tokens = a->reported;
        rep.tokens_per_byte = r;
        e = mem_reply(c, &rep.base);
    }
    free(pi);
    free(pp);
    unlock_agent(c, a);
out:
    mem_free(rq);
    return e;
}

/* ---- memory.assemble ------------------------------------------------------------------ */

static const db_stmt st_swap_out = {
    "mem_swap_out",
    "UPDATE memory.pages SET swapped = true, summary = $3 WHERE agent_id = $1 AND "
    "page_id = $2 AND NOT swapped AND NOT pinned", 3};

typedef struct evict_arg {
    mem_agent *a;
    const uint64_t *ids;
    size_t n;
    char (*sum)[MEM_SUMMARY_MAX + 1];
} evict_arg;

static aos_err evict_tx(mem_call *c, void *arg)
{
    evict_arg *x = arg;
    aos_err e;
    for (size_t i = 0; i < x->n; i++) {
        mem_page *p = mem_win_find(x->a->win, x->ids[i]);
        db_params q;
        dp_init(&q);
        dp_text(&q, x->a->id);
        dp_i64(&q, (int64_t)x->ids[i]);
        dp_text(&q, x->sum[i]);
        if ((e = mem_exec_void(c, &st_swap_out, &q)) ||
            (e = mem_archive_evicted(c, p, p->text, p->bytes)))
            return e;
    }
    return AOS_OK;
}

/* One line from aos-llm for page p, through llm.chat with model; 0 on success. */
static int llm_summary(mem_call *c, const char *model, const mem_page *p,
                       char out[MEM_SUMMARY_MAX + 1])
{
    static const char ask[] = "Summarise the following in one line of at most 20 words.\n\n";
    size_t tl = p->bytes < 4000 ? p->bytes : 4000;
    while (tl > 0 && tl < p->bytes && (p->text[tl] & 0xC0) == 0x80)
        tl--;   /* cut on a character boundary */
    uint8_t *prompt = malloc(sizeof ask + tl);
    if (!prompt)
        return -1;
    memcpy(prompt, ask, sizeof ask - 1);
    memcpy(prompt + sizeof ask - 1, p->text, tl);
    Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT, *pp = &part;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = (ProtobufCBinaryData){sizeof ask - 1 + tl, prompt};
    Aos__Llm__Message m = AOS__LLM__MESSAGE__INIT, *mp = &m;
    m.role = AOS__LLM__ROLE__USER;
    m.n_content = 1;
    m.content = &pp;
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = (ProtobufCBinaryData){strlen(model), (uint8_t *)model};
    q.n_messages = 1;
    q.messages = &mp;
    q.max_tokens = 60;
    size_t n = aos__llm__chat_request__get_packed_size(&q);
    uint8_t *buf = malloc(n);
    int rc = -1;
    if (buf) {
        aos__llm__chat_request__pack(&q, buf);
        aos_reply r;
        if (srv_request(c->s, c->call, "llm.chat", buf, n, 10000, &r) == AOS_OK) {
            Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, r.payload_len,
                                                                   r.payload);
            if (cr && cr->message && cr->message->n_content &&
                aos_utf8_valid(cr->message->content[0]->text.data,
                               cr->message->content[0]->text.len)) {
                mem_summary_extract(cr->message->content[0]->text.data,
                                    cr->message->content[0]->text.len, out);
                rc = out[0] ? 0 : -1;
            }
            if (cr)
                aos__llm__chat_reply__free_unpacked(cr, NULL);
        }
        aos_reply_clear(&r);
    }
    free(buf);
    free(prompt);
    return rc;
}

/* Swap out the pages plan chose, write-through first. */
static aos_err evict(mem_call *c, mem_agent *a, const uint64_t *ids, size_t n,
                     const char *summary_model)
{
    char (*sum)[MEM_SUMMARY_MAX + 1] = calloc(n, sizeof *sum);
    if (!sum)
        return mem_fail(c, AOS_ERR_NOMEM, "out of memory");
    unsigned llm = 0;
    for (size_t i = 0; i < n; i++) {
        mem_page *p = mem_win_find(a->win, ids[i]);
        /* an untrusted page's stub never shows its words, so no summary is written */
        if (summary_model && *summary_model && llm < MEM_SUMMARY_LLM_MAX &&
            p->trust != MEM_TRUST_UNTRUSTED && llm_summary(c, summary_model, p, sum[i]) == 0) {
            llm++;
            continue;
        }
        mem_summary_extract(p->text, p->bytes, sum[i]);
    }
    atomic_fetch_add(&c->st->llm_summaries, llm);
    evict_arg x = {a, ids, n, sum};
    aos_err e = mem_tx_plain(c, evict_tx, &x);
    if (!e) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < n; i++) {
            mem_page *p = mem_win_find(a->win, ids[i]);
            bytes += p->bytes;
            mem_win_swap_out(a->win, p, sum[i]);
        }
        a->evictions += n;
        a->bytes_out += bytes;
        a->compactions++;
        atomic_fetch_add(&c->st->evictions, n);
        atomic_fetch_add(&c->st->bytes_out, bytes);
        atomic_fetch_add(&c->st->compactions, 1);
    }
    settle(a, e, 0);
    free(sum);
    return e;
}

aos_err op_assemble(mem_call *c)
{
    aos_err e;
    if ((e = need_agent(c)))
        return e;
    Aos__Memory__AssembleRequest *rq = mem_decode(c,
                                                  &aos__memory__assemble_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    char model[MEM_MODEL_MAX + 1], smodel[MEM_MODEL_MAX + 1];
    if ((e = mem_valid_text(c, rq->model, MEM_MODEL_MAX, 1, "model")) ||
        (e = mem_valid_text(c, rq->summary_model, MEM_MODEL_MAX, 1, "summary_model")))
        goto out;
    snprintf(model, sizeof model, "%.*s", (int)rq->model.len, (const char *)rq->model.data);
    snprintf(smodel, sizeof smodel, "%.*s", (int)rq->summary_model.len,
             (const char *)rq->summary_model.data);
    if ((rq->budget || rq->reserve) && (e = check_budget(c, rq->budget, rq->reserve)))
        goto out;
    mem_agent *a = lock_agent(c, &e);
    if (!a)
        goto out;
    if (model[0])
        snprintf(a->model, sizeof a->model, "%s", model);
    if (rq->last_usage && a->last_bytes) {
        uint64_t rep = rq->last_usage->input_tokens + rq->last_usage->cache_read_tokens +
                       rq->last_usage->cache_write_tokens;
        if (mem_est_observe(c->st->est, a->model, a->last_bytes, rep)) {
            a->reported = rep;
            atomic_fetch_add(&c->st->reports, 1);
        }
    }
    uint64_t budget = rq->budget ? (uint64_t)rq->budget : a->budget;
    uint64_t reserve = rq->budget ? (uint64_t)rq->reserve : a->reserve;
    uint64_t limit = budget - reserve;
    double r = ratio_of(c, a);
    uint32_t evicted = 0;
    int compacted = 0;
    /* stubs cost what the policy does not reckon (the low water leaves room for them):
     * another round in the rare case they did not fit */
    for (int round = 0; round < 6 && !e; round++) {
        uint64_t *ids = NULL, tokens;
        size_t n = 0;
        if ((e = mem_win_plan(a->win, r, limit, limit * MEM_LOW_WATER_PCT / 100, &ids, &n,
                              &tokens))) {
            e = mem_fail(c, e, "out of memory planning the eviction");
            break;
        }
        if (!n) {
            free(ids);
            break;
        }
        e = evict(c, a, ids, n, smodel);
        free(ids);
        if (!e) {
            evicted += (uint32_t)n;
            compacted = 1;
        }
    }
    if (!e) {
        mem_asm as;
        char why[AOS_ERRMSG_MAX];
        e = mem_win_assemble(a->win, r, limit, evicted, compacted, &as, why, sizeof why);
        if (e) {
            mem_fail(c, e, "%s", why);
        } else {
            free(c->rep->payload);
            c->rep->payload = as.payload;
            c->rep->len = as.len;
            a->assemblies++;
            a->last_bytes = as.cbytes;
            a->prefix_pct = as.prefix_pct;
            atomic_fetch_add(&c->st->assemblies, 1);
            atomic_fetch_add(&c->st->asm_changed, as.bytes_changed);
            atomic_fetch_add(&c->st->asm_out, as.bytes_out);
            atomic_store(&c->st->asm_last_changed, as.bytes_changed);
            atomic_store(&c->st->asm_last_out, as.bytes_out);
            atomic_fetch_add(&c->st->asm_prefix_tokens, as.prefix_tokens);
            atomic_fetch_add(&c->st->asm_tokens, as.tokens);
            atomic_store(&c->st->asm_last_pct, as.prefix_pct);
        }
    }
    unlock_agent(c, a);
out:
    mem_free(rq);
    return e;
}
