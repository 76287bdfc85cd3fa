/* aosd's own log files, DATA/aosd.log and DATA/pg.log: rotated by size from aosd's loop,
 * keeping a count of old ones (aosd.log.1 the newest), so neither grows without end. */
#ifndef AOS_KERNEL_LOGS_H
#define AOS_KERNEL_LOGS_H

#include <stdint.h>

#define LOGS_MAX_MB_DEFAULT 64u
#define LOGS_KEEP_DEFAULT 5u
#define LOGS_KEEP_MAX 100u

/* dirfd: the data dir (borrowed, open while logs_tick runs). aosd_log: aosd's stderr is
 * DATA/aosd.log (--log); pg_log_fd: postgres's DATA/pg.log (-1: none, an external one).
 * max_bytes 0: never rotate. */
void logs_init(int dirfd, int aosd_log, int pg_log_fd, uint64_t max_bytes, unsigned keep);

/* From the loop: checks the sizes at most once a second and rotates what passed the cap.
 * aosd.log is renamed and opened anew under fd 2, which dup2 swaps at once: a line any
 * thread writes lands whole in the old file or the new (the children's come through
 * aosd's pipes). pg.log, which postgres holds open, is copied to pg.log.1 and truncated
 * in place: lines postgres writes during the copy can be lost (logrotate's copytruncate;
 * said in the README). */
void logs_tick(uint64_t now_ms);

#endif
