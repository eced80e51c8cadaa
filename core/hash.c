/* SPDX-License-Identifier: MIT
 * hash.c — the stable hashes that name things across processes, hosts and
 * restarts: FNV-1a 64 (http://www.isthe.com/chongo/tech/comp/fnv/) for
 * advisory-lock keys and stream keys, and jump consistent hash (Lamping &
 * Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014,
 * arXiv:1406.2294) for mapping keys onto partitions. Pure functions of
 * their input bytes: never the server's hashtext(), which may change
 * between major versions.
 */
#include "pgstore.h"

#include <string.h>

uint64_t pgs_hash_fnv1a64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ULL; /* offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL; /* FNV prime */
    }
    return h;
}

int32_t pgs_hash_jump(uint64_t key, int32_t buckets)
{
    if (buckets <= 0)
        return -1;
    int64_t b = -1, j = 0;
    while (j < buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int32_t)b;
}

int32_t pgs_partition_for(const char *key, size_t len, int32_t count)
{
    return pgs_hash_jump(pgs_hash_fnv1a64(key, len), count);
}

int64_t pgs_lock_key(const char *key, size_t len)
{
    uint64_t h = pgs_hash_fnv1a64(key, len);
    int64_t k;
    memcpy(&k, &h, sizeof k); /* two's complement reinterpretation, no UB */
    return k;
}
