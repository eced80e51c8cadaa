/* SPDX-License-Identifier: MIT
 * test_clock.c — the one clock of the core: monotonic seconds, deadlines
 * ("none" stays none), what is left of one, and the absolute timespecs
 * handed to pthread timed waits (carried nanoseconds, clamped delays).
 */
#include "harness.h"
#include "clock.h"

#include <math.h>

static void test_now_is_monotonic(void)
{
    double a = pgs_clock_now();
    pgs_clock_sleep(0.02);
    double b = pgs_clock_now();
    CHECK(b - a >= 0.019 && b - a < 1);
    CHECK(pgs_clock_now() >= b);
}

static void test_deadlines(void)
{
    CHECK(pgs_clock_deadline(-1) == -1);
    CHECK(pgs_clock_deadline(-0.5) == -1);
    CHECK(pgs_clock_left(-1) == -1);
    double now = pgs_clock_now();
    double d = pgs_clock_deadline(2.5);
    CHECK(d - now >= 2.5 && d - now < 2.6);
    double left = pgs_clock_left(d);
    CHECK(left > 2.4 && left <= 2.5);
    CHECK(pgs_clock_left(pgs_clock_deadline(0)) == 0);
    CHECK(pgs_clock_left(now - 10) == 0); /* passed: nothing left, never negative */
}

/* The difference between two timespecs, in seconds. */
static double diff(const struct timespec *a, const struct timespec *b)
{
    return (double)(a->tv_sec - b->tv_sec) + (double)(a->tv_nsec - b->tv_nsec) / 1e9;
}

static void test_after(void)
{
    struct timespec before, ts;
    clock_gettime(CLOCK_MONOTONIC, &before);
    pgs_clock_after(CLOCK_MONOTONIC, 1.75, &ts);
    CHECK(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L); /* nanoseconds carried into seconds */
    CHECK(fabs(diff(&ts, &before) - 1.75) < 0.05);

    clock_gettime(CLOCK_REALTIME, &before);
    pgs_clock_after(CLOCK_REALTIME, 0.999999999, &ts);
    CHECK(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
    CHECK(fabs(diff(&ts, &before) - 1) < 0.05);

    /* A negative delay is now; a huge or NaN one is "forever" (1e9 s), not
     * an overflow into the past. */
    clock_gettime(CLOCK_MONOTONIC, &before);
    pgs_clock_after(CLOCK_MONOTONIC, -5, &ts);
    CHECK(diff(&ts, &before) >= 0 && diff(&ts, &before) < 0.05);
    pgs_clock_after(CLOCK_MONOTONIC, 1e300, &ts);
    CHECK(fabs(diff(&ts, &before) - 1e9) < 1);
    pgs_clock_after(CLOCK_MONOTONIC, NAN, &ts);
    CHECK(fabs(diff(&ts, &before) - 1e9) < 1);
}

static void test_sleep_ignores_nonsense(void)
{
    double a = pgs_clock_now();
    pgs_clock_sleep(-1);
    pgs_clock_sleep(NAN);
    pgs_clock_sleep(0);
    CHECK(pgs_clock_now() - a < 0.01);
}

int main(void)
{
    static const pgs_test_t tests[] = {
        {"the clock is monotonic seconds", test_now_is_monotonic},
        {"deadlines: none stays none, left is never negative", test_deadlines},
        {"timespecs for timed waits carry and clamp", test_after},
        {"sleep ignores negative, zero and NaN", test_sleep_ignores_nonsense},
        {NULL, NULL}};
    return pgs_test_run(tests);
}
