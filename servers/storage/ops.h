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
/* queue.c */
aos_err op_queue_send(stg_call *c);
aos_err op_queue_recv(stg_call *c);
aos_err op_queue_ack(stg_call *c);
aos_err op_queue_nack(stg_call *c);
aos_err op_queue_list(stg_call *c);

/* The operations and their handlers, in the order main.c serves them. mutating: the
 * operation changes data (it needs a request id and is idempotent by it). */
typedef struct stg_op {
    const char *op;
    stg_fn fn;
    int mutating;
} stg_op;

extern const stg_op stg_ops[];
extern const size_t stg_n_ops;

/* Shared by the plpgsql-backed mutations (kv.put, kv.incr): turn a row of (status int,
 * reply bytea, message text, replayed bool) into the reply. */
aos_err stg_finish_fn_row(stg_call *c, const PGresult *r, void *arg);

#endif
