/* SPDX-License-Identifier: MIT
 * utf8.h — the core's one UTF-8 check (internal to libpgstore). Text that
 * reaches the server outside a bound parameter's encoding check (lock keys,
 * NOTIFY payloads, partition set names and owners) is checked here first,
 * so bad bytes are `invalid` at the call rather than an SQL error later.
 */
#ifndef PGS_UTF8_H
#define PGS_UTF8_H
#include <stddef.h>

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing beyond U+10FFFF); else 0. NUL bytes are valid UTF-8: callers
 * that refuse them check for them themselves. */
int pgs_utf8_valid(const char *s, size_t n);
#endif
