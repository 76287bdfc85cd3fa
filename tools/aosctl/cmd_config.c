/* aosctl's configuration command: config check [FILE] reads aos.yaml with aosd's own parser
 * (kernel/conf.c) and says what aosd would make of it, without starting anything. */
#include "aosctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"

static const char check_out[] =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
    "\"required\":[\"ok\",\"file\",\"from_file\",\"providers\",\"default_model\","
    "\"warnings\"],\"properties\":{"
    "\"ok\":{\"const\":true},"
    "\"file\":{\"type\":\"string\",\"description\":\"the file checked\"},"
    "\"from_file\":{\"type\":\"boolean\",\"description\":\"false: the default file is "
    "absent, and this is the built-in configuration aosd would use\"},"
    "\"providers\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"required\":[\"name\","
    "\"kind\",\"base_url\",\"models\",\"has_key\"],\"properties\":{"
    "\"name\":{\"type\":\"string\",\"pattern\":\"^[a-z0-9_-]{1,32}$\"},"
    "\"kind\":{\"type\":\"string\",\"enum\":[\"openai\",\"anthropic\",\"sim\"]},"
    "\"base_url\":{\"type\":\"string\",\"description\":\"empty for a sim provider without "
    "one\"},"
    "\"models\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
    "\"has_key\":{\"type\":\"boolean\",\"description\":\"its api_key_env variable is set "
    "here (the key itself is never shown)\"}}}},"
    "\"default_model\":{\"type\":\"string\",\"description\":\"provider/model; empty when no "
    "provider has a chat model\"},"
    "\"warnings\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"description\":\"what "
    "aosd would warn about at start (an unset API key variable)\"}}}";

static const ctl_arg check_args[] = {
    {.name = "FILE", .summary = "the file to check (default: DIR/aos.yaml of the data dir, "
                                "the file aosd reads; API key variables are looked up in "
                                "this environment)"},
};

/* A path as typed may not be UTF-8; JSON strings must be. */
static json_t *json_path(const char *p)
{
    json_t *j = json_string(p);
    if (j)
        return j;
    char *s = strdup(p);
    if (!s)
        return NULL;
    for (char *q = s; *q; q++)
        if ((unsigned char)*q >= 0x80)
            *q = '?';
    j = json_string(s);
    free(s);
    return j;
}

static json_t *check_json(const conf *cf)
{
    const Aos__Llm__Config *l = conf_llm(cf);
    json_t *provs = json_array(), *warns = json_array();
    for (size_t i = 0; provs && i < l->n_providers; i++) {
        const Aos__Llm__Provider *p = l->providers[i];
        json_t *models = json_array();
        for (size_t j = 0; models && j < p->n_models; j++)
            if (json_array_append_new(models, json_string((char *)p->models[j]->name.data))) {
                json_decref(models);
                models = NULL;
            }
        if (!models || json_array_append_new(
                           provs, json_pack("{s:s,s:s,s:s,s:o,s:b}", "name",
                                            (char *)p->name.data, "kind", (char *)p->kind.data,
                                            "base_url",
                                            p->base_url.data ? (char *)p->base_url.data : "",
                                            "models", models, "has_key", p->api_key.len > 0))) {
            json_decref(provs);
            provs = NULL;
        }
    }
    for (size_t i = 0; warns && i < conf_nwarnings(cf); i++)
        if (json_array_append_new(warns, json_string(conf_warning(cf, i)))) {
            json_decref(warns);
            warns = NULL;
        }
    if (!provs || !warns) {
        json_decref(provs);
        json_decref(warns);
        return NULL;
    }
    return json_pack("{s:b,s:o,s:b,s:o,s:s,s:o}", "ok", 1, "file", json_path(conf_path(cf)),
                     "from_file", conf_from_file(cf), "providers", provs, "default_model",
                     l->default_model.data ? (char *)l->default_model.data : "", "warnings",
                     warns);
}

/* "ok: FILE: 2 providers (sim, openai), default model sim/sim-1; warning: ..." */
static void print_check(const conf *cf)
{
    const Aos__Llm__Config *l = conf_llm(cf);
    printf("ok: %s: %s%zu provider%s (", conf_path(cf),
           conf_from_file(cf) ? "" : "absent, so the built-in defaults: ", l->n_providers,
           l->n_providers == 1 ? "" : "s");
    for (size_t i = 0; i < l->n_providers; i++)
        printf("%s%s", i ? ", " : "", (char *)l->providers[i]->name.data);
    printf("), default model %s",
           l->default_model.len ? (char *)l->default_model.data : "(none: no chat model)");
    for (size_t i = 0; i < conf_nwarnings(cf); i++)
        printf("; warning: %s", conf_warning(cf, i));
    printf("\n");
}

static int cmd_check(ctl_ctx *c, const ctl_vals *v)
{
    const char *file = ctl_str(v, "FILE");
    char dir[AOS_PATH_MAX], path[AOS_PATH_MAX + 16], why[1024];
    aos_err err;
    if (!file) {
        /* the data dir as aosd finds it: --data-dir, $AOS_DATA_DIR, then the defaults */
        if ((err = aos_data_dir(c->data_dir, dir, sizeof dir)) != AOS_OK)
            return ctl_fail(c, err, "cannot find the data dir: %s",
                            err == AOS_ERR_NOT_FOUND ? "no --data-dir, $AOS_DATA_DIR or $HOME"
                                                     : "the path is too long or empty");
        if (conf_default_path(dir, path, sizeof path) != AOS_OK)
            return ctl_fail(c, AOS_ERR_TOO_BIG, "data dir %s: the path is too long", dir);
    }
    conf *cf;
    if ((err = conf_load(file ? file : path, file != NULL, &cf, why, sizeof why)) != AOS_OK)
        return ctl_fail(c, err, "%s", why);
    int rc = 0;
    if (c->json)
        rc = ctl_print_json(c, check_json(cf));
    else
        print_check(cf);
    conf_free(cf);
    return rc;
}

static const ctl_cmd config_cmds[] = {
    {"config check", "check aos.yaml as aosd would read it, without starting anything",
     CTL_ARGS(check_args), check_out, cmd_check},
};

const ctl_group ctl_group_config = {config_cmds, sizeof config_cmds / sizeof config_cmds[0]};
