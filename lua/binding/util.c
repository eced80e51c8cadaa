/* SPDX-License-Identifier: MIT
 * util.c — helpers shared by every l_*.c file of the binding (see util.h):
 * handle lifetime and closed checks, __tostring, status and count results,
 * owned buffers.
 */
#include "binding.h"

#include <stdlib.h>

/* ---- handles ------------------------------------------------------------------ */

pgs_l_handle_t *pgs_l_handle_new(lua_State *L, const char *mt)
{
    pgs_l_handle_t *h = lua_newuserdata(L, sizeof *h);
    h->ptr = NULL;
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return h;
}

void *pgs_l_handle_get(lua_State *L, int idx, const char *mt)
{
    pgs_l_handle_t *h = luaL_checkudata(L, idx, mt);
    return h->ptr;
}

void *pgs_l_handle_check(lua_State *L, int idx, const char *mt, const char *closed)
{
    void *p = pgs_l_handle_get(L, idx, mt);
    if (!p)
        luaL_error(L, "%s", closed);
    return p;
}

void *pgs_l_handle_take(lua_State *L, int idx, const char *mt)
{
    pgs_l_handle_t *h = luaL_checkudata(L, idx, mt);
    void *p = h->ptr;
    h->ptr = NULL;
    return p;
}

/* __tostring for handles; upvalue 1 is the metatable name. */
static int handle_tostring(lua_State *L)
{
    const char *mt = lua_tostring(L, lua_upvalueindex(1));
    void *p = pgs_l_handle_get(L, 1, mt);
    if (p)
        lua_pushfstring(L, "%s (%p)", mt, p);
    else
        lua_pushfstring(L, "%s (closed)", mt);
    return 1;
}

void pgs_l_metatable_hide(lua_State *L)
{
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
}

void pgs_l_class_register(lua_State *L, const char *mt, const luaL_Reg *methods,
                          lua_CFunction gc, lua_CFunction tostring)
{
    luaL_newmetatable(L, mt);
    pgs_l_metatable_hide(L);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    if (tostring) {
        lua_pushcfunction(L, tostring);
    } else {
        lua_pushstring(L, mt);
        lua_pushcclosure(L, handle_tostring, 1);
    }
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

/* ---- results -------------------------------------------------------------------- */

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

void pgs_l_set_number(lua_State *L, const char *k, lua_Number v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

void pgs_l_set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

void pgs_l_set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

void pgs_l_set_error(lua_State *L, const char *k, const pgs_error_t *err)
{
    if (err->code == PGS_OK)
        return;
    pgs_l_error_table(L, err);
    lua_setfield(L, -2, k);
}

/* ---- owned buffers ------------------------------------------------------------- */

static int owned_gc(lua_State *L)
{
    pgs_l_free_owned(L, 1);
    return 0;
}

void pgs_l_own(lua_State *L, void *p)
{
    void **box = lua_newuserdata(L, sizeof *box);
    *box = p;
    luaL_getmetatable(L, PGS_OWNED_MT);
    lua_setmetatable(L, -2);
}

void pgs_l_free_owned(lua_State *L, int idx)
{
    void **box = luaL_checkudata(L, idx, PGS_OWNED_MT);
    free(*box);
    *box = NULL;
}

void pgs_l_util_open(lua_State *L)
{
    luaL_newmetatable(L, PGS_OWNED_MT);
    pgs_l_metatable_hide(L);
    lua_pushcfunction(L, owned_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
