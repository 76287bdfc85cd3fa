/* aos-memory's vector index: one namespace's embeddings in RAM as one contiguous int8 array
 * (per-vector scale), scanned with SSE2/AVX2 for the nearest neighbours by cosine. Pure; the
 * caller locks. PostgreSQL keeps the float32 originals: the index is rebuilt from them. */
#ifndef MEM_VINDEX_H
#define MEM_VINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define MEM_VX_DIM_MAX 4096u

typedef struct mem_vindex mem_vindex;

typedef struct mem_vhit {
    uint64_t id;
    float score;                  /* cosine, from the quantized vectors */
} mem_vhit;

/* NULL for a dim of 0 or over MEM_VX_DIM_MAX, or out of memory. */
mem_vindex *mem_vx_new(uint32_t dim);
void mem_vx_free(mem_vindex *x);
uint32_t mem_vx_dim(const mem_vindex *x);
size_t mem_vx_count(const mem_vindex *x);
size_t mem_vx_bytes(const mem_vindex *x);
/* Add vector v (dim floats, any norm; an all-zero one is stored and never matches) under
 * id in collection coll (a small number the caller interns; 0 is reserved for "any"). */
aos_err mem_vx_add(mem_vindex *x, uint64_t id, uint32_t coll, const float *v);
/* The k nearest to q by cosine among collection coll (0: all), best first, into out (room
 * for k); returns how many (fewer when the index holds fewer, none for a zero query). */
size_t mem_vx_search(const mem_vindex *x, const float *q, uint32_t coll, size_t k,
                     mem_vhit *out);

#endif
