/* libaos's one request/reply helper for its typed wrappers (storage.c, memory.c): pack a
 * protobuf request, call aosd, unpack and check the reply. Internal to libaos. */
#ifndef AOS_RPC_H
#define AOS_RPC_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

#include "aos/aos.h"
#include "aos/err.h"

/* Call method with rq packed. With rd, the reply is unpacked as rd and its strings checked
 * (UTF-8): *out is then owned by the caller (protobuf_c_message_free_unpacked). The
 * status is returned; why gets the server's message (or ours: no connection, a request
 * over the message cap, a malformed reply). */
aos_err aos_rpc(aos_conn *c, const aos_call_opts *o, const char *method,
                const ProtobufCMessage *rq, const ProtobufCMessageDescriptor *rd, void **out,
                char *why, size_t whylen);

#endif
