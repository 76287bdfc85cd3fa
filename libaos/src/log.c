/* aos_log: timestamped lines on stderr, one write(2) each, level from AOS_LOG_LEVEL.
 * Kept tiny on purpose: it runs inside sandboxes where only write(2) is sure to work. */
#include "aos/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "aos";
static int log_min = AOS_LOG_INFO;

void aos_log_init(const char *prog)
{
    log_prog = prog;
    const char *l = getenv("AOS_LOG_LEVEL");
    if (!l)
        return;
    if (!strcmp(l, "debug"))
        log_min = AOS_LOG_DEBUG;
    else if (!strcmp(l, "warn"))
        log_min = AOS_LOG_WARN;
    else if (!strcmp(l, "error"))
        log_min = AOS_LOG_ERROR;
}

void aos_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_min)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s[%d] %s: ", tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, log_prog, (int)getpid(),
                     names[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}
