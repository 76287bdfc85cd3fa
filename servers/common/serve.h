/* The serve loop every aos server runs: dial aosd's link, open resources, apply the
 * sandbox, report READY, then serve many requests in flight, streamed and async ones too. */
#ifndef AOS_SERVE_H
#define AOS_SERVE_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/aos.h"
#include "aos/envelope.h"
#include "aos/err.h"
#include "pg.h"

typedef struct srv srv;               /* a running server; owned by srv_main */
typedef struct srv_stats srv_stats;   /* a stats reply being built */
/* One request in hand, from its arrival to its final reply. Owned by the serve loop: a
 * handler borrows it from the moment it is called until it calls srv_call_done (an async
 * handler) or returns (a srv_fn, whose reply the loop sends); after that the pointer is
 * dead. CANCEL, deadlines, retries of the same request id and the STOP drain all work on
 * calls, whatever kind of handler serves them. */
typedef struct srv_call srv_call;

/* What a handler fills in. payload is malloc'd by the handler (srv_reply_pb does it) and
 * owned by the serve loop once the handler returns, success or not. call is the request
 * being served, so that a srv_fn can stream parts (srv_call_part) before it returns; NULL
 * when the handler runs outside the serve loop (a unit test calling it directly). */
typedef struct srv_reply {
    uint8_t *payload;
    size_t len;
    char error[AOS_ERRMSG_MAX + 1];
    srv_call *call;
} srv_reply;

/* A method handler, called on a worker thread with a validated request envelope (the
 * payload is still raw bytes: decode it and check it, aos_pb_strings_valid included).
 * Returns the status for the reply; on error, rep->error holds the detailed message. */
typedef aos_err (*srv_fn)(srv *s, const aos_env *req, srv_reply *rep);

/* An asynchronous handler: called on the thread that received the request (one of nng's),
 * so it must not block. It takes the call over and answers later from any thread with
 * srv_call_part (any number of times) and then srv_call_done (exactly once). Work that
 * waits belongs on the server's own threads, which def->open starts (see srv_def). */
typedef void (*srv_async_fn)(srv *s, srv_call *call);

/* A method that never blocks (no database, no I/O, bounded work) may run on the thread
 * that received it, saving the hand-off to a worker. Others run on the worker pool.
 * Meaningful for fn only: an afn always runs on the receiving thread. */
#define SRV_INLINE 1u

typedef struct srv_method {
    const char *op;       /* "kv.put": served as "<server>.kv.put" */
    srv_fn fn;            /* exactly one of fn and afn */
    unsigned flags;       /* SRV_INLINE or 0 */
    srv_async_fn afn;
} srv_method;

typedef struct srv_def {
    const char *name;                    /* "storage": binary aos-storage, methods storage.* */
    const srv_method *methods;
    size_t n_methods;
    /* Database: NULL when the server has none. Its migrations run in a one-shot
     * `--migrate` process aosd starts with the admin DSN; the server itself only ever
     * connects as its own role. */
    const srv_schema *schema;
    /* Open what the server needs before the sandbox closes the door; may be NULL. This is
     * also where a server starts its own threads (an event loop, timers for async
     * handlers): the seccomp allow-list forbids clone() once the sandbox is on, so a
     * thread started later kills the process. open runs before any request arrives. */
    aos_err (*open)(srv *s, char *why, size_t whylen);
    /* Add server-specific figures to a stats reply; may be NULL. */
    void (*add_stats)(srv *s, srv_stats *st);
    void (*close)(srv *s);
    unsigned workers;                    /* 0: 4 */
    /* The sandbox profile (servers/common/sandbox.c) to apply instead of name's, chosen from
     * the server's configuration before the sandbox (srv_config works); NULL, or a NULL
     * answer: name's. aos-audit takes "audit-otlp", with the network, only when its
     * configuration sets an OTLP endpoint. */
    const char *(*sandbox_profile)(srv *s);
} srv_def;

/* Run the server; returns the process exit code. argv: --link URL --name NAME
 * [--user USER] [--dsn-fd N] [--config-fd N] [--pg-local] [--keep PATH]... [--test-hooks], or
 * --migrate --name NAME --dsn-fd N (one-shot). The DSN comes on an inherited fd, never
 * from the environment. */
int srv_main(const srv_def *def, int argc, char **argv);

/* The server's private state, set in open(). */
void *srv_state(srv *s);
void srv_set_state(srv *s, void *state);
const char *srv_name(srv *s);
/* The libpq conninfo of the server's own role (NULL without a database); static. */
const char *srv_pg_dsn(srv *s);
/* The server's own directory (DATA/<name>, 0700, its uid's alone, writable in its
 * sandbox), for a server aosd gives one (AOS_SRV_DIR in aos/servers.h); else NULL. */
const char *srv_dir(srv *s);
/* The agents' workspaces (DATA/workspaces, 0700, its uid's alone, writable in its
 * sandbox), for a server aosd gives them (AOS_SRV_WORKSPACES); else NULL. */
const char *srv_workspaces(srv *s);
/* 1 when aosd started the server with --test-hooks (tests and benchmarks only). */
int srv_test_hooks(srv *s);
/* What aosd handed this server on --config-fd (its part of aos.yaml, packed as the
 * server's own protobuf message; it may hold secrets such as API keys): NULL and *len 0
 * when nothing came. Owned by the serve loop, valid for the process's life. */
const uint8_t *srv_config(srv *s, size_t *len);
#define SRV_CONFIG_MAX (4u << 20)
/* The calling worker thread's own database connection (NULL if the server has none, or
 * in an SRV_INLINE method). Each worker has one, so handlers need no locking around it. */
srv_pg *srv_db(srv *s);

/* Pack m as the reply payload. */
aos_err srv_reply_pb(srv_reply *rep, const ProtobufCMessage *m);
/* Set the error text and return code, for `return srv_fail(rep, AOS_ERR_USAGE, ...)`. */
aos_err srv_fail(srv_reply *rep, aos_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Add one figure to a stats reply (text may be NULL). */
void srv_stat(srv_stats *st, const char *name, int64_t value, const char *text);

/* ---- calls: streaming, async answers, cancellation ---------------------------------- */

/* The request as it arrived (decoded and validated; the payload is still raw bytes to
 * check). Owned by the call: valid until srv_call_done (or the srv_fn's return). */
const aos_env *srv_call_env(const srv_call *c);
srv *srv_call_srv(const srv_call *c);

/* Send one part of a streamed reply: a REPLY_PART with the next index (0, 1, ...). data is
 * copied. Any thread, any time before srv_call_done; parts of one call leave in the order
 * of these calls. Blocks while the server's outbox is over its cap (the link is slower
 * than the handler: that is the back-pressure a streaming handler feels), at most until
 * the request's deadline. Returns AOS_OK; TOO_BIG for len over AOS_PART_MAX (nothing
 * sent); CANCELLED once the call was cancelled (the caller went away, aosd sent CANCEL, or
 * the deadline passed): stop the work and call srv_call_done; TIMEOUT when the deadline
 * passed while waiting for room; USAGE for a NULL call (a handler run outside the loop). */
aos_err srv_call_part(srv_call *c, const void *data, size_t len);

/* The final reply: exactly once per call, from any thread (an async handler only: for a
 * srv_fn the loop sends the reply when it returns). Copies payload (dropped when status
 * is not AOS_OK, as for srv_fn; err may be NULL: the code's own text is sent). The reply's
 * seq says how many parts were sent. The outcome is recorded for retries of the same
 * request id: one arriving later gets this final reply again (not its parts: the seq
 * still says how many there were), and one that arrived while the call ran gets it too.
 * Frees the call: c is dead when this returns. If an on_cancel function is running on
 * another thread this waits for it to return, so none runs after srv_call_done. */
void srv_call_done(srv_call *c, aos_err status, const char *err, const void *payload,
                   size_t len);

/* The hint an error reply carries (the envelope's retry_after_ms): when a retry may
 * succeed, ms from the reply; a RATE_LIMITED answer should always give one. Set it before
 * srv_call_done (a srv_fn: before it returns); ignored on a successful reply. */
void srv_call_retry_after(srv_call *c, uint64_t ms);

/* 1 once the call was cancelled (CANCEL from aosd, or its deadline passed). */
int srv_call_cancelled(const srv_call *c);

/* Have fn(c, arg) run once when the call is cancelled: on the receive thread when CANCEL
 * arrives or on the serve loop's deadline tick, or at once on this thread if it already
 * was. It must not block nor take a lock held around srv_call_done or srv_call_part (it
 * may run while those wait for it); it may call srv_call_done itself. Replaces an earlier
 * fn; never runs after srv_call_done. */
void srv_call_on_cancel(srv_call *c, void (*fn)(srv_call *c, void *arg), void *arg);

/* ---- outbound calls: this server calling another one's method, through aosd ---------- */

/* Call method (another server's, "storage.kv.get") with payload, as part of the work for
 * parent (NULL: none), and wait for its final reply. aosd routes it, checks this server's
 * right to call it, refuses call cycles and holds the deadline to the parent's: the
 * deadline sent is now + timeout_ms (0: the parent's remaining time, or 30 s without a
 * parent), never later than the parent's. Streamed parts of the answer are not delivered:
 * only the final reply. Returns out->status; out->payload is malloc'd and the caller owns
 * it (aos_reply_clear). Blocks: for workers and the server's own threads, never an afn, an
 * SRV_INLINE handler or an on_cancel function (they run on the receive threads that the
 * reply comes in on). TIMEOUT when no reply came by the deadline. */
aos_err srv_request(srv *s, const srv_call *parent, const char *method, const void *payload,
                    size_t len, uint32_t timeout_ms, aos_reply *out);

/* The same without waiting. AOS_OK: done(arg, r) will run exactly once, on a receive
 * thread when the reply arrives or on the deadline tick (status TIMEOUT). Any other
 * return (USAGE for a bad method name, TOO_BIG, TIMEOUT when the parent's deadline has
 * passed, UNAVAILABLE when too many requests wait already): nothing was sent and done
 * never runs. r and its payload belong to the serve loop and are valid only during done;
 * done must not block (it may start another request). */
aos_err srv_request_async(srv *s, const srv_call *parent, const char *method,
                          const void *payload, size_t len, uint32_t timeout_ms,
                          void (*done)(void *arg, const aos_reply *r), void *arg);

/* The front door's call (aos-api only): method as the agent whose API key hashes to
 * key_hash (BLAKE2b-256 of the key the HTTP client presented). aosd maps the hash to the
 * agent, checks that agent's rights and runs the call as its syscall; this server's own
 * identity gives it nothing. part (may be NULL) gets each streamed part as it comes, on a
 * receive thread, under a lock: copy and return, never block nor call back into the serve
 * loop. Otherwise as srv_request_async (no parent). */
aos_err srv_request_front(srv *s, const uint8_t key_hash[AOS_KEY_HASH_LEN],
                          const char *method, const void *payload, size_t len,
                          uint32_t timeout_ms,
                          void (*part)(void *arg, uint32_t seq, const uint8_t *data,
                                       size_t len),
                          void (*done)(void *arg, const aos_reply *r), void *arg,
                          uint8_t id_out[AOS_ID_LEN]);
/* Ask aosd to cancel an outbound request of ours (id from srv_request_front's id_out):
 * its caller went away. Its done still runs once, with CANCELLED or whatever came first;
 * nothing happens for a request already answered. Never blocks. */
void srv_request_cancel(srv *s, const uint8_t id[AOS_ID_LEN]);

/* ---- the audit log ------------------------------------------------------------------- */

/* One decision detail for the audit log (kind "tool.run", "llm.reply", ...; body a JSON
 * text, borrowed, its secrets already redacted), sent with audit.emit under call's trace,
 * run and step, without waiting: aosd's own record of the syscall is what gates it. */
void srv_emit(srv *s, srv_call *call, const char *kind, aos_err status, const char *body);
/* Contents for the audit log (servers/audit/contents.h): large bodies a detail names by
 * digest, stored once in audit.contents in the same commit as the detail. A producer adds
 * each body (copied) and gets its digest, and lists the digests of those kept in its body's
 * top-level "contents" array; past the caps (one body over 1 MiB, over 256 bodies or 2 MiB
 * in one emit) a body is not kept and the detail names it by digest only. */
#define SRV_CONTENT_MAX (1u << 20)
#define SRV_CONTENTS_MAX 256u
#define SRV_CONTENTS_BYTES (2u << 20)
typedef struct srv_contents srv_contents;
/* A new empty set (NULL: out of memory, and then every add says "not kept"). */
srv_contents *srv_contents_new(void);
/* Add p[0..n): its digest into hex (65 bytes, as srv_blake2b_hex); 1 when it is kept (or
 * was already), 0 when a cap or memory kept it out. c NULL: 0. */
int srv_contents_add(srv_contents *c, const void *p, size_t n, char hex[65]);
size_t srv_contents_count(const srv_contents *c);
void srv_contents_free(srv_contents *c);
/* srv_emit with the contents of c (borrowed; NULL: none). */
void srv_emit_with(srv *s, srv_call *call, const char *kind, aos_err status, const char *body,
                   const srv_contents *c);
/* BLAKE2b-256 of p[0..n) as 64 hex digits into out (65 bytes): how details name contents
 * they do not carry (an output, a message, a result). */
void srv_blake2b_hex(const void *p, size_t n, char out[65]);

#endif
