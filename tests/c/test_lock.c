/* SPDX-License-Identifier: MIT
 * test_lock.c — locks between two pools (two "processes" as far as the
 * server can tell): advisory exclusion, try, bounded waits, the key the
 * server sees, loss with the connection (held, fencing tokens and the
 * guard), transaction-scoped locks, and the table mode's compare-and-set
 * with growing tokens and a TTL.
 */
#include "harness.h"

#include <stdlib.h>

static pgs_pool_t *pa, *pb;
static char prefix[64];

static const char *key(const char *name)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%s/%s", prefix, name);
    return buf;
}

static void test_key_check(void)
{
    pgs_error_t err;
    CHECK(pgs_lock_key_check("", 0, &err) == PGS_EINVALID);
    CHECK(pgs_lock_key_check("a\0b", 3, &err) == PGS_EINVALID);
    CHECK(pgs_lock_key_check("caf\xc3", 4, &err) == PGS_EINVALID);     /* truncated */
    CHECK(pgs_lock_key_check("\xc0\xaf", 2, &err) == PGS_EINVALID);     /* overlong */
    CHECK(pgs_lock_key_check("\xed\xa0\x80", 3, &err) == PGS_EINVALID); /* surrogate */
    CHECK(pgs_lock_key_check("caf\xc3\xa9 \xf0\x9f\x94\x92", 10, &err) == PGS_OK);
    char big[PGS_LOCK_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    CHECK(pgs_lock_key_check(big, PGS_LOCK_KEY_MAX, &err) == PGS_OK);
    CHECK(pgs_lock_key_check(big, sizeof big, &err) == PGS_EINVALID);
    pgs_lock_t *l = NULL;
    CHECK(pgs_lock_acquire(pa, "", 0, NULL, &l, &err) == PGS_EINVALID && l == NULL);
}

static void test_advisory_exclusion(void)
{
    const char *k = key("adv");
    size_t n = strlen(k);
    pgs_lock_opts_t forever = {.timeout = -1}, short_wait = {.timeout = 0.3};
    pgs_lock_t *a = NULL, *b = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_lock_acquire(pa, k, n, &forever, &a, &err), err);
    CHECK(a && strcmp(pgs_lock_name(a), k) == 0);
    CHECK_OK(pgs_lock_try(pb, k, n, NULL, &b, &err), err);
    CHECK(b == NULL); /* held elsewhere: no error, no lock */

    double t0 = pgs_test_now();
    CHECK(pgs_lock_acquire(pb, k, n, &short_wait, &b, &err) == PGS_ETIMEOUT);
    double waited = pgs_test_now() - t0;
    CHECK(waited >= 0.28 && waited < 2);
    CHECK(strstr(err.message, "not acquired within") != NULL);

    /* The server sees the documented key: fnv1a64 as a signed bigint. */
    pgs_conn_t *c;
    pgs_rows_t *r = NULL;
    CHECK_OK(pgs_pool_acquire(pb, -1, &c, &err), err);
    char kk[32];
    snprintf(kk, sizeof kk, "%lld", (long long)pgs_lock_key(k, n));
    pgs_param_t p = {kk, -1};
    CHECK_OK(pgs_query(c,
                      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                      " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1::bigint",
                      1, &p, &r, &err),
             err);
    CHECK(r && strcmp(pgs_rows_value(r, 0, 0, NULL), "1") == 0);
    pgs_rows_free(r);
    pgs_pool_release(pb, c);

    CHECK_OK(pgs_lock_renew(a, &err), err);
    CHECK_OK(pgs_lock_release(a, &err), err);
    CHECK_OK(pgs_lock_try(pb, k, n, NULL, &b, &err), err);
    CHECK(b != NULL);
    CHECK_OK(pgs_lock_release(b, &err), err);
    pgs_pool_stats_t s;
    pgs_pool_stats(pa, &s);
    CHECK(s.borrowed == 0); /* the pinned connection went back */
}

static void test_lost_with_connection(void)
{
    const char *k = key("lost");
    size_t n = strlen(k);
    pgs_lock_t *a = NULL, *b = NULL;
    pgs_error_t err;
    pgs_lock_opts_t o = {.timeout = 1};
    CHECK_OK(pgs_lock_acquire(pa, k, n, &o, &a, &err), err);
    /* Kill the holder's session from the other pool. */
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pb, -1, &c, &err), err);
    char kk[32];
    snprintf(kk, sizeof kk, "%lld", (long long)pgs_lock_key(k, n));
    pgs_param_t p = {kk, -1};
    CHECK_OK(pgs_query(c,
                      "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                      " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $1::bigint",
                      1, &p, NULL, &err),
             err);
    pgs_pool_release(pb, c);
    /* The server freed it with the session: b gets it within a moment. */
    for (int i = 0; i < 100 && !b; i++) {
        CHECK_OK(pgs_lock_try(pb, k, n, NULL, &b, &err), err);
        if (!b)
            pgs_test_sleep(0.02);
    }
    CHECK(b != NULL);
    int held = 1;
    (void)pgs_lock_held(a, &held, &err); /* its session is gone: asked, or failed to ask */
    CHECK(held == 0);
    CHECK_OK(pgs_lock_held(b, &held, &err), err);
    CHECK(held == 1);
    /* Fencing: b's token is larger, and a's is refused inside a transaction. */
    CHECK(pgs_lock_token(b) > pgs_lock_token(a));
    CHECK_OK(pgs_pool_acquire(pb, -1, &c, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK(pgs_lock_guard(a, c, &err) == PGS_ELEASE_LOST);
    CHECK(strstr(err.message, "is not current") != NULL);
    CHECK(pgs_tx_commit(c, &err) != PGS_OK); /* the failed guard left it unable to commit */
    (void)pgs_tx_rollback(c, &err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_lock_guard(b, c, &err), err);
    CHECK_OK(pgs_lock_guard_token(c, k, n, NULL, pgs_lock_token(b), &err), err);
    CHECK_OK(pgs_tx_commit(c, &err), err);
    CHECK(pgs_lock_guard(b, c, &err) == PGS_EINVALID); /* outside a transaction */
    pgs_pool_release(pb, c);
    CHECK(pgs_lock_renew(a, &err) == PGS_ELEASE_LOST);
    CHECK(pgs_lock_release(a, &err) == PGS_ELEASE_LOST);
    CHECK(strstr(err.message, "no longer held") != NULL);
    CHECK_OK(pgs_lock_release(b, &err), err);
}

static void test_transaction_locks(void)
{
    const char *k = key("xact");
    size_t n = strlen(k);
    pgs_conn_t *c1, *c2;
    pgs_error_t err;
    pgs_rows_t *r = NULL;
    CHECK_OK(pgs_pool_acquire(pa, -1, &c1, &err), err);
    CHECK_OK(pgs_pool_acquire(pb, -1, &c2, &err), err);
    CHECK(pgs_lock_xact(c1, k, n, -1, &err) == PGS_EINVALID); /* no transaction */
    CHECK_OK(pgs_tx_begin(c1, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_exec_command(c1, "SET LOCAL lock_timeout = '7s'", &err), err);
    CHECK_OK(pgs_lock_xact(c1, k, n, 2, &err), err);
    CHECK_OK(pgs_query(c1, "SELECT current_setting('lock_timeout')", 0, NULL, &r, &err), err);
    CHECK_STR(pgs_rows_value(r, 0, 0, NULL), "7s"); /* the transaction's own setting is back */
    pgs_rows_free(r);

    int got = 1;
    CHECK_OK(pgs_tx_begin(c2, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_lock_xact_try(c2, k, n, &got, &err), err);
    CHECK(got == 0);
    double t0 = pgs_test_now();
    CHECK(pgs_lock_xact(c2, k, n, 0.2, &err) == PGS_ETIMEOUT);
    CHECK(pgs_test_now() - t0 < 2);
    CHECK_OK(pgs_tx_rollback(c2, &err), err); /* a timeout aborts the transaction */

    CHECK_OK(pgs_tx_commit(c1, &err), err); /* commit releases it */
    CHECK_OK(pgs_tx_begin(c2, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_lock_xact_try(c2, k, n, &got, &err), err);
    CHECK(got == 1);
    CHECK_OK(pgs_tx_rollback(c2, &err), err);
    pgs_pool_release(pa, c1);
    pgs_pool_release(pb, c2);
}

static void test_table_mode(void)
{
    const char *k = key("table");
    size_t n = strlen(k);
    pgs_lock_opts_t o = {.mode = PGS_LOCK_TABLE, .timeout = -1, .table = "pgstore_c_locks",
                         .ttl = 0.5};
    pgs_lock_t *a = NULL, *b = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_lock_acquire(pa, k, n, &o, &a, &err), err);
    int64_t t1 = a ? pgs_lock_token(a) : 0;
    CHECK(t1 >= 1);
    CHECK_OK(pgs_lock_try(pb, k, n, &o, &b, &err), err);
    CHECK(b == NULL);
    CHECK_OK(pgs_lock_renew(a, &err), err);
    CHECK_OK(pgs_lock_release(a, &err), err);
    CHECK_OK(pgs_lock_try(pb, k, n, &o, &b, &err), err);
    CHECK(b && pgs_lock_token(b) == t1 + 1); /* every acquisition a new token */
    CHECK_OK(pgs_lock_release(b, &err), err);

    /* The holder stops renewing: after the TTL anyone may take it. */
    CHECK_OK(pgs_lock_acquire(pa, k, n, &o, &a, &err), err);
    pgs_lock_opts_t wait = o;
    wait.timeout = 0.1;
    CHECK(pgs_lock_acquire(pb, k, n, &wait, &b, &err) == PGS_ETIMEOUT);
    wait.timeout = 3;
    double t0 = pgs_test_now();
    CHECK_OK(pgs_lock_acquire(pb, k, n, &wait, &b, &err), err);
    CHECK(pgs_test_now() - t0 < 1.5);
    CHECK(pgs_lock_renew(a, &err) == PGS_ELEASE_LOST);
    CHECK(pgs_lock_release(a, &err) == PGS_ELEASE_LOST);
    CHECK_OK(pgs_lock_release(b, &err), err);
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pa, -1, &c, &err), err);
    CHECK_OK(pgs_exec_command(c, "DROP TABLE pgstore_c_locks", &err), err);
    pgs_pool_release(pa, c);
}

int main(void)
{
    pa = pgs_test_pool_open(2);
    pb = pgs_test_pool_open(2);
    pgs_test_name(prefix, sizeof prefix, "c_test");
    static const pgs_test_t tests[] = {
        {"keys are checked", test_key_check},
        {"advisory locks exclude, try and time out", test_advisory_exclusion},
        {"a lock is lost with its connection", test_lost_with_connection},
        {"transaction-scoped locks", test_transaction_locks},
        {"table mode: compare-and-set, tokens and TTL", test_table_mode},
        {NULL, NULL}};
    int rc = pgs_test_run(tests);
    pgs_pool_close(pa);
    pgs_pool_close(pb);
    return rc;
}
