/* SPDX-License-Identifier: MIT
 * l_exec_checkpoints.c — execution checkpoints as pgstore.core userdata.
 *
 *   core.exec_checkpoints(pool, { table=, skip_schema_init=, max_value_size= })
 *       → xs | nil, err
 *   xs:migrate() → true
 *   xs:save(exec_id, checkpoint_json, [conn]) → true
 *   xs:load(exec_id, [conn]) → { checkpoint = json, time = } | nil, err (not_found)
 *   xs:list([conn]) → { exec_id, … }
 *   xs:delete(exec_id, [conn]) → removed
 *   xs:close()
 *
 * The constructor, migrate and close come from l_companion.c.
 */
#include "l_companion.h"

static pgs_status_t open_store(lua_State *L, pgs_pool_t *pool, void **out, pgs_error_t *err)
{
    pgs_exec_checkpoints_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .max_value_size = pgs_l_opt_size(L, 2, "max_value_size"),
    };
    pgs_exec_checkpoints_t *xs;
    pgs_status_t st = pgs_exec_checkpoints_open(pool, &o, &xs, err);
    *out = xs;
    return st;
}

static void close_store(void *xs)
{
    pgs_exec_checkpoints_close(xs);
}

static pgs_status_t migrate_store(void *xs, pgs_error_t *err)
{
    return pgs_exec_checkpoints_migrate(xs, err);
}

static int l_exec_checkpoints_save(lua_State *L)
{
    pgs_exec_checkpoints_t *xs = pgs_l_store_check(L, 1, PGS_EXEC_CHECKPOINTS_MT);
    pgs_error_t err, cerr;
    const char *id = pgs_l_text(L, 2, "execution id", &err);
    const char *json = pgs_l_text(L, 3, "checkpoint", &cerr);
    pgs_conn_t *tx = pgs_l_optconn(L, 4);
    if (!id || !json)
        return pgs_l_push_error(L, id ? &cerr : &err);
    return pgs_l_push_status(L, pgs_exec_checkpoints_save(xs, tx, id, json, &err), &err);
}

static int l_exec_checkpoints_load(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_EXEC_CHECKPOINTS_MT, "execution id", &a))
        return pgs_l_push_error(L, &a.err);
    pgs_rows_t *res = NULL;
    pgs_status_t st = pgs_exec_checkpoints_load(a.store, a.tx, a.key, &res, &a.err);
    return pgs_l_push_loaded(L, st, res, 0, &a.err);
}

static int l_exec_checkpoints_list(lua_State *L)
{
    pgs_exec_checkpoints_t *xs = pgs_l_store_check(L, 1, PGS_EXEC_CHECKPOINTS_MT);
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    pgs_error_t err;
    pgs_rows_t *res;
    if (pgs_exec_checkpoints_list(xs, tx, &res, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    int n = pgs_rows_count(res);
    pgs_l_push_rows(L, res); /* frees res, even if converting raises */
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_getfield(L, -1, "exec_id");
        lua_rawseti(L, -3, i);
        lua_pop(L, 1);
    }
    return 1;
}

static int l_exec_checkpoints_delete(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_EXEC_CHECKPOINTS_MT, "execution id", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t n = 0;
    pgs_status_t st = pgs_exec_checkpoints_delete(a.store, a.tx, a.key, &n, &a.err);
    return pgs_l_push_count(L, st, n, &a.err);
}

void pgs_l_exec_checkpoints_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"save", l_exec_checkpoints_save},
        {"load", l_exec_checkpoints_load},
        {"list", l_exec_checkpoints_list},
        {"delete", l_exec_checkpoints_delete},
        {NULL, NULL}};
    static const pgs_l_store_class_t cls = {"exec_checkpoints", PGS_EXEC_CHECKPOINTS_MT,
                                            open_store,         close_store,
                                            migrate_store,      methods};
    pgs_l_store_register(L, &cls);
}
