/* A fixed-size open-addressing table of recent request ids, oldest evicted first.
 * Bounded in entries and bytes, so a flood of unique ids cannot grow the server. */
#include "idem.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    uint8_t id[AOS_ID_LEN];
    int state; /* 0 empty, IDEM_RUNNING, IDEM_DONE */
    int status;
    uint64_t age;
    char *err;
    uint8_t *payload;
    size_t len;
    uint32_t parts;
    int has_payload;
} slot;

struct idem {
    pthread_mutex_t mu;
    slot *slots;
    size_t n, cap;
    uint64_t clock;
};

idem *idem_new(size_t slots, size_t payload_cap)
{
    idem *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->slots = calloc(slots, sizeof *t->slots);
    if (!t->slots) {
        free(t);
        return NULL;
    }
    t->n = slots;
    t->cap = payload_cap;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

static void slot_reset(slot *s)
{
    free(s->err);
    free(s->payload);
    memset(s, 0, sizeof *s);
}

void idem_free(idem *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        slot_reset(&t->slots[i]);
    free(t->slots);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Request ids are random: their first bytes are a good hash. Probe a short window and
 * evict the oldest finished entry in it when the id is absent. */
#define PROBE 8
static slot *find(idem *t, const uint8_t *id, int make)
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    slot *victim = NULL;
    for (size_t k = 0; k < PROBE; k++) {
        slot *s = &t->slots[(h + k) % t->n];
        if (s->state && !memcmp(s->id, id, AOS_ID_LEN))
            return s;
        if (!make)
            continue;
        if (!s->state) {
            if (!victim || victim->state)
                victim = s;
        } else if (s->state == IDEM_DONE && (!victim || (victim->state && s->age < victim->age))) {
            victim = s;
        }
    }
    if (victim && make) {
        slot_reset(victim);
        memcpy(victim->id, id, AOS_ID_LEN);
    }
    return victim;
}

int idem_begin(idem *t, const uint8_t id[AOS_ID_LEN], int *status, char *err, size_t cap,
               uint8_t **payload, size_t *len, uint32_t *parts)
{
    int r = IDEM_NEW;
    pthread_mutex_lock(&t->mu);
    slot *s = find(t, id, 0);
    if (s && s->state == IDEM_RUNNING) {
        r = IDEM_RUNNING;
    } else if (s && s->state == IDEM_DONE && s->has_payload) {
        *status = s->status;
        snprintf(err, cap, "%s", s->err ? s->err : "");
        *payload = NULL;
        *len = s->len;
        *parts = s->parts;
        if (s->len) {
            *payload = malloc(s->len);
            if (*payload)
                memcpy(*payload, s->payload, s->len);
            else
                s = NULL; /* cannot copy: run it again, handlers are idempotent anyway */
        }
        r = s ? IDEM_DONE : IDEM_NEW;
    }
    if (r == IDEM_NEW) {
        s = find(t, id, 1);
        if (s) { /* no slot free in the window: run untracked */
            s->state = IDEM_RUNNING;
            s->age = ++t->clock;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return r;
}

void idem_end(idem *t, const uint8_t id[AOS_ID_LEN], int status, const char *err,
              const uint8_t *payload, size_t len, uint32_t parts)
{
    pthread_mutex_lock(&t->mu);
    slot *s = find(t, id, 0);
    if (s) {
        s->state = IDEM_DONE;
        s->status = status;
        s->age = ++t->clock;
        s->parts = parts;
        /* a failure that may pass (unavailable, timeout, rate limited) is not recorded: a retry runs */
        if (status == AOS_ERR_UNAVAILABLE || status == AOS_ERR_TIMEOUT ||
            status == AOS_ERR_CANCELLED || status == AOS_ERR_RATE_LIMITED) {
            slot_reset(s);
        } else if (len <= t->cap) {
            s->err = err && *err ? strdup(err) : NULL;
            s->payload = len ? malloc(len) : NULL;
            if (len && s->payload)
                memcpy(s->payload, payload, len);
            s->len = s->payload ? len : 0;
            s->has_payload = (len == 0 || s->payload);
        }
    }
    pthread_mutex_unlock(&t->mu);
}
