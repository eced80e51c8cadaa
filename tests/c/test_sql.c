/* SPDX-License-Identifier: MIT
 * test_sql.c — the placeholder filler and the embedded schema files (no
 * server): names go in quoted or not at all, and every file of core/sql
 * is reachable in its series and fills without a stray placeholder.
 */
#include "harness.h"
#include "sql.h"

#include <stdlib.h>

static const char *const names[] = {"table", "index", "members", "guard", "events", "heads",
                                    "idempotency", "seq", "append", "read_all", "import",
                                    "replay", "order_lock", "check_order", "idem_stream",
                                    "end", "seq_last", "tokens", "stream_key", "partition",
                                    "append_rows"};
#define NNAMES ((int)(sizeof names / sizeof names[0]))

static void test_fill(void)
{
    const char *n[] = {"table", "heads"}, *v[] = {"\"s\".\"t\"", "\"t_heads\""};
    char *out = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_sql_fill("SELECT @table@.x FROM @table@, @heads@ WHERE d @> '{}'", n, v, 2,
                          &out, &err), err);
    CHECK_STR(out, "SELECT \"s\".\"t\".x FROM \"s\".\"t\", \"t_heads\" WHERE d @> '{}'");
    free(out);
    CHECK_OK(pgs_sql_fill("no names", n, v, 0, &out, &err), err);
    CHECK_STR(out, "no names");
    free(out);
}

static void test_refused(void)
{
    const char *n[] = {"table"};
    char *out = (char *)1;
    pgs_error_t err;
    const char *v[] = {"\"t\""};
    CHECK(pgs_sql_fill("SELECT * FROM @tabel@", n, v, 1, &out, &err) == PGS_EINVALID);
    CHECK(out == NULL);
    CHECK(strstr(err.message, "unknown placeholder @tabel@") != NULL);
    CHECK(pgs_sql_fill("SELECT * FROM @table", n, v, 1, &out, &err) == PGS_EINVALID);
    CHECK(strstr(err.message, "unterminated placeholder") != NULL);
    static const char *const bad[] = {"t", "\"t", "\"a\"b\"", "\"\"", "\"a\".\"b\".\"c\"",
                                      "\"t\"; DROP TABLE x", "\"a\nb\"",
                                      "\"a$fn$b\"", "\"s\".\"x$fn$\"", "\"it's\"", NULL};
    for (int i = 0; bad[i]; i++) {
        const char *bv[] = {bad[i]};
        CHECK(pgs_sql_fill("SELECT * FROM @table@", n, bv, 1, &out, &err) == PGS_EINVALID);
        CHECK(out == NULL);
    }
}

static void test_files(void)
{
    pgs_error_t err;
    const char *values[NNAMES];
    for (int i = 0; i < NNAMES; i++)
        values[i] = "\"x\"";
    int nfiles = 0, reachable = 0;
    for (const pgs_sql_file_t *f = pgs_sql_files; f->name; f++) {
        nfiles++;
        char *out = NULL;
        pgs_status_t st = pgs_sql_fill(f->text, names, values, NNAMES, &out, &err);
        if (st != PGS_OK)
            fprintf(stderr, "%s: %s\n", f->name, err.message);
        CHECK(st == PGS_OK);
        /* no leftovers of printf templates: %% escapes, %1$s arguments */
        CHECK(out && !strstr(out, "%%") && !strstr(out, "$s"));
        free(out);
    }
    static const char *const series[] = {"events", "snapshots", "checkpoints", "exec_checkpoints",
                                         "sessions", "kv", "leases", "locks", "parked", "relay", NULL};
    for (int s = 0; series[s]; s++) {
        int latest = pgs_sql_latest(series[s]);
        CHECK(latest >= 1);
        reachable += latest;
    }
    CHECK(pgs_sql_latest("events") >= 3);
    CHECK(pgs_sql_file("events", 2) != NULL && strstr(pgs_sql_file("events", 2), "@read_all@"));
    CHECK(pgs_sql_file("nothing", 1) == NULL);
    /* No file outside a series, or past a gap in one. */
    CHECK(nfiles == reachable);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"fill", test_fill},
                                       {"refused", test_refused},
                                       {"embedded files", test_files},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
