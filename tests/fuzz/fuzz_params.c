/* SPDX-License-Identifier: MIT
 * fuzz_params.c — libFuzzer target for the binding's argument parsing:
 * the input decodes into Lua values (nil, booleans, any doubles, byte
 * strings, nested tables, light userdata, functions, option names) that go
 * to pgstore.core's functions in a fresh LuaJIT state — parameter
 * conversion, pool options and connection strings, event store options and
 * appends (everything checked before a connection is needed; the pool's
 * server does not exist), reads, KV calls, locks and hashes. A raise or
 * nil, err is fine; anything ASan or UBSan sees is not. Oracle: a password
 * in a connection string that fails never shows in the error.
 */
#include "binding.h"

#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int luaopen_pgstore_core(lua_State *L);

#define SECRET "Fz-Secret-Pw-31337"

static const char *const names[] = {
    "dsn", "table", "notify", "migrate", "max_event_size", "pool_size", "statement_timeout",
    "query_timeout", "connect_timeout", "acquire_timeout", "application_name", "type", "data",
    "metadata", "id", "schema_version", "skip_schema_init", "cleanup_interval", "lock_timeout",
    "max_value_size", "stream", "events", "expected", "idempotency_key", "time", "mode", "ttl",
    "timeout", "name", "count", "lease", "renew", "owner", "shared",
};

typedef struct {
    const uint8_t *p, *end;
} input_t;

static int byte(input_t *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

/* Pushes one value decoded from the input. */
static void value(lua_State *L, input_t *in, int depth)
{
    luaL_checkstack(L, 4, "fuzz");
    switch (byte(in) % 12) {
    case 0: lua_pushnil(L); break;
    case 1: lua_pushboolean(L, 0); break;
    case 2: lua_pushboolean(L, 1); break;
    case 3: {
        double d = 0;
        size_t n = (size_t)(in->end - in->p) < sizeof d ? (size_t)(in->end - in->p) : sizeof d;
        memcpy(&d, in->p, n);
        in->p += n;
        lua_pushnumber(L, d);
        break;
    }
    case 4: lua_pushnumber(L, (int8_t)byte(in)); break;
    case 5: {
        size_t n = (size_t)byte(in);
        if ((size_t)(in->end - in->p) < n)
            n = (size_t)(in->end - in->p);
        lua_pushlstring(L, (const char *)in->p, n);
        in->p += n;
        break;
    }
    case 6:
    case 7: {
        int n = byte(in) % 6;
        lua_createtable(L, n, 0);
        for (int i = 0; i < n; i++) {
            if (depth < 3)
                value(L, in, depth + 1);
            else
                lua_pushinteger(L, i);
            if (byte(in) & 1)
                lua_rawseti(L, -2, i + 1);
            else
                lua_setfield(L, -2, names[byte(in) % (sizeof names / sizeof names[0])]);
        }
        break;
    }
    case 8: lua_pushlightuserdata(L, NULL); break;
    case 9: lua_pushlightuserdata(L, (void *)0x10); break;
    case 10: lua_getglobal(L, "print"); break;
    default: lua_pushstring(L, names[byte(in) % (sizeof names / sizeof names[0])]); break;
    }
}

static int run(lua_State *L)
{
    input_t *in = lua_touserdata(L, 1);
    lua_settop(L, 0);
    int op = byte(in) % 8;
    int nargs = byte(in) % 7;
    int pick = byte(in);
    luaopen_pgstore_core(L); /* 1: core */
    /* a pool whose server cannot be reached: every call fails at connect */
    lua_getfield(L, 1, "pool");
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "host=/nonexistent port=1 connect_timeout=2");
    lua_setfield(L, -2, "dsn");
    lua_pushnumber(L, 0.2);
    lua_setfield(L, -2, "acquire_timeout");
    lua_call(L, 1, 1); /* 2: pool */
    int base = lua_gettop(L);
    for (int i = 0; i < nargs; i++)
        value(L, in, 0);
    int first = base + 1, last = lua_gettop(L);

    switch (op) {
    case 0: /* parameters, as pool:query would bind them */
        pgs_l_params(L, first, last, base, "fuzz");
        break;
    case 1: /* pool options; a connection string with a password */
    {
        int wrapped = 0;
        if (nargs > 0 && lua_type(L, first) == LUA_TTABLE) {
            lua_getfield(L, first, "dsn");
            /* (the password is what follows password=, not the same text
             * written somewhere else in the string) */
            if (lua_type(L, -1) == LUA_TSTRING && !strstr(lua_tostring(L, -1), SECRET)) {
                lua_pushfstring(L, "%s password=" SECRET " %s", lua_tostring(L, -1), lua_tostring(L, -1));
                lua_setfield(L, first, "dsn");
                wrapped = 1;
            }
            lua_pop(L, 1);
        }
        lua_getfield(L, 1, "pool");
        lua_pushvalue(L, first);
        lua_call(L, 1, 2);
        if (lua_isnil(L, -2) && lua_istable(L, -1)) {
            lua_getfield(L, -1, "message");
            const char *m = lua_tostring(L, -1);
            if (wrapped && m && strstr(m, SECRET)) {
                lua_getfield(L, first, "dsn");
                fprintf(stderr, "leak: dsn [%s] message [%s]\n", lua_tostring(L, -1), m);
                abort(); /* the password leaked into an error */
            }
        } else if (lua_isuserdata(L, -2)) {
            lua_getfield(L, -2, "close");
            lua_pushvalue(L, -3);
            lua_call(L, 1, 0);
        }
        break;
    }
    case 2: /* event store options, then an append with the rest */
    case 3: {
        lua_getfield(L, 1, "events");
        lua_pushvalue(L, 2);
        if (nargs > 0 && lua_type(L, first) == LUA_TTABLE) {
            lua_pushvalue(L, first);
            lua_pushboolean(L, 0);
            lua_setfield(L, -2, "migrate");
        } else {
            lua_createtable(L, 0, 0);
        }
        lua_call(L, 2, 2);
        if (!lua_isuserdata(L, -2))
            break;
        lua_pop(L, 1);
        int es = lua_gettop(L);
        lua_getfield(L, es, op == 2 ? "append" : "read_all");
        lua_pushvalue(L, es);
        for (int i = first + 1; i <= last; i++)
            lua_pushvalue(L, i);
        lua_call(L, 1 + (last > first ? last - first : 0), LUA_MULTRET);
        break;
    }
    case 4: { /* stream reads and lifecycle */
        static const char *const m[] = {"read", "version", "status", "tombstone", "append_many"};
        lua_getfield(L, 1, "events");
        lua_pushvalue(L, 2);
        lua_createtable(L, 0, 0);
        lua_call(L, 2, 1);
        int es = lua_gettop(L);
        lua_getfield(L, es, m[pick % 5]);
        lua_pushvalue(L, es);
        for (int i = first; i <= last; i++)
            lua_pushvalue(L, i);
        lua_call(L, 1 + nargs, LUA_MULTRET);
        break;
    }
    case 5: { /* the KV store, schema init skipped */
        lua_getfield(L, 1, "kv");
        lua_pushvalue(L, 2);
        lua_createtable(L, 0, 1);
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "skip_schema_init");
        lua_call(L, 2, 1);
        int kv = lua_gettop(L);
        lua_getfield(L, kv, nargs % 2 ? "set" : "delete_prefix");
        lua_pushvalue(L, kv);
        for (int i = first; i <= last; i++)
            lua_pushvalue(L, i);
        lua_call(L, 1 + nargs, LUA_MULTRET);
        lua_getfield(L, kv, "close");
        lua_pushvalue(L, kv);
        lua_call(L, 1, 0);
        break;
    }
    default: { /* functions of the module itself */
        static const char *const f[] = {"partition_for", "lock_key", "fnv1a64", "quote_ident", "lock",
                                        "notify", "lease"};
        lua_getfield(L, 1, f[pick % 7]);
        if (pick % 7 >= 4) { /* those that take the pool first */
            lua_pushvalue(L, 2);
            for (int i = first; i <= last; i++)
                lua_pushvalue(L, i);
            lua_call(L, 1 + nargs, LUA_MULTRET);
        } else {
            for (int i = first; i <= last; i++)
                lua_pushvalue(L, i);
            lua_call(L, nargs, LUA_MULTRET);
        }
        break;
    }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return 0;
    luaL_openlibs(L);
    input_t in = {data, data + size};
    lua_pushcfunction(L, run);
    lua_pushlightuserdata(L, &in);
    (void)lua_pcall(L, 1, 0, 0); /* raising is fine */
    lua_close(L);
    return 0;
}
