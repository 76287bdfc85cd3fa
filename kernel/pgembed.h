/* The embedded PostgreSQL: initdb once into DATA/pg, the postgres command line for the
 * supervisor, its readiness (postmaster.pid says "ready"), and the DSNs servers get. */
#ifndef AOS_PGEMBED_H
#define AOS_PGEMBED_H

#include <stddef.h>

#include "aos/err.h"
#include "config.h"

#define PGEM_ARGV_MAX 24

/* Create and chown what the cluster needs and run initdb if DATA/pg holds none. */
aos_err pgem_init(const kcfg *c, char *why, size_t whylen);
/* The postgres command line; strings live in buf (cap bytes). */
aos_err pgem_argv(const kcfg *c, char *buf, size_t cap, char *argv[PGEM_ARGV_MAX]);
/* 1 when the postmaster of pid says it accepts connections. */
int pgem_ready(const kcfg *c, int pid);
/* The admin conninfo (embedded superuser, or the external DSN). */
void pgem_admin_dsn(const kcfg *c, char *out, size_t cap);
/* The conninfo a server's own role logs in with. */
void pgem_role_dsn(const kcfg *c, const char *role, char *out, size_t cap);

#endif
