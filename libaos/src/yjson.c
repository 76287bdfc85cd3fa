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

/* ---- loading a file safely ------------------------------------------------------------ */

static void syntax_error(const char *file, const yaml_parser_t *p, char *why, size_t whylen)
{
    const yaml_mark_t *m = &p->problem_mark;
    if (p->context)
        aos_say(why, whylen, "%s:%zu:%zu: not valid YAML: %s (%s, line %zu)", file,
                m->line + 1, m->column + 1, p->problem ? p->problem : "syntax error",
                p->context, p->context_mark.line + 1);
    else
        aos_say(why, whylen, "%s:%zu:%zu: not valid YAML: %s", file, m->line + 1,
                m->column + 1, p->problem ? p->problem : "syntax error");
}

/* Before building the tree (libyaml's loader recurses): no aliases or anchors, one
 * document, bounded nesting. */
static aos_err prescan(const char *file, const char *buf, size_t len, unsigned depth_max,
                       char *why, size_t whylen)
{
    yaml_parser_t p;
    yaml_event_t ev;
    if (!yaml_parser_initialize(&p)) {
        aos_say(why, whylen, "%s: out of memory", file);
        return AOS_ERR_NOMEM;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    aos_err rc = AOS_OK;
    unsigned depth = 0, docs = 0;
    for (int done = 0; !done && rc == AOS_OK;) {
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(file, &p, why, whylen);
            rc = p.error == YAML_MEMORY_ERROR ? AOS_ERR_NOMEM : AOS_ERR_USAGE;
            break;
        }
        const yaml_mark_t *m = &ev.start_mark;
        const yaml_char_t *anchor = NULL;
        switch (ev.type) {
        case YAML_ALIAS_EVENT:
            aos_say(why, whylen, "%s:%zu:%zu: YAML aliases (*name) are not accepted: write "
                    "the value out", file, m->line + 1, m->column + 1);
            rc = AOS_ERR_USAGE;
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            anchor = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                          : ev.data.mapping_start.anchor;
            if (++depth > depth_max) {
                aos_say(why, whylen, "%s:%zu:%zu: nested more than %u levels deep", file,
                        m->line + 1, m->column + 1, depth_max);
                rc = AOS_ERR_TOO_BIG;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                aos_say(why, whylen, "%s:%zu:%zu: a second YAML document: the file holds one",
                        file, m->line + 1, m->column + 1);
                rc = AOS_ERR_USAGE;
            }
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        default:
            break;
        }
        if (anchor && rc == AOS_OK) {
            aos_say(why, whylen, "%s:%zu:%zu: YAML anchors (&name) are not accepted", file,
                    m->line + 1, m->column + 1);
            rc = AOS_ERR_USAGE;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

aos_err aos_yaml_load(const char *file, const char *buf, size_t len, unsigned depth_max,
                      yaml_document_t *doc, char *why, size_t whylen)
{
    aos_err rc = prescan(file, buf, len, depth_max, why, whylen);
    if (rc)
        return rc;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        aos_say(why, whylen, "%s: out of memory", file);
        return AOS_ERR_NOMEM;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&p, doc)) {
        syntax_error(file, &p, why, whylen);
        rc = p.error == YAML_MEMORY_ERROR ? AOS_ERR_NOMEM : AOS_ERR_USAGE;
    }
    yaml_parser_delete(&p);
    return rc;
}
