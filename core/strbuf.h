/* SPDX-License-Identifier: MIT
 * strbuf.h — a growable byte buffer with JSON string escaping, for building
 * the one JSON parameter an append sends. No Lua, no libpq.
 */
#ifndef PGS_STRBUF_H
#define PGS_STRBUF_H
#include <stddef.h>

typedef struct pgs_strbuf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: contents are incomplete */
} pgs_strbuf_t;

void pgs_strbuf_init(pgs_strbuf_t *b);
void pgs_strbuf_free(pgs_strbuf_t *b);
void pgs_strbuf_add(pgs_strbuf_t *b, const char *s, size_t n);
void pgs_strbuf_adds(pgs_strbuf_t *b, const char *s);
/* Appends s as a JSON string literal, quotes included. */
void pgs_strbuf_add_json_string(pgs_strbuf_t *b, const char *s, size_t n);
#endif
