/* aos-audit's OpenTelemetry export: spans as plain data, their OTLP/HTTP JSON encoding, and
 * an exporter whose one thread sends batches from a bounded, drop-oldest queue. */
#ifndef AOS_AUDIT_OTLP_H
#define AOS_AUDIT_OTLP_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

/* Fixed sizes, so a queued span is one flat copy and the queue's memory is known up front:
 * max_queue_spans * sizeof(otlp_span). Longer strings are cut at a UTF-8 boundary by the
 * otlp_attr_* setters (OpenTelemetry's attribute length limit does the same). */
#define OTLP_MAX_ATTRS 16u
#define OTLP_KEY_MAX 64u    /* bytes with the NUL */
#define OTLP_STR_MAX 256u   /* a string value or the status message, with the NUL */
#define OTLP_NAME_MAX 128u  /* the span name, with the NUL */

/* Attribute names of the GenAI semantic conventions and the resource; aos's own go under
 * "aos.". Values of gen_ai.operation.name: "chat", "execute_tool", "embeddings". */
#define OTLP_SERVICE_NAME "service.name"
#define OTLP_SERVICE_VERSION "service.version"
#define OTLP_GENAI_OPERATION_NAME "gen_ai.operation.name"
#define OTLP_GENAI_PROVIDER_NAME "gen_ai.provider.name"
#define OTLP_GENAI_REQUEST_MODEL "gen_ai.request.model"
#define OTLP_GENAI_REQUEST_MAX_TOKENS "gen_ai.request.max_tokens"
#define OTLP_GENAI_REQUEST_TEMPERATURE "gen_ai.request.temperature"
#define OTLP_GENAI_RESPONSE_MODEL "gen_ai.response.model"
#define OTLP_GENAI_RESPONSE_ID "gen_ai.response.id"
#define OTLP_GENAI_USAGE_INPUT_TOKENS "gen_ai.usage.input_tokens"
#define OTLP_GENAI_USAGE_OUTPUT_TOKENS "gen_ai.usage.output_tokens"
#define OTLP_GENAI_TOOL_NAME "gen_ai.tool.name"
#define OTLP_GENAI_TOOL_CALL_ID "gen_ai.tool.call.id"
#define OTLP_GENAI_TOOL_TYPE "gen_ai.tool.type"
#define OTLP_GENAI_CONVERSATION_ID "gen_ai.conversation.id"
#define OTLP_GENAI_AGENT_NAME "gen_ai.agent.name"
#define OTLP_ERROR_TYPE "error.type"

/* The numbers are OTLP's (trace.proto SpanKind and Status.StatusCode). */
typedef enum {
    OTLP_KIND_UNSPECIFIED = 0,
    OTLP_KIND_INTERNAL = 1,
    OTLP_KIND_SERVER = 2,
    OTLP_KIND_CLIENT = 3, /* an LLM call: the GenAI conventions' inference span */
    OTLP_KIND_PRODUCER = 4,
    OTLP_KIND_CONSUMER = 5,
} otlp_kind;

typedef enum {
    OTLP_STATUS_UNSET = 0,
    OTLP_STATUS_OK = 1,
    OTLP_STATUS_ERROR = 2,
} otlp_status;

typedef enum {
    OTLP_ATTR_STRING = 0,
    OTLP_ATTR_INT = 1,
    OTLP_ATTR_DOUBLE = 2,
    OTLP_ATTR_BOOL = 3,
} otlp_attr_type;

typedef struct otlp_attr {
    char key[OTLP_KEY_MAX];
    otlp_attr_type type;
    union {
        char s[OTLP_STR_MAX];
        int64_t i;
        double d; /* NaN and the infinities go out as the strings proto3's JSON uses */
        int b;
    } v;
} otlp_attr;

/* One finished span; plain data the caller fills (zero it first). Strings need no NUL when
 * they fill their array; bytes that are not UTF-8 are sent as U+FFFD. */
typedef struct otlp_span {
    uint8_t trace_id[16];      /* not all zero */
    uint8_t span_id[8];        /* not all zero */
    uint8_t parent_span_id[8]; /* all zero: a root span */
    char name[OTLP_NAME_MAX];  /* GenAI: "chat {model}", "execute_tool {tool}" */
    otlp_kind kind;
    uint64_t start_ns, end_ns; /* Unix time in nanoseconds */
    otlp_status status;
    char status_message[OTLP_STR_MAX]; /* sent only when not empty */
    unsigned n_attrs;                  /* at most OTLP_MAX_ATTRS */
    otlp_attr attrs[OTLP_MAX_ATTRS];
} otlp_span;

/* Append an attribute to s (or to any otlp_attr table through the span). AOS_ERR_TOO_BIG
 * when the table is full or the key does not fit OTLP_KEY_MAX; AOS_ERR_USAGE for an empty
 * key. A long string value is cut to fit. Nothing changes on error. */
aos_err otlp_attr_str(otlp_span *s, const char *key, const char *val);
aos_err otlp_attr_int(otlp_span *s, const char *key, int64_t val);
aos_err otlp_attr_double(otlp_span *s, const char *key, double val);
aos_err otlp_attr_bool(otlp_span *s, const char *key, int val);

/* AOS_OK when s may be encoded: ids not zero, kind, status, attribute count and types in
 * range, keys not empty. AOS_ERR_USAGE with why otherwise. */
aos_err otlp_span_check(const otlp_span *s, char *why, size_t whylen);

/* The ExportTraceServiceRequest of n spans (n >= 1) under one resource (its attributes
 * res[0..nres), e.g. service.name "aos" and service.version) and one instrumentation scope
 * (scope_name, scope_version; the version may be NULL), in OTLP/JSON: ids as lowercase
 * hex, times and 64-bit integers as decimal strings, enums as numbers. On AOS_OK the caller
 * owns *out (NUL-terminated, *outlen bytes without the NUL) and frees it with free(). On
 * error (AOS_ERR_USAGE: a span fails otlp_span_check; AOS_ERR_NOMEM) *out is NULL. */
aos_err otlp_encode(const otlp_span *spans, size_t n, const otlp_attr *res, size_t nres,
                    const char *scope_name, const char *scope_version, char **out,
                    size_t *outlen, char *why, size_t whylen);

/* Exporter limits and defaults (a zero field takes the default). */
#define OTLP_QUEUE_DEFAULT 2048u
#define OTLP_QUEUE_CAP 65536u
#define OTLP_BATCH_DEFAULT 512u
#define OTLP_BATCH_CAP 4096u
#define OTLP_FLUSH_MS_DEFAULT 1000u
#define OTLP_TIMEOUT_MS_DEFAULT 10000u
#define OTLP_RETRY_INITIAL_MS_DEFAULT 500u
#define OTLP_RETRY_MAX_MS_DEFAULT 30000u
#define OTLP_STOP_MS_DEFAULT 1000u
#define OTLP_MAX_HEADERS 32u
#define OTLP_HEADER_MAX 8192u

typedef struct otlp_config {
    const char *url;                 /* http:// or https://, e.g. .../v1/traces */
    const char *const *headers;      /* "Name: value" lines, NULL-terminated; may be NULL.
                                        Copied; never logged nor shown (they carry keys) */
    unsigned max_queue_spans;        /* spans waiting; the oldest is dropped past it */
    unsigned batch_max;              /* spans per request; not more than max_queue_spans */
    unsigned flush_ms;               /* longest a span waits for a fuller batch */
    unsigned timeout_ms;             /* one request, connect included */
    unsigned retry_initial_ms;       /* first backoff; doubles per retry, jittered */
    unsigned retry_max_ms;           /* the backoff's ceiling, and Retry-After's */
    unsigned stop_ms;                /* otlp_free's flush-and-stop budget */
    const char *service_name;        /* resource service.name; NULL: "aos" */
    const char *service_version;     /* resource service.version; NULL: AOS_VERSION */
    const void *ca_pem;              /* CA bundle for https, read before the sandbox; */
    size_t ca_pem_len;               /*   NULL: libcurl's default store (copied) */
} otlp_config;

typedef struct otlp otlp;

/* Figures since otlp_new. Every span pushed is in exactly one of sent, queued (waiting or
 * in the request under way), dropped_full (pushed out of a full queue, oldest first) and
 * dropped_rejected (refused by the collector: a 4xx other than 429, a 5xx other than
 * 502/503/504, a redirect, or counted in a partial success). */
typedef struct otlp_stats {
    uint64_t pushed, sent, queued, dropped_full, dropped_rejected;
    uint64_t retries;         /* requests sent again after a retryable failure */
    char last_error[256];     /* the latest failure, "" if none; never span contents */
} otlp_stats;

/* Start an exporter: checks the configuration, resolves the collector's host now (libcurl
 * then never starts its resolver thread: the sandbox forbids new threads), makes the
 * libcurl handles and starts the one sender thread, which lives until otlp_free. Call it
 * before the sandbox. The host's addresses are kept for the process: a DNS change needs a
 * restart. Caller owns *out (otlp_free). AOS_ERR_USAGE: a bad URL, header or limit;
 * AOS_ERR_UNAVAILABLE: the host does not resolve; AOS_ERR_NOMEM; AOS_ERR_INTERNAL. */
aos_err otlp_new(const otlp_config *cfg, otlp **out, char *why, size_t whylen);

/* Queue a copy of *s for export. Never blocks on the network nor waits for the sender
 * (it holds the lock for one span's copy at most); when the queue is full the oldest span
 * is dropped and counted. AOS_ERR_USAGE (s fails otlp_span_check; nothing is queued). */
aos_err otlp_push(otlp *e, const otlp_span *s, char *why, size_t whylen);

void otlp_stats_get(otlp *e, otlp_stats *out);

/* Send what is queued for at most cfg.stop_ms (one attempt per batch, no backoff), abort a
 * request still under way at that point, stop the thread and free everything. Bounded even
 * when the collector is dead or black-holes the connection. NULL is a no-op. */
void otlp_free(otlp *e);

#endif
