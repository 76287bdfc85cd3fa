/* libFuzzer target for the agents' state and run records (kernel/agstate.c): any stored value
 * must decode or be refused without a crash; a state record that decodes comes back the same
 * through agst_encode, a run record has a valid id, state and reason. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agstate.h"
#include "aos/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agst a, b;
    agst_runrec rr;
    char why[256];
    if (agst_runrec_decode(data, size, &rr, why, sizeof why) == AOS_OK &&
        (strncmp(rr.run, "r-", 2) || rr.state < 0 || rr.state > 3 ||
         strlen(rr.reason) >= AGST_RUNREC_REASON_MAX ||
         !aos_utf8_valid(rr.reason, strlen(rr.reason)))) {
        fprintf(stderr, "fuzz_agstate: a run record decoded out of its bounds\n");
        abort();
    }
    if (agst_decode(data, size, &a, why, sizeof why) != AOS_OK)
        return 0;
    char *j = agst_encode(&a);
    if (!j) {
        fprintf(stderr, "fuzz_agstate: a decoded record does not encode\n");
        abort();
    }
    if (agst_decode((const uint8_t *)j, strlen(j), &b, why, sizeof why) != AOS_OK ||
        a.state != b.state || strcmp(a.reason, b.reason) || strcmp(a.stopped, b.stopped) ||
        a.restarts != b.restarts || a.at_ms != b.at_ms) {
        fprintf(stderr, "fuzz_agstate: the record changed through its JSON: %s (%s)\n", j, why);
        abort();
    }
    free(j);
    return 0;
}
