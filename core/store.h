/* SPDX-License-Identifier: MIT
 * store.h — what every store shares (internal): a referenced pool, its
 * validated and quoted table name, the choice between the caller's
 * transaction connection and a pooled one, malloc'd SQL built from
 * templates, and versioned migrations under an advisory lock.
 */
#ifndef PGS_STORE_H
#define PGS_STORE_H
#include "pq.h"

typedef struct pgs_store_base {
    pgs_pool_t *pool;              /* referenced; unref'd by fini */
    char raw[2 * 64];              /* the name as given, for migration keys */
    char table[PGS_IDENT_MAX];     /* quoted: "schema"."table" */
} pgs_store_base_t;

/* Validates `table` (or `dflt` when NULL), quotes it, refs the pool. */
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

/* printf into a malloc'd string (NULL on ENOMEM). Used to put quoted
 * identifiers — never values — into SQL templates, once per store. */
char *pgs_sql_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One schema step: the SQL (may hold several statements) that takes the
 * target from version-1 to version. */
typedef struct pgs_migration {
    int version;
    const char *sql;
} pgs_migration_t;

/* Applies the steps above the target's recorded version, in one
 * transaction, under a transaction-scoped advisory lock on the target, so
 * concurrent processes serialise and all succeed. Versions are recorded in
 * the table pgstore_migrations (target text primary key, version int). */
pgs_status_t pgs_migrate(pgs_pool_t *pool, const char *target, const pgs_migration_t *steps,
                         int nsteps, pgs_error_t *err);
#endif
