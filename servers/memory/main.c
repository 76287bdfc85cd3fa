/* aos-memory: agents' context windows (pages, token budget, eviction to PostgreSQL).
 * For now it answers ping and stats; its schema is in place for the memory issue. */
#include "serve.h"

/* Minimal until the memory issue designs pages for real: one row per page of an agent's
 * context, with its size in tokens so a budget can be checked. */
static const srv_migration memory_migrations[] = {
    {1, "CREATE TABLE memory.pages ("
        "  agent_id text NOT NULL,"
        "  page_id bigint NOT NULL,"
        "  tokens integer NOT NULL DEFAULT 0 CHECK (tokens >= 0),"
        "  body text NOT NULL DEFAULT '',"
        "  created_at timestamptz NOT NULL DEFAULT now(),"
        "  PRIMARY KEY (agent_id, page_id));"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON memory.pages TO aos_memory;"},
};

static const srv_schema memory_schema = {
    .schema = "memory",
    .role = "aos_memory",
    .migrations = memory_migrations,
    .n_migrations = sizeof memory_migrations / sizeof memory_migrations[0],
};

int main(int argc, char **argv)
{
    static const srv_def def = {.name = "memory", .schema = &memory_schema};
    return srv_main(&def, argc, argv);
}
