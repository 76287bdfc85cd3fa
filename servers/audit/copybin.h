/* The parser of one message of PostgreSQL's COPY ... TO STDOUT (FORMAT binary) stream, as
 * audit.verify reads its tables: pure code over untrusted bytes, so the fuzzer reaches it. */
#ifndef AUDIT_COPYBIN_H
#define AUDIT_COPYBIN_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

/* One CopyData message m[0..n) (PostgreSQL sends one per row, the stream's 19-byte header
 * before the first row, the trailer (a field count of -1) as a message of its own). *header
 * is 0 until the header was read (set to 1 then). A row of exactly want fields (at most
 * COPYBIN_FIELDS_MAX): f[i] points into m, fl[i] is its length (-1 for NULL): AOS_OK. The
 * trailer: AOS_ERR_NOT_FOUND. Anything else (a bad header, a length past the message, bytes
 * left over, another field count): AOS_ERR_PROTO. Nothing is allocated. */
#define COPYBIN_FIELDS_MAX 32
aos_err copybin_row(const uint8_t *m, size_t n, int *header, int want, const uint8_t **f,
                    int32_t *fl);

#endif
