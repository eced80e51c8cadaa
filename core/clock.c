/* SPDX-License-Identifier: MIT
 * clock.c — the one monotonic clock and deadline arithmetic behind every
 * timeout in libpgstore (see clock.h).
 */
#include "clock.h"

#define FOREVER 1e9 /* some 30 years: "forever", in range of time_t and long long ns */

double pgs_clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double pgs_clock_deadline(double timeout)
{
    return timeout < 0 ? -1 : pgs_clock_now() + timeout;
}

double pgs_clock_left(double deadline)
{
    if (deadline < 0)
        return -1;
    double left = deadline - pgs_clock_now();
    return left > 0 ? left : 0;
}

void pgs_clock_after(clockid_t clock, double seconds, struct timespec *ts)
{
    clock_gettime(clock, ts);
    if (!(seconds <= FOREVER))
        seconds = FOREVER;
    if (seconds < 0)
        seconds = 0;
    long long ns = ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

void pgs_clock_sleep(double seconds)
{
    if (!(seconds > 0))
        return;
    if (seconds > FOREVER)
        seconds = FOREVER;
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
}
