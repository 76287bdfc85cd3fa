/* Size rotation of aosd.log and pg.log (see logs.h): renames through the data dir's fd,
 * never following a link, the count of old files capped. */
#include "logs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aos/log.h"
#include "fsafe.h"

#define CHECK_EVERY_MS 1000u
#define COPY_CHUNK (64u << 10)

static struct {
    int dir, aosd, pg;
    uint64_t max, last_ms;
    unsigned keep;
} L = {.dir = -1, .pg = -1};

void logs_init(int dirfd, int aosd_log, int pg_log_fd, uint64_t max_bytes, unsigned keep)
{
    L.dir = dirfd;
    L.aosd = aosd_log;
    L.pg = pg_log_fd;
    L.max = max_bytes;
    L.keep = keep < 1 ? 1 : keep > LOGS_KEEP_MAX ? LOGS_KEEP_MAX : keep;
}

/* name.(keep-1) -> name.keep ... name.1 -> name.2: the oldest falls off the end. */
static void shift(const char *name)
{
    char from[64], to[64];
    for (unsigned i = L.keep; i > 1; i--) {
        snprintf(from, sizeof from, "%s.%u", name, i - 1);
        snprintf(to, sizeof to, "%s.%u", name, i);
        if (renameat(L.dir, from, L.dir, to) != 0 && errno != ENOENT)
            aos_warn("log rotation: %s -> %s: %s", from, to, strerror(errno));
    }
}

static void rotate_aosd(void)
{
    char why[256];
    shift("aosd.log");
    if (renameat(L.dir, "aosd.log", L.dir, "aosd.log.1") != 0) {
        aos_warn("log rotation: aosd.log: %s", strerror(errno));
        return;
    }
    int fd = fs_open(L.dir, "aosd.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600, why,
                     sizeof why);
    if (fd < 0) { /* the old file keeps the lines: aosd.log.1 grows until the next try */
        aos_warn("log rotation: %s", why);
        return;
    }
    dup2(fd, 2);
    close(fd);
    aos_info("log rotated: the lines before this one are in aosd.log.1");
}

/* postgres keeps its fd: copy what it wrote, then cut the file to nothing (it appends, so
 * its next line lands at the start). */
static void rotate_pg(void)
{
    char why[256];
    shift("pg.log");
    int out = fs_open(L.dir, "pg.log.1.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600,
                      why, sizeof why);
    if (out < 0) {
        aos_warn("log rotation: %s", why);
        return;
    }
    int in = fs_open(L.dir, "pg.log", O_RDONLY | O_CLOEXEC, 0, why, sizeof why);
    if (in < 0) { /* ours is write-only */
        aos_warn("log rotation: %s", why);
        close(out);
        unlinkat(L.dir, "pg.log.1.tmp", 0);
        return;
    }
    char buf[COPY_CHUNK];
    off_t off = 0;
    ssize_t n;
    int bad = 0;
    while ((n = pread(in, buf, sizeof buf, off)) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            bad = 1;
            break;
        }
        off += n;
    }
    if (n < 0)
        bad = 1;
    close(in);
    if (bad || close(out) != 0) {
        aos_warn("log rotation: pg.log not copied (%s); left to grow", strerror(errno));
        unlinkat(L.dir, "pg.log.1.tmp", 0);
        return;
    }
    if (renameat(L.dir, "pg.log.1.tmp", L.dir, "pg.log.1") != 0 || ftruncate(L.pg, 0) != 0) {
        aos_warn("log rotation: pg.log: %s", strerror(errno));
        return;
    }
    aos_info("log rotated: pg.log's lines so far are in pg.log.1");
}

static uint64_t size_of(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

void logs_tick(uint64_t now_ms)
{
    if (!L.max || L.dir < 0 || now_ms - L.last_ms < CHECK_EVERY_MS)
        return;
    L.last_ms = now_ms;
    if (L.aosd && size_of(2) > L.max)
        rotate_aosd();
    if (L.pg >= 0 && size_of(L.pg) > L.max)
        rotate_pg();
}
