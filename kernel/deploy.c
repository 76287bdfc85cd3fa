/* The deployment file's checker: one walk over either libyaml's tree (with lines) or a
 * jansson value (the stored canonical form), so the file and the database agree on the rules. */
#include "deploy.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "aos/yjson.h"

#define DEPTH_MAX 32u            /* nesting, anywhere in the file */
#define WHERE_MAX 192u
#define SHOW_MAX 48u
#define PROGRAM_MAX 4095u
#define PROGRAM_NAME_MAX 255u
#define PROVIDER_MAX 32u
#define MODEL_NAME_MAX 128u
#define TOOL_MAX 64u
#define MCP_SERVER_MAX 32u
#define ENV_NAME_MAX 64u
#define MS_MAX 86400000ull        /* the millisecond settings: at most a day */
#define INTENSITY_MAX 100000u
#define PERIOD_MAX 86400u
#define EVERY_MIN_MS 100u
#define DURATION_MAX_MS (3650ull * 86400000ull)
#define WEIGHT_MIN 0.01
#define WEIGHT_MAX 10000.0
#define JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15))

#define LOW "abcdefghijklmnopqrstuvwxyz"
#define UP "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIG "0123456789"

struct dep {
    dep_agent **agents;
    size_t nagents;
    char **collections;
    size_t ncollections;
    char **topics;
    size_t ntopics;
};

/* A value being checked: a node of the YAML document (y), or a JSON value (j). */
typedef struct vnode {
    const yaml_node_t *y;
    json_t *j;
} vnode;

typedef struct ctx {
    const char *file;             /* NULL: checking JSON (no lines) */
    yaml_document_t *doc;         /* NULL: checking JSON */
    dep_known_fn known;           /* NULL: no existence checks */
    void *arg;
    const dep *d;                 /* the file so far (collections, earlier agents); NULL: JSON */
    char *why;
    size_t whylen;
} ctx;

/* ---- messages ----------------------------------------------------------------------- */

static aos_err vfail(ctx *x, aos_err e, vnode n, const char *where, const char *fmt,
                     va_list ap) __attribute__((format(printf, 5, 0)));
static aos_err vfail(ctx *x, aos_err e, vnode n, const char *where, const char *fmt,
                     va_list ap)
{
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (x->doc)
        aos_say(x->why, x->whylen, "%s:%zu:%zu: %s%s%s", x->file,
                n.y ? n.y->start_mark.line + 1 : 1, n.y ? n.y->start_mark.column + 1 : 1,
                where, where[0] ? ": " : "", msg);
    else
        aos_say(x->why, x->whylen, "%s%s%s", where, where[0] ? ": " : "", msg);
    return e;
}

static aos_err fail(ctx *x, vnode n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err fail(ctx *x, vnode n, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aos_err e = vfail(x, AOS_ERR_USAGE, n, where, fmt, ap);
    va_end(ap);
    return e;
}

static aos_err fail_big(ctx *x, vnode n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err fail_big(ctx *x, vnode n, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aos_err e = vfail(x, AOS_ERR_TOO_BIG, n, where, fmt, ap);
    va_end(ap);
    return e;
}

static aos_err nomem(ctx *x)
{
    aos_say(x->why, x->whylen, "%s%sout of memory", x->file ? x->file : "",
            x->file ? ": " : "");
    return AOS_ERR_NOMEM;
}

/* "agents[1]" + "budgets"; a path past WHERE_MAX is cut (it only goes into messages) */
static const char *sub(char *buf, const char *where, const char *key)
{
    if (snprintf(buf, WHERE_MAX, "%s%s%s", where, where[0] ? "." : "", key) < 0)
        buf[0] = 0;
    return buf;
}

static const char *item(char *buf, const char *where, size_t i)
{
    if (snprintf(buf, WHERE_MAX, "%s[%zu]", where, i) < 0)
        buf[0] = 0;
    return buf;
}

/* ---- values ------------------------------------------------------------------------- */

enum { V_SCALAR, V_MAP, V_SEQ };

static int kind(vnode n)
{
    if (n.y)
        return n.y->type == YAML_MAPPING_NODE    ? V_MAP
               : n.y->type == YAML_SEQUENCE_NODE ? V_SEQ
                                                 : V_SCALAR;
    return json_is_object(n.j) ? V_MAP : json_is_array(n.j) ? V_SEQ : V_SCALAR;
}

static const char *kind_name(vnode n)
{
    int k = kind(n);
    return k == V_MAP ? "a mapping" : k == V_SEQ ? "a sequence" : "a single value";
}

static int present(vnode n)
{
    return n.y || n.j;
}

/* Absent, or written as null (key: with nothing after it): the default. */
static int absent(vnode n)
{
    if (n.y)
        return n.y->type == YAML_SCALAR_NODE && aos_yjson_is_null(n.y);
    return !n.j || json_is_null(n.j);
}

static size_t seq_len(vnode n)
{
    if (n.y)
        return (size_t)(n.y->data.sequence.items.top - n.y->data.sequence.items.start);
    return json_array_size(n.j);
}

static vnode seq_at(ctx *x, vnode n, size_t i)
{
    vnode r = {0};
    if (n.y)
        r.y = yaml_document_get_node(x->doc, n.y->data.sequence.items.start[i]);
    else
        r.j = json_array_get(n.j, i);
    return r;
}

/* A value fit to be quoted in a message: short, one line, printable. */
static const char *show_bytes(const unsigned char *s, size_t len, char *buf, size_t cap)
{
    size_t i = 0, o = 0;
    for (; i < len && i < SHOW_MAX && o + 4 < cap; i++)
        buf[o++] = s[i] < 0x20 || s[i] >= 0x7f ? '?' : (char)s[i];
    if (i < len && o + 4 < cap)
        buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o] = 0;
    return buf;
}

static const char *show(vnode n, char *buf, size_t cap)
{
    const unsigned char *s;
    size_t len;
    char *dumped = NULL;
    if (kind(n) != V_SCALAR) {
        snprintf(buf, cap, "%s", kind_name(n));
        return buf;
    }
    if (n.y) {
        s = n.y->data.scalar.value;
        len = n.y->data.scalar.length;
    } else if (json_is_string(n.j)) {
        s = (const unsigned char *)json_string_value(n.j);
        len = json_string_length(n.j);
    } else {
        dumped = json_dumps(n.j, JSON_ENCODE_ANY | JSON_FLAGS);
        s = (const unsigned char *)(dumped ? dumped : "?");
        len = strlen((const char *)s);
    }
    show_bytes(s, len, buf, cap);
    free(dumped);
    return buf;
}

/* Checks that n is a mapping whose keys are all in names (NULL-terminated), each once, and
 * puts each key's value in vals[i] (absent: all zero). A typo must not pass as an absent
 * setting, so any other key is refused with the list of the valid ones. */
static aos_err keys(ctx *x, vnode n, const char *where, const char *const *names, vnode *vals)
{
    size_t nn = 0;
    char b[SHOW_MAX + 8], list[512] = "";
    while (names[nn])
        nn++;
    for (size_t i = 0; i < nn; i++)
        vals[i] = (vnode){0};
    if (kind(n) != V_MAP)
        return fail(x, n, where, "expects a mapping of keys (%s ...), not %s", names[0],
                    kind_name(n));
    for (size_t j = 0, used = 0; j < nn && used < sizeof list; j++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", j ? ", " : "",
                                 names[j]);
    if (!n.y) {
        const char *k;
        json_t *v;
        json_object_foreach(n.j, k, v) {
            size_t i = 0;
            while (i < nn && strcmp(names[i], k))
                i++;
            if (i == nn)
                return fail(x, n, where, "unknown key '%.64s' (expected one of: %s)", k, list);
            vals[i].j = v;
        }
        return AOS_OK;
    }
    size_t line[24] = {0};
    if (nn > sizeof line / sizeof line[0])
        return fail(x, n, where, "internal: too many keys in a table");
    for (yaml_node_pair_t *p = n.y->data.mapping.pairs.start; p < n.y->data.mapping.pairs.top;
         p++) {
        vnode k = {.y = yaml_document_get_node(x->doc, p->key)};
        vnode v = {.y = yaml_document_get_node(x->doc, p->value)};
        if (!k.y || !v.y)
            return fail(x, n, where, "a broken mapping");
        if (k.y->type != YAML_SCALAR_NODE)
            return fail(x, k, where, "a key must be a plain word, not %s", kind_name(k));
        size_t i = 0;
        /* a key with a NUL in it ("name\0x") is no key of ours */
        while (i < nn && (strcmp(names[i], (const char *)k.y->data.scalar.value) ||
                          strlen(names[i]) != k.y->data.scalar.length))
            i++;
        if (i == nn)
            return fail(x, k, where, "unknown key '%s' (expected one of: %s)",
                        show(k, b, sizeof b), list);
        if (vals[i].y)
            return fail(x, k, where, "key '%s' given twice (first on line %zu)", names[i],
                        line[i]);
        vals[i] = v;
        line[i] = k.y->start_mark.line + 1;
    }
    return AOS_OK;
}

/* The typed value of a scalar (YAML 1.2 core typing for the file's plain scalars) as a new
 * reference. */
static aos_err typed(ctx *x, vnode n, const char *where, const char *what, json_t **out)
{
    char b[SHOW_MAX + 8];
    if (kind(n) != V_SCALAR)
        return fail(x, n, where, "expects %s, not %s", what, kind_name(n));
    if (!n.y) {
        *out = json_incref(n.j);
        return AOS_OK;
    }
    aos_yjson_err ye;
    if (!(*out = aos_yjson(x->doc, n.y, 1, &ye)))
        return ye.code == AOS_ERR_NOMEM ? nomem(x)
                                        : fail(x, n, where, "'%s': %s", show(n, b, sizeof b),
                                               ye.what);
    return AOS_OK;
}

enum { S_LINE = 0, S_EMPTY = 1, S_MULTILINE = 2 };

/* A string of at most max bytes: in the file any scalar's text (as YAML users expect of
 * `DEBUG: 1`), in JSON a string. No NUL; S_LINE: no control characters either; empty only
 * with S_EMPTY. *out points into the document or the JSON value. */
static aos_err get_str(ctx *x, vnode n, const char *where, size_t max, int flags,
                       const char **out, size_t *outlen)
{
    const char *s;
    size_t len;
    if (kind(n) != V_SCALAR)
        return fail(x, n, where, "expects a string, not %s", kind_name(n));
    if (n.y) {
        if (aos_yjson_is_null(n.y))
            return fail(x, n, where, "is empty%s",
                        flags & S_EMPTY ? " (write \"\" for an empty string)" : "");
        s = (const char *)n.y->data.scalar.value;
        len = n.y->data.scalar.length;
    } else {
        if (!json_is_string(n.j))
            return fail(x, n, where, "expects a string");
        s = json_string_value(n.j);
        len = json_string_length(n.j);
    }
    if (len > max)
        return fail_big(x, n, where, "is %zu bytes, more than %zu", len, max);
    if (!len && !(flags & S_EMPTY))
        return fail(x, n, where, "is empty");
    if (strlen(s) != len)
        return fail(x, n, where, "holds a NUL byte");
    if (!(flags & S_MULTILINE))
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return fail(x, n, where, "holds a control character (byte %zu)", i + 1);
    if (n.y) {
        json_t *t = json_stringn(s, len); /* jansson's own UTF-8 check: JSON must hold it */
        if (!t)
            return fail(x, n, where, "is not valid UTF-8");
        json_decref(t);
    }
    *out = s;
    if (outlen)
        *outlen = len;
    return AOS_OK;
}

/* Rounds to 15 significant digits, which survive text -> double -> text (DBL_DIG): the
 * canonical JSON prints that many, so a value reads back to the same double. */
static double norm(double d)
{
    char b[40];
    snprintf(b, sizeof b, "%.15g", d);
    d = strtod(b, NULL);
    return d == 0 ? 0 : d; /* -0 is 0 */
}

/* A number: *isint says it was written as an integer (*iv). */
static aos_err get_num(ctx *x, vnode n, const char *where, const char *want, double *d,
                       int *isint, json_int_t *iv)
{
    char b[SHOW_MAX + 8];
    json_t *j;
    aos_err rc = typed(x, n, where, "a number", &j);
    if (rc)
        return rc;
    *isint = json_is_integer(j);
    *iv = *isint ? json_integer_value(j) : 0;
    *d = *isint ? (double)*iv : json_is_real(j) ? json_real_value(j) : NAN;
    json_decref(j);
    if (!isfinite(*d))
        return fail(x, n, where, "%s, not '%s'", want, show(n, b, sizeof b));
    return AOS_OK;
}

/* A budget: a non-negative whole number up to DEP_BUDGET_MAX. */
static aos_err get_budget(ctx *x, vnode n, const char *where, uint64_t *out)
{
    double d;
    int isint;
    json_int_t iv;
    aos_err rc = get_num(x, n, where, "must be a non-negative number", &d, &isint, &iv);
    if (rc)
        return rc;
    if (d < 0 || (isint && iv < 0))
        return fail(x, n, where, "must be a non-negative number");
    if (!isint && d != floor(d))
        return fail(x, n, where, "must be a whole number");
    if (d > (double)DEP_BUDGET_MAX || (isint && (uint64_t)iv > DEP_BUDGET_MAX))
        return fail(x, n, where, "is more than %llu", (unsigned long long)DEP_BUDGET_MAX);
    *out = isint ? (uint64_t)iv : (uint64_t)d;
    return AOS_OK;
}

static aos_err get_uint(ctx *x, vnode n, const char *where, uint64_t min, uint64_t max,
                        uint64_t *out)
{
    char b[SHOW_MAX + 8], want[96];
    double d;
    int isint;
    json_int_t iv;
    snprintf(want, sizeof want, "expects a whole number from %llu to %llu",
             (unsigned long long)min, (unsigned long long)max);
    aos_err rc = get_num(x, n, where, want, &d, &isint, &iv);
    if (rc)
        return rc;
    if (!isint)
        return fail(x, n, where, "%s, not '%s'", want, show(n, b, sizeof b));
    if (iv < 0 || (uint64_t)iv < min || (uint64_t)iv > max)
        return fail(x, n, where, "%lld is out of range (%llu to %llu)", (long long)iv,
                    (unsigned long long)min, (unsigned long long)max);
    *out = (uint64_t)iv;
    return AOS_OK;
}

static aos_err get_bool(ctx *x, vnode n, const char *where, int *out)
{
    char b[SHOW_MAX + 8];
    json_t *j;
    aos_err rc = typed(x, n, where, "true or false", &j);
    if (rc)
        return rc;
    int ok = json_is_boolean(j);
    *out = json_is_true(j);
    json_decref(j);
    return ok ? AOS_OK : fail(x, n, where, "expects true or false, not '%s'",
                              show(n, b, sizeof b));
}

/* ---- names -------------------------------------------------------------------------- */

static int word_ok(const char *s, const char *first, const char *rest, size_t max)
{
    size_t n = strlen(s);
    return n >= 1 && n <= max && strchr(first, s[0]) && strspn(s + 1, rest) == n - 1;
}

static int name_ok(const char *s)
{
    return word_ok(s, LOW DIG, LOW DIG "_-", DEP_NAME_MAX);
}

static int tool_ok(const char *s)
{
    return word_ok(s, UP LOW DIG "_.-", UP LOW DIG "_.-", TOOL_MAX);
}

static int mcp_tool_ok(const char *s)
{
    const char *slash = strchr(s, '/');
    char server[MCP_SERVER_MAX + 1];
    if (!slash || (size_t)(slash - s) > MCP_SERVER_MAX)
        return 0;
    memcpy(server, s, (size_t)(slash - s));
    server[slash - s] = 0;
    return word_ok(server, LOW, LOW DIG "_-", MCP_SERVER_MAX) && tool_ok(slash + 1);
}

/* "provider/model" (the model's own name may hold further slashes) or a bare model name,
 * in aos.yaml's alphabets. */
static int model_ok(const char *s)
{
    const char *slash = strchr(s, '/');
    char prov[PROVIDER_MAX + 1];
    if (!slash)
        return word_ok(s, UP LOW DIG "._:@+-", UP LOW DIG "._:@+-", MODEL_NAME_MAX);
    if ((size_t)(slash - s) > PROVIDER_MAX)
        return 0;
    memcpy(prov, s, (size_t)(slash - s));
    prov[slash - s] = 0;
    return word_ok(prov, LOW DIG "_-", LOW DIG "_-", PROVIDER_MAX) &&
           word_ok(slash + 1, UP LOW DIG "._:@+-", UP LOW DIG "._:/@+-", MODEL_NAME_MAX);
}

static int env_name_ok(const char *s)
{
    return word_ok(s, UP "_", UP DIG "_", ENV_NAME_MAX);
}

static int program_ok(const char *s)
{
    return s[0] == '/' || word_ok(s, LOW DIG, LOW DIG "_.-", PROGRAM_NAME_MAX);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "NAME=value" by NAME, as JSON_SORT_KEYS orders the env object */
static int cmp_env(const void *a, const void *b)
{
    const char *s = *(char *const *)a, *t = *(char *const *)b;
    size_t ls = strcspn(s, "="), lt = strcspn(t, "=");
    int c = memcmp(s, t, ls < lt ? ls : lt);
    return c ? c : ls < lt ? -1 : ls > lt;
}

/* Appends s (taken: freed on failure). */
static int push(char ***v, size_t *n, char *s)
{
    if (!s)
        return -1;
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) {
        free(s);
        return -1;
    }
    nv[(*n)++] = s;
    *v = nv;
    return 0;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

typedef struct list_rule {
    const char *what;         /* "a tool's name" */
    int (*ok)(const char *);
    const char *form;         /* "[A-Za-z0-9_.-]{1,64}" */
    size_t max_len, max_items;
    const char *known_kind;   /* for known(); NULL: none */
    int sort;
} list_rule;

/* A sequence of distinct names into *v, *n. */
static aos_err get_names(ctx *x, vnode n, const char *where, const list_rule *r, char ***v,
                         size_t *nv)
{
    char w[WHERE_MAX];
    if (kind(n) != V_SEQ)
        return fail(x, n, where, "expects a sequence of names (like [a, b]), not %s",
                    kind_name(n));
    size_t len = seq_len(n);
    if (len > r->max_items)
        return fail_big(x, n, where, "%zu entries, more than %zu", len, r->max_items);
    for (size_t i = 0; i < len; i++) {
        vnode e = seq_at(x, n, i);
        const char *s;
        aos_err rc;
        if (!present(e))
            return fail(x, n, where, "a broken sequence");
        if ((rc = get_str(x, e, item(w, where, i), r->max_len, S_LINE, &s, NULL)))
            return rc;
        if (!r->ok(s))
            return fail(x, e, w, "'%.64s' is not %s (%s)", s, r->what, r->form);
        for (size_t k = 0; k < *nv; k++)
            if (!strcmp((*v)[k], s))
                return fail(x, e, w, "'%s' is listed twice", s);
        if (r->known_kind && x->known && !x->known(x->arg, r->known_kind, s))
            return fail(x, e, w, "no %s '%s' is known", r->known_kind, s);
        if (push(v, nv, strdup(s)))
            return nomem(x);
    }
    if (r->sort && *nv > 1)
        qsort(*v, *nv, sizeof **v, cmp_str);
    return AOS_OK;
}

static const list_rule name_rule = {"a name", name_ok, "[a-z0-9][a-z0-9_-]{0,63}",
                                    DEP_NAME_MAX, DEP_NAMES_MAX, NULL, 0};

/* ---- durations ---------------------------------------------------------------------- */

aos_err dep_duration_ms(const char *text, uint64_t *out, char *why, size_t whylen)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
                 {"d", 86400000}};
    size_t i = 0;
    uint64_t n = 0;
    while (text[i] >= '0' && text[i] <= '9') {
        if (n <= DURATION_MAX_MS)
            n = n * 10 + (uint64_t)(text[i] - '0');
        i++;
    }
    if (i == 0) {
        aos_say(why, whylen, "'%.32s' is not a duration (like 30s, 500ms, 2m, 1h, 1d, or "
                "whole seconds)", text);
        return AOS_ERR_USAGE;
    }
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++)
        if (!strcmp(text + i, units[u].unit)) {
            if (n > DURATION_MAX_MS / units[u].ms) {
                aos_say(why, whylen, "'%.32s' is longer than 3650 days", text);
                return AOS_ERR_USAGE;
            }
            *out = n * units[u].ms;
            return AOS_OK;
        }
    aos_say(why, whylen, "'%.32s': the unit is ms, s, m, h or d", text);
    return AOS_ERR_USAGE;
}

/* The shortest exact form of a duration dep_duration_ms reads back. */
static void fmt_duration(uint64_t ms, char *buf, size_t cap)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    size_t u = 0;
    while (ms % units[u].ms)
        u++;
    snprintf(buf, cap, "%llu%s", (unsigned long long)(ms / units[u].ms), units[u].unit);
}

/* ---- an agent ----------------------------------------------------------------------- */

enum {
    A_NAME, A_PROGRAM, A_ARGS, A_MODEL, A_TOOLS, A_MCP_TOOLS, A_NETWORK, A_BUDGETS, A_WEIGHT,
    A_PRIORITY, A_RESTART, A_STOP, A_WAKE, A_COLLECTIONS, A_ENV, A_TALKS_TO, A_SUBSCRIBES, A_N
};
static const char *const agent_keys[] = {
    "name", "program", "args", "model", "tools", "mcp_tools", "network", "budgets", "weight",
    "priority", "restart", "stop_timeout_ms", "wake", "collections", "env", "talks_to",
    "subscribes", NULL};
_Static_assert(sizeof agent_keys / sizeof agent_keys[0] == A_N + 1, "a name per key");

static void agent_defaults(dep_agent *a)
{
    a->weight = 1.0;
    a->restart = DEP_RESTART_ON_FAILURE;
    a->intensity = 5;
    a->period_ms = 30000;
    a->backoff_min_ms = 100;
    a->backoff_max_ms = 30000;
    a->stop_timeout_ms = 5000;
}

static aos_err budgets(ctx *x, vnode n, const char *where, dep_agent *a)
{
    static const char *const names[] = {"tokens", "cost_usd", "context_tokens", "wall_s",
                                        "steps", NULL};
    vnode v[5];
    char w[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    uint64_t *dst[5] = {&a->budget_tokens, NULL, &a->budget_context_tokens, &a->budget_wall_s,
                        &a->budget_steps};
    for (int i = 0; i < 5; i++) {
        if (absent(v[i]))
            continue;
        sub(w, where, names[i]);
        if (dst[i]) {
            if ((rc = get_budget(x, v[i], w, dst[i])))
                return rc;
            /* aosd hands it to aos-memory (memory.budget.set), which takes this range */
            if (i == 2 && *dst[i] && (*dst[i] < DEP_CONTEXT_MIN || *dst[i] > DEP_CONTEXT_MAX))
                return fail(x, v[i], w, "must be 0 (none) or %u to %u tokens", DEP_CONTEXT_MIN,
                            DEP_CONTEXT_MAX);
            continue;
        }
        double d;
        int isint;
        json_int_t iv;
        if ((rc = get_num(x, v[i], w, "must be a non-negative number", &d, &isint, &iv)))
            return rc;
        if (d < 0)
            return fail(x, v[i], w, "must be a non-negative number");
        a->budget_cost_usd = norm(d);
    }
    return AOS_OK;
}

/* "R/T": R restarts in T seconds */
static int intensity(const char *s, unsigned *r, uint64_t *period_ms)
{
    unsigned long long v[2] = {0, 0};
    size_t i = 0;
    for (int k = 0; k < 2; k++) {
        size_t st = i;
        while (s[i] >= '0' && s[i] <= '9' && i - st < 7)
            v[k] = v[k] * 10 + (unsigned)(s[i++] - '0');
        if (i == st || (k == 0 && s[i++] != '/'))
            return -1;
    }
    if (s[i] || !v[0] || !v[1] || v[0] > INTENSITY_MAX || v[1] > PERIOD_MAX)
        return -1;
    *r = (unsigned)v[0];
    *period_ms = v[1] * 1000u;
    return 0;
}

static aos_err restart(ctx *x, vnode n, const char *where, dep_agent *a)
{
    static const char *const names[] = {"policy", "intensity", "backoff_min_ms",
                                        "backoff_max_ms", NULL};
    vnode v[4];
    char w[WHERE_MAX], b[SHOW_MAX + 8];
    const char *s;
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (!absent(v[0])) {
        if ((rc = get_str(x, v[0], sub(w, where, "policy"), 32, S_LINE, &s, NULL)))
            return rc;
        if (!strcmp(s, "never"))
            a->restart = DEP_RESTART_NEVER;
        else if (!strcmp(s, "on-failure"))
            a->restart = DEP_RESTART_ON_FAILURE;
        else if (!strcmp(s, "always"))
            a->restart = DEP_RESTART_ALWAYS;
        else
            return fail(x, v[0], w, "expects never, on-failure or always, not '%s'",
                        show(v[0], b, sizeof b));
    }
    if (!absent(v[1])) {
        if ((rc = get_str(x, v[1], sub(w, where, "intensity"), 32, S_LINE, &s, NULL)))
            return rc;
        if (intensity(s, &a->intensity, &a->period_ms))
            return fail(x, v[1], w, "wants R/T (more than R restarts in T seconds: failed; "
                        "R 1..%u, T 1..%u, like 5/30), not '%s'", INTENSITY_MAX, PERIOD_MAX,
                        show(v[1], b, sizeof b));
    }
    if (!absent(v[2]) &&
        (rc = get_uint(x, v[2], sub(w, where, "backoff_min_ms"), 0, MS_MAX, &a->backoff_min_ms)))
        return rc;
    if (!absent(v[3]) &&
        (rc = get_uint(x, v[3], sub(w, where, "backoff_max_ms"), 0, MS_MAX, &a->backoff_max_ms)))
        return rc;
    if (a->backoff_max_ms < a->backoff_min_ms) {
        int at = absent(v[3]) ? 2 : 3;
        return fail(x, v[at], sub(w, where, names[at]),
                    "backoff_max_ms (%llu) is less than backoff_min_ms (%llu)",
                    (unsigned long long)a->backoff_max_ms,
                    (unsigned long long)a->backoff_min_ms);
    }
    return AOS_OK;
}

static aos_err wake(ctx *x, vnode n, const char *where, dep_agent *a)
{
    static const char *const names[] = {"every", "cron", NULL};
    vnode v[2];
    char w[WHERE_MAX], cwhy[256];
    const char *s;
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (!absent(v[0]) && !absent(v[1]))
        return fail(x, n, where, "give one of every or cron, not both");
    if (absent(v[0]) && absent(v[1]))
        return fail(x, n, where, "needs every (an interval) or cron (a schedule)");
    if (!absent(v[0])) {
        sub(w, where, "every");
        char num[32];
        if (v[0].j && json_is_integer(v[0].j)) { /* whole seconds, as in the file */
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v[0].j));
            s = num;
        } else if ((rc = get_str(x, v[0], w, 32, S_LINE, &s, NULL))) {
            return rc;
        }
        if (dep_duration_ms(s, &a->every_ms, cwhy, sizeof cwhy))
            return fail(x, v[0], w, "%s", cwhy);
        if (a->every_ms < EVERY_MIN_MS)
            return fail(x, v[0], w, "%s is shorter than %ums", s, EVERY_MIN_MS);
        return AOS_OK;
    }
    sub(w, where, "cron");
    if ((rc = get_str(x, v[1], w, CRON_TEXT_MAX, S_LINE, &s, NULL)))
        return rc;
    if (cron_parse(s, &a->cron_parsed, cwhy, sizeof cwhy))
        return fail(x, v[1], w, "%s", cwhy);
    return (a->cron = strdup(s)) ? AOS_OK : nomem(x);
}

static aos_err env(ctx *x, vnode n, const char *where, dep_agent *a)
{
    char w[WHERE_MAX], b[SHOW_MAX + 8];
    if (kind(n) != V_MAP)
        return fail(x, n, where, "expects a mapping of NAME: value, not %s", kind_name(n));
    size_t len = n.y ? (size_t)(n.y->data.mapping.pairs.top - n.y->data.mapping.pairs.start)
                     : json_object_size(n.j);
    if (len > DEP_ENV_MAX)
        return fail_big(x, n, where, "%zu variables, more than %u", len, DEP_ENV_MAX);
    yaml_node_pair_t *p = n.y ? n.y->data.mapping.pairs.start : NULL;
    void *it = n.y ? NULL : json_object_iter(n.j);
    for (size_t i = 0; i < len; i++) {
        vnode k = {0}, v = {0};
        const char *name, *val;
        size_t vlen;
        aos_err rc;
        if (n.y) {
            k.y = yaml_document_get_node(x->doc, p[i].key);
            v.y = yaml_document_get_node(x->doc, p[i].value);
            if (!k.y || !v.y)
                return fail(x, n, where, "a broken mapping");
            if (k.y->type != YAML_SCALAR_NODE)
                return fail(x, k, where, "a variable's name must be a plain word");
            name = (const char *)k.y->data.scalar.value;
            if (strlen(name) != k.y->data.scalar.length)
                return fail(x, k, where, "a variable's name holds a NUL byte");
        } else {
            k = n;
            name = json_object_iter_key(it);
            v.j = json_object_iter_value(it);
            it = json_object_iter_next(n.j, it);
        }
        sub(w, where, name);
        if (!env_name_ok(name))
            return fail(x, k, w, "'%s' is not a variable's name ([A-Z_][A-Z0-9_]{0,63})",
                        show_bytes((const unsigned char *)name, strlen(name), b, sizeof b));
        if (!strncmp(name, "AOS_", 4))
            return fail(x, k, w, "names starting AOS_ are aosd's own");
        for (size_t j = 0; j < a->nenv; j++)
            if (!cmp_env(&a->env[j], &name))
                return fail(x, k, w, "'%s' given twice", name);
        if ((rc = get_str(x, v, w, DEP_ENV_VALUE_MAX, S_EMPTY | S_MULTILINE, &val, &vlen)))
            return rc;
        char *e = malloc(strlen(name) + 1 + vlen + 1);
        if (e)
            sprintf(e, "%s=%s", name, val);
        if (push(&a->env, &a->nenv, e))
            return nomem(x);
    }
    if (a->nenv > 1)
        qsort(a->env, a->nenv, sizeof *a->env, cmp_env);
    return AOS_OK;
}

static aos_err agent_fields(ctx *x, vnode n, const char *where, dep_agent *a)
{
    static const list_rule tools = {"a tool's name", tool_ok, "[A-Za-z0-9_.-]{1,64}", TOOL_MAX,
                                    DEP_LIST_MAX, "tool", 1};
    static const list_rule mcp = {"an MCP tool", mcp_tool_ok,
                                  "server/tool, the server [a-z][a-z0-9_-]{0,31}",
                                  MCP_SERVER_MAX + 1 + TOOL_MAX, DEP_LIST_MAX, "mcp_tool", 1};
    static const list_rule colls = {"a name", name_ok, "[a-z0-9][a-z0-9_-]{0,63}",
                                    DEP_NAME_MAX, DEP_LIST_MAX, NULL, 1};
    vnode v[A_N];
    char w[WHERE_MAX], b[SHOW_MAX + 8];
    const char *s;
    size_t len;
    aos_err rc = keys(x, n, where, agent_keys, v);
    if (rc)
        return rc;
    agent_defaults(a);
    if (n.y)
        a->line = (unsigned)(n.y->start_mark.line + 1);

    if (absent(v[A_NAME]))
        return fail(x, present(v[A_NAME]) ? v[A_NAME] : n, where, "an agent needs a name");
    if ((rc = get_str(x, v[A_NAME], sub(w, where, "name"), DEP_NAME_MAX, S_LINE, &s, NULL)))
        return rc;
    if (!name_ok(s))
        return fail(x, v[A_NAME], w, "'%s' is not an agent's name ([a-z0-9][a-z0-9_-]{0,63})",
                    show(v[A_NAME], b, sizeof b));
    for (size_t i = 0; x->d && i < x->d->nagents; i++)
        if (!strcmp(x->d->agents[i]->name, s))
            return fail(x, v[A_NAME], w, "agent '%s' is declared twice (first on line %u)", s,
                        x->d->agents[i]->line);
    memcpy(a->name, s, strlen(s) + 1);

    if (absent(v[A_PROGRAM]))
        return fail(x, present(v[A_PROGRAM]) ? v[A_PROGRAM] : n, where,
                    "an agent needs a program");
    if ((rc = get_str(x, v[A_PROGRAM], sub(w, where, "program"), PROGRAM_MAX, S_LINE, &s, NULL)))
        return rc;
    if (!program_ok(s))
        return fail(x, v[A_PROGRAM], w, "'%s' is neither an absolute path nor a program's name "
                    "in aosd's bin dir ([a-z0-9][a-z0-9_.-]*)", show(v[A_PROGRAM], b, sizeof b));
    if (!(a->program = strdup(s)))
        return nomem(x);

    if (!absent(v[A_ARGS])) {
        sub(w, where, "args");
        if (kind(v[A_ARGS]) != V_SEQ)
            return fail(x, v[A_ARGS], w, "expects a sequence of strings, not %s",
                        kind_name(v[A_ARGS]));
        if (seq_len(v[A_ARGS]) > DEP_ARGS_MAX)
            return fail_big(x, v[A_ARGS], w, "%zu arguments, more than %u",
                            seq_len(v[A_ARGS]), DEP_ARGS_MAX);
        for (size_t i = 0; i < seq_len(v[A_ARGS]); i++) {
            char wi[WHERE_MAX];
            vnode e = seq_at(x, v[A_ARGS], i);
            if (!present(e))
                return fail(x, v[A_ARGS], w, "a broken sequence");
            if ((rc = get_str(x, e, item(wi, w, i), DEP_ARG_MAX, S_EMPTY | S_MULTILINE, &s,
                              &len)))
                return rc;
            if (push(&a->args, &a->nargs, strdup(s)))
                return nomem(x);
        }
    }

    s = "";
    if (!absent(v[A_MODEL])) {
        if ((rc = get_str(x, v[A_MODEL], sub(w, where, "model"), PROVIDER_MAX + 1 + MODEL_NAME_MAX,
                          S_LINE | S_EMPTY, &s, NULL)))
            return rc;
        if (s[0] && !model_ok(s))
            return fail(x, v[A_MODEL], w, "'%s' is not provider/model or a model's name",
                        show(v[A_MODEL], b, sizeof b));
        if (s[0] && x->known && !x->known(x->arg, "model", s))
            return fail(x, v[A_MODEL], w, "no model '%s' is known", s);
    }
    if (!(a->model = strdup(s)))
        return nomem(x);

    if (!absent(v[A_TOOLS]) &&
        (rc = get_names(x, v[A_TOOLS], sub(w, where, "tools"), &tools, &a->tools, &a->ntools)))
        return rc;
    if (!absent(v[A_MCP_TOOLS]) &&
        (rc = get_names(x, v[A_MCP_TOOLS], sub(w, where, "mcp_tools"), &mcp, &a->mcp_tools,
                        &a->nmcp_tools)))
        return rc;
    if (!absent(v[A_NETWORK]) &&
        (rc = get_bool(x, v[A_NETWORK], sub(w, where, "network"), &a->network)))
        return rc;
    if (!absent(v[A_BUDGETS]) && (rc = budgets(x, v[A_BUDGETS], sub(w, where, "budgets"), a)))
        return rc;

    if (!absent(v[A_WEIGHT])) {
        double d;
        int isint;
        json_int_t iv;
        sub(w, where, "weight");
        if ((rc = get_num(x, v[A_WEIGHT], w, "must be a number from 0.01 to 10000", &d,
                          &isint, &iv)))
            return rc;
        d = norm(d);
        if (!(d >= WEIGHT_MIN && d <= WEIGHT_MAX))
            return fail(x, v[A_WEIGHT], w, "%s is out of range (0.01 to 10000)",
                        show(v[A_WEIGHT], b, sizeof b));
        a->weight = d;
    }

    if (!absent(v[A_PRIORITY])) {
        if ((rc = get_str(x, v[A_PRIORITY], sub(w, where, "priority"), 32, S_LINE, &s, NULL)))
            return rc;
        if (strcmp(s, "interactive") && strcmp(s, "batch"))
            return fail(x, v[A_PRIORITY], w, "expects interactive or batch, not '%s'",
                        show(v[A_PRIORITY], b, sizeof b));
        a->batch = !strcmp(s, "batch");
    }
    if (!absent(v[A_RESTART]) && (rc = restart(x, v[A_RESTART], sub(w, where, "restart"), a)))
        return rc;
    if (!absent(v[A_STOP]) && (rc = get_uint(x, v[A_STOP], sub(w, where, "stop_timeout_ms"), 0,
                                             MS_MAX, &a->stop_timeout_ms)))
        return rc;
    if (!absent(v[A_WAKE]) && (rc = wake(x, v[A_WAKE], sub(w, where, "wake"), a)))
        return rc;

    if (!absent(v[A_COLLECTIONS])) {
        sub(w, where, "collections");
        if ((rc = get_names(x, v[A_COLLECTIONS], w, &colls, &a->collections, &a->ncollections)))
            return rc;
        /* which entry was it: the list is sorted now, so look it up in the file's order */
        for (size_t i = 0; x->d && i < seq_len(v[A_COLLECTIONS]); i++) {
            vnode e = seq_at(x, v[A_COLLECTIONS], i);
            const char *c = (const char *)e.y->data.scalar.value;
            size_t k = 0;
            while (k < x->d->ncollections && strcmp(x->d->collections[k], c))
                k++;
            if (k == x->d->ncollections) {
                char wi[WHERE_MAX];
                return fail(x, e, item(wi, w, i), "collection '%s' is not in the file's "
                            "collections list", c);
            }
        }
    }
    if (!absent(v[A_ENV]) && (rc = env(x, v[A_ENV], sub(w, where, "env"), a)))
        return rc;
    /* the agents it names are checked once the whole file is read (file_body): one may
     * name an agent declared after it */
    if (!absent(v[A_TALKS_TO]) && (rc = get_names(x, v[A_TALKS_TO], sub(w, where, "talks_to"),
                                                  &colls, &a->talks_to, &a->ntalks_to)))
        return rc;
    if (!absent(v[A_SUBSCRIBES])) {
        sub(w, where, "subscribes");
        if ((rc = get_names(x, v[A_SUBSCRIBES], w, &colls, &a->subscribes, &a->nsubscribes)))
            return rc;
        for (size_t i = 0; x->d && i < seq_len(v[A_SUBSCRIBES]); i++) {
            vnode e = seq_at(x, v[A_SUBSCRIBES], i);
            const char *t = (const char *)e.y->data.scalar.value;
            size_t k = 0;
            while (k < x->d->ntopics && strcmp(x->d->topics[k], t))
                k++;
            if (k == x->d->ntopics) {
                char wi[WHERE_MAX];
                return fail(x, e, item(wi, w, i), "topic '%s' is not in the file's topics "
                            "list", t);
            }
        }
    }
    return AOS_OK;
}

/* Every name in each agent's talks_to is an agent of the file: a typo is refused by its
 * line, not found at the first send. */
static aos_err check_talks_to(ctx *x, const dep *d, vnode agents)
{
    for (size_t i = 0; i < d->nagents; i++) {
        if (!d->agents[i]->ntalks_to)
            continue;
        vnode v[A_N];
        char where[WHERE_MAX], w[WHERE_MAX], wi[WHERE_MAX];
        item(where, "agents", i);
        aos_err rc = keys(x, seq_at(x, agents, i), where, agent_keys, v);
        if (rc)
            return rc;
        sub(w, where, "talks_to");
        for (size_t j = 0; j < seq_len(v[A_TALKS_TO]); j++) {
            vnode e = seq_at(x, v[A_TALKS_TO], j);
            const char *t = (const char *)e.y->data.scalar.value;
            size_t k = 0;
            while (k < d->nagents && strcmp(d->agents[k]->name, t))
                k++;
            if (k == d->nagents)
                return fail(x, e, item(wi, w, j), "agent '%s' is not an agent of this file", t);
        }
    }
    return AOS_OK;
}

/* n into a new *out the caller owns. */
static aos_err agent(ctx *x, vnode n, const char *where, dep_agent **out)
{
    dep_agent *a = calloc(1, sizeof *a);
    if (!a)
        return nomem(x);
    aos_err rc = agent_fields(x, n, where, a);
    if (rc) {
        dep_agent_free(a);
        return rc;
    }
    *out = a;
    return AOS_OK;
}

/* ---- the file ----------------------------------------------------------------------- */


static aos_err file_body(ctx *x, dep *d)
{
    static const char *const names[] = {"agents", "collections", "topics", NULL};
    vnode v[3];
    const yaml_node_t *root = yaml_document_get_root_node(x->doc);
    if (!root || (root->type == YAML_SCALAR_NODE && aos_yjson_is_null(root)))
        return AOS_OK; /* an empty file: no agents */
    aos_err rc = keys(x, (vnode){.y = root}, "", names, v);
    if (rc)
        return rc;
    if (!absent(v[1]) &&
        (rc = get_names(x, v[1], "collections", &name_rule, &d->collections,
                        &d->ncollections)))
        return rc;
    if (!absent(v[2]) && (rc = get_names(x, v[2], "topics", &name_rule, &d->topics, &d->ntopics)))
        return rc;
    if (absent(v[0]))
        return AOS_OK;
    if (kind(v[0]) != V_SEQ)
        return fail(x, v[0], "agents", "expects a sequence of agents, not %s",
                    kind_name(v[0]));
    size_t n = seq_len(v[0]);
    if (n > DEP_AGENTS_MAX)
        return fail_big(x, v[0], "agents", "%zu agents, more than %u", n, DEP_AGENTS_MAX);
    if (n && !(d->agents = calloc(n, sizeof *d->agents)))
        return nomem(x);
    for (size_t i = 0; i < n; i++) {
        char w[WHERE_MAX];
        vnode e = seq_at(x, v[0], i);
        if (!e.y)
            return fail(x, v[0], "agents", "a broken sequence");
        if ((rc = agent(x, e, item(w, "agents", i), &d->agents[i])))
            return rc;
        d->nagents++;
    }
    return check_talks_to(x, d, v[0]);
}

aos_err dep_parse(const char *text, size_t len, const char *file, dep_known_fn known,
                  void *arg, dep **out, char *why, size_t whylen)
{
    *out = NULL;
    if (!file)
        file = "(deployment)";
    if (len > DEP_FILE_MAX) {
        aos_say(why, whylen, "%s: is %zu bytes, more than the cap of %u", file, len,
                DEP_FILE_MAX);
        return AOS_ERR_TOO_BIG;
    }
    dep *d = calloc(1, sizeof *d);
    if (!d) {
        aos_say(why, whylen, "%s: out of memory", file);
        return AOS_ERR_NOMEM;
    }
    yaml_document_t doc;
    aos_err rc = aos_yaml_load(file, text, len, DEPTH_MAX, &doc, why, whylen);
    if (rc) {
        free(d);
        return rc;
    }
    ctx x = {.file = file, .doc = &doc, .known = known, .arg = arg, .d = d, .why = why,
             .whylen = whylen};
    rc = file_body(&x, d);
    yaml_document_delete(&doc);
    if (rc) {
        dep_free(d);
        return rc;
    }
    *out = d;
    return AOS_OK;
}

void dep_free(dep *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nagents; i++)
        dep_agent_free(d->agents[i]);
    free(d->agents);
    free_list(d->collections, d->ncollections);
    free_list(d->topics, d->ntopics);
    free(d);
}

size_t dep_nagents(const dep *d)
{
    return d->nagents;
}

const dep_agent *dep_agent_at(const dep *d, size_t i)
{
    return i < d->nagents ? d->agents[i] : NULL;
}

size_t dep_ncollections(const dep *d)
{
    return d->ncollections;
}

const char *dep_collection_at(const dep *d, size_t i)
{
    return i < d->ncollections ? d->collections[i] : NULL;
}

size_t dep_ntopics(const dep *d)
{
    return d->ntopics;
}

const char *dep_topic_at(const dep *d, size_t i)
{
    return i < d->ntopics ? d->topics[i] : NULL;
}

/* ---- the canonical JSON ------------------------------------------------------------- */

static json_t *str_array(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *agent_object(const dep_agent *a)
{
    static const char *const policies[] = {"never", "on-failure", "always"};
    json_t *o = json_object(), *b = json_object(), *r = json_object(), *e = json_object(),
           *w = a->every_ms || a->cron ? json_object() : json_null();
    char buf[64];
    int bad = !o || !b || !r || !e || !w || (unsigned)a->restart > DEP_RESTART_ALWAYS;
    if (!bad) {
        bad |= json_object_set_new(b, "tokens", json_integer((json_int_t)a->budget_tokens));
        bad |= json_object_set_new(b, "cost_usd", json_real(a->budget_cost_usd));
        bad |= json_object_set_new(b, "context_tokens",
                                   json_integer((json_int_t)a->budget_context_tokens));
        bad |= json_object_set_new(b, "wall_s", json_integer((json_int_t)a->budget_wall_s));
        bad |= json_object_set_new(b, "steps", json_integer((json_int_t)a->budget_steps));
        bad |= json_object_set_new(r, "policy", json_string(policies[a->restart]));
        snprintf(buf, sizeof buf, "%u/%llu", a->intensity,
                 (unsigned long long)(a->period_ms / 1000));
        bad |= json_object_set_new(r, "intensity", json_string(buf));
        bad |= json_object_set_new(r, "backoff_min_ms",
                                   json_integer((json_int_t)a->backoff_min_ms));
        bad |= json_object_set_new(r, "backoff_max_ms",
                                   json_integer((json_int_t)a->backoff_max_ms));
        for (size_t i = 0; i < a->nenv; i++) {
            size_t k = strcspn(a->env[i], "=");
            char *name = strndup(a->env[i], k);
            bad |= !name || json_object_set_new(e, name, json_string(a->env[i] + k +
                                                                     (a->env[i][k] == '=')));
            free(name);
        }
        if (a->every_ms) {
            fmt_duration(a->every_ms, buf, sizeof buf);
            bad |= json_object_set_new(w, "every", json_string(buf));
        }
        if (a->cron)
            bad |= json_object_set_new(w, "cron", json_string(a->cron));
    }
    if (bad) {
        json_decref(o);
        json_decref(b);
        json_decref(r);
        json_decref(e);
        json_decref(w);
        return NULL;
    }
    bad |= json_object_set_new(o, "budgets", b);
    bad |= json_object_set_new(o, "restart", r);
    bad |= json_object_set_new(o, "env", e);
    bad |= json_object_set_new(o, "wake", w);
    bad |= json_object_set_new(o, "name", json_string(a->name));
    bad |= json_object_set_new(o, "program", json_string(a->program ? a->program : ""));
    bad |= json_object_set_new(o, "args", str_array(a->args, a->nargs));
    bad |= json_object_set_new(o, "model", json_string(a->model ? a->model : ""));
    bad |= json_object_set_new(o, "tools", str_array(a->tools, a->ntools));
    bad |= json_object_set_new(o, "mcp_tools", str_array(a->mcp_tools, a->nmcp_tools));
    bad |= json_object_set_new(o, "network", json_boolean(a->network));
    bad |= json_object_set_new(o, "weight", json_real(a->weight));
    bad |= json_object_set_new(o, "priority", json_string(a->batch ? "batch" : "interactive"));
    bad |= json_object_set_new(o, "stop_timeout_ms", json_integer((json_int_t)a->stop_timeout_ms));
    bad |= json_object_set_new(o, "collections", str_array(a->collections, a->ncollections));
    bad |= json_object_set_new(o, "talks_to", str_array(a->talks_to, a->ntalks_to));
    bad |= json_object_set_new(o, "subscribes", str_array(a->subscribes, a->nsubscribes));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *dep_agent_json(const dep_agent *a)
{
    json_t *o = agent_object(a);
    char *s = o ? json_dumps(o, JSON_FLAGS) : NULL;
    json_decref(o);
    return s;
}

aos_err dep_agent_from_json(const char *json, size_t len, dep_agent **out, char *why,
                            size_t whylen)
{
    *out = NULL;
    json_error_t je;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        aos_say(why, whylen, "not valid JSON: %s (line %d, column %d)", je.text, je.line,
                je.column);
        return AOS_ERR_USAGE;
    }
    ctx x = {.why = why, .whylen = whylen};
    aos_err rc = agent(&x, (vnode){.j = j}, "", out);
    json_decref(j);
    return rc;
}

static char **dup_list(char *const *v, size_t n, int *bad)
{
    if (!n)
        return NULL;
    char **d = calloc(n, sizeof *d);
    for (size_t i = 0; d && i < n; i++)
        if (!(d[i] = strdup(v[i])))
            *bad = 1;
    if (!d)
        *bad = 1;
    return d;
}

dep_agent *dep_agent_dup(const dep_agent *a)
{
    dep_agent *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    *d = *a;
    int bad = 0;
    d->program = d->model = d->cron = NULL;
    d->args = d->tools = d->mcp_tools = d->collections = d->env = NULL;
    d->talks_to = d->subscribes = NULL;
    size_t counts[5] = {a->nargs, a->ntools, a->nmcp_tools, a->ncollections, a->nenv};
    d->nargs = d->ntools = d->nmcp_tools = d->ncollections = d->nenv = 0;
    if ((a->program && !(d->program = strdup(a->program))) ||
        (a->model && !(d->model = strdup(a->model))) || (a->cron && !(d->cron = strdup(a->cron))))
        bad = 1;
    /* a strdup that failed left a NULL in its list, which free_list frees as nothing */
    d->args = dup_list(a->args, counts[0], &bad);
    d->nargs = d->args ? counts[0] : 0;
    d->tools = dup_list(a->tools, counts[1], &bad);
    d->ntools = d->tools ? counts[1] : 0;
    d->mcp_tools = dup_list(a->mcp_tools, counts[2], &bad);
    d->nmcp_tools = d->mcp_tools ? counts[2] : 0;
    d->collections = dup_list(a->collections, counts[3], &bad);
    d->ncollections = d->collections ? counts[3] : 0;
    d->env = dup_list(a->env, counts[4], &bad);
    d->nenv = d->env ? counts[4] : 0;
    d->talks_to = dup_list(a->talks_to, a->ntalks_to, &bad);
    d->ntalks_to = d->talks_to ? a->ntalks_to : 0;
    d->subscribes = dup_list(a->subscribes, a->nsubscribes, &bad);
    d->nsubscribes = d->subscribes ? a->nsubscribes : 0;
    if (bad) {
        dep_agent_free(d);
        return NULL;
    }
    return d;
}

void dep_agent_free(dep_agent *a)
{
    if (!a)
        return;
    free(a->program);
    free(a->model);
    free(a->cron);
    free_list(a->args, a->nargs);
    free_list(a->tools, a->ntools);
    free_list(a->mcp_tools, a->nmcp_tools);
    free_list(a->collections, a->ncollections);
    free_list(a->env, a->nenv);
    free_list(a->talks_to, a->ntalks_to);
    free_list(a->subscribes, a->nsubscribes);
    free(a);
}

/* ---- diff --------------------------------------------------------------------------- */

static int str_eq(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b)) || (!a && b && !b[0]) || (!b && a && !a[0]);
}

static int list_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]))
            return 0;
    return 1;
}

size_t dep_agent_diff(const dep_agent *a, const dep_agent *b, const char **out, size_t cap)
{
    const struct {
        const char *name;
        int same;
    } f[] = {
        {"args", list_eq(a->args, a->nargs, b->args, b->nargs)},
        {"budgets", a->budget_tokens == b->budget_tokens &&
                        a->budget_cost_usd == b->budget_cost_usd &&
                        a->budget_context_tokens == b->budget_context_tokens &&
                        a->budget_wall_s == b->budget_wall_s && a->budget_steps == b->budget_steps},
        {"collections", list_eq(a->collections, a->ncollections, b->collections, b->ncollections)},
        {"env", list_eq(a->env, a->nenv, b->env, b->nenv)},
        {"mcp_tools", list_eq(a->mcp_tools, a->nmcp_tools, b->mcp_tools, b->nmcp_tools)},
        {"model", str_eq(a->model, b->model)},
        {"name", !strcmp(a->name, b->name)},
        {"network", !a->network == !b->network},
        {"priority", !a->batch == !b->batch},
        {"program", str_eq(a->program, b->program)},
        {"restart", a->restart == b->restart && a->intensity == b->intensity &&
                        a->period_ms == b->period_ms && a->backoff_min_ms == b->backoff_min_ms &&
                        a->backoff_max_ms == b->backoff_max_ms},
        {"stop_timeout_ms", a->stop_timeout_ms == b->stop_timeout_ms},
        {"subscribes", list_eq(a->subscribes, a->nsubscribes, b->subscribes, b->nsubscribes)},
        {"talks_to", list_eq(a->talks_to, a->ntalks_to, b->talks_to, b->ntalks_to)},
        {"tools", list_eq(a->tools, a->ntools, b->tools, b->ntools)},
        {"wake", a->every_ms == b->every_ms && !a->cron == !b->cron &&
                     (!a->cron || !strcmp(a->cron, b->cron))},
        {"weight", a->weight == b->weight},
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!f[i].same) {
            if (n < cap)
                out[n] = f[i].name;
            n++;
        }
    return n;
}
