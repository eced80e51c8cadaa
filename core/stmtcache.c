/* SPDX-License-Identifier: MIT
 * stmtcache.c — a small chained hash of prepared statements with an LRU
 * clock. Eviction scans all entries; it only happens when the cache is full,
 * which a steady workload of store statements never reaches.
 */
#include "stmtcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int pgs_stmtcache_init(pgs_stmtcache_t *c, int max)
{
    memset(c, 0, sizeof *c);
    c->max = max > 0 ? max : 256;
    c->nbuckets = 64;
    while (c->nbuckets < c->max)
        c->nbuckets *= 2;
    c->buckets = calloc((size_t)c->nbuckets, sizeof *c->buckets);
    return c->buckets ? 0 : -1;
}

void pgs_stmt_free(pgs_stmt_t *s)
{
    if (!s)
        return;
    free(s->sql);
    free(s->types);
    free(s);
}

void pgs_stmtcache_clear(pgs_stmtcache_t *c)
{
    for (int i = 0; i < c->nbuckets; i++) {
        pgs_stmt_t *s = c->buckets[i];
        while (s) {
            pgs_stmt_t *next = s->next;
            pgs_stmt_free(s);
            s = next;
        }
        c->buckets[i] = NULL;
    }
    c->count = 0;
}

void pgs_stmtcache_free(pgs_stmtcache_t *c)
{
    if (!c->buckets)
        return;
    pgs_stmtcache_clear(c);
    free(c->buckets);
    c->buckets = NULL;
}

pgs_stmt_t *pgs_stmtcache_find(pgs_stmtcache_t *c, const char *sql)
{
    uint32_t h = fnv1a(sql);
    for (pgs_stmt_t *s = c->buckets[h & (uint32_t)(c->nbuckets - 1)]; s; s = s->next)
        if (s->hash == h && strcmp(s->sql, sql) == 0) {
            s->used = ++c->clock;
            return s;
        }
    return NULL;
}

pgs_stmt_t *pgs_stmt_new(pgs_stmtcache_t *c, const char *sql)
{
    pgs_stmt_t *s = calloc(1, sizeof *s);
    if (!s || !(s->sql = strdup(sql))) {
        free(s);
        return NULL;
    }
    s->hash = fnv1a(sql);
    snprintf(s->name, sizeof s->name, "pgs_%lu", ++c->next_id);
    return s;
}

void pgs_stmtcache_add(pgs_stmtcache_t *c, pgs_stmt_t *s)
{
    pgs_stmt_t **b = &c->buckets[s->hash & (uint32_t)(c->nbuckets - 1)];
    s->used = ++c->clock;
    s->next = *b;
    *b = s;
    c->count++;
}

void pgs_stmtcache_remove(pgs_stmtcache_t *c, pgs_stmt_t *s)
{
    pgs_stmt_t **p = &c->buckets[s->hash & (uint32_t)(c->nbuckets - 1)];
    for (; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            s->next = NULL;
            c->count--;
            return;
        }
}

pgs_stmt_t *pgs_stmtcache_take_victim(pgs_stmtcache_t *c)
{
    if (c->count < c->max)
        return NULL;
    pgs_stmt_t *oldest = NULL;
    for (int i = 0; i < c->nbuckets; i++)
        for (pgs_stmt_t *s = c->buckets[i]; s; s = s->next)
            if (!oldest || s->used < oldest->used)
                oldest = s;
    if (oldest)
        pgs_stmtcache_remove(c, oldest);
    return oldest;
}
