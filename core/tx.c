/* SPDX-License-Identifier: MIT
 * tx.c — transactions on one connection: begin with an isolation level,
 * commit, rollback, savepoints, and a retrying runner for C callers
 * (serialization failures and deadlocks re-run the whole transaction).
 */
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "sql.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

static const char *const begin_sql[] = {
    /* Keep in the same order as enum pgs_isolation. */
    "BEGIN ISOLATION LEVEL READ COMMITTED",
    "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "BEGIN ISOLATION LEVEL SERIALIZABLE",
};

pgs_status_t pgs_tx_begin(pgs_conn_t *c, pgs_isolation_t iso, pgs_error_t *err)
{
    if ((int)iso < 0 || iso > PGS_SERIALIZABLE)
        return pgs_error_set(err, PGS_EINVALID, "unknown isolation level %d", (int)iso);
    if (!c || !c->dsn || c->dsn->pooler != PGS_POOLER_TRANSACTION ||
        (c->dsn->statement_timeout_ms <= 0 && c->dsn->lock_timeout_ms <= 0))
        return pgs_exec(c, begin_sql[iso], 0, NULL, NULL, err);
    /* Behind a transaction pooler the session is not the client's: pgstore's
     * timeouts hold for each transaction instead, from its BEGIN (one
     * message: the pooler runs it on one server session). */
    char sql[160];
    int used = snprintf(sql, sizeof sql, "%s", begin_sql[iso]);
    if (c->dsn->statement_timeout_ms > 0)
        used += snprintf(sql + used, sizeof sql - (size_t)used, "; SET LOCAL statement_timeout = %d",
                         c->dsn->statement_timeout_ms);
    if (c->dsn->lock_timeout_ms > 0)
        snprintf(sql + used, sizeof sql - (size_t)used, "; SET LOCAL lock_timeout = %d",
                 c->dsn->lock_timeout_ms);
    return pgs_exec(c, sql, 0, NULL, NULL, err);
}

pgs_status_t pgs_tx_commit(pgs_conn_t *c, pgs_error_t *err)
{
    PGresult *r = NULL;
    pgs_status_t st = pgs_exec(c, "COMMIT", 0, NULL, &r, err);
    if (st != PGS_OK)
        return st;
    /* COMMIT of a failed transaction "succeeds" as ROLLBACK. */
    int rolled_back = strcmp(PQcmdStatus(r), "ROLLBACK") == 0;
    PQclear(r);
    if (rolled_back)
        return pgs_error_set(err, PGS_ESQL, "the transaction was rolled back after an error");
    return PGS_OK;
}

pgs_status_t pgs_tx_rollback(pgs_conn_t *c, pgs_error_t *err)
{
    if (c && c->pg && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return PGS_OK;
    return pgs_exec(c, "ROLLBACK", 0, NULL, NULL, err);
}

static pgs_status_t savepoint_cmd(pgs_conn_t *c, const char *tmpl, const char *name,
                                  pgs_error_t *err)
{
    char quoted[PGS_IDENT_MAX], *sql;
    /* A savepoint is one identifier: no schema part. */
    pgs_status_t st = strchr(name, '.') ? PGS_EINVALID : pgs_ident_quote(name, quoted, sizeof quoted, err);
    if (st != PGS_OK)
        return pgs_error_set(err, PGS_EINVALID,
                             "invalid savepoint name '%.80s': use letters, digits and _, at most 63 bytes", name);
    const char *names[] = {"name"}, *values[] = {quoted};
    if ((st = pgs_sql_fill(tmpl, names, values, 1, &sql, err)) != PGS_OK)
        return st;
    st = pgs_exec(c, sql, 0, NULL, NULL, err);
    free(sql);
    return st;
}

pgs_status_t pgs_tx_savepoint(pgs_conn_t *c, const char *name, pgs_error_t *err)
{
    return savepoint_cmd(c, "SAVEPOINT @name@", name, err);
}

pgs_status_t pgs_tx_rollback_to(pgs_conn_t *c, const char *name, pgs_error_t *err)
{
    return savepoint_cmd(c, "ROLLBACK TO SAVEPOINT @name@", name, err);
}

pgs_status_t pgs_tx_release(pgs_conn_t *c, const char *name, pgs_error_t *err)
{
    return savepoint_cmd(c, "RELEASE SAVEPOINT @name@", name, err);
}

void pgs_backoff_sleep(int attempt)
{
    /* 5 ms, 10 ms, 20 ms … capped at 640 ms, each with ±50 % jitter so
     * retrying peers do not collide again in lockstep. */
    int shift = attempt < 1 ? 0 : attempt > 7 ? 7 : attempt - 1;
    double base = 0.005 * (double)(1 << shift);
    double jitter = base * (0.5 + (double)rand() / RAND_MAX);
    pgs_clock_sleep(jitter);
}

pgs_status_t pgs_transaction(pgs_pool_t *pool, pgs_isolation_t iso, int retries, pgs_tx_fn fn,
                             void *ud, pgs_error_t *err)
{
    for (int attempt = 0;; attempt++) {
        pgs_conn_t *c;
        pgs_status_t st = pgs_pool_acquire(pool, -1, &c, err);
        if (st != PGS_OK)
            return st;
        st = pgs_tx_begin(c, iso, err);
        if (st == PGS_OK)
            st = fn(c, ud, err);
        if (st == PGS_OK)
            st = pgs_tx_commit(c, err);
        else
            pgs_tx_rollback(c, NULL);
        pgs_pool_release(pool, c);
        if (st == PGS_OK || !pgs_error_retryable(err) || attempt >= retries)
            return st;
        pgs_backoff_sleep(attempt + 1);
    }
}
