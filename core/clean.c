/* SPDX-License-Identifier: MIT
 * clean.c — what a pooled connection must not carry from one borrower to the
 * next: session settings, role, temporary tables and sequences' state,
 * cursors, advisory locks, LISTEN and notifications, statements a borrower
 * prepared. pgstore's own prepared statements stay (re-preparing them would
 * cost every borrower round trips), and its session settings come back.
 */
#include "conn.h"
#include "error.h"

#include <stdio.h>
#include <string.h>

/* DISCARD ALL without its DEALLOCATE ALL, and without DISCARD PLANS (a
 * changed search_path or a dropped temp table already invalidates the plans
 * that depended on them). One round trip, one implicit transaction: either
 * all of it happened, or the connection is not reused. It uses only
 * statements a pooler such as PgBouncer passes through (DISCARD ALL is
 * refused inside a transaction block). After RESET ALL the settings come
 * from the startup packet; pgstore's are set again all the same, for a
 * pooler that did not pass the packet's `options` on. The last statement
 * says whether a borrower prepared statements of its own through SQL: it may
 * have put one in place of pgstore's, under its name. */
static const char clean_sql[] = "CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all();"
                                " SET SESSION AUTHORIZATION DEFAULT; RESET ALL;"
                                " DISCARD TEMP; DISCARD SEQUENCES;"
                                " SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC';%s"
                                " SELECT EXISTS (SELECT FROM pg_prepared_statements WHERE from_sql)";

int pgs_conn_clean(pgs_conn_t *c)
{
    char sql[sizeof clean_sql + 64], timeout[48] = "";
    if (c->dsn->statement_timeout_ms > 0)
        snprintf(timeout, sizeof timeout, " SET statement_timeout = %d;",
                 c->dsn->statement_timeout_ms);
    snprintf(sql, sizeof sql, clean_sql, timeout);
    PGresult *r = NULL;
    if (pgs_exec(c, sql, 0, NULL, &r, NULL) != PGS_OK)
        return 0;
    int borrowers_own = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (borrowers_own) {
        /* Rare, and then everything goes: pgstore re-prepares what it uses. */
        if (pgs_exec_command(c, "DEALLOCATE ALL", NULL) != PGS_OK)
            return 0;
        pgs_stmtcache_clear(&c->stmts);
    }
    /* Notifications received before UNLISTEN took effect wait in libpq. */
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
    return PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}
