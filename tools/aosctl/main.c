/* aosctl: parses the global flags, finds the command in the group tables and runs it;
 * owns --json (one document per run), --desc, --help, the connection and exit codes. */
#include "aosctl.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef AOS_VERSION
#define AOS_VERSION "unknown"
#endif

/* Connects c on first use; r receives the reason on failure. Shared with the commands
 * that must connect before timing a call (ping); belongs in aosctl.h. */

static const ctl_group *const groups[] = {
    &ctl_group_kernel,
    &ctl_group_storage,
};
#define NGROUPS (sizeof groups / sizeof groups[0])

#define MAX_WORDS 8

/* Set once the one JSON document of this run is out: a second one would break readers. */
static int g_printed;

static const char global_usage[] =
    "aosctl [--data-dir DIR] [--json] [--timeout MS] COMMAND [ARGS]";

static const struct {
    const char *flag, *value, *summary;
} global_flags[] = {
    {"--data-dir", "DIR", "aos data directory (default: $AOS_DATA_DIR, /var/lib/aos for "
                          "root, else $XDG_DATA_HOME/aos or ~/.local/share/aos)"},
    {"--json", NULL, "print exactly one JSON document on stdout, errors included"},
    {"--timeout", "MS", "per-call timeout in milliseconds (default 30000)"},
    {"--help", NULL, "print help; after a command: that command's usage"},
    {"--desc", NULL, "after a command: its machine-readable description (JSON); alone: all"},
    {"--version", NULL, "print the version"},
};

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
    static const char *const names[] = {"memory", "storage", "tool", "llm", "audit"};
    if (!arg)
        return NULL;
    if (strncmp(arg, "aos-", 4) == 0)
        arg += 4;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(arg, names[i]) == 0)
            return names[i];
    if (allow_pg && strcmp(arg, "postgres") == 0)
        return "postgres";
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
static size_t match_words(const ctl_cmd *cmd, int argc, char **argv, int *full)
{
    char buf[256], *w[MAX_WORDS];
    size_t n = split_path(cmd->path, buf, sizeof buf, w), k = 0;
    while (k < n && (int)k < argc && strcmp(w[k], argv[k]) == 0)
        k++;
    *full = k == n;
    return k;
}

/* The command whose whole path starts argv, longest first; *depth gets the number of
 * leading words that match some command (for "did you mean"). */
static const ctl_cmd *find_cmd(int argc, char **argv, size_t *depth, size_t *used)
{
    const ctl_cmd *best = NULL;
    size_t best_n = 0, deepest = 0;
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            int full;
            size_t k = match_words(&groups[g]->cmds[i], argc, argv, &full);
            if (k > deepest)
                deepest = k;
            if (full && k > best_n) {
                best = &groups[g]->cmds[i];
                best_n = k;
            }
        }
    }
    *depth = deepest;
    *used = best_n;
    return best;
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

/* A command's description, or NULL with why filled (a bad table entry is our bug). */
static json_t *cmd_desc(const ctl_cmd *cmd, char *why, size_t whylen)
{
    json_error_t je;
    json_t *args = cmd->args_json ? json_loads(cmd->args_json, 0, &je) : json_array();
    if (!args) {
        snprintf(why, whylen, "command \"%s\": bad arguments description: %s (col %d)",
                 cmd->path, je.text, je.column);
        return NULL;
    }
    json_t *out = cmd->output_schema ? json_loads(cmd->output_schema, 0, &je) : json_null();
    if (!out) {
        json_decref(args);
        snprintf(why, whylen, "command \"%s\": bad output schema: %s (col %d)", cmd->path,
                 je.text, je.column);
        return NULL;
    }
    char usage[512];
    snprintf(usage, sizeof usage, "aosctl %s%s%s", cmd->path, cmd->usage && *cmd->usage ?
             " " : "", cmd->usage ? cmd->usage : "");
    json_t *d = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o}", "command", cmd->path, "usage", usage,
                          "summary", cmd->summary ? cmd->summary : "", "arguments", args,
                          "output", out, "exit_codes", exit_codes_json());
    if (!d)
        snprintf(why, whylen, "out of memory");
    return d;
}

/* Every command whose path starts with the given words (all when nwords is 0). */
static json_t *list_desc(int nwords, char **words, char *why, size_t whylen)
{
    json_t *cmds = json_array(), *flags = json_array(), *doc = NULL;
    snprintf(why, whylen, "out of memory");
    if (!cmds || !flags)
        goto out;
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            int full;
            if ((int)match_words(&groups[g]->cmds[i], nwords, words, &full) < nwords)
                continue;
            json_t *d = cmd_desc(&groups[g]->cmds[i], why, whylen);
            if (!d || json_array_append_new(cmds, d) != 0)
                goto out;
        }
    }
    for (size_t i = 0; i < sizeof global_flags / sizeof global_flags[0]; i++)
        if (json_array_append_new(flags, json_pack("{s:s,s:s?,s:s}", "name",
                                                   global_flags[i].flag, "value",
                                                   global_flags[i].value, "summary",
                                                   global_flags[i].summary)) != 0)
            goto out;
    doc = json_pack("{s:s,s:s,s:s,s:O,s:O,s:o}", "program", "aosctl", "version",
                    AOS_VERSION, "usage", global_usage, "global_flags", flags, "commands",
                    cmds, "exit_codes", exit_codes_json());
out:
    json_decref(cmds);
    json_decref(flags);
    return doc;
}

static void print_help(FILE *f)
{
    fprintf(f, "usage: %s\n       aosctl COMMAND... --desc   describe a command as JSON "
            "(alone: every command)\n\nglobal flags (before the command):\n", global_usage);
    for (size_t i = 0; i < sizeof global_flags / sizeof global_flags[0]; i++) {
        char left[32];
        snprintf(left, sizeof left, "%s%s%s", global_flags[i].flag,
                 global_flags[i].value ? " " : "",
                 global_flags[i].value ? global_flags[i].value : "");
        fprintf(f, "  %-16s %s\n", left, global_flags[i].summary);
    }
    fprintf(f, "\ncommands:\n");
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            const ctl_cmd *cmd = &groups[g]->cmds[i];
            char left[128];
            snprintf(left, sizeof left, "%s %s", cmd->path, cmd->usage ? cmd->usage : "");
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
    printf("usage: aosctl [global flags] %s %s\n%s\n", cmd->path,
           cmd->usage ? cmd->usage : "", cmd->summary ? cmd->summary : "");
    printf("aosctl %s --desc prints its arguments, output schema and exit codes as JSON.\n",
           cmd->path);
}

/* "server kill NAME, server restart NAME" for the commands under the given words. */
static void list_matching(int nwords, char **words, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t g = 0; g < NGROUPS; g++) {
        for (size_t i = 0; i < groups[g]->n; i++) {
            int full;
            const ctl_cmd *cmd = &groups[g]->cmds[i];
            if ((int)match_words(cmd, nwords, words, &full) < nwords)
                continue;
            int w = snprintf(out + used, cap - used, "%s%s%s%s", used ? ", " : "", cmd->path,
                             cmd->usage && *cmd->usage ? " " : "", cmd->usage ? cmd->usage : "");
            if (w < 0 || (size_t)w >= cap - used)
                return;
            used += (size_t)w;
        }
    }
}

static void join_words(int n, char **w, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        int k = snprintf(out + used, cap - used, "%s%s", i ? " " : "", w[i]);
        if (k < 0 || (size_t)k >= cap - used)
            return;
        used += (size_t)k;
    }
}

/* ---- main ------------------------------------------------------------------------ */

static int parse_timeout(const char *s, uint32_t *out)
{
    char *end;
    errno = 0;
    if (!s || *s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > INT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Index of the first of "--desc"/"--help"/"-h" in argv before a "--", or -1. */
static int find_flag(int argc, char **argv, int help)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return -1;
        if (help ? (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
                 : strcmp(argv[i], "--desc") == 0)
            return i;
    }
    return -1;
}

static int run_main(ctl_ctx *c, int argc, char **argv)
{
    int help = 0, desc = 0, i = 1;
    char why[512];

    /* --json first, so that an error in the other flags already prints JSON */
    for (int k = 1; k < argc && argv[k][0] == '-' && strcmp(argv[k], "--"); k++)
        if (strcmp(argv[k], "--json") == 0)
            c->json = 1;

    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "--json") == 0) {
            c->json = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help = 1;
        } else if (strcmp(a, "--desc") == 0) {
            desc = 1;
        } else if (strcmp(a, "--version") == 0) {
            if (c->json)
                return ctl_print_json(c, json_pack("{s:s}", "version", AOS_VERSION));
            printf("aosctl %s\n", AOS_VERSION);
            return 0;
        } else if (strcmp(a, "--data-dir") == 0 || strncmp(a, "--data-dir=", 11) == 0) {
            const char *v = a[10] == '=' ? a + 11 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !*v)
                return ctl_fail(c, AOS_ERR_USAGE, "--data-dir needs a directory");
            if (strlen(v) >= PATH_MAX)
                return ctl_fail(c, AOS_ERR_USAGE, "--data-dir: path too long");
            c->data_dir = v;
        } else if (strcmp(a, "--timeout") == 0 || strncmp(a, "--timeout=", 10) == 0) {
            const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
            if (parse_timeout(v, &c->timeout_ms) != 0)
                return ctl_fail(c, AOS_ERR_USAGE, "--timeout needs milliseconds, 1 to %d",
                                INT32_MAX);
        } else {
            return ctl_fail(c, AOS_ERR_USAGE, "unknown global flag \"%s\" (global flags go "
                            "before the command; see aosctl --help)", a);
        }
    }
    int rest = argc - i;
    char **words = argv + i;

    if (rest == 0) {
        if (desc || (help && c->json)) {
            json_t *d = list_desc(0, NULL, why, sizeof why);
            return d ? ctl_print_json(c, d) : ctl_fail(c, AOS_ERR_INTERNAL, "%s", why);
        }
        if (help) {
            print_help(stdout);
            return 0;
        }
        if (!c->json)
            print_help(stderr);
        return ctl_fail(c, AOS_ERR_USAGE, "no command given");
    }

    size_t depth, used;
    const ctl_cmd *cmd = find_cmd(rest, words, &depth, &used);
    if (!cmd) {
        char list[1024], typed[256];
        if (depth == 0)
            return ctl_fail(c, AOS_ERR_USAGE, "unknown command \"%s\" (see aosctl --help)",
                            words[0]);
        /* "server" alone or "server frob": describe or list what can follow the words */
        int tail_desc = find_flag(rest - (int)depth, words + depth, 0) >= 0;
        int tail_help = find_flag(rest - (int)depth, words + depth, 1) >= 0;
        if (desc || tail_desc || (c->json && (help || tail_help))) {
            json_t *d = list_desc((int)depth, words, why, sizeof why);
            return d ? ctl_print_json(c, d) : ctl_fail(c, AOS_ERR_INTERNAL, "%s", why);
        }
        list_matching((int)depth, words, list, sizeof list);
        if (help || tail_help) {
            printf("commands: %s\n", list);
            return 0;
        }
        join_words((int)depth + ((size_t)rest > depth), words, typed, sizeof typed);
        return ctl_fail(c, AOS_ERR_USAGE, "%s command \"%s\"; one of: %s",
                        (size_t)rest > depth ? "unknown" : "incomplete", typed, list);
    }
    int after_desc = find_flag(rest - (int)used, words + used, 0);
    int after_help = find_flag(rest - (int)used, words + used, 1);
    if (desc || after_desc >= 0 || (c->json && (help || after_help >= 0))) {
        json_t *d = cmd_desc(cmd, why, sizeof why);
        return d ? ctl_print_json(c, d) : ctl_fail(c, AOS_ERR_INTERNAL, "%s", why);
    }
    if (help || after_help >= 0) {
        print_cmd_help(cmd);
        return 0;
    }
    return cmd->run(c, rest - (int)used, words + used);
}

int main(int argc, char **argv)
{
    ctl_ctx c = {.json = 0, .data_dir = NULL, .timeout_ms = AOS_DEFAULT_TIMEOUT_MS};
    int rc = run_main(&c, argc, argv);
    aos_close(c.conn);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "aosctl: cannot write the output: %s\n", strerror(errno));
        if (rc == 0)
            rc = aos_err_exit_code(AOS_ERR_IO);
    }
    return rc;
}
