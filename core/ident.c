/* SPDX-License-Identifier: MIT
 * ident.c — table names as options: validated against a conservative
 * grammar, then double-quoted. User data never reaches SQL text; names do,
 * so they are held to [A-Za-z_][A-Za-z0-9_]* per part (no $: the schema
 * files quote function bodies with $fn$), at most PGS_NAME_MAX
 * bytes. Exported to Lua as core.check_table and core.limits.name.
 */
#include "pgstore.h"

#include <stdio.h>
#include <string.h>

static int valid_part(const char *s, size_t n)
{
    if (n == 0 || n > PGS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        int digit = c >= '0' && c <= '9';
        if (!(alpha || (i > 0 && digit)))
            return 0;
    }
    return 1;
}

pgs_status_t pgs_ident_quote_suffix(const char *name, const char *suffix, char *out, size_t outsz,
                                    pgs_error_t *err)
{
    if (!name)
        return pgs_error_set(err, PGS_EINVALID, "invalid table name: (null)");
    if (!suffix)
        suffix = "";
    size_t len = strlen(name);
    const char *dot = memchr(name, '.', len);
    const char *table = dot ? dot + 1 : name;
    size_t schema_len = dot ? (size_t)(dot - name) : 0;
    size_t table_len = len - (size_t)(table - name);
    char tbl[2 * PGS_NAME_MAX + 2];

    if (len > 2 * PGS_NAME_MAX + 1 || (dot && !valid_part(name, schema_len)) ||
        !valid_part(table, table_len))
        goto bad;
    if (table_len + strlen(suffix) > PGS_NAME_MAX)
        return pgs_error_set(err, PGS_EINVALID,
                             "invalid table name: '%.80s%s' is longer than %d bytes", table, suffix,
                             PGS_NAME_MAX);
    snprintf(tbl, sizeof tbl, "%.*s%s", (int)table_len, table, suffix);
    if (!valid_part(tbl, strlen(tbl)))
        goto bad;
    int w = dot ? snprintf(out, outsz, "\"%.*s\".\"%s\"", (int)schema_len, name, tbl)
                : snprintf(out, outsz, "\"%s\"", tbl);
    if (w < 0 || (size_t)w >= outsz)
        return pgs_error_set(err, PGS_EINVALID, "invalid table name: too long");
    return PGS_OK;
bad:
    return pgs_error_set(err, PGS_EINVALID,
                         "invalid table name '%.80s': use letters, digits and _ "
                         "(optionally schema.table), at most %d bytes per part",
                         name, PGS_NAME_MAX);
}

pgs_status_t pgs_ident_quote(const char *name, char *out, size_t outsz, pgs_error_t *err)
{
    return pgs_ident_quote_suffix(name, "", out, outsz, err);
}
