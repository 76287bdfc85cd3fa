/* Running a call that may never return (nng 1.5.2's close after a peer cut a send) with a
 * bound: it runs on a detached thread, the caller waits at most a given time. */
#ifndef AOS_BOUNDED_H
#define AOS_BOUNDED_H

/* Run fn(arg) on a detached thread and wait up to ms for it. Returns 1 when it finished in
 * time, 0 when it did not (or no thread could be made: then fn never runs). Either way fn
 * owns arg: whatever arg points to must stay valid until fn is done with it, which may be
 * never; a call left hanging is a bounded leak, left to the process exit. */
int aos_run_bounded(void (*fn)(void *arg), void *arg, unsigned ms);

#endif
