/* Unit tests of the libaos client: data dir resolution, argument errors, and aos_call
 * against a small REP responder running in this process on an ipc:// socket. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "aos/aos.h"

#define NOBODY 65534
#define WORKERS 4

/* ---- the responder --------------------------------------------------------------- */

typedef struct responder {
    nng_socket sock;
    pthread_t thr[WORKERS];
    atomic_int seen;            /* requests that reached the responder */
    char dir[64];
    char url[128];
} responder;

/* Answers per method: echo, fail, bare (status without text), silent (never answers),
 * garbage (not an envelope), otherid (another request id), kind (a REQUEST back),
 * agent (the agent id as payload), deadline (checks it lies ahead). */
static nng_msg *answer(const aos_env *req)
{
    aos_env rep;
    nng_msg *out = NULL;
    const char *m = req->method;

    if (strcmp(m, "test.silent") == 0)
        return NULL;
    if (strcmp(m, "test.garbage") == 0) {
        if (nng_msg_alloc(&out, 0) == 0)
            nng_msg_append(out, "\xff\xfe not an envelope", 19);
        return out;
    }
    if (strcmp(m, "test.fail") == 0) {
        aos_env_reply_to(&rep, req, AOS_ERR_NOT_FOUND, "no such thing: %.*s",
                         (int)req->payload_len, (const char *)req->payload);
    } else if (strcmp(m, "test.bare") == 0) {
        aos_env_reply_to(&rep, req, AOS_ERR_CONFLICT, NULL);
    } else if (strcmp(m, "test.agent") == 0) {
        aos_env_reply_to(&rep, req, AOS_OK, NULL);
        rep.payload = (const uint8_t *)req->agent_id;
        rep.payload_len = strlen(req->agent_id);
    } else if (strcmp(m, "test.deadline") == 0) {
        uint64_t now = aos_now_ms();
        int ok = req->deadline_ms > now && req->deadline_ms <= now + 60000;
        aos_env_reply_to(&rep, req, ok ? AOS_OK : AOS_ERR_USAGE, ok ? NULL : "bad deadline");
    } else if (strcmp(m, "test.rid") == 0) {
        aos_env_reply_to(&rep, req, AOS_OK, NULL);
        rep.payload = req->request_id;
        rep.payload_len = AOS_ID_LEN;
    } else {
        aos_env_reply_to(&rep, req, AOS_OK, NULL);
        rep.payload = req->payload;
        rep.payload_len = req->payload_len;
        if (strcmp(m, "test.otherid") == 0)
            rep.request_id[0] ^= 0xff;
        else if (strcmp(m, "test.kind") == 0)
            rep.kind = AOS_KIND_REQUEST;
    }
    if (aos_env_encode(&rep, &out) != AOS_OK)
        return NULL;
    return out;
}

/* nng 1.5.2 has no nng_ctx_recvmsg/sendmsg: each worker drives its context by aio. */
static void *worker(void *arg)
{
    responder *r = arg;
    nng_ctx ctx;
    nng_aio *aio;
    if (nng_ctx_open(&ctx, r->sock) != 0)
        return NULL;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
        nng_ctx_close(ctx);
        return NULL;
    }
    for (;;) {
        nng_ctx_recv(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0)
            break;
        nng_msg *m = nng_aio_get_msg(aio);
        atomic_fetch_add(&r->seen, 1);
        aos_env req;
        char why[128];
        if (aos_env_decode(nng_msg_body(m), nng_msg_len(m), &req, why, sizeof why) != AOS_OK ||
            req.kind != AOS_KIND_REQUEST) {
            nng_msg_free(m);
            continue;
        }
        nng_msg *out = answer(&req);
        aos_env_clear(&req);
        nng_msg_free(m);
        if (!out)
            continue;
        nng_aio_set_msg(aio, out);
        nng_ctx_send(ctx, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0)
            nng_msg_free(out);
    }
    nng_aio_free(aio);
    nng_ctx_close(ctx);
    return NULL;
}

/* recvmax: the responder's NNG_OPT_RECVMAXSZ; below a request's size its transport cuts
 * the connection while the client is still sending, the case nng 1.5.2's close hangs on. */
static void responder_start_max(responder *r, size_t recvmax)
{
    atomic_init(&r->seen, 0);
    snprintf(r->dir, sizeof r->dir, "/tmp/aos-client-test-XXXXXX");
    assert_non_null(mkdtemp(r->dir));
    snprintf(r->url, sizeof r->url, "ipc://%s/control.sock", r->dir);
    assert_int_equal(nng_rep0_open(&r->sock), 0);
    assert_int_equal(nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ, recvmax), 0);
    assert_int_equal(nng_listen(r->sock, r->url, NULL, 0), 0);
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&r->thr[i], NULL, worker, r), 0);
}

static void responder_start(responder *r)
{
    responder_start_max(r, AOS_MSG_MAX);
}

/* A plain nng_close: every test but the last ends with its client closed and no pipe cut
 * mid-send, the one case where nng 1.5.2's close can hang (that test stops otherwise). */
static void responder_stop(responder *r)
{
    nng_close(r->sock);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(r->thr[i], NULL);
    char path[160];
    snprintf(path, sizeof path, "%s/control.sock", r->dir);
    unlink(path);
    rmdir(r->dir);
}

static aos_conn *connect_to(const responder *r)
{
    aos_conn *c = NULL;
    char why[256] = "";
    aos_err err = aos_connect(r->url, &c, why, sizeof why);
    if (err != AOS_OK)
        fail_msg("aos_connect %s: %s: %s", r->url, aos_err_name(err), why);
    return c;
}

/* ---- data dir and URL ------------------------------------------------------------ */

static void test_data_dir_explicit_and_env(void **state)
{
    char out[256];
    (void)state;
    assert_int_equal(aos_data_dir("/srv/aos/", out, sizeof out), AOS_OK);
    assert_string_equal(out, "/srv/aos");
    assert_int_equal(aos_data_dir("/", out, sizeof out), AOS_OK);
    assert_string_equal(out, "/");

    setenv("AOS_DATA_DIR", "/env/aos", 1);
    assert_int_equal(aos_data_dir(NULL, out, sizeof out), AOS_OK);
    assert_string_equal(out, "/env/aos");
    assert_int_equal(aos_data_dir("/flag", out, sizeof out), AOS_OK);
    assert_string_equal(out, "/flag");
    unsetenv("AOS_DATA_DIR");

    /* bad input changes nothing */
    strcpy(out, "untouched");
    assert_int_equal(aos_data_dir("", out, sizeof out), AOS_ERR_USAGE);
    assert_string_equal(out, "untouched");
    assert_int_equal(aos_data_dir("/a/long/enough/dir", out, 5), AOS_ERR_TOO_BIG);
    assert_string_equal(out, "untouched");
    assert_int_equal(aos_data_dir("/x", NULL, 10), AOS_ERR_USAGE);
}

/* The per-user defaults, checked in a child that is not root when we are. */
static int user_defaults(void)
{
    char out[256];
    unsetenv("AOS_DATA_DIR");
    setenv("XDG_DATA_HOME", "/xdg/data/", 1);
    setenv("HOME", "/home/u", 1);
    if (aos_data_dir(NULL, out, sizeof out) != AOS_OK || strcmp(out, "/xdg/data/aos") != 0)
        return 1;
    setenv("XDG_DATA_HOME", "relative/is/ignored", 1);
    if (aos_data_dir(NULL, out, sizeof out) != AOS_OK ||
        strcmp(out, "/home/u/.local/share/aos") != 0)
        return 2;
    unsetenv("XDG_DATA_HOME");
    if (aos_data_dir(NULL, out, sizeof out) != AOS_OK ||
        strcmp(out, "/home/u/.local/share/aos") != 0)
        return 3;
    return 0;
}

static void test_data_dir_defaults(void **state)
{
    char out[256];
    (void)state;
    unsetenv("AOS_DATA_DIR");
    if (geteuid() != 0) {
        assert_int_equal(user_defaults(), 0);
        return;
    }
    setenv("XDG_DATA_HOME", "/xdg", 1);
    assert_int_equal(aos_data_dir(NULL, out, sizeof out), AOS_OK);
    assert_string_equal(out, "/var/lib/aos");
    unsetenv("XDG_DATA_HOME");

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(10);
        _exit(user_defaults());
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_control_url(void **state)
{
    char out[256];
    (void)state;
    assert_int_equal(aos_control_url("/var/lib/aos", out, sizeof out), AOS_OK);
    assert_string_equal(out, "ipc:///var/lib/aos/control.sock");
    assert_int_equal(aos_control_url("/d//", out, sizeof out), AOS_OK);
    assert_string_equal(out, "ipc:///d/control.sock");
    assert_int_equal(aos_control_url("/", out, sizeof out), AOS_OK);
    assert_string_equal(out, "ipc:///control.sock");

    strcpy(out, "untouched");
    assert_int_equal(aos_control_url("", out, sizeof out), AOS_ERR_USAGE);
    assert_int_equal(aos_control_url(NULL, out, sizeof out), AOS_ERR_USAGE);
    assert_int_equal(aos_control_url("/d", out, 10), AOS_ERR_TOO_BIG);
    /* 95 + "/control.sock" (13) = 108 bytes: one more than sun_path holds with its NUL */
    char dir[128];
    memset(dir, 'a', 95);
    dir[0] = '/';
    dir[95] = 0;
    assert_int_equal(aos_control_url(dir, out, sizeof out), AOS_ERR_TOO_BIG);
    assert_string_equal(out, "untouched");
    dir[94] = 0;
    assert_int_equal(aos_control_url(dir, out, sizeof out), AOS_OK);
}

/* ---- connect --------------------------------------------------------------------- */

static void test_connect_errors(void **state)
{
    char dir[] = "/tmp/aos-client-test-XXXXXX", path[128], url[160], why[256];
    aos_conn *c = (aos_conn *)&c;
    (void)state;
    assert_non_null(mkdtemp(dir));

    assert_int_equal(aos_connect(NULL, &c, why, sizeof why), AOS_ERR_USAGE);
    assert_int_equal(aos_connect("", &c, why, sizeof why), AOS_ERR_USAGE);

    snprintf(path, sizeof path, "%s/control.sock", dir);
    snprintf(url, sizeof url, "ipc://%s", path);
    assert_int_equal(aos_connect(url, &c, why, sizeof why), AOS_ERR_UNAVAILABLE);
    assert_null(c);
    assert_non_null(strstr(why, path));

    /* a regular file where the socket should be */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(aos_connect(url, &c, why, sizeof why), AOS_ERR_REFUSED);
    assert_non_null(strstr(why, "not a socket"));
    unlink(path);

    /* a socket nobody listens on: what aosd leaves behind when it is killed */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(aos_connect(url, &c, why, sizeof why), AOS_ERR_UNAVAILABLE);
    assert_non_null(strstr(why, "nothing accepts"));

    /* a socket of another user */
    if (geteuid() == 0) {
        assert_int_equal(lchown(path, NOBODY, NOBODY), 0);
        assert_int_equal(aos_connect(url, &c, why, sizeof why), AOS_ERR_REFUSED);
        assert_non_null(strstr(why, "belongs to uid 65534"));
    }
    close(fd);
    unlink(path);

    assert_int_equal(aos_connect("bogus://x", &c, why, sizeof why), AOS_ERR_USAGE);
    rmdir(dir);
}

/* A listener that runs as nobody behind a socket file owned by root: the file passes the
 * lstat check, so only the peer credentials of the pipe can catch it. Raw syscalls only
 * in the child: nng is not fork-safe. */
static void test_connect_refuses_other_peer(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char dir[] = "/tmp/aos-client-test-XXXXXX", path[128], url[160], why[256];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0777), 0);
    snprintf(path, sizeof path, "%s/control.sock", dir);
    snprintf(url, sizeof url, "ipc://%s", path);
    int ready[2];
    assert_int_equal(pipe(ready), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        if (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(10);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, path, strlen(path) + 1);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 8) != 0)
            _exit(11);
        if (write(ready[1], "r", 1) != 1)
            _exit(12);
        /* speak the SP handshake as a REP0 peer, then hold the connection */
        static const unsigned char hdr[8] = {0, 'S', 'P', 0, 0, 0x31, 0, 0};
        for (;;) {
            int c = accept(fd, NULL, NULL);
            unsigned char got[8];
            if (c >= 0 && write(c, hdr, sizeof hdr) == (ssize_t)sizeof hdr)
                (void)!read(c, got, sizeof got);
        }
    }
    close(ready[1]);
    char b;
    assert_int_equal(read(ready[0], &b, 1), 1);
    close(ready[0]);
    assert_int_equal(lchown(path, 0, 0), 0);

    aos_conn *c = NULL;
    aos_err err = aos_connect(url, &c, why, sizeof why);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    unlink(path);
    rmdir(dir);
    if (c)
        aos_close(c);
    assert_int_equal(err, AOS_ERR_REFUSED);
    assert_non_null(strstr(why, "uid 65534"));
}

/* ---- calls ----------------------------------------------------------------------- */

static void test_call_argument_errors(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start(&r);
    aos_conn *c = connect_to(&r);
    /* one round trip first: nng 1.5.2 can leak a listener pipe that is closed while it
     * is still negotiating, which a connect-then-close would do */
    assert_int_equal(aos_call(c, NULL, "test.echo", "x", 1, &rep), AOS_OK);
    aos_reply_clear(&rep);

    assert_int_equal(aos_call(c, NULL, "test.echo", "x", 1, NULL), AOS_ERR_USAGE);
    assert_int_equal(aos_call(NULL, NULL, "test.echo", "x", 1, &rep), AOS_ERR_USAGE);
    assert_int_equal(rep.status, AOS_ERR_USAGE);
    assert_true(rep.error[0] != 0);
    assert_int_equal(aos_call(c, NULL, "noDot", NULL, 0, &rep), AOS_ERR_USAGE);
    assert_non_null(strstr(rep.error, "invalid method"));
    assert_int_equal(aos_call(c, NULL, NULL, NULL, 0, &rep), AOS_ERR_USAGE);
    assert_int_equal(aos_call(c, NULL, "Test.Upper", NULL, 0, &rep), AOS_ERR_USAGE);
    assert_int_equal(aos_call(c, NULL, "test.echo", NULL, 5, &rep), AOS_ERR_USAGE);
    aos_call_opts o = {.agent_id = "bad agent"};
    assert_int_equal(aos_call(c, &o, "test.echo", NULL, 0, &rep), AOS_ERR_USAGE);
    assert_non_null(strstr(rep.error, "agent id"));
    aos_call_opts t = {.timeout_ms = 0x80000000u};
    assert_int_equal(aos_call(c, &t, "test.echo", NULL, 0, &rep), AOS_ERR_USAGE);
    static char big[AOS_MSG_MAX + 1];
    assert_int_equal(aos_call(c, NULL, "test.echo", big, sizeof big, &rep), AOS_ERR_TOO_BIG);
    assert_null(rep.payload);
    aos_reply_clear(&rep);
    aos_reply_clear(NULL);

    aos_close(c);
    aos_close(NULL);
    responder_stop(&r);
}

static void test_call_round_trip(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start(&r);
    aos_conn *c = connect_to(&r);

    assert_int_equal(aos_call(c, NULL, "test.echo", "hello", 5, &rep), AOS_OK);
    assert_int_equal(rep.status, AOS_OK);
    assert_int_equal(rep.payload_len, 5);
    assert_memory_equal(rep.payload, "hello", 5);
    assert_string_equal(rep.error, "");
    aos_reply_clear(&rep);
    assert_null(rep.payload);

    assert_int_equal(aos_call(c, NULL, "test.echo", NULL, 0, &rep), AOS_OK);
    assert_null(rep.payload);
    assert_int_equal(rep.payload_len, 0);

    aos_call_opts o = {.agent_id = "agent:7"};
    assert_int_equal(aos_call(c, &o, "test.agent", NULL, 0, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, strlen("agent:7"));
    assert_memory_equal(rep.payload, "agent:7", rep.payload_len);
    aos_reply_clear(&rep);

    uint8_t id[AOS_ID_LEN];
    aos_id_random(id);
    aos_call_opts ro = {.request_id = id, .timeout_ms = 5000};
    assert_int_equal(aos_call(c, &ro, "test.rid", NULL, 0, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, AOS_ID_LEN);
    assert_memory_equal(rep.payload, id, AOS_ID_LEN);
    aos_reply_clear(&rep);

    assert_int_equal(aos_call(c, &ro, "test.deadline", NULL, 0, &rep), AOS_OK);

    /* a large payload: needs RECVMAXSZ raised on both sides */
    size_t n = 2u << 20;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 31u);
    assert_int_equal(aos_call(c, NULL, "test.echo", big, n, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, n);
    assert_memory_equal(rep.payload, big, n);
    aos_reply_clear(&rep);
    free(big);

    aos_close(c);
    responder_stop(&r);
}

static void test_call_error_status(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start(&r);
    aos_conn *c = connect_to(&r);

    assert_int_equal(aos_call(c, NULL, "test.fail", "kv/x", 4, &rep), AOS_ERR_NOT_FOUND);
    assert_int_equal(rep.status, AOS_ERR_NOT_FOUND);
    assert_string_equal(rep.error, "no such thing: kv/x");
    aos_reply_clear(&rep);

    assert_int_equal(aos_call(c, NULL, "test.bare", NULL, 0, &rep), AOS_ERR_CONFLICT);
    assert_string_equal(rep.error, "test.bare: conflict");
    aos_reply_clear(&rep);

    aos_close(c);
    responder_stop(&r);
}

static void test_call_timeout(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start(&r);
    aos_conn *c = connect_to(&r);

    aos_call_opts o = {.timeout_ms = 200};
    assert_int_equal(aos_call(c, &o, "test.silent", NULL, 0, &rep), AOS_ERR_TIMEOUT);
    assert_non_null(strstr(rep.error, "test.silent"));
    assert_null(rep.payload);
    /* the connection still works after a timed-out call */
    assert_int_equal(aos_call(c, NULL, "test.echo", "a", 1, &rep), AOS_OK);
    aos_reply_clear(&rep);

    aos_close(c);
    responder_stop(&r);
}

static void test_call_bad_replies(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start(&r);
    aos_conn *c = connect_to(&r);

    assert_int_equal(aos_call(c, NULL, "test.garbage", NULL, 0, &rep), AOS_ERR_PROTO);
    assert_non_null(strstr(rep.error, "malformed reply"));
    assert_null(rep.payload);
    assert_int_equal(aos_call(c, NULL, "test.otherid", "p", 1, &rep), AOS_ERR_PROTO);
    assert_non_null(strstr(rep.error, "another request"));
    assert_null(rep.payload);
    assert_int_equal(aos_call(c, NULL, "test.kind", "p", 1, &rep), AOS_ERR_PROTO);
    assert_non_null(strstr(rep.error, "not a reply"));
    assert_null(rep.payload);
    aos_reply_clear(&rep);

    aos_close(c);
    responder_stop(&r);
}

#define THREADS 8
#define CALLS 200

typedef struct {
    aos_conn *c;
    int id;
    atomic_int *bad;
} thread_arg;

static void *caller(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < CALLS; i++) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "thread %d call %d", a->id, i);
        aos_reply rep;
        aos_err err = aos_call(a->c, NULL, "test.echo", msg, (size_t)n, &rep);
        if (err != AOS_OK || rep.payload_len != (size_t)n || memcmp(rep.payload, msg, n) != 0)
            atomic_fetch_add(a->bad, 1);
        aos_reply_clear(&rep);
    }
    return NULL;
}

static void test_call_many_threads(void **state)
{
    responder r;
    pthread_t t[THREADS];
    thread_arg a[THREADS];
    atomic_int bad;
    (void)state;
    atomic_init(&bad, 0);
    responder_start(&r);
    aos_conn *c = connect_to(&r);

    for (int i = 0; i < THREADS; i++) {
        a[i] = (thread_arg){.c = c, .id = i, .bad = &bad};
        assert_int_equal(pthread_create(&t[i], NULL, caller, &a[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&bad), 0);

    aos_close(c);
    responder_stop(&r);
}

/* ---- the message cap and the bounded close ---------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Requests that would not fit aosd's receive cap fail at once with TOO_BIG, nothing sent:
 * 5 MB, AOS_MSG_MAX itself, and a payload whose envelope and nng's REQ header pass the cap
 * by a few bytes (before, that one was cut off at the transport: a lost connection). */
static void test_call_over_the_cap_is_refused_before_sending(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start(&r);
    aos_conn *c = connect_to(&r);
    size_t sizes[] = {5u << 20, AOS_MSG_MAX, AOS_MSG_MAX - 8,
                      AOS_MSG_MAX - 256 - 10 /* passes only with its envelope */};
    char *big = calloc(1, 5u << 20);
    assert_non_null(big);
    aos_call_opts o = {.timeout_ms = 20000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t t0 = mono_ms();
        assert_int_equal(aos_call(c, &o, "test.echo", big, sizes[i], &rep), AOS_ERR_TOO_BIG);
        uint64_t took = mono_ms() - t0;
        print_message("%zu bytes -> %s (%llu ms)\n", sizes[i], rep.error,
                      (unsigned long long)took);
        /* "at once": far below the 20 s deadline it would otherwise wait for (a loose
         * bound: a loaded sanitizer build is slow, and this is no benchmark) */
        assert_true(took < 5000);
        assert_int_equal(rep.status, AOS_ERR_TOO_BIG);
        assert_non_null(strstr(rep.error, "test.echo"));
        assert_non_null(strstr(rep.error, "nothing was sent"));
        assert_null(rep.payload);
        aos_reply_clear(&rep);
    }
    assert_int_equal(atomic_load(&r.seen), 0);
    /* a large request that fits still goes through, on the same connection */
    size_t fits = AOS_MSG_MAX - 4096;
    memset(big, 'x', fits);
    assert_int_equal(aos_call(c, &o, "test.echo", big, fits, &rep), AOS_OK);
    assert_int_equal(rep.payload_len, fits);
    assert_int_equal(atomic_load(&r.seen), 1);
    aos_reply_clear(&rep);
    free(big);
    aos_close(c);
    responder_stop(&r);
}

/* The peer cuts the connection while a 3 MiB request is still being written (its receive
 * cap is 1 KiB): the call fails without waiting for its deadline and aos_close returns
 * within its bound whatever nng does with the half-sent pipe. */
static void test_close_after_a_cut_mid_send_is_bounded(void **state)
{
    responder r;
    aos_reply rep;
    (void)state;
    responder_start_max(&r, 1024);
    aos_conn *c = connect_to(&r);
    size_t n = 3u << 20;
    char *big = calloc(1, n);
    assert_non_null(big);
    aos_call_opts o = {.timeout_ms = 5000};
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = mono_ms();
        aos_err err = aos_call(c, &o, "test.echo", big, n, &rep);
        uint64_t took = mono_ms() - t0;
        print_message("cut mid-send -> %s: %s (%llu ms)\n", aos_err_name(err), rep.error,
                      (unsigned long long)took);
        assert_int_not_equal(err, AOS_OK);
        aos_reply_clear(&rep);
    }
    free(big);
    uint64_t t0 = mono_ms();
    aos_close(c);
    uint64_t took = mono_ms() - t0;
    print_message("aos_close took %llu ms\n", (unsigned long long)took);
    assert_true(took < 10000); /* bounded (2 s wait), not forever; loose for loaded hosts */
    /* The responder's socket is left to the exit, on purpose: after this cut nng 1.5.2's
     * single reaper thread can stay blocked on the client's half-sent pipe (seen here, in
     * gdb: "nng:reap2" in a condition wait, aos_close's thread inside nng_close), and then
     * every later nng_close in the process waits for it. So this test comes last. */
    char path[160];
    snprintf(path, sizeof path, "%s/control.sock", r.dir);
    unlink(path);
    rmdir(r.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_dir_explicit_and_env),
        cmocka_unit_test(test_data_dir_defaults),
        cmocka_unit_test(test_control_url),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_connect_refuses_other_peer),
        cmocka_unit_test(test_call_argument_errors),
        cmocka_unit_test(test_call_round_trip),
        cmocka_unit_test(test_call_error_status),
        cmocka_unit_test(test_call_timeout),
        cmocka_unit_test(test_call_bad_replies),
        cmocka_unit_test(test_call_many_threads),
        cmocka_unit_test(test_call_over_the_cap_is_refused_before_sending),
        cmocka_unit_test(test_close_after_a_cut_mid_send_is_bounded), /* last: see it */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
