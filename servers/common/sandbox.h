/* Each server's sandbox, applied once after it opened its resources: privilege drop,
 * parent-death signal, rlimits, no_new_privs, and a seccomp allow-list of its own. */
#ifndef AOS_SANDBOX_H
#define AOS_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

#include "aos/err.h"

/* Apply the sandbox of server `name` ("memory", "storage", "tool", "llm", "audit").
 * user: the unprivileged account to drop to when running as root (NULL: stay as is).
 * parent: aosd's pid, checked again after the drop (the death signal is cleared by a
 * uid change, so it is set after it). Any syscall outside the list kills the process
 * (SIGSYS); AOS_SECCOMP_TRAP=1 in the environment reports the syscall number instead. */
aos_err sbx_apply(const char *name, const char *user, pid_t parent, char *why, size_t whylen);

/* Look up user's uid and gid (before the sandbox: it reads /etc/passwd). */
aos_err sbx_lookup_user(const char *user, uid_t *uid, gid_t *gid, char *why, size_t whylen);

#endif
