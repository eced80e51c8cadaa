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

void pgs_l_push_first_row(lua_State *L, pgs_rows_t *res)
{
    pgs_l_push_rows(L, res); /* frees res */
    lua_rawgeti(L, -1, 1);
    lua_remove(L, -2);
}
