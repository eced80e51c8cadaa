/* SPDX-License-Identifier: MIT
 * migrate.c — the one migration runner. A store's schema is a series of
 * files in core/sql (embedded at build time): <series>--1.sql, then
 * <series>--1--2.sql and on. A run, in ONE transaction on a pooled
 * connection, phase by phase (kv's phase hook sees these phases):
 *
 *   begin_tx, set_lock_timeout, then acquire_lock: first the locks
 *     older code took for this store (hashtext('pgstore.migrate'),
 *     hashtext(LEGACY KEY)) for each legacy key, and the store's own extra
 *     ones (kv: hashtext('pgstore.kv'), hashtext(quoted name as given)),
 *     then pg_advisory_xact_lock(hashtext('pgstore.migrate'), hashtext(KEY)).
 *     Always in this order, so old and new processes creating the same
 *     store serialize and never deadlock;
 *   check_table: the recorded version (under KEY, else under a legacy
 *     key) and, for every table and function of the store, to_regclass or
 *     to_regproc of its schema-qualified name;
 *   create_table: when one is missing, the whole series (every file is
 *     idempotent, so this also rebuilds a store whose tables or functions
 *     were dropped by hand); else the files above the recorded version;
 *   check_index / create_index: the store's indexes; a missing one runs
 *     the whole series again;
 *   commit: records KEY -> version in the BOOK and deletes the legacy rows
 *     it replaces; then COMMIT.
 *
 * A store is a table, not a spelling: the store resolved an unqualified
 * name to current_schema() once when it opened (store.c), so the runner
 * sees "schema.table" and every name it checks is schema-qualified.
 * KEY is "<series>:<schema>.<table>", unquoted (names are
 * [A-Za-z_][A-Za-z0-9_]* per part, so the dots cannot be ambiguous).
 *
 * The BOOK is "<schema>".pgstore_migrations, in the store's own schema:
 * each schema keeps its own book (schema-per-tenant: a tenant's schema
 * carries its stores and their versions), whatever a role's search_path.
 * It is created, under the lock (hashtext('pgstore.migrate'),
 * hashtext(BOOK)), only when missing. Before this runner, rows were keyed
 * "events:<quoted table>", "<kind>:<name as given>" and
 * "pgstore.leases:<name as given>" in the pgstore_migrations the
 * search_path found; a run recognises them there and in the BOOK, takes
 * their version and writes it under KEY in the BOOK.
 *
 * A store whose tables and indexes all exist but that no book knows was
 * made by code that kept no book (0.1's kv, locks and parked): it is
 * adopted at version 1, and only the files above run.
 *
 * When nothing is to be done the run needs no DDL rights: it creates
 * nothing, and skips rewriting a legacy row when the role may not write
 * the BOOK (a role that cannot read the BOOK is trusted to be current
 * when every table is there). Concurrent runs queue on the locks; the
 * first does the work and the rest find nothing left.
 */
#include "migrate.h"
#include "conn.h"
#include "error.h"
#include "sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keep in the same order as enum pgs_kv_phase in pgstore.h. */
static const char *const phase_names[PGS_KV_PHASE_END] = {
    "begin_tx",     "set_lock_timeout", "acquire_lock", "lock_acquired", "check_table",
    "create_table", "check_index",      "create_index", "commit",        "done",
};

struct pgs_kv_init {
    pgs_pool_t *pool; /* referenced */
    pgs_conn_t *conn; /* from begin_tx until commit or failure */
    pgs_kv_phase_t phase;
    char *series, *schema, *table; /* schema NULL: unqualified */
    char lock_timeout[32];
    int latest;
    char **files;                  /* [latest], filled */
    int ntables, nindexes, nlegacy, nlocks;
    char **tables, **indexes, **legacy, **lock_space, **lock_key;
    char key[320];
    char book[160];                /* "schema".pgstore_migrations */
    char *version_sql, *record_sql, *forget_sql;
    int files_ran;                 /* a file ran: the book must be written */
    int old_book;                  /* the search_path's book is another table */
    int from;                      /* files above this version run at create_table */
    int recorded;                  /* the version the run will record */
    int dirty;                     /* a row to write at commit */
};

const char *pgs_migrate_phase_name(pgs_kv_phase_t phase)
{
    if ((int)phase < 0 || phase >= PGS_KV_PHASE_END)
        return NULL;
    return phase_names[phase];
}

static void free_list(char **l, int n)
{
    for (int i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

static char **copy_list(const char *const *src, int n, int *ok)
{
    char **l = calloc((size_t)(n > 0 ? n : 1), sizeof *l);
    if (!l) {
        *ok = 0;
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!(l[i] = strdup(src[i])))
            *ok = 0;
    return l;
}

void pgs_migrate_free(pgs_migrate_run_t *run)
{
    if (!run)
        return;
    if (run->conn)
        pgs_pool_release(run->pool, run->conn); /* rolls back */
    if (run->pool)
        pgs_pool_unref(run->pool);
    free_list(run->files, run->latest);
    free_list(run->tables, run->ntables);
    free_list(run->indexes, run->nindexes);
    free_list(run->legacy, run->nlegacy);
    free_list(run->lock_space, run->nlocks);
    free_list(run->lock_key, run->nlocks);
    free(run->version_sql);
    free(run->record_sql);
    free(run->forget_sql);
    free(run->series);
    free(run->schema);
    free(run->table);
    free(run);
}

pgs_status_t pgs_migrate_start(pgs_pool_t *pool, const pgs_schema_t *s, pgs_migrate_run_t **out,
                               pgs_error_t *err)
{
    *out = NULL;
    pgs_migrate_run_t *run = calloc(1, sizeof *run);
    if (!run)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_pool_ref(pool);
    run->pool = pool;
    int ok = 1;
    const char *dot = strchr(s->table, '.');
    run->series = strdup(s->series);
    run->schema = dot ? strndup(s->table, (size_t)(dot - s->table)) : NULL;
    run->table = strdup(dot ? dot + 1 : s->table);
    ok = run->series && run->table && (!dot || run->schema);
    run->ntables = s->ntables;
    run->nindexes = s->nindexes;
    run->nlegacy = s->nlegacy;
    run->tables = copy_list(s->tables, s->ntables, &ok);
    run->indexes = copy_list(s->indexes, s->nindexes, &ok);
    run->legacy = copy_list(s->legacy, s->nlegacy, &ok);
    run->nlocks = s->nlocks;
    run->lock_space = copy_list(s->lock_space, s->nlocks, &ok);
    run->lock_key = copy_list(s->lock_key, s->nlocks, &ok);
    if (!ok) {
        pgs_migrate_free(run);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    run->latest = pgs_sql_latest(s->series);
    run->files = calloc((size_t)(run->latest > 0 ? run->latest : 1), sizeof *run->files);
    if (!run->files) {
        pgs_migrate_free(run);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    for (int v = 1; v <= run->latest; v++) {
        pgs_status_t st = pgs_sql_fill(pgs_sql_file(s->series, v), s->names, s->values, s->nnames,
                                       &run->files[v - 1], err);
        if (st != PGS_OK) {
            pgs_migrate_free(run);
            return st;
        }
    }
    /* The server takes at most INT_MAX milliseconds (24 days). */
    double ms = s->lock_timeout > 0 ? s->lock_timeout * 1000 + 0.999 : 0;
    snprintf(run->lock_timeout, sizeof run->lock_timeout, "%lldms",
             ms > 2147483647.0 ? 2147483647LL : (long long)ms);
    run->phase = PGS_KV_BEGIN_TX;
    *out = run;
    return PGS_OK;
}

pgs_kv_phase_t pgs_migrate_phase(const pgs_migrate_run_t *run)
{
    return run->phase;
}

/* ---- the statements ------------------------------------------------------------ */

static const char set_lock_timeout_sql[] = "SELECT set_config('lock_timeout', $1, true)";
static const char old_lock_sql[] =
    "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))";
static const char lock_sql[] =
    "SELECT k, s, pg_advisory_xact_lock(hashtext('pgstore.migrate'), hashtext(k)) FROM"
    " (SELECT $1::text || ':' || s || '.' || $3::text AS k, s FROM"
    "  (SELECT coalesce($2::text, current_schema()::text) AS s) c) k";
static const char book_sql[] =
    "SELECT CASE WHEN to_regclass($1) IS NULL THEN 0"
    " WHEN has_table_privilege($1, 'SELECT') THEN 1 ELSE 2 END";
/* The book older code kept wherever the search_path found it, when it is
 * another table than the store's book and readable. */
static const char old_book_sql[] =
    "SELECT to_regclass('pgstore_migrations') IS NOT NULL"
    " AND to_regclass('pgstore_migrations') IS DISTINCT FROM to_regclass($1)"
    " AND has_table_privilege('pgstore_migrations', 'SELECT')";
static const char old_version_sql[] =
    "SELECT version FROM pgstore_migrations WHERE target = $1";
static const char old_deletable_sql[] =
    "SELECT has_table_privilege('pgstore_migrations', 'DELETE')";
static const char old_forget_sql[] = "DELETE FROM pgstore_migrations WHERE target = $1";
/* A table or a function (functions are never overloaded in core/sql). */
static const char missing_sql[] = "SELECT to_regclass($1) IS NULL AND to_regproc($1) IS NULL";
static const char book_lock_sql[] =
    "SELECT pg_advisory_xact_lock(hashtext('pgstore.migrate'), hashtext($1))";
static const char book_missing_sql[] = "SELECT to_regclass($1) IS NULL";
static const char can_create_sql[] = "SELECT has_schema_privilege($1, 'CREATE')";
static const char book_writable_sql[] =
    "SELECT CASE WHEN to_regclass($1) IS NULL THEN has_schema_privilege($2, 'CREATE')"
    " ELSE has_table_privilege($1, 'INSERT') AND has_table_privilege($1, 'UPDATE')"
    " AND has_table_privilege($1, 'DELETE') END";
static const char book_create_sql[] =
    "CREATE TABLE IF NOT EXISTS @book@ ("
    " target text PRIMARY KEY, version int NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";
static const char version_sql[] = "SELECT version FROM @book@ WHERE target = $1";
static const char record_sql[] =
    "INSERT INTO @book@ (target, version) VALUES ($1, $2::int)"
    " ON CONFLICT (target) DO UPDATE SET version = EXCLUDED.version, applied_at = now()";
static const char forget_sql[] = "DELETE FROM @book@ WHERE target = $1";

/* A statement on the store's book, through the one filler (NULL when the
 * book's name does not fill: the error is in err). */
static char *fill_book(const char *tmpl, const char *book, pgs_error_t *err)
{
    const char *names[] = {"book"}, *values[] = {book};
    char *out = NULL;
    return pgs_sql_fill(tmpl, names, values, 1, &out, err) == PGS_OK ? out : NULL;
}

/* The first row's first column: -1 when there is no row or it is NULL. */
static pgs_status_t query_int(pgs_conn_t *c, const char *sql, const char *arg, int *out,
                              pgs_error_t *err)
{
    pgs_param_t p = {arg, -1};
    PGresult *r;
    pgs_status_t st = pgs_exec(c, sql, arg ? 1 : 0, arg ? &p : NULL, &r, err);
    if (st != PGS_OK)
        return st;
    const char *v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : NULL;
    *out = !v ? -1 : v[0] == 't' ? 1 : v[0] == 'f' ? 0 : atoi(v);
    PQclear(r);
    return PGS_OK;
}

/* Sets *missing to the first of names that does not exist, or NULL. */
static pgs_status_t first_missing(pgs_conn_t *c, const char *const *names, int n,
                                  const char **missing, pgs_error_t *err)
{
    *missing = NULL;
    for (int i = 0; i < n && !*missing; i++) {
        int gone;
        pgs_status_t st = query_int(c, missing_sql, names[i], &gone, err);
        if (st != PGS_OK)
            return st;
        if (gone == 1)
            *missing = names[i];
    }
    return PGS_OK;
}

static pgs_status_t lock_key(pgs_migrate_run_t *run, pgs_error_t *err)
{
    pgs_status_t st = PGS_OK;
    for (int i = 0; st == PGS_OK && i < run->nlegacy; i++) {
        pgs_param_t o[2] = {{"pgstore.migrate", -1}, {run->legacy[i], -1}};
        st = pgs_exec(run->conn, old_lock_sql, 2, o, NULL, err);
    }
    for (int i = 0; st == PGS_OK && i < run->nlocks; i++) {
        pgs_param_t o[2] = {{run->lock_space[i], -1}, {run->lock_key[i], -1}};
        st = pgs_exec(run->conn, old_lock_sql, 2, o, NULL, err);
    }
    if (st != PGS_OK)
        return st;
    pgs_param_t p[3] = {{run->series, -1}, {run->schema, -1}, {run->table, -1}};
    PGresult *r;
    st = pgs_exec(run->conn, lock_sql, 3, p, &r, err);
    if (st != PGS_OK)
        return st;
    if (PQgetisnull(r, 0, 0)) {
        st = pgs_error_set(err, PGS_EINVALID,
                           "no schema to create %s in: search_path names no existing schema",
                           run->table);
    } else {
        snprintf(run->key, sizeof run->key, "%s", PQgetvalue(r, 0, 0));
        const char *schema = PQgetvalue(r, 0, 1);
        if (!run->schema)
            run->schema = strdup(schema);
        snprintf(run->book, sizeof run->book, "\"%s\".\"pgstore_migrations\"", schema);
        run->version_sql = fill_book(version_sql, run->book, err);
        run->record_sql = run->version_sql ? fill_book(record_sql, run->book, err) : NULL;
        run->forget_sql = run->record_sql ? fill_book(forget_sql, run->book, err) : NULL;
        if (!run->forget_sql)
            st = err && err->code != PGS_OK ? err->code
                                            : pgs_error_set(err, PGS_ENOMEM, "out of memory");
        else if (!run->schema)
            st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    PQclear(r);
    return st;
}

/* The version recorded under `key` in the book (-1: none), then in the
 * older code's book when there is one. */
static pgs_status_t recorded_version(pgs_migrate_run_t *run, int book, int old_book,
                                     const char *key, int *v, pgs_error_t *err)
{
    *v = -1;
    pgs_status_t st = PGS_OK;
    if (book == 1)
        st = query_int(run->conn, run->version_sql, key, v, err);
    if (st == PGS_OK && *v < 0 && old_book == 1)
        st = query_int(run->conn, old_version_sql, key, v, err);
    return st;
}

static pgs_status_t check_tables(pgs_migrate_run_t *run, pgs_kv_phase_t *next, pgs_error_t *err)
{
    int book, old_book = 0, v = -1, found = 0;
    pgs_status_t st = query_int(run->conn, book_sql, run->book, &book, err);
    if (st == PGS_OK)
        st = query_int(run->conn, old_book_sql, run->book, &old_book, err);
    run->old_book = old_book == 1;
    if (st == PGS_OK && book == 1)
        st = query_int(run->conn, run->version_sql, run->key, &v, err);
    if (st == PGS_OK && v < 0 && old_book == 1) {
        st = query_int(run->conn, old_version_sql, run->key, &v, err);
        if (v >= 0)
            run->dirty = 1; /* copy it into the store's book */
    }
    run->recorded = v > 0 ? v : 0;
    found = v >= 0;
    for (int i = 0; st == PGS_OK && i < run->nlegacy; i++) {
        if (strcmp(run->legacy[i], run->key) == 0)
            continue;
        int lv;
        st = recorded_version(run, book, old_book, run->legacy[i], &lv, err);
        if (st == PGS_OK && lv >= 0) {
            run->dirty = 1; /* rewrite it under the key */
            if (!found && lv > run->recorded)
                run->recorded = lv;
            if (!found)
                found = 2;
        }
    }
    const char *missing = NULL;
    if (st == PGS_OK)
        st = first_missing(run->conn, (const char *const *)run->tables, run->ntables, &missing,
                           err);
    if (st != PGS_OK)
        return st;
    const char *no_index = NULL;
    if (book != 2 && !found && !missing)
        st = first_missing(run->conn, (const char *const *)run->indexes, run->nindexes,
                           &no_index, err);
    if (st != PGS_OK)
        return st;
    if (book == 2 && !missing) {
        run->recorded = run->latest; /* cannot read the book: trust the tables */
    } else if (!found && !missing && !no_index) {
        /* Every table and index is there and no book knows the store: code
         * that kept no book made it (0.1's kv, locks, parked), at version 1. */
        run->recorded = 1;
        run->dirty = 1;
    }
    run->from = missing ? 0 : run->recorded;
    /* A whole store behind the files, opened by a role that may not create
     * in its schema (DML rights only): it opens as it is, and its owner
     * upgrades it with `pgstore migrate`. */
    if (!missing && run->from > 0 && run->from < run->latest) {
        int can_create;
        st = query_int(run->conn, can_create_sql, run->schema, &can_create, err);
        if (st != PGS_OK)
            return st;
        if (can_create == 0)
            run->from = run->latest;
    }
    *next = run->from < run->latest ? PGS_KV_CREATE_TABLE : PGS_KV_CHECK_INDEX;
    return PGS_OK;
}

static pgs_status_t apply_files(pgs_migrate_run_t *run, int from, pgs_error_t *err)
{
    for (int v = from + 1; v <= run->latest; v++) {
        pgs_status_t st = pgs_exec_command(run->conn, run->files[v - 1], err);
        if (st != PGS_OK)
            return st;
    }
    if (run->recorded < run->latest)
        run->recorded = run->latest;
    run->dirty = run->files_ran = 1;
    return PGS_OK;
}

/* Writes KEY -> version into the book, creating the book when missing.
 * When no file ran (only a legacy row to rewrite) and the role may not
 * write the book, nothing is written: opening needs no rights then. */
static pgs_status_t record(pgs_migrate_run_t *run, pgs_error_t *err)
{
    char v[16];
    snprintf(v, sizeof v, "%d", run->recorded);
    pgs_param_t p[2] = {{run->key, -1}, {v, -1}};
    pgs_param_t b[2] = {{run->book, -1}, {run->schema, -1}};
    int ok = 1, missing = 0;
    pgs_status_t st = PGS_OK;
    if (!run->files_ran) {
        PGresult *r;
        st = pgs_exec(run->conn, book_writable_sql, 2, b, &r, err);
        if (st != PGS_OK)
            return st;
        ok = PQntuples(r) && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (!ok)
            return PGS_OK;
    }
    st = query_int(run->conn, book_missing_sql, run->book, &missing, err);
    if (st == PGS_OK && missing == 1) {
        st = pgs_exec(run->conn, book_lock_sql, 1, b, NULL, err);
        if (st == PGS_OK)
            st = query_int(run->conn, book_missing_sql, run->book, &missing, err);
        if (st == PGS_OK && missing == 1) {
            char *create = fill_book(book_create_sql, run->book, err);
            st = create ? pgs_exec_command(run->conn, create, err)
                        : (err && err->code != PGS_OK ? err->code : PGS_ENOMEM);
            free(create);
        }
    }
    if (st == PGS_OK)
        st = pgs_exec(run->conn, run->record_sql, 2, p, NULL, err);
    for (int i = 0; st == PGS_OK && i < run->nlegacy; i++) {
        if (strcmp(run->legacy[i], run->key) == 0)
            continue;
        pgs_param_t k = {run->legacy[i], -1};
        st = pgs_exec(run->conn, run->forget_sql, 1, &k, NULL, err);
    }
    /* The rows moved into the store's book leave the older one (when the
     * role may delete there: the server checks that before any WHERE). */
    int deletable = 0;
    if (st == PGS_OK && run->old_book)
        st = query_int(run->conn, old_deletable_sql, NULL, &deletable, err);
    for (int i = -1; st == PGS_OK && deletable == 1 && i < run->nlegacy; i++) {
        pgs_param_t k = {i < 0 ? run->key : run->legacy[i], -1};
        st = pgs_exec(run->conn, old_forget_sql, 1, &k, NULL, err);
    }
    return st;
}

static pgs_status_t run_phase(pgs_migrate_run_t *run, pgs_kv_phase_t *next, pgs_error_t *err)
{
    pgs_status_t st = PGS_OK;
    const char *missing;
    pgs_param_t p;
    switch (run->phase) {
    case PGS_KV_BEGIN_TX:
        st = pgs_pool_acquire(run->pool, -1, &run->conn, err);
        if (st == PGS_OK)
            st = pgs_tx_begin(run->conn, PGS_READ_COMMITTED, err);
        *next = PGS_KV_SET_LOCK_TIMEOUT;
        break;
    case PGS_KV_SET_LOCK_TIMEOUT:
        p = (pgs_param_t){run->lock_timeout, -1};
        st = pgs_exec(run->conn, set_lock_timeout_sql, 1, &p, NULL, err);
        *next = PGS_KV_ACQUIRE_LOCK;
        break;
    case PGS_KV_ACQUIRE_LOCK:
        st = lock_key(run, err);
        *next = PGS_KV_LOCK_ACQUIRED;
        break;
    case PGS_KV_LOCK_ACQUIRED:
        *next = PGS_KV_CHECK_TABLE;
        break;
    case PGS_KV_CHECK_TABLE:
        st = check_tables(run, next, err);
        break;
    case PGS_KV_CREATE_TABLE:
        st = apply_files(run, run->from, err);
        *next = PGS_KV_CHECK_INDEX;
        break;
    case PGS_KV_CHECK_INDEX:
        st = first_missing(run->conn, (const char *const *)run->indexes, run->nindexes,
                           &missing, err);
        *next = missing ? PGS_KV_CREATE_INDEX : PGS_KV_COMMIT;
        break;
    case PGS_KV_CREATE_INDEX:
        st = apply_files(run, 0, err);
        *next = PGS_KV_COMMIT;
        break;
    case PGS_KV_COMMIT:
        if (run->dirty)
            st = record(run, err);
        if (st == PGS_OK)
            st = pgs_tx_commit(run->conn, err);
        if (st == PGS_OK) {
            pgs_pool_release(run->pool, run->conn);
            run->conn = NULL;
        }
        *next = PGS_KV_DONE;
        break;
    case PGS_KV_DONE:
        *next = PGS_KV_PHASE_END;
        break;
    default:
        return pgs_error_set(err, PGS_EINVALID, "schema init has already finished");
    }
    return st;
}

pgs_status_t pgs_migrate_step(pgs_migrate_run_t *run, pgs_error_t *err)
{
    pgs_kv_phase_t next = PGS_KV_PHASE_END;
    pgs_status_t st = run_phase(run, &next, err);
    if (st == PGS_OK) {
        run->phase = next;
        return PGS_OK;
    }
    if (err && run->phase < PGS_KV_PHASE_END)
        err->phase = phase_names[run->phase]; /* a field: the message stays the server's */
    if (run->conn) {
        pgs_pool_release(run->pool, run->conn); /* rolls the transaction back */
        run->conn = NULL;
    }
    run->phase = PGS_KV_PHASE_END;
    return st;
}

pgs_status_t pgs_migrate_run(pgs_pool_t *pool, const pgs_schema_t *s, pgs_kv_hook_fn hook,
                             void *ud, pgs_error_t *err)
{
    pgs_migrate_run_t *run;
    pgs_status_t st = pgs_migrate_start(pool, s, &run, err);
    while (st == PGS_OK && run->phase != PGS_KV_PHASE_END) {
        if (hook) {
            pgs_error_clear(err);
            if ((st = hook(run->phase, ud, err)) != PGS_OK) {
                if (err && !err->message[0])
                    pgs_error_set(err, st, "%s schema init stopped by the phase hook at %s",
                                  s->series, phase_names[run->phase]);
                if (err)
                    err->phase = phase_names[run->phase];
                break;
            }
        }
        st = pgs_migrate_step(run, err);
    }
    pgs_migrate_free(run);
    return st;
}

/* "s"."t" -> s, t ("t" -> "", t): the quoted names hold no quote inside. */
static void name_parts(const char *quoted, char *schema, char *table, size_t size)
{
    const char *dot = strstr(quoted, "\".\"");
    schema[0] = '\0';
    if (dot)
        snprintf(schema, size, "%.*s", (int)(dot - quoted - 1), quoted + 1);
    const char *t = dot ? dot + 2 : quoted;
    snprintf(table, size, "%.*s", (int)(strlen(t) - 2), t + 1);
}

pgs_status_t pgs_migrate_check(pgs_pool_t *pool, const pgs_schema_t *s, pgs_error_t *err)
{
    pgs_conn_t *c;
    pgs_status_t st = pgs_pool_acquire(pool, -1, &c, err);
    if (st != PGS_OK)
        return st;
    const char *missing = NULL;
    st = first_missing(c, s->tables, s->ntables, &missing, err);
    pgs_pool_release(pool, c);
    if (st == PGS_OK && missing) {
        st = pgs_error_set(err, PGS_ENOTFOUND,
                           "%s of the %s store does not exist; it is opened without "
                           "migrations: run `pgstore migrate` or open it with migrations on",
                           missing, s->series);
        if (err)
            name_parts(missing, err->schema, err->table, sizeof err->table);
    }
    return st;
}

pgs_status_t pgs_migrate_open(pgs_pool_t *pool, const pgs_schema_t *s, int migrate,
                              pgs_error_t *err)
{
    return migrate ? pgs_migrate_run(pool, s, NULL, NULL, err) : pgs_migrate_check(pool, s, err);
}
