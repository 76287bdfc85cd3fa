/* aos-audit's reads, on the serve loop's workers with their own connections: inclusion
 * proofs, the whole-log verification, and the tail of the log for operators. */
#ifndef AUDIT_READ_H
#define AUDIT_READ_H

#include "aos/envelope.h"
#include "aos/err.h"
#include "log.h"
#include "serve.h"

/* audit.prove: ProveRequest -> Proof (NOT_FOUND: no such record, or no head covers it
 * yet; CONFLICT: the stored leaves do not give the head's root). */
aos_err ar_prove(srv *s, alog *l, const aos_env *req, srv_reply *rep);
/* audit.verify: VerifyRequest -> Finding, the whole log in one snapshot. */
aos_err ar_verify(srv *s, alog *l, const aos_env *req, srv_reply *rep);
/* audit.tail: TailRequest -> TailReply (at most ~3 MiB of records). */
aos_err ar_tail(srv *s, alog *l, const aos_env *req, srv_reply *rep);
/* audit.replay: ReplayRequest -> TailReply, one run's records by step, then seq. */
aos_err ar_replay(srv *s, alog *l, const aos_env *req, srv_reply *rep);
/* audit.contents: ContentsRequest -> ContentsReply, the stored bodies as they are (at most
 * ~3 MiB; truncated says some were left out). */
aos_err ar_contents(srv *s, alog *l, const aos_env *req, srv_reply *rep);
void ar_stats(srv_stats *st);

#endif
