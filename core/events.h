/* SPDX-License-Identifier: MIT
 * events.h — the event store's internals shared by events.c (writes and
 * lifecycle) and events_read.c (reads).
 */
#ifndef PGS_EVENTS_H
#define PGS_EVENTS_H
#include "notifier.h"
#include "store.h"

struct pgs_events {
    pgs_store_base_t base;
    char heads[PGS_IDENT_MAX], idem[PGS_IDENT_MAX], seq[PGS_IDENT_MAX], idem_stream[PGS_IDENT_MAX];
    char fn_append[PGS_IDENT_MAX], fn_read_all[PGS_IDENT_MAX], fn_import[PGS_IDENT_MAX],
        fn_replay[PGS_IDENT_MAX], fn_order_lock[PGS_IDENT_MAX], fn_check_order[PGS_IDENT_MAX],
        fn_seq_last[PGS_IDENT_MAX], fn_stream_key[PGS_IDENT_MAX], fn_partition[PGS_IDENT_MAX],
        fn_append_rows[PGS_IDENT_MAX];
    char end_floor[PGS_IDENT_MAX]; /* <table>_end: the floor of latest_position */
    char tag[8];               /* the order-lock tag schema version 2 read; ignored since 3 */
    char *notify;              /* channel, or NULL */
    int notify_in_tx;
    size_t max_event_size;
    pgs_notifier_t *notifier;  /* after-commit NOTIFY, or NULL */
    pgs_schema_t schema;       /* the names above, for the migration runner */
    /* SQL built once from the names above */
    char *sql_append, *sql_read_fwd, *sql_read_back, *sql_read_all, *sql_read_parts, *sql_status, *sql_version,
        *sql_latest, *sql_import, *sql_export, *sql_set_status, *sql_delete,
        *sql_truncate, *sql_lock_head, *sql_forget_status, *sql_forget, *sql_check_order,
        *sql_end_floor, *sql_expire_keys, *sql_count_keys;
};

/* A stream name every call accepts: 1 to PGS_STREAM_MAX bytes. */
#define PGS_STREAM_MAX 1024
pgs_status_t pgs_events_check_stream(const char *stream, pgs_error_t *err);

/* Maps the schema's custom SQLSTATEs (PGS01…) and bad-input states onto
 * pgstore codes, in place. Returns the new code. */
pgs_status_t pgs_events_map_error(pgs_error_t *err, pgs_status_t st);

/* The pool for reads: via, else the store's. */
pgs_pool_t *pgs_events_pool(pgs_events_t *es, pgs_pool_t *via);
#endif
