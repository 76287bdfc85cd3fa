/* libaos memory (see aos/memory.h): each function checks its arguments, encodes one
 * memory.* request, calls aosd and turns the reply into what the caller owns. */
#include "aos/memory.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory.pb-c.h"
#include "rpc.h"

static aos_err say(char *why, size_t whylen, aos_err e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err say(char *why, size_t whylen, aos_err e, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return e;
}

static ProtobufCBinaryData txt(const char *s)
{
    return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)s};
}

static char *dups(ProtobufCBinaryData b)
{
    char *p = malloc(b.len + 1);
    if (p) {
        if (b.len)
            memcpy(p, b.data, b.len);
        p[b.len] = 0;
    }
    return p;
}

aos_err aos_mem_append(aos_conn *c, const aos_call_opts *o, const aos_mem_page *pages,
                       size_t n, uint64_t *ids, char *why, size_t whylen)
{
    if (!pages || !n || n > AOS_MEM_APPEND_MAX)
        return say(why, whylen, AOS_ERR_USAGE, "1 to %u pages", AOS_MEM_APPEND_MAX);
    Aos__Memory__PageIn *in = calloc(n, sizeof *in), **ip = calloc(n, sizeof *ip);
    aos_err e = AOS_ERR_NOMEM;
    if (!in || !ip) {
        say(why, whylen, e, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        aos__memory__page_in__init(&in[i]);
        in[i].kind = pages[i].kind;
        in[i].trust = pages[i].trust;
        in[i].source = txt(pages[i].source);
        in[i].text = (ProtobufCBinaryData){pages[i].len, (uint8_t *)pages[i].text};
        in[i].pinned = pages[i].pinned;
        ip[i] = &in[i];
    }
    Aos__Memory__AppendRequest rq = AOS__MEMORY__APPEND_REQUEST__INIT;
    rq.n_pages = n;
    rq.pages = ip;
    Aos__Memory__AppendReply *rp;
    if ((e = aos_rpc(c, o, "memory.page.append", &rq.base, &aos__memory__append_reply__descriptor,
                 (void **)&rp, why, whylen)))
        goto out;
    if (rp->n_pages != n)
        e = say(why, whylen, AOS_ERR_PROTO, "memory.page.append: %zu ids for %zu pages",
                rp->n_pages, n);
    for (size_t i = 0; !e && ids && i < n; i++)
        ids[i] = rp->pages[i]->page_id;
    aos__memory__append_reply__free_unpacked(rp, NULL);
out:
    free(in);
    free(ip);
    return e;
}

aos_err aos_mem_pin(aos_conn *c, const aos_call_opts *o, uint64_t page_id, int pinned,
                    char *why, size_t whylen)
{
    Aos__Memory__PinRequest rq = AOS__MEMORY__PIN_REQUEST__INIT;
    rq.page_id = page_id;
    return aos_rpc(c, o, pinned ? "memory.page.pin" : "memory.page.unpin", &rq.base, NULL, NULL,
               why, whylen);
}

aos_err aos_mem_page_in(aos_conn *c, const aos_call_opts *o, uint64_t page_id, uint8_t **text,
                        size_t *len, int *faulted, char *why, size_t whylen)
{
    if (text)
        *text = NULL;
    Aos__Memory__PageInRequest rq = AOS__MEMORY__PAGE_IN_REQUEST__INIT;
    rq.n_page_ids = 1;
    rq.page_ids = &page_id;
    Aos__Memory__PageInReply *rp;
    aos_err e = aos_rpc(c, o, "memory.page.in", &rq.base, &aos__memory__page_in_reply__descriptor,
                    (void **)&rp, why, whylen);
    if (e)
        return e;
    if (rp->n_pages != 1) {
        aos__memory__page_in_reply__free_unpacked(rp, NULL);
        return say(why, whylen, AOS_ERR_PROTO, "memory.page.in: no page in the reply");
    }
    if (faulted)
        *faulted = rp->pages[0]->faulted;
    if (len)
        *len = rp->pages[0]->text.len;
    if (text && !(*text = (uint8_t *)dups(rp->pages[0]->text)))
        e = say(why, whylen, AOS_ERR_NOMEM, "out of memory");
    aos__memory__page_in_reply__free_unpacked(rp, NULL);
    return e;
}

aos_err aos_mem_budget_set(aos_conn *c, const aos_call_opts *o, int64_t budget,
                           int64_t reserve, char *why, size_t whylen)
{
    Aos__Memory__BudgetRequest rq = AOS__MEMORY__BUDGET_REQUEST__INIT;
    rq.budget = budget;
    rq.reserve = reserve;
    return aos_rpc(c, o, "memory.budget.set", &rq.base, NULL, NULL, why, whylen);
}

aos_err aos_mem_assemble(aos_conn *c, const aos_call_opts *o, const aos_mem_assemble_opts *ao,
                         struct Aos__Memory__AssembleReply **out, char *why, size_t whylen)
{
    Aos__Memory__AssembleRequest rq = AOS__MEMORY__ASSEMBLE_REQUEST__INIT;
    Aos__Llm__Usage u = AOS__LLM__USAGE__INIT;
    if (ao) {
        rq.budget = ao->budget;
        rq.reserve = ao->reserve;
        rq.model = txt(ao->model);
        rq.summary_model = txt(ao->summary_model);
        if (ao->has_usage) {
            u.input_tokens = ao->input_tokens;
            u.cache_read_tokens = ao->cache_read_tokens;
            u.cache_write_tokens = ao->cache_write_tokens;
            rq.last_usage = &u;
        }
    }
    return aos_rpc(c, o, "memory.assemble", &rq.base, &aos__memory__assemble_reply__descriptor,
               (void **)out, why, whylen);
}

void aos_mem_prompt_free(struct Aos__Memory__AssembleReply *p)
{
    if (p)
        aos__memory__assemble_reply__free_unpacked(p, NULL);
}

aos_err aos_mem_store(aos_conn *c, const aos_call_opts *o, const char *collection,
                      const char *doc_id, const char *text, int trust, const char *model,
                      uint32_t *chunks, char *why, size_t whylen)
{
    if (!text || !*text)
        return say(why, whylen, AOS_ERR_USAGE, "text is missing");
    Aos__Memory__Doc d = AOS__MEMORY__DOC__INIT, *dp = &d;
    d.doc_id = txt(doc_id);
    d.text = txt(text);
    d.trust = trust;
    Aos__Memory__StoreRequest rq = AOS__MEMORY__STORE_REQUEST__INIT;
    rq.collection = txt(collection);
    rq.n_docs = 1;
    rq.docs = &dp;
    rq.model = txt(model);
    Aos__Memory__StoreReply *rp;
    aos_err e = aos_rpc(c, o, "memory.store", &rq.base, &aos__memory__store_reply__descriptor,
                    (void **)&rp, why, whylen);
    if (e)
        return e;
    if (chunks)
        *chunks = rp->chunks;
    aos__memory__store_reply__free_unpacked(rp, NULL);
    return AOS_OK;
}

aos_err aos_mem_search(aos_conn *c, const aos_call_opts *o, const char *query,
                       const aos_mem_search_opts *so, aos_mem_hits **out, char *why,
                       size_t whylen)
{
    *out = NULL;
    if (!query || !*query)
        return say(why, whylen, AOS_ERR_USAGE, "query is missing");
    Aos__Memory__SearchRequest rq = AOS__MEMORY__SEARCH_REQUEST__INIT;
    rq.query = txt(query);
    if (so) {
        rq.collection = txt(so->collection);
        rq.owner = txt(so->owner);
        rq.limit = so->limit;
        rq.mode = so->mode;
        rq.model = txt(so->model);
        rq.page_in = so->page_in;
    }
    Aos__Memory__SearchReply *rp;
    aos_err e = aos_rpc(c, o, "memory.search", &rq.base, &aos__memory__search_reply__descriptor,
                    (void **)&rp, why, whylen);
    if (e)
        return e;
    aos_mem_hits *h = calloc(1, sizeof *h);
    if (!h || !(h->hits = calloc(rp->n_hits ? rp->n_hits : 1, sizeof *h->hits))) {
        free(h);
        aos__memory__search_reply__free_unpacked(rp, NULL);
        return say(why, whylen, AOS_ERR_NOMEM, "out of memory");
    }
    h->embedded = rp->embedded;
    for (size_t i = 0; i < rp->n_hits; i++) {
        const Aos__Memory__Hit *s = rp->hits[i];
        aos_mem_hit *d = &h->hits[h->n++];
        d->chunk_id = s->chunk_id;
        d->page_id = s->page_id;
        d->collection = dups(s->collection);
        d->doc_id = dups(s->doc_id);
        d->text = dups(s->text);
        d->seq = s->seq;
        d->score = s->score;
        d->fts_rank = s->fts_rank;
        d->vec_score = s->vec_score;
        d->fts_pos = s->fts_pos;
        d->vec_pos = s->vec_pos;
        d->paged_in = s->paged_in;
        d->trust = s->trust;
        if (!d->collection || !d->doc_id || !d->text)
            e = AOS_ERR_NOMEM;
    }
    aos__memory__search_reply__free_unpacked(rp, NULL);
    if (e) {
        aos_mem_hits_free(h);
        return say(why, whylen, e, "out of memory");
    }
    *out = h;
    return AOS_OK;
}

void aos_mem_hits_free(aos_mem_hits *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->hits[i].collection);
        free(h->hits[i].doc_id);
        free(h->hits[i].text);
    }
    free(h->hits);
    free(h);
}

aos_err aos_mem_share(aos_conn *c, const aos_call_opts *o, const char *collection,
                      const char *agent, int revoke, char *why, size_t whylen)
{
    Aos__Memory__ShareRequest rq = AOS__MEMORY__SHARE_REQUEST__INIT;
    rq.collection = txt(collection);
    rq.agent = txt(agent);
    rq.revoke = revoke;
    return aos_rpc(c, o, "memory.share", &rq.base, NULL, NULL, why, whylen);
}
