/* A kill campaign at aosd's default restart intensity: 200 kill -9s of random children,
 * postgres included, under 16 writers; nothing ends failed, nothing acknowledged is lost. */
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
#include "aos/servers.h"
#include "aos/storage.h"
#include "harness.h"
#include "storage_util.h"

#define WRITERS 16
#define KEYS_MAX 200000
#define KILLS 200
#define GAP_MIN_MS 250          /* between two kills: each victim recovers in far less */
#define GAP_MAX_MS 500
#define DEADLINE_MS 30000u      /* every request's; none is retried by the client */
#define RECOVER_MAX_MS 30000u   /* a victim not answering by then fails the test */
#define CAMPAIGN_MAX_MS 480000u /* the whole campaign, whatever happens */
#define JOIN_MAX_MS (DEADLINE_MS + 30000u)
#define AGENT "campaign-agent"

/* postgres and every server: the victims */
static const char *const victims[] = {AOS_CHILD_PG, AOS_SRV_NAMES};
#define NVICTIMS (sizeof victims / sizeof victims[0])
_Static_assert(NVICTIMS == AOS_SRV_COUNT + 1, "postgres and every server");

static h_aosd *H;
static atomic_int stop;

/* ---- the writers ------------------------------------------------------------------- */

static atomic_long acked[WRITERS];            /* puts c<w>/0 .. c<w>/(n-1) were answered */
static unsigned char put_ok[WRITERS][KEYS_MAX];
static atomic_long n_ok, n_failed, n_failed_early, n_incr_ok, n_replays_wrong;
static atomic_long latency_max_ms;
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char first_failure[600];
#define FAILURES_SHOWN 5
static char failures[FAILURES_SHOWN][640];   /* the first few, with their UTC time */
static int nfailures;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* A request that did not succeed. early: it was answered before its deadline was near,
 * i.e. it failed while it still had time left (the system gave up on it). */
static void failure(const char *what, int w, long n, aos_err e, const char *why, uint64_t took)
{
    int early = took + 1000 < DEADLINE_MS;
    atomic_fetch_add(&n_failed, 1);
    if (early)
        atomic_fetch_add(&n_failed_early, 1);
    pthread_mutex_lock(&fail_mu);
    if (nfailures < FAILURES_SHOWN) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        snprintf(failures[nfailures++], sizeof failures[0], "%02d:%02d:%02d.%03ld UTC %s by "
                 "writer %d (#%ld): %s after %llu ms: %.400s", tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000L, what, w, n, aos_err_name(e),
                 (unsigned long long)took, why);
    }
    if (!first_failure[0])
        snprintf(first_failure, sizeof first_failure, "%s by writer %d (#%ld): %s after %llu "
                 "ms%s: %.400s", what, w, n, aos_err_name(e), (unsigned long long)took,
                 early ? " (time left)" : "", why);
    pthread_mutex_unlock(&fail_mu);
}

static void note_latency(uint64_t took)
{
    long cur = atomic_load(&latency_max_ms);
    while ((long)took > cur && !atomic_compare_exchange_weak(&latency_max_ms, &cur,
                                                              (long)took))
        ;
}

/* Puts of unique keys, each followed by an increment of the shared counter that is sent
 * twice with the same request id: the second must be answered from the record (the same
 * value) and not applied again. One call per request, no retry: aosd and the servers must
 * ride out every kill within the deadline. */
static void *writer(void *arg)
{
    int w = (int)(intptr_t)arg;
    char url[AOS_PATH_MAX + 16], why[AOS_ERRMSG_MAX + 1];
    aos_conn *c;
    aos_control_url(h_data_dir(H), url, sizeof url);
    if (aos_connect(url, &c, why, sizeof why) != AOS_OK) {
        failure("connect", w, 0, AOS_ERR_UNAVAILABLE, why, 0);
        return NULL;
    }
    for (long n = 0; !atomic_load(&stop) && n < KEYS_MAX; n++) {
        char key[64], val[96];
        snprintf(key, sizeof key, "c%d/%ld", w, n);
        snprintf(val, sizeof val, "campaign value of writer %d, key %ld", w, n);
        aos_call_opts o = {.agent_id = AGENT, .timeout_ms = DEADLINE_MS};
        uint64_t t0 = aos_mono_ms();
        aos_err e = aos_kv_put(c, &o, key, val, strlen(val), NULL, NULL, why, sizeof why);
        uint64_t took = aos_mono_ms() - t0;
        note_latency(took);
        if (e == AOS_OK) {
            put_ok[w][n] = 1;
            atomic_fetch_add(&n_ok, 1);
        } else {
            failure("kv.put", w, n, e, why, took);
        }
        atomic_store(&acked[w], n + 1);

        uint8_t rid[AOS_ID_LEN];
        aos_id_random(rid);
        aos_call_opts io = {.agent_id = AGENT, .request_id = rid, .timeout_ms = DEADLINE_MS};
        int64_t v1 = 0, v2 = 0;
        t0 = aos_mono_ms();
        e = aos_kv_incr(c, &io, "counter", 1, &v1, why, sizeof why);
        took = aos_mono_ms() - t0;
        note_latency(took);
        if (e != AOS_OK) {
            failure("kv.incr", w, n, e, why, took);
            continue;
        }
        atomic_fetch_add(&n_ok, 1);
        atomic_fetch_add(&n_incr_ok, 1);
        t0 = aos_mono_ms();
        /* the retry, on purpose: the same request id */
        e = aos_kv_incr(c, &io, "counter", 1, &v2, why, sizeof why);
        took = aos_mono_ms() - t0;
        note_latency(took);
        if (e != AOS_OK) {
            failure("kv.incr retried", w, n, e, why, took);
            continue;
        }
        atomic_fetch_add(&n_ok, 1);
        if (v2 != v1) {
            atomic_fetch_add(&n_replays_wrong, 1);
            failure("kv.incr retried", w, n, AOS_ERR_CONFLICT, "answered with another value: "
                    "applied twice", took);
        }
    }
    aos_close(c);
    return NULL;
}

/* ---- the killer ---------------------------------------------------------------------- */

typedef struct pending {
    int active;
    pid_t old_pid;
    uint64_t killed_at;
    struct timespec wall;       /* to find the kill in aosd's log (UTC times) */
} pending;

/* One kill's recovery, for the slowest ones' report. */
typedef struct recovery {
    uint64_t ms;
    int victim;
    struct timespec wall;
} recovery;

static int cmp_rec_desc(const void *a, const void *b)
{
    uint64_t x = ((const recovery *)a)->ms, y = ((const recovery *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Copy a file of the data dir to dir (AOS_CAMPAIGN_KEEP_LOGS): the logs outlive h_stop. */
static void keep_file(const char *dir, const char *name)
{
    char src[512], dst[512], buf[65536];
    snprintf(src, sizeof src, "%s/%s", h_data_dir(H), name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    FILE *in = fopen(src, "r"), *out = in ? fopen(dst, "w") : NULL;
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

static void keep_logs(void)
{
    const char *dir = getenv("AOS_CAMPAIGN_KEEP_LOGS");
    if (!dir || !*dir)
        return;
    keep_file(dir, "aosd.log");
    keep_file(dir, "pg.log");
    fprintf(stderr, "campaign: aosd.log and pg.log copied to %s\n", dir);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64*: reproducible from the seed printed at the start */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static const Aos__ChildStatus *child_of(const Aos__StatusReply *s, const char *name)
{
    for (size_t i = 0; i < s->n_children; i++)
        if (!strcmp(s->children[i]->name, name))
            return s->children[i];
    return NULL;
}

/* A server answers when a ping through aosd comes back; postgres when aosd has seen it
 * accept connections (its probe) and a read through aos-storage is answered. */
static int answering(const char *name)
{
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 2000};
    aos_err e;
    if (!strcmp(name, AOS_CHILD_PG)) {
        uint8_t *v = NULL;
        size_t len;
        char why[AOS_ERRMSG_MAX + 1];
        o.agent_id = AGENT;
        e = aos_kv_get(h_conn(H), &o, "counter", &v, &len, NULL, why, sizeof why);
        free(v);
        return e == AOS_OK || e == AOS_ERR_NOT_FOUND;
    }
    char method[64];
    snprintf(method, sizeof method, "%s.ping", name);
    Aos__PingRequest rq = AOS__PING_REQUEST__INIT;
    uint8_t data[8] = "campaign", buf[32];
    rq.data.data = data;
    rq.data.len = sizeof data;
    size_t len = aos__ping_request__pack(&rq, buf);
    e = aos_call(h_conn(H), &o, method, buf, len, &r);
    aos_reply_clear(&r);
    return e == AOS_OK;
}

/* The states of all children in one line, for a failure message. */
static void describe(const Aos__StatusReply *s, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < s->n_children && used < cap; i++) {
        const Aos__ChildStatus *c = s->children[i];
        int n = snprintf(out + used, cap - used, "%s%s %s (pid %d, restarts %u, last exit "
                         "\"%s\", reason \"%s\")", i ? "; " : "", c->name, c->state,
                         (int)c->pid, c->restarts, c->last_exit, c->reason);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static void fail_campaign(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_campaign(const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_store(&stop, 1);
    h_dump_log(H);
    keep_logs();
    fail_msg("%s", msg);
}

/* What writer *(int *)arg wrote under key k. */
static void campaign_want(char *out, size_t cap, long k, void *arg)
{
    snprintf(out, cap, "campaign value of writer %d, key %ld", *(int *)arg, k);
}

static void test_kill_campaign_at_default_intensity(void **st)
{
    (void)st;
    rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (!rng_state)
        rng_state = 1;
    fprintf(stderr, "campaign_seed: %llu\n", (unsigned long long)rng_state);
    H = h_start(NULL); /* aosd's defaults: restart intensity 5/30 s */

    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, writer, (void *)(intptr_t)i), 0);
    /* the writers are under way before the first kill */
    uint64_t end = aos_mono_ms() + 60000;
    while (atomic_load(&n_ok) < 500 && aos_mono_ms() < end && !atomic_load(&n_failed))
        nap_ms(10);
    if (atomic_load(&n_ok) < 500)
        fail_campaign("the writers made no progress before the campaign: %ld answered, %ld "
                      "failed: %s", atomic_load(&n_ok), atomic_load(&n_failed), first_failure);

    pending pend[NVICTIMS];
    memset(pend, 0, sizeof pend);
    uint64_t rec[KILLS], rec_max_of[NVICTIMS] = {0};
    recovery recs[KILLS];
    unsigned kills_of[NVICTIMS] = {0};
    int nrec = 0, kills = 0, last = -1;
    uint64_t start = aos_mono_ms(), next_kill = start;
    char why[AOS_ERRMSG_MAX + 256], state[4096];
    while (kills < KILLS || nrec < kills) {
        uint64_t now = aos_mono_ms();
        if (now - start > CAMPAIGN_MAX_MS)
            fail_campaign("the campaign took over %u ms: %d kills, %d recovered",
                          CAMPAIGN_MAX_MS, kills, nrec);
        Aos__StatusReply *s = h_status(H, why, sizeof why);
        if (!s)
            fail_campaign("kernel.status did not answer during the campaign: %s", why);
        for (size_t i = 0; i < s->n_children; i++)
            if (!strcmp(s->children[i]->state, "failed")) {
                char name[64];
                snprintf(name, sizeof name, "%s", s->children[i]->name);
                describe(s, state, sizeof state);
                aos__status_reply__free_unpacked(s, NULL);
                fail_campaign("after %d kills %s is failed: %s", kills, name, state);
            }
        /* who is back: running with a new pid, and answering */
        for (size_t v = 0; v < NVICTIMS; v++) {
            if (!pend[v].active)
                continue;
            const Aos__ChildStatus *c = child_of(s, victims[v]);
            if (c && !strcmp(c->state, "running") && c->pid > 0 && c->pid != pend[v].old_pid &&
                answering(victims[v])) {
                uint64_t took = aos_mono_ms() - pend[v].killed_at;
                recs[nrec] = (recovery){.ms = took, .victim = (int)v, .wall = pend[v].wall};
                rec[nrec++] = took;
                if (took > rec_max_of[v])
                    rec_max_of[v] = took;
                pend[v].active = 0;
            } else if (now - pend[v].killed_at > RECOVER_MAX_MS) {
                describe(s, state, sizeof state);
                aos__status_reply__free_unpacked(s, NULL);
                fail_campaign("%s not answering %u ms after kill -9: %s", victims[v],
                              RECOVER_MAX_MS, state);
            }
        }
        /* the next kill: a running child, not the last victim, not one still recovering */
        if (kills < KILLS && aos_mono_ms() >= next_kill) {
            int cand[NVICTIMS], nc = 0;
            for (size_t v = 0; v < NVICTIMS; v++) {
                const Aos__ChildStatus *c = child_of(s, victims[v]);
                if (!pend[v].active && (int)v != last && c && c->pid > 0 &&
                    !strcmp(c->state, "running"))
                    cand[nc++] = (int)v;
            }
            if (nc) {
                int v = cand[rnd() % (uint64_t)nc];
                pid_t pid = child_of(s, victims[v])->pid;
                if (kill(pid, SIGKILL) == 0) {
                    pend[v] = (pending){.active = 1, .old_pid = pid,
                                        .killed_at = aos_mono_ms()};
                    clock_gettime(CLOCK_REALTIME, &pend[v].wall);
                    kills_of[v]++;
                    kills++;
                    last = v;
                    next_kill = aos_mono_ms() + GAP_MIN_MS +
                                rnd() % (uint64_t)(GAP_MAX_MS - GAP_MIN_MS + 1);
                }
            }
        }
        aos__status_reply__free_unpacked(s, NULL);
        nap_ms(10);
    }
    uint64_t campaign_ms = aos_mono_ms() - start;

    /* let the writers go on a little against the recovered system, then stop them */
    long ok_before = atomic_load(&n_ok);
    end = aos_mono_ms() + 30000;
    while (atomic_load(&n_ok) < ok_before + 200 && aos_mono_ms() < end)
        nap_ms(10);
    atomic_store(&stop, 1);
    for (int i = 0; i < WRITERS; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += JOIN_MAX_MS / 1000;
        if (pthread_timedjoin_np(th[i], NULL, &ts) != 0)
            fail_campaign("writer %d still busy %u ms after the stop: a call outlived its "
                          "deadline", i, JOIN_MAX_MS);
    }

    /* nothing failed, and everything is running again */
    Aos__StatusReply *s = h_status(H, why, sizeof why);
    if (!s)
        fail_campaign("kernel.status: %s", why);
    describe(s, state, sizeof state);
    unsigned restarts = 0;
    int failed = 0;
    for (size_t i = 0; i < s->n_children; i++) {
        restarts += s->children[i]->restarts;
        failed |= !strcmp(s->children[i]->state, "failed");
    }
    aos__status_reply__free_unpacked(s, NULL);
    if (failed)
        fail_campaign("a child ended failed: %s", state);
    for (size_t v = 0; v < NVICTIMS; v++)
        if (h_wait_running(H, victims[v], 0, 30000) <= 0)
            fail_campaign("%s is not running after the campaign: %s", victims[v], state);

    /* every acknowledged put reads back, once (version 1), with its value */
    PGconn *pg = su_admin_connect(H);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    long checked = 0, lost = 0;
    for (int w = 0; w < WRITERS; w++) {
        char prefix[16], bad[256];
        snprintf(prefix, sizeof prefix, "c%d/", w);
        if (su_check_puts(pg, AGENT, prefix, atomic_load(&acked[w]), put_ok[w], campaign_want, &w,
                          &checked, &lost, bad, sizeof bad))
            fail_campaign("%s", bad);
    }
    long counter = su_counter(pg, AGENT);
    PQfinish(pg);
    /* and through aos-storage too: the last acknowledged key of each writer */
    for (int w = 0; w < WRITERS; w++) {
        long n = atomic_load(&acked[w]);
        while (n > 0 && !put_ok[w][n - 1])
            n--;
        if (!n)
            continue;
        char key[64];
        uint8_t *v = NULL;
        size_t len = 0;
        snprintf(key, sizeof key, "c%d/%ld", w, n - 1);
        aos_call_opts o = {.agent_id = AGENT, .timeout_ms = DEADLINE_MS};
        aos_err e = aos_kv_get(h_conn(H), &o, key, &v, &len, NULL, why, sizeof why);
        free(v);
        if (e != AOS_OK)
            fail_campaign("kv.get %s after the campaign: %s: %s", key, aos_err_name(e), why);
    }

    /* the figures, one `name: value` a line */
    qsort(rec, (size_t)nrec, sizeof rec[0], cmp_u64);
    fprintf(stderr, "campaign_kills: %d\n", kills);
    for (size_t v = 0; v < NVICTIMS; v++)
        fprintf(stderr, "campaign_kills_%s: %u\ncampaign_recovery_max_ms_%s: %llu\n",
                victims[v], kills_of[v], victims[v], (unsigned long long)rec_max_of[v]);
    fprintf(stderr, "campaign_ms: %llu\n", (unsigned long long)campaign_ms);
    fprintf(stderr, "campaign_recovery_p50_ms: %llu\n", (unsigned long long)rec[nrec / 2]);
    fprintf(stderr, "campaign_recovery_p90_ms: %llu\n",
            (unsigned long long)rec[(nrec * 9) / 10]);
    fprintf(stderr, "campaign_recovery_max_ms: %llu\n", (unsigned long long)rec[nrec - 1]);
    fprintf(stderr, "campaign_restarts: %u\n", restarts);
    fprintf(stderr, "campaign_requests_ok: %ld\n", atomic_load(&n_ok));
    fprintf(stderr, "campaign_requests_failed: %ld\n", atomic_load(&n_failed));
    fprintf(stderr, "campaign_requests_failed_with_time_left: %ld\n",
            atomic_load(&n_failed_early));
    fprintf(stderr, "campaign_request_latency_max_ms: %ld\n",
            atomic_load(&latency_max_ms));
    fprintf(stderr, "campaign_puts_checked: %ld\ncampaign_puts_lost: %ld\n", checked, lost);
    fprintf(stderr, "campaign_counter: %ld\ncampaign_increments_acknowledged: %ld\n", counter,
            atomic_load(&n_incr_ok));
    fprintf(stderr, "campaign_children: %s\n", state);
    qsort(recs, (size_t)nrec, sizeof recs[0], cmp_rec_desc);
    for (int i = 0; i < 5 && i < nrec; i++) {
        struct tm tm;
        gmtime_r(&recs[i].wall.tv_sec, &tm);
        fprintf(stderr, "campaign_slow_%d: %s %llu ms (killed %02d:%02d:%02d.%03ld UTC)\n",
                i + 1, victims[recs[i].victim], (unsigned long long)recs[i].ms, tm.tm_hour,
                tm.tm_min, tm.tm_sec, recs[i].wall.tv_nsec / 1000000L);
    }
    keep_logs();
    for (int i = 0; i < nfailures; i++)
        fprintf(stderr, "campaign_failure_%d: %s\n", i + 1, failures[i]);

    /* stopped first, so a failed check leaves no system (nor its data dir) behind */
    h_stop(H);
    assert_int_equal(lost, 0);
    assert_int_equal(atomic_load(&n_failed_early), 0);
    assert_int_equal(atomic_load(&n_failed), 0);
    assert_int_equal(atomic_load(&n_replays_wrong), 0);
    assert_int_equal(counter, atomic_load(&n_incr_ok));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_campaign_at_default_intensity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
