/* aosctl: one pass over the command line finds the command and its values from the tables,
 * global flags anywhere; owns --json (one document per run, errors too), --desc, --help. */
#include "aosctl.h"
#include "gendoc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aos/servers.h"

#ifndef AOS_VERSION
#define AOS_VERSION "unknown"
#endif

static const ctl_group *const groups[] = {
    &ctl_group_kernel,
    &ctl_group_storage,
    &ctl_group_config,
    &ctl_group_llm,
    &ctl_group_audit,
    &ctl_group_audit_archive,
    &ctl_group_audit_replay,
    &ctl_group_tool,
    &ctl_group_sched,
    &ctl_group_mem,
    &ctl_group_agent,
    &ctl_group_logs,
    &ctl_group_backup,
    &ctl_group_runs,
    &ctl_group_msg,
};
#define NGROUPS (sizeof groups / sizeof groups[0])

#define MAX_WORDS 8

/* Set once the one JSON document of this run is out: a second one would break readers. */
static int g_printed;

static const char global_usage[] = "aosctl [global flags] COMMAND [ARGS] [FLAGS]";

static int check_dir(const char *v, char *why, size_t whylen)
{
    if (!*v)
        snprintf(why, whylen, "--data-dir needs a directory");
    else if (strlen(v) >= PATH_MAX)
        snprintf(why, whylen, "--data-dir: path too long");
    else
        return 0;
    return -1;
}

_Static_assert(AOS_DEFAULT_TIMEOUT_MS == 30000, "--timeout's default below says 30000");

/* The flags every command takes, anywhere on the line; a command's own flags of the same
 * name would shadow them, so none has one. */
static const ctl_arg global_args[] = {
    {.name = "--json", .type = CTL_BOOL,
     .summary = "print exactly one JSON document on stdout, errors included"},
    {.name = "--data-dir", .type = CTL_STRING, .value = "DIR", .check = check_dir,
     .summary = "aos data directory (default: $AOS_DATA_DIR, /var/lib/aos for root, else "
                "$XDG_DATA_HOME/aos or ~/.local/share/aos)"},
    {.name = "--timeout", .type = CTL_INTEGER, .value = "MS", .min = 1, .max = INT32_MAX,
     .def = "30000", .summary = "per-call timeout in milliseconds"},
    {.name = "--help", .short_name = 'h', .type = CTL_BOOL,
     .summary = "print help; with a command: that command's arguments and flags"},
    {.name = "--desc", .type = CTL_BOOL,
     .summary = "with a command: its machine-readable description (JSON); alone: all"},
    {.name = "--version", .type = CTL_BOOL, .summary = "print the version"},
};

/* The global flags as a command, so the same machinery stores and looks them up. */
static const ctl_cmd global_cmd = {"", "global flags", CTL_ARGS(global_args), NULL, NULL};
_Static_assert(sizeof global_args / sizeof global_args[0] <= CTL_ARGS_MAX, "too many flags");

/* Replaces bytes that are not UTF-8 with '?', so any message can become a JSON string. */
static void utf8_fix(char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        size_t k = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (k == 0 || i + k > n || !aos_utf8_valid(s + i, k)) {
            s[i++] = '?';
            continue;
        }
        i += k;
    }
}

static int emit_error_json(int err, const char *msg)
{
    json_t *doc = json_pack("{s:{s:i,s:s,s:i,s:s}}", "error", "code", err, "name",
                            aos_err_name(err), "exit_code", aos_err_exit_code(err),
                            "message", msg);
    if (!doc) {
        /* jansson could not allocate: a fixed document is still one document */
        fputs("{\"error\":{\"code\":8,\"name\":\"NOMEM\",\"exit_code\":1,"
              "\"message\":\"out of memory\"}}\n", stdout);
        return 0;
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!s)
        return -1;
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    return 0;
}

int ctl_fail_reply(ctl_ctx *c, aos_reply *r)
{
    int rc = ctl_fail(c, r->status, "%s", r->error);
    aos_reply_clear(r);
    return rc;
}

int ctl_check_agent(const char *val, char *why, size_t whylen)
{
    if (aos_agent_id_valid(val, strlen(val)))
        return 0;
    snprintf(why, whylen, "\"%.100s\" is not an agent id (1 to %d of A-Z a-z 0-9 _ . : -)",
             val, AOS_AGENT_ID_MAX);
    return -1;
}

int ctl_fail(ctl_ctx *c, int err, const char *fmt, ...)
{
    char msg[AOS_ERRMSG_MAX + 512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_fix(msg);
    if (err == AOS_OK)
        err = AOS_ERR_INTERNAL; /* a failure reported as success would be silent */
    if (c && c->json && !g_printed) {
        g_printed = 1;
        if (emit_error_json(err, msg) != 0)
            fprintf(stderr, "aosctl: %s\n", msg);
    } else {
        fprintf(stderr, "aosctl: %s\n", msg);
    }
    return aos_err_exit_code(err);
}

int ctl_errno_err(int e)
{
    return e == ENOENT ? AOS_ERR_NOT_FOUND
         : e == EACCES || e == EPERM ? AOS_ERR_REFUSED
                                     : AOS_ERR_USAGE;
}

/* Bytes from a server go to a terminal: see aosctl.h. */
void ctl_clean(char *dst, size_t cap, const uint8_t *src, size_t n, size_t max, int *cut)
{
    size_t o = 0, chars = 0, i = 0;
    while (i < n && o + 1 < cap && (!max || chars < max)) {
        unsigned char b = src[i];
        size_t k = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (k == 0 || i + k > n || !aos_utf8_valid(src + i, k) || (k == 1 && (b < 0x20 ||
            b == 0x7f)) || (k == 2 && b == 0xC2 && src[i + 1] < 0xA0)) { /* C1 controls */
            dst[o++] = '?';
            i++;
            chars++;
            continue;
        }
        if (o + k + 1 > cap)
            break;
        memcpy(dst + o, src + i, k);
        o += k;
        i += k;
        chars++;
    }
    dst[o] = 0;
    if (cut)
        *cut = i < n;
}

/* A program's output to a terminal: see aosctl.h. */
void ctl_put_text(FILE *f, const uint8_t *d, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && d[j] != '\n' && d[j] != '\t')
            j++;
        if (j > i) {
            char buf[4096 * 4 + 4];
            for (size_t k = i; k < j;) {
                size_t n = j - k < 4096 ? j - k : 4096;
                /* a cut inside a character would show its two halves as '?' */
                while (n < j - k && n > 4092 && (d[k + n] & 0xC0) == 0x80)
                    n--;
                ctl_clean(buf, sizeof buf, d + k, n, 0, NULL);
                fputs(buf, f);
                k += n;
            }
        }
        if (j < len)
            fputc(d[j], f);
        i = j + 1;
    }
    fflush(f);
}

int ctl_print_json(ctl_ctx *c, json_t *doc)
{
    if (!doc)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory building the output");
    if (g_printed) {
        json_decref(doc);
        fprintf(stderr, "aosctl: internal error: a second JSON document was dropped\n");
        return aos_err_exit_code(AOS_ERR_INTERNAL);
    }
    char *s = json_dumps(doc, isatty(STDOUT_FILENO) ? JSON_INDENT(2) : JSON_COMPACT);
    json_decref(doc);
    if (!s)
        return ctl_fail(c, AOS_ERR_NOMEM, "cannot serialise the output as JSON");
    g_printed = 1;
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    return 0;
}

const char *ctl_server_name(const char *arg, int allow_pg)
{
    static const char *const names[] = {AOS_SRV_NAMES};
    _Static_assert(sizeof names / sizeof names[0] == AOS_SRV_COUNT, "one name per server");
    if (!arg)
        return NULL;
    if (strncmp(arg, "aos-", 4) == 0)
        arg += 4;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(arg, names[i]) == 0)
            return names[i];
    if (allow_pg && strcmp(arg, AOS_CHILD_PG) == 0)
        return AOS_CHILD_PG;
    return NULL;
}

aos_err ctl_connect(ctl_ctx *c, aos_reply *r)
{
    char dir[PATH_MAX], url[AOS_PATH_MAX + 16], why[768];
    aos_err err;

    if (c->conn)
        return AOS_OK;
    r->status = AOS_OK;
    if ((err = aos_data_dir(c->data_dir, dir, sizeof dir)) != AOS_OK) {
        snprintf(r->error, sizeof r->error, "cannot find the data dir: %s",
                 err == AOS_ERR_NOT_FOUND ? "no --data-dir, $AOS_DATA_DIR or $HOME"
                 : err == AOS_ERR_TOO_BIG ? "the path is too long" : "it is empty");
        return r->status = err;
    }
    if ((err = aos_control_url(dir, url, sizeof url)) != AOS_OK) {
        snprintf(r->error, sizeof r->error, "data dir %.700s is too long: the control socket "
                 "path must fit in %d bytes", dir, AOS_PATH_MAX - 1);
        return r->status = err;
    }
    err = aos_connect(url, &c->conn, why, sizeof why);
    if (err == AOS_ERR_UNAVAILABLE) {
        const char *path = url + strlen("ipc://");
        struct stat st;
        if (lstat(path, &st) != 0 && (errno == ENOENT || errno == ENOTDIR))
            snprintf(r->error, sizeof r->error,
                     "aosd is not running (no control socket at %s)", path);
        else
            snprintf(r->error, sizeof r->error, "aosd is not running (%s)", why);
    } else if (err != AOS_OK) {
        snprintf(r->error, sizeof r->error, "%s", why);
    }
    return r->status = err;
}

aos_err ctl_call(ctl_ctx *c, const char *agent, const char *method,
                 const ProtobufCMessage *req, aos_reply *reply)
{
    uint8_t *buf = NULL;
    size_t n = 0;

    memset(reply, 0, sizeof *reply);
    aos_err err = ctl_connect(c, reply);
    if (err != AOS_OK)
        return err;
    if (req) {
        n = protobuf_c_message_get_packed_size(req);
        if (n > AOS_MSG_MAX) {
            snprintf(reply->error, sizeof reply->error, "%s: request of %zu bytes exceeds "
                     "the %u byte cap", method, n, AOS_MSG_MAX);
            return reply->status = AOS_ERR_TOO_BIG;
        }
        if (n && !(buf = malloc(n))) {
            snprintf(reply->error, sizeof reply->error, "out of memory");
            return reply->status = AOS_ERR_NOMEM;
        }
        if (n)
            protobuf_c_message_pack(req, buf);
    }
    aos_call_opts opts = {.agent_id = agent, .timeout_ms = c->timeout_ms};
    err = aos_call(c->conn, &opts, method, buf, n, reply);
    free(buf);
    return err;
}


/* ---- command lookup ------------------------------------------------------------ */

/* Splits path into words (pointers into buf). */
static size_t split_path(const char *path, char *buf, size_t cap, char **w)
{
    size_t n = 0;
    snprintf(buf, cap, "%s", path);
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && n < MAX_WORDS;
         t = strtok_r(NULL, " ", &save))
        w[n++] = t;
    return n;
}

/* How many leading words of argv match cmd's path; *full when all of the path did. */
static size_t match_words(const ctl_cmd *cmd, size_t argc, char **argv, int *full)
{
    char buf[256], *w[MAX_WORDS];
    size_t n = split_path(cmd->path, buf, sizeof buf, w), k = 0;
    while (k < n && k < argc && strcmp(w[k], argv[k]) == 0)
        k++;
    *full = k == n;
    return k;
}

/* The command whose path is exactly the words (a path is a prefix of another only when
 * the shorter command takes no positionals, "tools" and "tools show": the contract test
 * checks it); *depth gets the most leading words that start some command. */
static const ctl_cmd *find_cmd(size_t n, char **words, size_t *depth)
{
    const ctl_cmd *hit = NULL;
    *depth = 0;
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            int full;
            size_t k = match_words(&groups[g]->cmds[i], n, words, &full);
            if (k > *depth)
                *depth = k;
            if (full && k == n)
                hit = &groups[g]->cmds[i];
        }
    }
    return hit;
}

/* ---- the command line ---------------------------------------------------------- */

/* What one pass over argv found. The pass never stops at an error: it goes on to the end so
 * that a --json, --help or --desc after the mistake still decides how to answer. */
typedef struct line {
    ctl_vals g;                 /* the global flags */
    const ctl_cmd *cmd;         /* NULL until the words name a command */
    ctl_vals v;                 /* cmd's values */
    char *words[MAX_WORDS];     /* the command's words as typed */
    size_t nwords, depth;       /* depth: leading words that start some command */
    int stuck;                  /* a word that no command starts with, or too many */
    size_t npos;                /* positionals given to cmd */
    char why[768];              /* the first usage error, "" when none */
    int hint;                   /* add cmd's usage (or a pointer to --help) to why */
} line;

static void note(line *L, int hint, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(line *L, int hint, const char *fmt, ...)
{
    if (L->why[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->why, sizeof L->why, fmt, ap);
    va_end(ap);
    L->hint = hint;
}

/* "--x", "-n", "-n5" are flags; "-" (standard input) and "-5" are values. */
static int is_flag_token(const char *t)
{
    if (t[0] != '-' || !t[1])
        return 0;
    return t[1] == '-' ? t[2] != 0 : isalpha((unsigned char)t[1]) != 0;
}

/* The flag of cmd or the global one that tok names, NULL when none; *into its values. */
static const ctl_arg *lookup_flag(line *L, const char *tok, size_t namelen, ctl_vals **into)
{
    const ctl_arg *a = NULL;
    *into = &L->v;
    if (L->cmd && (a = ctl_flag_find(L->cmd->args, L->cmd->nargs, tok, namelen)))
        return a;
    *into = &L->g;
    return ctl_flag_find(global_args, global_cmd.nargs, tok, namelen);
}

/* The length of a flag token's name: "--limit" of "--limit=5", "-n" of "-n5". */
static size_t flag_name_len(const char *tok)
{
    if (tok[1] != '-')
        return 2;
    const char *eq = strchr(tok, '=');
    return eq ? (size_t)(eq - tok) : strlen(tok);
}

/* One flag token at argv[*i] (its value may be the next token). */
static void take_flag(line *L, int argc, char **argv, int *i)
{
    const char *tok = argv[*i], *attached = NULL;
    size_t namelen = flag_name_len(tok);
    if (tok[1] == '-')
        attached = tok[namelen] == '=' ? tok + namelen + 1 : NULL;
    else
        attached = tok[2] ? tok + 2 + (tok[2] == '=') : NULL;
    ctl_vals *into, *other;
    const ctl_arg *a = lookup_flag(L, tok, namelen, &into);
    if (!a) {
        if (L->stuck)
            return; /* already wrong; only the global flags still matter */
        if (L->cmd)
            note(L, 1, "unknown flag \"%.*s\" for %s", (int)namelen, tok, L->cmd->path);
        else if (L->nwords == 0)
            note(L, 1, "unknown flag \"%.*s\"", (int)namelen, tok);
        else
            note(L, 1, "unknown flag \"%.*s\" (a command's flags go after its name)",
                 (int)namelen, tok);
        return;
    }
    const char *val = attached;
    if (a->type == CTL_BOOL) {
        if (attached) /* still taken: "--json=1" wants JSON, also for this error */
            note(L, 1, "%s takes no value (got \"%s\")", a->name, tok);
        val = "true";
    } else if (!val) {
        /* "-n --json" is a forgotten count, not a count of "--json": the flag stays a flag
         * (a value that looks like one is given as --flag=VALUE) */
        const char *next = *i + 1 < argc ? argv[*i + 1] : NULL;
        if (!next || (is_flag_token(next) && lookup_flag(L, next, flag_name_len(next), &other))) {
            note(L, 1, "%.*s needs a value (%s)", (int)namelen, tok,
                 a->value ? a->value : "VALUE");
            return;
        }
        val = argv[++*i];
    }
    char why[512];
    if (ctl_value_set(a, val, into, (size_t)(a - (into == &L->g ? global_args : L->cmd->args)),
                      why, sizeof why) != 0)
        note(L, 0, "%s", why);
}

/* A word: the next word of the command until it is named, then its next positional. */
static void take_word(line *L, char *tok)
{
    if (L->stuck)
        return;
    if (!L->cmd) {
        if (L->nwords == MAX_WORDS) {
            L->stuck = 1;
            return;
        }
        L->words[L->nwords++] = tok;
        L->cmd = find_cmd(L->nwords, L->words, &L->depth);
        if (L->cmd)
            L->v.cmd = L->cmd;
        else if (L->depth < L->nwords)
            L->stuck = 1; /* reported after the pass, with what could follow */
        return;
    }
    /* "tools show": a word that makes a longer command of a command that takes no
     * positionals (nothing typed for it yet) is that command's next word */
    int any_given = 0;
    for (size_t k = 0; k < CTL_ARGS_MAX; k++)
        any_given |= L->v.given[k];
    if (!L->npos && !any_given && L->nwords < MAX_WORDS) {
        size_t depth;
        L->words[L->nwords] = tok;
        const ctl_cmd *longer = find_cmd(L->nwords + 1, L->words, &depth);
        if (depth == L->nwords + 1) {
            L->nwords++;
            L->depth = depth;
            L->cmd = longer;
            memset(&L->v, 0, sizeof L->v);
            L->v.cmd = longer;
            return;
        }
    }
    size_t seen = 0;
    for (size_t k = 0; k < L->cmd->nargs; k++) {
        if (L->cmd->args[k].name[0] == '-')
            continue;
        if (seen++ == L->npos) {
            char why[512];
            L->npos++;
            if (ctl_value_set(&L->cmd->args[k], tok, &L->v, k, why, sizeof why) != 0)
                note(L, 0, "%s", why);
            return;
        }
    }
    note(L, 1, "too many arguments (\"%s\")", tok);
}

/* "-abc" that is no short flag here is a value, as it was before short flags existed
 * ("kv put A K -x" stores "-x"); a long "--abc" is always a flag, so typos are caught. */
static int short_value(line *L, const char *tok)
{
    ctl_vals *into;
    return tok[1] != '-' && !lookup_flag(L, tok, 2, &into);
}

static void parse_line(line *L, int argc, char **argv)
{
    memset(L, 0, sizeof *L);
    L->g.cmd = &global_cmd;
    int dashdash = 0;
    for (int i = 1; i < argc; i++) {
        if (!dashdash && strcmp(argv[i], "--") == 0)
            dashdash = 1; /* what follows is values, also when it starts with '-' */
        else if (!dashdash && is_flag_token(argv[i]) && !short_value(L, argv[i]))
            take_flag(L, argc, argv, &i);
        else
            take_word(L, argv[i]);
    }
    char why[512];
    if (L->cmd && ctl_vals_finish(L->cmd, &L->v, why, sizeof why) != 0)
        note(L, 1, "%s", why);
    ctl_vals_finish(&global_cmd, &L->g, why, sizeof why);
}

/* ---- descriptions and help ------------------------------------------------------ */

static json_t *exit_codes_json(void)
{
    json_t *o = json_object();
    for (int e = 0; o && e < 256; e++) {
        if (!aos_err_valid(e))
            continue;
        char key[16];
        snprintf(key, sizeof key, "%d", aos_err_exit_code(e));
        if (!json_object_get(o, key))
            json_object_set_new(o, key, json_string(aos_strerror(e)));
    }
    return o;
}

/* The JSON Schema of the error document, from the error table itself. */
static json_t *error_schema(void)
{
    json_t *names = json_array(), *codes = json_array(), *exits = json_array();
    for (int e = 1; names && codes && exits && e < 256; e++) {
        if (!aos_err_valid(e))
            continue;
        json_array_append_new(names, json_string(aos_err_name(e)));
        json_array_append_new(codes, json_integer(e));
        json_t *x = json_integer(aos_err_exit_code(e));
        size_t i;
        json_t *have;
        int dup = 0;
        json_array_foreach(exits, i, have)
            dup |= json_equal(have, x);
        if (dup)
            json_decref(x);
        else
            json_array_append_new(exits, x);
    }
    return json_pack(
        "{s:s,s:s,s:[s],s:{s:{s:s,s:[s,s,s,s],s:{s:{s:s,s:o},s:{s:s,s:o},s:{s:s,s:o},"
        "s:{s:s}}}}}",
        "$schema", "https://json-schema.org/draft/2020-12/schema", "type", "object",
        "required", "error", "properties", "error", "type", "object", "required", "code",
        "name", "exit_code", "message", "properties", "code", "type", "integer", "enum", codes,
        "name", "type", "string", "enum", names, "exit_code", "type", "integer", "enum", exits,
        "message", "type", "string");
}

static json_t *args_desc(const ctl_cmd *cmd, int flags)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < cmd->nargs; i++) {
        if ((cmd->args[i].name[0] == '-') != flags)
            continue;
        if (json_array_append_new(arr, ctl_arg_desc(&cmd->args[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* A command's description, or NULL with why filled (a bad table entry is our bug). */
static json_t *cmd_desc(const ctl_cmd *cmd, char *why, size_t whylen)
{
    json_error_t je;
    json_t *out = cmd->output_schema ? json_loads(cmd->output_schema, 0, &je) : json_null();
    if (!out) {
        snprintf(why, whylen, "command \"%s\": bad output schema: %s (col %d)", cmd->path,
                 je.text, je.column);
        return NULL;
    }
    char usage[512], buf[256], *w[MAX_WORDS];
    ctl_usage(cmd->args, cmd->nargs, buf, sizeof buf);
    snprintf(usage, sizeof usage, "aosctl %s%s%s", cmd->path, buf[0] ? " " : "", buf);
    size_t nw = split_path(cmd->path, buf, sizeof buf, w);
    json_t *words = json_array();
    for (size_t i = 0; words && i < nw; i++)
        json_array_append_new(words, json_string(w[i]));
    json_t *d = json_pack("{s:s,s:o,s:s,s:s,s:o,s:o,s:o,s:o}", "name", cmd->path, "words",
                          words, "usage", usage, "summary", cmd->summary ? cmd->summary : "",
                          "arguments", args_desc(cmd, 0), "flags", args_desc(cmd, 1),
                          "output", out, "exit_codes", exit_codes_json());
    if (!d)
        snprintf(why, whylen, "out of memory");
    return d;
}

static json_t *global_flags_desc(void)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < global_cmd.nargs; i++)
        if (json_array_append_new(arr, ctl_arg_desc(&global_args[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

/* One command alone: its description plus what every command shares. */
static json_t *one_desc(const ctl_cmd *cmd, char *why, size_t whylen)
{
    json_t *d = cmd_desc(cmd, why, whylen);
    if (d && (json_object_set_new(d, "global_flags", global_flags_desc()) != 0 ||
              json_object_set_new(d, "error_output", error_schema()) != 0)) {
        json_decref(d);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    return d;
}

/* Every command whose path starts with the given words (all when nwords is 0). */
static json_t *list_desc(size_t nwords, char **words, char *why, size_t whylen)
{
    json_t *cmds = json_array(), *doc = NULL;
    snprintf(why, whylen, "out of memory");
    if (!cmds)
        goto out;
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            int full;
            if (match_words(&groups[g]->cmds[i], nwords, words, &full) < nwords)
                continue;
            json_t *d = cmd_desc(&groups[g]->cmds[i], why, whylen);
            if (!d || json_array_append_new(cmds, d) != 0)
                goto out;
        }
    }
    doc = json_pack("{s:s,s:s,s:s,s:o,s:O,s:o,s:o}", "program", "aosctl", "version",
                    AOS_VERSION, "usage", global_usage, "global_flags", global_flags_desc(),
                    "commands", cmds, "exit_codes", exit_codes_json(), "error_output",
                    error_schema());
out:
    json_decref(cmds);
    return doc;
}

static void print_help(FILE *f)
{
    fprintf(f, "usage: %s\n       aosctl [COMMAND...] --desc   describe commands as JSON\n\n"
            "global flags (anywhere on the line; --flag=VALUE or --flag VALUE):\n",
            global_usage);
    ctl_args_help(f, global_args, global_cmd.nargs, 1);
    fprintf(f, "\ncommands:\n");
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            const ctl_cmd *cmd = &groups[g]->cmds[i];
            char left[192], u[160];
            ctl_usage(cmd->args, cmd->nargs, u, sizeof u);
            snprintf(left, sizeof left, "%s %s", cmd->path, u);
            /* a long usage gets its own line rather than a ragged summary column */
            if (strlen(left) > 30)
                fprintf(f, "  %s\n  %-30s %s\n", left, "", cmd->summary ? cmd->summary : "");
            else
                fprintf(f, "  %-30s %s\n", left, cmd->summary ? cmd->summary : "");
        }
    }
    fprintf(f, "\nexit codes:\n");
    json_t *codes = exit_codes_json();
    const char *k;
    json_t *v;
    json_object_foreach(codes, k, v)
        fprintf(f, "  %s  %s\n", k, json_string_value(v));
    json_decref(codes);
}

static void print_cmd_help(const ctl_cmd *cmd)
{
    char u[256];
    int pos = 0, flags = 0;
    for (size_t i = 0; i < cmd->nargs; i++)
        cmd->args[i].name[0] == '-' ? flags++ : pos++;
    ctl_usage(cmd->args, cmd->nargs, u, sizeof u);
    printf("usage: aosctl [global flags] %s%s%s\n%s\n", cmd->path, u[0] ? " " : "", u,
           cmd->summary ? cmd->summary : "");
    if (pos) {
        printf("\narguments:\n");
        ctl_args_help(stdout, cmd->args, cmd->nargs, 0);
    }
    if (flags) {
        printf("\nflags (--flag=VALUE or --flag VALUE, anywhere after the command):\n");
        ctl_args_help(stdout, cmd->args, cmd->nargs, 1);
    }
    printf("\nglobal flags: --json --data-dir DIR --timeout MS --help --desc (aosctl --help)\n"
           "aosctl %s --desc prints its arguments, output schema and exit codes as JSON.\n",
           cmd->path);
}

/* "server kill NAME, server restart NAME" for the commands under the given words. */
static void list_matching(size_t nwords, char **words, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            int full;
            const ctl_cmd *cmd = &groups[g]->cmds[i];
            if (match_words(cmd, nwords, words, &full) < nwords)
                continue;
            char u[160];
            ctl_usage(cmd->args, cmd->nargs, u, sizeof u);
            int w = snprintf(out + used, cap - used, "%s%s%s%s", used ? ", " : "", cmd->path,
                             u[0] ? " " : "", u);
            if (w < 0 || (size_t)w >= cap - used)
                return;
            used += (size_t)w;
        }
    }
}

static void join_words(size_t n, char **w, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(out + used, cap - used, "%s%s", i ? " " : "", w[i]);
        if (k < 0 || (size_t)k >= cap - used)
            return;
        used += (size_t)k;
    }
}

/* ---- main ------------------------------------------------------------------------ */

static int print_desc(ctl_ctx *c, json_t *d, const char *why)
{
    return d ? ctl_print_json(c, d) : ctl_fail(c, AOS_ERR_INTERNAL, "%s", why);
}

static int run_main(ctl_ctx *c, int argc, char **argv)
{
    line L;
    char why[512];
    /* ctl_vals has CTL_ARGS_MAX slots: a longer table is aosctl's bug, caught on any run */
    for (size_t g = 0; g < NGROUPS; g++)
        for (size_t i = 0; i < groups[g]->n; i++)
            if (groups[g]->cmds[i].nargs > CTL_ARGS_MAX)
                return ctl_fail(c, AOS_ERR_INTERNAL, "command \"%s\" has more than %d "
                                "arguments", groups[g]->cmds[i].path, CTL_ARGS_MAX);
    parse_line(&L, argc, argv);
    c->json = (int)ctl_int(&L.g, "--json");
    c->data_dir = ctl_str(&L.g, "--data-dir");
    c->timeout_ms = (uint32_t)ctl_int(&L.g, "--timeout");
    int help = (int)ctl_int(&L.g, "--help"), desc = (int)ctl_int(&L.g, "--desc");

    if (ctl_int(&L.g, "--version")) {
        if (c->json)
            return ctl_print_json(c, json_pack("{s:s}", "version", AOS_VERSION));
        printf("aosctl %s\n", AOS_VERSION);
        return 0;
    }
    /* with --json, --help is for a program too: it gets the description */
    if (desc || (help && c->json)) {
        if (L.cmd)
            return print_desc(c, one_desc(L.cmd, why, sizeof why), why);
        if (L.depth > 0 || L.nwords == 0)
            return print_desc(c, list_desc(L.depth, L.words, why, sizeof why), why);
    } else if (help) {
        if (L.cmd) {
            print_cmd_help(L.cmd);
            return 0;
        }
        if (L.nwords == 0) {
            print_help(stdout);
            return 0;
        }
        if (L.depth > 0) {
            char list[1024];
            list_matching(L.depth, L.words, list, sizeof list);
            printf("commands: %s\n", list);
            return 0;
        }
    }
    if (L.nwords == 0) {
        if (L.why[0])
            return ctl_fail(c, AOS_ERR_USAGE, "%s%s", L.why, L.hint ? "; see aosctl --help" : "");
        if (!c->json)
            print_help(stderr);
        return ctl_fail(c, AOS_ERR_USAGE, "no command given (see aosctl --help)");
    }
    if (!L.cmd) {
        char list[1024], typed[256];
        if (L.depth == 0)
            return ctl_fail(c, AOS_ERR_USAGE, "unknown command \"%s\" (see aosctl --help)",
                            L.words[0]);
        list_matching(L.depth, L.words, list, sizeof list);
        join_words(L.depth + (L.nwords > L.depth), L.words, typed, sizeof typed);
        return ctl_fail(c, AOS_ERR_USAGE, "%s command \"%s\"; one of: %s",
                        L.nwords > L.depth ? "unknown" : "incomplete", typed, list);
    }
    if (L.why[0]) {
        char u[256];
        ctl_usage(L.cmd->args, L.cmd->nargs, u, sizeof u);
        if (!L.hint)
            return ctl_fail(c, AOS_ERR_USAGE, "%s", L.why);
        return ctl_fail(c, AOS_ERR_USAGE, "%s; usage: aosctl %s%s%s", L.why, L.cmd->path,
                        u[0] ? " " : "", u);
    }
    return L.cmd->run(c, &L.v);
}

int main(int argc, char **argv)
{
    ctl_ctx c = {.json = 0, .data_dir = NULL, .timeout_ms = AOS_DEFAULT_TIMEOUT_MS};
    /* the build's: the man page and the completion from this same table */
    if (argc == 2 && !strcmp(argv[1], "--gen-man"))
        return ctl_gen_man(stdout, &global_cmd, groups, NGROUPS);
    if (argc == 2 && !strcmp(argv[1], "--gen-bash-completion"))
        return ctl_gen_bash(stdout, &global_cmd, groups, NGROUPS);
    int rc = run_main(&c, argc, argv);
    aos_close(c.conn);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "aosctl: cannot write the output: %s\n", strerror(errno));
        if (rc == 0)
            rc = aos_err_exit_code(AOS_ERR_IO);
    }
    return rc;
}
