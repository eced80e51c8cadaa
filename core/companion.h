/* SPDX-License-Identifier: MIT
 * companion.h — what the companion stores (snapshots, checkpoints,
 * execution checkpoints, sessions, kv) share beyond store.h: one-statement
 * execution on the caller's transaction or a pooled connection, bad input
 * reported as PGS_EINVALID whether caught here or by the server, SQL
 * built once from @table@ templates, and the schema through the one
 * migration runner. Internal.
 */
#ifndef PGS_COMPANION_H
#define PGS_COMPANION_H
#include "store.h"

/* Default cap on one stored value (KV value, JSON document), in bytes. */
#define PGS_COMPANION_MAX_VALUE (1024 * 1024)

/* Room for any int64 in decimal, sign and NUL included. */
#define PGS_I64_BUF 24

/* Formats v in decimal into buf (PGS_I64_BUF bytes); returns buf. */
const char *pgs_companion_i64(int64_t v, char *buf);

/* Turns server rejections of the data itself (SQLSTATE class 22: invalid
 * UTF-8, malformed JSON, \u0000 in jsonb …; 54000: a key too large for
 * its index; 23514: a CHECK) into PGS_EINVALID, keeping the SQLSTATE.
 * Returns the (possibly new) status. */
pgs_status_t pgs_companion_input_error(pgs_status_t st, pgs_error_t *err);

/* PGS_EINVALID unless s is a non-empty string. `what` names it in the
 * message ("key", "stream", …). */
pgs_status_t pgs_companion_check_key(const char *what, const char *s, pgs_error_t *err);

/* PGS_EINVALID when n bytes exceed max (the store's max_value_size). */
pgs_status_t pgs_companion_check_size(const char *what, size_t n, size_t max, pgs_error_t *err);

/* PGS_EINVALID when v is negative. */
pgs_status_t pgs_companion_check_version(const char *what, int64_t v, pgs_error_t *err);

/* Runs one statement on `tx`, or on a connection borrowed from b's pool for
 * just this statement, and maps bad-input SQLSTATEs. On PGS_OK *res (when
 * res is not NULL) is owned by the caller: PQclear() it. */
pgs_status_t pgs_companion_exec(pgs_store_base_t *b, pgs_conn_t *tx, const char *sql,
                                int nparams, const pgs_param_t *params, PGresult **res,
                                pgs_error_t *err);

/* Builds a store's SQL once: out[i] = tmpl[i] with its @table@ filled
 * (sql.h). On failure every out[i] is NULL. */
pgs_status_t pgs_companion_build_sql(const pgs_store_base_t *b, char **out,
                                     const char *const *tmpl, int n, pgs_error_t *err);
void pgs_companion_free_sql(char **sql, int n);

/* The store's schema on open or by hand: with migrate, the runner over
 * core/sql/<series>--*.sql (which also re-creates a table dropped by
 * hand); without, a check that the table exists (PGS_ENOTFOUND naming it). */
pgs_status_t pgs_companion_migrate(pgs_store_base_t *b, const char *series, int migrate,
                                   pgs_error_t *err);
#endif
