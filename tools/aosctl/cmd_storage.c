/* aosctl's storage commands: kv put|get|ls|rm, queue send|recv|ack|nack|ls, checkpoint ls,
 * each acting for the AGENT it names, through libaos storage (aos/storage.h). */
#include "aosctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos/storage.h"

#define LS_DEFAULT 1000u
#define LS_MAX 100000u
#define STDIN_MAX (4u << 20)

/* ---- small helpers -------------------------------------------------------------------- */

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A command's words: positionals into pos[], "--name VALUE" options into their slots.
 * Returns 0, or the exit code after printing the usage error. */
typedef struct opt {
    const char *name;
    const char **val;
} opt;

static int parse_args(ctl_ctx *c, int argc, char **argv, const opt *opts, size_t nopts,
                      const char **pos, int minpos, int maxpos, const char *usage)
{
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            size_t k = 0;
            for (; k < nopts; k++)
                if (!strcmp(a, opts[k].name))
                    break;
            if (k == nopts)
                return ctl_fail(c, AOS_ERR_USAGE, "unknown option %s; usage: aosctl %s", a,
                                usage);
            if (i + 1 >= argc)
                return ctl_fail(c, AOS_ERR_USAGE, "%s needs a value; usage: aosctl %s", a,
                                usage);
            *opts[k].val = argv[++i];
        } else {
            if (n == maxpos)
                return ctl_fail(c, AOS_ERR_USAGE, "too many arguments (\"%s\"); usage: aosctl "
                                "%s", a, usage);
            pos[n++] = a;
        }
    }
    if (n < minpos)
        return ctl_fail(c, AOS_ERR_USAGE, "missing arguments; usage: aosctl %s", usage);
    for (int i = n; i < maxpos; i++)
        pos[i] = NULL;
    return 0;
}

/* The agent argument: the same charset aosd enforces, checked before any call. */
static int agent_ok(ctl_ctx *c, const char *agent)
{
    if (!aos_agent_id_valid(agent, strlen(agent)))
        return ctl_fail(c, AOS_ERR_USAGE, "\"%s\" is not an agent id (1 to %d of A-Z a-z 0-9 "
                        "_ . : -)", agent, AOS_AGENT_ID_MAX);
    return 0;
}

/* Connect, and fill the call options for agent. Returns 0 or the exit code. */
static int begin(ctl_ctx *c, const char *agent, aos_call_opts *o)
{
    aos_reply r;
    memset(&r, 0, sizeof r);
    if (ctl_connect(c, &r) != AOS_OK)
        return ctl_fail(c, r.status, "%s", r.error);
    memset(o, 0, sizeof *o);
    o->agent_id = agent;
    o->timeout_ms = c->timeout_ms;
    return 0;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    aos_hex(b, n, out);
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", s[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", s[2 * i + 1]))
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* Bytes as JSON: a string when they are UTF-8, else base64 under another name. */
static int json_bytes(json_t *obj, const char *name, const uint8_t *b, size_t n)
{
    if (aos_utf8_valid(b, n))
        return json_object_set_new(obj, name, json_stringn((const char *)b, n));
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), key[64];
    if (!out)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                     (i + 2 < n ? b[i + 2] : 0);
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = 0;
    snprintf(key, sizeof key, "%s_base64", name);
    int rc = json_object_set_new(obj, key, json_string(out));
    free(out);
    return rc;
}

/* Text for a terminal: control characters would move the cursor. */
static void clean_print(const uint8_t *b, size_t n, FILE *f)
{
    for (size_t i = 0; i < n; i++)
        fputc(b[i] < 0x20 || b[i] == 0x7f ? '?' : b[i], f);
}

/* VALUE "-" reads standard input (at most STDIN_MAX bytes). */
static int read_value(ctl_ctx *c, const char *arg, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    if (strcmp(arg, "-")) {
        *len = strlen(arg);
        return 0;
    }
    size_t cap = 65536, n = 0;
    uint8_t *p = malloc(cap);
    while (p) {
        if (n == cap) {
            if (cap >= STDIN_MAX) {
                free(p);
                return ctl_fail(c, AOS_ERR_TOO_BIG, "standard input is over %u bytes",
                                STDIN_MAX);
            }
            uint8_t *q = realloc(p, cap * 2);
            if (!q)
                break;
            p = q;
            cap *= 2;
        }
        ssize_t r = read(STDIN_FILENO, p + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            free(p);
            return ctl_fail(c, AOS_ERR_IO, "reading standard input: %s", strerror(errno));
        }
        if (r == 0) {
            *buf = p;
            *len = n;
            return 0;
        }
        n += (size_t)r;
    }
    free(p);
    return ctl_fail(c, AOS_ERR_NOMEM, "out of memory reading standard input");
}

/* Read the value argument (standard input for "-") and open the call. On success *val and
 * *len are what to send and the caller frees *in (NULL when the value is arg itself); on
 * failure nothing is left to free. */
static int begin_value(ctl_ctx *c, const char *agent, const char *arg, uint8_t **in,
                       const uint8_t **val, size_t *len, aos_call_opts *o)
{
    int rc = read_value(c, arg, in, len);
    if (rc)
        return rc;
    if ((rc = begin(c, agent, o))) {
        free(*in);
        *in = NULL;
        return rc;
    }
    *val = *in ? *in : (const uint8_t *)arg;
    return 0;
}

/* ---- kv ---------------------------------------------------------------------------- */

static int cmd_kv_put(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[3], *ifv = NULL, *ttl = NULL;
    const opt opts[] = {{"--if-version", &ifv}, {"--ttl", &ttl}};
    const char *usage = "kv put AGENT KEY VALUE [--if-version N] [--ttl MS]";
    int rc = parse_args(c, argc, argv, opts, 2, pos, 3, 3, usage);
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    aos_kv_put_opts po = {0};
    if (ifv) {
        po.cas = 1;
        if (parse_u64(ifv, INT64_MAX, &po.if_version))
            return ctl_fail(c, AOS_ERR_USAGE, "--if-version wants a version number (0: the key "
                            "must not exist), not \"%s\"", ifv);
    }
    if (ttl && (parse_u64(ttl, INT64_MAX, &po.ttl_ms) || !po.ttl_ms))
        return ctl_fail(c, AOS_ERR_USAGE, "--ttl wants milliseconds (at least 1), not \"%s\"",
                        ttl);
    uint8_t *in;
    const uint8_t *val;
    size_t len;
    aos_call_opts o;
    if ((rc = begin_value(c, pos[0], pos[2], &in, &val, &len, &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    uint64_t version;
    aos_err e = aos_kv_put(c->conn, &o, pos[1], val, len, &po, &version, why,
                           sizeof why);
    free(in);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:I}", "agent", pos[0], "key", pos[1],
                                           "version", (json_int_t)version));
    printf("version %" PRIu64 "\n", version);
    return 0;
}

static int cmd_kv_get(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[2];
    int rc = parse_args(c, argc, argv, NULL, 0, pos, 2, 2, "kv get AGENT KEY");
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    uint8_t *val;
    size_t len;
    uint64_t version;
    aos_err e = aos_kv_get(c->conn, &o, pos[1], &val, &len, &version, why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json) {
        json_t *d = json_pack("{s:s,s:s,s:I}", "agent", pos[0], "key", pos[1], "version",
                              (json_int_t)version);
        if (d && json_bytes(d, "value", val, len)) {
            json_decref(d);
            d = NULL;
        }
        free(val);
        return ctl_print_json(c, d);
    }
    /* the value alone, as stored; a newline only for a person at a terminal */
    fwrite(val, 1, len, stdout);
    if (isatty(STDOUT_FILENO) && (len == 0 || val[len - 1] != '\n'))
        fputc('\n', stdout);
    free(val);
    return 0;
}

static int cmd_kv_ls(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[2], *lim = NULL;
    const opt opts[] = {{"--limit", &lim}};
    int rc = parse_args(c, argc, argv, opts, 1, pos, 1, 2, "kv ls AGENT [PREFIX] [--limit N]");
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    uint64_t limit = LS_DEFAULT;
    if (lim && (parse_u64(lim, LS_MAX, &limit) || !limit))
        return ctl_fail(c, AOS_ERR_USAGE, "--limit wants 1 to %u, not \"%s\"", LS_MAX, lim);
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    json_t *keys = c->json ? json_array() : NULL;
    char why[AOS_ERRMSG_MAX + 1], *after = NULL;
    uint64_t shown = 0;
    int more = 0;
    for (;;) {
        aos_kv_page *pg;
        uint64_t want = limit - shown < 1000 ? limit - shown : 1000;
        aos_err e = aos_kv_list(c->conn, &o, pos[1], after, (uint32_t)want, 0, &pg, why,
                                sizeof why);
        free(after);
        after = NULL;
        if (e) {
            json_decref(keys);
            return ctl_fail(c, e, "%s", why);
        }
        for (size_t i = 0; i < pg->n; i++, shown++) {
            const aos_kv_entry *en = &pg->entries[i];
            if (keys)
                json_array_append_new(keys, json_pack("{s:s,s:I,s:I,s:I}", "key", en->key,
                                                      "version", (json_int_t)en->version,
                                                      "size", (json_int_t)en->size,
                                                      "expires_at_ms",
                                                      (json_int_t)en->expires_at_ms));
            else {
                clean_print((const uint8_t *)en->key, strlen(en->key), stdout);
                fputc('\n', stdout);
            }
        }
        if (pg->next && shown < limit)
            after = strdup(pg->next);
        more = pg->next != NULL && shown >= limit;
        aos_kv_page_free(pg);
        if (!after)
            break;
    }
    if (keys)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:o,s:b}", "agent", pos[0], "prefix",
                                           pos[1] ? pos[1] : "", "keys", keys, "truncated",
                                           more));
    if (more)
        fprintf(stderr, "aosctl: more keys follow; raise --limit to see them\n");
    return 0;
}

static int cmd_kv_rm(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[2], *ifv = NULL;
    const opt opts[] = {{"--if-version", &ifv}};
    int rc = parse_args(c, argc, argv, opts, 1, pos, 2, 2, "kv rm AGENT KEY [--if-version N]");
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    uint64_t v;
    if (ifv && (parse_u64(ifv, INT64_MAX, &v) || !v))
        return ctl_fail(c, AOS_ERR_USAGE, "--if-version wants a version number, not \"%s\"",
                        ifv);
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    aos_err e = aos_kv_delete(c->conn, &o, pos[1], ifv ? &v : NULL, why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:b}", "agent", pos[0], "key", pos[1],
                                           "deleted", 1));
    return 0;
}

/* ---- queues ----------------------------------------------------------------------------- */

static int cmd_queue_send(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[3], *delay = NULL, *tries = NULL, *to = NULL;
    const opt opts[] = {{"--delay", &delay}, {"--max-tries", &tries}, {"--to", &to}};
    const char *usage = "queue send AGENT QUEUE BODY [--delay MS] [--max-tries N] [--to AGENT]";
    int rc = parse_args(c, argc, argv, opts, 3, pos, 3, 3, usage);
    if (rc || (rc = agent_ok(c, pos[0])) || (to && (rc = agent_ok(c, to))))
        return rc;
    aos_queue_send_opts so = {.to_agent = to};
    uint64_t v;
    if (delay && parse_u64(delay, INT64_MAX, &so.delay_ms))
        return ctl_fail(c, AOS_ERR_USAGE, "--delay wants milliseconds, not \"%s\"", delay);
    if (tries) {
        if (parse_u64(tries, 1000, &v) || !v)
            return ctl_fail(c, AOS_ERR_USAGE, "--max-tries wants 1 to 1000, not \"%s\"", tries);
        so.max_tries = (uint32_t)v;
    }
    uint8_t *in;
    const uint8_t *val;
    size_t len;
    aos_call_opts o;
    if ((rc = begin_value(c, pos[0], pos[2], &in, &val, &len, &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    uint64_t id;
    aos_err e = aos_queue_send(c->conn, &o, pos[1], val, len, &so, &id, why,
                               sizeof why);
    free(in);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:I}", "agent", to ? to : pos[0], "queue",
                                           pos[1], "id", (json_int_t)id));
    printf("%" PRIu64 "\n", id);
    return 0;
}

static int cmd_queue_recv(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[2], *max = NULL, *wait = NULL, *vis = NULL;
    const opt opts[] = {{"--max", &max}, {"--wait", &wait}, {"--visibility", &vis}};
    const char *usage = "queue recv AGENT QUEUE [--max N] [--wait MS] [--visibility MS]";
    int rc = parse_args(c, argc, argv, opts, 3, pos, 2, 2, usage);
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    uint64_t m = 1, w = 0, v = 0;
    if (max && (parse_u64(max, 100, &m) || !m))
        return ctl_fail(c, AOS_ERR_USAGE, "--max wants 1 to 100, not \"%s\"", max);
    if (wait && parse_u64(wait, 600000, &w))
        return ctl_fail(c, AOS_ERR_USAGE, "--wait wants 0 to 600000 ms, not \"%s\"", wait);
    if (vis && (parse_u64(vis, 12u * 3600 * 1000, &v) || !v))
        return ctl_fail(c, AOS_ERR_USAGE, "--visibility wants 1 to 43200000 ms, not \"%s\"",
                        vis);
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    aos_queue_msgs *ms;
    aos_err e = aos_queue_recv(c->conn, &o, pos[1], (uint32_t)m, (uint32_t)v, (uint32_t)w, &ms,
                               why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    json_t *arr = c->json ? json_array() : NULL;
    for (size_t i = 0; i < ms->n; i++) {
        const aos_queue_msg *q = &ms->msgs[i];
        char rcpt[2 * AOS_RECEIPT_LEN + 1];
        hex(q->receipt, AOS_RECEIPT_LEN, rcpt);
        if (arr) {
            json_t *d = json_pack("{s:I,s:i,s:s,s:I}", "id", (json_int_t)q->id, "tries",
                                  (int)q->tries, "receipt", rcpt, "enqueued_ms",
                                  (json_int_t)q->enqueued_ms);
            if (d && q->from_agent)
                json_object_set_new(d, "from_agent", json_string(q->from_agent));
            if (d)
                json_bytes(d, "body", q->body, q->len);
            json_array_append_new(arr, d);
        } else {
            printf("%" PRIu64 "\t%u\t%s\t", q->id, q->tries, rcpt);
            clean_print(q->body, q->len, stdout);
            fputc('\n', stdout);
        }
    }
    aos_queue_msgs_free(ms);
    if (arr)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:o}", "agent", pos[0], "queue", pos[1],
                                           "messages", arr));
    return 0;
}

static int ack_common(ctl_ctx *c, int argc, char **argv, int nack)
{
    const char *pos[4], *delay = NULL;
    const opt opts[] = {{"--delay", &delay}};
    const char *usage = nack ? "queue nack AGENT QUEUE ID RECEIPT [--delay MS]"
                             : "queue ack AGENT QUEUE ID RECEIPT";
    int rc = parse_args(c, argc, argv, opts, nack ? 1 : 0, pos, 4, 4, usage);
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    uint64_t id, d = 0;
    uint8_t receipt[AOS_RECEIPT_LEN];
    if (parse_u64(pos[2], INT64_MAX, &id) || !id)
        return ctl_fail(c, AOS_ERR_USAGE, "ID wants a message id, not \"%s\"", pos[2]);
    if (unhex(pos[3], receipt, sizeof receipt))
        return ctl_fail(c, AOS_ERR_USAGE, "RECEIPT wants the %d hex digits queue recv printed",
                        2 * AOS_RECEIPT_LEN);
    if (delay && parse_u64(delay, 12u * 3600 * 1000, &d))
        return ctl_fail(c, AOS_ERR_USAGE, "--delay wants 0 to 43200000 ms, not \"%s\"", delay);
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    int dead = 0;
    aos_err e = nack ? aos_queue_nack(c->conn, &o, pos[1], id, receipt, (uint32_t)d, &dead, why,
                                      sizeof why)
                     : aos_queue_ack(c->conn, &o, pos[1], id, receipt, why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json) {
        json_t *j = json_pack("{s:s,s:s,s:I}", "agent", pos[0], "queue", pos[1], "id",
                              (json_int_t)id);
        if (j)
            json_object_set_new(j, nack ? "dead" : "acked", json_boolean(nack ? dead : 1));
        return ctl_print_json(c, j);
    }
    if (nack && dead)
        printf("dead-lettered to %s.dead\n", pos[1]);
    return 0;
}

static int cmd_queue_ack(ctl_ctx *c, int argc, char **argv)
{
    return ack_common(c, argc, argv, 0);
}

static int cmd_queue_nack(ctl_ctx *c, int argc, char **argv)
{
    return ack_common(c, argc, argv, 1);
}

static int cmd_queue_ls(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[1];
    int rc = parse_args(c, argc, argv, NULL, 0, pos, 1, 1, "queue ls AGENT");
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    aos_queue_infos *l;
    aos_err e = aos_queue_list(c->conn, &o, &l, why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < l->n; i++)
            json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:I}", "queue",
                                                 l->queues[i].queue, "ready",
                                                 (json_int_t)l->queues[i].ready, "inflight",
                                                 (json_int_t)l->queues[i].inflight, "delayed",
                                                 (json_int_t)l->queues[i].delayed));
        aos_queue_infos_free(l);
        return ctl_print_json(c, json_pack("{s:s,s:o}", "agent", pos[0], "queues", arr));
    }
    printf("%-32s %10s %10s %10s\n", "QUEUE", "READY", "INFLIGHT", "DELAYED");
    for (size_t i = 0; i < l->n; i++)
        printf("%-32s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "\n", l->queues[i].queue,
               l->queues[i].ready, l->queues[i].inflight, l->queues[i].delayed);
    aos_queue_infos_free(l);
    return 0;
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static int cmd_checkpoint_ls(ctl_ctx *c, int argc, char **argv)
{
    const char *pos[2], *lim = NULL;
    const opt opts[] = {{"--limit", &lim}};
    int rc = parse_args(c, argc, argv, opts, 1, pos, 1, 2,
                        "checkpoint ls AGENT [NAME] [--limit N]");
    if (rc || (rc = agent_ok(c, pos[0])))
        return rc;
    uint64_t limit = 100;
    if (lim && (parse_u64(lim, 1000, &limit) || !limit))
        return ctl_fail(c, AOS_ERR_USAGE, "--limit wants 1 to 1000, not \"%s\"", lim);
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    aos_ckpt_page *l;
    aos_err e = aos_ckpt_list(c->conn, &o, pos[1], (uint32_t)limit, &l, why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < l->n; i++) {
            const aos_ckpt_info *ci = &l->items[i];
            json_t *d = json_pack("{s:s,s:I,s:I,s:I}", "name", ci->name, "version",
                                  (json_int_t)ci->version, "size", (json_int_t)ci->size,
                                  "created_ms", (json_int_t)ci->created_ms);
            if (d && ci->meta) {
                json_t *m = json_loads(ci->meta, JSON_DECODE_ANY, NULL);
                json_object_set_new(d, "meta", m ? m : json_string(ci->meta));
            }
            json_array_append_new(arr, d);
        }
        aos_ckpt_page_free(l);
        return ctl_print_json(c, json_pack("{s:s,s:o}", "agent", pos[0], "checkpoints", arr));
    }
    printf("%-24s %8s %10s %-24s %s\n", "NAME", "VERSION", "SIZE", "CREATED", "META");
    for (size_t i = 0; i < l->n; i++) {
        const aos_ckpt_info *ci = &l->items[i];
        char when[32];
        time_t t = (time_t)(ci->created_ms / 1000);
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        printf("%-24s %8" PRIu64 " %10" PRIu64 " %-24s ", ci->name, ci->version, ci->size,
               when);
        if (ci->meta)
            clean_print((const uint8_t *)ci->meta, strlen(ci->meta), stdout);
        fputc('\n', stdout);
    }
    aos_ckpt_page_free(l);
    return 0;
}

/* ---- the table ---------------------------------------------------------------------------- */

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define A_AGENT                                                                            \
    "{\"name\":\"AGENT\",\"kind\":\"positional\",\"required\":true,\"type\":\"string\","     \
    "\"pattern\":\"^[A-Za-z0-9_.:-]{1,64}$\",\"summary\":\"the agent whose namespace to "  \
    "use\"}"
#define A_KEY                                                                              \
    "{\"name\":\"KEY\",\"kind\":\"positional\",\"required\":true,\"type\":\"string\","       \
    "\"maxLength\":512,\"summary\":\"UTF-8 without control characters\"}"
#define A_QUEUE                                                                            \
    "{\"name\":\"QUEUE\",\"kind\":\"positional\",\"required\":true,\"type\":\"string\","     \
    "\"pattern\":\"^[A-Za-z0-9_.:-]{1,128}$\"}"
#define A_ID_RECEIPT                                                                       \
    "{\"name\":\"ID\",\"kind\":\"positional\",\"required\":true,\"type\":\"integer\","      \
    "\"minimum\":1,\"summary\":\"the message id queue recv printed\"},"                    \
    "{\"name\":\"RECEIPT\",\"kind\":\"positional\",\"required\":true,\"type\":\"string\","   \
    "\"pattern\":\"^[0-9a-f]{32}$\",\"summary\":\"the receipt of that delivery\"}"
#define O(name, val, type, summary)                                                        \
    "{\"name\":\"" name "\",\"kind\":\"option\",\"value\":\"" val "\",\"required\":false,"  \
    "\"type\":\"" type "\",\"summary\":\"" summary "\"}"

static const char kv_put_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"key\",\"version\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"key\":{\"type\":\"string\"},"
    "\"version\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"the key's new "
    "version\"}}}";
static const char kv_get_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"key\",\"version\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"key\":{\"type\":\"string\"},"
    "\"version\":{\"type\":\"integer\",\"minimum\":1},"
    "\"value\":{\"type\":\"string\",\"description\":\"the value, when it is UTF-8\"},"
    "\"value_base64\":{\"type\":\"string\",\"description\":\"the value, when it is not\"}}}";
static const char kv_ls_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"prefix\",\"keys\",\"truncated\"],"
    "\"properties\":{\"agent\":{\"type\":\"string\"},\"prefix\":{\"type\":\"string\"},"
    "\"keys\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"key\","
    "\"version\",\"size\",\"expires_at_ms\"],\"properties\":{\"key\":{\"type\":\"string\"},"
    "\"version\":{\"type\":\"integer\"},\"size\":{\"type\":\"integer\"},"
    "\"expires_at_ms\":{\"type\":\"integer\",\"description\":\"epoch ms, 0: never\"}}}},"
    "\"truncated\":{\"type\":\"boolean\",\"description\":\"more keys than --limit\"}}}";
static const char kv_rm_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"key\",\"deleted\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"key\":{\"type\":\"string\"},"
    "\"deleted\":{\"const\":true}}}";
static const char q_send_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"queue\",\"id\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\",\"description\":\"whose queue (--to, or AGENT)\"},"
    "\"queue\":{\"type\":\"string\"},\"id\":{\"type\":\"integer\",\"minimum\":1}}}";
static const char q_recv_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"queue\",\"messages\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"queue\":{\"type\":\"string\"},"
    "\"messages\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"id\","
    "\"tries\",\"receipt\",\"enqueued_ms\"],\"properties\":{\"id\":{\"type\":\"integer\"},"
    "\"tries\":{\"type\":\"integer\",\"description\":\"deliveries, this one included\"},"
    "\"receipt\":{\"type\":\"string\",\"description\":\"hex; pass to queue ack\"},"
    "\"enqueued_ms\":{\"type\":\"integer\"},\"from_agent\":{\"type\":\"string\"},"
    "\"body\":{\"type\":\"string\"},\"body_base64\":{\"type\":\"string\"}}}}}}";
static const char q_ack_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"queue\",\"id\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"queue\":{\"type\":\"string\"},"
    "\"id\":{\"type\":\"integer\"},\"acked\":{\"const\":true},"
    "\"dead\":{\"type\":\"boolean\",\"description\":\"nack: moved to QUEUE.dead\"}}}";
static const char q_ls_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"queues\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"queues\":{\"type\":\"array\",\"items\":{"
    "\"type\":\"object\",\"required\":[\"queue\",\"ready\",\"inflight\",\"delayed\"],"
    "\"properties\":{\"queue\":{\"type\":\"string\"},\"ready\":{\"type\":\"integer\"},"
    "\"inflight\":{\"type\":\"integer\"},\"delayed\":{\"type\":\"integer\"}}}}}}";
static const char ck_ls_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"checkpoints\"],\"properties\":{"
    "\"agent\":{\"type\":\"string\"},\"checkpoints\":{\"type\":\"array\",\"items\":{"
    "\"type\":\"object\",\"required\":[\"name\",\"version\",\"size\",\"created_ms\"],"
    "\"properties\":{\"name\":{\"type\":\"string\"},\"version\":{\"type\":\"integer\"},"
    "\"size\":{\"type\":\"integer\"},\"created_ms\":{\"type\":\"integer\"},"
    "\"meta\":{\"description\":\"the checkpoint's JSON metadata\"}}}}}}";

static const ctl_cmd storage_cmds[] = {
    {"kv put", "AGENT KEY VALUE [--if-version N] [--ttl MS]",
     "store VALUE under KEY (VALUE - reads standard input); exit 5 on a version conflict",
     "[" A_AGENT "," A_KEY ",{\"name\":\"VALUE\",\"kind\":\"positional\",\"required\":true,"
     "\"type\":\"string\",\"summary\":\"the bytes to store, - for standard input\"},"
     O("--if-version", "N", "integer", "compare-and-set: only if the key is at version N "
       "(0: only if it does not exist)") ","
     O("--ttl", "MS", "integer", "the key expires after MS milliseconds") "]",
     kv_put_out, cmd_kv_put},
    {"kv get", "AGENT KEY", "print the value of KEY alone; exit 3 if there is none",
     "[" A_AGENT "," A_KEY "]", kv_get_out, cmd_kv_get},
    {"kv ls", "AGENT [PREFIX] [--limit N]", "list the keys starting with PREFIX, in order",
     "[" A_AGENT ",{\"name\":\"PREFIX\",\"kind\":\"positional\",\"required\":false,"
     "\"type\":\"string\"}," O("--limit", "N", "integer", "at most N keys (default 1000)") "]",
     kv_ls_out, cmd_kv_ls},
    {"kv rm", "AGENT KEY [--if-version N]", "delete KEY; exit 3 if there is none",
     "[" A_AGENT "," A_KEY ","
     O("--if-version", "N", "integer", "only if the key is at version N (else exit 5)") "]",
     kv_rm_out, cmd_kv_rm},
    {"queue send", "AGENT QUEUE BODY [--delay MS] [--max-tries N] [--to AGENT]",
     "append a message (BODY - reads standard input); prints its id",
     "[" A_AGENT "," A_QUEUE ",{\"name\":\"BODY\",\"kind\":\"positional\",\"required\":true,"
     "\"type\":\"string\"}," O("--delay", "MS", "integer", "invisible for MS milliseconds first")
     "," O("--max-tries", "N", "integer", "deliveries before it moves to QUEUE.dead (default "
           "5)") ","
     O("--to", "AGENT", "string", "mail: into that agent's queue inbox (QUEUE must be inbox)")
     "]", q_send_out, cmd_queue_send},
    {"queue recv", "AGENT QUEUE [--max N] [--wait MS] [--visibility MS]",
     "receive messages (ID TRIES RECEIPT BODY per line); ack them before the visibility ends",
     "[" A_AGENT "," A_QUEUE "," O("--max", "N", "integer", "up to N messages (default 1)") ","
     O("--wait", "MS", "integer", "wait up to MS for a message to arrive (default 0)") ","
     O("--visibility", "MS", "integer", "hidden from others for MS (default 30000)") "]",
     q_recv_out, cmd_queue_recv},
    {"queue ack", "AGENT QUEUE ID RECEIPT",
     "done with a received message; exit 3 if that delivery is no longer current",
     "[" A_AGENT "," A_QUEUE "," A_ID_RECEIPT "]", q_ack_out, cmd_queue_ack},
    {"queue nack", "AGENT QUEUE ID RECEIPT [--delay MS]",
     "give a received message back; past its last try it moves to QUEUE.dead",
     "[" A_AGENT "," A_QUEUE "," A_ID_RECEIPT ","
     O("--delay", "MS", "integer", "visible again after MS") "]", q_ack_out, cmd_queue_nack},
    {"queue ls", "AGENT", "the agent's queues with ready, in-flight and delayed counts",
     "[" A_AGENT "]", q_ls_out, cmd_queue_ls},
    {"checkpoint ls", "AGENT [NAME] [--limit N]",
     "the agent's checkpoints, newest version first",
     "[" A_AGENT ",{\"name\":\"NAME\",\"kind\":\"positional\",\"required\":false,"
     "\"type\":\"string\",\"summary\":\"only this checkpoint name\"},"
     O("--limit", "N", "integer", "at most N (default 100)") "]", ck_ls_out,
     cmd_checkpoint_ls},
};

const ctl_group ctl_group_storage = {storage_cmds, sizeof storage_cmds / sizeof storage_cmds[0]};
