/* bench_steps: what durability costs a step. LLM calls (sim) and tool runs through aosd as
 * plain calls, beside the same as durable steps (aos/step.h), and a replay of those steps.
 *
 *   bench_steps [N]     (default 200 LLM steps and N/4 tool steps; AOS_BIN_DIR=build/bin)
 *
 * Prints `name: value` lines: ms per plain call and per durable step, the overhead per step
 * (the step log's records), and ms per replayed step (the log read, nothing called). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aos/aos.h"
#include "aos/envelope.h"
#include "aos/step.h"
#include "harness.h"
#include "llm.pb-c.h"
#include "tool.pb-c.h"

static h_aosd *H;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static ProtobufCBinaryData txt(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static aos_err build_chat(void *arg, uint8_t **buf, size_t *len)
{
    (void)arg;
    Aos__Llm__ContentPart part = AOS__LLM__CONTENT_PART__INIT, *parts[1] = {&part};
    Aos__Llm__Message msg = AOS__LLM__MESSAGE__INIT, *msgs[1] = {&msg};
    Aos__Llm__ChatRequest q = AOS__LLM__CHAT_REQUEST__INIT;
    part.kind = AOS__LLM__PART_KIND__TEXT;
    part.text = txt("what is the next step?");
    msg.role = AOS__LLM__ROLE__USER;
    msg.n_content = 1;
    msg.content = parts;
    q.model = txt("sim/s1");
    q.n_messages = 1;
    q.messages = msgs;
    q.max_tokens = 32;
    *len = aos__llm__chat_request__get_packed_size(&q);
    *buf = malloc(*len);
    if (!*buf)
        return AOS_ERR_NOMEM;
    aos__llm__chat_request__pack(&q, *buf);
    return AOS_OK;
}

static uint8_t *tool_req(const char *agent, size_t *len)
{
    Aos__Tool__RunRequest q = AOS__TOOL__RUN_REQUEST__INIT;
    q.agent = txt(agent);
    q.tool = txt("sh");
    q.args = txt("{\"command\":\"true\"}");
    *len = aos__tool__run_request__get_packed_size(&q);
    uint8_t *b = malloc(*len);
    if (b)
        aos__tool__run_request__pack(&q, b);
    return b;
}

static void die(const char *what, aos_err e, const char *why)
{
    fprintf(stderr, "bench_steps: %s: %s: %s\n", what, aos_err_name(e), why);
    h_stop(H);
    exit(1);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
    if (n < 10)
        n = 10;
    long nt = n / 4;
    char dir[] = "/tmp/bench-steps-XXXXXX", path[128], why[1024];
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/aos.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fputs("llm:\n  default_model: sim/s1\n  providers:\n    - name: sim\n      kind: sim\n"
          "      models: [{name: s1}]\n", f);
    fclose(f);
    H = h_start_on(dir, NULL, 120000, why, sizeof why);
    if (!H) {
        fprintf(stderr, "bench_steps: aosd: %s\n", why);
        return 1;
    }
    aos_conn *c = h_conn(H);
    /* plain: llm.chat as any caller makes it */
    uint8_t *req;
    size_t len;
    build_chat(NULL, &req, &len);
    aos_call_opts o = {.agent_id = "plain", .timeout_ms = 30000};
    double t0 = now_ms();
    for (long i = 0; i < n; i++) {
        aos_reply r;
        aos_err e = aos_call(c, &o, "llm.chat", req, len, &r);
        if (e)
            die("llm.chat", e, r.error);
        aos_reply_clear(&r);
    }
    double plain_llm = (now_ms() - t0) / (double)n;
    free(req);
    /* durable: the same calls as the steps of one run */
    aos_run *run;
    aos_err e = aos_run_open(c, "durable", 0, &run, NULL, why, sizeof why);
    if (e)
        die("aos_run_open", e, why);
    t0 = now_ms();
    for (long i = 0; i < n; i++) {
        aos_reply r;
        if ((e = aos_step_llm(run, build_chat, NULL, 30000, &r)))
            die("aos_step_llm", e, r.error);
        aos_reply_clear(&r);
    }
    double step_llm = (now_ms() - t0) / (double)n;
    /* tools, plain and as steps, each agent's workspace made first (its first run) */
    uint8_t *treq = tool_req("plain", &len);
    const char *const warm[] = {"plain", "durable"};
    for (int w = 0; w < 2; w++) {
        size_t wl;
        uint8_t *wr = tool_req(warm[w], &wl);
        aos_call_opts wo = {.agent_id = warm[w], .timeout_ms = 30000};
        aos_reply r;
        if ((e = aos_call(c, &wo, "tool.run", wr, wl, &r)))
            die("tool.run (warm-up)", e, r.error);
        aos_reply_clear(&r);
        free(wr);
    }
    t0 = now_ms();
    for (long i = 0; i < nt; i++) {
        aos_reply r;
        if ((e = aos_call(c, &o, "tool.run", treq, len, &r)))
            die("tool.run", e, r.error);
        aos_reply_clear(&r);
    }
    double plain_tool = (now_ms() - t0) / (double)nt;
    free(treq);
    treq = tool_req("durable", &len);
    t0 = now_ms();
    for (long i = 0; i < nt; i++) {
        aos_reply r;
        if ((e = aos_step_tool(run, treq, len, 30000, &r)))
            die("aos_step_tool", e, r.error);
        aos_reply_clear(&r);
    }
    double step_tool = (now_ms() - t0) / (double)nt;
    aos_run_close(run);
    /* replay: open the run again (reads its log) and take every step from it */
    t0 = now_ms();
    if ((e = aos_run_open(c, "durable", 0, &run, NULL, why, sizeof why)))
        die("aos_run_open again", e, why);
    double open_ms = now_ms() - t0;
    for (long i = 0; i < n; i++) {
        aos_reply r;
        if ((e = aos_step_llm(run, build_chat, NULL, 30000, &r)))
            die("replayed aos_step_llm", e, r.error);
        aos_reply_clear(&r);
    }
    for (long i = 0; i < nt; i++) {
        aos_reply r;
        if ((e = aos_step_tool(run, treq, len, 30000, &r)))
            die("replayed aos_step_tool", e, r.error);
        aos_reply_clear(&r);
    }
    double replay = (now_ms() - t0) / (double)(n + nt);
    aos_run_close(run);
    free(treq);
    printf("llm_steps: %ld\ntool_steps: %ld\n", n, nt);
    printf("plain_llm_ms: %.3f\nstep_llm_ms: %.3f\nllm_overhead_ms: %.3f\n", plain_llm,
           step_llm, step_llm - plain_llm);
    printf("plain_tool_ms: %.3f\nstep_tool_ms: %.3f\ntool_overhead_ms: %.3f\n", plain_tool,
           step_tool, step_tool - plain_tool);
    printf("replay_open_ms: %.3f (%ld log entries)\nreplay_step_ms: %.4f\n", open_ms,
           n + 2 * nt, replay);
    h_stop(H);
    return 0;
}
