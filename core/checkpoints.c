/* SPDX-License-Identifier: MIT
 * checkpoints.c — consumer checkpoints: the last processed global
 * position of each consumer. A save is one atomic statement; given the
 * caller's transaction it commits with the caller's read-model writes
 * (exactly-once projections). The guarded forms (exactly this previous
 * position, or none stored yet) refuse with PGS_ECONFLICT when another
 * worker moved the checkpoint first: the row lock taken by the UPDATE
 * makes the loser re-check against the winner's committed value.
 */
#include "companion.h"

#include <stdlib.h>

enum { SQL_SAVE_ANY, SQL_SAVE_EXACT, SQL_SAVE_NONE, SQL_LOAD, SQL_DELETE, SQL_LIST, SQL_COUNT };

/* Keep in the same order as the enum above. */
static const char *const templates[SQL_COUNT] = {
    "INSERT INTO @table@ (consumer, position, updated_at) VALUES ($1, $2::bigint, now())"
    " ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position,"
    " updated_at = EXCLUDED.updated_at",

    "UPDATE @table@ SET position = $2::bigint, updated_at = now()"
    " WHERE consumer = $1 AND position = $3::bigint",

    "INSERT INTO @table@ (consumer, position, updated_at) VALUES ($1, $2::bigint, now())"
    " ON CONFLICT (consumer) DO NOTHING",

    "SELECT position FROM @table@ WHERE consumer = $1",

    "DELETE FROM @table@ WHERE consumer = $1",

    "SELECT consumer, position AS cursor, updated_at AS time FROM @table@ ORDER BY consumer",
};

static const pgs_companion_kind_t kind = {
    .series = "checkpoints",
    .default_table = "pgstore_checkpoints",
    .key = "consumer",
    .not_found = "no checkpoint for consumer",
    .sql = templates,
    .nsql = SQL_COUNT,
};

struct pgs_checkpoints {
    pgs_companion_t c;
};

pgs_status_t pgs_checkpoints_open(pgs_pool_t *pool, const pgs_checkpoints_opts_t *opts,
                                  pgs_checkpoints_t **out, pgs_error_t *err)
{
    pgs_companion_opts_t o = {0};
    if (opts)
        o = (pgs_companion_opts_t){opts->table, opts->skip_schema_init, 0};
    pgs_companion_t *c;
    pgs_status_t st = pgs_companion_open(&kind, pool, &o, &c, err);
    *out = (pgs_checkpoints_t *)c;
    return st;
}

void pgs_checkpoints_close(pgs_checkpoints_t *cp)
{
    pgs_companion_close((pgs_companion_t *)cp);
}

pgs_status_t pgs_checkpoints_migrate(pgs_checkpoints_t *cp, pgs_error_t *err)
{
    return pgs_companion_migrate(&cp->c, 1, err);
}

pgs_status_t pgs_checkpoints_load(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                  int64_t *position, pgs_error_t *err)
{
    pgs_rows_t *rows;
    pgs_status_t st = pgs_companion_load(&cp->c, tx, SQL_LOAD, consumer, &rows, err);
    if (st == PGS_OK)
        *position = pgs_rows_int(rows, 0, 0, 0);
    pgs_rows_free(rows);
    return st;
}

/* After a guarded save changed nothing: say what is stored instead. */
static pgs_status_t conflict(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                             pgs_checkpoints_expect_t expect, int64_t expected, pgs_error_t *err)
{
    int64_t actual = 0;
    pgs_error_t lerr;
    pgs_status_t st = pgs_checkpoints_load(cp, tx, consumer, &actual, &lerr);
    if (st != PGS_OK && st != PGS_ENOTFOUND) {
        if (err)
            *err = lerr;
        return st;
    }
    /* PGS_CHECKPOINT_NONE_STORED stands for "no checkpoint" on either side. */
    if (expect == PGS_CHECKPOINT_NONE) {
        pgs_error_set(err, PGS_ECONFLICT,
                      "checkpoint of consumer '%.200s' is already at %lld (expected none)",
                      consumer, (long long)actual);
        expected = PGS_CHECKPOINT_NONE_STORED;
    } else if (st == PGS_ENOTFOUND) {
        pgs_error_set(err, PGS_ECONFLICT,
                      "no checkpoint stored for consumer '%.200s' (expected %lld)",
                      consumer, (long long)expected);
        actual = PGS_CHECKPOINT_NONE_STORED;
    } else {
        pgs_error_set(err, PGS_ECONFLICT,
                      "checkpoint of consumer '%.200s' moved: expected %lld, found %lld", consumer,
                      (long long)expected, (long long)actual);
    }
    if (err) {
        err->has_versions = 1;
        err->expected = expected;
        err->actual = actual;
    }
    return PGS_ECONFLICT;
}

pgs_status_t pgs_checkpoints_save(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                  int64_t position, pgs_checkpoints_expect_t expect,
                                  int64_t expected, pgs_error_t *err)
{
    pgs_status_t st = pgs_companion_check_key("consumer", consumer, err);
    if (st == PGS_OK)
        st = pgs_companion_check_version("cursor", position, err);
    if (st == PGS_OK && expect == PGS_CHECKPOINT_EXACT)
        st = pgs_companion_check_version("expected cursor", expected, err);
    if (st == PGS_OK && (expect < PGS_CHECKPOINT_ANY || expect > PGS_CHECKPOINT_NONE))
        st = pgs_error_set(err, PGS_EINVALID, "unknown expectation %d", (int)expect);
    if (st != PGS_OK)
        return st;
    char pos[PGS_I64_BUF], exp[PGS_I64_BUF];
    pgs_param_t p[3] = {{consumer, -1},
                        {pgs_companion_i64(position, pos), -1},
                        {pgs_companion_i64(expected, exp), -1}};
    int which = expect == PGS_CHECKPOINT_EXACT ? SQL_SAVE_EXACT
              : expect == PGS_CHECKPOINT_NONE  ? SQL_SAVE_NONE
                                               : SQL_SAVE_ANY;
    int64_t n = 0;
    st = pgs_companion_exec_count(&cp->c.base, tx, cp->c.sql[which],
                                  which == SQL_SAVE_EXACT ? 3 : 2, p, &n, err);
    if (st != PGS_OK)
        return st;
    if (n == 0)
        return conflict(cp, tx, consumer, expect, expected, err);
    return PGS_OK;
}

pgs_status_t pgs_checkpoints_delete(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                    int64_t *removed, pgs_error_t *err)
{
    return pgs_companion_remove(&cp->c, tx, SQL_DELETE, consumer, removed, err);
}

pgs_status_t pgs_checkpoints_list(pgs_checkpoints_t *cp, pgs_conn_t *tx, pgs_rows_t **rows,
                                  pgs_error_t *err)
{
    return pgs_companion_list(&cp->c, tx, SQL_LIST, rows, err);
}
