/* The size of a chat in the neutral LLM model (proto/llm.proto), in bytes and in estimated
 * tokens: what the sim reports as usage and what aosd's scheduler charges before a reply. */
#ifndef AOS_LLMSIZE_H
#define AOS_LLMSIZE_H

#include <stdint.h>

#include "llm.pb-c.h"

/* The text a message carries: its content parts, its tool calls' names and arguments and
 * the tool_call_id (NULL: 0). */
uint64_t aos_llm_msg_bytes(const Aos__Llm__Message *m);
/* A tool's name, description and schema (NULL: 0). */
uint64_t aos_llm_tool_bytes(const Aos__Llm__Tool *t);
/* Tokens, estimated as providers do without a tokenizer: a quarter of the bytes, up. */
static inline uint64_t aos_llm_tokens(uint64_t bytes) { return (bytes + 3) / 4; }

#endif
