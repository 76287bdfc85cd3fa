/* The test hooks every server answers with --test-hooks (test.*): ways to break like a
 * real server might, and streaming, async and outbound calls on demand for the tests. */
#ifndef AOS_HOOKS_H
#define AOS_HOOKS_H

#include <stddef.h>

#include "serve.h"

/* The hook methods (a static table), served as "<server>.test.*". */
const srv_method *hooks_methods(size_t *n);
/* Start the pacer thread that paces test.stream and answers test.async: before the
 * sandbox, which forbids clone(). */
aos_err hooks_start(char *why, size_t whylen);
/* test_streams_started, test_streams_cancelled, test_parts_sent. */
void hooks_stats(srv_stats *st);

#endif
