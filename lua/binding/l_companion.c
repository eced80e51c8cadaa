/* SPDX-License-Identifier: MIT
 * l_companion.c — shared pieces of the companion store bindings (see
 * l_companion.h).
 */
#include "l_companion.h"

#include <math.h>
#include <string.h>

pgs_lstore_t *pgs_l_store_new(lua_State *L, const char *mt)
{
    pgs_lstore_t *u = lua_newuserdata(L, sizeof *u);
    u->store = NULL;
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return u;
}

void *pgs_l_store_check(lua_State *L, int idx, const char *mt)
{
    pgs_lstore_t *u = luaL_checkudata(L, idx, mt);
    if (!u->store)
        luaL_error(L, "attempt to use a closed connection");
    return u->store;
}

void *pgs_l_store_take(lua_State *L, int idx, const char *mt)
{
    pgs_lstore_t *u = luaL_checkudata(L, idx, mt);
    void *s = u->store;
    u->store = NULL;
    return s;
}

static int store_tostring(lua_State *L)
{
    const char *mt = lua_tostring(L, lua_upvalueindex(1));
    pgs_lstore_t *u = luaL_checkudata(L, 1, mt);
    if (u->store)
        lua_pushfstring(L, "%s (%p)", mt, u->store);
    else
        lua_pushfstring(L, "%s (closed)", mt);
    return 1;
}

void pgs_l_store_register(lua_State *L, const char *mt, const luaL_Reg *methods,
                          lua_CFunction gc)
{
    luaL_newmetatable(L, mt);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushstring(L, mt);
    lua_pushcclosure(L, store_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

int64_t pgs_l_int64(lua_State *L, int idx)
{
    lua_Number d = luaL_checknumber(L, idx);
    luaL_argcheck(L, d == floor(d) && fabs(d) < 9.2e18, idx, "integer expected");
    return (int64_t)d;
}

void pgs_l_push_first_row(lua_State *L, PGresult *res)
{
    pgs_l_push_rows(L, res); /* frees res */
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
}

int pgs_l_push_status(lua_State *L, pgs_status_t st, const pgs_error_t *err)
{
    if (st != PGS_OK)
        return pgs_l_push_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

int pgs_l_push_count(lua_State *L, pgs_status_t st, int64_t n, const pgs_error_t *err)
{
    if (st != PGS_OK)
        return pgs_l_push_error(L, err);
    lua_pushnumber(L, (lua_Number)n);
    return 1;
}
