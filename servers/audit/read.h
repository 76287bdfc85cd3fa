/* aos-audit's reads, on the serve loop's workers with their own connections: inclusion
 * proofs, the whole-log verification, and the tail of the log for operators. */
#ifndef AUDIT_READ_H
#define AUDIT_READ_H

#include "aos/envelope.h"
#include "aos/err.h"
#include <libpq-fe.h>

#include "audit.pb-c.h"
#include "log.h"
#include "merkle.h"
#include "record.h"
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

/* read.c's row and snapshot helpers, for archive.c: a REC_COLS row as a record (pointers
 * into r) and its stored chain hash; a heads row; a Head message over h and pk (borrowed);
 * a read-only repeatable-read snapshot with index scans only. */
void ar_row_rec(const PGresult *r, int row, audit_rec *rec, uint8_t chain[AUDIT_HASH_LEN]);
void ar_row_sth(const PGresult *r, int row, audit_sth *h);
void ar_fill_head(Aos__Audit__Head *m, audit_sth *h, uint8_t pk[AUDIT_PK_LEN]);
aos_err ar_begin_read(PGconn *c, char *why, size_t whylen);

#endif
