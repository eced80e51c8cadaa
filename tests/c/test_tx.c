/* SPDX-License-Identifier: MIT
 * test_tx.c — transactions: commit, rollback, savepoints, the retrying
 * runner against a real serialization conflict, and pipelines.
 */
#include "harness.h"

#include <stdlib.h>

static pgs_pool_t *pool;

static void test_commit_rollback_savepoint(void)
{
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK_OK(pgs_exec_command(c, "drop table if exists tx_t; create table tx_t (a int)", &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_REPEATABLE_READ, &err), err);
    CHECK_OK(pgs_exec_command(c, "insert into tx_t values (1)", &err), err);
    CHECK_OK(pgs_tx_savepoint(c, "sp1", &err), err);
    CHECK_OK(pgs_exec_command(c, "insert into tx_t values (2)", &err), err);
    CHECK_OK(pgs_tx_rollback_to(c, "sp1", &err), err);
    CHECK(pgs_tx_savepoint(c, "bad name", &err) == PGS_EINVALID);
    CHECK_OK(pgs_tx_commit(c, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_exec_command(c, "insert into tx_t values (3)", &err), err);
    CHECK_OK(pgs_tx_rollback(c, &err), err);
    /* COMMIT of a failed transaction is reported, not silently rolled back. */
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK(pgs_exec_command(c, "select 1/0", &err) == PGS_ESQL);
    CHECK(pgs_tx_commit(c, &err) == PGS_ESQL);
    pgs_pool_release(pool, c);
    CHECK(pgs_test_query_int(pool, "select count(*) from tx_t") == 1);
}

/* Two serializable transactions that read each other's rows: one must
 * fail with 40001 on the first try and succeed when re-run. On its first
 * try each waits after its read until the other has read too, so they
 * overlap however busy the machine is. */
typedef struct tx_ud {
    int attempts;
    int has_read;
    struct tx_ud *peer;
} tx_ud_t;

static pgs_status_t read_then_write(pgs_conn_t *c, void *ud, pgs_error_t *err)
{
    tx_ud_t *u = ud;
    u->attempts++;
    pgs_rows_t *r;
    pgs_status_t st = pgs_query(c, "select coalesce(sum(v), 0) from ser_t", 0, NULL, &r, err);
    if (st != PGS_OK)
        return st;
    char sum[32];
    snprintf(sum, sizeof sum, "%s", pgs_rows_value(r, 0, 0, NULL));
    pgs_rows_free(r);
    if (u->attempts == 1) {
        __atomic_store_n(&u->has_read, 1, __ATOMIC_SEQ_CST);
        double give_up = pgs_test_now() + 10;
        while (!__atomic_load_n(&u->peer->has_read, __ATOMIC_SEQ_CST) && pgs_test_now() < give_up)
            pgs_test_sleep(0.002);
    }
    pgs_param_t p = {sum, -1};
    return pgs_query(c, "insert into ser_t values ($1::int + 1)", 1, &p, NULL, err);
}

static void *other_tx(void *arg)
{
    tx_ud_t *u = arg;
    pgs_error_t err;
    pgs_transaction(pool, PGS_SERIALIZABLE, 5, read_then_write, u, &err);
    return NULL;
}

#include <pthread.h>

static void test_serialization_retry(void)
{
    pgs_error_t err;
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK_OK(pgs_exec_command(c, "drop table if exists ser_t; create table ser_t (v int)", &err), err);
    pgs_pool_release(pool, c);
    tx_ud_t one = {0}, two = {0};
    one.peer = &two;
    two.peer = &one;
    pthread_t t;
    pthread_create(&t, NULL, other_tx, &two);
    pgs_status_t st = pgs_transaction(pool, PGS_SERIALIZABLE, 5, read_then_write, &one, &err);
    pthread_join(t, NULL);
    CHECK_OK(st, err);
    CHECK(one.attempts + two.attempts >= 3); /* someone was re-run */
    CHECK(pgs_test_query_int(pool, "select count(*) from ser_t") == 2);
    CHECK(pgs_test_query_int(pool, "select max(v) from ser_t") == 2); /* serial outcome: 1 then 2 */
}

static void test_pipeline(void)
{
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK_OK(pgs_exec_command(c, "drop table if exists pipe_t; create table pipe_t (a int primary key)", &err), err);
    pgs_pipeline_t *p;
    CHECK_OK(pgs_pipeline_begin(c, &p, &err), err);
    char v[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(v[i], sizeof v[i], "%d", i);
        pgs_param_t prm = {v[i], -1};
        CHECK_OK(pgs_pipeline_add(p, "insert into pipe_t values ($1) returning a", 1, &prm, &err), err);
    }
    pgs_rows_t **rs;
    int n;
    CHECK_OK(pgs_pipeline_run(p, &rs, &n, &err), err);
    CHECK(n == 100);
    CHECK_STR(pgs_rows_value(rs[99], 0, 0, NULL), "99");
    pgs_results_free(rs, n);
    /* An error aborts the batch and names the statement; the statements
     * between two syncs form one implicit transaction, so none of them
     * stays. The connection is usable afterwards. */
    CHECK_OK(pgs_pipeline_begin(c, &p, &err), err);
    pgs_param_t one = {"1000", -1}, dup = {"5", -1}, two = {"1001", -1};
    pgs_pipeline_add(p, "insert into pipe_t values ($1)", 1, &one, &err);
    pgs_pipeline_add(p, "insert into pipe_t values ($1)", 1, &dup, &err);
    pgs_pipeline_add(p, "insert into pipe_t values ($1)", 1, &two, &err);
    CHECK(pgs_pipeline_run(p, &rs, &n, &err) == PGS_ESQL);
    CHECK(err.batch == 2);
    CHECK_STR(err.constraint, "pipe_t_pkey");
    CHECK(strncmp(err.message, "duplicate key value", 19) == 0);
    CHECK_OK(pgs_exec_command(c, "select 1", &err), err);
    pgs_pool_release(pool, c);
    CHECK(pgs_test_query_int(pool, "select count(*) from pipe_t") == 100);
}

int main(void)
{
    pool = pgs_test_pool_open(4);
    static const pgs_test_t tests[] = {{"commit, rollback, savepoint", test_commit_rollback_savepoint},
                                       {"serialization failure is retried", test_serialization_retry},
                                       {"pipeline", test_pipeline},
                                       {NULL, NULL}};
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
