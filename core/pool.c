/* SPDX-License-Identifier: MIT
 * pool.c — a thread-safe pool of connections. Connections open lazily up
 * to max_size; borrowers that find none wait in line, first come first
 * served, up to their timeout: a connection given back goes straight to the
 * longest waiter (or, when it is closed, the right to open one does), so a
 * caller that keeps borrowing cannot starve the others.
 * Every connection handed out has passed a liveness check (a dead one is
 * reconnected first), and every connection given back is idle and clean: an
 * open transaction is rolled back, the borrower's session state is cleared
 * (clean.c: sent on release, its answer read by the next borrower; a
 * connection whose clean failed is replaced), a busy or broken one is closed,
 * and so is one whose server stopped taking writes when the DSN asks for a
 * read-write server (conn.c: pgs_conn_judge_read_only): the next borrower
 * connects through the DSN's hosts again and finds the new primary.
 *
 * Lifetime: the pool is reference-counted by its owner and by each borrowed
 * connection, so closing it while connections are out is safe; the last
 * release frees it.
 */
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A borrower waiting in line, on its own stack. */
typedef struct waiter {
    pthread_cond_t cv;
    int served;              /* handed a connection or a slot to open one */
    pgs_conn_t *conn;        /* the connection; NULL: open one              */
    struct waiter *next;
} waiter_t;

struct pgs_pool {
    pthread_mutex_t mu;
    waiter_t *head, *tail;   /* the line, oldest first */
    pgs_dsn_t *dsn;
    int max_size;
    double acquire_timeout;
    int open;           /* connections that exist or are being opened */
    int borrowed;
    int waiting;
    int closed;
    int refs;           /* owner + borrowed connections + shared users */
    pgs_conn_t *idle;   /* LIFO: the warmest connection first */
    int nidle;
    /* process-wide registry (pgs_pool_shared) */
    char *shared_key;
    struct pgs_pool *shared_next;
};

static void pool_free(pgs_pool_t *p)
{
    pthread_mutex_destroy(&p->mu);
    pgs_dsn_free(p->dsn);
    free(p->shared_key);
    free(p);
}

/* Called with the lock held; frees the pool when the last reference goes
 * (the lock is released first). Returns 1 when freed. */
static int unref_locked(pgs_pool_t *p)
{
    if (--p->refs > 0)
        return 0;
    pthread_mutex_unlock(&p->mu);
    pool_free(p);
    return 1;
}

pgs_status_t pgs_pool_open(const pgs_pool_opts_t *opts, pgs_pool_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_dsn_build(opts ? &opts->conn : NULL, &p->dsn, err);
    if (st != PGS_OK) {
        free(p);
        return st;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->max_size = opts && opts->max_size > 0 ? opts->max_size : 4;
    p->acquire_timeout = opts && opts->acquire_timeout > 0 ? opts->acquire_timeout : 5;
    p->refs = 1;
    *out = p;
    return PGS_OK;
}

static void remove_waiter(pgs_pool_t *p, waiter_t *w)
{
    waiter_t **pp = &p->head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = w->next;
    if (p->tail == w)
        p->tail = prev;
}

/* Serves the oldest waiter with c, or with a slot to open a connection
 * (c NULL; the slot is counted in `open` now). Lock held. Returns 0 when
 * nobody waits. */
static int serve(pgs_pool_t *p, pgs_conn_t *c)
{
    waiter_t *w = p->head;
    if (!w)
        return 0;
    p->head = w->next;
    if (!p->head)
        p->tail = NULL;
    w->conn = c;
    w->served = 1;
    if (!c)
        p->open++;
    p->borrowed++;
    p->refs++;
    pthread_cond_signal(&w->cv);
    return 1;
}

pgs_status_t pgs_pool_acquire(pgs_pool_t *p, double timeout, pgs_conn_t **out, pgs_error_t *err)
{
    *out = NULL;
    if (!(timeout >= 0)) /* negative or NaN */
        timeout = p->acquire_timeout;
    pgs_conn_t *c = NULL;

    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return pgs_error_set(err, PGS_ECLOSED, "attempt to use a closed connection");
    }
    if (!p->head && (p->idle || p->open < p->max_size)) {
        c = p->idle;
        if (c) {
            p->idle = c->next;
            p->nidle--;
        } else {
            p->open++;
        }
        p->borrowed++;
        p->refs++;
    } else {
        waiter_t w = {.served = 0, .conn = NULL, .next = NULL};
        pgs_thread_cond_init(&w.cv);
        if (p->tail)
            p->tail->next = &w;
        else
            p->head = &w;
        p->tail = &w;
        p->waiting++;
        p->refs++; /* the pool must outlive the wait, even if closed meanwhile */
        struct timespec deadline;
        pgs_clock_after(CLOCK_MONOTONIC, timeout, &deadline);
        int rc = 0;
        while (!w.served && !p->closed && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&w.cv, &p->mu, &deadline);
        p->waiting--;
        pthread_cond_destroy(&w.cv);
        if (!w.served) {
            remove_waiter(p, &w);
            if (p->closed)
                pgs_error_set(err, PGS_ECLOSED, "attempt to use a closed connection");
            else
                pgs_error_set(err, PGS_ETIMEOUT,
                              "timed out after %.3gs waiting for a free connection "
                              "(pool of %d, all in use)",
                              timeout, p->max_size);
            pgs_status_t st = p->closed ? PGS_ECLOSED : PGS_ETIMEOUT;
            if (!unref_locked(p))
                pthread_mutex_unlock(&p->mu);
            return st;
        }
        p->refs--; /* serve() took the borrower's reference */
        c = w.conn;
    }
    pthread_mutex_unlock(&p->mu);

    /* Connect or check outside the lock: it may take a round trip. */
    pgs_status_t st = PGS_OK;
    if (!c) {
        st = pgs_conn_open_dsn(p->dsn, &c, err);
        if (st == PGS_OK)
            c->pool = p;
    } else if (!pgs_conn_clean_finish(c) || !pgs_conn_alive(c)) {
        st = pgs_conn_reset(c, err);
        if (st != PGS_OK) {
            pgs_conn_close(c);
            c = NULL;
        }
    }
    if (st != PGS_OK) {
        pthread_mutex_lock(&p->mu);
        p->open--;
        p->borrowed--;
        /* The slot is free again: the next in line may try. */
        if (!p->closed && p->open < p->max_size)
            serve(p, NULL);
        if (!unref_locked(p))
            pthread_mutex_unlock(&p->mu);
        return st;
    }
    c->next = NULL;
    *out = c;
    return PGS_OK;
}

/* Starts bringing a returned connection back to a clean idle state (an
 * open transaction rolled back, nothing of its borrower's session left:
 * clean.c), or says it cannot be reused. */
static int make_idle(pgs_conn_t *c)
{
    return PQstatus(c->pg) == CONNECTION_OK && !c->abandoned && !c->fatal.seen && !c->demoted &&
           pgs_conn_clean_start(c);
}

void pgs_pool_release(pgs_pool_t *p, pgs_conn_t *c)
{
    if (!c)
        return;
    int reusable = make_idle(c);
    pthread_mutex_lock(&p->mu);
    p->borrowed--;
    if (reusable && !p->closed) {
        if (!serve(p, c)) {
            c->next = p->idle;
            p->idle = c;
            p->nidle++;
        }
        c = NULL;
    } else {
        p->open--;
        if (!p->closed)
            serve(p, NULL);
    }
    int freed = unref_locked(p);
    if (!freed)
        pthread_mutex_unlock(&p->mu);
    if (c) {
        c->pool = NULL;
        pgs_conn_close(c);
    }
}

void pgs_pool_close(pgs_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->closed = 1;
    pgs_conn_t *idle = p->idle;
    p->idle = NULL;
    p->open -= p->nidle;
    p->nidle = 0;
    for (waiter_t *w = p->head; w; w = w->next)
        pthread_cond_signal(&w->cv); /* they see `closed` and leave the line */
    if (!unref_locked(p))
        pthread_mutex_unlock(&p->mu);
    while (idle) {
        pgs_conn_t *next = idle->next;
        idle->pool = NULL;
        pgs_conn_close(idle);
        idle = next;
    }
}

const pgs_dsn_t *pgs_pool_dsn(pgs_pool_t *p)
{
    return p->dsn;
}

void pgs_pool_stats(pgs_pool_t *p, pgs_pool_stats_t *out)
{
    pthread_mutex_lock(&p->mu);
    out->max_size = p->max_size;
    out->open = p->open;
    out->idle = p->nidle;
    out->borrowed = p->borrowed;
    out->waiting = p->waiting;
    pthread_mutex_unlock(&p->mu);
}

/* ---- process-wide pools -------------------------------------------------- */

static pthread_mutex_t shared_mu = PTHREAD_MUTEX_INITIALIZER;
static pgs_pool_t *shared_pools;

pgs_status_t pgs_pool_shared(const char *key, const pgs_pool_opts_t *opts, pgs_pool_t **out,
                             pgs_error_t *err)
{
    *out = NULL;
    pthread_mutex_lock(&shared_mu);
    for (pgs_pool_t *p = shared_pools; p; p = p->shared_next)
        if (strcmp(p->shared_key, key) == 0) {
            pthread_mutex_lock(&p->mu);
            p->refs++;
            pthread_mutex_unlock(&p->mu);
            pthread_mutex_unlock(&shared_mu);
            *out = p;
            return PGS_OK;
        }
    pgs_pool_t *p;
    pgs_status_t st = pgs_pool_open(opts, &p, err);
    if (st == PGS_OK && !(p->shared_key = strdup(key))) {
        pgs_pool_close(p);
        st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    if (st == PGS_OK) {
        /* The registry's own reference keeps it alive for the process. */
        p->refs++;
        p->shared_next = shared_pools;
        shared_pools = p;
        *out = p;
    }
    pthread_mutex_unlock(&shared_mu);
    return st;
}

/* When the library is unloaded or the process exits, the registry lets go
 * of its pools: each is closed (idle connections end with a Terminate, as
 * pgs_pool_close does) and freed once no other holder is left. Without it
 * the registry's connections would outlive everything that could close
 * them, and leak checkers rightly say so. A child forked after pools opened
 * connections and ending with exit() would close its parent's sessions
 * here: fork before connecting (nginx's master never connects). */
__attribute__((destructor)) static void shared_release(void)
{
    pthread_mutex_lock(&shared_mu);
    pgs_pool_t *p = shared_pools;
    shared_pools = NULL;
    pthread_mutex_unlock(&shared_mu);
    while (p) {
        pgs_pool_t *next = p->shared_next;
        pgs_pool_close(p); /* drops the registry's reference: its only one */
        p = next;
    }
}

void pgs_pool_ref(pgs_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->refs++;
    pthread_mutex_unlock(&p->mu);
}

void pgs_pool_unref(pgs_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    if (!unref_locked(p))
        pthread_mutex_unlock(&p->mu);
}

int pgs_pool_is_closed(pgs_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    int closed = p->closed;
    pthread_mutex_unlock(&p->mu);
    return closed;
}

