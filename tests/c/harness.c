/* SPDX-License-Identifier: MIT
 * harness.c — the runner and the shared setup behind harness.h.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

int pgs_test_failures;

/* Drops and re-creates the program's database through the suite's one. */
static void make_database(const char *base, const char *db)
{
    pgs_conn_opts_t o = {.conninfo = base, .application_name = "pgstore-c-setup"};
    pgs_conn_t *c;
    pgs_error_t err;
    char sql[256];
    if (pgs_conn_open(&o, &c, &err) != PGS_OK) {
        fprintf(stderr, "test database: %s\n", err.message);
        exit(1);
    }
    snprintf(sql, sizeof sql, "drop database if exists %s with (force)", db);
    pgs_status_t st = pgs_exec_command(c, sql, &err);
    if (st == PGS_OK) {
        snprintf(sql, sizeof sql, "create database %s", db);
        st = pgs_exec_command(c, sql, &err);
    }
    pgs_conn_close(c);
    if (st != PGS_OK) {
        fprintf(stderr, "test database %s: %s\n", db, err.message);
        exit(1);
    }
}

const char *pgs_test_dsn(void)
{
    static char dsn[1024];
    if (*dsn)
        return dsn;
    const char *base = getenv("PGSTORE_TEST_DSN");
    if (!base || !*base) {
        fprintf(stderr, "PGSTORE_TEST_DSN is not set: run the suite through tools/test.sh\n");
        exit(1);
    }
    char db[64];
    int n = snprintf(db, sizeof db, "pgstore_c_%s", program_invocation_short_name);
    for (int i = 0; i < n && db[i]; i++)
        if (!((db[i] >= 'a' && db[i] <= 'z') || (db[i] >= '0' && db[i] <= '9')))
            db[i] = '_';
    make_database(base, db);
    /* libpq takes the last of a repeated keyword: dbname is replaced. */
    if (snprintf(dsn, sizeof dsn, "%s dbname=%s", base, db) >= (int)sizeof dsn) {
        fprintf(stderr, "PGSTORE_TEST_DSN is too long\n");
        exit(1);
    }
    return dsn;
}

int pgs_test_run(const pgs_test_t *tests)
{
    int failed = 0, passed = 0;
    for (const pgs_test_t *t = tests; t->name; t++) {
        int before = pgs_test_failures;
        t->fn();
        if (pgs_test_failures > before) {
            printf("not ok - %s\n", t->name);
            failed++;
        } else {
            printf("ok - %s\n", t->name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

pgs_pool_t *pgs_test_pool_open(int max_size)
{
    pgs_pool_opts_t o = {.conn = {.conninfo = pgs_test_dsn()}, .max_size = max_size};
    pgs_pool_t *pool;
    pgs_error_t err;
    if (pgs_pool_open(&o, &pool, &err) != PGS_OK) {
        fprintf(stderr, "pool: %s\n", err.message);
        exit(1);
    }
    return pool;
}

pgs_conn_t *pgs_test_conn_open(void)
{
    pgs_conn_opts_t o = {.conninfo = pgs_test_dsn()};
    pgs_conn_t *c;
    pgs_error_t err;
    if (pgs_conn_open(&o, &c, &err) != PGS_OK) {
        fprintf(stderr, "connection: %s\n", err.message);
        exit(1);
    }
    return c;
}

void pgs_test_name(char *out, size_t size, const char *prefix)
{
    static int counter;
    snprintf(out, size, "%s_%d", prefix, ++counter);
}

void pgs_test_exec(pgs_pool_t *pool, const char *sql)
{
    pgs_conn_t *c = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    if (c == NULL)
        return;
    CHECK_OK(pgs_exec_command(c, sql, &err), err);
    pgs_pool_release(pool, c);
}

int64_t pgs_test_query_int(pgs_pool_t *pool, const char *sql)
{
    pgs_conn_t *c;
    pgs_error_t err;
    pgs_rows_t *r;
    int64_t n = -1;
    if (pgs_pool_acquire(pool, -1, &c, &err) != PGS_OK)
        return -1;
    if (pgs_query(c, sql, 0, NULL, &r, &err) == PGS_OK) {
        if (pgs_rows_count(r) > 0)
            n = strtoll(pgs_rows_value(r, 0, 0, NULL), NULL, 10);
        pgs_rows_free(r);
    }
    pgs_pool_release(pool, c);
    return n;
}

double pgs_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void pgs_test_sleep(double seconds)
{
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
