/* aos-llm: the gateway to model providers (streaming, retries, rate limits, accounting).
 * For now it answers ping and stats; it has no database (its issue adds the providers). */
#include "serve.h"

int main(int argc, char **argv)
{
    static const srv_def def = {.name = "llm"};
    return srv_main(&def, argc, argv);
}
