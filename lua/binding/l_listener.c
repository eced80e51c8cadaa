/* SPDX-License-Identifier: MIT
 * l_listener.c — the listener userdata of pgstore.core, and NOTIFY.
 *
 *   core.listener({ dsn=, application_name=, connect_timeout=, heartbeat=,
 *                   heartbeat_timeout=, reconnect_min=, reconnect_max=,
 *                   max_queue=, ignore_self= }, { channel, … })  → listener
 *   l:wait([timeout]) → { channel=, payload=, pid= }
 *                       | { channel="*", reconnected=true } | { channel="*", overflow=true }
 *   l:add(ch), l:remove(ch), l:notify(ch, payload[, timeout]) → true
 *   l:fd() → integer | nil    l:due() → seconds    l:stats()    l:channels()
 *   l:close()
 *   core.notify(pool | nil, conn | nil, channel, payload) → true
 *
 * Pulled, never calling back into Lua. Runtime failures return nil, err.
 * Also here: a box that owns a malloc'd C buffer while Lua values are made
 * from it (pgs_l_own), so a memory error cannot leak it.
 */
#include "binding.h"
#include "opts.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    pgs_listener_t *l;
} llistener_t;

/* ---- owned buffers ----------------------------------------------------------- */

#define PGS_OWNED_MT "pgstore.owned"

static int owned_gc(lua_State *L)
{
    void **box = luaL_checkudata(L, 1, PGS_OWNED_MT);
    free(*box);
    *box = NULL;
    return 0;
}

void pgs_l_own(lua_State *L, void *p)
{
    void **box = lua_newuserdata(L, sizeof *box);
    *box = p;
    luaL_getmetatable(L, PGS_OWNED_MT);
    lua_setmetatable(L, -2);
}

void pgs_l_free_owned(lua_State *L, int idx)
{
    void **box = luaL_checkudata(L, idx, PGS_OWNED_MT);
    free(*box);
    *box = NULL;
}

/* ---- options ------------------------------------------------------------------ */

/* ---- the listener ---------------------------------------------------------------- */

static pgs_listener_t *check_listener(lua_State *L)
{
    llistener_t *h = luaL_checkudata(L, 1, PGS_LISTENER_MT);
    if (!h->l)
        luaL_error(L, "attempt to use a closed listener");
    return h->l;
}

static int l_listener_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    pgs_listener_opts_t o;
    memset(&o, 0, sizeof o);
    o.conn.conninfo = pgs_l_opt_string(L, 1, "dsn");
    o.conn.application_name = pgs_l_opt_string(L, 1, "application_name");
    o.conn.connect_timeout = pgs_l_opt_number(L, 1, "connect_timeout", 0);
    o.heartbeat = pgs_l_opt_number(L, 1, "heartbeat", 0);
    o.heartbeat_timeout = pgs_l_opt_number(L, 1, "heartbeat_timeout", 0);
    o.reconnect_min = pgs_l_opt_number(L, 1, "reconnect_min", 0);
    o.reconnect_max = pgs_l_opt_number(L, 1, "reconnect_max", 0);
    o.max_queue = (int)pgs_l_opt_number(L, 1, "max_queue", 0);
    o.ignore_self = pgs_l_opt_bool(L, 1, "ignore_self");

    int n = (int)lua_objlen(L, 2), nul = 0;
    const char **channels = lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *channels);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "bad argument #2 to 'listener' (channel %d is a %s, string expected)",
                              i + 1, luaL_typename(L, -1));
        channels[i] = lua_tostring(L, -1);
        if (strlen(channels[i]) != lua_objlen(L, -1))
            nul = i + 1;
        lua_pop(L, 1); /* the string stays in the table */
    }
    pgs_error_t err;
    if (nul) {
        pgs_error_set(&err, PGS_EINVALID, "invalid channel name: channel %d contains a NUL byte", nul);
        return pgs_l_push_error(L, &err);
    }

    llistener_t *h = lua_newuserdata(L, sizeof *h);
    h->l = NULL;
    luaL_getmetatable(L, PGS_LISTENER_MT);
    lua_setmetatable(L, -2);
    if (pgs_listener_open(&o, channels, n, &h->l, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_listener_close(lua_State *L)
{
    llistener_t *h = luaL_checkudata(L, 1, PGS_LISTENER_MT);
    pgs_listener_t *l = h->l;
    h->l = NULL;
    pgs_listener_close(l);
    return 0;
}

static int l_listener_tostring(lua_State *L)
{
    llistener_t *h = luaL_checkudata(L, 1, PGS_LISTENER_MT);
    if (h->l)
        lua_pushfstring(L, "pgstore.listener (%p)", (void *)h->l);
    else
        lua_pushliteral(L, "pgstore.listener (closed)");
    return 1;
}

static int ok_or_error(lua_State *L, pgs_status_t st, const pgs_error_t *err)
{
    if (st != PGS_OK)
        return pgs_l_push_error(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_listener_add(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 2, "channel name", &err);
    return ok_or_error(L, channel ? pgs_listener_add(l, channel, &err) : PGS_EINVALID, &err);
}

static int l_listener_remove(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 2, "channel name", &err);
    return ok_or_error(L, channel ? pgs_listener_remove(l, channel, &err) : PGS_EINVALID, &err);
}

static double opt_timeout(lua_State *L, int idx, double dflt, const char *fname)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    double t = luaL_checknumber(L, idx);
    if (t < 0 || t != t)
        luaL_error(L, "bad argument #%d to '%s' (timeout must not be negative)", idx - 1, fname);
    return t;
}

static void push_notification(lua_State *L, pgs_notification_t *n)
{
    pgs_l_own(L, n); /* freed even if building the table raises */
    lua_createtable(L, 0, 3);
    lua_pushstring(L, n->channel);
    lua_setfield(L, -2, "channel");
    if (n->pid) {
        lua_pushlstring(L, n->payload, n->payload_len);
        lua_setfield(L, -2, "payload");
        lua_pushinteger(L, n->pid);
        lua_setfield(L, -2, "pid");
    }
    if (n->reconnected) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "reconnected");
    }
    if (n->overflow) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "overflow");
    }
    pgs_l_free_owned(L, -2);
    lua_remove(L, -2);
}

static int l_listener_wait(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    double timeout = opt_timeout(L, 2, -1, "wait");
    pgs_notification_t *n;
    pgs_error_t err;
    if (pgs_listener_wait(l, timeout, &n, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    push_notification(L, n);
    return 1;
}

static int l_listener_notify(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 2, "channel name", &err);
    size_t len;
    const char *payload = luaL_optlstring(L, 3, "", &len);
    double timeout = opt_timeout(L, 4, 0, "notify");
    if (!channel)
        return pgs_l_push_error(L, &err);
    return ok_or_error(L, pgs_listener_notify(l, channel, payload, len, timeout, &err), &err);
}

static int l_listener_fd(lua_State *L)
{
    int fd = pgs_listener_fd(check_listener(L));
    if (fd < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, fd);
    return 1;
}

static int l_listener_due(lua_State *L)
{
    lua_pushnumber(L, pgs_listener_due(check_listener(L)));
    return 1;
}

static int l_listener_stats(lua_State *L)
{
    pgs_listener_stats_t s;
    pgs_listener_stats(check_listener(L), &s);
    lua_createtable(L, 0, 7);
    lua_pushboolean(L, s.connected);
    lua_setfield(L, -2, "connected");
    if (s.pid) {
        lua_pushinteger(L, s.pid);
        lua_setfield(L, -2, "pid");
    }
    lua_pushnumber(L, (lua_Number)s.reconnects);
    lua_setfield(L, -2, "reconnects");
    lua_pushnumber(L, (lua_Number)s.dropped);
    lua_setfield(L, -2, "dropped");
    lua_pushinteger(L, s.queued);
    lua_setfield(L, -2, "queued");
    lua_pushinteger(L, s.channels);
    lua_setfield(L, -2, "channels");
    if (s.last_error.code != PGS_OK) {
        pgs_l_error_table(L, &s.last_error);
        lua_setfield(L, -2, "last_error");
    }
    return 1;
}

static int l_listener_channels(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    lua_newtable(L);
    const char *c;
    for (int i = 0; (c = pgs_listener_channel(l, i)) != NULL; i++) {
        lua_pushstring(L, c);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* core.notify(pool | nil, conn | nil, channel, payload): on the transaction's
 * connection when given, else on one borrowed from the pool. */
static int l_notify(lua_State *L)
{
    pgs_conn_t *tx = pgs_l_optconn(L, 2);
    pgs_pool_t *pool = tx ? NULL : pgs_l_checkpool(L, 1);
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 3, "channel name", &err);
    size_t len;
    const char *payload = luaL_optlstring(L, 4, "", &len);
    if (!channel)
        return pgs_l_push_error(L, &err);
    pgs_status_t st = pgs_channel_check(channel, &err);
    if (st == PGS_OK)
        st = pgs_notify_payload_check(payload, len, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    if (tx)
        return ok_or_error(L, pgs_notify(tx, channel, payload, len, &err), &err);
    pgs_conn_t *c;
    st = pgs_pool_acquire(pool, -1, &c, &err);
    if (st == PGS_OK) {
        st = pgs_notify(c, channel, payload, len, &err);
        pgs_pool_release(pool, c);
    }
    return ok_or_error(L, st, &err);
}

void pgs_l_listener_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"wait", l_listener_wait},         {"add", l_listener_add},
        {"remove", l_listener_remove},     {"notify", l_listener_notify},
        {"fd", l_listener_fd},             {"due", l_listener_due},
        {"stats", l_listener_stats},       {"channels", l_listener_channels},
        {"close", l_listener_close},       {NULL, NULL}};

    luaL_newmetatable(L, PGS_OWNED_MT);
    lua_pushcfunction(L, owned_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, PGS_LISTENER_MT);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_listener_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_listener_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_listener_new);
    lua_setfield(L, -2, "listener");
    lua_pushcfunction(L, l_notify);
    lua_setfield(L, -2, "notify");
}
