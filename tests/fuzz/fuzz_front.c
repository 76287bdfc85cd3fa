/* libFuzzer target for the front door's decoders (servers/api/front.c): the first byte picks
 * OpenAI chat, Anthropic messages, embeddings, or a stream part fed to both SSE encoders. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aos/envelope.h"
#include "front.h"
#include "llm.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_front: %s\n", what);
    abort();
}

static int sink(void *arg, const char *b, size_t n)
{
    size_t *total = arg;
    if (n && !b)
        broken("emit got NULL bytes");
    *total += n;
    return *total > (64u << 20) ? -1 : 0;
}

/* What a decoder accepted is within its caps and all text: aos-llm may trust its shape. */
static void check_chat(const Aos__Llm__ChatRequest *r)
{
    if (!aos_pb_strings_valid(&r->base))
        broken("a decoded chat request holds a string that is not UTF-8");
    if (!r->model.len || r->model.len > FRONT_NAME_MAX || !r->n_messages ||
        r->n_messages > FRONT_MESSAGES_MAX || r->n_tools > FRONT_TOOLS_MAX ||
        r->n_stop > FRONT_STOPS_MAX)
        broken("a decoded chat request is past a cap");
    for (size_t i = 0; i < r->n_messages; i++) {
        const Aos__Llm__Message *m = r->messages[i];
        if (!m->role || m->n_content > FRONT_PARTS_MAX || m->n_tool_calls > FRONT_CALLS_MAX)
            broken("a decoded message has no role or is past a cap");
        for (size_t j = 0; j < m->n_content; j++)
            if (!aos_utf8_valid(m->content[j]->text.data, m->content[j]->text.len))
                broken("a content part is not UTF-8");
    }
    for (size_t i = 0; i < r->n_tools; i++) {
        json_t *s = r->tools[i]->input_schema.len
                        ? json_loadb((const char *)r->tools[i]->input_schema.data,
                                     r->tools[i]->input_schema.len, 0, NULL)
                        : json_object();
        if (!json_is_object(s))
            broken("a tool's schema is not a JSON object");
        json_decref(s);
    }
    /* packs and unpacks as the wire would carry it */
    size_t len = aos__llm__chat_request__get_packed_size(r);
    uint8_t *buf = malloc(len ? len : 1);
    aos__llm__chat_request__pack(r, buf);
    Aos__Llm__ChatRequest *back = aos__llm__chat_request__unpack(NULL, len, buf);
    if (!back || back->n_messages != r->n_messages)
        broken("a decoded chat request does not survive packing");
    aos__llm__chat_request__free_unpacked(back, NULL);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char why[512];
    switch (data[0] % 4) {
    case 0: {
        Aos__Llm__ChatRequest *r = NULL;
        int stream, usage;
        aos_err rc = front_openai_chat(body, len, &r, &stream, &usage, why, sizeof why);
        if ((rc == AOS_OK) != (r != NULL))
            broken("openai chat: status and result disagree");
        if (r) {
            check_chat(r);
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        break;
    }
    case 1: {
        Aos__Llm__ChatRequest *r = NULL;
        int stream;
        aos_err rc = front_anthropic_messages(body, len, &r, &stream, why, sizeof why);
        if ((rc == AOS_OK) != (r != NULL))
            broken("anthropic messages: status and result disagree");
        if (r) {
            check_chat(r);
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        break;
    }
    case 2: {
        Aos__Llm__EmbedRequest *r = NULL;
        int b64;
        aos_err rc = front_openai_embed(body, len, &r, &b64, why, sizeof why);
        if ((rc == AOS_OK) != (r != NULL))
            broken("embeddings: status and result disagree");
        if (r) {
            if (!aos_pb_strings_valid(&r->base) || !r->n_inputs ||
                r->n_inputs > FRONT_EMBED_INPUTS_MAX)
                broken("a decoded embeddings request is past a cap or not UTF-8");
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        break;
    }
    default: { /* a stream part (untrusted bytes from the link), in both formats */
        for (int f = FRONT_OPENAI; f <= FRONT_ANTHROPIC; f++) {
            size_t total = 0;
            front_sse *s = front_sse_new((front_flavour)f, "id", "m", 1, 1, sink, &total);
            if (!s)
                return 0;
            front_sse_delta(s, (const uint8_t *)body, len);
            front_sse_delta(s, (const uint8_t *)body, len);
            front_sse_end(s, NULL, AOS_ERR_UNAVAILABLE, len && body[0] ? "cut" : NULL);
            front_sse_free(s);
        }
        break;
    }
    }
    return 0;
}
