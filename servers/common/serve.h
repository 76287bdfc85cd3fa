/* The serve loop every aos server runs: dial aosd's link, open resources, apply the
 * sandbox, report READY, then serve many requests in flight on a pool of workers. */
#ifndef AOS_SERVE_H
#define AOS_SERVE_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "pg.h"

typedef struct srv srv;               /* a running server; owned by srv_main */
typedef struct srv_stats srv_stats;   /* a stats reply being built */

/* What a handler fills in. payload is malloc'd by the handler (srv_reply_pb does it) and
 * owned by the serve loop once the handler returns, success or not. */
typedef struct srv_reply {
    uint8_t *payload;
    size_t len;
    char error[AOS_ERRMSG_MAX + 1];
} srv_reply;

/* A method handler, called on a worker thread with a validated request envelope (the
 * payload is still raw bytes: decode it and check it, aos_pb_strings_valid included).
 * Returns the status for the reply; on error, rep->error holds the detailed message. */
typedef aos_err (*srv_fn)(srv *s, const aos_env *req, srv_reply *rep);

/* A method that never blocks (no database, no I/O, bounded work) may run on the thread
 * that received it, saving the hand-off to a worker. Others run on the worker pool. */
#define SRV_INLINE 1u

typedef struct srv_method {
    const char *op;       /* "kv.put": served as "<server>.kv.put" */
    srv_fn fn;
    unsigned flags;       /* SRV_INLINE or 0 */
} srv_method;

typedef struct srv_def {
    const char *name;                    /* "storage": binary aos-storage, methods storage.* */
    const srv_method *methods;
    size_t n_methods;
    /* Database: NULL when the server has none. Its migrations run in a one-shot
     * `--migrate` process aosd starts with the admin DSN; the server itself only ever
     * connects as its own role. */
    const srv_schema *schema;
    /* Open what the server needs before the sandbox closes the door; may be NULL. */
    aos_err (*open)(srv *s, char *why, size_t whylen);
    /* Add server-specific figures to a stats reply; may be NULL. */
    void (*add_stats)(srv *s, srv_stats *st);
    void (*close)(srv *s);
    unsigned workers;                    /* 0: 4 */
} srv_def;

/* Run the server; returns the process exit code. argv: --link URL --name NAME
 * [--user USER] [--dsn-fd N] [--pg-local] [--keep PATH]... [--test-hooks], or
 * --migrate --name NAME --dsn-fd N (one-shot). The DSN comes on an inherited fd, never
 * from the environment. */
int srv_main(const srv_def *def, int argc, char **argv);

/* The server's private state, set in open(). */
void *srv_state(srv *s);
void srv_set_state(srv *s, void *state);
const char *srv_name(srv *s);
/* The libpq conninfo of the server's own role (NULL without a database); static. */
const char *srv_pg_dsn(srv *s);
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

#endif
