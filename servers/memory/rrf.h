/* Reciprocal rank fusion for aos-memory's hybrid retrieval: two ranked lists of chunk ids
 * (full text, vectors) into one, score = sum of 1 / (k + rank). Pure. */
#ifndef MEM_RRF_H
#define MEM_RRF_H

#include <stddef.h>
#include <stdint.h>

#define MEM_RRF_K 60u

typedef struct mem_fused {
    uint64_t id;
    double score;
    uint32_t pos_a, pos_b;        /* 1-based rank in each list; 0: absent from it */
} mem_fused;

/* Fuse a[0..na) and b[0..nb) (best first; an id repeated in one list counts at its best
 * rank) into out (room for na + nb), best first; ties go to the better single rank, then
 * the smaller id. Returns how many. */
size_t mem_rrf(const uint64_t *a, size_t na, const uint64_t *b, size_t nb, unsigned k,
               mem_fused *out);

#endif
