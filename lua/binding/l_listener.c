/* SPDX-License-Identifier: MIT
 * l_listener.c — the listener userdata of pgstore.core, and NOTIFY.
 *
 *   core.listener({ dsn=, application_name=, connect_timeout=, heartbeat=,
 *                   heartbeat_timeout=, reconnect_min=, reconnect_max=,
 *                   max_queue=, ignore_self= }, { channel, … })  → listener
 *   l:wait([timeout[, wake_fd]]) → { channel=, payload=, pid= }
 *                       | { channel="*", reconnected=true } | { channel="*", overflow=true, lost=n }
 *                       | false (wake_fd became readable: pgs_listener_wait_wake)
 *   l:add(ch), l:remove(ch), l:notify(ch, payload[, timeout]) → true
 *   l:fd() → integer | nil    l:due() → seconds    l:stats()    l:channels()
 *   l:close()
 *   core.notify(pool | nil, conn | nil, channel, payload) → true
 *
 * Pulled, never calling back into Lua. Runtime failures return nil, err.
 */
#include "binding.h"
#include "opts.h"

#include <limits.h>
#include <string.h>

/* ---- options ------------------------------------------------------------------ */

/* ---- the listener ---------------------------------------------------------------- */

static pgs_listener_t *check_listener(lua_State *L)
{
    return pgs_l_handle_check(L, 1, PGS_LISTENER_MT, "attempt to use a closed listener");
}

static int l_listener_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    pgs_listener_opts_t o;
    memset(&o, 0, sizeof o);
    o.conn.conninfo = pgs_l_opt_string(L, 1, "dsn");
    o.conn.application_name = pgs_l_opt_string(L, 1, "application_name");
    o.conn.connect_timeout = pgs_l_opt_seconds(L, 1, "connect_timeout", 0);
    o.heartbeat = pgs_l_opt_seconds(L, 1, "heartbeat", 0);
    o.heartbeat_timeout = pgs_l_opt_seconds(L, 1, "heartbeat_timeout", 0);
    o.reconnect_min = pgs_l_opt_seconds(L, 1, "reconnect_min", 0);
    o.reconnect_max = pgs_l_opt_seconds(L, 1, "reconnect_max", 0);
    o.max_queue = pgs_l_opt_int(L, 1, "max_queue", 0, INT_MAX, 0);
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

    pgs_l_handle_t *h = pgs_l_handle_new(L, PGS_LISTENER_MT);
    if (pgs_listener_open(&o, channels, n, (pgs_listener_t **)&h->ptr, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    return 1;
}

static int l_listener_close(lua_State *L)
{
    pgs_listener_close(pgs_l_handle_take(L, 1, PGS_LISTENER_MT));
    return 0;
}

static int l_listener_add(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 2, "channel name", &err);
    return pgs_l_push_status(L, channel ? pgs_listener_add(l, channel, &err) : PGS_EINVALID, &err);
}

static int l_listener_remove(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 2, "channel name", &err);
    return pgs_l_push_status(L, channel ? pgs_listener_remove(l, channel, &err) : PGS_EINVALID, &err);
}

static double opt_timeout(lua_State *L, int idx, double dflt, const char *fname)
{
    if (lua_isnoneornil(L, idx))
        return dflt;
    double t = luaL_checknumber(L, idx);
    if (!(t >= 0 && t <= PGS_SECONDS_MAX))
        luaL_error(L, "bad argument #%d to '%s' (timeout must be a number of seconds from 0 to %.0f)",
                   idx - 1, fname, PGS_SECONDS_MAX);
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
        lua_pushinteger(L, (lua_Integer)n->lost);
        lua_setfield(L, -2, "lost");
    }
    pgs_l_free_owned(L, -2);
    lua_remove(L, -2);
}

static int l_listener_wait(lua_State *L)
{
    pgs_listener_t *l = check_listener(L);
    double timeout = opt_timeout(L, 2, -1, "wait");
    int wake_fd = lua_isnoneornil(L, 3) ? -1 : (int)luaL_checkinteger(L, 3);
    pgs_notification_t *n;
    pgs_error_t err;
    pgs_status_t st = wake_fd >= 0 ? pgs_listener_wait_wake(l, timeout, wake_fd, &n, &err)
                                   : pgs_listener_wait(l, timeout, &n, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    if (!n) {
        lua_pushboolean(L, 0); /* woken through wake_fd */
        return 1;
    }
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
    return pgs_l_push_status(L, pgs_listener_notify(l, channel, payload, len, timeout, &err), &err);
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
    pgs_l_set_bool(L, "connected", s.connected);
    if (s.pid)
        pgs_l_set_number(L, "pid", s.pid);
    pgs_l_set_number(L, "reconnects", (lua_Number)s.reconnects);
    pgs_l_set_number(L, "dropped", (lua_Number)s.dropped);
    pgs_l_set_number(L, "queued", s.queued);
    pgs_l_set_number(L, "channels", s.channels);
    pgs_l_set_error(L, "last_error", &s.last_error);
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
    pgs_status_t st = pgs_notify_check(channel, payload, len, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    if (tx)
        return pgs_l_push_status(L, pgs_notify(tx, channel, payload, len, &err), &err);
    pgs_conn_t *c;
    st = pgs_pool_acquire(pool, -1, &c, &err);
    if (st == PGS_OK) {
        st = pgs_notify(c, channel, payload, len, &err);
        pgs_pool_release(pool, c);
    }
    return pgs_l_push_status(L, st, &err);
}

void pgs_l_listener_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"wait", l_listener_wait},         {"add", l_listener_add},
        {"remove", l_listener_remove},     {"notify", l_listener_notify},
        {"fd", l_listener_fd},             {"due", l_listener_due},
        {"stats", l_listener_stats},       {"channels", l_listener_channels},
        {"close", l_listener_close},       {NULL, NULL}};

    pgs_l_class_register(L, PGS_LISTENER_MT, methods, l_listener_close, NULL);

    lua_pushcfunction(L, l_listener_new);
    lua_setfield(L, -2, "listener");
    lua_pushcfunction(L, l_notify);
    lua_setfield(L, -2, "notify");
}
