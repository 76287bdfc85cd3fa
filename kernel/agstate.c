/* The agent state record's codec: what aosd writes when an agent ends done or failed (or
 * leaves those states) and reads back at start, so a finished agent is not run again. */
#include "agstate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aos/envelope.h"
#include "aos/step.h"

static const char *const names[] = {"live", "done", "failed"};

/* s as a JSON string: whole when it is UTF-8, else without the 1 to 3 non-ASCII bytes that
 * end it (a character cut by a bounded snprintf), else with every non-ASCII byte as '?'. */
static json_t *utf8_string(const char *s)
{
    size_t n = strnlen(s, AGST_REASON_MAX - 1);
    if (aos_utf8_valid(s, n))
        return json_stringn(s, n);
    /* a cut character is non-ASCII bytes at the very end */
    for (size_t cut = 1; cut <= 3 && cut <= n && (unsigned char)s[n - cut] >= 0x80; cut++)
        if (aos_utf8_valid(s, n - cut))
            return json_stringn(s, n - cut);
    char buf[AGST_REASON_MAX];
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    return json_stringn(buf, n);
}

char *agst_encode(const agst *s)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = (unsigned)s->state > AGST_FAILED;
    bad |= json_object_set_new(o, "state", json_string(names[bad ? 0 : s->state]));
    bad |= json_object_set_new(o, "reason", utf8_string(s->reason));
    bad |= json_object_set_new(o, "stopped", utf8_string(s->stopped));
    bad |= json_object_set_new(o, "restarts", json_integer((json_int_t)s->restarts));
    bad |= json_object_set_new(o, "at_ms", json_integer((json_int_t)s->at_ms));
    if (s->run[0] || s->run_steps) { /* a record of before the field reads as 0 steps */
        bad |= json_object_set_new(o, "run", utf8_string(s->run));
        bad |= json_object_set_new(o, "run_steps", json_integer((json_int_t)s->run_steps));
    }
    char *txt = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return txt;
}

/* A run id as libaos makes them: at most AGST_RUN_MAX - 1 of [A-Za-z0-9._:-] ("" none). */
int agst_run_ok(const char *s, size_t n)
{
    if (n >= AGST_RUN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == ':' ||
              s[i] == '-'))
            return 0;
    return 1;
}

static int run_ok(const char *s)
{
    return agst_run_ok(s, strlen(s));
}

/* A string field that fits out (cap bytes with its NUL), no NUL in it. */
static int get_str(json_t *o, const char *key, char *out, size_t cap)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return -1;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n >= cap || memchr(s, 0, n))
        return -1;
    memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

aos_err agst_decode(const uint8_t *buf, size_t len, agst *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (len > AGST_RECORD_MAX) {
        snprintf(why, whylen, "a state record of %zu bytes: at most %u", len, AGST_RECORD_MAX);
        return AOS_ERR_USAGE;
    }
    json_error_t je;
    json_t *o = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
    const char *field = NULL;
    if (!json_is_object(o)) {
        snprintf(why, whylen, "a state record is a JSON object: %s", o ? "not one" : je.text);
        json_decref(o);
        return AOS_ERR_USAGE;
    }
    const char *st = json_string_value(json_object_get(o, "state"));
    json_t *r = json_object_get(o, "restarts"), *at = json_object_get(o, "at_ms");
    json_t *rs = json_object_get(o, "run_steps");
    int found = 0;
    for (int i = 0; st && i <= AGST_FAILED; i++)
        if (!strcmp(st, names[i])) {
            out->state = (agst_state)i;
            found = 1;
        }
    if (!found)
        field = "state";
    else if (get_str(o, "reason", out->reason, sizeof out->reason))
        field = "reason";
    else if (get_str(o, "stopped", out->stopped, sizeof out->stopped))
        field = "stopped";
    else if (!json_is_integer(r) || json_integer_value(r) < 0 ||
             json_integer_value(r) > AGST_RESTARTS_MAX)
        field = "restarts";
    else if (!json_is_integer(at) || json_integer_value(at) < 0)
        field = "at_ms";
    else if (json_object_get(o, "run") && (get_str(o, "run", out->run, sizeof out->run) || !run_ok(out->run)))
        field = "run";
    else if (json_object_get(o, "run_steps") &&
             (!json_is_integer(rs) || json_integer_value(rs) < 0))
        field = "run_steps";
    if (!field) {
        out->run_steps = rs ? (uint64_t)json_integer_value(rs) : 0;
        out->restarts = (unsigned)json_integer_value(r);
        out->at_ms = (int64_t)json_integer_value(at);
    }
    json_decref(o);
    if (field) {
        memset(out, 0, sizeof *out);
        snprintf(why, whylen, "a state record's %s is missing or out of range", field);
        return AOS_ERR_USAGE;
    }
    return AOS_OK;
}

/* libaos's run ids: "r-" and hex digits (agst_run_ok's alphabet is wider: older records) */
static int runrec_id_ok(const char *s, size_t n)
{
    return n >= 3 && n < AGST_RUN_MAX && !strncmp(s, "r-", 2) &&
           strspn(s + 2, "0123456789abcdef") == n - 2;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

aos_err agst_runrec_decode(const uint8_t *buf, size_t len, agst_runrec *out, char *why,
                           size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (len > AGST_RECORD_MAX) {
        snprintf(why, whylen, "a run record of %zu bytes: at most %u", len, AGST_RECORD_MAX);
        return AOS_ERR_USAGE;
    }
    json_error_t je;
    json_t *o = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        snprintf(why, whylen, "a run record is a JSON object: %s", o ? "not one" : je.text);
        json_decref(o);
        return AOS_ERR_USAGE;
    }
    json_t *run = json_object_get(o, "run"), *rs = json_object_get(o, "reason");
    const char *st = json_string_value(json_object_get(o, "state"));
    const char *field = NULL;
    if (!json_is_string(run) || !runrec_id_ok(json_string_value(run), json_string_length(run)))
        field = "run";
    else if (!st || (out->state = aos_run_state_parse(st)) < 0)
        field = "state";
    else if (get_u64(o, "started_ms", &out->started_ms))
        field = "started_ms";
    else if (get_u64(o, "ended_ms", &out->ended_ms))
        field = "ended_ms";
    else if (get_u64(o, "steps", &out->steps))
        field = "steps";
    else if (rs && !json_is_string(rs))
        field = "reason";
    if (!field) {
        memcpy(out->run, json_string_value(run), json_string_length(run) + 1);
        if (rs) { /* cut at a NUL or the cap, back to a whole character */
            const char *s = json_string_value(rs);
            size_t n = strnlen(s, json_string_length(rs));
            if (n > AGST_RUNREC_REASON_MAX - 1)
                n = AGST_RUNREC_REASON_MAX - 1;
            while (n && !aos_utf8_valid(s, n))
                n--;
            memcpy(out->reason, s, n);
            out->reason[n] = 0;
        }
    }
    json_decref(o);
    if (field) {
        memset(out, 0, sizeof *out);
        snprintf(why, whylen, "a run record's %s is missing or out of range", field);
        return AOS_ERR_USAGE;
    }
    return AOS_OK;
}

int agst_runrec_expired(const agst_runrec *r, uint64_t now_ms, uint64_t keep_s)
{
    if (r->state == AOS_RUN_RUNNING || !r->ended_ms)
        return 0;
    uint64_t keep_ms = keep_s > UINT64_MAX / 1000u ? UINT64_MAX : keep_s * 1000u;
    return r->ended_ms <= now_ms && now_ms - r->ended_ms >= keep_ms;
}
