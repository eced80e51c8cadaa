/* SPDX-License-Identifier: MIT
 * lerror.c — runtime failures as Lua values: `nil, err` where err is a table
 * { code, message, and each structured field of pgs_error_t that is set:
 * sqlstate, detail, hint, constraint, schema, table, column, datatype,
 * expected, actual, batch, phase } whose __tostring is the message. The
 * metatable is shared with the Lua side as core.error_mt.
 */
#include "binding.h"

static char error_mt_key; /* registry key: the error metatable */

/* Sets t[name] = text unless text is empty. */
static void set_text(lua_State *L, const char *name, const char *text)
{
    if (!text || !text[0])
        return;
    lua_pushstring(L, text);
    lua_setfield(L, -2, name);
}

static void set_number(lua_State *L, const char *name, int64_t v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, name);
}

void pgs_l_error_table(lua_State *L, const pgs_error_t *err)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, pgs_status_name(err->code));
    lua_setfield(L, -2, "code");
    lua_pushstring(L, err->message);
    lua_setfield(L, -2, "message");
    set_text(L, "sqlstate", err->sqlstate);
    set_text(L, "detail", err->detail);
    set_text(L, "hint", err->hint);
    set_text(L, "constraint", err->constraint);
    set_text(L, "schema", err->schema);
    set_text(L, "table", err->table);
    set_text(L, "column", err->column);
    set_text(L, "datatype", err->datatype);
    set_text(L, "phase", err->phase);
    if (err->has_versions) {
        set_number(L, "expected", err->expected);
        set_number(L, "actual", err->actual);
    }
    if (err->batch > 0)
        set_number(L, "batch", err->batch);
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
    pgs_l_metatable_hide(L);
    lua_pushlightuserdata(L, &error_mt_key);
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
}
