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
} aos_call_opts;

/* What came back. payload is owned by the reply: release with aos_reply_clear. */
typedef struct aos_reply {
    int status;                 /* aos_err of the call */
    char error[AOS_ERRMSG_MAX + 1];
    uint8_t *payload;
    size_t payload_len;
} aos_reply;

/* One syscall: send method with payload, wait for the final reply or the deadline.
 * Returns reply->status; transport failures become UNAVAILABLE or TIMEOUT with a
 * message in reply->error. Thread-safe on one connection. opts may be NULL. */
aos_err aos_call(aos_conn *c, const aos_call_opts *opts, const char *method,
                 const void *payload, size_t len, aos_reply *reply);
void aos_reply_clear(aos_reply *r);

#endif
