/* SPDX-License-Identifier: MIT
 * test_value.c — type kinds, bytea decoding and ISO timestamps (no server).
 */
#include "harness.h"

static void test_kinds(void)
{
    CHECK(pgs_kind_of(20) == PGS_KIND_INT);
    CHECK(pgs_kind_of(23) == PGS_KIND_INT);
    CHECK(pgs_kind_of(701) == PGS_KIND_FLOAT);
    CHECK(pgs_kind_of(16) == PGS_KIND_BOOL);
    CHECK(pgs_kind_of(17) == PGS_KIND_BYTEA);
    CHECK(pgs_kind_of(1184) == PGS_KIND_TIMESTAMP);
    CHECK(pgs_kind_of(1700) == PGS_KIND_TEXT); /* numeric stays exact text */
    CHECK(pgs_kind_of(3802) == PGS_KIND_TEXT); /* jsonb */
}

static void test_bytea(void)
{
    char out[16];
    CHECK(pgs_bytea_decode("\\x00ff41", 8, out) == 3);
    CHECK(out[0] == 0 && (unsigned char)out[1] == 0xff && out[2] == 'A');
    CHECK(pgs_bytea_decode("\\x", 2, out) == 0);
    CHECK(pgs_bytea_decode("\\x0", 3, out) == -1);
    CHECK(pgs_bytea_decode("\\xzz", 4, out) == -1);
    CHECK(pgs_bytea_decode("abc", 3, out) == -1);
    char inplace[] = "\\x4142";
    CHECK(pgs_bytea_decode(inplace, 6, inplace) == 2);
    CHECK(memcmp(inplace, "AB", 2) == 0);
}

static void test_timestamp(void)
{
    char out[64];
    const char *in = "2026-11-21 02:34:10.25+00";
    pgs_timestamp_iso(in, strlen(in), out);
    CHECK_STR(out, "2026-11-21T02:34:10.25+00:00");
    in = "2026-11-21 02:34:10+05:30";
    pgs_timestamp_iso(in, strlen(in), out);
    CHECK_STR(out, "2026-11-21T02:34:10+05:30");
    in = "2026-11-21 02:34:10";
    pgs_timestamp_iso(in, strlen(in), out);
    CHECK_STR(out, "2026-11-21T02:34:10");
    in = "infinity";
    pgs_timestamp_iso(in, strlen(in), out);
    CHECK_STR(out, "infinity");
}

static void test_status_names(void)
{
    CHECK_STR(pgs_status_name(PGS_OK), "ok");
    CHECK_STR(pgs_status_name(PGS_ECONFLICT), "conflict");
    CHECK_STR(pgs_status_name(PGS_ELEASE_LOST), "lease_lost");
    CHECK_STR(pgs_status_name(PGS_ENOMEM), "nomem");
    CHECK_STR(pgs_status_name((pgs_status_t)999), "unknown");
}

int main(void)
{
    static const pgs_test_t tests[] = {{"kinds", test_kinds},
                                       {"bytea", test_bytea},
                                       {"timestamp", test_timestamp},
                                       {"status names", test_status_names},
                                       {NULL, NULL}};
    return pgs_test_run(tests);
}
