/* A link is aosd's connection to one server: a PAIR1 listener only that server's pid may
 * join, the table of requests in flight on it (kept until answered, re-sent to a restarted
 * server, streamed parts passed on in order), and an outbox that batches under load. */
#ifndef AOS_LINK_H
#define AOS_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <nng/nng.h>

#include "aos/envelope.h"

typedef struct klink klink;

/* The final answer to a forwarded request. reply is the server's REPLY envelope as
 * received (owned by the callee, NULL when aosd itself answers with status/err, e.g. on
 * a deadline). Called on an nng thread or the main loop, with no kernel lock held. */
typedef void (*link_done_fn)(void *arg, nng_msg *reply, int status, const char *err);
/* One part of a streamed reply: seq is its index, data (len bytes) is valid during the
 * call. Called with the link's lock held (so no part can follow the final answer): it must
 * not call back into this link. AOS_OK goes on; any other status cancels the request (the
 * server gets CANCEL) and done() follows with that status and why. */
typedef aos_err (*link_part_fn)(void *arg, uint32_t seq, const uint8_t *data, size_t len,
                                char *why, size_t whylen);
/* A request a server sent on its own link (a call to another server's method), validated
 * as an envelope. parent_deadline (monotonic ms, 0: none) and chain (bit i: the server of
 * link index i is already in the call's path) come from the request the caller said it
 * works for, looked up by aosd, never taken from the message. parent_agent is that
 * request's agent id ("" if none). Called on an nng thread with no lock held. */
typedef void (*link_request_fn)(void *arg, klink *from, const aos_env *req,
                                uint64_t parent_deadline, uint32_t chain,
                                const char *parent_agent);
/* The server said READY; payload (len bytes, valid during the call) is its
 * SandboxReport, still undecoded and untrusted. */
typedef void (*link_ready_fn)(void *arg, int idx, pid_t pid, const uint8_t *payload,
                              size_t len);

/* Listen on url for server `name`. Lives until the process exits (link_close stops it). */
aos_err link_open(klink **out, const char *name, const char *url, int idx,
                  link_ready_fn on_ready, void *arg, char *why, size_t whylen);
void link_close(klink *l);

/* A new incarnation is starting: only pid may connect; not ready until it says READY. */
void link_expect(klink *l, pid_t pid);
/* The incarnation is gone: close its pipe, keep the requests for the next one. own: it
 * ended itself (an exit, a fault signal, a hang aosd killed it for); only such deaths
 * count towards a request's poison-pill limit — a kill from outside, e.g. while its
 * database restarts, is not the request's fault. */
void link_down(klink *l, int own);

/* 1 while PAIR1 still holds a pipe, e.g. of an incarnation that just died: PAIR1 takes
 * one peer at a time and turns a new one away until nng has let go of the old (seen
 * taking seconds, and at times never), so the next incarnation waits for 0. */
int link_busy(klink *l);
/* The old pipe is never let go: move the link to a fresh socket at the same path (the
 * requests kept stay). On error (with why) the link listens no more until a retry works. */
aos_err link_renew(klink *l, char *why, size_t whylen);

/* Who handles server-originated requests, for every link; set once before any link opens. */
void link_set_request_handler(link_request_fn fn, void *arg);
/* A server's CANCEL of a request it made on its link (req->request_id names it): aos-api's
 * HTTP client went away. Called on an nng thread with no lock held; arg as above. */
typedef void (*link_cancel_fn)(void *arg, klink *from, const aos_env *req);
void link_set_cancel_handler(link_cancel_fn fn);
/* The link's index (the supervisor's child index) and server name. */
int link_idx(const klink *l);
const char *link_name(const klink *l);

typedef struct link_fwd {
    uint64_t deadline;     /* monotonic ms after which aosd answers TIMEOUT */
    uint32_t chain;        /* link indexes already in the call's path (cycle refusal) */
    link_done_fn done;
    link_part_fn part;     /* NULL: a streamed reply is refused (the caller cannot take it) */
    void *arg;
} link_fwd;

/* Forward a validated request. The envelope is re-encoded with aosd's link id; requests
 * wait in the table until the server is ready and are re-sent to a restarted one, unless
 * parts of their reply were passed on already (a stream is never silently restarted: the
 * caller gets UNAVAILABLE with the part count). *link_id (may be NULL) receives the id for
 * link_cancel. Returns UNAVAILABLE when the table is full (nothing kept), TOO_BIG when the
 * envelope does not fit the link. done is called exactly once, also for a cancel. */
aos_err link_forward(klink *l, const aos_env *req, const link_fwd *f, uint64_t *link_id);
/* Stop a forwarded request: the server gets CANCEL if it has it, done() gets status/err.
 * Nothing happens when it was answered already. Must not be called with a lock that
 * done() takes. */
void link_cancel(klink *l, uint64_t link_id, int status, const char *err);
/* Send an envelope to the server as it is (e.g. the REPLY to a request it made). Takes
 * m; dropped when the server is not connected (it is gone, and so is its request). */
void link_send(klink *l, nng_msg *m);
/* Answer with TIMEOUT (and tell the server CANCEL) every request past its deadline, and
 * complete a final reply that waited too long for parts it announced. */
void link_expire(klink *l, uint64_t now_mono);
/* Answer every request with status (the server is failed or aosd is stopping). */
void link_fail_all(klink *l, int status, const char *err);

void link_heartbeat(klink *l);
/* Monotonic ms of the last heartbeat echo (or of READY). */
uint64_t link_last_ack(klink *l);
/* Ask the server to finish and exit. */
void link_stop(klink *l);
size_t link_in_flight(klink *l);
/* Envelopes from this server that failed validation. */
uint64_t link_bad_messages(klink *l);
/* Messages sent to / received from the server, and how many of them were batch frames. */
void link_counts(klink *l, uint64_t *tx_msgs, uint64_t *tx_frames, uint64_t *rx_msgs,
                 uint64_t *rx_frames);

#endif
