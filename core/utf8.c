/* SPDX-License-Identifier: MIT
 * utf8.c — well-formed UTF-8, by the table in RFC 3629 section 4 (see
 * utf8.h). The server checks the same on every text it is given; checking
 * first lets the caller get `invalid` with the field named.
 */
#include "utf8.h"

#include <stdint.h>

int pgs_utf8_valid(const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len > n - i)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* overlong forms, surrogates, beyond Unicode */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return 0;
        i += len;
    }
    return 1;
}

pgs_status_t pgs_utf8_check(const char *what, const char *s, size_t n, pgs_error_t *err)
{
    if (pgs_utf8_valid(s, n))
        return PGS_OK;
    return pgs_error_set(err, PGS_EINVALID, "%s is not valid UTF-8", what);
}
