/* The audit archive directory read back from its files alone (archdir.h has the layout):
 * MANIFEST and head.json decoded as untrusted input, records and contents checked. */
#include "archdir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "prooffile.h"

#include "aos/envelope.h"

#define WHY(...) ((why && whylen) ? (void)snprintf(why, whylen, __VA_ARGS__) : (void)0)

/* ---- head.json --------------------------------------------------------------------------- */

int audit_archhead_parse(const char *text, size_t len, audit_archhead *h, char *why,
                         size_t whylen)
{
    memset(h, 0, sizeof *h);
    json_error_t je;
    json_t *d = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    int rc = -1;
    if (!json_is_object(d)) {
        WHY("head.json is not a JSON object (%s)", d ? "another value" : je.text);
        goto out;
    }
    uint64_t v;
    if (audit_jget_u64(d, "version", 1, &v) || v > AUDIT_ARCHDIR_VERSION) {
        WHY("head.json's \"version\" is missing or not 1 or %u", AUDIT_ARCHDIR_VERSION);
        goto out;
    }
    h->version = (unsigned)v;
    json_t *hd = json_object_get(d, "head"), *fr = json_object_get(d, "base_frontier");
    const char *bad = audit_jget_u64(d, "from_seq", 1, &h->from)                        ? "from_seq"
                    : audit_jget_u64(d, "to_seq", 1, &h->to)                            ? "to_seq"
                    : audit_jget_hex(d, "base_chain", h->base_chain, AUDIT_HASH_LEN)    ? "base_chain"
                    : !json_is_object(hd)                                        ? "head"
                    : audit_jget_u64(hd, "tree_size", 1, &h->head.tree_size)            ? "head.tree_size"
                    : audit_jget_u64(hd, "time_ns", 0, &h->head.time_ns)                ? "head.time_ns"
                    : audit_jget_hex(hd, "root", h->head.root, AUDIT_HASH_LEN)          ? "head.root"
                    : audit_jget_hex(hd, "signature", h->head.sig, AUDIT_SIG_LEN)       ? "head.signature"
                    : audit_jget_hex(hd, "public_key", h->pk, AUDIT_PK_LEN)             ? "head.public_key"
                    : !json_is_array(fr)                                         ? "base_frontier"
                    : NULL;
    if (bad) {
        WHY("head.json's \"%s\" is missing or malformed", bad);
        goto out;
    }
    if (h->from > h->to || h->to != h->head.tree_size) {
        WHY("head.json: from_seq %" PRIu64 ", to_seq %" PRIu64 " and the head's tree_size %"
            PRIu64 " do not make a range ending at the head", h->from, h->to,
            h->head.tree_size);
        goto out;
    }
    h->nbase = json_array_size(fr);
    if (h->nbase != (size_t)__builtin_popcountll(h->from - 1)) {
        WHY("head.json: base_frontier has %zu hashes, a tree of %" PRIu64 " has %d", h->nbase,
            h->from - 1, __builtin_popcountll(h->from - 1));
        goto out;
    }
    for (size_t i = 0; i < h->nbase; i++) {
        json_t *e = json_array_get(fr, i);
        if (!json_is_string(e) || aos_unhex(json_string_value(e), json_string_length(e),
                                            h->base_fr[i], AUDIT_HASH_LEN) != 0) {
            WHY("head.json: base_frontier[%zu] is not %u hex digits", i, 2 * AUDIT_HASH_LEN);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(d);
    return rc;
}

/* ---- MANIFEST ---------------------------------------------------------------------------- */

static int lowhex(const char *s, size_t n, uint8_t *out, size_t len)
{
    if (n != 2 * len)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return -1;
    return aos_unhex(s, n, out, len);
}

int audit_manifest_line(const char *line, size_t n, audit_am_kind *kind,
                        uint8_t sha[AUDIT_HASH_LEN], uint8_t hash[AUDIT_CONTENT_HASH_LEN],
                        char *why, size_t whylen)
{
    const size_t hl = 2 * AUDIT_HASH_LEN;
    /* sha256sum writes lowercase; it reads either case, and so does this */
    if (n < hl + 2 || aos_unhex(line, hl, sha, AUDIT_HASH_LEN) != 0 || line[hl] != ' ' ||
        (line[hl + 1] != ' ' && line[hl + 1] != '*')) {
        WHY("not \"<64 hex digits of SHA-256>  NAME\"");
        return -1;
    }
    const char *name = line + hl + 2;
    size_t nl = n - hl - 2;
    if (nl == 7 && !memcmp(name, "records", 7)) {
        *kind = AUDIT_AM_RECORDS;
        return 0;
    }
    if (nl == 9 && !memcmp(name, "head.json", 9)) {
        *kind = AUDIT_AM_HEAD;
        return 0;
    }
    if (nl == 9 + 2 * AUDIT_CONTENT_HASH_LEN && !memcmp(name, "contents/", 9) &&
        lowhex(name + 9, nl - 9, hash, AUDIT_CONTENT_HASH_LEN) == 0) {
        *kind = AUDIT_AM_CONTENT;
        return 0;
    }
    WHY("names \"%.*s\": an archive holds records, head.json and contents/<64 lowercase hex "
        "digits>", (int)(nl > 100 ? 100 : nl), name);
    return -1;
}

void audit_archdir_content_name(const uint8_t hash[AUDIT_CONTENT_HASH_LEN],
                                char out[AUDIT_ARCHDIR_NAME_MAX])
{
    memcpy(out, "contents/", 9);
    aos_hex(hash, AUDIT_CONTENT_HASH_LEN, out + 9);
}

/* ---- the check --------------------------------------------------------------------------- */

typedef struct centry {
    uint8_t hash[AUDIT_CONTENT_HASH_LEN];
    uint8_t sha[AUDIT_HASH_LEN];
    uint64_t seq; /* the first record that lists it; 0 while none has */
} centry;

typedef struct ck {
    int dfd;
    audit_archcheck *o;
    char *why;
    size_t whylen;
    uint8_t rec_sha[AUDIT_HASH_LEN], head_sha[AUDIT_HASH_LEN];
    int have_rec, have_head;
    centry *e;
    size_t n, cap;
} ck;

static int cmp_entry(const void *a, const void *b)
{
    return memcmp(a, b, AUDIT_CONTENT_HASH_LEN);
}

/* Marks the failed check and its place; the caller fills why. Returns AOS_ERR_CONFLICT. */
static aos_err fail(ck *k, const char *check, const char *file, uint64_t seq,
                    const uint8_t *hash)
{
    k->o->failed = check;
    snprintf(k->o->file, sizeof k->o->file, "%s", file ? file : "");
    k->o->seq = seq;
    k->o->has_hash = hash != NULL;
    if (hash)
        memcpy(k->o->hash, hash, AUDIT_CONTENT_HASH_LEN);
    return AOS_ERR_CONFLICT;
}

static FILE *open_in(ck *k, const char *name)
{
    int fd = openat(k->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

static aos_err read_manifest(ck *k)
{
    char *why = k->why;
    size_t whylen = k->whylen;
    FILE *f = open_in(k, "MANIFEST");
    if (!f) {
        WHY("MANIFEST: %s", strerror(errno));
        return fail(k, "manifest", "MANIFEST", 0, NULL);
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    char line[AUDIT_ARCHDIR_LINE_MAX + 1];
    aos_err rc = AOS_OK;
    size_t lineno = 0;
    while (rc == AOS_OK && fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        lineno++;
        crypto_hash_sha256_update(&st, (const uint8_t *)line, n);
        if (!n || line[n - 1] != '\n') {
            WHY("MANIFEST line %zu is longer than %u bytes, holds a NUL or lacks its newline",
                lineno, AUDIT_ARCHDIR_LINE_MAX);
            rc = fail(k, "manifest", "MANIFEST", 0, NULL);
            break;
        }
        audit_am_kind kind;
        uint8_t sha[AUDIT_HASH_LEN], h[AUDIT_CONTENT_HASH_LEN];
        char sub[256];
        if (audit_manifest_line(line, n - 1, &kind, sha, h, sub, sizeof sub) != 0) {
            WHY("MANIFEST line %zu: %s", lineno, sub);
            rc = fail(k, "manifest", "MANIFEST", 0, NULL);
            break;
        }
        if (kind == AUDIT_AM_RECORDS || kind == AUDIT_AM_HEAD) {
            int *have = kind == AUDIT_AM_RECORDS ? &k->have_rec : &k->have_head;
            if (*have) {
                WHY("MANIFEST line %zu names %s a second time", lineno,
                    kind == AUDIT_AM_RECORDS ? "records" : "head.json");
                rc = fail(k, "manifest", "MANIFEST", 0, NULL);
                break;
            }
            *have = 1;
            memcpy(kind == AUDIT_AM_RECORDS ? k->rec_sha : k->head_sha, sha, AUDIT_HASH_LEN);
            continue;
        }
        if (k->n == AUDIT_ARCHDIR_CONTENTS_MAX) {
            WHY("MANIFEST names more than %u contents (an archive holds at most that many)",
                AUDIT_ARCHDIR_CONTENTS_MAX);
            rc = fail(k, "manifest", "MANIFEST", 0, NULL);
            break;
        }
        if (k->n == k->cap) {
            size_t nc = k->cap ? 2 * k->cap : 256;
            void *p = realloc(k->e, nc * sizeof *k->e);
            if (!p) {
                WHY("out of memory for %zu MANIFEST entries", nc);
                rc = AOS_ERR_NOMEM;
                break;
            }
            k->e = p;
            k->cap = nc;
        }
        memcpy(k->e[k->n].hash, h, AUDIT_CONTENT_HASH_LEN);
        memcpy(k->e[k->n].sha, sha, AUDIT_HASH_LEN);
        k->e[k->n].seq = 0;
        k->n++;
    }
    if (rc == AOS_OK && ferror(f)) {
        WHY("MANIFEST: %s", strerror(errno));
        rc = fail(k, "manifest", "MANIFEST", 0, NULL);
    }
    fclose(f);
    if (rc != AOS_OK)
        return rc;
    crypto_hash_sha256_final(&st, k->o->manifest_sha);
    k->o->have_manifest_sha = 1;
    if (!k->have_rec || !k->have_head) {
        WHY("MANIFEST has no line for %s", k->have_rec ? "head.json" : "records");
        return fail(k, "manifest", "MANIFEST", 0, NULL);
    }
    if (k->n) /* an archive whose records list no content has none: qsort wants a base */
        qsort(k->e, k->n, sizeof *k->e, cmp_entry);
    for (size_t i = 1; i < k->n; i++)
        if (!memcmp(k->e[i].hash, k->e[i - 1].hash, AUDIT_CONTENT_HASH_LEN)) {
            char name[AUDIT_ARCHDIR_NAME_MAX];
            audit_archdir_content_name(k->e[i].hash, name);
            WHY("MANIFEST names %s twice", name);
            return fail(k, "manifest", "MANIFEST", 0, k->e[i].hash);
        }
    return AOS_OK;
}

/* Up to cap bytes of name, whole, into a malloc'd buffer (*n its length): NULL with errno
 * (EFBIG past cap). */
static uint8_t *slurp(ck *k, const char *name, size_t cap, size_t *n)
{
    int fd = openat(k->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return NULL;
    uint8_t *b = malloc(cap + 1);
    size_t got = 0;
    int e = 0;
    while (b && got <= cap) {
        ssize_t r = read(fd, b + got, cap + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = errno;
            break;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (!b)
        e = ENOMEM;
    else if (!e && got > cap)
        e = EFBIG;
    close(fd);
    if (e) {
        free(b);
        errno = e;
        return NULL;
    }
    *n = got;
    return b;
}

static aos_err check_head(ck *k, const uint8_t *pin)
{
    char *why = k->why;
    size_t whylen = k->whylen;
    size_t n;
    uint8_t *t = slurp(k, "head.json", AUDIT_ARCHDIR_HEAD_MAX, &n);
    if (!t) {
        int e = errno;
        WHY("head.json: %s", e == EFBIG ? "larger than a head.json can be" : strerror(e));
        return e == ENOMEM ? AOS_ERR_NOMEM : fail(k, "head", "head.json", 0, NULL);
    }
    uint8_t sha[AUDIT_HASH_LEN];
    crypto_hash_sha256(sha, t, n);
    char sub[512];
    int bad = memcmp(sha, k->head_sha, AUDIT_HASH_LEN) != 0;
    if (!bad && audit_archhead_parse((const char *)t, n, &k->o->h, sub, sizeof sub) != 0) {
        free(t);
        WHY("%s", sub);
        return fail(k, "head", "head.json", 0, NULL);
    }
    free(t);
    if (bad) {
        WHY("head.json does not match its MANIFEST sum: it was changed");
        return fail(k, "head", "head.json", 0, NULL);
    }
    k->o->have_head = 1;
    const audit_archhead *h = &k->o->h;
    if (pin && memcmp(pin, h->pk, AUDIT_PK_LEN)) {
        char have[2 * AUDIT_PK_LEN + 1], want[2 * AUDIT_PK_LEN + 1];
        aos_hex(h->pk, AUDIT_PK_LEN, have);
        aos_hex(pin, AUDIT_PK_LEN, want);
        WHY("head.json names key %s, not the pinned key %s", have, want);
        return fail(k, "key", "head.json", 0, NULL);
    }
    if (audit_sth_verify(&h->head, h->pk, sub, sizeof sub) != AOS_OK) {
        WHY("head.json: the head of size %" PRIu64 " does not verify with its key: %s",
            h->head.tree_size, sub);
        return fail(k, "signature", "head.json", 0, NULL);
    }
    if (h->version < 2 && k->n) {
        WHY("MANIFEST names contents but head.json is of version 1, which carries none");
        return fail(k, "manifest", "MANIFEST", 0, NULL);
    }
    return AOS_OK;
}

static centry *find(ck *k, const uint8_t h[AUDIT_CONTENT_HASH_LEN])
{
    return k->n ? bsearch(h, k->e, k->n, sizeof *k->e, cmp_entry) : NULL;
}

static int read_exact(FILE *f, uint8_t *b, size_t n)
{
    return fread(b, 1, n, f) == n ? 0 : -1;
}

static aos_err check_records(ck *k)
{
    char *why = k->why;
    size_t whylen = k->whylen;
    const audit_archhead *h = &k->o->h;
    FILE *f = open_in(k, "records");
    if (!f) {
        WHY("records: %s", strerror(errno));
        return fail(k, "records", "records", 0, NULL);
    }
    uint8_t *buf = malloc(AUDIT_REC_MAX);
    uint8_t(*listed)[AUDIT_CONTENT_HASH_LEN] =
        malloc(AUDIT_CONTENTS_LIST_MAX * AUDIT_CONTENT_HASH_LEN);
    audit_tree *t = NULL;
    char sub[512];
    aos_err rc = AOS_OK;
    if (!buf || !listed) {
        WHY("out of memory for a record");
        rc = AOS_ERR_NOMEM;
        goto out;
    }
    if ((rc = audit_tree_new(&t, sub, sizeof sub)) != AOS_OK) {
        WHY("%s", sub);
        goto out;
    }
    if (audit_tree_restore(t, h->from - 1, (const uint8_t(*)[AUDIT_HASH_LEN])h->base_fr,
                           h->nbase, sub, sizeof sub) != AOS_OK) {
        WHY("head.json: base_frontier: %s", sub);
        rc = fail(k, "head", "head.json", 0, NULL);
        goto out;
    }
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint8_t chain[AUDIT_HASH_LEN];
    memcpy(chain, h->base_chain, AUDIT_HASH_LEN);
    uint64_t next = h->from;
    for (;;) {
        uint8_t lb[4];
        size_t got = fread(lb, 1, 4, f);
        if (got == 0 && feof(f))
            break;
        uint32_t len = (uint32_t)lb[0] << 24 | (uint32_t)lb[1] << 16 | (uint32_t)lb[2] << 8 |
                       lb[3];
        if (got != 4 || len > AUDIT_REC_MAX || read_exact(f, buf, len)) {
            WHY("records: the file is cut or malformed at record %" PRIu64 " (offset %" PRIu64
                ")", next, k->o->bytes);
            rc = fail(k, "records", "records", next, NULL);
            goto out;
        }
        crypto_hash_sha256_update(&st, lb, 4);
        crypto_hash_sha256_update(&st, buf, len);
        k->o->bytes += 4 + (uint64_t)len;
        audit_rec r;
        if (audit_rec_decode(buf, len, &r, sub, sizeof sub) != AOS_OK) {
            WHY("records: record %" PRIu64 " does not decode: %s", next, sub);
            rc = fail(k, "records", "records", next, NULL);
            goto out;
        }
        if (next > h->to || r.seq != next) {
            WHY("records: record %" PRIu64 " of the file says seq %" PRIu64 " (the range is %"
                PRIu64 "..%" PRIu64 ")", next, r.seq, h->from, h->to);
            rc = fail(k, "records", "records", next, NULL);
            goto out;
        }
        if (memcmp(r.prev_hash, chain, AUDIT_HASH_LEN)) {
            WHY("records: record %" PRIu64 "'s prev_hash is not the chain hash of %s: that "
                "record or this one was changed", next,
                next == h->from ? "head.json's base_chain" : "the record before");
            rc = fail(k, "chain", "records", next, NULL);
            goto out;
        }
        audit_chain_hash(r.prev_hash, buf, len, chain);
        uint8_t leaf[AUDIT_HASH_LEN];
        audit_leaf_hash(buf, len, leaf);
        if ((rc = audit_tree_append(t, leaf, sub, sizeof sub)) != AOS_OK) {
            WHY("%s", sub);
            goto out;
        }
        if (h->version >= 2) {
            int nl = audit_contents_listed(r.body, r.body_len, listed, AUDIT_CONTENTS_LIST_MAX);
            for (int i = 0; i < nl; i++) {
                centry *e = find(k, listed[i]);
                char name[AUDIT_ARCHDIR_NAME_MAX];
                audit_archdir_content_name(listed[i], name);
                if (!e) {
                    WHY("%s: record %" PRIu64 " lists content %s, which the MANIFEST does not "
                        "name", name, next, name + 9);
                    rc = fail(k, "content", name, next, listed[i]);
                    goto out;
                }
                if (!e->seq)
                    e->seq = next;
            }
        }
        k->o->records++;
        next++;
    }
    if (ferror(f)) {
        WHY("records: %s", strerror(errno));
        rc = fail(k, "records", "records", next, NULL);
        goto out;
    }
    if (next != h->to + 1) {
        WHY("records: the file ends after seq %" PRIu64 ", the range is %" PRIu64 "..%" PRIu64,
            next - 1, h->from, h->to);
        rc = fail(k, "records", "records", next, NULL);
        goto out;
    }
    uint8_t sha[AUDIT_HASH_LEN], root[AUDIT_HASH_LEN];
    crypto_hash_sha256_final(&st, sha);
    if (memcmp(sha, k->rec_sha, AUDIT_HASH_LEN)) {
        WHY("records does not match its MANIFEST sum: it was changed");
        rc = fail(k, "records", "records", 0, NULL);
        goto out;
    }
    audit_tree_root(t, root);
    if (memcmp(root, h->head.root, AUDIT_HASH_LEN)) {
        WHY("records: seqs %" PRIu64 "..%" PRIu64 " do not give the root of the signed head "
            "of size %" PRIu64 " (from head.json's base_frontier)", h->from, h->to, h->to);
        rc = fail(k, "tree", "records", 0, NULL);
        goto out;
    }
out:
    audit_tree_free(t);
    free(listed);
    free(buf);
    fclose(f);
    return rc;
}

static aos_err check_contents(ck *k)
{
    char *why = k->why;
    size_t whylen = k->whylen;
    for (size_t i = 0; i < k->n; i++) {
        centry *e = &k->e[i];
        char name[AUDIT_ARCHDIR_NAME_MAX];
        audit_archdir_content_name(e->hash, name);
        if (!e->seq) {
            WHY("MANIFEST names %s, which no record of seqs %" PRIu64 "..%" PRIu64 " lists",
                name, k->o->h.from, k->o->h.to);
            return fail(k, "content", name, 0, e->hash);
        }
        size_t n;
        uint8_t *b = slurp(k, name, AUDIT_CONTENT_MAX, &n);
        if (!b) {
            int err = errno;
            if (err == ENOMEM) {
                WHY("out of memory for %s", name);
                return AOS_ERR_NOMEM;
            }
            WHY("%s (content %s, listed by record %" PRIu64 ") is %s", name, name + 9, e->seq,
                err == ENOENT ? "missing" : err == EFBIG ? "over 1 MiB: altered"
                                                         : strerror(err));
            return fail(k, "content", name, e->seq, e->hash);
        }
        uint8_t h[AUDIT_CONTENT_HASH_LEN], sha[AUDIT_HASH_LEN];
        audit_content_hash(b, n, h);
        crypto_hash_sha256(sha, b, n);
        free(b);
        if (memcmp(h, e->hash, sizeof h)) {
            char got[2 * AUDIT_CONTENT_HASH_LEN + 1];
            aos_hex(h, sizeof h, got);
            WHY("%s (content %s, listed by record %" PRIu64 ") is altered: its %zu bytes hash "
                "to %s", name, name + 9, e->seq, n, got);
            return fail(k, "content", name, e->seq, e->hash);
        }
        if (memcmp(sha, e->sha, sizeof sha)) {
            WHY("%s (listed by record %" PRIu64 ") does not match its MANIFEST sum", name,
                e->seq);
            return fail(k, "content", name, e->seq, e->hash);
        }
        k->o->contents++;
    }
    return AOS_OK;
}

aos_err audit_archdir_check(int dfd, const uint8_t *pin, audit_archcheck *out, char *why,
                            size_t whylen)
{
    memset(out, 0, sizeof *out);
    char scratch[8];
    ck k = {.dfd = dfd, .o = out, .why = why && whylen ? why : scratch,
            .whylen = why && whylen ? whylen : sizeof scratch};
    aos_err rc = read_manifest(&k);
    if (rc == AOS_OK)
        rc = check_head(&k, pin);
    if (rc == AOS_OK)
        rc = check_records(&k);
    if (rc == AOS_OK && out->h.version >= 2)
        rc = check_contents(&k);
    free(k.e);
    return rc;
}
