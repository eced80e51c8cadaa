/* SPDX-License-Identifier: MIT
 * pq.h — libpq inside libpgstore (internal). The public header hides libpq:
 * a pgs_rows_t is a PGresult under another name, converted here and only
 * here, and the statement runner the stores use hands back PGresults.
 */
#ifndef PGS_PQ_H
#define PGS_PQ_H
#include <libpq-fe.h>
#include "pgstore.h"

/* pgs_rows_t is never defined: a pointer to it is a PGresult pointer. */
static inline pgs_rows_t *pgs_rows_wrap(PGresult *res) { return (pgs_rows_t *)res; }
static inline PGresult *pgs_rows_pg(const pgs_rows_t *rows) { return (PGresult *)rows; }

/* pgs_query for the core: on PGS_OK *res (when res is not NULL) is the
 * caller's, to PQclear(). */
pgs_status_t pgs_exec(pgs_conn_t *conn, const char *sql, int nparams,
                      const pgs_param_t *params, PGresult **res, pgs_error_t *err);

/* pgs_pipeline_add for the stores' own statements, which leave nothing in
 * the session: the connection is not marked for a clean on release. */
pgs_status_t pgs_pipeline_add_own(pgs_pipeline_t *p, const char *sql, int nparams,
                                  const pgs_param_t *params, pgs_error_t *err);

/* Rows affected by a command result (0 when not applicable). */
int64_t pgs_result_affected(const PGresult *res);

/* The connection's libpq handle, still owned by conn. */
PGconn *pgs_conn_pg(pgs_conn_t *conn);
#endif
