/* SPDX-License-Identifier: MIT
 * json.h — a structural JSON check (internal to libpgstore; see json.c).
 */
#ifndef PGS_JSON_H
#define PGS_JSON_H
#include <stddef.h>

#define PGS_JSON_MAX_DEPTH 4096

/* 1 when text[0..len) is exactly one JSON value, optionally surrounded by
 * whitespace, nested at most PGS_JSON_MAX_DEPTH deep, in well-formed UTF-8;
 * else 0. */
int pgs_json_valid(const char *text, size_t len);
#endif
