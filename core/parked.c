/* SPDX-License-Identifier: MIT
 * parked.c — the projections' dead-letter table (pgstore_parked): its
 * schema is core/sql/parked--*.sql, migrated or checked through the one
 * runner like every store's. The rows are written by the projection
 * runner (lua/pgstore/projection.lua) in its batch's transaction.
 */
#include "store.h"


pgs_status_t pgs_parked_migrate(pgs_pool_t *pool, const char *table, int migrate,
                                pgs_error_t *err)
{
    return pgs_store_migrate_table(pool, table, "pgstore_parked", "parked", migrate, err);
}
