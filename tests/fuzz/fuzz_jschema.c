/* libFuzzer target for aos-tool's schema validator and descriptors: "schema NUL value"
 * compiled and validated, or (after a "#desc\n" line) a descriptor parsed and rendered. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "desc.h"
#include "jschema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_jschema: %s\n", what);
    abort();
}

static void check_why(const char *why, size_t cap)
{
    if (!memchr(why, 0, cap))
        broken("message not NUL-terminated");
}

static void fuzz_desc(const char *text, size_t len)
{
    char why[256];
    desc *d = NULL;
    aos_err rc = desc_parse("fuzz", text, len, &d, why, sizeof why);
    check_why(why, sizeof why);
    if (rc != AOS_OK) {
        if (d)
            broken("a refused descriptor left a desc");
        return;
    }
    const desc *one[] = {d};
    for (int f = DESC_SCHEMA_OPENAI; f <= DESC_CLI; f++) {
        char *out = NULL;
        if (desc_render(one, 1, (desc_render_format)f, &out, why, sizeof why) == AOS_OK &&
            f != DESC_CLI) {
            json_t *j = json_loads(out, 0, NULL);
            if (!j)
                broken("a JSON rendering that does not parse back");
            json_decref(j);
        }
        free(out);
    }
    /* the empty object and the schema's own text as arguments */
    json_t *args = json_object();
    char **argv = NULL;
    if (desc_argv(d, args, &argv, why, sizeof why) == AOS_OK && !desc_builtin(d) && !argv[0])
        broken("an argv without a program");
    desc_argv_free(argv);
    json_decref(args);
    desc_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 6 && !memcmp(data, "#desc\n", 6)) {
        fuzz_desc((const char *)data + 6, size - 6);
        return 0;
    }
    const uint8_t *sep = memchr(data, 0, size);
    size_t slen = sep ? (size_t)(sep - data) : size;
    json_t *schema = json_loadb((const char *)data, slen, JSON_DECODE_ANY, NULL);
    if (!schema)
        return 0;
    char why[256];
    jschema *s = NULL;
    aos_err rc = jschema_compile(schema, &s, why, sizeof why);
    check_why(why, sizeof why);
    if (rc == AOS_OK) {
        /* no value given: the schema validates itself */
        json_t *value = sep ? json_loadb((const char *)sep + 1, size - slen - 1,
                                         JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL)
                            : json_incref(schema);
        if (value) {
            rc = jschema_validate(s, value, why, sizeof why);
            check_why(why, sizeof why);
            if (rc != AOS_OK && why[0] != '$')
                broken("a refusal without a JSON path");
            if (jschema_validate(s, value, why, sizeof why) != rc)
                broken("two validations disagree");
        }
        json_decref(value);
    } else if (s) {
        broken("a refused schema left a validator");
    }
    jschema_free(s);
    json_decref(schema);
    return 0;
}
