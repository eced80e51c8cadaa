/* SPDX-License-Identifier: MIT
 * test_listener.c — the listener against a real server: delivery, timeout,
 * channel and payload checks before the server, add/remove, the fd,
 * recovery with a reconnect marker after pg_terminate_backend, and a wait
 * that a wake descriptor ends early.
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

static pgs_listener_t *open_listener(const char *const *channels, int n)
{
    pgs_listener_opts_t o = {.conn = {.conninfo = pgs_test_dsn()},
                             .heartbeat = 1, .heartbeat_timeout = 1, .reconnect_min = 0.05};
    pgs_listener_t *l = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_listener_open(&o, channels, n, &l, &err), err);
    return l;
}

static void test_channel_check(void)
{
    pgs_error_t err;
    CHECK(pgs_channel_check("orders", &err) == PGS_OK);
    CHECK(pgs_channel_check("pgstore.events:v1-a_b", &err) == PGS_OK);
    char long_ok[64], too_long[65];
    memset(long_ok, 'a', 63);
    long_ok[63] = '\0';
    memset(too_long, 'a', 64);
    too_long[64] = '\0';
    CHECK(pgs_channel_check(long_ok, &err) == PGS_OK);
    const char *bad[] = {"", "a\"b", "a;b", "a b", "caf\xc3\xa9", "*", "x'y", too_long, NULL};
    for (int i = 0; bad[i]; i++) {
        CHECK(pgs_channel_check(bad[i], &err) == PGS_EINVALID);
        CHECK(strstr(err.message, "invalid channel name") != NULL);
    }
    CHECK(pgs_channel_check(NULL, &err) == PGS_EINVALID);
}

static void test_payload_limit(void)
{
    pgs_conn_t *c = pgs_test_conn_open();
    char *big = malloc(8001);
    memset(big, 'x', 8001);
    pgs_error_t err;
    CHECK(pgs_notify(c, "pgs_c_limit", big, 8001, &err) == PGS_EINVALID);
    CHECK(err.sqlstate[0] == '\0'); /* refused here, not by the server */
    CHECK(pgs_notify(c, "pgs_c_limit", big, 8000, &err) == PGS_EINVALID);
    CHECK_OK(pgs_notify(c, "pgs_c_limit", big, PGS_NOTIFY_PAYLOAD_MAX, &err), err);
    CHECK(pgs_notify(c, "pgs_c_limit", "a\0b", 3, &err) == PGS_EINVALID);
    CHECK(pgs_notify(c, "bad;name", "x", 1, &err) == PGS_EINVALID);
    free(big);
    pgs_conn_close(c);
}

static void test_deliver_and_timeout(void)
{
    const char *ch[] = {"pgs_c_a", "pgs_c_b"};
    pgs_listener_t *l = open_listener(ch, 2);
    pgs_conn_t *c = pgs_test_conn_open();
    pgs_error_t err;
    pgs_notification_t *n = NULL;

    double t0 = pgs_test_now();
    CHECK(pgs_listener_wait(l, 0.2, &n, &err) == PGS_ETIMEOUT);
    double waited = pgs_test_now() - t0;
    CHECK(waited >= 0.19 && waited < 1.0);
    CHECK(n == NULL);

    char big[PGS_NOTIFY_PAYLOAD_MAX + 8];
    memset(big, 'p', sizeof big); /* no terminator: pgs_notify must not need one */
    CHECK_OK(pgs_notify(c, "pgs_c_b", big, PGS_NOTIFY_PAYLOAD_MAX, &err), err);
    CHECK_OK(pgs_notify(c, "pgs_c_a", "hello", 5, &err), err);
    CHECK_OK(pgs_notify(c, "pgs_c_other", "not for us", 10, &err), err);
    CHECK_OK(pgs_listener_wait(l, 5, &n, &err), err);
    if (n) {
        CHECK_STR(n->channel, "pgs_c_b");
        CHECK(n->payload_len == PGS_NOTIFY_PAYLOAD_MAX &&
              memcmp(n->payload, big, PGS_NOTIFY_PAYLOAD_MAX) == 0);
        CHECK(n->pid == pgs_conn_backend_pid(c));
        pgs_notification_free(n);
    }
    CHECK_OK(pgs_listener_wait(l, 5, &n, &err), err);
    if (n) {
        CHECK_STR(n->channel, "pgs_c_a");
        CHECK_STR(n->payload, "hello");
        pgs_notification_free(n);
    }
    CHECK(pgs_listener_wait(l, 0.1, &n, &err) == PGS_ETIMEOUT);

    /* A transaction's NOTIFY arrives at commit, never after rollback. */
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_notify(c, "pgs_c_a", "rolled back", 11, &err), err);
    CHECK_OK(pgs_tx_rollback(c, &err), err);
    CHECK_OK(pgs_tx_begin(c, PGS_READ_COMMITTED, &err), err);
    CHECK_OK(pgs_notify(c, "pgs_c_a", "committed", 9, &err), err);
    CHECK(pgs_listener_wait(l, 0.1, &n, &err) == PGS_ETIMEOUT);
    CHECK_OK(pgs_tx_commit(c, &err), err);
    CHECK_OK(pgs_listener_wait(l, 5, &n, &err), err);
    if (n) {
        CHECK_STR(n->payload, "committed");
        pgs_notification_free(n);
    }
    pgs_conn_close(c);
    pgs_listener_close(l);
}

static void test_add_remove_and_fd(void)
{
    pgs_listener_t *l = open_listener(NULL, 0);
    pgs_conn_t *c = pgs_test_conn_open();
    pgs_error_t err;
    pgs_notification_t *n = NULL;
    CHECK(pgs_listener_add(l, "bad\"name", &err) == PGS_EINVALID);
    CHECK_OK(pgs_listener_add(l, "pgs_c_x", &err), err);
    CHECK_OK(pgs_listener_add(l, "pgs_c_x", &err), err); /* twice is fine */
    pgs_listener_stats_t s;
    pgs_listener_stats(l, &s);
    CHECK(s.channels == 1 && s.connected && s.pid > 0);

    int fd = pgs_listener_fd(l);
    CHECK(fd >= 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK(poll(&p, 1, 50) == 0); /* nothing pending: not readable */
    CHECK_OK(pgs_notify(c, "pgs_c_x", "1", 1, &err), err);
    CHECK(poll(&p, 1, 5000) == 1); /* now it is */
    CHECK(pgs_listener_due(l) > 0);
    CHECK_OK(pgs_listener_wait(l, 0, &n, &err), err);
    pgs_notification_free(n);

    CHECK_OK(pgs_notify(c, "pgs_c_x", "queued then removed", 19, &err), err);
    CHECK_OK(pgs_listener_remove(l, "pgs_c_x", &err), err);
    CHECK_OK(pgs_notify(c, "pgs_c_x", "after remove", 12, &err), err);
    CHECK(pgs_listener_wait(l, 0.2, &n, &err) == PGS_ETIMEOUT);
    CHECK_OK(pgs_listener_remove(l, "pgs_c_x", &err), err); /* absent is fine */
    pgs_conn_close(c);
    pgs_listener_close(l);
}

static void test_reconnect_marker(void)
{
    const char *ch[] = {"pgs_c_r"};
    pgs_listener_t *l = open_listener(ch, 1);
    pgs_conn_t *c = pgs_test_conn_open();
    pgs_error_t err;
    pgs_notification_t *n = NULL;
    pgs_listener_stats_t s;
    pgs_listener_stats(l, &s);
    int old_pid = s.pid;

    char pid[16];
    snprintf(pid, sizeof pid, "%d", old_pid);
    pgs_param_t p = {pid, -1};
    CHECK_OK(pgs_query(c, "SELECT pg_terminate_backend($1::int)", 1, &p, NULL, &err), err);

    CHECK_OK(pgs_listener_wait(l, 10, &n, &err), err);
    if (n) {
        CHECK_STR(n->channel, "*");
        CHECK(n->reconnected == 1 && n->pid == 0);
        pgs_notification_free(n);
    }
    pgs_listener_stats(l, &s);
    CHECK(s.reconnects == 1 && s.connected && s.pid != old_pid);
    CHECK(s.last_error.code == PGS_ECONNECTION);
    CHECK(strstr(s.last_error.message, "terminating connection") != NULL);
    CHECK_OK(pgs_notify(c, "pgs_c_r", "still here", 10, &err), err);
    CHECK_OK(pgs_listener_wait(l, 5, &n, &err), err);
    if (n) {
        CHECK_STR(n->payload, "still here");
        pgs_notification_free(n);
    }
    pgs_conn_close(c);
    pgs_listener_close(l);
}

/* A backend that stops answering (SIGSTOP: the socket stays open, nothing
 * comes back) is found by the heartbeat and replaced. Needs permission to
 * signal the server's processes (root or the cluster's user). */
static void test_heartbeat_finds_silent_server(void)
{
    const char *ch[] = {"pgs_c_hb"};
    pgs_listener_t *l = open_listener(ch, 1); /* heartbeat 1 s, timeout 1 s */
    pgs_listener_stats_t s;
    pgs_listener_stats(l, &s);
    int pid = s.pid;
    if (kill(pid, SIGSTOP) != 0) {
        printf("# skipped: cannot signal the backend (%s)\n", strerror(errno));
        pgs_listener_close(l);
        return;
    }
    pgs_error_t err;
    pgs_notification_t *n = NULL;
    double t0 = pgs_test_now();
    pgs_status_t st = pgs_listener_wait(l, 8, &n, &err);
    double took = pgs_test_now() - t0;
    kill(pid, SIGCONT); /* it finds its client gone and exits */
    CHECK_OK(st, err);
    if (n) {
        CHECK(n->reconnected == 1);
        pgs_notification_free(n);
    }
    CHECK(took >= 1.5 && took < 5); /* silence 1 s + probe timeout 1 s */
    pgs_listener_stats(l, &s);
    CHECK(s.pid != pid && s.connected);
    pgs_listener_close(l);
}

static void test_notify_on_listener(void)
{
    pgs_listener_opts_t o = {.conn = {.conninfo = pgs_test_dsn()}, .ignore_self = 1};
    const char *ch[] = {"pgs_c_self"};
    pgs_listener_t *a = NULL, *b = NULL;
    pgs_error_t err;
    CHECK_OK(pgs_listener_open(&o, ch, 1, &a, &err), err);
    CHECK_OK(pgs_listener_open(&o, ch, 1, &b, &err), err);
    CHECK_OK(pgs_listener_notify(a, "pgs_c_self", "from a!!", 6, 2, &err), err);
    pgs_notification_t *n = NULL;
    CHECK(pgs_listener_wait(a, 0.2, &n, &err) == PGS_ETIMEOUT); /* no echo */
    CHECK_OK(pgs_listener_wait(b, 5, &n, &err), err);
    if (n) {
        CHECK_STR(n->payload, "from a");
        pgs_notification_free(n);
    }
    char big[8000];
    memset(big, 'z', sizeof big);
    CHECK(pgs_listener_notify(a, "pgs_c_self", big, sizeof big, 2, &err) == PGS_EINVALID);
    pgs_listener_close(a);
    pgs_listener_close(b);
}

static void test_open_failure(void)
{
    pgs_listener_opts_t o = {.conn = {.conninfo = "host=127.0.0.1 port=1 connect_timeout=2"}};
    pgs_listener_t *l = NULL;
    pgs_error_t err;
    CHECK(pgs_listener_open(&o, NULL, 0, &l, &err) == PGS_ECONNECTION);
    CHECK(l == NULL);
    const char *bad[] = {"ok", "no;pe"};
    o.conn.conninfo = pgs_test_dsn();
    CHECK(pgs_listener_open(&o, bad, 2, &l, &err) == PGS_EINVALID);
    /* A hot standby refuses LISTEN: reported as the server's error. */
    const char *replica = getenv("PGSTORE_TEST_REPLICA_DSN");
    if (replica && *replica) {
        o.conn.conninfo = replica;
        CHECK(pgs_listener_open(&o, bad, 1, &l, &err) == PGS_ESQL);
        CHECK(strstr(err.message, "LISTEN") != NULL);
        CHECK(l == NULL);
    }
}

/* A long wait ends at once when the wake descriptor is written, drains
 * it, and still delivers what comes next; also across a reconnect. */
static void test_wait_wake(void)
{
    const char *ch[] = {"pgs_c_w"};
    pgs_listener_t *l = open_listener(ch, 1);
    pgs_conn_t *c = pgs_test_conn_open();
    pgs_error_t err;
    pgs_notification_t *n = (pgs_notification_t *)1;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    CHECK(efd >= 0);
    uint64_t one = 1;

    CHECK(write(efd, &one, sizeof one) == (ssize_t)sizeof one);
    double t0 = pgs_test_now();
    CHECK_OK(pgs_listener_wait_wake(l, 10, efd, &n, &err), err);
    CHECK(n == NULL);
    CHECK(pgs_test_now() - t0 < 0.5);
    /* Drained: the next wait sleeps until its timeout. */
    t0 = pgs_test_now();
    CHECK(pgs_listener_wait_wake(l, 0.2, efd, &n, &err) == PGS_ETIMEOUT);
    CHECK(pgs_test_now() - t0 >= 0.19);

    CHECK_OK(pgs_notify(c, "pgs_c_w", "woke", 4, &err), err);
    CHECK_OK(pgs_listener_wait_wake(l, 5, efd, &n, &err), err);
    CHECK(n != NULL);
    if (n) {
        CHECK_STR(n->payload, "woke");
        pgs_notification_free(n);
    }
    /* A plain wait afterwards is not taken for woken. */
    CHECK(write(efd, &one, sizeof one) == (ssize_t)sizeof one);
    CHECK_OK(pgs_listener_wait_wake(l, 5, efd, &n, &err), err);
    CHECK(n == NULL);
    CHECK(pgs_listener_wait(l, 0.1, &n, &err) == PGS_ETIMEOUT);

    /* The backend is killed: the wait reconnects and reports it. */
    pgs_listener_stats_t s;
    pgs_listener_stats(l, &s);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", s.pid);
    pgs_param_t p = {pid, -1};
    CHECK_OK(pgs_query(c, "SELECT pg_terminate_backend($1::int)", 1, &p, NULL, &err), err);
    CHECK_OK(pgs_listener_wait_wake(l, 10, efd, &n, &err), err);
    CHECK(n != NULL && n->reconnected == 1);
    pgs_notification_free(n);
    CHECK_OK(pgs_notify(c, "pgs_c_w", "again", 5, &err), err);
    CHECK_OK(pgs_listener_wait_wake(l, 5, efd, &n, &err), err);
    CHECK(n != NULL);
    if (n) {
        CHECK_STR(n->payload, "again");
        pgs_notification_free(n);
    }
    close(efd);
    pgs_conn_close(c);
    pgs_listener_close(l);
}

int main(void)
{
    static const pgs_test_t tests[] = {
        {"channel names are checked", test_channel_check},
        {"payload limit is enforced before the server", test_payload_limit},
        {"delivers notifications and times out", test_deliver_and_timeout},
        {"add, remove and the fd", test_add_remove_and_fd},
        {"reconnects after pg_terminate_backend with a marker", test_reconnect_marker},
        {"the heartbeat finds a server that went silent", test_heartbeat_finds_silent_server},
        {"notifies on its own connection without echo", test_notify_on_listener},
        {"reports a failed first connection", test_open_failure},
        {"a wake descriptor ends a wait early", test_wait_wake},
        {NULL, NULL}};
    return pgs_test_run(tests);
}
