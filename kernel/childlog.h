/* Children's stdout and stderr: pipes aosd reads in its loop and writes to its own log,
 * each line prefixed with the child's name and pid, so no child can forge a kernel line. */
#ifndef AOS_CHILDLOG_H
#define AOS_CHILDLOG_H

#include <poll.h>
#include <sys/types.h>

/* A pipe for a child about to start: returns the write end for its stdout/stderr (the
 * caller closes it once the child is spawned) or -1. The read end is kept here. */
int clog_pipe(const char *name);
/* The child's pid, once known, for the prefix. */
void clog_set_pid(const char *name, pid_t pid);
/* Fill up to max pollfds with the read ends; returns how many. */
int clog_pollfds(struct pollfd *p, int max);
/* Read what is ready on those, write complete lines; closes pipes at EOF. */
void clog_service(const struct pollfd *p, int n);
/* Write out whatever is buffered and close every pipe (at exit). */
void clog_flush_all(void);

#endif
