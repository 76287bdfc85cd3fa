/* The kernel against real processes: all children up, kill -9 of each server under load
 * with nothing lost, postgres restart, crash loop -> failed, hung server, SIGSYS, SIGTERM. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "aos.pb-c.h"
#include "harness.h"

static const char *const servers[] = {"memory", "storage", "tool", "llm", "audit", "api"};
#define N_SERVERS (sizeof servers / sizeof servers[0])

static aos_err ping(aos_conn *c, const char *server, uint32_t timeout_ms, char *err, size_t n)
{
    char method[64];
    snprintf(method, sizeof method, "%s.ping", server);
    Aos__PingRequest rq = AOS__PING_REQUEST__INIT;
    uint8_t data[8] = "aos-ping", buf[32];
    rq.data.data = data;
    rq.data.len = sizeof data;
    size_t len = aos__ping_request__pack(&rq, buf);
    aos_call_opts o = {.timeout_ms = timeout_ms};
    aos_reply r;
    aos_err rc = aos_call(c, &o, method, buf, len, &r);
    if (rc == AOS_OK) {
        Aos__PingReply *pr = aos__ping_reply__unpack(NULL, r.payload_len, r.payload);
        if (!pr || pr->data.len != sizeof data || memcmp(pr->data.data, data, sizeof data)) {
            rc = AOS_ERR_PROTO;
            snprintf(r.error, sizeof r.error, "ping reply does not echo the data");
        }
        if (pr)
            aos__ping_reply__free_unpacked(pr, NULL);
    }
    if (err)
        snprintf(err, n, "%s", r.error);
    aos_reply_clear(&r);
    return rc;
}

/* A stats figure of a server, -1 when absent. */
static int64_t stat_of(aos_conn *c, const char *server, const char *name, char *text, size_t n)
{
    char method[64];
    snprintf(method, sizeof method, "%s.stats", server);
    aos_reply r;
    if (aos_call(c, NULL, method, NULL, 0, &r) != AOS_OK) {
        aos_reply_clear(&r);
        return -1;
    }
    int64_t v = -1;
    Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
    for (size_t i = 0; s && i < s->n_stats; i++)
        if (!strcmp(s->stats[i]->name, name)) {
            v = s->stats[i]->value;
            if (text)
                snprintf(text, n, "%s", s->stats[i]->text);
        }
    if (s)
        aos__stats_reply__free_unpacked(s, NULL);
    aos_reply_clear(&r);
    return v;
}

static void all_children_run_and_status_says_so(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    char out[8192];
    const char *argv[] = {"--json", "status", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, argv), 0);
    json_error_t je;
    json_t *doc = json_loads(out, 0, &je);
    assert_non_null(doc);
    json_t *kids = json_object_get(doc, "children");
    assert_int_equal(json_array_size(kids), N_SERVERS + 1); /* and postgres */
    size_t i;
    json_t *k;
    json_array_foreach(kids, i, k) {
        assert_string_equal(json_string_value(json_object_get(k, "state")), "running");
        assert_true(json_integer_value(json_object_get(k, "pid")) > 0);
    }
    json_decref(doc);
    for (size_t s = 0; s < N_SERVERS; s++) {
        char err[AOS_ERRMSG_MAX + 1];
        assert_int_equal(ping(h_conn(h), servers[s], 10000, err, sizeof err), AOS_OK);
    }
    /* the servers with a database are connected with their own roles */
    char text[256];
    assert_int_equal(stat_of(h_conn(h), "storage", "pg_connected", text, sizeof text), 1);
    assert_int_equal(stat_of(h_conn(h), "memory", "pg_connected", NULL, 0), 1);
    assert_int_equal(stat_of(h_conn(h), "audit", "pg_connected", NULL, 0), 1);
    assert_int_equal(stat_of(h_conn(h), "tool", "pg_connected", NULL, 0), -1);
    h_stop(h);
}

/* ---- kill -9 under load: 8 clients ping; every request is answered ------------------- */

typedef struct {
    h_aosd *h;
    aos_conn *conn;
    atomic_int *stop;
    const char *server;
    long ok, failed;
    char last_err[AOS_ERRMSG_MAX + 64];
} pinger;

static void *pinger_main(void *arg)
{
    pinger *p = arg;
    while (!atomic_load(p->stop)) {
        char err[AOS_ERRMSG_MAX + 1];
        aos_err rc = ping(p->conn, p->server, 20000, err, sizeof err);
        if (rc == AOS_OK)
            p->ok++;
        else {
            p->failed++;
            snprintf(p->last_err, sizeof p->last_err, "%s: %s", aos_err_name(rc), err);
        }
    }
    return NULL;
}

/* kill -9 of server under 8 pinging clients: it comes back, and every ping is answered */
static void kill9_under_load(h_aosd *h, const char *server)
{
    char url[256];
    assert_int_equal(aos_control_url(h_data_dir(h), url, sizeof url), AOS_OK);
    atomic_int stop = 0;
    pinger p[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        memset(&p[i], 0, sizeof p[i]);
        p[i].h = h;
        p[i].stop = &stop;
        p[i].server = server;
        char why[256];
        assert_int_equal(aos_connect(url, &p[i].conn, why, sizeof why), AOS_OK);
        pthread_create(&t[i], NULL, pinger_main, &p[i]);
    }
    usleep(300 * 1000);
    pid_t old = h_child(h, server, NULL);
    assert_true(old > 0);
    assert_int_equal(kill(old, SIGKILL), 0);
    pid_t now = h_wait_running(h, server, old, 30000);
    if (now <= 0 || now == old)
        h_dump_log(h); /* why it did not come back */
    assert_true(now > 0 && now != old);
    usleep(500 * 1000);
    atomic_store(&stop, 1);
    long ok = 0, failed = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += p[i].ok;
        failed += p[i].failed;
        if (p[i].failed)
            print_message("client %d: %s\n", i, p[i].last_err);
        aos_close(p[i].conn);
    }
    print_message("%s: kill -9 of pid %d under load: %ld answered, %ld failed\n", server,
                  (int)old, ok, failed);
    assert_true(ok > 0);
    assert_int_equal(failed, 0);
}

static void kill9_each_server_under_load_loses_nothing(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    for (size_t s = 0; s < N_SERVERS; s++)
        kill9_under_load(h, servers[s]);
    h_stop(h);
}

/* nng at times never lets go of a dead incarnation's pipe; aosd then moves the link to a
 * new socket. AOS_TEST_LINK_RENEW makes it do so on every restart, so that path is run. */
static void a_link_moved_to_a_new_socket_loses_nothing(void **st)
{
    (void)st;
    setenv("AOS_TEST_LINK_RENEW", "1", 1);
    h_aosd *h = h_start(NULL);
    unsetenv("AOS_TEST_LINK_RENEW");
    kill9_under_load(h, "storage");
    kill9_under_load(h, "llm");
    kill9_under_load(h, "storage"); /* a second move, from the moved socket */
    assert_true(h_log_count(h, "moved to a new socket") >= 3);
    h_stop(h);
}

static void postgres_kill9_is_restarted_and_servers_reconnect(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    unsigned before = (unsigned)stat_of(h_conn(h), "storage", "pg_connects", NULL, 0);
    pid_t old = h_child(h, "postgres", NULL);
    assert_true(old > 0);
    assert_int_equal(kill(old, SIGKILL), 0);
    assert_true(h_wait_running(h, "postgres", old, 60000) > 0);
    const char *dbs[] = {"storage", "memory", "audit"};
    for (size_t i = 0; i < 3; i++) {
        int64_t up = 0;
        for (int tries = 0; tries < 200 && up != 1; tries++) {
            up = stat_of(h_conn(h), dbs[i], "pg_connected", NULL, 0);
            if (up != 1)
                usleep(100 * 1000);
        }
        assert_int_equal(up, 1);
    }
    /* every worker that served since has reconnected; at least the one we asked */
    assert_true((unsigned)stat_of(h_conn(h), "storage", "pg_connects", NULL, 0) > before);
    h_stop(h);
}

static void a_server_crashing_in_a_loop_ends_failed_with_its_reason(void **st)
{
    (void)st;
    const char *args[] = {"--test-hooks", "--restart-intensity", "3/60", NULL};
    h_aosd *h = h_start(args);
    int failed = 0;
    for (int i = 0; i < 20 && !failed; i++) {
        pid_t pid = h_wait_running(h, "llm", 0, 20000);
        assert_true(pid > 0);
        aos_reply r;
        aos_call_opts o = {.timeout_ms = 3000};
        aos_call(h_conn(h), &o, "llm.test.exit", NULL, 0, &r); /* it exits: no answer */
        aos_reply_clear(&r);
        failed = h_wait_state(h, "llm", "failed", 1500);
    }
    assert_true(failed);
    char out[8192];
    const char *argv[] = {"--json", "status", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, argv), 0);
    assert_non_null(strstr(out, "restarts in 60 s"));
    assert_non_null(strstr(out, "exit 3"));
    /* a call to a failed server is refused at once, with the reason, as FAILED (the same
     * answer the calls queued when it failed got: retrying on UNAVAILABLE would loop) */
    char err[AOS_ERRMSG_MAX + 1];
    assert_int_equal(ping(h_conn(h), "llm", 5000, err, sizeof err), AOS_ERR_FAILED);
    assert_non_null(strstr(err, "failed"));
    /* the others are untouched, and an operator can bring it back */
    assert_int_equal(ping(h_conn(h), "tool", 5000, NULL, 0), AOS_OK);
    const char *rs[] = {"server", "restart", "aos-llm", NULL};
    assert_int_equal(h_aosctl(h, NULL, 0, rs), 0);
    assert_true(h_wait_running(h, "llm", 0, 20000) > 0);
    assert_int_equal(ping(h_conn(h), "llm", 5000, NULL, 0), AOS_OK);
    h_stop(h);
}

static void a_hung_server_is_caught_by_heartbeats(void **st)
{
    (void)st;
    const char *args[] = {"--heartbeat-ms", "200", "--heartbeat-timeout-ms", "1000", NULL};
    h_aosd *h = h_start(args);
    pid_t old = h_child(h, "tool", NULL);
    assert_int_equal(kill(old, SIGSTOP), 0); /* alive, but its loop answers nothing */
    pid_t now = h_wait_running(h, "tool", old, 20000);
    assert_true(now > 0 && now != old);
    char out[8192];
    const char *argv[] = {"--json", "status", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, argv), 0);
    assert_non_null(strstr(out, "heartbeat timeout"));
    assert_int_equal(ping(h_conn(h), "tool", 5000, NULL, 0), AOS_OK);
    h_stop(h);
}

static void a_forbidden_syscall_kills_the_server_which_is_restarted(void **st)
{
    (void)st;
    const char *args[] = {"--test-hooks", NULL};
    h_aosd *h = h_start(args);
    for (size_t s = 0; s < N_SERVERS; s++) {
        pid_t old = h_child(h, servers[s], NULL);
        char method[64];
        snprintf(method, sizeof method, "%s.test.forbidden", servers[s]);
        aos_reply r;
        aos_call_opts o = {.timeout_ms = 20000};
        if (!strcmp(servers[s], "tool")) {
            /* a deny-list (its tools inherit it): refused, not killed, and still serving */
            assert_int_equal(aos_call(h_conn(h), &o, method, NULL, 0, &r), AOS_ERR_REFUSED);
            assert_non_null(strstr(r.error, "EPERM"));
            aos_reply_clear(&r);
            assert_int_equal(h_child(h, "tool", NULL), old);
            continue;
        }
        /* re-sent once to the next incarnation, which dies too: then it is a poison pill,
         * answered FAILED rather than re-sent again */
        assert_int_equal(aos_call(h_conn(h), &o, method, NULL, 0, &r), AOS_ERR_FAILED);
        assert_non_null(strstr(r.error, "died 2 times"));
        aos_reply_clear(&r);
        pid_t now = h_wait_running(h, servers[s], old, 20000);
        assert_true(now > 0 && now != old);
        char out[8192];
        const char *argv[] = {"--json", "status", NULL};
        assert_int_equal(h_aosctl(h, out, sizeof out, argv), 0);
        json_t *doc = json_loads(out, 0, NULL);
        json_t *kids = json_object_get(doc, "children");
        size_t i;
        json_t *k;
        int seen = 0;
        json_array_foreach(kids, i, k) {
            if (strcmp(json_string_value(json_object_get(k, "name")), servers[s]))
                continue;
            const char *le = json_string_value(json_object_get(k, "last_exit"));
            print_message("%s last exit: %s\n", servers[s], le);
            assert_non_null(strstr(le, "signal 31"));
            seen = 1;
        }
        assert_true(seen);
        json_decref(doc);
    }
    h_stop(h);
}

static void a_second_aosd_on_the_same_data_dir_refuses(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --data-dir %s 2>&1", h_bin("aosd"), h_data_dir(h));
    FILE *f = popen(cmd, "r");
    char out[1024] = "";
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    int rc = pclose(f);
    assert_int_equal(WEXITSTATUS(rc), 1);
    assert_non_null(strstr(out, "already running"));
    assert_int_equal(ping(h_conn(h), "storage", 5000, NULL, 0), AOS_OK);
    h_stop(h);
}

static void aosd_kill9_leaves_no_process_behind(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    h_kill9(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(all_children_run_and_status_says_so),
        cmocka_unit_test(kill9_each_server_under_load_loses_nothing),
        cmocka_unit_test(a_link_moved_to_a_new_socket_loses_nothing),
        cmocka_unit_test(postgres_kill9_is_restarted_and_servers_reconnect),
        cmocka_unit_test(a_server_crashing_in_a_loop_ends_failed_with_its_reason),
        cmocka_unit_test(a_hung_server_is_caught_by_heartbeats),
        cmocka_unit_test(a_forbidden_syscall_kills_the_server_which_is_restarted),
        cmocka_unit_test(a_second_aosd_on_the_same_data_dir_refuses),
        cmocka_unit_test(aosd_kill9_leaves_no_process_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
