/* The executor thread: every run's pipes and exit in one poll loop, its limits (time,
 * output) enforced there, its output streamed as parts and its result built as JSON. */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aos/envelope.h"
#include "aos/log.h"
#include "aos/readall.h"
#include "monotime.h"
#include "tool.pb-c.h"

#define RUN_MAX 256                  /* runs at once; more wait for a slot */
#define RUN_REPLY_OUT_MAX (1u << 20) /* stdout bytes kept (and streamed) per run */
#define RUN_REPLY_ERR_MAX (64u << 10)
#define RUN_JSON_OUT_MAX (256u << 10) /* stdout bytes in result_json: escaped, the reply
                                      * stays under the message cap whatever they are */
#define RUN_DRAIN_MAX (64u << 20)    /* output read past the cap before the run is killed */
#define RUN_EXIT_GRACE_US 200000     /* pipes still open after the sandbox exited */
#define RUN_READ_CHUNK (64u << 10)

typedef enum { KILL_NONE, KILL_TIMEOUT, KILL_OUTPUT, KILL_CANCEL, KILL_STOP } kill_why;

typedef struct obuf {
    uint8_t *data;
    size_t len, cap;       /* cap: what is kept */
    uint64_t total;        /* what the tool wrote */
    size_t sent;           /* streamed so far */
    int eof;
} obuf;

typedef struct run {
    runner *owner;
    run_job *job;
    jail_proc p;
    int spawned;
    uint64_t start_us, deadline_us, exit_us;
    obuf out, err;
    size_t in_off;
    int exited;
    kill_why killed;
    atomic_int cancelled;
    size_t holdback;       /* longest secret - 1: bytes not yet streamed in case a secret
                            * straddles two reads */
    struct run *next;
} run;

/* Every started (agent, request id): an open-addressed set of their hashes, this life's and
 * (from the journal) earlier lives', so that no request runs twice, whoever re-sends it.
 * The journal is "<agent> <rid>\n" appended before each run starts (O_APPEND, no fsync:
 * it guards against aos-tool's own death, whose written data the kernel keeps, not
 * against the machine's). Bounded: at JOURNAL_KEEP pairs the set and the journal start
 * over (a re-send comes within seconds, not after that many runs). */
#define JOURNAL_MAX_BYTES (8u << 20)
#define JOURNAL_SET (1u << 18) /* slots */
#define JOURNAL_KEEP (JOURNAL_SET / 2) /* pairs before starting over: the set stays sparse */

struct runner {
    jail *jl;
    int jfd;                  /* the journal, -1: none */
    uint64_t *jset;           /* hashes of the started pairs, 0: empty slot; the loop's */
    size_t jcount;
    pthread_t thread;
    int started;
    int efd;                  /* eventfd: new jobs, cancels, stop */
    pthread_mutex_t mu;
    run *pending, *pending_tail;
    int stop;
    /* the thread's own */
    run *active;
    size_t nactive;
    /* counters, under mu */
    runner_counts c;
};

void run_job_free(run_job *j)
{
    if (!j)
        return;
    desc_argv_free(j->argv);
    free(j->in);
    free(j->workspace);
    for (size_t i = 0; i < RUN_SECRETS_MAX; i++) {
        if (j->env[i]) {
            explicit_bzero(j->env[i], strlen(j->env[i]));
            free(j->env[i]);
        }
        if (j->secret[i]) {
            explicit_bzero(j->secret[i], strlen(j->secret[i]));
            free(j->secret[i]);
        }
    }
    free(j);
}

static void wake(runner *r)
{
    uint64_t one = 1;
    ssize_t w = write(r->efd, &one, sizeof one);
    (void)w; /* a full counter still wakes the loop */
}

/* ---- output ---------------------------------------------------------------------------- */

/* Overwrites every secret in b[from, len) with '*': same length, so what was streamed
 * and what is kept stay aligned. */
static void redact(const run_job *j, uint8_t *b, size_t from, size_t len)
{
    for (size_t s = 0; s < RUN_SECRETS_MAX && j->secret[s]; s++) {
        size_t sl = strlen(j->secret[s]);
        if (!sl || sl > len)
            continue;
        for (size_t i = from; i + sl <= len; i++)
            if (b[i] == (uint8_t)j->secret[s][0] && !memcmp(b + i, j->secret[s], sl)) {
                memset(b + i, '*', sl);
                i += sl - 1;
            }
    }
}

/* Streams what is final of one buffer: everything at EOF, else all but the holdback. */
static aos_err stream(run *rn, obuf *o, unsigned which, int final)
{
    size_t upto = o->len;
    if (!final && !o->eof)
        upto = o->len > rn->holdback ? o->len - rn->holdback : 0;
    if (upto <= o->sent || !rn->job->call)
        return AOS_OK;
    Aos__Tool__Chunk ch = AOS__TOOL__CHUNK__INIT;
    ch.stream = which;
    ch.data.data = o->data + o->sent;
    ch.data.len = upto - o->sent;
    size_t n = aos__tool__chunk__get_packed_size(&ch);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return AOS_ERR_NOMEM;
    aos__tool__chunk__pack(&ch, buf);
    aos_err e = srv_call_part(rn->job->call, buf, n);
    free(buf);
    o->sent = upto;
    return e;
}

/* Reads what the pipe has (a bounded amount per wakeup, so one chatty run cannot starve
 * the others), keeping up to the cap. */
static void drain(run *rn, obuf *o, int fd)
{
    uint8_t tmp[RUN_READ_CHUNK];
    for (int round = 0; round < 4; round++) {
        ssize_t n = read(fd, tmp, sizeof tmp);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EAGAIN)
                o->eof = 1;
            return;
        }
        if (n == 0) {
            o->eof = 1;
            return;
        }
        o->total += (uint64_t)n;
        size_t keep = o->len < o->cap ? o->cap - o->len : 0;
        if (keep > (size_t)n)
            keep = (size_t)n;
        if (keep) {
            if (!o->data && !(o->data = malloc(o->cap))) {
                o->cap = 0;
                continue;
            }
            size_t from = o->len > rn->holdback ? o->len - rn->holdback : 0;
            memcpy(o->data + o->len, tmp, keep);
            o->len += keep;
            redact(rn->job, o->data, from, o->len);
        }
    }
}

/* ---- the result ------------------------------------------------------------------------ */

/* bytes as a JSON string: invalid UTF-8 becomes U+FFFD, so the result is valid JSON
 * whatever the tool printed. */
static json_t *text_of(const uint8_t *b, size_t n)
{
    if (!n)
        return json_string("");
    if (aos_utf8_valid(b, n))
        return json_stringn((const char *)b, n);
    char *o = malloc(n * 3 + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = 1;
        unsigned c = b[i];
        if (c >= 0xc2 && c <= 0xdf)
            l = 2;
        else if (c >= 0xe0 && c <= 0xef)
            l = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            l = 4;
        if (c < 0x80 || (l > 1 && i + l <= n && aos_utf8_valid(b + i, l))) {
            memcpy(o + k, b + i, l);
            k += l;
            i += l;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += 1;
        }
    }
    json_t *s = json_stringn(o, k);
    free(o);
    return s;
}

static json_t *digest(const void *p, size_t n)
{
    char hex[65];
    srv_blake2b_hex(p, n, hex);
    return json_string(hex);
}

/* The run for the audit log: what ran and how it ended, its output by hash and size (the
 * output itself may be large or private; its hash proves what the caller was given). The
 * argv (with every granted secret redacted, as the output is) and the first
 * TRAIL_HEAD_MAX bytes of each output go as contents, so a replay shows them. */
#define TRAIL_HEAD_MAX (64u << 10)

static json_t *kept_digest(srv_contents *cs, json_t *kept, const void *p, size_t n)
{
    char hex[65];
    if (srv_contents_add(cs, p, n, hex)) {
        int dup = 0;
        for (size_t i = 0; !dup && i < json_array_size(kept); i++)
            dup = !strcmp(hex, json_string_value(json_array_get(kept, i)));
        if (!dup)
            json_array_append_new(kept, json_string(hex));
    }
    return json_string(hex);
}

static json_t *head_of(srv_contents *cs, json_t *kept, const uint8_t *b, size_t n)
{
    size_t h = n < TRAIL_HEAD_MAX ? n : TRAIL_HEAD_MAX;
    return json_pack("{s:o, s:I}", "blake2b", kept_digest(cs, kept, b ? b : (const uint8_t *)"", h),
                     "len", (json_int_t)h);
}

static void trail(const run *rn, const Aos__Tool__RunReply *rep)
{
    const run_job *j = rn->job;
    if (!j->call)
        return;
    srv_contents *cs = srv_contents_new();
    json_t *kept = json_array();
    json_t *argv = json_array();
    for (size_t i = 0; j->argv && j->argv[i]; i++) {
        size_t n = strlen(j->argv[i]);
        uint8_t *a = malloc(n ? n : 1);
        if (!a) {
            json_array_append_new(argv, json_string("?"));
            continue;
        }
        memcpy(a, j->argv[i], n);
        redact(j, a, 0, n);
        json_array_append_new(argv, kept_digest(cs, kept, a, n));
        free(a);
    }
    json_t *o = json_pack("{s:s, s:o, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:b, s:o, "
                          "s:o, s:s}",
                          "tool", desc_name(j->d), "argv_blake2b", argv, "exit_status",
                          (int)rep->exit_status, "signal", (int)rep->signal, "error",
                          rep->error ? aos_err_name((int)rep->error) : "ok", "duration_us",
                          (json_int_t)rep->duration_us, "peak_rss_kb",
                          (json_int_t)rep->peak_rss_kb, "stdout_bytes",
                          (json_int_t)rep->stdout_bytes, "stderr_bytes",
                          (json_int_t)rep->stderr_bytes, "stdout_truncated",
                          (int)rep->stdout_truncated, "stderr_truncated",
                          (int)rep->stderr_truncated, "timed_out", (int)rep->timed_out,
                          "stdout_blake2b", digest(rep->stdout_data.data, rep->stdout_data.len),
                          "stderr_blake2b", digest(rep->stderr_data.data, rep->stderr_data.len),
                          "sandbox", j->plain ? "none (test_plain)" : "bubblewrap");
    if (o) {
        json_object_set_new(o, "stdout_head",
                            head_of(cs, kept, rep->stdout_data.data, rep->stdout_data.len));
        json_object_set_new(o, "stderr_head",
                            head_of(cs, kept, rep->stderr_data.data, rep->stderr_data.len));
        if (json_array_size(kept))
            json_object_set(o, "contents", kept);
    }
    json_decref(kept);
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    if (body)
        srv_emit_with(srv_call_srv(j->call), j->call, "tool.run", (aos_err)rep->error, body, cs);
    free(body);
    srv_contents_free(cs);
}

static void finish(runner *r, run *rn, int status, uint64_t peak_kb, aos_err pre,
                   const char *pre_why)
{
    run_job *j = rn->job;
    if (pre) { /* it never ran */
        if (j->call)
            srv_call_done(j->call, pre, pre_why, NULL, 0);
        return;
    }
    if (rn->killed == KILL_CANCEL || rn->killed == KILL_STOP) {
        if (j->call)
            srv_call_done(j->call, rn->killed == KILL_STOP ? AOS_ERR_UNAVAILABLE
                                                           : AOS_ERR_CANCELLED,
                          rn->killed == KILL_STOP ? "aos-tool is stopping: the run was killed"
                                                  : "the run was cancelled and killed",
                          NULL, 0);
        return;
    }
    (void)r;
    stream(rn, &rn->out, 1, 1);
    stream(rn, &rn->err, 2, 1);
    Aos__Tool__RunReply rep = AOS__TOOL__RUN_REPLY__INIT;
    int code = -1, sig = 0;
    if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
        /* bubblewrap exits 128+N when the tool died of signal N */
        if (code > 128 && code < 128 + 65) {
            sig = code - 128;
        }
    } else if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
    }
    aos_err err = AOS_OK;
    char etext[256] = "";
    desc_limits lim = desc_get_limits(j->d);
    if (rn->killed == KILL_TIMEOUT) {
        err = AOS_ERR_TIMEOUT;
        snprintf(etext, sizeof etext, "ran past its %u ms limit: every process of the "
                 "sandbox was killed", j->time_ms);
        code = -1;
    } else if (rn->killed == KILL_OUTPUT) {
        err = AOS_ERR_QUOTA;
        snprintf(etext, sizeof etext, "wrote over %u MiB past its %zu-byte output limit: "
                 "killed", RUN_DRAIN_MAX >> 20, lim.output_bytes);
        code = -1;
    } else if (sig == SIGKILL && peak_kb && peak_kb * 1024 >= (uint64_t)lim.memory_mb << 20) {
        err = AOS_ERR_QUOTA;
        snprintf(etext, sizeof etext, "killed at its memory limit of %u MiB", lim.memory_mb);
    } else if (sig == SIGXCPU) {
        err = AOS_ERR_QUOTA;
        snprintf(etext, sizeof etext, "killed at its CPU-time limit");
    } else if (sig == SIGXFSZ) {
        err = AOS_ERR_QUOTA;
        snprintf(etext, sizeof etext, "killed writing a file past its size limit");
    } else if (sig == SIGKILL) {
        /* not ours (no limit of the run's was hit): the host's OOM killer or an operator */
        err = AOS_ERR_FAILED;
        snprintf(etext, sizeof etext, "killed by SIGKILL from outside the run (the host's "
                 "OOM killer or an operator), not by one of its limits");
    } else if (sig) {
        /* the tool's own crash is its result, like a non-zero exit; said in words too */
        snprintf(etext, sizeof etext, "%s died of signal %d (%s)", desc_name(j->d), sig,
                 strsignal(sig));
    } else if (code > 0 && (err = desc_exit_error(j->d, code))) {
        snprintf(etext, sizeof etext, "%s exited %d: %s", desc_name(j->d), code,
                 aos_strerror(err));
    }
    rep.exit_status = code;
    rep.signal = sig;
    rep.error = (uint32_t)err;
    rep.error_text.data = (uint8_t *)etext;
    rep.error_text.len = strlen(etext);
    rep.duration_us = mt_now_us() - rn->start_us;
    rep.peak_rss_kb = peak_kb;
    rep.stdout_data.data = rn->out.data;
    rep.stdout_data.len = rn->out.len;
    rep.stderr_data.data = rn->err.data;
    rep.stderr_data.len = rn->err.len;
    rep.stdout_truncated = rn->out.total > rn->out.len;
    rep.stderr_truncated = rn->err.total > rn->err.len;
    rep.stdout_bytes = rn->out.total;
    rep.stderr_bytes = rn->err.total;
    rep.timed_out = rn->killed == KILL_TIMEOUT;

    size_t jn = rn->out.len < RUN_JSON_OUT_MAX ? rn->out.len : RUN_JSON_OUT_MAX;
    json_t *res = json_object();
    json_object_set_new(res, "tool", json_string(desc_name(j->d)));
    json_object_set_new(res, "exit_status", json_integer(code));
    if (sig)
        json_object_set_new(res, "signal", json_integer(sig));
    json_object_set_new(res, "error", json_string(err ? aos_err_name(err) : "ok"));
    if (etext[0])
        json_object_set_new(res, "error_text", json_string(etext));
    json_object_set_new(res, "duration_ms", json_integer((json_int_t)(rep.duration_us / 1000)));
    json_object_set_new(res, "peak_rss_kb", json_integer((json_int_t)peak_kb));
    json_t *parsed = NULL;
    if (desc_output_format(j->d) == DESC_OUT_JSON && !rep.stdout_truncated && rn->out.len) {
        parsed = json_loadb((const char *)rn->out.data, rn->out.len,
                            JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        char vwhy[256];
        if (parsed && desc_output_validator(j->d) &&
            jschema_validate(desc_output_validator(j->d), parsed, vwhy, sizeof vwhy)) {
            json_object_set_new(res, "output_invalid", json_string(vwhy));
            json_decref(parsed);
            parsed = NULL;
        }
    }
    if (parsed)
        json_object_set_new(res, "output", parsed);
    else
        json_object_set_new(res, "stdout", text_of(rn->out.data, jn));
    json_object_set_new(res, "stderr", text_of(rn->err.data, rn->err.len));
    json_object_set_new(res, "stdout_truncated",
                        json_boolean(rep.stdout_truncated || jn < rn->out.len));
    json_object_set_new(res, "stderr_truncated", json_boolean(rep.stderr_truncated));
    json_object_set_new(res, "timed_out", json_boolean(rep.timed_out));
    char *js = json_dumps(res, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(res);
    trail(rn, &rep);
    rep.result_json.data = (uint8_t *)js;
    rep.result_json.len = js ? strlen(js) : 0;
    size_t n = aos__tool__run_reply__get_packed_size(&rep);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || !js) {
        srv_call_done(j->call, AOS_ERR_NOMEM, "building the result", NULL, 0);
    } else {
        aos__tool__run_reply__pack(&rep, buf);
        srv_call_done(j->call, AOS_OK, NULL, buf, n);
    }
    free(buf);
    free(js);
}

/* ---- the loop -------------------------------------------------------------------------- */

/* On a receive thread: flag it and wake the loop, which kills the run (never here: this
 * must not block, and the run belongs to the loop's thread). */
static void on_cancel(srv_call *c, void *arg)
{
    (void)c;
    run *rn = arg;
    atomic_store(&rn->cancelled, 1);
    wake(rn->owner);
}

static uint64_t pair_hash(const char *agent, const char *rid)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over "agent rid" */
    for (const char *p = agent; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ ' ') * 1099511628211ull;
    for (const char *p = rid; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h ? h : 1;
}

static void jset_add(uint64_t *set, uint64_t h)
{
    for (size_t i = h % JOURNAL_SET, n = 0; n < JOURNAL_SET; i = (i + 1) % JOURNAL_SET, n++)
        if (!set[i] || set[i] == h) {
            set[i] = h;
            return;
        }
}

static int jset_has(const uint64_t *set, uint64_t h)
{
    for (size_t i = h % JOURNAL_SET, n = 0; n < JOURNAL_SET && set[i];
         i = (i + 1) % JOURNAL_SET, n++)
        if (set[i] == h)
            return 1;
    return 0;
}

/* Loads dir/runs.journal (rewriting it with its newest half when too big) and opens it
 * for appending. Any failure leaves the runner without a journal, said in the log. */
static void journal_open(runner *r, const char *dir)
{
    r->jfd = -1;
    if (!dir)
        return;
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/runs.journal", dir);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    size_t len = 0;
    char *text = fd >= 0 ? aos_read_all(fd, JOURNAL_MAX_BYTES * 2, &len) : NULL;
    if (fd >= 0)
        close(fd);
    size_t from = 0;
    if (text && len > JOURNAL_MAX_BYTES / 2) {
        from = len / 2;
        while (from < len && text[from - 1] != '\n')
            from++;
        int w = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (w < 0 || write(w, text + from, len - from) != (ssize_t)(len - from) ||
            rename(tmp, path))
            aos_warn("tool: rewriting %s: %s", path, strerror(errno));
        if (w >= 0)
            close(w);
    }
    for (size_t i = from; text && i < len;) {
        char *nl = memchr(text + i, '\n', len - i);
        if (!nl)
            break; /* a line cut by a death mid-write: that run never started */
        *nl = 0;
        char *sp = strchr(text + i, ' ');
        if (sp) {
            *sp = 0;
            jset_add(r->jset, pair_hash(text + i, sp + 1));
            r->jcount++;
        }
        i = (size_t)(nl - text) + 1;
    }
    free(text);
    r->jfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (r->jfd < 0)
        aos_warn("tool: the run journal %s: %s (a re-sent request could run twice)", path,
                 strerror(errno));
}

/* 1 when the pair started before (in this life or an earlier one); else it is noted in
 * the set and written down. */
static int started_before(runner *r, const run_job *j)
{
    if (!j->rid[0])
        return 0;
    uint64_t h = pair_hash(j->agent, j->rid);
    if (jset_has(r->jset, h))
        return 1;
    if (r->jcount >= JOURNAL_KEEP) {
        memset(r->jset, 0, JOURNAL_SET * sizeof *r->jset);
        r->jcount = 0;
        if (r->jfd >= 0 && ftruncate(r->jfd, 0))
            aos_warn("tool: the run journal: %s", strerror(errno));
    }
    jset_add(r->jset, h);
    r->jcount++;
    if (r->jfd < 0)
        return 0;
    char line[160];
    int n = snprintf(line, sizeof line, "%s %s\n", j->agent, j->rid);
    if (n > 0 && write(r->jfd, line, (size_t)n) != n)
        aos_warn("tool: the run journal: %s", strerror(errno));
    return 0;
}

static void start(runner *r, run *rn)
{
    run_job *j = rn->job;
    if (started_before(r, j)) {
        pthread_mutex_lock(&r->mu);
        r->c.refused_ran_before++;
        pthread_mutex_unlock(&r->mu);
        finish(r, rn, 0, 0, AOS_ERR_CONFLICT,
               "this request started already (in an earlier aos-tool, which died while it "
               "ran, or it was sent again): it is not run again (its effects may have "
               "happened; its output is lost)");
        run_job_free(j);
        free(rn);
        return;
    }
    desc_limits lim = desc_get_limits(j->d);
    jail_spec sp = {.argv = j->argv,
                    .env = (const char *const *)j->env,
                    .workspace = j->workspace,
                    .memory_mb = lim.memory_mb,
                    .processes = lim.processes,
                    .cpu_s = j->time_ms / 1000 + 1,
                    .want_stdin = j->in != NULL,
                    .plain = j->plain,
                    .network = j->network};
    char why[256];
    rn->start_us = mt_now_us();
    rn->deadline_us = rn->start_us + (uint64_t)j->time_ms * 1000u;
    size_t cap = lim.output_bytes < RUN_REPLY_OUT_MAX ? lim.output_bytes : RUN_REPLY_OUT_MAX;
    rn->out.cap = cap;
    rn->err.cap = cap < RUN_REPLY_ERR_MAX ? cap : RUN_REPLY_ERR_MAX;
    for (size_t s = 0; s < RUN_SECRETS_MAX && j->secret[s]; s++) {
        size_t sl = strlen(j->secret[s]);
        if (sl && sl - 1 > rn->holdback)
            rn->holdback = sl - 1;
    }
    aos_err e = jail_spawn(r->jl, &sp, &rn->p, why, sizeof why);
    if (e) {
        pthread_mutex_lock(&r->mu);
        r->c.spawn_failures++;
        pthread_mutex_unlock(&r->mu);
        finish(r, rn, 0, 0, e, why);
        run_job_free(j);
        free(rn);
        return;
    }
    rn->spawned = 1;
    pthread_mutex_lock(&r->mu);
    r->c.started++;
    pthread_mutex_unlock(&r->mu);
    if (!j->in && rn->p.in_fd >= 0) {
        close(rn->p.in_fd);
        rn->p.in_fd = -1;
    }
    rn->next = r->active;
    r->active = rn;
    r->nactive++;
}

static void kill_run(runner *r, run *rn, kill_why why)
{
    if (rn->killed)
        return;
    rn->killed = why;
    jail_kill(r->jl, &rn->p);
    pthread_mutex_lock(&r->mu);
    if (why == KILL_TIMEOUT)
        r->c.timeouts++;
    else if (why == KILL_OUTPUT)
        r->c.output_kills++;
    pthread_mutex_unlock(&r->mu);
}

/* One pass over a run after poll: returns 1 when it is done (answered and freed). */
static int step(runner *r, run *rn, const struct pollfd *pf, uint64_t now)
{
    (void)pf;
    if (!rn->out.eof)
        drain(rn, &rn->out, rn->p.out_fd);
    if (!rn->err.eof)
        drain(rn, &rn->err, rn->p.err_fd);
    if (rn->p.in_fd >= 0) {
        run_job *j = rn->job;
        int done = 0;
        while (rn->in_off < j->in_len) {
            ssize_t w = write(rn->p.in_fd, j->in + rn->in_off, j->in_len - rn->in_off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno != EAGAIN)
                done = 1; /* EPIPE: the tool does not read it all; that is its business */
            if (w <= 0)
                break;
            rn->in_off += (size_t)w;
        }
        if (done || rn->in_off >= j->in_len) {
            close(rn->p.in_fd); /* EOF: the tool sees the end of its input */
            rn->p.in_fd = -1;
        }
    }
    if (!rn->exited && rn->p.pidfd >= 0) {
        struct pollfd q = {rn->p.pidfd, POLLIN, 0};
        if (poll(&q, 1, 0) > 0)
            rn->exited = 1;
    } else if (!rn->exited) {
        /* no pidfd: ask without reaping */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (!waitid(P_PID, (id_t)rn->p.pid, &si, WEXITED | WNOHANG | WNOWAIT) && si.si_pid)
            rn->exited = 1;
    }
    if (rn->exited && !rn->exit_us)
        rn->exit_us = now;
    if (!rn->killed && atomic_load(&rn->cancelled))
        kill_run(r, rn, KILL_CANCEL);
    if (!rn->killed && now >= rn->deadline_us)
        kill_run(r, rn, KILL_TIMEOUT);
    if (!rn->killed && (rn->out.total > rn->out.cap + RUN_DRAIN_MAX ||
                        rn->err.total > rn->err.cap + RUN_DRAIN_MAX))
        kill_run(r, rn, KILL_OUTPUT);
    if (!rn->killed) {
        aos_err e = stream(rn, &rn->out, 1, 0);
        if (!e)
            e = stream(rn, &rn->err, 2, 0);
        if (e == AOS_ERR_CANCELLED || e == AOS_ERR_TIMEOUT)
            kill_run(r, rn, KILL_CANCEL);
    }
    int pipes_done = rn->out.eof && rn->err.eof;
    if (!rn->exited || (!pipes_done && now - rn->exit_us < RUN_EXIT_GRACE_US))
        return 0;
    uint64_t peak = 0;
    int st = jail_reap(r->jl, &rn->p, &peak);
    close(rn->p.out_fd);
    close(rn->p.err_fd);
    if (rn->p.in_fd >= 0)
        close(rn->p.in_fd);
    finish(r, rn, st, peak, AOS_OK, NULL);
    jail_release(r->jl, &rn->p);
    free(rn->out.data);
    free(rn->err.data);
    run_job_free(rn->job);
    free(rn);
    return 1;
}

static void *loop(void *arg)
{
    runner *r = arg;
    struct pollfd *pf = calloc(1 + RUN_MAX * 4, sizeof *pf);
    if (!pf) {
        aos_error("tool: the executor has no memory for its poll set");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int stop = r->stop;
        while (r->pending && r->nactive < RUN_MAX) {
            run *rn = r->pending;
            r->pending = rn->next;
            if (!r->pending)
                r->pending_tail = NULL;
            rn->next = NULL;
            pthread_mutex_unlock(&r->mu);
            if (stop) {
                finish(r, rn, 0, 0, AOS_ERR_UNAVAILABLE, "aos-tool is stopping");
                run_job_free(rn->job);
                free(rn);
            } else {
                start(r, rn);
            }
            pthread_mutex_lock(&r->mu);
        }
        r->c.running = r->nactive;
        pthread_mutex_unlock(&r->mu);
        if (stop)
            for (run *rn = r->active; rn; rn = rn->next)
                kill_run(r, rn, KILL_STOP);
        if (stop && !r->active)
            break;
        size_t n = 0;
        uint64_t now = mt_now_us(), next = now + 1000000u;
        pf[n++] = (struct pollfd){r->efd, POLLIN, 0};
        for (run *rn = r->active; rn; rn = rn->next) {
            if (!rn->out.eof)
                pf[n++] = (struct pollfd){rn->p.out_fd, POLLIN, 0};
            if (!rn->err.eof)
                pf[n++] = (struct pollfd){rn->p.err_fd, POLLIN, 0};
            if (rn->p.in_fd >= 0)
                pf[n++] = (struct pollfd){rn->p.in_fd, POLLOUT, 0};
            if (!rn->exited && rn->p.pidfd >= 0)
                pf[n++] = (struct pollfd){rn->p.pidfd, POLLIN, 0};
            uint64_t t = rn->killed ? now + 20000u : rn->deadline_us;
            if (rn->exited)
                t = rn->exit_us + RUN_EXIT_GRACE_US;
            if (rn->p.pidfd < 0 && t > now + 20000u)
                t = now + 20000u; /* no pidfd: look every 20 ms */
            if (t < next)
                next = t;
        }
        int ms = next > now ? (int)((next - now + 999) / 1000) : 0;
        int pr = poll(pf, n, ms);
        if (pr < 0 && errno != EINTR)
            aos_warn("tool: poll: %s", strerror(errno));
        if (pf[0].revents & POLLIN) {
            uint64_t v;
            ssize_t rd = read(r->efd, &v, sizeof v);
            (void)rd;
        }
        now = mt_now_us();
        for (run **pp = &r->active; *pp;) {
            run *rn = *pp;
            run *nx = rn->next;
            if (step(r, rn, pf, now)) {
                *pp = nx;
                r->nactive--;
            } else {
                pp = &rn->next;
            }
        }
    }
    free(pf);
    return NULL;
}

aos_err runner_open(jail *jl, const char *dir, runner **out, char *why, size_t whylen)
{
    *out = NULL;
    runner *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    r->jl = jl;
    r->jfd = -1;
    if (!(r->jset = calloc(JOURNAL_SET, sizeof *r->jset))) {
        free(r);
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    journal_open(r, dir);
    pthread_mutex_init(&r->mu, NULL);
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->efd < 0) {
        snprintf(why, whylen, "eventfd: %s", strerror(errno));
        if (r->jfd >= 0)
            close(r->jfd);
        free(r->jset);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return AOS_ERR_INTERNAL;
    }
    int e = pthread_create(&r->thread, NULL, loop, r);
    if (e) {
        snprintf(why, whylen, "starting the executor: %s", strerror(e));
        close(r->efd);
        if (r->jfd >= 0)
            close(r->jfd);
        free(r->jset);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return AOS_ERR_INTERNAL;
    }
    r->started = 1;
    *out = r;
    return AOS_OK;
}

void runner_submit(runner *r, run_job *job)
{
    run *rn = calloc(1, sizeof *rn);
    if (!rn) {
        if (job->call)
            srv_call_done(job->call, AOS_ERR_NOMEM, "out of memory", NULL, 0);
        run_job_free(job);
        return;
    }
    rn->job = job;
    rn->owner = r;
    rn->p.pid = -1;
    rn->p.pidfd = rn->p.out_fd = rn->p.err_fd = rn->p.in_fd = -1;
    rn->p.cg = -1;
    rn->p.net_pid = rn->p.net_exit_fd = -1;
    atomic_init(&rn->cancelled, 0);
    if (job->call)
        srv_call_on_cancel(job->call, on_cancel, rn);
    pthread_mutex_lock(&r->mu);
    if (r->pending_tail)
        r->pending_tail->next = rn;
    else
        r->pending = rn;
    r->pending_tail = rn;
    pthread_mutex_unlock(&r->mu);
    wake(r);
}

void runner_counts_get(runner *r, runner_counts *c)
{
    pthread_mutex_lock(&r->mu);
    *c = r->c;
    pthread_mutex_unlock(&r->mu);
}

void runner_close(runner *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_mutex_unlock(&r->mu);
    wake(r);
    if (r->started)
        pthread_join(r->thread, NULL);
    close(r->efd);
    if (r->jfd >= 0)
        close(r->jfd);
    free(r->jset);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
