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
 * JSON text (the Lua module encodes and decodes). The constructor,
 * migrate and close come from l_companion.c.
 */
#include "l_companion.h"

static pgs_status_t open_store(lua_State *L, pgs_pool_t *pool, void **out, pgs_error_t *err)
{
    pgs_snapshots_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .max_value_size = pgs_l_opt_size(L, 2, "max_value_size"),
    };
    pgs_snapshots_t *ss;
    pgs_status_t st = pgs_snapshots_open(pool, &o, &ss, err);
    *out = ss;
    return st;
}

static void close_store(void *ss)
{
    pgs_snapshots_close(ss);
}

static pgs_status_t migrate_store(void *ss, pgs_error_t *err)
{
    return pgs_snapshots_migrate(ss, err);
}

static int l_snapshots_save(lua_State *L)
{
    pgs_snapshots_t *ss = pgs_l_store_check(L, 1, PGS_SNAPSHOTS_MT);
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
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_SNAPSHOTS_MT, "stream", &a))
        return pgs_l_push_error(L, &a.err);
    pgs_rows_t *res = NULL;
    pgs_status_t st = pgs_snapshots_load(a.store, a.tx, a.key, &res, &a.err);
    return pgs_l_push_loaded(L, st, res, 1, &a.err);
}

static int l_snapshots_invalidate(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_SNAPSHOTS_MT, "stream", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t n = 0;
    pgs_status_t st = pgs_snapshots_invalidate(a.store, a.tx, a.key, &n, &a.err);
    return pgs_l_push_count(L, st, n, &a.err);
}

static int l_snapshots_invalidate_all(lua_State *L)
{
    pgs_snapshots_t *ss = pgs_l_store_check(L, 1, PGS_SNAPSHOTS_MT);
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    pgs_error_t err;
    int64_t n = 0;
    pgs_status_t st = pgs_snapshots_invalidate_all(ss, tx, &n, &err);
    return pgs_l_push_count(L, st, n, &err);
}

void pgs_l_snapshots_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"save", l_snapshots_save},
        {"load", l_snapshots_load},
        {"invalidate", l_snapshots_invalidate},
        {"invalidate_all", l_snapshots_invalidate_all},
        {NULL, NULL}};
    static const pgs_l_store_class_t cls = {
        "snapshots", PGS_SNAPSHOTS_MT, open_store, close_store, migrate_store, methods};
    pgs_l_store_register(L, &cls);
}
