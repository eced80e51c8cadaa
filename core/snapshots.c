/* SPDX-License-Identifier: MIT
 * snapshots.c — the snapshot store: the latest state of each stream, with
 * the stream version it reflects and the schema version of its shape.
 * One upsert keeps the newest: a save of an older version than the stored
 * one changes nothing (writers racing with stale snapshots cannot roll a
 * newer one back).
 */
#include "companion.h"

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

static const pgs_companion_kind_t kind = {
    .series = "snapshots",
    .default_table = "pgstore_snapshots",
    .key = "stream",
    .not_found = "no snapshot of stream",
    .sql = templates,
    .nsql = SQL_COUNT,
};

struct pgs_snapshots {
    pgs_companion_t c;
};

pgs_status_t pgs_snapshots_open(pgs_pool_t *pool, const pgs_snapshots_opts_t *opts,
                                pgs_snapshots_t **out, pgs_error_t *err)
{
    pgs_companion_opts_t o = {0};
    if (opts)
        o = (pgs_companion_opts_t){opts->table, opts->skip_schema_init, opts->max_value_size};
    pgs_companion_t *c;
    pgs_status_t st = pgs_companion_open(&kind, pool, &o, &c, err);
    *out = (pgs_snapshots_t *)c;
    return st;
}

void pgs_snapshots_close(pgs_snapshots_t *ss)
{
    pgs_companion_close((pgs_companion_t *)ss);
}

pgs_status_t pgs_snapshots_migrate(pgs_snapshots_t *ss, pgs_error_t *err)
{
    return pgs_companion_migrate(&ss->c, 1, err);
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
        st = pgs_companion_check_size("state", strlen(state_json), ss->c.max_value, err);
    if (st != PGS_OK)
        return st;
    char v[PGS_I64_BUF], sv[PGS_I64_BUF];
    pgs_param_t p[4] = {{stream, -1},
                        {pgs_companion_i64(version, v), -1},
                        {pgs_companion_i64(schema_version, sv), -1},
                        {state_json, -1}};
    int64_t n = 0;
    st = pgs_companion_exec_count(&ss->c.base, tx, ss->c.sql[SQL_SAVE], 4, p, &n, err);
    if (written)
        *written = n > 0;
    return st;
}

pgs_status_t pgs_snapshots_load(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                pgs_rows_t **rows, pgs_error_t *err)
{
    return pgs_companion_load(&ss->c, tx, SQL_LOAD, stream, rows, err);
}

pgs_status_t pgs_snapshots_invalidate(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                      int64_t *removed, pgs_error_t *err)
{
    return pgs_companion_remove(&ss->c, tx, SQL_INVALIDATE, stream, removed, err);
}

pgs_status_t pgs_snapshots_invalidate_all(pgs_snapshots_t *ss, pgs_conn_t *tx, int64_t *removed,
                                          pgs_error_t *err)
{
    return pgs_companion_remove_all(&ss->c, tx, SQL_INVALIDATE_ALL, removed, err);
}
