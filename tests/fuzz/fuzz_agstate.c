/* libFuzzer target for the agents' state records (kernel/agstate.c): any stored value must
 * decode or be refused without a crash, and one that decodes must come back the same through
 * agst_encode. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    agst a, b;
    char why[256];
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
