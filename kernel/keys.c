/* The front door's API keys: made, listed and revoked by the admin, stored hashed in one
 * aos-storage record of aosd's own, and looked up by hash on every call aos-api makes. */
#include "keys.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "agent.pb-c.h"
#include "aos/log.h"
#include "storage.pb-c.h"

#define KEYS_KV "api_keys"       /* under aos:kernel, next to the deployment record */
#define KEYS_NS "aos:kernel"   /* aosd's own records' namespace, as the deployment's */
#define KEYS_STORAGE_MS 20000u
#define KEY_ID_HEX 12
#define KEY_RAW 32

typedef struct kkey {
    char id[KEY_ID_HEX + 1];
    char agent[AOS_AGENT_ID_MAX + 1];
    uint8_t hash[AOS_KEY_HASH_LEN];
    uint64_t created_ms, revoked_ms;
} kkey;

/* The table is replaced whole by a change once its record is durable, so a lookup never
 * sees a key that a crash right now would lose. One change at a time (busy). */
static struct {
    pthread_mutex_t mu;
    kkey *tab;
    size_t n;
    int loaded, loading, busy;
    uint64_t version, retry;
} K = {.mu = PTHREAD_MUTEX_INITIALIZER};

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* A bytes field that must be an agent name: into out, or 0. */
static int agent_arg(ProtobufCBinaryData b, char *out, size_t cap)
{
    if (!b.len || b.len >= cap || !aos_agent_id_valid((const char *)b.data, b.len))
        return 0;
    memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return 1;
}

/* ---- the record ----------------------------------------------------------------------- */

static char *record_json(const kkey *t, size_t n)
{
    json_t *o = json_object(), *a = json_array();
    json_object_set_new(o, "keys", a);
    for (size_t i = 0; i < n; i++) {
        char hex[AOS_KEY_HASH_LEN * 2 + 1];
        aos_hex(t[i].hash, AOS_KEY_HASH_LEN, hex);
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", t[i].id,
                                           "agent", t[i].agent, "hash", hex, "created_ms",
                                           (json_int_t)t[i].created_ms, "revoked_ms",
                                           (json_int_t)t[i].revoked_ms));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The stored record into a new table (entries that do not read are dropped, loudly). */
static kkey *record_parse(const uint8_t *p, size_t len, size_t *n)
{
    json_error_t je;
    json_t *o = json_loadb((const char *)p, len, 0, &je);
    json_t *a = json_object_get(o, "keys");
    size_t cnt = json_array_size(a), i;
    kkey *t = calloc(cnt ? cnt : 1, sizeof *t);
    *n = 0;
    json_t *v;
    json_array_foreach(a, i, v) {
        const char *id = json_string_value(json_object_get(v, "id"));
        const char *ag = json_string_value(json_object_get(v, "agent"));
        const char *h = json_string_value(json_object_get(v, "hash"));
        json_t *c = json_object_get(v, "created_ms"), *r = json_object_get(v, "revoked_ms");
        if (!t || *n >= KEYS_MAX || !id || strlen(id) != KEY_ID_HEX || !ag ||
            !aos_agent_id_valid(ag, strlen(ag)) || !h ||
            aos_unhex(h, strlen(h), t[*n].hash, AOS_KEY_HASH_LEN) != 0 ||
            !json_is_integer(c) || !json_is_integer(r)) {
            aos_warn("keys: a stored API key does not read: dropped");
            continue;
        }
        snprintf(t[*n].id, sizeof t[*n].id, "%s", id);
        snprintf(t[*n].agent, sizeof t[*n].agent, "%s", ag);
        t[*n].created_ms = (uint64_t)json_integer_value(c);
        t[*n].revoked_ms = (uint64_t)json_integer_value(r);
        (*n)++;
    }
    json_decref(o);
    return t;
}

static void loaded_cb(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    (void)arg;
    pthread_mutex_lock(&K.mu);
    K.loading = 0;
    Aos__Storage__KvGetReply *g = NULL;
    if (status == AOS_ERR_NOT_FOUND) {
        K.loaded = 1;
        K.version = 0;
    } else if (status != AOS_OK || !(g = aos__storage__kv_get_reply__unpack(NULL, len, pl))) {
        aos_warn("keys: reading the API keys from aos-storage: %s (%s); retrying",
                 aos_err_name(status == AOS_OK ? AOS_ERR_PROTO : status), err ? err : "");
        K.retry = aos_mono_ms() + 1000;
    } else {
        size_t n = 0;
        kkey *t = record_parse(g->value.data, g->value.len, &n);
        if (t) {
            free(K.tab);
            K.tab = t;
            K.n = n;
            K.version = g->version;
            K.loaded = 1;
            aos_info("keys: %zu API keys (version %" PRIu64 ")", n, K.version);
        } else {
            K.retry = aos_mono_ms() + 1000;
        }
        aos__storage__kv_get_reply__free_unpacked(g, NULL);
    }
    pthread_mutex_unlock(&K.mu);
}

void keys_load(void)
{
    pthread_mutex_lock(&K.mu);
    if (K.loaded || K.loading) {
        pthread_mutex_unlock(&K.mu);
        return;
    }
    K.loading = 1;
    pthread_mutex_unlock(&K.mu);
    Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
    g.key = bin(KEYS_KV);
    agents_storage("storage.kv.get", KEYS_NS, NULL, KEYS_STORAGE_MS, &g.base, loaded_cb, NULL);
}

void keys_tick(uint64_t now)
{
    pthread_mutex_lock(&K.mu);
    int again = !K.loaded && !K.loading && K.retry && now >= K.retry;
    if (again)
        K.retry = 0;
    pthread_mutex_unlock(&K.mu);
    if (again)
        keys_load();
}

aos_err keys_agent_of(const uint8_t hash[AOS_KEY_HASH_LEN], char *agent, size_t cap,
                      char *why, size_t whylen)
{
    aos_err rc = AOS_ERR_UNAUTHENTICATED;
    pthread_mutex_lock(&K.mu);
    if (!K.loaded) {
        rc = AOS_ERR_UNAVAILABLE;
        snprintf(why, whylen, "the API keys are not read back from aos-storage yet");
    } else {
        snprintf(why, whylen, "no such API key");
        for (size_t i = 0; i < K.n; i++)
            if (!sodium_memcmp(K.tab[i].hash, hash, AOS_KEY_HASH_LEN)) {
                snprintf(agent, cap, "%s", K.tab[i].agent);
                if (K.tab[i].revoked_ms)
                    snprintf(why, whylen, "API key %s (agent %s) was revoked", K.tab[i].id,
                             K.tab[i].agent);
                else
                    rc = AOS_OK;
                break;
            }
    }
    pthread_mutex_unlock(&K.mu);
    return rc;
}

/* ---- changes ------------------------------------------------------------------------- */

typedef struct change {
    kreply *k;
    kkey *tab;              /* the table as it will be */
    size_t n;
    uint8_t *reply;         /* the answer once durable */
    size_t reply_len;
    char *record;
} change;

static void change_free(change *c)
{
    if (!c)
        return;
    free(c->tab);
    if (c->reply) {
        sodium_memzero(c->reply, c->reply_len); /* a create's reply holds the key */
        free(c->reply);
    }
    free(c->record);
    free(c);
}

static void stored_cb(void *arg, int status, const uint8_t *pl, size_t len, const char *err)
{
    change *c = arg;
    Aos__Storage__KvPutReply *r = NULL;
    if (status == AOS_OK && !(r = aos__storage__kv_put_reply__unpack(NULL, len, pl)))
        status = AOS_ERR_PROTO;
    pthread_mutex_lock(&K.mu);
    K.busy = 0;
    if (status == AOS_OK) {
        free(K.tab);
        K.tab = c->tab;
        K.n = c->n;
        c->tab = NULL;
        K.version = r->version;
    }
    pthread_mutex_unlock(&K.mu);
    if (r)
        aos__storage__kv_put_reply__free_unpacked(r, NULL);
    if (status == AOS_OK) {
        kreply_send(c->k, AOS_OK, NULL, c->reply, c->reply_len);
    } else {
        char why[AOS_ERRMSG_MAX];
        snprintf(why, sizeof why, "cannot store the API keys in aos-storage; nothing "
                 "changed: %s", err ? err : aos_strerror(status));
        kreply_send(c->k, status == AOS_ERR_CONFLICT ? AOS_ERR_CONFLICT : status, why, NULL,
                    0);
    }
    change_free(c);
}

/* Starts a change: a copy of the table (room for one more) for the caller to edit, or NULL
 * after answering k why not. K.mu held on success (the caller calls commit_change). */
static change *begin_change(kreply *k)
{
    pthread_mutex_lock(&K.mu);
    const char *no = !K.loaded ? "the API keys are not read back from aos-storage yet; "
                                 "retry in a moment"
                     : K.busy  ? "another key change is being stored; retry"
                               : NULL;
    if (no) {
        pthread_mutex_unlock(&K.mu);
        kreply_send(k, K.busy ? AOS_ERR_CONFLICT : AOS_ERR_UNAVAILABLE, no, NULL, 0);
        return NULL;
    }
    change *c = calloc(1, sizeof *c);
    if (c && !(c->tab = calloc(K.n + 1, sizeof *c->tab))) {
        free(c);
        c = NULL;
    }
    if (!c) {
        pthread_mutex_unlock(&K.mu);
        kreply_send(k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        return NULL;
    }
    if (K.n)
        memcpy(c->tab, K.tab, K.n * sizeof *c->tab);
    c->n = K.n;
    c->k = k;
    return c;
}

/* K.mu held: writes c's table (compare-and-set on the version read), answers when durable. */
static void commit_change(change *c, const ProtobufCMessage *reply)
{
    uint64_t version = K.version;
    c->record = record_json(c->tab, c->n);
    c->reply_len = protobuf_c_message_get_packed_size(reply);
    c->reply = malloc(c->reply_len ? c->reply_len : 1);
    if (!c->record || !c->reply) {
        pthread_mutex_unlock(&K.mu);
        kreply_send(c->k, AOS_ERR_NOMEM, "aosd is out of memory", NULL, 0);
        change_free(c);
        return;
    }
    protobuf_c_message_pack(reply, c->reply);
    K.busy = 1;
    pthread_mutex_unlock(&K.mu);
    Aos__Storage__KvPutRequest put = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    put.key = bin(KEYS_KV);
    put.value = bin(c->record);
    put.cas = 1;
    put.if_version = version;
    agents_storage("storage.kv.put", KEYS_NS, NULL, KEYS_STORAGE_MS, &put.base, stored_cb, c);
}

void keys_m_create(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    char agent[AOS_AGENT_ID_MAX + 1];
    Aos__Agent__KeyCreateRequest *in =
        aos__agent__key_create_request__unpack(NULL, req->payload_len, req->payload);
    int ok = in && agent_arg(in->agent, agent, sizeof agent);
    if (in)
        aos__agent__key_create_request__free_unpacked(in, NULL);
    if (!ok) {
        kreply_send(k, AOS_ERR_USAGE, "kernel.agent.key.create: payload is not a "
                    "KeyCreateRequest naming an agent", NULL, 0);
        return;
    }
    if (!agents_applied(agent)) {
        char why[160];
        snprintf(why, sizeof why, "no agent %s is applied (aosctl apply, then ps)", agent);
        kreply_send(k, AOS_ERR_NOT_FOUND, why, NULL, 0);
        return;
    }
    change *c = begin_change(k);
    if (!c)
        return;
    if (c->n >= KEYS_MAX) {
        pthread_mutex_unlock(&K.mu);
        kreply_send(k, AOS_ERR_QUOTA, "aosd keeps at most 4096 API keys, revoked ones "
                    "included", NULL, 0);
        change_free(c);
        return;
    }
    uint8_t raw[KEY_RAW], idb[KEY_ID_HEX / 2];
    char key[sizeof KEYS_PREFIX + 64];
    randombytes_buf(raw, sizeof raw);
    randombytes_buf(idb, sizeof idb);
    memcpy(key, KEYS_PREFIX, strlen(KEYS_PREFIX));
    sodium_bin2base64(key + strlen(KEYS_PREFIX), sizeof key - strlen(KEYS_PREFIX), raw,
                      sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    kkey *e = &c->tab[c->n++];
    memset(e, 0, sizeof *e);
    aos_hex(idb, sizeof idb, e->id);
    snprintf(e->agent, sizeof e->agent, "%s", agent);
    crypto_generichash(e->hash, AOS_KEY_HASH_LEN, (const uint8_t *)key, strlen(key), NULL, 0);
    e->created_ms = aos_now_ms();
    Aos__Agent__KeyCreateReply r = AOS__AGENT__KEY_CREATE_REPLY__INIT;
    r.id = bin(e->id);
    r.agent = bin(e->agent);
    r.key = bin(key);
    r.created_ms = e->created_ms;
    commit_change(c, &r.base);
    sodium_memzero(key, sizeof key);
}

void keys_m_revoke(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    char agent[AOS_AGENT_ID_MAX + 1], id[KEY_ID_HEX + 1] = "";
    Aos__Agent__KeyRevokeRequest *in =
        aos__agent__key_revoke_request__unpack(NULL, req->payload_len, req->payload);
    int ok = in && agent_arg(in->agent, agent, sizeof agent) &&
             (!in->id.len || (in->id.len == KEY_ID_HEX &&
                              aos_unhex((const char *)in->id.data, KEY_ID_HEX,
                                        (uint8_t[KEY_ID_HEX / 2]){0}, KEY_ID_HEX / 2) == 0));
    if (ok && in->id.len)
        memcpy(id, in->id.data, KEY_ID_HEX);
    if (in)
        aos__agent__key_revoke_request__free_unpacked(in, NULL);
    if (!ok) {
        kreply_send(k, AOS_ERR_USAGE, "kernel.agent.key.revoke: payload is not a "
                    "KeyRevokeRequest naming an agent (and maybe a 12-hex-digit key id)",
                    NULL, 0);
        return;
    }
    change *c = begin_change(k);
    if (!c)
        return;
    uint32_t n = 0, found = 0;
    uint64_t now = aos_now_ms();
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->tab[i].agent, agent) && (!id[0] || !strcmp(c->tab[i].id, id))) {
            found++;
            if (!c->tab[i].revoked_ms) {
                c->tab[i].revoked_ms = now;
                n++;
            }
        }
    if (!found) {
        pthread_mutex_unlock(&K.mu);
        char why[160];
        snprintf(why, sizeof why, "agent %s has no API key%s%s", agent, id[0] ? " " : "",
                 id);
        kreply_send(k, AOS_ERR_NOT_FOUND, why, NULL, 0);
        change_free(c);
        return;
    }
    Aos__Agent__KeyRevokeReply r = AOS__AGENT__KEY_REVOKE_REPLY__INIT;
    r.revoked = n;
    commit_change(c, &r.base);
}

void keys_m_list(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    char agent[AOS_AGENT_ID_MAX + 1] = "";
    Aos__Agent__KeyListRequest *in =
        aos__agent__key_list_request__unpack(NULL, req->payload_len, req->payload);
    int ok = in && (!in->agent.len || agent_arg(in->agent, agent, sizeof agent));
    if (in)
        aos__agent__key_list_request__free_unpacked(in, NULL);
    if (!ok) {
        kreply_send(k, AOS_ERR_USAGE, "kernel.agent.key.list: payload is not a "
                    "KeyListRequest", NULL, 0);
        return;
    }
    pthread_mutex_lock(&K.mu);
    if (!K.loaded) {
        pthread_mutex_unlock(&K.mu);
        kreply_send(k, AOS_ERR_UNAVAILABLE, "the API keys are not read back from aos-storage "
                    "yet; retry in a moment", NULL, 0);
        return;
    }
    Aos__Agent__KeyInfo *infos = calloc(K.n + 1, sizeof *infos);
    Aos__Agent__KeyInfo **ptrs = calloc(K.n + 1, sizeof *ptrs);
    size_t m = 0;
    for (size_t i = 0; infos && ptrs && i < K.n; i++) {
        if (agent[0] && strcmp(agent, K.tab[i].agent))
            continue;
        aos__agent__key_info__init(&infos[m]);
        infos[m].id = bin(K.tab[i].id);
        infos[m].agent = bin(K.tab[i].agent);
        infos[m].created_ms = K.tab[i].created_ms;
        infos[m].revoked_ms = K.tab[i].revoked_ms;
        ptrs[m] = &infos[m];
        m++;
    }
    Aos__Agent__KeyListReply r = AOS__AGENT__KEY_LIST_REPLY__INIT;
    r.n_keys = m;
    r.keys = ptrs;
    size_t len = aos__agent__key_list_reply__get_packed_size(&r);
    uint8_t *buf = infos && ptrs ? malloc(len ? len : 1) : NULL;
    if (buf)
        aos__agent__key_list_reply__pack(&r, buf);
    pthread_mutex_unlock(&K.mu);
    kreply_send(k, buf ? AOS_OK : AOS_ERR_NOMEM, buf ? NULL : "aosd is out of memory", buf,
                len);
    free(buf);
    free(infos);
    free(ptrs);
}
