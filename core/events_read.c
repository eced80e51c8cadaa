/* SPDX-License-Identifier: MIT
 * events_read.c — the event store's read side: a stream by version range,
 * all streams by position (the never-skipping read_all, optionally only
 * the streams of some partitions), versions, status and the end (the
 * latest position, read_all's cursor).
 */
#include "events.h"
#include "conn.h"
#include "error.h"
#include "utf8.h"
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs one statement on a borrowed connection of pool. */
static pgs_status_t run(pgs_pool_t *pool, const char *sql, int n, const pgs_param_t *p,
                        PGresult **res, pgs_error_t *err)
{
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    st = pgs_exec(c, sql, n, p, res, err);
    pgs_pool_release(pool, c);
    return pgs_events_map_error(err, st);
}

/* types → a JSON array parameter (NULL when no filter). */
static pgs_status_t types_json(const char *const *types, int n, pgs_strbuf_t *b, pgs_error_t *err)
{
    if (!types || n <= 0)
        return PGS_OK;
    pgs_strbuf_add(b, "[", 1);
    for (int i = 0; i < n; i++) {
        if (!types[i])
            return pgs_error_set(err, PGS_EINVALID, "types[%d] is not a string", i + 1);
        if (!pgs_utf8_valid(types[i], strlen(types[i])))
            return pgs_error_set(err, PGS_EINVALID, "types[%d] is not valid UTF-8", i + 1);
        if (i)
            pgs_strbuf_add(b, ",", 1);
        pgs_strbuf_add_json_string(b, types[i], strlen(types[i]));
    }
    pgs_strbuf_add(b, "]", 1);
    return b->failed ? pgs_error_set(err, PGS_ENOMEM, "out of memory") : PGS_OK;
}

/* An empty stream read: say why when the stream is not simply unknown. */
static pgs_status_t explain_empty(pgs_events_t *es, pgs_pool_t *pool, const char *stream,
                                  pgs_error_t *err)
{
    pgs_param_t p = {stream, -1};
    PGresult *r;
    pgs_status_t st = run(pool, es->sql_status, 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQntuples(r) == 1) {
        const char *status = PQgetvalue(r, 0, 0);
        int events = atoi(PQgetvalue(r, 0, 1));
        if (strcmp(status, "tombstoned") == 0)
            st = pgs_error_set(err, PGS_EDELETED, "stream %.200s is deleted (tombstoned)", stream);
        else if (strcmp(status, "archived") == 0 && events == 0)
            st = pgs_error_set(err, PGS_EARCHIVED, "stream %.200s is archived to another store",
                               stream);
    }
    PQclear(r);
    return st;
}

pgs_status_t pgs_events_read(pgs_events_t *es, pgs_pool_t *via, const char *stream,
                             const pgs_read_opts_t *o, pgs_rows_t **rows, pgs_error_t *err)
{
    PGresult *r = NULL, **res = &r;
    *rows = NULL;
    pgs_read_opts_t none = {0};
    if (!o)
        o = &none;
    pgs_status_t st = pgs_events_check_stream(stream, err);
    if (st != PGS_OK)
        return st;
    if (o->from < 0 || o->to < 0 || o->limit < 0)
        return pgs_error_set(err, PGS_EINVALID, "from, to and limit must not be negative");
    char from[24], to[24], limit[24];
    snprintf(from, sizeof from, "%lld", (long long)(o->from > 0 ? o->from : 1));
    snprintf(to, sizeof to, "%lld", (long long)(o->to > 0 ? o->to : INT64_MAX));
    snprintf(limit, sizeof limit, "%lld", (long long)o->limit);
    pgs_strbuf_t types;
    pgs_strbuf_init(&types);
    st = types_json(o->types, o->ntypes, &types, err);
    if (st == PGS_OK) {
        pgs_param_t p[5] = {{stream, -1}, {from, -1}, {to, -1}, {types.data, -1},
                            {o->limit > 0 ? limit : NULL, -1}};
        pgs_pool_t *pool = pgs_events_pool(es, via);
        st = run(pool, o->backward ? es->sql_read_back : es->sql_read_fwd, 5, p, res, err);
        if (st == PGS_OK && PQntuples(*res) == 0) {
            st = explain_empty(es, pool, stream, err);
            if (st != PGS_OK) {
                PQclear(*res);
                *res = NULL;
            }
        }
    }
    pgs_strbuf_free(&types);
    *rows = pgs_rows_wrap(r);
    return st;
}

/* prefix → a LIKE pattern matching it literally. */
static char *like_prefix(const char *prefix)
{
    size_t n = strlen(prefix);
    char *out = malloc(2 * n + 2), *q = out;
    if (!out)
        return NULL;
    for (const char *s = prefix; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            *q++ = '\\';
        *q++ = *s;
    }
    *q++ = '%';
    *q = '\0';
    return out;
}

/* A partition filter → the count and an int[] literal ("{0,3,5}"), or
 * neither when there is no filter. */
static pgs_status_t partitions_param(const pgs_read_all_opts_t *o, char *count, size_t ncount,
                                     pgs_strbuf_t *b, pgs_error_t *err)
{
    if (o->partition_count == 0 && o->npartitions == 0)
        return PGS_OK;
    if (o->partition_count < 1 || o->partition_count > 65536)
        return pgs_error_set(err, PGS_EINVALID, "partition count must be from 1 to 65536");
    if (o->npartitions < 1 || !o->partitions)
        return pgs_error_set(err, PGS_EINVALID, "partitions must name at least one partition");
    snprintf(count, ncount, "%d", o->partition_count);
    pgs_strbuf_add(b, "{", 1);
    for (int i = 0; i < o->npartitions; i++) {
        if (o->partitions[i] < 0 || o->partitions[i] >= o->partition_count)
            return pgs_error_set(err, PGS_EINVALID, "partition %d is not from 0 to %d",
                                 (int)o->partitions[i], o->partition_count - 1);
        char n[16];
        int len = snprintf(n, sizeof n, i ? ",%d" : "%d", (int)o->partitions[i]);
        pgs_strbuf_add(b, n, (size_t)len);
    }
    pgs_strbuf_add(b, "}", 1);
    return b->failed ? pgs_error_set(err, PGS_ENOMEM, "out of memory") : PGS_OK;
}

/* One call of the store's read_all function, always on the primary (the
 * order locks are not visible on a standby). count and parts: the
 * partition filter, or NULL. */
static pgs_status_t query_all(pgs_events_t *es, const char *after, const char *limit,
                              const char *types, const char *pattern, const char *count,
                              const char *parts, PGresult **res, pgs_error_t *err)
{
    pgs_param_t p[7] = {{after, -1},  {limit, -1}, {types, -1}, {pattern, -1},
                        {es->tag, -1}, {count, -1}, {parts, -1}};
    if (!count)
        return run(es->base.pool, es->sql_read_all, 5, p, res, err);
    return run(es->base.pool, es->sql_read_parts, 7, p, res, err);
}

/* The cursor in read_all's marker row (its last row, last column). */
static int64_t marker_horizon(const PGresult *res)
{
    return strtoll(PQgetvalue(res, PQntuples(res) - 1, PQnfields(res) - 1), NULL, 10);
}

pgs_status_t pgs_events_read_all(pgs_events_t *es, const pgs_read_all_opts_t *o, pgs_rows_t **rows,
                                 int *nrows, int64_t *cursor, pgs_error_t *err)
{
    PGresult *r = NULL, **res = &r;
    *rows = NULL;
    pgs_read_all_opts_t none = {0};
    if (!o)
        o = &none;
    if (o->after < 0)
        return pgs_error_set(err, PGS_EINVALID, "cursor must not be negative");
    if (o->limit < 0)
        return pgs_error_set(err, PGS_EINVALID, "limit must not be negative");
    int limit = o->limit > 0 ? o->limit : 1000;
    char after[24], lim[16];
    snprintf(after, sizeof after, "%lld", (long long)o->after);
    snprintf(lim, sizeof lim, "%d", limit);
    if (o->prefix) {
        pgs_status_t checked = pgs_utf8_check("prefix", o->prefix, strlen(o->prefix), err);
        if (checked != PGS_OK)
            return checked;
    }
    pgs_strbuf_t types, parts;
    pgs_strbuf_init(&types);
    pgs_strbuf_init(&parts);
    char count[16] = "";
    char *pattern = o->prefix && *o->prefix ? like_prefix(o->prefix) : NULL;
    pgs_status_t st = types_json(o->types, o->ntypes, &types, err);
    if (st == PGS_OK && o->prefix && *o->prefix && !pattern)
        st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    if (st == PGS_OK)
        st = partitions_param(o, count, sizeof count, &parts, err);
    if (st == PGS_OK)
        st = query_all(es, after, lim, types.data, pattern, *count ? count : NULL, parts.data,
                       res, err);
    if (st == PGS_OK) {
        int n = PQntuples(*res) - 1; /* the marker row is last */
        int64_t horizon = n >= 0 ? marker_horizon(*res) : o->after;
        *nrows = n > 0 ? n : 0;
        /* A full page ends at its last event; a short one has seen every
         * position up to the horizon, filtered or not. */
        if (n >= limit)
            *cursor = strtoll(PQgetvalue(*res, n - 1, 3), NULL, 10);
        else
            *cursor = horizon > o->after ? horizon : o->after;
    }
    pgs_strbuf_free(&types);
    pgs_strbuf_free(&parts);
    free(pattern);
    *rows = pgs_rows_wrap(r);
    return st;
}

pgs_status_t pgs_events_version(pgs_events_t *es, pgs_pool_t *via, const char *stream,
                                int64_t *version, pgs_error_t *err)
{
    pgs_status_t st = pgs_events_check_stream(stream, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {stream, -1};
    PGresult *r;
    st = run(pgs_events_pool(es, via), es->sql_version, 1, &p, &r, err);
    if (st == PGS_OK) {
        *version = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        PQclear(r);
    }
    return st;
}

pgs_status_t pgs_events_status(pgs_events_t *es, pgs_pool_t *via, const char *stream,
                               const char **status, pgs_error_t *err)
{
    static const char *const known[] = {"active", "archived", "tombstoned"};
    pgs_status_t st = pgs_events_check_stream(stream, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p = {stream, -1};
    PGresult *r;
    st = run(pgs_events_pool(es, via), es->sql_status, 1, &p, &r, err);
    if (st != PGS_OK)
        return st;
    *status = "none";
    for (int i = 0; PQntuples(r) && i < 3; i++)
        if (strcmp(PQgetvalue(r, 0, 0), known[i]) == 0)
            *status = known[i];
    /* A head left by a rejected first append has no events: still none.
     * One whose events retention removed keeps its version: still active. */
    if (strcmp(*status, "active") == 0 && atoi(PQgetvalue(r, 0, 1)) == 0 &&
        strtoll(PQgetvalue(r, 0, 2), NULL, 10) == 0)
        *status = "none";
    PQclear(r);
    return PGS_OK;
}

/* The end is read_all's cursor (past everything committed, never past an
 * append in flight) or the floor retention left in <table>_end (see "The
 * end" in core/sql/events--*.sql), whichever is higher. The floor is read
 * after the cursor: retention raises it before it removes events, so a
 * cursor that no longer sees removed events is followed by a floor that
 * covers them. */
static pgs_status_t end_position(pgs_events_t *es, int64_t *position, pgs_error_t *err)
{
    char after[24];
    snprintf(after, sizeof after, "%lld", (long long)INT64_MAX);
    PGresult *r;
    pgs_status_t st = query_all(es, after, "1", NULL, NULL, NULL, NULL, &r, err);
    if (st != PGS_OK)
        return st;
    char cursor[24];
    snprintf(cursor, sizeof cursor, "%lld", (long long)marker_horizon(r));
    PQclear(r);
    pgs_param_t p = {cursor, -1};
    pgs_error_t e;
    st = run(es->base.pool, es->sql_latest, 1, &p, &r, &e);
    if (st == PGS_OK) {
        *position = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    } else if (strcmp(e.sqlstate, "42P01") == 0) {
        /* A store opened as it is, not yet migrated (a role without DDL
         * rights): no floor was ever held, so the cursor is the end. */
        *position = strtoll(cursor, NULL, 10);
        st = PGS_OK;
    } else if (err) {
        *err = e;
    }
    return st;
}

pgs_status_t pgs_events_latest_position(pgs_events_t *es, pgs_pool_t *via, int64_t *position,
                                        pgs_error_t *err)
{
    (void)via; /* the end is the primary's: read_all runs there */
    return end_position(es, position, err);
}

pgs_status_t pgs_events_hold_end(pgs_events_t *es, int64_t *position, pgs_error_t *err)
{
    pgs_status_t st = end_position(es, position, err);
    if (st != PGS_OK)
        return st;
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)*position);
    pgs_param_t p = {v, -1};
    PGresult *r;
    pgs_error_t e;
    st = run(es->base.pool, es->sql_end_floor, 1, &p, &r, &e);
    if (st == PGS_OK)
        PQclear(r);
    else if (strcmp(e.sqlstate, "42P01") == 0)
        st = PGS_OK; /* opened as it is, not yet migrated: nowhere to hold it (as before) */
    else if (err)
        *err = e;
    return st;
}

pgs_status_t pgs_events_expire_keys(pgs_events_t *es, double ttl, int limit, int dry_run, int *count,
                                    pgs_error_t *err)
{
    *count = 0;
    if (!(ttl > 0) || limit < 1)
        return pgs_error_set(err, PGS_EINVALID, "ttl must be positive and limit at least 1");
    char t[32], lim[16];
    snprintf(t, sizeof t, "%.17g", ttl);
    snprintf(lim, sizeof lim, "%d", limit);
    pgs_param_t p[2] = {{t, -1}, {lim, -1}};
    PGresult *r;
    pgs_status_t st = run(es->base.pool, dry_run ? es->sql_count_keys : es->sql_expire_keys, 2, p,
                          &r, err);
    if (st != PGS_OK)
        return st;
    *count = dry_run ? atoi(PQgetvalue(r, 0, 0)) : atoi(PQcmdTuples(r));
    PQclear(r);
    return PGS_OK;
}
