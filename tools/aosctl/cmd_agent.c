/* aosctl apply, ps, top and agent suspend|resume|stop|kill|restart|inspect|logs: deployments
 * and agents as aosd's kernel.agent.* methods see them, every reply checked before it prints. */
#include "aosctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent.pb-c.h"
#include "aos/envelope.h"
#include "aos/err.h"
#include "aos/readall.h"

#define DEPLOY_MAX (4u << 20)   /* bytes of a deployment file: aosd's cap too */
#define LOGS_DEFAULT 65536      /* kernel.agent.logs's own default */
#define LOGS_MAX (1u << 20)
#define NAME_COLS 32            /* a name's cells in a table; inspect shows it whole */
#define TOP_CALL_MS 5000u       /* top's calls: short, so q and ^C are never kept waiting */

/* ---- checks of what aosd sent ----------------------------------------------------------- */

static int bytes_ok(ProtobufCBinaryData b)
{
    return b.len == 0 || aos_utf8_valid(b.data, b.len);
}

static int is(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0);
}

/* A bytes field as a JSON string; the caller checked it is UTF-8. */
static json_t *jbytes(ProtobufCBinaryData b)
{
    return json_stringn(b.len ? (const char *)b.data : "", b.len);
}

/* Cleaned for a terminal into out (cap), at most max characters (0: all). */
static const char *clean(char *out, size_t cap, ProtobufCBinaryData b, size_t max)
{
    ctl_clean(out, cap, b.data, b.len, max, NULL);
    return out;
}

static int info_ok(const Aos__Agent__Info *i)
{
    return i && bytes_ok(i->name) && i->name.len && bytes_ok(i->state) && i->state.len &&
           bytes_ok(i->waiting_on) && bytes_ok(i->reason) && bytes_ok(i->program) &&
           bytes_ok(i->model) && bytes_ok(i->manifest_json) && i->pid >= 0 &&
           i->steps <= INT64_MAX && i->tokens <= INT64_MAX && i->cost_micro_usd <= INT64_MAX &&
           i->uptime_ms <= INT64_MAX && i->sched_wait_us <= INT64_MAX &&
           i->wakes <= INT64_MAX && i->wakes_skipped <= INT64_MAX && i->refused <= INT64_MAX &&
           i->next_wake_ms <= INT64_MAX;
}

static int list_ok(const Aos__Agent__ListReply *l)
{
    if (!l || l->now_ms > INT64_MAX)
        return 0;
    for (size_t i = 0; i < l->n_agents; i++)
        if (!info_ok(l->agents[i]))
            return 0;
    return 1;
}

/* ---- formats ------------------------------------------------------------------------------ */

/* "42s", "5m03s", "1h02m", "3d04h"; "-" for 0 (no process). */
static void dur(uint64_t ms, char *out, size_t cap)
{
    uint64_t s = ms / 1000;
    if (!ms)
        snprintf(out, cap, "-");
    else if (s < 60)
        snprintf(out, cap, "%" PRIu64 "s", s);
    else if (s < 3600)
        snprintf(out, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(out, cap, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s / 3600 % 24);
}

static void cost(uint64_t micro, char *out, size_t cap)
{
    snprintf(out, cap, "$%.4f", (double)micro / 1e6);
}

/* "running", "waiting(llm)". */
static void state(const Aos__Agent__Info *i, char *out, size_t cap)
{
    char s[64], w[64];
    clean(s, sizeof s, i->state, 20);
    if (i->waiting_on.len)
        snprintf(out, cap, "%s(%s)", s, clean(w, sizeof w, i->waiting_on, 12));
    else
        snprintf(out, cap, "%s", s);
}

/* Columns a cleaned UTF-8 string takes: one per character. */
static size_t cols(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* ---- JSON ----------------------------------------------------------------------------- */

static json_t *info_json(const Aos__Agent__Info *i)
{
    return json_pack("{s:o, s:o, s:o, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:o,"
                     " s:o, s:I, s:I}",
                     "name", jbytes(i->name), "state", jbytes(i->state), "waiting_on",
                     jbytes(i->waiting_on), "pid", (int)i->pid, "steps", (json_int_t)i->steps,
                     "tokens", (json_int_t)i->tokens, "cost_micro_usd",
                     (json_int_t)i->cost_micro_usd, "restarts", (json_int_t)i->restarts,
                     "uptime_ms", (json_int_t)i->uptime_ms, "sched_wait_us",
                     (json_int_t)i->sched_wait_us, "reason", jbytes(i->reason), "wakes",
                     (json_int_t)i->wakes, "wakes_skipped", (json_int_t)i->wakes_skipped,
                     "program", jbytes(i->program), "model", jbytes(i->model), "refused",
                     (json_int_t)i->refused, "next_wake_ms", (json_int_t)i->next_wake_ms);
}

static int by_name(const void *x, const void *y)
{
    const Aos__Agent__Info *a = *(Aos__Agent__Info *const *)x;
    const Aos__Agent__Info *b = *(Aos__Agent__Info *const *)y;
    size_t n = a->name.len < b->name.len ? a->name.len : b->name.len;
    int c = n ? memcmp(a->name.data, b->name.data, n) : 0;
    return c ? c : (a->name.len > b->name.len) - (a->name.len < b->name.len);
}

/* kernel.agent.list of one agent (name) or all (NULL), checked and sorted by name. NULL
 * with *rc the exit code (the error printed) when it failed. */
static Aos__Agent__ListReply *list(ctl_ctx *c, const char *name, int manifest, int *rc)
{
    Aos__Agent__ListRequest q = AOS__AGENT__LIST_REQUEST__INIT;
    q.name = (ProtobufCBinaryData){name ? strlen(name) : 0, (uint8_t *)name};
    q.with_manifest = manifest;
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.agent.list", &q.base, &r) != AOS_OK) {
        *rc = ctl_fail_reply(c, &r);
        return NULL;
    }
    Aos__Agent__ListReply *l = aos__agent__list_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!list_ok(l)) {
        if (l)
            aos__agent__list_reply__free_unpacked(l, NULL);
        *rc = ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.list: aosd sent a malformed ListReply "
                       "(text that is not UTF-8, or counters past int64)");
        return NULL;
    }
    if (l->n_agents > 1)
        qsort(l->agents, l->n_agents, sizeof *l->agents, by_name);
    return l;
}

static json_t *ps_json(const Aos__Agent__ListReply *l)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < l->n_agents; i++)
        if (json_array_append_new(arr, info_json(l->agents[i])) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    return arr ? json_pack("{s:o, s:I}", "agents", arr, "now_ms", (json_int_t)l->now_ms)
               : NULL;
}

/* ---- the table of ps and top ------------------------------------------------------------ */

enum { C_NAME, C_STATE, C_PID, C_STEP, C_TOKENS, C_COST, C_RESTARTS, C_UPTIME, C_TOKS,
       C_WAIT, NCOL };
static const char *const heads[NCOL] = {"NAME", "STATE", "PID", "STEP", "TOKENS", "COST",
                                        "RESTARTS", "UPTIME", "TOK/S", "SCHED WAIT"};

typedef struct cells {
    char c[NCOL][NAME_COLS * 4 + 8];
} cells;

/* What top knows of the previous snapshot, to turn totals into rates. */
typedef struct prev_agent {
    char name[AOS_AGENT_ID_MAX * 4 + 1];
    uint64_t tokens, wait_us, steps;
    int32_t pid;
} prev_agent;

static const prev_agent *prev_find(const prev_agent *p, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].name, name))
            return &p[i];
    return NULL;
}

static void row_of(const Aos__Agent__Info *i, cells *r)
{
    clean(r->c[C_NAME], sizeof r->c[C_NAME], i->name, NAME_COLS);
    state(i, r->c[C_STATE], sizeof r->c[C_STATE]);
    if (i->pid)
        snprintf(r->c[C_PID], sizeof r->c[C_PID], "%" PRId32, i->pid);
    else
        snprintf(r->c[C_PID], sizeof r->c[C_PID], "-");
    snprintf(r->c[C_STEP], sizeof r->c[C_STEP], "%" PRIu64, i->steps);
    snprintf(r->c[C_TOKENS], sizeof r->c[C_TOKENS], "%" PRIu64, i->tokens);
    cost(i->cost_micro_usd, r->c[C_COST], sizeof r->c[C_COST]);
    snprintf(r->c[C_RESTARTS], sizeof r->c[C_RESTARTS], "%" PRIu32, i->restarts);
    dur(i->uptime_ms, r->c[C_UPTIME], sizeof r->c[C_UPTIME]);
    snprintf(r->c[C_TOKS], sizeof r->c[C_TOKS], "-");
    snprintf(r->c[C_WAIT], sizeof r->c[C_WAIT], "-");
}

/* Writes line to f cut to width characters (0: no cut), then eol: a wrapped line would
 * throw top's count of rows off. The line is cleaned UTF-8, so characters are columns. */
static void put_cut(FILE *f, const char *line, size_t width, const char *eol)
{
    size_t n = 0, chars = 0;
    while (line[n] && (!width || chars < width || ((unsigned char)line[n] & 0xC0) == 0x80)) {
        chars += ((unsigned char)line[n] & 0xC0) != 0x80;
        n++;
    }
    fwrite(line, 1, n, f);
    fputs(eol, f);
}

/* One line of the table, the header (r NULL) or a row, into out (cap). */
static void table_line(char *out, size_t cap, const cells *r, const size_t *w, int ncol)
{
    size_t used = 0;
    out[0] = 0;
    for (int k = 0; k < ncol && used < cap; k++) {
        const char *s = r ? r->c[k] : heads[k];
        int pad = (int)(w[k] - cols(s)), left = k == C_NAME || k == C_STATE;
        int last = k + 1 == ncol;
        int n = snprintf(out + used, cap - used, "%*s%s%*s%s", left ? 0 : pad, "", s,
                         left && !last ? pad : 0, "", last ? "" : "  ");
        if (n < 0)
            break;
        used += (size_t)n < cap - used ? (size_t)n : cap - used - 1;
    }
}

/* Prints the table of rows[0..n) with ncol columns in at most lines lines (0: no limit),
 * the header included: the rows that do not fit become one "... N more" line. Each line
 * is cut to width characters (0: not cut) and ended with eol ("\n", or clear-to-end-of-line
 * first). */
static void table(FILE *f, const cells *rows, size_t n, int ncol, size_t lines, size_t width,
                  const char *eol)
{
    size_t w[NCOL];
    char line[NCOL * (sizeof rows->c[0] + 2)];
    for (int k = 0; k < ncol; k++) {
        w[k] = strlen(heads[k]);
        for (size_t i = 0; i < n; i++)
            if (cols(rows[i].c[k]) > w[k])
                w[k] = cols(rows[i].c[k]);
    }
    size_t shown = n;
    if (lines && n + 1 > lines)
        shown = lines >= 2 ? lines - 2 : 0;
    table_line(line, sizeof line, NULL, w, ncol);
    put_cut(f, line, width, eol);
    for (size_t i = 0; i < shown; i++) {
        table_line(line, sizeof line, &rows[i], w, ncol);
        put_cut(f, line, width, eol);
    }
    if (shown < n) {
        snprintf(line, sizeof line, "... %zu more", n - shown);
        put_cut(f, line, width, eol);
    }
}

static int cmd_ps(ctl_ctx *c, const ctl_vals *v)
{
    (void)v;
    int rc = 0;
    Aos__Agent__ListReply *l = list(c, NULL, 0, &rc);
    if (!l)
        return rc;
    if (c->json) {
        json_t *doc = ps_json(l);
        aos__agent__list_reply__free_unpacked(l, NULL);
        return ctl_print_json(c, doc);
    }
    cells *rows = calloc(l->n_agents ? l->n_agents : 1, sizeof *rows);
    if (!rows) {
        aos__agent__list_reply__free_unpacked(l, NULL);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < l->n_agents; i++)
        row_of(l->agents[i], &rows[i]);
    table(stdout, rows, l->n_agents, C_UPTIME + 1, 0, 0, "\n");
    free(rows);
    aos__agent__list_reply__free_unpacked(l, NULL);
    return 0;
}

/* ---- top ------------------------------------------------------------------------------ */

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int e = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sig_pipe[1], &b, 1) < 0) {
        /* the pipe is full: a byte is waiting already, which is all the loop needs */
    }
    errno = e;
}

typedef struct top_st {
    prev_agent *prev;
    size_t nprev;
    uint64_t prev_mono;     /* when prev was taken; 0: no snapshot yet */
} top_st;

/* One frame: a header, the table with rates against the last snapshot, cut to rows. */
static void top_frame(const Aos__Agent__ListReply *l, top_st *t, size_t rows_max,
                      size_t width, const char *err)
{
    static const char *const states[] = {"running", "waiting", "pending", "suspended",
                                         "stopping", "backoff", "failed", "done"};
    enum { NS = sizeof states / sizeof states[0] };
    size_t count[NS + 1] = {0};
    uint64_t mono = aos_mono_ms();
    double secs = t->prev_mono && mono > t->prev_mono ? (mono - t->prev_mono) / 1000.0 : 0;
    double total_rate = 0;
    cells *rows = calloc(l && l->n_agents ? l->n_agents : 1, sizeof *rows);
    prev_agent *now = calloc(l && l->n_agents ? l->n_agents : 1, sizeof *now);
    size_t n = l ? l->n_agents : 0;
    if (!rows || !now) {
        free(rows);
        free(now);
        fputs("\x1b[H\x1b[Jaosctl top: out of memory\x1b[K\n", stdout);
        fflush(stdout);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const Aos__Agent__Info *a = l->agents[i];
        size_t k = 0;
        while (k < NS && !is(a->state, states[k]))
            k++;
        count[k]++;
        row_of(a, &rows[i]);
        clean(now[i].name, sizeof now[i].name, a->name, 0);
        now[i].tokens = a->tokens;
        now[i].wait_us = a->sched_wait_us;
        const prev_agent *p = prev_find(t->prev, t->nprev, now[i].name);
        /* a counter that went down is a new count (the agent was replaced): no rate */
        if (p && secs > 0 && a->tokens >= p->tokens) {
            double r = (a->tokens - p->tokens) / secs;
            total_rate += r;
            snprintf(rows[i].c[C_TOKS], sizeof rows[i].c[C_TOKS], "%.1f", r);
        }
        if (p && secs > 0 && a->sched_wait_us >= p->wait_us)
            snprintf(rows[i].c[C_WAIT], sizeof rows[i].c[C_WAIT], "%.1fms/s",
                     (a->sched_wait_us - p->wait_us) / 1000.0 / secs);
    }
    char when[32] = "--:--:--";
    if (l) {
        time_t s = (time_t)(l->now_ms / 1000);
        struct tm tm;
        if (localtime_r(&s, &tm))
            strftime(when, sizeof when, "%H:%M:%S", &tm);
    }
    char head[512], more[160];
    size_t used = (size_t)snprintf(head, sizeof head, "aos top %s  %zu agent%s", when, n,
                                   n == 1 ? "" : "s");
    const char *sep = ": ";
    for (size_t k = 0; k <= NS && used < sizeof head; k++)
        if (count[k]) {
            used += (size_t)snprintf(head + used, sizeof head - used, "%s%zu %s", sep,
                                     count[k], k < NS ? states[k] : "other");
            sep = ", ";
        }
    if (secs > 0)
        snprintf(more, sizeof more, "  %.1f tokens/s  (q quits)", total_rate);
    else
        snprintf(more, sizeof more, "  (q quits)");
    if (used < sizeof head)
        snprintf(head + used, sizeof head - used, "%s", more);
    fputs("\x1b[H", stdout);
    put_cut(stdout, head, width, "\x1b[K\n");
    if (err) {
        char e[AOS_ERRMSG_MAX + 16];
        snprintf(e, sizeof e, "aosd: %s", err);
        put_cut(stdout, e, width, "\x1b[K\n");
    } else {
        fputs("\x1b[K\n", stdout);
    }
    table(stdout, rows, n, NCOL, rows_max, width, "\x1b[K\n");
    fputs("\x1b[J", stdout);
    fflush(stdout);
    free(rows);
    if (l) {
        free(t->prev);
        t->prev = now;
        t->nprev = n;
        t->prev_mono = mono;
    } else {
        free(now);
    }
}

/* The lines the table may use: the terminal's height (TIOCGWINSZ) less the header's two
 * lines and the last one (a newline there would scroll), and its width; 0 when the terminal
 * does not say. */
static size_t term_size(size_t *width)
{
    struct winsize ws;
    *width = 0;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0)
        return 0;
    *width = ws.ws_col;
    return ws.ws_row > 4 ? (size_t)ws.ws_row - 3 : 2;
}

static int cmd_top(ctl_ctx *c, const ctl_vals *v)
{
    uint64_t interval = (uint64_t)ctl_int(v, "--interval");
    /* a program, or a pipe: one snapshot as ps gives it */
    if (c->json || !isatty(STDOUT_FILENO))
        return cmd_ps(c, v);

    int rc = 0;
    if (c->timeout_ms > TOP_CALL_MS)
        c->timeout_ms = TOP_CALL_MS;
    Aos__Agent__ListReply *l = list(c, NULL, 0, &rc);
    if (!l)
        return rc; /* no aosd at all: say so once, as every command does */

    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        aos__agent__list_reply__free_unpacked(l, NULL);
        return ctl_fail(c, AOS_ERR_INTERNAL, "pipe: %s", strerror(errno));
    }
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term, old_winch;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGWINCH, &sa, &old_winch);
    struct termios saved, raw;
    int keys = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (keys) {
        raw = saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    fputs("\x1b[?25l\x1b[2J", stdout); /* no cursor while drawing; a clean screen once */

    top_st t = {0};
    size_t width, rows = term_size(&width);
    top_frame(l, &t, rows, width, NULL);
    aos__agent__list_reply__free_unpacked(l, NULL);
    uint64_t next = aos_mono_ms() + interval;
    int done = 0;
    while (!done) {
        uint64_t now = aos_mono_ms();
        struct pollfd p[2] = {{.fd = sig_pipe[0], .events = POLLIN},
                              {.fd = keys ? STDIN_FILENO : -1, .events = POLLIN}};
        int k = poll(p, 2, now >= next ? 0 : (int)(next - now));
        if (k < 0 && errno != EINTR) {
            rc = ctl_fail(c, AOS_ERR_INTERNAL, "poll: %s", strerror(errno));
            break;
        }
        int redraw = 0;
        if (k > 0 && (p[0].revents & POLLIN)) {
            unsigned char b[16];
            ssize_t got = read(sig_pipe[0], b, sizeof b);
            for (ssize_t i = 0; i < got; i++) {
                if (b[i] == SIGWINCH)
                    redraw = 1;
                else
                    done = 1;
            }
        }
        if (k > 0 && (p[1].revents & (POLLIN | POLLHUP))) {
            char b[64];
            ssize_t got = read(STDIN_FILENO, b, sizeof b);
            if (got == 0)
                keys = 0; /* the terminal went away: only signals end it now */
            for (ssize_t i = 0; i < got; i++)
                if (b[i] == 'q' || b[i] == 'Q')
                    done = 1;
        }
        if (done)
            break;
        if (!redraw && aos_mono_ms() < next)
            continue;
        aos_reply r;
        Aos__Agent__ListRequest q = AOS__AGENT__LIST_REQUEST__INIT;
        l = NULL;
        if (ctl_call(c, NULL, "kernel.agent.list", &q.base, &r) == AOS_OK) {
            l = aos__agent__list_reply__unpack(NULL, r.payload_len, r.payload);
            if (!list_ok(l)) {
                if (l)
                    aos__agent__list_reply__free_unpacked(l, NULL);
                l = NULL;
                snprintf(r.error, sizeof r.error, "a malformed ListReply");
            } else if (l->n_agents > 1) {
                qsort(l->agents, l->n_agents, sizeof *l->agents, by_name);
            }
        }
        /* aosd away for a moment: the last rates stay, the error shows, it tries again */
        char err[AOS_ERRMSG_MAX + 1];
        ctl_clean(err, sizeof err, (const uint8_t *)r.error, strlen(r.error), 200, NULL);
        rows = term_size(&width);
        top_frame(l, &t, rows, width, l ? NULL : err);
        if (l)
            aos__agent__list_reply__free_unpacked(l, NULL);
        aos_reply_clear(&r);
        if (!redraw || aos_mono_ms() >= next)
            next = aos_mono_ms() + interval;
    }
    if (keys)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    fputs("\x1b[?25h", stdout);
    fflush(stdout);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGWINCH, &old_winch, NULL);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    free(t.prev);
    return rc;
}

/* ---- apply ----------------------------------------------------------------------------- */

static const char *const actions[] = {"create", "update", "delete", "unchanged"};

static int change_ok(const Aos__Agent__Change *ch)
{
    if (!ch || !bytes_ok(ch->kind) || !ch->kind.len || !bytes_ok(ch->name) || !ch->name.len)
        return 0;
    int known = 0;
    for (size_t k = 0; k < sizeof actions / sizeof actions[0]; k++)
        known |= is(ch->action, actions[k]);
    for (size_t k = 0; known && k < ch->n_fields; k++)
        known = bytes_ok(ch->fields[k]);
    return known;
}

/* The file's text (the path "-": standard input), at most DEPLOY_MAX bytes. NULL with *rc
 * when it cannot be read. */
static char *read_deploy(ctl_ctx *c, const char *path, size_t *len, int *rc)
{
    int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0) {
        int e = errno;
        *rc = ctl_fail(c, e == ENOENT || e == ENOTDIR ? AOS_ERR_NOT_FOUND
                       : e == EACCES || e == EPERM ? AOS_ERR_REFUSED : AOS_ERR_IO,
                       "%s: %s", path, strerror(e));
        return NULL;
    }
    char *text = aos_read_all(fd, DEPLOY_MAX, len);
    int e = errno;
    if (fd != STDIN_FILENO)
        close(fd);
    if (!text) {
        if (e == EFBIG)
            *rc = ctl_fail(c, AOS_ERR_USAGE, "%s: a deployment file is at most 4 MiB (%u "
                           "bytes)", path, DEPLOY_MAX);
        else
            *rc = ctl_fail(c, e == ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_IO, "%s: %s", path,
                           strerror(e));
    }
    return text;
}

static int cmd_apply(ctl_ctx *c, const ctl_vals *v)
{
    const char *path = ctl_str(v, "--file");
    int rc = 0;
    if (!path || !*path)
        return ctl_fail(c, AOS_ERR_USAGE, "apply: give the deployment file: -f FILE (\"-f -\" "
                        "reads standard input)");
    size_t len = 0;
    char *text = read_deploy(c, path, &len, &rc);
    if (!text)
        return rc;
    /* the name goes into aosd's messages, which are UTF-8: a path that is not is shown
     * with '?' for its odd bytes */
    char name[1024];
    snprintf(name, sizeof name, "%s", strcmp(path, "-") ? path : "<stdin>");
    if (!aos_utf8_valid(name, strlen(name)))
        for (char *p = name; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
    Aos__Agent__ApplyRequest q = AOS__AGENT__APPLY_REQUEST__INIT;
    q.yaml = (ProtobufCBinaryData){len, (uint8_t *)text};
    q.file = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    q.prune = ctl_given(v, "--prune");
    q.dry_run = ctl_given(v, "--dry-run");
    aos_reply r;
    aos_err e = ctl_call(c, NULL, "kernel.agent.apply", &q.base, &r);
    free(text);
    if (e != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Agent__ApplyReply *a = aos__agent__apply_reply__unpack(NULL, r.payload_len,
                                                                 r.payload);
    aos_reply_clear(&r);
    int ok = a != NULL;
    for (size_t i = 0; ok && i < a->n_changes; i++)
        ok = change_ok(a->changes[i]);
    if (!ok) {
        if (a)
            aos__agent__apply_reply__free_unpacked(a, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.apply: aosd sent a malformed "
                        "ApplyReply");
    }
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < a->n_changes; i++) {
            const Aos__Agent__Change *ch = a->changes[i];
            json_t *f = json_array();
            for (size_t k = 0; f && k < ch->n_fields; k++)
                json_array_append_new(f, jbytes(ch->fields[k]));
            if (json_array_append_new(arr, json_pack("{s:o, s:o, s:o, s:o}", "kind",
                                                     jbytes(ch->kind), "name",
                                                     jbytes(ch->name), "action",
                                                     jbytes(ch->action), "fields", f))) {
                json_decref(arr);
                arr = NULL;
            }
        }
        json_t *doc = arr ? json_pack("{s:b, s:o}", "applied", a->applied, "changes", arr)
                          : NULL;
        aos__agent__apply_reply__free_unpacked(a, NULL);
        return ctl_print_json(c, doc);
    }
    size_t n[4] = {0};
    int verbose = ctl_given(v, "--verbose");
    for (size_t i = 0; i < a->n_changes; i++) {
        const Aos__Agent__Change *ch = a->changes[i];
        size_t k = 0;
        while (!is(ch->action, actions[k]))
            k++;
        n[k]++;
        if (k == 3 && !verbose)
            continue;
        char kind[64], nm[NAME_COLS * 4 + 8];
        clean(kind, sizeof kind, ch->kind, 20);
        clean(nm, sizeof nm, ch->name, 0);
        printf("%c %s %s", "+~-="[k], kind, nm);
        for (size_t f = 0; k == 1 && f < ch->n_fields; f++) {
            char fl[128];
            printf("%s%s", f ? ", " : ": ", clean(fl, sizeof fl, ch->fields[f], 40));
        }
        putchar('\n');
    }
    if (a->applied)
        printf("applied: %zu created, %zu updated, %zu deleted, %zu unchanged\n", n[0], n[1],
               n[2], n[3]);
    else
        printf("dry run: would create %zu, update %zu, delete %zu; %zu unchanged; nothing "
               "was changed\n", n[0], n[1], n[2], n[3]);
    aos__agent__apply_reply__free_unpacked(a, NULL);
    return 0;
}

/* ---- agent ACTION NAME -------------------------------------------------------------------- */

static int cmd_ctl(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    const char *action = v->cmd->path + strlen("agent ");
    Aos__Agent__CtlRequest q = AOS__AGENT__CTL_REQUEST__INIT;
    q.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    q.action = (ProtobufCBinaryData){strlen(action), (uint8_t *)action};
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.agent.ctl", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Agent__CtlReply *s = aos__agent__ctl_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s || !bytes_ok(s->state) || !s->state.len) {
        if (s)
            aos__agent__ctl_reply__free_unpacked(s, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.ctl: aosd sent a malformed CtlReply");
    }
    if (c->json) {
        json_t *doc = json_pack("{s:s, s:s, s:o}", "name", name, "action", action, "state",
                                jbytes(s->state));
        aos__agent__ctl_reply__free_unpacked(s, NULL);
        return ctl_print_json(c, doc);
    }
    char st[64];
    printf("%s: %s\n", name, clean(st, sizeof st, s->state, 20));
    aos__agent__ctl_reply__free_unpacked(s, NULL);
    return 0;
}

/* ---- agent key create|ls|revoke: the front door's API keys ------------------------------ */

static int id_ok(ProtobufCBinaryData b)
{
    if (b.len != 12)
        return 0;
    for (size_t i = 0; i < b.len; i++)
        if (!strchr("0123456789abcdef", b.data[i]) || !b.data[i])
            return 0;
    return 1;
}

static int cmd_key_create(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    Aos__Agent__KeyCreateRequest q = AOS__AGENT__KEY_CREATE_REQUEST__INIT;
    q.agent = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.agent.key.create", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Agent__KeyCreateReply *k =
        aos__agent__key_create_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!k || !id_ok(k->id) || !is(k->agent, name) || k->key.len < 8 || k->key.len > 256 ||
        !bytes_ok(k->key) || memchr(k->key.data, '\n', k->key.len)) {
        if (k)
            aos__agent__key_create_reply__free_unpacked(k, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.key.create: aosd sent a malformed "
                        "KeyCreateReply");
    }
    int rc = 0;
    if (c->json) {
        rc = ctl_print_json(c, json_pack("{s:o, s:s, s:o, s:I}", "id", jbytes(k->id), "agent",
                                         name, "key", jbytes(k->key), "created_ms",
                                         (json_int_t)k->created_ms));
    } else {
        printf("%.*s\n", (int)k->key.len, (const char *)k->key.data);
        fprintf(stderr, "key %.*s for agent %s: shown once, aosd keeps only its hash\n",
                (int)k->id.len, (const char *)k->id.data, name);
    }
    aos__agent__key_create_reply__free_unpacked(k, NULL);
    return rc;
}

static int cmd_key_ls(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    Aos__Agent__KeyListRequest q = AOS__AGENT__KEY_LIST_REQUEST__INIT;
    if (name)
        q.agent = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.agent.key.list", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Agent__KeyListReply *l =
        aos__agent__key_list_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    int ok = l != NULL;
    for (size_t i = 0; ok && i < l->n_keys; i++)
        ok = id_ok(l->keys[i]->id) && bytes_ok(l->keys[i]->agent) && l->keys[i]->agent.len &&
             l->keys[i]->created_ms <= INT64_MAX && l->keys[i]->revoked_ms <= INT64_MAX;
    if (!ok) {
        if (l)
            aos__agent__key_list_reply__free_unpacked(l, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.key.list: aosd sent a malformed "
                        "KeyListReply");
    }
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < l->n_keys; i++)
            json_array_append_new(arr, json_pack("{s:o, s:o, s:I, s:I, s:b}", "id",
                                                 jbytes(l->keys[i]->id), "agent",
                                                 jbytes(l->keys[i]->agent), "created_ms",
                                                 (json_int_t)l->keys[i]->created_ms,
                                                 "revoked_ms",
                                                 (json_int_t)l->keys[i]->revoked_ms,
                                                 "active", !l->keys[i]->revoked_ms));
        aos__agent__key_list_reply__free_unpacked(l, NULL);
        return ctl_print_json(c, json_pack("{s:o}", "keys", arr));
    }
    printf("%-12s  %-32s  %-8s  %s\n", "ID", "AGENT", "STATE", "CREATED");
    for (size_t i = 0; i < l->n_keys; i++) {
        char ag[NAME_COLS * 4 + 1], when[32];
        time_t t = (time_t)(l->keys[i]->created_ms / 1000);
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
        printf("%.*s  %-32s  %-8s  %s\n", (int)l->keys[i]->id.len,
               (const char *)l->keys[i]->id.data,
               clean(ag, sizeof ag, l->keys[i]->agent, NAME_COLS),
               l->keys[i]->revoked_ms ? "revoked" : "active", when);
    }
    aos__agent__key_list_reply__free_unpacked(l, NULL);
    return 0;
}

static int cmd_key_revoke(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME"), *id = ctl_str(v, "--id");
    Aos__Agent__KeyRevokeRequest q = AOS__AGENT__KEY_REVOKE_REQUEST__INIT;
    q.agent = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    if (id)
        q.id = (ProtobufCBinaryData){strlen(id), (uint8_t *)id};
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.agent.key.revoke", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Agent__KeyRevokeReply *k =
        aos__agent__key_revoke_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!k)
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.key.revoke: aosd sent a malformed "
                        "KeyRevokeReply");
    uint32_t n = k->revoked;
    aos__agent__key_revoke_reply__free_unpacked(k, NULL);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s, s:i}", "agent", name, "revoked", (int)n));
    printf("%s: %u key%s revoked\n", name, n, n == 1 ? "" : "s");
    return 0;
}

/* ---- agent inspect ------------------------------------------------------------------------ */

static int cmd_inspect(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    int rc = 0;
    Aos__Agent__ListReply *l = list(c, name, 1, &rc);
    if (!l)
        return rc;
    const Aos__Agent__Info *in = NULL;
    for (size_t i = 0; i < l->n_agents && !in; i++)
        if (is(l->agents[i]->name, name))
            in = l->agents[i];
    if (!in) {
        aos__agent__list_reply__free_unpacked(l, NULL);
        return ctl_fail(c, AOS_ERR_NOT_FOUND, "no agent %s (aosctl ps lists them)", name);
    }
    json_t *man = json_null();
    if (in->manifest_json.len) {
        json_error_t je;
        json_decref(man);
        man = json_loadb((const char *)in->manifest_json.data, in->manifest_json.len,
                         JSON_REJECT_DUPLICATES, &je);
        if (!man || !json_is_object(man)) {
            json_decref(man);
            aos__agent__list_reply__free_unpacked(l, NULL);
            return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.list: the manifest aosd sent is "
                            "not a JSON object");
        }
    }
    if (c->json) {
        json_t *doc = info_json(in);
        uint64_t now = l->now_ms;
        aos__agent__list_reply__free_unpacked(l, NULL);
        if (doc && (json_object_set_new(doc, "manifest", man) ||
                    json_object_set_new(doc, "now_ms", json_integer((json_int_t)now)))) {
            json_decref(doc);
            doc = NULL;
        } else if (!doc) {
            json_decref(man);
        }
        return ctl_print_json(c, doc);
    }
    char b[4][1024], up[32], next[96] = "-";
    state(in, b[0], sizeof b[0]);
    dur(in->uptime_ms, up, sizeof up);
    if (in->next_wake_ms) {
        time_t s = (time_t)(in->next_wake_ms / 1000);
        struct tm tm;
        char when[48] = "?", left[32] = "now";
        if (gmtime_r(&s, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        if (in->next_wake_ms > l->now_ms)
            dur(in->next_wake_ms - l->now_ms, left, sizeof left);
        snprintf(next, sizeof next, "%s (in %s)", when, left);
    }
    cost(in->cost_micro_usd, b[3], sizeof b[3]);
    printf("name:        %s\n", clean(b[1], sizeof b[1], in->name, 0));
    printf("state:       %s\n", b[0]);
    printf("reason:      %s\n", in->reason.len ? clean(b[1], sizeof b[1], in->reason, 300)
                                               : "-");
    printf("program:     %s\n", clean(b[1], sizeof b[1], in->program, 300));
    printf("model:       %s\n", in->model.len ? clean(b[2], sizeof b[2], in->model, 200) : "-");
    if (in->pid)
        printf("pid:         %" PRId32 "\n", in->pid);
    else
        printf("pid:         - (no process)\n");
    printf("uptime:      %s\n", up);
    printf("restarts:    %" PRIu32 "\n", in->restarts);
    printf("steps:       %" PRIu64 "\n", in->steps);
    printf("tokens:      %" PRIu64 "\n", in->tokens);
    printf("cost:        %s\n", b[3]);
    printf("sched wait:  %.1f ms in the LLM queue, in all\n", in->sched_wait_us / 1000.0);
    printf("wakes:       %" PRIu64 " delivered, %" PRIu64 " skipped (it was busy)\n",
           in->wakes, in->wakes_skipped);
    printf("next wake:   %s\n", next);
    printf("refused:     %" PRIu64 " syscalls (outside its manifest)\n", in->refused);
    aos__agent__list_reply__free_unpacked(l, NULL);
    if (json_is_null(man)) {
        printf("manifest:    -\n");
        return 0;
    }
    /* ASCII only: every byte of it is safe on a terminal */
    char *s = json_dumps(man, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_SORT_KEYS);
    json_decref(man);
    if (!s)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    printf("manifest:\n");
    for (char *line = s, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        printf("  %.*s\n", nl ? (int)(nl - line) : (int)strlen(line), line);
    }
    free(s);
    return 0;
}

/* ---- agent logs ----------------------------------------------------------------------------- */

/* An agent's output as a JSON string: what is not UTF-8 (and NUL) becomes U+FFFD. */
static json_t *text_json(const uint8_t *d, size_t n)
{
    char *s = malloc(n * 3 + 1);
    if (!s)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = d[i];
        size_t k = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (k == 0 || i + k > n || !aos_utf8_valid(d + i, k)) {
            memcpy(s + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(s + o, d + i, k);
        o += k;
        i += k;
    }
    json_t *j = json_stringn(s, o);
    free(s);
    return j;
}

static int cmd_logs(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    Aos__Agent__LogsRequest q = AOS__AGENT__LOGS_REQUEST__INIT;
    q.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    q.max_bytes = (uint32_t)ctl_int(v, "--bytes");
    aos_reply r;
    if (ctl_call(c, NULL, "kernel.agent.logs", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Agent__LogsReply *l = aos__agent__logs_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!l || l->text.len > LOGS_MAX) {
        if (l)
            aos__agent__logs_reply__free_unpacked(l, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "kernel.agent.logs: aosd sent a malformed LogsReply");
    }
    if (c->json) {
        json_t *doc = json_pack("{s:s, s:o, s:b}", "name", name, "text",
                                text_json(l->text.data, l->text.len), "truncated",
                                l->truncated);
        aos__agent__logs_reply__free_unpacked(l, NULL);
        return ctl_print_json(c, doc);
    }
    if (l->truncated)
        fprintf(stderr, "[%s: earlier output left out; --bytes N shows more, up to %u]\n",
                name, LOGS_MAX);
    ctl_put_text(stdout, l->text.data, l->text.len);
    if (l->text.len && l->text.data[l->text.len - 1] != '\n')
        putchar('\n');
    aos__agent__logs_reply__free_unpacked(l, NULL);
    return 0;
}

/* ---- the tables ----------------------------------------------------------------------------- */

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define STR "{\"type\":\"string\"}"
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define STATES                                                                             \
    "[\"pending\",\"running\",\"waiting\",\"suspended\",\"stopping\",\"done\",\"failed\","   \
    "\"backoff\"]"
#define INFO_REQ                                                                           \
    "\"required\":[\"name\",\"state\",\"waiting_on\",\"pid\",\"steps\",\"tokens\","         \
    "\"cost_micro_usd\",\"restarts\",\"uptime_ms\",\"sched_wait_us\",\"reason\",\"wakes\","  \
    "\"wakes_skipped\",\"program\",\"model\",\"refused\",\"next_wake_ms\"]"
#define INFO_PROPS                                                                         \
    "\"name\":" STR ",\"state\":{\"type\":\"string\",\"enum\":" STATES "},"                  \
    "\"waiting_on\":{\"type\":\"string\",\"description\":\"state waiting: llm, tool, "       \
    "mailbox or timer; else empty\"},"                                                     \
    "\"pid\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"0: no process\"},"        \
    "\"steps\":" INT0 ",\"tokens\":{\"type\":\"integer\",\"minimum\":0,\"description\":"    \
    "\"LLM tokens used, input + output\"},\"cost_micro_usd\":" INT0 ",\"restarts\":" INT0    \
    ",\"uptime_ms\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"of the current "   \
    "process; 0: none\"},\"sched_wait_us\":{\"type\":\"integer\",\"minimum\":0,"             \
    "\"description\":\"its LLM calls' time in the scheduler's queue, in all\"},"             \
    "\"reason\":{\"type\":\"string\",\"description\":\"failed, backoff, done: why (the last " \
    "exit)\"},\"wakes\":" INT0 ",\"wakes_skipped\":{\"type\":\"integer\",\"minimum\":0,"     \
    "\"description\":\"wakes that came while it was busy\"},\"program\":" STR ",\"model\":"  \
    STR ",\"refused\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"syscalls the "   \
    "kernel refused for its manifest\"},\"next_wake_ms\":{\"type\":\"integer\",\"minimum\":" \
    "0,\"description\":\"wall-clock ms of the next timer wake; 0: none\"}"

static const char ps_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agents\",\"now_ms\"],\"properties\":{"
    "\"agents\":{\"type\":\"array\",\"description\":\"sorted by name\",\"items\":{"
    "\"type\":\"object\"," INFO_REQ ",\"properties\":{" INFO_PROPS "}}},"
    "\"now_ms\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"aosd's wall clock when "
    "the list was made\"}}}";

static const char inspect_out[] = SCHEMA
    "\"type\":\"object\"," INFO_REQ ",\"properties\":{" INFO_PROPS ","
    "\"manifest\":{\"type\":[\"object\",\"null\"],\"description\":\"the agent as deployed: "
    "the deployment file's fields with the defaults filled in\"},"
    "\"now_ms\":" INT0 "}}";

static const char ctl_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"name\",\"action\",\"state\"],\"properties\":{"
    "\"name\":" STR ",\"action\":{\"type\":\"string\",\"enum\":[\"suspend\",\"resume\","
    "\"stop\",\"kill\",\"restart\"]},\"state\":{\"type\":\"string\",\"enum\":" STATES ","
    "\"description\":\"after the command took effect, or was requested (stopping)\"}}}";

static const char logs_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"name\",\"text\",\"truncated\"],\"properties\":{"
    "\"name\":" STR ",\"text\":{\"type\":\"string\",\"description\":\"the tail of its "
    "standard output and error (invalid UTF-8 shown as U+FFFD)\"},\"truncated\":{\"type\":"
    "\"boolean\",\"description\":\"there was more before it\"}}}";

static const char apply_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"applied\",\"changes\"],\"properties\":{"
    "\"applied\":{\"type\":\"boolean\",\"description\":\"false: a dry run, nothing changed\"},"
    "\"changes\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"kind\","
    "\"name\",\"action\",\"fields\"],\"properties\":{\"kind\":{\"type\":\"string\","
    "\"description\":\"agent, collection or topic\"},\"name\":" STR ",\"action\":{\"type\":"
    "\"string\",\"enum\":[\"create\",\"update\",\"delete\",\"unchanged\"]},\"fields\":{"
    "\"type\":\"array\",\"description\":\"update: the top-level fields that differ\","
    "\"items\":" STR "}}}}}}";

static const char key_create_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"id\",\"agent\",\"key\",\"created_ms\"],\"properties\":{"
    "\"id\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{12}$\"},\"agent\":" STR ","
    "\"key\":{\"type\":\"string\",\"description\":\"the API key (aos-...), shown this once: "
    "aosd keeps only its BLAKE2b hash\"},\"created_ms\":" INT0 "}}";

static const char key_ls_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"keys\"],\"properties\":{\"keys\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"object\",\"required\":[\"id\",\"agent\",\"created_ms\","
    "\"revoked_ms\",\"active\"],\"properties\":{\"id\":" STR ",\"agent\":" STR ","
    "\"created_ms\":" INT0 ",\"revoked_ms\":{\"type\":\"integer\",\"minimum\":0,"
    "\"description\":\"0: in force\"},\"active\":{\"type\":\"boolean\"}}}}}}";

static const char key_revoke_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"revoked\"],\"properties\":{"
    "\"agent\":" STR ",\"revoked\":{\"type\":\"integer\",\"minimum\":0,\"description\":"
    "\"keys revoked now (already revoked ones are not counted)\"}}}";

#define NAME_ARG                                                                           \
    {.name = "NAME", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,64}$",                   \
     .check = ctl_check_agent, .summary = "the agent (aosctl ps lists them)"}

static const ctl_arg apply_args[] = {
    {.name = "--file", .short_name = 'f', .value = "FILE",
     .summary = "the deployment file (YAML, at most 4 MiB); - reads standard input"},
    {.name = "--prune", .type = CTL_BOOL,
     .summary = "delete the agents (and collections, topics) the file no longer has"},
    {.name = "--dry-run", .type = CTL_BOOL,
     .summary = "only say what would change; nothing is changed"},
    {.name = "--verbose", .short_name = 'v', .type = CTL_BOOL,
     .summary = "list what is unchanged too (\"= agent NAME\")"},
};
static const ctl_arg name_args[] = {NAME_ARG};
static const ctl_arg key_ls_args[] = {
    {.name = "NAME", .pattern = "^[A-Za-z0-9_.:-]{1,64}$", .check = ctl_check_agent,
     .summary = "only this agent's keys (default: every agent's)"},
};
static const ctl_arg key_revoke_args[] = {
    NAME_ARG,
    {.name = "--id", .value = "ID", .pattern = "^[0-9a-f]{12}$",
     .summary = "only this key (agent key ls shows the ids); default: all of the agent's"},
};
static const ctl_arg logs_args[] = {
    NAME_ARG,
    {.name = "--bytes", .type = CTL_INTEGER, .value = "N", .min = 1, .max = LOGS_MAX,
     .def = "65536", .summary = "the tail's size: its last N bytes of output"},
};
static const ctl_arg top_args[] = {
    {.name = "--interval", .type = CTL_INTEGER, .value = "MS", .min = 100, .max = 3600000,
     .def = "1000", .summary = "redraw every MS milliseconds"},
};
_Static_assert(LOGS_DEFAULT == 65536, "--bytes's default above says 65536");

static const ctl_cmd agent_cmds[] = {
    {"apply", "make the agents, collections and topics of a deployment file so (checked "
     "whole first: a bad file changes nothing and its error names FILE:LINE:COL)",
     CTL_ARGS(apply_args), apply_out, cmd_apply},
    {"ps", "every agent: state (and what it waits on), pid, steps, tokens, cost, restarts, "
     "uptime", NULL, 0, ps_out, cmd_ps},
    {"top", "the agents live, redrawn in place, with tokens/s and scheduler wait (q quits); "
     "--json or not a terminal: one snapshot, as ps", CTL_ARGS(top_args), ps_out, cmd_top},
    {"agent suspend", "freeze an agent at its next step boundary (it keeps its state)",
     CTL_ARGS(name_args), ctl_out, cmd_ctl},
    {"agent resume", "thaw a suspended agent", CTL_ARGS(name_args), ctl_out, cmd_ctl},
    {"agent stop", "ask an agent to finish (STOP at its next step or wait), then SIGTERM, "
     "then SIGKILL after its stop timeout; it is not restarted", CTL_ARGS(name_args), ctl_out,
     cmd_ctl},
    {"agent kill", "SIGKILL an agent's process now (its restart policy then applies)",
     CTL_ARGS(name_args), ctl_out, cmd_ctl},
    {"agent restart", "stop an agent's process and start a new one", CTL_ARGS(name_args),
     ctl_out, cmd_ctl},
    {"agent inspect", "one agent: everything ps knows, its last exit, wakes, refusals and "
     "its manifest", CTL_ARGS(name_args), inspect_out, cmd_inspect},
    {"agent logs", "the tail of an agent's standard output and error, as it wrote them",
     CTL_ARGS(logs_args), logs_out, cmd_logs},
    {"agent key create", "a new API key for the front door (aos-api), bound to the agent: "
     "HTTP clients that show it act as that agent; printed once", CTL_ARGS(name_args),
     key_create_out, cmd_key_create},
    {"agent key ls", "the front door's API keys: id, agent, active or revoked (never the keys)",
     CTL_ARGS(key_ls_args), key_ls_out, cmd_key_ls},
    {"agent key revoke", "revoke an agent's API keys (or one, --id): their clients get 401 "
     "from the next call on", CTL_ARGS(key_revoke_args), key_revoke_out, cmd_key_revoke},
};

const ctl_group ctl_group_agent = {agent_cmds, sizeof agent_cmds / sizeof agent_cmds[0]};
