/* SPDX-License-Identifier: MIT
 * error.c — status names, filling pgs_error_t from messages and from libpq
 * (the server's primary message, DETAIL, HINT and names each in their own
 * field), and scrubbing secrets out of them before anyone sees them.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The mask that replaces a password: at most 8 '*', never longer than it. */
static size_t mask_length(size_t secret_length)
{
    return secret_length < 8 ? secret_length : 8;
}

/* Copies src into dst (dstsz bytes, NUL-terminated), every occurrence of
 * secret masked first — while the text is as libpq gave it: collapsing
 * its blanks or cutting it to the field's size would leave a password with
 * repeated blanks, or one that straddles the cut, unmatched. With
 * one_line, newlines and tabs become spaces, runs of blanks one, and
 * trailing blanks go: libpq messages end in newlines and may span lines,
 * fields are one line. The source is read once, from left to right, so a
 * password made of the mask itself ends like any other. */
static void copy_scrubbed(char *dst, size_t dstsz, const char *src, const char *secret,
                          int one_line)
{
    size_t n = 0, slen = secret ? strlen(secret) : 0;
    for (const char *p = src; *p && n + 1 < dstsz;) {
        if (slen && strncmp(p, secret, slen) == 0) {
            for (size_t m = mask_length(slen); m > 0 && n + 1 < dstsz; m--)
                dst[n++] = '*';
            p += slen;
            continue;
        }
        char ch = *p++;
        if (one_line && (ch == '\n' || ch == '\t'))
            ch = ' ';
        if (one_line && ch == ' ' && (n == 0 || dst[n - 1] == ' '))
            continue;
        dst[n++] = ch;
    }
    while (one_line && n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

/* The password a connection was opened with, wherever libpq found it: the
 * connection string, PGPASSWORD, a service file or a passfile. */
static const char *secret_of(PGconn *pg)
{
    const char *pw = pg ? PQpass(pg) : NULL;
    return pw && *pw ? pw : NULL;
}

void pgs_error_copy_text(char *dst, size_t dstsz, const char *src, PGconn *pg)
{
    copy_scrubbed(dst, dstsz, src, secret_of(pg), 0);
}

static void copy_message(char *dst, size_t dstsz, const char *src, const char *secret)
{
    copy_scrubbed(dst, dstsz, src, secret, 1);
}

/* Copies one of the server's error fields, when it sent it, as it sent it
 * (a DETAIL may span lines). */
static void copy_field(char *dst, size_t dstsz, const PGresult *res, int field,
                       const char *secret)
{
    const char *v = res ? PQresultErrorField(res, field) : NULL;
    if (v)
        copy_scrubbed(dst, dstsz, v, secret, 0);
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
    /* Scrubbed as they are copied, with the password this connection used;
     * the DETAIL of pgstore's own SQLSTATEs (PGS00…) holds only numbers
     * written by its SQL, read as fields: masking a short password there
     * would change them. */
    const char *secret = secret_of(pg);
    int own = st && strncmp(st, "PGS", 3) == 0;
    if (msg) {
        copy_message(err->message, sizeof err->message, msg, secret);
    } else {
        const char *m = res ? PQresultErrorMessage(res) : "";
        if (!*m && pg)
            m = PQerrorMessage(pg);
        copy_message(err->message, sizeof err->message, *m ? m : "connection to server lost",
                     secret);
    }
    copy_field(err->detail, sizeof err->detail, res, PG_DIAG_MESSAGE_DETAIL, own ? NULL : secret);
    copy_field(err->hint, sizeof err->hint, res, PG_DIAG_MESSAGE_HINT, secret);
    copy_field(err->constraint, sizeof err->constraint, res, PG_DIAG_CONSTRAINT_NAME, NULL);
    copy_field(err->schema, sizeof err->schema, res, PG_DIAG_SCHEMA_NAME, NULL);
    copy_field(err->table, sizeof err->table, res, PG_DIAG_TABLE_NAME, NULL);
    copy_field(err->column, sizeof err->column, res, PG_DIAG_COLUMN_NAME, NULL);
    copy_field(err->datatype, sizeof err->datatype, res, PG_DIAG_DATATYPE_NAME, NULL);
    return code;
}

pgs_status_t pgs_error_from_conn(pgs_error_t *err, pgs_status_t code, const char *prefix, PGconn *pg)
{
    if (!err)
        return code;
    /* The whole of libpq's message, however long, so that it is scrubbed
     * before it is cut. */
    const char *m = pg ? PQerrorMessage(pg) : "out of memory";
    size_t np = prefix ? strlen(prefix) : 0, nm = strlen(m);
    char *buf = malloc(np + nm + 1);
    pgs_error_clear(err);
    err->code = code;
    if (!buf) {
        /* Only the prefix, pgstore's own words, can be shown safely. */
        copy_message(err->message, sizeof err->message, prefix ? prefix : "out of memory", NULL);
        return code;
    }
    memcpy(buf, prefix ? prefix : "", np);
    memcpy(buf + np, m, nm + 1);
    copy_message(err->message, sizeof err->message, buf, secret_of(pg));
    free(buf);
    return code;
}

/* Masks every occurrence of secret in one field, which may already have
 * been cut to its size: then a tail of it that begins the secret is
 * masked too, as it may be where a password was cut off. */
static void scrub_text(char *text, size_t size, const char *secret, size_t n)
{
    char copy[PGS_ERROR_MESSAGE_MAX];
    size_t len = strlen(text);
    if (len >= sizeof copy)
        return; /* every field is at most PGS_ERROR_MESSAGE_MAX */
    memcpy(copy, text, len + 1);
    copy_scrubbed(text, size, copy, secret, 0);
    if (len + 1 < size)
        return;
    len = strlen(text);
    for (size_t k = n - 1 < len ? n - 1 : len; k > 0; k--)
        if (memcmp(text + len - k, secret, k) == 0) {
            memset(text + len - k, '*', k);
            break;
        }
}

void pgs_error_scrub(pgs_error_t *err, const char *secret)
{
    if (!err || !secret || !*secret)
        return;
    size_t n = strlen(secret);
    scrub_text(err->message, sizeof err->message, secret, n);
    /* The DETAIL of pgstore's own SQLSTATEs (PGS00…): see above. */
    if (strncmp(err->sqlstate, "PGS", 3) != 0)
        scrub_text(err->detail, sizeof err->detail, secret, n);
    scrub_text(err->hint, sizeof err->hint, secret, n);
}
