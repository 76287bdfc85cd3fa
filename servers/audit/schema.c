/* The audit log's tables, triggers, view and grants. Kept apart from main.c so that the
 * tests check the very migrations the server runs (aos_audit may INSERT and SELECT, never
 * change a row). */
#include "schema.h"

/* Migration 1 (the stub's audit.log) stays as shipped: migrations are never edited. The
 * log itself is migration 2.
 *
 * audit.records holds one row per record of record.h, its columns the encoding's fields
 * (seq is the server's, never a sequence: the chain needs seq-1's hash before the insert),
 * with the three hashes beside them so the verifier checks what is stored. key is the
 * producer's dedupe name. u64 fields are bigint holding the same 64 bits (two's
 * complement); step (u32) is bigint.
 * audit.heads holds every signed head with the tree's frontier at its size, from which a
 * restarted server resumes the tree without reading every leaf.
 *
 * The tables belong to the admin; aos_audit gets INSERT and SELECT on them and nothing
 * else, and statement triggers refuse UPDATE, DELETE and TRUNCATE even to the owner: a
 * compromised audit server (or a slip at the admin's psql) can add records, never rewrite
 * history. Only a superuser's SET session_replication_role = replica passes, and what it
 * changes the verifier names. */
static const srv_migration audit_migrations[] = {
    {1, "CREATE TABLE audit.log ("
        "  seq bigserial PRIMARY KEY,"
        "  at timestamptz NOT NULL DEFAULT now(),"
        "  agent_id text,"
        "  method text,"
        "  request_id bytea,"
        "  prev_hash bytea,"
        "  hash bytea,"
        "  body jsonb);"
        "REVOKE ALL ON audit.log FROM PUBLIC;"
        "GRANT INSERT, SELECT ON audit.log TO aos_audit;"
        "GRANT USAGE ON SEQUENCE audit.log_seq_seq TO aos_audit;"},
    {2, "CREATE TABLE audit.records ("
        "  seq bigint PRIMARY KEY CHECK (seq >= 1),"
        "  time_ns bigint NOT NULL,"
        "  kind text NOT NULL,"
        "  agent text NOT NULL,"
        "  run text NOT NULL,"
        "  step bigint NOT NULL,"
        "  trace_id bytea NOT NULL,"
        "  span_id bytea NOT NULL,"
        "  parent_span_id bytea NOT NULL,"
        "  method text NOT NULL,"
        "  status integer NOT NULL,"
        "  latency_us bigint NOT NULL,"
        "  body bytea NOT NULL,"
        "  prev_hash bytea NOT NULL,"
        "  leaf_hash bytea NOT NULL,"
        "  chain_hash bytea NOT NULL,"
        "  key text NULL);"
        "CREATE UNIQUE INDEX records_key ON audit.records (key);"
        "CREATE INDEX records_agent ON audit.records (agent, seq);"
        "CREATE INDEX records_run ON audit.records (run, seq) WHERE run <> '';"
        "CREATE INDEX records_trace ON audit.records (trace_id, seq) "
        "  WHERE trace_id <> '\\x00000000000000000000000000000000'::bytea;"
        "CREATE INDEX records_kind ON audit.records (kind, seq) WHERE kind = 'archive';"
        "CREATE TABLE audit.heads ("
        "  tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),"
        "  time_ns bigint NOT NULL,"
        "  root bytea NOT NULL,"
        "  signature bytea NOT NULL,"
        "  frontier bytea NOT NULL);"
        /* statement triggers: they fire even when no row matches, and before TRUNCATE */
        "CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$"
        "BEGIN"
        "  RAISE EXCEPTION 'audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP"
        "    USING ERRCODE = 'insufficient_privilege';"
        "END $$;"
        "CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE OR TRUNCATE"
        "  ON audit.records FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();"
        "CREATE TRIGGER heads_append_only BEFORE UPDATE OR DELETE OR TRUNCATE"
        "  ON audit.heads FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();"
        "REVOKE ALL ON audit.records, audit.heads FROM PUBLIC;"
        "GRANT INSERT, SELECT ON audit.records, audit.heads TO aos_audit;"
        /* The operator's view: "what did agent X do at 14:02" is one SELECT. A body is
         * shown as jsonb when it is UTF-8 JSON, as text when only UTF-8, else as hex. */
        "CREATE FUNCTION audit.body_text(b bytea) RETURNS text LANGUAGE plpgsql "
        "  IMMUTABLE STRICT AS $$"
        "BEGIN RETURN convert_from(b, 'UTF8');"
        "EXCEPTION WHEN others THEN RETURN NULL; END $$;"
        "CREATE FUNCTION audit.body_json(b bytea) RETURNS jsonb LANGUAGE plpgsql "
        "  IMMUTABLE STRICT AS $$"
        "BEGIN RETURN convert_from(b, 'UTF8')::jsonb;"
        "EXCEPTION WHEN others THEN RETURN NULL; END $$;"
        "CREATE VIEW audit.events_v AS SELECT"
        "  seq,"
        "  to_timestamp(time_ns / 1000000000.0) AS at,"
        "  kind, agent, run, step,"
        "  encode(trace_id, 'hex') AS trace_id,"
        "  encode(span_id, 'hex') AS span_id,"
        "  encode(parent_span_id, 'hex') AS parent_span_id,"
        "  method, status, latency_us,"
        "  audit.body_json(body) AS body_json,"
        "  CASE WHEN audit.body_json(body) IS NULL THEN audit.body_text(body) END"
        "    AS body_text,"
        "  CASE WHEN audit.body_text(body) IS NULL THEN encode(body, 'hex') END AS body_hex,"
        "  key,"
        "  encode(chain_hash, 'hex') AS chain_hash"
        "  FROM audit.records;"
        "REVOKE ALL ON audit.events_v FROM PUBLIC;"},
    /* Retention (aosctl audit archive). The one way rows leave audit.records: a SECURITY
     * DEFINER function owned by the admin (the table's owner) that aos_audit may EXECUTE.
     * Why this path: aosctl reaches the database only through aosd and aos-audit, and aosd
     * never links libpq, so the admin's own connection is not at hand; granting aos_audit
     * DELETE would let it cut anything, and disabling the trigger for the session would
     * open it to every statement. The function instead deletes only the prefix that the
     * latest "archive" record declares (its body, verify.h, says up to which seq), only
     * when a signed head already covers that archive record, so the cut is sealed in the
     * chain before it happens and verify reports it as a declared gap. The trigger is
     * disabled inside the function's transaction for that one DELETE (ALTER TABLE takes
     * the table's ACCESS EXCLUSIVE lock first, so no other session ever sees it disabled,
     * and an error rolls the disable back with the rest). A compromised aos-audit can
     * still only drop a prefix, and visibly. */
    {3, "CREATE FUNCTION audit.drop_archived(archive_seq bigint) RETURNS bigint "
        "  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$"
        "DECLARE b bytea; upto bigint; latest bigint; n bigint;"
        "BEGIN"
        "  LOCK TABLE audit.records IN ACCESS EXCLUSIVE MODE;"
        "  SELECT max(seq) INTO latest FROM audit.records WHERE kind = 'archive';"
        "  IF latest IS NULL OR latest <> archive_seq THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: seq % is not the latest archive record "
        "(that is %)', archive_seq, latest USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  SELECT body INTO b FROM audit.records WHERE seq = archive_seq;"
        "  IF length(b) < 42 OR get_byte(b, 0) NOT IN (1, 2) THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: record % is no archive declaration', "
        "archive_seq USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  upto := ('x' || encode(substring(b FROM 2 FOR 8), 'hex'))::bit(64)::bigint;"
        "  IF upto < 1 OR upto >= archive_seq THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: record % declares up to seq %', "
        "archive_seq, upto USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  IF NOT EXISTS (SELECT 1 FROM audit.heads WHERE tree_size >= archive_seq) THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: no signed head covers archive record % "
        "yet', archive_seq USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  ALTER TABLE audit.records DISABLE TRIGGER records_append_only;"
        "  DELETE FROM audit.records WHERE seq <= upto;"
        "  GET DIAGNOSTICS n = ROW_COUNT;"
        "  ALTER TABLE audit.records ENABLE TRIGGER records_append_only;"
        "  RETURN n;"
        "END $$;"
        "REVOKE ALL ON FUNCTION audit.drop_archived(bigint) FROM PUBLIC;"
        "GRANT EXECUTE ON FUNCTION audit.drop_archived(bigint) TO aos_audit;"},
    /* Migration 4: contents (servers/audit/contents.h). One row per content, its address
     * BLAKE2b-256 of body; size is length(body), kept so a reader can say how big a
     * content is without fetching it. Insert-only like the records (a content is written
     * in the commit of the first events that name it, later ones find it there); verify
     * re-hashes every row and looks up each content a record lists (records_contents holds
     * the few records that list any). records_replay serves audit.replay's order: a run's records by
     * step, then seq. */
    {4, "CREATE TABLE audit.contents ("
        "  hash bytea PRIMARY KEY CHECK (length(hash) = 32),"
        "  size bigint NOT NULL CHECK (size >= 0),"
        "  body bytea NOT NULL);"
        "CREATE TRIGGER contents_append_only BEFORE UPDATE OR DELETE OR TRUNCATE"
        "  ON audit.contents FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();"
        "REVOKE ALL ON audit.contents FROM PUBLIC;"
        "GRANT INSERT, SELECT ON audit.contents TO aos_audit;"
        "CREATE INDEX records_replay ON audit.records (agent, run, step, seq) "
        "  WHERE run <> '';"
        /* the records that list contents, for verify's "is every listed one stored" */
        "CREATE INDEX records_contents ON audit.records (seq) "
        "  WHERE position('\"contents\"'::bytea IN body) > 0;"},
    /* Migration 5: the drop takes the archived range's contents with it (the archive
     * carries them: servers/audit/archdir.h). audit.drop_archived is replaced, its checks
     * as in 3, and after them it deletes each content that the dropped records list and no
     * record kept lists (a content shared with a record after the cut stays), counted by
     * the same reading of a body's "contents" as contents.c's (the last key of a body,
     * an array of 64 lowercase hex digits). A content no record lists at all is left as
     * it is: no archive carries it. The owner, grants and SECURITY DEFINER of 3 stay
     * (CREATE OR REPLACE keeps them).
     * Locks: contents first, then records, the order the writer takes them in (its
     * contents insert comes before its records in one transaction), so the two never wait
     * on each other in a cycle. ACCESS EXCLUSIVE on contents matters beyond the disabled
     * trigger: a writer's INSERT ... ON CONFLICT DO NOTHING of a content already stored
     * neither writes nor locks that row, so without the lock a batch could find a content
     * present, the drop delete it, and the batch's record then name a content that is gone. */
    {5, "CREATE OR REPLACE FUNCTION audit.drop_archived(archive_seq bigint) RETURNS bigint "
        "  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$"
        "DECLARE b bytea; upto bigint; latest bigint; n bigint;"
        "BEGIN"
        "  LOCK TABLE audit.contents IN ACCESS EXCLUSIVE MODE;"
        "  LOCK TABLE audit.records IN ACCESS EXCLUSIVE MODE;"
        "  SELECT max(seq) INTO latest FROM audit.records WHERE kind = 'archive';"
        "  IF latest IS NULL OR latest <> archive_seq THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: seq % is not the latest archive record "
        "(that is %)', archive_seq, latest USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  SELECT body INTO b FROM audit.records WHERE seq = archive_seq;"
        "  IF length(b) < 42 OR get_byte(b, 0) NOT IN (1, 2) THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: record % is no archive declaration', "
        "archive_seq USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  upto := ('x' || encode(substring(b FROM 2 FOR 8), 'hex'))::bit(64)::bigint;"
        "  IF upto < 1 OR upto >= archive_seq THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: record % declares up to seq %', "
        "archive_seq, upto USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  IF NOT EXISTS (SELECT 1 FROM audit.heads WHERE tree_size >= archive_seq) THEN"
        "    RAISE EXCEPTION 'audit.drop_archived: no signed head covers archive record % "
        "yet', archive_seq USING ERRCODE = 'insufficient_privilege';"
        "  END IF;"
        "  ALTER TABLE audit.contents DISABLE TRIGGER contents_append_only;"
        "  DELETE FROM audit.contents c USING ("
        "    SELECT decode(h.v, 'hex') AS hash FROM audit.records r,"
        "      LATERAL (SELECT audit.body_json(r.body) -> 'contents' AS l) j,"
        "      LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(j.l) = 'array'"
        "        THEN j.l ELSE '[]'::jsonb END) AS h(v)"
        "    WHERE position('\"contents\"'::bytea IN r.body) > 0 AND h.v ~ '^[0-9a-f]{64}$'"
        "    GROUP BY 1 HAVING bool_and(r.seq <= upto)) gone"
        "  WHERE c.hash = gone.hash;"
        "  ALTER TABLE audit.contents ENABLE TRIGGER contents_append_only;"
        "  ALTER TABLE audit.records DISABLE TRIGGER records_append_only;"
        "  DELETE FROM audit.records WHERE seq <= upto;"
        "  GET DIAGNOSTICS n = ROW_COUNT;"
        "  ALTER TABLE audit.records ENABLE TRIGGER records_append_only;"
        "  RETURN n;"
        "END $$;"},
};

const srv_schema audit_schema = {
    .schema = "audit",
    .role = "aos_audit",
    .migrations = audit_migrations,
    .n_migrations = sizeof audit_migrations / sizeof audit_migrations[0],
};
