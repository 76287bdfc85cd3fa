/* test_serve_server: the serve loop alone (builtins, test hooks, one streaming worker
 * method) for serve_test, which plays aosd to it. No database, no server logic. */
#include <stdlib.h>

#include "aos.pb-c.h"
#include "serve.h"

/* llm.sync.stream: a srv_fn that streams from its worker through rep->call; the payload
 * is a TestStreamRequest (pace_us is ignored: a worker streams as fast as the link). */
static aos_err do_sync_stream(srv *s, const aos_env *req, srv_reply *rep)
{
    (void)s;
    Aos__TestStreamRequest *in =
        aos__test_stream_request__unpack(NULL, req->payload_len, req->payload);
    if (!in)
        return srv_fail(rep, AOS_ERR_PROTO, "sync.stream: payload is not a TestStreamRequest");
    uint32_t parts = in->parts, size = in->size;
    int final = aos_err_valid(in->final_status) ? in->final_status : AOS_ERR_INTERNAL;
    aos__test_stream_request__free_unpacked(in, NULL);
    if (size > AOS_PART_MAX)
        return srv_fail(rep, AOS_ERR_TOO_BIG, "sync.stream: parts over AOS_PART_MAX");
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return srv_fail(rep, AOS_ERR_NOMEM, "sync.stream: no memory");
    aos_err rc = AOS_OK;
    for (uint32_t i = 0; i < parts && !rc; i++) {
        for (uint32_t k = 0; k < size; k++)
            buf[k] = (uint8_t)i;
        rc = srv_call_part(rep->call, buf, size);
    }
    free(buf);
    return rc ? srv_fail(rep, rc, "sync.stream: stopped") : (aos_err)final;
}

static const srv_method methods[] = {
    {"sync.stream", do_sync_stream, 0, NULL},
};

int main(int argc, char **argv)
{
    /* "llm": a sandbox profile needs a server name, and llm's is the base allow-list with
     * no database, which is all the serve loop itself needs */
    static const srv_def def = {
        .name = "llm",
        .methods = methods,
        .n_methods = sizeof methods / sizeof methods[0],
        .workers = 2,
    };
    return srv_main(&def, argc, argv);
}
