/* SPDX-License-Identifier: MIT
 * sys.c — the few operating-system facts the host's Lua needs, as the
 * preloaded module `pgstore.sys`: is a descriptor a terminal, our process
 * id, a file's permission bits, hiding an argument from other local users,
 * and graceful signals. SIGINT/SIGTERM only set a flag that long-running
 * commands check between batches (so the batch in flight commits); a second
 * one restores the default action and ends the process at once.
 */
#include <lauxlib.h>
#include <lua.h>

#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t caught;

/* The process's own argument strings: /proc/PID/cmdline reads them from
 * this memory, so overwriting them changes what `ps` shows. */
static int arg_count;
static char **arg_values;

void pgs_host_keep_args(int argc, char **argv)
{
    arg_count = argc;
    arg_values = argv;
}

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

/* sys.file_mode(path) → the permission bits (e.g. 0600) | nil */
static int l_file_mode(lua_State *L)
{
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0)
        return 0;
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    return 1;
}

/* sys.hide_arg(i [, from]) → bool: overwrites argument i (argv[i], as the
 * Lua table main() receives numbers them) from byte `from` (0-based) on
 * with '*', so a secret in it no longer shows to other local users. The
 * Lua side already holds its own copy. */
static int l_hide_arg(lua_State *L)
{
    lua_Integer i = luaL_checkinteger(L, 1), from = luaL_optinteger(L, 2, 0);
    if (!arg_values || i < 1 || i >= arg_count || from < 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    size_t n = strlen(arg_values[i]);
    if ((size_t)from < n)
        memset(arg_values[i] + from, '*', n - (size_t)from);
    lua_pushboolean(L, 1);
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
                                     {"hide_arg", l_hide_arg},
                                     {"file_mode", l_file_mode},
                                     {"trap_signals", l_trap_signals},
                                     {"interrupted", l_interrupted},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    return 1;
}
