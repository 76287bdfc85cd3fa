/* libaos mail (see aos/msg.h): msg.send/msg.publish through the kernel, receives from the
 * agent's own inbox and replies in aos-storage, empty ones waiting as kernel wakes. */
#include "aos/msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "aos/envelope.h"
#include "aos/storage.h"
#include "msg.pb-c.h"
#include "rpc.h"
#include "storage.pb-c.h"

#define SEND_MS 30000u
#define VIS_DEFAULT_MS 30000u
#define INBOX "inbox"
#define REPLIES "replies"
#define WAIT_SLACK_MS 2000u   /* the reply to a wait may come this late after its deadline */

/* One agent per process (aos/agent.h): the receive side's state is the process's. */
static struct {
    uint64_t mail_seen;       /* the kernel's count of our mail at our last wait's reply */
    aos_msg_stats st;
} M;

void aos_msg_get_stats(aos_msg_stats *st)
{
    if (st)
        *st = M.st;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)(n ? p : (const void *)"")};
}

static ProtobufCBinaryData txt(const char *s)
{
    return bin(s, strlen(s));
}

/* ---- sending ---------------------------------------------------------------------------- */

/* What a send and a publish check alike: their arguments and the body's cap; then the
 * message's id, the caller's (o->id) or a new random one, into id. */
static aos_err prepare(aos_agent *a, const char *dest, const void *body, size_t len,
                       const aos_msg_send_opts *o, const char *usage,
                       uint8_t id[AOS_MSG_ID_LEN], char *why, size_t whylen)
{
    if (!a || !dest || (len && !body)) {
        aos_say(why, whylen, "%s", usage);
        return AOS_ERR_USAGE;
    }
    if (len > AOS_MSG_BODY_MAX) {
        aos_say(why, whylen, "a message is at most %u bytes, not %zu", AOS_MSG_BODY_MAX, len);
        return AOS_ERR_TOO_BIG;
    }
    if (o && o->id)
        memcpy(id, o->id, AOS_MSG_ID_LEN);
    else
        aos_id_random(id);
    return AOS_OK;
}

static aos_err send_kind(aos_agent *a, const char *to, const void *body, size_t len,
                         const aos_msg_send_opts *o, const char *kind, const uint8_t *corr,
                         uint8_t id_out[AOS_MSG_ID_LEN], char *why, size_t whylen)
{
    uint8_t id[AOS_MSG_ID_LEN];
    aos_err pe = prepare(a, to, body, len, o, "aos_msg_send needs an agent, a receiver and a "
                         "body", id, why, whylen);
    if (pe)
        return pe;
    Aos__Msg__SendRequest rq = AOS__MSG__SEND_REQUEST__INIT;
    rq.to = txt(to);
    rq.body = bin(body, len);
    rq.msg_id = bin(id, sizeof id);
    rq.kind = txt(kind);
    if (corr)
        rq.correlation = bin(corr, AOS_MSG_ID_LEN);
    rq.max_tries = o ? o->max_tries : 0;
    aos_call_opts co = {.timeout_ms = o && o->timeout_ms ? o->timeout_ms : SEND_MS};
    Aos__Msg__SendReply *rp = NULL;
    aos_err e = aos_rpc(aos_agent_conn(a), &co, "msg.send", &rq.base,
                        &aos__msg__send_reply__descriptor, (void **)&rp, why, whylen);
    if (e)
        return e;
    aos__msg__send_reply__free_unpacked(rp, NULL);
    if (id_out)
        memcpy(id_out, id, sizeof id);
    return AOS_OK;
}

aos_err aos_msg_send(aos_agent *a, const char *to, const void *body, size_t len,
                     const aos_msg_send_opts *o, uint8_t id_out[AOS_MSG_ID_LEN], char *why,
                     size_t whylen)
{
    return send_kind(a, to, body, len, o, "msg", NULL, id_out, why, whylen);
}

aos_err aos_msg_publish(aos_agent *a, const char *topic, const void *body, size_t len,
                        const aos_msg_send_opts *o, uint32_t *delivered, char *why,
                        size_t whylen)
{
    uint8_t id[AOS_MSG_ID_LEN];
    aos_err pe = prepare(a, topic, body, len, o, "aos_msg_publish needs an agent, a topic and "
                         "a body", id, why, whylen);
    if (pe)
        return pe;
    Aos__Msg__PublishRequest rq = AOS__MSG__PUBLISH_REQUEST__INIT;
    rq.topic = txt(topic);
    rq.body = bin(body, len);
    rq.msg_id = bin(id, sizeof id);
    aos_call_opts co = {.timeout_ms = o && o->timeout_ms ? o->timeout_ms : SEND_MS};
    Aos__Msg__SendReply *rp = NULL;
    aos_err e = aos_rpc(aos_agent_conn(a), &co, "msg.publish", &rq.base,
                        &aos__msg__send_reply__descriptor, (void **)&rp, why, whylen);
    if (e)
        return e;
    if (delivered)
        *delivered = rp->delivered;
    aos__msg__send_reply__free_unpacked(rp, NULL);
    return AOS_OK;
}

/* ---- receiving ------------------------------------------------------------------------------ */

/* One look into queue: AOS_OK with *out, or AOS_ERR_NOT_FOUND with *next_ms (ms until a
 * hidden message shows again, 0: none). */
static aos_err look(aos_agent *a, const char *queue, uint32_t vis, aos_msg **out,
                    uint64_t *next_ms, char *why, size_t whylen)
{
    *out = NULL;
    *next_ms = 0;
    for (int skipped = 0; skipped < 16; skipped++) {
        Aos__Storage__QueueRecvRequest rq = AOS__STORAGE__QUEUE_RECV_REQUEST__INIT;
        rq.queue = txt(queue);
        rq.max = 1;
        rq.visibility_ms = vis;
        Aos__Storage__QueueRecvReply *rp = NULL;
        aos_call_opts co = {.timeout_ms = SEND_MS};
        M.st.storage_recvs++;
        aos_err e = aos_rpc(aos_agent_conn(a), &co, "storage.queue.recv", &rq.base,
                            &aos__storage__queue_recv_reply__descriptor, (void **)&rp, why,
                            whylen);
        if (e)
            return e;
        if (!rp->n_messages) {
            *next_ms = rp->next_visible_ms;
            aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
            return AOS_ERR_NOT_FOUND;
        }
        const Aos__Storage__QueueMessage *s = rp->messages[0];
        aos_msg *m = malloc(sizeof *m);
        if (!m) {
            aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
            aos_say(why, whylen, "out of memory");
            return AOS_ERR_NOMEM;
        }
        char bad[200];
        e = aos_msg_decode(s->body.data, s->body.len, m, bad, sizeof bad);
        if (e == AOS_OK && s->receipt.len != sizeof m->receipt) {
            e = AOS_ERR_PROTO;
            free(m->body);
        }
        if (e == AOS_ERR_NOMEM) {
            free(m);
            aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
            aos_say(why, whylen, "out of memory");
            return e;
        }
        if (e != AOS_OK) {
            /* not mail: given back at once, so its tries run out and it is dead-lettered
             * (aosctl msg ls shows it) instead of blocking the inbox or being lost */
            int dead = 0;
            if (s->receipt.len == AOS_RECEIPT_LEN)
                aos_queue_nack(aos_agent_conn(a), NULL, queue, s->id, s->receipt.data, 0, &dead,
                               NULL, 0);
            free(m);
            aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
            continue;
        }
        m->tries = s->tries;
        m->enqueued_ms = s->enqueued_ms;
        snprintf(m->queue, sizeof m->queue, "%s", queue);
        m->qid = s->id;
        memcpy(m->receipt, s->receipt.data, sizeof m->receipt);
        aos__storage__queue_recv_reply__free_unpacked(rp, NULL);
        *out = m;
        return AOS_OK;
    }
    aos_say(why, whylen, "the queue %s holds only bodies that are not mail", queue);
    return AOS_ERR_NOT_FOUND;
}

/* Sleep as a kernel wake until mail may have come or ms passed. AOS_OK (woken or not),
 * AOS_ERR_CANCELLED at "stop". */
static aos_err sleep_for_mail(aos_agent *a, uint64_t ms, char *why, size_t whylen)
{
    Aos__Agent__WaitRequest rq = AOS__AGENT__WAIT_REQUEST__INIT;
    rq.mail = 1;
    rq.mail_seen = M.mail_seen;
    /* the kernel answers at the deadline it was sent (its timer may be late by a tick),
     * so the call itself waits a little longer and that answer still arrives */
    aos_call_opts co = {.timeout_ms = (uint32_t)(ms < 1 ? 1 : ms)};
    uint8_t buf[32];
    size_t n = aos__agent__wait_request__pack(&rq, buf);
    aos_reply r;
    M.st.kernel_waits++;
    aos_err e = aos_call(aos_agent_conn(a), &co, "kernel.agent.wait", buf, n, &r);
    if (e == AOS_ERR_TIMEOUT) {
        aos_reply_clear(&r);
        return AOS_OK;
    }
    if (e != AOS_OK) {
        aos_say(why, whylen, "kernel.agent.wait: %s", r.error[0] ? r.error : aos_strerror(e));
        aos_reply_clear(&r);
        return e;
    }
    Aos__Agent__WaitReply *w = aos__agent__wait_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!w) {
        aos_say(why, whylen, "kernel.agent.wait: aosd sent a malformed reply");
        return AOS_ERR_PROTO;
    }
    M.mail_seen = w->mail_in;
    int stop = w->why.len == 4 && !memcmp(w->why.data, "stop", 4);
    if (w->why.len == 7 && !memcmp(w->why.data, "message", 7))
        M.st.mail_wakes++;
    aos__agent__wait_reply__free_unpacked(w, NULL);
    if (stop) {
        aos_say(why, whylen, "the kernel asks this agent to stop");
        return AOS_ERR_CANCELLED;
    }
    return AOS_OK;
}

/* The next message of queue for which keep(m, arg) says 1; others are acked (dropped) when
 * drop is set. Within timeout_ms. */
static aos_err recv_from(aos_agent *a, const char *queue, uint32_t timeout_ms, uint32_t vis,
                         int (*keep)(const aos_msg *, const void *), const void *arg,
                         aos_msg **out, char *why, size_t whylen)
{
    if (!a || !out) {
        aos_say(why, whylen, "a receive needs an agent and a place for the message");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    uint64_t until = aos_mono_ms() + timeout_ms;
    for (;;) {
        aos_msg *m = NULL;
        uint64_t next = 0;
        aos_err e = look(a, queue, vis ? vis : VIS_DEFAULT_MS, &m, &next, why, whylen);
        if (e == AOS_OK) {
            if (!keep || keep(m, arg)) {
                *out = m;
                return AOS_OK;
            }
            aos_queue_ack(aos_agent_conn(a), NULL, queue, m->qid, m->receipt, NULL, 0);
            aos_msg_free(m);
            continue;
        }
        if (e != AOS_ERR_NOT_FOUND)
            return e;
        uint64_t now = aos_mono_ms();
        if (now >= until) {
            aos_say(why, whylen, "no message came within %u ms", timeout_ms);
            return AOS_ERR_TIMEOUT;
        }
        uint64_t ms = until - now;
        if (next && next < ms)
            ms = next; /* a delivery's visibility runs out then: look again at that time */
        if ((e = sleep_for_mail(a, ms, why, whylen)))
            return e;
    }
}

aos_err aos_msg_recv(aos_agent *a, uint32_t timeout_ms, uint32_t visibility_ms,
                     aos_msg **out, char *why, size_t whylen)
{
    return recv_from(a, INBOX, timeout_ms, visibility_ms, NULL, NULL, out, why, whylen);
}

aos_err aos_msg_ack(aos_agent *a, const aos_msg *m, char *why, size_t whylen)
{
    if (!a || !m || !m->qid) {
        aos_say(why, whylen, "aos_msg_ack needs an agent and a delivered message");
        return AOS_ERR_USAGE;
    }
    return aos_queue_ack(aos_agent_conn(a), NULL, m->queue, m->qid, m->receipt, why, whylen);
}

aos_err aos_msg_nack(aos_agent *a, const aos_msg *m, uint32_t delay_ms, char *why,
                     size_t whylen)
{
    if (!a || !m || !m->qid) {
        aos_say(why, whylen, "aos_msg_nack needs an agent and a delivered message");
        return AOS_ERR_USAGE;
    }
    int dead = 0;
    return aos_queue_nack(aos_agent_conn(a), NULL, m->queue, m->qid, m->receipt, delay_ms,
                          &dead, why, whylen);
}

/* ---- request/reply ----------------------------------------------------------------------- */

static int answers(const aos_msg *m, const void *id)
{
    return !strcmp(m->kind, "reply") && m->has_correlation &&
           !memcmp(m->correlation, id, AOS_MSG_ID_LEN);
}

aos_err aos_msg_request(aos_agent *a, const char *to, const void *body, size_t len,
                        const aos_msg_send_opts *o, uint32_t timeout_ms, aos_msg **reply,
                        char *why, size_t whylen)
{
    if (!reply) {
        aos_say(why, whylen, "aos_msg_request needs a place for the reply");
        return AOS_ERR_USAGE;
    }
    *reply = NULL;
    uint64_t t0 = aos_mono_ms();
    aos_msg_send_opts so = o ? *o : (aos_msg_send_opts){0};
    if (!so.timeout_ms || so.timeout_ms > timeout_ms)
        so.timeout_ms = timeout_ms ? timeout_ms : 1;
    uint8_t id[AOS_MSG_ID_LEN];
    aos_err e = send_kind(a, to, body, len, &so, "request", NULL, id, why, whylen);
    if (e)
        return e;
    uint64_t spent = aos_mono_ms() - t0;
    if (spent >= timeout_ms) {
        aos_say(why, whylen, "the request's deadline passed while it was sent");
        return AOS_ERR_TIMEOUT;
    }
    aos_msg *m = NULL;
    e = recv_from(a, REPLIES, (uint32_t)(timeout_ms - spent), VIS_DEFAULT_MS, answers, id, &m,
                  why, whylen);
    if (e == AOS_ERR_TIMEOUT)
        aos_say(why, whylen, "no reply from %s within %u ms", to, timeout_ms);
    if (e)
        return e;
    /* the reply is ours now: taken out of the queue (a crash before this line gets it
     * again at the same request's retry, since its id is the same) */
    aos_queue_ack(aos_agent_conn(a), NULL, REPLIES, m->qid, m->receipt, NULL, 0);
    *reply = m;
    return AOS_OK;
}

aos_err aos_msg_reply(aos_agent *a, const aos_msg *req, const void *body, size_t len,
                      char *why, size_t whylen)
{
    if (!req || strcmp(req->kind, "request")) {
        aos_say(why, whylen, "aos_msg_reply answers a message of kind request");
        return AOS_ERR_USAGE;
    }
    /* the reply's id: the request's with its first byte's bits flipped, so the same
     * request answered twice sends the same reply */
    uint8_t id[AOS_MSG_ID_LEN];
    memcpy(id, req->id, sizeof id);
    id[0] ^= 0xff;
    aos_msg_send_opts o = {.id = id};
    return send_kind(a, req->from, body, len, &o, "reply", req->id, NULL, why, whylen);
}
