/* Durable idempotency for aos servers: an outcome is recorded in the same transaction as
 * its effect, so a retried request gets the recorded reply, never a second run.
 *
 * pidem ("persistent") complements the serve loop's in-memory idem, which only lasts as
 * long as one process; pidem survives a crash of the server and of PostgreSQL.
 *
 * Usage, in one transaction on the server's own connection:
 *
 *     BEGIN
 *     pidem_claim(conn, &key, &prior)   -- prior.found: ROLLBACK, answer prior.status/result
 *     ... the mutation ...             -- failed: ROLLBACK (nothing recorded, a retry re-runs)
 *     pidem_record(conn, &key, 0, reply, len)
 *     COMMIT                           -- only now acknowledge
 *
 * Records are keyed by (agent, request id), so one agent can never see another's outcome;
 * the key also carries the method and a fingerprint of the request, and a request id
 * reused for a different request is refused (AOS_ERR_CONFLICT). A claim made by a
 * concurrent transaction (the original still committing while aosd's resend arrives)
 * makes pidem_claim wait for it, then see its record. Its errors come from the shared
 * SQLSTATE table (db.h), with their retry verdict, so any server can use it in db_run. */
#ifndef AOS_PIDEM_H
#define AOS_PIDEM_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "aos/err.h"

/* The table and its functions, for a server's migrations; schema is a literal
 * identifier. The role needs SELECT, INSERT, UPDATE, DELETE on the table and EXECUTE on
 * the functions, which hold the protocol that pidem_claim/pidem_record call:
 *   idem_claim(agent, request_id, method, fingerprint) -> (status, reply, message, replayed)
 *     all NULL: claimed, go on; replayed: the recorded outcome; otherwise an error status
 *     (5: the id was used for another request; 6: held by a transaction that is gone).
 *   idem_done(agent, request_id, status, reply)   record the outcome
 *   idem_release(agent, request_id)               give the claim back (the work failed)
 * A server may also write records itself (storage's plpgsql kv_put does: look up, mutate,
 * insert the finished record), as long as it keeps the same key, method and fingerprint
 * and commits only finished records (status not NULL). */
#define PIDEM_SQL(schema)                                                                   \
    "CREATE TABLE " schema ".idem (\n"                                                     \
    "  agent text NOT NULL,\n"                                                             \
    "  request_id bytea NOT NULL CHECK (octet_length(request_id) = 16),\n"                 \
    "  method text NOT NULL,\n"                                                            \
    "  fingerprint bytea NOT NULL,\n"                                                      \
    "  status integer,\n"                                                                  \
    "  result bytea,\n"                                                                    \
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"                                   \
    "  PRIMARY KEY (agent, request_id));\n"                                                \
    "CREATE INDEX idem_created_at ON " schema ".idem USING brin (created_at);\n"           \
    "CREATE FUNCTION " schema ".idem_claim(p_agent text, p_req bytea, p_method text,\n"    \
    "    p_fp bytea, OUT status integer, OUT reply bytea, OUT message text,\n"             \
    "    OUT replayed boolean) LANGUAGE plpgsql AS $idem$\n"                               \
    "DECLARE r " schema ".idem%ROWTYPE;\n"                                                 \
    "BEGIN\n"                                                                              \
    "  INSERT INTO " schema ".idem (agent, request_id, method, fingerprint)\n"             \
    "    VALUES (p_agent, p_req, p_method, p_fp) ON CONFLICT DO NOTHING;\n"                \
    "  IF FOUND THEN RETURN; END IF;\n"                                                    \
    "  -- taken by a committed run (the insert waited for one in flight): a new\n"         \
    "  -- statement's snapshot sees it\n"                                                  \
    "  SELECT * INTO r FROM " schema ".idem i\n"                                           \
    "    WHERE i.agent = p_agent AND i.request_id = p_req;\n"                              \
    "  IF NOT FOUND OR r.status IS NULL THEN\n"                                            \
    "    status := 6; message := 'request id held by another transaction, retry';\n"       \
    "  ELSIF r.method <> p_method OR r.fingerprint <> p_fp THEN\n"                         \
    "    status := 5; message := 'request id already used for a different request';\n"    \
    "  ELSE\n"                                                                             \
    "    status := r.status; reply := r.result; replayed := true;\n"                       \
    "  END IF;\n"                                                                          \
    "END $idem$;\n"                                                                        \
    "CREATE FUNCTION " schema ".idem_done(p_agent text, p_req bytea, p_status integer,\n"  \
    "    p_reply bytea) RETURNS void LANGUAGE sql AS $idem$\n"                             \
    "  UPDATE " schema ".idem SET status = p_status, result = p_reply\n"                   \
    "    WHERE agent = p_agent AND request_id = p_req $idem$;\n"                           \
    "CREATE FUNCTION " schema ".idem_release(p_agent text, p_req bytea)\n"                 \
    "    RETURNS void LANGUAGE sql AS $idem$\n"                                            \
    "  DELETE FROM " schema ".idem WHERE agent = p_agent AND request_id = p_req\n"         \
    "    AND status IS NULL $idem$;\n"

#define PIDEM_FP_LEN 32

typedef struct pidem_key {
    const char *schema;           /* the server's schema: [a-z_]+ */
    const char *agent;            /* "" for calls without an agent */
    const uint8_t *request_id;    /* 16 bytes */
    const char *method;           /* the op, e.g. "kv.delete" */
    uint8_t fingerprint[PIDEM_FP_LEN];  /* e.g. SHA-256 of method and payload */
} pidem_key;

/* A recorded outcome. result is malloc'd: idem_prior_clear. */
typedef struct pidem_prior {
    int found;
    int status;
    uint8_t *result;
    size_t len;
} pidem_prior;

/* Claim k in the open transaction. AOS_ERR_OK with prior->found = 0: go on and do the
 * work; with prior->found = 1: it was done, answer with prior (and roll back). CONFLICT:
 * the request id was used for a different request. Other errors: database trouble. */
aos_err pidem_claim(PGconn *c, const pidem_key *k, pidem_prior *prior, char *why,
                   size_t whylen);
/* Record the outcome of the claimed request (status, and the bytes the server replays:
 * usually the packed reply payload), in the same transaction. */
aos_err pidem_record(PGconn *c, const pidem_key *k, int status, const void *result, size_t len,
                    char *why, size_t whylen);
/* Delete records older than older_than_ms (outside any transaction); *n counts them. */
aos_err pidem_prune(PGconn *c, const char *schema, uint64_t older_than_ms, uint64_t *n,
                   char *why, size_t whylen);
void pidem_prior_clear(pidem_prior *p);

#endif
