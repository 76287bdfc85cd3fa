/* The JSON Schema subset of jschema.h: a jansson schema compiled into a tree of nodes,
 * then values walked against it with the JSON path of the first failure kept for the message. */
#include "jschema.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_CAP 256u         /* a JSON path in a message; longer ones are cut */
#define SHOW_MAX 48u          /* a key echoed in a message */
#define REPEAT_MAX 100u       /* one {n,m} of a pattern */
#define REPEAT_PRODUCT 10000u
#define QUANTS_MAX 64u        /* quantifiers in one pattern */ /* all {n,m} of a pattern multiplied: regcomp expands them */

enum {
    T_NULL = 1u << 0,
    T_BOOL = 1u << 1,
    T_INT = 1u << 2,
    T_NUM = 1u << 3,
    T_STR = 1u << 4,
    T_ARR = 1u << 5,
    T_OBJ = 1u << 6,
};

static const struct {
    const char *name;
    unsigned bit;
} type_names[] = {
    {"null", T_NULL},   {"boolean", T_BOOL}, {"integer", T_INT}, {"number", T_NUM},
    {"string", T_STR},  {"array", T_ARR},    {"object", T_OBJ},
};

typedef struct {
    int set;
    int is_int;
    json_int_t i;
    double d;
} bound;

typedef struct node node;

typedef struct {
    char *name;
    node *s;
} prop;

struct node {
    int never;        /* the schema false */
    unsigned types;   /* 0: any */
    prop *props;      /* sorted by name, for bsearch */
    size_t nprops;
    char **req;
    size_t nreq;
    json_t *enums;    /* an owned array, or NULL */
    json_t *cnst;     /* owned, or NULL (const null is json_null(), not NULL) */
    bound min, max, xmin, xmax;
    long long min_len, max_len, min_items, max_items; /* -1: no limit */
    int has_re;
    regex_t re;
    node *items;
    int addl_forbid;
    node *addl;
};

struct jschema {
    node *root;
};

/* Where a message points: the JSON path being walked, restored on the way back up. */
typedef struct {
    char buf[PATH_CAP];
    size_t len;
    char *why;
    size_t whylen;
} walk;

static aos_err failf(walk *w, aos_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static aos_err failf(walk *w, aos_err e, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(w->why, w->whylen, "%s: %s", w->buf, msg);
    return e;
}

static aos_err nomem(walk *w)
{
    return failf(w, AOS_ERR_NOMEM, "out of memory");
}

/* A key fit for a message or a path: short, printable ASCII. */
static const char *show(const char *s, char *buf, size_t cap)
{
    size_t i = 0, o = 0;
    for (; s[i] && i < SHOW_MAX && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = c < 0x20 || c >= 0x7f || c == '"' || c == '\\' ? '?' : (char)c;
    }
    if (s[i] && o + 4 < cap)
        buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o] = 0;
    return buf;
}

static int is_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* Appends ".key" (or ["key"] for a key that is not a plain word) and returns the length
 * to restore with path_pop. */
static size_t path_key(walk *w, const char *key)
{
    size_t old = w->len;
    char b[SHOW_MAX + 8];
    int n = is_ident(key) ? snprintf(w->buf + w->len, PATH_CAP - w->len, ".%s", key)
                          : snprintf(w->buf + w->len, PATH_CAP - w->len, "[\"%s\"]",
                                     show(key, b, sizeof b));
    w->len = n < 0 || (size_t)n >= PATH_CAP - w->len ? PATH_CAP - 1 : w->len + (size_t)n;
    return old;
}

static size_t path_index(walk *w, size_t i)
{
    size_t old = w->len;
    int n = snprintf(w->buf + w->len, PATH_CAP - w->len, "[%zu]", i);
    w->len = n < 0 || (size_t)n >= PATH_CAP - w->len ? PATH_CAP - 1 : w->len + (size_t)n;
    return old;
}

static void path_pop(walk *w, size_t old)
{
    w->len = old;
    w->buf[old] = 0;
}

static void walk_init(walk *w, char *why, size_t whylen)
{
    strcpy(w->buf, "$");
    w->len = 1;
    w->why = why;
    w->whylen = whylen;
    if (whylen)
        why[0] = 0;
}

/* ---- values ------------------------------------------------------------------------- */

int jschema_too_deep(const json_t *v, unsigned max)
{
    struct {
        json_t *j;
        size_t i;
        void *it;
    } st[JSCHEMA_VALUE_DEPTH_MAX];
    if (max > JSCHEMA_VALUE_DEPTH_MAX)
        max = JSCHEMA_VALUE_DEPTH_MAX;
    if (!json_is_array(v) && !json_is_object(v))
        return 0;
    if (max == 0)
        return 1;
    /* jansson's iterators take non-const values; nothing here writes through them */
    size_t top = 0;
    st[0].j = (json_t *)v;
    st[0].i = 0;
    st[0].it = json_is_object(v) ? json_object_iter((json_t *)v) : NULL;
    for (;;) {
        json_t *child = NULL;
        if (json_is_array(st[top].j)) {
            if (st[top].i < json_array_size(st[top].j))
                child = json_array_get(st[top].j, st[top].i++);
        } else if (st[top].it) {
            child = json_object_iter_value(st[top].it);
            st[top].it = json_object_iter_next(st[top].j, st[top].it);
        }
        if (!child) {
            if (top == 0)
                return 0;
            top--;
            continue;
        }
        if (!json_is_array(child) && !json_is_object(child))
            continue;
        if (top + 2 > max)
            return 1;
        top++;
        st[top].j = child;
        st[top].i = 0;
        st[top].it = json_is_object(child) ? json_object_iter(child) : NULL;
    }
}

static int is_integral(const json_t *v)
{
    if (json_is_integer(v))
        return 1;
    if (!json_is_real(v))
        return 0;
    double d = json_real_value(v);
    return isfinite(d) && floor(d) == d;
}

static const char *type_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

static int type_ok(unsigned types, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return types & T_OBJ;
    case JSON_ARRAY: return types & T_ARR;
    case JSON_STRING: return types & T_STR;
    case JSON_INTEGER: return types & (T_INT | T_NUM);
    case JSON_REAL: return (types & T_NUM) || ((types & T_INT) && is_integral(v));
    case JSON_TRUE:
    case JSON_FALSE: return types & T_BOOL;
    case JSON_NULL: return types & T_NULL;
    }
    return 0;
}

static long double num_of(const json_t *v)
{
    return json_is_integer(v) ? (long double)json_integer_value(v)
                              : (long double)json_real_value(v);
}

/* <0, 0, >0 as v is below, at or above b; integers compare exactly, the rest in long
 * double, which holds every json_int_t and every double. */
static int num_cmp(const json_t *v, const bound *b)
{
    if (json_is_integer(v) && b->is_int) {
        json_int_t x = json_integer_value(v);
        return (x > b->i) - (x < b->i);
    }
    long double x = num_of(v), y = b->is_int ? (long double)b->i : (long double)b->d;
    return (x > y) - (x < y);
}

/* JSON Schema's equality: 1 and 1.0 are the same number. Both sides are depth-checked
 * before they get here, so the recursion is bounded. */
static int equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return num_of(a) == num_of(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_array(a)) {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!equal(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va) {
            json_t *vb = json_object_get(b, k);
            if (!vb || !equal(va, vb))
                return 0;
        }
        return 1;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static size_t code_points(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static void types_text(unsigned types, char *buf, size_t cap)
{
    size_t used = 0, n = 0, count = 0;
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++)
        count += (types & type_names[i].bit) != 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0] && used < cap; i++) {
        if (!(types & type_names[i].bit))
            continue;
        n++;
        const char *sep = n == 1 ? "" : n == count ? " or " : ", ";
        int k = snprintf(buf + used, cap - used, "%s%s", sep, type_names[i].name);
        if (k < 0)
            break;
        used += (size_t)k;
    }
}

/* ---- validation --------------------------------------------------------------------- */

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const prop *)a)->name, ((const prop *)b)->name);
}

static const node *find_prop(const node *n, const char *key)
{
    prop k = {.name = (char *)key};
    const prop *p = n->nprops ? bsearch(&k, n->props, n->nprops, sizeof *n->props, prop_cmp)
                              : NULL;
    return p ? p->s : NULL;
}

static aos_err check(walk *w, const node *n, const json_t *v);

static const char *bound_text(const bound *b, char *buf, size_t cap)
{
    if (b->is_int)
        snprintf(buf, cap, "%lld", (long long)b->i);
    else
        snprintf(buf, cap, "%.17g", b->d);
    return buf;
}

static aos_err check_number(walk *w, const node *n, const json_t *v)
{
    char b[64];
    if (n->min.set && num_cmp(v, &n->min) < 0)
        return failf(w, AOS_ERR_USAGE, "value is below the minimum %s",
                     bound_text(&n->min, b, sizeof b));
    if (n->max.set && num_cmp(v, &n->max) > 0)
        return failf(w, AOS_ERR_USAGE, "value is above the maximum %s",
                     bound_text(&n->max, b, sizeof b));
    if (n->xmin.set && num_cmp(v, &n->xmin) <= 0)
        return failf(w, AOS_ERR_USAGE, "value must be above %s (exclusiveMinimum)",
                     bound_text(&n->xmin, b, sizeof b));
    if (n->xmax.set && num_cmp(v, &n->xmax) >= 0)
        return failf(w, AOS_ERR_USAGE, "value must be below %s (exclusiveMaximum)",
                     bound_text(&n->xmax, b, sizeof b));
    return AOS_OK;
}

static aos_err check_string(walk *w, const node *n, const json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (n->min_len >= 0 || n->max_len >= 0) {
        size_t cp = code_points(s, len);
        if (n->min_len >= 0 && cp < (unsigned long long)n->min_len)
            return failf(w, AOS_ERR_USAGE, "string of %zu characters is shorter than "
                         "minLength %lld", cp, n->min_len);
        if (n->max_len >= 0 && cp > (unsigned long long)n->max_len)
            return failf(w, AOS_ERR_USAGE, "string of %zu characters is longer than "
                         "maxLength %lld", cp, n->max_len);
    }
    if (n->has_re) {
        /* regexec stops at a NUL: the bytes after it would go unchecked */
        if (memchr(s, 0, len))
            return failf(w, AOS_ERR_USAGE, "string holds a NUL byte, so it cannot match "
                         "the pattern");
        if (regexec(&n->re, s, 0, NULL, 0) != 0)
            return failf(w, AOS_ERR_USAGE, "string does not match the pattern");
    }
    return AOS_OK;
}

static aos_err check_array(walk *w, const node *n, const json_t *v)
{
    size_t sz = json_array_size(v);
    if (n->min_items >= 0 && sz < (unsigned long long)n->min_items)
        return failf(w, AOS_ERR_USAGE, "array of %zu items has fewer than minItems %lld", sz,
                     n->min_items);
    if (n->max_items >= 0 && sz > (unsigned long long)n->max_items)
        return failf(w, AOS_ERR_USAGE, "array of %zu items has more than maxItems %lld", sz,
                     n->max_items);
    if (!n->items)
        return AOS_OK;
    for (size_t i = 0; i < sz; i++) {
        size_t old = path_index(w, i);
        aos_err rc = check(w, n->items, json_array_get(v, i));
        path_pop(w, old);
        if (rc)
            return rc;
    }
    return AOS_OK;
}

static aos_err check_object(walk *w, const node *n, const json_t *v)
{
    char b[SHOW_MAX + 8];
    for (size_t i = 0; i < n->nreq; i++)
        if (!json_object_get(v, n->req[i]))
            return failf(w, AOS_ERR_USAGE, "missing required property '%s'",
                         show(n->req[i], b, sizeof b));
    const char *k;
    json_t *pv;
    json_object_foreach((json_t *)v, k, pv) {
        const node *s = find_prop(n, k);
        if (!s && n->addl_forbid)
            return failf(w, AOS_ERR_USAGE, "unexpected property '%s' (additionalProperties "
                         "is false)", show(k, b, sizeof b));
        if (!s)
            s = n->addl;
        if (!s)
            continue;
        size_t old = path_key(w, k);
        aos_err rc = check(w, s, pv);
        path_pop(w, old);
        if (rc)
            return rc;
    }
    return AOS_OK;
}

/* Recursion follows the compiled schema, which is at most JSCHEMA_DEPTH_MAX deep. */
static aos_err check(walk *w, const node *n, const json_t *v)
{
    if (n->never)
        return failf(w, AOS_ERR_USAGE, "no value is allowed here (the schema is false)");
    if (n->types && !type_ok(n->types, v)) {
        char t[96];
        types_text(n->types, t, sizeof t);
        return failf(w, AOS_ERR_USAGE, "expected %s, got %s", t, type_of(v));
    }
    if (n->cnst && !equal(n->cnst, v))
        return failf(w, AOS_ERR_USAGE, "value is not the constant the schema requires");
    if (n->enums) {
        size_t i = 0, sz = json_array_size(n->enums);
        while (i < sz && !equal(json_array_get(n->enums, i), v))
            i++;
        if (i == sz) {
            char *list = json_dumps(n->enums, JSON_COMPACT | JSON_ENCODE_ANY);
            aos_err rc = failf(w, AOS_ERR_USAGE, "value is not one of %.200s%s",
                               list ? list : "the enum", list && strlen(list) > 200 ? "..." : "");
            free(list);
            return rc;
        }
    }
    if (json_is_number(v))
        return check_number(w, n, v);
    if (json_is_string(v))
        return check_string(w, n, v);
    if (json_is_array(v))
        return check_array(w, n, v);
    if (json_is_object(v))
        return check_object(w, n, v);
    return AOS_OK;
}

aos_err jschema_validate(const jschema *s, const json_t *value, char *why, size_t whylen)
{
    walk w;
    walk_init(&w, why, whylen);
    if (!s || !value)
        return failf(&w, AOS_ERR_USAGE, "no %s", s ? "value" : "schema");
    if (jschema_too_deep(value, JSCHEMA_VALUE_DEPTH_MAX))
        return failf(&w, AOS_ERR_TOO_BIG, "value nested more than %u levels deep",
                     JSCHEMA_VALUE_DEPTH_MAX);
    return check(&w, s->root, value);
}

/* ---- compiling ---------------------------------------------------------------------- */

static void node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nprops; i++) {
        free(n->props[i].name);
        node_free(n->props[i].s);
    }
    free(n->props);
    for (size_t i = 0; i < n->nreq; i++)
        free(n->req[i]);
    free(n->req);
    json_decref(n->enums);
    json_decref(n->cnst);
    if (n->has_re)
        regfree(&n->re);
    node_free(n->items);
    node_free(n->addl);
    free(n);
}

void jschema_free(jschema *s)
{
    if (!s)
        return;
    node_free(s->root);
    free(s);
}

static aos_err compile(walk *w, const json_t *j, unsigned depth, node **out);

/* Compiles the sub-schema at key (and path suffix) of the current schema. */
static aos_err compile_at(walk *w, const char *key, const json_t *j, unsigned depth,
                          node **out)
{
    size_t old = path_key(w, key);
    aos_err rc = compile(w, j, depth, out);
    path_pop(w, old);
    return rc;
}

static aos_err get_bound(walk *w, const char *key, const json_t *v, bound *b)
{
    if (!json_is_number(v))
        return failf(w, AOS_ERR_USAGE, "%s must be a number, not %s", key, type_of(v));
    b->set = 1;
    b->is_int = json_is_integer(v);
    b->i = b->is_int ? json_integer_value(v) : 0;
    b->d = b->is_int ? 0 : json_real_value(v);
    return AOS_OK;
}

static aos_err get_count(walk *w, const char *key, const json_t *v, long long *out)
{
    if (!is_integral(v) || num_of(v) < 0 || num_of(v) > (long double)0x7fffffffffffffffLL)
        return failf(w, AOS_ERR_USAGE, "%s must be a non-negative integer", key);
    *out = json_is_integer(v) ? (long long)json_integer_value(v)
                              : (long long)json_real_value(v);
    return AOS_OK;
}

static aos_err get_types(walk *w, const json_t *v, unsigned *out)
{
    const json_t *one = v;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (json_is_array(v) && n == 0)
        return failf(w, AOS_ERR_USAGE, "type must not be an empty array");
    *out = 0;
    for (size_t i = 0; i < n; i++) {
        if (json_is_array(v))
            one = json_array_get(v, i);
        if (!json_is_string(one))
            return failf(w, AOS_ERR_USAGE, "type must be a type name or an array of them");
        size_t t = 0;
        while (t < sizeof type_names / sizeof type_names[0] &&
               strcmp(type_names[t].name, json_string_value(one)))
            t++;
        char b[SHOW_MAX + 8];
        if (t == sizeof type_names / sizeof type_names[0])
            return failf(w, AOS_ERR_USAGE, "unknown type '%s' (expected null, boolean, "
                         "integer, number, string, array or object)",
                         show(json_string_value(one), b, sizeof b));
        if (*out & type_names[t].bit)
            return failf(w, AOS_ERR_USAGE, "type '%s' given twice", type_names[t].name);
        *out |= type_names[t].bit;
    }
    return AOS_OK;
}

/* ECMA-262 to POSIX ERE, as far as jschema.h promises; the rest is refused rather than
 * read differently. out has room for 5 bytes per input byte plus the NUL. */
static aos_err translate_pattern(walk *w, const char *p, size_t len, char *out)
{
    size_t o = 0;
    int in_bracket = 0;
    size_t open = 0; /* where the bracket expression began: a ']' first in it is literal */
    unsigned long product = 1;
    unsigned quants = 0;
    int after_quant = 0; /* regcomp nests "a+++" into trees that grow without bound */
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == 0)
            return failf(w, AOS_ERR_USAGE, "pattern holds a NUL byte");
        int quant = !in_bracket && (c == '*' || c == '+' || c == '?' || c == '{');
        if (quant && after_quant)
            return failf(w, AOS_ERR_USAGE, "pattern: a quantifier right after another "
                         "(lazy or possessive forms such as *? are not supported)");
        if (quant && ++quants > QUANTS_MAX)
            return failf(w, AOS_ERR_USAGE, "pattern: more than %u quantifiers", QUANTS_MAX);
        after_quant = quant;
        if (in_bracket) {
            if (c == '\\')
                return failf(w, AOS_ERR_USAGE, "pattern: a backslash inside [...] is not "
                             "supported (POSIX reads it literally, ECMA-262 as an escape)");
            if (c == '[' && i + 1 < len && (p[i + 1] == ':' || p[i + 1] == '.' ||
                                            p[i + 1] == '=')) {
                char end = p[i + 1];
                size_t j = i + 2;
                while (j + 1 < len && !(p[j] == end && p[j + 1] == ']'))
                    j++;
                if (j + 1 >= len)
                    return failf(w, AOS_ERR_USAGE, "pattern: unterminated [%c ... %c]", end,
                                 end);
                memcpy(out + o, p + i, j + 2 - i);
                o += j + 2 - i;
                i = j + 1;
                continue;
            }
            out[o++] = c;
            if (c == ']' && i != open + 1 && !(i == open + 2 && p[open + 1] == '^'))
                in_bracket = 0;
            continue;
        }
        if (c == '[') {
            in_bracket = 1;
            open = i;
            out[o++] = c;
            continue;
        }
        if (c == '(' && i + 2 < len && p[i + 1] == '?' && p[i + 2] == ':') {
            out[o++] = '(';
            i += 2;
            continue;
        }
        if (c == '{') {
            /* regcomp unrolls counted repeats, nested ones multiplied */
            char *end = NULL;
            unsigned long lo = strtoul(p + i + 1, &end, 10), hi = lo;
            if (end && *end == ',')
                hi = end[1] == '}' ? (end++, lo) : strtoul(end + 1, &end, 10);
            if (hi > REPEAT_MAX || lo > REPEAT_MAX)
                return failf(w, AOS_ERR_USAGE, "pattern: a repeat count over %u is not "
                             "accepted", REPEAT_MAX);
            product *= hi ? hi : 1;
            if (product > REPEAT_PRODUCT)
                return failf(w, AOS_ERR_USAGE, "pattern: its repeat counts multiply past "
                             "%u", REPEAT_PRODUCT);
            if (end && *end == '}') {
                memcpy(out + o, p + i, (size_t)(end - (p + i)) + 1);
                o += (size_t)(end - (p + i)) + 1;
                i = (size_t)(end - p);
                continue;
            }
            out[o++] = c;
            continue;
        }
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        if (++i == len)
            return failf(w, AOS_ERR_USAGE, "pattern ends with a backslash");
        c = p[i];
        const char *rep = NULL;
        switch (c) {
        case 'd': rep = "[0-9]"; break;
        case 'D': rep = "[^0-9]"; break;
        case 'n': rep = "\n"; break;
        case 't': rep = "\t"; break;
        case 'r': rep = "\r"; break;
        case 'f': rep = "\f"; break;
        case 'v': rep = "\v"; break;
        case 'w': rep = "\\w"; break;
        case 'W': rep = "\\W"; break;
        case 's': rep = "\\s"; break;
        case 'S': rep = "\\S"; break;
        case 'b': rep = "\\b"; break;
        case 'B': rep = "\\B"; break;
        /* GNU gives these a meaning of their own; ECMA-262 means the character */
        case '<': rep = "[<]"; break;
        case '>': rep = "[>]"; break;
        case '`': rep = "[`]"; break;
        case '\'': rep = "[']"; break;
        default: break;
        }
        if (!rep && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return failf(w, AOS_ERR_USAGE, "pattern: the escape \\%c is not supported", c);
        if (rep) {
            memcpy(out + o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            out[o++] = '\\';
            out[o++] = c;
        }
    }
    if (in_bracket)
        return failf(w, AOS_ERR_USAGE, "pattern: unterminated [...]");
    out[o] = 0;
    return AOS_OK;
}

static aos_err get_pattern(walk *w, const json_t *v, node *n)
{
    if (!json_is_string(v))
        return failf(w, AOS_ERR_USAGE, "pattern must be a string");
    size_t len = json_string_length(v);
    if (len > JSCHEMA_PATTERN_MAX)
        return failf(w, AOS_ERR_TOO_BIG, "pattern of %zu bytes is over the cap of %u", len,
                     JSCHEMA_PATTERN_MAX);
    char *ere = malloc(len * 6 + 1);
    if (!ere)
        return nomem(w);
    aos_err rc = translate_pattern(w, json_string_value(v), len, ere);
    if (rc == AOS_OK) {
        int e = regcomp(&n->re, ere, REG_EXTENDED | REG_NOSUB);
        if (e == 0) {
            n->has_re = 1;
        } else {
            char msg[128];
            regerror(e, NULL, msg, sizeof msg);
            rc = failf(w, e == REG_ESPACE ? AOS_ERR_NOMEM : AOS_ERR_USAGE,
                       "pattern does not compile as a POSIX extended regex: %s", msg);
        }
    }
    free(ere);
    return rc;
}

static aos_err get_properties(walk *w, const json_t *v, unsigned depth, node *n)
{
    if (!json_is_object(v))
        return failf(w, AOS_ERR_USAGE, "properties must be an object of schemas");
    size_t sz = json_object_size(v);
    if (sz && !(n->props = calloc(sz, sizeof *n->props)))
        return nomem(w);
    const char *k;
    json_t *pv;
    size_t old = path_key(w, "properties");
    json_object_foreach((json_t *)v, k, pv) {
        prop *p = &n->props[n->nprops];
        if (!(p->name = strdup(k))) {
            path_pop(w, old);
            return nomem(w);
        }
        n->nprops++;
        aos_err rc = compile_at(w, k, pv, depth + 1, &p->s);
        if (rc) {
            path_pop(w, old);
            return rc;
        }
    }
    path_pop(w, old);
    if (n->nprops) /* qsort's base must not be NULL, even for no items */
        qsort(n->props, n->nprops, sizeof *n->props, prop_cmp);
    return AOS_OK;
}

static aos_err get_required(walk *w, const json_t *v, node *n)
{
    if (!json_is_array(v))
        return failf(w, AOS_ERR_USAGE, "required must be an array of property names");
    size_t sz = json_array_size(v);
    if (sz && !(n->req = calloc(sz, sizeof *n->req)))
        return nomem(w);
    for (size_t i = 0; i < sz; i++) {
        const json_t *e = json_array_get(v, i);
        char b[SHOW_MAX + 8];
        if (!json_is_string(e))
            return failf(w, AOS_ERR_USAGE, "required[%zu] must be a string", i);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(n->req[j], json_string_value(e)))
                return failf(w, AOS_ERR_USAGE, "required lists '%s' twice",
                             show(n->req[j], b, sizeof b));
        if (!(n->req[i] = strdup(json_string_value(e))))
            return nomem(w);
        n->nreq++;
    }
    return AOS_OK;
}

static aos_err get_literal(walk *w, const char *key, const json_t *v, json_t **out)
{
    if (jschema_too_deep(v, JSCHEMA_VALUE_DEPTH_MAX))
        return failf(w, AOS_ERR_TOO_BIG, "%s nested more than %u levels deep", key,
                     JSCHEMA_VALUE_DEPTH_MAX);
    if (!strcmp(key, "enum") && (!json_is_array(v) || json_array_size(v) == 0))
        return failf(w, AOS_ERR_USAGE, "enum must be a non-empty array");
    /* the deep copy recurses, bounded by the depth check above */
    if (!(*out = json_deep_copy(v)))
        return nomem(w);
    return AOS_OK;
}

static const char *const keywords =
    "type, properties, required, enum, const, minimum, maximum, exclusiveMinimum, "
    "exclusiveMaximum, minLength, maxLength, pattern, items, minItems, maxItems, "
    "additionalProperties, title, description, default";

static aos_err keyword(walk *w, const char *k, const json_t *v, unsigned depth, node *n)
{
    char b[SHOW_MAX + 8];
    if (!strcmp(k, "title") || !strcmp(k, "description") || !strcmp(k, "default"))
        return AOS_OK;
    if (!strcmp(k, "type"))
        return get_types(w, v, &n->types);
    if (!strcmp(k, "properties"))
        return get_properties(w, v, depth, n);
    if (!strcmp(k, "required"))
        return get_required(w, v, n);
    if (!strcmp(k, "enum"))
        return get_literal(w, k, v, &n->enums);
    if (!strcmp(k, "const"))
        return get_literal(w, k, v, &n->cnst);
    if (!strcmp(k, "minimum"))
        return get_bound(w, k, v, &n->min);
    if (!strcmp(k, "maximum"))
        return get_bound(w, k, v, &n->max);
    if (!strcmp(k, "exclusiveMinimum"))
        return get_bound(w, k, v, &n->xmin);
    if (!strcmp(k, "exclusiveMaximum"))
        return get_bound(w, k, v, &n->xmax);
    if (!strcmp(k, "minLength"))
        return get_count(w, k, v, &n->min_len);
    if (!strcmp(k, "maxLength"))
        return get_count(w, k, v, &n->max_len);
    if (!strcmp(k, "minItems"))
        return get_count(w, k, v, &n->min_items);
    if (!strcmp(k, "maxItems"))
        return get_count(w, k, v, &n->max_items);
    if (!strcmp(k, "pattern"))
        return get_pattern(w, v, n);
    if (!strcmp(k, "items")) {
        if (json_is_array(v))
            return failf(w, AOS_ERR_USAGE, "items must be one schema (the array form is "
                         "not supported)");
        return compile_at(w, k, v, depth + 1, &n->items);
    }
    if (!strcmp(k, "additionalProperties")) {
        if (json_is_boolean(v)) {
            n->addl_forbid = json_is_false(v);
            return AOS_OK;
        }
        return compile_at(w, k, v, depth + 1, &n->addl);
    }
    return failf(w, AOS_ERR_USAGE, "unknown keyword '%s' (known: %s)", show(k, b, sizeof b),
                 keywords);
}

static aos_err compile(walk *w, const json_t *j, unsigned depth, node **out)
{
    *out = NULL;
    if (depth > JSCHEMA_DEPTH_MAX)
        return failf(w, AOS_ERR_TOO_BIG, "schemas nested more than %u levels deep",
                     JSCHEMA_DEPTH_MAX);
    if (!json_is_object(j) && !json_is_boolean(j))
        return failf(w, AOS_ERR_USAGE, "a schema must be an object or a boolean, not %s",
                     type_of(j));
    node *n = calloc(1, sizeof *n);
    if (!n)
        return nomem(w);
    n->min_len = n->max_len = n->min_items = n->max_items = -1;
    *out = n;
    if (json_is_boolean(j)) {
        n->never = json_is_false(j);
        return AOS_OK;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v) {
        aos_err rc = keyword(w, k, v, depth, n);
        if (rc)
            return rc; /* the caller frees the partial node */
    }
    return AOS_OK;
}

aos_err jschema_compile(const json_t *schema, jschema **out, char *why, size_t whylen)
{
    walk w;
    walk_init(&w, why, whylen);
    *out = NULL;
    if (!schema)
        return failf(&w, AOS_ERR_USAGE, "no schema");
    jschema *s = calloc(1, sizeof *s);
    if (!s)
        return nomem(&w);
    aos_err rc = compile(&w, schema, 1, &s->root);
    if (rc) {
        jschema_free(s);
        return rc;
    }
    *out = s;
    return AOS_OK;
}
