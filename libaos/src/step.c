/* libaos durable steps: runs with ids kept in the agent's kv, and LLM and tool steps that
 * are looked up in the step log before they run, recorded as they complete (aos/step.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/step.h"
#include "aos/storage.h"
#include "step_io.h"

#define STEP_STORE_MS 60000u      /* how long a step's own records are retried */
#define STEP_BACKOFF_MIN_MS 50u
#define STEP_BACKOFF_MAX_MS 2000u
#define STEP_REC_VERSION 1

struct aos_run {
    step_io io;
    char agent[AOS_AGENT_ID_MAX + 1];
    int has_agent;
    char id[AOS_RUN_ID_MAX + 1];
    uint64_t started_ms;
    aos_step *log;          /* the recorded steps read at open: log[i] is step i + 1 */
    size_t nlog;
    uint64_t pos;           /* steps taken (replayed or live) */
    uint64_t open_start;    /* a start recorded without its end (0: none), */
    uint64_t open_fp;       /* and its request's fingerprint */
    int finished;
    aos_run_state state;
};

/* ---- names -------------------------------------------------------------------------- */

static const char *const STATE_NAMES[] = {"running", "done", "failed", "interrupted"};

const char *aos_run_state_name(aos_run_state s)
{
    return (unsigned)s < sizeof STATE_NAMES / sizeof *STATE_NAMES ? STATE_NAMES[s] : NULL;
}

int aos_run_state_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof STATE_NAMES / sizeof *STATE_NAMES; i++)
        if (!strcmp(name, STATE_NAMES[i]))
            return (int)i;
    return -1;
}

/* ---- ids ------------------------------------------------------------------------------ */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void aos_step_request_id(const char *run, uint64_t position, uint32_t salt,
                         uint8_t id[AOS_ID_LEN])
{
    uint8_t k[12];
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(position >> (8 * i));
    for (int i = 0; i < 4; i++)
        k[8 + i] = (uint8_t)(salt >> (8 * i));
    /* two independent 64-bit hashes: the id is unique per (run, position, salt) in
     * practice, and the same on every retry */
    uint64_t a = fnv(fnv(0xcbf29ce484222325ull, "aos.step\t", 9), run, strlen(run));
    uint64_t b = fnv(fnv(0x84222325cbf29ce4ull, "aos.step.b\t", 11), run, strlen(run));
    a = fnv(a, k, sizeof k);
    b = fnv(b, k, sizeof k);
    for (int i = 0; i < 8; i++) {
        id[i] = (uint8_t)(a >> (8 * i));
        id[8 + i] = (uint8_t)(b >> (8 * i));
    }
}

static uint64_t fingerprint(const void *req, size_t len)
{
    return fnv(0xcbf29ce484222325ull, req, len);
}

/* ---- the outcome records ------------------------------------------------------------- */

static int transient(aos_err e)
{
    return e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_RATE_LIMITED ||
           e == AOS_ERR_CANCELLED;
}

/* *out malloc'd */
static aos_err outcome_encode(const aos_reply *r, uint8_t **out, size_t *n)
{
    size_t el = strnlen(r->error, sizeof r->error - 1);
    if (el > 0xffff)
        el = 0xffff;
    size_t len = 7 + el + r->payload_len;
    uint8_t *d = malloc(len ? len : 1);
    if (!d)
        return AOS_ERR_NOMEM;
    uint32_t st = (uint32_t)r->status;
    d[0] = STEP_REC_VERSION;
    d[1] = (uint8_t)(st >> 24);
    d[2] = (uint8_t)(st >> 16);
    d[3] = (uint8_t)(st >> 8);
    d[4] = (uint8_t)st;
    d[5] = (uint8_t)(el >> 8);
    d[6] = (uint8_t)el;
    memcpy(d + 7, r->error, el);
    if (r->payload_len)
        memcpy(d + 7 + el, r->payload, r->payload_len);
    *out = d;
    *n = len;
    return AOS_OK;
}

int step_outcome_decode(const uint8_t *d, size_t n, aos_reply *r)
{
    memset(r, 0, sizeof *r);
    if (n < 7 || d[0] != STEP_REC_VERSION)
        return -1;
    uint32_t st = (uint32_t)d[1] << 24 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 8 | d[4];
    size_t el = (size_t)d[5] << 8 | d[6];
    if (!aos_err_valid((int)st) || el > n - 7 || el > AOS_ERRMSG_MAX)
        return -1;
    r->status = (int)st;
    memcpy(r->error, d + 7, el);
    r->error[el] = 0;
    size_t pl = n - 7 - el;
    r->payload = malloc(pl + 1);
    if (!r->payload)
        return -1;
    memcpy(r->payload, d + 7 + el, pl);
    r->payload[pl] = 0;
    r->payload_len = pl;
    return 0;
}

static aos_err reply_fail(aos_reply *r, aos_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aos_err reply_fail(aos_reply *r, aos_err e, const char *fmt, ...)
{
    memset(r, 0, sizeof *r);
    r->status = e;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    return e;
}

/* ---- the io over a connection ---------------------------------------------------------- */

static aos_err c_call(void *arg, const aos_call_opts *o, const char *m, const void *req,
                      size_t len, aos_reply *r)
{
    return aos_call(arg, o, m, req, len, r);
}
static aos_err c_kv_get(void *arg, const aos_call_opts *o, const char *key, uint8_t **v,
                        size_t *n, char *why, size_t whylen)
{
    return aos_kv_get(arg, o, key, v, n, NULL, why, whylen);
}
static aos_err c_kv_put(void *arg, const aos_call_opts *o, const char *key, const void *v,
                        size_t n, int create_only, char *why, size_t whylen)
{
    aos_kv_put_opts po = {.cas = create_only};
    return aos_kv_put(arg, o, key, v, n, &po, NULL, why, whylen);
}
static aos_err c_kv_delete(void *arg, const aos_call_opts *o, const char *key, char *why,
                           size_t whylen)
{
    return aos_kv_delete(arg, o, key, NULL, why, whylen);
}
static aos_err c_log_read(void *arg, const aos_call_opts *o, const char *run, uint64_t from,
                          aos_step_page **out, char *why, size_t whylen)
{
    return aos_step_read(arg, o, run, from, AOS_LIST_MAX, out, why, whylen);
}
static aos_err c_log_append(void *arg, const aos_call_opts *o, const char *run, uint64_t step,
                            const char *kind, const void *d, size_t n, char *why, size_t whylen)
{
    int existed;
    return aos_step_append(arg, o, run, step, kind, d, n, &existed, why, whylen);
}
static uint64_t clock_ms(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
static uint64_t c_now(void *arg)
{
    (void)arg;
    return clock_ms(CLOCK_MONOTONIC);
}
static uint64_t c_wall(void *arg)
{
    (void)arg;
    return clock_ms(CLOCK_REALTIME);
}
static void c_sleep(void *arg, uint32_t ms)
{
    (void)arg;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

aos_err aos_run_open(aos_conn *c, const char *agent_id, int fresh, aos_run **out, int *resumed,
                     char *why, size_t whylen)
{
    step_io io = {c,         c_call,       c_kv_get, c_kv_put, c_kv_delete, c_log_read,
                  c_log_append, c_now,     c_wall,   c_sleep};
    return step_run_open_io(&io, agent_id, fresh, out, resumed, why, whylen);
}

/* ---- the run ------------------------------------------------------------------------- */

static aos_call_opts opts(const aos_run *r, const uint8_t *rid)
{
    aos_call_opts o = {.request_id = rid, .agent_id = r->has_agent ? r->agent : NULL,
                       .run_id = r->id};
    if (r->id[0])   /* the audit log files the call under its run and step */
        o.step = (uint32_t)(r->pos + 1 > UINT32_MAX ? UINT32_MAX : r->pos + 1);
    return o;
}

static uint32_t backoff(uint32_t *b, uint64_t retry_after)
{
    uint32_t ms = *b;
    if (retry_after && retry_after < STEP_BACKOFF_MAX_MS * 4)
        ms = (uint32_t)retry_after;
    *b = *b * 2 > STEP_BACKOFF_MAX_MS ? STEP_BACKOFF_MAX_MS : *b * 2;
    return ms;
}

/* The run's record in kv (its JSON is ours: every field is a number or a checked word,
 * and reason is escaped). */
static aos_err put_record(aos_run *r, aos_run_state st, const char *reason, int create_only,
                          char *why, size_t whylen)
{
    char key[AOS_KEY_MAX + 1], esc[AOS_RUN_REASON_MAX * 6 + 1], json[AOS_RUN_REASON_MAX * 6 + 512];
    size_t k = 0;
    for (const unsigned char *s = (const unsigned char *)(reason ? reason : "");
         *s && s - (const unsigned char *)reason < AOS_RUN_REASON_MAX; s++) {
        if (*s == '"' || *s == '\\')
            k += (size_t)snprintf(esc + k, sizeof esc - k, "\\%c", *s);
        else if (*s < 0x20 || *s == 0x7f)
            k += (size_t)snprintf(esc + k, sizeof esc - k, "\\u%04x", *s);
        else
            esc[k++] = (char)*s;
    }
    esc[k] = 0;
    uint64_t now = r->io.wall_ms(r->io.arg);
    snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%s", r->id);
    int n = snprintf(json, sizeof json,
                     "{\"run\":\"%s\",\"state\":\"%s\",\"started_ms\":%llu,\"ended_ms\":%llu,"
                     "\"steps\":%llu,\"reason\":\"%s\"}",
                     r->id, aos_run_state_name(st), (unsigned long long)r->started_ms,
                     st == AOS_RUN_RUNNING ? 0ull : (unsigned long long)now,
                     (unsigned long long)r->pos, esc);
    uint8_t rid[AOS_ID_LEN];
    aos_step_request_id(r->id, 0, create_only ? 1 : 2 + (uint32_t)st, rid);
    aos_call_opts o = opts(r, rid);
    uint64_t until = r->io.now_ms(r->io.arg) + STEP_STORE_MS;
    uint32_t b = STEP_BACKOFF_MIN_MS;
    for (;;) {
        aos_err e = r->io.kv_put(r->io.arg, &o, key, json, (size_t)n, create_only, why, whylen);
        if (!transient(e) || r->io.now_ms(r->io.arg) >= until)
            return e;
        r->io.sleep_ms(r->io.arg, backoff(&b, 0));
    }
}

/* Reads the whole log of the run into r->log. */
static aos_err load_log(aos_run *r, char *why, size_t whylen)
{
    uint64_t from = 1;
    uint64_t until = r->io.now_ms(r->io.arg) + STEP_STORE_MS;
    uint32_t b = STEP_BACKOFF_MIN_MS;
    for (;;) {
        aos_step_page *pg = NULL;
        aos_call_opts o = opts(r, NULL);
        aos_err e = r->io.log_read(r->io.arg, &o, r->id, from, &pg, why, whylen);
        if (transient(e) && r->io.now_ms(r->io.arg) < until) {
            r->io.sleep_ms(r->io.arg, backoff(&b, 0));
            continue;
        }
        if (e)
            return e;
        aos_step *nl = pg->n ? realloc(r->log, (r->nlog + pg->n) * sizeof *nl) : r->log;
        if (pg->n && !nl) {
            aos_step_page_free(pg);
            aos_say(why, whylen, "out of memory");
            return AOS_ERR_NOMEM;
        }
        r->log = nl;
        for (size_t i = 0; i < pg->n; i++) {
            if (pg->steps[i].step != r->nlog + 1) {
                aos_say(why, whylen, "the step log of run %s has step %llu where %zu was due",
                        r->id, (unsigned long long)pg->steps[i].step, r->nlog + 1);
                aos_step_page_free(pg);
                return AOS_ERR_PROTO;
            }
            r->log[r->nlog++] = pg->steps[i];   /* moved: kind and data are ours now */
        }
        uint64_t last = pg->last_step;
        size_t got = pg->n;
        pg->n = 0;
        aos_step_page_free(pg);
        if (!got || r->nlog >= last)
            return AOS_OK;
        from = r->nlog + 1;
    }
}

/* "running" etc. from our own record's JSON; -1 when absent. */
static int record_state(const uint8_t *v, size_t n)
{
    static const char k[] = "\"state\":\"";
    char buf[64];
    const char *p = memmem(v, n, k, sizeof k - 1);
    if (!p)
        return -1;
    p += sizeof k - 1;
    size_t i = 0;
    while (p + i < (const char *)v + n && p[i] != '"' && i < sizeof buf - 1) {
        buf[i] = p[i];
        i++;
    }
    buf[i] = 0;
    return aos_run_state_parse(buf);
}

static uint64_t record_u64(const uint8_t *v, size_t n, const char *field)
{
    char k[64];
    int kl = snprintf(k, sizeof k, "\"%s\":", field);
    const char *p = memmem(v, n, k, (size_t)kl);
    return p ? strtoull(p + kl, NULL, 10) : 0;
}

static int valid_run_id(const uint8_t *v, size_t n)
{
    if (n < 3 || n > AOS_RUN_ID_MAX || v[0] != 'r' || v[1] != '-')
        return 0;
    for (size_t i = 2; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            return 0;
    return 1;
}

aos_err step_run_open_io(const step_io *io, const char *agent_id, int fresh, aos_run **out,
                         int *resumed, char *why, size_t whylen)
{
    *out = NULL;
    if (resumed)
        *resumed = 0;
    if (agent_id && strlen(agent_id) > AOS_AGENT_ID_MAX) {
        aos_say(why, whylen, "agent id is longer than %d bytes", AOS_AGENT_ID_MAX);
        return AOS_ERR_USAGE;
    }
    aos_run *r = calloc(1, sizeof *r);
    if (!r) {
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    r->io = *io;
    if (agent_id) {
        snprintf(r->agent, sizeof r->agent, "%s", agent_id);
        r->has_agent = 1;
    }
    aos_err e;
    uint64_t until = io->now_ms(io->arg) + STEP_STORE_MS;
    uint32_t b = STEP_BACKOFF_MIN_MS;
    int have_current = 0;
    for (;;) {
        uint8_t *v = NULL, *rec = NULL;
        size_t n = 0, rn = 0;
        aos_call_opts o = opts(r, NULL);
        e = io->kv_get(io->arg, &o, AOS_RUN_KEY_CURRENT, &v, &n, why, whylen);
        if (transient(e) && io->now_ms(io->arg) < until) {
            io->sleep_ms(io->arg, backoff(&b, 0));
            continue;
        }
        if (e != AOS_OK && e != AOS_ERR_NOT_FOUND)
            goto fail;
        have_current = e == AOS_OK;
        if (e == AOS_OK) {
            if (!valid_run_id(v, n)) {
                free(v);
                aos_say(why, whylen, "%s does not hold a run id", AOS_RUN_KEY_CURRENT);
                e = AOS_ERR_PROTO;
                goto fail;
            }
            memcpy(r->id, v, n);
            r->id[n] = 0;
            free(v);
            char key[AOS_KEY_MAX + 1];
            snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%s", r->id);
            e = io->kv_get(io->arg, &o, key, &rec, &rn, why, whylen);
            if (transient(e) && io->now_ms(io->arg) < until) {
                io->sleep_ms(io->arg, backoff(&b, 0));
                continue;
            }
            if (e != AOS_OK && e != AOS_ERR_NOT_FOUND) {
                free(rec);
                goto fail;
            }
            int st = e == AOS_OK ? record_state(rec, rn) : -1;
            r->started_ms = e == AOS_OK ? record_u64(rec, rn, "started_ms") : 0;
            uint64_t steps = e == AOS_OK ? record_u64(rec, rn, "steps") : 0;
            free(rec);
            if (st > AOS_RUN_RUNNING && !fresh) {
                /* the agent's last run finished: handed back as such (its steps refuse) */
                r->state = (aos_run_state)st;
                r->finished = 1;
                r->pos = steps;
                if (resumed)
                    *resumed = 1;
                *out = r;
                return AOS_OK;
            }
            if (st <= AOS_RUN_RUNNING) {
                if (st < 0) {
                    /* a crash between "current" and the record: write it now */
                    if (!r->started_ms)
                        r->started_ms = io->wall_ms(io->arg);
                    e = put_record(r, AOS_RUN_RUNNING, NULL, 1, why, whylen);
                    if (e && e != AOS_ERR_CONFLICT)
                        goto fail;
                }
                if ((e = load_log(r, why, whylen)))
                    goto fail;
                if (resumed)
                    *resumed = 1;
                *out = r;
                return AOS_OK;
            }
            /* finished, and a fresh run is wanted: below */
        }
        /* a new run: its id goes in "current" first, so that a crash leaves it findable */
        uint8_t rnd[AOS_ID_LEN];
        aos_id_random(rnd);
        strcpy(r->id, "r-");
        aos_hex(rnd, AOS_ID_LEN, r->id + 2);
        r->started_ms = io->wall_ms(io->arg);
        e = io->kv_put(io->arg, &o, AOS_RUN_KEY_CURRENT, r->id, strlen(r->id), !have_current,
                       why, whylen);
        if (e == AOS_ERR_CONFLICT || (transient(e) && io->now_ms(io->arg) < until)) {
            /* made meanwhile (or a retry whose first try got through): read it again */
            if (transient(e))
                io->sleep_ms(io->arg, backoff(&b, 0));
            fresh = 0;
            continue;
        }
        if (e)
            goto fail;
        if ((e = put_record(r, AOS_RUN_RUNNING, NULL, 1, why, whylen)) && e != AOS_ERR_CONFLICT)
            goto fail;
        *out = r;
        return AOS_OK;
    }
fail:
    aos_run_close(r);
    return e;
}

const char *aos_run_id(const aos_run *r)
{
    return r->id;
}

aos_run_state aos_run_state_of(const aos_run *r)
{
    return r->finished ? r->state : AOS_RUN_RUNNING;
}

uint64_t aos_run_position(const aos_run *r)
{
    return r->pos;
}

int aos_run_replaying(aos_run *r)
{
    return r->pos < r->nlog;
}

aos_err aos_run_finish(aos_run *r, aos_run_state state, const char *reason, char *why,
                       size_t whylen)
{
    if (state == AOS_RUN_RUNNING || !aos_run_state_name(state)) {
        aos_say(why, whylen, "a run finishes done, failed or interrupted");
        return AOS_ERR_USAGE;
    }
    if (r->finished)
        return AOS_OK;
    aos_err e = put_record(r, state, reason, 0, why, whylen);
    if (e)
        return e;
    /* "current" keeps naming it: a restart finds the run finished, not a reason to begin
     * again; aos_run_open(fresh) replaces it */
    r->finished = 1;
    r->state = state;
    return AOS_OK;
}

void aos_run_close(aos_run *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nlog; i++) {
        free(r->log[i].kind);
        free(r->log[i].data);
    }
    free(r->log);
    free(r);
}

/* ---- steps ------------------------------------------------------------------------------ */

static aos_err append(aos_run *r, const char *kind, const void *d, size_t n, aos_reply *rep)
{
    char why[AOS_ERRMSG_MAX + 1] = "";
    uint64_t until = r->io.now_ms(r->io.arg) + STEP_STORE_MS;
    uint32_t b = STEP_BACKOFF_MIN_MS;
    for (;;) {
        aos_call_opts o = opts(r, NULL);
        aos_err e = r->io.log_append(r->io.arg, &o, r->id, r->pos + 1, kind, d, n, why,
                                     sizeof why);
        if (e == AOS_OK) {
            r->pos++;
            return AOS_OK;
        }
        if (!transient(e) || r->io.now_ms(r->io.arg) >= until) {
            aos_reply_clear(rep);
            return reply_fail(rep, e, "recording step %llu of run %s: %s",
                              (unsigned long long)r->pos + 1, r->id, why);
        }
        r->io.sleep_ms(r->io.arg, backoff(&b, 0));
    }
}

/* The call itself, retried with the same request id while it fails transiently. */
static aos_err live_call(aos_run *r, const char *method, const uint8_t *rid, const void *req,
                         size_t len, uint32_t timeout_ms, aos_reply *rep)
{
    uint64_t until = r->io.now_ms(r->io.arg) + (timeout_ms ? timeout_ms : AOS_DEFAULT_TIMEOUT_MS);
    uint32_t b = STEP_BACKOFF_MIN_MS;
    for (;;) {
        aos_call_opts o = opts(r, rid);
        uint64_t left = until - r->io.now_ms(r->io.arg);
        o.timeout_ms = (uint32_t)(left > AOS_DEFAULT_TIMEOUT_MS ? AOS_DEFAULT_TIMEOUT_MS
                                  : left < 1000 ? 1000 : left);
        aos_err e = r->io.call(r->io.arg, &o, method, req, len, rep);
        if (!transient(e) || e == AOS_ERR_CANCELLED || r->io.now_ms(r->io.arg) >= until)
            return e;
        uint32_t ms = backoff(&b, rep->retry_after_ms);
        aos_reply_clear(rep);
        r->io.sleep_ms(r->io.arg, ms);
    }
}

static aos_err replay(aos_run *r, const aos_step *s, aos_reply *rep)
{
    if (step_outcome_decode(s->data, s->len, rep))
        return reply_fail(rep, AOS_ERR_PROTO, "run %s: step %llu is not an outcome record",
                          r->id, (unsigned long long)s->step);
    r->pos++;
    return (aos_err)rep->status;
}

static aos_err record(aos_run *r, const char *kind, aos_reply *rep)
{
    uint8_t *d;
    size_t n;
    if (outcome_encode(rep, &d, &n)) {
        aos_reply_clear(rep);
        return reply_fail(rep, AOS_ERR_NOMEM, "out of memory");
    }
    aos_err e = append(r, kind, d, n, rep);
    free(d);
    return e ? e : (aos_err)rep->status;
}

aos_err aos_step_call(aos_run *r, const char *kind, const char *method, aos_step_policy pol,
                      const void *req, size_t len, aos_step_build_fn build, void *arg,
                      uint32_t timeout_ms, aos_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    char k_start[AOS_NAME_MAX + 1], k_end[AOS_NAME_MAX + 1];
    if (!kind || strlen(kind) > AOS_NAME_MAX - 6 || (!req && !build && len))
        return reply_fail(rep, AOS_ERR_USAGE, "a step needs a kind (at most %d bytes) and "
                          "its request", AOS_NAME_MAX - 6);
    snprintf(k_start, sizeof k_start, "%s.start", kind);
    snprintf(k_end, sizeof k_end, "%s.end", kind);
    if (r->finished)
        return reply_fail(rep, AOS_ERR_CONFLICT, "run %s has finished", r->id);
    const char *want = pol == AOS_STEP_AFTER ? kind : k_start;
    uint64_t at = r->pos + 1;   /* the step's first record, the key of its request id */
    if (r->open_start) {
        /* the same step again after a transient failure left its start open */
        if (pol != AOS_STEP_STARTED || (req && fingerprint(req, len) != r->open_fp))
            return reply_fail(rep, AOS_ERR_CONFLICT, "step %llu of run %s started and has no "
                              "outcome yet: only that step may come next",
                              (unsigned long long)r->open_start, r->id);
        at = r->open_start;
    } else if (r->pos < r->nlog) {
        const aos_step *s = &r->log[r->pos];
        if (strcmp(s->kind, want))
            return reply_fail(rep, AOS_ERR_CONFLICT, "the run diverged from its log: step "
                              "%llu is recorded as %s, not %s", (unsigned long long)s->step,
                              s->kind, want);
        if (pol == AOS_STEP_AFTER)
            return replay(r, s, rep);
        /* a start: the request must be the recorded one */
        uint64_t fp = req ? fingerprint(req, len) : 0, got = 0;
        if (s->len == 9 && s->data[0] == STEP_REC_VERSION)
            for (int i = 0; i < 8; i++)
                got |= (uint64_t)s->data[1 + i] << (8 * i);
        if (req && got != fp)
            return reply_fail(rep, AOS_ERR_CONFLICT, "the run diverged from its log: the "
                              "request of step %llu is not the recorded one",
                              (unsigned long long)s->step);
        r->pos++;
        if (r->pos < r->nlog) {
            const aos_step *end = &r->log[r->pos];
            if (strcmp(end->kind, k_end))
                return reply_fail(rep, AOS_ERR_CONFLICT, "the run diverged from its log: "
                                  "step %llu (%s) follows a start",
                                  (unsigned long long)end->step, end->kind);
            return replay(r, end, rep);
        }
        /* started, no outcome: sent again with the same id, which the server never runs
         * twice (below) */
        r->open_start = at;
        r->open_fp = got;
    }
    uint8_t *built = NULL;
    if (!req && build) {
        aos_err be = build(arg, &built, &len);
        if (be)
            return reply_fail(rep, be, "the request of step %llu could not be built",
                              (unsigned long long)at);
        req = built;
    }
    uint8_t rid[AOS_ID_LEN];
    aos_step_request_id(r->id, at, 0, rid);
    aos_err e;
    if (pol == AOS_STEP_STARTED && !r->open_start) {
        uint8_t d[9] = {STEP_REC_VERSION};
        uint64_t fp = fingerprint(req, len);
        for (int i = 0; i < 8; i++)
            d[1 + i] = (uint8_t)(fp >> (8 * i));
        if ((e = append(r, k_start, d, sizeof d, rep))) {
            free(built);
            return e;
        }
        r->open_start = at;
        r->open_fp = fp;
    }
    e = live_call(r, method, rid, req, len, timeout_ms, rep);
    /* CANCELLED is what the server kept for this id when its first caller went away
     * mid-call (a crash of the agent): an LLM call is asked again under a new id (the
     * cancelled one may have been paid in part); a tool's outcome is unknown */
    for (uint32_t salt = 1; pol == AOS_STEP_AFTER && e == AOS_ERR_CANCELLED && salt <= 3;
         salt++) {
        aos_reply_clear(rep);
        aos_step_request_id(r->id, at, salt, rid);
        e = live_call(r, method, rid, req, len, timeout_ms, rep);
    }
    free(built);
    if (transient(e) && !(pol == AOS_STEP_STARTED && e == AOS_ERR_CANCELLED))
        return e;   /* unrecorded: the next try is the same step with the same id */
    if (pol == AOS_STEP_STARTED && (e == AOS_ERR_CONFLICT || e == AOS_ERR_CANCELLED)) {
        /* aos-tool's word that this request started before and its outcome is gone */
        char msg[400];
        snprintf(msg, sizeof msg, "%.399s", rep->error);
        aos_reply_clear(rep);
        rep->status = AOS_ERR_INTERRUPTED;
        snprintf(rep->error, sizeof rep->error, "step %llu (%s) started and its outcome was "
                 "never recorded; it is not run again: %s", (unsigned long long)at, kind, msg);
    }
    e = record(r, pol == AOS_STEP_AFTER ? kind : k_end, rep);
    if (pol == AOS_STEP_STARTED && r->pos > at)
        r->open_start = 0;   /* the end is recorded */
    return e;
}

aos_err aos_step_do(aos_run *r, const char *kind, aos_step_fn fn, void *arg, aos_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    if (!kind || !*kind || strlen(kind) > AOS_NAME_MAX - 6 || !fn)
        return reply_fail(rep, AOS_ERR_USAGE, "a step needs a kind (at most %d bytes) and "
                          "its function", AOS_NAME_MAX - 6);
    if (r->finished)
        return reply_fail(rep, AOS_ERR_CONFLICT, "run %s has finished", r->id);
    if (r->open_start)
        return reply_fail(rep, AOS_ERR_CONFLICT, "step %llu of run %s started and has no "
                          "outcome yet: only that step may come next",
                          (unsigned long long)r->open_start, r->id);
    if (r->pos < r->nlog) {
        const aos_step *s = &r->log[r->pos];
        if (strcmp(s->kind, kind))
            return reply_fail(rep, AOS_ERR_CONFLICT, "the run diverged from its log: step "
                              "%llu is recorded as %s, not %s", (unsigned long long)s->step,
                              s->kind, kind);
        return replay(r, s, rep);
    }
    aos_err e = fn(arg, rep);
    if (e) {
        if (!rep->error[0])
            snprintf(rep->error, sizeof rep->error, "step %llu (%s) failed",
                     (unsigned long long)r->pos + 1, kind);
        rep->status = e;
        return e;
    }
    return record(r, kind, rep);
}

aos_err aos_step_llm(aos_run *r, aos_step_build_fn build, void *arg, uint32_t timeout_ms,
                     aos_reply *reply)
{
    return aos_step_call(r, "llm", "llm.chat", AOS_STEP_AFTER, NULL, 0, build, arg, timeout_ms,
                         reply);
}

aos_err aos_step_tool(aos_run *r, const void *req, size_t len, uint32_t timeout_ms,
                      aos_reply *reply)
{
    if (!req || !len) {
        memset(reply, 0, sizeof *reply);
        return reply_fail(reply, AOS_ERR_USAGE, "a tool step needs its request");
    }
    return aos_step_call(r, "tool", "tool.run", AOS_STEP_STARTED, req, len, NULL, NULL,
                         timeout_ms, reply);
}
