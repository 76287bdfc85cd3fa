/* libFuzzer target for stored mail: aos_msg_decode on any bytes must not crash, and what it
 * accepts is whole (a 16-byte id and its hex, a sender that is an agent id, a known kind, a
 * body with its NUL) and decodes again the same once encoded back. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/envelope.h"
#include "aos/msg.h"
#include "msg.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_msg: %s\n", what);
    abort();
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)p};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aos_msg m;
    char why[256];
    if (aos_msg_decode(data, size, &m, why, sizeof why) != AOS_OK) {
        if (m.body || !why[0])
            broken("a refusal left a body or said nothing");
        return 0;
    }
    if (strlen(m.id_hex) != 2 * AOS_MSG_ID_LEN || !aos_agent_id_valid(m.from, strlen(m.from)) ||
        (strcmp(m.kind, "msg") && strcmp(m.kind, "request") && strcmp(m.kind, "reply")) ||
        !m.body || m.body[m.len] != 0 || m.len > AOS_MSG_BODY_MAX ||
        (!strcmp(m.kind, "reply") && !m.has_correlation))
        broken("accepted mail that is not whole");
    Aos__Msg__Mail ml = AOS__MSG__MAIL__INIT;
    ml.msg_id = bin(m.id, AOS_MSG_ID_LEN);
    ml.from = bin(m.from, strlen(m.from));
    ml.kind = bin(m.kind, strlen(m.kind));
    if (m.has_correlation)
        ml.correlation = bin(m.correlation, AOS_MSG_ID_LEN);
    ml.body = bin(m.body, m.len);
    ml.topic = bin(m.topic, strlen(m.topic));
    size_t n = aos__msg__mail__get_packed_size(&ml);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return 0;
    aos__msg__mail__pack(&ml, buf);
    aos_msg m2;
    if (aos_msg_decode(buf, n, &m2, why, sizeof why) != AOS_OK)
        broken("its own encoding is refused");
    if (memcmp(m.id, m2.id, AOS_MSG_ID_LEN) || strcmp(m.from, m2.from) ||
        strcmp(m.kind, m2.kind) || m.len != m2.len || memcmp(m.body, m2.body, m.len) ||
        strcmp(m.topic, m2.topic))
        broken("decoded again, it differs");
    free(m2.body);
    free(buf);
    free(m.body);
    return 0;
}
