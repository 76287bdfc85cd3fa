/* The children's log pipes (see childlog.h): non-blocking reads in aosd's loop, lines
 * capped and stripped of control characters, one write(2) each to aosd's stderr. */
#include "childlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aos/log.h"

#define CLOG_MAX 32        /* pipes open at once: children, and a dead one's last words */
#define CLOG_LINE 2048     /* longer lines are cut into pieces of this size */

typedef struct clog {
    int fd;                /* read end, -1: free slot */
    char name[24];
    pid_t pid;
    size_t len;
    char buf[CLOG_LINE];
} clog;

static clog logs[CLOG_MAX];
static int inited;

static void init(void)
{
    if (inited)
        return;
    for (int i = 0; i < CLOG_MAX; i++)
        logs[i].fd = -1;
    inited = 1;
}

static void emit(clog *l)
{
    if (!l->len)
        return;
    char out[CLOG_LINE + 96], stamp[AOS_LOG_STAMP_LEN + 1];
    aos_log_stamp(stamp);
    /* aosd's stamp and the child's name and pid as aosd knows them start the line; the
     * child's own stamp and "prog[pid] " are dropped (a child cannot pass for another, or
     * for aosd), its level kept; a line it wrote without one (libc, a sanitizer) is warn */
    size_t i = aos_log_stamp_at(l->buf, l->len);
    if (i && i < l->len && l->buf[i] == ' ') {
        size_t j = i + 1;
        while (j < l->len && l->buf[j] != '[' && l->buf[j] != ' ')
            j++;
        if (j < l->len && l->buf[j] == '[') {
            j++;
            while (j < l->len && l->buf[j] >= '0' && l->buf[j] <= '9')
                j++;
            if (j + 1 < l->len && l->buf[j] == ']' && l->buf[j + 1] == ' ')
                i = j + 2;
        }
    }
    int n = snprintf(out, sizeof out, "%s %s[%d] %s", stamp, l->name, (int)l->pid,
                     i ? "" : "warn: ");
    if (i && i < l->len && l->buf[i] == ' ')
        i++;
    for (; i < l->len && (size_t)n < sizeof out - 1; i++) {
        unsigned char c = (unsigned char)l->buf[i];
        out[n++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
    }
    out[n++] = '\n';
    ssize_t w = write(2, out, (size_t)n);
    (void)w;
    l->len = 0;
}

int clog_pipe(const char *name)
{
    init();
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    for (int i = 0; i < CLOG_MAX; i++) {
        if (logs[i].fd >= 0)
            continue;
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        logs[i].fd = p[0];
        logs[i].pid = 0;
        logs[i].len = 0;
        snprintf(logs[i].name, sizeof logs[i].name, "%s", name);
        return p[1];
    }
    close(p[0]);
    close(p[1]);
    errno = EMFILE;
    return -1;
}

void clog_set_pid(const char *name, pid_t pid)
{
    init();
    /* the newest pipe of that name is the one just made for this child */
    for (int i = CLOG_MAX - 1; i >= 0; i--)
        if (logs[i].fd >= 0 && !logs[i].pid && !strcmp(logs[i].name, name)) {
            logs[i].pid = pid;
            return;
        }
}

int clog_pollfds(struct pollfd *p, int max)
{
    init();
    int n = 0;
    for (int i = 0; i < CLOG_MAX && n < max; i++)
        if (logs[i].fd >= 0)
            p[n++] = (struct pollfd){.fd = logs[i].fd, .events = POLLIN};
    return n;
}

static void drain(clog *l)
{
    char in[8192];
    /* a bounded amount per turn: a chatty child cannot keep aosd's loop to itself */
    for (int round = 0; round < 8; round++) {
        ssize_t r = read(l->fd, in, sizeof in);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) { /* EOF: every writer is gone */
            emit(l);
            close(l->fd);
            l->fd = -1;
            return;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (in[i] == '\n') {
                emit(l);
                continue;
            }
            if (l->len == sizeof l->buf)
                emit(l);
            l->buf[l->len++] = in[i];
        }
    }
}

void clog_service(const struct pollfd *p, int n)
{
    for (int k = 0; k < n; k++) {
        if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        for (int i = 0; i < CLOG_MAX; i++)
            if (logs[i].fd == p[k].fd)
                drain(&logs[i]);
    }
}

void clog_flush_all(void)
{
    init();
    for (int i = 0; i < CLOG_MAX; i++)
        if (logs[i].fd >= 0) {
            drain(&logs[i]);
            emit(&logs[i]);
            if (logs[i].fd >= 0)
                close(logs[i].fd);
            logs[i].fd = -1;
        }
}
