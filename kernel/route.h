/* The router: aosd's control socket (aosctl, admin clients) with many requests in flight,
 * each validated, classed, and answered by the kernel or forwarded to its server. */
#ifndef AOS_ROUTE_H
#define AOS_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

typedef struct route route;

/* Listen on url (ipc://DIR/control.sock, mode 0600, callers must have our uid or be
 * root) through a bounded listener (listen.h): at most 1024 connections, a connection
 * that sends no request within 10 s is closed. Lives until the process exits (route_close
 * stops it). */
aos_err route_open(route **out, const char *url, char *why, size_t whylen);
void route_close(route *r);
/* The agents' socket at url (agents.h admits its pipes): the same router, where every
 * request's agent id is the pipe's and the manifest's rights are checked first. */
aos_err route_open_agents(route *r, const char *url, char *why, size_t whylen);
/* Housekeeping from the main loop: drops finished streams nobody pulls any more. */
void route_tick(route *r, uint64_t now_mono);
uint64_t route_bad_messages(const route *r);
/* What the LLM scheduler (llmq.h) calls when a queued call may go, or must fail. */
struct llmq_hooks;
const struct llmq_hooks *route_llm_hooks(void);
uint64_t route_routed(const route *r);
/* Requests routed so far by method class (km_class: control, read, write, effect, llm). */
void route_class_counts(uint64_t out[5]);

#endif
