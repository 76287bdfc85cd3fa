/* pv_stopped against real processes: a child with a busy thread is seen stopped only once
 * SIGSTOP has landed in every thread, running again after SIGCONT, and gone counts as stopped. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "procview.h"

static void *spin(void *arg)
{
    (void)arg;
    for (volatile unsigned long i = 0;; i++) {
    }
    return NULL;
}

/* A child of two threads: one spinning, one in pause(). */
static pid_t child(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, spin, NULL) != 0)
            _exit(1);
        for (;;)
            pause();
    }
    return pid;
}

/* Polls pv_stopped until it says want, for up to 2 s; its last answer. */
static int wait_for(pid_t pid, int want)
{
    int got = !want;
    for (int i = 0; i < 2000 && (got = pv_stopped(pid)) != want; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return got;
}

static void a_stopped_child_is_seen_stopped_then_running(void **st)
{
    (void)st;
    pid_t pid = child();
    usleep(50000); /* its spinning thread is there */
    assert_int_equal(pv_stopped(pid), 0);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    assert_int_equal(wait_for(pid, 1), 1);
    assert_int_equal(kill(pid, SIGCONT), 0);
    assert_int_equal(wait_for(pid, 0), 0);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(pv_stopped(pid), 1); /* gone: nothing of it runs */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_stopped_child_is_seen_stopped_then_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
