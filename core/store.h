/* SPDX-License-Identifier: MIT
 * store.h — what every store shares (internal): a referenced pool, its
 * validated and quoted table name, the choice between the caller's
 * transaction connection and a pooled one, and the description of its
 * schema the migration runner takes.
 */
#ifndef PGS_STORE_H
#define PGS_STORE_H
#include "pq.h"
#include "migrate.h"

typedef struct pgs_store_base {
    pgs_pool_t *pool;              /* referenced; unref'd by fini */
    char raw[2 * 64];              /* schema.table, resolved at open */
    char table[PGS_IDENT_MAX];     /* quoted: "schema"."table" */
    char given[2 * 64];            /* the name as given: older code's keys */
    char given_quoted[PGS_IDENT_MAX];
    char legacy_key[2 * 64 + 32];  /* the migration key of older code */
} pgs_store_base_t;

/* An unqualified name means the table the search_path finds when the
 * store opens, as in any statement — or, when there is none yet, one in
 * current_schema() (where CREATE TABLE would put it) — resolved ONCE: from
 * then on every statement names "schema"."table", so a table of the same
 * name created later earlier on the search_path is never reached. Writes
 * schema.table. */
pgs_status_t pgs_store_resolve(pgs_pool_t *pool, const char *name, char *out, size_t outsz,
                               pgs_error_t *err);

/* Validates `table` (or `dflt` when NULL), resolves and quotes it (see
 * pgs_store_resolve), refs the pool. */
pgs_status_t pgs_store_init(pgs_store_base_t *b, pgs_pool_t *pool, const char *table,
                            const char *dflt, pgs_error_t *err);
void pgs_store_fini(pgs_store_base_t *b);

/* The quoted name of a companion table: base name + suffix. */
pgs_status_t pgs_store_companion(const pgs_store_base_t *b, const char *suffix, char *out,
                                 size_t outsz, pgs_error_t *err);

/* The connection to run on: `tx` when the caller is inside a transaction,
 * else one borrowed from the pool. Pair every begin with pgs_store_end. */
pgs_status_t pgs_store_begin(pgs_store_base_t *b, pgs_conn_t *tx, pgs_conn_t **conn,
                             pgs_error_t *err);
void pgs_store_end(pgs_store_base_t *b, pgs_conn_t *tx, pgs_conn_t *conn);

/* The store's schema for the migration runner (migrate.h): the file
 * series, the table as the one placeholder @table@ and the one relation
 * that must exist, and the key older code recorded it under
 * ("<legacy_kind>:<name as given>"; NULL: none). Add further names,
 * tables and indexes to *s after this. */
void pgs_store_schema(pgs_store_base_t *b, const char *series, const char *legacy_kind,
                      pgs_schema_t *s);

/* Migrates (or, migrate 0, checks) a store that is one table and nothing
 * else, `table` or `dflt`, through the file series `series`. */
pgs_status_t pgs_store_migrate_table(pgs_pool_t *pool, const char *table, const char *dflt,
                                     const char *series, int migrate, pgs_error_t *err);
#endif
