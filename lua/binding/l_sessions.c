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
 */
#include "l_companion.h"

static pgs_sessions_t *check(lua_State *L)
{
    return pgs_l_store_check(L, 1, PGS_SESSIONS_MT);
}

static int l_sessions_new(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    pgs_sessions_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .max_value_size = pgs_l_opt_size(L, 2, "max_value_size"),
    };
    pgs_l_handle_t *u = pgs_l_handle_new(L, PGS_SESSIONS_MT);
    pgs_error_t err;
    if (pgs_sessions_open(pool, &o, (pgs_sessions_t **)&u->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_sessions_close(lua_State *L)
{
    pgs_sessions_close(pgs_l_handle_take(L, 1, PGS_SESSIONS_MT));
    return 0;
}

static int l_sessions_migrate(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_sessions_migrate(check(L), &err), &err);
}

static int l_sessions_save(lua_State *L)
{
    pgs_sessions_t *s = check(L);
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
    pgs_sessions_t *s = check(L);
    pgs_error_t err;
    const char *id = pgs_l_text(L, 2, "session id", &err);
    pgs_conn_t *tx = pgs_l_optconn(L, 3);
    if (!id)
        return pgs_l_push_error(L, &err);
    pgs_rows_t *res;
    pgs_status_t st = pgs_sessions_load(s, tx, id, &res, &err);
    if (st == PGS_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    pgs_l_push_first_row(L, res);
    return 1;
}

static int l_sessions_delete(lua_State *L)
{
    pgs_sessions_t *s = check(L);
    pgs_error_t err;
    const char *id = pgs_l_text(L, 2, "session id", &err);
    pgs_conn_t *tx = pgs_l_optconn(L, 3);
    if (!id)
        return pgs_l_push_error(L, &err);
    int64_t n = 0;
    pgs_status_t st = pgs_sessions_delete(s, tx, id, &n, &err);
    return pgs_l_push_count(L, st, n, &err);
}

void pgs_l_sessions_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"migrate", l_sessions_migrate},
        {"save", l_sessions_save},
        {"load", l_sessions_load},
        {"delete", l_sessions_delete},
        {"close", l_sessions_close},
        {NULL, NULL}};
    pgs_l_class_register(L, PGS_SESSIONS_MT, methods, l_sessions_close, NULL);
    lua_pushcfunction(L, l_sessions_new);
    lua_setfield(L, -2, "sessions");
}
