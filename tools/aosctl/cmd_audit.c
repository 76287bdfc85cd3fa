/* aosctl's audit commands: verify (the whole log), head (the latest signed tree head), prove
 * and check-proof (an inclusion proof, checked offline), tail (records, optionally followed).
 *
 * The proof file (audit prove writes it, audit check-proof reads it) is one JSON object:
 *
 *   {
 *     "version": 1,
 *     "seq": 17,                    record seq, >= 1 (leaf index seq - 1)
 *     "record": "01000000...",      hex of the record's canonical encoding (record.h)
 *     "path": ["9f86...", ...],     the RFC 6962 audit path, leaf side first, 64 hex each,
 *                                   at most AUDIT_PROOF_MAX (64) of them
 *     "head": {                     the signed tree head the path leads to (merkle.h)
 *       "tree_size": 42,            >= seq
 *       "time_ns": 1796212248000000000,
 *       "root": "<64 hex>",
 *       "signature": "<128 hex>",   Ed25519 over the head's signed bytes
 *       "public_key": "<64 hex>"    the log's head key
 *     }
 *   }
 *
 * Hex is lowercase when written and read in either case. Nothing else is needed to check
 * it: no aosd, no database, only this file and (to pin the key) the log's public key kept
 * elsewhere, e.g. from audit head --json. */
#include "aosctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.pb-c.h"
#include "aos/readall.h"
#include "merkle.h"
#include "prooffile.h"
#include "record.h"

/* A proof file: the record's hex, the path's hex and the JSON around them, with room to
 * spare for indentation. Anything longer is not a proof this tool wrote. */
#define PROOF_FILE_MAX (2u * AUDIT_REC_MAX + 64u * 1024u)
#define BODY_SHOWN 200      /* characters of a record's body on a tail line */
#define TAIL_LIMIT_MAX 1000 /* audit.tail's cap on one page */
#define FOLLOW_MS 500       /* how often tail -f asks again */
#define CELL_MAX 256        /* one cleaned field of a tail line */
#define RUN_MAX 64          /* audit records keep runs of at most 64 bytes */

/* ---- small helpers -------------------------------------------------------------------- */

/* "2026-12-02T09:50:48.123456789Z": ns since the epoch, UTC. With ms_only, to the ms. */
static void iso_time(uint64_t ns, int ms_only, char *out, size_t cap)
{
    time_t t = (time_t)(ns / 1000000000u);
    struct tm tm;
    char day[32];
    if (!gmtime_r(&t, &tm) || !strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm)) {
        snprintf(out, cap, "@%" PRIu64 "ns", ns);
        return;
    }
    if (ms_only)
        snprintf(out, cap, "%s.%03" PRIu64 "Z", day, ns % 1000000000u / 1000000u);
    else
        snprintf(out, cap, "%s.%09" PRIu64 "Z", day, ns % 1000000000u);
}

/* A protobuf string field from aos-audit: protobuf-c does not check UTF-8. */
static int str_ok(const char *s)
{
    return s && aos_utf8_valid(s, strlen(s));
}

/* Integers go into JSON as int64: a larger one from the wire is refused, not wrapped. */
static int fits(uint64_t v)
{
    return v <= INT64_MAX;
}

/* ---- argument checks ------------------------------------------------------------------ */

/* --key: the log's public key (aosctl.h). */
int ctl_check_audit_key(const char *val, char *why, size_t whylen)
{
    uint8_t k[AUDIT_PK_LEN];
    if (aos_unhex(val, strlen(val), k, sizeof k) == 0)
        return 0;
    snprintf(why, whylen, "--key wants the log's public key: %u hex digits (audit head "
             "prints it), not \"%.100s\"", 2 * AUDIT_PK_LEN, val);
    return -1;
}

static int check_trace(const char *val, char *why, size_t whylen)
{
    uint8_t t[AUDIT_TRACE_LEN];
    if (aos_unhex(val, strlen(val), t, sizeof t) == 0)
        return 0;
    snprintf(why, whylen, "--trace wants a trace id of %u hex digits, not \"%.100s\"",
             2 * AUDIT_TRACE_LEN, val);
    return -1;
}

static int check_run(const char *val, char *why, size_t whylen)
{
    size_t n = strlen(val);
    if (n && n <= RUN_MAX && aos_utf8_valid(val, n))
        return 0;
    snprintf(why, whylen, "--run wants a run id, 1 to %d bytes of UTF-8", RUN_MAX);
    return -1;
}

static int check_path(const char *val, char *why, size_t whylen)
{
    if (*val && strlen(val) < 4096)
        return 0;
    snprintf(why, whylen, "a file name is wanted (at most 4095 bytes)");
    return -1;
}

/* ---- audit verify --------------------------------------------------------------------- */

static int kind_bad(const char *k)
{
    return strcmp(k, "ok") != 0 && strcmp(k, "declared_gap") != 0;
}

static int cmd_verify(ctl_ctx *c, const ctl_vals *v)
{
    (void)v;
    Aos__Audit__VerifyRequest q = AOS__AUDIT__VERIFY_REQUEST__INIT;
    aos_reply r;
    if (ctl_call(c, NULL, "audit.verify", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Audit__Finding *f = aos__audit__finding__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!f)
        return ctl_fail(c, AOS_ERR_PROTO, "audit.verify: aos-audit sent a malformed Finding");
    static const char *const kinds[] = {"ok", "declared_gap", "altered", "deleted",
                                        "inserted", "reordered", "truncated", "bad_head"};
    int known = 0;
    for (size_t i = 0; str_ok(f->kind) && i < sizeof kinds / sizeof kinds[0]; i++)
        known |= !strcmp(f->kind, kinds[i]);
    if (!known || !str_ok(f->what) || !fits(f->seq) || !fits(f->seq_end) ||
        !fits(f->head_size) || !fits(f->records) || !fits(f->heads_checked) ||
        !fits(f->heads_skipped)) {
        aos__audit__finding__free_unpacked(f, NULL);
        return ctl_fail(c, AOS_ERR_PROTO, "audit.verify: aos-audit sent a Finding of no known "
                        "kind, with text that is not UTF-8 or counters past int64");
    }
    int bad = kind_bad(f->kind), rc = bad ? 1 : 0;
    if (c->json) {
        int prc = ctl_print_json(c, json_pack(
            "{s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "ok", !bad, "kind", f->kind, "seq",
            (json_int_t)f->seq, "seq_end", (json_int_t)f->seq_end, "head_size",
            (json_int_t)f->head_size, "records", (json_int_t)f->records, "heads_checked",
            (json_int_t)f->heads_checked, "heads_skipped", (json_int_t)f->heads_skipped,
            "what", f->what));
        rc = prc ? prc : rc;
    } else {
        char what[1024];
        ctl_clean(what, sizeof what, (const uint8_t *)f->what, strlen(f->what), 0, NULL);
        char range[64] = "";
        if (f->seq_end > f->seq)
            snprintf(range, sizeof range, "..%" PRIu64, f->seq_end);
        if (!strcmp(f->kind, "ok") && !what[0])
            snprintf(what, sizeof what, "%" PRIu64 " records and %" PRIu64 " signed heads "
                     "check out", f->records, f->heads_checked);
        if (!strcmp(f->kind, "ok"))
            printf("ok");
        else if (!bad)
            printf("ok with a declared gap: seq %" PRIu64 "%s archived (%" PRIu64 " records "
                   "and %" PRIu64 " signed heads check out)", f->seq, range, f->records,
                   f->heads_checked);
        else
            printf("%s at seq %" PRIu64 "%s (%" PRIu64 " records before it check out%s)",
                   f->kind, f->seq, range, f->records,
                   f->head_size ? ", against a signed head" : "");
        if (bad && f->head_size)
            printf(" [head of size %" PRIu64 "]", f->head_size);
        if (f->heads_skipped)
            printf(" [%" PRIu64 " heads inside the archived range not checkable]",
                   f->heads_skipped);
        printf("%s%s\n", what[0] ? ": " : "", what);
    }
    aos__audit__finding__free_unpacked(f, NULL);
    return rc;
}

/* ---- audit head ----------------------------------------------------------------------- */

/* A Head off the wire into h and pk: every length checked. -1 when it is not one. */
static int head_from_pb(const Aos__Audit__Head *w, audit_sth *h, uint8_t pk[AUDIT_PK_LEN])
{
    if (!w || w->root.len != AUDIT_HASH_LEN || w->signature.len != AUDIT_SIG_LEN ||
        w->public_key.len != AUDIT_PK_LEN || !fits(w->tree_size) || !fits(w->time_ns))
        return -1;
    h->tree_size = w->tree_size;
    h->time_ns = w->time_ns;
    memcpy(h->root, w->root.data, AUDIT_HASH_LEN);
    memcpy(h->sig, w->signature.data, AUDIT_SIG_LEN);
    memcpy(pk, w->public_key.data, AUDIT_PK_LEN);
    return 0;
}

static int cmd_head(ctl_ctx *c, const ctl_vals *v)
{
    Aos__Audit__HeadRequest q = AOS__AUDIT__HEAD_REQUEST__INIT;
    q.sign_now = ctl_given(v, "--sign-now");
    aos_reply r;
    if (ctl_call(c, NULL, "audit.head", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Audit__Head *w = aos__audit__head__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    audit_sth h;
    uint8_t pk[AUDIT_PK_LEN];
    int bad = head_from_pb(w, &h, pk);
    aos__audit__head__free_unpacked(w, NULL);
    if (bad)
        return ctl_fail(c, AOS_ERR_PROTO, "audit.head: aos-audit sent a malformed Head");
    /* a head to keep elsewhere is worth keeping only when it is what its key signed */
    char why[512];
    if (audit_sth_verify(&h, pk, why, sizeof why) != AOS_OK)
        return ctl_fail(c, AOS_ERR_PROTO, "audit.head: the head's signature does not verify "
                        "with its key: %s", why);
    char when[64];
    iso_time(h.time_ns, 0, when, sizeof when);
    if (c->json) {
        json_t *d = audit_head_json(&h, pk);
        if (d && json_object_set_new(d, "time", json_string(when)) != 0) {
            json_decref(d);
            d = NULL;
        }
        return ctl_print_json(c, d);
    }
    char root[2 * AUDIT_HASH_LEN + 1], sig[2 * AUDIT_SIG_LEN + 1], key[2 * AUDIT_PK_LEN + 1];
    aos_hex(h.root, AUDIT_HASH_LEN, root);
    aos_hex(h.sig, AUDIT_SIG_LEN, sig);
    aos_hex(pk, AUDIT_PK_LEN, key);
    printf("tree_size   %" PRIu64 "\ntime        %s (%" PRIu64 " ns)\nroot        %s\n"
           "signature   %s\npublic_key  %s\n", h.tree_size, when, h.time_ns, root, sig, key);
    return 0;
}

/* ---- audit prove ---------------------------------------------------------------------- */

/* doc to path, whole or not at all: a temporary file beside it, then a rename. */
static int write_file(const char *path, const char *text, char *why, size_t whylen)
{
    char tmp[4096 + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(why, whylen, "cannot create %.400s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(why, whylen, "cannot write %.400s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(why, whylen, "cannot write %.400s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(why, whylen, "cannot rename %.400s to %.400s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* A Proof off the wire into p (p->rec malloc'd): every length checked. -1 when not one. */
static int proof_from_pb(const Aos__Audit__Proof *w, audit_proof *p)
{
    memset(p, 0, sizeof *p);
    if (!w || !w->record.len || w->record.len > AUDIT_REC_MAX || !fits(w->seq) ||
        w->n_path > AUDIT_PROOF_MAX || head_from_pb(w->head, &p->head, p->pk) != 0)
        return -1;
    for (size_t i = 0; i < w->n_path; i++) {
        if (w->path[i].len != AUDIT_HASH_LEN)
            return -1;
        memcpy(p->path[i], w->path[i].data, AUDIT_HASH_LEN);
    }
    p->n_path = w->n_path;
    p->seq = w->seq;
    p->rec_len = w->record.len;
    if (!(p->rec = malloc(p->rec_len)))
        return -1;
    memcpy(p->rec, w->record.data, p->rec_len);
    return 0;
}

static int cmd_prove(ctl_ctx *c, const ctl_vals *v)
{
    const char *out = ctl_str(v, "--out");
    Aos__Audit__ProveRequest q = AOS__AUDIT__PROVE_REQUEST__INIT;
    q.seq = (uint64_t)ctl_int(v, "SEQ");
    q.tree_size = ctl_given(v, "--size") ? (uint64_t)ctl_int(v, "--size") : 0;
    if (q.tree_size && q.tree_size < q.seq)
        return ctl_fail(c, AOS_ERR_USAGE, "--size %" PRIu64 " is smaller than SEQ %" PRIu64
                        ": a tree of that size does not hold the record", q.tree_size, q.seq);
    aos_reply r;
    if (ctl_call(c, NULL, "audit.prove", &q.base, &r) != AOS_OK)
        return ctl_fail_reply(c, &r);
    Aos__Audit__Proof *w = aos__audit__proof__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    audit_proof p;
    int bad = proof_from_pb(w, &p);
    aos__audit__proof__free_unpacked(w, NULL);
    if (bad) {
        audit_proof_free(&p);
        return ctl_fail(c, AOS_ERR_PROTO, "audit.prove: aos-audit sent a malformed Proof");
    }
    char why[1024];
    const char *failed = NULL;
    if (p.seq != q.seq)
        snprintf(why, sizeof why, "it proves seq %" PRIu64 ", not %" PRIu64, p.seq, q.seq);
    else if (q.tree_size && p.head.tree_size != q.tree_size)
        snprintf(why, sizeof why, "it is against a head of size %" PRIu64 ", not %" PRIu64,
                 p.head.tree_size, q.tree_size);
    else
        failed = audit_proof_check(&p, NULL, why, sizeof why);
    if (failed || p.seq != q.seq || (q.tree_size && p.head.tree_size != q.tree_size)) {
        audit_proof_free(&p);
        /* nothing is written: a proof that does not hold proves nothing */
        return ctl_fail(c, AOS_ERR_PROTO, "audit.prove: aos-audit sent a proof that does not "
                        "hold (%s%s%s); run aosctl audit verify", failed ? failed : "",
                        failed ? ": " : "", why);
    }
    json_t *d = audit_proof_json(&p);
    uint64_t size = p.head.tree_size;
    audit_proof_free(&p);
    if (!d)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory building the proof");
    if (!out) {
        if (c->json)
            return ctl_print_json(c, d);
        char *s = json_dumps(d, JSON_INDENT(2));
        json_decref(d);
        if (!s)
            return ctl_fail(c, AOS_ERR_NOMEM, "cannot serialise the proof");
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
        return 0;
    }
    char *s = json_dumps(d, JSON_INDENT(2));
    if (!s) {
        json_decref(d);
        return ctl_fail(c, AOS_ERR_NOMEM, "cannot serialise the proof");
    }
    size_t n = strlen(s);
    char *text = realloc(s, n + 2);
    if (!text) {
        free(s);
        json_decref(d);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    }
    text[n] = '\n';
    text[n + 1] = 0;
    int wr = write_file(out, text, why, sizeof why);
    free(text);
    if (wr != 0) {
        json_decref(d);
        return ctl_fail(c, AOS_ERR_IO, "%s", why);
    }
    if (c->json) {
        /* the proof as written, and where it went */
        if (json_object_set_new(d, "out", json_string(out)) != 0) {
            json_decref(d);
            d = NULL;
        }
        return ctl_print_json(c, d);
    }
    json_decref(d);
    printf("proof of seq %" PRIu64 " against the signed head of size %" PRIu64
           " written to %s\n", q.seq, size, out);
    return 0;
}

/* ---- audit check-proof ---------------------------------------------------------------- */

static int cmd_check_proof(ctl_ctx *c, const ctl_vals *v)
{
    const char *file = ctl_str(v, "FILE"), *key = ctl_str(v, "--key");
    uint8_t pin[AUDIT_PK_LEN];
    if (key && aos_unhex(key, strlen(key), pin, sizeof pin) != 0) /* checked by the table */
        return ctl_fail(c, AOS_ERR_INTERNAL, "--key passed its check but is not hex");
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ctl_fail(c, ctl_errno_err(errno), "cannot open %s: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ctl_fail(c, AOS_ERR_USAGE, "cannot read %s: %s", file, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return ctl_fail(c, AOS_ERR_USAGE, "%s is not a proof: it is a directory", file);
    }
    size_t len;
    char *text = aos_read_all(fd, PROOF_FILE_MAX, &len);
    int e = errno;
    close(fd);
    if (!text) {
        if (e == ENOMEM)
            return ctl_fail(c, AOS_ERR_NOMEM, "out of memory reading %s", file);
        return ctl_fail(c, AOS_ERR_USAGE, "%s is not a proof: %s", file,
                        e == EFBIG ? "it is larger than a proof can be" : strerror(e));
    }
    json_error_t je;
    json_t *d = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!d)
        return ctl_fail(c, AOS_ERR_USAGE, "%s is not a proof: not JSON (%s at line %d)", file,
                        je.text, je.line);
    audit_proof p;
    char why[1024];
    int bad = audit_proof_from_json(d, &p, why, sizeof why);
    json_decref(d);
    if (bad) {
        audit_proof_free(&p);
        return ctl_fail(c, AOS_ERR_USAGE, "%s is not a proof: %s", file, why);
    }
    const char *failed = audit_proof_check(&p, key ? pin : NULL, why, sizeof why);
    int rc = failed ? 1 : 0;
    if (c->json) {
        int prc = ctl_print_json(c, json_pack(
            "{s:b,s:s,s:s,s:I,s:I,s:I,s:o,s:o,s:b}", "valid", !failed, "failed",
            failed ? failed : "", "why", failed ? why : "", "seq", (json_int_t)p.seq,
            "tree_size", (json_int_t)p.head.tree_size, "time_ns", (json_int_t)p.head.time_ns,
            "root", audit_jhex(p.head.root, AUDIT_HASH_LEN), "public_key",
            audit_jhex(key ? pin : p.pk, AUDIT_PK_LEN), "key_pinned", key != NULL));
        rc = prc ? prc : rc;
    } else if (failed) {
        printf("INVALID (%s): %s\n", failed, why);
    } else {
        char when[64], k[2 * AUDIT_PK_LEN + 1];
        iso_time(p.head.time_ns, 0, when, sizeof when);
        aos_hex(p.pk, AUDIT_PK_LEN, k);
        printf("valid: record seq %" PRIu64 " is in the log of %" PRIu64 " records (head of "
               "%s, signed by %s key %s)\n", p.seq, p.head.tree_size, when,
               key ? "the pinned" : "the proof's own", k);
        if (!key)
            printf("the key came with the proof: pin one kept elsewhere with --key\n");
    }
    audit_proof_free(&p);
    return rc;
}

/* ---- audit tail ----------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* A Record is fit to print: UTF-8 text, ids of their lengths, numbers within int64. */
static int record_ok(const Aos__Audit__Record *w)
{
    return str_ok(w->kind) && str_ok(w->agent) && str_ok(w->run) && str_ok(w->method) &&
           (w->trace_id.len == 0 || w->trace_id.len == AUDIT_TRACE_LEN) &&
           (w->span_id.len == 0 || w->span_id.len == AUDIT_SPAN_LEN) &&
           (w->parent_span_id.len == 0 || w->parent_span_id.len == AUDIT_SPAN_LEN) &&
           fits(w->seq) && fits(w->time_ns) && fits(w->latency_us) &&
           w->body.len <= AUDIT_BODY_MAX;
}

static json_t *record_json(const Aos__Audit__Record *w)
{
    char when[64];
    iso_time(w->time_ns, 0, when, sizeof when);
    int text = aos_utf8_valid(w->body.data, w->body.len);
    json_t *body = text ? json_stringn(w->body.len ? (const char *)w->body.data : "",
                                       w->body.len)
                        : audit_jhex(w->body.data, w->body.len);
    return json_pack("{s:I,s:I,s:s,s:s,s:s,s:s,s:I,s:o,s:o,s:o,s:s,s:i,s:s,s:I,s:o,s:b}",
                     "seq", (json_int_t)w->seq, "time_ns", (json_int_t)w->time_ns, "time",
                     when, "kind", w->kind, "agent", w->agent, "run", w->run, "step",
                     (json_int_t)w->step, "trace_id", audit_jhex(w->trace_id.data, w->trace_id.len),
                     "span_id", audit_jhex(w->span_id.data, w->span_id.len), "parent_span_id",
                     audit_jhex(w->parent_span_id.data, w->parent_span_id.len), "method", w->method,
                     "status", (int)w->status, "status_name",
                     aos_err_valid(w->status) ? aos_err_name(w->status) : "unknown",
                     "latency_us", (json_int_t)w->latency_us, "body", body, "body_hex", !text);
}

/* "850us", "12.3ms", "4.56s". */
static void latency_text(uint64_t us, char *out, size_t cap)
{
    if (us < 1000)
        snprintf(out, cap, "%" PRIu64 "us", us);
    else if (us < 1000000)
        snprintf(out, cap, "%" PRIu64 ".%01" PRIu64 "ms", us / 1000, us % 1000 / 100);
    else
        snprintf(out, cap, "%" PRIu64 ".%02" PRIu64 "s", us / 1000000, us % 1000000 / 10000);
}

static void record_line(const Aos__Audit__Record *w)
{
    char when[64], kind[CELL_MAX], agent[CELL_MAX], run[CELL_MAX], method[CELL_MAX],
        lat[32], body[BODY_SHOWN * 4 + 1], status[64];
    int cut;
    iso_time(w->time_ns, 1, when, sizeof when);
    ctl_clean(kind, sizeof kind, (const uint8_t *)w->kind, strlen(w->kind), 0, NULL);
    ctl_clean(agent, sizeof agent, (const uint8_t *)w->agent, strlen(w->agent), 0, NULL);
    ctl_clean(run, sizeof run, (const uint8_t *)w->run, strlen(w->run), 0, NULL);
    ctl_clean(method, sizeof method, (const uint8_t *)w->method, strlen(w->method), 0, NULL);
    ctl_clean(body, sizeof body, w->body.data, w->body.len, BODY_SHOWN, &cut);
    latency_text(w->latency_us, lat, sizeof lat);
    if (aos_err_valid(w->status))
        snprintf(status, sizeof status, "%s", aos_err_name(w->status));
    else
        snprintf(status, sizeof status, "status%" PRId32, w->status);
    char runstep[CELL_MAX + 16];
    if (run[0])
        snprintf(runstep, sizeof runstep, "%s/%" PRIu32, run, w->step);
    else
        snprintf(runstep, sizeof runstep, "-");
    printf("%" PRIu64 "  %s  %-14s  %-16s  %-12s  %-20s  %-9s  %7s  %s%s\n", w->seq, when,
           kind, agent[0] ? agent : "-", runstep, method[0] ? method : "-", status, lat,
           body, cut ? "..." : "");
}

/* One page of audit.tail. Returns 0 with *out (caller frees it with
 * aos__audit__tail_reply__free_unpacked), else the aos_err with why. */
static aos_err tail_page(ctl_ctx *c, Aos__Audit__TailRequest *q, Aos__Audit__TailReply **out,
                         char *why, size_t whylen)
{
    aos_reply r;
    *out = NULL;
    aos_err e = ctl_call(c, NULL, "audit.tail", &q->base, &r);
    if (e != AOS_OK) {
        snprintf(why, whylen, "%s", r.error);
        aos_reply_clear(&r);
        return e;
    }
    Aos__Audit__TailReply *t = aos__audit__tail_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!t) {
        snprintf(why, whylen, "audit.tail: aos-audit sent a malformed TailReply");
        return AOS_ERR_PROTO;
    }
    /* oldest first, each after the one before and after the seq asked for */
    uint64_t prev = q->after_seq;
    for (size_t i = 0; i < t->n_records; i++) {
        if (!record_ok(t->records[i]) || t->records[i]->seq <= prev) {
            snprintf(why, whylen, "audit.tail: aos-audit sent a record that is malformed or "
                     "out of order (at %zu)", i);
            aos__audit__tail_reply__free_unpacked(t, NULL);
            return AOS_ERR_PROTO;
        }
        prev = t->records[i]->seq;
    }
    if (t->n_records > (q->limit ? q->limit : 100u)) {
        snprintf(why, whylen, "audit.tail: aos-audit sent %zu records for a limit of %u",
                 t->n_records, q->limit);
        aos__audit__tail_reply__free_unpacked(t, NULL);
        return AOS_ERR_PROTO;
    }
    *out = t;
    return AOS_OK;
}

/* Sleeps ms unless a signal stops the follow first. In slices: the signal may be taken by
 * one of libaos's threads, which leaves this one's sleep uninterrupted. */
static void nap(unsigned ms)
{
    for (unsigned slept = 0; !g_stop && slept < ms; slept += 50) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 50L * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* A page's records, one line each (a JSON object per line with json), moving *after to
 * the last one printed. -1 out of memory. */
static int print_page(const Aos__Audit__TailReply *t, int json, uint64_t *after)
{
    for (size_t i = 0; i < t->n_records; i++) {
        if (json) {
            json_t *j = record_json(t->records[i]);
            char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            if (!s)
                return -1;
            puts(s);
            free(s);
        } else {
            record_line(t->records[i]);
        }
        *after = t->records[i]->seq;
    }
    return 0;
}

/* -f: one line per record as it is appended (one JSON object per line with --json), from
 * after *after until SIGINT or SIGTERM. */
static int follow(ctl_ctx *c, Aos__Audit__TailRequest *q)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: a signal cuts the nap short */
    sigaction(SIGTERM, &sa, NULL);
    int noted = 0;
    while (!g_stop) {
        Aos__Audit__TailReply *t;
        char why[AOS_ERRMSG_MAX + 64];
        aos_err e = tail_page(c, q, &t, why, sizeof why);
        if (g_stop) {
            if (t)
                aos__audit__tail_reply__free_unpacked(t, NULL);
            break;
        }
        if (e == AOS_ERR_UNAVAILABLE || e == AOS_ERR_TIMEOUT || e == AOS_ERR_RATE_LIMITED) {
            /* aos-audit restarting or busy: the follow waits for it, saying so once */
            if (!noted)
                fprintf(stderr, "aosctl: %s (still following)\n", why);
            noted = 1;
            nap(FOLLOW_MS);
            continue;
        }
        if (e != AOS_OK)
            return ctl_fail(c, e, "%s", why);
        noted = 0;
        if (print_page(t, c->json, &q->after_seq)) {
            aos__audit__tail_reply__free_unpacked(t, NULL);
            return ctl_fail(c, AOS_ERR_NOMEM, "out of memory building a record");
        }
        int full = t->n_records == q->limit;
        aos__audit__tail_reply__free_unpacked(t, NULL);
        if (fflush(stdout) != 0 || ferror(stdout))
            return 0; /* the reader went away; main reports the write error */
        if (!full) /* a full page: more are waiting, ask again now */
            nap(FOLLOW_MS);
    }
    return 0;
}

static int cmd_tail(ctl_ctx *c, const ctl_vals *v)
{
    const char *agent = ctl_str(v, "--agent"), *run = ctl_str(v, "--run");
    const char *trace = ctl_str(v, "--trace");
    uint8_t tid[AUDIT_TRACE_LEN];
    Aos__Audit__TailRequest q = AOS__AUDIT__TAIL_REQUEST__INIT;
    if (agent)
        q.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    if (run)
        q.run = (ProtobufCBinaryData){strlen(run), (uint8_t *)run};
    if (trace) {
        if (aos_unhex(trace, strlen(trace), tid, sizeof tid) != 0) /* checked by the table */
            return ctl_fail(c, AOS_ERR_INTERNAL, "--trace passed its check but is not hex");
        q.trace_id = (ProtobufCBinaryData){sizeof tid, tid};
    }
    q.limit = (uint32_t)ctl_int(v, "--limit");
    q.after_seq = (uint64_t)ctl_int(v, "--after");

    char why[AOS_ERRMSG_MAX + 64];
    Aos__Audit__TailReply *t;
    aos_err e = tail_page(c, &q, &t, why, sizeof why);
    if (e != AOS_OK)
        return ctl_fail(c, e, "%s", why);
    /* no --after: the last N records of the log (with a filter, those of them that match),
     * as tail does. With a filter, a first page that is not full already holds every match;
     * without one, a short page only means aos-audit capped its bytes. */
    int filtered = agent || run || trace;
    if (!ctl_given(v, "--after") && t->last_seq > q.limit && fits(t->last_seq) &&
        (!filtered || t->n_records == q.limit)) {
        uint64_t from = t->last_seq - q.limit;
        aos__audit__tail_reply__free_unpacked(t, NULL);
        q.after_seq = from;
        if ((e = tail_page(c, &q, &t, why, sizeof why)) != AOS_OK)
            return ctl_fail(c, e, "%s", why);
    }
    int rc = 0;
    if (c->json && !ctl_given(v, "--follow")) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < t->n_records; i++)
            if (json_array_append_new(arr, record_json(t->records[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        aos__audit__tail_reply__free_unpacked(t, NULL);
        return ctl_print_json(c, arr);
    }
    if (print_page(t, c->json, &q.after_seq)) {
        aos__audit__tail_reply__free_unpacked(t, NULL);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory building a record");
    }
    aos__audit__tail_reply__free_unpacked(t, NULL);
    fflush(stdout);
    if (ctl_given(v, "--follow"))
        rc = follow(c, &q);
    return rc;
}

/* ---- audit trace ------------------------------------------------------------------------ */

#define TRACE_RECORDS_MAX 100000u /* records of one trace gathered */
#define TRACE_DEPTH_MAX 64

typedef struct trace_set {
    Aos__Audit__TailReply **pages;
    size_t npages;
    const Aos__Audit__Record **r;
    size_t n;
} trace_set;

static void trace_free(trace_set *t)
{
    for (size_t i = 0; i < t->npages; i++)
        aos__audit__tail_reply__free_unpacked(t->pages[i], NULL);
    free(t->pages);
    free(t->r);
}

/* An id of no bytes or all zero bytes names no span. */
static int id_none(const ProtobufCBinaryData *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i])
            return 0;
    return 1;
}

static uint64_t span_key(const ProtobufCBinaryData *b)
{
    uint64_t k = 0;
    for (size_t i = 0; i < b->len && i < 8; i++)
        k = k << 8 | b->data[i];
    return k;
}

typedef struct span_ix {
    uint64_t span;
    size_t i;
} span_ix;

static int by_span(const void *a, const void *b)
{
    const span_ix *x = a, *y = b;
    return x->span < y->span ? -1 : x->span > y->span;
}

/* Each record's depth: a span's is its parent's plus one; a detail a server added (no
 * span of its own) sits one below the span it names as its parent; a parent not in the
 * trace makes a root (0). Memoized, with spans found by binary search: n log n for a
 * trace of any shape, and a cycle (a log tampered with) stops at depth 0. */
static int *trace_depths(const trace_set *t)
{
    int *d = malloc((t->n ? t->n : 1) * sizeof *d);
    span_ix *ix = malloc((t->n ? t->n : 1) * sizeof *ix);
    if (!d || !ix) {
        free(d);
        free(ix);
        return NULL;
    }
    size_t m = 0;
    for (size_t i = 0; i < t->n; i++) {
        d[i] = -2; /* not known yet */
        if (!id_none(&t->r[i]->span_id))
            ix[m++] = (span_ix){span_key(&t->r[i]->span_id), i};
    }
    qsort(ix, m, sizeof *ix, by_span);
    for (size_t i = 0; i < t->n; i++) {
        /* walk up, marking the path in progress (-1), then unwind it */
        size_t path[TRACE_DEPTH_MAX], np = 0, cur = i;
        int base = 0;
        while (d[cur] == -2 && np < TRACE_DEPTH_MAX) {
            d[cur] = -1;
            path[np++] = cur;
            const ProtobufCBinaryData *p = &t->r[cur]->parent_span_id;
            if (id_none(p)) {
                base = -1; /* a root: depth 0 below */
                break;
            }
            span_ix key = {span_key(p), 0}, *hit = bsearch(&key, ix, m, sizeof *ix, by_span);
            if (!hit) {
                base = -1;
                break;
            }
            cur = hit->i;
        }
        if (base == 0)
            base = d[cur] >= 0 ? d[cur] : -1; /* known, or a cycle / too deep: a root */
        while (np) {
            size_t k = path[--np];
            d[k] = ++base;
        }
    }
    free(ix);
    return d;
}

/* Records grouped by trace, each trace in the order of its first record, seq order within:
 * an agent's run reads as one tree per syscall chain. */
typedef struct tagged {
    const Aos__Audit__Record *r;
    uint64_t first; /* the seq of its trace's first record */
} tagged;

static int trace_cmp(const Aos__Audit__Record *x, const Aos__Audit__Record *y)
{
    if (x->trace_id.len != y->trace_id.len)
        return x->trace_id.len < y->trace_id.len ? -1 : 1;
    return x->trace_id.len ? memcmp(x->trace_id.data, y->trace_id.data, x->trace_id.len) : 0;
}

static int by_trace_then_seq(const void *a, const void *b)
{
    const tagged *x = a, *y = b;
    int c = trace_cmp(x->r, y->r);
    if (c)
        return c;
    return x->r->seq < y->r->seq ? -1 : x->r->seq > y->r->seq;
}

static int by_first_then_seq(const void *a, const void *b)
{
    const tagged *x = a, *y = b;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return x->r->seq < y->r->seq ? -1 : x->r->seq > y->r->seq;
}

/* Orders t->r by trace (in the order of each trace's first record), then seq: two sorts,
 * n log n whatever the log holds. */
static int group_by_trace(trace_set *t)
{
    tagged *g = malloc((t->n ? t->n : 1) * sizeof *g);
    if (!g)
        return -1;
    for (size_t i = 0; i < t->n; i++)
        g[i] = (tagged){t->r[i], 0};
    qsort(g, t->n, sizeof *g, by_trace_then_seq);
    for (size_t i = 0; i < t->n; i++)
        g[i].first = i && !trace_cmp(g[i].r, g[i - 1].r) ? g[i - 1].first : g[i].r->seq;
    qsort(g, t->n, sizeof *g, by_first_then_seq);
    for (size_t i = 0; i < t->n; i++)
        t->r[i] = g[i].r;
    free(g);
    return 0;
}

static int cmd_trace(ctl_ctx *c, const ctl_vals *v)
{
    const char *trace = ctl_str(v, "--trace"), *agent = ctl_str(v, "--agent");
    const char *run = ctl_str(v, "--run");
    if (!trace && !agent)
        return ctl_fail(c, AOS_ERR_USAGE, "audit trace needs --trace ID, or --agent A "
                        "(with --run R for one run)");
    uint8_t tid[AUDIT_TRACE_LEN];
    Aos__Audit__TailRequest q = AOS__AUDIT__TAIL_REQUEST__INIT;
    if (trace) {
        if (aos_unhex(trace, strlen(trace), tid, sizeof tid) != 0) /* checked by the table */
            return ctl_fail(c, AOS_ERR_INTERNAL, "--trace passed its check but is not hex");
        q.trace_id = (ProtobufCBinaryData){sizeof tid, tid};
    }
    if (agent)
        q.agent = (ProtobufCBinaryData){strlen(agent), (uint8_t *)agent};
    if (run)
        q.run = (ProtobufCBinaryData){strlen(run), (uint8_t *)run};
    q.limit = TAIL_LIMIT_MAX;
    trace_set t = {0};
    char why[AOS_ERRMSG_MAX + 64];
    /* every page of the trace, oldest first */
    for (;;) {
        Aos__Audit__TailReply *page;
        aos_err e = tail_page(c, &q, &page, why, sizeof why);
        if (e != AOS_OK) {
            trace_free(&t);
            return ctl_fail(c, e, "%s", why);
        }
        void *np = realloc(t.pages, (t.npages + 1) * sizeof *t.pages);
        void *nr = np ? realloc(t.r, (t.n + page->n_records + 1) * sizeof *t.r) : NULL;
        if (np)
            t.pages = np;
        if (!np || !nr) {
            aos__audit__tail_reply__free_unpacked(page, NULL);
            trace_free(&t);
            return ctl_fail(c, AOS_ERR_NOMEM, "out of memory gathering the trace");
        }
        t.r = nr;
        t.pages[t.npages++] = page;
        for (size_t i = 0; i < page->n_records; i++)
            t.r[t.n++] = page->records[i];
        if (!page->n_records || page->records[page->n_records - 1]->seq >= page->last_seq ||
            t.n >= TRACE_RECORDS_MAX)
            break;
        q.after_seq = page->records[page->n_records - 1]->seq;
    }
    if (!t.n) {
        trace_free(&t);
        return ctl_fail(c, AOS_ERR_NOT_FOUND, "no record of %s%s%s%s in the audit log",
                        trace ? "trace " : "agent ", trace ? trace : agent,
                        run && !trace ? ", run " : "", run && !trace ? run : "");
    }
    if (group_by_trace(&t)) {
        trace_free(&t);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory ordering the trace");
    }
    int *depth = trace_depths(&t);
    if (!depth) {
        trace_free(&t);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory ordering the trace");
    }
    if (c->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < t.n; i++) {
            json_t *j = record_json(t.r[i]);
            if (!j || json_object_set_new(j, "depth", json_integer(depth[i])) ||
                json_array_append_new(arr, j)) {
                json_decref(arr);
                arr = NULL;
            }
        }
        json_t *doc = arr ? json_pack("{s:s, s:o, s:b}", "selected",
                                      trace ? trace : agent, "records", arr, "complete",
                                      t.n < TRACE_RECORDS_MAX)
                          : NULL;
        free(depth);
        trace_free(&t);
        return ctl_print_json(c, doc);
    }
    for (size_t i = 0; i < t.n; i++) {
        if (!i || t.r[i]->trace_id.len != t.r[i - 1]->trace_id.len ||
            memcmp(t.r[i]->trace_id.data, t.r[i - 1]->trace_id.data, t.r[i]->trace_id.len)) {
            char th[2 * AUDIT_TRACE_LEN + 1] = "-";
            if (t.r[i]->trace_id.len == AUDIT_TRACE_LEN)
                aos_hex(t.r[i]->trace_id.data, AUDIT_TRACE_LEN, th);
            printf("trace %s\n", th);
        }
        printf("  %*s", 2 * (depth[i] < 20 ? depth[i] : 20), "");
        record_line(t.r[i]);
    }
    free(depth);
    if (t.n >= TRACE_RECORDS_MAX)
        fprintf(stderr, "(the first %u records of the trace only)\n", TRACE_RECORDS_MAX);
    trace_free(&t);
    return 0;
}

/* ---- the table ------------------------------------------------------------------------ */

#define SCHEMA "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
#define INT0 "{\"type\":\"integer\",\"minimum\":0}"
#define INT1 "{\"type\":\"integer\",\"minimum\":1}"
#define STR "{\"type\":\"string\"}"
#define HEX(n) "{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{" #n "}$\"}"

#define HEAD_PROPS(size)                                                                   \
    "\"tree_size\":" size ",\"time_ns\":{\"type\":\"integer\",\"minimum\":0,"              \
    "\"description\":\"when it was signed, Unix ns\"},\"root\":" HEX(64) ","               \
    "\"signature\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{128}$\",\"description\":"  \
    "\"Ed25519 over the signed bytes of servers/audit/merkle.h\"},"                         \
    "\"public_key\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{64}$\",\"description\":"  \
    "\"the log's head key: keep it elsewhere, pass it to check-proof --key\"}"
#define HEAD_REQ "\"tree_size\",\"time_ns\",\"root\",\"signature\",\"public_key\""

static const char verify_out[] = SCHEMA
    "\"type\":\"object\",\"description\":\"audit.verify's Finding; exit 0 when kind is ok or "
    "declared_gap, 1 otherwise\",\"required\":[\"ok\",\"kind\",\"seq\",\"seq_end\","
    "\"head_size\",\"records\",\"heads_checked\",\"heads_skipped\",\"what\"],\"properties\":{"
    "\"ok\":{\"type\":\"boolean\",\"description\":\"kind is ok or declared_gap\"},"
    "\"kind\":{\"type\":\"string\",\"enum\":[\"ok\",\"declared_gap\",\"altered\",\"deleted\","
    "\"inserted\",\"reordered\",\"truncated\",\"bad_head\"]},"
    "\"seq\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the first seq concerned "
    "(0 for ok)\"},\"seq_end\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the last "
    "one (a gap, a bad head's range)\"},\"head_size\":{\"type\":\"integer\",\"minimum\":0,"
    "\"description\":\"the head involved (truncated, bad_head), else 0\"},"
    "\"records\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"records that checked "
    "out\"},\"heads_checked\":" INT0 ",\"heads_skipped\":{\"type\":\"integer\",\"minimum\":0,"
    "\"description\":\"heads inside an archived range, not checkable\"},"
    "\"what\":{\"type\":\"string\",\"description\":\"a sentence for the operator\"}}}";

static const char head_out[] = SCHEMA
    "\"type\":\"object\",\"description\":\"the latest signed tree head, its signature checked "
    "against its key; keep it elsewhere to check the log against later\","
    "\"required\":[" HEAD_REQ ",\"time\"],\"properties\":{"
    HEAD_PROPS("{\"type\":\"integer\",\"minimum\":0,\"description\":\"records the head "
               "covers; 0 for an empty log\"}") ","
    "\"time\":{\"type\":\"string\",\"description\":\"time_ns as ISO-8601 UTC\"}}}";

static const char prove_out[] = SCHEMA
    "\"type\":\"object\",\"description\":\"the proof file (the format at the top of "
    "tools/aosctl/cmd_audit.c), checked before it is printed or written\","
    "\"required\":[\"version\",\"seq\",\"record\",\"path\",\"head\"],\"properties\":{"
    "\"version\":{\"const\":1},\"seq\":" INT1 ","
    "\"record\":{\"type\":\"string\",\"pattern\":\"^([0-9a-f]{2})+$\",\"description\":"
    "\"hex of the record's canonical encoding (servers/audit/record.h)\"},"
    "\"path\":{\"type\":\"array\",\"description\":\"the RFC 6962 audit path, leaf side "
    "first\",\"items\":" HEX(64) "},"
    "\"head\":{\"type\":\"object\",\"required\":[" HEAD_REQ "],\"properties\":{"
    HEAD_PROPS(INT1) "}},\"out\":{\"type\":\"string\",\"description\":\"with --out: the file it was written "
    "to (the file itself has no out)\"}}}";

static const char check_out[] = SCHEMA
    "\"type\":\"object\",\"description\":\"exit 0 when valid, 1 when a check failed; a file "
    "that is not a proof is an error (exit 2)\",\"required\":[\"valid\",\"failed\",\"why\","
    "\"seq\",\"tree_size\",\"time_ns\",\"root\",\"public_key\",\"key_pinned\"],"
    "\"properties\":{\"valid\":{\"type\":\"boolean\"},"
    "\"failed\":{\"type\":\"string\",\"enum\":[\"\",\"record\",\"seq\",\"inclusion\",\"key\","
    "\"signature\"],\"description\":\"the first check that failed, in this order: the "
    "record decodes, its seq is the proof's, the path leads to the head's root, the head "
    "names the pinned key, the signature verifies; empty when valid\"},"
    "\"why\":{\"type\":\"string\",\"description\":\"empty when valid\"},"
    "\"seq\":" INT1 ",\"tree_size\":" INT1 ",\"time_ns\":" INT0 ",\"root\":" HEX(64) ","
    "\"public_key\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{64}$\",\"description\":"
    "\"the key the head was checked with: --key, else the proof's own\"},"
    "\"key_pinned\":{\"type\":\"boolean\",\"description\":\"--key was given\"}}}";

static const char tail_out[] = SCHEMA
    "\"type\":\"array\",\"description\":\"records oldest first; with --follow, one such "
    "record object per line instead (JSON Lines), until SIGINT or SIGTERM, and an error as "
    "one error object on its line\",\"items\":{\"type\":\"object\",\"required\":[\"seq\","
    "\"time_ns\",\"time\",\"kind\",\"agent\",\"run\",\"step\",\"trace_id\",\"span_id\","
    "\"parent_span_id\",\"method\",\"status\",\"status_name\",\"latency_us\",\"body\","
    "\"body_hex\"],\"properties\":{\"seq\":" INT1 ",\"time_ns\":" INT0 ","
    "\"time\":{\"type\":\"string\",\"description\":\"ISO-8601 UTC\"},\"kind\":" STR ","
    "\"agent\":" STR ",\"run\":{\"type\":\"string\",\"description\":\"the durable run id; "
    "empty when none\"},\"step\":" INT0 ","
    "\"trace_id\":{\"type\":\"string\",\"pattern\":\"^([0-9a-f]{32})?$\"},"
    "\"span_id\":{\"type\":\"string\",\"pattern\":\"^([0-9a-f]{16})?$\"},"
    "\"parent_span_id\":{\"type\":\"string\",\"pattern\":\"^([0-9a-f]{16})?$\"},"
    "\"method\":" STR ",\"status\":{\"type\":\"integer\",\"description\":\"aos_err\"},"
    "\"status_name\":{\"type\":\"string\",\"description\":\"OK, NOT_FOUND, ...; unknown for "
    "a value aosctl does not know\"},\"latency_us\":" INT0 ","
    "\"body\":{\"type\":\"string\",\"description\":\"the details, whole (canonical JSON as "
    "text); hex when they are not UTF-8\"},"
    "\"body_hex\":{\"type\":\"boolean\",\"description\":\"body is hex\"}}}}";

static const ctl_arg head_args[] = {
    {.name = "--sign-now", .type = CTL_BOOL,
     .summary = "have aos-audit sign a head of the log as it is now, and print that one"},
};
_Static_assert(AUDIT_PROOF_MAX == 64 && AUDIT_HASH_LEN == 32, "the schemas say 64 hex");
static const ctl_arg prove_args[] = {
    {.name = "SEQ", .type = CTL_INTEGER, .required = 1, .min = 1, .max = INT64_MAX,
     .summary = "the record to prove (its seq, from audit tail)"},
    {.name = "--size", .type = CTL_INTEGER, .value = "N", .min = 1, .max = INT64_MAX,
     .summary = "prove against the signed head of this tree size (default: the latest head "
                "covering SEQ)"},
    {.name = "--out", .value = "FILE", .check = check_path,
     .summary = "write the proof file here (whole or not at all) instead of stdout"},
};
static const ctl_arg check_args[] = {
    {.name = "FILE", .required = 1, .check = check_path,
     .summary = "a proof file from audit prove"},
    {.name = "--key", .value = "HEX", .pattern = "^[0-9a-fA-F]{64}$",
     .check = ctl_check_audit_key,
     .summary = "the log's public key, kept elsewhere: the head must be signed by it "
                "(default: trust the key in the file)"},
};
static const ctl_arg tail_args[] = {
    {.name = "--follow", .short_name = 'f', .type = CTL_BOOL,
     .summary = "keep printing records as they are appended (every 500 ms) until SIGINT or "
                "SIGTERM"},
    {.name = "--agent", .value = "A", .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "only this agent's records"},
    {.name = "--run", .value = "R", .check = check_run, .summary = "only this run's records"},
    {.name = "--trace", .value = "HEX32", .pattern = "^[0-9a-fA-F]{32}$",
     .check = check_trace, .summary = "only this trace's records"},
    {.name = "--after", .type = CTL_INTEGER, .value = "SEQ", .min = 0, .max = INT64_MAX,
     .summary = "records after this seq (default: the last N of the log; with a filter, "
                "those of them that match)"},
    {.name = "--limit", .short_name = 'n', .type = CTL_INTEGER, .value = "N", .min = 1,
     .max = TAIL_LIMIT_MAX, .def = "100", .summary = "at most N records (a page with -f)"},
};

static const char trace_out[] = SCHEMA
    "\"type\":\"object\",\"required\":[\"selected\",\"records\",\"complete\"],"
    "\"properties\":{\"selected\":{\"type\":\"string\",\"description\":\"the --trace "
    "or --agent asked for\"},"
    "\"complete\":{\"type\":\"boolean\",\"description\":\"false when the trace held more "
    "records than aosctl gathers (100000)\"},"
    "\"records\":{\"type\":\"array\",\"description\":\"the trace's records oldest first, "
    "as audit tail gives them, each with its depth in the span tree\",\"items\":{\"type\":"
    "\"object\",\"required\":[\"seq\",\"kind\",\"span_id\",\"parent_span_id\","
    "\"depth\"],\"properties\":{\"seq\":" INT1 ",\"kind\":" STR ",\"span_id\":" STR ","
    "\"parent_span_id\":" STR ",\"depth\":{\"type\":\"integer\",\"minimum\":0,"
    "\"description\":\"0: a root span; a server's detail sits below the span it names\"}}}}}}";

static const ctl_arg trace_args[] = {
    {.name = "--trace", .value = "HEX32", .pattern = "^[0-9a-fA-F]{32}$", .check = check_trace,
     .summary = "this trace (32 hex, from audit tail or an agent's logs)"},
    {.name = "--agent", .value = "A", .pattern = "^[A-Za-z0-9_.:-]{1,64}$",
     .check = ctl_check_agent, .summary = "this agent's traces (with --trace: within it)"},
    {.name = "--run", .value = "R", .check = check_run,
     .summary = "only this run's records (with --agent)"},
};

static const ctl_cmd audit_cmds[] = {
    {"audit verify", "check the whole audit log against its hash chain, Merkle tree and "
     "signed heads; exit 1 naming the first bad seq and what happened", NULL, 0, verify_out,
     cmd_verify},
    {"audit head", "the latest signed tree head: size, time, root, signature, public key",
     CTL_ARGS(head_args), head_out, cmd_head},
    {"audit prove", "an inclusion proof of record SEQ against a signed head, as a proof file "
     "for audit check-proof", CTL_ARGS(prove_args), prove_out, cmd_prove},
    {"audit check-proof", "check a proof file offline (no aosd): record, path, head "
     "signature; exit 0 valid, 1 not (naming the check), 2 not a proof",
     CTL_ARGS(check_args), check_out, cmd_check_proof},
    {"audit tail", "audit records oldest first, one line each; -f follows the log",
     CTL_ARGS(tail_args), tail_out, cmd_tail},
    {"audit trace", "the decision chain as trees, one per trace (--trace ID, or an agent's, "
     "or one run's): each syscall under the call that made it, each server's details (LLM "
     "request and reply with usage, tool runs) under its syscall", CTL_ARGS(trace_args),
     trace_out, cmd_trace},
};

const ctl_group ctl_group_audit = {audit_cmds, sizeof audit_cmds / sizeof audit_cmds[0]};
