/* SPDX-License-Identifier: MIT
 * notifier.h — coalesced NOTIFY after commit (internal). Appends post the
 * position they committed; a background thread with its own connection
 * sends at most one NOTIFY per interval, always including a trailing one
 * for the last position posted. A failure only costs latency: listeners
 * catch up from stored positions anyway.
 */
#ifndef PGS_NOTIFIER_H
#define PGS_NOTIFIER_H
#include <stdint.h>
#include "conn.h"

typedef struct pgs_notifier pgs_notifier_t;

/* dsn must outlive the notifier (it is the pool's, which the store refs). */
pgs_notifier_t *pgs_notifier_new(const pgs_dsn_t *dsn, const char *channel, double interval);
/* Announces position; starts the thread on first use. Never blocks on I/O. */
void pgs_notifier_post(pgs_notifier_t *n, int64_t position);
/* Stops the thread (a pending announcement is sent first) and frees n. */
void pgs_notifier_free(pgs_notifier_t *n);
#endif
