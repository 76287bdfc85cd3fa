/* aos-tool's configuration as aosd packs it: the descriptor files read from DATA/tools/,
 * merged with the tool part of aos.yaml. */
#include "toolcfg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tool.pb-c.h"

static int yaml_name(const char *n)
{
    size_t l = strlen(n);
    return n[0] != '.' && l < 200 &&
           ((l > 5 && !strcmp(n + l - 5, ".yaml")) || (l > 4 && !strcmp(n + l - 4, ".yml")));
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

uint8_t *toolcfg_pack(int datadir_fd, const uint8_t *extra, size_t extra_len, size_t *len)
{
    Aos__Tool__Config *base = NULL;
    Aos__Tool__Config empty = AOS__TOOL__CONFIG__INIT;
    if (extra && extra_len)
        base = aos__tool__config__unpack(NULL, extra_len, extra);
    Aos__Tool__Config c = base ? *base : empty;
    Aos__Tool__DescriptorFile files[TOOLCFG_FILES_MAX], *fp[TOOLCFG_FILES_MAX];
    char *names[TOOLCFG_FILES_MAX], *texts[TOOLCFG_FILES_MAX];
    char notes_buf[16][320];
    char *notes[16 + 1];
    size_t nf = 0, nn = 0, nnames = 0;
    int dfd = openat(datadir_fd, "tools", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (dfd >= 0 && !d)
        close(dfd);
    if (!d && errno != ENOENT && nn < 16)
        snprintf(notes_buf[nn], sizeof notes_buf[nn], "DATA/tools: %s", strerror(errno)),
            notes[nn] = notes_buf[nn], nn++;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!yaml_name(e->d_name))
            continue;
        if (nnames == TOOLCFG_FILES_MAX) {
            if (nn < 16) {
                snprintf(notes_buf[nn], sizeof notes_buf[nn], "DATA/tools: more than %u "
                         "descriptor files; the rest are not read", TOOLCFG_FILES_MAX);
                notes[nn] = notes_buf[nn];
                nn++;
            }
            break;
        }
        if (!(names[nnames] = strdup(e->d_name)))
            break;
        nnames++;
    }
    /* in name order, so that which of two same-named tools wins does not depend on the
     * directory's hash order */
    qsort(names, nnames, sizeof names[0], by_name);
    for (size_t i = 0; i < nnames; i++) {
        const char *why = NULL;
        char *text = NULL;
        int fd = openat(dirfd(d), names[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd < 0)
            why = strerror(errno);
        else if (fstat(fd, &st) || !S_ISREG(st.st_mode))
            why = "not a regular file";
        else if (st.st_size > (off_t)TOOLCFG_FILE_MAX)
            why = "larger than 64 KiB";
        else if (!(text = malloc((size_t)st.st_size + 1)))
            why = "out of memory";
        else {
            ssize_t r = read(fd, text, (size_t)st.st_size);
            if (r != (ssize_t)st.st_size) {
                why = r < 0 ? strerror(errno) : "short read";
                free(text);
                text = NULL;
            }
        }
        if (fd >= 0)
            close(fd);
        if (why) {
            if (nn < 16) {
                snprintf(notes_buf[nn], sizeof notes_buf[nn], "DATA/tools/%s: %s", names[i],
                         why);
                notes[nn] = notes_buf[nn];
                nn++;
            }
            continue;
        }
        Aos__Tool__DescriptorFile df = AOS__TOOL__DESCRIPTOR_FILE__INIT;
        df.file.data = (uint8_t *)names[i];
        df.file.len = strlen(names[i]);
        df.yaml.data = (uint8_t *)text;
        df.yaml.len = (size_t)st.st_size;
        texts[nf] = text;
        files[nf] = df;
        fp[nf] = &files[nf];
        nf++;
    }
    if (d)
        closedir(d);
    c.n_descriptors = nf;
    c.descriptors = fp;
    /* notes: aos.yaml's first, then ours */
    ProtobufCBinaryData nb[16 + 64];
    size_t total_notes = 0;
    for (size_t i = 0; base && i < base->n_notes && total_notes < 64; i++)
        nb[total_notes++] = base->notes[i];
    for (size_t i = 0; i < nn; i++)
        nb[total_notes++] = (ProtobufCBinaryData){strlen(notes[i]), (uint8_t *)notes[i]};
    c.n_notes = total_notes;
    c.notes = nb;
    size_t n = aos__tool__config__get_packed_size(&c);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf)
        aos__tool__config__pack(&c, buf);
    *len = n;
    for (size_t i = 0; i < nf; i++)
        free(texts[i]);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    if (base)
        aos__tool__config__free_unpacked(base, NULL);
    return buf;
}
