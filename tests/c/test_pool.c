/* SPDX-License-Identifier: MIT
 * test_pool.c — the pool from several threads: bounded size, acquire
 * timeout, replacement of a terminated backend, close with borrowers out,
 * nothing of a borrower's session left for the next, options= in a DSN.
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

/* The first value of sql on c, in buf ("" on an error, a test failure). */
static const char *first(pgs_conn_t *c, const char *sql, char *buf, size_t size)
{
    pgs_rows_t *r = NULL;
    pgs_error_t err;
    buf[0] = '\0';
    CHECK_OK(pgs_query(c, sql, 0, NULL, &r, &err), err);
    if (r) {
        const char *v = pgs_rows_value(r, 0, 0, NULL);
        snprintf(buf, size, "%s", v ? v : "(null)");
        pgs_rows_free(r);
    }
    return buf;
}

static void test_release_cleans_session(void)
{
    pgs_pool_opts_t o = {.conn = {.conninfo = pgs_test_dsn(), .statement_timeout_ms = 3000},
                         .max_size = 1};
    pgs_pool_t *p = NULL;
    pgs_conn_t *c;
    pgs_error_t err;
    char buf[128], pid[32];
    CHECK_OK(pgs_pool_open(&o, &p, &err), err);
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    pgs_param_t one = {"1", -1};
    CHECK_OK(pgs_query(c, "select $1::int + 1", 1, &one, NULL, &err), err);
    first(c, "select pg_backend_pid()", pid, sizeof pid);
    /* statement_timeout last: it holds for the rest of a batch. Not 1 ms:
     * the reset's first statement runs under it, and a busy machine may
     * take longer, fail the reset and (rightly) replace the connection. */
    CHECK_OK(pgs_exec_command(c, "set search_path = pg_catalog; set TimeZone = 'Asia/Tokyo';"
                                 " create temp table gone (a int); select pg_advisory_lock(77);"
                                 " listen gone; prepare mine as select 1; set statement_timeout = 1500",
                              &err),
             err);
    pgs_pool_release(p, c);

    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    CHECK_STR(first(c, "select pg_backend_pid()", buf, sizeof buf), pid);
    CHECK_STR(first(c, "show search_path", buf, sizeof buf), "\"$user\", public");
    CHECK_STR(first(c, "show statement_timeout", buf, sizeof buf), "3s");
    CHECK_STR(first(c, "show TimeZone", buf, sizeof buf), "UTC");
    CHECK_STR(first(c, "select count(*) from pg_class where relpersistence = 't'", buf, sizeof buf),
              "0");
    CHECK_STR(first(c, "select count(*) from pg_locks where locktype = 'advisory'"
                       " and pid = pg_backend_pid()", buf, sizeof buf), "0");
    CHECK_STR(first(c, "select count(*) from pg_listening_channels()", buf, sizeof buf), "0");
    /* The borrower's statement is gone, pgstore's is still prepared. */
    CHECK_STR(first(c, "select count(*) from pg_prepared_statements where from_sql", buf, sizeof buf),
              "0");
    CHECK_STR(first(c, "select count(*) from pg_prepared_statements"
                       " where statement = 'select $1::int + 1'", buf, sizeof buf), "1");
    pgs_rows_t *r = NULL;
    CHECK_OK(pgs_query(c, "select $1::int + 1", 1, &one, &r, &err), err);
    CHECK_STR(r ? pgs_rows_value(r, 0, 0, NULL) : NULL, "2");
    pgs_rows_free(r);
    pgs_pool_release(p, c);
    pgs_pool_close(p);
}

/* options= of any length the server takes, pgstore's settings kept; one
 * that would swallow them, or that the server would refuse, is invalid. */
static void test_dsn_options(void)
{
    static char dsn[40000], opts[34000];
    pgs_pool_t *p = NULL;
    pgs_conn_t *c;
    pgs_error_t err;
    char buf[64];
    for (size_t len = 0; len + 16 < 4000; len += 16)
        memcpy(opts + len, "-c work_mem=9MB ", 17);
    snprintf(dsn, sizeof dsn, "%s options='%s'", pgs_test_dsn(), opts);
    pgs_pool_opts_t o = {.conn = {.conninfo = dsn, .statement_timeout_ms = 2147483647},
                         .max_size = 1};
    CHECK_OK(pgs_pool_open(&o, &p, &err), err);
    CHECK_OK(pgs_pool_acquire(p, -1, &c, &err), err);
    CHECK_STR(first(c, "show work_mem", buf, sizeof buf), "9MB");
    CHECK_STR(first(c, "show TimeZone", buf, sizeof buf), "UTC");
    CHECK_STR(first(c, "show statement_timeout", buf, sizeof buf), "2147483647ms");
    pgs_pool_release(p, c);
    pgs_pool_close(p);

    snprintf(dsn, sizeof dsn, "%s options='-c work_mem=9MB\\\\'", pgs_test_dsn());
    CHECK(pgs_pool_open(&o, &p, &err) == PGS_EINVALID && p == NULL);
    CHECK(strstr(err.message, "backslash") != NULL);
    for (size_t len = 0; len + 16 < sizeof opts; len += 16)
        memcpy(opts + len, "-c work_mem=9MB ", 17);
    snprintf(dsn, sizeof dsn, "%s options='%s'", pgs_test_dsn(), opts);
    CHECK(pgs_pool_open(&o, &p, &err) == PGS_EINVALID && p == NULL);
    CHECK(strstr(err.message, "options=") != NULL);
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
                                       {"release cleans the session", test_release_cleans_session},
                                       {"options= in the DSN", test_dsn_options},
                                       {"close with borrowers out", test_close_with_borrowers},
                                       {"shared pool by key", test_shared_pool},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
