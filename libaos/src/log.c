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

void aos_log_stamp(char out[AOS_LOG_STAMP_LEN + 1])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    /* strftime cannot go past its buffer; the milliseconds after it, three digits */
    size_t n = strftime(out, AOS_LOG_STAMP_LEN + 1, "%Y-%m-%dT%H:%M:%S", &tm);
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000L) % 1000u;
    if (n != 19) {
        memcpy(out, "0000-00-00T00:00:00", 20);
        n = 19;
    }
    out[n++] = '.';
    out[n++] = (char)('0' + ms / 100);
    out[n++] = (char)('0' + ms / 10 % 10);
    out[n++] = (char)('0' + ms % 10);
    out[n++] = 'Z';
    out[n] = 0;
}

size_t aos_log_stamp_at(const char *s, size_t len)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (len < AOS_LOG_STAMP_LEN)
        return 0;
    for (size_t i = 0; i < AOS_LOG_STAMP_LEN; i++)
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    return AOS_LOG_STAMP_LEN;
}

void aos_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_min)
        return;
    char line[2048], stamp[AOS_LOG_STAMP_LEN + 1];
    aos_log_stamp(stamp);
    int n = snprintf(line, sizeof line, "%s %s[%d] %s: ", stamp, log_prog, (int)getpid(),
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
