/* SPDX-License-Identifier: MIT
 * lock.c — named locks across processes. Advisory mode: a session-level
 * pg_advisory_lock on a pooled connection pinned for as long as the lock is
 * held, so it goes away with release, with the connection, or with the
 * process. Keys are strings hashed to 64 bits in C (pgs_lock_key, FNV-1a),
 * never with the server's hashtext. A wait is bounded with a
 * transaction-local lock_timeout. Transaction mode: pg_advisory_xact_lock
 * on the caller's transaction. Table mode, for servers without advisory
 * locks (CockroachDB): a row per key taken by compare-and-set
 * (INSERT … ON CONFLICT … WHERE expired), held for a TTL that the holder
 * renews, with a token that grows on every acquisition.
 *
 * Fencing (Kleppmann's fencing tokens): every hold has a token that is
 * larger than any earlier hold's of the same key — table mode's row token,
 * or for advisory locks a counter per key in <table>_tokens, raised while
 * the lock is held. pgs_lock_guard checks a token inside the caller's
 * transaction and locks the row FOR SHARE, so the next holder's acquisition
 * (an UPDATE of that row) waits for the guarded transaction: nothing
 * commits under a token once a larger one has been handed out.
 */
#include "store.h"
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "sql.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The SQL every lock fills with its tables (table_sql below). */
enum { TABLE_TAKE, TABLE_RENEW, TABLE_RELEASE, TABLE_HELD, TOKEN_NEXT, TOKEN_HOLDER,
       LOCK_SQL_COUNT };

struct pgs_lock {
    pgs_pool_t *pool;          /* referenced */
    pgs_lock_mode_t mode;
    char *name;                /* the key as given */
    int64_t key;               /* advisory */
    pgs_conn_t *conn;          /* advisory: the pinned connection */
    char table[PGS_IDENT_MAX]; /* the lock table: quoted, resolved */
    char tokens[PGS_IDENT_MAX]; /* advisory tokens: <table>_tokens, quoted */
    char raw[PGS_IDENT_MAX];   /* the lock table, resolved, unquoted */
    int migrate;               /* may create the tables */
    char *sql[LOCK_SQL_COUNT]; /* table_sql, filled */
    char owner[160];
    int64_t token;
    char ttl_ms[32];
};

/* ---- keys ------------------------------------------------------------------- */

pgs_status_t pgs_lock_key_check(const char *key, size_t len, pgs_error_t *err)
{
    if (!key || len == 0)
        return pgs_error_set(err, PGS_EINVALID, "invalid lock key: empty");
    if (len > PGS_LOCK_KEY_MAX)
        return pgs_error_set(err, PGS_EINVALID, "invalid lock key: %zu bytes, at most %d", len,
                             PGS_LOCK_KEY_MAX);
    if (memchr(key, '\0', len))
        return pgs_error_set(err, PGS_EINVALID, "invalid lock key: contains a NUL byte");
    if (!pgs_utf8_valid(key, len))
        return pgs_error_set(err, PGS_EINVALID, "invalid lock key: not valid UTF-8");
    return PGS_OK;
}

/* ---- SQL -------------------------------------------------------------------------- */

/* lock_timeout is set in a CTE the lock depends on, so it is in force before
 * the wait begins; set_config(…, true) lasts only for this statement's
 * implicit transaction. '0' means no limit. */
static const char lock_sql[] =
    "WITH cfg AS MATERIALIZED (SELECT set_config('lock_timeout', $2, true) AS lt)"
    " SELECT pg_advisory_lock($1::bigint) FROM cfg";
static const char try_sql[] = "SELECT pg_try_advisory_lock($1::bigint)";
static const char unlock_sql[] = "SELECT pg_advisory_unlock($1::bigint)";
static const char held_sql[] =
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    " AND granted AND objsubid = 1"
    " AND classid = (($1::bigint >> 32) & 4294967295)::oid"
    " AND objid = ($1::bigint & 4294967295)::oid";

static const char xact_sql[] = "SELECT pg_advisory_xact_lock($1::bigint)";
static const char xact_timed_sql[] =
    "WITH cfg AS MATERIALIZED (SELECT current_setting('lock_timeout') AS old,"
    "                                 set_config('lock_timeout', $2, true) AS lt)"
    " SELECT cfg.old, pg_advisory_xact_lock($1::bigint) FROM cfg";
static const char restore_sql[] = "SELECT set_config('lock_timeout', $1, true)";
static const char xact_try_sql[] = "SELECT pg_try_advisory_xact_lock($1::bigint)";

/* The tables are core/sql/locks--*.sql. */
static const char *const table_sql[LOCK_SQL_COUNT] = {
    /* $1 key, $2 owner, $3 ttl ms: a row is taken when absent or expired. */
    "INSERT INTO @table@ AS t (key, owner, token, expires_at)"
    " VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond')"
    " ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, token = t.token + 1,"
    "   expires_at = EXCLUDED.expires_at"
    " WHERE t.expires_at <= clock_timestamp()"
    " RETURNING t.token",

    "UPDATE @table@ SET expires_at = clock_timestamp() + $4::float8 * interval '1 millisecond'"
    " WHERE key = $1 AND owner = $2 AND token = $3::bigint AND expires_at > clock_timestamp()"
    " RETURNING 1",

    /* Expires the row rather than deleting it, so the token keeps growing. */
    "UPDATE @table@ t SET expires_at = '-infinity'"
    " FROM (SELECT expires_at AS was FROM @table@"
    "       WHERE key = $1 AND owner = $2 AND token = $3::bigint) o"
    " WHERE t.key = $1 AND t.owner = $2 AND t.token = $3::bigint"
    " RETURNING o.was > clock_timestamp()",

    "SELECT 1 FROM @table@ WHERE key = $1 AND owner = $2 AND token = $3::bigint"
    " AND expires_at > clock_timestamp()",

    /* Advisory: run by the holder with the lock held, so increments of one
     * key never race; it waits (within $2 ms, 0: no limit) for transactions
     * guarded by the previous token. */
    "WITH cfg AS MATERIALIZED (SELECT set_config('lock_timeout', $2, true) AS lt)"
    " INSERT INTO @tokens@ AS t (key, token, pid) SELECT $1::bigint, 1, pg_backend_pid() FROM cfg"
    " ON CONFLICT (key) DO UPDATE SET token = t.token + 1, pid = EXCLUDED.pid"
    " RETURNING t.token",

    /* Advisory guard: the current token, whether its holder's session still
     * holds the lock, and a share lock on the row. */
    "SELECT t.token, EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    "   AND granted AND objsubid = 1 AND pid = t.pid"
    "   AND classid = (($1::bigint >> 32) & 4294967295)::oid"
    "   AND objid = ($1::bigint & 4294967295)::oid)"
    " FROM @tokens@ t WHERE t.key = $1::bigint FOR SHARE OF t",
};

/* Table-mode guard: the row's token and whether it is unexpired. */
static const char table_guard_sql[] =
    "SELECT token, expires_at > clock_timestamp() FROM @table@ WHERE key = $1 FOR SHARE";

/* Makes a transaction that failed its guard unable to commit. */
static const char stale_sql[] =
    "DO $$BEGIN RAISE EXCEPTION USING ERRCODE = 'PGSL2',"
    " MESSAGE = 'pgstore: a lock''s fencing token is not current'; END$$";

/* ---- advisory ------------------------------------------------------------------ */

static pgs_lock_t *new_lock(pgs_pool_t *pool, const char *key, size_t len, pgs_lock_mode_t mode)
{
    pgs_lock_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->name = malloc(len + 1);
    if (!l->name) {
        free(l);
        return NULL;
    }
    memcpy(l->name, key, len);
    l->name[len] = '\0';
    l->mode = mode;
    l->key = pgs_lock_key(key, len);
    l->pool = pool;
    pgs_pool_ref(pool);
    return l;
}

static void free_lock(pgs_lock_t *l)
{
    if (l->conn)
        pgs_pool_release(l->pool, l->conn);
    pgs_pool_unref(l->pool);
    pgs_sql_free_all(l->sql, LOCK_SQL_COUNT);
    free(l->name);
    free(l);
}

static int first_is_true(const PGresult *r)
{
    return r && PQntuples(r) > 0 && PQgetvalue(r, 0, 0)[0] == 't';
}

/* With the advisory lock held: the hold's fencing token, one more than the
 * last hold's. Waits for transactions guarded by the previous token, until
 * deadline (< 0: no limit). */
static pgs_status_t token_next(pgs_lock_t *l, double deadline, pgs_error_t *err)
{
    char key[32], ms[32] = "0";
    snprintf(key, sizeof key, "%lld", (long long)l->key);
    if (deadline >= 0) {
        double left = (deadline - pgs_clock_now()) * 1000;
        snprintf(ms, sizeof ms, "%.0f", left < 1 ? 1 : left + 0.5);
    }
    pgs_param_t p[2] = {{key, -1}, {ms, -1}};
    PGresult *r = NULL;
    pgs_status_t st = pgs_exec(l->conn, l->sql[TOKEN_NEXT], 2, p, &r, err);
    if (st == PGS_OK)
        l->token = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else if (st == PGS_ETIMEOUT)
        pgs_error_set(err, PGS_ETIMEOUT,
                      "lock '%.200s': its fencing token was not raised in time (a transaction"
                      " guarded by the previous token is still open)", l->name);
    PQclear(r);
    return st;
}

/* Takes the advisory lock on a pinned connection and raises its token;
 * try_only: one attempt. *got tells whether it is held. */
static pgs_status_t advisory_take(pgs_lock_t *l, double timeout, int try_only, int *got,
                                  pgs_error_t *err)
{
    *got = 0;
    double deadline = timeout > 0 ? pgs_clock_now() + timeout : -1;
    pgs_status_t st = pgs_pool_acquire(l->pool, timeout > 0 ? timeout : -1, &l->conn, err);
    if (st != PGS_OK)
        return st;
    /* A session lock: should its unlock fail, the clean on release drops it. */
    l->conn->touched = 1;
    char key[32];
    snprintf(key, sizeof key, "%lld", (long long)l->key);
    PGresult *r = NULL;
    if (try_only || timeout == 0) {
        pgs_param_t p = {key, -1};
        st = pgs_exec(l->conn, try_sql, 1, &p, &r, err);
        if (st == PGS_OK)
            *got = first_is_true(r);
    } else {
        char ms[32] = "0";
        if (deadline >= 0) {
            double left = (deadline - pgs_clock_now()) * 1000;
            snprintf(ms, sizeof ms, "%.0f", left < 1 ? 1 : left + 0.5);
        }
        pgs_param_t p[2] = {{key, -1}, {ms, -1}};
        st = pgs_exec(l->conn, lock_sql, 2, p, &r, err);
        if (st == PGS_OK)
            *got = 1;
        else if (st == PGS_ETIMEOUT)
            pgs_error_set(err, PGS_ETIMEOUT, "lock '%.200s' not acquired within %gs", l->name,
                          timeout);
    }
    PQclear(r);
    /* A single attempt does not wait for the previous holder's guarded
     * transactions either: while one is open, the lock is not yet free. */
    if (*got && (st = token_next(l, try_only || timeout == 0 ? pgs_clock_now() : deadline,
                                 err)) != PGS_OK) {
        pgs_param_t p = {key, -1};
        (void)pgs_exec(l->conn, unlock_sql, 1, &p, NULL, NULL);
        *got = 0;
        if (st == PGS_ETIMEOUT && (try_only || timeout == 0))
            st = PGS_OK;
    }
    if (!*got) {
        pgs_pool_release(l->pool, l->conn);
        l->conn = NULL;
    }
    return st;
}

/* ---- table mode ----------------------------------------------------------------- */

/* quoted: the lock table, then its tokens table. */
static void lock_schema(const char *raw, const char *const *quoted, pgs_schema_t *s)
{
    memset(s, 0, sizeof *s);
    s->series = "locks";
    s->table = raw;
    s->nnames = 2;
    s->names[0] = "table";
    s->values[0] = quoted[0];
    s->names[1] = "tokens";
    s->values[1] = quoted[1];
    s->ntables = 2;
    s->tables[0] = quoted[0];
    s->tables[1] = quoted[1];
}

pgs_status_t pgs_lock_migrate(pgs_pool_t *pool, const char *table, pgs_error_t *err)
{
    char quoted[PGS_IDENT_MAX];
    if (!table || !*table)
        table = "pgstore_locks";
    char raw[PGS_IDENT_MAX];
    pgs_status_t st = pgs_ident_quote(table, quoted, sizeof quoted, err);
    if (st == PGS_OK)
        st = pgs_store_resolve(pool, table, raw, sizeof raw, err);
    if (st == PGS_OK)
        st = pgs_ident_quote(raw, quoted, sizeof quoted, err);
    char tokens[PGS_IDENT_MAX];
    if (st == PGS_OK)
        st = pgs_ident_quote_suffix(raw, "_tokens", tokens, sizeof tokens, err);
    if (st != PGS_OK)
        return st;
    const char *q[2] = {quoted, tokens};
    pgs_schema_t s;
    lock_schema(raw, q, &s);
    return pgs_migrate_run(pool, &s, NULL, NULL, err);
}

/* The table is missing (first use, or dropped): migrate, or say so. */
static pgs_status_t table_init(pgs_lock_t *l, pgs_error_t *err)
{
    const char *q[2] = {l->table, l->tokens};
    pgs_schema_t s;
    lock_schema(l->raw, q, &s);
    return pgs_migrate_open(l->pool, &s, l->migrate, err);
}

static void make_owner(pgs_lock_t *l)
{
    static int seq;
    char host[64] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0)
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long salt = (unsigned long)ts.tv_nsec ^ ((unsigned long)ts.tv_sec << 20) ^
                         (unsigned long)rand();
    snprintf(l->owner, sizeof l->owner, "%s:%ld:%d:%lx", host, (long)getpid(),
             __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST), salt & 0xffffffffUL);
}

/* One compare-and-set attempt. */
static pgs_status_t table_try(pgs_lock_t *l, int *got, pgs_error_t *err)
{
    *got = 0;
    const char *sql = l->sql[TABLE_TAKE];
    pgs_param_t p[3] = {{l->name, -1}, {l->owner, -1}, {l->ttl_ms, -1}};
    pgs_status_t st = PGS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        pgs_conn_t *c;
        PGresult *r = NULL;
        st = pgs_pool_acquire(l->pool, -1, &c, err);
        if (st != PGS_OK)
            break;
        st = pgs_exec(c, sql, 3, p, &r, err);
        pgs_pool_release(l->pool, c);
        if (st == PGS_OK && PQntuples(r) == 1) {
            l->token = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
            *got = 1;
        }
        PQclear(r);
        if (st == PGS_ESQL && err && strcmp(err->sqlstate, "42P01") == 0 && attempt == 0) {
            st = table_init(l, err); /* first use of the table */
            if (st == PGS_OK)
                continue;
        }
        break;
    }
    return st;
}

static pgs_status_t table_take(pgs_lock_t *l, double timeout, int try_only, int *got,
                               pgs_error_t *err)
{
    double deadline = timeout >= 0 ? pgs_clock_now() + timeout : -1;
    double pause = 0.01;
    for (;;) {
        pgs_status_t st = table_try(l, got, err);
        if (st != PGS_OK || *got || try_only)
            return st;
        double now = pgs_clock_now();
        if (deadline >= 0 && now >= deadline)
            return pgs_error_set(err, PGS_ETIMEOUT, "lock '%.200s' not acquired within %gs",
                                 l->name, timeout);
        /* Poll with growing, jittered pauses (10 ms … 250 ms). */
        double s = pause * (0.5 + (double)rand() / RAND_MAX);
        if (deadline >= 0 && now + s > deadline)
            s = deadline - now;
        pgs_clock_sleep(s);
        pause = pause * 2 > 0.25 ? 0.25 : pause * 2;
    }
}

/* ---- public --------------------------------------------------------------------- */

/* A timeout (negative: no limit) or TTL the server can hold as int
 * milliseconds: NaN, infinities and more than PGS_SECONDS_MAX are refused
 * here rather than by the server as an SQL error. */
static pgs_status_t check_seconds(const char *what, double s, int negative_ok, pgs_error_t *err)
{
    if (s != s || s > PGS_SECONDS_MAX || s < (negative_ok ? -PGS_SECONDS_MAX : 0))
        return pgs_error_set(err, PGS_EINVALID, "lock %s must be a number of seconds from 0 to %.0f, got %g",
                             what, PGS_SECONDS_MAX, s);
    return PGS_OK;
}

static pgs_status_t take(pgs_pool_t *pool, const char *key, size_t len, const pgs_lock_opts_t *opts,
                         int try_only, pgs_lock_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_status_t st = pgs_lock_key_check(key, len, err);
    if (st != PGS_OK)
        return st;
    pgs_lock_mode_t mode = opts ? opts->mode : PGS_LOCK_ADVISORY;
    if (mode != PGS_LOCK_ADVISORY && mode != PGS_LOCK_TABLE)
        return pgs_error_set(err, PGS_EINVALID, "unknown lock mode %d", (int)mode);
    if (opts && (st = check_seconds("timeout", opts->timeout, 1, err)) != PGS_OK)
        return st;
    if (opts && mode == PGS_LOCK_TABLE && (st = check_seconds("ttl", opts->ttl, 0, err)) != PGS_OK)
        return st;
    /* A session advisory lock lives on one server session; behind a
     * transaction pooler that session serves other clients between this
     * one's transactions, so the lock would be neither held nor released. */
    if (mode == PGS_LOCK_ADVISORY && pgs_pool_dsn(pool)->pooler == PGS_POOLER_TRANSACTION)
        return pgs_error_set(err, PGS_EINVALID,
                             "advisory locks are session locks, which a transaction pooler "
                             "cannot keep (pooler = \"transaction\"): use mode = \"table\"");
    pgs_lock_t *l = new_lock(pool, key, len, mode);
    if (!l)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    double timeout = opts ? opts->timeout : 0;
    int got = 0;
    const char *given = opts && opts->table ? opts->table : "pgstore_locks";
    l->migrate = !(opts && opts->skip_schema_init);
    st = pgs_ident_quote(given, l->table, sizeof l->table, err);
    if (st == PGS_OK) /* a table, not a spelling: schema-qualified from here on */
        st = pgs_store_resolve(l->pool, given, l->raw, sizeof l->raw, err);
    if (st == PGS_OK)
        st = pgs_ident_quote(l->raw, l->table, sizeof l->table, err);
    if (st == PGS_OK)
        st = pgs_ident_quote_suffix(l->raw, "_tokens", l->tokens, sizeof l->tokens, err);
    if (st == PGS_OK) {
        const char *names[] = {"table", "tokens"}, *values[] = {l->table, l->tokens};
        st = pgs_sql_fill_all(table_sql, LOCK_SQL_COUNT, names, values, 2, l->sql, err);
    }
    if (st == PGS_OK && mode == PGS_LOCK_TABLE) {
        double ttl = opts->ttl > 0 ? opts->ttl : 30;
        snprintf(l->ttl_ms, sizeof l->ttl_ms, "%.0f", ttl * 1000);
        make_owner(l);
        st = table_take(l, timeout, try_only, &got, err);
    } else if (st == PGS_OK) {
        st = advisory_take(l, timeout, try_only, &got, err);
        if (st == PGS_ESQL && err && strcmp(err->sqlstate, "42P01") == 0) {
            st = table_init(l, err); /* first use of the tokens table */
            if (st == PGS_OK)
                st = advisory_take(l, timeout, try_only, &got, err);
        }
    }
    if (st != PGS_OK || !got) {
        free_lock(l);
        if (st == PGS_OK && !try_only)
            st = pgs_error_set(err, PGS_ETIMEOUT, "lock '%.200s' is held elsewhere", key);
        return st;
    }
    *out = l;
    return PGS_OK;
}

pgs_status_t pgs_lock_acquire(pgs_pool_t *pool, const char *key, size_t len,
                              const pgs_lock_opts_t *opts, pgs_lock_t **out, pgs_error_t *err)
{
    *out = NULL;
    return take(pool, key, len, opts, 0, out, err);
}

pgs_status_t pgs_lock_try(pgs_pool_t *pool, const char *key, size_t len,
                          const pgs_lock_opts_t *opts, pgs_lock_t **out, pgs_error_t *err)
{
    *out = NULL;
    return take(pool, key, len, opts, 1, out, err);
}

pgs_status_t pgs_lock_renew(pgs_lock_t *l, pgs_error_t *err)
{
    char key[32];
    PGresult *r = NULL;
    pgs_status_t st;
    if (l->mode == PGS_LOCK_ADVISORY) {
        int held;
        st = pgs_lock_held(l, &held, err);
        if (st == PGS_OK && held)
            return PGS_OK;
        return pgs_error_set(err, PGS_ELEASE_LOST, "lock '%.200s' is no longer held%s", l->name,
                             st == PGS_OK ? "" : ": its connection was lost");
    }
    const char *sql = l->sql[TABLE_RENEW];
    snprintf(key, sizeof key, "%lld", (long long)l->token);
    pgs_param_t p[4] = {{l->name, -1}, {l->owner, -1}, {key, -1}, {l->ttl_ms, -1}};
    pgs_conn_t *c;
    st = pgs_pool_acquire(l->pool, -1, &c, err);
    if (st == PGS_OK) {
        st = pgs_exec(c, sql, 4, p, &r, err);
        pgs_pool_release(l->pool, c);
    }
    if (st == PGS_OK && PQntuples(r) == 0)
        st = pgs_error_set(err, PGS_ELEASE_LOST,
                           "lock '%.200s' is no longer held (its TTL ran out)", l->name);
    PQclear(r);
    return st;
}

pgs_status_t pgs_lock_held(pgs_lock_t *l, int *held, pgs_error_t *err)
{
    *held = 0;
    char key[32], token[32];
    PGresult *r = NULL;
    pgs_status_t st;
    if (l->mode == PGS_LOCK_ADVISORY) {
        /* The session that took it must still exist and still hold it: a
         * terminated backend or a restarted server shows only here. */
        snprintf(key, sizeof key, "%lld", (long long)l->key);
        pgs_param_t p = {key, -1};
        st = pgs_exec(l->conn, held_sql, 1, &p, &r, err);
        *held = st == PGS_OK && PQntuples(r) == 1 && atoi(PQgetvalue(r, 0, 0)) > 0;
    } else {
        snprintf(token, sizeof token, "%lld", (long long)l->token);
        pgs_param_t p[3] = {{l->name, -1}, {l->owner, -1}, {token, -1}};
        pgs_conn_t *c;
        st = pgs_pool_acquire(l->pool, -1, &c, err);
        if (st == PGS_OK) {
            st = pgs_exec(c, l->sql[TABLE_HELD], 3, p, &r, err);
            pgs_pool_release(l->pool, c);
        }
        *held = st == PGS_OK && PQntuples(r) == 1;
    }
    PQclear(r);
    return st;
}

static pgs_status_t in_transaction(pgs_conn_t *tx, pgs_error_t *err);

/* The guard of both modes: tmpl names the table, filled with quoted. */
static pgs_status_t guard(pgs_conn_t *tx, pgs_lock_mode_t mode, const char *quoted,
                          const char *name, size_t len, int64_t token, pgs_error_t *err)
{
    pgs_status_t st = in_transaction(tx, err);
    if (st != PGS_OK)
        return st;
    const char *names[] = {mode == PGS_LOCK_TABLE ? "table" : "tokens"}, *values[] = {quoted};
    char *sql = NULL;
    st = pgs_sql_fill(mode == PGS_LOCK_TABLE ? table_guard_sql : table_sql[TOKEN_HOLDER], names,
                      values, 1, &sql, err);
    if (st != PGS_OK)
        return st;
    char key[32]; /* advisory: the 64-bit key; table mode: the name itself */
    snprintf(key, sizeof key, "%lld", (long long)pgs_lock_key(name, len));
    pgs_param_t p = {mode == PGS_LOCK_TABLE ? name : key, -1};
    PGresult *r = NULL;
    st = pgs_exec(tx, sql, 1, &p, &r, err);
    free(sql);
    if (st != PGS_OK) {
        PQclear(r);
        return st;
    }
    int found = PQntuples(r) == 1;
    long long current = found ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    int live = found && PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    if (found && current == token && live)
        return PGS_OK;
    (void)pgs_exec(tx, stale_sql, 0, NULL, NULL, NULL); /* the transaction cannot commit */
    if (found && current != token)
        return pgs_error_set(err, PGS_ELEASE_LOST,
                             "lock '%.*s': fencing token %lld is not current (now %lld)",
                             (int)(len > 200 ? 200 : len), name, (long long)token, current);
    return pgs_error_set(err, PGS_ELEASE_LOST, "lock '%.*s': token %lld is no longer held (%s)",
                         (int)(len > 200 ? 200 : len), name, (long long)token,
                         mode == PGS_LOCK_TABLE ? "its TTL ran out" : "its session is gone");
}

pgs_status_t pgs_lock_guard(const pgs_lock_t *l, pgs_conn_t *tx, pgs_error_t *err)
{
    return guard(tx, l->mode, l->mode == PGS_LOCK_TABLE ? l->table : l->tokens, l->name,
                 strlen(l->name), l->token, err);
}

pgs_status_t pgs_lock_guard_token(pgs_conn_t *tx, const char *key, size_t len,
                                  const pgs_lock_opts_t *opts, int64_t token, pgs_error_t *err)
{
    pgs_lock_mode_t mode = opts ? opts->mode : PGS_LOCK_ADVISORY;
    if (mode != PGS_LOCK_ADVISORY && mode != PGS_LOCK_TABLE)
        return pgs_error_set(err, PGS_EINVALID, "unknown lock mode %d", (int)mode);
    pgs_status_t st = pgs_lock_key_check(key, len, err);
    const char *given = opts && opts->table ? opts->table : "pgstore_locks";
    char quoted[PGS_IDENT_MAX];
    if (st == PGS_OK)
        st = mode == PGS_LOCK_TABLE
                 ? pgs_ident_quote(given, quoted, sizeof quoted, err)
                 : pgs_ident_quote_suffix(given, "_tokens", quoted, sizeof quoted, err);
    if (st != PGS_OK)
        return st;
    return guard(tx, mode, quoted, key, len, token, err);
}

pgs_status_t pgs_lock_release(pgs_lock_t *l, pgs_error_t *err)
{
    if (!l)
        return PGS_OK;
    char key[32];
    PGresult *r = NULL;
    pgs_status_t st;
    int held = 0;
    if (l->mode == PGS_LOCK_ADVISORY) {
        snprintf(key, sizeof key, "%lld", (long long)l->key);
        pgs_param_t p = {key, -1};
        st = pgs_exec(l->conn, unlock_sql, 1, &p, &r, err);
        held = st == PGS_OK && first_is_true(r);
    } else {
        snprintf(key, sizeof key, "%lld", (long long)l->token);
        pgs_param_t p[3] = {{l->name, -1}, {l->owner, -1}, {key, -1}};
        pgs_conn_t *c;
        st = pgs_pool_acquire(l->pool, -1, &c, err);
        if (st == PGS_OK) {
            st = pgs_exec(c, l->sql[TABLE_RELEASE], 3, p, &r, err);
            pgs_pool_release(l->pool, c);
        }
        held = st == PGS_OK && first_is_true(r);
        if (st != PGS_OK) {
            /* Could not reach the table: the row expires by itself. */
            PQclear(r);
            free_lock(l);
            return st;
        }
    }
    PQclear(r);
    const char *why = l->mode == PGS_LOCK_ADVISORY ? "its connection was lost"
                                                   : "its TTL ran out or it was taken over";
    if (!held)
        st = pgs_error_set(err, PGS_ELEASE_LOST, "lock '%.200s' was no longer held (%s)", l->name,
                           why);
    free_lock(l);
    return held ? PGS_OK : st;
}

const char *pgs_lock_name(const pgs_lock_t *l)
{
    return l->name;
}

int64_t pgs_lock_token(const pgs_lock_t *l)
{
    return l->token;
}

pgs_lock_mode_t pgs_lock_mode(const pgs_lock_t *l)
{
    return l->mode;
}

/* ---- transaction-scoped ----------------------------------------------------------- */

static pgs_status_t in_transaction(pgs_conn_t *tx, pgs_error_t *err)
{
    if (!tx || !pgs_conn_pg(tx))
        return pgs_error_set(err, PGS_ECLOSED, "attempt to use a closed connection");
    if (PQtransactionStatus(pgs_conn_pg(tx)) != PQTRANS_INTRANS)
        return pgs_error_set(err, PGS_EINVALID, "a transaction lock needs an open transaction");
    return PGS_OK;
}

pgs_status_t pgs_lock_xact(pgs_conn_t *tx, const char *key, size_t len, double timeout,
                           pgs_error_t *err)
{
    pgs_status_t st = pgs_lock_key_check(key, len, err);
    if (st == PGS_OK)
        st = check_seconds("timeout", timeout, 1, err);
    if (st == PGS_OK)
        st = in_transaction(tx, err);
    if (st != PGS_OK)
        return st;
    char k[32];
    snprintf(k, sizeof k, "%lld", (long long)pgs_lock_key(key, len));
    if (timeout == 0) {
        int got = 0;
        st = pgs_lock_xact_try(tx, key, len, &got, err);
        if (st == PGS_OK && !got)
            st = pgs_error_set(err, PGS_ETIMEOUT, "lock '%.200s' is held elsewhere", key);
        return st;
    }
    if (timeout < 0) {
        pgs_param_t p = {k, -1};
        return pgs_exec(tx, xact_sql, 1, &p, NULL, err);
    }
    char ms[32];
    snprintf(ms, sizeof ms, "%.0f", timeout * 1000 < 1 ? 1 : timeout * 1000 + 0.5);
    pgs_param_t p[2] = {{k, -1}, {ms, -1}};
    PGresult *r = NULL;
    st = pgs_exec(tx, xact_timed_sql, 2, p, &r, err);
    if (st == PGS_ETIMEOUT)
        return pgs_error_set(err, PGS_ETIMEOUT, "lock '%.200s' not acquired within %gs", key,
                             timeout);
    if (st != PGS_OK)
        return st;
    /* Put the transaction's own lock_timeout back. */
    pgs_param_t old = {PQgetvalue(r, 0, 0), -1};
    st = pgs_exec(tx, restore_sql, 1, &old, NULL, err);
    PQclear(r);
    return st;
}

pgs_status_t pgs_lock_xact_try(pgs_conn_t *tx, const char *key, size_t len, int *acquired,
                               pgs_error_t *err)
{
    *acquired = 0;
    pgs_status_t st = pgs_lock_key_check(key, len, err);
    if (st == PGS_OK)
        st = in_transaction(tx, err);
    if (st != PGS_OK)
        return st;
    char k[32];
    snprintf(k, sizeof k, "%lld", (long long)pgs_lock_key(key, len));
    pgs_param_t p = {k, -1};
    PGresult *r = NULL;
    st = pgs_exec(tx, xact_try_sql, 1, &p, &r, err);
    if (st == PGS_OK)
        *acquired = first_is_true(r);
    PQclear(r);
    return st;
}
