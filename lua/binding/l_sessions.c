/* SPDX-License-Identifier: MIT
 * l_sessions.c — the session store as pgstore.core userdata.
 *
 *   core.sessions(pool, { table=, skip_schema_init=, max_value_size= })
 *       → sess | nil, err
 *   sess:migrate() → true
 *   sess:save(id, version, state_json, history_json|nil, [conn]) → true
 *       | nil, err (code "conflict", expected = version, actual = stored)
 *   sess:load(id, [conn]) → { version=, state=json, history=json, time= } | nil
 *   sess:delete(id, [conn]) → removed
 *   sess:close()
 *
 * The constructor, migrate and close come from l_companion.c.
 */
#include "l_companion.h"

static pgs_status_t open_store(lua_State *L, pgs_pool_t *pool, void **out, pgs_error_t *err)
{
    pgs_sessions_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .max_value_size = pgs_l_opt_size(L, 2, "max_value_size"),
    };
    pgs_sessions_t *s;
    pgs_status_t st = pgs_sessions_open(pool, &o, &s, err);
    *out = s;
    return st;
}

static void close_store(void *s)
{
    pgs_sessions_close(s);
}

static pgs_status_t migrate_store(void *s, pgs_error_t *err)
{
    return pgs_sessions_migrate(s, err);
}

static int l_sessions_save(lua_State *L)
{
    pgs_sessions_t *s = pgs_l_store_check(L, 1, PGS_SESSIONS_MT);
    pgs_error_t err, serr, herr;
    const char *id = pgs_l_text(L, 2, "session id", &err);
    int64_t version = pgs_l_int64(L, 3);
    const char *state = pgs_l_text(L, 4, "state", &serr);
    const char *history = lua_isnoneornil(L, 5) ? "[]" : pgs_l_text(L, 5, "history", &herr);
    pgs_conn_t *tx = pgs_l_optconn(L, 6);
    if (!id)
        return pgs_l_push_error(L, &err);
    if (!state)
        return pgs_l_push_error(L, &serr);
    if (!history)
        return pgs_l_push_error(L, &herr);
    return pgs_l_push_status(L, pgs_sessions_save(s, tx, id, version, state, history, &err), &err);
}

static int l_sessions_load(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_SESSIONS_MT, "session id", &a))
        return pgs_l_push_error(L, &a.err);
    pgs_rows_t *res = NULL;
    pgs_status_t st = pgs_sessions_load(a.store, a.tx, a.key, &res, &a.err);
    return pgs_l_push_loaded(L, st, res, 1, &a.err);
}

static int l_sessions_delete(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_SESSIONS_MT, "session id", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t n = 0;
    pgs_status_t st = pgs_sessions_delete(a.store, a.tx, a.key, &n, &a.err);
    return pgs_l_push_count(L, st, n, &a.err);
}

void pgs_l_sessions_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"save", l_sessions_save},
        {"load", l_sessions_load},
        {"delete", l_sessions_delete},
        {NULL, NULL}};
    static const pgs_l_store_class_t cls = {
        "sessions", PGS_SESSIONS_MT, open_store, close_store, migrate_store, methods};
    pgs_l_store_register(L, &cls);
}
