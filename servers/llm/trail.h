/* aos-llm's decision details for the audit log: one "llm.request" and one "llm.reply" event
 * per call, sent with audit.emit under the call's trace (aosd records the syscall itself). */
#ifndef AOS_LLM_TRAIL_H
#define AOS_LLM_TRAIL_H

#include <stddef.h>
#include <stdint.h>

#include "llm.pb-c.h"
#include "serve.h"

/* Before the call goes to its provider: who answers, each message by content hash, the
 * tools offered. Nothing waits for it (aosd's own record gates the call). */
void trail_chat_request(srv *s, srv_call *call, const char *provider, const char *model,
                        const Aos__Llm__ChatRequest *rq);
void trail_embed_request(srv *s, srv_call *call, const char *provider, const char *model,
                         const Aos__Llm__EmbedRequest *rq);
/* Before the final answer: the reply (payload, a packed ChatReply or EmbedReply, borrowed)
 * with its text (the first 64 KiB; beyond, by hash), tool calls and usage, or the error
 * (why, already scrubbed of keys). */
void trail_reply(srv *s, srv_call *call, int embed, aos_err status, const char *why,
                 const uint8_t *payload, size_t len);

#endif
