/* SPDX-License-Identifier: MIT
 * notify.h — the one way libpgstore sends NOTIFY (internal): a checked
 * channel and payload, bound as parameters of PGS_NOTIFY_SQL. pgs_notify()
 * sends on any connection (pooled, a transaction's, the notifier's own);
 * the listener sends the same prepared message on its connection.
 */
#ifndef PGS_NOTIFY_H
#define PGS_NOTIFY_H
#include "pgstore.h"

#define PGS_NOTIFY_SQL "SELECT pg_notify($1, $2)"

/* A notification ready to bind: libpq reads a text parameter up to its
 * NUL whatever the length says, so the payload is a terminated copy. */
typedef struct pgs_notify_msg {
    const char *channel; /* the caller's, checked */
    size_t len;
    char payload[PGS_NOTIFY_PAYLOAD_MAX + 1];
} pgs_notify_msg_t;

/* Checks channel and payload (pgs_notify_check) and fills *m. */
pgs_status_t pgs_notify_prepare(pgs_notify_msg_t *m, const char *channel, const char *payload,
                                size_t len, pgs_error_t *err);
#endif
