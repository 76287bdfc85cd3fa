/* libaos's request/reply helper: one packed request, one checked reply, for the typed
 * wrappers of storage and memory. */
#include "rpc.h"

#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"

static aos_err fail(char *why, size_t whylen, aos_err e, const char *msg)
{
    if (why && whylen)
        aos_say(why, whylen, "%s", msg);
    return e;
}

aos_err aos_rpc(aos_conn *c, const aos_call_opts *o, const char *method,
                const ProtobufCMessage *rq, const ProtobufCMessageDescriptor *rd, void **out,
                char *why, size_t whylen)
{
    if (out)
        *out = NULL;
    if (!c)
        return fail(why, whylen, AOS_ERR_USAGE, "no connection");
    size_t n = protobuf_c_message_get_packed_size(rq);
    if (n > AOS_MSG_MAX - 4096) {
        if (why && whylen)
            aos_say(why, whylen, "request of %zu bytes is over the message cap", n);
        return AOS_ERR_TOO_BIG;
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return fail(why, whylen, AOS_ERR_NOMEM, "out of memory");
    protobuf_c_message_pack(rq, buf);
    aos_reply rep;
    memset(&rep, 0, sizeof rep);
    aos_err e = aos_call(c, o, method, buf, n, &rep);
    free(buf);
    if (e) {
        fail(why, whylen, e, rep.error[0] ? rep.error : aos_strerror(e));
    } else if (rd) {
        ProtobufCMessage *m = protobuf_c_message_unpack(rd, NULL, rep.payload_len, rep.payload);
        if (!m || !aos_pb_strings_valid(m)) {
            if (m)
                protobuf_c_message_free_unpacked(m, NULL);
            e = AOS_ERR_PROTO;
            if (why && whylen)
                aos_say(why, whylen, "%s: malformed reply", method);
        } else {
            *out = m;
        }
    }
    aos_reply_clear(&rep);
    return e;
}
