/* SPDX-License-Identifier: MIT
 * l_checkpoints.c — consumer checkpoints as pgstore.core userdata.
 *
 *   core.checkpoints(pool, { table=, skip_schema_init=, store= }) → cp | nil, err
 *   cp:migrate() → true
 *   cp:store() → "schema.table", the event store it serves (resolved)
 *   cp:load(consumer, [conn]) → cursor | nil
 *   cp:save(consumer, cursor, expected, [conn]) → true
 *       expected: nil = unconditional, false = none stored yet, n = exactly n
 *   cp:delete(consumer, [conn]) → removed
 *   cp:list([conn]) → { { consumer=, cursor=, time= }, … }
 *   cp:close()
 *
 * The constructor, migrate and close come from l_companion.c.
 */
#include "l_companion.h"

static pgs_status_t open_store(lua_State *L, pgs_pool_t *pool, void **out, pgs_error_t *err)
{
    pgs_checkpoints_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .store = pgs_l_opt_string(L, 2, "store"),
    };
    pgs_checkpoints_t *cp;
    pgs_status_t st = pgs_checkpoints_open(pool, &o, &cp, err);
    *out = cp;
    return st;
}

static void close_store(void *cp)
{
    pgs_checkpoints_close(cp);
}

static pgs_status_t migrate_store(void *cp, pgs_error_t *err)
{
    return pgs_checkpoints_migrate(cp, err);
}

static int l_checkpoints_load(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_CHECKPOINTS_MT, "consumer", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t pos;
    pgs_status_t st = pgs_checkpoints_load(a.store, a.tx, a.key, &pos, &a.err);
    if (st == PGS_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (st != PGS_OK)
        return pgs_l_push_error(L, &a.err);
    lua_pushnumber(L, (lua_Number)pos);
    return 1;
}

static int l_checkpoints_save(lua_State *L)
{
    pgs_checkpoints_t *cp = pgs_l_store_check(L, 1, PGS_CHECKPOINTS_MT);
    pgs_error_t err;
    const char *consumer = pgs_l_text(L, 2, "consumer", &err);
    int64_t pos = pgs_l_int64(L, 3);
    pgs_checkpoints_expect_t expect = PGS_CHECKPOINT_ANY;
    int64_t expected = 0;
    if (lua_type(L, 4) == LUA_TBOOLEAN && !lua_toboolean(L, 4)) {
        expect = PGS_CHECKPOINT_NONE;
    } else if (!lua_isnoneornil(L, 4)) {
        luaL_argcheck(L, lua_type(L, 4) == LUA_TNUMBER, 4, "number, false or nil expected");
        expect = PGS_CHECKPOINT_EXACT;
        expected = pgs_l_int64(L, 4);
    }
    pgs_conn_t *tx = pgs_l_optconn(L, 5);
    if (!consumer)
        return pgs_l_push_error(L, &err);
    pgs_status_t st = pgs_checkpoints_save(cp, tx, consumer, pos, expect, expected, &err);
    return pgs_l_push_status(L, st, &err);
}

static int l_checkpoints_delete(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_CHECKPOINTS_MT, "consumer", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t n = 0;
    pgs_status_t st = pgs_checkpoints_delete(a.store, a.tx, a.key, &n, &a.err);
    return pgs_l_push_count(L, st, n, &a.err);
}

static int l_checkpoints_store(lua_State *L)
{
    pgs_checkpoints_t *cp = pgs_l_store_check(L, 1, PGS_CHECKPOINTS_MT);
    lua_pushstring(L, pgs_checkpoints_store(cp));
    return 1;
}

static int l_checkpoints_list(lua_State *L)
{
    pgs_checkpoints_t *cp = pgs_l_store_check(L, 1, PGS_CHECKPOINTS_MT);
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    pgs_error_t err;
    pgs_rows_t *res;
    if (pgs_checkpoints_list(cp, tx, &res, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    pgs_l_push_rows(L, res);
    return 1;
}

void pgs_l_checkpoints_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"load", l_checkpoints_load},
        {"save", l_checkpoints_save},
        {"delete", l_checkpoints_delete},
        {"list", l_checkpoints_list},
        {"store", l_checkpoints_store},
        {NULL, NULL}};
    static const pgs_l_store_class_t cls = {
        "checkpoints", PGS_CHECKPOINTS_MT, open_store, close_store, migrate_store, methods};
    pgs_l_store_register(L, &cls);
}
