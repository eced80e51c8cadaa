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

/* The same; *n (may be NULL) = the rows the statement affected (an
 * UPDATE, INSERT or DELETE). */
pgs_status_t pgs_companion_exec_count(pgs_store_base_t *b, pgs_conn_t *tx, const char *sql,
                                      int nparams, const pgs_param_t *params, int64_t *n,
                                      pgs_error_t *err);

/* Builds a store's SQL once: out[i] = tmpl[i] with its @table@ filled
 * (sql.h). On failure every out[i] is NULL. */
pgs_status_t pgs_companion_build_sql(const pgs_store_base_t *b, char **out,
                                     const char *const *tmpl, int n, pgs_error_t *err);
void pgs_companion_free_sql(char **sql, int n);

/* ---- the keyed stores ------------------------------------------------------
 * Snapshots, checkpoints, execution checkpoints and sessions are one table
 * keyed by a text column, differing only in data: the description below.
 * Each store's file holds its description and its own save; opening,
 * closing, migrating and the keyed reads and deletes are here. */

/* The most statements one store has. */
#define PGS_COMPANION_MAX_SQL 8

typedef struct pgs_companion_kind {
    const char *series;        /* core/sql/<series>--*.sql and its migration key */
    const char *default_table; /* the table when the options name none */
    const char *key;           /* the key as messages name it: "stream" */
    const char *not_found;     /* load's message for an absent key, before
                                  " '<key>'": "no snapshot of stream" */
    const char *const *sql;    /* the statements, @table@ unfilled */
    int nsql;                  /* at most PGS_COMPANION_MAX_SQL */
} pgs_companion_kind_t;

/* A keyed store; each store's struct holds it as its one member. */
typedef struct pgs_companion {
    pgs_store_base_t base;
    const pgs_companion_kind_t *kind;
    size_t max_value;                 /* max_value_size, or the default */
    char *sql[PGS_COMPANION_MAX_SQL]; /* kind->sql with the table filled */
} pgs_companion_t;

/* What every keyed store's options hold (pgs_<kind>_opts_t). */
typedef struct pgs_companion_opts {
    const char *table; /* NULL → kind->default_table */
    int skip_schema_init;
    size_t max_value_size; /* 0 → PGS_COMPANION_MAX_VALUE */
} pgs_companion_opts_t;

/* Opens a store of `kind`: names its table, builds its SQL, and migrates
 * (or, with skip_schema_init, checks) its schema. On PGS_OK *out is owned
 * by the caller: pgs_companion_close() it. */
pgs_status_t pgs_companion_open(const pgs_companion_kind_t *kind, pgs_pool_t *pool,
                                const pgs_companion_opts_t *opts, pgs_companion_t **out,
                                pgs_error_t *err);
/* Frees the store; NULL is fine. */
void pgs_companion_close(pgs_companion_t *c);

/* The store's schema on open or by hand: with migrate, the runner over
 * core/sql/<series>--*.sql (which also re-creates a table dropped by
 * hand); without, a check that the table exists (PGS_ENOTFOUND naming it). */
pgs_status_t pgs_companion_migrate(pgs_companion_t *c, int migrate, pgs_error_t *err);

/* Runs statement `which` with the key as $1, after checking the key. On
 * PGS_OK *res is owned by the caller: PQclear() it. */
pgs_status_t pgs_companion_keyed(pgs_companion_t *c, pgs_conn_t *tx, int which, const char *key,
                                 PGresult **res, pgs_error_t *err);
/* The key's row from statement `which`: PGS_ENOTFOUND (kind->not_found)
 * when there is none; on PGS_OK *rows is owned by the caller. */
pgs_status_t pgs_companion_load(pgs_companion_t *c, pgs_conn_t *tx, int which, const char *key,
                                pgs_rows_t **rows, pgs_error_t *err);
/* Runs statement `which` for the key (or, for _all, with no parameter);
 * *removed (may be NULL) = the rows it affected. */
pgs_status_t pgs_companion_remove(pgs_companion_t *c, pgs_conn_t *tx, int which, const char *key,
                                  int64_t *removed, pgs_error_t *err);
pgs_status_t pgs_companion_remove_all(pgs_companion_t *c, pgs_conn_t *tx, int which,
                                      int64_t *removed, pgs_error_t *err);
/* Every row of statement `which` (no parameter); *rows is owned by the
 * caller, also on failure (NULL then). */
pgs_status_t pgs_companion_list(pgs_companion_t *c, pgs_conn_t *tx, int which, pgs_rows_t **rows,
                                pgs_error_t *err);
#endif
