/* SPDX-License-Identifier: MIT
 * fuzz_text.c — libFuzzer target for the core's text decoders and name
 * checks: bytea hex decoding in place (as the binding does it), timestamp
 * rewriting, table-name quoting (with and without a suffix), channel
 * names, lock keys and NOTIFY payloads. Oracle: whatever passes the name
 * checks is quoted into one "identifier" (or "schema"."identifier") with
 * nothing but [A-Za-z0-9_] inside the quotes.
 */
#include "pgstore.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_quoted(const char *q)
{
    int parts = 0;
    const char *p = q;
    for (;;) {
        if (*p++ != '"')
            abort();
        while (*p && *p != '"') {
            char c = *p++;
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_'))
                abort();
        }
        if (*p++ != '"')
            abort();
        parts++;
        if (*p == '\0')
            break;
        if (*p++ != '.' || parts == 2)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* bytea: the binding decodes into the value's own buffer */
    char *buf = malloc(size + 5);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    long n = pgs_bytea_decode(buf, size, buf);
    if (n > (long)size)
        abort();

    /* timestamps: out has len + 4 bytes */
    memcpy(buf, data, size);
    size_t t = pgs_timestamp_iso((const char *)data, size, buf);
    if (t > size + 3)
        abort();

    (void)pgs_kind_of(size ? (unsigned)data[0] * 7 : 0);

    /* names are C strings: cut at the first NUL, as the binding would refuse */
    char *name = malloc(size + 1);
    if (!name) {
        free(buf);
        return 0;
    }
    memcpy(name, data, size);
    name[size] = '\0';
    char out[PGS_IDENT_MAX];
    pgs_error_t err;
    if (pgs_ident_quote(name, out, sizeof out, &err) == PGS_OK)
        check_quoted(out);
    if (pgs_ident_quote_suffix(name, "_position_seq", out, sizeof out, &err) == PGS_OK)
        check_quoted(out);
    (void)pgs_channel_check(name, &err);
    (void)pgs_lock_key_check((const char *)data, size, &err);
    (void)pgs_notify_payload_check((const char *)data, size, &err);
    (void)pgs_partition_for((const char *)data, size, size ? data[0] : 1);
    free(name);
    free(buf);
    return 0;
}
