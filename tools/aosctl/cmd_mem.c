/* aosctl mem show AGENT, mem search AGENT QUERY, mem stats: an agent's context window as
 * pages, ranked archival hits with each method's score, and aos-memory's own figures. */
#include "aosctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos.pb-c.h"
#include "aos/envelope.h"
#include "memory.pb-c.h"

static const char *const kinds[] = {"?", "system", "tools", "pinned", "todo", "user",
                                    "assistant", "tool_result", "document", "summary"};
static const char *const trusts[] = {"?", "own", "user", "untrusted"};

static const char *kind_name(int k) { return k >= 1 && k <= 9 ? kinds[k] : "?"; }
static const char *trust_name(int t) { return t >= 1 && t <= 3 ? trusts[t] : "?"; }

static json_t *jbytes(ProtobufCBinaryData b)
{
    if (!aos_utf8_valid(b.data, b.len))
        return json_string("?");
    return json_stringn((const char *)b.data, b.len);
}

static int cmd_show(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "AGENT");
    Aos__Memory__ShowRequest q = AOS__MEMORY__SHOW_REQUEST__INIT;
    aos_reply r;
    if (ctl_call(c, agent, "memory.show", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Memory__ShowReply *s = aos__memory__show_reply__unpack(NULL, r.payload_len,
                                                                r.payload);
    aos_reply_clear(&r);
    if (!s)
        return ctl_fail(c, AOS_ERR_PROTO, "memory.show: aos-memory sent a malformed ShowReply");
    if (c->json) {
        json_t *pages = json_array();
        for (size_t i = 0; i < s->n_pages; i++) {
            const Aos__Memory__PageInfo *p = s->pages[i];
            json_array_append_new(pages, json_pack(
                "{s:I, s:s, s:I, s:I, s:b, s:b, s:s, s:o, s:o, s:I, s:I, s:I}",
                "id", (json_int_t)p->page_id, "kind", kind_name(p->kind),
                "tokens", (json_int_t)p->tokens, "bytes", (json_int_t)p->bytes,
                "resident", p->resident, "pinned", p->pinned, "trust", trust_name(p->trust),
                "source", jbytes(p->source), "summary", jbytes(p->summary),
                "uses", (json_int_t)p->uses, "created_ms", (json_int_t)p->created_ms,
                "last_use_ms", (json_int_t)p->last_use_ms));
        }
        json_t *doc = json_pack(
            "{s:s, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
            "agent", agent, "budget", (json_int_t)s->budget, "reserve", (json_int_t)s->reserve,
            "tokens", (json_int_t)s->tokens, "pages", pages, "faults", (json_int_t)s->faults,
            "evictions", (json_int_t)s->evictions, "bytes_out", (json_int_t)s->bytes_out,
            "bytes_in", (json_int_t)s->bytes_in, "compactions", (json_int_t)s->compactions,
            "assemblies", (json_int_t)s->assemblies,
            "prefix_reuse_pct", (json_int_t)s->prefix_reuse_pct,
            "reported_tokens", (json_int_t)s->reported_tokens,
            "tokens_per_byte", s->tokens_per_byte);
        aos__memory__show_reply__free_unpacked(s, NULL);
        return ctl_print_json(c, doc);
    }
    printf("%s: budget %" PRIu64 " tokens (reserve %" PRIu64 "), window %" PRIu64
           " tokens; %" PRIu64 " faults, %" PRIu64 " evictions, prefix reuse %u%%\n",
           agent, s->budget, s->reserve, s->tokens, s->faults, s->evictions,
           s->prefix_reuse_pct);
    printf("%8s  %-11s %7s  %-8s %-6s %-9s %s\n", "PAGE", "KIND", "TOKENS", "STATE", "PIN",
           "TRUST", "SOURCE / SUMMARY");
    for (size_t i = 0; i < s->n_pages; i++) {
        const Aos__Memory__PageInfo *p = s->pages[i];
        char src[160], sum[200];
        ctl_clean(src, sizeof src, p->source.data, p->source.len, 40, NULL);
        ctl_clean(sum, sizeof sum, p->summary.data, p->summary.len, 60, NULL);
        printf("%8" PRIu64 "  %-11s %7u  %-8s %-6s %-9s %s%s%s\n", p->page_id,
               kind_name(p->kind), p->tokens, p->resident ? "resident" : "swapped",
               p->pinned ? "pinned" : "", trust_name(p->trust), src,
               src[0] && sum[0] ? " / " : "", sum);
    }
    aos__memory__show_reply__free_unpacked(s, NULL);
    return 0;
}

static const char *const modes[] = {"hybrid", "fts", "vector", NULL};

static int cmd_search(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "AGENT"), *query = ctl_str(v, "QUERY");
    const char *mode = ctl_str(v, "--mode"), *coll = ctl_str(v, "--collection");
    const char *owner = ctl_str(v, "--owner");
    Aos__Memory__SearchRequest q = AOS__MEMORY__SEARCH_REQUEST__INIT;
    q.query = (ProtobufCBinaryData){strlen(query), (uint8_t *)query};
    q.limit = (uint32_t)ctl_int(v, "--limit");
    for (int m = 0; modes[m]; m++)
        if (mode && !strcmp(mode, modes[m]))
            q.mode = m;
    if (coll)
        q.collection = (ProtobufCBinaryData){strlen(coll), (uint8_t *)coll};
    if (owner)
        q.owner = (ProtobufCBinaryData){strlen(owner), (uint8_t *)owner};
    aos_reply r;
    if (ctl_call(c, agent, "memory.search", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Memory__SearchReply *s = aos__memory__search_reply__unpack(NULL, r.payload_len,
                                                                    r.payload);
    aos_reply_clear(&r);
    if (!s)
        return ctl_fail(c, AOS_ERR_PROTO, "memory.search: a malformed SearchReply");
    if (c->json) {
        json_t *hits = json_array();
        for (size_t i = 0; i < s->n_hits; i++) {
            const Aos__Memory__Hit *h = s->hits[i];
            json_array_append_new(hits, json_pack(
                "{s:I, s:o, s:o, s:I, s:f, s:f, s:I, s:f, s:I, s:I, s:s, s:o}",
                "chunk", (json_int_t)h->chunk_id, "collection", jbytes(h->collection),
                "doc_id", jbytes(h->doc_id), "seq", (json_int_t)h->seq, "score", h->score,
                "fts_rank", (double)h->fts_rank, "fts_pos", (json_int_t)h->fts_pos,
                "vec_score", (double)h->vec_score, "vec_pos", (json_int_t)h->vec_pos,
                "page_id", (json_int_t)h->page_id, "trust", trust_name(h->trust),
                "text", jbytes(h->text)));
        }
        json_t *doc = json_pack("{s:o, s:b, s:I, s:I}", "hits", hits, "embedded", s->embedded,
                                "fts_candidates", (json_int_t)s->fts_candidates,
                                "vec_candidates", (json_int_t)s->vec_candidates);
        aos__memory__search_reply__free_unpacked(s, NULL);
        return ctl_print_json(c, doc);
    }
    printf("%3s %-9s %-8s %-10s %-10s %-24s %s\n", "#", "SCORE", "FTS", "VECTOR", "COLL",
           "DOC", "TEXT");
    for (size_t i = 0; i < s->n_hits; i++) {
        const Aos__Memory__Hit *h = s->hits[i];
        char coll_s[80], doc[120], text[300], fts[32] = "-", vec[32] = "-";
        ctl_clean(coll_s, sizeof coll_s, h->collection.data, h->collection.len, 10, NULL);
        ctl_clean(doc, sizeof doc, h->doc_id.data, h->doc_id.len, 24, NULL);
        ctl_clean(text, sizeof text, h->text.data, h->text.len, 60, NULL);
        if (h->fts_pos)
            snprintf(fts, sizeof fts, "%.3f#%u", h->fts_rank, h->fts_pos);
        if (h->vec_pos)
            snprintf(vec, sizeof vec, "%.3f#%u", h->vec_score, h->vec_pos);
        printf("%3zu %-9.5f %-8s %-10s %-10s %-24s %s\n", i + 1, h->score, fts, vec, coll_s,
               doc, text);
    }
    if (!s->embedded && q.mode != 1)
        fprintf(stderr, "the query could not be embedded: full text only\n");
    aos__memory__search_reply__free_unpacked(s, NULL);
    return 0;
}

static int cmd_stats(ctl_ctx *c, const ctl_vals *v)
{
    (void)v;
    aos_reply r;
    if (ctl_call(c, NULL, "memory.stats", NULL, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__StatsReply *s = aos__stats_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s || !aos_pb_strings_valid(&s->base)) {
        if (s)
            aos__stats_reply__free_unpacked(s, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "memory.stats: a malformed StatsReply");
    }
    if (c->json) {
        json_t *figs = json_array(), *budgets = json_array();
        for (size_t i = 0; i < s->n_stats; i++) {
            const Aos__Stat *st = s->stats[i];
            if (!strncmp(st->name, "budget:", 7))
                json_array_append_new(budgets, json_pack("{s:s, s:I, s:s}", "agent",
                                                         st->name + 7, "budget",
                                                         (json_int_t)st->value, "text",
                                                         st->text ? st->text : ""));
            else
                json_array_append_new(figs, json_pack("{s:s, s:I, s:s}", "name", st->name,
                                                      "value", (json_int_t)st->value, "text",
                                                      st->text ? st->text : ""));
        }
        aos__stats_reply__free_unpacked(s, NULL);
        return ctl_print_json(c, json_pack("{s:o, s:o}", "figures", figs, "budgets", budgets));
    }
    for (size_t i = 0; i < s->n_stats; i++) {
        const Aos__Stat *st = s->stats[i];
        printf("%-32s %14lld%s%s\n", st->name, (long long)st->value,
               st->text && st->text[0] ? "  " : "", st->text ? st->text : "");
    }
    aos__stats_reply__free_unpacked(s, NULL);
    return 0;
}

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define STR "{\"type\":\"string\"}"
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define NUM "{\"type\":\"number\"}"
#define BOOL "{\"type\":\"boolean\"}"

static const char show_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"budget\",\"reserve\",\"tokens\",\"pages\","
    "\"faults\",\"evictions\"],\"properties\":{\"agent\":" STR ",\"budget\":" INT0
    ",\"reserve\":" INT0 ",\"tokens\":" INT0 ",\"faults\":" INT0 ",\"evictions\":" INT0
    ",\"bytes_out\":" INT0 ",\"bytes_in\":" INT0 ",\"compactions\":" INT0 ",\"assemblies\":"
    INT0 ",\"prefix_reuse_pct\":" INT0 ",\"reported_tokens\":" INT0 ",\"tokens_per_byte\":" NUM
    ",\"pages\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"id\","
    "\"kind\",\"tokens\",\"resident\",\"pinned\",\"trust\"],\"properties\":{\"id\":" INT0
    ",\"kind\":{\"type\":\"string\",\"enum\":[\"system\",\"tools\",\"pinned\",\"todo\","
    "\"user\",\"assistant\",\"tool_result\",\"document\",\"summary\"]},\"tokens\":" INT0
    ",\"bytes\":" INT0 ",\"resident\":" BOOL ",\"pinned\":" BOOL ",\"trust\":{\"type\":"
    "\"string\",\"enum\":[\"own\",\"user\",\"untrusted\"]},\"source\":" STR ",\"summary\":"
    STR ",\"uses\":" INT0 ",\"created_ms\":" INT0 ",\"last_use_ms\":" INT0 "}}}}}";

static const char search_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"hits\",\"embedded\"],\"properties\":{\"embedded\":"
    BOOL ",\"fts_candidates\":" INT0 ",\"vec_candidates\":" INT0 ",\"hits\":{\"type\":"
    "\"array\",\"items\":{\"type\":\"object\",\"required\":[\"chunk\",\"doc_id\",\"score\","
    "\"fts_rank\",\"fts_pos\",\"vec_score\",\"vec_pos\"],\"properties\":{\"chunk\":" INT0
    ",\"collection\":" STR ",\"doc_id\":" STR ",\"seq\":" INT0 ",\"score\":{\"type\":"
    "\"number\",\"description\":\"reciprocal rank fusion (k = 60), or the one method's\"},"
    "\"fts_rank\":" NUM ",\"fts_pos\":{\"type\":\"integer\",\"minimum\":0,\"description\":"
    "\"place in the full-text list, 0: absent\"},\"vec_score\":" NUM ",\"vec_pos\":" INT0
    ",\"page_id\":" INT0 ",\"trust\":" STR ",\"text\":" STR "}}}}}";

static const char stats_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"figures\",\"budgets\"],\"properties\":{\"figures\":"
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"name\",\"value\"],"
    "\"properties\":{\"name\":" STR ",\"value\":{\"type\":\"integer\"},\"text\":" STR "}}},"
    "\"budgets\":"
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"agent\",\"budget\"],"
    "\"properties\":{\"agent\":" STR ",\"budget\":" INT0 ",\"text\":" STR "}}}}}";

static const ctl_arg show_args[] = {
    {.name = "AGENT", .required = 1, .check = ctl_check_agent, .summary = "whose window"},
};
static const ctl_arg search_args[] = {
    {.name = "AGENT", .required = 1, .check = ctl_check_agent,
     .summary = "search as this agent (its own memory, or --owner's shared collection)"},
    {.name = "QUERY", .required = 1, .summary = "words; any characters are only text"},
    {.name = "--mode", .value = "MODE", .choices = modes, .def = "hybrid",
     .summary = "hybrid (full text and embeddings fused), fts or vector"},
    {.name = "--limit", .short_name = 'n', .type = CTL_INTEGER, .value = "N", .min = 1,
     .max = 100, .def = "5", .summary = "at most N hits"},
    {.name = "--collection", .value = "NAME", .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .summary = "one collection (default: all of the agent's own)"},
    {.name = "--owner", .value = "AGENT", .check = ctl_check_agent,
     .summary = "the agent that shared --collection with AGENT"},
};

static const ctl_cmd mem_cmds[] = {
    {"mem show", "an agent's context window as pages: kind, tokens, resident or swapped, "
     "pinned, trust", CTL_ARGS(show_args), show_out, cmd_show},
    {"mem search", "ranked archival hits for a query with each method's score (full text, "
     "embedding) and the fused one", CTL_ARGS(search_args), search_out, cmd_search},
    {"mem stats", "aos-memory's figures: faults, evictions, bytes moved, prefix reuse, "
     "assembly copies, estimator, and the cached agents' budgets", NULL, 0, stats_out,
     cmd_stats},
};

const ctl_group ctl_group_mem = {mem_cmds, sizeof mem_cmds / sizeof mem_cmds[0]};
