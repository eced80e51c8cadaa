/* SPDX-License-Identifier: MIT
 * snapshots.c — the snapshot store: the latest state of each stream, with
 * the stream version it reflects and the schema version of its shape.
 * One upsert keeps the newest: a save of an older version than the stored
 * one changes nothing (writers racing with stale snapshots cannot roll a
 * newer one back).
 */
#include "companion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SQL_SAVE, SQL_LOAD, SQL_INVALIDATE, SQL_INVALIDATE_ALL, SQL_COUNT };

/* Keep in the same order as the enum above. */
static const char *const templates[SQL_COUNT] = {
    "INSERT INTO @table@ AS s (stream, version, schema_version, state, created_at)"
    " VALUES ($1, $2::bigint, $3::integer, $4::jsonb, now())"
    " ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version,"
    " schema_version = EXCLUDED.schema_version, state = EXCLUDED.state,"
    " created_at = EXCLUDED.created_at"
    " WHERE s.version <= EXCLUDED.version",

    "SELECT stream, version, state, schema_version, created_at AS time"
    " FROM @table@ WHERE stream = $1",

    "DELETE FROM @table@ WHERE stream = $1",

    "DELETE FROM @table@",
};

struct pgs_snapshots {
    pgs_store_base_t base;
    size_t max_value;
    char *sql[SQL_COUNT];
};

pgs_status_t pgs_snapshots_open(pgs_pool_t *pool, const pgs_snapshots_opts_t *opts,
                                pgs_snapshots_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_snapshots_t *ss = calloc(1, sizeof *ss);
    if (!ss)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_store_init(&ss->base, pool, opts ? opts->table : NULL,
                                     "pgstore_snapshots", err);
    if (st != PGS_OK) {
        free(ss);
        return st;
    }
    ss->max_value = opts && opts->max_value_size ? opts->max_value_size : PGS_COMPANION_MAX_VALUE;
    st = pgs_companion_build_sql(&ss->base, ss->sql, templates, SQL_COUNT, err);
    if (st == PGS_OK)
        st = pgs_companion_migrate(&ss->base, "snapshots", !(opts && opts->skip_schema_init),
                                   err);
    if (st != PGS_OK) {
        pgs_snapshots_close(ss);
        return st;
    }
    *out = ss;
    return PGS_OK;
}

void pgs_snapshots_close(pgs_snapshots_t *ss)
{
    if (!ss)
        return;
    pgs_companion_free_sql(ss->sql, SQL_COUNT);
    pgs_store_fini(&ss->base);
    free(ss);
}

pgs_status_t pgs_snapshots_migrate(pgs_snapshots_t *ss, pgs_error_t *err)
{
    return pgs_companion_migrate(&ss->base, "snapshots", 1, err);
}

pgs_status_t pgs_snapshots_save(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                int64_t version, const char *state_json, int schema_version,
                                int *written, pgs_error_t *err)
{
    if (written)
        *written = 0;
    pgs_status_t st = pgs_companion_check_key("stream", stream, err);
    if (st == PGS_OK)
        st = pgs_companion_check_version("version", version, err);
    if (st == PGS_OK)
        st = pgs_companion_check_version("schema_version", schema_version, err);
    if (st == PGS_OK)
        st = pgs_companion_check_key("state", state_json, err);
    if (st == PGS_OK)
        st = pgs_companion_check_size("state", strlen(state_json), ss->max_value, err);
    if (st != PGS_OK)
        return st;
    char v[PGS_I64_BUF], sv[PGS_I64_BUF];
    pgs_param_t p[4] = {{stream, -1},
                        {pgs_companion_i64(version, v), -1},
                        {pgs_companion_i64(schema_version, sv), -1},
                        {state_json, -1}};
    PGresult *r;
    st = pgs_companion_exec(&ss->base, tx, ss->sql[SQL_SAVE], 4, p, &r, err);
    if (st != PGS_OK)
        return st;
    if (written)
        *written = pgs_result_affected(r) > 0;
    PQclear(r);
    return PGS_OK;
}

pgs_status_t pgs_snapshots_load(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                pgs_rows_t **rows, pgs_error_t *err)
{
    *rows = NULL;
    pgs_status_t st = pgs_companion_check_key("stream", stream, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {stream, -1};
    PGresult *r;
    st = pgs_companion_exec(&ss->base, tx, ss->sql[SQL_LOAD], 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return pgs_error_set(err, PGS_ENOTFOUND, "no snapshot of stream '%.200s'", stream);
    }
    *rows = pgs_rows_wrap(r);
    return PGS_OK;
}

static pgs_status_t removed_count(pgs_snapshots_t *ss, pgs_conn_t *tx, int which, int nparams,
                                  const pgs_param_t *p, int64_t *removed, pgs_error_t *err)
{
    PGresult *r;
    pgs_status_t st = pgs_companion_exec(&ss->base, tx, ss->sql[which], nparams, p, &r, err);
    if (st != PGS_OK)
        return st;
    if (removed)
        *removed = pgs_result_affected(r);
    PQclear(r);
    return PGS_OK;
}

pgs_status_t pgs_snapshots_invalidate(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                      int64_t *removed, pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("stream", stream, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {stream, -1};
    return removed_count(ss, tx, SQL_INVALIDATE, 1, &p, removed, err);
}

pgs_status_t pgs_snapshots_invalidate_all(pgs_snapshots_t *ss, pgs_conn_t *tx, int64_t *removed,
                                          pgs_error_t *err)
{
    return removed_count(ss, tx, SQL_INVALIDATE_ALL, 0, NULL, removed, err);
}
