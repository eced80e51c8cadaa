/* SPDX-License-Identifier: MIT
 * pipeline.c — libpq pipeline mode behind a small queue: statements are
 * sent as they are added (libpq buffers them), one sync ends the batch,
 * and the results come back in order in one round trip.
 *
 * libpq 14+ rules this respects: PQsendQueryParams only (no simple-protocol
 * queries in a pipeline), and after an error every later statement up to the
 * sync comes back PGRES_PIPELINE_ABORTED.
 */
#include "conn.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>

struct pgs_pipeline {
    pgs_conn_t *conn;
    int count;
    int failed;          /* a send failed: the batch is unusable */
};

pgs_status_t pgs_pipeline_begin(pgs_conn_t *c, pgs_pipeline_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_pipeline_t *p = calloc(1, sizeof *p);
    if (!p)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    if (!PQenterPipelineMode(c->pg)) {
        free(p);
        return pgs_error_from_conn(err, PGS_ECONNECTION, "cannot enter pipeline mode: ", c->pg);
    }
    p->conn = c;
    *out = p;
    return PGS_OK;
}

pgs_status_t pgs_pipeline_add(pgs_pipeline_t *p, const char *sql, int nparams,
                              const pgs_param_t *params, pgs_error_t *err)
{
    /* The caller's own SQL: the pool cleans the session on release. */
    p->conn->touched = 1;
    return pgs_pipeline_add_own(p, sql, nparams, params, err);
}

pgs_status_t pgs_pipeline_add_own(pgs_pipeline_t *p, const char *sql, int nparams,
                                  const pgs_param_t *params, pgs_error_t *err)
{
    const char *vstack[32];
    int lstack[32];
    const char **values = nparams > 32 ? malloc((size_t)nparams * sizeof *values) : vstack;
    int *lengths = nparams > 32 ? malloc((size_t)nparams * sizeof *lengths) : lstack;
    pgs_status_t st = PGS_OK;
    if (!values || !lengths) {
        st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nparams; i++) {
        values[i] = params[i].value;
        lengths[i] = params[i].value && params[i].length >= 0 ? params[i].length
                     : params[i].value                        ? (int)strlen(params[i].value)
                                                              : 0;
        if (params[i].value && memchr(params[i].value, '\0', (size_t)lengths[i])) {
            st = pgs_error_set(err, PGS_EINVALID, "parameter $%d contains a NUL byte", i + 1);
            goto done;
        }
    }
    /* Text format throughout: parameters are copied into libpq's buffer. */
    if (!PQsendQueryParams(p->conn->pg, sql, nparams, NULL, values, lengths, NULL, 0)) {
        p->failed = 1;
        st = pgs_error_from_conn(err, PGS_ECONNECTION, "pipeline send failed: ", p->conn->pg);
        goto done;
    }
    p->count++;
done:
    if (values != vstack)
        free(values);
    if (lengths != lstack)
        free(lengths);
    return st;
}

/* Reads until the sync's PGRES_PIPELINE_SYNC so the connection is usable
 * again, keeping per-statement results in `results` when given. */
static pgs_status_t collect(pgs_pipeline_t *p, pgs_rows_t **results, pgs_error_t *err)
{
    PGconn *pg = p->conn->pg;
    pgs_status_t st = PGS_OK;
    int index = 0;
    for (;;) {
        PGresult *r = PQgetResult(pg);
        if (!r) {
            if (PQstatus(pg) == CONNECTION_BAD) {
                if (st == PGS_OK)
                    st = pgs_error_from_conn(err, PGS_ECONNECTION, "pipeline: ", pg);
                return st;
            }
            continue; /* end of one statement's results */
        }
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            return st;
        }
        if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
            if (results && index < p->count)
                results[index] = pgs_rows_wrap(r);
            else
                PQclear(r);
        } else {
            if (st == PGS_OK && s != PGRES_PIPELINE_ABORTED) {
                st = pgs_conn_judge_read_only(p->conn, r, pgs_error_from_result(err, pg, r), err);
                if (err)
                    err->batch = index + 1;
            }
            PQclear(r);
        }
        index++;
    }
}

pgs_status_t pgs_pipeline_run(pgs_pipeline_t *p, pgs_rows_t ***results, int *count,
                              pgs_error_t *err)
{
    PGconn *pg = p->conn->pg;
    pgs_rows_t **rs = NULL;
    pgs_status_t st = PGS_OK;
    if (results) {
        *results = NULL;
        rs = calloc((size_t)(p->count ? p->count : 1), sizeof *rs);
        if (!rs)
            st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    if (p->failed && st == PGS_OK)
        st = pgs_error_set(err, PGS_ECONNECTION, "pipeline send failed");
    if (!PQpipelineSync(pg) && st == PGS_OK)
        st = pgs_error_from_conn(err, PGS_ECONNECTION, "pipeline sync failed: ", pg);
    if (PQstatus(pg) == CONNECTION_OK) {
        pgs_status_t cst = collect(p, rs, st == PGS_OK ? err : NULL);
        if (st == PGS_OK)
            st = cst;
        PQexitPipelineMode(pg);
    }
    if (st == PGS_OK && results) {
        *results = rs;
        if (count)
            *count = p->count;
    } else {
        pgs_results_free(rs, p->count);
    }
    free(p);
    return st;
}

void pgs_pipeline_abort(pgs_pipeline_t *p)
{
    if (!p)
        return;
    if (PQstatus(p->conn->pg) == CONNECTION_OK) {
        PQpipelineSync(p->conn->pg);
        collect(p, NULL, NULL);
        PQexitPipelineMode(p->conn->pg);
    }
    free(p);
}
