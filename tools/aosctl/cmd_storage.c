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

#define LS_MAX 100000u
#define STDIN_MAX (4u << 20)

/* ---- small helpers -------------------------------------------------------------------- */

static int unhex(const char *s, uint8_t *out, size_t n);

static int check_receipt(const char *val, char *why, size_t whylen)
{
    uint8_t r[AOS_RECEIPT_LEN];
    if (unhex(val, r, sizeof r) == 0)
        return 0;
    snprintf(why, whylen, "RECEIPT wants the %d hex digits queue recv printed",
             2 * AOS_RECEIPT_LEN);
    return -1;
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

static int cmd_kv_put(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[3] = {ctl_str(v, "AGENT"), ctl_str(v, "KEY"), ctl_str(v, "VALUE")};
    aos_kv_put_opts po = {0};
    po.cas = ctl_given(v, "--if-version");
    po.if_version = (uint64_t)ctl_int(v, "--if-version");
    po.ttl_ms = (uint64_t)ctl_int(v, "--ttl");
    int rc;
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

static int cmd_kv_get(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[2] = {ctl_str(v, "AGENT"), ctl_str(v, "KEY")};
    int rc;
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

static int cmd_kv_ls(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[2] = {ctl_str(v, "AGENT"), ctl_str(v, "PREFIX")};
    uint64_t limit = (uint64_t)ctl_int(v, "--limit");
    int rc;
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

static int cmd_kv_rm(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[2] = {ctl_str(v, "AGENT"), ctl_str(v, "KEY")};
    int ifv = ctl_given(v, "--if-version");
    uint64_t version = (uint64_t)ctl_int(v, "--if-version");
    int rc;
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    aos_err e = aos_kv_delete(c->conn, &o, pos[1], ifv ? &version : NULL, why, sizeof why);
    if (e)
        return ctl_fail(c, e, "%s", why);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s,s:s,s:b}", "agent", pos[0], "key", pos[1],
                                           "deleted", 1));
    return 0;
}

/* ---- queues ----------------------------------------------------------------------------- */

static int cmd_queue_send(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[3] = {ctl_str(v, "AGENT"), ctl_str(v, "QUEUE"), ctl_str(v, "BODY")};
    const char *to = ctl_str(v, "--to");
    aos_queue_send_opts so = {.to_agent = to};
    so.delay_ms = (uint64_t)ctl_int(v, "--delay");
    /* 0 leaves the server's default, which --desc states */
    so.max_tries = ctl_given(v, "--max-tries") ? (uint32_t)ctl_int(v, "--max-tries") : 0;
    int rc;
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

static int cmd_queue_recv(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[2] = {ctl_str(v, "AGENT"), ctl_str(v, "QUEUE")};
    uint64_t m = (uint64_t)ctl_int(v, "--max"), w = (uint64_t)ctl_int(v, "--wait");
    /* 0 leaves the server's default, which --desc states */
    uint64_t vis = ctl_given(v, "--visibility") ? (uint64_t)ctl_int(v, "--visibility") : 0;
    int rc;
    aos_call_opts o;
    if ((rc = begin(c, pos[0], &o)))
        return rc;
    char why[AOS_ERRMSG_MAX + 1];
    aos_queue_msgs *ms;
    aos_err e = aos_queue_recv(c->conn, &o, pos[1], (uint32_t)m, (uint32_t)vis, (uint32_t)w, &ms,
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

static int ack_common(ctl_ctx *c, const ctl_vals *v, int nack)
{
    const char *pos[2] = {ctl_str(v, "AGENT"), ctl_str(v, "QUEUE")};
    uint64_t id = (uint64_t)ctl_int(v, "ID"), d = nack ? (uint64_t)ctl_int(v, "--delay") : 0;
    uint8_t receipt[AOS_RECEIPT_LEN];
    int rc;
    if (unhex(ctl_str(v, "RECEIPT"), receipt, sizeof receipt)) /* checked by the table */
        return ctl_fail(c, AOS_ERR_INTERNAL, "RECEIPT passed its check but is not hex");
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

static int cmd_queue_ack(ctl_ctx *c, const ctl_vals *v)
{
    return ack_common(c, v, 0);
}

static int cmd_queue_nack(ctl_ctx *c, const ctl_vals *v)
{
    return ack_common(c, v, 1);
}

static int cmd_queue_ls(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[1] = {ctl_str(v, "AGENT")};
    int rc;
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

static int cmd_checkpoint_ls(ctl_ctx *c, const ctl_vals *v)
{
    const char *pos[2] = {ctl_str(v, "AGENT"), ctl_str(v, "NAME")};
    uint64_t limit = (uint64_t)ctl_int(v, "--limit");
    int rc;
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

/* The arguments most commands share; a designated initializer each, so a table reads as the
 * usage line does. */
#define A_AGENT                                                                            \
    {.name = "AGENT", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,64}$",                 \
     .check = ctl_check_agent, .summary = "the agent whose namespace to use"}
#define A_KEY                                                                              \
    {.name = "KEY", .required = 1, .summary = "UTF-8 without control characters, at most " \
     "512 bytes"}
#define A_QUEUE                                                                            \
    {.name = "QUEUE", .required = 1, .pattern = "^[A-Za-z0-9_.:-]{1,128}$",                \
     .summary = "the queue's name"}
#define A_ID_RECEIPT                                                                       \
    {.name = "ID", .required = 1, .type = CTL_INTEGER, .min = 1, .max = INT64_MAX,         \
     .summary = "the message id queue recv printed"},                                      \
    {.name = "RECEIPT", .required = 1, .pattern = "^[0-9a-fA-F]{32}$",                     \
     .check = check_receipt, .summary = "the receipt of that delivery"}
#define F_INT(nm, val, lo, hi, dflt, sum)                                                  \
    {.name = nm, .type = CTL_INTEGER, .value = val, .min = lo, .max = hi, .def = dflt,     \
     .summary = sum}

_Static_assert(AOS_RECEIPT_LEN == 16, "RECEIPT's pattern says 32 hex digits");
#define MS_12H (12 * 3600 * 1000)

static const ctl_arg kv_put_args[] = {
    A_AGENT,
    A_KEY,
    {.name = "VALUE", .required = 1, .summary = "the bytes to store, - for standard input"},
    F_INT("--if-version", "N", 0, INT64_MAX, NULL,
          "compare-and-set: only if the key is at version N (0: only if it does not exist)"),
    F_INT("--ttl", "MS", 1, INT64_MAX, NULL, "the key expires after MS milliseconds"),
};
static const ctl_arg kv_get_args[] = {A_AGENT, A_KEY};
static const ctl_arg kv_ls_args[] = {
    A_AGENT,
    {.name = "PREFIX", .summary = "only keys starting with it"},
    F_INT("--limit", "N", 1, LS_MAX, "1000", "at most N keys"),
};
static const ctl_arg kv_rm_args[] = {
    A_AGENT,
    A_KEY,
    F_INT("--if-version", "N", 1, INT64_MAX, NULL,
          "only if the key is at version N (else exit 5)"),
};
static const ctl_arg q_send_args[] = {
    A_AGENT,
    A_QUEUE,
    {.name = "BODY", .required = 1, .summary = "the message, - for standard input"},
    F_INT("--delay", "MS", 0, INT64_MAX, "0", "invisible for MS milliseconds first"),
    F_INT("--max-tries", "N", 1, 1000, "5", "deliveries before it moves to QUEUE.dead"),
    {.name = "--to", .value = "AGENT", .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent,
     .summary = "mail: into that agent's queue inbox (QUEUE must be inbox)"},
};
static const ctl_arg q_recv_args[] = {
    A_AGENT,
    A_QUEUE,
    F_INT("--max", "N", 1, 100, "1", "up to N messages"),
    F_INT("--wait", "MS", 0, 600000, "0", "wait up to MS for a message to arrive"),
    F_INT("--visibility", "MS", 1, MS_12H, "30000", "hidden from others for MS"),
};
static const ctl_arg q_ack_args[] = {A_AGENT, A_QUEUE, A_ID_RECEIPT};
static const ctl_arg q_nack_args[] = {
    A_AGENT,
    A_QUEUE,
    A_ID_RECEIPT,
    F_INT("--delay", "MS", 0, MS_12H, "0", "visible again after MS"),
};
static const ctl_arg q_ls_args[] = {A_AGENT};
static const ctl_arg ck_ls_args[] = {
    A_AGENT,
    {.name = "NAME", .summary = "only this checkpoint name"},
    F_INT("--limit", "N", 1, 1000, "100", "at most N"),
};

static const ctl_cmd storage_cmds[] = {
    {"kv put", "store VALUE under KEY (VALUE - reads standard input); exit 5 on a version "
     "conflict", CTL_ARGS(kv_put_args), kv_put_out, cmd_kv_put},
    {"kv get", "print the value of KEY alone; exit 3 if there is none", CTL_ARGS(kv_get_args),
     kv_get_out, cmd_kv_get},
    {"kv ls", "list the keys starting with PREFIX, in order", CTL_ARGS(kv_ls_args), kv_ls_out,
     cmd_kv_ls},
    {"kv rm", "delete KEY; exit 3 if there is none", CTL_ARGS(kv_rm_args), kv_rm_out,
     cmd_kv_rm},
    {"queue send", "append a message (BODY - reads standard input); prints its id",
     CTL_ARGS(q_send_args), q_send_out, cmd_queue_send},
    {"queue recv", "receive messages (ID TRIES RECEIPT BODY per line); ack them before the "
     "visibility ends", CTL_ARGS(q_recv_args), q_recv_out, cmd_queue_recv},
    {"queue ack", "done with a received message; exit 3 if that delivery is no longer current",
     CTL_ARGS(q_ack_args), q_ack_out, cmd_queue_ack},
    {"queue nack", "give a received message back; past its last try it moves to QUEUE.dead",
     CTL_ARGS(q_nack_args), q_ack_out, cmd_queue_nack},
    {"queue ls", "the agent's queues with ready, in-flight and delayed counts",
     CTL_ARGS(q_ls_args), q_ls_out, cmd_queue_ls},
    {"checkpoint ls", "the agent's checkpoints, newest version first", CTL_ARGS(ck_ls_args),
     ck_ls_out, cmd_checkpoint_ls},
};

const ctl_group ctl_group_storage = {storage_cmds, sizeof storage_cmds / sizeof storage_cmds[0]};
