/* libaos mail between agents: send through the kernel (which checks the sender's talks_to),
 * receive from the durable inbox (waiting as a kernel wake), ack, nack, request/reply, topics. */
#ifndef AOS_MSG_H
#define AOS_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "aos/agent.h"
#include "aos/aos.h"

/* The delivery contract: AT LEAST ONCE, with IDEMPOTENT RECEIPT.
 *
 * - A message is in the receiver's durable inbox (aos-storage, PostgreSQL) once
 *   aos_msg_send returns AOS_OK; it stays there until the receiver acks it.
 * - aos_msg_recv hands out one delivery and hides the message for visibility_ms. A
 *   receiver that dies, or does not ack in time, gets it again (tries counts the
 *   deliveries). So a message may be handled more than once: the receiver DEDUPES ON
 *   aos_msg.id. The rule that makes it exactly-once in effect: make the effect of
 *   handling the message and the record "id handled" durable together (one storage write
 *   keyed by the id, e.g. a create-only kv put of "seen:<id hex>", or a durable step
 *   whose key is the id), and ack only after that write is durable. A delivery whose id
 *   is already recorded is acked without doing anything again.
 * - A sender that retries a send (after an error, or after its own crash) passes the same
 *   id (aos_msg_send_opts.id): the kernel makes the same id to the same agent one stored
 *   message, so a retry does not make a copy. With no id given, a fresh random one is
 *   drawn per call: then a retried call is a second message with its own id. Another
 *   body under an id already sent is not stored either (the call answers the first send's
 *   result, or CONFLICT once aos-storage only has its durable record of the id).
 * - Past max_tries deliveries without an ack, a message moves to the dead-letter queue
 *   "inbox.dead" (aosctl msg ls shows it).
 * Ordering: oldest first, but a redelivered message comes after those queued since. */

#define AOS_MSG_ID_LEN 16
#define AOS_MSG_BODY_MAX (256u << 10)
#define AOS_MSG_KIND_MAX 16
#define AOS_MSG_TOPIC_MAX 64
#define AOS_MSG_OPERATOR "aos:operator" /* from: aosctl msg send */

/* One delivery. Owned by the caller: aos_msg_free. */
typedef struct aos_msg {
    uint8_t id[AOS_MSG_ID_LEN];          /* what the receiver dedupes on */
    char id_hex[2 * AOS_MSG_ID_LEN + 1];
    char from[AOS_AGENT_ID_MAX + 1];     /* the kernel's word: the sending agent */
    char kind[AOS_MSG_KIND_MAX];         /* "msg", "request", "reply" */
    uint8_t correlation[AOS_MSG_ID_LEN]; /* a reply: the request's id */
    int has_correlation;
    char topic[AOS_MSG_TOPIC_MAX + 1];   /* a publication's topic, "" else */
    uint8_t *body;                       /* len bytes and a NUL after them */
    size_t len;
    uint32_t tries;                      /* deliveries so far, this one included */
    uint64_t enqueued_ms;
    /* the delivery handle (aos_msg_ack, aos_msg_nack) */
    char queue[16];
    uint64_t qid;
    uint8_t receipt[16];
} aos_msg;

void aos_msg_free(aos_msg *m);

typedef struct aos_msg_send_opts {
    const uint8_t *id;     /* AOS_MSG_ID_LEN bytes: the message's id; NULL: a random one */
    uint32_t timeout_ms;   /* 0: 30 s */
    uint32_t max_tries;    /* deliveries before "inbox.dead"; 0: storage's (5) */
} aos_msg_send_opts;

/* Into agent to's inbox; the kernel refuses (AOS_ERR_REFUSED, audited) unless this agent's
 * manifest names to in talks_to; AOS_ERR_NOT_FOUND when no such agent is applied. id_out
 * (may be NULL) gets the message's id. body: at most AOS_MSG_BODY_MAX bytes. */
aos_err aos_msg_send(aos_agent *a, const char *to, const void *body, size_t len,
                     const aos_msg_send_opts *o, uint8_t id_out[AOS_MSG_ID_LEN], char *why,
                     size_t whylen);

/* The next message of this agent's inbox, waiting up to timeout_ms for one: an empty inbox
 * waits as a kernel wake (kernel.agent.wait), woken when a message is sent to it, or when
 * a message held by an earlier delivery becomes visible again; never a poll loop. The
 * delivery stays hidden from other receives for visibility_ms (0: 30 s). AOS_OK: *out is
 * the caller's; AOS_ERR_TIMEOUT: none came; AOS_ERR_CANCELLED: the kernel asks this agent
 * to stop (finish up and exit 0). A stored body that is not mail (written by hand into
 * the inbox) is given back until it is dead-lettered, never handed out. */
aos_err aos_msg_recv(aos_agent *a, uint32_t timeout_ms, uint32_t visibility_ms,
                     aos_msg **out, char *why, size_t whylen);
/* The message is handled (its effect durable): it leaves the inbox. AOS_ERR_NOT_FOUND
 * when this delivery is stale (its visibility ran out and it was delivered again). */
aos_err aos_msg_ack(aos_agent *a, const aos_msg *m, char *why, size_t whylen);
/* Give it back, visible again after delay_ms; past its tries it is dead-lettered. */
aos_err aos_msg_nack(aos_agent *a, const aos_msg *m, uint32_t delay_ms, char *why,
                     size_t whylen);

/* Request/reply: send body to `to` as a request and wait up to timeout_ms for its reply
 * (correlated by the request's id; AOS_ERR_TIMEOUT when the deadline passes first: a
 * reply that comes later is dropped by the next request). Replies arrive in this agent's
 * queue "replies", never in its inbox. o->id as in aos_msg_send (a retried request with
 * the same id is the same request). */
aos_err aos_msg_request(aos_agent *a, const char *to, const void *body, size_t len,
                        const aos_msg_send_opts *o, uint32_t timeout_ms, aos_msg **reply,
                        char *why, size_t whylen);
/* Answer the request req (its sender must be in this agent's talks_to). The reply's id is
 * derived from the request's, so answering a redelivered request again sends the same
 * reply, not a second one. */
aos_err aos_msg_reply(aos_agent *a, const aos_msg *req, const void *body, size_t len,
                      char *why, size_t whylen);

/* To every agent subscribed to topic (a topic of the applied deployment; the manifests'
 * subscribes): one copy in each one's inbox. *delivered (may be NULL): how many. */
aos_err aos_msg_publish(aos_agent *a, const char *topic, const void *body, size_t len,
                        const aos_msg_send_opts *o, uint32_t *delivered, char *why,
                        size_t whylen);

/* Counters of this process's receives (an agent is one per process), for tests and
 * benchmarks: storage receives and kernel waits made, wakes by mail. */
typedef struct aos_msg_stats {
    uint64_t storage_recvs, kernel_waits, mail_wakes;
} aos_msg_stats;
void aos_msg_get_stats(aos_msg_stats *st);

/* Decode a stored Mail (an inbox body: untrusted) into *m (its body malloc'd: aos_msg_free
 * frees it; the delivery fields are left zero). AOS_ERR_PROTO with why when it is not mail
 * (not a Mail, an id not 16 bytes, text not UTF-8, a kind not msg/request/reply, ...). */
aos_err aos_msg_decode(const uint8_t *buf, size_t len, aos_msg *m, char *why, size_t whylen);

#endif
