/* aosctl tools [--render], tools show, tool run: aos-tool's catalogue, the sandbox layers in
 * force on this host, and one tool run as an agent with its output streamed as it comes. */
#include "aosctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "aos/err.h"
#include "tool.pb-c.h"

#define ARGS_TEXT_MAX (2u << 20)

static json_t *jbytes(ProtobufCBinaryData b)
{
    if (!aos_utf8_valid(b.data, b.len))
        return json_string("?");
    return json_stringn((const char *)b.data, b.len);
}

/* A schema text from aos-tool as JSON (an object; "{}" if it does not parse). */
static json_t *jschema_of(ProtobufCBinaryData b)
{
    json_t *v = json_loadb((const char *)b.data, b.len, 0, NULL);
    return v && json_is_object(v) ? v : (json_decref(v), json_object());
}

static json_t *info_json(const Aos__Tool__Info *in)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:b, s:o, s:{s:I, s:I, s:I, s:I}}",
                     "name", jbytes(in->name), "summary", jbytes(in->summary),
                     "args", jschema_of(in->args_schema), "output", jbytes(in->output_format),
                     "network", in->network, "source", jbytes(in->source), "limits",
                     "time_ms", (json_int_t)in->time_ms, "output_bytes",
                     (json_int_t)in->output_bytes, "memory_mb", (json_int_t)in->memory_mb,
                     "processes", (json_int_t)in->processes);
}

static Aos__Tool__ListReply *fetch_list(ctl_ctx *c, const char *render, int *rc)
{
    Aos__Tool__ListRequest q = AOS__TOOL__LIST_REQUEST__INIT;
    q.render = (ProtobufCBinaryData){render ? strlen(render) : 0, (uint8_t *)render};
    aos_reply r;
    if (ctl_call(c, NULL, "tool.list", &q.base, &r) != AOS_OK) {
        *rc = ctl_fail_reply(c, &r);
        return NULL;
    }
    Aos__Tool__ListReply *l = aos__tool__list_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!l)
        *rc = ctl_fail(c, AOS_ERR_PROTO, "tool.list: aos-tool sent a malformed ListReply");
    return l;
}

static int cmd_tools(ctl_ctx *c, const ctl_vals *v)
{
    const char *render = ctl_str(v, "--render");
    int rc = 0;
    /* the two renders are always both measured: the estimate is the point of --render */
    Aos__Tool__ListReply *l = fetch_list(c, render ? render : "", &rc);
    if (!l)
        return rc;
    if (render && !aos_utf8_valid(l->rendered.data, l->rendered.len)) {
        aos__tool__list_reply__free_unpacked(l, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "tool.list: the render is not UTF-8");
    }
    if (c->json) {
        json_t *tools = json_array(), *layers = json_array(), *notes = json_array();
        for (size_t i = 0; i < l->n_tools; i++)
            json_array_append_new(tools, info_json(l->tools[i]));
        for (size_t i = 0; i < l->n_layers; i++)
            json_array_append_new(layers, json_pack("{s:o, s:b, s:o}", "name",
                                                    jbytes(l->layers[i]->name), "on",
                                                    l->layers[i]->on, "why",
                                                    jbytes(l->layers[i]->why)));
        for (size_t i = 0; i < l->n_notes; i++)
            json_array_append_new(notes, jbytes(l->notes[i]));
        json_t *doc = json_pack("{s:o, s:o, s:o}", "tools", tools, "layers", layers, "notes",
                                notes);
        if (render) {
            json_object_set_new(doc, "render", json_string(render));
            json_object_set_new(doc, "rendered", jbytes(l->rendered));
            /* bytes/4 until the memory issue's calibrated estimator exists */
            json_object_set_new(doc, "tokens_estimate",
                                json_integer((json_int_t)((l->rendered.len + 3) / 4)));
        }
        aos__tool__list_reply__free_unpacked(l, NULL);
        return ctl_print_json(c, doc);
    }
    if (render) {
        fwrite(l->rendered.data, 1, l->rendered.len, stdout);
        if (l->rendered.len && l->rendered.data[l->rendered.len - 1] != '\n')
            fputc('\n', stdout);
        fprintf(stderr, "%zu tools, %zu bytes, about %zu tokens (bytes/4)\n", l->n_tools,
                l->rendered.len, (l->rendered.len + 3) / 4);
        aos__tool__list_reply__free_unpacked(l, NULL);
        return 0;
    }
    char a[160], b[400];
    for (size_t i = 0; i < l->n_tools; i++) {
        const Aos__Tool__Info *in = l->tools[i];
        ctl_clean(a, sizeof a, in->name.data, in->name.len, 40, NULL);
        ctl_clean(b, sizeof b, in->summary.data, in->summary.len, 100, NULL);
        printf("%-20s %s%s\n", a, b, in->network ? "  [network]" : "");
    }
    printf("\nsandbox layers on this host:\n");
    for (size_t i = 0; i < l->n_layers; i++) {
        ctl_clean(a, sizeof a, l->layers[i]->name.data, l->layers[i]->name.len, 40, NULL);
        ctl_clean(b, sizeof b, l->layers[i]->why.data, l->layers[i]->why.len, 160, NULL);
        printf("  %-16s %-3s %s\n", a, l->layers[i]->on ? "on" : "off", b);
    }
    for (size_t i = 0; i < l->n_notes; i++) {
        ctl_clean(b, sizeof b, l->notes[i].data, l->notes[i].len, 300, NULL);
        printf("note: %s\n", b);
    }
    aos__tool__list_reply__free_unpacked(l, NULL);
    return 0;
}

static int cmd_show(ctl_ctx *c, const ctl_vals *v)
{
    const char *name = ctl_str(v, "NAME");
    Aos__Tool__ShowRequest q = AOS__TOOL__SHOW_REQUEST__INIT;
    q.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    aos_reply r;
    if (ctl_call(c, NULL, "tool.show", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Tool__Info *in = aos__tool__info__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!in)
        return ctl_fail(c, AOS_ERR_PROTO, "tool.show: aos-tool sent a malformed Info");
    json_t *doc = info_json(in);
    aos__tool__info__free_unpacked(in, NULL);
    if (c->json)
        return ctl_print_json(c, doc);
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    json_decref(doc);
    if (!s)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    printf("%s\n", s);
    free(s);
    return 0;
}

typedef struct run_st {
    int human;
    int bad;
    uint32_t bad_seq;
    uint64_t out_bytes, err_bytes;
} run_st;

/* Output as it arrives, to stdout and stderr as the tool wrote it (people only: --json
 * prints one document at the end). Bytes go out as they are, except control characters
 * that could drive the terminal, which the clean pass turns into '?'. */
static int on_chunk(void *arg, uint32_t seq, const uint8_t *data, size_t len)
{
    run_st *s = arg;
    Aos__Tool__Chunk *ch = aos__tool__chunk__unpack(NULL, len, data);
    if (!ch || (ch->stream != 1 && ch->stream != 2)) {
        if (ch)
            aos__tool__chunk__free_unpacked(ch, NULL);
        s->bad = 1;
        s->bad_seq = seq;
        return 1;
    }
    if (ch->stream == 1)
        s->out_bytes += ch->data.len;
    else
        s->err_bytes += ch->data.len;
    if (s->human)
        ctl_put_text(ch->stream == 1 ? stdout : stderr, ch->data.data, ch->data.len);
    aos__tool__chunk__free_unpacked(ch, NULL);
    return 0;
}

static int cmd_run(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "AGENT"), *tool = ctl_str(v, "TOOL");
    const char *args = ctl_str(v, "ARGS");
    json_error_t je;
    json_t *parsed = json_loads(args, JSON_REJECT_DUPLICATES, &je);
    if (!parsed || !json_is_object(parsed)) {
        json_decref(parsed);
        return ctl_fail(c, AOS_ERR_USAGE, "ARGS must be a JSON object%s%s", parsed ? "" : ": ",
                        parsed ? "" : je.text);
    }
    json_decref(parsed);
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    Aos__Tool__Grant g = AOS__TOOL__GRANT__INIT;
    q.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    q.tool = (ProtobufCBinaryData){strlen(tool), (uint8_t *)tool};
    q.args = (ProtobufCBinaryData){strlen(args), (uint8_t *)args};
    g.network = ctl_given(v, "--network");
    q.grant = &g;
    q.time_ms = (uint32_t)ctl_int(v, "--time");
    size_t n = aos__tool__run_request__get_packed_size(&q);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    aos__tool__run_request__pack(&q, buf);
    aos_reply r;
    memset(&r, 0, sizeof r);
    if (ctl_connect(c, &r) != AOS_OK) {
        free(buf);
        return ctl_fail_reply(c, &r);
    }
    run_st st = {.human = !c->json};
    /* the tool's own time limit plus room for the sandbox and the reply */
    uint32_t t = q.time_ms ? q.time_ms + 5000 : 0;
    aos_call_opts o = {.agent_id = agent,
                       .timeout_ms = t > c->timeout_ms ? t : c->timeout_ms};
    aos_err e = aos_call_stream(c->conn, &o, "tool.run", buf, n, on_chunk, &st, &r);
    free(buf);
    fflush(stdout);
    if (st.bad) {
        aos_reply_clear(&r);
        return ctl_fail(c, AOS_ERR_PROTO, "tool.run: part %" PRIu32 " is not a Chunk",
                        st.bad_seq);
    }
    if (e != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Tool__RunReply *rr = aos__tool__run_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!rr)
        return ctl_fail(c, AOS_ERR_PROTO, "tool.run: aos-tool sent a malformed RunReply");
    json_t *res = json_loadb((const char *)rr->result_json.data, rr->result_json.len,
                             JSON_ALLOW_NUL, NULL);
    int err = (int)rr->error;
    if (!res || !json_is_object(res)) {
        json_decref(res);
        aos__tool__run_reply__free_unpacked(rr, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "tool.run: the result is not a JSON object");
    }
    int rc = err ? aos_err_exit_code(err) : 0;
    if (c->json) {
        aos__tool__run_reply__free_unpacked(rr, NULL);
        ctl_print_json(c, res);
        return rc;
    }
    /* a run that streamed nothing (an MCP tool answers in one piece): its output now */
    if (!st.out_bytes && rr->stdout_data.len)
        ctl_put_text(stdout, rr->stdout_data.data, rr->stdout_data.len);
    if (!st.err_bytes && rr->stderr_data.len)
        ctl_put_text(stderr, rr->stderr_data.data, rr->stderr_data.len);
    char et[300], sig[32] = "";
    ctl_clean(et, sizeof et, rr->error_text.data, rr->error_text.len, 250, NULL);
    if (rr->signal)
        snprintf(sig, sizeof sig, ", signal %d", rr->signal);
    fprintf(stderr, "[%s: exit %d%s, %" PRIu64 " ms, peak %" PRIu64 " KiB%s%s%s%s]\n",
            tool, rr->exit_status, sig, rr->duration_us / 1000, rr->peak_rss_kb,
            rr->stdout_truncated ? ", stdout truncated" : "",
            rr->stderr_truncated ? ", stderr truncated" : "", err ? ": " : "", err ? et : "");
    aos__tool__run_reply__free_unpacked(rr, NULL);
    json_decref(res);
    return rc;
}

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define STR "{\"type\":\"string\"}"
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define INFO "{" INFO_BODY "}"
#define INFO_BODY                                                                          \
    "\"type\":\"object\",\"required\":[\"name\",\"summary\",\"args\",\"output\","         \
    "\"network\",\"source\",\"limits\"],\"properties\":{\"name\":" STR ",\"summary\":" STR \
    ",\"args\":{\"type\":\"object\",\"description\":\"JSON Schema of the arguments\"},"     \
    "\"output\":{\"type\":\"string\",\"enum\":[\"json\",\"text\"]},\"network\":"           \
    "{\"type\":\"boolean\"},\"source\":{\"type\":\"string\",\"description\":\"builtin, "   \
    "file:NAME.yaml or mcp:SERVER\"},\"limits\":{\"type\":\"object\",\"required\":["      \
    "\"time_ms\",\"output_bytes\",\"memory_mb\",\"processes\"],\"properties\":{"          \
    "\"time_ms\":" INT0 ",\"output_bytes\":" INT0 ",\"memory_mb\":" INT0 ",\"processes\":" \
    INT0 "}}}"

static const char tools_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"tools\",\"layers\",\"notes\"],\"properties\":{"
    "\"tools\":{\"type\":\"array\",\"items\":" INFO "},"
    "\"layers\":{\"type\":\"array\",\"description\":\"the sandbox layers and whether this "
    "host enforces them\",\"items\":{\"type\":\"object\",\"required\":[\"name\",\"on\","
    "\"why\"],\"properties\":{\"name\":" STR ",\"on\":{\"type\":\"boolean\"},\"why\":" STR
    "}}},\"notes\":{\"type\":\"array\",\"description\":\"descriptors that did not load, and "
    "why\",\"items\":" STR "},"
    "\"render\":{\"type\":\"string\"},\"rendered\":{\"type\":\"string\",\"description\":"
    "\"the catalogue as the model would see it\"},\"tokens_estimate\":{\"type\":\"integer\","
    "\"minimum\":0,\"description\":\"rendered bytes / 4\"}}}";

static const char show_out[] = SCHEMA INFO_BODY "}";

static const char run_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"tool\",\"exit_status\",\"error\",\"duration_ms\","
    "\"peak_rss_kb\",\"stderr\",\"stdout_truncated\",\"stderr_truncated\",\"timed_out\"],"
    "\"properties\":{\"tool\":" STR ",\"exit_status\":{\"type\":\"integer\",\"description\":"
    "\"the tool's exit code; -1 when it was killed\"},\"signal\":{\"type\":\"integer\"},"
    "\"error\":{\"type\":\"string\",\"description\":\"ok, or the aos error the exit code or a "
    "limit stands for\"},\"error_text\":" STR ",\"duration_ms\":" INT0 ",\"peak_rss_kb\":"
    INT0 ",\"stdout\":{\"type\":\"string\",\"description\":\"text output (invalid UTF-8 "
    "shown as U+FFFD)\"},\"output\":{\"description\":\"a json tool's output, parsed\"},"
    "\"output_invalid\":" STR ",\"stderr\":" STR ",\"stdout_truncated\":{\"type\":"
    "\"boolean\"},\"stderr_truncated\":{\"type\":\"boolean\"},\"timed_out\":{\"type\":"
    "\"boolean\"}}}";

static const char *const renders[] = {"schema", "openai", "anthropic", "cli", NULL};

static int check_args(const char *val, char *why, size_t whylen)
{
    if (strlen(val) <= ARGS_TEXT_MAX)
        return 0;
    snprintf(why, whylen, "ARGS is over %u bytes", ARGS_TEXT_MAX);
    return -1;
}

static const ctl_arg tools_args[] = {
    {.name = "--render", .value = "FORMAT", .choices = renders,
     .summary = "print the catalogue as the model sees it: schema (OpenAI tools JSON), "
                "anthropic, or cli (one usage line per tool), with a token estimate"},
};
static const ctl_arg show_args[] = {
    {.name = "NAME", .required = 1, .pattern = "^[a-z][a-z0-9_.-]{0,127}$",
     .summary = "the tool's name"},
};
static const ctl_arg run_args[] = {
    {.name = "AGENT", .required = 1, .check = ctl_check_agent,
     .summary = "run as this agent, in its workspace"},
    {.name = "TOOL", .required = 1, .pattern = "^[a-z][a-z0-9_.-]{0,127}$",
     .summary = "the tool's name (aosctl tools lists them)"},
    {.name = "ARGS", .required = 1, .check = check_args,
     .summary = "its arguments, a JSON object checked against the tool's schema"},
    {.name = "--time", .type = CTL_INTEGER, .value = "MS", .min = 1, .max = 3600000,
     .summary = "a shorter time limit than the tool's own"},
    {.name = "--network", .type = CTL_BOOL,
     .summary = "grant the network for this run (a tool that needs it is refused without)"},
};

static const ctl_cmd tool_cmds[] = {
    {"tools", "the tool catalogue and the sandbox layers in force on this host",
     CTL_ARGS(tools_args), tools_out, cmd_tools},
    {"tools show", "one tool: its summary, argument schema, limits and source",
     CTL_ARGS(show_args), show_out, cmd_show},
    {"tool run", "run TOOL as AGENT in its sandboxed workspace; output streams as it comes, "
     "a summary goes to stderr; exit code from the aos error table (a tool's own non-zero "
     "exit is a result: 0)", CTL_ARGS(run_args), run_out, cmd_run},
};

const ctl_group ctl_group_tool = {tool_cmds, sizeof tool_cmds / sizeof tool_cmds[0]};
