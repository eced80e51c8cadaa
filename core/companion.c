/* SPDX-License-Identifier: MIT
 * companion.c — the plumbing the companion stores share (see companion.h).
 */
#include "companion.h"
#include "sql.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pgs_companion_i64(int64_t v, char *buf)
{
    snprintf(buf, PGS_I64_BUF, "%" PRId64, v);
    return buf;
}

pgs_status_t pgs_companion_input_error(pgs_status_t st, pgs_error_t *err)
{
    if (st != PGS_ESQL || !err)
        return st;
    const char *s = err->sqlstate;
    if (strncmp(s, "22", 2) == 0 || strcmp(s, "54000") == 0 || strcmp(s, "23514") == 0) {
        err->code = PGS_EINVALID;
        return PGS_EINVALID;
    }
    return st;
}

pgs_status_t pgs_companion_check_key(const char *what, const char *s, pgs_error_t *err)
{
    if (!s)
        return pgs_error_set(err, PGS_EINVALID, "%s must be a string, got NULL", what);
    if (!*s)
        return pgs_error_set(err, PGS_EINVALID, "%s must not be empty", what);
    return PGS_OK;
}

pgs_status_t pgs_companion_check_size(const char *what, size_t n, size_t max, pgs_error_t *err)
{
    if (n > max)
        return pgs_error_set(err, PGS_EINVALID,
                             "%s is %zu bytes, more than max_value_size (%zu bytes)", what, n, max);
    return PGS_OK;
}

pgs_status_t pgs_companion_check_version(const char *what, int64_t v, pgs_error_t *err)
{
    if (v < 0)
        return pgs_error_set(err, PGS_EINVALID, "%s must not be negative, got %" PRId64, what, v);
    return PGS_OK;
}

pgs_status_t pgs_companion_exec(pgs_store_base_t *b, pgs_conn_t *tx, const char *sql,
                                int nparams, const pgs_param_t *params, PGresult **res,
                                pgs_error_t *err)
{
    if (res)
        *res = NULL;
    if (!sql)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_conn_t *c;
    pgs_status_t st = pgs_store_begin(b, tx, &c, err);
    if (st != PGS_OK)
        return st;
    st = pgs_exec(c, sql, nparams, params, res, err);
    pgs_store_end(b, tx, c);
    return pgs_companion_input_error(st, err);
}

pgs_status_t pgs_companion_build_sql(const pgs_store_base_t *b, char **out,
                                     const char *const *tmpl, int n, pgs_error_t *err)
{
    const char *names[] = {"table"}, *values[] = {b->table};
    return pgs_sql_fill_all(tmpl, n, names, values, 1, out, err);
}

void pgs_companion_free_sql(char **sql, int n)
{
    pgs_sql_free_all(sql, n);
}

pgs_status_t pgs_companion_migrate(pgs_store_base_t *b, const char *series, int migrate,
                                   pgs_error_t *err)
{
    pgs_schema_t s;
    pgs_store_schema(b, series, series, &s);
    return pgs_migrate_open(b->pool, &s, migrate, err);
}
