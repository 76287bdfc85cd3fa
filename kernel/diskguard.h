/* The disk guard: when the data dir's file system has less free space than aos.yaml's
 * disk_min_free_mb, effectful syscalls are refused (UNAVAILABLE) and reads go on. */
#ifndef AOS_KERNEL_DISKGUARD_H
#define AOS_KERNEL_DISKGUARD_H

#include <stddef.h>
#include <stdint.h>

#define DISKGUARD_MIN_FREE_MB_DEFAULT 256u

/* dirfd: the data dir (borrowed, open while dg_tick runs); min_free_mb 0: no guard. */
void dg_init(int dirfd, uint64_t min_free_mb);

/* From aosd's loop: measures the free space at most once a second. Refusing starts below
 * the threshold and ends once the free space is back above it plus a margin (an eighth,
 * at least 16 MiB), so a file system at the edge does not flap. */
void dg_tick(uint64_t now_ms);

/* Any thread. 1 while refusing, with the message for the caller in why. */
int dg_low(char *why, size_t whylen);

/* What `aosctl status` shows: free MiB now, the threshold, refusing or not. */
void dg_state(uint64_t *free_mb, uint64_t *min_free_mb, int *low);

#endif
