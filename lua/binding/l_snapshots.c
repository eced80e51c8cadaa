/* SPDX-License-Identifier: MIT
 * l_snapshots.c — the snapshot store as pgstore.core userdata.
 *
 *   core.snapshots(pool, { table=, skip_schema_init=, max_value_size= })
 *       → ss | nil, err
 *   ss:migrate() → true            ss:save(stream, version, state_json,
 *   ss:load(stream, [conn])            schema_version, [conn]) → true, written
 *       → row | nil                ss:invalidate(stream, [conn]) → removed
 *   ss:invalidate_all([conn]) → removed     ss:close()
 *
 * `conn` is a transaction's pinned connection (pgstore.conn); state is
 * JSON text (the Lua module encodes and decodes).
 */
#include "l_companion.h"

static pgs_snapshots_t *check(lua_State *L)
{
    return pgs_l_store_check(L, 1, PGS_SNAPSHOTS_MT);
}

static int l_snapshots_new(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    pgs_snapshots_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .max_value_size = pgs_l_opt_size(L, 2, "max_value_size"),
    };
    pgs_l_handle_t *u = pgs_l_handle_new(L, PGS_SNAPSHOTS_MT);
    pgs_error_t err;
    if (pgs_snapshots_open(pool, &o, (pgs_snapshots_t **)&u->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_snapshots_close(lua_State *L)
{
    pgs_snapshots_close(pgs_l_handle_take(L, 1, PGS_SNAPSHOTS_MT));
    return 0;
}

static int l_snapshots_migrate(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_snapshots_migrate(check(L), &err), &err);
}

static int l_snapshots_save(lua_State *L)
{
    pgs_snapshots_t *ss = check(L);
    pgs_error_t err, serr;
    const char *stream = pgs_l_text(L, 2, "stream", &err);
    int64_t version = pgs_l_int64(L, 3);
    const char *state = pgs_l_text(L, 4, "state", &serr);
    int64_t schema_version = pgs_l_int64(L, 5);
    pgs_conn_t *tx = pgs_l_optconn(L, 6);
    if (!stream || !state)
        return pgs_l_push_error(L, stream ? &serr : &err);
    luaL_argcheck(L, schema_version <= 0x7fffffff, 5, "schema_version out of range");
    int written;
    pgs_status_t st = pgs_snapshots_save(ss, tx, stream, version, state, (int)schema_version,
                                         &written, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushboolean(L, 1);
    lua_pushboolean(L, written);
    return 2;
}

static int l_snapshots_load(lua_State *L)
{
    pgs_snapshots_t *ss = check(L);
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream", &err);
    pgs_conn_t *tx = pgs_l_optconn(L, 3);
    if (!stream)
        return pgs_l_push_error(L, &err);
    pgs_rows_t *res;
    pgs_status_t st = pgs_snapshots_load(ss, tx, stream, &res, &err);
    if (st == PGS_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    pgs_l_push_first_row(L, res);
    return 1;
}

static int l_snapshots_invalidate(lua_State *L)
{
    pgs_snapshots_t *ss = check(L);
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream", &err);
    pgs_conn_t *tx = pgs_l_optconn(L, 3);
    if (!stream)
        return pgs_l_push_error(L, &err);
    int64_t n = 0;
    pgs_status_t st = pgs_snapshots_invalidate(ss, tx, stream, &n, &err);
    return pgs_l_push_count(L, st, n, &err);
}

static int l_snapshots_invalidate_all(lua_State *L)
{
    pgs_snapshots_t *ss = check(L);
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    pgs_error_t err;
    int64_t n = 0;
    pgs_status_t st = pgs_snapshots_invalidate_all(ss, tx, &n, &err);
    return pgs_l_push_count(L, st, n, &err);
}

void pgs_l_snapshots_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"migrate", l_snapshots_migrate},
        {"save", l_snapshots_save},
        {"load", l_snapshots_load},
        {"invalidate", l_snapshots_invalidate},
        {"invalidate_all", l_snapshots_invalidate_all},
        {"close", l_snapshots_close},
        {NULL, NULL}};
    pgs_l_class_register(L, PGS_SNAPSHOTS_MT, methods, l_snapshots_close, NULL);
    lua_pushcfunction(L, l_snapshots_new);
    lua_setfield(L, -2, "snapshots");
}
