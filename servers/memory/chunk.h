/* aos-memory's chunking of archival text: pieces of at most a given size, cut where a
 * reader would (paragraph, line, word), never inside a UTF-8 sequence. Pure. */
#ifndef MEM_CHUNK_H
#define MEM_CHUNK_H

#include <stddef.h>
#include <stdint.h>

/* fn(arg, piece, n) for each chunk of t[0..len) in order (their concatenation is t; each
 * at most max bytes, max >= 4); a nonzero return stops and is returned. */
int mem_chunk(const uint8_t *t, size_t len, size_t max,
              int (*fn)(void *arg, const uint8_t *p, size_t n), void *arg);

#endif
