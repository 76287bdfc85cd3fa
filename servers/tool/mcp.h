/* aos-tool's MCP client: one JSON-RPC 2.0 session over an MCP server's stdin/stdout (the
 * MCP stdio transport, one message per "\n"-terminated line), and its pure line decoder. */
#ifndef AOS_TOOL_MCP_H
#define AOS_TOOL_MCP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define MCP_LINE_MAX_DEFAULT (8u << 20) /* longest line accepted when opts say 0 */
#define MCP_INIT_TIMEOUT_DEFAULT 10000u /* ms for the initialize handshake when opts say 0 */
#define MCP_PENDING_MAX 1024u           /* requests in flight on one session */
#define MCP_WRITE_MS 5000u              /* a server that reads nothing for this long is dead */
#define MCP_PAGES_MAX 64u               /* tools/list pages followed */
#define MCP_TOOLS_MAX 4096u             /* tools over all pages */

/* Newest first: the first is offered, any of them is accepted in the answer. */
#define MCP_PROTOCOLS {"2025-06-18", "2025-03-26", "2024-11-05"}

typedef struct mcp mcp; /* one session with one MCP server process */

typedef struct mcp_opts {
    const char *name;         /* the server's name in aos.yaml, for messages (NULL: "mcp") */
    int to_fd, from_fd;       /* its stdin (we write), its stdout (we read); the session
                               * owns both and closes them in mcp_free (or a failed open) */
    size_t line_max;          /* longest line accepted (0: 8 MiB); longer: session dead */
    unsigned init_timeout_ms; /* initialize handshake (0: 10 s) */
    /* Once, from the reader thread, when an open session dies (not on mcp_free). */
    void (*on_dead)(void *arg, const char *why);
    /* notifications/tools/list_changed, from the reader thread: list the tools again. */
    void (*on_list_changed)(void *arg);
    void *arg;
} mcp_opts;

/* Starts the reader thread, sends initialize (offering the newest of MCP_PROTOCOLS), waits
 * for the answer (protocolVersion one of MCP_PROTOCOLS, result with serverInfo and
 * capabilities objects), sends notifications/initialized. *out is the caller's (mcp_free).
 * On failure *out is NULL, the fds are closed and why says what went wrong: TIMEOUT (no
 * answer), PROTO (a bad answer, an unsupported version), UNAVAILABLE (the server died),
 * INTERNAL (it answered with a JSON-RPC error), USAGE (bad opts), NOMEM. */
aos_err mcp_open(const mcp_opts *o, mcp **out, char *why, size_t whylen);
const char *mcp_protocol(const mcp *m);      /* the negotiated version; borrowed */
const json_t *mcp_server_info(const mcp *m); /* serverInfo; borrowed, lives as long as m */
const json_t *mcp_server_capabilities(const mcp *m); /* borrowed, lives as long as m */

/* All tools over every page (cursor loop, at most MCP_PAGES_MAX pages / MCP_TOOLS_MAX
 * tools, timeout_ms for all of them, 0: 10 s); *tools is a new reference (the caller's
 * json_decref) to an array of the server's tool objects, each checked: name a non-empty
 * string unique in the list, inputSchema an object, description a string and outputSchema
 * an object when present. A bad tool or page is PROTO, too many TOO_BIG, and *tools NULL.
 * Blocks; must not be called from a callback (it runs on the reader thread). */
aos_err mcp_list_tools(mcp *m, unsigned timeout_ms, json_t **tools, char *why, size_t whylen);

typedef void (*mcp_done_fn)(void *arg, aos_err status, const json_t *result, const char *why);

/* tools/call without blocking: done(arg, status, result, why) runs exactly once when the
 * call id returned is > 0, and never when 0 is returned. It runs on the reader thread (it
 * may even run before mcp_call returns) or on the caller's thread from mcp_cancel /
 * mcp_free, and must not call mcp_free nor block long. status AOS_OK: result is the
 * "result" object (borrowed during done: content, isError, structuredContent); else result
 * is NULL and status is TIMEOUT (after timeout_ms, 0: none; notifications/cancelled is
 * sent), CANCELLED, UNAVAILABLE (the session died or was freed), PROTO (a result that is
 * not an object, content not an array, isError not a boolean), USAGE (JSON-RPC error
 * -32602, invalid params, which includes an unknown tool) or INTERNAL (any other JSON-RPC
 * error), with the server's message in why. args (borrowed; NULL: {}) must be an object.
 * Returns 0 with why set when nothing was sent: dead session, MCP_PENDING_MAX calls in
 * flight (UNAVAILABLE-like), a request longer than line_max, a failed write. */
uint64_t mcp_call(mcp *m, const char *tool, const json_t *args, unsigned timeout_ms,
                  mcp_done_fn done, void *arg, char *why, size_t whylen);
/* The caller went away: runs done with AOS_ERR_CANCELLED now (on this thread), then sends
 * notifications/cancelled {requestId, reason}; a reply arriving later is dropped. Unknown
 * or finished id: no-op. reason may be NULL. */
void mcp_cancel(mcp *m, uint64_t id, const char *reason);
/* 1 once the session is dead (EOF, malformed message, oversized line, write error). */
int mcp_dead(const mcp *m);
/* Why the session died ("" while alive); borrowed, stable once dead. */
const char *mcp_dead_why(const mcp *m);
/* Stops the reader thread, fails every pending call with UNAVAILABLE on this thread,
 * closes the fds. Does not kill the process (the caller does). NULL is fine. */
void mcp_free(mcp *m);

/* The decoder (pure, for the fuzzer and tests): one line → a classified message. */
typedef enum { MCP_MSG_RESPONSE, MCP_MSG_ERROR, MCP_MSG_REQUEST, MCP_MSG_NOTIFICATION } mcp_kind;
typedef struct mcp_msg {
    mcp_kind kind;
    json_t *id;          /* RESPONSE/REQUEST: an integer or a string; ERROR: also null
                          * (JSON-RPC's answer to a request it could not read); borrowed */
    const char *method;  /* REQUEST/NOTIFICATION: non-empty, no NUL */
    json_t *params;      /* an object or an array, or NULL when absent */
    json_t *result;      /* RESPONSE: any JSON value */
    long long err_code;  /* ERROR */
    const char *err_message;
    json_t *err_data;    /* ERROR: may be NULL */
    json_t *root;        /* owns all of the above: json_decref(root) */
} mcp_msg;
/* AOS_ERR_USAGE with why for anything not a valid JSON-RPC 2.0 message: not JSON, not an
 * object (a batch array too: MCP 2025-06-18 removed batching), jsonrpc not "2.0", a method
 * together with result or error, both result and error, neither, an id of a wrong type,
 * params neither object nor array, an error without integer code and string message, a
 * duplicate key, a NUL byte (raw or \u0000), invalid UTF-8. On error *out is zeroed (root
 * NULL). On success the caller owns out->root. */
aos_err mcp_decode(const char *line, size_t len, mcp_msg *out, char *why, size_t whylen);

/* The line splitter + decoder the reader thread runs, without a session (the fuzzer and
 * tests drive it too). Bytes are cut at "\n"; a line may end "\r\n"; empty lines are
 * skipped; a line longer than line_max bytes, or one that does not decode, is fatal: the
 * reader refuses every later feed with the same error. */
typedef struct mcp_reader mcp_reader;
/* One decoded message; msg is borrowed (freed after the call). A non-OK return stops the
 * feed and is returned by it (the reader is not broken by it). */
typedef aos_err (*mcp_msg_fn)(void *arg, const mcp_msg *msg, char *why, size_t whylen);
/* line_max 0: MCP_LINE_MAX_DEFAULT. NULL on no memory; the caller frees with
 * mcp_reader_free. */
mcp_reader *mcp_reader_new(size_t line_max);
/* Feeds n bytes, calling fn for each complete message in order. USAGE (a bad line, with
 * its number), TOO_BIG ("line longer than N bytes"), NOMEM, or fn's error. */
aos_err mcp_reader_feed(mcp_reader *r, const char *data, size_t n, mcp_msg_fn fn, void *arg,
                        char *why, size_t whylen);
/* Bytes of an unfinished line held. */
size_t mcp_reader_pending(const mcp_reader *r);
void mcp_reader_free(mcp_reader *r); /* NULL is fine */

#endif
