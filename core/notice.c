/* SPDX-License-Identifier: MIT
 * notice.c — the one notice receiver of libpgstore's connections (see
 * notice.h): drops notices, remembers a FATAL.
 */
#include "notice.h"
#include "error.h"

#include <stdio.h>
#include <string.h>

static void on_notice(void *arg, const PGresult *res)
{
    pgs_fatal_t *fatal = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)) {
        const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        fatal->seen = 1;
        pgs_error_copy_text(fatal->message, sizeof fatal->message, msg ? msg : sev, fatal->pg);
    }
}

void pgs_notice_watch(PGconn *pg, pgs_fatal_t *fatal)
{
    fatal->pg = pg;
    fatal->seen = 0;
    fatal->message[0] = '\0';
    PQsetNoticeReceiver(pg, on_notice, fatal);
}
