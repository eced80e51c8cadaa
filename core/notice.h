/* SPDX-License-Identifier: MIT
 * notice.h — what libpgstore does with the server's notices (internal).
 * The core never prints, so notices are dropped, except a FATAL or PANIC
 * arriving while a connection sits idle: the server is closing it
 * (pg_terminate_backend, shutdown), even if the EOF behind it has not
 * arrived yet, and says why.
 */
#ifndef PGS_NOTICE_H
#define PGS_NOTICE_H
#include <libpq-fe.h>

typedef struct pgs_fatal {
    int seen;           /* the server sent FATAL or PANIC: reconnect before use */
    char message[200];  /* what it said ("" when nothing yet), password masked */
    PGconn *pg;         /* whose password that is */
} pgs_fatal_t;

/* Clears *fatal and routes pg's notices to it. fatal must live as long as
 * pg (a member of the struct that owns the connection). */
void pgs_notice_watch(PGconn *pg, pgs_fatal_t *fatal);
#endif
