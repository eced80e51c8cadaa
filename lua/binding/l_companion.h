/* SPDX-License-Identifier: MIT
 * l_companion.h — what the companion store bindings (l_snapshots.c,
 * l_checkpoints.c, l_exec_checkpoints.c, l_sessions.c, l_kv.c) share: the
 * store userdata, argument readers and result pushers (options: opts.h).
 */
#ifndef PGS_L_COMPANION_H
#define PGS_L_COMPANION_H
#include "binding.h"
#include "opts.h"

/* A store userdata holds the C store, NULL until opened and after close. */
typedef struct {
    void *store;
} pgs_lstore_t;

/* Pushes a new, closed store userdata with metatable mt. */
pgs_lstore_t *pgs_l_store_new(lua_State *L, const char *mt);
/* The open store at idx; raises on a wrong type or a closed store. */
void *pgs_l_store_check(lua_State *L, int idx, const char *mt);
/* Takes the store out of the userdata at idx (NULL when already closed):
 * the caller closes it. */
void *pgs_l_store_take(lua_State *L, int idx, const char *mt);
/* Creates metatable mt with methods as __index, __gc = gc and a
 * __tostring saying "<mt> (closed)" once closed. Leaves nothing pushed. */
void pgs_l_store_register(lua_State *L, const char *mt, const luaL_Reg *methods,
                          lua_CFunction gc);

/* An integral number argument within int64; raises otherwise. */
int64_t pgs_l_int64(lua_State *L, int idx);


/* Pushes the first row of res as a table (columns by name, converted like
 * query results), then frees res. */
void pgs_l_push_first_row(lua_State *L, PGresult *res);
/* Pushes `true` for PGS_OK, else nil, err; returns the count pushed. */
int pgs_l_push_status(lua_State *L, pgs_status_t st, const pgs_error_t *err);
/* Pushes a row count (PGS_OK) or nil, err. */
int pgs_l_push_count(lua_State *L, pgs_status_t st, int64_t n, const pgs_error_t *err);
#endif
