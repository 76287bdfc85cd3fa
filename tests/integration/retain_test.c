/* Retention under a real aosd: its own passes remove expired finished runs and the
 * workspaces of agents no longer applied, and keep everything still in use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "agent.pb-c.h"
#include "aos/aos.h"
#include "aos/envelope.h"
#include "aos/step.h"
#include "aos/storage.h"
#include "harness.h"

static h_aosd *H;
static char DATA_DIR[64];

#define KEEP_S 2 /* run_retention_s here; aosd looks every second */

static int setup(void **st)
{
    (void)st;
    snprintf(DATA_DIR, sizeof DATA_DIR, "/tmp/it-retain-XXXXXX");
    assert_non_null(mkdtemp(DATA_DIR));
    chmod(DATA_DIR, 0755);
    H = h_start_yaml(DATA_DIR, "run_retention_s: 2\n"
                     "run_prune_interval_s: 1\n"
                     "llm:\n"
                     "  default_model: sim/s1\n"
                     "  providers:\n"
                     "    - {name: sim, kind: sim, models: [{name: s1}]}\n");
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    h_stop(H);
    return 0;
}

static void apply(const char *yaml)
{
    assert_int_equal(h_apply(H, yaml, strlen(yaml), "dep.yaml", 1), AOS_OK);
}

#define AGENT(name) "  - {name: " name ", program: aos-test-agent, args: [idle]}\n"

static int has_ws(const char *agent)
{
    char path[256];
    struct stat sb;
    snprintf(path, sizeof path, "%s/workspaces/%s", DATA_DIR, agent);
    return stat(path, &sb) == 0;
}

/* A run of agent's, driven by hand as steps_test does; finished (done) unless running. */
static void a_run(const char *agent, int finish, char *id, size_t cap)
{
    char why[1024];
    aos_run *r = NULL;
    int resumed = 0;
    aos_err e = aos_run_open(h_conn(H), agent, 1, &r, &resumed, why, sizeof why);
    if (e)
        fail_msg("aos_run_open(%s): %s: %s", agent, aos_err_name(e), why);
    snprintf(id, cap, "%s", aos_run_id(r));
    if (finish)
        assert_int_equal(aos_run_finish(r, AOS_RUN_DONE, "exit 0", why, sizeof why), AOS_OK);
    aos_run_close(r);
}

static int has_key(const char *agent, const char *key)
{
    char why[512];
    uint8_t *v = NULL;
    size_t n = 0;
    aos_call_opts o = {.agent_id = agent, .timeout_ms = 10000};
    aos_err e = aos_kv_get(h_conn(H), &o, key, &v, &n, NULL, why, sizeof why);
    free(v);
    if (e && e != AOS_ERR_NOT_FOUND)
        fail_msg("kv.get %s of %s: %s: %s", key, agent, aos_err_name(e), why);
    return e == AOS_OK;
}

static int has_run(const char *agent, const char *run)
{
    char key[128];
    snprintf(key, sizeof key, AOS_RUN_KEY_PREFIX "%s", run);
    return has_key(agent, key);
}

static void put_raw(const char *agent, const char *key, const char *value)
{
    char why[512];
    aos_call_opts o = {.agent_id = agent, .timeout_ms = 10000};
    assert_int_equal(aos_kv_put(h_conn(H), &o, key, value, strlen(value), NULL, NULL, why,
                                sizeof why),
                     AOS_OK);
}

/* Four agents aosd ran, three of them then removed: the applied one keeps its current run,
 * the removed one with everything finished goes whole (runs, "current", workspace), the
 * removed one with a run still running and the one with a record that is not one keep
 * everything. */
static void aosd_prunes_what_is_not_in_use(void **st)
{
    (void)st;
    apply("agents:\n" AGENT("keeper") AGENT("leaver") AGENT("halfway") AGENT("odd"));
    const char *names[] = {"keeper", "leaver", "halfway", "odd"};
    /* aosd makes an agent's workspace when it starts it */
    for (int i = 0; i < 4; i++) {
        uint64_t end = aos_mono_ms() + 30000;
        while (!has_ws(names[i]) && aos_mono_ms() < end)
            usleep(50 * 1000);
        if (!has_ws(names[i]))
            fail_msg("%s was not started within 30 s", names[i]);
    }
    char k1[80], k2[80], l1[80], hw[80], od[80];
    a_run("keeper", 1, k1, sizeof k1);
    a_run("keeper", 1, k2, sizeof k2); /* keeper's current one */
    a_run("leaver", 1, l1, sizeof l1);
    a_run("halfway", 0, hw, sizeof hw);
    a_run("odd", 1, od, sizeof od);
    put_raw("odd", AOS_RUN_KEY_PREFIX "r-00ff", "{not a run record");
    char path[256];
    snprintf(path, sizeof path, "%s/workspaces/leaver/report.md", DATA_DIR);
    h_write_file(path, "the leaver's work\n");
    assert_true(has_ws("keeper") && has_ws("leaver") && has_ws("halfway") && has_ws("odd"));
    apply("agents:\n" AGENT("keeper"));

    /* leaver goes whole once KEEP_S passed since its workspace's last change */
    uint64_t until = aos_mono_ms() + 60000;
    while ((has_ws("leaver") || has_run("keeper", k1)) && aos_mono_ms() < until)
        usleep(200 * 1000);
    assert_false(has_ws("leaver"));
    char logp[256];
    struct stat sb;
    snprintf(logp, sizeof logp, "%s/agent-logs/leaver", DATA_DIR);
    assert_int_not_equal(stat(logp, &sb), 0); /* its log went with it */
    snprintf(logp, sizeof logp, "%s/agent-logs/keeper", DATA_DIR);
    assert_int_equal(stat(logp, &sb), 0);
    assert_false(has_run("leaver", l1));
    assert_false(has_key("leaver", AOS_RUN_KEY_CURRENT));
    /* keeper's first run expired; its current one stays while it is applied, its
     * workspace too */
    assert_false(has_run("keeper", k1));
    assert_true(has_run("keeper", k2));
    assert_true(has_key("keeper", AOS_RUN_KEY_CURRENT));
    assert_true(has_ws("keeper"));
    /* a run still running: halfway could be applied again and resume it */
    sleep(KEEP_S + 1);
    assert_true(has_ws("halfway"));
    assert_true(has_run("halfway", hw));
    /* odd's record that is not one: nothing of odd is judged unused */
    assert_true(has_ws("odd"));
    assert_true(has_run("odd", od));
    assert_true(has_key("odd", AOS_RUN_KEY_PREFIX "r-00ff"));
    assert_true(h_log_count(H, "retention (run_retention_s 2): ") > 0);

    /* the admin's prune is the same rule: nothing more of keeper's goes */
    static char out[1 << 16];
    const char *pr[] = {"--json", "agent", "runs", "keeper", "--prune", NULL};
    assert_int_equal(h_aosctl(H, out, sizeof out, pr), 0);
    json_error_t je;
    json_t *d = json_loads(out, 0, &je);
    if (!d)
        fail_msg("not JSON: %s: %s", je.text, out);
    assert_int_equal(json_integer_value(json_object_get(d, "pruned")), 0);
    assert_int_equal(json_integer_value(json_object_get(d, "retention_s")), KEEP_S);
    assert_false(json_is_true(json_object_get(d, "workspace_removed")));
    assert_int_equal(json_array_size(json_object_get(d, "errors")), 0);
    assert_int_equal(json_array_size(json_object_get(d, "runs")), 1);
    json_decref(d);

    /* halfway's run finishes (its operator ended it by hand): then it goes whole */
    aos_run *r = NULL;
    int resumed = 0;
    char why[1024];
    assert_int_equal(aos_run_open(h_conn(H), "halfway", 0, &r, &resumed, why, sizeof why),
                     AOS_OK);
    assert_int_equal(resumed, 1);
    assert_int_equal(aos_run_finish(r, AOS_RUN_FAILED, "ended by hand", why, sizeof why),
                     AOS_OK);
    aos_run_close(r);
    until = aos_mono_ms() + 60000;
    while (has_ws("halfway") && aos_mono_ms() < until)
        usleep(200 * 1000);
    assert_false(has_ws("halfway"));
    assert_false(has_run("halfway", hw));
}

/* Bad input to kernel.agent.prune is refused; a run still running is kept whatever its
 * age, also of an agent never applied (its program may well resume it). */
static void the_prune_method_checks_its_input(void **st)
{
    (void)st;
    aos_reply rep;
    aos_call_opts o = {.timeout_ms = 10000};
    static const uint8_t junk[] = {0x0a, 0x05, 'a', '/', 'b', 0xff, 'c'};
    aos_call(h_conn(H), &o, "kernel.agent.prune", junk, sizeof junk, &rep);
    assert_int_equal(rep.status, AOS_ERR_USAGE);
    aos_reply_clear(&rep);
    char id[80];
    a_run("stranger", 0, id, sizeof id);
    sleep(KEEP_S + 2);
    assert_true(has_run("stranger", id));
    assert_true(has_key("stranger", AOS_RUN_KEY_CURRENT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aosd_prunes_what_is_not_in_use),
        cmocka_unit_test(the_prune_method_checks_its_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
