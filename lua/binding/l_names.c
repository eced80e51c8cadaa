/* SPDX-License-Identifier: MIT
 * l_names.c — the core's name rules and limits, for Lua and resty to ask
 * rather than restate:
 *
 *   core.limits = { name = 63, channel = 63, notify_payload = 7999,
 *                   event_size = 1048576, lock_key = 512,
 *                   seconds = 2147483, time = 9.2e12, batches = 1000 }
 *   core.check_table(name[, suffix]) → true | nil, err (code "invalid")
 *   core.check_channel(name) → true | nil, err
 *   core.check_notify(channel, payload) → true | nil, err
 *   core.quote_ident(name) → "\"schema\".\"table\"" | nil, err
 */
#include "binding.h"

static int l_check_table(lua_State *L)
{
    char out[PGS_IDENT_MAX];
    pgs_error_t err;
    const char *name = pgs_l_text(L, 1, "table name", &err);
    const char *suffix = luaL_optstring(L, 2, "");
    return pgs_l_push_status(
        L, name ? pgs_ident_quote_suffix(name, suffix, out, sizeof out, &err) : PGS_EINVALID, &err);
}

static int l_check_channel(lua_State *L)
{
    pgs_error_t err;
    const char *name = pgs_l_text(L, 1, "channel name", &err);
    return pgs_l_push_status(L, name ? pgs_channel_check(name, &err) : PGS_EINVALID, &err);
}

static int l_check_notify(lua_State *L)
{
    pgs_error_t err;
    const char *channel = pgs_l_text(L, 1, "channel name", &err);
    size_t len;
    const char *payload = luaL_optlstring(L, 2, "", &len);
    return pgs_l_push_status(
        L, channel ? pgs_notify_check(channel, payload, len, &err) : PGS_EINVALID, &err);
}

static int l_quote_ident(lua_State *L)
{
    char out[PGS_IDENT_MAX];
    pgs_error_t err;
    const char *name = pgs_l_text(L, 1, "name", &err);
    if (!name || pgs_ident_quote(name, out, sizeof out, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    lua_pushstring(L, out);
    return 1;
}

void pgs_l_names_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"check_table", l_check_table},   {"check_channel", l_check_channel},
        {"check_notify", l_check_notify}, {"quote_ident", l_quote_ident},
        {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
    lua_createtable(L, 0, 8);
    pgs_l_set_number(L, "name", PGS_NAME_MAX);
    pgs_l_set_number(L, "channel", PGS_CHANNEL_MAX);
    pgs_l_set_number(L, "notify_payload", PGS_NOTIFY_PAYLOAD_MAX);
    pgs_l_set_number(L, "event_size", PGS_EVENT_SIZE_DEFAULT);
    pgs_l_set_number(L, "lock_key", PGS_LOCK_KEY_MAX);
    pgs_l_set_number(L, "seconds", PGS_SECONDS_MAX);
    pgs_l_set_number(L, "time", PGS_TIME_MAX);
    pgs_l_set_number(L, "batches", PGS_APPEND_BATCHES_MAX);
    lua_setfield(L, -2, "limits");
}
