/* aosctl logs [SOURCE] [-n N] [-f]: aosd's log (its own lines and its servers') and
 * postgres's, read from the data dir's files, so they work with aosd down too. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aos/aos.h"
#include "aos/log.h"
#include "aosctl.h"

#define LINES_MAX 100000
#define LINE_MAX_LEN 4096           /* longer lines are cut (aosd writes at most ~2 KiB) */
#define TAIL_READ_MAX (16u << 20)   /* of each file, the last 16 MiB are looked through */
#define FOLLOW_POLL_NS 200000000L

typedef struct src {
    const char *file;               /* aosd.log or pg.log */
    const char *want;               /* "storage": lines of that source only; NULL: all */
} src;

typedef struct ring {
    char **v;
    size_t cap, n, head;            /* the last cap lines, head the oldest */
} ring;

static void ring_put(ring *r, const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (!d)
        return;
    memcpy(d, s, len);
    d[len] = 0;
    if (r->n < r->cap) {
        r->v[(r->head + r->n++) % r->cap] = d;
    } else {
        free(r->v[r->head]);
        r->v[r->head] = d;
        r->head = (r->head + 1) % r->cap;
    }
}

/* "<stamp> NAME[PID] LEVEL: ..." -> NAME's span; 0 when the line has no such start. */
static size_t source_of(const char *l, size_t len, size_t *at)
{
    size_t s = aos_log_stamp_at(l, len);
    if (!s || s >= len || l[s] != ' ')
        return 0;
    size_t i = s + 1, j = i;
    while (j < len && l[j] != '[' && l[j] != ' ')
        j++;
    if (j >= len || l[j] != '[' || j == i)
        return 0;
    *at = i;
    return j - i;
}

static int wanted(const src *s, const char *l, size_t len)
{
    if (!s->want)
        return 1;
    size_t at, n = source_of(l, len, &at);
    return n == strlen(s->want) && !memcmp(l + at, s->want, n);
}

static void print_line(ctl_ctx *c, const char *file, const char *l, size_t len)
{
    char clean[LINE_MAX_LEN * 3 + 8];
    ctl_clean(clean, sizeof clean, (const uint8_t *)l, len, 0, NULL);
    if (!c->json) {
        printf("%s\n", clean);
        return;
    }
    json_t *o = json_pack("{s:s,s:s}", "file", file, "line", clean);
    size_t at, n = source_of(clean, strlen(clean), &at);
    if (o && n) {
        char who[64], *lv = strchr(clean + at + n, ' ');
        snprintf(who, sizeof who, "%.*s", (int)(n < 63 ? n : 63), clean + at);
        json_object_set_new(o, "time", json_stringn(clean, AOS_LOG_STAMP_LEN));
        json_object_set_new(o, "source", json_string(who));
        json_object_set_new(o, "pid", json_integer(atoll(clean + at + n + 1)));
        char *colon = lv ? strchr(lv + 1, ':') : NULL;
        if (lv && colon && colon - lv - 1 < 8) {
            json_object_set_new(o, "level", json_stringn(lv + 1, (size_t)(colon - lv - 1)));
            json_object_set_new(o, "message", json_string(colon[1] == ' ' ? colon + 2 : colon + 1));
        }
    }
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (t)
        printf("%s\n", t);
    free(t);
    json_decref(o);
}

/* Lines of buf[0, len) into r, the last partial one too when last (a file's end). */
static void take_lines(const src *s, ring *r, const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len, n = e - i;
        if (wanted(s, buf + i, n))
            ring_put(r, buf + i, n < LINE_MAX_LEN ? n : LINE_MAX_LEN);
        i = e + 1;
    }
}

static int open_log(int dir, const char *name)
{
    return openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
}

/* The tail of name (its whole last TAIL_READ_MAX) into r; *end: where following goes on. */
static int read_tail(int dir, const char *name, const src *s, ring *r, off_t *end)
{
    int fd = open_log(dir, name);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    off_t from = st.st_size > (off_t)TAIL_READ_MAX ? st.st_size - (off_t)TAIL_READ_MAX : 0;
    size_t len = (size_t)(st.st_size - from);
    char *buf = malloc(len ? len : 1);
    ssize_t got = buf ? pread(fd, buf, len, from) : -1;
    if (got > 0) {
        size_t skip = 0;
        if (from > 0) { /* the first line was cut by the window: drop it */
            const char *nl = memchr(buf, '\n', (size_t)got);
            skip = nl ? (size_t)(nl - buf) + 1 : (size_t)got;
        }
        take_lines(s, r, buf + skip, (size_t)got - skip);
    }
    free(buf);
    if (end)
        *end = from + (got > 0 ? got : 0);
    close(fd);
    return 0;
}

static int follow(ctl_ctx *c, int dir, const src *s, off_t off)
{
    int fd = open_log(dir, s->file);
    struct stat st, now;
    if (fd < 0 || fstat(fd, &st) != 0)
        return ctl_fail(c, AOS_ERR_NOT_FOUND, "cannot follow %s: %s", s->file, strerror(errno));
    char buf[65536], line[LINE_MAX_LEN];
    size_t ll = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, off);
        if (n > 0) {
            off += n;
            for (ssize_t i = 0; i < n; i++) {
                if (buf[i] != '\n') {
                    if (ll < sizeof line)
                        line[ll++] = buf[i];
                    continue;
                }
                if (wanted(s, line, ll))
                    print_line(c, s->file, line, ll);
                ll = 0;
            }
            fflush(stdout);
            continue;
        }
        nanosleep(&(struct timespec){0, FOLLOW_POLL_NS}, NULL);
        /* rotated (a new file under the name) or cut in place (pg.log): start it over */
        if (fstatat(dir, s->file, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
            (now.st_ino != st.st_ino || now.st_dev != st.st_dev)) {
            int nfd = open_log(dir, s->file);
            if (nfd >= 0) {
                close(fd);
                fd = nfd;
                fstat(fd, &st);
                off = 0;
                ll = 0;
            }
        } else if (fstat(fd, &now) == 0 && now.st_size < off) {
            off = 0;
            ll = 0;
        }
    }
}

static int cmd_logs(ctl_ctx *c, const ctl_vals *v)
{
    const char *arg = ctl_str(v, "SOURCE");
    src s = {"aosd.log", NULL};
    if (arg) {
        if (!strcmp(arg, "aosd"))
            s.want = "aosd";
        else if (!strcmp(arg, "postgres") || !strcmp(arg, "pg"))
            s.file = "pg.log";
        else if (!(s.want = ctl_server_name(arg, 0)))
            return ctl_fail(c, AOS_ERR_USAGE, "logs: '%s' is not aosd, postgres or a server "
                            "(memory, storage, tool, llm, audit)", arg);
    }
    char dd[4096];
    if (aos_data_dir(c->data_dir, dd, sizeof dd) != AOS_OK)
        return ctl_fail(c, AOS_ERR_USAGE, "logs: no data dir (--data-dir, $AOS_DATA_DIR)");
    int dir = open(dd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return ctl_fail(c, errno == EACCES ? AOS_ERR_REFUSED : AOS_ERR_NOT_FOUND,
                        "logs: cannot open the data dir %s: %s%s", dd, strerror(errno),
                        errno == EACCES ? " (it is root's: run aosctl as root)" : "");
    size_t want = (size_t)ctl_int(v, "--lines");
    ring r = {.v = calloc(want, sizeof(char *)), .cap = want};
    if (!r.v) {
        close(dir);
        return ctl_fail(c, AOS_ERR_NOMEM, "logs: out of memory");
    }
    /* the previous file first, when the current one holds fewer lines than asked */
    char old[32];
    snprintf(old, sizeof old, "%s.1", s.file);
    off_t end = 0;
    int rc = read_tail(dir, s.file, &s, &r, &end);
    if (rc == 0 && r.n < want) {
        ring all = {.v = calloc(want, sizeof(char *)), .cap = want};
        if (all.v && read_tail(dir, old, &s, &all, NULL) == 0) {
            read_tail(dir, s.file, &s, &all, &end);
            for (size_t i = 0; i < r.n; i++)
                free(r.v[(r.head + i) % r.cap]);
            free(r.v);
            r = all;
        } else if (all.v) {
            for (size_t i = 0; i < all.n; i++)
                free(all.v[(all.head + i) % all.cap]);
            free(all.v);
        }
    }
    int err = errno;
    if (rc != 0) {
        free(r.v);
        close(dir);
        return ctl_fail(c, AOS_ERR_NOT_FOUND, "logs: %s/%s: %s%s", dd, s.file, strerror(err),
                        err == ENOENT ? " (aosd logs there when started with --log or log: "
                                        "true; under systemd: journalctl -u aosd)"
                                      : "");
    }
    int follow_on = ctl_given(v, "--follow");
    json_t *lines = c->json && !follow_on ? json_array() : NULL;
    for (size_t i = 0; i < r.n; i++) {
        char *l = r.v[(r.head + i) % r.cap];
        if (lines) {
            char clean[LINE_MAX_LEN * 3 + 8];
            ctl_clean(clean, sizeof clean, (const uint8_t *)l, strlen(l), 0, NULL);
            json_array_append_new(lines, json_string(clean));
        } else {
            print_line(c, s.file, l, strlen(l));
        }
        free(l);
    }
    free(r.v);
    if (lines) {
        close(dir);
        return ctl_print_json(c, json_pack("{s:s,s:o}", "file", s.file, "lines", lines));
    }
    fflush(stdout);
    if (!follow_on) {
        close(dir);
        return 0;
    }
    rc = follow(c, dir, &s, end);
    close(dir);
    return rc;
}

static const char logs_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"file\",\"lines\"],\"description\":\"with --follow, instead: one "
    "object a line ({file, line, time, source, pid, level, message}) as they come\","
    "\"properties\":{\"file\":{\"type\":\"string\",\"description\":\"aosd.log or pg.log in the "
    "data dir\"},\"lines\":{\"type\":\"array\",\"description\":\"the last lines, oldest first "
    "(\\\"<time> <source>[<pid>] <level>: <message>\\\")\",\"items\":{\"type\":\"string\"}}}}";

static const ctl_arg logs_args[] = {
    {.name = "SOURCE", .summary = "aosd, postgres, or a server (memory, storage, tool, llm, "
     "audit): its lines only; none: all of aosd.log"},
    {.name = "--lines", .short_name = 'n', .type = CTL_INTEGER, .value = "N", .min = 1,
     .max = LINES_MAX, .def = "100", .summary = "the last N lines"},
    {.name = "--follow", .short_name = 'f', .type = CTL_BOOL,
     .summary = "then print lines as they are written, across rotations (Ctrl-C ends)"},
};

static const ctl_cmd logs_cmds[] = {
    {"logs", "aosd's log, or one server's or postgres's lines of it, from the data dir's "
     "files (rotated by size: log_max_mb, log_keep in aos.yaml)", CTL_ARGS(logs_args),
     logs_out, cmd_logs},
};

const ctl_group ctl_group_logs = {logs_cmds, sizeof logs_cmds / sizeof logs_cmds[0]};
