/* SPDX-License-Identifier: MIT
 * test_conn.c — one connection against the test cluster: parameters of each
 * kind, bytea with NUL bytes, errors with SQLSTATEs, the statement cache,
 * secrets kept out of messages.
 */
#include "harness.h"

#include <stdlib.h>

static pgs_conn_t *open_conn(void)
{
    pgs_conn_opts_t o = {.conninfo = pgs_test_dsn(), .stmt_cache_size = 4};
    pgs_conn_t *c = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_conn_open(&o, &c, &err), err);
    return c;
}

static void test_params_roundtrip(void)
{
    pgs_conn_t *c = open_conn();
    pgs_error_t err;
    pgs_rows_t *r;
    pgs_param_t p[3] = {{"42", -1}, {NULL, 0}, {"h\xc3\xa9llo", -1}};
    CHECK_OK(pgs_query(c, "select $1::int8 + 1 as n, $2::text as z, $3::text as s", 3, p, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "43");
    CHECK(pgs_rows_is_null(r, 0, 1));
    CHECK_STR(pgs_rows_value(r, 0, 2, NULL), "h\xc3\xa9llo");
    pgs_rows_free(r);
    pgs_conn_close(c);
}

static void test_bytea_binary_safe(void)
{
    pgs_conn_t *c = open_conn();
    pgs_error_t err;
    pgs_rows_t *r;
    const char raw[] = {'a', 0, '\\', 'x', (char)0xff};
    pgs_param_t p = {raw, 5};
    CHECK_OK(pgs_query(c, "select $1::bytea as b, length($1::bytea) as n", 1, &p, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 1, NULL), "5");
    char out[8];
    const char *hex = pgs_rows_value(r, 0, 0, NULL);
    CHECK(pgs_bytea_decode(hex, strlen(hex), out) == 5 && memcmp(out, raw, 5) == 0);
    pgs_rows_free(r);
    /* NUL in a text parameter is refused before reaching the server. */
    CHECK(pgs_query(c, "select $1::text", 1, &p, NULL, &err) == PGS_EINVALID);
    CHECK(strstr(err.message, "NUL") != NULL);
    pgs_conn_close(c);
}

static void test_sql_errors(void)
{
    pgs_conn_t *c = open_conn();
    pgs_error_t err;
    CHECK(pgs_query(c, "selec 1", 0, NULL, NULL, &err) == PGS_ESQL);
    CHECK_STR(err.sqlstate, "42601");
    CHECK_OK(pgs_exec_command(c, "create temp table t (id int primary key)", &err), err);
    pgs_param_t p = {"1", -1};
    CHECK_OK(pgs_query(c, "insert into t values ($1)", 1, &p, NULL, &err), err);
    CHECK(pgs_query(c, "insert into t values ($1)", 1, &p, NULL, &err) == PGS_ESQL);
    CHECK_STR(err.sqlstate, "23505");
    /* The connection still answers. */
    CHECK_OK(pgs_exec_command(c, "select 1", &err), err);
    /* Wrong parameter count is caught with a clear message. */
    CHECK(pgs_query(c, "select $1::int, $2::int", 1, &p, NULL, &err) == PGS_EINVALID);
    CHECK(strstr(err.message, "takes 2 parameters") != NULL);
    pgs_conn_close(c);
}

static void test_stmt_cache_eviction_and_replan(void)
{
    pgs_conn_t *c = open_conn(); /* cache of 4 */
    pgs_error_t err;
    char sql[64];
    pgs_param_t p = {"7", -1};
    for (int i = 0; i < 10; i++) {
        snprintf(sql, sizeof sql, "select $1::int + %d", i);
        CHECK_OK(pgs_query(c, sql, 1, &p, NULL, &err), err);
    }
    pgs_rows_t *r;
    CHECK_OK(pgs_query(c, "select count(*) from pg_prepared_statements", 0, NULL, &r, &err), err);
    CHECK(atoi(pgs_rows_value(r, 0, 0, NULL)) <= 4);
    pgs_rows_free(r);
    /* A table re-created with another shape: the cached plan is replaced. */
    CHECK_OK(pgs_exec_command(c, "create temp table s (a int); insert into s values (1)", &err), err);
    CHECK_OK(pgs_query(c, "select * from s where a = $1", 1, &(pgs_param_t){"1", -1}, NULL, &err), err);
    CHECK_OK(pgs_exec_command(c, "drop table s; create temp table s (a int, b text); insert into s values (1, 'x')", &err), err);
    CHECK_OK(pgs_query(c, "select * from s where a = $1", 1, &(pgs_param_t){"1", -1}, &r, &err), err);
    CHECK(pgs_rows_columns(r) == 2);
    pgs_rows_free(r);
    /* DISCARD ALL forgets server-side statements; the cache recovers. */
    CHECK_OK(pgs_exec_command(c, "discard all", &err), err);
    CHECK_OK(pgs_query(c, "select $1::int + 9", 1, &p, NULL, &err), err);
    pgs_conn_close(c);
}

/* pooler = transaction: nothing prepared on the server, parameter types
 * still decide the wire format, errors still carry SQLSTATEs, and the
 * session settings come from SETs after connecting (no `options`). */
static void test_unnamed_statements(void)
{
    pgs_conn_opts_t o = {.conninfo = pgs_test_dsn(), .stmt_cache_size = 4,
                         .pooler = PGS_POOLER_TRANSACTION};
    pgs_conn_t *c = NULL;
    pgs_error_t err;
    pgs_rows_t *r;
    CHECK_OK(pgs_conn_open(&o, &c, &err), err);
    const char raw[] = {'a', 0, '\\', 'x', (char)0xff};
    pgs_param_t p = {raw, 5};
    char sql[64];
    for (int i = 0; i < 10; i++) { /* past the cache's size, and again */
        snprintf(sql, sizeof sql, "select length($1::bytea) + %d", i % 6);
        CHECK_OK(pgs_query(c, sql, 1, &p, &r, &err), err);
        CHECK(atoi(pgs_rows_value(r, 0, 0, NULL)) == 5 + i % 6);
        pgs_rows_free(r);
    }
    CHECK_OK(pgs_query(c, "select count(*), current_setting('TimeZone'), current_setting('DateStyle')"
                          " from pg_prepared_statements where $1::int = 1",
                       1, &(pgs_param_t){"1", -1}, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "0");
    CHECK_STR(pgs_rows_value(r, 0, 1, NULL), "UTC");
    CHECK_STR(pgs_rows_value(r, 0, 2, NULL), "ISO, MDY");
    pgs_rows_free(r);
    CHECK(pgs_query(c, "select $1::int / 0", 1, &(pgs_param_t){"1", -1}, NULL, &err) == PGS_ESQL);
    CHECK_STR(err.sqlstate, "22012");
    CHECK(pgs_query(c, "selec $1", 1, &(pgs_param_t){"1", -1}, NULL, &err) == PGS_ESQL);
    CHECK_STR(err.sqlstate, "42601");
    /* the connection is usable after a failed describe */
    CHECK_OK(pgs_query(c, "select $1::int + 1", 1, &(pgs_param_t){"1", -1}, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "2");
    pgs_rows_free(r);
    pgs_conn_close(c);
}

static void test_bad_connections(void)
{
    pgs_error_t err;
    pgs_conn_t *c = NULL;
    pgs_conn_opts_t o = {.conninfo = "host=127.0.0.1 port=1 connect_timeout=2"};
    CHECK(pgs_conn_open(&o, &c, &err) == PGS_ECONNECTION);
    CHECK(c == NULL);
    o.conninfo = "this is not a conninfo";
    CHECK(pgs_conn_open(&o, &c, &err) == PGS_EINVALID);
    /* A wrong password: the message must not echo it. */
    const char *user = getenv("PGSTORE_TEST_SECRET_USER");
    if (user) {
        char dsn[512];
        snprintf(dsn, sizeof dsn, "%s user=%s password=Wr0ng-Secret-xyz", pgs_test_dsn(), user);
        o.conninfo = dsn;
        CHECK(pgs_conn_open(&o, &c, &err) == PGS_ECONNECTION);
        CHECK(strstr(err.message, "Wr0ng-Secret-xyz") == NULL);
        CHECK(strstr(err.message, "password") != NULL);
    }
    /* An unparseable URI containing a password does not leak it either. */
    o.conninfo = "postgresql://u:Sup3rSecret@host:notaport/db";
    CHECK(pgs_conn_open(&o, &c, &err) != PGS_OK);
    CHECK(strstr(err.message, "Sup3rSecret") == NULL);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"params round-trip", test_params_roundtrip},
                                       {"bytea is binary-safe", test_bytea_binary_safe},
                                       {"sql errors carry sqlstate", test_sql_errors},
                                       {"statement cache", test_stmt_cache_eviction_and_replan},
                                       {"unnamed statements", test_unnamed_statements},
                                       {"bad connections", test_bad_connections},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
