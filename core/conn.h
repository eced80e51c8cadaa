/* SPDX-License-Identifier: MIT
 * conn.h — the connection struct and connection settings shared by a pool's
 * connections (internal to libpgstore).
 */
#ifndef PGS_CONN_H
#define PGS_CONN_H
#include "pq.h"
#include "notice.h"
#include "stmtcache.h"

#include <pthread.h>

/* libpq keyword/value arrays built once from the user's conninfo plus
 * pgstore's defaults, reused for every (re)connect. */
typedef struct pgs_dsn {
    const char **keys;
    const char **vals;
    char *secret;        /* the password, kept only to scrub messages */
    int stmt_cache_size;
    double query_timeout; /* seconds; 0: wait as long as the server takes */
    int statement_timeout_ms; /* pgstore's own, restored on release; 0: none */
    int lock_timeout_ms;      /* the same for lock_timeout */
    pgs_pooler_t pooler;      /* transaction pooling: no session state */
    int wants_primary;        /* target_session_attrs asks for a read-write
                               * server (read-write, primary) */
} pgs_dsn_t;

pgs_status_t pgs_dsn_build(const pgs_conn_opts_t *opts, pgs_dsn_t **out, pgs_error_t *err);
void pgs_dsn_free(pgs_dsn_t *dsn);

struct pgs_conn {
    PGconn *pg;
    const pgs_dsn_t *dsn;
    pgs_dsn_t *owned_dsn;     /* set when opened standalone */
    pgs_stmtcache_t stmts;
    struct pgs_pool *pool;    /* NULL when standalone */
    struct pgs_conn *next;    /* pool's idle list */
    pgs_fatal_t fatal;        /* the server sent FATAL: reconnect before use */
    int abandoned;            /* a statement ran out of query_timeout: unusable */
    int demoted;              /* its server is no longer read-write (fenced or
                               * a standby) while the DSN asks for one:
                               * replaced before reuse */
    int clean_pending;        /* the clean was sent, its answer not yet read */
    int touched;              /* ran SQL pgstore did not write (pgs_query, a
                               * session lock …): cleaned on release */
    pthread_mutex_t run_mu;   /* running and cancel, for pgs_conn_cancel */
    int running;              /* a statement is in flight */
    PGcancel *cancel;         /* for this connection's backend */
};

/* The settings a pool's connections are opened with; valid while the
 * pool's memory lives (hold a reference). For helpers that need a
 * connection of their own beside the pool (the kv cleaner). */
const pgs_dsn_t *pgs_pool_dsn(pgs_pool_t *pool);

/* Clearing what a borrower may have left on a pooled connection
 * (clean.c): _start sends it on release (0: the connection cannot be
 * reused); _finish, before the next use, reads its answer (0: it failed,
 * the connection must not be used as it is). */
int pgs_conn_clean_start(pgs_conn_t *c);
int pgs_conn_clean_finish(pgs_conn_t *c);

/* The last result of a statement sent with PQsend*, bounded by the query
 * timeout (NULL then, or when the connection failed). The caller's. */
PGresult *pgs_conn_collect(pgs_conn_t *c);

/* After a statement failed with status st (the server's result r, maybe
 * NULL): a write refused as read-only (SQLSTATE 25006) by a server that
 * now says it is read-only by default or a hot standby, on a DSN that asks
 * for a read-write server, means the server this connection reached is no
 * longer the primary. The connection is marked to be replaced (the pool
 * then connects through the DSN's hosts again) and the error becomes
 * PGS_ECONNECTION, which callers retry (nothing was written). Returns the
 * status to report. */
pgs_status_t pgs_conn_judge_read_only(pgs_conn_t *c, const PGresult *r, pgs_status_t st,
                                      pgs_error_t *err);

/* Opens a connection with shared settings (the pool's). */
pgs_status_t pgs_conn_open_dsn(const pgs_dsn_t *dsn, pgs_conn_t **out, pgs_error_t *err);
#endif
