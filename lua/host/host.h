/* SPDX-License-Identifier: MIT
 * host.h — modules only the host has: the terminal module (readline.c),
 * registered by main.c as package.preload["pgstore.readline"].
 */
#ifndef PGS_HOST_H
#define PGS_HOST_H
#include <lua.h>

int luaopen_pgstore_readline(lua_State *L);
#endif
