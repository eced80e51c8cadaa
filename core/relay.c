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
    pgs_store_base_t b;
    pgs_status_t st = pgs_store_init(&b, pool, table, "pgstore_relay", err);
    if (st != PGS_OK)
        return st;
    pgs_schema_t s;
    pgs_store_schema(&b, "relay", NULL, &s);
    st = pgs_migrate_open(pool, &s, migrate, err);
    pgs_store_fini(&b);
    return st;
}
