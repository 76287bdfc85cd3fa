/* aos_strerror and friends, generated from the X-macro table in aos/err.h.
 * One switch per accessor keeps lookups O(1) and the table the single source. */
#include "aos/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *aos_strerror(int err)
{
    switch (err) {
#define X_(name, val, exitc, msg) case val: return msg;
        AOS_ERR_TABLE(X_)
#undef X_
    default: return "unknown error";
    }
}

const char *aos_err_name(int err)
{
    switch (err) {
#define X_(name, val, exitc, msg) case val: return #name;
        AOS_ERR_TABLE(X_)
#undef X_
    default: return "UNKNOWN";
    }
}

int aos_err_exit_code(int err)
{
    switch (err) {
#define X_(name, val, exitc, msg) case val: return exitc;
        AOS_ERR_TABLE(X_)
#undef X_
    default: return 1;
    }
}

int aos_err_valid(int err)
{
    switch (err) {
#define X_(name, val, exitc, msg) case val: return 1;
        AOS_ERR_TABLE(X_)
#undef X_
    default: return 0;
    }
}

void aos_say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}
