/* aos-tool's MCP servers: each declared in aos.yaml, started in the sandbox on first use,
 * its tools in the catalogue as mcp.<server>.<tool>, restarted on the next use after it dies. */
#ifndef AOS_TOOL_MSRV_H
#define AOS_TOOL_MSRV_H

#include <stddef.h>

#include "aos/err.h"
#include "desc.h"
#include "jail.h"
#include "serve.h"
#include "tool.pb-c.h"

typedef struct msrv msrv;

/* Takes the servers of cfg (borrowed: it outlives msrv), binds their paths under dir
 * (aos-tool's own; NULL: none) and starts the manager thread. From the server's open,
 * while still root: the binds need it, and the sandboxed servers' parent-death signal
 * follows this thread. *out is the caller's (msrv_close). */
aos_err msrv_open(jail *jl, const Aos__Tool__Config *cfg, const char *dir, msrv **out,
                  char *why, size_t whylen);

/* Every server up (started now if not running, waiting at most timeout_ms for all), then
 * fn(arg, descs, sources, n) once with all their tools, under msrv's lock (everything is
 * borrowed for the call: a tool list may change right after). A server with no tools
 * (not started, died, empty) is reported through note first, with the reason. */
void msrv_with_tools(msrv *m, unsigned timeout_ms,
                     void (*fn)(void *arg, const desc *const *ds, const char *const *srcs,
                                size_t n),
                     void (*note)(void *arg, const char *text), void *arg);

/* 1 when name is "mcp.<server>.<tool>" of a declared server (whether or not it runs). */
int msrv_owns(const msrv *m, const char *name);

/* Runs one MCP tool for call (an async handler's call: answered exactly once, from the
 * manager or the session's reader thread). args is borrowed. */
void msrv_run(msrv *m, srv_call *call, const char *name, const char *agent,
              const json_t *args, unsigned time_ms);

typedef struct msrv_counts {
    unsigned declared, running, starts, deaths;
    unsigned long long calls;
} msrv_counts;
void msrv_counts_get(msrv *m, msrv_counts *c);

/* Kills every server, fails what is pending, stops the thread. NULL is fine. */
void msrv_close(msrv *m);

#endif
