/* The front door's API keys: each names one applied agent; aosd keeps only their BLAKE2b-256
 * hashes (one aos-storage record of its own) and maps a hash aos-api sends to its agent. */
#ifndef AOS_KEYS_H
#define AOS_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "agents.h"
#include "aos/envelope.h"
#include "aos/err.h"

#define KEYS_MAX 4096u          /* keys kept, revoked ones included */
#define KEYS_PREFIX "aos-"      /* every key starts so (a scanner's hint, not a secret) */

/* Ask aos-storage for the stored keys (at start, and again from keys_tick until it
 * answers). */
void keys_load(void);
void keys_tick(uint64_t now_mono);

/* The agent whose key hashes to hash, into agent (AOS_AGENT_ID_MAX + 1). AOS_OK;
 * UNAUTHENTICATED for a hash no key has (agent untouched), or one revoked (agent set: the
 * audit names who was refused; why says which);
 * UNAVAILABLE while the keys are not loaded yet. */
aos_err keys_agent_of(const uint8_t hash[AOS_KEY_HASH_LEN], char *agent, size_t cap,
                      char *why, size_t whylen);

/* admin: kernel.agent.key.create, .list, .revoke (answer once the change is durable) */
void keys_m_create(const aos_env *req, const char *caller, kreply *k);
void keys_m_list(const aos_env *req, const char *caller, kreply *k);
void keys_m_revoke(const aos_env *req, const char *caller, kreply *k);

#endif
