/* SPDX-License-Identifier: MIT
 * pgs_proxy.c — a loopback TCP proxy between pgstore and PostgreSQL for the
 * fault-injection specs. It reads the client's side of the protocol (v3
 * message framing: https://www.postgresql.org/docs/current/protocol-message-formats.html)
 * and, at random, drops the connection right around a statement that
 * commits: a simple-protocol Query, or the Sync after a Bind of a statement
 * whose SQL (from Parse) contains one of the -m patterns. Half of those cuts
 * come "after" (the message reaches the server, the answer never reaches the
 * client: committed, outcome unknown), the others "before" (the Sync never
 * arrives: rolled back, outcome unknown). Signals steer it:
 *   SIGUSR1  cut every connection now
 *   SIGUSR2  stall on/off: no byte moves either way, no new connection is
 *            accepted (they wait in the backlog) until it is turned off
 *   SIGHUP   down on/off: cut everything and refuse new connections
 * Every action is one line on stdout ("cut 3 after _append(", "stall on").
 *
 *   pgs_proxy -t TARGET_PORT -o PORT_FILE [-m PATTERN]... [-r PROBABILITY]
 *             [-s SEED] [-l LIFETIME_SECONDS]
 *
 * It listens on 127.0.0.1 on a free port, written to PORT_FILE, forwards to
 * 127.0.0.1:TARGET_PORT, and exits after LIFETIME seconds (default 600).
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS 256
#define MAX_PATTERNS 4
#define BUF_MAX (1 << 20)
#define MAX_STMTS 64

typedef struct {
    char *data;
    size_t len;
} buf_t;

typedef struct {
    int id, client, server;
    buf_t up;          /* client → server, whole messages are released */
    buf_t down;        /* server → client */
    size_t up_ready;   /* bytes of `up` that may be sent */
    int startup;       /* still in the startup phase (no type bytes) */
    int opaque;        /* TLS or garbage: forward without looking */
    int armed;         /* a Bind of a watched statement awaits its Sync */
    char watched[MAX_STMTS][64];
    int nwatched;
    int draining;      /* cut "after": client gone, server gets EOF */
    double drain_until;
} pair_t;

static pair_t pairs[MAX_PAIRS];
static int npairs, next_id;
static const char *patterns[MAX_PATTERNS];
static int npatterns;
static double probability = 0.3;
static volatile sig_atomic_t want_cut_all, want_stall_toggle, want_down_toggle;
static int stalled, down;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        want_cut_all = 1;
    else if (sig == SIGUSR2)
        want_stall_toggle = 1;
    else if (sig == SIGHUP)
        want_down_toggle = 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int append(buf_t *b, const char *p, size_t n)
{
    char *d = realloc(b->data, b->len + n);
    if (!d)
        return -1;
    memcpy(d + b->len, p, n);
    b->data = d;
    b->len += n;
    return 0;
}

static void consume(buf_t *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static void close_pair(int i)
{
    pair_t *p = &pairs[i];
    if (p->client >= 0)
        close(p->client);
    if (p->server >= 0)
        close(p->server);
    free(p->up.data);
    free(p->down.data);
    pairs[i] = pairs[--npairs];
}

static int matches(const char *sql, size_t n)
{
    for (int k = 0; k < npatterns; k++) {
        size_t m = strlen(patterns[k]);
        for (size_t i = 0; m <= n && i + m <= n; i++)
            if (strncasecmp(sql + i, patterns[k], m) == 0)
                return 1;
    }
    return 0;
}

/* Sends what is ready toward the server; then, for a cut "after", stops
 * writing (the server reads the message, then EOF) and forgets the client. */
static void cut(pair_t *p, const char *when, size_t upto)
{
    say("cut %d %s", p->id, when);
    if (strcmp(when, "after") == 0 && p->server >= 0) {
        size_t off = 0;
        while (off < upto) {
            ssize_t w = write(p->server, p->up.data + off, upto - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        shutdown(p->server, SHUT_WR);
        p->draining = 1;
        p->drain_until = mono() + 5;
    } else if (p->server >= 0) {
        close(p->server);
        p->server = -1;
    }
    close(p->client);
    p->client = -1;
    p->up.len = p->up_ready = 0;
}

/* Walks the complete client messages not yet released; returns 1 when the
 * pair was cut. */
static int inspect(pair_t *p)
{
    for (;;) {
        size_t off = p->up_ready, avail = p->up.len - off;
        if (p->opaque) {
            p->up_ready = p->up.len;
            return 0;
        }
        const unsigned char *m = (const unsigned char *)p->up.data + off;
        size_t head = p->startup ? 4 : 5;
        if (avail < head)
            return 0;
        const unsigned char *lp = p->startup ? m : m + 1;
        uint32_t len = (uint32_t)lp[0] << 24 | (uint32_t)lp[1] << 16 | (uint32_t)lp[2] << 8 | lp[3];
        if (len < 4 || len > (1u << 30)) {
            p->opaque = 1;
            continue;
        }
        size_t total = (p->startup ? 0 : 1) + (size_t)len;
        if (avail < total)
            return 0;
        if (p->startup) {
            uint32_t code = avail >= 8 ? ((uint32_t)m[4] << 24 | (uint32_t)m[5] << 16 |
                                          (uint32_t)m[6] << 8 | m[7])
                                       : 0;
            /* SSLRequest / GSSENCRequest come before the real startup packet. */
            if (code != 80877103 && code != 80877104)
                p->startup = 0;
            p->up_ready += total;
            continue;
        }
        const char *body = (const char *)m + 5;
        size_t blen = total - 5;
        int trigger = 0;
        switch (m[0]) {
        case 'Q':
            trigger = matches(body, blen);
            break;
        case 'P': { /* Parse: name \0 query \0 … */
            size_t nl = strnlen(body, blen);
            if (nl < blen && matches(body + nl + 1, strnlen(body + nl + 1, blen - nl - 1)) &&
                p->nwatched < MAX_STMTS) {
                snprintf(p->watched[p->nwatched++], 64, "%.*s", (int)nl, body);
            }
            break;
        }
        case 'B': { /* Bind: portal \0 statement \0 … */
            size_t pl = strnlen(body, blen);
            const char *stmt = pl < blen ? body + pl + 1 : "";
            for (int k = 0; k < p->nwatched; k++)
                if (strncmp(p->watched[k], stmt, 64) == 0)
                    p->armed = 1;
            break;
        }
        case 'S':
            trigger = p->armed;
            p->armed = 0;
            break;
        default:
            break;
        }
        if (trigger && drand48() < probability) {
            if (drand48() < 0.5) {
                cut(p, "after", off + total);
            } else {
                /* Everything before the triggering message still goes. */
                size_t sent = 0;
                while (sent < off) {
                    ssize_t w = write(p->server, p->up.data + sent, off - sent);
                    if (w <= 0)
                        break;
                    sent += (size_t)w;
                }
                cut(p, "before", 0);
            }
            return 1;
        }
        p->up_ready += total;
    }
}

static int connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void cut_all(const char *why)
{
    say("%s %d", why, npairs);
    while (npairs > 0)
        close_pair(npairs - 1);
}

/* Moves bytes one way; returns -1 when the source closed or failed. */
static int pump_read(int fd, buf_t *b)
{
    char tmp[65536];
    if (b->len >= BUF_MAX)
        return 0;
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n == 0)
        return -1;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    return append(b, tmp, (size_t)n);
}

static int pump_write(int fd, buf_t *b, size_t *ready)
{
    size_t n = ready ? *ready : b->len;
    if (n == 0)
        return 0;
    ssize_t w = write(fd, b->data, n);
    if (w < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    consume(b, (size_t)w);
    if (ready)
        *ready -= (size_t)w;
    return 0;
}

int main(int argc, char **argv)
{
    int target = 0, opt;
    const char *port_file = NULL;
    long seed = (long)time(NULL) ^ getpid();
    double lifetime = 600;
    while ((opt = getopt(argc, argv, "t:o:m:r:s:l:")) != -1) {
        switch (opt) {
        case 't': target = atoi(optarg); break;
        case 'o': port_file = optarg; break;
        case 'm': if (npatterns < MAX_PATTERNS) patterns[npatterns++] = optarg; break;
        case 'r': probability = atof(optarg); break;
        case 's': seed = atol(optarg); break;
        case 'l': lifetime = atof(optarg); break;
        default:
            fprintf(stderr, "usage: %s -t TARGET_PORT -o PORT_FILE [-m PATTERN]... [-r P] [-s SEED] [-l SECONDS]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!target || !port_file) {
        fprintf(stderr, "%s: -t and -o are required\n", argv[0]);
        return 2;
    }
    srand48(seed);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) != 0) {
        perror("pgs_proxy: listen");
        return 1;
    }
    fcntl(lfd, F_SETFL, O_NONBLOCK);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *pf = fopen(tmp, "w");
    if (!pf) {
        perror("pgs_proxy: port file");
        return 1;
    }
    fprintf(pf, "%d\n", ntohs(a.sin_port));
    fclose(pf);
    rename(tmp, port_file); /* readers never see a half-written file */
    say("listening %d -> %d seed %ld", ntohs(a.sin_port), target, seed);

    double end = mono() + lifetime;
    while (mono() < end) {
        if (want_cut_all) {
            want_cut_all = 0;
            cut_all("cut-all");
        }
        if (want_stall_toggle) {
            want_stall_toggle = 0;
            stalled = !stalled;
            say("stall %s", stalled ? "on" : "off");
        }
        if (want_down_toggle) {
            want_down_toggle = 0;
            down = !down;
            say("down %s", down ? "on" : "off");
            if (down)
                cut_all("cut-all");
        }

        struct pollfd fds[1 + 2 * MAX_PAIRS];
        int nf = 0;
        fds[nf++] = (struct pollfd){.fd = stalled ? -1 : lfd, .events = POLLIN};
        for (int i = 0; i < npairs; i++) {
            pair_t *p = &pairs[i];
            short ce = 0, se = 0;
            if (!stalled) {
                if (p->client >= 0) {
                    ce = POLLIN;
                    if (p->down.len)
                        ce |= POLLOUT;
                }
                if (p->server >= 0) {
                    se = POLLIN;
                    if (p->up_ready)
                        se |= POLLOUT;
                }
            }
            fds[nf++] = (struct pollfd){.fd = p->client, .events = ce};
            fds[nf++] = (struct pollfd){.fd = p->server, .events = se};
        }
        int r = poll(fds, (nfds_t)nf, 50);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            goto expire;

        if (fds[0].revents & POLLIN) {
            int c;
            while ((c = accept(lfd, NULL, NULL)) >= 0) {
                int s = down || npairs >= MAX_PAIRS ? -1 : connect_target(target);
                if (s < 0) {
                    close(c);
                    continue;
                }
                fcntl(c, F_SETFL, O_NONBLOCK);
                pair_t *p = &pairs[npairs++];
                memset(p, 0, sizeof *p);
                p->id = ++next_id;
                p->client = c;
                p->server = s;
                p->startup = 1;
            }
        }
        /* Walk the pairs present when poll ran; a closed pair is replaced
         * by the last one, so go backwards. */
        for (int i = (nf - 1) / 2 - 1; i >= 0; i--) {
            if (i >= npairs)
                continue;
            pair_t *p = &pairs[i];
            struct pollfd *cf = &fds[1 + 2 * i], *sf = &fds[2 + 2 * i];
            int dead = 0;
            if (p->server >= 0 && (sf->revents & (POLLIN | POLLHUP | POLLERR))) {
                if (p->draining) {
                    char sink[4096];
                    ssize_t n = read(p->server, sink, sizeof sink);
                    dead = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
                } else {
                    dead = pump_read(p->server, &p->down) < 0;
                }
            }
            if (!dead && p->client >= 0 && (cf->revents & (POLLIN | POLLHUP | POLLERR))) {
                dead = pump_read(p->client, &p->up) < 0;
                if (!dead && inspect(p) && !p->draining)
                    dead = 1;
            }
            if (!dead && p->client >= 0 && (cf->revents & POLLOUT))
                dead = pump_write(p->client, &p->down, NULL) < 0;
            if (!dead && p->server >= 0 && !p->draining && (sf->revents & POLLOUT))
                dead = pump_write(p->server, &p->up, &p->up_ready) < 0;
            if (dead)
                close_pair(i);
        }
    expire:
        for (int i = npairs - 1; i >= 0; i--)
            if (pairs[i].draining && mono() > pairs[i].drain_until)
                close_pair(i);
    }
    cut_all("exit");
    return 0;
}
