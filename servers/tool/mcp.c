/* The MCP client of mcp.h: a reader thread per session that splits and decodes the server's
 * stdout, matches answers to pending requests by id and serves the server's own requests. */
#include "mcp.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos/log.h"

#ifndef AOS_VERSION
#define AOS_VERSION "0"
#endif

#define WHY_CAP 512u        /* a message kept on the session or a pending request */
#define SHOW_MAX 160u       /* bytes of a server's error message echoed in ours */
#define READ_CHUNK 65536u
#define UNKNOWN_LOG_MAX 16u /* replies to ids we never sent, logged before going quiet */
#define LIST_DEFAULT_MS 10000u

static const char *const protocols[] = MCP_PROTOCOLS;
#define NPROTOCOLS (sizeof protocols / sizeof protocols[0])

/* A server's text (untrusted) made safe for a message line: control bytes become '?', and
 * it is cut at SHOW_MAX bytes (never inside a UTF-8 sequence: continuation bytes after
 * the cut are dropped with it). */
static void show(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    size_t lim = cap - 1 < SHOW_MAX ? cap - 1 : SHOW_MAX;
    for (; src && *src && n < lim; src++)
        dst[n++] = (unsigned char)*src < 0x20 || *src == 0x7f ? '?' : *src;
    if (src && *src && ((unsigned char)*src & 0xC0) == 0x80) {
        /* cut inside a sequence: drop its first bytes too */
        while (n > 0 && ((unsigned char)dst[n - 1] & 0xC0) == 0x80)
            n--;
        if (n > 0 && ((unsigned char)dst[n - 1] & 0xC0) == 0xC0)
            n--;
    }
    dst[n] = 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the decoder ---- */

static int id_ok(const json_t *id) { return json_is_integer(id) || json_is_string(id); }

aos_err mcp_decode(const char *line, size_t len, mcp_msg *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!line || !len) {
        aos_say(why, whylen, "empty message");
        return AOS_ERR_USAGE;
    }
    if (memchr(line, 0, len)) {
        aos_say(why, whylen, "NUL byte in a message");
        return AOS_ERR_USAGE;
    }
    json_error_t e;
    /* No JSON_ALLOW_NUL: a "\u0000" in a string is refused, so every string is a C string. */
    json_t *root = json_loadb(line, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    if (!root) {
        aos_say(why, whylen, "not JSON: %s (column %d)", e.text, e.column);
        return AOS_ERR_USAGE;
    }
    const char *bad = NULL;
    if (json_is_array(root)) {
        bad = "a batch array (JSON-RPC batching is not part of MCP 2025-06-18)";
        goto out;
    }
    if (!json_is_object(root)) {
        bad = "not a JSON object";
        goto out;
    }
    const char *ver = json_string_value(json_object_get(root, "jsonrpc"));
    if (!ver || strcmp(ver, "2.0")) {
        bad = "jsonrpc is not \"2.0\"";
        goto out;
    }
    json_t *id = json_object_get(root, "id");
    json_t *method = json_object_get(root, "method");
    json_t *params = json_object_get(root, "params");
    json_t *result = json_object_get(root, "result");
    json_t *error = json_object_get(root, "error");
    if (method) {
        if (result || error) {
            bad = "a method together with result or error";
            goto out;
        }
        if (!json_is_string(method) || !json_string_length(method)) {
            bad = "method is not a non-empty string";
            goto out;
        }
        if (params && !json_is_object(params) && !json_is_array(params)) {
            bad = "params is neither an object nor an array";
            goto out;
        }
        if (id && !id_ok(id)) {
            bad = "a request id that is neither an integer nor a string";
            goto out;
        }
        out->kind = id ? MCP_MSG_REQUEST : MCP_MSG_NOTIFICATION;
        out->id = id;
        out->method = json_string_value(method);
        out->params = params;
    } else if (result && error) {
        bad = "both result and error";
        goto out;
    } else if (result) {
        if (!id_ok(id)) {
            bad = "a response id that is neither an integer nor a string";
            goto out;
        }
        out->kind = MCP_MSG_RESPONSE;
        out->id = id;
        out->result = result;
    } else if (error) {
        if (!id_ok(id) && !json_is_null(id)) {
            bad = "an error id that is neither an integer, a string nor null";
            goto out;
        }
        json_t *code = json_object_get(error, "code");
        json_t *msg = json_object_get(error, "message");
        if (!json_is_object(error) || !json_is_integer(code) || !json_is_string(msg)) {
            bad = "an error that is not {code: integer, message: string}";
            goto out;
        }
        out->kind = MCP_MSG_ERROR;
        out->id = id;
        out->err_code = json_integer_value(code);
        out->err_message = json_string_value(msg);
        out->err_data = json_object_get(error, "data");
    } else {
        bad = "neither method, result nor error";
        goto out;
    }
    out->root = root;
    return AOS_OK;
out:
    aos_say(why, whylen, "not a JSON-RPC 2.0 message: %s", bad);
    json_decref(root);
    memset(out, 0, sizeof *out);
    return AOS_ERR_USAGE;
}

/* ---- the line splitter ---- */

struct mcp_reader {
    char *buf; /* the unfinished line */
    size_t len, cap, max;
    unsigned long long lines;
    aos_err broken; /* AOS_OK until a fatal line, then its error, forever */
    char why[WHY_CAP];
};

mcp_reader *mcp_reader_new(size_t line_max)
{
    mcp_reader *r = calloc(1, sizeof *r);
    if (r)
        r->max = line_max ? line_max : MCP_LINE_MAX_DEFAULT;
    return r;
}

void mcp_reader_free(mcp_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r);
}

size_t mcp_reader_pending(const mcp_reader *r) { return r->len; }

static aos_err reader_break(mcp_reader *r, aos_err e, char *why, size_t whylen)
{
    r->broken = e;
    aos_say(why, whylen, "%s", r->why);
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
    return e;
}

/* Keeps n more bytes of the current line, growing the buffer by doubling up to max. */
static aos_err reader_append(mcp_reader *r, const char *p, size_t n, char *why, size_t whylen)
{
    if (n > r->max - r->len) {
        snprintf(r->why, sizeof r->why, "line longer than %zu bytes", r->max);
        return reader_break(r, AOS_ERR_TOO_BIG, why, whylen);
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n)
            cap = cap > r->max / 2 ? r->max : cap * 2;
        char *b = realloc(r->buf, cap);
        if (!b) {
            snprintf(r->why, sizeof r->why, "no memory for a %zu-byte line", cap);
            return reader_break(r, AOS_ERR_NOMEM, why, whylen);
        }
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    return AOS_OK;
}

static aos_err reader_line(mcp_reader *r, const char *p, size_t n, mcp_msg_fn fn, void *arg,
                           char *why, size_t whylen)
{
    r->lines++;
    if (n && p[n - 1] == '\r')
        n--;
    if (!n)
        return AOS_OK;
    mcp_msg msg;
    char dwhy[WHY_CAP - 32];
    if (mcp_decode(p, n, &msg, dwhy, sizeof dwhy) != AOS_OK) {
        snprintf(r->why, sizeof r->why, "line %llu: %s", r->lines, dwhy);
        return reader_break(r, AOS_ERR_USAGE, why, whylen);
    }
    aos_err rc = fn ? fn(arg, &msg, why, whylen) : AOS_OK;
    json_decref(msg.root);
    return rc;
}

aos_err mcp_reader_feed(mcp_reader *r, const char *data, size_t n, mcp_msg_fn fn, void *arg,
                        char *why, size_t whylen)
{
    if (r->broken) {
        aos_say(why, whylen, "%s", r->why);
        return r->broken;
    }
    while (n) {
        const char *nl = memchr(data, '\n', n);
        size_t seg = nl ? (size_t)(nl - data) : n;
        aos_err rc;
        if (!nl) {
            /* an unfinished line: keep it (or refuse it now, before it grows to the end) */
            return reader_append(r, data, seg, why, whylen);
        }
        if (r->len) {
            if ((rc = reader_append(r, data, seg, why, whylen)))
                return rc;
            rc = reader_line(r, r->buf, r->len, fn, arg, why, whylen);
            r->len = 0;
        } else {
            if (seg > r->max) {
                snprintf(r->why, sizeof r->why, "line longer than %zu bytes", r->max);
                return reader_break(r, AOS_ERR_TOO_BIG, why, whylen);
            }
            rc = reader_line(r, data, seg, fn, arg, why, whylen);
        }
        if (rc)
            return rc;
        data += seg + 1;
        n -= seg + 1;
    }
    return AOS_OK;
}

/* ---- the session ---- */

enum { P_CALL, P_SYNC, P_INIT };

typedef struct pending {
    uint64_t id;
    int kind;
    uint64_t deadline; /* now_ms() value, 0: none */
    unsigned timeout_ms;
    char label[80];    /* "tools/call echo", for messages */
    mcp_done_fn done;
    void *arg;
    struct pending *next;
} pending;

struct mcp {
    char *name;
    int to_fd, from_fd;
    int wake[2]; /* self-pipe: a new deadline, a death or mcp_free interrupts the poll */
    size_t line_max;
    mcp_opts o;
    mcp_reader *rd;
    pthread_t thread;
    int started;

    pthread_mutex_t mu; /* everything below but the writer's state */
    pending *head;
    size_t npending;
    uint64_t next_id;
    int opened; /* the handshake is over: callbacks may run */
    int stop;   /* mcp_free is waiting for the reader thread */
    atomic_int dead;
    char dead_why[WHY_CAP];
    unsigned unknown_logged;

    pthread_mutex_t wmu; /* one line at a time on to_fd */

    char *protocol;
    json_t *server_info, *capabilities;
};

static void wake_reader(mcp *m)
{
    char c = 1;
    ssize_t r = write(m->wake[1], &c, 1); /* full pipe: a wake is pending anyway */
    (void)r;
}

/* Marks the session dead (the first reason wins); the reader thread fails the pending
 * requests and calls on_dead. Caller holds m->mu. */
static void kill_locked(mcp *m, const char *why)
{
    if (atomic_load(&m->dead))
        return;
    snprintf(m->dead_why, sizeof m->dead_why, "%s", why);
    atomic_store(&m->dead, 1);
    wake_reader(m);
}

static void kill_session(mcp *m, const char *why)
{
    pthread_mutex_lock(&m->mu);
    kill_locked(m, why);
    pthread_mutex_unlock(&m->mu);
}

/* Writes one whole line (s ends in "\n") with poll on a non-blocking fd, so a server that
 * stops reading its stdin cannot hold us past MCP_WRITE_MS. SIGPIPE is blocked on this
 * thread while writing and a SIGPIPE it raised is taken back, so a server that closed its
 * stdin gives EPIPE here instead of killing aos-tool. */
static aos_err write_line(mcp *m, const char *s, size_t n, char *why, size_t whylen)
{
    aos_err rc = AOS_OK;
    char msg[WHY_CAP];
    msg[0] = 0;
    pthread_mutex_lock(&m->wmu);
    if (atomic_load(&m->dead)) {
        pthread_mutex_unlock(&m->wmu);
        pthread_mutex_lock(&m->mu);
        aos_say(why, whylen, "%s: session dead: %s", m->name, m->dead_why);
        pthread_mutex_unlock(&m->mu);
        return AOS_ERR_UNAVAILABLE;
    }
    sigset_t pipeset, old, pend;
    sigemptyset(&pipeset);
    sigaddset(&pipeset, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipeset, &old);
    sigpending(&pend);
    int was_pending = sigismember(&pend, SIGPIPE);
    uint64_t end = now_ms() + MCP_WRITE_MS;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(m->to_fd, s + off, n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uint64_t t = now_ms();
            if (t >= end) {
                snprintf(msg, sizeof msg, "%s: the server read nothing of its stdin for %u ms",
                         m->name, MCP_WRITE_MS);
                rc = AOS_ERR_TIMEOUT;
                break;
            }
            int stop;
            pthread_mutex_lock(&m->mu);
            stop = m->stop;
            pthread_mutex_unlock(&m->mu);
            if (stop) {
                snprintf(msg, sizeof msg, "%s: session closed during a write", m->name);
                rc = AOS_ERR_UNAVAILABLE;
                break;
            }
            struct pollfd p = {.fd = m->to_fd, .events = POLLOUT};
            uint64_t left = end - t;
            poll(&p, 1, left < 100 ? (int)left : 100); /* 100 ms: notice mcp_free */
            continue;
        }
        snprintf(msg, sizeof msg, "%s: write to the server's stdin: %s", m->name,
                 w < 0 ? strerror(errno) : "nothing written");
        rc = AOS_ERR_IO;
        break;
    }
    if (!was_pending) {
        sigpending(&pend);
        if (sigismember(&pend, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipeset, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_mutex_unlock(&m->wmu);
    if (rc) {
        aos_say(why, whylen, "%s", msg);
        kill_session(m, msg);
    }
    return rc;
}

/* Encodes v (stolen) as one line and writes it. */
static aos_err send_json(mcp *m, json_t *v, char *why, size_t whylen)
{
    if (!v) {
        aos_say(why, whylen, "%s: out of memory", m->name);
        return AOS_ERR_NOMEM;
    }
    /* Compact output escapes every control character in strings, so the text holds no
     * "\n" and is one line, as the stdio transport requires. */
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!s) {
        aos_say(why, whylen, "%s: cannot encode a message", m->name);
        return AOS_ERR_NOMEM;
    }
    size_t n = strlen(s);
    aos_err rc;
    if (n >= m->line_max) {
        aos_say(why, whylen, "%s: a %zu-byte message is longer than the %zu-byte line cap",
               m->name, n, m->line_max);
        rc = AOS_ERR_TOO_BIG;
    } else {
        char *line = realloc(s, n + 2);
        if (!line) {
            aos_say(why, whylen, "%s: out of memory", m->name);
            rc = AOS_ERR_NOMEM;
        } else {
            s = line;
            s[n] = '\n';
            s[n + 1] = 0;
            rc = write_line(m, s, n + 1, why, whylen);
        }
    }
    free(s);
    return rc;
}

static void send_cancelled(mcp *m, uint64_t id, const char *reason)
{
    char why[WHY_CAP];
    json_t *params = json_pack("{s:I}", "requestId", (json_int_t)id);
    if (params && reason)
        json_object_set_new(params, "reason", json_string(reason));
    json_t *n = json_pack("{s:s,s:s,s:o*}", "jsonrpc", "2.0", "method",
                          "notifications/cancelled", "params", params);
    if (send_json(m, n, why, sizeof why) != AOS_OK)
        aos_debug("%s", why);
}

/* Takes the pending request id off the list (NULL: not there). Caller holds m->mu. */
static pending *take_locked(mcp *m, uint64_t id)
{
    for (pending **pp = &m->head; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            pending *p = *pp;
            *pp = p->next;
            m->npending--;
            return p;
        }
    }
    return NULL;
}

static void finish(pending *p, aos_err st, const json_t *result, const char *why)
{
    p->done(p->arg, st, result, why);
    free(p);
}

/* Fails every pending request with st. Runs without m->mu held (done may call back). */
static void fail_all(mcp *m, aos_err st, const char *why)
{
    pthread_mutex_lock(&m->mu);
    pending *p = m->head;
    m->head = NULL;
    m->npending = 0;
    pthread_mutex_unlock(&m->mu);
    while (p) {
        pending *next = p->next;
        char w[WHY_CAP];
        snprintf(w, sizeof w, "%s (%s)", why, p->label);
        finish(p, st, NULL, w);
        p = next;
    }
}

/* Registers a request and writes it: AOS_OK with *id, or an error with why when nothing
 * was sent (then done never runs). */
static aos_err request(mcp *m, int kind, const char *method, const char *label,
                       json_t *params, unsigned timeout_ms, mcp_done_fn done, void *arg,
                       uint64_t *idp, char *why, size_t whylen)
{
    *idp = 0;
    pending *p = calloc(1, sizeof *p);
    if (!p || !params) {
        json_decref(params);
        free(p);
        aos_say(why, whylen, "%s: out of memory", m->name);
        return AOS_ERR_NOMEM;
    }
    p->kind = kind;
    p->done = done;
    p->arg = arg;
    p->timeout_ms = timeout_ms;
    snprintf(p->label, sizeof p->label, "%s", label);
    pthread_mutex_lock(&m->mu);
    aos_err rc = AOS_OK;
    if (atomic_load(&m->dead) || m->stop) {
        aos_say(why, whylen, "%s: session dead: %s", m->name,
               m->dead_why[0] ? m->dead_why : "closed");
        rc = AOS_ERR_UNAVAILABLE;
    } else if (m->npending >= MCP_PENDING_MAX) {
        aos_say(why, whylen, "%s: %u requests already in flight", m->name, MCP_PENDING_MAX);
        rc = AOS_ERR_UNAVAILABLE;
    }
    if (rc) {
        pthread_mutex_unlock(&m->mu);
        json_decref(params);
        free(p);
        return rc;
    }
    p->id = m->next_id++;
    p->deadline = timeout_ms ? now_ms() + timeout_ms : 0;
    p->next = m->head;
    m->head = p;
    m->npending++;
    if (p->deadline)
        wake_reader(m); /* it may be sleeping past this deadline */
    uint64_t id = p->id;
    pthread_mutex_unlock(&m->mu);

    json_t *req = json_pack("{s:s,s:I,s:s,s:o}", "jsonrpc", "2.0", "id", (json_int_t)id,
                            "method", method, "params", params);
    if ((rc = send_json(m, req, why, whylen)) == AOS_OK) {
        *idp = id;
        return AOS_OK;
    }
    /* Nothing (or half a line, which killed the session) went out: take it back unless the
     * reader thread already failed it, in which case done ran and the id stands. */
    pthread_mutex_lock(&m->mu);
    pending *back = take_locked(m, id);
    pthread_mutex_unlock(&m->mu);
    if (!back) {
        *idp = id;
        return AOS_OK;
    }
    free(back);
    return rc;
}

/* A synchronous request: the reader thread's done fills this and signals. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    aos_err st;
    json_t *result;
    char why[WHY_CAP];
} waiter;

static void waiter_done(void *arg, aos_err st, const json_t *result, const char *why)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    w->result = result ? json_incref((json_t *)result) : NULL;
    snprintf(w->why, sizeof w->why, "%s", why ? why : "");
    w->finished = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Sends method and waits; *result is a new reference on AOS_OK. The reader thread's timer
 * ends the wait (TIMEOUT), so does the session's death (UNAVAILABLE). */
static aos_err request_sync(mcp *m, int kind, const char *method, json_t *params,
                            unsigned timeout_ms, json_t **result, char *why, size_t whylen)
{
    waiter w = {.finished = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    *result = NULL;
    uint64_t id;
    aos_err rc = request(m, kind, method, method, params, timeout_ms, waiter_done, &w, &id,
                         why, whylen);
    if (rc)
        goto out;
    pthread_mutex_lock(&w.mu);
    while (!w.finished)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    rc = w.st;
    if (rc)
        aos_say(why, whylen, "%s", w.why);
    else
        *result = w.result;
out:
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

/* ---- the reader thread ---- */

static void answer_request(mcp *m, const mcp_msg *msg)
{
    char why[WHY_CAP];
    json_t *reply;
    if (!strcmp(msg->method, "ping")) {
        reply = json_pack("{s:s,s:O,s:{}}", "jsonrpc", "2.0", "id", msg->id, "result");
    } else {
        /* sampling/createMessage, roots/list, elicitation/create and anything else: we
         * declared no client capabilities, so none of them is ours to serve. */
        char m_show[SHOW_MAX + 1];
        show(m_show, sizeof m_show, msg->method);
        aos_debug("%s: refused the server's request %s", m->name, m_show);
        reply = json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id", msg->id, "error",
                          "code", -32601, "message", "Method not found");
    }
    if (send_json(m, reply, why, sizeof why) != AOS_OK)
        aos_debug("%s", why);
}

/* What a tools/call result must hold before a caller sees it. */
static const char *call_result_bad(const json_t *r)
{
    if (!json_is_object(r))
        return "result is not an object";
    json_t *c = json_object_get(r, "content");
    if (c && !json_is_array(c))
        return "result content is not an array";
    json_t *e = json_object_get(r, "isError");
    if (e && !json_is_boolean(e))
        return "result isError is not a boolean";
    json_t *s = json_object_get(r, "structuredContent");
    if (s && !json_is_object(s))
        return "result structuredContent is not an object";
    return NULL;
}

static void answer_pending(mcp *m, const mcp_msg *msg)
{
    json_int_t iid = json_is_integer(msg->id) ? json_integer_value(msg->id) : -1;
    pending *p = NULL;
    pthread_mutex_lock(&m->mu);
    if (iid > 0)
        p = take_locked(m, (uint64_t)iid);
    int sent = iid > 0 && (uint64_t)iid < m->next_id;
    int log = !p && m->unknown_logged < UNKNOWN_LOG_MAX;
    if (log)
        m->unknown_logged++;
    pthread_mutex_unlock(&m->mu);
    if (!p) {
        /* A reply to a cancelled or timed-out call, a duplicate, or an id we never sent:
         * none of them can be matched, and none is worth the session. */
        if (log && (json_is_null(msg->id) && msg->kind == MCP_MSG_ERROR)) {
            char s[SHOW_MAX + 1];
            show(s, sizeof s, msg->err_message);
            aos_warn("%s: error %lld for a request it could not read: %s", m->name,
                     msg->err_code, s);
        } else if (log) {
            if (!json_is_integer(msg->id))
                aos_warn("%s: ignored a reply to an id that is not an integer (ours are)",
                         m->name);
            else
                aos_log(sent ? AOS_LOG_DEBUG : AOS_LOG_WARN,
                        "%s: ignored a reply to %s id %lld", m->name,
                        sent ? "a finished (cancelled, timed out or answered)" : "an unknown",
                        (long long)json_integer_value(msg->id));
        }
        return;
    }
    char why[WHY_CAP];
    if (msg->kind == MCP_MSG_ERROR) {
        char s[SHOW_MAX + 1];
        show(s, sizeof s, msg->err_message);
        snprintf(why, sizeof why, "%s: %s: error %lld: %s", m->name, p->label, msg->err_code,
                 s);
        finish(p, msg->err_code == -32602 ? AOS_ERR_USAGE : AOS_ERR_INTERNAL, NULL, why);
        return;
    }
    const char *bad = p->kind == P_CALL ? call_result_bad(msg->result)
                      : json_is_object(msg->result) ? NULL
                                                    : "result is not an object";
    if (bad) {
        snprintf(why, sizeof why, "%s: %s: %s", m->name, p->label, bad);
        finish(p, AOS_ERR_PROTO, NULL, why);
        return;
    }
    finish(p, AOS_OK, msg->result, "");
}

static aos_err on_message(void *arg, const mcp_msg *msg, char *why, size_t whylen)
{
    mcp *m = arg;
    switch (msg->kind) {
    case MCP_MSG_RESPONSE:
    case MCP_MSG_ERROR:
        answer_pending(m, msg);
        break;
    case MCP_MSG_REQUEST:
        answer_request(m, msg);
        break;
    case MCP_MSG_NOTIFICATION:
        if (!strcmp(msg->method, "notifications/tools/list_changed")) {
            pthread_mutex_lock(&m->mu);
            int opened = m->opened;
            pthread_mutex_unlock(&m->mu);
            if (opened && m->o.on_list_changed)
                m->o.on_list_changed(m->o.arg);
        }
        /* notifications/message (logs), progress, cancelled (for a request of the server's,
         * which we answer at once anyway) and the rest need nothing from us. */
        break;
    }
    return AOS_OK;
}

/* Fires every expired deadline; returns the poll timeout to the next one (-1: none). */
static int expire(mcp *m)
{
    uint64_t t = now_ms();
    pending *due = NULL;
    uint64_t next = 0;
    pthread_mutex_lock(&m->mu);
    for (pending **pp = &m->head; *pp;) {
        pending *p = *pp;
        if (p->deadline && p->deadline <= t) {
            *pp = p->next;
            m->npending--;
            p->next = due;
            due = p;
            continue;
        }
        if (p->deadline && (!next || p->deadline < next))
            next = p->deadline;
        pp = &p->next;
    }
    pthread_mutex_unlock(&m->mu);
    while (due) {
        pending *next_due = due->next;
        char why[WHY_CAP];
        snprintf(why, sizeof why, "%s: %s: no answer within %u ms", m->name, due->label,
                 due->timeout_ms);
        /* the spec forbids cancelling initialize; anything else is told we gave up */
        if (due->kind != P_INIT)
            send_cancelled(m, due->id, "timed out");
        finish(due, AOS_ERR_TIMEOUT, NULL, why);
        due = next_due;
    }
    if (!next)
        return -1;
    t = now_ms();
    return next <= t ? 0 : next - t > 60000 ? 60000 : (int)(next - t);
}

static void *reader_main(void *arg)
{
    mcp *m = arg;
    char *buf = malloc(READ_CHUNK);
    if (!buf)
        kill_session(m, "no memory for the reader");
    for (;;) {
        int timeout = expire(m);
        pthread_mutex_lock(&m->mu);
        int stop = m->stop, dead = atomic_load(&m->dead), opened = m->opened;
        char why[WHY_CAP];
        snprintf(why, sizeof why, "%s", m->dead_why);
        pthread_mutex_unlock(&m->mu);
        if (stop)
            break;
        if (dead) {
            aos_warn("%s: session dead: %s", m->name, why);
            fail_all(m, AOS_ERR_UNAVAILABLE, why);
            if (opened && m->o.on_dead)
                m->o.on_dead(m->o.arg, why);
            break;
        }
        struct pollfd p[2] = {{.fd = m->from_fd, .events = POLLIN},
                              {.fd = m->wake[0], .events = POLLIN}};
        int n = poll(p, 2, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            snprintf(why, sizeof why, "%s: poll: %s", m->name, strerror(errno));
            kill_session(m, why);
            continue;
        }
        if (p[1].revents) {
            char drain[64];
            while (read(m->wake[0], drain, sizeof drain) > 0)
                ;
        }
        if (!p[0].revents)
            continue;
        ssize_t r = read(m->from_fd, buf, READ_CHUNK);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (r <= 0) {
            snprintf(why, sizeof why, "%s: %s", m->name,
                     r == 0 ? "the server closed its stdout" : strerror(errno));
            if (r == 0 && mcp_reader_pending(m->rd))
                snprintf(why, sizeof why, "%s: the server closed its stdout in a line",
                         m->name);
            kill_session(m, why);
            continue;
        }
        /* stdout carries MCP messages only (the stdio transport says so; logs belong on
         * stderr), so a line that does not decode means a broken or foreign server: the
         * session is not trusted past it. */
        char fwhy[WHY_CAP - 64];
        if (mcp_reader_feed(m->rd, buf, (size_t)r, on_message, m, fwhy, sizeof fwhy)) {
            snprintf(why, sizeof why, "%s: %s", m->name, fwhy);
            kill_session(m, why);
        }
    }
    free(buf);
    return NULL;
}

/* ---- open, calls, free ---- */

static int protocol_ok(const char *v)
{
    for (size_t i = 0; v && i < NPROTOCOLS; i++)
        if (!strcmp(v, protocols[i]))
            return 1;
    return 0;
}

static aos_err handshake(mcp *m, char *why, size_t whylen)
{
    unsigned ms = m->o.init_timeout_ms ? m->o.init_timeout_ms : MCP_INIT_TIMEOUT_DEFAULT;
    json_t *params = json_pack("{s:s,s:{},s:{s:s,s:s}}", "protocolVersion", protocols[0],
                               "capabilities", "clientInfo", "name", "aos-tool", "version",
                               AOS_VERSION);
    json_t *res = NULL;
    aos_err rc = request_sync(m, P_INIT, "initialize", params, ms, &res, why, whylen);
    if (rc)
        return rc;
    const char *ver = json_string_value(json_object_get(res, "protocolVersion"));
    json_t *info = json_object_get(res, "serverInfo");
    json_t *caps = json_object_get(res, "capabilities");
    char s[SHOW_MAX + 1];
    if (!protocol_ok(ver)) {
        show(s, sizeof s, ver ? ver : "(none)");
        aos_say(why, whylen,
               "%s: the server speaks MCP protocol version '%s'; aos-tool speaks %s, %s and %s",
               m->name, s, protocols[0], protocols[1], protocols[2]);
        rc = AOS_ERR_PROTO;
    } else if (!json_is_object(info) || !json_is_string(json_object_get(info, "name"))) {
        aos_say(why, whylen, "%s: initialize result without serverInfo {name}", m->name);
        rc = AOS_ERR_PROTO;
    } else if (!json_is_object(caps)) {
        aos_say(why, whylen, "%s: initialize result without a capabilities object", m->name);
        rc = AOS_ERR_PROTO;
    } else if (!(m->protocol = strdup(ver))) {
        aos_say(why, whylen, "%s: out of memory", m->name);
        rc = AOS_ERR_NOMEM;
    } else {
        m->server_info = json_incref(info);
        m->capabilities = json_incref(caps);
        json_t *n = json_pack("{s:s,s:s}", "jsonrpc", "2.0", "method",
                              "notifications/initialized");
        rc = send_json(m, n, why, whylen);
        if (rc && atomic_load(&m->dead))
            rc = AOS_ERR_UNAVAILABLE;
    }
    json_decref(res);
    return rc;
}

aos_err mcp_open(const mcp_opts *o, mcp **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!o || o->to_fd < 0 || o->from_fd < 0) {
        if (o && o->to_fd >= 0)
            close(o->to_fd);
        if (o && o->from_fd >= 0 && o->from_fd != o->to_fd)
            close(o->from_fd);
        aos_say(why, whylen, "mcp_open: no fds");
        return AOS_ERR_USAGE;
    }
    mcp *m = calloc(1, sizeof *m);
    if (!m) {
        close(o->to_fd);
        if (o->from_fd != o->to_fd)
            close(o->from_fd);
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    m->o = *o;
    m->to_fd = o->to_fd;
    m->from_fd = o->from_fd;
    m->wake[0] = m->wake[1] = -1;
    m->next_id = 1;
    m->line_max = o->line_max ? o->line_max : MCP_LINE_MAX_DEFAULT;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->wmu, NULL);
    aos_err rc = AOS_ERR_NOMEM;
    m->name = strdup(o->name && *o->name ? o->name : "mcp");
    m->rd = mcp_reader_new(m->line_max);
    if (!m->name || !m->rd) {
        aos_say(why, whylen, "out of memory");
        goto fail;
    }
    if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        aos_say(why, whylen, "%s: pipe: %s", m->name, strerror(errno));
        rc = AOS_ERR_IO;
        goto fail;
    }
    /* Non-blocking both ways: the reader never sticks in read(2) past a poll, a writer
     * never past MCP_WRITE_MS. */
    fcntl(m->to_fd, F_SETFL, fcntl(m->to_fd, F_GETFL) | O_NONBLOCK);
    fcntl(m->from_fd, F_SETFL, fcntl(m->from_fd, F_GETFL) | O_NONBLOCK);
    int e = pthread_create(&m->thread, NULL, reader_main, m);
    if (e) {
        aos_say(why, whylen, "%s: pthread_create: %s", m->name, strerror(e));
        rc = AOS_ERR_NOMEM;
        goto fail;
    }
    m->started = 1;
    if ((rc = handshake(m, why, whylen)))
        goto fail;
    pthread_mutex_lock(&m->mu);
    int dead = atomic_load(&m->dead);
    if (!dead)
        m->opened = 1;
    else
        aos_say(why, whylen, "%s", m->dead_why);
    pthread_mutex_unlock(&m->mu);
    if (dead) {
        rc = AOS_ERR_UNAVAILABLE;
        goto fail;
    }
    *out = m;
    return AOS_OK;
fail:
    mcp_free(m);
    return rc;
}

const char *mcp_protocol(const mcp *m) { return m->protocol; }
const json_t *mcp_server_info(const mcp *m) { return m->server_info; }
const json_t *mcp_server_capabilities(const mcp *m) { return m->capabilities; }
int mcp_dead(const mcp *m) { return atomic_load(&((mcp *)m)->dead); }
const char *mcp_dead_why(const mcp *m) { return atomic_load(&((mcp *)m)->dead) ? m->dead_why : ""; }

static aos_err check_tool(const json_t *t, size_t i, json_t *seen, char *why, size_t whylen)
{
    const char *name = json_string_value(json_object_get(t, "name"));
    json_t *d = json_object_get(t, "description");
    json_t *out = json_object_get(t, "outputSchema");
    if (!json_is_object(t) || !name || !*name) {
        aos_say(why, whylen, "tool %zu has no name", i);
        return AOS_ERR_PROTO;
    }
    char s[SHOW_MAX + 1];
    show(s, sizeof s, name);
    if (!json_is_object(json_object_get(t, "inputSchema"))) {
        aos_say(why, whylen, "tool '%s': inputSchema is not an object", s);
        return AOS_ERR_PROTO;
    }
    if ((d && !json_is_string(d)) || (out && !json_is_object(out))) {
        aos_say(why, whylen, "tool '%s': description not a string or outputSchema not an object",
               s);
        return AOS_ERR_PROTO;
    }
    if (json_object_get(seen, name)) {
        aos_say(why, whylen, "tool '%s' is listed twice", s);
        return AOS_ERR_PROTO;
    }
    if (json_object_set_new(seen, name, json_true())) {
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    return AOS_OK;
}

aos_err mcp_list_tools(mcp *m, unsigned timeout_ms, json_t **tools, char *why, size_t whylen)
{
    *tools = NULL;
    uint64_t end = now_ms() + (timeout_ms ? timeout_ms : LIST_DEFAULT_MS);
    json_t *all = json_array(), *seen = json_object(), *res = NULL;
    char *cursor = NULL;
    char w[WHY_CAP];
    aos_err rc = AOS_ERR_NOMEM;
    if (!all || !seen) {
        aos_say(why, whylen, "out of memory");
        goto out;
    }
    for (unsigned page = 0;; page++) {
        if (page == MCP_PAGES_MAX) {
            aos_say(why, whylen, "%s: tools/list: more than %u pages", m->name, MCP_PAGES_MAX);
            rc = AOS_ERR_TOO_BIG;
            goto out;
        }
        uint64_t t = now_ms();
        if (t >= end) {
            aos_say(why, whylen, "%s: tools/list: out of time after %u pages", m->name, page);
            rc = AOS_ERR_TIMEOUT;
            goto out;
        }
        json_t *params = cursor ? json_pack("{s:s}", "cursor", cursor) : json_object();
        json_decref(res);
        res = NULL;
        if ((rc = request_sync(m, P_SYNC, "tools/list", params, (unsigned)(end - t), &res,
                               why, whylen)))
            goto out;
        json_t *list = json_object_get(res, "tools");
        json_t *next = json_object_get(res, "nextCursor");
        if (!json_is_array(list) || (next && !json_is_null(next) && !json_is_string(next))) {
            aos_say(why, whylen, "%s: tools/list page %u: no tools array or a bad nextCursor",
                   m->name, page + 1);
            rc = AOS_ERR_PROTO;
            goto out;
        }
        size_t i;
        json_t *tool;
        json_array_foreach(list, i, tool) {
            if (json_array_size(all) >= MCP_TOOLS_MAX) {
                aos_say(why, whylen, "%s: tools/list: more than %u tools", m->name,
                       MCP_TOOLS_MAX);
                rc = AOS_ERR_TOO_BIG;
                goto out;
            }
            if ((rc = check_tool(tool, json_array_size(all), seen, w, sizeof w))) {
                aos_say(why, whylen, "%s: tools/list: %s", m->name, w);
                goto out;
            }
            if (json_array_append(all, tool)) {
                aos_say(why, whylen, "out of memory");
                rc = AOS_ERR_NOMEM;
                goto out;
            }
        }
        free(cursor);
        cursor = NULL;
        if (!json_is_string(next))
            break;
        /* the cursor is opaque: sent back as it came, whatever it holds */
        if (!(cursor = strdup(json_string_value(next)))) {
            aos_say(why, whylen, "out of memory");
            rc = AOS_ERR_NOMEM;
            goto out;
        }
    }
    *tools = all;
    all = NULL;
    rc = AOS_OK;
out:
    free(cursor);
    json_decref(res);
    json_decref(seen);
    json_decref(all);
    return rc;
}

uint64_t mcp_call(mcp *m, const char *tool, const json_t *args, unsigned timeout_ms,
                  mcp_done_fn done, void *arg, char *why, size_t whylen)
{
    if (!tool || !*tool || !done || (args && !json_is_object(args))) {
        aos_say(why, whylen, "mcp_call: a tool name, an object of arguments and done are needed");
        return 0;
    }
    json_t *a = args ? json_deep_copy(args) : json_object();
    json_t *params = a ? json_pack("{s:s,s:o}", "name", tool, "arguments", a) : NULL;
    char label[80];
    char s[48];
    show(s, sizeof s, tool);
    snprintf(label, sizeof label, "tools/call %s", s);
    if (!params) {
        aos_say(why, whylen, "%s: out of memory (or a tool name that is not UTF-8)", m->name);
        return 0;
    }
    uint64_t id;
    if (request(m, P_CALL, "tools/call", label, params, timeout_ms, done, arg, &id, why,
                whylen))
        return 0;
    return id;
}

void mcp_cancel(mcp *m, uint64_t id, const char *reason)
{
    pthread_mutex_lock(&m->mu);
    pending *p = take_locked(m, id);
    if (p && p->kind != P_CALL) {
        /* only mcp_call's ids are the caller's to cancel: put it back */
        p->next = m->head;
        m->head = p;
        m->npending++;
        p = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    if (!p)
        return;
    char why[WHY_CAP], r[SHOW_MAX + 1];
    show(r, sizeof r, reason ? reason : "cancelled");
    snprintf(why, sizeof why, "%s: %s: cancelled: %s", m->name, p->label, r);
    finish(p, AOS_ERR_CANCELLED, NULL, why);
    send_cancelled(m, id, reason);
}

void mcp_free(mcp *m)
{
    if (!m)
        return;
    if (m->started) {
        pthread_mutex_lock(&m->mu);
        m->stop = 1;
        wake_reader(m);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    fail_all(m, AOS_ERR_UNAVAILABLE, "session closed");
    if (m->to_fd >= 0)
        close(m->to_fd);
    if (m->from_fd >= 0 && m->from_fd != m->to_fd)
        close(m->from_fd);
    for (int i = 0; i < 2; i++)
        if (m->wake[i] >= 0)
            close(m->wake[i]);
    mcp_reader_free(m->rd);
    json_decref(m->server_info);
    json_decref(m->capabilities);
    free(m->protocol);
    free(m->name);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->wmu);
    free(m);
}
