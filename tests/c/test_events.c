/* SPDX-License-Identifier: MIT
 * test_events.c — the event store through the C API alone: append modes,
 * conflicts with versions, idempotent replays, reads, read_all cursors,
 * lifecycle and moving a stream.
 */
#include "harness.h"

#include <stdlib.h>

static pgs_pool_t *pool;
static pgs_events_t *es;

#define EV(t) {.type = t, .type_len = sizeof(t) - 1}

static void test_append_and_conflict(void)
{
    pgs_error_t err;
    pgs_append_result_t r;
    pgs_event_t two[] = {EV("Placed"), EV("Paid")};
    two[0].data = "{\"total\": 5}";
    two[0].data_len = strlen(two[0].data);
    pgs_append_opts_t o = {.expect = PGS_EXPECT_NO_STREAM};
    CHECK_OK(pgs_events_append(es, NULL, "c-1", two, 2, &o, &r, &err), err);
    CHECK(r.first_version == 1 && r.last_version == 2 && r.count == 2 && !r.replayed);
    CHECK(r.last_position == r.first_position + 1);
    o.expect = PGS_EXPECT_VERSION;
    o.version = 7;
    CHECK(pgs_events_append(es, NULL, "c-1", two, 1, &o, &r, &err) == PGS_ECONFLICT);
    CHECK(err.has_versions && err.expected == 7 && err.actual == 2);
    o.expect = PGS_EXPECT_EXISTS;
    CHECK_OK(pgs_events_append(es, NULL, "c-1", two, 1, &o, &r, &err), err);
    int64_t v = 0;
    CHECK_OK(pgs_events_version(es, NULL, "c-1", &v, &err), err);
    CHECK(v == 3);
    /* bad input never reaches the server */
    CHECK(pgs_events_append(es, NULL, "c-1", two, 0, &o, &r, &err) == PGS_EINVALID);
    pgs_event_t notype = {0};
    CHECK(pgs_events_append(es, NULL, "c-1", &notype, 1, NULL, &r, &err) == PGS_EINVALID);
    o.expect = PGS_EXPECT_VERSION;
    o.version = -9;
    CHECK(pgs_events_append(es, NULL, "c-1", two, 1, &o, &r, &err) == PGS_EINVALID);
    CHECK(pgs_events_append(es, NULL, "", two, 1, NULL, &r, &err) == PGS_EINVALID);
}

/* Structured parts are fields: nothing is read back out of the message. */
static void test_error_fields(void)
{
    pgs_error_t err;
    pgs_append_result_t r;
    pgs_event_t one[] = {EV("A")};
    const char *tricky = "x (expected=1 actual=2)";
    CHECK_OK(pgs_events_append(es, NULL, tricky, one, 1, NULL, &r, &err), err);
    CHECK_OK(pgs_events_append(es, NULL, tricky, one, 1, NULL, &r, &err), err);
    pgs_append_opts_t o = {.expect = PGS_EXPECT_VERSION, .version = 5};
    CHECK(pgs_events_append(es, NULL, tricky, one, 1, &o, &r, &err) == PGS_ECONFLICT);
    CHECK_STR(err.sqlstate, "PGS03");
    CHECK(err.has_versions && err.expected == 5 && err.actual == 2);
    CHECK(err.batch == 0 && err.phase == NULL);

    char lng[1001];
    memset(lng, 'n', 1000);
    lng[1000] = '\0';
    CHECK_OK(pgs_events_append(es, NULL, lng, one, 1, NULL, &r, &err), err);
    o.version = 9;
    CHECK(pgs_events_append(es, NULL, lng, one, 1, &o, &r, &err) == PGS_ECONFLICT);
    CHECK(err.has_versions && err.expected == 9 && err.actual == 1);

    /* append_many: the failing batch is a field, the message the server's. */
    pgs_append_batch_t b[3] = {
        {.stream = "m-1", .events = one, .n = 1, .opts = {.expect = PGS_EXPECT_ANY}},
        {.stream = "m-2", .events = one, .n = 1,
         .opts = {.expect = PGS_EXPECT_VERSION, .version = 3}},
        {.stream = "m-3", .events = one, .n = 1, .opts = {.expect = PGS_EXPECT_ANY}},
    };
    pgs_append_result_t rs[3];
    CHECK(pgs_events_append_many(es, b, 3, rs, &err) == PGS_ECONFLICT);
    CHECK(err.batch == 2);
    CHECK(err.has_versions && err.expected == 3 && err.actual == 0);
    CHECK(strncmp(err.message, "version conflict", 16) == 0);
    b[1].opts.expect = PGS_EXPECT_ANY;
    b[2].n = 0;
    CHECK(pgs_events_append_many(es, b, 3, rs, &err) == PGS_EINVALID);
    CHECK(err.batch == 3);
    b[2].n = 1;
    CHECK_OK(pgs_events_append_many(es, b, 3, rs, &err), err);
    CHECK(rs[2].first_version == 1);
}

static void test_idempotency(void)
{
    pgs_error_t err;
    pgs_append_result_t a, b;
    pgs_event_t e[] = {EV("A")};
    pgs_append_opts_t o = {.idempotency_key = "c-key"};
    CHECK_OK(pgs_events_append(es, NULL, "idem", e, 1, &o, &a, &err), err);
    CHECK_OK(pgs_events_append(es, NULL, "idem", e, 1, &o, &b, &err), err);
    CHECK(b.replayed && b.first_position == a.first_position);
    int64_t v;
    pgs_events_version(es, NULL, "idem", &v, &err);
    CHECK(v == 1);
}

static void test_read_and_read_all(void)
{
    pgs_error_t err;
    pgs_rows_t *res;
    pgs_read_opts_t ro = {.from = 2, .limit = 1};
    CHECK_OK(pgs_events_read(es, NULL, "c-1", &ro, &res, &err), err);
    CHECK(pgs_rows_count(res) == 1);
    CHECK_STR(pgs_rows_value(res, 0, pgs_rows_column(res, "version"), NULL), "2");
    CHECK_STR(pgs_rows_value(res, 0, pgs_rows_column(res, "type"), NULL), "Paid");
    pgs_rows_free(res);
    const char *types[] = {"Placed"};
    pgs_read_opts_t byType = {.types = types, .ntypes = 1};
    CHECK_OK(pgs_events_read(es, NULL, "c-1", &byType, &res, &err), err);
    CHECK(pgs_rows_count(res) == 2); /* versions 1 and 3 */
    pgs_rows_free(res);

    int n;
    int64_t cursor;
    pgs_read_all_opts_t ao = {.after = 0, .limit = 2};
    CHECK_OK(pgs_events_read_all(es, &ao, &res, &n, &cursor, &err), err);
    CHECK(n == 2 && cursor == 2);
    pgs_rows_free(res);
    ao.after = cursor;
    ao.limit = 100;
    CHECK_OK(pgs_events_read_all(es, &ao, &res, &n, &cursor, &err), err);
    CHECK(n == 2 && cursor == 4); /* c-1 v3 and idem v1 */
    pgs_rows_free(res);
    ao.after = -1;
    CHECK(pgs_events_read_all(es, &ao, &res, &n, &cursor, &err) == PGS_EINVALID);
}

static void test_lifecycle_and_move(void)
{
    pgs_error_t err;
    pgs_append_result_t r;
    pgs_event_t e[] = {EV("A")};
    const char *status;
    CHECK_OK(pgs_events_append(es, NULL, "life", e, 1, NULL, &r, &err), err);
    CHECK_OK(pgs_events_tombstone(es, "life", "test", &err), err);
    CHECK(pgs_events_append(es, NULL, "life", e, 1, NULL, &r, &err) == PGS_EDELETED);
    CHECK_OK(pgs_events_status(es, NULL, "life", &status, &err), err);
    CHECK_STR(status, "tombstoned");
    CHECK(pgs_events_delete(es, "nope", &err) == PGS_ENOTFOUND);

    pgs_events_opts_t co = {.table = "c_events_cold"};
    pgs_events_t *cold;
    CHECK_OK(pgs_events_open(pool, &co, &cold, &err), err);
    CHECK_OK(pgs_events_truncate(cold, &err), err);
    int64_t moved = 0;
    CHECK_OK(pgs_events_move(es, cold, "c-1", "archived", &moved, &err), err);
    CHECK(moved == 3);
    CHECK_OK(pgs_events_status(es, NULL, "c-1", &status, &err), err);
    CHECK_STR(status, "archived");
    int64_t v = 0;
    CHECK_OK(pgs_events_version(cold, NULL, "c-1", &v, &err), err);
    CHECK(v == 3);
    CHECK(pgs_events_move(es, es, "c-1", NULL, &moved, &err) == PGS_EINVALID);
    pgs_events_close(cold);
}

int main(void)
{
    pgs_events_opts_t eo = {.table = "c_events"};
    pgs_error_t err;
    pool = pgs_test_pool_open(2);
    if (pgs_events_open(pool, &eo, &es, &err) != PGS_OK) {
        fprintf(stderr, "setup: %s\n", err.message);
        return 1;
    }
    static const pgs_test_t tests[] = {{"append and conflict", test_append_and_conflict},
                                       {"idempotency", test_idempotency},
                                       {"read and read_all", test_read_and_read_all},
                                       {"lifecycle and move", test_lifecycle_and_move},
                                       {"error fields", test_error_fields},
                                       {NULL, NULL}};
    int rc = pgs_test_run(tests);
    pgs_events_close(es);
    pgs_pool_close(pool);
    return rc;
}
