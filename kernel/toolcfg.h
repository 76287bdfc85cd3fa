/* What aosd hands aos-tool at each start: the descriptor files of DATA/tools/ as they are
 * (aos-tool parses them: aosd never interprets a tool), with the MCP servers and secrets. */
#ifndef AOS_TOOLCFG_H
#define AOS_TOOLCFG_H

#include <stddef.h>
#include <stdint.h>

#define TOOLCFG_FILES_MAX 256u        /* descriptor files read */
#define TOOLCFG_FILE_MAX (64u << 10)  /* bytes of one (aos-tool's own cap too) */

/* The packed aos.tool.Config: the .yaml files of DATA/tools/ (regular files, no symlinks, each at most
 * TOOLCFG_FILE_MAX; one that cannot be read becomes a note) read through datadir_fd, plus
 * extra (a packed aos.tool.Config of MCP servers and secrets from aos.yaml, or NULL).
 * Returns a malloc'd buffer the caller frees (explicit_bzero first: secrets), *len its
 * size; NULL on no memory. */
uint8_t *toolcfg_pack(int datadir_fd, const uint8_t *extra, size_t extra_len, size_t *len);

#endif
