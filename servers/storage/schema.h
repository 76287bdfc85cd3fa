/* aos-storage's schema and migrations (schema.c), for srv_def.schema and for the tests
 * that build a database of their own. */
#ifndef STG_SCHEMA_H
#define STG_SCHEMA_H

#include "pg.h"

extern const srv_schema stg_schema;

#endif
