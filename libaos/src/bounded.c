/* aos_run_bounded (see aos/bounded.h): a detached thread and a timed wait, with the shared
 * state freed by whichever of the two lets go of it last. */
#include "aos/bounded.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct bounded {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, refs;
    void (*fn)(void *);
    void *arg;
} bounded;

static void rele(bounded *k)
{
    pthread_mutex_lock(&k->mu);
    int last = --k->refs == 0;
    pthread_mutex_unlock(&k->mu);
    if (last) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
    }
}

static void *run(void *p)
{
    bounded *k = p;
    k->fn(k->arg);
    pthread_mutex_lock(&k->mu);
    k->done = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    rele(k);
    return NULL;
}

int aos_run_bounded(void (*fn)(void *arg), void *arg, unsigned ms)
{
    bounded *k = calloc(1, sizeof *k);
    if (!k)
        return 0; /* no memory for the thread's state: leaking beats hanging */
    pthread_condattr_t ca;
    pthread_attr_t ta;
    pthread_t t;
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
    k->refs = 2;
    k->fn = fn;
    k->arg = arg;
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    int rv = pthread_create(&t, &ta, run, k);
    pthread_attr_destroy(&ta);
    if (rv != 0) {
        k->refs = 1;
        rele(k);
        return 0;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&k->mu);
    while (!k->done && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0)
        ;
    int done = k->done;
    pthread_mutex_unlock(&k->mu);
    rele(k);
    return done;
}
