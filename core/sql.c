/* SPDX-License-Identifier: MIT
 * sql.c — the embedded schema files and the placeholder filler (see
 * sql.h). The filler is the only way a name reaches SQL text.
 */
#include "sql.h"
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pgs_sql_file(const char *series, int version)
{
    char want[128];
    if (version == 1)
        snprintf(want, sizeof want, "%s--1.sql", series);
    else
        snprintf(want, sizeof want, "%s--%d--%d.sql", series, version - 1, version);
    for (const pgs_sql_file_t *f = pgs_sql_files; f->name; f++)
        if (strcmp(f->name, want) == 0)
            return f->text;
    return NULL;
}

int pgs_sql_latest(const char *series)
{
    int v = 0;
    while (pgs_sql_file(series, v + 1))
        v++;
    return v;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || c == '_';
}

/* "x" or "x"."y": one or two double-quoted parts of 1..63 printable
 * bytes with no quote of either kind and no $ inside (pgs_ident_quote's
 * names, channel names), so nothing in a value can end the quoting early,
 * nor a '…' literal it stands in ('@events@'::regclass), nor a $fn$
 * dollar quote around a function body. */
static int quoted_ident(const char *v)
{
    int parts = 0;
    const char *p = v;
    for (;;) {
        if (*p++ != '"')
            return 0;
        const char *start = p;
        while (*p && *p != '"') {
            unsigned char c = (unsigned char)*p++;
            if (c < 0x20 || c == 0x7f || c == '$' || c == '\'')
                return 0;
        }
        if (*p++ != '"' || p - start - 1 == 0 || p - start - 1 > 63)
            return 0;
        parts++;
        if (*p == '\0')
            return parts <= 2;
        if (*p++ != '.')
            return 0;
    }
}

pgs_status_t pgs_sql_fill(const char *tmpl, const char *const *names, const char *const *values,
                          int n, char **out, pgs_error_t *err)
{
    *out = NULL;
    for (int i = 0; i < n; i++)
        if (!values[i] || !quoted_ident(values[i]))
            return pgs_error_set(err, PGS_EINVALID, "@%s@ must be a quoted identifier without $, got '%.80s'",
                                 names[i], values[i] ? values[i] : "(null)");
    pgs_strbuf_t b;
    pgs_strbuf_init(&b);
    const char *p = tmpl;
    while (*p) {
        const char *at = strchr(p, '@');
        if (!at) {
            pgs_strbuf_add(&b, p, strlen(p));
            break;
        }
        pgs_strbuf_add(&b, p, (size_t)(at - p));
        const char *name = at + 1, *end = name;
        while (is_name_char(*end))
            end++;
        if (end == name) { /* an operator such as @> */
            pgs_strbuf_add(&b, "@", 1);
            p = at + 1;
            continue;
        }
        int len = (int)(end - name), found = -1;
        if (*end == '@')
            for (int i = 0; i < n && found < 0; i++)
                if ((int)strlen(names[i]) == len && memcmp(names[i], name, (size_t)len) == 0)
                    found = i;
        if (found < 0) {
            pgs_strbuf_free(&b);
            return pgs_error_set(err, PGS_EINVALID, "%s placeholder @%.*s%s in SQL template",
                                 *end == '@' ? "unknown" : "unterminated", len, name,
                                 *end == '@' ? "@" : "");
        }
        pgs_strbuf_add(&b, values[found], strlen(values[found]));
        p = end + 1;
    }
    if (!b.data) /* an empty template */
        pgs_strbuf_add(&b, "", 0);
    if (b.failed) {
        pgs_strbuf_free(&b);
        return pgs_error_set(err, PGS_ENOMEM, "out of memory");
    }
    *out = b.data;
    return PGS_OK;
}

pgs_status_t pgs_sql_fill_all(const char *const *tmpl, int n, const char *const *names,
                              const char *const *values, int nnames, char **out,
                              pgs_error_t *err)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    for (int i = 0; i < n; i++) {
        pgs_status_t st = pgs_sql_fill(tmpl[i], names, values, nnames, &out[i], err);
        if (st != PGS_OK) {
            pgs_sql_free_all(out, n);
            return st;
        }
    }
    return PGS_OK;
}

void pgs_sql_free_all(char **sql, int n)
{
    for (int i = 0; i < n; i++) {
        free(sql[i]);
        sql[i] = NULL;
    }
}
