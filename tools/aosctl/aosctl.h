/* aosctl's command framework: each command group lives in its own file and exports a table
 * of commands, each with one table of its arguments that drives the parser, --help and --desc. */
#ifndef AOSCTL_H
#define AOSCTL_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/aos.h"

/* Per-invocation state, built by main.c from the global flags. */
typedef struct ctl_ctx {
    int json;                 /* --json: print exactly one JSON document on stdout */
    const char *data_dir;     /* --data-dir, or NULL for the default */
    uint32_t timeout_ms;      /* --timeout MS (default AOS_DEFAULT_TIMEOUT_MS) */
    aos_conn *conn;           /* connected on first use by ctl_call; closed by main.c */
} ctl_ctx;

/* ---- argument tables ---------------------------------------------------------------- */

typedef enum ctl_type {
    CTL_STRING,
    CTL_INTEGER,
    CTL_BOOL, /* flags only: present or not, takes no value */
} ctl_type;

/* A value check beyond type and range (an agent id, a server name). Returns 0, or -1 with
 * why filled: the message the user sees, so it names the value and what is wanted. */
typedef int (*ctl_check_fn)(const char *val, char *why, size_t whylen);

/* One argument. A name starting with '-' is a flag ("--limit", given as "--limit 5" or
 * "--limit=5" anywhere after the command); any other name is a positional, filled in table
 * order. Everything --help and --desc say about an argument comes from here. */
typedef struct ctl_arg {
    const char *name;
    char short_name;            /* 'n' for "-n 5" / "-n5"; 0 for none */
    ctl_type type;
    const char *value;          /* what a flag's value is called in usage ("N", "MS") */
    int required;               /* positionals: must be given (flags are never required) */
    int64_t min, max;           /* CTL_INTEGER: the accepted range, inclusive */
    const char *def;            /* the default, as it would be typed; NULL for none */
    const char *const *choices; /* NULL-terminated: --desc "enum" (check enforces it) */
    const char *pattern;        /* --desc "pattern" (check enforces it) */
    ctl_check_fn check;
    const char *summary;
} ctl_arg;

#define CTL_ARGS_MAX 8

/* The parsed values of one command line, indexed like the command's table. */
typedef struct ctl_vals {
    const struct ctl_cmd *cmd;
    const char *str[CTL_ARGS_MAX]; /* as typed, or the default; NULL when neither */
    int64_t num[CTL_ARGS_MAX];     /* CTL_INTEGER: the value; CTL_BOOL: 1 when given */
    unsigned char given[CTL_ARGS_MAX];
} ctl_vals;

/* One command. path is its words ("server kill"). run gets the values its table parsed
 * and checked, and returns the exit code. */
typedef struct ctl_cmd {
    const char *path;
    const char *summary;        /* one line for people */
    const ctl_arg *args;
    size_t nargs;
    const char *output_schema;  /* JSON Schema (a JSON text) of the --json output */
    int (*run)(ctl_ctx *c, const ctl_vals *v);
} ctl_cmd;

/* args, nargs of a ctl_cmd from a static array. */
#define CTL_ARGS(a) (a), (sizeof(a) / sizeof((a)[0]))

typedef struct ctl_group {
    const ctl_cmd *cmds;
    size_t n;
} ctl_group;

/* The groups; main.c lists them all. Add yours there when you add a file. */
extern const ctl_group ctl_group_kernel;   /* status, server kill|restart, ping */
extern const ctl_group ctl_group_storage;  /* kv, queue, checkpoint */
extern const ctl_group ctl_group_config;   /* config check */
extern const ctl_group ctl_group_llm;      /* llm providers|test|usage */
extern const ctl_group ctl_group_audit;    /* audit verify|head|prove|check-proof|tail */
extern const ctl_group ctl_group_audit_archive; /* audit archive */
extern const ctl_group ctl_group_audit_replay; /* audit replay */
extern const ctl_group ctl_group_tool;     /* tools [show], tool run */
extern const ctl_group ctl_group_sched;    /* sched [set] */
extern const ctl_group ctl_group_mem;      /* mem show|search|stats */
extern const ctl_group ctl_group_agent;    /* apply, ps, top, agent ACTION|inspect|logs */
extern const ctl_group ctl_group_logs;     /* logs */
extern const ctl_group ctl_group_runs;     /* agent runs */
extern const ctl_group ctl_group_msg;      /* msg send|ls */
extern const ctl_group ctl_group_backup;   /* backup, restore */

/* Values by the name in the table. Asking for a name the command does not have is a bug in
 * aosctl: it aborts, so the contract test, which runs every command, finds it. */
const char *ctl_str(const ctl_vals *v, const char *name); /* NULL: absent, no default */
int64_t ctl_int(const ctl_vals *v, const char *name);     /* the default when absent */
int ctl_given(const ctl_vals *v, const char *name);       /* typed on the line */

/* ---- the table machinery (args.c) ---------------------------------------------------- */

/* The flag of table a that token names: "--limit" or "-n" (name is the part before any
 * "=", namelen its length). NULL when none. */
const ctl_arg *ctl_flag_find(const ctl_arg *a, size_t n, const char *name, size_t namelen);
/* Checks text against arg (type, range, check) and stores it in slot i of v. Returns 0, or
 * -1 with why filled. */
int ctl_value_set(const ctl_arg *arg, const char *text, ctl_vals *v, size_t i, char *why,
                  size_t whylen);
/* Fills v's defaults and checks the required positionals are there; -1 with why if not. */
int ctl_vals_finish(const ctl_cmd *cmd, ctl_vals *v, char *why, size_t whylen);
/* "AGENT [PREFIX] [--limit N]" for a table. */
void ctl_usage(const ctl_arg *a, size_t n, char *out, size_t cap);
/* The --desc entry of one argument; NULL when out of memory. */
json_t *ctl_arg_desc(const ctl_arg *a);
/* The human help lines of a table ("  --limit N    at most N keys (default 1000)"). */
void ctl_args_help(FILE *f, const ctl_arg *a, size_t n, int flags);

/* ---- output, calls --------------------------------------------------------------------- */

/* Print the error (people: "aosctl: message" on stderr; --json: {"error":{"code":N,
 * "name":"NOT_FOUND","exit_code":3,"message":"..."}} on stdout) and return the exit code. */
int ctl_fail(ctl_ctx *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The error of a local file a command could not open (errno e): ENOENT NOT_FOUND, EACCES
 * and EPERM REFUSED, the rest USAGE (a path that is not what the command wants). */
int ctl_errno_err(int e);
/* Bytes from a server, made safe for a terminal into dst (cap bytes, NUL-terminated):
 * control characters (C0, DEL, C1) and bytes that are not UTF-8 become '?', and the cut
 * falls on a character boundary. At most max characters (0: no limit); *cut (may be NULL)
 * says whether anything was left out. */
void ctl_clean(char *dst, size_t cap, const uint8_t *src, size_t n, size_t max, int *cut);
/* A program's output (a tool's, an agent's logs) to a terminal: newlines and tabs kept,
 * every other control character and every byte that is not UTF-8 shown as '?' (ctl_clean),
 * so the output cannot drive the terminal. Flushes f. */
void ctl_put_text(FILE *f, const uint8_t *d, size_t len);
/* Fails with the reply's status and message, and releases the reply. */
int ctl_fail_reply(ctl_ctx *c, aos_reply *r);
/* A --key argument: the audit log's public key in hex (a ctl_check_fn). */
int ctl_check_audit_key(const char *val, char *why, size_t whylen);
/* An agent argument: the charset aosd enforces, checked before any call (a ctl_check_fn). */
int ctl_check_agent(const char *val, char *why, size_t whylen);
/* Print doc as the one JSON document (takes the reference) and return 0. */
int ctl_print_json(ctl_ctx *c, json_t *doc);
/* Call method through aosd, encoding req (may be NULL) as the payload, acting for agent
 * (may be NULL). Returns the status; reply owned by caller (aos_reply_clear). Connects
 * on first use: no aosd gives AOS_ERR_UNAVAILABLE with "aosd is not running (DIR)". */
aos_err ctl_call(ctl_ctx *c, const char *agent, const char *method,
                 const ProtobufCMessage *req, aos_reply *reply);
/* Connect now (ctl_call does it on first use); on failure r->error says why. */
aos_err ctl_connect(ctl_ctx *c, aos_reply *r);
/* "storage" and "aos-storage" both name the storage server: the bare name, or NULL when
 * it is not one of memory, storage, tool, llm, audit (or postgres when allow_pg). */
const char *ctl_server_name(const char *arg, int allow_pg);

#endif
