/* SPDX-License-Identifier: MIT
 * clean.c — what a pooled connection must not carry from one borrower to the
 * next: session settings, role, temporary tables and sequences' state,
 * cursors, advisory locks, LISTEN and notifications, statements a borrower
 * prepared. pgstore's own prepared statements stay (re-preparing them would
 * cost every borrower round trips), and its session settings come back.
 * The clean is sent on release and its answer read by the next borrower, so
 * neither waits for it unless the connection is borrowed again at once; it
 * is skipped when only pgstore's own statements ran (they set nothing
 * beyond their transaction): the connection is "touched" by the doors
 * through which a caller's own SQL comes (pgs_query, pgs_exec_command,
 * pgs_pipeline_add) and by a session advisory lock.
 */
#include "conn.h"
#include "error.h"
#include "strbuf.h"

#include <stdio.h>
#include <string.h>

/* DISCARD ALL without its DEALLOCATE ALL, and without DISCARD PLANS (a
 * changed search_path or a dropped temp table already invalidates the plans
 * that depended on them). One round trip, one implicit transaction: either
 * all of it happened, or the connection is not reused. It uses only
 * statements a pooler such as PgBouncer passes through (DISCARD ALL is
 * refused inside a transaction block). After RESET ALL the settings come
 * from the startup packet; pgstore's are set again all the same, for a
 * pooler that did not pass the packet's `options` on. RESET ALL comes first:
 * each statement runs under the statement_timeout in force when it starts,
 * which may be the borrower's (1 ms, say). The last statement names the
 * statements a borrower prepared through SQL (pgstore prepares through the
 * protocol): they go, and one may have taken the name of one of pgstore's.
 * %s: a ROLLBACK first when the borrower left a transaction open. */
static const char clean_sql[] =
    "%sRESET ALL; SET SESSION AUTHORIZATION DEFAULT; CLOSE ALL; UNLISTEN *;"
    " DISCARD TEMP; DISCARD SEQUENCES;"
    " SELECT pg_advisory_unlock_all(), set_config('DateStyle', 'ISO, MDY', false),"
    " set_config('TimeZone', 'UTC', false)%s;"
    " SELECT name FROM pg_prepared_statements WHERE from_sql";

/* Behind a transaction pooler the server session is the pooler's, shared
 * with other clients, and its state is not this connection's to clear: an
 * open transaction is rolled back, and the settings the pooler keeps per
 * client come back (the borrower may have SET them). */
static const char clean_pooled_sql[] =
    "%sSELECT set_config('DateStyle', 'ISO, MDY', false), set_config('TimeZone', 'UTC', false)";

int pgs_conn_clean_start(pgs_conn_t *c)
{
    const char *rollback;
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        /* Only pgstore's own statements ran: they leave nothing behind. */
        if (!c->touched)
            return 1;
        rollback = "";
        break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR: rollback = "ROLLBACK; "; break;
    default: return 0; /* ACTIVE (a result still pending) or UNKNOWN */
    }
    char sql[sizeof clean_sql + 160], timeout[160] = "";
    int used = 0;
    if (c->dsn->pooler == PGS_POOLER_TRANSACTION) {
        snprintf(sql, sizeof sql, clean_pooled_sql, rollback);
        if (!PQsendQuery(c->pg, sql))
            return 0;
        c->clean_pending = 1;
        c->touched = 0;
        return 1;
    }
    if (c->dsn->statement_timeout_ms > 0)
        used = snprintf(timeout, sizeof timeout, ", set_config('statement_timeout', '%d', false)",
                        c->dsn->statement_timeout_ms);
    if (c->dsn->lock_timeout_ms > 0)
        snprintf(timeout + used, sizeof timeout - (size_t)used,
                 ", set_config('lock_timeout', '%d', false)", c->dsn->lock_timeout_ms);
    snprintf(sql, sizeof sql, clean_sql, rollback, timeout);
    if (!PQsendQuery(c->pg, sql))
        return 0;
    c->clean_pending = 1;
    c->touched = 0; /* if the clean fails, the connection is replaced */
    return 1;
}

/* DEALLOCATEs the statements named in the first column of r: one round
 * trip. pgstore's cache re-prepares any of its own that went with them. */
static int deallocate_all_of(pgs_conn_t *c, const PGresult *r)
{
    pgs_strbuf_t b;
    pgs_strbuf_init(&b);
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        char *quoted = PQescapeIdentifier(c->pg, name, strlen(name));
        if (!quoted) {
            pgs_strbuf_free(&b);
            return 0;
        }
        pgs_strbuf_adds(&b, "DEALLOCATE ");
        pgs_strbuf_adds(&b, quoted);
        pgs_strbuf_adds(&b, ";");
        PQfreemem(quoted);
    }
    pgs_strbuf_add(&b, "", 1);
    int ok = !b.failed && pgs_exec(c, b.data, 0, NULL, NULL, NULL) == PGS_OK;
    pgs_strbuf_free(&b);
    return ok;
}

int pgs_conn_clean_finish(pgs_conn_t *c)
{
    if (!c->clean_pending)
        return 1;
    c->clean_pending = 0;
    /* Bounded by the query timeout, like any statement. */
    PGresult *r = pgs_conn_collect(c);
    int ok = r && PQresultStatus(r) == PGRES_TUPLES_OK &&
             (c->dsn->pooler == PGS_POOLER_TRANSACTION || PQntuples(r) == 0 ||
              deallocate_all_of(c, r));
    PQclear(r);
    /* Notifications received before UNLISTEN took effect wait in libpq. */
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
    return ok && PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}
