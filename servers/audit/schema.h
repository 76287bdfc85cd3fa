/* The audit server's place in PostgreSQL: schema "audit", role aos_audit, and the
 * migrations that make its log append-only for that role. */
#ifndef AOS_AUDIT_SCHEMA_H
#define AOS_AUDIT_SCHEMA_H

#include "pg.h"

extern const srv_schema audit_schema;

#endif
