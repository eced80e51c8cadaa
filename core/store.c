/* SPDX-License-Identifier: MIT
 * store.c — the shared part of the stores: naming, connection choice, SQL
 * templates and migrations.
 *
 * Migrations: every store's schema is a list of numbered steps. pgs_migrate
 * takes pg_advisory_xact_lock(hashtext('pgstore.migrate'), hashtext(target))
 * before even creating pgstore_migrations, so many processes starting at
 * once queue behind the first and then find nothing left to do.
 */
#define _GNU_SOURCE /* vasprintf */
#include "store.h"
#include "conn.h"
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pgs_status_t pgs_store_init(pgs_store_base_t *b, pgs_pool_t *pool, const char *table,
                            const char *dflt, pgs_error_t *err)
{
    memset(b, 0, sizeof *b);
    if (!table) /* "" is a name, and an invalid one */
        table = dflt;
    if (!pool)
        return pgs_error_set(err, PGS_EINVALID, "no pool given");
    pgs_status_t st = pgs_ident_quote(table, b->table, sizeof b->table, err);
    if (st != PGS_OK)
        return st;
    snprintf(b->raw, sizeof b->raw, "%s", table);
    pgs_pool_ref(pool);
    b->pool = pool;
    return PGS_OK;
}

void pgs_store_fini(pgs_store_base_t *b)
{
    if (b->pool)
        pgs_pool_unref(b->pool);
    b->pool = NULL;
}

pgs_status_t pgs_store_companion(const pgs_store_base_t *b, const char *suffix, char *out,
                                 size_t outsz, pgs_error_t *err)
{
    return pgs_ident_quote_suffix(b->raw, suffix, out, outsz, err);
}

pgs_status_t pgs_store_begin(pgs_store_base_t *b, pgs_conn_t *tx, pgs_conn_t **conn,
                             pgs_error_t *err)
{
    if (tx) {
        *conn = tx;
        return PGS_OK;
    }
    return pgs_pool_acquire(b->pool, -1, conn, err);
}

void pgs_store_end(pgs_store_base_t *b, pgs_conn_t *tx, pgs_conn_t *conn)
{
    if (conn && conn != tx)
        pgs_pool_release(b->pool, conn);
}

char *pgs_sql_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        out = NULL;
    va_end(ap);
    return out;
}

static const char lock_sql[] =
    "SELECT pg_advisory_xact_lock(hashtext('pgstore.migrate'), hashtext($1))";
static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS pgstore_migrations ("
    " target text PRIMARY KEY, version int NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";
static const char version_sql[] = "SELECT version FROM pgstore_migrations WHERE target = $1";
static const char record_sql[] =
    "INSERT INTO pgstore_migrations (target, version) VALUES ($1, $2::int)"
    " ON CONFLICT (target) DO UPDATE SET version = EXCLUDED.version, applied_at = now()";

static pgs_status_t migrate_on(pgs_conn_t *c, const char *target, const pgs_migration_t *steps,
                               int nsteps, pgs_error_t *err)
{
    pgs_param_t t = {target, -1};
    PGresult *r = NULL;
    pgs_status_t st = pgs_exec(c, lock_sql, 1, &t, NULL, err);
    if (st == PGS_OK)
        st = pgs_exec_command(c, create_sql, err);
    if (st == PGS_OK)
        st = pgs_exec(c, version_sql, 1, &t, &r, err);
    if (st != PGS_OK)
        return st;
    int current = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    for (int i = 0; i < nsteps; i++) {
        if (steps[i].version <= current)
            continue;
        st = pgs_exec_command(c, steps[i].sql, err);
        if (st != PGS_OK)
            return st;
        char v[16];
        snprintf(v, sizeof v, "%d", steps[i].version);
        pgs_param_t p[2] = {{target, -1}, {v, -1}};
        st = pgs_exec(c, record_sql, 2, p, NULL, err);
        if (st != PGS_OK)
            return st;
        current = steps[i].version;
    }
    return PGS_OK;
}

pgs_status_t pgs_migrate(pgs_pool_t *pool, const char *target, const pgs_migration_t *steps,
                         int nsteps, pgs_error_t *err)
{
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    st = pgs_tx_begin(c, PGS_READ_COMMITTED, err);
    if (st == PGS_OK)
        st = migrate_on(c, target, steps, nsteps, err);
    if (st == PGS_OK)
        st = pgs_tx_commit(c, err);
    else
        pgs_tx_rollback(c, NULL);
    pgs_pool_release(pool, c);
    return st;
}
