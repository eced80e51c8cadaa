/* SPDX-License-Identifier: MIT
 * events_admin.c — stream lifecycle: tombstone, archive, restore, hard
 * delete, truncate, and moving a stream's events between stores.
 */
#include "events.h"
#include "conn.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs sql (with stream as $1 and an optional $2) on a borrowed connection;
 * *affected gets the row count. */
static pgs_status_t command(pgs_events_t *es, const char *sql, const char *stream,
                            const char *arg2, int64_t *affected, pgs_error_t *err)
{
    if (!stream || !*stream)
        return pgs_error_set(err, PGS_EINVALID, "stream name must not be empty");
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(es->base.pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p[2] = {{stream, -1}, {arg2, -1}};
    PGresult *r;
    st = pgs_exec(c, sql, arg2 || strstr(sql, "$2") ? 2 : 1, p, &r, err);
    if (st == PGS_OK) {
        if (affected)
            *affected = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : pgs_result_affected(r);
        PQclear(r);
    }
    pgs_pool_release(es->base.pool, c);
    return pgs_events_map_error(err, st);
}

pgs_status_t pgs_events_tombstone(pgs_events_t *es, const char *stream, const char *reason,
                                  pgs_error_t *err)
{
    return command(es, es->sql_tombstone, stream, reason, NULL, err);
}

/* Sets the status of an existing stream; tombstoned streams stay so. */
static pgs_status_t set_status(pgs_events_t *es, const char *stream, const char *status,
                               pgs_error_t *err)
{
    int64_t n = 0;
    pgs_status_t st = command(es, es->sql_set_status, stream, status, &n, err);
    if (st == PGS_OK && n == 0) {
        const char *now;
        st = pgs_events_status(es, NULL, stream, &now, err);
        if (st == PGS_OK && strcmp(now, "tombstoned") == 0)
            return pgs_error_set(err, PGS_EDELETED, "stream %.200s is deleted (tombstoned)", stream);
        if (st == PGS_OK)
            return pgs_error_set(err, PGS_ENOTFOUND, "stream %.200s does not exist", stream);
    }
    return st;
}

pgs_status_t pgs_events_archive(pgs_events_t *es, const char *stream, pgs_error_t *err)
{
    return set_status(es, stream, "archived", err);
}

pgs_status_t pgs_events_restore(pgs_events_t *es, const char *stream, pgs_error_t *err)
{
    return set_status(es, stream, "active", err);
}

pgs_status_t pgs_events_delete(pgs_events_t *es, const char *stream, pgs_error_t *err)
{
    int64_t n = 0;
    pgs_status_t st = command(es, es->sql_delete, stream, NULL, &n, err);
    if (st == PGS_OK && n == 0)
        return pgs_error_set(err, PGS_ENOTFOUND, "stream %.200s does not exist", stream);
    return st;
}

pgs_status_t pgs_events_truncate(pgs_events_t *es, pgs_error_t *err)
{
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(es->base.pool, -1, &c, err);
    if (st == PGS_OK) {
        st = pgs_exec_command(c, es->sql_truncate, err);
        pgs_pool_release(es->base.pool, c);
    }
    return st;
}

/* ---- moving streams between stores --------------------------------------- */

/* Locks the stream's head in src (appends to it wait until the move
 * commits, so none can land between the export and the delete), then
 * exports its events. */
static pgs_status_t export_events(pgs_events_t *src, pgs_conn_t *c, const char *stream,
                                  PGresult **json, pgs_error_t *err)
{
    pgs_param_t p = {stream, -1};
    pgs_status_t st = pgs_exec(c, src->sql_lock_head, 1, &p, NULL, err);
    if (st != PGS_OK)
        return st;
    return pgs_exec(c, src->sql_export, 1, &p, json, err);
}

/* Which table a store's name resolves to, on which server: the same table
 * reached through two pools (or spelled "events" and "public.events") must
 * not be moved into itself — the delete would take the only copy. */
static pgs_status_t table_identity(pgs_events_t *es, pgs_conn_t *c, char *out, size_t outsz,
                                   pgs_error_t *err)
{
    pgs_param_t p = {es->base.table, -1};
    PGresult *r;
    pgs_status_t st = pgs_exec(c,
        "SELECT pg_postmaster_start_time()::text || ':' || current_database() || ':' ||"
        " coalesce(to_regclass($1)::oid::text, $1)", 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    snprintf(out, outsz, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return PGS_OK;
}

static pgs_status_t import_events(pgs_events_t *dst, pgs_conn_t *c, const char *stream,
                                  const PGresult *json, pgs_error_t *err)
{
    pgs_param_t p[3] = {{stream, -1}, {PQgetvalue(json, 0, 0), -1}, {dst->tag, -1}};
    return pgs_exec(c, dst->sql_import, 3, p, NULL, err);
}

static pgs_status_t forget_events(pgs_events_t *src, pgs_conn_t *c, const char *stream,
                                  const char *src_status, pgs_error_t *err)
{
    pgs_param_t p[2] = {{stream, -1}, {src_status, -1}};
    return pgs_exec(c, src_status ? src->sql_forget_status : src->sql_forget, src_status ? 2 : 1,
                    p, NULL, err);
}

pgs_status_t pgs_events_move(pgs_events_t *src, pgs_events_t *dst, const char *stream,
                             const char *src_status, int64_t *moved, pgs_error_t *err)
{
    if (!stream || !*stream)
        return pgs_error_set(err, PGS_EINVALID, "stream name must not be empty");
    if (src == dst || (src->base.pool == dst->base.pool && strcmp(src->base.table, dst->base.table) == 0))
        return pgs_error_set(err, PGS_EINVALID, "cannot move a stream into the same store");
    const char *status;
    pgs_status_t st = pgs_events_status(src, NULL, stream, &status, err);
    if (st != PGS_OK)
        return st;
    if (strcmp(status, "tombstoned") == 0)
        return pgs_error_set(err, PGS_EDELETED, "stream %.200s is deleted (tombstoned)", stream);
    int shared = src->base.pool == dst->base.pool;
    pgs_conn_t *cs = NULL, *cd = NULL;
    PGresult *json = NULL;
    st = pgs_pool_acquire(src->base.pool, -1, &cs, err);
    if (st == PGS_OK && !shared)
        st = pgs_pool_acquire(dst->base.pool, -1, &cd, err);
    if (shared)
        cd = cs;
    if (st == PGS_OK) {
        char a[256], b[256];
        st = table_identity(src, cs, a, sizeof a, err);
        if (st == PGS_OK)
            st = table_identity(dst, cd, b, sizeof b, err);
        if (st == PGS_OK && strcmp(a, b) == 0)
            st = pgs_error_set(err, PGS_EINVALID, "cannot move a stream into the same store");
    }
    /* Shared pool: one transaction. Otherwise dst commits first, then src:
     * a failure in between leaves the events in both, and a retry finishes
     * (the import skips ids it already has). */
    if (st == PGS_OK)
        st = pgs_tx_begin(cs, PGS_READ_COMMITTED, err);
    if (st == PGS_OK)
        st = export_events(src, cs, stream, &json, err);
    if (st == PGS_OK && !shared)
        st = pgs_tx_begin(cd, PGS_READ_COMMITTED, err);
    if (st == PGS_OK)
        st = import_events(dst, cd, stream, json, err);
    if (st == PGS_OK && !shared)
        st = pgs_tx_commit(cd, err);
    if (st == PGS_OK)
        st = forget_events(src, cs, stream, src_status, err);
    if (st == PGS_OK)
        st = pgs_tx_commit(cs, err);
    if (st != PGS_OK) {
        if (cs)
            pgs_tx_rollback(cs, NULL);
        if (cd && !shared)
            pgs_tx_rollback(cd, NULL);
    }
    if (st == PGS_OK && moved)
        *moved = strtoll(PQgetvalue(json, 0, 1), NULL, 10);
    PQclear(json);
    if (cs)
        pgs_pool_release(src->base.pool, cs);
    if (cd && !shared)
        pgs_pool_release(dst->base.pool, cd);
    return pgs_events_map_error(err, st);
}
