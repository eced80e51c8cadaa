/* SPDX-License-Identifier: MIT
 * l_kv.c — the key-value store as pgstore.core userdata.
 *
 *   core.kv(pool, { table=, skip_schema_init=, schema_init_by_caller=,
 *                   cleanup_interval=, lock_timeout=, max_value_size= })
 *       → kv | nil, err        (schema_init_by_caller: neither migrate nor
 *                               check; the caller steps schema_init)
 *   kv:set(key, value, ttl|nil, [conn]) → true
 *   kv:get(key, [conn]) → value | nil
 *   kv:delete(key, [conn]) → removed
 *   kv:delete_prefix(prefix, [conn]) → removed
 *   kv:cleanup([conn]) → removed
 *   kv:migrate() → true                      (all phases, no hook)
 *   kv:schema_init() → init | nil, err       (one phase at a time:)
 *       init:phase() → "begin_tx" … "done" | nil
 *       init:step() → true | nil, err        init:close()
 *   kv:cleaner_stats() → { interval=, running=, runs=, removed=, failures=, last_error= }
 *   kv:close()                               (stops the cleaner thread)
 *
 * The phase hook is Lua, so the Lua module drives schema_init itself and
 * calls the hook between steps: C never calls back into Lua. The
 * constructor, migrate and close come from l_companion.c.
 */
#include "l_companion.h"

static pgs_kv_t *check(lua_State *L)
{
    return pgs_l_store_check(L, 1, PGS_KV_MT);
}

static pgs_status_t open_store(lua_State *L, pgs_pool_t *pool, void **out, pgs_error_t *err)
{
    pgs_kv_opts_t o = {
        .table = pgs_l_opt_string(L, 2, "table"),
        .skip_schema_init = pgs_l_opt_bool(L, 2, "schema_init_by_caller") ? PGS_KV_SCHEMA_BY_CALLER
                          : pgs_l_opt_bool(L, 2, "skip_schema_init"),
        .cleanup_interval = pgs_l_opt_seconds(L, 2, "cleanup_interval", 0),
        .lock_timeout = pgs_l_opt_seconds(L, 2, "lock_timeout", 0),
        .max_value_size = pgs_l_opt_size(L, 2, "max_value_size"),
    };
    pgs_kv_t *kv;
    pgs_status_t st = pgs_kv_open(pool, &o, &kv, err);
    *out = kv;
    return st;
}

static void close_store(void *kv)
{
    pgs_kv_close(kv);
}

/* All phases at once, with no hook (the Lua module steps them itself to
 * call its hook). */
static pgs_status_t migrate_store(void *kv, pgs_error_t *err)
{
    return pgs_kv_migrate(kv, NULL, NULL, err);
}

static int l_kv_set(lua_State *L)
{
    pgs_kv_t *kv = check(L);
    pgs_error_t err;
    const char *key = pgs_l_text(L, 2, "key", &err);
    size_t len;
    luaL_checktype(L, 3, LUA_TSTRING);
    const char *value = lua_tolstring(L, 3, &len);
    double ttl = luaL_optnumber(L, 4, 0);
    pgs_conn_t *tx = pgs_l_optconn(L, 5);
    if (!key)
        return pgs_l_push_error(L, &err);
    return pgs_l_push_status(L, pgs_kv_set(kv, tx, key, value, len, ttl, &err), &err);
}

static int l_kv_get(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_KV_MT, "key", &a))
        return pgs_l_push_error(L, &a.err);
    /* The result lives in a box (query results' own __gc) while the value
     * is copied out, in case the copy raises. */
    pgs_rows_t **box = lua_newuserdata(L, sizeof *box);
    *box = NULL;
    luaL_getmetatable(L, PGS_RESULT_MT);
    lua_setmetatable(L, -2);
    const char *value;
    size_t len;
    pgs_status_t st = pgs_kv_get(a.store, a.tx, a.key, box, &value, &len, &a.err);
    if (st == PGS_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (st != PGS_OK)
        return pgs_l_push_error(L, &a.err);
    lua_pushlstring(L, value, len);
    pgs_rows_free(*box);
    *box = NULL;
    return 1;
}

static int l_kv_delete(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_KV_MT, "key", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t n = 0;
    pgs_status_t st = pgs_kv_delete(a.store, a.tx, a.key, &n, &a.err);
    return pgs_l_push_count(L, st, n, &a.err);
}

static int l_kv_delete_prefix(lua_State *L)
{
    pgs_l_keyed_t a;
    if (!pgs_l_keyed_args(L, PGS_KV_MT, "prefix", &a))
        return pgs_l_push_error(L, &a.err);
    int64_t n = 0;
    pgs_status_t st = pgs_kv_delete_prefix(a.store, a.tx, a.key, &n, &a.err);
    return pgs_l_push_count(L, st, n, &a.err);
}

static int l_kv_cleanup(lua_State *L)
{
    pgs_kv_t *kv = check(L);
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    pgs_error_t err;
    int64_t n = 0;
    pgs_status_t st = pgs_kv_cleanup(kv, tx, &n, &err);
    return pgs_l_push_count(L, st, n, &err);
}

static int l_kv_cleaner_stats(lua_State *L)
{
    pgs_kv_cleaner_stats_t s;
    pgs_kv_cleaner_stats(check(L), &s);
    lua_createtable(L, 0, 6);
    pgs_l_set_number(L, "interval", s.interval);
    pgs_l_set_bool(L, "running", s.running);
    pgs_l_set_number(L, "runs", (lua_Number)s.runs);
    pgs_l_set_number(L, "removed", (lua_Number)s.removed);
    pgs_l_set_number(L, "failures", (lua_Number)s.failures);
    if (s.last_error[0])
        pgs_l_set_string(L, "last_error", s.last_error);
    return 1;
}

/* ---- schema init, stepped from Lua ------------------------------------------------ */

static int l_kv_schema_init(lua_State *L)
{
    pgs_kv_t *kv = check(L);
    pgs_l_handle_t *u = pgs_l_handle_new(L, PGS_KV_INIT_MT);
    pgs_error_t err;
    if (pgs_kv_init_start(kv, (pgs_kv_init_t **)&u->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_init_close(lua_State *L)
{
    pgs_kv_init_free(pgs_l_handle_take(L, 1, PGS_KV_INIT_MT));
    return 0;
}

static int l_init_phase(lua_State *L)
{
    pgs_kv_init_t *it = pgs_l_store_check(L, 1, PGS_KV_INIT_MT);
    const char *name = pgs_kv_phase_name(pgs_kv_init_phase(it));
    if (name)
        lua_pushstring(L, name);
    else
        lua_pushnil(L);
    return 1;
}

static int l_init_step(lua_State *L)
{
    pgs_kv_init_t *it = pgs_l_store_check(L, 1, PGS_KV_INIT_MT);
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_kv_init_step(it, &err), &err);
}

void pgs_l_kv_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"set", l_kv_set},
        {"get", l_kv_get},
        {"delete", l_kv_delete},
        {"delete_prefix", l_kv_delete_prefix},
        {"cleanup", l_kv_cleanup},
        {"schema_init", l_kv_schema_init},
        {"cleaner_stats", l_kv_cleaner_stats},
        {NULL, NULL}};
    static const luaL_Reg init_methods[] = {
        {"phase", l_init_phase}, {"step", l_init_step}, {"close", l_init_close}, {NULL, NULL}};
    static const pgs_l_store_class_t cls = {
        "kv", PGS_KV_MT, open_store, close_store, migrate_store, methods};
    pgs_l_store_register(L, &cls);
    pgs_l_class_register(L, PGS_KV_INIT_MT, init_methods, l_init_close, NULL);
}
