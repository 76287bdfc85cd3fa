/* What the agents' seccomp allow-list costs per syscall: a few calls from the start, the
 * middle and the end of the list, timed in a child without a filter and in one under it,
 * alternately, ROUNDS times: the least of each is printed (the machine is shared). */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_filter.h"

#define CALLS 200000L
#define ROUNDS 7

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ns per call of each probe, written to fd as doubles */
static void measure(int fd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    char c;
    struct epoll_event ev;
    double r[4];
    uint64_t t = now_ns();
    for (long i = 0; i < CALLS; i++)
        if (read(0, &c, 0) < 0) /* nr 0: the list's first */
            break;
    r[0] = (double)(now_ns() - t) / CALLS;
    t = now_ns();
    for (long i = 0; i < CALLS; i++)
        syscall(SYS_getpid); /* nr 39 */
    r[1] = (double)(now_ns() - t) / CALLS;
    t = now_ns();
    for (long i = 0; i < CALLS; i++)
        epoll_wait(ep, &ev, 1, 0); /* nr 232 */
    r[2] = (double)(now_ns() - t) / CALLS;
    t = now_ns();
    for (long i = 0; i < CALLS; i++)
        syscall(SYS_unshare, 0); /* nr 272: not listed, the default's EPERM */
    r[3] = (double)(now_ns() - t) / CALLS;
    if (write(fd, r, sizeof r) != (ssize_t)sizeof r)
        _exit(1);
}

static int run(const uint8_t *bpf, size_t len, double r[4])
{
    int p[2];
    if (pipe(p))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (bpf) {
            struct sock_fprog prog = {(unsigned short)(len / sizeof(struct sock_filter)),
                                      (struct sock_filter *)(uintptr_t)bpf};
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
                prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
                _exit(1);
        }
        measure(p[1]);
        _exit(0);
    }
    close(p[1]);
    ssize_t n = read(p[0], r, 4 * sizeof r[0]);
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    return n == 4 * (ssize_t)sizeof r[0] && WIFEXITED(st) && !WEXITSTATUS(st) ? 0 : -1;
}

int main(void)
{
    uint8_t *bpf = NULL;
    size_t len = 0;
    char why[256];
    if (agf_compile(AGF_ENFORCE, &bpf, &len, why, sizeof why) != AOS_OK) {
        fprintf(stderr, "agf_compile: %s\n", why);
        return 1;
    }
    double base[4], filt[4], b[4], f[4];
    for (int k = 0; k < 4; k++)
        base[k] = filt[k] = 1e12;
    for (int i = 0; i < ROUNDS; i++) {
        if (run(NULL, 0, b) || run(bpf, len, f)) {
            fprintf(stderr, "bench_agent_filter: a child failed\n");
            return 1;
        }
        for (int k = 0; k < 4; k++) {
            base[k] = b[k] < base[k] ? b[k] : base[k];
            filt[k] = f[k] < filt[k] ? f[k] : filt[k];
        }
    }
    static const char *const names[] = {"read0", "getpid", "epoll_wait", "unlisted_unshare"};
    printf("filter_instructions: %zu\n", len / sizeof(struct sock_filter));
    for (int i = 0; i < 4; i++)
        printf("ns_per_call_%s: %.1f (no filter: %.1f, +%.1f)\n", names[i], filt[i], base[i],
               filt[i] - base[i]);
    free(bpf);
    return 0;
}
