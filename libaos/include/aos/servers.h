/* The one list of the servers aosd supervises (and of postgres, its other child): the
 * kernel's child table, aosctl's name checks and the tests all expand it, never retype it. */
#ifndef AOS_SERVERS_H
#define AOS_SERVERS_H

/* What a server needs from aosd besides a link. */
#define AOS_SRV_DB 1u     /* its own PostgreSQL role and schema (a migrator runs first) */
#define AOS_SRV_CGROUP 2u /* a delegated cgroup subtree (aos-tool puts each run in one) */
#define AOS_SRV_DIR 4u    /* a directory of its own, DATA/<name>, 0700, its uid's alone
                           * (aos-audit keeps its signing key and heads file there) */
#define AOS_SRV_WORKSPACES 8u /* DATA/workspaces/<agent>, the agents' working directories */

/* X(name, flags) for each server, in start order (stop order is the reverse). The name
 * is a bare word: "aos-" #name is its binary and OS account, "aos_" #name its role. */
#define AOS_SERVERS(X)            \
    X(memory, AOS_SRV_DB)         \
    X(storage, AOS_SRV_DB)        \
    X(tool, AOS_SRV_CGROUP | AOS_SRV_DIR | AOS_SRV_WORKSPACES) \
    X(llm, AOS_SRV_DB)            \
    X(audit, AOS_SRV_DB | AOS_SRV_DIR) \
    X(api, AOS_SRV_DIR)

/* A server's migrator exits with this when the database's schema is newer than the
 * binary knows (EX_CONFIG): aosd marks the server failed with the migrator's message and
 * does not start it again. */
#define AOS_SRV_EXIT_REFUSED 78

/* The embedded PostgreSQL's name as a child of aosd ("aosctl server restart postgres"). */
#define AOS_CHILD_PG "postgres"

#define AOS_SRV_COUNT_ONE_(name, flags) +1
/* How many servers the list holds (postgres not counted). */
#define AOS_SRV_COUNT (0 AOS_SERVERS(AOS_SRV_COUNT_ONE_))

#define AOS_SRV_NAME_(name, flags) #name,
/* The names as initializers of a string array: {AOS_SRV_NAMES NULL}. */
#define AOS_SRV_NAMES AOS_SERVERS(AOS_SRV_NAME_)

#define AOS_SRV_TEXT_(name, flags) ", " #name
/* "memory, storage, tool, llm, audit, api": for messages that list the valid names. */
#define AOS_SRV_NAMES_TEXT (&AOS_SERVERS(AOS_SRV_TEXT_)[2])

#endif
