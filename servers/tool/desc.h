/* aos-tool's tool descriptors: one YAML file parsed and checked into a desc, the built-ins,
 * argv built from validated arguments, and the catalogue rendered for a model. */
#ifndef AOS_TOOL_DESC_H
#define AOS_TOOL_DESC_H

#include <jansson.h>
#include <stddef.h>

#include "aos/err.h"
#include "jschema.h"

/* A descriptor (every key but name, summary and args optional; any other key is refused
 * with line:column):
 *   name: grep                      # [a-z][a-z0-9_.-]{0,63}
 *   summary: search files           # one line, at most 200 bytes
 *   args: {type: object, ...}       # a JSON Schema (jschema.h) written as YAML
 *   output: {format: json|text, schema: ...}   # schema only with json; default text
 *   argv: [grep, -e, "{pattern}", "[-i {ignore_case}]", --, "{path}"]
 *   exit_codes: {2: usage}          # exit code 1..255 -> aos error name (not ok)
 *   limits: {time_ms: 30000, output_bytes: 1048576, memory_mb: 512, processes: 64}
 *   network: false
 *   builtin: false                  # true: aos-tool runs it itself, argv must be absent
 *   stdin: content                  # a string argument fed on stdin instead of argv
 *
 * argv syntax. Each list item is one template; "{name}" is replaced by argument name's
 * value, and the item stays ONE argv element whatever the value holds (spaces, ";",
 * "$(...)", a leading "-"): nothing is ever split or given to a shell. "{{" and "}}" are
 * literal braces. An item written "[w1 w2 ...]" is an optional group: its words (split on
 * spaces in the descriptor, never in values) are emitted only when every argument they
 * name is present and neither null nor false. A word that is exactly "{flag}" naming a
 * boolean argument is the group's condition and emits nothing, so "[-i {ignore_case}]"
 * gives "-i" when ignore_case is true. Outside groups a placeholder must name a required
 * argument. Values: strings as they are (a NUL byte is refused), integers and numbers in
 * decimal, booleans "true"/"false"; arrays and objects are refused. Names must be
 * properties of args. */

#define DESC_YAML_MAX (64u * 1024u) /* bytes of one descriptor */
#define DESC_ARGV_MAX 256u          /* argv elements */
#define DESC_ARGV_BYTES (1u << 20)  /* all argv strings together */

typedef struct desc desc;

typedef enum { DESC_OUT_TEXT, DESC_OUT_JSON } desc_out_format;

typedef struct {
    unsigned time_ms, memory_mb, processes;
    size_t output_bytes;
} desc_limits;

typedef enum { DESC_SCHEMA_OPENAI, DESC_SCHEMA_ANTHROPIC, DESC_CLI } desc_render_format;

/* Parses one descriptor of len bytes; file names it in messages ("file:line:col: ...").
 * *out is the caller's, freed with desc_free; NULL on error (AOS_ERR_USAGE with where and
 * why, AOS_ERR_TOO_BIG, AOS_ERR_NOMEM). */
aos_err desc_parse(const char *file, const char *yaml, size_t len, desc **out, char *why,
                   size_t whylen);
void desc_free(desc *d); /* NULL is fine */

/* The built-ins (sh, cat, ls, grep, write_file, http_get), parsed by desc_parse from YAML
 * compiled into the library. *out is a malloc'd array of *n descs, freed with
 * desc_free_all. */
aos_err desc_builtins(desc ***out, size_t *n, char *why, size_t whylen);
void desc_free_all(desc **d, size_t n);

/* Accessors: strings and json are borrowed from d and live as long as it. */
const char *desc_name(const desc *d);
const char *desc_summary(const desc *d);
const json_t *desc_args_schema(const desc *d);
const jschema *desc_args_validator(const desc *d);
desc_out_format desc_output_format(const desc *d);
const jschema *desc_output_validator(const desc *d); /* NULL: none */
desc_limits desc_get_limits(const desc *d);
int desc_network(const desc *d);
int desc_builtin(const desc *d);
/* The string argument the tool reads on stdin (descriptor key "stdin"), NULL: none. */
const char *desc_stdin_arg(const desc *d);
/* The aos error an exit code stands for, or AOS_OK when it is the tool's own result. */
aos_err desc_exit_error(const desc *d, int code);

/* Validates args against the schema, then builds the NULL-terminated argv. *argv is the
 * caller's, freed with desc_argv_free. AOS_ERR_USAGE for bad args or a builtin (no
 * argv), AOS_ERR_TOO_BIG past DESC_ARGV_MAX/BYTES. */
aos_err desc_argv(const desc *d, const json_t *args, char ***argv, char *why, size_t whylen);
void desc_argv_free(char **argv);

/* A tool's name as the OpenAI and Anthropic formats allow it ([a-zA-Z0-9_-], at most 64):
 * each '.' becomes "__" ("mcp.fs.read" -> "mcp__fs__read"; aos names hold no "__" of their
 * own at a dot's place, so a caller maps a model's call back by the reverse). out gets at
 * most cap-1 bytes. */
void desc_wire_name(const char *name, char *out, size_t cap);

/* Renders n descs: OpenAI's tools array, Anthropic's tools array (JSON text, names by
 * desc_wire_name), or one usage line per tool ("grep PATTERN PATH [--ignore-case]  -
 * search files"). *out is malloc'd, the caller frees it with free. */
aos_err desc_render(const desc *const *descs, size_t n, desc_render_format fmt, char **out,
                    char *why, size_t whylen);

#endif
