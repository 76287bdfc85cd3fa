/* aos-audit's writer: the one thread that appends to audit.records (group commits: every
 * emit queued meanwhile, one transaction), extends the hash chain and the tree, and signs
 * heads; plus the head key file and the heads file in the server's own directory. */
#ifndef AUDIT_LOG_H
#define AUDIT_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "audit.pb-c.h"
#include "merkle.h"
#include "serve.h"

#define ALOG_HEAD_EVERY 1024u      /* N: a head at least every N records */
#define ALOG_HEAD_MS 5000u         /* T: or every T ms, if the tree grew */
#define ALOG_EMIT_MAX 1024u        /* events in one audit.emit */
#define ALOG_KEY_MAX 64u           /* bytes of an event's dedupe key */
#define ALOG_KEY_FILE "head.key"
#define ALOG_HEADS_FILE "heads"

typedef struct alog alog;

/* Load DATA/audit/head.key (or create it at first start: written to a temporary file,
 * fsync'd, then linked into place, which fails like O_EXCL if it exists, and the
 * directory fsync'd), open the heads file for appending, and start the writer thread with
 * its own connection. Runs in def->open (before the sandbox). A key file that is not a key
 * pair: AOS_ERR_PROTO with a sentence naming the file (the server refuses to start).
 * Caller owns *out (alog_stop). */
aos_err alog_start(srv *s, alog **out, char *why, size_t whylen);
/* Stop the writer: what is queued, and what comes later, is answered UNAVAILABLE. The
 * rest stays (workers may still read the public key while the process ends). */
void alog_halt(alog *l);
/* alog_halt, then free everything. */
void alog_stop(alog *l);

/* Queue a checked emit: req (owned by the log from here on: unpacked with the default
 * allocator) with every time_ns already stamped. The call is answered once the events are
 * committed (EmitReply), or UNAVAILABLE when the database stayed away until its deadline. */
void alog_emit(alog *l, srv_call *call, Aos__Audit__EmitRequest *req);
/* Queue audit.head: the latest head (signed first when sign_now and the tree grew since
 * the last one, or there is none), NOT_FOUND when the log has no head yet. */
void alog_head(alog *l, srv_call *call, int sign_now);

/* From inside aos-audit (a worker thread, never the writer): append req's events (req
 * owned by the log from here on) with a head signed in the same commit, so the head covers
 * them as soon as they exist, and wait for the outcome: AOS_OK with the seq of the first
 * event (an event whose key is in the log already: the seq it has) and how many were
 * appended now; UNAVAILABLE at deadline_ms (0: the writer's default) or when stopping. */
aos_err alog_append_sealed(alog *l, Aos__Audit__EmitRequest *req, uint64_t deadline_ms,
                           uint64_t *first_seq, uint32_t *appended, char *why, size_t whylen);

/* Called on the writer thread for each record of a committed batch, in seq order (the
 * record's pointers live for the call only). It must not block: it runs between COMMIT and
 * the callers' answers. A commit whose answer was lost (found on reload) is not told. */
typedef void (*alog_commit_fn)(void *arg, const audit_rec *r);
void alog_on_commit(alog *l, alog_commit_fn fn, void *arg);

/* The head key's public half (fixed once alog_start returned). */
void alog_public_key(const alog *l, uint8_t pk[AUDIT_PK_LEN]);
void alog_stats(alog *l, srv_stats *st);

#endif
