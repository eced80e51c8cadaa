/* SPDX-License-Identifier: MIT
 * test_api_edges.c — the public C API at its edges: rows read out of range
 * or as the wrong kind, NULL where a pointer belongs, out-of-range options,
 * and opens that fail leaving *out NULL so closing is harmless.
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

static pgs_pool_t *pool;

static void test_rows_accessors(void)
{
    pgs_conn_t *c;
    pgs_error_t err;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    pgs_rows_t *r = NULL;
    CHECK_OK(pgs_query(c, "select 12::int8 as n, ' 12' as sp, '+5' as plus, "
                          "'99999999999999999999' as big, null::text as z, 'x' as \"Mixed\"",
                       0, NULL, &r, &err), err);
    CHECK(pgs_rows_count(r) == 1 && pgs_rows_columns(r) == 6 && !pgs_rows_is_command(r));
    CHECK(pgs_rows_int(r, 0, 0, -1) == 12);
    CHECK(pgs_rows_int(r, 0, 1, -1) == -1);  /* not exactly a number */
    CHECK(pgs_rows_int(r, 0, 2, -1) == -1);
    CHECK(pgs_rows_int(r, 0, 3, -1) == -1);  /* out of range */
    CHECK(pgs_rows_int(r, 0, 4, -1) == -1);  /* NULL */
    CHECK(pgs_rows_is_null(r, 0, 4) && !pgs_rows_is_null(r, 0, 0));
    CHECK(pgs_rows_kind(r, 0) == PGS_KIND_INT && pgs_rows_kind(r, 1) == PGS_KIND_TEXT);
    CHECK(pgs_rows_column(r, "n") == 0 && pgs_rows_column(r, "nope") == -1);
    CHECK(pgs_rows_column(r, "\"Mixed\"") == 5 && pgs_rows_column(r, "\"mixed\"") == -1);
    size_t len = 99;
    CHECK_STR(pgs_rows_value(r, 1, 0, &len), "");  /* row out of range */
    CHECK(len == 0);
    CHECK_STR(pgs_rows_value(r, 0, 6, NULL), "");
    CHECK_STR(pgs_rows_value(r, -1, -1, NULL), "");
    CHECK(pgs_rows_is_null(r, 0, 9) && pgs_rows_name(r, 9) == NULL);
    pgs_rows_free(r);
    /* NULL rows read as empty. */
    CHECK(pgs_rows_count(NULL) == 0 && pgs_rows_columns(NULL) == 0 && pgs_rows_column(NULL, "n") == -1);
    pgs_rows_free(NULL);
    /* A command has no row set; its count is in the tag. */
    CHECK_OK(pgs_query(c, "create temp table edge (n int)", 0, NULL, &r, &err), err);
    CHECK(pgs_rows_is_command(r) && pgs_rows_affected(r) == 0);
    pgs_rows_free(r);
    CHECK_OK(pgs_query(c, "insert into edge select generate_series(1, 3)", 0, NULL, &r, &err), err);
    CHECK(pgs_rows_is_command(r) && pgs_rows_affected(r) == 3);
    pgs_rows_free(r);
    /* Parameters announced but not given are refused, not read. */
    CHECK(pgs_query(c, "select $1::int", 1, NULL, NULL, &err) == PGS_EINVALID);
    CHECK(pgs_query(c, "select 1", -1, NULL, NULL, &err) == PGS_EINVALID);
    CHECK_OK(pgs_query(c, "select 1", 0, NULL, NULL, &err), err);
    pgs_pool_release(pool, c);
}

static void test_append_edges(void)
{
    pgs_events_t *es;
    pgs_error_t err;
    pgs_events_opts_t eo = {.table = "c_api_edges", .notify = ""};
    CHECK_OK(pgs_events_open(pool, &eo, &es, &err), err);
    CHECK_OK(pgs_events_truncate(es, &err), err); /* the same database serves both builds */
    pgs_event_t ev = {.type = "E", .type_len = 1};
    /* No result wanted: the append still happens. */
    CHECK_OK(pgs_events_append(es, NULL, "edge-1", &ev, 1, NULL, NULL, &err), err);
    int64_t v = 0;
    CHECK_OK(pgs_events_version(es, NULL, "edge-1", &v, &err), err);
    CHECK(v == 1);
    pgs_append_result_t res;
    CHECK(pgs_events_append(es, NULL, "edge-1", NULL, 1, NULL, &res, &err) == PGS_EINVALID);
    const double bad_times[] = {-1, INFINITY, -INFINITY, NAN, 1e300};
    for (size_t i = 0; i < sizeof bad_times / sizeof bad_times[0]; i++) {
        pgs_append_opts_t o = {.time = bad_times[i]};
        CHECK(pgs_events_append(es, NULL, "edge-1", &ev, 1, &o, &res, &err) == PGS_EINVALID);
    }
    pgs_append_opts_t bad_expect = {.expect = (pgs_expect_t)-1};
    CHECK(pgs_events_append(es, NULL, "edge-1", &ev, 1, &bad_expect, &res, &err) == PGS_EINVALID);
    CHECK(strstr(err.message, "4294967295") == NULL);
    pgs_append_batch_t b = {.stream = "edge-2", .events = NULL, .n = 1};
    CHECK(pgs_events_append_many(es, &b, 1, &res, &err) == PGS_EINVALID);
    b.events = &ev;
    CHECK(pgs_events_append_many(es, &b, 1, NULL, &err) == PGS_EINVALID);
    CHECK(pgs_events_append_many(es, NULL, 1, &res, &err) == PGS_EINVALID);
    CHECK_OK(pgs_events_version(es, NULL, "edge-2", &v, &err), err);
    CHECK(v == 0); /* nothing written by any refusal */
    CHECK_OK(pgs_events_version(es, NULL, "edge-1", &v, &err), err);
    CHECK(v == 1);
    pgs_events_close(es);
}

/* Numbers and text the server cannot hold are PGS_EINVALID in the core
 * itself, before anything is sent: lock timeouts and TTLs, NOTIFY payloads
 * and partition names that are not UTF-8, too many append_many batches. */
static void test_out_of_range_refused(void)
{
    pgs_error_t err;
    pgs_lock_t *lock = NULL;
    const double bad[] = {INFINITY, NAN, 1e308, PGS_SECONDS_MAX + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pgs_lock_opts_t o = {.mode = PGS_LOCK_ADVISORY, .timeout = bad[i]};
        CHECK(pgs_lock_acquire(pool, "c-edge", 6, &o, &lock, &err) == PGS_EINVALID && !lock);
        CHECK(strstr(err.message, "timeout") != NULL);
        pgs_lock_opts_t t = {.mode = PGS_LOCK_TABLE, .ttl = bad[i]};
        CHECK(pgs_lock_try(pool, "c-edge", 6, &t, &lock, &err) == PGS_EINVALID && !lock);
        CHECK(strstr(err.message, "ttl") != NULL);
    }
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK(pgs_notify(c, "c_edge", "a\xff" "b", 3, &err) == PGS_EINVALID);
    CHECK(strstr(err.message, "UTF-8") != NULL);
    CHECK(pgs_notify(c, "c_edge", "\xc0\xaf", 2, &err) == PGS_EINVALID); /* overlong '/' */
    CHECK_OK(pgs_notify(c, "c_edge", "h\xc3\xa9", 3, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK(pgs_lock_xact(c, "c-edge", 6, INFINITY, &err) == PGS_EINVALID);
    CHECK_OK(pgs_tx_rollback(c, &err), err);
    pgs_pool_release(pool, c);
    pgs_lease_t *l = NULL;
    pgs_lease_opts_t lo = {.name = "p\xff"};
    CHECK(pgs_lease_open(pool, &lo, &l, &err) == PGS_EINVALID && !l);
    lo = (pgs_lease_opts_t){.name = "p", .owner = "\xed\xa0\x80"}; /* a surrogate */
    CHECK(pgs_lease_open(pool, &lo, &l, &err) == PGS_EINVALID && !l);

    pgs_events_t *es;
    pgs_events_opts_t eo = {.table = "c_api_edges", .notify = ""};
    CHECK_OK(pgs_events_open(pool, &eo, &es, &err), err);
    /* refused as a whole, before any batch is looked at: none is blamed */
    pgs_append_batch_t *many = calloc(PGS_APPEND_BATCHES_MAX + 1, sizeof *many);
    pgs_append_result_t *res = calloc(PGS_APPEND_BATCHES_MAX + 1, sizeof *res);
    CHECK(pgs_events_append_many(es, many, PGS_APPEND_BATCHES_MAX + 1, res, &err) == PGS_EINVALID);
    CHECK(err.batch == 0);
    free(many);
    free(res);
    pgs_events_close(es);
}

static void test_failed_opens_leave_null(void)
{
    pgs_error_t err;
    pgs_pool_t *p = (pgs_pool_t *)&err; /* garbage the open must overwrite */
    pgs_pool_opts_t bad = {.conn = {.conninfo = "not a = valid dsn '"}};
    CHECK(pgs_pool_open(&bad, &p, &err) != PGS_OK && p == NULL);
    pgs_conn_t *c = (pgs_conn_t *)&err;
    pgs_conn_opts_t co = {.conninfo = "host=127.0.0.1 port=1 connect_timeout=2"};
    CHECK(pgs_conn_open(&co, &c, &err) == PGS_ECONNECTION && c == NULL);
    pgs_conn_close(c);
    /* A pool that cannot reach its server: the store's open fails cleanly. */
    pgs_pool_opts_t far = {.conn = {.conninfo = "host=127.0.0.1 port=1 connect_timeout=2"}};
    CHECK_OK(pgs_pool_open(&far, &p, &err), err);
    pgs_events_t *es = (pgs_events_t *)&err;
    CHECK(pgs_events_open(p, NULL, &es, &err) == PGS_ECONNECTION && es == NULL);
    pgs_events_close(es);
    pgs_pool_close(p);
}

/* Appends to a stream until a conflict; returns the error. */
static pgs_error_t conflict_on(pgs_pool_t *p)
{
    pgs_events_t *es = NULL;
    pgs_error_t err;
    pgs_events_opts_t eo = {.table = "c_api_edges", .notify = ""};
    CHECK_OK(pgs_events_open(p, &eo, &es, &err), err);
    pgs_event_t ev = {.type = "E", .type_len = 1};
    pgs_append_opts_t o = {.expect = PGS_EXPECT_VERSION, .version = 7};
    CHECK_OK(pgs_events_append(es, NULL, "secret-1", &ev, 1, NULL, NULL, &err), err);
    CHECK(pgs_events_append(es, NULL, "secret-1", &ev, 1, &o, NULL, &err) == PGS_ECONFLICT);
    pgs_events_close(es);
    return err;
}

static void test_secrets_and_fields(void)
{
    char dsn[1024];
    pgs_error_t err;
    /* A one-character password is masked in messages, but the numbers of
     * pgstore's own DETAIL stay fields (the test cluster trusts loopback,
     * so any password connects). */
    snprintf(dsn, sizeof dsn, "%s password=1", pgs_test_dsn());
    pgs_pool_opts_t po = {.conn = {.conninfo = dsn}, .max_size = 1};
    pgs_pool_t *p;
    CHECK_OK(pgs_pool_open(&po, &p, &err), err);
    pgs_error_t c = conflict_on(p);
    CHECK(c.has_versions && c.expected == 7 && c.actual >= 1);
    pgs_pool_close(p);
    /* A password that is the mask itself must not loop forever. */
    snprintf(dsn, sizeof dsn, "%s password=*", pgs_test_dsn());
    po.conn.conninfo = dsn;
    CHECK_OK(pgs_pool_open(&po, &p, &err), err);
    pgs_conn_t *conn;
    CHECK_OK(pgs_pool_acquire(p, -1, &conn, &err), err);
    CHECK(pgs_query(conn, "select 1 * * 2", 0, NULL, NULL, &err) == PGS_ESQL);
    /* DETAIL comes as the server sent it, lines and all. */
    CHECK(pgs_query(conn, "do $$ begin raise exception 'x' using detail = E'line1\nline2'; end $$",
                    0, NULL, NULL, &err) == PGS_ESQL);
    CHECK_STR(err.detail, "line1\nline2");
    pgs_pool_release(p, conn);
    pgs_pool_close(p);
    /* The DSN's own options reach the server intact. */
    snprintf(dsn, sizeof dsn, "%s options='-csearch_path=pg_catalog'", pgs_test_dsn());
    po.conn.conninfo = dsn;
    CHECK_OK(pgs_pool_open(&po, &p, &err), err);
    CHECK_OK(pgs_pool_acquire(p, -1, &conn, &err), err);
    pgs_rows_t *r = NULL;
    CHECK_OK(pgs_query(conn, "show search_path", 0, NULL, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "pg_catalog");
    pgs_rows_free(r);
    pgs_pool_release(p, conn);
    pgs_pool_close(p);
}

int main(void)
{
    pgs_pool_opts_t po = {.conn = {.conninfo = pgs_test_dsn()}, .max_size = 2};
    pgs_error_t err;
    if (pgs_pool_open(&po, &pool, &err) != PGS_OK) {
        fprintf(stderr, "setup: %s\n", err.message);
        return 1;
    }
    static const pgs_test_t tests[] = {{"rows accessors", test_rows_accessors},
                                       {"append edges", test_append_edges},
                                       {"out of range refused", test_out_of_range_refused},
                                       {"failed opens leave *out NULL", test_failed_opens_leave_null},
                                       {"secrets and fields", test_secrets_and_fields},
                                       {NULL, NULL}};
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
