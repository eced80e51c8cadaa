/* SPDX-License-Identifier: MIT
 * test_pool_pressure.c — 64 threads on a pool of 4 for 30 s
 * (PGSTORE_PRESSURE_SECONDS), with server statement timeouts, cancels from
 * another thread (pgs_conn_cancel) and client-side query timeouts that
 * give connections up, mixed into quick queries and transactions. Every
 * answer must be to its own question, nobody waits out the acquire timeout
 * (the line is first come, first served), afterwards the pool holds at most
 * 4 connections, pg_stat_activity agrees, and closing the pool leaves none.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define THREADS 64
#define POOL 4
#define APP "pgstore-pressure"

static pgs_pool_t *pool;
static atomic_int stop;
static atomic_long max_wait_ms, calls, answered, wrong, server_timeouts, cancelled, client_timeouts,
    acquire_timeouts, other_errors, cancels_sent;

/* What each caller is doing, for the canceller: the connection it has
 * borrowed, while it runs a cancellable statement. */
typedef struct {
    pthread_mutex_t mu;
    pgs_conn_t *conn;
    int id;
    unsigned seed;
} caller_t;

static caller_t callers[THREADS];

static void tally_error(const pgs_error_t *err)
{
    if (err->code == PGS_ETIMEOUT && strcmp(err->sqlstate, "57014") == 0) {
        if (strstr(err->message, "statement timeout"))
            atomic_fetch_add(&server_timeouts, 1);
        else
            atomic_fetch_add(&cancelled, 1);
    } else if (err->code == PGS_ETIMEOUT && strstr(err->message, "query_timeout")) {
        atomic_fetch_add(&client_timeouts, 1);
    } else if (err->code == PGS_ECONNECTION && strstr(err->message, "query_timeout")) {
        atomic_fetch_add(&client_timeouts, 1); /* the rollback after one */
    } else if (err->code == PGS_ETIMEOUT && strstr(err->message, "waiting for a free connection")) {
        atomic_fetch_add(&acquire_timeouts, 1);
    } else {
        atomic_fetch_add(&other_errors, 1);
        fprintf(stderr, "unexpected error: %s: %s\n", pgs_status_name(err->code), err->message);
    }
}

/* Runs `sql` with the question as $1 and checks the answer is that
 * question. The connection is published to the canceller while it runs. */
static void ask(caller_t *me, pgs_conn_t *c, const char *sql, long long question, int cancellable)
{
    char q[32];
    snprintf(q, sizeof q, "%lld", question);
    pgs_param_t p = {q, -1};
    pgs_rows_t *r = NULL;
    pgs_error_t err;
    if (cancellable) {
        pthread_mutex_lock(&me->mu);
        me->conn = c;
        pthread_mutex_unlock(&me->mu);
    }
    pgs_status_t st = pgs_query(c, sql, 1, &p, &r, &err);
    if (cancellable) {
        pthread_mutex_lock(&me->mu);
        me->conn = NULL;
        pthread_mutex_unlock(&me->mu);
    }
    atomic_fetch_add(&calls, 1);
    if (st != PGS_OK) {
        tally_error(&err);
        return;
    }
    if (pgs_rows_count(r) != 1 || strcmp(pgs_rows_value(r, 0, 0, NULL), q) != 0) {
        atomic_fetch_add(&wrong, 1);
        fprintf(stderr, "caller %d asked %s, got %s\n", me->id, q,
                pgs_rows_count(r) ? pgs_rows_value(r, 0, 0, NULL) : "no row");
    } else {
        atomic_fetch_add(&answered, 1);
    }
    pgs_rows_free(r);
}

static void *caller(void *arg)
{
    caller_t *me = arg;
    long long n = 0;
    while (!atomic_load(&stop)) {
        long long question = (long long)me->id * 1000000000LL + ++n;
        int dice = rand_r(&me->seed) % 100;
        pgs_conn_t *c;
        pgs_error_t err;
        double t0 = pgs_test_now();
        pgs_status_t st = pgs_pool_acquire(pool, 10, &c, &err);
        long waited = (long)((pgs_test_now() - t0) * 1000);
        long seen = atomic_load(&max_wait_ms);
        while (waited > seen && !atomic_compare_exchange_weak(&max_wait_ms, &seen, waited))
            ;
        if (st != PGS_OK) {
            atomic_fetch_add(&calls, 1);
            tally_error(&err);
            continue;
        }
        if (dice < 80) {
            /* quick: an answer within a few milliseconds */
            ask(me, c, "SELECT $1::bigint AS q FROM pg_sleep(random() * 0.004)", question, 0);
        } else if (dice < 87) {
            /* past the server's statement_timeout (200 ms) */
            ask(me, c, "SELECT $1::bigint AS q FROM pg_sleep(0.3)", question, 0);
        } else if (dice < 95) {
            /* long enough for the canceller to find it */
            ask(me, c, "SELECT $1::bigint AS q FROM pg_sleep(0.15)", question, 1);
        } else if (dice < 97) {
            /* past the client's query_timeout (0.5 s), the server's lifted */
            if (pgs_tx_begin(c, PGS_READ_COMMITTED, &err) == PGS_OK &&
                pgs_exec_command(c, "SET LOCAL statement_timeout = 0", &err) == PGS_OK)
                ask(me, c, "SELECT $1::bigint AS q FROM pg_sleep(0.8)", question, 0);
            pgs_tx_rollback(c, NULL);
        } else {
            /* a transaction, several answers */
            if (pgs_tx_begin(c, PGS_READ_COMMITTED, &err) == PGS_OK) {
                ask(me, c, "SELECT $1::bigint AS q", question, 0);
                ask(me, c, "SELECT $1::bigint AS q FROM pg_sleep(0.002)", question + 500000000LL, 1);
                pgs_tx_commit(c, NULL);
            }
        }
        pgs_pool_release(pool, c);
    }
    return NULL;
}

static void *canceller(void *arg)
{
    unsigned seed = 12345;
    while (!atomic_load(&stop)) {
        caller_t *victim = &callers[rand_r(&seed) % THREADS];
        pthread_mutex_lock(&victim->mu);
        if (victim->conn) {
            pgs_error_t err;
            if (pgs_conn_cancel(victim->conn, &err) == PGS_OK)
                atomic_fetch_add(&cancels_sent, 1);
        }
        pthread_mutex_unlock(&victim->mu);
        usleep(2000);
    }
    return arg;
}

/* Backends of this test, counted from a connection of its own. */
static int backends(void)
{
    pgs_conn_opts_t o = {.conninfo = pgs_test_dsn(), .application_name = "pgstore-pressure-admin"};
    pgs_conn_t *c;
    pgs_error_t err;
    if (pgs_conn_open(&o, &c, &err) != PGS_OK)
        return -1;
    pgs_param_t p = {APP, -1};
    pgs_rows_t *r;
    int n = -1;
    if (pgs_query(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", 1, &p,
                 &r, &err) == PGS_OK) {
        n = atoi(pgs_rows_value(r, 0, 0, NULL));
        pgs_rows_free(r);
    }
    pgs_conn_close(c);
    return n;
}

/* Waits up to `seconds` for the backend count to be at most `most`. */
static int settle(int most, double seconds)
{
    double until = pgs_test_now() + seconds;
    int n;
    while ((n = backends()) > most && pgs_test_now() < until)
        usleep(50000);
    return n;
}

static void test_pressure(void)
{
    const char *env = getenv("PGSTORE_PRESSURE_SECONDS");
    double seconds = env && atof(env) > 0 ? atof(env) : 30;
    pgs_pool_opts_t o = {
        .conn = {.conninfo = pgs_test_dsn(), .application_name = APP, .statement_timeout_ms = 200,
                 .query_timeout = 0.5},
        .max_size = POOL,
        .acquire_timeout = 10,
    };
    pgs_error_t err;
    CHECK_OK(pgs_pool_open(&o, &pool, &err), err);
    if (!pool)
        return;
    pthread_t threads[THREADS], cancel_thread;
    for (int i = 0; i < THREADS; i++) {
        pthread_mutex_init(&callers[i].mu, NULL);
        callers[i].id = i + 1;
        callers[i].seed = (unsigned)(i * 7919 + 1);
        pthread_create(&threads[i], NULL, caller, &callers[i]);
    }
    pthread_create(&cancel_thread, NULL, canceller, NULL);
    double until = pgs_test_now() + seconds;
    int most = 0;
    while (pgs_test_now() < until) {
        sleep(1);
        pgs_pool_stats_t s;
        pgs_pool_stats(pool, &s);
        if (s.open > most)
            most = s.open;
        CHECK(s.open <= POOL);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_join(cancel_thread, NULL);

    pgs_pool_stats_t s;
    pgs_pool_stats(pool, &s);
    CHECK(s.borrowed == 0);
    CHECK(s.open <= POOL);
    /* Given-up connections' backends finish their cancelled statement and
     * go; what remains is at most the pool. */
    int open = settle(POOL, 10);
    CHECK(open >= 0 && open <= POOL);
    pgs_pool_close(pool);
    int after = settle(0, 10);
    CHECK(after == 0);

    printf("# %.0f s, %d threads on a pool of %d (most open %d): %ld calls, %ld answered "
           "(%ld wrong), %ld server statement timeouts, %ld cancelled of %ld cancels sent, "
           "%ld client query timeouts, %ld acquire timeouts (longest wait %ld ms), %ld other "
           "errors; backends %d after the run, %d after close\n",
           seconds, THREADS, POOL, most, atomic_load(&calls), atomic_load(&answered),
           atomic_load(&wrong), atomic_load(&server_timeouts), atomic_load(&cancelled),
           atomic_load(&cancels_sent), atomic_load(&client_timeouts),
           atomic_load(&acquire_timeouts), atomic_load(&max_wait_ms), atomic_load(&other_errors),
           open, after);
    CHECK(atomic_load(&wrong) == 0);
    CHECK(atomic_load(&other_errors) == 0);
    /* First come, first served: nobody waits out 10 s while connections
     * change hands a hundred times a second. */
    CHECK(atomic_load(&acquire_timeouts) == 0);
    CHECK(atomic_load(&answered) > 20 * seconds);
    CHECK(atomic_load(&server_timeouts) > 0);
    CHECK(atomic_load(&cancelled) > 0);
    CHECK(atomic_load(&client_timeouts) > 0);
}

/* A cancel with nothing running does nothing, and never reaches the next
 * statement. */
static void test_cancel_idle(void)
{
    pgs_conn_opts_t o = {.conninfo = pgs_test_dsn(), .application_name = APP};
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_conn_open(&o, &c, &err), err);
    CHECK_OK(pgs_conn_cancel(c, &err), err);
    usleep(100000);
    pgs_rows_t *r;
    CHECK_OK(pgs_query(c, "SELECT pg_sleep(0.2)", 0, NULL, &r, &err), err);
    pgs_rows_free(r);
    pgs_conn_close(c);
}

/* A query timeout gives the connection up: the next statement on it fails
 * at once, and the pool replaces it. */
static void test_query_timeout_gives_up(void)
{
    pgs_pool_opts_t o = {.conn = {.conninfo = pgs_test_dsn(), .application_name = APP,
                                  .query_timeout = 0.2},
                         .max_size = 1};
    pgs_pool_t *p;
    pgs_error_t err;
    CHECK_OK(pgs_pool_open(&o, &p, &err), err);
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    double t0 = pgs_test_now();
    CHECK(pgs_query(c, "SELECT pg_sleep(5)", 0, NULL, NULL, &err) == PGS_ETIMEOUT);
    CHECK(pgs_test_now() - t0 < 1);
    CHECK(strstr(err.message, "query_timeout") != NULL);
    CHECK(pgs_query(c, "SELECT 1", 0, NULL, NULL, &err) == PGS_ECONNECTION);
    pgs_pool_release(p, c);
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    pgs_rows_t *r;
    CHECK_OK(pgs_query(c, "SELECT 41 + 1", 0, NULL, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "42");
    pgs_rows_free(r);
    pgs_pool_release(p, c);
    pgs_pool_close(p);
    CHECK(settle(0, 10) == 0); /* the cancelled backend went too */
}

/* Waiters are served in the order they came. */
typedef struct {
    pgs_pool_t *pool;
    int id;
    int *order, *next;
    pthread_mutex_t *mu;
} queued_t;

static void *queued(void *arg)
{
    queued_t *q = arg;
    pgs_conn_t *c;
    pgs_error_t err;
    if (pgs_pool_acquire(q->pool, 10, &c, &err) != PGS_OK)
        return NULL;
    pthread_mutex_lock(q->mu);
    q->order[(*q->next)++] = q->id;
    pthread_mutex_unlock(q->mu);
    usleep(20000);
    pgs_pool_release(q->pool, c);
    return NULL;
}

static void test_first_come_first_served(void)
{
    pgs_pool_opts_t o = {.conn = {.conninfo = pgs_test_dsn(), .application_name = APP}, .max_size = 1};
    pgs_pool_t *p;
    pgs_error_t err;
    CHECK_OK(pgs_pool_open(&o, &p, &err), err);
    pgs_conn_t *held;
    CHECK_OK(pgs_pool_acquire(p, -1, &held, &err), err);
    int order[5] = {0}, next = 0;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_t t[5];
    queued_t q[5];
    for (int i = 0; i < 5; i++) {
        q[i] = (queued_t){p, i + 1, order, &next, &mu};
        pthread_create(&t[i], NULL, queued, &q[i]);
        usleep(30000); /* each is in line before the next comes */
    }
    pgs_pool_release(p, held);
    for (int i = 0; i < 5; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 5; i++)
        CHECK(order[i] == i + 1);
    pgs_pool_close(p);
}

int main(void)
{
    static const pgs_test_t tests[] = {
        {"waiters are served first come, first served", test_first_come_first_served},
        {"a cancel with nothing running does nothing", test_cancel_idle},
        {"a query timeout gives the connection up", test_query_timeout_gives_up},
        {"64 callers on a pool of 4 with timeouts and cancels", test_pressure},
        {NULL, NULL}};
    return pgs_test_run(tests);
}
