/* aosctl audit archive through a real aosd: the old records and the contents they list go
 * to files that prove them, the cut is recorded and sealed, verify reports the declared
 * gap, later records still prove; an undeclared deletion, a forged declaration and a drop
 * without one are caught, and so is an archived content changed or lost on the disk. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "aos/envelope.h"
#include "aos/readall.h"
#include "audit.pb-c.h"
#include "contents.h"
#include "harness.h"
#include "merkle.h"
#include "record.h"
#include "storage_util.h"
#include "verify.h"

/* n events of agent through audit.emit (no keys): a log that grows by exactly n. */
static aos_err emit_n(h_aosd *h, const char *kind, size_t n, char *why, size_t whylen)
{
    Aos__Audit__Event *ev = calloc(n, sizeof *ev);
    Aos__Audit__Event **evp = calloc(n, sizeof *evp);
    assert_true(ev && evp);
    for (size_t i = 0; i < n; i++) {
        aos__audit__event__init(&ev[i]);
        ev[i].kind = (ProtobufCBinaryData){strlen(kind), (uint8_t *)kind};
        ev[i].agent = (ProtobufCBinaryData){7, (uint8_t *)"agent-x"};
        ev[i].method = (ProtobufCBinaryData){14, (uint8_t *)"storage.kv.put"};
        ev[i].body = (ProtobufCBinaryData){9, (uint8_t *)"{\"n\": 1}"};
        ev[i].latency_us = 7;
        evp[i] = &ev[i];
    }
    Aos__Audit__EmitRequest r = AOS__AUDIT__EMIT_REQUEST__INIT;
    r.n_events = n;
    r.events = evp;
    size_t len = aos__audit__emit_request__get_packed_size(&r);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    aos__audit__emit_request__pack(&r, b);
    aos_call_opts o = {.timeout_ms = 20000};
    aos_reply rep;
    aos_err e = aos_call(h_conn(h), &o, "audit.emit", b, len, &rep);
    snprintf(why, whylen, "%s", rep.error);
    aos_reply_clear(&rep);
    free(b);
    free(ev);
    free(evp);
    return e;
}

static void emit_ok(h_aosd *h, size_t n)
{
    char why[AOS_ERRMSG_MAX + 1];
    for (size_t done = 0; done < n; done += 100) {
        aos_err e = emit_n(h, "syscall", n - done < 100 ? n - done : 100, why, sizeof why);
        if (e != AOS_OK)
            fail_msg("audit.emit: %s: %s", aos_err_name(e), why);
    }
}

/* aosctl ARGS... --json: its exit code, and its document into *doc (NULL if none). */
static int ctl_json(h_aosd *h, json_t **doc, const char *const *argv)
{
    static char out[1 << 16];
    const char *args[16];
    size_t n = 0;
    for (; argv[n]; n++)
        args[n] = argv[n];
    args[n++] = "--json";
    args[n] = NULL;
    int rc = h_aosctl(h, out, sizeof out, args);
    json_error_t je;
    *doc = json_loads(out, 0, &je);
    print_message("aosctl %s %s -> %d: %.600s\n", argv[0], argv[1] ? argv[1] : "", rc, out);
    return rc;
}

static uint64_t sign_head(h_aosd *h)
{
    json_t *d;
    const char *a[] = {"audit", "head", "--sign-now", NULL};
    assert_int_equal(ctl_json(h, &d, a), 0);
    uint64_t size = (uint64_t)json_integer_value(json_object_get(d, "tree_size"));
    json_decref(d);
    return size;
}

static void expect_verify(h_aosd *h, const char *kind, uint64_t seq, uint64_t seq_end)
{
    json_t *d;
    const char *a[] = {"audit", "verify", NULL};
    int rc = ctl_json(h, &d, a);
    assert_non_null(d);
    const char *k = json_string_value(json_object_get(d, "kind"));
    uint64_t s = (uint64_t)json_integer_value(json_object_get(d, "seq"));
    uint64_t e = (uint64_t)json_integer_value(json_object_get(d, "seq_end"));
    if (!k || strcmp(k, kind) || s != seq || (seq_end && e != seq_end))
        fail_msg("expected %s at %llu..%llu, verify said %s at %llu..%llu: %s", kind,
                 (unsigned long long)seq, (unsigned long long)seq_end, k ? k : "?",
                 (unsigned long long)s, (unsigned long long)e,
                 json_string_value(json_object_get(d, "what")));
    /* exit 0 when intact or only the declared gap, 1 for any tampering */
    assert_int_equal(rc, strcmp(kind, "ok") && strcmp(kind, "declared_gap") ? 1 : 0);
    json_decref(d);
}

static void sha256_hex(const uint8_t *b, size_t n, char out[65])
{
    uint8_t h[32];
    crypto_hash_sha256(h, b, n);
    sodium_bin2hex(out, 65, h, 32);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail_msg("%s: %s", path, strerror(errno));
    char *b = aos_read_all(fd, 64u << 20, n);
    close(fd);
    if (!b)
        fail_msg("%s: %s", path, strerror(errno));
    return (uint8_t *)b;
}

/* The archive in dir against what archive --json said: MANIFEST's own digest, the sum of
 * every file it names (records and head.json among them, each line "<sha256>  NAME"), the
 * count of contents/ lines, and records from..to in order, each decoding, chained from the
 * first. */
static void check_archive_files(const char *dir, const json_t *d)
{
    char p[4200], hex[65];
    uint64_t from = (uint64_t)json_integer_value(json_object_get(d, "from_seq"));
    uint64_t to = (uint64_t)json_integer_value(json_object_get(d, "to_seq"));
    size_t n;
    snprintf(p, sizeof p, "%s/MANIFEST", dir);
    uint8_t *m = slurp(p, &n);
    sha256_hex(m, n, hex);
    assert_string_equal(hex, json_string_value(json_object_get(d, "manifest_sha256")));
    size_t lines = 0, ncontents = 0;
    int have_rec = 0, have_head = 0;
    for (size_t off = 0; off < n;) {
        const uint8_t *nl = memchr(m + off, '\n', n - off);
        assert_non_null(nl);
        size_t len = (size_t)(nl - (m + off));
        assert_true(len > 66 && m[off + 64] == ' ' && m[off + 65] == ' ');
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(len - 66), (const char *)m + off + 66);
        size_t fn;
        snprintf(p, sizeof p, "%s/%s", dir, name);
        uint8_t *f = slurp(p, &fn);
        sha256_hex(f, fn, hex);
        if (memcmp(hex, m + off, 64))
            fail_msg("MANIFEST's sum of %s is not the file's", name);
        if (!strncmp(name, "contents/", 9)) {
            /* named by its BLAKE2b-256, its bytes as stored */
            uint8_t h[AUDIT_CONTENT_HASH_LEN];
            char hh[65];
            audit_content_hash(f, fn, h);
            aos_hex(h, sizeof h, hh);
            assert_string_equal(hh, name + 9);
            ncontents++;
        }
        have_rec |= !strcmp(name, "records");
        have_head |= !strcmp(name, "head.json");
        if (!strcmp(name, "records")) {
            size_t o = 0;
            uint64_t want = from;
            uint8_t chain[32];
            while (o + 4 <= fn) {
                size_t rl = (size_t)f[o] << 24 | (size_t)f[o + 1] << 16 |
                            (size_t)f[o + 2] << 8 | f[o + 3];
                assert_true(o + 4 + rl <= fn);
                audit_rec r;
                assert_int_equal(audit_rec_decode(f + o + 4, rl, &r, NULL, 0), AOS_OK);
                assert_int_equal(r.seq, want);
                if (want > from)
                    assert_memory_equal(r.prev_hash, chain, 32);
                audit_chain_hash(r.prev_hash, f + o + 4, rl, chain);
                o += 4 + rl;
                want++;
            }
            assert_int_equal(o, fn);
            assert_int_equal(want, to + 1);
        }
        free(f);
        off += len + 1;
        lines++;
    }
    assert_true(have_rec && have_head);
    assert_int_equal(lines, 2 + ncontents);
    json_t *nc = json_object_get(d, "contents");
    assert_true(json_is_integer(nc));
    assert_int_equal(json_integer_value(nc), (json_int_t)ncontents);
    free(m);
}

static int archive(h_aosd *h, const char *before, const char *dir, json_t **d)
{
    const char *a[] = {"audit", "archive", "--before", before, "--out", dir, NULL};
    return ctl_json(h, d, a);
}

/* ---- the whole cycle ----------------------------------------------------------------------- */

static void archive_declares_a_gap(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    emit_ok(h, 300);
    uint64_t s1 = sign_head(h);
    emit_ok(h, 50);
    uint64_t s2 = sign_head(h);
    assert_true(s1 >= 300 && s2 >= s1 + 50);
    expect_verify(h, "ok", 0, 0);

    /* a copy of what the cut drops, to put back below (a superuser's table) */
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE public.keep AS SELECT * FROM audit.records "
             "WHERE seq <= %llu", (unsigned long long)s1);
    PGresult *r = PQexec(pg, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);

    /* 1. everything before s1 + 1: the cut is the head of size s1 */
    char dir1[4096], dir2[4096], before[32];
    snprintf(dir1, sizeof dir1, "%s/arch-1", h_data_dir(h));
    snprintf(dir2, sizeof dir2, "%s/arch-2", h_data_dir(h));
    snprintf(before, sizeof before, "%llu", (unsigned long long)s1 + 1);
    json_t *d;
    assert_int_equal(archive(h, before, dir1, &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "from_seq")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "to_seq")), (json_int_t)s1);
    assert_int_equal(json_integer_value(json_object_get(d, "dropped")), (json_int_t)s1);
    uint64_t a1 = (uint64_t)json_integer_value(json_object_get(d, "archive_seq"));
    assert_true(a1 > s2);
    assert_true((uint64_t)json_integer_value(json_object_get(d, "sealed_by")) >= a1);
    check_archive_files(dir1, d);
    const char *pk = json_string_value(json_object_get(json_object_get(d, "head"),
                                                       "public_key"));
    char key[65];
    snprintf(key, sizeof key, "%s", pk);
    json_decref(d);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.records WHERE seq <= %llu",
             (unsigned long long)s1);
    assert_int_equal(su_count(pg, sql), 0);
    expect_verify(h, "declared_gap", 1, s1);

    /* a cut recorded and sealed whose drop did not happen (aos-audit killed between the
     * two): the rows back, verify sees a whole log again; the next archive finishes it */
    r = PQexec(pg, "INSERT INTO audit.records SELECT * FROM public.keep");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    expect_verify(h, "ok", 0, 0);
    static char msg[8192];
    char bound[32];
    snprintf(bound, sizeof bound, "%llu", (unsigned long long)s1 + 1);
    const char *fin[] = {"audit", "archive", "--before", bound, "--out", dir2, "--json", NULL};
    assert_int_equal(h_aosctl(h, msg, sizeof msg, fin), 3);
    assert_non_null(strstr(msg, "finished the cut"));
    assert_int_equal(su_count(pg, sql), 0);
    expect_verify(h, "declared_gap", 1, s1);

    /* 2. below the cut no proof is left, and prove says why; above it proofs still hold,
     * checked offline with the key pinned */
    static char out[8192];
    const char *pr1[] = {"audit", "prove", "5", "--json", NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, pr1), 3);
    assert_non_null(strstr(out, "was archived"));
    char seq[32], proof[4200];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)s1 + 7);
    snprintf(proof, sizeof proof, "%s/p.json", h_data_dir(h));
    const char *pr2[] = {"audit", "prove", seq, "--out", proof, NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, pr2), 0);
    const char *ck[] = {"audit", "check-proof", "--key", key, proof, NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, ck), 0);

    /* 3. nothing new to cut: NOT_FOUND, nothing changes */
    assert_int_equal(archive(h, before, dir2, &d), 3);
    json_decref(d);

    /* 4. a second archive starts where the first ended (its base is the first's frontier) */
    snprintf(before, sizeof before, "%llu", (unsigned long long)a1);
    assert_int_equal(archive(h, before, dir2, &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "from_seq")), (json_int_t)s1 + 1);
    assert_int_equal(json_integer_value(json_object_get(d, "to_seq")), (json_int_t)s2);
    check_archive_files(dir2, d);
    json_decref(d);
    expect_verify(h, "declared_gap", 1, s2);
    /* by time: nothing before 2020 */
    assert_int_equal(archive(h, "2020-01-01T00:00:00Z", dir2, &d), 3);
    json_decref(d);

    /* 5. past the gap a deletion no archive declares is still named */
    emit_ok(h, 40);
    uint64_t s3 = sign_head(h);
    snprintf(sql, sizeof sql, "DELETE FROM audit.records WHERE seq = %llu",
             (unsigned long long)s3 - 20);
    r = PQexec(pg, "SET session_replication_role = replica");
    PQclear(r);
    r = PQexec(pg, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    expect_verify(h, "deleted", s3 - 20, s3 - 20);
    PQfinish(pg);
    h_stop(h);
}

/* ---- the contents go with their records ----------------------------------------------- */

static void hex_of(const char *s, char hex[65])
{
    uint8_t h[AUDIT_CONTENT_HASH_LEN];
    audit_content_hash(s, strlen(s), h);
    aos_hex(h, sizeof h, hex);
}

/* One event whose body lists texts[0..n) in "contents", sent with them. */
static void emit_listing(h_aosd *h, const char *const *texts, size_t n)
{
    char body[1024];
    size_t bl = (size_t)snprintf(body, sizeof body, "{\"contents\":[");
    Aos__Audit__Content c[4], *cs[4];
    uint8_t hs[4][AUDIT_CONTENT_HASH_LEN];
    assert_true(n <= 4);
    for (size_t i = 0; i < n; i++) {
        char hex[65];
        hex_of(texts[i], hex);
        bl += (size_t)snprintf(body + bl, sizeof body - bl, "%s\"%s\"", i ? "," : "", hex);
        audit_content_hash(texts[i], strlen(texts[i]), hs[i]);
        aos__audit__content__init(&c[i]);
        c[i].hash = (ProtobufCBinaryData){AUDIT_CONTENT_HASH_LEN, hs[i]};
        c[i].body = (ProtobufCBinaryData){strlen(texts[i]), (uint8_t *)texts[i]};
        cs[i] = &c[i];
    }
    snprintf(body + bl, sizeof body - bl, "],\"n\":%zu}", n);
    Aos__Audit__Event ev = AOS__AUDIT__EVENT__INIT, *evp[1] = {&ev};
    ev.kind = (ProtobufCBinaryData){11, (uint8_t *)"test.detail"};
    ev.agent = (ProtobufCBinaryData){7, (uint8_t *)"agent-x"};
    ev.body = (ProtobufCBinaryData){strlen(body), (uint8_t *)body};
    Aos__Audit__EmitRequest r = AOS__AUDIT__EMIT_REQUEST__INIT;
    r.n_events = 1;
    r.events = evp;
    r.n_contents = n;
    r.contents = cs;
    size_t len = aos__audit__emit_request__get_packed_size(&r);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    aos__audit__emit_request__pack(&r, b);
    aos_call_opts o = {.timeout_ms = 20000};
    aos_reply rep;
    aos_err e = aos_call(h_conn(h), &o, "audit.emit", b, len, &rep);
    if (e != AOS_OK)
        fail_msg("audit.emit with contents: %s: %s", aos_err_name(e), rep.error);
    aos_reply_clear(&rep);
    free(b);
}

static long long stored(PGconn *pg, const char *text)
{
    char hex[65], sql[256];
    hex_of(text, hex);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM audit.contents WHERE hash = '\\x%s'", hex);
    return su_count(pg, sql);
}

/* check-archive DIR --json: its exit code and document (into *d). */
static int check_archive(h_aosd *h, const char *dir, json_t **d)
{
    const char *a[] = {"audit", "check-archive", dir, NULL};
    return ctl_json(h, d, a);
}

static void put_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        fail_msg("%s: %s", path, strerror(errno));
}

#define C_ONLY_A "what the LLM saw first, archived only"
#define C_ONLY_B "a tool's output, listed twice in the archived range"
#define C_SHARED "a system prompt, listed before the cut and after it"
#define C_KEPT "a reply listed only after the cut"

static void archive_carries_contents(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    emit_ok(h, 20);
    const char *l1[] = {C_ONLY_A, C_SHARED}, *l2[] = {C_ONLY_B}, *l3[] = {C_ONLY_B, C_ONLY_A};
    emit_listing(h, l1, 2);
    emit_listing(h, l2, 1);
    emit_listing(h, l3, 2);
    uint64_t s1 = sign_head(h);
    const char *l4[] = {C_SHARED}, *l5[] = {C_KEPT};
    emit_listing(h, l4, 1);
    emit_listing(h, l5, 1);
    sign_head(h);
    expect_verify(h, "ok", 0, 0);
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char hs[65], hb[65], sql[256];
    hex_of(C_SHARED, hs);
    hex_of(C_ONLY_B, hb);
    snprintf(sql, sizeof sql, "SELECT min(seq) FROM audit.records WHERE position('%s'::bytea "
             "IN body) > 0", hs);
    long long seq_shared = su_count(pg, sql);
    snprintf(sql, sizeof sql, "SELECT min(seq) FROM audit.records WHERE position('%s'::bytea "
             "IN body) > 0", hb);
    long long seq_b = su_count(pg, sql);
    assert_true(seq_shared >= 1 && seq_b > seq_shared && (uint64_t)seq_b <= s1);

    /* 1. the archive holds every listed content once, each in the MANIFEST */
    char dir[4096], before[32];
    snprintf(dir, sizeof dir, "%s/arch-c", h_data_dir(h));
    snprintf(before, sizeof before, "%llu", (unsigned long long)s1 + 1);
    json_t *d;
    assert_int_equal(archive(h, before, dir, &d), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "to_seq")), (json_int_t)s1);
    assert_int_equal(json_integer_value(json_object_get(d, "contents")), 3);
    check_archive_files(dir, d);
    char manifest[65];
    snprintf(manifest, sizeof manifest, "%s",
             json_string_value(json_object_get(d, "manifest_sha256")));
    json_decref(d);
    json_t *k;
    assert_int_equal(check_archive(h, dir, &k), 0);
    assert_true(json_is_true(json_object_get(k, "valid")));
    assert_int_equal(json_integer_value(json_object_get(k, "records")), (json_int_t)s1);
    assert_int_equal(json_integer_value(json_object_get(k, "contents")), 3);
    assert_int_equal(json_integer_value(json_object_get(k, "version")), 2);
    assert_string_equal(json_string_value(json_object_get(k, "manifest_sha256")), manifest);
    json_decref(k);

    /* 2. the drop took the contents only archived records listed; the shared one and the
     * kept one stay, and the kept records' contents still verify beside the declared gap */
    assert_int_equal(stored(pg, C_ONLY_A), 0);
    assert_int_equal(stored(pg, C_ONLY_B), 0);
    assert_int_equal(stored(pg, C_SHARED), 1);
    assert_int_equal(stored(pg, C_KEPT), 1);
    expect_verify(h, "declared_gap", 1, s1);

    /* 3. an archived content altered on the disk: named by file, hash and record */
    char cpath[4200];
    snprintf(cpath, sizeof cpath, "%s/contents/%s", dir, hs);
    put_text(cpath, C_SHARED " (edited)");
    assert_int_equal(check_archive(h, dir, &k), 1);
    assert_false(json_is_true(json_object_get(k, "valid")));
    assert_string_equal(json_string_value(json_object_get(k, "failed")), "content");
    char want[80];
    snprintf(want, sizeof want, "contents/%s", hs);
    assert_string_equal(json_string_value(json_object_get(k, "file")), want);
    assert_string_equal(json_string_value(json_object_get(k, "hash")), hs);
    assert_int_equal(json_integer_value(json_object_get(k, "seq")), seq_shared);
    assert_non_null(strstr(json_string_value(json_object_get(k, "why")), "altered"));
    json_decref(k);
    static char out[8192];
    const char *human[] = {"audit", "check-archive", dir, NULL};
    assert_int_equal(h_aosctl(h, out, sizeof out, human), 1);
    assert_non_null(strstr(out, want));
    put_text(cpath, C_SHARED); /* put back: whole again */
    assert_int_equal(check_archive(h, dir, &k), 0);
    json_decref(k);

    /* 4. one missing: named too */
    snprintf(cpath, sizeof cpath, "%s/contents/%s", dir, hb);
    assert_int_equal(unlink(cpath), 0);
    assert_int_equal(check_archive(h, dir, &k), 1);
    snprintf(want, sizeof want, "contents/%s", hb);
    assert_string_equal(json_string_value(json_object_get(k, "failed")), "content");
    assert_string_equal(json_string_value(json_object_get(k, "file")), want);
    assert_string_equal(json_string_value(json_object_get(k, "hash")), hb);
    assert_int_equal(json_integer_value(json_object_get(k, "seq")), seq_b);
    assert_non_null(strstr(json_string_value(json_object_get(k, "why")), "missing"));
    json_decref(k);
    /* and a MANIFEST line dropped with it: the record still lists it */
    snprintf(cpath, sizeof cpath, "%s/MANIFEST", dir);
    size_t mn;
    char *mt = (char *)slurp(cpath, &mn);
    char *line = strstr(mt, want);
    assert_non_null(line);
    line -= 66;
    char *end = strchr(line, '\n');
    memmove(line, end + 1, strlen(end + 1) + 1);
    put_text(cpath, mt);
    free(mt);
    assert_int_equal(check_archive(h, dir, &k), 1);
    assert_string_equal(json_string_value(json_object_get(k, "file")), want);
    assert_non_null(strstr(json_string_value(json_object_get(k, "why")), "does not name"));
    json_decref(k);
    PQfinish(pg);
    h_stop(h);
}

/* ---- what is refused ----------------------------------------------------------------------- */

static void forged_or_undeclared_cuts_are_refused(void **st)
{
    (void)st;
    h_aosd *h = h_start(NULL);
    emit_ok(h, 200);
    uint64_t s1 = sign_head(h);
    char why[AOS_ERRMSG_MAX + 1];
    /* a producer cannot declare an archive */
    assert_int_equal(emit_n(h, "archive", 1, why, sizeof why), AOS_ERR_USAGE);
    assert_non_null(strstr(why, "archive"));
    /* the drop function deletes nothing without a sealed archive record, even for a
     * superuser calling it */
    PGconn *pg = su_admin_connect(h);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *r = PQexec(pg, "SELECT audit.drop_archived(150)");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    print_message("drop_archived(150): %s", PQerrorMessage(pg));
    PQclear(r);
    assert_int_equal(su_count(pg, "SELECT count(*) FROM audit.records WHERE seq <= 150"), 150);
    expect_verify(h, "ok", 0, 0);

    /* a superuser cuts 1..100 and appends a perfectly formed declaration of it (chained
     * right, the real frontier): no signed head covers it, so it is a deletion */
    audit_tree *t;
    assert_int_equal(audit_tree_new(&t, NULL, 0), AOS_OK);
    r = PQexecParams(pg, "SELECT leaf_hash, chain_hash FROM audit.records WHERE seq <= 100 "
                         "ORDER BY seq", 0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQntuples(r), 100);
    uint8_t chain100[32];
    for (int i = 0; i < 100; i++) {
        assert_int_equal(audit_tree_append(t, (const uint8_t *)PQgetvalue(r, i, 0), NULL, 0),
                         AOS_OK);
        memcpy(chain100, PQgetvalue(r, i, 1), 32);
    }
    PQclear(r);
    r = PQexecParams(pg, "SELECT seq, chain_hash FROM audit.records ORDER BY seq DESC LIMIT 1",
                     0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQntuples(r), 1);
    uint64_t last = 0;
    for (int i = 0; i < 8; i++)
        last = last << 8 | (uint8_t)PQgetvalue(r, 0, 0)[i];
    assert_true(last >= s1);
    uint8_t prev[32];
    memcpy(prev, PQgetvalue(r, 0, 1), 32);
    PQclear(r);
    uint8_t body[AUDIT_ARCHIVE_MAX];
    size_t blen;
    assert_int_equal(audit_archive_encode(chain100, t, body, sizeof body, &blen, NULL, 0),
                     AOS_OK);
    audit_tree_free(t);
    audit_rec fr = {.seq = last + 1, .time_ns = 1, .kind = "archive", .kind_len = 7,
                    .agent = "", .run = "", .method = "audit.archive", .method_len = 13,
                    .body = body, .body_len = blen};
    memcpy(fr.prev_hash, prev, 32);
    uint8_t *enc = malloc(AUDIT_REC_MAX);
    size_t elen;
    assert_int_equal(audit_rec_encode(&fr, enc, AUDIT_REC_MAX, &elen, NULL, 0), AOS_OK);
    uint8_t leaf[32], chain[32];
    audit_leaf_hash(enc, elen, leaf);
    audit_chain_hash(prev, enc, elen, chain);
    free(enc);
    char seqs[32];
    snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)last + 1);
    const char *vals[] = {seqs, (const char *)body, (const char *)prev, (const char *)leaf,
                          (const char *)chain};
    int lens[] = {0, (int)blen, 32, 32, 32}, fmts[] = {0, 1, 1, 1, 1};
    r = PQexec(pg, "SET session_replication_role = replica");
    PQclear(r);
    r = PQexec(pg, "DELETE FROM audit.records WHERE seq <= 100");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexecParams(pg, "INSERT INTO audit.records (seq, time_ns, kind, agent, run, step, "
                         "trace_id, span_id, parent_span_id, method, status, latency_us, body, "
                         "prev_hash, leaf_hash, chain_hash) VALUES ($1::bigint, 1, 'archive', "
                         "'', '', 0, '\\x00000000000000000000000000000000', "
                         "'\\x0000000000000000', '\\x0000000000000000', 'audit.archive', 0, 0, "
                         "$2, $3, $4, $5)",
                     5, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("insert: %s", PQerrorMessage(pg));
    PQclear(r);
    expect_verify(h, "deleted", 1, 100);
    PQfinish(pg);
    h_stop(h);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(archive_declares_a_gap),
        cmocka_unit_test(archive_carries_contents),
        cmocka_unit_test(forged_or_undeclared_cuts_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
