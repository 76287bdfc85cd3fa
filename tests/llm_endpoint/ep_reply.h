/* The test LLM endpoint's answers: reads an OpenAI or Anthropic request and its [[k=v]]
 * directive, and renders the reply as timed pieces of bytes in the provider's wire format. */
#ifndef EP_REPLY_H
#define EP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "aos/err.h"
#include "ep_http.h"

typedef enum { EP_OPENAI, EP_ANTHROPIC } ep_dialect;
typedef enum { EP_CHAT, EP_EMBED } ep_kind;
enum { EP_SPLIT_LINE, EP_SPLIT_MID, EP_SPLIT_BYTE };

/* The directive of the last user message, [[k=v ...]]; README of the keys in
 * llm_endpoint.c. Fields without their key keep the defaults ep_ask_parse sets. */
typedef struct {
    unsigned chunks;
    int has_chunks;
    unsigned gap_ms, first_ms, spread_ms;
    char text[65];
    int has_text;
    int has_first_ms, has_gap_ms;   /* given in the directive (else the endpoint's defaults) */
    unsigned tools;
    int split;
    int crlf;
    int status;        /* 0: none */
    unsigned count;    /* 0: every attempt fails */
    int retry_after;   /* -1: no Retry-After */
    int cut;           /* -1: none */
    int hang, malformed, badutf8, ping, error_mid;
    uint64_t big;      /* 0: none */
    uint64_t cached, cache_write;
} ep_directive;

/* A parsed request. Owned by the caller's struct; release with ep_ask_clear. */
typedef struct {
    ep_dialect dialect;
    ep_kind kind;
    char *model;
    int stream;
    int include_usage;   /* OpenAI stream_options.include_usage */
    char *directive;     /* the text inside [[ ]], NULL when there is none */
    ep_directive d;
    char *text;          /* chat: the last user message's text; embed: the first input */
    size_t text_len;
    uint64_t words;      /* input tokens: words of every message (and Anthropic system) */
    int tools_done;      /* a tool result follows the directive: tools= is ignored */
    unsigned turns;      /* assistant messages in the conversation: a script's turn */
    const json_t *turn;  /* --script: this turn ({text, tool_calls: [{name, arguments}]}),
                          * borrowed; it replaces the directive's text and tools */
    json_t *root;        /* the body */
} ep_ask;

/* Parses a request body. AOS_ERR_PROTO: not a request the provider would take (answer
 * 400 with why); AOS_ERR_USAGE: a bad directive (also 400). model, stream and directive
 * are filled as far as parsing got, for the log, even on error. */
aos_err ep_ask_parse(ep_dialect dia, ep_kind kind, const char *body, size_t len, ep_ask *a,
                     char *why, size_t whylen);
void ep_ask_clear(ep_ask *a);

/* How the reply is framed on this connection. */
typedef struct {
    int keep_alive;
    int http10;      /* no chunked encoding: a stream ends by closing */
    uint64_t seq;    /* request number: ids and request-id headers */
} ep_ctx;

/* Token counts a successful chat reply reports (neutral: input excludes cache reads). */
typedef struct {
    uint64_t input, output, cache_read, cache_write;
} ep_usage;

typedef struct ep_reply ep_reply;

/* Constructors: on AOS_OK *out is a new reply the caller frees with ep_reply_free. */
aos_err ep_reply_chat(const ep_ask *a, const ep_ctx *ctx, ep_reply **out, char *why,
                      size_t whylen);
aos_err ep_reply_embed(const ep_ask *a, const ep_ctx *ctx, ep_reply **out, char *why,
                       size_t whylen);
aos_err ep_reply_models(ep_dialect dia, const ep_ctx *ctx, ep_reply **out, char *why,
                        size_t whylen);
/* An error in the dialect's body shape; retry_after < 0: no header; sent after delay_ms. */
aos_err ep_reply_error(ep_dialect dia, int status, const char *msg, int retry_after,
                       unsigned delay_ms, const ep_ctx *ctx, ep_reply **out, char *why,
                       size_t whylen);

/* A provider's 429 over its limits: OpenAI's body ({"error":{..., "type": type, "code":
 * "rate_limit_exceeded"}}) or Anthropic's rate_limit_error, with Retry-After (whole
 * seconds, rounded up) and, in the OpenAI dialect, retry-after-ms: when a retry may pass. */
aos_err ep_reply_rate_limited(ep_dialect dia, const char *msg, const char *type,
                              uint64_t retry_ms, const ep_ctx *ctx, ep_reply **out, char *why,
                              size_t whylen);
/* A JSON body (j, whose reference is taken) with status, at once: the endpoint's own
 * routes (GET /v1/stats). */
aos_err ep_reply_json(int status, json_t *j, const ep_ctx *ctx, ep_reply **out, char *why,
                      size_t whylen);

/* 1 and *u filled for a chat reply, 0 for the others. */
int ep_reply_usage(const ep_reply *r, ep_usage *u);

enum { EP_STEP_PIECE, EP_STEP_DONE, EP_STEP_CLOSE };
/* The next piece: *step PIECE with piece holding the bytes (replaced, not appended) to
 * write at *at_ms after the reply started, *separate when it must reach the peer in a
 * write of its own at least 1 ms after the previous one; DONE when the reply is
 * complete; CLOSE when the connection must now be closed (cut=, HTTP/1.0 stream end).
 * Pieces stay under 70 KiB, so a reply of any size is held one piece at a time. */
aos_err ep_reply_next(ep_reply *r, ep_buf *piece, uint32_t *at_ms, int *separate,
                      int *step, char *why, size_t whylen);
void ep_reply_free(ep_reply *r);

/* 64-bit FNV-1a: the attempt table's key of a body or a request id. */
uint64_t ep_hash(const void *p, size_t n, uint64_t seed);

#endif
