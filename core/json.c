/* SPDX-License-Identifier: MIT
 * json.c — checks that a byte range is exactly one JSON value (RFC 8259
 * grammar, optional surrounding whitespace), without building anything.
 * An append splices each event's data and metadata text into one JSON
 * array for the server; text that is not one value could close its event
 * and open others ("null},{\"type\":…"), or add keys to it. This checks
 * structure, in one pass, with no allocation and no recursion (nesting is
 * a bit stack), and that the text is UTF-8 (RFC 8259 section 8.1): the
 * server would refuse other bytes only after the caller's transaction has
 * begun, and abort it.
 */
#include "json.h"
#include "utf8.h"

#include <stdint.h>

typedef struct {
    const unsigned char *p, *end;
} cursor_t;

static void skip_ws(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* At the opening quote. */
static int string(cursor_t *c)
{
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = *c->p++;
        if (ch == '"')
            return 1;
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            if (c->p >= c->end)
                return 0;
            ch = *c->p++;
            if (ch == 'u') {
                if (c->end - c->p < 4 || !hex(c->p[0]) || !hex(c->p[1]) || !hex(c->p[2]) ||
                    !hex(c->p[3]))
                    return 0;
                c->p += 4;
            } else if (ch != '"' && ch != '\\' && ch != '/' && ch != 'b' && ch != 'f' &&
                       ch != 'n' && ch != 'r' && ch != 't') {
                return 0;
            }
        }
    }
    return 0;
}

static int digits(cursor_t *c)
{
    const unsigned char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > start;
}

static int number(cursor_t *c)
{
    if (*c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (!digits(c))
        return 0;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!digits(c))
            return 0;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!digits(c))
            return 0;
    }
    return 1;
}

static int literal(cursor_t *c, const char *word, size_t n)
{
    if ((size_t)(c->end - c->p) < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (c->p[i] != (unsigned char)word[i])
            return 0;
    c->p += n;
    return 1;
}

/* A scalar or the opening of a container at c->p. Returns 1 for a scalar
 * read whole, 2 for '[' and 3 for '{' (consumed), 0 for anything else. */
static int value_start(cursor_t *c)
{
    if (c->p >= c->end)
        return 0;
    switch (*c->p) {
    case '"': return string(c);
    case '[': c->p++; return 2;
    case '{': c->p++; return 3;
    case 't': return literal(c, "true", 4);
    case 'f': return literal(c, "false", 5);
    case 'n': return literal(c, "null", 4);
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return number(c);
        return 0;
    }
}

int pgs_json_valid(const char *text, size_t len)
{
    /* Bit d of `stack` is 1 when level d is an object. */
    uint8_t stack[PGS_JSON_MAX_DEPTH / 8];
    int depth = 0;
    cursor_t c = {(const unsigned char *)text, (const unsigned char *)text + len};
    if (!text || !pgs_utf8_valid(text, len))
        return 0;
    skip_ws(&c);
    for (;;) {
        /* Expect a value (in an object: a key, ':' and a value). */
        int kind = value_start(&c);
        if (kind == 0)
            return 0;
        if (kind > 1) {
            if (depth == PGS_JSON_MAX_DEPTH)
                return 0;
            int object = kind == 3;
            if (object)
                stack[depth / 8] |= (uint8_t)(1u << (depth % 8));
            else
                stack[depth / 8] &= (uint8_t)~(1u << (depth % 8));
            depth++;
            skip_ws(&c);
            if (c.p < c.end && *c.p == (object ? '}' : ']')) {
                c.p++;
                depth--;
            } else {
                if (object) {
                    if (c.p >= c.end || *c.p != '"' || !string(&c))
                        return 0;
                    skip_ws(&c);
                    if (c.p >= c.end || *c.p++ != ':')
                        return 0;
                    skip_ws(&c);
                }
                continue;
            }
        }
        /* After a value: ',' and the next one, or close containers. */
        for (;;) {
            skip_ws(&c);
            if (depth == 0)
                return c.p == c.end;
            int object = (stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1;
            if (c.p >= c.end)
                return 0;
            if (*c.p == ',') {
                c.p++;
                skip_ws(&c);
                if (object) {
                    if (c.p >= c.end || *c.p != '"' || !string(&c))
                        return 0;
                    skip_ws(&c);
                    if (c.p >= c.end || *c.p++ != ':')
                        return 0;
                    skip_ws(&c);
                }
                break; /* the next value */
            }
            if (*c.p != (object ? '}' : ']'))
                return 0;
            c.p++;
            depth--;
        }
    }
}
