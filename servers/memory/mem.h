/* aos-memory's internal interface: the caps, the per-agent state (window, budget, archival
 * index) cached in RAM and written through to PostgreSQL, and what each handler gets. */
#ifndef MEM_H
#define MEM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "db.h"
#include "chunk.h"
#include "est.h"
#include "serve.h"
#include "vindex.h"
#include "window.h"

/* ---- the caps (every wire input is checked against these) -------------------------- */
#define MEM_PAGES_MAX 10000u          /* live pages in one agent's window */
#define MEM_PAGE_BYTES_MAX (1u << 20) /* bytes of one page's text */
#define MEM_APPEND_MAX 256u           /* pages in one memory.page.append */
#define MEM_APPEND_BYTES_MAX (3u << 20)  /* their text together */
#define MEM_PAGE_IN_MAX 16u           /* pages one memory.page.in brings back */
#define MEM_CHUNKS_MAX 200000u        /* archival chunks of one agent */
#define MEM_DOCS_MAX 256u             /* documents in one memory.store */
#define MEM_STORE_BYTES_MAX (2u << 20)   /* their text together */
#define MEM_DOC_ID_MAX 256u
#define MEM_CHUNK_DEFAULT 1000u       /* bytes of a chunk unless the call says */
#define MEM_CHUNK_MIN 100u
#define MEM_CHUNK_MAX 8000u
#define MEM_EMBED_BATCH 256u          /* inputs of one llm.embed (the sim's cap) */
#define MEM_QUERY_MAX 4096u           /* bytes of a search query */
#define MEM_SEARCH_DEFAULT 5u
#define MEM_SEARCH_MAX 100u
#define MEM_CANDIDATES 50u            /* each leg's list before fusion (at least limit) */
#define MEM_COLLECTION_MAX 64u
#define MEM_COLLECTIONS_MAX 64u       /* collections of one agent */
#define MEM_MODELS_MAX 4u             /* embedding models one agent's index holds */
#define MEM_BUDGET_MIN 256
#define MEM_BUDGET_MAX 2000000        /* tokens: beyond any model's context */
#define MEM_BUDGET_DEFAULT 32768
#define MEM_RESERVE_DEFAULT 4096
#define MEM_LOW_WATER_PCT 55          /* a compaction brings the prompt down to this much of
                                       * the limit: rare, big steps */
#define MEM_AGENTS_MAX 4096u          /* agents cached at once; idle ones are dropped */
#define MEM_SUMMARY_LLM_MAX 32u       /* LLM-written stubs per compaction; the rest extractive */
#define MEM_DEFAULT_EMBED "sim/sim-embed"
#define MEM_MODEL_MAX 128u

/* One embedding model's part of an agent's archival index. */
typedef struct mem_vspace {
    char model[MEM_MODEL_MAX + 1];
    mem_vindex *vx;
} mem_vspace;

/* An agent as aos-memory holds it. Everything below mu is the agent's, under mu. */
typedef struct mem_agent {
    char id[AOS_AGENT_ID_MAX + 1];
    struct mem_agent *next;        /* hash chain (the state's mu) */
    int busy;                      /* handlers using it (the state's mu): not dropped */
    uint64_t touched_ms;
    pthread_mutex_t mu;
    int loaded;                    /* window and budget read from PostgreSQL */
    int stale;                     /* a write's outcome is unknown: read them again */
    mem_window *win;
    uint64_t budget, reserve, next_page;
    char model[MEM_MODEL_MAX + 1]; /* the chat model of the last assembly */
    uint64_t last_bytes;           /* text bytes of the last assembly, for calibration */
    uint64_t reported;
    uint64_t faults, evictions, bytes_out, bytes_in, compactions, assemblies;
    unsigned prefix_pct;
    /* archival */
    int vx_loaded;
    mem_vspace spaces[MEM_MODELS_MAX];
    unsigned nspaces;
    char colls[MEM_COLLECTIONS_MAX][MEM_COLLECTION_MAX + 1];
    unsigned ncolls;
    uint64_t nchunks;
    int nchunks_known;
} mem_agent;

#define MEM_BUCKETS 1024u

typedef struct mem_state {
    pthread_mutex_t mu;
    mem_agent *bucket[MEM_BUCKETS];
    size_t nagents;
    mem_est *est;
    db_counts db;                    /* calls, errors, reruns, waits: db_serve's */
    atomic_uint_fast64_t n_replays;
    atomic_uint_fast64_t faults, evictions, bytes_out, bytes_in, compactions, assemblies;
    atomic_uint_fast64_t asm_changed, asm_out, asm_last_changed, asm_last_out;
    atomic_uint_fast64_t asm_prefix_tokens, asm_tokens, asm_last_pct;
    atomic_uint_fast64_t stores, chunks_stored, searches, embed_calls, embed_failures;
    atomic_uint_fast64_t llm_summaries, reports, reloads, dropped_agents;
} mem_state;

/* One request as a handler sees it. */
typedef struct mem_call {
    mem_state *st;
    srv *s;
    srv_call *call;                /* for srv_request (llm.embed, llm.chat) */
    PGconn *db;
    const char *agent;             /* from the envelope (aosd sets it); "" when none */
    const uint8_t *request_id;     /* 16 bytes, NULL when none */
    uint64_t deadline_ms;
    const char *op;                /* "page.append" */
    const uint8_t *payload;
    size_t len;
    srv_reply *rep;
} mem_call;

typedef aos_err (*mem_fn)(mem_call *c);

/* ---- util.c ------------------------------------------------------------------------- */
aos_err mem_fail(mem_call *c, aos_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
aos_err mem_reply(mem_call *c, const ProtobufCMessage *m);
/* Decode the payload as desc's message. NULL after mem_fail. */
void *mem_decode(mem_call *c, const ProtobufCMessageDescriptor *desc);
void mem_free(void *m);
/* UTF-8 text of at most max bytes (empty allowed when allow_empty). */
aos_err mem_valid_text(mem_call *c, ProtobufCBinaryData b, size_t max, int allow_empty,
                       const char *what);
/* A collection: [A-Za-z0-9_.:-]{1,64}, empty gives dflt. Copied into out. */
aos_err mem_valid_name(mem_call *c, ProtobufCBinaryData b, const char *dflt, size_t max,
                       const char *what, char *out);
/* A source label: printable ASCII but '"' and '\\', at most MEM_SOURCE_MAX. */
aos_err mem_valid_source(mem_call *c, ProtobufCBinaryData b, char *out);
/* An agent id as aosd allows them. */
aos_err mem_valid_agent(mem_call *c, ProtobufCBinaryData b, char *out);
aos_err mem_exec(mem_call *c, const db_stmt *st, const db_params *p, PGresult **r);
aos_err mem_exec_void(mem_call *c, const db_stmt *st, const db_params *p);
int64_t mem_ts_ms(const PGresult *r, int row, int col);
void mem_fingerprint(const mem_call *c, uint8_t out[32]);

/* A transaction idempotent by the call's request id (pidem): fn runs in it and fills the
 * reply; committed and recorded only when fn succeeds. *replayed: the reply is a record
 * (the in-memory state may lag: the caller reloads the agent). */
aos_err mem_tx(mem_call *c, aos_err (*fn)(mem_call *c, void *arg), void *arg, int *replayed);
/* A transaction without a record, for writes that are safe to repeat. */
aos_err mem_tx_plain(mem_call *c, aos_err (*fn)(mem_call *c, void *arg), void *arg);

/* ---- agents (agent.c) ---------------------------------------------------------------- */
/* The cached agent for id, made if missing, marked busy: mem_agent_put when done. NULL
 * when out of memory (or too many agents, all busy). */
mem_agent *mem_agent_get(mem_state *st, const char *id);
void mem_agent_put(mem_state *st, mem_agent *a);
/* With a->mu held: read the window and budget from PostgreSQL if not loaded or stale. */
aos_err mem_agent_load(mem_call *c, mem_agent *a);
/* With a->mu held: read the archival index (vectors) if not loaded. */
aos_err mem_agent_load_index(mem_call *c, mem_agent *a);
/* The interned number of a collection of a (1..), 0 when it has none by that name and
 * make is 0 (or the agent has MEM_COLLECTIONS_MAX already). */
uint32_t mem_agent_coll(mem_agent *a, const char *name, int make);
mem_vspace *mem_agent_space(mem_agent *a, const char *model, uint32_t dim, int make);

/* ---- the handlers -------------------------------------------------------------------- */
aos_err op_append(mem_call *c);
aos_err op_pin(mem_call *c);
aos_err op_unpin(mem_call *c);
aos_err op_page_in(mem_call *c);
aos_err op_budget(mem_call *c);
aos_err op_show(mem_call *c);
aos_err op_assemble(mem_call *c);
aos_err op_store(mem_call *c);
aos_err op_search(mem_call *c);
aos_err op_share(mem_call *c);

/* Store chunks of the evicted page p in the open transaction (archive.c), so that a search
 * finds it and pages it back in. */
aos_err mem_archive_evicted(mem_call *c, const mem_page *p, const uint8_t *text, size_t len);

/* The table of methods: op name, handler. */
#define MEM_OP_TABLE(X)                                                                    \
    X("page.append", op_append)                                                            \
    X("page.pin", op_pin)                                                                  \
    X("page.unpin", op_unpin)                                                              \
    X("page.in", op_page_in)                                                               \
    X("budget.set", op_budget)                                                             \
    X("show", op_show)                                                                     \
    X("assemble", op_assemble)                                                             \
    X("store", op_store)                                                                   \
    X("search", op_search)                                                                 \
    X("share", op_share)

extern const srv_schema mem_schema;

#endif
