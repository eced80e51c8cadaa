/* SPDX-License-Identifier: MIT
 * l_companion.h — what the companion store bindings (l_snapshots.c,
 * l_checkpoints.c, l_exec_checkpoints.c, l_sessions.c, l_kv.c) share
 * beyond util.h: argument and option readers, the first-row pusher.
 */
#ifndef PGS_L_COMPANION_H
#define PGS_L_COMPANION_H
#include "binding.h"

/* The open store at idx; raises on a wrong type or a closed store. */
void *pgs_l_store_check(lua_State *L, int idx, const char *mt);

/* An integral number argument within int64; raises otherwise. */
int64_t pgs_l_int64(lua_State *L, int idx);

/* Fields of an options table at idx (absent → default; a wrong type
 * raises naming the option). */
const char *pgs_l_opt_string(lua_State *L, int idx, const char *k);
double pgs_l_opt_number(lua_State *L, int idx, const char *k, double dflt);
int pgs_l_opt_bool(lua_State *L, int idx, const char *k);
/* A byte count option: a whole number from 0 to PGS_L_MAX_SIZE. */
#define PGS_L_MAX_SIZE (1024.0 * 1024 * 1024)
size_t pgs_l_opt_size(lua_State *L, int idx, const char *k);

/* Pushes the first row of res as a table (columns by name, converted like
 * query results), then frees res. */
void pgs_l_push_first_row(lua_State *L, pgs_rows_t *res);
#endif
