/* SPDX-License-Identifier: MIT
 * opts.h — the binding's one reader of options tables: each field with its
 * type checked and one set of messages ("bad option 'k' (string expected,
 * got number)"), the C side of pgstore.options. An absent table (none or
 * nil) or an absent field gives the default.
 */
#ifndef PGS_L_OPTS_H
#define PGS_L_OPTS_H
#include "binding.h"

/* The largest byte count a size option takes: 1 GiB, PostgreSQL's own limit
 * for one value. */
#define PGS_L_MAX_SIZE (1024.0 * 1024 * 1024)

/* A string field; a NUL byte raises. The string stays owned by the options
 * table, valid while the table is on the stack. */
const char *pgs_l_opt_string(lua_State *L, int t, const char *k);
/* A number field, any value. */
double pgs_l_opt_number(lua_State *L, int t, const char *k, double dflt);
/* A number field that must not be negative (nor NaN). */
double pgs_l_opt_nonneg(lua_State *L, int t, const char *k, double dflt);
/* Seconds (a timeout, TTL or interval): 0 to PGS_SECONDS_MAX; NaN,
 * infinities and negatives raise. */
double pgs_l_opt_seconds(lua_State *L, int t, const char *k, double dflt);
/* A whole number from lo to hi. */
int pgs_l_opt_int(lua_State *L, int t, const char *k, int lo, int hi, int dflt);
/* A byte count: a whole number from 0 to PGS_L_MAX_SIZE (absent: 0). */
size_t pgs_l_opt_size(lua_State *L, int t, const char *k);
/* A boolean field (absent: 0). */
int pgs_l_opt_bool(lua_State *L, int t, const char *k);
/* One of the strings in names (NULL-terminated), as its index; absent:
 * the index of dflt. */
int pgs_l_opt_enum(lua_State *L, int t, const char *k, const char *dflt, const char *const names[]);

#endif
