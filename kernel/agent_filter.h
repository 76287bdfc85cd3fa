/* The agents' seccomp allow-list: compiled once by aosd into a classic BPF program that
 * bubblewrap loads just before it execs the agent's program (agents.c hands it over by fd). */
#ifndef AOS_AGENT_FILTER_H
#define AOS_AGENT_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "aos/err.h"

typedef enum {
    AGF_ENFORCE, /* what is not listed fails with EPERM */
    AGF_KILL,    /* what is not listed kills the agent, and the kernel logs the syscall's
                  * number (dmesg: audit type=1326): for finding what a new program needs */
} agf_mode;

/* The mode aosd's environment asks for: AOS_AGENT_SECCOMP=kill is AGF_KILL, anything else
 * (or nothing) AGF_ENFORCE. */
agf_mode agf_mode_from_env(void);

/* The filter as struct sock_filter[] for this architecture: *out is malloc'd (the caller
 * frees it), *len its size in bytes. why gets the reason on failure. */
aos_err agf_compile(agf_mode mode, uint8_t **out, size_t *len, char *why, size_t whylen);

#endif
