/* aosctl msg send AGENT TEXT, msg ls AGENT: an operator's mail into an agent's durable inbox
 * (from aos:operator, through the kernel's msg.send) and a look at that inbox, nothing taken. */
#include "aosctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "aos/msg.h"
#include "msg.pb-c.h"

static json_t *jbytes(ProtobufCBinaryData b)
{
    if (!aos_utf8_valid(b.data, b.len))
        return json_string("?");
    return json_stringn((const char *)b.data, b.len);
}

static void hex_of(ProtobufCBinaryData b, char *out, size_t cap)
{
    out[0] = 0;
    if (b.len && b.len * 2 + 1 <= cap)
        aos_hex(b.data, b.len, out);
}

static int cmd_send(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "AGENT"), *text = ctl_str(v, "TEXT");
    size_t len = strlen(text);
    if (len > AOS_MSG_BODY_MAX)
        return ctl_fail(c, AOS_ERR_TOO_BIG, "a message is at most %u bytes, not %zu",
                        AOS_MSG_BODY_MAX, len);
    Aos__Msg__SendRequest q = AOS__MSG__SEND_REQUEST__INIT;
    q.to = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    q.body = (ProtobufCBinaryData){len, (uint8_t *)text};
    uint8_t id[AOS_MSG_ID_LEN];
    char idhex[2 * AOS_MSG_ID_LEN + 1];
    if (ctl_given(v, "--id")) {
        /* the operator's idempotency key: the same id sent again is one message */
        const char *h = ctl_str(v, "--id");
        for (size_t i = 0; i < AOS_MSG_ID_LEN; i++) {
            unsigned x;
            if (sscanf(h + 2 * i, "%2x", &x) != 1)
                return ctl_fail(c, AOS_ERR_USAGE, "--id is 32 hex digits");
            id[i] = (uint8_t)x;
        }
        q.msg_id = (ProtobufCBinaryData){sizeof id, id};
    }
    aos_reply r;
    if (ctl_call(c, NULL, "msg.send", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Msg__SendReply *s = aos__msg__send_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!s || s->msg_id.len != AOS_MSG_ID_LEN) {
        if (s)
            aos__msg__send_reply__free_unpacked(s, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "msg.send: aosd sent a malformed SendReply");
    }
    hex_of(s->msg_id, idhex, sizeof idhex);
    uint64_t qid = s->queue_id;
    aos__msg__send_reply__free_unpacked(s, NULL);
    if (c->json)
        return ctl_print_json(c, json_pack("{s:s, s:s, s:s, s:I}", "to", agent, "from",
                                           AOS_MSG_OPERATOR, "msg_id", idhex, "queue_id",
                                           (json_int_t)qid));
    printf("sent to %s's inbox: message %s (queue id %" PRIu64 ")\n", agent, idhex, qid);
    return 0;
}

static int cmd_ls(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "AGENT");
    Aos__Msg__LsRequest q = AOS__MSG__LS_REQUEST__INIT;
    q.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    q.max = (uint32_t)ctl_int(v, "--limit");
    aos_reply r;
    if (ctl_call(c, NULL, "msg.ls", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Msg__LsReply *l = aos__msg__ls_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!l)
        return ctl_fail(c, AOS_ERR_PROTO, "msg.ls: aosd sent a malformed LsReply");
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < l->n_mail; i++) {
            const Aos__Msg__LsEntry *e = l->mail[i];
            json_t *o = json_pack("{s:I, s:o, s:I, s:I}", "queue_id", (json_int_t)e->queue_id,
                                  "state", jbytes(e->state), "tries", (json_int_t)e->tries,
                                  "enqueued_ms", (json_int_t)e->enqueued_ms);
            if (e->mail) {
                char idh[2 * AOS_MSG_ID_LEN + 1], corr[2 * AOS_MSG_ID_LEN + 1];
                hex_of(e->mail->msg_id, idh, sizeof idh);
                hex_of(e->mail->correlation, corr, sizeof corr);
                json_object_set_new(o, "msg_id", json_string(idh));
                json_object_set_new(o, "from", jbytes(e->mail->from));
                json_object_set_new(o, "kind", jbytes(e->mail->kind));
                if (corr[0])
                    json_object_set_new(o, "correlation", json_string(corr));
                if (e->mail->topic.len)
                    json_object_set_new(o, "topic", jbytes(e->mail->topic));
                json_object_set_new(o, "body", jbytes(e->mail->body));
                json_object_set_new(o, "bytes", json_integer((json_int_t)e->mail->body.len));
            } else {
                json_object_set_new(o, "kind", json_string("not-mail"));
            }
            json_array_append_new(arr, o);
        }
        json_t *doc = json_pack("{s:s, s:o, s:b}", "agent", agent, "messages", arr,
                                "truncated", l->truncated);
        aos__msg__ls_reply__free_unpacked(l, NULL);
        return ctl_print_json(c, doc);
    }
    printf("%-10s %-9s %5s  %-16s %-8s %-32s %s\n", "QUEUE-ID", "STATE", "TRIES", "FROM", "KIND",
           "MSG-ID", "BODY");
    for (size_t i = 0; i < l->n_mail; i++) {
        const Aos__Msg__LsEntry *e = l->mail[i];
        char st[32], from[80] = "?", kind[40] = "not-mail", idh[40] = "-", body[300] = "";
        ctl_clean(st, sizeof st, e->state.data, e->state.len, 9, NULL);
        if (e->mail) {
            ctl_clean(from, sizeof from, e->mail->from.data, e->mail->from.len, 16, NULL);
            ctl_clean(kind, sizeof kind, e->mail->kind.data, e->mail->kind.len, 8, NULL);
            hex_of(e->mail->msg_id, idh, sizeof idh);
            int cut = 0;
            ctl_clean(body, sizeof body, e->mail->body.data, e->mail->body.len, 60, &cut);
            if (cut)
                strcat(body, "...");
        }
        printf("%-10" PRIu64 " %-9s %5u  %-16s %-8s %-32s %s\n", e->queue_id, st, e->tries,
               from, kind, idh, body);
    }
    printf("%zu message%s in %s's inbox (dead letters included)%s\n", l->n_mail,
           l->n_mail == 1 ? "" : "s", agent, l->truncated ? ", more not shown" : "");
    aos__msg__ls_reply__free_unpacked(l, NULL);
    return 0;
}

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define STR "{\"type\":\"string\"}"
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define BOOL "{\"type\":\"boolean\"}"
#define HEX32 "{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{32}$\"}"

static const char send_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"to\",\"from\",\"msg_id\",\"queue_id\"],\"properties\":"
    "{\"to\":" STR ",\"from\":" STR ",\"msg_id\":" HEX32 ",\"queue_id\":" INT0 "}}";

static const char ls_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"agent\",\"messages\",\"truncated\"],\"properties\":{"
    "\"agent\":" STR ",\"truncated\":" BOOL ",\"messages\":{\"type\":\"array\",\"items\":{"
    "\"type\":\"object\",\"required\":[\"queue_id\",\"state\",\"tries\",\"kind\"],"
    "\"properties\":{\"queue_id\":" INT0 ",\"state\":{\"type\":\"string\",\"enum\":[\"ready\","
    "\"inflight\",\"delayed\",\"dead\"]},\"tries\":" INT0 ",\"enqueued_ms\":" INT0
    ",\"msg_id\":" HEX32 ",\"from\":" STR ",\"kind\":{\"type\":\"string\",\"enum\":[\"msg\","
    "\"request\",\"reply\",\"not-mail\"]},\"correlation\":" HEX32 ",\"topic\":" STR
    ",\"body\":" STR ",\"bytes\":" INT0 "}}}}}";

static const ctl_arg send_args[] = {
    {.name = "AGENT", .required = 1, .check = ctl_check_agent, .summary = "the receiver"},
    {.name = "TEXT", .required = 1, .summary = "the message's body (from aos:operator)"},
    {.name = "--id", .value = "HEX", .pattern = "^[0-9a-f]{32}$",
     .summary = "the message's id (32 hex digits): sent again, it is the same message"},
};
static const ctl_arg ls_args[] = {
    {.name = "AGENT", .required = 1, .check = ctl_check_agent, .summary = "whose inbox"},
    {.name = "--limit", .short_name = 'n', .type = CTL_INTEGER, .value = "N", .min = 1,
     .max = 1000, .def = "100", .summary = "at most N messages"},
};

static const ctl_cmd msg_cmds[] = {
    {"msg send", "put a message into an agent's durable inbox, from aos:operator (the "
     "kernel wakes its receive)", CTL_ARGS(send_args), send_out, cmd_send},
    {"msg ls", "an agent's inbox as it is, oldest first, then its dead letters: state, "
     "tries, sender, kind, body (nothing is taken)", CTL_ARGS(ls_args), ls_out, cmd_ls},
};

const ctl_group ctl_group_msg = {msg_cmds, sizeof msg_cmds / sizeof msg_cmds[0]};
