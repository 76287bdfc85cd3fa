/* Agents as aos-memory caches them: a hash table of windows, budgets and archival indexes,
 * each read lazily from PostgreSQL on first use after a start (or after a write whose
 * outcome was unknown), and dropped when idle and too many are cached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void agent_free(mem_agent *a)
{
    mem_win_free(a->win);
    for (unsigned i = 0; i < a->nspaces; i++)
        mem_vx_free(a->spaces[i].vx);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* Drop one idle agent (the least recently touched): its state is all in PostgreSQL. */
static void drop_idle(mem_state *st)
{
    mem_agent **victim = NULL;
    uint64_t oldest = UINT64_MAX;
    for (size_t b = 0; b < MEM_BUCKETS; b++)
        for (mem_agent **pp = &st->bucket[b]; *pp; pp = &(*pp)->next)
            if (!(*pp)->busy && (*pp)->touched_ms < oldest) {
                oldest = (*pp)->touched_ms;
                victim = pp;
            }
    if (!victim)
        return;
    mem_agent *a = *victim;
    *victim = a->next;
    st->nagents--;
    atomic_fetch_add(&st->dropped_agents, 1);
    agent_free(a);
}

mem_agent *mem_agent_get(mem_state *st, const char *id)
{
    uint32_t b = hash(id) % MEM_BUCKETS;
    pthread_mutex_lock(&st->mu);
    mem_agent *a = st->bucket[b];
    while (a && strcmp(a->id, id))
        a = a->next;
    if (!a) {
        if (st->nagents >= MEM_AGENTS_MAX)
            drop_idle(st);
        if (st->nagents < MEM_AGENTS_MAX && (a = calloc(1, sizeof *a))) {
            snprintf(a->id, sizeof a->id, "%s", id);
            pthread_mutex_init(&a->mu, NULL);
            a->next = st->bucket[b];
            st->bucket[b] = a;
            st->nagents++;
        }
    }
    if (a) {
        a->busy++;
        a->touched_ms = aos_now_ms();
    }
    pthread_mutex_unlock(&st->mu);
    return a;
}

void mem_agent_put(mem_state *st, mem_agent *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&st->mu);
    a->busy--;
    pthread_mutex_unlock(&st->mu);
}

static const db_stmt st_agent = {
    "mem_agent", "SELECT budget, reserve, next_page FROM memory.agents WHERE agent_id = $1", 1};
/* Dead pages (replaced todo lists) are history nobody assembles: not read back. */
static const db_stmt st_pages = {
    "mem_pages",
    "SELECT page_id, kind, trust, source, pinned, swapped, summary, uses, last_use_mark, "
    "octet_length(body), CASE WHEN swapped THEN NULL ELSE body END, created_at, last_use "
    "FROM memory.pages WHERE agent_id = $1 AND NOT dead ORDER BY page_id", 1};
static const db_stmt st_nchunks = {
    "mem_nchunks", "SELECT count(*) FROM memory.chunks WHERE agent_id = $1", 1};

aos_err mem_agent_load(mem_call *c, mem_agent *a)
{
    if (a->loaded && !a->stale)
        return AOS_OK;
    PGresult *r = NULL;
    db_params p;
    dp_init(&p);
    dp_text(&p, a->id);
    aos_err e = mem_exec(c, &st_agent, &p, &r);
    if (e)
        return e;
    uint64_t budget = MEM_BUDGET_DEFAULT, reserve = MEM_RESERVE_DEFAULT, next = 1;
    if (PQntuples(r) == 1) {
        budget = (uint64_t)db_i64(r, 0, 0);
        reserve = (uint64_t)db_i64(r, 0, 1);
        next = (uint64_t)db_i64(r, 0, 2);
    }
    PQclear(r);
    if ((e = mem_exec(c, &st_pages, &p, &r)))
        return e;
    mem_window *w = mem_win_new();
    if (!w) {
        PQclear(r);
        return mem_fail(c, AOS_ERR_NOMEM, "out of memory reading the window");
    }
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        size_t sl, tl = 0, ml;
        const uint8_t *src = db_bytes(r, i, 3, &sl);
        int swapped = db_bool(r, i, 5);
        const uint8_t *text = swapped ? NULL : db_bytes(r, i, 10, &tl);
        const uint8_t *sum = db_bytes(r, i, 6, &ml);
        char source[MEM_SOURCE_MAX + 1];
        snprintf(source, sizeof source, "%.*s", (int)(sl < MEM_SOURCE_MAX ? sl : MEM_SOURCE_MAX),
                 (const char *)src);
        mem_page *pg = mem_page_new((uint64_t)db_i64(r, i, 0), db_i32(r, i, 1),
                                    db_i32(r, i, 2), source, text, tl);
        if (!pg) {
            e = AOS_ERR_NOMEM;
            break;
        }
        pg->pinned = db_bool(r, i, 4);
        pg->uses = (uint32_t)db_i32(r, i, 7);
        pg->last_use = (uint64_t)db_i64(r, i, 8);
        pg->bytes = (uint32_t)db_i32(r, i, 9);
        pg->created_ms = (uint64_t)mem_ts_ms(r, i, 11);
        pg->last_use_ms = (uint64_t)mem_ts_ms(r, i, 12);
        if (swapped) {
            free(pg->text);
            pg->text = NULL;
            pg->resident = 0;
            snprintf(pg->summary, sizeof pg->summary, "%.*s",
                     (int)(ml < MEM_SUMMARY_MAX ? ml : MEM_SUMMARY_MAX), (const char *)sum);
        }
        if ((e = mem_win_add(w, pg))) {
            mem_page_free(pg);
            break;
        }
    }
    PQclear(r);
    if (e) {
        mem_win_free(w);
        return mem_fail(c, e, "reading the window of %s: %s", a->id, aos_strerror(e));
    }
    if (a->loaded)
        atomic_fetch_add(&c->st->reloads, 1);
    mem_win_free(a->win);
    a->win = w;
    a->budget = budget;
    a->reserve = reserve;
    a->next_page = next;
    if (mem_win_newest(w) >= a->next_page)
        a->next_page = mem_win_newest(w) + 1;
    a->loaded = 1;
    a->stale = 0;
    /* the index may lag too after an unknown outcome: read it again when next needed */
    for (unsigned i = 0; i < a->nspaces; i++)
        mem_vx_free(a->spaces[i].vx);
    a->nspaces = 0;
    a->ncolls = 0;
    a->vx_loaded = 0;
    a->nchunks_known = 0;
    return AOS_OK;
}

uint32_t mem_agent_coll(mem_agent *a, const char *name, int make)
{
    for (unsigned i = 0; i < a->ncolls; i++)
        if (!strcmp(a->colls[i], name))
            return i + 1;
    if (!make || a->ncolls == MEM_COLLECTIONS_MAX)
        return 0;
    snprintf(a->colls[a->ncolls], sizeof a->colls[0], "%s", name);
    return ++a->ncolls;
}

mem_vspace *mem_agent_space(mem_agent *a, const char *model, uint32_t dim, int make)
{
    for (unsigned i = 0; i < a->nspaces; i++)
        if (!strcmp(a->spaces[i].model, model))
            return dim && mem_vx_dim(a->spaces[i].vx) != dim ? NULL : &a->spaces[i];
    if (!make || a->nspaces == MEM_MODELS_MAX)
        return NULL;
    mem_vindex *x = mem_vx_new(dim);
    if (!x)
        return NULL;
    mem_vspace *sp = &a->spaces[a->nspaces++];
    snprintf(sp->model, sizeof sp->model, "%s", model);
    sp->vx = x;
    return sp;
}

/* Vectors come back as float32 in the byte order aos-memory wrote them (its own). */
static const db_stmt st_vectors = {
    "mem_vectors",
    "SELECT id, collection, model, dim, embedding FROM memory.chunks "
    "WHERE agent_id = $1 AND embedding IS NOT NULL ORDER BY id", 1};

aos_err mem_agent_load_index(mem_call *c, mem_agent *a)
{
    aos_err e;
    if (!a->nchunks_known) {
        PGresult *r;
        db_params p;
        dp_init(&p);
        dp_text(&p, a->id);
        if ((e = mem_exec(c, &st_nchunks, &p, &r)))
            return e;
        a->nchunks = (uint64_t)db_i64(r, 0, 0);
        a->nchunks_known = 1;
        PQclear(r);
    }
    if (a->vx_loaded)
        return AOS_OK;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, a->id);
    if ((e = mem_exec(c, &st_vectors, &p, &r)))
        return e;
    int rows = PQntuples(r);
    for (int i = 0; i < rows && !e; i++) {
        size_t cl, ml, vl;
        const uint8_t *coll = db_bytes(r, i, 1, &cl), *model = db_bytes(r, i, 2, &ml);
        const uint8_t *v = db_bytes(r, i, 4, &vl);
        uint32_t dim = (uint32_t)db_i32(r, i, 3);
        char cn[MEM_COLLECTION_MAX + 1], mn[MEM_MODEL_MAX + 1];
        snprintf(cn, sizeof cn, "%.*s", (int)(cl < MEM_COLLECTION_MAX ? cl : 0),
                 (const char *)coll);
        snprintf(mn, sizeof mn, "%.*s", (int)(ml < MEM_MODEL_MAX ? ml : 0), (const char *)model);
        if (vl != (size_t)dim * 4 || !dim)
            continue;
        uint32_t ci = mem_agent_coll(a, cn, 1);
        mem_vspace *sp = mem_agent_space(a, mn, dim, 1);
        if (!ci || !sp)
            continue;   /* over the caps: searchable by full text only */
        float *f = malloc(vl);
        if (!f) {
            e = AOS_ERR_NOMEM;
            break;
        }
        memcpy(f, v, vl);
        e = mem_vx_add(sp->vx, (uint64_t)db_i64(r, i, 0), ci, f);
        free(f);
    }
    PQclear(r);
    if (e)
        return mem_fail(c, e, "reading the vector index of %s", a->id);
    a->vx_loaded = 1;
    return AOS_OK;
}
