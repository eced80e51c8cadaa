/* SPDX-License-Identifier: MIT
 * notifier.c — the thread behind notifier.h. It sleeps on a condition
 * variable until a position is posted, sends pg_notify(channel, position),
 * then waits out the coalescing interval so a burst of appends costs one
 * NOTIFY, not one each (NOTIFY commits serialize on a server-wide lock).
 */
#include "notifier.h"
#include "clock.h"
#include "thread.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgs_notifier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stopping;
    int idle;               /* the thread waits for a post (not in a window) */
    int64_t pending;        /* last position posted and not yet sent; 0: none */
    const pgs_dsn_t *dsn;
    char *channel;
    double interval;
    pgs_conn_t *conn;
};

pgs_notifier_t *pgs_notifier_new(const pgs_dsn_t *dsn, const char *channel, double interval)
{
    pgs_notifier_t *n = calloc(1, sizeof *n);
    if (!n || !(n->channel = strdup(channel))) {
        free(n);
        return NULL;
    }
    pthread_mutex_init(&n->mu, NULL);
    pgs_thread_cond_init(&n->cv);
    n->dsn = dsn;
    n->interval = interval > 0 ? (interval < 60 ? interval : 60) : 0.002;
    return n;
}

static void send_one(pgs_notifier_t *n, int64_t position)
{
    pgs_error_t err;
    if (!n->conn && pgs_conn_open_dsn(n->dsn, &n->conn, &err) != PGS_OK)
        return; /* server away: the next post tries again */
    char pos[24];
    snprintf(pos, sizeof pos, "%lld", (long long)position);
    if (pgs_notify(n->conn, n->channel, pos, strlen(pos), &err) != PGS_OK &&
        (err.code == PGS_ECONNECTION || err.code == PGS_ETIMEOUT)) {
        pgs_conn_close(n->conn);
        n->conn = NULL;
    }
}

static void *run(void *arg)
{
    pgs_notifier_t *n = arg;
    pthread_mutex_lock(&n->mu);
    for (;;) {
        n->idle = 1;
        while (!n->pending && !n->stopping)
            pthread_cond_wait(&n->cv, &n->mu);
        n->idle = 0;
        if (!n->pending && n->stopping)
            break;
        int64_t position = n->pending;
        n->pending = 0;
        pthread_mutex_unlock(&n->mu);
        send_one(n, position);
        pthread_mutex_lock(&n->mu);
        if (n->stopping)
            continue; /* flush what is pending, then leave */
        /* The coalescing window: posts in it are sent together after it. */
        struct timespec until;
        pgs_clock_after(CLOCK_MONOTONIC, n->interval, &until);
        while (!n->stopping && pthread_cond_timedwait(&n->cv, &n->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

void pgs_notifier_post(pgs_notifier_t *n, int64_t position)
{
    pthread_mutex_lock(&n->mu);
    if (position > n->pending)
        n->pending = position;
    if (!n->started && !n->stopping)
        n->started = pgs_thread_start(&n->thread, run, n) == 0;
    /* Wake the thread only when it waits for work: inside its coalescing
     * window it picks the position up when the window ends, and waking it
     * on every append would cost a context switch each. */
    if (n->idle)
        pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void pgs_notifier_free(pgs_notifier_t *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    n->stopping = 1;
    pthread_cond_signal(&n->cv);
    int started = n->started;
    pthread_mutex_unlock(&n->mu);
    if (started)
        pthread_join(n->thread, NULL);
    pgs_conn_close(n->conn);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n->channel);
    free(n);
}
