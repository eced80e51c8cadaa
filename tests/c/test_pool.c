/* SPDX-License-Identifier: MIT
 * test_pool.c — the pool from several threads: bounded size, acquire
 * timeout, replacement of a terminated backend, close with borrowers out.
 */
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>

static pgs_pool_t *open_pool(int size, double timeout)
{
    pgs_pool_opts_t o = {.conn = {.conninfo = pgs_test_dsn()}, .max_size = size,
                         .acquire_timeout = timeout};
    pgs_pool_t *p = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_pool_open(&o, &p, &err), err);
    return p;
}

static void test_exhaustion_times_out(void)
{
    pgs_pool_t *p = open_pool(2, 0.2);
    pgs_conn_t *a, *b, *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(p, -1, &a, &err), err);
    CHECK_OK(pgs_pool_acquire(p, -1, &b, &err), err);
    CHECK(pgs_pool_acquire(p, -1, &c, &err) == PGS_ETIMEOUT);
    CHECK(strstr(err.message, "timed out") != NULL);
    pgs_pool_release(p, a);
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    CHECK(c == a); /* the warm connection is reused */
    pgs_pool_release(p, b);
    pgs_pool_release(p, c);
    pgs_pool_close(p);
}

typedef struct {
    pgs_pool_t *pool;
    int ok;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 50; i++) {
        pgs_conn_t *c;
        pgs_error_t err;
        if (pgs_pool_acquire(w->pool, 10, &c, &err) != PGS_OK)
            continue;
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        pgs_param_t p = {v, -1};
        pgs_rows_t *r;
        if (pgs_query(c, "select $1::int * 2", 1, &p, &r, &err) == PGS_OK) {
            if (atoi(pgs_rows_value(r, 0, 0, NULL)) == i * 2)
                w->ok++;
            pgs_rows_free(r);
        }
        pgs_pool_release(w->pool, c);
    }
    return NULL;
}

static void test_threads_share_pool(void)
{
    pgs_pool_t *p = open_pool(3, 10);
    pthread_t t[8];
    worker_t w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_t){p, 0};
        pthread_create(&t[i], NULL, worker, &w[i]);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
    }
    CHECK(ok == 8 * 50);
    pgs_pool_stats_t s;
    pgs_pool_stats(p, &s);
    CHECK(s.open <= 3 && s.borrowed == 0);
    pgs_pool_close(p);
}

static void test_terminated_backend_replaced(void)
{
    pgs_pool_t *p = open_pool(1, 5);
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    int pid = pgs_conn_backend_pid(c);
    pgs_pool_release(p, c);

    pgs_conn_opts_t o = {.conninfo = pgs_test_dsn()};
    pgs_conn_t *killer;
    CHECK_OK(pgs_conn_open(&o, &killer, &err), err);
    char v[16];
    snprintf(v, sizeof v, "%d", pid);
    pgs_param_t prm = {v, -1};
    CHECK_OK(pgs_query(killer, "select pg_terminate_backend($1::int)", 1, &prm, NULL, &err), err);
    /* Wait until the backend is really gone. */
    for (int i = 0; i < 100; i++) {
        pgs_rows_t *r;
        pgs_query(killer, "select count(*) from pg_stat_activity where pid = $1::int", 1, &prm, &r, &err);
        int n = atoi(pgs_rows_value(r, 0, 0, NULL));
        pgs_rows_free(r);
        if (n == 0)
            break;
        pgs_backoff_sleep(1);
    }
    pgs_conn_close(killer);

    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    CHECK(pgs_conn_backend_pid(c) != pid);
    CHECK_OK(pgs_exec_command(c, "select 1", &err), err);
    pgs_pool_release(p, c);
    pgs_pool_close(p);
}

static void test_release_rolls_back(void)
{
    pgs_pool_t *p = open_pool(1, 5);
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    CHECK_OK(pgs_exec_command(c, "begin; create temp table leftover (a int)", &err), err);
    pgs_pool_release(p, c);
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    CHECK(pgs_conn_tx_state(c) == PGS_TX_IDLE);
    CHECK(pgs_exec_command(c, "select * from leftover", &err) == PGS_ESQL);
    CHECK_STR(err.sqlstate, "42P01");
    pgs_pool_release(p, c);
    pgs_pool_close(p);
}

static void test_close_with_borrowers(void)
{
    pgs_pool_t *p = open_pool(2, 5);
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    pgs_pool_close(p);
    pgs_pool_close(p); /* harmless */
    /* Still usable until given back; then the pool is freed. */
    CHECK_OK(pgs_exec_command(c, "select 1", &err), err);
    pgs_pool_release(p, c);
}

static void test_shared_pool(void)
{
    pgs_pool_opts_t o = {.conn = {.conninfo = pgs_test_dsn()}, .max_size = 2};
    pgs_pool_t *a, *b;
    pgs_error_t err;
    CHECK_OK(pgs_pool_shared("k", &o, &a, &err), err);
    CHECK_OK(pgs_pool_shared("k", &o, &b, &err), err);
    CHECK(a == b);
    pgs_pool_unref(a);
    pgs_pool_unref(b);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"exhaustion times out", test_exhaustion_times_out},
                                       {"threads share a pool", test_threads_share_pool},
                                       {"terminated backend replaced", test_terminated_backend_replaced},
                                       {"release rolls back", test_release_rolls_back},
                                       {"close with borrowers out", test_close_with_borrowers},
                                       {"shared pool by key", test_shared_pool},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
