/* SPDX-License-Identifier: MIT
 * l_checkpoints.c — consumer checkpoints as pgstore.core userdata.
 *
 *   core.checkpoints(pool, { table=, skip_schema_init= }) → cp | nil, err
 *   cp:migrate() → true
 *   cp:load(consumer, [conn]) → cursor | nil
 *   cp:save(consumer, cursor, expected, [conn]) → true
 *       expected: nil = unconditional, false = none stored yet, n = exactly n
 *   cp:delete(consumer, [conn]) → removed
 *   cp:list([conn]) → { { consumer=, cursor=, time= }, … }
 *   cp:close()
 */
#include "l_companion.h"

static pgs_checkpoints_t *check(lua_State *L)
{
    return pgs_l_store_check(L, 1, PGS_CHECKPOINTS_MT);
}

static int l_checkpoints_new(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    pgs_checkpoints_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
    };
    pgs_l_handle_t *u = pgs_l_handle_new(L, PGS_CHECKPOINTS_MT);
    pgs_error_t err;
    if (pgs_checkpoints_open(pool, &o, (pgs_checkpoints_t **)&u->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_checkpoints_close(lua_State *L)
{
    pgs_checkpoints_close(pgs_l_handle_take(L, 1, PGS_CHECKPOINTS_MT));
    return 0;
}

static int l_checkpoints_migrate(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_checkpoints_migrate(check(L), &err), &err);
}

static int l_checkpoints_load(lua_State *L)
{
    pgs_checkpoints_t *cp = check(L);
    pgs_error_t err;
    const char *consumer = pgs_l_text(L, 2, "consumer", &err);
    pgs_conn_t *tx = pgs_l_optconn(L, 3);
    if (!consumer)
        return pgs_l_push_error(L, &err);
    int64_t pos;
    pgs_status_t st = pgs_checkpoints_load(cp, tx, consumer, &pos, &err);
    if (st == PGS_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushnumber(L, (lua_Number)pos);
    return 1;
}

static int l_checkpoints_save(lua_State *L)
{
    pgs_checkpoints_t *cp = check(L);
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
    pgs_checkpoints_t *cp = check(L);
    pgs_error_t err;
    const char *consumer = pgs_l_text(L, 2, "consumer", &err);
    pgs_conn_t *tx = pgs_l_optconn(L, 3);
    if (!consumer)
        return pgs_l_push_error(L, &err);
    int64_t n = 0;
    pgs_status_t st = pgs_checkpoints_delete(cp, tx, consumer, &n, &err);
    return pgs_l_push_count(L, st, n, &err);
}

static int l_checkpoints_list(lua_State *L)
{
    pgs_checkpoints_t *cp = check(L);
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
        {"migrate", l_checkpoints_migrate},
        {"load", l_checkpoints_load},
        {"save", l_checkpoints_save},
        {"delete", l_checkpoints_delete},
        {"list", l_checkpoints_list},
        {"close", l_checkpoints_close},
        {NULL, NULL}};
    pgs_l_class_register(L, PGS_CHECKPOINTS_MT, methods, l_checkpoints_close, NULL);
    lua_pushcfunction(L, l_checkpoints_new);
    lua_setfield(L, -2, "checkpoints");
}
