/* SPDX-License-Identifier: MIT
 * host.h — modules only the host has, registered by main.c in
 * package.preload: the terminal (readline.c → "pgstore.readline") and the
 * process facts, arguments and signals (sys.c → "pgstore.sys").
 */
#ifndef PGS_HOST_H
#define PGS_HOST_H
#include <lua.h>

int luaopen_pgstore_readline(lua_State *L);
int luaopen_pgstore_sys(lua_State *L);

/* Called first in main(), before anything is loaded: overwrites the value
 * of --dsn X / --dsn=X in argv with '*' (it may hold a password, and other
 * local users read /proc/PID/cmdline) and returns copies of every argument
 * as given, for the Lua side (NULL when out of memory). sys.show_arg puts
 * a value back once the host found no password in it. */
char **pgs_host_hide_dsn(int argc, char **argv);
#endif
