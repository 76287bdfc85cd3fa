/* Mail through the kernel: a sender reaches only the agents its manifest's talks_to names;
 * each message is durable in the receiver's inbox (aos-storage) before the sender hears OK. */
#include "msg.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "aos/msg.h"
#include "audit.h"
#include "deploy.h"
#include "msg.pb-c.h"
#include "storage.pb-c.h"

#define INBOX "inbox"
#define REPLIES "replies"
#define LS_MAX 1000u

/* One msg.send or msg.publish in flight: from the rights check to the last durable copy. */
typedef struct mcall {
    kreply *k;
    aos_env hdr;                 /* the request's ids, for its END record (no payload) */
    uint64_t t0_us;
    char from[AOS_AGENT_ID_MAX + 1];
    uint8_t id[AOS_MSG_ID_LEN];
    char topic[DEP_NAME_MAX + 1];
    /* the copies: one for msg.send, one per subscriber for msg.publish */
    char **to;
    size_t nto;
    uint8_t **mail;              /* each one's packed Mail */
    size_t *mail_len;
    const char *queue;           /* INBOX or REPLIES (a reply goes to the requester's) */
    int reply;                   /* queue is REPLIES */
    uint32_t max_tries;
    pthread_mutex_t mu;
    size_t left, ok;
    uint64_t queue_id;
    aos_err first;
    char err[AOS_ERRMSG_MAX];
} mcall;

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)(n ? p : (const void *)"")};
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void mcall_free(mcall *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nto; i++) {
        free(c->to ? c->to[i] : NULL);
        free(c->mail ? c->mail[i] : NULL);
    }
    free(c->to);
    free(c->mail);
    free(c->mail_len);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The storage request's id for one copy: the same sender, receiver, queue, message id and
 * topic give the same id, so a sender's retry is one stored message (aos-storage's
 * idempotency), and two copies of one publication are two. */
static void copy_request_id(const mcall *c, size_t i, uint8_t out[AOS_ID_LEN])
{
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, (const uint8_t *)"aos-msg", 7, AOS_ID_LEN);
    crypto_generichash_update(&hs, (const uint8_t *)c->from, strlen(c->from) + 1);
    crypto_generichash_update(&hs, (const uint8_t *)c->to[i], strlen(c->to[i]) + 1);
    crypto_generichash_update(&hs, (const uint8_t *)c->queue, strlen(c->queue) + 1);
    crypto_generichash_update(&hs, (const uint8_t *)c->topic, strlen(c->topic) + 1);
    crypto_generichash_update(&hs, c->id, sizeof c->id);
    crypto_generichash_final(&hs, out, AOS_ID_LEN);
}

/* What is left of the caller's time for aos-storage, less a margin so that our answer
 * reaches the caller before its own deadline. */
static uint32_t storage_ms(const kreply *k)
{
    uint64_t now = aos_mono_ms(), d = kreply_deadline(k);
    uint64_t left = d > now + 400 ? d - now - 300 : 100;
    return (uint32_t)(left > 600000 ? 600000 : left);
}

static void finish(mcall *c, aos_err st, const char *why)
{
    kaud_event(&c->hdr, NULL, KAUD_END, st, mono_us() - c->t0_us, 0, NULL, NULL);
    if (st != AOS_OK) {
        kreply_send(c->k, st, why, NULL, 0);
        mcall_free(c);
        return;
    }
    Aos__Msg__SendReply r = AOS__MSG__SEND_REPLY__INIT;
    r.msg_id = bin(c->id, sizeof c->id);
    r.queue_id = c->queue_id;
    r.delivered = (uint32_t)c->ok;
    uint8_t buf[64];
    kreply_send(c->k, AOS_OK, NULL, buf, aos__msg__send_reply__pack(&r, buf));
    mcall_free(c);
}

typedef struct copy_arg {
    mcall *c;
    size_t i;
} copy_arg;

static void copied(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    copy_arg *ca = arg;
    mcall *c = ca->c;
    size_t i = ca->i;
    free(ca);
    if (status == AOS_OK)
        agents_mail_arrived(c->to[i]); /* durable: now its receiver may look */
    uint64_t qid = 0;
    if (status == AOS_OK) {
        Aos__Storage__QueueSendReply *r = aos__storage__queue_send_reply__unpack(NULL, len, pl);
        if (r) {
            qid = r->id;
            aos__storage__queue_send_reply__free_unpacked(r, NULL);
        }
    }
    pthread_mutex_lock(&c->mu);
    if (status == AOS_OK) {
        c->ok++;
        c->queue_id = qid;
    } else if (c->first == AOS_OK) {
        c->first = status;
        snprintf(c->err, sizeof c->err, "into %s's %s: %s", c->to[i], c->queue,
                 err && err[0] ? err : aos_strerror(status));
    }
    int last = --c->left == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        finish(c, c->first, c->err);
}

/* The record of the request is durable (or will not be): put the copies in. */
static void go(void *arg, aos_err st, const char *err)
{
    mcall *c = arg;
    if (st != AOS_OK) {
        finish(c, st, err);
        return;
    }
    if (!c->nto) {
        finish(c, AOS_OK, NULL);
        return;
    }
    c->left = c->nto;
    uint32_t ms = storage_ms(c->k);
    size_t n = c->nto;
    for (size_t i = 0; i < n; i++) {
        copy_arg *ca = malloc(sizeof *ca);
        if (!ca) {
            pthread_mutex_lock(&c->mu);
            if (c->first == AOS_OK) {
                c->first = AOS_ERR_NOMEM;
                snprintf(c->err, sizeof c->err, "aosd is out of memory");
            }
            int last = --c->left == 0;
            pthread_mutex_unlock(&c->mu);
            if (last)
                finish(c, c->first, c->err);
            continue;
        }
        *ca = (copy_arg){c, i};
        Aos__Storage__QueueSendRequest q = AOS__STORAGE__QUEUE_SEND_REQUEST__INIT;
        q.queue = bin(c->queue, strlen(c->queue));
        q.body = bin(c->mail[i], c->mail_len[i]);
        q.max_tries = c->max_tries;
        uint8_t rid[AOS_ID_LEN];
        copy_request_id(c, i, rid);
        /* a reply is the requester's own queue (no other agent's but the inbox is open to
         * mail); anything else is mail from the sender into the receiver's inbox, so
         * aos-storage records who sent it */
        const char *ns = c->reply ? c->to[i] : c->from;
        if (!c->reply)
            q.to_agent = bin(c->to[i], strlen(c->to[i]));
        agents_storage("storage.queue.send", ns, rid, ms, &q.base, copied, ca);
    }
}

/* Audit first: an effectful call waits for its BEGIN record (unless the audit is
 * fail-open), then go(). */
static void start(mcall *c, const aos_env *req)
{
    c->t0_us = mono_us();
    if (!kaud_fail_open()) {
        uint64_t d = kreply_deadline(c->k), now = aos_mono_ms();
        kaud_event(req, NULL, KAUD_BEGIN, 0, 0, d > now + 200 ? d - 200 : d, go, c);
        return;
    }
    kaud_event(req, NULL, KAUD_BEGIN, 0, 0, 0, NULL, NULL);
    go(c, AOS_OK, NULL);
}

static mcall *mcall_new(const aos_env *req, const char *caller, kreply *k, size_t n)
{
    mcall *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->k = k;
    c->hdr = *req;
    c->hdr.pb_ = NULL;
    c->hdr.payload = NULL;
    c->hdr.payload_len = 0;
    snprintf(c->from, sizeof c->from, "%s", caller[0] ? caller : AOS_MSG_OPERATOR);
    c->queue = INBOX;
    c->to = calloc(n + 1, sizeof *c->to);
    c->mail = calloc(n + 1, sizeof *c->mail);
    c->mail_len = calloc(n + 1, sizeof *c->mail_len);
    if (!c->to || !c->mail || !c->mail_len) {
        mcall_free(c);
        return NULL;
    }
    return c;
}

/* Copy i: to agent `to`, the Mail packed. */
static int add_copy(mcall *c, const char *to, const char *kind, ProtobufCBinaryData corr,
                    ProtobufCBinaryData body)
{
    Aos__Msg__Mail m = AOS__MSG__MAIL__INIT;
    m.msg_id = bin(c->id, sizeof c->id);
    m.from = bin(c->from, strlen(c->from));
    m.kind = bin(kind, strlen(kind));
    m.correlation = corr;
    m.body = body;
    m.topic = bin(c->topic, strlen(c->topic));
    size_t len = aos__msg__mail__get_packed_size(&m);
    size_t i = c->nto;
    c->mail[i] = malloc(len ? len : 1);
    c->to[i] = strdup(to);
    c->nto++; /* freed as a pair either way */
    if (!c->mail[i] || !c->to[i])
        return -1;
    c->mail_len[i] = aos__msg__mail__pack(&m, c->mail[i]);
    return 0;
}

static int text_ok(ProtobufCBinaryData b, size_t max)
{
    return b.len <= max && aos_utf8_valid(b.data, b.len);
}

static int name_is(ProtobufCBinaryData b, char *out, size_t cap)
{
    if (!b.len || b.len >= cap || !aos_agent_id_valid((const char *)b.data, b.len))
        return 0;
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return 1;
}

/* A refusal is a decision: it is in the audit log, and the caller hears why. */
static void refused(const aos_env *req, kreply *k, aos_err rc, const char *why)
{
    kaud_event(req, NULL, KAUD_END, rc, 0, 0, NULL, NULL);
    kreply_send(k, rc, why, NULL, 0);
}

void msg_m_send(const aos_env *req, const char *caller, kreply *k)
{
    Aos__Msg__SendRequest *sr = aos__msg__send_request__unpack(NULL, req->payload_len,
                                                               req->payload);
    char to[AOS_AGENT_ID_MAX + 1], kind[16] = "msg", why[AOS_ERRMSG_MAX] = "";
    aos_err rc = AOS_ERR_USAGE;
    mcall *c = NULL;
    if (!sr) {
        kreply_send(k, AOS_ERR_PROTO, "msg.send: payload is not a SendRequest", NULL, 0);
        return;
    }
    if (!name_is(sr->to, to, sizeof to) || strlen(to) > DEP_NAME_MAX)
        snprintf(why, sizeof why, "msg.send: to is not an agent's name");
    else if (sr->body.len > AOS_MSG_BODY_MAX)
        snprintf(why, sizeof why, "msg.send: a message is at most %u bytes, not %zu",
                 AOS_MSG_BODY_MAX, sr->body.len), rc = AOS_ERR_TOO_BIG;
    else if (sr->msg_id.len && sr->msg_id.len != AOS_MSG_ID_LEN)
        snprintf(why, sizeof why, "msg.send: msg_id is 16 bytes, or empty");
    else if (!text_ok(sr->kind, 15) ||
             (sr->kind.len && (memcpy(kind, sr->kind.data, sr->kind.len), kind[sr->kind.len] = 0,
                               strcmp(kind, "msg") && strcmp(kind, "request") &&
                                   strcmp(kind, "reply"))))
        snprintf(why, sizeof why, "msg.send: kind is msg, request or reply");
    else if (sr->correlation.len != (strcmp(kind, "reply") ? 0u : AOS_MSG_ID_LEN))
        snprintf(why, sizeof why, "msg.send: a reply carries its request's 16-byte id as "
                 "correlation, and only a reply does");
    else if ((rc = agents_may_mail(caller, to, why, sizeof why)) != AOS_OK) {
        aos__msg__send_request__free_unpacked(sr, NULL);
        refused(req, k, rc, why);
        return;
    } else if (!(c = mcall_new(req, caller, k, 1))) {
        snprintf(why, sizeof why, "aosd is out of memory");
        rc = AOS_ERR_NOMEM;
    } else {
        if (sr->msg_id.len)
            memcpy(c->id, sr->msg_id.data, AOS_MSG_ID_LEN);
        else
            aos_id_random(c->id);
        c->max_tries = sr->max_tries;
        if (!strcmp(kind, "reply")) {
            c->queue = REPLIES;
            c->reply = 1;
        }
        if (add_copy(c, to, kind, sr->correlation, sr->body) != 0) {
            snprintf(why, sizeof why, "aosd is out of memory");
            rc = AOS_ERR_NOMEM;
        } else {
            rc = AOS_OK;
        }
    }
    aos__msg__send_request__free_unpacked(sr, NULL);
    if (rc != AOS_OK) {
        mcall_free(c);
        kreply_send(k, rc, why, NULL, 0);
        return;
    }
    start(c, req);
}

void msg_m_publish(const aos_env *req, const char *caller, kreply *k)
{
    Aos__Msg__PublishRequest *pr = aos__msg__publish_request__unpack(NULL, req->payload_len,
                                                                     req->payload);
    char topic[DEP_NAME_MAX + 1], why[AOS_ERRMSG_MAX] = "";
    char **subs = NULL;
    size_t nsubs = 0;
    aos_err rc = AOS_ERR_USAGE;
    mcall *c = NULL;
    if (!pr) {
        kreply_send(k, AOS_ERR_PROTO, "msg.publish: payload is not a PublishRequest", NULL, 0);
        return;
    }
    if (!name_is(pr->topic, topic, sizeof topic))
        snprintf(why, sizeof why, "msg.publish: topic is not a topic's name");
    else if (pr->body.len > AOS_MSG_BODY_MAX)
        snprintf(why, sizeof why, "msg.publish: a message is at most %u bytes, not %zu",
                 AOS_MSG_BODY_MAX, pr->body.len), rc = AOS_ERR_TOO_BIG;
    else if (pr->msg_id.len && pr->msg_id.len != AOS_MSG_ID_LEN)
        snprintf(why, sizeof why, "msg.publish: msg_id is 16 bytes, or empty");
    else if ((rc = agents_subscribers(topic, &subs, &nsubs, why, sizeof why)) != AOS_OK)
        ;
    else if (!(c = mcall_new(req, caller, k, nsubs))) {
        snprintf(why, sizeof why, "aosd is out of memory");
        rc = AOS_ERR_NOMEM;
    } else {
        snprintf(c->topic, sizeof c->topic, "%s", topic);
        if (pr->msg_id.len)
            memcpy(c->id, pr->msg_id.data, AOS_MSG_ID_LEN);
        else
            aos_id_random(c->id);
        for (size_t i = 0; i < nsubs && rc == AOS_OK; i++)
            if (add_copy(c, subs[i], "msg", bin(NULL, 0), pr->body) != 0) {
                snprintf(why, sizeof why, "aosd is out of memory");
                rc = AOS_ERR_NOMEM;
            }
    }
    for (size_t i = 0; i < nsubs; i++)
        free(subs[i]);
    free(subs);
    aos__msg__publish_request__free_unpacked(pr, NULL);
    if (rc != AOS_OK) {
        mcall_free(c);
        kreply_send(k, rc, why, NULL, 0);
        return;
    }
    start(c, req);
}

/* ---- msg.ls ------------------------------------------------------------------------------ */

static void peeked(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    kreply *k = arg;
    if (status != AOS_OK) {
        kreply_send(k, status, err && err[0] ? err : "aos-storage did not answer", NULL, 0);
        return;
    }
    Aos__Storage__QueuePeekReply *p = aos__storage__queue_peek_reply__unpack(NULL, len, pl);
    if (!p) {
        kreply_send(k, AOS_ERR_PROTO, "aos-storage's reply is not a QueuePeekReply", NULL, 0);
        return;
    }
    size_t n = p->n_messages;
    Aos__Msg__LsEntry *e = calloc(n + 1, sizeof *e);
    Aos__Msg__LsEntry **ep = calloc(n + 1, sizeof *ep);
    Aos__Msg__Mail **mails = calloc(n + 1, sizeof *mails);
    uint8_t *buf = NULL;
    size_t blen = 0;
    aos_err rc = e && ep && mails ? AOS_OK : AOS_ERR_NOMEM;
    for (size_t i = 0; rc == AOS_OK && i < n; i++) {
        const Aos__Storage__QueueMessage *s = p->messages[i];
        aos__msg__ls_entry__init(&e[i]);
        e[i].queue_id = s->id;
        e[i].tries = s->tries;
        e[i].state = s->state;
        e[i].enqueued_ms = s->enqueued_ms;
        aos_msg m;
        char why[128];
        /* the stored body is checked like any wire input: only mail is shown as mail */
        if (aos_msg_decode(s->body.data, s->body.len, &m, why, sizeof why) == AOS_OK) {
            free(m.body);
            mails[i] = aos__msg__mail__unpack(NULL, s->body.len, s->body.data);
            e[i].mail = mails[i];
        }
        ep[i] = &e[i];
    }
    if (rc == AOS_OK) {
        Aos__Msg__LsReply r = AOS__MSG__LS_REPLY__INIT;
        r.n_mail = n;
        r.mail = ep;
        r.truncated = p->truncated;
        blen = aos__msg__ls_reply__get_packed_size(&r);
        if ((buf = malloc(blen ? blen : 1)))
            aos__msg__ls_reply__pack(&r, buf);
        else
            rc = AOS_ERR_NOMEM;
    }
    if (rc == AOS_OK && blen > AOS_MSG_MAX - (64u << 10))
        kreply_send(k, AOS_ERR_TOO_BIG, "the inbox does not fit one reply: ask for fewer",
                    NULL, 0);
    else
        kreply_send(k, rc, rc == AOS_OK ? NULL : "aosd is out of memory", buf, blen);
    for (size_t i = 0; mails && i < n; i++)
        if (mails[i])
            aos__msg__mail__free_unpacked(mails[i], NULL);
    free(mails);
    free(buf);
    free(e);
    free(ep);
    aos__storage__queue_peek_reply__free_unpacked(p, NULL);
}

void msg_m_ls(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    Aos__Msg__LsRequest *lr = aos__msg__ls_request__unpack(NULL, req->payload_len,
                                                           req->payload);
    char agent[AOS_AGENT_ID_MAX + 1];
    if (!lr || !name_is(lr->agent, agent, sizeof agent) || lr->max > LS_MAX) {
        if (lr)
            aos__msg__ls_request__free_unpacked(lr, NULL);
        kreply_send(k, AOS_ERR_USAGE, "msg.ls: payload is not an LsRequest naming an agent "
                    "(max at most 1000)", NULL, 0);
        return;
    }
    Aos__Storage__QueuePeekRequest q = AOS__STORAGE__QUEUE_PEEK_REQUEST__INIT;
    q.queue = bin(INBOX, strlen(INBOX));
    q.max = lr->max;
    q.with_dead = 1;
    aos__msg__ls_request__free_unpacked(lr, NULL);
    agents_storage("storage.queue.peek", agent, NULL, storage_ms(k), &q.base, peeked, k);
}
