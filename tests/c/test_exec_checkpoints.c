/* SPDX-License-Identifier: MIT
 * test_exec_checkpoints.c — execution checkpoints through the C API:
 * upsert, not-found, list, delete, and 16 threads saving one id at once
 * (one row, one of their documents, no error).
 */
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>

static pgs_pool_t *pool;
static char table[64];

static pgs_exec_checkpoints_t *open_store(void)
{
    pgs_exec_checkpoints_opts_t o = {.table = table};
    pgs_exec_checkpoints_t *xs = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_exec_checkpoints_open(pool, &o, &xs, &err), err);
    return xs;
}

static void test_save_load_list_delete(void)
{
    pgs_exec_checkpoints_t *xs = open_store();
    pgs_error_t err;
    pgs_rows_t *r;
    CHECK(pgs_exec_checkpoints_load(xs, NULL, "e1", &r, &err) == PGS_ENOTFOUND);
    CHECK_OK(pgs_exec_checkpoints_save(xs, NULL, "e1", "{\"step\": 1}", &err), err);
    CHECK_OK(pgs_exec_checkpoints_save(xs, NULL, "e1", "{\"step\": 2}", &err), err);
    CHECK_OK(pgs_exec_checkpoints_save(xs, NULL, "e0", "{}", &err), err);
    CHECK_OK(pgs_exec_checkpoints_load(xs, NULL, "e1", &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "{\"step\": 2}");
    pgs_rows_free(r);
    CHECK_OK(pgs_exec_checkpoints_list(xs, NULL, &r, &err), err);
    CHECK(pgs_rows_count(r) == 2);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "e0");
    CHECK_STR(pgs_rows_value(r, 1, 0, NULL), "e1");
    pgs_rows_free(r);
    int64_t removed = -1;
    CHECK_OK(pgs_exec_checkpoints_delete(xs, NULL, "e1", &removed, &err), err);
    CHECK(removed == 1);
    CHECK_OK(pgs_exec_checkpoints_delete(xs, NULL, "e1", &removed, &err), err);
    CHECK(removed == 0);
    CHECK(pgs_exec_checkpoints_save(xs, NULL, "e2", "not json", &err) == PGS_EINVALID);
    CHECK_OK(pgs_exec_checkpoints_delete(xs, NULL, "e0", NULL, &err), err);
    pgs_exec_checkpoints_close(xs);
}

enum { WRITERS = 16, ROUNDS = 20 };
static pthread_barrier_t start;

typedef struct {
    pgs_exec_checkpoints_t *xs;
    int id, failures;
} writer_t;

static void *writer(void *arg)
{
    writer_t *w = arg;
    pthread_barrier_wait(&start);
    for (int i = 1; i <= ROUNDS; i++) {
        char json[64];
        snprintf(json, sizeof json, "{\"writer\": %d, \"round\": %d}", w->id, i);
        pgs_error_t err;
        if (pgs_exec_checkpoints_save(w->xs, NULL, "shared", json, &err) != PGS_OK) {
            fprintf(stderr, "writer %d: %s\n", w->id, err.message);
            w->failures++;
        }
    }
    return NULL;
}

static void test_concurrent_saves(void)
{
    pgs_exec_checkpoints_t *xs = open_store();
    pthread_t t[WRITERS];
    writer_t w[WRITERS];
    pthread_barrier_init(&start, NULL, WRITERS);
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){xs, i + 1, 0};
        pthread_create(&t[i], NULL, writer, &w[i]);
    }
    int failures = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
    }
    pthread_barrier_destroy(&start);
    CHECK(failures == 0);
    pgs_error_t err;
    pgs_rows_t *r;
    CHECK_OK(pgs_exec_checkpoints_list(xs, NULL, &r, &err), err);
    CHECK(pgs_rows_count(r) == 1);
    pgs_rows_free(r);
    CHECK_OK(pgs_exec_checkpoints_load(xs, NULL, "shared", &r, &err), err);
    int writer_id = 0, round = 0;
    CHECK(sscanf(pgs_rows_value(r, 0, 0, NULL), "{\"round\": %d, \"writer\": %d}", &round, &writer_id) == 2);
    CHECK(writer_id >= 1 && writer_id <= WRITERS && round == ROUNDS);
    pgs_rows_free(r);
    pgs_exec_checkpoints_close(xs);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"save, load, list, delete", test_save_load_list_delete},
                                       {"16 threads save one id", test_concurrent_saves},
                                       {NULL, NULL}};
    pool = pgs_test_pool_open(WRITERS);
    pgs_test_name(table, sizeof table, "c_exec");
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
