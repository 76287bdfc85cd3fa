/* In-memory idempotency for one server process: a request id seen again while it runs
 * waits for that run, and one already answered gets its recorded reply, not a second run. */
#ifndef AOS_IDEM_H
#define AOS_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "aos/envelope.h"

typedef struct idem idem;

enum { IDEM_NEW, IDEM_RUNNING, IDEM_DONE };

/* A table of at most `slots` recent requests; replies larger than payload_cap are not
 * kept (their handlers must be idempotent on their own, durably). Caller owns the result. */
idem *idem_new(size_t slots, size_t payload_cap);
void idem_free(idem *t);

/* Claim id for a new run (IDEM_NEW), or say it is IDEM_RUNNING, or IDEM_DONE with the
 * recorded final reply copied out: *payload malloc'd (caller frees), error into err (cap),
 * *parts the number of streamed parts the run sent before it (the parts themselves are
 * not kept: a replay is the final reply alone, whose seq still says how many there were). */
int idem_begin(idem *t, const uint8_t id[AOS_ID_LEN], int *status, char *err, size_t cap,
               uint8_t **payload, size_t *len, uint32_t *parts);
/* Record the outcome of a run that idem_begin claimed. */
void idem_end(idem *t, const uint8_t id[AOS_ID_LEN], int status, const char *err,
              const uint8_t *payload, size_t len, uint32_t parts);

#endif
