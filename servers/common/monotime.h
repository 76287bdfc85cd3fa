/* Monotonic time for the serve loop's timed waits: microseconds, absolute wake-up times
 * and condition variables on CLOCK_MONOTONIC, so a wall-clock step never stalls a wait. */
#ifndef AOS_MONOTIME_H
#define AOS_MONOTIME_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t mt_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The CLOCK_MONOTONIC time us microseconds from now, for pthread_cond_timedwait on a
 * condition variable made by mt_cond_init. */
static inline struct timespec mt_in_us(uint64_t us)
{
    uint64_t t = mt_now_us() + us;
    struct timespec ts = {(time_t)(t / 1000000u), (long)(t % 1000000u) * 1000L};
    return ts;
}

static inline void mt_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

#endif
