/* kernel.metrics: aosd's figures as Prometheus text (children, routed calls by class, the
 * LLM scheduler's queues, waits, tokens and cost per agent, the audit queue's lag). */
#ifndef AOS_METRICS_H
#define AOS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

/* The text exposition format (version 0.0.4) into *out, malloc'd, the caller frees it.
 * Read-only: it changes nothing. */
aos_err kmetrics_text(uint64_t bad_messages, uint64_t routed, char **out, size_t *len,
                      char *why, size_t whylen);

#endif
