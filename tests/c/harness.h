/* SPDX-License-Identifier: MIT
 * harness.h — what every C test of the core shares: CHECK macros that record
 * failures with file:line, a runner over named test functions, and the setup
 * each program needs (a database of its own, a pool, unique table names,
 * one-line SQL, a clock).
 */
#ifndef PGS_TEST_HARNESS_H
#define PGS_TEST_HARNESS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "pgstore.h"

extern int pgs_test_failures;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
            pgs_test_failures++;                                                         \
        }                                                                                \
    } while (0)

#define CHECK_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *a_ = (a), *b_ = (b);                                                 \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                         \
            fprintf(stderr, "%s:%d: expected \"%s\", got \"%s\"\n", __FILE__, __LINE__,  \
                    b_ ? b_ : "(null)", a_ ? a_ : "(null)");                             \
            pgs_test_failures++;                                                         \
        }                                                                                \
    } while (0)

/* Asserts st == PGS_OK, printing the error otherwise. */
#define CHECK_OK(st, err)                                                                \
    do {                                                                                 \
        pgs_status_t st_ = (st);                                                         \
        if (st_ != PGS_OK) {                                                             \
            fprintf(stderr, "%s:%d: expected ok, got %s: %s\n", __FILE__, __LINE__,      \
                    pgs_status_name(st_), (err).message);                                \
            pgs_test_failures++;                                                         \
        }                                                                                \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} pgs_test_t;

/* The test DSN: PGSTORE_TEST_DSN pointed at a database of this program's own,
 * pgstore_c_<program>, made empty on the first call, so test programs run side
 * by side and leave nothing behind for the next run. Exits 1 when
 * PGSTORE_TEST_DSN is not set or the database cannot be made. */
const char *pgs_test_dsn(void);
/* Runs the tests, prints one line each and a summary; returns the exit code. */
int pgs_test_run(const pgs_test_t *tests);

/* A pool of max_size connections / one connection to pgs_test_dsn(); exits 1
 * when it cannot open (nothing can be tested then). */
pgs_pool_t *pgs_test_pool_open(int max_size);
pgs_conn_t *pgs_test_conn_open(void);
/* "<prefix>_<n>" with n counting up: a table of its own for each test. */
void pgs_test_name(char *out, size_t size, const char *prefix);
/* Runs sql on a connection of the pool; an error is a test failure. */
void pgs_test_exec(pgs_pool_t *pool, const char *sql);
/* The first column of the first row of sql as an integer, -1 on an error. */
int64_t pgs_test_query_int(pgs_pool_t *pool, const char *sql);

/* Monotonic seconds, and a sleep for fractions of them. */
double pgs_test_now(void);
void pgs_test_sleep(double seconds);
#endif
