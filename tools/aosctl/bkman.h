/* The backup manifest's reader: what aosctl restore trusts of manifest.json only after
 * these checks (relative paths without "..", modes, owners, checksums' form). */
#ifndef AOSCTL_BKMAN_H
#define AOSCTL_BKMAN_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define BKM_FILE "manifest.json"
#define BKM_FORMAT 1
#define BKM_FILES_MAX 1000000
#define BKM_HASH_LEN 32 /* BLAKE2b-256 */
#define BKM_PATH_MAX 4096

/* One entry of "files"; the strings are the JSON document's (valid while it lives). */
typedef struct bkm_entry {
    const char *path, *type, *owner, *group, *hash;
    int mode;
    uint64_t size;
} bkm_entry;

/* A relative path of '/'-separated names, none empty, "." or "..", no control bytes. */
int bkm_path_ok(const char *p);
/* Entry i of "files" into r: 0, or -1 with why. */
int bkm_entry_get(json_t *e, bkm_entry *r, char *why, size_t whylen, size_t i);
/* Where the entry's copy lies in the backup: pg/... for the cluster, files/... else. */
void bkm_backup_path(const bkm_entry *r, char *out, size_t cap);
/* The entry is the cluster's (restored as PostgreSQL's uid). */
int bkm_is_pg(const bkm_entry *r);
/* The whole manifest: format, mode, every entry. 0, or -1 with why. */
int bkm_check(json_t *m, char *why, size_t whylen);

#endif
