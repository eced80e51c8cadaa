/* SPDX-License-Identifier: MIT
 * thread.c — one way to start a core thread: with a full signal mask, so a
 * signal sent to the process is handled by one of the host's threads and
 * never interrupts, or runs a handler on, a thread of libpgstore.
 */
#include "thread.h"

#include <signal.h>
#include <time.h>

static int start(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    /* A new thread inherits its creator's mask: block everything around
     * the create, then give the creator its own mask back. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(thread, attr, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int pgs_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    return start(thread, NULL, fn, arg);
}

int pgs_thread_start_detached(void *(*fn)(void *), void *arg)
{
    pthread_attr_t a;
    int rc = pthread_attr_init(&a);
    if (rc != 0)
        return rc;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    rc = start(&t, &a, fn, arg);
    pthread_attr_destroy(&a);
    return rc;
}

void pgs_thread_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}
