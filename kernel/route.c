/* Control-socket routing: a pool of REP contexts; each takes a request, validates it,
 * applies its method class's hook, and answers from the kernel or via a server link. */
#include "route.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "aos.pb-c.h"
#include "aos/envelope.h"
#include "aos/log.h"
#include "link.h"
#include "listen.h"
#include "supervise.h"

#define ROUTE_CTX 256                   /* requests in flight on the control socket */
#define DEFAULT_DEADLINE_MS 30000u
#define MAX_DEADLINE_MS (10u * 60u * 1000u)
/* Bounds of the control socket (see listen.h for what nng 1.5.2 bounds by itself). Only
 * root or aosd's own uid gets past ADD_PRE, so the caps are against a runaway admin client,
 * not against other users: room for the benchmarks' 64 clients many times over. */
#define ROUTE_MAX_PIPES 1024u
#define ROUTE_MAX_SILENT 128u           /* connected, nothing sent yet */
#define ROUTE_SILENT_MS 10000u          /* a pipe's first request must come within this:
                                         * libaos's REQ dialer redials a pipe closed for
                                         * idling, so an idle client only reconnects */

/* What aosd does with a method before it forwards it. Only READ and CONTROL exist yet:
 * EFFECTFUL (wait for the audit record), LLM (the scheduler's queue) and the agents'
 * rights check hook in here as those servers arrive. */
typedef enum { CLASS_CONTROL, CLASS_READ } mclass;

typedef struct rctx {
    route *r;
    nng_ctx ctx;
    nng_aio *aio;
    int sending;
    aos_env hdr;   /* the request's ids, to answer for the server on a deadline */
} rctx;

struct route {
    nng_socket sock;
    lsn *lst;
    rctx ctxs[ROUTE_CTX];
    atomic_ullong bad, routed;
    atomic_int closing;
};

static void arm_recv(rctx *c)
{
    c->sending = 0;
    nng_ctx_recv(c->ctx, c->aio);
}

static void send_msg(rctx *c, nng_msg *m)
{
    c->sending = 1;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

static void answer(rctx *c, const aos_env *req, int status, const char *err,
                   const uint8_t *payload, size_t len)
{
    aos_env rep;
    nng_msg *m;
    if (req)
        aos_env_reply_to(&rep, req, status, err ? "%s" : NULL, err);
    else { /* nothing usable came in: an anonymous error reply */
        aos_env_init(&rep, AOS_KIND_REPLY);
        rep.status = status;
        snprintf(rep.error, sizeof rep.error, "%s", err ? err : "");
    }
    rep.link_id = 0;
    rep.payload = payload;
    rep.payload_len = len;
    if (aos_env_encode(&rep, &m) != AOS_OK) {
        arm_recv(c);
        return;
    }
    send_msg(c, m);
}

/* A server's answer (or aosd's on its behalf) for the request context arg. */
static void on_done(void *arg, nng_msg *reply, int status, const char *err)
{
    rctx *c = arg;
    if (reply) {
        /* forward the server's bytes as they are: validated by the link already */
        send_msg(c, reply);
        return;
    }
    answer(c, &c->hdr, status, err, NULL, 0);
}

static aos_err kernel_call(route *r, const aos_env *req, uint8_t **out, size_t *len, char *why,
                           size_t whylen)
{
    *out = NULL;
    *len = 0;
    if (!strcmp(req->method, "kernel.status"))
        return sup_status(r->bad, r->routed, out, len);
    if (!strcmp(req->method, "kernel.ping")) { /* aosd alone: the router's own cost */
        Aos__PingRequest *in = aos__ping_request__unpack(NULL, req->payload_len, req->payload);
        if (!in || in->data.len > 65536) {
            if (in)
                aos__ping_request__free_unpacked(in, NULL);
            snprintf(why, whylen, "kernel.ping: payload is not a PingRequest of <= 64 KiB");
            return AOS_ERR_PROTO;
        }
        Aos__PingReply pr = AOS__PING_REPLY__INIT;
        pr.data = in->data;
        pr.pid = getpid();
        *len = aos__ping_reply__get_packed_size(&pr);
        *out = malloc(*len ? *len : 1);
        if (*out)
            aos__ping_reply__pack(&pr, *out);
        aos__ping_request__free_unpacked(in, NULL);
        return *out ? AOS_OK : AOS_ERR_NOMEM;
    }
    int kill = !strcmp(req->method, "kernel.server.kill");
    if (kill || !strcmp(req->method, "kernel.server.restart")) {
        Aos__ServerRequest *sr =
            aos__server_request__unpack(NULL, req->payload_len, req->payload);
        if (!sr || !aos_pb_strings_valid(&sr->base) || !sr->name[0]) {
            if (sr)
                aos__server_request__free_unpacked(sr, NULL);
            snprintf(why, whylen, "%s: payload is not a ServerRequest with a name", req->method);
            return AOS_ERR_USAGE;
        }
        aos_err rc = kill ? sup_kill(sr->name, why, whylen) : sup_restart(sr->name, why, whylen);
        aos__server_request__free_unpacked(sr, NULL);
        return rc;
    }
    snprintf(why, whylen, "unknown kernel method %s", req->method);
    return AOS_ERR_NOT_FOUND;
}

static void handle(rctx *c, nng_msg *m)
{
    route *r = c->r;
    aos_env req;
    char why[AOS_ERRMSG_MAX];
    lsn_heard(r->lst, nng_msg_get_pipe(m));
    aos_err rc = aos_env_decode(nng_msg_body(m), nng_msg_len(m), &req, why, sizeof why);
    nng_msg_free(m);
    if (rc != AOS_OK) {
        r->bad++;
        answer(c, NULL, rc, why, NULL, 0);
        return;
    }
    if (req.kind != AOS_KIND_REQUEST) {
        r->bad++;
        answer(c, &req, AOS_ERR_PROTO, "only requests are accepted here", NULL, 0);
        goto out;
    }
    /* deadlines: absolute on the wire; aosd applies a default and a ceiling */
    uint64_t now = aos_now_ms(), mono = aos_mono_ms();
    if (!req.deadline_ms)
        req.deadline_ms = now + DEFAULT_DEADLINE_MS;
    if (req.deadline_ms > now + MAX_DEADLINE_MS)
        req.deadline_ms = now + MAX_DEADLINE_MS;
    if (req.deadline_ms <= now) {
        answer(c, &req, AOS_ERR_TIMEOUT, "deadline already passed", NULL, 0);
        goto out;
    }
    /* the control socket is the admin's: the agent id it names is honoured. Agents'
     * links will overwrite it with the identity aosd gave them at spawn. */
    char server[AOS_METHOD_MAX + 1];
    size_t dot = strcspn(req.method, ".");
    memcpy(server, req.method, dot);
    server[dot] = 0;
    mclass cls = !strcmp(server, "kernel") ? CLASS_CONTROL : CLASS_READ;
    if (cls == CLASS_CONTROL) {
        uint8_t *out;
        size_t len;
        why[0] = 0;
        rc = kernel_call(r, &req, &out, &len, why, sizeof why);
        answer(c, &req, rc, why[0] ? why : NULL, out, len);
        free(out);
        goto out;
    }
    int failed = 0;
    klink *l = sup_link(server, &failed, why, sizeof why);
    if (!l) {
        answer(c, &req, AOS_ERR_NOT_FOUND, "no server for this method", NULL, 0);
        goto out;
    }
    if (failed) { /* the status sup_link chose: FAILED (an operator must act) or UNAVAILABLE */
        answer(c, &req, failed, why, NULL, 0);
        goto out;
    }
    c->hdr = req;
    c->hdr.pb_ = NULL;
    c->hdr.payload = NULL;
    c->hdr.payload_len = 0;
    rc = link_forward(l, &req, mono + (req.deadline_ms - now), on_done, c);
    if (rc != AOS_OK) {
        answer(c, &req, rc,
               rc == AOS_ERR_UNAVAILABLE ? "too many requests waiting for this server; retry "
                                           "later"
               : rc == AOS_ERR_TOO_BIG   ? "the request does not fit the server link's message "
                                           "cap once aosd adds its link id"
                                         : "cannot forward",
               NULL, 0);
        goto out;
    }
    r->routed++;
out:
    aos_env_clear(&req);
}

static void on_aio(void *arg)
{
    rctx *c = arg;
    int rv = nng_aio_result(c->aio);
    if (atomic_load(&c->r->closing)) {
        if (c->sending && rv != 0)
            nng_msg_free(nng_aio_get_msg(c->aio));
        return;
    }
    if (c->sending) {
        if (rv != 0) /* the client went away: the reply is dropped */
            nng_msg_free(nng_aio_get_msg(c->aio));
        arm_recv(c);
        return;
    }
    if (rv == NNG_ECLOSED)
        return;
    if (rv != 0) {
        arm_recv(c);
        return;
    }
    handle(c, nng_aio_get_msg(c->aio));
}

/* Only our own user (or root) may use the control socket: the file mode says so, and
 * the peer's credentials are checked as well. */
static int admit(void *arg, nng_pipe p, char *why, size_t whylen)
{
    (void)arg;
    uint64_t uid = 0;
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid) != 0 ||
        (uid != (uint64_t)geteuid() && uid != 0)) {
        snprintf(why, whylen, "refused a client with uid %llu", (unsigned long long)uid);
        return -1;
    }
    return 0;
}

/* Stops what was started of r; nothing had connected yet (the listener starts last), so
 * closing the socket here cannot meet nng 1.5.2's hang on a pipe torn down mid-send. */
static void route_undo(route *r)
{
    atomic_store(&r->closing, 1); /* on_aio re-arms nothing from here on */
    for (int i = 0; i < ROUTE_CTX; i++)
        if (r->ctxs[i].aio) {
            nng_aio_stop(r->ctxs[i].aio);
            nng_aio_free(r->ctxs[i].aio);
        }
    nng_close(r->sock);
    free(r);
}

aos_err route_open(route **out, const char *url, char *why, size_t whylen)
{
    route *r = calloc(1, sizeof *r);
    if (!r)
        return AOS_ERR_NOMEM;
    int rv;
    if ((rv = nng_rep0_open(&r->sock)) != 0) {
        snprintf(why, whylen, "control socket %s: %s", url, nng_strerror(rv));
        free(r);
        return AOS_ERR_IO;
    }
    if ((rv = nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0) {
        snprintf(why, whylen, "control socket %s: %s", url, nng_strerror(rv));
        route_undo(r);
        return AOS_ERR_IO;
    }
    /* the contexts before the listener: a client that connects finds them receiving */
    for (int i = 0; i < ROUTE_CTX; i++) {
        rctx *c = &r->ctxs[i];
        c->r = r;
        if ((rv = nng_ctx_open(&c->ctx, r->sock)) != 0 ||
            (rv = nng_aio_alloc(&c->aio, on_aio, c)) != 0) {
            snprintf(why, whylen, "control socket contexts: %s", nng_strerror(rv));
            route_undo(r);
            return rv == NNG_ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_INTERNAL;
        }
    }
    /* armed only now: route_undo stops each aio, so none can run on a freed route */
    for (int i = 0; i < ROUTE_CTX; i++)
        arm_recv(&r->ctxs[i]);
    lsn_opts lo = {.what = "control socket", .max_pipes = ROUTE_MAX_PIPES,
                   .max_silent = ROUTE_MAX_SILENT, .silent_ms = ROUTE_SILENT_MS,
                   .mode = 0600, .admit = admit, .arg = r};
    aos_err rc = lsn_open(&r->lst, r->sock, url, &lo, why, whylen);
    if (rc != AOS_OK) {
        route_undo(r);
        return rc;
    }
    *out = r;
    return AOS_OK;
}

/* Called once, at exit. New connections stop first; every context's aio is stopped
 * (waiting for running callbacks; none re-arms). The socket itself is left to the exit:
 * nng 1.5.2's nng_close on a REP socket whose contexts have cycled under load can wait
 * forever for a context reference, and nothing here needs it closed before exit. */
void route_close(route *r)
{
    atomic_store(&r->closing, 1);
    lsn_close(r->lst);
    for (int i = 0; i < ROUTE_CTX; i++)
        if (r->ctxs[i].aio)
            nng_aio_stop(r->ctxs[i].aio);
}

uint64_t route_bad_messages(const route *r) { return r->bad; }
uint64_t route_routed(const route *r) { return r->routed; }
