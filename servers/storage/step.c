/* The step log: per agent and run, the ordered steps (LLM replies, tool results) a durable
 * agent replays after a crash. Append is idempotent by (agent, run, step), without gaps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "storage.pb-c.h"

/* Appends to one run go one at a time: "is this the next step" must not race. */
static const db_stmt st_lock = {
    "stg_step_lock", "SELECT pg_advisory_xact_lock(hashtext($1 || chr(9) || $2), 7172)", 2};
static const db_stmt st_same = {
    "stg_step_same",
    "SELECT kind = $4 AND data = $5 FROM storage.step "
    "WHERE agent = $1 AND run = $2 AND step = $3", 5};
static const db_stmt st_last = {
    "stg_step_last",
    "SELECT coalesce(max(step), 0)::bigint FROM storage.step WHERE agent = $1 AND run = $2", 2};
static const db_stmt st_append = {
    "stg_step_append",
    "INSERT INTO storage.step (agent, run, step, kind, data) VALUES ($1, $2, $3, $4, $5)", 5};
static const db_stmt st_read = {
    "stg_step_read",
    "SELECT step, kind, data, floor(extract(epoch FROM created_at) * 1000)::bigint "
    "FROM storage.step WHERE agent = $1 AND run = $2 AND step >= $3 ORDER BY step LIMIT $4",
    4};

static const db_stmt st_drop = {
    "stg_step_drop", "DELETE FROM storage.step WHERE agent = $1 AND run = $2", 2};

typedef struct append_arg {
    const Aos__Storage__StepAppendRequest *rq;
    const char *run, *kind;
} append_arg;

static aos_err append_tx(stg_call *c, void *arg)
{
    append_arg *a = arg;
    PGresult *r;
    aos_err e;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->run);
    if ((e = stg_exec_void(c, &st_lock, &p)))
        return e;
    dp_i64(&p, (int64_t)a->rq->step);
    dp_text(&p, a->kind);
    dp_bytes(&p, a->rq->data.data, a->rq->data.len);
    if ((e = stg_exec(c, &st_same, &p, &r)))
        return e;
    Aos__Storage__StepAppendReply rp = AOS__STORAGE__STEP_APPEND_REPLY__INIT;
    if (PQntuples(r) == 1) {
        int same = db_bool(r, 0, 0);
        PQclear(r);
        if (!same)
            return stg_fail(c, AOS_ERR_CONFLICT, "step %llu of run %s already holds different "
                            "content", (unsigned long long)a->rq->step, a->run);
        rp.existed = 1;
        return stg_reply(c, &rp.base);
    }
    PQclear(r);
    db_params q = p;
    q.n = 2;
    int64_t last;
    if ((e = stg_exec_i64(c, &st_last, &q, &last)))
        return e;
    if (a->rq->step != (uint64_t)last + 1)
        return stg_fail(c, AOS_ERR_CONFLICT, "step %llu would leave a gap: run %s has %llu "
                        "steps, the next is %llu", (unsigned long long)a->rq->step, a->run,
                        (unsigned long long)last, (unsigned long long)last + 1);
    if ((e = stg_exec_void(c, &st_append, &p)))
        return e;
    return stg_reply(c, &rp.base);
}

aos_err op_step_append(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], run[AOS_NAME_MAX + 1], kind[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__StepAppendRequest *rq =
        stg_decode(c, &aos__storage__step_append_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_name(rq->run, "run", NULL, run, why, sizeof why)) ||
        (e = stg_valid_name(rq->kind, "step kind", NULL, kind, why, sizeof why)))
        e = stg_fail(c, e, "%s", why);
    else if (rq->step < 1 || rq->step > INT64_MAX)
        e = stg_fail(c, AOS_ERR_USAGE, "steps count from 1");
    else if (rq->data.len > c->st->cfg.value_max)
        e = stg_fail(c, AOS_ERR_TOO_BIG, "step is %zu bytes, at most %zu allowed "
                     "(AOS_STORAGE_VALUE_MAX)", rq->data.len, c->st->cfg.value_max);
    else {
        append_arg a = {rq, run, kind};
        e = stg_tx(c, append_tx, &a);
    }
    stg_free(rq);
    return e;
}

aos_err op_step_read(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], run[AOS_NAME_MAX + 1];
    aos_err e;
    PGresult *r = NULL, *l = NULL;
    Aos__Storage__Step *steps = NULL, **sp = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__StepReadRequest *rq =
        stg_decode(c, &aos__storage__step_read_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    uint32_t limit;
    if ((e = stg_valid_name(rq->run, "run", NULL, run, why, sizeof why)) ||
        (e = stg_valid_limit(rq->limit, AOS_LIST_DEFAULT, AOS_LIST_MAX, "limit", &limit, why,
                             sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if (rq->from_step > INT64_MAX) {
        e = stg_fail(c, AOS_ERR_USAGE, "from_step is out of range");
        goto out;
    }
    if ((e = stg_check_deadline(c)))
        goto out;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, run);
    if ((e = stg_exec(c, &st_last, &p, &l)))
        goto out;
    dp_i64(&p, (int64_t)rq->from_step);
    dp_i64(&p, limit);
    if ((e = stg_exec(c, &st_read, &p, &r)))
        goto out;
    int rows = PQntuples(r), n = 0;
    steps = calloc((size_t)rows + 1, sizeof *steps);
    sp = calloc((size_t)rows + 1, sizeof *sp);
    if (!steps || !sp) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t bytes = 0;
    for (int i = 0; i < rows; i++) {
        size_t dl;
        const uint8_t *d = db_bytes(r, i, 2, &dl);
        if (n > 0 && bytes + dl > STG_PAGE_BYTES)
            break;   /* the caller asks again from the next step */
        aos__storage__step__init(&steps[n]);
        steps[n].step = (uint64_t)db_i64(r, i, 0);
        steps[n].kind.data = (uint8_t *)db_bytes(r, i, 1, &steps[n].kind.len);
        steps[n].data.data = (uint8_t *)d;
        steps[n].data.len = dl;
        steps[n].created_ms = (uint64_t)db_i64(r, i, 3);
        bytes += dl;
        sp[n] = &steps[n];
        n++;
    }
    Aos__Storage__StepReadReply rp = AOS__STORAGE__STEP_READ_REPLY__INIT;
    rp.n_steps = (size_t)n;
    rp.steps = sp;
    rp.last_step = (uint64_t)db_i64(l, 0, 0);
    e = stg_reply(c, &rp.base);
out:
    free(steps);
    free(sp);
    PQclear(r);
    PQclear(l);
    stg_free(rq);
    return e;
}

aos_err op_step_drop(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], run[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__StepDropRequest *rq =
        stg_decode(c, &aos__storage__step_drop_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_valid_name(rq->run, "run", NULL, run, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
    } else {
        db_params p;
        dp_init(&p);
        dp_text(&p, c->agent);
        dp_text(&p, run);
        PGresult *r = NULL;
        if ((e = stg_exec(c, &st_drop, &p, &r)) == AOS_OK) {
            Aos__Storage__StepDropReply rp = AOS__STORAGE__STEP_DROP_REPLY__INIT;
            rp.deleted = strtoull(PQcmdTuples(r), NULL, 10);
            e = stg_reply(c, &rp.base);
        }
        PQclear(r);
    }
    stg_free(rq);
    return e;
}
