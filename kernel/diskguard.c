/* The disk guard (see diskguard.h): fstatvfs of the data dir from the loop, the verdict
 * in atomics the router's threads read without a lock. */
#include "diskguard.h"

#include <stdatomic.h>
#include <stdio.h>
#include <sys/statvfs.h>

#include "aos/log.h"

#define CHECK_EVERY_MS 1000u
#define MIB (1024ull * 1024ull)
#define MARGIN_MIN_MB 16u

static int g_dir = -1;
static uint64_t g_min_mb, g_last_ms;
static atomic_ullong g_free_mb = 0;
static atomic_int g_low = 0;

void dg_init(int dirfd, uint64_t min_free_mb)
{
    g_dir = dirfd;
    g_min_mb = min_free_mb;
    g_last_ms = 0;
    dg_tick(CHECK_EVERY_MS); /* the verdict before the first syscall */
}

void dg_tick(uint64_t now_ms)
{
    if (g_dir < 0 || !g_min_mb || (g_last_ms && now_ms - g_last_ms < CHECK_EVERY_MS))
        return;
    g_last_ms = now_ms;
    struct statvfs sv;
    if (fstatvfs(g_dir, &sv) != 0)
        return; /* the last verdict stands */
    /* what an unprivileged writer (postgres) can use: root's reserve does not count */
    uint64_t free_mb = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize / MIB;
    atomic_store(&g_free_mb, free_mb);
    uint64_t margin = g_min_mb / 8 > MARGIN_MIN_MB ? g_min_mb / 8 : MARGIN_MIN_MB;
    int low = atomic_load(&g_low);
    if (!low && free_mb < g_min_mb) {
        atomic_store(&g_low, 1);
        aos_error("disk nearly full: %llu MiB free in the data dir, below disk_min_free_mb "
                  "%llu: effectful syscalls are refused until %llu MiB are free",
                  (unsigned long long)free_mb, (unsigned long long)g_min_mb,
                  (unsigned long long)(g_min_mb + margin));
    } else if (low && free_mb >= g_min_mb + margin) {
        atomic_store(&g_low, 0);
        aos_info("disk space back: %llu MiB free in the data dir; syscalls served again",
                 (unsigned long long)free_mb);
    }
}

int dg_low(char *why, size_t whylen)
{
    if (!atomic_load(&g_low))
        return 0;
    snprintf(why, whylen, "disk nearly full: %llu MiB free in aosd's data dir, below "
             "disk_min_free_mb (%llu); writes are refused until space is freed, reads go on",
             (unsigned long long)atomic_load(&g_free_mb), (unsigned long long)g_min_mb);
    return 1;
}

void dg_state(uint64_t *free_mb, uint64_t *min_free_mb, int *low)
{
    *free_mb = atomic_load(&g_free_mb);
    *min_free_mb = g_min_mb;
    *low = atomic_load(&g_low);
}
