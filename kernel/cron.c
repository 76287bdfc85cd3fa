/* Cron schedules: the five fields into bit sets (refusing anything but the Vixie subset the
 * header names), and the next match walked month, day, hour, minute in proleptic UTC. */
#include "cron.h"

#include <stdio.h>
#include <string.h>

#define NEXT_DAYS_MAX 1827 /* "within 5 years": 5 * 365.25 days, rounded up */

typedef struct field {
    const char *name;
    unsigned lo, hi;           /* hi 7 for day-of-week: 7 is Sunday again */
    const char *const *names;  /* names[i] is value lo + i; NULL: numbers only */
} field;

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const days[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const field fields[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},
    {"month", 1, 12, months},
    {"day-of-week", 0, 7, days},
};

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* A number or a name at s[*i] within the field's range. */
static int value(const field *f, const char *s, size_t len, size_t *i, unsigned *out,
                 char *why, size_t whylen)
{
    size_t st = *i;
    if (*i < len && s[*i] >= '0' && s[*i] <= '9') {
        unsigned v = 0;
        while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
            if (v < 1000)
                v = v * 10 + (unsigned)(s[*i] - '0');
            (*i)++;
        }
        if (v < f->lo || v > f->hi) {
            aos_say(why, whylen, "%s: %.*s is out of range %u-%u", f->name, (int)(*i - st),
                    s + st, f->lo, f->hi);
            return -1;
        }
        *out = v;
        return 0;
    }
    if (f->names && *i + 3 <= len) {
        for (unsigned k = 0; f->names[k]; k++)
            if (lower(s[*i]) == f->names[k][0] && lower(s[*i + 1]) == f->names[k][1] &&
                lower(s[*i + 2]) == f->names[k][2]) {
                *i += 3;
                *out = f->lo + k;
                /* "monday" is not "mon" */
                if (*i < len && ((lower(s[*i]) >= 'a' && lower(s[*i]) <= 'z')))
                    break;
                return 0;
            }
    }
    aos_say(why, whylen, "%s: '%.*s' is not a %s", f->name, (int)(len > 32 ? 32 : len), s,
            f->names ? "number or a name" : "number");
    return -1;
}

/* One comma-separated element: *, *\/S, N, N-M or N-M/S, into bits. */
static int element(const field *f, const char *s, size_t len, uint64_t *bits, char *why,
                   size_t whylen)
{
    size_t i = 0;
    unsigned a, b, step = 1;
    if (len == 0) {
        aos_say(why, whylen, "%s: an empty item in a list", f->name);
        return -1;
    }
    if (s[0] == '*') {
        a = f->lo;
        b = f->hi == 7 ? 6 : f->hi;
        i = 1;
    } else {
        if (value(f, s, len, &i, &a, why, whylen))
            return -1;
        b = a;
        if (i < len && s[i] == '-') {
            i++;
            if (value(f, s, len, &i, &b, why, whylen))
                return -1;
            if (b < a) {
                aos_say(why, whylen, "%s: the range %.*s runs backwards", f->name, (int)len, s);
                return -1;
            }
        } else if (i < len && s[i] == '/') {
            aos_say(why, whylen, "%s: a step needs a range: write N-M/S or */S, not %.*s",
                    f->name, (int)len, s);
            return -1;
        }
    }
    if (i < len && s[i] == '/') {
        size_t st = ++i;
        step = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (step < 1000)
                step = step * 10 + (unsigned)(s[i] - '0');
            i++;
        }
        if (i == st || step == 0 || step > f->hi) {
            aos_say(why, whylen, "%s: the step in %.*s must be a number from 1 to %u",
                    f->name, (int)len, s, f->hi);
            return -1;
        }
    }
    if (i != len) {
        aos_say(why, whylen, "%s: '%.*s' is not *, N, N-M, */S or N-M/S", f->name,
                (int)(len > 32 ? 32 : len), s);
        return -1;
    }
    for (unsigned v = a; v <= b; v += step)
        *bits |= 1ull << v;
    return 0;
}

aos_err cron_parse(const char *text, cron_spec *out, char *why, size_t whylen)
{
    size_t len = strlen(text);
    if (len > CRON_TEXT_MAX) {
        aos_say(why, whylen, "a schedule is at most %u bytes, not %zu", CRON_TEXT_MAX, len);
        return AOS_ERR_USAGE;
    }
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)text[k] < 0x20 && text[k] != '\t') {
            aos_say(why, whylen, "holds a control character");
            return AOS_ERR_USAGE;
        }
    uint64_t bits[5] = {0};
    int star[5] = {0};
    size_t i = 0, nf = 0;
    /* the count first: "@daily" or a missing field says so rather than "not a number" */
    for (size_t k = 0; k < len; nf++) {
        while (k < len && (text[k] == ' ' || text[k] == '\t'))
            k++;
        if (k == len)
            break;
        while (k < len && text[k] != ' ' && text[k] != '\t')
            k++;
    }
    if (nf != 5) {
        aos_say(why, whylen, "has %zu field%s; a schedule has 5 (minute hour day-of-month "
                "month day-of-week)", nf, nf == 1 ? "" : "s");
        return AOS_ERR_USAGE;
    }
    nf = 0;
    for (;;) {
        while (i < len && (text[i] == ' ' || text[i] == '\t'))
            i++;
        if (i == len)
            break;
        size_t st = i;
        while (i < len && text[i] != ' ' && text[i] != '\t')
            i++;
        if (nf < 5) {
            const field *f = &fields[nf];
            star[nf] = text[st] == '*';
            for (size_t a = st; a <= i;) {
                size_t e = a;
                while (e < i && text[e] != ',')
                    e++;
                if (element(f, text + a, e - a, &bits[nf], why, whylen))
                    return AOS_ERR_USAGE;
                a = e + 1;
            }
        }
        nf++;
    }
    out->minute = bits[0];
    out->hour = (uint32_t)bits[1];
    out->dom = (uint32_t)bits[2];
    out->month = (uint16_t)bits[3];
    out->dow = (uint8_t)((bits[4] | bits[4] >> 7) & 0x7f);
    out->dom_star = (uint8_t)star[2];
    out->dow_star = (uint8_t)star[4];
    return AOS_OK;
}

/* ---- the next match ----------------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's algorithms):
 * no timegm, no TZ. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int day_ok(const cron_spec *c, unsigned dom, int64_t day)
{
    unsigned wd = (unsigned)(floor_div(day + 4, 7) * -7 + day + 4); /* 1970-01-01: Thursday */
    int dm = (int)(c->dom >> dom & 1), wm = (int)(c->dow >> wd & 1);
    return c->dom_star || c->dow_star ? dm && wm : dm || wm;
}

int64_t cron_next(const cron_spec *c, int64_t after)
{
    const int64_t span = (int64_t)NEXT_DAYS_MAX * 86400;
    if (after < 0 || after > INT64_MAX - span - 120) /* 0 is "none": no time before 1970 */
        return 0;
    int64_t t = floor_div(after, 60) * 60 + 60, limit = after + span;
    while (t <= limit) {
        int64_t day = floor_div(t, 86400), sod = t - day * 86400, y;
        unsigned m, d;
        civil_from_days(day, &y, &m, &d);
        if (!(c->month >> m & 1)) {
            if (++m > 12)
                m = 1, y++;
            t = days_from_civil(y, m, 1) * 86400;
            continue;
        }
        if (!day_ok(c, d, day)) {
            t = (day + 1) * 86400;
            continue;
        }
        unsigned h = (unsigned)(sod / 3600), mi = (unsigned)(sod % 3600 / 60);
        if (!(c->hour >> h & 1)) {
            t = day * 86400 + (int64_t)(h + 1) * 3600;
            continue;
        }
        if (!(c->minute >> mi & 1)) {
            t += 60;
            continue;
        }
        return t;
    }
    return 0;
}
