/* The one error table of aos: every function returns an aos_err, and every CLI exit
 * code, wire status and message comes from the X-macro below, so they cannot drift. */
#ifndef AOS_ERR_H
#define AOS_ERR_H

#include <stddef.h>

/* X(NAME, value, cli exit code, short message). Values travel on the wire: never
 * renumber, only append. Exit codes follow DESIGN.md's table. */
#define AOS_ERR_TABLE(X)                                                     \
    X(OK, 0, 0, "ok")                                                        \
    X(INTERNAL, 1, 1, "internal error")                                      \
    X(USAGE, 2, 2, "invalid argument")                                       \
    X(NOT_FOUND, 3, 3, "not found")                                          \
    X(REFUSED, 4, 4, "refused")                                              \
    X(CONFLICT, 5, 5, "conflict")                                            \
    X(UNAVAILABLE, 6, 6, "unavailable, retry later")                         \
    X(TIMEOUT, 7, 7, "timed out")                                            \
    X(NOMEM, 8, 1, "out of memory")                                          \
    X(PROTO, 9, 1, "malformed message")                                      \
    X(TOO_BIG, 10, 2, "too large")                                           \
    X(CANCELLED, 11, 6, "cancelled")                                         \
    X(FAILED, 12, 6, "failed, not restarted")                                \
    X(QUOTA, 13, 4, "quota exceeded")                                        \
    X(IO, 14, 1, "input/output error")                                      \
    X(RATE_LIMITED, 15, 6, "rate limited, retry after the time given")             \
    X(INTERRUPTED, 16, 5, "interrupted: it started, its outcome was never recorded") \
    X(UNAUTHENTICATED, 17, 4, "not authenticated")

typedef enum {
#define AOS_ERR_ENUM_(name, val, exitc, msg) AOS_ERR_##name = val,
    AOS_ERR_TABLE(AOS_ERR_ENUM_)
#undef AOS_ERR_ENUM_
} aos_err;

/* The usual spelling of success. */
#define AOS_OK AOS_ERR_OK

/* Static strings; never NULL, also for values outside the table. */
const char *aos_strerror(int err);
const char *aos_err_name(int err);
/* The CLI exit code for an error (1 for unknown values). */
int aos_err_exit_code(int err);
/* Writes a formatted reason into a caller's (why, whylen) buffer, the way every aos
 * function hands its detailed error message back; does nothing when why is NULL or
 * whylen is 0. */
void aos_say(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Nonzero when err is a value of the table. */
int aos_err_valid(int err);

#endif
