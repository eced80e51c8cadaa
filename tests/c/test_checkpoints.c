/* SPDX-License-Identifier: MIT
 * test_checkpoints.c — consumer checkpoints through the C API: upsert,
 * the guarded forms and their conflicts, a save inside a transaction,
 * 8 threads racing a guarded save on their own connections, and one
 * consumer name on two event stores.
 */
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>

static pgs_pool_t *pool;
static char table[64];

static pgs_checkpoints_t *open_store(void)
{
    pgs_checkpoints_opts_t o = {.table = table};
    pgs_checkpoints_t *cp = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_checkpoints_open(pool, &o, &cp, &err), err);
    return cp;
}

static void test_upsert(void)
{
    pgs_checkpoints_t *cp = open_store();
    pgs_error_t err;
    int64_t pos = -1;
    CHECK(pgs_checkpoints_load(cp, NULL, "u", &pos, &err) == PGS_ENOTFOUND);
    CHECK_OK(pgs_checkpoints_save(cp, NULL, "u", 10, PGS_CHECKPOINT_ANY, 0, &err), err);
    CHECK_OK(pgs_checkpoints_save(cp, NULL, "u", 11, PGS_CHECKPOINT_ANY, 0, &err), err);
    CHECK_OK(pgs_checkpoints_load(cp, NULL, "u", &pos, &err), err);
    CHECK(pos == 11);
    CHECK(pgs_checkpoints_save(cp, NULL, "u", -1, PGS_CHECKPOINT_ANY, 0, &err) == PGS_EINVALID);
    pgs_rows_t *r;
    CHECK_OK(pgs_checkpoints_list(cp, NULL, &r, &err), err);
    CHECK(pgs_rows_count(r) >= 1 && pgs_rows_columns(r) == 4);
    CHECK_STR(pgs_rows_name(r, 1), "cursor");
    CHECK_STR(pgs_rows_name(r, 3), "store");
    CHECK_STR(pgs_rows_value(r, 0, 3, NULL), "public.events");
    pgs_rows_free(r);
    int64_t removed = 0;
    CHECK_OK(pgs_checkpoints_delete(cp, NULL, "u", &removed, &err), err);
    CHECK(removed == 1);
    pgs_checkpoints_close(cp);
}

static void test_guarded(void)
{
    pgs_checkpoints_t *cp = open_store();
    pgs_error_t err;
    CHECK_OK(pgs_checkpoints_save(cp, NULL, "g", 1, PGS_CHECKPOINT_NONE, 0, &err), err);
    CHECK(pgs_checkpoints_save(cp, NULL, "g", 2, PGS_CHECKPOINT_NONE, 0, &err) == PGS_ECONFLICT);
    CHECK(err.has_versions && err.expected == PGS_CHECKPOINT_NONE_STORED && err.actual == 1);
    CHECK_OK(pgs_checkpoints_save(cp, NULL, "g", 5, PGS_CHECKPOINT_EXACT, 1, &err), err);
    CHECK(pgs_checkpoints_save(cp, NULL, "g", 6, PGS_CHECKPOINT_EXACT, 1, &err) == PGS_ECONFLICT);
    CHECK(err.has_versions && err.expected == 1 && err.actual == 5);
    CHECK(pgs_checkpoints_save(cp, NULL, "nobody", 6, PGS_CHECKPOINT_EXACT, 1, &err) ==
          PGS_ECONFLICT);
    CHECK(err.has_versions && err.expected == 1 && err.actual == PGS_CHECKPOINT_NONE_STORED);
    pgs_checkpoints_close(cp);
}

static void test_in_transaction(void)
{
    pgs_checkpoints_t *cp = open_store();
    pgs_error_t err;
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_checkpoints_save(cp, c, "t", 7, PGS_CHECKPOINT_ANY, 0, &err), err);
    CHECK_OK(pgs_tx_rollback(c, &err), err);
    int64_t pos;
    CHECK(pgs_checkpoints_load(cp, NULL, "t", &pos, &err) == PGS_ENOTFOUND);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_checkpoints_save(cp, c, "t", 8, PGS_CHECKPOINT_ANY, 0, &err), err);
    CHECK_OK(pgs_tx_commit(c, &err), err);
    pgs_pool_release(pool, c);
    CHECK_OK(pgs_checkpoints_load(cp, NULL, "t", &pos, &err), err);
    CHECK(pos == 8);
    pgs_checkpoints_close(cp);
}

typedef struct {
    pgs_checkpoints_t *cp;
    int id;
    pgs_status_t st;
} racer_t;

static pthread_barrier_t start;

static void *racer(void *arg)
{
    racer_t *r = arg;
    pgs_error_t err;
    pthread_barrier_wait(&start);
    r->st = pgs_checkpoints_save(r->cp, NULL, "race", 100 + r->id, PGS_CHECKPOINT_EXACT, 0, &err);
    return NULL;
}

static void test_threads_race(void)
{
    pgs_checkpoints_t *cp = open_store();
    pgs_error_t err;
    CHECK_OK(pgs_checkpoints_save(cp, NULL, "race", 0, PGS_CHECKPOINT_ANY, 0, &err), err);
    enum { N = 8 };
    pthread_t t[N];
    racer_t r[N];
    pthread_barrier_init(&start, NULL, N);
    for (int i = 0; i < N; i++) {
        r[i] = (racer_t){cp, i, PGS_ESQL};
        pthread_create(&t[i], NULL, racer, &r[i]);
    }
    int ok = 0, conflicts = 0, winner = -1;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (r[i].st == PGS_OK) {
            ok++;
            winner = i;
        }
        conflicts += r[i].st == PGS_ECONFLICT;
    }
    pthread_barrier_destroy(&start);
    CHECK(ok == 1 && conflicts == N - 1);
    int64_t pos;
    CHECK_OK(pgs_checkpoints_load(cp, NULL, "race", &pos, &err), err);
    CHECK(pos == 100 + winner);
    pgs_checkpoints_close(cp);
}

/* A checkpoint belongs to (store, consumer); every spelling of a store
 * is one store. */
static void test_stores(void)
{
    pgs_error_t err;
    pgs_checkpoints_opts_t oa = {.table = table, .store = "c_cp_a"};
    pgs_checkpoints_opts_t oq = {.table = table, .store = "public.c_cp_a"};
    pgs_checkpoints_opts_t ob = {.table = table, .store = "c_cp_b"};
    pgs_checkpoints_t *a, *q, *b;
    CHECK_OK(pgs_checkpoints_open(pool, &oa, &a, &err), err);
    CHECK_OK(pgs_checkpoints_open(pool, &oq, &q, &err), err);
    CHECK_OK(pgs_checkpoints_open(pool, &ob, &b, &err), err);
    CHECK_STR(pgs_checkpoints_store(a), "public.c_cp_a");
    CHECK_STR(pgs_checkpoints_store(q), "public.c_cp_a");
    CHECK_OK(pgs_checkpoints_save(a, NULL, "same", 30, PGS_CHECKPOINT_ANY, 0, &err), err);
    int64_t pos = -1;
    CHECK(pgs_checkpoints_load(b, NULL, "same", &pos, &err) == PGS_ENOTFOUND);
    CHECK_OK(pgs_checkpoints_save(b, NULL, "same", 2, PGS_CHECKPOINT_NONE, 0, &err), err);
    CHECK_OK(pgs_checkpoints_load(q, NULL, "same", &pos, &err), err);
    CHECK(pos == 30);
    CHECK_OK(pgs_checkpoints_load(b, NULL, "same", &pos, &err), err);
    CHECK(pos == 2);
    pgs_checkpoints_opts_t bad = {.table = table, .store = "no such"};
    pgs_checkpoints_t *none = NULL;
    CHECK(pgs_checkpoints_open(pool, &bad, &none, &err) == PGS_EINVALID && !none);
    pgs_checkpoints_close(a);
    pgs_checkpoints_close(q);
    pgs_checkpoints_close(b);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"upsert, list, delete", test_upsert},
                                       {"guarded saves", test_guarded},
                                       {"inside a transaction", test_in_transaction},
                                       {"8 threads race a guarded save", test_threads_race},
                                       {"one consumer on two stores", test_stores},
                                       {NULL, NULL}};
    pool = pgs_test_pool_open(8);
    pgs_test_name(table, sizeof table, "c_checkpoints");
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
