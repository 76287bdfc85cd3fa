/* The data dir's layout and ownership: root's own files apart from what each service user
 * may write, an old single-user data dir migrated in place, and the one-aosd lock. */
#ifndef AOS_DATADIR_H
#define AOS_DATADIR_H

#include <stddef.h>
#include <sys/types.h>

#include "aos/err.h"
#include "config.h"

typedef struct datadir {
    int dir;        /* DATA (root 0755 when root) */
    int run;        /* DATA/run: the server links' sockets */
    int etc;        /* DATA/etc: PostgreSQL's auth files */
    int pg;         /* DATA/pg, owned by PostgreSQL's uid (-1 with an external one) */
    int lock;       /* DATA/aosd.lock, flock'd for our lifetime */
    int pg_log;     /* DATA/pg.log, append (-1 with an external PostgreSQL) */
} datadir;

/* The format of the files outside PostgreSQL, kept in DATA/etc/format: raised when a
 * release changes their layout, so an older aosd refuses a data dir it cannot read. A data
 * dir without the file (made before it) is format 1. */
#define DD_FORMAT 1

/* Make or check the layout (see README "Files and users"). pg_uid/pg_gid: PostgreSQL's
 * account; legacy_uid: the single service user of older versions ((uid_t)-1: none).
 * Takes the lock: a second aosd is refused with the holder's pid. */
aos_err dd_open(const kcfg *c, uid_t pg_uid, gid_t pg_gid, uid_t legacy_uid, datadir *d,
                char *why, size_t whylen);

#endif
