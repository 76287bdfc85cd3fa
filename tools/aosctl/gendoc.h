/* aosctl's man page (roff) and bash completion script from its command table, written to f;
 * 0, or 1 when writing failed. */
#ifndef AOSCTL_GENDOC_H
#define AOSCTL_GENDOC_H

#include <stddef.h>
#include <stdio.h>

#include "aosctl.h"

int ctl_gen_man(FILE *f, const ctl_cmd *globals, const ctl_group *const *groups, size_t ng);
int ctl_gen_bash(FILE *f, const ctl_cmd *globals, const ctl_group *const *groups, size_t ng);

#endif
