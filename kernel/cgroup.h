/* aosd's cgroup v2 delegation (systemd's Delegate= model): aosd moves into a leaf of its own
 * cgroup, enables what controllers it can, and hands a child (aos-tool) a subtree it owns. */
#ifndef AOS_CGROUP_H
#define AOS_CGROUP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aos/err.h"

/* What cg_delegate got. Every field is set in every case, so status can show it as is. */
typedef struct cg_deleg {
    int procs_fd;          /* P/<name>/cgroup.procs, O_WRONLY|O_CLOEXEC, opened by aosd; the
                            * child writes "0" to it after fork, before exec. -1: none */
    int delegated;         /* 1: the directory and its files are owned by the child's uid */
    char path[512];        /* the cgroup's directory, "" when none */
    char controllers[128]; /* its cgroup.controllers (space-separated), "" when none */
    char why[256];         /* always set: "delegated PATH (controllers: ...)" or "none: ..." */
} cg_deleg;

/* Once, at aosd start, before aosd has started any child (a child left in aosd's cgroup
 * keeps controllers from being enabled there). Finds the cgroup2 mount, creates P/aosd,
 * moves aosd into it and enables pids, memory, cpu, io in P where the host lets it (P is
 * aosd's cgroup; P/aos when aosd sits in the host's root cgroup). Never fatal: AOS_OK even
 * when nothing could be done; why says what was done or why not. Called again: no-op. */
aos_err cg_setup(char *why, size_t whylen);

/* Create (or reuse) P/<name> and give it to uid:gid as the kernel's cgroup-v2 delegation
 * document lists (the directory, cgroup.procs, cgroup.threads, cgroup.subtree_control).
 * name: one path component without a dot, not "aosd". The caller owns out->procs_fd.
 * Thread-safe. */
void cg_delegate(const char *name, uid_t uid, gid_t gid, cg_deleg *out);

/* On a host whose pids and memory controllers are still cgroup v1 hierarchies (hybrid
 * layouts), the same for each of those two: P1/<name> below aosd's own cgroup in that
 * hierarchy, made, given to uid:gid (the directory, cgroup.procs and tasks: the child
 * makes and limits its runs' cgroups below), its cgroup.procs opened for the child to
 * join. Only when the unified hierarchy lacks the controller. procs_fd[i] -1: none for
 * that hierarchy (pids, memory). why always set. The caller owns the fds. */
typedef struct cg_deleg_v1 {
    int procs_fd[2];
    char path[2][600];     /* the directories, "" where none */
    char why[256];
} cg_deleg_v1;
void cg_delegate_v1(const char *name, uid_t uid, gid_t gid, const cg_deleg *v2,
                    cg_deleg_v1 *out);

/* An agent's cgroups, NOT delegated (root's files: the agent cannot raise its own limits),
 * with its memory and pids limits (0: not set): B/agents/<name> in cgroup v2 with pids and
 * memory enabled in B/agents; where those controllers are v1 hierarchies (hybrid hosts),
 * <v1 cgroup>/aos-<aosd pid>-agents/<name> in each. fds[0] gets the v2 cgroup.procs,
 * fds[1] and fds[2] the v1 pids and memory ones, each opened O_WRONLY for the spawned child
 * to join (spawn_req.cgroup_fd, cgroup_v1_fd), -1 where none; the caller closes them. why
 * says what was made, or why a limit is missing (the agent then has its rlimits only).
 * Returns how many of the two limits are in place. Thread-safe. */
int cg_agent(const char *name, uint64_t memory_max, uint64_t pids_max, int fds[3], char *why,
             size_t whylen);

/* At aosd exit: remove every cgroup cg_delegate made (with whatever sub-cgroups the
 * child made inside), which works once no process is left in them. why ("" when all went)
 * says what stayed. aosd's own leaf stays: aosd is still in it. */
void cg_teardown(char *why, size_t whylen);

/* The lookup behind cg_setup, a pure function for the unit test: from the text of
 * /proc/self/mountinfo and /proc/self/cgroup, the cgroup2 mount point (mnt), aosd's cgroup
 * below it (rel: "" for the mount's root, else "/a/b") and whether the mount is read-only.
 * AOS_ERR_NOT_FOUND with why when there is no usable cgroup v2. */
aos_err cg_locate(const char *mountinfo, const char *self_cgroup, char *mnt, size_t mntlen,
                  char *rel, size_t rellen, int *readonly, char *why, size_t whylen);

#endif
