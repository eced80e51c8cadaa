/* SPDX-License-Identifier: MIT
 * kv.c — the key-value store: BYTEA values (any bytes) under text keys,
 * each with an optional expiry. Expired rows are invisible to reads at
 * once and physically removed by cleanup, run on demand or by a
 * background cleaner.
 *
 * Schema init is the migration runner (migrate.c, core/sql/kv--*.sql),
 * stepped through pgs_kv_init_* so that a driver — pgs_kv_migrate in C,
 * or the Lua binding — can call a phase hook before each step and learn
 * exactly where a failure happened. It waits for locks at most
 * lock_timeout; a role without DDL rights passes when the schema is
 * already there.
 *
 * The background cleaner is one thread per store. It sleeps on a
 * condition variable (so pgs_kv_close wakes and joins it at once), and
 * for each run opens its own connection with the pool's settings, deletes
 * the expired rows, and closes it again: it never takes a slot from the
 * application's pool and an idle store holds no server connection. A
 * cleanup in flight when the store closes is cancelled (PQcancel). The
 * thread blocks every signal and never touches Lua. A child forked after
 * it started has no cleaner; closing the child's copy is safe (nginx: open
 * kv stores in init_worker, not in the master).
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "companion.h"
#include "clock.h"
#include "conn.h"
#include "thread.h"
#include "utf8.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { SQL_SET, SQL_GET, SQL_DELETE, SQL_DELETE_PREFIX, SQL_CLEAR, SQL_CLEANUP, SQL_COUNT };

/* The table is core/sql/kv--*.sql. Keep in the same order as the enum. */
static const char *const templates[SQL_COUNT] = {
    "INSERT INTO @table@ (key, value, expires_at)"
    " VALUES ($1, $2::bytea, statement_timestamp() + make_interval(secs => $3::float8))"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",

    "SELECT value FROM @table@ WHERE key = $1"
    " AND (expires_at IS NULL OR expires_at > statement_timestamp())",

    "DELETE FROM @table@ WHERE key = $1",

    "DELETE FROM @table@ WHERE key LIKE $1 ESCAPE '\\'",

    "DELETE FROM @table@",

    "DELETE FROM @table@ WHERE expires_at <= statement_timestamp()",
};

#define INDEX_SUFFIX "_expires_idx"
#define DEFAULT_LOCK_TIMEOUT 10.0

struct pgs_kv {
    pgs_store_base_t base;
    size_t max_value;
    double lock_timeout;
    char index[PGS_IDENT_MAX];       /* quoted, schema-qualified like the table */
    char index_local[PGS_IDENT_MAX]; /* quoted, for CREATE INDEX */
    char *sql[SQL_COUNT];
    pgs_schema_t schema;             /* for the migration runner */

    /* the background cleaner; everything below under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    pid_t owner;     /* the process the thread runs in (see cleaner_stop) */
    int has_thread;
    int stop;
    double interval;
    PGcancel *inflight; /* the running cleanup, for close to cancel */
    int64_t runs, removed, failures;
    char last_error[PGS_ERROR_MESSAGE_MAX];
};

const char *pgs_kv_phase_name(pgs_kv_phase_t phase)
{
    return pgs_migrate_phase_name(phase);
}

/* ---- the background cleaner -------------------------------------------------- */

static void cleaner_run(pgs_kv_t *kv)
{
    pgs_error_t err;
    pgs_conn_t *c = NULL;
    int64_t removed = 0;
    pgs_status_t st;

    if (pgs_pool_is_closed(kv->base.pool)) {
        /* The owner closed the database: nothing more to clean for. */
        pthread_mutex_lock(&kv->mu);
        kv->stop = 1;
        pthread_mutex_unlock(&kv->mu);
        return;
    }
    st = pgs_conn_open_dsn(pgs_pool_dsn(kv->base.pool), &c, &err);
    if (st == PGS_OK) {
        PGcancel *cancel = PQgetCancel(pgs_conn_pg(c));
        pthread_mutex_lock(&kv->mu);
        int stopping = kv->stop;
        if (!stopping)
            kv->inflight = cancel;
        pthread_mutex_unlock(&kv->mu);
        if (!stopping) {
            PGresult *r;
            st = pgs_exec(c, kv->sql[SQL_CLEANUP], 0, NULL, &r, &err);
            if (st == PGS_OK) {
                removed = pgs_result_affected(r);
                PQclear(r);
            }
        }
        pthread_mutex_lock(&kv->mu);
        kv->inflight = NULL;
        pthread_mutex_unlock(&kv->mu);
        PQfreeCancel(cancel);
        pgs_conn_close(c);
    }
    pthread_mutex_lock(&kv->mu);
    if (!kv->stop) {
        kv->runs++;
        kv->removed += removed;
        if (st != PGS_OK) {
            kv->failures++;
            snprintf(kv->last_error, sizeof kv->last_error, "%s", err.message);
        }
    }
    pthread_mutex_unlock(&kv->mu);
}

static void *cleaner_main(void *arg)
{
    pgs_kv_t *kv = arg;
    pthread_mutex_lock(&kv->mu);
    while (!kv->stop) {
        struct timespec deadline;
        pgs_clock_after(CLOCK_MONOTONIC, kv->interval, &deadline);
        while (!kv->stop && pthread_cond_timedwait(&kv->cv, &kv->mu, &deadline) != ETIMEDOUT)
            ;
        if (kv->stop)
            break;
        pthread_mutex_unlock(&kv->mu);
        cleaner_run(kv);
        pthread_mutex_lock(&kv->mu);
    }
    pthread_mutex_unlock(&kv->mu);
    return NULL;
}

static pgs_status_t cleaner_start(pgs_kv_t *kv, pgs_error_t *err)
{
    int rc = pgs_thread_start(&kv->thread, cleaner_main, kv);
    if (rc != 0)
        return pgs_error_set(err, PGS_ENOMEM, "could not start the kv cleaner thread: %s",
                             strerror(rc));
    kv->has_thread = 1;
    kv->owner = getpid();
    return PGS_OK;
}

/* Returns 0 in a process forked after the thread started: the store there
 * is a copy without the thread, and its mutex and condition variable still
 * record the parent's waiter (destroying them would block forever), so
 * nothing may be stopped, joined or destroyed. */
static int cleaner_stop(pgs_kv_t *kv)
{
    if (!kv->has_thread)
        return 1;
    if (getpid() != kv->owner) {
        kv->has_thread = 0;
        return 0;
    }
    pthread_mutex_lock(&kv->mu);
    kv->stop = 1;
    pthread_cond_signal(&kv->cv);
    pthread_mutex_unlock(&kv->mu);
    /* A cancel sent just before the cleanup reaches the server is lost, so
     * keep cancelling whatever is in flight until the thread has ended. */
    for (;;) {
        pthread_mutex_lock(&kv->mu);
        if (kv->inflight) {
            char buf[256];
            PQcancel(kv->inflight, buf, sizeof buf);
        }
        pthread_mutex_unlock(&kv->mu);
        struct timespec until;
        pgs_clock_after(CLOCK_REALTIME, 0.1, &until);
        if (pthread_timedjoin_np(kv->thread, NULL, &until) == 0)
            break;
    }
    kv->has_thread = 0;
    return 1;
}

void pgs_kv_cleaner_stats(pgs_kv_t *kv, pgs_kv_cleaner_stats_t *out)
{
    pthread_mutex_lock(&kv->mu);
    out->interval = kv->has_thread ? kv->interval : 0;
    out->running = kv->has_thread && !kv->stop;
    out->runs = kv->runs;
    out->removed = kv->removed;
    out->failures = kv->failures;
    snprintf(out->last_error, sizeof out->last_error, "%s", kv->last_error);
    pthread_mutex_unlock(&kv->mu);
}

/* ---- open and close ------------------------------------------------------------ */

pgs_status_t pgs_kv_open(pgs_pool_t *pool, const pgs_kv_opts_t *opts, pgs_kv_t **out,
                         pgs_error_t *err)
{
    *out = NULL;
    double interval = opts ? opts->cleanup_interval : 0;
    double lock_timeout = opts && opts->lock_timeout > 0 ? opts->lock_timeout : DEFAULT_LOCK_TIMEOUT;
    if (interval < 0 || isnan(interval))
        return pgs_error_set(err, PGS_EINVALID, "cleanup_interval must not be negative");
    if (isnan(lock_timeout))
        return pgs_error_set(err, PGS_EINVALID, "lock_timeout must be a number");

    pgs_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_store_init(&kv->base, pool, opts ? opts->table : NULL, "pgstore_kv", err);
    if (st != PGS_OK) {
        free(kv);
        return st;
    }
    pgs_thread_cond_init(&kv->cv);
    pthread_mutex_init(&kv->mu, NULL);
    kv->max_value = opts && opts->max_value_size ? opts->max_value_size : PGS_COMPANION_MAX_VALUE;
    kv->lock_timeout = lock_timeout;
    kv->interval = interval;

    /* The index sits beside the table: same schema, name + suffix. */
    const char *dot = strchr(kv->base.raw, '.');
    st = pgs_store_companion(&kv->base, INDEX_SUFFIX, kv->index, sizeof kv->index, err);
    if (st == PGS_OK)
        st = pgs_ident_quote_suffix(dot ? dot + 1 : kv->base.raw, INDEX_SUFFIX, kv->index_local,
                                    sizeof kv->index_local, err);
    if (st == PGS_OK)
        st = pgs_companion_build_sql(&kv->base, kv->sql, templates, SQL_COUNT, err);
    pgs_store_schema(&kv->base, "kv", NULL, &kv->schema);
    kv->schema.names[1] = "index";
    kv->schema.values[1] = kv->index_local;
    kv->schema.nnames = 2;
    kv->schema.indexes[0] = kv->index;
    kv->schema.nindexes = 1;
    kv->schema.lock_timeout = lock_timeout;
    /* 0.1 created kv tables under this lock: old and new processes serialize. */
    kv->schema.lock_space[0] = "pgstore.kv";
    kv->schema.lock_key[0] = kv->base.given_quoted;
    kv->schema.nlocks = 1;
    int skip = opts ? opts->skip_schema_init : 0;
    if (st == PGS_OK && !skip)
        st = pgs_kv_migrate(kv, opts ? opts->phase_hook : NULL, opts ? opts->phase_ud : NULL, err);
    else if (st == PGS_OK && skip != PGS_KV_SCHEMA_BY_CALLER)
        st = pgs_migrate_check(kv->base.pool, &kv->schema, err);
    if (st == PGS_OK && interval > 0)
        st = cleaner_start(kv, err);
    if (st != PGS_OK) {
        pgs_kv_close(kv);
        return st;
    }
    *out = kv;
    return PGS_OK;
}

void pgs_kv_close(pgs_kv_t *kv)
{
    if (!kv)
        return;
    if (cleaner_stop(kv)) {
        pthread_mutex_destroy(&kv->mu);
        pthread_cond_destroy(&kv->cv);
    }
    pgs_companion_free_sql(kv->sql, SQL_COUNT);
    pgs_store_fini(&kv->base);
    free(kv);
}

/* ---- schema init, one phase at a time: the migration runner's phases ---------------- */

pgs_status_t pgs_kv_init_start(pgs_kv_t *kv, pgs_kv_init_t **out, pgs_error_t *err)
{
    return pgs_migrate_start(kv->base.pool, &kv->schema, out, err);
}

pgs_kv_phase_t pgs_kv_init_phase(const pgs_kv_init_t *it)
{
    return pgs_migrate_phase(it);
}

pgs_status_t pgs_kv_init_step(pgs_kv_init_t *it, pgs_error_t *err)
{
    return pgs_migrate_step(it, err);
}

void pgs_kv_init_free(pgs_kv_init_t *it)
{
    pgs_migrate_free(it);
}

pgs_status_t pgs_kv_migrate(pgs_kv_t *kv, pgs_kv_hook_fn hook, void *ud, pgs_error_t *err)
{
    return pgs_migrate_run(kv->base.pool, &kv->schema, hook, ud, err);
}

/* ---- operations ------------------------------------------------------------------- */

pgs_status_t pgs_kv_set(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, const char *value,
                        size_t len, double ttl, pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("key", key, err);
    if (st == PGS_OK && !value)
        st = pgs_error_set(err, PGS_EINVALID, "value must be a string, got NULL");
    if (st == PGS_OK)
        st = pgs_companion_check_size("value", len, kv->max_value, err);
    if (st == PGS_OK && len > 0x7fffffff)
        st = pgs_error_set(err, PGS_EINVALID, "value is too long");
    /* ttl <= 0 is no expiry, but -inf is no number of seconds */
    if (st == PGS_OK && (isnan(ttl) || isinf(ttl) || ttl > PGS_TIME_MAX))
        st = pgs_error_set(err, PGS_EINVALID, "ttl must be a number of seconds up to %.0f, got %g",
                           PGS_TIME_MAX, ttl);
    if (st != PGS_OK)
        return st;
    char ttlbuf[32];
    int expires = ttl > 0;
    if (expires)
        snprintf(ttlbuf, sizeof ttlbuf, "%.17g", ttl);
    pgs_param_t p[3] = {{key, -1}, {value, (int)len}, {expires ? ttlbuf : NULL, -1}};
    return pgs_companion_exec(&kv->base, tx, kv->sql[SQL_SET], 3, p, NULL, err);
}

pgs_status_t pgs_kv_get(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, pgs_rows_t **rows,
                        const char **value, size_t *len, pgs_error_t *err)
{
    *rows = NULL;
    pgs_status_t st = pgs_companion_check_key("key", key, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {key, -1};
    PGresult *r;
    st = pgs_companion_exec(&kv->base, tx, kv->sql[SQL_GET], 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return pgs_error_set(err, PGS_ENOTFOUND, "no value for key '%.200s'", key);
    }
    /* Decoding in place is safe: the bytes trail their hex text. */
    char *v = PQgetvalue(r, 0, 0);
    long n = pgs_bytea_decode(v, (size_t)PQgetlength(r, 0, 0), v);
    if (n < 0) {
        PQclear(r);
        return pgs_error_set(err, PGS_ESQL, "the server sent a malformed bytea value");
    }
    *rows = pgs_rows_wrap(r);
    *value = v;
    *len = (size_t)n;
    return PGS_OK;
}

static pgs_status_t delete_where(pgs_kv_t *kv, pgs_conn_t *tx, int which, const char *arg,
                                 int64_t *removed, pgs_error_t *err)
{
    pgs_param_t p = {arg, -1};
    return pgs_companion_exec_count(&kv->base, tx, kv->sql[which], arg ? 1 : 0, arg ? &p : NULL,
                                    removed, err);
}

pgs_status_t pgs_kv_delete(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, int64_t *removed,
                           pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("key", key, err);
    if (st != PGS_OK)
        return st;
    return delete_where(kv, tx, SQL_DELETE, key, removed, err);
}

pgs_status_t pgs_kv_delete_prefix(pgs_kv_t *kv, pgs_conn_t *tx, const char *prefix,
                                  int64_t *removed, pgs_error_t *err)
{
    if (!prefix)
        return pgs_error_set(err, PGS_EINVALID, "prefix must be a string, got NULL");
    if (!*prefix)
        return delete_where(kv, tx, SQL_CLEAR, NULL, removed, err);
    pgs_status_t checked = pgs_utf8_check("prefix", prefix, strlen(prefix), err);
    if (checked != PGS_OK)
        return checked;
    /* Match the prefix literally: escape LIKE's wildcards and its escape
     * character, then add the one wildcard we mean. */
    size_t n = strlen(prefix);
    char *pattern = malloc(2 * n + 2);
    if (!pattern)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    char *o = pattern;
    for (const char *s = prefix; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            *o++ = '\\';
        *o++ = *s;
    }
    *o++ = '%';
    *o = '\0';
    pgs_status_t st = delete_where(kv, tx, SQL_DELETE_PREFIX, pattern, removed, err);
    free(pattern);
    return st;
}

pgs_status_t pgs_kv_cleanup(pgs_kv_t *kv, pgs_conn_t *tx, int64_t *removed, pgs_error_t *err)
{
    return delete_where(kv, tx, SQL_CLEANUP, NULL, removed, err);
}
