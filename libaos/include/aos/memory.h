/* libaos memory: an agent's context window through aos-memory (append pages, pin, page in,
 * budget, assemble the prompt) and its archival memory (store, search, share).
 *
 * Conventions as in aos/storage.h: c and o as for aos_call (o->agent_id names the acting
 * agent on the control socket); writes are idempotent by o->request_id; the return value
 * is the outcome and `why` (may be NULL) the message; whatever is returned through a
 * pointer is malloc'd and the caller's, freed as each function says. */
#ifndef AOS_MEMORY_H
#define AOS_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "aos/aos.h"

/* Page kinds and trust levels (memory.proto's Kind and Trust). */
enum {
    AOS_MEM_SYSTEM = 1, AOS_MEM_TOOLS, AOS_MEM_PINNED, AOS_MEM_TODO, AOS_MEM_USER,
    AOS_MEM_ASSISTANT, AOS_MEM_TOOL_RESULT, AOS_MEM_DOCUMENT, AOS_MEM_SUMMARY
};
enum { AOS_MEM_TRUST_DEFAULT = 0, AOS_MEM_TRUST_OWN, AOS_MEM_TRUST_USER,
       AOS_MEM_TRUST_UNTRUSTED };

/* The caps aos-memory enforces (servers/memory/mem.h has them all). */
#define AOS_MEM_PAGE_BYTES_MAX (1u << 20)
#define AOS_MEM_APPEND_MAX 256u

typedef struct aos_mem_page {
    int kind;                  /* AOS_MEM_* */
    int trust;                 /* AOS_MEM_TRUST_*; a tool result is untrusted regardless */
    const char *source;        /* "tool:sh", "web:…" (NULL: none); labels untrusted pages */
    const void *text;          /* UTF-8 */
    size_t len;
    int pinned;
} aos_mem_page;

/* Append pages (1..AOS_MEM_APPEND_MAX) as one transaction. ids (room for n, may be NULL)
 * get their page ids. QUOTA when the window would pass its page cap; REFUSED for untrusted
 * data as a system prompt, tool catalogue, pinned note or todo list. */
aos_err aos_mem_append(aos_conn *c, const aos_call_opts *o, const aos_mem_page *pages,
                       size_t n, uint64_t *ids, char *why, size_t whylen);
/* Pin (pinned 1: into the stable prefix, paged in if it was out) or unpin a page. */
aos_err aos_mem_pin(aos_conn *c, const aos_call_opts *o, uint64_t page_id, int pinned,
                    char *why, size_t whylen);
/* Bring a page back into the window: *text (malloc'd, NUL after len) is its text, byte
 * for byte as appended; *faulted (may be NULL) says whether it was swapped out. */
aos_err aos_mem_page_in(aos_conn *c, const aos_call_opts *o, uint64_t page_id, uint8_t **text,
                        size_t *len, int *faulted, char *why, size_t whylen);
/* The agent's context budget and the reserve for the reply, in tokens. */
aos_err aos_mem_budget_set(aos_conn *c, const aos_call_opts *o, int64_t budget,
                           int64_t reserve, char *why, size_t whylen);

struct Aos__Memory__AssembleReply;   /* memory.pb-c.h: messages are aos.llm Messages */

typedef struct aos_mem_assemble_opts {
    int64_t budget, reserve;   /* 0: the agent's budget */
    const char *model;         /* the model the prompt is for (NULL: none named) */
    int has_usage;             /* the provider's usage for the previous assembled prompt */
    uint64_t input_tokens, cache_read_tokens, cache_write_tokens;
    const char *summary_model; /* LLM-written stubs (NULL: extractive) */
} aos_mem_assemble_opts;

/* The prompt: (*out)->messages (n_messages, aos.llm Message, ready for a ChatRequest) and
 * (*out)->cache_breakpoint, with the figures of memory.proto's AssembleReply. Caller
 * frees *out with aos_mem_prompt_free. ao may be NULL. */
aos_err aos_mem_assemble(aos_conn *c, const aos_call_opts *o, const aos_mem_assemble_opts *ao,
                         struct Aos__Memory__AssembleReply **out, char *why, size_t whylen);
void aos_mem_prompt_free(struct Aos__Memory__AssembleReply *p);

/* Store one document in collection (NULL: "notes"), chunked and embedded with model
 * (NULL: "sim/sim-embed"); trust as for pages (default untrusted). *chunks (may be NULL)
 * how many chunks it made. */
aos_err aos_mem_store(aos_conn *c, const aos_call_opts *o, const char *collection,
                      const char *doc_id, const char *text, int trust, const char *model,
                      uint32_t *chunks, char *why, size_t whylen);

typedef struct aos_mem_hit {
    uint64_t chunk_id, page_id;          /* page_id: a chunk of an evicted page, else 0 */
    char *collection, *doc_id, *text;
    uint32_t seq;
    double score;                        /* fused (RRF) or the one method's */
    float fts_rank, vec_score;
    uint32_t fts_pos, vec_pos;           /* 1-based places in each list; 0: absent */
    int paged_in, trust;
} aos_mem_hit;

typedef struct aos_mem_hits {
    aos_mem_hit *hits;
    size_t n;
    int embedded;                        /* the query's embedding was used */
} aos_mem_hits;

typedef struct aos_mem_search_opts {
    const char *collection;   /* NULL: all of the agent's own */
    const char *owner;        /* another agent that shared collection with this one */
    uint32_t limit;           /* 0: 5 */
    int mode;                 /* 0 hybrid, 1 full text, 2 vectors */
    const char *model;        /* NULL: "sim/sim-embed" */
    int page_in;              /* page in hits from swapped pages */
} aos_mem_search_opts;

/* Ranked hits for query. Caller frees *out with aos_mem_hits_free. so may be NULL. */
aos_err aos_mem_search(aos_conn *c, const aos_call_opts *o, const char *query,
                       const aos_mem_search_opts *so, aos_mem_hits **out, char *why,
                       size_t whylen);
void aos_mem_hits_free(aos_mem_hits *h);
/* Let agent search collection (revoke 1: stop it). */
aos_err aos_mem_share(aos_conn *c, const aos_call_opts *o, const char *collection,
                      const char *agent, int revoke, char *why, size_t whylen);

#endif
