/* SPDX-License-Identifier: MIT
 * strbuf.c — growable buffer; doubles its capacity, remembers a failed
 * allocation instead of crashing so callers check once at the end.
 */
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pgs_strbuf_init(pgs_strbuf_t *b)
{
    memset(b, 0, sizeof *b);
}

void pgs_strbuf_free(pgs_strbuf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int grow(pgs_strbuf_t *b, size_t extra)
{
    if (b->failed)
        return 0;
    if (b->len + extra + 1 <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

void pgs_strbuf_add(pgs_strbuf_t *b, const char *s, size_t n)
{
    if (!grow(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void pgs_strbuf_adds(pgs_strbuf_t *b, const char *s)
{
    pgs_strbuf_add(b, s, strlen(s));
}

void pgs_strbuf_add_json_string(pgs_strbuf_t *b, const char *s, size_t n)
{
    if (!grow(b, n + 2))
        return;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            pgs_strbuf_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            pgs_strbuf_add(b, esc, 6);
        } else {
            pgs_strbuf_add(b, (const char *)&c, 1);
        }
    }
    pgs_strbuf_add(b, "\"", 1);
}
