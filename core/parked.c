/* SPDX-License-Identifier: MIT
 * parked.c — the projections' dead-letter table (pgstore_parked): its
 * schema is core/sql/parked--*.sql, migrated or checked through the one
 * runner like every store's. The rows are written by the projection
 * runner (lua/pgstore/projection.lua) in its batch's transaction.
 */
#include "store.h"

#include <string.h>

pgs_status_t pgs_parked_migrate(pgs_pool_t *pool, const char *table, int migrate,
                                pgs_error_t *err)
{
    pgs_store_base_t b;
    pgs_status_t st = pgs_store_init(&b, pool, table, "pgstore_parked", err);
    if (st != PGS_OK)
        return st;
    pgs_schema_t s;
    pgs_store_schema(&b, "parked", NULL, &s);
    st = pgs_migrate_open(pool, &s, migrate, err);
    pgs_store_fini(&b);
    return st;
}
