/* SPDX-License-Identifier: MIT
 * conn.c — one libpq connection: connecting with pgstore's session settings,
 * liveness checks, reset, and running statements through a per-connection
 * prepared-statement cache whose parameter types decide each parameter's
 * wire format (bytea goes binary, so every byte survives).
 */
#include "conn.h"
#include "clock.h"
#include "error.h"
#include "thread.h"
#include "sql.h"
#include "strbuf.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define OID_BYTEA 17

/* ---- settings ------------------------------------------------------------ */

static int has_key(const char **keys, int n, const char *k)
{
    for (int i = 0; i < n; i++)
        if (strcmp(keys[i], k) == 0)
            return i;
    return -1;
}

/* A connection string libpq could not parse may still hold a password
 * somewhere: a `password` keyword, a URI's user info (user:password@) or a
 * query parameter whose name is percent-encoded (p%61ssword=). Judged
 * from the text alone, so any of "pass", '@' or '%' counts. */
static int unparsed_may_hold_secret(const char *conninfo)
{
    for (const char *p = conninfo; *p; p++)
        if (strncasecmp(p, "pass", 4) == 0 || *p == '@' || *p == '%')
            return 1;
    return 0;
}

int pgs_conninfo_has_password(const char *conninfo)
{
    char *perr = NULL;
    conninfo = conninfo ? conninfo : "";
    /* libpq's own parse, key=value and URI alike, percent-decoding both
     * keywords and values: the password is what libpq would send. */
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
    PQfreemem(perr);
    if (!parsed)
        return unparsed_may_hold_secret(conninfo);
    int found = 0;
    for (PQconninfoOption *o = parsed; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
            found = 1;
    PQconninfoFree(parsed);
    return found;
}

/* libpq could not parse the string, so nothing says which part is the
 * password, and its message quotes a piece of the string ("invalid
 * percent-encoded token: \"…\"") from wherever the parse stopped — a
 * quote in the password ends any quoting early. When the string may hold
 * a password, only libpq's words before the first quote are kept: the
 * kind of error, never a piece of the string. */
static void parse_error(pgs_error_t *err, const char *conninfo, const char *perr)
{
    pgs_error_set(err, PGS_EINVALID, "invalid connection string: %s", perr ? perr : "out of memory");
    if (!err)
        return;
    if (unparsed_may_hold_secret(conninfo)) {
        char kind[PGS_ERROR_MESSAGE_MAX];
        snprintf(kind, sizeof kind, "%s", perr ? perr : "out of memory");
        kind[strcspn(kind, "\"\n")] = '\0';
        size_t k = strlen(kind);
        while (k > 0 && (kind[k - 1] == ' ' || kind[k - 1] == ':'))
            kind[--k] = '\0';
        pgs_error_set(err, PGS_EINVALID,
                      "invalid connection string: %s (not shown: it may hold a password)", kind);
        return;
    }
    size_t n = strlen(err->message);
    while (n > 0 && (err->message[n - 1] == '\n' || err->message[n - 1] == ' '))
        err->message[--n] = '\0';
}

/* The longest `options` pgstore sends: the server refuses a startup packet
 * over 10,000 bytes, and the other keywords need room beside it. */
#define OPTIONS_MAX 8000

/* The `options` line: the user's own (from the DSN or PGOPTIONS), then the
 * session settings pgstore relies on (ISO dates in UTC, its statement
 * and lock timeouts), last so that they win. A user's line ending in an unpaired
 * backslash would escape the space before pgstore's and swallow them:
 * refused, as is a line the server would refuse. *out is the caller's. */
static pgs_status_t session_options(const char *user, const pgs_conn_opts_t *opts, char **out,
                                    pgs_error_t *err)
{
    *out = NULL;
    size_t n = user ? strlen(user) : 0, slashes = 0;
    while (slashes < n && user[n - 1 - slashes] == '\\')
        slashes++;
    if (slashes % 2)
        return pgs_error_set(err, PGS_EINVALID,
                             "invalid connection string: options= ends in an unpaired backslash");
    if (n > OPTIONS_MAX)
        return pgs_error_set(err, PGS_EINVALID,
                             "invalid connection string: options= is %zu bytes long, at most %d "
                             "are accepted",
                             n, OPTIONS_MAX);
    /* A transaction pooler refuses `options` in the startup packet (PgBouncer
     * 1.18: "unsupported startup parameter"), or drops it: pgstore's settings
     * go elsewhere then (connect_pg, pgs_tx_begin) and only the user's line
     * is sent, if any. */
    int pooled = opts && opts->pooler == PGS_POOLER_TRANSACTION;
    int statement_timeout_ms = !pooled && opts ? opts->statement_timeout_ms : 0;
    int lock_timeout_ms = !pooled && opts ? opts->lock_timeout_ms : 0;
    pgs_strbuf_t b;
    pgs_strbuf_init(&b);
    if (n)
        pgs_strbuf_add(&b, user, n);
    if (!pooled)
        pgs_strbuf_adds(&b, n ? " -c DateStyle=ISO,MDY -c TimeZone=UTC"
                              : "-c DateStyle=ISO,MDY -c TimeZone=UTC");
    if (statement_timeout_ms > 0) {
        char st[48];
        snprintf(st, sizeof st, " -c statement_timeout=%d", statement_timeout_ms);
        pgs_strbuf_adds(&b, st);
    }
    if (lock_timeout_ms > 0) {
        char lt[48];
        snprintf(lt, sizeof lt, " -c lock_timeout=%d", lock_timeout_ms);
        pgs_strbuf_adds(&b, lt);
    }
    pgs_strbuf_add(&b, "", 1); /* the terminating NUL, or a failed allocation */
    if (b.failed) {
        pgs_strbuf_free(&b);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    *out = b.data;
    return PGS_OK;
}

/* Whether target_session_attrs (the DSN's, else PGTARGETSESSIONATTRS)
 * asks for a server that accepts writes. */
static int wants_primary(const pgs_dsn_t *d, int n)
{
    int i = has_key(d->keys, n, "target_session_attrs");
    const char *v = i >= 0 ? d->vals[i] : getenv("PGTARGETSESSIONATTRS");
    return v && (strcmp(v, "read-write") == 0 || strcmp(v, "primary") == 0);
}

/* Builds keyword/value arrays: every option the user set, then pgstore's
 * defaults for what they left out, then the `options` line above. */
pgs_status_t pgs_dsn_build(const pgs_conn_opts_t *opts, pgs_dsn_t **out, pgs_error_t *err)
{
    char *perr = NULL;
    const char *conninfo = opts && opts->conninfo ? opts->conninfo : "";
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
    if (!parsed) {
        parse_error(err, conninfo, perr);
        PQfreemem(perr);
        return PGS_EINVALID;
    }

    struct { const char *k; const char *v; } defaults[] = {
        {"connect_timeout", NULL},
        {"application_name", opts && opts->application_name ? opts->application_name : "pgstore"},
        {"keepalives", "1"},
        {"keepalives_idle", "30"},
        {"keepalives_interval", "10"},
        {"keepalives_count", "3"},
    };
    const size_t ndefaults = sizeof defaults / sizeof defaults[0];
    /* Room for every keyword set, the defaults, `options`, client_encoding
     * and the NULL end. */
    size_t room = ndefaults + 3;
    for (PQconninfoOption *o = parsed; o->keyword; o++)
        room += o->val != NULL;

    pgs_dsn_t *d = calloc(1, sizeof *d);
    if (d) {
        d->keys = calloc(room, sizeof *d->keys);
        d->vals = calloc(room, sizeof *d->vals);
    }
    if (!d || !d->keys || !d->vals) {
        PQconninfoFree(parsed);
        pgs_dsn_free(d);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    int n = 0;
    char *session = NULL;
    const char *user_options = getenv("PGOPTIONS");
    for (PQconninfoOption *o = parsed; o->keyword; o++)
        if (o->val && strcmp(o->keyword, "options") == 0)
            user_options = o->val;
    /* Made before the parse is freed: user_options may point into it. */
    pgs_status_t st = session_options(user_options, opts, &session, err);
    for (PQconninfoOption *o = parsed; st == PGS_OK && o->keyword; o++) {
        if (!o->val || strcmp(o->keyword, "options") == 0 ||
            strcmp(o->keyword, "client_encoding") == 0)
            continue;
        if (strcmp(o->keyword, "password") == 0)
            d->secret = strdup(o->val);
        d->keys[n] = strdup(o->keyword);
        d->vals[n] = strdup(o->val);
        n++;
    }
    PQconninfoFree(parsed);
    if (st != PGS_OK) {
        pgs_dsn_free(d);
        return st;
    }
    if (!d->secret && getenv("PGPASSWORD"))
        d->secret = strdup(getenv("PGPASSWORD"));

    char buf[64];
    double ct = opts && opts->connect_timeout > 0 ? opts->connect_timeout : 5;
    /* libpq's connect_timeout is whole seconds, at least 2 (and an int). */
    snprintf(buf, sizeof buf, "%.0f", ct < 2 ? 2 : ct > 1e9 ? 1e9 : ceil(ct));
    defaults[0].v = buf;
    for (size_t i = 0; i < ndefaults; i++) {
        if (has_key(d->keys, n, defaults[i].k) >= 0 || (i == 0 && getenv("PGCONNECT_TIMEOUT")) ||
            (i == 1 && getenv("PGAPPNAME")))
            continue;
        d->keys[n] = strdup(defaults[i].k);
        d->vals[n] = strdup(defaults[i].v);
        n++;
    }
    /* Text is UTF-8 on the wire whatever the DSN or PGCLIENTENCODING say:
     * stream names are hashed, and JSON is checked, as UTF-8 bytes (a
     * startup parameter wins over `-c client_encoding` in options). */
    d->keys[n] = strdup("client_encoding");
    d->vals[n] = strdup("UTF8");
    n++;
    if (*session) {
        d->keys[n] = strdup("options");
        d->vals[n] = session;
        n++;
    } else {
        free(session);
    }
    for (int i = 0; i < n; i++)
        if (!d->keys[i] || !d->vals[i]) {
            pgs_dsn_free(d);
            return pgs_error_set(err, PGS_ENOMEM, "out of memory");
        }
    d->stmt_cache_size = opts && opts->stmt_cache_size > 0 ? opts->stmt_cache_size : 256;
    d->query_timeout = opts && opts->query_timeout > 0 ? opts->query_timeout : 0;
    d->statement_timeout_ms = opts && opts->statement_timeout_ms > 0 ? opts->statement_timeout_ms : 0;
    d->lock_timeout_ms = opts && opts->lock_timeout_ms > 0 ? opts->lock_timeout_ms : 0;
    d->pooler = opts && opts->pooler == PGS_POOLER_TRANSACTION ? PGS_POOLER_TRANSACTION
                                                               : PGS_POOLER_NONE;
    d->wants_primary = wants_primary(d, n);
    *out = d;
    return PGS_OK;
}

void pgs_dsn_free(pgs_dsn_t *d)
{
    if (!d)
        return;
    /* Up to the NULL end; a pair half made when memory ran out is freed too. */
    for (int i = 0; d->keys && (d->keys[i] || d->vals[i]); i++) {
        free((char *)d->keys[i]);
        free((char *)d->vals[i]);
    }
    free(d->keys);
    free(d->vals);
    if (d->secret)
        memset(d->secret, 0, strlen(d->secret));
    free(d->secret);
    free(d);
}

/* ---- connecting ---------------------------------------------------------- */

/* A transaction pooler met without pooler = "transaction" shows only
 * through what it does to pgstore's session: PgBouncer refuses the
 * startup packet's `options`, or, told to ignore them, hands one client's
 * prepared statements to another's session (42P05). Such an error gets
 * the option named, in err->hint and after the message. */
static const char POOLER_HINT[] =
    "behind a transaction pooler (PgBouncer's pool_mode = transaction), connect with "
    "pooler = \"transaction\"";

static void hint_pooler(pgs_error_t *err)
{
    if (!err || err->hint[0])
        return;
    snprintf(err->hint, sizeof err->hint, "%s", POOLER_HINT);
    size_t n = strlen(err->message);
    snprintf(err->message + n, sizeof err->message - n, " (%s)", POOLER_HINT);
}

static pgs_status_t connect_pg(const pgs_dsn_t *dsn, PGconn **out, pgs_error_t *err)
{
    PGconn *pg = PQconnectdbParams(dsn->keys, dsn->vals, 0);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        pgs_error_from_conn(err, PGS_ECONNECTION, "could not connect: ", pg);
        pgs_error_scrub(err, dsn->secret);
        if (err && dsn->pooler != PGS_POOLER_TRANSACTION &&
            strstr(err->message, "unsupported startup parameter: options"))
            hint_pooler(err);
        PQfinish(pg);
        return PGS_ECONNECTION;
    }
    /* Behind a transaction pooler, session SETs of the parameters the
     * server reports (DateStyle, TimeZone) are kept by the pooler per client
     * and applied to whichever server session runs the client's next
     * transaction; others would land on a session shared with strangers. */
    if (dsn->pooler == PGS_POOLER_TRANSACTION) {
        PGresult *r = PQexec(pg, "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            pgs_error_from_result(err, pg, r);
            pgs_error_scrub(err, dsn->secret);
            PQclear(r);
            PQfinish(pg);
            return PGS_ECONNECTION;
        }
        PQclear(r);
    }
    *out = pg;
    return PGS_OK;
}

pgs_status_t pgs_conn_open_dsn(const pgs_dsn_t *dsn, pgs_conn_t **out, pgs_error_t *err)
{
    pgs_conn_t *c = calloc(1, sizeof *c);
    if (!c || pgs_stmtcache_init(&c->stmts, dsn->stmt_cache_size) != 0) {
        free(c);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    c->dsn = dsn;
    pgs_status_t st = connect_pg(dsn, &c->pg, err);
    if (st != PGS_OK) {
        pgs_stmtcache_free(&c->stmts);
        free(c);
        return st;
    }
    pthread_mutex_init(&c->run_mu, NULL);
    c->cancel = PQgetCancel(c->pg);
    pgs_notice_watch(c->pg, &c->fatal);
    *out = c;
    return PGS_OK;
}

pgs_status_t pgs_conn_open(const pgs_conn_opts_t *opts, pgs_conn_t **out, pgs_error_t *err)
{
    *out = NULL;
    pgs_dsn_t *dsn;
    pgs_status_t st = pgs_dsn_build(opts, &dsn, err);
    if (st != PGS_OK)
        return st;
    st = pgs_conn_open_dsn(dsn, out, err);
    if (st != PGS_OK) {
        pgs_dsn_free(dsn);
        return st;
    }
    (*out)->owned_dsn = dsn;
    return PGS_OK;
}

void pgs_conn_close(pgs_conn_t *c)
{
    if (!c)
        return;
    PQfinish(c->pg);
    PQfreeCancel(c->cancel);
    pthread_mutex_destroy(&c->run_mu);
    pgs_stmtcache_free(&c->stmts);
    pgs_dsn_free(c->owned_dsn);
    free(c);
}

PGconn *pgs_conn_pg(pgs_conn_t *c)
{
    return c->pg;
}

pgs_tx_state_t pgs_conn_tx_state(pgs_conn_t *c)
{
    switch (c && c->pg ? PQtransactionStatus(c->pg) : PQTRANS_UNKNOWN) {
    case PQTRANS_IDLE: return PGS_TX_IDLE;
    case PQTRANS_ACTIVE: return PGS_TX_ACTIVE;
    case PQTRANS_INTRANS: return PGS_TX_OPEN;
    case PQTRANS_INERROR: return PGS_TX_FAILED;
    default: return PGS_TX_UNKNOWN;
    }
}

int pgs_conn_backend_pid(pgs_conn_t *c)
{
    return c && c->pg ? PQbackendPID(c->pg) : 0;
}

int pgs_conn_alive(pgs_conn_t *c)
{
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK || c->fatal.seen || c->abandoned || c->demoted)
        return 0;
    /* An idle connection has nothing to read. Something readable is either
     * a notification, or the server saying goodbye (FATAL, then EOF):
     * consume it and look again. */
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
        int r = poll(&p, 1, 0);
        if (r == 0)
            return 1;
        if (r < 0 || (p.revents & (POLLERR | POLLNVAL)))
            return 0;
        /* PQconsumeInput only reads; PQisBusy parses, which hands an
         * idle-time FATAL to the notice receiver. */
        if (!PQconsumeInput(c->pg))
            return 0;
        (void)PQisBusy(c->pg);
        if (PQstatus(c->pg) != CONNECTION_OK || c->fatal.seen)
            return 0;
    }
    return 0;
}

pgs_status_t pgs_conn_reset(pgs_conn_t *c, pgs_error_t *err)
{
    PGconn *fresh;
    pgs_status_t st = connect_pg(c->dsn, &fresh, err);
    if (st != PGS_OK)
        return st;
    PGcancel *cancel = PQgetCancel(fresh);
    pthread_mutex_lock(&c->run_mu);
    PQfreeCancel(c->cancel);
    c->cancel = cancel;
    pthread_mutex_unlock(&c->run_mu);
    PQfinish(c->pg);
    c->pg = fresh;
    c->abandoned = 0;
    c->demoted = 0;
    c->clean_pending = 0;
    c->touched = 0;
    pgs_notice_watch(c->pg, &c->fatal);
    pgs_stmtcache_clear(&c->stmts);
    return PGS_OK;
}

/* ---- running statements: timeouts and cancels -------------------------------
 * Every statement is sent with PQsend* and its results collected below,
 * rather than through libpq's blocking PQexec*, so that a connection with a
 * query timeout can stop waiting. A statement that runs past it is given
 * up: cancelled, best effort, from a thread of its own (PQcancel blocks, and
 * the network may be what is stuck), and the connection is abandoned — its
 * results would otherwise reach whoever runs the next statement on it. Its
 * next use fails with PGS_ECONNECTION and the pool replaces it.
 *
 * pgs_conn_cancel() may run in another thread. `running` says whether there
 * is a statement to cancel; it changes under run_mu, which the cancel holds
 * while it talks to the server, so the statement's owner cannot finish one
 * statement and start the next meanwhile: a cancel lands on the statement
 * it was meant for or on an idle backend (which ignores it), never on a
 * later one. */

/* The cancel key of the statement this process waits for last, for
 * pgs_conn_interrupt(): set before a statement is sent, cleared (if still
 * its own) before the connection can free it. */
static PGcancel *_Atomic inflight;

static void set_running(pgs_conn_t *c, int on)
{
    pthread_mutex_lock(&c->run_mu);
    c->running = on;
    pthread_mutex_unlock(&c->run_mu);
    if (on) {
        atomic_store(&inflight, c->cancel);
    } else {
        PGcancel *mine = c->cancel;
        atomic_compare_exchange_strong(&inflight, &mine, NULL);
    }
}

int pgs_conn_interrupt(void)
{
    PGcancel *cancel = atomic_load(&inflight);
    char buf[256];
    return cancel && PQcancel(cancel, buf, sizeof buf);
}

pgs_status_t pgs_conn_cancel(pgs_conn_t *c, pgs_error_t *err)
{
    pgs_status_t st = PGS_OK;
    if (!c)
        return st;
    pthread_mutex_lock(&c->run_mu);
    if (c->running && c->cancel) {
        char buf[256];
        if (!PQcancel(c->cancel, buf, sizeof buf))
            st = pgs_error_set(err, PGS_ECONNECTION, "could not send the cancel request: %s", buf);
    }
    pthread_mutex_unlock(&c->run_mu);
    return st;
}

static void *cancel_thread(void *arg)
{
    char buf[256];
    PQcancel(arg, buf, sizeof buf);
    PQfreeCancel(arg);
    return NULL;
}

static void abandon(pgs_conn_t *c)
{
    c->abandoned = 1;
    PGcancel *cancel = PQgetCancel(c->pg);
    if (cancel && pgs_thread_start_detached(cancel_thread, cancel) != 0)
        PQfreeCancel(cancel);
}

/* Waits until a whole result can be read; 0 when the deadline passed. */
static int wait_input(pgs_conn_t *c, double deadline)
{
    while (PQisBusy(c->pg)) {
        double left = deadline - pgs_clock_now();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
        int r = poll(&p, 1, left < 1e6 ? (int)(left * 1000) + 1 : 1000000000);
        if (r < 0 && errno != EINTR)
            return 1; /* PQgetResult reports it */
        if (r > 0 && !PQconsumeInput(c->pg))
            return 1;
    }
    return 1;
}

/* After a PQsend*: the results as PQexec gives them (the last one), or
 * NULL when nothing could be sent or the query timeout ran out
 * (c->abandoned then). */
static PGresult *collect(pgs_conn_t *c, int sent)
{
    PGresult *last = NULL, *r;
    double timeout = c->dsn->query_timeout;
    double deadline = timeout > 0 ? pgs_clock_now() + timeout : 0;
    while (sent) {
        if (timeout > 0 && !wait_input(c, deadline)) {
            PQclear(last);
            last = NULL;
            abandon(c);
            break;
        }
        if (!(r = PQgetResult(c->pg)))
            break;
        PQclear(last);
        last = r;
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH ||
            PQstatus(c->pg) == CONNECTION_BAD)
            break;
    }
    set_running(c, 0);
    return last;
}

PGresult *pgs_conn_collect(pgs_conn_t *c)
{
    set_running(c, 1);
    return collect(c, 1);
}

static PGresult *run_simple(pgs_conn_t *c, const char *sql)
{
    set_running(c, 1);
    return collect(c, PQsendQuery(c->pg, sql));
}

static PGresult *run_prepare(pgs_conn_t *c, const char *name, const char *sql)
{
    set_running(c, 1);
    return collect(c, PQsendPrepare(c->pg, name, sql, 0, NULL));
}

static PGresult *run_describe(pgs_conn_t *c, const char *name)
{
    set_running(c, 1);
    return collect(c, PQsendDescribePrepared(c->pg, name));
}

static PGresult *run_prepared(pgs_conn_t *c, const char *name, int n, const char *const *values,
                              const int *lengths, const int *formats)
{
    set_running(c, 1);
    return collect(c, PQsendQueryPrepared(c->pg, name, n, values, lengths, formats, 0));
}

static PGresult *run_unnamed(pgs_conn_t *c, const char *sql, int n, const Oid *types,
                             const char *const *values, const int *lengths, const int *formats)
{
    set_running(c, 1);
    return collect(c, PQsendQueryParams(c->pg, sql, n, types, values, lengths, formats, 0));
}

/* ---- statements ------------------------------------------------------------ */

/* Whether the server said (ParameterStatus, reported by PostgreSQL 14 and
 * later whenever they change, a reload included) that it takes no writes:
 * what libpq's target_session_attrs=read-write looks at. */
static int server_read_only(PGconn *pg)
{
    const char *standby = PQparameterStatus(pg, "in_hot_standby");
    const char *ro = PQparameterStatus(pg, "default_transaction_read_only");
    return (standby && strcmp(standby, "on") == 0) || (ro && strcmp(ro, "on") == 0);
}

pgs_status_t pgs_conn_judge_read_only(pgs_conn_t *c, const PGresult *r, pgs_status_t st,
                                      pgs_error_t *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (st != PGS_ESQL || !state || strcmp(state, "25006") != 0 || !c->dsn->wants_primary ||
        !server_read_only(c->pg))
        return st;
    c->demoted = 1;
    if (err) {
        /* The server's words kept, cut to leave room for what they mean. */
        char was[sizeof err->message];
        memcpy(was, err->message, sizeof was);
        err->code = PGS_ECONNECTION;
        snprintf(err->message, sizeof err->message,
                 "the server no longer takes writes (%.900s): reconnecting to the primary", was);
    }
    return PGS_ECONNECTION;
}

static pgs_status_t result_error(pgs_conn_t *c, PGresult *r, pgs_error_t *err)
{
    if (c->abandoned && !r)
        return pgs_error_set(err, PGS_ETIMEOUT,
                             "the statement did not finish within %gs (query_timeout): cancelled, "
                             "and the connection given up",
                             c->dsn->query_timeout);
    pgs_status_t st = pgs_error_from_result(err, c->pg, r);
    pgs_error_scrub(err, c->dsn->secret);
    st = pgs_conn_judge_read_only(c, r, st, err);
    PQclear(r);
    if (PQstatus(c->pg) == CONNECTION_BAD)
        pgs_stmtcache_clear(&c->stmts);
    return st;
}

static int result_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY;
}

static void deallocate(pgs_conn_t *c, pgs_stmt_t *s)
{
    /* Best effort: inside a failed transaction the server refuses, and the
     * unused statement then lives until the connection closes. */
    char quoted[sizeof s->name + 2], *sql;
    snprintf(quoted, sizeof quoted, "\"%s\"", s->name);
    const char *names[] = {"statement"}, *values[] = {quoted};
    if (pgs_sql_fill("DEALLOCATE @statement@", names, values, 1, &sql, NULL) == PGS_OK) {
        PQclear(run_simple(c, sql));
        free(sql);
    }
    pgs_stmt_free(s);
}

static pgs_status_t prepare(pgs_conn_t *c, const char *sql, int nparams, pgs_stmt_t **out,
                            pgs_error_t *err)
{
    pgs_stmt_t *victim = pgs_stmtcache_take_victim(&c->stmts);
    if (victim)
        deallocate(c, victim);
    pgs_stmt_t *s = pgs_stmt_new(&c->stmts, sql);
    if (!s)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    PGresult *r = run_prepare(c, s->name, sql);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        pgs_stmt_free(s);
        pgs_status_t st = result_error(c, r, err);
        if (err && strcmp(err->sqlstate, "42P05") == 0)
            hint_pooler(err); /* our own statement name: another session's */
        return st;
    }
    PQclear(r);
    r = run_describe(c, s->name);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
        pgs_stmt_free(s);
        return result_error(c, r, err);
    }
    s->nparams = PQnparams(r);
    s->types = calloc((size_t)(s->nparams ? s->nparams : 1), sizeof *s->types);
    if (!s->types) {
        PQclear(r);
        pgs_stmt_free(s);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    for (int i = 0; i < s->nparams; i++)
        s->types[i] = PQparamtype(r, i);
    PQclear(r);
    pgs_stmtcache_add(&c->stmts, s);
    *out = s;
    return PGS_OK;
}

/* Behind a transaction pooler no statement outlives its Sync: the one
 * server session that parsed it may serve another client next. The
 * parameter types are learnt instead with an unnamed Parse and Describe
 * under ONE Sync (a pipeline), so one server session answers both, and kept
 * in the cache as if prepared; the statement itself then goes as
 * Parse/Bind/Execute/Sync every time (PQsendQueryParams). */
static pgs_status_t describe_unnamed(pgs_conn_t *c, const char *sql, pgs_stmt_t **out,
                                     pgs_error_t *err)
{
    pgs_stmt_free(pgs_stmtcache_take_victim(&c->stmts)); /* nothing on the server */
    pgs_stmt_t *s = pgs_stmt_new(&c->stmts, sql);
    if (!s)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    if (!PQenterPipelineMode(c->pg)) {
        pgs_stmt_free(s);
        return pgs_error_from_conn(err, PGS_ECONNECTION, "cannot enter pipeline mode: ", c->pg);
    }
    int sent = PQsendPrepare(c->pg, "", sql, 0, NULL) && PQsendDescribePrepared(c->pg, "") &&
               PQpipelineSync(c->pg);
    /* One result per step, each followed by a NULL: the parse, the
     * description (PIPELINE_ABORTED when the parse failed), the sync. */
    set_running(c, 1);
    PGresult *parsed = collect(c, sent);
    set_running(c, 1);
    PGresult *described = collect(c, sent && !c->abandoned);
    set_running(c, 1);
    PQclear(collect(c, sent && !c->abandoned));
    if (!c->abandoned)
        PQexitPipelineMode(c->pg);
    pgs_status_t st = PGS_OK;
    if (!parsed || PQresultStatus(parsed) != PGRES_COMMAND_OK) {
        PQclear(described);
        st = result_error(c, parsed, err);
    } else if (!described || PQresultStatus(described) != PGRES_COMMAND_OK) {
        PQclear(parsed);
        st = result_error(c, described, err);
    } else {
        PQclear(parsed);
        s->nparams = PQnparams(described);
        s->types = calloc((size_t)(s->nparams ? s->nparams : 1), sizeof *s->types);
        for (int i = 0; s->types && i < s->nparams; i++)
            s->types[i] = PQparamtype(described, i);
        PQclear(described);
        if (!s->types)
            st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    if (st != PGS_OK) {
        pgs_stmt_free(s);
        return st;
    }
    pgs_stmtcache_add(&c->stmts, s);
    *out = s;
    return PGS_OK;
}

/* A cached statement the server no longer knows (DISCARD ALL) or whose
 * plan no longer fits (a table was dropped and re-created). */
static int stale_statement(const PGresult *r)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!st)
        return 0;
    if (strcmp(st, "26000") == 0)
        return 1;
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    return strcmp(st, "0A000") == 0 && msg && strstr(msg, "cached plan") != NULL;
}

#define STACK_PARAMS 32

static pgs_status_t exec_prepared(pgs_conn_t *c, const char *sql, int nparams,
                                  const pgs_param_t *params, PGresult **res, pgs_error_t *err)
{
    for (int attempt = 0;; attempt++) {
        pgs_stmt_t *s = pgs_stmtcache_find(&c->stmts, sql);
        if (!s) {
            pgs_status_t st = c->dsn->pooler == PGS_POOLER_TRANSACTION
                                  ? describe_unnamed(c, sql, &s, err)
                                  : prepare(c, sql, nparams, &s, err);
            if (st != PGS_OK)
                return st;
        }
        if (s->nparams != nparams)
            return pgs_error_set(err, PGS_EINVALID,
                                 "the statement takes %d parameter%s, %d given", s->nparams,
                                 s->nparams == 1 ? "" : "s", nparams);

        const char *vstack[STACK_PARAMS];
        int lstack[STACK_PARAMS], fstack[STACK_PARAMS];
        const char **values = vstack;
        int *lengths = lstack, *formats = fstack;
        if (nparams > STACK_PARAMS) {
            values = malloc((size_t)nparams * sizeof *values);
            lengths = malloc((size_t)nparams * sizeof *lengths);
            formats = malloc((size_t)nparams * sizeof *formats);
        }
        pgs_status_t st = PGS_OK;
        if (!values || !lengths || !formats)
            st = pgs_error_set(err, PGS_ENOMEM, "out of memory");
        for (int i = 0; st == PGS_OK && i < nparams; i++) {
            const char *v = params[i].value;
            int len = v ? (params[i].length >= 0 ? params[i].length : (int)strlen(v)) : 0;
            values[i] = v;
            lengths[i] = len;
            formats[i] = s->types[i] == OID_BYTEA ? 1 : 0;
            if (v && !formats[i] && memchr(v, '\0', (size_t)len))
                st = pgs_error_set(err, PGS_EINVALID,
                                   "parameter $%d contains a NUL byte (only bytea values may)",
                                   i + 1);
        }
        PGresult *r = NULL;
        if (st == PGS_OK && c->dsn->pooler == PGS_POOLER_TRANSACTION)
            r = run_unnamed(c, sql, nparams, s->types, values, lengths, formats);
        else if (st == PGS_OK)
            r = run_prepared(c, s->name, nparams, values, lengths, formats);
        if (values != vstack) {
            free(values);
            free(lengths);
            free(formats);
        }
        if (st != PGS_OK)
            return st;
        if (r && result_ok(r)) {
            if (res)
                *res = r;
            else
                PQclear(r);
            return PGS_OK;
        }
        if (r && stale_statement(r)) {
            pgs_stmtcache_remove(&c->stmts, s);
            pgs_stmt_free(s);
            /* Outside a transaction block nothing was done: run it again. */
            if (attempt == 0 && PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
                PQclear(r);
                continue;
            }
        }
        return result_error(c, r, err);
    }
}

pgs_status_t pgs_exec(pgs_conn_t *c, const char *sql, int nparams, const pgs_param_t *params,
                      PGresult **res, pgs_error_t *err)
{
    if (res)
        *res = NULL;
    if (!c || !c->pg)
        return pgs_error_set(err, PGS_ECLOSED, "attempt to use a closed connection");
    if (!sql)
        return pgs_error_set(err, PGS_EINVALID, "no SQL given");
    if (c->abandoned)
        return pgs_error_set(err, PGS_ECONNECTION,
                             "the connection was given up after a statement ran out of query_timeout");
    if (nparams < 0 || (nparams > 0 && !params))
        return pgs_error_set(err, PGS_EINVALID, "%d parameters announced, none given", nparams);
    if (nparams > 0 || params)
        return exec_prepared(c, sql, nparams, params, res, err);
    PGresult *r = run_simple(c, sql);
    if (r && result_ok(r)) {
        if (res)
            *res = r;
        else
            PQclear(r);
        return PGS_OK;
    }
    return result_error(c, r, err);
}

pgs_status_t pgs_exec_command(pgs_conn_t *c, const char *sql, pgs_error_t *err)
{
    /* The caller's own SQL: it may change the session (the stores' own
     * commands go through pgs_exec). */
    if (c)
        c->touched = 1;
    return pgs_exec(c, sql, 0, NULL, NULL, err);
}

int64_t pgs_result_affected(const PGresult *res)
{
    const char *t = res ? PQcmdTuples((PGresult *)res) : "";
    return *t ? strtoll(t, NULL, 10) : 0;
}
