/* SPDX-License-Identifier: MIT
 * harness.c — the runner behind harness.h.
 */
#include "harness.h"

#include <stdlib.h>

int pgs_test_failures;

const char *pgs_test_dsn(void)
{
    const char *dsn = getenv("PGSTORE_TEST_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "PGSTORE_TEST_DSN is not set: run the suite through tools/test.sh\n");
        exit(1);
    }
    return dsn;
}

int pgs_test_run(const pgs_test_t *tests)
{
    int failed = 0, passed = 0;
    for (const pgs_test_t *t = tests; t->name; t++) {
        int before = pgs_test_failures;
        t->fn();
        if (pgs_test_failures > before) {
            printf("not ok - %s\n", t->name);
            failed++;
        } else {
            printf("ok - %s\n", t->name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
