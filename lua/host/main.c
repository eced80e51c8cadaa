/* SPDX-License-Identifier: MIT
 * main.c — the `pgstore` host: a LuaJIT state with pgstore's module paths,
 * handing argv to the Lua program in lua/pgstore/host.lua. Everything the
 * host does lives in Lua; this file only boots it (with the REPL's terminal
 * module, readline.c, preloaded) and maps errors to exit codes (0 ok,
 * 1 runtime failure, 2 usage error).
 */
#define _DEFAULT_SOURCE /* realpath */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pgstore_version.h"
#include "host.h"

static int file_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* The directory of the running binary, resolved (NULL when /proc is not
 * there). The returned string is malloc'd. */
static char *exe_dir(void)
{
    char *exe = realpath("/proc/self/exe", NULL);
    if (!exe)
        return NULL;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = '\0';
    return exe;
}

/* True when the running binary is the one in the build directory it was
 * built in: then the checkout's modules are the ones to test. An installed
 * copy never looks there, even while the build directory exists. */
static int is_build_tree_binary(const char *dir)
{
    char *build = realpath(PGSTORE_BUILD_DIR, NULL);
    int same = dir && build && strcmp(dir, build) == 0 &&
               file_exists(PGSTORE_SOURCE_LUA_DIR "/pgstore/host.lua");
    free(build);
    return same;
}

/* Module paths: the checkout's for the build-tree binary; otherwise the
 * install's, found relative to the binary (PGSTORE_HOST_LUA_DIR and
 * PGSTORE_HOST_LUA_CDIR, e.g. ../share/lua/5.1), so an install made with
 * `--prefix DIR`, moved, or deployed by LuaRocks finds its own modules.
 * PGSTORE_LUA_DIR / PGSTORE_LUA_CDIR in the environment override both. */
/* Replaces package[field] by its entries that do not start with "./":
 * LuaJIT's defaults begin with the current directory, where a cjson.lua
 * (or any module pgstore requires from the system) would be run by every
 * command started there. */
static void drop_cwd_entries(lua_State *L, const char *field)
{
    lua_getfield(L, -1, field);
    const char *p = lua_tostring(L, -1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int first = 1;
    while (p && *p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0 && strncmp(p, "./", 2) != 0) {
            if (!first)
                luaL_addchar(&b, ';');
            luaL_addlstring(&b, p, len);
            first = 0;
        }
        p = end ? end + 1 : NULL;
    }
    luaL_pushresult(&b);
    lua_setfield(L, -3, field);
    lua_pop(L, 1);
}

static void set_paths(lua_State *L)
{
    char *bin = exe_dir();
    if (is_build_tree_binary(bin)) {
        lua_pushliteral(L, PGSTORE_SOURCE_LUA_DIR);
        lua_pushliteral(L, PGSTORE_BUILD_DIR "/lua");
    } else if (bin) {
        lua_pushfstring(L, "%s/%s", bin, PGSTORE_HOST_LUA_DIR);
        lua_pushfstring(L, "%s/%s", bin, PGSTORE_HOST_LUA_CDIR);
    } else {
        lua_pushliteral(L, PGSTORE_INSTALL_LUA_DIR);
        lua_pushliteral(L, PGSTORE_INSTALL_LUA_CDIR);
    }
    free(bin);
    const char *env_dir = getenv("PGSTORE_LUA_DIR"), *env_cdir = getenv("PGSTORE_LUA_CDIR");
    if (env_dir && *env_dir) {
        lua_pushstring(L, env_dir);
        lua_replace(L, -3);
    }
    if (env_cdir && *env_cdir) {
        lua_pushstring(L, env_cdir);
        lua_replace(L, -2);
    }
    const char *dir = lua_tostring(L, -2), *cdir = lua_tostring(L, -1);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pushfstring(L, "%s/?.so;", cdir);
    lua_getfield(L, -2, "cpath");
    lua_concat(L, 2);
    lua_setfield(L, -2, "cpath");
    drop_cwd_entries(L, "path");
    drop_cwd_entries(L, "cpath");
    lua_pop(L, 3);
}

static int traceback(lua_State *L)
{
    if (!lua_isstring(L, 1) && luaL_callmeta(L, 1, "__tostring"))
        return 1;
    const char *msg = lua_tostring(L, 1);
    if (getenv("PGSTORE_TRACEBACK"))
        luaL_traceback(L, L, msg, 1);
    else
        lua_pushstring(L, msg ? msg : "(error object is not a string)");
    return 1;
}

int main(int argc, char **argv)
{
    /* Before LuaJIT and the modules load (tens of milliseconds): a password
     * in --dsn would be readable in /proc/PID/cmdline all that time. */
    char **args = pgs_host_hide_dsn(argc, argv);
    if (!args) {
        fputs("pgstore: out of memory\n", stderr);
        return 1;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fputs("pgstore: cannot create a Lua state\n", stderr);
        return 1;
    }
    luaL_openlibs(L);
    set_paths(L);
    /* Modules that exist only in the host (the REPL's terminal, signals;
     * pgstore.core, loaded by nginx and busted too, must not have them). */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_pgstore_readline);
    lua_setfield(L, -2, "pgstore.readline");
    lua_pushcfunction(L, luaopen_pgstore_sys);
    lua_setfield(L, -2, "pgstore.sys");
    lua_pop(L, 2);

    lua_pushcfunction(L, traceback);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pgstore.host");
    int status = lua_pcall(L, 1, 1, 1);
    if (status == 0) {
        lua_getfield(L, -1, "main");
        lua_createtable(L, argc, 0);
        for (int i = 0; i < argc; i++) {
            lua_pushstring(L, args[i]);
            lua_rawseti(L, -2, i);
        }
        status = lua_pcall(L, 1, 1, 1);
    }
    int code;
    if (status != 0) {
        fprintf(stderr, "pgstore: %s\n", lua_tostring(L, -1));
        code = 1;
    } else {
        code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    }
    lua_close(L);
    return code;
}
