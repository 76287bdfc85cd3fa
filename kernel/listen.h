/* A bounded nng listener: every socket aosd listens on goes through it, so each has a
 * cap on connections, a deadline for a first message, and refusal lines rate-limited. */
#ifndef AOS_LISTEN_H
#define AOS_LISTEN_H

#include <stddef.h>
#include <stdint.h>
#include <nng/nng.h>

#include "aos/err.h"

/* What nng 1.5.2 does and does not let us bound (its source, tag v1.5.2):
 * - Before a connection is a pipe, nng alone holds it: src/sp/transport/ipc/ipc.c accepts
 *   without limit (ipc_ep_accept_cb) and gives each connection 10 s to exchange the 8-byte
 *   SP header (ipc_pipe_start: nni_aio_set_timeout(&p->neg_aio, 10000)), a constant with no
 *   option. The 10 s restart at every partial read (src/core/aio.c nni_aio_schedule), so a
 *   peer that trickles the header a byte at a time holds its fd for at most ~80 s. No
 *   callback runs in that phase: no cap on it is possible from outside nng; what bounds it is
 *   that timer and aosd's RLIMIT_NOFILE (on EMFILE nng retries accept every 10 ms).
 * - Once the header is through, the pipe exists and NNG_PIPE_EV_ADD_PRE runs: from here on
 *   this listener counts it, caps it, and (when silent_ms is set) closes a pipe whose peer has
 *   sent nothing within silent_ms: a peer that finished nng's handshake but never speaks
 *   would otherwise hold its fd for ever. REM_POST runs for every pipe whose ADD_PRE ran
 *   (src/core/socket.c nni_pipe_run_cb, src/core/pipe.c pipe_destroy), refused ones too. */

typedef struct lsn lsn;

/* Decides in ADD_PRE whether pipe p may stay: 0 yes; else it writes the reason (logged,
 * rate-limited) and the pipe is closed. Runs on an nng thread. */
typedef int (*lsn_admit_fn)(void *arg, nng_pipe p, char *why, size_t whylen);
/* Told of ADD_POST and REM_POST for every pipe (admitted or not), on an nng thread. */
typedef void (*lsn_event_fn)(void *arg, nng_pipe p, nng_pipe_ev ev);

typedef struct lsn_opts {
    const char *what;       /* for log lines: "control socket", "storage link" */
    unsigned max_pipes;     /* pipes at once, refused ones included until nng reaps them */
    unsigned max_silent;    /* pipes that have not spoken yet; beyond, the oldest is closed */
    unsigned silent_ms;     /* 0: no first-message deadline */
    int mode;               /* NNG_OPT_IPC_PERMISSIONS of the socket file */
    lsn_admit_fn admit;     /* may be NULL: admit all */
    lsn_event_fn on_event;  /* may be NULL */
    void *arg;
} lsn_opts;

/* Listen on url with sock, which must have no pipe callbacks of its own (the listener
 * takes ADD_PRE, ADD_POST and REM_POST). o->what is copied. */
aos_err lsn_open(lsn **out, nng_socket sock, const char *url, const lsn_opts *o, char *why,
                 size_t whylen);
/* The peer of p sent a message: it is past its first-message deadline for good. Cheap
 * (no lock) while no pipe is silent. */
void lsn_heard(lsn *l, nng_pipe p);
/* No new connections; the timer stopped. The lsn itself stays (freed at exit) since nng
 * may still run a pipe callback for a closing pipe. */
void lsn_close(lsn *l);

/* Counters, for status and tests. */
unsigned lsn_pipes(lsn *l);
uint64_t lsn_refused(lsn *l);
uint64_t lsn_silenced(lsn *l);

#endif
