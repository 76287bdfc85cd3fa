/* An agent's context window in aos-memory's RAM: its pages, how each renders as a message of
 * aos-llm's neutral model, and cache-aware assembly within a token budget. Pure: no locks
 * (the caller holds the agent's), no database (ops.c writes through before changing this). */
#ifndef MEM_WINDOW_H
#define MEM_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "policy.h"

#define MEM_SOURCE_MAX 128         /* bytes of a page's source label */
#define MEM_SUMMARY_MAX 160        /* bytes of a swapped page's one-line summary */
#define MEM_STUB_LINES 8           /* pages one stub lists by name; the rest are counted */
#define MEM_STUB_SUMMARY 60        /* bytes of each listed page's summary a stub shows */

/* Page kinds and trust levels: the values of memory.proto's Kind and Trust. */
enum { MEM_SYSTEM = 1, MEM_TOOLS, MEM_PINNED, MEM_TODO, MEM_USER, MEM_ASSISTANT,
       MEM_TOOL_RESULT, MEM_DOCUMENT, MEM_SUMMARY, MEM_KIND_LAST = MEM_SUMMARY };
enum { MEM_TRUST_OWN = 1, MEM_TRUST_USER, MEM_TRUST_UNTRUSTED };

/* One page. Owned by its window once added. */
typedef struct mem_page {
    uint64_t id;
    int kind, trust;
    unsigned pinned:1, resident:1, dead:1;   /* dead: a todo list a newer one replaced */
    uint64_t created_ms, last_use_ms;
    uint64_t last_use;             /* the window's clock (its newest page id) at last use */
    uint32_t uses;
    uint32_t bytes;                /* of the text, also while swapped */
    char source[MEM_SOURCE_MAX + 1];
    char summary[MEM_SUMMARY_MAX + 1];
    uint8_t *text;                 /* resident: malloc'd, bytes long (+ a NUL); else NULL */
    uint8_t *rend;                 /* resident: its rendering, an AssembleReply entry */
    size_t rlen, cbytes;           /* the entry's bytes, and the text bytes in it */
    uint32_t ver;                  /* changes with each new rendering */
} mem_page;

/* The kind's default trust (TRUST_UNSPECIFIED given), and the trust a page gets when asked
 * for `asked`: a tool's result is untrusted whatever the caller says (trust never rises
 * above its source's). */
int mem_trust_effective(int kind, int asked);
/* 0 when a page of kind and (effective) trust may be stored pinned or not; else -1 and a
 * message: untrusted data may never be the system prompt, the tool catalogue, a pinned
 * note or the todo list, and a todo list is never pinned (it is recited at the end). */
int mem_page_allowed(int kind, int trust, int pinned, char *why, size_t whylen);
/* The one-line extractive summary of text (UTF-8): its first non-empty line, spaces
 * collapsed, cut on a character boundary with "..." when longer than MEM_SUMMARY_MAX. */
void mem_summary_extract(const uint8_t *text, size_t len, char out[MEM_SUMMARY_MAX + 1]);

/* A new page holding a copy of text (len bytes); not yet rendered. NULL: out of memory. */
mem_page *mem_page_new(uint64_t id, int kind, int trust, const char *source,
                       const uint8_t *text, size_t len);
void mem_page_free(mem_page *p);
/* (Re)build p's rendering from its text: AOS_OK or NOMEM. */
aos_err mem_page_render(mem_page *p);

typedef struct mem_window mem_window;

/* NULL: out of memory. mem_win_free frees every page. */
mem_window *mem_win_new(void);
void mem_win_free(mem_window *w);
/* Add p (ids must increase; p is rendered here if resident): the window owns it on AOS_OK.
 * A todo list marks the previous one dead. */
aos_err mem_win_add(mem_window *w, mem_page *p);
size_t mem_win_count(const mem_window *w);
mem_page *mem_win_at(const mem_window *w, size_t i);
mem_page *mem_win_find(const mem_window *w, uint64_t id);
uint64_t mem_win_newest(const mem_window *w);
/* The live pages (not dead) and their text bytes held in RAM. */
size_t mem_win_live(const mem_window *w, uint64_t *resident_bytes);
/* A use of p (appended, paged in, hit by a search): it turns hot. */
void mem_win_touch(mem_window *w, mem_page *p, uint64_t now_ms);
/* Swap p out (drops its text and rendering; summary is its stub line) or back in (text is
 * taken over, malloc'd, len bytes + a NUL). Pin state changes re-render. */
void mem_win_swap_out(mem_window *w, mem_page *p, const char *summary);
aos_err mem_win_swap_in(mem_window *w, mem_page *p, uint8_t *text, size_t len);
aos_err mem_win_set_pinned(mem_window *w, mem_page *p, int pinned);

/* Tokens the window costs assembled now at ratio (tokens per byte). */
uint64_t mem_win_tokens(mem_window *w, double ratio);
/* Over limit: the pages to swap out (ids, malloc'd, caller frees) to get down to `target`
 * tokens, chosen by mem_policy_pick. *n 0 when nothing needs to go (or nothing can). */
aos_err mem_win_plan(mem_window *w, double ratio, uint64_t limit, uint64_t target,
                     uint64_t **ids, size_t *n, uint64_t *tokens);

/* One assembly: the packed AssembleReply (messages, breakpoint, figures) and what it took. */
typedef struct mem_asm {
    uint8_t *payload;              /* malloc'd; the caller owns it */
    size_t len;
    uint32_t breakpoint, messages;
    uint64_t tokens, prefix_tokens;
    uint64_t bytes_changed;        /* renderings copied into the window's buffer */
    uint64_t bytes_out;            /* the messages' bytes copied into the reply */
    unsigned prefix_pct;
    uint64_t cbytes;               /* the text bytes of the messages (what is estimated) */
} mem_asm;

/* Assemble the prompt: the stable prefix (system, tools, pinned; in that order, by id),
 * the history (runs of swapped pages as one stub each), the todo list last. The window
 * keeps its last assembly's renderings in one buffer: only what differs from it (from the
 * first changed message on) is copied in. QUOTA when the prompt would pass limit (the
 * caller evicts first: what is left then is pinned or the prefix). evicted and compacted
 * go into the reply as they are. */
aos_err mem_win_assemble(mem_window *w, double ratio, uint64_t limit, uint32_t evicted,
                         int compacted, mem_asm *out, char *why, size_t whylen);

#endif
