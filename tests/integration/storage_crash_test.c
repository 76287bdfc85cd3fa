/* Nothing acknowledged is ever lost, and a PostgreSQL restart fails no request with time
 * left: 8 writers put keys and bump a counter while aos-storage and PostgreSQL are killed. */
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
#include <time.h>
#include <dirent.h>
#include <sys/types.h>
#include <cmocka.h>
#include <libpq-fe.h>

#include "aos.pb-c.h"
#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"

#define WRITERS 8
#define KEYS_MAX 100000
#define RETRY_FOR_MS 120000u
#define AGENT "crash-agent"

static h_aosd *H;
static atomic_int stop;
static atomic_long acked_puts[WRITERS];   /* keys w<i>/0 .. w<i>/(n-1) are acknowledged */
static atomic_long acked_incrs, retries, total_acks;
static atomic_int fatal;
static char fatal_msg[512];

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int transient(aos_err e)
{
    return e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_CANCELLED;
}

static void set_fatal(const char *what, aos_err e, const char *why)
{
    if (atomic_fetch_add(&fatal, 1) == 0)
        snprintf(fatal_msg, sizeof fatal_msg, "%s: %s: %.400s", what, aos_err_name(e), why);
}

/* One logical write: retried with the same request id until it gets a final answer, as a
 * durable client must. 1 when acknowledged. */
static int put_once(aos_conn *c, int w, long n)
{
    char key[64], val[64], why[AOS_ERRMSG_MAX + 1];
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    snprintf(key, sizeof key, "w%d/%ld", w, n);
    snprintf(val, sizeof val, "value of writer %d, key %ld", w, n);
    aos_call_opts o = {.agent_id = AGENT, .request_id = rid, .timeout_ms = 10000};
    uint64_t end = aos_mono_ms() + RETRY_FOR_MS;
    for (;;) {
        aos_err e = aos_kv_put(c, &o, key, val, strlen(val), NULL, NULL, why, sizeof why);
        if (e == AOS_OK)
            return 1;
        if (!transient(e) || aos_mono_ms() > end) {
            set_fatal("put", e, why);
            return 0;
        }
        atomic_fetch_add(&retries, 1);
        nap_ms(50);
    }
}

static int incr_once(aos_conn *c)
{
    char why[AOS_ERRMSG_MAX + 1];
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    aos_call_opts o = {.agent_id = AGENT, .request_id = rid, .timeout_ms = 10000};
    uint64_t end = aos_mono_ms() + RETRY_FOR_MS;
    for (;;) {
        aos_err e = aos_kv_incr(c, &o, "counter", 1, NULL, why, sizeof why);
        if (e == AOS_OK)
            return 1;
        if (!transient(e) || aos_mono_ms() > end) {
            set_fatal("incr", e, why);
            return 0;
        }
        atomic_fetch_add(&retries, 1);
        nap_ms(50);
    }
}

static void *writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    char url[AOS_PATH_MAX + 16], why[AOS_ERRMSG_MAX + 1];
    aos_conn *c;
    aos_control_url(h_data_dir(H), url, sizeof url);
    if (aos_connect(url, &c, why, sizeof why) != AOS_OK) {
        set_fatal("connect", AOS_ERR_UNAVAILABLE, why);
        return NULL;
    }
    for (long n = 0; !atomic_load(&stop) && !atomic_load(&fatal) && n < KEYS_MAX; n++) {
        /* each logical request finishes (acknowledged) before the next starts, even after
         * stop: so the counter must equal the acknowledged increments exactly */
        if (!put_once(c, w, n))
            break;
        atomic_store(&acked_puts[w], n + 1);
        atomic_fetch_add(&total_acks, 1);
        if (!incr_once(c))
            break;
        atomic_fetch_add(&acked_incrs, 1);
        atomic_fetch_add(&total_acks, 1);
    }
    aos_close(c);
    return NULL;
}

/* Wait until `more` further writes were acknowledged (the system makes progress). */
static void progress(long more, const char *after)
{
    long target = atomic_load(&total_acks) + more;
    uint64_t end = aos_mono_ms() + 120000;
    while (atomic_load(&total_acks) < target && !atomic_load(&fatal)) {
        if (aos_mono_ms() > end)
            fail_msg("no progress after %s: %ld acks", after, atomic_load(&total_acks));
        nap_ms(20);
    }
    if (atomic_load(&fatal))
        fail_msg("a writer failed: %s", fatal_msg);
}

static void test_crash_under_load(void **st)
{
    (void)st;
    H = h_start(NULL);
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *)(intptr_t)i);
    progress(300, "start");

    pid_t pid = h_child(H, "storage", NULL);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(h_wait_running(H, "storage", pid, 60000) > 0);
    progress(300, "kill -9 aos-storage");

    pid = h_child(H, "postgres", NULL);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(h_wait_running(H, "postgres", pid, 60000) > 0);
    progress(300, "kill -9 postgres");

    atomic_store(&stop, 1);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    if (atomic_load(&fatal))
        fail_msg("a writer failed: %s", fatal_msg);

    /* every acknowledged write reads back, and no key was written twice (version 1) */
    PGconn *pg = su_admin_connect(H);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    long checked = 0;
    for (int w = 0; w < WRITERS; w++) {
        long n = atomic_load(&acked_puts[w]);
        char prefix[16];
        snprintf(prefix, sizeof prefix, "w%d/", w);
        const char *p[2] = {AGENT, prefix};
        PGresult *r = PQexecParams(pg,
            "SELECT convert_from(key, 'UTF8'), convert_from(value, 'UTF8'), version "
            "FROM storage.kv WHERE agent = $1 AND starts_with(convert_from(key, 'UTF8'), $2)",
            2, NULL, p, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        char *seen = calloc((size_t)n + 1, 1);
        for (int i = 0; i < PQntuples(r); i++) {
            long k = atol(PQgetvalue(r, i, 0) + strlen(prefix));
            char want[64];
            snprintf(want, sizeof want, "value of writer %d, key %ld", w, k);
            if (strcmp(PQgetvalue(r, i, 1), want))
                fail_msg("%s holds \"%s\"", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
            if (strcmp(PQgetvalue(r, i, 2), "1"))
                fail_msg("%s was applied %s times", PQgetvalue(r, i, 0), PQgetvalue(r, i, 2));
            if (k < n)
                seen[k] = 1;
        }
        for (long k = 0; k < n; k++)
            if (!seen[k])
                fail_msg("acknowledged key w%d/%ld is lost", w, k);
        checked += n;
        free(seen);
        PQclear(r);
    }
    long counter = su_counter(pg, AGENT);
    PQfinish(pg);
    fprintf(stderr, "crash test: %ld keys checked, counter %ld, %ld increments acknowledged, "
            "%ld retries\n", checked, counter, atomic_load(&acked_incrs),
            atomic_load(&retries));
    assert_int_equal(counter, atomic_load(&acked_incrs));
    /* for the log: how many retried requests the new aos-storage answered from records */
    aos_reply rep;
    if (aos_call(h_conn(H), NULL, "storage.stats", NULL, 0, &rep) == AOS_OK) {
        Aos__StatsReply *sr = aos__stats_reply__unpack(NULL, rep.payload_len, rep.payload);
        for (size_t i = 0; sr && i < sr->n_stats; i++)
            if (!strcmp(sr->stats[i]->name, "durable_replays") ||
                !strcmp(sr->stats[i]->name, "batched") || !strcmp(sr->stats[i]->name, "batches"))
                fprintf(stderr, "crash test: storage %s %lld\n", sr->stats[i]->name,
                        (long long)sr->stats[i]->value);
        if (sr)
            aos__stats_reply__free_unpacked(sr, NULL);
    }
    aos_reply_clear(&rep);
    h_stop(H);
}

/* ---- PostgreSQL restarts under load: not one request may fail ----------------------- */

#define R_AGENT "restart-agent"
#define R_KILLS 3
#define R_DEADLINE_MS 30000u

static atomic_int r_stop;
static atomic_long r_ok, r_failed, r_acked_incrs;
static atomic_long r_puts[WRITERS];          /* puts attempted by writer i */
static unsigned char r_acked[WRITERS][KEYS_MAX];
static char r_first_fail[512];
static atomic_int r_nfail_msgs;

static void r_failure(const char *what, long n, aos_err e, const char *why)
{
    atomic_fetch_add(&r_failed, 1);
    if (atomic_fetch_add(&r_nfail_msgs, 1) == 0)
        snprintf(r_first_fail, sizeof r_first_fail, "%s %ld: %s: %.400s", what, n,
                 aos_err_name(e), why);
}

/* One call per request, no retry by the client: the server must ride out the restart. */
static void *r_writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    char url[AOS_PATH_MAX + 16], why[AOS_ERRMSG_MAX + 1];
    aos_conn *c;
    aos_control_url(h_data_dir(H), url, sizeof url);
    if (aos_connect(url, &c, why, sizeof why) != AOS_OK) {
        r_failure("connect", w, AOS_ERR_UNAVAILABLE, why);
        return NULL;
    }
    for (long n = 0; !atomic_load(&r_stop) && n < KEYS_MAX; n++) {
        char key[64], val[64];
        snprintf(key, sizeof key, "r%d/%ld", w, n);
        snprintf(val, sizeof val, "restart value %d/%ld", w, n);
        aos_call_opts o = {.agent_id = R_AGENT, .timeout_ms = R_DEADLINE_MS};
        atomic_store(&r_puts[w], n + 1);
        aos_err e = aos_kv_put(c, &o, key, val, strlen(val), NULL, NULL, why, sizeof why);
        if (e == AOS_OK) {
            r_acked[w][n] = 1;
            atomic_fetch_add(&r_ok, 1);
        } else {
            r_failure("put", n, e, why);
        }
        e = aos_kv_incr(c, &o, "counter", 1, NULL, why, sizeof why);
        if (e == AOS_OK) {
            atomic_fetch_add(&r_acked_incrs, 1);
            atomic_fetch_add(&r_ok, 1);
        } else {
            r_failure("incr", n, e, why);
        }
    }
    aos_close(c);
    return NULL;
}

static void r_progress(long more, const char *after)
{
    long target = atomic_load(&r_ok) + more;
    uint64_t end = aos_mono_ms() + 60000;
    while (atomic_load(&r_ok) < target) {
        if (aos_mono_ms() > end)
            fail_msg("no progress after %s: %ld acks", after, atomic_load(&r_ok));
        nap_ms(10);
    }
}

/* The postmaster and every process under it (its backends), for SIGSTOP/SIGCONT: a
 * stopped postmaster alone would leave the open sessions working. */
static int pg_tree(pid_t root, pid_t *out, int cap)
{
    int n = 0;
    out[n++] = root;
    for (int i = 0; i < n && n < cap; i++) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d && (de = readdir(d)) && n < cap) {
            pid_t pid = (pid_t)atoi(de->d_name);
            if (pid <= 0)
                continue;
            char path[64], buf[512];
            snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
            FILE *f = fopen(path, "r");
            if (!f)
                continue;
            size_t got = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[got] = 0;
            char *rp = strrchr(buf, ')');
            int ppid = 0;
            if (rp && sscanf(rp + 1, " %*c %d", &ppid) == 1 && ppid == out[i]) {
                int dup = 0;
                for (int j = 0; j < n; j++)
                    dup |= out[j] == pid;
                if (!dup)
                    out[n++] = pid;
            }
        }
        if (d)
            closedir(d);
    }
    return n;
}

/* What restart writer *(int *)arg wrote under key k. */
static void restart_want(char *out, size_t cap, long k, void *arg)
{
    snprintf(out, cap, "restart value %d/%ld", *(int *)arg, k);
}

static void test_postgres_restarts_fail_nothing(void **st)
{
    (void)st;
    H = h_start(NULL);
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, r_writer, (void *)(intptr_t)i);
    r_progress(300, "start");
    uint64_t outage_max = 0;
    for (int k = 0; k < R_KILLS; k++) {
        pid_t pid = h_child(H, "postgres", NULL);
        assert_true(pid > 0);
        uint64_t t0 = aos_mono_ms();
        assert_int_equal(kill(pid, SIGKILL), 0);
        if (h_wait_running(H, "postgres", pid, 60000) <= 0) {
            h_dump_log(H);
            fail_msg("postgres did not come back after kill %d", k + 1);
        }
        uint64_t back = aos_mono_ms() - t0;
        outage_max = back > outage_max ? back : outage_max;
        r_progress(200, "kill -9 postgres");
        fprintf(stderr, "restart test: kill %d: postgres running again after %llu ms, %ld "
                "acks so far, %ld failed\n", k + 1, (unsigned long long)back,
                atomic_load(&r_ok), atomic_load(&r_failed));
    }
    atomic_store(&r_stop, 1);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);

    /* every acknowledged put reads back once, the counter counts the acknowledged incrs */
    PGconn *pg = su_admin_connect(H);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    long checked = 0, lost = 0;
    for (int w = 0; w < WRITERS; w++) {
        char prefix[16], bad[256];
        snprintf(prefix, sizeof prefix, "r%d/", w);
        if (su_check_puts(pg, R_AGENT, prefix, atomic_load(&r_puts[w]), r_acked[w],
                          restart_want, &w, &checked, &lost, bad, sizeof bad))
            fail_msg("%s", bad);
    }
    long counter = su_counter(pg, R_AGENT);
    PQfinish(pg);
    fprintf(stderr, "restart test: %d kills of postgres (longest outage %llu ms): %ld "
            "requests acknowledged, %ld failed, %ld acknowledged puts checked, %ld lost, "
            "counter %ld for %ld acknowledged increments\n", R_KILLS,
            (unsigned long long)outage_max, atomic_load(&r_ok), atomic_load(&r_failed),
            checked, lost, counter, atomic_load(&r_acked_incrs));
    if (atomic_load(&r_failed))
        fprintf(stderr, "restart test: first failure: %s\n", r_first_fail);
    assert_int_equal(lost, 0);
    assert_int_equal(atomic_load(&r_failed), 0);
    assert_int_equal(counter, atomic_load(&r_acked_incrs));
    aos_reply rep;
    if (aos_call(h_conn(H), NULL, "storage.stats", NULL, 0, &rep) == AOS_OK) {
        Aos__StatsReply *sr = aos__stats_reply__unpack(NULL, rep.payload_len, rep.payload);
        for (size_t i = 0; sr && i < sr->n_stats; i++)
            if (!strcmp(sr->stats[i]->name, "db_reruns") ||
                !strcmp(sr->stats[i]->name, "db_waited_ms"))
                fprintf(stderr, "restart test: storage %s %lld\n", sr->stats[i]->name,
                        (long long)sr->stats[i]->value);
        if (sr)
            aos__stats_reply__free_unpacked(sr, NULL);
    }
    aos_reply_clear(&rep);

    /* PostgreSQL frozen (SIGSTOP, all its processes) for 2 s: a request with a 300 ms
     * deadline gets UNAVAILABLE or TIMEOUT in about that time, not a hang; one with time
     * left is answered OK once it thaws. */
    pid_t tree[256];
    int nt = pg_tree(h_child(H, "postgres", NULL), tree, 256);
    assert_true(nt >= 1 && tree[0] > 0);
    for (int i = 0; i < nt; i++)
        kill(tree[i], SIGSTOP);
    uint64_t t0 = aos_mono_ms();
    char why[AOS_ERRMSG_MAX + 1];
    aos_call_opts shortd = {.agent_id = R_AGENT, .timeout_ms = 300};
    aos_err e = aos_kv_put(h_conn(H), &shortd, "frozen/short", "x", 1, NULL, NULL, why,
                           sizeof why);
    uint64_t took = aos_mono_ms() - t0;
    fprintf(stderr, "restart test: 300 ms request against a frozen database: %s after %llu "
            "ms: %s\n", aos_err_name(e), (unsigned long long)took, why);
    nap_ms(took < 2000 ? (long)(2000 - took) : 0);
    for (int i = 0; i < nt; i++)
        kill(tree[i], SIGCONT);
    assert_true(e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT);
    assert_true(took < 1500);
    aos_call_opts longd = {.agent_id = R_AGENT, .timeout_ms = R_DEADLINE_MS};
    e = aos_kv_put(h_conn(H), &longd, "frozen/after", "y", 1, NULL, NULL, why, sizeof why);
    if (e != AOS_OK)
        fail_msg("put after the thaw: %s: %s", aos_err_name(e), why);
    h_stop(H);
}

/* kill -9 of aosd itself, then a new aosd on the same data dir: every child comes back,
 * what was acknowledged is there, and a client retrying with the same request id gets the
 * recorded reply (the increment is applied once). */
static void test_aosd_kill9_and_restart(void **state)
{
    (void)state;
    h_aosd *h = h_start(NULL);
    char why[AOS_ERRMSG_MAX + 1], dir[256];
    uint8_t rid[AOS_ID_LEN];
    aos_id_random(rid);
    aos_call_opts o = {.agent_id = AGENT, .request_id = rid, .timeout_ms = 10000};
    int64_t v1 = 0, v2 = 0;
    assert_int_equal(aos_kv_put(h_conn(h), &(aos_call_opts){.agent_id = AGENT}, "kept", "yes",
                                3, NULL, NULL, why, sizeof why), AOS_OK);
    assert_int_equal(aos_kv_incr(h_conn(h), &o, "once", 1, &v1, why, sizeof why), AOS_OK);
    assert_int_equal(v1, 1);
    h_kill9_keep(h, dir, sizeof dir);

    h = h_start_on(dir, NULL, 60000, why, sizeof why);
    if (!h) {
        h_remove_dir(dir);
        fail_msg("aosd did not come back on %s: %s", dir, why);
    }
    const char *names[] = {"postgres", "memory", "storage", "tool", "llm", "audit"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_true(h_child(h, names[i], NULL) > 0);
    /* the same request id: the recorded reply, not a second increment */
    assert_int_equal(aos_kv_incr(h_conn(h), &o, "once", 1, &v2, why, sizeof why), AOS_OK);
    assert_int_equal(v2, 1);
    uint8_t *val = NULL;
    size_t len = 0;
    assert_int_equal(aos_kv_get(h_conn(h), &(aos_call_opts){.agent_id = AGENT}, "kept", &val,
                                &len, NULL, why, sizeof why), AOS_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(val, "yes", 3);
    free(val);
    /* a fresh id is a new increment */
    assert_int_equal(aos_kv_incr(h_conn(h), &(aos_call_opts){.agent_id = AGENT}, "once", 1,
                                 &v2, why, sizeof why), AOS_OK);
    assert_int_equal(v2, 2);
    h_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_under_load),
        cmocka_unit_test(test_postgres_restarts_fail_nothing),
        cmocka_unit_test(test_aosd_kill9_and_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
