/* Cron schedules for an agent's timed wakes: five fields in UTC, parsed into bit sets, and
 * the next matching minute computed without the C library's time zone state. */
#ifndef AOS_CRON_H
#define AOS_CRON_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

#define CRON_TEXT_MAX 256u /* bytes of a schedule's text */

/* Plain data (no pointers): bit i set when value i matches. dom and dow_star say the day
 * field began with '*': Vixie cron ORs the two day fields only when neither does. */
typedef struct cron_spec {
    uint64_t minute; /* 0..59 */
    uint32_t hour;   /* 0..23 */
    uint32_t dom;    /* 1..31 */
    uint16_t month;  /* 1..12 */
    uint8_t dow;     /* 0..6, Sunday 0 (7 in the text is read as 0) */
    uint8_t dom_star, dow_star;
} cron_spec;

/* text (NUL-terminated): 5 fields (minute hour day-of-month month day-of-week) split by
 * blanks, each *, N, N-M, *\/S, N-M/S or a comma list of those; month names jan..dec and
 * weekday names sun..sat, any case. Anything else is AOS_ERR_USAGE with why naming the
 * field ("minute: 61 is out of range 0-59"); *out is written only on AOS_OK. */
aos_err cron_parse(const char *text, cron_spec *out, char *why, size_t whylen);

/* The first minute strictly after `after` (UTC seconds since the epoch, >= 0) that c
 * matches, in UTC seconds; 0 when none comes within 5 years ("0 0 30 2 *" never does) and
 * for a negative `after`. */
int64_t cron_next(const cron_spec *c, int64_t after);

#endif
