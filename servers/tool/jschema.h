/* aos-tool's JSON Schema subset: a schema compiled once into a validator, then tool
 * arguments (and outputs) checked against it; every refusal names the JSON path and why. */
#ifndef AOS_TOOL_JSCHEMA_H
#define AOS_TOOL_JSCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "aos/err.h"

/* Keywords understood: type (a name or an array of names; "integer" also takes a number
 * with no fractional part, as JSON Schema says), properties, required, enum, const,
 * minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, draft 6 style),
 * minLength, maxLength (Unicode code points), pattern (see below), items (one schema),
 * minItems, maxItems, additionalProperties (a boolean or a schema). title, description
 * and default are annotations and ignored. A schema may also be the boolean true (anything)
 * or false (nothing). Any other keyword is refused at compile time, so a typo in a tool's
 * descriptor cannot silently loosen its checks.
 *
 * pattern: JSON Schema means ECMA-262; it is approximated with POSIX extended regular
 * expressions (glibc regcomp): \d and \D outside brackets are translated, a backslash
 * inside a bracket expression and back-references are refused (they mean different things
 * or cost exponential time), and a string holding a NUL byte never matches a pattern. */

#define JSCHEMA_DEPTH_MAX 32u       /* schemas nested in schemas */
#define JSCHEMA_VALUE_DEPTH_MAX 64u /* arrays and objects nested in a value, or in enum/const */
#define JSCHEMA_PATTERN_MAX 1024u   /* bytes of one pattern */

typedef struct jschema jschema;

/* Compiles schema (borrowed: nothing of it is kept) into *out, which the caller frees
 * with jschema_free. AOS_ERR_USAGE names the schema path of the first bad keyword
 * ("$.properties.path: unknown keyword 'typ'"), AOS_ERR_TOO_BIG a schema nested past
 * JSCHEMA_DEPTH_MAX, AOS_ERR_NOMEM; *out is NULL on any error. */
aos_err jschema_compile(const json_t *schema, jschema **out, char *why, size_t whylen);

/* Checks value (borrowed) against s: AOS_OK, or AOS_ERR_USAGE with the path of the first
 * failing value and why ("$.path: expected string, got integer"); a value nested past
 * JSCHEMA_VALUE_DEPTH_MAX (or a cyclic one) is AOS_ERR_TOO_BIG. Works in bounded stack
 * whatever the value; s is not changed, so one validator may serve many threads. */
aos_err jschema_validate(const jschema *s, const json_t *value, char *why, size_t whylen);

/* NULL is fine. */
void jschema_free(jschema *s);

/* Nonzero when v nests arrays and objects more than max levels deep (a scalar is level 0,
 * [] level 1; max is capped at JSCHEMA_VALUE_DEPTH_MAX), or is cyclic; walks with its own
 * bounded stack, never recursion. (Values parsed from text are trees; a value built in
 * code that shares subtrees is walked once per path.) */
int jschema_too_deep(const json_t *v, unsigned max);

#endif
