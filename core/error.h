/* SPDX-License-Identifier: MIT
 * error.h — internal helpers that turn libpq outcomes into pgs_error_t.
 */
#ifndef PGS_ERROR_H
#define PGS_ERROR_H
#include "pq.h"

/* Fills err from a failed result (or a NULL result and the connection's
 * message): the primary message, SQLSTATE, DETAIL, HINT and the names the
 * server gives, each in its own field. Maps SQLSTATEs onto codes. Returns
 * the code. */
pgs_status_t pgs_error_from_result(pgs_error_t *err, PGconn *pg, const PGresult *res);

/* Fills err with `code`, `prefix` and the connection's current message. */
pgs_status_t pgs_error_from_conn(pgs_error_t *err, pgs_status_t code, const char *prefix, PGconn *pg);
/* Both mask the password pg was opened with (PQpass: from the connection
 * string, PGPASSWORD, a service file or a passfile) while they copy, before
 * the text is made one line or cut to the field's size. */

/* Copies a message of pg's server into dst (cut to dstsz), the password pg
 * was opened with masked. Every text from libpq goes through this or the
 * two above, which mask it the same way. */
void pgs_error_copy_text(char *dst, size_t dstsz, const char *src, PGconn *pg);

/* Masks every occurrence of secret in err's message, detail and hint. */
void pgs_error_scrub(pgs_error_t *err, const char *secret);
#endif
