/* SPDX-License-Identifier: MIT
 * test_lease.c — the stable hashes, and partition leases against a real
 * server: balancing between workers, fencing tokens that grow on every
 * change of owner, a guard that aborts the transaction once the token is
 * stale, a guard that holds off a takeover, release, the renewer thread.
 */
#include "harness.h"

#include <stdlib.h>

static void test_fnv_vectors(void)
{
    /* Reference values from the FNV authors' test suite. */
    CHECK(pgs_hash_fnv1a64("", 0) == 0xcbf29ce484222325ULL);
    CHECK(pgs_hash_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    CHECK(pgs_hash_fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
    CHECK(pgs_lock_key("a", 1) == (int64_t)0xaf63dc4c8601ec8cULL);
    CHECK(pgs_lock_key("a", 1) < 0); /* the high bit makes it negative */
}

static void test_jump_is_consistent(void)
{
    enum { KEYS = 20000 };
    int per[9] = {0}, moved = 0;
    char key[32];
    for (int i = 0; i < KEYS; i++) {
        int n = snprintf(key, sizeof key, "stream-%d", i);
        int32_t a = pgs_partition_for(key, (size_t)n, 8);
        int32_t b = pgs_partition_for(key, (size_t)n, 9);
        CHECK(a >= 0 && a < 8);
        CHECK(a == pgs_partition_for(key, (size_t)n, 8)); /* a function */
        per[a]++;
        if (a != b) {
            moved++;
            CHECK(b == 8); /* keys only ever move to the new partition */
        }
    }
    for (int p = 0; p < 8; p++)
        CHECK(per[p] > KEYS / 8 * 0.9 && per[p] < KEYS / 8 * 1.1);
    CHECK(moved > KEYS / 9 * 0.85 && moved < KEYS / 9 * 1.15);
    CHECK(pgs_hash_jump(123, 0) == -1);
    CHECK(pgs_hash_jump(123, 1) == 0);
    /* Published vectors of the algorithm, then pinned values of ours: these
     * must never change between releases. */
    CHECK(pgs_hash_jump(1, 10) == 6);
    CHECK(pgs_hash_jump(1000, 10) == 9);
    CHECK(pgs_hash_jump(1000, 11) == 9);
    CHECK(pgs_hash_jump(0, 1) == 0);
    CHECK(pgs_partition_for("orders-1", 8, 8) == 7);
    CHECK(pgs_partition_for("orders-2", 8, 8) == 6);
    CHECK(pgs_partition_for("customer/42", 11, 16) == 13);
}

static pgs_pool_t *pool;
static char setname[64];

static pgs_lease_t *open_lease(const char *owner, double lease, double renew)
{
    pgs_lease_opts_t o = {.name = setname, .count = 8, .lease = lease, .renew = renew,
                          .owner = owner};
    pgs_lease_t *l = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_lease_open(pool, &o, &l, &err), err);
    return l;
}

static int count_kind(const pgs_lease_change_t *c, int n, pgs_lease_change_kind_t k)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        m += c[i].kind == k;
    return m;
}

static int held(pgs_lease_t *l)
{
    int64_t t[8];
    return pgs_lease_owned(l, t);
}

static void tick(pgs_lease_t *l, pgs_lease_change_t **c, int *n)
{
    pgs_error_t err;
    CHECK_OK(pgs_lease_tick(l, c, n, &err), err);
}

static void test_balance_and_tokens(void)
{
    pgs_lease_t *a = open_lease("worker-a", 30, 10), *b = open_lease("worker-b", 30, 10);
    pgs_lease_change_t *c = NULL;
    int n = 0;
    CHECK(held(a) == 0); /* nothing before the first tick */
    tick(a, &c, &n);
    CHECK(n == 8 && count_kind(c, n, PGS_LEASE_ACQUIRED) == 8);
    free(c);
    int64_t first = pgs_lease_token(a, 5);
    CHECK(first > 0);

    tick(b, &c, &n); /* b's share is 4, but all 8 are held */
    CHECK(n == 0 && c == NULL);
    tick(a, &c, &n); /* a sees two members: keeps 0..3, releases 4..7 */
    CHECK(n == 4 && count_kind(c, n, PGS_LEASE_RELEASED) == 4);
    free(c);
    CHECK(held(a) == 4 && pgs_lease_token(a, 5) == 0 && pgs_lease_token(a, 0) > 0);
    tick(b, &c, &n);
    CHECK(n == 4 && count_kind(c, n, PGS_LEASE_ACQUIRED) == 4);
    free(c);
    CHECK(pgs_lease_token(b, 5) == first + 1); /* a new owner, a new token */
    CHECK(held(b) == 4);

    /* Three workers: 3, 3, 2. */
    pgs_lease_t *d = open_lease("worker-c", 30, 10);
    for (int round = 0; round < 3; round++) {
        tick(a, NULL, NULL);
        tick(b, NULL, NULL);
        tick(d, NULL, NULL);
    }
    CHECK(held(a) == 3 && held(b) == 3 && held(d) == 2);
    int64_t ta[8], tb[8], td[8];
    pgs_lease_owned(a, ta);
    pgs_lease_owned(b, tb);
    pgs_lease_owned(d, td);
    for (int p = 0; p < 8; p++)
        CHECK((ta[p] != 0) + (tb[p] != 0) + (td[p] != 0) == 1); /* each held exactly once */

    /* Closing releases at once: the others take over on their next tick. */
    pgs_lease_close(d);
    tick(a, NULL, NULL);
    tick(b, NULL, NULL);
    CHECK(held(a) + held(b) == 8 && held(a) == 4);
    pgs_lease_close(a);
    pgs_lease_close(b);
}

static pgs_status_t guarded_commit(pgs_lease_t *l, int32_t p, int64_t token, pgs_error_t *err)
{
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    st = pgs_tx_begin(c, PGS_READ_COMMITTED, err);
    if (st == PGS_OK)
        st = pgs_lease_guard(l, c, p, token, err);
    pgs_error_t cerr;
    if (st == PGS_OK)
        st = pgs_tx_commit(c, err);
    else /* the transaction is aborted: commit is a rollback */
        CHECK(pgs_tx_commit(c, &cerr) == PGS_ESQL);
    pgs_pool_release(pool, c);
    return st;
}

static void test_fencing(void)
{
    pgs_lease_t *a = open_lease("fence-a", 1, 0.2);
    pgs_lease_t *b = open_lease("fence-b", 1, 0.2);
    pgs_error_t err;
    tick(a, NULL, NULL);
    CHECK(held(a) == 8);
    int64_t token = pgs_lease_token(a, 3);
    CHECK_OK(guarded_commit(a, 3, 0, &err), err);
    CHECK_OK(guarded_commit(a, 3, token, &err), err);
    CHECK(guarded_commit(a, 3, token + 1, &err) == PGS_ELEASE_LOST);
    CHECK(strcmp(err.sqlstate, "PGSL1") == 0);
    CHECK(guarded_commit(b, 3, 0, &err) == PGS_ELEASE_LOST); /* b holds nothing */
    CHECK(strstr(err.message, "lease lost") != NULL);

    /* A guard outside a transaction is misuse. */
    pgs_conn_t *c;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK(pgs_lease_guard(a, c, 3, 0, &err) == PGS_EINVALID);
    CHECK(pgs_lease_guard(a, c, 8, 0, &err) == PGS_EINVALID);

    /* a stops renewing (a pause); its lease runs out and b takes over. */
    pgs_test_sleep(1.2);
    CHECK(held(a) == 0); /* locally expired too */
    pgs_lease_change_t *ch = NULL;
    int n = 0;
    tick(b, &ch, &n);
    CHECK(n == 8 && count_kind(ch, n, PGS_LEASE_ACQUIRED) == 8);
    free(ch);
    CHECK(pgs_lease_token(b, 3) == token + 1);
    CHECK(guarded_commit(a, 3, token, &err) == PGS_ELEASE_LOST);
    CHECK(strstr(err.detail, "fence-b") != NULL); /* the detail names the holder */
    tick(a, &ch, &n); /* a learns what happened */
    CHECK(n == 8 && count_kind(ch, n, PGS_LEASE_LOST) == 8);
    free(ch);

    /* Two members again: b sheds 4..7, a takes them. */
    tick(b, NULL, NULL);
    tick(a, NULL, NULL);
    CHECK(held(a) == 4 && held(b) == 4 && pgs_lease_token(b, 2) > 0);

    /* A guarded transaction still at work holds off the takeover of its
     * row (each pause and statement shorter than the lease). */
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_lease_guard(b, c, 2, 0, &err), err);
    for (int i = 0; i < 4; i++) { /* b's leases expire while it works */
        pgs_test_sleep(0.3);
        CHECK_OK(pgs_exec_command(c, "SELECT 1", &err), err);
    }
    tick(a, &ch, &n);
    CHECK(pgs_lease_token(a, 2) == 0); /* skipped: locked by b's guard */
    CHECK(held(a) == 7);
    free(ch);
    CHECK_OK(pgs_tx_commit(c, &err), err);
    tick(a, NULL, NULL);
    CHECK(held(a) == 8);
    pgs_pool_release(pool, c);

    /* A guarded transaction that pauses longer than the lease (a frozen
     * holder) loses its session, and with it the lock: no holder keeps a
     * partition past its lease by keeping a transaction open. */
    tick(b, NULL, NULL);
    tick(a, NULL, NULL);
    tick(b, NULL, NULL);
    CHECK(held(b) == 4);
    int32_t p = 0;
    while (p < 7 && pgs_lease_token(b, p) == 0)
        p++;
    CHECK_OK(pgs_pool_acquire(pool, -1, &c, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_lease_guard(b, c, p, 0, &err), err);
    pgs_test_sleep(1.3);
    tick(a, NULL, NULL);
    CHECK(pgs_lease_token(a, p) > 0 && held(a) == 8);
    CHECK(pgs_tx_commit(c, &err) == PGS_ECONNECTION);
    pgs_pool_release(pool, c);
    pgs_lease_close(a);
    pgs_lease_close(b);
}

static void test_background_renewer(void)
{
    pgs_lease_t *a = open_lease("bg-a", 1, 0.1);
    pgs_error_t err;
    CHECK_OK(pgs_lease_start(a, &err), err);
    pgs_test_sleep(1.5); /* longer than the lease: only renewal keeps it */
    pgs_lease_info_t info;
    pgs_lease_info(a, &info);
    CHECK(info.background == 1 && info.ticks >= 8 && info.failures == 0);
    CHECK(held(a) == 8);
    pgs_lease_change_t *ch = NULL;
    int n = pgs_lease_changes(a, &ch);
    CHECK(n == 8);
    free(ch);
    CHECK(pgs_lease_changes(a, &ch) == 0 && ch == NULL);
    pgs_lease_stop(a);
    pgs_lease_info(a, &info);
    CHECK(info.background == 0);
    CHECK_STR(info.owner, "bg-a");
    pgs_lease_close(a);
}

static void test_bad_options(void)
{
    pgs_lease_t *l = NULL;
    pgs_error_t err;
    pgs_lease_opts_t o = {.name = setname, .lease = 5, .renew = 5};
    CHECK(pgs_lease_open(pool, &o, &l, &err) == PGS_EINVALID);
    CHECK(strstr(err.message, "renew") != NULL);
    o = (pgs_lease_opts_t){.name = NULL};
    CHECK(pgs_lease_open(pool, &o, &l, &err) == PGS_EINVALID);
    o = (pgs_lease_opts_t){.name = setname, .table = "no;table"};
    CHECK(pgs_lease_open(pool, &o, &l, &err) == PGS_EINVALID);
    CHECK(l == NULL);
    o = (pgs_lease_opts_t){.name = setname};
    CHECK_OK(pgs_lease_open(pool, &o, &l, &err), err);
    pgs_lease_info_t info;
    pgs_lease_info(l, &info);
    CHECK(info.count == 8 && info.lease == 10 && info.renew > 3.33 && info.renew < 3.34);
    CHECK(info.instance && strlen(info.instance) == PGS_LEASE_INSTANCE_LEN);
    pgs_lease_t *twin = NULL; /* the same owner: another instance */
    CHECK_OK(pgs_lease_open(pool, &o, &twin, &err), err);
    pgs_lease_info_t twin_info;
    pgs_lease_info(twin, &twin_info);
    CHECK(strcmp(info.instance, twin_info.instance) != 0);
    pgs_lease_close(twin);
    CHECK(strchr(info.owner, ':') != NULL); /* hostname:pid */
    pgs_lease_close(l);
}

int main(void)
{
    pool = pgs_test_pool_open(4);
    pgs_test_name(setname, sizeof setname, "c_test");
    static const pgs_test_t tests[] = {
        {"FNV-1a 64 matches the reference vectors", test_fnv_vectors},
        {"partition_for is a consistent hash", test_jump_is_consistent},
        {"workers balance and tokens grow on every change of owner", test_balance_and_tokens},
        {"guards fence stale tokens and hold off takeovers", test_fencing},
        {"the background renewer keeps the leases", test_background_renewer},
        {"bad options are refused", test_bad_options},
        {NULL, NULL}};
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
