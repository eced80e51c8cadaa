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

/* Lets pgstore.sys overwrite the process's arguments (sys.hide_arg); argv
 * stays the caller's. */
void pgs_host_keep_args(int argc, char **argv);
#endif
