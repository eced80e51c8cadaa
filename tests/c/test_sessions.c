/* SPDX-License-Identifier: MIT
 * test_sessions.c — the session store through the C API: the optimistic
 * save and its conflict report, the row shape, and 16 threads on their
 * own connections saving one version: exactly one wins.
 */
#include "harness.h"

#include <pthread.h>
#include <stdlib.h>

static pgs_pool_t *pool;
static char table[64];

static pgs_sessions_t *open_store(void)
{
    pgs_sessions_opts_t o = {.table = table};
    pgs_sessions_t *s = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_sessions_open(pool, &o, &s, &err), err);
    return s;
}

static void test_optimistic_save(void)
{
    pgs_sessions_t *s = open_store();
    pgs_error_t err;
    pgs_rows_t *r;
    CHECK(pgs_sessions_load(s, NULL, "a", &r, &err) == PGS_ENOTFOUND);
    CHECK_OK(pgs_sessions_save(s, NULL, "a", 1, "{\"n\": 1}", NULL, &err), err);
    CHECK_OK(pgs_sessions_save(s, NULL, "a", 2, "{\"n\": 2}", "[1]", &err), err);
    CHECK(pgs_sessions_save(s, NULL, "a", 2, "{\"n\": 0}", NULL, &err) == PGS_ECONFLICT);
    CHECK(err.has_versions && err.expected == 2 && err.actual == 2);
    CHECK(pgs_sessions_save(s, NULL, "a", 1, "{\"n\": 0}", NULL, &err) == PGS_ECONFLICT);
    CHECK(err.expected == 1 && err.actual == 2);
    CHECK_OK(pgs_sessions_load(s, NULL, "a", &r, &err), err);
    CHECK(pgs_rows_columns(r) == 4);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "2");
    CHECK_STR(pgs_rows_value(r, 0, 1, NULL), "{\"n\": 2}");
    CHECK_STR(pgs_rows_value(r, 0, 2, NULL), "[1]");
    pgs_rows_free(r);
    CHECK(pgs_sessions_save(s, NULL, "a", 3, "{}", "{\"not\": \"an array\"}", &err) == PGS_EINVALID);
    CHECK_STR(err.sqlstate, "23514");
    CHECK(pgs_sessions_save(s, NULL, "a", -3, "{}", NULL, &err) == PGS_EINVALID);
    int64_t removed = 0;
    CHECK_OK(pgs_sessions_delete(s, NULL, "a", &removed, &err), err);
    CHECK(removed == 1);
    CHECK_OK(pgs_sessions_delete(s, NULL, "a", &removed, &err), err);
    CHECK(removed == 0);
    pgs_sessions_close(s);
}

enum { RACERS = 16 };
static pthread_barrier_t start;

typedef struct {
    pgs_sessions_t *s;
    int id;
    pgs_status_t st;
} racer_t;

static void *racer(void *arg)
{
    racer_t *r = arg;
    char state[32];
    snprintf(state, sizeof state, "{\"winner\": %d}", r->id);
    pgs_error_t err;
    pthread_barrier_wait(&start);
    r->st = pgs_sessions_save(r->s, NULL, "race", 7, state, NULL, &err);
    return NULL;
}

static void test_sixteen_threads(void)
{
    pgs_sessions_t *s = open_store();
    pgs_error_t err;
    CHECK_OK(pgs_sessions_save(s, NULL, "race", 6, "{}", NULL, &err), err);
    pthread_t t[RACERS];
    racer_t r[RACERS];
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        r[i] = (racer_t){s, i, PGS_ESQL};
        pthread_create(&t[i], NULL, racer, &r[i]);
    }
    int ok = 0, conflicts = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        if (r[i].st == PGS_OK) {
            ok++;
            winner = i;
        }
        conflicts += r[i].st == PGS_ECONFLICT;
    }
    pthread_barrier_destroy(&start);
    CHECK(ok == 1);
    CHECK(conflicts == RACERS - 1);
    pgs_rows_t *res;
    CHECK_OK(pgs_sessions_load(s, NULL, "race", &res, &err), err);
    char want[32];
    snprintf(want, sizeof want, "{\"winner\": %d}", winner);
    CHECK_STR(pgs_rows_value(res, 0, 1, NULL), want);
    pgs_rows_free(res);
    pgs_sessions_close(s);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"optimistic save", test_optimistic_save},
                                       {"16 threads save one version", test_sixteen_threads},
                                       {NULL, NULL}};
    pool = pgs_test_pool_open(RACERS);
    pgs_test_name(table, sizeof table, "c_sessions");
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
