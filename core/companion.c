/* SPDX-License-Identifier: MIT
 * companion.c — the plumbing the companion stores share (see companion.h).
 */
#include "companion.h"
#include "sql.h"
#include "utf8.h"

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
    return pgs_utf8_check(what, s, strlen(s), err);
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

pgs_status_t pgs_companion_exec_count(pgs_store_base_t *b, pgs_conn_t *tx, const char *sql,
                                      int nparams, const pgs_param_t *params, int64_t *n,
                                      pgs_error_t *err)
{
    PGresult *r;
    pgs_status_t st = pgs_companion_exec(b, tx, sql, nparams, params, &r, err);
    if (st == PGS_OK && n)
        *n = pgs_result_affected(r);
    PQclear(r);
    return st;
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

/* ---- the keyed stores ---------------------------------------------------- */

pgs_status_t pgs_companion_open(const pgs_companion_kind_t *kind, pgs_pool_t *pool,
                                const pgs_companion_opts_t *opts, pgs_companion_t **out,
                                pgs_error_t *err)
{
    *out = NULL;
    pgs_companion_t *c = calloc(1, sizeof *c);
    if (!c)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_store_init(&c->base, pool, opts->table, kind->default_table, err);
    if (st != PGS_OK) {
        free(c);
        return st;
    }
    c->kind = kind;
    c->max_value = opts->max_value_size ? opts->max_value_size : PGS_COMPANION_MAX_VALUE;
    st = pgs_companion_build_sql(&c->base, c->sql, kind->sql, kind->nsql, err);
    if (st == PGS_OK)
        st = pgs_companion_migrate(c, !opts->skip_schema_init, err);
    if (st != PGS_OK) {
        pgs_companion_close(c);
        return st;
    }
    *out = c;
    return PGS_OK;
}

void pgs_companion_close(pgs_companion_t *c)
{
    if (!c)
        return;
    pgs_companion_free_sql(c->sql, c->kind->nsql);
    pgs_store_fini(&c->base);
    free(c);
}

pgs_status_t pgs_companion_migrate(pgs_companion_t *c, int migrate, pgs_error_t *err)
{
    pgs_schema_t s;
    pgs_store_schema(&c->base, c->kind->series, c->kind->series, &s);
    return pgs_migrate_open(c->base.pool, &s, migrate, err);
}

pgs_status_t pgs_companion_keyed(pgs_companion_t *c, pgs_conn_t *tx, int which, const char *key,
                                 PGresult **res, pgs_error_t *err)
{
    *res = NULL;
    pgs_status_t st = pgs_companion_check_key(c->kind->key, key, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {key, -1};
    return pgs_companion_exec(&c->base, tx, c->sql[which], 1, &p, res, err);
}

pgs_status_t pgs_companion_load(pgs_companion_t *c, pgs_conn_t *tx, int which, const char *key,
                                pgs_rows_t **rows, pgs_error_t *err)
{
    *rows = NULL;
    PGresult *r;
    pgs_status_t st = pgs_companion_keyed(c, tx, which, key, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return pgs_error_set(err, PGS_ENOTFOUND, "%s '%.200s'", c->kind->not_found, key);
    }
    *rows = pgs_rows_wrap(r);
    return PGS_OK;
}

pgs_status_t pgs_companion_remove(pgs_companion_t *c, pgs_conn_t *tx, int which, const char *key,
                                  int64_t *removed, pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key(c->kind->key, key, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {key, -1};
    return pgs_companion_exec_count(&c->base, tx, c->sql[which], 1, &p, removed, err);
}

pgs_status_t pgs_companion_remove_all(pgs_companion_t *c, pgs_conn_t *tx, int which,
                                      int64_t *removed, pgs_error_t *err)
{
    return pgs_companion_exec_count(&c->base, tx, c->sql[which], 0, NULL, removed, err);
}

pgs_status_t pgs_companion_list(pgs_companion_t *c, pgs_conn_t *tx, int which, pgs_rows_t **rows,
                                pgs_error_t *err)
{
    PGresult *r = NULL;
    pgs_status_t st = pgs_companion_exec(&c->base, tx, c->sql[which], 0, NULL, &r, err);
    *rows = pgs_rows_wrap(r);
    return st;
}
