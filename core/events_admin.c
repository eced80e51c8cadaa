/* SPDX-License-Identifier: MIT
 * events_admin.c — stream lifecycle: tombstone, archive, restore, hard
 * delete, truncate, and moving a stream's events between stores; each
 * serialized with the stream's appends through its head (see below).
 */
#include "events.h"
#include "conn.h"
#include "error.h"
#include "utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lifecycle: serialized with appends through the stream's head ------
 *
 * An append holds its stream's head row locked from its head upsert to its
 * commit. Every lifecycle operation (and each side of a move) first takes
 * that same lock in a READ COMMITTED transaction — waiting for the appends
 * in flight — and only then, in later statements whose fresh snapshots see
 * what those appends committed, reads or changes the events and the head;
 * appends that come later wait for its commit. One statement cannot do
 * both: its snapshot, taken before the wait, misses the events it waited
 * for (a hard delete used to leave them behind as orphans).
 */

/* Locks the stream's head; *status gets its status, or "none" when the
 * stream had no head. One upsert: it waits for the appends in flight on
 * the stream (also one creating its head), then locks the head as they
 * left it, or claims the name with a new head when there is none (held
 * until the transaction ends: roll back to write nothing). A head deleted
 * meanwhile is claimed anew, so the name is always held. */
static pgs_status_t lock_head(pgs_events_t *es, pgs_conn_t *c, const char *stream, char *status,
                              size_t size, pgs_error_t *err)
{
    pgs_param_t p = {stream, -1};
    PGresult *r;
    pgs_status_t st = pgs_exec(c, es->sql_lock_head, 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return pgs_error_set(err, PGS_ESQL, "the head of stream %.200s could not be locked", stream);
    }
    snprintf(status, size, "%s", strcmp(PQgetvalue(r, 0, 1), "t") == 0 ? "none" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return PGS_OK;
}

typedef struct {
    pgs_events_t *es;
    const char *stream;
    const char *to;     /* the new status; NULL: hard delete */
    const char *reason; /* a tombstone's */
} lifecycle_t;

static pgs_status_t lifecycle_step(pgs_conn_t *c, void *ud, pgs_error_t *err)
{
    const lifecycle_t *lc = ud;
    char status[16];
    pgs_status_t st = lock_head(lc->es, c, lc->stream, status, sizeof status, err);
    if (st != PGS_OK)
        return st;
    int tombstone = lc->to && strcmp(lc->to, "tombstoned") == 0;
    if (!tombstone && strcmp(status, "none") == 0)
        return pgs_error_set(err, PGS_ENOTFOUND, "stream %.200s does not exist", lc->stream);
    if (lc->to && !tombstone && strcmp(status, "tombstoned") == 0)
        return pgs_error_set(err, PGS_EDELETED, "stream %.200s is deleted (tombstoned)", lc->stream);
    pgs_param_t p[3] = {{lc->stream, -1}, {lc->to, -1}, {lc->reason, -1}};
    if (!lc->to)
        return pgs_exec(c, lc->es->sql_delete, 1, p, NULL, err);
    return pgs_exec(c, lc->es->sql_set_status, 3, p, NULL, err);
}

/* One lifecycle operation in its own transaction: all or nothing. */
static pgs_status_t lifecycle(pgs_events_t *es, const char *stream, const char *to,
                              const char *reason, pgs_error_t *err)
{
    pgs_status_t checked = pgs_events_check_stream(stream, err);
    if (checked == PGS_OK && reason)
        checked = pgs_utf8_check("reason", reason, strlen(reason), err);
    if (checked != PGS_OK)
        return checked;
    lifecycle_t lc = {es, stream, to, reason};
    pgs_status_t st = pgs_transaction(es->base.pool, PGS_READ_COMMITTED, 0, lifecycle_step, &lc, err);
    return pgs_events_map_error(err, st);
}

pgs_status_t pgs_events_tombstone(pgs_events_t *es, const char *stream, const char *reason,
                                  pgs_error_t *err)
{
    return lifecycle(es, stream, "tombstoned", reason, err);
}

/* Archive and restore set the status of an existing stream; tombstoned
 * streams stay so. */
pgs_status_t pgs_events_archive(pgs_events_t *es, const char *stream, pgs_error_t *err)
{
    return lifecycle(es, stream, "archived", NULL, err);
}

pgs_status_t pgs_events_restore(pgs_events_t *es, const char *stream, pgs_error_t *err)
{
    return lifecycle(es, stream, "active", NULL, err);
}

/* Removes the events, the head and the idempotency keys: a reused key
 * appends anew instead of replaying what is gone. */
pgs_status_t pgs_events_delete(pgs_events_t *es, const char *stream, pgs_error_t *err)
{
    return lifecycle(es, stream, NULL, NULL, err);
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
 * exports its events. An absent or tombstoned stream is not moved. */
static pgs_status_t export_events(pgs_events_t *src, pgs_conn_t *c, const char *stream,
                                  PGresult **json, pgs_error_t *err)
{
    char status[16];
    pgs_status_t st = lock_head(src, c, stream, status, sizeof status, err);
    if (st != PGS_OK)
        return st;
    if (strcmp(status, "none") == 0)
        return pgs_error_set(err, PGS_ENOTFOUND, "stream %.200s does not exist", stream);
    if (strcmp(status, "tombstoned") == 0)
        return pgs_error_set(err, PGS_EDELETED, "stream %.200s is deleted (tombstoned)", stream);
    pgs_param_t p = {stream, -1};
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

/* Locks the stream's head in dst before the import: a stream tombstoned
 * there stays tombstoned (the import would make it active). */
static pgs_status_t lock_target(pgs_events_t *dst, pgs_conn_t *c, const char *stream,
                                pgs_error_t *err)
{
    char status[16];
    pgs_status_t st = lock_head(dst, c, stream, status, sizeof status, err);
    if (st == PGS_OK && strcmp(status, "tombstoned") == 0)
        return pgs_error_set(err, PGS_EDELETED, "stream %.200s is deleted (tombstoned) in %s",
                             stream, dst->base.table);
    return st;
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
    pgs_status_t checked = pgs_events_check_stream(stream, err);
    if (checked != PGS_OK)
        return checked;
    if (src == dst || (src->base.pool == dst->base.pool && strcmp(src->base.table, dst->base.table) == 0))
        return pgs_error_set(err, PGS_EINVALID, "cannot move a stream into the same store");
    int shared = src->base.pool == dst->base.pool;
    pgs_conn_t *cs = NULL, *cd = NULL;
    PGresult *json = NULL;
    pgs_status_t st = pgs_pool_acquire(src->base.pool, -1, &cs, err);
    if (st == PGS_OK && !shared)
        st = pgs_pool_acquire(dst->base.pool, -1, &cd, err);
    if (shared)
        cd = cs;
    int dst_first = 0;
    if (st == PGS_OK) {
        char a[256], b[256];
        st = table_identity(src, cs, a, sizeof a, err);
        if (st == PGS_OK)
            st = table_identity(dst, cd, b, sizeof b, err);
        if (st == PGS_OK && strcmp(a, b) == 0)
            st = pgs_error_set(err, PGS_EINVALID, "cannot move a stream into the same store");
        /* The two heads are locked in one order for every mover, whichever
         * way it moves: over two pools a cycle would run through the
         * clients, where the server cannot see it to break it. */
        dst_first = strcmp(b, a) < 0;
    }
    /* Shared pool: one transaction. Otherwise dst commits first, then src:
     * a failure in between leaves the events in both, and a retry finishes
     * (the import skips ids it already has). */
    if (st == PGS_OK)
        st = pgs_tx_begin(cs, PGS_READ_COMMITTED, err);
    if (st == PGS_OK && !shared)
        st = pgs_tx_begin(cd, PGS_READ_COMMITTED, err);
    if (st == PGS_OK && dst_first)
        st = lock_target(dst, cd, stream, err);
    if (st == PGS_OK)
        st = export_events(src, cs, stream, &json, err);
    if (st == PGS_OK && !dst_first)
        st = lock_target(dst, cd, stream, err);
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
