/* SPDX-License-Identifier: MIT
 * fuzz_json.c — libFuzzer target for the JSON an append builds: the
 * structural check that keeps raw event data to one value (json.c), and
 * the string escaper (strbuf.c). Oracles: any UTF-8 text, escaped, is one
 * JSON value (the escaper keeps other bytes as they are, and JSON text is
 * UTF-8: events.c refuses a type that is not first); a value that passes
 * the check, spliced into the batch array the way events.c does, leaves
 * an array that still passes it.
 */
#include "json.h"
#include "strbuf.h"
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    int valid = pgs_json_valid(text, size);

    pgs_strbuf_t b;
    pgs_strbuf_init(&b);
    pgs_strbuf_add_json_string(&b, text, size);
    if (!b.failed && pgs_utf8_valid(text, size) && !pgs_json_valid(b.data, b.len))
        abort(); /* an escaped string that is not one JSON value */
    if (valid) {
        pgs_strbuf_t arr;
        pgs_strbuf_init(&arr);
        pgs_strbuf_adds(&arr, "[{\"type\":");
        pgs_strbuf_add(&arr, b.data, b.len);
        pgs_strbuf_adds(&arr, ",\"data\":");
        pgs_strbuf_add(&arr, text, size);
        pgs_strbuf_adds(&arr, "}]");
        if (!arr.failed && !pgs_json_valid(arr.data, arr.len))
            abort();
        pgs_strbuf_free(&arr);
    }
    pgs_strbuf_free(&b);
    return 0;
}
