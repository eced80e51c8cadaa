/* SPDX-License-Identifier: MIT
 * lerror.c — runtime failures as Lua values: `nil, err` where err is a table
 * { code, message, sqlstate?, expected?, actual? } whose __tostring is the
 * message. The metatable is shared with the Lua side as core.error_mt.
 */
#include "binding.h"

static char error_mt_key; /* registry key: the error metatable */

void pgs_l_error_table(lua_State *L, const pgs_error_t *err)
{
    lua_createtable(L, 0, 5);
    lua_pushstring(L, pgs_status_name(err->code));
    lua_setfield(L, -2, "code");
    lua_pushstring(L, err->message);
    lua_setfield(L, -2, "message");
    if (err->sqlstate[0]) {
        lua_pushstring(L, err->sqlstate);
        lua_setfield(L, -2, "sqlstate");
    }
    if (err->has_versions) {
        lua_pushnumber(L, (lua_Number)err->expected);
        lua_setfield(L, -2, "expected");
        lua_pushnumber(L, (lua_Number)err->actual);
        lua_setfield(L, -2, "actual");
    }
    lua_pushlightuserdata(L, &error_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setmetatable(L, -2);
}

int pgs_l_push_error(lua_State *L, const pgs_error_t *err)
{
    lua_pushnil(L);
    pgs_l_error_table(L, err);
    return 2;
}

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, 1, "code");
    }
    if (!lua_isstring(L, -1))
        lua_pushliteral(L, "pgstore error");
    return 1;
}

/* Leaves the metatable on the stack for the module to publish. */
void pgs_l_error_open(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "pgstore.error");
    lua_setfield(L, -2, "__name");
    lua_pushlightuserdata(L, &error_mt_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}
