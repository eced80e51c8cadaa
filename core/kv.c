/* SPDX-License-Identifier: MIT
 * kv.c — the key-value store: BYTEA values (any bytes) under text keys,
 * each with an optional expiry. Expired rows are invisible to reads at
 * once and physically removed by cleanup, run on demand or by a
 * background cleaner.
 *
 * Schema init is a small state machine (pgs_kv_init_*) so that a driver
 * — pgs_kv_migrate in C, or the Lua binding — can call a phase hook
 * before each step and learn exactly where a failure happened. All steps
 * run in one transaction under pg_advisory_xact_lock with a lock_timeout;
 * the table and the expiry index are created only when missing, so any
 * number of processes may initialise the same table at once, and a role
 * without DDL rights passes when the schema is already there.
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
#include "conn.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    SQL_CREATE_TABLE, SQL_CREATE_INDEX, SQL_SET, SQL_GET, SQL_DELETE, SQL_DELETE_PREFIX,
    SQL_CLEAR, SQL_CLEANUP, SQL_COUNT
};

/* %1$s is the table, %2$s the index (unqualified: it lives in the
 * table's schema). Keys collate "C" so that a prefix LIKE can use the
 * primary key's index whatever the database's collation. Keep in the same
 * order as the enum above. */
static const char *const templates[SQL_COUNT] = {
    "CREATE TABLE IF NOT EXISTS %1$s ("
    " key text COLLATE \"C\" PRIMARY KEY,"
    " value bytea NOT NULL,"
    " expires_at timestamptz)",

    "CREATE INDEX IF NOT EXISTS %2$s ON %1$s (expires_at) WHERE expires_at IS NOT NULL",

    "INSERT INTO %1$s (key, value, expires_at)"
    " VALUES ($1, $2::bytea, statement_timestamp() + make_interval(secs => $3::float8))"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",

    "SELECT value FROM %1$s WHERE key = $1"
    " AND (expires_at IS NULL OR expires_at > statement_timestamp())",

    "DELETE FROM %1$s WHERE key = $1",

    "DELETE FROM %1$s WHERE key LIKE $1 ESCAPE '\\'",

    "DELETE FROM %1$s",

    "DELETE FROM %1$s WHERE expires_at <= statement_timestamp()",
};

/* Keep in the same order as enum pgs_kv_phase in pgstore.h. */
static const char *const phase_names[PGS_KV_PHASE_END] = {
    "begin_tx",    "set_lock_timeout", "acquire_lock", "lock_acquired", "check_table",
    "create_table", "check_index",     "create_index", "commit",        "done",
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
    if ((int)phase < 0 || phase >= PGS_KV_PHASE_END)
        return NULL;
    return phase_names[phase];
}

/* ---- the background cleaner -------------------------------------------------- */

static void deadline_after(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (!(seconds <= 1e9))
        seconds = 1e9;
    long long ns = ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

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
        deadline_after(&deadline, kv->interval);
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
    /* Signals belong to the host's threads (nginx's master/worker control,
     * the REPL's ^C): the cleaner inherits a full mask. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&kv->thread, NULL, cleaner_main, kv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
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
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&kv->cv, &ca);
    pthread_condattr_destroy(&ca);
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
    if (st == PGS_OK &&
        pgs_companion_build_sql(kv->sql, templates, SQL_COUNT, kv->base.table, kv->index_local) != 0)
        st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    if (st == PGS_OK && !(opts && opts->skip_schema_init))
        st = pgs_kv_migrate(kv, opts ? opts->phase_hook : NULL, opts ? opts->phase_ud : NULL, err);
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

/* ---- schema init, one phase at a time ---------------------------------------------- */

struct pgs_kv_init {
    pgs_pool_t *pool; /* referenced */
    pgs_conn_t *conn; /* borrowed from begin_tx until commit or failure */
    pgs_kv_phase_t phase;
    char lock_timeout[32];
    char table[PGS_IDENT_MAX];
    char index[PGS_IDENT_MAX];
    char *create_table, *create_index;
};

static const char set_lock_timeout_sql[] = "SELECT set_config('lock_timeout', $1, true)";
static const char lock_sql[] = "SELECT pg_advisory_xact_lock(hashtext('pgstore.kv'), hashtext($1))";
static const char exists_sql[] = "SELECT to_regclass($1) IS NOT NULL";

pgs_status_t pgs_kv_init_start(pgs_kv_t *kv, pgs_kv_init_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_kv_init_t *it = calloc(1, sizeof *it);
    if (!it)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    it->create_table = strdup(kv->sql[SQL_CREATE_TABLE]);
    it->create_index = strdup(kv->sql[SQL_CREATE_INDEX]);
    if (!it->create_table || !it->create_index) {
        pgs_kv_init_free(it);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    /* The server takes at most INT_MAX milliseconds (24 days). */
    double ms = kv->lock_timeout * 1000 + 0.999;
    snprintf(it->lock_timeout, sizeof it->lock_timeout, "%lldms",
             ms > 2147483647.0 ? 2147483647LL : (long long)ms);
    memcpy(it->table, kv->base.table, sizeof it->table);
    memcpy(it->index, kv->index, sizeof it->index);
    pgs_pool_ref(kv->base.pool);
    it->pool = kv->base.pool;
    it->phase = PGS_KV_BEGIN_TX;
    *out = it;
    return PGS_OK;
}

pgs_kv_phase_t pgs_kv_init_phase(const pgs_kv_init_t *it)
{
    return it->phase;
}

static pgs_status_t relation_exists(pgs_kv_init_t *it, const char *name, int *exists,
                                    pgs_error_t *err)
{
    pgs_param_t p = {name, -1};
    PGresult *r;
    pgs_status_t st = pgs_exec(it->conn, exists_sql, 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    *exists = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return PGS_OK;
}

static pgs_status_t run_phase(pgs_kv_init_t *it, pgs_kv_phase_t *next, pgs_error_t *err)
{
    pgs_status_t st = PGS_OK;
    int exists = 0;
    pgs_param_t p;
    switch (it->phase) {
    case PGS_KV_BEGIN_TX:
        st = pgs_pool_acquire(it->pool, -1, &it->conn, err);
        if (st == PGS_OK)
            st = pgs_tx_begin(it->conn, PGS_READ_COMMITTED, err);
        *next = PGS_KV_SET_LOCK_TIMEOUT;
        break;
    case PGS_KV_SET_LOCK_TIMEOUT:
        p = (pgs_param_t){it->lock_timeout, -1};
        st = pgs_exec(it->conn, set_lock_timeout_sql, 1, &p, NULL, err);
        *next = PGS_KV_ACQUIRE_LOCK;
        break;
    case PGS_KV_ACQUIRE_LOCK:
        p = (pgs_param_t){it->table, -1};
        st = pgs_exec(it->conn, lock_sql, 1, &p, NULL, err);
        *next = PGS_KV_LOCK_ACQUIRED;
        break;
    case PGS_KV_LOCK_ACQUIRED:
        *next = PGS_KV_CHECK_TABLE;
        break;
    case PGS_KV_CHECK_TABLE:
        st = relation_exists(it, it->table, &exists, err);
        *next = exists ? PGS_KV_CHECK_INDEX : PGS_KV_CREATE_TABLE;
        break;
    case PGS_KV_CREATE_TABLE:
        st = pgs_exec_command(it->conn, it->create_table, err);
        *next = PGS_KV_CHECK_INDEX;
        break;
    case PGS_KV_CHECK_INDEX:
        st = relation_exists(it, it->index, &exists, err);
        *next = exists ? PGS_KV_COMMIT : PGS_KV_CREATE_INDEX;
        break;
    case PGS_KV_CREATE_INDEX:
        st = pgs_exec_command(it->conn, it->create_index, err);
        *next = PGS_KV_COMMIT;
        break;
    case PGS_KV_COMMIT:
        st = pgs_tx_commit(it->conn, err);
        pgs_pool_release(it->pool, it->conn);
        it->conn = NULL;
        *next = PGS_KV_DONE;
        break;
    case PGS_KV_DONE:
        *next = PGS_KV_PHASE_END;
        break;
    default:
        return pgs_error_set(err, PGS_EINVALID, "kv schema init has already finished");
    }
    return st;
}

pgs_status_t pgs_kv_init_step(pgs_kv_init_t *it, pgs_error_t *err)
{
    pgs_kv_phase_t next = PGS_KV_PHASE_END;
    pgs_status_t st = run_phase(it, &next, err);
    if (st == PGS_OK) {
        it->phase = next;
        return PGS_OK;
    }
    if (err && it->phase < PGS_KV_PHASE_END)
        err->phase = phase_names[it->phase];
    if (it->conn) {
        pgs_pool_release(it->pool, it->conn); /* rolls the transaction back */
        it->conn = NULL;
    }
    it->phase = PGS_KV_PHASE_END;
    return st;
}

void pgs_kv_init_free(pgs_kv_init_t *it)
{
    if (!it)
        return;
    if (it->conn)
        pgs_pool_release(it->pool, it->conn);
    if (it->pool)
        pgs_pool_unref(it->pool);
    free(it->create_table);
    free(it->create_index);
    free(it);
}

pgs_status_t pgs_kv_migrate(pgs_kv_t *kv, pgs_kv_hook_fn hook, void *ud, pgs_error_t *err)
{
    pgs_kv_init_t *it;
    pgs_status_t st = pgs_kv_init_start(kv, &it, err);
    while (st == PGS_OK && it->phase != PGS_KV_PHASE_END) {
        if (hook) {
            pgs_error_clear(err);
            if ((st = hook(it->phase, ud, err)) != PGS_OK) {
                if (err && !err->message[0])
                    pgs_error_set(err, st, "kv schema init stopped by the phase hook at %s",
                                  phase_names[it->phase]);
                if (err)
                    err->phase = phase_names[it->phase];
                break;
            }
        }
        st = pgs_kv_init_step(it, err);
    }
    pgs_kv_init_free(it);
    return st;
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
    if (st != PGS_OK)
        return st;
    char ttlbuf[32];
    int expires = ttl > 0 && !isnan(ttl);
    if (expires)
        snprintf(ttlbuf, sizeof ttlbuf, "%.17g", ttl);
    pgs_param_t p[3] = {{key, -1}, {value, (int)len}, {expires ? ttlbuf : NULL, -1}};
    return pgs_companion_exec(&kv->base, tx, kv->sql[SQL_SET], 3, p, NULL, err);
}

pgs_status_t pgs_kv_get(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, PGresult **res,
                        const char **value, size_t *len, pgs_error_t *err)
{
    *res = NULL;
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
    *res = r;
    *value = v;
    *len = (size_t)n;
    return PGS_OK;
}

static pgs_status_t delete_where(pgs_kv_t *kv, pgs_conn_t *tx, int which, const char *arg,
                                 int64_t *removed, pgs_error_t *err)
{
    pgs_param_t p = {arg, -1};
    PGresult *r;
    pgs_status_t st = pgs_companion_exec(&kv->base, tx, kv->sql[which], arg ? 1 : 0,
                                         arg ? &p : NULL, &r, err);
    if (st != PGS_OK)
        return st;
    if (removed)
        *removed = pgs_result_affected(r);
    PQclear(r);
    return PGS_OK;
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
