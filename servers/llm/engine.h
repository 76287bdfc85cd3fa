/* aos-llm's engine: one thread running one libcurl multi loop for every provider call in
 * flight, plus the sim provider's timers, retries with backoff, deadlines and CANCEL. */
#ifndef AOS_LLM_ENGINE_H
#define AOS_LLM_ENGINE_H

#include "acct.h"
#include "llm.pb-c.h"
#include "serve.h"

typedef struct eng eng;

/* Start the loop thread over cfg (borrowed: it must outlive the engine). Runs in open(),
 * before the sandbox: libcurl's set-up reads files and makes its wakeup pipe. Caller owns
 * *out (eng_stop). */
aos_err eng_start(srv *s, const Aos__Llm__Config *cfg, acct *a, eng **out, char *why,
                  size_t whylen);
void eng_stop(eng *e);

/* Take call over (an async handler's call): req is the decoded, validated request, owned
 * by the engine from here (freed with aos__llm__chat_request__free_unpacked). The call is
 * answered exactly once: parts (ChatDelta) as the provider streams them, then a ChatReply
 * or an error. Never blocks. */
void eng_chat(eng *e, srv_call *call, Aos__Llm__ChatRequest *req);
void eng_embed(eng *e, srv_call *call, Aos__Llm__EmbedRequest *req);

/* llm.providers: blocking (a connect probe per provider, at most ~1 s each): a worker's. */
aos_err eng_providers(eng *e, Aos__Llm__ProvidersReply **out, char *why, size_t whylen);
void eng_providers_free(Aos__Llm__ProvidersReply *r);

void eng_stats(eng *e, srv_stats *st);

#endif
