/* aos-test-agent: an agent program for the tests and benchmarks, one behaviour per mode
 * (idle, steps, runsteps, crash, ignore-stop, spoof, dial, llm, tool, share, peek, call,
 * mail, escape); one stdout line per event. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aos/agent.h"
#include "aos/envelope.h"
#include "aos/memory.h"
#include "aos/msg.h"
#include "aos/storage.h"
#include "escape.h"
#include "llm.pb-c.h"
#include "tool.pb-c.h"

#define CALL_MS 120000u /* an LLM call may wait in the scheduler's queue */

static const char usage[] =
    "usage: aos-test-agent MODE [ARGS]\n"
    "  idle                  wait for wakes; exit 0 at \"stop\"\n"
    "  steps N [MS]          N steps, MS ms apart (100); exit 0 at the end or at STOP\n"
    "  crash                 abort() 50 ms after it opened\n"
    "  runsteps RUNS N [C]   N steps of each run of RUNS (r-a,r-b), the next after a\n"
    "                        REFUSED one; the first process aborts after C; exit 4 if\n"
    "                        one was REFUSED\n"
    "  ignore-stop           ignore SIGTERM and sleep; never steps\n"
    "  spoof OTHER           storage.kv.put spoof=x naming OTHER as the agent; exit 0\n"
    "  dial URL              aos_connect + kernel.ping: exit 3 if it got through, else 0\n"
    "  llm MODEL [TEXT [N]]  llm.chat of one user message (\"hello\"), N times (1) or\n"
    "                        until one fails\n"
    "  tool NAME ARGSJSON [net]  tool.run (net: asks for a network)\n"
    "  share                 one workspace with its tool runs: write, a tool reads and\n"
    "                        writes, read (exit 0: all worked, 3: one did not)\n"
    "  peek OTHER            look for OTHER's share files (own workspace, .., a tool run)\n"
    "  hog MB                touch MB MiB of memory (its cgroup's memory.max ends it)\n"
    "  threads N             start N threads (its cgroup's pids.max stops them: exit 3)\n"
    "  assemble BUDGET       memory.assemble with this call's own budget (tokens)\n"
    "  call METHOD           a call with an empty payload\n"
    "  send TO N [PREFIX [MS]] N messages to TO, ids PREFIX+i, each retried until sent,\n"
    "                        MS ms apart (0)\n"
    "  receive [VIS_MS [MS]] receive for ever: handled once per id (a create-only\n"
    "                        \"seen:<id>\" key), then acked; MS ms between effect and ack\n"
    "  recv1 TIMEOUT_MS      one receive: print it, ack it, exit 0 (3: timeout)\n"
    "  echo                  answer every request with \"echo:<body>\"\n"
    "  request TO TEXT MS    one request, its reply within MS: exit 0, 7 on TIMEOUT\n"
    "  publish TOPIC TEXT    one publication\n"
    "  rawmail TO            storage.queue.send into TO's inbox, past msg.send\n"
    "  escape                try what the sandbox forbids (network sockets, namespaces,\n"
    "                        mount, bpf, io_uring, fork, ...): exit 0 when each is refused\n"
    "                        with EPERM and what it needs still works, else 3\n"
    "llm, tool, call: exit 0 on OK, 4 on REFUSED, 1 otherwise\n";

static void ms_sleep(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A decimal count, all of s. -1 when it is not one. */
static long count(const char *s, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return *s && !*end && !errno && v >= 0 && v <= max ? v : -1;
}

static aos_agent *open_or_die(void)
{
    aos_agent *a;
    char why[AOS_ERRMSG_MAX + 1];
    aos_err e = aos_agent_open(&a, why, sizeof why);
    if (e != AOS_OK) {
        printf("open: %s: %s\n", aos_err_name(e), why);
        exit(1);
    }
    printf("open: %s incarnation %llu\n", aos_agent_name(a),
           (unsigned long long)aos_agent_incarnation(a));
    return a;
}

/* The exit code of a call's outcome: 0 OK, 4 REFUSED, 1 anything else. */
static int outcome(const char *what, aos_err e, const char *msg)
{
    printf("%s: %s%s%s\n", what, aos_err_name(e), msg && *msg ? ": " : "", msg ? msg : "");
    return e == AOS_OK ? 0 : e == AOS_ERR_REFUSED ? 4 : 1;
}

static int m_idle(void)
{
    aos_agent *a = open_or_die();
    char why[64], err[AOS_ERRMSG_MAX + 1];
    for (;;) {
        aos_err e = aos_agent_wait(a, why, sizeof why, err, sizeof err);
        if (e != AOS_OK) {
            printf("wait: %s: %s\n", aos_err_name(e), err);
            aos_agent_close(a);
            return 1;
        }
        printf("woken: %s\n", why);
        if (!strcmp(why, "stop"))
            break;
    }
    aos_agent_close(a);
    return 0;
}

/* Touches mb MiB of fresh memory, a MiB at a time, saying how far it got: its cgroup's
 * memory.max ends it (the kernel's OOM killer, in its cgroup only). */
static int m_hog(long mb)
{
    for (long i = 0; i < mb; i++) {
        char *p = malloc(1u << 20);
        if (!p) {
            printf("hog: malloc failed at %ld MiB\n", i);
            return 1;
        }
        memset(p, 0x5a, 1u << 20);
        if (i % 16 == 0)
            printf("hog: %ld MiB\n", i);
    }
    printf("hog: all %ld MiB\n", mb);
    return 0;
}

static void *sleeper(void *arg)
{
    (void)arg;
    pause();
    return NULL;
}

/* Starts threads until one fails or n are running: its cgroup's pids.max stops it. */
static int m_threads(long n)
{
    long i;
    for (i = 0; i < n; i++) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 64u << 10);
        int e = pthread_create(&t, &at, sleeper, NULL);
        pthread_attr_destroy(&at);
        if (e) {
            printf("threads: %ld started, then %s\n", i, strerror(e));
            return 3;
        }
    }
    printf("threads: all %ld started\n", i);
    return 0;
}

static int m_steps(long n, long ms)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1];
    for (long i = 1; i <= n; i++) {
        aos_agent_action act;
        aos_err e = aos_agent_step(a, &act, why, sizeof why);
        if (e != AOS_OK) {
            printf("step %ld: %s: %s\n", i, aos_err_name(e), why);
            aos_agent_close(a);
            return 1;
        }
        if (act == AOS_AGENT_STOP) {
            printf("step %ld: stop\n", i);
            aos_agent_close(a);
            return 0;
        }
        printf("step %ld: continue\n", i);
        ms_sleep((unsigned)ms);
    }
    printf("done: %ld steps\n", n);
    aos_agent_close(a);
    return 0;
}

/* n steps of each run of runs ("r-a,r-b": aos_agent_set_run), the next run after a
 * REFUSED step (the kernel's budgets.steps); the first process aborts after crash steps of
 * its first run (0: never). Exit 4 when a step was REFUSED, 0 when none was. */
static int m_runsteps(const char *runs, long n, long crash)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1], run[AOS_RUN_ID_MAX + 1];
    int first = aos_agent_incarnation(a) == 1, refused = 0;
    for (const char *p = runs; *p;) {
        size_t l = strcspn(p, ",");
        snprintf(run, sizeof run, "%.*s", (int)(l > AOS_RUN_ID_MAX ? AOS_RUN_ID_MAX : l), p);
        p += l + (p[l] == ',');
        if (aos_agent_set_run(a, run) != AOS_OK) {
            printf("runsteps: bad run id\n");
            aos_agent_close(a);
            return 1;
        }
        for (long i = 1; i <= n; i++) {
            aos_agent_action act;
            aos_err e = aos_agent_step(a, &act, why, sizeof why);
            if (e == AOS_ERR_REFUSED) {
                printf("run %s step %ld: REFUSED: %s\n", run, i, why);
                refused = 1;
                break;
            }
            if (e != AOS_OK) {
                printf("run %s step %ld: %s: %s\n", run, i, aos_err_name(e), why);
                aos_agent_close(a);
                return 1;
            }
            printf("run %s step %ld: continue\n", run, i);
            if (first && crash && i == crash) {
                printf("runsteps: abort after step %ld\n", i);
                abort();
            }
        }
        first = 0;
    }
    printf("runsteps: done\n");
    aos_agent_close(a);
    return refused ? 4 : 0;
}

static _Noreturn void m_crash(void)
{
    aos_agent *a = open_or_die();
    (void)a; /* left open: a crash does not close */
    ms_sleep(50);
    printf("crash: abort\n");
    abort();
}

static _Noreturn void m_ignore_stop(void)
{
    aos_agent *a = open_or_die();
    (void)a; /* kept open until SIGKILL */
    signal(SIGTERM, SIG_IGN);
    printf("ignore-stop: SIGTERM ignored\n");
    for (;;)
        ms_sleep(1000);
}

static int m_spoof(const char *other)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1] = "";
    uint64_t version = 0;
    aos_call_opts o = {.agent_id = other};
    aos_err e = aos_kv_put(aos_agent_conn(a), &o, "spoof", "x", 1, NULL, &version, why,
                           sizeof why);
    if (e == AOS_OK)
        printf("spoof: OK as %s, version %llu\n", other, (unsigned long long)version);
    else
        printf("spoof: %s: %s\n", aos_err_name(e), why);
    aos_agent_close(a);
    return e == AOS_OK ? 0 : 1;
}

static int m_dial(const char *url)
{
    aos_conn *c = NULL;
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_err e = aos_connect(url, &c, why, sizeof why);
    if (e != AOS_OK) {
        printf("dial: %s: %s\n", aos_err_name(e), why);
        return 0;
    }
    aos_reply r;
    aos_call_opts o = {.timeout_ms = 5000};
    e = aos_call(c, &o, "kernel.ping", NULL, 0, &r);
    if (e == AOS_OK)
        printf("dial: OK\n");
    else
        printf("dial: %s: %s\n", aos_err_name(e), r.error);
    aos_reply_clear(&r);
    aos_close(c);
    return e == AOS_OK ? 3 : 0;
}

/* Calls method with the packed request (may be NULL); the reply is the caller's. */
static aos_err call(aos_agent *a, const char *method, const ProtobufCMessage *rq,
                    aos_reply *r)
{
    size_t n = rq ? protobuf_c_message_get_packed_size(rq) : 0;
    uint8_t *buf = n ? malloc(n) : NULL;
    if (n && !buf) {
        memset(r, 0, sizeof *r);
        snprintf(r->error, sizeof r->error, "out of memory");
        return r->status = AOS_ERR_NOMEM;
    }
    if (n)
        protobuf_c_message_pack(rq, buf);
    aos_call_opts o = {.timeout_ms = CALL_MS};
    aos_err e = aos_call(aos_agent_conn(a), &o, method, buf, n, r);
    free(buf);
    return e;
}

static ProtobufCBinaryData txt(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

/* One line of text for the logs: control characters (newlines too) as spaces. */
static void put_line(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n && i < 400; i++)
        putchar(d[i] < 0x20 || d[i] == 0x7f ? ' ' : d[i]);
    putchar('\n');
}

static int llm_once(aos_agent *a, const char *model, const char *text);

static int m_llm(const char *model, const char *text, long times)
{
    aos_agent *a = open_or_die();
    int rc = 0;
    for (long t = 0; t < times && !rc; t++)
        rc = llm_once(a, model, text);
    aos_agent_close(a);
    return rc;
}

static int llm_once(aos_agent *a, const char *model, const char *text)
{
    Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT, *parts[1] = {&part};
    Aos__Llm__Message msg = AOS__LLM__MESSAGE__INIT, *msgs[1] = {&msg};
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = txt(text);
    msg.role = AOS__LLM__ROLE__USER;
    msg.n_content = 1;
    msg.content = parts;
    q.model = txt(model);
    q.n_messages = 1;
    q.messages = msgs;
    q.max_tokens = 64;
    aos_reply r;
    aos_err e = call(a, "llm.chat", &q.base, &r);
    int rc = outcome("llm", e, e == AOS_OK ? NULL : r.error);
    if (e == AOS_OK) {
        Aos__Llm__ChatReply *cr = aos__llm__chat_reply__unpack(NULL, r.payload_len, r.payload);
        if (!cr || !cr->message) {
            printf("llm: the reply is not a ChatReply\n");
            rc = 1;
        } else {
            for (size_t i = 0; i < cr->message->n_content; i++) {
                printf("llm text: ");
                put_line(cr->message->content[i]->text.data, cr->message->content[i]->text.len);
            }
            if (cr->usage)
                printf("llm usage: %llu in, %llu out\n",
                       (unsigned long long)cr->usage->input_tokens,
                       (unsigned long long)cr->usage->output_tokens);
        }
        if (cr)
            aos__llm__chat_reply__free_unpacked(cr, NULL);
    }
    aos_reply_clear(&r);
    return rc;
}

static int m_tool(const char *tool, const char *args, int net)
{
    aos_agent *a = open_or_die();
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    Aos__Tool__Grant g = AOS__TOOL__GRANT__INIT;
    g.network = net; /* a wish: the kernel grants what the manifest says, or refuses */
    q.agent = txt(aos_agent_name(a)); /* its own: the kernel decides whose it is anyway */
    q.tool = txt(tool);
    q.args = txt(args);
    q.grant = &g;
    aos_reply r;
    aos_err e = call(a, "tool.run", &q.base, &r);
    int rc = outcome("tool", e, e == AOS_OK ? NULL : r.error);
    if (e == AOS_OK) {
        Aos__Tool__RunReply *rr = aos__tool__run_reply__unpack(NULL, r.payload_len, r.payload);
        if (!rr) {
            printf("tool: the reply is not a RunReply\n");
            rc = 1;
        } else {
            printf("tool exit: %d (%s)\n", rr->exit_status, aos_err_name((int)rr->error));
            printf("tool stdout: ");
            put_line(rr->stdout_data.data, rr->stdout_data.len);
            aos__tool__run_reply__free_unpacked(rr, NULL);
        }
    }
    aos_reply_clear(&r);
    aos_agent_close(a);
    return rc;
}

/* One sh tool run of cmd; its stdout (cap bytes, NUL-terminated) into out. 0: it ran
 * and exited 0. */
static int sh_run(aos_agent *a, const char *cmd, char *out, size_t cap)
{
    char args[1024];
    snprintf(args, sizeof args, "{\"command\":\"%s\"}", cmd);
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    q.tool = txt("sh");
    q.args = txt(args);
    aos_reply r;
    aos_err e = call(a, "tool.run", &q.base, &r);
    int rc = 1;
    out[0] = 0;
    Aos__Tool__RunReply *rr = e == AOS_OK ? aos__tool__run_reply__unpack(NULL, r.payload_len,
                                                                        r.payload)
                                          : NULL;
    if (rr) {
        snprintf(out, cap, "%.*s", (int)rr->stdout_data.len, (const char *)rr->stdout_data.data);
        rc = rr->exit_status != 0;
        aos__tool__run_reply__free_unpacked(rr, NULL);
    } else {
        printf("tool.run: %s: %s\n", aos_err_name(e), e ? r.error : "not a RunReply");
    }
    aos_reply_clear(&r);
    return rc;
}

/* The first line of file (cap bytes) into out; -1 when it does not open. */
static int first_line(const char *file, char *out, size_t cap)
{
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    if (!fgets(out, (int)cap, f))
        out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    fclose(f);
    return 0;
}

/* One workspace: the agent writes a file, its tool run reads it, adds to it and writes
 * another, the agent reads that and adds to it. Exit 0 when every step worked, else 3. */
static int m_share(void)
{
    aos_agent *a = open_or_die();
    char out[4096], line[256];
    int bad = 0;
    FILE *f = fopen("from-agent.txt", "w");
    bad |= !f || fputs("agent wrote this\n", f) < 0;
    if (f)
        bad |= fclose(f) != 0;
    printf("share: the agent wrote from-agent.txt: %s\n", bad ? "failed" : "ok");
    int trc = sh_run(a, "cat from-agent.txt && echo tool wrote this > from-tool.txt && "
                        "echo tool added this >> from-agent.txt", out, sizeof out);
    out[strcspn(out, "\n")] = 0;
    printf("share: the tool run read: %s (%s)\n", out, trc ? "failed" : "ok");
    bad |= trc || strcmp(out, "agent wrote this");
    if (first_line("from-tool.txt", line, sizeof line) != 0) {
        printf("share: the agent cannot read from-tool.txt: %s\n", strerror(errno));
        bad = 1;
    } else {
        printf("share: the agent read from-tool.txt: %s\n", line);
        bad |= strcmp(line, "tool wrote this") != 0;
    }
    f = fopen("from-tool.txt", "a");
    int wbad = !f || fputs("agent added this\n", f) < 0;
    if (f)
        wbad |= fclose(f) != 0;
    printf("share: the agent added to from-tool.txt: %s\n", wbad ? strerror(errno) : "ok");
    bad |= wbad;
    printf("share: %s\n", bad ? "FAILED" : "all ok");
    aos_agent_close(a);
    return bad ? 3 : 0;
}

/* Another agent looks for what the sharer made: in its own workspace, its parent and by a
 * tool run; prints what it found (nothing, when confined). */
static int m_peek(const char *other)
{
    aos_agent *a = open_or_die();
    char out[4096], path[512], line[256];
    for (int i = 0; i < 3; i++) {
        if (i == 0)
            snprintf(path, sizeof path, "from-agent.txt");
        else if (i == 1)
            snprintf(path, sizeof path, "../%s/from-agent.txt", other);
        else
            snprintf(path, sizeof path, "/workspace/../%s/from-tool.txt", other);
        printf("peek: %s: %s\n", path, first_line(path, line, sizeof line) ? "not there" : line);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A; cat from-agent.txt ../%s/from-agent.txt "
             "../%s/from-tool.txt 2>/dev/null; true", other, other);
    int rc = sh_run(a, cmd, out, sizeof out);
    for (char *p = out; *p; p++)
        if (*p == '\n')
            *p = ' ';
    printf("peek: the tool run saw: [%s] (%s)\n", out, rc ? "failed" : "ok");
    aos_agent_close(a);
    return rc ? 1 : 0;
}

static int m_assemble(long budget)
{
    aos_agent *a = open_or_die();
    aos_call_opts o = {.timeout_ms = CALL_MS};
    aos_mem_assemble_opts ao = {.budget = budget};
    struct Aos__Memory__AssembleReply *p = NULL;
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_err e = aos_mem_assemble(aos_agent_conn(a), &o, &ao, &p, why, sizeof why);
    aos_mem_prompt_free(p);
    aos_agent_close(a);
    return outcome("memory.assemble", e, why);
}

static int m_call(const char *method)
{
    aos_agent *a = open_or_die();
    aos_reply r;
    aos_err e = call(a, method, NULL, &r);
    int rc = outcome(method, e, e == AOS_OK ? NULL : r.error);
    if (e == AOS_OK)
        printf("%s: %zu bytes of reply\n", method, r.payload_len);
    aos_reply_clear(&r);
    aos_agent_close(a);
    return rc;
}

/* ---- mail -------------------------------------------------------------------------------- */

/* The id of message i of a sender: PREFIX (at most 4 bytes) then i in decimal, 16 bytes.
 * msg_test computes the same. */
static void msg_id(const char *prefix, long i, uint8_t id[AOS_MSG_ID_LEN])
{
    char s[40];
    snprintf(s, sizeof s, "%.4s-%011ld", prefix, i % 100000000000L);
    memset(id, 0, AOS_MSG_ID_LEN);
    memcpy(id, s, strlen(s) < AOS_MSG_ID_LEN ? strlen(s) : AOS_MSG_ID_LEN);
}

static int m_send(const char *to, long n, const char *prefix, long pause)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1];
    for (long i = 1; i <= n; i++) {
        uint8_t id[AOS_MSG_ID_LEN];
        msg_id(prefix, i, id);
        char body[64];
        int len = snprintf(body, sizeof body, "%s message %ld", prefix, i);
        aos_msg_send_opts o = {.id = id, .timeout_ms = 20000};
        for (int tries = 1;; tries++) {
            aos_err e = aos_msg_send(a, to, body, (size_t)len, &o, NULL, why, sizeof why);
            if (e == AOS_OK)
                break;
            printf("send %ld: %s: %s (try %d)\n", i, aos_err_name(e), why, tries);
            if (e == AOS_ERR_REFUSED || e == AOS_ERR_NOT_FOUND || e == AOS_ERR_USAGE) {
                aos_agent_close(a);
                return e == AOS_ERR_REFUSED ? 4 : 1;
            }
            ms_sleep(200); /* the same id again: one message however often it is sent */
        }
        printf("sent %ld\n", i);
        if (pause)
            ms_sleep((unsigned)pause);
    }
    printf("sent all %ld\n", n);
    aos_agent_close(a);
    return 0;
}

static int m_receive(long vis, long pause)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1];
    for (;;) {
        aos_msg *m = NULL;
        aos_err e = aos_msg_recv(a, 60000, (uint32_t)vis, &m, why, sizeof why);
        if (e == AOS_ERR_CANCELLED)
            break;
        if (e == AOS_ERR_TIMEOUT)
            continue;
        if (e != AOS_OK) {
            printf("recv: %s: %s\n", aos_err_name(e), why);
            ms_sleep(200);
            continue;
        }
        /* the effect and its "handled" record are one create-only write keyed by the id */
        char key[64];
        snprintf(key, sizeof key, "seen:%s", m->id_hex);
        aos_kv_put_opts po = {.cas = 1, .if_version = 0};
        for (;;) {
            e = aos_kv_put(aos_agent_conn(a), NULL, key, m->body, m->len, &po, NULL, why,
                           sizeof why);
            if (e == AOS_OK || e == AOS_ERR_CONFLICT)
                break;
            printf("put %s: %s: %s\n", m->id_hex, aos_err_name(e), why);
            ms_sleep(200);
        }
        if (e == AOS_OK)
            printf("handled %s from %s tries %u\n", m->id_hex, m->from, m->tries);
        else
            printf("dup %s tries %u\n", m->id_hex, m->tries);
        if (pause)
            ms_sleep((unsigned)pause);
        e = aos_msg_ack(a, m, why, sizeof why);
        if (e != AOS_OK) /* delivered again later: then it is a dup */
            printf("ack %s: %s: %s\n", m->id_hex, aos_err_name(e), why);
        aos_msg_stats st;
        aos_msg_get_stats(&st);
        printf("stats recvs %llu waits %llu wakes %llu\n", (unsigned long long)st.storage_recvs,
               (unsigned long long)st.kernel_waits, (unsigned long long)st.mail_wakes);
        aos_msg_free(m);
    }
    printf("receive: stop\n");
    aos_agent_close(a);
    return 0;
}

static int m_recv1(long timeout)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1];
    aos_msg *m = NULL;
    aos_err e = aos_msg_recv(a, (uint32_t)timeout, 0, &m, why, sizeof why);
    if (e != AOS_OK) {
        printf("recv1: %s: %s\n", aos_err_name(e), why);
        aos_agent_close(a);
        return e == AOS_ERR_TIMEOUT ? 3 : 1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    aos_msg_stats st;
    aos_msg_get_stats(&st);
    printf("recv1: from %s kind %s topic %s at_us %lld recvs %llu waits %llu wakes %llu body ",
           m->from, m->kind, m->topic[0] ? m->topic : "-",
           (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000,
           (unsigned long long)st.storage_recvs, (unsigned long long)st.kernel_waits,
           (unsigned long long)st.mail_wakes);
    put_line(m->body, m->len);
    e = aos_msg_ack(a, m, why, sizeof why);
    printf("ack: %s\n", aos_err_name(e));
    aos_msg_free(m);
    aos_agent_close(a);
    return e == AOS_OK ? 0 : 1;
}

static int m_echo(void)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1];
    for (;;) {
        aos_msg *m = NULL;
        aos_err e = aos_msg_recv(a, 60000, 0, &m, why, sizeof why);
        if (e == AOS_ERR_CANCELLED)
            break;
        if (e != AOS_OK)
            continue;
        if (!strcmp(m->kind, "request")) {
            char out[512];
            int n = snprintf(out, sizeof out, "echo:%.400s", (const char *)m->body);
            e = aos_msg_reply(a, m, out, (size_t)n, why, sizeof why);
            printf("reply to %s: %s%s%s\n", m->from, aos_err_name(e), e ? ": " : "",
                   e ? why : "");
        }
        aos_msg_ack(a, m, NULL, 0);
        aos_msg_free(m);
    }
    aos_agent_close(a);
    return 0;
}

static int m_request(const char *to, const char *text, long ms)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1];
    aos_msg *r = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    aos_err e = aos_msg_request(a, to, text, strlen(text), NULL, (uint32_t)ms, &r, why,
                                sizeof why);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long took = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    if (e == AOS_OK) {
        printf("request: reply from %s after %ld ms: ", r->from, took);
        put_line(r->body, r->len);
        aos_msg_free(r);
    } else {
        printf("request: %s after %ld ms: %s\n", aos_err_name(e), took, why);
    }
    aos_agent_close(a);
    return e == AOS_OK ? 0 : e == AOS_ERR_TIMEOUT ? 7 : e == AOS_ERR_REFUSED ? 4 : 1;
}

static int m_publish(const char *topic, const char *text)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1] = "";
    uint32_t n = 0;
    aos_err e = aos_msg_publish(a, topic, text, strlen(text), NULL, &n, why, sizeof why);
    printf("publish: %s, %u delivered%s%s\n", aos_err_name(e), n, e ? ": " : "", e ? why : "");
    aos_agent_close(a);
    return e == AOS_OK ? 0 : e == AOS_ERR_REFUSED ? 4 : 1;
}

static int m_rawmail(const char *to)
{
    aos_agent *a = open_or_die();
    char why[AOS_ERRMSG_MAX + 1] = "";
    aos_queue_send_opts so = {.to_agent = to};
    uint64_t id = 0;
    aos_err e = aos_queue_send(aos_agent_conn(a), NULL, "inbox", "x", 1, &so, &id, why,
                               sizeof why);
    int rc = outcome("rawmail", e, why);
    aos_agent_close(a);
    return rc;
}

/* After its link is up (libaos works under the filter), every forbidden call once. */
static int m_escape(void)
{
    aos_agent *a = open_or_die();
    int bad = esc_run(stdout, 0);
    int broken = esc_allowed(stdout, ".");
    printf("escape: %d not refused, %d of what it needs broken\n", bad, broken);
    aos_agent_close(a);
    return bad || broken ? 3 : 0;
}

int main(int argc, char **argv)
{
    /* the kernel keeps stdout as the logs: a line is out when it is printed, also before
     * an abort() */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *m = argc > 1 ? argv[1] : "";
    if (!strcmp(m, "idle") && argc == 2)
        return m_idle();
    if (!strcmp(m, "runsteps") && (argc == 4 || argc == 5)) {
        long n = count(argv[3], 1000000), c = argc == 5 ? count(argv[4], 1000000) : 0;
        if (n >= 0 && c >= 0)
            return m_runsteps(argv[2], n, c);
    }
    if (!strcmp(m, "steps") && (argc == 3 || argc == 4)) {
        long n = count(argv[2], 1000000000L), ms = argc == 4 ? count(argv[3], 3600000L) : 100;
        if (n >= 0 && ms >= 0)
            return m_steps(n, ms);
    }
    if (!strcmp(m, "crash") && argc == 2)
        m_crash();
    if (!strcmp(m, "hog") && argc == 3 && count(argv[2], 1L << 20) >= 0)
        return m_hog(count(argv[2], 1L << 20));
    if (!strcmp(m, "threads") && argc == 3 && count(argv[2], 100000L) >= 0)
        return m_threads(count(argv[2], 100000L));
    if (!strcmp(m, "ignore-stop") && argc == 2)
        m_ignore_stop();
    if (!strcmp(m, "spoof") && argc == 3)
        return m_spoof(argv[2]);
    if (!strcmp(m, "dial") && argc == 3)
        return m_dial(argv[2]);
    if (!strcmp(m, "llm") && argc >= 3 && argc <= 5) {
        long n = argc == 5 ? count(argv[4], 100000L) : 1;
        if (n >= 0)
            return m_llm(argv[2], argc >= 4 ? argv[3] : "hello", n);
    }
    if (!strcmp(m, "share") && argc == 2)
        return m_share();
    if (!strcmp(m, "peek") && argc == 3)
        return m_peek(argv[2]);
    if (!strcmp(m, "tool") && argc == 4)
        return m_tool(argv[2], argv[3], 0);
    if (!strcmp(m, "tool") && argc == 5 && !strcmp(argv[4], "net"))
        return m_tool(argv[2], argv[3], 1);
    if (!strcmp(m, "assemble") && argc == 3 && count(argv[2], 2000000L) >= 0)
        return m_assemble(count(argv[2], 2000000L));
    if (!strcmp(m, "call") && argc == 3)
        return m_call(argv[2]);
    if (!strcmp(m, "send") && argc >= 4 && argc <= 6) {
        long n = count(argv[3], 1000000L), pause = argc == 6 ? count(argv[5], 60000L) : 0;
        if (n >= 0 && pause >= 0)
            return m_send(argv[2], n, argc >= 5 ? argv[4] : "m", pause);
    }
    if (!strcmp(m, "receive") && argc >= 2 && argc <= 4) {
        long vis = argc >= 3 ? count(argv[2], 3600000L) : 0;
        long pause = argc == 4 ? count(argv[3], 60000L) : 0;
        if (vis >= 0 && pause >= 0)
            return m_receive(vis, pause);
    }
    if (!strcmp(m, "recv1") && argc == 3 && count(argv[2], 600000L) >= 0)
        return m_recv1(count(argv[2], 600000L));
    if (!strcmp(m, "echo") && argc == 2)
        return m_echo();
    if (!strcmp(m, "request") && argc == 5 && count(argv[4], 600000L) >= 0)
        return m_request(argv[2], argv[3], count(argv[4], 600000L));
    if (!strcmp(m, "rawmail") && argc == 3)
        return m_rawmail(argv[2]);
    if (!strcmp(m, "escape") && argc == 2)
        return m_escape();
    if (!strcmp(m, "publish") && argc == 4)
        return m_publish(argv[2], argv[3]);
    fputs(usage, stderr);
    return 2;
}
