/* SPDX-License-Identifier: MIT
 * l_companion.h — what the companion store bindings (l_snapshots.c,
 * l_checkpoints.c, l_exec_checkpoints.c, l_sessions.c, l_kv.c) share
 * beyond util.h: argument readers and the first-row pusher (options: opts.h).
 */
#ifndef PGS_L_COMPANION_H
#define PGS_L_COMPANION_H
#include "binding.h"
#include "opts.h"

/* The open store at idx; raises on a wrong type or a closed store. */
void *pgs_l_store_check(lua_State *L, int idx, const char *mt);

/* An integral number argument within int64; raises otherwise. */
int64_t pgs_l_int64(lua_State *L, int idx);


/* Pushes the first row of res as a table (columns by name, converted like
 * query results), then frees res. */
void pgs_l_push_first_row(lua_State *L, pgs_rows_t *res);
#endif
