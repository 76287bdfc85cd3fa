/* The MCP servers of aos.yaml as tool providers: one manager thread starts each in the
 * sandbox, drains its stderr, notices its death, and turns tools/call results into runs'. */
#include "msrv.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aos/envelope.h"
#include "aos/log.h"
#include "mcp.h"
#include "monotime.h"

#define SV_MAX 16
#define SV_ARGV_MAX 72
#define SV_ENV_MAX 32
#define SV_START_MS 15000u          /* spawn to an answered initialize and tools/list */
#define SV_CALL_MS 30000u           /* a call's limit when aos.yaml gives none */
#define SV_MEMORY_MB 2048u          /* the cgroup's bound; no RLIMIT_AS: node reserves
                                     * far more address space than it uses */
#define SV_PROCESSES 128u
#define SV_RESULT_MAX (1u << 20)    /* a result's JSON, for the model */
#define SV_STDERR_LINES 200         /* stderr lines logged per incarnation */

typedef struct sv {
    const Aos__Tool__McpServer *c;
    char name[40];
    /* c's strings as C strings (protobuf bytes carry no NUL): argv, env, bound paths */
    char *argv[SV_ARGV_MAX + 2];
    char *env[SV_ENV_MAX + 1];
    char *ro[JAIL_RO_MAX + 1];
    char *ro_src[JAIL_RO_MAX + 1];  /* where ro[i] is bound from: a mount point in aos-tool's
                                     * own directory (NULL: ro[i] itself) */
    pthread_mutex_t mu;             /* s and p: a cancel on another thread reaches s */
    mcp *s;
    jail_proc p;
    int up;
    atomic_int dead, list_changed;
    /* the catalogue part, under msrv.mu */
    desc **tools;
    char **remote;                  /* the server's own names, same order */
    size_t ntools;
    char why[320];                  /* why it is not up */
    char errbuf[512];               /* a partial stderr line */
    size_t errlen;
    unsigned errlines;
    unsigned starts, deaths;
} sv;

typedef struct job {
    srv_call *call;
    sv *s;
    char remote[256], name[128];
    json_t *args;
    unsigned time_ms;
    uint64_t start_us;
    pthread_mutex_t mu;
    uint64_t id;                    /* the MCP request, 0 before it was sent */
    int answered, refs;
    int cancel_asked;               /* the caller went away before the request was sent */
    struct job *next;
} job;

struct msrv {
    jail *jl;
    sv svs[SV_MAX];
    size_t n;
    pthread_rwlock_t mu;            /* the servers' tool lists */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    job *q, *qtail;
    int start_all;                  /* a lister waits for every server to be up */
    uint64_t start_gen, done_gen;   /* lister's request and the manager's progress */
    int stop;
    int efd;
    pthread_t thread;
    int started;
    atomic_ullong calls;
};

static void wake(msrv *m)
{
    uint64_t one = 1;
    ssize_t w = write(m->efd, &one, sizeof one);
    (void)w;
}

static void job_unref(job *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last) {
        json_decref(j->args);
        pthread_mutex_destroy(&j->mu);
        free(j);
    }
}

/* ---- descriptors for a server's tools ------------------------------------------------- */

/* JSON Schema keywords aos-tool's validator knows; the rest are dropped from an MCP tool's
 * schema (which loosens aos-tool's own check only: the MCP server checks its arguments). */
static const char *const known[] = {
    "type", "properties", "required", "enum", "const", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "items",
    "minItems", "maxItems", "additionalProperties", "title", "description", "default", NULL};

static json_t *sanitize(const json_t *s, int depth, int drop_patterns)
{
    if (depth > 24 || !json_is_object(s))
        return json_is_boolean(s) ? json_incref((json_t *)s) : json_object();
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        int ok = 0;
        for (size_t i = 0; known[i]; i++)
            ok |= !strcmp(k, known[i]);
        if (!ok || (drop_patterns && !strcmp(k, "pattern")))
            continue;
        if (!strcmp(k, "exclusiveMinimum") || !strcmp(k, "exclusiveMaximum")) {
            if (!json_is_number(v))
                continue; /* draft 4's booleans */
        }
        if (!strcmp(k, "properties") && json_is_object(v)) {
            json_t *p = json_object();
            const char *pk;
            json_t *pv;
            json_object_foreach(v, pk, pv)
                json_object_set_new(p, pk, sanitize(pv, depth + 1, drop_patterns));
            json_object_set_new(o, k, p);
        } else if ((!strcmp(k, "items") || !strcmp(k, "additionalProperties")) &&
                   json_is_object(v)) {
            json_object_set_new(o, k, sanitize(v, depth + 1, drop_patterns));
        } else if (!strcmp(k, "items") && !json_is_object(v) && !json_is_boolean(v)) {
            continue; /* tuple form */
        } else {
            json_object_set(o, k, v);
        }
    }
    return o;
}

/* "mcp.<server>.<tool>" with the tool's name folded to aos's charset. */
static int local_name(const char *server, const char *remote, char *out, size_t cap)
{
    int n = snprintf(out, cap, "mcp.%s.", server);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    size_t o = (size_t)n;
    /* at most 62: each of the two dots becomes "__" in the models' formats (64 there) */
    for (const char *p = remote; *p && o + 1 < cap && o < 62; p++) {
        char ch = *p;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                   ch == '-'))
            ch = '_';
        out[o++] = ch;
    }
    out[o] = 0;
    return remote[0] ? 0 : -1;
}

static desc *make_desc(sv *s, const json_t *t, char *why, size_t whylen)
{
    const char *remote = json_string_value(json_object_get(t, "name"));
    const char *d = json_string_value(json_object_get(t, "description"));
    char name[72], summary[201];
    if (!remote || local_name(s->name, remote, name, sizeof name)) {
        snprintf(why, whylen, "a tool without a usable name");
        return NULL;
    }
    /* one line of at most 200 bytes, cut on a character boundary */
    size_t k = 0;
    for (const char *p = d ? d : remote; *p && *p != '\n' && k < 200; p++)
        summary[k++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    while (k && ((unsigned char)summary[k - 1] & 0xc0) == 0x80)
        k--;
    if (k && (unsigned char)summary[k - 1] >= 0xc0)
        k--;
    summary[k] = 0;
    if (!k)
        snprintf(summary, sizeof summary, "%s", name);
    desc *out = NULL;
    for (int attempt = 0; attempt < 3 && !out; attempt++) {
        json_t *args = attempt < 2 ? sanitize(json_object_get(t, "inputSchema"), 0, attempt)
                                   : json_pack("{s:s}", "type", "object");
        json_object_set_new(args, "type", json_string("object"));
        json_t *doc = json_pack("{s:s, s:s, s:o, s:b, s:{s:I}}", "name", name, "summary",
                                summary, "args", args, "builtin", 1, "limits", "time_ms",
                                (json_int_t)(s->c->time_ms ? s->c->time_ms : SV_CALL_MS));
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (text)
            desc_parse(s->name, text, strlen(text), &out, why, whylen);
        free(text);
    }
    return out;
}

static void free_tools(sv *s)
{
    for (size_t i = 0; i < s->ntools; i++) {
        desc_free(s->tools[i]);
        free(s->remote[i]);
    }
    free(s->tools);
    free(s->remote);
    s->tools = NULL;
    s->remote = NULL;
    s->ntools = 0;
}

/* tools/list into the catalogue (on the manager thread). */
static void refresh_tools(msrv *m, sv *s)
{
    json_t *list = NULL;
    char why[256];
    pthread_mutex_lock(&s->mu);
    aos_err e = s->s ? mcp_list_tools(s->s, SV_START_MS, &list, why, sizeof why)
                     : AOS_ERR_UNAVAILABLE;
    pthread_mutex_unlock(&s->mu);
    if (e) {
        aos_warn("tool: mcp server %s: tools/list: %s", s->name, why);
        return;
    }
    size_t n = json_array_size(list);
    desc **d = calloc(n ? n : 1, sizeof *d);
    char **r = calloc(n ? n : 1, sizeof *r);
    size_t k = 0;
    for (size_t i = 0; d && r && i < n; i++) {
        const json_t *t = json_array_get(list, i);
        desc *one = make_desc(s, t, why, sizeof why);
        if (!one) {
            aos_warn("tool: mcp server %s: a tool left out: %s", s->name, why);
            continue;
        }
        int dup = 0;
        for (size_t j = 0; j < k; j++)
            dup |= !strcmp(desc_name(d[j]), desc_name(one));
        if (dup) {
            aos_warn("tool: mcp server %s: %s twice once folded; the second left out",
                     s->name, desc_name(one));
            desc_free(one);
            continue;
        }
        d[k] = one;
        r[k] = strdup(json_string_value(json_object_get(t, "name")));
        k++;
    }
    json_decref(list);
    pthread_rwlock_wrlock(&m->mu);
    free_tools(s);
    s->tools = d;
    s->remote = r;
    s->ntools = k;
    pthread_rwlock_unlock(&m->mu);
}

/* ---- one server's life ---------------------------------------------------------------- */

static void on_dead(void *arg, const char *why)
{
    sv *s = arg;
    aos_warn("tool: mcp server %s: the session died: %s", s->name, why);
    atomic_store(&s->dead, 1);
}

static void on_list_changed(void *arg)
{
    sv *s = arg;
    atomic_store(&s->list_changed, 1);
}

static void stop_server(msrv *m, sv *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    mcp *old = s->s;
    s->s = NULL;
    int was_up = s->up;
    s->up = 0;
    pthread_mutex_unlock(&s->mu);
    mcp_free(old); /* fails its pending calls: their callers get UNAVAILABLE */
    if (s->p.pid > 0) {
        jail_kill(m->jl, &s->p);
        uint64_t peak;
        jail_reap(m->jl, &s->p, &peak);
        jail_release(m->jl, &s->p);
        if (s->p.err_fd >= 0)
            close(s->p.err_fd);
        s->p.err_fd = -1;
        s->p.pid = -1;
    }
    if (was_up) {
        s->deaths++;
        snprintf(s->why, sizeof s->why, "%s: restarted on next use", why);
    }
    atomic_store(&s->dead, 0);
}

static void start_server(msrv *m, sv *s)
{
    if (s->up)
        return;
    jail_spec sp = {.argv = s->argv, .env = (const char *const *)s->env,
                    .ro_paths = (const char *const *)s->ro,
                    .ro_srcs = (const char *const *)s->ro_src,
                    .network = s->c->network,
                    .memory_mb = SV_MEMORY_MB, .processes = SV_PROCESSES, .no_as_limit = 1,
                    .cpu_s = 1000000, .want_stdin = 1};
    char why[256];
    aos_err e = jail_spawn(m->jl, &sp, &s->p, why, sizeof why);
    if (e) {
        snprintf(s->why, sizeof s->why, "starting it in the sandbox: %s", why);
        return;
    }
    s->starts++;
    s->errlen = 0;
    s->errlines = 0;
    /* the session owns stdin and stdout; stderr stays ours, drained by the loop */
    int to = s->p.in_fd, from = s->p.out_fd;
    s->p.in_fd = s->p.out_fd = -1;
    fcntl(to, F_SETFL, fcntl(to, F_GETFL) & ~O_NONBLOCK);
    fcntl(from, F_SETFL, fcntl(from, F_GETFL) & ~O_NONBLOCK);
    mcp_opts o = {.name = s->name, .to_fd = to, .from_fd = from,
                  .init_timeout_ms = SV_START_MS, .on_dead = on_dead,
                  .on_list_changed = on_list_changed, .arg = s};
    mcp *ses = NULL;
    if ((e = mcp_open(&o, &ses, why, sizeof why))) {
        /* what it (or bubblewrap) said on stderr is the likeliest reason: kept with ours */
        char err[160] = "";
        struct pollfd q = {s->p.err_fd, POLLIN, 0};
        if (s->p.err_fd >= 0 && poll(&q, 1, 200) > 0) {
            ssize_t r = read(s->p.err_fd, err, sizeof err - 1);
            err[r > 0 ? r : 0] = 0;
            for (char *c = err; *c; c++)
                if ((unsigned char)*c < 0x20)
                    *c = ' ';
        }
        stop_server(m, s, "initialize failed"); /* never up: counts no death */
        snprintf(s->why, sizeof s->why, "initialize: %.130s%s%.130s", why,
                 err[0] ? "; its stderr: " : "", err);
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->s = ses;
    s->up = 1;
    pthread_mutex_unlock(&s->mu);
    s->why[0] = 0;
    aos_info("tool: mcp server %s up (pid %d, protocol %s)", s->name, (int)s->p.pid,
             mcp_protocol(ses));
    refresh_tools(m, s);
}

/* stderr: logged line by line, at most SV_STDERR_LINES per incarnation. */
static void drain_stderr(sv *s)
{
    char buf[4096];
    for (;;) {
        ssize_t r = read(s->p.err_fd, buf, sizeof buf);
        if (r <= 0)
            return;
        for (ssize_t i = 0; i < r; i++) {
            char ch = buf[i];
            if (ch == '\n' || s->errlen == sizeof s->errbuf - 1) {
                s->errbuf[s->errlen] = 0;
                if (s->errlines++ < SV_STDERR_LINES)
                    aos_info("tool: mcp %s: %s", s->name, s->errbuf);
                s->errlen = 0;
            } else {
                s->errbuf[s->errlen++] = (unsigned char)ch < 0x20 ? '?' : ch;
            }
        }
    }
}

/* ---- calls ---------------------------------------------------------------------------- */

static void answer(job *j, aos_err status, const json_t *result, const char *why)
{
    pthread_mutex_lock(&j->mu);
    if (j->answered) {
        pthread_mutex_unlock(&j->mu);
        return;
    }
    j->answered = 1;
    pthread_mutex_unlock(&j->mu);
    if (status == AOS_ERR_CANCELLED || status == AOS_ERR_UNAVAILABLE || !result) {
        srv_call_done(j->call, status ? status : AOS_ERR_INTERNAL,
                      why && why[0] ? why : aos_strerror(status), NULL, 0);
        return;
    }
    Aos__Tool__RunReply rep = AOS__TOOL__RUN_REPLY__INIT;
    json_t *res = json_object();
    int is_error = json_is_true(json_object_get(result, "isError"));
    char etext[400] = "";
    aos_err err = status;
    if (status)
        snprintf(etext, sizeof etext, "%s", why ? why : aos_strerror(status));
    /* the text contents, joined, as the run's stdout */
    size_t tl = 0;
    char *text = NULL;
    const json_t *content = json_object_get(result, "content");
    for (size_t i = 0; json_is_array(content) && i < json_array_size(content); i++) {
        const json_t *c = json_array_get(content, i);
        const char *t = json_string_value(json_object_get(c, "text"));
        if (!t)
            continue;
        size_t l = strlen(t);
        if (tl + l + 1 > SV_RESULT_MAX)
            break;
        char *nt = realloc(text, tl + l + 2);
        if (!nt)
            break;
        text = nt;
        memcpy(text + tl, t, l);
        tl += l;
        text[tl++] = '\n';
        text[tl] = 0;
    }
    rep.exit_status = status ? -1 : is_error;
    rep.error = (uint32_t)err;
    rep.duration_us = mt_now_us() - j->start_us;
    rep.stdout_data.data = (uint8_t *)text;
    rep.stdout_data.len = tl;
    rep.stdout_bytes = tl;
    rep.timed_out = status == AOS_ERR_TIMEOUT;
    json_object_set_new(res, "tool", json_string(j->name));
    json_object_set_new(res, "exit_status", json_integer(rep.exit_status));
    json_object_set_new(res, "error", json_string(err ? aos_err_name(err) : "ok"));
    if (etext[0])
        json_object_set_new(res, "error_text", json_string(etext));
    json_object_set_new(res, "duration_ms", json_integer((json_int_t)(rep.duration_us / 1000)));
    json_object_set_new(res, "peak_rss_kb", json_integer(0));
    json_object_set_new(res, "is_error", json_boolean(is_error));
    if (json_is_array(content))
        json_object_set(res, "content", (json_t *)content);
    const json_t *sc = json_object_get(result, "structuredContent");
    if (sc)
        json_object_set(res, "output", (json_t *)sc);
    json_object_set_new(res, "stderr", json_string(""));
    json_object_set_new(res, "stdout_truncated", json_false());
    json_object_set_new(res, "stderr_truncated", json_false());
    json_object_set_new(res, "timed_out", json_boolean(rep.timed_out));
    char *js = json_dumps(res, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(res);
    /* the audit log's detail: which server and tool, how it ended, the result by hash,
     * and the result itself as a content (up to the 1 MiB content cap: the result's own) */
    char hex[65];
    srv_contents *cs = srv_contents_new();
    int kept = srv_contents_add(cs, js ? js : "", js ? strlen(js) : 0, hex);
    json_t *tr = json_pack("{s:s, s:s, s:s, s:b, s:s, s:I, s:s}", "tool", j->name, "server",
                           j->s->name, "remote", j->remote, "is_error", is_error, "error",
                           err ? aos_err_name(err) : "ok", "duration_us",
                           (json_int_t)rep.duration_us, "result_blake2b", hex);
    if (tr && kept)
        json_object_set_new(tr, "contents", json_pack("[s]", hex));
    char *tb = tr ? json_dumps(tr, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(tr);
    if (tb)
        srv_emit_with(srv_call_srv(j->call), j->call, "tool.mcp", err, tb, cs);
    free(tb);
    srv_contents_free(cs);
    if (js && strlen(js) > SV_RESULT_MAX) {
        free(js);
        free(text);
        srv_call_done(j->call, AOS_ERR_TOO_BIG, "the MCP server's result is over 1 MiB",
                      NULL, 0);
        return;
    }
    rep.result_json.data = (uint8_t *)js;
    rep.result_json.len = js ? strlen(js) : 0;
    size_t n = aos__tool__run_reply__get_packed_size(&rep);
    uint8_t *buf = js ? malloc(n ? n : 1) : NULL;
    if (!buf) {
        srv_call_done(j->call, AOS_ERR_NOMEM, "building the result", NULL, 0);
    } else {
        aos__tool__run_reply__pack(&rep, buf);
        srv_call_done(j->call, AOS_OK, NULL, buf, n);
    }
    free(buf);
    free(js);
    free(text);
}

/* From the session's reader thread (or the caller's, via cancel or free). */
static void call_done(void *arg, aos_err status, const json_t *result, const char *why)
{
    job *j = arg;
    /* a JSON-RPC error or a timeout is the tool's result, like a sandbox run's; a dead
     * session or a cancel is the call's */
    if (status && status != AOS_ERR_CANCELLED && status != AOS_ERR_UNAVAILABLE) {
        json_t *empty = json_object();
        answer(j, status, empty, why);
        json_decref(empty);
    } else {
        answer(j, status, result, why);
    }
    job_unref(j);
}

/* On a receive thread. s->mu keeps the session from being freed under us (the manager
 * clears s->s under it before mcp_free); the session's own call_done answers. */
static void on_cancel(srv_call *c, void *arg)
{
    (void)c;
    job *j = arg;
    pthread_mutex_lock(&j->s->mu);
    pthread_mutex_lock(&j->mu);
    uint64_t id = j->answered ? 0 : j->id;
    if (!j->id)
        j->cancel_asked = 1;
    pthread_mutex_unlock(&j->mu);
    if (id && j->s->s)
        mcp_cancel(j->s->s, id, "the caller went away"); /* runs call_done */
    pthread_mutex_unlock(&j->s->mu);
}

/* On the manager thread, the only one that starts and frees sessions: s->s needs no lock
 * here. on_cancel is set before the request goes out (after, the call may be answered and
 * gone already); a cancel that comes before the id is known is sent right after. */
static void issue(msrv *m, job *j)
{
    sv *s = j->s;
    start_server(m, s);
    if (!s->up || !s->s) {
        char why[400];
        snprintf(why, sizeof why, "MCP server %s is not available: %s", s->name, s->why);
        answer(j, AOS_ERR_UNAVAILABLE, NULL, why);
        job_unref(j);
        return;
    }
    char why[256] = "";
    atomic_fetch_add(&m->calls, 1);
    j->refs = 2; /* the manager's and call_done's */
    srv_call_on_cancel(j->call, on_cancel, j);
    uint64_t id = mcp_call(s->s, j->remote, j->args, j->time_ms, call_done, j, why,
                           sizeof why);
    if (!id) {
        job_unref(j); /* call_done never runs */
        answer(j, AOS_ERR_UNAVAILABLE, NULL, why[0] ? why : "the MCP session is gone");
        job_unref(j);
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->id = id;
    int late = j->cancel_asked && !j->answered;
    pthread_mutex_unlock(&j->mu);
    if (late) {
        pthread_mutex_lock(&s->mu);
        if (s->s)
            mcp_cancel(s->s, id, "the caller went away");
        pthread_mutex_unlock(&s->mu);
    }
    job_unref(j); /* the manager's */
}

/* ---- the manager ---------------------------------------------------------------------- */

static void *loop(void *arg)
{
    msrv *m = arg;
    struct pollfd pf[1 + 2 * SV_MAX];
    sv *who[1 + 2 * SV_MAX];
    for (;;) {
        pthread_mutex_lock(&m->qmu);
        job *q = m->q;
        m->q = m->qtail = NULL;
        int stop = m->stop, all = m->start_all;
        uint64_t gen = m->start_gen;
        m->start_all = 0;
        pthread_mutex_unlock(&m->qmu);
        if (stop) {
            for (job *j = q, *nx; j; j = nx) {
                nx = j->next;
                answer(j, AOS_ERR_UNAVAILABLE, NULL, "aos-tool is stopping");
                job_unref(j);
            }
            break;
        }
        if (all) {
            for (size_t i = 0; i < m->n; i++)
                start_server(m, &m->svs[i]);
            pthread_mutex_lock(&m->qmu);
            m->done_gen = gen;
            pthread_cond_broadcast(&m->qcv);
            pthread_mutex_unlock(&m->qmu);
        }
        for (job *j = q, *nx; j; j = nx) {
            nx = j->next;
            issue(m, j);
        }
        size_t n = 0;
        pf[n] = (struct pollfd){m->efd, POLLIN, 0};
        who[n++] = NULL;
        for (size_t i = 0; i < m->n; i++) {
            sv *s = &m->svs[i];
            if (!s->up)
                continue;
            if (s->p.err_fd >= 0) {
                pf[n] = (struct pollfd){s->p.err_fd, POLLIN, 0};
                who[n++] = s;
            }
            if (s->p.pidfd >= 0) {
                pf[n] = (struct pollfd){s->p.pidfd, POLLIN, 0};
                who[n++] = s;
            }
        }
        poll(pf, n, 1000);
        if (pf[0].revents) {
            uint64_t v;
            ssize_t r = read(m->efd, &v, sizeof v);
            (void)r;
        }
        for (size_t i = 1; i < n; i++) {
            sv *s = who[i];
            if (!pf[i].revents || !s->up)
                continue;
            if (pf[i].fd == s->p.err_fd)
                drain_stderr(s);
            else
                atomic_store(&s->dead, 1); /* its process exited */
        }
        for (size_t i = 0; i < m->n; i++) {
            sv *s = &m->svs[i];
            if (s->up && atomic_load(&s->dead))
                stop_server(m, s, "it died");
            if (s->up && atomic_exchange(&s->list_changed, 0))
                refresh_tools(m, s);
        }
    }
    for (size_t i = 0; i < m->n; i++)
        stop_server(m, &m->svs[i], "aos-tool is stopping");
    return NULL;
}

/* b as a new C string: NULL when empty, not UTF-8 or holding a NUL. */
static char *cstr_of(const ProtobufCBinaryData *b)
{
    if (!b->len || memchr(b->data, 0, b->len) || !aos_utf8_valid(b->data, b->len))
        return NULL;
    char *s = malloc(b->len + 1);
    if (s) {
        memcpy(s, b->data, b->len);
        s[b->len] = 0;
    }
    return s;
}

static int sv_strings(sv *s)
{
    const Aos__Tool__McpServer *c = s->c;
    char *name = cstr_of(&c->name);
    if (!name || strlen(name) >= sizeof s->name) {
        free(name);
        return -1;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    free(name);
    size_t n = 0;
    if (!(s->argv[n++] = cstr_of(&c->command)) || s->argv[0][0] != '/')
        return -1;
    for (size_t i = 0; i < c->n_args && n < SV_ARGV_MAX; i++)
        if (!(s->argv[n++] = cstr_of(&c->args[i])))
            return -1;
    for (size_t i = 0; i < c->n_env && i < SV_ENV_MAX; i++)
        if (!(s->env[i] = cstr_of(&c->env[i])))
            return -1;
    for (size_t i = 0; i < c->n_paths && i < JAIL_RO_MAX; i++)
        if (!(s->ro[i] = cstr_of(&c->paths[i])) || s->ro[i][0] != '/')
            return -1;
    return 0;
}

/* Binds each of the server's paths, now, while aos-tool is still root in its own mount
 * namespace, onto DIR/mcp/<server>.<i>: bubblewrap, which runs as aos-tool's uid, binds
 * from there, so a path below a directory that uid cannot cross (a build tree under
 * /root) still reaches the sandbox. Read-only; only what aos.yaml names. A path that
 * cannot be bound so is bound as it is (and fails then if unreachable). */
static void sv_premount(sv *s, const char *dir)
{
    if (!dir)
        return;
    char base[PATH_MAX];
    snprintf(base, sizeof base, "%.4000s/mcp", dir);
    if (mkdir(base, 0755) && errno != EEXIST)
        return;
    chmod(base, 0755); /* whatever the umask: bubblewrap, as aos-tool's uid, crosses it */
    for (size_t i = 0; i < JAIL_RO_MAX && s->ro[i]; i++) {
        struct stat st;
        char mp[PATH_MAX + 64];
        snprintf(mp, sizeof mp, "%.4000s/%s.%zu", base, s->name, i);
        if (stat(s->ro[i], &st))
            continue;
        umount2(mp, MNT_DETACH); /* an earlier incarnation's, in an inherited namespace */
        int ok;
        if (S_ISDIR(st.st_mode)) {
            ok = (mkdir(mp, 0755) == 0 || errno == EEXIST) && chmod(mp, 0755) == 0;
        } else {
            int fd = open(mp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            ok = fd >= 0;
            if (fd >= 0)
                close(fd);
        }
        if (!ok || mount(s->ro[i], mp, NULL, MS_BIND | MS_REC, NULL) ||
            mount(NULL, mp, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL)) {
            aos_warn("tool: mcp server %s: binding %s for its sandbox: %s", s->name, s->ro[i],
                     strerror(errno));
            continue;
        }
        s->ro_src[i] = strdup(mp);
    }
}

static void sv_free_strings(sv *s)
{
    for (size_t i = 0; i < SV_ARGV_MAX + 2; i++)
        free(s->argv[i]);
    for (size_t i = 0; i < SV_ENV_MAX + 1; i++)
        free(s->env[i]);
    for (size_t i = 0; i < JAIL_RO_MAX + 1; i++) {
        free(s->ro[i]);
        free(s->ro_src[i]);
    }
}

aos_err msrv_open(jail *jl, const Aos__Tool__Config *cfg, const char *dir, msrv **out,
                  char *why, size_t whylen)
{
    *out = NULL;
    msrv *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    m->jl = jl;
    m->efd = -1;
    pthread_rwlock_init(&m->mu, NULL);
    pthread_mutex_init(&m->qmu, NULL);
    mt_cond_init(&m->qcv);
    for (size_t i = 0; cfg && i < cfg->n_mcp && m->n < SV_MAX; i++) {
        sv *s = &m->svs[m->n++];
        s->c = cfg->mcp[i];
        pthread_mutex_init(&s->mu, NULL);
        if (sv_strings(s)) {
            msrv_close(m);
            snprintf(why, whylen, "MCP server %zu of the configuration: a name, command, "
                     "argument, variable or path that is empty, not UTF-8 or holds a NUL",
                     i + 1);
            return AOS_ERR_PROTO;
        }
        sv_premount(s, dir);
        s->p.pid = s->p.pidfd = s->p.out_fd = s->p.err_fd = s->p.in_fd = s->p.cg = -1;
        s->p.net_pid = s->p.net_exit_fd = -1;
        snprintf(s->why, sizeof s->why, "not started yet (it starts on first use)");
    }
    m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int e = m->efd < 0 ? errno : pthread_create(&m->thread, NULL, loop, m);
    if (e) {
        snprintf(why, whylen, "the MCP manager: %s", strerror(e));
        msrv_close(m);
        return AOS_ERR_INTERNAL;
    }
    m->started = 1;
    *out = m;
    return AOS_OK;
}

void msrv_with_tools(msrv *m, unsigned timeout_ms,
                     void (*fn)(void *arg, const desc *const *ds, const char *const *srcs,
                                size_t n),
                     void (*note)(void *arg, const char *text), void *arg)
{
    if (m->n) {
        pthread_mutex_lock(&m->qmu);
        uint64_t gen = ++m->start_gen;
        m->start_all = 1;
        pthread_mutex_unlock(&m->qmu);
        wake(m);
        pthread_mutex_lock(&m->qmu);
        struct timespec until = mt_in_us((uint64_t)timeout_ms * 1000u);
        while (m->done_gen < gen && !m->stop)
            if (pthread_cond_timedwait(&m->qcv, &m->qmu, &until) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&m->qmu);
    }
    static char srcs_buf[SV_MAX][48];
    pthread_rwlock_rdlock(&m->mu);
    size_t total = 0;
    for (size_t i = 0; i < m->n; i++)
        total += m->svs[i].ntools;
    const desc **ds = calloc(total ? total : 1, sizeof *ds);
    const char **srcs = calloc(total ? total : 1, sizeof *srcs);
    size_t k = 0;
    for (size_t i = 0; ds && srcs && i < m->n; i++) {
        sv *s = &m->svs[i];
        /* the same text for a server's whole life: written once, under the read lock of
         * every lister, so two listers write identical bytes */
        snprintf(srcs_buf[i], sizeof srcs_buf[i], "mcp:%s", s->name);
        for (size_t t = 0; t < s->ntools; t++) {
            ds[k] = s->tools[t];
            srcs[k++] = srcs_buf[i];
        }
        if (!s->ntools && note) {
            char t[400];
            snprintf(t, sizeof t, "MCP server %s: %s", s->name,
                     s->why[0] ? s->why : "up, with no tools");
            note(arg, t);
        }
    }
    fn(arg, ds, srcs, ds && srcs ? k : 0);
    pthread_rwlock_unlock(&m->mu);
    free(ds);
    free(srcs);
}

static sv *owner(const msrv *m, const char *name)
{
    if (strncmp(name, "mcp.", 4))
        return NULL;
    for (size_t i = 0; i < m->n; i++) {
        size_t l = strlen(m->svs[i].name);
        if (!strncmp(name + 4, m->svs[i].name, l) && name[4 + l] == '.')
            return (sv *)&m->svs[i];
    }
    return NULL;
}

int msrv_owns(const msrv *m, const char *name)
{
    return owner(m, name) != NULL;
}

void msrv_run(msrv *m, srv_call *call, const char *name, const char *agent,
              const json_t *args, unsigned time_ms)
{
    (void)agent;
    sv *s = owner(m, name);
    job *j = s ? calloc(1, sizeof *j) : NULL;
    if (!j) {
        srv_call_done(call, s ? AOS_ERR_NOMEM : AOS_ERR_NOT_FOUND,
                      s ? "out of memory" : "no such MCP server", NULL, 0);
        return;
    }
    j->call = call;
    j->s = s;
    j->refs = 1;
    j->args = json_deep_copy(args);
    j->time_ms = time_ms;
    j->start_us = mt_now_us();
    pthread_mutex_init(&j->mu, NULL);
    snprintf(j->name, sizeof j->name, "%s", name);
    /* the server's own name for it: from the list, else the part after mcp.<server>. */
    pthread_rwlock_rdlock(&m->mu);
    for (size_t k = 0; k < s->ntools; k++)
        if (!strcmp(desc_name(s->tools[k]), name))
            snprintf(j->remote, sizeof j->remote, "%s", s->remote[k]);
    pthread_rwlock_unlock(&m->mu);
    if (!j->remote[0])
        snprintf(j->remote, sizeof j->remote, "%s", name + 5 + strlen(s->name));
    pthread_mutex_lock(&m->qmu);
    if (m->qtail)
        m->qtail->next = j;
    else
        m->q = j;
    m->qtail = j;
    pthread_mutex_unlock(&m->qmu);
    wake(m);
}

void msrv_counts_get(msrv *m, msrv_counts *c)
{
    memset(c, 0, sizeof *c);
    c->declared = (unsigned)m->n;
    for (size_t i = 0; i < m->n; i++) {
        c->running += m->svs[i].up ? 1u : 0u;
        c->starts += m->svs[i].starts;
        c->deaths += m->svs[i].deaths;
    }
    c->calls = atomic_load(&m->calls);
}

void msrv_close(msrv *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->qmu);
    m->stop = 1;
    pthread_cond_broadcast(&m->qcv);
    pthread_mutex_unlock(&m->qmu);
    wake(m);
    if (m->started)
        pthread_join(m->thread, NULL);
    for (size_t i = 0; i < m->n; i++) {
        free_tools(&m->svs[i]);
        sv_free_strings(&m->svs[i]);
        pthread_mutex_destroy(&m->svs[i].mu);
    }
    if (m->efd >= 0)
        close(m->efd);
    pthread_rwlock_destroy(&m->mu);
    pthread_mutex_destroy(&m->qmu);
    pthread_cond_destroy(&m->qcv);
    free(m);
}
