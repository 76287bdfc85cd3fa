/* The audit log verifier: re-encodes each stored record, checks seq order, the chain and
 * the tree against the signed heads, and classifies the first break (rules in verify.h). */
#include "verify.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

typedef uint8_t hash_t[AUDIT_HASH_LEN];

const char *audit_find_name(audit_find f)
{
    switch (f) {
    case AUDIT_FIND_OK: return "ok";
    case AUDIT_FIND_DECLARED_GAP: return "declared_gap";
    case AUDIT_FIND_ALTERED: return "altered";
    case AUDIT_FIND_DELETED: return "deleted";
    case AUDIT_FIND_INSERTED: return "inserted";
    case AUDIT_FIND_REORDERED: return "reordered";
    case AUDIT_FIND_TRUNCATED: return "truncated";
    case AUDIT_FIND_BAD_HEAD: return "bad_head";
    }
    return "?";
}

/* ---- archive bodies ---- */

aos_err audit_archive_encode(const uint8_t chain[AUDIT_HASH_LEN], const audit_tree *at_to,
                             uint8_t *out, size_t cap, size_t *len, char *why, size_t whylen)
{
    if (!chain || !at_to || !out || !len) {
        WHY("audit_archive_encode: NULL argument");
        return AOS_ERR_USAGE;
    }
    uint64_t to = audit_tree_size(at_to);
    if (to == 0) {
        WHY("an archive declares at least record 1 dropped");
        return AOS_ERR_USAGE;
    }
    size_t n = (size_t)__builtin_popcountll(to);
    size_t need = 1 + 8 + AUDIT_HASH_LEN + 1 + n * AUDIT_HASH_LEN;
    if (need > cap) {
        WHY("an archive body needs %zu bytes, buffer has %zu", need, cap);
        return AOS_ERR_TOO_BIG;
    }
    uint8_t *p = out;
    *p++ = AUDIT_ARCHIVE_VERSION;
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(to >> (8 * i));
    memcpy(p, chain, AUDIT_HASH_LEN);
    p += AUDIT_HASH_LEN;
    *p++ = (uint8_t)n;
    audit_tree_frontier(at_to, (uint8_t(*)[AUDIT_HASH_LEN])p, n);
    *len = need;
    return AOS_OK;
}

aos_err audit_archive_decode(const uint8_t *b, size_t len, audit_archive *a, char *why,
                             size_t whylen)
{
    if (!a || (!b && len)) {
        WHY("audit_archive_decode: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (len < 1 + 8 + AUDIT_HASH_LEN + 1) {
        WHY("an archive body of %zu bytes is cut short", len);
        return AOS_ERR_PROTO;
    }
    if (b[0] != AUDIT_ARCHIVE_VERSION && b[0] != AUDIT_ARCHIVE_VERSION2) {
        WHY("archive body version %u (this build reads 1 and 2)", b[0]);
        return AOS_ERR_PROTO;
    }
    uint64_t to = 0;
    for (int i = 1; i <= 8; i++)
        to = to << 8 | b[i];
    size_t n = b[1 + 8 + AUDIT_HASH_LEN];
    if (to == 0 || n != (size_t)__builtin_popcountll(to)) {
        WHY("an archive to seq %llu with %zu subtree hashes", (unsigned long long)to, n);
        return AOS_ERR_PROTO;
    }
    size_t base = 1 + 8 + AUDIT_HASH_LEN + 1 + n * AUDIT_HASH_LEN;
    if (len != base + (b[0] == AUDIT_ARCHIVE_VERSION2 ? AUDIT_ARCHIVE_V2_TAIL : 0)) {
        WHY("an archive body of %zu bytes for %zu subtree hashes", len, n);
        return AOS_ERR_PROTO;
    }
    memset(a, 0, sizeof *a);
    a->version = b[0];
    a->archived_to = to;
    memcpy(a->chain, b + 9, AUDIT_HASH_LEN);
    a->n = n;
    memcpy(a->frontier, b + 1 + 8 + AUDIT_HASH_LEN + 1, n * AUDIT_HASH_LEN);
    if (a->version == AUDIT_ARCHIVE_VERSION2) {
        const uint8_t *p = b + base;
        for (int i = 0; i < 8; i++)
            a->archived_from = a->archived_from << 8 | *p++;
        memcpy(a->digest, p, AUDIT_HASH_LEN);
        p += AUDIT_HASH_LEN;
        for (int i = 0; i < 8; i++)
            a->head_time_ns = a->head_time_ns << 8 | *p++;
        memcpy(a->head_sig, p, AUDIT_SIG_LEN);
        if (a->archived_from < 1 || a->archived_from > to) {
            WHY("an archive of seqs %llu..%llu", (unsigned long long)a->archived_from,
                (unsigned long long)to);
            return AOS_ERR_PROTO;
        }
    }
    return AOS_OK;
}

aos_err audit_archive_encode_v2(const audit_archive *a, uint8_t *out, size_t cap, size_t *len,
                                char *why, size_t whylen)
{
    if (!a || !out || !len) {
        WHY("audit_archive_encode_v2: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (a->archived_to == 0 || a->n != (size_t)__builtin_popcountll(a->archived_to) ||
        a->archived_from < 1 || a->archived_from > a->archived_to) {
        WHY("an archive of seqs %llu..%llu with %zu subtree hashes",
            (unsigned long long)a->archived_from, (unsigned long long)a->archived_to, a->n);
        return AOS_ERR_USAGE;
    }
    size_t need = 1 + 8 + AUDIT_HASH_LEN + 1 + a->n * AUDIT_HASH_LEN + AUDIT_ARCHIVE_V2_TAIL;
    if (need > cap) {
        WHY("an archive body needs %zu bytes, buffer has %zu", need, cap);
        return AOS_ERR_TOO_BIG;
    }
    uint8_t *p = out;
    *p++ = AUDIT_ARCHIVE_VERSION2;
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(a->archived_to >> (8 * i));
    memcpy(p, a->chain, AUDIT_HASH_LEN);
    p += AUDIT_HASH_LEN;
    *p++ = (uint8_t)a->n;
    memcpy(p, a->frontier, a->n * AUDIT_HASH_LEN);
    p += a->n * AUDIT_HASH_LEN;
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(a->archived_from >> (8 * i));
    memcpy(p, a->digest, AUDIT_HASH_LEN);
    p += AUDIT_HASH_LEN;
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(a->head_time_ns >> (8 * i));
    memcpy(p, a->head_sig, AUDIT_SIG_LEN);
    *len = need;
    return AOS_OK;
}

/* ---- the verifier ---- */

/* One stored record, re-encoded. */
typedef struct {
    uint8_t *enc;
    size_t len;
    int enc_ok; /* its fields encode at all (a tampered field may be over a cap) */
    uint64_t seq;
    hash_t prev, sc, cc; /* its prev_hash, its stored and its recomputed chain hash */
} slot;

struct audit_verifier {
    uint8_t pk[AUDIT_PK_LEN];
    const audit_sth *heads;
    size_t nheads, hi; /* heads[hi] is the next to check */
    audit_tree *tree;
    slot s[2];
    int have_cur, cur; /* s[cur] waits for its lookahead */
    int started, finished, settled;
    uint64_t base;     /* records 1..base are declared archived */
    uint64_t pseq;     /* last accepted seq */
    hash_t cp, cpp;    /* chain hash of pseq and of the one before */
    int have_pp;
    int has_arch, declared, arch_seen;
    audit_archive arch;
    uint64_t arch_seq;
    hash_t arch_leaf;
    int pending; /* a seq gap: DELETED unless a missing seq turns up */
    uint64_t gap0, gap1;
    uint64_t last_ok_head;
    audit_finding f;
};

static void settle(audit_verifier *v, audit_find kind, uint64_t seq, uint64_t seq_end,
                   uint64_t head, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void settle(audit_verifier *v, audit_find kind, uint64_t seq, uint64_t seq_end,
                   uint64_t head, const char *fmt, ...)
{
    v->settled = 1;
    v->f.kind = kind;
    v->f.seq = seq;
    v->f.seq_end = seq_end;
    v->f.head_size = head;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->f.what, sizeof v->f.what, fmt, ap);
    va_end(ap);
}

static int heq(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, AUDIT_HASH_LEN) == 0; /* public values: no need for constant time */
}

aos_err audit_verify_new(const uint8_t pk[AUDIT_PK_LEN], const audit_sth *heads,
                         size_t nheads, const audit_rec *archive, audit_verifier **out,
                         char *why, size_t whylen)
{
    if (!pk || !out || (nheads && !heads)) {
        WHY("audit_verify_new: NULL argument");
        return AOS_ERR_USAGE;
    }
    *out = NULL;
    for (size_t i = 1; i < nheads; i++)
        if (heads[i].tree_size < heads[i - 1].tree_size) {
            WHY("the heads are not sorted by tree size (at %zu)", i);
            return AOS_ERR_USAGE;
        }
    aos_err e = AOS_ERR_NOMEM;
    audit_verifier *v = calloc(1, sizeof *v);
    if (!v) {
        WHY("out of memory for a verifier");
        return AOS_ERR_NOMEM;
    }
    memcpy(v->pk, pk, AUDIT_PK_LEN);
    v->heads = heads;
    v->nheads = nheads;
    if ((e = audit_tree_new(&v->tree, why, whylen)) != AOS_OK)
        goto fail;
    for (int i = 0; i < 2; i++)
        if (!(v->s[i].enc = malloc(AUDIT_REC_MAX))) {
            WHY("out of memory for record buffers");
            e = AOS_ERR_NOMEM;
            goto fail;
        }
    if (archive) {
        if (archive->kind_len != 7 || memcmp(archive->kind, "archive", 7) != 0) {
            WHY("the archive record (seq %llu) is not of kind archive",
                (unsigned long long)archive->seq);
            e = AOS_ERR_PROTO;
            goto fail;
        }
        if ((e = audit_archive_decode(archive->body, archive->body_len, &v->arch, why,
                                      whylen)) != AOS_OK)
            goto fail;
        if (v->arch.archived_to >= archive->seq) {
            WHY("the archive record (seq %llu) declares seqs up to %llu archived",
                (unsigned long long)archive->seq, (unsigned long long)v->arch.archived_to);
            e = AOS_ERR_PROTO;
            goto fail;
        }
        size_t len;
        if ((e = audit_rec_encode(archive, v->s[0].enc, AUDIT_REC_MAX, &len, why, whylen)) !=
            AOS_OK) {
            e = AOS_ERR_PROTO;
            goto fail;
        }
        audit_leaf_hash(v->s[0].enc, len, v->arch_leaf);
        v->arch_seq = archive->seq;
        v->has_arch = 1;
    }
    *out = v;
    return AOS_OK;
fail:
    audit_verify_free(v);
    return e;
}

void audit_verify_free(audit_verifier *v)
{
    if (!v)
        return;
    audit_tree_free(v->tree);
    free(v->s[0].enc);
    free(v->s[1].enc);
    free(v);
}

/* Check every head of a size up to upto (which the tree has reached): its signature,
 * then its root. */
static void check_heads(audit_verifier *v, uint64_t upto)
{
    while (!v->settled && v->hi < v->nheads && v->heads[v->hi].tree_size <= upto) {
        const audit_sth *h = &v->heads[v->hi++];
        if (h->tree_size < v->base) {
            v->f.heads_skipped++;
            continue;
        }
        char why[128];
        if (audit_sth_verify(h, v->pk, why, sizeof why) != AOS_OK) {
            settle(v, AUDIT_FIND_BAD_HEAD, h->tree_size, h->tree_size, h->tree_size,
                   "signed head of size %llu: %s", (unsigned long long)h->tree_size, why);
            return;
        }
        hash_t root;
        audit_tree_root(v->tree, root);
        if (!heq(root, h->root)) {
            uint64_t from = v->last_ok_head > v->base ? v->last_ok_head : v->base;
            settle(v, AUDIT_FIND_BAD_HEAD, from + 1, h->tree_size, h->tree_size,
                   "the records do not give the root signed at size %llu: some record "
                   "in seqs %llu..%llu differs from what was signed",
                   (unsigned long long)h->tree_size, (unsigned long long)(from + 1),
                   (unsigned long long)h->tree_size);
            return;
        }
        v->f.heads_checked++;
        v->last_ok_head = h->tree_size;
    }
}

/* The first record decides where the log starts: at 1, or after a declared archive. */
static void start(audit_verifier *v, uint64_t first_seq)
{
    v->started = 1;
    if (v->has_arch && first_seq > v->arch.archived_to) {
        char why[128];
        if (audit_tree_restore(v->tree, v->arch.archived_to,
                               (const uint8_t(*)[AUDIT_HASH_LEN])v->arch.frontier, v->arch.n,
                               why, sizeof why) == AOS_OK) {
            v->base = v->arch.archived_to;
            memcpy(v->cp, v->arch.chain, AUDIT_HASH_LEN);
            v->declared = 1;
        }
        /* version 2 names the head at the cut: its root is the frontier's, so its
         * signature vouches that the archived range is the one the log signed */
        if (v->declared && v->arch.version == AUDIT_ARCHIVE_VERSION2) {
            audit_sth h = {.tree_size = v->base, .time_ns = v->arch.head_time_ns};
            audit_tree_root(v->tree, h.root);
            memcpy(h.sig, v->arch.head_sig, AUDIT_SIG_LEN);
            if (audit_sth_verify(&h, v->pk, why, sizeof why) != AOS_OK) {
                settle(v, AUDIT_FIND_BAD_HEAD, v->base, v->base, v->base,
                       "the head of size %llu that archive record %llu names is not signed "
                       "by the log's key: %s",
                       (unsigned long long)v->base, (unsigned long long)v->arch_seq, why);
                return;
            }
        }
    }
    v->pseq = v->base;
    check_heads(v, v->base);
}

/* The chain hash of s with one field patched in place (and put back): what it would be
 * had the forger changed only that field. */
static void probe(slot *s, size_t off, const uint8_t *val, size_t n, const uint8_t *prev,
                  uint8_t out[AUDIT_HASH_LEN])
{
    uint8_t keep[AUDIT_HASH_LEN];
    memcpy(keep, s->enc + off, n);
    memcpy(s->enc + off, val, n);
    audit_chain_hash(prev, s->enc, s->len, out);
    memcpy(s->enc + off, keep, n);
}

static void accept(audit_verifier *v, slot *c)
{
    hash_t leaf;
    audit_leaf_hash(c->enc, c->len, leaf);
    if (v->has_arch && c->seq == v->arch_seq) {
        if (!heq(leaf, v->arch_leaf)) {
            settle(v, AUDIT_FIND_ALTERED, c->seq, c->seq, 0,
                   "record %llu is not the archive record the check was given",
                   (unsigned long long)c->seq);
            return;
        }
        v->arch_seen = 1;
    }
    /* a head at the size before waited for this record: had this one shown that one was
     * changed, the chain would name the record, which says more than a root mismatch */
    check_heads(v, audit_tree_size(v->tree));
    if (v->settled)
        return;
    audit_tree_append(v->tree, leaf, NULL, 0);
    memcpy(v->cpp, v->cp, AUDIT_HASH_LEN);
    memcpy(v->cp, c->cc, AUDIT_HASH_LEN);
    v->have_pp = 1;
    v->pseq = c->seq;
    v->f.records++;
}

#define U(x) ((unsigned long long)(x))

/* Decide on record c, knowing the one after it (n, or NULL at the end). */
static void process(audit_verifier *v, slot *c, const slot *n)
{
    if (v->settled)
        return;
    if (v->pending) { /* only a missing seq turning up can change DELETED now */
        if (c->seq >= v->gap0 && c->seq <= v->gap1)
            settle(v, AUDIT_FIND_REORDERED, v->gap0, v->gap0, 0,
                   "seq %llu is stored out of order (after seq %llu)", U(v->gap0),
                   U(v->gap1 + 1));
        return;
    }
    if (!v->started) {
        start(v, c->seq);
        if (v->settled)
            return;
    }
    uint64_t want = v->pseq + 1;
    if (c->seq > want) {
        v->pending = 1;
        v->gap0 = want;
        v->gap1 = c->seq - 1;
        return;
    }
    if (c->seq < want) {
        settle(v, AUDIT_FIND_INSERTED, c->seq, c->seq, 0,
               "a second record claims seq %llu (stored after seq %llu)", U(c->seq),
               U(v->pseq));
        return;
    }
    int S = c->enc_ok && heq(c->cc, c->sc);
    int L = heq(c->prev, v->cp);
    uint64_t s = c->seq, p = v->pseq;
    if (S && L) {
        accept(v, c);
        return;
    }
    if (!L && n && heq(n->prev, v->cp)) {
        if (heq(n->sc, c->prev))
            settle(v, AUDIT_FIND_REORDERED, s, s + 1, 0,
                   "records %llu and %llu are swapped", U(s), U(s + 1));
        else
            settle(v, AUDIT_FIND_INSERTED, s, s, 0,
                   "record %llu does not link to %llu, and the next links past it: it was "
                   "put in", U(s), U(p));
        return;
    }
    if (!S && L) {
        settle(v, AUDIT_FIND_ALTERED, s, s, 0,
               c->enc_ok ? "record %llu no longer matches its chain hash"
                         : "record %llu has a field no record can have", U(s));
        return;
    }
    if (S) { /* self-consistent but not linked */
        if (p == v->base)
            settle(v, AUDIT_FIND_ALTERED, s, s, 0,
                   v->declared ? "record %llu does not link to the archived chain"
                               : "record %llu does not start the chain", U(s));
        else if (v->have_pp && heq(c->prev, v->cpp))
            settle(v, AUDIT_FIND_INSERTED, p, p, 0,
                   "record %llu links past %llu: %llu was put in", U(s), U(p), U(p));
        else if (n && heq(n->prev, c->sc))
            settle(v, AUDIT_FIND_ALTERED, p, p, 0,
                   "record %llu no longer matches the prev_hash of %llu", U(p), U(s));
        else if (n)
            settle(v, AUDIT_FIND_REORDERED, s, s, 0,
                   "record %llu links neither to %llu nor from %llu: it belongs elsewhere",
                   U(s), U(p), U(s + 1));
        else
            settle(v, AUDIT_FIND_INSERTED, s, s, 0,
                   "the last record %llu does not link to %llu", U(s), U(p));
        return;
    }
    /* neither matches its chain hash nor links */
    hash_t h;
    if (c->enc_ok) {
        probe(c, c->len - AUDIT_HASH_LEN, v->cp, AUDIT_HASH_LEN, v->cp, h);
        if (heq(h, c->sc)) {
            settle(v, AUDIT_FIND_ALTERED, s, s, 0, "the prev_hash of record %llu was changed",
                   U(s));
            return;
        }
    }
    if (v->have_pp && heq(c->prev, v->cpp)) {
        settle(v, AUDIT_FIND_INSERTED, p, p, 0,
               "record %llu (renumbered) links past %llu: %llu was put in", U(s), U(p), U(p));
        return;
    }
    if (n && heq(n->sc, c->prev)) {
        settle(v, AUDIT_FIND_REORDERED, s, s + 1, 0, "records %llu and %llu are swapped",
               U(s), U(s + 1));
        return;
    }
    if (c->enc_ok && s < UINT64_MAX) {
        uint8_t be[8];
        for (int i = 0; i < 8; i++)
            be[i] = (uint8_t)((s + 1) >> (8 * (7 - i)));
        probe(c, AUDIT_REC_SEQ_OFF, be, 8, c->prev, h);
        if (heq(h, c->sc)) {
            settle(v, AUDIT_FIND_DELETED, s, s, 0,
                   "record %llu was deleted and the later ones renumbered", U(s));
            return;
        }
    }
    if (n)
        settle(v, AUDIT_FIND_REORDERED, s, s, 0,
               "record %llu neither matches its chain hash nor links to %llu: it belongs "
               "elsewhere", U(s), U(p));
    else
        settle(v, AUDIT_FIND_INSERTED, s, s, 0,
               "the last record %llu neither matches its chain hash nor links to %llu", U(s),
               U(p));
}

aos_err audit_verify_add(audit_verifier *v, const audit_rec *r,
                         const uint8_t chain[AUDIT_HASH_LEN], char *why, size_t whylen)
{
    if (!v || !r || !chain) {
        WHY("audit_verify_add: NULL argument");
        return AOS_ERR_USAGE;
    }
    if (v->finished) {
        WHY("audit_verify_add after finish");
        return AOS_ERR_USAGE;
    }
    if (v->settled)
        return AOS_OK;
    int ni = v->have_cur ? !v->cur : v->cur;
    slot *s = &v->s[ni];
    s->seq = r->seq;
    memcpy(s->prev, r->prev_hash, AUDIT_HASH_LEN);
    memcpy(s->sc, chain, AUDIT_HASH_LEN);
    s->enc_ok = audit_rec_encode(r, s->enc, AUDIT_REC_MAX, &s->len, NULL, 0) == AOS_OK;
    if (s->enc_ok)
        audit_chain_hash(s->prev, s->enc, s->len, s->cc);
    if (v->have_cur)
        process(v, &v->s[v->cur], s);
    v->cur = ni;
    v->have_cur = 1;
    return AOS_OK;
}

int audit_verify_settled(const audit_verifier *v)
{
    return v->settled;
}

aos_err audit_verify_finish(audit_verifier *v, audit_finding *f)
{
    if (!v || !f)
        return AOS_ERR_USAGE;
    if (!v->finished) {
        v->finished = 1;
        if (v->have_cur)
            process(v, &v->s[v->cur], NULL);
        if (!v->settled && v->pending)
            settle(v, AUDIT_FIND_DELETED, v->gap0, v->gap1, 0,
                   v->gap0 == v->gap1 ? "record %llu is missing"
                                      : "records %llu..%llu are missing",
                   U(v->gap0), U(v->gap1));
        if (!v->settled && !v->started)
            start(v, 1);
        if (!v->settled && !v->pending)
            check_heads(v, audit_tree_size(v->tree));
        if (!v->settled && v->hi < v->nheads) {
            uint64_t size = v->heads[v->nheads - 1].tree_size;
            settle(v, AUDIT_FIND_TRUNCATED, v->pseq + 1, size, size,
                   "the log ends at seq %llu, before the signed head of size %llu",
                   U(v->pseq), U(size));
        }
        if (!v->settled && v->declared) {
            if (!v->arch_seen || v->last_ok_head < v->arch_seq)
                settle(v, AUDIT_FIND_DELETED, 1, v->base, 0,
                       "records 1..%llu are gone, and no signed head covers the archive "
                       "record (seq %llu) that declares them", U(v->base), U(v->arch_seq));
            else if (v->arch.version == AUDIT_ARCHIVE_VERSION2) {
                char dg[2 * AUDIT_HASH_LEN + 1];
                sodium_bin2hex(dg, sizeof dg, v->arch.digest, AUDIT_HASH_LEN);
                settle(v, AUDIT_FIND_DECLARED_GAP, 1, v->base, 0,
                       "records 1..%llu were archived (declared by record %llu; the last "
                       "archive holds %llu..%llu with the head of size %llu, MANIFEST "
                       "sha256 %s)",
                       U(v->base), U(v->arch_seq), U(v->arch.archived_from), U(v->base),
                       U(v->base), dg);
            } else
                settle(v, AUDIT_FIND_DECLARED_GAP, 1, v->base, 0,
                       "records 1..%llu were archived (declared by record %llu)", U(v->base),
                       U(v->arch_seq));
        }
        if (!v->settled)
            snprintf(v->f.what, sizeof v->f.what, "%llu records and %llu signed heads check "
                     "out", U(v->f.records), U(v->f.heads_checked));
    }
    *f = v->f;
    return AOS_OK;
}

aos_err audit_verify_run(const uint8_t pk[AUDIT_PK_LEN], const audit_sth *heads,
                         size_t nheads, const audit_rec *archive, audit_rec_next_fn next,
                         void *arg, audit_finding *f, char *why, size_t whylen)
{
    if (!next || !f) {
        WHY("audit_verify_run: NULL argument");
        return AOS_ERR_USAGE;
    }
    audit_verifier *v;
    aos_err e = audit_verify_new(pk, heads, nheads, archive, &v, why, whylen);
    if (e != AOS_OK)
        return e;
    audit_rec r;
    hash_t chain;
    while (!audit_verify_settled(v)) {
        e = next(arg, &r, chain, why, whylen);
        if (e == AOS_ERR_NOT_FOUND)
            break;
        if (e != AOS_OK)
            goto out;
        audit_verify_add(v, &r, chain, NULL, 0);
    }
    e = audit_verify_finish(v, f);
out:
    audit_verify_free(v);
    return e;
}
