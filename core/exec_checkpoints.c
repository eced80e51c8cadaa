/* SPDX-License-Identifier: MIT
 * exec_checkpoints.c — execution checkpoints: one row per execution id
 * holding the latest checkpoint document. A save is a single
 * INSERT … ON CONFLICT DO UPDATE, so any number of connections saving the
 * same id at once leave one row with one of their documents and none of
 * them sees an error (the loser of the insert race waits for the winner's
 * row and updates it).
 */
#include "companion.h"

#include <string.h>

enum { SQL_SAVE, SQL_LOAD, SQL_LIST, SQL_DELETE, SQL_COUNT };

/* Keep in the same order as the enum above. */
static const char *const templates[SQL_COUNT] = {
    "INSERT INTO @table@ (exec_id, checkpoint, updated_at) VALUES ($1, $2::jsonb, now())"
    " ON CONFLICT (exec_id) DO UPDATE SET checkpoint = EXCLUDED.checkpoint,"
    " updated_at = EXCLUDED.updated_at",

    "SELECT checkpoint, updated_at AS time FROM @table@ WHERE exec_id = $1",

    "SELECT exec_id FROM @table@ ORDER BY exec_id",

    "DELETE FROM @table@ WHERE exec_id = $1",
};

static const pgs_companion_kind_t kind = {
    .series = "exec_checkpoints",
    .default_table = "pgstore_exec_checkpoints",
    .key = "execution id",
    .not_found = "no checkpoint for execution",
    .sql = templates,
    .nsql = SQL_COUNT,
};

struct pgs_exec_checkpoints {
    pgs_companion_t c;
};

pgs_status_t pgs_exec_checkpoints_open(pgs_pool_t *pool, const pgs_exec_checkpoints_opts_t *opts,
                                       pgs_exec_checkpoints_t **out, pgs_error_t *err)
{
    pgs_companion_opts_t o = {0};
    if (opts)
        o = (pgs_companion_opts_t){opts->table, opts->skip_schema_init, opts->max_value_size};
    pgs_companion_t *c;
    pgs_status_t st = pgs_companion_open(&kind, pool, &o, &c, err);
    *out = (pgs_exec_checkpoints_t *)c;
    return st;
}

void pgs_exec_checkpoints_close(pgs_exec_checkpoints_t *xs)
{
    pgs_companion_close((pgs_companion_t *)xs);
}

pgs_status_t pgs_exec_checkpoints_migrate(pgs_exec_checkpoints_t *xs, pgs_error_t *err)
{
    return pgs_companion_migrate(&xs->c, 1, err);
}

pgs_status_t pgs_exec_checkpoints_save(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       const char *exec_id, const char *checkpoint_json,
                                       pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("execution id", exec_id, err);
    if (st == PGS_OK)
        st = pgs_companion_check_key("checkpoint", checkpoint_json, err);
    if (st == PGS_OK)
        st = pgs_companion_check_size("checkpoint", strlen(checkpoint_json), xs->c.max_value,
                                      err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p[2] = {{exec_id, -1}, {checkpoint_json, -1}};
    return pgs_companion_exec(&xs->c.base, tx, xs->c.sql[SQL_SAVE], 2, p, NULL, err);
}

pgs_status_t pgs_exec_checkpoints_load(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       const char *exec_id, pgs_rows_t **rows, pgs_error_t *err)
{
    return pgs_companion_load(&xs->c, tx, SQL_LOAD, exec_id, rows, err);
}

pgs_status_t pgs_exec_checkpoints_list(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       pgs_rows_t **rows, pgs_error_t *err)
{
    return pgs_companion_list(&xs->c, tx, SQL_LIST, rows, err);
}

pgs_status_t pgs_exec_checkpoints_delete(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                         const char *exec_id, int64_t *removed, pgs_error_t *err)
{
    return pgs_companion_remove(&xs->c, tx, SQL_DELETE, exec_id, removed, err);
}
