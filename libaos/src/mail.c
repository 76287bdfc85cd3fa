/* The decoder of stored mail (aos/msg.h aos_msg_decode): an inbox's body is untrusted input,
 * checked field by field before an agent or aosctl sees it. Alone so the fuzzer builds it. */
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "aos/msg.h"
#include "msg.pb-c.h"

void aos_msg_free(aos_msg *m)
{
    if (!m)
        return;
    free(m->body);
    free(m);
}

/* text of at most cap - 1 bytes, UTF-8, no control characters: into out */
static int text_into(ProtobufCBinaryData b, char *out, size_t cap)
{
    if (b.len >= cap || !aos_utf8_valid(b.data, b.len))
        return 0;
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] < 0x20 || b.data[i] == 0x7f)
            return 0;
    if (b.len)
        memcpy(out, b.data, b.len);
    out[b.len] = 0;
    return 1;
}

aos_err aos_msg_decode(const uint8_t *buf, size_t len, aos_msg *m, char *why, size_t whylen)
{
    memset(m, 0, sizeof *m);
    Aos__Msg__Mail *ml = aos__msg__mail__unpack(NULL, len, buf);
    const char *bad = NULL;
    if (!ml)
        bad = "not a Mail";
    else if (ml->msg_id.len != AOS_MSG_ID_LEN)
        bad = "its id is not 16 bytes";
    else if (!text_into(ml->from, m->from, sizeof m->from) ||
             !aos_agent_id_valid(m->from, strlen(m->from)))
        bad = "its sender is not an agent id";
    else if (!text_into(ml->kind, m->kind, sizeof m->kind) ||
             (strcmp(m->kind, "msg") && strcmp(m->kind, "request") && strcmp(m->kind, "reply")))
        bad = "its kind is not msg, request or reply";
    else if (ml->correlation.len && ml->correlation.len != AOS_MSG_ID_LEN)
        bad = "its correlation is not 16 bytes";
    else if (!strcmp(m->kind, "reply") && !ml->correlation.len)
        bad = "a reply without the request's id";
    else if (!text_into(ml->topic, m->topic, sizeof m->topic))
        bad = "its topic is not a name";
    else if (ml->body.len > AOS_MSG_BODY_MAX)
        bad = "its body is over the cap";
    if (bad) {
        if (ml)
            aos__msg__mail__free_unpacked(ml, NULL);
        memset(m, 0, sizeof *m);
        aos_say(why, whylen, "stored mail: %s", bad);
        return AOS_ERR_PROTO;
    }
    memcpy(m->id, ml->msg_id.data, AOS_MSG_ID_LEN);
    aos_hex(m->id, AOS_MSG_ID_LEN, m->id_hex);
    if (ml->correlation.len) {
        memcpy(m->correlation, ml->correlation.data, AOS_MSG_ID_LEN);
        m->has_correlation = 1;
    }
    m->len = ml->body.len;
    m->body = malloc(m->len + 1);
    if (!m->body) {
        aos__msg__mail__free_unpacked(ml, NULL);
        aos_say(why, whylen, "out of memory");
        return AOS_ERR_NOMEM;
    }
    if (m->len)
        memcpy(m->body, ml->body.data, m->len);
    m->body[m->len] = 0;
    aos__msg__mail__free_unpacked(ml, NULL);
    return AOS_OK;
}

