/* SPDX-License-Identifier: MIT
 * l_companion.h — what the companion store bindings (l_snapshots.c,
 * l_checkpoints.c, l_exec_checkpoints.c, l_sessions.c, l_kv.c) share
 * beyond util.h: the store class as data (constructor, close, migrate,
 * __gc made from it), the arguments of a keyed method, argument readers
 * and the row pushers (options: opts.h).
 */
#ifndef PGS_L_COMPANION_H
#define PGS_L_COMPANION_H
#include "binding.h"
#include "opts.h"

/* A companion store as pgstore.core sees it. pgs_l_store_register makes
 * core.<name>(pool, opts) → store | nil, err, and store:close(),
 * store:migrate() → true | nil, err and __gc from it; the store's file
 * gives its own methods and reads its own options. */
typedef struct pgs_l_store_class {
    const char *name; /* the constructor in pgstore.core: "snapshots" */
    const char *mt;   /* its metatable: PGS_SNAPSHOTS_MT */
    /* Reads the options table at index 2 (may raise) and opens the store
     * into *out (NULL on failure). */
    pgs_status_t (*open)(lua_State *L, pgs_pool_t *pool, void **out, pgs_error_t *err);
    void (*close)(void *store);
    pgs_status_t (*migrate)(void *store, pgs_error_t *err);
    const luaL_Reg *methods; /* the store's own, NULL-terminated */
} pgs_l_store_class_t;

/* Registers the class and sets core.<name> in the table at the top of the
 * stack. cls must outlive the Lua state (a static). */
void pgs_l_store_register(lua_State *L, const pgs_l_store_class_t *cls);

/* The open store at idx; raises on a wrong type or a closed store. */
void *pgs_l_store_check(lua_State *L, int idx, const char *mt);

/* The arguments of a keyed method, store:m(key, [conn]): the store at 1
 * (raises when closed), the key at 2 (`what` names it in errors), the
 * caller's transaction connection at 3. Returns 0, with err filled, for a
 * key the core would cut (a NUL byte): push err. */
typedef struct pgs_l_keyed {
    void *store;
    const char *key;
    pgs_conn_t *tx;
    pgs_error_t err;
} pgs_l_keyed_t;
int pgs_l_keyed_args(lua_State *L, const char *mt, const char *what, pgs_l_keyed_t *a);

/* An integral number argument within int64; raises otherwise. */
int64_t pgs_l_int64(lua_State *L, int idx);

/* Pushes the first row of res as a table (columns by name, converted like
 * query results), then frees res. */
void pgs_l_push_first_row(lua_State *L, pgs_rows_t *res);

/* Pushes what a load returned: on PGS_OK the first row (freeing res); on
 * PGS_ENOTFOUND nil when absent_is_nil, else nil, err; otherwise nil, err. */
int pgs_l_push_loaded(lua_State *L, pgs_status_t st, pgs_rows_t *res, int absent_is_nil,
                      const pgs_error_t *err);
#endif
