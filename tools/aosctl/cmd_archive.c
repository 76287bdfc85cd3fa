/* aosctl audit archive: retention of the audit log. The old records are exported with the
 * signed head that covers them and the contents they list, checked, then aos-audit records
 * the cut and drops the range. aosctl audit check-archive checks such a directory offline.
 *
 * The archive directory (--out DIR, default DATA/audit-archive/FROM-TO) is laid out as
 * servers/audit/archdir.h says: records, head.json, contents/<BLAKE2b hex> (every content
 * the range's records list, once each) and a MANIFEST of SHA-256 sums over all of them,
 * whose own SHA-256 the archive record in the log keeps. Before anything is dropped
 * aosctl reads what it wrote back from the disk and checks it the way check-archive does
 * (audit_archdir_check): the chain from base_chain through every record, the tree from
 * base_frontier to the head's root, whose signature must verify, and every listed content
 * against its name and its sum. So the files alone prove the range, the head and what the
 * records referred to, to anyone. */
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

#include "archdir.h"
#include "audit.pb-c.h"
#include "contents.h"
#include "merkle.h"
#include "prooffile.h"
#include "record.h"

#define ARCH_PAGE 1000u  /* audit.export's page */
#define FETCH_MAX 64u    /* hashes per audit.contents (its cap) */
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
    int dfd, rfd, cfd, mfd;
    crypto_hash_sha256_state rsum, msum;
    uint64_t from, to, next;
    uint8_t chain[AUDIT_HASH_LEN];
    /* the contents the records list: appended as they come, sorted and made unique when
     * the array fills (and at the end), so it holds at most about twice the distinct ones */
    uint8_t (*lh)[AUDIT_CONTENT_HASH_LEN];
    size_t nl, capl;
    uint8_t listed[AUDIT_CONTENTS_LIST_MAX][AUDIT_CONTENT_HASH_LEN];
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

static int cmp_hash(const void *x, const void *y)
{
    return memcmp(x, y, AUDIT_CONTENT_HASH_LEN);
}

/* a->lh sorted and each hash once. */
static void lh_unique(arch *a)
{
    if (a->nl < 2)
        return;
    qsort(a->lh, a->nl, sizeof *a->lh, cmp_hash);
    size_t w = 1;
    for (size_t i = 1; i < a->nl; i++)
        if (memcmp(a->lh[i], a->lh[w - 1], AUDIT_CONTENT_HASH_LEN))
            memcpy(a->lh[w++], a->lh[i], AUDIT_CONTENT_HASH_LEN);
    a->nl = w;
}

/* One listed content into the set: -1 with a->why past the cap or without memory. */
static int lh_add(arch *a, const uint8_t h[AUDIT_CONTENT_HASH_LEN])
{
    if (a->nl == a->capl) {
        lh_unique(a);
        if (a->nl > AUDIT_ARCHDIR_CONTENTS_MAX) {
            snprintf(a->why, sizeof a->why, "seqs %" PRIu64 "..%" PRIu64 " list more than %u "
                     "distinct contents, an archive's most: archive a shorter range (an "
                     "earlier --before)", a->from, a->to, AUDIT_ARCHDIR_CONTENTS_MAX);
            return -1;
        }
        /* at most 2 * AUDIT_ARCHDIR_CONTENTS_MAX hashes (64 MiB): past the cap's worth the
         * unique ones always leave room */
        if (a->nl >= a->capl / 2 && a->capl < 2 * (size_t)AUDIT_ARCHDIR_CONTENTS_MAX) {
            size_t nc = a->capl ? 2 * a->capl : 4096;
            void *p = realloc(a->lh, nc * sizeof *a->lh);
            if (!p) {
                snprintf(a->why, sizeof a->why, "out of memory for %zu content hashes", nc);
                return -1;
            }
            a->lh = p;
            a->capl = nc;
        }
    }
    memcpy(a->lh[a->nl++], h, AUDIT_CONTENT_HASH_LEN);
    return 0;
}

/* One record off the wire: decoded (untrusted), in its place, linked, its listed contents
 * noted, into the file. */
static int take_record(arch *a, const ProtobufCBinaryData *enc, const ProtobufCBinaryData *ch)
{
    audit_rec r;
    char why[256];
    if (audit_rec_decode(enc->data, enc->len, &r, why, sizeof why) != AOS_OK) {
        snprintf(a->why, sizeof a->why, "record %" PRIu64 " from aos-audit does not decode: "
                 "%s", a->next, why);
        return -1;
    }
    uint8_t cc[AUDIT_HASH_LEN];
    audit_chain_hash(r.prev_hash, enc->data, enc->len, cc);
    if (r.seq != a->next || memcmp(r.prev_hash, a->chain, AUDIT_HASH_LEN) ||
        ch->len != AUDIT_HASH_LEN || memcmp(cc, ch->data, AUDIT_HASH_LEN)) {
        snprintf(a->why, sizeof a->why, "record %" PRIu64 " does not continue the chain "
                 "(seq %" PRIu64 " came; run aosctl audit verify): nothing is archived",
                 a->next, r.seq);
        return -1;
    }
    /* the same reading of a body as the check's (and aos-audit's on emit) */
    int nl = audit_contents_listed(r.body, r.body_len, a->listed, AUDIT_CONTENTS_LIST_MAX);
    for (int i = 0; i < nl; i++)
        if (lh_add(a, a->listed[i]))
            return -1;
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

/* A MANIFEST line into the file and its running sum. */
static int manifest_put(arch *a, const uint8_t sha[AUDIT_HASH_LEN], const char *name)
{
    char line[AUDIT_ARCHDIR_LINE_MAX];
    char hex[2 * AUDIT_HASH_LEN + 1];
    aos_hex(sha, AUDIT_HASH_LEN, hex);
    int n = snprintf(line, sizeof line, "%s  %s\n", hex, name);
    crypto_hash_sha256_update(&a->msum, (const uint8_t *)line, (size_t)n);
    if (write_all(a->mfd, line, (size_t)n)) {
        snprintf(a->why, sizeof a->why, "cannot write %.400s/MANIFEST: %s", a->dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* Every listed content (a->lh, sorted and unique) from audit.contents into contents/<hex>,
 * re-hashed here: one the store lacks or altered is refused, nothing is archived. Each
 * batch's MANIFEST lines follow in hash order. */
static aos_err fetch_contents(arch *a)
{
    for (size_t at = 0; at < a->nl;) {
        size_t m = a->nl - at < FETCH_MAX ? a->nl - at : FETCH_MAX, left = m;
        uint8_t sha[FETCH_MAX][AUDIT_HASH_LEN];
        int done[FETCH_MAX] = {0};
        while (left) {
            ProtobufCBinaryData hs[FETCH_MAX];
            size_t idx[FETCH_MAX], k = 0;
            for (size_t i = 0; i < m; i++)
                if (!done[i]) {
                    hs[k] = (ProtobufCBinaryData){AUDIT_CONTENT_HASH_LEN, a->lh[at + i]};
                    idx[k++] = i;
                }
            Aos__Audit__ContentsRequest q = AOS__AUDIT__CONTENTS_REQUEST__INIT;
            q.n_hashes = k;
            q.hashes = hs;
            aos_reply r;
            aos_err e = ctl_call(a->c, NULL, "audit.contents", &q.base, &r);
            if (e != AOS_OK) {
                snprintf(a->why, sizeof a->why, "audit.contents: %.900s", r.error);
                aos_reply_clear(&r);
                return e;
            }
            Aos__Audit__ContentsReply *cr =
                aos__audit__contents_reply__unpack(NULL, r.payload_len, r.payload);
            aos_reply_clear(&r);
            if (!cr) {
                snprintf(a->why, sizeof a->why, "audit.contents: aos-audit sent a malformed "
                         "ContentsReply");
                return AOS_ERR_PROTO;
            }
            size_t got = 0;
            aos_err bad = AOS_OK;
            for (size_t j = 0; bad == AOS_OK && j < cr->n_contents; j++) {
                const Aos__Audit__Content *ct = cr->contents[j];
                size_t i = SIZE_MAX;
                for (size_t t = 0; t < k && i == SIZE_MAX; t++)
                    if (ct->hash.len == AUDIT_CONTENT_HASH_LEN && !done[idx[t]] &&
                        !memcmp(ct->hash.data, a->lh[at + idx[t]], AUDIT_CONTENT_HASH_LEN))
                        i = idx[t];
                if (i == SIZE_MAX || ct->body.len > AUDIT_CONTENT_MAX) {
                    snprintf(a->why, sizeof a->why, "audit.contents: aos-audit sent a content "
                             "that was not asked for, twice, or over 1 MiB");
                    bad = AOS_ERR_PROTO;
                    break;
                }
                char name[AUDIT_ARCHDIR_NAME_MAX];
                audit_archdir_content_name(a->lh[at + i], name);
                uint8_t h[AUDIT_CONTENT_HASH_LEN];
                audit_content_hash(ct->body.data, ct->body.len, h);
                if (memcmp(h, a->lh[at + i], sizeof h)) {
                    snprintf(a->why, sizeof a->why, "content %s, listed by a record of seqs %"
                             PRIu64 "..%" PRIu64 ", is altered in audit.contents (run aosctl "
                             "audit verify): nothing is archived", name + 9, a->from, a->to);
                    bad = AOS_ERR_CONFLICT;
                    break;
                }
                int fd = openat(a->cfd, name + 9,
                                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd < 0 || write_all(fd, ct->body.data, ct->body.len)) {
                    snprintf(a->why, sizeof a->why, "cannot write %.400s/%s: %s", a->dir, name,
                             strerror(errno));
                    if (fd >= 0)
                        close(fd);
                    bad = AOS_ERR_IO;
                    break;
                }
                close(fd); /* synced with the rest by one syncfs */
                crypto_hash_sha256(sha[i], ct->body.data, ct->body.len);
                done[i] = 1;
                left--;
                got++;
            }
            int truncated = cr->truncated;
            aos__audit__contents_reply__free_unpacked(cr, NULL);
            if (bad != AOS_OK)
                return bad;
            if (!truncated && left) {
                size_t i = 0;
                while (done[i])
                    i++;
                char name[AUDIT_ARCHDIR_NAME_MAX];
                audit_archdir_content_name(a->lh[at + i], name);
                snprintf(a->why, sizeof a->why, "content %s, listed by a record of seqs %" PRIu64
                         "..%" PRIu64 ", is not in audit.contents (run aosctl audit verify): "
                         "nothing is archived", name + 9, a->from, a->to);
                return AOS_ERR_CONFLICT;
            }
            if (truncated && !got) {
                snprintf(a->why, sizeof a->why, "audit.contents: a truncated reply with no "
                         "content");
                return AOS_ERR_PROTO;
            }
        }
        for (size_t i = 0; i < m; i++) {
            char name[AUDIT_ARCHDIR_NAME_MAX];
            audit_archdir_content_name(a->lh[at + i], name);
            if (manifest_put(a, sha[i], name))
                return AOS_ERR_IO;
        }
        at += m;
    }
    return AOS_OK;
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
    return json_pack("{s:i,s:I,s:I,s:o,s:o,s:o}", "version", AUDIT_ARCHDIR_VERSION, "from_seq",
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
    a->dfd = a->rfd = a->cfd = a->mfd = -1;
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
    /* 3. the records, checked as they come against the chain aos-audit stored, their
     * listed contents noted */
    crypto_hash_sha256_init(&a->rsum);
    memcpy(a->chain, a->base_chain, AUDIT_HASH_LEN);
    a->next = a->from;
    if ((e = export_all(a)) != AOS_OK) {
        rc = ctl_fail(c, e, "%s", a->why);
        goto out;
    }
    lh_unique(a);
    if (a->nl > AUDIT_ARCHDIR_CONTENTS_MAX) {
        rc = ctl_fail(c, AOS_ERR_TOO_BIG, "seqs %" PRIu64 "..%" PRIu64 " list %zu distinct "
                      "contents, more than an archive's %u: archive a shorter range (an earlier "
                      "--before)", a->from, a->to, a->nl, AUDIT_ARCHDIR_CONTENTS_MAX);
        goto out;
    }
    /* 4. head.json, then the contents with the MANIFEST that names every file */
    json_t *hd = head_doc(a);
    char *htext = hd ? json_dumps(hd, JSON_INDENT(2)) : NULL;
    json_decref(hd);
    if (!htext) {
        rc = ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    int wbad = put_file(a, "head.json", htext, strlen(htext));
    uint8_t hs[AUDIT_HASH_LEN], rs[AUDIT_HASH_LEN];
    crypto_hash_sha256(hs, (const uint8_t *)htext, strlen(htext));
    free(htext);
    if (wbad) {
        rc = ctl_fail(c, AOS_ERR_IO, "%s", a->why);
        goto out;
    }
    crypto_hash_sha256_final(&a->rsum, rs);
    crypto_hash_sha256_init(&a->msum);
    if (mkdirat(a->dfd, "contents", 0700) != 0 ||
        (a->cfd = openat(a->dfd, "contents", O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                                 O_CLOEXEC)) < 0 ||
        (a->mfd = openat(a->dfd, "MANIFEST", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                                                 O_CLOEXEC, 0600)) < 0) {
        rc = ctl_fail(c, AOS_ERR_IO, "cannot make %s/contents and MANIFEST: %s", a->dir,
                      strerror(errno));
        goto out;
    }
    if (manifest_put(a, rs, "records") || manifest_put(a, hs, "head.json")) {
        rc = ctl_fail(c, AOS_ERR_IO, "%s", a->why);
        goto out;
    }
    if ((e = fetch_contents(a)) != AOS_OK) {
        rc = ctl_fail(c, e, "%s", a->why);
        goto out;
    }
    /* every file of the archive on the disk before the cut is asked for */
    if (syncfs(a->dfd) != 0 || fsync(a->rfd) != 0 || fsync(a->mfd) != 0 ||
        fsync(a->cfd) != 0 || fsync(a->dfd) != 0) {
        rc = ctl_fail(c, AOS_ERR_IO, "cannot sync the archive in %s: %s", a->dir,
                      strerror(errno));
        goto out;
    }
    uint8_t digest[AUDIT_HASH_LEN];
    char mhex[2 * AUDIT_HASH_LEN + 1];
    crypto_hash_sha256_final(&a->msum, digest);
    aos_hex(digest, AUDIT_HASH_LEN, mhex);
    /* 5. what is on the disk, read back and checked as check-archive does: only an
     * archive that proves itself lets the range go */
    audit_archcheck *ck = malloc(sizeof *ck);
    if (!ck) {
        rc = ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
        goto out;
    }
    e = audit_archdir_check(a->dfd, a->pk, ck, a->why, sizeof a->why);
    int same = e == AOS_OK && !memcmp(ck->manifest_sha, digest, AUDIT_HASH_LEN) &&
               ck->records == a->to - a->from + 1 && ck->contents == a->nl;
    const char *failed = ck->failed;
    free(ck);
    if (e != AOS_OK) {
        rc = ctl_fail(c, e, "the archive written to %s does not check out (%s): %s; nothing "
                      "is dropped", a->dir, failed ? failed : aos_err_name(e), a->why);
        goto out;
    }
    if (!same) {
        rc = ctl_fail(c, AOS_ERR_CONFLICT, "the archive written to %s reads back other than "
                      "it was written (another writer in the directory?): nothing is dropped",
                      a->dir);
        goto out;
    }
    /* 6. the cut recorded and sealed, then the range dropped (by aos-audit) */
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
            c, json_pack("{s:I,s:I,s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:o}", "from_seq",
                         (json_int_t)a->from, "to_seq", (json_int_t)a->to, "records",
                         (json_int_t)(a->to - a->from + 1), "contents", (json_int_t)a->nl,
                         "out", a->dir, "manifest_sha256",
                         mhex, "bytes", (json_int_t)a->bytes, "archive_seq", (json_int_t)aseq,
                         "dropped", (json_int_t)dropped, "sealed_by", (json_int_t)sealed,
                         "head", audit_head_json(&a->head, a->pk)));
    } else {
        printf("archived seqs %" PRIu64 "..%" PRIu64 " (%" PRIu64 " records, %" PRIu64
               " bytes, %zu contents) to %s with the signed head of size %" PRIu64 "\n"
               "MANIFEST sha256 %s\nthe cut is archive record %" PRIu64 " (sealed by the head "
               "of size %" PRIu64 "); %" PRIu64 " records dropped from the log, and the "
               "contents only they listed\n",
               a->from, a->to, a->to - a->from + 1, a->bytes, a->nl, a->dir, a->to, mhex, aseq,
               sealed, dropped);
    }
out:
    if (a->rfd >= 0)
        close(a->rfd);
    if (a->dfd >= 0)
        close(a->dfd);
    if (a->cfd >= 0)
        close(a->cfd);
    if (a->mfd >= 0)
        close(a->mfd);
    free(a->lh);
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
    "\"contents\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"distinct "
    "contents the records list, in contents/\"},"
    "\"bytes\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the records file\"},"
    "\"out\":{\"type\":\"string\",\"description\":\"the archive directory (records, "
    "head.json, contents/, MANIFEST)\"},"
    "\"manifest_sha256\":{\"type\":\"string\",\"pattern\":\"^[0-9a-f]{64}$\","
    "\"description\":\"kept in the archive record\"},"
    "\"archive_seq\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"the record "
    "that declares the gap\"},"
    "\"dropped\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"records deleted "
    "now\"},"
    "\"sealed_by\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the tree size "
    "of the head that covers the archive record\"},"
    "\"head\":{\"type\":\"object\",\"description\":\"the signed head of the cut\"}}}";

/* ---- audit check-archive -------------------------------------------------------------- */

static int cmd_check_archive(ctl_ctx *c, const ctl_vals *v)
{
    const char *dir = ctl_str(v, "DIR"), *key = ctl_str(v, "--key");
    uint8_t pin[AUDIT_PK_LEN];
    if (key && aos_unhex(key, strlen(key), pin, sizeof pin) != 0) /* checked by the table */
        return ctl_fail(c, AOS_ERR_INTERNAL, "--key passed its check but is not hex");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ctl_fail(c, ctl_errno_err(errno), "cannot open the archive directory %s: %s",
                        dir, strerror(errno));
    audit_archcheck *k = malloc(sizeof *k);
    if (!k) {
        close(dfd);
        return ctl_fail(c, AOS_ERR_NOMEM, "out of memory");
    }
    char why[1024] = "";
    aos_err e = audit_archdir_check(dfd, key ? pin : NULL, k, why, sizeof why);
    close(dfd);
    if (e != AOS_OK && e != AOS_ERR_CONFLICT) {
        free(k);
        return ctl_fail(c, e, "%s: %s", dir, why);
    }
    int rc = e == AOS_OK ? 0 : 1;
    char mhex[2 * AUDIT_HASH_LEN + 1] = "", hhex[2 * AUDIT_CONTENT_HASH_LEN + 1] = "";
    if (k->have_manifest_sha)
        aos_hex(k->manifest_sha, AUDIT_HASH_LEN, mhex);
    if (k->has_hash)
        aos_hex(k->hash, AUDIT_CONTENT_HASH_LEN, hhex);
    if (c->json) {
        json_t *head = k->have_head ? audit_head_json(&k->h.head, k->h.pk) : json_null();
        int prc = ctl_print_json(c, json_pack(
            "{s:b,s:s,s:s,s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:o,s:b}", "valid", rc == 0,
            "failed", k->failed ? k->failed : "", "why", rc ? why : "", "file", k->file,
            "seq", (json_int_t)k->seq, "hash", hhex, "version", (json_int_t)k->h.version,
            "from_seq", (json_int_t)k->h.from, "to_seq", (json_int_t)k->h.to, "records",
            (json_int_t)k->records, "contents", (json_int_t)k->contents, "bytes",
            (json_int_t)k->bytes, "manifest_sha256", mhex, "head", head, "key_pinned",
            key != NULL));
        rc = prc ? prc : rc;
    } else if (rc) {
        printf("INVALID (%s): %s\n", k->failed, why);
    } else {
        char pk[2 * AUDIT_PK_LEN + 1];
        aos_hex(k->h.pk, AUDIT_PK_LEN, pk);
        printf("archive %s holds: seqs %" PRIu64 "..%" PRIu64 " (%" PRIu64 " records), %" PRIu64
               " contents%s, under the signed head of size %" PRIu64 " by key %s%s\n"
               "MANIFEST sha256 %s (the archive record in the log names it)\n",
               dir, k->h.from, k->h.to, k->records, k->contents,
               k->h.version < 2 ? " (a version-1 archive: its contents were not carried)" : "",
               k->h.head.tree_size, pk, key ? " (pinned)" : "", mhex);
    }
    free(k);
    return rc;
}

static const char check_archive_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
    "\"type\":\"object\",\"description\":\"whether the archive directory proves itself: "
    "exit 0 when it does, 1 when a check fails\","
    "\"required\":[\"valid\",\"failed\",\"why\",\"file\",\"seq\",\"hash\",\"records\","
    "\"contents\",\"manifest_sha256\",\"head\",\"key_pinned\"],\"properties\":{"
    "\"valid\":{\"type\":\"boolean\"},"
    "\"failed\":{\"enum\":[\"\",\"manifest\",\"head\",\"key\",\"signature\",\"records\","
    "\"chain\",\"tree\",\"content\"],\"description\":\"the first check that failed\"},"
    "\"why\":{\"type\":\"string\"},"
    "\"file\":{\"type\":\"string\",\"description\":\"the file at fault (MANIFEST, "
    "head.json, records, contents/HEX), empty for none\"},"
    "\"seq\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the record "
    "concerned (for a content: the first that lists it), 0 for none\"},"
    "\"hash\":{\"type\":\"string\",\"pattern\":\"^([0-9a-f]{64})?$\",\"description\":"
    "\"the content concerned (BLAKE2b-256), empty for none\"},"
    "\"version\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"head.json's (1: "
    "no contents carried)\"},"
    "\"from_seq\":{\"type\":\"integer\",\"minimum\":0},"
    "\"to_seq\":{\"type\":\"integer\",\"minimum\":0},"
    "\"records\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"records that "
    "checked out\"},"
    "\"contents\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"contents that "
    "checked out\"},"
    "\"bytes\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the records file "
    "read\"},"
    "\"manifest_sha256\":{\"type\":\"string\",\"pattern\":\"^([0-9a-f]{64})?$\","
    "\"description\":\"compare with the digest audit verify names for the declared gap\"},"
    "\"head\":{\"type\":[\"object\",\"null\"],\"description\":\"the signed head in "
    "head.json\"},"
    "\"key_pinned\":{\"type\":\"boolean\"}}}";

static const ctl_arg check_archive_args[] = {
    {.name = "DIR", .required = 1, .check = check_dir,
     .summary = "an archive directory that audit archive wrote"},
    {.name = "--key", .value = "HEX", .pattern = "^[0-9a-fA-F]{64}$",
     .check = ctl_check_audit_key,
     .summary = "the log's public key, kept elsewhere: the head must be signed by it "
                "(default: trust the key in head.json)"},
};

static const ctl_arg archive_args[] = {
    {.name = "--before", .value = "T", .check = check_before,
     .summary = "(needed) archive the records before T: a seq, or an RFC 3339 time; the cut is the "
                "last signed head at or before it"},
    {.name = "--out", .value = "DIR", .check = check_dir,
     .summary = "write the archive here (new or empty; default DATA/audit-archive/FROM-TO)"},
};

static const ctl_cmd archive_cmds[] = {
    {"audit archive", "export the records before T with the signed head that covers them "
     "and the contents they list (records, head.json, contents/, MANIFEST), check them, "
     "then record the cut and drop them from the log: audit verify then reports a declared "
     "gap", CTL_ARGS(archive_args), archive_out, cmd_archive},
    {"audit check-archive", "check an archive directory offline, from its files alone: "
     "MANIFEST, the signed head, the chain and tree of its records, every content they list; "
     "exit 1 names the first failure and its file", CTL_ARGS(check_archive_args),
     check_archive_out, cmd_check_archive},
};

const ctl_group ctl_group_audit_archive = {archive_cmds,
                                           sizeof archive_cmds / sizeof archive_cmds[0]};
