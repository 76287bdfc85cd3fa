/* aos-memory's eviction policy: which cold pages of a window's history to swap out, in one
 * big step, so that the prompt keeps the longest unchanged prefix. Pure: no locks, no I/O. */
#ifndef MEM_POLICY_H
#define MEM_POLICY_H

#include <stddef.h>
#include <stdint.h>

/* One page of the history, in prompt order. */
typedef struct mem_cand {
    uint32_t gain;        /* tokens its eviction saves (its own; stubs are paid from slack) */
    uint64_t last_use;    /* a logical clock (the window's newest page id at its last use) */
    unsigned evictable:1; /* resident and not pinned */
} mem_cand;

/* A page used within this many appends (appended, paged in, hit by a search) is hot. */
#define MEM_HOT_PAGES 16u

/* Choose pages to free at least `need` tokens; their indices go to out (room for n), in
 * increasing order. Cold pages first: the cut is the latest point of the history from
 * which the cold evictable pages after it free enough (everything before the cut stays
 * byte for byte, so the provider's cache of it stays valid); hot pages after the cut
 * stay. Only when the cold pages of the whole history cannot free enough are hot ones
 * taken too, the least recently used first, and never the last page (the turn in hand).
 * now is the window's clock. Returns how many were chosen; *freed their gain. */
size_t mem_policy_pick(const mem_cand *c, size_t n, uint64_t now, uint64_t need, size_t *out,
                       uint64_t *freed);

#endif
