/* SPDX-License-Identifier: MIT
 * l_pool.c — the pool and pinned-connection userdata of pgstore.core.
 *
 *   core.pool{ dsn=, pool_size=, connect_timeout=, acquire_timeout=,
 *              statement_timeout=, query_timeout=, application_name=, shared=,
 *              pooler= "none" | "transaction" }  → pool
 *   pool:query(sql, …) → rows      pool:exec(sql, …) → affected
 *   pool:acquire([timeout]) → conn (pinned until conn:release())
 *   conn:query/exec, conn:begin(iso)/commit()/rollback(),
 *   conn:savepoint(name)/rollback_to(name)/release_savepoint(name)
 *
 * Both userdata start closed and are filled after the resource exists
 * (liolib's pattern), so __gc never sees a half-made handle.
 */
#include "binding.h"
#include "opts.h"

#include <limits.h>
#include <string.h>

typedef struct {
    pgs_pool_t *pool;
    int shared;          /* from pgs_pool_shared: unref instead of close */
} lpool_t;

typedef struct {
    pgs_conn_t *conn;
    pgs_pool_t *pool;    /* the pool it returns to */
} lconn_t;

/* ---- pool -------------------------------------------------------------------- */

static pgs_pool_t *check_pool(lua_State *L)
{
    return pgs_l_checkpool(L, 1);
}

static int l_pool_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    pgs_pool_opts_t o;
    memset(&o, 0, sizeof o);
    o.conn.conninfo = pgs_l_opt_string(L, 1, "dsn");
    o.conn.application_name = pgs_l_opt_string(L, 1, "application_name");
    o.conn.connect_timeout = pgs_l_opt_seconds(L, 1, "connect_timeout", 5);
    /* milliseconds, as the server's setting */
    o.conn.statement_timeout_ms = pgs_l_opt_int(L, 1, "statement_timeout", 0, INT_MAX, 0);
    o.conn.query_timeout = pgs_l_opt_seconds(L, 1, "query_timeout", 0);
    o.conn.lock_timeout_ms = pgs_l_opt_int(L, 1, "lock_timeout", 0, INT_MAX, 0);
    static const char *const poolers[] = {"none", "transaction", NULL};
    o.conn.pooler = (pgs_pooler_t)pgs_l_opt_enum(L, 1, "pooler", "none", poolers);
    o.max_size = pgs_l_opt_int(L, 1, "pool_size", 0, 10000, 4);
    o.acquire_timeout = pgs_l_opt_seconds(L, 1, "acquire_timeout", 5);
    const char *shared_key = pgs_l_opt_string(L, 1, "shared");

    lpool_t *p = lua_newuserdata(L, sizeof *p);
    p->pool = NULL;
    p->shared = 0;
    luaL_getmetatable(L, PGS_POOL_MT);
    lua_setmetatable(L, -2);

    pgs_error_t err;
    pgs_status_t st = shared_key ? pgs_pool_shared(shared_key, &o, &p->pool, &err)
                                 : pgs_pool_open(&o, &p->pool, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    p->shared = shared_key != NULL;
    return 1;
}

static int l_pool_close(lua_State *L)
{
    lpool_t *p = luaL_checkudata(L, 1, PGS_POOL_MT);
    pgs_pool_t *pool = p->pool;
    p->pool = NULL;
    if (pool) {
        if (p->shared)
            pgs_pool_unref(pool);
        else
            pgs_pool_close(pool);
    }
    return 0;
}

static int l_pool_tostring(lua_State *L)
{
    lpool_t *p = luaL_checkudata(L, 1, PGS_POOL_MT);
    if (p->pool)
        lua_pushfstring(L, "pgstore.pool (%p)", (void *)p->pool);
    else
        lua_pushliteral(L, "pgstore.pool (closed)");
    return 1;
}

/* Checks the SQL at stack index sqlidx and converts the parameters above
 * it; raises for a parameter of the wrong type, so it runs before any
 * connection is borrowed. */
static pgs_param_t *prepare(lua_State *L, int sqlidx, const char *fname, int *n)
{
    luaL_checkstring(L, sqlidx);
    int top = lua_gettop(L);
    *n = top - sqlidx;
    return pgs_l_params(L, sqlidx + 1, top, sqlidx - 1, fname);
}

/* Runs the SQL at stack index sqlidx with the n converted parameters on c,
 * pushing rows (or, for commands, the number of rows affected). Raises
 * nothing. */
static int execute(lua_State *L, pgs_conn_t *c, int sqlidx, pgs_param_t *params, int n, int want_rows)
{
    pgs_rows_t *res;
    pgs_error_t err;
    /* A NUL would cut the statement short: "DELETE FROM t\0 WHERE …". */
    const char *sql = pgs_l_text(L, sqlidx, "SQL text", &err);
    if (!sql)
        return pgs_l_push_error(L, &err);
    pgs_status_t st = pgs_query(c, sql, n, n > 0 ? params : NULL, &res, &err);
    if (st != PGS_OK)
        return pgs_l_push_error(L, &err);
    if (want_rows && !pgs_rows_is_command(res)) {
        pgs_l_push_rows(L, res);
    } else if (want_rows) {
        pgs_rows_free(res);
        lua_newtable(L); /* a command has no rows */
    } else {
        lua_pushnumber(L, (lua_Number)pgs_rows_affected(res));
        pgs_rows_free(res);
    }
    return 1;
}

static int run(lua_State *L, pgs_conn_t *c, int sqlidx, int want_rows, const char *fname)
{
    int n;
    pgs_param_t *params = prepare(L, sqlidx, fname, &n);
    return execute(L, c, sqlidx, params, n, want_rows);
}

/* Converts the parameters first: a wrong type raises while nothing is
 * borrowed, and nothing after the borrow raises, so the connection always
 * goes back. */
static int pool_run(lua_State *L, int want_rows, const char *fname)
{
    pgs_pool_t *pool = check_pool(L);
    int n;
    pgs_param_t *params = prepare(L, 2, fname, &n);
    pgs_conn_t *c;
    pgs_error_t err;
    if (pgs_pool_acquire(pool, -1, &c, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    int nret = execute(L, c, 2, params, n, want_rows);
    pgs_pool_release(pool, c);
    return nret;
}

static int l_pool_query(lua_State *L) { return pool_run(L, 1, "query"); }
static int l_pool_exec(lua_State *L) { return pool_run(L, 0, "exec"); }

static int l_pool_acquire(lua_State *L)
{
    pgs_pool_t *pool = check_pool(L);
    double timeout = luaL_optnumber(L, 2, -1);
    lconn_t *h = lua_newuserdata(L, sizeof *h);
    h->conn = NULL;
    h->pool = NULL;
    luaL_getmetatable(L, PGS_CONN_MT);
    lua_setmetatable(L, -2);
    pgs_error_t err;
    if (pgs_pool_acquire(pool, timeout, &h->conn, &err) != PGS_OK)
        return pgs_l_push_error(L, &err);
    h->pool = pool;
    return 1;
}

static int l_pool_stats(lua_State *L)
{
    pgs_pool_t *pool = check_pool(L);
    pgs_pool_stats_t s;
    pgs_pool_stats(pool, &s);
    lua_createtable(L, 0, 5);
    pgs_l_set_number(L, "max_size", s.max_size);
    pgs_l_set_number(L, "open", s.open);
    pgs_l_set_number(L, "idle", s.idle);
    pgs_l_set_number(L, "borrowed", s.borrowed);
    pgs_l_set_number(L, "waiting", s.waiting);
    return 1;
}

pgs_pool_t *pgs_l_checkpool(lua_State *L, int idx)
{
    lpool_t *p = luaL_checkudata(L, idx, PGS_POOL_MT);
    if (!p->pool)
        luaL_error(L, "attempt to use a closed connection");
    return p->pool;
}

pgs_conn_t *pgs_l_optconn(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    lconn_t *h = luaL_checkudata(L, idx, PGS_CONN_MT);
    if (!h->conn)
        luaL_error(L, "attempt to use a finished transaction");
    return h->conn;
}

/* ---- pinned connection --------------------------------------------------------- */

static pgs_conn_t *check_conn(lua_State *L)
{
    lconn_t *h = luaL_checkudata(L, 1, PGS_CONN_MT);
    if (!h->conn)
        luaL_error(L, "attempt to use a closed connection");
    return h->conn;
}

static int l_conn_release(lua_State *L)
{
    lconn_t *h = luaL_checkudata(L, 1, PGS_CONN_MT);
    pgs_conn_t *c = h->conn;
    h->conn = NULL;
    if (c)
        pgs_pool_release(h->pool, c);
    return 0;
}

static int l_conn_tostring(lua_State *L)
{
    lconn_t *h = luaL_checkudata(L, 1, PGS_CONN_MT);
    if (h->conn)
        lua_pushfstring(L, "pgstore.conn (%p)", (void *)h->conn);
    else
        lua_pushliteral(L, "pgstore.conn (closed)");
    return 1;
}

static int l_conn_query(lua_State *L) { return run(L, check_conn(L), 2, 1, "query"); }
static int l_conn_exec(lua_State *L) { return run(L, check_conn(L), 2, 0, "exec"); }

static int l_conn_begin(lua_State *L)
{
    static const char *const names[] = {"read committed", "repeatable read", "serializable", NULL};
    pgs_conn_t *c = check_conn(L);
    const char *name = luaL_optstring(L, 2, "read committed");
    pgs_error_t err;
    /* A string that names no level is a bad value, not misuse: nil, err. */
    for (int iso = 0; names[iso]; iso++) {
        if (strcmp(names[iso], name) == 0)
            return pgs_l_push_status(L, pgs_tx_begin(c, (pgs_isolation_t)iso, &err), &err);
    }
    pgs_error_set(&err, PGS_EINVALID, "isolation must be 'read committed', 'repeatable read' or 'serializable', got '%.40s'", name);
    return pgs_l_push_error(L, &err);
}

static int l_conn_commit(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_tx_commit(check_conn(L), &err), &err);
}

static int l_conn_rollback(lua_State *L)
{
    pgs_error_t err;
    return pgs_l_push_status(L, pgs_tx_rollback(check_conn(L), &err), &err);
}

static int l_conn_savepoint(lua_State *L)
{
    pgs_error_t err;
    pgs_conn_t *c = check_conn(L);
    const char *name = pgs_l_text(L, 2, "savepoint name", &err);
    return pgs_l_push_status(L, name ? pgs_tx_savepoint(c, name, &err) : PGS_EINVALID, &err);
}

static int l_conn_rollback_to(lua_State *L)
{
    pgs_error_t err;
    pgs_conn_t *c = check_conn(L);
    const char *name = pgs_l_text(L, 2, "savepoint name", &err);
    return pgs_l_push_status(L, name ? pgs_tx_rollback_to(c, name, &err) : PGS_EINVALID, &err);
}

static int l_conn_release_savepoint(lua_State *L)
{
    pgs_error_t err;
    pgs_conn_t *c = check_conn(L);
    const char *name = pgs_l_text(L, 2, "savepoint name", &err);
    return pgs_l_push_status(L, name ? pgs_tx_release(c, name, &err) : PGS_EINVALID, &err);
}

/* "idle" | "active" | "intrans" | "inerror" | "unknown" */
static int l_conn_tx_status(lua_State *L)
{
    /* Keep in the same order as pgs_tx_state_t. */
    static const char *const names[] = {"idle", "active", "intrans", "inerror", "unknown"};
    lua_pushstring(L, names[pgs_conn_tx_state(check_conn(L))]);
    return 1;
}

static int l_conn_backend_pid(lua_State *L)
{
    lua_pushinteger(L, pgs_conn_backend_pid(check_conn(L)));
    return 1;
}

void pgs_l_pool_open(lua_State *L)
{
    static const luaL_Reg pool_methods[] = {
        {"query", l_pool_query},     {"exec", l_pool_exec}, {"acquire", l_pool_acquire},
        {"stats", l_pool_stats},     {"close", l_pool_close}, {NULL, NULL}};
    static const luaL_Reg conn_methods[] = {
        {"query", l_conn_query},
        {"exec", l_conn_exec},
        {"begin", l_conn_begin},
        {"commit", l_conn_commit},
        {"rollback", l_conn_rollback},
        {"savepoint", l_conn_savepoint},
        {"rollback_to", l_conn_rollback_to},
        {"release_savepoint", l_conn_release_savepoint},
        {"tx_status", l_conn_tx_status},
        {"backend_pid", l_conn_backend_pid},
        {"release", l_conn_release},
        {NULL, NULL}};

    pgs_l_class_register(L, PGS_POOL_MT, pool_methods, l_pool_close, l_pool_tostring);
    pgs_l_class_register(L, PGS_CONN_MT, conn_methods, l_conn_release, l_conn_tostring);

    lua_pushcfunction(L, l_pool_new);
    lua_setfield(L, -2, "pool");
}
