/* aos-tool's executor: one thread that starts sandboxed runs, feeds their stdin, streams
 * and caps their output, enforces their time, and answers each call with its result. */
#ifndef AOS_TOOL_RUN_H
#define AOS_TOOL_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"
#include "desc.h"
#include "jail.h"
#include "serve.h"

typedef struct runner runner;

#define RUN_SECRETS_MAX 8

/* One run, from the request to its reply. Everything but call and d is owned by the job
 * and freed with it (run_job_free); the runner owns the job once submitted. */
typedef struct run_job {
    srv_call *call;            /* the request; the runner answers it exactly once */
    const desc *d;             /* borrowed: the catalogue outlives every run */
    char **argv;               /* from desc_argv */
    char *in;                  /* stdin bytes, NULL: none */
    size_t in_len;
    char *workspace;           /* host path, bound at /workspace */
    char *env[RUN_SECRETS_MAX + 1];      /* "NAME=value" of granted secrets */
    char *secret[RUN_SECRETS_MAX + 1];   /* their values, redacted from every output */
    unsigned time_ms;
    int plain;                 /* the benchmarks' unsandboxed baseline */
    int network;               /* the tool needs the network and the run is granted it */
    char agent[80];
    char rid[40];              /* the request id in hex, for the execution count */
} run_job;

void run_job_free(run_job *j);

/* Starts the executor thread (from the server's open: this thread must live as long as
 * its runs, whose parent-death signal follows it). dir (aos-tool's own, NULL: none) keeps
 * the journal of the (agent, request id) pairs that were started, so that a request aosd
 * re-sends after aos-tool died (or a caller sends again) never runs a second time: it
 * gets CONFLICT instead. *out is the caller's (runner_close). */
aos_err runner_open(jail *jl, const char *dir, runner **out, char *why, size_t whylen);
/* Takes the job: it runs, or its call is answered with the reason it could not. */
void runner_submit(runner *r, run_job *job);
/* Figures for stats: runs started (each (agent, request id) at most once), runs now,
 * timeouts, output kills, requests refused because their pair had started already. */
typedef struct runner_counts {
    uint64_t started, running, timeouts, output_kills, spawn_failures;
    uint64_t refused_ran_before;
} runner_counts;
void runner_counts_get(runner *r, runner_counts *c);
/* Kills every run, answers their calls, stops the thread. NULL is fine. */
void runner_close(runner *r);

#endif
