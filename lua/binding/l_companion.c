/* SPDX-License-Identifier: MIT
 * l_companion.c — shared pieces of the companion store bindings (see
 * l_companion.h).
 */
#include "l_companion.h"

#include <math.h>
#include <string.h>

void *pgs_l_store_check(lua_State *L, int idx, const char *mt)
{
    return pgs_l_handle_check(L, idx, mt, "attempt to use a closed connection");
}

int64_t pgs_l_int64(lua_State *L, int idx)
{
    lua_Number d = luaL_checknumber(L, idx);
    luaL_argcheck(L, d == floor(d) && fabs(d) < 9.2e18, idx, "integer expected");
    return (int64_t)d;
}

const char *pgs_l_opt_string(lua_State *L, int idx, const char *k)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    lua_getfield(L, idx, k);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING)
        s = pgs_l_checkcstr(L, -1, k);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "bad option '%s' (string expected, got %s)", k, luaL_typename(L, -1));
    lua_pop(L, 1); /* the string stays reachable through the options table */
    return s;
}

double pgs_l_opt_number(lua_State *L, int idx, const char *k, double dflt)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    lua_getfield(L, idx, k);
    double d = dflt;
    if (lua_type(L, -1) == LUA_TNUMBER)
        d = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "bad option '%s' (number expected, got %s)", k, luaL_typename(L, -1));
    lua_pop(L, 1);
    if (d < 0 || d != d)
        luaL_error(L, "bad option '%s' (must not be negative)", k);
    return d;
}

size_t pgs_l_opt_size(lua_State *L, int idx, const char *k)
{
    double d = pgs_l_opt_number(L, idx, k, 0);
    if (d != floor(d) || d > PGS_L_MAX_SIZE)
        luaL_error(L, "bad option '%s' (must be a whole number of bytes up to 1 GiB)", k);
    return (size_t)d;
}

int pgs_l_opt_bool(lua_State *L, int idx, const char *k)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    lua_getfield(L, idx, k);
    int b = 0;
    if (lua_type(L, -1) == LUA_TBOOLEAN)
        b = lua_toboolean(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "bad option '%s' (boolean expected, got %s)", k, luaL_typename(L, -1));
    lua_pop(L, 1);
    return b;
}

void pgs_l_push_first_row(lua_State *L, pgs_rows_t *res)
{
    pgs_l_push_rows(L, res); /* frees res */
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
}
