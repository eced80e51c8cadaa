/* SPDX-License-Identifier: MIT
 * convert.c — Lua values to bound parameters, and result rows to Lua
 * tables, all in C so a query costs one crossing. Integers are formatted
 * exactly (LuaJIT's own number formatting keeps only 14 digits).
 */
#include "binding.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NUMBUF 32

static void format_number(lua_Number d, char *out)
{
    if (isnan(d))
        strcpy(out, "NaN");
    else if (isinf(d))
        strcpy(out, d > 0 ? "Infinity" : "-Infinity");
    else if (d == floor(d) && fabs(d) < 9.2e18)
        snprintf(out, NUMBUF, "%lld", (long long)d);
    else
        snprintf(out, NUMBUF, "%.17g", d);
}

pgs_param_t *pgs_l_params(lua_State *L, int first, int last, int argbase, const char *fname)
{
    int n = last >= first ? last - first + 1 : 0;
    /* One block: the parameters, then a number buffer per parameter. */
    pgs_param_t *params = lua_newuserdata(L, (size_t)(n ? n : 1) * (sizeof *params + NUMBUF));
    char (*numbuf)[NUMBUF] = (char (*)[NUMBUF])(params + (n ? n : 1));
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        pgs_param_t *p = &params[i];
        p->length = -1;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            p->value = NULL;
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) != NULL)
                luaL_error(L, "bad argument #%d to '%s' (string, number, boolean or null expected, got userdata)",
                           idx - argbase, fname);
            p->value = NULL; /* pgstore.null */
            break;
        case LUA_TBOOLEAN:
            p->value = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER:
            format_number(lua_tonumber(L, idx), numbuf[i]);
            p->value = numbuf[i];
            break;
        case LUA_TSTRING: {
            size_t len;
            p->value = lua_tolstring(L, idx, &len);
            if (len > 0x7fffffff)
                luaL_error(L, "bad argument #%d to '%s' (string too long)", idx - argbase, fname);
            p->length = (int)len;
            break;
        }
        default:
            luaL_error(L, "bad argument #%d to '%s' (string, number, boolean or null expected, got %s)",
                       idx - argbase, fname, luaL_typename(L, idx));
        }
    }
    return params;
}

const char *pgs_l_text(lua_State *L, int idx, const char *what, pgs_error_t *err)
{
    size_t len;
    luaL_checktype(L, idx, LUA_TSTRING);
    const char *s = lua_tolstring(L, idx, &len);
    if (strlen(s) != len) {
        pgs_error_set(err, PGS_EINVALID, "%s contains a NUL byte", what);
        return NULL;
    }
    return s;
}

const char *pgs_l_opt_text(lua_State *L, int idx, const char *what, pgs_error_t *err, int *ok)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    const char *s = pgs_l_text(L, idx, what, err);
    if (!s)
        *ok = 0;
    return s;
}

const char *pgs_l_checkcstr(lua_State *L, int idx, const char *name)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (s && strlen(s) != len)
        luaL_error(L, "bad option '%s' (contains a NUL byte)", name);
    return s;
}

int64_t pgs_l_optint64(lua_State *L, int idx, int64_t dflt)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    lua_Number d = luaL_checknumber(L, idx);
    if (d != d)
        return INT64_MIN;
    if (d >= 9223372036854775807.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

/* ---- results --------------------------------------------------------------- */

typedef struct {
    pgs_rows_t *res;
} result_box_t;

static int result_gc(lua_State *L)
{
    result_box_t *b = luaL_checkudata(L, 1, PGS_RESULT_MT);
    if (b->res) {
        pgs_rows_free(b->res);
        b->res = NULL;
    }
    return 0;
}

static void push_value(lua_State *L, pgs_rows_t *res, int row, int col, pgs_kind_t kind)
{
    if (pgs_rows_is_null(res, row, col)) {
        lua_pushlightuserdata(L, NULL);
        return;
    }
    size_t vlen;
    /* The value's memory is the result's own, writable and freed with it:
     * bytea is decoded in place below. */
    char *v = (char *)pgs_rows_value(res, row, col, &vlen);
    int len = (int)vlen;
    switch (kind) {
    case PGS_KIND_INT:
        lua_pushnumber(L, (lua_Number)strtoll(v, NULL, 10));
        break;
    case PGS_KIND_FLOAT:
        lua_pushnumber(L, (lua_Number)strtod(v, NULL));
        break;
    case PGS_KIND_BOOL:
        lua_pushboolean(L, v[0] == 't');
        break;
    case PGS_KIND_BYTEA: {
        /* Decoding in place is safe: output trails input. */
        long n = pgs_bytea_decode(v, (size_t)len, v);
        if (n >= 0)
            lua_pushlstring(L, v, (size_t)n);
        else
            lua_pushlstring(L, v, (size_t)len);
        break;
    }
    case PGS_KIND_TIMESTAMP: {
        char buf[80];
        if (len < (int)sizeof buf - 4)
            lua_pushlstring(L, buf, pgs_timestamp_iso(v, (size_t)len, buf));
        else
            lua_pushlstring(L, v, (size_t)len);
        break;
    }
    default:
        lua_pushlstring(L, v, (size_t)len);
    }
}

void pgs_l_push_rows(lua_State *L, pgs_rows_t *res)
{
    pgs_l_push_rows_n(L, res, -1, -1);
}

void pgs_l_push_rows_n(lua_State *L, pgs_rows_t *res, int max_rows, int max_cols)
{
    result_box_t *box = lua_newuserdata(L, sizeof *box);
    box->res = res;
    luaL_getmetatable(L, PGS_RESULT_MT);
    lua_setmetatable(L, -2);

    int nrows = pgs_rows_count(res), ncols = pgs_rows_columns(res);
    if (max_rows >= 0 && max_rows < nrows)
        nrows = max_rows;
    if (max_cols >= 0 && max_cols < ncols)
        ncols = max_cols;
    luaL_checkstack(L, ncols + 8, "too many columns");
    pgs_kind_t kinds[ncols > 0 ? ncols : 1];
    int names = lua_gettop(L) + 1;
    for (int c = 0; c < ncols; c++) {
        lua_pushstring(L, pgs_rows_name(res, c));
        kinds[c] = pgs_rows_kind(res, c);
    }
    lua_createtable(L, nrows, 0);
    for (int r = 0; r < nrows; r++) {
        lua_createtable(L, 0, ncols);
        for (int c = 0; c < ncols; c++) {
            lua_pushvalue(L, names + c);
            push_value(L, res, r, c, kinds[c]);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, r + 1);
    }
    /* Stack: box, names…, rows → rows. */
    lua_replace(L, names - 1);
    lua_settop(L, names - 1);
    pgs_rows_free(res);
    box->res = NULL;
}

void pgs_l_convert_open(lua_State *L)
{
    luaL_newmetatable(L, PGS_RESULT_MT);
    pgs_l_metatable_hide(L);
    lua_pushcfunction(L, result_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
