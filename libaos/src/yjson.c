/* YAML to JSON with YAML 1.2's core schema for plain scalars; the walk is bounded by a depth
 * cap, every key checked, every string left to jansson's UTF-8 check. */
#include "aos/yjson.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

int aos_yjson_is_null(const yaml_node_t *n)
{
    const char *s = text(n);
    return is_plain(n) && (!s[0] || !strcmp(s, "~") || !strcmp(s, "null") ||
                           !strcmp(s, "Null") || !strcmp(s, "NULL"));
}

int aos_yjson_plain_int(const char *s, size_t len)
{
    size_t i = len && (s[0] == '-' || s[0] == '+');
    if (i == len || len > 19)
        return 0;
    for (; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static json_t *refuse(aos_yjson_err *err, const yaml_node_t *at, aos_err code,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static json_t *refuse(aos_yjson_err *err, const yaml_node_t *at, aos_err code,
                      const char *fmt, ...)
{
    err->at = at;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->what, sizeof err->what, fmt, ap);
    va_end(ap);
    return NULL;
}

static json_t *scalar(const yaml_node_t *n, aos_yjson_err *err)
{
    const char *s = text(n);
    size_t len = n->data.scalar.length;
    json_t *j = NULL;
    if (is_plain(n)) {
        char *end = NULL;
        double d = len && strspn(s, "0123456789.eE+-") == len ? strtod(s, &end) : 0;
        if (aos_yjson_is_null(n))
            j = json_null();
        else if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
            j = json_true();
        else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
            j = json_false();
        else if (aos_yjson_plain_int(s, len))
            j = json_integer(strtoll(s, NULL, 10));
        else if (end && end == s + len && isfinite(d))
            j = json_real(d);
    }
    if (!j && !(j = json_stringn(s, len)))
        return refuse(err, n, AOS_ERR_USAGE, "a string that is not UTF-8");
    return j;
}

static json_t *walk(yaml_document_t *doc, const yaml_node_t *n, unsigned depth,
                    unsigned depth_max, aos_yjson_err *err)
{
    if (!n)
        return refuse(err, n, AOS_ERR_USAGE, "a node that is not there");
    if (depth > depth_max)
        return refuse(err, n, AOS_ERR_TOO_BIG, "nested deeper than %u levels", depth_max);
    if (n->type == YAML_SCALAR_NODE)
        return scalar(n, err);
    json_t *out = n->type == YAML_MAPPING_NODE ? json_object() : json_array();
    if (!out)
        return refuse(err, n, AOS_ERR_NOMEM, "out of memory");
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *i = n->data.sequence.items.start;
             i < n->data.sequence.items.top; i++) {
            json_t *v = walk(doc, yaml_document_get_node(doc, *i), depth + 1, depth_max, err);
            if (v && json_array_append_new(out, v))
                v = refuse(err, n, AOS_ERR_NOMEM, "out of memory");
            if (!v) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const yaml_node_t *v = yaml_document_get_node(doc, p->value);
        json_t *jv = NULL;
        if (!k || k->type != YAML_SCALAR_NODE || strlen(text(k)) != k->data.scalar.length)
            refuse(err, k ? k : n, AOS_ERR_USAGE, "a key must be a string");
        else if (json_object_get(out, text(k)))
            refuse(err, k, AOS_ERR_USAGE, "key '%.64s' given twice", text(k));
        else if ((jv = walk(doc, v, depth + 1, depth_max, err)) &&
                 json_object_set_new(out, text(k), jv)) {
            jv = refuse(err, k, AOS_ERR_USAGE, "a key that is not UTF-8");
        }
        if (!jv) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

json_t *aos_yjson(yaml_document_t *doc, const yaml_node_t *n, unsigned depth_max,
                  aos_yjson_err *err)
{
    memset(err, 0, sizeof *err);
    return walk(doc, n, 0, depth_max, err);
}
