/* bench_msg: mail through the kernel. msg.send (rights, audit record, durable enqueue, wake)
 * against storage.queue.send into the same inbox (the durable enqueue alone), and mail end to end.
 *
 * Usage: AOS_BIN_DIR=build/bin build/bin/bench_msg [N]   (N: 300)
 * Prints: send_us_p50/p99 of each (one operator client, one at a time) and their ratio;
 * e2e_msgs_per_s: N sends handled by an agent that receives (a create-only kv put per
 * message, then its ack); and that agent's storage receives and kernel waits per message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/storage.h"
#include "harness.h"
#include "msg.pb-c.h"
#include "storage.pb-c.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static aos_err call(h_aosd *h, const char *agent, const char *method,
                    const ProtobufCMessage *m, aos_reply *r)
{
    uint8_t buf[4096];
    size_t len = protobuf_c_message_pack(m, buf);
    aos_call_opts o = {.agent_id = agent, .timeout_ms = 30000};
    return aos_call(h_conn(h), &o, method, buf, len, r);
}

static int apply(h_aosd *h, const char *yaml)
{
    Aos__Agent__ApplyRequest r = AOS__AGENT__APPLY_REQUEST__INIT;
    r.yaml = (ProtobufCBinaryData){strlen(yaml), (uint8_t *)yaml};
    r.prune = 1;
    aos_reply rep;
    for (int i = 0; i < 50; i++) { /* the deployment is read back once storage is up */
        aos_err e = call(h, NULL, "kernel.agent.apply", &r.base, &rep);
        aos_reply_clear(&rep);
        if (e == AOS_OK)
            return 0;
        usleep(200000);
    }
    return -1;
}

/* The agent's state ("" when it is not listed). */
static void state_of(h_aosd *h, const char *name, char *out, size_t cap)
{
    Aos__Agent__ListRequest r = AOS__AGENT__LIST_REQUEST__INIT;
    r.name = (ProtobufCBinaryData){strlen(name), (uint8_t *)name};
    aos_reply rep;
    out[0] = 0;
    if (call(h, NULL, "kernel.agent.list", &r.base, &rep) == AOS_OK) {
        Aos__Agent__ListReply *l = aos__agent__list_reply__unpack(NULL, rep.payload_len,
                                                                  rep.payload);
        if (l && l->n_agents == 1)
            snprintf(out, cap, "%.*s(%.*s)", (int)l->agents[0]->state.len,
                     (char *)l->agents[0]->state.data, (int)l->agents[0]->waiting_on.len,
                     (char *)l->agents[0]->waiting_on.data);
        if (l)
            aos__agent__list_reply__free_unpacked(l, NULL);
    }
    aos_reply_clear(&rep);
}

/* n sends of one kind, one at a time; the latencies sorted into lat. */
static int sends(h_aosd *h, int kernel, unsigned n, double *lat)
{
    for (unsigned i = 0; i < n; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "bench message %u", i);
        aos_reply rep;
        double t0 = now_us();
        aos_err e;
        if (kernel) {
            Aos__Msg__SendRequest q = AOS__MSG__SEND_REQUEST__INIT;
            q.to = (ProtobufCBinaryData){4, (uint8_t *)"idle"};
            q.body = (ProtobufCBinaryData){(size_t)len, (uint8_t *)body};
            e = call(h, NULL, "msg.send", &q.base, &rep);
        } else {
            Aos__Storage__QueueSendRequest q = AOS__STORAGE__QUEUE_SEND_REQUEST__INIT;
            q.queue = (ProtobufCBinaryData){5, (uint8_t *)"inbox"};
            q.body = (ProtobufCBinaryData){(size_t)len, (uint8_t *)body};
            e = call(h, "idle", "storage.queue.send", &q.base, &rep);
        }
        lat[i] = now_us() - t0;
        if (e != AOS_OK) {
            fprintf(stderr, "%s: %s: %s\n", kernel ? "msg.send" : "storage.queue.send",
                    aos_err_name(e), rep.error);
            aos_reply_clear(&rep);
            return -1;
        }
        aos_reply_clear(&rep);
    }
    qsort(lat, n, sizeof *lat, cmp_dbl);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 300;
    if (n < 10 || n > 100000) {
        fprintf(stderr, "usage: bench_msg [N (10..100000)]\n");
        return 2;
    }
    h_aosd *h = h_start(NULL);
    /* idle: an agent that never receives (its inbox only fills); rx: one that does */
    char yaml[512];
    snprintf(yaml, sizeof yaml, "agents:\n"
             "  - {name: idle, program: aos-test-agent, args: [idle]}\n"
             "  - {name: rx, program: aos-test-agent, args: [receive, \"30000\"]}\n");
    if (apply(h, yaml) != 0) {
        fprintf(stderr, "apply failed\n");
        h_stop(h);
        return 1;
    }
    double *base = calloc(n, sizeof *base), *msg = calloc(n, sizeof *msg);
    /* warm both paths, then measure them in turns so that load on the machine hits both */
    double w[10];
    if (sends(h, 0, 10, w) || sends(h, 1, 10, w) || sends(h, 0, n, base) ||
        sends(h, 1, n, msg)) {
        h_stop(h);
        return 1;
    }
    printf("storage_queue_send_us_p50: %.0f\nstorage_queue_send_us_p99: %.0f\n", base[n / 2],
           base[n * 99 / 100]);
    printf("msg_send_us_p50: %.0f\nmsg_send_us_p99: %.0f\n", msg[n / 2], msg[n * 99 / 100]);
    printf("msg_send_vs_baseline_p50: %.2fx\n", msg[n / 2] / base[n / 2]);

    /* end to end: n operator sends to rx, until its handled records are all there */
    char st[64];
    for (int i = 0; i < 200; i++) {
        state_of(h, "rx", st, sizeof st);
        if (!strcmp(st, "waiting(mailbox)"))
            break;
        usleep(50000);
    }
    double t0 = now_us();
    for (unsigned i = 0; i < n; i++) {
        char body[64];
        int len = snprintf(body, sizeof body, "e2e %u", i);
        Aos__Msg__SendRequest q = AOS__MSG__SEND_REQUEST__INIT;
        q.to = (ProtobufCBinaryData){2, (uint8_t *)"rx"};
        q.body = (ProtobufCBinaryData){(size_t)len, (uint8_t *)body};
        aos_reply rep;
        call(h, NULL, "msg.send", &q.base, &rep);
        aos_reply_clear(&rep);
    }
    size_t got = 0;
    aos_call_opts o = {.agent_id = "rx", .timeout_ms = 10000};
    while (now_us() - t0 < 120e6) {
        aos_kv_page *p = NULL;
        char why[256];
        got = 0;
        for (char *after = NULL;;) {
            if (aos_kv_list(h_conn(h), &o, "seen:", after, 1000, 0, &p, why, sizeof why))
                break;
            got += p->n;
            free(after);
            after = p->next ? strdup(p->next) : NULL;
            aos_kv_page_free(p);
            if (!after)
                break;
        }
        if (got >= n)
            break;
        usleep(20000);
    }
    double secs = (now_us() - t0) / 1e6;
    printf("e2e_msgs: %zu of %u\ne2e_msgs_per_s: %.0f\n", got, n, (double)got / secs);
    /* the receiver's own counters, from its last stats line */
    Aos__Agent__LogsRequest lr = AOS__AGENT__LOGS_REQUEST__INIT;
    lr.name = (ProtobufCBinaryData){2, (uint8_t *)"rx"};
    lr.max_bytes = 4096;
    aos_reply rep;
    if (call(h, NULL, "kernel.agent.logs", &lr.base, &rep) == AOS_OK) {
        Aos__Agent__LogsReply *l = aos__agent__logs_reply__unpack(NULL, rep.payload_len,
                                                                  rep.payload);
        char *text = l ? strndup((char *)l->text.data, l->text.len) : NULL;
        char *last = NULL;
        for (char *p = text; p && (p = strstr(p, "stats recvs ")); p++)
            last = p;
        unsigned long long r = 0, wt = 0, wk = 0;
        if (last && sscanf(last, "stats recvs %llu waits %llu wakes %llu", &r, &wt, &wk) == 3)
            printf("rx_storage_recvs_per_msg: %.2f\nrx_kernel_waits_per_msg: %.2f\n"
                   "rx_mail_wakes: %llu\n", (double)r / (double)n, (double)wt / (double)n, wk);
        free(text);
        if (l)
            aos__agent__logs_reply__free_unpacked(l, NULL);
    }
    aos_reply_clear(&rep);
    free(base);
    free(msg);
    h_stop(h);
    return 0;
}
