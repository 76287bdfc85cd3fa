/* What aosd can see of a child's confinement from outside, in /proc/<pid>: its uid,
 * capabilities, no_new_privs, seccomp, namespaces and cwd. Measured, not claimed. */
#ifndef AOS_PROCVIEW_H
#define AOS_PROCVIEW_H

#include <stdint.h>
#include <sys/types.h>

typedef struct pv_info {
    int ok;                   /* 0: the process was gone or unreadable */
    uid_t uid;                /* real uid */
    uint64_t cap_bnd, cap_eff;
    int no_new_privs;
    int seccomp;              /* 0 off, 1 strict, 2 filter */
    int mount_ns, net_ns, user_ns; /* 1: differs from aosd's own */
    char cwd[256];
    char cgroup[256];         /* its cgroup v2 path ("0::" line of /proc/<pid>/cgroup) */
} pv_info;

/* Read pid's view. Never fails: out->ok says whether it could be read. */
void pv_read(pid_t pid, pv_info *out);

/* pid's parent and state letter from /proc/<pid>/stat (the name may hold spaces and
 * parentheses: the fields after its last ')' are read). 0 when pid is gone or unreadable. */
pid_t pv_ppid(pid_t pid, char *state);

/* 1 when no thread of pid can run: each one in /proc/<pid>/task is stopped ('T', 't'), a
 * zombie, or the process is gone; 0 while one has still to take its stop. A SIGSTOP
 * stops a process only once each of its threads is next scheduled: kill() returns long
 * before that on a loaded machine, and a thread that was not picked to take the signal
 * runs on until the one that was has started the group stop. */
int pv_stopped(pid_t pid);

#endif
