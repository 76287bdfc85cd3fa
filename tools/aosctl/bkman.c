/* The backup manifest (manifest.json) as aosctl restore reads it: untrusted input, every
 * field checked before a path in it is opened or a mode or owner applied. */
#include "bkman.h"

#include <stdio.h>
#include <string.h>

/* A manifest path: relative, '/'-separated names, none empty, "." or "..". */
int bkm_path_ok(const char *p)
{
    if (!p || !*p || *p == '/' || strlen(p) >= BKM_PATH_MAX - 64)
        return 0;
    const char *s = p;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return 0;
        s += n;
        if (*s == '/')
            s++;
        else
            break;
    }
    return p[strlen(p) - 1] != '/';
}

int bkm_entry_get(json_t *e, bkm_entry *r, char *why, size_t whylen, size_t i)
{
    json_t *sz = json_object_get(e, "size");
    *r = (bkm_entry){json_string_value(json_object_get(e, "path")),
                json_string_value(json_object_get(e, "type")),
                json_string_value(json_object_get(e, "owner")),
                json_string_value(json_object_get(e, "group")),
                json_string_value(json_object_get(e, "blake2b")),
                (int)json_integer_value(json_object_get(e, "mode")),
                json_is_integer(sz) ? (uint64_t)json_integer_value(sz) : 0};
    int isfile = r->type && !strcmp(r->type, "file");
    if (!json_is_object(e) || !bkm_path_ok(r->path) || !r->type || !r->owner || !r->group ||
        (!isfile && strcmp(r->type, "dir")) || r->mode < 0 || r->mode > 07777 ||
        (isfile && (!r->hash || strlen(r->hash) != 2 * BKM_HASH_LEN || !json_is_integer(sz) ||
                    json_integer_value(sz) < 0))) {
        snprintf(why, whylen, "%s: entry %zu (%s) is malformed", BKM_FILE, i,
                 bkm_path_ok(r->path) ? r->path : "a bad path");
        return -1;
    }
    return 0;
}

/* Where an entry's copy is in the backup: the cluster's as pg/..., the rest files/... */
void bkm_backup_path(const bkm_entry *r, char *out, size_t cap)
{
    if (!strcmp(r->owner, "postgres") && !strcmp(r->group, "postgres") &&
        (!strncmp(r->path, "pg/", 3) || !strcmp(r->path, "pg")))
        snprintf(out, cap, "%s", r->path);
    else
        snprintf(out, cap, "files/%s", r->path);
}

int bkm_is_pg(const bkm_entry *r)
{
    return !strcmp(r->owner, "postgres") && (!strncmp(r->path, "pg/", 3) || !strcmp(r->path, "pg"));
}

/* A user or group name as useradd makes them, or a number. */
static int name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 32 || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return 0;
    return 1;
}

int bkm_check(json_t *m, char *why, size_t whylen)
{
    if (!json_is_object(m)) {
        snprintf(why, whylen, "not a JSON object");
        return -1;
    }
    json_t *fmt = json_object_get(m, "format"), *files = json_object_get(m, "files");
    const char *pgmode = json_string_value(json_object_get(m, "postgres"));
    const char *pg_owner = json_string_value(json_object_get(m, "pg_owner"));
    if (!json_is_integer(fmt) || json_integer_value(fmt) < 1 ||
        json_integer_value(fmt) > BKM_FORMAT) {
        snprintf(why, whylen, "backup format %lld; this aosctl reads formats 1 to %d",
                 (long long)json_integer_value(fmt), BKM_FORMAT);
        return -1;
    }
    int ext = pgmode && !strcmp(pgmode, "external");
    if (!json_is_array(files) || json_array_size(files) > BKM_FILES_MAX || !pgmode ||
        (!ext && (strcmp(pgmode, "pg_basebackup") || !name_ok(pg_owner)))) {
        snprintf(why, whylen, "no file list (at most %d entries), or no postgres and pg_owner",
                 BKM_FILES_MAX);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(files); i++) {
        bkm_entry r;
        if (bkm_entry_get(json_array_get(files, i), &r, why, whylen, i))
            return -1;
        if (!name_ok(r.owner) || !name_ok(r.group) || (ext && bkm_is_pg(&r)) ||
            (!bkm_is_pg(&r) && (!strcmp(r.path, "pg") || !strncmp(r.path, "pg/", 3)))) {
            snprintf(why, whylen, "entry %zu (%s): a bad owner, group or place", i, r.path);
            return -1;
        }
    }
    return 0;
}
