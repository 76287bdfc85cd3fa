/* The router's one method table: for every method aos serves, its class, who answers it
 * (the kernel or a server), its payload cap and who may call it. Nothing else decides. */
#ifndef AOS_METHODS_H
#define AOS_METHODS_H

#include <stddef.h>
#include <stdint.h>

#include "aos/envelope.h"

/* What aosd does with a method before it forwards it: the audit (EFFECT waits for its
 * record), the scheduler (LLM) and agents' rights checks hook in on this column. */
typedef enum { KM_CONTROL, KM_READ, KM_WRITE, KM_EFFECT, KM_LLM } km_class;

/* Who may call: the control socket's admin, an agent's link, a server's link. */
#define KM_ADMIN 1u
#define KM_AGENT 2u
#define KM_SERVER 4u

/* Who answers: a kernel function, a server, or the router's stream machinery. */
typedef enum { KM_KERNEL, KM_ASYNC, KM_FORWARD, KM_PULL, KM_STOP_STREAM } km_kind;

/* Figures the kernel methods report, filled in by the caller. */
typedef struct km_env {
    uint64_t bad_messages;
    uint64_t routed;
} km_env;

/* A kernel method: *out (malloc'd, caller frees) is the reply payload; why on error. */
typedef aos_err (*km_fn)(const aos_env *req, const km_env *k, uint8_t **out, size_t *len,
                         char *why, size_t whylen);

/* A kernel method that answers later (agents.h: kreply_send); caller is the calling
 * agent's name from its link, "" on the control socket. */
struct kreply;
typedef void (*km_async_fn)(const aos_env *req, const char *caller, struct kreply *k);

typedef struct kmethod {
    const char *name;      /* exact, or "server.prefix.*" for a family */
    km_class cls;
    km_kind kind;
    const char *server;    /* KM_FORWARD: the server's name */
    km_fn fn;              /* KM_KERNEL */
    km_async_fn afn;       /* KM_ASYNC */
    uint32_t payload_max;
    unsigned who;
    int test_hook;         /* served only by servers started with --test-hooks */
} kmethod;

/* The entry for method, or NULL: aos has no such method. Static storage. */
const kmethod *km_find(const char *method);
const char *km_class_name(km_class c);
/* 1 when caller (KM_ADMIN, KM_AGENT or KM_SERVER) may call m. */
int km_allowed(const kmethod *m, unsigned caller);

#endif
