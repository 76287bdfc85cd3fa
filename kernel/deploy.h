/* The deployment file (YAML): which agents run, with what program, model, tools, budgets,
 * restart policy and wakes; checked whole, kept as canonical JSON, compared field by field. */
#ifndef AOS_DEPLOY_H
#define AOS_DEPLOY_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "cron.h"

#define DEP_FILE_MAX (4u << 20)   /* bytes of a deployment file */
#define DEP_AGENTS_MAX 4096u      /* agents in one file */
#define DEP_NAMES_MAX 4096u       /* collections, and topics, in one file */
#define DEP_NAME_MAX 64u          /* an agent's, a collection's, a topic's name */
#define DEP_ARGS_MAX 32u
#define DEP_ARG_MAX 1024u         /* bytes of one argument */
#define DEP_ENV_MAX 32u
#define DEP_ENV_VALUE_MAX 4096u
#define DEP_LIST_MAX 256u         /* tools, mcp_tools, collections of one agent */
#define DEP_BUDGET_MAX 9007199254740992ull /* 2^53: a budget stays exact as a JSON number */
#define DEP_CONTEXT_MIN 256u      /* budgets.context_tokens: aos-memory's window range */
#define DEP_CONTEXT_MAX 2000000u

typedef enum { DEP_RESTART_NEVER, DEP_RESTART_ON_FAILURE, DEP_RESTART_ALWAYS } dep_restart;

/* One agent as the file declares it, defaults filled in. Plain data: every pointer is owned
 * by the dep_agent (a NULL list has its count 0). tools, mcp_tools, collections, talks_to, subscribes and env are
 * sorted (env by name) so that one agent has one form, whichever order the file used. */
typedef struct dep_agent {
    char name[DEP_NAME_MAX + 1];
    char *program;                  /* an absolute path, or a name in aosd's bin dir */
    char **args;
    size_t nargs;
    char *model;                    /* "" when none */
    char **tools;
    size_t ntools;
    char **mcp_tools;               /* "server/tool" */
    size_t nmcp_tools;
    int network;
    uint64_t budget_tokens, budget_context_tokens, budget_wall_s, budget_steps; /* 0: none */
    double budget_cost_usd;         /* 0: none */
    double weight;                  /* 0.01 .. 10000 */
    int batch;                      /* priority: batch (else interactive) */
    dep_restart restart;
    unsigned intensity;             /* more than intensity restarts ... */
    uint64_t period_ms;             /* ... in period_ms: failed */
    uint64_t backoff_min_ms, backoff_max_ms, stop_timeout_ms;
    uint64_t every_ms;              /* 0: no interval wake */
    char *cron;                     /* NULL: no cron wake; else the text as given */
    cron_spec cron_parsed;          /* zero when cron is NULL */
    char **collections;
    size_t ncollections;
    char **env;                     /* "NAME=value" */
    size_t nenv;
    char **talks_to;                /* the agents it may send mail to (agents of its file) */
    size_t ntalks_to;
    char **subscribes;              /* the topics whose publications reach its inbox */
    size_t nsubscribes;
    unsigned line;                  /* the line of its entry in the file (0 from JSON) */
} dep_agent;

typedef struct dep dep;             /* opaque: a whole file */

/* What the caller knows exists; kind is "model", "tool" or "mcp_tool" (name "server/tool");
 * returns 1 when name exists. Lets aosd and aosctl refuse an unknown one by its line. */
typedef int (*dep_known_fn)(void *arg, const char *kind, const char *name);

/* Checks text[0..len) (need not be NUL-terminated), a deployment file named file in the
 * messages; known may be NULL (no existence checks). On AOS_OK the caller owns *out (free
 * with dep_free). Otherwise *out is NULL and why says "FILE:LINE:COL: agents[2].budgets.tokens:
 * must be a non-negative number": AOS_ERR_USAGE for bad input, _TOO_BIG past a cap, _NOMEM.
 * An empty file, or one without agents, is a valid file of no agents. */
aos_err dep_parse(const char *text, size_t len, const char *file, dep_known_fn known,
                  void *arg, dep **out, char *why, size_t whylen);
/* NULL is fine. */
void dep_free(dep *d);

/* Owned by d, valid until dep_free; in file order. i must be below the count. */
size_t dep_nagents(const dep *d);
const dep_agent *dep_agent_at(const dep *d, size_t i);
size_t dep_ncollections(const dep *d);
const char *dep_collection_at(const dep *d, size_t i);
size_t dep_ntopics(const dep *d);
const char *dep_topic_at(const dep *d, size_t i);

/* The canonical JSON of one agent: every field of the file's form with defaults filled in
 * (model "" and wake null when none, every as its shortest exact unit like "90s", reals to
 * 15 digits), keys sorted, compact; what aosd stores in PostgreSQL and shows in `agent
 * inspect`. Same agent, same bytes. malloc'd, the caller frees; NULL when out of memory
 * (or for an agent built by hand with a string that is not UTF-8). */
char *dep_agent_json(const dep_agent *a);
/* Back from JSON of that form (the same checks as the file's, minus known() and the
 * file's collection list; line 0). why names the field ("budgets.tokens: ..."). On AOS_OK
 * the caller owns *out (dep_agent_free); otherwise *out is NULL. */
aos_err dep_agent_from_json(const char *json, size_t len, dep_agent **out, char *why,
                            size_t whylen);
/* A deep copy the caller owns (dep_agent_free); NULL when out of memory. */
dep_agent *dep_agent_dup(const dep_agent *a);
/* NULL is fine. */
void dep_agent_free(dep_agent *a);

/* The names of the top-level fields ("model", "budgets", "wake", ...: the keys of the
 * canonical JSON, in its order) that differ between a and b, into out (static strings, at
 * most cap of them); returns how many differ, which may exceed cap. 0: the same agent.
 * line is not compared. */
size_t dep_agent_diff(const dep_agent *a, const dep_agent *b, const char **out, size_t cap);

/* A duration: a bare integer of seconds, or an integer followed by ms, s, m, h or d
 * ("500ms", "30s", "2m", "1h", "1d"); at most 3650 days. *out in milliseconds. */
aos_err dep_duration_ms(const char *text, uint64_t *out, char *why, size_t whylen);

#endif
