/* /proc/<pid> readings for aosctl status (see procview.h): the layers of a sandbox as the
 * kernel reports them, so a server that lies in its READY report is still seen. */
#include "procview.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int ns_differs(pid_t pid, const char *ns)
{
    char a[64], b[64];
    struct stat sa, sb;
    snprintf(a, sizeof a, "/proc/%d/ns/%s", (int)pid, ns);
    snprintf(b, sizeof b, "/proc/self/ns/%s", ns);
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return 0;
    return sa.st_ino != sb.st_ino || sa.st_dev != sb.st_dev;
}

void pv_read(pid_t pid, pv_info *out)
{
    memset(out, 0, sizeof *out);
    if (pid <= 0)
        return;
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1
                                                                      : NULL) {
        unsigned long long v;
        unsigned u;
        if (sscanf(line, "Uid: %u", &u) == 1)
            out->uid = u;
        else if (sscanf(line, "CapBnd: %llx", &v) == 1)
            out->cap_bnd = v;
        else if (sscanf(line, "CapEff: %llx", &v) == 1)
            out->cap_eff = v;
        else if (sscanf(line, "NoNewPrivs: %u", &u) == 1)
            out->no_new_privs = (int)u;
        else if (sscanf(line, "Seccomp: %u", &u) == 1)
            out->seccomp = (int)u;
    }
    out->mount_ns = ns_differs(pid, "mnt");
    out->net_ns = ns_differs(pid, "net");
    out->user_ns = ns_differs(pid, "user");
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)pid);
    ssize_t l = readlink(path, out->cwd, sizeof out->cwd - 1);
    out->cwd[l > 0 ? l : 0] = 0;
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = 0;
    char *v2 = !strncmp(buf, "0::", 3) ? buf : strstr(buf, "\n0::");
    if (v2) {
        v2 += v2 == buf ? 3 : 4;
        size_t len = strcspn(v2, "\n");
        snprintf(out->cgroup, sizeof out->cgroup, "%.*s", (int)len, v2);
    }
    out->ok = 1;
}

pid_t pv_ppid(pid_t pid, char *state)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    char st = 0;
    int pp = 0;
    if (!rp || sscanf(rp + 1, " %c %d", &st, &pp) != 2)
        return 0;
    if (state)
        *state = st;
    return (pid_t)pp;
}

int pv_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 1; /* gone: nothing of it runs */
    int all = 1;
    struct dirent *de;
    while (all && (de = readdir(d))) {
        char *end;
        long tid = strtol(de->d_name, &end, 10);
        if (*end || tid <= 0)
            continue;
        char p2[96], buf[512];
        snprintf(p2, sizeof p2, "/proc/%d/task/%ld/stat", (int)pid, tid);
        int fd = open(p2, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* that thread ended meanwhile */
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        char st = rp && rp[1] == ' ' ? rp[2] : '?';
        all = st == 'T' || st == 't' || st == 'Z' || st == 'X';
    }
    closedir(d);
    return all;
}
