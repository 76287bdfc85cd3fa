/* Sizes of the neutral LLM model's messages and tools, for token estimates shared by the
 * sim provider and aosd's scheduler (one count, so the scheduler charges what the sim says). */
#include "aos/llmsize.h"

uint64_t aos_llm_msg_bytes(const Aos__Llm__Message *m)
{
    uint64_t b = 0;
    if (!m)
        return 0;
    for (size_t j = 0; j < m->n_content; j++)
        if (m->content[j])
            b += m->content[j]->text.len;
    for (size_t j = 0; j < m->n_tool_calls; j++)
        if (m->tool_calls[j])
            b += m->tool_calls[j]->name.len + m->tool_calls[j]->arguments.len;
    return b + m->tool_call_id.len;
}

uint64_t aos_llm_tool_bytes(const Aos__Llm__Tool *t)
{
    return t ? t->name.len + t->description.len + t->input_schema.len : 0;
}
