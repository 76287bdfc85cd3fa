/* Mail between agents under a real aosd: send/recv/ack, talks_to refusals (audited), receives
 * woken by the kernel (no poll), request/reply deadlines, topics, kill -9 of receiver/storage/pg. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "aos/msg.h"
#include "aos/storage.h"
#include "audit.pb-c.h"
#include "harness.h"
#include "msg.pb-c.h"

static h_aosd *H;
static char DATA_DIR[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-msg-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    char path[128];
    snprintf(path, sizeof path, "%s/aos.yaml", DATA_DIR);
    write_file(path, "llm:\n  default_model: sim/s1\n  providers:\n"
                     "    - {name: sim, kind: sim, models: [{name: s1}]}\n");
    char why[1024];
    H = h_start_on(DATA_DIR, NULL, 120000, why, sizeof why);
    if (!H)
        fail_msg("aosd on %s: %s", DATA_DIR, why);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

/* ---- calls -------------------------------------------------------------------------------- */

static void apply(const char *yaml)
{
    if (h_apply(H, yaml, strlen(yaml), "msg.yaml", 1) != 0)
        fail_msg("apply refused:\n%s", yaml);
}

typedef struct ainfo {
    char state[16], waiting[16], reason[256];
    int pid;
    uint64_t refused;
} ainfo;

static int info(const char *name, ainfo *o)
{
    Aos__Agent__ListRequest r = AOS__AGENT__LIST_REQUEST__INIT;
    r.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    uint8_t buf[256];
    size_t len = aos__agent__list_request__pack(&r, buf);
    aos_reply rep;
    aos_call(h_conn(H), NULL, "kernel.agent.list", buf, len, &rep);
    Aos__Agent__ListReply *l = rep.status == AOS_OK
                                   ? aos__agent__list_reply__unpack(NULL, rep.payload_len,
                                                                    rep.payload)
                                   : NULL;
    aos_reply_clear(&rep);
    if (!l || l->n_agents != 1) {
        if (l)
            aos__agent__list_reply__free_unpacked(l, NULL);
        return -1;
    }
    Aos__Agent__Info *a = l->agents[0];
    snprintf(o->state, sizeof o->state, "%.*s", (int)a->state.len, (char *)a->state.data);
    snprintf(o->waiting, sizeof o->waiting, "%.*s", (int)a->waiting_on.len,
             (char *)a->waiting_on.data);
    snprintf(o->reason, sizeof o->reason, "%.*s", (int)a->reason.len, (char *)a->reason.data);
    o->pid = a->pid;
    o->refused = a->refused;
    aos__agent__list_reply__free_unpacked(l, NULL);
    return 0;
}

static int wait_state(const char *name, const char *states, unsigned ms, ainfo *o)
{
    char want[128];
    snprintf(want, sizeof want, "|%s|", states);
    for (unsigned t = 0; t < ms; t += 50) {
        if (info(name, o) == 0) {
            char got[24];
            snprintf(got, sizeof got, "|%s|", o->state);
            if (strstr(want, got))
                return 0;
        }
        usleep(50000);
    }
    return -1;
}

static char *logs(const char *name);

/* Until it ended (done or failed), else the test fails with its log. */
static void wait_end(const char *name, unsigned ms, ainfo *o)
{
    if (wait_state(name, "done|failed", ms, o) == 0)
        return;
    char *s = logs(name);
    fail_msg("agent %s did not end within %u ms (%s: %s); its log:\n%s", name, ms, o->state,
             o->reason, s);
}

/* The agent's log (stdout), malloc'd. */
static char *logs(const char *name)
{
    Aos__Agent__LogsRequest r = AOS__AGENT__LOGS_REQUEST__INIT;
    r.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    r.max_bytes = 1u << 20;
    uint8_t buf[256];
    size_t len = aos__agent__logs_request__pack(&r, buf);
    aos_reply rep;
    aos_call(h_conn(H), NULL, "kernel.agent.logs", buf, len, &rep);
    assert_int_equal(rep.status, AOS_OK);
    Aos__Agent__LogsReply *l = aos__agent__logs_reply__unpack(NULL, rep.payload_len, rep.payload);
    assert_non_null(l);
    char *s = malloc(l->text.len + 1);
    memcpy(s, l->text.data, l->text.len);
    s[l->text.len] = 0;
    aos__agent__logs_reply__free_unpacked(l, NULL);
    aos_reply_clear(&rep);
    /* the ASan build's agents report there: a sanitizer's finding fails the test */
    if (strstr(s, "runtime error:") || strstr(s, "Sanitizer"))
        fail_msg("agent %s's log has a sanitizer report:\n%s", name, s);
    return s;
}

static void must_log(const char *name, const char *needle)
{
    char *s = logs(name);
    if (!strstr(s, needle))
        fail_msg("agent %s's log has no '%s':\n%s", name, needle, s);
    free(s);
}

/* msg.send as the operator; returns the status. */
static aos_err op_send(const char *to, const char *text, char *why, size_t whylen)
{
    Aos__Msg__SendRequest r = AOS__MSG__SEND_REQUEST__INIT;
    r.to = (ProtobufCBinaryData){strlen(to), (uint8_t *)to};
    r.body = (ProtobufCBinaryData){strlen(text), (uint8_t *)text};
    uint8_t buf[1024];
    size_t len = aos__msg__send_request__pack(&r, buf);
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 20000};
    aos_err e = aos_call(h_conn(H), &o, "msg.send", buf, len, &rep);
    if (why)
        snprintf(why, whylen, "%.200s", rep.error);
    aos_reply_clear(&rep);
    return e;
}

/* msg.ls: how many entries, by state ("" any). */
static size_t ls_count(const char *agent, const char *state)
{
    Aos__Msg__LsRequest r = AOS__MSG__LS_REQUEST__INIT;
    r.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    uint8_t buf[256];
    size_t len = aos__msg__ls_request__pack(&r, buf);
    aos_reply rep;
    aos_err e = aos_call(h_conn(H), NULL, "msg.ls", buf, len, &rep);
    if (e != AOS_OK)
        fail_msg("msg.ls %s: %s: %s", agent, aos_err_name(e), rep.error);
    Aos__Msg__LsReply *l = aos__msg__ls_reply__unpack(NULL, rep.payload_len, rep.payload);
    assert_non_null(l);
    size_t n = 0;
    for (size_t i = 0; i < l->n_mail; i++)
        if (!state[0] || (l->mail[i]->state.len == strlen(state) &&
                          !memcmp(l->mail[i]->state.data, state, strlen(state))))
            n++;
    aos__msg__ls_reply__free_unpacked(l, NULL);
    aos_reply_clear(&rep);
    return n;
}

#define AGENT(name, args, extra)                                                            \
    "  - name: " name "\n    program: aos-test-agent\n    args: " args "\n" extra

/* ---- cases ---------------------------------------------------------------------------------- */

static void send_recv_ack_between_two_agents(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("rcv", "[recv1, \"30000\"]", "")
              AGENT("snd", "[send, rcv, \"1\", a]", "    talks_to: [rcv]\n"));
    ainfo a;
    wait_end("snd", 30000, &a);
    assert_string_equal(a.state, "done");
    wait_end("rcv", 30000, &a);
    assert_string_equal(a.state, "done");
    must_log("snd", "sent all 1");
    must_log("rcv", "recv1: from snd kind msg topic -");
    must_log("rcv", "body a message 1");
    must_log("rcv", "ack: OK");
    assert_int_equal(ls_count("rcv", ""), 0); /* acked: gone */
}

/* The audit log of agent: 1 when it holds a syscall record of method with status. */
static int audited(const char *agent, const char *method, int status)
{
    Aos__Audit__TailRequest rq = AOS__AUDIT__TAIL_REQUEST__INIT;
    rq.agent = (ProtobufCBinaryData){.len = strlen(agent), .data = (uint8_t *)agent};
    rq.limit = 1000;
    uint8_t buf[256];
    size_t len = aos__audit__tail_request__pack(&rq, buf);
    for (int i = 0; i < 100; i++) {
        aos_reply r;
        if (aos_call(h_conn(H), NULL, "audit.tail", buf, len, &r) != AOS_OK)
            fail_msg("audit.tail: %s", r.error);
        Aos__Audit__TailReply *t = aos__audit__tail_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        assert_non_null(t);
        int found = 0;
        for (size_t j = 0; j < t->n_records && !found; j++)
            found = !strcmp(t->records[j]->kind, "syscall") &&
                    !strcmp(t->records[j]->method, method) && t->records[j]->status == status;
        aos__audit__tail_reply__free_unpacked(t, NULL);
        if (found)
            return 1;
        usleep(50000);
    }
    return 0;
}

static void an_agent_not_named_is_refused_and_audited(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("vault", "[recv1, \"4000\"]", "    restart: {policy: never}\n")
              AGENT("rogue", "[send, vault, \"1\", r]", "    restart: {policy: never}\n")
                  AGENT("friend", "[send, vault, \"1\", f]", "    talks_to: [rogue]\n"
                                                             "    restart: {policy: never}\n")
                      AGENT("sneak", "[rawmail, vault]", "    talks_to: [vault]\n"
                                                         "    restart: {policy: never}\n"));
    ainfo a;
    wait_end("rogue", 30000, &a);
    assert_non_null(strstr(a.reason, "exit 4")); /* REFUSED */
    assert_true(a.refused >= 1);
    must_log("rogue", "send 1: REFUSED: agent rogue may not send mail to vault");
    /* naming some other agent is no right to this one */
    wait_end("friend", 30000, &a);
    assert_non_null(strstr(a.reason, "exit 4"));
    /* mail past msg.send, straight into aos-storage's queue of another agent: refused by
     * the kernel before it reaches storage, even to an agent its talks_to names */
    wait_end("sneak", 30000, &a);
    assert_non_null(strstr(a.reason, "exit 4"));
    must_log("sneak", "rawmail: REFUSED: agent sneak may not put mail into another agent's "
                      "inbox with storage.queue.send");
    assert_true(audited("sneak", "storage.queue.send", AOS_ERR_REFUSED));
    assert_true(audited("rogue", "msg.send", AOS_ERR_REFUSED));
    assert_true(audited("friend", "msg.send", AOS_ERR_REFUSED));
    /* nothing reached the vault: its receive ran out */
    wait_end("vault", 30000, &a);
    must_log("vault", "recv1: TIMEOUT");
    assert_int_equal(ls_count("vault", ""), 0);
    /* an unknown receiver is NOT_FOUND, for the operator too */
    char why[256];
    assert_int_equal(op_send("nobody", "x", why, sizeof why), AOS_ERR_NOT_FOUND);
}

/* A raw payload to method as the operator: its status, the message into why. */
static aos_err raw(const char *method, const void *p, size_t n, char *why, size_t whylen)
{
    aos_reply rep;
    aos_err e = aos_call(h_conn(H), NULL, method, p, n, &rep);
    snprintf(why, whylen, "%.200s", rep.error);
    aos_reply_clear(&rep);
    return e;
}

static aos_err send_req(const Aos__Msg__SendRequest *r, char *why, size_t whylen)
{
    size_t n = aos__msg__send_request__get_packed_size(r);
    uint8_t *buf = malloc(n ? n : 1);
    aos__msg__send_request__pack(r, buf);
    aos_err e = raw("msg.send", buf, n, why, whylen);
    free(buf);
    return e;
}

static void bad_requests_are_refused_with_a_reason(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("target", "[idle]", ""));
    char why[256];
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x0f, 0x01};
    assert_int_equal(raw("msg.send", junk, sizeof junk, why, sizeof why), AOS_ERR_PROTO);
    assert_int_equal(raw("msg.publish", junk, sizeof junk, why, sizeof why), AOS_ERR_PROTO);
    assert_int_equal(raw("msg.ls", junk, sizeof junk, why, sizeof why), AOS_ERR_USAGE);
    Aos__Msg__SendRequest r = AOS__MSG__SEND_REQUEST__INIT;
    r.to = (ProtobufCBinaryData){7, (uint8_t *)"tar\xffget"};
    assert_int_equal(send_req(&r, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "not an agent's name"));
    r.to = (ProtobufCBinaryData){6, (uint8_t *)"target"};
    r.kind = (ProtobufCBinaryData){4, (uint8_t *)"spam"};
    assert_int_equal(send_req(&r, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "kind is msg, request or reply"));
    r.kind = (ProtobufCBinaryData){5, (uint8_t *)"reply"};
    assert_int_equal(send_req(&r, why, sizeof why), AOS_ERR_USAGE); /* no correlation */
    assert_non_null(strstr(why, "correlation"));
    r.kind = (ProtobufCBinaryData){0, NULL};
    r.msg_id = (ProtobufCBinaryData){3, (uint8_t *)"abc"};
    assert_int_equal(send_req(&r, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "msg_id is 16 bytes"));
    r.msg_id = (ProtobufCBinaryData){0, NULL};
    size_t big = AOS_MSG_BODY_MAX + 1;
    uint8_t *body = calloc(1, big);
    r.body = (ProtobufCBinaryData){big, body};
    assert_int_equal(send_req(&r, why, sizeof why), AOS_ERR_TOO_BIG);
    free(body);
    /* the same id twice is one message; nothing of the refusals above was stored */
    static const uint8_t id[16] = "same-id-twice!!";
    r.body = (ProtobufCBinaryData){4, (uint8_t *)"once"};
    r.msg_id = (ProtobufCBinaryData){16, (uint8_t *)id};
    assert_int_equal(send_req(&r, why, sizeof why), AOS_OK);
    assert_int_equal(send_req(&r, why, sizeof why), AOS_OK);
    assert_int_equal(ls_count("target", ""), 1);
    /* the same id with another body is no second message either: aos-storage answers the
     * first's result while it remembers the id in memory, CONFLICT from its durable record
     * after that */
    r.body = (ProtobufCBinaryData){5, (uint8_t *)"twice"};
    aos_err e = send_req(&r, why, sizeof why);
    assert_true(e == AOS_OK || e == AOS_ERR_CONFLICT);
    assert_int_equal(ls_count("target", ""), 1);
    /* a topic that is not the deployment's */
    Aos__Msg__PublishRequest p = AOS__MSG__PUBLISH_REQUEST__INIT;
    p.topic = (ProtobufCBinaryData){4, (uint8_t *)"none"};
    uint8_t buf[64];
    size_t n = aos__msg__publish_request__pack(&p, buf);
    assert_int_equal(raw("msg.publish", buf, n, why, sizeof why), AOS_ERR_NOT_FOUND);
    assert_non_null(strstr(why, "no topic none"));
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The value after "key " in the agent's log, or -1. */
static long long log_num(const char *name, const char *key)
{
    char *s = logs(name);
    char *p = strstr(s, key);
    long long v = p ? strtoll(p + strlen(key), NULL, 10) : -1;
    free(s);
    return v;
}

static void a_receive_sleeps_until_a_send_wakes_it(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("sleeper", "[recv1, \"60000\"]", ""));
    ainfo a;
    /* it looked, found nothing, and waits in the kernel */
    for (int i = 0; i < 400 && !(info("sleeper", &a) == 0 && !strcmp(a.waiting, "mailbox"));
         i++)
        usleep(25000);
    assert_string_equal(a.waiting, "mailbox");
    sleep(2); /* a poll loop would look into storage many times meanwhile */
    long long t0 = now_us();
    char why[256];
    assert_int_equal(op_send("sleeper", "wake up", why, sizeof why), AOS_OK);
    long long t1 = now_us();
    wait_end("sleeper", 20000, &a);
    must_log("sleeper", "recv1: from aos:operator kind msg");
    must_log("sleeper", "body wake up");
    long long at = log_num("sleeper", "at_us "), recvs = log_num("sleeper", "recvs "),
              waits = log_num("sleeper", "waits "), wakes = log_num("sleeper", "wakes ");
    /* one look before the wait, one after the wake; one wait */
    print_message("wake: send to receive %.2f ms (the send itself, durable and audited: "
                  "%.2f ms); storage receives %lld, kernel waits %lld, mail wakes %lld over "
                  "%.1f s\n", (double)(at - t0) / 1000.0, (double)(t1 - t0) / 1000.0, recvs,
                  waits, wakes, (double)(at - t0) / 1e6 + 2);
    assert_true(at > t0);
    assert_true(recvs >= 2 && recvs <= 3);
    assert_true(waits >= 1 && waits <= 2);
    assert_true(wakes >= 1);
}

static int ctl(const char *name, const char *action)
{
    Aos__Agent__CtlRequest cr = AOS__AGENT__CTL_REQUEST__INIT;
    cr.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    cr.action = (ProtobufCBinaryData){strlen(action), (uint8_t *)action};
    uint8_t buf[128];
    size_t len = aos__agent__ctl_request__pack(&cr, buf);
    aos_reply rep;
    aos_err e = aos_call(h_conn(H), NULL, "kernel.agent.ctl", buf, len, &rep);
    aos_reply_clear(&rep);
    return e;
}

static void mail_to_a_suspended_receiver_waits_for_its_resume(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("napper", "[recv1, \"30000\"]", "    restart: {policy: never}\n"));
    ainfo a;
    for (int i = 0; i < 400 && !(info("napper", &a) == 0 && !strcmp(a.waiting, "mailbox"));
         i++)
        usleep(25000);
    assert_string_equal(a.waiting, "mailbox");
    assert_int_equal(ctl("napper", "suspend"), AOS_OK);
    assert_int_equal(op_send("napper", "while you slept", NULL, 0), AOS_OK);
    usleep(500000);
    assert_int_equal(info("napper", &a), 0);
    assert_string_equal(a.state, "suspended"); /* frozen: nothing taken */
    assert_int_equal(ls_count("napper", "ready"), 1);
    uint64_t t0 = aos_mono_ms();
    assert_int_equal(ctl("napper", "resume"), AOS_OK);
    wait_end("napper", 10000, &a);
    uint64_t took = aos_mono_ms() - t0;
    must_log("napper", "body while you slept");
    print_message("resume to received: %llu ms (its receive's deadline: 30 s)\n",
                  (unsigned long long)took);
    assert_true(took < 5000); /* woken at the resume, not at its deadline */
}

static void request_reply_and_its_deadline(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("echo", "[echo]", "    talks_to: [asker]\n")
              AGENT("mute", "[idle]", "")
                  AGENT("asker", "[request, echo, hello, \"20000\"]",
                        "    talks_to: [echo, mute]\n    restart: {policy: never}\n")
                      AGENT("waiter", "[request, mute, anyone, \"1500\"]",
                            "    talks_to: [mute]\n    restart: {policy: never}\n"));
    ainfo a;
    wait_end("asker", 30000, &a);
    if (strcmp(a.state, "done")) { /* why, for a run that cannot be repeated by hand */
        char *la = logs("asker"), *le = logs("echo");
        fail_msg("asker is %s (%s); its log:\n%s\necho's log:\n%s", a.state, a.reason, la, le);
    }
    must_log("asker", "request: reply from echo after");
    must_log("asker", "echo:hello");
    must_log("echo", "reply to asker: OK");
    wait_end("waiter", 30000, &a);
    assert_non_null(strstr(a.reason, "exit 7")); /* TIMEOUT */
    must_log("waiter", "request: TIMEOUT after");
    long long took = log_num("waiter", "TIMEOUT after ");
    print_message("request to an agent that never answers: TIMEOUT after %lld ms (deadline "
                  "1500 ms)\n", took);
    assert_true(took >= 1400 && took < 5000);
}

static void topics_fan_out_into_each_subscribers_inbox(void **st)
{
    (void)st;
    apply("topics: [news, other]\nagents:\n"
          AGENT("sub1", "[recv1, \"30000\"]", "    subscribes: [news]\n")
              AGENT("sub2", "[recv1, \"30000\"]", "    subscribes: [news, other]\n")
                  AGENT("deaf", "[recv1, \"3000\"]",
                            "    subscribes: [other]\n    restart: {policy: never}\n")
                      AGENT("pub", "[publish, news, extra]", "    restart: {policy: never}\n"));
    ainfo a;
    wait_end("pub", 30000, &a);
    assert_string_equal(a.state, "done");
    must_log("pub", "publish: OK, 2 delivered");
    for (int i = 0; i < 2; i++) {
        const char *n = i ? "sub2" : "sub1";
        wait_end(n, 30000, &a);
        must_log(n, "recv1: from pub kind msg topic news");
        must_log(n, "body extra");
    }
    wait_end("deaf", 30000, &a);
    must_log("deaf", "recv1: TIMEOUT");
}

/* ---- at least once, handled once, across kill -9 ------------------------------------------- */

#define N_MSGS 40

static void id_hex(long i, char out[2 * AOS_MSG_ID_LEN + 1])
{
    char s[40];
    uint8_t id[AOS_MSG_ID_LEN] = {0};
    snprintf(s, sizeof s, "%.4s-%011ld", "k", i);
    memcpy(id, s, strlen(s) < sizeof id ? strlen(s) : sizeof id);
    aos_hex(id, sizeof id, out);
}

/* The receiver's "seen:" keys (its handled records), as the admin reads its namespace. */
static size_t seen(int have[N_MSGS + 1])
{
    aos_call_opts o = {.agent_id = "sink", .timeout_ms = 10000};
    aos_kv_page *p = NULL;
    char why[256];
    if (aos_kv_list(h_conn(H), &o, "seen:", NULL, 1000, 0, &p, why, sizeof why) != AOS_OK)
        return 0; /* storage or postgres is coming back */
    size_t n = 0;
    memset(have, 0, sizeof(int) * (N_MSGS + 1));
    for (size_t i = 0; i < p->n; i++) {
        for (long k = 1; k <= N_MSGS; k++) {
            char h[40], key[48];
            id_hex(k, h);
            snprintf(key, sizeof key, "seen:%s", h);
            if (!strcmp(p->entries[i].key, key))
                have[k]++;
        }
        n++;
    }
    aos_kv_page_free(p);
    return n;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void kill_child(const char *name)
{
    pid_t pid = h_child(H, name, NULL);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(h_wait_running(H, name, pid, 60000) > 0);
}

static void kill_receiver(void)
{
    ainfo a;
    for (int i = 0; i < 200; i++) {
        if (info("sink", &a) == 0 && a.pid > 0 &&
            (!strcmp(a.state, "running") || !strcmp(a.state, "waiting")))
            break;
        usleep(25000);
    }
    assert_true(a.pid > 0);
    kill(a.pid, SIGKILL);
}

static void no_message_lost_or_handled_twice_across_kill9(void **st)
{
    (void)st;
    /* the receiver waits 30 ms between its effect and its ack, so kills land there too;
     * a delivery it held shows again after 1.5 s; the sender sends every 120 ms, so the
     * kills fall while mail flows */
    apply("agents:\n" AGENT("sink", "[receive, \"1500\", \"30\"]",
                            "    restart: {policy: always, intensity: 50/60, backoff_min_ms: "
                            "100, backoff_max_ms: 500}\n")
              AGENT("source", "[send, sink, \"40\", k, \"120\"]",
                    "    talks_to: [sink]\n    restart: {policy: on-failure}\n"));
    int have[N_MSGS + 1];
    const char *plan[] = {"sink", "storage", "sink", "postgres", "sink", "sink"};
    size_t next = 0;
    uint64_t t0 = aos_mono_ms();
    size_t got = 0;
    while (aos_mono_ms() - t0 < 90000) {
        got = seen(have);
        /* a kill every ~8 handled messages, while the flow goes on */
        if (next < sizeof plan / sizeof plan[0] && got >= 4 + next * 6) {
            print_message("kill -9 %s after %zu handled\n", plan[next], got);
            if (!strcmp(plan[next], "sink"))
                kill_receiver();
            else
                kill_child(plan[next]);
            next++;
        }
        if (got == N_MSGS && next == sizeof plan / sizeof plan[0])
            break;
        usleep(100000);
    }
    if (got != N_MSGS || next != sizeof plan / sizeof plan[0]) {
        h_dump_log(H);
        char *s = logs("sink"), *t = logs("source");
        fprintf(stderr, "%zu of %d handled, %zu kills done after 90 s\nsink:\n%s\nsource:\n%s",
                got, N_MSGS, next, s, t);
        free(s);
        free(t);
        fail();
    }
    /* every message handled: its record once (a key is one key), none lost */
    for (long k = 1; k <= N_MSGS; k++)
        if (have[k] != 1)
            fail_msg("message %ld has %d handled records", k, have[k]);
    /* the inbox empties: each delivery acked (a held one shows again and is acked as a dup) */
    size_t left = 1;
    for (int i = 0; i < 200 && (left = ls_count("sink", "")); i++)
        usleep(100000);
    assert_int_equal(left, 0);
    /* handled at most once by the program itself: its effect lines, one per id at most */
    char *s = logs("sink");
    int dups = count_of(s, "dup "), handled = count_of(s, "handled ");
    for (long k = 1; k <= N_MSGS; k++) {
        char h[40], line[64];
        id_hex(k, h);
        snprintf(line, sizeof line, "handled %s ", h);
        if (count_of(s, line) > 1)
            fail_msg("message %ld was handled %d times:\n%s", k, count_of(s, line), s);
    }
    ainfo a;
    wait_end("source", 20000, &a);
    assert_string_equal(a.state, "done");
    print_message("%d messages: %d handled lines (a kill may cut one), %d deliveries deduped "
                  "by id\n", N_MSGS, handled, dups);
    free(s);
    must_log("source", "sent all 40");
    /* a stop reaches an agent idle in its receive: the wait ends, the program exits 0 */
    assert_int_equal(ctl("sink", "stop"), AOS_OK);
    wait_end("sink", 20000, &a);
    assert_string_equal(a.state, "done");
    must_log("sink", "receive: stop");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_recv_ack_between_two_agents),
        cmocka_unit_test(an_agent_not_named_is_refused_and_audited),
        cmocka_unit_test(bad_requests_are_refused_with_a_reason),
        cmocka_unit_test(a_receive_sleeps_until_a_send_wakes_it),
        cmocka_unit_test(mail_to_a_suspended_receiver_waits_for_its_resume),
        cmocka_unit_test(request_reply_and_its_deadline),
        cmocka_unit_test(topics_fan_out_into_each_subscribers_inbox),
        cmocka_unit_test(no_message_lost_or_handled_twice_across_kill9),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
