/* SPDX-License-Identifier: MIT
 * rows.c — the public face of a statement's result: counts, names, kinds
 * and text values of a PGresult, so programs using libpgstore need no
 * libpq headers and do not break when libpq changes.
 */
#include "pq.h"
#include "conn.h"

#include <errno.h>
#include <stdlib.h>

static int in_range(const PGresult *r, int row, int col)
{
    return r && row >= 0 && row < PQntuples(r) && col >= 0 && col < PQnfields(r);
}

int pgs_rows_count(const pgs_rows_t *rows)
{
    return rows ? PQntuples(pgs_rows_pg(rows)) : 0;
}

int pgs_rows_columns(const pgs_rows_t *rows)
{
    return rows ? PQnfields(pgs_rows_pg(rows)) : 0;
}

const char *pgs_rows_name(const pgs_rows_t *rows, int col)
{
    return rows ? PQfname(pgs_rows_pg(rows), col) : NULL;
}

int pgs_rows_column(const pgs_rows_t *rows, const char *name)
{
    return rows && name ? PQfnumber(pgs_rows_pg(rows), name) : -1;
}

pgs_kind_t pgs_rows_kind(const pgs_rows_t *rows, int col)
{
    const PGresult *r = pgs_rows_pg(rows);
    return r && col >= 0 && col < PQnfields(r) ? pgs_kind_of(PQftype(r, col)) : PGS_KIND_TEXT;
}

int pgs_rows_is_null(const pgs_rows_t *rows, int row, int col)
{
    const PGresult *r = pgs_rows_pg(rows);
    return !in_range(r, row, col) || PQgetisnull(r, row, col);
}

const char *pgs_rows_value(const pgs_rows_t *rows, int row, int col, size_t *len)
{
    const PGresult *r = pgs_rows_pg(rows);
    if (!in_range(r, row, col)) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = (size_t)PQgetlength(r, row, col);
    return PQgetvalue(r, row, col);
}

int64_t pgs_rows_int(const pgs_rows_t *rows, int row, int col, int64_t fallback)
{
    if (pgs_rows_is_null(rows, row, col))
        return fallback;
    const char *v = pgs_rows_value(rows, row, col, NULL);
    if (!(*v == '-' || (*v >= '0' && *v <= '9')))
        return fallback;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    return errno || end == v || *end ? fallback : (int64_t)n;
}

int pgs_rows_is_command(const pgs_rows_t *rows)
{
    return !rows || PQresultStatus(pgs_rows_pg(rows)) != PGRES_TUPLES_OK;
}

int64_t pgs_rows_affected(const pgs_rows_t *rows)
{
    return pgs_result_affected(pgs_rows_pg(rows));
}

void pgs_rows_free(pgs_rows_t *rows)
{
    PQclear(pgs_rows_pg(rows));
}

pgs_status_t pgs_query(pgs_conn_t *conn, const char *sql, int nparams, const pgs_param_t *params,
                       pgs_rows_t **rows, pgs_error_t *err)
{
    PGresult *r = NULL;
    /* The caller's own SQL: the pool cleans the session on release. */
    if (conn)
        conn->touched = 1;
    pgs_status_t st = pgs_exec(conn, sql, nparams, params, rows ? &r : NULL, err);
    if (rows)
        *rows = pgs_rows_wrap(r);
    return st;
}

void pgs_results_free(pgs_rows_t **results, int count)
{
    for (int i = 0; results && i < count; i++)
        pgs_rows_free(results[i]);
    free(results);
}
