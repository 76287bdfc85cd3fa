/* aos.yaml, the one configuration file (libyaml): the kernel's settings and the LLM gateway's
 * providers, checked whole at load time, for aosd and `aosctl config check` alike. */
#ifndef AOS_CONF_H
#define AOS_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "audit.pb-c.h"
#include "llm.pb-c.h"
#include "tool.pb-c.h"

#define CONF_FILE_MAX (1u << 20)   /* aos.yaml and a sim script, each */
#define CONF_PROVIDERS_MAX 64u
#define CONF_MODELS_MAX 256u       /* per provider */
#define CONF_TURNS_MAX 1000u       /* per sim script */
#define CONF_DSN_MAX 1024u         /* with the NUL, like kcfg's */
#define CONF_PATH_MAX 4096u        /* with the NUL */
#define CONF_KEY_MAX 8192u         /* an API key's bytes */
#define CONF_LLM_PACKED_MAX (4u << 20) /* conf_llm packed: what aos-llm reads off its fd
                                        * (SRV_CONFIG_MAX of servers/common/serve.h) */
#define CONF_FILE_NAME "aos.yaml"
#define CONF_RETENTION_DEFAULT_S (7u * 86400u) /* run_retention_s: a week */
#define CONF_RETENTION_MAX_S (3650ull * 86400u)
#define CONF_PRUNE_INTERVAL_DEFAULT_S 3600u /* run_prune_interval_s: hourly */
#define CONF_PRUNE_INTERVAL_MAX_S 86400u

/* The top-level keys of the old JSON file, which keep their names in aos.yaml. */
#define CONF_JSON_KEYS "restart_intensity, heartbeat_ms, heartbeat_timeout_ms, pg_dsn"

typedef struct conf conf;

/* The kernel's settings as the file gave them: has_X says the key was there (the caller
 * applies flag > environment > file > default). Paths are absolute: a relative one in the
 * file is taken from the file's directory. */
typedef struct conf_kernel {
    int has_pg_dsn, has_bin_dir, has_pg_bin_dir, has_restart_intensity, has_stable_ms,
        has_heartbeat_ms, has_heartbeat_timeout_ms, has_stop_timeout_ms, has_workers, has_log,
        has_audit_fail_open, has_log_max_mb, has_log_keep, has_disk_min_free_mb,
        has_run_retention_s, has_run_prune_interval_s, has_agent_memory_mb,
        has_agent_pids_max;
    char pg_dsn[CONF_DSN_MAX];
    char bin_dir[CONF_PATH_MAX];
    char pg_bin_dir[CONF_PATH_MAX];
    unsigned intensity;       /* restart_intensity "R/T": R restarts ... */
    uint64_t period_ms;       /* ... in T seconds */
    uint64_t stable_ms, heartbeat_ms, heartbeat_timeout_ms, stop_timeout_ms;
    unsigned workers;
    int log;                  /* log: true, as --log */
    int audit_fail_open;      /* audit_fail_open: true: syscalls do not wait for records */
    unsigned log_max_mb;      /* log_max_mb: aosd.log and pg.log rotate past it (0: never) */
    unsigned log_keep;        /* log_keep: old files kept of each */
    unsigned disk_min_free_mb; /* disk_min_free_mb: below it, effectful syscalls are refused */
    uint64_t run_retention_s; /* finished agent runs older than this may be pruned */
    uint64_t run_prune_interval_s; /* aosd prunes them this often (0: only when asked) */
    unsigned agent_memory_mb; /* agent_memory_mb: each agent's cgroup memory.max */
    unsigned agent_pids_max;  /* agent_pids_max: its pids.max (threads count) */
    int has_api;              /* api: the front door's section */
    unsigned api_port;        /* api.port: 0 (or absent): a free port, written to
                               * DATA/api/port */
    unsigned api_max_connections; /* 0: aos-api's default (1024) */
    uint64_t api_max_body;    /* 0: aos-api's default */
    unsigned api_idle_s;      /* api.idle_timeout_s; 0: aos-api's default (15) */
    char api_listen[16];      /* api.listen: an IPv4 address ("127.0.0.1" when absent);
                               * outside 127.0.0.0/8 only with TLS */
    char *api_tls_cert;       /* api.tls_cert's file, read at load (PEM, the chain), or NULL */
    size_t api_tls_cert_len;
    char *api_tls_key;        /* api.tls_key's file (PEM; a secret: zeroed when freed) */
    size_t api_tls_key_len;
    int has_api_token;        /* api.metrics_token_env named a variable that was set */
    uint8_t api_token_hash[32]; /* BLAKE2b-256 of its value: /metrics wants it as Bearer */
} conf_kernel;
#define CONF_PEM_MAX (64u << 10)  /* a certificate chain or a key file */

/* Reads and checks path. path_given 0 means path is the default (<data-dir>/aos.yaml), whose
 * absence gives the built-in defaults (the sim provider only); an explicit path must exist.
 * A provider's api_key_env is read with getenv now: an unset variable is a warning, not an
 * error. On AOS_OK the caller owns *out and frees it with conf_free. Otherwise *out is NULL
 * and why says "FILE:LINE:COLUMN: where: what" (AOS_ERR_USAGE for a bad file, _TOO_BIG for
 * one past a cap, _NOMEM); no message ever holds an API key's value. */
aos_err conf_load(const char *path, int path_given, conf **out, char *why, size_t whylen);
/* NULL is fine. */
void conf_free(conf *c);

/* DATA_DIR/aos.yaml into out; AOS_ERR_TOO_BIG when it does not fit. */
aos_err conf_default_path(const char *data_dir, char *out, size_t cap);

/* The file as named to conf_load; whether it was read (0: the built-in defaults). */
const char *conf_path(const conf *c);
int conf_from_file(const conf *c);
/* Owned by c, valid until conf_free. */
const conf_kernel *conf_kernel_settings(const conf *c);
/* Owned by c (never NULL, at least one provider), valid until conf_free. It holds the API
 * keys: pack it only for aos-llm's inherited fd, never print it. Every provider has limits
 * and at least one model, a sim one has sim; 0 and empty fields are the proto's defaults.
 * Here (not once unpacked) the bytes fields are also NUL-terminated. */
const Aos__Llm__Config *conf_llm(const conf *c);
/* The audit: section (the OTLP export, its header values read from the environment), NULL
 * when the file has none; owned by c. */
const Aos__Audit__Config *conf_audit(const conf *c);
/* The tools: section (MCP servers, secrets with their values read from aosd's
 * environment), NULL when the file has none; owned by c. conf_tool_packed gives it packed
 * for aos-tool's fd: malloc'd, the caller bzeroes (secrets) and frees it; NULL when none. */
const Aos__Tool__Config *conf_tool(const conf *c);
uint8_t *conf_tool_packed(const conf *c, size_t *len);
/* 1 when the environment variable name[0..len) is one aos.yaml reads a secret or an API
 * key from (it must not be passed on in any child's environment). */
int conf_env_is_secret(const conf *c, const char *name, size_t len);
/* What the load found worth saying but not refusing ("$OPENAI_API_KEY is not set ..."),
 * owned by c; i < conf_nwarnings. */
size_t conf_nwarnings(const conf *c);
const char *conf_warning(const conf *c, size_t i);

#endif
