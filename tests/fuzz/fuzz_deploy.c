/* libFuzzer target for the deployment file: dep_parse, dep_agent_from_json and cron_parse on
 * any bytes must not crash, and every agent a file gives must come back whole through its
 * canonical JSON (the first byte picks the target). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deploy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_deploy: %s\n%s\n", what, detail ? detail : "");
    abort();
}

/* Knows every name of an even length: both answers get their turn. */
static int known(void *arg, const char *kind, const char *name)
{
    (void)arg;
    (void)kind;
    return strlen(name) % 2 == 0;
}

static void round_trip(const dep_agent *a)
{
    char why[512];
    char *j = dep_agent_json(a);
    if (!j)
        broken("no JSON for an agent", a->name);
    dep_agent *b = NULL;
    if (dep_agent_from_json(j, strlen(j), &b, why, sizeof why) != AOS_OK)
        broken(why, j);
    const char *f[16];
    if (dep_agent_diff(a, b, f, 16) != 0)
        broken("the JSON gave another agent", j);
    char *j2 = dep_agent_json(b);
    if (!j2 || strcmp(j, j2))
        broken("the JSON is not canonical", j);
    dep_agent *c = dep_agent_dup(b);
    if (!c || dep_agent_diff(b, c, f, 16) != 0)
        broken("a copy differs", j);
    if (a->cron && cron_next(&a->cron_parsed, 1704067200) < 0)
        broken("cron_next went negative", a->cron);
    dep_agent_free(c);
    dep_agent_free(b);
    free(j2);
    free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    char why[512];
    switch (data[0] % 4) {
    case 0:
    case 1: {
        dep *p = NULL;
        if (dep_parse(d, n, "fuzz.yaml", data[0] % 4 ? known : NULL, NULL, &p, why,
                      sizeof why) == AOS_OK) {
            for (size_t i = 0; i < dep_nagents(p); i++)
                round_trip(dep_agent_at(p, i));
            dep_free(p);
        } else if (p) {
            broken("a refusal left a file", why);
        }
        break;
    }
    case 2: {
        dep_agent *a = NULL;
        if (dep_agent_from_json(d, n, &a, why, sizeof why) == AOS_OK) {
            round_trip(a);
            dep_agent_free(a);
        }
        break;
    }
    default: {
        char text[CRON_TEXT_MAX + 2];
        size_t k = n < sizeof text - 1 ? n : sizeof text - 1;
        memcpy(text, d, k);
        text[k] = 0;
        cron_spec c;
        if (cron_parse(text, &c, why, sizeof why) == AOS_OK) {
            int64_t t = cron_next(&c, 1704067200);
            if (t != 0 && (t <= 1704067200 || t % 60))
                broken("cron_next is not a later minute", text);
        }
        uint64_t ms;
        dep_duration_ms(text, &ms, why, sizeof why);
        break;
    }
    }
    return 0;
}
