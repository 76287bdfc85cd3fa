/* Unit tests of the durable steps' replay logic over an in-memory step_io: a program of LLM
 * and tool steps crashed at every point of its run gives the uncrashed run's log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aos/step.h"
#include "step_io.h"

#define MAXE 256

typedef struct kv_ent { char key[128]; uint8_t v[1024]; size_t n; int used; } kv_ent;
typedef struct log_ent { char run[64]; uint64_t step; char kind[64]; uint8_t d[1024]; size_t n; } log_ent;
typedef struct done_ent { uint8_t rid[AOS_ID_LEN]; char method[32]; uint8_t rep[256]; size_t n; } done_ent;

typedef struct fake {
    kv_ent kv[MAXE];
    log_ent log[MAXE];
    size_t nlog;
    done_ent done[MAXE];
    size_t ndone;
    long ops_left;        /* -1: never crash */
    int crashed;
    int tool_restarted;
    int before;           /* the crash comes before the op (else after it, answer lost) */
    int cancel_next;      /* the next call runs, and answers CANCELLED (its caller died) */   /* the tool server lost its kept replies (a restart) */
    unsigned paid, tool_runs, builds;
    uint64_t now;
} fake;

static int crash_point(fake *f)
{
    if (f->crashed)
        return 2;         /* nothing happens any more */
    if (f->ops_left > 0 && --f->ops_left == 0) {
        f->crashed = 1;
        return f->before ? 2 : 1;   /* 1: this op happens, its answer is lost */
    }
    return 0;
}

static kv_ent *kv_find(fake *f, const char *k)
{
    for (int i = 0; i < MAXE; i++)
        if (f->kv[i].used && !strcmp(f->kv[i].key, k))
            return &f->kv[i];
    return NULL;
}

static aos_err f_call(void *arg, const aos_call_opts *o, const char *m, const void *req,
                      size_t len, aos_reply *r)
{
    fake *f = arg;
    memset(r, 0, sizeof *r);
    int cp = crash_point(f);
    if (cp == 2)
        return r->status = AOS_ERR_UNAVAILABLE;
    assert_non_null(o->request_id);
    done_ent *d = NULL;
    for (size_t i = 0; i < f->ndone; i++)
        if (!memcmp(f->done[i].rid, o->request_id, AOS_ID_LEN) && !strcmp(f->done[i].method, m))
            d = &f->done[i];
    if (d && !strcmp(m, "tool.run") && f->tool_restarted) {
        snprintf(r->error, sizeof r->error, "this request started already");
        return r->status = AOS_ERR_CONFLICT;
    }
    if (!d) {
        assert_true(f->ndone < MAXE);
        d = &f->done[f->ndone++];
        memcpy(d->rid, o->request_id, AOS_ID_LEN);
        snprintf(d->method, sizeof d->method, "%s", m);
        d->n = (size_t)snprintf((char *)d->rep, sizeof d->rep, "%s of %.*s",
                                strcmp(m, "llm.chat") ? "output" : "reply", (int)len,
                                (const char *)req);
        if (!strcmp(m, "llm.chat"))
            f->paid++;
        else
            f->tool_runs++;
    }
    if (cp == 1)
        return r->status = AOS_ERR_UNAVAILABLE;
    if (f->cancel_next) {
        f->cancel_next = 0;
        d->n = 0;   /* what the server kept for this id: the cancellation */
        snprintf(r->error, sizeof r->error, "cancelled: the caller went away");
        return r->status = AOS_ERR_CANCELLED;
    }
    if (!d->n) {
        snprintf(r->error, sizeof r->error, "cancelled: the caller went away");
        return r->status = AOS_ERR_CANCELLED;
    }
    r->payload = malloc(d->n + 1);
    memcpy(r->payload, d->rep, d->n);
    r->payload_len = d->n;
    return AOS_OK;
}

static aos_err f_kv_get(void *arg, const aos_call_opts *o, const char *key, uint8_t **v,
                        size_t *n, char *why, size_t whylen)
{
    (void)o, (void)why, (void)whylen;
    fake *f = arg;
    if (crash_point(f))   /* a read that happens but whose answer is lost is no change */
        return AOS_ERR_UNAVAILABLE;
    kv_ent *e = kv_find(f, key);
    if (!e)
        return AOS_ERR_NOT_FOUND;
    *v = malloc(e->n + 1);
    memcpy(*v, e->v, e->n);
    (*v)[e->n] = 0;
    *n = e->n;
    return AOS_OK;
}

static aos_err f_kv_put(void *arg, const aos_call_opts *o, const char *key, const void *v,
                        size_t n, int create_only, char *why, size_t whylen)
{
    (void)o, (void)why, (void)whylen;
    fake *f = arg;
    int cp = crash_point(f);
    if (cp == 2)
        return AOS_ERR_UNAVAILABLE;
    kv_ent *e = kv_find(f, key);
    if (e && create_only)
        return cp ? AOS_ERR_UNAVAILABLE : AOS_ERR_CONFLICT;
    for (int i = 0; !e && i < MAXE; i++)
        if (!f->kv[i].used)
            e = &f->kv[i];
    assert_non_null(e);
    assert_true(n <= sizeof e->v);
    e->used = 1;
    snprintf(e->key, sizeof e->key, "%s", key);
    memcpy(e->v, v, n);
    e->n = n;
    return cp ? AOS_ERR_UNAVAILABLE : AOS_OK;
}

static aos_err f_kv_delete(void *arg, const aos_call_opts *o, const char *key, char *why,
                           size_t whylen)
{
    (void)o, (void)why, (void)whylen;
    fake *f = arg;
    int cp = crash_point(f);
    if (cp == 2)
        return AOS_ERR_UNAVAILABLE;
    kv_ent *e = kv_find(f, key);
    if (e)
        e->used = 0;
    return cp ? AOS_ERR_UNAVAILABLE : e ? AOS_OK : AOS_ERR_NOT_FOUND;
}

static aos_err f_log_read(void *arg, const aos_call_opts *o, const char *run, uint64_t from,
                          aos_step_page **out, char *why, size_t whylen)
{
    (void)o, (void)why, (void)whylen;
    fake *f = arg;
    if (crash_point(f))
        return AOS_ERR_UNAVAILABLE;
    aos_step_page *p = calloc(1, sizeof *p);
    p->steps = calloc(MAXE, sizeof *p->steps);
    for (size_t i = 0; i < f->nlog; i++) {
        if (strcmp(f->log[i].run, run))
            continue;
        p->last_step = f->log[i].step;
        /* two per page: the reader must ask again */
        if (f->log[i].step < from || p->n == 2)
            continue;
        aos_step *s = &p->steps[p->n++];
        s->step = f->log[i].step;
        s->kind = strdup(f->log[i].kind);
        s->data = malloc(f->log[i].n + 1);
        memcpy(s->data, f->log[i].d, f->log[i].n);
        s->len = f->log[i].n;
    }
    *out = p;
    return AOS_OK;
}

static aos_err f_log_append(void *arg, const aos_call_opts *o, const char *run, uint64_t step,
                            const char *kind, const void *d, size_t n, char *why, size_t whylen)
{
    (void)o, (void)why, (void)whylen;
    fake *f = arg;
    int cp = crash_point(f);
    if (cp == 2)
        return AOS_ERR_UNAVAILABLE;
    uint64_t last = 0;
    for (size_t i = 0; i < f->nlog; i++)
        if (!strcmp(f->log[i].run, run)) {
            last = f->log[i].step;
            if (last == step)   /* the same again is success, as in aos-storage */
                return cp ? AOS_ERR_UNAVAILABLE
                          : (f->log[i].n == n && !memcmp(f->log[i].d, d, n) &&
                             !strcmp(f->log[i].kind, kind)) ? AOS_OK : AOS_ERR_CONFLICT;
        }
    if (step != last + 1)
        return AOS_ERR_CONFLICT;
    assert_true(f->nlog < MAXE && n <= sizeof f->log[0].d);
    log_ent *e = &f->log[f->nlog++];
    snprintf(e->run, sizeof e->run, "%s", run);
    e->step = step;
    snprintf(e->kind, sizeof e->kind, "%s", kind);
    memcpy(e->d, d, n);
    e->n = n;
    return cp ? AOS_ERR_UNAVAILABLE : AOS_OK;
}

static uint64_t f_now(void *arg)
{
    return ++((fake *)arg)->now;
}
static uint64_t f_wall(void *arg)
{
    return 1700000000000ull + ((fake *)arg)->now;
}
static void f_sleep(void *arg, uint32_t ms)
{
    ((fake *)arg)->now += ms;
}

static step_io io_of(fake *f)
{
    step_io io = {f, f_call, f_kv_get, f_kv_put, f_kv_delete, f_log_read, f_log_append,
                  f_now, f_wall, f_sleep};
    return io;
}

typedef struct bctx { fake *f; int i; } bctx;

static aos_err build(void *arg, uint8_t **buf, size_t *len)
{
    bctx *b = arg;
    b->f->builds++;
    char t[32];
    *len = (size_t)snprintf(t, sizeof t, "question %d", b->i);
    *buf = (uint8_t *)strdup(t);
    return AOS_OK;
}

#define NSTEPS 6

/* The program: LLM and tool steps in turn; each reply goes into its transcript. Returns 0
 * when it finished the run, -1 when it "crashed" (an error it cannot get past). */
static int program_f(fake *f, int fresh, char transcript[NSTEPS][64], int *interrupted)
{
    step_io io = io_of(f);
    aos_run *r;
    char why[256];
    if (step_run_open_io(&io, NULL, fresh, &r, NULL, why, sizeof why))
        return -1;
    if (aos_run_state_of(r) != AOS_RUN_RUNNING) {
        aos_run_close(r);
        return 1;   /* finished before the crash */
    }
    for (int i = 0; i < NSTEPS; i++) {
        aos_reply rep;
        aos_err e;
        if (i % 2 == 0) {
            bctx b = {f, i};
            e = aos_step_llm(r, build, &b, 5000, &rep);
        } else {
            char t[32];
            int n = snprintf(t, sizeof t, "tool %d", i);
            e = aos_step_tool(r, t, (size_t)n, 5000, &rep);
        }
        if (e == AOS_ERR_INTERRUPTED && interrupted) {
            (*interrupted)++;
            snprintf(transcript[i], 64, "interrupted");
        } else if (e) {
            aos_reply_clear(&rep);
            aos_run_close(r);
            return -1;
        } else {
            snprintf(transcript[i], 64, "%.*s", (int)rep.payload_len, (const char *)rep.payload);
        }
        aos_reply_clear(&rep);
    }
    int rc = aos_run_finish(r, AOS_RUN_DONE, "all steps done", why, sizeof why) ? -1 : 0;
    aos_run_close(r);
    return rc;
}

static int program(fake *f, char transcript[NSTEPS][64], int *interrupted)
{
    return program_f(f, 0, transcript, interrupted);
}

static fake *fresh(void)
{
    fake *f = calloc(1, sizeof *f);
    f->ops_left = -1;
    return f;
}

/* What must be the same in every run: kinds and data of the log, the run record's state. */
static void log_shape(const fake *f, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < f->nlog && k < cap; i++) {
        k += (size_t)snprintf(out + k, cap - k, "%llu %s %zu|", (unsigned long long)f->log[i].step,
                              f->log[i].kind, f->log[i].n);
    }
}

static void test_uncrashed(void **st)
{
    (void)st;
    fake *f = fresh();
    char t[NSTEPS][64];
    assert_int_equal(program(f, t, NULL), 0);
    assert_string_equal(t[0], "reply of question 0");
    assert_string_equal(t[1], "output of tool 1");
    assert_int_equal(f->paid, 3);
    assert_int_equal(f->tool_runs, 3);
    assert_int_equal(f->nlog, 9);   /* 3 llm + 3 x (start, end) */
    assert_non_null(kv_find(f, AOS_RUN_KEY_CURRENT));
    /* started again: the run is finished, nothing is done twice */
    assert_int_equal(program(f, t, NULL), 1);
    assert_int_equal(f->paid, 3);
    /* a fresh start is a new run */
    assert_int_equal(program_f(f, 1, t, NULL), 0);
    assert_int_equal(f->paid, 6);
    assert_int_equal(f->nlog, 18);
    free(f);
}

/* Crash after every single io operation in turn (the operation done, its answer lost),
 * restart, finish: the same transcript, the same log, each call paid or run once. */
static void test_crash_everywhere(void **st)
{
    (void)st;
    fake *base = fresh();
    char want[NSTEPS][64], wshape[2048] = "";
    assert_int_equal(program(base, want, NULL), 0);
    log_shape(base, wshape, sizeof wshape);
    int crashes = 0;
    for (long k = 1; k < 400; k++) {
        fake *f = fresh();
        f->ops_left = (k + 1) / 2;
        f->before = k % 2;
        char t[NSTEPS][64];
        int rc = program(f, t, NULL);
        if (rc == 0 && !f->crashed) {   /* k is past the run's last operation */
            int was_before = f->before;
            free(f);
            if (was_before)
                break;
            continue;
        }
        crashes++;
        f->crashed = 0;
        f->ops_left = -1;
        unsigned builds_before = f->builds;
        memset(t, 0, sizeof t);
        int again = program(f, t, NULL);
        if (again < 0)
            fail_msg("crash at op %ld: the restarted run did not finish", k);
        if (again == 1)   /* the crash came during its finish: the first try's replies */
            memcpy(t, want, sizeof t);
        for (int i = 0; i < NSTEPS; i++)
            if (strcmp(t[i], want[i]))
                fail_msg("crash at op %ld: step %d gave '%s', want '%s'", k, i, t[i], want[i]);
        char shape[2048] = "";
        log_shape(f, shape, sizeof shape);
        if (strcmp(shape, wshape))
            fail_msg("crash at op %ld: log %s, want %s", k, shape, wshape);
        assert_int_equal(f->paid, 3);
        assert_int_equal(f->tool_runs, 3);
        /* a replayed LLM step builds no request */
        assert_true(f->builds - builds_before <= 3);
        kv_ent *cur = kv_find(f, AOS_RUN_KEY_CURRENT);
        assert_non_null(cur);
        char key[128];
        snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%.*s", (int)cur->n, (const char *)cur->v);
        kv_ent *rec = kv_find(f, key);
        assert_non_null(rec);
        assert_non_null(memmem(rec->v, rec->n, "\"state\":\"done\"", 14));
        assert_non_null(memmem(rec->v, rec->n, "\"steps\":9,", 10));
        free(f);
    }
    /* 19 operations (kv 3, LLM 3 x 2, tools 3 x 3, the finish), each crashed before and
     * after */
    assert_int_equal(crashes, 38);
    free(base);
}

/* The tool server restarted too (its kept replies gone): a tool that ran but whose end was
 * never recorded comes back INTERRUPTED, recorded, and is not run again. */
static void test_interrupted(void **st)
{
    (void)st;
    int seen = 0;
    for (long k = 1; k < 200; k++) {
        fake *f = fresh();
        f->ops_left = k;
        char t[NSTEPS][64];
        if (program(f, t, NULL) == 0 && !f->crashed) {
            free(f);
            break;
        }
        /* the last op done was a tool run whose answer was lost: a crash mid-tool */
        int mid_tool = f->nlog && !strcmp(f->log[f->nlog - 1].kind, "tool.start") &&
                       f->ndone && !strcmp(f->done[f->ndone - 1].method, "tool.run") &&
                       f->tool_runs == (f->nlog + 1) / 3;
        f->crashed = 0;
        f->ops_left = -1;
        f->tool_restarted = 1;
        int intr = 0;
        unsigned runs = f->tool_runs;
        memset(t, 0, sizeof t);
        int again = program(f, t, &intr);
        assert_true(again >= 0);
        if (mid_tool) {
            seen++;
            assert_int_equal(intr, 1);
            /* it ran once before the crash; the other tools once each after */
            assert_true(runs >= 1);
            assert_int_equal(f->tool_runs, 3);
            /* the replay of the interrupted run says interrupted again, from the log */
            int found = 0;
            for (size_t i = 0; i < f->nlog; i++)
                if (!strcmp(f->log[i].kind, "tool.end")) {
                    aos_reply r;
                    assert_int_equal(step_outcome_decode(f->log[i].d, f->log[i].n, &r), 0);
                    found += r.status == AOS_ERR_INTERRUPTED;
                    aos_reply_clear(&r);
                }
            assert_int_equal(found, 1);
        }
        assert_true(f->tool_runs <= 3);   /* never a second run of one request */
        free(f);
    }
    assert_true(seen >= 3);
}

/* A program that asks for something else than the log holds is told so, not replayed. */
static void test_divergence(void **st)
{
    (void)st;
    fake *f = fresh();
    f->ops_left = 12;   /* mid-run */
    char t[NSTEPS][64];
    assert_int_equal(program(f, t, NULL), -1);
    f->crashed = 0;
    f->ops_left = -1;
    step_io io = io_of(f);
    aos_run *r;
    int resumed;
    assert_int_equal(step_run_open_io(&io, NULL, 0, &r, &resumed, NULL, 0), AOS_OK);
    assert_int_equal(resumed, 1);
    assert_true(aos_run_replaying(r));
    aos_reply rep;
    /* step 1 is an LLM step: a tool step there is a divergence */
    assert_int_equal(aos_step_tool(r, "x", 1, 1000, &rep), AOS_ERR_CONFLICT);
    assert_non_null(strstr(rep.error, "diverged"));
    aos_reply_clear(&rep);
    bctx b = {f, 0};
    assert_int_equal(aos_step_llm(r, build, &b, 1000, &rep), AOS_OK);
    aos_reply_clear(&rep);
    /* step 2 is "tool 1": another request is a divergence */
    assert_int_equal(aos_step_tool(r, "tool 9", 6, 1000, &rep), AOS_ERR_CONFLICT);
    aos_reply_clear(&rep);
    aos_run_close(r);
    free(f);
}

static void test_request_ids_and_states(void **st)
{
    (void)st;
    uint8_t a[AOS_ID_LEN], b[AOS_ID_LEN], c[AOS_ID_LEN];
    aos_step_request_id("r-1", 1, 0, a);
    aos_step_request_id("r-1", 1, 0, b);
    assert_memory_equal(a, b, AOS_ID_LEN);
    aos_step_request_id("r-1", 2, 0, c);
    assert_memory_not_equal(a, c, AOS_ID_LEN);
    aos_step_request_id("r-2", 1, 0, c);
    assert_memory_not_equal(a, c, AOS_ID_LEN);
    aos_step_request_id("r-1", 1, 1, c);
    assert_memory_not_equal(a, c, AOS_ID_LEN);
    for (int s = AOS_RUN_RUNNING; s <= AOS_RUN_INTERRUPTED; s++)
        assert_int_equal(aos_run_state_parse(aos_run_state_name((aos_run_state)s)), s);
    assert_null(aos_run_state_name((aos_run_state)9));
    assert_int_equal(aos_run_state_parse("nope"), -1);
    /* a bad record is refused, not trusted */
    aos_reply r;
    uint8_t bad[] = {1, 0, 0, 0, 99, 0, 0};
    assert_int_equal(step_outcome_decode(bad, sizeof bad, &r), -1);
    uint8_t shortrec[] = {1, 0, 0, 0, 0, 0, 9, 'a'};
    assert_int_equal(step_outcome_decode(shortrec, sizeof shortrec, &r), -1);
    uint8_t ok[] = {1, 0, 0, 0, 0, 0, 1, 'e', 'p'};
    assert_int_equal(step_outcome_decode(ok, sizeof ok, &r), 0);
    assert_string_equal(r.error, "e");
    assert_int_equal(r.payload_len, 1);
    aos_reply_clear(&r);
}

/* A call the server kept as CANCELLED (its first caller died mid-call): an LLM step asks
 * again under a new request id; a tool step's outcome is unknown, so INTERRUPTED. */
static void test_cancelled(void **st)
{
    (void)st;
    fake *f = fresh();
    step_io io = io_of(f);
    aos_run *r;
    assert_int_equal(step_run_open_io(&io, NULL, 0, &r, NULL, NULL, 0), AOS_OK);
    aos_reply rep;
    bctx b = {f, 0};
    f->cancel_next = 1;
    assert_int_equal(aos_step_llm(r, build, &b, 5000, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, 19);
    assert_memory_equal(rep.payload, "reply of question 0", 19);
    assert_int_equal(f->paid, 2);   /* the cancelled call, and the one asked again */
    aos_reply_clear(&rep);
    f->cancel_next = 1;
    assert_int_equal(aos_step_tool(r, "tool 1", 6, 5000, &rep), AOS_ERR_INTERRUPTED);
    assert_non_null(strstr(rep.error, "not run again"));
    aos_reply_clear(&rep);
    assert_int_equal(f->tool_runs, 1);
    aos_run_close(r);
    /* replayed: the same outcomes from the log, nothing called */
    assert_int_equal(step_run_open_io(&io, NULL, 0, &r, NULL, NULL, 0), AOS_OK);
    assert_int_equal(aos_step_llm(r, build, &b, 5000, &rep), AOS_OK);
    aos_reply_clear(&rep);
    assert_int_equal(aos_step_tool(r, "tool 1", 6, 5000, &rep), AOS_ERR_INTERRUPTED);
    aos_reply_clear(&rep);
    assert_int_equal(f->paid, 2);
    assert_int_equal(f->tool_runs, 1);
    aos_run_close(r);
    free(f);
}

/* A step whose outcome a function makes (aos_step_do): recorded once, replayed without
 * calling the function, a failure of the function unrecorded, a crash before the record
 * calls it again. */
typedef struct doctx { unsigned calls; aos_err fail; } doctx;

static aos_err do_fn(void *arg, aos_reply *rep)
{
    doctx *d = arg;
    d->calls++;
    if (d->fail)
        return d->fail;
    rep->payload = malloc(8);
    memcpy(rep->payload, "got mail", 8);
    rep->payload_len = 8;
    rep->status = d->calls == 2 ? AOS_OK : AOS_ERR_TIMEOUT;   /* an outcome, recorded too */
    return AOS_OK;
}

static void test_do(void **st)
{
    (void)st;
    fake *f = fresh();
    step_io io = io_of(f);
    aos_run *r;
    assert_int_equal(step_run_open_io(&io, NULL, 0, &r, NULL, NULL, 0), AOS_OK);
    doctx d = {0, AOS_ERR_UNAVAILABLE};
    aos_reply rep;
    assert_int_equal(aos_step_do(r, "msg.recv", do_fn, &d, &rep), AOS_ERR_UNAVAILABLE);
    assert_int_equal(aos_run_position(r), 0);   /* unrecorded */
    aos_reply_clear(&rep);
    d.fail = AOS_OK;
    assert_int_equal(aos_step_do(r, "msg.recv", do_fn, &d, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, 8);
    aos_reply_clear(&rep);
    assert_int_equal(aos_step_do(r, "msg.recv", do_fn, &d, &rep), AOS_ERR_TIMEOUT);
    aos_reply_clear(&rep);
    assert_int_equal(d.calls, 3);
    assert_int_equal(aos_run_position(r), 2);
    assert_int_equal(aos_step_do(r, "", do_fn, &d, &rep), AOS_ERR_USAGE);
    aos_reply_clear(&rep);
    aos_run_close(r);
    /* replayed: both outcomes from the log, the function not called */
    assert_int_equal(step_run_open_io(&io, NULL, 0, &r, NULL, NULL, 0), AOS_OK);
    assert_true(aos_run_replaying(r));
    /* another kind at a recorded step is a divergence */
    assert_int_equal(aos_step_do(r, "other", do_fn, &d, &rep), AOS_ERR_CONFLICT);
    aos_reply_clear(&rep);
    assert_int_equal(aos_step_do(r, "msg.recv", do_fn, &d, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, 8);
    assert_memory_equal(rep.payload, "got mail", 8);
    aos_reply_clear(&rep);
    assert_int_equal(aos_step_do(r, "msg.recv", do_fn, &d, &rep), AOS_ERR_TIMEOUT);
    aos_reply_clear(&rep);
    assert_int_equal(d.calls, 3);
    assert_false(aos_run_replaying(r));
    /* a crash at the record: the function is called again by the next incarnation */
    f->ops_left = 1;
    f->before = 1;
    assert_int_not_equal(aos_step_do(r, "msg.recv", do_fn, &d, &rep), AOS_OK);
    aos_reply_clear(&rep);
    assert_int_equal(d.calls, 4);
    aos_run_close(r);
    f->crashed = 0;
    f->ops_left = -1;
    assert_int_equal(step_run_open_io(&io, NULL, 0, &r, NULL, NULL, 0), AOS_OK);
    for (int i = 0; i < 2; i++) {
        aos_step_do(r, "msg.recv", do_fn, &d, &rep);
        aos_reply_clear(&rep);
    }
    assert_int_equal(d.calls, 4);   /* replayed */
    aos_step_do(r, "msg.recv", do_fn, &d, &rep);
    aos_reply_clear(&rep);
    assert_int_equal(d.calls, 5);   /* the step lost at the crash, made again */
    assert_int_equal(aos_run_position(r), 3);
    aos_run_close(r);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uncrashed),
        cmocka_unit_test(test_crash_everywhere),
        cmocka_unit_test(test_interrupted),
        cmocka_unit_test(test_divergence),
        cmocka_unit_test(test_request_ids_and_states),
        cmocka_unit_test(test_cancelled),
        cmocka_unit_test(test_do),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
