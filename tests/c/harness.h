/* SPDX-License-Identifier: MIT
 * harness.h — a minimal test harness for the C core: CHECK macros that
 * record failures with file:line, and a runner over named test functions.
 */
#ifndef PGS_TEST_HARNESS_H
#define PGS_TEST_HARNESS_H
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

/* The test DSN from PGSTORE_TEST_DSN; exits 1 when it is not set. */
const char *pgs_test_dsn(void);
/* Runs the tests, prints one line each and a summary; returns the exit code. */
int pgs_test_run(const pgs_test_t *tests);
#endif
