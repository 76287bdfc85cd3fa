/* Batched links under load: 64 clients, each on its own connection, while aos-storage is
 * killed -9 again and again: every reply matches its request, nothing is lost or doubled. */
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
#include <unistd.h>
#include <cmocka.h>

#include "aos.pb-c.h"
#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"

#define CLIENTS 64
#define KILLS 5
#define AGENT "batch"

static h_aosd *H;
static char URL[256];
static atomic_int stop;
static atomic_long acked[CLIENTS], pings_ok, mismatched, failed;
static char first_fail[512];
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;

static void note_fail(const char *what, aos_err e, const char *why)
{
    atomic_fetch_add(&failed, 1);
    pthread_mutex_lock(&fail_mu);
    if (!first_fail[0])
        snprintf(first_fail, sizeof first_fail, "%s: %s %s", what, aos_err_name(e), why);
    pthread_mutex_unlock(&fail_mu);
}

/* Each client alternates a ping carrying its own bytes (the reply must echo exactly
 * them) and an increment of its own counter (the count must equal the acknowledged). */
static void *client(void *arg)
{
    int w = (int)(intptr_t)arg;
    aos_conn *c = NULL;
    char why[AOS_ERRMSG_MAX + 1];
    if (aos_connect(URL, &c, why, sizeof why) != AOS_OK) {
        note_fail("connect", AOS_ERR_UNAVAILABLE, why);
        return NULL;
    }
    char key[32];
    snprintf(key, sizeof key, "n%d", w);
    for (long i = 0; !atomic_load(&stop); i++) {
        char data[48];
        int dl = snprintf(data, sizeof data, "client %d call %ld", w, i);
        Aos__PingRequest pq = AOS__PING_REQUEST__INIT;
        pq.data.data = (uint8_t *)data;
        pq.data.len = (size_t)dl;
        uint8_t buf[96];
        size_t len = aos__ping_request__pack(&pq, buf);
        aos_call_opts o = {.agent_id = AGENT, .timeout_ms = 30000};
        aos_reply r;
        aos_err e = aos_call(c, &o, "storage.ping", buf, len, &r);
        if (e == AOS_OK) {
            Aos__PingReply *pr = aos__ping_reply__unpack(NULL, r.payload_len, r.payload);
            if (!pr || pr->data.len != (size_t)dl || memcmp(pr->data.data, data, (size_t)dl))
                atomic_fetch_add(&mismatched, 1);
            else
                atomic_fetch_add(&pings_ok, 1);
            if (pr)
                aos__ping_reply__free_unpacked(pr, NULL);
        } else {
            note_fail("ping", e, r.error);
        }
        aos_reply_clear(&r);
        int64_t v = 0;
        e = aos_kv_incr(c, &o, key, 1, &v, why, sizeof why);
        if (e == AOS_OK) {
            long n = atomic_fetch_add(&acked[w], 1) + 1;
            if (v != n) /* one client, one thread: its counter moves with its own calls */
                atomic_fetch_add(&mismatched, 1);
        } else {
            note_fail("kv.incr", e, why);
        }
    }
    aos_close(c);
    return NULL;
}

static int64_t stat_of(const char *name)
{
    aos_reply r;
    int64_t v = -1;
    if (aos_call(h_conn(H), NULL, "storage.stats", NULL, 0, &r) == AOS_OK) {
        Aos__StatsReply *sr = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
        for (size_t i = 0; sr && i < sr->n_stats; i++)
            if (!strcmp(sr->stats[i]->name, name))
                v = sr->stats[i]->value;
        if (sr)
            aos__stats_reply__free_unpacked(sr, NULL);
    }
    aos_reply_clear(&r);
    return v;
}

static void replies_match_and_nothing_is_lost_or_doubled(void **st)
{
    (void)st;
    H = h_start(NULL);
    aos_control_url(h_data_dir(H), URL, sizeof URL);
    pthread_t th[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, client, (void *)(intptr_t)i), 0);
    int64_t frames = 0;
    for (int k = 0; k < KILLS; k++) {
        usleep(700 * 1000);
        int64_t f = stat_of("frames_in");
        if (f > frames)
            frames = f;
        pid_t pid = h_wait_running(H, "storage", 0, 30000);
        assert_true(pid > 0);
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_true(h_wait_running(H, "storage", pid, 30000) > 0);
    }
    usleep(700 * 1000);
    atomic_store(&stop, 1);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);

    PGconn *pg = su_admin_connect(H);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("admin connection: %s", PQerrorMessage(pg));
    long wrong = 0, total = 0;
    for (int w = 0; w < CLIENTS; w++) {
        char sql[160];
        snprintf(sql, sizeof sql, "SELECT coalesce((SELECT convert_from(value, 'UTF8')::bigint "
                 "FROM storage.kv WHERE agent = '" AGENT "' AND key = 'n%d'::bytea), 0)", w);
        long long n = su_count(pg, sql);
        total += atomic_load(&acked[w]);
        wrong += n != atomic_load(&acked[w]);
    }
    PQfinish(pg);
    print_message("%d clients, %d kill -9s of storage: %ld pings matched, %ld increments "
                  "acknowledged, %ld mismatched, %ld failed, %ld counters off; storage saw "
                  "%lld batch frames from aosd in its last incarnations\n", CLIENTS, KILLS,
                  atomic_load(&pings_ok), total, atomic_load(&mismatched),
                  atomic_load(&failed), wrong, (long long)frames);
    if (first_fail[0])
        print_message("first failure: %s\n", first_fail);
    assert_int_equal(atomic_load(&mismatched), 0);
    assert_int_equal(atomic_load(&failed), 0);
    assert_int_equal(wrong, 0);
    assert_true(total > 0);
    h_stop(H);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replies_match_and_nothing_is_lost_or_doubled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
