/* Nothing acknowledged is ever lost: 8 writers put keys and bump a counter with idempotent
 * requests while aos-storage, then PostgreSQL, are killed with SIGKILL under the load. */
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
    const char *p[1] = {AGENT};
    PGresult *r = PQexecParams(pg, "SELECT convert_from(value, 'UTF8') FROM storage.kv "
                                   "WHERE agent = $1 AND key = 'counter'::bytea",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQntuples(r), 1);
    long counter = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_under_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
