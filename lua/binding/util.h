/* SPDX-License-Identifier: MIT
 * util.h — what every file of the binding shares: the metatable names, the
 * handle userdata (one pointer to a core object, NULL while closed), the
 * result pushers, and boxes that own malloc'd buffers while Lua may raise.
 */
#ifndef PGS_L_UTIL_H
#define PGS_L_UTIL_H

#include <lauxlib.h>
#include <lua.h>

#include "pgstore.h"

/* Metatable names: every userdata type of pgstore.core. */
#define PGS_POOL_MT "pgstore.pool"
#define PGS_CONN_MT "pgstore.conn"
#define PGS_RESULT_MT "pgstore.result"
#define PGS_PARAMS_MT "pgstore.params"
#define PGS_EVENTS_MT "pgstore.events"
#define PGS_SNAPSHOTS_MT "pgstore.snapshots"
#define PGS_CHECKPOINTS_MT "pgstore.checkpoints"
#define PGS_EXEC_CHECKPOINTS_MT "pgstore.exec_checkpoints"
#define PGS_SESSIONS_MT "pgstore.sessions"
#define PGS_KV_MT "pgstore.kv"
#define PGS_KV_INIT_MT "pgstore.kv_init"
#define PGS_LISTENER_MT "pgstore.listener"
#define PGS_LEASE_MT "pgstore.lease"
#define PGS_LOCK_MT "pgstore.lock"
#define PGS_OWNED_MT "pgstore.owned"

/* ---- handles ------------------------------------------------------------------
 * A handle owns one core object. It is pushed closed (ptr NULL) before the
 * object is opened into it, so nothing leaks if opening fails or Lua
 * raises; close() takes the pointer out, then frees; __gc closes only what
 * is still open (liolib's newprefile / aux_close / f_gc). */
typedef struct pgs_l_handle {
    void *ptr;
} pgs_l_handle_t;

/* Pushes a new, closed handle with metatable mt. */
pgs_l_handle_t *pgs_l_handle_new(lua_State *L, const char *mt);
/* The open object of the handle at idx; raises on a wrong type, and with
 * `closed` ("attempt to use a closed listener") when it is closed. */
void *pgs_l_handle_check(lua_State *L, int idx, const char *mt, const char *closed);
/* The object, NULL when closed; raises only on a wrong type. */
void *pgs_l_handle_get(lua_State *L, int idx, const char *mt);
/* Takes the object out of the handle (NULL when already closed): the
 * caller frees it. */
void *pgs_l_handle_take(lua_State *L, int idx, const char *mt);

/* Hides the metatable at the top of the stack: getmetatable() on what has
 * it gives false. Every metatable of the binding is shared by the whole
 * process, so script code must not be able to reach or change one. The C
 * side (luaL_checkudata, lua_getmetatable) still sees it. */
void pgs_l_metatable_hide(lua_State *L);

/* Creates metatable mt (hidden): methods as __index, gc as __gc, and tostring as
 * __tostring — NULL for the default, "<mt> (0x…)" or "<mt> (closed)".
 * Leaves nothing pushed. */
void pgs_l_class_register(lua_State *L, const char *mt, const luaL_Reg *methods,
                          lua_CFunction gc, lua_CFunction tostring);

/* ---- results ------------------------------------------------------------------- */

/* Pushes `true` for PGS_OK, else nil, err; returns the count pushed. */
int pgs_l_push_status(lua_State *L, pgs_status_t st, const pgs_error_t *err);
/* Pushes a row count (PGS_OK) or nil, err. */
int pgs_l_push_count(lua_State *L, pgs_status_t st, int64_t n, const pgs_error_t *err);

/* Fields of the table at the top of the stack, for info and stats tables:
 * t[k] = v. pgs_l_set_error sets an error table, and nothing when err's
 * code is PGS_OK. */
void pgs_l_set_number(lua_State *L, const char *k, lua_Number v);
void pgs_l_set_bool(lua_State *L, const char *k, int v);
void pgs_l_set_string(lua_State *L, const char *k, const char *v);
void pgs_l_set_error(lua_State *L, const char *k, const pgs_error_t *err);

/* ---- owned buffers ----------------------------------------------------------------
 * Pushes a box that free()s p when collected, so a malloc'd C buffer
 * survives Lua calls that may raise; pgs_l_free_owned(L, idx) frees it now
 * (the box stays, empty). */
void pgs_l_own(lua_State *L, void *p);
void pgs_l_free_owned(lua_State *L, int idx);

/* Registers the metatables util.c itself needs. */
void pgs_l_util_open(lua_State *L);
#endif
