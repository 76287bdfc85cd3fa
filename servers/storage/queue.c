/* Durable FIFO queues and mailboxes: send, receive with FOR UPDATE SKIP LOCKED and a
 * visibility timeout, ack, nack with retry counting, dead-lettering to "<queue>.dead",
 * and receivers that wait on LISTEN/NOTIFY instead of polling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notify.h"
#include "ops.h"
#include "storage.pb-c.h"

#define VIS_DEFAULT_MS 30000u
#define VIS_MAX_MS (12u * 3600 * 1000)
#define DELAY_MAX_MS (UINT64_C(7) * 24 * 3600 * 1000)
#define DEAD_SUFFIX ".dead"
_Static_assert(sizeof DEAD_SUFFIX - 1 < AOS_NAME_MAX, "a queue has room for its dead letters' name");
/* receipts are PostgreSQL uuids, handed to clients as they are */
_Static_assert(AOS_RECEIPT_LEN == 16, "a receipt is a uuid's 16 bytes");
#define INBOX "inbox"

static const db_stmt st_send = {
    "stg_queue_send",
    "WITH m AS (INSERT INTO storage.queue_msg (agent, queue, body, from_agent, max_tries, "
    "  visible_at) VALUES ($1, $2, $3, $4, $5, now() + $6::bigint * interval '1 ms') "
    "  RETURNING id) "
    "SELECT id, pg_notify('" STG_NOTIFY_CHANNEL "', $1 || chr(9) || $2) FROM m", 6};
/* Candidates in FIFO order, skipping what other receivers hold; those delivered max_tries
 * times already go to the dead-letter queue ($5: this queue has one), the rest are
 * delivered with a fresh receipt and hidden for the visibility timeout. */
static const db_stmt st_recv = {
    "stg_queue_recv",
    "WITH cand AS (SELECT id, tries >= max_tries AND $5 AS dead FROM storage.queue_msg "
    "  WHERE agent = $1 AND queue = $2 AND visible_at <= now() "
    "  ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED), "
    "dl AS (UPDATE storage.queue_msg q SET queue = q.queue || '" DEAD_SUFFIX "', tries = 0, "
    "  visible_at = now(), receipt = NULL FROM cand WHERE q.id = cand.id AND cand.dead "
    "  RETURNING q.id), "
    "got AS (UPDATE storage.queue_msg q SET tries = q.tries + 1, "
    "  visible_at = now() + $4::bigint * interval '1 ms', receipt = gen_random_uuid() "
    "  FROM cand WHERE q.id = cand.id AND NOT cand.dead "
    "  RETURNING q.id, q.body, q.tries, q.receipt, q.from_agent, q.enqueued_at) "
    "SELECT g.id, g.body, g.tries, g.receipt, g.from_agent, "
    "  floor(extract(epoch FROM g.enqueued_at) * 1000)::bigint, (SELECT count(*) FROM dl) "
    "FROM (SELECT 1) one LEFT JOIN got g ON true ORDER BY g.id", 5};
/* When a receive found only messages to dead-letter, that move is committed on its own
 * (it is the same whoever does it), and the receive looks again. */
static const db_stmt st_bury = {
    "stg_queue_bury",
    "UPDATE storage.queue_msg q SET queue = q.queue || '" DEAD_SUFFIX "', tries = 0, "
    "  visible_at = now(), receipt = NULL WHERE q.id IN (SELECT id FROM storage.queue_msg "
    "  WHERE agent = $1 AND queue = $2 AND visible_at <= now() AND tries >= max_tries "
    "  ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)", 2};
/* Deliveries that did not fit in the reply go back, as if never taken. */
static const db_stmt st_unrecv = {
    "stg_queue_unrecv",
    "UPDATE storage.queue_msg SET tries = tries - 1, visible_at = now(), receipt = NULL "
    "WHERE id = ANY ($1::bigint[])", 1};
/* When the queue will next have something visible: how long an empty receive waits at
 * most before looking again (a message whose visibility runs out sends no NOTIFY). */
static const db_stmt st_next = {
    "stg_queue_next",
    "SELECT greatest(0, ceil(extract(epoch FROM min(visible_at) - now()) * 1000))::bigint "
    "FROM storage.queue_msg WHERE agent = $1 AND queue = $2 "
    "HAVING min(visible_at) IS NOT NULL", 2}; /* greatest() ignores a NULL: no row, not 0 */
static const db_stmt st_ack = {
    "stg_queue_ack",
    "DELETE FROM storage.queue_msg WHERE agent = $1 AND queue = $2 AND id = $3 "
    "AND receipt = $4", 4};
static const db_stmt st_nack = {
    "stg_queue_nack",
    "WITH m AS (UPDATE storage.queue_msg SET "
    "  queue = CASE WHEN tries >= max_tries AND $6 THEN queue || '" DEAD_SUFFIX "' "
    "    ELSE queue END, "
    "  visible_at = CASE WHEN tries >= max_tries AND $6 THEN now() "
    "    ELSE now() + $5::bigint * interval '1 ms' END, "
    "  tries = CASE WHEN tries >= max_tries AND $6 THEN 0 ELSE tries END, receipt = NULL "
    "  WHERE agent = $1 AND queue = $2 AND id = $3 AND receipt = $4 RETURNING queue) "
    "SELECT queue <> $2, pg_notify('" STG_NOTIFY_CHANNEL "', $1 || chr(9) || queue) FROM m",
    6};
static const db_stmt st_list = {
    "stg_queue_list",
    "SELECT queue, count(*) FILTER (WHERE visible_at <= now()), "
    "  count(*) FILTER (WHERE visible_at > now() AND receipt IS NOT NULL), "
    "  count(*) FILTER (WHERE visible_at > now() AND receipt IS NULL) "
    "FROM storage.queue_msg WHERE agent = $1 GROUP BY queue ORDER BY queue LIMIT 1000", 1};

/* Oldest first: the queue, then (with $3) its dead letters; $4 rows at most. */
static const db_stmt st_peek = {
    "stg_queue_peek",
    "SELECT id, body, tries, from_agent, floor(extract(epoch FROM enqueued_at) * 1000)::bigint, "
    "  CASE WHEN queue <> $2 THEN 'dead' WHEN visible_at <= now() THEN 'ready' "
    "    WHEN receipt IS NOT NULL THEN 'inflight' ELSE 'delayed' END "
    "FROM storage.queue_msg WHERE agent = $1 AND (queue = $2 OR ($3 AND queue = $2 || '"
    DEAD_SUFFIX "')) ORDER BY queue <> $2, id LIMIT $4", 4};
#define PEEK_MAX 1000u

static int is_dead_queue(const char *q)
{
    size_t n = strlen(q), s = strlen(DEAD_SUFFIX);
    return n > s && !strcmp(q + n - s, DEAD_SUFFIX);
}

/* A queue name; room is kept for the ".dead" suffix of its dead-letter queue. */
static aos_err queue_name(stg_call *c, ProtobufCBinaryData b, char *out)
{
    char why[AOS_ERRMSG_MAX];
    aos_err e = stg_valid_name(b, "queue", NULL, out, why, sizeof why);
    if (e)
        return stg_fail(c, e, "%s", why);
    if (!is_dead_queue(out) && strlen(out) > AOS_NAME_MAX - strlen(DEAD_SUFFIX))
        return stg_fail(c, AOS_ERR_TOO_BIG, "queue name is %zu bytes, at most %zu allowed "
                        "(room for \"" DEAD_SUFFIX "\")", strlen(out),
                        AOS_NAME_MAX - strlen(DEAD_SUFFIX));
    return AOS_ERR_OK;
}

typedef struct send_arg {
    const Aos__Storage__QueueSendRequest *rq;
    const char *queue, *to;
    uint32_t max_tries;
} send_arg;

static aos_err send_tx(stg_call *c, void *arg)
{
    send_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, a->to);
    dp_text(&p, a->queue);
    dp_bytes(&p, a->rq->body.data, a->rq->body.len);
    if (strcmp(a->to, c->agent))
        dp_text(&p, c->agent);
    else
        dp_null(&p);
    dp_i32(&p, (int32_t)a->max_tries);
    dp_i64(&p, (int64_t)a->rq->delay_ms);
    aos_err e = stg_exec(c, &st_send, &p, &r);
    if (e)
        return e;
    Aos__Storage__QueueSendReply rp = AOS__STORAGE__QUEUE_SEND_REPLY__INIT;
    rp.id = (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    return stg_reply(c, &rp.base);
}

aos_err op_queue_send(stg_call *c)
{
    char queue[AOS_NAME_MAX + 1], to[AOS_AGENT_ID_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__QueueSendRequest *rq =
        stg_decode(c, &aos__storage__queue_send_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    send_arg a = {.rq = rq, .queue = queue, .to = c->agent};
    a.max_tries = rq->max_tries ? rq->max_tries : c->st->cfg.max_tries;
    if ((e = queue_name(c, rq->queue, queue)))
        goto out;
    if (rq->to_agent.len) {
        /* Mail: the one way into another agent's namespace, and only into its inbox. */
        if (!aos_agent_id_valid((const char *)rq->to_agent.data, rq->to_agent.len)) {
            e = stg_fail(c, AOS_ERR_USAGE, "to_agent is not a valid agent id");
            goto out;
        }
        memcpy(to, rq->to_agent.data, rq->to_agent.len);
        to[rq->to_agent.len] = 0;
        if (strcmp(to, c->agent) && strcmp(queue, INBOX)) {
            e = stg_fail(c, AOS_ERR_REFUSED, "another agent can only be sent mail: queue must "
                         "be \"" INBOX "\", not \"%s\"", queue);
            goto out;
        }
        a.to = to;
    }
    if (rq->body.len > c->st->cfg.value_max) {
        e = stg_fail(c, AOS_ERR_TOO_BIG, "message is %zu bytes, at most %zu allowed "
                     "(AOS_STORAGE_VALUE_MAX)", rq->body.len, c->st->cfg.value_max);
    } else if (rq->delay_ms > DELAY_MAX_MS) {
        e = stg_fail(c, AOS_ERR_USAGE, "delay_ms is more than seven days");
    } else if (a.max_tries > STG_TRIES_MAX) {
        e = stg_fail(c, AOS_ERR_USAGE, "max_tries is %u, at most %u allowed", a.max_tries,
                     STG_TRIES_MAX);
    } else {
        e = stg_tx(c, send_tx, &a);
    }
out:
    stg_free(rq);
    return e;
}

typedef struct recv_arg {
    const char *queue;
    uint32_t max, vis;
    int dead;          /* out: messages dead-lettered on the way */
} recv_arg;

/* One receive attempt; AOS_ERR_NOT_FOUND (rolled back, not recorded) when empty. */
static aos_err recv_tx(stg_call *c, void *arg)
{
    recv_arg *a = arg;
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, a->queue);
    dp_i64(&p, a->max);
    dp_i64(&p, a->vis);
    dp_bool(&p, !is_dead_queue(a->queue));
    aos_err e = stg_exec(c, &st_recv, &p, &r);
    if (e)
        return e;
    int n = PQntuples(r);
    a->dead = n > 0 ? (int)db_i64(r, 0, 6) : 0;
    if (n == 0 || PQgetisnull(r, 0, 0)) {
        PQclear(r);
        return AOS_ERR_NOT_FOUND;
    }
    Aos__Storage__QueueMessage *m = calloc((size_t)n, sizeof *m);
    Aos__Storage__QueueMessage **mp = calloc((size_t)n, sizeof *mp);
    char *back = calloc((size_t)n, 24);
    if (!m || !mp || !back) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    Aos__Storage__QueueRecvReply rp = AOS__STORAGE__QUEUE_RECV_REPLY__INIT;
    size_t bytes = 0, blen = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const uint8_t *body = db_bytes(r, i, 1, &len);
        if (k > 0 && bytes + len > STG_PAGE_BYTES) {
            /* over the reply's cap: give it back */
            blen += (size_t)snprintf(back + blen, 24, "%s%lld", blen ? "," : "{",
                                     (long long)db_i64(r, i, 0));
            continue;
        }
        aos__storage__queue_message__init(&m[k]);
        m[k].id = (uint64_t)db_i64(r, i, 0);
        m[k].body.data = (uint8_t *)body;
        m[k].body.len = len;
        m[k].tries = (uint32_t)db_i32(r, i, 2);
        m[k].receipt.data = (uint8_t *)db_bytes(r, i, 3, &m[k].receipt.len);
        if (!PQgetisnull(r, i, 4))
            m[k].from_agent.data = (uint8_t *)db_bytes(r, i, 4, &m[k].from_agent.len);
        m[k].enqueued_ms = (uint64_t)db_i64(r, i, 5);
        bytes += len;
        mp[k] = &m[k];
        k++;
    }
    if (blen) {
        memcpy(back + blen, "}", 2);
        db_params q;
        dp_init(&q);
        dp_text(&q, back);
        PGresult *u;
        if ((e = stg_exec(c, &st_unrecv, &q, &u)))
            goto out;
        PQclear(u);
    }
    rp.n_messages = (size_t)k;
    rp.messages = mp;
    e = stg_reply(c, &rp.base);
out:
    free(m);
    free(mp);
    free(back);
    PQclear(r);
    return e;
}

/* Move messages past their tries to the dead-letter queue, outside the receive. */
static void bury(stg_call *c, const char *queue)
{
    char why[256];
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, queue);
    if (!db_exec(c->db, &st_bury, &p, &r, why, sizeof why))
        PQclear(r);
}

/* Milliseconds until something in the queue becomes visible (UINT64_MAX: nothing). */
static uint64_t next_visible(stg_call *c, const char *queue)
{
    char why[256];
    PGresult *r;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, queue);
    if (db_exec(c->db, &st_next, &p, &r, why, sizeof why))
        return 250;   /* the database hiccupped: look again soon */
    uint64_t ms = PQntuples(r) != 1 || PQgetisnull(r, 0, 0) ? UINT64_MAX
                                                              : (uint64_t)db_i64(r, 0, 0);
    PQclear(r);
    return ms;
}

aos_err op_queue_recv(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], queue[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__QueueRecvRequest *rq =
        stg_decode(c, &aos__storage__queue_recv_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    recv_arg a = {.queue = queue, .vis = rq->visibility_ms ? rq->visibility_ms : VIS_DEFAULT_MS};
    if ((e = queue_name(c, rq->queue, queue)))
        goto out;
    if ((e = stg_valid_limit(rq->max, 1, AOS_QUEUE_RECV_MAX, "max", &a.max, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if (a.vis > VIS_MAX_MS || rq->wait_ms > 600000) {
        e = stg_fail(c, AOS_ERR_USAGE, "visibility_ms is at most 12 hours and wait_ms at most "
                     "10 minutes");
        goto out;
    }
    /* Stop waiting in time for the reply to reach the caller before its deadline. */
    uint64_t wait = rq->wait_ms;
    uint32_t left = stg_left_ms(c);
    if (left != UINT32_MAX)
        wait = left > 200 ? (wait < left - 200 ? wait : left - 200) : 0;
    /* Each waiter holds a worker: past the limit, answer at once (the caller asks again)
     * rather than leave no worker for other requests and heartbeats. */
    int max_waiting = c->st->max_waiting > 0 ? c->st->max_waiting : 1;
    if (wait > 0 && atomic_fetch_add(&c->st->waiting, 1) >= max_waiting) {
        atomic_fetch_sub(&c->st->waiting, 1);
        wait = 0;
    }
    uint64_t until = aos_mono_ms() + wait;
    notify_waiter w;
    int armed = wait > 0, buried = 0;
    if (armed)
        notify_arm(c->st->notify, &w, c->agent, queue);
    for (;;) {
        e = stg_tx(c, recv_tx, &a);
        if (e != AOS_ERR_NOT_FOUND)
            break;
        c->rep->error[0] = 0;
        if (a.dead && buried++ < 10) {
            bury(c, queue);
            continue;
        }
        uint64_t now = aos_mono_ms();
        uint64_t nv = next_visible(c, queue), stop = until;
        if (now >= until) {
            /* empty: nothing came in time; when something will, so that the caller sleeps
             * until then (a kernel wake) rather than asking again and again */
            Aos__Storage__QueueRecvReply rp = AOS__STORAGE__QUEUE_RECV_REPLY__INIT;
            rp.next_visible_ms = nv == UINT64_MAX ? 0 : nv ? nv : 1;
            e = stg_reply(c, &rp.base);
            break;
        }
        if (nv != UINT64_MAX && now + nv < stop)
            stop = now + nv;
        if (stop > now && notify_wait(c->st->notify, &w, stop) < 0)
            until = 0;   /* the server is stopping: answer with what we have (nothing) */
    }
    if (armed) {
        notify_disarm(c->st->notify, &w);
        atomic_fetch_sub(&c->st->waiting, 1);
    }
out:
    stg_free(rq);
    return e;
}

typedef struct ack_arg {
    const char *queue;
    uint64_t id;
    ProtobufCBinaryData receipt;
    uint32_t delay;
} ack_arg;

/* ack and nack name the message the same way: agent, queue, id and the receipt of the
 * delivery being settled (a stale receipt matches no row). */
static void receipt_params(stg_call *c, const ack_arg *a, db_params *p)
{
    dp_init(p);
    dp_text(p, c->agent);
    dp_text(p, a->queue);
    dp_i64(p, (int64_t)a->id);
    dp_bytes(p, a->receipt.data, a->receipt.len);
}

static aos_err no_receipt(stg_call *c, const ack_arg *a)
{
    return stg_fail(c, AOS_ERR_NOT_FOUND, "no message %llu with that receipt in queue %s "
                    "(acked already, or delivered again after its visibility timeout)",
                    (unsigned long long)a->id, a->queue);
}

static aos_err ack_tx(stg_call *c, void *arg)
{
    ack_arg *a = arg;
    PGresult *r;
    db_params p;
    receipt_params(c, a, &p);
    aos_err e = stg_exec(c, &st_ack, &p, &r);
    if (e)
        return e;
    int done = !strcmp(PQcmdTuples(r), "1");
    PQclear(r);
    if (!done)
        return no_receipt(c, a);
    Aos__Storage__QueueAckReply rp = AOS__STORAGE__QUEUE_ACK_REPLY__INIT;
    return stg_reply(c, &rp.base);
}

static aos_err nack_tx(stg_call *c, void *arg)
{
    ack_arg *a = arg;
    PGresult *r;
    db_params p;
    receipt_params(c, a, &p);
    dp_i64(&p, a->delay);
    dp_bool(&p, !is_dead_queue(a->queue));
    aos_err e = stg_exec(c, &st_nack, &p, &r);
    if (e)
        return e;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return no_receipt(c, a);
    }
    Aos__Storage__QueueNackReply rp = AOS__STORAGE__QUEUE_NACK_REPLY__INIT;
    rp.dead = db_bool(r, 0, 0);
    PQclear(r);
    return stg_reply(c, &rp.base);
}

static aos_err ack_common(stg_call *c, ProtobufCBinaryData qb, uint64_t id,
                          ProtobufCBinaryData receipt, uint32_t delay, stg_tx_fn fn)
{
    char why[AOS_ERRMSG_MAX], queue[AOS_NAME_MAX + 1];
    aos_err e;
    if ((e = queue_name(c, qb, queue)))
        return e;
    if ((e = stg_valid_id(receipt, AOS_RECEIPT_LEN, "receipt", why, sizeof why)))
        return stg_fail(c, e, "%s", why);
    if (id == 0 || id > INT64_MAX)
        return stg_fail(c, AOS_ERR_USAGE, "message id is out of range");
    if (delay > VIS_MAX_MS)
        return stg_fail(c, AOS_ERR_USAGE, "delay_ms is at most 12 hours");
    ack_arg a = {queue, id, receipt, delay};
    return stg_tx(c, fn, &a);
}

aos_err op_queue_ack(stg_call *c)
{
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__QueueAckRequest *rq =
        stg_decode(c, &aos__storage__queue_ack_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    e = ack_common(c, rq->queue, rq->id, rq->receipt, 0, ack_tx);
    stg_free(rq);
    return e;
}

aos_err op_queue_nack(stg_call *c)
{
    aos_err e;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__QueueNackRequest *rq =
        stg_decode(c, &aos__storage__queue_nack_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    e = ack_common(c, rq->queue, rq->id, rq->receipt, rq->delay_ms, nack_tx);
    stg_free(rq);
    return e;
}

aos_err op_queue_list(stg_call *c)
{
    aos_err e;
    PGresult *r = NULL;
    Aos__Storage__QueueInfo *qi = NULL, **qp = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__QueueListRequest *rq =
        stg_decode(c, &aos__storage__queue_list_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    if ((e = stg_check_deadline(c)))
        goto out;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    if ((e = stg_exec(c, &st_list, &p, &r)))
        goto out;
    int n = PQntuples(r);
    qi = calloc((size_t)n + 1, sizeof *qi);
    qp = calloc((size_t)n + 1, sizeof *qp);
    if (!qi || !qp) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        aos__storage__queue_info__init(&qi[i]);
        qi[i].queue.data = (uint8_t *)db_bytes(r, i, 0, &qi[i].queue.len);
        qi[i].ready = (uint64_t)db_i64(r, i, 1);
        qi[i].inflight = (uint64_t)db_i64(r, i, 2);
        qi[i].delayed = (uint64_t)db_i64(r, i, 3);
        qp[i] = &qi[i];
    }
    Aos__Storage__QueueListReply rp = AOS__STORAGE__QUEUE_LIST_REPLY__INIT;
    rp.n_queues = (size_t)n;
    rp.queues = qp;
    e = stg_reply(c, &rp.base);
out:
    free(qi);
    free(qp);
    PQclear(r);
    stg_free(rq);
    return e;
}

aos_err op_queue_peek(stg_call *c)
{
    char why[AOS_ERRMSG_MAX], queue[AOS_NAME_MAX + 1];
    aos_err e;
    PGresult *r = NULL;
    Aos__Storage__QueueMessage *m = NULL, **mp = NULL;
    if ((e = stg_need_agent(c)))
        return e;
    Aos__Storage__QueuePeekRequest *rq =
        stg_decode(c, &aos__storage__queue_peek_request__descriptor);
    if (!rq)
        return AOS_ERR_PROTO;
    uint32_t max;
    if ((e = queue_name(c, rq->queue, queue)))
        goto out;
    if ((e = stg_valid_limit(rq->max, 100, PEEK_MAX, "max", &max, why, sizeof why))) {
        e = stg_fail(c, e, "%s", why);
        goto out;
    }
    if ((e = stg_check_deadline(c)))
        goto out;
    db_params p;
    dp_init(&p);
    dp_text(&p, c->agent);
    dp_text(&p, queue);
    dp_bool(&p, rq->with_dead && !is_dead_queue(queue));
    dp_i64(&p, (int64_t)max + 1); /* one more: was there more */
    if ((e = stg_exec(c, &st_peek, &p, &r)))
        goto out;
    int n = PQntuples(r);
    m = calloc((size_t)n + 1, sizeof *m);
    mp = calloc((size_t)n + 1, sizeof *mp);
    if (!m || !mp) {
        e = stg_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    Aos__Storage__QueuePeekReply rp = AOS__STORAGE__QUEUE_PEEK_REPLY__INIT;
    size_t bytes = 0, k = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const uint8_t *body = db_bytes(r, i, 1, &len);
        if (k == max || (k > 0 && bytes + len > STG_PAGE_BYTES)) {
            rp.truncated = 1;
            break;
        }
        aos__storage__queue_message__init(&m[k]);
        m[k].id = (uint64_t)db_i64(r, i, 0);
        m[k].body = (ProtobufCBinaryData){len, (uint8_t *)body};
        m[k].tries = (uint32_t)db_i32(r, i, 2);
        if (!PQgetisnull(r, i, 3))
            m[k].from_agent.data = (uint8_t *)db_bytes(r, i, 3, &m[k].from_agent.len);
        m[k].enqueued_ms = (uint64_t)db_i64(r, i, 4);
        m[k].state.data = (uint8_t *)db_bytes(r, i, 5, &m[k].state.len);
        bytes += len;
        mp[k] = &m[k];
        k++;
    }
    rp.n_messages = k;
    rp.messages = mp;
    e = stg_reply(c, &rp.base);
out:
    free(m);
    free(mp);
    PQclear(r);
    stg_free(rq);
    return e;
}
