/* aosd's audit events against real processes: every routed syscall leaves its record with
 * its run and step, a write waits for its record, and with aos-audit away it fails closed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "audit.pb-c.h"
#include "harness.h"
#include "storage.pb-c.h"

static aos_err put(h_aosd *h, const char *agent, const char *run, uint32_t step,
                   const char *key, uint32_t timeout_ms, aos_reply *r)
{
    Aos__Storage__KvPutRequest rq = AOS__STORAGE__KV_PUT_REQUEST__INIT;
    rq.key = (ProtobufCBinaryData){.len = strlen(key), .data = (uint8_t *)key};
    rq.value = (ProtobufCBinaryData){.len = 5, .data = (uint8_t *)"value"};
    uint8_t buf[256];
    size_t len = aos__storage__kv_put_request__pack(&rq, buf);
    aos_call_opts o = {.agent_id = agent, .run_id = run, .step = step, .timeout_ms = timeout_ms};
    return aos_call(h_conn(h), &o, "storage.kv.put", buf, len, r);
}

static aos_err get(h_aosd *h, const char *agent, const char *key, aos_reply *r)
{
    Aos__Storage__KvGetRequest rq = AOS__STORAGE__KV_GET_REQUEST__INIT;
    rq.key = (ProtobufCBinaryData){.len = strlen(key), .data = (uint8_t *)key};
    uint8_t buf[256];
    size_t len = aos__storage__kv_get_request__pack(&rq, buf);
    aos_call_opts o = {.agent_id = agent};
    return aos_call(h_conn(h), &o, "storage.kv.get", buf, len, r);
}

/* The agent's records as audit.tail gives them (free with ..._free_unpacked). */
static Aos__Audit__TailReply *tail(h_aosd *h, const char *agent)
{
    Aos__Audit__TailRequest rq = AOS__AUDIT__TAIL_REQUEST__INIT;
    rq.agent = (ProtobufCBinaryData){.len = strlen(agent), .data = (uint8_t *)agent};
    rq.limit = 1000;
    uint8_t buf[256];
    size_t len = aos__audit__tail_request__pack(&rq, buf);
    aos_reply r;
    aos_err rc = aos_call(h_conn(h), NULL, "audit.tail", buf, len, &r);
    if (rc != AOS_OK)
        fail_msg("audit.tail: %s: %s", aos_err_name(rc), r.error);
    Aos__Audit__TailReply *t = aos__audit__tail_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    assert_non_null(t);
    return t;
}

/* Index of the first record of kind and method, or -1. */
static int find(const Aos__Audit__TailReply *t, const char *kind, const char *method)
{
    for (size_t i = 0; i < t->n_records; i++)
        if (!strcmp(t->records[i]->kind, kind) && !strcmp(t->records[i]->method, method))
            return (int)i;
    return -1;
}

/* Wait (bounded) until the agent's log holds a record of kind and method. */
static Aos__Audit__TailReply *wait_for(h_aosd *h, const char *agent, const char *kind,
                                       const char *method)
{
    for (int i = 0; i < 200; i++) {
        Aos__Audit__TailReply *t = tail(h, agent);
        if (find(t, kind, method) >= 0)
            return t;
        aos__audit__tail_reply__free_unpacked(t, NULL);
        usleep(50 * 1000);
    }
    fail_msg("no %s record of %s for %s within 10 s", kind, method, agent);
    return NULL;
}

static void every_syscall_leaves_its_record_with_run_and_step(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    aos_reply r;
    assert_int_equal(put(h, "agent-a", "run-1", 3, "k1", 0, &r), AOS_OK);
    aos_reply_clear(&r);
    assert_int_equal(get(h, "agent-a", "k1", &r), AOS_OK);
    aos_reply_clear(&r);
    Aos__Audit__TailReply *t = wait_for(h, "agent-a", "syscall", "storage.kv.get");
    int b = find(t, "syscall.begin", "storage.kv.put");
    int e = find(t, "syscall", "storage.kv.put");
    int g = find(t, "syscall", "storage.kv.get");
    assert_true(b >= 0 && e > b && g > b);
    assert_string_equal(t->records[b]->run, "run-1");
    assert_int_equal(t->records[b]->step, 3);
    assert_string_equal(t->records[e]->run, "run-1");
    assert_int_equal(t->records[e]->status, AOS_OK);
    assert_non_null(strstr((const char *)t->records[b]->body.data, "args_blake2b"));
    /* a read is recorded once, after: it has no begin */
    assert_int_equal(find(t, "syscall.begin", "storage.kv.get"), -1);
    aos__audit__tail_reply__free_unpacked(t, NULL);
    h_stop(h);
}

/* aos-audit stopped (SIGSTOP: alive for the supervisor, answering nothing; the heartbeat
 * timeout is long so that it is not restarted): a write waits for its record to its
 * deadline, fails UNAVAILABLE, and changes nothing. A read still works. */
static void with_audit_away_a_write_fails_closed_and_changes_nothing(void **st)
{
    (void)st;
    const char *args[] = {"--heartbeat-ms", "1000", "--heartbeat-timeout-ms", "120000", NULL};
    h_aosd *h = h_start(args);
    pid_t audit = h_child(h, "audit", NULL);
    assert_true(audit > 0);
    assert_int_equal(kill(audit, SIGSTOP), 0);
    aos_reply r;
    aos_err rc = put(h, "agent-b", NULL, 0, "closed", 1500, &r);
    print_message("write with audit away: %s: %s\n", aos_err_name(rc), r.error);
    assert_int_equal(rc, AOS_ERR_UNAVAILABLE);
    aos_reply_clear(&r);
    assert_int_equal(get(h, "agent-b", "closed", &r), AOS_ERR_NOT_FOUND);
    aos_reply_clear(&r);
    assert_int_equal(kill(audit, SIGCONT), 0);
    /* back: the same write goes through, and nothing of the refused one took effect */
    assert_int_equal(put(h, "agent-b", NULL, 0, "closed", 10000, &r), AOS_OK);
    Aos__Storage__KvPutReply *pr = aos__storage__kv_put_reply__unpack(NULL, r.payload_len,
                                                                      r.payload);
    assert_non_null(pr);
    assert_int_equal(pr->version, 1);
    aos__storage__kv_put_reply__free_unpacked(pr, NULL);
    aos_reply_clear(&r);
    h_stop(h);
}

/* audit_fail_open: the same write goes through with aos-audit away, and its records
 * arrive once it is back. */
static void fail_open_lets_a_write_through_and_records_it_later(void **st)
{
    (void)st;
    char dir[] = "/tmp/aos-it-failopen-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("audit_fail_open: true\nheartbeat_timeout_ms: 120000\n", f);
    fclose(f);
    char why[1024];
    h_aosd *h = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!h)
        fail_msg("aosd on %s: %s", dir, why);
    pid_t audit = h_child(h, "audit", NULL);
    assert_true(audit > 0);
    assert_int_equal(kill(audit, SIGSTOP), 0);
    aos_reply r;
    assert_int_equal(put(h, "agent-c", NULL, 0, "open", 5000, &r), AOS_OK);
    aos_reply_clear(&r);
    assert_int_equal(kill(audit, SIGCONT), 0);
    Aos__Audit__TailReply *t = wait_for(h, "agent-c", "syscall", "storage.kv.put");
    assert_true(find(t, "syscall.begin", "storage.kv.put") >= 0);
    aos__audit__tail_reply__free_unpacked(t, NULL);
    h_stop(h);
    h_remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_syscall_leaves_its_record_with_run_and_step),
        cmocka_unit_test(with_audit_away_a_write_fails_closed_and_changes_nothing),
        cmocka_unit_test(fail_open_lets_a_write_through_and_records_it_later),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
