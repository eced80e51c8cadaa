/* SPDX-License-Identifier: MIT
 * opts.c — reading options tables in the binding (see opts.h). The Lua API
 * (pgstore.options) refuses unknown options and wrong types first, at the
 * user's line; these checks keep direct users of pgstore.core from handing
 * the core a value of the wrong type, or a number out of the core's range
 * (the same rules, from pgstore.h, that pgstore.options applies).
 */
#include "opts.h"

#include <math.h>
#include <string.h>

/* A stack index that stays right while values are pushed. */
static int absolute(lua_State *L, int t)
{
    return t < 0 && t > LUA_REGISTRYINDEX ? lua_gettop(L) + t + 1 : t;
}

/* Pushes field k of the options table at t (nil when there is no table)
 * and returns its type. */
static int push_field(lua_State *L, int t, const char *k)
{
    if (lua_isnoneornil(L, t)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    luaL_checktype(L, t, LUA_TTABLE);
    lua_getfield(L, t, k);
    return lua_type(L, -1);
}

static void type_error(lua_State *L, const char *k, const char *expected)
{
    luaL_error(L, "bad option '%s' (%s expected, got %s)", k, expected, luaL_typename(L, -1));
}

const char *pgs_l_opt_string(lua_State *L, int t, const char *k)
{
    t = absolute(L, t);
    int type = push_field(L, t, k);
    const char *s = NULL;
    if (type == LUA_TSTRING)
        s = pgs_l_checkcstr(L, -1, k);
    else if (type != LUA_TNIL)
        type_error(L, k, "string");
    lua_pop(L, 1); /* the string stays reachable through the options table */
    return s;
}

double pgs_l_opt_number(lua_State *L, int t, const char *k, double dflt)
{
    t = absolute(L, t);
    int type = push_field(L, t, k);
    double d = dflt;
    if (type == LUA_TNUMBER)
        d = lua_tonumber(L, -1);
    else if (type != LUA_TNIL)
        type_error(L, k, "number");
    lua_pop(L, 1);
    return d;
}

double pgs_l_opt_nonneg(lua_State *L, int t, const char *k, double dflt)
{
    double d = pgs_l_opt_number(L, t, k, dflt);
    if (d < 0 || d != d)
        luaL_error(L, "bad option '%s' (must not be negative)", k);
    return d;
}

double pgs_l_opt_seconds(lua_State *L, int t, const char *k, double dflt)
{
    double d = pgs_l_opt_number(L, t, k, dflt);
    if (!(d >= 0 && d <= PGS_SECONDS_MAX))
        luaL_error(L, "bad option '%s' (must be a number of seconds from 0 to %.0f)", k, PGS_SECONDS_MAX);
    return d;
}

int pgs_l_opt_int(lua_State *L, int t, const char *k, int lo, int hi, int dflt)
{
    double d = pgs_l_opt_number(L, t, k, dflt);
    if (!(d >= lo && d <= hi) || d != floor(d))
        luaL_error(L, "bad option '%s' (must be a whole number from %d to %d)", k, lo, hi);
    return (int)d;
}

size_t pgs_l_opt_size(lua_State *L, int t, const char *k)
{
    double d = pgs_l_opt_nonneg(L, t, k, 0);
    if (d != floor(d) || d > PGS_L_MAX_SIZE)
        luaL_error(L, "bad option '%s' (must be a whole number of bytes up to 1 GiB)", k);
    return (size_t)d;
}

int pgs_l_opt_bool(lua_State *L, int t, const char *k)
{
    t = absolute(L, t);
    int type = push_field(L, t, k);
    int b = 0;
    if (type == LUA_TBOOLEAN)
        b = lua_toboolean(L, -1);
    else if (type != LUA_TNIL)
        type_error(L, k, "boolean");
    lua_pop(L, 1);
    return b;
}

int pgs_l_opt_enum(lua_State *L, int t, const char *k, const char *dflt, const char *const names[])
{
    const char *s = pgs_l_opt_string(L, t, k);
    if (!s)
        s = dflt;
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], s) == 0)
            return i;
    }
    return luaL_error(L, "bad option '%s' (invalid value '%s')", k, s);
}
