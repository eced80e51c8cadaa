/* SPDX-License-Identifier: MIT
 * migrate.h — the one migration runner every store uses (internal): a
 * store describes its schema (a file series of core/sql, its names, the
 * relations that must exist, the keys older code recorded it under) and
 * the runner creates, upgrades, re-creates or checks it. See migrate.c.
 */
#ifndef PGS_MIGRATE_H
#define PGS_MIGRATE_H
#include "pgstore.h"

#define PGS_SCHEMA_MAX_NAMES 24

typedef struct pgs_schema {
    const char *series;   /* "events": core/sql/events--1.sql, events--1--2.sql … */
    const char *table;    /* the store's name as given ("t" or "s.t"): the key */
    int nnames;           /* placeholders and their quoted identifiers */
    const char *names[PGS_SCHEMA_MAX_NAMES], *values[PGS_SCHEMA_MAX_NAMES];
    int ntables;          /* quoted relations and functions that must exist */
    const char *tables[PGS_SCHEMA_MAX_NAMES];
    int nindexes;         /* quoted secondary relations (check_index) */
    const char *indexes[PGS_SCHEMA_MAX_NAMES];
    int nlegacy;          /* keys older code recorded this store under */
    const char *legacy[PGS_SCHEMA_MAX_NAMES];
    int nlocks;           /* further advisory locks older code took for this
                           * store: (hashtext(space), hashtext(key)) */
    const char *lock_space[PGS_SCHEMA_MAX_NAMES], *lock_key[PGS_SCHEMA_MAX_NAMES];
    double lock_timeout;  /* seconds to wait for locks; <= 0: no limit */
} pgs_schema_t;

/* The runner's phases are the ones kv's phase hook reports: a stepped run
 * is the pgs_kv_init_t of pgstore.h. */
typedef struct pgs_kv_init pgs_migrate_run_t;

/* Starts a stepped run (nothing is sent yet). On PGS_OK *out is owned by
 * the caller: pgs_migrate_free() it. */
pgs_status_t pgs_migrate_start(pgs_pool_t *pool, const pgs_schema_t *s, pgs_migrate_run_t **out,
                               pgs_error_t *err);
pgs_kv_phase_t pgs_migrate_phase(const pgs_migrate_run_t *run);
/* Runs the current phase. After a failure the phase is PGS_KV_PHASE_END
 * and the transaction is rolled back. */
pgs_status_t pgs_migrate_step(pgs_migrate_run_t *run, pgs_error_t *err);
void pgs_migrate_free(pgs_migrate_run_t *run);
const char *pgs_migrate_phase_name(pgs_kv_phase_t phase);

/* A whole run, calling hook (may be NULL) before each phase. */
pgs_status_t pgs_migrate_run(pgs_pool_t *pool, const pgs_schema_t *s, pgs_kv_hook_fn hook,
                             void *ud, pgs_error_t *err);

/* For a store opened without migrations: PGS_ENOTFOUND naming the first
 * of s->tables that does not exist (in the message and in err->schema and
 * err->table); nothing is created or written. */
pgs_status_t pgs_migrate_check(pgs_pool_t *pool, const pgs_schema_t *s, pgs_error_t *err);

/* What a store's open does: run when migrate, else check. */
pgs_status_t pgs_migrate_open(pgs_pool_t *pool, const pgs_schema_t *s, int migrate,
                              pgs_error_t *err);
#endif
