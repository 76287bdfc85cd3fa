/* libFuzzer target for aosctl restore's manifest reader: bkm_check on any bytes must not
 * crash, and a manifest it accepts never names a path outside the backup or the new dir. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bkman.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what, const char *path)
{
    fprintf(stderr, "fuzz_bkman: %s: %s\n", what, path);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *m = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!m)
        return 0;
    char why[400];
    if (bkm_check(m, why, sizeof why) == 0) {
        json_t *files = json_object_get(m, "files");
        for (size_t i = 0; i < json_array_size(files); i++) {
            bkm_entry r;
            if (bkm_entry_get(json_array_get(files, i), &r, why, sizeof why, i))
                broken("an entry of an accepted manifest is refused", why);
            char bp[BKM_PATH_MAX + 16];
            bkm_backup_path(&r, bp, sizeof bp);
            size_t n = strlen(r.path);
            if (r.path[0] == '/' || !strcmp(r.path, "..") || !strncmp(r.path, "../", 3) ||
                strstr(r.path, "/../") || (n >= 3 && !strcmp(r.path + n - 3, "/..")) ||
                strstr(r.path, "//") || strchr(r.path, '\n'))
                broken("a path leaves its root", r.path);
            if (strncmp(bp, "pg", 2) && strncmp(bp, "files/", 6))
                broken("a copy outside pg/ and files/", bp);
            if (r.mode < 0 || r.mode > 07777)
                broken("a mode out of range", r.path);
        }
    }
    json_decref(m);
    return 0;
}
