/* libFuzzer target for the durable steps' replay: any step log (kinds and records as they
 * come back from aos-storage, which a bug or a hand edit could have made) and any program
 * of LLM and tool steps over it must not crash, leak, or run a recorded step again. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aos/step.h"
#include "step_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LOG_MAX 64

typedef struct fz {
    aos_step log[LOG_MAX];
    size_t n;
    uint64_t now;
    unsigned calls;
} fz;

static aos_err f_call(void *arg, const aos_call_opts *o, const char *m, const void *req,
                      size_t len, aos_reply *r)
{
    (void)o, (void)m, (void)req, (void)len;
    fz *f = arg;
    f->calls++;
    memset(r, 0, sizeof *r);
    r->payload = malloc(4);
    memcpy(r->payload, "ok!", 4);
    r->payload_len = 3;
    return AOS_OK;
}
static aos_err f_kv_get(void *arg, const aos_call_opts *o, const char *key, uint8_t **v,
                        size_t *n, char *why, size_t whylen)
{
    (void)arg, (void)o, (void)why, (void)whylen;
    const char *val = !strcmp(key, AOS_RUN_KEY_CURRENT) ? "r-00"
                      : "{\"run\":\"r-00\",\"state\":\"running\",\"started_ms\":1,"
                        "\"ended_ms\":0,\"steps\":0,\"reason\":\"\"}";
    *n = strlen(val);
    *v = (uint8_t *)strdup(val);
    return AOS_OK;
}
static aos_err f_kv_put(void *arg, const aos_call_opts *o, const char *key, const void *v,
                        size_t n, int create_only, char *why, size_t whylen)
{
    (void)arg, (void)o, (void)key, (void)v, (void)n, (void)create_only, (void)why, (void)whylen;
    return AOS_OK;
}
static aos_err f_kv_delete(void *arg, const aos_call_opts *o, const char *key, char *why,
                           size_t whylen)
{
    (void)arg, (void)o, (void)key, (void)why, (void)whylen;
    return AOS_OK;
}
static aos_err f_log_read(void *arg, const aos_call_opts *o, const char *run, uint64_t from,
                          aos_step_page **out, char *why, size_t whylen)
{
    (void)o, (void)run, (void)why, (void)whylen;
    fz *f = arg;
    aos_step_page *p = calloc(1, sizeof *p);
    p->steps = calloc(4, sizeof *p->steps);
    p->last_step = f->n;
    for (size_t i = from ? from - 1 : 0; i < f->n && p->n < 3; i++) {
        aos_step *s = &p->steps[p->n++];
        *s = f->log[i];
        s->kind = strdup(f->log[i].kind);
        s->data = malloc(f->log[i].len + 1);
        memcpy(s->data, f->log[i].data, f->log[i].len);
    }
    *out = p;
    return AOS_OK;
}
static aos_err f_log_append(void *arg, const aos_call_opts *o, const char *run, uint64_t step,
                            const char *kind, const void *d, size_t n, char *why, size_t whylen)
{
    (void)arg, (void)o, (void)run, (void)step, (void)kind, (void)d, (void)n, (void)why,
        (void)whylen;
    return AOS_OK;
}
static uint64_t f_now(void *arg)
{
    return ++((fz *)arg)->now;
}
static void f_sleep(void *arg, uint32_t ms)
{
    ((fz *)arg)->now += ms;
}

static aos_err build(void *arg, uint8_t **buf, size_t *len)
{
    (void)arg;
    *buf = (uint8_t *)strdup("q");
    *len = 1;
    return AOS_OK;
}

static const char *const KINDS[] = {"llm", "tool.start", "tool.end", "x", "tool"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fz f;
    memset(&f, 0, sizeof f);
    uint8_t prog = data[0];
    size_t i = 1;
    /* entries: a kind byte, a length byte, that many bytes of record */
    while (i + 2 <= size && f.n < LOG_MAX) {
        aos_step *s = &f.log[f.n];
        s->step = f.n + 1;
        s->kind = (char *)KINDS[data[i] % 5];
        size_t len = data[i + 1];
        i += 2;
        if (len > size - i)
            len = size - i;
        s->data = (uint8_t *)data + i;
        s->len = len;
        i += len;
        f.n++;
    }
    step_io io = {&f, f_call, f_kv_get, f_kv_put, f_kv_delete, f_log_read, f_log_append,
                  f_now, f_now, f_sleep};
    aos_run *r;
    if (step_run_open_io(&io, NULL, 0, &r, NULL, NULL, 0) != AOS_OK)
        return 0;
    for (int k = 0; k < 8; k++) {
        aos_reply rep;
        int replaying = aos_run_replaying(r);
        unsigned before = f.calls;
        aos_err e = prog >> k & 1 ? aos_step_tool(r, "t", 1, 1000, &rep)
                                  : aos_step_llm(r, build, NULL, 1000, &rep);
        /* a recorded LLM step is never called again */
        if (replaying && !(prog >> k & 1) && e == AOS_OK && f.calls != before)
            abort();
        aos_reply_clear(&rep);
        if (e == AOS_ERR_CONFLICT || e == AOS_ERR_PROTO)
            break;
    }
    aos_run_finish(r, AOS_RUN_DONE, "fuzz", NULL, 0);
    aos_run_close(r);
    return 0;
}
