/* aos-tool: the tool catalogue (built-ins and DATA/tools descriptors), and tool runs in
 * the sandbox, streamed and answered with a structured result. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "aos/envelope.h"
#include "aos/log.h"
#include "desc.h"
#include "jail.h"
#include "msrv.h"
#include "run.h"
#include "serve.h"
#include "tool.pb-c.h"

#define TOOLS_MAX 1024u
#define NOTES_MAX 64u
#define ARGS_MAX (2u << 20)  /* a run's arguments, JSON */

typedef struct tool {
    desc *d;
    char source[140];        /* "builtin", "file:x.yaml" */
} tool;

typedef struct tstate {
    tool tools[TOOLS_MAX];
    size_t ntools;
    char *notes[NOTES_MAX];
    size_t nnotes;
    Aos__Tool__Config *cfg;  /* secrets, MCP servers (NULL: none came) */
    jail *jl;
    runner *rn;
    msrv *ms;                /* the MCP servers of aos.yaml */
    int wsfd;                /* DATA/workspaces, -1: none */
} tstate;

static void note(tstate *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(tstate *t, const char *fmt, ...)
{
    if (t->nnotes >= NOTES_MAX)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    aos_warn("tool: %s", buf);
    t->notes[t->nnotes++] = strdup(buf);
}

static const tool *find(const tstate *t, const char *name)
{
    for (size_t i = 0; i < t->ntools; i++)
        if (!strcmp(desc_name(t->tools[i].d), name))
            return &t->tools[i];
    return NULL;
}

static void add_tool(tstate *t, desc *d, const char *source)
{
    if (find(t, desc_name(d))) {
        note(t, "%s: a tool named %s exists already (built-ins and earlier files win)",
             source, desc_name(d));
        desc_free(d);
        return;
    }
    if (t->ntools == TOOLS_MAX) {
        note(t, "%s: more than %u tools; %s is not loaded", source, TOOLS_MAX, desc_name(d));
        desc_free(d);
        return;
    }
    t->tools[t->ntools].d = d;
    snprintf(t->tools[t->ntools].source, sizeof t->tools[0].source, "%s", source);
    t->ntools++;
}

static aos_err t_open(srv *s, char *why, size_t whylen)
{
    tstate *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    t->wsfd = -1;
    srv_set_state(s, t);
    if (sodium_init() < 0) { /* the audit details hash outputs with BLAKE2b */
        snprintf(why, whylen, "sodium_init failed");
        return AOS_ERR_INTERNAL;
    }
    desc **b = NULL;
    size_t nb = 0;
    aos_err e = desc_builtins(&b, &nb, why, whylen);
    if (e)
        return e;
    for (size_t i = 0; i < nb; i++)
        add_tool(t, b[i], "builtin");
    free(b); /* the descs now belong to the catalogue */
    size_t clen = 0;
    const uint8_t *c = srv_config(s, &clen);
    if (c && clen) {
        t->cfg = aos__tool__config__unpack(NULL, clen, c);
        if (!t->cfg || !aos_pb_strings_valid(&t->cfg->base)) {
            snprintf(why, whylen, "the configuration aosd sent does not decode");
            return AOS_ERR_PROTO;
        }
        for (size_t i = 0; i < t->cfg->n_notes; i++)
            note(t, "%.*s", (int)t->cfg->notes[i].len, (const char *)t->cfg->notes[i].data);
        for (size_t i = 0; i < t->cfg->n_descriptors; i++) {
            const Aos__Tool__DescriptorFile *f = t->cfg->descriptors[i];
            char file[128];
            snprintf(file, sizeof file, "%.*s", (int)(f->file.len < 100 ? f->file.len : 100),
                     (const char *)f->file.data);
            desc *d = NULL;
            char dwhy[700];
            if (desc_parse(file, (const char *)f->yaml.data, f->yaml.len, &d, dwhy,
                           sizeof dwhy)) {
                note(t, "%s", dwhy);
                continue;
            }
            char src[140];
            snprintf(src, sizeof src, "file:%s", file);
            add_tool(t, d, src);
        }
    }
    if (srv_workspaces(s)) {
        t->wsfd = open(srv_workspaces(s), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t->wsfd < 0)
            note(t, "the workspaces %s: %s", srv_workspaces(s), strerror(errno));
    }
    if ((e = jail_open(srv_dir(s), &t->jl, why, whylen)) ||
        (e = runner_open(t->jl, srv_dir(s), &t->rn, why, whylen)))
        return e;
    return msrv_open(t->jl, t->cfg, srv_dir(s), &t->ms, why, whylen);
}

static void t_close(srv *s)
{
    tstate *t = srv_state(s);
    if (!t)
        return;
    msrv_close(t->ms);
    runner_close(t->rn);
    jail_free(t->jl);
    for (size_t i = 0; i < t->ntools; i++)
        desc_free(t->tools[i].d);
    for (size_t i = 0; i < t->nnotes; i++)
        free(t->notes[i]);
    if (t->cfg)
        aos__tool__config__free_unpacked(t->cfg, NULL);
    if (t->wsfd >= 0)
        close(t->wsfd);
    free(t);
}

static void t_stats(srv *s, srv_stats *st)
{
    tstate *t = srv_state(s);
    runner_counts c;
    runner_counts_get(t->rn, &c);
    srv_stat(st, "tools", (int64_t)t->ntools, NULL);
    srv_stat(st, "executions", (int64_t)c.started,
             "runs started in the sandbox, each (agent, request id) at most once");
    srv_stat(st, "running", (int64_t)c.running, NULL);
    srv_stat(st, "timeouts", (int64_t)c.timeouts, NULL);
    srv_stat(st, "output_kills", (int64_t)c.output_kills, NULL);
    srv_stat(st, "spawn_failures", (int64_t)c.spawn_failures, NULL);
    srv_stat(st, "refused_ran_before", (int64_t)c.refused_ran_before,
             "requests whose (agent, request id) had started already: not run again");
    msrv_counts mc;
    msrv_counts_get(t->ms, &mc);
    srv_stat(st, "mcp_servers", mc.declared, NULL);
    srv_stat(st, "mcp_running", mc.running, NULL);
    srv_stat(st, "mcp_starts", mc.starts, NULL);
    srv_stat(st, "mcp_deaths", mc.deaths, NULL);
    srv_stat(st, "mcp_calls", (int64_t)mc.calls, NULL);
}

/* bytes → a NUL-terminated string of at most cap-1 bytes, or -1 (too long, a NUL inside,
 * not UTF-8). */
static int cstr(const ProtobufCBinaryData *b, char *out, size_t cap)
{
    if (!b->len) { /* data may be NULL: no memchr or memcpy on it */
        out[0] = 0;
        return 0;
    }
    if (b->len >= cap || memchr(b->data, 0, b->len) || !aos_utf8_valid(b->data, b->len))
        return -1;
    memcpy(out, b->data, b->len);
    out[b->len] = 0;
    return 0;
}

static void fill_info(Aos__Tool__Info *in, const desc *d, const char *source, char **schema)
{
    desc_limits l = desc_get_limits(d);
    *schema = json_dumps(desc_args_schema(d), JSON_COMPACT | JSON_SORT_KEYS);
    in->name.data = (uint8_t *)desc_name(d);
    in->name.len = strlen(desc_name(d));
    in->summary.data = (uint8_t *)desc_summary(d);
    in->summary.len = strlen(desc_summary(d));
    in->args_schema.data = (uint8_t *)(*schema ? *schema : "{}");
    in->args_schema.len = strlen((char *)in->args_schema.data);
    const char *fmt = desc_output_format(d) == DESC_OUT_JSON ? "json" : "text";
    in->output_format.data = (uint8_t *)fmt;
    in->output_format.len = strlen(fmt);
    in->network = desc_network(d);
    in->time_ms = l.time_ms;
    in->output_bytes = l.output_bytes;
    in->memory_mb = l.memory_mb;
    in->processes = l.processes;
    in->source.data = (uint8_t *)source;
    in->source.len = strlen(source);
}

#define LIST_MCP_MS 20000u /* tool.list waits this long for MCP servers to start */

typedef struct list_ctx {
    tstate *t;
    srv_reply *rep;
    const char *render;     /* "" none */
    desc_render_format rf;
    const char *show;       /* tool.show: the one name */
    char *notes[16];
    size_t nnotes;
    aos_err e;
} list_ctx;

static void list_note(void *arg, const char *text)
{
    list_ctx *lc = arg;
    if (lc->nnotes < 16)
        lc->notes[lc->nnotes++] = strdup(text);
}

/* The catalogue's reply: built-ins and files, then the MCP servers' tools (borrowed from
 * msrv for this call only, so everything is packed here). */
static void list_body(void *arg, const desc *const *mds, const char *const *msrcs, size_t mn)
{
    list_ctx *lc = arg;
    tstate *t = lc->t;
    size_t n = t->ntools + mn;
    if (lc->show) {
        for (size_t i = 0; i < n; i++) {
            const desc *d = i < t->ntools ? t->tools[i].d : mds[i - t->ntools];
            if (strcmp(desc_name(d), lc->show))
                continue;
            Aos__Tool__Info in = AOS__TOOL__INFO__INIT;
            char *schema = NULL;
            fill_info(&in, d, i < t->ntools ? t->tools[i].source : msrcs[i - t->ntools],
                      &schema);
            lc->e = srv_reply_pb(lc->rep, &in.base);
            free(schema);
            return;
        }
        lc->e = srv_fail(lc->rep, AOS_ERR_NOT_FOUND, "no tool named %s (aosctl tools lists "
                         "them)", lc->show);
        return;
    }
    Aos__Tool__ListReply lrep = AOS__TOOL__LIST_REPLY__INIT;
    Aos__Tool__Info *infos = calloc(n ? n : 1, sizeof *infos);
    Aos__Tool__Info **ip = calloc(n ? n : 1, sizeof *ip);
    char **schemas = calloc(n ? n : 1, sizeof *schemas);
    const desc **ds = calloc(n ? n : 1, sizeof *ds);
    jail_layer layers[JAIL_LAYERS_MAX];
    Aos__Tool__Layer lay[JAIL_LAYERS_MAX], *lp[JAIL_LAYERS_MAX];
    ProtobufCBinaryData nb[NOTES_MAX + 16];
    char *rendered = NULL;
    if (!infos || !ip || !schemas || !ds) {
        lc->e = srv_fail(lc->rep, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        aos__tool__info__init(&infos[i]);
        ds[i] = i < t->ntools ? t->tools[i].d : mds[i - t->ntools];
        fill_info(&infos[i], ds[i], i < t->ntools ? t->tools[i].source : msrcs[i - t->ntools],
                  &schemas[i]);
        ip[i] = &infos[i];
    }
    lrep.n_tools = n;
    lrep.tools = ip;
    size_t nl = jail_layers(t->jl, layers);
    for (size_t i = 0; i < nl; i++) {
        aos__tool__layer__init(&lay[i]);
        lay[i].name.data = (uint8_t *)layers[i].name;
        lay[i].name.len = strlen(layers[i].name);
        lay[i].on = layers[i].on;
        lay[i].why.data = (uint8_t *)layers[i].why;
        lay[i].why.len = strlen(layers[i].why);
        lp[i] = &lay[i];
    }
    lrep.n_layers = nl;
    lrep.layers = lp;
    size_t nn = 0;
    for (size_t i = 0; i < t->nnotes; i++)
        if (t->notes[i])
            nb[nn++] = (ProtobufCBinaryData){strlen(t->notes[i]), (uint8_t *)t->notes[i]};
    for (size_t i = 0; i < lc->nnotes; i++)
        if (lc->notes[i])
            nb[nn++] = (ProtobufCBinaryData){strlen(lc->notes[i]), (uint8_t *)lc->notes[i]};
    lrep.n_notes = nn;
    lrep.notes = nb;
    if (lc->render[0]) {
        char why[256];
        aos_err e = desc_render(ds, n, lc->rf, &rendered, why, sizeof why);
        if (e) {
            lc->e = srv_fail(lc->rep, e, "rendering the catalogue: %s", why);
            goto out;
        }
        lrep.rendered.data = (uint8_t *)rendered;
        lrep.rendered.len = strlen(rendered);
    }
    lc->e = srv_reply_pb(lc->rep, &lrep.base);
out:
    for (size_t i = 0; schemas && i < n; i++)
        free(schemas[i]);
    free(schemas);
    free(infos);
    free(ip);
    free(ds);
    free(rendered);
}

static aos_err m_list(srv *s, const aos_env *req, srv_reply *rep)
{
    tstate *t = srv_state(s);
    Aos__Tool__ListRequest *lr =
        aos__tool__list_request__unpack(NULL, req->payload_len, req->payload);
    if (!lr)
        return srv_fail(rep, AOS_ERR_PROTO, "tool.list: the request does not decode");
    char render[16];
    if (cstr(&lr->render, render, sizeof render)) {
        aos__tool__list_request__free_unpacked(lr, NULL);
        return srv_fail(rep, AOS_ERR_USAGE, "tool.list: render is openai, anthropic or cli");
    }
    aos__tool__list_request__free_unpacked(lr, NULL);
    list_ctx lc = {.t = t, .rep = rep, .render = render, .rf = DESC_CLI};
    if (render[0]) {
        if (!strcmp(render, "openai") || !strcmp(render, "schema"))
            lc.rf = DESC_SCHEMA_OPENAI;
        else if (!strcmp(render, "anthropic"))
            lc.rf = DESC_SCHEMA_ANTHROPIC;
        else if (strcmp(render, "cli"))
            return srv_fail(rep, AOS_ERR_USAGE, "tool.list: render '%s' is not one of openai, "
                            "anthropic, cli", render);
    }
    msrv_with_tools(t->ms, LIST_MCP_MS, list_body, list_note, &lc);
    for (size_t i = 0; i < lc.nnotes; i++)
        free(lc.notes[i]);
    return lc.e;
}

static aos_err m_show(srv *s, const aos_env *req, srv_reply *rep)
{
    tstate *t = srv_state(s);
    Aos__Tool__ShowRequest *sr =
        aos__tool__show_request__unpack(NULL, req->payload_len, req->payload);
    if (!sr)
        return srv_fail(rep, AOS_ERR_PROTO, "tool.show: the request does not decode");
    char name[128];
    int bad = cstr(&sr->name, name, sizeof name);
    aos__tool__show_request__free_unpacked(sr, NULL);
    if (bad || !name[0])
        return srv_fail(rep, AOS_ERR_USAGE, "tool.show: a tool name (UTF-8, under 128 bytes)");
    list_ctx lc = {.t = t, .rep = rep, .render = "", .show = name};
    msrv_with_tools(t->ms, msrv_owns(t->ms, name) ? LIST_MCP_MS : 0, list_body, NULL, &lc);
    return lc.e;
}

/* An agent's name as a directory name: the envelope's charset, and never "." or "..". */
static int agent_ok(const char *a)
{
    if (!a[0] || a[0] == '.' || strlen(a) > 64)
        return 0;
    for (const char *p = a; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
            return 0;
    return 1;
}

/* The workspace, made on first use; a symlink or anything but our own directory there
 * is refused (only aos-tool writes DATA/workspaces, but a hand-made mistake must not
 * bind some other place into a sandbox). *path is malloc'd. */
static aos_err workspace(tstate *t, srv *s, const char *agent, char **path, char *why,
                         size_t whylen)
{
    *path = NULL;
    if (t->wsfd < 0) {
        snprintf(why, whylen, "aos-tool has no workspaces directory (aosd gave none)");
        return AOS_ERR_UNAVAILABLE;
    }
    /* an agent's own is made by aosd before it starts (aos-tool's, the agents' group,
     * 02770: shared with the agent); one for a run of no running agent is ours alone */
    if (mkdirat(t->wsfd, agent, 0700) && errno != EEXIST) {
        snprintf(why, whylen, "making the workspace of %s: %s", agent, strerror(errno));
        return AOS_ERR_IO;
    }
    struct stat st;
    if (fstatat(t->wsfd, agent, &st, AT_SYMLINK_NOFOLLOW) || !S_ISDIR(st.st_mode) ||
        st.st_uid != geteuid()) {
        snprintf(why, whylen, "the workspace of %s is not a directory of aos-tool's own",
                 agent);
        return AOS_ERR_REFUSED;
    }
    size_t n = strlen(srv_workspaces(s)) + strlen(agent) + 2;
    if (!(*path = malloc(n))) {
        snprintf(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    snprintf(*path, n, "%s/%s", srv_workspaces(s), agent);
    return AOS_OK;
}

/* The secrets granted to (agent, tool): env entries and the values to redact. */
static aos_err grant_secrets(const tstate *t, const char *agent, const char *tname,
                             run_job *j)
{
    if (!t->cfg)
        return AOS_OK;
    size_t n = 0;
    for (size_t i = 0; i < t->cfg->n_secrets && n < RUN_SECRETS_MAX; i++) {
        const Aos__Tool__Secret *sc = t->cfg->secrets[i];
        int a = 0, tl = 0;
        for (size_t k = 0; k < sc->n_agents; k++)
            a |= sc->agents[k].len == strlen(agent) &&
                 !memcmp(sc->agents[k].data, agent, sc->agents[k].len);
        for (size_t k = 0; k < sc->n_tools; k++)
            tl |= sc->tools[k].len == strlen(tname) &&
                  !memcmp(sc->tools[k].data, tname, sc->tools[k].len);
        if (!a || !tl || !sc->value.len || memchr(sc->value.data, 0, sc->value.len))
            continue;
        size_t el = sc->name.len + 1 + sc->value.len + 1;
        if (!(j->env[n] = malloc(el)) || !(j->secret[n] = malloc(sc->value.len + 1)))
            return AOS_ERR_NOMEM;
        snprintf(j->env[n], el, "%.*s=%.*s", (int)sc->name.len, (const char *)sc->name.data,
                 (int)sc->value.len, (const char *)sc->value.data);
        memcpy(j->secret[n], sc->value.data, sc->value.len);
        j->secret[n][sc->value.len] = 0;
        n++;
    }
    return AOS_OK;
}

/* A run's time: the one asked for (never above the tool's own limit, limit 0: none),
 * and always short enough to answer before the caller's deadline. */
static unsigned run_time(const aos_env *req, unsigned asked, unsigned limit)
{
    unsigned t = limit ? (asked && asked < limit ? asked : limit) : (asked ? asked : 30000u);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t now_ms = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
    if (req->deadline_ms && req->deadline_ms > now_ms) {
        uint64_t left = req->deadline_ms - now_ms;
        left = left > 400 ? left - 200 : left / 2;
        if (left < t)
            t = (unsigned)left;
    }
    return t ? t : 1;
}

static void m_run(srv *s, srv_call *call)
{
    tstate *t = srv_state(s);
    const aos_env *req = srv_call_env(call);
    char why[1024] = "";
    aos_err e = AOS_OK;
    run_job *j = NULL;
    json_t *args = NULL;
    Aos__Tool__RunRequest *rr =
        aos__tool__run_request__unpack(NULL, req->payload_len, req->payload);
    if (!rr) {
        srv_call_done(call, AOS_ERR_PROTO, "tool.run: the request does not decode", NULL, 0);
        return;
    }
    char tname[128], agent[80];
    if (cstr(&rr->tool, tname, sizeof tname) || !tname[0]) {
        e = AOS_ERR_USAGE;
        snprintf(why, sizeof why, "tool.run: a tool name (UTF-8, under 128 bytes)");
        goto fail;
    }
    /* whose run: the envelope's agent (aosd sets it for agents; the admin names one) */
    snprintf(agent, sizeof agent, "%s", req->agent_id);
    if (rr->agent.len) {
        char ra[80];
        if (cstr(&rr->agent, ra, sizeof ra) || (agent[0] && strcmp(ra, agent))) {
            e = AOS_ERR_REFUSED;
            snprintf(why, sizeof why, "tool.run: the request names agent %.64s but comes "
                     "from %.64s", cstr(&rr->agent, ra, sizeof ra) ? "?" : ra, agent);
            goto fail;
        }
        snprintf(agent, sizeof agent, "%s", ra);
    }
    if (!agent_ok(agent)) {
        e = AOS_ERR_USAGE;
        snprintf(why, sizeof why, "tool.run: a run belongs to an agent ([A-Za-z0-9_.-], at "
                 "most 64, not starting with '.'): got '%.64s'", agent);
        goto fail;
    }
    const tool *tl = find(t, tname);
    if (!tl && msrv_owns(t->ms, tname)) {
        json_error_t mje;
        args = rr->args.len <= ARGS_MAX && aos_utf8_valid(rr->args.data, rr->args.len)
                   ? (rr->args.len ? json_loadb((const char *)rr->args.data, rr->args.len,
                                                JSON_REJECT_DUPLICATES, &mje)
                                   : json_object())
                   : NULL;
        if (!json_is_object(args)) {
            e = AOS_ERR_USAGE;
            snprintf(why, sizeof why, "tool.run: the arguments are not a JSON object of at "
                     "most %u bytes", ARGS_MAX);
            goto fail;
        }
        msrv_run(t->ms, call, tname, agent, args, run_time(req, rr->time_ms, 0));
        json_decref(args);
        aos__tool__run_request__free_unpacked(rr, NULL);
        return;
    }
    if (!tl) {
        e = AOS_ERR_NOT_FOUND;
        snprintf(why, sizeof why, "no tool named %s (aosctl tools lists them)", tname);
        goto fail;
    }
    const desc *d = tl->d;
    if (desc_network(d) && !(rr->grant && rr->grant->network)) {
        e = AOS_ERR_REFUSED;
        snprintf(why, sizeof why, "%s needs the network, and agent %s is not granted it",
                 tname, agent);
        goto fail;
    }
    if (rr->args.len > ARGS_MAX || !aos_utf8_valid(rr->args.data, rr->args.len)) {
        e = rr->args.len > ARGS_MAX ? AOS_ERR_TOO_BIG : AOS_ERR_USAGE;
        snprintf(why, sizeof why, "tool.run: the arguments must be UTF-8 JSON of at most %u "
                 "bytes", ARGS_MAX);
        goto fail;
    }
    json_error_t je;
    args = rr->args.len ? json_loadb((const char *)rr->args.data, rr->args.len,
                                     JSON_REJECT_DUPLICATES, &je)
                        : json_object();
    if (!args || !json_is_object(args)) {
        e = AOS_ERR_USAGE;
        snprintf(why, sizeof why, "tool.run: the arguments are not a JSON object%s%s",
                 args ? "" : ": ", args ? "" : je.text);
        goto fail;
    }
    if (!(j = calloc(1, sizeof *j))) {
        e = AOS_ERR_NOMEM;
        snprintf(why, sizeof why, "out of memory");
        goto fail;
    }
    if ((e = desc_argv(d, args, &j->argv, why, sizeof why)))
        goto fail;
    const char *sa = desc_stdin_arg(d);
    if (sa) {
        const json_t *v = json_object_get(args, sa);
        size_t n = json_string_length(v);
        if (json_is_string(v) && !(j->in = malloc(n ? n : 1))) {
            e = AOS_ERR_NOMEM;
            goto fail;
        }
        if (json_is_string(v)) {
            memcpy(j->in, json_string_value(v), n);
            j->in_len = n;
        } else {
            j->in = strdup("");
        }
    }
    if ((e = workspace(t, s, agent, &j->workspace, why, sizeof why)))
        goto fail;
    if ((e = grant_secrets(t, agent, tname, j))) {
        snprintf(why, sizeof why, "out of memory");
        goto fail;
    }
    j->time_ms = run_time(req, rr->time_ms, desc_get_limits(d).time_ms);
    if (rr->test_plain && !srv_test_hooks(s)) {
        e = AOS_ERR_REFUSED;
        snprintf(why, sizeof why, "tool.run: test_plain (no sandbox) is for benchmarks: aosd "
                 "must run with --test-hooks");
        goto fail;
    }
    j->plain = rr->test_plain;
    j->network = desc_network(d) && rr->grant && rr->grant->network;
    j->call = call;
    j->d = d;
    snprintf(j->agent, sizeof j->agent, "%s", agent);
    if (req->has_request_id)
        aos_hex(req->request_id, AOS_ID_LEN, j->rid);
    json_decref(args);
    aos__tool__run_request__free_unpacked(rr, NULL);
    runner_submit(t->rn, j);
    return;
fail:
    json_decref(args);
    run_job_free(j);
    aos__tool__run_request__free_unpacked(rr, NULL);
    srv_call_done(call, e ? e : AOS_ERR_INTERNAL, why, NULL, 0);
}

int main(int argc, char **argv)
{
    static const srv_method methods[] = {
        {"list", m_list, 0, NULL},
        {"show", m_show, 0, NULL},
        {"run", NULL, 0, m_run},
    };
    static const srv_def def = {
        .name = "tool",
        .methods = methods,
        .n_methods = sizeof methods / sizeof methods[0],
        .open = t_open,
        .add_stats = t_stats,
        .close = t_close,
    };
    return srv_main(&def, argc, argv);
}
