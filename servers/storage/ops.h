/* Every operation aos-storage serves, one handler each, grouped by the file that holds it.
 * main.c maps "storage.<op>" onto them; the tests call them directly with a stg_call. */
#ifndef STG_OPS_H
#define STG_OPS_H

#include "stg.h"

/* kv.c */
aos_err op_kv_put(stg_call *c);
aos_err op_kv_get(stg_call *c);
aos_err op_kv_list(stg_call *c);
aos_err op_kv_delete(stg_call *c);
aos_err op_kv_incr(stg_call *c);
/* The batcher that answers concurrent kv.gets with one statement (stg.gets); caller owns
 * it: batcher_free. */
stg_batcher *stg_get_batcher_new(unsigned max_leaders);
/* doc.c */
aos_err op_doc_put(stg_call *c);
aos_err op_doc_get(stg_call *c);
aos_err op_doc_query(stg_call *c);
aos_err op_doc_delete(stg_call *c);
/* blob.c */
aos_err op_blob_write(stg_call *c);
aos_err op_blob_commit(stg_call *c);
aos_err op_blob_read(stg_call *c);
aos_err op_blob_delete(stg_call *c);
aos_err op_blob_list(stg_call *c);
/* ckpt.c */
aos_err op_ckpt_save(stg_call *c);
aos_err op_ckpt_load(stg_call *c);
aos_err op_ckpt_list(stg_call *c);
aos_err op_ckpt_prune(stg_call *c);
/* step.c */
aos_err op_step_append(stg_call *c);
aos_err op_step_read(stg_call *c);
aos_err op_step_drop(stg_call *c);
/* queue.c */
aos_err op_queue_send(stg_call *c);
aos_err op_queue_recv(stg_call *c);
aos_err op_queue_ack(stg_call *c);
aos_err op_queue_nack(stg_call *c);
aos_err op_queue_list(stg_call *c);
aos_err op_queue_peek(stg_call *c);

/* The methods, "storage.<op>", in one table: X(op, handler). */
#define STG_OP_TABLE(X)                                                                    \
    X("kv.put", op_kv_put)                                                                 \
    X("kv.get", op_kv_get)                                                                 \
    X("kv.list", op_kv_list)                                                               \
    X("kv.delete", op_kv_delete)                                                           \
    X("kv.incr", op_kv_incr)                                                               \
    X("doc.put", op_doc_put)                                                               \
    X("doc.get", op_doc_get)                                                               \
    X("doc.query", op_doc_query)                                                           \
    X("doc.delete", op_doc_delete)                                                         \
    X("blob.write", op_blob_write)                                                         \
    X("blob.commit", op_blob_commit)                                                       \
    X("blob.read", op_blob_read)                                                           \
    X("blob.delete", op_blob_delete)                                                       \
    X("blob.list", op_blob_list)                                                           \
    X("checkpoint.save", op_ckpt_save)                                                     \
    X("checkpoint.load", op_ckpt_load)                                                     \
    X("checkpoint.list", op_ckpt_list)                                                     \
    X("checkpoint.prune", op_ckpt_prune)                                                   \
    X("step.append", op_step_append)                                                       \
    X("step.read", op_step_read)                                                           \
    X("step.drop", op_step_drop)                                                           \
    X("queue.send", op_queue_send)                                                         \
    X("queue.recv", op_queue_recv)                                                         \
    X("queue.ack", op_queue_ack)                                                           \
    X("queue.nack", op_queue_nack)                                                         \
    X("queue.list", op_queue_list)                                                         \
    X("queue.peek", op_queue_peek)

#endif
