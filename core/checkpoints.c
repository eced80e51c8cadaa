/* SPDX-License-Identifier: MIT
 * checkpoints.c — consumer checkpoints: the last processed global
 * position of each consumer of one event store. A checkpoint belongs to
 * (store, consumer): the store is the event table resolved like the event
 * store resolves it (store.c), so every spelling of one table is one
 * store, and one consumer name on two stores is two checkpoints. A save
 * is one atomic statement; given the caller's transaction it commits with
 * the caller's read-model writes (exactly-once projections). The guarded
 * forms (exactly this previous position, or none stored yet) refuse with
 * PGS_ECONFLICT when another worker moved the checkpoint first: the row
 * lock taken by the UPDATE makes the loser re-check against the winner's
 * committed value.
 */
#include "companion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SQL_SAVE_ANY, SQL_SAVE_EXACT, SQL_SAVE_NONE, SQL_LOAD, SQL_DELETE, SQL_LIST, SQL_COUNT };

/* $1 is always the store, $2 the consumer. Keep in the same order as the
 * enum above. */
static const char *const templates[SQL_COUNT] = {
    "INSERT INTO @table@ (store, consumer, position, updated_at)"
    " VALUES ($1, $2, $3::bigint, now())"
    " ON CONFLICT (store, consumer) DO UPDATE SET position = EXCLUDED.position,"
    " updated_at = EXCLUDED.updated_at",

    "UPDATE @table@ SET position = $3::bigint, updated_at = now()"
    " WHERE store = $1 AND consumer = $2 AND position = $4::bigint",

    "INSERT INTO @table@ (store, consumer, position, updated_at)"
    " VALUES ($1, $2, $3::bigint, now())"
    " ON CONFLICT (store, consumer) DO NOTHING",

    "SELECT position FROM @table@ WHERE store = $1 AND consumer = $2",

    "DELETE FROM @table@ WHERE store = $1 AND consumer = $2",

    "SELECT consumer, position AS cursor, updated_at AS time, store FROM @table@"
    " WHERE store = $1 ORDER BY consumer",
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
    pgs_companion_t *c;
    char store[2 * 64]; /* the event store, resolved: schema.table */
};

/* Whether the (existing) table has its store column: 1, 0, or -1 with err. */
static int has_store_column(pgs_companion_t *c, pgs_error_t *err)
{
    PGresult *r;
    pgs_param_t p = {c->base.table, -1};
    pgs_status_t st = pgs_companion_exec(
        &c->base, NULL,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass($1)"
        " AND attname = 'store' AND NOT attisdropped",
        1, &p, &r, err);
    if (st != PGS_OK)
        return -1;
    int has = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    PQclear(r);
    return has;
}

/* Opened without migrations, the table must be at version 2: at version 1
 * it has no store column, and every statement here keys by store. */
static pgs_status_t require_store_column(pgs_checkpoints_t *cp, pgs_error_t *err)
{
    int has = has_store_column(cp->c, err);
    if (has > 0)
        return PGS_OK;
    if (has < 0)
        return err ? err->code : PGS_ESQL;
    pgs_status_t st = pgs_error_set(err, PGS_ENOTFOUND,
                                    "checkpoint table %s is at version 1 (no store column)",
                                    cp->c->base.raw);
    if (err)
        snprintf(err->hint, sizeof err->hint,
                 "run `pgstore migrate` (or cp:migrate()) as a role that may alter it");
    return st;
}

pgs_status_t pgs_checkpoints_open(pgs_pool_t *pool, const pgs_checkpoints_opts_t *opts,
                                  pgs_checkpoints_t **out, pgs_error_t *err)
{
    pgs_companion_opts_t o = {0};
    if (opts)
        o = (pgs_companion_opts_t){opts->table, opts->skip_schema_init, 0};
    *out = NULL;
    pgs_checkpoints_t *cp = calloc(1, sizeof *cp);
    if (!cp)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    /* The store is named like an event store's table (validated, resolved
     * once, here), so its key is the one its events table has. */
    const char *store = opts && opts->store ? opts->store : "events";
    char quoted[PGS_IDENT_MAX];
    pgs_status_t st = pgs_ident_quote(store, quoted, sizeof quoted, err);
    if (st == PGS_OK && pool)
        st = pgs_store_resolve(pool, store, cp->store, sizeof cp->store, err);
    if (st == PGS_OK)
        st = pgs_companion_open(&kind, pool, &o, &cp->c, err);
    if (st == PGS_OK && o.skip_schema_init && (st = require_store_column(cp, err)) != PGS_OK) {
        pgs_companion_close(cp->c);
        cp->c = NULL;
    }
    if (st != PGS_OK) {
        free(cp);
        return st;
    }
    *out = cp;
    return PGS_OK;
}

const char *pgs_checkpoints_store(const pgs_checkpoints_t *cp)
{
    return cp->store;
}

void pgs_checkpoints_close(pgs_checkpoints_t *cp)
{
    if (!cp)
        return;
    pgs_companion_close(cp->c);
    free(cp);
}

/* Runs statement `which` for (store, consumer) plus `nextra` more
 * parameters, after checking the consumer. *res (may be NULL) is the
 * caller's to PQclear on PGS_OK. */
static pgs_status_t keyed(pgs_checkpoints_t *cp, pgs_conn_t *tx, int which, const char *consumer,
                          const pgs_param_t *extra, int nextra, PGresult **res, pgs_error_t *err)
{
    if (res)
        *res = NULL;
    pgs_status_t st = pgs_companion_check_key(kind.key, consumer, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p[4] = {{cp->store, -1}, {consumer, -1}};
    for (int i = 0; i < nextra && i < 2; i++)
        p[2 + i] = extra[i];
    return pgs_companion_exec(&cp->c->base, tx, cp->c->sql[which], 2 + nextra, p, res, err);
}

pgs_status_t pgs_checkpoints_migrate(pgs_checkpoints_t *cp, pgs_error_t *err)
{
    return pgs_companion_migrate(cp->c, 1, err);
}

pgs_status_t pgs_checkpoints_load(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                  int64_t *position, pgs_error_t *err)
{
    PGresult *r;
    pgs_status_t st = keyed(cp, tx, SQL_LOAD, consumer, NULL, 0, &r, err);
    if (st != PGS_OK)
        return st;
    int found = PQntuples(r) > 0;
    if (found)
        *position = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (!found)
        return pgs_error_set(err, PGS_ENOTFOUND, "%s '%.200s' of store %s", kind.not_found,
                             consumer, cp->store);
    return PGS_OK;
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
    pgs_param_t p[2] = {{pgs_companion_i64(position, pos), -1},
                        {pgs_companion_i64(expected, exp), -1}};
    int which = expect == PGS_CHECKPOINT_EXACT ? SQL_SAVE_EXACT
              : expect == PGS_CHECKPOINT_NONE  ? SQL_SAVE_NONE
                                               : SQL_SAVE_ANY;
    PGresult *r;
    st = keyed(cp, tx, which, consumer, p, which == SQL_SAVE_EXACT ? 2 : 1, &r, err);
    if (st != PGS_OK)
        return st;
    int64_t n = pgs_result_affected(r);
    PQclear(r);
    if (n == 0)
        return conflict(cp, tx, consumer, expect, expected, err);
    return PGS_OK;
}

pgs_status_t pgs_checkpoints_delete(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                    int64_t *removed, pgs_error_t *err)
{
    PGresult *r;
    pgs_status_t st = keyed(cp, tx, SQL_DELETE, consumer, NULL, 0, &r, err);
    if (st == PGS_OK && removed)
        *removed = pgs_result_affected(r);
    PQclear(r);
    return st;
}

pgs_status_t pgs_checkpoints_list(pgs_checkpoints_t *cp, pgs_conn_t *tx, pgs_rows_t **rows,
                                  pgs_error_t *err)
{
    PGresult *r = NULL;
    pgs_param_t p = {cp->store, -1};
    pgs_status_t st = pgs_companion_exec(&cp->c->base, tx, cp->c->sql[SQL_LIST], 1, &p, &r, err);
    *rows = pgs_rows_wrap(r);
    return st;
}
