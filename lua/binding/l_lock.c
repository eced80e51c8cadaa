/* SPDX-License-Identifier: MIT
 * l_lock.c — named locks in pgstore.core.
 *
 *   core.lock(pool, key, { mode=, timeout=, table=, ttl= }, try) → lock
 *       (try: nil when held elsewhere)
 *   lock() / lock:release() → true    lock:renew() → true
 *   lock:token() → number (the fencing token)    lock:key() → string
 *   lock:held() → boolean[, err]    lock:guard(tx) → true
 *   core.lock_guard(conn, key, token[, { mode=, table= }]) → true
 *   core.xact_lock(conn, key[, timeout]) → true
 *   core.xact_try_lock(conn, key) → boolean
 *
 * A lock userdata is callable, so `local release = db:lock(k)` … `release()`
 * reads naturally. __gc releases a lock still held.
 */
#include "l_companion.h"

#include <string.h>

static const char *const mode_names[] = {"advisory", "table", NULL}; /* as pgs_lock_mode */

static int l_lock_new(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    pgs_lock_opts_t o;
    memset(&o, 0, sizeof o);
    o.mode = (pgs_lock_mode_t)pgs_l_opt_enum(L, 3, "mode", "advisory", mode_names);
    o.timeout = pgs_l_opt_number(L, 3, "timeout", -1);
    o.ttl = pgs_l_opt_number(L, 3, "ttl", 0);
    o.table = pgs_l_opt_string(L, 3, "table");
    o.skip_schema_init = pgs_l_opt_bool(L, 3, "skip_schema_init");
    int try_only = lua_toboolean(L, 4);

    pgs_l_handle_t *h = pgs_l_handle_new(L, PGS_LOCK_MT);
    pgs_lock_t **lock = (pgs_lock_t **)&h->ptr;
    pgs_error_t err;
    pgs_status_t st = try_only ? pgs_lock_try(pool, key, len, &o, lock, &err)
                               : pgs_lock_acquire(pool, key, len, &o, lock, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    if (!*lock) {
        lua_pushnil(L); /* try: held elsewhere */
        return 1;
    }
    return 1;
}

static pgs_lock_t *check_lock(lua_State *L)
{
    return pgs_l_handle_check(L, 1, PGS_LOCK_MT, "attempt to use a released lock");
}

/* Releasing twice is harmless: the second call returns true. */
static int l_lock_release(lua_State *L)
{
    pgs_lock_t *lock = pgs_l_handle_take(L, 1, PGS_LOCK_MT);
    pgs_error_t err;
    return pgs_l_push_status(L, lock ? pgs_lock_release(lock, &err) : PGS_OK, &err);
}

static int l_lock_gc(lua_State *L)
{
    pgs_lock_t *lock = pgs_l_handle_take(L, 1, PGS_LOCK_MT);
    if (lock) {
        pgs_error_t err;
        (void)pgs_lock_release(lock, &err);
    }
    return 0;
}

static int l_lock_renew(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lock_renew(check_lock(L), &err), &err);
}

static int l_lock_token(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)pgs_lock_token(check_lock(L)));
    return 1;
}

/* lock:guard(tx) → true | nil, err: tx is the pgstore.tx of db:transaction
 * (its connection; a connection outside a transaction is refused in core). */
static int l_lock_guard(lua_State *L)
{
    pgs_lock_t *lock = check_lock(L);
    luaL_argcheck(L, lua_istable(L, 2), 2, "transaction expected");
    lua_getfield(L, 2, "active");
    if (!lua_toboolean(L, -1))
        return luaL_error(L, "attempt to use a finished transaction");
    lua_getfield(L, 2, "conn");
    pgs_conn_t *tx = pgs_l_optconn(L, -1);
    luaL_argcheck(L, tx != NULL, 2, "transaction expected");
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lock_guard(lock, tx, &err), &err);
}

/* core.lock_guard(conn, key, token, { mode=, table= }) → true | nil, err */
static int l_lock_guard_token(lua_State *L)
{
    pgs_conn_t *tx = pgs_l_optconn(L, 1);
    if (!tx)
        return luaL_error(L, "bad argument #1 to 'lock_guard' (transaction expected, got nil)");
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    int64_t token = (int64_t)luaL_checknumber(L, 3);
    pgs_lock_opts_t o;
    memset(&o, 0, sizeof o);
    o.mode = (pgs_lock_mode_t)pgs_l_opt_enum(L, 4, "mode", "advisory", mode_names);
    o.table = pgs_l_opt_string(L, 4, "table");
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lock_guard_token(tx, key, len, &o, token, &err), &err);
}

static int l_lock_key(lua_State *L)
{
    lua_pushstring(L, pgs_lock_name(check_lock(L)));
    return 1;
}

/* lock:held() → true | false[, err]: asks the server (a released lock:
 * false, no round trip). err says why it could not be asked. */
static int l_lock_held(lua_State *L)
{
    pgs_lock_t *lock = pgs_l_handle_get(L, 1, PGS_LOCK_MT);
    if (!lock) {
        lua_pushboolean(L, 0);
        return 1;
    }
    int held = 0;
    pgs_error_t err;
    pgs_status_t st = pgs_lock_held(lock, &held, &err);
    lua_pushboolean(L, held);
    if (st == PGS_OK)
        return 1;
    pgs_l_push_error(L, &err); /* nil, err */
    lua_remove(L, -2);
    return 2;
}

static int l_lock_tostring(lua_State *L)
{
    pgs_lock_t *lock = pgs_l_handle_get(L, 1, PGS_LOCK_MT);
    if (lock)
        lua_pushfstring(L, "pgstore.lock (%s, %s)", mode_names[pgs_lock_mode(lock)],
                        pgs_lock_name(lock));
    else
        lua_pushliteral(L, "pgstore.lock (closed)");
    return 1;
}

static int l_xact_lock(lua_State *L)
{
    pgs_conn_t *tx = pgs_l_optconn(L, 1);
    if (!tx)
        return luaL_error(L, "bad argument #1 to 'lock' (transaction expected, got nil)");
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    double timeout = luaL_optnumber(L, 3, -1);
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lock_xact(tx, key, len, timeout, &err), &err);
}

static int l_xact_try_lock(lua_State *L)
{
    pgs_conn_t *tx = pgs_l_optconn(L, 1);
    if (!tx)
        return luaL_error(L, "bad argument #1 to 'try_lock' (transaction expected, got nil)");
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    int got = 0;
    pgs_error_t err;
    if (pgs_lock_xact_try(tx, key, len, &got, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushboolean(L, got);
    return 1;
}

/* core.lock_migrate(pool[, table]) → true | nil, err: the lock table. */
static int l_lock_migrate(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    const char *table = lua_isnoneornil(L, 2) ? NULL : pgs_l_checkcstr(L, 2, "table");
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lock_migrate(pool, table, &err), &err);
}

/* core.lease_migrate(pool[, table]) → true | nil, err: the lease tables. */
static int l_lease_migrate(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    const char *table = lua_isnoneornil(L, 2) ? NULL : pgs_l_checkcstr(L, 2, "table");
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lease_migrate(pool, table, &err), &err);
}

/* core.parked_migrate(pool, table|nil, migrate) → true | nil, err: the
 * projections' dead-letter table (migrate false: only checked). */
static int l_parked_migrate(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    const char *table = lua_isnoneornil(L, 2) ? NULL : pgs_l_checkcstr(L, 2, "table");
    int migrate = lua_toboolean(L, 3);
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_parked_migrate(pool, table, migrate, &err), &err);
}

/* core.relay_migrate(pool, table|nil, migrate) → true | nil, err: the
 * relay's table for large changes (migrate false: only checked). */
static int l_relay_migrate(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    const char *table = lua_isnoneornil(L, 2) ? NULL : pgs_l_checkcstr(L, 2, "table");
    int migrate = lua_toboolean(L, 3);
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_relay_migrate(pool, table, migrate, &err), &err);
}

void pgs_l_lock_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"release", l_lock_release}, {"renew", l_lock_renew}, {"token", l_lock_token},
        {"key", l_lock_key},         {"held", l_lock_held},   {"guard", l_lock_guard},
        {NULL, NULL}};
    pgs_l_class_register(L, PGS_LOCK_MT, methods, l_lock_gc, l_lock_tostring);
    luaL_getmetatable(L, PGS_LOCK_MT);
    lua_pushcfunction(L, l_lock_release);
    lua_setfield(L, -2, "__call");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_lock_new);
    lua_setfield(L, -2, "lock");
    lua_pushcfunction(L, l_xact_lock);
    lua_setfield(L, -2, "xact_lock");
    lua_pushcfunction(L, l_xact_try_lock);
    lua_setfield(L, -2, "xact_try_lock");
    lua_pushcfunction(L, l_lock_guard_token);
    lua_setfield(L, -2, "lock_guard");
    lua_pushcfunction(L, l_lock_migrate);
    lua_setfield(L, -2, "lock_migrate");
    lua_pushcfunction(L, l_lease_migrate);
    lua_setfield(L, -2, "lease_migrate");
    lua_pushcfunction(L, l_parked_migrate);
    lua_setfield(L, -2, "parked_migrate");
    lua_pushcfunction(L, l_relay_migrate);
    lua_setfield(L, -2, "relay_migrate");
}
