/* Unit test of aosctl audit check-proof, offline: proof files built here with the audit core
 * (records, tree, signed heads), then tampered with, and the real aosctl binary run on each. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "aos/envelope.h"
#include "merkle.h"
#include "record.h"

extern char **environ;

#define NREC 7
#define OUT_MAX (64u * 1024u)

static const char *g_aosctl; /* argv[1]: the aosctl under test */
static char g_dir[64];       /* the test's own temporary directory */

/* ---- a log of NREC records, built with the core --------------------------------------- */

typedef struct log_st {
    uint8_t rec[NREC][512];
    size_t len[NREC];
    uint8_t leaf[NREC][AUDIT_HASH_LEN];
    audit_key *key, *other;
    uint8_t pk[AUDIT_PK_LEN], other_pk[AUDIT_PK_LEN];
} log_st;

static log_st L;

static void build_log(void)
{
    char why[256];
    uint8_t prev[AUDIT_HASH_LEN] = {0};
    for (int i = 0; i < NREC; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"call\":%d,\"note\":\"r\\u00e9sum\\u00e9\"}", i);
        audit_rec r;
        memset(&r, 0, sizeof r);
        r.seq = (uint64_t)i + 1;
        r.time_ns = 1796212248000000000ull + (uint64_t)i * 1000;
        r.kind = "syscall";
        r.kind_len = 7;
        r.agent = "agent-1";
        r.agent_len = 7;
        r.method = "storage.kv.put";
        r.method_len = 14;
        r.body = (const uint8_t *)body;
        r.body_len = strlen(body);
        memcpy(r.prev_hash, prev, sizeof prev);
        assert_int_equal(audit_rec_encode(&r, L.rec[i], sizeof L.rec[i], &L.len[i], why,
                                          sizeof why), AOS_OK);
        audit_leaf_hash(L.rec[i], L.len[i], L.leaf[i]);
        audit_chain_hash(prev, L.rec[i], L.len[i], prev);
    }
    assert_int_equal(audit_key_generate(&L.key, why, sizeof why), AOS_OK);
    assert_int_equal(audit_key_generate(&L.other, why, sizeof why), AOS_OK);
    audit_key_public(L.key, L.pk);
    audit_key_public(L.other, L.other_pk);
}

static aos_err leaf_of(void *arg, uint64_t index, uint8_t out[AUDIT_HASH_LEN], char *why,
                       size_t whylen)
{
    (void)arg;
    if (index >= NREC) {
        snprintf(why, whylen, "no leaf %llu", (unsigned long long)index);
        return AOS_ERR_NOT_FOUND;
    }
    memcpy(out, L.leaf[index], AUDIT_HASH_LEN);
    return AOS_OK;
}

static json_t *hex_json(const uint8_t *b, size_t n)
{
    char *s = malloc(2 * n + 1);
    assert_non_null(s);
    aos_hex(b, n, s);
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* The proof file's document for record seq in the tree of size n, its head signed by key
 * (the format documented at the top of cmd_audit.c, written here independently). */
static json_t *proof_doc(uint64_t seq, uint64_t n, const audit_key *key)
{
    char why[256];
    uint8_t path[AUDIT_PROOF_MAX][AUDIT_HASH_LEN];
    size_t np;
    assert_int_equal(audit_inclusion_proof(leaf_of, NULL, seq - 1, n, path, AUDIT_PROOF_MAX,
                                           &np, why, sizeof why), AOS_OK);
    audit_sth h = {.tree_size = n, .time_ns = 1796212249000000000ull + n};
    assert_int_equal(audit_merkle_root(leaf_of, NULL, n, h.root, why, sizeof why), AOS_OK);
    assert_int_equal(audit_sth_sign(&h, key, why, sizeof why), AOS_OK);
    uint8_t pk[AUDIT_PK_LEN];
    audit_key_public(key, pk);
    json_t *p = json_array();
    for (size_t i = 0; i < np; i++)
        json_array_append_new(p, hex_json(path[i], AUDIT_HASH_LEN));
    json_t *d = json_pack("{s:i,s:I,s:o,s:o,s:{s:I,s:I,s:o,s:o,s:o}}", "version", 1, "seq",
                          (json_int_t)seq, "record", hex_json(L.rec[seq - 1], L.len[seq - 1]),
                          "path", p, "head", "tree_size", (json_int_t)n, "time_ns",
                          (json_int_t)h.time_ns, "root", hex_json(h.root, AUDIT_HASH_LEN),
                          "signature", hex_json(h.sig, AUDIT_SIG_LEN), "public_key",
                          hex_json(pk, AUDIT_PK_LEN));
    assert_non_null(d);
    return d;
}

/* ---- files and runs ------------------------------------------------------------------- */

static void write_text(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* d to a file of the test's directory; returns its path (static, one at a time). */
static const char *write_doc(const json_t *d)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/proof.json", g_dir);
    char *s = json_dumps(d, JSON_INDENT(2));
    assert_non_null(s);
    write_text(path, s, strlen(s));
    free(s);
    return path;
}

typedef struct run {
    int rc;
    char out[OUT_MAX], err[OUT_MAX];
} run;

static void drain(int fo, int fe, run *r)
{
    size_t used[2] = {0, 0};
    char *buf[2] = {r->out, r->err};
    struct pollfd p[2] = {{.fd = fo, .events = POLLIN}, {.fd = fe, .events = POLLIN}};
    int open_n = 2;
    while (open_n > 0) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail_msg("poll: %s", strerror(errno));
        }
        for (int k = 0; k < 2; k++) {
            if (p[k].fd < 0 || !(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char sink[4096];
            int room = used[k] < OUT_MAX - 1;
            ssize_t n = read(p[k].fd, room ? buf[k] + used[k] : sink,
                             room ? OUT_MAX - 1 - used[k] : sizeof sink);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(p[k].fd);
                p[k].fd = -1;
                open_n--;
            } else if (room) {
                used[k] += (size_t)n;
            }
        }
    }
    r->out[used[0]] = 0;
    r->err[used[1]] = 0;
}

/* aosctl ARGS... (NULL-terminated). No --data-dir and a data dir that does not exist: the
 * check must not need aosd. */
static void ctl(run *r, ...)
{
    const char *argv[16];
    size_t n = 0;
    argv[n++] = g_aosctl;
    va_list ap;
    va_start(ap, r);
    for (const char *a; (a = va_arg(ap, const char *)) && n < 15;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int po[2], pe[2];
    assert_int_equal(pipe2(po, O_CLOEXEC), 0);
    assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawn(&pid, g_aosctl, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0)
        fail_msg("spawn %s: %s", g_aosctl, strerror(rc));
    drain(po[0], pe[0], r);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        assert_int_equal(errno, EINTR);
    r->rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* check-proof --json on path (with --key when key is not NULL): the exit code is want and
 * the one document says failed (a check's name, "" for valid; NULL: an error document). */
static void expect(const char *path, const char *key, int want, const char *failed,
                   const char *what)
{
    static run r;
    if (key)
        ctl(&r, "audit", "check-proof", path, "--key", key, "--json", NULL);
    else
        ctl(&r, "audit", "check-proof", path, "--json", NULL);
    if (r.rc != want)
        fail_msg("%s: exit %d, not %d: %s%s", what, r.rc, want, r.out, r.err);
    if (r.err[0])
        fail_msg("%s: with --json nothing goes to stderr, got \"%s\"", what, r.err);
    json_error_t je;
    json_t *d = json_loads(r.out, 0, &je);
    if (!d)
        fail_msg("%s: stdout is not one JSON document: %s", what, r.out);
    if (failed) {
        assert_true(json_is_boolean(json_object_get(d, "valid")));
        assert_int_equal(json_is_true(json_object_get(d, "valid")), failed[0] == 0);
        const char *got = json_string_value(json_object_get(d, "failed"));
        assert_non_null(got);
        if (strcmp(got, failed))
            fail_msg("%s: failed \"%s\", not \"%s\": %s", what, got, failed, r.out);
        assert_int_equal(json_is_true(json_object_get(d, "key_pinned")), key != NULL);
        if (failed[0])
            assert_true(json_string_length(json_object_get(d, "why")) > 0);
    } else {
        json_t *e = json_object_get(d, "error");
        assert_non_null(e);
        assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), want);
        print_message("  %s: %s\n", what, json_string_value(json_object_get(e, "message")));
    }
    json_decref(d);
}

static void expect_doc(json_t *d, const char *key, int want, const char *failed,
                       const char *what)
{
    expect(write_doc(d), key, want, failed, what);
    json_decref(d);
}

/* The hex string at key of o with character i replaced by ch. */
static void poke(json_t *o, const char *key, size_t i, char ch)
{
    json_t *s = json_object_get(o, key);
    assert_true(json_is_string(s));
    char *t = strdup(json_string_value(s));
    assert_non_null(t);
    assert_true(i < strlen(t));
    t[i] = ch;
    json_object_set_new(o, key, json_string(t));
    free(t);
}

/* A different hex digit than the one at i of key. */
static void flip(json_t *o, const char *key, size_t i)
{
    char ch = json_string_value(json_object_get(o, key))[i];
    poke(o, key, i, ch == '0' ? '1' : '0');
}

static void cut(json_t *o, const char *key, size_t drop)
{
    json_t *s = json_object_get(o, key);
    size_t n = json_string_length(s);
    assert_true(n >= drop);
    json_object_set_new(o, key, json_stringn(json_string_value(s), n - drop));
}

static json_t *head_of(json_t *d)
{
    return json_object_get(d, "head");
}

static char *pk_hex(const uint8_t pk[AUDIT_PK_LEN])
{
    static char s[2][2 * AUDIT_PK_LEN + 1];
    static int k;
    k ^= 1;
    aos_hex(pk, AUDIT_PK_LEN, s[k]);
    return s[k];
}

/* ---- the tests ------------------------------------------------------------------------ */

/* Every record of every tree size proves, with and without the key pinned. */
static void every_record_of_every_size_checks_out(void **st)
{
    (void)st;
    for (uint64_t n = 1; n <= NREC; n++)
        for (uint64_t s = 1; s <= n; s++) {
            char what[64];
            snprintf(what, sizeof what, "seq %llu of %llu", (unsigned long long)s,
                     (unsigned long long)n);
            expect_doc(proof_doc(s, n, L.key), NULL, 0, "", what);
        }
    expect_doc(proof_doc(3, NREC, L.key), pk_hex(L.pk), 0, "", "pinned to its own key");
    /* people get one line saying so */
    static run r;
    json_t *d = proof_doc(5, NREC, L.key);
    const char *path = write_doc(d);
    json_decref(d);
    ctl(&r, "audit", "check-proof", path, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(!strncmp(r.out, "valid: record seq 5 is in the log of 7 records", 46));
    /* hex in capitals reads the same */
    d = proof_doc(2, NREC, L.key);
    char *s = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    char *q = strstr(s, "\"record\":\"");
    assert_non_null(q);
    for (q += strlen("\"record\":\""); *q && *q != '"'; q++)
        if (*q >= 'a' && *q <= 'f')
            *q = (char)(*q - 'a' + 'A');
    write_text(path, s, strlen(s));
    free(s);
    expect(path, NULL, 0, "", "capital hex");
}

/* A proof that does not hold exits 1 and names the first check that failed. */
static void a_bad_proof_names_the_failed_check(void **st)
{
    (void)st;
    json_t *d;
    /* a byte of the record's body: it still decodes, its leaf hash changes */
    d = proof_doc(4, NREC, L.key);
    flip(d, "record", 2 * (L.len[3] - AUDIT_HASH_LEN) - 4);
    expect_doc(d, NULL, 1, "inclusion", "a body byte changed");
    /* the version byte: it no longer decodes */
    d = proof_doc(4, NREC, L.key);
    poke(d, "record", 1, '2');
    expect_doc(d, NULL, 1, "record", "the record's version changed");
    /* a hash of the path */
    d = proof_doc(6, NREC, L.key);
    json_t *p = json_object_get(d, "path");
    assert_true(json_array_size(p) >= 2);
    json_t *h0 = json_object();
    json_object_set(h0, "h", json_array_get(p, 1));
    flip(h0, "h", 10);
    json_array_set(p, 1, json_object_get(h0, "h"));
    json_decref(h0);
    expect_doc(d, NULL, 1, "inclusion", "a path hash changed");
    /* a path one hash short, and one hash long */
    d = proof_doc(6, NREC, L.key);
    json_array_remove(json_object_get(d, "path"), 0);
    expect_doc(d, NULL, 1, "inclusion", "a path hash missing");
    d = proof_doc(6, NREC, L.key);
    p = json_object_get(d, "path");
    json_array_append(p, json_array_get(p, 0));
    expect_doc(d, NULL, 1, "inclusion", "a path hash too many");
    /* the file's seq is not the record's */
    d = proof_doc(2, NREC, L.key);
    json_object_set_new(d, "seq", json_integer(3));
    expect_doc(d, NULL, 1, "seq", "the seq changed");
    /* another record of the log under this record's path */
    d = proof_doc(2, NREC, L.key);
    json_object_set_new(d, "seq", json_integer(3));
    json_object_set_new(d, "record", hex_json(L.rec[2], L.len[2]));
    expect_doc(d, NULL, 1, "inclusion", "another record, the path of seq 2");
    /* a seq past the head */
    d = proof_doc(NREC, NREC, L.key);
    json_object_set_new(head_of(d), "tree_size", json_integer(NREC - 1));
    expect_doc(d, NULL, 1, "inclusion", "seq past the tree size");
    /* the head's root, size, time and signature */
    d = proof_doc(3, NREC, L.key);
    flip(head_of(d), "root", 0);
    expect_doc(d, NULL, 1, "inclusion", "the root changed");
    d = proof_doc(3, NREC, L.key);
    json_object_set_new(head_of(d), "time_ns", json_integer(1));
    expect_doc(d, NULL, 1, "signature", "the head's time changed");
    d = proof_doc(3, NREC, L.key);
    flip(head_of(d), "signature", 127);
    expect_doc(d, NULL, 1, "signature", "a signature byte changed");
    d = proof_doc(3, NREC, L.key);
    flip(head_of(d), "public_key", 5);
    expect_doc(d, NULL, 1, "signature", "the public key changed");
}

/* A head signed by another key: self-consistent, so it passes unless the key is pinned. */
static void a_pinned_key_refuses_a_foreign_head(void **st)
{
    (void)st;
    expect_doc(proof_doc(3, NREC, L.other), NULL, 0, "", "foreign head, nothing pinned");
    expect_doc(proof_doc(3, NREC, L.other), pk_hex(L.pk), 1, "key", "foreign head, pinned");
    expect_doc(proof_doc(3, NREC, L.key), pk_hex(L.other_pk), 1, "key",
               "own head, another key pinned");
    /* the foreign key's name swapped for ours: its signature then fails */
    json_t *d = proof_doc(3, NREC, L.other);
    json_object_set_new(head_of(d), "public_key", hex_json(L.pk, AUDIT_PK_LEN));
    expect_doc(d, pk_hex(L.pk), 1, "signature", "foreign head naming our key");
    /* a --key that is not one is a usage error before the file is read */
    static run r;
    ctl(&r, "audit", "check-proof", "/nonexistent", "--key", "abcd", "--json", NULL);
    assert_int_equal(r.rc, 2);
}

/* Anything that is not a proof exits 2, whatever it holds; a missing file exits 3. */
static void what_is_not_a_proof_exits_2(void **st)
{
    (void)st;
    char path[128];
    snprintf(path, sizeof path, "%s/other", g_dir);
    static const char *const texts[] = {
        "", "garbage", "\x00\x01\x02", "[]", "null", "{}", "{\"version\":1}",
        "{\"version\":1,\"seq\":1,\"record\":\"00\",\"path\":[],\"head\":{}}",
        "{\"a\":1,\"a\":2}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        write_text(path, texts[i], i == 2 ? 3 : strlen(texts[i]));
        char what[64];
        snprintf(what, sizeof what, "text %zu", i);
        expect(path, NULL, 2, NULL, what);
    }
    /* every field's type, range and hex length */
    struct {
        const char *field; /* in "head" when it starts with "head." */
        const char *json;  /* the value put there; NULL: drop the field, or the string cut */
        size_t cut;
    } bad[] = {
        {"version", "2", 0},           {"version", "\"1\"", 0},     {"seq", "0", 0},
        {"seq", "-1", 0},              {"seq", "1.0", 0},           {"seq", NULL, 0},
        {"record", NULL, 1},           {"record", "\"\"", 0},       {"record", "\"0g\"", 0},
        {"record", "12", 0},           {"path", "{}", 0},           {"path", "[1]", 0},
        {"path", "[\"00\"]", 0},       {"head", "[]", 0},           {"head.tree_size", "0", 0},
        {"head.tree_size", NULL, 0},   {"head.time_ns", "-5", 0},   {"head.root", NULL, 1},
        {"head.root", NULL, 2},        {"head.signature", NULL, 2}, {"head.public_key", NULL, 2},
        {"head.public_key", "\"zz\"", 0}, {"head", NULL, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *d = proof_doc(2, NREC, L.key), *o = d;
        const char *f = bad[i].field;
        if (!strncmp(f, "head.", 5)) {
            o = head_of(d);
            f += 5;
        }
        if (bad[i].cut)
            cut(o, f, bad[i].cut);
        else if (bad[i].json)
            json_object_set_new(o, f, json_loads(bad[i].json, JSON_DECODE_ANY, NULL));
        else
            json_object_del(o, f);
        char what[96];
        snprintf(what, sizeof what, "%s %s cut %zu", bad[i].field,
                 bad[i].json ? bad[i].json : "-", bad[i].cut);
        expect_doc(d, NULL, 2, NULL, what);
    }
    /* a path longer than any tree of u64 size has */
    json_t *d = proof_doc(2, NREC, L.key);
    json_t *p = json_object_get(d, "path");
    while (json_array_size(p) <= AUDIT_PROOF_MAX)
        json_array_append(p, json_array_get(p, 0));
    expect_doc(d, NULL, 2, NULL, "65 path hashes");
    /* a file larger than any proof, and a record hex past the record cap */
    size_t big = 2u * AUDIT_REC_MAX + 64u * 1024u + 1;
    char *s = malloc(big);
    assert_non_null(s);
    memset(s, ' ', big);
    s[0] = '{';
    s[big - 1] = '}';
    write_text(path, s, big);
    expect(path, NULL, 2, NULL, "a file too large");
    size_t hexn = 2u * (AUDIT_REC_MAX + 1);
    char *h = malloc(hexn + 1);
    assert_non_null(h);
    memset(h, '0', hexn);
    h[hexn] = 0;
    d = proof_doc(2, NREC, L.key);
    json_object_set_new(d, "record", json_string(h));
    expect_doc(d, NULL, 2, NULL, "a record past the cap");
    free(h);
    free(s);
    /* a directory, a missing file */
    expect(g_dir, NULL, 2, NULL, "a directory");
    snprintf(path, sizeof path, "%s/absent", g_dir);
    expect(path, NULL, 3, NULL, "a missing file");
    unlink(path);
}

static int setup(void **st)
{
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/aosctl-proof-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    /* an aosd would not be found here: check-proof must not look for one */
    setenv("AOS_DATA_DIR", "/nonexistent/aos-proof-test", 1);
    build_log();
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    char path[128];
    snprintf(path, sizeof path, "%s/proof.json", g_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/other", g_dir);
    unlink(path);
    rmdir(g_dir);
    audit_key_free(L.key);
    audit_key_free(L.other);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s AOSCTL\n", argv[0]);
        return 2;
    }
    g_aosctl = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_record_of_every_size_checks_out),
        cmocka_unit_test(a_bad_proof_names_the_failed_check),
        cmocka_unit_test(a_pinned_key_refuses_a_foreign_head),
        cmocka_unit_test(what_is_not_a_proof_exits_2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
