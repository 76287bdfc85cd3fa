/* aos-audit's OpenTelemetry side: each committed record becomes a span (GenAI semantic
 * conventions for LLM calls and tool runs, aos.* for the rest), pushed to the OTLP exporter. */
#ifndef AUDIT_EXPORT_H
#define AUDIT_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "otlp.h"
#include "record.h"
#include "serve.h"

typedef struct aexp aexp;

/* From aos-audit's configuration (an aos.audit.Config, untrusted bytes off its fd): NULL
 * in *out and AOS_OK when it sets no endpoint; else an exporter started (otlp_new: before
 * the sandbox, which then forbids new threads). Caller owns *out (aexp_free). */
aos_err aexp_new(const uint8_t *config, size_t len, aexp **out, char *why, size_t whylen);
/* 1 when config sets an endpoint (the sandbox then gives aos-audit the network). */
int aexp_wanted(const uint8_t *config, size_t len);
/* The span of r, queued (never blocks: drop-oldest when the queue is full). Called on the
 * writer thread, in seq order, once r is committed. */
void aexp_record(aexp *x, const audit_rec *r);
/* A mapper without an exporter (what tests check the spans with): aexp_record maps and
 * drops. NULL without memory; free with aexp_free. */
aexp *aexp_mapper(void);
/* The record as a span (x may be NULL: then an llm.reply does not learn its request's
 * model): what aexp_record pushes. */
void aexp_span_of(aexp *x, const audit_rec *r, otlp_span *s);
void aexp_stats(aexp *x, srv_stats *st);
void aexp_free(aexp *x);

#endif
