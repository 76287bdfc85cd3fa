/* B3: restart time. kill -9 a server, time until it answers again (a ping answered by the
 * new pid), 20 times, for a server without (tool) and with a database (storage). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos.pb-c.h"
#include "harness.h"

#define KILLS 20

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The pid that answered a ping, 0 on error. */
static int ping_pid(aos_conn *c, const char *server)
{
    char method[64];
    snprintf(method, sizeof method, "%s.ping", server);
    Aos__PingRequest rq = AOS__PING_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = aos__ping_request__pack(&rq, buf);
    aos_call_opts o = {.timeout_ms = 10000};
    aos_reply r;
    int pid = 0;
    if (aos_call(c, &o, method, buf, len, &r) == AOS_OK) {
        Aos__PingReply *p = aos__ping_reply__unpack(NULL, r.payload_len, r.payload);
        if (p) {
            pid = p->pid;
            aos__ping_reply__free_unpacked(p, NULL);
        }
    }
    aos_reply_clear(&r);
    return pid;
}

static void measure(h_aosd *h, const char *server, const char *label)
{
    double ms[KILLS];
    int n = 0;
    for (int i = 0; i < KILLS; i++) {
        pid_t old = h_wait_running(h, server, 0, 20000);
        usleep(150 * 1000); /* past --stable-ms: each kill is a "first" restart */
        double t0 = now_ms();
        kill(old, SIGKILL);
        int pid;
        do { /* the answer must come from the new incarnation */
            pid = ping_pid(h_conn(h), server);
        } while (pid == old || pid == 0 ? (now_ms() - t0 < 10000) : 0);
        if (pid && pid != old)
            ms[n++] = now_ms() - t0;
    }
    qsort(ms, (size_t)n, sizeof ms[0], cmp_d);
    printf("%s_kills: %d\n", label, n);
    printf("%s_ms_median: %.1f\n", label, n ? ms[n / 2] : -1.0);
    printf("%s_ms_max: %.1f\n", label, n ? ms[n - 1] : -1.0);
}

int main(void)
{
    const char *args[] = {"--restart-intensity", "1000/60", "--stable-ms", "100", NULL};
    h_aosd *h = h_start(args);
    measure(h, "tool", "restart");
    measure(h, "storage", "restart_storage");
    h_stop(h);
    return 0;
}
