/* SPDX-License-Identifier: MIT
 * l_companion.c — shared pieces of the companion store bindings (see
 * l_companion.h): the class registrar and the keyed-method helpers.
 */
#include "l_companion.h"

#include <math.h>
#include <string.h>

/* ---- the class ---------------------------------------------------------------
 * Upvalue 1 of the functions below is the class, a light userdata. */

static const pgs_l_store_class_t *class_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* core.<name>(pool, opts) → store | nil, err */
static int l_store_new(lua_State *L)
{
    const pgs_l_store_class_t *cls = class_of(L);
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    pgs_l_handle_t *u = pgs_l_handle_new(L, cls->mt);
    pgs_error_t err;
    if (cls->open(L, pool, &u->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

/* store:close() and __gc: closing twice is harmless. */
static int l_store_close(lua_State *L)
{
    const pgs_l_store_class_t *cls = class_of(L);
    cls->close(pgs_l_handle_take(L, 1, cls->mt));
    return 0;
}

/* store:migrate() → true | nil, err */
static int l_store_migrate(lua_State *L)
{
    const pgs_l_store_class_t *cls = class_of(L);
    pgs_error_t err;
    void *store = pgs_l_store_check(L, 1, cls->mt);
    return pgs_l_push_status(L, cls->migrate(store, &err), &err);
}

/* t[k] = f with the class as its upvalue; t at the top of the stack. */
static void set_method(lua_State *L, const pgs_l_store_class_t *cls, const char *k,
                       lua_CFunction f)
{
    lua_pushlightuserdata(L, (void *)cls);
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -2, k);
}

void pgs_l_store_register(lua_State *L, const pgs_l_store_class_t *cls)
{
    /* The metatable as every class has it; then __gc, close and migrate
     * as closures that know the class. */
    pgs_l_class_register(L, cls->mt, cls->methods, l_store_close, NULL);
    luaL_getmetatable(L, cls->mt);
    set_method(L, cls, "__gc", l_store_close);
    lua_getfield(L, -1, "__index");
    set_method(L, cls, "close", l_store_close);
    set_method(L, cls, "migrate", l_store_migrate);
    lua_pop(L, 2);
    set_method(L, cls, cls->name, l_store_new);
}

/* ---- arguments and results ----------------------------------------------------- */

void *pgs_l_store_check(lua_State *L, int idx, const char *mt)
{
    return pgs_l_handle_check(L, idx, mt, "attempt to use a closed connection");
}

int pgs_l_keyed_args(lua_State *L, const char *mt, const char *what, pgs_l_keyed_t *a)
{
    a->store = pgs_l_store_check(L, 1, mt);
    a->key = pgs_l_text(L, 2, what, &a->err);
    a->tx = pgs_l_optconn(L, 3);
    return a->key != NULL;
}

int64_t pgs_l_int64(lua_State *L, int idx)
{
    lua_Number d = luaL_checknumber(L, idx);
    luaL_argcheck(L, d == floor(d) && fabs(d) < 9.2e18, idx, "integer expected");
    return (int64_t)d;
}

void pgs_l_push_first_row(lua_State *L, pgs_rows_t *res)
{
    pgs_l_push_rows(L, res); /* frees res */
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
}

int pgs_l_push_loaded(lua_State *L, pgs_status_t st, pgs_rows_t *res, int absent_is_nil,
                      const pgs_error_t *err)
{
    if (st == PGS_OK) {
        pgs_l_push_first_row(L, res);
        return 1;
    }
    if (st == PGS_ENOTFOUND && absent_is_nil) {
        lua_pushnil(L);
        return 1;
    }
    return pgs_l_push_error(L, err);
}
