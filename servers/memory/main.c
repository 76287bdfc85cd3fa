/* aos-memory: agents' context windows paged between RAM and PostgreSQL, cache-aware prompt
 * assembly, and archival memory with hybrid retrieval, served as "memory.<op>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "aos/log.h"
#include "mem.h"

typedef struct attempt_arg {
    mem_call *c;
    mem_fn fn;
} attempt_arg;

static aos_err attempt(PGconn *db, void *arg, srv_reply *rep)
{
    attempt_arg *a = arg;
    (void)rep;
    a->c->db = db;
    return a->fn(a->c);
}

/* Every method: db_run gives the handler the worker's connection, waits for the database
 * when it is away and runs the handler again when it went away under it: reads are
 * repeatable, writes answer from their idempotency record, and an assembly's evictions
 * are idempotent updates (a page already swapped is not swapped again). */
static aos_err dispatch(srv *s, const aos_env *req, srv_reply *rep, const char *op, mem_fn fn)
{
    mem_state *st = srv_state(s);
    mem_call c = {
        .st = st,
        .s = s,
        .call = rep->call,
        .agent = req->agent_id,
        .request_id = req->has_request_id ? req->request_id : NULL,
        .deadline_ms = req->deadline_ms,
        .op = op,
        .payload = req->payload,
        .len = req->payload_len,
        .rep = rep,
    };
    char what[64];
    snprintf(what, sizeof what, "memory.%s", op);
    attempt_arg a = {&c, fn};
    return db_serve(s, c.deadline_ms, what, rep, attempt, &a, &st->db);
}

#define WRAP(name, fn)                                                                     \
    static aos_err w_##fn(srv *s, const aos_env *req, srv_reply *rep)                      \
    {                                                                                      \
        return dispatch(s, req, rep, name, fn);                                            \
    }
MEM_OP_TABLE(WRAP)
#undef WRAP

#define METHOD(name, h) {.op = name, .fn = w_##h},
static const srv_method methods[] = {MEM_OP_TABLE(METHOD)};
#undef METHOD

static aos_err m_open(srv *s, char *why, size_t whylen)
{
    if (sodium_init() < 0) {
        snprintf(why, whylen, "libsodium failed to initialise");
        return AOS_ERR_INTERNAL;
    }
    mem_state *st = calloc(1, sizeof *st);
    if (!st || !(st->est = mem_est_new())) {
        free(st);
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    pthread_mutex_init(&st->mu, NULL);
    srv_set_state(s, st);
    aos_info("caps: %u pages and %u archival chunks per agent, %u bytes per page",
             MEM_PAGES_MAX, MEM_CHUNKS_MAX, MEM_PAGE_BYTES_MAX);
    return AOS_OK;
}

#define STAT(n, v, t) srv_stat(out, n, (int64_t)(v), t)

static void m_stats(srv *s, srv_stats *out)
{
    mem_state *st = srv_state(s);
    if (!st)
        return;
    uint64_t asm_n = atomic_load(&st->assemblies), tok = atomic_load(&st->asm_tokens);
    STAT("memory_calls", atomic_load(&st->db.calls), NULL);
    STAT("memory_errors", atomic_load(&st->db.errors), NULL);
    STAT("durable_replays", atomic_load(&st->n_replays),
         "retried requests answered from their idempotency record");
    STAT("db_reruns", atomic_load(&st->db.reruns),
         "transactions run again after the database went away");
    STAT("db_waited_ms", atomic_load(&st->db.waited_ms), NULL);
    STAT("page_faults", atomic_load(&st->faults), "swapped pages brought back in");
    STAT("evictions", atomic_load(&st->evictions), "pages swapped out");
    STAT("bytes_out", atomic_load(&st->bytes_out), "page text swapped out to PostgreSQL");
    STAT("bytes_in", atomic_load(&st->bytes_in), "page text paged back in");
    STAT("compactions", atomic_load(&st->compactions), "eviction steps (each many pages)");
    STAT("assemblies", asm_n, NULL);
    STAT("assembly_bytes_changed", atomic_load(&st->asm_changed),
         "renderings copied into windows by assemblies: only changed pages");
    STAT("assembly_bytes_output", atomic_load(&st->asm_out),
         "messages' bytes copied into assembled replies");
    STAT("last_assembly_bytes_changed", atomic_load(&st->asm_last_changed), NULL);
    STAT("last_assembly_bytes_output", atomic_load(&st->asm_last_out), NULL);
    STAT("prefix_reuse_pct", tok ? atomic_load(&st->asm_prefix_tokens) * 100 / tok : 0,
         "assembled tokens identical to the same agent's previous prompt, over all");
    STAT("last_prefix_reuse_pct", atomic_load(&st->asm_last_pct), NULL);
    STAT("estimator_reports", mem_est_reports(st->est),
         "provider-reported prompt sizes the estimator learnt from");
    STAT("tokens_per_byte_x1000", mem_est_ratio(st->est, "") * 1000, NULL);
    STAT("stores", atomic_load(&st->stores), NULL);
    STAT("chunks_stored", atomic_load(&st->chunks_stored), NULL);
    STAT("searches", atomic_load(&st->searches), NULL);
    STAT("embed_calls", atomic_load(&st->embed_calls), "llm.embed through aosd");
    STAT("embed_failures", atomic_load(&st->embed_failures), NULL);
    STAT("llm_summaries", atomic_load(&st->llm_summaries), "stubs written by aos-llm");
    STAT("agent_reloads", atomic_load(&st->reloads),
         "windows read again after a write of unknown outcome");
    STAT("agents_dropped", atomic_load(&st->dropped_agents), "idle agents dropped from RAM");
    /* the cached agents' budgets, a few */
    pthread_mutex_lock(&st->mu);
    STAT("agents_cached", st->nagents, NULL);
    unsigned shown = 0;
    for (size_t b = 0; b < MEM_BUCKETS && shown < 32; b++)
        for (mem_agent *a = st->bucket[b]; a && shown < 32; a = a->next) {
            if (!a->loaded)
                continue;
            char name[AOS_AGENT_ID_MAX + 16], text[160];
            snprintf(name, sizeof name, "budget:%s", a->id);
            snprintf(text, sizeof text, "reserve %llu, %llu faults, %llu evictions, "
                     "prefix reuse %u%%", (unsigned long long)a->reserve,
                     (unsigned long long)a->faults, (unsigned long long)a->evictions,
                     a->prefix_pct);
            STAT(name, a->budget, text);
            shown++;
        }
    pthread_mutex_unlock(&st->mu);
}

int main(int argc, char **argv)
{
    srv_def def = {
        .name = "memory",
        .methods = methods,
        .n_methods = sizeof methods / sizeof methods[0],
        .schema = &mem_schema,
        .open = m_open,
        .add_stats = m_stats,
    };
    return srv_main(&def, argc, argv);
}
