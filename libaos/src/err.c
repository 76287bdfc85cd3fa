/* aos_strerror and friends, generated from the X-macro table in aos/err.h.
 * One switch per accessor keeps lookups O(1) and the table the single source. */
#include "aos/err.h"

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
