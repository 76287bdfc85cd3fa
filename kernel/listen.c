/* The bounded nng listener: counts pipes from ADD_PRE to REM_POST, refuses past a cap,
 * closes pipes that never speak, and throttles its refusal lines (a summary says the rest). */
#include "listen.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "aos/log.h"

#define LSN_TICK_MS 500u       /* deadline granularity, and how soon a summary follows */
#define LSN_LOG_WINDOW_MS 1000u
#define LSN_LOG_BURST 3u       /* refusal lines per window per listener; the rest summed */
#define LSN_WHY 160

typedef struct silent {
    uint32_t id;
    uint64_t since;            /* monotonic ms at ADD_PRE */
} silent;

struct lsn {
    char what[48];
    lsn_opts o;
    nng_socket sock;
    nng_listener lst;
    pthread_mutex_t mu;        /* sil, victims and the log window */
    silent *sil;               /* oldest first: a deadline closes a prefix */
    unsigned nsil;
    uint32_t *victims;         /* the timer's scratch: closed outside the lock */
    atomic_uint nsil_hint;     /* nsil, read without the lock by lsn_heard */
    atomic_uint pipes;
    atomic_ullong refused, silenced;
    uint64_t win_start;
    unsigned win_lines;
    uint64_t suppressed;
    char last_why[LSN_WHY];
    nng_aio *timer;
    atomic_int closing;
};

/* With mu held: the summary of what the window held back, into buf ("" when nothing). */
static void summary_locked(lsn *l, uint64_t now, char *buf, size_t cap)
{
    buf[0] = 0;
    if (l->suppressed)
        snprintf(buf, cap, "%s: %llu more refused in the last %llu ms (the last: %s)", l->what,
                 (unsigned long long)l->suppressed, (unsigned long long)(now - l->win_start),
                 l->last_why);
    l->suppressed = 0;
    l->win_start = now;
    l->win_lines = 0;
}

/* A refusal line, unless this window already had its share: then it is only counted and
 * the summary says how many. A refused intruder that re-dials cannot flood the log. */
static void refusal(lsn *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refusal(lsn *l, const char *fmt, ...)
{
    char why[LSN_WHY], sum[2 * LSN_WHY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    uint64_t now = aos_mono_ms();
    int print = 0;
    sum[0] = 0;
    pthread_mutex_lock(&l->mu);
    if (now - l->win_start >= LSN_LOG_WINDOW_MS)
        summary_locked(l, now, sum, sizeof sum);
    if (l->win_lines < LSN_LOG_BURST) {
        l->win_lines++;
        print = 1;
    } else {
        l->suppressed++;
        memcpy(l->last_why, why, sizeof why);
    }
    pthread_mutex_unlock(&l->mu);
    if (sum[0])
        aos_warn("%s", sum);
    if (print)
        aos_warn("%s: %s", l->what, why);
}

/* With mu held: forget pipe id if it is silent; 1 if it was. */
static int unsilence_locked(lsn *l, uint32_t id)
{
    for (unsigned i = 0; i < l->nsil; i++)
        if (l->sil[i].id == id) {
            memmove(&l->sil[i], &l->sil[i + 1], (l->nsil - i - 1) * sizeof l->sil[0]);
            l->nsil--;
            atomic_store(&l->nsil_hint, l->nsil);
            return 1;
        }
    return 0;
}

static void on_add_pre(lsn *l, nng_pipe p)
{
    char why[LSN_WHY];
    unsigned n = atomic_fetch_add(&l->pipes, 1) + 1;
    why[0] = 0;
    if (n > l->o.max_pipes) {
        atomic_fetch_add(&l->refused, 1);
        refusal(l, "refused a connection: %u are open, the cap is %u", n - 1, l->o.max_pipes);
        nng_pipe_close(p);
        return;
    }
    if (l->o.admit && l->o.admit(l->o.arg, p, why, sizeof why) != 0) {
        atomic_fetch_add(&l->refused, 1);
        refusal(l, "%s", why[0] ? why : "refused a connection");
        nng_pipe_close(p);
        return;
    }
    if (!l->o.silent_ms)
        return;
    /* admitted, and silent until its first message: the oldest silent pipe makes room, so
     * that a flood of silent peers cannot lock out a client that speaks at once */
    uint32_t victim = 0;
    pthread_mutex_lock(&l->mu);
    if (l->nsil == l->o.max_silent) {
        victim = l->sil[0].id;
        memmove(&l->sil[0], &l->sil[1], (l->nsil - 1) * sizeof l->sil[0]);
        l->nsil--;
    }
    l->sil[l->nsil].id = nng_pipe_id(p) > 0 ? (uint32_t)nng_pipe_id(p) : 0;
    l->sil[l->nsil].since = aos_mono_ms();
    l->nsil++;
    atomic_store(&l->nsil_hint, l->nsil);
    pthread_mutex_unlock(&l->mu);
    if (victim) {
        nng_pipe v;
        v.id = victim;
        atomic_fetch_add(&l->silenced, 1);
        refusal(l, "closed the oldest of %u connections that have sent nothing yet",
                l->o.max_silent);
        nng_pipe_close(v);
    }
}

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    lsn *l = arg;
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        on_add_pre(l, p);
        return;
    }
    if (ev == NNG_PIPE_EV_REM_POST) {
        atomic_fetch_sub(&l->pipes, 1);
        if (l->o.silent_ms && atomic_load(&l->nsil_hint)) {
            pthread_mutex_lock(&l->mu);
            unsilence_locked(l, (uint32_t)nng_pipe_id(p));
            pthread_mutex_unlock(&l->mu);
        }
    }
    if (l->o.on_event)
        l->o.on_event(l->o.arg, p, ev);
}

void lsn_heard(lsn *l, nng_pipe p)
{
    if (!l || !atomic_load(&l->nsil_hint))
        return; /* the steady state: every pipe has spoken, no lock on the data path */
    pthread_mutex_lock(&l->mu);
    unsilence_locked(l, (uint32_t)nng_pipe_id(p));
    pthread_mutex_unlock(&l->mu);
}

/* Every LSN_TICK_MS: close the pipes past their first-message deadline, and print the
 * summary of refusals a window held back once the window is over. */
static void on_tick(void *arg)
{
    lsn *l = arg;
    if (nng_aio_result(l->timer) != 0 || atomic_load(&l->closing))
        return; /* stopped */
    uint64_t now = aos_mono_ms();
    unsigned nv = 0;
    char sum[2 * LSN_WHY];
    sum[0] = 0;
    pthread_mutex_lock(&l->mu);
    if (l->o.silent_ms) {
        while (nv < l->nsil && now - l->sil[nv].since >= l->o.silent_ms) {
            l->victims[nv] = l->sil[nv].id;
            nv++;
        }
        memmove(&l->sil[0], &l->sil[nv], (l->nsil - nv) * sizeof l->sil[0]);
        l->nsil -= nv;
        atomic_store(&l->nsil_hint, l->nsil);
    }
    if (l->suppressed && now - l->win_start >= LSN_LOG_WINDOW_MS)
        summary_locked(l, now, sum, sizeof sum);
    /* closed outside the lock: REM_POST takes it, maybe on this very thread */
    uint32_t *victims = l->victims;
    pthread_mutex_unlock(&l->mu);
    if (sum[0])
        aos_warn("%s", sum);
    if (nv) {
        atomic_fetch_add(&l->silenced, nv);
        refusal(l, "closed %u connection%s that sent nothing within %u ms", nv,
                nv == 1 ? "" : "s", l->o.silent_ms);
        for (unsigned i = 0; i < nv; i++) {
            nng_pipe v;
            v.id = victims[i];
            nng_pipe_close(v); /* NNG_ENOENT when it went meanwhile: nothing to do */
        }
    }
    nng_sleep_aio(LSN_TICK_MS, l->timer);
}

aos_err lsn_open(lsn **out, nng_socket sock, const char *url, const lsn_opts *o, char *why,
                 size_t whylen)
{
    *out = NULL;
    if (!o->max_pipes || (o->silent_ms && !o->max_silent)) {
        snprintf(why, whylen, "%s: a listener needs a pipe cap (and a silent cap with a "
                 "deadline)", o->what);
        return AOS_ERR_USAGE;
    }
    lsn *l = calloc(1, sizeof *l);
    if (!l)
        return AOS_ERR_NOMEM;
    snprintf(l->what, sizeof l->what, "%s", o->what);
    l->o = *o;
    l->o.what = l->what;
    l->sock = sock;
    pthread_mutex_init(&l->mu, NULL);
    l->win_start = aos_mono_ms();
    if (o->silent_ms) {
        l->sil = calloc(o->max_silent, sizeof *l->sil);
        l->victims = calloc(o->max_silent, sizeof *l->victims);
    }
    int rv = 0;
    if (o->silent_ms && (!l->sil || !l->victims))
        rv = NNG_ENOMEM;
    if (rv || (rv = nng_aio_alloc(&l->timer, on_tick, l)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_PRE, on_pipe, l)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, on_pipe, l)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, on_pipe, l)) != 0 ||
        (rv = nng_listener_create(&l->lst, sock, url)) != 0 ||
        (rv = nng_listener_set_int(l->lst, NNG_OPT_IPC_PERMISSIONS, o->mode)) != 0 ||
        (rv = nng_listener_start(l->lst, 0)) != 0) {
        snprintf(why, whylen, "%s at %s: %s", o->what, url, nng_strerror(rv));
        /* the caller closes the socket: no pipe ever existed, so that close is safe; the
         * callbacks are taken off first so none can reach the freed listener */
        nng_pipe_notify(sock, NNG_PIPE_EV_ADD_PRE, NULL, NULL);
        nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, NULL, NULL);
        nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, NULL, NULL);
        if (nng_listener_id(l->lst) > 0)
            nng_listener_close(l->lst);
        if (l->timer)
            nng_aio_free(l->timer);
        free(l->sil);
        free(l->victims);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return rv == NNG_ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_IO;
    }
    nng_sleep_aio(LSN_TICK_MS, l->timer);
    *out = l;
    return AOS_OK;
}

void lsn_close(lsn *l)
{
    if (!l)
        return;
    atomic_store(&l->closing, 1);
    nng_listener_close(l->lst);
    nng_aio_stop(l->timer); /* waits for a running tick; none re-arms after closing */
    char sum[2 * LSN_WHY];
    pthread_mutex_lock(&l->mu);
    summary_locked(l, aos_mono_ms(), sum, sizeof sum);
    pthread_mutex_unlock(&l->mu);
    if (sum[0])
        aos_warn("%s", sum);
}

unsigned lsn_pipes(lsn *l) { return atomic_load(&l->pipes); }
uint64_t lsn_refused(lsn *l) { return atomic_load(&l->refused); }
uint64_t lsn_silenced(lsn *l) { return atomic_load(&l->silenced); }
