/* SPDX-License-Identifier: MIT
 * test_thread.c — core threads never take the host's signals: a thread
 * started by pgs_thread_start() (and the lease renewer, a real core
 * thread) has every signal blocked, so a signal sent to the process while
 * the caller blocks it stays pending for the caller instead of running
 * its handler on a core thread.
 */
#include "harness.h"
#include "clock.h"
#include "thread.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static void on_usr1(int sig)
{
    (void)sig;
    handled = 1;
}

static volatile int stop;
static int blocked_inside = -1;

static void *idle_thread(void *arg)
{
    (void)arg;
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    blocked_inside = sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGINT) &&
                     sigismember(&cur, SIGTERM) && sigismember(&cur, SIGHUP);
    while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST))
        pgs_clock_sleep(0.005);
    return NULL;
}

static sigset_t usr1(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    return s;
}

/* With SIGUSR1 unblocked in the caller (so a thread would inherit it
 * unblocked), starts a thread with `start`, then blocks SIGUSR1 here. */
static void caller_unblocked(void)
{
    struct sigaction sa = {.sa_handler = on_usr1};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t s = usr1();
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
}

/* Sends SIGUSR1 to the process while only core threads could take it:
 * 1 when it stayed pending for the caller and no handler ran. */
static int signal_stays_with_caller(void)
{
    sigset_t s = usr1();
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    handled = 0;
    kill(getpid(), SIGUSR1);
    pgs_clock_sleep(0.1); /* time for any thread to take it */
    struct timespec wait = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
    int got = sigtimedwait(&s, NULL, &wait);
    return !handled && got == SIGUSR1;
}

static void test_helper_blocks_signals(void)
{
    caller_unblocked();
    stop = 0;
    pthread_t t;
    CHECK(pgs_thread_start(&t, idle_thread, NULL) == 0);
    /* The caller's own mask is untouched by the start. */
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    CHECK(!sigismember(&cur, SIGUSR1));
    CHECK(signal_stays_with_caller());
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    CHECK(blocked_inside == 1);
}

static void test_detached_blocks_signals(void)
{
    caller_unblocked();
    stop = 0;
    blocked_inside = -1;
    CHECK(pgs_thread_start_detached(idle_thread, NULL) == 0);
    CHECK(signal_stays_with_caller());
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 200 && blocked_inside < 0; i++)
        pgs_clock_sleep(0.005);
    CHECK(blocked_inside == 1);
}

/* The lease renewer is a core thread started on the caller's behalf. */
static void test_lease_renewer_blocks_signals(void)
{
    pgs_pool_opts_t po = {.conn = {.conninfo = pgs_test_dsn()}, .max_size = 2};
    pgs_pool_t *pool = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_pool_open(&po, &pool, &err), err);
    if (!pool)
        return;
    char name[64];
    snprintf(name, sizeof name, "c_thread_%ld_%ld", (long)getpid(), (long)time(NULL));
    pgs_lease_opts_t lo = {.name = name, .count = 2, .lease = 2, .renew = 0.05};
    pgs_lease_t *l = NULL;
    CHECK_OK(pgs_lease_open(pool, &lo, &l, &err), err);
    if (l) {
        caller_unblocked();
        CHECK_OK(pgs_lease_start(l, &err), err);
        CHECK(signal_stays_with_caller());
        pgs_lease_close(l);
    }
    pgs_pool_close(pool);
}

static void test_monotonic_condition_variable(void)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    pgs_thread_cond_init(&cv);
    struct timespec until;
    pgs_clock_after(CLOCK_MONOTONIC, 0.05, &until);
    double t0 = pgs_clock_now();
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (rc == 0)
        rc = pthread_cond_timedwait(&cv, &mu, &until);
    pthread_mutex_unlock(&mu);
    double waited = pgs_clock_now() - t0;
    CHECK(waited >= 0.045 && waited < 1); /* a realtime cv would read the deadline as 1970 */
    pthread_cond_destroy(&cv);
}

int main(void)
{
    static const pgs_test_t tests[] = {
        {"a started thread blocks every signal, the caller's mask stays", test_helper_blocks_signals},
        {"a detached thread blocks every signal", test_detached_blocks_signals},
        {"a signal to the process is not delivered on the lease renewer", test_lease_renewer_blocks_signals},
        {"condition variables wait on the monotonic clock", test_monotonic_condition_variable},
        {NULL, NULL}};
    return pgs_test_run(tests);
}
