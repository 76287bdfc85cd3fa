/* An in-place heap sort for aos-memory: glibc's qsort asks the kernel for the machine's
 * memory (sysinfo) before sorting more than 1 KiB, a syscall the servers' seccomp list
 * rightly lacks; this one makes none, allocates nothing and is O(n log n) always. */
#ifndef MEM_SORT_H
#define MEM_SORT_H

#include <stddef.h>

/* Sort n elements of size bytes (at most 64) at base by cmp, as qsort would (not stable). */
void mem_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));

#endif
