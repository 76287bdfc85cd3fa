/* aos-llm's wire formats as pure functions: an incremental SSE parser, the OpenAI and
 * Anthropic request encoders and response decoders, and provider error bodies to one line. */
#ifndef AOS_LLM_WIRE_H
#define AOS_LLM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "llm.pb-c.h"

/* ---- server-sent events (the WHATWG event-stream rules) ---------------------------------
 * Lines end in \r\n, \n or a lone \r (a \r ending one feed and a \n starting the next are
 * one line end); a blank line dispatches the event; "data:" lines are joined with "\n";
 * one space after the colon is dropped; ":" lines are comments; "event:" names the event;
 * other fields ("id", "retry", unknown) are ignored; a leading UTF-8 BOM is dropped; an
 * event without data is not dispatched, and neither is a last one without its blank line.
 * The same bytes give the same events however they are split across feeds. */
typedef struct sse sse;

/* event: the last "event:" value, "" when none; data: the joined data, NUL-terminated
 * after len bytes (data may hold NULs itself). Both borrowed for the call only. Returning
 * non-zero stops the feed: sse_feed returns that value as its aos_err. */
typedef int (*sse_cb)(void *arg, const char *event, const char *data, size_t len);

/* An event's data may be max_event bytes at most (> 0), a line max_event + 64. NULL when
 * out of memory or max_event is 0. The caller frees it with sse_free (NULL is fine). */
sse *sse_new(size_t max_event);
void sse_free(sse *p);
/* Parses buf (len bytes; NULL when len is 0) and calls cb for every event it completes.
 * AOS_ERR_TOO_BIG: an event or line over the cap; AOS_ERR_NOMEM. Errors are sticky: the
 * parser answers every later feed with the same error and message. */
aos_err sse_feed(sse *p, const char *buf, size_t len, sse_cb cb, void *arg, char *why,
                 size_t whylen);

/* ---- request bodies ----------------------------------------------------------------------
 * Each returns *out, malloc'd NUL-terminated compact JSON of *len bytes that the caller
 * frees with free(); on error *out is NULL and why says which field is wrong:
 * AOS_ERR_USAGE for a request the provider cannot be sent (no messages, a role or part
 * kind unset, text not valid UTF-8, a tool or tool-call name outside [A-Za-z0-9_-]{1,64},
 * duplicate tool names, a tool schema or tool-call arguments that are not a JSON object,
 * a tool_choice naming no offered tool, a temperature out of range, an image where the
 * provider takes none), AOS_ERR_NOMEM. An empty input_schema means "no parameters" and
 * empty arguments mean {}. model is the provider's model name (not "provider/model").
 *
 * OpenAI Chat Completions: every role maps to its message; content is a string when it is
 * one text part, else an array of parts; "max_tokens" when > 0; with stream, usage is
 * asked for in the last chunk. A TOOL message's is_error has no OpenAI field and is
 * dropped. Temperature 0..2. */
aos_err wire_openai_chat_body(const Aos__Llm__ChatRequest *r, const char *model, int stream,
                              char **out, size_t *len, char *why, size_t whylen);
/* Anthropic Messages: SYSTEM messages (wherever they are) become the top-level system
 * blocks; TOOL messages become tool_result blocks of a user message, placed before any
 * other blocks of the same user turn; consecutive messages of one role merge into one;
 * empty text parts and messages left empty are dropped. max_tokens 0 → 4096. Temperature
 * 0..1. cache_breakpoint k > 0 (clamped to the messages there are) puts cache_control
 * ephemeral on the last block of messages[k-1] (or the last block before it, when it has
 * none). */
#define WIRE_ANTHROPIC_DEFAULT_MAX_TOKENS 4096u
aos_err wire_anthropic_chat_body(const Aos__Llm__ChatRequest *r, const char *model,
                                 int stream, char **out, size_t *len, char *why,
                                 size_t whylen);
/* OpenAI embeddings: {"model","input":[...],"encoding_format":"float"}; 1..2048 inputs,
 * each non-empty valid UTF-8. */
#define WIRE_EMBED_MAX_INPUTS 2048u
aos_err wire_openai_embed_body(const Aos__Llm__EmbedRequest *r, const char *model,
                               char **out, size_t *len, char *why, size_t whylen);

/* ---- response decoding -------------------------------------------------------------------- */
typedef enum { WIRE_OPENAI = 1, WIRE_ANTHROPIC = 2 } wire_kind;

typedef struct wire_dec wire_dec;

typedef void (*wire_delta_cb)(void *arg, const Aos__Llm__ChatDelta *d);

#define WIRE_MAX_TOOL_CALLS 128u
#define WIRE_DEFAULT_MAX_BODY (16u << 20)

/* One decoder per response. stream: the body is an SSE stream (on_delta gets each text or
 * tool-call fragment as soon as its event is complete); else it is one JSON object,
 * decoded by wire_dec_finish (no deltas). max_body (0: WIRE_DEFAULT_MAX_BODY) caps a
 * non-stream body, one stream event, and the text, ids, names and arguments a reply
 * assembles. The delta passed to on_delta (may be NULL) is borrowed for the call; it must
 * not call back into the decoder. A tool call's ToolCallDelta.index is its position in
 * the reply: the order calls first appear in (OpenAI's index, Anthropic's n-th tool_use
 * block). NULL when out of memory or k is unknown. Freed with wire_dec_free (NULL is
 * fine). */
wire_dec *wire_dec_new(wire_kind k, int stream, size_t max_body, wire_delta_cb on_delta,
                       void *arg);
void wire_dec_free(wire_dec *d);
/* Body bytes as they arrive. AOS_ERR_PROTO: malformed JSON, invalid UTF-8, a known field
 * of the wrong type; AOS_ERR_TOO_BIG: over max_body or WIRE_MAX_TOOL_CALLS; a provider's
 * in-stream error: AOS_ERR_UNAVAILABLE (overloaded, server/api error), _RATE_LIMITED, or
 * _INTERNAL, with "openai: TYPE: MESSAGE" / "anthropic: TYPE: MESSAGE". Unknown events
 * and fields are ignored. Errors are sticky (finish repeats them). */
aos_err wire_dec_feed(wire_dec *d, const char *buf, size_t len, char *why, size_t whylen);
/* The assembled reply: an ASSISTANT message with the text as one TEXT part (none when
 * empty) and the tool calls (arguments checked to be a JSON object, empty → "{}"),
 * stop_reason and usage (always set). *out is the caller's, freed with wire_reply_free.
 * A stream must have ended (OpenAI: [DONE] or a finish_reason; Anthropic: message_stop or
 * a stop_reason), else AOS_ERR_UNAVAILABLE "PROVIDER: stream cut after N parts". Once
 * only: a second call gets AOS_ERR_USAGE. */
aos_err wire_dec_finish(wire_dec *d, Aos__Llm__ChatReply **out, char *why, size_t whylen);
/* Deltas passed to on_delta so far. */
int wire_dec_parts(const wire_dec *d);
/* Every field of the replies these functions return is its own malloc, so this is
 * protobuf_c_message_free_unpacked with the default allocator. NULL is fine. */
void wire_reply_free(Aos__Llm__ChatReply *r);

/* An OpenAI embeddings body → *out (vectors ordered by index, every index 0..n-1 once,
 * all of one dimension > 0; usage.input_tokens = prompt_tokens), freed by the caller with
 * wire_embed_free. AOS_ERR_PROTO for anything else; a provider error object is mapped as
 * for chat. */
aos_err wire_openai_embed_decode(const char *body, size_t len, Aos__Llm__EmbedReply **out,
                                 char *why, size_t whylen);
void wire_embed_free(Aos__Llm__EmbedReply *r);

/* A provider's HTTP error body → one line in out (cap bytes with the NUL; cap 0 writes
 * nothing): "type: message" from its JSON error object, else the first 200 printable bytes
 * of the body. Control characters are dropped (line breaks and tabs become one space),
 * invalid UTF-8 dropped, and the line cut only between characters. Returns its length. */
size_t wire_error_message(wire_kind k, const char *body, size_t len, char *out, size_t cap);

/* ---- shared by sse.c and wire_*.c only (callers: do not define WIRE_INTERNAL) ---------- */
#ifdef WIRE_INTERNAL
#include <jansson.h>

/* A growable byte buffer; p is NUL-terminated when not NULL. */
typedef struct {
    char *p;
    size_t len, cap;
} wire_buf;

int wire_buf_add(wire_buf *b, const void *s, size_t n); /* -1: out of memory */
void wire_buf_free(wire_buf *b);

typedef struct {
    wire_buf id, name, args;
    int64_t key; /* OpenAI: the provider's index; Anthropic: the content block index */
} wire_call;

struct wire_dec {
    wire_kind kind;
    int stream;
    size_t max_body;
    wire_delta_cb on_delta;
    void *arg;
    sse *parser;
    wire_buf body; /* non-stream */
    wire_buf text;
    wire_call *calls; /* WIRE_MAX_TOOL_CALLS of them, n_calls in use */
    size_t n_calls;
    size_t assembled; /* text + ids + names + arguments bytes */
    int parts;
    Aos__Llm__StopReason stop;
    int have_stop; /* a finish_reason / stop_reason was seen */
    int done;      /* [DONE] / message_stop */
    uint64_t in, out, cache_read, cache_write;
    int finished;
    aos_err err; /* sticky */
    char why[320];
};

/* Records a sticky error on d (message cleaned with wire_clean); returns err. */
aos_err wire_fail(wire_dec *d, aos_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *wire_name(wire_kind k); /* "openai", "anthropic" */
/* Appends text and emits it as a delta (when streaming and n > 0). */
aos_err wire_add_text(wire_dec *d, const char *s, size_t n);
/* The call keyed key (made when create and new); *ord its position. AOS_ERR_NOT_FOUND when
 * absent and !create. */
aos_err wire_call_at(wire_dec *d, int64_t key, int create, size_t *ord);
/* Appends to call ord's id/name/arguments (any may be empty) and emits one delta. */
aos_err wire_add_call(wire_dec *d, size_t ord, const char *id, size_t id_n, const char *name,
                      size_t name_n, const char *args, size_t args_n);

/* Field access for decoders: each returns 0 when the field is absent or null, 1 when it
 * is present with the right type, and records AOS_ERR_PROTO on d (returning -1) when it
 * has another type. where names the object for the message. */
int wire_get_str(wire_dec *d, json_t *o, const char *key, const char *where,
                 const char **s, size_t *n);
int wire_get_uint(wire_dec *d, json_t *o, const char *key, const char *where, uint64_t *v);
int wire_get_obj(wire_dec *d, json_t *o, const char *key, const char *where, json_t **v);
int wire_get_arr(wire_dec *d, json_t *o, const char *key, const char *where, json_t **v);
/* One count of a usage object: its key, and where the value goes. */
typedef struct {
    const char *key;
    uint64_t *v;
} wire_count;
/* o's "usage" object (where names o) and each of its counts in c[0..n) that is present;
 * *u (may be NULL) gets the object. Returns as wire_get_obj does; -1 as well for a count
 * that is not one, the counts before it read. */
int wire_get_usage(wire_dec *d, json_t *o, const char *where, const wire_count *c, size_t n,
                   json_t **u);
/* Parses one JSON value (object or array) from provider bytes; NULL with PROTO on d. */
json_t *wire_parse(wire_dec *d, const char *s, size_t n, const char *what);
/* A provider's error object {"type","message"} (+ OpenAI's "code") → d's sticky error. */
aos_err wire_provider_error(wire_dec *d, json_t *err);
/* The aos_err for a provider error type or code string (NULL: INTERNAL). */
aos_err wire_error_code(const char *type, const char *code);

/* The kinds' decoders: one SSE event / the whole non-stream body. */
aos_err wire_openai_event(wire_dec *d, const char *event, const char *data, size_t len);
aos_err wire_openai_body(wire_dec *d, json_t *body);
aos_err wire_anthropic_event(wire_dec *d, const char *event, const char *data, size_t len);
aos_err wire_anthropic_body(wire_dec *d, json_t *body);

/* Encoder helpers: set why and return the code. They build with one pattern: each
 * function keeps `aos_err err` (AOS_OK on entry) and an `out:` label, and WIRE_SET/WIRE_PUSH
 * attach a new value, taking a NULL one as the error its maker left in err (or NOMEM). */
#define WIRE_TRY_(expr_v, attach)                                                        \
    do {                                                                                 \
        json_t *v_ = (expr_v);                                                           \
        if (!v_ || (attach)) {                                                           \
            if (err == AOS_OK || v_)                                                     \
                err = wire_nomem(why, whylen);                                           \
            goto out;                                                                    \
        }                                                                                \
    } while (0)
#define WIRE_SET(o, k, v) WIRE_TRY_(v, json_object_set_new((o), (k), v_))
#define WIRE_PUSH(a, v) WIRE_TRY_(v, json_array_append_new((a), v_))
aos_err wire_usage(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
aos_err wire_nomem(char *why, size_t whylen);
/* s (n bytes) → out (cap with the NUL) without control characters (\t \r \n become one
 * space) or invalid UTF-8, cut between characters; returns the length written. */
size_t wire_clean(const char *s, size_t n, char *out, size_t cap);
/* [A-Za-z0-9_-]{1,64} */
int wire_name_ok(const ProtobufCBinaryData *b);
/* A JSON string from bytes checked to be valid UTF-8 (what names the field). NULL and
 * why set (USAGE or NOMEM in *err) otherwise. */
json_t *wire_jstr(const ProtobufCBinaryData *b, const char *what, aos_err *err, char *why,
                  size_t whylen);
/* Tool-call arguments or a schema: a JSON object from text (empty: {}). */
json_t *wire_jobj(const ProtobufCBinaryData *b, const char *what, aos_err *err, char *why,
                  size_t whylen);
/* Dumps root (not freed) into *out and *len. */
aos_err wire_dump(json_t *root, char **out, size_t *len, char *why, size_t whylen);
/* What every request body checks first: r (have) and the outputs given, *out and *len
 * cleared, the model's name. */
aos_err wire_body_start(int have, const char *model, const char *kind, char **out,
                        size_t *len, char *why, size_t whylen);
/* wire_body_start, then a chat request's messages (some), tools and tool_choice, and a
 * temperature within 0..max_temp. */
aos_err wire_check_chat(const Aos__Llm__ChatRequest *r, const char *model, const char *kind,
                        int max_temp, char **out, size_t *len, char *why, size_t whylen);
/* Checks the tools (names, duplicates, schemas) and the tool_choice against them. */
aos_err wire_check_tools(const Aos__Llm__ChatRequest *r, const char *kind, char *why,
                         size_t whylen);
/* A tool call to send: it has an id and a well-formed name (where names it). */
aos_err wire_check_call(const Aos__Llm__ToolCall *c, const char *kind, const char *where,
                        char *why, size_t whylen);
/* An image part's URL: https://, http:// or data:, valid UTF-8. */
aos_err wire_check_url(const ProtobufCBinaryData *u, const char *what, char *why,
                       size_t whylen);
/* An image part that may stand here (images: the message takes them; allowed says which
 * do, for the message) with a URL wire_check_url takes. */
aos_err wire_check_image(const Aos__Llm__ContentPart *p, const char *kind, const char *where,
                         int images, const char *allowed, char *why, size_t whylen);
/* Checks model is a non-empty UTF-8 C string. */
aos_err wire_check_model(const char *model, const char *kind, char *why, size_t whylen);
/* b holds exactly the C string s. */
int wire_bin_is(const ProtobufCBinaryData *b, const char *s);
/* A new {"type":"text","text":text} appended to arr: borrowed, or NULL with *err set. */
json_t *wire_text_block(const ProtobufCBinaryData *text, const char *where, json_t *arr,
                        aos_err *err, char *why, size_t whylen);
/* Sets o's "type" to type and o[key] to a new object, returned borrowed: the providers'
 * {"type":T,"K":{...}} wrappers (functions, images). NULL with *err NOMEM when out of memory. */
json_t *wire_typed(json_t *o, const char *type, const char *key, aos_err *err, char *why,
                   size_t whylen);
/* Each tool's object, appended to root["tools"] and filled by fn; where names the tool's
 * input_schema for fn's messages. */
typedef aos_err (*wire_tool_fn)(const Aos__Llm__Tool *t, const char *where, json_t *o,
                                char *why, size_t whylen);
aos_err wire_tools(const Aos__Llm__ChatRequest *r, json_t *root, wire_tool_fn fn, char *why,
                   size_t whylen);
/* A tool's name, description (when it has one) and schema (at schema_key; an empty one is
 * an object of no properties) set on o, in that order. */
aos_err wire_tool_fields(const Aos__Llm__Tool *t, const char *where, json_t *o,
                         const char *schema_key, char *why, size_t whylen);
/* Non-empty UTF-8 strings v[0..n) as an array at root[key], when n > 0; name ("stop",
 * "inputs") names them in messages. */
aos_err wire_str_array(const ProtobufCBinaryData *v, size_t n, const char *name, json_t *root,
                       const char *key, char *why, size_t whylen);
/* The float on the wire is the decimal the caller meant (0.7, not 0.699999988). */
double wire_decimal(float f);
#endif

#endif
