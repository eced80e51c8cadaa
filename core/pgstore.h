/* SPDX-License-Identifier: MIT
 * pgstore.h — the public C API of libpgstore: connections and pool,
 * queries with bound parameters, transactions, pipelines, and the stores.
 * Plain C over libpq; no Lua here. Every function that can fail returns a
 * pgs_status_t and fills a caller-supplied pgs_error_t (which may be NULL).
 * A function that hands back a new object through `**out` sets *out to
 * NULL when it fails, so closing it afterwards is harmless.
 */
#ifndef PGSTORE_H
#define PGSTORE_H

#include <stddef.h>
#include <stdint.h>
#include "pgstore_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes and errors ------------------------------------------ */

/* Keep in the same order as status_names[] in error.c. */
typedef enum pgs_status {
    PGS_OK = 0,
    PGS_ESQL,        /* the server rejected a statement (see sqlstate)     */
    PGS_ECONNECTION, /* could not connect, or the connection was lost      */
    PGS_ETIMEOUT,    /* pool acquire, lock wait or statement timed out      */
    PGS_EINVALID,    /* bad input caught before reaching the server         */
    PGS_ECONFLICT,   /* optimistic concurrency check failed                 */
    PGS_EDUPLICATE,  /* unique value already present                        */
    PGS_ENOTFOUND,   /* the thing asked for does not exist                  */
    PGS_EDELETED,    /* the stream is tombstoned                            */
    PGS_EARCHIVED,   /* the stream is archived                              */
    PGS_ELEASE_LOST, /* a fencing token is no longer current                */
    PGS_EREJECTED,   /* a policy guard refused the write                    */
    PGS_ECLOSED,     /* the pool or handle was closed                       */
    PGS_ENOMEM,      /* out of memory                                       */
    PGS_STATUS_COUNT
} pgs_status_t;

#define PGS_ERROR_MESSAGE_MAX 1024
#define PGS_ERROR_NAME_MAX 64 /* the server's identifiers: NAMEDATALEN */

/* What went wrong, each part in its own field: code reads the fields, and
 * the message is for people (it is never parsed). Text fields are "" and
 * numbers 0 when unset; the struct holds no pointers to free. */
typedef struct pgs_error {
    pgs_status_t code;
    char sqlstate[6];                     /* "" when not from the server      */
    /* The server's primary message, or pgstore's own; one line, never the
     * DSN password. DETAIL and HINT are not folded into it. */
    char message[PGS_ERROR_MESSAGE_MAX];
    /* The server's own fields, as it sent them (PQresultErrorField). */
    char detail[PGS_ERROR_MESSAGE_MAX];   /* DETAIL                           */
    char hint[PGS_ERROR_MESSAGE_MAX];     /* HINT                             */
    char constraint[PGS_ERROR_NAME_MAX];  /* the violated constraint          */
    char schema[PGS_ERROR_NAME_MAX];      /* the schema, table, column and    */
    char table[PGS_ERROR_NAME_MAX];       /* data type the error is about,    */
    char column[PGS_ERROR_NAME_MAX];      /* where the server names them      */
    char datatype[PGS_ERROR_NAME_MAX];
    /* PGS_ECONFLICT on versions: what was expected and what was found
     * (for an append, expected may be PGS_EXPECT_NO_STREAM or _EXISTS). */
    int has_versions;
    int64_t expected;
    int64_t actual;
    /* 1-based: the statement of a pipeline run that failed, which for
     * pgs_events_append_many is the failing batch; 0 when not such a call. */
    int batch;
    /* The kv schema init phase that failed (pgs_kv_phase_name's static
     * string); NULL otherwise. */
    const char *phase;
    /* An append retry that raced its first attempt (SQLSTATE PGS00, from a
     * store whose append function predates the in-function replay): the
     * first attempt's result, which the append returns as a success. */
    struct {
        int set;
        int64_t first_version, last_version, first_position, last_position;
        int count;
    } replay;
} pgs_error_t;

/* The short, stable name of a status ("ok", "sql", "connection", …).
 * Returns a static string. */
const char *pgs_status_name(pgs_status_t code);

/* Resets err to PGS_OK with empty fields. NULL-tolerant. */
void pgs_error_clear(pgs_error_t *err);

/* Fills err (NULL-tolerant) and returns code. printf-style message. */
pgs_status_t pgs_error_set(pgs_error_t *err, pgs_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when err is a serialization failure (40001) or deadlock (40P01),
 * i.e. the whole transaction may be re-run. */
int pgs_error_retryable(const pgs_error_t *err);

/* ---- connections ------------------------------------------------------- */

typedef struct pgs_conn pgs_conn_t;

/* A connection pooler in front of the server. In transaction pooling mode
 * (PgBouncer's pool_mode = transaction) each transaction, and each statement
 * outside one, may run on another server session, so pgstore keeps nothing
 * on the session: statements go unnamed (Parse/Bind/Execute in one message
 * sequence, their parameter types cached on the client), pgstore's settings
 * are set where the pooler keeps them per client (DateStyle, TimeZone) or
 * per transaction (statement_timeout, lock_timeout, at BEGIN), and what
 * needs a session of its own — session advisory locks — is refused
 * (PGS_EINVALID). LISTEN needs a direct connection (listen_dsn in Lua). */
typedef enum pgs_pooler {
    PGS_POOLER_NONE = 0,         /* a direct connection, or session pooling */
    PGS_POOLER_TRANSACTION       /* transaction pooling                     */
} pgs_pooler_t;

typedef struct pgs_conn_opts {
    const char *conninfo;        /* libpq key=value string or URI; NULL or ""
                                    means libpq's PG* environment            */
    double connect_timeout;      /* seconds; 0 → 5                          */
    int statement_timeout_ms;    /* 0 → server default                      */
    const char *application_name;/* NULL → "pgstore"                        */
    int stmt_cache_size;         /* prepared statements kept; 0 → 256       */
    double query_timeout;        /* seconds the client waits for a statement;
                                    past it the statement is cancelled, the
                                    connection given up (the pool replaces
                                    it) and the call fails PGS_ETIMEOUT —
                                    also when the network, not the server,
                                    is stuck. 0: no limit                    */
    int lock_timeout_ms;         /* the session's lock_timeout: how long a
                                    statement waits for a row or table lock
                                    before it fails; 0 → server default     */
    pgs_pooler_t pooler;         /* what sits between pgstore and the server */
} pgs_conn_opts_t;

/* 1 when a connection string carries a password, as libpq parses it (a
 * `password` keyword, a URI's user:password@, a percent-encoded
 * p%61ssword= parameter); when libpq cannot parse it, 1 when it might
 * ("pass", '@' or '%' anywhere in it). For callers that must keep such a
 * string out of sight (process arguments). */
int pgs_conninfo_has_password(const char *conninfo);

/* Opens one connection. On success *out is owned by the caller and freed
 * with pgs_conn_close(). The session runs with DateStyle ISO and UTC. */
pgs_status_t pgs_conn_open(const pgs_conn_opts_t *opts, pgs_conn_t **out, pgs_error_t *err);

/* Closes and frees a connection. NULL-tolerant. */
void pgs_conn_close(pgs_conn_t *conn);

/* Where the connection stands between statements. */
typedef enum pgs_tx_state {
    PGS_TX_IDLE = 0,     /* no transaction open                           */
    PGS_TX_ACTIVE,       /* a statement is running                        */
    PGS_TX_OPEN,         /* inside a transaction block                    */
    PGS_TX_FAILED,       /* inside a failed transaction block             */
    PGS_TX_UNKNOWN       /* the connection is bad                         */
} pgs_tx_state_t;

pgs_tx_state_t pgs_conn_tx_state(pgs_conn_t *conn);

/* The server process id serving conn (0 when not connected). */
int pgs_conn_backend_pid(pgs_conn_t *conn);

/* Cheap liveness check without a round trip: true when the socket has not
 * been closed or errored by the server while idle. */
int pgs_conn_alive(pgs_conn_t *conn);

/* Re-establishes a broken connection (forgets prepared statements). */
pgs_status_t pgs_conn_reset(pgs_conn_t *conn, pgs_error_t *err);

/* Asks the server to cancel the statement running on conn; callable from
 * any thread while another thread runs it. The statement then fails with
 * PGS_ETIMEOUT (SQLSTATE 57014). Nothing happens when no statement runs,
 * and a cancel never reaches a later statement: the owner cannot finish
 * one and start the next while this runs. The caller must make sure conn
 * stays borrowed (is not released, and so possibly closed) meanwhile. */
pgs_status_t pgs_conn_cancel(pgs_conn_t *conn, pgs_error_t *err);

/* Asks the server to cancel the statement this process started last, if
 * it still runs; for a signal handler (Ctrl-C), as psql does: it only calls
 * PQcancel, which is async-signal-safe. Meant for one thread running
 * statements (a REPL): with several, it may reach another thread's
 * statement, or race with that thread closing its connection.
 * Returns 1 when a cancel request was sent. */
int pgs_conn_interrupt(void);

/* A bound parameter. value NULL is SQL NULL; length < 0 means strlen. A
 * parameter whose server type is bytea is sent in binary, so any bytes pass
 * and length counts. Other parameters are text: they must be NUL-terminated
 * (libpq reads text up to the NUL) and must not contain a NUL within
 * length (PGS_EINVALID). */
typedef struct pgs_param {
    const char *value;
    int length;
} pgs_param_t;

/* ---- rows: what a statement returned ----------------------------------- */

/* How a column's text value maps to a host value. */
typedef enum pgs_kind {
    PGS_KIND_TEXT = 0, /* text, varchar, numeric, json, uuid, …: as is   */
    PGS_KIND_INT,      /* int2, int4, int8, oid                          */
    PGS_KIND_FLOAT,    /* float4, float8                                 */
    PGS_KIND_BOOL,     /* bool: "t" / "f"                                */
    PGS_KIND_BYTEA,    /* bytea: hex text, decode with pgs_bytea_decode  */
    PGS_KIND_TIMESTAMP /* timestamptz / timestamp: normalise to ISO 8601 */
} pgs_kind_t;

/* A statement's result: rows × columns of text values (as PostgreSQL's
 * text output writes them), with column names and kinds. Opaque; read it
 * with the functions below, free it with pgs_rows_free(). Rows and columns
 * count from 0. A value's text stays valid until the rows are freed. */
typedef struct pgs_rows pgs_rows_t;

int pgs_rows_count(const pgs_rows_t *rows);
int pgs_rows_columns(const pgs_rows_t *rows);
/* The column's name (owned by rows), or NULL when col is out of range. */
const char *pgs_rows_name(const pgs_rows_t *rows, int col);
/* The index of the column called name, or -1. Names match as in SQL:
 * unquoted, case-insensitively; in double quotes ("Name"), exactly. */
int pgs_rows_column(const pgs_rows_t *rows, const char *name);
/* How the column's text maps to a host value (see pgs_kind_t). */
pgs_kind_t pgs_rows_kind(const pgs_rows_t *rows, int col);
int pgs_rows_is_null(const pgs_rows_t *rows, int row, int col);
/* The value's text, NUL-terminated, owned by rows ("" for NULL or out of
 * range); *len (when len is not NULL) gets its length in bytes. */
const char *pgs_rows_value(const pgs_rows_t *rows, int row, int col, size_t *len);
/* The value as a whole number; fallback when NULL, out of range or not
 * exactly a whole number in decimal ("-12", not " 12" or "+12"). */
int64_t pgs_rows_int(const pgs_rows_t *rows, int row, int col, int64_t fallback);
/* 1 when the statement was a command that returns no rows (INSERT without
 * RETURNING, CREATE, SET …), 0 when it returned a row set (even empty). */
int pgs_rows_is_command(const pgs_rows_t *rows);
/* The count in the statement's command tag: rows a command inserted,
 * updated or deleted, or a SELECT returned; 0 for commands without one. */
int64_t pgs_rows_affected(const pgs_rows_t *rows);
/* Frees rows. NULL-tolerant. */
void pgs_rows_free(pgs_rows_t *rows);

/* Runs one statement. With nparams > 0 it is prepared once per connection
 * and cached by its SQL text; with no parameters it goes through the simple
 * protocol, so several ';'-separated statements are allowed. On PGS_OK,
 * *rows (when rows is not NULL) is the caller's: pgs_rows_free() it. */
pgs_status_t pgs_query(pgs_conn_t *conn, const char *sql, int nparams,
                       const pgs_param_t *params, pgs_rows_t **rows, pgs_error_t *err);

/* Like pgs_exec for a statement with no parameters that returns no rows
 * that matter (BEGIN, SET …). */
pgs_status_t pgs_exec_command(pgs_conn_t *conn, const char *sql, pgs_error_t *err);


/* ---- the pool ---------------------------------------------------------- */

typedef struct pgs_pool pgs_pool_t;

typedef struct pgs_pool_opts {
    pgs_conn_opts_t conn;
    int max_size;                /* 0 → 4                                    */
    double acquire_timeout;      /* seconds to wait for a free connection;
                                    0 → 5                                    */
} pgs_pool_opts_t;

/* Creates a thread-safe pool. Connections open lazily; the conninfo is
 * checked now (PGS_EINVALID when it does not parse, or when its options=
 * is over 8,000 bytes or ends in an unpaired backslash). *out is owned by the
 * caller: pgs_pool_close() it. */
pgs_status_t pgs_pool_open(const pgs_pool_opts_t *opts, pgs_pool_t **out, pgs_error_t *err);

/* Borrows a connection, waiting up to timeout seconds (< 0: the pool's
 * acquire_timeout). A connection found dead is replaced transparently.
 * The connection stays owned by the pool: give it back with
 * pgs_pool_release(). */
pgs_status_t pgs_pool_acquire(pgs_pool_t *pool, double timeout, pgs_conn_t **out, pgs_error_t *err);

/* Gives a connection back. A connection left inside a transaction is rolled
 * back; one left busy or broken is closed and replaced later. When the
 * borrower ran SQL of its own (pgs_query, pgs_exec_command, a pipeline),
 * its session is cleaned for the next borrower: settings reset, temporary
 * tables, cursors, LISTEN, session advisory locks and statements prepared
 * through SQL dropped; pgstore's prepared statements stay. */
void pgs_pool_release(pgs_pool_t *pool, pgs_conn_t *conn);

/* Closes the pool: idle connections now, borrowed ones on release. The pool
 * memory is freed when the last borrowed connection comes back. */
void pgs_pool_close(pgs_pool_t *pool);

typedef struct pgs_pool_stats {
    int max_size, open, idle, borrowed, waiting;
} pgs_pool_stats_t;

void pgs_pool_stats(pgs_pool_t *pool, pgs_pool_stats_t *out);

/* Reference counting for holders other than the opener (stores, shared
 * users): pgs_pool_ref() keeps the memory alive, pgs_pool_unref() drops it.
 * A closed pool stays valid for its holders; acquiring fails PGS_ECLOSED. */
void pgs_pool_ref(pgs_pool_t *pool);
void pgs_pool_unref(pgs_pool_t *pool);
int pgs_pool_is_closed(pgs_pool_t *pool);

/* Process-wide pools shared by a key (for nginx workers and their thread
 * VMs). Returns a pool with a reference for the caller: pgs_pool_unref() it.
 * Options apply when the pool is first created. */
pgs_status_t pgs_pool_shared(const char *key, const pgs_pool_opts_t *opts, pgs_pool_t **out,
                             pgs_error_t *err);

/* ---- transactions ------------------------------------------------------ */

typedef enum pgs_isolation {
    PGS_READ_COMMITTED = 0,
    PGS_REPEATABLE_READ,
    PGS_SERIALIZABLE
} pgs_isolation_t;

pgs_status_t pgs_tx_begin(pgs_conn_t *conn, pgs_isolation_t iso, pgs_error_t *err);
pgs_status_t pgs_tx_commit(pgs_conn_t *conn, pgs_error_t *err);
/* Rolls back whatever transaction is open; harmless when none is. */
pgs_status_t pgs_tx_rollback(pgs_conn_t *conn, pgs_error_t *err);
/* Savepoint names are validated identifiers. */
pgs_status_t pgs_tx_savepoint(pgs_conn_t *conn, const char *name, pgs_error_t *err);
pgs_status_t pgs_tx_rollback_to(pgs_conn_t *conn, const char *name, pgs_error_t *err);
pgs_status_t pgs_tx_release(pgs_conn_t *conn, const char *name, pgs_error_t *err);

/* Runs fn inside a transaction on a pooled connection, committing when fn
 * returns PGS_OK, rolling back otherwise, and re-running the whole thing on
 * serialization failures and deadlocks up to `retries` times with jittered
 * backoff. fn's error is returned as is. */
typedef pgs_status_t (*pgs_tx_fn)(pgs_conn_t *conn, void *ud, pgs_error_t *err);
pgs_status_t pgs_transaction(pgs_pool_t *pool, pgs_isolation_t iso, int retries,
                             pgs_tx_fn fn, void *ud, pgs_error_t *err);

/* Sleep before retry number `attempt` (1-based): jittered exponential. */
void pgs_backoff_sleep(int attempt);

/* ---- pipelines: many statements in one round trip ---------------------- */

typedef struct pgs_pipeline pgs_pipeline_t;

/* Enters pipeline mode on conn. *out is owned by the caller and must be
 * finished with pgs_pipeline_run() or pgs_pipeline_abort(). */
pgs_status_t pgs_pipeline_begin(pgs_conn_t *conn, pgs_pipeline_t **out, pgs_error_t *err);

/* Queues a statement (parameters are copied). */
pgs_status_t pgs_pipeline_add(pgs_pipeline_t *p, const char *sql, int nparams,
                              const pgs_param_t *params, pgs_error_t *err);

/* Sends everything with one sync, collects the results in order, leaves
 * pipeline mode and frees p. On PGS_OK *results is an array of `count`
 * results owned by the caller (pgs_results_free()). On failure err is the
 * first failing statement's error, err->batch its 1-based index, and
 * nothing is returned. Outside an explicit transaction the statements of one run form
 * one implicit transaction: a failure rolls them all back. */
pgs_status_t pgs_pipeline_run(pgs_pipeline_t *p, pgs_rows_t ***results, int *count,
                              pgs_error_t *err);
void pgs_pipeline_abort(pgs_pipeline_t *p);
/* Frees an array of results and the array. NULL-tolerant. */
void pgs_results_free(pgs_rows_t **results, int count);

/* ---- identifiers ------------------------------------------------------- */

/* Validates a table name: one or two dot-separated parts (schema.table),
 * each 1..63 bytes of [A-Za-z_][A-Za-z0-9_]* (no $). Writes the quoted form
 * ("schema"."table") to out. PGS_EINVALID with a clear message otherwise. */
pgs_status_t pgs_ident_quote(const char *name, char *out, size_t outsz, pgs_error_t *err);

/* Validates and quotes a table name with a suffix added to its last part
 * (events + "_heads" → "events_heads"), checking the 63-byte limit. */
pgs_status_t pgs_ident_quote_suffix(const char *name, const char *suffix, char *out, size_t outsz,
                                    pgs_error_t *err);

#define PGS_IDENT_MAX 140 /* room for "schema"."table" with quotes */
#define PGS_NAME_MAX 63   /* bytes in one part of a table name (the server's NAMEDATALEN - 1) */

/* ---- values ------------------------------------------------------------ */


/* The kind of a column of the given type OID. */
pgs_kind_t pgs_kind_of(unsigned int type_oid);

/* Decodes bytea hex output ("\x…") into out (room for (len-2)/2 bytes;
 * out may be in). Returns the decoded length, or -1 on malformed input,
 * in which case nothing was written. */
long pgs_bytea_decode(const char *in, size_t len, char *out);

/* Rewrites "2026-11-21 02:34:10.5+00" as "2026-11-21T02:34:10.5+00:00".
 * out needs len + 4 bytes. Returns the new length. */
size_t pgs_timestamp_iso(const char *in, size_t len, char *out);


/* ---- event store ------------------------------------------------------- */

/* An event store over a base table (default "events") and its companions:
 * <table>_heads (one row per stream), <table>_idempotency, the sequence
 * <table>_position_seq, and the functions <table>_append, <table>_append_rows,
 * <table>_read_all, <table>_import, <table>_seq_last. Schema: core/sql/events--*.sql. */
typedef struct pgs_events pgs_events_t;


/* The largest event (data + metadata bytes) a store takes by default. */
#define PGS_EVENT_SIZE_DEFAULT (1024 * 1024)

/* The number rules the core holds every caller to, exported to Lua as
 * core.limits (seconds, time, batches) so no other layer restates them.
 * PGS_SECONDS_MAX: the longest timeout, TTL or interval in seconds, since
 * the server keeps its timeouts as int milliseconds (2^31 - 1 ms, 24.8
 * days). PGS_TIME_MAX: the latest append time, in seconds since 1970, a
 * timestamptz holds (it ends in the year 294276). PGS_APPEND_BATCHES_MAX:
 * batches in one all-or-nothing append_many; each takes two advisory locks
 * until its transaction ends, and the server's lock table is shared by all
 * (max_locks_per_transaction x max_connections): split bigger imports into
 * calls of at most this many, each its own transaction. */
#define PGS_SECONDS_MAX 2147483.0
#define PGS_TIME_MAX 9.2e12
#define PGS_APPEND_BATCHES_MAX 1000

typedef struct pgs_events_opts {
    const char *table;         /* NULL → "events"                          */
    const char *notify;        /* channel woken after appends; NULL →
                                  "pgstore_events"; "": no NOTIFY           */
    int notify_in_tx;          /* NOTIFY inside the append's transaction    */
    double notify_interval;    /* coalescing window in seconds; 0 → 0.002   */
    int skip_schema_init;      /* do not create or upgrade the schema on
                                  open (roles without DDL rights)           */
    size_t max_event_size;     /* bytes of data + metadata; 0 → PGS_EVENT_SIZE_DEFAULT */
} pgs_events_opts_t;

/* Opens a store on pool (referenced, not owned). *out is the caller's:
 * pgs_events_close() it. */
pgs_status_t pgs_events_open(pgs_pool_t *pool, const pgs_events_opts_t *opts, pgs_events_t **out,
                             pgs_error_t *err);
/* Creates or upgrades the schema; idempotent, safe from many processes. */
pgs_status_t pgs_events_migrate(pgs_events_t *es, pgs_error_t *err);
/* Stops the notifier and frees the store. NULL-tolerant. */
void pgs_events_close(pgs_events_t *es);
/* The quoted table name ("schema"."events"); owned by es. */
const char *pgs_events_table(const pgs_events_t *es);
/* The store: its table as resolved at open, "schema.events" unquoted (or
 * "events" when the schema's name falls outside the name rules); owned by
 * es. What consumer checkpoints are keyed by. */
const char *pgs_events_store(const pgs_events_t *es);

typedef struct pgs_event {
    const char *type;          /* required, non-empty, at most 255 bytes     */
    size_t type_len;
    const char *data;          /* JSON text; NULL → JSON null                */
    size_t data_len;
    const char *metadata;      /* JSON text or NULL                          */
    size_t metadata_len;
    const char *id;            /* UUID text or NULL (generated)              */
    int schema_version;        /* 0 → 1                                      */
} pgs_event_t;

/* What the stream's version must be for an append to go ahead. */
typedef enum pgs_expect {
    PGS_EXPECT_ANY = 0,        /* whatever the version (the default)         */
    PGS_EXPECT_VERSION,        /* exactly `version` (0: no events yet)       */
    PGS_EXPECT_NO_STREAM,      /* the stream must have no events             */
    PGS_EXPECT_EXISTS          /* the stream must have at least one          */
} pgs_expect_t;

/* Zero-initialised: expect any version, no key, the server's time. */
typedef struct pgs_append_opts {
    pgs_expect_t expect;
    int64_t version;           /* with PGS_EXPECT_VERSION, >= 0              */
    const char *idempotency_key; /* NULL: none                               */
    double time;               /* unix seconds for the events; 0: now()      */
} pgs_append_opts_t;

typedef struct pgs_append_result {
    int64_t first_version, last_version, first_position, last_position;
    int count;
    int replayed;              /* 1: an earlier identical append's result   */
} pgs_append_result_t;

/* Appends n >= 1 events to stream in one transaction (tx's, when given;
 * then the NOTIFY is sent inside it and the server delivers it at tx's
 * commit). PGS_ECONFLICT fills err->expected/actual; PGS_EDELETED, PGS_EARCHIVED,
 * PGS_EDUPLICATE (id or key reused differently), PGS_EINVALID (bad input,
 * nothing sent). A lost connection after COMMIT was sent is PGS_ECONNECTION:
 * retry with the same idempotency key to get the original result. */
pgs_status_t pgs_events_append(pgs_events_t *es, pgs_conn_t *tx, const char *stream,
                               const pgs_event_t *events, int n, const pgs_append_opts_t *opts,
                               pgs_append_result_t *res, pgs_error_t *err);

typedef struct pgs_append_batch {
    const char *stream;
    const pgs_event_t *events;
    int n;
    pgs_append_opts_t opts;
} pgs_append_batch_t;

/* Appends to several streams all-or-nothing, in one round trip. results has
 * nb entries, 1 <= nb <= PGS_APPEND_BATCHES_MAX (else PGS_EINVALID, nothing
 * sent). On failure err->batch is the failing batch (1-based). */
pgs_status_t pgs_events_append_many(pgs_events_t *es, const pgs_append_batch_t *batches, int nb,
                                    pgs_append_result_t *results, pgs_error_t *err);

typedef struct pgs_read_opts {
    int64_t from;              /* first version (inclusive); 0 → 1          */
    int64_t to;                /* last version (inclusive); 0: no bound      */
    int64_t limit;             /* 0: no limit                                */
    const char *const *types;  /* only these types; NULL: all               */
    int ntypes;
    int backward;              /* newest first                              */
} pgs_read_opts_t;

/* Reads a stream through `via` (a replica pool) or, when NULL, the store's
 * pool. *rows (the caller's: pgs_rows_free() it) has columns id, stream, version,
 * position, type, schema_version, data, metadata, time. A tombstoned
 * stream is PGS_EDELETED; one archived to another store, PGS_EARCHIVED;
 * an unknown stream is an empty result. */
pgs_status_t pgs_events_read(pgs_events_t *es, pgs_pool_t *via, const char *stream,
                             const pgs_read_opts_t *opts, pgs_rows_t **rows, pgs_error_t *err);

typedef struct pgs_read_all_opts {
    int64_t after;             /* cursor: events with position > after      */
    int limit;                 /* 0 → 1000                                   */
    const char *const *types;
    int ntypes;
    const char *prefix;        /* only streams starting with it (literal)    */
    int partition_count;       /* > 0: only streams whose pgs_partition_for  */
    const int32_t *partitions; /* (stream, partition_count) is one of these  */
    int npartitions;           /* (computed on the server)                   */
} pgs_read_all_opts_t;

/* Reads all streams in position order, never skipping an event that commits
 * later with a lower position (see core/sql/events--1.sql). Always on the
 * primary. *rows holds *nrows event rows (columns as pgs_events_read, plus a
 * last column "horizon") followed by one marker row; the caller
 * pgs_rows_free()s it. *cursor is where the next call continues. */
pgs_status_t pgs_events_read_all(pgs_events_t *es, const pgs_read_all_opts_t *opts, pgs_rows_t **rows,
                                 int *nrows, int64_t *cursor, pgs_error_t *err);

/* The stream's version (0 when it has no events), via a heads lookup. */
pgs_status_t pgs_events_version(pgs_events_t *es, pgs_pool_t *via, const char *stream,
                                int64_t *version, pgs_error_t *err);
/* "active", "archived", "tombstoned" or "none" (a static string). */
pgs_status_t pgs_events_status(pgs_events_t *es, pgs_pool_t *via, const char *stream,
                               const char **status, pgs_error_t *err);
/* The end: the cursor read_all returns (every event that commits from now
 * on has a higher position, also one whose append is in flight now), or
 * the floor pgs_events_hold_end left, whichever is higher; 0 when empty.
 * Never lower than an end reported before (short of es:truncate). Always
 * on the primary; via is unused. */
pgs_status_t pgs_events_latest_position(pgs_events_t *es, pgs_pool_t *via, int64_t *position,
                                        pgs_error_t *err);
/* Raises the end's floor to the end as it stands and returns it in
 * *position: removing events at or below it (retention, deletes, moves)
 * then never takes pgs_events_latest_position back. A store opened as it
 * is before its upgrade has no floor: the end is returned, not held. */
pgs_status_t pgs_events_hold_end(pgs_events_t *es, int64_t *position, pgs_error_t *err);
/* Removes (dry_run: counts) at most `limit` idempotency keys older than
 * `ttl` seconds (> 0), the oldest first, in one statement of its own;
 * *count says how many. A key younger than ttl is never touched. */
pgs_status_t pgs_events_expire_keys(pgs_events_t *es, double ttl, int limit, int dry_run, int *count,
                                    pgs_error_t *err);

/* Lifecycle. tombstone: appends fail with PGS_EDELETED from now on, reads
 * too; events stay for read_all. archive: appends fail with PGS_EARCHIVED,
 * reads work. restore: back to active. archive and restore: PGS_ENOTFOUND
 * when absent, PGS_EDELETED when tombstoned. delete: events, head and the
 * stream's idempotency keys removed (PGS_ENOTFOUND when absent). Each
 * waits for the stream's appends in flight and applies after them.
 * truncate: everything, sequence restarted (tests only). */
pgs_status_t pgs_events_tombstone(pgs_events_t *es, const char *stream, const char *reason,
                                  pgs_error_t *err);
pgs_status_t pgs_events_archive(pgs_events_t *es, const char *stream, pgs_error_t *err);
pgs_status_t pgs_events_restore(pgs_events_t *es, const char *stream, pgs_error_t *err);
pgs_status_t pgs_events_delete(pgs_events_t *es, const char *stream, pgs_error_t *err);
pgs_status_t pgs_events_truncate(pgs_events_t *es, pgs_error_t *err);

/* Moves a stream's events from src to dst (another table, possibly another
 * database): dst imports them (same ids, versions, times; new positions),
 * then src deletes them and marks the stream `src_status` ("archived" for
 * archive_to; NULL removes src's head, for restore_from). In one
 * transaction when both stores share a pool; otherwise copy-then-delete,
 * safe to retry (imports are idempotent by event id). *moved = events.
 * PGS_ENOTFOUND when src has no such stream, PGS_EDELETED when it is
 * tombstoned in src or dst; nothing is written then. */
pgs_status_t pgs_events_move(pgs_events_t *src, pgs_events_t *dst, const char *stream,
                             const char *src_status, int64_t *moved, pgs_error_t *err);
/* ---- snapshot store ------------------------------------------------------ */

/* The latest snapshot of each stream, in its own table (default
 * "pgstore_snapshots"): stream text PRIMARY KEY, version bigint,
 * schema_version integer, state jsonb, created_at timestamptz.
 *
 * Like every store below, it is opened from a pool and references it (the
 * pool's owner may close it; the store then fails with PGS_ECLOSED), and
 * every operation takes `tx`: a connection inside the caller's transaction
 * (the statement joins it), or NULL to borrow one from the pool for that
 * single statement. Values the server rejects as data (invalid UTF-8,
 * malformed JSON, \u0000 in jsonb, keys too large to index) are
 * PGS_EINVALID with the SQLSTATE kept; inside the caller's transaction
 * such an error aborts that transaction, as any failed statement does. */
typedef struct pgs_snapshots pgs_snapshots_t;

typedef struct pgs_snapshots_opts {
    const char *table;     /* [schema.]name; NULL or "" → "pgstore_snapshots" */
    int skip_schema_init;  /* nonzero: do not create the table on open       */
    size_t max_value_size; /* bytes of state JSON accepted; 0 → 1 MiB        */
} pgs_snapshots_opts_t;

/* Validates the table name and, unless skip_schema_init, migrates. opts may
 * be NULL. *out is owned by the caller: pgs_snapshots_close() it. */
pgs_status_t pgs_snapshots_open(pgs_pool_t *pool, const pgs_snapshots_opts_t *opts,
                                pgs_snapshots_t **out, pgs_error_t *err);
/* Frees the store and drops its pool reference. NULL-tolerant. */
void pgs_snapshots_close(pgs_snapshots_t *ss);
/* Creates or upgrades the table: idempotent, safe from many processes
 * at once (pgs_migrate's advisory lock). */
pgs_status_t pgs_snapshots_migrate(pgs_snapshots_t *ss, pgs_error_t *err);
/* Stores state_json (a JSON text) as the snapshot of `stream` at `version`
 * unless a newer version is stored; an equal version is overwritten.
 * *written (may be NULL) is 1 when the row was written, 0 when a newer
 * snapshot was kept. Negative versions are PGS_EINVALID. */
pgs_status_t pgs_snapshots_save(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                int64_t version, const char *state_json, int schema_version,
                                int *written, pgs_error_t *err);
/* PGS_ENOTFOUND when the stream has no snapshot. On PGS_OK *rows holds one
 * row — stream text, version int8, state jsonb (text), schema_version
 * int4, time timestamptz — and is owned by the caller: pgs_rows_free() it. */
pgs_status_t pgs_snapshots_load(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                pgs_rows_t **rows, pgs_error_t *err);
/* Deletes the stream's snapshot; absent is not an error. *removed (may be
 * NULL) is the number of rows deleted, here and below. */
pgs_status_t pgs_snapshots_invalidate(pgs_snapshots_t *ss, pgs_conn_t *tx, const char *stream,
                                      int64_t *removed, pgs_error_t *err);
pgs_status_t pgs_snapshots_invalidate_all(pgs_snapshots_t *ss, pgs_conn_t *tx, int64_t *removed,
                                          pgs_error_t *err);

/* ---- consumer checkpoints ------------------------------------------------ */

/* The last processed global position of each consumer of an event store
 * (default table "pgstore_checkpoints": store text, consumer text,
 * position bigint, updated_at timestamptz, PRIMARY KEY (store, consumer)).
 * A handle serves one event store: every call below is keyed by that
 * store and the consumer. Saving with `tx` commits the checkpoint with
 * the caller's read-model writes. */
typedef struct pgs_checkpoints pgs_checkpoints_t;

typedef struct pgs_checkpoints_opts {
    const char *table;    /* NULL or "" → "pgstore_checkpoints" */
    int skip_schema_init;
    /* The event store's table as pgs_events_opts_t names it, resolved the
     * same way when the handle opens (so "events", "public.events" and a
     * search_path hit are one store); NULL → "events". */
    const char *store;
} pgs_checkpoints_opts_t;

/* What a save expects to find. */
typedef enum pgs_checkpoints_expect {
    PGS_CHECKPOINT_ANY = 0, /* write unconditionally                   */
    PGS_CHECKPOINT_EXACT,   /* only if the stored position is `expected` */
    PGS_CHECKPOINT_NONE     /* only if nothing is stored yet            */
} pgs_checkpoints_expect_t;

/* *out is owned by the caller: pgs_checkpoints_close() it. */
pgs_status_t pgs_checkpoints_open(pgs_pool_t *pool, const pgs_checkpoints_opts_t *opts,
                                  pgs_checkpoints_t **out, pgs_error_t *err);
void pgs_checkpoints_close(pgs_checkpoints_t *cp);
/* The store this handle serves, resolved: "schema.table" unquoted (the
 * value of the store column). Owned by cp. */
const char *pgs_checkpoints_store(const pgs_checkpoints_t *cp);
pgs_status_t pgs_checkpoints_migrate(pgs_checkpoints_t *cp, pgs_error_t *err);
/* PGS_ENOTFOUND for a consumer with no checkpoint. */
pgs_status_t pgs_checkpoints_load(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                  int64_t *position, pgs_error_t *err);
/* Upserts the position (>= 0) in one statement. With EXACT or NONE a
 * checkpoint moved by someone else is PGS_ECONFLICT with err->has_versions
 * set (expected, actual = stored); PGS_CHECKPOINT_NONE_STORED on a side
 * means "no checkpoint" (expected none, or none stored). */
#define PGS_CHECKPOINT_NONE_STORED (-1)
pgs_status_t pgs_checkpoints_save(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                  int64_t position, pgs_checkpoints_expect_t expect,
                                  int64_t expected, pgs_error_t *err);
/* Forgets a consumer; absent is not an error. */
pgs_status_t pgs_checkpoints_delete(pgs_checkpoints_t *cp, pgs_conn_t *tx, const char *consumer,
                                    int64_t *removed, pgs_error_t *err);
/* Every checkpoint of the handle's store, ordered by consumer: rows of
 * consumer text, cursor int8, time timestamptz, store text. *rows is owned by the caller: pgs_rows_free() it. */
pgs_status_t pgs_checkpoints_list(pgs_checkpoints_t *cp, pgs_conn_t *tx, pgs_rows_t **rows,
                                  pgs_error_t *err);

/* ---- execution checkpoints ----------------------------------------------- */

/* One row per execution id holding its latest checkpoint document
 * (default table "pgstore_exec_checkpoints": exec_id text PRIMARY KEY,
 * checkpoint jsonb, updated_at timestamptz). Concurrent saves of one id
 * from many connections leave one row with one of the saved documents and
 * never fail. */
typedef struct pgs_exec_checkpoints pgs_exec_checkpoints_t;

typedef struct pgs_exec_checkpoints_opts {
    const char *table;     /* NULL or "" → "pgstore_exec_checkpoints" */
    int skip_schema_init;
    size_t max_value_size; /* bytes of checkpoint JSON; 0 → 1 MiB */
} pgs_exec_checkpoints_opts_t;

/* *out is owned by the caller: pgs_exec_checkpoints_close() it. */
pgs_status_t pgs_exec_checkpoints_open(pgs_pool_t *pool, const pgs_exec_checkpoints_opts_t *opts,
                                       pgs_exec_checkpoints_t **out, pgs_error_t *err);
void pgs_exec_checkpoints_close(pgs_exec_checkpoints_t *xs);
pgs_status_t pgs_exec_checkpoints_migrate(pgs_exec_checkpoints_t *xs, pgs_error_t *err);
/* INSERT … ON CONFLICT DO UPDATE: always the latest. */
pgs_status_t pgs_exec_checkpoints_save(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       const char *exec_id, const char *checkpoint_json,
                                       pgs_error_t *err);
/* PGS_ENOTFOUND for an unknown id. On PGS_OK *rows holds one row —
 * checkpoint jsonb (text), time timestamptz — owned by the caller. */
pgs_status_t pgs_exec_checkpoints_load(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       const char *exec_id, pgs_rows_t **rows, pgs_error_t *err);
/* Rows of exec_id text, ordered; *rows is owned by the caller. */
pgs_status_t pgs_exec_checkpoints_list(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                       pgs_rows_t **rows, pgs_error_t *err);
/* Absent is not an error. */
pgs_status_t pgs_exec_checkpoints_delete(pgs_exec_checkpoints_t *xs, pgs_conn_t *tx,
                                         const char *exec_id, int64_t *removed, pgs_error_t *err);

/* ---- session store ------------------------------------------------------- */

/* JSONB state and history per session id with optimistic concurrency
 * (default table "pgstore_sessions": id text PRIMARY KEY, version bigint,
 * state jsonb, history jsonb array, updated_at timestamptz). The version
 * check and the write are one INSERT … ON CONFLICT … DO UPDATE … WHERE
 * stored.version < EXCLUDED.version: no explicit transaction, no row
 * lock held between statements. */
typedef struct pgs_sessions pgs_sessions_t;

typedef struct pgs_sessions_opts {
    const char *table;     /* NULL or "" → "pgstore_sessions" */
    int skip_schema_init;
    size_t max_value_size; /* bytes of state + history JSON; 0 → 1 MiB */
} pgs_sessions_opts_t;

/* *out is owned by the caller: pgs_sessions_close() it. */
pgs_status_t pgs_sessions_open(pgs_pool_t *pool, const pgs_sessions_opts_t *opts,
                               pgs_sessions_t **out, pgs_error_t *err);
void pgs_sessions_close(pgs_sessions_t *s);
pgs_status_t pgs_sessions_migrate(pgs_sessions_t *s, pgs_error_t *err);
/* Writes the session at `version` when none is stored or the stored
 * version is strictly lower; otherwise nothing is written and the result
 * is PGS_ECONFLICT with err->has_versions set (expected = the version
 * given, actual = the stored one). history_json NULL → "[]"; it must be a
 * JSON array. */
pgs_status_t pgs_sessions_save(pgs_sessions_t *s, pgs_conn_t *tx, const char *id,
                               int64_t version, const char *state_json,
                               const char *history_json, pgs_error_t *err);
/* PGS_ENOTFOUND for an unknown id. On PGS_OK *rows holds one row —
 * version int8, state jsonb, history jsonb, time timestamptz — owned by
 * the caller: pgs_rows_free() it. */
pgs_status_t pgs_sessions_load(pgs_sessions_t *s, pgs_conn_t *tx, const char *id,
                               pgs_rows_t **rows, pgs_error_t *err);
/* Absent is not an error. */
pgs_status_t pgs_sessions_delete(pgs_sessions_t *s, pgs_conn_t *tx, const char *id,
                                 int64_t *removed, pgs_error_t *err);

/* ---- key-value store with TTL -------------------------------------------- */

/* BYTEA values under text keys, each with an optional expiry (default
 * table "pgstore_kv": key text COLLATE "C" PRIMARY KEY, value bytea,
 * expires_at timestamptz NULL = never, plus a partial index on
 * expires_at named <table>_expires_idx). Expired rows are invisible to
 * pgs_kv_get at once and removed by pgs_kv_cleanup or the background
 * cleaner. Keys are C strings (no NUL); values are any bytes. */
typedef struct pgs_kv pgs_kv_t;

/* The steps of schema init, in the order they run (create_table and
 * create_index only when the table or index is missing). Keep in the same
 * order as phase_names[] in kv.c. */
typedef enum pgs_kv_phase {
    PGS_KV_BEGIN_TX = 0,
    PGS_KV_SET_LOCK_TIMEOUT,
    PGS_KV_ACQUIRE_LOCK,
    PGS_KV_LOCK_ACQUIRED,
    PGS_KV_CHECK_TABLE,
    PGS_KV_CREATE_TABLE,
    PGS_KV_CHECK_INDEX,
    PGS_KV_CREATE_INDEX,
    PGS_KV_COMMIT,
    PGS_KV_DONE,
    PGS_KV_PHASE_END /* no phase left */
} pgs_kv_phase_t;

/* "begin_tx", "set_lock_timeout", … "done" (static); NULL for END. */
const char *pgs_kv_phase_name(pgs_kv_phase_t phase);

/* Called before each phase runs. Returning anything but PGS_OK (and
 * filling err) stops the init there; the transaction is rolled back. */
typedef pgs_status_t (*pgs_kv_hook_fn)(pgs_kv_phase_t phase, void *ud, pgs_error_t *err);

#define PGS_KV_SCHEMA_BY_CALLER 2

typedef struct pgs_kv_opts {
    const char *table;        /* NULL or "" → "pgstore_kv"; the name plus
                                 "_expires_idx" must fit in 63 bytes       */
    int skip_schema_init;     /* nonzero: no init on open (no DDL rights);
                                 the table must exist (else PGS_ENOTFOUND).
                                 PGS_KV_SCHEMA_BY_CALLER: not even that,
                                 the caller runs pgs_kv_init_* itself      */
    double cleanup_interval;  /* seconds between background cleanups;
                                 0 → no cleaner thread                     */
    double lock_timeout;      /* seconds schema init waits for its locks;
                                 0 → 10                                    */
    size_t max_value_size;    /* bytes per value; 0 → 1 MiB                */
    pgs_kv_hook_fn phase_hook;/* schema init on open calls it (may be NULL)*/
    void *phase_ud;
} pgs_kv_opts_t;

/* Opens the store: unless skip_schema_init, runs pgs_kv_migrate with the
 * hook; with cleanup_interval > 0 starts the cleaner thread. A process
 * forked afterwards has a copy without the thread: it may only
 * pgs_kv_close() it. *out is owned by the caller: pgs_kv_close() it. */
pgs_status_t pgs_kv_open(pgs_pool_t *pool, const pgs_kv_opts_t *opts, pgs_kv_t **out,
                         pgs_error_t *err);
/* Stops the cleaner (waking it at once, cancelling a cleanup in flight),
 * then frees the store. NULL-tolerant. */
void pgs_kv_close(pgs_kv_t *kv);

/* Schema init, all phases, in one transaction under
 * pg_advisory_xact_lock with the store's lock_timeout. A failing phase is
 * named in err->phase ("acquire_lock", …). */
pgs_status_t pgs_kv_migrate(pgs_kv_t *kv, pgs_kv_hook_fn hook, void *ud, pgs_error_t *err);

/* The same, one phase at a time, for drivers that call their hook
 * themselves: start, then while pgs_kv_init_phase() is not
 * PGS_KV_PHASE_END, run it with pgs_kv_init_step(). After a failure the
 * phase is END. The init holds its own pool reference and, between
 * begin_tx and commit, a pooled connection: pgs_kv_init_free() it (rolling
 * back when unfinished). It does not point into kv. */
typedef struct pgs_kv_init pgs_kv_init_t;
pgs_status_t pgs_kv_init_start(pgs_kv_t *kv, pgs_kv_init_t **out, pgs_error_t *err);
pgs_kv_phase_t pgs_kv_init_phase(const pgs_kv_init_t *it);
pgs_status_t pgs_kv_init_step(pgs_kv_init_t *it, pgs_error_t *err);
void pgs_kv_init_free(pgs_kv_init_t *it);

/* Stores len bytes under key; ttl > 0 expires it after ttl seconds, 0 or a
 * negative ttl never; NaN, the infinities and more than PGS_TIME_MAX are
 * PGS_EINVALID. */
pgs_status_t pgs_kv_set(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, const char *value,
                        size_t len, double ttl, pgs_error_t *err);
/* PGS_ENOTFOUND when absent or expired. On PGS_OK *value and *len point
 * into *rows (decoded in place), which the caller owns: pgs_rows_free() it. */
pgs_status_t pgs_kv_get(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, pgs_rows_t **rows,
                        const char **value, size_t *len, pgs_error_t *err);
/* Absent is not an error. */
pgs_status_t pgs_kv_delete(pgs_kv_t *kv, pgs_conn_t *tx, const char *key, int64_t *removed,
                           pgs_error_t *err);
/* Deletes every key starting with prefix, matched literally (%, _ and \
 * are escaped for LIKE); "" deletes every row. */
pgs_status_t pgs_kv_delete_prefix(pgs_kv_t *kv, pgs_conn_t *tx, const char *prefix,
                                  int64_t *removed, pgs_error_t *err);
/* Deletes the expired rows now. */
pgs_status_t pgs_kv_cleanup(pgs_kv_t *kv, pgs_conn_t *tx, int64_t *removed, pgs_error_t *err);

typedef struct pgs_kv_cleaner_stats {
    double interval;        /* 0 when there is no cleaner          */
    int running;            /* the thread is alive and not stopping */
    int64_t runs, removed, failures;
    char last_error[PGS_ERROR_MESSAGE_MAX]; /* "" when none         */
} pgs_kv_cleaner_stats_t;

void pgs_kv_cleaner_stats(pgs_kv_t *kv, pgs_kv_cleaner_stats_t *out);
/* ---- notify and the listener ------------------------------------------- */

/* Channel names: 1..63 bytes of [A-Za-z0-9_.:-] (they become quoted
 * identifiers in LISTEN). The server refuses a payload of 8000 bytes or
 * more ("must be shorter than 8000 bytes"), so 7999 is the largest sent. */
#define PGS_CHANNEL_MAX 63
#define PGS_NOTIFY_PAYLOAD_MAX 7999

/* PGS_EINVALID with a clear message when the name does not qualify. */
pgs_status_t pgs_channel_check(const char *channel, pgs_error_t *err);
/* PGS_EINVALID when the payload is too long or contains a NUL byte. */
pgs_status_t pgs_notify_payload_check(const char *payload, size_t len, pgs_error_t *err);
/* Both checks, as pgs_notify makes them before sending (payload NULL: ""). */
pgs_status_t pgs_notify_check(const char *channel, const char *payload, size_t len,
                              pgs_error_t *err);

/* pg_notify(channel, payload) on conn, both bound parameters, checked
 * first (PGS_EINVALID before anything is sent). Inside a transaction the
 * notification is delivered at commit. */
pgs_status_t pgs_notify(pgs_conn_t *conn, const char *channel, const char *payload, size_t len,
                        pgs_error_t *err);

/* A listener owns one connection that LISTENs to a set of channels. It is
 * pulled: pgs_listener_wait() does all the work (reading, heartbeat,
 * reconnecting) and returns one notification at a time, so it is used from
 * one thread at a time. When the connection drops, the next waits reconnect
 * with backoff (first at once, then reconnect_min doubling up to
 * reconnect_max, ±25 % jitter), LISTEN again, and deliver a marker:
 * channel "*", reconnected = 1 — notifications sent meanwhile are lost, so
 * consumers catch up from stored state. A marker with overflow = 1 says the
 * queue (max_queue) overflowed and was dropped; lost says how many. */
typedef struct pgs_listener pgs_listener_t;

typedef struct pgs_listener_opts {
    pgs_conn_opts_t conn;      /* its own connection (not from a pool)      */
    double heartbeat;          /* seconds of silence before a probe; 0 → 10  */
    double heartbeat_timeout;  /* seconds a probe or command may take before
                                  the connection counts as dead; 0 → 5      */
    double reconnect_min;      /* first backoff in seconds; 0 → 0.1          */
    double reconnect_max;      /* backoff cap in seconds; 0 → 10             */
    int max_queue;             /* notifications held for the caller; 0 → 10000 */
    int ignore_self;           /* drop notifications sent on this connection
                                  (pgs_listener_notify): the relay's echo   */
} pgs_listener_opts_t;

typedef struct pgs_notification {
    const char *channel;       /* "*" for a marker                          */
    const char *payload;       /* NUL-terminated; "" for a marker           */
    size_t payload_len;
    int pid;                   /* the notifying backend; 0 for a marker     */
    int reconnected;           /* marker: the connection was re-established */
    int overflow;              /* marker: queued notifications were dropped */
    long lost;                 /* marker: how many (overflow markers that
                                  came before and went with them included) */
    struct pgs_notification *next; /* internal                              */
} pgs_notification_t;

/* Connects, LISTENs to the channels (validated first) and returns when the
 * server has confirmed. The first connection must succeed: PGS_ECONNECTION
 * (or the server's refusal, e.g. LISTEN on a hot standby) otherwise. *out is
 * owned by the caller: pgs_listener_close() it. */
pgs_status_t pgs_listener_open(const pgs_listener_opts_t *opts, const char *const *channels,
                               int nchannels, pgs_listener_t **out, pgs_error_t *err);

/* Closes the connection and frees everything. NULL-tolerant. */
void pgs_listener_close(pgs_listener_t *l);

/* Adds or removes a channel. While connected the change is confirmed by the
 * server before returning; while reconnecting it is applied by the re-LISTEN
 * (and announced by the marker). Removing also drops queued notifications of
 * that channel. Adding twice or removing an absent channel is not an error. */
pgs_status_t pgs_listener_add(pgs_listener_t *l, const char *channel, pgs_error_t *err);
pgs_status_t pgs_listener_remove(pgs_listener_t *l, const char *channel, pgs_error_t *err);

/* Waits up to timeout seconds (< 0: without limit, 0: only what is already
 * there) for a notification. On PGS_OK *out is owned by the caller
 * (pgs_notification_free). PGS_ETIMEOUT when nothing arrived — also while
 * the server is unreachable: the listener keeps trying, see stats. */
pgs_status_t pgs_listener_wait(pgs_listener_t *l, double timeout, pgs_notification_t **out,
                               pgs_error_t *err);
void pgs_notification_free(pgs_notification_t *n);

/* pgs_listener_wait that also returns as soon as wake_fd is readable:
 * PGS_OK with *out NULL. wake_fd (an eventfd or a pipe's read end,
 * non-blocking) stays the caller's; the listener drains it with one read.
 * So one thread may block here for as long as nothing happens while
 * another thread asks for the listener back by writing to wake_fd.
 * Heartbeats and reconnects happen inside the wait, as in pgs_listener_wait. */
pgs_status_t pgs_listener_wait_wake(pgs_listener_t *l, double timeout, int wake_fd,
                                    pgs_notification_t **out, pgs_error_t *err);

/* Sends pg_notify(channel, payload) on the listener's own connection and
 * waits for the server's confirmation, never longer than timeout seconds
 * (<= 0: the connect timeout). Reconnects within that time if a reconnect is
 * due; while backing off it fails at once with PGS_ECONNECTION. PGS_ETIMEOUT
 * means unconfirmed (it may still be delivered). */
pgs_status_t pgs_listener_notify(pgs_listener_t *l, const char *channel, const char *payload,
                                 size_t len, double timeout, pgs_error_t *err);

/* For event loops: the socket to watch for readability (-1 while there is
 * none), and the seconds until pgs_listener_wait(l, 0, …) must run anyway
 * (heartbeat, reconnect, connect progress; 0 when something is queued).
 * The socket changes on reconnect: look it up again after each wait. Drain
 * with wait(…, 0) until PGS_ETIMEOUT before watching the socket again:
 * libpq may already hold notifications that will not make it readable. */
int pgs_listener_fd(const pgs_listener_t *l);
double pgs_listener_due(const pgs_listener_t *l);

typedef struct pgs_listener_stats {
    int connected;             /* connected and LISTENing                   */
    int pid;                   /* backend pid of the connection; 0 if none  */
    long reconnects;           /* successful reconnects since open          */
    long dropped;              /* notifications dropped on queue overflow   */
    int queued;                /* notifications waiting for the caller      */
    int channels;              /* channels in the set                       */
    pgs_error_t last_error;    /* why the connection was last lost or could
                                  not be made; code PGS_OK if never         */
} pgs_listener_stats_t;

void pgs_listener_stats(const pgs_listener_t *l, pgs_listener_stats_t *out);

/* The i-th channel of the set (0-based), still owned by l; NULL past the end. */
const char *pgs_listener_channel(const pgs_listener_t *l, int i);

/* ---- stable hashes ------------------------------------------------------ */

/* FNV-1a 64 of the bytes (offset basis 14695981039346656037, prime
 * 1099511628211). For strings: their UTF-8 bytes, no terminator. */
uint64_t pgs_hash_fnv1a64(const void *data, size_t len);

/* Jump consistent hash (Lamping & Veach 2014): a bucket in 0..buckets-1;
 * growing buckets from n to n+1 moves only 1/(n+1) of the keys. -1 when
 * buckets <= 0. */
int32_t pgs_hash_jump(uint64_t key, int32_t buckets);

/* The partition of a key (a stream name): jump(fnv1a64(key), count), in
 * 0..count-1 — the same in every process, host and release. */
int32_t pgs_partition_for(const char *key, size_t len, int32_t count);

/* The advisory-lock key of a string: fnv1a64(key) reinterpreted as a signed
 * 64-bit integer (two's complement), used as pg_advisory_lock(bigint). */
int64_t pgs_lock_key(const char *key, size_t len);

/* ---- partition leases ---------------------------------------------------- */

/* Workers share `count` partitions of a named set through a lease table
 * (default "pgstore_leases", with "<table>_members" and the function
 * "<table>_guard", created by a migration). Partitions are numbered
 * 0..count-1; every worker of a set must use the same count. Each tick, in
 * one statement, renews this worker's membership and leases, releases what
 * is over its share and claims free or expired partitions up to it: with W
 * live workers each ends up with ⌊P/W⌋ or ⌈P/W⌉. A worker that stops
 * renewing loses its partitions when its lease expires. Every change of
 * owner increases the partition's fencing token. Thread-safe: a background
 * renewer (pgs_lease_start) may tick while other threads read and guard. */
typedef struct pgs_lease pgs_lease_t;

/* A lease holder is an instance: the readable owner plus a random id of
 * this many hex digits, drawn when the handle opens, so two processes given
 * one owner string (two containers, each "host:1") are two holders. */
#define PGS_LEASE_INSTANCE_LEN 16
#define PGS_LEASE_OWNER_MAX 200

/* Creates or upgrades the lease tables (NULL → "pgstore_leases") through
 * the migration runner, as pgs_lease_open does unless skip_schema_init. */
pgs_status_t pgs_lease_migrate(pgs_pool_t *pool, const char *table, pgs_error_t *err);

typedef struct pgs_lease_opts {
    const char *table;         /* NULL → "pgstore_leases"                   */
    const char *name;          /* the partition set (required)              */
    int32_t count;             /* partitions; 0 → 8                         */
    double lease;              /* seconds a claim or renewal lasts; 0 → 10
                                  or 3 × renew, whichever is longer         */
    double renew;              /* seconds between ticks; 0 → lease / 3;
                                  < lease                                   */
    const char *owner;         /* unique per live worker; NULL →
                                  "hostname:pid" (":n" for the n-th set
                                  opened in the process)                   */
    int skip_schema_init;      /* nonzero: no migration on open; the tables
                                  must exist (else PGS_ENOTFOUND)           */
} pgs_lease_opts_t;

/* Keep in the same order as the names in the Lua binding. */
typedef enum pgs_lease_change_kind {
    PGS_LEASE_ACQUIRED = 0,    /* claimed; token is the new token           */
    PGS_LEASE_RELEASED,        /* given up by this worker (over its share,
                                  or pgs_lease_release); the old token      */
    PGS_LEASE_LOST             /* taken by another worker or vanished; the
                                  old token                                 */
} pgs_lease_change_kind_t;

typedef struct pgs_lease_change {
    int32_t partition;
    pgs_lease_change_kind_t kind;
    int64_t token;
    char from[PGS_LEASE_OWNER_MAX + 1]; /* acquired from a holder whose lease
                                  had expired (a takeover): its owner; else "" */
} pgs_lease_change_t;

/* Migrates the table, makes sure the set's partition rows exist, and
 * returns a handle holding nothing yet (the first tick claims). Keeps a
 * reference to the pool. *out is owned by the caller: pgs_lease_close(). */
pgs_status_t pgs_lease_open(pgs_pool_t *pool, const pgs_lease_opts_t *opts, pgs_lease_t **out,
                            pgs_error_t *err);

/* One claim/renew/release round (one statement). On PGS_OK *changes (when
 * changes is not NULL) is a malloc'd array of the *nchanges changes since
 * they were last handed out (including those of background ticks), which
 * the caller free()s; NULL when there are none. On failure nothing is
 * handed out (*changes NULL): the changes wait for the next call. With
 * changes NULL they are discarded.
 * A tick waits at most renew/2 (0.1..5 s) for row locks held by guarded
 * transactions, then fails with PGS_ETIMEOUT. */
pgs_status_t pgs_lease_tick(pgs_lease_t *l, pgs_lease_change_t **changes, int *nchanges,
                            pgs_error_t *err);

/* Hands out the pending changes without ticking (see pgs_lease_tick). */
int pgs_lease_changes(pgs_lease_t *l, pgs_lease_change_t **changes);

/* Releases every partition and the membership now, so others take over at
 * their next tick. changes as for pgs_lease_tick. */
pgs_status_t pgs_lease_release(pgs_lease_t *l, pgs_lease_change_t **changes, int *nchanges,
                               pgs_error_t *err);

/* The fencing token held for a partition, 0 when not held — or when the
 * last successful tick is older than the lease (the server may have let it
 * expire). */
int64_t pgs_lease_token(pgs_lease_t *l, int32_t partition);

/* Fills tokens[0..count-1] as pgs_lease_token would; returns how many are
 * held. */
int pgs_lease_owned(pgs_lease_t *l, int64_t *tokens);

/* Fencing, inside the caller's open transaction on tx: fails the statement
 * — and so the transaction — with PGS_ELEASE_LOST (SQLSTATE PGSL1) unless
 * this instance still holds `partition` with `token` (<= 0: the token held
 * now) and the lease has not expired. On success the lease row stays locked
 * FOR SHARE until the transaction ends, so no takeover can commit before
 * it; that transaction is bounded from then on: a statement or an idle
 * pause longer than the lease ends the session (statement_timeout and
 * idle_in_transaction_session_timeout, transaction-local), so a holder
 * frozen after its guard cannot keep the partition. Run it last, just
 * before commit, under READ COMMITTED; under
 * REPEATABLE READ/SERIALIZABLE run it first (a renewal between snapshot and
 * guard is a serialization failure). Pass the token your work started
 * under when the work spans ticks. */
pgs_status_t pgs_lease_guard(pgs_lease_t *l, pgs_conn_t *tx, int32_t partition, int64_t token,
                             pgs_error_t *err);

typedef struct pgs_lease_info {
    const char *name, *owner, *table; /* owned by the lease handle          */
    const char *instance;      /* this holder's random id (owned likewise)  */
    int32_t count;
    double lease, renew;
    long ticks, failures;      /* rounds run, rounds failed                 */
    int background;            /* the renewer thread runs                   */
    pgs_error_t last_error;    /* of the last failed round                  */
} pgs_lease_info_t;

void pgs_lease_info(pgs_lease_t *l, pgs_lease_info_t *out);

/* Starts or stops a thread that ticks every `renew` seconds (on a pooled
 * connection); its changes wait for pgs_lease_changes / pgs_lease_tick. */
pgs_status_t pgs_lease_start(pgs_lease_t *l, pgs_error_t *err);
void pgs_lease_stop(pgs_lease_t *l);

/* Stops the renewer, releases everything (best effort: otherwise the leases
 * expire) and frees. NULL-tolerant. */
void pgs_lease_close(pgs_lease_t *l);

/* ---- locks --------------------------------------------------------------- */

/* Named locks held across processes. A key is a string of 1..512 bytes of
 * valid UTF-8 without NUL (pgs_lock_key_check); advisory modes lock
 * pgs_lock_key(key) — FNV-1a 64 as a signed bigint — with the server's
 * single-bigint advisory locks. */
#define PGS_LOCK_KEY_MAX 512

typedef enum pgs_lock_mode {
    PGS_LOCK_ADVISORY = 0,     /* pg_advisory_lock on a pinned pooled
                                  connection: released by release, by the
                                  connection dropping, or the process dying */
    PGS_LOCK_TABLE             /* compare-and-set on a row of a lock table,
                                  for servers without advisory locks: held
                                  for `ttl` seconds unless renewed, so a dead
                                  holder's lock frees itself after the TTL  */
} pgs_lock_mode_t;

typedef struct pgs_lock_opts {
    pgs_lock_mode_t mode;
    double timeout;            /* acquire: seconds to wait; < 0 without
                                  limit; 0 a single attempt                 */
    const char *table;         /* NULL → "pgstore_locks" (advisory mode:
                                  its tokens in <table>_tokens), migrated
                                  on first use                              */
    double ttl;                /* table mode: seconds; 0 → 30               */
    int skip_schema_init;      /* never create the tables; a
                                  missing one is PGS_ENOTFOUND              */
} pgs_lock_opts_t;

typedef struct pgs_lock pgs_lock_t;

/* The projections' dead-letter table (NULL → "pgstore_parked"): migrated
 * when migrate, else checked (PGS_ENOTFOUND when missing). */
pgs_status_t pgs_parked_migrate(pgs_pool_t *pool, const char *table, int migrate,
                                pgs_error_t *err);

/* The relay's table for changes larger than a NOTIFY payload (NULL →
 * "pgstore_relay"): migrated when migrate, else checked (PGS_ENOTFOUND when
 * missing). */
pgs_status_t pgs_relay_migrate(pgs_pool_t *pool, const char *table, int migrate,
                               pgs_error_t *err);

/* Creates or upgrades the lock table (NULL → "pgstore_locks") through the
 * migration runner; table-mode acquires do it on first use unless
 * skip_schema_init. */
pgs_status_t pgs_lock_migrate(pgs_pool_t *pool, const char *table, pgs_error_t *err);

pgs_status_t pgs_lock_key_check(const char *key, size_t len, pgs_error_t *err);

/* Acquires, waiting up to opts->timeout (opts NULL: advisory, one attempt).
 * PGS_ETIMEOUT when not acquired in time. On PGS_OK *out is a held lock owned
 * by the caller, to be given to pgs_lock_release(). An advisory lock pins
 * one connection of the pool until then. */
pgs_status_t pgs_lock_acquire(pgs_pool_t *pool, const char *key, size_t len,
                              const pgs_lock_opts_t *opts, pgs_lock_t **out, pgs_error_t *err);

/* One attempt: PGS_OK with *out NULL when someone else holds it. */
pgs_status_t pgs_lock_try(pgs_pool_t *pool, const char *key, size_t len,
                          const pgs_lock_opts_t *opts, pgs_lock_t **out, pgs_error_t *err);

/* Keeps a lock: table mode extends the TTL; advisory mode checks that the
 * session still holds it. PGS_ELEASE_LOST when it is gone. */
pgs_status_t pgs_lock_renew(pgs_lock_t *lock, pgs_error_t *err);

/* Releases and frees the lock (always, whatever the outcome; NULL-tolerant).
 * PGS_ELEASE_LOST when it turns out the lock had already been lost (its
 * connection dropped, or its TTL ran out): whatever it protected was not
 * protected to the end. */
pgs_status_t pgs_lock_release(pgs_lock_t *lock, pgs_error_t *err);

/* Asks the server whether the lock is still held by this handle (one round
 * trip): advisory, whether its pinned session still holds it; table mode,
 * whether its row still has this token unexpired. *held is 0 whenever the
 * server could not be asked (and the status says why). */
pgs_status_t pgs_lock_held(pgs_lock_t *lock, int *held, pgs_error_t *err);

/* Fencing: inside the caller's open transaction tx, locks the key's token
 * row FOR SHARE and checks that token is the current hold's — and, for an
 * advisory lock, that its holder's session still holds it; table mode,
 * that the row is unexpired. A later holder's acquisition waits for tx.
 * PGS_ELEASE_LOST (and tx can no longer commit) when the token is stale.
 * pgs_lock_guard_token takes the key, token and opts (mode, table: the
 * name as the lock was taken with, resolved by tx's search_path) of a
 * lock held elsewhere. */
pgs_status_t pgs_lock_guard(const pgs_lock_t *lock, pgs_conn_t *tx, pgs_error_t *err);
pgs_status_t pgs_lock_guard_token(pgs_conn_t *tx, const char *key, size_t len,
                                  const pgs_lock_opts_t *opts, int64_t token, pgs_error_t *err);

/* The key as given (owned by the lock); the hold's fencing token, larger
 * than every earlier hold's of the key (both modes; advisory tokens are
 * kept in <table>_tokens). */
const char *pgs_lock_name(const pgs_lock_t *lock);
int64_t pgs_lock_token(const pgs_lock_t *lock);
pgs_lock_mode_t pgs_lock_mode(const pgs_lock_t *lock);

/* Transaction-scoped advisory locks on the caller's open transaction,
 * released at commit or rollback. timeout < 0 waits as the session's
 * lock_timeout allows; > 0 bounds the wait (PGS_ETIMEOUT — which, like any
 * failed statement, aborts the transaction); 0 is a single attempt. */
pgs_status_t pgs_lock_xact(pgs_conn_t *tx, const char *key, size_t len, double timeout,
                           pgs_error_t *err);
pgs_status_t pgs_lock_xact_try(pgs_conn_t *tx, const char *key, size_t len, int *acquired,
                               pgs_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* PGSTORE_H */
