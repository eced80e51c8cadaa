/* SPDX-License-Identifier: MIT
 * notify.c — the rules for channel names and NOTIFY payloads, and the one
 * sender of NOTIFY (see notify.h). The limits are pgstore.h's, exported to
 * Lua as core.limits, so no other layer restates them.
 */
#include "notify.h"
#include "conn.h"
#include "utf8.h"

#include <string.h>

/* Channel names become quoted identifiers in LISTEN/UNLISTEN. The grammar is
 * kept to what needs no escaping anywhere and survives every client:
 * 1..63 bytes of [A-Za-z0-9_.:-]. */
pgs_status_t pgs_channel_check(const char *name, pgs_error_t *err)
{
    if (!name)
        return pgs_error_set(err, PGS_EINVALID, "invalid channel name: (null)");
    size_t n = strlen(name);
    int ok = n >= 1 && n <= PGS_CHANNEL_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == ':' || c == '-';
    }
    if (ok)
        return PGS_OK;
    if (n > PGS_CHANNEL_MAX)
        return pgs_error_set(err, PGS_EINVALID,
                             "invalid channel name '%.40s…': longer than %d bytes", name,
                             PGS_CHANNEL_MAX);
    return pgs_error_set(err, PGS_EINVALID,
                         "invalid channel name '%.80s': use 1..%d of the characters "
                         "A-Z a-z 0-9 _ . : -",
                         name, PGS_CHANNEL_MAX);
}

pgs_status_t pgs_notify_payload_check(const char *payload, size_t len, pgs_error_t *err)
{
    if (len > PGS_NOTIFY_PAYLOAD_MAX)
        return pgs_error_set(err, PGS_EINVALID,
                             "NOTIFY payload of %zu bytes is over the server's limit of %d bytes",
                             len, PGS_NOTIFY_PAYLOAD_MAX);
    if (len && memchr(payload, '\0', len))
        return pgs_error_set(err, PGS_EINVALID, "NOTIFY payload contains a NUL byte");
    if (!pgs_utf8_valid(payload, len))
        return pgs_error_set(err, PGS_EINVALID, "NOTIFY payload is not valid UTF-8");
    return PGS_OK;
}

pgs_status_t pgs_notify_check(const char *channel, const char *payload, size_t len,
                              pgs_error_t *err)
{
    pgs_status_t st = pgs_channel_check(channel, err);
    if (st == PGS_OK)
        st = pgs_notify_payload_check(payload ? payload : "", payload ? len : 0, err);
    return st;
}

pgs_status_t pgs_notify_prepare(pgs_notify_msg_t *m, const char *channel, const char *payload,
                                size_t len, pgs_error_t *err)
{
    if (!payload)
        len = 0;
    pgs_status_t st = pgs_notify_check(channel, payload, len, err);
    if (st != PGS_OK)
        return st;
    m->channel = channel;
    m->len = len;
    if (len)
        memcpy(m->payload, payload, len);
    m->payload[len] = '\0';
    return PGS_OK;
}

pgs_status_t pgs_notify(pgs_conn_t *conn, const char *channel, const char *payload, size_t len,
                        pgs_error_t *err)
{
    pgs_notify_msg_t m;
    pgs_status_t st = pgs_notify_prepare(&m, channel, payload, len, err);
    if (st != PGS_OK)
        return st;
    pgs_param_t p[2] = {{m.channel, -1}, {m.payload, (int)m.len}};
    return pgs_exec(conn, PGS_NOTIFY_SQL, 2, p, NULL, err);
}
