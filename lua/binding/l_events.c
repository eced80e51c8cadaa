/* SPDX-License-Identifier: MIT
 * l_events.c — the event store userdata of pgstore.core. The Lua face
 * (lua/pgstore/events.lua) encodes data with its codec and checks options;
 * this file moves strings and numbers between Lua and core/events*.c.
 *
 *   core.events(pool, { table, notify, notify_in_tx, notify_interval,
 *                       migrate, max_event_size }) → es | nil, err
 *   es:append(stream, events, expected, key, time, txconn) → result
 *   es:append_many({ {stream=, events=, expected=, idempotency_key=, time=}, … })
 *   es:read(stream, from, to, limit, types, backward, via) → rows
 *   es:read_all(after, limit, types, prefix, partition_count, partitions) → rows, cursor
 *   es:version / status / latest_position / hold_end, lifecycle,
 *   es:expire_keys(ttl, limit, dry_run) → n, es:move(dst, stream, status)
 */
#include "binding.h"
#include "opts.h"

#include <limits.h>
#include <string.h>

#define CLOSED "attempt to use a closed event store"

static pgs_events_t *check_es(lua_State *L)
{
    return pgs_l_handle_check(L, 1, PGS_EVENTS_MT, CLOSED);
}

static const char *field_string(lua_State *L, int t, const char *k, size_t *len, int required,
                                int index)
{
    lua_getfield(L, t, k);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tolstring(L, -1, len);
    else if (!lua_isnil(L, -1) || required)
        luaL_error(L, "bad event #%d (%s must be a string, got %s)", index, k, luaL_typename(L, -1));
    lua_pop(L, 1); /* the string stays alive in the event table */
    return s;
}

/* Reads the events array at idx into a userdata-held pgs_event_t array
 * (pushed on the stack). */
static pgs_event_t *check_events(lua_State *L, int idx, int *n)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int count = (int)lua_objlen(L, idx);
    pgs_event_t *ev = lua_newuserdata(L, (size_t)(count ? count : 1) * sizeof *ev);
    memset(ev, 0, (size_t)(count ? count : 1) * sizeof *ev);
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (!lua_istable(L, -1))
            luaL_error(L, "bad event #%d (table expected, got %s)", i + 1, luaL_typename(L, -1));
        int t = lua_gettop(L);
        pgs_event_t *e = &ev[i];
        e->type = field_string(L, t, "type", &e->type_len, 1, i + 1);
        e->data = field_string(L, t, "data", &e->data_len, 0, i + 1);
        e->metadata = field_string(L, t, "metadata", &e->metadata_len, 0, i + 1);
        size_t idlen;
        e->id = field_string(L, t, "id", &idlen, 0, i + 1);
        if (e->id && strlen(e->id) != idlen)
            luaL_error(L, "bad event #%d (id contains a NUL byte)", i + 1);
        lua_getfield(L, t, "schema_version");
        lua_Number sv = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
        /* Out of range or fractional: -1, which the core refuses. */
        e->schema_version = sv >= 0 && sv <= INT_MAX && sv == (int)sv ? (int)sv : -1;
        lua_pop(L, 2);
    }
    *n = count;
    return ev;
}

static void push_append_result(lua_State *L, const char *stream, const pgs_append_result_t *r)
{
    lua_createtable(L, 0, 7);
    lua_pushstring(L, stream);
    lua_setfield(L, -2, "stream");
    lua_pushnumber(L, (lua_Number)r->first_version);
    lua_setfield(L, -2, "first_version");
    lua_pushnumber(L, (lua_Number)r->last_version);
    lua_setfield(L, -2, "last_version");
    lua_pushnumber(L, (lua_Number)r->first_position);
    lua_setfield(L, -2, "first_position");
    lua_pushnumber(L, (lua_Number)r->last_position);
    lua_setfield(L, -2, "last_position");
    lua_pushinteger(L, r->count);
    lua_setfield(L, -2, "count");
    lua_pushboolean(L, r->replayed);
    lua_setfield(L, -2, "replayed");
}

static int l_events_new(lua_State *L)
{
    pgs_pool_t *pool = pgs_l_checkpool(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    pgs_events_opts_t o;
    memset(&o, 0, sizeof o);
    o.table = pgs_l_opt_string(L, 2, "table");
    /* pgstore.events has resolved the default channel: absent means none;
     * an empty name is a bad channel, not "none". */
    const char *notify = pgs_l_opt_string(L, 2, "notify");
    if (notify && !*notify) {
        pgs_error_t e;
        pgs_channel_check(notify, &e);
        return pgs_l_push_error(L, &e);
    }
    o.notify = notify ? notify : "";
    o.notify_in_tx = pgs_l_opt_bool(L, 2, "notify_in_tx");
    o.notify_interval = pgs_l_opt_seconds(L, 2, "notify_interval", 0);
    o.skip_schema_init = !pgs_l_opt_bool(L, 2, "migrate");
    o.max_event_size = pgs_l_opt_size(L, 2, "max_event_size");

    pgs_l_handle_t *u = pgs_l_handle_new(L, PGS_EVENTS_MT);
    pgs_error_t err;
    if (pgs_events_open(pool, &o, (pgs_events_t **)&u->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_events_close(lua_State *L)
{
    pgs_events_close(pgs_l_handle_take(L, 1, PGS_EVENTS_MT));
    return 0;
}

static int l_events_store(lua_State *L)
{
    lua_pushstring(L, pgs_events_store(check_es(L)));
    return 1;
}

static int l_events_tostring(lua_State *L)
{
    pgs_events_t *es = pgs_l_handle_get(L, 1, PGS_EVENTS_MT);
    if (es)
        lua_pushfstring(L, "pgstore.events (%s)", pgs_events_table(es));
    else
        lua_pushliteral(L, "pgstore.events (closed)");
    return 1;
}

static int l_events_migrate(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_events_migrate(check_es(L), &err), &err);
}

/* pgstore.events passes the expected version as a number: >= 0 exact,
 * -1 any, -2 no stream, -3 exists; anything else reaches the core as an
 * invalid one. */
static void expect_from(int64_t code, pgs_append_opts_t *o)
{
    static const pgs_expect_t codes[] = {PGS_EXPECT_ANY, PGS_EXPECT_NO_STREAM, PGS_EXPECT_EXISTS};
    if (code >= 0) {
        o->expect = PGS_EXPECT_VERSION;
        o->version = code;
    } else if (code >= -3) {
        o->expect = codes[-code - 1];
    } else {
        o->expect = PGS_EXPECT_VERSION;
        o->version = code;
    }
}

static int l_events_append(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_error_t err;
    int ok = 1;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    int n;
    pgs_event_t *ev = check_events(L, 3, &n);
    pgs_append_opts_t o = {
        .expect = PGS_EXPECT_ANY,
        .idempotency_key = pgs_l_opt_text(L, 5, "idempotency key", &err, &ok),
        .time = luaL_optnumber(L, 6, 0),
    };
    expect_from(pgs_l_optint64(L, 4, -1), &o);
    pgs_conn_t *tx = pgs_l_optconn(L, 7);
    if (!stream || !ok)
        return pgs_l_push_error(L, &err);
    pgs_append_result_t r;
    if (pgs_events_append(es, tx, stream, ev, n, &o, &r, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    push_append_result(L, stream, &r);
    return 1;
}

static int l_events_append_many(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t len = lua_objlen(L, 2);
    pgs_error_t err;
    /* Refused before a byte is encoded: the core's limit, the core's words. */
    if (len > PGS_APPEND_BATCHES_MAX) {
        pgs_append_batch_t none = {0};
        pgs_append_result_t unused;
        pgs_events_append_many(es, &none, len > INT_MAX ? INT_MAX : (int)len, &unused, &err);
        return pgs_l_push_error(L, &err);
    }
    int nb = (int)len;
    pgs_append_batch_t *b = lua_newuserdata(L, (size_t)(nb ? nb : 1) * sizeof *b);
    pgs_append_result_t *r = lua_newuserdata(L, (size_t)(nb ? nb : 1) * sizeof *r);
    memset(b, 0, (size_t)(nb ? nb : 1) * sizeof *b);
    /* A holder table keeps every batch's event array alive. */
    lua_createtable(L, nb, 0);
    int holder = lua_gettop(L), nul = 0;
    for (int i = 0; i < nb; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (!lua_istable(L, -1))
            luaL_error(L, "bad batch #%d (table expected, got %s)", i + 1, luaL_typename(L, -1));
        int t = lua_gettop(L);
        lua_getfield(L, t, "stream");
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad batch #%d (stream must be a string)", i + 1);
        b[i].stream = lua_tostring(L, -1);
        if (strlen(b[i].stream) != lua_objlen(L, -1))
            nul = i + 1;
        lua_getfield(L, t, "events");
        b[i].events = check_events(L, lua_gettop(L), &b[i].n);
        lua_rawseti(L, holder, i + 1); /* the pgs_event_t array */
        lua_pop(L, 1);                 /* events table (held by the batch) */
        lua_getfield(L, t, "expected");
        expect_from(lua_type(L, -1) == LUA_TNUMBER ? pgs_l_optint64(L, -1, 0) : -1, &b[i].opts);
        lua_getfield(L, t, "idempotency_key");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad batch #%d (idempotency_key must be a string)", i + 1);
        b[i].opts.idempotency_key = lua_tostring(L, -1);
        if (b[i].opts.idempotency_key && strlen(b[i].opts.idempotency_key) != lua_objlen(L, -1))
            nul = i + 1;
        lua_getfield(L, t, "time");
        b[i].opts.time = lua_tonumber(L, -1);
        lua_settop(L, holder); /* strings stay alive in the batch tables */
    }
    if (nul) {
        pgs_error_set(&err, PGS_EINVALID,
                      "the stream name or idempotency key of batch %d contains a NUL byte", nul);
        err.batch = nul;
        return pgs_l_push_error(L, &err);
    }
    if (pgs_events_append_many(es, b, nb, r, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_createtable(L, nb, 0);
    for (int i = 0; i < nb; i++) {
        push_append_result(L, b[i].stream, &r[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* A Lua array of strings at idx → a C array held by a userdata pushed on
 * the stack; NULL for nil. *ok = 0 and err filled when one holds a NUL. */
static const char *const *check_types(lua_State *L, int idx, int *n, pgs_error_t *err, int *ok)
{
    *n = 0;
    if (lua_isnoneornil(L, idx))
        return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    int count = (int)lua_objlen(L, idx);
    const char **types = lua_newuserdata(L, (size_t)(count ? count : 1) * sizeof *types);
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad types[%d] (string expected, got %s)", i + 1, luaL_typename(L, -1));
        types[i] = lua_tostring(L, -1);
        if (strlen(types[i]) != lua_objlen(L, -1) && *ok) {
            pgs_error_set(err, PGS_EINVALID, "types[%d] contains a NUL byte", i + 1);
            *ok = 0;
        }
        lua_pop(L, 1);
    }
    *n = count;
    return types;
}

/* A row count: NaN and negatives give -1 (refused by the core), large
 * values saturate. */
static int opt_count(lua_State *L, int idx)
{
    lua_Number d = luaL_optnumber(L, idx, 0);
    if (d != d || d < 0)
        return -1;
    return d > INT_MAX ? INT_MAX : (int)d;
}

/* An array of partition numbers (owned by a userdata on the stack). A
 * number that is no whole int32 gives -1, refused by the core. */
static const int32_t *opt_partitions(lua_State *L, int idx, int *n)
{
    *n = 0;
    if (lua_isnoneornil(L, idx))
        return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    int count = (int)lua_objlen(L, idx);
    int32_t *parts = lua_newuserdata(L, (size_t)(count ? count : 1) * sizeof *parts);
    for (int i = 0; i < count; i++) {
        lua_rawgeti(L, idx, i + 1);
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "bad partitions[%d] (number expected, got %s)", i + 1, luaL_typename(L, -1));
        lua_Number d = lua_tonumber(L, -1);
        parts[i] = d >= 0 && d <= INT32_MAX && d == (int32_t)d ? (int32_t)d : -1;
        lua_pop(L, 1);
    }
    *n = count;
    return parts;
}

static pgs_pool_t *opt_via(lua_State *L, int idx)
{
    return lua_isnoneornil(L, idx) ? NULL : pgs_l_checkpool(L, idx);
}

static int l_events_read(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_error_t err;
    int ok = 1;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    pgs_read_opts_t o;
    memset(&o, 0, sizeof o);
    o.from = pgs_l_optint64(L, 3, 0);
    o.to = pgs_l_optint64(L, 4, 0);
    o.limit = pgs_l_optint64(L, 5, 0);
    o.types = check_types(L, 6, &o.ntypes, &err, &ok);
    o.backward = lua_toboolean(L, 7);
    pgs_pool_t *via = opt_via(L, 8);
    if (!stream || !ok)
        return pgs_l_push_error(L, &err);
    pgs_rows_t *res;
    if (pgs_events_read(es, via, stream, &o, &res, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    pgs_l_push_rows(L, res);
    return 1;
}

static int l_events_read_all(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_read_all_opts_t o;
    pgs_error_t err;
    int ok = 1;
    memset(&o, 0, sizeof o);
    o.after = pgs_l_optint64(L, 2, 0);
    o.limit = opt_count(L, 3);
    o.types = check_types(L, 4, &o.ntypes, &err, &ok);
    o.prefix = pgs_l_opt_text(L, 5, "prefix", &err, &ok);
    o.partition_count = opt_count(L, 6);
    o.partitions = opt_partitions(L, 7, &o.npartitions);
    if (!ok)
        return pgs_l_push_error(L, &err);
    pgs_rows_t *res;
    int nrows;
    int64_t cursor;
    if (pgs_events_read_all(es, &o, &res, &nrows, &cursor, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    pgs_l_push_rows_n(L, res, nrows, pgs_rows_columns(res) - 1);
    lua_pushnumber(L, (lua_Number)cursor);
    return 2;
}

static int l_events_version(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    int64_t v;
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    if (!stream || pgs_events_version(es, opt_via(L, 3), stream, &v, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushnumber(L, (lua_Number)v);
    return 1;
}

static int l_events_status(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    const char *status;
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    if (!stream || pgs_events_status(es, opt_via(L, 3), stream, &status, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushstring(L, status);
    return 1;
}

static int l_events_latest_position(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    int64_t p;
    pgs_error_t err;
    if (pgs_events_latest_position(es, opt_via(L, 2), &p, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushnumber(L, (lua_Number)p);
    return 1;
}

static int l_events_hold_end(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    int64_t p;
    pgs_error_t err;
    if (pgs_events_hold_end(es, &p, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushnumber(L, (lua_Number)p);
    return 1;
}

static int l_events_expire_keys(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    double ttl = luaL_checknumber(L, 2);
    lua_Integer limit = luaL_checkinteger(L, 3);
    luaL_argcheck(L, limit >= 1 && limit <= INT_MAX, 3, "limit out of range");
    int n;
    pgs_error_t err;
    if (pgs_events_expire_keys(es, ttl, (int)limit, lua_toboolean(L, 4), &n, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushinteger(L, n);
    return 1;
}

static int l_events_tombstone(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_error_t err;
    int ok = 1;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    const char *reason = pgs_l_opt_text(L, 3, "reason", &err, &ok);
    if (!stream || !ok)
        return pgs_l_push_error(L, &err);
    return pgs_l_push_status(L, pgs_events_tombstone(es, stream, reason, &err), &err);
}

static int l_events_archive(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    if (!stream)
        return pgs_l_push_error(L, &err);
    return pgs_l_push_status(L, pgs_events_archive(es, stream, &err), &err);
}

static int l_events_restore(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    if (!stream)
        return pgs_l_push_error(L, &err);
    return pgs_l_push_status(L, pgs_events_restore(es, stream, &err), &err);
}

static int l_events_delete(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 2, "stream name", &err);
    if (!stream)
        return pgs_l_push_error(L, &err);
    return pgs_l_push_status(L, pgs_events_delete(es, stream, &err), &err);
}

static int l_events_truncate(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_events_truncate(check_es(L), &err), &err);
}

static int l_events_move(lua_State *L)
{
    pgs_events_t *es = check_es(L);
    pgs_events_t *dst = pgs_l_handle_check(L, 2, PGS_EVENTS_MT, CLOSED);
    int64_t moved;
    pgs_error_t err;
    const char *stream = pgs_l_text(L, 3, "stream name", &err);
    const char *status = luaL_optstring(L, 4, NULL); /* set by the Lua side */
    if (!stream || pgs_events_move(es, dst, stream, status, &moved, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushnumber(L, (lua_Number)moved);
    return 1;
}

void pgs_l_events_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"migrate", l_events_migrate},
        {"append", l_events_append},
        {"append_many", l_events_append_many},
        {"read", l_events_read},
        {"read_all", l_events_read_all},
        {"version", l_events_version},
        {"status", l_events_status},
        {"latest_position", l_events_latest_position},
        {"store", l_events_store},
        {"hold_end", l_events_hold_end},
        {"expire_keys", l_events_expire_keys},
        {"tombstone", l_events_tombstone},
        {"archive", l_events_archive},
        {"restore", l_events_restore},
        {"delete", l_events_delete},
        {"truncate", l_events_truncate},
        {"move", l_events_move},
        {"close", l_events_close},
        {NULL, NULL}};
    pgs_l_class_register(L, PGS_EVENTS_MT, methods, l_events_close, l_events_tostring);
    lua_pushcfunction(L, l_events_new);
    lua_setfield(L, -2, "events");
}
