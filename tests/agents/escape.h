/* The escape probes: what an agent must never do (network sockets, namespaces, mounts, bpf,
 * io_uring, a fork, ...), each tried once; aos-test-agent's escape mode and agent_filter_test. */
#ifndef AOS_ESCAPE_H
#define AOS_ESCAPE_H

#include <stdio.h>

/* Try every probe and print one line each to out ("escape: NAME: refused (EPERM)" or
 * "escape: NAME: NOT REFUSED: ..." with what the call gave). safe_only: only the probes
 * that are harmless without a filter, even as root on the host (all but ptrace of pid 1):
 * for a test's baseline, and for a filter tried outside a sandbox. Returns how many were
 * not refused with EPERM. */
int esc_run(FILE *out, int safe_only);

/* What a confined agent still needs, tried once: an AF_UNIX socket, a thread, a file made,
 * renamed and removed in dir, a sleep, and clone3 answered ENOSYS (glibc's fallback).
 * Prints a line per failure; returns how many failed. */
int esc_allowed(FILE *out, const char *dir);

#endif
