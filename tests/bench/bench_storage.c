/* bench_storage: key/value put and get throughput through aosd and aos-storage, beside the
 * same upsert and SELECT done by libpq directly on the same PostgreSQL, at 1 and 64 clients.
 *
 *   bench_storage [SECONDS]     (default 5 per phase; AOS_BIN_DIR=build/bin)
 *
 * Prints `name: value` lines, ending with put_ratio and get_ratio: aosd's throughput as a
 * percentage of direct libpq's at 64 clients. Values are 100 bytes; each client cycles
 * over 1000 keys of its own, so puts are mostly updates, like an agent's state. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

#include "aos.pb-c.h"
#include "aos/storage.h"
#include "harness.h"

#define CLIENTS_MAX 64
#define KEYS 1000
#define VALUE_LEN 100

static h_aosd *H;
static char DSN[512];
static double SECONDS = 5;

enum { PUT, GET, PING };

typedef struct job {
    int id, op, direct;
    pthread_barrier_t *go;
    long ops, errors;
    char err[256];
} job;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run_direct(job *j)
{
    PGconn *pg = PQconnectdb(DSN);
    char agent[32], key[32], value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    snprintf(agent, sizeof agent, "bench%d", j->id);
    PGresult *r = PQprepare(pg, "put",
        "INSERT INTO bench.kv AS k (agent, key, value, version) VALUES ($1, $2, $3, 1) "
        "ON CONFLICT (agent, key) DO UPDATE SET value = EXCLUDED.value, "
        "version = k.version + 1, updated_at = now()", 3, NULL);
    PQclear(r);
    r = PQprepare(pg, "get", "SELECT value, version FROM bench.kv WHERE agent = $1 AND key = $2",
                  2, NULL);
    PQclear(r);
    pthread_barrier_wait(j->go);
    double end = now_s() + SECONDS;
    for (long i = 0; now_s() < end; i++) {
        snprintf(key, sizeof key, "key-%ld", i % KEYS);
        const char *v[3] = {agent, key, value};
        int len[3] = {0, (int)strlen(key), VALUE_LEN}, fmt[3] = {0, 1, 1};
        r = j->op == PUT ? PQexecPrepared(pg, "put", 3, v, len, fmt, 1)
                         : PQexecPrepared(pg, "get", 2, v, len, fmt, 1);
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_COMMAND_OK || (s == PGRES_TUPLES_OK && PQntuples(r) == 1))
            j->ops++;
        else if (j->errors++ == 0)
            snprintf(j->err, sizeof j->err, "%.200s", PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(pg);
    return NULL;
}

static void *run_aosd(job *j)
{
    char url[AOS_PATH_MAX + 16], agent[32], key[32], value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    snprintf(agent, sizeof agent, "bench%d", j->id);
    aos_control_url(h_data_dir(H), url, sizeof url);
    aos_conn *c;
    if (aos_connect(url, &c, j->err, sizeof j->err) != AOS_OK) {
        j->errors++;
        pthread_barrier_wait(j->go);
        return NULL;
    }
    aos_call_opts o = {.agent_id = agent};
    pthread_barrier_wait(j->go);
    double end = now_s() + SECONDS;
    char why[AOS_ERRMSG_MAX + 1];
    for (long i = 0; now_s() < end; i++) {
        snprintf(key, sizeof key, "key-%ld", i % KEYS);
        aos_err e;
        if (j->op == PING) {
            /* the transport alone: client -> aosd -> aos-storage and back, no database */
            aos_reply rep;
            static const uint8_t ping[] = {0x0a, 0x04, 'p', 'i', 'n', 'g'};
            e = aos_call(c, &o, "storage.ping", ping, sizeof ping, &rep);
            snprintf(why, sizeof why, "%s", rep.error);
            aos_reply_clear(&rep);
        } else if (j->op == PUT) {
            e = aos_kv_put(c, &o, key, value, VALUE_LEN, NULL, NULL, why, sizeof why);
        } else {
            uint8_t *v;
            size_t len;
            e = aos_kv_get(c, &o, key, &v, &len, NULL, why, sizeof why);
            if (!e)
                free(v);
        }
        if (!e)
            j->ops++;
        else if (j->errors++ == 0)
            snprintf(j->err, sizeof j->err, "%.200s", why);
    }
    aos_close(c);
    return NULL;
}

static void *run(void *arg)
{
    job *j = arg;
    return j->direct ? run_direct(j) : run_aosd(j);
}

/* ops per second of n clients doing op, directly or through aosd. AOS_BENCH_ONLY (a
 * comma-separated list of phase names, e.g. get_aosd_64) runs just those, for profiling. */
static double phase(int n, int op, int direct)
{
    char name[64];
    snprintf(name, sizeof name, "%s_%s_%d", op == PUT ? "put" : op == GET ? "get" : "ping",
             direct ? "direct" : "aosd", n);
    const char *only = getenv("AOS_BENCH_ONLY");
    if (only && !strstr(only, name))
        return 0;
    job jobs[CLIENTS_MAX];
    pthread_t th[CLIENTS_MAX];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        jobs[i] = (job){.id = i, .op = op, .direct = direct, .go = &go};
        pthread_create(&th[i], NULL, run, &jobs[i]);
    }
    pthread_barrier_wait(&go);
    double t0 = now_s();
    long ops = 0, errors = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        ops += jobs[i].ops;
        if (jobs[i].errors && !errors)
            fprintf(stderr, "bench_storage: %s: %s\n", direct ? "direct" : "aosd", jobs[i].err);
        errors += jobs[i].errors;
    }
    double dt = now_s() - t0;
    pthread_barrier_destroy(&go);
    printf("%s: %.0f\n", name, (double)ops / dt);
    if (errors)
        printf("%s_errors: %ld\n", name, errors);
    fflush(stdout);
    return (double)ops / dt;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        SECONDS = atof(argv[1]);
    if (SECONDS <= 0 || SECONDS > 600) {
        fprintf(stderr, "usage: bench_storage [SECONDS per phase, default 5]\n");
        return 2;
    }
    H = h_start(NULL);
    snprintf(DSN, sizeof DSN, "host=%s/pgsock port=5432 dbname=aos user=aos_admin", h_data_dir(H));
    PGconn *pg = PQconnectdb(DSN);
    PGresult *r = PQexec(pg,
        "CREATE SCHEMA IF NOT EXISTS bench; "
        "CREATE TABLE IF NOT EXISTS bench.kv (agent text NOT NULL, key bytea NOT NULL, "
        "value bytea NOT NULL, version bigint NOT NULL, expires_at timestamptz, "
        "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (agent, key))");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_storage: %s", PQresultErrorMessage(r));
        return 1;
    }
    PQclear(r);
    /* Every key every client reads exists on both sides before anything is timed. The
     * storage rows are written as aos-storage writes them (version 1, no expiry). */
    r = PQexec(pg,
        "INSERT INTO bench.kv (agent, key, value, version) "
        "SELECT 'bench' || c, convert_to('key-' || k, 'UTF8'), repeat('v', 100)::bytea, 1 "
        "FROM generate_series(0, 63) c, generate_series(0, 999) k ON CONFLICT DO NOTHING; "
        "INSERT INTO storage.kv (agent, key, value, version) "
        "SELECT 'bench' || c, convert_to('key-' || k, 'UTF8'), repeat('v', 100)::bytea, 1 "
        "FROM generate_series(0, 63) c, generate_series(0, 999) k ON CONFLICT DO NOTHING");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "bench_storage: %s", PQresultErrorMessage(r));
        return 1;
    }
    PQclear(r);
    /* vacuumed and checkpointed now, so that autovacuum does not run during a phase */
    const char *tidy[] = {"VACUUM ANALYZE bench.kv", "VACUUM ANALYZE storage.kv", "CHECKPOINT"};
    for (size_t i = 0; i < 3; i++)
        PQclear(PQexec(pg, tidy[i]));
    PQfinish(pg);
    printf("seconds_per_phase: %.1f\nvalue_bytes: %d\n", SECONDS, VALUE_LEN);

    double put_d = 0, put_a = 0, get_d = 0, get_a = 0;
    const int clients[] = {1, 64};
    for (size_t i = 0; i < 2; i++) {
        int n = clients[i];
        put_d = phase(n, PUT, 1);
        put_a = phase(n, PUT, 0);
        get_d = phase(n, GET, 1);
        get_a = phase(n, GET, 0);
        phase(n, PING, 0);
    }
    /* how many puts a group commit carried on average, and gets a grouped statement */
    aos_reply rep;
    if (aos_call(h_conn(H), NULL, "storage.stats", NULL, 0, &rep) == AOS_OK) {
        Aos__StatsReply *sr = aos__stats_reply__unpack(NULL, rep.payload_len, rep.payload);
        double b = 0, n = 0, g = 0, gn = 0;
        for (size_t i = 0; sr && i < sr->n_stats; i++) {
            const char *s = sr->stats[i]->name;
            double v = (double)sr->stats[i]->value;
            b = !strcmp(s, "batches") ? v : b;
            n = !strcmp(s, "batched") ? v : n;
            g = !strcmp(s, "get_groups") ? v : g;
            gn = !strcmp(s, "get_grouped") ? v : gn;
        }
        if (sr)
            aos__stats_reply__free_unpacked(sr, NULL);
        if (b > 0)
            printf("put_batch_avg: %.1f\n", n / b);
        if (g > 0)
            printf("get_group_avg: %.1f\n", gn / g);
    }
    aos_reply_clear(&rep);
    printf("put_ratio: %.0f\n", put_d > 0 ? 100.0 * put_a / put_d : 0.0);
    printf("get_ratio: %.0f\n", get_d > 0 ? 100.0 * get_a / get_d : 0.0);
    h_stop(H);
    return 0;
}
