/* aos-memory's schema: migration 1 (the first stub's page table, kept as shipped) and the
 * real design from migration 2 on: pages with kind, trust and residency, agents' budgets,
 * archival chunks with full text and embeddings, shares, and the idempotency records. */
#include "mem.h"
#include "pidem.h"

static const srv_migration migrations[] = {
    {1, "CREATE TABLE memory.pages ("
        "  agent_id text NOT NULL,"
        "  page_id bigint NOT NULL,"
        "  tokens integer NOT NULL DEFAULT 0 CHECK (tokens >= 0),"
        "  body text NOT NULL DEFAULT '',"
        "  created_at timestamptz NOT NULL DEFAULT now(),"
        "  PRIMARY KEY (agent_id, page_id));"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON memory.pages TO aos_memory;"},
    /* The body column stays the page's text; a swapped page keeps it here (the "disk")
     * while aos-memory drops it from RAM. Trust rules are also checks, so no bug in the
     * server can store an untrusted system prompt, pinned note or todo list. */
    {2, "ALTER TABLE memory.pages\n"
        "  ADD COLUMN kind integer NOT NULL DEFAULT 5 CHECK (kind BETWEEN 1 AND 9),\n"
        "  ADD COLUMN trust integer NOT NULL DEFAULT 3 CHECK (trust BETWEEN 1 AND 3),\n"
        "  ADD COLUMN source text NOT NULL DEFAULT '',\n"
        "  ADD COLUMN pinned boolean NOT NULL DEFAULT false,\n"
        "  ADD COLUMN swapped boolean NOT NULL DEFAULT false,\n"
        "  ADD COLUMN dead boolean NOT NULL DEFAULT false,\n"
        "  ADD COLUMN summary text NOT NULL DEFAULT '',\n"
        "  ADD COLUMN uses integer NOT NULL DEFAULT 0,\n"
        "  ADD COLUMN last_use_mark bigint NOT NULL DEFAULT 0,\n"
        "  ADD COLUMN last_use timestamptz NOT NULL DEFAULT now(),\n"
        "  ADD CONSTRAINT pages_untrusted_fenced CHECK (trust < 3 OR (kind > 4 AND NOT pinned)),\n"
        "  ADD CONSTRAINT pages_todo_unpinned CHECK (kind <> 4 OR NOT pinned);\n"
        "CREATE TABLE memory.agents (\n"
        "  agent_id text PRIMARY KEY,\n"
        "  budget bigint NOT NULL CHECK (budget > 0),\n"
        "  reserve bigint NOT NULL CHECK (reserve >= 0),\n"
        "  next_page bigint NOT NULL DEFAULT 1);\n"
        "CREATE TABLE memory.chunks (\n"
        "  id bigserial PRIMARY KEY,\n"
        "  agent_id text NOT NULL,\n"
        "  collection text NOT NULL,\n"
        "  doc_id text NOT NULL,\n"
        "  seq integer NOT NULL,\n"
        "  body text NOT NULL,\n"
        "  trust integer NOT NULL CHECK (trust BETWEEN 1 AND 3),\n"
        "  source text NOT NULL DEFAULT '',\n"
        "  page_id bigint,\n"
        "  model text NOT NULL DEFAULT '',\n"
        "  dim integer NOT NULL DEFAULT 0,\n"
        "  embedding bytea CHECK (embedding IS NULL OR octet_length(embedding) = 4 * dim),\n"
        "  tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,\n"
        "  created_at timestamptz NOT NULL DEFAULT now());\n"
        "CREATE INDEX chunks_tsv ON memory.chunks USING gin (tsv);\n"
        "CREATE INDEX chunks_agent ON memory.chunks (agent_id, collection, id);\n"
        "CREATE INDEX chunks_page ON memory.chunks (agent_id, page_id) WHERE page_id IS NOT NULL;\n"
        "CREATE TABLE memory.shares (\n"
        "  owner text NOT NULL,\n"
        "  collection text NOT NULL,\n"
        "  grantee text NOT NULL,\n"
        "  PRIMARY KEY (owner, collection, grantee));\n"
        /* OR of per-word queries, each made by plainto_tsquery: a query's words never
         * reach the tsquery parser, so its syntax characters are only text */
        "CREATE AGGREGATE memory.tsq_or(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);\n"
        PIDEM_SQL("memory")
        "GRANT SELECT, INSERT, UPDATE, DELETE ON memory.agents, memory.chunks, memory.shares,\n"
        "  memory.idem TO aos_memory;\n"
        "GRANT USAGE ON SEQUENCE memory.chunks_id_seq TO aos_memory;\n"
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA memory TO aos_memory;\n"},
    /* The OR query as one immutable function of the query text: the planner then takes it
     * for a value (computed once) and reaches the chunks through the GIN index, which it
     * cannot do for a query joined in from a subselect. */
    {3, "CREATE FUNCTION memory.or_query(q text) RETURNS tsquery LANGUAGE sql IMMUTABLE\n"
        "  PARALLEL SAFE AS $f$ SELECT memory.tsq_or(plainto_tsquery('english', w))\n"
        "  FROM regexp_split_to_table(q, '[^[:alnum:]]+') w WHERE w <> '' $f$;\n"
        "GRANT EXECUTE ON FUNCTION memory.or_query(text) TO aos_memory;\n"},
    /* Searches read the GIN index right after bulk stores: without its pending list they
     * do not scan thousands of unmerged entries (stores pay the merge instead). */
    {4, "ALTER INDEX memory.chunks_tsv SET (fastupdate = off);\n"},
};

const srv_schema mem_schema = {
    .schema = "memory",
    .role = "aos_memory",
    .migrations = migrations,
    .n_migrations = sizeof migrations / sizeof migrations[0],
};
