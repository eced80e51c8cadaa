/* SPDX-License-Identifier: MIT
 * listener.c — LISTEN on a connection of its own, pulled by the caller:
 * pgs_listener_wait() hands out one notification at a time. The connection
 * is driven without blocking (non-blocking connect, PQsendQuery, poll() on
 * the socket), so every call keeps to its deadline; a silent connection is
 * probed (heartbeat), a dropped one is re-opened with backoff and
 * re-LISTENed, and the consumer then gets a "*" marker telling it to catch
 * up. NOTIFY is a hint: the marker, not a replay, is the recovery.
 */
#include "clock.h"
#include "conn.h"
#include "error.h"
#include "notify.h"
#include "sql.h"
#include "strbuf.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the listener ------------------------------------------------------------- */

typedef enum { L_DOWN, L_CONNECTING, L_READY } lstate_t;

/* What the connection is busy with while READY. */
typedef enum {
    B_NONE,
    B_SYNC,    /* UNLISTEN *; LISTEN …  after (re)connecting      */
    B_COMMAND, /* a caller's LISTEN, UNLISTEN or pg_notify          */
    B_PROBE    /* the heartbeat: an empty query                     */
} lbusy_t;

/* What drive() waits for. */
typedef enum { W_NOTIFICATION, W_IDLE, W_COMMAND } lwant_t;

struct pgs_listener {
    pgs_dsn_t *dsn;
    PGconn *pg;               /* NULL while down */
    lstate_t state;
    PostgresPollingStatusType polling;
    lbusy_t busy;
    double busy_since;
    double last_traffic;      /* when anything last arrived */
    double connect_deadline;
    double next_attempt;      /* while down: when to try again */
    int attempts;             /* failed connects in a row */
    pgs_fatal_t fatal;        /* the server sent FATAL, saying why */
    int ready_once;           /* later syncs bring a reconnect marker */
    int pid;                  /* backend of the current connection */

    /* the caller's command in flight (B_COMMAND) */
    int cmd_done;
    pgs_error_t cmd_err;      /* code PGS_OK when it succeeded */
    pgs_error_t last_err;     /* why the last connect or connection failed */

    char **channels;
    int nchannels, capchannels;

    pgs_notification_t *head, *tail;
    int queued;

    double connect_timeout, heartbeat, heartbeat_timeout, reconnect_min, reconnect_max;
    int max_queue, ignore_self;
    long reconnects, dropped;

    /* pgs_listener_wait_wake: the caller's wake descriptor (-1: none) and
     * whether it became readable during this wait. */
    int wake_fd;
    int woken;
};

/* deadline < 0 means "none". */
static double earliest(double a, double b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

static int ms_until(double until, double now)
{
    if (until < 0)
        return -1;
    double ms = (until - now) * 1000.0;
    if (ms <= 0)
        return 0;
    return ms > 2e9 ? 2000000000 : (int)ms + 1; /* round up: never spin early */
}

static int find_channel(const pgs_listener_t *l, const char *name)
{
    for (int i = 0; i < l->nchannels; i++)
        if (strcmp(l->channels[i], name) == 0)
            return i;
    return -1;
}

/* ---- the queue ------------------------------------------------------------------ */

static pgs_notification_t *new_notification(const char *channel, const char *payload,
                                            size_t len, int pid)
{
    size_t clen = strlen(channel);
    pgs_notification_t *n = malloc(sizeof *n + clen + 1 + len + 1);
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    char *c = (char *)(n + 1), *p = c + clen + 1;
    memcpy(c, channel, clen + 1);
    if (len)
        memcpy(p, payload, len);
    p[len] = '\0';
    n->channel = c;
    n->payload = p;
    n->payload_len = len;
    n->pid = pid;
    return n;
}

void pgs_notification_free(pgs_notification_t *n)
{
    free(n);
}

static void push(pgs_listener_t *l, pgs_notification_t *n)
{
    n->next = NULL;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
    l->queued++;
}

static void clear_queue(pgs_listener_t *l)
{
    while (l->head) {
        pgs_notification_t *n = l->head;
        l->head = n->next;
        free(n);
    }
    l->tail = NULL;
    l->queued = 0;
}

static int is_marker(const pgs_notification_t *n)
{
    return n->pid == 0 && strcmp(n->channel, "*") == 0;
}

/* A marker asks the consumer to catch up from stored state. Markers
 * coalesce: two in a row say nothing more than one, and their counts of
 * dropped notifications add up. */
static void push_marker(pgs_listener_t *l, int reconnected, long lost)
{
    if (l->tail && is_marker(l->tail)) {
        l->tail->reconnected |= reconnected;
        l->tail->overflow |= lost > 0;
        l->tail->lost += lost;
        return;
    }
    pgs_notification_t *n = new_notification("*", "", 0, 0);
    if (!n)
        return; /* out of memory: the next notification still wakes them */
    n->reconnected = reconnected;
    n->overflow = lost > 0;
    n->lost = lost;
    push(l, n);
}

static void enqueue(pgs_listener_t *l, const char *channel, const char *payload, int pid)
{
    if (l->queued >= l->max_queue) {
        /* Nobody is pulling: drop what is queued rather than grow without
         * bound, and say so with one marker that also says what the
         * markers among it said (they were never seen). Only
         * notifications count as dropped. */
        long lost = 0;
        int reconnected = 0;
        for (pgs_notification_t *n = l->head; n; n = n->next) {
            if (is_marker(n)) {
                lost += n->lost;
                reconnected |= n->reconnected;
            } else {
                lost++;
                l->dropped++;
            }
        }
        clear_queue(l);
        push_marker(l, reconnected, lost);
    }
    pgs_notification_t *n = new_notification(channel, payload, strlen(payload), pid);
    if (!n) {
        l->dropped++;
        push_marker(l, 0, 1);
        return;
    }
    push(l, n);
}

/* Moves what libpq has parsed into the queue, keeping only channels still
 * listened to (an UNLISTEN takes a round trip; stragglers are dropped). */
static void harvest(pgs_listener_t *l)
{
    PGnotify *n;
    int self = PQbackendPID(l->pg);
    while ((n = PQnotifies(l->pg)) != NULL) {
        if (!(l->ignore_self && n->be_pid == self) && find_channel(l, n->relname) >= 0)
            enqueue(l, n->relname, n->extra ? n->extra : "", n->be_pid);
        PQfreemem(n);
    }
}

/* ---- the connection ----------------------------------------------------------- */

/* TCP keepalives tuned to the heartbeat, so the kernel also notices a peer
 * that vanished while nothing was sent. Unix sockets have no such thing. */
static void set_keepalive(pgs_listener_t *l)
{
    int fd = PQsocket(l->pg);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return;
    /* Kernel limits: TCP_KEEPIDLE and TCP_KEEPINTVL are at most 32767 s. */
    double hb = l->heartbeat < 32767 ? l->heartbeat : 32767;
    double hbt = l->heartbeat_timeout / 3 < 32767 ? l->heartbeat_timeout / 3 : 32767;
    int on = 1, idle = (int)hb, intvl = (int)hbt, cnt = 3;
    if (idle < 1)
        idle = 1;
    if (intvl < 1)
        intvl = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef TCP_KEEPIDLE
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
#ifdef TCP_USER_TIMEOUT
    /* Data sent but unacknowledged this long: the connection is dead. */
    double ms = (l->heartbeat + l->heartbeat_timeout) * 1000;
    unsigned int ut = ms < 4e9 ? (unsigned int)ms : 4000000000u;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
#endif
}

static void fail_command(pgs_listener_t *l, const char *why)
{
    if (l->busy == B_COMMAND && !l->cmd_done) {
        pgs_error_set(&l->cmd_err, PGS_ECONNECTION, "%s", why);
        l->cmd_done = 1;
    }
}

/* Closes the connection after keeping what it delivered. */
static void drop(pgs_listener_t *l)
{
    if (l->pg) {
        if (l->state == L_READY)
            harvest(l);
        PQfinish(l->pg);
    }
    fail_command(l, l->last_err.message);
    l->pg = NULL;
    l->state = L_DOWN;
    l->busy = B_NONE;
    l->pid = 0;
}

/* The connection is gone (or is given up on): reconnect at once — a first
 * attempt costs little, later ones back off. why: a prefix for libpq's
 * message, or NULL when last_err already says it. */
static void lost(pgs_listener_t *l, const char *why)
{
    if (why && l->fatal.message[0])
        pgs_error_set(&l->last_err, PGS_ECONNECTION, "%s%s", why, l->fatal.message);
    else if (why)
        pgs_error_from_conn(&l->last_err, PGS_ECONNECTION, why, l->pg);
    pgs_error_scrub(&l->last_err, l->dsn->secret);
    drop(l);
    l->attempts = 0;
    l->next_attempt = pgs_clock_now();
}

static double backoff(const pgs_listener_t *l)
{
    double d = l->reconnect_min;
    for (int i = 1; i < l->attempts && d < l->reconnect_max; i++)
        d *= 2;
    if (d > l->reconnect_max)
        d = l->reconnect_max;
    /* ±25 % so that many listeners do not return in lockstep. */
    return d * (0.75 + 0.5 * (double)rand() / RAND_MAX);
}

/* A connect attempt failed: res (a refused LISTEN), or why as a prefix for
 * libpq's message, or neither when last_err already says it. */
static void connect_failed(pgs_listener_t *l, const char *why, const PGresult *res)
{
    if (res)
        pgs_error_from_result(&l->last_err, l->pg, res);
    else if (why)
        pgs_error_from_conn(&l->last_err, PGS_ECONNECTION, why, l->pg);
    pgs_error_scrub(&l->last_err, l->dsn->secret);
    drop(l);
    l->attempts++;
    l->next_attempt = pgs_clock_now() + backoff(l);
}

/* tmpl with @channel@ filled by the quoted channel (checked by
 * pgs_channel_check: no quote in it); malloc'd, NULL when out of memory. */
static char *channel_sql(const char *tmpl, const char *channel)
{
    char quoted[PGS_CHANNEL_MAX + 3], *sql = NULL;
    snprintf(quoted, sizeof quoted, "\"%s\"", channel);
    const char *names[] = {"channel"}, *values[] = {quoted};
    return pgs_sql_fill(tmpl, names, values, 1, &sql, NULL) == PGS_OK ? sql : NULL;
}

/* UNLISTEN * then LISTEN every channel, in one implicit transaction: the
 * switch is atomic and repeats safely. */
static int send_sync(pgs_listener_t *l)
{
    pgs_strbuf_t b;
    pgs_strbuf_init(&b);
    pgs_strbuf_adds(&b, "UNLISTEN *");
    for (int i = 0; i < l->nchannels; i++) {
        char *one = channel_sql("; LISTEN @channel@", l->channels[i]);
        if (one)
            pgs_strbuf_adds(&b, one);
        b.failed |= !one;
        free(one);
    }
    int ok = !b.failed && PQsendQuery(l->pg, b.data);
    pgs_strbuf_free(&b);
    if (ok) {
        l->busy = B_SYNC;
        l->busy_since = pgs_clock_now();
    }
    return ok;
}

static void start_connect(pgs_listener_t *l)
{
    l->pg = PQconnectStartParams(l->dsn->keys, l->dsn->vals, 0);
    if (!l->pg || PQstatus(l->pg) == CONNECTION_BAD) {
        connect_failed(l, "could not connect: ", NULL);
        return;
    }
    pgs_notice_watch(l->pg, &l->fatal);
    l->state = L_CONNECTING;
    l->polling = PGRES_POLLING_WRITING;
    l->connect_deadline = pgs_clock_now() + l->connect_timeout;
}

static void advance_connect(pgs_listener_t *l)
{
    l->polling = PQconnectPoll(l->pg);
    if (l->polling == PGRES_POLLING_FAILED) {
        connect_failed(l, "could not connect: ", NULL);
        return;
    }
    if (l->polling != PGRES_POLLING_OK)
        return;
    set_keepalive(l);
    l->state = L_READY;
    l->pid = PQbackendPID(l->pg);
    l->last_traffic = pgs_clock_now();
    if (!send_sync(l))
        connect_failed(l, "could not send LISTEN: ", NULL);
}

static void finish_busy(pgs_listener_t *l)
{
    switch (l->busy) {
    case B_SYNC:
        if (l->ready_once) {
            l->reconnects++;
            push_marker(l, 1, 0);
        }
        l->ready_once = 1;
        l->attempts = 0;
        break;
    case B_COMMAND:
        l->cmd_done = 1;
        break;
    default:
        break;
    }
    l->busy = B_NONE;
}

/* Reads results of whatever is in flight, as far as they have arrived. */
static void collect(pgs_listener_t *l)
{
    while (l->pg && l->busy != B_NONE && !PQisBusy(l->pg)) {
        PGresult *r = PQgetResult(l->pg);
        if (!r) {
            finish_busy(l);
            break;
        }
        ExecStatusType s = PQresultStatus(r);
        int failed = s == PGRES_FATAL_ERROR || s == PGRES_BAD_RESPONSE;
        if (failed && l->busy == B_SYNC) {
            /* LISTEN refused (a hot standby says "cannot execute LISTEN
             * during recovery"): this server cannot serve us; retry later. */
            connect_failed(l, NULL, r);
            PQclear(r);
            return;
        }
        if (failed && l->busy == B_COMMAND && l->cmd_err.code == PGS_OK) {
            pgs_error_from_result(&l->cmd_err, l->pg, r);
            pgs_error_scrub(&l->cmd_err, l->dsn->secret);
        }
        PQclear(r);
    }
    if (l->pg && l->state == L_READY)
        harvest(l);
    if (l->pg && (PQstatus(l->pg) == CONNECTION_BAD || l->fatal.seen))
        lost(l, "connection lost: ");
}

/* The caller asked for its thread back (pgs_listener_wait_wake): one
 * read(2) takes an eventfd's whole count, or what a pipe holds up to the
 * buffer; a leftover byte only costs a spurious wake-up later. */
static void take_wake(pgs_listener_t *l)
{
    char buf[64];
    ssize_t n = read(l->wake_fd, buf, sizeof buf);
    (void)n;
    l->woken = 1;
}

/* Sleeps ms milliseconds (reconnect backoff), or less if woken. */
static void wait_wake(pgs_listener_t *l, int ms)
{
    struct pollfd p = {.fd = l->wake_fd, .events = POLLIN, .revents = 0};
    if (poll(&p, l->wake_fd >= 0 ? 1 : 0, ms) > 0 && p.revents)
        take_wake(l);
}

/* The loop behind every call: moves the connection along (connect, sync,
 * heartbeat, results, reconnect) until `want` holds or the deadline
 * (monotonic seconds, < 0 for none) passes. */
static pgs_status_t drive(pgs_listener_t *l, double deadline, lwant_t want, pgs_error_t *err)
{
    for (;;) {
        if (want == W_NOTIFICATION && (l->head || l->woken))
            return PGS_OK;
        if (want == W_IDLE && l->state == L_READY && l->busy == B_NONE)
            return PGS_OK;
        if (want == W_COMMAND && l->cmd_done)
            return PGS_OK;

        double now = pgs_clock_now();
        if (l->state == L_DOWN) {
            if (now >= l->next_attempt) {
                start_connect(l);
                continue;
            }
            if (want == W_IDLE) {
                /* Backing off: fail now rather than stall the caller. */
                pgs_error_t e = l->last_err;
                if (err) {
                    *err = e;
                    err->code = PGS_ECONNECTION;
                }
                return PGS_ECONNECTION;
            }
            double until = earliest(deadline, l->next_attempt);
            int ms = ms_until(until, now);
            if (ms > 0)
                wait_wake(l, ms);
            if (l->woken)
                continue;
            if (deadline >= 0 && pgs_clock_now() >= deadline && l->next_attempt > deadline)
                return pgs_error_set(err, PGS_ETIMEOUT, "nothing arrived in time");
            continue;
        }

        short events = POLLIN;
        double until = deadline;
        if (l->state == L_CONNECTING) {
            events = l->polling == PGRES_POLLING_READING ? POLLIN : POLLOUT;
            until = earliest(until, l->connect_deadline);
        } else if (l->busy != B_NONE) {
            until = earliest(until, l->busy_since + l->heartbeat_timeout);
        } else {
            until = earliest(until, l->last_traffic + l->heartbeat);
        }
        struct pollfd p[2] = {{.fd = PQsocket(l->pg), .events = events, .revents = 0},
                              {.fd = l->wake_fd, .events = POLLIN, .revents = 0}};
        int r = poll(p, l->wake_fd >= 0 ? 2 : 1, ms_until(until, now));
        if (r < 0 && errno == EINTR)
            continue;
        now = pgs_clock_now();
        if (r < 0) {
            lost(l, "poll failed: ");
            continue;
        }
        if (l->wake_fd >= 0 && p[1].revents)
            take_wake(l);
        if (p[0].revents) {
            if (l->state == L_CONNECTING) {
                advance_connect(l);
            } else if (!PQconsumeInput(l->pg)) {
                lost(l, "connection lost: ");
            } else {
                l->last_traffic = now;
                collect(l);
            }
            continue;
        }
        if (l->woken)
            continue;
        if (l->state == L_CONNECTING && now >= l->connect_deadline) {
            pgs_error_set(&l->last_err, PGS_ECONNECTION, "could not connect: timed out after %gs",
                          l->connect_timeout);
            connect_failed(l, NULL, NULL);
            continue;
        }
        if (l->state == L_READY && l->busy != B_NONE && now >= l->busy_since + l->heartbeat_timeout) {
            pgs_error_set(&l->last_err, PGS_ECONNECTION,
                          "connection lost: the server did not answer within %gs",
                          l->heartbeat_timeout);
            lost(l, NULL);
            continue;
        }
        if (l->state == L_READY && l->busy == B_NONE && now >= l->last_traffic + l->heartbeat) {
            /* An empty query is the cheapest round trip there is. */
            if (PQsendQuery(l->pg, "")) {
                l->busy = B_PROBE;
                l->busy_since = now;
            } else {
                lost(l, "connection lost: ");
            }
            continue;
        }
        if (deadline >= 0 && now >= deadline)
            return pgs_error_set(err, PGS_ETIMEOUT, "nothing arrived in time");
    }
}

/* Sends sql (with optional parameters) as the caller's command and waits
 * for its outcome until the deadline. PGS_ECONNECTION when the listener is
 * down or the connection broke; PGS_ETIMEOUT when no answer came in time. */
static pgs_status_t command(pgs_listener_t *l, const char *sql, int nparams, const char *const *values,
                            const int *lengths, double deadline, pgs_error_t *err)
{
    pgs_status_t st = drive(l, deadline, W_IDLE, err);
    if (st != PGS_OK)
        return st;
    int ok = nparams ? PQsendQueryParams(l->pg, sql, nparams, NULL, values, lengths, NULL, 0)
                     : PQsendQuery(l->pg, sql);
    if (!ok) {
        lost(l, "connection lost: ");
        return pgs_error_set(err, PGS_ECONNECTION, "%s", l->last_err.message);
    }
    l->busy = B_COMMAND;
    l->busy_since = pgs_clock_now();
    l->cmd_done = 0;
    pgs_error_clear(&l->cmd_err);
    st = drive(l, deadline, W_COMMAND, err);
    if (st == PGS_ETIMEOUT)
        return pgs_error_set(err, PGS_ETIMEOUT, "the server did not confirm in time");
    if (st != PGS_OK)
        return st;
    if (l->cmd_err.code != PGS_OK) {
        if (err)
            *err = l->cmd_err;
        return l->cmd_err.code;
    }
    return PGS_OK;
}

/* ---- public ----------------------------------------------------------------------- */

static int add_channel(pgs_listener_t *l, const char *name)
{
    if (l->nchannels == l->capchannels) {
        int cap = l->capchannels ? 2 * l->capchannels : 8;
        char **c = realloc(l->channels, (size_t)cap * sizeof *c);
        if (!c)
            return 0;
        l->channels = c;
        l->capchannels = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return 0;
    l->channels[l->nchannels++] = copy;
    return 1;
}

static void drop_channel(pgs_listener_t *l, int i)
{
    free(l->channels[i]);
    l->channels[i] = l->channels[--l->nchannels];
}

pgs_status_t pgs_listener_open(const pgs_listener_opts_t *opts, const char *const *channels,
                               int nchannels, pgs_listener_t **out, pgs_error_t *err)
{
    *out = NULL;
    for (int i = 0; i < nchannels; i++) {
        pgs_status_t st = pgs_channel_check(channels[i], err);
        if (st != PGS_OK)
            return st;
    }
    pgs_listener_t *l = calloc(1, sizeof *l);
    if (!l)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_status_t st = pgs_dsn_build(opts ? &opts->conn : NULL, &l->dsn, err);
    if (st != PGS_OK) {
        free(l);
        return st;
    }
#define OPT(field, dflt) (opts && opts->field > 0 ? opts->field : (dflt))
    l->connect_timeout = OPT(conn.connect_timeout, 5);
    l->heartbeat = OPT(heartbeat, 10);
    l->heartbeat_timeout = OPT(heartbeat_timeout, 5);
    l->reconnect_min = OPT(reconnect_min, 0.1);
    l->reconnect_max = OPT(reconnect_max, 10);
    l->max_queue = OPT(max_queue, 10000);
#undef OPT
    if (l->reconnect_max < l->reconnect_min)
        l->reconnect_max = l->reconnect_min;
    l->ignore_self = opts && opts->ignore_self;
    l->wake_fd = -1;
    for (int i = 0; i < nchannels; i++)
        if (find_channel(l, channels[i]) < 0 && !add_channel(l, channels[i])) {
            pgs_listener_close(l);
            return pgs_error_set(err, PGS_ENOMEM, "out of memory");
        }

    /* The first connection is made here, so a wrong DSN or a server that
     * refuses LISTEN is reported at once; later losses are recovered. */
    start_connect(l);
    double deadline = pgs_clock_now() + l->connect_timeout + l->heartbeat_timeout;
    st = l->state == L_DOWN ? PGS_ECONNECTION : drive(l, deadline, W_IDLE, err);
    if (st != PGS_OK || !l->ready_once) {
        pgs_error_t e = l->last_err;
        if (e.code == PGS_OK)
            pgs_error_set(&e, PGS_ECONNECTION, "could not connect: timed out");
        if (err)
            *err = e;
        pgs_listener_close(l);
        return e.code;
    }
    *out = l;
    return PGS_OK;
}

void pgs_listener_close(pgs_listener_t *l)
{
    if (!l)
        return;
    PQfinish(l->pg);
    clear_queue(l);
    for (int i = 0; i < l->nchannels; i++)
        free(l->channels[i]);
    free(l->channels);
    pgs_dsn_free(l->dsn);
    free(l);
}

pgs_status_t pgs_listener_add(pgs_listener_t *l, const char *channel, pgs_error_t *err)
{
    pgs_status_t st = pgs_channel_check(channel, err);
    if (st != PGS_OK)
        return st;
    if (find_channel(l, channel) >= 0)
        return PGS_OK;
    if (!add_channel(l, channel))
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    /* Down or connecting: the sync after connecting includes it. */
    if (l->state != L_READY)
        return PGS_OK;
    char *sql = channel_sql("LISTEN @channel@", channel);
    if (!sql)
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    pgs_error_t e;
    st = command(l, sql, 0, NULL, NULL, pgs_clock_now() + l->connect_timeout, &e);
    free(sql);
    if (st == PGS_ESQL) {
        drop_channel(l, find_channel(l, channel));
        if (err)
            *err = e;
        return st;
    }
    /* A broken connection will be re-opened and re-LISTENed, channel and all. */
    return PGS_OK;
}

pgs_status_t pgs_listener_remove(pgs_listener_t *l, const char *channel, pgs_error_t *err)
{
    pgs_status_t st = pgs_channel_check(channel, err);
    if (st != PGS_OK)
        return st;
    int i = find_channel(l, channel);
    if (i < 0)
        return PGS_OK;
    drop_channel(l, i);
    /* Queued notifications for it go too: the caller asked for silence. */
    pgs_notification_t **pp = &l->head;
    l->tail = NULL;
    while (*pp) {
        pgs_notification_t *n = *pp;
        if (n->pid != 0 && strcmp(n->channel, channel) == 0) {
            *pp = n->next;
            free(n);
            l->queued--;
        } else {
            l->tail = n;
            pp = &n->next;
        }
    }
    if (l->state != L_READY)
        return PGS_OK;
    char *sql = channel_sql("UNLISTEN @channel@", channel);
    pgs_error_t e;
    if (sql)
        (void)command(l, sql, 0, NULL, NULL, pgs_clock_now() + l->connect_timeout, &e);
    free(sql);
    return PGS_OK;
}

/* Takes the oldest queued notification (the queue is not empty). */
static pgs_notification_t *take_first(pgs_listener_t *l)
{
    pgs_notification_t *n = l->head;
    l->head = n->next;
    if (!l->head)
        l->tail = NULL;
    l->queued--;
    n->next = NULL;
    return n;
}

pgs_status_t pgs_listener_wait(pgs_listener_t *l, double timeout, pgs_notification_t **out,
                               pgs_error_t *err)
{
    *out = NULL;
    double deadline = pgs_clock_deadline(timeout);
    pgs_status_t st = drive(l, deadline, W_NOTIFICATION, err);
    if (st != PGS_OK)
        return st;
    *out = take_first(l);
    return PGS_OK;
}

pgs_status_t pgs_listener_wait_wake(pgs_listener_t *l, double timeout, int wake_fd,
                                    pgs_notification_t **out, pgs_error_t *err)
{
    *out = NULL;
    l->wake_fd = wake_fd;
    l->woken = 0;
    pgs_status_t st = drive(l, pgs_clock_deadline(timeout), W_NOTIFICATION, err);
    l->wake_fd = -1;
    l->woken = 0;
    if (st != PGS_OK || !l->head)
        return st; /* PGS_OK with *out NULL: woken */
    *out = take_first(l);
    return PGS_OK;
}

pgs_status_t pgs_listener_notify(pgs_listener_t *l, const char *channel, const char *payload,
                                 size_t len, double timeout, pgs_error_t *err)
{
    pgs_notify_msg_t m;
    pgs_status_t st = pgs_notify_prepare(&m, channel, payload, len, err);
    if (st != PGS_OK)
        return st;
    if (timeout <= 0)
        timeout = l->connect_timeout;
    const char *values[2] = {m.channel, m.payload};
    int lengths[2] = {(int)strlen(m.channel), (int)m.len};
    st = command(l, PGS_NOTIFY_SQL, 2, values, lengths, pgs_clock_deadline(timeout), err);
    if (st == PGS_ETIMEOUT)
        pgs_error_set(err, PGS_ETIMEOUT,
                      "NOTIFY not confirmed within %gs (it may still be delivered)", timeout);
    return st;
}

int pgs_listener_fd(const pgs_listener_t *l)
{
    return l->pg ? PQsocket(l->pg) : -1;
}

double pgs_listener_due(const pgs_listener_t *l)
{
    double now = pgs_clock_now(), until;
    switch (l->state) {
    case L_DOWN:
        until = l->next_attempt;
        break;
    case L_CONNECTING:
        /* libpq may be waiting for the socket to become writable, which a
         * readability watcher does not see: come back soon. */
        until = l->polling == PGRES_POLLING_WRITING ? now : earliest(l->connect_deadline, now + 0.05);
        break;
    default:
        until = l->busy != B_NONE ? l->busy_since + l->heartbeat_timeout
                                  : l->last_traffic + l->heartbeat;
    }
    if (l->head)
        until = now;
    return until > now ? until - now : 0;
}

void pgs_listener_stats(const pgs_listener_t *l, pgs_listener_stats_t *out)
{
    out->connected = l->state == L_READY && l->busy != B_SYNC;
    out->pid = l->pid;
    out->reconnects = l->reconnects;
    out->dropped = l->dropped;
    out->queued = l->queued;
    out->channels = l->nchannels;
    out->last_error = l->last_err;
}

const char *pgs_listener_channel(const pgs_listener_t *l, int i)
{
    return i >= 0 && i < l->nchannels ? l->channels[i] : NULL;
}
