/* SPDX-License-Identifier: MIT
 * error.c — status names, filling pgs_error_t from messages and from libpq
 * (the server's primary message, DETAIL, HINT and names each in their own
 * field), and scrubbing secrets out of them before anyone sees them.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Keep in the same order as enum pgs_status in pgstore.h. */
static const char *const status_names[PGS_STATUS_COUNT] = {
    "ok",       "sql",      "connection", "timeout",    "invalid", "conflict", "duplicate",
    "not_found", "deleted", "archived",   "lease_lost", "rejected", "closed",  "nomem",
};

const char *pgs_status_name(pgs_status_t code)
{
    if ((int)code < 0 || code >= PGS_STATUS_COUNT)
        return "unknown";
    return status_names[code];
}

void pgs_error_clear(pgs_error_t *err)
{
    if (!err)
        return;
    memset(err, 0, sizeof *err);
}

pgs_status_t pgs_error_set(pgs_error_t *err, pgs_status_t code, const char *fmt, ...)
{
    if (!err)
        return code;
    pgs_error_clear(err);
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

int pgs_error_retryable(const pgs_error_t *err)
{
    return err && (strcmp(err->sqlstate, "40001") == 0 || strcmp(err->sqlstate, "40P01") == 0);
}

/* libpq messages end in newlines and may span lines; fields are one line,
 * without runs of blanks or trailing space. */
static void copy_message(char *dst, size_t dstsz, const char *src)
{
    size_t n = 0;
    for (const char *p = src; *p && n + 1 < dstsz; p++) {
        char ch = (*p == '\n' || *p == '\t') ? ' ' : *p;
        if (ch == ' ' && (n == 0 || dst[n - 1] == ' '))
            continue;
        dst[n++] = ch;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

/* Copies one of the server's error fields, when it sent it, as it sent it
 * (a DETAIL may span lines). */
static void copy_field(char *dst, size_t dstsz, const PGresult *res, int field)
{
    const char *v = res ? PQresultErrorField(res, field) : NULL;
    if (v)
        snprintf(dst, dstsz, "%s", v);
}

/* Statement timeouts, lock timeouts and cancels are "timeout"; lost
 * connections are "connection"; everything else the server says is "sql"
 * (the stores turn the SQLSTATEs they expect into their own codes). */
static pgs_status_t code_for_sqlstate(const char *st)
{
    if (strcmp(st, "57014") == 0 || strcmp(st, "55P03") == 0)
        return PGS_ETIMEOUT;
    if (strcmp(st, "PGSL1") == 0) /* a lease guard: the fencing token moved on */
        return PGS_ELEASE_LOST;
    if (strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 || strcmp(st, "57P02") == 0 ||
        strcmp(st, "57P03") == 0)
        return PGS_ECONNECTION;
    return PGS_ESQL;
}

pgs_status_t pgs_error_from_result(pgs_error_t *err, PGconn *pg, const PGresult *res)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    pgs_status_t code;

    if (pg && PQstatus(pg) == CONNECTION_BAD)
        code = PGS_ECONNECTION;
    else if (st)
        code = code_for_sqlstate(st);
    else
        code = PGS_ECONNECTION; /* no SQLSTATE: libpq lost the server */
    if (!err)
        return code;
    pgs_error_clear(err);
    err->code = code;
    if (st)
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", st);
    if (msg) {
        copy_message(err->message, sizeof err->message, msg);
    } else {
        const char *m = res ? PQresultErrorMessage(res) : "";
        if (!*m && pg)
            m = PQerrorMessage(pg);
        copy_message(err->message, sizeof err->message, *m ? m : "connection to server lost");
    }
    copy_field(err->detail, sizeof err->detail, res, PG_DIAG_MESSAGE_DETAIL);
    copy_field(err->hint, sizeof err->hint, res, PG_DIAG_MESSAGE_HINT);
    copy_field(err->constraint, sizeof err->constraint, res, PG_DIAG_CONSTRAINT_NAME);
    copy_field(err->schema, sizeof err->schema, res, PG_DIAG_SCHEMA_NAME);
    copy_field(err->table, sizeof err->table, res, PG_DIAG_TABLE_NAME);
    copy_field(err->column, sizeof err->column, res, PG_DIAG_COLUMN_NAME);
    copy_field(err->datatype, sizeof err->datatype, res, PG_DIAG_DATATYPE_NAME);
    return code;
}

pgs_status_t pgs_error_from_conn(pgs_error_t *err, pgs_status_t code, const char *prefix, PGconn *pg)
{
    if (!err)
        return code;
    char buf[PGS_ERROR_MESSAGE_MAX];
    snprintf(buf, sizeof buf, "%s%s", prefix ? prefix : "",
             pg ? PQerrorMessage(pg) : "out of memory");
    pgs_error_clear(err);
    err->code = code;
    copy_message(err->message, sizeof err->message, buf);
    return code;
}

/* Masks every occurrence of secret in one text field. */
static void scrub_text(char *text, const char *secret, size_t n)
{
    char *hit;
    while ((hit = strstr(text, secret)) != NULL) {
        /* Replace in place with a fixed mask; shorter or equal length keeps
         * it simple: shift the tail when the mask is shorter. The search
         * goes on after the mask, which may itself contain the secret. */
        const char mask[] = "********";
        size_t m = sizeof mask - 1 < n ? sizeof mask - 1 : n;
        memcpy(hit, mask, m);
        memmove(hit + m, hit + n, strlen(hit + n) + 1);
        text = hit + m;
    }
}

void pgs_error_scrub(pgs_error_t *err, const char *secret)
{
    if (!err || !secret || !*secret)
        return;
    size_t n = strlen(secret);
    scrub_text(err->message, secret, n);
    /* The DETAIL of pgstore's own SQLSTATEs (PGS00…) holds only numbers
     * written by its SQL, read as fields: masking a short password there
     * would change them. */
    if (strncmp(err->sqlstate, "PGS", 3) != 0)
        scrub_text(err->detail, secret, n);
    scrub_text(err->hint, secret, n);
}
