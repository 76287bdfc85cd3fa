/* aos-agent: the built-in agent runner. Think (llm.chat on a prompt aos-memory assembles,
 * the todo list recited last) -> act (tool.run) -> observe, every step durable (aos/step.h).
 *
 * Everything comes from the manifest the kernel hands over (kernel.agent.self): the model,
 * the tools, budgets.steps (the step budget) and budgets.context_tokens; the goal and the
 * runner's options from its args:
 *   args: ["--goal", "TEXT", "--todo", "TEXT", "--repeat", "N", "--system", "TEXT",
 *          "--max-tokens", "N"]
 * (a bare first argument is the goal too). --repeat N is the loop breaker: the same tool
 * call with the same arguments N times in a row (3 by default) ends the run, failed, with
 * that reason. Besides the manifest's tools the model gets `todo_write`, which replaces the
 * todo list in aos-memory.
 *
 * A restarted aos-agent (after its crash or aosd's) opens the same run and replays it: the
 * recorded replies and tool results come back from the step log, and the pages it writes
 * to aos-memory carry request ids derived from (run, step), so a replay writes none twice.
 * A tool step that comes back INTERRUPTED (it started, its outcome was lost) is told to the
 * model as such: the model decides; nothing is run again.
 *
 * Exit status: 0 when the run finished (done, failed or interrupted: `aosctl agent runs`
 * says which and why) or at the kernel's stop; 1 on an error a restart may get past (the
 * run is resumed then); 2 for a manifest it cannot use.
 *
 * For the crash tests only: TEST_CRASH_AT_TURN=K[:tool] in its environment makes the
 * first incarnation SIGKILL itself right after turn K's LLM step (with :tool, after its
 * tool steps; with :recv, after a msg_recv step's record, before its ack) was recorded. */
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "aos/agent.h"
#include "aos/envelope.h"
#include "aos/memory.h"
#include "aos/msg.h"
#include "aos/step.h"
#include "aos/storage.h"
#include "llm.pb-c.h"
#include "memory.pb-c.h"
#include "tool.pb-c.h"

#define LLM_MS 300000u          /* an LLM step: the scheduler's queue, retries */
#define TOOL_MS 600000u         /* a tool step: the tool's own limit rules under it */
#define CALL_MS 30000u
#define STEPS_DEFAULT 50u
#define REPEAT_DEFAULT 3u
#define CONTEXT_DEFAULT 100000
#define RESULT_MAX 16384u       /* bytes of a tool result put into the context */
#define TEXT_MAX 65536u         /* bytes of an argument (goal, todo, system) */
#define TOOLS_MAX 256u
#define TODO_TOOL "todo_write"
#define MEM_STORE "memory_store"
#define MEM_SEARCH "memory_search"
#define MEM_SHARE "memory_share"
#define RUN_AGAIN_KEY "aos.run.again"   /* an operator's ask for a new run (kv, any value) */
#define RUN_MARK "[run %s begins]"      /* the first page of each run: its prompt starts there */
#define MSG_SEND "msg_send"
#define MSG_RECV "msg_recv"
#define RECV_DEFAULT_S 30
#define RECV_MAX_S 600
#define RECV_VISIBLE_MS 120000u /* a received message hidden while its step is recorded */
#define SEEN_MAX 512u           /* message ids of this run's receives, to drop redeliveries */

typedef struct cfg {
    char name[AOS_AGENT_ID_MAX + 1];
    char model[256];
    char *goal, *todo, *system;
    char **tools;
    size_t ntools;
    uint64_t steps, context_tokens;
    int context_by_kernel;      /* the manifest has budgets.context_tokens: aosd set it */
    unsigned repeat, max_tokens;
    size_t ntalks;              /* names in talks_to: the mail tools are offered when > 0 */
} cfg;

typedef struct agent {
    aos_agent *a;
    aos_conn *c;
    aos_run *run;
    cfg cf;
    Aos__Llm__Tool *ltools;     /* what the model is offered */
    Aos__Llm__Tool **lp;
    size_t nltools;
    char *tool_text;            /* their descriptions, owned here */
    Aos__Tool__ListReply *catalogue;
    long crash_turn;
    int crash_after_tool;       /* 1: after its tool steps; 2: a msg_recv's record, unacked */
    long turn;
    uint32_t call_index;        /* the tool call of the current LLM reply being acted on */
    char seen[SEEN_MAX][2 * AOS_MSG_ID_LEN + 1];   /* a ring of the ids received this run */
    size_t nseen;
} agent;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* ---- the manifest ------------------------------------------------------------------------ */

static char *dup_capped(const char *s)
{
    size_t n = strnlen(s, TEXT_MAX);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int parse_manifest(const char *json, cfg *cf, char *why, size_t whylen)
{
    json_error_t je;
    json_t *m = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(m)) {
        snprintf(why, whylen, "the manifest is not a JSON object: %s", je.text);
        json_decref(m);
        return -1;
    }
    const char *model = json_string_value(json_object_get(m, "model"));
    snprintf(cf->model, sizeof cf->model, "%s", model ? model : "");
    json_t *b = json_object_get(m, "budgets");
    json_int_t steps = json_integer_value(json_object_get(b, "steps"));
    json_int_t ctx = json_integer_value(json_object_get(b, "context_tokens"));
    cf->steps = steps > 0 ? (uint64_t)steps : STEPS_DEFAULT;
    cf->context_tokens = ctx > 0 ? (uint64_t)ctx : CONTEXT_DEFAULT;
    cf->context_by_kernel = ctx > 0;
    cf->repeat = REPEAT_DEFAULT;
    cf->max_tokens = 1024;
    json_t *tools = json_object_get(m, "tools");
    size_t nt = json_array_size(tools);
    if (nt > TOOLS_MAX)
        nt = TOOLS_MAX;
    cf->tools = calloc(nt + 1, sizeof *cf->tools);
    for (size_t i = 0; cf->tools && i < nt; i++) {
        const char *t = json_string_value(json_array_get(tools, i));
        if (t)
            cf->tools[cf->ntools++] = dup_capped(t);
    }
    cf->ntalks = json_array_size(json_object_get(m, "talks_to")) +
                 json_array_size(json_object_get(m, "subscribes"));
    json_t *args = json_object_get(m, "args");
    size_t na = json_array_size(args);
    int rc = 0;
    for (size_t i = 0; i < na && !rc; i++) {
        const char *k = json_string_value(json_array_get(args, i));
        const char *v = i + 1 < na ? json_string_value(json_array_get(args, i + 1)) : NULL;
        if (!k)
            continue;
        char **dst = !strcmp(k, "--goal") ? &cf->goal : !strcmp(k, "--todo") ? &cf->todo
                   : !strcmp(k, "--system") ? &cf->system : NULL;
        if (dst || !strcmp(k, "--repeat") || !strcmp(k, "--max-tokens")) {
            if (!v) {
                snprintf(why, whylen, "args: %s needs a value", k);
                rc = -1;
                break;
            }
            i++;
            if (dst) {
                free(*dst);
                *dst = dup_capped(v);
            } else {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 1000000) {
                    snprintf(why, whylen, "args: %s wants a positive number, not '%.40s'", k,
                             v);
                    rc = -1;
                } else if (!strcmp(k, "--repeat")) {
                    cf->repeat = (unsigned)n;
                } else {
                    cf->max_tokens = (unsigned)n;
                }
            }
        } else if (i == 0 && k[0] != '-') {
            cf->goal = dup_capped(k);
        } else {
            snprintf(why, whylen, "args: unknown option '%.60s' (--goal, --todo, --system, "
                     "--repeat, --max-tokens)", k);
            rc = -1;
        }
    }
    if (!rc && (!cf->goal || !*cf->goal)) {
        snprintf(why, whylen, "args: no goal (--goal TEXT)");
        rc = -1;
    }
    json_decref(m);
    return rc;
}

static void cfg_clear(cfg *cf)
{
    free(cf->goal);
    free(cf->todo);
    free(cf->system);
    for (size_t i = 0; i < cf->ntools; i++)
        free(cf->tools[i]);
    free(cf->tools);
}

/* ---- calls ----------------------------------------------------------------------------- */

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)p};
}

static ProtobufCBinaryData txt(const char *s)
{
    return bin(s, strlen(s));
}

/* The tools the model is offered: the manifest's, as aos-tool describes them, and
 * todo_write. */
static aos_err load_tools(agent *g, char *why, size_t whylen)
{
    Aos__Tool__ListRequest q = AOS__TOOL__LIST_REQUEST__INIT;
    q.agent = txt(g->cf.name);
    size_t n = aos__tool__list_request__get_packed_size(&q);
    uint8_t buf[512];
    if (n > sizeof buf) {
        snprintf(why, whylen, "the agent's name is too long");
        return AOS_ERR_USAGE;
    }
    aos__tool__list_request__pack(&q, buf);
    aos_call_opts o = {.timeout_ms = CALL_MS};
    aos_reply r;
    aos_err e = aos_call(g->c, &o, "tool.list", buf, n, &r);
    if (e) {
        snprintf(why, whylen, "tool.list: %.900s", r.error);
        aos_reply_clear(&r);
        return e;
    }
    g->catalogue = aos__tool__list_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!g->catalogue) {
        snprintf(why, whylen, "tool.list: not a ListReply");
        return AOS_ERR_PROTO;
    }
    g->ltools = calloc(g->cf.ntools + 8, sizeof *g->ltools);
    g->lp = calloc(g->cf.ntools + 8, sizeof *g->lp);
    if (!g->ltools || !g->lp)
        return AOS_ERR_NOMEM;
    for (size_t i = 0; i < g->cf.ntools; i++) {
        const Aos__Tool__Info *in = NULL;
        for (size_t k = 0; k < g->catalogue->n_tools; k++)
            if (g->catalogue->tools[k]->name.len == strlen(g->cf.tools[i]) &&
                !memcmp(g->catalogue->tools[k]->name.data, g->cf.tools[i],
                        strlen(g->cf.tools[i])))
                in = g->catalogue->tools[k];
        if (!in) {
            say("tool %s: not in aos-tool's catalogue; not offered", g->cf.tools[i]);
            continue;
        }
        Aos__Llm__Tool *t = &g->ltools[g->nltools];
        aos__llm__tool__init(t);
        t->name = in->name;
        t->description = in->summary;
        t->input_schema = in->args_schema;
        g->lp[g->nltools++] = t;
    }
    Aos__Llm__Tool *t = &g->ltools[g->nltools];
    aos__llm__tool__init(t);
    t->name = txt(TODO_TOOL);
    t->description = txt("replace your todo list (it is shown to you at the end of every "
                         "prompt): the whole new list as text");
    t->input_schema = txt("{\"type\":\"object\",\"properties\":{\"todo\":{\"type\":\"string\"}"
                          "},\"required\":[\"todo\"],\"additionalProperties\":false}");
    g->lp[g->nltools++] = t;
    static const char *const mem[][3] = {
        {MEM_STORE, "keep a text in one of your memory collections (full text search)",
         "{\"type\":\"object\",\"properties\":{\"collection\":{\"type\":\"string\"},"
         "\"id\":{\"type\":\"string\"},\"text\":{\"type\":\"string\"}},\"required\":["
         "\"collection\",\"text\"],\"additionalProperties\":false}"},
        {MEM_SEARCH, "search a memory collection: yours, or one another agent shared with you "
         "(owner: that agent)",
         "{\"type\":\"object\",\"properties\":{\"collection\":{\"type\":\"string\"},"
         "\"owner\":{\"type\":\"string\"},\"query\":{\"type\":\"string\"}},\"required\":["
         "\"query\"],\"additionalProperties\":false}"},
        {MEM_SHARE, "let another agent search one of your collections",
         "{\"type\":\"object\",\"properties\":{\"collection\":{\"type\":\"string\"},"
         "\"agent\":{\"type\":\"string\"}},\"required\":[\"collection\",\"agent\"],"
         "\"additionalProperties\":false}"},
        {MSG_RECV, "wait for the next message to you (from another agent or an operator), up "
         "to timeout_s seconds (30 by default): its sender and text, or that none came",
         "{\"type\":\"object\",\"properties\":{\"timeout_s\":{\"type\":\"integer\"}},"
         "\"additionalProperties\":false}"},
        {MSG_SEND, "send a text message to another agent (one your manifest's talks_to names)",
         "{\"type\":\"object\",\"properties\":{\"to\":{\"type\":\"string\"},"
         "\"text\":{\"type\":\"string\"}},\"required\":[\"to\",\"text\"],"
         "\"additionalProperties\":false}"},
    };
    for (size_t i = 0; i < sizeof mem / sizeof mem[0]; i++) {
        if (i >= 3 && !g->cf.ntalks)
            break;   /* mail tools only for an agent whose manifest names whom it talks to */
        t = &g->ltools[g->nltools];
        aos__llm__tool__init(t);
        t->name = txt(mem[i][0]);
        t->description = txt(mem[i][1]);
        t->input_schema = txt(mem[i][2]);
        g->lp[g->nltools++] = t;
    }
    return AOS_OK;
}

/* Pages into aos-memory under a request id derived from (run, position, salt): a replay
 * appends nothing twice. */
static aos_err page(agent *g, uint64_t pos, uint32_t salt, int kind, const char *source,
                    const void *text, size_t len)
{
    uint8_t rid[AOS_ID_LEN];
    aos_step_request_id(aos_run_id(g->run), pos, 1000u + salt, rid);
    aos_mem_page p = {.kind = kind, .source = source, .text = text, .len = len};
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_err e = AOS_OK;
    for (int tries = 0; tries < 30; tries++) {
        aos_call_opts o = {.request_id = rid, .timeout_ms = CALL_MS};
        e = aos_mem_append(g->c, &o, &p, 1, NULL, why, sizeof why);
        if (e != AOS_ERR_UNAVAILABLE && e != AOS_ERR_TIMEOUT)
            break;
        usleep(200000);
    }
    if (e)
        say("memory: %s: %s", aos_err_name(e), why);
    return e;
}

static aos_err build_chat(void *arg, uint8_t **buf, size_t *len)
{
    agent *g = arg;
    aos_mem_assemble_opts ao = {.model = g->cf.model[0] ? g->cf.model : NULL};
    Aos__Memory__AssembleReply *pr = NULL;
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_err e = AOS_OK;
    for (int tries = 0; tries < 30; tries++) {
        aos_call_opts o = {.timeout_ms = CALL_MS};
        e = aos_mem_assemble(g->c, &o, &ao, &pr, why, sizeof why);
        if (e != AOS_ERR_UNAVAILABLE && e != AOS_ERR_TIMEOUT)
            break;
        usleep(200000);
    }
    if (e) {
        say("memory.assemble: %s: %s", aos_err_name(e), why);
        return e;
    }
    /* The window holds the agent's earlier runs too: this run's prompt is its system
     * messages (the same goal: told once) and what came from this run's first page on. */
    char mark[AOS_RUN_ID_MAX + 32];
    snprintf(mark, sizeof mark, RUN_MARK, aos_run_id(g->run));
    size_t from = 0, ml = strlen(mark);
    for (size_t i = 0; i < pr->n_messages; i++) {
        const Aos__Llm__Message *m = pr->messages[i];
        for (size_t k = 0; m && k < m->n_content; k++)
            if (m->content[k]->text.len >= ml &&
                memmem(m->content[k]->text.data, m->content[k]->text.len, mark, ml))
                from = i;
    }
    Aos__Llm__Message **kept = calloc(pr->n_messages + 1, sizeof *kept);
    if (!kept) {
        aos_mem_prompt_free(pr);
        return AOS_ERR_NOMEM;
    }
    size_t nk = 0;
    uint32_t bp = 0;
    for (size_t i = 0; i < pr->n_messages; i++) {
        Aos__Llm__Message *m = pr->messages[i];
        int keep = i >= from;
        if (!keep && m && m->role == AOS__LLM__ROLE__SYSTEM) {
            keep = 1;   /* unless the same text is kept already */
            for (size_t j = 0; j < nk && keep; j++)
                if (kept[j]->role == AOS__LLM__ROLE__SYSTEM && kept[j]->n_content == 1 &&
                    m->n_content == 1 &&
                    kept[j]->content[0]->text.len == m->content[0]->text.len &&
                    !memcmp(kept[j]->content[0]->text.data, m->content[0]->text.data,
                            m->content[0]->text.len))
                    keep = 0;
        }
        if (keep && m) {
            kept[nk++] = m;
            if (i < pr->cache_breakpoint)
                bp = (uint32_t)nk;
        }
    }
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    q.model = txt(g->cf.model);
    q.n_messages = nk;
    q.messages = kept;
    q.cache_breakpoint = bp;
    q.n_tools = g->nltools;
    q.tools = g->lp;
    q.max_tokens = g->cf.max_tokens;
    *len = aos__llm__chat_request__get_packed_size(&q);
    *buf = malloc(*len ? *len : 1);
    if (!*buf) {
        free(kept);
        aos_mem_prompt_free(pr);
        return AOS_ERR_NOMEM;
    }
    aos__llm__chat_request__pack(&q, *buf);
    free(kept);
    aos_mem_prompt_free(pr);
    return AOS_OK;
}

static void maybe_crash(agent *g, long turn, int after_tool)
{
    if (g->crash_turn == turn && g->crash_after_tool == after_tool &&
        aos_agent_incarnation(g->a) == 1) {
        say("test: SIGKILL at turn %ld%s", turn, after_tool == 2 ? " before the ack"
            : after_tool ? " after its tools" : "");
        fflush(stdout);
        raise(SIGKILL);
    }
}

static int finish(agent *g, aos_run_state st, const char *reason)
{
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_err e = aos_run_finish(g->run, st, reason, why, sizeof why);
    if (e) {
        say("run %s: recording its end: %s: %s", aos_run_id(g->run), aos_err_name(e), why);
        return 1;
    }
    say("run %s %s: %s", aos_run_id(g->run), aos_run_state_name(st), reason);
    return 0;
}

/* One printable line of at most max bytes of d (for the logs). */
static void line_of(char *out, size_t cap, const uint8_t *d, size_t n, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n && i < max && k + 1 < cap; i++)
        out[k++] = d[i] < 0x20 || d[i] == 0x7f ? ' ' : (char)d[i];
    out[k] = 0;
}

static char *fmt_dup(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_dup(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        out = NULL;
    va_end(ap);
    return out;
}

/* memory_store and memory_share are writes aos-memory makes idempotent by request id (one
 * derived from the step: a replay writes nothing twice); memory_search reads what other
 * agents may have changed since, so its answer is a durable step of its own. */
static char *memory_tool(agent *g, const char *name, const Aos__Llm__ToolCall *tc,
                         uint64_t pos, int *status)
{
    json_error_t je;
    json_t *a = json_loadb((const char *)tc->arguments.data, tc->arguments.len, 0, &je);
    const char *col = json_string_value(json_object_get(a, "collection"));
    const char *txt_ = json_string_value(json_object_get(a, "text"));
    const char *id = json_string_value(json_object_get(a, "id"));
    const char *owner = json_string_value(json_object_get(a, "owner"));
    const char *query = json_string_value(json_object_get(a, "query"));
    const char *who = json_string_value(json_object_get(a, "agent"));
    char *res = NULL;
    uint8_t *buf = NULL;
    size_t n;
    aos_reply r;
    memset(&r, 0, sizeof r);
    *status = AOS_OK;
    if (!strcmp(name, MEM_SEARCH)) {
        if (!query) {
            res = fmt_dup("%s wants a query", name);
            goto out;
        }
        Aos__Memory__SearchRequest q = AOS__MEMORY__SEARCH_REQUEST__INIT;
        q.query = txt(query);
        q.collection = txt(col ? col : "");
        q.owner = txt(owner ? owner : "");
        q.mode = AOS__MEMORY__MODE__MODE_FTS;
        q.limit = 5;
        n = aos__memory__search_request__get_packed_size(&q);
        if (!(buf = malloc(n ? n : 1)))
            goto nomem;
        aos__memory__search_request__pack(&q, buf);
        aos_err e = aos_step_call(g->run, "memory.search", "memory.search", AOS_STEP_AFTER, buf,
                                  n, NULL, NULL, CALL_MS, &r);
        if (e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_CONFLICT ||
            e == AOS_ERR_PROTO) {
            *status = e;
            say("%s: %s: %s", name, aos_err_name(e), r.error);
            goto out;
        }
        if (e) {
            res = fmt_dup("error %s: %s", aos_err_name(e), r.error);
            goto out;
        }
        Aos__Memory__SearchReply *sr =
            aos__memory__search_reply__unpack(NULL, r.payload_len, r.payload);
        size_t cap = 64, k = 0;
        for (size_t i = 0; sr && i < sr->n_hits; i++)
            cap += sr->hits[i]->text.len + sr->hits[i]->doc_id.len + 16;
        if (!(res = malloc(cap))) {
            if (sr)
                aos__memory__search_reply__free_unpacked(sr, NULL);
            goto nomem;
        }
        k = (size_t)snprintf(res, cap, "%zu hits\n", sr ? sr->n_hits : 0);
        for (size_t i = 0; sr && i < sr->n_hits; i++)
            k += (size_t)snprintf(res + k, cap - k, "[%.*s] %.*s\n",
                                  (int)sr->hits[i]->doc_id.len,
                                  (const char *)sr->hits[i]->doc_id.data,
                                  (int)sr->hits[i]->text.len,
                                  (const char *)sr->hits[i]->text.data);
        say("%s %s: %zu hits", name, col ? col : "", sr ? sr->n_hits : 0);
        if (sr)
            aos__memory__search_reply__free_unpacked(sr, NULL);
        goto out;
    }
    uint8_t rid[AOS_ID_LEN];
    aos_step_request_id(aos_run_id(g->run), pos, 2000u + g->call_index, rid);
    const char *method;
    if (!strcmp(name, MEM_STORE)) {
        if (!col || !txt_) {
            res = fmt_dup("%s wants a collection and a text", name);
            goto out;
        }
        Aos__Memory__Doc d = AOS__MEMORY__DOC__INIT, *dp[1] = {&d};
        d.doc_id = txt(id ? id : "");
        d.text = txt(txt_);
        d.trust = AOS__MEMORY__TRUST__TRUST_OWN;
        Aos__Memory__StoreRequest q = AOS__MEMORY__STORE_REQUEST__INIT;
        q.collection = txt(col);
        q.n_docs = 1;
        q.docs = dp;
        q.no_embed = 1;
        n = aos__memory__store_request__get_packed_size(&q);
        if (!(buf = malloc(n ? n : 1)))
            goto nomem;
        aos__memory__store_request__pack(&q, buf);
        method = "memory.store";
    } else {
        if (!col || !who) {
            res = fmt_dup("%s wants a collection and an agent", name);
            goto out;
        }
        Aos__Memory__ShareRequest q = AOS__MEMORY__SHARE_REQUEST__INIT;
        q.collection = txt(col);
        q.agent = txt(who);
        n = aos__memory__share_request__get_packed_size(&q);
        if (!(buf = malloc(n ? n : 1)))
            goto nomem;
        aos__memory__share_request__pack(&q, buf);
        method = "memory.share";
    }
    aos_err e = AOS_OK;
    for (int tries = 0; tries < 30; tries++) {
        aos_reply_clear(&r);
        aos_call_opts o = {.request_id = rid, .timeout_ms = CALL_MS};
        e = aos_call(g->c, &o, method, buf, n, &r);
        if (e != AOS_ERR_UNAVAILABLE && e != AOS_ERR_TIMEOUT)
            break;
        usleep(200000);
    }
    if (e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT) {
        *status = e;
        say("%s: %s: %s", name, aos_err_name(e), r.error);
        goto out;
    }
    res = e ? fmt_dup("error %s: %s", aos_err_name(e), r.error)
            : fmt_dup("%s: done", name);
    say("%s %s: %s", name, col, e ? aos_err_name(e) : "ok");
    goto out;
nomem:
    *status = AOS_ERR_NOMEM;
out:
    aos_reply_clear(&r);
    free(buf);
    json_decref(a);
    return res;
}

/* ---- mail ------------------------------------------------------------------------------ */

static int seen_has(const agent *g, const char *id)
{
    size_t n = g->nseen < SEEN_MAX ? g->nseen : SEEN_MAX;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(g->seen[i], id))
            return 1;
    return 0;
}

static void seen_add(agent *g, const char *id)
{
    if (!seen_has(g, id))
        snprintf(g->seen[g->nseen++ % SEEN_MAX], sizeof g->seen[0], "%s", id);
}

typedef struct recv_ctx {
    agent *g;
    uint32_t timeout_ms;
    aos_msg *m;                 /* the live delivery, acked once its step is recorded */
} recv_ctx;

static void hex_of(char *out, const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
    out[2 * n] = 0;
}

/* The receive of a msg_recv step: the next message not handled in this run yet (a
 * redelivery of one whose step is recorded, its ack lost at a crash, is acked and
 * skipped), its outcome as JSON; none in time is the outcome TIMEOUT. */
static aos_err recv_fn(void *arg, aos_reply *rep)
{
    recv_ctx *x = arg;
    agent *g = x->g;
    char why[AOS_ERRMSG_MAX + 1] = "";
    uint64_t t0 = aos_mono_ms();
    for (;;) {
        uint64_t now = aos_mono_ms();
        uint32_t left = now - t0 >= x->timeout_ms ? 0 : x->timeout_ms - (uint32_t)(now - t0);
        aos_msg *m = NULL;
        aos_err e = left ? aos_msg_recv(g->a, left, RECV_VISIBLE_MS, &m, why, sizeof why)
                         : AOS_ERR_TIMEOUT;
        if (e == AOS_ERR_TIMEOUT) {
            rep->status = AOS_ERR_TIMEOUT;
            snprintf(rep->error, sizeof rep->error, "no message came within %u s",
                     x->timeout_ms / 1000u);
            return AOS_OK;
        }
        if (e) {
            snprintf(rep->error, sizeof rep->error, "%.900s", why);
            return e;   /* unrecorded: CANCELLED (a stop), or storage away */
        }
        if (seen_has(g, m->id_hex)) {
            say("msg_recv: %s from %s was handled in this run already: acked again",
                m->id_hex, m->from);
            aos_msg_ack(g->a, m, why, sizeof why);
            aos_msg_free(m);
            continue;
        }
        char rc[33];
        hex_of(rc, m->receipt, sizeof m->receipt);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s%, s:s, s:I, s:s}", "id", m->id_hex,
                              "from", m->from, "kind", m->kind, "topic", m->topic, "text",
                              (const char *)m->body, m->len, "queue", m->queue, "qid",
                              (json_int_t)m->qid, "receipt", rc);
        char *d = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!d) {
            /* a body jansson will not take (not UTF-8): given back, dead-lettered later */
            say("msg_recv: %s from %s: its text cannot be handed to the model: given back",
                m->id_hex, m->from);
            aos_msg_nack(g->a, m, 1000, why, sizeof why);
            aos_msg_free(m);
            continue;
        }
        rep->payload = (uint8_t *)d;
        rep->payload_len = strlen(d);
        rep->status = AOS_OK;
        x->m = m;
        return AOS_OK;
    }
}

/* msg_recv: a durable step (aos_step_do): the message is recorded in the step log, then
 * acked, so a crash in between gives the recorded message on replay and its redelivery
 * is dropped; msg_send: the message id derived from the step, so a replay or a retry is
 * the one message the kernel stored already. */
static char *mail_tool(agent *g, const char *name, const Aos__Llm__ToolCall *tc,
                       uint64_t pos, int *status)
{
    json_error_t je;
    json_t *a = json_loadb((const char *)tc->arguments.data, tc->arguments.len, 0, &je);
    char why[AOS_ERRMSG_MAX + 1] = "";
    char *res = NULL;
    *status = AOS_OK;
    if (!strcmp(name, MSG_SEND)) {
        const char *to = json_string_value(json_object_get(a, "to"));
        const char *text = json_string_value(json_object_get(a, "text"));
        if (!to || !text) {
            res = fmt_dup("%s wants {\"to\": an agent, \"text\": the message}", name);
            goto out;
        }
        uint8_t id[AOS_ID_LEN];
        aos_step_request_id(aos_run_id(g->run), pos, 3000u + g->call_index, id);
        aos_msg_send_opts o = {.id = id};
        uint8_t got[AOS_MSG_ID_LEN];
        aos_err e = AOS_OK;
        size_t tl = strnlen(text, AOS_MSG_BODY_MAX);
        for (int tries = 0; tries < 30; tries++) {
            e = aos_msg_send(g->a, to, text, tl, &o, got, why, sizeof why);
            if (e != AOS_ERR_UNAVAILABLE && e != AOS_ERR_TIMEOUT)
                break;
            usleep(200000);
        }
        if (e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_NOMEM) {
            *status = e;
            say("%s to %s: %s: %s", name, to, aos_err_name(e), why);
            goto out;
        }
        char hx[2 * AOS_MSG_ID_LEN + 1];
        hex_of(hx, got, sizeof got);
        res = e ? fmt_dup("error %s: %s", aos_err_name(e), why)
                : fmt_dup("sent to %s (message %s)", to, hx);
        say("%s to %s: %s", name, to, e ? aos_err_name(e) : hx);
        goto out;
    }
    json_int_t ts = json_integer_value(json_object_get(a, "timeout_s"));
    if (ts <= 0)
        ts = RECV_DEFAULT_S;
    if (ts > RECV_MAX_S)
        ts = RECV_MAX_S;
    recv_ctx x = {g, (uint32_t)ts * 1000u, NULL};
    aos_reply r;
    aos_err e = aos_step_do(g->run, "msg.recv", recv_fn, &x, &r);
    if (e == AOS_ERR_TIMEOUT) {
        res = fmt_dup("no message came within %lld s", (long long)ts);
        say("%s: none within %lld s", name, (long long)ts);
    } else if (e) {
        *status = e;   /* unrecorded (a stop, storage away) or the log diverged: stop */
        say("%s: %s: %s", name, aos_err_name(e), r.error);
    } else {
        json_t *m = json_loadb((const char *)r.payload, r.payload_len, 0, &je);
        const char *id = json_string_value(json_object_get(m, "id"));
        const char *from = json_string_value(json_object_get(m, "from"));
        const char *kind = json_string_value(json_object_get(m, "kind"));
        const char *text = json_string_value(json_object_get(m, "text"));
        if (!id || !from || !text) {
            *status = AOS_ERR_PROTO;
            say("%s: the recorded message cannot be read", name);
        } else {
            if (x.m)
                maybe_crash(g, g->turn, 2);
            aos_msg del;
            memset(&del, 0, sizeof del);
            if (x.m) {
                del = *x.m;   /* the live delivery's handle */
            } else {
                /* replayed: its recorded delivery handle (stale when it was delivered again:
                 * then the redelivery is dropped by id) */
                const char *q = json_string_value(json_object_get(m, "queue"));
                const char *rc = json_string_value(json_object_get(m, "receipt"));
                snprintf(del.queue, sizeof del.queue, "%s", q ? q : "inbox");
                del.qid = (uint64_t)json_integer_value(json_object_get(m, "qid"));
                for (size_t i = 0; rc && i < sizeof del.receipt && rc[2 * i] && rc[2 * i + 1];
                     i++) {
                    unsigned v;
                    if (sscanf(rc + 2 * i, "%2x", &v) == 1)
                        del.receipt[i] = (uint8_t)v;
                }
            }
            del.body = NULL;
            aos_err ae = AOS_OK;
            for (int tries = 0; tries < 30; tries++) {
                ae = aos_msg_ack(g->a, &del, why, sizeof why);
                if (ae != AOS_ERR_UNAVAILABLE && ae != AOS_ERR_TIMEOUT)
                    break;
                usleep(200000);
            }
            if (ae && ae != AOS_ERR_NOT_FOUND)
                say("%s: ack of %s: %s: %s (it comes again and is dropped by id)", name, id,
                    aos_err_name(ae), why);
            seen_add(g, id);
            res = fmt_dup("message from %s (%s): %s", from, kind ? kind : "msg", text);
            char l[160];
            line_of(l, sizeof l, (const uint8_t *)text, strlen(text), 120);
            say("%s%s: from %s: %s", name, x.m ? "" : " (replayed)", from, l);
        }
        json_decref(m);
    }
    aos_reply_clear(&r);
    aos_msg_free(x.m);
out:
    json_decref(a);
    return res;
}

/* The tool call's result as text for the model; *status its outcome. */
static char *act(agent *g, const Aos__Llm__ToolCall *tc, uint64_t pos, int *status)
{
    char name[80];
    line_of(name, sizeof name, tc->name.data, tc->name.len, 64);
    if (!strcmp(name, TODO_TOOL)) {
        json_error_t je;
        json_t *a = json_loadb((const char *)tc->arguments.data, tc->arguments.len, 0, &je);
        const char *todo = json_string_value(json_object_get(a, "todo"));
        char *res;
        if (todo && *todo) {
            *status = page(g, pos, 100u + g->call_index, AOS_MEM_TODO, NULL, todo,
                           strnlen(todo, TEXT_MAX));
            res = strdup(*status ? "the todo list could not be written" : "todo list replaced");
        } else {
            *status = AOS_ERR_USAGE;
            res = strdup("todo_write wants {\"todo\": \"the whole new list\"}");
        }
        json_decref(a);
        return res;
    }
    if (!strcmp(name, MEM_STORE) || !strcmp(name, MEM_SEARCH) || !strcmp(name, MEM_SHARE))
        return memory_tool(g, name, tc, pos, status);
    if (!strcmp(name, MSG_SEND) || !strcmp(name, MSG_RECV))
        return mail_tool(g, name, tc, pos, status);
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    q.agent = txt(g->cf.name);
    q.tool = tc->name;
    q.args = tc->arguments.len ? tc->arguments : txt("{}");
    size_t n = aos__tool__run_request__get_packed_size(&q);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        *status = AOS_ERR_NOMEM;
        return NULL;
    }
    aos__tool__run_request__pack(&q, buf);
    aos_reply r;
    aos_err e = aos_step_tool(g->run, buf, n, TOOL_MS, &r);
    free(buf);
    *status = e;
    char *res = NULL;
    if (e == AOS_OK) {
        Aos__Tool__RunReply *rr = aos__tool__run_reply__unpack(NULL, r.payload_len, r.payload);
        if (rr && rr->result_json.len) {
            size_t k = rr->result_json.len < RESULT_MAX ? rr->result_json.len : RESULT_MAX;
            res = malloc(k + 1);
            if (res) {
                memcpy(res, rr->result_json.data, k);
                res[k] = 0;
            }
            char l[160];
            line_of(l, sizeof l, rr->stdout_data.data, rr->stdout_data.len, 120);
            say("tool %s: exit %d: %s", name, rr->exit_status, l);
        } else {
            res = strdup("{\"error\":\"the tool's reply could not be read\"}");
        }
        if (rr)
            aos__tool__run_reply__free_unpacked(rr, NULL);
    } else if (e == AOS_ERR_INTERRUPTED) {
        say("tool %s: INTERRUPTED: %s", name, r.error);
        size_t k = strlen(r.error) + 200;
        res = malloc(k);
        if (res)
            snprintf(res, k, "interrupted: the tool started but its outcome was lost (%s). "
                     "It was not run again: decide whether to run it again or go on.",
                     r.error);
    } else if (e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_NOMEM ||
               e == AOS_ERR_CONFLICT || e == AOS_ERR_PROTO) {
        say("tool %s: %s: %s", name, aos_err_name(e), r.error);   /* the caller stops */
    } else {
        /* refused, bad arguments...: an outcome the model can act on, recorded as such */
        size_t k = strlen(r.error) + 64;
        res = malloc(k);
        if (res)
            snprintf(res, k, "error %s: %s", aos_err_name(e), r.error);
        say("tool %s: %s: %s", name, aos_err_name(e), r.error);
        *status = AOS_OK;
    }
    aos_reply_clear(&r);
    return res;
}

/* The assistant's turn as a page of text: what it said and what it called. */
static char *assistant_text(const Aos__Llm__Message *m, size_t *len)
{
    size_t cap = 64;
    for (size_t i = 0; i < m->n_content; i++)
        cap += m->content[i]->text.len + 1;
    for (size_t i = 0; i < m->n_tool_calls; i++)
        cap += m->tool_calls[i]->name.len + m->tool_calls[i]->arguments.len + 16;
    char *t = malloc(cap);
    if (!t)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < m->n_content; i++) {
        memcpy(t + k, m->content[i]->text.data, m->content[i]->text.len);
        k += m->content[i]->text.len;
        t[k++] = '\n';
    }
    for (size_t i = 0; i < m->n_tool_calls; i++)
        k += (size_t)snprintf(t + k, cap - k, "[called %.*s %.*s]\n",
                              (int)m->tool_calls[i]->name.len,
                              (const char *)m->tool_calls[i]->name.data,
                              (int)m->tool_calls[i]->arguments.len,
                              (const char *)m->tool_calls[i]->arguments.data);
    if (!k)
        k = (size_t)snprintf(t, cap, "(nothing)");
    t[k] = 0;
    *len = k;
    return t;
}

static int run_loop(agent *g)
{
    char why[AOS_ERRMSG_MAX + 1] = "";
    char *last_call = NULL;
    unsigned repeat = 0;
    int rc = 1;
    for (long turn = 1;; turn++) {
        /* before the kernel's step boundary, which stops an agent past budgets.steps: the
         * run ends with its reason rather than stopping resumable */
        if ((uint64_t)turn > g->cf.steps) {
            char reason[128];
            snprintf(reason, sizeof reason, "the step budget of %llu steps is spent",
                     (unsigned long long)g->cf.steps);
            rc = finish(g, AOS_RUN_FAILED, reason);
            goto out;
        }
        g->turn = turn;
        /* a turn replayed from the log runs nothing: not a step boundary, and the kernel's
         * budgets.steps (per run) counted it when it ran */
        aos_agent_action act_now = AOS_AGENT_CONTINUE;
        aos_err e = aos_run_replaying(g->run) ? AOS_OK
                                              : aos_agent_step(g->a, &act_now, why, sizeof why);
        if (e == AOS_ERR_REFUSED) { /* the kernel's budget: the run ends with its reason */
            say("kernel.agent.step: %s", why);
            rc = finish(g, AOS_RUN_FAILED, why);
            goto out;
        }
        if (e) {
            say("kernel.agent.step: %s: %s", aos_err_name(e), why);
            goto out;
        }
        if (act_now == AOS_AGENT_STOP) {
            say("stop asked: run %s stays resumable at step %llu", aos_run_id(g->run),
                (unsigned long long)aos_run_position(g->run));
            rc = 0;
            goto out;
        }
        int replaying = aos_run_replaying(g->run);
        aos_reply r;
        e = aos_step_llm(g->run, build_chat, g, LLM_MS, &r);
        uint64_t pos = aos_run_position(g->run);
        if (e) {
            say("turn %ld: llm: %s: %s", turn, aos_err_name(e), r.error);
            if (e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_NOMEM ||
                e == AOS_ERR_RATE_LIMITED || e == AOS_ERR_CANCELLED) {
                aos_reply_clear(&r);
                goto out;   /* unrecorded: a restart asks again */
            }
            char reason[AOS_ERRMSG_MAX + 64];
            snprintf(reason, sizeof reason, "the model's call failed: %s: %.300s",
                     aos_err_name(e), r.error);
            aos_reply_clear(&r);
            rc = finish(g, AOS_RUN_FAILED, reason);
            goto out;
        }
        Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        if (!cr || !cr->message) {
            if (cr)
                aos__llm__chat_reply__free_unpacked(cr, NULL);
            rc = finish(g, AOS_RUN_FAILED, "the model's reply could not be read");
            goto out;
        }
        size_t al;
        char *at = assistant_text(cr->message, &al);
        if (!at || page(g, pos, 1, AOS_MEM_ASSISTANT, NULL, at, al)) {
            free(at);
            aos__llm__chat_reply__free_unpacked(cr, NULL);
            goto out;
        }
        char l[200];
        line_of(l, sizeof l, (const uint8_t *)at, al, 160);
        say("turn %ld%s: %s", turn, replaying ? " (replayed)" : "", l);
        free(at);
        maybe_crash(g, turn, 0);
        if (cr->message->n_tool_calls == 0) {
            char reason[AOS_RUN_REASON_MAX];
            line_of(reason, sizeof reason,
                    cr->message->n_content ? cr->message->content[0]->text.data : NULL,
                    cr->message->n_content ? cr->message->content[0]->text.len : 0, 300);
            aos__llm__chat_reply__free_unpacked(cr, NULL);
            rc = finish(g, AOS_RUN_DONE, reason[0] ? reason : "the model had nothing to add");
            goto out;
        }
        for (size_t i = 0; i < cr->message->n_tool_calls; i++) {
            const Aos__Llm__ToolCall *tc = cr->message->tool_calls[i];
            /* the loop breaker: the same call, arguments and all, N times in a row */
            size_t kl = tc->name.len + 1 + tc->arguments.len;
            char *key = malloc(kl + 1);
            if (!key) {
                aos__llm__chat_reply__free_unpacked(cr, NULL);
                goto out;
            }
            memcpy(key, tc->name.data, tc->name.len);
            key[tc->name.len] = '\t';
            memcpy(key + tc->name.len + 1, tc->arguments.data, tc->arguments.len);
            key[kl] = 0;
            repeat = last_call && !strcmp(last_call, key) ? repeat + 1 : 1;
            free(last_call);
            last_call = key;
            if (repeat >= g->cf.repeat) {
                char reason[AOS_RUN_REASON_MAX];
                snprintf(reason, sizeof reason, "loop: %.*s was called %u times in a row with "
                         "the same arguments (%.*s)", (int)(tc->name.len > 64 ? 64 : tc->name.len),
                         (const char *)tc->name.data, repeat,
                         (int)(tc->arguments.len > 200 ? 200 : tc->arguments.len),
                         (const char *)tc->arguments.data);
                aos__llm__chat_reply__free_unpacked(cr, NULL);
                rc = finish(g, AOS_RUN_FAILED, reason);
                goto out;
            }
            int st;
            g->call_index = (uint32_t)i;
            char *res = act(g, tc, aos_run_position(g->run) + 1, &st);
            if (!res) {
                aos__llm__chat_reply__free_unpacked(cr, NULL);
                if (st == AOS_ERR_CANCELLED) {
                    say("stop asked while waiting for mail: run %s stays resumable",
                        aos_run_id(g->run));
                    rc = 0;
                }
                goto out;   /* unrecorded or unreadable: a restart resumes here */
            }
            char src[96];
            snprintf(src, sizeof src, "tool:%.*s", (int)(tc->name.len > 64 ? 64 : tc->name.len),
                     (const char *)tc->name.data);
            /* keyed by the step that produced it (todo_write takes none: its LLM step's) */
            uint64_t rp = aos_run_position(g->run);
            e = page(g, rp, 10u + (uint32_t)i, AOS_MEM_TOOL_RESULT, src, res, strlen(res));
            free(res);
            if (e) {
                aos__llm__chat_reply__free_unpacked(cr, NULL);
                goto out;
            }
        }
        aos__llm__chat_reply__free_unpacked(cr, NULL);
        maybe_crash(g, turn, 1);
    }
out:
    free(last_call);
    return rc;
}

int main(int argc, char **argv)
{
    (void)argc, (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    agent g;
    memset(&g, 0, sizeof g);
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_err e = aos_agent_open(&g.a, why, sizeof why);
    if (e) {
        say("aos-agent: %s: %s", aos_err_name(e), why);
        return 1;
    }
    g.c = aos_agent_conn(g.a);
    snprintf(g.cf.name, sizeof g.cf.name, "%s", aos_agent_name(g.a));
    int rc = 2;
    if (parse_manifest(aos_agent_manifest(g.a), &g.cf, why, sizeof why)) {
        say("aos-agent %s: %s", g.cf.name, why);
        goto out;
    }
    const char *ct = getenv("TEST_CRASH_AT_TURN");
    if (ct && *ct) {
        char *end;
        g.crash_turn = strtol(ct, &end, 10);
        g.crash_after_tool = !strcmp(end, ":tool") ? 1 : !strcmp(end, ":recv") ? 2 : 0;
    }
    rc = 1;
    int resumed = 0;
    if ((e = aos_run_open(g.c, NULL, 0, &g.run, &resumed, why, sizeof why))) {
        say("aos-agent %s: the run: %s: %s", g.cf.name, aos_err_name(e), why);
        goto out;
    }
    /* A finished run stays finished across restarts, unless an operator asked for a new
     * one (kv RUN_AGAIN_KEY): then a fresh run, and the ask is deleted once it is open (a
     * crash in between resumes the fresh run, which is current by then). */
    aos_call_opts ko = {.timeout_ms = CALL_MS};
    uint8_t *again = NULL;
    size_t againl = 0;
    aos_err ge = aos_kv_get(g.c, &ko, RUN_AGAIN_KEY, &again, &againl, NULL, why, sizeof why);
    free(again);
    if (ge != AOS_OK && ge != AOS_ERR_NOT_FOUND) {
        say("aos-agent %s: %s: %s: %s", g.cf.name, RUN_AGAIN_KEY, aos_err_name(ge), why);
        goto out;
    }
    if (aos_run_state_of(g.run) != AOS_RUN_RUNNING && ge == AOS_OK) {
        say("run %s finished before (%s); a new run is asked", aos_run_id(g.run),
            aos_run_state_name(aos_run_state_of(g.run)));
        aos_run_close(g.run);
        g.run = NULL;
        if ((e = aos_run_open(g.c, NULL, 1, &g.run, &resumed, why, sizeof why))) {
            say("aos-agent %s: a new run: %s: %s", g.cf.name, aos_err_name(e), why);
            goto out;
        }
        resumed = 0;
    }
    if (ge == AOS_OK && aos_run_state_of(g.run) == AOS_RUN_RUNNING) {
        e = aos_kv_delete(g.c, &ko, RUN_AGAIN_KEY, NULL, why, sizeof why);
        if (e && e != AOS_ERR_NOT_FOUND) {
            say("aos-agent %s: %s: %s: %s", g.cf.name, RUN_AGAIN_KEY, aos_err_name(e), why);
            goto out;
        }
    }
    if (aos_run_state_of(g.run) != AOS_RUN_RUNNING) {
        say("run %s finished before (%s): nothing to do", aos_run_id(g.run),
            aos_run_state_name(aos_run_state_of(g.run)));
        rc = 0;
        goto out;
    }
    if ((e = aos_agent_set_run(g.a, aos_run_id(g.run)))) { /* budgets.steps counts per run */
        say("aos-agent %s: aos_agent_set_run: %s", g.cf.name, aos_err_name(e));
        goto out;
    }
    say("run %s %s (model %s, %zu tools, %llu steps at most)", aos_run_id(g.run),
        resumed ? "resumed: its recorded steps replay" : "started", g.cf.model, g.cf.ntools,
        (unsigned long long)g.cf.steps);
    if ((e = load_tools(&g, why, sizeof why))) {
        say("aos-agent %s: %s: %s", g.cf.name, aos_err_name(e), why);
        goto out;
    }
    /* a manifest's budget is aosd's to set (an agent's own set is refused); without one
     * the runner picks its default */
    aos_call_opts bo = {.timeout_ms = CALL_MS};
    if (!g.cf.context_by_kernel &&
        (e = aos_mem_budget_set(g.c, &bo, (int64_t)g.cf.context_tokens, 0, why, sizeof why)))
        say("memory budget: %s: %s (going on with the default)", aos_err_name(e), why);
    /* the run's opening pages: position 0, each its own salt */
    char sys[TEXT_MAX + 512];
    snprintf(sys, sizeof sys, "%s\n\nYour goal: %s\nAct through the tools you are given, one "
             "step at a time; keep your todo list current with " TODO_TOOL "; when the goal "
             "is reached, answer with a short summary and call no tool.",
             g.cf.system ? g.cf.system : "You are an agent running on aos.", g.cf.goal);
    char mark[AOS_RUN_ID_MAX + 32];
    snprintf(mark, sizeof mark, RUN_MARK, aos_run_id(g.run));
    if (page(&g, 0, 4, AOS_MEM_USER, NULL, mark, strlen(mark)) ||
        page(&g, 0, 1, AOS_MEM_SYSTEM, NULL, sys, strlen(sys)) ||
        page(&g, 0, 2, AOS_MEM_TODO, NULL, g.cf.todo ? g.cf.todo : "1. work towards the goal",
             strlen(g.cf.todo ? g.cf.todo : "1. work towards the goal")) ||
        page(&g, 0, 3, AOS_MEM_USER, NULL, g.cf.goal, strlen(g.cf.goal)))
        goto out;
    rc = run_loop(&g);
out:
    aos_run_close(g.run);
    if (g.catalogue)
        aos__tool__list_reply__free_unpacked(g.catalogue, NULL);
    free(g.ltools);
    free(g.lp);
    cfg_clear(&g.cf);
    aos_agent_close(g.a);
    return rc;
}
