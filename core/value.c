/* SPDX-License-Identifier: MIT
 * value.c — how PostgreSQL's text output maps onto host values: type OIDs
 * to kinds, bytea hex decoding, timestamps to ISO 8601. No allocation, so
 * the binding and the fuzzers can call these on any input.
 */
#include "pgstore.h"

#include <string.h>

/* Built-in type OIDs (pg_type.dat); stable across server versions. */
enum {
    OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23,
    OID_OID = 26, OID_XID = 28, OID_FLOAT4 = 700, OID_FLOAT8 = 701,
    OID_TIMESTAMP = 1114, OID_TIMESTAMPTZ = 1184
};

pgs_kind_t pgs_kind_of(unsigned int type)
{
    switch (type) {
    case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID: case OID_XID:
        return PGS_KIND_INT;
    case OID_FLOAT4: case OID_FLOAT8:
        return PGS_KIND_FLOAT;
    case OID_BOOL:
        return PGS_KIND_BOOL;
    case OID_BYTEA:
        return PGS_KIND_BYTEA;
    case OID_TIMESTAMP: case OID_TIMESTAMPTZ:
        return PGS_KIND_TIMESTAMP;
    default:
        return PGS_KIND_TEXT;
    }
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long pgs_bytea_decode(const char *in, size_t len, char *out)
{
    if (len < 2 || in[0] != '\\' || in[1] != 'x' || (len - 2) % 2 != 0)
        return -1;
    /* Check everything before writing anything: out may be in, and on
     * failure the caller falls back to the text as it was. */
    for (size_t i = 2; i < len; i++)
        if (hexval((unsigned char)in[i]) < 0)
            return -1;
    size_t n = 0;
    for (size_t i = 2; i < len; i += 2)
        out[n++] = (char)(hexval((unsigned char)in[i]) << 4 | hexval((unsigned char)in[i + 1]));
    return (long)n;
}

size_t pgs_timestamp_iso(const char *in, size_t len, char *out)
{
    size_t n = 0, i = 0;
    /* "infinity" and friends, and BC dates, pass through untouched. */
    if (len < 19 || in[10] != ' ' || memchr(in, 'B', len)) {
        memcpy(out, in, len);
        out[len] = '\0';
        return len;
    }
    for (; i < len; i++)
        out[n++] = i == 10 ? 'T' : in[i];
    /* A zone suffix "+hh" or "-hh" (no minutes) becomes "+hh:00". */
    if (len >= 3 && (in[len - 3] == '+' || in[len - 3] == '-') && in[len - 2] >= '0' &&
        in[len - 2] <= '9' && in[len - 1] >= '0' && in[len - 1] <= '9') {
        out[n++] = ':';
        out[n++] = '0';
        out[n++] = '0';
    }
    out[n] = '\0';
    return n;
}
