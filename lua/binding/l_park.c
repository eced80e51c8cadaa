/* SPDX-License-Identifier: MIT
 * l_park.c — a process-wide parking place for handles, so that one Lua VM
 * can hand a pinned connection, a held lock, a lease or a listener to
 * another VM of the same process. nginx's main VM and its worker-thread VMs
 * share this module's C globals but no Lua values: resty.pgstore parks a
 * transaction's connection here between the statements it runs in threads.
 *
 *   core.park(handle[, deadline]) → id     the handle userdata is left closed
 *   core.unpark(id[, keep]) → handle | nil (not parked: gone, or never was)
 *       keep: the id stays reserved, marked busy, until core.repark(id, h)
 *   core.repark(id, handle)                 back under its id, not busy
 *   core.park_expire(id)                    due for the reaper now; never blocks
 *   core.unpark_expired() → handle, id | nil   one expired, idle handle, taken for good
 *   core.park_stats() → { parked, busy, expired }
 *
 * A deadline is core.now() seconds (monotonic); none means "until expired
 * by hand". Unparking a busy id raises: two callers using one transaction
 * at once is a programming error. Handles move by value: every handle
 * userdata of the binding is a small struct whose all-zero state is
 * "closed" (the lifetime rule of the whole binding), so parking copies its
 * bytes here and zeroes it, and unparking copies them into a fresh
 * userdata of the same metatable.
 */
#include "binding.h"
#include "clock.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PARK_BYTES (2 * sizeof(void *)) /* the largest handle: pgstore.conn */
#define PARK_BUCKETS 64

/* The metatables a handle may have; an entry's kind indexes this. */
static const char *const kinds[] = {PGS_CONN_MT, PGS_LOCK_MT, PGS_LEASE_MT, PGS_LISTENER_MT,
                                    NULL};

typedef struct parked {
    int64_t id;
    int kind;
    int busy;
    double deadline;            /* 0: none */
    unsigned char bytes[PARK_BYTES];
    size_t size;
    struct parked *next;
} parked_t;

static pthread_mutex_t park_mu = PTHREAD_MUTEX_INITIALIZER;
static parked_t *buckets[PARK_BUCKETS];
static int64_t last_id;
static int nparked, nbusy;

/* Called with park_mu held. */
static parked_t **slot_of(int64_t id)
{
    parked_t **pp = &buckets[(uint64_t)id % PARK_BUCKETS];
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    return pp;
}

/* The kind of the handle at idx, or raises. */
static int handle_kind(lua_State *L, int idx, const char *fname)
{
    if (lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
        for (int k = 0; kinds[k]; k++) {
            luaL_getmetatable(L, kinds[k]);
            int same = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
            if (same) {
                lua_pop(L, 1);
                return k;
            }
        }
        lua_pop(L, 1);
    }
    return luaL_error(L, "bad argument #%d to '%s' (a connection, lock, lease or listener "
                         "handle expected, got %s)",
                      idx, fname, luaL_typename(L, idx));
}

/* Moves the handle's bytes into e and leaves the userdata closed. */
static void take_bytes(lua_State *L, int idx, parked_t *e, const char *fname)
{
    size_t size = lua_objlen(L, idx);
    void *ud = lua_touserdata(L, idx);
    void *first;
    if (size > PARK_BYTES || size < sizeof first)
        luaL_error(L, "'%s': a handle of %d bytes cannot be parked", fname, (int)size);
    memcpy(&first, ud, sizeof first);
    if (!first)
        luaL_error(L, "bad argument #%d to '%s' (the handle is closed)", idx, fname);
    memcpy(e->bytes, ud, size);
    e->size = size;
    memset(ud, 0, size);
}

/* Pushes a fresh userdata holding e's handle. Called without park_mu: it
 * allocates, and allocation may raise (the entry is then lost with the
 * error, as a closed handle would be: the caller owns it by now). */
static void push_handle(lua_State *L, const parked_t *e)
{
    void *ud = lua_newuserdata(L, e->size);
    memcpy(ud, e->bytes, e->size);
    luaL_getmetatable(L, kinds[e->kind]);
    lua_setmetatable(L, -2);
}

static int l_park(lua_State *L)
{
    int kind = handle_kind(L, 1, "park");
    double deadline = luaL_optnumber(L, 2, 0);
    parked_t tmp;
    memset(&tmp, 0, sizeof tmp);
    take_bytes(L, 1, &tmp, "park"); /* may raise: nothing allocated yet */
    parked_t *e = malloc(sizeof *e);
    if (!e) {
        memcpy(lua_touserdata(L, 1), tmp.bytes, tmp.size); /* the caller keeps it */
        return luaL_error(L, "out of memory");
    }
    *e = tmp;
    e->kind = kind;
    e->deadline = deadline > 0 ? deadline : 0;
    pthread_mutex_lock(&park_mu);
    e->id = ++last_id;
    parked_t **pp = slot_of(e->id);
    e->next = *pp;
    *pp = e;
    nparked++;
    pthread_mutex_unlock(&park_mu);
    lua_pushnumber(L, (lua_Number)e->id);
    return 1;
}

static int64_t check_id(lua_State *L, int idx)
{
    lua_Number n = luaL_checknumber(L, idx);
    return (int64_t)n;
}

static int l_unpark(lua_State *L)
{
    int64_t id = check_id(L, 1);
    int keep = lua_toboolean(L, 2);
    parked_t copy;
    pthread_mutex_lock(&park_mu);
    parked_t **pp = slot_of(id), *e = *pp;
    if (!e) {
        pthread_mutex_unlock(&park_mu);
        lua_pushnil(L);
        return 1;
    }
    if (e->busy) {
        pthread_mutex_unlock(&park_mu);
        return luaL_error(L, "attempt to use a handle that another call is using");
    }
    copy = *e;
    if (keep) {
        e->busy = 1;
        memset(e->bytes, 0, sizeof e->bytes);
        nbusy++;
    } else {
        *pp = e->next;
        nparked--;
        free(e);
    }
    pthread_mutex_unlock(&park_mu);
    push_handle(L, &copy);
    return 1;
}

static int l_repark(lua_State *L)
{
    int64_t id = check_id(L, 1);
    int kind = handle_kind(L, 2, "repark");
    parked_t tmp;
    take_bytes(L, 2, &tmp, "repark");
    pthread_mutex_lock(&park_mu);
    parked_t *e = *slot_of(id);
    if (!e || !e->busy || e->kind != kind) {
        pthread_mutex_unlock(&park_mu);
        /* Give the handle back to the caller rather than lose it. */
        memcpy(lua_touserdata(L, 2), tmp.bytes, tmp.size);
        return luaL_error(L, "bad argument #1 to 'repark' (id %f is not reserved for this handle)",
                          (double)id);
    }
    memcpy(e->bytes, tmp.bytes, tmp.size);
    e->size = tmp.size;
    e->busy = 0;
    nbusy--;
    pthread_mutex_unlock(&park_mu);
    return 0;
}

static int l_park_expire(lua_State *L)
{
    int64_t id = check_id(L, 1);
    pthread_mutex_lock(&park_mu);
    parked_t *e = *slot_of(id);
    if (e)
        e->deadline = -1; /* before any now */
    pthread_mutex_unlock(&park_mu);
    return 0;
}

static int expired(const parked_t *e, double now)
{
    return e->deadline != 0 && e->deadline <= now;
}

static int l_unpark_expired(lua_State *L)
{
    double now = pgs_clock_now();
    parked_t copy;
    int found = 0;
    pthread_mutex_lock(&park_mu);
    for (int b = 0; b < PARK_BUCKETS && !found; b++)
        for (parked_t **pp = &buckets[b]; *pp; pp = &(*pp)->next) {
            parked_t *e = *pp;
            if (!e->busy && expired(e, now)) {
                copy = *e;
                *pp = e->next;
                nparked--;
                free(e);
                found = 1;
                break;
            }
        }
    pthread_mutex_unlock(&park_mu);
    if (!found) {
        lua_pushnil(L);
        return 1;
    }
    push_handle(L, &copy);
    lua_pushnumber(L, (lua_Number)copy.id);
    return 2;
}

static int l_park_stats(lua_State *L)
{
    double now = pgs_clock_now();
    int parked, busy, due = 0;
    pthread_mutex_lock(&park_mu);
    parked = nparked;
    busy = nbusy;
    for (int b = 0; b < PARK_BUCKETS; b++)
        for (parked_t *e = buckets[b]; e; e = e->next)
            due += !e->busy && expired(e, now);
    pthread_mutex_unlock(&park_mu);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, parked);
    lua_setfield(L, -2, "parked");
    lua_pushinteger(L, busy);
    lua_setfield(L, -2, "busy");
    lua_pushinteger(L, due);
    lua_setfield(L, -2, "expired");
    return 1;
}

void pgs_l_park_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"park", l_park},
        {"unpark", l_unpark},
        {"repark", l_repark},
        {"park_expire", l_park_expire},
        {"unpark_expired", l_unpark_expired},
        {"park_stats", l_park_stats},
        {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
