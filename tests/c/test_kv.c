/* SPDX-License-Identifier: MIT
 * test_kv.c — the key-value store through the C API: schema init phases
 * in order through the hook and the stepping API, a refusing hook rolls
 * back, 8 threads initialising one table, NUL-safe values, TTL, literal
 * prefixes, and the cleaner thread (cleans, stops at once on close).
 */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <unistd.h>

static pgs_pool_t *pool;

static void drop_table(const char *t)
{
    char sql[128];
    snprintf(sql, sizeof sql, "drop table if exists %s", t);
    pgs_test_exec(pool, sql);
}

typedef struct {
    char seen[256];
    pgs_kv_phase_t refuse_at;
} phases_t;

static pgs_status_t record(pgs_kv_phase_t phase, void *ud, pgs_error_t *err)
{
    phases_t *p = ud;
    if (p->seen[0])
        strcat(p->seen, ",");
    strcat(p->seen, pgs_kv_phase_name(phase));
    if (phase == p->refuse_at)
        return pgs_error_set(err, PGS_EREJECTED, "refused at %s", pgs_kv_phase_name(phase));
    return PGS_OK;
}

static void test_phases(void)
{
    char t[64];
    pgs_test_name(t, sizeof t, "c_kv");
    phases_t p = {.refuse_at = PGS_KV_PHASE_END};
    pgs_kv_opts_t o = {.table = t, .phase_hook = record, .phase_ud = &p};
    pgs_kv_t *kv;
    pgs_error_t err;
    CHECK_OK(pgs_kv_open(pool, &o, &kv, &err), err);
    CHECK_STR(p.seen, "begin_tx,set_lock_timeout,acquire_lock,lock_acquired,check_table,"
                      "create_table,check_index,commit,done");
    p.seen[0] = '\0';
    CHECK_OK(pgs_kv_migrate(kv, record, &p, &err), err);
    CHECK_STR(p.seen, "begin_tx,set_lock_timeout,acquire_lock,lock_acquired,check_table,"
                      "check_index,commit,done");
    pgs_kv_close(kv);
    drop_table(t);

    /* A hook that refuses at commit: everything before is rolled back. */
    p = (phases_t){.refuse_at = PGS_KV_COMMIT};
    kv = (pgs_kv_t *)1;
    CHECK(pgs_kv_open(pool, &o, &kv, &err) == PGS_EREJECTED);
    CHECK(kv == NULL);
    CHECK_STR(err.message, "refused at commit");
    CHECK_STR(err.phase, "commit");
    char sql[128];
    snprintf(sql, sizeof sql, "select count(*) from pg_class where relname = '%s'", t);
    CHECK(pgs_test_query_int(pool, sql) == 0);
    pgs_pool_stats_t s;
    pgs_pool_stats(pool, &s);
    CHECK(s.borrowed == 0);
}

static void test_stepping(void)
{
    char t[64];
    pgs_test_name(t, sizeof t, "c_kv");
    pgs_kv_opts_t o = {.table = t, .skip_schema_init = 1};
    pgs_kv_t *kv;
    pgs_error_t err;
    /* Skipped on a missing table: named at once. */
    CHECK(pgs_kv_open(pool, &o, &kv, &err) == PGS_ENOTFOUND);
    CHECK(strstr(err.message, t) != NULL);
    /* The caller runs the init itself. */
    o.skip_schema_init = PGS_KV_SCHEMA_BY_CALLER;
    CHECK_OK(pgs_kv_open(pool, &o, &kv, &err), err);
    pgs_kv_init_t *it;
    CHECK_OK(pgs_kv_init_start(kv, &it, &err), err);
    /* The init does not depend on kv: close it first. */
    pgs_kv_close(kv);
    CHECK(pgs_kv_init_phase(it) == PGS_KV_BEGIN_TX);
    CHECK_OK(pgs_kv_init_step(it, &err), err);
    CHECK_OK(pgs_kv_init_step(it, &err), err);
    CHECK(pgs_kv_init_phase(it) == PGS_KV_ACQUIRE_LOCK);
    pgs_pool_stats_t s;
    pgs_pool_stats(pool, &s);
    CHECK(s.borrowed == 1);
    pgs_kv_init_free(it); /* unfinished: rolled back, connection returned */
    pgs_pool_stats(pool, &s);
    CHECK(s.borrowed == 0);
    CHECK(pgs_kv_phase_name(PGS_KV_PHASE_END) == NULL);
}

static char race_table[64];
static pthread_barrier_t start;

static void *initialiser(void *arg)
{
    phases_t *p = arg;
    pgs_kv_opts_t o = {.table = race_table, .phase_hook = record, .phase_ud = p};
    pgs_kv_t *kv;
    pgs_error_t err;
    pthread_barrier_wait(&start);
    if (pgs_kv_open(pool, &o, &kv, &err) != PGS_OK) {
        snprintf(p->seen, sizeof p->seen, "failed: %.200s", err.message);
        return NULL;
    }
    pgs_kv_close(kv);
    return NULL;
}

static void test_parallel_init(void)
{
    enum { N = 8 };
    pgs_test_name(race_table, sizeof race_table, "c_kv");
    pthread_t t[N];
    phases_t p[N];
    pthread_barrier_init(&start, NULL, N);
    for (int i = 0; i < N; i++) {
        p[i] = (phases_t){.refuse_at = PGS_KV_PHASE_END};
        pthread_create(&t[i], NULL, initialiser, &p[i]);
    }
    int created = 0, done = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        created += strstr(p[i].seen, "create_table") != NULL;
        done += strstr(p[i].seen, "commit,done") != NULL;
        if (strncmp(p[i].seen, "failed", 6) == 0)
            fprintf(stderr, "%s\n", p[i].seen);
    }
    pthread_barrier_destroy(&start);
    CHECK(done == N);
    CHECK(created == 1);
    drop_table(race_table);
}

static void test_values_ttl_prefix(void)
{
    char t[64];
    pgs_test_name(t, sizeof t, "c_kv");
    pgs_kv_opts_t o = {.table = t};
    pgs_kv_t *kv;
    pgs_error_t err;
    CHECK_OK(pgs_kv_open(pool, &o, &kv, &err), err);

    const char bin[] = {'a', 0, 'b', 0, (char)0xff};
    CHECK_OK(pgs_kv_set(kv, NULL, "bin", bin, sizeof bin, 0, &err), err);
    pgs_rows_t *r;
    const char *v;
    size_t len;
    CHECK_OK(pgs_kv_get(kv, NULL, "bin", &r, &v, &len, &err), err);
    CHECK(len == sizeof bin && memcmp(v, bin, len) == 0);
    pgs_rows_free(r);
    CHECK(pgs_kv_get(kv, NULL, "none", &r, &v, &len, &err) == PGS_ENOTFOUND);
    CHECK(r == NULL);

    CHECK_OK(pgs_kv_set(kv, NULL, "short", "x", 1, 0.05, &err), err);
    pgs_test_sleep(0.1);
    CHECK(pgs_kv_get(kv, NULL, "short", &r, &v, &len, &err) == PGS_ENOTFOUND);
    int64_t n = -1;
    CHECK_OK(pgs_kv_cleanup(kv, NULL, &n, &err), err);
    CHECK(n == 1);

    const char *keys[] = {"p%1", "p%2", "pX", "p_", "pq", "p\\a", "q"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        CHECK_OK(pgs_kv_set(kv, NULL, keys[i], "v", 1, 0, &err), err);
    CHECK_OK(pgs_kv_delete_prefix(kv, NULL, "p%", &n, &err), err);
    CHECK(n == 2);
    CHECK_OK(pgs_kv_delete_prefix(kv, NULL, "p_", &n, &err), err);
    CHECK(n == 1);
    CHECK_OK(pgs_kv_delete_prefix(kv, NULL, "p\\", &n, &err), err);
    CHECK(n == 1);
    CHECK_OK(pgs_kv_delete(kv, NULL, "q", &n, &err), err);
    CHECK(n == 1);
    CHECK_OK(pgs_kv_delete_prefix(kv, NULL, "", &n, &err), err);
    CHECK(n == 3); /* bin, pX, pq */

    CHECK(pgs_kv_set(kv, NULL, "", "v", 1, 0, &err) == PGS_EINVALID);
    CHECK(pgs_kv_set(kv, NULL, "k", NULL, 0, 0, &err) == PGS_EINVALID);
    CHECK(pgs_kv_set(kv, NULL, "k", "v", 2 * 1024 * 1024, 0, &err) == PGS_EINVALID);
    pgs_kv_close(kv);
    drop_table(t);
}

static void test_cleaner(void)
{
    char t[64];
    pgs_test_name(t, sizeof t, "c_kv");
    pgs_kv_opts_t o = {.table = t, .cleanup_interval = 0.05};
    pgs_kv_t *kv;
    pgs_error_t err;
    CHECK_OK(pgs_kv_open(pool, &o, &kv, &err), err);
    CHECK_OK(pgs_kv_set(kv, NULL, "old", "v", 1, 0.01, &err), err);
    CHECK_OK(pgs_kv_set(kv, NULL, "new", "v", 1, 0, &err), err);
    char sql[128];
    snprintf(sql, sizeof sql, "select count(*) from %s", t);
    for (int i = 0; i < 100 && pgs_test_query_int(pool, sql) != 1; i++)
        pgs_test_sleep(0.02);
    CHECK(pgs_test_query_int(pool, sql) == 1);
    /* The counters follow the DELETE's commit: wait for them too. */
    pgs_kv_cleaner_stats_t s;
    pgs_kv_cleaner_stats(kv, &s);
    for (int i = 0; i < 100 && s.removed < 1; i++) {
        pgs_test_sleep(0.02);
        pgs_kv_cleaner_stats(kv, &s);
    }
    CHECK(s.running && s.runs >= 1 && s.removed == 1 && s.failures == 0);
    pgs_kv_close(kv);

    o.cleanup_interval = 300;
    CHECK_OK(pgs_kv_open(pool, &o, &kv, &err), err);
    double t0 = pgs_test_now();
    pgs_kv_close(kv);
    CHECK(pgs_test_now() - t0 < 0.2);

    o.cleanup_interval = -1;
    CHECK(pgs_kv_open(pool, &o, &kv, &err) == PGS_EINVALID);
    drop_table(t);
}

/* A child forked after the cleaner started must be able to close its
 * copy of the store: the thread lives only in the parent. */
static void test_fork_child_closes(void)
{
    char t[64];
    pgs_test_name(t, sizeof t, "c_kv");
    pgs_kv_opts_t o = {.table = t, .cleanup_interval = 300};
    pgs_kv_t *kv;
    pgs_error_t err;
    CHECK_OK(pgs_kv_open(pool, &o, &kv, &err), err);
    pid_t pid = fork();
    if (pid == 0) {
        pgs_kv_close(kv);
        _exit(0);
    }
    int status = 0, exited = 0;
    for (int i = 0; i < 150 && !exited; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            exited = 1;
        else
            pgs_test_sleep(0.02);
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    CHECK(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pgs_kv_cleaner_stats_t s;
    pgs_kv_cleaner_stats(kv, &s);
    CHECK(s.running); /* the parent's cleaner is untouched */
    pgs_kv_close(kv);
    drop_table(t);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"phases in order, refusing hook", test_phases},
                                       {"stepping the init", test_stepping},
                                       {"8 threads initialise one table", test_parallel_init},
                                       {"values, ttl, prefixes", test_values_ttl_prefix},
                                       {"cleaner thread", test_cleaner},
                                       {"a forked child closes its copy", test_fork_child_closes},
                                       {NULL, NULL}};
    pool = pgs_test_pool_open(8);
    int rc = pgs_test_run(tests);
    pgs_pool_close(pool);
    return rc;
}
