/* Operating aos (issue 23): a nearly full disk refuses writes and serves reads, then heals
 * by itself; aosd.log rotates by size, its count kept, and aosctl logs reads it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "aos.pb-c.h"
#include "aos/storage.h"
#include "harness.h"

#define AGENT "ops-agent"

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static aos_err put(h_aosd *h, const char *key, const char *val, char *why, size_t whylen)
{
    aos_call_opts o = {.agent_id = AGENT, .timeout_ms = 20000};
    uint64_t ver;
    return aos_kv_put(h_conn(h), &o, key, val, strlen(val), NULL, &ver, why, whylen);
}

static int disk_low(h_aosd *h, uint64_t *free_mb)
{
    char why[256];
    Aos__StatusReply *s = h_status(h, why, sizeof why);
    if (!s)
        fail_msg("status: %s", why);
    int low = s->disk_low;
    if (free_mb)
        *free_mb = s->disk_free_mb;
    aos__status_reply__free_unpacked(s, NULL);
    return low;
}

static int wait_low(h_aosd *h, int want)
{
    for (int i = 0; i < 100; i++) {
        if (disk_low(h, NULL) == want)
            return 1;
        sleep_ms(100);
    }
    return 0;
}

/* A data dir on its own small tmpfs; a filler file takes it below disk_min_free_mb. */
static void a_full_disk_refuses_writes_serves_reads_and_heals(void **st)
{
    (void)st;
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/it-ops-disk-XXXXXX");
    assert_non_null(mkdtemp(dir));
    if (mount("aos-test", dir, "tmpfs", 0, "size=320m,mode=0755") != 0) {
        int e = errno;
        rmdir(dir);
        print_message("skipped: cannot mount a tmpfs for the data dir (%s); the case needs "
                      "root\n", strerror(e));
        skip();
    }
    char path[128], why[1024];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    h_write_file(path, "disk_min_free_mb: 64\n");
    h_aosd *h = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!h) {
        umount2(dir, MNT_DETACH);
        fail_msg("aosd on %s: %s", dir, why);
    }
    assert_int_equal(put(h, "before", "kept", why, sizeof why), AOS_OK);
    assert_false(disk_low(h, NULL));

    /* fill it to 40 MiB free: below the 64 of aos.yaml */
    struct statvfs sv;
    assert_int_equal(statvfs(dir, &sv), 0);
    uint64_t free_b = (uint64_t)sv.f_bavail * sv.f_frsize, leave = 40ull << 20;
    assert_true(free_b > leave);
    snprintf(path, sizeof path, "%s/filler", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    for (uint64_t left = free_b - leave; left > 0;) {
        size_t n = left < sizeof chunk ? (size_t)left : sizeof chunk;
        assert_int_equal(write(fd, chunk, n), (ssize_t)n);
        left -= n;
    }
    close(fd);
    assert_true(wait_low(h, 1));

    aos_err rc = put(h, "during", "refused", why, sizeof why);
    assert_int_equal(rc, AOS_ERR_UNAVAILABLE);
    assert_non_null(strstr(why, "disk nearly full"));
    aos_call_opts o = {.agent_id = AGENT, .timeout_ms = 20000};
    uint8_t *v = NULL;
    size_t len = 0;
    uint64_t ver;
    assert_int_equal(aos_kv_get(h_conn(h), &o, "before", &v, &len, &ver, why, sizeof why),
                     AOS_OK); /* reads go on */
    assert_int_equal(len, 4);
    assert_memory_equal(v, "kept", 4);
    free(v);
    char out[8192];
    const char *sargv[] = {"status", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, sargv), 0);
    assert_non_null(strstr(out, "DISK NEARLY FULL"));

    /* space back: served again by itself, nothing lost */
    assert_int_equal(unlink(path), 0);
    assert_true(wait_low(h, 0));
    assert_int_equal(put(h, "after", "written", why, sizeof why), AOS_OK);
    assert_int_equal(aos_kv_get(h_conn(h), &o, "before", &v, &len, &ver, why, sizeof why),
                     AOS_OK);
    free(v);
    char kept[128];
    h_stop_keep(h, kept, sizeof kept);
    if (umount2(dir, 0) != 0)
        umount2(dir, MNT_DETACH);
    rmdir(dir);
}

static int count_files(const char *dir, const char *prefix, unsigned upto)
{
    int n = 0;
    char p[256];
    for (unsigned i = 1; i <= upto; i++) {
        snprintf(p, sizeof p, "%s/%s.%u", dir, prefix, i);
        n += access(p, F_OK) == 0;
    }
    return n;
}

static void the_log_rotates_by_size_and_aosctl_logs_reads_it(void **st)
{
    (void)st;
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/it-ops-log-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char path[128], why[1024], out[65536];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    h_write_file(path, "log_max_mb: 1\nlog_keep: 2\n");
    const char *args[] = {"--log", NULL};
    h_aosd *h = h_start_on(dir, args, 120000, why, sizeof why);
    if (!h)
        fail_msg("aosd on %s: %s", dir, why);
    /* a server's line, relayed by aosd under its own stamp, name and pid */
    const char *la[] = {"logs", "storage", "-n", "5", "--json", NULL};
    int found = 0;
    for (int i = 0; i < 50 && !found; i++) {
        assert_int_equal(h_aosctl(h, out, sizeof out, la), 0);
        found = strstr(out, "value cap") != NULL;
        if (!found)
            sleep_ms(100);
    }
    assert_true(found);
    json_error_t je;
    json_t *doc = json_loads(out, 0, &je);
    assert_non_null(doc);
    json_t *lines = json_object_get(doc, "lines");
    assert_true(json_array_size(lines) >= 1);
    size_t k;
    json_t *l;
    json_array_foreach(lines, k, l) {
        const char *s = json_string_value(l);
        assert_non_null(s);
        assert_true(strlen(s) > 25 && s[4] == '-' && s[10] == 'T' && s[23] == 'Z');
        assert_non_null(strstr(s, " storage["));
        assert_non_null(strstr(s, "] info: "));
    }
    json_decref(doc);

    /* past 1 MiB three times over: aosd says each SIGHUP in a line */
    pid_t pid = h_aosd_pid(h);
    for (int round = 0; round < 600 && count_files(dir, "aosd.log", 3) < 2; round++) {
        for (int i = 0; i < 2000; i++)
            kill(pid, SIGHUP);
        sleep_ms(20);
    }
    for (int round = 0; round < 200; round++) { /* and once more, to see the count kept */
        for (int i = 0; i < 2000; i++)
            kill(pid, SIGHUP);
        sleep_ms(20);
    }
    sleep_ms(1500);
    assert_int_equal(count_files(dir, "aosd.log", 2), 2);
    assert_int_equal(count_files(dir, "aosd.log", 5) - 2, 0); /* log_keep: 2 */
    struct stat sb;
    snprintf(path, sizeof path, "%s/aosd.log.1", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(sb.st_size >= (1 << 20) && sb.st_size < (8 << 20));
    const char *lb[] = {"logs", "aosd", "-n", "3", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, lb), 0);
    int n = 0;
    for (char *p = out; (p = strstr(p, " aosd[")); p++)
        n++;
    assert_int_equal(n, 3);
    const char *bad[] = {"logs", "nosuch", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, bad), 2);
    char kept[128];
    h_stop_keep(h, kept, sizeof kept);
    h_remove_dir(kept);
}

/* systemd's notify socket, played by a datagram socket of ours: READY=1 once, when every
 * child runs; WATCHDOG=1 at half the interval; STOPPING=1 at aosctl shutdown, which stops
 * the agents at their step boundaries before the servers and leaves nothing running. */
static int recv_msg(int fd, char *buf, size_t cap, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return 0;
    ssize_t n = recv(fd, buf, cap - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return 1;
}

static void under_systemd_ready_watchdog_and_shutdown_at_step_boundaries(void **st)
{
    (void)st;
    char dir[64], path[160], why[1024], out[65536];
    snprintf(dir, sizeof dir, "/tmp/it-ops-ntf-XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s.notify", dir);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    unlink(sa.sun_path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    setenv("WATCHDOG_USEC", "1000000", 1);
    h_aosd *h = h_start_on(dir, NULL, 120000, why, sizeof why);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    if (!h)
        fail_msg("aosd on %s: %s", dir, why);
    int ready = 0, dog = 0;
    char m[512];
    for (int i = 0; i < 100 && !(ready && dog >= 2); i++) {
        if (!recv_msg(fd, m, sizeof m, 100))
            continue;
        if (strstr(m, "READY=1")) {
            ready++;
            /* sent once every child runs */
            Aos__StatusReply *s = h_status(h, why, sizeof why);
            assert_non_null(s);
            for (size_t k = 0; k < s->n_children; k++)
                assert_string_equal(s->children[k]->state, "running");
            aos__status_reply__free_unpacked(s, NULL);
        }
        dog += strstr(m, "WATCHDOG=1") != NULL;
    }
    assert_int_equal(ready, 1);
    assert_true(dog >= 2);

    snprintf(path, sizeof path, "%s.deploy.yaml", dir);
    h_write_file(path, "agents:\n"
                     "  - {name: s1, program: aos-test-agent, args: [steps, \"100000\", \"30\"], "
                     "model: sim/sim-1}\n"
                     "  - {name: s2, program: aos-test-agent, args: [steps, \"100000\", \"30\"], "
                     "model: sim/sim-1}\n"
                     "  - {name: s3, program: aos-test-agent, args: [steps, \"100000\", \"30\"], "
                     "model: sim/sim-1}\n");
    const char *ap[] = {"apply", "-f", path, NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, ap), 0);
    const char *ps[] = {"ps", "--json", NULL};
    int running = 0;
    for (int i = 0; i < 100 && running < 3; i++) {
        assert_int_equal(h_aosctl(h, out, sizeof out, ps), 0);
        running = 0;
        for (char *p = out; (p = strstr(p, "\"state\":\"running\"")); p++)
            running++;
        if (running < 3)
            sleep_ms(100);
    }
    assert_int_equal(running, 3);
    sleep_ms(300); /* a few steps each */
    const char *sd[] = {"shutdown", "--timeout", "20", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, sd), 0);
    assert_non_null(strstr(out, "stopped in"));
    int stopping = 0;
    while (recv_msg(fd, m, sizeof m, 200))
        stopping += strstr(m, "STOPPING=1") != NULL;
    assert_true(stopping >= 1);
    char kept[128];
    h_wait_gone(h, 30000, kept, sizeof kept); /* exit 0, nothing of it left running */
    for (int a = 1; a <= 3; a++) { /* each heard the stop at a step boundary and finished */
        snprintf(path, sizeof path, "%s/agent-logs/s%d", kept, a);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        size_t n = fread(out, 1, sizeof out - 1, f);
        fclose(f);
        out[n] = 0;
        assert_non_null(strstr(out, ": stop\n"));
    }
    close(fd);
    unlink(sa.sun_path);
    snprintf(path, sizeof path, "%s.deploy.yaml", dir);
    unlink(path);
    h_remove_dir(kept);
}

/* The unit file as the package installs it, checked by systemd's own verifier where
 * systemd is there (its ExecStart pointed at this build's aosd). */
static void the_unit_file_verifies(void **st)
{
    (void)st;
    if (access("/usr/bin/systemd-analyze", X_OK) != 0) {
        print_message("skipped: no systemd-analyze here\n");
        skip();
    }
    char cmd[2048];
    char tmp[] = "/tmp/it-ops-unit-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    snprintf(cmd, sizeof cmd, "sed 's#/usr/bin/aosd#%saosd#' '%s' > %s/aosd.service && "
             "systemd-analyze verify --man=no %s/aosd.service", h_bin(""), AOS_SOURCE_DIR
             "/tools/systemd/aosd.service", tmp, tmp);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_unit_file_verifies),
        cmocka_unit_test(under_systemd_ready_watchdog_and_shutdown_at_step_boundaries),
        cmocka_unit_test(a_full_disk_refuses_writes_serves_reads_and_heals),
        cmocka_unit_test(the_log_rotates_by_size_and_aosctl_logs_reads_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
