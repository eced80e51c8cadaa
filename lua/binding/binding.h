/* SPDX-License-Identifier: MIT
 * binding.h — shared pieces of the pgstore.core Lua binding: error pushing,
 * the converters between Lua values and libpq, and each file's open
 * function (metatable names and handles: util.h). Only luaopen_pgstore_core
 * is exported from the module.
 */
#ifndef PGS_BINDING_H
#define PGS_BINDING_H

#include <lauxlib.h>
#include <lua.h>

#include "pgstore.h"
#include "util.h"

/* Pushes nil and an error table; returns 2 for `return push_error(...)`. */
int pgs_l_push_error(lua_State *L, const pgs_error_t *err);
/* Pushes just the error table. */
void pgs_l_error_table(lua_State *L, const pgs_error_t *err);
void pgs_l_error_open(lua_State *L);

/* Converts Lua values at stack indexes first..last into parameters. The
 * returned array and any formatted numbers live in a userdata pushed on the
 * stack (so they are collected even if a later call raises); strings point
 * into Lua strings that stay on the stack. `fname` names the Lua function
 * in argument errors; argument numbers are index - argbase. */
pgs_param_t *pgs_l_params(lua_State *L, int first, int last, int argbase, const char *fname);

/* A text argument (key, id, stream, SQL). Raises when it is not a string;
 * returns NULL and fills err (PGS_EINVALID) when it holds a NUL byte,
 * which the C string would silently be cut at. */
const char *pgs_l_text(lua_State *L, int idx, const char *what, pgs_error_t *err);
/* The same for an optional argument: NULL for nil or none (*ok stays 1),
 * NULL with *ok = 0 and err filled for a NUL byte. */
const char *pgs_l_opt_text(lua_State *L, int idx, const char *what, pgs_error_t *err, int *ok);
/* The string at idx (an option's value, say); a NUL byte raises "bad
 * option '<name>' (contains a NUL byte)". */
const char *pgs_l_checkcstr(lua_State *L, int idx, const char *name);
/* A number argument as int64_t without undefined conversions: NaN gives
 * INT64_MIN and values beyond the range saturate, so the core's range
 * checks refuse them. dflt for nil/none. */
int64_t pgs_l_optint64(lua_State *L, int idx, int64_t dflt);

/* Pushes an array of row tables keyed by column name, then frees res.
 * res is owned by a box on the stack while converting. */
void pgs_l_push_rows(lua_State *L, pgs_rows_t *res);
/* The same for the first max_rows rows and max_cols columns (-1: all). */
void pgs_l_push_rows_n(lua_State *L, pgs_rows_t *res, int max_rows, int max_cols);
void pgs_l_convert_open(lua_State *L);

void pgs_l_pool_open(lua_State *L);
/* core.limits, core.check_table/check_channel/check_notify, core.quote_ident
 * (l_names.c): the core's name rules, set on the module table at the top. */
void pgs_l_names_open(lua_State *L);
void pgs_l_events_open(lua_State *L);

/* The companion stores: each sets its constructor on the module table at
 * the top of the stack (core.snapshots, core.checkpoints, …). */
void pgs_l_snapshots_open(lua_State *L);
void pgs_l_checkpoints_open(lua_State *L);
void pgs_l_exec_checkpoints_open(lua_State *L);
void pgs_l_sessions_open(lua_State *L);
void pgs_l_kv_open(lua_State *L);

/* The pool inside a pgstore.pool userdata at idx (raises when closed). */
pgs_pool_t *pgs_l_checkpool(lua_State *L, int idx);
/* A transaction's connection: a pgstore.conn userdata at idx, or NULL when
 * the value there is nil/none. Raises on anything else or a released one. */
pgs_conn_t *pgs_l_optconn(lua_State *L, int idx);

/* Live delivery and coordination: listener + NOTIFY, partition leases and
 * hashes, locks. Each registers its metatable and constructors on the
 * module table at the top of the stack. */
void pgs_l_listener_open(lua_State *L);
void pgs_l_lease_open(lua_State *L);
void pgs_l_lock_open(lua_State *L);

/* core.park/unpark/…: handles handed between the Lua VMs of one process
 * (l_park.c). Sets its functions on the module table at the top. */
void pgs_l_park_open(lua_State *L);
#endif
