/* SPDX-License-Identifier: MIT
 * clock.h — time for timeouts and deadlines (internal). Deadlines are
 * seconds on the monotonic clock as doubles, so a wall-clock step never
 * stretches or cuts a wait; pgs_clock_after() turns a delay into the
 * absolute timespec that pthread timed waits take.
 */
#ifndef PGS_CLOCK_H
#define PGS_CLOCK_H
#include <time.h>

/* Seconds on the monotonic clock (an arbitrary origin). */
double pgs_clock_now(void);

/* The deadline `timeout` seconds from now; -1 ("none") when timeout < 0. */
double pgs_clock_deadline(double timeout);

/* Seconds left until deadline, at least 0; -1 when deadline is "none". */
double pgs_clock_left(double deadline);

/* Fills *ts with clock's now plus `seconds` (a negative delay counts as 0;
 * more than 1e9 s, or NaN, as 1e9 s: "forever" within the arithmetic).
 * CLOCK_MONOTONIC for condition variables made by pgs_thread_cond_init,
 * CLOCK_REALTIME for pthread_timedjoin_np. */
void pgs_clock_after(clockid_t clock, double seconds, struct timespec *ts);

/* Sleeps `seconds` (nothing for 0, negative or NaN; at most 1e9 s). */
void pgs_clock_sleep(double seconds);
#endif
