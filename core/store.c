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
        snprintf(b->legacy_key, sizeof b->legacy_key, "%s:%s", legacy_kind, b->raw);
        s->nlegacy = 1;
        s->legacy[0] = b->legacy_key;
    }
}
