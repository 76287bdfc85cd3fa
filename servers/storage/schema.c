/* aos-storage's place in PostgreSQL: the "storage" schema, its versioned migrations, and
 * the grants that give the aos_storage role exactly what storage needs and no more. */
#include "schema.h"

#include "pidem.h"

/* Version 1. Agents are text (the envelope codec allows [A-Za-z0-9_.:-]{1,64}); keys and
 * document ids are bytea so that they order bytewise and a prefix is a range scan. Times
 * are timestamptz; handlers read them as epoch milliseconds. */
static const char m1[] =
    PIDEM_SQL("storage")
    "CREATE TABLE storage.kv (\n"
    "  agent text NOT NULL,\n"
    "  key bytea NOT NULL,\n"
    "  value bytea NOT NULL,\n"
    "  version bigint NOT NULL,\n"
    "  expires_at timestamptz,\n"
    "  updated_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (agent, key));\n"
    "CREATE INDEX kv_expires_at ON storage.kv (expires_at) WHERE expires_at IS NOT NULL;\n"

    /* kv.put as one statement, so that a group commit is BEGIN, n calls, COMMIT. It does
     * the idempotency protocol inline (cheaper than pidem's claim-then-record: one lookup
     * and one insert): a recorded request answers from its record; a new one mutates and
     * records. A concurrent run of the same request id makes the record's insert wait and
     * then fail (unique violation), which the server answers as "retry": the retry finds
     * the record. result is int8send(version); replies are built in C. An expired key
     * counts as absent (a put over it starts again at version 1). */
    "CREATE FUNCTION storage.kv_put(p_agent text, p_req bytea, p_fp bytea, p_key bytea,\n"
    "    p_value bytea, p_cas boolean, p_if bigint, p_ttl_ms bigint,\n"
    "    OUT status integer, OUT result bytea, OUT message text, OUT replayed boolean)\n"
    "LANGUAGE plpgsql AS $f$\n"
    "DECLARE\n"
    "  v_version bigint;\n"
    "  v_cur bigint;\n"
    "  v_exp timestamptz := CASE WHEN p_ttl_ms > 0\n"
    "                       THEN now() + p_ttl_ms * interval '1 ms' END;\n"
    "  r record;\n"
    "BEGIN\n"
    "  SELECT i.method, i.fingerprint, i.status, i.result INTO r FROM storage.idem i\n"
    "    WHERE i.agent = p_agent AND i.request_id = p_req;\n"
    "  IF FOUND THEN\n"
    "    IF r.method <> 'kv.put' OR r.fingerprint <> p_fp OR r.status IS NULL THEN\n"
    "      status := 5; message := 'request id already used for a different request';\n"
    "    ELSE\n"
    "      status := r.status; result := r.result; replayed := true;\n"
    "    END IF;\n"
    "    RETURN;\n"
    "  END IF;\n"
    "  IF p_cas AND p_if > 0 THEN\n"
    "    UPDATE storage.kv k SET value = p_value, version = k.version + 1,\n"
    "        expires_at = v_exp, updated_at = now()\n"
    "      WHERE k.agent = p_agent AND k.key = p_key AND k.version = p_if\n"
    "        AND (k.expires_at IS NULL OR k.expires_at > now())\n"
    "      RETURNING k.version INTO v_version;\n"
    "  ELSE\n"
    "    INSERT INTO storage.kv AS k (agent, key, value, version, expires_at)\n"
    "      VALUES (p_agent, p_key, p_value, 1, v_exp)\n"
    "      ON CONFLICT (agent, key) DO UPDATE SET value = EXCLUDED.value,\n"
    "        version = CASE WHEN k.expires_at <= now() THEN 1 ELSE k.version + 1 END,\n"
    "        expires_at = EXCLUDED.expires_at, updated_at = now()\n"
    "      WHERE NOT p_cas OR k.expires_at <= now()\n"
    "      RETURNING k.version INTO v_version;\n"
    "  END IF;\n"
    "  IF v_version IS NULL THEN\n"
    "    SELECT k.version INTO v_cur FROM storage.kv k\n"
    "      WHERE k.agent = p_agent AND k.key = p_key\n"
    "        AND (k.expires_at IS NULL OR k.expires_at > now());\n"
    "    status := 5;\n"
    "    message := format('version mismatch: the key is at version %s, not %s',\n"
    "                      coalesce(v_cur, 0), p_if);\n"
    "    RETURN;\n"
    "  END IF;\n"
    "  status := 0; replayed := false; result := int8send(v_version);\n"
    "  INSERT INTO storage.idem (agent, request_id, method, fingerprint, status, result)\n"
    "    VALUES (p_agent, p_req, 'kv.put', p_fp, 0, result);\n"
    "END $f$;\n"

    /* An atomic counter kept as decimal text, so that kv get shows it as it is. Same
     * idempotency as kv_put; result is int8send(value) || int8send(version). */
    "CREATE FUNCTION storage.kv_incr(p_agent text, p_req bytea, p_fp bytea, p_key bytea,\n"
    "    p_delta bigint,\n"
    "    OUT status integer, OUT result bytea, OUT message text, OUT replayed boolean)\n"
    "LANGUAGE plpgsql AS $f$\n"
    "DECLARE\n"
    "  v_value bytea; v_version bigint; v_exp timestamptz; v_txt text; v_n numeric;\n"
    "  r record;\n"
    "BEGIN\n"
    "  SELECT i.method, i.fingerprint, i.status, i.result INTO r FROM storage.idem i\n"
    "    WHERE i.agent = p_agent AND i.request_id = p_req;\n"
    "  IF FOUND THEN\n"
    "    IF r.method <> 'kv.incr' OR r.fingerprint <> p_fp OR r.status IS NULL THEN\n"
    "      status := 5; message := 'request id already used for a different request';\n"
    "    ELSE\n"
    "      status := r.status; result := r.result; replayed := true;\n"
    "    END IF;\n"
    "    RETURN;\n"
    "  END IF;\n"
    "  LOOP\n"
    "    SELECT k.value, k.version, k.expires_at INTO v_value, v_version, v_exp\n"
    "      FROM storage.kv k WHERE k.agent = p_agent AND k.key = p_key FOR UPDATE;\n"
    "    IF NOT FOUND THEN\n"
    "      INSERT INTO storage.kv (agent, key, value, version)\n"
    "        VALUES (p_agent, p_key, convert_to(p_delta::text, 'UTF8'), 1)\n"
    "        ON CONFLICT DO NOTHING;\n"
    "      IF FOUND THEN v_n := p_delta; v_version := 1; EXIT; END IF;\n"
    "      CONTINUE;  -- created meanwhile: lock it and go round\n"
    "    END IF;\n"
    "    IF v_exp <= now() THEN\n"
    "      v_n := p_delta; v_version := 1; v_exp := NULL;\n"
    "    ELSE\n"
    "      v_txt := encode(v_value, 'escape');\n"
    "      IF v_txt !~ '^-?[0-9]{1,19}$' THEN\n"
    "        status := 5; message := 'the value of the key is not a decimal integer';\n"
    "        RETURN;\n"
    "      END IF;\n"
    "      v_n := v_txt::numeric + p_delta; v_version := v_version + 1;\n"
    "    END IF;\n"
    "    IF v_n > 9223372036854775807 OR v_n < -9223372036854775808 THEN\n"
    "      status := 5; message := 'the counter would overflow a 64-bit integer';\n"
    "      RETURN;\n"
    "    END IF;\n"
    "    UPDATE storage.kv k SET value = convert_to(v_n::text, 'UTF8'),\n"
    "        version = v_version, expires_at = v_exp, updated_at = now()\n"
    "      WHERE k.agent = p_agent AND k.key = p_key;\n"
    "    EXIT;\n"
    "  END LOOP;\n"
    "  status := 0; replayed := false;\n"
    "  result := int8send(v_n::bigint) || int8send(v_version);\n"
    "  INSERT INTO storage.idem (agent, request_id, method, fingerprint, status, result)\n"
    "    VALUES (p_agent, p_req, 'kv.incr', p_fp, 0, result);\n"
    "END $f$;\n"

    "CREATE TABLE storage.doc (\n"
    "  agent text NOT NULL,\n"
    "  coll text NOT NULL,\n"
    "  id bytea NOT NULL,\n"
    "  body jsonb NOT NULL,\n"
    "  version bigint NOT NULL,\n"
    "  updated_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (agent, coll, id));\n"
    "CREATE INDEX doc_body ON storage.doc USING gin (body jsonb_path_ops);\n"

    /* Blobs: content rows shared by every agent that stored the same bytes (refs counts
     * them), chunks of the content, each agent's references (what its quota is charged
     * for) and uploads in progress (charged too, so that staging cannot dodge it). */
    "CREATE TABLE storage.blob (\n"
    "  sha256 bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),\n"
    "  size bigint NOT NULL,\n"
    "  refs integer NOT NULL DEFAULT 0,\n"
    "  created_at timestamptz NOT NULL DEFAULT now());\n"
    "CREATE TABLE storage.blob_chunk (\n"
    "  sha256 bytea NOT NULL REFERENCES storage.blob ON DELETE CASCADE,\n"
    "  off bigint NOT NULL,\n"
    "  data bytea NOT NULL,\n"
    "  PRIMARY KEY (sha256, off));\n"
    "CREATE TABLE storage.blob_ref (\n"
    "  agent text NOT NULL,\n"
    "  sha256 bytea NOT NULL REFERENCES storage.blob,\n"
    "  size bigint NOT NULL,\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (agent, sha256));\n"
    "CREATE TABLE storage.blob_upload (\n"
    "  agent text NOT NULL,\n"
    "  upload bytea NOT NULL,\n"
    "  off bigint NOT NULL,\n"
    "  data bytea NOT NULL,\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (agent, upload, off));\n"
    /* Per-agent quotas set by an operator (SQL as the admin); others get the default. */
    "CREATE TABLE storage.quota (\n"
    "  agent text PRIMARY KEY,\n"
    "  blob_bytes bigint NOT NULL CHECK (blob_bytes >= 0));\n"

    /* Checkpoints: the head row hands out versions under its row lock, so versions only
     * grow, pruned or not. */
    "CREATE TABLE storage.checkpoint_head (\n"
    "  agent text NOT NULL,\n"
    "  name text NOT NULL,\n"
    "  last_version bigint NOT NULL,\n"
    "  PRIMARY KEY (agent, name));\n"
    "CREATE TABLE storage.checkpoint (\n"
    "  agent text NOT NULL,\n"
    "  name text NOT NULL,\n"
    "  version bigint NOT NULL,\n"
    "  data bytea NOT NULL,\n"
    "  meta jsonb,\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (agent, name, version));\n"

    "CREATE TABLE storage.step (\n"
    "  agent text NOT NULL,\n"
    "  run text NOT NULL,\n"
    "  step bigint NOT NULL CHECK (step >= 1),\n"
    "  kind text NOT NULL,\n"
    "  data bytea NOT NULL,\n"
    "  created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (agent, run, step));\n"

    /* Queues: one table; a message is ready when visible_at has passed. receipt names the
     * current delivery, so that a consumer whose visibility ran out cannot ack the next
     * consumer's delivery. */
    "CREATE TABLE storage.queue_msg (\n"
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "  agent text NOT NULL,\n"
    "  queue text NOT NULL,\n"
    "  body bytea NOT NULL,\n"
    "  from_agent text,\n"
    "  tries integer NOT NULL DEFAULT 0,\n"
    "  max_tries integer NOT NULL,\n"
    "  visible_at timestamptz NOT NULL DEFAULT now(),\n"
    "  receipt uuid,\n"
    "  enqueued_at timestamptz NOT NULL DEFAULT now());\n"
    "CREATE INDEX queue_msg_fifo ON storage.queue_msg (agent, queue, id);\n"

    /* The role: rows of its own tables, nothing else (no DDL, no TRUNCATE, no quotas). */
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA storage FROM PUBLIC;\n"
    "GRANT SELECT, INSERT, UPDATE, DELETE ON storage.idem, storage.kv, storage.doc,\n"
    "  storage.blob, storage.blob_chunk, storage.blob_ref, storage.blob_upload,\n"
    "  storage.checkpoint_head, storage.checkpoint, storage.step, storage.queue_msg\n"
    "  TO aos_storage;\n"
    "GRANT SELECT ON storage.quota TO aos_storage;\n"
    "GRANT USAGE ON SEQUENCE storage.queue_msg_id_seq TO aos_storage;\n"
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA storage TO aos_storage;\n";

static const srv_migration migrations[] = {
    {1, m1},
};

const srv_schema stg_schema = {
    .schema = "storage",
    .role = "aos_storage",
    .migrations = migrations,
    .n_migrations = sizeof migrations / sizeof migrations[0],
};
