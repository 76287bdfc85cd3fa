/* aos-tool: the tool catalogue and sandboxed tool execution. For now it answers ping and
 * stats; it has no database (its issue adds the catalogue and the executor). */
#include "serve.h"

int main(int argc, char **argv)
{
    static const srv_def def = {.name = "tool"};
    return srv_main(&def, argc, argv);
}
