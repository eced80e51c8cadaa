/* SPDX-License-Identifier: MIT
 * events.c — the event store's write side: opening and migrating a store,
 * appends (one round trip through the <table>_append_rows function, which
 * holds the whole algorithm — see core/sql/events--*.sql), batches across
 * streams in one pipeline, after-commit NOTIFY, and stream lifecycle.
 */
#include "events.h"
#include "conn.h"
#include "error.h"
#include "utf8.h"
#include "sql.h"
#include "strbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TYPE_LEN 255

/* ---- errors ------------------------------------------------------------- */

/* Reads the integers of a DETAIL this store's functions wrote: `count`
 * numbers, each after its label ("expected=", or "" for none), separated by
 * single spaces and nothing else. Only numbers go there: names stay in the
 * message, which is never read. 1 when the DETAIL has exactly that form. */
static int detail_ints(const char *detail, const char *const labels[], int64_t out[], int count)
{
    const char *p = detail;
    for (int i = 0; i < count; i++) {
        if (i > 0 && *p++ != ' ')
            return 0;
        size_t n = strlen(labels[i]);
        if (strncmp(p, labels[i], n) != 0)
            return 0;
        p += n;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno != 0)
            return 0;
        out[i] = v;
        p = end;
    }
    return *p == '\0';
}

/* PGS00: a retry that raced its first attempt; DETAIL holds the result
 * ("fv lv fp lp n"), which becomes err->replay and the append's result. */
static int replay_from_error(pgs_error_t *err, pgs_append_result_t *res)
{
    static const char *const labels[] = {"", "", "", "", ""};
    int64_t v[5];
    if (!err || strcmp(err->sqlstate, "PGS00") != 0 || !detail_ints(err->detail, labels, v, 5) ||
        v[4] < 0 || v[4] > INT32_MAX)
        return 0;
    err->replay.set = 1;
    err->replay.first_version = v[0];
    err->replay.last_version = v[1];
    err->replay.first_position = v[2];
    err->replay.last_position = v[3];
    err->replay.count = (int)v[4];
    *res = (pgs_append_result_t){v[0], v[1], v[2], v[3], (int)v[4], 1};
    return 1;
}

/* PGS03: DETAIL "expected=E actual=A" becomes err->expected/actual. */
static void versions_from_error(pgs_error_t *err)
{
    static const char *const labels[] = {"expected=", "actual="};
    int64_t v[2];
    if (!detail_ints(err->detail, labels, v, 2))
        return;
    err->has_versions = 1;
    err->expected = v[0];
    err->actual = v[1];
}

pgs_status_t pgs_events_map_error(pgs_error_t *err, pgs_status_t st)
{
    if (!err || st != PGS_ESQL)
        return st;
    const char *s = err->sqlstate;
    if (strcmp(s, "PGS01") == 0)
        err->code = PGS_EDELETED;
    else if (strcmp(s, "PGS02") == 0)
        err->code = PGS_EARCHIVED;
    else if (strcmp(s, "PGS04") == 0)
        err->code = PGS_EDUPLICATE;
    else if (strcmp(s, "PGS05") == 0 || strcmp(s, "22P02") == 0 || strcmp(s, "22P05") == 0 ||
             strcmp(s, "22021") == 0 || strcmp(s, "54000") == 0 || strcmp(s, "22003") == 0)
        err->code = PGS_EINVALID;
    else if (strcmp(s, "PGS03") == 0) {
        err->code = PGS_ECONFLICT;
        versions_from_error(err);
    } else if (strcmp(s, "23505") == 0)
        err->code = PGS_EDUPLICATE;
    return err->code;
}

pgs_status_t pgs_events_check_stream(const char *stream, pgs_error_t *err)
{
    if (!stream || !*stream)
        return pgs_error_set(err, PGS_EINVALID, "stream name must not be empty");
    size_t n = strlen(stream);
    if (n > PGS_STREAM_MAX)
        return pgs_error_set(err, PGS_EINVALID, "stream name is longer than %d bytes", PGS_STREAM_MAX);
    return pgs_utf8_check("stream name", stream, n, err);
}

pgs_pool_t *pgs_events_pool(pgs_events_t *es, pgs_pool_t *via)
{
    return via ? via : es->base.pool;
}

/* ---- opening --------------------------------------------------------------- */

static uint16_t order_tag(const char *quoted)
{
    uint32_t h = 2166136261u;
    for (const char *p = quoted; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return (uint16_t)(h ^ (h >> 16));
}

#define COLS \
    "id, stream::text AS stream, version, position, type, schema_version, data, metadata, time"
/* $4: types as a JSON array or NULL; $5: limit or NULL */
#define READ_SQL(order) \
    "SELECT " COLS " FROM @events@ WHERE stream = $1 AND version >= $2 AND version <= $3" \
    " AND ($4::jsonb IS NULL OR type IN (SELECT jsonb_array_elements_text($4::jsonb)))" \
    " AND NOT EXISTS (SELECT 1 FROM @heads@ h" \
    "   WHERE h.stream = $1 AND h.status = 'tombstoned')" \
    " ORDER BY version " order " LIMIT $5::bigint"

/* Every statement of the store, filled once at open (the schema itself is
 * core/sql/events--*.sql). */
static pgs_status_t build_sql(pgs_events_t *es, pgs_error_t *err)
{
    struct { char **dst; const char *tmpl; } s[] = {
        {&es->sql_append,
         "SELECT r_first_version, r_last_version, r_first_position, r_last_position, r_count,"
         " r_replayed FROM @append_rows@($1, $2::bigint, $3::text[], $4::jsonb[], $5::jsonb[],"
         " $6::uuid[], $7::int[], $8, $9::float8, $10::int, $11)"},
        {&es->sql_read_fwd, READ_SQL("ASC")},
        {&es->sql_read_back, READ_SQL("DESC")},
        {&es->sql_read_all,
         "SELECT r_id AS id, r_stream AS stream, r_version AS version, r_position AS position,"
         " r_type AS type, r_schema_version AS schema_version, r_data AS data,"
         " r_metadata AS metadata, r_time AS time, r_horizon AS horizon"
         " FROM @read_all@($1::bigint, $2::int,"
         " CASE WHEN $3::jsonb IS NULL THEN NULL"
         "  ELSE ARRAY(SELECT jsonb_array_elements_text($3::jsonb)) END,"
         " $4, $5::int)"},
        /* The same with a partition filter (schema version 7): the call
         * above keeps working on a store opened without migrations. */
        {&es->sql_read_parts,
         "SELECT r_id AS id, r_stream AS stream, r_version AS version, r_position AS position,"
         " r_type AS type, r_schema_version AS schema_version, r_data AS data,"
         " r_metadata AS metadata, r_time AS time, r_horizon AS horizon"
         " FROM @read_all@($1::bigint, $2::int,"
         " CASE WHEN $3::jsonb IS NULL THEN NULL"
         "  ELSE ARRAY(SELECT jsonb_array_elements_text($3::jsonb)) END,"
         " $4, $5::int, $6::int, $7::int[])"},
        {&es->sql_status,
         "SELECT status, (EXISTS (SELECT 1 FROM @events@ e WHERE e.stream = $1))::int AS events,"
         " version FROM @heads@ WHERE stream = $1"},
        {&es->sql_version, "SELECT version FROM @heads@ WHERE stream = $1"},
        {&es->sql_latest, "SELECT GREATEST($1::bigint, (SELECT position FROM @end@))"},
        {&es->sql_expire_keys,
         "DELETE FROM @idempotency@ WHERE key IN (SELECT key FROM @idempotency@"
         " WHERE created_at < now() - make_interval(secs => $1::float8) ORDER BY created_at"
         " LIMIT $2::int)"},
        {&es->sql_count_keys,
         "SELECT count(*) FROM (SELECT 1 FROM @idempotency@"
         " WHERE created_at < now() - make_interval(secs => $1::float8) LIMIT $2::int) k"},
        {&es->sql_end_floor,
         "INSERT INTO @end@ AS f (position) VALUES ($1::bigint)"
         " ON CONFLICT (one) DO UPDATE SET position = GREATEST(f.position, EXCLUDED.position)"},
        {&es->sql_import, "SELECT r_count FROM @import@($1, $2::jsonb, $3::int)"},
        /* No metadata stays no metadata: the key is left out, not null. */
        {&es->sql_export,
         "SELECT coalesce(json_agg(jsonb_build_object('id', id, 'version', version, 'type', type,"
         " 'schema_version', schema_version, 'data', data, 'time', time)"
         " || CASE WHEN metadata IS NULL THEN '{}' ELSE jsonb_build_object('metadata', metadata) END"
         " ORDER BY version), '[]')::text, count(*) FROM @events@ WHERE stream = $1"},
        /* Lifecycle, after lock_head (events_admin.c). */
        {&es->sql_set_status,
         "UPDATE @heads@ SET status = $2, reason = $3, updated_at = now() WHERE stream = $1"},
        {&es->sql_delete,
         "WITH e AS (DELETE FROM @events@ WHERE stream = $1),"
         " k AS (DELETE FROM @idempotency@ WHERE stream = $1)"
         " DELETE FROM @heads@ WHERE stream = $1"},
        {&es->sql_truncate,
         "TRUNCATE @events@, @heads@, @idempotency@, @end@; ALTER SEQUENCE @seq@ RESTART"},
        {&es->sql_lock_head,
         "INSERT INTO @heads@ AS h (stream) VALUES ($1) ON CONFLICT (stream)"
         " DO UPDATE SET stream = EXCLUDED.stream RETURNING h.status, h.xmax = 0"},
        {&es->sql_forget_status,
         "WITH e AS (DELETE FROM @events@ WHERE stream = $1)"
         " UPDATE @heads@ SET status = $2, updated_at = now() WHERE stream = $1"},
        {&es->sql_forget,
         "WITH e AS (DELETE FROM @events@ WHERE stream = $1)"
         " DELETE FROM @heads@ WHERE stream = $1"},
        {&es->sql_check_order, "SELECT * FROM @check_order@(true)"},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        pgs_status_t st = pgs_sql_fill(s[i].tmpl, es->schema.names, es->schema.values,
                                       es->schema.nnames, s[i].dst, err);
        if (st != PGS_OK)
            return st;
    }
    return PGS_OK;
}

/* Holds the position sequence to what read_all's order argument needs
 * (CACHE 1, NO CYCLE, a positive increment, LOGGED, not behind the
 * positions taken: @check_order@ in core/sql/events--2--3.sql), setting
 * what someone changed by hand; PGS_EINVALID naming it when the role may
 * not. */
static pgs_status_t check_order(pgs_events_t *es, pgs_error_t *err)
{
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(es->base.pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    st = pgs_exec(c, es->sql_check_order, 0, NULL, NULL, err);
    pgs_pool_release(es->base.pool, c);
    return pgs_events_map_error(err, st);
}

pgs_status_t pgs_events_open(pgs_pool_t *pool, const pgs_events_opts_t *opts, pgs_events_t **out,
                             pgs_error_t *err)
{
    *out = NULL;
    pgs_events_t *es = calloc(1, sizeof *es);
    if (!es)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_store_init(&es->base, pool, opts ? opts->table : NULL, "events", err);
    struct { char *dst; const char *suffix, *placeholder; } names[] = {
        {es->heads, "_heads", "heads"},          {es->idem, "_idempotency", "idempotency"},
        {es->seq, "_position_seq", "seq"},       {es->fn_append, "_append", "append"},
        {es->fn_read_all, "_read_all", "read_all"}, {es->fn_import, "_import", "import"},
        {es->fn_replay, "_replay", "replay"},    {es->fn_order_lock, "_order_lock", "order_lock"},
        {es->fn_check_order, "_check_order", "check_order"}, {es->end_floor, "_end", "end"},
        {es->fn_seq_last, "_seq_last", "seq_last"}, {es->fn_stream_key, "_stream_key", "stream_key"},
        {es->fn_partition, "_partition", "partition"}, {es->fn_append_rows, "_append_rows", "append_rows"},
    };
    pgs_schema_t *sc = &es->schema;
    pgs_store_schema(&es->base, "events", NULL, sc);
    sc->names[0] = "events";
    for (size_t i = 0; st == PGS_OK && i < sizeof names / sizeof names[0]; i++) {
        st = pgs_store_companion(&es->base, names[i].suffix, names[i].dst, PGS_IDENT_MAX, err);
        sc->names[sc->nnames] = names[i].placeholder;
        sc->values[sc->nnames++] = names[i].dst;
    }
    /* An index sits beside its table: same schema, so named unqualified. */
    const char *dot = st == PGS_OK ? strchr(es->base.raw, '.') : NULL;
    if (st == PGS_OK)
        st = pgs_ident_quote_suffix(dot ? dot + 1 : es->base.raw, "_idem_stream", es->idem_stream,
                                    sizeof es->idem_stream, err);
    sc->names[sc->nnames] = "idem_stream";
    sc->values[sc->nnames++] = es->idem_stream;
    sc->tables[sc->ntables++] = es->heads;
    sc->tables[sc->ntables++] = es->idem;
    sc->tables[sc->ntables++] = es->seq;
    sc->tables[sc->ntables++] = es->fn_append;
    sc->tables[sc->ntables++] = es->fn_read_all;
    sc->tables[sc->ntables++] = es->fn_import;
    sc->tables[sc->ntables++] = es->fn_replay;
    /* Older code keyed this store "events:<quoted table>". */
    snprintf(es->base.legacy_key, sizeof es->base.legacy_key, "events:%s", es->base.given_quoted);
    sc->legacy[sc->nlegacy++] = es->base.legacy_key;
    if (st == PGS_OK)
        st = build_sql(es, err);
    /* The channel follows the listener's rules, or nobody could LISTEN to it. */
    const char *notify = opts && opts->notify ? opts->notify : "pgstore_events";
    if (st == PGS_OK && *notify && (st = pgs_channel_check(notify, err)) == PGS_OK &&
        !(es->notify = strdup(notify)))
        st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    if (st != PGS_OK) {
        pgs_events_close(es);
        return st;
    }
    snprintf(es->tag, sizeof es->tag, "%u", (unsigned)order_tag(es->base.given_quoted));
    es->notify_in_tx = opts && opts->notify_in_tx;
    es->max_event_size = opts && opts->max_event_size ? opts->max_event_size : PGS_EVENT_SIZE_DEFAULT;
    if (es->notify && !es->notify_in_tx) {
        es->notifier = pgs_notifier_new(pgs_pool_dsn(pool), es->notify,
                                        opts ? opts->notify_interval : 0);
        if (!es->notifier) {
            pgs_events_close(es);
            return pgs_error_set(err, PGS_ENOMEM, "out of memory");
        }
    }
    int migrate = !(opts && opts->skip_schema_init);
    st = pgs_migrate_open(es->base.pool, &es->schema, migrate, err);
    if (st == PGS_OK && migrate)
        st = check_order(es, err);
    if (st != PGS_OK) {
        pgs_events_close(es);
        return st;
    }
    *out = es;
    return PGS_OK;
}

pgs_status_t pgs_events_migrate(pgs_events_t *es, pgs_error_t *err)
{
    pgs_status_t st = pgs_migrate_run(es->base.pool, &es->schema, NULL, NULL, err);
    return st == PGS_OK ? check_order(es, err) : st;
}

void pgs_events_close(pgs_events_t *es)
{
    if (!es)
        return;
    pgs_notifier_free(es->notifier);
    char **sql[] = {&es->sql_append,     &es->sql_read_fwd,   &es->sql_read_back,
                    &es->sql_read_all,   &es->sql_read_parts, &es->sql_status,     &es->sql_version,
                    &es->sql_latest,     &es->sql_import,     &es->sql_export,
                    &es->sql_set_status, &es->sql_delete,
                    &es->sql_truncate,   &es->sql_lock_head,  &es->sql_forget_status,
                    &es->sql_forget,     &es->sql_check_order, &es->sql_end_floor,
                    &es->sql_expire_keys, &es->sql_count_keys};
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++)
        free(*sql[i]);
    free(es->notify);
    pgs_store_fini(&es->base);
    free(es);
}

const char *pgs_events_table(const pgs_events_t *es)
{
    return es->base.table;
}

const char *pgs_events_store(const pgs_events_t *es)
{
    return es->base.raw;
}

/* ---- appends ------------------------------------------------------------------ */

/* The events of one append as the array parameters of @append_rows@:
 * PostgreSQL array literals, one element per event, each value quoted
 * whole, so no value can reach into another; the server parses each as
 * its type (jsonb checks the JSON). An array nobody fills is sent as NULL. */
typedef struct {
    pgs_strbuf_t types, data, metadata, ids, versions;
    int has_metadata, has_ids, has_versions;
} append_arrays_t;

static void arrays_free(append_arrays_t *a)
{
    pgs_strbuf_free(&a->types);
    pgs_strbuf_free(&a->data);
    pgs_strbuf_free(&a->metadata);
    pgs_strbuf_free(&a->ids);
    pgs_strbuf_free(&a->versions);
}

/* Adds one element: "s" with \ and " escaped, or NULL. */
static void add_element(pgs_strbuf_t *b, int first, const char *s, size_t n)
{
    pgs_strbuf_add(b, first ? "{" : ",", 1);
    if (!s) {
        pgs_strbuf_add(b, "NULL", 4);
        return;
    }
    pgs_strbuf_add(b, "\"", 1);
    const char *end = s + n;
    while (s < end) {
        const char *q = s;
        while (q < end && *q != '"' && *q != '\\')
            q++;
        pgs_strbuf_add(b, s, (size_t)(q - s));
        if (q == end)
            break;
        char esc[2] = {'\\', *q};
        pgs_strbuf_add(b, esc, 2);
        s = q + 1;
    }
    pgs_strbuf_add(b, "\"", 1);
}

static pgs_status_t encode_events(pgs_events_t *es, const pgs_event_t *ev, int n, append_arrays_t *a,
                                  pgs_error_t *err)
{
    if (n < 1 || !ev)
        return pgs_error_set(err, PGS_EINVALID, "no events given: append at least one");
    for (int i = 0; i < n; i++) {
        const pgs_event_t *e = &ev[i];
        if (!e->type || e->type_len == 0)
            return pgs_error_set(err, PGS_EINVALID, "event %d has no type", i + 1);
        if (e->type_len > MAX_TYPE_LEN)
            return pgs_error_set(err, PGS_EINVALID, "event %d: type is longer than %d bytes", i + 1,
                                 MAX_TYPE_LEN);
        if (memchr(e->type, '\0', e->type_len))
            return pgs_error_set(err, PGS_EINVALID, "event %d: type contains a NUL byte", i + 1);
        if (!pgs_utf8_valid(e->type, e->type_len))
            return pgs_error_set(err, PGS_EINVALID, "event %d: type is not valid UTF-8", i + 1);
        if (e->id && !pgs_utf8_valid(e->id, strlen(e->id)))
            return pgs_error_set(err, PGS_EINVALID, "event %d: id is not valid UTF-8", i + 1);
        size_t size = (e->data ? e->data_len : 0) + (e->metadata ? e->metadata_len : 0);
        if (size > es->max_event_size)
            return pgs_error_set(err, PGS_EINVALID,
                                 "event %d is %zu bytes, over the limit of %zu (max_event_size)",
                                 i + 1, size, es->max_event_size);
        if ((e->data && memchr(e->data, '\0', e->data_len)) ||
            (e->metadata && memchr(e->metadata, '\0', e->metadata_len)))
            return pgs_error_set(err, PGS_EINVALID, "event %d: data contains a NUL byte", i + 1);
        /* Checked here, not by the server, so a caller's transaction goes
         * on; the JSON itself the server checks (jsonb). */
        if (e->data && !pgs_utf8_valid(e->data, e->data_len))
            return pgs_error_set(err, PGS_EINVALID, "event %d: data is not valid UTF-8", i + 1);
        if (e->metadata && !pgs_utf8_valid(e->metadata, e->metadata_len))
            return pgs_error_set(err, PGS_EINVALID, "event %d: metadata is not valid UTF-8", i + 1);
        if (e->schema_version < 0)
            return pgs_error_set(err, PGS_EINVALID, "event %d: schema_version must be >= 1", i + 1);
        if ((e->id != NULL) != (ev[0].id != NULL))
            return pgs_error_set(err, PGS_EINVALID,
                                 "event %d: give ids to all events of a batch or to none", i + 1);
        a->has_metadata |= e->metadata != NULL;
        a->has_ids |= e->id != NULL;
        a->has_versions |= e->schema_version > 0;
    }
    for (int i = 0; i < n; i++) {
        const pgs_event_t *e = &ev[i];
        add_element(&a->types, i == 0, e->type, e->type_len);
        /* NULL is JSON null (the function's COALESCE). */
        add_element(&a->data, i == 0, e->data, e->data ? e->data_len : 0);
        if (a->has_metadata)
            add_element(&a->metadata, i == 0, e->metadata, e->metadata ? e->metadata_len : 0);
        if (a->has_ids)
            add_element(&a->ids, i == 0, e->id, strlen(e->id));
        if (a->has_versions) {
            char sv[16];
            int len = snprintf(sv, sizeof sv, "%d", e->schema_version);
            add_element(&a->versions, i == 0, e->schema_version > 0 ? sv : NULL, (size_t)len);
        }
    }
    pgs_strbuf_t *all[] = {&a->types, &a->data, &a->metadata, &a->ids, &a->versions};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (all[i]->len)
            pgs_strbuf_add(all[i], "}", 1);
        if (all[i]->failed)
            return pgs_error_set(err, PGS_ENOMEM, "out of memory");
        if (all[i]->len > 1073741823) /* the server's limit for one value, and an int */
            return pgs_error_set(err, PGS_EINVALID, "the batch is %zu bytes, over 1 GiB", all[i]->len);
    }
    return PGS_OK;
}

static pgs_status_t check_append_args(const char *stream, const pgs_append_opts_t *o, pgs_error_t *err)
{
    pgs_status_t st = pgs_events_check_stream(stream, err);
    if (st != PGS_OK)
        return st;
    if (o && ((unsigned)o->expect > PGS_EXPECT_EXISTS ||
              (o->expect == PGS_EXPECT_VERSION && o->version < 0)))
        return o->expect == PGS_EXPECT_VERSION
                   ? pgs_error_set(err, PGS_EINVALID, "invalid expected version %lld",
                                   (long long)o->version)
                   : pgs_error_set(err, PGS_EINVALID, "invalid expectation %d", (int)o->expect);
    /* 0 means now; other times are seconds since 1970 a timestamp can hold. */
    if (o && (!(o->time >= 0) || o->time > PGS_TIME_MAX))
        return pgs_error_set(err, PGS_EINVALID, "time must be a finite number of seconds since 1970");
    if (o && o->idempotency_key && (!*o->idempotency_key || strlen(o->idempotency_key) > 1024))
        return pgs_error_set(err, PGS_EINVALID, "idempotency key must be 1 to 1024 bytes");
    if (o && o->idempotency_key)
        return pgs_utf8_check("idempotency key", o->idempotency_key, strlen(o->idempotency_key), err);
    return PGS_OK;
}

/* Parameters of one append call; buffers live in `bufs`. */
typedef struct {
    char expected[24], time[32];
    pgs_param_t p[11];
} append_params_t;

#define APPEND_NPARAMS 11

static void fill_params(pgs_events_t *es, append_params_t *ap, const char *stream,
                        const append_arrays_t *a, const pgs_append_opts_t *o)
{
    /* The append function's encoding: >= 0 exact, -1 any, -2 no stream,
     * -3 exists. */
    long long expected = -1;
    if (o && o->expect == PGS_EXPECT_VERSION)
        expected = o->version;
    else if (o && o->expect == PGS_EXPECT_NO_STREAM)
        expected = -2;
    else if (o && o->expect == PGS_EXPECT_EXISTS)
        expected = -3;
    snprintf(ap->expected, sizeof ap->expected, "%lld", expected);
    int has_time = o && o->time != 0;
    if (has_time)
        snprintf(ap->time, sizeof ap->time, "%.6f", o->time);
    ap->p[0] = (pgs_param_t){stream, -1};
    ap->p[1] = (pgs_param_t){ap->expected, -1};
    ap->p[2] = (pgs_param_t){a->types.data, (int)a->types.len};
    ap->p[3] = (pgs_param_t){a->data.data, (int)a->data.len};
    ap->p[4] = (pgs_param_t){a->has_metadata ? a->metadata.data : NULL, (int)a->metadata.len};
    ap->p[5] = (pgs_param_t){a->has_ids ? a->ids.data : NULL, (int)a->ids.len};
    ap->p[6] = (pgs_param_t){a->has_versions ? a->versions.data : NULL, (int)a->versions.len};
    ap->p[7] = (pgs_param_t){o ? o->idempotency_key : NULL, -1};
    ap->p[8] = (pgs_param_t){has_time ? ap->time : NULL, -1};
    ap->p[9] = (pgs_param_t){es->tag, -1};
    ap->p[10] = (pgs_param_t){es->notify_in_tx ? es->notify : NULL, -1};
}

static void read_result(const PGresult *r, pgs_append_result_t *res)
{
    res->first_version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    res->last_version = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    res->first_position = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    res->last_position = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    res->count = atoi(PQgetvalue(r, 0, 4));
    res->replayed = PQgetvalue(r, 0, 5)[0] == 't';
}

pgs_status_t pgs_events_append(pgs_events_t *es, pgs_conn_t *tx, const char *stream,
                               const pgs_event_t *events, int n, const pgs_append_opts_t *opts,
                               pgs_append_result_t *res, pgs_error_t *err)
{
    pgs_append_result_t ignored;
    if (!res)
        res = &ignored;
    pgs_status_t st = check_append_args(stream, opts, err);
    if (st != PGS_OK)
        return st;
    append_arrays_t arrays = {0};
    st = encode_events(es, events, n, &arrays, err);
    if (st != PGS_OK) {
        arrays_free(&arrays);
        return st;
    }
    append_params_t ap;
    fill_params(es, &ap, stream, &arrays, opts);
    /* Inside a caller's transaction the commit is theirs, and we never see
     * it: NOTIFY from inside, which the server delivers at that commit (and
     * drops on a rollback). The notifier thread is for our own commits. */
    if (tx && es->notifier)
        ap.p[10] = (pgs_param_t){es->notify, -1};
    pgs_conn_t *c;
    st = pgs_store_begin(&es->base, tx, &c, err);
    if (st == PGS_OK) {
        PGresult *r;
        st = pgs_exec(c, es->sql_append, APPEND_NPARAMS, ap.p, &r, err);
        if (st == PGS_OK) {
            read_result(r, res);
            PQclear(r);
        } else if (replay_from_error(err, res)) {
            st = PGS_OK;
        }
        pgs_store_end(&es->base, tx, c);
    }
    arrays_free(&arrays);
    st = pgs_events_map_error(err, st);
    if (st == PGS_OK && es->notifier && !tx && !res->replayed)
        pgs_notifier_post(es->notifier, res->last_position);
    return st;
}

/* One pipeline = one implicit transaction: all or nothing. */
static pgs_status_t run_many(pgs_events_t *es, append_params_t *ap, int nb,
                             pgs_append_result_t *results, pgs_error_t *err)
{
    pgs_conn_t *c = NULL;
    pgs_status_t st = pgs_pool_acquire(es->base.pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    pgs_pipeline_t *p = NULL;
    pgs_rows_t **rs = NULL;
    int count = 0;
    st = pgs_pipeline_begin(c, &p, err);
    for (int i = 0; st == PGS_OK && i < nb; i++)
        st = pgs_pipeline_add_own(p, es->sql_append, APPEND_NPARAMS, ap[i].p, err);
    if (st == PGS_OK)
        st = pgs_pipeline_run(p, &rs, &count, err);
    else if (p)
        pgs_pipeline_abort(p);
    if (st == PGS_OK) {
        for (int i = 0; i < nb; i++)
            read_result(pgs_rows_pg(rs[i]), &results[i]);
        pgs_results_free(rs, count);
    }
    pgs_pool_release(es->base.pool, c);
    /* err->batch is the pipeline's statement index: statement N is batch N. */
    return st;
}

pgs_status_t pgs_events_append_many(pgs_events_t *es, const pgs_append_batch_t *batches, int nb,
                                    pgs_append_result_t *results, pgs_error_t *err)
{
    pgs_error_t local;
    if (!err)
        err = &local;
    if (nb < 1 || !batches)
        return pgs_error_set(err, PGS_EINVALID, "no batches given");
    if (nb > PGS_APPEND_BATCHES_MAX)
        return pgs_error_set(err, PGS_EINVALID,
                             "%d batches in one append_many: at most %d; split them into "
                             "several calls",
                             nb, PGS_APPEND_BATCHES_MAX);
    if (!results)
        return pgs_error_set(err, PGS_EINVALID, "no room for the results given");
    append_arrays_t *arrays = calloc((size_t)nb, sizeof *arrays);
    append_params_t *ap = calloc((size_t)nb, sizeof *ap);
    pgs_status_t st = arrays && ap ? PGS_OK : pgs_error_set(err, PGS_ENOMEM, "out of memory");
    for (int i = 0; st == PGS_OK && i < nb; i++) {
        st = check_append_args(batches[i].stream, &batches[i].opts, err);
        if (st == PGS_OK)
            st = encode_events(es, batches[i].events, batches[i].n, &arrays[i], err);
        if (st == PGS_OK)
            fill_params(es, &ap[i], batches[i].stream, &arrays[i], &batches[i].opts);
        else
            err->batch = i + 1;
    }
    /* A batch that raced its own earlier attempt (PGS00) means that attempt
     * committed, all of it: run again, and every batch replays. */
    for (int attempt = 1; st == PGS_OK; attempt++) {
        st = run_many(es, ap, nb, results, err);
        if (st == PGS_OK || attempt == 3 || strcmp(err->sqlstate, "PGS00") != 0)
            break;
        st = PGS_OK;
    }
    for (int i = 0; arrays && i < nb; i++)
        arrays_free(&arrays[i]);
    free(arrays);
    free(ap);
    st = pgs_events_map_error(err, st);
    if (st == PGS_OK && es->notifier) {
        int64_t last = 0;
        for (int i = 0; i < nb; i++)
            if (!results[i].replayed && results[i].last_position > last)
                last = results[i].last_position;
        if (last)
            pgs_notifier_post(es->notifier, last);
    }
    return st;
}
