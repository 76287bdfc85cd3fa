/* The libaos client: finds the data dir, connects to aosd over nng REQ and makes calls (a
 * streamed answer pulled chunk by chunk), one nng context per call so threads share one. */
#include "aos/aos.h"
#include "aos/bounded.h"
#include "aos.pb-c.h"
#include "aos/err.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#define IPC_PREFIX "ipc://"
/* The largest request envelope sent. aosd's NNG_OPT_RECVMAXSZ (AOS_MSG_MAX) counts nng's
 * 4-byte REQ header as well, and aosd adds its link id and PAIR1's hop count on the way to
 * the server: an envelope at AOS_MSG_MAX itself would be cut off at the transport, which a
 * caller sees as a lost connection (or, when it retries, as a hang). Refused before. */
#define REQ_ENV_MAX (AOS_MSG_MAX - 256u)
/* How long aos_close waits for nng_close: nng 1.5.2's close can wait for ever for a pipe
 * whose peer cut the connection mid-send, and a caller must never hang in a close. */
#define CLOSE_WAIT_MS 2000u
#define URL_MAX (sizeof IPC_PREFIX + AOS_PATH_MAX)
/* A stream's pulls and its cancel, answered by aosd itself. The cancel's answer is awaited
 * this long at most: it only tells us aosd has it, and aosd cancels at the deadline or
 * when the connection closes anyway. */
#define M_NEXT "kernel.stream.next"
#define M_CANCEL "kernel.stream.cancel"
#define CANCEL_WAIT_MS 1000u

/* Idle (context, aio) pairs kept for the next call: opening and freeing them per call
 * cost as much as the round trip's own work. */
#define CALL_POOL 64
typedef struct call_slot {
    nng_ctx ctx;
    nng_aio *aio;
} call_slot;

struct aos_conn {
    nng_socket sock;
    pthread_mutex_t pool_mu;
    call_slot pool[CALL_POOL];
    int npool;
    char url[URL_MAX];
    /* uid+1 of the last peer of another user seen by the pipe callback (0: none). */
    atomic_ullong rejected_uid;
    atomic_int connected; /* aos_connect has returned it */
};


/* Copies s[0..n) into out, without trailing slashes ("/" stays "/"). */
static aos_err put_dir(char *out, size_t cap, const char *s, size_t n, const char *suffix)
{
    while (n > 1 && s[n - 1] == '/')
        n--;
    size_t sl = suffix ? strlen(suffix) : 0;
    if (n == 0)
        return AOS_ERR_USAGE;
    if (n + sl + 1 > cap || n + sl >= PATH_MAX)
        return AOS_ERR_TOO_BIG;
    memcpy(out, s, n);
    if (sl)
        memcpy(out + n, suffix, sl);
    out[n + sl] = 0;
    return AOS_OK;
}

static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

aos_err aos_data_dir(const char *dir, char *out, size_t cap)
{
    if (!out || cap == 0)
        return AOS_ERR_USAGE;
    if (dir)
        return put_dir(out, cap, dir, strlen(dir), NULL);
    const char *v = env_set("AOS_DATA_DIR");
    if (v)
        return put_dir(out, cap, v, strlen(v), NULL);
    if (geteuid() == 0)
        return put_dir(out, cap, "/var/lib/aos", strlen("/var/lib/aos"), NULL);
    /* XDG says a relative XDG_DATA_HOME is invalid and must be ignored */
    v = env_set("XDG_DATA_HOME");
    if (v && v[0] == '/')
        return put_dir(out, cap, v, strlen(v), "/aos");
    v = env_set("HOME");
    if (!v) {
        struct passwd pw, *res = NULL;
        char buf[4096];
        if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &res) != 0 || !res ||
            !res->pw_dir || !*res->pw_dir)
            return AOS_ERR_NOT_FOUND;
        return put_dir(out, cap, res->pw_dir, strlen(res->pw_dir), "/.local/share/aos");
    }
    return put_dir(out, cap, v, strlen(v), "/.local/share/aos");
}

aos_err aos_control_url(const char *data_dir, char *out, size_t cap)
{
    static const char sock[] = "/control.sock";
    if (!data_dir || !*data_dir || !out || cap == 0)
        return AOS_ERR_USAGE;
    size_t n = strlen(data_dir);
    while (n > 1 && data_dir[n - 1] == '/')
        n--;
    if (n == 1 && data_dir[0] == '/')
        n = 0; /* "/" + "/control.sock" would double the slash */
    /* sun_path holds AOS_PATH_MAX bytes including the NUL */
    if (n + strlen(sock) >= AOS_PATH_MAX || strlen(IPC_PREFIX) + n + strlen(sock) >= cap)
        return AOS_ERR_TOO_BIG;
    snprintf(out, cap, "%s%.*s%s", IPC_PREFIX, (int)n, data_dir, sock);
    return AOS_OK;
}

/* In a user namespace of its own (an agent's sandbox, which aosd made as root; bubblewrap
 * may nest two), the kernel shows the host's root, and every uid not mapped, as the overflow
 * uid. Only there may that uid stand for root: a sandbox's socket directory is a read-only
 * bind nobody outside can put a substitute into. In the initial namespace (uid_map is the
 * identity over every uid) the overflow uid is just nobody, and refused. */
static int root_unmapped_as(uint64_t uid)
{
    static atomic_int cached = -1; /* -1 unknown, else 1 in a namespace of our own */
    static unsigned long overflow = 65534;
    int c = atomic_load(&cached);
    if (c < 0) {
        FILE *f = fopen("/proc/sys/kernel/overflowuid", "re");
        unsigned long ov = 65534;
        if (f) {
            if (fscanf(f, "%lu", &ov) != 1)
                ov = 65534;
            fclose(f);
        }
        overflow = ov;
        c = 0;
        f = fopen("/proc/self/uid_map", "re");
        if (f) {
            unsigned long in, out, n;
            c = !(fscanf(f, "%lu %lu %lu", &in, &out, &n) == 3 && in == 0 && out == 0 &&
                  n == 4294967295ul);
            fclose(f);
        }
        atomic_store(&cached, c);
    }
    return c && uid == overflow;
}

/* The peer of an ipc pipe must run as us or as root, like the socket file itself: this
 * catches a substitute that took the socket path between the lstat and the dial, or while
 * the dialer reconnects after aosd restarted. */
static void pipe_check(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct aos_conn *c = arg;
    uint64_t uid;
    (void)ev;
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) != 0)
        return; /* not an ipc pipe (tcp://): nothing to check */
    if (uid == 0 || uid == (uint64_t)geteuid() || root_unmapped_as(uid))
        return;
    atomic_store(&c->rejected_uid, (unsigned long long)uid + 1);
    /* During aos_connect no call can be queued yet and aos_connect closes the whole
     * socket, which is the clean path: nng 1.5.2 leaks a pipe rejected here (seen under
     * LeakSanitizer). Later, a request could be waiting to go out: reject the pipe. */
    if (atomic_load(&c->connected))
        nng_pipe_close(p);
}

/* Refuses a socket path that is not a socket owned by us or root before dialing it. */
static aos_err check_socket(const char *path, char *why, size_t whylen)
{
    struct stat st;
    if (strlen(path) >= AOS_PATH_MAX) {
        aos_say(why, whylen, "socket path %s is longer than %d bytes", path, AOS_PATH_MAX - 1);
        return AOS_ERR_TOO_BIG;
    }
    if (lstat(path, &st) != 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) {
            aos_say(why, whylen, "no socket at %s", path);
            return AOS_ERR_UNAVAILABLE;
        }
        aos_say(why, whylen, "cannot reach %s: %s", path, strerror(e));
        return e == EACCES || e == EPERM ? AOS_ERR_REFUSED : AOS_ERR_UNAVAILABLE;
    }
    if (!S_ISSOCK(st.st_mode)) {
        aos_say(why, whylen, "%s is not a socket: refusing to use it", path);
        return AOS_ERR_REFUSED;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid() && !root_unmapped_as(st.st_uid)) {
        aos_say(why, whylen, "%s belongs to uid %u, not to us (uid %u) or root: refusing to use it",
            path, (unsigned)st.st_uid, (unsigned)geteuid());
        return AOS_ERR_REFUSED;
    }
    return AOS_OK;
}

static aos_err dial_err(int rv, const char *url, char *why, size_t whylen)
{
    switch (rv) {
    case NNG_ECONNREFUSED:
        /* the socket file outlived its server, e.g. after a kill -9 */
        aos_say(why, whylen, "nothing accepts connections at %s, a stale socket",
            strncmp(url, IPC_PREFIX, strlen(IPC_PREFIX)) ? url : url + strlen(IPC_PREFIX));
        return AOS_ERR_UNAVAILABLE;
    case NNG_ENOENT:
        aos_say(why, whylen, "no socket at %s",
            strncmp(url, IPC_PREFIX, strlen(IPC_PREFIX)) ? url : url + strlen(IPC_PREFIX));
        return AOS_ERR_UNAVAILABLE;
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP:
        aos_say(why, whylen, "cannot dial %s: %s", url, nng_strerror(rv));
        return AOS_ERR_USAGE;
    case NNG_EPERM:
        aos_say(why, whylen, "cannot dial %s: %s", url, nng_strerror(rv));
        return AOS_ERR_REFUSED;
    case NNG_ENOMEM:
        aos_say(why, whylen, "cannot dial %s: out of memory", url);
        return AOS_ERR_NOMEM;
    case NNG_ETIMEDOUT:
        aos_say(why, whylen, "dialing %s timed out", url);
        return AOS_ERR_TIMEOUT;
    default:
        aos_say(why, whylen, "cannot dial %s: %s", url, nng_strerror(rv));
        return AOS_ERR_UNAVAILABLE;
    }
}

/* ---- bounded close -------------------------------------------------------------------
 * The teardown of a connection runs on a detached thread; the caller waits CLOSE_WAIT_MS
 * for it. When nng hangs, the caller goes on and the thread, the socket and the aos_conn
 * (its pipe callback's argument, so it must outlive any callback) are left to the process
 * exit: a bounded leak instead of an unbounded wait. */
/* Everything nng holds for c, then c itself. May block inside nng. */
static void conn_teardown(void *arg)
{
    struct aos_conn *c = arg;
    for (int i = 0; i < c->npool; i++) {
        nng_aio_free(c->pool[i].aio);
        nng_ctx_close(c->pool[i].ctx);
    }
    nng_close(c->sock);
    pthread_mutex_destroy(&c->pool_mu);
    free(c);
}

/* 1 when c was torn down within CLOSE_WAIT_MS, 0 when it was left to the exit. */
static int conn_close_bounded(struct aos_conn *c)
{
    return aos_run_bounded(conn_teardown, c, CLOSE_WAIT_MS);
}

aos_err aos_connect(const char *url, aos_conn **out, char *why, size_t whylen)
{
    aos_err err = AOS_OK;
    struct aos_conn *c = NULL;
    int rv, opened = 0;

    if (why && whylen)
        why[0] = 0;
    if (!out || !url || !*url) {
        aos_say(why, whylen, "aos_connect needs a URL and a place for the connection");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    if (strlen(url) >= URL_MAX) {
        aos_say(why, whylen, "URL of %zu bytes is too long (max %zu)", strlen(url), URL_MAX - 1);
        return AOS_ERR_TOO_BIG;
    }
    int ipc = strncmp(url, IPC_PREFIX, strlen(IPC_PREFIX)) == 0;
    if (ipc && (err = check_socket(url + strlen(IPC_PREFIX), why, whylen)) != AOS_OK)
        return err;

    c = calloc(1, sizeof *c);
    if (!c) {
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    snprintf(c->url, sizeof c->url, "%s", url);
    pthread_mutex_init(&c->pool_mu, NULL);
    atomic_init(&c->rejected_uid, 0);
    atomic_init(&c->connected, 0);
    if ((rv = nng_req0_open(&c->sock)) != 0) {
        aos_say(why, whylen, "cannot open a REQ socket: %s", nng_strerror(rv));
        err = rv == NNG_ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_INTERNAL;
        goto out;
    }
    opened = 1;
    /* aosd keeps each request until it is answered, so a REQ resend would only make it
     * see the same request twice */
    if ((rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
        (ipc && (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_PRE, pipe_check, c)) != 0)) {
        aos_say(why, whylen, "cannot set up the REQ socket: %s", nng_strerror(rv));
        err = AOS_ERR_INTERNAL;
        goto out;
    }
    /* synchronous, so "aosd is not running" is known now and not at the first call */
    if ((rv = nng_dial(c->sock, url, NULL, 0)) != 0) {
        err = dial_err(rv, url, why, whylen);
        goto out;
    }
    unsigned long long bad = atomic_load(&c->rejected_uid);
    if (bad) {
        aos_say(why, whylen, "the peer at %s runs as uid %llu, not as us (uid %u) or root: "
            "refusing to talk to it", url, bad - 1, (unsigned)geteuid());
        err = AOS_ERR_REFUSED;
        goto out;
    }
    atomic_store(&c->connected, 1);
    *out = c;
    return AOS_OK;
out:
    if (opened) /* a pipe may exist (a peer of another uid): bounded, like aos_close */
        conn_close_bounded(c);
    else {
        pthread_mutex_destroy(&c->pool_mu);
        free(c);
    }
    return err;
}

void aos_close(aos_conn *c)
{
    if (c)
        conn_close_bounded(c);
}

/* A context and aio for one call: from the pool, or new. */
static int slot_take(aos_conn *c, call_slot *sl)
{
    pthread_mutex_lock(&c->pool_mu);
    if (c->npool > 0) {
        *sl = c->pool[--c->npool];
        pthread_mutex_unlock(&c->pool_mu);
        return 0;
    }
    pthread_mutex_unlock(&c->pool_mu);
    int rv = nng_ctx_open(&sl->ctx, c->sock);
    if (rv != 0)
        return rv;
    if ((rv = nng_aio_alloc(&sl->aio, NULL, NULL)) != 0) {
        nng_ctx_close(sl->ctx);
        return rv;
    }
    return 0;
}

/* Back to the pool after a clean call; closed after a failed one (a late reply must not
 * meet the next caller) or when the pool is full. */
static void slot_give(aos_conn *c, call_slot *sl, int clean)
{
    if (clean) {
        pthread_mutex_lock(&c->pool_mu);
        if (c->npool < CALL_POOL) {
            c->pool[c->npool++] = *sl;
            pthread_mutex_unlock(&c->pool_mu);
            return;
        }
        pthread_mutex_unlock(&c->pool_mu);
    }
    nng_aio_free(sl->aio);
    nng_ctx_close(sl->ctx);
}

void aos_reply_clear(aos_reply *r)
{
    if (!r)
        return;
    free(r->payload);
    memset(r, 0, sizeof *r);
}

static aos_err fail(aos_reply *r, aos_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aos_err fail(aos_reply *r, aos_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    r->status = err;
    return err;
}

/* Maps an nng error of a call to ours; sent says whether the request left us. */
static aos_err call_err(aos_reply *r, int rv, int sent, const char *method, uint32_t ms,
                        const aos_conn *c)
{
    switch (rv) {
    case NNG_ETIMEDOUT:
        if (!sent) {
            unsigned long long bad = atomic_load(&c->rejected_uid);
            if (bad)
                return fail(r, AOS_ERR_REFUSED, "%s: the peer at %s runs as uid %llu: "
                            "refusing to talk to it", method, c->url, bad - 1);
            /* nothing was sent, so retrying later is safe and is what the caller needs */
            return fail(r, AOS_ERR_UNAVAILABLE, "%s: no connection to aosd at %s within "
                        "%u ms", method, c->url, ms);
        }
        return fail(r, AOS_ERR_TIMEOUT, "%s: no reply within %u ms", method, ms);
    case NNG_ECLOSED:
        return fail(r, AOS_ERR_UNAVAILABLE, "%s: the connection is closed", method);
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
    case NNG_ECONNREFUSED:
        return fail(r, AOS_ERR_UNAVAILABLE, "%s: connection to aosd lost: %s", method,
                    nng_strerror(rv));
    case NNG_ENOMEM:
        return fail(r, AOS_ERR_NOMEM, "%s: out of memory", method);
    case NNG_EMSGSIZE:
        return fail(r, AOS_ERR_TOO_BIG, "%s: message larger than %u bytes", method,
                    AOS_MSG_MAX);
    default:
        return fail(r, AOS_ERR_UNAVAILABLE, "%s: %s", method, nng_strerror(rv));
    }
}

/* ---- calls and pulled streams ----------------------------------------------------------
 * A REQ/REP exchange answers once, so a streamed answer is pulled: the reply to the request
 * is either the final REPLY or a REPLY_PART holding a StreamChunk, and each
 * kernel.stream.next on the same context (same request id, same deadline) fetches the next
 * chunk until the final. aosd answers a pull with the parts it holds; a reader that lags
 * past aosd's cap on held bytes gets the cap error (QUOTA) as its final. */

/* One call in progress: what every request of its stream repeats, and its context. */
typedef struct call {
    call_slot sl;
    const char *method;        /* the caller's method, for every message about the call */
    uint8_t id[AOS_ID_LEN];
    const char *agent;         /* NULL: none */
    const char *run;           /* NULL: none */
    uint32_t step;
    uint64_t deadline_ms;      /* wall clock, sent with each request of the call */
    uint64_t end;              /* the same deadline on the monotonic clock */
    uint32_t ms;
    int idle;                  /* no request of ours is out on the context: it may be reused */
} call;

/* Encodes one request of call k into a new message (the caller owns *out). */
static aos_err call_encode(const call *k, const char *method, const void *payload, size_t len,
                           nng_msg **out)
{
    aos_env env;
    aos_env_init(&env, AOS_KIND_REQUEST);
    memcpy(env.request_id, k->id, AOS_ID_LEN);
    env.has_request_id = 1;
    snprintf(env.method, sizeof env.method, "%s", method);
    if (k->agent)
        snprintf(env.agent_id, sizeof env.agent_id, "%s", k->agent);
    if (k->run) {
        snprintf(env.run_id, sizeof env.run_id, "%s", k->run);
        env.step = k->step;
    }
    env.deadline_ms = k->deadline_ms;
    env.payload = payload;
    env.payload_len = len;
    return aos_env_encode(&env, out);
}

/* Sends m (always taken) on k's context and waits for its reply (*out, caller owns it),
 * within the call's deadline and, when cap_ms is not 0, within cap_ms. Returns an nng
 * error; *sent says whether m left us. nng 1.5.2 has no nng_ctx_sendmsg/recvmsg: one
 * synchronous aio does both halves on one budget, since the wait to be sent counts
 * against the deadline too. */
static int round_trip(call *k, nng_msg *m, uint32_t cap_ms, nng_msg **out, int *sent)
{
    nng_aio *aio = k->sl.aio;
    *out = NULL;
    *sent = 0;
    uint64_t now = aos_mono_ms();
    if (now >= k->end) {
        nng_msg_free(m);
        return NNG_ETIMEDOUT;
    }
    uint64_t left = k->end - now;
    if (cap_ms && cap_ms < left)
        left = cap_ms;
    nng_aio_set_msg(aio, m);
    nng_aio_set_timeout(aio, (nng_duration)left);
    k->idle = 0; /* from here a reply may be on its way to this context */
    nng_ctx_send(k->sl.ctx, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    if (rv != 0) {
        nng_msg_free(nng_aio_get_msg(aio)); /* a failed send leaves the message with us */
        nng_aio_set_msg(aio, NULL);
        return rv;
    }
    *sent = 1;
    now = aos_mono_ms();
    left = now >= k->end ? 1 : k->end - now;
    if (cap_ms && cap_ms < left)
        left = cap_ms;
    nng_aio_set_timeout(aio, (nng_duration)left);
    nng_ctx_recv(k->sl.ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        return rv;
    *out = nng_aio_get_msg(aio);
    nng_aio_set_msg(aio, NULL);
    k->idle = 1;
    return 0;
}

/* Tells aosd the caller gives up on the stream, and waits (CANCEL_WAIT_MS at most, never
 * past the deadline) for its answer, which says nothing we need. Past the deadline aosd
 * expires the request itself, so nothing is sent then. */
static void stream_cancel(call *k)
{
    nng_msg *m, *rep;
    int sent;
    uint64_t now = aos_mono_ms();
    if (now >= k->end || call_encode(k, M_CANCEL, NULL, 0, &m) != AOS_OK)
        return;
    if (round_trip(k, m, CANCEL_WAIT_MS, &rep, &sent) == 0)
        nng_msg_free(rep);
}

/* Adds how far a stream had got to a failed call's message. */
static void note_parts(aos_reply *r, int streaming)
{
    size_t n = strlen(r->error);
    if (streaming && n < sizeof r->error)
        snprintf(r->error + n, sizeof r->error - n, " (the stream stopped after %u parts)",
                 r->parts);
}

/* The final REPLY env into r. An OK final must count exactly the parts that arrived:
 * anything else means parts were lost or repeated on the way. Except a final alone: the
 * serve loop answers a request id it already answered with the recorded final only,
 * whose count is still that of the first run's parts (a durable step's retry after a
 * crash gets that), and the parts of one call come in order before its final. */
static aos_err take_final(aos_reply *r, const aos_env *env, const char *method)
{
    r->parts_total = env->seq;
    /* a hint, capped at a day: a hostile or broken server cannot park a caller forever */
    r->retry_after_ms = env->retry_after_ms < 86400000u ? env->retry_after_ms : 86400000u;
    if (env->status == AOS_OK && env->seq != r->parts && r->parts != 0)
        return fail(r, AOS_ERR_PROTO, "%s: the final reply counts %u parts but %u arrived",
                    method, env->seq, r->parts);
    if (env->payload_len) {
        r->payload = malloc(env->payload_len);
        if (!r->payload)
            return fail(r, AOS_ERR_NOMEM, "%s: no memory for a %zu-byte reply", method,
                        env->payload_len);
        memcpy(r->payload, env->payload, env->payload_len);
        r->payload_len = env->payload_len;
    }
    r->status = env->status;
    if (env->status != AOS_OK) {
        if (env->error[0])
            memcpy(r->error, env->error, sizeof r->error);
        else
            snprintf(r->error, sizeof r->error, "%s: %s", method, aos_strerror(env->status));
    }
    return env->status;
}

/* Checks the whole chunk in env (a REPLY_PART) before handing any of its parts on, in
 * order, to fn. *stop is set when fn gave up; r->parts counts the parts fn got. */
static aos_err take_chunk(aos_reply *r, const aos_env *env, const char *method,
                          aos_part_fn fn, void *arg, int *stop)
{
    aos_err err = AOS_OK;
    Aos__StreamChunk *ch = aos__stream_chunk__unpack(NULL, env->payload_len, env->payload);
    if (!ch)
        return fail(r, AOS_ERR_PROTO, "%s: a streamed part from aosd is not a StreamChunk",
                    method);
    if (ch->first_seq != env->seq) {
        err = fail(r, AOS_ERR_PROTO, "%s: a chunk that starts at part %u in an envelope of "
                   "part %u", method, ch->first_seq, env->seq);
        goto out;
    }
    if (ch->first_seq != r->parts) {
        err = fail(r, AOS_ERR_PROTO, "%s: parts out of order: part %u came where part %u "
                   "was due (%s)", method, ch->first_seq, r->parts,
                   ch->first_seq > r->parts ? "a gap" : "a repeat");
        goto out;
    }
    if ((uint64_t)ch->first_seq + ch->n_parts > UINT32_MAX) {
        err = fail(r, AOS_ERR_PROTO, "%s: a chunk of %zu parts from part %u overflows the "
                   "part count", method, ch->n_parts, ch->first_seq);
        goto out;
    }
    for (size_t i = 0; i < ch->n_parts; i++)
        if (ch->parts[i].len > AOS_PART_MAX) {
            err = fail(r, AOS_ERR_PROTO, "%s: part %u is %zu bytes, over the %u-byte cap",
                       method, ch->first_seq + (uint32_t)i, ch->parts[i].len, AOS_PART_MAX);
            goto out;
        }
    for (size_t i = 0; i < ch->n_parts && !*stop; i++) {
        const ProtobufCBinaryData *p = &ch->parts[i];
        if (fn && fn(arg, r->parts, p->len ? p->data : NULL, p->len) != 0)
            *stop = 1;
        r->parts++;
    }
out:
    aos__stream_chunk__free_unpacked(ch, NULL);
    return err;
}

static aos_err call_run(aos_conn *c, const aos_call_opts *opts, const char *method,
                        const void *payload, size_t len, aos_part_fn fn, void *arg,
                        aos_reply *reply)
{
    nng_msg *m = NULL;
    aos_env env;
    aos_err err;
    int rv, sent, have_ctx = 0, streaming = 0;
    call k = {.method = method};

    if (!reply)
        return AOS_ERR_USAGE;
    memset(reply, 0, sizeof *reply);
    if (!c)
        return fail(reply, AOS_ERR_USAGE, "aos_call without a connection");
    if (!method || !aos_method_valid(method, strlen(method)))
        return fail(reply, AOS_ERR_USAGE, "invalid method name \"%.64s\": want "
                    "[a-z0-9_.-]{1,64} with a dot", method ? method : "(null)");
    if (len && !payload)
        return fail(reply, AOS_ERR_USAGE, "%s: %zu-byte payload without data", method, len);
    k.agent = opts ? opts->agent_id : NULL;
    if (k.agent && !aos_agent_id_valid(k.agent, strlen(k.agent)))
        return fail(reply, AOS_ERR_USAGE, "%s: invalid agent id: want [A-Za-z0-9_.:-]{1,64}",
                    method);
    k.run = opts && opts->run_id && opts->run_id[0] ? opts->run_id : NULL;
    k.step = opts ? opts->step : 0;
    if (k.run && !aos_agent_id_valid(k.run, strlen(k.run)))
        return fail(reply, AOS_ERR_USAGE, "%s: invalid run id: want [A-Za-z0-9_.:-]{1,64}",
                    method);
    if (k.step && !k.run)
        return fail(reply, AOS_ERR_USAGE, "%s: a step needs a run id", method);
    k.ms = opts && opts->timeout_ms ? opts->timeout_ms : AOS_DEFAULT_TIMEOUT_MS;
    if (k.ms > INT32_MAX)
        return fail(reply, AOS_ERR_USAGE, "%s: timeout of %u ms is too long (max %d)", method,
                    k.ms, INT32_MAX);
    if (len > REQ_ENV_MAX)
        return fail(reply, AOS_ERR_TOO_BIG, "%s: payload of %zu bytes does not fit a request "
                    "(at most %u bytes with the envelope; nothing was sent)", method, len,
                    REQ_ENV_MAX);
    if (opts && opts->request_id)
        memcpy(k.id, opts->request_id, AOS_ID_LEN);
    else
        aos_id_random(k.id);
    k.deadline_ms = aos_now_ms() + k.ms;
    k.end = aos_mono_ms() + k.ms;
    if ((err = call_encode(&k, method, payload, len, &m)) != AOS_OK)
        return fail(reply, err, "%s: cannot encode the request: %s", method,
                    aos_strerror(err));
    if (nng_msg_len(m) > REQ_ENV_MAX) {
        size_t n = nng_msg_len(m);
        nng_msg_free(m);
        return fail(reply, AOS_ERR_TOO_BIG, "%s: request of %zu bytes with its envelope is "
                    "over the %u byte cap (nothing was sent)", method, n, REQ_ENV_MAX);
    }

    if ((rv = slot_take(c, &k.sl)) != 0) {
        nng_msg_free(m);
        return call_err(reply, rv, 0, method, k.ms, c);
    }
    have_ctx = 1;
    k.idle = 1;
    rv = round_trip(&k, m, 0, &m, &sent);
    for (;;) {
        if (rv != 0) {
            /* once the stream runs, the request is aosd's: a lost pull is a timeout or a
             * lost connection, never "not sent, safe to retry" */
            err = call_err(reply, rv, sent || streaming, method, k.ms, c);
            note_parts(reply, streaming);
            goto out;
        }
        char why[256];
        err = aos_env_decode(nng_msg_body(m), nng_msg_len(m), &env, why, sizeof why);
        nng_msg_free(m);
        m = NULL;
        if (err != AOS_OK) {
            err = fail(reply, AOS_ERR_PROTO, "%s: malformed reply from aosd: %s", method, why);
            break;
        }
        if (!env.has_request_id || memcmp(env.request_id, k.id, AOS_ID_LEN) != 0) {
            err = fail(reply, AOS_ERR_PROTO, "%s: the reply is for another request", method);
        } else if (env.kind == AOS_KIND_REPLY) {
            err = take_final(reply, &env, method);
            aos_env_clear(&env);
            goto out; /* the stream, if any, is over on aosd's side too */
        } else if (env.kind != AOS_KIND_REPLY_PART) {
            err = fail(reply, AOS_ERR_PROTO, "%s: aosd answered with an envelope of kind %d, "
                       "not a reply", method, env.kind);
        } else {
            int stop = 0;
            streaming = 1;
            err = take_chunk(reply, &env, method, fn, arg, &stop);
            if (err == AOS_OK && stop)
                err = fail(reply, AOS_ERR_CANCELLED, "%s: cancelled by the caller after %u "
                           "parts", method, reply->parts);
        }
        aos_env_clear(&env);
        if (err != AOS_OK)
            break;
        Aos__StreamNext nx = AOS__STREAM_NEXT__INIT;
        uint8_t buf[16];
        nx.next_seq = reply->parts;
        size_t n = aos__stream_next__pack(&nx, buf);
        if ((err = call_encode(&k, M_NEXT, buf, n, &m)) != AOS_OK) {
            fail(reply, err, "%s: cannot encode %s: %s", method, M_NEXT, aos_strerror(err));
            break;
        }
        rv = round_trip(&k, m, 0, &m, &sent);
    }
    /* a failure inside a running stream: aosd still holds it for us until told */
    if (streaming)
        stream_cancel(&k);
out:
    if (m)
        nng_msg_free(m);
    if (have_ctx)
        slot_give(c, &k.sl, k.idle);
    reply->status = err;
    return err;
}

aos_err aos_call(aos_conn *c, const aos_call_opts *opts, const char *method,
                 const void *payload, size_t len, aos_reply *reply)
{
    return call_run(c, opts, method, payload, len, NULL, NULL, reply);
}

aos_err aos_call_stream(aos_conn *c, const aos_call_opts *opts, const char *method,
                        const void *payload, size_t len, aos_part_fn on_part, void *arg,
                        aos_reply *reply)
{
    return call_run(c, opts, method, payload, len, on_part, arg, reply);
}
