/* SPDX-License-Identifier: MIT
 * sys.c — the few operating-system facts the host's Lua needs, as the
 * preloaded module `pgstore.sys`: is a descriptor a terminal, our process
 * id, and graceful signals. SIGINT/SIGTERM only set a flag that long-running
 * commands check between batches (so the batch in flight commits); a second
 * one restores the default action and ends the process at once.
 */
#include <lauxlib.h>
#include <lua.h>

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t caught;

static void on_signal(int sig)
{
    if (caught) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    caught = sig;
}

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* Installs the graceful handlers (without SA_RESTART, so a blocking wait
 * returns early). */
static int l_trap_signals(lua_State *L)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return 0;
}

/* → "SIGINT" | "SIGTERM" | nil */
static int l_interrupted(lua_State *L)
{
    if (caught == SIGINT)
        lua_pushliteral(L, "SIGINT");
    else if (caught == SIGTERM)
        lua_pushliteral(L, "SIGTERM");
    else
        lua_pushnil(L);
    return 1;
}

int luaopen_pgstore_sys(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"isatty", l_isatty},
                                     {"getpid", l_getpid},
                                     {"trap_signals", l_trap_signals},
                                     {"interrupted", l_interrupted},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    return 1;
}
