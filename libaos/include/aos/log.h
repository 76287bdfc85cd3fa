/* One-line logs to stderr for aosd, the servers and tools: time, program, pid, level.
 * A line is written with one write(2), so lines from threads and processes never mix. */
#ifndef AOS_LOG_H
#define AOS_LOG_H

enum { AOS_LOG_DEBUG, AOS_LOG_INFO, AOS_LOG_WARN, AOS_LOG_ERROR };

/* Name the program in each line (a static string); AOS_LOG_LEVEL=debug|info|warn|error. */
void aos_log_init(const char *prog);
void aos_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define aos_debug(...) aos_log(AOS_LOG_DEBUG, __VA_ARGS__)
#define aos_info(...) aos_log(AOS_LOG_INFO, __VA_ARGS__)
#define aos_warn(...) aos_log(AOS_LOG_WARN, __VA_ARGS__)
#define aos_error(...) aos_log(AOS_LOG_ERROR, __VA_ARGS__)

#endif
