/* SPDX-License-Identifier: MIT
 * test_snapshots.c — the snapshot store through the C API: open with a
 * validated name, save/load with the row shape, older versions kept out,
 * invalidation, bad input as PGS_EINVALID, joining a transaction.
 */
#include "harness.h"

#include <stdlib.h>

static pgs_pool_t *pool;
static char table[64];

static void test_open_rejects_bad_names(void)
{
    pgs_snapshots_t *ss = (pgs_snapshots_t *)1;
    pgs_error_t err;
    pgs_snapshots_opts_t o = {.table = "x; drop table y"};
    CHECK(pgs_snapshots_open(pool, &o, &ss, &err) == PGS_EINVALID);
    CHECK(ss == NULL);
    CHECK(strstr(err.message, "invalid table name") != NULL);
    o.table = "a23456789012345678901234567890123456789012345678901234567890abcd";
    CHECK(pgs_snapshots_open(pool, &o, &ss, &err) == PGS_EINVALID);
}

static void test_save_load(void)
{
    pgs_snapshots_opts_t o = {.table = table};
    pgs_snapshots_t *ss;
    pgs_error_t err;
    CHECK_OK(pgs_snapshots_open(pool, &o, &ss, &err), err);

    pgs_rows_t *r = (pgs_rows_t *)1;
    CHECK(pgs_snapshots_load(ss, NULL, "s", &r, &err) == PGS_ENOTFOUND);
    CHECK(r == NULL);

    int written = -1;
    CHECK_OK(pgs_snapshots_save(ss, NULL, "s", 5, "{\"n\": 5}", 2, &written, &err), err);
    CHECK(written == 1);
    CHECK_OK(pgs_snapshots_save(ss, NULL, "s", 4, "{\"n\": 4}", 2, &written, &err), err);
    CHECK(written == 0);
    CHECK_OK(pgs_snapshots_load(ss, NULL, "s", &r, &err), err);
    CHECK(pgs_rows_count(r) == 1 && pgs_rows_columns(r) == 5);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "s");
    CHECK_STR(pgs_rows_value(r, 0, 1, NULL), "5");
    CHECK_STR(pgs_rows_value(r, 0, 2, NULL), "{\"n\": 5}");
    CHECK_STR(pgs_rows_value(r, 0, 3, NULL), "2");
    CHECK_STR(pgs_rows_name(r, 4), "time");
    pgs_rows_free(r);

    int64_t removed = -1;
    CHECK_OK(pgs_snapshots_invalidate(ss, NULL, "s", &removed, &err), err);
    CHECK(removed == 1);
    CHECK_OK(pgs_snapshots_invalidate(ss, NULL, "s", &removed, &err), err);
    CHECK(removed == 0);
    CHECK_OK(pgs_snapshots_save(ss, NULL, "a", 1, "1", 1, NULL, &err), err);
    CHECK_OK(pgs_snapshots_save(ss, NULL, "b", 1, "[]", 1, NULL, &err), err);
    CHECK_OK(pgs_snapshots_invalidate_all(ss, NULL, &removed, &err), err);
    CHECK(removed == 2);
    pgs_snapshots_close(ss);
}

static void test_bad_input(void)
{
    pgs_snapshots_opts_t o = {.table = table, .max_value_size = 16};
    pgs_snapshots_t *ss;
    pgs_error_t err;
    CHECK_OK(pgs_snapshots_open(pool, &o, &ss, &err), err);
    CHECK(pgs_snapshots_save(ss, NULL, "s", -1, "{}", 1, NULL, &err) == PGS_EINVALID);
    CHECK(pgs_snapshots_save(ss, NULL, "", 1, "{}", 1, NULL, &err) == PGS_EINVALID);
    CHECK(pgs_snapshots_save(ss, NULL, NULL, 1, "{}", 1, NULL, &err) == PGS_EINVALID);
    CHECK(pgs_snapshots_save(ss, NULL, "s", 1, "{\"long\": \"value\"}", 1, NULL, &err) ==
          PGS_EINVALID);
    CHECK(strstr(err.message, "max_value_size") != NULL);
    CHECK(pgs_snapshots_save(ss, NULL, "s", 1, "{bad", 1, NULL, &err) == PGS_EINVALID);
    CHECK_STR(err.sqlstate, "22P02");
    CHECK(pgs_snapshots_save(ss, NULL, "s", 1, "\"\xff\"", 1, NULL, &err) == PGS_EINVALID);
    /* refused before it is sent: a caller's transaction goes on */
    CHECK(strstr(err.message, "UTF-8") != NULL);
    CHECK_STR(err.sqlstate, "");
    int64_t removed;
    CHECK_OK(pgs_snapshots_invalidate_all(ss, NULL, &removed, &err), err);
    CHECK(removed == 0); /* nothing was written */
    pgs_snapshots_close(ss);
}

static void test_joins_transaction(void)
{
    pgs_snapshots_opts_t o = {.table = table};
    pgs_snapshots_t *ss;
    pgs_error_t err;
    CHECK_OK(pgs_snapshots_open(pool, &o, &ss, &err), err);
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_snapshots_save(ss, c, "tx", 1, "{}", 1, NULL, &err), err);
    pgs_rows_t *r;
    CHECK_OK(pgs_snapshots_load(ss, c, "tx", &r, &err), err);
    pgs_rows_free(r);
    CHECK_OK(pgs_tx_rollback(c, &err), err);
    pgs_pool_release(pool, c);
    CHECK(pgs_snapshots_load(ss, NULL, "tx", &r, &err) == PGS_ENOTFOUND);
    pgs_snapshots_close(ss);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"open rejects bad names", test_open_rejects_bad_names},
                                       {"save and load", test_save_load},
                                       {"bad input", test_bad_input},
                                       {"joins a transaction", test_joins_transaction},
                                       {NULL, NULL}};
    pool = pgs_test_pool_open(2);
    pgs_test_name(table, sizeof table, "c_snapshots");
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
