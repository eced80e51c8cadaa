/* SPDX-License-Identifier: MIT
 * l_lease.c — partition leases and the stable hashes in pgstore.core.
 *
 *   core.lease(pool, { table=, name=, count=, lease=, renew=, owner= }) → lease
 *   lease:tick() → { acquired = {p…}, released = {p…}, lost = {p…},
 *                    taken = { [p] = owner whose expired lease was taken over } }
 *   lease:changes() → the same, for changes made by the background renewer
 *   lease:release() → the same, after giving up everything now
 *   lease:owned() → { [p] = token }   lease:token(p) → token | nil
 *   lease:guard(conn, p[, token]) → true      (nil, err lease_lost)
 *   lease:start() / lease:stop()   lease:info()   lease:close()
 *   core.partition_for(key, count) → p    core.lock_key(key) → "decimal"
 *   core.fnv1a64(s) → "16 hex digits"
 */
#include "binding.h"
#include "opts.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pgs_lease_t *check_lease(lua_State *L)
{
    return pgs_l_handle_check(L, 1, PGS_LEASE_MT, "attempt to use a closed partition set");
}

static int l_lease_new(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    pgs_lease_opts_t o;
    memset(&o, 0, sizeof o);
    o.table = pgs_l_opt_string(L, 2, "table");
    o.name = pgs_l_opt_string(L, 2, "name");
    o.owner = pgs_l_opt_string(L, 2, "owner");
    double count = pgs_l_opt_number(L, 2, "count", 0);
    /* Out of range (the Lua side refuses it first): -1, which the core does. */
    o.count = count >= 0 && count <= 1e6 ? (int32_t)count : -1;
    o.lease = pgs_l_opt_seconds(L, 2, "lease", 0);
    o.renew = pgs_l_opt_seconds(L, 2, "renew", 0);
    o.skip_schema_init = pgs_l_opt_bool(L, 2, "skip_schema_init");

    pgs_l_handle_t *h = pgs_l_handle_new(L, PGS_LEASE_MT);
    pgs_error_t err;
    if (pgs_lease_open(pool, &o, (pgs_lease_t **)&h->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_lease_close(lua_State *L)
{
    pgs_lease_close(pgs_l_handle_take(L, 1, PGS_LEASE_MT));
    return 0;
}

static int l_lease_tostring(lua_State *L)
{
    pgs_lease_t *l = pgs_l_handle_get(L, 1, PGS_LEASE_MT);
    if (!l) {
        lua_pushliteral(L, "pgstore.lease (closed)");
        return 1;
    }
    pgs_lease_info_t info;
    pgs_lease_info(l, &info);
    lua_pushfstring(L, "pgstore.lease (%s as %s)", info.name, info.owner);
    return 1;
}

/* Keep in the same order as enum pgs_lease_change_kind. */
static const char *const kind_names[] = {"acquired", "released", "lost"};

/* Pushes { acquired = {…}, released = {…}, lost = {…}, taken = {…} } from
 * a malloc'd array, which it frees. */
static void push_changes(lua_State *L, pgs_lease_change_t *c, int n)
{
    pgs_l_own(L, c);
    lua_createtable(L, 0, 4);
    for (int k = 0; k < 3; k++) {
        lua_newtable(L);
        lua_setfield(L, -2, kind_names[k]);
    }
    lua_newtable(L);
    for (int i = 0; i < n; i++)
        if (c[i].kind == PGS_LEASE_ACQUIRED && c[i].from[0]) {
            lua_pushstring(L, c[i].from);
            lua_rawseti(L, -2, c[i].partition);
        }
    lua_setfield(L, -2, "taken");
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        int k = (int)c[i].kind;
        if (k < 0 || k > 2)
            continue;
        lua_getfield(L, -1, kind_names[k]);
        lua_pushinteger(L, c[i].partition);
        lua_rawseti(L, -2, ++counts[k]);
        lua_pop(L, 1);
    }
    pgs_l_free_owned(L, -2);
    lua_remove(L, -2);
}

static int l_lease_tick(lua_State *L)
{
    pgs_lease_t *l = check_lease(L);
    pgs_lease_change_t *c = NULL;
    int n = 0;
    pgs_error_t err;
    if (pgs_lease_tick(l, &c, &n, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    push_changes(L, c, n);
    return 1;
}

static int l_lease_changes(lua_State *L)
{
    pgs_lease_change_t *c = NULL;
    int n = pgs_lease_changes(check_lease(L), &c);
    push_changes(L, c, n);
    return 1;
}

static int l_lease_release(lua_State *L)
{
    pgs_lease_t *l = check_lease(L);
    pgs_lease_change_t *c = NULL;
    int n = 0;
    pgs_error_t err;
    if (pgs_lease_release(l, &c, &n, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    push_changes(L, c, n);
    return 1;
}

static int32_t check_partition(lua_State *L, pgs_lease_t *l, int idx)
{
    pgs_lease_info_t info;
    pgs_lease_info(l, &info);
    lua_Number p = luaL_checknumber(L, idx);
    if (!(p >= 0 && p < info.count) || p != (lua_Number)(int32_t)p)
        luaL_error(L, "bad argument #%d to '%s' (partition must be an integer in 0..%d)", idx - 1,
                   "partition", (int)info.count - 1);
    return (int32_t)p;
}

static int l_lease_owned(lua_State *L)
{
    pgs_lease_t *l = check_lease(L);
    pgs_lease_info_t info;
    pgs_lease_info(l, &info);
    int64_t *tokens = malloc((size_t)info.count * sizeof *tokens);
    if (!tokens)
        return luaL_error(L, "out of memory");
    pgs_l_own(L, tokens);
    pgs_lease_owned(l, tokens);
    lua_newtable(L);
    for (int32_t p = 0; p < info.count; p++)
        if (tokens[p]) {
            lua_pushnumber(L, (lua_Number)tokens[p]);
            lua_rawseti(L, -2, p);
        }
    pgs_l_free_owned(L, -2);
    lua_remove(L, -2);
    return 1;
}

static int l_lease_token(lua_State *L)
{
    pgs_lease_t *l = check_lease(L);
    int64_t t = pgs_lease_token(l, check_partition(L, l, 2));
    if (t)
        lua_pushnumber(L, (lua_Number)t);
    else
        lua_pushnil(L);
    return 1;
}

static int l_lease_guard(lua_State *L)
{
    pgs_lease_t *l = check_lease(L);
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    if (!tx)
        return luaL_error(L, "bad argument #1 to 'guard' (transaction expected, got nil)");
    int32_t p = check_partition(L, l, 3);
    int64_t token = pgs_l_optint64(L, 4, 0);
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lease_guard(l, tx, p, token, &err), &err);
}

static int l_lease_start(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_lease_start(check_lease(L), &err), &err);
}

static int l_lease_stop(lua_State *L)
{
    pgs_lease_stop(check_lease(L));
    return 0;
}

static int l_lease_info(lua_State *L)
{
    pgs_lease_info_t info;
    pgs_lease_info(check_lease(L), &info);
    lua_createtable(L, 0, 11);
    pgs_l_set_string(L, "name", info.name);
    pgs_l_set_string(L, "owner", info.owner);
    pgs_l_set_string(L, "instance", info.instance);
    pgs_l_set_string(L, "table", info.table);
    pgs_l_set_number(L, "count", info.count);
    pgs_l_set_number(L, "lease", info.lease);
    pgs_l_set_number(L, "renew", info.renew);
    pgs_l_set_number(L, "ticks", (lua_Number)info.ticks);
    pgs_l_set_number(L, "failures", (lua_Number)info.failures);
    pgs_l_set_bool(L, "background", info.background);
    pgs_l_set_error(L, "last_error", &info.last_error);
    return 1;
}

/* ---- hashes ----------------------------------------------------------------------- */

static int l_partition_for(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    lua_Number count = luaL_checknumber(L, 2);
    luaL_argcheck(L, count >= 1 && count <= 65536 && count == (lua_Number)(int32_t)count, 2,
                  "count must be an integer in 1..65536");
    lua_pushinteger(L, pgs_partition_for(key, len, (int32_t)count));
    return 1;
}

static int l_lock_key(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, pgs_lock_key(key, len));
    lua_pushstring(L, buf);
    return 1;
}

static int l_fnv1a64(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char buf[32];
    snprintf(buf, sizeof buf, "%016" PRIx64, pgs_hash_fnv1a64(s, len));
    lua_pushstring(L, buf);
    return 1;
}

void pgs_l_lease_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"tick", l_lease_tick},     {"changes", l_lease_changes}, {"release", l_lease_release},
        {"owned", l_lease_owned},   {"token", l_lease_token},     {"guard", l_lease_guard},
        {"start", l_lease_start},   {"stop", l_lease_stop},       {"info", l_lease_info},
        {"close", l_lease_close},   {NULL, NULL}};
    pgs_l_class_register(L, PGS_LEASE_MT, methods, l_lease_close, l_lease_tostring);

    lua_pushcfunction(L, l_lease_new);
    lua_setfield(L, -2, "lease");
    lua_pushcfunction(L, l_partition_for);
    lua_setfield(L, -2, "partition_for");
    lua_pushcfunction(L, l_lock_key);
    lua_setfield(L, -2, "lock_key");
    lua_pushcfunction(L, l_fnv1a64);
    lua_setfield(L, -2, "fnv1a64");
}
