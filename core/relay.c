/* SPDX-License-Identifier: MIT
 * relay.c — the relay's table (pgstore_relay) for changes larger than a
 * NOTIFY payload: its schema is core/sql/relay--*.sql, migrated through the
 * one runner like every store's. Rows are written and read by
 * lua/pgstore/relay.lua.
 */
#include "store.h"

pgs_status_t pgs_relay_migrate(pgs_pool_t *pool, const char *table, int migrate,
                               pgs_error_t *err)
{
    return pgs_store_migrate_table(pool, table, "pgstore_relay", "relay", migrate, err);
}
