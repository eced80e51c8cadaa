/* SPDX-License-Identifier: MIT
 * test_ident.c — table-name validation and quoting (no server).
 */
#include "harness.h"

static void test_valid(void)
{
    char out[PGS_IDENT_MAX];
    pgs_error_t err;
    CHECK_OK(pgs_ident_quote("events", out, sizeof out, &err), err);
    CHECK_STR(out, "\"events\"");
    CHECK_OK(pgs_ident_quote("app.events", out, sizeof out, &err), err);
    CHECK_STR(out, "\"app\".\"events\"");
    CHECK_OK(pgs_ident_quote_suffix("app.events", "_heads", out, sizeof out, &err), err);
    CHECK_STR(out, "\"app\".\"events_heads\"");
    CHECK_OK(pgs_ident_quote("_x1", out, sizeof out, &err), err);
}

static void test_invalid(void)
{
    static const char *const bad[] = {
        "", "x; drop table y", "a\"b", "1abc", "a.b.c", ".a", "a.", "ümlaut", "a b", "a-b",
        "a$fn$b", "x$fn$", "ok$name", "s$.t", /* $: the schema files dollar-quote bodies */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 64 */
        NULL};
    char out[PGS_IDENT_MAX];
    pgs_error_t err;
    for (int i = 0; bad[i]; i++) {
        pgs_status_t st = pgs_ident_quote(bad[i], out, sizeof out, &err);
        if (st != PGS_EINVALID)
            fprintf(stderr, "accepted bad name '%s'\n", bad[i]);
        CHECK(st == PGS_EINVALID);
        CHECK(strstr(err.message, "invalid table name") != NULL);
    }
    /* 60 bytes are fine alone but not with a 6-byte suffix. */
    const char *n60 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    CHECK(pgs_ident_quote(n60, out, sizeof out, &err) == PGS_OK);
    CHECK(pgs_ident_quote_suffix(n60, "_heads", out, sizeof out, &err) == PGS_EINVALID);
    CHECK(pgs_ident_quote(NULL, out, sizeof out, &err) == PGS_EINVALID);
}

int main(void)
{
    static const pgs_test_t tests[] = {{"valid names", test_valid},
                                       {"invalid names", test_invalid},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
