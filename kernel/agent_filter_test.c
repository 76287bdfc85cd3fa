/* The agents' allow-list loaded in a child process: each escape probe refused with EPERM
 * (and not refused without it: the baseline), and what a libaos program needs still works. */
#include <errno.h>
#include <signal.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent_filter.h"
#include "escape.h"

#define OUT_MAX 16384

/* Runs the safe probes in a child, under the filter or not; the child's lines into out,
 * its exit code returned (the probes not refused, or 100+ when it could not start). */
static int run_child(const uint8_t *bpf, size_t len, const char *dir, char *out, size_t cap)
{
    char path[] = "/tmp/agent-filter-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = fdopen(fd, "w");
        if (!f)
            _exit(100);
        setvbuf(f, NULL, _IONBF, 0);
        int bad = 0;
        if (bpf) {
            struct sock_fprog prog = {(unsigned short)(len / sizeof(struct sock_filter)),
                                      (struct sock_filter *)(uintptr_t)bpf};
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
                prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
                _exit(101);
            bad = esc_run(f, 1) + esc_allowed(f, dir);
        } else {
            bad = esc_run(f, 1);
        }
        _exit(bad > 99 ? 99 : bad); /* no atexit work (LeakSanitizer) under the filter */
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void forbidden_calls_are_refused_and_needed_ones_work(void **st)
{
    (void)st;
    uint8_t *bpf = NULL;
    size_t len = 0;
    char why[256] = "";
    if (agf_compile(AGF_ENFORCE, &bpf, &len, why, sizeof why) != AOS_OK)
        fail_msg("agf_compile: %s", why);
    assert_true(len > 0 && len % sizeof(struct sock_filter) == 0);
    char dir[] = "/tmp/agent-filter-ws-XXXXXX";
    assert_non_null(mkdtemp(dir));
    static char base[OUT_MAX], filt[OUT_MAX];
    int nbase = run_child(NULL, 0, dir, base, sizeof base);
    int nfilt = run_child(bpf, len, dir, filt, sizeof filt);
    rmdir(dir);
    free(bpf);
    printf("without the filter (%d not refused):\n%s", nbase, base);
    printf("with the filter (%d not refused or broken):\n%s", nfilt, filt);
    assert_int_equal(nfilt, 0);
    assert_null(strstr(filt, "NOT REFUSED"));
    assert_null(strstr(filt, "allowed:"));
    /* the baseline: these are not EPERM without a filter whoever runs the test, so the
     * filter's EPERM above is its own answer */
    static const char *const distinct[] = {
        "socket(AF_INET)", "socket(AF_INET6)", "socketpair(AF_INET)", "setns",
        "process_vm_readv", "ioctl(TIOCSTI)", "symlink", "link",
        "clone without CLONE_THREAD (fork)", "posix_spawn (clone with CLONE_VFORK)",
    };
    for (size_t i = 0; i < sizeof distinct / sizeof distinct[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "escape: %s: NOT REFUSED", distinct[i]);
        if (!strstr(base, want))
            fail_msg("without the filter, %s was refused: the probe proves nothing",
                     distinct[i]);
        snprintf(want, sizeof want, "escape: %s: refused (EPERM)", distinct[i]);
        assert_non_null(strstr(filt, want));
    }
}

#if defined(__x86_64__)
/* A 32-bit syscall (int $0x80) names other numbers: i386's 26 is ptrace, x86_64's 26 is
 * msync. The filter checks the architecture first: such a call kills the process. */
/* The child's wait status after an i386 getpid, under the filter or not. */
static int i386_getpid(const uint8_t *bpf, size_t len)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sock_fprog prog = {(unsigned short)(len / sizeof(struct sock_filter)),
                                  (struct sock_filter *)(uintptr_t)bpf};
        if (bpf && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
                    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)))
            _exit(101);
        long r = 20; /* i386 getpid */
        __asm__ volatile("int $0x80" : "+a"(r) : : "memory");
        _exit(r > 0 ? 0 : 102); /* it came back */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void a_32_bit_syscall_is_not_a_way_around_the_list(void **st)
{
    (void)st;
    int base = i386_getpid(NULL, 0);
    if (!WIFEXITED(base) || WEXITSTATUS(base) != 0) {
        printf("skipped: this kernel runs no i386 syscalls (no IA32 emulation)\n");
        skip();
    }
    uint8_t *bpf = NULL;
    size_t len = 0;
    char why[256];
    assert_int_equal(agf_compile(AGF_ENFORCE, &bpf, &len, why, sizeof why), AOS_OK);
    int status = i386_getpid(bpf, len);
    free(bpf);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSYS)
        fail_msg("an i386 getpid under the filter: %s %d, wanted SIGSYS",
                 WIFSIGNALED(status) ? "signal" : "exit",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}
#endif

static void the_kill_mode_comes_from_the_environment(void **st)
{
    (void)st;
    unsetenv("AOS_AGENT_SECCOMP");
    assert_int_equal(agf_mode_from_env(), AGF_ENFORCE);
    setenv("AOS_AGENT_SECCOMP", "kill", 1);
    assert_int_equal(agf_mode_from_env(), AGF_KILL);
    setenv("AOS_AGENT_SECCOMP", "off", 1);
    assert_int_equal(agf_mode_from_env(), AGF_ENFORCE); /* no way to turn it off */
    unsetenv("AOS_AGENT_SECCOMP");
    uint8_t *bpf = NULL;
    size_t len = 0;
    char why[256];
    assert_int_equal(agf_compile(AGF_KILL, &bpf, &len, why, sizeof why), AOS_OK);
    assert_true(len > 0);
    free(bpf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forbidden_calls_are_refused_and_needed_ones_work),
#if defined(__x86_64__)
        cmocka_unit_test(a_32_bit_syscall_is_not_a_way_around_the_list),
#endif
        cmocka_unit_test(the_kill_mode_comes_from_the_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
