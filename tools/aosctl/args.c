/* aosctl's argument tables at work: checking and storing values, defaults, and turning one
 * table into usage, --help lines and --desc entries, so no command describes itself twice. */
#include "aosctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static int is_flag(const ctl_arg *a)
{
    return a->name[0] == '-';
}

const ctl_arg *ctl_flag_find(const ctl_arg *a, size_t n, const char *name, size_t namelen)
{
    for (size_t i = 0; i < n; i++) {
        if (!is_flag(&a[i]))
            continue;
        if (strlen(a[i].name) == namelen && strncmp(a[i].name, name, namelen) == 0)
            return &a[i];
        if (a[i].short_name && namelen == 2 && name[0] == '-' && name[1] == a[i].short_name)
            return &a[i];
    }
    return NULL;
}

/* Decimal only: "0x10" or " 5" on a command line is more likely a slip than a number. */
static int parse_int(const char *s, int64_t *out)
{
    const char *p = s + (*s == '-');
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* "1 to 100000", "at least 1", "0 or more": the range as people read it. */
static void range_text(const ctl_arg *a, char *out, size_t cap)
{
    if (a->max == INT64_MAX && a->min <= 0)
        snprintf(out, cap, "%" PRId64 " or more", a->min);
    else if (a->max == INT64_MAX)
        snprintf(out, cap, "at least %" PRId64, a->min);
    else
        snprintf(out, cap, "%" PRId64 " to %" PRId64, a->min, a->max);
}

int ctl_value_set(const ctl_arg *arg, const char *text, ctl_vals *v, size_t i, char *why,
                  size_t whylen)
{
    if (arg->type == CTL_INTEGER) {
        int64_t n;
        if (parse_int(text, &n) != 0 || n < arg->min || n > arg->max) {
            char range[64];
            range_text(arg, range, sizeof range);
            snprintf(why, whylen, "%s wants an integer, %s, not \"%.200s\"", arg->name, range,
                     text);
            return -1;
        }
        v->num[i] = n;
    } else if (arg->type == CTL_BOOL) {
        v->num[i] = 1;
    }
    if (arg->check && arg->check(text, why, whylen) != 0)
        return -1;
    v->str[i] = text;
    v->given[i] = 1;
    return 0;
}

int ctl_vals_finish(const ctl_cmd *cmd, ctl_vals *v, char *why, size_t whylen)
{
    size_t used = 0;
    why[0] = 0;
    for (size_t i = 0; i < cmd->nargs; i++) {
        const ctl_arg *a = &cmd->args[i];
        if (!v->given[i] && a->def) {
            v->str[i] = a->def;
            if (a->type == CTL_INTEGER && parse_int(a->def, &v->num[i]) != 0)
                abort(); /* a table whose default is not a number: aosctl's bug */
        }
        if (!is_flag(a) && a->required && !v->given[i]) {
            int k = snprintf(why + used, whylen - used, "%s%s", used ? " " : "missing ",
                             a->name);
            if (k > 0 && (size_t)k < whylen - used)
                used += (size_t)k;
        }
    }
    return used ? -1 : 0;
}

/* Appends a then b to out (cap), keeping it NUL-terminated when they do not fit. */
static void append(char *out, size_t cap, size_t *used, const char *a, const char *b)
{
    int k = snprintf(out + *used, cap - *used, "%s%s", a, b);
    if (k > 0)
        *used = (size_t)k < cap - *used ? *used + (size_t)k : cap - 1;
}

/* "-n|--count N", "--limit N", "--force": how a flag is typed. */
static void flag_form(const ctl_arg *a, char *out, size_t cap)
{
    char sh[8] = "";
    if (a->short_name)
        snprintf(sh, sizeof sh, "-%c|", a->short_name);
    snprintf(out, cap, "%s%s%s%s", sh, a->name, a->value ? " " : "", a->value ? a->value : "");
}

void ctl_usage(const ctl_arg *a, size_t n, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (int pass = 0; pass < 2; pass++) { /* positionals first, as they are typed */
        for (size_t i = 0; i < n; i++) {
            if (is_flag(&a[i]) != pass)
                continue;
            char form[96];
            if (pass)
                flag_form(&a[i], form, sizeof form);
            else
                snprintf(form, sizeof form, "%s", a[i].name);
            append(out, cap, &used, used ? " " : "", a[i].required ? "" : "[");
            append(out, cap, &used, form, a[i].required ? "" : "]");
        }
    }
}

static const char *type_name(ctl_type t)
{
    return t == CTL_INTEGER ? "integer" : t == CTL_BOOL ? "boolean" : "string";
}

json_t *ctl_arg_desc(const ctl_arg *a)
{
    json_t *d = json_pack("{s:s,s:s,s:s,s:b}", "name", a->name, "kind",
                          is_flag(a) ? "flag" : "positional", "type", type_name(a->type),
                          "required", a->required);
    if (!d)
        return NULL;
    int bad = 0;
    if (a->short_name) {
        char sh[3] = {'-', a->short_name, 0};
        bad |= json_object_set_new(d, "short", json_string(sh));
    }
    if (a->value)
        bad |= json_object_set_new(d, "value", json_string(a->value));
    if (a->type == CTL_INTEGER) {
        bad |= json_object_set_new(d, "minimum", json_integer(a->min));
        bad |= json_object_set_new(d, "maximum", json_integer(a->max));
    }
    if (a->def) {
        int64_t n;
        if (a->type == CTL_INTEGER && parse_int(a->def, &n) == 0)
            bad |= json_object_set_new(d, "default", json_integer(n));
        else
            bad |= json_object_set_new(d, "default", json_string(a->def));
    } else if (a->type == CTL_BOOL) {
        bad |= json_object_set_new(d, "default", json_false());
    }
    if (a->choices) {
        json_t *e = json_array();
        for (size_t i = 0; e && a->choices[i]; i++)
            bad |= json_array_append_new(e, json_string(a->choices[i]));
        bad |= json_object_set_new(d, "enum", e);
    }
    if (a->pattern)
        bad |= json_object_set_new(d, "pattern", json_string(a->pattern));
    bad |= json_object_set_new(d, "summary", json_string(a->summary ? a->summary : ""));
    if (bad) {
        json_decref(d);
        return NULL;
    }
    return d;
}

void ctl_args_help(FILE *f, const ctl_arg *a, size_t n, int flags)
{
    for (size_t i = 0; i < n; i++) {
        if (is_flag(&a[i]) != flags)
            continue;
        char form[96], extra[160] = "", range[64] = "";
        size_t used = 0;
        if (flags)
            flag_form(&a[i], form, sizeof form);
        else
            snprintf(form, sizeof form, "%s", a[i].name);
        if (a[i].type == CTL_INTEGER)
            range_text(&a[i], range, sizeof range);
        if (range[0] || a[i].def) {
            append(extra, sizeof extra, &used, " (", range);
            if (a[i].def) {
                append(extra, sizeof extra, &used, range[0] ? ", " : "", "default ");
                append(extra, sizeof extra, &used, a[i].def, "");
            }
            append(extra, sizeof extra, &used, ")", "");
        }
        if (a[i].choices) {
            append(extra, sizeof extra, &used, "; one of:", "");
            for (size_t k = 0; a[i].choices[k]; k++)
                append(extra, sizeof extra, &used, k ? ", " : " ", a[i].choices[k]);
        }
        fprintf(f, "  %-22s %s%s\n", form, a[i].summary ? a[i].summary : "", extra);
    }
}

/* The slot of name in v's command; a name the table lacks is aosctl's own bug. */
static size_t slot(const ctl_vals *v, const char *name)
{
    for (size_t i = 0; i < v->cmd->nargs; i++)
        if (strcmp(v->cmd->args[i].name, name) == 0)
            return i;
    fprintf(stderr, "aosctl: internal error: command \"%s\" has no argument %s\n",
            v->cmd->path, name);
    abort();
}

const char *ctl_str(const ctl_vals *v, const char *name)
{
    return v->str[slot(v, name)];
}

int64_t ctl_int(const ctl_vals *v, const char *name)
{
    return v->num[slot(v, name)];
}

int ctl_given(const ctl_vals *v, const char *name)
{
    return v->given[slot(v, name)];
}
