/* The serve loop of every aos server: link to aosd, migrate, open, sandbox, READY, then
 * receive in nng callbacks: quick methods answer there, the rest go to a worker pool. */
#include "serve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/supplemental/util/platform.h>

#include "aos.pb-c.h"
#include "aos/aos.h"
#include "aos/log.h"
#include "idem.h"
#include "sandbox.h"

#define WORKERS_MAX 64
#define RECEIVERS 4          /* receive aios: messages decoded in parallel on nng's threads */
#define QUEUE_MAX 4096       /* requests waiting for a worker; beyond: unavailable */
#define SENDBUF 256          /* replies nng buffers, so a send from a callback never waits */
#define STOP_DRAIN_MS 10000  /* on STOP, wait this long for requests in hand to finish */

typedef struct job {
    aos_env env;
    const srv_method *m;
    struct job *next;
} job;

typedef struct receiver {
    srv *s;
    nng_aio *aio;
} receiver;
#define IDEM_SLOTS 4096
#define IDEM_PAYLOAD_CAP (16u << 10)

struct srv_stats {
    Aos__Stat **items;
    size_t n, cap;
};

struct srv {
    const srv_def *def;
    nng_socket sock;
    void *state;
    idem *idem;
    int test_hooks;
    uint64_t started_ms;
    const char *pg_dsn;

    atomic_int stopping;
    unsigned nworkers;
    pthread_t workers[WORKERS_MAX];
    receiver rx[RECEIVERS];

    pthread_mutex_t mu;      /* the queue to the workers, and the stop request */
    pthread_cond_t cv, stop_cv;
    job *head, *tail;
    size_t queued;
    int stop_asked;
    int sandboxed;           /* sbx_apply is done: workers may connect to the database */

    srv_pg *dbs[WORKERS_MAX];     /* each worker's connection, for the stats */
    atomic_int ndbs;
    atomic_ullong requests, errors, bad_messages, replays, refused;
    atomic_int in_flight;
};

static __thread srv_pg *tls_db;

void *srv_state(srv *s) { return s->state; }
void srv_set_state(srv *s, void *state) { s->state = state; }
const char *srv_name(srv *s) { return s->def->name; }
const char *srv_pg_dsn(srv *s) { return s->pg_dsn; }
srv_pg *srv_db(srv *s) { (void)s; return tls_db; }

aos_err srv_reply_pb(srv_reply *rep, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > AOS_MSG_MAX - 4096)
        return srv_fail(rep, AOS_ERR_TOO_BIG, "reply of %zu bytes is over the message cap", n);
    free(rep->payload);
    rep->payload = malloc(n ? n : 1);
    if (!rep->payload)
        return srv_fail(rep, AOS_ERR_NOMEM, "no memory for a %zu byte reply", n);
    rep->len = protobuf_c_message_pack(m, rep->payload);
    return AOS_OK;
}

aos_err srv_fail(srv_reply *rep, aos_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->error, sizeof rep->error, fmt, ap);
    va_end(ap);
    return code;
}

void srv_stat(srv_stats *st, const char *name, int64_t value, const char *text)
{
    if (st->n == st->cap) {
        size_t nc = st->cap ? st->cap * 2 : 16;
        Aos__Stat **ni = realloc(st->items, nc * sizeof *ni);
        if (!ni)
            return;
        st->items = ni;
        st->cap = nc;
    }
    Aos__Stat *x = malloc(sizeof *x);
    if (!x)
        return;
    aos__stat__init(x);
    x->name = strdup(name);
    x->value = value;
    x->text = strdup(text ? text : "");
    if (!x->name || !x->text) {
        free(x->name);
        free(x->text);
        free(x);
        return;
    }
    st->items[st->n++] = x;
}

static void stats_free(srv_stats *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->items[i]->name);
        free(st->items[i]->text);
        free(st->items[i]);
    }
    free(st->items);
}

/* ---- sending ------------------------------------------------------------------------ */

/* nng_sendmsg on a PAIR1 socket is safe from any thread; it blocks while aosd's buffer is
 * full, which is the back-pressure we want. */
static void send_env(srv *s, const aos_env *e)
{
    nng_msg *m;
    if (aos_env_encode(e, &m) != AOS_OK) {
        aos_error("cannot encode a reply to %s", e->method);
        return;
    }
    int rv = nng_sendmsg(s->sock, m, 0);
    if (rv != 0) {
        nng_msg_free(m);
        aos_warn("send to aosd failed: %s", nng_strerror(rv));
    }
}

static void reply(srv *s, const aos_env *req, int status, const char *err,
                  const uint8_t *payload, size_t len)
{
    aos_env r;
    aos_env_reply_to(&r, req, status, err && *err ? "%s" : NULL, err);
    r.payload = payload;
    r.payload_len = len;
    send_env(s, &r);
}

/* ---- built-in methods --------------------------------------------------------------- */

static aos_err do_ping(srv *s, const aos_env *req, srv_reply *rep)
{
    Aos__PingRequest *in = aos__ping_request__unpack(NULL, req->payload_len, req->payload);
    if (!in)
        return srv_fail(rep, AOS_ERR_PROTO, "ping: payload is not a PingRequest");
    if (in->data.len > 65536) {
        aos__ping_request__free_unpacked(in, NULL);
        return srv_fail(rep, AOS_ERR_TOO_BIG, "ping: data over 64 KiB");
    }
    Aos__PingReply out = AOS__PING_REPLY__INIT;
    out.data = in->data;
    out.pid = (int32_t)getpid();
    aos_err rc = srv_reply_pb(rep, &out.base);
    aos__ping_request__free_unpacked(in, NULL);
    (void)s;
    return rc;
}

static aos_err do_stats(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)req;
    srv_stats st = {0};
    srv_stat(&st, "pid", getpid(), NULL);
    srv_stat(&st, "uptime_ms", (int64_t)(aos_mono_ms() - s->started_ms), NULL);
    srv_stat(&st, "requests", (int64_t)s->requests, NULL);
    srv_stat(&st, "errors", (int64_t)s->errors, NULL);
    srv_stat(&st, "bad_messages", (int64_t)s->bad_messages, NULL);
    srv_stat(&st, "replays", (int64_t)s->replays, NULL);
    srv_stat(&st, "refused", (int64_t)s->refused, "stopping or queue full");
    srv_stat(&st, "in_flight", s->in_flight, NULL);
    srv_stat(&st, "workers", s->nworkers, NULL);
    if (s->def->schema) {
        char why[256] = "";
        PGconn *c = tls_db ? srv_pg_conn(tls_db, why, sizeof why) : NULL;
        /* a real round trip: libpq may not notice a dead peer until it is used */
        if (c) {
            PGresult *r = PQexec(c, "SELECT 1");
            int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
            if (!ok) {
                srv_pg_check(tls_db);
                c = srv_pg_conn(tls_db, why, sizeof why);
            }
        }
        srv_stat(&st, "pg_connected", c != NULL, c ? "connected" : why);
        /* connections made by all workers, first ones included: a reconnect after a
         * PostgreSQL restart shows as growth here */
        int64_t connects = 0;
        for (int i = 0; i < atomic_load(&s->ndbs) && i < WORKERS_MAX; i++)
            connects += srv_pg_connects(s->dbs[i]);
        srv_stat(&st, "pg_connects", connects, NULL);
        srv_stat(&st, "pg_role", 0, s->def->schema->role);
    }
    if (s->def->add_stats)
        s->def->add_stats(s, &st);
    Aos__StatsReply out = AOS__STATS_REPLY__INIT;
    out.stats = st.items;
    out.n_stats = st.n;
    aos_err rc = srv_reply_pb(rep, &out.base);
    stats_free(&st);
    return rc;
}

/* Test hooks exist only with --test-hooks (aosd passes it when started with it): they let
 * the integration tests make a server break in the ways a real one might. */
static aos_err do_test_forbidden(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)s; (void)req;
    /* not in any allow-list: the kernel kills us with SIGSYS before this returns */
    long r = syscall(SYS_ptrace, 0L, 0L, 0L, 0L);
    return srv_fail(rep, AOS_ERR_INTERNAL, "ptrace returned %ld: the sandbox is not on", r);
}

static aos_err do_test_exit(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)s; (void)req; (void)rep;
    _exit(3);
}

/* The built-in methods every server answers, before its own. */
static const srv_method builtins[] = {
    {"ping", do_ping, SRV_INLINE},
    {"stats", do_stats, 0}, /* probes the database */
};
static const srv_method hook_methods[] = {
    {"test.forbidden", do_test_forbidden, 0},
    {"test.exit", do_test_exit, 0},
};

static const srv_method *find_in(const srv_method *t, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(op, t[i].op))
            return &t[i];
    return NULL;
}

/* The handler of a request, looked up once: NULL when this server has no such method. */
static const srv_method *lookup(srv *s, const char *method)
{
    size_t nl = strlen(s->def->name);
    if (strncmp(method, s->def->name, nl) || method[nl] != '.')
        return NULL;
    const char *op = method + nl + 1;
    const srv_method *m = find_in(builtins, sizeof builtins / sizeof builtins[0], op);
    if (!m && s->test_hooks)
        m = find_in(hook_methods, sizeof hook_methods / sizeof hook_methods[0], op);
    return m ? m : find_in(s->def->methods, s->def->n_methods, op);
}

/* ---- workers ------------------------------------------------------------------------ */

/* Run one request (m NULL: not served here), or replay its recorded answer. */
static void run_request(srv *s, const srv_method *m, const aos_env *req)
{
    srv_reply rep = {0};
    int status;
    uint8_t *pl = NULL;
    size_t pll = 0;
    char err[AOS_ERRMSG_MAX + 1];

    int seen = idem_begin(s->idem, req->request_id, &status, err, sizeof err, &pl, &pll);
    if (seen == IDEM_RUNNING) /* a resend of what a worker is doing now: it will answer */
        return;
    if (seen == IDEM_DONE) {
        s->replays++;
        reply(s, req, status, err, pl, pll);
        free(pl);
        return;
    }
    if (req->deadline_ms && aos_now_ms() > req->deadline_ms)
        status = srv_fail(&rep, AOS_ERR_TIMEOUT, "deadline passed before %s ran",
                          req->method);
    else if (!m)
        status = srv_fail(&rep, AOS_ERR_NOT_FOUND, "method %s is not served by %s",
                          req->method, s->def->name);
    else
        status = m->fn(s, req, &rep);
    if (status != AOS_OK) {
        s->errors++;
        free(rep.payload);
        rep.payload = NULL;
        rep.len = 0;
        if (!rep.error[0])
            snprintf(rep.error, sizeof rep.error, "%s", aos_strerror(status));
    }
    idem_end(s->idem, req->request_id, status, rep.error, rep.payload, rep.len);
    reply(s, req, status, rep.error, rep.payload, rep.len);
    free(rep.payload);
}


/* STOP: refuse new work, let requests in hand finish, then leave. Their replies are
 * queued on the link by then; aosd re-sends anything unanswered to the next one. */
static void stop_now(srv *s)
{
    for (int waited = 0; (atomic_load(&s->in_flight) > 0 || s->queued) && waited < STOP_DRAIN_MS;
         waited++)
        nng_msleep(1);
    if (s->def->close)
        s->def->close(s);
    nng_msleep(20); /* nng has no linger: give the last replies a moment on the wire */
    aos_debug("stopped");
    _exit(0);
}

/* Hand a request to the workers. The job takes over the decoded envelope (and its
 * storage); e is left empty. */
static void enqueue(srv *s, const srv_method *m, aos_env *e)
{
    job *j = malloc(sizeof *j);
    if (!j) {
        reply(s, e, AOS_ERR_NOMEM, "server out of memory", NULL, 0);
        return;
    }
    j->env = *e;
    j->m = m;
    j->next = NULL;
    e->pb_ = NULL; /* moved */
    pthread_mutex_lock(&s->mu);
    if (s->queued >= QUEUE_MAX) {
        pthread_mutex_unlock(&s->mu);
        s->refused++;
        reply(s, &j->env, AOS_ERR_UNAVAILABLE, "server busy: too many requests queued",
              NULL, 0);
        aos_env_clear(&j->env);
        free(j);
        return;
    }
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    s->queued++;
    atomic_fetch_add(&s->in_flight, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* One message off the link, on an nng thread: never block here. Heartbeats and quick
 * methods are answered on the spot, with nothing allocated beyond the decode. */
static void handle(srv *s, nng_msg *msg)
{
    aos_env e;
    char why[160];
    aos_err rc = aos_env_decode(nng_msg_body(msg), nng_msg_len(msg), &e, why, sizeof why);
    nng_msg_free(msg);
    if (rc != AOS_OK) {
        /* aosd validates before forwarding, so this is a broken peer: count and drop */
        s->bad_messages++;
        aos_warn("malformed envelope from aosd: %s", why);
        return;
    }
    switch (e.kind) {
    case AOS_KIND_HEARTBEAT:
        send_env(s, &e); /* echoed as is: proves the receive path is alive */
        break;
    case AOS_KIND_STOP:
        atomic_store(&s->stopping, 1);
        pthread_mutex_lock(&s->mu);
        s->stop_asked = 1;
        pthread_cond_signal(&s->stop_cv);
        pthread_mutex_unlock(&s->mu);
        break;
    case AOS_KIND_CANCEL:
        break; /* handlers are short for now; streamed methods will check for it */
    case AOS_KIND_REQUEST: {
        s->requests++;
        if (atomic_load(&s->stopping)) {
            s->refused++;
            reply(s, &e, AOS_ERR_UNAVAILABLE, "server is stopping", NULL, 0);
            break;
        }
        /* an unknown method is answered here too: nothing to wait for */
        const srv_method *m = lookup(s, e.method);
        if (m && !(m->flags & SRV_INLINE)) {
            enqueue(s, m, &e);
            break;
        }
        atomic_fetch_add(&s->in_flight, 1);
        run_request(s, m, &e);
        atomic_fetch_sub(&s->in_flight, 1);
        break;
    }
    default:
        s->bad_messages++;
        aos_warn("unexpected envelope kind %d from aosd", e.kind);
        break;
    }
    aos_env_clear(&e);
}

static void on_receive(void *arg)
{
    receiver *r = arg;
    int rv = nng_aio_result(r->aio);
    if (rv == NNG_ECLOSED)
        _exit(0);
    if (rv == 0)
        handle(r->s, nng_aio_get_msg(r->aio));
    nng_recv_aio(r->s->sock, r->aio);
}

static void open_db(srv *s)
{
    char why[256];
    if (!s->def->schema)
        return;
    if (srv_pg_open(s->pg_dsn, &tls_db, why, sizeof why) != AOS_OK) {
        aos_error("database: %s", why);
        return;
    }
    int i = atomic_fetch_add(&s->ndbs, 1);
    if (i < WORKERS_MAX)
        s->dbs[i] = tls_db;
    if (!srv_pg_conn(tls_db, why, sizeof why))
        aos_warn("database not reachable yet: %s", why);
}

static void *worker_main(void *arg)
{
    srv *s = arg;
    /* no database connection before the privilege drop: as root we would be refused (peer
     * authentication maps root to no server's role), and should be */
    pthread_mutex_lock(&s->mu);
    while (!s->sandboxed)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    open_db(s);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head)
            pthread_cond_wait(&s->cv, &s->mu);
        job *j = s->head;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        s->queued--;
        pthread_mutex_unlock(&s->mu);
        run_request(s, j->m, &j->env);
        atomic_fetch_sub(&s->in_flight, 1);
        aos_env_clear(&j->env);
        free(j);
    }
    return NULL;
}

/* ---- start-up ----------------------------------------------------------------------- */

#define DSN_MAX 4096
#define EX_TEMPFAIL 75 /* a migrator that could not reach the database: aosd tries again */

/* The link's peer must be aosd itself: the pid that started us, as root or as aosd's own
 * uid. Checked before a single byte of ours goes out; anything else is an impostor on a
 * swapped socket, and we leave rather than talk to it. */
static pid_t link_parent;
static uid_t link_uid;

static void on_link_add(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)ev; (void)arg;
    uint64_t uid = UINT64_MAX, pid = 0;
    int r1 = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, &uid);
    int r2 = nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &pid);
    if (r1 || r2 || (uid != 0 && uid != link_uid) || pid != (uint64_t)link_parent) {
        aos_error("the link's peer is not aosd (uid %llu pid %llu; expected uid 0 or %u, "
                  "pid %d): refusing to talk to it", (unsigned long long)uid,
                  (unsigned long long)pid, (unsigned)link_uid, (int)link_parent);
        _exit(1);
    }
}

static void on_link_gone(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p; (void)ev; (void)arg;
    /* aosd went away (or closed the link to get rid of us): no server outlives it */
    _exit(0);
}

/* Every directory from / down to the socket must belong to root or aosd's uid and be
 * writable by no one else (a sticky /tmp is fine: nobody can replace our entries there),
 * so nobody else can have put a socket of theirs where aosd's should be. */
static aos_err check_link_path(const char *url, char *why, size_t whylen)
{
    if (strncmp(url, "ipc://", 6) || url[6] != '/') {
        snprintf(why, whylen, "link %s refused: only ipc:// links to an absolute path "
                 "(a network link needs an authenticated transport, which aos has not yet)",
                 url);
        return AOS_ERR_REFUSED;
    }
    char path[AOS_PATH_MAX];
    if (snprintf(path, sizeof path, "%s", url + 6) >= (int)sizeof path) {
        snprintf(why, whylen, "link path too long");
        return AOS_ERR_USAGE;
    }
    for (char *c = path + 1;; c++) {
        int last = *c == 0;
        if (*c != '/' && !last)
            continue;
        *c = 0;
        struct stat st;
        if (lstat(path, &st) != 0) {
            snprintf(why, whylen, "link path %s: %s", path, strerror(errno));
            return AOS_ERR_UNAVAILABLE;
        }
        int ok_owner = st.st_uid == 0 || st.st_uid == link_uid;
        int ok_type = last ? S_ISSOCK(st.st_mode) : S_ISDIR(st.st_mode);
        int ok_mode = last || !(st.st_mode & 022) || (st.st_mode & S_ISVTX);
        if (!ok_owner || !ok_type || !ok_mode) {
            snprintf(why, whylen, "link path %s is unsafe (uid %u, mode %o): it must be a %s "
                     "owned by root or uid %u that nobody else can write", path,
                     (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
                     last ? "socket" : "directory", (unsigned)link_uid);
            return AOS_ERR_REFUSED;
        }
        if (last)
            return AOS_OK;
        *c = '/';
    }
}

/* Read a secret handed over on an inherited fd (a memfd aosd wrote), then close it: the
 * environment would leave it readable in /proc/<pid>/environ for the process's life. */
static aos_err read_fd_secret(int fd, char *out, size_t cap, char *why, size_t whylen)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, out + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, whylen, "reading the DSN from fd %d: %s", fd, strerror(errno));
            close(fd);
            return AOS_ERR_IO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap - 1) {
            snprintf(why, whylen, "the DSN on fd %d is over %zu bytes", fd, cap - 1);
            close(fd);
            return AOS_ERR_TOO_BIG;
        }
    }
    close(fd);
    out[n] = 0;
    return AOS_OK;
}

/* Where the database is, from the server's DSN: the socket directories to keep visible in
 * its minimal root, and whether it is reached over Unix sockets alone (then the server gets
 * no network at all). libpq's default with no host is Debian's socket directory. */
static void dsn_places(const char *dsn, sbx_opts *so, int *nkeep)
{
    static char dirs[SBX_KEEP_MAX][AOS_PATH_MAX];
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(dsn, &err);
    PQfreemem(err);
    if (!o)
        return; /* libpq will say what is wrong with it when it connects */
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *p = o; p->keyword; p++) {
        if (!strcmp(p->keyword, "host"))
            host = p->val;
        else if (!strcmp(p->keyword, "hostaddr"))
            hostaddr = p->val;
    }
    int local = !(hostaddr && *hostaddr);
    const char *h = host && *host ? host : "/var/run/postgresql";
    while (*h) {
        size_t n = strcspn(h, ",");
        if (h[0] == '/' && n < AOS_PATH_MAX && *nkeep < SBX_KEEP_MAX - 1) {
            memcpy(dirs[*nkeep], h, n);
            dirs[*nkeep][n] = 0;
            so->keep[*nkeep] = dirs[*nkeep];
            (*nkeep)++;
        } else if (h[0] != '/') {
            local = 0;
        }
        h += n + (h[n] == ',');
    }
    so->pg_local = so->pg_local || local;
    PQconninfoFree(o);
}

static int usage(const char *prog)
{
    fprintf(stderr, "usage: %s --link URL --name NAME [--user USER] [--dsn-fd N] "
                    "[--pg-local] [--keep PATH]... [--test-hooks]\n"
                    "       %s --migrate --name NAME --dsn-fd N [--user USER]\n"
                    "(servers are started by aosd, not by hand)\n", prog, prog);
    return 2;
}

/* One-shot: apply the schema's migrations with the admin DSN, then exit. aosd runs this
 * as PostgreSQL's own uid before the server's first start; servers never migrate. */
static int migrate_main(const srv_def *def, const char *dsn, const char *user)
{
    char why[512] = "";
    if (user && geteuid() == 0 && sbx_drop_to(user, why, sizeof why) != AOS_OK) {
        aos_error("migrator: %s", why);
        return 1;
    }
    if (!def->schema) {
        aos_info("no schema to migrate");
        return 0;
    }
    aos_err e = srv_pg_migrate(dsn, def->schema, why, sizeof why);
    if (e == AOS_OK)
        return 0;
    aos_error("migrations of schema %s: %s", def->schema->schema, why);
    return e == AOS_ERR_UNAVAILABLE ? EX_TEMPFAIL : 1;
}

static void send_ready(srv *s, const sbx_report *r)
{
    Aos__SandboxReport m = AOS__SANDBOX_REPORT__INIT;
    m.root = (char *)r->root;
    m.mount_ns = r->mount_ns;
    m.net_ns = r->net_ns;
    m.user_ns = r->user_ns;
    m.proc = r->proc;
    m.inet = r->inet;
    m.rlimit_as = r->rlimit_as;
    m.rlimit_nproc = r->rlimit_nproc;
    m.rlimit_memlock = r->rlimit_memlock;
    m.notes = (char *)r->notes;
    uint8_t buf[1024];
    aos_env ready;
    aos_env_init(&ready, AOS_KIND_READY);
    snprintf(ready.method, sizeof ready.method, "%s.ready", s->def->name);
    if (aos__sandbox_report__get_packed_size(&m) <= sizeof buf) {
        ready.payload = buf;
        ready.payload_len = aos__sandbox_report__pack(&m, buf);
    }
    send_env(s, &ready);
}

int srv_main(const srv_def *def, int argc, char **argv)
{
    static char prog[64];
    snprintf(prog, sizeof prog, "aos-%s", def->name);
    aos_log_init(prog);
    /* a pipe write to a dead peer must be an error, not a silent death */
    signal(SIGPIPE, SIG_IGN);

    const char *link = NULL, *name = NULL;
    int test_hooks = 0, migrate = 0, dsn_fd = -1, nkeep = 0;
    sbx_opts so = {.name = def->name};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--link") && i + 1 < argc)
            link = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            name = argv[++i];
        else if (!strcmp(argv[i], "--user") && i + 1 < argc)
            so.user = argv[++i];
        else if (!strcmp(argv[i], "--dsn-fd") && i + 1 < argc)
            dsn_fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc && nkeep < SBX_KEEP_MAX - 1)
            so.keep[nkeep++] = argv[++i];
        else if (!strcmp(argv[i], "--pg-local"))
            so.pg_local = 1;
        else if (!strcmp(argv[i], "--migrate"))
            migrate = 1;
        else if (!strcmp(argv[i], "--test-hooks"))
            test_hooks = 1;
        else
            return usage(argv[0]);
    }
    if (!name || strcmp(name, def->name) || (!migrate && !link) || (migrate && dsn_fd < 0) ||
        dsn_fd == 0 || dsn_fd == 1 || dsn_fd == 2)
        return usage(argv[0]);

    char why[512] = "";
    static char dsn[DSN_MAX];
    if (dsn_fd > 0 && read_fd_secret(dsn_fd, dsn, sizeof dsn, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        return 1;
    }
    if (migrate)
        return migrate_main(def, dsn, so.user);

    static srv S;
    srv *s = &S;
    s->def = def;
    s->test_hooks = test_hooks;
    s->started_ms = aos_mono_ms();
    s->idem = idem_new(IDEM_SLOTS, IDEM_PAYLOAD_CAP);
    if (!s->idem) {
        aos_error("no memory for the replay table");
        return 1;
    }
    if (def->schema) {
        if (!dsn[0]) {
            aos_error("no DSN on --dsn-fd: %s needs a database", prog);
            return 1;
        }
        s->pg_dsn = dsn;
        dsn_places(dsn, &so, &nkeep);
    }
    link_parent = so.parent = getppid();
    link_uid = getuid();
    int rv;

    /* 1. the link's path, then the namespaces and the minimal root while we are still
     * one thread (nng starts its threads on the first socket) */
    if (check_link_path(link, why, sizeof why) != AOS_OK) {
        aos_error("%s", why);
        return 1;
    }
    sbx_report rep = {0};
    if (sbx_enter(&so, &rep, why, sizeof why) != AOS_OK) {
        aos_error("sandbox: %s", why);
        return 1;
    }

    /* 2. the link to aosd: early, so a dead link ends us whatever happens next */
    if ((rv = nng_pair1_open(&s->sock)) != 0 ||
        (rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, AOS_MSG_MAX)) != 0 ||
        (rv = nng_socket_set_int(s->sock, NNG_OPT_SENDBUF, SENDBUF)) != 0 ||
        (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_ADD_PRE, on_link_add, s)) != 0 ||
        (rv = nng_pipe_notify(s->sock, NNG_PIPE_EV_REM_POST, on_link_gone, s)) != 0 ||
        (rv = nng_dial(s->sock, link, NULL, 0)) != 0) {
        aos_error("cannot link to aosd at %s: %s", link, nng_strerror(rv));
        return 1;
    }

    /* 3. the server's own resources */
    if (def->open && def->open(s, why, sizeof why) != AOS_OK) {
        aos_error("open: %s", why);
        return 1;
    }

    /* 4. workers (before the sandbox: clone is not in the allow-lists); they take
     * requests only once the receivers start, after the sandbox */
    s->nworkers = def->workers ? def->workers : 4;
    const char *w = getenv("AOS_WORKERS");
    if (w && atoi(w) > 0)
        s->nworkers = (unsigned)atoi(w);
    if (s->nworkers > WORKERS_MAX)
        s->nworkers = WORKERS_MAX;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->stop_cv, NULL);
    for (unsigned i = 0; i < s->nworkers; i++)
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            aos_error("cannot start worker %u", i);
            return 1;
        }

    /* 5. privileges, rlimits, no_new_privs, seccomp */
    if (sbx_apply(&so, &rep, why, sizeof why) != AOS_OK) {
        aos_error("sandbox: %s", why);
        return 1;
    }

    pthread_mutex_lock(&s->mu);
    s->sandboxed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);

    /* 6. READY: aosd marks us running and re-sends what was in flight */
    send_ready(s, &rep);
    aos_debug("ready");

    /* 7. serve: receivers on nng's threads; this thread waits for STOP */
    for (int i = 0; i < RECEIVERS; i++) {
        s->rx[i].s = s;
        if ((rv = nng_aio_alloc(&s->rx[i].aio, on_receive, &s->rx[i])) != 0) {
            aos_error("receive: %s", nng_strerror(rv));
            _exit(1);
        }
        nng_recv_aio(s->sock, s->rx[i].aio);
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop_asked)
        pthread_cond_wait(&s->stop_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    stop_now(s);
    return 0;
}
