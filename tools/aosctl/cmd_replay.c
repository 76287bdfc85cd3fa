/* aosctl audit replay AGENT RUN: one run step by step from the audit log — what the agent
 * saw (the LLM request's messages), answered (reply text, tool calls, usage), did (tool
 * runs: argv, exit) and got back (their output) — with each content fetched by hash and
 * re-hashed here: a content missing from the store or altered in it is shown as such.
 *
 * Records come a page at a time (audit.replay: by step, then seq) and each record's
 * contents are fetched, checked, printed and freed before the next: memory stays one page
 * of records plus one record's contents (at most 2 MiB, the emit cap), whatever the run's
 * length. With --json the document is built whole, so its contents' text is capped
 * (REPLAY_JSON_TEXT_MAX in all; past it a content keeps its state and size, not its
 * text). Exit 0 when every content listed checks out, 1 when one is missing or altered. */
#include "aosctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.pb-c.h"
#include "contents.h"
#include "prooffile.h"
#include "record.h"

#define REPLAY_PAGE 200u                    /* records per audit.replay */
#define REPLAY_RECORDS_MAX 100000u          /* records gathered into one --json document */
#define REPLAY_JSON_TEXT_MAX (64u << 20)    /* content text in one --json document */
#define REPLAY_SHOWN 2000u                  /* characters of one content on a terminal */
#define FETCH_MAX 64u                       /* hashes per audit.contents (its cap) */

/* ---- one record's contents -------------------------------------------------------------- */

typedef enum { CS_OK, CS_MISSING, CS_ALTERED, CS_NOT_STORED } cstate;

static const char *cstate_name(cstate s)
{
    static const char *const n[] = {"ok", "missing", "altered", "not_stored"};
    return n[s];
}

typedef struct rcontents {
    size_t n;
    uint8_t hash[AUDIT_CONTENTS_LIST_MAX][AUDIT_CONTENT_HASH_LEN];
    cstate state[AUDIT_CONTENTS_LIST_MAX];
    const uint8_t *body[AUDIT_CONTENTS_LIST_MAX];
    size_t len[AUDIT_CONTENTS_LIST_MAX];
    Aos__Audit__ContentsReply *reply[AUDIT_CONTENTS_LIST_MAX]; /* what the bodies point in */
    size_t nreply;
    int malformed;                          /* the body's "contents" is not a hash list */
} rcontents;

static void rc_clear(rcontents *k)
{
    for (size_t i = 0; i < k->nreply; i++)
        aos__audit__contents_reply__free_unpacked(k->reply[i], NULL);
    k->nreply = 0;
    k->malformed = 0;
    k->n = 0;
}

/* Fetch and check every content the body lists. 0, or the aos_err with why. */
static aos_err rc_load(ctl_ctx *c, rcontents *k, const uint8_t *body, size_t len, char *why,
                       size_t whylen)
{
    rc_clear(k);
    int n = audit_contents_listed(body, len, k->hash, AUDIT_CONTENTS_LIST_MAX);
    if (n < 0) {
        k->malformed = 1;
        return AOS_OK;
    }
    k->n = (size_t)n;
    int pending[AUDIT_CONTENTS_LIST_MAX];
    for (size_t i = 0; i < k->n; i++) {
        k->state[i] = CS_MISSING;
        pending[i] = 1;
    }
    for (;;) {
        ProtobufCBinaryData hs[FETCH_MAX];
        size_t idx[FETCH_MAX], m = 0;
        for (size_t i = 0; i < k->n && m < FETCH_MAX; i++)
            if (pending[i]) {
                hs[m] = (ProtobufCBinaryData){AUDIT_CONTENT_HASH_LEN, k->hash[i]};
                idx[m++] = i;
            }
        if (!m)
            return AOS_OK;
        Aos__Audit__ContentsRequest q = AOS__AUDIT__CONTENTS_REQUEST__INIT;
        q.n_hashes = m;
        q.hashes = hs;
        aos_reply r;
        aos_err e = ctl_call(c, NULL, "audit.contents", &q.base, &r);
        if (e != AOS_OK) {
            snprintf(why, whylen, "%s", r.error);
            aos_reply_clear(&r);
            return e;
        }
        Aos__Audit__ContentsReply *cr =
            aos__audit__contents_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        if (!cr || k->nreply >= AUDIT_CONTENTS_LIST_MAX) {
            if (cr)
                aos__audit__contents_reply__free_unpacked(cr, NULL);
            snprintf(why, whylen, "audit.contents: aos-audit sent a malformed ContentsReply");
            return AOS_ERR_PROTO;
        }
        k->reply[k->nreply++] = cr;
        size_t got = 0;
        for (size_t j = 0; j < cr->n_contents; j++) {
            const Aos__Audit__Content *ct = cr->contents[j];
            size_t at = SIZE_MAX;
            for (size_t t = 0; t < m && at == SIZE_MAX; t++)
                if (ct->hash.len == AUDIT_CONTENT_HASH_LEN && pending[idx[t]] &&
                    !memcmp(ct->hash.data, k->hash[idx[t]], AUDIT_CONTENT_HASH_LEN))
                    at = idx[t];
            if (at == SIZE_MAX || ct->body.len > AUDIT_CONTENT_MAX) {
                snprintf(why, whylen, "audit.contents: aos-audit sent a content that was not "
                         "asked for, twice, or over 1 MiB");
                return AOS_ERR_PROTO;
            }
            /* the store is not trusted: its body must still hash to its name */
            uint8_t h[AUDIT_CONTENT_HASH_LEN];
            audit_content_hash(ct->body.data, ct->body.len, h);
            k->state[at] = memcmp(h, k->hash[at], sizeof h) ? CS_ALTERED : CS_OK;
            k->body[at] = ct->body.data;
            k->len[at] = ct->body.len;
            pending[at] = 0;
            got++;
        }
        if (!cr->truncated) {
            for (size_t t = 0; t < m; t++)
                pending[idx[t]] = 0; /* not returned: not stored (CS_MISSING stays) */
        } else if (!got) {
            snprintf(why, whylen, "audit.contents: a truncated reply with no content");
            return AOS_ERR_PROTO;
        }
    }
}

/* The state of the content named by hex (64 digits) in this record: not listed means
 * the producer did not store it (a cap). */
static cstate rc_find(const rcontents *k, const char *hex, const uint8_t **b, size_t *n)
{
    uint8_t h[AUDIT_CONTENT_HASH_LEN];
    *b = NULL;
    *n = 0;
    if (!hex || strlen(hex) != 2 * AUDIT_CONTENT_HASH_LEN ||
        aos_unhex(hex, strlen(hex), h, sizeof h) != 0)
        return CS_NOT_STORED;
    for (size_t i = 0; i < k->n; i++)
        if (!memcmp(k->hash[i], h, sizeof h)) {
            *b = k->body[i];
            *n = k->len[i];
            return k->state[i];
        }
    return CS_NOT_STORED;
}

/* ---- the terminal view ------------------------------------------------------------------ */

static void put_content(const rcontents *k, const char *hex, const char *indent)
{
    const uint8_t *b;
    size_t n;
    cstate s = rc_find(k, hex, &b, &n);
    char h16[17] = "?";
    if (hex)
        snprintf(h16, sizeof h16, "%.16s", hex);
    if (s == CS_NOT_STORED) {
        printf("%s[content %s... not stored: over the producer's caps]\n", indent, h16);
        return;
    }
    if (s == CS_MISSING) {
        printf("%s[content %s... MISSING from the store]\n", indent, h16);
        return;
    }
    if (s == CS_ALTERED)
        printf("%s[content %s... ALTERED: the store's body does not hash to its name]\n",
               indent, h16);
    char *out = malloc(REPLAY_SHOWN * 4 + 1);
    if (!out)
        return;
    int cut;
    /* one line per content line, indented; control characters shown as '?' */
    size_t from = 0, shown = 0;
    while (from < n && shown < REPLAY_SHOWN) {
        const uint8_t *nl = memchr(b + from, '\n', n - from);
        size_t end = nl ? (size_t)(nl - b) : n;
        ctl_clean(out, REPLAY_SHOWN * 4 + 1, b + from, end - from, REPLAY_SHOWN - shown, &cut);
        printf("%s%s%s\n", indent, out, cut ? "..." : "");
        shown += end - from + 1;
        from = end + 1;
    }
    if (from < n)
        printf("%s... (%zu bytes in all)\n", indent, n);
    free(out);
}

static const char *role_name(json_int_t r)
{
    static const char *const n[] = {"?", "system", "user", "assistant", "tool"};
    return r >= 0 && r <= 4 ? n[r] : "?";
}

static void put_text(const char *label, const char *s)
{
    char out[4096];
    int cut;
    ctl_clean(out, sizeof out, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0, 1000, &cut);
    printf("%s%s%s\n", label, out, cut ? "..." : "");
}

static void show_request(const json_t *d, const rcontents *k)
{
    put_text("    model: ", json_string_value(json_object_get(d, "model")));
    printf("    saw:\n");
    const json_t *msgs = json_object_get(d, "messages");
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        const json_t *m = json_array_get(msgs, i);
        printf("      [%s]%s\n", role_name(json_integer_value(json_object_get(m, "role"))),
               json_is_string(json_object_get(m, "tool_call_id")) ? " (a tool's result)" : "");
        const json_t *parts = json_object_get(m, "content");
        for (size_t j = 0; j < json_array_size(parts); j++)
            put_content(k, json_string_value(json_object_get(json_array_get(parts, j),
                                                             "blake2b")),
                        "        ");
        const json_t *calls = json_object_get(m, "tool_calls");
        for (size_t j = 0; j < json_array_size(calls); j++) {
            const json_t *tc = json_array_get(calls, j);
            put_text("        tool call: ", json_string_value(json_object_get(tc, "name")));
            put_content(k, json_string_value(json_object_get(tc, "args_blake2b")),
                        "          ");
        }
    }
}

static void show_reply(const json_t *d, const rcontents *k)
{
    if (json_is_string(json_object_get(d, "error"))) {
        put_text("    failed: ", json_string_value(json_object_get(d, "error")));
        return;
    }
    printf("    answered:\n");
    const json_t *text = json_object_get(d, "text");
    for (size_t i = 0; i < json_array_size(text); i++) {
        const json_t *t = json_array_get(text, i);
        if (json_is_string(t))
            put_text("      ", json_string_value(t));
        else
            put_content(k, json_string_value(json_object_get(t, "blake2b")), "      ");
    }
    const json_t *calls = json_object_get(d, "tool_calls");
    for (size_t i = 0; i < json_array_size(calls); i++) {
        const json_t *tc = json_array_get(calls, i);
        put_text("      tool call: ", json_string_value(json_object_get(tc, "name")));
        put_text("        arguments: ", json_string_value(json_object_get(tc, "arguments")));
    }
    const json_t *u = json_object_get(d, "usage");
    printf("    usage: %" JSON_INTEGER_FORMAT " in, %" JSON_INTEGER_FORMAT " out\n",
           json_integer_value(json_object_get(u, "input_tokens")),
           json_integer_value(json_object_get(u, "output_tokens")));
}

static void show_head(const char *label, const json_t *h, const json_t *total,
                      const rcontents *k)
{
    printf("      %s (%" JSON_INTEGER_FORMAT " bytes):\n", label, json_integer_value(total));
    if (h)
        put_content(k, json_string_value(json_object_get(h, "blake2b")), "        ");
}

static void show_tool(const json_t *d, const rcontents *k)
{
    put_text("    did: tool ", json_string_value(json_object_get(d, "tool")));
    const json_t *argv = json_object_get(d, "argv_blake2b");
    for (size_t i = 0; i < json_array_size(argv); i++) {
        printf("      argv[%zu]:\n", i);
        put_content(k, json_string_value(json_array_get(argv, i)), "        ");
    }
    printf("    exit %" JSON_INTEGER_FORMAT ", signal %" JSON_INTEGER_FORMAT ", %s\n",
           json_integer_value(json_object_get(d, "exit_status")),
           json_integer_value(json_object_get(d, "signal")),
           json_is_string(json_object_get(d, "error"))
               ? json_string_value(json_object_get(d, "error"))
               : "?");
    printf("    came back:\n");
    show_head("stdout", json_object_get(d, "stdout_head"), json_object_get(d, "stdout_bytes"),
              k);
    show_head("stderr", json_object_get(d, "stderr_head"), json_object_get(d, "stderr_bytes"),
              k);
}

static void show_mcp(const json_t *d, const rcontents *k)
{
    put_text("    did: MCP tool ", json_string_value(json_object_get(d, "tool")));
    put_text("      of server ", json_string_value(json_object_get(d, "server")));
    put_text("    ended: ", json_string_value(json_object_get(d, "error")));
    printf("    came back:\n");
    put_content(k, json_string_value(json_object_get(d, "result_blake2b")), "      ");
}

static void show_record(const Aos__Audit__Record *w, const json_t *d, const rcontents *k)
{
    char kind[64], method[128];
    ctl_clean(kind, sizeof kind, (const uint8_t *)w->kind, strlen(w->kind), 32, NULL);
    ctl_clean(method, sizeof method, (const uint8_t *)w->method, strlen(w->method), 64, NULL);
    printf("  seq %" PRIu64 "  %-12s  %-16s  %s  %" PRIu64 "us\n", w->seq, kind,
           method[0] ? method : "-",
           aos_err_valid(w->status) ? aos_err_name(w->status) : "status?", w->latency_us);
    if (k->malformed)
        printf("    [its \"contents\" list is malformed]\n");
    if (!d)
        return;
    if (!strcmp(w->kind, "llm.request"))
        show_request(d, k);
    else if (!strcmp(w->kind, "llm.reply"))
        show_reply(d, k);
    else if (!strcmp(w->kind, "tool.run"))
        show_tool(d, k);
    else if (!strcmp(w->kind, "tool.mcp"))
        show_mcp(d, k);
}

/* ---- the JSON view ------------------------------------------------------------------------ */

static const char *record_role(const char *kind)
{
    if (!strcmp(kind, "llm.request"))
        return "saw";
    if (!strcmp(kind, "llm.reply"))
        return "answered";
    if (!strcmp(kind, "tool.run") || !strcmp(kind, "tool.mcp"))
        return "did";
    if (!strcmp(kind, "syscall"))
        return "syscall";
    return "other";
}

static json_t *contents_json(const rcontents *k, size_t *budget)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < k->n; i++) {
        char hex[2 * AUDIT_CONTENT_HASH_LEN + 1];
        aos_hex(k->hash[i], AUDIT_CONTENT_HASH_LEN, hex);
        json_t *o = json_pack("{s:s,s:s,s:I}", "hash", hex, "state", cstate_name(k->state[i]),
                              "len", (json_int_t)k->len[i]);
        if (o && k->state[i] != CS_MISSING && k->len[i] <= *budget) {
            int text = aos_utf8_valid(k->body[i], k->len[i]);
            json_object_set_new(o, text ? "text" : "hex",
                                text ? json_stringn(k->len[i] ? (const char *)k->body[i] : "",
                                                    k->len[i])
                                     : audit_jhex(k->body[i], k->len[i]));
            *budget -= k->len[i];
        }
        if (!o || json_array_append_new(a, o)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *record_doc(const Aos__Audit__Record *w, json_t *d, const rcontents *k,
                          size_t *budget)
{
    json_t *cs = contents_json(k, budget);
    if (!cs)
        return NULL;
    json_t *details = d ? json_incref(d)
                        : (aos_utf8_valid(w->body.data, w->body.len)
                               ? json_stringn(w->body.len ? (const char *)w->body.data : "",
                                              w->body.len)
                               : audit_jhex(w->body.data, w->body.len));
    return json_pack("{s:I,s:I,s:s,s:s,s:s,s:i,s:s,s:I,s:o,s:o,s:b}", "seq",
                     (json_int_t)w->seq, "time_ns", (json_int_t)w->time_ns, "kind", w->kind,
                     "role", record_role(w->kind), "method", w->method, "status",
                     (int)w->status, "status_name",
                     aos_err_valid(w->status) ? aos_err_name(w->status) : "unknown",
                     "latency_us", (json_int_t)w->latency_us, "details", details, "contents",
                     cs, "contents_malformed", k->malformed);
}

/* ---- the command ------------------------------------------------------------------------ */

static int record_fit(const Aos__Audit__Record *w)
{
    return w->kind && w->agent && w->run && w->method && aos_utf8_valid(w->kind, strlen(w->kind)) &&
           aos_utf8_valid(w->agent, strlen(w->agent)) && aos_utf8_valid(w->run, strlen(w->run)) &&
           aos_utf8_valid(w->method, strlen(w->method)) && w->seq <= INT64_MAX &&
           w->time_ns <= INT64_MAX && w->latency_us <= INT64_MAX &&
           w->body.len <= AUDIT_BODY_MAX;
}

static int check_run_arg(const char *val, char *why, size_t whylen)
{
    size_t n = strlen(val);
    if (n && n <= AUDIT_RUN_MAX && aos_utf8_valid(val, n))
        return 0;
    snprintf(why, whylen, "RUN wants a run id, 1 to %u bytes of UTF-8", AUDIT_RUN_MAX);
    return -1;
}

static int cmd_replay(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "AGENT"), *run = ctl_str(v, "RUN");
    Aos__Audit__ReplayRequest q = AOS__AUDIT__REPLAY_REQUEST__INIT;
    q.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    q.run = (ProtobufCBinaryData){strlen(run), (uint8_t *)run};
    q.limit = REPLAY_PAGE;
    rcontents *k = calloc(1, sizeof *k);
    json_t *steps = c->json ? json_array() : NULL, *cur = NULL;
    if (!k || (c->json && !steps)) {
        free(k);
        json_decref(steps);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    }
    size_t budget = REPLAY_JSON_TEXT_MAX;
    uint64_t nrec = 0, problems = 0;
    int have_step = 0, complete = 1;
    uint32_t step = 0;
    char why[AOS_ERRMSG_MAX + 64];
    int rc = 0;
    for (;;) {
        aos_reply r;
        aos_err e = ctl_call(c, NULL, "audit.replay", &q.base, &r);
        if (e != AOS_OK) {
            rc = ctl_fail_reply(c, &r);
            goto out;
        }
        Aos__Audit__TailReply *t = aos__audit__tail_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        if (!t || t->n_records > REPLAY_PAGE) {
            if (t)
                aos__audit__tail_reply__free_unpacked(t, NULL);
            rc = ctl_fail(c, AOS_ERR_PROTO, "audit.replay: aos-audit sent a malformed reply");
            goto out;
        }
        for (size_t i = 0; i < t->n_records; i++) {
            const Aos__Audit__Record *w = t->records[i];
            /* each after the one before, in (step, seq), and of the run asked for */
            if (!record_fit(w) || strcmp(w->agent, agent) || strcmp(w->run, run) ||
                w->step < q.after_step ||
                (w->step == q.after_step && w->seq <= q.after_seq)) {
                aos__audit__tail_reply__free_unpacked(t, NULL);
                rc = ctl_fail(c, AOS_ERR_PROTO, "audit.replay: aos-audit sent a record that "
                              "is malformed, out of order or of another run");
                goto out;
            }
            q.after_step = w->step;
            q.after_seq = w->seq;
            if ((e = rc_load(c, k, w->body.data, w->body.len, why, sizeof why)) != AOS_OK) {
                aos__audit__tail_reply__free_unpacked(t, NULL);
                rc = ctl_fail(c, e, "%s", why);
                goto out;
            }
            for (size_t j = 0; j < k->n; j++)
                problems += k->state[j] == CS_MISSING || k->state[j] == CS_ALTERED;
            problems += (uint64_t)k->malformed;
            json_t *d = json_loadb((const char *)w->body.data, w->body.len, 0, NULL);
            if (d && !json_is_object(d)) {
                json_decref(d);
                d = NULL;
            }
            if (!have_step || w->step != step) {
                step = w->step;
                have_step = 1;
                if (c->json) {
                    cur = json_array();
                    if (!cur || json_array_append_new(steps, json_pack("{s:I,s:o}", "step",
                                                                       (json_int_t)step,
                                                                       "records", cur))) {
                        json_decref(d);
                        aos__audit__tail_reply__free_unpacked(t, NULL);
                        rc = ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
                        goto out;
                    }
                } else {
                    printf("step %" PRIu32 "\n", step);
                }
            }
            if (c->json) {
                json_t *o = record_doc(w, d, k, &budget);
                if (!o || json_array_append_new(cur, o)) {
                    json_decref(d);
                    aos__audit__tail_reply__free_unpacked(t, NULL);
                    rc = ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
                    goto out;
                }
            } else {
                show_record(w, d, k);
            }
            json_decref(d);
            nrec++;
        }
        int more = t->n_records == REPLAY_PAGE;
        aos__audit__tail_reply__free_unpacked(t, NULL);
        if (!c->json)
            fflush(stdout);
        if (!more)
            break;
        if (c->json && nrec >= REPLAY_RECORDS_MAX) {
            complete = 0;
            break;
        }
    }
    if (!nrec) {
        rc = ctl_fail(c, AOS_ERR_NOT_FOUND, "no record of agent %s, run %s in the audit log",
                      agent, run);
        goto out;
    }
    if (c->json) {
        json_t *doc = json_pack("{s:s,s:s,s:I,s:I,s:b,s:o}", "agent", agent, "run", run,
                                "records", (json_int_t)nrec, "problems",
                                (json_int_t)problems, "complete", complete, "steps", steps);
        steps = NULL;
        rc = ctl_print_json(c, doc);
    } else {
        printf("%" PRIu64 " records", nrec);
        if (problems)
            printf("; %" PRIu64 " contents MISSING or ALTERED (audit verify names the first)",
                   problems);
        printf("\n");
    }
    if (!rc && problems)
        rc = 1;
out:
    json_decref(steps);
    rc_clear(k);
    free(k);
    return rc;
}

static const char replay_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
    "\"type\":\"object\",\"description\":\"exit 0 when every content the records list is "
    "stored and hashes to its name, 1 when one is missing or altered\","
    "\"required\":[\"agent\",\"run\",\"records\",\"problems\",\"complete\",\"steps\"],"
    "\"properties\":{\"agent\":{\"type\":\"string\"},\"run\":{\"type\":\"string\"},"
    "\"records\":{\"type\":\"integer\",\"minimum\":1},"
    "\"problems\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"contents missing or "
    "altered, and malformed contents lists\"},"
    "\"complete\":{\"type\":\"boolean\",\"description\":\"false when the run held more than "
    "100000 records (the first ones are given)\"},"
    "\"steps\":{\"type\":\"array\",\"description\":\"by step number\",\"items\":{"
    "\"type\":\"object\",\"required\":[\"step\",\"records\"],\"properties\":{"
    "\"step\":{\"type\":\"integer\",\"minimum\":0},"
    "\"records\":{\"type\":\"array\",\"description\":\"the step's records by seq\","
    "\"items\":{\"type\":\"object\",\"required\":[\"seq\",\"time_ns\",\"kind\",\"role\","
    "\"method\",\"status\",\"status_name\",\"latency_us\",\"details\",\"contents\","
    "\"contents_malformed\"],\"properties\":{\"seq\":{\"type\":\"integer\",\"minimum\":1},"
    "\"time_ns\":{\"type\":\"integer\",\"minimum\":0},\"kind\":{\"type\":\"string\"},"
    "\"role\":{\"type\":\"string\",\"enum\":[\"saw\",\"answered\",\"did\",\"syscall\","
    "\"other\"],\"description\":\"saw: an LLM request (its messages); answered: its reply "
    "(text, tool calls, usage); did: a tool run (argv, exit, and what came back: its "
    "output heads)\"},\"method\":{\"type\":\"string\"},\"status\":{\"type\":\"integer\"},"
    "\"status_name\":{\"type\":\"string\"},\"latency_us\":{\"type\":\"integer\","
    "\"minimum\":0},\"details\":{\"description\":\"the record's body: its JSON object, "
    "naming contents by their blake2b; a string when it is not JSON\"},"
    "\"contents\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"hash\","
    "\"state\",\"len\"],\"properties\":{\"hash\":{\"type\":\"string\",\"pattern\":"
    "\"^[0-9a-f]{64}$\"},\"state\":{\"type\":\"string\",\"enum\":[\"ok\",\"missing\","
    "\"altered\"]},\"len\":{\"type\":\"integer\",\"minimum\":0},\"text\":{\"type\":\"string\","
    "\"description\":\"the content when UTF-8 (left out past 64 MiB of text in all)\"},"
    "\"hex\":{\"type\":\"string\",\"description\":\"the content when not UTF-8\"}}}},"
    "\"contents_malformed\":{\"type\":\"boolean\"}}}}}}}}}";

static const ctl_arg replay_args[] = {
    {.name = "AGENT", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "the agent whose run it is"},
    {.name = "RUN", .required = 1, .check = check_run_arg,
     .summary = "the run id (from agent runs or audit tail)"},
};

static const ctl_cmd replay_cmds[] = {
    {"audit replay", "one run step by step from the audit log: what the agent saw, answered, "
     "did and got back, each content fetched by hash and re-hashed (missing or altered ones "
     "are shown so, and exit 1)", CTL_ARGS(replay_args), replay_out, cmd_replay},
};

const ctl_group ctl_group_audit_replay = {replay_cmds, sizeof replay_cmds / sizeof replay_cmds[0]};
