/* aos.yaml's parser: libyaml's document tree checked key by key into the kernel's settings
 * and the LLM gateway's Aos__Llm__Config; every refusal names file:line:column and why. */
#include "conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sodium.h>
#include <unistd.h>
#include <yaml.h>

#include "aos/envelope.h"
#include "aos/readall.h"
#include "aos/yjson.h"

#define DEPTH_MAX 32u           /* nesting of mappings and sequences, anywhere */
#define NAME_MAX_ 32u           /* a provider's name */
#define MODEL_NAME_MAX 128u
#define URL_MAX 2048u
#define ENV_NAME_MAX 64u
#define VERSION_MAX 32u
#define SYNONYMS_MAX 1024u
#define SYNONYM_MAX 4096u
#define TEXT_MAX (64u * 1024u)  /* a turn's text, its expect, a tool call's arguments */
#define CALLS_MAX 64u           /* tool calls in one turn */
#define TOOL_NAME_MAX 64u
#define CALL_ID_MAX 128u
#define WHERE_MAX 160u
#define MS_MAX 86400000ull      /* the kernel's millisecond settings, as the flags */
#define SHOW_MAX 48u            /* a value echoed in a message */

struct conf {
    char *path;
    int from_file;
    conf_kernel k;
    Aos__Llm__Config *llm;
    Aos__Tool__Config *tool;   /* NULL: no tools: section */
    Aos__Audit__Config *audit; /* NULL: no audit: section */
    char **secret_vars;        /* environment variables secrets and API keys come from */
    size_t nsecret_vars;
    char **warn;
    size_t nwarn;
};

/* One YAML document being checked: where messages point and what they are about. */
typedef struct ctx {
    const char *file;            /* as the messages name it */
    yaml_document_t *doc;
    const char *dir;             /* absolute: relative paths in the file start here */
    conf *c;
    char *why;
    size_t whylen;
} ctx;

/* ---- messages ----------------------------------------------------------------------- */

static aos_err vfail(ctx *x, aos_err e, const yaml_node_t *n, const char *where,
                     const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static aos_err vfail(ctx *x, aos_err e, const yaml_node_t *n, const char *where,
                     const char *fmt, va_list ap)
{
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    snprintf(x->why, x->whylen, "%s:%zu:%zu: %s%s%s", x->file,
             n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1, where,
             where[0] ? ": " : "", msg);
    return e;
}

static aos_err fail(ctx *x, const yaml_node_t *n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err fail(ctx *x, const yaml_node_t *n, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aos_err e = vfail(x, AOS_ERR_USAGE, n, where, fmt, ap);
    va_end(ap);
    return e;
}

static aos_err fail_big(ctx *x, const yaml_node_t *n, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static aos_err fail_big(ctx *x, const yaml_node_t *n, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aos_err e = vfail(x, AOS_ERR_TOO_BIG, n, where, fmt, ap);
    va_end(ap);
    return e;
}

static aos_err nomem(ctx *x)
{
    snprintf(x->why, x->whylen, "%s: out of memory", x->file);
    return AOS_ERR_NOMEM;
}

/* A value from the file, fit to be quoted in a message: short, one line, printable. */
static const char *show(const yaml_node_t *n, char *buf, size_t cap)
{
    if (n->type != YAML_SCALAR_NODE) {
        snprintf(buf, cap, "%s", n->type == YAML_MAPPING_NODE ? "a mapping" : "a sequence");
        return buf;
    }
    const unsigned char *s = n->data.scalar.value;
    size_t len = n->data.scalar.length, i = 0, o = 0;
    for (; i < len && i < SHOW_MAX && o + 4 < cap; i++)
        buf[o++] = s[i] < 0x20 || s[i] >= 0x7f ? '?' : (char)s[i];
    if (i < len && o + 4 < cap)
        buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
    buf[o] = 0;
    return buf;
}

/* "llm.providers[1]" + "kind" */
/* (a path past WHERE_MAX is cut: it only ever goes into a message) */
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

/* ---- nodes ------------------------------------------------------------------------- */

static yaml_node_t *node(ctx *x, int i)
{
    return yaml_document_get_node(x->doc, i);
}

static int is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static const char *text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static size_t seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_at(ctx *x, const yaml_node_t *n, size_t i)
{
    return node(x, n->data.sequence.items.start[i]);
}

/* Checks that n is a mapping whose keys are all in names (NULL-terminated), each once, and
 * puts each key's value node in vals[i] (NULL when absent). A typo must not pass as an
 * absent setting, so any other key is refused with the list of the valid ones. */
static aos_err keys(ctx *x, const yaml_node_t *n, const char *where,
                    const char *const *names, const yaml_node_t **vals)
{
    size_t nn = 0;
    while (names[nn])
        nn++;
    for (size_t i = 0; i < nn; i++)
        vals[i] = NULL;
    if (n->type != YAML_MAPPING_NODE)
        return fail(x, n, where, "expects a mapping of keys (%s ...), not %s", names[0],
                    n->type == YAML_SCALAR_NODE ? "a single value" : "a sequence");
    const yaml_node_t *at[32] = {0}; /* the widest table, the top level, has 22 */
    if (nn > sizeof at / sizeof at[0])
        return fail(x, n, where, "internal: too many keys in a table");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = node(x, p->key), *v = node(x, p->value);
        char b[SHOW_MAX + 8];
        if (!k || !v)
            return fail(x, n, where, "a broken mapping");
        if (k->type != YAML_SCALAR_NODE)
            return fail(x, k, where, "a key must be a plain word, not %s", show(k, b, sizeof b));
        size_t i = 0;
        while (i < nn && strcmp(names[i], text(k)))
            i++;
        if (i == nn) {
            char list[512] = "";
            size_t used = 0;
            for (size_t j = 0; j < nn && used < sizeof list; j++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                         j ? ", " : "", names[j]);
            return fail(x, k, where, "unknown key '%s' (expected one of: %s)",
                        show(k, b, sizeof b), list);
        }
        if (vals[i])
            return fail(x, k, where, "key '%s' given twice (first on line %zu)", names[i],
                        at[i]->start_mark.line + 1);
        vals[i] = v;
        at[i] = k;
    }
    return AOS_OK;
}

static aos_err want_scalar(ctx *x, const yaml_node_t *v, const char *where, const char *what)
{
    if (v->type != YAML_SCALAR_NODE)
        return fail(x, v, where, "expects %s, not %s", what,
                    v->type == YAML_MAPPING_NODE ? "a mapping" : "a sequence");
    return AOS_OK;
}

/* A one-line string of 1..max bytes (no NUL, no control characters); *out points into the
 * document. */
static aos_err get_str(ctx *x, const yaml_node_t *v, const char *where, size_t max,
                       const char **out)
{
    aos_err rc = want_scalar(x, v, where, "a string");
    if (rc)
        return rc;
    size_t len = v->data.scalar.length;
    if (aos_yjson_is_null(v))
        return fail(x, v, where, "is empty");
    if (len > max)
        return fail_big(x, v, where, "is %zu bytes, more than %zu", len, max);
    for (size_t i = 0; i < len; i++)
        if (v->data.scalar.value[i] < 0x20 || v->data.scalar.value[i] == 0x7f)
            return fail(x, v, where, "holds a control character (byte %zu)", i + 1);
    *out = text(v);
    return AOS_OK;
}

/* Any string, newlines too, up to max bytes (a turn's text): ptr and length. */
static aos_err get_text(ctx *x, const yaml_node_t *v, const char *where, size_t max,
                        const char **out, size_t *len)
{
    aos_err rc = want_scalar(x, v, where, "a string");
    if (rc)
        return rc;
    if (v->data.scalar.length > max)
        return fail_big(x, v, where, "is %zu bytes, more than %zu", v->data.scalar.length,
                        max);
    *out = text(v);
    *len = v->data.scalar.length;
    return AOS_OK;
}

static aos_err get_uint(ctx *x, const yaml_node_t *v, const char *where, uint64_t min,
                        uint64_t max, uint64_t *out)
{
    char b[SHOW_MAX + 8];
    aos_err rc = want_scalar(x, v, where, "a whole number");
    if (rc)
        return rc;
    const char *s = text(v);
    size_t len = v->data.scalar.length;
    int digits = is_plain(v) && len > 0 && len <= 20;
    for (size_t i = 0; digits && i < len; i++)
        digits = s[i] >= '0' && s[i] <= '9';
    errno = 0;
    unsigned long long n = digits ? strtoull(s, NULL, 10) : 0;
    if (!digits || errno)
        return fail(x, v, where, "expects a whole number from %llu to %llu, not '%s'",
                    (unsigned long long)min, (unsigned long long)max, show(v, b, sizeof b));
    if (n < min || n > max)
        return fail(x, v, where, "%llu is out of range (%llu to %llu)", n,
                    (unsigned long long)min, (unsigned long long)max);
    *out = n;
    return AOS_OK;
}

static aos_err get_u32(ctx *x, const yaml_node_t *v, const char *where, uint32_t min,
                       uint32_t max, uint32_t *out)
{
    uint64_t n;
    aos_err rc = get_uint(x, v, where, min, max, &n);
    if (!rc)
        *out = (uint32_t)n;
    return rc;
}

static aos_err get_bool(ctx *x, const yaml_node_t *v, const char *where, int *out)
{
    char b[SHOW_MAX + 8];
    const char *s = v->type == YAML_SCALAR_NODE ? text(v) : "";
    if (is_plain(v) && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")))
        *out = 1;
    else if (is_plain(v) && (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")))
        *out = 0;
    else
        return fail(x, v, where, "expects true or false, not '%s'", show(v, b, sizeof b));
    return AOS_OK;
}

/* A price in USD per million tokens: finite, 0 .. 1e6. */
static aos_err get_price(ctx *x, const yaml_node_t *v, const char *where, double *out)
{
    char b[SHOW_MAX + 8];
    aos_err rc = want_scalar(x, v, where, "a number");
    if (rc)
        return rc;
    const char *s = text(v);
    size_t len = v->data.scalar.length;
    int ok = is_plain(v) && len > 0 && len < 64;
    for (size_t i = 0; ok && i < len; i++)
        ok = strchr("0123456789.eE+-", s[i]) != NULL;
    char *end = NULL;
    double d = ok ? strtod(s, &end) : 0;
    if (!ok || end != s + len || !isfinite(d))
        return fail(x, v, where, "expects a number of US dollars, not '%s'",
                    show(v, b, sizeof b));
    if (d < 0 || d > 1e6)
        return fail(x, v, where, "%g is out of range (0 to 1000000)", d);
    *out = d;
    return AOS_OK;
}

/* A path from the file: relative ones start at the file's directory. */
static aos_err get_path(ctx *x, const yaml_node_t *v, const char *where, char *out, size_t cap)
{
    const char *s;
    aos_err rc = get_str(x, v, where, cap - 1, &s);
    if (rc)
        return rc;
    int n = s[0] == '/' ? snprintf(out, cap, "%s", s) : snprintf(out, cap, "%s/%s", x->dir, s);
    if (n < 0 || (size_t)n >= cap)
        return fail_big(x, v, where, "the path is longer than %zu bytes", cap - 1);
    return AOS_OK;
}

/* ---- protobuf building: everything malloc'd, so protobuf_c_message_free_unpacked frees
 * a half-built config as well as a whole one ------------------------------------------- */

static int set_bytes(ProtobufCBinaryData *b, const char *s, size_t len)
{
    uint8_t *p = malloc(len + 1); /* NUL-terminated for the reader's convenience */
    if (!p)
        return -1;
    memcpy(p, s, len);
    p[len] = 0;
    free(b->data);
    b->data = p;
    b->len = len;
    return 0;
}

static int set_cstr(ProtobufCBinaryData *b, const char *s)
{
    return set_bytes(b, s, strlen(s));
}

/* Appends item to *arr (n elements); on failure the caller still owns item. */
static int append(void ***arr, size_t *n, void *item)
{
    void **a = realloc(*arr, (*n + 1) * sizeof *a);
    if (!a)
        return -1;
    a[(*n)++] = item;
    *arr = a;
    return 0;
}

/* A new message of type T, initialised from its INIT value; NULL when out of memory. */
static void *dup_init(size_t size, const void *init)
{
    void *m = malloc(size);
    if (m)
        memcpy(m, init, size);
    return m;
}
#define NEW(T, INIT) ((T *)dup_init(sizeof(T), &(const T)INIT))

/* ---- reading files -------------------------------------------------------------------- */

/* The whole of path (at most CONF_FILE_MAX bytes) into *buf (the caller frees it). *absent
 * is set, with AOS_OK, when the file is not there and may_be_absent. */
static aos_err read_file(const char *path, int may_be_absent, char **buf, size_t *len,
                         int *absent, char *why, size_t whylen)
{
    *buf = NULL;
    *absent = 0;
    /* O_NONBLOCK: a FIFO put in the file's place must not hang the start */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT && may_be_absent) {
            *absent = 1;
            return AOS_OK;
        }
        int e = errno;
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(e));
        return e == ENOENT || e == EACCES ? AOS_ERR_USAGE : AOS_ERR_IO;
    }
    struct stat st;
    aos_err rc = AOS_OK;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
        rc = AOS_ERR_IO;
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "%s is not a regular file", path);
        rc = AOS_ERR_USAGE;
    } else if (st.st_size > (off_t)CONF_FILE_MAX) {
        snprintf(why, whylen, "%s is %lld bytes, more than the cap of %u", path,
                 (long long)st.st_size, CONF_FILE_MAX);
        rc = AOS_ERR_TOO_BIG;
    } else if (!(*buf = aos_read_all(fd, CONF_FILE_MAX, len))) {
        int e = errno;
        snprintf(why, whylen, "cannot read %s: %s", path,
                 e == EFBIG ? "it grew past the cap" : strerror(e));
        rc = e == EFBIG ? AOS_ERR_TOO_BIG : e == ENOMEM ? AOS_ERR_NOMEM : AOS_ERR_IO;
    }
    close(fd);
    return rc;
}

/* Parses buf into doc (the caller deletes it with yaml_document_delete on AOS_OK). */
static aos_err parse(const char *file, const char *buf, size_t len, yaml_document_t *doc,
                     char *why, size_t whylen)
{
    return aos_yaml_load(file, buf, len, DEPTH_MAX, doc, why, whylen);
}

/* ---- the sim script ------------------------------------------------------------------ */

/* A tool call's arguments: a YAML mapping, or a string of JSON text, as a JSON object. */
static aos_err call_arguments(ctx *x, const yaml_node_t *v, const char *where,
                              Aos__Llm__ToolCall *tc)
{
    aos_err rc = AOS_OK;
    json_t *j;
    if (v->type == YAML_SCALAR_NODE && !is_plain(v)) {
        json_error_t je;
        j = json_loadb(text(v), v->data.scalar.length, JSON_REJECT_DUPLICATES, &je);
        if (!j)
            return fail(x, v, where, "not JSON text: %s (at byte %d)", je.text, je.position);
    } else if (v->type == YAML_MAPPING_NODE) {
        aos_yjson_err ye;
        if (!(j = aos_yjson(x->doc, v, DEPTH_MAX, &ye)))
            return ye.code == AOS_ERR_NOMEM    ? nomem(x)
                   : ye.code == AOS_ERR_TOO_BIG ? fail_big(x, ye.at, where, "%s", ye.what)
                                                : fail(x, ye.at, where, "%s", ye.what);
    } else {
        return fail(x, v, where, "expects a mapping (or a quoted JSON object)");
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return fail(x, v, where, "expects a JSON object");
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return nomem(x);
    size_t len = strlen(s);
    if (len > TEXT_MAX)
        rc = fail_big(x, v, where, "the arguments are %zu bytes of JSON, more than %u", len,
                      TEXT_MAX);
    else if (set_bytes(&tc->arguments, s, len))
        rc = nomem(x);
    free(s);
    return rc;
}

static int tool_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= TOOL_NAME_MAX &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

static aos_err script_call(ctx *x, const yaml_node_t *n, const char *where,
                           Aos__Llm__SimTurn *t)
{
    static const char *const names[] = {"id", "name", "arguments", NULL};
    const yaml_node_t *v[3];
    char w[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    Aos__Llm__ToolCall *tc = NEW(Aos__Llm__ToolCall, AOS__LLM__TOOL_CALL__INIT);
    if (!tc || append((void ***)&t->tool_calls, &t->n_tool_calls, tc)) {
        free(tc);
        return nomem(x);
    }
    const char *s;
    if (v[0] && (rc = get_str(x, v[0], sub(w, where, "id"), CALL_ID_MAX, &s)) == AOS_OK &&
        set_cstr(&tc->id, s))
        return nomem(x);
    if (rc)
        return rc;
    if (!v[1])
        return fail(x, n, where, "a tool call needs a name");
    if ((rc = get_str(x, v[1], sub(w, where, "name"), TOOL_NAME_MAX, &s)))
        return rc;
    if (!tool_name_ok(s))
        return fail(x, v[1], w, "a tool's name is [A-Za-z0-9_-]{1,%u}", TOOL_NAME_MAX);
    if (set_cstr(&tc->name, s))
        return nomem(x);
    if (v[2] && !aos_yjson_is_null(v[2]))
        return call_arguments(x, v[2], sub(w, where, "arguments"), tc);
    return AOS_OK;
}

static aos_err script_turn(ctx *x, const yaml_node_t *n, const char *where,
                           Aos__Llm__SimSettings *s)
{
    static const char *const names[] = {"text", "tool_calls", "expect", NULL};
    const yaml_node_t *v[3];
    char w[WHERE_MAX], wi[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    Aos__Llm__SimTurn *t = NEW(Aos__Llm__SimTurn, AOS__LLM__SIM_TURN__INIT);
    if (!t || append((void ***)&s->script, &s->n_script, t)) {
        free(t);
        return nomem(x);
    }
    const char *p = NULL;
    size_t len = 0;
    if (!v[0] && !v[1])
        return fail(x, n, where, "a turn needs text, tool_calls or both");
    if (v[0]) {
        if ((rc = get_text(x, v[0], sub(w, where, "text"), TEXT_MAX, &p, &len)))
            return rc;
        if (set_bytes(&t->text, p, len))
            return nomem(x);
    }
    if (v[2]) {
        if ((rc = get_text(x, v[2], sub(w, where, "expect"), TEXT_MAX, &p, &len)))
            return rc;
        if (set_bytes(&t->expect, p, len))
            return nomem(x);
    }
    if (v[1]) {
        sub(w, where, "tool_calls");
        if (v[1]->type != YAML_SEQUENCE_NODE)
            return fail(x, v[1], w, "expects a sequence of tool calls");
        if (seq_len(v[1]) > CALLS_MAX)
            return fail_big(x, v[1], w, "%zu tool calls, more than %u", seq_len(v[1]),
                            CALLS_MAX);
        for (size_t i = 0; i < seq_len(v[1]); i++)
            if ((rc = script_call(x, seq_at(x, v[1], i), item(wi, w, i), t)))
                return rc;
    }
    return AOS_OK;
}

/* Reads the sim script that n (in the config) names into s->script. Its own errors point
 * into the script file. */
static aos_err load_script(ctx *x, const yaml_node_t *n, const char *where,
                           Aos__Llm__SimSettings *s)
{
    char path[CONF_PATH_MAX], rwhy[600];
    aos_err rc = get_path(x, n, where, path, sizeof path);
    if (rc)
        return rc;
    if (set_cstr(&s->script_path, path))
        return nomem(x);
    char *buf;
    size_t len;
    int absent;
    if ((rc = read_file(path, 0, &buf, &len, &absent, rwhy, sizeof rwhy)))
        return rc == AOS_ERR_NOMEM ? nomem(x) : fail(x, n, where, "%s", rwhy);
    yaml_document_t doc;
    ctx sx = {.file = path, .doc = &doc, .dir = x->dir, .c = x->c, .why = x->why,
              .whylen = x->whylen};
    if ((rc = parse(path, buf, len, &doc, x->why, x->whylen))) {
        free(buf);
        return rc;
    }
    free(buf);
    static const char *const names[] = {"turns", NULL};
    const yaml_node_t *v[1] = {NULL}, *root = yaml_document_get_root_node(&doc);
    if (!root)
        rc = fail(&sx, NULL, "", "the script is empty: it needs turns:");
    else if (!(rc = keys(&sx, root, "", names, v)) && !v[0])
        rc = fail(&sx, root, "", "the script needs turns:");
    else if (!rc && v[0]->type != YAML_SEQUENCE_NODE)
        rc = fail(&sx, v[0], "turns", "expects a sequence of turns");
    else if (!rc && seq_len(v[0]) > CONF_TURNS_MAX)
        rc = fail_big(&sx, v[0], "turns", "%zu turns, more than %u", seq_len(v[0]),
                      CONF_TURNS_MAX);
    char w[WHERE_MAX];
    for (size_t i = 0; !rc && i < seq_len(v[0]); i++)
        rc = script_turn(&sx, seq_at(&sx, v[0], i), item(w, "turns", i), s);
    yaml_document_delete(&doc);
    return rc;
}

/* ---- llm: --------------------------------------------------------------------------- */

static aos_err sim_settings(ctx *x, const yaml_node_t *n, const char *where,
                            Aos__Llm__SimSettings *s)
{
    static const char *const names[] = {"latency_ms", "tokens_per_s", "embed_dim", "synonyms",
                                        "script", NULL};
    const yaml_node_t *v[5];
    char w[WHERE_MAX], wi[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (v[0] && (rc = get_u32(x, v[0], sub(w, where, "latency_ms"), 0, 3600000,
                              &s->latency_ms)))
        return rc;
    if (v[1] && (rc = get_u32(x, v[1], sub(w, where, "tokens_per_s"), 0, 1000000,
                              &s->tokens_per_s)))
        return rc;
    if (v[2] && (rc = get_u32(x, v[2], sub(w, where, "embed_dim"), 1, 4096, &s->embed_dim)))
        return rc;
    if (v[3]) {
        sub(w, where, "synonyms");
        if (v[3]->type != YAML_SEQUENCE_NODE)
            return fail(x, v[3], w, "expects a sequence of strings (words that mean alike)");
        if (seq_len(v[3]) > SYNONYMS_MAX)
            return fail_big(x, v[3], w, "%zu groups, more than %u", seq_len(v[3]),
                            SYNONYMS_MAX);
        for (size_t i = 0; i < seq_len(v[3]); i++) {
            const char *g;
            if ((rc = get_str(x, seq_at(x, v[3], i), item(wi, w, i), SYNONYM_MAX, &g)))
                return rc;
            ProtobufCBinaryData *arr = realloc(s->synonyms, (s->n_synonyms + 1) * sizeof *arr);
            if (!arr)
                return nomem(x);
            s->synonyms = arr;
            arr[s->n_synonyms] = (ProtobufCBinaryData){0};
            if (set_cstr(&arr[s->n_synonyms], g))
                return nomem(x);
            s->n_synonyms++;
        }
    }
    if (v[4])
        return load_script(x, v[4], sub(w, where, "script"), s);
    return AOS_OK;
}

static aos_err limits(ctx *x, const yaml_node_t *n, const char *where, Aos__Llm__Limits *l)
{
    static const char *const names[] = {"max_concurrency", "requests_per_min",
                                        "tokens_per_min", "input_tokens_per_min",
                                        "output_tokens_per_min", "daily_spend_usd", NULL};
    const yaml_node_t *v[6];
    char w[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (v[0] && (rc = get_u32(x, v[0], sub(w, where, "max_concurrency"), 0, 100000,
                              &l->max_concurrency)))
        return rc;
    if (v[1] && (rc = get_u32(x, v[1], sub(w, where, "requests_per_min"), 0, 10000000,
                              &l->requests_per_min)))
        return rc;
    if (v[2] && (rc = get_u32(x, v[2], sub(w, where, "tokens_per_min"), 0, 1000000000,
                              &l->tokens_per_min)))
        return rc;
    if (v[3] && (rc = get_u32(x, v[3], sub(w, where, "input_tokens_per_min"), 0, 1000000000,
                              &l->input_tokens_per_min)))
        return rc;
    if (v[4] && (rc = get_u32(x, v[4], sub(w, where, "output_tokens_per_min"), 0,
                              1000000000, &l->output_tokens_per_min)))
        return rc;
    /* a price's rules: a number, not negative, not absurd */
    if (v[5] && (rc = get_price(x, v[5], sub(w, where, "daily_spend_usd"),
                                &l->daily_spend_usd)))
        return rc;
    return AOS_OK;
}

static int model_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= MODEL_NAME_MAX &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+-") ==
               n;
}

static aos_err model(ctx *x, const yaml_node_t *n, const char *where, Aos__Llm__Provider *p)
{
    static const char *const names[] = {"name", "price", "context_length", "embedding", NULL};
    static const char *const pnames[] = {"input", "output", "cache_read", "cache_write", NULL};
    const yaml_node_t *v[4], *pv[4];
    char w[WHERE_MAX], wp[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (!v[0])
        return fail(x, n, where, "a model needs a name");
    const char *name;
    if ((rc = get_str(x, v[0], sub(w, where, "name"), MODEL_NAME_MAX, &name)))
        return rc;
    if (!model_name_ok(name))
        return fail(x, v[0], w, "a model's name is [A-Za-z0-9._:/@+-]{1,%u}", MODEL_NAME_MAX);
    for (size_t i = 0; i < p->n_models; i++)
        if (!strcmp((const char *)p->models[i]->name.data, name))
            return fail(x, v[0], w, "model '%s' is listed twice in this provider", name);
    Aos__Llm__Model *m = NEW(Aos__Llm__Model, AOS__LLM__MODEL__INIT);
    if (!m || append((void ***)&p->models, &p->n_models, m)) {
        free(m);
        return nomem(x);
    }
    if (set_cstr(&m->name, name))
        return nomem(x);
    if (v[1]) {
        sub(wp, where, "price");
        if ((rc = keys(x, v[1], wp, pnames, pv)))
            return rc;
        double *dst[4] = {&m->price_input, &m->price_output, &m->price_cache_read,
                          &m->price_cache_write};
        for (int i = 0; i < 4; i++)
            if (pv[i] && (rc = get_price(x, pv[i], sub(w, wp, pnames[i]), dst[i])))
                return rc;
    }
    if (v[2] && (rc = get_u32(x, v[2], sub(w, where, "context_length"), 0, 100000000,
                              &m->context_length)))
        return rc;
    int b;
    if (v[3]) {
        if ((rc = get_bool(x, v[3], sub(w, where, "embedding"), &b)))
            return rc;
        m->embedding = b;
    }
    return AOS_OK;
}

static int provider_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= NAME_MAX_ && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static int env_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= ENV_NAME_MAX && !(s[0] >= '0' && s[0] <= '9') &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

/* http(s)://host...: printable ASCII, a host, no user:password@ (the key has its own
 * place, and a URL is shown by `aosctl config check` and llm.providers). */
static const char *url_problem(const char *u)
{
    size_t skip = !strncmp(u, "https://", 8) ? 8 : !strncmp(u, "http://", 7) ? 7 : 0;
    if (!skip)
        return "must start with http:// or https://";
    for (const unsigned char *p = (const unsigned char *)u; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return "holds a space, a control character or non-ASCII bytes";
    size_t host = strcspn(u + skip, "/?#");
    if (host == 0)
        return "has no host after the scheme";
    if (memchr(u + skip, '@', host))
        return "holds credentials (user@host): give the key through api_key_env";
    return NULL;
}

static aos_err add_warning(ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static aos_err add_warning(ctx *x, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *s = strdup(msg);
    if (!s || append((void ***)&x->c->warn, &x->c->nwarn, s)) {
        free(s);
        return nomem(x);
    }
    return AOS_OK;
}

/* The key from the named variable. Its value is never put in a message: only its name. */
/* Remembers var as one a secret is read from, so that no child's environment carries it. */
static aos_err secret_var(ctx *x, const char *var)
{
    char *s = strdup(var);
    if (!s || append((void ***)&x->c->secret_vars, &x->c->nsecret_vars, s)) {
        free(s);
        return nomem(x);
    }
    return AOS_OK;
}

static aos_err api_key(ctx *x, const yaml_node_t *n, const char *where, Aos__Llm__Provider *p,
                       const char *var)
{
    if (secret_var(x, var))
        return AOS_ERR_NOMEM;
    const char *key = getenv(var);
    if (!key || !key[0])
        return add_warning(x, "$%s is not set: provider %s has no API key", var,
                    (const char *)p->name.data);
    size_t len = strlen(key);
    if (len > CONF_KEY_MAX)
        return fail(x, n, where, "the value of $%s is %zu bytes, more than %u", var, len,
                    CONF_KEY_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] <= 0x20 || (unsigned char)key[i] >= 0x7f)
            return fail(x, n, where, "the value of $%s holds a space, a control character or "
                        "non-ASCII bytes: an HTTP header cannot carry it", var);
    return set_bytes(&p->api_key, key, len) ? nomem(x) : AOS_OK;
}

static aos_err provider(ctx *x, const yaml_node_t *n, const char *where, Aos__Llm__Config *cfg)
{
    static const char *const names[] = {"name", "kind", "base_url", "api_key_env",
                                        "timeout_ms", "max_retries", "anthropic_version",
                                        "limits", "models", "sim", NULL};
    enum { NAME, KIND, URL, KEYENV, TIMEOUT, RETRIES, AVER, LIMITS, MODELS, SIM };
    const yaml_node_t *v[10];
    char w[WHERE_MAX], wi[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    const char *name, *kind, *s;
    if (!v[NAME])
        return fail(x, n, where, "a provider needs a name");
    if ((rc = get_str(x, v[NAME], sub(w, where, "name"), NAME_MAX_, &name)))
        return rc;
    if (!provider_name_ok(name))
        return fail(x, v[NAME], w, "a provider's name is [a-z0-9_-]{1,%u}", NAME_MAX_);
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (!strcmp((const char *)cfg->providers[i]->name.data, name))
            return fail(x, v[NAME], w, "provider '%s' is defined twice", name);
    if (!v[KIND])
        return fail(x, n, where, "provider %s needs a kind (openai, anthropic or sim)", name);
    if ((rc = get_str(x, v[KIND], sub(w, where, "kind"), 16, &kind)))
        return rc;
    int is_sim = !strcmp(kind, "sim"), is_anthropic = !strcmp(kind, "anthropic");
    if (!is_sim && !is_anthropic && strcmp(kind, "openai"))
        return fail(x, v[KIND], w, "unknown kind '%s' (expected one of: openai, anthropic, sim)",
                    kind);

    Aos__Llm__Provider *p = NEW(Aos__Llm__Provider, AOS__LLM__PROVIDER__INIT);
    if (!p || append((void ***)&cfg->providers, &cfg->n_providers, p)) {
        free(p);
        return nomem(x);
    }
    if (set_cstr(&p->name, name) || set_cstr(&p->kind, kind) ||
        !(p->limits = NEW(Aos__Llm__Limits, AOS__LLM__LIMITS__INIT)))
        return nomem(x);

    if (v[URL]) {
        const char *why;
        if ((rc = get_str(x, v[URL], sub(w, where, "base_url"), URL_MAX, &s)))
            return rc;
        if ((why = url_problem(s)))
            return fail(x, v[URL], w, "base_url %s", why);
        if (set_cstr(&p->base_url, s))
            return nomem(x);
    } else if (!is_sim) {
        return fail(x, n, where, "provider %s (kind %s) needs a base_url", name, kind);
    }
    if (v[AVER]) {
        sub(w, where, "anthropic_version");
        if (!is_anthropic)
            return fail(x, v[AVER], w, "is for kind anthropic only (this is %s)", kind);
        if ((rc = get_str(x, v[AVER], w, VERSION_MAX, &s)))
            return rc;
        if (set_cstr(&p->anthropic_version, s))
            return nomem(x);
    }
    if (v[SIM] && !is_sim)
        return fail(x, v[SIM], sub(w, where, "sim"), "is for kind sim only (this is %s)", kind);
    if (v[TIMEOUT] && (rc = get_u32(x, v[TIMEOUT], sub(w, where, "timeout_ms"), 0, 3600000,
                                    &p->timeout_ms)))
        return rc;
    if (v[RETRIES] && (rc = get_u32(x, v[RETRIES], sub(w, where, "max_retries"), 0, 10,
                                    &p->max_retries)))
        return rc;
    if (v[LIMITS] && (rc = limits(x, v[LIMITS], sub(w, where, "limits"), p->limits)))
        return rc;
    if (is_sim) {
        if (!(p->sim = NEW(Aos__Llm__SimSettings, AOS__LLM__SIM_SETTINGS__INIT)))
            return nomem(x);
        if (v[SIM] && (rc = sim_settings(x, v[SIM], sub(w, where, "sim"), p->sim)))
            return rc;
    }

    sub(w, where, "models");
    if (!v[MODELS])
        return fail(x, n, where, "provider %s needs models: (at least one)", name);
    if (v[MODELS]->type != YAML_SEQUENCE_NODE || seq_len(v[MODELS]) == 0)
        return fail(x, v[MODELS], w, "expects a sequence of at least one model");
    if (seq_len(v[MODELS]) > CONF_MODELS_MAX)
        return fail_big(x, v[MODELS], w, "%zu models, more than %u", seq_len(v[MODELS]),
                        CONF_MODELS_MAX);
    for (size_t i = 0; i < seq_len(v[MODELS]); i++)
        if ((rc = model(x, seq_at(x, v[MODELS], i), item(wi, w, i), p)))
            return rc;

    /* last: a bad file is refused for what it says before the environment is read */
    if (v[KEYENV]) {
        sub(w, where, "api_key_env");
        if ((rc = want_scalar(x, v[KEYENV], w, "a variable's name")))
            return rc;
        /* never echoed: a key pasted here by mistake must not reach a log */
        s = text(v[KEYENV]);
        if (strlen(s) != v[KEYENV]->data.scalar.length || !env_name_ok(s))
            return fail(x, v[KEYENV], w, "expects the name of an environment variable "
                        "([A-Z_][A-Z0-9_]{0,%u}), not the key itself", ENV_NAME_MAX - 1);
        if (set_cstr(&p->api_key_env, s))
            return nomem(x);
        if ((rc = api_key(x, v[KEYENV], w, p, s)))
            return rc;
    }
    return AOS_OK;
}

static const Aos__Llm__Provider *find_provider(const Aos__Llm__Config *cfg, const char *name,
                                               size_t len)
{
    for (size_t i = 0; i < cfg->n_providers; i++)
        if (cfg->providers[i]->name.len == len &&
            !memcmp(cfg->providers[i]->name.data, name, len))
            return cfg->providers[i];
    return NULL;
}

/* "a, b, c" of the names of n items, for a message. */
static void list_names(char *out, size_t cap, const ProtobufCBinaryData *const *names, size_t n)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? ", " : "",
                                 (const char *)names[i]->data);
}

static aos_err default_model(ctx *x, const yaml_node_t *v, const char *where,
                             Aos__Llm__Config *cfg)
{
    const char *s;
    char list[400];
    const ProtobufCBinaryData *names[CONF_MODELS_MAX > CONF_PROVIDERS_MAX ? CONF_MODELS_MAX
                                                                          : CONF_PROVIDERS_MAX];
    aos_err rc = get_str(x, v, where, NAME_MAX_ + 1 + MODEL_NAME_MAX, &s);
    if (rc)
        return rc;
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1])
        return fail(x, v, where, "expects provider/model (like sim/sim-1)");
    const Aos__Llm__Provider *p = find_provider(cfg, s, (size_t)(slash - s));
    if (!p) {
        for (size_t i = 0; i < cfg->n_providers; i++)
            names[i] = &cfg->providers[i]->name;
        list_names(list, sizeof list, names, cfg->n_providers);
        return fail(x, v, where, "no provider '%.*s' (providers: %s)", (int)(slash - s), s,
                    list);
    }
    for (size_t i = 0; i < p->n_models; i++)
        if (!strcmp((const char *)p->models[i]->name.data, slash + 1)) {
            if (p->models[i]->embedding)
                return fail(x, v, where, "%s is an embedding model; the default is for chat",
                            s);
            return set_cstr(&cfg->default_model, s) ? nomem(x) : AOS_OK;
        }
    for (size_t i = 0; i < p->n_models; i++)
        names[i] = &p->models[i]->name;
    list_names(list, sizeof list, names, p->n_models);
    return fail(x, v, where, "provider %s has no model '%s' (its models: %s)",
                (const char *)p->name.data, slash + 1, list);
}

/* Without default_model: the first chat model of the first provider that has one. */
static aos_err pick_default(ctx *x, Aos__Llm__Config *cfg)
{
    for (size_t i = 0; i < cfg->n_providers; i++)
        for (size_t j = 0; j < cfg->providers[i]->n_models; j++) {
            const Aos__Llm__Model *m = cfg->providers[i]->models[j];
            if (m->embedding)
                continue;
            char s[NAME_MAX_ + 1 + MODEL_NAME_MAX + 1];
            snprintf(s, sizeof s, "%s/%s", (const char *)cfg->providers[i]->name.data,
                     (const char *)m->name.data);
            return set_cstr(&cfg->default_model, s) ? nomem(x) : AOS_OK;
        }
    return AOS_OK;
}

static aos_err llm_section(ctx *x, const yaml_node_t *n, Aos__Llm__Config *cfg)
{
    static const char *const names[] = {"default_model", "honour_retry_after",
                                        "max_body_bytes", "ca_bundle", "providers", NULL};
    const yaml_node_t *v[5];
    char w[WHERE_MAX], wi[WHERE_MAX];
    aos_err rc = keys(x, n, "llm", names, v);
    if (rc)
        return rc;
    int b;
    if (v[1]) {
        if ((rc = get_bool(x, v[1], "llm.honour_retry_after", &b)))
            return rc;
        cfg->honour_retry_after = b;
    }
    uint64_t u;
    if (v[2]) {
        if ((rc = get_uint(x, v[2], "llm.max_body_bytes", 1024, 1u << 30, &u)))
            return rc;
        cfg->max_body_bytes = u;
    }
    if (v[3]) {
        char path[CONF_PATH_MAX];
        if ((rc = get_path(x, v[3], "llm.ca_bundle", path, sizeof path)))
            return rc;
        if (set_cstr(&cfg->ca_bundle, path))
            return nomem(x);
        /* read here: aos-llm runs in a root that shows /etc and /usr, not this path */
        char *pem, rwhy[600];
        size_t len;
        int absent;
        if ((rc = read_file(path, 0, &pem, &len, &absent, rwhy, sizeof rwhy)))
            return rc == AOS_ERR_NOMEM ? nomem(x) : fail(x, v[3], "llm.ca_bundle", "%s", rwhy);
        int is_pem = len && memmem(pem, len, "-----BEGIN CERTIFICATE-----", 27) != NULL;
        int bad = !is_pem || set_bytes(&cfg->ca_pem, pem, len);
        free(pem);
        if (bad)
            return is_pem ? nomem(x)
                          : fail(x, v[3], "llm.ca_bundle", "%s holds no PEM certificate "
                                 "(-----BEGIN CERTIFICATE-----)", path);
    }
    if (!v[4])
        return fail(x, n, "llm", "needs providers: (at least one)");
    snprintf(w, sizeof w, "llm.providers");
    if (v[4]->type != YAML_SEQUENCE_NODE || seq_len(v[4]) == 0)
        return fail(x, v[4], w, "expects a sequence of at least one provider");
    if (seq_len(v[4]) > CONF_PROVIDERS_MAX)
        return fail_big(x, v[4], w, "%zu providers, more than %u", seq_len(v[4]),
                        CONF_PROVIDERS_MAX);
    for (size_t i = 0; i < seq_len(v[4]); i++)
        if ((rc = provider(x, seq_at(x, v[4], i), item(wi, w, i), cfg)))
            return rc;
    if (v[0])
        return default_model(x, v[0], "llm.default_model", cfg);
    return pick_default(x, cfg);
}

/* The built-in LLM configuration: the offline sim provider only. */
static aos_err builtin_llm(ctx *x, Aos__Llm__Config *cfg)
{
    Aos__Llm__Provider *p = NEW(Aos__Llm__Provider, AOS__LLM__PROVIDER__INIT);
    if (!p || append((void ***)&cfg->providers, &cfg->n_providers, p)) {
        free(p);
        return nomem(x);
    }
    if (set_cstr(&p->name, "sim") || set_cstr(&p->kind, "sim") ||
        !(p->limits = NEW(Aos__Llm__Limits, AOS__LLM__LIMITS__INIT)) ||
        !(p->sim = NEW(Aos__Llm__SimSettings, AOS__LLM__SIM_SETTINGS__INIT)))
        return nomem(x);
    static const char *const models[] = {"sim-1", "sim-embed"};
    for (int i = 0; i < 2; i++) {
        Aos__Llm__Model *m = NEW(Aos__Llm__Model, AOS__LLM__MODEL__INIT);
        if (!m || append((void ***)&p->models, &p->n_models, m)) {
            free(m);
            return nomem(x);
        }
        if (set_cstr(&m->name, models[i]))
            return nomem(x);
        m->embedding = i == 1;
    }
    return set_cstr(&cfg->default_model, "sim/sim-1") ? nomem(x) : AOS_OK;
}

/* ---- tools: aos-tool's MCP servers and secrets ------------------------------------------ */

#define MCP_MAX 16u
#define MCP_ARGS_MAX 64u
#define MCP_ENV_MAX 32u
#define MCP_PATHS_MAX 6u
#define SECRETS_MAX 32u
#define SECRET_MAX (8u << 10)

static int word_ok(const char *s, const char *first, const char *rest, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max || !strchr(first, s[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!strchr(rest, s[i]))
            return 0;
    return 1;
}
#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGIT "0123456789"

/* A sequence of strings into arr (each checked by ok when given, else one line of at most
 * max bytes). */
static aos_err str_list(ctx *x, const yaml_node_t *n, const char *where, size_t maxn,
                        size_t max, int (*ok)(const char *), const char *okwhat,
                        ProtobufCBinaryData **arr, size_t *cnt)
{
    char wi[WHERE_MAX];
    if (n->type != YAML_SEQUENCE_NODE)
        return fail(x, n, where, "expects a sequence of strings");
    if (seq_len(n) > maxn)
        return fail_big(x, n, where, "%zu items, more than %zu", seq_len(n), maxn);
    *arr = calloc(seq_len(n) ? seq_len(n) : 1, sizeof **arr);
    if (!*arr)
        return nomem(x);
    for (size_t i = 0; i < seq_len(n); i++) {
        const yaml_node_t *v = seq_at(x, n, i);
        const char *str;
        aos_err rc = get_str(x, v, item(wi, where, i), max, &str);
        if (rc)
            return rc;
        if (ok && !ok(str))
            return fail(x, v, wi, "expects %s", okwhat);
        if (set_cstr(&(*arr)[i], str))
            return nomem(x);
        (*cnt)++;
    }
    return AOS_OK;
}

static int abs_path_ok(const char *s) { return s[0] == '/' && !strstr(s, "/../"); }
static int env_ok(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || (size_t)(eq - s) > 64)
        return 0;
    for (const char *p = s; p < eq; p++)
        if (!strchr(UPPER LOWER DIGIT "_", *p))
            return 0;
    return 1;
}
static int agent_word_ok(const char *s) { return aos_agent_id_valid(s, strlen(s)); }
static int tool_word_ok(const char *s)
{
    return word_ok(s, LOWER, LOWER DIGIT "_.-", 127);
}

static aos_err mcp_server(ctx *x, const yaml_node_t *n, const char *where,
                          Aos__Tool__Config *cfg)
{
    static const char *const names[] = {"name", "command", "args", "env", "network", "paths",
                                        "time_ms", NULL};
    const yaml_node_t *v[7];
    char w[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    Aos__Tool__McpServer *m = NEW(Aos__Tool__McpServer, AOS__TOOL__MCP_SERVER__INIT);
    if (!m || append((void ***)&cfg->mcp, &cfg->n_mcp, m)) {
        free(m);
        return nomem(x);
    }
    const char *str;
    if (!v[0] || !v[1])
        return fail(x, n, where, "an MCP server needs name and command");
    if ((rc = get_str(x, v[0], sub(w, where, "name"), 32, &str)))
        return rc;
    if (!word_ok(str, LOWER, LOWER DIGIT "_-", 32))
        return fail(x, v[0], w, "a name is [a-z][a-z0-9_-]{0,31}: its tools are "
                    "mcp.<name>.<tool>");
    for (size_t i = 0; i + 1 < cfg->n_mcp; i++)
        if (!strcmp((const char *)cfg->mcp[i]->name.data, str))
            return fail(x, v[0], w, "two MCP servers are named %s", str);
    if (set_cstr(&m->name, str))
        return nomem(x);
    char path[CONF_PATH_MAX];
    if ((rc = get_path(x, v[1], sub(w, where, "command"), path, sizeof path)))
        return rc;
    if (set_cstr(&m->command, path))
        return nomem(x);
    if (v[2] && (rc = str_list(x, v[2], sub(w, where, "args"), MCP_ARGS_MAX, 4096, NULL, NULL,
                               &m->args, &m->n_args)))
        return rc;
    if (v[3] && (rc = str_list(x, v[3], sub(w, where, "env"), MCP_ENV_MAX, 4096, env_ok,
                               "NAME=value strings", &m->env, &m->n_env)))
        return rc;
    int b;
    if (v[4]) {
        if ((rc = get_bool(x, v[4], sub(w, where, "network"), &b)))
            return rc;
        m->network = b;
    }
    if (v[5] && (rc = str_list(x, v[5], sub(w, where, "paths"), MCP_PATHS_MAX, CONF_PATH_MAX - 1,
                               abs_path_ok, "absolute paths (bound read-only)", &m->paths,
                               &m->n_paths)))
        return rc;
    if (v[6]) {
        uint64_t u;
        if ((rc = get_uint(x, v[6], sub(w, where, "time_ms"), 100, 3600000, &u)))
            return rc;
        m->time_ms = (uint32_t)u;
    }
    return AOS_OK;
}

/* A secret's value comes from aosd's environment; it is never put in a message. */
static aos_err secret(ctx *x, const yaml_node_t *n, const char *where, Aos__Tool__Config *cfg)
{
    static const char *const names[] = {"name", "env", "agents", "tools", NULL};
    const yaml_node_t *v[4];
    char w[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (!v[0] || !v[1] || !v[2] || !v[3])
        return fail(x, n, where, "a secret needs name, env, agents and tools");
    Aos__Tool__Secret *sc = NEW(Aos__Tool__Secret, AOS__TOOL__SECRET__INIT);
    if (!sc || append((void ***)&cfg->secrets, &cfg->n_secrets, sc)) {
        free(sc);
        return nomem(x);
    }
    const char *name, *var;
    if ((rc = get_str(x, v[0], sub(w, where, "name"), 64, &name)))
        return rc;
    if (!word_ok(name, UPPER "_", UPPER DIGIT "_", 64))
        return fail(x, v[0], w, "the variable's name in the sandbox is [A-Z_][A-Z0-9_]{0,63}");
    if ((rc = get_str(x, v[1], sub(w, where, "env"), 64, &var)))
        return rc;
    if (!word_ok(var, UPPER LOWER "_", UPPER LOWER DIGIT "_", 64))
        return fail(x, v[1], w, "an environment variable's name");
    if (set_cstr(&sc->name, name))
        return nomem(x);
    if ((rc = str_list(x, v[2], sub(w, where, "agents"), 256, AOS_AGENT_ID_MAX, agent_word_ok,
                       "agent ids", &sc->agents, &sc->n_agents)) ||
        (rc = str_list(x, v[3], sub(w, where, "tools"), 256, 127, tool_word_ok,
                       "tool names (mcp.<server> for an MCP server)", &sc->tools,
                       &sc->n_tools)))
        return rc;
    if ((rc = secret_var(x, var)))
        return rc;
    const char *val = getenv(var);
    if (!val || !val[0])
        return add_warning(x, "$%s is not set: secret %s reaches no tool", var, name);
    size_t len = strlen(val);
    if (len > SECRET_MAX)
        return fail(x, v[1], w, "the value of $%s is %zu bytes, more than %u", var, len,
                    SECRET_MAX);
    return set_bytes(&sc->value, val, len) ? nomem(x) : AOS_OK;
}

static aos_err tools_section(ctx *x, const yaml_node_t *n, Aos__Tool__Config *cfg)
{
    static const char *const names[] = {"mcp", "secrets", NULL};
    const yaml_node_t *v[2];
    char wi[WHERE_MAX];
    aos_err rc = keys(x, n, "tools", names, v);
    if (rc)
        return rc;
    if (v[0]) {
        if (v[0]->type != YAML_SEQUENCE_NODE)
            return fail(x, v[0], "tools.mcp", "expects a sequence of MCP servers");
        if (seq_len(v[0]) > MCP_MAX)
            return fail_big(x, v[0], "tools.mcp", "%zu servers, more than %u", seq_len(v[0]),
                            MCP_MAX);
        for (size_t i = 0; i < seq_len(v[0]); i++)
            if ((rc = mcp_server(x, seq_at(x, v[0], i), item(wi, "tools.mcp", i), cfg)))
                return rc;
    }
    if (v[1]) {
        if (v[1]->type != YAML_SEQUENCE_NODE)
            return fail(x, v[1], "tools.secrets", "expects a sequence of secrets");
        if (seq_len(v[1]) > SECRETS_MAX)
            return fail_big(x, v[1], "tools.secrets", "%zu secrets, more than %u",
                            seq_len(v[1]), SECRETS_MAX);
        for (size_t i = 0; i < seq_len(v[1]); i++)
            if ((rc = secret(x, seq_at(x, v[1], i), item(wi, "tools.secrets", i), cfg)))
                return rc;
    }
    return AOS_OK;
}

/* ---- audit: ------------------------------------------------------------------------------ */

#define OTLP_HEADERS_MAX 16u
#define OTLP_HEADER_VALUE_MAX 4096u

/* audit.otlp.headers[i]: {name, value_env}; the value is read from the environment (a
 * collector's key is a secret like a provider's) and never echoed. */
static aos_err otlp_header(ctx *x, const yaml_node_t *n, const char *where,
                           Aos__Audit__Config *cfg)
{
    static const char *const names[] = {"name", "value_env", NULL};
    const yaml_node_t *v[2];
    char w[WHERE_MAX];
    aos_err rc = keys(x, n, where, names, v);
    if (rc)
        return rc;
    if (!v[0] || !v[1])
        return fail(x, n, where, "needs name: and value_env:");
    const char *name, *var;
    if ((rc = get_str(x, v[0], sub(w, where, "name"), 64, &name)))
        return rc;
    if (!name[0] || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_") != strlen(name))
        return fail(x, v[0], w, "expects an HTTP header name ([A-Za-z0-9_-]{1,64})");
    sub(w, where, "value_env");
    if ((rc = want_scalar(x, v[1], w, "a variable's name")))
        return rc;
    var = text(v[1]);
    if (strlen(var) != v[1]->data.scalar.length || !env_name_ok(var))
        return fail(x, v[1], w, "expects the name of an environment variable "
                    "([A-Z_][A-Z0-9_]{0,%u}), not the value itself", ENV_NAME_MAX - 1);
    if (secret_var(x, var))
        return AOS_ERR_NOMEM;
    const char *val = getenv(var);
    if (!val || !val[0])
        return add_warning(x, "$%s is not set: the OTLP header %s is not sent", var, name);
    size_t len = strlen(val);
    if (len > OTLP_HEADER_VALUE_MAX)
        return fail(x, v[1], w, "the value of $%s is %zu bytes, more than %u", var, len,
                    OTLP_HEADER_VALUE_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)val[i] < 0x20 || (unsigned char)val[i] >= 0x7f)
            return fail(x, v[1], w, "the value of $%s holds a control character or non-ASCII "
                        "bytes: an HTTP header cannot carry it", var);
    Aos__Audit__OtlpHeader *h = NEW(Aos__Audit__OtlpHeader, AOS__AUDIT__OTLP_HEADER__INIT);
    if (!h || set_cstr(&h->name, name) || set_cstr(&h->value, val) ||
        append((void ***)&cfg->otlp_headers, &cfg->n_otlp_headers, h)) {
        if (h)
            protobuf_c_message_free_unpacked(&h->base, NULL);
        return nomem(x);
    }
    return AOS_OK;
}

/* audit: {otlp: {endpoint, headers, batch_size, flush_ms, max_queue_spans, timeout_ms,
 * retry_initial_ms, retry_max_ms}}: where aos-audit sends its spans (the only network it
 * gets, and only when an endpoint is set). */
static aos_err audit_section(ctx *x, const yaml_node_t *n, Aos__Audit__Config *cfg)
{
    static const char *const top[] = {"otlp", NULL};
    const yaml_node_t *t[1];
    aos_err rc = keys(x, n, "audit", top, t);
    if (rc || !t[0])
        return rc;
    enum { EP, HDR, BATCH, FLUSH, QUEUE, TIMEOUT, RETRY0, RETRYMAX, NK };
    static const char *const names[] = {"endpoint", "headers", "batch_size", "flush_ms",
                                        "max_queue_spans", "timeout_ms", "retry_initial_ms",
                                        "retry_max_ms", NULL};
    const yaml_node_t *v[NK];
    if ((rc = keys(x, t[0], "audit.otlp", names, v)))
        return rc;
    if (!v[EP])
        return fail(x, t[0], "audit.otlp", "needs endpoint: (http://host:port/v1/traces)");
    const char *ep, *bad;
    if ((rc = get_str(x, v[EP], "audit.otlp.endpoint", URL_MAX, &ep)))
        return rc;
    if ((bad = url_problem(ep)))
        return fail(x, v[EP], "audit.otlp.endpoint", "%s", bad);
    if (set_cstr(&cfg->otlp_endpoint, ep))
        return nomem(x);
    struct {
        int k;
        const char *where;
        uint64_t min, max;
        uint32_t *dst;
    } nums[] = {
        {BATCH, "audit.otlp.batch_size", 1, 4096, &cfg->batch_size},
        {FLUSH, "audit.otlp.flush_ms", 10, 600000, &cfg->flush_ms},
        {QUEUE, "audit.otlp.max_queue_spans", 1, 65536, &cfg->max_queue_spans},
        {TIMEOUT, "audit.otlp.timeout_ms", 100, 600000, &cfg->timeout_ms},
        {RETRY0, "audit.otlp.retry_initial_ms", 10, 600000, &cfg->retry_initial_ms},
        {RETRYMAX, "audit.otlp.retry_max_ms", 10, 3600000, &cfg->retry_max_ms},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        uint64_t u;
        if (v[nums[i].k]) {
            if ((rc = get_uint(x, v[nums[i].k], nums[i].where, nums[i].min, nums[i].max, &u)))
                return rc;
            *nums[i].dst = (uint32_t)u;
        }
    }
    if (cfg->batch_size && cfg->max_queue_spans && cfg->batch_size > cfg->max_queue_spans)
        return fail(x, v[BATCH], "audit.otlp.batch_size", "%u is more than max_queue_spans "
                    "(%u)", cfg->batch_size, cfg->max_queue_spans);
    if (v[HDR]) {
        if (v[HDR]->type != YAML_SEQUENCE_NODE)
            return fail(x, v[HDR], "audit.otlp.headers", "expects a sequence of {name, "
                        "value_env}");
        if (seq_len(v[HDR]) > OTLP_HEADERS_MAX)
            return fail_big(x, v[HDR], "audit.otlp.headers", "%zu headers, more than %u",
                            seq_len(v[HDR]), OTLP_HEADERS_MAX);
        char wi[WHERE_MAX];
        for (size_t i = 0; i < seq_len(v[HDR]); i++)
            if ((rc = otlp_header(x, seq_at(x, v[HDR], i), item(wi, "audit.otlp.headers", i),
                                  cfg)))
                return rc;
    }
    return AOS_OK;
}

/* ---- the kernel's keys ------------------------------------------------------------------ */

enum { K_PG_DSN, K_PG_BIN_DIR, K_BIN_DIR, K_INTENSITY, K_STABLE, K_HB, K_HB_TIMEOUT, K_STOP,
       K_WORKERS, K_LOG, K_AUDIT_FAIL_OPEN, K_LOG_MAX, K_LOG_KEEP, K_DISK_MIN, K_RUN_RETENTION,
       K_RUN_PRUNE, K_AGENT_MEM, K_AGENT_PIDS, K_LLM, K_TOOLS, K_API, K_AUDIT, K_N };
static const char *const top_names[] = {"pg_dsn", "pg_bin_dir", "bin_dir",
                                        "restart_intensity", "stable_ms", "heartbeat_ms",
                                        "heartbeat_timeout_ms", "stop_timeout_ms", "workers",
                                        "log", "audit_fail_open", "log_max_mb", "log_keep",
                                        "disk_min_free_mb", "run_retention_s",
                                        "run_prune_interval_s",
                                        "agent_memory_mb", "agent_pids_max", "llm", "tools",
                                        "api", "audit", NULL};
_Static_assert(sizeof top_names / sizeof top_names[0] == K_N + 1, "a name per key");

/* A PEM file named at v into *out (malloc'd, NUL-terminated; the caller's conf frees it):
 * read now, as root, so a file aos-api could never open is handed over in its config. */
static aos_err pem_file(ctx *x, const yaml_node_t *v, const char *where, const char *what,
                        char **out, size_t *len)
{
    char path[CONF_PATH_MAX];
    aos_err rc = get_path(x, v, where, path, sizeof path);
    if (rc)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fail(x, v, where, "cannot open %s: %s", path, strerror(errno));
    size_t n = 0;
    char *b = aos_read_all(fd, CONF_PEM_MAX, &n);
    int e = errno;
    close(fd);
    if (!b)
        return e == EFBIG ? fail_big(x, v, where, "%s is over %u KiB", path, CONF_PEM_MAX >> 10)
               : e == ENOMEM ? nomem(x)
                             : fail(x, v, where, "cannot read %s: %s", path, strerror(e));
    if (!memmem(b, n, "-----BEGIN ", 11)) {
        explicit_bzero(b, n);
        free(b);
        return fail(x, v, where, "%s holds no PEM %s", path, what);
    }
    *out = b;
    *len = n;
    return AOS_OK;
}

/* api.listen, api.tls_cert and api.tls_key (a[4..6]) and api.metrics_token_env (a[7]): a
 * front door off loopback serves TLS only, and both halves of it come together. */
static aos_err api_listen(ctx *x, const yaml_node_t *api, const yaml_node_t **a,
                          conf_kernel *k)
{
    aos_err rc;
    const char *s;
    snprintf(k->api_listen, sizeof k->api_listen, "127.0.0.1");
    if (a[4]) {
        struct in_addr in;
        if ((rc = get_str(x, a[4], "api.listen", sizeof k->api_listen - 1, &s)))
            return rc;
        if (inet_pton(AF_INET, s, &in) != 1)
            return fail(x, a[4], "api.listen", "expects an IPv4 address (127.0.0.1, "
                        "0.0.0.0, 192.0.2.7), not '%s'", s);
        snprintf(k->api_listen, sizeof k->api_listen, "%s", s);
    }
    if (!a[5] != !a[6])
        return fail(x, a[5] ? a[5] : a[6], a[5] ? "api.tls_cert" : "api.tls_key",
                    "needs api.%s too (TLS takes a certificate and its key)",
                    a[5] ? "tls_key" : "tls_cert");
    struct in_addr in;
    inet_pton(AF_INET, k->api_listen, &in);
    if (!a[5] && (ntohl(in.s_addr) >> 24) != 127)
        return fail(x, a[4], "api.listen", "%s is off loopback: the front door serves it "
                    "only over TLS (set api.tls_cert and api.tls_key)", k->api_listen);
    if (a[5] && ((rc = pem_file(x, a[5], "api.tls_cert", "certificate", &k->api_tls_cert,
                                &k->api_tls_cert_len)) ||
                 (rc = pem_file(x, a[6], "api.tls_key", "key", &k->api_tls_key,
                                &k->api_tls_key_len))))
        return rc;
    if (a[7]) {
        if ((rc = want_scalar(x, a[7], "api.metrics_token_env", "a variable's name")))
            return rc;
        s = text(a[7]); /* never echoed: a token pasted here by mistake must not be shown */
        if (strlen(s) != a[7]->data.scalar.length || !env_name_ok(s))
            return fail(x, a[7], "api.metrics_token_env", "expects the name of an environment "
                        "variable ([A-Z_][A-Z0-9_]{0,%u}), not the token itself",
                        ENV_NAME_MAX - 1);
        if ((rc = secret_var(x, s)))
            return rc;
        const char *t = getenv(s);
        if (!t || !t[0])
            return add_warning(x, "api.metrics_token_env: %s is not set; /metrics answers on "
                               "loopback only", s);
        crypto_generichash(k->api_token_hash, sizeof k->api_token_hash, (const uint8_t *)t,
                           strlen(t), NULL, 0);
        k->has_api_token = 1;
    }
    (void)api;
    return AOS_OK;
}

static aos_err kernel_keys(ctx *x, const yaml_node_t **v, conf_kernel *k)
{
    aos_err rc;
    const char *s;
    if (v[K_PG_DSN]) {
        if ((rc = get_str(x, v[K_PG_DSN], "pg_dsn", CONF_DSN_MAX - 1, &s)))
            return rc;
        snprintf(k->pg_dsn, sizeof k->pg_dsn, "%s", s);
        k->has_pg_dsn = 1;
    }
    if (v[K_PG_BIN_DIR]) {
        if ((rc = get_path(x, v[K_PG_BIN_DIR], "pg_bin_dir", k->pg_bin_dir,
                           sizeof k->pg_bin_dir)))
            return rc;
        k->has_pg_bin_dir = 1;
    }
    if (v[K_BIN_DIR]) {
        if ((rc = get_path(x, v[K_BIN_DIR], "bin_dir", k->bin_dir, sizeof k->bin_dir)))
            return rc;
        k->has_bin_dir = 1;
    }
    if (v[K_INTENSITY]) {
        unsigned r, t;
        char extra, b[SHOW_MAX + 8];
        if ((rc = get_str(x, v[K_INTENSITY], "restart_intensity", 32, &s)))
            return rc;
        if (sscanf(s, "%u/%u%c", &r, &t, &extra) != 2 || r == 0 || t == 0 || r > 100000 ||
            t > 86400 || s[0] < '0' || s[0] > '9')
            return fail(x, v[K_INTENSITY], "restart_intensity",
                        "wants R/T (R restarts in T seconds, like 5/30), not '%s'",
                        show(v[K_INTENSITY], b, sizeof b));
        k->intensity = r;
        k->period_ms = (uint64_t)t * 1000u;
        k->has_restart_intensity = 1;
    }
    struct {
        int idx;
        uint64_t min, *dst;
        int *has;
    } ms[] = {
        {K_STABLE, 0, &k->stable_ms, &k->has_stable_ms},
        {K_HB, 1, &k->heartbeat_ms, &k->has_heartbeat_ms},
        {K_HB_TIMEOUT, 1, &k->heartbeat_timeout_ms, &k->has_heartbeat_timeout_ms},
        {K_STOP, 0, &k->stop_timeout_ms, &k->has_stop_timeout_ms},
    };
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        if (v[ms[i].idx]) {
            if ((rc = get_uint(x, v[ms[i].idx], top_names[ms[i].idx], ms[i].min, MS_MAX,
                               ms[i].dst)))
                return rc;
            *ms[i].has = 1;
        }
    if (k->has_heartbeat_ms && k->has_heartbeat_timeout_ms &&
        k->heartbeat_timeout_ms <= k->heartbeat_ms)
        return fail(x, v[K_HB_TIMEOUT], "heartbeat_timeout_ms",
                    "must be longer than heartbeat_ms (%llu)",
                    (unsigned long long)k->heartbeat_ms);
    uint64_t u;
    if (v[K_WORKERS]) {
        if ((rc = get_uint(x, v[K_WORKERS], "workers", 1, 64, &u)))
            return rc;
        k->workers = (unsigned)u;
        k->has_workers = 1;
    }
    if (v[K_LOG]) {
        if ((rc = get_bool(x, v[K_LOG], "log", &k->log)))
            return rc;
        k->has_log = 1;
    }
    if (v[K_RUN_RETENTION]) {
        if ((rc = get_uint(x, v[K_RUN_RETENTION], "run_retention_s", 0, CONF_RETENTION_MAX_S,
                           &k->run_retention_s)))
            return rc;
        k->has_run_retention_s = 1;
    }
    if (v[K_RUN_PRUNE]) {
        if ((rc = get_uint(x, v[K_RUN_PRUNE], "run_prune_interval_s", 0,
                           CONF_PRUNE_INTERVAL_MAX_S, &k->run_prune_interval_s)))
            return rc;
        k->has_run_prune_interval_s = 1;
    }
    if (v[K_AUDIT_FAIL_OPEN]) {
        if ((rc = get_bool(x, v[K_AUDIT_FAIL_OPEN], "audit_fail_open", &k->audit_fail_open)))
            return rc;
        k->has_audit_fail_open = 1;
    }
    struct {
        int idx;
        uint64_t min, max;
        unsigned *dst;
        int *has;
    } un[] = {
        {K_LOG_MAX, 0, 1u << 20, &k->log_max_mb, &k->has_log_max_mb},
        {K_LOG_KEEP, 1, 100, &k->log_keep, &k->has_log_keep},
        {K_DISK_MIN, 0, 1u << 30, &k->disk_min_free_mb, &k->has_disk_min_free_mb},
        {K_AGENT_MEM, 16, 1u << 20, &k->agent_memory_mb, &k->has_agent_memory_mb},
        {K_AGENT_PIDS, 16, 1u << 22, &k->agent_pids_max, &k->has_agent_pids_max},
    };
    for (size_t i = 0; i < sizeof un / sizeof un[0]; i++)
        if (v[un[i].idx]) {
            if ((rc = get_uint(x, v[un[i].idx], top_names[un[i].idx], un[i].min, un[i].max,
                               &u)))
                return rc;
            *un[i].dst = (unsigned)u;
            *un[i].has = 1;
        }
    if (v[K_API]) { /* the front door (aos-api) */
        static const char *const names[] = {"port", "max_connections", "max_body_bytes",
                                            "idle_timeout_s", "listen", "tls_cert", "tls_key",
                                            "metrics_token_env", NULL};
        const yaml_node_t *a[8];
        if ((rc = keys(x, v[K_API], "api", names, a)))
            return rc;
        if (a[0] && (rc = get_uint(x, a[0], "api.port", 0, 65535, &u)))
            return rc;
        k->api_port = a[0] ? (unsigned)u : 0;
        if (a[1] && (rc = get_uint(x, a[1], "api.max_connections", 1, 1000000, &u)))
            return rc;
        k->api_max_connections = a[1] ? (unsigned)u : 0;
        if (a[2] && (rc = get_uint(x, a[2], "api.max_body_bytes", 1024, 64u << 20, &u)))
            return rc;
        k->api_max_body = a[2] ? u : 0;
        if (a[3] && (rc = get_uint(x, a[3], "api.idle_timeout_s", 1, 3600, &u)))
            return rc;
        k->api_idle_s = a[3] ? (unsigned)u : 0;
        if ((rc = api_listen(x, v[K_API], a, k)))
            return rc;
        k->has_api = 1;
    }
    return AOS_OK;
}

/* ---- loading ------------------------------------------------------------------------ */

/* The old JSON configuration: named .json, or an object's brace first. */
static int looks_json(const char *path, const char *buf, size_t len)
{
    size_t pl = strlen(path), i = 0;
    if (pl >= 5 && !strcmp(path + pl - 5, ".json"))
        return 1;
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3))
        i = 3;
    while (i < len && strchr(" \t\r\n", buf[i]))
        i++;
    return i < len && buf[i] == '{';
}

/* The absolute directory path is in: relative names in the file start there. */
static aos_err dir_of(const char *path, char *out, size_t cap, char *why, size_t whylen)
{
    char cwd[CONF_PATH_MAX];
    const char *slash = strrchr(path, '/');
    int n;
    if (path[0] == '/')
        n = snprintf(out, cap, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    else if (!getcwd(cwd, sizeof cwd))
        n = -1;
    else if (!slash)
        n = snprintf(out, cap, "%s", cwd);
    else
        n = snprintf(out, cap, "%s/%.*s", cwd, (int)(slash - path), path);
    if (n < 0 || (size_t)n >= cap) {
        snprintf(why, whylen, "%s: cannot make its directory's path absolute (too long?)",
                 path);
        return AOS_ERR_TOO_BIG;
    }
    return AOS_OK;
}

aos_err conf_default_path(const char *data_dir, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/" CONF_FILE_NAME, data_dir);
    return n < 0 || (size_t)n >= cap ? AOS_ERR_TOO_BIG : AOS_OK;
}

aos_err conf_load(const char *path, int path_given, conf **out, char *why, size_t whylen)
{
    char dir[CONF_PATH_MAX];
    *out = NULL;
    if (!path || !path[0] || strlen(path) >= CONF_PATH_MAX) {
        snprintf(why, whylen, "no configuration file named (or a name too long)");
        return AOS_ERR_USAGE;
    }
    aos_err rc = dir_of(path, dir, sizeof dir, why, whylen);
    if (rc)
        return rc;
    conf *c = calloc(1, sizeof *c);
    char *buf = NULL;
    size_t len = 0;
    int absent = 0, have_doc = 0;
    yaml_document_t doc;
    const yaml_node_t *v[K_N] = {0};
    ctx x = {.file = path, .doc = &doc, .dir = dir, .c = c, .why = why, .whylen = whylen};
    if (!c || !(c->path = strdup(path)) ||
        !(c->llm = NEW(Aos__Llm__Config, AOS__LLM__CONFIG__INIT))) {
        rc = nomem(&x);
        goto out;
    }
    if ((rc = read_file(path, !path_given, &buf, &len, &absent, why, whylen)))
        goto out;
    if (!absent) {
        c->from_file = 1;
        if (looks_json(path, buf, len)) {
            snprintf(why, whylen, "%s is the old JSON configuration; aos now reads "
                     CONF_FILE_NAME ": move its keys there (" CONF_JSON_KEYS
                     ": the same names, as YAML; see tools/aos.example.yaml)", path);
            rc = AOS_ERR_USAGE;
            goto out;
        }
        if ((rc = parse(path, buf, len, &doc, why, whylen)))
            goto out;
        have_doc = 1;
        const yaml_node_t *root = yaml_document_get_root_node(&doc);
        /* an empty file (or only comments) is all defaults */
        if (root && !(root->type == YAML_SCALAR_NODE && aos_yjson_is_null(root)) &&
            ((rc = keys(&x, root, "", top_names, v)) || (rc = kernel_keys(&x, v, &c->k))))
            goto out;
    }
    rc = v[K_LLM] ? llm_section(&x, v[K_LLM], c->llm) : builtin_llm(&x, c->llm);
    if (!rc && v[K_TOOLS]) {
        if (!(c->tool = NEW(Aos__Tool__Config, AOS__TOOL__CONFIG__INIT)))
            rc = nomem(&x);
        else
            rc = tools_section(&x, v[K_TOOLS], c->tool);
    }
    if (!rc && v[K_AUDIT]) {
        if (!(c->audit = NEW(Aos__Audit__Config, AOS__AUDIT__CONFIG__INIT)))
            rc = nomem(&x);
        else
            rc = audit_section(&x, v[K_AUDIT], c->audit);
    }
    /* several sim scripts of a MiB each could outgrow what aos-llm reads: say so now */
    size_t packed = rc ? 0 : aos__llm__config__get_packed_size(c->llm);
    if (packed > CONF_LLM_PACKED_MAX) {
        snprintf(why, whylen, "%s: llm: the providers and their sim scripts come to %zu bytes "
                 "packed, more than aos-llm takes (%u): shorten the scripts", path, packed,
                 CONF_LLM_PACKED_MAX);
        rc = AOS_ERR_TOO_BIG;
    }
out:
    if (have_doc)
        yaml_document_delete(&doc);
    free(buf);
    if (rc) {
        conf_free(c);
        return rc;
    }
    *out = c;
    return AOS_OK;
}

void conf_free(conf *c)
{
    if (!c)
        return;
    if (c->llm) {
        /* the keys leave no copy in freed memory */
        for (size_t i = 0; i < c->llm->n_providers; i++)
            if (c->llm->providers[i]->api_key.data)
                explicit_bzero(c->llm->providers[i]->api_key.data,
                               c->llm->providers[i]->api_key.len);
        protobuf_c_message_free_unpacked(&c->llm->base, NULL);
    }
    if (c->tool) {
        for (size_t i = 0; i < c->tool->n_secrets; i++)
            if (c->tool->secrets[i]->value.data)
                explicit_bzero(c->tool->secrets[i]->value.data, c->tool->secrets[i]->value.len);
        protobuf_c_message_free_unpacked(&c->tool->base, NULL);
    }
    free(c->k.api_tls_cert);
    if (c->k.api_tls_key)
        explicit_bzero(c->k.api_tls_key, c->k.api_tls_key_len);
    free(c->k.api_tls_key);
    if (c->audit) {
        for (size_t i = 0; i < c->audit->n_otlp_headers; i++)
            if (c->audit->otlp_headers[i]->value.data)
                explicit_bzero(c->audit->otlp_headers[i]->value.data,
                               c->audit->otlp_headers[i]->value.len);
        protobuf_c_message_free_unpacked(&c->audit->base, NULL);
    }
    for (size_t i = 0; i < c->nwarn; i++)
        free(c->warn[i]);
    free(c->warn);
    for (size_t i = 0; i < c->nsecret_vars; i++)
        free(c->secret_vars[i]);
    free(c->secret_vars);
    free(c->path);
    free(c);
}

int conf_env_is_secret(const conf *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nsecret_vars; i++)
        if (strlen(c->secret_vars[i]) == len && !memcmp(c->secret_vars[i], name, len))
            return 1;
    return 0;
}

uint8_t *conf_tool_packed(const conf *c, size_t *len)
{
    *len = 0;
    if (!c->tool)
        return NULL;
    size_t n = aos__tool__config__get_packed_size(c->tool);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        aos__tool__config__pack(c->tool, buf);
        *len = n;
    }
    return buf;
}

const Aos__Tool__Config *conf_tool(const conf *c)
{
    return c->tool;
}

const char *conf_path(const conf *c)
{
    return c->path;
}

int conf_from_file(const conf *c)
{
    return c->from_file;
}

const conf_kernel *conf_kernel_settings(const conf *c)
{
    return &c->k;
}

const Aos__Audit__Config *conf_audit(const conf *c)
{
    return c ? c->audit : NULL;
}

const Aos__Llm__Config *conf_llm(const conf *c)
{
    return c->llm;
}

size_t conf_nwarnings(const conf *c)
{
    return c->nwarn;
}

const char *conf_warning(const conf *c, size_t i)
{
    return i < c->nwarn ? c->warn[i] : NULL;
}
