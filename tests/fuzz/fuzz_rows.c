/* SPDX-License-Identifier: MIT
 * fuzz_rows.c — libFuzzer target for row decoding: a result built from
 * the input with libpq's own constructors (any column types the binding
 * knows, any cell bytes, NULLs), turned into Lua tables by the binding
 * (lua/binding/convert.c, which decodes bytea in place, rewrites
 * timestamps and parses numbers). Oracle: a bytea cell comes back decoded
 * exactly when it is well-formed hex, else as sent; text comes back as sent.
 *
 * Input: ncols (1..8), nrows (0..15), a type byte per column, then per
 * cell a length byte (255: NULL) and that many bytes.
 */
#include "binding.h"
#include "pq.h" /* builds the result by hand, as libpq would */

#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const Oid types[] = {16, 17, 20, 21, 23, 26, 28, 700, 701, 1114, 1184, 25, 3802, 114, 1700, 2950};

typedef struct {
    const uint8_t *p, *end;
} input_t;

static int byte(input_t *in)
{
    return in->p < in->end ? *in->p++ : -1;
}

static int hexdigit(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int well_formed_bytea(const char *v, int len)
{
    if (len < 2 || v[0] != '\\' || v[1] != 'x' || (len - 2) % 2)
        return 0;
    for (int i = 2; i < len; i++)
        if (!hexdigit((unsigned char)v[i]))
            return 0;
    return 1;
}

static int push(lua_State *L)
{
    pgs_l_push_rows(L, lua_touserdata(L, 1));
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input_t in = {data, data + size};
    int ncols = byte(&in), nrows = byte(&in);
    if (ncols < 0 || nrows < 0)
        return 0;
    ncols = ncols % 8 + 1;
    nrows %= 16;
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc attrs[8];
    char names[8][8];
    for (int c = 0; c < ncols; c++) {
        int t = byte(&in);
        snprintf(names[c], sizeof names[c], "c%d", c);
        attrs[c] = (PGresAttDesc){.name = names[c], .typid = types[(t < 0 ? 0 : t) % 16],
                                  .typlen = -1, .atttypmod = -1};
    }
    if (!res || !PQsetResultAttrs(res, ncols, attrs)) {
        PQclear(res);
        return 0;
    }
    /* what went in, to compare */
    const char *cells[16][8];
    int lens[16][8];
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) {
            int n = byte(&in);
            if (n < 0 || n == 255 || in.end - in.p < n) {
                cells[r][c] = NULL;
                lens[r][c] = -1;
                PQsetvalue(res, r, c, NULL, -1);
                continue;
            }
            cells[r][c] = (const char *)in.p;
            lens[r][c] = n;
            PQsetvalue(res, r, c, (char *)in.p, n);
            in.p += n;
        }

    lua_State *L = luaL_newstate();
    if (!L) {
        PQclear(res);
        return 0;
    }
    pgs_l_convert_open(L);
    lua_pushcfunction(L, push);
    lua_pushlightuserdata(L, pgs_rows_wrap(res)); /* owned by the rows' box from here */
    if (lua_pcall(L, 1, 1, 0) == 0) {
        for (int r = 0; r < nrows; r++) {
            lua_rawgeti(L, -1, r + 1);
            for (int c = 0; c < ncols; c++) {
                lua_getfield(L, -1, names[c]);
                pgs_kind_t kind = pgs_kind_of(attrs[c].typid);
                if (!cells[r][c]) {
                    if (!(lua_type(L, -1) == LUA_TLIGHTUSERDATA && !lua_touserdata(L, -1)))
                        abort(); /* NULL must come back as pgstore.null */
                } else if (kind == PGS_KIND_BYTEA || kind == PGS_KIND_TEXT) {
                    size_t got;
                    const char *s = lua_tolstring(L, -1, &got);
                    if (kind == PGS_KIND_BYTEA && well_formed_bytea(cells[r][c], lens[r][c])) {
                        if (got != (size_t)(lens[r][c] - 2) / 2)
                            abort();
                    } else if (!s || got != (size_t)lens[r][c] ||
                               memcmp(s, cells[r][c], got) != 0) {
                        abort();
                    }
                }
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    lua_close(L);
    return 0;
}
