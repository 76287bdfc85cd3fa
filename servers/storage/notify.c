/* The LISTEN side of queues: a thread with its own connection receives NOTIFY
 * "agent<TAB>queue" and fires the workers waiting on that queue; it reconnects with backoff. */
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos/log.h"

struct stg_notify {
    char *dsn;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* CLOCK_MONOTONIC */
    notify_waiter *waiters;
    int started, stop, listening;
    int after_drop;             /* wait for the uid change before connecting */
    pthread_t th;
    int wake[2];                /* a pipe: wakes the listener's poll to stop */
    uint64_t count;
};

static void *listener(void *arg);

stg_notify *notify_new(const char *dsn, int after_drop)
{
    if (!dsn || !*dsn)
        return NULL;
    stg_notify *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->dsn = strdup(dsn);
    n->after_drop = after_drop;
    if (!n->dsn || pipe2(n->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(n->dsn);
        free(n);
        return NULL;
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* Started before the sandbox, like the serve loop's workers; the seccomp filter is
     * synchronised onto every thread. */
    if (pthread_create(&n->th, NULL, listener, n) == 0)
        n->started = 1;
    else
        aos_warn("queue listener thread not started: receivers will look every 250 ms");
    return n;
}

/* Fire the waiters on agent/queue, or all of them (agent NULL). Called locked. */
static void fire(stg_notify *n, const char *agent, size_t alen, const char *queue)
{
    for (notify_waiter *w = n->waiters; w; w = w->next)
        if (!agent || (strlen(w->agent) == alen && !memcmp(w->agent, agent, alen) &&
                       !strcmp(w->queue, queue)))
            w->fired = 1;
    pthread_cond_broadcast(&n->cv);
}

/* Sleep ms on the wake pipe; 1 when asked to stop. */
static int nap(stg_notify *n, int ms)
{
    struct pollfd p = {.fd = n->wake[0], .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

static void listen_once(stg_notify *n, PGconn *pg)
{
    PGresult *r = PQexec(pg, "LISTEN " STG_NOTIFY_CHANNEL);
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok)
        return;
    pthread_mutex_lock(&n->mu);
    n->listening = 1;
    fire(n, NULL, 0, NULL);     /* anything sent while we were away: look again */
    pthread_mutex_unlock(&n->mu);
    for (;;) {
        struct pollfd p[2] = {{.fd = PQsocket(pg), .events = POLLIN},
                              {.fd = n->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        if (!PQconsumeInput(pg))
            break;
        PGnotify *nt;
        pthread_mutex_lock(&n->mu);
        while ((nt = PQnotifies(pg))) {
            const char *tab = strchr(nt->extra, '\t');
            if (tab)
                fire(n, nt->extra, (size_t)(tab - nt->extra), tab + 1);
            n->count++;
            PQfreemem(nt);
        }
        pthread_mutex_unlock(&n->mu);
    }
    pthread_mutex_lock(&n->mu);
    n->listening = 0;
    pthread_mutex_unlock(&n->mu);
}

static void *listener(void *arg)
{
    stg_notify *n = arg;
    int backoff = 50;
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {n->dsn, "5", "aos-storage-listen", NULL};
    /* started in open(), before the sandbox drops root: as root, peer authentication
     * refuses us (root maps to no server's role), so wait for the drop */
    while (n->after_drop && geteuid() == 0 && !__atomic_load_n(&n->stop, __ATOMIC_ACQUIRE))
        if (nap(n, 5))
            return NULL;
    while (!__atomic_load_n(&n->stop, __ATOMIC_ACQUIRE)) {
        PGconn *pg = PQconnectdbParams(keys, vals, 1);
        if (pg && PQstatus(pg) == CONNECTION_OK) {
            backoff = 50;
            listen_once(n, pg);
        }
        PQfinish(pg);
        if (nap(n, backoff))
            break;
        backoff = backoff < 2000 ? backoff * 2 : 2000;
    }
    return NULL;
}

void notify_arm(stg_notify *n, notify_waiter *w, const char *agent, const char *queue)
{
    w->agent = agent;
    w->queue = queue;
    w->fired = 0;
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    w->next = n->waiters;
    n->waiters = w;
    pthread_mutex_unlock(&n->mu);
}

int notify_wait(stg_notify *n, notify_waiter *w, uint64_t until_mono_ms)
{
    uint64_t now = aos_mono_ms();
    if (!n) {
        uint64_t ms = until_mono_ms > now ? until_mono_ms - now : 0;
        if (ms > 250)
            ms = 250;
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return 0;
    }
    pthread_mutex_lock(&n->mu);
    while (!w->fired && !n->stop) {
        now = aos_mono_ms();
        if (now >= until_mono_ms)
            break;
        uint64_t until = until_mono_ms;
        if (!n->listening && until > now + 250)
            until = now + 250;   /* not listening: we may miss a NOTIFY, look again soon */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ms = until - now;
        ts.tv_sec += (time_t)(ms / 1000);
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&n->cv, &n->mu, &ts) == ETIMEDOUT && !n->listening)
            break;
    }
    w->fired = 0;
    int stopped = n->stop;
    pthread_mutex_unlock(&n->mu);
    return stopped ? -1 : 0;
}

void notify_disarm(stg_notify *n, notify_waiter *w)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    for (notify_waiter **p = &n->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    pthread_mutex_unlock(&n->mu);
}

uint64_t notify_count(stg_notify *n)
{
    if (!n)
        return 0;
    pthread_mutex_lock(&n->mu);
    uint64_t c = n->count;
    pthread_mutex_unlock(&n->mu);
    return c;
}

int notify_listening(stg_notify *n)
{
    if (!n)
        return 0;
    pthread_mutex_lock(&n->mu);
    int l = n->listening;
    pthread_mutex_unlock(&n->mu);
    return l;
}

void notify_stop(stg_notify *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    int was = n->stop;
    __atomic_store_n(&n->stop, 1, __ATOMIC_RELEASE);
    int started = n->started;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (started && !was) {
        ssize_t w = write(n->wake[1], "x", 1);
        (void)w;
        pthread_join(n->th, NULL);
    }
}

void notify_free(stg_notify *n)
{
    if (!n)
        return;
    notify_stop(n);
    close(n->wake[0]);
    close(n->wake[1]);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n->dsn);
    free(n);
}
