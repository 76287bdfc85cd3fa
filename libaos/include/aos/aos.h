/* libaos: the syscall API that agents and aosctl link. A connection to aosd carries many
 * calls in flight at once (one nng context per call), from any number of threads. */
#ifndef AOS_AOS_H
#define AOS_AOS_H

#include <stddef.h>
#include <stdint.h>

#include "aos/envelope.h"
#include "aos/err.h"

#define AOS_PATH_MAX 108          /* a Unix socket path must fit sun_path */
#define AOS_DEFAULT_TIMEOUT_MS 30000u

typedef struct aos_conn aos_conn;

/* The data dir: dir if given, else $AOS_DATA_DIR, else /var/lib/aos for root, else
 * $XDG_DATA_HOME/aos, else $HOME/.local/share/aos. Written into out (cap bytes). */
aos_err aos_data_dir(const char *dir, char *out, size_t cap);
/* The control socket's URL for a data dir: ipc://DIR/control.sock. */
aos_err aos_control_url(const char *data_dir, char *out, size_t cap);

/* Connect to aosd at url (an nng URL such as the control URL). On success the caller
 * owns *out and closes it with aos_close. why (may be NULL) receives the reason. */
aos_err aos_connect(const char *url, aos_conn **out, char *why, size_t whylen);
void aos_close(aos_conn *c);

typedef struct aos_call_opts {
    const uint8_t *request_id;  /* 16 bytes to retry a call idempotently; NULL: fresh id */
    const char *agent_id;       /* acting agent (honoured on the control socket only) */
    uint32_t timeout_ms;        /* 0: AOS_DEFAULT_TIMEOUT_MS; also sent as the deadline */
    const char *run_id;         /* the durable run the call belongs to (NULL or "": none) */
    uint32_t step;              /* its step in that run; the audit log records both */
} aos_call_opts;

/* What came back. payload is owned by the reply: release with aos_reply_clear. */
typedef struct aos_reply {
    int status;                 /* aos_err of the call */
    char error[AOS_ERRMSG_MAX + 1];
    uint8_t *payload;           /* the final reply's payload */
    size_t payload_len;
    uint32_t parts;             /* streamed parts that arrived (and were handed on) */
    uint32_t parts_total;       /* the final reply's count of the parts the server made
                                   (its seq); 0 when no final reply came. A replay of a
                                   request id already answered is the final alone: parts
                                   0, parts_total the first run's count */
    uint64_t retry_after_ms;    /* on an error (RATE_LIMITED above all): the server's word on
                                   when a retry may succeed, ms from the reply; 0: none */
} aos_reply;

/* One syscall: send method with payload, wait for the final reply or the deadline.
 * Returns reply->status; transport failures become UNAVAILABLE or TIMEOUT with a
 * message in reply->error. Thread-safe on one connection. opts may be NULL. A streamed
 * answer is pulled to its end and its parts are dropped (counted in reply->parts). */
aos_err aos_call(aos_conn *c, const aos_call_opts *opts, const char *method,
                 const void *payload, size_t len, aos_reply *reply);
void aos_reply_clear(aos_reply *r);

/* One part of a streamed reply, in order: seq is its index (0, 1, ...) in the stream.
 * data (len bytes, at most AOS_PART_MAX; NULL when len is 0) belongs to libaos and is
 * valid only during the call: copy what you keep. Runs on the calling thread. Return 0
 * to go on, nonzero to give up: the call then cancels the stream and returns CANCELLED. */
typedef int (*aos_part_fn)(void *arg, uint32_t seq, const uint8_t *data, size_t len);

/* aos_call for a method whose answer streams: each part goes to on_part (with arg) as it
 * arrives, then reply gets the final answer as with aos_call. The stream is pulled from
 * aosd on the call's own context, so it runs under the call's one deadline (opts
 * timeout_ms) and many streams may run at once on one connection, from any threads.
 * Returns reply->status: the final's status and text as aosd sent them (e.g. UNAVAILABLE
 * when the server died mid-stream, or a cap error for a reader that lagged), CANCELLED
 * when on_part gave up, TIMEOUT at the deadline, PROTO for a chunk out of order (a gap
 * or a repeat) or a part over AOS_PART_MAX. reply->parts says how many parts on_part got.
 * on_part may be NULL (parts are dropped, as aos_call does). */
aos_err aos_call_stream(aos_conn *c, const aos_call_opts *opts, const char *method,
                        const void *payload, size_t len, aos_part_fn on_part, void *arg,
                        aos_reply *reply);

#endif
