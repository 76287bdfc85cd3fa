/* A YAML value as JSON: the one reading of free-form YAML that aos.yaml (kernel/conf.c) and
 * tool descriptors (servers/tool/desc.c) share, with YAML 1.2's core typing of plain scalars. */
#ifndef AOS_YJSON_H
#define AOS_YJSON_H

#include <stddef.h>
#include <jansson.h>
#include <yaml.h>

#include "aos/err.h"

/* Why a conversion was refused: the node at fault (its marks give the line and column), a
 * code (USAGE for a bad value, TOO_BIG for nesting past the cap, NOMEM) and a sentence. */
typedef struct aos_yjson_err {
    const yaml_node_t *at;
    aos_err code;
    char what[160];
} aos_yjson_err;

/* n (a node of doc) as a new JSON value the caller owns (json_decref). Plain scalars: empty,
 * ~, null/Null/NULL are null; true/True/TRUE and false/False/FALSE booleans; [+-]digits
 * (at most 19) integers; other finite numbers reals; the rest, and every quoted scalar,
 * strings. Mapping keys must be strings, each once. Nesting deeper than depth_max levels is
 * refused. NULL with *err filled on a refusal. */
json_t *aos_yjson(yaml_document_t *doc, const yaml_node_t *n, unsigned depth_max,
                  aos_yjson_err *err);

/* 1 when s (len bytes) is a plain integer in that reading: [+-]?[0-9]{1,19}. */
int aos_yjson_plain_int(const char *s, size_t len);
/* 1 when n is a plain scalar that reads as null. */
int aos_yjson_is_null(const yaml_node_t *n);

/* buf (len bytes, named file in messages) into doc, which the caller deletes with
 * yaml_document_delete on AOS_OK. Refused before libyaml builds the tree (its loader
 * recurses, and a few lines of aliases expand into billions of nodes for a walker): aliases,
 * anchors, a second document, nesting past depth_max. why: "FILE:LINE:COL: what" (USAGE,
 * TOO_BIG for the nesting, NOMEM). */
aos_err aos_yaml_load(const char *file, const char *buf, size_t len, unsigned depth_max,
                      yaml_document_t *doc, char *why, size_t whylen);

#endif
