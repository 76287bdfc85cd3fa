/* aosctl's command framework: each command group lives in its own file and exports a
 * table; main.c parses the global flags, dispatches, and owns --json, --desc and exits. */
#ifndef AOSCTL_H
#define AOSCTL_H

#include <stddef.h>
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

/* One command. path is its words ("server kill"); argv given to run() holds only what
 * follows the path (options of the command included). run returns the exit code. */
typedef struct ctl_cmd {
    const char *path;
    const char *usage;          /* "NAME [-n N]" */
    const char *summary;        /* one line for people */
    const char *args_json;      /* JSON array describing the arguments, for --desc */
    const char *output_schema;  /* JSON Schema (a JSON text) of the --json output */
    int (*run)(ctl_ctx *c, int argc, char **argv);
} ctl_cmd;

typedef struct ctl_group {
    const ctl_cmd *cmds;
    size_t n;
} ctl_group;

/* The groups; main.c lists them all. Add yours there when you add a file. */
extern const ctl_group ctl_group_kernel;   /* status, server kill|restart, ping */
extern const ctl_group ctl_group_storage;  /* kv, queue, checkpoint */

/* Print the error (people: "aosctl: message" on stderr; --json: {"error":{"code":N,
 * "name":"NOT_FOUND","message":"..."}} on stdout) and return the exit code for err. */
int ctl_fail(ctl_ctx *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
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
