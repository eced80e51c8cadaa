/* SPDX-License-Identifier: MIT
 * sql.h — SQL text with names in it (internal): the embedded schema files
 * of core/sql/ and the one function that puts quoted identifiers into a
 * template's @name@ placeholders. Values never go in this way: they are
 * bound parameters.
 */
#ifndef PGS_SQL_H
#define PGS_SQL_H
#include "pgstore.h"

/* One embedded file: its name ("events--1--2.sql") and its text. */
typedef struct pgs_sql_file {
    const char *name;
    const char *text;
} pgs_sql_file_t;

/* Every file of core/sql, ending with {NULL, NULL} (generated at build
 * time by cmake/embed_sql.cmake). */
extern const pgs_sql_file_t pgs_sql_files[];

/* The text of the file that takes `series` to `version`: version 1 is
 * "<series>--1.sql", version N > 1 is "<series>--<N-1>--<N>.sql". NULL when
 * there is none. */
const char *pgs_sql_file(const char *series, int version);

/* The newest version of a series (0 when it has no files). */
int pgs_sql_latest(const char *series);

/* Fills `tmpl`: every @name@ becomes values[i] where names[i] is name.
 * names are [a-z_]+; values must be quoted identifiers as pgs_ident_quote
 * makes them ("t" or "s"."t": 1..63 printable bytes per part, no quote
 * inside). An @ followed by a
 * name but no closing @, a name not in names, or a value of another shape
 * is PGS_EINVALID: no placeholder is ever left in the SQL. An @ not
 * followed by a letter or _ is left as it is (an operator).
 * On PGS_OK *out is malloc'd and owned by the caller. */
pgs_status_t pgs_sql_fill(const char *tmpl, const char *const *names, const char *const *values,
                          int n, char **out, pgs_error_t *err);

/* Fills n templates with the same names, into out[0..n-1] (all NULL on
 * failure). Free them with pgs_sql_free_all. */
pgs_status_t pgs_sql_fill_all(const char *const *tmpl, int n, const char *const *names,
                              const char *const *values, int nnames, char **out,
                              pgs_error_t *err);
void pgs_sql_free_all(char **sql, int n);
#endif
