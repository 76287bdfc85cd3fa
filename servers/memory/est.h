/* aos-memory's token estimator: tokens per byte of message text, one calibration per model,
 * learnt from the token counts providers report for prompts aos-memory assembled. */
#ifndef MEM_EST_H
#define MEM_EST_H

#include <stddef.h>
#include <stdint.h>

/* Before any report: about 3.3 bytes per token, between English BPE (~4) and code (~3). */
#define MEM_EST_DEFAULT_RATIO 0.30
/* The calibration is the median of the last reports (robust to one odd prompt). */
#define MEM_EST_WINDOW 31
#define MEM_EST_MODELS 64          /* models calibrated at once; more share the default */
#define MEM_EST_MODEL_MAX 128      /* bytes of a model name */

typedef struct mem_est mem_est;    /* thread-safe */

/* NULL when out of memory; mem_est_free (NULL is fine). */
mem_est *mem_est_new(void);
void mem_est_free(mem_est *e);
/* The tokens-per-byte ratio for model (NULL or "": the default model). */
double mem_est_ratio(mem_est *e, const char *model);
/* Tokens of `bytes` bytes of text at ratio r: ceil(bytes * r), pure arithmetic. */
uint32_t mem_est_tokens(double r, size_t bytes);
/* A provider reported `tokens` prompt tokens for a prompt of `bytes` bytes of text sent to
 * model. Reports far from any plausible ratio (below 0.05 or above 2 tokens per byte) are
 * dropped: they describe another prompt than the one measured. 1 when used. */
int mem_est_observe(mem_est *e, const char *model, size_t bytes, uint64_t tokens);
/* How many reports were used, over every model. */
uint64_t mem_est_reports(mem_est *e);

#endif
