/* SPDX-License-Identifier: MIT
 * module.c — luaopen_pgstore_core, the binding's one exported symbol: the
 * C core as a Lua module (pools, pinned connections, error metatable, null).
 * Classic Lua 5.1 C API only, and not linked against libluajit, so it loads
 * in luajit, in nginx's VMs and in the host.
 */
#include "binding.h"
#include "clock.h"

#include <string.h>

static int l_backoff(lua_State *L)
{
    lua_Number attempt = luaL_checknumber(L, 1);
    pgs_backoff_sleep(attempt >= 1 && attempt <= 64 ? (int)attempt : attempt > 64 ? 64 : 1);
    return 0;
}

static int l_sleep(lua_State *L)
{
    pgs_clock_sleep(luaL_checknumber(L, 1));
    return 0;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, pgs_clock_now());
    return 1;
}

/* core.dsn_has_password(dsn) → bool (see pgs_conninfo_has_password) */
static int l_dsn_has_password(lua_State *L)
{
    lua_pushboolean(L, pgs_conninfo_has_password(luaL_checkstring(L, 1)));
    return 1;
}

/* core.interrupt: pgs_conn_interrupt's address as a light userdata, for a
 * host's SIGINT handler (it takes no Lua state; see pgstore.readline). */
static void *interrupt_address(void)
{
    int (*fn)(void) = pgs_conn_interrupt;
    void *p;
    memcpy(&p, &fn, sizeof p);
    return p;
}

__attribute__((visibility("default"))) int luaopen_pgstore_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"backoff", l_backoff}, {"sleep", l_sleep}, {"now", l_now},
        {"dsn_has_password", l_dsn_has_password}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    lua_pushliteral(L, PGSTORE_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushlightuserdata(L, interrupt_address());
    lua_setfield(L, -2, "interrupt");
    pgs_l_util_open(L);
    pgs_l_error_open(L);
    lua_setfield(L, -2, "error_mt");
    pgs_l_convert_open(L);
    pgs_l_names_open(L);
    pgs_l_pool_open(L);
    pgs_l_events_open(L);
    pgs_l_snapshots_open(L);
    pgs_l_checkpoints_open(L);
    pgs_l_exec_checkpoints_open(L);
    pgs_l_sessions_open(L);
    pgs_l_kv_open(L);
    pgs_l_listener_open(L);
    pgs_l_lease_open(L);
    pgs_l_lock_open(L);
    pgs_l_park_open(L);
    return 1;
}
