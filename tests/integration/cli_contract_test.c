/* aosctl's contract with the programs that call it, checked against a real aosd: every command
 * aosctl --desc lists runs with --json and its output validates against the schema it publishes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <regex.h>
#include <setjmp.h>
#include <signal.h>
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

#include "aos/storage.h"
#include "harness.h"

extern char **environ;

static h_aosd *H;
static json_t *DESC; /* aosctl --desc, read once */

#define OUT_MAX (1u << 20)
#define ARGV_MAX 48
#define AGENT "contract-agent"
#define CONTRACT_RUN "contract-run-1" /* {run}: a run audit replay shows */
#define RUNNER "contract-runner"       /* its agent (not AGENT: kv ls counts its keys) */
#define BOT "contract-bot" /* the agent of the deployment file {deploy} */
#define CTL_POS_MAX 8

/* ---- running aosctl ------------------------------------------------------------------ */

typedef struct run {
    int rc;
    char out[OUT_MAX], err[64 * 1024];
} run;

/* Reads both pipes to their end, so aosctl never blocks on a full one; keeps what fits. */
static void drain(int fo, int fe, run *r)
{
    size_t used[2] = {0, 0}, cap[2] = {sizeof r->out - 1, sizeof r->err - 1};
    char *buf[2] = {r->out, r->err}, sink[4096];
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
            int room = used[k] < cap[k];
            ssize_t n = read(p[k].fd, room ? buf[k] + used[k] : sink,
                             room ? cap[k] - used[k] : sizeof sink);
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

/* aosctl ARGV... exactly as given (no --data-dir added: where it goes is under test). */
static void ctl_argv(run *r, const char *const *argv)
{
    const char *args[ARGV_MAX + 2];
    size_t n = 0;
    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s", h_bin("aosctl"));
    args[n++] = exe;
    for (size_t i = 0; argv[i]; i++) {
        if (n > ARGV_MAX)
            fail_msg("ctl: more than %d arguments", ARGV_MAX);
        args[n++] = argv[i];
    }
    args[n] = NULL;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0)
        fail_msg("pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, (char *const *)args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    if (rc != 0)
        fail_msg("spawn %s: %s", exe, strerror(rc));
    drain(po[0], pe[0], r);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            fail_msg("waitpid: %s", strerror(errno));
    r->rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* aosctl ARGS... from a NULL-terminated list. */
#define CTL(r, ...) ctl_argv((r), (const char *const[]){__VA_ARGS__, NULL})

/* The one JSON document on stdout (jansson refuses anything after it), or the test fails. */
static json_t *doc_of(const run *r, const char *what)
{
    json_error_t je;
    json_t *d = json_loads(r->out, 0, &je);
    if (!d)
        fail_msg("%s: stdout is not one JSON document (%s at %d): rc %d, out \"%.400s\", "
                 "err \"%.400s\"", what, je.text, je.position, r->rc, r->out, r->err);
    return d;
}

/* ---- a JSON Schema subset: what aosctl's schemas use -------------------------------- */

static int fail_at(char *why, size_t cap, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(char *why, size_t cap, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(why, cap, "%s: %s", path[0] ? path : "$", msg);
    return -1;
}

static int type_is(const char *t, const json_t *v)
{
    if (!strcmp(t, "object"))
        return json_is_object(v);
    if (!strcmp(t, "array"))
        return json_is_array(v);
    if (!strcmp(t, "string"))
        return json_is_string(v);
    if (!strcmp(t, "integer"))
        return json_is_integer(v);
    if (!strcmp(t, "number"))
        return json_is_number(v);
    if (!strcmp(t, "boolean"))
        return json_is_boolean(v);
    if (!strcmp(t, "null"))
        return json_is_null(v);
    return -1;
}

/* Validates v against schema s; -1 with why (path and reason) when it does not. A keyword
 * this checker does not know fails too, so a schema never passes by being misunderstood. */
static int check(const json_t *s, const json_t *v, const char *path, char *why, size_t cap)
{
    static const char *const notes[] = {"$schema", "description", "title", "default", NULL};
    const char *kw;
    json_t *arg;
    if (!json_is_object(s))
        return fail_at(why, cap, path, "the schema is not an object");
    json_object_foreach((json_t *)s, kw, arg) {
        int known = 0;
        for (size_t i = 0; notes[i]; i++)
            known |= !strcmp(kw, notes[i]);
        if (known)
            continue;
        if (!strcmp(kw, "type")) {
            int ok = 0;
            if (json_is_string(arg)) {
                ok = type_is(json_string_value(arg), v);
            } else if (json_is_array(arg)) {
                size_t i;
                json_t *t;
                json_array_foreach(arg, i, t) {
                    int m = type_is(json_string_value(t), v);
                    if (m < 0)
                        return fail_at(why, cap, path, "unknown type in the schema");
                    ok |= m;
                }
            }
            if (ok < 0)
                return fail_at(why, cap, path, "unknown type in the schema");
            if (!ok) {
                char t[128];
                size_t n = json_dumpb(arg, t, sizeof t - 1, JSON_ENCODE_ANY);
                t[n < sizeof t ? n : sizeof t - 1] = 0;
                return fail_at(why, cap, path, "not of type %s", t);
            }
        } else if (!strcmp(kw, "required")) {
            size_t i;
            json_t *k;
            if (!json_is_object(v))
                continue; /* "required" only constrains objects */
            json_array_foreach(arg, i, k)
                if (!json_object_get(v, json_string_value(k)))
                    return fail_at(why, cap, path, "required \"%s\" is missing",
                                   json_string_value(k));
        } else if (!strcmp(kw, "properties")) {
            const char *name;
            json_t *sub;
            if (!json_is_object(v))
                continue;
            json_object_foreach(arg, name, sub) {
                json_t *pv = json_object_get(v, name);
                char p[512];
                snprintf(p, sizeof p, "%s.%s", path, name);
                if (pv && check(sub, pv, p, why, cap) != 0)
                    return -1;
            }
        } else if (!strcmp(kw, "items")) {
            size_t i;
            json_t *item;
            if (!json_is_array(v))
                continue;
            json_array_foreach(v, i, item) {
                char p[512];
                snprintf(p, sizeof p, "%s[%zu]", path, i);
                if (check(arg, item, p, why, cap) != 0)
                    return -1;
            }
        } else if (!strcmp(kw, "enum")) {
            size_t i;
            json_t *e;
            int hit = 0;
            json_array_foreach(arg, i, e)
                hit |= json_equal(e, (json_t *)v);
            if (!hit)
                return fail_at(why, cap, path, "not one of the enum");
        } else if (!strcmp(kw, "const")) {
            if (!json_equal(arg, (json_t *)v))
                return fail_at(why, cap, path, "not the const value");
        } else if (!strcmp(kw, "minimum") || !strcmp(kw, "maximum")) {
            if (!json_is_number(v))
                continue;
            double x = json_number_value(v), lim = json_number_value(arg);
            if (kw[1] == 'i' ? x < lim : x > lim)
                return fail_at(why, cap, path, "%g is past the %s %g", x, kw, lim);
        } else if (!strcmp(kw, "pattern")) {
            if (!json_is_string(v))
                continue;
            regex_t re;
            if (regcomp(&re, json_string_value(arg), REG_EXTENDED | REG_NOSUB) != 0)
                return fail_at(why, cap, path, "the pattern does not compile");
            int m = regexec(&re, json_string_value(v), 0, NULL, 0);
            regfree(&re);
            if (m != 0)
                return fail_at(why, cap, path, "\"%s\" does not match %s",
                               json_string_value(v), json_string_value(arg));
        } else {
            return fail_at(why, cap, path, "keyword \"%s\" is not implemented by the checker",
                           kw);
        }
    }
    return 0;
}

static void assert_valid(const json_t *schema, const json_t *v, const char *what)
{
    char why[1024];
    if (check(schema, v, "", why, sizeof why) != 0) {
        static char text[4096];
        size_t n = json_dumpb(v, text, sizeof text - 1, JSON_COMPACT);
        text[n < sizeof text ? n : sizeof text - 1] = 0;
        fail_msg("%s: output does not match its schema: %s\noutput: %s", what, why, text);
    }
}

/* The checker checks: a document that breaks a schema is caught. */
static void the_schema_checker_rejects_what_it_should(void **st)
{
    (void)st;
    json_t *s = json_loads("{\"type\":\"object\",\"required\":[\"a\"],\"properties\":{\"a\":"
                           "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":1,"
                           "\"enum\":[1,2]}},\"b\":{\"type\":[\"string\",\"null\"],"
                           "\"pattern\":\"^x+$\"},\"c\":{\"const\":true}}}", 0, NULL);
    assert_non_null(s);
    const char *good[] = {"{\"a\":[1,2]}", "{\"a\":[],\"b\":null,\"c\":true}",
                          "{\"a\":[2],\"b\":\"xx\"}"};
    const char *bad[] = {"[]", "{}", "{\"a\":[3]}", "{\"a\":[0]}", "{\"a\":[\"1\"]}",
                         "{\"a\":[],\"b\":1}", "{\"a\":[],\"b\":\"xy\"}", "{\"a\":[],\"c\":1}"};
    char why[512];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        json_t *v = json_loads(good[i], 0, NULL);
        assert_int_equal(check(s, v, "", why, sizeof why), 0);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = json_loads(bad[i], 0, NULL);
        assert_int_equal(check(s, v, "", why, sizeof why), -1);
        json_decref(v);
    }
    json_t *odd = json_loads("{\"oneOf\":[]}", 0, NULL), *v = json_integer(1);
    assert_int_equal(check(odd, v, "", why, sizeof why), -1);
    json_decref(odd);
    json_decref(v);
    json_decref(s);
}

/* ---- the sample arguments ----------------------------------------------------------- */

/* Arguments per command, run in this order: later ones use what earlier ones made ("{id0}"
 * and "{rc0}" are the first message's id and receipt from queue recv). The flags are given
 * in both forms and after the positionals on purpose. Every command of --desc must be here. */
static const struct sample {
    const char *cmd;
    const char *args[8];
} samples[] = {
    {"status", {NULL}},
    {"logs", {"storage", "-n", "5"}},
    {"logs", {"-n", "3"}},
    /* run last of all, by the_shutdown_stops_aosd_last: it ends the aosd every case shares */
    {"shutdown", {"--timeout", "10"}},
    {"backup", {"{backup}"}},
    {"restore", {"{backup}", "--data-dir", "{restored}"}},
    {"config check", {NULL}},
    {"server stats", {"storage"}},
    {"server stats", {"aos-llm"}},
    {"ping", {"storage", "--count=3"}},
    {"ping", {"-n", "2", "aos-tool"}},
    {"kv put", {AGENT, "k1", "v1", "--ttl", "600000"}},
    {"kv put", {AGENT, "k2", "v2", "--if-version=0"}},
    {"kv get", {AGENT, "k1"}},
    {"kv ls", {AGENT, "--limit=5"}},
    {"kv ls", {"--limit", "1", AGENT, "k"}},
    {"kv rm", {AGENT, "k2", "--if-version=1"}},
    {"queue send", {AGENT, "cq", "m1"}},
    {"queue send", {AGENT, "cq", "m2", "--max-tries=3", "--delay", "0"}},
    {"queue recv", {AGENT, "cq", "--max=2", "--visibility", "60000", "--wait=1000"}},
    {"queue ack", {AGENT, "cq", "{id0}", "{rc0}"}},
    {"queue nack", {AGENT, "cq", "{id1}", "{rc1}", "--delay=0"}},
    {"queue ls", {AGENT}},
    {"checkpoint ls", {AGENT, "--limit=10"}},
    {"checkpoint ls", {AGENT, "default"}},
    {"llm providers", {NULL}},
    {"llm test", {"sim", "hello", "--max-tokens=50", "--temperature", "0.5", "--system", "be"}},
    {"llm test", {"--temperature=0", "sim/sim-1", "hi"}},
    {"llm usage", {NULL}},
    /* --since other than 0 waits on aos-llm's llm.usage taking a bigint $2 (see the report) */
    {"llm usage", {"--since=0", "--agent", AGENT}},
    /* a head covering what came before, a proof against it written to a file and checked
     * offline, also with the key that head named pinned */
    {"audit head", {"--sign-now"}},
    {"audit head", {NULL}},
    {"audit prove", {"1", "--out", "{proof}"}},
    {"audit prove", {"--size={size}", "2"}},
    {"audit check-proof", {"{proof}"}},
    {"audit check-proof", {"--key", "{key}", "{proof}"}},
    {"audit verify", {NULL}},
    {"audit tail", {"--limit=5"}},
    {"audit tail", {"--agent", AGENT, "--after", "0", "-n", "3"}},
    {"audit trace", {"--trace", "{trace}"}},
    {"audit trace", {"--agent", AGENT}},
    {"audit replay", {RUNNER, "{run}"}},
    /* retention: the records up to the head audit head signed go to a directory outside
     * the data dir, and are dropped (verify ran above, on the whole log) */
    {"audit archive", {"--before", "{archive_before}", "--out", "{archive}"}},
    /* that archive, offline: its files alone, then with the head's key pinned */
    {"audit check-archive", {"{archive}"}},
    {"audit check-archive", {"--key", "{key}", "{archive}"}},
    {"tools", {NULL}},
    {"tools", {"--render=cli"}},
    {"tools", {"--render", "schema"}},
    {"tools show", {"grep"}},
    {"tool run", {AGENT, "sh", "{\"command\":\"echo hi; echo err >&2\"}"}},
    {"tool run", {AGENT, "write_file", "{\"path\":\"x.txt\",\"content\":\"y\"}",
                  "--time=20000"}},
    {"sched set", {AGENT, "--weight=2", "--priority", "batch", "--token-budget=100000"}},
    {"sched set", {"--cost-budget", "1.5", AGENT, "--reset-usage"}},
    {"sched", {NULL}},
    {"mem show", {AGENT}},
    {"mem search", {AGENT, "hello world", "--mode=fts", "-n", "3"}},
    /* full text only: an embedding would add a usage row the llm usage table test counts */
    {"mem search", {"--collection", "notes", AGENT, "hello", "--mode", "fts"}},
    {"mem stats", {NULL}},
    /* the agents of {deploy} (one idle aos-test-agent): made, listed, driven, stopped */
    {"apply", {"-f", "{deploy}", "--dry-run"}},
    {"apply", {"--file={deploy}", "--verbose"}},
    {"ps", {NULL}},
    {"top", {"--interval=500"}},
    {"agent inspect", {BOT}},
    {"agent logs", {BOT, "--bytes", "4096"}},
    {"agent runs", {AGENT}},
    {"agent runs", {AGENT, "--prune"}},
    /* mail from the operator into the bot's inbox (it never receives: it stays there) */
    {"msg send", {BOT, "hello bot"}},
    {"msg send", {"--id=00112233445566778899aabbccddeeff", BOT, "once"}},
    {"msg ls", {BOT, "--limit=10"}},
    {"msg ls", {"-n", "1", BOT}},
    /* the front door's keys of that agent: made (printed once), listed, revoked */
    {"agent key create", {BOT}},
    {"agent key ls", {NULL}},
    {"agent key ls", {BOT}},
    {"agent key revoke", {BOT}},
    {"agent suspend", {BOT}},
    {"agent resume", {BOT}},
    {"agent kill", {BOT}},
    {"agent restart", {BOT}},
    {"agent stop", {BOT}},
    {"server restart", {"audit"}},
    {"server kill", {"aos-audit"}},
};
#define NSAMPLES (sizeof samples / sizeof samples[0])

static char ids[2][32], receipts[2][64];
/* audit: the proof file (in the data dir), and the key and size of the head audit head gave */
static char proof_path[PATH_MAX], head_key[80], head_size[32], size_flag[48];
static char trace_hex[40]; /* a trace audit tail showed, for audit trace */
static char deploy_path[PATH_MAX]; /* the deployment file of apply, in the data dir */

/* {deploy}: one idle test agent, written on first use. */
static const char *deploy_file(void)
{
    if (deploy_path[0])
        return deploy_path;
    snprintf(deploy_path, sizeof deploy_path, "%s/contract-deploy.yaml", h_data_dir(H));
    FILE *f = fopen(deploy_path, "w");
    if (!f)
        fail_msg("%s: %s", deploy_path, strerror(errno));
    fprintf(f, "agents:\n  - name: %s\n    program: aos-test-agent\n    args: [idle]\n", BOT);
    if (fclose(f) != 0)
        fail_msg("%s: %s", deploy_path, strerror(errno));
    return deploy_path;
}

static char backup_path[PATH_MAX], restored_path[PATH_MAX];
static char archive_path[PATH_MAX], archive_before[32];

/* A sample argument with its placeholder filled (or a stand-in when none was recorded). */
static const char *fill(const char *a)
{
    if (!strcmp(a, "{proof}")) {
        snprintf(proof_path, sizeof proof_path, "%s/contract-proof.json", h_data_dir(H));
        return proof_path;
    }
    if (!strcmp(a, "{deploy}"))
        return deploy_file();
    if (!strcmp(a, "{backup}") || !strcmp(a, "{restored}")) {
        /* outside the data dir (a backup into the dir it copies is refused), new per run */
        snprintf(a[1] == 'b' ? backup_path : restored_path, PATH_MAX, "/tmp/it-contract-%s-%d",
                 a[1] == 'b' ? "backup" : "restored", (int)getpid());
        return a[1] == 'b' ? backup_path : restored_path;
    }
    if (!strcmp(a, "{archive}")) {
        snprintf(archive_path, sizeof archive_path, "/tmp/it-contract-archive-%d",
                 (int)getpid());
        return archive_path;
    }
    if (!strcmp(a, "{archive_before}")) {
        snprintf(archive_before, sizeof archive_before, "%lld",
                 head_size[0] ? strtoll(head_size, NULL, 10) + 1 : 3);
        return archive_before;
    }
    if (!strcmp(a, "--file={deploy}")) {
        static char flag[PATH_MAX + 16];
        snprintf(flag, sizeof flag, "--file=%s", deploy_file());
        return flag;
    }
    if (!strcmp(a, "{trace}"))
        return trace_hex[0] ? trace_hex : "00000000000000000000000000000000";
    if (!strcmp(a, "{run}")) {
        /* a run of the agent's, one step of one write, for audit replay (once) */
        static int made;
        if (!made) {
            aos_call_opts o = {.agent_id = RUNNER, .run_id = CONTRACT_RUN, .step = 1,
                               .timeout_ms = 10000};
            char why[AOS_ERRMSG_MAX + 1];
            aos_err e = aos_kv_put(h_conn(H), &o, "replayed", "v", 1, NULL, NULL, why,
                                   sizeof why);
            if (e != AOS_OK)
                fail_msg("kv put for {run}: %s: %s", aos_err_name(e), why);
            made = 1;
        }
        return CONTRACT_RUN;
    }
    if (!strcmp(a, "{key}"))
        return head_key[0] ? head_key : "0000000000000000000000000000000000000000000000000000"
                                        "000000000000";
    if (!strcmp(a, "--size={size}")) {
        snprintf(size_flag, sizeof size_flag, "--size=%s", head_size[0] ? head_size : "2");
        return size_flag;
    }
    for (int k = 0; k < 2; k++) {
        char ph[8];
        snprintf(ph, sizeof ph, "{id%d}", k);
        if (!strcmp(a, ph))
            return ids[k][0] ? ids[k] : "1";
        snprintf(ph, sizeof ph, "{rc%d}", k);
        if (!strcmp(a, ph))
            return receipts[k][0] ? receipts[k] : "00000000000000000000000000000000";
    }
    return a;
}

static const struct sample *sample_of(const char *cmd)
{
    for (size_t i = 0; i < NSAMPLES; i++)
        if (!strcmp(samples[i].cmd, cmd))
            return &samples[i];
    return NULL;
}

/* argv = the command's words, then extra before, the sample's arguments, extra after. */
static size_t build(const char **argv, const json_t *cmd, const struct sample *s,
                    const char *const *pre, const char *const *post)
{
    size_t n = 0, i;
    json_t *w;
    json_array_foreach(json_object_get(cmd, "words"), i, w)
        argv[n++] = json_string_value(w);
    for (i = 0; pre && pre[i]; i++)
        argv[n++] = pre[i];
    for (i = 0; s && s->args[i]; i++)
        argv[n++] = fill(s->args[i]);
    for (i = 0; post && post[i]; i++)
        argv[n++] = post[i];
    argv[n] = NULL;
    return n;
}

static json_t *desc_cmd(const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(DESC, "commands"), i, c)
        if (!strcmp(json_string_value(json_object_get(c, "name")), name))
            return c;
    fail_msg("aosctl --desc has no command \"%s\"", name);
    return NULL;
}

/* ---- the tests ------------------------------------------------------------------------ */

/* The description is complete and says the same alone as in the whole. */
static void the_description_covers_every_command(void **st)
{
    (void)st;
    assert_non_null(json_object_get(DESC, "global_flags"));
    assert_true(json_is_object(json_object_get(DESC, "error_output")));
    assert_true(json_is_object(json_object_get(DESC, "exit_codes")));
    json_t *cmds = json_object_get(DESC, "commands");
    assert_true(json_array_size(cmds) >= 14);
    size_t i, j;
    json_t *c, *d;
    json_array_foreach(cmds, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        assert_non_null(name);
        print_message("command: %s\n", name);
        assert_true(json_is_string(json_object_get(c, "summary")));
        assert_true(json_is_string(json_object_get(c, "usage")));
        assert_true(json_is_array(json_object_get(c, "arguments")));
        assert_true(json_is_array(json_object_get(c, "flags")));
        assert_true(json_is_object(json_object_get(c, "output")));
        assert_true(json_is_object(json_object_get(c, "exit_codes")));
        if (!sample_of(name))
            fail_msg("command \"%s\" has no sample arguments in this test: add them", name);
        json_t *a;
        json_array_foreach(json_object_get(c, "flags"), j, a) {
            const char *t = json_string_value(json_object_get(a, "type"));
            assert_non_null(t);
            assert_true(strncmp(json_string_value(json_object_get(a, "name")), "--", 2) == 0);
            if (!strcmp(t, "integer")) {
                assert_true(json_is_integer(json_object_get(a, "minimum")));
                assert_true(json_is_integer(json_object_get(a, "maximum")));
            }
            json_t *def = json_object_get(a, "default");
            if (def && !strcmp(t, "integer"))
                assert_true(json_is_integer(def));
        }
        /* a command's words start another's only when it takes no positionals ("tools",
         * "tools show"): otherwise "tools show" could be "tools" given "show" */
        const char *mine = name;
        json_array_foreach(cmds, j, d) {
            const char *other = json_string_value(json_object_get(d, "name"));
            size_t n = strlen(mine);
            if (j != i && !strncmp(other, mine, n) && other[n] == ' ' &&
                json_array_size(json_object_get(c, "arguments")))
                fail_msg("\"%s\" takes positionals and is a prefix of \"%s\"", mine, other);
        }
        /* aosctl CMD --desc is the same entry, plus what every command shares */
        const char *argv[ARGV_MAX];
        const char *post[] = {"--desc", NULL};
        build(argv, c, NULL, NULL, post);
        static run r;
        ctl_argv(&r, argv);
        assert_int_equal(r.rc, 0);
        json_t *one = doc_of(&r, name);
        assert_true(json_is_array(json_object_get(one, "global_flags")));
        assert_true(json_equal(json_object_get(one, "error_output"),
                               json_object_get(DESC, "error_output")));
        json_object_del(one, "global_flags");
        json_object_del(one, "error_output");
        assert_true(json_equal(one, c));
        json_decref(one);
    }
    for (i = 0; i < NSAMPLES; i++)
        desc_cmd(samples[i].cmd); /* a sample for a command that is gone fails here */
}

/* Remembers the ids and receipts queue recv gave, for ack and nack. */
static void keep_receipts(const json_t *out)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(out, "messages"), i, m) {
        if (i >= 2)
            break;
        snprintf(ids[i], sizeof ids[i], "%lld",
                 (long long)json_integer_value(json_object_get(m, "id")));
        snprintf(receipts[i], sizeof receipts[i], "%s",
                 json_string_value(json_object_get(m, "receipt")));
    }
}

/* Every command, with --json at the end of the line, prints what its schema says. */
static void every_command_prints_what_its_schema_says(void **st)
{
    (void)st;
    char why[AOS_ERRMSG_MAX + 1];
    aos_call_opts o = {.agent_id = AGENT, .timeout_ms = 20000};
    assert_int_equal(aos_ckpt_save(h_conn(H), &o, NULL, "state", 5, "{\"step\":1}", NULL, why,
                                   sizeof why), AOS_OK);
    for (size_t i = 0; i < NSAMPLES; i++) {
        if (!strcmp(samples[i].cmd, "shutdown"))
            continue;
        json_t *c = desc_cmd(samples[i].cmd);
        const char *argv[ARGV_MAX];
        const char *pre[] = {"--data-dir", h_data_dir(H), NULL}, *post[] = {"--json", NULL};
        /* the global --data-dir goes between the command's words and its arguments */
        build(argv, c, &samples[i], pre, post);
        static run r;
        /* a server command finds audit running, and leaves it running again as another pid */
        int server = !strcmp(samples[i].cmd, "server kill") ||
                     !strcmp(samples[i].cmd, "server restart");
        pid_t old = server ? h_wait_running(H, "audit", 0, 30000) : 0;
        if (server)
            assert_true(old > 0);
        ctl_argv(&r, argv);
        if (server)
            assert_true(h_wait_running(H, "audit", old, 30000) > 0);
        if (r.rc != 0)
            fail_msg("%s: exit %d: %s%s", samples[i].cmd, r.rc, r.out, r.err);
        json_t *out = doc_of(&r, samples[i].cmd);
        assert_valid(json_object_get(c, "output"), out, samples[i].cmd);
        if (!strcmp(samples[i].cmd, "queue recv")) {
            assert_int_equal(json_array_size(json_object_get(out, "messages")), 2);
            keep_receipts(out);
        }
        if (!strcmp(samples[i].cmd, "llm providers")) {
            /* no aos.yaml: the simulator alone, always reachable, its models listed */
            json_t *p = json_array_get(json_object_get(out, "providers"), 0);
            assert_string_equal(json_string_value(json_object_get(p, "name")), "sim");
            assert_true(json_is_true(json_object_get(p, "reachable")));
            assert_true(json_array_size(json_object_get(p, "models")) >= 1);
        }
        if (!strcmp(samples[i].cmd, "llm test")) {
            /* a bare provider resolved to its chat model, and the answer came in parts */
            assert_string_equal(json_string_value(json_object_get(out, "model")), "sim-1");
            assert_true(json_integer_value(json_object_get(out, "parts")) >= 1);
            assert_non_null(strstr(json_string_value(json_object_get(out, "text")), "sim"));
        }
        if (!strcmp(samples[i].cmd, "llm usage")) {
            /* the two llm test calls are on the books, totals the sum of the rows */
            json_t *tot = json_object_get(out, "totals"), *row;
            size_t k;
            json_int_t calls = 0;
            json_array_foreach(json_object_get(out, "rows"), k, row)
                calls += json_integer_value(json_object_get(row, "calls"));
            assert_int_equal(calls, json_integer_value(json_object_get(tot, "calls")));
            if (!json_string_length(json_object_get(out, "agent")))
                assert_true(calls >= 2);
        }
        if (!strcmp(samples[i].cmd, "audit head")) {
            /* the calls above are in the log: prove 2 against this size below */
            json_int_t size = json_integer_value(json_object_get(out, "tree_size"));
            assert_true(size >= 2);
            snprintf(head_size, sizeof head_size, "%lld", (long long)size);
            snprintf(head_key, sizeof head_key, "%s",
                     json_string_value(json_object_get(out, "public_key")));
        }
        if (!strcmp(samples[i].cmd, "audit prove")) {
            json_t *head = json_object_get(out, "head");
            assert_true(json_integer_value(json_object_get(out, "seq")) >= 1);
            assert_string_equal(json_string_value(json_object_get(head, "public_key")),
                                head_key);
            if (json_object_get(out, "out"))
                assert_string_equal(json_string_value(json_object_get(out, "out")),
                                    proof_path);
            else /* --size: against that head */
                assert_int_equal(json_integer_value(json_object_get(head, "tree_size")),
                                 strtoll(head_size, NULL, 10));
        }
        if (!strcmp(samples[i].cmd, "audit check-proof")) {
            assert_true(json_is_true(json_object_get(out, "valid")));
            assert_int_equal(json_integer_value(json_object_get(out, "seq")), 1);
        }
        if (!strcmp(samples[i].cmd, "audit trace")) {
            json_t *recs = json_object_get(out, "records");
            assert_true(json_array_size(recs) >= 1);
            size_t k;
            json_t *rec;
            json_array_foreach(recs, k, rec) {
                if (!strcmp(samples[i].args[0], "--trace"))
                    assert_string_equal(json_string_value(json_object_get(rec, "trace_id")),
                                        trace_hex);
                else
                    assert_string_equal(json_string_value(json_object_get(rec, "agent")),
                                        AGENT);
                assert_true(json_integer_value(json_object_get(rec, "depth")) >= 0);
            }
        }
        if (!strcmp(samples[i].cmd, "audit archive")) {
            /* the cut is the head audit head signed: everything up to it, dropped */
            assert_int_equal(json_integer_value(json_object_get(out, "to_seq")),
                             strtoll(head_size, NULL, 10));
            assert_int_equal(json_integer_value(json_object_get(out, "dropped")),
                             json_integer_value(json_object_get(out, "records")));
            assert_string_equal(json_string_value(json_object_get(out, "out")), archive_path);
        }
        if (!strcmp(samples[i].cmd, "audit check-archive")) {
            assert_true(json_is_true(json_object_get(out, "valid")));
            assert_int_equal(json_integer_value(json_object_get(out, "to_seq")),
                             strtoll(head_size, NULL, 10));
            assert_int_equal(json_integer_value(json_object_get(out, "version")), 2);
        }
        if (!strcmp(samples[i].cmd, "audit replay")) {
            /* the one step of {run}: its write's records, every content checked */
            assert_string_equal(json_string_value(json_object_get(out, "run")), CONTRACT_RUN);
            assert_int_equal(json_integer_value(json_object_get(out, "problems")), 0);
            json_t *st0 = json_array_get(json_object_get(out, "steps"), 0);
            assert_int_equal(json_integer_value(json_object_get(st0, "step")), 1);
            json_t *rec = json_array_get(json_object_get(st0, "records"), 0);
            assert_string_equal(json_string_value(json_object_get(rec, "method")),
                                "storage.kv.put");
        }
        if (!strcmp(samples[i].cmd, "audit verify")) {
            /* a log nobody tampered with */
            assert_string_equal(json_string_value(json_object_get(out, "kind")), "ok");
            assert_true(json_integer_value(json_object_get(out, "records")) >= 2);
        }
        if (!strcmp(samples[i].cmd, "audit tail")) {
            size_t k, n = json_array_size(out);
            json_t *rec;
            json_int_t prev = 0;
            assert_true(n >= 1);
            json_array_foreach(out, k, rec) {
                json_int_t seq = json_integer_value(json_object_get(rec, "seq"));
                assert_true(seq > prev); /* oldest first */
                prev = seq;
                const char *tr = json_string_value(json_object_get(rec, "trace_id"));
                if (!trace_hex[0] && tr && strlen(tr) == 32)
                    snprintf(trace_hex, sizeof trace_hex, "%s", tr);
                if (samples[i].args[0] && !strcmp(samples[i].args[0], "--agent"))
                    assert_string_equal(json_string_value(json_object_get(rec, "agent")),
                                        AGENT);
            }
            assert_true(n <= (samples[i].args[0] && !strcmp(samples[i].args[0], "--agent")
                              ? 3u : 5u));
        }
        if (!strcmp(samples[i].cmd, "apply")) {
            /* the dry run would create the bot; the apply after it does */
            int dry = !strcmp(samples[i].args[1], "{deploy}"), seen = 0;
            size_t k;
            json_t *ch;
            assert_true(json_is_boolean(json_object_get(out, "applied")));
            assert_int_equal(json_is_true(json_object_get(out, "applied")), !dry);
            json_array_foreach(json_object_get(out, "changes"), k, ch)
                seen |= !strcmp(json_string_value(json_object_get(ch, "name")), BOT) &&
                        !strcmp(json_string_value(json_object_get(ch, "action")), "create");
            assert_true(seen);
        }
        if (!strcmp(samples[i].cmd, "ps") || !strcmp(samples[i].cmd, "top")) {
            size_t k;
            json_t *ag;
            int seen = 0;
            json_array_foreach(json_object_get(out, "agents"), k, ag)
                seen |= !strcmp(json_string_value(json_object_get(ag, "name")), BOT);
            assert_true(seen);
        }
        if (!strcmp(samples[i].cmd, "agent inspect")) {
            assert_string_equal(json_string_value(json_object_get(out, "name")), BOT);
            assert_true(json_is_object(json_object_get(out, "manifest")));
        }
        if (!strncmp(samples[i].cmd, "agent ", 6) && json_object_get(out, "action"))
            assert_string_equal(json_string_value(json_object_get(out, "action")),
                                samples[i].cmd + 6);
        if (!strcmp(samples[i].cmd, "checkpoint ls"))
            assert_true(json_array_size(json_object_get(out, "checkpoints")) >= 1);
        if (!strcmp(samples[i].cmd, "status")) {
            json_t *kids = json_object_get(out, "children");
            assert_true(json_array_size(kids) >= 6);
        }
        if (!strcmp(samples[i].cmd, "restore"))
            assert_string_equal(json_string_value(json_object_get(out, "postgres")),
                                "pg_basebackup");
        json_decref(out);
    }
    if (backup_path[0])
        h_remove_dir(backup_path);
    if (archive_path[0])
        h_remove_dir(archive_path);
    if (restored_path[0])
        h_remove_dir(restored_path);
}

static void assert_usage_doc(const run *r, const json_t *schema, const char *what)
{
    if (r->rc != 2)
        fail_msg("%s: exit %d, not 2: %s%s", what, r->rc, r->out, r->err);
    json_t *d = doc_of(r, what);
    assert_valid(schema, d, what);
    json_t *e = json_object_get(d, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "code")), AOS_ERR_USAGE);
    assert_string_equal(json_string_value(json_object_get(e, "name")), "USAGE");
    assert_int_equal(json_integer_value(json_object_get(e, "exit_code")), 2);
    if (r->err[0])
        fail_msg("%s: with --json nothing goes to stderr, got \"%s\"", what, r->err);
    json_decref(d);
}

/* With --json anywhere, a usage error is the error document and exit 2, for every command. */
static void usage_errors_are_json_documents_with_exit_2(void **st)
{
    (void)st;
    const json_t *err_schema = json_object_get(DESC, "error_output");
    static run r;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(DESC, "commands"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const struct sample *s = sample_of(name);
        const char *argv[ARGV_MAX];
        char what[256];

        const char *unknown[] = {"--no-such-flag", "--json", NULL};
        build(argv, c, s, NULL, unknown);
        ctl_argv(&r, argv);
        snprintf(what, sizeof what, "%s --no-such-flag", name);
        assert_usage_doc(&r, err_schema, what);

        /* --json first, the mistake later: one word more than the command has positionals */
        const char *first[] = {"--json", NULL}, *extra[CTL_POS_MAX + 2];
        size_t npos = json_array_size(json_object_get(c, "arguments"));
        assert_true(npos <= CTL_POS_MAX);
        for (size_t k = 0; k <= npos; k++)
            extra[k] = "one-too-many";
        extra[npos + 1] = NULL;
        const char *args2[ARGV_MAX];
        size_t n = build(args2, c, s, NULL, extra);
        memmove(args2 + 1, args2, (n + 1) * sizeof *args2);
        args2[0] = first[0];
        ctl_argv(&r, args2);
        snprintf(what, sizeof what, "--json %s ... one-too-many", name);
        assert_usage_doc(&r, err_schema, what);

        json_t *a;
        size_t j, required = 0;
        json_array_foreach(json_object_get(c, "arguments"), j, a)
            required += json_is_true(json_object_get(a, "required"));
        if (required) {
            build(argv, c, NULL, NULL, first);
            ctl_argv(&r, argv);
            snprintf(what, sizeof what, "%s with no arguments", name);
            assert_usage_doc(&r, err_schema, what);
        }
        json_array_foreach(json_object_get(c, "flags"), j, a) {
            const char *fl = json_string_value(json_object_get(a, "name"));
            if (strcmp(json_string_value(json_object_get(a, "type")), "integer"))
                continue;
            char bad[96];
            snprintf(bad, sizeof bad, "%s=not-a-number", fl);
            const char *post[] = {bad, "--json", NULL};
            build(argv, c, s, NULL, post);
            ctl_argv(&r, argv);
            snprintf(what, sizeof what, "%s %s", name, bad);
            assert_usage_doc(&r, err_schema, what);
            /* past the maximum the table gives */
            json_int_t max = json_integer_value(json_object_get(a, "maximum"));
            if (max < INT64_MAX) {
                snprintf(bad, sizeof bad, "%s=%lld", fl, (long long)max + 1);
                build(argv, c, s, NULL, post);
                ctl_argv(&r, argv);
                snprintf(what, sizeof what, "%s %s", name, bad);
                assert_usage_doc(&r, err_schema, what);
            }
            /* a flag left without its value does not eat the --json after it */
            const char *novalue[] = {fl, "--json", NULL};
            build(argv, c, s, NULL, novalue);
            ctl_argv(&r, argv);
            snprintf(what, sizeof what, "%s %s (no value)", name, fl);
            assert_usage_doc(&r, err_schema, what);
        }
        json_array_foreach(json_object_get(c, "arguments"), j, a) {
            if (!json_object_get(a, "enum"))
                continue;
            const char *post[] = {"not-a-server", "--json", NULL};
            build(argv, c, NULL, NULL, post);
            ctl_argv(&r, argv);
            snprintf(what, sizeof what, "%s not-a-server", name);
            assert_usage_doc(&r, err_schema, what);
        }
    }
    /* and the line as a whole */
    CTL(&r, "--json");
    assert_usage_doc(&r, err_schema, "--json alone");
    CTL(&r, "frob", "--json");
    assert_usage_doc(&r, err_schema, "frob");
    CTL(&r, "server", "--json");
    assert_usage_doc(&r, err_schema, "server (incomplete)");
    CTL(&r, "--timeout=0", "status", "--json");
    assert_usage_doc(&r, err_schema, "--timeout=0");
    CTL(&r, "status", "--json=yes");
    assert_usage_doc(&r, err_schema, "--json=yes");
    CTL(&r, "--json", "--bogus", "status");
    assert_usage_doc(&r, err_schema, "--bogus before the command");
}

/* Errors that are not usage errors are the same document, with their own exit codes. */
static void other_errors_are_json_documents_too(void **st)
{
    (void)st;
    const json_t *err_schema = json_object_get(DESC, "error_output");
    static run r;
    const char *dir = h_data_dir(H);
    struct {
        int rc;
        const char *argv[12];
    } cases[] = {
        {3, {"kv", "get", AGENT, "absent", "--data-dir", dir, "--json"}},
        {5, {"--json", "kv", "put", AGENT, "k1", "x", "--if-version=99", "--data-dir", dir}},
        {6, {"status", "--json", "--data-dir=/nonexistent/aos"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ctl_argv(&r, cases[i].argv);
        assert_int_equal(r.rc, cases[i].rc);
        json_t *d = doc_of(&r, cases[i].argv[1]);
        assert_valid(err_schema, d, cases[i].argv[1]);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(d, "error"),
                                                            "exit_code")), cases[i].rc);
        json_decref(d);
        assert_string_equal(r.err, "");
    }
}

/* llm's values are checked before any call: a bad one is a usage error naming what works. */
static void llm_values_are_checked_before_any_call(void **st)
{
    (void)st;
    static run r;
    const char *dir = h_data_dir(H);
    const char *const bad[][8] = {
        {"llm", "usage", "--since", "2023-02-29"},       /* no such day */
        {"llm", "usage", "--since", "2024-01-01T24:00"}, /* no such hour */
        {"llm", "usage", "--since=1969-12-31"},
        {"llm", "usage", "--since=999999999d"},          /* before 1970 */
        {"llm", "usage", "--since=10w"},
        {"llm", "usage", "--since=-5m"},
        {"llm", "usage", "--since=99999999999999999999"},
        {"llm", "usage", "--agent", "no spaces"},
        {"llm", "test", "sim", "hi", "--temperature=2.5"},
        {"llm", "test", "sim", "hi", "--temperature", "1e0"},
        {"llm", "test", "sim", "hi", "--temperature=nan"},
        {"llm", "test", "sim/", "hi"},
        {"llm", "test", "/sim-1", "hi"},
        {"llm", "test", "sim", ""},
        {"llm", "test", "sim", "hi", "--max-tokens=0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[12];
        size_t n = 0;
        for (; n < 8 && bad[i][n]; n++)
            argv[n] = bad[i][n];
        argv[n++] = "--data-dir";
        argv[n++] = dir;
        argv[n++] = "--json";
        argv[n] = NULL;
        ctl_argv(&r, argv);
        char what[256];
        snprintf(what, sizeof what, "llm %s %s %s", bad[i][1], bad[i][2],
                 bad[i][3] ? bad[i][3] : "");
        assert_usage_doc(&r, json_object_get(DESC, "error_output"), what);
    }
    /* what is accepted: the since forms, a bare model name, a temperature of 0 and of 2 */
    const char *const good[][8] = {
        {"llm", "usage", "--since=0"},
        {"llm", "test", "sim-1", "hi", "--temperature=2"},
        {"llm", "test", "sim", "hi", "--temperature=0.0"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        const char *argv[12];
        size_t n = 0;
        for (; n < 8 && good[i][n]; n++)
            argv[n] = good[i][n];
        argv[n++] = "--data-dir";
        argv[n++] = dir;
        argv[n++] = "--json";
        argv[n] = NULL;
        ctl_argv(&r, argv);
        if (r.rc != 0)
            fail_msg("%s %s: exit %d: %s%s", good[i][1], good[i][2], r.rc, r.out, r.err);
    }
}

/* --flag=value and --flag value, short aliases, flags before and after positionals, global
 * flags anywhere: the same line means the same thing in every spelling. */
static void flags_mean_the_same_in_every_spelling(void **st)
{
    (void)st;
    static run r;
    static char first[OUT_MAX];
    const char *dir = h_data_dir(H);
    char dd[PATH_MAX + 16];
    snprintf(dd, sizeof dd, "--data-dir=%s", dir);

    CTL(&r, "--data-dir", dir, "kv", "put", AGENT, "s1", "a");
    assert_int_equal(r.rc, 0);
    CTL(&r, "kv", "put", AGENT, "s2", "b", dd);
    assert_int_equal(r.rc, 0);
    const char *const forms[][8] = {
        {"--data-dir", dir, "--json", "kv", "ls", AGENT, "s", "--limit=1"},
        {"kv", "ls", AGENT, "s", "--limit", "1", "--json", dd},
        {"kv", "--json", "ls", "--limit", "1", AGENT, dd, "s"},
        {dd, "kv", "ls", "--limit=1", "--json", AGENT, "s"},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        const char *argv[10];
        memcpy(argv, forms[i], sizeof forms[i]);
        argv[8] = NULL;
        ctl_argv(&r, argv);
        assert_int_equal(r.rc, 0);
        json_t *d = doc_of(&r, "kv ls");
        assert_int_equal(json_array_size(json_object_get(d, "keys")), 1);
        assert_true(json_is_true(json_object_get(d, "truncated")));
        json_decref(d);
        if (i == 0)
            snprintf(first, sizeof first, "%s", r.out);
        else
            assert_string_equal(r.out, first);
    }
    /* the storage commands' --limit=5, refused before */
    CTL(&r, "kv", "ls", AGENT, "--limit=5", dd);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "k1\ns1\ns2\n");

    /* ping's short alias in each form */
    const char *const pings[][4] = {{"-n", "2", NULL}, {"-n2", NULL}, {"--count=2", NULL},
                                    {"--count", "2", NULL}};
    for (size_t i = 0; i < sizeof pings / sizeof pings[0]; i++) {
        const char *argv[10] = {"ping", "storage", "--json", dd};
        for (size_t k = 0; pings[i][k]; k++)
            argv[4 + k] = pings[i][k];
        ctl_argv(&r, argv);
        assert_int_equal(r.rc, 0);
        json_t *d = doc_of(&r, "ping");
        assert_int_equal(json_integer_value(json_object_get(d, "count")), 2);
        assert_int_equal(json_integer_value(json_object_get(d, "errors")), 0);
        json_decref(d);
    }
    /* after "--", a word that looks like a flag is a value */
    CTL(&r, "kv", "put", dd, AGENT, "dash", "--", "--json");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "version 1"));
    CTL(&r, "kv", "get", AGENT, "dash", dd);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "--json");

    /* the complaint: status --json, the flag after the command */
    CTL(&r, "status", "--json", dd);
    assert_int_equal(r.rc, 0);
    json_t *d = doc_of(&r, "status --json");
    assert_valid(json_object_get(desc_cmd("status"), "output"), d, "status --json");
    json_decref(d);
}

/* People get one line per child with its sandbox layers, and help from the same table. */
static void people_get_the_table_and_help(void **st)
{
    (void)st;
    static run r;
    char dd[PATH_MAX + 16];
    snprintf(dd, sizeof dd, "--data-dir=%s", h_data_dir(H));
    CTL(&r, "status", dd);
    assert_int_equal(r.rc, 0);
    print_message("%s", r.out);
    char *head = strstr(r.out, "\nNAME ");
    assert_non_null(head);
    char *eol = strchr(head + 1, '\n');
    assert_non_null(eol);
    *eol = 0;
    assert_non_null(strstr(head, "SANDBOX"));
    assert_non_null(strstr(head, "REASON"));
    const char *names[] = {"memory", "storage", "tool", "llm", "audit", "api", "postgres"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char line[32];
        snprintf(line, sizeof line, "\n%s ", names[i]);
        if (!strstr(eol + 1, line) && strncmp(eol + 1, line + 1, strlen(line + 1)))
            fail_msg("no status line for %s", names[i]);
    }
    /* llm: a table of providers; test's answer alone on stdout, its summary on stderr */
    CTL(&r, "llm", "providers", dd);
    assert_int_equal(r.rc, 0);
    assert_true(!strncmp(r.out, "NAME  KIND  MODELS", 18));
    assert_non_null(strstr(r.out, "\nsim "));
    assert_non_null(strstr(r.out, " yes\n"));
    CTL(&r, "llm", "test", "sim", "hello", dd);
    assert_int_equal(r.rc, 0);
    assert_true(!strncmp(r.out, "sim: ", 5));
    assert_non_null(strstr(r.err, "-- end_turn; tokens in "));
    assert_non_null(strstr(r.err, "sim/sim-1"));
    CTL(&r, "llm", "usage", dd);
    assert_int_equal(r.rc, 0);
    assert_true(!strncmp(r.out, "AGENT  PROVIDER  MODEL", 22));
    assert_non_null(strstr(r.out, "\nTOTAL "));
    CTL(&r, "llm", "test", "no-such-provider", "hello", dd);
    assert_int_equal(r.rc, 3);
    assert_non_null(strstr(r.err, "providers: sim"));

    CTL(&r, "--help");
    assert_int_equal(r.rc, 0);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(DESC, "commands"), i, c) {
        const char *usage = json_string_value(json_object_get(c, "usage")) + strlen("aosctl ");
        assert_non_null(strstr(r.out, usage)); /* the overview lists it as --desc does */
    }
    json_array_foreach(json_object_get(DESC, "commands"), i, c) {
        const char *argv[ARGV_MAX], *post[] = {"--help", NULL};
        build(argv, c, NULL, NULL, post);
        static run h;
        ctl_argv(&h, argv);
        assert_int_equal(h.rc, 0);
        const char *usage = json_string_value(json_object_get(c, "usage")) + strlen("aosctl ");
        assert_non_null(strstr(h.out, usage));
        size_t j;
        json_t *a;
        json_array_foreach(json_object_get(c, "flags"), j, a)
            assert_non_null(strstr(h.out, json_string_value(json_object_get(a, "name"))));
    }
}

/* One line of a follower's stdout into line (cap), reading fd; 0 at EOF. A generous wait
 * keeps a stuck follower from hanging the test; nothing depends on how long a line takes. */
static size_t read_line(int fd, char *buf, size_t *used, size_t cap, char *line, size_t lcap)
{
    for (;;) {
        char *nl = memchr(buf, '\n', *used);
        if (nl) {
            size_t n = (size_t)(nl - buf);
            if (n >= lcap)
                fail_msg("a follower's line of %zu bytes", n);
            memcpy(line, buf, n);
            line[n] = 0;
            memmove(buf, nl + 1, *used - n - 1);
            *used -= n + 1;
            return n + 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int k = poll(&p, 1, 60000);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            fail_msg("audit tail -f printed no line in a minute");
        if (*used == cap)
            fail_msg("a follower's line longer than %zu bytes", cap);
        ssize_t n = read(fd, buf + *used, cap - *used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        *used += (size_t)n;
    }
}

/* audit tail -f --json: a JSON object per line, a record appended after it started comes
 * out, and SIGTERM ends it with exit 0. */
static pid_t follower; /* killed by teardown when a failed assertion left it running */

static void audit_tail_follows_until_sigterm(void **st)
{
    (void)st;
    static run r;
    /* from the log's last record on, so every line is one appended after the start */
    CTL(&r, "audit", "tail", "-n", "1", "--json", "--data-dir", h_data_dir(H));
    assert_int_equal(r.rc, 0);
    json_t *last = doc_of(&r, "audit tail -n 1");
    assert_int_equal(json_array_size(last), 1);
    char after[32];
    snprintf(after, sizeof after, "--after=%lld",
             (long long)json_integer_value(json_object_get(json_array_get(last, 0), "seq")));
    json_decref(last);

    char exe[PATH_MAX];
    snprintf(exe, sizeof exe, "%s", h_bin("aosctl"));
    const char *argv[] = {exe, "audit", "tail", "-f", "--json", "--agent", AGENT, after,
                          "--data-dir", h_data_dir(H), NULL};
    int po[2];
    assert_int_equal(pipe2(po, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, exe, &fa, NULL, (char *const *)argv, environ), 0);
    follower = pid;
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);

    CTL(&r, "kv", "put", AGENT, "follow-me", "x", "--data-dir", h_data_dir(H));
    assert_int_equal(r.rc, 0);
    static char buf[OUT_MAX], line[OUT_MAX];
    size_t used = 0;
    int seen = 0;
    json_int_t prev = strtoll(after + strlen("--after="), NULL, 10);
    while (!seen && read_line(po[0], buf, &used, sizeof buf, line, sizeof line) > 0) {
        json_t *d = json_loads(line, 0, NULL);
        if (!json_is_object(d))
            fail_msg("audit tail -f: not a JSON object: %s", line);
        json_int_t seq = json_integer_value(json_object_get(d, "seq"));
        assert_true(seq > prev); /* oldest first, none twice */
        prev = seq;
        assert_string_equal(json_string_value(json_object_get(d, "agent")), AGENT);
        const char *method = json_string_value(json_object_get(d, "method"));
        seen = method && strstr(method, "put") != NULL;
        json_decref(d);
    }
    assert_true(seen);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int wst;
    while (waitpid(pid, &wst, 0) < 0)
        assert_int_equal(errno, EINTR);
    follower = 0;
    close(po[0]);
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 0);
}

static int setup(void **st)
{
    (void)st;
    static run r;
    CTL(&r, "--desc");
    if (r.rc != 0)
        return -1;
    DESC = json_loads(r.out, 0, NULL);
    if (!DESC)
        return -1;
    H = h_start(NULL);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    if (follower > 0) {
        kill(follower, SIGKILL);
        waitpid(follower, NULL, 0);
    }
    if (H)
        h_stop(H);
    json_decref(DESC);
    return 0;
}

/* Last: aosctl shutdown ends the shared aosd, which must exit 0 with nothing left over. */
static void the_shutdown_stops_aosd_last(void **st)
{
    (void)st;
    json_t *c = desc_cmd("shutdown");
    const char *argv[ARGV_MAX];
    const char *pre[] = {"--data-dir", h_data_dir(H), NULL}, *post[] = {"--json", NULL};
    build(argv, c, sample_of("shutdown"), pre, post);
    static run r;
    ctl_argv(&r, argv);
    if (r.rc != 0)
        fail_msg("shutdown: exit %d: %s%s", r.rc, r.out, r.err);
    json_t *out = doc_of(&r, "shutdown");
    assert_valid(json_object_get(c, "output"), out, "shutdown");
    assert_true(json_is_true(json_object_get(out, "stopped")));
    json_decref(out);
    char kept[256];
    h_wait_gone(H, 30000, kept, sizeof kept);
    H = NULL;
    h_remove_dir(kept);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_schema_checker_rejects_what_it_should),
        cmocka_unit_test(the_description_covers_every_command),
        cmocka_unit_test(every_command_prints_what_its_schema_says),
        cmocka_unit_test(usage_errors_are_json_documents_with_exit_2),
        cmocka_unit_test(other_errors_are_json_documents_too),
        cmocka_unit_test(llm_values_are_checked_before_any_call),
        cmocka_unit_test(flags_mean_the_same_in_every_spelling),
        cmocka_unit_test(people_get_the_table_and_help),
        cmocka_unit_test(audit_tail_follows_until_sigterm),
        cmocka_unit_test(the_shutdown_stops_aosd_last),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
