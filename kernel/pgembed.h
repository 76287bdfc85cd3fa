/* The embedded PostgreSQL: initdb once into DATA/pg as its own uid, peer authentication
 * with a map (each OS user -> its role only), its command line, readiness and a probe. */
#ifndef AOS_PGEMBED_H
#define AOS_PGEMBED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aos/err.h"
#include "config.h"

#define PGEM_ARGV_MAX 32
#define PGEM_SUPERUSER "aos_admin"

/* One line of the ident map: OS user -> database role. */
typedef struct pgem_ident {
    const char *os_user;
    const char *role;
} pgem_ident;

/* Write DATA/etc/pg_hba.conf and pg_ident.conf (etcfd: DATA/etc, root's), keep pgfd
 * (DATA/pg, owned by uid:gid) for readiness checks, and run initdb as uid:gid if DATA/pg
 * holds no cluster yet. log_fd takes initdb's output. */
aos_err pgem_init(const kcfg *c, int etcfd, int pgfd, uid_t uid, gid_t gid, int log_fd,
                  const pgem_ident *map, size_t nmap, char *why, size_t whylen);
/* The postgres command line; strings live in buf (cap bytes). */
aos_err pgem_argv(const kcfg *c, char *buf, size_t cap, char *argv[PGEM_ARGV_MAX]);
/* 1 when the postmaster of pid says it accepts connections. */
int pgem_ready(int pid);
/* The admin conninfo (embedded superuser, or the external DSN). */
void pgem_admin_dsn(const kcfg *c, char *out, size_t cap);
/* The conninfo a server's own role logs in with. */
void pgem_role_dsn(const kcfg *c, const char *role, char *out, size_t cap);

/* Liveness beyond "the process exists": every call past interval_ms sends PostgreSQL's
 * SSLRequest on its socket without blocking and checks the one-byte answer of the last
 * one. Returns 1 while healthy, 0 with health saying why ("not answering for N ms"). */
int pgem_probe(const kcfg *c, uint64_t now_ms, uint64_t interval_ms, uint64_t timeout_ms,
               char *health, size_t cap);
/* Forget the probe in flight (postgres restarted). */
void pgem_probe_reset(void);

#endif
