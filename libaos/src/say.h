/* libaos-internal: write a formatted reason into a caller's (why, whylen) buffer, the
 * way every aos function hands its detailed error message back. */
#ifndef AOS_SAY_H
#define AOS_SAY_H

#include <stddef.h>

/* Does nothing when why is NULL or whylen is 0. */
void aos_say(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
