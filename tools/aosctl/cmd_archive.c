/* aosctl audit archive: retention of the audit log. The old records are exported with the
 * signed head that covers them, checked, then aos-audit records the cut and drops the range.
 *
 * The archive directory (--out DIR, default DATA/audit-archive/FROM-TO) holds three files:
 *   records     every record of seqs FROM..TO, each as u32 big-endian length then its
 *               canonical encoding (servers/audit/record.h), in seq order
 *   head.json   {"version":1, "from_seq", "to_seq", "head":{tree_size (= TO), time_ns,
 *               root, signature, public_key}, "base_chain": chain hash of FROM-1 (zeros
 *               when FROM is 1), "base_frontier": [the tree's frontier at FROM-1, hex]}
 *   MANIFEST    "<sha256 hex>  records" and "<sha256 hex>  head.json" lines (sha256sum -c
 *               reads it); the archive record in the log keeps the SHA-256 of this file.
 * Before anything is dropped aosctl checks what it wrote: the chain from base_chain through
 * every record, and the tree from base_frontier through every leaf to the head's root, whose
 * signature must verify. So the files alone prove the range (and the head) to anyone. */
#include "aosctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit.pb-c.h"
#include "merkle.h"
#include "prooffile.h"
#include "record.h"

#define ARCH_PAGE 1000u  /* audit.export's page */
#define PATH_CAP 4096

/* "2026-12-03T14:02:00Z", with optional fraction and a Z or +hh:mm / -hh:mm offset, into
 * Unix ns. -1 when it is not RFC 3339 or is before 1970. */
static int rfc3339_ns(const char *s, uint64_t *out)
{
    int Y, M, D, h, m, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &n) != 6 ||
        n != 19)
        return -1;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1970)
        return -1;
    const char *p = s + 19;
    uint64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 9)
                frac = frac * 10 + (uint64_t)(*p - '0');
        if (!digits)
            return -1;
        for (; digits < 9; digits++)
            frac *= 10;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
            return -1;
        off = (*p == '+' ? 1 : -1) * (long)(oh * 3600 + om * 60);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h,
                    .tm_min = m, .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || (long long)t - off < 0)
        return -1;
    *out = (uint64_t)((long long)t - off) * 1000000000u + frac;
    return 0;
}

static int check_before(const char *val, char *why, size_t whylen)
{
    uint64_t ns;
    size_t n = strspn(val, "0123456789");
    if (n && !val[n] && n <= 18 && strtoull(val, NULL, 10) >= 1)
        return 0;
    if (rfc3339_ns(val, &ns) == 0)
        return 0;
    snprintf(why, whylen, "--before %.100s: neither a seq (1 or more) nor an RFC 3339 time "
             "such as 2026-12-03T14:02:00Z", val);
    return -1;
}

static int check_dir(const char *val, char *why, size_t whylen)
{
    if (!val[0] || strlen(val) > PATH_CAP - 64) {
        snprintf(why, whylen, "--out: a directory path of 1 to %d bytes", PATH_CAP - 64);
        return -1;
    }
    return 0;
}

/* ---- the files ---------------------------------------------------------------------------- */

typedef struct arch {
    ctl_ctx *c;
    char dir[PATH_CAP];
    int dfd, rfd;
    crypto_hash_sha256_state rsum;
    uint64_t from, to, next;
    uint8_t chain[AUDIT_HASH_LEN];
    audit_tree *tree;
    audit_sth head;
    uint8_t pk[AUDIT_PK_LEN];
    uint8_t base_chain[AUDIT_HASH_LEN];
    size_t nbase;
    uint8_t base_fr[AUDIT_TREE_DEPTH][AUDIT_HASH_LEN];
    uint64_t bytes;
    char why[1024];
} arch;

static int write_all(int fd, const void *b, size_t n)
{
    const uint8_t *p = b;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One record off the wire: decoded (untrusted), in its place, linked, into the file. */
static int take_record(arch *a, const ProtobufCBinaryData *enc, const ProtobufCBinaryData *ch)
{
    audit_rec r;
    char why[256];
    if (audit_rec_decode(enc->data, enc->len, &r, why, sizeof why) != AOS_OK) {
        snprintf(a->why, sizeof a->why, "record %" PRIu64 " from aos-audit does not decode: "
                 "%s", a->next, why);
        return -1;
    }
    uint8_t cc[AUDIT_HASH_LEN], leaf[AUDIT_HASH_LEN];
    audit_chain_hash(r.prev_hash, enc->data, enc->len, cc);
    if (r.seq != a->next || memcmp(r.prev_hash, a->chain, AUDIT_HASH_LEN) ||
        ch->len != AUDIT_HASH_LEN || memcmp(cc, ch->data, AUDIT_HASH_LEN)) {
        snprintf(a->why, sizeof a->why, "record %" PRIu64 " does not continue the chain "
                 "(seq %" PRIu64 " came; run aosctl audit verify): nothing is archived",
                 a->next, r.seq);
        return -1;
    }
    audit_leaf_hash(enc->data, enc->len, leaf);
    if (audit_tree_append(a->tree, leaf, why, sizeof why) != AOS_OK) {
        snprintf(a->why, sizeof a->why, "%s", why);
        return -1;
    }
    uint8_t len[4] = {(uint8_t)(enc->len >> 24), (uint8_t)(enc->len >> 16),
                      (uint8_t)(enc->len >> 8), (uint8_t)enc->len};
    if (write_all(a->rfd, len, 4) || write_all(a->rfd, enc->data, enc->len)) {
        snprintf(a->why, sizeof a->why, "cannot write %.400s/records: %s", a->dir,
                 strerror(errno));
        return -1;
    }
    crypto_hash_sha256_update(&a->rsum, len, 4);
    crypto_hash_sha256_update(&a->rsum, enc->data, enc->len);
    memcpy(a->chain, cc, AUDIT_HASH_LEN);
    a->next++;
    a->bytes += 4 + enc->len;
    return 0;
}

static aos_err export_all(arch *a)
{
    while (a->next <= a->to) {
        Aos__Audit__ExportRequest q = AOS__AUDIT__EXPORT_REQUEST__INIT;
        q.after_seq = a->next - 1;
        q.to_seq = a->to;
        q.limit = ARCH_PAGE;
        aos_reply r;
        aos_err e = ctl_call(a->c, NULL, "audit.export", &q.base, &r);
        if (e != AOS_OK) {
            snprintf(a->why, sizeof a->why, "audit.export: %.900s", r.error);
            aos_reply_clear(&r);
            return e;
        }
        Aos__Audit__ExportReply *x =
            aos__audit__export_reply__unpack(NULL, r.payload_len, r.payload);
        aos_reply_clear(&r);
        if (!x || x->n_records == 0 || x->n_records != x->n_chains ||
            x->n_records > ARCH_PAGE) {
            if (x)
                aos__audit__export_reply__free_unpacked(x, NULL);
            snprintf(a->why, sizeof a->why, "audit.export: aos-audit sent a malformed or "
                     "empty page after seq %" PRIu64, a->next - 1);
            return AOS_ERR_PROTO;
        }
        int bad = 0;
        for (size_t i = 0; !bad && i < x->n_records && a->next <= a->to; i++)
            bad = take_record(a, &x->records[i], &x->chains[i]);
        aos__audit__export_reply__free_unpacked(x, NULL);
        if (bad)
            return AOS_ERR_CONFLICT;
    }
    return AOS_OK;
}

static int hex_file_sum(const uint8_t *b, size_t n, char out[2 * AUDIT_HASH_LEN + 1])
{
    uint8_t h[AUDIT_HASH_LEN];
    crypto_hash_sha256(h, b, n);
    sodium_bin2hex(out, 2 * AUDIT_HASH_LEN + 1, h, AUDIT_HASH_LEN);
    return 0;
}

/* name in the archive dir, whole: written, fsync'd. */
static int put_file(arch *a, const char *name, const char *text, size_t n)
{
    int fd = openat(a->dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, text, n) || fsync(fd)) {
        snprintf(a->why, sizeof a->why, "cannot write %.400s/%s: %s", a->dir, name,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static json_t *head_doc(const arch *a)
{
    json_t *fr = json_array();
    for (size_t i = 0; fr && i < a->nbase; i++)
        if (json_array_append_new(fr, audit_jhex(a->base_fr[i], AUDIT_HASH_LEN))) {
            json_decref(fr);
            fr = NULL;
        }
    if (!fr)
        return NULL;
    return json_pack("{s:i,s:I,s:I,s:o,s:o,s:o}", "version", 1, "from_seq",
                     (json_int_t)a->from, "to_seq", (json_int_t)a->to, "head",
                     audit_head_json(&a->head, a->pk), "base_chain",
                     audit_jhex(a->base_chain, AUDIT_HASH_LEN), "base_frontier", fr);
}

/* ---- the command ---------------------------------------------------------------------------- */

static int mkdirs(char *p)
{
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            int rc = mkdir(p, 0700);
            *s = '/';
            if (rc != 0 && errno != EEXIST)
                return -1;
        }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static int plan_from_pb(arch *a, const Aos__Audit__ArchiveReply *x)
{
    const Aos__Audit__Head *h = x ? x->head : NULL;
    if (!x || !h || h->root.len != AUDIT_HASH_LEN || h->signature.len != AUDIT_SIG_LEN ||
        h->public_key.len != AUDIT_PK_LEN || x->to_seq != h->tree_size || x->from_seq < 1 ||
        x->from_seq > x->to_seq || x->to_seq > INT64_MAX ||
        x->base_chain.len != AUDIT_HASH_LEN ||
        x->n_base_frontier != (size_t)__builtin_popcountll(x->from_seq - 1))
        return -1;
    for (size_t i = 0; i < x->n_base_frontier; i++) {
        if (x->base_frontier[i].len != AUDIT_HASH_LEN)
            return -1;
        memcpy(a->base_fr[i], x->base_frontier[i].data, AUDIT_HASH_LEN);
    }
    a->nbase = x->n_base_frontier;
    a->from = x->from_seq;
    a->to = x->to_seq;
    a->head.tree_size = h->tree_size;
    a->head.time_ns = h->time_ns;
    memcpy(a->head.root, h->root.data, AUDIT_HASH_LEN);
    memcpy(a->head.sig, h->signature.data, AUDIT_SIG_LEN);
    memcpy(a->pk, h->public_key.data, AUDIT_PK_LEN);
    memcpy(a->base_chain, x->base_chain.data, AUDIT_HASH_LEN);
    return 0;
}

static int cmd_archive(ctl_ctx *c, const ctl_vals *v)
{
    const char *before = ctl_str(v, "--before");
    if (!before)
        return ctl_fail(c, AOS_ERR_USAGE, "audit archive needs --before T (a seq or an RFC "
                        "3339 time)");
    Aos__Audit__ArchiveRequest q = AOS__AUDIT__ARCHIVE_REQUEST__INIT;
    if (strspn(before, "0123456789") == strlen(before))
        q.before_seq = strtoull(before, NULL, 10);
    else if (rfc3339_ns(before, &q.before_time_ns) != 0)
        return ctl_fail(c, AOS_ERR_USAGE, "--before %s: not a seq nor an RFC 3339 time",
                        before);
    arch *a = calloc(1, sizeof *a);
    if (!a)
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    a->c = c;
    a->dfd = a->rfd = -1;
    int rc = 0;
    aos_err e;
    aos_reply r;
    /* 1. the plan: the cut at a signed head */
    if ((e = ctl_call(c, NULL, "audit.archive", &q.base, &r)) != AOS_OK) {
        free(a);
        return ctl_fail_reply(c, &r);
    }
    Aos__Audit__ArchiveReply *x =
        aos__audit__archive_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    int bad = plan_from_pb(a, x);
    if (x)
        aos__audit__archive_reply__free_unpacked(x, NULL);
    char why[512];
    if (bad) {
        rc = ctl_fail(c, AOS_ERR_PROTO, "audit.archive: aos-audit sent a malformed plan");
        goto out;
    }
    if (audit_sth_verify(&a->head, a->pk, why, sizeof why) != AOS_OK) {
        rc = ctl_fail(c, AOS_ERR_PROTO, "audit.archive: the head of size %" PRIu64 " does "
                      "not verify with the log's key: %s", a->to, why);
        goto out;
    }
    /* 2. the directory: new or empty, so an archive is never mixed with another */
    const char *out = ctl_str(v, "--out");
    if (out) {
        snprintf(a->dir, sizeof a->dir, "%s", out);
    } else {
        char dd[PATH_CAP - 128];
        if (aos_data_dir(c->data_dir, dd, sizeof dd) != AOS_OK) {
            rc = ctl_fail(c, AOS_ERR_USAGE, "no data directory: give --data-dir or --out");
            goto out;
        }
        snprintf(a->dir, sizeof a->dir, "%s/audit-archive/%" PRIu64 "-%" PRIu64, dd, a->from,
                 a->to);
    }
    if (mkdirs(a->dir) != 0 ||
        (a->dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = ctl_fail(c, AOS_ERR_IO, "cannot make %s: %s", a->dir, strerror(errno));
        goto out;
    }
    a->rfd = openat(a->dfd, "records", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (a->rfd < 0) {
        rc = ctl_fail(c, errno == EEXIST ? AOS_ERR_CONFLICT : AOS_ERR_IO,
                      "%s/records: %s (an archive directory holds one archive)", a->dir,
                      strerror(errno));
        goto out;
    }
    /* 3. the records, checked as they come: chain and tree from the base */
    if (audit_tree_new(&a->tree, why, sizeof why) != AOS_OK ||
        audit_tree_restore(a->tree, a->from - 1, (const uint8_t(*)[AUDIT_HASH_LEN])a->base_fr,
                           a->nbase, why, sizeof why) != AOS_OK) {
        rc = ctl_fail(c, AOS_ERR_PROTO, "audit.archive: the base of the range: %s", why);
        goto out;
    }
    crypto_hash_sha256_init(&a->rsum);
    memcpy(a->chain, a->base_chain, AUDIT_HASH_LEN);
    a->next = a->from;
    if ((e = export_all(a)) != AOS_OK) {
        rc = ctl_fail(c, e, "%s", a->why);
        goto out;
    }
    uint8_t root[AUDIT_HASH_LEN];
    audit_tree_root(a->tree, root);
    if (audit_tree_size(a->tree) != a->to || memcmp(root, a->head.root, AUDIT_HASH_LEN)) {
        rc = ctl_fail(c, AOS_ERR_CONFLICT, "audit.archive: the exported records do not give "
                      "the root of the signed head of size %" PRIu64 " (run aosctl audit "
                      "verify): nothing is dropped", a->to);
        goto out;
    }
    if (fsync(a->rfd) != 0) {
        rc = ctl_fail(c, AOS_ERR_IO, "cannot write %.400s/records: %s", a->dir, strerror(errno));
        goto out;
    }
    /* 4. head.json and MANIFEST, then the directory itself */
    json_t *hd = head_doc(a);
    char *htext = hd ? json_dumps(hd, JSON_INDENT(2)) : NULL;
    json_decref(hd);
    if (!htext) {
        rc = ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    uint8_t rs[AUDIT_HASH_LEN];
    crypto_hash_sha256_final(&a->rsum, rs);
    char rhex[2 * AUDIT_HASH_LEN + 1], hhex[2 * AUDIT_HASH_LEN + 1], mhex[2 * AUDIT_HASH_LEN + 1];
    sodium_bin2hex(rhex, sizeof rhex, rs, AUDIT_HASH_LEN);
    hex_file_sum((const uint8_t *)htext, strlen(htext), hhex);
    char manifest[512];
    int mlen = snprintf(manifest, sizeof manifest, "%s  records\n%s  head.json\n", rhex, hhex);
    uint8_t digest[AUDIT_HASH_LEN];
    crypto_hash_sha256(digest, (const uint8_t *)manifest, (size_t)mlen);
    sodium_bin2hex(mhex, sizeof mhex, digest, AUDIT_HASH_LEN);
    int wbad = put_file(a, "head.json", htext, strlen(htext)) ||
               put_file(a, "MANIFEST", manifest, (size_t)mlen) || fsync(a->dfd) != 0;
    free(htext);
    if (wbad) {
        rc = ctl_fail(c, AOS_ERR_IO, "%s", a->why[0] ? a->why : "cannot sync the archive");
        goto out;
    }
    /* 5. the cut recorded and sealed, then the range dropped (by aos-audit) */
    Aos__Audit__ArchiveRequest cq = AOS__AUDIT__ARCHIVE_REQUEST__INIT;
    cq.commit = 1;
    cq.to_seq = a->to;
    cq.digest = (ProtobufCBinaryData){AUDIT_HASH_LEN, digest};
    if ((e = ctl_call(c, NULL, "audit.archive", &cq.base, &r)) != AOS_OK) {
        rc = ctl_fail(c, e, "audit.archive: the archive in %s is written, the cut was not "
                      "made: %s", a->dir, r.error);
        aos_reply_clear(&r);
        goto out;
    }
    x = aos__audit__archive_reply__unpack(NULL, r.payload_len, r.payload);
    aos_reply_clear(&r);
    if (!x || !x->archive_seq || x->to_seq != a->to) {
        if (x)
            aos__audit__archive_reply__free_unpacked(x, NULL);
        rc = ctl_fail(c, AOS_ERR_PROTO, "audit.archive: aos-audit sent a malformed answer "
                      "to the commit");
        goto out;
    }
    uint64_t aseq = x->archive_seq, dropped = x->dropped;
    uint64_t sealed = x->sealed ? x->sealed->tree_size : 0;
    aos__audit__archive_reply__free_unpacked(x, NULL);
    if (c->json) {
        rc = ctl_print_json(
            c, json_pack("{s:I,s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:o}", "from_seq",
                         (json_int_t)a->from, "to_seq", (json_int_t)a->to, "records",
                         (json_int_t)(a->to - a->from + 1), "out", a->dir, "manifest_sha256",
                         mhex, "bytes", (json_int_t)a->bytes, "archive_seq", (json_int_t)aseq,
                         "dropped", (json_int_t)dropped, "sealed_by", (json_int_t)sealed,
                         "head", audit_head_json(&a->head, a->pk)));
    } else {
        printf("archived seqs %" PRIu64 "..%" PRIu64 " (%" PRIu64 " records, %" PRIu64
               " bytes) to %s with the signed head of size %" PRIu64 "\n"
               "MANIFEST sha256 %s\nthe cut is archive record %" PRIu64 " (sealed by the head "
               "of size %" PRIu64 "); %" PRIu64 " records dropped from the log\n",
               a->from, a->to, a->to - a->from + 1, a->bytes, a->dir, a->to, mhex, aseq,
               sealed, dropped);
    }
out:
    if (a->rfd >= 0)
        close(a->rfd);
    if (a->dfd >= 0)
        close(a->dfd);
    audit_tree_free(a->tree);
    free(a);
    return rc;
}

static const char archive_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
    "\"type\":\"object\",\"description\":\"the archive written and the cut made\","
    "\"required\":[\"from_seq\",\"to_seq\",\"records\",\"out\",\"manifest_sha256\","
    "\"archive_seq\",\"dropped\",\"head\"],\"properties\":{"
    "\"from_seq\":{\"type\":\"integer\",\"minimum\":1},"
    "\"to_seq\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"the cut: a signed "
    "head's tree size\"},"
    "\"records\":{\"type\":\"integer\",\"minimum\":1},"
    "\"bytes\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the records file\"},"
    "\"out\":{\"type\":\"string\",\"description\":\"the archive directory (records, "
    "head.json, MANIFEST)\"},"
    "\"manifest_sha256\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{64}$\","
    "\"description\":\"kept in the archive record\"},"
    "\"archive_seq\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"the record "
    "that declares the gap\"},"
    "\"dropped\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"records deleted "
    "now\"},"
    "\"sealed_by\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the tree size "
    "of the head that covers the archive record\"},"
    "\"head\":{\"type\":\"object\",\"description\":\"the signed head of the cut\"}}}";

static const ctl_arg archive_args[] = {
    {.name = "--before", .value = "T", .check = check_before,
     .summary = "(needed) archive the records before T: a seq, or an RFC 3339 time; the cut is the "
                "last signed head at or before it"},
    {.name = "--out", .value = "DIR", .check = check_dir,
     .summary = "write the archive here (new or empty; default DATA/audit-archive/FROM-TO)"},
};

static const ctl_cmd archive_cmds[] = {
    {"audit archive", "export the records before T with the signed head that covers them "
     "(records, head.json, MANIFEST), check them, then record the cut and drop them from "
     "the log: audit verify then reports a declared gap", CTL_ARGS(archive_args), archive_out,
     cmd_archive},
};

const ctl_group ctl_group_audit_archive = {archive_cmds,
                                           sizeof archive_cmds / sizeof archive_cmds[0]};
