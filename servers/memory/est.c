/* The token estimator (est.h): per model, a ring of the last reported tokens-per-byte ratios
 * and their median, under one mutex (reports come once per LLM call: no contention). */
#include "est.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include <string.h>

typedef struct cal {
    char model[MEM_EST_MODEL_MAX + 1];
    double ring[MEM_EST_WINDOW];
    unsigned n, next;
    double median;
} cal;

struct mem_est {
    pthread_mutex_t mu;
    cal cals[MEM_EST_MODELS];
    unsigned ncals;
    uint64_t reports;
};

mem_est *mem_est_new(void)
{
    mem_est *e = calloc(1, sizeof *e);
    if (e)
        pthread_mutex_init(&e->mu, NULL);
    return e;
}

void mem_est_free(mem_est *e)
{
    if (!e)
        return;
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static cal *find(mem_est *e, const char *model, int make)
{
    if (!model)
        model = "";
    if (strlen(model) > MEM_EST_MODEL_MAX)
        return NULL;
    for (unsigned i = 0; i < e->ncals; i++)
        if (!strcmp(e->cals[i].model, model))
            return &e->cals[i];
    if (!make || e->ncals == MEM_EST_MODELS)
        return NULL;
    cal *c = &e->cals[e->ncals++];
    memset(c, 0, sizeof *c);
    strcpy(c->model, model);
    return c;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double mem_est_ratio(mem_est *e, const char *model)
{
    double r = MEM_EST_DEFAULT_RATIO;
    pthread_mutex_lock(&e->mu);
    cal *c = find(e, model, 0);
    if (!c || !c->n)
        c = find(e, "", 0);   /* a model never reported: the latest of any, if any */
    if (c && c->n)
        r = c->median;
    pthread_mutex_unlock(&e->mu);
    return r;
}

uint32_t mem_est_tokens(double r, size_t bytes)
{
    double t = ceil((double)bytes * r);
    return t >= 4294967295.0 ? UINT32_MAX : (uint32_t)t;
}

static void put(cal *c, double q)
{
    c->ring[c->next] = q;
    c->next = (c->next + 1) % MEM_EST_WINDOW;
    if (c->n < MEM_EST_WINDOW)
        c->n++;
    double tmp[MEM_EST_WINDOW];
    memcpy(tmp, c->ring, c->n * sizeof tmp[0]);
    qsort(tmp, c->n, sizeof tmp[0], dcmp);
    c->median = c->n % 2 ? tmp[c->n / 2] : (tmp[c->n / 2 - 1] + tmp[c->n / 2]) / 2;
}

int mem_est_observe(mem_est *e, const char *model, size_t bytes, uint64_t tokens)
{
    if (bytes < 16 || !tokens)
        return 0;
    double q = (double)tokens / (double)bytes;
    if (q < 0.05 || q > 2.0)
        return 0;
    pthread_mutex_lock(&e->mu);
    cal *c = find(e, model, 1);
    if (c)
        put(c, q);
    /* "" is also the calibration of models never reported */
    cal *any = model && *model ? find(e, "", 1) : NULL;
    if (any)
        put(any, q);
    if (c)
        e->reports++;
    pthread_mutex_unlock(&e->mu);
    return c != NULL;
}

uint64_t mem_est_reports(mem_est *e)
{
    pthread_mutex_lock(&e->mu);
    uint64_t n = e->reports;
    pthread_mutex_unlock(&e->mu);
    return n;
}
