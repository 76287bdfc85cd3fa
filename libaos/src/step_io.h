/* The seam under libaos's durable steps: the six calls step.c makes (a syscall, kv get/
 * put/delete, step log read/append) and its clock, so the replay logic is unit-tested. */
#ifndef AOS_STEP_IO_H
#define AOS_STEP_IO_H

#include "aos/step.h"
#include "aos/storage.h"

typedef struct step_io {
    void *arg;
    aos_err (*call)(void *arg, const aos_call_opts *o, const char *method, const void *req,
                    size_t len, aos_reply *r);
    /* *v malloc'd (caller frees), NUL after *n */
    aos_err (*kv_get)(void *arg, const aos_call_opts *o, const char *key, uint8_t **v,
                      size_t *n, char *why, size_t whylen);
    /* create_only: CONFLICT when the key exists */
    aos_err (*kv_put)(void *arg, const aos_call_opts *o, const char *key, const void *v,
                      size_t n, int create_only, char *why, size_t whylen);
    aos_err (*kv_delete)(void *arg, const aos_call_opts *o, const char *key, char *why,
                         size_t whylen);
    aos_err (*log_read)(void *arg, const aos_call_opts *o, const char *run, uint64_t from,
                        aos_step_page **out, char *why, size_t whylen);
    aos_err (*log_append)(void *arg, const aos_call_opts *o, const char *run, uint64_t step,
                          const char *kind, const void *data, size_t len, char *why,
                          size_t whylen);
    uint64_t (*now_ms)(void *arg);   /* monotonic */
    uint64_t (*wall_ms)(void *arg);  /* for the records */
    void (*sleep_ms)(void *arg, uint32_t ms);
} step_io;

/* aos_run_open over io (copied). */
aos_err step_run_open_io(const step_io *io, const char *agent_id, int fresh, aos_run **out,
                         int *resumed, char *why, size_t whylen);

/* The encoding of an outcome in the log: version byte 1, status (4 bytes, big-endian),
 * the error text's length (2 bytes) and text, then the reply's payload. */
int step_outcome_decode(const uint8_t *d, size_t n, aos_reply *r);

#endif
