/* Retention: one thread of aosd's that, every run_prune_interval_s and when the admin asks,
 * removes expired finished runs from aos-storage and the workspaces of agents gone for good. */
#include "retain.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.pb-c.h"
#include "agstate.h"
#include "aos/log.h"
#include "aos/step.h"
#include "aos/storage.h"
#include "storage.pb-c.h"

#define RT_CALL_MS 20000u      /* each storage call: it waits on the link for a restart */
#define RT_PAGE 1000u          /* run records a kv.list page holds (storage's maximum) */
#define RT_RUNS_MAX 100000u    /* records read of one agent in one pass: the rest, next pass */
#define RT_REPLY_IDS 1000u     /* run ids a reply names (runs_total counts them all) */
#define RT_ERRORS 16u          /* errors a reply names */
#define RT_JOBS 16u            /* admin requests queued at once */
#define RT_FIRST_MAX_S 60u     /* the first pass, at most this long after the start */

typedef struct rt_job {
    struct rt_job *next;
    char agent[AOS_AGENT_ID_MAX + 1]; /* "": every agent's */
    kreply *k;
} rt_job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* jobs, stop, and the thread's end */
    pthread_t th;
    int started, stop, ended;
    uint64_t keep_s, every_s, next_mono;
    rt_job *head, *tail;
    unsigned njobs;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int stopping(void)
{
    pthread_mutex_lock(&R.mu);
    int s = R.stop;
    pthread_mutex_unlock(&R.mu);
    return s;
}

/* ---- aos-storage calls, waited for on this thread ------------------------------------------ */

typedef struct sync_call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, status;
    uint8_t *buf;
    size_t len;
    char err[AOS_ERRMSG_MAX];
} sync_call;

static void sc_done(void *arg, int status, const uint8_t *payload, size_t len, const char *err)
{
    sync_call *c = arg;
    pthread_mutex_lock(&c->mu);
    c->status = status;
    if (status == AOS_OK && (c->buf = malloc(len ? len : 1))) {
        if (len) /* an empty reply may come as NULL */
            memcpy(c->buf, payload, len);
        c->len = len;
    } else if (status == AOS_OK) {
        c->status = AOS_ERR_NOMEM;
    }
    snprintf(c->err, sizeof c->err, "%s", err ? err : "");
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* method acting as agent (its namespace); *out: the reply unpacked as rd (the caller frees
 * it with protobuf_c_message_free_unpacked). agents_storage answers exactly once, at the
 * latest when RT_CALL_MS passed, so the wait is bounded. */
static aos_err st_call(const char *method, const char *agent, const ProtobufCMessage *m,
                       const ProtobufCMessageDescriptor *rd, ProtobufCMessage **out, char *why,
                       size_t whylen)
{
    sync_call c = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    *out = NULL;
    if (stopping()) { /* no call begins once aosd stops: its links are about to go */
        snprintf(why, whylen, "%s: aosd is stopping", method);
        return AOS_ERR_UNAVAILABLE;
    }
    agents_storage(method, agent, NULL, RT_CALL_MS, m, sc_done, &c);
    pthread_mutex_lock(&c.mu);
    while (!c.done)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    aos_err e = (aos_err)c.status;
    if (e == AOS_OK && !(*out = protobuf_c_message_unpack(rd, NULL, c.len, c.buf))) {
        e = AOS_ERR_PROTO;
        snprintf(c.err, sizeof c.err, "the reply is not a %s", rd->short_name);
    }
    free(c.buf);
    if (e)
        snprintf(why, whylen, "%s: %.900s", method, c.err[0] ? c.err : aos_strerror(e));
    return e;
}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* ---- one pass ------------------------------------------------------------------------------ */

typedef struct rt_result {
    char **runs;               /* up to RT_REPLY_IDS ids, each "agent/run" for a whole pass */
    size_t nruns;
    uint64_t runs_total, unreadable;
    char **ws;
    size_t nws;
    char **errors;
    size_t nerr;
    unsigned agents;
} rt_result;

static void add_str(char ***v, size_t *n, size_t max, const char *s)
{
    if (*n >= max)
        return;
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return;
    *v = nv;
    if ((nv[*n] = strdup(s)))
        (*n)++;
}

static void add_err(rt_result *res, const char *agent, const char *why)
{
    char line[AOS_ERRMSG_MAX + AOS_AGENT_ID_MAX + 8];
    snprintf(line, sizeof line, "%s: %s", agent, why);
    add_str(&res->errors, &res->nerr, RT_ERRORS, line);
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* The steps of one run, then its record (only the version judged: an agent's rewrite
 * meanwhile wins). A crash between the two leaves a record without steps: the next pass
 * removes it. 1 removed, 0 left (changed meanwhile), -1 error (in why). */
static int drop_run(const char *agent, const char *key, const char *run, uint64_t version,
                    char *why, size_t whylen)
{
    Aos__Storage__StepDropRequest d = AOS__STORAGE__STEP_DROP_REQUEST__INIT;
    d.run = bin(run);
    ProtobufCMessage *rep = NULL;
    aos_err e = st_call("storage.step.drop", agent, &d.base,
                        &aos__storage__step_drop_reply__descriptor, &rep, why, whylen);
    if (rep)
        protobuf_c_message_free_unpacked(rep, NULL);
    if (e)
        return -1;
    Aos__Storage__KvDeleteRequest k = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
    k.key = bin(key);
    k.cas = 1;
    k.if_version = version;
    e = st_call("storage.kv.delete", agent, &k.base, &aos__storage__kv_delete_reply__descriptor,
                &rep, why, whylen);
    if (rep)
        protobuf_c_message_free_unpacked(rep, NULL);
    if (e == AOS_ERR_CONFLICT || e == AOS_ERR_NOT_FOUND)
        return 0;
    return e ? -1 : 1;
}

static void pruned(rt_result *res, const char *agent, const char *run, int named)
{
    char id[AOS_AGENT_ID_MAX + AGST_RUN_MAX + 2];
    snprintf(id, sizeof id, "%s%s%s", named ? "" : agent, named ? "" : "/", run);
    res->runs_total++;
    add_str(&res->runs, &res->nruns, RT_REPLY_IDS, id);
}

/* One agent: its expired finished runs but the current one. The current one (and the
 * pointer to it) goes only with the rest of an agent gone for good: not applied, nothing
 * of it unfinished, unreadable or kept, and its last activity (its last run's end, its
 * workspace's last change) that old; its workspace (if any) goes then too. named: asked
 * for by name (ids not prefixed with the agent). */
static void prune_agent(const char *agent, uint64_t keep_s, int named, rt_result *res)
{
    char why[AOS_ERRMSG_MAX] = "", cur[AGST_RUN_MAX] = "", cur_key[AOS_KEY_MAX + 1] = "";
    uint64_t cur_ver = 0, cur_rec_ver = 0, now = aos_now_ms(), last = 0, wsm = 0;
    int gone = !agents_in_use(agent), has_ws = agents_ws_mtime(agent, &wsm) == 0;
    int cur_seen = 0, cur_expired = 0;
    size_t unfinished = 0, kept = 0, unreadable = 0, read = 0;
    res->agents++;
    Aos__Storage__KvGetRequest g = AOS__STORAGE__KV_GET_REQUEST__INIT;
    g.key = bin(AOS_RUN_KEY_CURRENT);
    ProtobufCMessage *m = NULL;
    aos_err e = st_call("storage.kv.get", agent, &g.base, &aos__storage__kv_get_reply__descriptor,
                        &m, why, sizeof why);
    if (e == AOS_OK) {
        Aos__Storage__KvGetReply *gr = (Aos__Storage__KvGetReply *)m;
        if (gr->value.len && gr->value.len < sizeof cur &&
            agst_run_ok((const char *)gr->value.data, gr->value.len)) {
            memcpy(cur, gr->value.data, gr->value.len);
            cur[gr->value.len] = 0;
            cur_ver = gr->version;
        } else {
            unreadable++; /* not a run id: nothing of this agent's is judged unused */
        }
        protobuf_c_message_free_unpacked(m, NULL);
    } else if (e != AOS_ERR_NOT_FOUND) {
        add_err(res, agent, why);
        return;
    }
    char after[AOS_KEY_MAX + 1] = "";
    for (;;) {
        if (stopping())
            return;
        Aos__Storage__KvListRequest l = AOS__STORAGE__KV_LIST_REQUEST__INIT;
        l.prefix = bin(AOS_RUN_KEY_PREFIX);
        l.after = bin(after);
        l.limit = RT_PAGE;
        l.values = 1;
        if ((e = st_call("storage.kv.list", agent, &l.base,
                         &aos__storage__kv_list_reply__descriptor, &m, why, sizeof why))) {
            add_err(res, agent, why);
            return;
        }
        Aos__Storage__KvListReply *lr = (Aos__Storage__KvListReply *)m;
        for (size_t i = 0; i < lr->n_entries && !stopping(); i++) {
            Aos__Storage__KvEntry *en = lr->entries[i];
            char key[AOS_KEY_MAX + 1];
            agst_runrec rr;
            read++;
            if (en->key.len > AOS_KEY_MAX ||
                agst_runrec_decode(en->value.data, en->value.len, &rr, why, sizeof why)) {
                unreadable++;
                continue;
            }
            snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%s", rr.run);
            if (en->key.len != strlen(key) || memcmp(en->key.data, key, en->key.len)) {
                unreadable++; /* a record filed under another run's key: not ours to judge */
                continue;
            }
            int is_cur = cur[0] && !strcmp(cur, rr.run);
            cur_seen |= is_cur;
            if (rr.ended_ms > last)
                last = rr.ended_ms;
            if (rr.state == AOS_RUN_RUNNING) {
                unfinished++;
                continue;
            }
            if (!agst_runrec_expired(&rr, now, keep_s)) {
                kept++;
                continue;
            }
            if (is_cur) { /* a restart reads it: decided below, with the rest */
                cur_expired = 1;
                cur_rec_ver = en->version;
                snprintf(cur_key, sizeof cur_key, "%s", key);
                continue;
            }
            int d = drop_run(agent, key, rr.run, en->version, why, sizeof why);
            if (d < 0) {
                add_err(res, agent, why);
                kept++;
                continue;
            }
            if (!d) {
                kept++;
                continue;
            }
            pruned(res, agent, rr.run, named);
        }
        int more = lr->next.len && lr->next.len <= AOS_KEY_MAX && read < RT_RUNS_MAX;
        if (more) {
            memcpy(after, lr->next.data, lr->next.len);
            after[lr->next.len] = 0;
        } else if (lr->next.len) {
            kept++; /* records not read this pass: not all of its runs are known to be gone */
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (!more)
            break;
    }
    res->unreadable += unreadable;
    if (cur[0] && !cur_seen)
        unfinished++; /* "current" made, its record not yet (libaos writes it on resume) */
    if (wsm > last)
        last = wsm;
    uint64_t keep_ms = keep_s > UINT64_MAX / 1000u ? UINT64_MAX : keep_s * 1000u;
    if (!gone || unfinished || kept || unreadable || (cur[0] && !cur_expired) || last > now ||
        now - last < keep_ms)
        return;
    if (cur_expired) { /* its run, then the pointer to it */
        int d = drop_run(agent, cur_key, cur, cur_rec_ver, why, sizeof why);
        if (d <= 0) {
            if (d < 0)
                add_err(res, agent, why);
            return;
        }
        pruned(res, agent, cur, named);
        Aos__Storage__KvDeleteRequest k = AOS__STORAGE__KV_DELETE_REQUEST__INIT;
        k.key = bin(AOS_RUN_KEY_CURRENT);
        k.cas = 1;
        k.if_version = cur_ver;
        e = st_call("storage.kv.delete", agent, &k.base,
                    &aos__storage__kv_delete_reply__descriptor, &m, why, sizeof why);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        if (e == AOS_ERR_CONFLICT) /* a new run began meanwhile: the agent is back */
            return;
        if (e && e != AOS_ERR_NOT_FOUND) {
            add_err(res, agent, why);
            return;
        }
    }
    if (!has_ws)
        return;
    if ((e = agents_ws_remove(agent, why, sizeof why)) == AOS_OK)
        add_str(&res->ws, &res->nws, RT_REPLY_IDS, agent);
    else if (e != AOS_ERR_CONFLICT) /* applied meanwhile: it stays */
        add_err(res, agent, why);
}

static void prune(const char *agent, uint64_t keep_s, rt_result *res)
{
    if (agent[0]) {
        prune_agent(agent, keep_s, 1, res);
        return;
    }
    char **names = NULL, why[AOS_ERRMSG_MAX];
    size_t n = 0;
    if (agents_ws_names(&names, &n, why, sizeof why))
        add_err(res, "aosd", why);
    for (size_t i = 0; i < n && !stopping(); i++)
        prune_agent(names[i], keep_s, 0, res);
    free_strs(names, n);
}

static void said(const char *agent, const rt_result *res)
{
    if (res->runs_total || res->nws)
        aos_info("retention (run_retention_s %" PRIu64 "%s%s): %" PRIu64 " finished runs and "
                 "%zu workspaces removed",
                 R.keep_s, agent[0] ? ", agent " : "", agent, res->runs_total, res->nws);
    for (size_t i = 0; i < res->nerr; i++)
        aos_warn("retention: %s", res->errors[i]);
}

static void answer(kreply *k, const rt_result *res)
{
    Aos__Agent__PruneReply r = AOS__AGENT__PRUNE_REPLY__INIT;
    ProtobufCBinaryData *runs = calloc(res->nruns + 1, sizeof *runs),
                        *ws = calloc(res->nws + 1, sizeof *ws),
                        *errs = calloc(res->nerr + 1, sizeof *errs);
    for (size_t i = 0; runs && i < res->nruns; i++)
        runs[i] = bin(res->runs[i]);
    for (size_t i = 0; ws && i < res->nws; i++)
        ws[i] = bin(res->ws[i]);
    for (size_t i = 0; errs && i < res->nerr; i++)
        errs[i] = bin(res->errors[i]);
    r.runs = runs;
    r.n_runs = runs ? res->nruns : 0;
    r.runs_total = res->runs_total;
    r.workspaces = ws;
    r.n_workspaces = ws ? res->nws : 0;
    r.errors = errs;
    r.n_errors = errs ? res->nerr : 0;
    r.retention_s = R.keep_s;
    r.agents = res->agents;
    r.unreadable = res->unreadable;
    size_t len = aos__agent__prune_reply__get_packed_size(&r);
    uint8_t *buf = runs && ws && errs ? malloc(len ? len : 1) : NULL;
    if (buf) {
        aos__agent__prune_reply__pack(&r, buf);
        kreply_send(k, AOS_OK, NULL, buf, len);
    } else {
        kreply_send(k, AOS_ERR_NOMEM, "out of memory", NULL, 0);
    }
    free(buf);
    free(runs);
    free(ws);
    free(errs);
}

static void result_free(rt_result *res)
{
    free_strs(res->runs, res->nruns);
    free_strs(res->ws, res->nws);
    free_strs(res->errors, res->nerr);
    memset(res, 0, sizeof *res);
}

/* ---- the thread ----------------------------------------------------------------------------- */

static struct timespec mono_at(uint64_t ms)
{
    return (struct timespec){.tv_sec = (time_t)(ms / 1000u),
                             .tv_nsec = (long)(ms % 1000u) * 1000000L};
}

static void *run(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&R.mu);
    while (!R.stop) {
        uint64_t now = aos_mono_ms();
        if (!R.head && (!R.every_s || now < R.next_mono)) {
            if (R.every_s) {
                struct timespec ts = mono_at(R.next_mono);
                pthread_cond_timedwait(&R.cv, &R.mu, &ts);
            } else {
                pthread_cond_wait(&R.cv, &R.mu);
            }
            continue;
        }
        rt_job *j = R.head;
        if (j) {
            if (!(R.head = j->next))
                R.tail = NULL;
            R.njobs--;
        } else {
            R.next_mono = now + R.every_s * 1000u;
        }
        uint64_t keep = R.keep_s;
        pthread_mutex_unlock(&R.mu);
        rt_result res = {0};
        /* a periodic pass waits for the deployment: before it, every agent is in use */
        if (j || !agents_in_use(""))
            prune(j ? j->agent : "", keep, &res);
        said(j ? j->agent : "", &res);
        if (j) {
            answer(j->k, &res);
            free(j);
        }
        result_free(&res);
        pthread_mutex_lock(&R.mu);
    }
    /* asked meanwhile: told, not left waiting */
    for (rt_job *j = R.head, *nx; j; j = nx) {
        nx = j->next;
        kreply_send(j->k, AOS_ERR_UNAVAILABLE, "aosd is stopping", NULL, 0);
        free(j);
    }
    R.head = R.tail = NULL;
    R.ended = 1;
    pthread_cond_broadcast(&R.cv);
    pthread_mutex_unlock(&R.mu);
    return NULL;
}

aos_err retain_start(uint64_t keep_s, uint64_t interval_s, char *why, size_t whylen)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&R.cv, &ca);
    pthread_condattr_destroy(&ca);
    R.keep_s = keep_s;
    R.every_s = interval_s;
    R.next_mono = aos_mono_ms() + (interval_s < RT_FIRST_MAX_S ? interval_s : RT_FIRST_MAX_S) *
                                      1000u;
    int rc = pthread_create(&R.th, NULL, run, NULL);
    if (rc) {
        snprintf(why, whylen, "retention: pthread_create: %s", strerror(rc));
        return AOS_ERR_INTERNAL;
    }
    R.started = 1;
    return AOS_OK;
}

void retain_stop(uint64_t wait_ms)
{
    pthread_mutex_lock(&R.mu);
    if (!R.started) {
        pthread_mutex_unlock(&R.mu);
        return;
    }
    R.stop = 1;
    pthread_cond_broadcast(&R.cv);
    struct timespec ts = mono_at(aos_mono_ms() + wait_ms);
    while (!R.ended && pthread_cond_timedwait(&R.cv, &R.mu, &ts) == 0)
        ;
    int ended = R.ended;
    if (ended || wait_ms)
        R.started = 0;
    pthread_mutex_unlock(&R.mu);
    if (ended)
        pthread_join(R.th, NULL);
    else if (wait_ms)
        pthread_detach(R.th); /* in a storage call to a dying server: the exit ends it */
}

void retain_m_prune(const aos_env *req, const char *caller, kreply *k)
{
    (void)caller;
    Aos__Agent__PruneRequest *in =
        aos__agent__prune_request__unpack(NULL, req->payload_len, req->payload);
    rt_job *j = in ? calloc(1, sizeof *j) : NULL;
    int ok = in && (!in->agent.len || (in->agent.len < sizeof j->agent &&
                                       aos_agent_id_valid((const char *)in->agent.data,
                                                          in->agent.len)));
    if (ok && j)
        memcpy(j->agent, in->agent.data, in->agent.len);
    if (in)
        aos__agent__prune_request__free_unpacked(in, NULL);
    if (!ok || !j) {
        free(j);
        kreply_send(k, ok ? AOS_ERR_NOMEM : AOS_ERR_USAGE,
                    ok ? "out of memory"
                       : "kernel.agent.prune: payload is not a PruneRequest naming an agent",
                    NULL, 0);
        return;
    }
    j->k = k;
    pthread_mutex_lock(&R.mu);
    if (!R.started || R.stop || R.njobs >= RT_JOBS) {
        int busy = R.started && !R.stop;
        pthread_mutex_unlock(&R.mu);
        free(j);
        kreply_send(k, AOS_ERR_UNAVAILABLE,
                    busy ? "retention: prunes already queued; retry in a moment"
                         : "retention is not running: aosd is starting or stopping",
                    NULL, 0);
        return;
    }
    if (R.tail)
        R.tail->next = j;
    else
        R.head = j;
    R.tail = j;
    R.njobs++;
    pthread_cond_signal(&R.cv);
    pthread_mutex_unlock(&R.mu);
}
