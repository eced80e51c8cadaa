/* SPDX-License-Identifier: MIT
 * thread.h — starting libpgstore's own threads (internal): the notifier,
 * the kv cleaner, the lease renewer, the detached cancel sender. Signals
 * belong to the host's threads (nginx's master/worker control, the REPL's
 * ^C), so every core thread starts with all of them blocked.
 */
#ifndef PGS_THREAD_H
#define PGS_THREAD_H
#include <pthread.h>

/* Starts fn(arg) on a joinable thread with every signal blocked; the
 * caller's own mask is left as it was. Returns 0 or an errno value. */
int pgs_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

/* The same for a detached thread, nobody joins it. */
int pgs_thread_start_detached(void *(*fn)(void *), void *arg);

/* Initialises a condition variable whose timed waits run on the monotonic
 * clock: give it deadlines from pgs_clock_after(CLOCK_MONOTONIC, …). */
void pgs_thread_cond_init(pthread_cond_t *cv);
#endif
