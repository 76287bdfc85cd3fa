/* A link is aosd's connection to one server: a PAIR1 listener only that server's pid may
 * join, and the table of requests in flight on it, kept until answered and re-sent. */
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
/* The incarnation is gone: close its pipe, keep the requests for the next one. */
void link_down(klink *l);

/* 1 while PAIR1 still holds a pipe, e.g. of an incarnation that just died: PAIR1 takes
 * one peer at a time and turns a new one away until nng has let go of the old (seen
 * taking seconds), so the next incarnation must wait for 0. force: close it now. */
int link_busy(klink *l, int force);

/* Forward a validated request. The envelope is re-encoded with aosd's link id; requests
 * wait in the table until the server is ready and are re-sent to a restarted one.
 * deadline_mono: monotonic ms after which aosd answers TIMEOUT. Returns UNAVAILABLE when
 * the table is full (nothing kept). */
aos_err link_forward(klink *l, const aos_env *req, uint64_t deadline_mono, link_done_fn done,
                     void *arg);
/* Answer with TIMEOUT (and tell the server CANCEL) every request past its deadline. */
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

#endif
