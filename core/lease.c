/* SPDX-License-Identifier: MIT
 * lease.c — partition leases: N partitions of a named set shared by
 * competing workers through one table, with fencing tokens.
 *
 * Design. A row per partition (name, partition, owner, instance, token,
 * expires_at) and a row per live holder in <table>_members. A holder is an
 * instance: a random id drawn when the handle opens, beside the readable
 * owner ("hostname:pid" by default), so two processes given one owner
 * string — two containers, each pid 1 — are two members with two shares,
 * and neither passes the other's guard. One tick is ONE statement
 * (data-modifying CTEs, so one round trip and one transaction): it renews
 * the holder's membership, counts live members W, derives its quota —
 * ⌊P/W⌋, plus one for the first P mod W members in byte order of (owner,
 * instance) — keeps (renews) its lowest partitions up to the quota,
 * releases the rest, and claims free or expired partitions up to the quota
 * with FOR UPDATE SKIP LOCKED. Every claim bumps the partition's token, so
 * a token names one tenure; releasing keeps it. A claim of an expired
 * lease reports whose it was (a takeover). All times are the server's
 * clock; expires_at = now + lease.
 *
 * Fencing. <table>_guard(name, partition, owner, instance, token, bound)
 * locks the lease row FOR SHARE inside the caller's transaction and raises
 * SQLSTATE PGSL1 unless that instance still holds that token unexpired.
 * The row lock makes a takeover (an UPDATE) wait for the guarded
 * transaction to finish, so nothing commits under a token after the token
 * has changed. Locally, a lease counts as held until (time the tick was
 * sent + lease), which is never later than the server's expiry.
 *
 * A frozen holder. Claimers skip locked rows, so a holder stopped after its
 * guard (SIGSTOP, a debugger, a swapped-out VM) would keep its partition
 * for as long as its transaction stays open. The guard therefore bounds
 * the rest of that transaction, transaction-locally: no statement may run
 * and no idle pause may last longer than one lease (statement_timeout,
 * idle_in_transaction_session_timeout; a tighter setting of the session is
 * kept). Past it the server ends the session, which releases the lock, and
 * the next tick of another worker claims the partition: at most one lease
 * after its expiry, whatever the old holder does. This keeps the guard a
 * lock — the one way a commit can be ordered before a takeover in READ
 * COMMITTED — instead of a check that a takeover could overtake; the price
 * is that a guarded transaction must finish within one lease of its guard
 * (guard last, just before commit, as documented), which a healthy holder
 * does by far. */
#include "store.h"
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "thread.h"
#include "sql.h"
#include "utf8.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LEASE_LOST_SQLSTATE "PGSL1"

struct pgs_lease {
    pgs_store_base_t base;
    char *name, *owner;
    char instance[PGS_LEASE_INSTANCE_LEN + 1]; /* random, one per handle */
    int32_t count;
    double lease, renew;
    char lease_ms[32], lock_timeout_ms[32];
    char *tick_sql, *release_sql, *guard_sql;

    pthread_mutex_t tick_mu;   /* one tick (or release) at a time */
    pthread_mutex_t mu;        /* the state below */
    int64_t *tokens;           /* [count]: 0 = not held */
    double valid_until;        /* monotonic */
    pgs_lease_change_t *pending; /* changes not yet handed out */
    int npending, cappending;
    long ticks, failures;
    pgs_error_t last_err;      /* of the last failed tick */

    /* the optional background renewer */
    pthread_cond_t cv;
    pthread_t thread;
    int running, stopping;
};

/* ---- SQL --------------------------------------------------------------------
 * The schema is core/sql/leases--*.sql. Templates name @table@ (leases),
 * @members@ and @guard@, filled once when the set opens. */

/* Seeds a set's rows, unless the set exists with another count; returns
 * the count it had (0: new). A set's count is fixed: a stream's partition
 * depends on it, so workers with another count would split the streams
 * differently from the checkpoints (skipping or repeating work). */
static const char seed_sql[] =
    "WITH known AS (SELECT coalesce(max(partition) + 1, 0)::int AS n FROM @table@ WHERE name = $1),"
    " seeded AS (INSERT INTO @table@ (name, partition)"
    "   SELECT $1, g FROM known, generate_series(0, $2::int - 1) g WHERE known.n IN (0, $2::int)"
    "   ON CONFLICT DO NOTHING)"
    " SELECT n FROM known";

/* $1 name, $2 owner, $3 count, $4 lease ms, $5 lock_timeout ms, $6 instance.
 * The cfg CTE sets lock_timeout before anything can wait for a row lock
 * (everything that locks joins it), so a tick blocked by a long guarded
 * transaction gives up instead of hanging; it is transaction-local, so the
 * pooled session keeps its own setting. A member is an instance; the
 * owner is its readable name. Claims return the owner they took the
 * partition from when its lease had expired (a takeover). */
static const char tick_sql[] =
    "WITH cfg AS MATERIALIZED ("
    "  SELECT clock_timestamp() AS now, set_config('lock_timeout', $5, true) AS lt"
    "), member AS ("
    "  INSERT INTO @members@ AS m (name, owner, instance, expires_at)"
    "  SELECT $1, $2, $6, cfg.now + $4::float8 * interval '1 millisecond' FROM cfg"
    "  ON CONFLICT (name, instance) DO UPDATE SET expires_at = EXCLUDED.expires_at"
    "  RETURNING 1"
    "), purge AS ("
    "  DELETE FROM @members@ d WHERE (d.name, d.instance) IN ("
    "    SELECT o.name, o.instance FROM @members@ o, cfg"
    "    WHERE o.name = $1 AND o.instance <> $6"
    "      AND o.expires_at < cfg.now - 10 * $4::float8 * interval '1 millisecond'"
    "    FOR UPDATE OF o SKIP LOCKED)"
    "  RETURNING 1"
    "), live AS ("
    "  SELECT o.owner, o.instance FROM @members@ o, cfg"
    "  WHERE o.name = $1 AND o.instance <> $6 AND o.expires_at > cfg.now"
    "), quota AS ("
    "  SELECT $3::int / (n + 1) + CASE WHEN ahead < $3::int % (n + 1) THEN 1 ELSE 0 END AS q"
    "  FROM (SELECT count(*)::int AS n,"
    "               (count(*) FILTER (WHERE owner COLLATE \"C\" < $2 COLLATE \"C\""
    "                  OR (owner = $2 AND instance COLLATE \"C\" < $6 COLLATE \"C\")))::int AS ahead"
    "        FROM live) s"
    "), mine AS MATERIALIZED ("
    "  SELECT l.partition FROM @table@ l, cfg"
    "  WHERE l.name = $1 AND l.instance = $6 AND l.partition < $3::int"
    "  ORDER BY l.partition FOR UPDATE OF l"
    "), keep AS MATERIALIZED ("
    "  SELECT partition FROM mine ORDER BY partition LIMIT (SELECT q FROM quota)"
    "), renewed AS ("
    "  UPDATE @table@ l SET expires_at = cfg.now + $4::float8 * interval '1 millisecond' FROM cfg"
    "  WHERE l.name = $1 AND l.partition IN (SELECT partition FROM keep)"
    "  RETURNING l.partition, l.token"
    "), released AS ("
    "  UPDATE @table@ l SET owner = NULL, instance = NULL, expires_at = NULL"
    "  WHERE l.name = $1 AND l.instance = $6 AND l.partition NOT IN (SELECT partition FROM keep)"
    "  RETURNING l.partition, l.token"
    "), free AS MATERIALIZED ("
    "  SELECT l.partition, CASE WHEN l.expires_at IS NOT NULL THEN l.owner END AS prev"
    "  FROM @table@ l, cfg"
    "  WHERE l.name = $1 AND l.partition < $3::int"
    "    AND (l.owner IS NULL OR l.expires_at IS NULL OR l.expires_at <= cfg.now)"
    "    AND l.instance IS DISTINCT FROM $6"
    "  ORDER BY l.partition"
    "  LIMIT greatest(0, (SELECT q FROM quota) - (SELECT count(*) FROM keep))"
    "  FOR UPDATE OF l SKIP LOCKED"
    "), claimed AS ("
    "  UPDATE @table@ l SET owner = $2, instance = $6, token = l.token + 1,"
    "         expires_at = cfg.now + $4::float8 * interval '1 millisecond'"
    "  FROM cfg, free f WHERE l.name = $1 AND l.partition = f.partition"
    "  RETURNING l.partition, l.token, f.prev"
    ")"
    " SELECT 'k' AS kind, partition, token, NULL::text AS prev FROM renewed"
    " UNION ALL SELECT 'r', partition, token, NULL FROM released"
    " UNION ALL SELECT 'c', partition, token, prev FROM claimed";

/* $1 name, $2 instance, $3 lock_timeout ms (as for the tick). */
static const char release_sql[] =
    "WITH cfg AS MATERIALIZED (SELECT set_config('lock_timeout', $3, true) AS lt),"
    " r AS ("
    "  UPDATE @table@ l SET owner = NULL, instance = NULL, expires_at = NULL FROM cfg"
    "  WHERE l.name = $1 AND l.instance = $2 RETURNING l.partition, l.token"
    "), m AS (DELETE FROM @members@ d USING cfg WHERE d.name = $1 AND d.instance = $2 RETURNING 1)"
    " SELECT 'r' AS kind, partition, token, NULL::text AS prev FROM r";

/* $1 name, $2 partition, $3 owner, $4 instance, $5 token, $6 bound ms. */
static const char guard_sql[] = "SELECT @guard@($1, $2::int, $3, $4, $5::bigint, $6::int)";

/* ---- opening ------------------------------------------------------------------ */

static char *default_owner(void)
{
    static int seq;
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0)
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    int n = __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST);
    char owner[320];
    if (n == 1)
        snprintf(owner, sizeof owner, "%s:%ld", host, (long)getpid());
    else
        snprintf(owner, sizeof owner, "%s:%ld:%d", host, (long)getpid(), n);
    return strdup(owner);
}

/* A fresh instance id: PGS_LEASE_INSTANCE_LEN hex digits from the kernel's
 * random source; where that fails, from the clock, the pid and an address
 * (unique enough on one host, which is where the owner strings collide). */
static void new_instance(char out[PGS_LEASE_INSTANCE_LEN + 1])
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^
            ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)out;
    }
    snprintf(out, PGS_LEASE_INSTANCE_LEN + 1, "%016llx", (unsigned long long)r);
}

/* The set's schema for the runner; members and guard receive the quoted
 * companion names and must outlive *s. */
static pgs_status_t lease_schema(pgs_store_base_t *b, char *members, char *guard,
                                 pgs_schema_t *s, pgs_error_t *err)
{
    pgs_status_t st = pgs_store_companion(b, "_members", members, PGS_IDENT_MAX, err);
    if (st == PGS_OK)
        st = pgs_store_companion(b, "_guard", guard, PGS_IDENT_MAX, err);
    pgs_store_schema(b, "leases", "pgstore.leases", s);
    s->names[1] = "members";
    s->values[1] = members;
    s->names[2] = "guard";
    s->values[2] = guard;
    s->nnames = 3;
    s->tables[s->ntables++] = members;
    s->tables[s->ntables++] = guard;
    return st;
}

pgs_status_t pgs_lease_migrate(pgs_pool_t *pool, const char *table, pgs_error_t *err)
{
    pgs_store_base_t b;
    char members[PGS_IDENT_MAX], guard[PGS_IDENT_MAX];
    pgs_schema_t s;
    pgs_status_t st = pgs_store_init(&b, pool, table, "pgstore_leases", err);
    if (st != PGS_OK)
        return st;
    st = lease_schema(&b, members, guard, &s, err);
    if (st == PGS_OK)
        st = pgs_migrate_run(pool, &s, NULL, NULL, err);
    pgs_store_fini(&b);
    return st;
}

static void lease_free(pgs_lease_t *l)
{
    free(l->name);
    free(l->owner);
    free(l->tick_sql);
    free(l->release_sql);
    free(l->guard_sql);
    free(l->tokens);
    free(l->pending);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->tick_mu);
    pthread_cond_destroy(&l->cv);
    pgs_store_fini(&l->base);
    free(l);
}

pgs_status_t pgs_lease_open(pgs_pool_t *pool, const pgs_lease_opts_t *opts, pgs_lease_t **out,
                            pgs_error_t *err)
{
    *out = NULL;
    if (!opts || !opts->name || !*opts->name)
        return pgs_error_set(err, PGS_EINVALID, "a partition set needs a name");
    if (strlen(opts->name) > 200)
        return pgs_error_set(err, PGS_EINVALID, "partition set name longer than 200 bytes");
    if (!pgs_utf8_valid(opts->name, strlen(opts->name)))
        return pgs_error_set(err, PGS_EINVALID, "partition set name is not valid UTF-8");
    int32_t count = opts->count > 0 ? opts->count : 8;
    /* The defaults follow what was given: a lease 3 renews long. */
    double lease = opts->lease > 0 ? opts->lease : opts->renew * 3 > 10 ? opts->renew * 3 : 10;
    double renew = opts->renew > 0 ? opts->renew : lease / 3;
    if (opts->count < 0 || count > 65536)
        return pgs_error_set(err, PGS_EINVALID, "partition count %d is over 65536", (int)count);
    if (renew >= lease)
        return pgs_error_set(err, PGS_EINVALID,
                             "renew (%gs) must be shorter than the lease (%gs)", renew, lease);
    if (opts->owner && (!*opts->owner || strlen(opts->owner) > PGS_LEASE_OWNER_MAX))
        return pgs_error_set(err, PGS_EINVALID, "owner must be 1..%d bytes", PGS_LEASE_OWNER_MAX);
    if (opts->owner && !pgs_utf8_valid(opts->owner, strlen(opts->owner)))
        return pgs_error_set(err, PGS_EINVALID, "partition owner is not valid UTF-8");
    if (!(lease <= PGS_SECONDS_MAX))
        return pgs_error_set(err, PGS_EINVALID, "lease must be a number of seconds up to %.0f",
                             PGS_SECONDS_MAX);

    pgs_lease_t *l = calloc(1, sizeof *l);
    if (!l)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->tick_mu, NULL);
    pgs_thread_cond_init(&l->cv);

    char members[PGS_IDENT_MAX], guard[PGS_IDENT_MAX];
    pgs_schema_t schema;
    pgs_status_t st = pgs_store_init(&l->base, pool, opts->table, "pgstore_leases", err);
    if (st == PGS_OK)
        st = lease_schema(&l->base, members, guard, &schema, err);
    if (st != PGS_OK) {
        lease_free(l);
        return st;
    }
    l->count = count;
    l->lease = lease;
    l->renew = renew;
    double lock_ms = renew * 500;
    lock_ms = lock_ms < 100 ? 100 : lock_ms > 5000 ? 5000 : lock_ms;
    snprintf(l->lease_ms, sizeof l->lease_ms, "%.0f", lease * 1000);
    snprintf(l->lock_timeout_ms, sizeof l->lock_timeout_ms, "%.0f", lock_ms);
    l->name = strdup(opts->name);
    l->owner = opts->owner ? strdup(opts->owner) : default_owner();
    new_instance(l->instance);
    l->tokens = calloc((size_t)count, sizeof *l->tokens);
    const char *tmpl[] = {tick_sql, release_sql, guard_sql, seed_sql};
    char *sql[4] = {NULL, NULL, NULL, NULL}, *seed = NULL;
    if (!l->name || !l->owner || !l->tokens)
        st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    else
        st = pgs_sql_fill_all(tmpl, 4, schema.names, schema.values, schema.nnames, sql, err);
    l->tick_sql = sql[0];
    l->release_sql = sql[1];
    l->guard_sql = sql[2];
    seed = sql[3];
    if (st == PGS_OK)
        st = pgs_migrate_open(pool, &schema, !opts->skip_schema_init, err);
    if (st == PGS_OK) {
        char n[16];
        snprintf(n, sizeof n, "%d", (int)count);
        pgs_param_t p[2] = {{l->name, -1}, {n, -1}};
        pgs_conn_t *c;
        st = pgs_pool_acquire(pool, -1, &c, err);
        PGresult *r = NULL;
        if (st == PGS_OK) {
            st = pgs_exec(c, seed, 2, p, &r, err);
            pgs_pool_release(pool, c);
        }
        int had = st == PGS_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : 0;
        if (st == PGS_OK && had != 0 && had != count)
            st = pgs_error_set(err, PGS_EINVALID,
                               "partition set '%.200s' has %d partitions, not %d: every worker of a set "
                               "uses one count (to change it, remove the set and what its partitions "
                               "hold, e.g. pgstore project --rebuild)",
                               l->name, had, (int)count);
        PQclear(r);
    }
    free(seed);
    if (st != PGS_OK) {
        lease_free(l);
        return st;
    }
    *out = l;
    return PGS_OK;
}

/* ---- ticks ------------------------------------------------------------------------ */

/* Called with mu held. */
static void note_change(pgs_lease_t *l, int32_t p, pgs_lease_change_kind_t kind, int64_t token,
                        const char *from)
{
    if (l->npending == l->cappending) {
        /* Nobody collects them (a background renewer with no reader): keep
         * the newest, the state itself is always current. */
        int cap = l->cappending ? 2 * l->cappending : 16;
        if (cap > 4 * l->count + 64) {
            int keep = l->npending / 2;
            memmove(l->pending, l->pending + (l->npending - keep), (size_t)keep * sizeof *l->pending);
            l->npending = keep;
        } else {
            pgs_lease_change_t *n = realloc(l->pending, (size_t)cap * sizeof *n);
            if (!n)
                return;
            l->pending = n;
            l->cappending = cap;
        }
    }
    pgs_lease_change_t *c = &l->pending[l->npending++];
    *c = (pgs_lease_change_t){.partition = p, .kind = kind, .token = token};
    if (from)
        snprintf(c->from, sizeof c->from, "%s", from);
}

/* Applies a result of (kind, partition, token, prev) rows: 'k' kept, 'c'
 * claimed (prev: the owner whose expired lease it took over, or NULL), 'r'
 * released. Anything held before and absent now was lost. */
static pgs_status_t apply(pgs_lease_t *l, PGresult *r, double sent, pgs_error_t *err)
{
    int64_t *now = calloc((size_t)l->count, sizeof *now);
    char *released = calloc((size_t)l->count, 1);
    int *row = malloc((size_t)l->count * sizeof *row); /* of the claim, or -1 */
    if (!now || !released || !row) {
        free(now);
        free(released);
        free(row);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    for (int32_t p = 0; p < l->count; p++)
        row[p] = -1;
    for (int i = 0; i < PQntuples(r); i++) {
        char kind = PQgetvalue(r, i, 0)[0];
        long p = strtol(PQgetvalue(r, i, 1), NULL, 10);
        int64_t token = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        if (p < 0 || p >= l->count)
            continue;
        if (kind == 'r')
            released[p] = 1;
        else
            now[p] = token;
        if (kind == 'c' && !PQgetisnull(r, i, 3))
            row[p] = i;
    }
    pthread_mutex_lock(&l->mu);
    for (int32_t p = 0; p < l->count; p++) {
        int64_t before = l->tokens[p];
        if (before && before != now[p])
            note_change(l, p, released[p] ? PGS_LEASE_RELEASED : PGS_LEASE_LOST, before, NULL);
        if (now[p] && now[p] != before)
            note_change(l, p, PGS_LEASE_ACQUIRED, now[p],
                        row[p] >= 0 ? PQgetvalue(r, row[p], 3) : NULL);
    }
    memcpy(l->tokens, now, (size_t)l->count * sizeof *now);
    l->valid_until = sent + l->lease;
    pthread_mutex_unlock(&l->mu);
    free(now);
    free(released);
    free(row);
    return PGS_OK;
}

static pgs_status_t run_round(pgs_lease_t *l, int release, pgs_error_t *err)
{
    pthread_mutex_lock(&l->tick_mu);
    char n[16];
    snprintf(n, sizeof n, "%d", (int)l->count);
    pgs_param_t tick_params[6] = {{l->name, -1},     {l->owner, -1},
                                  {n, -1},           {l->lease_ms, -1},
                                  {l->lock_timeout_ms, -1}, {l->instance, -1}};
    pgs_param_t release_params[3] = {{l->name, -1}, {l->instance, -1}, {l->lock_timeout_ms, -1}};
    pgs_conn_t *c;
    PGresult *r = NULL;
    double sent = pgs_clock_now();
    pgs_status_t st = pgs_pool_acquire(l->base.pool, -1, &c, err);
    if (st == PGS_OK) {
        sent = pgs_clock_now();
        st = release ? pgs_exec(c, l->release_sql, 3, release_params, &r, err)
                     : pgs_exec(c, l->tick_sql, 6, tick_params, &r, err);
        pgs_pool_release(l->base.pool, c);
    }
    if (st == PGS_OK) {
        st = apply(l, r, sent, err);
        PQclear(r);
    }
    pthread_mutex_lock(&l->mu);
    l->ticks++;
    if (st != PGS_OK) {
        l->failures++;
        if (err)
            l->last_err = *err;
    }
    pthread_mutex_unlock(&l->mu);
    pthread_mutex_unlock(&l->tick_mu);
    return st;
}

int pgs_lease_changes(pgs_lease_t *l, pgs_lease_change_t **changes)
{
    pthread_mutex_lock(&l->mu);
    int n = l->npending;
    *changes = l->pending;
    l->pending = NULL;
    l->npending = l->cappending = 0;
    pthread_mutex_unlock(&l->mu);
    if (!n) {
        free(*changes);
        *changes = NULL;
    }
    return n;
}

/* After a round: the pending changes go to the caller on success, are
 * discarded when the caller passes no array, and otherwise wait. */
static pgs_status_t hand_out(pgs_lease_t *l, pgs_status_t st, pgs_lease_change_t **changes,
                             int *nchanges)
{
    pgs_lease_change_t *c = NULL;
    if (!changes) {
        (void)pgs_lease_changes(l, &c);
        free(c);
        return st;
    }
    *changes = NULL;
    *nchanges = 0;
    if (st == PGS_OK)
        *nchanges = pgs_lease_changes(l, changes);
    return st;
}

pgs_status_t pgs_lease_tick(pgs_lease_t *l, pgs_lease_change_t **changes, int *nchanges,
                            pgs_error_t *err)
{
    return hand_out(l, run_round(l, 0, err), changes, nchanges);
}

pgs_status_t pgs_lease_release(pgs_lease_t *l, pgs_lease_change_t **changes, int *nchanges,
                               pgs_error_t *err)
{
    return hand_out(l, run_round(l, 1, err), changes, nchanges);
}

/* ---- state ----------------------------------------------------------------------- */

int64_t pgs_lease_token(pgs_lease_t *l, int32_t partition)
{
    if (partition < 0 || partition >= l->count)
        return 0;
    pthread_mutex_lock(&l->mu);
    int64_t t = pgs_clock_now() < l->valid_until ? l->tokens[partition] : 0;
    pthread_mutex_unlock(&l->mu);
    return t;
}

int pgs_lease_owned(pgs_lease_t *l, int64_t *tokens)
{
    int n = 0;
    pthread_mutex_lock(&l->mu);
    int valid = pgs_clock_now() < l->valid_until;
    for (int32_t p = 0; p < l->count; p++) {
        tokens[p] = valid ? l->tokens[p] : 0;
        n += tokens[p] != 0;
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

void pgs_lease_info(pgs_lease_t *l, pgs_lease_info_t *out)
{
    pthread_mutex_lock(&l->mu);
    out->name = l->name;
    out->owner = l->owner;
    out->instance = l->instance;
    out->table = l->base.given;
    out->count = l->count;
    out->lease = l->lease;
    out->renew = l->renew;
    out->ticks = l->ticks;
    out->failures = l->failures;
    out->background = l->running;
    out->last_error = l->last_err;
    pthread_mutex_unlock(&l->mu);
}

pgs_status_t pgs_lease_guard(pgs_lease_t *l, pgs_conn_t *tx, int32_t partition, int64_t token,
                             pgs_error_t *err)
{
    if (!tx || !pgs_conn_pg(tx))
        return pgs_error_set(err, PGS_ECLOSED, "attempt to use a closed connection");
    if (partition < 0 || partition >= l->count)
        return pgs_error_set(err, PGS_EINVALID, "partition %d is out of range 0..%d",
                             (int)partition, (int)l->count - 1);
    PGTransactionStatusType ts = PQtransactionStatus(pgs_conn_pg(tx));
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
        return pgs_error_set(err, PGS_EINVALID, "a lease guard needs an open transaction");
    if (token <= 0)
        token = pgs_lease_token(l, partition);
    /* Sent even when nothing is held (token 0 never matches): the failure
     * must abort the caller's transaction, not just be reported here. */
    char p[16], t[32];
    snprintf(p, sizeof p, "%d", (int)partition);
    snprintf(t, sizeof t, "%lld", (long long)token);
    pgs_param_t params[6] = {{l->name, -1},     {p, -1}, {l->owner, -1},
                             {l->instance, -1}, {t, -1}, {l->lease_ms, -1}};
    pgs_status_t st = pgs_exec(tx, l->guard_sql, 6, params, NULL, err);
    if (st != PGS_OK && err && strcmp(err->sqlstate, LEASE_LOST_SQLSTATE) == 0)
        err->code = st = PGS_ELEASE_LOST;
    return st;
}

/* ---- the background renewer -------------------------------------------------------- */

static void *renewer(void *arg)
{
    pgs_lease_t *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stopping) {
        pthread_mutex_unlock(&l->mu);
        pgs_error_t e;
        (void)run_round(l, 0, &e); /* failures are counted in the state */
        pthread_mutex_lock(&l->mu);
        struct timespec ts;
        pgs_clock_after(CLOCK_MONOTONIC, l->renew, &ts);
        while (!l->stopping && pthread_cond_timedwait(&l->cv, &l->mu, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

pgs_status_t pgs_lease_start(pgs_lease_t *l, pgs_error_t *err)
{
    pthread_mutex_lock(&l->mu);
    if (l->running) {
        pthread_mutex_unlock(&l->mu);
        return PGS_OK;
    }
    l->stopping = 0;
    int rc = pgs_thread_start(&l->thread, renewer, l);
    l->running = rc == 0;
    pthread_mutex_unlock(&l->mu);
    if (rc != 0)
        return pgs_error_set(err, PGS_ENOMEM, "could not start the renewer thread (%s)",
                             strerror(rc));
    return PGS_OK;
}

void pgs_lease_stop(pgs_lease_t *l)
{
    pthread_mutex_lock(&l->mu);
    if (!l->running) {
        pthread_mutex_unlock(&l->mu);
        return;
    }
    l->stopping = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_mutex_lock(&l->mu);
    l->running = 0;
    pthread_mutex_unlock(&l->mu);
}

void pgs_lease_close(pgs_lease_t *l)
{
    if (!l)
        return;
    pgs_lease_stop(l);
    if (!pgs_pool_is_closed(l->base.pool)) {
        pgs_error_t e;
        (void)pgs_lease_release(l, NULL, NULL, &e); /* best effort: else they expire */
    }
    lease_free(l);
}
