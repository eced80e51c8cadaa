/* SPDX-License-Identifier: MIT
 * stmtcache.h — a connection's prepared statements, keyed by SQL text,
 * bounded, evicting the least recently used. Pure bookkeeping: the caller
 * talks to the server (PREPARE / DEALLOCATE).
 */
#ifndef PGS_STMTCACHE_H
#define PGS_STMTCACHE_H
#include <stdint.h>
#include <libpq-fe.h>

typedef struct pgs_stmt {
    char *sql;
    uint32_t hash;
    char name[24];       /* server-side name, never reused on a connection */
    int nparams;
    Oid *types;          /* nparams parameter types from DescribePrepared */
    uint64_t used;       /* LRU clock */
    struct pgs_stmt *next;
} pgs_stmt_t;

typedef struct pgs_stmtcache {
    pgs_stmt_t **buckets;
    int nbuckets, count, max;
    uint64_t clock;
    unsigned long next_id;
} pgs_stmtcache_t;

int pgs_stmtcache_init(pgs_stmtcache_t *c, int max);
void pgs_stmtcache_free(pgs_stmtcache_t *c);
/* Forgets every entry (after a reconnect: the server forgot them too). */
void pgs_stmtcache_clear(pgs_stmtcache_t *c);
pgs_stmt_t *pgs_stmtcache_find(pgs_stmtcache_t *c, const char *sql);
/* A new entry with a fresh name, not yet in the cache; NULL on ENOMEM. */
pgs_stmt_t *pgs_stmt_new(pgs_stmtcache_t *c, const char *sql);
void pgs_stmt_free(pgs_stmt_t *s);
/* Adds s (ownership passes to the cache). */
void pgs_stmtcache_add(pgs_stmtcache_t *c, pgs_stmt_t *s);
/* Detaches the least recently used entry when the cache is full; the caller
 * deallocates it on the server and frees it. NULL when there is room. */
pgs_stmt_t *pgs_stmtcache_take_victim(pgs_stmtcache_t *c);
/* Detaches s from the cache (the caller frees it). */
void pgs_stmtcache_remove(pgs_stmtcache_t *c, pgs_stmt_t *s);
#endif
