/* SPDX-License-Identifier: MIT
 * utf8.h — the core's one UTF-8 check (internal to libpgstore). Text that
 * reaches the server outside a bound parameter's encoding check (lock keys,
 * NOTIFY payloads, partition set names and owners) is checked here first,
 * so bad bytes are `invalid` at the call rather than an SQL error later.
 */
#ifndef PGS_UTF8_H
#define PGS_UTF8_H
#include "pgstore.h"

#include <stddef.h>

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing beyond U+10FFFF); else 0. NUL bytes are valid UTF-8: callers
 * that refuse them check for them themselves. */
int pgs_utf8_valid(const char *s, size_t n);

/* PGS_OK when s[0..n) is well-formed UTF-8; else `invalid`, "<what> is not
 * valid UTF-8". Every text the core stores or matches (stream names,
 * types, keys, ids, prefixes, reasons) goes through it before it is sent:
 * the server's refusal (22021) would abort the caller's transaction. */
pgs_status_t pgs_utf8_check(const char *what, const char *s, size_t n, pgs_error_t *err);
#endif
