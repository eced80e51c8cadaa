/* SPDX-License-Identifier: MIT
 * sessions.c — the session store: JSONB state and history per session id
 * with optimistic concurrency. The version check and the write are ONE
 * statement,
 *
 *   INSERT … ON CONFLICT (id) DO UPDATE … WHERE stored.version < EXCLUDED.version
 *
 * with no explicit transaction and no SELECT … FOR UPDATE: when two
 * writers race, the second waits on the first's row lock, then re-checks
 * the WHERE against the committed row, finds the version no longer lower,
 * and writes nothing. Zero rows affected is the conflict.
 */
#include "companion.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

enum { SQL_SAVE, SQL_LOAD, SQL_VERSION, SQL_DELETE, SQL_COUNT };

/* Keep in the same order as the enum above. */
static const char *const templates[SQL_COUNT] = {
    "INSERT INTO @table@ AS stored (id, version, state, history, updated_at)"
    " VALUES ($1, $2::bigint, $3::jsonb, $4::jsonb, now())"
    " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state,"
    " history = EXCLUDED.history, updated_at = EXCLUDED.updated_at"
    " WHERE stored.version < EXCLUDED.version",

    "SELECT version, state, history, updated_at AS time FROM @table@ WHERE id = $1",

    "SELECT version FROM @table@ WHERE id = $1",

    "DELETE FROM @table@ WHERE id = $1",
};

static const pgs_companion_kind_t kind = {
    .series = "sessions",
    .default_table = "pgstore_sessions",
    .key = "session id",
    .not_found = "no session",
    .sql = templates,
    .nsql = SQL_COUNT,
};

struct pgs_sessions {
    pgs_companion_t c;
};

pgs_status_t pgs_sessions_open(pgs_pool_t *pool, const pgs_sessions_opts_t *opts,
                               pgs_sessions_t **out, pgs_error_t *err)
{
    pgs_companion_opts_t o = {0};
    if (opts)
        o = (pgs_companion_opts_t){opts->table, opts->skip_schema_init, opts->max_value_size};
    pgs_companion_t *c;
    pgs_status_t st = pgs_companion_open(&kind, pool, &o, &c, err);
    *out = (pgs_sessions_t *)c;
    return st;
}

void pgs_sessions_close(pgs_sessions_t *s)
{
    pgs_companion_close((pgs_companion_t *)s);
}

pgs_status_t pgs_sessions_migrate(pgs_sessions_t *s, pgs_error_t *err)
{
    return pgs_companion_migrate(&s->c, 1, err);
}

/* After a save that wrote nothing: report the stored version. It is read
 * after the fact, so it only informs; the decision was the save's. */
static pgs_status_t conflict(pgs_sessions_t *s, pgs_conn_t *tx, const char *id, int64_t version,
                             pgs_error_t *err)
{
    PGresult *r;
    pgs_status_t st = pgs_companion_keyed(&s->c, tx, SQL_VERSION, id, &r, err);
    if (st != PGS_OK)
        return st;
    int found = PQntuples(r) > 0;
    int64_t actual = found ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    if (!found)
        return pgs_error_set(err, PGS_ECONFLICT,
                             "session '%.200s' was deleted while version %lld was saved", id,
                             (long long)version);
    pgs_error_set(err, PGS_ECONFLICT,
                  "session '%.200s' is at version %lld: version %lld is not newer", id,
                  (long long)actual, (long long)version);
    if (err) {
        err->has_versions = 1;
        err->expected = version;
        err->actual = actual;
    }
    return PGS_ECONFLICT;
}

pgs_status_t pgs_sessions_save(pgs_sessions_t *s, pgs_conn_t *tx, const char *id,
                               int64_t version, const char *state_json,
                               const char *history_json, pgs_error_t *err)
{
    if (!history_json)
        history_json = "[]";
    pgs_status_t st = pgs_companion_check_key("session id", id, err);
    if (st == PGS_OK)
        st = pgs_companion_check_version("version", version, err);
    if (st == PGS_OK)
        st = pgs_companion_check_key("state", state_json, err);
    if (st == PGS_OK)
        st = pgs_utf8_check("history", history_json, strlen(history_json), err);
    if (st == PGS_OK)
        st = pgs_companion_check_size("state and history",
                                      strlen(state_json) + strlen(history_json), s->c.max_value,
                                      err);
    if (st != PGS_OK)
        return st;
    char v[PGS_I64_BUF];
    pgs_param_t p[4] = {
        {id, -1}, {pgs_companion_i64(version, v), -1}, {state_json, -1}, {history_json, -1}};
    int64_t n = 0;
    st = pgs_companion_exec_count(&s->c.base, tx, s->c.sql[SQL_SAVE], 4, p, &n, err);
    if (st != PGS_OK)
        return st;
    return n == 0 ? conflict(s, tx, id, version, err) : PGS_OK;
}

pgs_status_t pgs_sessions_load(pgs_sessions_t *s, pgs_conn_t *tx, const char *id,
                               pgs_rows_t **rows, pgs_error_t *err)
{
    return pgs_companion_load(&s->c, tx, SQL_LOAD, id, rows, err);
}

pgs_status_t pgs_sessions_delete(pgs_sessions_t *s, pgs_conn_t *tx, const char *id,
                                 int64_t *removed, pgs_error_t *err)
{
    return pgs_companion_remove(&s->c, tx, SQL_DELETE, id, removed, err);
}
