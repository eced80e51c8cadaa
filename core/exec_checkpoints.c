/* SPDX-License-Identifier: MIT
 * exec_checkpoints.c — execution checkpoints: one row per execution id
 * holding the latest checkpoint document. A save is a single
 * INSERT … ON CONFLICT DO UPDATE, so any number of connections saving the
 * same id at once leave one row with one of their documents and none of
 * them sees an error (the loser of the insert race waits for the winner's
 * row and updates it).
 */
#include "companion.h"

#include <stdlib.h>
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

struct pgs_exec_checkpoints {
    pgs_store_base_t base;
    size_t max_value;
    char *sql[SQL_COUNT];
};

pgs_status_t pgs_exec_checkpoints_open(pgs_pool_t *pool, const pgs_exec_checkpoints_opts_t *opts,
                                       pgs_exec_checkpoints_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_exec_checkpoints_t *xs = calloc(1, sizeof *xs);
    if (!xs)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_store_init(&xs->base, pool, opts ? opts->table : NULL,
                                     "pgstore_exec_checkpoints", err);
    if (st != PGS_OK) {
        free(xs);
        return st;
    }
    xs->max_value = opts && opts->max_value_size ? opts->max_value_size : PGS_COMPANION_MAX_VALUE;
    st = pgs_companion_build_sql(&xs->base, xs->sql, templates, SQL_COUNT, err);
    if (st == PGS_OK)
        st = pgs_companion_migrate(&xs->base, "exec_checkpoints", !(opts && opts->skip_schema_init),
                                   err);
    if (st != PGS_OK) {
        pgs_exec_checkpoints_close(xs);
        return st;
    }
    *out = xs;
    return PGS_OK;
}

void pgs_exec_checkpoints_close(pgs_exec_checkpoints_t *xs)
{
    if (!xs)
        return;
    pgs_companion_free_sql(xs->sql, SQL_COUNT);
    pgs_store_fini(&xs->base);
    free(xs);
}

pgs_status_t pgs_exec_checkpoints_migrate(pgs_exec_checkpoints_t *xs, pgs_error_t *err)
{
    return pgs_companion_migrate(&xs->base, "exec_checkpoints", 1, err);
}

pgs_status_t pgs_exec_checkpoints_save(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       const char *exec_id, const char *checkpoint_json,
                                       pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("execution id", exec_id, err);
    if (st == PGS_OK)
        st = pgs_companion_check_key("checkpoint", checkpoint_json, err);
    if (st == PGS_OK)
        st = pgs_companion_check_size("checkpoint", strlen(checkpoint_json), xs->max_value, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p[2] = {{exec_id, -1}, {checkpoint_json, -1}};
    return pgs_companion_exec(&xs->base, tx, xs->sql[SQL_SAVE], 2, p, NULL, err);
}

pgs_status_t pgs_exec_checkpoints_load(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       const char *exec_id, pgs_rows_t **rows, pgs_error_t *err)
{
    *rows = NULL;
    pgs_status_t st = pgs_companion_check_key("execution id", exec_id, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {exec_id, -1};
    PGresult *r;
    st = pgs_companion_exec(&xs->base, tx, xs->sql[SQL_LOAD], 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return pgs_error_set(err, PGS_ENOTFOUND, "no checkpoint for execution '%.200s'", exec_id);
    }
    *rows = pgs_rows_wrap(r);
    return PGS_OK;
}

pgs_status_t pgs_exec_checkpoints_list(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       pgs_rows_t **rows, pgs_error_t *err)
{
    PGresult *r = NULL;
    pgs_status_t st = pgs_companion_exec(&xs->base, tx, xs->sql[SQL_LIST], 0, NULL, &r, err);
    *rows = pgs_rows_wrap(r);
    return st;
}

pgs_status_t pgs_exec_checkpoints_delete(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                         const char *exec_id, int64_t *removed, pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("execution id", exec_id, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {exec_id, -1};
    PGresult *r;
    st = pgs_companion_exec(&xs->base, tx, xs->sql[SQL_DELETE], 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    if (removed)
        *removed = pgs_result_affected(r);
    PQclear(r);
    return PGS_OK;
}
