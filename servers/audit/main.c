/* aos-audit: the append-only, hash-chained log of every syscall and decision. For now it
 * answers ping and stats; its log table and the role's narrow grants are in place. */
#include "schema.h"
#include "serve.h"

int main(int argc, char **argv)
{
    static const srv_def def = {.name = "audit", .schema = &audit_schema};
    return srv_main(&def, argc, argv);
}
