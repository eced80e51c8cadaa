/* SPDX-License-Identifier: MIT
 * sys.c — the few operating-system facts the host's Lua needs, as the
 * preloaded module `pgstore.sys`: is a descriptor a terminal, our process
 * id, a file's permission bits, the --dsn values main() hides from other
 * local users (shown again when they hold no password),
 * and graceful signals. SIGINT/SIGTERM only set a flag that long-running
 * commands check between batches (so the batch in flight commits); a second
 * one restores the default action and ends the process at once.
 */
#include <lauxlib.h>
#include <lua.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t caught;

/* The process's own argument strings: /proc/PID/cmdline reads them from
 * this memory, so overwriting them changes what `ps` shows. The copies
 * are what the Lua side gets. */
static int arg_count;
static char **arg_values, **arg_copies;

/* Where the value of a DSN flag starts in argument i, or -1: `--dsn X`
 * (X is argument i) and `--dsn=X`. Only the global flags before the
 * command are looked at; the value of --dsn-file is skipped. */
static int dsn_value_at(int argc, char **argv, int i)
{
    for (int j = 1; j < argc && j <= i && argv[j][0] == '-'; j++) {
        int takes_value = strcmp(argv[j], "--dsn") == 0 || strcmp(argv[j], "--dsn-file") == 0;
        if (j == i)
            return strncmp(argv[j], "--dsn=", 6) == 0 ? 6 : -1;
        if (takes_value && j + 1 == i)
            return strcmp(argv[j], "--dsn") == 0 ? 0 : -1;
        j += takes_value;
    }
    return -1;
}

char **pgs_host_hide_dsn(int argc, char **argv)
{
    char **copies = calloc((size_t)argc + 1, sizeof *copies);
    for (int i = 0; copies && i < argc; i++)
        if (!(copies[i] = strdup(argv[i])))
            return NULL;
    if (!copies)
        return NULL;
    for (int i = 1; i < argc; i++) {
        int from = dsn_value_at(argc, argv, i);
        if (from >= 0)
            memset(argv[i] + from, '*', strlen(argv[i] + from));
    }
    arg_count = argc;
    arg_values = argv;
    arg_copies = copies;
    return copies;
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

/* sys.show_arg(i) → bool: puts argument i (argv[i], as the Lua table
 * main() receives numbers them) back as it was given, after main() hid it
 * (a --dsn value) and the host found no password in it. */
static int l_show_arg(lua_State *L)
{
    lua_Integer i = luaL_checkinteger(L, 1);
    if (!arg_values || i < 1 || i >= arg_count) {
        lua_pushboolean(L, 0);
        return 1;
    }
    memcpy(arg_values[i], arg_copies[i], strlen(arg_copies[i]));
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
                                     {"show_arg", l_show_arg},
                                     {"file_mode", l_file_mode},
                                     {"trap_signals", l_trap_signals},
                                     {"interrupted", l_interrupted},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    return 1;
}
