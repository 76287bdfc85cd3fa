/* aos-llm's accounting: every call to a provider is recorded in llm.calls before it is
 * sent and completed after it ends, by one thread that owns its own database connection. */
#ifndef AOS_LLM_ACCT_H
#define AOS_LLM_ACCT_H

#include <stdint.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "serve.h"

extern const srv_schema llm_schema;

typedef struct acct acct;

/* What one call used and how it ended. */
typedef struct acct_result {
    aos_err status;
    unsigned attempts;
    uint64_t input_tokens, output_tokens, cache_read_tokens, cache_write_tokens;
    uint64_t cost_micro_usd;
    uint32_t ttft_us;
    char error[256];      /* the first words of the error (never a key: ours are not in it) */
    const uint8_t *reply; /* status OK: the packed reply, kept (copied, at most
                           * ACCT_REPLY_MAX) so a retry of the request id after a crash
                           * gets it again instead of a second paid call; may be NULL */
    size_t reply_len;
} acct_result;
#define ACCT_REPLY_MAX (1u << 20)

/* Start the accounting thread; it connects as the server's own role (srv_pg_dsn), in the
 * background: a database that is away is waited for. Runs in the server's open(). Caller
 * owns *out (acct_stop). */
aos_err acct_start(srv *s, acct **out, char *why, size_t whylen);
void acct_stop(acct *a);

/* Record that request id (agent, provider, model) is about to be sent. done(arg, rc, row,
 * resent, replay, replay_len, why) runs once on the accounting thread: AOS_OK with the row
 * id and resent = 1 when the same request id was sent before without an answer kept (a
 * crash of aos-llm mid-call: a second paid call); AOS_OK with replay (replay_len bytes,
 * valid during the call) when that request id of that agent already completed: its reply
 * as it was sent then (nothing is to be sent again; row is that call's); UNAVAILABLE when
 * the database stayed away until deadline_mono_ms (nothing may be sent then: the call
 * would go unrecorded). Never blocks. The strings are copied. */
typedef void (*acct_begin_fn)(void *arg, aos_err rc, int64_t row, int resent,
                              const uint8_t *replay, size_t replay_len, const char *why);
void acct_begin(acct *a, const uint8_t id[AOS_ID_LEN], const char *agent, const char *provider,
                const char *model, uint64_t deadline_mono_ms, acct_begin_fn done, void *arg);

/* Complete row with r (copied); done(arg) runs once on the accounting thread after the
 * record committed (durably: the caller is answered after it), or after the database
 * stayed away for ACCT_END_WAIT_MS (the record is then logged and dropped: a caller is not
 * held hostage by the books). Never blocks. */
#define ACCT_END_WAIT_MS 10000u
void acct_end(acct *a, int64_t row, const acct_result *r, void (*done)(void *arg), void *arg);

/* Figures for llm.stats. */
void acct_stats(acct *a, srv_stats *st);

#endif
