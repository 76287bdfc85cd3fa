/* One-line logs to stderr for aosd, the servers and tools: UTC time, program, pid, level:
 * "2026-12-03T11:37:10.777Z aosd[25410] info: ...". One write(2) a line, so lines from
 * threads and processes never mix. */
#ifndef AOS_LOG_H
#define AOS_LOG_H

#include <stddef.h>

enum { AOS_LOG_DEBUG, AOS_LOG_INFO, AOS_LOG_WARN, AOS_LOG_ERROR };

/* Name the program in each line (a static string); AOS_LOG_LEVEL=debug|info|warn|error. */
void aos_log_init(const char *prog);
void aos_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The time as every line starts with it, "YYYY-MM-DDTHH:MM:SS.mmmZ" (AOS_LOG_STAMP_LEN
 * characters and a NUL in out); the length of a stamp at the start of s, or 0. */
#define AOS_LOG_STAMP_LEN 24
void aos_log_stamp(char out[AOS_LOG_STAMP_LEN + 1]);
size_t aos_log_stamp_at(const char *s, size_t len);

#define aos_debug(...) aos_log(AOS_LOG_DEBUG, __VA_ARGS__)
#define aos_info(...) aos_log(AOS_LOG_INFO, __VA_ARGS__)
#define aos_warn(...) aos_log(AOS_LOG_WARN, __VA_ARGS__)
#define aos_error(...) aos_log(AOS_LOG_ERROR, __VA_ARGS__)

#endif
