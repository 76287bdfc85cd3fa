/* Tool descriptors (desc.h): libyaml's tree checked key by key, args turned into JSON and
 * compiled by jschema, argv templates checked once and expanded without any shell. */
#include "desc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "aos/yjson.h"

#define YAML_DEPTH_MAX 72u /* a 32-deep schema needs about twice that in YAML */
#define NAME_CAP 64u
#define SUMMARY_MAX 200u
#define TPL_MAX 1024u      /* bytes of one argv template */
#define CODES_MAX 255u
#define SHOW_MAX 48u

struct desc {
    char *name, *summary;
    json_t *args;
    jschema *argsv;
    desc_out_format fmt;
    jschema *outv;
    char **tpl;
    size_t ntpl;
    aos_err codes[CODES_MAX + 1];
    desc_limits lim;
    int network, builtin;
    char *stdin_arg;   /* the argument fed to the tool's stdin, NULL: none */
};

typedef struct {
    const char *file;
    yaml_document_t *doc;
    char *why;
    size_t whylen;
} ctx;

static aos_err fail(ctx *x, aos_err e, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err fail(ctx *x, aos_err e, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(x->why, x->whylen, "%s:%zu:%zu: %s", x->file, n ? n->start_mark.line + 1 : 1,
             n ? n->start_mark.column + 1 : 1, msg);
    return e;
}

static const char *show(const char *s, char *buf, size_t cap)
{
    size_t i = 0, o = 0;
    for (; s[i] && i < SHOW_MAX && o + 4 < cap; i++)
        buf[o++] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f ? '?' : s[i];
    if (s[i] && o + 4 < cap)
        buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o] = 0;
    return buf;
}

static const char *text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static yaml_node_t *node(ctx *x, int i)
{
    return yaml_document_get_node(x->doc, i);
}

static int is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* Checks that n is a mapping with keys from names only, each once; vals[i] gets each. */
static aos_err keys(ctx *x, const yaml_node_t *n, const char *where,
                    const char *const *names, const yaml_node_t **vals)
{
    size_t nn = 0;
    while (names[nn])
        vals[nn++] = NULL;
    if (n->type != YAML_MAPPING_NODE)
        return fail(x, AOS_ERR_USAGE, n, "%s must be a mapping", where);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = node(x, p->key);
        char b[SHOW_MAX + 8], list[256] = "";
        if (k->type != YAML_SCALAR_NODE)
            return fail(x, AOS_ERR_USAGE, k, "%s: a key must be a word", where);
        size_t i = 0;
        while (i < nn && strcmp(names[i], text(k)))
            i++;
        if (i == nn) {
            size_t used = 0;
            for (size_t j = 0; j < nn && used < sizeof list; j++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                         j ? ", " : "", names[j]);
            return fail(x, AOS_ERR_USAGE, k, "%s: unknown key '%s' (expected one of: %s)",
                        where, show(text(k), b, sizeof b), list);
        }
        if (vals[i])
            return fail(x, AOS_ERR_USAGE, k, "%s: key '%s' given twice", where, names[i]);
        vals[i] = node(x, p->value);
    }
    return AOS_OK;
}

static aos_err get_line(ctx *x, const yaml_node_t *v, const char *what, size_t max,
                        char **out)
{
    if (v->type != YAML_SCALAR_NODE)
        return fail(x, AOS_ERR_USAGE, v, "%s must be a string", what);
    size_t len = v->data.scalar.length;
    if (len == 0 || len > max)
        return fail(x, AOS_ERR_USAGE, v, "%s must be 1 to %zu bytes", what, max);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text(v)[i] < 0x20 || text(v)[i] == 0x7f)
            return fail(x, AOS_ERR_USAGE, v, "%s must be one line of printable text", what);
    if (!(*out = strdup(text(v))))
        return fail(x, AOS_ERR_NOMEM, v, "out of memory");
    return AOS_OK;
}

static aos_err get_bool(ctx *x, const yaml_node_t *v, const char *what, int *out)
{
    if (is_plain(v) && !strcmp(text(v), "true"))
        *out = 1;
    else if (is_plain(v) && !strcmp(text(v), "false"))
        *out = 0;
    else
        return fail(x, AOS_ERR_USAGE, v, "%s must be true or false", what);
    return AOS_OK;
}

static aos_err get_uint(ctx *x, const yaml_node_t *v, const char *what, unsigned long long lo,
                        unsigned long long hi, unsigned long long *out)
{
    if (!is_plain(v) || !aos_yjson_plain_int(text(v), v->data.scalar.length) || text(v)[0] == '-' ||
        text(v)[0] == '+')
        return fail(x, AOS_ERR_USAGE, v, "%s must be a whole number", what);
    *out = strtoull(text(v), NULL, 10);
    if (*out < lo || *out > hi)
        return fail(x, AOS_ERR_USAGE, v, "%s must be %llu to %llu", what, lo, hi);
    return AOS_OK;
}

/* ---- argv templates ------------------------------------------------------------------ */

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

/* Walks one word of a template: literal bytes go to out (when out is set), each
 * placeholder to on_name, which returns its value text or NULL to stop. Returns the
 * word's length, or -1 with *bad set for a syntax error. */
typedef const char *(*name_fn)(void *arg, const char *name, size_t len, size_t *vlen);

static long expand_word(const char *w, size_t len, char *out, size_t cap, name_fn fn,
                        void *arg, const char **bad)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *piece = w + i;
        size_t plen = 1;
        if (w[i] == '{' && i + 1 < len && w[i + 1] == '{') {
            i++;
        } else if (w[i] == '}' && i + 1 < len && w[i + 1] == '}') {
            i++;
        } else if (w[i] == '}') {
            *bad = "a lone '}' (write '}}')";
            return -1;
        } else if (w[i] == '{') {
            size_t j = i + 1;
            while (j < len && name_char(w[j]))
                j++;
            if (j == i + 1 || j >= len || w[j] != '}') {
                *bad = "'{' must open {name} (write '{{' for a brace)";
                return -1;
            }
            piece = fn(arg, w + i + 1, j - i - 1, &plen);
            if (!piece) {
                *bad = NULL;
                return -1;
            }
            i = j;
        }
        if (out) {
            if (o + plen >= cap) {
                *bad = "too long";
                return -1;
            }
            memcpy(out + o, piece, plen);
        }
        o += plen;
    }
    if (out)
        out[o] = 0;
    return (long)o;
}

typedef struct {
    ctx *x;
    const yaml_node_t *at;
    const json_t *props, *required;
    int in_group;
    aos_err rc;
} tcheck;

static const char *check_name(void *arg, const char *name, size_t len, size_t *vlen)
{
    tcheck *t = arg;
    char n[NAME_CAP + 1], b[SHOW_MAX + 8];
    if (len > NAME_CAP) {
        t->rc = fail(t->x, AOS_ERR_USAGE, t->at, "argv: a placeholder name over %u bytes",
                     NAME_CAP);
        return NULL;
    }
    memcpy(n, name, len);
    n[len] = 0;
    if (!json_object_get(t->props, n)) {
        t->rc = fail(t->x, AOS_ERR_USAGE, t->at, "argv: {%s} is not a property of args",
                     show(n, b, sizeof b));
        return NULL;
    }
    int req = 0;
    for (size_t i = 0; i < json_array_size(t->required); i++)
        req |= !strcmp(json_string_value(json_array_get(t->required, i)) ?: "", n);
    if (!t->in_group && !req) {
        t->rc = fail(t->x, AOS_ERR_USAGE, t->at, "argv: {%s} is optional, so it must be in "
                     "a [...] group", n);
        return NULL;
    }
    *vlen = 0;
    return "";
}

static aos_err check_template(ctx *x, const yaml_node_t *at, const char *s, const json_t *args)
{
    tcheck t = {x, at, json_object_get(args, "properties"), json_object_get(args, "required"),
                0, AOS_OK};
    size_t len = strlen(s);
    const char *bad = NULL;
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        t.in_group = 1;
        s++, len -= 2;
        if (memchr(s, '[', len) || memchr(s, ']', len))
            return fail(x, AOS_ERR_USAGE, at, "argv: groups do not nest");
        for (size_t i = 0; i < len;) {
            size_t j = i;
            while (j < len && s[j] != ' ')
                j++;
            if (j > i && expand_word(s + i, j - i, NULL, 0, check_name, &t, &bad) < 0)
                return t.rc ? t.rc : fail(x, AOS_ERR_USAGE, at, "argv: %s", bad);
            i = j + 1;
        }
        return AOS_OK;
    }
    if (s[0] == '[')
        return fail(x, AOS_ERR_USAGE, at, "argv: a group must end with ']'");
    if (expand_word(s, len, NULL, 0, check_name, &t, &bad) < 0)
        return t.rc ? t.rc : fail(x, AOS_ERR_USAGE, at, "argv: %s", bad);
    return AOS_OK;
}

/* ---- parsing ------------------------------------------------------------------------- */

void desc_free(desc *d)
{
    if (!d)
        return;
    free(d->name);
    free(d->summary);
    free(d->stdin_arg);
    json_decref(d->args);
    jschema_free(d->argsv);
    jschema_free(d->outv);
    for (size_t i = 0; i < d->ntpl; i++)
        free(d->tpl[i]);
    free(d->tpl);
    free(d);
}

static int name_ok(const char *s)
{
    size_t len = strlen(s);
    if (len < 1 || len > NAME_CAP || s[0] < 'a' || s[0] > 'z')
        return 0;
    for (size_t i = 1; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '.' || s[i] == '-'))
            return 0;
    return 1;
}

static aos_err schema_of(ctx *x, const yaml_node_t *v, json_t **j, jschema **s)
{
    aos_err rc = AOS_OK;
    char msg[512];
    aos_yjson_err ye;
    if (!(*j = aos_yjson(x->doc, v, YAML_DEPTH_MAX, &ye)))
        return fail(x, ye.code, ye.at, "%s", ye.what);
    if ((rc = jschema_compile(*j, s, msg, sizeof msg)))
        return fail(x, rc, v, "schema: %s", msg);
    return AOS_OK;
}

static aos_err parse_output(ctx *x, const yaml_node_t *n, desc *d)
{
    static const char *const names[] = {"format", "schema", NULL};
    const yaml_node_t *v[2];
    aos_err rc = keys(x, n, "output", names, v);
    if (rc)
        return rc;
    if (v[0] && v[0]->type == YAML_SCALAR_NODE && !strcmp(text(v[0]), "json"))
        d->fmt = DESC_OUT_JSON;
    else if (v[0] && !(v[0]->type == YAML_SCALAR_NODE && !strcmp(text(v[0]), "text")))
        return fail(x, AOS_ERR_USAGE, v[0], "output.format must be json or text");
    if (v[1]) {
        if (d->fmt != DESC_OUT_JSON)
            return fail(x, AOS_ERR_USAGE, v[1], "output.schema needs format: json");
        json_t *j = NULL;
        rc = schema_of(x, v[1], &j, &d->outv);
        json_decref(j);
    }
    return rc;
}

static aos_err parse_codes(ctx *x, const yaml_node_t *n, desc *d)
{
    if (n->type != YAML_MAPPING_NODE)
        return fail(x, AOS_ERR_USAGE, n, "exit_codes must be a mapping of code: error");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = node(x, p->key), *v = node(x, p->value);
        unsigned long long code;
        char b[SHOW_MAX + 8];
        aos_err rc = k->type == YAML_SCALAR_NODE
                         ? get_uint(x, k, "an exit code", 1, CODES_MAX, &code)
                         : fail(x, AOS_ERR_USAGE, k, "an exit code must be a number");
        if (rc)
            return rc;
        if (d->codes[code])
            return fail(x, AOS_ERR_USAGE, k, "exit code %llu given twice", code);
        int e = 1;
        while (v->type == YAML_SCALAR_NODE && aos_err_valid(e) &&
               strcasecmp(aos_err_name(e), text(v)))
            e++;
        if (v->type != YAML_SCALAR_NODE || !aos_err_valid(e))
            return fail(x, AOS_ERR_USAGE, v, "exit code %llu: '%s' is not an aos error name "
                        "(not_found, usage, refused, timeout, ...; unmapped codes are "
                        "results)", code,
                        v->type == YAML_SCALAR_NODE ? show(text(v), b, sizeof b) : "?");
        d->codes[code] = (aos_err)e;
    }
    return AOS_OK;
}

static aos_err parse_limits(ctx *x, const yaml_node_t *n, desc *d)
{
    static const char *const names[] = {"time_ms", "output_bytes", "memory_mb", "processes",
                                        NULL};
    static const unsigned long long hi[] = {3600000, 64ull << 20, 65536, 4096};
    const yaml_node_t *v[4];
    aos_err rc = keys(x, n, "limits", names, v);
    for (size_t i = 0; i < 4 && !rc; i++) {
        unsigned long long u;
        if (!v[i] || (rc = get_uint(x, v[i], names[i], 1, hi[i], &u)))
            continue;
        if (i == 0)
            d->lim.time_ms = (unsigned)u;
        else if (i == 1)
            d->lim.output_bytes = (size_t)u;
        else if (i == 2)
            d->lim.memory_mb = (unsigned)u;
        else
            d->lim.processes = (unsigned)u;
    }
    return rc;
}

static aos_err parse_argv(ctx *x, const yaml_node_t *n, desc *d)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(x, AOS_ERR_USAGE, n, "argv must be a list of strings");
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (cnt > DESC_ARGV_MAX)
        return fail(x, AOS_ERR_TOO_BIG, n, "argv over %u items", DESC_ARGV_MAX);
    if (cnt && !(d->tpl = calloc(cnt, sizeof *d->tpl)))
        return fail(x, AOS_ERR_NOMEM, n, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        const yaml_node_t *v = node(x, n->data.sequence.items.start[i]);
        aos_err rc = get_line(x, v, "an argv item", TPL_MAX, &d->tpl[i]);
        if (rc)
            return rc;
        d->ntpl++;
        if ((rc = check_template(x, v, d->tpl[i], d->args)))
            return rc;
    }
    return AOS_OK;
}

static aos_err parse_doc(ctx *x, desc *d)
{
    static const char *const names[] = {"name", "summary", "args", "output", "argv",
                                        "exit_codes", "limits", "network", "builtin",
                                        "stdin", NULL};
    const yaml_node_t *v[10], *root = yaml_document_get_root_node(x->doc);
    if (!root)
        return fail(x, AOS_ERR_USAGE, NULL, "an empty descriptor");
    aos_err rc = keys(x, root, "the descriptor", names, v);
    if (rc)
        return rc;
    for (size_t i = 0; i < 3; i++)
        if (!v[i])
            return fail(x, AOS_ERR_USAGE, root, "the descriptor needs '%s'", names[i]);
    char b[SHOW_MAX + 8];
    if ((rc = get_line(x, v[0], "name", NAME_CAP, &d->name)))
        return rc;
    if (!name_ok(d->name))
        return fail(x, AOS_ERR_USAGE, v[0], "name '%s' must match [a-z][a-z0-9_.-]{0,63}",
                    show(d->name, b, sizeof b));
    if ((rc = get_line(x, v[1], "summary", SUMMARY_MAX, &d->summary)) ||
        (rc = schema_of(x, v[2], &d->args, &d->argsv)))
        return rc;
    const json_t *t = json_object_get(d->args, "type");
    if (!json_is_string(t) || strcmp(json_string_value(t), "object"))
        return fail(x, AOS_ERR_USAGE, v[2], "args must be a schema of type: object");
    if ((v[3] && (rc = parse_output(x, v[3], d))) || (v[5] && (rc = parse_codes(x, v[5], d))) ||
        (v[6] && (rc = parse_limits(x, v[6], d))) ||
        (v[7] && (rc = get_bool(x, v[7], "network", &d->network))) ||
        (v[8] && (rc = get_bool(x, v[8], "builtin", &d->builtin))))
        return rc;
    if (d->builtin && v[4])
        return fail(x, AOS_ERR_USAGE, v[4], "a builtin tool has no argv");
    if (!d->builtin && !v[4])
        return fail(x, AOS_ERR_USAGE, root, "the descriptor needs 'argv' (or builtin: true)");
    if (v[4] && (rc = parse_argv(x, v[4], d)))
        return rc;
    if (v[4] && d->ntpl == 0)
        return fail(x, AOS_ERR_USAGE, v[4], "argv must name the program");
    if (v[9]) {
        /* a string argument given on stdin, never in argv: large text (a file's content)
         * stays out of the command line and its limits */
        if ((rc = get_line(x, v[9], "stdin", NAME_CAP, &d->stdin_arg)))
            return rc;
        const json_t *ps = json_object_get(json_object_get(d->args, "properties"),
                                           d->stdin_arg);
        const json_t *pt = json_object_get(ps, "type");
        if (!json_is_string(pt) || strcmp(json_string_value(pt), "string"))
            return fail(x, AOS_ERR_USAGE, v[9], "stdin must name a string property of args");
        if (d->builtin)
            return fail(x, AOS_ERR_USAGE, v[9], "a builtin tool has no stdin");
    }
    return AOS_OK;
}

aos_err desc_parse(const char *file, const char *yaml, size_t len, desc **out, char *why,
                   size_t whylen)
{
    ctx x = {file ? file : "descriptor", NULL, why, whylen};
    *out = NULL;
    if (len > DESC_YAML_MAX)
        return fail(&x, AOS_ERR_TOO_BIG, NULL, "a descriptor of %zu bytes is over the cap of "
                    "%u", len, DESC_YAML_MAX);
    yaml_document_t doc;
    aos_err rc = aos_yaml_load(x.file, yaml, len, YAML_DEPTH_MAX, &doc, why, whylen);
    if (rc)
        return rc;
    x.doc = &doc;
    desc *d = calloc(1, sizeof *d);
    if (!d) {
        rc = fail(&x, AOS_ERR_NOMEM, NULL, "out of memory");
    } else {
        d->lim = (desc_limits){.time_ms = 30000, .output_bytes = 1u << 20, .memory_mb = 512,
                               .processes = 64};
        rc = parse_doc(&x, d);
    }
    yaml_document_delete(&doc);
    if (rc)
        desc_free(d);
    else
        *out = d;
    return rc;
}

/* ---- accessors ----------------------------------------------------------------------- */

const char *desc_name(const desc *d) { return d->name; }
const char *desc_summary(const desc *d) { return d->summary; }
const json_t *desc_args_schema(const desc *d) { return d->args; }
const jschema *desc_args_validator(const desc *d) { return d->argsv; }
desc_out_format desc_output_format(const desc *d) { return d->fmt; }
const jschema *desc_output_validator(const desc *d) { return d->outv; }
desc_limits desc_get_limits(const desc *d) { return d->lim; }
int desc_network(const desc *d) { return d->network; }
int desc_builtin(const desc *d) { return d->builtin; }
const char *desc_stdin_arg(const desc *d) { return d->stdin_arg; }

aos_err desc_exit_error(const desc *d, int code)
{
    return code >= 1 && code <= (int)CODES_MAX ? d->codes[code] : AOS_OK;
}

/* ---- argv ---------------------------------------------------------------------------- */

typedef struct {
    const json_t *args;
    char num[64];
    const char *missing; /* set when a group names an absent, null or false argument */
    const char *bad;
    int cond;            /* the word was a lone boolean placeholder */
} texpand;

static const json_t *arg_of(const json_t *args, const char *name, size_t len)
{
    char n[NAME_CAP + 1];
    if (len > NAME_CAP)
        return NULL;
    memcpy(n, name, len);
    n[len] = 0;
    return json_object_get(args, n);
}

static const char *value_of(void *arg, const char *name, size_t len, size_t *vlen)
{
    texpand *t = arg;
    const json_t *v = arg_of(t->args, name, len);
    if (!v || json_is_null(v) || json_is_false(v)) {
        t->missing = "absent";
        return NULL;
    }
    if (json_is_string(v)) {
        *vlen = json_string_length(v);
        if (memchr(json_string_value(v), 0, *vlen)) {
            t->bad = "holds a NUL byte, which no argv element can carry";
            return NULL;
        }
        return json_string_value(v);
    }
    if (json_is_true(v)) {
        *vlen = 4;
        return "true";
    }
    if (json_is_integer(v))
        snprintf(t->num, sizeof t->num, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(t->num, sizeof t->num, "%.17g", json_real_value(v));
    else {
        t->bad = "is an array or object; argv takes scalar values";
        return NULL;
    }
    *vlen = strlen(t->num);
    return t->num;
}

void desc_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

typedef struct {
    char **v;
    size_t n, bytes;
} vec;

static aos_err push(vec *a, const char *w, size_t len, const json_t *args, char *why,
                    size_t whylen, int in_group, int *skip)
{
    texpand t = {.args = args};
    const char *bad = NULL;
    long need = expand_word(w, len, NULL, 0, value_of, &t, &bad);
    if (need < 0 && t.missing && in_group) {
        *skip = 1;
        return AOS_OK;
    }
    if (need < 0) {
        snprintf(why, whylen, "argv item '%.*s': %s", (int)(len > 60 ? 60 : len), w,
                 t.bad ? t.bad : t.missing ? "a required argument is absent" : bad);
        return AOS_ERR_USAGE;
    }
    /* a lone boolean placeholder in a group is the group's condition, not a word */
    if (in_group && len > 2 && w[0] == '{' && w[len - 1] == '}' &&
        json_is_boolean(arg_of(args, w + 1, len - 2)))
        return AOS_OK;
    if (a->n + 1 >= DESC_ARGV_MAX || a->bytes + (size_t)need + 1 > DESC_ARGV_BYTES) {
        snprintf(why, whylen, "argv over %u elements or %u bytes", DESC_ARGV_MAX,
                 DESC_ARGV_BYTES);
        return AOS_ERR_TOO_BIG;
    }
    char *s = malloc((size_t)need + 1);
    if (!s) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    expand_word(w, len, s, (size_t)need + 1, value_of, &t, &bad);
    a->v[a->n++] = s;
    a->bytes += (size_t)need + 1;
    return AOS_OK;
}

aos_err desc_argv(const desc *d, const json_t *args, char ***argv, char *why, size_t whylen)
{
    *argv = NULL;
    if (d->builtin) {
        snprintf(why, whylen, "%s is run by aos-tool itself: it has no argv", d->name);
        return AOS_ERR_USAGE;
    }
    aos_err rc = jschema_validate(d->argsv, args, why, whylen);
    if (rc)
        return rc;
    vec a = {calloc(DESC_ARGV_MAX, sizeof(char *)), 0, 0};
    if (!a.v) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    for (size_t i = 0; i < d->ntpl && !rc; i++) {
        const char *s = d->tpl[i];
        size_t len = strlen(s);
        int skip = 0;
        if (!(len >= 2 && s[0] == '[' && s[len - 1] == ']')) {
            rc = push(&a, s, len, args, why, whylen, 0, &skip);
            continue;
        }
        /* a group: every word is tried first, so a missing argument drops all of it */
        size_t mark = a.n;
        for (size_t k = 1; k < len - 1 && !rc && !skip;) {
            size_t j = k;
            while (j < len - 1 && s[j] != ' ')
                j++;
            if (j > k)
                rc = push(&a, s + k, j - k, args, why, whylen, 1, &skip);
            k = j + 1;
        }
        if (skip)
            while (a.n > mark)
                free(a.v[--a.n]), a.v[a.n] = NULL;
    }
    if (rc) {
        desc_argv_free(a.v);
        return rc;
    }
    *argv = a.v;
    return AOS_OK;
}

/* ---- built-ins ----------------------------------------------------------------------- */

static const char *const builtin_yaml[] = {
    "name: sh\n"
    "summary: run a shell command line in the workspace\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    command: {type: string, minLength: 1, maxLength: 65536, description: the command line}\n"
    "  required: [command]\n"
    "  additionalProperties: false\n"
    "argv: [/bin/sh, -c, '{command}']\n",

    "name: cat\n"
    "summary: print a file\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    path: {type: string, minLength: 1, maxLength: 4096}\n"
    "  required: [path]\n"
    "  additionalProperties: false\n"
    "argv: [cat, --, '{path}']\n"
    "exit_codes: {1: not_found}\n",

    "name: ls\n"
    "summary: list a directory\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    path: {type: string, minLength: 1, maxLength: 4096}\n"
    "  required: [path]\n"
    "  additionalProperties: false\n"
    "argv: [ls, -lA, --, '{path}']\n"
    "exit_codes: {2: not_found}\n",

    "name: grep\n"
    "summary: search files for lines matching an extended regex\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    pattern: {type: string, minLength: 1, maxLength: 4096}\n"
    "    path: {type: string, minLength: 1, maxLength: 4096}\n"
    "    ignore_case: {type: boolean}\n"
    "  required: [pattern, path]\n"
    "  additionalProperties: false\n"
    "argv: [grep, -E, -r, -n, '[-i {ignore_case}]', -e, '{pattern}', --, '{path}']\n"
    "exit_codes: {2: usage}\n",

    /* Written by a shell inside the sandbox, not by aos-tool: a symlink planted in the
     * workspace then resolves in the sandbox's root, where nothing outside is writable. */
    "name: write_file\n"
    "summary: write text to a file in the workspace\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    path: {type: string, minLength: 1, maxLength: 4096}\n"
    "    content: {type: string, maxLength: 1048576}\n"
    "  required: [path, content]\n"
    "  additionalProperties: false\n"
    "argv: [/bin/sh, -c, 'cat > \"$1\"', write_file, '{path}']\n"
    "stdin: content\n",

    "name: http_get\n"
    "summary: fetch a URL over HTTP(S) (needs network)\n"
    "args:\n"
    "  type: object\n"
    "  properties:\n"
    "    url: {type: string, pattern: '^https?://', maxLength: 8192}\n"
    "  required: [url]\n"
    "  additionalProperties: false\n"
    "argv: [curl, -sS, --fail-with-body, --proto, '=http,https', --max-filesize, '10485760',"
    " --, '{url}']\n"
    "exit_codes: {6: unavailable, 7: unavailable, 28: timeout, 63: too_big}\n"
    "network: true\n",
};

void desc_free_all(desc **d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        desc_free(d[i]);
    free(d);
}

aos_err desc_builtins(desc ***out, size_t *n, char *why, size_t whylen)
{
    size_t cnt = sizeof builtin_yaml / sizeof builtin_yaml[0];
    *out = NULL;
    *n = 0;
    desc **d = calloc(cnt, sizeof *d);
    if (!d) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    for (size_t i = 0; i < cnt; i++) {
        aos_err rc = desc_parse("builtin", builtin_yaml[i], strlen(builtin_yaml[i]), &d[i],
                                why, whylen);
        if (rc) {
            desc_free_all(d, cnt);
            return rc;
        }
    }
    *out = d;
    *n = cnt;
    return AOS_OK;
}

/* ---- rendering ----------------------------------------------------------------------- */

void desc_wire_name(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = name; *p && o + 2 < cap; p++) {
        if (*p == '.') { /* "mcp.fs.read" -> "mcp__fs__read": [A-Za-z0-9_-] only */
            out[o++] = '_';
            out[o++] = '_';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = 0;
}

static json_t *render_one(const desc *d, desc_render_format fmt)
{
    char wire[2 * NAME_CAP + 2];
    desc_wire_name(d->name, wire, sizeof wire);
    if (fmt == DESC_SCHEMA_ANTHROPIC)
        return json_pack("{s:s, s:s, s:O}", "name", wire, "description", d->summary,
                         "input_schema", d->args);
    return json_pack("{s:s, s:{s:s, s:s, s:O}}", "type", "function", "function", "name",
                     wire, "description", d->summary, "parameters", d->args);
}

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* VALUE for an argument: its enum ("json|text") or its name in capitals. */
static void put_value(sbuf *b, const char *name, const json_t *schema)
{
    const json_t *e = json_object_get(schema, "enum");
    if (json_is_array(e) && json_array_size(e) && json_array_size(e) <= 8) {
        for (size_t i = 0; i < json_array_size(e); i++) {
            const json_t *v = json_array_get(e, i);
            if (i)
                puts_(b, "|");
            char *t = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            puts_(b, json_is_string(v) ? json_string_value(v) : t ? t : "?");
            free(t);
        }
        return;
    }
    for (const char *p = name; *p; p++) {
        char c = *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
        put(b, &c, 1);
    }
}

static void put_option(sbuf *b, const char *name)
{
    puts_(b, "--");
    for (const char *p = name; *p; p++)
        put(b, *p == '_' ? "-" : p, 1);
}

/* required arguments as positionals in their order, the others as [--name VALUE] */
static void render_cli(sbuf *b, const desc *d)
{
    const json_t *props = json_object_get(d->args, "properties");
    const json_t *req = json_object_get(d->args, "required");
    puts_(b, d->name);
    for (size_t i = 0; i < json_array_size(req); i++) {
        const char *n = json_string_value(json_array_get(req, i));
        const json_t *s = json_object_get(props, n ? n : "");
        if (!n)
            continue;
        puts_(b, " ");
        if (json_is_string(json_object_get(s, "type")) &&
            !strcmp(json_string_value(json_object_get(s, "type")), "boolean"))
            put_option(b, n);
        else
            put_value(b, n, s);
    }
    const char *k;
    json_t *s;
    json_object_foreach((json_t *)props, k, s) {
        int is_req = 0;
        for (size_t i = 0; i < json_array_size(req); i++)
            is_req |= !strcmp(json_string_value(json_array_get(req, i)) ?: "", k);
        if (is_req)
            continue;
        puts_(b, " [");
        put_option(b, k);
        const json_t *t = json_object_get(s, "type");
        if (!(json_is_string(t) && !strcmp(json_string_value(t), "boolean"))) {
            puts_(b, " ");
            put_value(b, k, s);
        }
        puts_(b, "]");
    }
    puts_(b, "  - ");
    puts_(b, d->summary);
    puts_(b, "\n");
}

aos_err desc_render(const desc *const *descs, size_t n, desc_render_format fmt, char **out,
                    char *why, size_t whylen)
{
    *out = NULL;
    if (fmt == DESC_CLI) {
        sbuf b = {0};
        puts_(&b, "");
        for (size_t i = 0; i < n; i++)
            render_cli(&b, descs[i]);
        if (b.oom) {
            free(b.s);
            snprintf(why, whylen, "out of memory");
            return AOS_ERR_NOMEM;
        }
        *out = b.s;
        return AOS_OK;
    }
    if (fmt != DESC_SCHEMA_OPENAI && fmt != DESC_SCHEMA_ANTHROPIC) {
        snprintf(why, whylen, "unknown render format %d", (int)fmt);
        return AOS_ERR_USAGE;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *one = render_one(descs[i], fmt);
        if (!one || json_array_append_new(arr, one)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    *out = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    if (!*out) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    return AOS_OK;
}
