/* Reading a whole file whose size is unknown until EOF (/proc files report 0), with a cap,
 * for the kernel and the servers alike. */
#ifndef AOS_READALL_H
#define AOS_READALL_H

#include <stddef.h>

/* Read fd to EOF into a NUL-terminated buffer the caller frees; *len (may be NULL) gets
 * the byte count. NULL with errno set on a read error, on no memory (ENOMEM), or when
 * the file holds more than max bytes (EFBIG). fd stays open. */
char *aos_read_all(int fd, size_t max, size_t *len);

#endif
