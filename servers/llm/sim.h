/* The `sim` provider of aos-llm: an offline, deterministic model (echo-style or scripted
 * replies with their pacing, feature-hashed embeddings) and the per-provider rate limiter. */
#ifndef AOS_LLM_SIM_H
#define AOS_LLM_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "llm.pb-c.h"

/* ---- chat ------------------------------------------------------------------------------
 * sim_chat answers without state: the same (cfg, req) gives the same plan, byte for byte,
 * on every run and machine (FNV-1a hashes, no clock, no rand()).
 *
 * Without a script the answer is decided by the last message:
 *  - TOOL: "sim: the tool returned: '<its first bytes>'." (or "failed" when is_error);
 *  - USER with tools offered, tool_choice not "none", and "call NAME" or "call NAME {json}"
 *    in it for an offered NAME: that tool call (id "call_" + 16 hex digits of a hash,
 *    arguments the {json} as written, else "{}"), stop TOOL_USE; up to 8 such calls. A
 *    tool_choice naming a tool lets only that one trigger, and it or "required" calls that
 *    (or the first) tool with "{}" when nothing triggers;
 *  - otherwise: "sim: you said '<first words of the last USER message>'." and a sentence
 *    picked by a hash of the conversation.
 * With cfg->script (n_script > 0) the turn is the number of ASSISTANT messages in req, and
 * the answer is that turn's text and tool calls (ids made up as above when the script has
 * none, arguments "{}" when empty). A turn's `expect` must occur in the text of the last
 * USER or TOOL message (else AOS_ERR_CONFLICT); a conversation past the script's end gets
 * AOS_ERR_NOT_FOUND. Turns are numbered from 1 in messages. sim_chat and sim_embed keep no
 * state: any thread may call them at any time.
 *
 * Either way the text is cut before the first of req->stop found in it (STOP_SEQUENCE),
 * then at max_tokens tokens (0: 256; at most SIM_MAX_TOKENS) with MAX_TOKENS, in which case
 * no tool calls follow. A token is a run of non-space bytes with the spaces after it.
 *
 * Timing: the first step comes latency_ms after the request (capped at one hour), step k
 * (from 0) at latency_us + k * 1e6 / tokens_per_s, rounded down (tokens_per_s 0: no
 * pacing), so the delays sum to latency_us + floor((steps - 1) * 1e6 / tokens_per_s). Each
 * text token is one step; each tool call is one step with its id and name, then its
 * arguments in at most SIM_ARG_FRAGMENTS steps (cut between UTF-8 sequences).
 *
 * Usage (estimates, as the sim has no tokenizer): input = ceil(B / 4) where B sums the
 * bytes of every content part, tool call name and arguments, tool_call_id, and every
 * tool's name, description and input_schema; output = the text tokens sent plus
 * ceil((name + arguments bytes) / 4) per tool call. The sim keeps no cache, so it reports
 * what a provider would on a warm cache: when cache_breakpoint > 0 and the prefix (the
 * tools and messages[0 .. cache_breakpoint-1], clamped to the messages there are) is at
 * least SIM_CACHE_MIN_TOKENS tokens, those tokens are cache_read and the rest input;
 * cache_write is always 0. */
#define SIM_MAX_TOKENS 32768u
#define SIM_DEFAULT_TOKENS 256u
#define SIM_ARG_FRAGMENTS 3u
#define SIM_CACHE_MIN_TOKENS 1024u

typedef struct sim_plan sim_plan;

/* On AOS_OK *out is a new plan the caller frees with sim_plan_free; on error *out is NULL
 * and why says what went wrong (AOS_ERR_USAGE: no messages or a bad cfg; AOS_ERR_CONFLICT:
 * expect mismatch; AOS_ERR_NOT_FOUND: past the script; AOS_ERR_NOMEM). cfg NULL means all
 * defaults. Nothing in the plan points into cfg or req. */
aos_err sim_chat(const Aos__Llm__SimSettings *cfg, const Aos__Llm__ChatRequest *req,
                 sim_plan **out, char *why, size_t whylen);
/* The number of streamed steps (0 for an empty answer). */
size_t sim_plan_steps(const sim_plan *p);
/* Step i (< sim_plan_steps), owned by the plan; *delay_us (if not NULL) gets the wait since
 * the previous step (the request, for step 0). NULL when i is out of range. */
const Aos__Llm__ChatDelta *sim_plan_delta(const sim_plan *p, size_t i, uint32_t *delay_us);
/* The final reply, owned by the plan (provider, model, cost, attempts, ttft_us are left
 * for the engine to fill in a copy). */
const Aos__Llm__ChatReply *sim_plan_reply(const sim_plan *p);
/* NULL is fine. */
void sim_plan_free(sim_plan *p);

/* ---- embeddings ------------------------------------------------------------------------
 * A bag of words, feature-hashed: a word is a run of ASCII letters and digits and bytes
 * >= 0x80 (UTF-8 kept as bytes), ASCII lower-cased; a word listed in a synonym group
 * (cfg->synonyms: each entry space-separated words) counts as the group's first word. The
 * word's FNV-1a 64 hash picks the dimension (low 32 bits mod dim) and the sign (bit 63);
 * the vector is L2-normalised (an input without words stays all zeros). dim is
 * cfg->embed_dim, 0: SIM_EMBED_DIM_DEFAULT, at most SIM_EMBED_DIM_MAX. Usage input tokens =
 * the words of all inputs. */
#define SIM_EMBED_DIM_DEFAULT 256u
#define SIM_EMBED_DIM_MAX 4096u
#define SIM_EMBED_MAX_INPUTS 256u
#define SIM_EMBED_MAX_INPUT_BYTES (64u * 1024u)
#define SIM_SYNONYM_MAX_WORDS 65536u

/* On AOS_OK *out is a new reply (one vector per input, in order) the caller frees with
 * sim_embed_free; on error *out is NULL (AOS_ERR_USAGE: no inputs or a bad dim or
 * synonym list; AOS_ERR_TOO_BIG: too many or too long inputs; AOS_ERR_NOMEM). */
aos_err sim_embed(const Aos__Llm__SimSettings *cfg, const Aos__Llm__EmbedRequest *req,
                  Aos__Llm__EmbedReply **out, char *why, size_t whylen);
/* Frees a reply of sim_embed (everything in it is malloc'd, as protobuf-c unpacks: the
 * same as aos__llm__embed_reply__free_unpacked(r, NULL)). NULL is fine. */
void sim_embed_free(Aos__Llm__EmbedReply *r);
/* Cosine similarity of two n-float vectors; 0 when either is all zeros. */
float sim_cosine(const float *a, const float *b, size_t n);

/* ---- rate limits -----------------------------------------------------------------------
 * requests_per_min and tokens_per_min over a sliding 60 s window of one-second buckets,
 * and max_concurrency requests in flight; 0 in a limit means unlimited. Thread-safe. */
typedef struct sim_limiter sim_limiter;

typedef struct {
    uint64_t admitted;  /* requests admitted */
    uint64_t refused;   /* 429s answered */
    uint64_t tokens;    /* tokens of the admitted requests */
    uint32_t in_flight; /* admitted and not yet released */
} sim_counts;

/* When sim_admit refuses for concurrency alone it suggests this wait: a slot frees when
 * some request ends, which it cannot foresee; 1 s is HTTP Retry-After's smallest step. */
#define SIM_CONCURRENCY_RETRY_MS 1000u

/* The limits are copied (l NULL: unlimited). NULL when out of memory. Freed with
 * sim_limiter_free. */
sim_limiter *sim_limiter_new(const Aos__Llm__Limits *l);
/* NULL is fine; no thread may be using it. The calls below need a limiter (not NULL). */
void sim_limiter_free(sim_limiter *lim);
/* 0: admitted — the request, its tokens and one in-flight slot are counted (the caller
 * calls sim_release when it ends). 429: refused — the request still counts in
 * requests_per_min (as OpenAI counts unsuccessful requests), no tokens, no slot — and
 * *retry_after_ms (if not NULL) gets the wait after which a retry could pass (the longest of the limits that
 * refused). now_ms is the caller's clock (any epoch; a step back is taken as no time
 * passing). A request with more tokens than tokens_per_min passes only when the window
 * holds no tokens, so it is delayed, not refused forever. */
int sim_admit(sim_limiter *lim, uint64_t now_ms, uint64_t tokens, uint64_t *retry_after_ms);
/* One admitted request ended; a release with nothing in flight is ignored. */
void sim_release(sim_limiter *lim);
/* A snapshot of the counters. */
void sim_limiter_counts(sim_limiter *lim, sim_counts *out);

#endif
