/* The front door's wire formats as pure functions: OpenAI and Anthropic request bodies into
 * aos-llm's neutral messages, replies and streamed deltas back out, and the one error table. */
#ifndef AOS_API_FRONT_H
#define AOS_API_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "llm.pb-c.h"

typedef enum { FRONT_OPENAI = 1, FRONT_ANTHROPIC = 2 } front_flavour;

/* Caps on a request beyond the body's byte cap: what no client of a real model sends. */
#define FRONT_MESSAGES_MAX 10000u
#define FRONT_PARTS_MAX 1000u
#define FRONT_TOOLS_MAX 512u
#define FRONT_CALLS_MAX 256u
#define FRONT_STOPS_MAX 16u
#define FRONT_NAME_MAX 256u
#define FRONT_EMBED_INPUTS_MAX 2048u

/* ---- requests ----------------------------------------------------------------------------
 * Each decodes body (len bytes, untrusted: any bytes) into *out, a message the caller frees
 * with protobuf_c_message_free_unpacked(out, NULL); *stream says whether the client asked
 * for a stream (and *usage_in_stream, OpenAI's stream_options.include_usage). AOS_ERR_USAGE
 * with why (the field and what is wrong, for the client's 400) for anything that is not a
 * request of that API: not JSON, not UTF-8, a field of the wrong type, a cap passed, a role
 * the API has not. Unknown fields are ignored, as the providers do. */
aos_err front_openai_chat(const char *body, size_t len, Aos__Llm__ChatRequest **out,
                          int *stream, int *usage_in_stream, char *why, size_t whylen);
aos_err front_anthropic_messages(const char *body, size_t len, Aos__Llm__ChatRequest **out,
                                 int *stream, char *why, size_t whylen);
/* *base64: encoding_format "base64" (the official clients' default): the vectors go back
 * as base64 of little-endian float32s. */
aos_err front_openai_embed(const char *body, size_t len, Aos__Llm__EmbedRequest **out,
                           int *base64, char *why, size_t whylen);

/* ---- replies: malloc'd NUL-terminated JSON (*len bytes) the caller frees; NULL when out of
 * memory. id is the response's id ("chatcmpl-…", "msg_…"), model the name the client asked
 * for, created the Unix time in seconds. */
char *front_openai_reply(const Aos__Llm__ChatReply *r, const char *id, const char *model,
                         uint64_t created, size_t *len);
char *front_anthropic_reply(const Aos__Llm__ChatReply *r, const char *id, const char *model,
                            size_t *len);
char *front_openai_embed_reply(const Aos__Llm__EmbedReply *r, const char *model, int base64,
                               size_t *len);
/* GET /v1/models: the one model the agent's manifest grants (none: an empty list). */
char *front_openai_models(const char *model, uint64_t created, size_t *len);

/* ---- streams: one encoder per response, fed the ChatDeltas as they come and the final
 * ChatReply, giving the SSE bytes to send (appended to a caller's buffer through emit). */
typedef struct front_sse front_sse;
typedef int (*front_emit_fn)(void *arg, const char *bytes, size_t len); /* -1: stop */
front_sse *front_sse_new(front_flavour f, const char *id, const char *model, uint64_t created,
                         int usage_in_stream, front_emit_fn emit, void *arg);
void front_sse_free(front_sse *s);
/* A part of llm.chat's stream (a packed ChatDelta, untrusted). -1: not a ChatDelta, or
 * emit said stop. */
int front_sse_delta(front_sse *s, const uint8_t *part, size_t len);
/* The end: the final reply (its stop reason and usage; parts the stream never delivered,
 * such as a reply replayed whole, come from it), or the error that ended the call (status
 * != AOS_OK, r NULL), sent as each API's in-stream error event. */
int front_sse_end(front_sse *s, const Aos__Llm__ChatReply *r, aos_err status,
                  const char *message);

/* ---- errors: the one table ----------------------------------------------------------- */
typedef struct front_error {
    int http;              /* the status line's code */
    const char *type;      /* the error object's "type" */
    const char *code;      /* OpenAI's "code" (NULL: null) */
    int retry_after;       /* 1: send Retry-After */
} front_error;
/* The row for status (an aos_err from aosd, or one of aos-api's own) in flavour f, with
 * aosd's message as context (may be NULL): REFUSED for a budget is 429, not 403. */
front_error front_error_of(aos_err status, front_flavour f, const char *message);
/* The JSON error body ({"error":{...}} or Anthropic's {"type":"error","error":{...}}) for
 * status with message (any bytes: invalid UTF-8 is replaced); malloc'd, NULL: no memory. */
char *front_error_body(aos_err status, front_flavour f, const char *message, size_t *len);

#endif
