/* bench_audit (B5): durable audit events per second through aosd and aos-audit with group
 * commit, beside one commit per row by libpq; verify speed; what the audit adds to a write.
 *
 *   bench_audit [SECONDS] [PRODUCERS]   (default 5 s per phase, 64; AOS_BIN_DIR=build/bin)
 *
 * Prints `name: value` lines: durable_events_per_s (PRODUCERS producers, EVENTS_PER_MSG
 * events per audit.emit), durable_events_per_s_1 (one producer), one_commit_per_row_per_s
 * (the same rows by libpq, one INSERT and COMMIT each, PRODUCERS connections),
 * durable_events_per_s_contents (as the first, each event listing its own 1 KiB content,
 * sent in the same emit and written in the same commit) with contents_throughput_ratio
 * (that over the first), verify_records_per_s (the whole log, contents re-hashed too),
 * audit_added_us_p50/_p99 (a storage write with its audit record awaited, fail-closed,
 * minus the same write on a second aosd with audit_fail_open: both fresh, measured first,
 * in alternating blocks), and
 * fsync_us_p50 (this machine's fdatasync of 4 KiB in the data dir). */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "audit.pb-c.h"
#include "aos/storage.h"
#include "harness.h"

#define PRODUCERS_MAX 256
#define EVENTS_PER_MSG 16
#define LAT_N 2000

static double SECONDS = 5;
static h_aosd *H;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct prod {
    int id;
    pthread_barrier_t *go;
    long events, errors;
    char err[256];
    const char *dsn;           /* the baseline: libpq straight to the table */
    int contents;              /* each event lists one content of CONTENT_BYTES, its own */
} prod;

#define CONTENT_BYTES 1024     /* a message's text, say: stored once, by hash */

static void *emit_main(void *arg)
{
    prod *p = arg;
    char url[AOS_PATH_MAX + 16];
    aos_control_url(h_data_dir(H), url, sizeof url);
    aos_conn *c;
    if (aos_connect(url, &c, p->err, sizeof p->err) != AOS_OK) {
        p->errors++;
        pthread_barrier_wait(p->go);
        return NULL;
    }
    Aos__Audit__Event ev[EVENTS_PER_MSG], *evp[EVENTS_PER_MSG];
    char keys[EVENTS_PER_MSG][48], agent[32];
    snprintf(agent, sizeof agent, "bench%d", p->id);
    static const char body[] = "{\"args_blake2b\":\"00112233445566778899aabbccddeeff00112233"
                               "445566778899aabbccddeeff\",\"args_len\":100}";
    /* with contents: each event's own content (distinct text, so every one is inserted)
     * and a body that lists it */
    static _Thread_local uint8_t ctext[EVENTS_PER_MSG][CONTENT_BYTES];
    static _Thread_local uint8_t chash[EVENTS_PER_MSG][32];
    static _Thread_local char cbody[EVENTS_PER_MSG][160];
    Aos__Audit__Content ct[EVENTS_PER_MSG], *ctp[EVENTS_PER_MSG];
    pthread_barrier_wait(p->go);
    double end = now_s() + SECONDS;
    uint8_t *buf = malloc(64 << 10);
    for (long n = 0; buf && now_s() < end; n++) {
        for (int i = 0; i < EVENTS_PER_MSG; i++) {
            aos__audit__event__init(&ev[i]);
            /* keys of their own per phase: a key seen before is not appended again */
            snprintf(keys[i], sizeof keys[i], "%s%d-%ld-%d-%d", p->contents ? "c" : "b", p->id,
                     n, i, (int)getpid());
            ev[i].kind = (ProtobufCBinaryData){7, (uint8_t *)"syscall"};
            ev[i].agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
            ev[i].method = (ProtobufCBinaryData){14, (uint8_t *)"storage.kv.put"};
            ev[i].body = (ProtobufCBinaryData){sizeof body - 1, (uint8_t *)body};
            if (p->contents) {
                memset(ctext[i], 'a' + i % 26, CONTENT_BYTES);
                int w = snprintf((char *)ctext[i], CONTENT_BYTES, "%s ", keys[i]);
                ctext[i][w] = ' ';
                crypto_generichash(chash[i], 32, ctext[i], CONTENT_BYTES, NULL, 0);
                char hex[65];
                aos_hex(chash[i], 32, hex);
                snprintf(cbody[i], sizeof cbody[i], "{\"args_len\":100,\"contents\":[\"%s\"]}",
                         hex);
                ev[i].body = (ProtobufCBinaryData){strlen(cbody[i]), (uint8_t *)cbody[i]};
                aos__audit__content__init(&ct[i]);
                ct[i].hash = (ProtobufCBinaryData){32, chash[i]};
                ct[i].body = (ProtobufCBinaryData){CONTENT_BYTES, ctext[i]};
                ctp[i] = &ct[i];
            }
            ev[i].key = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
            ev[i].latency_us = 120;
            evp[i] = &ev[i];
        }
        Aos__Audit__EmitRequest rq = AOS__AUDIT__EMIT_REQUEST__INIT;
        rq.n_events = EVENTS_PER_MSG;
        rq.events = evp;
        if (p->contents) {
            rq.n_contents = EVENTS_PER_MSG;
            rq.contents = ctp;
        }
        size_t len = aos__audit__emit_request__pack(&rq, buf);
        aos_reply r;
        aos_err rc = aos_call(c, NULL, "audit.emit", buf, len, &r);
        if (rc == AOS_OK)
            p->events += EVENTS_PER_MSG;
        else if (p->errors++ == 0)
            snprintf(p->err, sizeof p->err, "%s: %.200s", aos_err_name(rc), r.error);
        aos_reply_clear(&r);
    }
    free(buf);
    aos_close(c);
    return NULL;
}

static void *direct_main(void *arg)
{
    prod *p = arg;
    PGconn *pg = PQconnectdb(p->dsn);
    PGresult *r = PQprepare(pg, "ins", "INSERT INTO bench.audit_rows (kind, agent, method, "
                            "latency_us, body, key) VALUES ('syscall', $1, 'storage.kv.put', "
                            "120, $2, $3)", 3, NULL);
    PQclear(r);
    char agent[32], key[48];
    snprintf(agent, sizeof agent, "bench%d", p->id);
    static const char body[] = "{\"args_len\":100}";
    pthread_barrier_wait(p->go);
    double end = now_s() + SECONDS;
    for (long n = 0; now_s() < end; n++) {
        snprintf(key, sizeof key, "d%d-%ld", p->id, n);
        const char *v[3] = {agent, body, key};
        r = PQexecPrepared(pg, "ins", 3, v, NULL, NULL, 0); /* autocommit: one COMMIT */
        if (PQresultStatus(r) == PGRES_COMMAND_OK)
            p->events++;
        else if (p->errors++ == 0)
            snprintf(p->err, sizeof p->err, "%.200s", PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(pg);
    return NULL;
}

static double phase_c(const char *name, int n, void *(*fn)(void *), const char *dsn,
                      int contents)
{
    prod ps[PRODUCERS_MAX];
    pthread_t th[PRODUCERS_MAX];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        ps[i] = (prod){.id = i, .go = &go, .dsn = dsn, .contents = contents};
        pthread_create(&th[i], NULL, fn, &ps[i]);
    }
    pthread_barrier_wait(&go);
    double t0 = now_s();
    long ev = 0, errors = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        ev += ps[i].events;
        if (ps[i].errors && !errors)
            fprintf(stderr, "bench_audit: %s: %s\n", name, ps[i].err);
        errors += ps[i].errors;
    }
    double dt = now_s() - t0;
    pthread_barrier_destroy(&go);
    printf("%s: %.0f\n", name, (double)ev / dt);
    if (errors)
        printf("%s_errors: %ld\n", name, errors);
    fflush(stdout);
    return (double)ev / dt;
}

static double phase(const char *name, int n, void *(*fn)(void *), const char *dsn)
{
    return phase_c(name, n, fn, dsn, 0);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t us_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* n sequential puts by one client, their latencies into lat[0..n). */
static int put_latencies(h_aosd *h, uint64_t *lat, int n)
{
    aos_call_opts o = {.agent_id = "bench-lat"};
    char key[32], why[AOS_ERRMSG_MAX + 1];
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k%d", i % 100);
        uint64_t t0 = us_now();
        aos_err rc = aos_kv_put(h_conn(h), &o, key, "value", 5, NULL, NULL, why, sizeof why);
        lat[i] = us_now() - t0;
        if (rc != AOS_OK) {
            fprintf(stderr, "bench_audit: put: %s\n", why);
            return -1;
        }
    }
    return 0;
}

/* What the awaited record adds to one write: H (fail-closed) against a second aosd with
 * audit_fail_open, both fresh and measured in alternating blocks of LAT_BLOCK puts, so
 * that neither meets a database the other did not (the load phases' tables, their
 * checkpoint) and a drift of the machine falls on both alike. */
#define LAT_BLOCK 100
static void write_latency(void)
{
    static uint64_t closed[LAT_N], open_[LAT_N];
    char dir[] = "/tmp/aos-bench-audit-XXXXXX";
    if (!mkdtemp(dir))
        return;
    char path[256], why[512];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("audit_fail_open: true\n", f);
        fclose(f);
    }
    h_aosd *h2 = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!h2) {
        fprintf(stderr, "bench_audit: second aosd: %s\n", why);
        h_remove_dir(dir);
        return;
    }
    int ok = 1;
    for (int i = 0; ok && i < LAT_N; i += LAT_BLOCK)
        ok = put_latencies(H, closed + i, LAT_BLOCK) == 0 &&
             put_latencies(h2, open_ + i, LAT_BLOCK) == 0;
    h_stop(h2);
    h_remove_dir(dir);
    if (!ok)
        return;
    qsort(closed, LAT_N, sizeof closed[0], cmp_u64);
    qsort(open_, LAT_N, sizeof open_[0], cmp_u64);
    long d50 = (long)closed[LAT_N / 2] - (long)open_[LAT_N / 2];
    long d99 = (long)closed[LAT_N * 99 / 100] - (long)open_[LAT_N * 99 / 100];
    printf("write_us_p50_fail_closed: %llu\nwrite_us_p50_fail_open: %llu\n",
           (unsigned long long)closed[LAT_N / 2], (unsigned long long)open_[LAT_N / 2]);
    printf("audit_added_us_p50: %ld\naudit_added_us_p99: %ld\n", d50, d99);
    uint64_t f50 = 0, f99 = 0, fmax = 0;
    h_fsync_lat(h_data_dir(H), 200, 0, &f50, &f99, &fmax);
    printf("fsync_us_p50: %llu\nfsync_us_p99: %llu\nfsync_us_max: %llu\n",
           (unsigned long long)f50, (unsigned long long)f99, (unsigned long long)fmax);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int producers = 64;
    if (argc > 1)
        SECONDS = atof(argv[1]);
    if (argc > 2)
        producers = atoi(argv[2]);
    if (SECONDS <= 0 || SECONDS > 600 || producers < 1 || producers > PRODUCERS_MAX) {
        fprintf(stderr, "usage: bench_audit [SECONDS per phase, default 5] [PRODUCERS 1..%d, "
                "default 64]\n", PRODUCERS_MAX);
        return 2;
    }
    H = h_start(NULL);
    char dsn[512];
    snprintf(dsn, sizeof dsn, "host=%s/pgsock port=5432 dbname=aos user=aos_admin",
             h_data_dir(H));
    PGconn *pg = PQconnectdb(dsn);
    PGresult *r = PQexec(pg, "CREATE SCHEMA IF NOT EXISTS bench; CREATE TABLE IF NOT EXISTS "
                         "bench.audit_rows (seq bigserial PRIMARY KEY, at timestamptz NOT "
                         "NULL DEFAULT now(), kind text, agent text, method text, latency_us "
                         "bigint, body bytea, key text UNIQUE)");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_audit: %s", PQresultErrorMessage(r));
        return 1;
    }
    PQclear(r);
    printf("seconds_per_phase: %.1f\nproducers: %d\nevents_per_message: %d\n", SECONDS,
           producers, EVENTS_PER_MSG);
    write_latency(); /* first, while both databases are as new */
    double many = phase("durable_events_per_s", producers, emit_main, NULL);
    phase("durable_events_per_s_1", 1, emit_main, NULL);
    double base = phase("one_commit_per_row_per_s", producers, direct_main, dsn);
    if (base > 0)
        printf("group_commit_ratio: %.1f\n", many / base);
    /* the same emits, each event with its own 1 KiB content in the same commit */
    double withc = phase_c("durable_events_per_s_contents", producers, emit_main, NULL, 1);
    if (many > 0)
        printf("contents_throughput_ratio: %.2f\n", withc / many);

    /* verify: the whole log as it now stands, its contents re-hashed too */
    r = PQexec(pg, "SELECT count(*), coalesce(sum(size), 0) FROM audit.contents");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        printf("verify_contents: %s\nverify_contents_bytes: %s\n", PQgetvalue(r, 0, 0),
               PQgetvalue(r, 0, 1));
    PQclear(r);
    PQfinish(pg);
    aos_reply rep;
    aos_call_opts vo = {.timeout_ms = 600000};
    double t0 = now_s();
    aos_err rc = aos_call(h_conn(H), &vo, "audit.verify", NULL, 0, &rep);
    double dt = now_s() - t0;
    if (rc == AOS_OK) {
        Aos__Audit__Finding *f = aos__audit__finding__unpack(NULL, rep.payload_len,
                                                            rep.payload);
        if (f) {
            printf("verify_records: %llu\nverify_finding: %s\n",
                   (unsigned long long)f->records, f->kind);
            printf("verify_records_per_s: %.0f\n", (double)f->records / dt);
            aos__audit__finding__free_unpacked(f, NULL);
        }
    } else {
        fprintf(stderr, "bench_audit: audit.verify: %s: %s\n", aos_err_name(rc), rep.error);
    }
    aos_reply_clear(&rep);
    /* aos-audit's own split of that time (its log line) */
    char line[1024], last[1024] = "", walked[1024] = "";
    /* aosd copies a server's log lines into its own a moment later: wait (2 s at most) */
    for (int i = 0; i < 20 && !(last[0] && walked[0]); i++) {
        if (i)
            usleep(100 * 1000);
        FILE *lf = fopen(h_log_path(H), "r");
        while (lf && fgets(line, sizeof line, lf)) {
            if (strstr(line, "contents re-hashed in"))
                snprintf(last, sizeof last, "%s", strstr(line, "audit.verify: "));
            if (strstr(line, "records walked in"))
                snprintf(walked, sizeof walked, "%s", strstr(line, "audit.verify: "));
        }
        if (lf)
            fclose(lf);
    }
    if (last[0])
        printf("verify_contents_split: %s", last + strlen("audit.verify: "));
    if (walked[0])
        printf("verify_walk_split: %s", walked + strlen("audit.verify: "));

    h_stop(H);
    return 0;
}
