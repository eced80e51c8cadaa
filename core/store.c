/* SPDX-License-Identifier: MIT
 * store.c — the shared part of the stores: naming, connection choice and
 * the description of a store's schema for the migration runner
 * (migrate.c).
 */
#include "store.h"
#include "conn.h"
#include "error.h"

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
    pgs_status_t st = pgs_ident_quote(table, b->given_quoted, sizeof b->given_quoted, err);
    if (st == PGS_OK)
        st = pgs_store_resolve(pool, table, b->raw, sizeof b->raw, err);
    if (st == PGS_OK)
        st = pgs_ident_quote(b->raw, b->table, sizeof b->table, err);
    if (st != PGS_OK)
        return st;
    snprintf(b->given, sizeof b->given, "%s", table);
    pgs_pool_ref(pool);
    b->pool = pool;
    return PGS_OK;
}

pgs_status_t pgs_store_resolve(pgs_pool_t *pool, const char *name, char *out, size_t outsz,
                               pgs_error_t *err)
{
    if (strchr(name, '.')) {
        snprintf(out, outsz, "%s", name);
        return PGS_OK;
    }
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    /* The table the search_path finds, as any statement would; when there
     * is none yet, the schema CREATE TABLE would put it in. */
    char quoted[PGS_IDENT_MAX];
    st = pgs_ident_quote(name, quoted, sizeof quoted, err);
    PGresult *r = NULL;
    pgs_param_t p = {quoted, -1};
    if (st == PGS_OK)
        st = pgs_exec(c,
                      "SELECT COALESCE((SELECT n.nspname FROM pg_class c JOIN pg_namespace n"
                      " ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)"
                      " AND c.relkind IN ('r', 'p')), current_schema())",
                      1, &p, &r, err);
    if (st == PGS_OK) {
        if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
            st = pgs_error_set(err, PGS_EINVALID,
                               "no schema for table %s: search_path names no existing schema",
                               name);
        else if (pgs_ident_quote(PQgetvalue(r, 0, 0), (char[PGS_IDENT_MAX]){0}, PGS_IDENT_MAX,
                                 NULL) != PGS_OK)
            snprintf(out, outsz, "%s", name); /* a schema outside the rules: see README */
        else if ((size_t)snprintf(out, outsz, "%s.%s", PQgetvalue(r, 0, 0), name) >= outsz)
            st = pgs_error_set(err, PGS_EINVALID, "invalid table name: %s.%s is too long",
                               PQgetvalue(r, 0, 0), name);
        PQclear(r);
    }
    pgs_pool_release(pool, c);
    return st;
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

void pgs_store_schema(pgs_store_base_t *b, const char *series, const char *legacy_kind,
                      pgs_schema_t *s)
{
    memset(s, 0, sizeof *s);
    s->series = series;
    s->table = b->raw;
    s->nnames = 1;
    s->names[0] = "table";
    s->values[0] = b->table;
    s->ntables = 1;
    s->tables[0] = b->table;
    if (legacy_kind) {
        snprintf(b->legacy_key, sizeof b->legacy_key, "%s:%s", legacy_kind, b->given);
        s->nlegacy = 1;
        s->legacy[0] = b->legacy_key;
    }
}

pgs_status_t pgs_store_migrate_table(pgs_pool_t *pool, const char *table, const char *dflt,
                                     const char *series, int migrate, pgs_error_t *err)
{
    pgs_store_base_t b;
    pgs_status_t st = pgs_store_init(&b, pool, table, dflt, err);
    if (st != PGS_OK)
        return st;
    pgs_schema_t s;
    pgs_store_schema(&b, series, NULL, &s);
    st = pgs_migrate_open(pool, &s, migrate, err);
    pgs_store_fini(&b);
    return st;
}
