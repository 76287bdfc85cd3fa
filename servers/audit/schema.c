/* The audit log's table and grants. Kept apart from main.c so that the tests check the
 * very migrations the server runs (aos_audit may INSERT and SELECT, never change a row). */
#include "schema.h"

/* The log belongs to the admin; aos_audit gets INSERT and SELECT on it and the use of its
 * sequence, nothing else: no UPDATE, DELETE or TRUNCATE, so a compromised audit server
 * can add records but never rewrite history. */
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
};

const srv_schema audit_schema = {
    .schema = "audit",
    .role = "aos_audit",
    .migrations = audit_migrations,
    .n_migrations = sizeof audit_migrations / sizeof audit_migrations[0],
};
